//! Fuzz targets: Microsoft Graph delta pages and change notifications, as the
//! microsoft-graph plugin reads them.
//!
//! ```sh
//! cargo bolero test -p presence-fuzz --test graph graph_delta_pages -T 600
//! ```

use microsoft_graph::events::{is_delta_cursor, read_page};
use microsoft_graph::notifications::{Notification, validation_token, verify};
use microsoft_graph::subscriptions::{Kind, SubscriptionRecord};
use presence_fuzz::{Edit, pick};

const DAY_MS: i64 = 86_400_000;
const BASE: &str = "https://graph.microsoft.com";

const DELTA: &[u8] = br#"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#Collection(event)","@odata.nextLink":"https://graph.microsoft.com/v1.0/me/calendarView/delta?$skiptoken=R0usmci39OQxqJrxK4","value":[{"id":"AAMkAGI2","subject":"Seating plan","bodyPreview":"Table 4","showAs":"busy","type":"singleInstance","isAllDay":false,"isCancelled":false,"start":{"dateTime":"2026-11-26T10:00:00.0000000","timeZone":"UTC"},"end":{"dateTime":"2026-11-26T11:00:00.0000000","timeZone":"UTC"},"location":{"displayName":"Old Barn"},"attendees":[{"emailAddress":{"address":"ana@example.com"}}],"isOnlineMeeting":true,"onlineMeeting":{"joinUrl":"https://teams.microsoft.com/l/meetup-join/x"}},{"@removed":{"reason":"deleted"},"id":"AAMkAGI3"}]}"#;
const ALL_DAY: &[u8] = br#"{"@odata.deltaLink":"https://graph.microsoft.com/v1.0/me/calendarView/delta?$deltatoken=R0usmcMp","value":[{"id":"d1","subject":"Wedding weekend","showAs":"oof","isAllDay":true,"start":{"dateTime":"2027-03-27T00:00:00.0000000","timeZone":"UTC"},"end":{"dateTime":"2027-03-29T00:00:00.0000000","timeZone":"UTC"}},{"id":"m","type":"seriesMaster","start":{"dateTime":"2026-01-01T00:00:00.0000000","timeZone":"UTC"},"end":{"dateTime":"2026-01-01T01:00:00.0000000","timeZone":"UTC"}}]}"#;
const NOTE: &[u8] = br#"{"value":[{"subscriptionId":"events-1","clientState":"s3cret","changeType":"updated","resource":"me/events/AAMk","tenantId":"t"},{"subscriptionId":"presence-1","clientState":"other","changeType":"updated"},{"subscriptionId":"events-1","clientState":"s3cret","lifecycleEvent":"reauthorizationRequired"}]}"#;

/// calendarView/delta pages into events, removed ids and the next link.
#[test]
fn graph_delta_pages() {
    presence_fuzz::fuzz!((u8, Vec<Edit>), |(seed, edits)| {
        let body = pick(&[DELTA, ALL_DAY], *seed, edits);
        let Ok(reading) = read_page(&body) else {
            return;
        };
        let page = reading.page;
        for event in &page.events {
            assert!(!event.id.is_empty());
            assert!(event.start <= event.end, "{event:?}");
            if event.all_day {
                assert_eq!(event.start.rem_euclid(DAY_MS), 0, "{event:?}");
            }
        }
        assert!(page.removed.iter().all(|id| !id.is_empty()));
        // More pages come with the link to them.
        assert!(!page.more || page.next_cursor.is_some());
    });
}

/// Links kept as cursors: only delta URLs under the API base are followed.
#[test]
fn graph_delta_cursors() {
    presence_fuzz::fuzz!(String, |cursor: &String| {
        if is_delta_cursor(BASE, cursor) {
            let rest = &cursor[BASE.len()..];
            assert!(rest.starts_with("/v1.0/"), "{cursor}");
            let path = rest.split('?').next().unwrap();
            assert!(!path.contains("..") && path.ends_with("/delta"), "{cursor}");
        }
        // A validation token is whatever the query says, decoded; never a panic.
        let _ = validation_token(cursor);
    });
}

fn records(id: &str) -> Result<Option<SubscriptionRecord>, presence_sdk::provider::PluginError> {
    Ok(match id {
        "events-1" => Some(SubscriptionRecord {
            connection: "ana".into(),
            client_state: "s3cret".into(),
            kind: Kind::Events,
            expires: 0,
        }),
        "presence-1" => Some(SubscriptionRecord {
            connection: "ana".into(),
            client_state: "other".into(),
            kind: Kind::Presence,
            expires: 0,
        }),
        _ => None,
    })
}

/// Change notifications: work is only ever for our subscriptions, with their secrets.
#[test]
fn graph_notifications() {
    presence_fuzz::fuzz!((u8, Vec<Edit>), |(seed, edits)| {
        let body = pick(&[NOTE], *seed, edits);
        let Ok(delivery) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return;
        };
        let Ok(items) = serde_json::from_value::<Vec<Notification>>(delivery["value"].clone())
        else {
            return;
        };
        if let Ok(work) = verify(&items, records) {
            assert!(work.verified > 0);
            for connection in work.sync.iter().chain(&work.presence).chain(&work.watch) {
                assert_eq!(connection, "ana");
            }
        }
    });
}
