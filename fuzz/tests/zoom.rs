//! Fuzz target: Zoom webhook payloads, as the zoom plugin reads them.
//!
//! ```sh
//! cargo bolero test -p presence-fuzz --test zoom zoom_events -T 600
//! ```

use presence_fuzz::{Edit, pick};
use serde_json::Value;

const ZOOM_JOINED: &[u8] = br#"{"event":"meeting.participant_joined","event_ts":1780048800000,"payload":{"account_id":"A1","object":{"uuid":"m1==","id":"85746065432","host_id":"H1","participant":{"id":"U1","participant_uuid":"P1","email":"ana@example.com"}}}}"#;
const ZOOM_STARTED: &[u8] = br#"{"event":"meeting.started","event_ts":1780048800000,"payload":{"object":{"uuid":"m2==","host_id":"H1"}}}"#;

/// Zoom meeting events into in-a-call changes and delivery ids.
#[test]
fn zoom_events() {
    presence_fuzz::fuzz!((u8, Vec<Edit>), |(seed, edits)| {
        let body = pick(&[ZOOM_JOINED, ZOOM_STARTED], *seed, edits);
        let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
            return;
        };
        if let Some((who, _)) = zoom::call_change(&payload) {
            assert!(!who.is_empty() || payload.to_string().contains("\"\""));
        }
        if let Some(id) = zoom::delivery_id(&payload) {
            // Retries of one delivery share it: Zoom's retry carries the
            // same payload, whatever its key order or spacing.
            let resent: Value = serde_json::from_str(&payload.to_string()).unwrap();
            assert_eq!(zoom::delivery_id(&resent), Some(id.clone()));
            assert!(id.starts_with(payload["event"].as_str().unwrap()), "{id}");
        }
    });
}
