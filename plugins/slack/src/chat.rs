//! Notifications as Slack messages, through chat.postMessage.
//!
//! Sources, Slack's docs:
//! - chat.postMessage (<https://docs.slack.dev/reference/methods/chat.postMessage>):
//!   `channel` is "an encoded ID or channel name that represents a channel,
//!   private group, or IM channel"; a user's ID posts to the direct message
//!   with that person. `text`: "Provide no more than 40,000 characters or risk
//!   truncation" (and "Truncating really long messages",
//!   <https://api.slack.com/changelog/2018-04-truncating-really-long-messages>).
//!   The answer is `{"ok": true, "channel": "C1H9RESGL", "ts":
//!   "1503435956.000247", "message": {...}}`; the errors are read by [`crate::web_api`].
//! - Formatting text (<https://docs.slack.dev/messaging/formatting-message-text>):
//!   `text` is mrkdwn by default, `*bold*`, and "&", "<" and ">" must be sent as
//!   `&amp;`, `&lt;` and `&gt;`, or Slack reads them as links and mentions.
//!
//! Who posts is the connection's token: a bot token (scope `chat:write`) posts
//! as the app, a user token (also `chat:write`) as that person. The channel's
//! own connection is used, else the config key `notification_connection` (a
//! workspace's bot, seeded once by the operator).
//!
//! The receipt's message id is `{channel}:{ts}`: a message's `ts` is unique
//! within its channel only, and the channel Slack answers with is the DM's own
//! (`D...`) when the address was a user id.

use presence_sdk::notify;
use presence_sdk::provider::{DeliveryReceipt, Notification, PluginError, config};
use presence_sdk::text::truncate_with_ellipsis;
use serde_json::{Value, json};

use crate::status::JSON_CONTENT_TYPE;
use crate::web_api;

/// chat.postMessage's documented ceiling for `text`, in characters.
pub const MAX_TEXT_CHARS: usize = 40_000;

/// What a cut message ends with, so the reader knows there was more.
pub const TRUNCATION_NOTE: &str = "\n_(message shortened: it was longer than Slack shows)_";

/// `&`, `<` and `>` as Slack's mrkdwn needs them escaped ("Escaping text").
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The message text: the subject in bold on its own line, then the body; cut
/// (with [`TRUNCATION_NOTE`]) so the escaped text stays within [`MAX_TEXT_CHARS`].
pub fn message_text(message: &Notification) -> String {
    let subject = message
        .subject
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let text = match subject {
        // Bold is `*...*`; the subject's own line breaks would end it early.
        Some(subject) => format!(
            "*{}*\n{}",
            escape(&subject.replace(['\r', '\n'], " ")),
            escape(&message.body)
        ),
        None => escape(&message.body),
    };
    if text.chars().count() <= MAX_TEXT_CHARS {
        return text;
    }
    let room = MAX_TEXT_CHARS - TRUNCATION_NOTE.chars().count();
    let mut cut = truncate_with_ellipsis(&text, room);
    // Never end inside an entity (`&am…`): drop a partial one.
    if let Some(amp) = cut.rfind('&')
        && !cut[amp..].contains(';')
    {
        cut.truncate(amp);
        cut.push('…');
    }
    cut + TRUNCATION_NOTE
}

/// chat.postMessage's JSON body.
pub fn post_message_body(channel: &str, text: &str) -> Vec<u8> {
    json!({ "channel": channel, "text": text })
        .to_string()
        .into_bytes()
}

/// The receipt for chat.postMessage's `ok: true` answer: `channel:ts`. Without
/// a `ts` the message was still posted: a receipt with no id, never an error
/// (which would be retried and post it twice).
pub fn receipt_of(answer: &Value) -> Result<DeliveryReceipt, PluginError> {
    let ts = answer.get("ts").and_then(Value::as_str);
    let id = match (answer.get("channel").and_then(Value::as_str), ts) {
        (Some(channel), Some(ts)) => Some(format!("{channel}:{ts}")),
        (None, ts) => ts.map(str::to_string),
        (Some(_), None) => None,
    };
    Ok(DeliveryReceipt {
        provider_message_id: id,
    })
}

