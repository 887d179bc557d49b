//! Layered configuration: built-in defaults, then a TOML file (`--config`), then
//! `PRESENCE_*` environment variables and command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod reference;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid configuration: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Everything the host can be told. Every field has a default.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Where the database, the master key and the compiled-plugin cache live. Default `./data`.
    pub data_dir: PathBuf,
    /// Plugin folders to load. Default: the bundled plugins built by `cargo xtask plugins`
    /// (`target/plugins`, found beside the executable or under the working directory).
    pub plugins_dir: Option<PathBuf>,
    /// Database URL. Default: SQLite at `<data_dir>/presence.db`. `postgres://user@host/db`
    /// (with `?options[search_path]=schema` to use a schema) for several replicas sharing one
    /// PostgreSQL.
    pub database_url: Option<String>,
    /// Base64 of the 32-byte master key that seals secrets at rest. Default: generated
    /// into `<data_dir>/master.key` on first run, with a warning.
    pub master_key: Option<String>,
    /// Keys that records may still be sealed under after a rotation (base64,
    /// like `master_key`); they open records, never seal new ones. Run
    /// `presence-host key reseal` to rewrite every record under the current key.
    pub previous_master_keys: Vec<String>,
    /// The base URL providers use to reach this host: for signatures over the URL
    /// (Twilio's), OAuth redirects, and the webhook addresses calendar providers
    /// register (Google channels, Graph subscriptions). Default: built from the
    /// request's `Host` header, and the address the host listens on for
    /// registrations.
    pub public_url: Option<String>,
    /// Largest webhook body accepted, in bytes; larger ones get 413. Default 1 MiB.
    pub max_webhook_body_bytes: usize,
    /// Time a client has to send a request's headers, in milliseconds, counted
    /// from when the connection is ready for the request (on a kept-alive
    /// connection, from the previous answer): a slower or idle client is
    /// disconnected. Behind a load balancer, keep it above the balancer's
    /// idle timeout (AWS ALB: 60 s), or it may reuse a connection the host
    /// just closed. Default 75000.
    pub header_timeout_ms: u64,
    /// Client connections served at once (event streams included); further
    /// clients wait, unaccepted, until one closes. Keep it below the
    /// process's file-descriptor limit (`ulimit -n`), less what the store and
    /// outbound HTTP use. Default 4096.
    pub max_connections: u32,
    /// Plugin calls that may run at once. Default 256.
    pub max_concurrent_calls: u32,
    /// Watch the plugins folder and reload changed plugins. Default true.
    pub hot_reload: bool,
    /// Bearer token for the admin API (`/api/tenants/...`); the admin API is off without it.
    /// Default: none. Prefer `PRESENCE_ADMIN_TOKEN` to writing it in a file.
    pub admin_token: Option<String>,
    /// Per-plugin operator settings, by plugin name.
    pub plugins: BTreeMap<String, PluginOverrides>,
    /// Per-tenant settings, by tenant name.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// The presence engine's limits.
    pub presence: PresenceConfig,
    /// Webhook rate limits.
    pub webhooks: WebhookLimits,
    /// OAuth providers through which people connect their accounts.
    pub oauth: OAuthConfig,
    /// Circuit breakers and alert thresholds.
    pub health: crate::health::HealthConfig,
    /// The urgency classes' policies.
    pub notifications: crate::notify::NotificationsConfig,
}

/// `[oauth]`: the providers people connect through, configured by data. A
/// provider named `google`, `microsoft`, `slack` or `zoom` starts from that
/// provider's published endpoints; every field can be overridden (tests point
/// the URLs at emulators). A provider is offered once it has a `client_id`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// How long a started authorization may take before its callback, in seconds. Default 600.
    pub state_ttl_s: u64,
    /// How long the refresh lock of a connection is held at most, in seconds;
    /// longer than any token request may take. Default 60.
    pub refresh_lock_s: u64,
    pub providers: BTreeMap<String, OAuthProviderConfig>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            state_ttl_s: 600,
            refresh_lock_s: 60,
            providers: BTreeMap::new(),
        }
    }
}

