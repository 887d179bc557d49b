//! Graph's times: `dateTimeTimeZone` read into instants, and instants written
//! as the ISO 8601 Graph takes (`expirationDateTime`, the delta window).
//!
//! A `dateTimeTimeZone` is `{"dateTime": "2026-11-26T10:00:00.0000000",
//! "timeZone": "UTC"}`: a local time with seven fractional digits and the
//! zone it is local to. The plugin asks for UTC (`Prefer:
//! outlook.timezone="UTC"`), so the zone is normally `UTC`; an IANA name is
//! honoured, and a Windows name ("Pacific Standard Time", which Outlook uses
//! when no preference applies) is read as UTC with a warning, since mapping
//! Windows zones needs CLDR's table, which the plugin does not carry.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Offset, SecondsFormat, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// How a `timeZone` was understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Utc,
    Iana(Tz),
    /// A name that is not UTC nor IANA (a Windows zone): read as UTC.
    Unknown,
}

/// The zone a `timeZone` (or `originalStartTimeZone`) names.
pub fn zone(name: &str) -> Zone {
    let name = name.trim();
    if name.is_empty()
        || name.eq_ignore_ascii_case("UTC")
        || name.eq_ignore_ascii_case("tzone://Microsoft/Utc")
        || name.eq_ignore_ascii_case("Etc/UTC")
    {
        return Zone::Utc;
    }
    match name.parse::<Tz>() {
        Ok(tz) => Zone::Iana(tz),
        Err(_) => Zone::Unknown,
    }
}

/// A `dateTime` without its zone: `2026-11-26T10:00:00.0000000` (any number of
/// fractional digits, or none).
pub fn local(date_time: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(date_time.trim(), "%Y-%m-%dT%H:%M:%S%.f").ok()
}

/// Milliseconds since the epoch of a local time in `zone`. A time that falls
/// in a daylight-saving gap is read with the offset in force just before it;
/// one that occurs twice, as its first occurrence.
pub fn instant(local: NaiveDateTime, zone: Zone) -> i64 {
    match zone {
        Zone::Utc | Zone::Unknown => local.and_utc().timestamp_millis(),
        Zone::Iana(tz) => match tz.from_local_datetime(&local).earliest() {
            Some(at) => at.timestamp_millis(),
            None => {
                // In a gap: the offset of a day before (no zone moves twice a day).
                let before = tz.offset_from_utc_datetime(&(local - TimeDelta::hours(24)));
                let seconds = i64::from(before.fix().local_minus_utc());
                (local - TimeDelta::seconds(seconds))
                    .and_utc()
                    .timestamp_millis()
            }
        },
    }
}

/// Midnight UTC of a date, in milliseconds (the calendar contract's all-day bounds).
pub fn midnight_utc(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc().timestamp_millis())
        .unwrap_or(0)
}

/// An instant as Graph writes them: `2026-11-26T10:00:00.000Z`.
pub fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An ISO 8601 instant with an offset (`subscriptionExpirationDateTime`,
/// `expirationDateTime` in Graph's answers: `2026-11-29T10:00:00.1234567+00:00`
/// or `...Z`), in milliseconds.
pub fn parse_iso(value: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(value.trim())
        .ok()
        .map(|d| d.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_fractional_digits_are_read() {
        let t = local("2026-11-26T10:00:00.0000000").unwrap();
        assert_eq!(instant(t, Zone::Utc), 1_795_687_200_000);
        let t = local("2026-11-26T10:00:00.1234567").unwrap();
        assert_eq!(instant(t, Zone::Utc), 1_795_687_200_123);
        assert!(local("2026-11-26T10:00:00").is_some());
        assert!(local("26/11/2026").is_none());
    }

    #[test]
    fn zones_are_utc_iana_or_unknown() {
        assert_eq!(zone("UTC"), Zone::Utc);
        assert_eq!(zone("tzone://Microsoft/Utc"), Zone::Utc);
        assert_eq!(zone("Europe/Lisbon"), Zone::Iana(chrono_tz::Europe::Lisbon));
        assert_eq!(zone("Pacific Standard Time"), Zone::Unknown);
        // 10:00 in Lisbon in November is 10:00 UTC; in New York, 15:00 UTC.
        let t = local("2026-11-26T10:00:00.0000000").unwrap();
        assert_eq!(
            instant(t, zone("America/New_York")),
            instant(t, Zone::Utc) + 5 * 3_600_000
        );
        assert_eq!(instant(t, Zone::Unknown), instant(t, Zone::Utc));
    }

    #[test]
    fn daylight_saving_gaps_and_overlaps_are_placed() {
        let london = zone("Europe/London");
        // 01:30 on 2026-03-29 does not exist in London (clocks go 01:00 -> 02:00).
        let gap = local("2026-03-29T01:30:00").unwrap();
        assert_eq!(
            instant(gap, london),
            local("2026-03-29T01:30:00")
                .unwrap()
                .and_utc()
                .timestamp_millis()
        );
        // 01:30 on 2026-10-25 happens twice: the first (BST, 00:30 UTC).
        let twice = local("2026-10-25T01:30:00").unwrap();
        assert_eq!(
            instant(twice, london),
            local("2026-10-25T00:30:00")
                .unwrap()
                .and_utc()
                .timestamp_millis()
        );
    }

    #[test]
    fn instants_round_trip_through_iso() {
        assert_eq!(iso(1_795_687_200_000), "2026-11-26T10:00:00.000Z");
        assert_eq!(
            parse_iso("2026-11-26T10:00:00.000Z"),
            Some(1_795_687_200_000)
        );
        assert_eq!(
            parse_iso("2026-11-26T10:00:00.1234567+00:00"),
            Some(1_795_687_200_123)
        );
        assert_eq!(parse_iso("tomorrow"), None);
    }
}
