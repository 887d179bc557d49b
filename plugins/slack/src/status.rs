//! What a derived presence becomes in Slack: a custom status and an active/away flag.
//!
//! Sources, Slack's docs:
//! - users.profile.set, "Updating a user's current status": `status_text` up to 100
//!   characters, `status_emoji` an emoji short code; "to unset a user's custom
//!   status, provide empty strings to both attributes"; the error
//!   `must_clear_both_status_text_and_status_emoji` refuses a half-cleared one.
//! - "User presence and status": `status_expiration` is Unix seconds, "when 0 or
//!   omitted, the status does not expire".
//! - Web API basics: JSON bodies need the token in an `Authorization` header
//!   (the host adds it) and a `charset` in their `Content-type`, or Slack answers
//!   with a `missing_charset` warning.
//! - users.setPresence: `presence` is "either auto or away".

use presence_sdk::provider::{Availability, Presence};
use presence_sdk::text::truncate_with_ellipsis;
use serde_json::json;

use crate::emoji;

/// Slack's cap on `status_text`, in characters.
pub const MAX_STATUS_TEXT_CHARS: usize = 100;

/// The `Content-type` of a JSON Web API call, charset included as Slack asks.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// The `Content-type` of a form call; Slack warns `superfluous_charset` on a charset here.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// A Slack custom status, as users.profile.set takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackStatus {
    pub text: String,
    /// A `:short_code:`, or empty.
    pub emoji: String,
    /// Unix seconds; 0 for a status that does not expire.
    pub expiration: i64,
}

impl SlackStatus {
    /// The status Slack shows as none at all.
    pub fn cleared() -> Self {
        Self {
            text: String::new(),
            emoji: String::new(),
            expiration: 0,
        }
    }

    pub fn is_cleared(&self) -> bool {
        self.text.is_empty() && self.emoji.is_empty()
    }
}

/// The custom status for `presence`.
///
/// A presence with no text clears the status, even when it has an emoji: Slack
/// refuses an emoji without text as a half-cleared status
/// (`must_clear_both_status_text_and_status_emoji`), and an emoji alone says
/// little about where a vendor is. A presence's own emoji is mapped to a short
/// code or dropped (see [`emoji::short_code`]).
pub fn status_of(presence: &Presence) -> SlackStatus {
    let text = presence.status_text.as_deref().unwrap_or("").trim();
    if text.is_empty() {
        return SlackStatus::cleared();
    }
    SlackStatus {
        text: truncate_with_ellipsis(text, MAX_STATUS_TEXT_CHARS),
        emoji: presence
            .status_emoji
            .as_deref()
            .and_then(emoji::short_code)
            .unwrap_or_default(),
        expiration: presence.until.map_or(0, expiration_seconds),
    }
}

/// `until` (milliseconds) as Slack's `status_expiration` (seconds). An instant at
/// or before the epoch means no expiry rather than a status that is born expired.
pub fn expiration_seconds(until_ms: i64) -> i64 {
    if until_ms <= 0 { 0 } else { until_ms / 1000 }
}

/// users.profile.set's JSON body for `status`.
pub fn profile_set_body(status: &SlackStatus) -> Vec<u8> {
    json!({
        "profile": {
            "status_text": status.text,
            "status_emoji": status.emoji,
            "status_expiration": status.expiration,
        }
    })
    .to_string()
    .into_bytes()
}

/// Slack's manual presence for an availability: `away` for someone who is not
/// there at all (away, out of office, offline), `auto` (Slack decides from
/// activity) for everyone else, busy ones included, who are at work.
pub fn slack_presence(availability: Availability) -> &'static str {
    match availability {
        Availability::Away | Availability::OutOfOffice | Availability::Offline => "away",
        Availability::Available
        | Availability::Busy
        | Availability::InCall
        | Availability::DoNotDisturb => "auto",
    }
}

/// users.setPresence's form body.
pub fn set_presence_body(availability: Availability) -> Vec<u8> {
    format!("presence={}", slack_presence(availability)).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn presence(text: Option<&str>, emoji: Option<&str>, until: Option<i64>) -> Presence {
        Presence {
            user: "U1".into(),
            availability: Availability::Busy,
            status_text: text.map(str::to_string),
            status_emoji: emoji.map(str::to_string),
            until,
            category: None,
        }
    }

    // users.profile.set: both status_text and status_emoji in a `profile` object.
    #[test]
    fn a_presence_becomes_a_profile_body() {
        let p = presence(
            Some("📸 Ceremony prep - Old Barn"),
            Some(":camera:"),
            Some(1_767_258_000_999),
        );
        let body: Value = serde_json::from_slice(&profile_set_body(&status_of(&p))).unwrap();
        assert_eq!(
            body,
            json!({"profile": {
                "status_text": "📸 Ceremony prep - Old Barn",
                "status_emoji": ":camera:",
                "status_expiration": 1_767_258_000,
            }})
        );
    }

    // "To unset a user's custom status, provide empty strings to both attributes."
    #[test]
    fn no_text_clears_the_status() {
        for p in [
            presence(None, None, None),
            presence(Some("  "), None, Some(5_000)),
            presence(None, Some(":camera:"), None),
        ] {
            let body: Value = serde_json::from_slice(&profile_set_body(&status_of(&p))).unwrap();
            assert_eq!(
                body,
                json!({"profile": {"status_text": "", "status_emoji": "", "status_expiration": 0}})
            );
        }
        assert!(status_of(&presence(None, Some(":x:"), None)).is_cleared());
    }

    #[test]
    fn emoji_are_short_codes_or_nothing() {
        let mapped = status_of(&presence(Some("Shoot"), Some("📸"), None));
        assert_eq!(mapped.emoji, ":camera_with_flash:");
        let dropped = status_of(&presence(Some("Flamingo hunt"), Some("🦩"), None));
        assert_eq!(
            (dropped.text.as_str(), dropped.emoji.as_str()),
            ("Flamingo hunt", "")
        );
    }

    #[test]
    fn long_text_fits_slacks_hundred_characters() {
        let long = format!("💑 Client consultation - {}", "Smith & Jones ".repeat(10));
        let s = status_of(&presence(Some(&long), None, None));
        assert_eq!(s.text.chars().count(), MAX_STATUS_TEXT_CHARS);
        assert!(s.text.ends_with('…'));
    }

    // "User presence and status": status_expiration in seconds, 0 = never.
    #[test]
    fn until_becomes_seconds() {
        assert_eq!(expiration_seconds(1_700_000_000_000), 1_700_000_000);
        assert_eq!(expiration_seconds(1_700_000_000_999), 1_700_000_000);
        assert_eq!(expiration_seconds(0), 0);
        assert_eq!(expiration_seconds(-5), 0);
        assert_eq!(status_of(&presence(Some("x"), None, None)).expiration, 0);
    }

    // users.setPresence: "Either auto or away".
    #[test]
    fn away_only_when_not_there() {
        for a in [
            Availability::Away,
            Availability::OutOfOffice,
            Availability::Offline,
        ] {
            assert_eq!(set_presence_body(a), b"presence=away".to_vec());
        }
        for a in [
            Availability::Available,
            Availability::Busy,
            Availability::InCall,
            Availability::DoNotDisturb,
        ] {
            assert_eq!(set_presence_body(a), b"presence=auto".to_vec());
        }
    }
}