/// `[oauth.providers.<name>]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthProviderConfig {
    /// Which built-in provider's endpoints and conventions to start from
    /// (`google`, `microsoft`, `slack`, `zoom`); default: the provider's own name.
    pub template: Option<String>,
    /// The client id the provider issued; the provider is offered once it is set.
    pub client_id: Option<String>,
    /// The name of the secret holding the client secret
    /// (default `oauth.<provider>.client-secret`, set with `presence-host secret set`).
    pub client_secret: Option<String>,
    /// The authorization endpoint (default: the template's).
    pub authorize_url: Option<String>,
    /// The token endpoint (default: the template's).
    pub token_url: Option<String>,
    /// The revocation endpoint, where the provider has one (default: the template's).
    pub revoke_url: Option<String>,
    /// Where the provider publishes the keys its ID tokens are signed with.
    pub jwks_url: Option<String>,
    /// The `iss` of its ID tokens (`{tenantid}` stands for Microsoft's `tid`).
    pub issuer: Option<String>,
    /// Scopes always requested, besides those the plugins declare.
    pub scopes: Option<Vec<String>>,
    /// Extra query parameters of the authorization request.
    pub authorize_params: Option<BTreeMap<String, String>>,
    /// How the client authenticates at the token endpoint: `body` or `basic`.
    pub token_auth: Option<String>,
}

/// Webhook rate limits (`[webhooks]`); see `webhooks::limits`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookLimits {
    /// Deliveries per second per endpoint (plugin and tenant), with bursts of
    /// twice that; a plugin's `rate_limit_per_second` raises or lowers it. Default 1000.
    pub per_endpoint_per_second: u32,
    /// Calendar events per person per hour (the seed's limit). Default 100.
    pub calendar_events_per_user_per_hour: u32,
    /// Time a delivery's body may take to arrive once its headers have; a
    /// sender trickling it (slow loris) gets 408. Default 10000.
    pub body_timeout_ms: u64,
}

impl Default for WebhookLimits {
    fn default() -> Self {
        Self {
            per_endpoint_per_second: 1000,
            calendar_events_per_user_per_hour: 100,
            body_timeout_ms: 10_000,
        }
    }
}

/// The presence engine's limits (`[presence]`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Status pushes per person per provider connection in any hour; further
    /// changes wait, coalesced, for the budget. Default 100 (the seed's limit).
    pub max_pushes_per_hour: u32,
    /// A call signal that is not refreshed or ended expires after this long, so a
    /// lost "call ended" event cannot leave someone in a call forever. Default 240.
    pub max_call_minutes: u32,
    /// How long presence changes stay replayable to SSE subscribers (`Last-Event-ID`). Default 24.
    pub change_retention_hours: u32,
    /// A status push waits this long (milliseconds) so that a burst of changes
    /// goes out as one push of the latest state. Default 1000.
    pub push_coalesce_ms: u32,
    /// Delays before each retry of a presence webhook message, in milliseconds;
    /// after the last one the message is given up. Default: Svix's published
    /// schedule, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    pub webhook_retry_schedule_ms: Vec<u64>,
    /// An endpoint that has failed every delivery for this many seconds is
    /// disabled (its messages wait until it is enabled again). Default 432000 (5 days).
    pub webhook_disable_after_s: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            max_pushes_per_hour: 100,
            max_call_minutes: 240,
            change_retention_hours: 24,
            push_coalesce_ms: 1000,
            webhook_retry_schedule_ms: vec![
                5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
            ],
            webhook_disable_after_s: 432_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            plugins_dir: None,
            database_url: None,
            master_key: None,
            previous_master_keys: Vec::new(),
            public_url: None,
            max_webhook_body_bytes: 1024 * 1024,
            header_timeout_ms: 75_000,
            max_connections: 4096,
            max_concurrent_calls: 256,
            hot_reload: true,
            admin_token: None,
            plugins: BTreeMap::new(),
            tenants: BTreeMap::new(),
            presence: PresenceConfig::default(),
            webhooks: WebhookLimits::default(),
            oauth: OAuthConfig::default(),
            health: crate::health::HealthConfig::default(),
            notifications: crate::notify::NotificationsConfig::default(),
        }
    }
}

