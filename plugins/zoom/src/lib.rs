//! Zoom: webhooks verified with the app's secret token, as Zoom's "Using webhooks"
//! documentation specifies.
//!
//! - Signature: `x-zm-signature: v0=<hex>`, the HMAC-SHA256 under the secret token
//!   (named `zoom.secret-token`; the host holds it) of
//!   `v0:{x-zm-request-timestamp}:{raw body}`, with the timestamp within five
//!   minutes of now.
//! - `endpoint.url_validation`: answered with `plainToken` and `encryptedToken`,
//!   the hex HMAC-SHA256 of the plain token under the secret token.
//! - `meeting.started` / `meeting.ended`: the host is in a call, or no longer.
//! - `meeting.participant_joined` / `meeting.participant_left`: the participant
//!   (by Zoom user id, else e-mail) is in a call, or no longer.
//!
//! Zoom sends no delivery id; `{event}:{meeting uuid}:{participant}:{event_ts}`
//! identifies a delivery, so Zoom's retries of it are recognised.

use presence_sdk::provider::secrets::{self, HmacAlgorithm};
use presence_sdk::provider::{
    Availability, PluginError, PresenceSignal, SignalSource, WebhookOutcome, WebhookRequest,
};
use presence_sdk::signature::{self, SignatureError};
use presence_sdk::webhook::{answer_only, header, json, ok};
use serde_json::Value;

pub const SECRET: &str = "zoom.secret-token";
pub const WINDOW_S: i64 = 300;
/// A call whose end never arrives stops counting after this long.
const CALL_HORIZON_MS: i64 = 4 * 3_600_000;

/// The signed message: `v0:{timestamp}:{body}`.
pub fn message(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("v0:{timestamp}:").into_bytes();
    m.extend_from_slice(body);
    m
}

fn verify(request: &WebhookRequest) -> Result<(), SignatureError> {
    let timestamp = header(request, "x-zm-request-timestamp")
        .ok_or(SignatureError::Missing("x-zm-request-timestamp"))?;
    let signature =
        header(request, "x-zm-signature").ok_or(SignatureError::Missing("x-zm-signature"))?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::Malformed("x-zm-request-timestamp"))?;
    let hex = signature
        .strip_prefix("v0=")
        .ok_or(SignatureError::Malformed("x-zm-signature"))?;
    signature::verify_hex(
        SECRET,
        HmacAlgorithm::Sha256,
        &message(timestamp, &request.body),
        hex,
    )?;
    signature::check_freshness(seconds, WINDOW_S)
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The person an event is about, and whether they are now in the call.
pub fn call_change(payload: &Value) -> Option<(String, bool)> {
    let event = payload.get("event")?.as_str()?;
    match event {
        "meeting.started" | "meeting.ended" => Some((
            str_at(payload, "/payload/object/host_id")?.to_string(),
            event == "meeting.started",
        )),
        "meeting.participant_joined" | "meeting.participant_left" => {
            let who = str_at(payload, "/payload/object/participant/id")
                .or_else(|| str_at(payload, "/payload/object/participant/email"))?;
            Some((who.to_string(), event == "meeting.participant_joined"))
        }
        _ => None,
    }
}

/// The id Zoom's retries of one delivery share.
pub fn delivery_id(payload: &Value) -> Option<String> {
    let event = payload.get("event")?.as_str()?;
    let ts = payload.get("event_ts")?.as_i64()?;
    let meeting = str_at(payload, "/payload/object/uuid").unwrap_or("");
    let participant = str_at(payload, "/payload/object/participant/participant_uuid")
        .or_else(|| str_at(payload, "/payload/object/participant/id"))
        .unwrap_or("");
    Some(format!("{event}:{meeting}:{participant}:{ts}"))
}

pub fn handle(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
    verify(&request).map_err(SignatureError::into_plugin_error)?;
    let payload: Value = serde_json::from_slice(&request.body)
        .map_err(|e| PluginError::InvalidInput(format!("body is not JSON: {e}")))?;
    if payload.get("event").and_then(Value::as_str) == Some("endpoint.url_validation") {
        let plain = str_at(&payload, "/payload/plainToken").ok_or_else(|| {
            PluginError::InvalidInput("endpoint.url_validation without payload.plainToken".into())
        })?;
        let mac = secrets::hmac_sign(SECRET, HmacAlgorithm::Sha256, plain.as_bytes())
            .map_err(|e| SignatureError::from(e).into_plugin_error())?;
        return Ok(answer_only(json(&serde_json::json!({
            "plainToken": plain,
            "encryptedToken": signature::encode_hex(&mac),
        }))));
    }
    let Some((user, in_call)) = call_change(&payload) else {
        return Ok(answer_only(ok()));
    };
    Ok(WebhookOutcome {
        response: ok(),
        delivery_id: delivery_id(&payload),
        events: Vec::new(),
        signals: vec![PresenceSignal {
            user,
            source: SignalSource::Call,
            availability: Availability::InCall,
            // The meeting's topic can name a client: it stays out of the status.
            status_text: in_call.then(|| "In a Zoom meeting".to_string()),
            status_emoji: in_call.then(|| ":video_camera:".to_string()),
            starts: None,
            expires: in_call.then(|| presence_sdk::now_ms() + CALL_HORIZON_MS),
            clears: !in_call,
        }],
    })
}

#[cfg(target_arch = "wasm32")]
mod component {
    use super::*;
    use presence_sdk::provider::{Feature, Guest, ProviderInfo};

    struct Zoom;

    impl Guest for Zoom {
        fn describe() -> ProviderInfo {
            ProviderInfo {
                display_name: "Zoom".into(),
                features: vec![Feature::Webhooks],
            }
        }

        fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
            handle(request)
        }

        presence_sdk::unsupported!(push_status, sync_calendar, send_notification);
    }

    presence_sdk::export_provider!(Zoom);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn meetings_and_participants_map_to_call_changes() {
        let started = json!({"event": "meeting.started", "event_ts": 1, "payload": {"object": {"uuid": "m1", "host_id": "H1"}}});
        assert_eq!(call_change(&started), Some(("H1".into(), true)));
        let ended = json!({"event": "meeting.ended", "event_ts": 2, "payload": {"object": {"uuid": "m1", "host_id": "H1"}}});
        assert_eq!(call_change(&ended), Some(("H1".into(), false)));
        let joined = json!({"event": "meeting.participant_joined", "event_ts": 3,
            "payload": {"object": {"uuid": "m1", "participant": {"id": "", "email": "bea@example.com", "participant_uuid": "p1"}}}});
        assert_eq!(call_change(&joined), Some(("bea@example.com".into(), true)));
        assert_eq!(
            delivery_id(&joined).unwrap(),
            "meeting.participant_joined:m1:p1:3"
        );
        assert_eq!(call_change(&json!({"event": "recording.completed"})), None);
    }

    #[test]
    fn the_signed_message_is_version_timestamp_body() {
        assert_eq!(message("1700000000", b"{}"), b"v0:1700000000:{}".to_vec());
    }
}
