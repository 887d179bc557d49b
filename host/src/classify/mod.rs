//! A tenant's classifier chain: plugins tried in order, the first classification wins.
//!
//! A plugin that fails (trap, deadline, limit) or is missing is skipped with a
//! logged error; it never blocks the rest of the chain.

use crate::model::{
    Availability, CalendarEvent, Classification, KeyedSignal, PresenceSignal, ShowAs, SignalSource,
};
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

/// The calendar signal `event` makes for `user`, stored under `key`.
///
/// Free time (and working elsewhere) says nothing about availability: the
/// signal withdraws whatever was said under `key`. Otherwise the tenant's
/// chain classifies the event; an event no rule claims is still busy time,
/// its title kept private. Out-of-office and focus time say what they are
/// whatever the rules chose; a meeting link never makes an event a live call.
/// A tenant's classifier chain, ready to run.
#[derive(Clone, Copy)]
pub struct Chain<'a> {
    pub registry: &'a PluginRegistry,
    pub classifiers: &'a [String],
    pub tenant: &'a str,
}

pub async fn event_signal(
    chain: Chain<'_>,
    user: &str,
    key: String,
    origin: &str,
    event: &CalendarEvent,
    show_as: ShowAs,
) -> KeyedSignal {
    let withdrawn = |key: String| KeyedSignal {
        key,
        origin: origin.to_string(),
        signal: PresenceSignal {
            user: user.to_string(),
            source: SignalSource::Calendar,
            availability: Availability::Available,
            status_text: None,
            status_emoji: None,
            starts: None,
            expires: None,
            clears: true,
            category: None,
        },
    };
    if matches!(show_as, ShowAs::Free | ShowAs::WorkingElsewhere) {
        return withdrawn(key);
    }
    let decision = classify(chain.registry, chain.classifiers, chain.tenant, event).await;
    let (mut availability, status_text, status_emoji, category, origin) = match decision {
        Some(d) => (
            d.classification.availability,
            Some(d.classification.status_text),
            Some(d.classification.status_emoji),
            Some(d.classification.category),
            d.plugin,
        ),
        None => (Availability::Busy, None, None, None, origin.to_string()),
    };
    match show_as {
        ShowAs::OutOfOffice => availability = Availability::OutOfOffice,
        ShowAs::Focus => availability = Availability::DoNotDisturb,
        _ if availability == Availability::InCall => availability = Availability::Busy,
        _ => {}
    }
    KeyedSignal {
        key,
        origin,
        signal: PresenceSignal {
            user: user.to_string(),
            source: SignalSource::Calendar,
            availability,
            status_text,
            status_emoji,
            starts: Some(event.start),
            expires: Some(event.end),
            clears: false,
            category,
        },
    }
}
