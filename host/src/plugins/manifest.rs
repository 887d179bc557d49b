//! `plugin.toml`: what a plugin is, which WIT world it implements, and what it may use.
//!
//! ```toml
//! schema_version = 1
//! name = "slack"
//! version = "0.1.0"
//! wit = "0.1.0"            # wedsync:presence version the component was built against
//! world = "provider"       # or "classifier"
//! component = "plugin.wasm"
//!
//! [capabilities]
//! allowed_hosts = ["https://slack.com"]
//! secrets = ["slack.signing-secret"]
//!
//! [limits]
//! memory_mib = 32
//! timeout_ms = 2000
//! max_output_kib = 1024
//! kv_quota_kib = 1024
//! http_timeout_ms = 10000
//! max_http_response_kib = 2048
//! max_http_requests = 20
//!
//! [config]
//! api_base = "https://slack.com/api"
//!
//! [oauth]                  # connections are made through this provider
//! provider = "slack"
//! scopes = ["users.profile:write", "users:write"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capabilities::http::HostPattern;

/// The manifest format this host reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The file name of a manifest inside a plugin folder.
pub const MANIFEST_FILE: &str = "plugin.toml";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid plugin manifest: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Which WIT world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    Classifier,
    Provider,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Classifier => "classifier",
            World::Provider => "provider",
        })
    }
}

/// A plugin name: lower-case ASCII letters, digits and dashes, used in routes and storage keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PluginName(String);

impl PluginName {
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(format!(
                "plugin name {name:?} must be 1-64 characters of a-z, 0-9 and '-', starting with a letter"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PluginName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PluginName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PluginName::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    pub name: PluginName,
    pub version: semver::Version,
    /// The `wedsync:presence` WIT version the component was built against.
    pub wit: semver::Version,
    pub world: World,
    #[serde(default)]
    pub description: Option<String>,
    /// The component file, relative to the manifest.
    #[serde(default = "default_component")]
    pub component: String,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub limits: Limits,
    /// Non-secret settings the plugin reads through the `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// How the plugin's webhook route is served.
    #[serde(default)]
    pub webhook: WebhookSettings,
    /// The OAuth provider people connect through for this plugin, and the
    /// scopes its calls need: a connection whose grant lacks one is refused.
    #[serde(default)]
    pub oauth: Option<OAuthNeeds>,
}

/// `[oauth]`: which `[oauth.providers.<name>]` of the host's configuration
/// this plugin's connections are made with.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OAuthNeeds {
    pub provider: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `[webhook]`: what the host checks before a delivery reaches the plugin.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Media types a delivery with a body may have (parameters such as
    /// `charset` are ignored); anything else is refused with 415 before the
    /// plugin runs. An empty body (Google's channel pings, Graph's validation
    /// request) is always let through. Default: JSON and form bodies.
    pub content_types: Vec<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            content_types: vec![
                "application/json".into(),
                "application/x-www-form-urlencoded".into(),
            ],
        }
    }
}

impl WebhookSettings {
    /// Whether a delivery with this `Content-Type` header and body may go to the plugin.
    pub fn accepts(&self, content_type: Option<&str>, body_len: usize) -> bool {
        if body_len == 0 {
            return true;
        }
        let Some(media) = content_type
            .and_then(|c| c.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
        else {
            return false;
        };
        self.content_types
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(&media))
    }
}

fn default_component() -> String {
    "plugin.wasm".to_string()
}

/// What a plugin may reach through the host. Everything not listed is refused.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// `scheme://host[:port]` patterns; `*.` as the first label matches any subdomain.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Names of secrets the plugin may sign, verify and compare with.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Names of secrets (API keys) the host may send for the plugin as a bearer
    /// token, over HTTPS only, to its allowed hosts. A signing secret is never sent.
    #[serde(default)]
    pub bearer_secrets: Vec<String>,
    /// Secrets the host may send as the password of HTTP Basic authentication
    /// (Twilio's API keys), each mapped to the `[config]` key holding the user
    /// name: `basic_secrets = { "twilio.api-key-secret" = "api_key_sid" }`.
    /// Same rules as bearer secrets: HTTPS (or loopback) only, allowed hosts only.
    #[serde(default)]
    pub basic_secrets: BTreeMap<String, String>,
}

/// Per-call resource limits. Every field has a default that suits a provider adapter.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory a single call may use.
    pub memory_mib: u32,
    /// Wall-clock time a call may run, host calls included.
    pub timeout_ms: u64,
    /// Size of the value a call may return (strings and bytes added up).
    pub max_output_kib: u32,
    /// Total size of keys and values the plugin may keep per tenant.
    pub kv_quota_kib: u32,
    /// Time one outbound HTTP request may take.
    pub http_timeout_ms: u64,
    /// Size of one outbound HTTP response body.
    pub max_http_response_kib: u32,
    /// Outbound HTTP requests one call may make: a plugin looping on a
    /// provider's API cannot spend the tenant's rate limit within its deadline.
    pub max_http_requests: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 32,
            timeout_ms: 2_000,
            max_output_kib: 1_024,
            kv_quota_kib: 1_024,
            http_timeout_ms: 10_000,
            max_http_response_kib: 2_048,
            max_http_requests: 20,
        }
    }
}

/// The largest values a manifest may ask for; a manifest above them is refused.
pub const MAX_MEMORY_MIB: u32 = 256;
pub const MAX_TIMEOUT_MS: u64 = 60_000;
pub const MAX_HTTP_REQUESTS: u32 = 200;