/// Posts `message` to its address through `connection` (or the configured one).
pub fn send(connection: &str, message: &Notification) -> Result<DeliveryReceipt, PluginError> {
    let channel = notify::opaque_address(message, "Slack channel or user id (C0123..., U0123...)")?;
    let connection = notify::connection(connection, config::get(notify::CONNECTION_CONFIG_KEY))
        .ok_or_else(|| {
            PluginError::Internal(format!(
                "no Slack connection to post with: give the recipient's channel a connection, or set plugins.slack.config.{} to a seeded bot connection (scope chat:write)",
                notify::CONNECTION_CONFIG_KEY
            ))
        })?;
    let api_base = crate::normalized_api_base(config::get("api_base"));
    let answer = web_api::call(
        &api_base,
        "chat.postMessage",
        JSON_CONTENT_TYPE,
        post_message_body(channel, &message_text(message)),
        &connection,
    )?;
    receipt_of(&answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_sdk::provider::Urgency;

    fn note(subject: Option<&str>, body: &str) -> Notification {
        Notification {
            id: "ntf_1".into(),
            recipient: "U0123ABC".into(),
            subject: subject.map(str::to_string),
            body: body.into(),
            urgency: Urgency::High,
        }
    }

    #[test]
    fn the_subject_is_bold_above_the_body() {
        assert_eq!(
            message_text(&note(Some("Smith wedding"), "Florist at the gate")),
            "*Smith wedding*\nFlorist at the gate"
        );
        assert_eq!(
            message_text(&note(Some("  "), "Florist at the gate")),
            "Florist at the gate"
        );
        assert_eq!(
            message_text(&note(Some("Two\nlines"), "b")),
            "*Two lines*\nb"
        );
    }

    // "Escaping text": & < > become &amp; &lt; &gt;, so "<!channel>" stays text.
    #[test]
    fn control_characters_of_mrkdwn_are_escaped() {
        assert_eq!(
            message_text(&note(Some("Cake & <b>"), "ping <!channel> now")),
            "*Cake &amp; &lt;b&gt;*\nping &lt;!channel&gt; now"
        );
    }

    // "Provide no more than 40,000 characters or risk truncation."
    #[test]
    fn long_messages_are_cut_with_a_note() {
        let text = message_text(&note(None, &"é".repeat(50_000)));
        assert_eq!(text.chars().count(), MAX_TEXT_CHARS);
        assert!(text.ends_with(TRUNCATION_NOTE));
        let ampersands = message_text(&note(None, &"&".repeat(20_000)));
        assert!(ampersands.chars().count() <= MAX_TEXT_CHARS);
        let kept = ampersands
            .trim_end_matches(TRUNCATION_NOTE)
            .trim_end_matches('…');
        assert!(
            kept.ends_with("&amp;"),
            "no partial entity: {}",
            &kept[kept.len() - 8..]
        );
        let exact = "x".repeat(MAX_TEXT_CHARS);
        assert_eq!(message_text(&note(None, &exact)), exact);
    }

    #[test]
    fn the_body_names_the_channel_and_the_text() {
        let body: Value = serde_json::from_slice(&post_message_body("C1H9RESGL", "hi")).unwrap();
        assert_eq!(body, json!({"channel": "C1H9RESGL", "text": "hi"}));
    }

    // chat.postMessage's example response.
    #[test]
    fn the_receipt_is_channel_and_ts() {
        let answer = json!({
            "ok": true,
            "channel": "C1H9RESGL",
            "ts": "1503435956.000247",
            "message": {
                "text": "Here's a message for you",
                "username": "ecto1",
                "bot_id": "B19LU7CSY",
                "attachments": [{"text": "This is an attachment", "id": 1, "fallback": "This is an attachment's fallback"}],
                "type": "message",
                "subtype": "bot_message",
                "ts": "1503435956.000247"
            }
        });
        assert_eq!(
            receipt_of(&answer).unwrap().provider_message_id.as_deref(),
            Some("C1H9RESGL:1503435956.000247")
        );
        assert_eq!(
            receipt_of(&json!({"ok": true}))
                .unwrap()
                .provider_message_id,
            None
        );
    }

    // chat.postMessage's errors: where the message cannot go is final; a dead
    // token needs the person (or the operator's bot) connected again; the rate
    // limit is retried after Retry-After.
    #[test]
    fn post_message_errors_map_to_plugin_errors() {
        let read = |status: u16, headers: &[(&str, &str)], body: &str| {
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            web_api::outcome("chat.postMessage", status, &headers, body.as_bytes())
        };
        for code in [
            "channel_not_found",
            "not_in_channel",
            "is_archived",
            "msg_too_long",
            "no_text",
            "restricted_action",
        ] {
            assert!(
                matches!(read(200, &[], &format!(r#"{{"ok":false,"error":"{code}"}}"#)), Err(PluginError::InvalidInput(m)) if m.contains(code)),
                "{code}"
            );
        }
        for code in [
            "invalid_auth",
            "token_revoked",
            "not_authed",
            "account_inactive",
        ] {
            assert!(
                matches!(
                    read(200, &[], &format!(r#"{{"ok":false,"error":"{code}"}}"#)),
                    Err(PluginError::Unauthorized(_))
                ),
                "{code}"
            );
        }
        for (status, code) in [(429, "ratelimited"), (200, "rate_limited")] {
            match read(
                status,
                &[("Retry-After", "1")],
                &format!(r#"{{"ok":false,"error":"{code}"}}"#),
            ) {
                Err(PluginError::Upstream(f)) => {
                    assert_eq!((f.status, f.retry_after_ms), (Some(429), Some(1_000)))
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }
}
