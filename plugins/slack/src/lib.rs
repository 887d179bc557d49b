//! Slack: the Events API, verified with Slack's signing secret, and status push.
//!
//! Verification follows Slack's "Verifying requests from Slack": the signature
//! `v0=` + hex HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}` under the
//! signing secret (named `slack.signing-secret`; the host holds it), with the
//! timestamp within five minutes of now, either way.
//!
//! Events handled: `url_verification` (answered with the challenge),
//! `user_status_changed` and `user_change` (the person's own status: a
//! provider-status signal), `user_huddle_changed` (in a huddle: a call signal).
//! The Events API's `event_id` is the delivery id, so Slack's retries are
//! acknowledged without being applied twice.
//!
//! Status push (`push-status`): the derived presence becomes the person's custom
//! status (users.profile.set) and their active/away flag (users.setPresence),
//! sent with the person's connection, whose user token the host adds. The API
//! base is the `api_base` config key (default `https://slack.com`), so tests
//! point it at an emulator. See [`status`] for what is sent and [`web_api`] for
//! how Slack's answers become plugin errors.
//!
//! Notifications (`send-notification`): one chat.postMessage to the channel's
//! address (a channel id, or a person's user id for a direct message), through
//! the channel's connection or the configured `notification_connection`; see
//! [`chat`].

pub mod chat;
pub mod emoji;
pub mod status;
pub mod web_api;

use presence_sdk::provider::secrets::HmacAlgorithm;
use presence_sdk::provider::{
    Availability, DeliveryReceipt, Feature, Guest, Notification, PluginError, Presence,
    PresenceSignal, ProviderInfo, SignalSource, WebhookOutcome, WebhookRequest, config,
};
use presence_sdk::signature::{self, SignatureError};
use presence_sdk::webhook::{answer_only, header, ok, respond};
use serde_json::Value;

pub const SIGNING_SECRET: &str = "slack.signing-secret";
/// Slack's replay window, in seconds.
pub const WINDOW_S: i64 = 300;
/// Where Slack's Web API is, unless the `api_base` config key says otherwise.
pub const DEFAULT_API_BASE: &str = "https://slack.com";

/// The signed message for a request: `v0:{timestamp}:{body}`.
pub fn base_string(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!("v0:{timestamp}:").into_bytes();
    message.extend_from_slice(body);
    message
}

fn verify(request: &WebhookRequest) -> Result<(), SignatureError> {
    let timestamp = header(request, "x-slack-request-timestamp")
        .ok_or(SignatureError::Missing("X-Slack-Request-Timestamp"))?;
    let signature =
        header(request, "x-slack-signature").ok_or(SignatureError::Missing("X-Slack-Signature"))?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::Malformed("X-Slack-Request-Timestamp"))?;
    let hex = signature
        .strip_prefix("v0=")
        .ok_or(SignatureError::Malformed("X-Slack-Signature"))?;
    // Signature first, then freshness: both must hold, and this order lets Slack's
    // published test vector (signed in 2018) be checked end to end.
    signature::verify_hex(
        SIGNING_SECRET,
        HmacAlgorithm::Sha256,
        &base_string(timestamp, &request.body),
        hex,
    )?;
    signature::check_freshness(seconds, WINDOW_S)
}

