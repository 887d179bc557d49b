//! Reading an events.list page (developers.google.com/calendar/api/v3/reference/events/list)
//! into a calendar page: Google's events resource
//! (.../v3/reference/events) into the host's `event`.
//!
//! - `status: "cancelled"` is a removal: "Deleted events are only guaranteed to
//!   have the id field populated", and with `singleEvents=true` a cancelled
//!   occurrence of a recurring series comes the same way, under its own id
//!   (`{recurringEventId}_{originalStart}`), with `recurringEventId` and
//!   `originalStartTime`.
//! - `start`/`end` are `{"dateTime": RFC 3339 with an offset, "timeZone"}` or,
//!   for an all-day event, `{"date": "yyyy-mm-dd"}` with `end` exclusive. An
//!   all-day event becomes midnight UTC of both dates (the calendar contract:
//!   the host places the days in the person's zone); a timed one keeps its
//!   instants and its `start.timeZone`, or the calendar's own zone (the page's
//!   `timeZone`) when it names none.
//! - How the time shows: `eventType` first (`outOfOffice`, `focusTime`,
//!   `workingLocation`), then the person's own answer when they are an
//!   attendee (`declined` frees the time, `tentative` is tentative), then
//!   `transparency` (`transparent` is free, `opaque`, the default, busy).
//! - The video link: a conference's `video` entry point (`conferenceData`,
//!   Google Meet or a conferencing add-on), else the legacy `hangoutLink`.
//!
//! An item that is neither cancelled nor has a readable start and end is
//! skipped (and named in the page's `skipped`): one odd event must not stop a
//! calendar from syncing.

use chrono::{DateTime, NaiveDate};
use presence_sdk::calendar::{CalendarPage, Event, ShowAs};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::cursor::Cursor;

/// One events.list page as far as this plugin reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    #[serde(default)]
    items: Vec<Item>,
    next_page_token: Option<String>,
    next_sync_token: Option<String>,
    /// The calendar's own time zone.
    time_zone: Option<String>,
}

