//! Working hours: the lowest-ranked presence source. Inside a person's hours
//! they are available until the hours end; outside, away until they start
//! again. Hours are wall-clock times in the person's own time zone, so a
//! vendor in Lisbon and a planner in New York each keep theirs across DST.
//! Days off (holidays, a vendor's own wedding) are dates in the person's zone
//! on which the hours do not apply.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, Days, NaiveDate, NaiveTime, TimeZone, Weekday};
use serde::{Deserialize, Serialize};

use crate::model::{Availability, Instant, KeyedSignal, PresenceSignal, SignalSource};

/// Per weekday (`mon` ... `sun`), the start and end of the working day as
/// `"HH:MM"`; a day not listed is a day off.
pub type WorkingHours = BTreeMap<String, (String, String)>;

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

/// The text shown outside working hours.
pub const OUTSIDE_TEXT: &str = "Outside working hours";

/// The most days off a person may list.
pub const MAX_DAYS_OFF: usize = 400;

/// Parsed hours: one optional (start, end) per weekday, Monday first, and the
/// dates off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    days: [Option<(NaiveTime, NaiveTime)>; 7],
    days_off: BTreeSet<NaiveDate>,
}

impl Schedule {
    /// Checks and parses `hours`: known day names, `HH:MM` times, start before end.
    pub fn parse(hours: &WorkingHours) -> Result<Self, String> {
        let mut days = [None; 7];
        for (name, (start, end)) in hours {
            let index = DAYS.iter().position(|(d, _)| d == name).ok_or_else(|| {
                format!("{name:?} is not a day (mon, tue, wed, thu, fri, sat, sun)")
            })?;
            let time = |t: &str| {
                NaiveTime::parse_from_str(t, "%H:%M")
                    .map_err(|_| format!("{name}: {t:?} is not a time as HH:MM"))
            };
            let (s, e) = (time(start)?, time(end)?);
            if s >= e {
                return Err(format!("{name}: {start} is not before {end}"));
            }
            days[index] = Some((s, e));
        }
        Ok(Self {
            days,
            days_off: BTreeSet::new(),
        })
    }

    /// These hours, not applying on `dates` (`YYYY-MM-DD` in the person's zone).
    pub fn with_days_off(mut self, dates: &[NaiveDate]) -> Result<Self, String> {
        if dates.len() > MAX_DAYS_OFF {
            return Err(format!("at most {MAX_DAYS_OFF} days off"));
        }
        self.days_off = dates.iter().copied().collect();
        Ok(self)
    }

    fn day(&self, date: NaiveDate) -> Option<(NaiveTime, NaiveTime)> {
        if self.days_off.contains(&date) {
            return None;
        }
        self.days[date.weekday().num_days_from_monday() as usize]
    }

    /// How many days ahead the next working day can be: a week, plus every
    /// day off (they may all be in a row).
    fn horizon(&self) -> u64 {
        8 + self.days_off.len() as u64
    }
}

/// The instant a wall-clock time on `date` in `tz` names; in a DST gap, the
/// first valid moment after it; in a repeated hour, the first occurrence.
pub(crate) fn at<Tz: TimeZone>(tz: &Tz, date: NaiveDate, time: NaiveTime) -> Instant {
    let mut local = date.and_time(time);
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return t.timestamp_millis();
        }
        local += chrono::Duration::minutes(30);
    }
    tz.from_utc_datetime(&date.and_time(time))
        .timestamp_millis()
}

/// The working-hours signal for `user` at `now`: available until today's
/// hours end, or away until the next working day starts. None when the person
/// works no day at all.
pub fn signal(
    user: &str,
    schedule: &Schedule,
    time_zone: Option<&str>,
    now: Instant,
) -> Option<KeyedSignal> {
    let tz: chrono_tz::Tz = time_zone
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC);
    let today = tz.timestamp_millis_opt(now).single()?.date_naive();
    if let Some((start, end)) = schedule.day(today) {
        let (s, e) = (at(&tz, today, start), at(&tz, today, end));
        if s <= now && now < e {
            return Some(keyed(user, Availability::Available, None, Some(e)));
        }
    }
    // Outside: away until the next start, today's if it is still ahead.
    for offset in 0..=schedule.horizon() {
        let date = today.checked_add_days(Days::new(offset))?;
        if let Some((start, _)) = schedule.day(date) {
            let s = at(&tz, date, start);
            if s > now {
                return Some(keyed(user, Availability::Away, Some(OUTSIDE_TEXT), Some(s)));
            }
        }
    }
    None
}

/// Whether `now` is inside the person's working hours.
pub fn inside(schedule: &Schedule, time_zone: Option<&str>, now: Instant) -> bool {
    signal("", schedule, time_zone, now)
        .is_some_and(|s| s.signal.availability == Availability::Available)
}

/// When the person's next working day starts, strictly after `after`; None
/// when they work no day at all.
pub fn next_start(schedule: &Schedule, time_zone: Option<&str>, after: Instant) -> Option<Instant> {
    let tz: chrono_tz::Tz = time_zone
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC);
    let today = tz.timestamp_millis_opt(after).single()?.date_naive();
    (0..=schedule.horizon()).find_map(|offset| {
        let date = today.checked_add_days(Days::new(offset))?;
        let (start, _) = schedule.day(date)?;
        let s = at(&tz, date, start);
        (s > after).then_some(s)
    })
}

