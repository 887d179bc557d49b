//! Graph `event` resources into calendar events, and a page of
//! `calendarView/delta` into a calendar page.
//!
//! Sources: the `event` resource type (v1.0), "Get incremental changes to
//! events in a calendar view" and `event: delta`. A delta page is
//! `{"value": [...], "@odata.nextLink": ...}` while more pages follow, and
//! `{"value": [...], "@odata.deltaLink": ...}` on the last; a deleted event is
//! `{"@removed": {"reason": "deleted"}, "id": ...}`. The calendar view returns
//! occurrences and exceptions of a series as their own items, so a
//! `seriesMaster` (which only carries the pattern) is skipped.
//!
//! Items are read with typed structs that skip what they do not name (the
//! HTML `body`, `recurrence`, ...): a page of a hundred events is held once, as
//! bytes, and not again as a JSON tree.

use presence_sdk::calendar::{CalendarPage, Event, ShowAs};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::time;

#[derive(Debug, Deserialize)]
pub struct DeltaPage {
    #[serde(default)]
    value: Vec<GraphEvent>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphEvent {
    id: Option<String>,
    #[serde(rename = "@removed")]
    removed: Option<IgnoredAny>,
    subject: Option<String>,
    body_preview: Option<String>,
    location: Option<Location>,
    attendees: Option<Vec<Attendee>>,
    start: Option<DateTimeTimeZone>,
    end: Option<DateTimeTimeZone>,
    is_all_day: Option<bool>,
    original_start_time_zone: Option<String>,
    show_as: Option<String>,
    is_cancelled: Option<bool>,
    online_meeting: Option<OnlineMeeting>,
    online_meeting_url: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    display_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attendee {
    email_address: Option<EmailAddress>,
}

#[derive(Debug, Deserialize)]
struct EmailAddress {
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DateTimeTimeZone {
    date_time: String,
    time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OnlineMeeting {
    join_url: Option<String>,
}

/// A delta page read, with what could not be read said in `warnings`.
#[derive(Debug)]
pub struct Reading {
    pub page: CalendarPage,
    pub warnings: Vec<String>,
}

/// What one item of a page means.
#[derive(Debug, PartialEq)]
enum Item {
    Event(Event),
    Removed(String),
    /// A series master: its occurrences come as their own items.
    Skipped,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Graph's `showAs` (`free`, `tentative`, `busy`, `oof`, `workingElsewhere`,
/// `unknown`); unknown and unexpected values count as busy, the safe side.
pub fn show_as(value: Option<&str>) -> ShowAs {
    match value {
        Some("free") => ShowAs::Free,
        Some("tentative") => ShowAs::Tentative,
        Some("oof") => ShowAs::OutOfOffice,
        Some("workingElsewhere") => ShowAs::WorkingElsewhere,
        _ => ShowAs::Busy,
    }
}

/// An instant of a `dateTimeTimeZone`, and a warning when its zone was not understood.
fn instant_of(
    value: &DateTimeTimeZone,
    id: &str,
    warnings: &mut Vec<String>,
) -> Result<i64, String> {
    let local = time::local(&value.date_time)
        .ok_or_else(|| format!("event {id}: unreadable dateTime {:?}", value.date_time))?;
    let zone_name = value.time_zone.as_deref().unwrap_or("UTC");
    let zone = time::zone(zone_name);
    if zone == time::Zone::Unknown {
        warnings.push(format!(
            "event {id}: time zone {zone_name:?} is not an IANA name; read as UTC"
        ));
    }
    Ok(time::instant(local, zone))
}

fn item(raw: GraphEvent, warnings: &mut Vec<String>) -> Result<Item, String> {
    let id = non_empty(raw.id).ok_or("an item without an id")?;
    if raw.removed.is_some() || raw.is_cancelled == Some(true) {
        return Ok(Item::Removed(id));
    }
    if raw.kind.as_deref() == Some("seriesMaster") {
        return Ok(Item::Skipped);
    }
    let (Some(start), Some(end)) = (raw.start, raw.end) else {
        return Err(format!("event {id}: no start or end"));
    };
    let all_day = raw.is_all_day == Some(true);
    let (start_ms, end_ms) = if all_day {
        // Dates, not instants: midnight UTC of the first day and of the day
        // after the last (Graph's all-day end is already that next midnight).
        let date = |v: &DateTimeTimeZone| {
            time::local(&v.date_time)
                .map(|d| time::midnight_utc(d.date()))
                .ok_or_else(|| format!("event {id}: unreadable dateTime {:?}", v.date_time))
        };
        (date(&start)?, date(&end)?)
    } else {
        (
            instant_of(&start, &id, warnings)?,
            instant_of(&end, &id, warnings)?,
        )
    };
    let online_meeting_url = non_empty(raw.online_meeting.and_then(|m| m.join_url))
        .or_else(|| non_empty(raw.online_meeting_url));
    Ok(Item::Event(Event {
        title: non_empty(raw.subject).unwrap_or_default(),
        description: non_empty(raw.body_preview),
        location: non_empty(raw.location.and_then(|l| l.display_name)),
        attendees: raw
            .attendees
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| non_empty(a.email_address?.address))
            .collect(),
        start: start_ms,
        end: end_ms.max(start_ms),
        time_zone: raw
            .original_start_time_zone
            .and_then(|z| z.trim().parse::<chrono_tz::Tz>().ok())
            .map(|tz| tz.name().to_string()),
        all_day,
        show_as: show_as(raw.show_as.as_deref()),
        online_meeting_url,
        id,
    }))
}

/// A delta page's body as a calendar page: `more` while Graph gives a
/// `nextLink` (the cursor), else the `deltaLink` is the next sync's cursor.
pub fn read_page(body: &[u8]) -> Result<Reading, String> {
    let raw: DeltaPage = serde_json::from_slice(body)
        .map_err(|e| format!("the delta page is not Graph's JSON: {e}"))?;
    let mut warnings = Vec::new();
    let mut page = CalendarPage {
        reset: false,
        events: Vec::new(),
        removed: Vec::new(),
        more: raw.next_link.is_some(),
        next_cursor: raw.next_link.or(raw.delta_link),
    };
    for event in raw.value {
        match item(event, &mut warnings) {
            Ok(Item::Event(e)) => page.events.push(e),
            Ok(Item::Removed(id)) => page.removed.push(id),
            Ok(Item::Skipped) => {}
            Err(why) => warnings.push(format!("skipped: {why}")),
        }
    }
    Ok(Reading { page, warnings })
}

/// The first request of a full sync: the calendar view from `from_ms` to `to_ms`.
pub fn full_sync_url(api_base: &str, from_ms: i64, to_ms: i64) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("startDateTime", &time::iso(from_ms))
        .append_pair("endDateTime", &time::iso(to_ms))
        .finish();
    format!("{api_base}/v1.0/me/calendarView/delta?{query}")
}

/// Whether a cursor (a `nextLink` or `deltaLink` kept by the host) is a Graph
/// delta URL under `api_base`: a cursor is followed with the person's token, so
/// one pointing anywhere else is refused.
pub fn is_delta_cursor(api_base: &str, cursor: &str) -> bool {
    cursor
        .strip_prefix(api_base)
        .and_then(|rest| rest.strip_prefix("/v1.0/"))
        .is_some_and(|rest| {
            let path = rest.split('?').next().unwrap_or(rest);
            !path.contains("..")
                && !path.to_ascii_lowercase().contains("%2e")
                && !rest.contains('#')
                && path.ends_with("/delta")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(value: serde_json::Value) -> Reading {
        read_page(value.to_string().as_bytes()).unwrap()
    }

    // "Get incremental changes to events in a calendar view", step 1's answer
    // (shortened to the fields read), with the UTC preference applied.
    fn docs_event() -> serde_json::Value {
        json!({
            "@odata.type": "#microsoft.graph.event",
            "@odata.etag": "W/\"EZ9r3czxY0m2jz8c45czkwAAFXcvIw==\"",
            "subject": "Plan shopping list",
            "body": {"contentType": "html", "content": "<html>...</html>"},
            "bodyPreview": "",
            "isAllDay": false,
            "isCancelled": false,
            "isOnlineMeeting": false,
            "showAs": "busy",
            "type": "singleInstance",
            "start": {"dateTime": "2016-12-09T20:30:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2016-12-09T22:00:00.0000000", "timeZone": "UTC"},
            "originalStartTimeZone": "Pacific Standard Time",
            "location": {"displayName": "Carpool location"},
            "attendees": [],
            "id": "AAMkADNVxRAAA="
        })
    }

    #[test]
    fn the_docs_event_maps() {
        let r = page(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)",
            "@odata.nextLink": "https://graph.microsoft.com/v1.0/me/calendarView/delta?$skiptoken=R0usmcCM996atia_s",
            "value": [docs_event()]
        }));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert!(r.page.more);
        assert_eq!(
            r.page.next_cursor.as_deref(),
            Some(
                "https://graph.microsoft.com/v1.0/me/calendarView/delta?$skiptoken=R0usmcCM996atia_s"
            )
        );
        let e = &r.page.events[0];
        assert_eq!(e.id, "AAMkADNVxRAAA=");
        assert_eq!(e.title, "Plan shopping list");
        assert_eq!(e.description, None);
        assert_eq!(e.location.as_deref(), Some("Carpool location"));
        assert_eq!(e.start, 1_481_315_400_000); // 2016-12-09T20:30:00Z
        assert_eq!(e.end - e.start, 90 * 60_000);
        assert_eq!(e.time_zone, None, "a Windows name is not an IANA zone");
        assert_eq!(e.show_as, ShowAs::Busy);
        assert!(!e.all_day);
    }

    #[test]
    fn the_last_page_carries_the_delta_link_and_removals() {
        // Step 3's answer of the docs: the round ends with a deltaLink.
        let r = page(json!({
            "@odata.deltaLink": "https://graph.microsoft.com/v1.0/me/calendarView/delta?$deltatoken=R0usmci39OQxqJrxK4",
            "value": [
                {"@removed": {"reason": "deleted"}, "id": "AAMkADVxTAAA="},
                {"id": "cancelled", "isCancelled": true, "subject": "Off",
                 "start": {"dateTime": "2026-11-26T10:00:00.0000000", "timeZone": "UTC"},
                 "end": {"dateTime": "2026-11-26T11:00:00.0000000", "timeZone": "UTC"}},
                {"id": "master", "type": "seriesMaster", "subject": "Weekly",
                 "start": {"dateTime": "2026-11-26T10:00:00.0000000", "timeZone": "UTC"},
                 "end": {"dateTime": "2026-11-26T11:00:00.0000000", "timeZone": "UTC"}}
            ]
        }));
        assert!(!r.page.more);
        assert!(r.page.next_cursor.unwrap().contains("$deltatoken="));
        assert_eq!(r.page.removed, vec!["AAMkADVxTAAA=", "cancelled"]);
        assert!(r.page.events.is_empty());
    }

    #[test]
    fn all_day_events_are_dates() {
        let r = page(json!({"value": [{
            "id": "allday", "subject": "Wedding day", "isAllDay": true, "showAs": "oof",
            "start": {"dateTime": "2026-11-26T00:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-11-28T00:00:00.0000000", "timeZone": "UTC"},
            "originalStartTimeZone": "Europe/Lisbon"
        }]}));
        let e = &r.page.events[0];
        assert!(e.all_day);
        assert_eq!(e.start, 1_795_651_200_000); // 2026-11-26T00:00:00Z
        assert_eq!(e.end - e.start, 2 * 86_400_000);
        assert_eq!(e.time_zone.as_deref(), Some("Europe/Lisbon"));
        assert_eq!(e.show_as, ShowAs::OutOfOffice);
    }

    #[test]
    fn teams_meetings_attendees_and_other_zones() {
        let r = page(json!({"value": [{
            "id": "teams", "subject": "Venue call", "bodyPreview": "Walkthrough",
            "showAs": "tentative", "type": "occurrence", "seriesMasterId": "master",
            "isOnlineMeeting": true, "onlineMeetingProvider": "teamsForBusiness",
            "onlineMeeting": {"joinUrl": "https://teams.microsoft.com/l/meetup-join/19%3ameeting"},
            "attendees": [
                {"type": "required", "emailAddress": {"name": "Ana", "address": "ana@example.com"}},
                {"type": "optional", "emailAddress": {"name": "No address"}},
                {"type": "resource"}
            ],
            "start": {"dateTime": "2026-07-01T10:00:00.0000000", "timeZone": "Europe/Lisbon"},
            "end": {"dateTime": "2026-07-01T11:00:00.0000000", "timeZone": "Pacific Standard Time"}
        }]}));
        let e = &r.page.events[0];
        assert_eq!(
            e.online_meeting_url.as_deref(),
            Some("https://teams.microsoft.com/l/meetup-join/19%3ameeting")
        );
        assert_eq!(e.attendees, vec!["ana@example.com"]);
        assert_eq!(e.description.as_deref(), Some("Walkthrough"));
        assert_eq!(e.show_as, ShowAs::Tentative);
        // Lisbon is UTC+1 in July: 09:00Z.
        assert_eq!(e.start, 1_782_896_400_000);
        assert_eq!(r.warnings.len(), 1, "the Windows zone is warned about");
    }

    #[test]
    fn show_as_covers_graphs_values() {
        assert_eq!(show_as(Some("free")), ShowAs::Free);
        assert_eq!(show_as(Some("workingElsewhere")), ShowAs::WorkingElsewhere);
        assert_eq!(show_as(Some("unknown")), ShowAs::Busy);
        assert_eq!(show_as(None), ShowAs::Busy);
    }

    #[test]
    fn unreadable_items_are_skipped_with_a_warning_and_bad_pages_refused() {
        let r = page(json!({"value": [
            {"id": "no-times", "subject": "?"},
            {"subject": "no id"},
            {"id": "bad", "start": {"dateTime": "soon", "timeZone": "UTC"},
             "end": {"dateTime": "later", "timeZone": "UTC"}}
        ]}));
        assert!(r.page.events.is_empty());
        assert_eq!(r.warnings.len(), 3);
        assert!(read_page(b"<html>").is_err());
        assert!(read_page(br#"{"value": [{"id": 5}]}"#).is_err());
    }

    #[test]
    fn cursors_must_be_graph_delta_urls_under_the_api_base() {
        let base = "https://graph.microsoft.com";
        assert!(is_delta_cursor(
            base,
            "https://graph.microsoft.com/v1.0/me/calendarView/delta?$deltatoken=abc"
        ));
        for bad in [
            "https://graph.microsoft.com.evil.example/v1.0/me/calendarView/delta?$deltatoken=abc",
            "https://evil.example/v1.0/me/calendarView/delta",
            "https://graph.microsoft.com/v1.0/me/messages",
            "https://graph.microsoft.com/v1.0/me/../users/delta",
            "https://graph.microsoft.com@evil.example/v1.0/me/calendarView/delta",
            "graph.microsoft.com/v1.0/me/calendarView/delta",
        ] {
            assert!(!is_delta_cursor(base, bad), "{bad}");
        }
    }

    #[test]
    fn the_full_sync_url_names_the_window() {
        assert_eq!(
            full_sync_url(
                "https://graph.microsoft.com",
                1_795_687_200_000,
                1_795_773_600_000
            ),
            "https://graph.microsoft.com/v1.0/me/calendarView/delta?startDateTime=2026-11-26T10%3A00%3A00.000Z&endDateTime=2026-11-27T10%3A00%3A00.000Z"
        );
    }
}
