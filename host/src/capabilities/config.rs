//! `wedsync:presence/config`: the plugin's non-secret settings.

use super::Grants;

/// The value of `key` for this plugin, operator overrides first, then the manifest.
pub fn get(grants: &Grants, key: &str) -> Option<String> {
    grants.config.get(key).cloned()
}