fn keyed(
    user: &str,
    availability: Availability,
    text: Option<&str>,
    expires: Option<Instant>,
) -> KeyedSignal {
    KeyedSignal {
        key: "working-hours".into(),
        origin: "working-hours".into(),
        signal: PresenceSignal {
            user: user.to_string(),
            source: SignalSource::WorkingHours,
            availability,
            status_text: text.map(str::to_string),
            status_emoji: text.map(|_| ":crescent_moon:".to_string()),
            starts: None,
            expires,
            clears: false,
            category: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nine_to_six_weekdays() -> Schedule {
        let hours: WorkingHours = ["mon", "tue", "wed", "thu", "fri"]
            .iter()
            .map(|d| (d.to_string(), ("09:00".to_string(), "18:00".to_string())))
            .collect();
        Schedule::parse(&hours).unwrap()
    }

    fn utc(s: &str) -> Instant {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn inside_hours_is_available_until_they_end_in_the_persons_zone() {
        // Wednesday 2026-06-10 10:00 in New York (EDT, UTC-4) is 14:00Z.
        let s = signal(
            "u",
            &nine_to_six_weekdays(),
            Some("America/New_York"),
            utc("2026-06-10T14:00:00Z"),
        )
        .unwrap();
        assert_eq!(s.signal.availability, Availability::Available);
        assert_eq!(s.signal.expires, Some(utc("2026-06-10T22:00:00Z")));
        // The same moment in Lisbon (WEST, UTC+1) is 15:00, also inside; ends 17:00Z.
        let s = signal(
            "u",
            &nine_to_six_weekdays(),
            Some("Europe/Lisbon"),
            utc("2026-06-10T14:00:00Z"),
        )
        .unwrap();
        assert_eq!(s.signal.expires, Some(utc("2026-06-10T17:00:00Z")));
    }

    #[test]
    fn outside_hours_is_away_until_the_next_working_day_skipping_days_off() {
        // Friday 2026-06-12 19:00 Lisbon: away until Monday 09:00 Lisbon (08:00Z).
        let s = signal(
            "u",
            &nine_to_six_weekdays(),
            Some("Europe/Lisbon"),
            utc("2026-06-12T18:00:00Z"),
        )
        .unwrap();
        assert_eq!(s.signal.availability, Availability::Away);
        assert_eq!(s.signal.status_text.as_deref(), Some(OUTSIDE_TEXT));
        assert_eq!(s.signal.expires, Some(utc("2026-06-15T08:00:00Z")));
        // Early morning: away until today's start.
        let s = signal(
            "u",
            &nine_to_six_weekdays(),
            Some("Europe/Lisbon"),
            utc("2026-06-10T05:00:00Z"),
        )
        .unwrap();
        assert_eq!(s.signal.expires, Some(utc("2026-06-10T08:00:00Z")));
    }

    #[test]
    fn days_off_are_skipped_however_many_in_a_row() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // Two weeks off from Monday 2026-12-21 (every date listed, weekends too).
        let off: Vec<NaiveDate> = (0..14)
            .map(|i| d("2026-12-21").checked_add_days(Days::new(i)).unwrap())
            .collect();
        let s = nine_to_six_weekdays().with_days_off(&off).unwrap();
        // Friday the 18th, 19:00 in Lisbon (WET): back on Monday 2027-01-04.
        let friday = utc("2026-12-18T19:00:00Z");
        assert_eq!(
            next_start(&s, Some("Europe/Lisbon"), friday),
            Some(utc("2027-01-04T09:00:00Z"))
        );
        // Wednesday the 23rd at 10:00 is a day off: not inside the hours.
        assert!(!inside(
            &s,
            Some("Europe/Lisbon"),
            utc("2026-12-23T10:00:00Z")
        ));
        assert!(inside(
            &nine_to_six_weekdays(),
            Some("Europe/Lisbon"),
            utc("2026-12-23T10:00:00Z")
        ));
        let away = signal("u", &s, Some("Europe/Lisbon"), utc("2026-12-23T10:00:00Z")).unwrap();
        assert_eq!(away.signal.availability, Availability::Away);
        assert_eq!(away.signal.expires, Some(utc("2027-01-04T09:00:00Z")));
        let too_many = vec![d("2026-01-01"); MAX_DAYS_OFF + 1];
        assert!(nine_to_six_weekdays().with_days_off(&too_many).is_err());
    }

    #[test]
    fn hours_follow_the_wall_clock_across_a_dst_change() {
        // Lisbon springs forward on Sunday 2026-03-29: Friday 09:00 is 09:00Z
        // (WET), Monday 09:00 is 08:00Z (WEST).
        let s = signal(
            "u",
            &nine_to_six_weekdays(),
            Some("Europe/Lisbon"),
            utc("2026-03-27T19:00:00Z"),
        )
        .unwrap();
        assert_eq!(s.signal.expires, Some(utc("2026-03-30T08:00:00Z")));
    }

    #[test]
    fn bad_hours_are_refused_with_the_reason() {
        let bad = |day: &str, s: &str, e: &str| {
            Schedule::parse(&WorkingHours::from([(
                day.to_string(),
                (s.to_string(), e.to_string()),
            )]))
            .unwrap_err()
        };
        assert!(bad("funday", "09:00", "17:00").contains("not a day"));
        assert!(bad("mon", "9am", "17:00").contains("HH:MM"));
        assert!(bad("mon", "17:00", "09:00").contains("not before"));
        assert_eq!(
            signal(
                "u",
                &Schedule::parse(&WorkingHours::new()).unwrap(),
                None,
                0
            ),
            None
        );
    }
}
