//! Shared by the benchmarks: the same event for the sandboxed and the native side.

use presence_host::model::{CalendarEvent, Transparency};

/// A realistic calendar event whose title is `title`.
pub fn event(id: usize, title: &str) -> CalendarEvent {
    CalendarEvent {
        id: format!("evt-{id}"),
        title: title.to_string(),
        description: Some("Bring the floor plan and the timeline".into()),
        location: Some("Old Barn, Ashford".into()),
        attendees: vec!["planner@example.com".into(), "couple@example.com".into()],
        start: 1_781_960_400_000 + id as i64 * 60_000,
        end: 1_781_964_000_000 + id as i64 * 60_000,
        time_zone: Some("Europe/London".into()),
        all_day: false,
        transparency: Transparency::Opaque,
        online_meeting_url: None,
    }
}

/// The same event as the natively compiled plugins take it.
pub fn native(e: &CalendarEvent) -> presence_sdk::classifier::CalendarEvent {
    presence_sdk::classifier::CalendarEvent {
        id: e.id.clone(),
        title: e.title.clone(),
        description: e.description.clone(),
        location: e.location.clone(),
        attendees: e.attendees.clone(),
        start: e.start,
        end: e.end,
        time_zone: e.time_zone.clone(),
        all_day: e.all_day,
        transparency: presence_sdk::classifier::Transparency::Opaque,
        online_meeting_url: e.online_meeting_url.clone(),
    }
}
