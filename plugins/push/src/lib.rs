//! Push: notifications to people's phones (and browsers) through Firebase
//! Cloud Messaging's HTTP v1 API.
//!
//! `send-notification` makes one `POST
//! {api_base}/v1/projects/{project_id}/messages:send` ([`fcm`]): the recipient's
//! channel address is the device's FCM registration token, the notification's
//! subject and body the visible title and text, its urgency the Android and
//! APNs delivery priority, and its id travels in `data.notification_id` for the
//! app to acknowledge with (and as the Android tag and APNs collapse id, so a
//! message FCM got twice, after a retry, shows once).
//!
//! FCM takes a Google OAuth 2.0 access token of a service account (scope
//! `https://www.googleapis.com/auth/firebase.messaging`). The operator seeds it
//! as a connection of this plugin; the request names that connection (the
//! channel's own, else the config key `notification_connection`) and the host
//! adds the token. The plugin takes no webhooks.

pub mod fcm;

#[cfg(target_arch = "wasm32")]
mod component {
    use presence_sdk::provider::{
        DeliveryReceipt, Feature, Guest, Notification, PluginError, ProviderInfo,
    };

    struct Push;

    impl Guest for Push {
        fn describe() -> ProviderInfo {
            ProviderInfo {
                display_name: "Push (Firebase Cloud Messaging)".into(),
                features: vec![Feature::SendNotification],
            }
        }

        fn send_notification(
            connection: String,
            message: Notification,
        ) -> Result<DeliveryReceipt, PluginError> {
            crate::fcm::send(&connection, &message)
        }

        presence_sdk::unsupported!(handle_webhook, push_status, sync_calendar);
    }

    presence_sdk::export_provider!(Push);
}
