//! A tenant's classifier chain: plugins tried in order, the first classification wins.
//!
//! A plugin that fails (trap, deadline, limit) or is missing is skipped with a
//! logged error; it never blocks the rest of the chain.

use crate::model::{CalendarEvent, Classification};
use crate::plugins::PluginRegistry;

/// A classification and the plugin that made it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub classification: Classification,
    pub plugin: String,
}

pub async fn classify(
    registry: &PluginRegistry,
    chain: &[String],
    tenant: &str,
    event: &CalendarEvent,
) -> Option<Decision> {
    for name in chain {
        let Some(plugin) = registry.get(name) else {
            tracing::warn!(plugin = %name, tenant, "classifier in the tenant's chain is not loaded; skipped");
            continue;
        };
        match registry
            .runtime()
            .classify(&plugin.pre, &plugin.grants, tenant, event)
            .await
        {
            Ok(Some(classification)) => {
                return Some(Decision {
                    classification,
                    plugin: name.clone(),
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(tenant, error = %e, "classifier failed; trying the next in the chain")
            }
        }
    }
    None
}