/// What an operator adds to a plugin's manifest.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PluginOverrides {
    /// More `allowed_hosts` patterns (e.g. a provider emulator's address).
    pub extra_allowed_hosts: Vec<String>,
    /// Settings that replace the manifest's `[config]` values.
    pub config: BTreeMap<String, String>,
    /// This plugin's webhook ceiling per tenant, in deliveries per second
    /// (default: `webhooks.per_endpoint_per_second`).
    pub rate_limit_per_second: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Classifier plugins tried in order; the first classification wins. Default `["wedding-keywords"]`.
    pub classifiers: Vec<String>,
    /// Status texts pushed for an availability when the deciding signal has none
    /// of its own, by availability name (`busy = { text = "...", emoji = ":wedding:" }`).
    pub status_texts: BTreeMap<String, crate::presence::render::StatusText>,
}

/// The classifier chain a tenant gets when it configures none.
pub const DEFAULT_CLASSIFIERS: &[&str] = &["wedding-keywords"];

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Checks what serde cannot: host patterns and names.
    pub fn validate(&self) -> Result<(), String> {
        for (plugin, o) in &self.plugins {
            for pattern in &o.extra_allowed_hosts {
                crate::capabilities::http::HostPattern::parse(pattern).map_err(|e| {
                    format!("plugins.{plugin}.extra_allowed_hosts: {pattern:?}: {e}")
                })?;
            }
        }
        for (tenant, t) in &self.tenants {
            if !crate::webhooks::valid_tenant(tenant) {
                return Err(format!(
                    "tenants.{tenant}: a tenant name is letters, digits, '-' and '_'"
                ));
            }
            for availability in t.status_texts.keys() {
                if crate::model::Availability::parse(availability).is_none() {
                    return Err(format!(
                        "tenants.{tenant}.status_texts.{availability}: not an availability (one of available, busy, in_call, do_not_disturb, away, out_of_office, offline)"
                    ));
                }
            }
        }
        if self.header_timeout_ms < 100 {
            return Err("header_timeout_ms must be at least 100".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.webhooks.per_endpoint_per_second == 0
            || self.webhooks.calendar_events_per_user_per_hour == 0
            || self
                .plugins
                .values()
                .any(|o| o.rate_limit_per_second == Some(0))
        {
            return Err("webhook rate limits must be at least 1".into());
        }
        if self.oauth.refresh_lock_s < 30 {
            return Err(
                "oauth.refresh_lock_s must be at least 30: longer than a token request may take"
                    .into(),
            );
        }
        for (name, p) in &self.oauth.providers {
            crate::oauth::Provider::resolve(name, p)
                .map_err(|e| format!("oauth.providers.{name}: {e}"))?;
        }
        if self.presence.max_pushes_per_hour == 0 || self.presence.max_call_minutes == 0 {
            return Err(
                "presence.max_pushes_per_hour and presence.max_call_minutes must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("presence.db").display()))
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.plugins_dir.clone().unwrap_or_else(bundled_plugins_dir)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }

    pub fn classifiers_for(&self, tenant: &str) -> Vec<String> {
        match self.tenants.get(tenant) {
            Some(t) if !t.classifiers.is_empty() => t.classifiers.clone(),
            _ => DEFAULT_CLASSIFIERS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// `target/plugins` beside the running executable (`target/<profile>/presence-host`),
/// else under the working directory.
pub fn bundled_plugins_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("plugins")))
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("target/plugins"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_defaults_and_unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\n[plugins.slack]\nextra_allowed_hosts = [\"http://127.0.0.1:1234\"]\n[tenants.acme]\nclassifiers = [\"acme-rules\"]\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.max_webhook_body_bytes, 1024 * 1024);
        assert_eq!(c.classifiers_for("acme"), vec!["acme-rules"]);
        assert_eq!(c.classifiers_for("other"), vec!["wedding-keywords"]);
        std::fs::write(
            &path,
            "[plugins.slack]\nextra_allowed_hosts = [\"api.example.com\"]\n",
        )
        .unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("extra_allowed_hosts") && err.contains("scheme"),
            "{err}"
        );
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("lisen") && err.contains("c.toml"), "{err}");
    }
}
