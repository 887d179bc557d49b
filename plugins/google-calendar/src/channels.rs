//! Notification channels: what the plugin keeps about each, and how a
//! notification is recognised as one of ours ("Push notifications",
//! developers.google.com/calendar/api/guides/push).
//!
//! A channel is created by events.watch with our own `id` (a UUID) and `token`
//! (32 random bytes, hex); Google answers with the watched resource's
//! `resourceId` and the channel's `expiration`. Each notification carries
//! them back as `X-Goog-Channel-ID`, `X-Goog-Channel-Token` and
//! `X-Goog-Resource-ID`; all three must match what was kept, the token
//! compared in constant time. Google signs nothing, so the token is the
//! notification's only proof.
//!
//! Kept in the plugin's kv store (per tenant):
//! - `channel/{id}`: [`ChannelRecord`], from just before events.watch is called
//!   (Google sends the channel's `sync` message at once, possibly before the
//!   watch call has returned, so the record exists without its `resourceId`
//!   until then) until the channel is stopped;
//! - `connection/{connection}`: [`ConnectionRecord`], the current channel and
//!   the replaced ones not yet stopped. Channels cannot be renewed ("there is
//!   no automatic way to renew a notification channel"): a new one is created
//!   and the old one stopped after, and accepted until it is.

use serde::{Deserialize, Serialize};

/// What the plugin keeps about one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub connection: String,
    pub token: String,
    /// Google's id of the watched resource; none until events.watch answered.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// When Google stops notifying (ms since the epoch), if known.
    #[serde(default)]
    pub expiration_ms: Option<i64>,
}

/// The channels of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    #[serde(default)]
    pub current: Option<String>,
    /// Replaced channels that could not be stopped yet.
    #[serde(default)]
    pub retired: Vec<String>,
}

pub fn channel_key(id: &str) -> String {
    format!("channel/{id}")
}

pub fn connection_key(connection: &str) -> String {
    format!("connection/{connection}")
}

/// The `X-Goog-*` headers of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification<'a> {
    pub channel_id: &'a str,
    pub token: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    /// `sync`, `exists` or `not_exists`.
    pub resource_state: &'a str,
    pub message_number: Option<&'a str>,
}

impl<'a> Notification<'a> {
    /// Reads the headers (`header` looks one up by its lower-case name).
    pub fn read(header: impl Fn(&str) -> Option<&'a str>) -> Result<Self, String> {
        Ok(Self {
            // Our channel ids are UUIDs (Google allows up to 64 characters of
            // [A-Za-z0-9\-_+/=]); anything else is not one of ours, and is not
            // looked up.
            channel_id: header("x-goog-channel-id")
                .filter(|v| {
                    !v.is_empty()
                        && v.len() <= 64
                        && v.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_+/=".contains(&b))
                })
                .ok_or("missing or malformed X-Goog-Channel-ID: not a notification of ours")?,
            token: header("x-goog-channel-token"),
            resource_id: header("x-goog-resource-id").map(str::trim),
            resource_state: header("x-goog-resource-state")
                .map(str::trim)
                .ok_or("missing X-Goog-Resource-State")?,
            message_number: header("x-goog-message-number").map(str::trim),
        })
    }

    /// Whether this notification belongs to `record`'s channel: the token
    /// (constant time) and, once Google has named it, the resource id.
    pub fn verify(&self, record: &ChannelRecord) -> Result<(), &'static str> {
        let token = self.token.ok_or("missing X-Goog-Channel-Token")?;
        if !constant_time_eq(token.as_bytes(), record.token.as_bytes()) {
            return Err("X-Goog-Channel-Token does not match the channel's token");
        }
        match (&record.resource_id, self.resource_id) {
            (Some(kept), Some(sent)) if kept == sent => Ok(()),
            (Some(_), _) => Err("X-Goog-Resource-ID is not the watched resource"),
            // The channel is being created: the token is proof enough.
            (None, _) => Ok(()),
        }
    }

    /// The delivery id: channel and message number, so a redelivered message
    /// is recognised by the host. None without a message number.
    pub fn delivery_id(&self) -> Option<String> {
        self.message_number
            .filter(|n| !n.is_empty())
            .map(|n| format!("{}:{n}", self.channel_id))
    }
}

