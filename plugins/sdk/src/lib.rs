//! The guest side of presence-host plugins.
//!
//! Enable the feature of the world your plugin implements (`classifier` or
//! `provider`), implement its `Guest` trait, and export it:
//!
//! ```ignore
//! struct Rules;
//! impl presence_sdk::classifier::Guest for Rules {
//!     fn classify(event: CalendarEvent) -> Option<Classification> { ... }
//! }
//! presence_sdk::export_classifier!(Rules);
//! ```
//!
//! The host does all I/O: HTTP through [`provider::http`] (allow-listed per
//! plugin; [`upstream`] reads a provider's answers as plugin errors),
//! cryptography with named secrets through [`signature`], storage through `kv`,
//! logging through [`log`]. A plugin never holds a secret value.

pub mod settings;
pub mod text;

#[cfg(feature = "classifier")]
#[allow(clippy::too_many_arguments)]
pub mod classifier {
    wit_bindgen::generate!({
        path: "../../wit/v0.1.0",
        world: "classifier",
        pub_export_macro: true,
        export_macro_name: "export_classifier",
        default_bindings_module: "presence_sdk::classifier",
        additional_derives: [PartialEq],
    });
    pub use self::wedsync::presence::types;
    pub use self::wedsync::presence::types::*;
}

#[cfg(feature = "provider")]
#[allow(clippy::too_many_arguments)]
pub mod provider {
    wit_bindgen::generate!({
        path: "../../wit/v0.1.0",
        world: "provider",
        pub_export_macro: true,
        export_macro_name: "export_provider",
        default_bindings_module: "presence_sdk::provider",
        additional_derives: [PartialEq],
    });
    pub use self::wedsync::presence::types::*;
    pub use self::wedsync::presence::{config, http, kv, secrets, types};
}

/// A calendar provider (`wedsync:calendar@0.1.0`, world `calendar-provider`):
/// a `provider` that also exports `calendar` (watch, unwatch, sync) and imports
/// `calendar-host` (request-sync, webhook-url). The `wedsync:presence`
/// interfaces are [`provider`]'s own, so every helper of this crate works with it.
///
/// Implement [`calendar::Guest`] (the provider calls) and
/// [`calendar::CalendarGuest`] (the calendar calls) on one type and export it
/// with [`export_calendar_provider!`].
#[cfg(feature = "calendar")]
#[allow(clippy::too_many_arguments)]
pub mod calendar {
    wit_bindgen::generate!({
        path: ["../../wit/v0.1.0", "../../wit/calendar/v0.1.0"],
        world: "wedsync:calendar/calendar-provider@0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_calendar_provider",
        default_bindings_module: "presence_sdk::calendar",
        additional_derives: [PartialEq],
        with: {
            "wedsync:presence/types@0.1.0": crate::provider::types,
            "wedsync:presence/http@0.1.0": crate::provider::http,
            "wedsync:presence/secrets@0.1.0": crate::provider::secrets,
            "wedsync:presence/kv@0.1.0": crate::provider::kv,
            "wedsync:presence/log@0.1.0": crate::provider::wedsync::presence::log,
            "wedsync:presence/config@0.1.0": crate::provider::config,
        },
    });
    pub use self::exports::wedsync::calendar::calendar::Guest as CalendarGuest;
    pub use self::wedsync::calendar::calendar_host;
    pub use self::wedsync::calendar::types::{CalendarPage, Event, ShowAs, WatchLease};
}

#[cfg(feature = "calendar")]
pub use calendar::export_calendar_provider;

#[cfg(feature = "classifier")]
pub use classifier::export_classifier;
#[cfg(feature = "provider")]
pub use provider::export_provider;

#[cfg(feature = "provider")]
pub mod notify;
#[cfg(feature = "provider")]
pub mod signature;
#[cfg(feature = "provider")]
pub mod upstream;
#[cfg(feature = "provider")]
pub mod webhook;

/// Logging into the host's tracing spans.
#[cfg(any(feature = "classifier", feature = "provider"))]
pub mod log {
    #[cfg(feature = "classifier")]
    use crate::classifier::wedsync::presence::log as imp;
    #[cfg(all(feature = "provider", not(feature = "classifier")))]
    use crate::provider::wedsync::presence::log as imp;

    pub fn info(message: &str) {
        imp::write(imp::Level::Info, message);
    }
    pub fn warn(message: &str) {
        imp::write(imp::Level::Warn, message);
    }
    pub fn debug(message: &str) {
        imp::write(imp::Level::Debug, message);
    }
}

/// Milliseconds since the Unix epoch, from the host's wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Implements the provider calls a plugin does not offer, each answering
/// `unsupported` (`handle_webhook`, `push_status`, `sync_calendar`,
/// `send_notification`). Use it inside the `impl Guest` block, after the calls
/// the plugin does implement:
///
/// ```ignore
/// impl Guest for MyProvider {
///     fn describe() -> ProviderInfo { /* ... */ }
///     fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> { /* ... */ }
///     presence_sdk::unsupported!(push_status, sync_calendar, send_notification);
/// }
/// ```
#[cfg(feature = "provider")]
#[macro_export]
macro_rules! unsupported {
    ($($call:ident),+ $(,)?) => { $( $crate::__unsupported_call!($call); )+ };
}

#[cfg(feature = "provider")]
#[doc(hidden)]
#[macro_export]
macro_rules! __unsupported_call {
    (handle_webhook) => {
        fn handle_webhook(
            _request: $crate::provider::WebhookRequest,
        ) -> Result<$crate::provider::WebhookOutcome, $crate::provider::PluginError> {
            Err($crate::provider::PluginError::Unsupported(
                "this provider takes no webhooks".into(),
            ))
        }
    };
    (push_status) => {
        fn push_status(
            _connection: String,
            _presence: $crate::provider::Presence,
        ) -> Result<(), $crate::provider::PluginError> {
            Err($crate::provider::PluginError::Unsupported(
                "this provider does not push statuses".into(),
            ))
        }
    };
    (sync_calendar) => {
        fn sync_calendar(
            _connection: String,
            _cursor: Option<String>,
        ) -> Result<$crate::provider::SyncPage, $crate::provider::PluginError> {
            Err($crate::provider::PluginError::Unsupported(
                "this provider does not sync calendars".into(),
            ))
        }
    };
    (send_notification) => {
        fn send_notification(
            _connection: String,
            _message: $crate::provider::Notification,
        ) -> Result<$crate::provider::DeliveryReceipt, $crate::provider::PluginError> {
            Err($crate::provider::PluginError::Unsupported(
                "this provider does not send notifications".into(),
            ))
        }
    };
}
