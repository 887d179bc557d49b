//! Weekly windows in a person's own time zone: their quiet hours (nothing but
//! an emergency reaches them) and each channel's send window (when that
//! channel may be used at all: no SMS before 08:00, Slack only on workdays).
//!
//! A window is written like working hours, `{"mon": ["22:00", "07:00"]}`, with
//! `"daily"` for every day not listed by name. A window whose end is not after
//! its start runs past midnight into the next day, so quiet hours from 22:00
//! to 07:00 are one window per evening, and one that ends when it starts
//! (`["00:00", "00:00"]`) lasts the whole 24 hours. Times are wall-clock: across a DST
//! change the window keeps its local hours, and a time the change skips is
//! read as the first moment after it.

use std::collections::BTreeMap;

use chrono::{Datelike, Days, NaiveDate, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};

use crate::model::Instant;
use crate::presence::working_hours::at;

/// As written: per day name (`mon` ... `sun`, or `daily`), `[start, end]`.
pub type WindowsSpec = BTreeMap<String, (String, String)>;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parsed windows, Monday first; a day without one has no window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weekly([Option<(NaiveTime, NaiveTime)>; 7]);

impl Weekly {
    /// Checks and parses `spec`: known day names and `HH:MM` times (an end at
    /// or before the start runs past midnight).
    pub fn parse(spec: &WindowsSpec) -> Result<Self, String> {
        let mut days = [None; 7];
        let mut daily = None;
        for (name, (start, end)) in spec {
            let time = |t: &str| {
                NaiveTime::parse_from_str(t, "%H:%M")
                    .map_err(|_| format!("{name}: {t:?} is not a time as HH:MM"))
            };
            let window = (time(start)?, time(end)?);
            if name == "daily" {
                daily = Some(window);
            } else {
                let index = DAY_NAMES.iter().position(|d| d == name).ok_or_else(|| {
                    format!("{name:?} is not a day (mon, tue, wed, thu, fri, sat, sun, daily)")
                })?;
                days[index] = Some(window);
            }
        }
        for day in &mut days {
            if day.is_none() {
                *day = daily;
            }
        }
        Ok(Self(days))
    }

    /// The window that starts on `date`, as instants.
    fn on(&self, tz: &chrono_tz::Tz, date: NaiveDate) -> Option<(Instant, Instant)> {
        let (start, end) = self.0[date.weekday().num_days_from_monday() as usize]?;
        let end_date = if end <= start {
            date.checked_add_days(Days::new(1))?
        } else {
            date
        };
        Some((at(tz, date, start), at(tz, end_date, end)))
    }

    /// When the window `now` is in ends; None when `now` is in none.
    pub fn open_until(&self, time_zone: Option<&str>, now: Instant) -> Option<Instant> {
        let tz = zone(time_zone);
        let today = tz.timestamp_millis_opt(now).single()?.date_naive();
        // Yesterday's window may run past midnight into today.
        [today.pred_opt()?, today]
            .into_iter()
            .filter_map(|d| self.on(&tz, d))
            .filter(|(s, e)| *s <= now && now < *e)
            .map(|(_, e)| e)
            .max()
    }

    /// The first moment at or after `now` inside a window; None when there
    /// are no windows at all.
    pub fn next_open(&self, time_zone: Option<&str>, now: Instant) -> Option<Instant> {
        if self.open_until(time_zone, now).is_some() {
            return Some(now);
        }
        let tz = zone(time_zone);
        let today = tz.timestamp_millis_opt(now).single()?.date_naive();
        (0..=7u64)
            .filter_map(|offset| self.on(&tz, today.checked_add_days(Days::new(offset))?))
            .map(|(s, _)| s)
            .find(|s| *s > now)
    }
}