/// What a status the person set says about their availability.
pub fn availability_of_status(text: &str, emoji: &str) -> Availability {
    let text = text.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    match emoji {
        ":palm_tree:" | ":airplane:" | ":face_with_thermometer:" => Availability::OutOfOffice,
        ":no_entry:" | ":no_bell:" => Availability::DoNotDisturb,
        ":spiral_calendar_pad:" | ":calendar:" => Availability::Busy,
        ":headphones:" | ":telephone_receiver:" => Availability::InCall,
        _ if has(&["out of office", "vacation", "holiday", "ooo", "sick"]) => {
            Availability::OutOfOffice
        }
        _ if has(&["do not disturb", "dnd", "focus"]) => Availability::DoNotDisturb,
        _ if has(&["meeting", "busy"]) => Availability::Busy,
        _ if has(&["away", "lunch", "commuting", "driving"]) => Availability::Away,
        _ => Availability::Available,
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// The signals an Events API `event` carries.
pub fn signals_of(event: &Value) -> Vec<PresenceSignal> {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    // An event about nobody in particular (no id, or an empty one) says nothing.
    let Some(user) = str_at(event, &["user", "id"]).filter(|id| !id.is_empty()) else {
        return Vec::new();
    };
    let profile = event.get("user").and_then(|u| u.get("profile"));
    let field = |k: &str| {
        profile
            .and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match kind {
        "user_status_changed" | "user_change" => {
            let (text, emoji) = (field("status_text"), field("status_emoji"));
            let expiration = profile
                .and_then(|p| p.get("status_expiration"))
                .and_then(Value::as_i64)
                .filter(|&e| e > 0)
                .map(|e| e * 1000);
            let clears = text.is_empty() && emoji.is_empty();
            vec![PresenceSignal {
                user: user.to_string(),
                source: SignalSource::ProviderStatus,
                availability: availability_of_status(&text, &emoji),
                status_text: (!text.is_empty()).then_some(text),
                status_emoji: (!emoji.is_empty()).then_some(emoji),
                starts: None,
                expires: expiration,
                clears,
            }]
        }
        "user_huddle_changed" => {
            let in_huddle = field("huddle_state") == "in_a_huddle";
            vec![PresenceSignal {
                user: user.to_string(),
                source: SignalSource::Call,
                availability: Availability::InCall,
                status_text: in_huddle.then(|| "In a huddle".to_string()),
                status_emoji: in_huddle.then(|| ":headphones:".to_string()),
                starts: None,
                // A huddle whose end we never hear about stops counting after four hours.
                expires: in_huddle.then(|| presence_sdk::now_ms() + 4 * 3_600_000),
                clears: !in_huddle,
            }]
        }
        _ => Vec::new(),
    }
}

pub fn handle(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
    verify(&request).map_err(SignatureError::into_plugin_error)?;
    let payload: Value = serde_json::from_slice(&request.body)
        .map_err(|e| PluginError::InvalidInput(format!("body is not JSON: {e}")))?;
    match payload.get("type").and_then(Value::as_str) {
        Some("url_verification") => {
            let challenge = payload
                .get("challenge")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    PluginError::InvalidInput("url_verification without a challenge".into())
                })?;
            Ok(answer_only(respond(200, "text/plain", challenge)))
        }
        Some("event_callback") => {
            let event = payload.get("event").cloned().unwrap_or(Value::Null);
            Ok(WebhookOutcome {
                response: ok(),
                delivery_id: payload
                    .get("event_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                events: Vec::new(),
                signals: signals_of(&event),
            })
        }
        Some(other) => {
            presence_sdk::log::debug(&format!("ignoring Slack payload type {other}"));
            Ok(answer_only(ok()))
        }
        None => Err(PluginError::InvalidInput("payload has no type".into())),
    }
}

/// `api_base` without a trailing slash, so method URLs join cleanly.
pub fn normalized_api_base(configured: Option<String>) -> String {
    configured
        .map(|b| b.trim().trim_end_matches('/').to_string())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| DEFAULT_API_BASE.to_string())
}

/// Sets the person's custom status, then their presence. The status goes first:
/// it is what people read, and if the presence call fails after it, pushing the
/// same presence again repeats an idempotent status update.
pub fn push(connection: &str, presence: &Presence) -> Result<(), PluginError> {
    let api_base = normalized_api_base(config::get("api_base"));
    let custom_status = status::status_of(presence);
    web_api::call(
        &api_base,
        "users.profile.set",
        status::JSON_CONTENT_TYPE,
        status::profile_set_body(&custom_status),
        connection,
    )?;
    web_api::call(
        &api_base,
        "users.setPresence",
        status::FORM_CONTENT_TYPE,
        status::set_presence_body(presence.availability),
        connection,
    )?;
    Ok(())
}

struct Slack;

impl Guest for Slack {
    fn describe() -> ProviderInfo {
        ProviderInfo {
            display_name: "Slack".into(),
            features: vec![
                Feature::Webhooks,
                Feature::PushStatus,
                Feature::SendNotification,
            ],
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        handle(request)
    }

    fn push_status(connection: String, presence: Presence) -> Result<(), PluginError> {
        push(&connection, &presence)
    }

    fn send_notification(
        connection: String,
        message: Notification,
    ) -> Result<DeliveryReceipt, PluginError> {
        chat::send(&connection, &message)
    }

    presence_sdk::unsupported!(sync_calendar);
}

presence_sdk::export_provider!(Slack);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_with_an_empty_user_id_gives_no_signal() {
        // Found by the fuzz target `slack_events`.
        let event = serde_json::json!({"type": "user_status_changed",
            "user": {"id": "", "profile": {"status_text": "Vows", "status_emoji": ""}}});
        assert!(signals_of(&event).is_empty());
    }
    use serde_json::json;

    #[test]
    fn api_base_defaults_to_slack_and_drops_a_trailing_slash() {
        assert_eq!(normalized_api_base(None), "https://slack.com");
        assert_eq!(normalized_api_base(Some(" ".into())), "https://slack.com");
        assert_eq!(
            normalized_api_base(Some("http://127.0.0.1:4000/".into())),
            "http://127.0.0.1:4000"
        );
    }

    #[test]
    fn base_string_is_version_timestamp_body() {
        assert_eq!(
            base_string("1531420618", b"a=b"),
            b"v0:1531420618:a=b".to_vec()
        );
    }

    #[test]
    fn status_changes_become_provider_status_signals() {
        let event = json!({"type": "user_status_changed", "user": {"id": "U1", "profile": {
            "status_text": "Vacationing", "status_emoji": ":palm_tree:", "status_expiration": 1700000000}}});
        let s = &signals_of(&event)[0];
        assert_eq!(s.user, "U1");
        assert_eq!(s.source, SignalSource::ProviderStatus);
        assert_eq!(s.availability, Availability::OutOfOffice);
        assert_eq!(s.expires, Some(1_700_000_000_000));
        assert!(!s.clears);
        let cleared = json!({"type": "user_change", "user": {"id": "U1", "profile": {"status_text": "", "status_emoji": ""}}});
        assert!(signals_of(&cleared)[0].clears);
    }

    #[test]
    fn huddles_are_calls() {
        let on = json!({"type": "user_huddle_changed", "user": {"id": "U1", "profile": {"huddle_state": "in_a_huddle"}}});
        let s = &signals_of(&on)[0];
        assert_eq!(
            (s.source, s.availability, s.clears),
            (SignalSource::Call, Availability::InCall, false)
        );
        let off = json!({"type": "user_huddle_changed", "user": {"id": "U1", "profile": {"huddle_state": "default_unset"}}});
        assert!(signals_of(&off)[0].clears);
    }

    #[test]
    fn status_wording_maps_to_availability() {
        assert_eq!(
            availability_of_status("In a meeting", ""),
            Availability::Busy
        );
        assert_eq!(
            availability_of_status("Focus time", ""),
            Availability::DoNotDisturb
        );
        assert_eq!(
            availability_of_status("Shooting at the barn", ":camera:"),
            Availability::Available
        );
    }
}