/// An item as listed: a readable event, or something this plugin cannot read.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Item {
    Event(Box<GoogleEvent>),
    Unreadable(IgnoredAny),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GoogleEvent {
    id: String,
    status: Option<String>,
    summary: Option<String>,
    description: Option<String>,
    location: Option<String>,
    #[serde(default)]
    attendees: Vec<Attendee>,
    start: Option<EventTime>,
    end: Option<EventTime>,
    transparency: Option<String>,
    event_type: Option<String>,
    hangout_link: Option<String>,
    conference_data: Option<ConferenceData>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attendee {
    email: Option<String>,
    #[serde(rename = "self", default)]
    is_self: bool,
    response_status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventTime {
    date: Option<String>,
    date_time: Option<String>,
    time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConferenceData {
    #[serde(default)]
    entry_points: Vec<EntryPoint>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryPoint {
    entry_point_type: Option<String>,
    uri: Option<String>,
}

/// A page read: what changed, what went, and where Google continues.
#[derive(Debug, Default, PartialEq)]
pub struct PageContent {
    pub events: Vec<Event>,
    pub removed: Vec<String>,
    /// Why items were left out (for the log): one line each.
    pub skipped: Vec<String>,
    pub next_page_token: Option<String>,
    pub next_sync_token: Option<String>,
}

impl PageContent {
    /// The calendar page for this content, read at `cursor`: more pages while
    /// Google gave a page token, and the cursor to continue from.
    pub fn into_page(self, cursor: &Cursor, reset: bool) -> CalendarPage {
        let next = cursor.after(self.next_page_token, self.next_sync_token);
        CalendarPage {
            reset,
            events: self.events,
            removed: self.removed,
            more: next.as_ref().is_some_and(|c| c.page_token.is_some()),
            next_cursor: next.map(|c| c.encode()),
        }
    }
}

/// Reads an events.list answer.
pub fn read_page(body: &[u8]) -> Result<PageContent, String> {
    let page: EventsPage =
        serde_json::from_slice(body).map_err(|e| format!("not an events list ({e})"))?;
    let mut content = PageContent {
        next_page_token: page.next_page_token.filter(|t| !t.is_empty()),
        next_sync_token: page.next_sync_token.filter(|t| !t.is_empty()),
        ..PageContent::default()
    };
    for item in page.items {
        let Item::Event(event) = item else {
            content
                .skipped
                .push("an item that is not an events resource".into());
            continue;
        };
        if event.status.as_deref() == Some("cancelled") {
            content.removed.push(event.id);
            continue;
        }
        match to_event(*event, page.time_zone.as_deref()) {
            Ok(e) => content.events.push(e),
            Err(why) => content.skipped.push(why),
        }
    }
    Ok(content)
}

/// A live (not cancelled) events resource as the host's event.
fn to_event(e: GoogleEvent, calendar_zone: Option<&str>) -> Result<Event, String> {
    let id = e.id;
    let (Some(start), Some(end)) = (e.start, e.end) else {
        return Err(format!("event {id}: no start or end"));
    };
    let all_day = start.date_time.is_none();
    let (start_ms, end_ms, time_zone) = if all_day {
        (
            date_ms(start.date.as_deref())
                .ok_or_else(|| format!("event {id}: unreadable start"))?,
            date_ms(end.date.as_deref()).ok_or_else(|| format!("event {id}: unreadable end"))?,
            None,
        )
    } else {
        (
            instant_ms(start.date_time.as_deref())
                .ok_or_else(|| format!("event {id}: unreadable start"))?,
            instant_ms(end.date_time.as_deref())
                .ok_or_else(|| format!("event {id}: unreadable end"))?,
            start.time_zone.or(calendar_zone.map(str::to_string)),
        )
    };
    if end_ms < start_ms {
        return Err(format!("event {id}: ends before it starts"));
    }
    let own_answer = e
        .attendees
        .iter()
        .find(|a| a.is_self)
        .and_then(|a| a.response_status.as_deref());
    let show_as = show_as(
        e.event_type.as_deref(),
        own_answer,
        e.transparency.as_deref(),
    );
    let online_meeting_url = e
        .conference_data
        .and_then(|c| {
            c.entry_points
                .into_iter()
                .find(|p| p.entry_point_type.as_deref() == Some("video"))
                .and_then(|p| p.uri)
        })
        .or(e.hangout_link)
        .filter(|u| !u.is_empty());
    Ok(Event {
        id,
        title: e.summary.unwrap_or_default(),
        description: e.description.filter(|d| !d.is_empty()),
        location: e.location.filter(|l| !l.is_empty()),
        attendees: e.attendees.into_iter().filter_map(|a| a.email).collect(),
        start: start_ms,
        end: end_ms,
        time_zone,
        all_day,
        show_as,
        online_meeting_url,
    })
}

/// How an event shows its owner's time (see the module doc for the order).
fn show_as(
    event_type: Option<&str>,
    own_answer: Option<&str>,
    transparency: Option<&str>,
) -> ShowAs {
    match event_type {
        Some("outOfOffice") => return ShowAs::OutOfOffice,
        Some("focusTime") => return ShowAs::Focus,
        Some("workingLocation") => return ShowAs::WorkingElsewhere,
        _ => {}
    }
    match own_answer {
        Some("declined") => return ShowAs::Free,
        Some("tentative") => return ShowAs::Tentative,
        _ => {}
    }
    if transparency == Some("transparent") {
        ShowAs::Free
    } else {
        ShowAs::Busy
    }
}

/// An RFC 3339 date-time as milliseconds since the epoch.
fn instant_ms(s: Option<&str>) -> Option<i64> {
    DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A `yyyy-mm-dd` date as milliseconds at midnight UTC.
fn date_ms(s: Option<&str>) -> Option<i64> {
    let mut parts = s?.splitn(3, '-');
    let mut number = |len: usize| {
        parts
            .next()
            .filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
    };
    let (year, month, day) = (number(4)?, number(2)?, number(2)?);
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(items: serde_json::Value) -> PageContent {
        let body = json!({
            "kind": "calendar#events",
            "summary": "my_calendar@gmail.com",
            "timeZone": "Europe/London",
            "items": items,
            "nextSyncToken": "CPDAlvWDx70CEPDAlvWDx70CGAU="
        });
        read_page(body.to_string().as_bytes()).unwrap()
    }

    fn one(item: serde_json::Value) -> Event {
        let mut p = page(json!([item]));
        assert_eq!(p.skipped, Vec::<String>::new());
        assert_eq!(p.events.len(), 1);
        p.events.remove(0)
    }

    // The events resource's own example shapes: a timed event with a time zone,
    // attendees and a Meet conference (reference/events, "conferenceData").
    #[test]
    fn a_timed_meeting_keeps_its_instants_zone_attendees_and_meet_link() {
        let e = one(json!({
            "kind": "calendar#event",
            "id": "7cbh8rpc10lrc0ckih9tafss99",
            "status": "confirmed",
            "summary": "Tasting with the Smiths",
            "description": "Menu C",
            "location": "Old Barn, Kent",
            "start": {"dateTime": "2026-11-28T15:00:00+01:00", "timeZone": "Europe/Paris"},
            "end": {"dateTime": "2026-11-28T16:30:00+01:00", "timeZone": "Europe/Paris"},
            "attendees": [
                {"email": "planner@example.com", "self": true, "responseStatus": "accepted"},
                {"email": "smith@example.com", "responseStatus": "needsAction"},
                {"displayName": "no address"}
            ],
            "hangoutLink": "https://meet.google.com/aaa-bbbb-ccc",
            "conferenceData": {
                "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet"},
                "conferenceId": "aaa-bbbb-ccc",
                "entryPoints": [
                    {"entryPointType": "phone", "uri": "tel:+44-20-0000-0000", "pin": "123"},
                    {"entryPointType": "video", "uri": "https://meet.google.com/aaa-bbbb-ccc", "label": "meet.google.com/aaa-bbbb-ccc"}
                ]
            }
        }));
        assert_eq!(e.id, "7cbh8rpc10lrc0ckih9tafss99");
        assert_eq!(e.title, "Tasting with the Smiths");
        assert_eq!(e.description.as_deref(), Some("Menu C"));
        assert_eq!(e.location.as_deref(), Some("Old Barn, Kent"));
        assert_eq!(e.start, 1_795_874_400_000); // 2026-11-28T14:00:00Z
        assert_eq!(e.end - e.start, 90 * 60_000);
        assert_eq!(e.time_zone.as_deref(), Some("Europe/Paris"));
        assert!(!e.all_day);
        assert_eq!(e.show_as, ShowAs::Busy);
        assert_eq!(e.attendees, ["planner@example.com", "smith@example.com"]);
        assert_eq!(
            e.online_meeting_url.as_deref(),
            Some("https://meet.google.com/aaa-bbbb-ccc")
        );
    }

    #[test]
    fn all_day_events_are_midnight_utc_with_the_end_exclusive() {
        let e = one(json!({
            "id": "wedding", "summary": "Wedding weekend",
            "start": {"date": "2026-03-28"}, "end": {"date": "2026-03-30"},
            "transparency": "transparent"
        }));
        assert!(e.all_day);
        assert_eq!(e.start, 1_774_656_000_000); // 2026-03-28T00:00:00Z
        assert_eq!(e.end, 1_774_828_800_000); // 2026-03-30T00:00:00Z
        assert_eq!(e.time_zone, None);
        assert_eq!(e.show_as, ShowAs::Free);
        assert_eq!(e.online_meeting_url, None);
    }

    #[test]
    fn a_timed_event_without_its_own_zone_takes_the_calendars() {
        let e = one(json!({
            "id": "a", "start": {"dateTime": "2026-01-05T09:00:00Z"},
            "end": {"dateTime": "2026-01-05T09:30:00Z"}
        }));
        assert_eq!(e.time_zone.as_deref(), Some("Europe/London"));
        assert_eq!(e.title, "");
    }

    #[test]
    fn event_types_then_answers_then_transparency_decide_how_time_shows() {
        let shown = |extra: serde_json::Value| {
            let mut item = json!({
                "id": "x",
                "start": {"dateTime": "2026-01-05T09:00:00Z"},
                "end": {"dateTime": "2026-01-05T10:00:00Z"}
            });
            for (k, v) in extra.as_object().unwrap() {
                item[k] = v.clone();
            }
            one(item).show_as
        };
        assert_eq!(shown(json!({})), ShowAs::Busy);
        assert_eq!(shown(json!({"transparency": "opaque"})), ShowAs::Busy);
        assert_eq!(shown(json!({"transparency": "transparent"})), ShowAs::Free);
        assert_eq!(
            shown(json!({"eventType": "outOfOffice", "transparency": "transparent"})),
            ShowAs::OutOfOffice
        );
        assert_eq!(shown(json!({"eventType": "focusTime"})), ShowAs::Focus);
        assert_eq!(
            shown(json!({"eventType": "workingLocation", "transparency": "transparent"})),
            ShowAs::WorkingElsewhere
        );
        assert_eq!(shown(json!({"eventType": "default"})), ShowAs::Busy);
        let answered = |answer: &str| {
            json!({"attendees": [
                {"email": "other@example.com", "responseStatus": "accepted"},
                {"email": "me@example.com", "self": true, "responseStatus": answer}
            ]})
        };
        assert_eq!(shown(answered("declined")), ShowAs::Free);
        assert_eq!(shown(answered("tentative")), ShowAs::Tentative);
        assert_eq!(shown(answered("accepted")), ShowAs::Busy);
        assert_eq!(shown(answered("needsAction")), ShowAs::Busy);
    }

    // "Deleted events are only guaranteed to have the id field populated";
    // cancelled exceptions of a recurring series carry id, recurringEventId and
    // originalStartTime (reference/events, "status").
    #[test]
    fn cancelled_events_and_occurrences_are_removals() {
        let p = page(json!([
            {"kind": "calendar#event", "etag": "\"1\"", "id": "deleted1", "status": "cancelled"},
            {"id": "series_20261128T150000Z", "status": "cancelled",
             "recurringEventId": "series",
             "originalStartTime": {"dateTime": "2026-11-28T15:00:00Z"}},
            {"id": "series_20261205T150000Z", "status": "confirmed",
             "recurringEventId": "series",
             "originalStartTime": {"dateTime": "2026-12-05T15:00:00Z"},
             "start": {"dateTime": "2026-12-05T17:00:00Z", "timeZone": "UTC"},
             "end": {"dateTime": "2026-12-05T18:00:00Z", "timeZone": "UTC"}}
        ]));
        assert_eq!(p.removed, ["deleted1", "series_20261128T150000Z"]);
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].id, "series_20261205T150000Z");
        assert_eq!(
            p.next_sync_token.as_deref(),
            Some("CPDAlvWDx70CEPDAlvWDx70CGAU=")
        );
        assert_eq!(p.next_page_token, None);
    }

    #[test]
    fn odd_items_are_skipped_not_fatal() {
        let p = page(json!([
            {"id": "no-times", "summary": "?"},
            {"id": "bad-start", "start": {"dateTime": "yesterday"}, "end": {"dateTime": "2026-01-05T10:00:00Z"}},
            {"id": "bad-date", "start": {"date": "2026-02-30"}, "end": {"date": "2026-03-01"}},
            {"id": "backwards", "start": {"dateTime": "2026-01-05T10:00:00Z"}, "end": {"dateTime": "2026-01-05T09:00:00Z"}},
            {"summary": "no id"},
            {"id": 42},
            "not an object",
            {"id": "fine", "start": {"date": "2026-01-05"}, "end": {"date": "2026-01-06"}}
        ]));
        assert_eq!(p.events.len(), 1, "{:?}", p.skipped);
        assert_eq!(p.events[0].id, "fine");
        assert_eq!(p.skipped.len(), 7, "{:?}", p.skipped);
        assert!(p.skipped[0].contains("no-times"));
        assert!(read_page(b"[]").is_err());
        assert!(read_page(b"<html>").is_err());
        let empty = read_page(br#"{"kind": "calendar#events", "nextPageToken": "p2"}"#).unwrap();
        assert_eq!(empty.next_page_token.as_deref(), Some("p2"));
        assert!(empty.events.is_empty() && empty.removed.is_empty());
    }

    #[test]
    fn a_conference_add_on_link_counts_and_hangout_link_is_the_fallback() {
        let zoom = one(json!({
            "id": "z", "start": {"date": "2026-01-05"}, "end": {"date": "2026-01-06"},
            "conferenceData": {"conferenceSolution": {"key": {"type": "addOn"}, "name": "Zoom Meeting"},
                "entryPoints": [{"entryPointType": "video", "uri": "https://zoom.us/j/123"}]}
        }));
        assert_eq!(
            zoom.online_meeting_url.as_deref(),
            Some("https://zoom.us/j/123")
        );
        let legacy = one(json!({
            "id": "h", "start": {"date": "2026-01-05"}, "end": {"date": "2026-01-06"},
            "hangoutLink": "https://meet.google.com/xyz-abcd-efg"
        }));
        assert_eq!(
            legacy.online_meeting_url.as_deref(),
            Some("https://meet.google.com/xyz-abcd-efg")
        );
    }

    // The sync guide: "nextPageToken" while a result has more pages, and
    // "nextSyncToken" on its last page only.
    #[test]
    fn pages_continue_at_the_page_token_and_end_at_the_sync_token() {
        let first =
            read_page(br#"{"items": [{"id": "a", "status": "cancelled"}], "nextPageToken": "p2"}"#)
                .unwrap()
                .into_page(&Cursor::full(), true);
        assert!(first.more && first.reset);
        assert_eq!(first.removed, ["a"]);
        let at = Cursor::decode(first.next_cursor.as_deref().unwrap()).unwrap();
        assert_eq!(at.page_token.as_deref(), Some("p2"));
        assert_eq!(at.sync_token, None);
        let last = read_page(br#"{"items": [], "nextSyncToken": "s1"}"#)
            .unwrap()
            .into_page(&at, false);
        assert!(!last.more && !last.reset);
        let next = Cursor::decode(last.next_cursor.as_deref().unwrap()).unwrap();
        assert_eq!(next.sync_token.as_deref(), Some("s1"));
        assert_eq!(next.page_token, None);
        let neither = read_page(br#"{"items": []}"#)
            .unwrap()
            .into_page(&next, false);
        assert!(!neither.more);
        assert_eq!(neither.next_cursor, None);
    }

    #[test]
    fn dates_are_strict() {
        assert_eq!(date_ms(Some("1970-01-02")), Some(86_400_000));
        for bad in [
            "2026-1-05",
            "2026-01-5",
            "20260105",
            "2026-13-01",
            "x026-01-01",
            "",
        ] {
            assert_eq!(date_ms(Some(bad)), None, "{bad}");
        }
    }
}