impl Manifest {
    /// Reads and validates `path`; every error names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        manifest
            .validate()
            .map_err(|message| ManifestError::Invalid {
                path: path.to_path_buf(),
                message,
            })?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "schema_version {} is not supported; this host reads schema_version {SCHEMA_VERSION}",
                self.schema_version
            ));
        }
        if !crate::runtime::ACCEPTED_WIT_VERSIONS
            .iter()
            .any(|v| *v == self.wit.to_string())
        {
            return Err(format!(
                "wit = \"{}\" is not a wedsync:presence version this host accepts (accepted: {})",
                self.wit,
                crate::runtime::ACCEPTED_WIT_VERSIONS.join(", ")
            ));
        }
        if self.component.is_empty()
            || Path::new(&self.component)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!(
                "component = {:?} must be a file name inside the plugin's folder",
                self.component
            ));
        }
        for pattern in &self.capabilities.allowed_hosts {
            HostPattern::parse(pattern)
                .map_err(|e| format!("capabilities.allowed_hosts: {pattern:?}: {e}"))?;
        }
        if self.world == World::Classifier
            && (!self.capabilities.allowed_hosts.is_empty()
                || !self.capabilities.secrets.is_empty()
                || !self.capabilities.bearer_secrets.is_empty()
                || !self.capabilities.basic_secrets.is_empty())
        {
            return Err(
                "a classifier cannot be granted allowed_hosts or secrets: classifiers are pure rules"
                    .to_string(),
            );
        }
        for secret in self
            .capabilities
            .secrets
            .iter()
            .chain(&self.capabilities.bearer_secrets)
            .chain(self.capabilities.basic_secrets.keys())
        {
            crate::store::SecretName::parse(secret)
                .map_err(|e| format!("capabilities.secrets: {e}"))?;
        }
        let l = &self.limits;
        if l.memory_mib == 0 || l.memory_mib > MAX_MEMORY_MIB {
            return Err(format!(
                "limits.memory_mib = {} must be between 1 and {MAX_MEMORY_MIB}",
                l.memory_mib
            ));
        }
        if l.timeout_ms == 0 || l.timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!(
                "limits.timeout_ms = {} must be between 1 and {MAX_TIMEOUT_MS}",
                l.timeout_ms
            ));
        }
        if l.max_http_requests > MAX_HTTP_REQUESTS {
            return Err(format!(
                "limits.max_http_requests = {} must be at most {MAX_HTTP_REQUESTS}",
                l.max_http_requests
            ));
        }
        if l.max_output_kib == 0 || l.http_timeout_ms == 0 || l.max_http_response_kib == 0 {
            return Err(
                "limits.max_output_kib, http_timeout_ms and max_http_response_kib must be above 0"
                    .to_string(),
            );
        }
        Ok(())
    }

    /// Parsed allow-list (validated at load, so parsing cannot fail here).
    pub fn host_patterns(&self) -> Vec<HostPattern> {
        self.capabilities
            .allowed_hosts
            .iter()
            .filter_map(|p| HostPattern::parse(p).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
schema_version = 1
name = "slack"
version = "0.1.0"
wit = "0.1.0"
world = "provider"
[capabilities]
allowed_hosts = ["https://slack.com", "https://*.slack.com"]
secrets = ["slack.signing-secret"]
[limits]
memory_mib = 16
"#;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(text, Path::new("plugins/x/plugin.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_a_complete_manifest_and_fills_defaults() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name.as_str(), "slack");
        assert_eq!(m.world, World::Provider);
        assert_eq!(m.component, "plugin.wasm");
        assert_eq!(m.limits.memory_mib, 16);
        assert_eq!(m.limits.timeout_ms, Limits::default().timeout_ms);
        assert_eq!(m.host_patterns().len(), 2);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let cases = [
            (
                GOOD.replace("wit = \"0.1.0\"", "wit = \"9.0.0\""),
                "not a wedsync:presence version",
            ),
            (
                GOOD.replace("name = \"slack\"", "name = \"Slack!\""),
                "plugin name",
            ),
            (
                GOOD.replace("world = \"provider\"", "world = \"daemon\""),
                "unknown variant",
            ),
            (
                GOOD.replace("memory_mib = 16", "memory_mib = 100000"),
                "limits.memory_mib",
            ),
            (
                GOOD.replace(
                    "memory_mib = 16",
                    "memory_mib = 16\nmax_http_requests = 201",
                ),
                "limits.max_http_requests = 201 must be at most 200",
            ),
            (
                GOOD.replace("https://slack.com\"", "ftp://slack.com\""),
                "allowed_hosts",
            ),
            (format!("{GOOD}\nsurprise = 1"), "surprise"),
            (
                GOOD.replace("schema_version = 1", "schema_version = 2"),
                "schema_version 2",
            ),
            (
                GOOD.replace(
                    "world = \"provider\"",
                    "world = \"provider\"\ncomponent = \"../../etc/passwd\"",
                ),
                "inside the plugin's folder",
            ),
            ("name = ".to_string(), "not a valid plugin manifest"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains("plugins/x/plugin.toml"), "{err}");
            assert!(err.contains(expected), "expected {expected:?} in {err}");
        }
    }

    #[test]
    fn webhook_content_types_ignore_parameters_and_case_and_let_empty_bodies_through() {
        let w = WebhookSettings::default();
        assert!(w.accepts(Some("application/json; charset=utf-8"), 10));
        assert!(w.accepts(Some("Application/X-WWW-Form-Urlencoded"), 10));
        assert!(!w.accepts(Some("text/plain"), 10));
        assert!(!w.accepts(None, 10));
        assert!(w.accepts(None, 0));
    }

    #[test]
    fn a_classifier_cannot_ask_for_network_or_secrets() {
        let text = GOOD.replace("world = \"provider\"", "world = \"classifier\"");
        assert!(parse(&text).unwrap_err().contains("classifiers are pure"));
    }
}
