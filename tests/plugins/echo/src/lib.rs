//! A well-behaved provider for tests: answers every webhook with `echo:<reply>`.

use presence_sdk::provider::{
    Feature, Guest, PluginError, ProviderInfo, WebhookOutcome, WebhookRequest, config,
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

    presence_sdk::unsupported!(push_status, sync_calendar, send_notification);
}

presence_sdk::export_provider!(Echo);
