//! Calendars: [`sync`] keeps calendar providers' connections watched and
//! synced into calendar signals; the rest reads calendar files for dry runs: RFC 5545 iCalendar (`.ics`), Google Calendar
//! event JSON and Microsoft Graph event JSON, read into the event occurrences
//! that fall in a window, recurrences expanded.
//!
//! Parsing is the `icalendar` crate's (unfolding, escaped text, parameters; its
//! errors carry line numbers, which we map back to the file's own lines);
//! recurrence expansion is the `rrule` crate's (RRULE, EXDATE, RDATE); time zones
//! are `chrono-tz`'s IANA database. What is ours is the mapping from those to
//! events, and RECURRENCE-ID overrides.

mod ics;
mod json;
mod recurrence;
pub mod sync;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::model::CalendarEvent;

/// The span of time whose occurrences are wanted: `[from, to)`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// One occurrence of an event, with the zone it is shown in.
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub event: CalendarEvent,
    /// The event's own zone (or the `floating` zone for floating and all-day times).
    pub zone: Tz,
    /// The line of the file the event starts on, when the format has lines.
    pub line: Option<usize>,
}

/// A problem with one event that did not stop the rest of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CalendarFileError {
    #[error("{path}: line {line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// What was read from a file.
#[derive(Debug, Default)]
pub struct Reading {
    pub occurrences: Vec<Occurrence>,
    pub warnings: Vec<Warning>,
}

/// Reads `path` (iCalendar or JSON, told apart by content) into the occurrences in `window`.
/// Floating and all-day times are taken in `floating`.
pub fn read_file(
    path: &std::path::Path,
    window: Window,
    floating: Tz,
) -> Result<Reading, CalendarFileError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CalendarFileError::Read {
        path: label.clone(),
        source,
    })?;
    read_text(&text, &label, window, floating)
}

pub fn read_text(
    text: &str,
    label: &str,
    window: Window,
    floating: Tz,
) -> Result<Reading, CalendarFileError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let mut reading = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        json::read(trimmed, label, window, floating)?
    } else {
        ics::read(text, label, window, floating)?
    };
    reading
        .occurrences
        .sort_by(|a, b| (a.event.start, &a.event.title).cmp(&(b.event.start, &b.event.title)));
    Ok(reading)
}

/// A moment as calendars write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Moment {
    Date(NaiveDate),
    Utc(NaiveDateTime),
    Zoned(NaiveDateTime, Tz),
    Floating(NaiveDateTime),
}

impl Moment {
    /// The instant, in the zone the moment belongs to (`floating` for dates and floating times).
    pub(crate) fn resolve(self, floating: Tz) -> DateTime<Tz> {
        match self {
            Moment::Date(d) => local(floating, d.and_hms_opt(0, 0, 0).expect("midnight exists")),
            Moment::Utc(t) => Utc.from_utc_datetime(&t).with_timezone(&Tz::UTC),
            Moment::Zoned(t, tz) => local(tz, t),
            Moment::Floating(t) => local(floating, t),
        }
    }

    pub(crate) fn is_date(self) -> bool {
        matches!(self, Moment::Date(_))
    }

    pub(crate) fn zone(self, floating: Tz) -> Tz {
        match self {
            Moment::Zoned(_, tz) => tz,
            Moment::Utc(_) => Tz::UTC,
            _ => floating,
        }
    }
}

/// A wall-clock time in `tz`. In a fall-back overlap the earlier instant is taken;
/// a time in a spring-forward gap is read with the offset before the gap
/// (RFC 5545 3.3.5), i.e. moved forward by the gap.
pub(crate) fn local(tz: Tz, t: NaiveDateTime) -> DateTime<Tz> {
    use chrono::Offset;
    if let Some(dt) = tz.from_local_datetime(&t).earliest() {
        return dt;
    }
    // In a gap: the offset in force a few hours before it.
    let before = t
        .checked_sub_signed(chrono::TimeDelta::hours(3))
        .and_then(|earlier| tz.from_local_datetime(&earlier).earliest())
        .map_or(0, |dt| dt.offset().fix().local_minus_utc());
    let utc = t
        .checked_sub_signed(chrono::TimeDelta::seconds(i64::from(before)))
        .unwrap_or(t);
    Utc.from_utc_datetime(&utc).with_timezone(&tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_in_dst_gaps_and_overlaps() {
        let london: Tz = "Europe/London".parse().unwrap();
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        // 01:30 on 2026-03-29 does not exist in London: it is read as 02:30 BST (01:30 UTC).
        assert_eq!(
            local(london, t("2026-03-29 01:30"))
                .to_utc()
                .format("%H:%M")
                .to_string(),
            "01:30"
        );
        // 01:30 on 2026-10-25 happens twice: the first (BST, 00:30 UTC) is taken.
        assert_eq!(
            local(london, t("2026-10-25 01:30"))
                .to_utc()
                .format("%H:%M")
                .to_string(),
            "00:30"
        );
    }
}
