//! A calendar feed any booking or planning system can send, signed the Standard
//! Webhooks way (standardwebhooks.com, spec v1):
//!
//! - `webhook-id`: the delivery id (a redelivery with the same id is ignored);
//! - `webhook-timestamp`: Unix seconds, accepted within five minutes of now;
//! - `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` of
//!   `{id}.{timestamp}.{body}`, several during a key rotation. The key is the
//!   secret `calendar-webhook.signing-secret` (store a `whsec_...` secret with
//!   `presence-host secret set calendar-webhook.signing-secret --base64`).
//!
//! Body: `{"type": "event.upserted" | "event.deleted", "user": "...", "event": {...}}`
//! where the event has `id`, `title`, `start` and `end` (RFC 3339, or Unix
//! milliseconds), and optionally `description`, `location`, `attendees`,
//! `time_zone`, `all_day`, `transparency` ("opaque"/"transparent") and
//! `online_meeting_url`. A deleted event is reported as transparent, which makes
//! the host withdraw whatever it said about that occurrence.

use presence_sdk::provider::secrets::HmacAlgorithm;
use presence_sdk::provider::{
    CalendarEvent, Feature, Guest, PluginError, ProviderInfo, Transparency, UserEvent,
    WebhookOutcome, WebhookRequest,
};
use presence_sdk::signature::{self, SignatureError};
use presence_sdk::webhook::{header, ok};
use serde::Deserialize;
use serde_json::Value;

pub const SECRET: &str = "calendar-webhook.signing-secret";
pub const WINDOW_S: i64 = 300;

/// The signed content: `{id}.{timestamp}.{body}`.
pub fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    content
}

/// The `v1` signatures of a `webhook-signature` header, decoded; other versions are skipped.
pub fn v1_signatures(header: &str) -> Vec<Vec<u8>> {
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(signature::decode_base64)
        .collect()
}

fn verify(request: &WebhookRequest) -> Result<String, SignatureError> {
    let id = header(request, "webhook-id").ok_or(SignatureError::Missing("webhook-id"))?;
    let timestamp =
        header(request, "webhook-timestamp").ok_or(SignatureError::Missing("webhook-timestamp"))?;
    let signatures =
        header(request, "webhook-signature").ok_or(SignatureError::Missing("webhook-signature"))?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::Malformed("webhook-timestamp"))?;
    let content = signed_content(id, timestamp, &request.body);
    let candidates = v1_signatures(signatures);
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("webhook-signature"));
    }
    for candidate in candidates {
        match signature::verify_bytes(SECRET, HmacAlgorithm::Sha256, &content, &candidate) {
            // Signature first, then freshness (the spec's test vector is from 2021).
            Ok(()) => {
                return signature::check_freshness(seconds, WINDOW_S).map(|()| id.to_string());
            }
            Err(SignatureError::Mismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(SignatureError::Mismatch)
}

#[derive(Debug, Deserialize)]
struct Delivery {
    #[serde(rename = "type")]
    kind: String,
    user: String,
    event: EventBody,
}

#[derive(Debug, Deserialize)]
struct EventBody {
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    attendees: Vec<String>,
    #[serde(default)]
    start: Option<Value>,
    #[serde(default)]
    end: Option<Value>,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    all_day: bool,
    #[serde(default)]
    transparency: Option<String>,
    #[serde(default)]
    online_meeting_url: Option<String>,
}

/// An RFC 3339 string or Unix milliseconds, as milliseconds.
pub fn instant(value: &Value, field: &str) -> Result<i64, String> {
    match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{field}: not an integer")),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| format!("{field}: {s:?} is not an RFC 3339 time: {e}")),
        _ => Err(format!(
            "{field}: expected an RFC 3339 string or Unix milliseconds"
        )),
    }
}

pub fn parse_delivery(body: &[u8]) -> Result<UserEvent, String> {
    let d: Delivery = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    let e = d.event;
    let deleted = match d.kind.as_str() {
        "event.upserted" => false,
        "event.deleted" => true,
        other => {
            return Err(format!(
                "type {other:?} is not event.upserted or event.deleted"
            ));
        }
    };
    let (start, end) = if deleted {
        (0, 0)
    } else {
        let start = instant(
            e.start.as_ref().ok_or("event.start is required")?,
            "event.start",
        )?;
        let end = instant(e.end.as_ref().ok_or("event.end is required")?, "event.end")?;
        if end <= start {
            return Err("event.end must be after event.start".into());
        }
        (start, end)
    };
    let transparent = deleted || e.transparency.as_deref() == Some("transparent");
    Ok(UserEvent {
        user: d.user,
        event: CalendarEvent {
            id: e.id,
            title: e.title,
            description: e.description,
            location: e.location,
            attendees: e.attendees,
            start,
            end,
            time_zone: e.time_zone,
            all_day: e.all_day,
            transparency: if transparent {
                Transparency::Transparent
            } else {
                Transparency::Opaque
            },
            online_meeting_url: e.online_meeting_url,
        },
    })
}

struct CalendarWebhook;

impl Guest for CalendarWebhook {
    fn describe() -> ProviderInfo {
        ProviderInfo {
            display_name: "Calendar webhook (Standard Webhooks)".into(),
            features: vec![Feature::Webhooks],
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        let delivery_id = verify(&request).map_err(SignatureError::into_plugin_error)?;
        let event = parse_delivery(&request.body).map_err(PluginError::InvalidInput)?;
        Ok(WebhookOutcome {
            response: ok(),
            delivery_id: Some(delivery_id),
            events: vec![event],
            signals: Vec::new(),
        })
    }

    presence_sdk::unsupported!(push_status, sync_calendar, send_notification);
}

presence_sdk::export_provider!(CalendarWebhook);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_content_and_header_parsing_follow_the_spec() {
        assert_eq!(
            signed_content("msg_1", "1614265330", b"{}"),
            b"msg_1.1614265330.{}".to_vec()
        );
        // The spec's example header form, with a rotated second key and a future version.
        let sigs =
            v1_signatures("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1a,xyz v1,aGVsbG8=");
        assert_eq!(sigs.len(), 2);
        assert_eq!(sigs[1], b"hello".to_vec());
    }

    #[test]
    fn deliveries_parse_into_events() {
        let body =
            br#"{"type":"event.upserted","user":"alice","event":{"id":"e1","title":"Ceremony",
            "location":"Old Barn","start":"2026-06-20T14:00:00+01:00","end":1781967600000}}"#;
        let ue = parse_delivery(body).unwrap();
        assert_eq!(ue.user, "alice");
        assert_eq!(ue.event.start, 1_781_960_400_000);
        assert_eq!(ue.event.transparency, Transparency::Opaque);
        let deleted =
            parse_delivery(br#"{"type":"event.deleted","user":"alice","event":{"id":"e1"}}"#)
                .unwrap();
        assert_eq!(deleted.event.transparency, Transparency::Transparent);
    }

    #[test]
    fn malformed_deliveries_say_what_is_wrong() {
        let cases: [(&[u8], &str); 4] = [
            (b"{", "body"),
            (br#"{"type":"event.moved","user":"a","event":{"id":"e"}}"#, "event.moved"),
            (br#"{"type":"event.upserted","user":"a","event":{"id":"e","start":"tomorrow","end":1}}"#, "RFC 3339"),
            (br#"{"type":"event.upserted","user":"a","event":{"id":"e","start":2,"end":1}}"#, "after"),
        ];
        for (body, expected) in cases {
            let err = parse_delivery(body).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