fn zone(time_zone: Option<&str>) -> chrono_tz::Tz {
    time_zone
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Instant {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    fn weekly(entries: &[(&str, &str, &str)]) -> Weekly {
        let spec: WindowsSpec = entries
            .iter()
            .map(|(d, s, e)| (d.to_string(), (s.to_string(), e.to_string())))
            .collect();
        Weekly::parse(&spec).unwrap()
    }

    #[test]
    fn quiet_hours_run_past_midnight_in_the_persons_zone() {
        let nights = weekly(&[("daily", "22:00", "07:00")]);
        // 2026-06-10 23:30 in Lisbon (WEST, UTC+1) is 22:30Z: quiet until 06:00Z.
        assert_eq!(
            nights.open_until(Some("Europe/Lisbon"), utc("2026-06-10T22:30:00Z")),
            Some(utc("2026-06-11T06:00:00Z"))
        );
        // 06:30 Lisbon the next morning: still in the evening's window.
        assert_eq!(
            nights.open_until(Some("Europe/Lisbon"), utc("2026-06-11T05:30:00Z")),
            Some(utc("2026-06-11T06:00:00Z"))
        );
        // 22:30Z is 18:30 in New York: not quiet yet; quiet from 22:00 EDT (02:00Z).
        assert_eq!(
            nights.open_until(Some("America/New_York"), utc("2026-06-10T22:30:00Z")),
            None
        );
        assert_eq!(
            nights.next_open(Some("America/New_York"), utc("2026-06-10T22:30:00Z")),
            Some(utc("2026-06-11T02:00:00Z"))
        );
    }

    #[test]
    fn windows_keep_their_local_hours_across_a_dst_weekend() {
        // New York falls back on Sunday 2026-11-01: 22:00 EDT on Saturday is
        // 02:00Z, 07:00 EST on Sunday is 12:00Z: a ten-hour night.
        let nights = weekly(&[("daily", "22:00", "07:00")]);
        let saturday_night = utc("2026-11-01T03:00:00Z");
        assert_eq!(
            nights.open_until(Some("America/New_York"), saturday_night),
            Some(utc("2026-11-01T12:00:00Z"))
        );
        // Lisbon springs forward on 2026-03-29 at 01:00 WET: a window from
        // 01:30 starts at the first moment after the gap, 02:00 WEST (01:00Z).
        let early = weekly(&[("sun", "01:30", "03:00")]);
        assert_eq!(
            early.next_open(Some("Europe/Lisbon"), utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn named_days_win_over_daily_and_other_days_have_none() {
        let sms = weekly(&[("daily", "08:00", "20:00"), ("sun", "10:00", "12:00")]);
        // Sunday 2026-06-14 09:00Z (UTC zone): closed until 10:00.
        assert_eq!(sms.open_until(None, utc("2026-06-14T09:00:00Z")), None);
        assert_eq!(
            sms.next_open(None, utc("2026-06-14T09:00:00Z")),
            Some(utc("2026-06-14T10:00:00Z"))
        );
        let weekdays = weekly(&[("mon", "09:00", "17:00"), ("fri", "09:00", "17:00")]);
        // Friday evening: next open on Monday.
        assert_eq!(
            weekdays.next_open(None, utc("2026-06-12T18:00:00Z")),
            Some(utc("2026-06-15T09:00:00Z"))
        );
        assert_eq!(
            Weekly::parse(&WindowsSpec::new())
                .unwrap()
                .next_open(None, 0),
            None
        );
    }

    #[test]
    fn bad_windows_are_refused_with_the_reason() {
        let bad = |d: &str, s: &str, e: &str| {
            Weekly::parse(&WindowsSpec::from([(
                d.to_string(),
                (s.to_string(), e.to_string()),
            )]))
            .unwrap_err()
        };
        assert!(bad("someday", "08:00", "09:00").contains("not a day"));
        assert!(bad("mon", "8", "09:00").contains("HH:MM"));
    }

    #[test]
    fn a_window_that_ends_when_it_starts_lasts_all_day() {
        let always = weekly(&[("daily", "00:00", "00:00")]);
        // Wednesday 2026-06-10 23:59:30 UTC: inside, until Thursday midnight.
        assert_eq!(
            always.open_until(None, utc("2026-06-10T23:59:30Z")),
            Some(utc("2026-06-11T00:00:00Z"))
        );
        assert!(
            always
                .open_until(None, utc("2026-06-11T00:00:00Z"))
                .is_some()
        );
    }
}
