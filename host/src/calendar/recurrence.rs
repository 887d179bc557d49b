//! Expanding a recurring event into its occurrences in a window, with `rrule`.

use chrono::{DateTime, TimeDelta};
use chrono_tz::Tz;
use rrule::{RRule, RRuleSet, Unvalidated};

use super::{Window, local};

/// Most occurrences listed for one series; more is reported as a warning.
const MAX_OCCURRENCES: u16 = 10_000;

pub(crate) struct Series {
    pub start: DateTime<Tz>,
    pub duration: TimeDelta,
    /// RRULE values (without the `RRULE:` name).
    pub rules: Vec<String>,
    pub rdates: Vec<DateTime<Tz>>,
    pub exdates: Vec<DateTime<Tz>>,
}

/// An UNTIL written as a date or a floating time is in the series' zone; `rrule`
/// wants it in UTC when the start has a zone, so it is rewritten as such.
fn until_in_utc(rule: &str, zone: Tz) -> String {
    rule.split(';')
        .map(|part| {
            let Some(value) = part.strip_prefix("UNTIL=").filter(|v| !v.ends_with('Z')) else {
                return part.to_string();
            };
            let naive = match value.len() {
                8 => chrono::NaiveDate::parse_from_str(value, "%Y%m%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(23, 59, 59)),
                15 => chrono::NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S").ok(),
                _ => None,
            };
            match naive {
                Some(n) => format!("UNTIL={}", local(zone, n).to_utc().format("%Y%m%dT%H%M%SZ")),
                None => part.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The starts of the series' occurrences that overlap `window`, and whether the
/// list was cut at [`MAX_OCCURRENCES`].
pub(crate) fn expand(series: &Series, window: Window) -> Result<(Vec<DateTime<Tz>>, bool), String> {
    let overlaps = |start: &DateTime<Tz>| {
        let end = *start + series.duration.max(TimeDelta::zero());
        start.to_utc() < window.to
            && (end.to_utc() > window.from
                || (series.duration.is_zero() && start.to_utc() >= window.from))
    };
    if series.rules.is_empty() && series.rdates.is_empty() {
        return Ok((
            Some(series.start).filter(overlaps).into_iter().collect(),
            false,
        ));
    }
    let zone = series.start.timezone();
    let rtz = rrule::Tz::Tz(zone);
    let start = series.start.with_timezone(&rtz);
    let mut set = RRuleSet::new(start);
    for rule in &series.rules {
        let parsed: RRule<Unvalidated> = until_in_utc(rule, zone)
            .parse()
            .map_err(|e| format!("RRULE {rule:?}: {e}"))?;
        set = set.rrule(
            parsed
                .validate(start)
                .map_err(|e| format!("RRULE {rule:?}: {e}"))?,
        );
    }
    for d in &series.rdates {
        set = set.rdate(d.with_timezone(&rtz));
    }
    for d in &series.exdates {
        set = set.exdate(d.with_timezone(&rtz));
    }
    let from = (window.from - series.duration.max(TimeDelta::zero())).with_timezone(&rtz);
    let to = window.to.with_timezone(&rtz);
    let result = set.after(from).before(to).all(MAX_OCCURRENCES);
    let starts = result
        .dates
        .into_iter()
        .map(|d| d.with_timezone(&zone))
        .filter(overlaps)
        .collect();
    Ok((starts, result.limited))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDateTime, Utc};

    fn london(s: &str) -> DateTime<Tz> {
        local(
            "Europe/London".parse().unwrap(),
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap(),
        )
    }

    fn window(from: &str, to: &str) -> Window {
        Window {
            from: london(from).with_timezone(&Utc),
            to: london(to).with_timezone(&Utc),
        }
    }

    #[test]
    fn weekly_series_keeps_wall_time_across_dst_and_honours_exdate_and_until() {
        let series = Series {
            start: london("2026-03-16 14:00"),
            duration: TimeDelta::hours(1),
            rules: vec!["FREQ=WEEKLY;UNTIL=20260413".into()],
            rdates: vec![],
            exdates: vec![london("2026-03-30 14:00")],
        };
        let (starts, limited) =
            expand(&series, window("2026-01-01 00:00", "2027-01-01 00:00")).unwrap();
        assert!(!limited);
        let shown: Vec<String> = starts
            .iter()
            .map(|d| d.format("%m-%d %H:%M %Z").to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "03-16 14:00 GMT",
                "03-23 14:00 GMT",
                "04-06 14:00 BST",
                "04-13 14:00 BST"
            ]
        );
    }

    #[test]
    fn the_window_cuts_the_series_and_keeps_an_occurrence_already_running() {
        let series = Series {
            start: london("2026-06-01 09:00"),
            duration: TimeDelta::hours(2),
            rules: vec!["FREQ=DAILY;COUNT=10".into()],
            rdates: vec![],
            exdates: vec![],
        };
        let (starts, _) = expand(&series, window("2026-06-03 10:00", "2026-06-05 09:00")).unwrap();
        let shown: Vec<String> = starts
            .iter()
            .map(|d| d.format("%d %H:%M").to_string())
            .collect();
        assert_eq!(shown, ["03 09:00", "04 09:00"]);
        let bad = Series {
            rules: vec!["FREQ=SOMETIMES".into()],
            ..series
        };
        assert!(
            expand(&bad, window("2026-06-03 10:00", "2026-06-05 09:00"))
                .unwrap_err()
                .contains("RRULE")
        );
    }
}
