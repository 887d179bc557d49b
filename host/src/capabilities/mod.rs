//! The host side of each WIT import, one file per import, in the manner of Spin's factors.
//!
//! Each capability checks the calling plugin's grants (from its manifest and the
//! operator's overrides) before it acts; nothing here trusts the plugin.

pub mod config;
pub mod http;
pub mod kv;
pub mod log;
pub mod secrets;

use std::collections::{BTreeMap, BTreeSet};

use crate::plugins::manifest::{Limits, Manifest, PluginName};
use http::HostPattern;

/// What one plugin is allowed to do, resolved once when the plugin is loaded.
#[derive(Debug, Clone)]
pub struct Grants {
    pub plugin: PluginName,
    pub allowed_hosts: Vec<HostPattern>,
    pub secrets: BTreeSet<String>,
    pub bearer_secrets: BTreeSet<String>,
    /// Secret name -> config key of the HTTP Basic user name.
    pub basic_secrets: BTreeMap<String, String>,
    pub limits: Limits,
    pub config: BTreeMap<String, String>,
}

impl Grants {
    /// The manifest's grants, with the operator's per-plugin overrides applied on top.
    pub fn resolve(
        manifest: &Manifest,
        overrides: Option<&crate::config::PluginOverrides>,
    ) -> Self {
        let mut allowed_hosts = manifest.host_patterns();
        let mut config = manifest.config.clone();
        if let Some(o) = overrides {
            allowed_hosts.extend(
                o.extra_allowed_hosts
                    .iter()
                    .filter_map(|p| HostPattern::parse(p).ok()),
            );
            config.extend(o.config.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Self {
            plugin: manifest.name.clone(),
            allowed_hosts,
            secrets: manifest.capabilities.secrets.iter().cloned().collect(),
            bearer_secrets: manifest
                .capabilities
                .bearer_secrets
                .iter()
                .cloned()
                .collect(),
            basic_secrets: manifest.capabilities.basic_secrets.clone(),
            limits: manifest.limits,
            config,
        }
    }
}
