//! A well-behaved provider for tests: answers every webhook with `echo:<reply>`.

use presence_sdk::provider::{
    DeliveryReceipt, Feature, Guest, Notification, PluginError, Presence, ProviderInfo, SyncPage,
    WebhookOutcome, WebhookRequest, config,
};
use presence_sdk::webhook::{answer_only, respond};

struct Echo;

impl Guest for Echo {
    fn describe() -> ProviderInfo {
        ProviderInfo {
            display_name: "Echo".into(),
            features: vec![Feature::Webhooks],
        }
    }

    fn handle_webhook(_request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        let reply = config::get("reply").unwrap_or_default();
        Ok(answer_only(respond(
            200,
            "text/plain",
            format!("echo:{reply}"),
        )))
    }

    fn push_status(_c: String, _p: Presence) -> Result<(), PluginError> {
        Err(PluginError::Unsupported("no".into()))
    }

    fn sync_calendar(_c: String, _cursor: Option<String>) -> Result<SyncPage, PluginError> {
        Err(PluginError::Unsupported("no".into()))
    }

    fn send_notification(_c: String, _m: Notification) -> Result<DeliveryReceipt, PluginError> {
        Err(PluginError::Unsupported("no".into()))
    }
}

presence_sdk::export_provider!(Echo);
