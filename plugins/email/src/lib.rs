//! Email: notifications as plain-text e-mail through Resend's HTTP API.
//!
//! `send-notification` makes one `POST {api_base}/emails` ([`resend`]): the
//! recipient's channel address is the `to` address, the configured `from` the
//! sender, the notification's subject (or its first line) the subject and its
//! body the text. The host adds `Authorization: Bearer <API key>` from the
//! secret `email.api-key`, which the plugin only names.
//!
//! Every send carries an `Idempotency-Key` made from the notification's id (and
//! the address), which Resend keeps for 24 hours: when the host retries after a
//! timeout or a crash that hid Resend's answer, Resend answers with the first
//! email's id instead of sending a second one.
//!
//! The `connection` argument is ignored: Resend has no per-person accounts,
//! every email goes out under the operator's API key and sender. The plugin
//! takes no webhooks (Resend's delivery events are not read yet).

pub mod resend;

#[cfg(target_arch = "wasm32")]
mod component {
    use presence_sdk::provider::{
        DeliveryReceipt, Feature, Guest, Notification, PluginError, ProviderInfo,
    };

    struct Email;

    impl Guest for Email {
        fn describe() -> ProviderInfo {
            ProviderInfo {
                display_name: "Email (Resend)".into(),
                features: vec![Feature::SendNotification],
            }
        }

        fn send_notification(
            _connection: String,
            message: Notification,
        ) -> Result<DeliveryReceipt, PluginError> {
            crate::resend::send(&message)
        }

        presence_sdk::unsupported!(handle_webhook, push_status, sync_calendar);
    }

    presence_sdk::export_provider!(Email);
}
