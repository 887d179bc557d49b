//! Fuzz target: Slack Events API payloads, as the slack plugin reads them.
//!
//! ```sh
//! cargo bolero test -p presence-fuzz --test slack slack_events -T 600
//! ```

use presence_fuzz::{Edit, pick};
use serde_json::Value;

const SLACK_EVENT: &[u8] = br#"{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"user_status_changed","user":{"id":"U0G9QF9C6","profile":{"status_text":"Ceremony prep - Old Barn","status_emoji":":spiral_calendar_pad:","status_expiration":1780063200}}}}"#;
const SLACK_HUDDLE: &[u8] = br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"user_huddle_changed","user":{"id":"U1","profile":{"huddle_state":"in_a_huddle"}}}}"#;

/// Slack Events API payloads into signals.
#[test]
fn slack_events() {
    presence_fuzz::fuzz!((u8, Vec<Edit>), |(seed, edits)| {
        let body = pick(&[SLACK_EVENT, SLACK_HUDDLE], *seed, edits);
        let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
            return;
        };
        let event = payload.get("event").cloned().unwrap_or(Value::Null);
        for s in slack::signals_of(&event) {
            assert!(!s.user.is_empty());
            // A status cleared in Slack clears ours; a set one says something.
            assert_eq!(
                s.clears,
                s.status_text.is_none() && s.status_emoji.is_none()
            );
        }
    });
}
