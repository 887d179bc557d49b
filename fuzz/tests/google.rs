//! Fuzz targets: Google Calendar answers and notification headers, as the
//! google-calendar plugin reads them.
//!
//! ```sh
//! cargo bolero test -p presence-fuzz --test google google_event_pages -T 600
//! ```

use google_calendar::channels::Notification;
use google_calendar::events::read_page;
use presence_fuzz::{Edit, pick};

const DAY_MS: i64 = 86_400_000;

const TIMED: &[u8] = br#"{"kind":"calendar#events","nextSyncToken":"CPDAlvWDx70CEPDAlvWDx70CGAU=","items":[{"kind":"calendar#event","id":"e1","status":"confirmed","summary":"Ceremony rehearsal","location":"Old Barn","start":{"dateTime":"2026-06-13T14:00:00+01:00","timeZone":"Europe/London"},"end":{"dateTime":"2026-06-13T16:00:00+01:00","timeZone":"Europe/London"},"attendees":[{"email":"ana@example.com","self":true,"responseStatus":"accepted"}],"conferenceData":{"conferenceSolution":{"key":{"type":"hangoutsMeet"}},"entryPoints":[{"entryPointType":"video","uri":"https://meet.google.com/abc-defg-hij"}]}}]}"#;
const MIXED: &[u8] = br#"{"kind":"calendar#events","nextPageToken":"p2","items":[{"id":"d1","status":"confirmed","summary":"Wedding weekend","start":{"date":"2027-03-27"},"end":{"date":"2027-03-29"},"transparency":"transparent"},{"id":"gone","status":"cancelled"},{"id":"ooo","eventType":"outOfOffice","start":{"dateTime":"2026-07-01T00:00:00Z"},"end":{"dateTime":"2026-07-08T00:00:00Z"}}]}"#;

/// events.list answers into events, removed ids and page tokens.
#[test]
fn google_event_pages() {
    presence_fuzz::fuzz!((u8, Vec<Edit>), |(seed, edits)| {
        let body = pick(&[TIMED, MIXED], *seed, edits);
        let Ok(page) = read_page(&body) else {
            return;
        };
        for event in &page.events {
            assert!(!event.id.is_empty(), "{event:?}");
            assert!(event.start <= event.end, "{event:?}");
            if event.all_day {
                // Dates, as the calendar contract says: midnight UTC.
                assert_eq!(event.start.rem_euclid(DAY_MS), 0, "{event:?}");
                assert_eq!(event.end.rem_euclid(DAY_MS), 0, "{event:?}");
            }
        }
        assert!(page.removed.iter().all(|id| !id.is_empty()));
        assert!(page.next_page_token.as_ref().is_none_or(|t| !t.is_empty()));
    });
}

/// Notification headers: only a well-formed channel id is looked up.
#[test]
fn google_notification_headers() {
    presence_fuzz::fuzz!((String, String, String), |(id, state, number)| {
        let headers = [
            ("x-goog-channel-id", id.as_str()),
            ("x-goog-resource-state", state.as_str()),
            ("x-goog-message-number", number.as_str()),
        ];
        let read = Notification::read(|name| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        });
        if let Ok(n) = read {
            assert!(!n.channel_id.is_empty() && n.channel_id.len() <= 64);
            assert!(
                n.channel_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_+/=".contains(&b))
            );
        }
    });
}
