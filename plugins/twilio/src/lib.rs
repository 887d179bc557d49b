//! Twilio: SMS and WhatsApp, for the notification channels.
//!
//! - Webhooks ([`webhook`]): inbound messages and status callbacks, verified with
//!   `X-Twilio-Signature` (HMAC-SHA1 under the auth token, `twilio.auth-token`).
//!   They carry no presence yet; each is answered with an empty TwiML document and
//!   recorded under its `MessageSid` (a status callback under
//!   `{MessageSid}:{MessageStatus}`), so Twilio's retries are not applied twice.
//! - `send-notification` ([`messages`]): one SMS or WhatsApp message through the
//!   Messages API, authenticated by the host with the API key the manifest names.
//!
//! The `connection` argument of `send-notification` is ignored: Twilio has no
//! per-user OAuth connection, every message goes out under the account's API key
//! and configured senders.

pub mod form;
pub mod messages;
pub mod webhook;

#[cfg(target_arch = "wasm32")]
mod component {
    use presence_sdk::provider::{
        DeliveryReceipt, Feature, Guest, Notification, PluginError, ProviderInfo, WebhookOutcome,
        WebhookRequest,
    };

    struct Twilio;

    impl Guest for Twilio {
        fn describe() -> ProviderInfo {
            ProviderInfo {
                display_name: "Twilio".into(),
                features: vec![Feature::Webhooks, Feature::SendNotification],
            }
        }

        fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
            crate::webhook::handle(request)
        }

        fn send_notification(
            _connection: String,
            message: Notification,
        ) -> Result<DeliveryReceipt, PluginError> {
            crate::messages::send(&message)
        }

        presence_sdk::unsupported!(push_status, sync_calendar);
    }

    presence_sdk::export_provider!(Twilio);
}
