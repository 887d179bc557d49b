//! Fuzz target: Standard Webhooks deliveries of the calendar-webhook plugin.
//!
//! ```sh
//! cargo bolero test -p presence-fuzz --test standard_webhooks standard_webhooks -T 600
//! ```

use presence_fuzz::Edit;

const STANDARD_DELIVERY: &[u8] = br#"{"type":"event.upserted","user":"ana","event":{"id":"evt-42","title":"Smith wedding ceremony","location":"Old Barn","start":"2026-06-20T14:00:00+01:00","end":1781967600000,"time_zone":"Europe/London","attendees":["planner@example.com"],"all_day":false,"transparency":"opaque"}}"#;

/// Standard Webhooks deliveries of the calendar-webhook plugin: the signature
/// header and the body.
#[test]
fn standard_webhooks() {
    presence_fuzz::fuzz!((Vec<Edit>, String), |(edits, header)| {
        for sig in calendar_webhook::v1_signatures(header) {
            assert!(!sig.is_empty());
        }
        let body = presence_fuzz::mutate(STANDARD_DELIVERY, edits);
        if let Ok(e) = calendar_webhook::parse_delivery(&body) {
            assert!(!e.user.is_empty() || body.windows(9).any(|w| w == b"\"user\":\"\""));
        }
    });
}
