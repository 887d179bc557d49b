//! Optimal timing: within the time a notification may wait, deliver it in the
//! hour of the week in which this recipient has acknowledged fastest.
//!
//! The history is the delivery log: for each acknowledged notification of the
//! last [`HISTORY_DAYS`], when it was delivered and how long the recipient took
//! to acknowledge it. Deliveries are grouped by hour of the week in the
//! recipient's own time zone (Tuesday 10:00-11:00); an hour with at least
//! [`MIN_SAMPLES`] deliveries scores its median acknowledgement time. The
//! notification waits for the best-scoring such hour that starts before its
//! latest delivery time, but only when that hour is clearly better than now:
//! at least [`MIN_GAIN_PERCENT`] and a minute faster. Now scores its own
//! hour's median, or, when its hour has too little history, the recipient's
//! overall median (an hour we know nothing of is expected to be like any
//! other; it is never waited for). With too little history (fewer than
//! [`MIN_SAMPLES`] acknowledgements) it goes at once: the earliest free moment.
//!
//! An hour counts only if the router would deliver then (`deliverable`: the
//! recipient's business and quiet hours, the channels' send windows, with the
//! presence known now), so it never waits for an hour it would refuse.
//!
//! This runs only after the presence rules said "deliver now", for classes
//! whose policy sets `optimal_timing` (by default `general`): it can delay a
//! notification within its window, never past it.

use std::collections::HashMap;

use chrono::{Datelike, TimeZone, Timelike};

use crate::model::Instant;

/// How far back the history reaches, in days.
pub const HISTORY_DAYS: i64 = 90;
/// The fewest acknowledgements an hour (or the whole history) needs to count.
pub const MIN_SAMPLES: usize = 3;
/// How much faster a later hour must be to be worth waiting for.
pub const MIN_GAIN_PERCENT: i64 = 20;
const MIN_GAIN_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// One acknowledged delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub delivered_at: Instant,
    pub acked_at: Instant,
}

/// Wait until `at`, for `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    pub at: Instant,
    pub reason: String,
}

/// Hour of the week, Monday 00:00 first, in `tz`.
fn hour_of_week(tz: &chrono_tz::Tz, t: Instant) -> Option<u32> {
    let local = tz.timestamp_millis_opt(t).single()?;
    Some(local.weekday().num_days_from_monday() * 24 + local.hour())
}

fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[(values.len() - 1) / 2])
}

/// The start of the local hour after the one `t` is in.
fn next_hour(tz: &chrono_tz::Tz, t: Instant) -> Option<Instant> {
    let local = tz.timestamp_millis_opt(t).single()?;
    let into_hour = i64::from(local.minute()) * 60_000
        + i64::from(local.second()) * 1000
        + i64::from(local.timestamp_subsec_millis());
    Some(t - into_hour + HOUR_MS)
}

fn describe(tz: &chrono_tz::Tz, t: Instant) -> String {
    tz.timestamp_millis_opt(t)
        .single()
        .map(|l| l.format("%a %H:00").to_string())
        .unwrap_or_default()
}

fn minutes(ms: i64) -> String {
    let m = (ms + 30_000) / 60_000;
    if m < 1 {
        "under a minute".to_string()
    } else {
        format!("{m} min")
    }
}