/// Whether `a` equals `b`, in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh channel id: a random (version 4) UUID, which Google suggests
/// ("A UUID or similar unique string that identifies this new channel").
pub fn new_channel_id(random: [u8; 16]) -> String {
    let mut b = random;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = presence_sdk::signature::encode_hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The channel's `expiration` in events.watch's answer (ms since the epoch):
/// a JSON string, as Google writes 64-bit integers, or a number.
pub fn expiration_ms(answer: &serde_json::Value) -> Option<i64> {
    match answer.get("expiration")? {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    // The push guide's example `sync` message.
    fn guide_sync_message() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("x-goog-channel-id", "4ba78bf0-6a47-11e2-bcfd-0800200c9a66"),
            ("x-goog-channel-token", "398348u3tu83ut8uu38"),
            ("x-goog-channel-expiration", "Tue, 19 Nov 2013 01:13:52 GMT"),
            ("x-goog-resource-id", " ret08u3rv24htgh289g"),
            (
                "x-goog-resource-uri",
                "https://www.googleapis.com/calendar/v3/calendars/my_calendar@gmail.com/events",
            ),
            ("x-goog-resource-state", " sync"),
            ("x-goog-message-number", "1"),
        ])
    }

    fn record(resource_id: Option<&str>) -> ChannelRecord {
        ChannelRecord {
            connection: "alice-google".into(),
            token: "398348u3tu83ut8uu38".into(),
            resource_id: resource_id.map(str::to_string),
            expiration_ms: Some(1_384_823_632_000),
        }
    }

    #[test]
    fn the_guides_sync_message_reads_and_verifies() {
        let headers = guide_sync_message();
        let n = Notification::read(|k| headers.get(k).copied()).unwrap();
        assert_eq!(n.channel_id, "4ba78bf0-6a47-11e2-bcfd-0800200c9a66");
        assert_eq!(n.resource_state, "sync");
        assert_eq!(n.resource_id, Some("ret08u3rv24htgh289g"));
        assert_eq!(
            n.delivery_id().as_deref(),
            Some("4ba78bf0-6a47-11e2-bcfd-0800200c9a66:1")
        );
        assert_eq!(n.verify(&record(Some("ret08u3rv24htgh289g"))), Ok(()));
        // While events.watch has not answered, the token alone is enough.
        assert_eq!(n.verify(&record(None)), Ok(()));
    }

    #[test]
    fn wrong_or_missing_tokens_and_resources_are_refused() {
        let mut headers = guide_sync_message();
        let kept = record(Some("ret08u3rv24htgh289g"));
        headers.insert("x-goog-channel-token", "398348u3tu83ut8uu39");
        let n = Notification::read(|k| headers.get(k).copied()).unwrap();
        assert!(n.verify(&kept).is_err());
        headers.insert("x-goog-channel-token", "398348u3tu83ut8uu38x");
        let n = Notification::read(|k| headers.get(k).copied()).unwrap();
        assert!(n.verify(&kept).is_err());
        headers.remove("x-goog-channel-token");
        let n = Notification::read(|k| headers.get(k).copied()).unwrap();
        assert!(n.verify(&kept).is_err());
        let mut headers = guide_sync_message();
        headers.insert("x-goog-resource-id", "another-resource");
        let n = Notification::read(|k| headers.get(k).copied()).unwrap();
        assert!(n.verify(&kept).is_err());
        headers.remove("x-goog-resource-id");
        let n = Notification::read(|k| headers.get(k).copied()).unwrap();
        assert!(n.verify(&kept).is_err());
    }

    #[test]
    fn a_request_without_google_headers_is_not_a_notification() {
        let mut headers = guide_sync_message();
        headers.remove("x-goog-resource-state");
        assert!(Notification::read(|k| headers.get(k).copied()).is_err());
        let mut headers = guide_sync_message();
        headers.insert("x-goog-channel-id", "");
        assert!(Notification::read(|k| headers.get(k).copied()).is_err());
        let mut headers = guide_sync_message();
        headers.remove("x-goog-message-number");
        let n = Notification::read(|k| headers.get(k).copied()).unwrap();
        assert_eq!(n.delivery_id(), None);
    }

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn channel_ids_are_version_4_uuids() {
        let id = new_channel_id([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = new_channel_id([0; 16]);
        assert_eq!(id, "00000000-0000-4000-8000-000000000000");
    }

    // The Channel resource writes `expiration` as a string of milliseconds (a
    // 64-bit integer in Google's JSON); the push guide's example as a number.
    #[test]
    fn expirations_read_as_strings_or_numbers() {
        let answer = serde_json::json!({"kind": "api#channel", "expiration": "1426325213000"});
        assert_eq!(expiration_ms(&answer), Some(1_426_325_213_000));
        let answer = serde_json::json!({"expiration": 1_426_325_213_000i64});
        assert_eq!(expiration_ms(&answer), Some(1_426_325_213_000));
        assert_eq!(
            expiration_ms(&serde_json::json!({"expiration": "soon"})),
            None
        );
        assert_eq!(expiration_ms(&serde_json::json!({})), None);
    }

    #[test]
    fn records_round_trip() {
        let r = record(Some("x"));
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<ChannelRecord>(&json).unwrap(), r);
        let c: ConnectionRecord = serde_json::from_str("{}").unwrap();
        assert_eq!(c, ConnectionRecord::default());
    }
}