/// When to deliver instead of now, if waiting is worth it; None to deliver now.
pub fn best_moment(
    history: &[Ack],
    time_zone: Option<&str>,
    now: Instant,
    deliver_by: Instant,
    deliverable: impl Fn(Instant) -> bool,
) -> Option<Suggestion> {
    let usable: Vec<&Ack> = history
        .iter()
        .filter(|a| a.acked_at >= a.delivered_at)
        .collect();
    if usable.len() < MIN_SAMPLES {
        return None;
    }
    let tz: chrono_tz::Tz = time_zone
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC);
    let mut buckets: HashMap<u32, Vec<i64>> = HashMap::new();
    let mut all = Vec::with_capacity(usable.len());
    for a in &usable {
        let latency = a.acked_at - a.delivered_at;
        all.push(latency);
        if let Some(h) = hour_of_week(&tz, a.delivered_at) {
            buckets.entry(h).or_default().push(latency);
        }
    }
    let overall = median(&mut all)?;
    let scores: HashMap<u32, (i64, usize)> = buckets
        .into_iter()
        .filter(|(_, v)| v.len() >= MIN_SAMPLES)
        .filter_map(|(h, mut v)| Some((h, (median(&mut v)?, v.len()))))
        .collect();
    let known = |t: Instant| {
        hour_of_week(&tz, t)
            .and_then(|h| scores.get(&h))
            .map(|(m, _)| *m)
    };
    let current = known(now).unwrap_or(overall);
    // The hours that start inside the window, earliest first, a week at most;
    // only an hour with its own history is worth waiting for.
    let mut best = (now, current);
    let mut slot = now;
    for _ in 0..7 * 24 {
        match next_hour(&tz, slot) {
            Some(next) if next < deliver_by => slot = next,
            _ => break,
        }
        if let Some(s) = known(slot)
            && s < best.1
            && deliverable(slot)
        {
            best = (slot, s);
        }
    }
    let (at, fastest) = best;
    let gain = current - fastest;
    if at == now || gain < MIN_GAIN_MS || gain * 100 < current * MIN_GAIN_PERCENT {
        return None;
    }
    let samples = hour_of_week(&tz, at)
        .and_then(|h| scores.get(&h))
        .map_or(0, |(_, n)| *n);
    Some(Suggestion {
        at,
        reason: format!(
            "optimal timing: acknowledged fastest around {} (median {} over {samples} notes) against {} now",
            describe(&tz, at),
            minutes(fastest),
            minutes(current),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Instant {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    const MIN: i64 = 60_000;

    /// `count` acknowledgements of deliveries at `at` plus whole weeks back,
    /// each taking `latency`.
    fn weekly(at: &str, count: i64, latency: i64) -> Vec<Ack> {
        (1..=count)
            .map(|w| {
                let delivered_at = utc(at) - w * 7 * 24 * HOUR_MS;
                Ack {
                    delivered_at,
                    acked_at: delivered_at + latency,
                }
            })
            .collect()
    }

    #[test]
    fn without_history_it_goes_at_once() {
        let now = utc("2026-06-10T18:10:00Z");
        assert_eq!(
            best_moment(&[], None, now, now + 20 * HOUR_MS, |_| true),
            None
        );
        let two = weekly("2026-06-11T09:05:00Z", 2, MIN);
        assert_eq!(
            best_moment(&two, None, now, now + 20 * HOUR_MS, |_| true),
            None
        );
    }

    #[test]
    fn waits_for_the_hour_acknowledged_fastest_inside_the_window() {
        // Wednesdays at 18:xx this person takes an hour; Thursdays at 09:xx a minute.
        let mut history = weekly("2026-06-10T18:20:00Z", 4, 60 * MIN);
        history.extend(weekly("2026-06-11T09:15:00Z", 4, MIN));
        let now = utc("2026-06-10T18:10:00Z"); // Wednesday
        let s = best_moment(&history, None, now, utc("2026-06-11T12:00:00Z"), |_| true).unwrap();
        assert_eq!(s.at, utc("2026-06-11T09:00:00Z"));
        assert!(s.reason.contains("Thu 09:00"), "{}", s.reason);
        assert!(
            s.reason.contains("median 1 min over 4 notes"),
            "{}",
            s.reason
        );
        // A window that ends before Thursday 09:00 holds no hour known to be
        // better (the hours between are unknown, never waited for): go now.
        assert_eq!(
            best_moment(&history, None, now, utc("2026-06-11T08:59:00Z"), |_| true),
            None
        );
    }

    #[test]
    fn the_current_hour_being_best_or_nearly_so_goes_at_once() {
        let mut history = weekly("2026-06-10T18:20:00Z", 4, 10 * MIN);
        history.extend(weekly("2026-06-11T09:15:00Z", 4, 9 * MIN));
        let now = utc("2026-06-10T18:10:00Z");
        let by = utc("2026-06-11T12:00:00Z");
        // 9 against 10 minutes: under 20% better, not worth the wait.
        assert_eq!(best_moment(&history, None, now, by, |_| true), None);
        let fast_now = weekly("2026-06-10T18:20:00Z", 4, MIN);
        assert_eq!(best_moment(&fast_now, None, now, by, |_| true), None);
    }

    #[test]
    fn an_hour_without_history_counts_as_the_persons_usual() {
        // Known: Thursdays 09:xx take 2 min; Fridays 15:xx take 90 min. Now is
        // Wednesday 18:xx, of which nothing is known: the usual is the overall
        // median (2 min, the lower middle of 2, 2, 2, 90, 90, 90): nothing beats it.
        let mut history = weekly("2026-06-11T09:15:00Z", 3, 2 * MIN);
        history.extend(weekly("2026-06-12T15:15:00Z", 3, 90 * MIN));
        let now = utc("2026-06-10T18:10:00Z");
        assert_eq!(
            best_moment(&history, None, now, utc("2026-06-13T00:00:00Z"), |_| true),
            None
        );
        // With a slow usual (mostly 90 min), Thursday's 2 min is worth waiting for.
        history.extend(weekly("2026-06-12T16:15:00Z", 3, 90 * MIN));
        let s = best_moment(&history, None, now, utc("2026-06-13T00:00:00Z"), |_| true).unwrap();
        assert_eq!(s.at, utc("2026-06-11T09:00:00Z"));
    }

    #[test]
    fn hours_are_the_recipients_own_across_zones_and_dst() {
        // Deliveries at 09:15 Lisbon on summer Thursdays (08:15Z, WEST) were
        // acknowledged in a minute, evenings at 19:xx Lisbon in an hour.
        let mut history = weekly("2026-06-11T08:15:00Z", 4, MIN);
        history.extend(weekly("2026-06-10T18:20:00Z", 4, 60 * MIN));
        // In winter (WET, UTC+0) Thursday 09:00 Lisbon is 09:00Z, not 08:00Z.
        let now = utc("2026-11-25T19:10:00Z"); // Wednesday, 19:10 Lisbon
        let by = utc("2026-11-26T12:00:00Z");
        let s = best_moment(&history, Some("Europe/Lisbon"), now, by, |_| true).unwrap();
        assert_eq!(s.at, utc("2026-11-26T09:00:00Z"));
        // Read in UTC, the same history names other hours: Thursday 08:xx is
        // the fast one, and 18:xx the slow one.
        let s = best_moment(&history, None, utc("2026-11-25T18:10:00Z"), by, |_| true).unwrap();
        assert_eq!(s.at, utc("2026-11-26T08:00:00Z"));
    }

    #[test]
    fn half_hour_zones_wait_for_their_own_hour_boundaries() {
        // India is UTC+5:30: local hours start at :30 UTC.
        let mut history = weekly("2026-06-11T04:00:00Z", 3, MIN); // Thu 09:30 IST
        history.extend(weekly("2026-06-10T13:00:00Z", 3, 60 * MIN)); // Wed 18:30 IST
        let now = utc("2026-06-10T13:10:00Z");
        let s = best_moment(
            &history,
            Some("Asia/Kolkata"),
            now,
            utc("2026-06-11T10:00:00Z"),
            |_| true,
        )
        .unwrap();
        assert_eq!(s.at, utc("2026-06-11T03:30:00Z"), "Thursday 09:00 IST");
    }

    #[test]
    fn an_hour_the_router_would_refuse_is_never_waited_for() {
        let mut history = weekly("2026-06-10T18:20:00Z", 4, 60 * MIN);
        history.extend(weekly("2026-06-10T21:15:00Z", 4, MIN)); // fast at 21:xx
        history.extend(weekly("2026-06-11T09:15:00Z", 4, 5 * MIN)); // good at 09:xx
        let now = utc("2026-06-10T18:10:00Z");
        let by = utc("2026-06-11T12:00:00Z");
        let s = best_moment(&history, None, now, by, |_| true).unwrap();
        assert_eq!(s.at, utc("2026-06-10T21:00:00Z"));
        // 21:00 is outside business hours (09:00-18:00): the next best it would take.
        let business = |t: Instant| {
            let hour = (t / HOUR_MS) % 24;
            (9..18).contains(&hour)
        };
        let s = best_moment(&history, None, now, by, business).unwrap();
        assert_eq!(s.at, utc("2026-06-11T09:00:00Z"));
    }
}
