//! RFC 5545 iCalendar files.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use chrono_tz::Tz;
use icalendar::parser::{Component, Property, read_calendar, unfold};

use super::recurrence::{Series, expand};
use super::{CalendarFileError, Moment, Occurrence, Reading, Warning, Window};
use crate::model::{CalendarEvent, Transparency};

/// For each line of the unfolded text, the line of the original it began on (1-based).
fn logical_line_origins(text: &str) -> Vec<usize> {
    text.split('\n')
        .enumerate()
        .filter(|(_, line)| !line.starts_with([' ', '\t']))
        .map(|(i, _)| i + 1)
        .collect()
}

/// Why a content line does not have the shape `NAME[;PARAM=VALUE...]:VALUE`, if it does not.
/// Checked before parsing so that the error names the very line (the parser
/// backtracks to the start of the enclosing component).
fn shape_error(line: &str) -> Option<&'static str> {
    let name_end = line.find([';', ':']).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Some("a property name is letters, digits and '-'");
    }
    let mut quoted = false;
    for c in line[name_end..].chars() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => return None,
            _ => {}
        }
    }
    Some("a content line needs a ':' before its value")
}

/// The line number nom puts in its message ("at line N"), in unfolded lines.
fn error_line(message: &str) -> Option<usize> {
    let rest = &message[message.find("at line ")? + "at line ".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn param<'a>(prop: &'a Property<'_>, key: &str) -> Option<&'a str> {
    prop.params
        .iter()
        .find(|p| p.key.as_str().eq_ignore_ascii_case(key))
        .and_then(|p| p.val.as_ref())
        .map(|v| v.as_str().trim_matches('"'))
}

fn text(prop: &Property<'_>) -> String {
    prop.val.clone().unescape_text().as_str().to_string()
}

/// Zones a file defines for itself: `VTIMEZONE`s whose TZID is not an IANA name
/// but which say which IANA zone they are (`X-LIC-LOCATION`, written by many exporters).
fn file_zones(components: &[Component<'_>]) -> HashMap<String, Tz> {
    components
        .iter()
        .filter(|c| c.name.as_str().eq_ignore_ascii_case("VTIMEZONE"))
        .filter_map(|c| {
            let id = c.find_prop("TZID")?.val.as_str().to_string();
            let location = c
                .find_prop("X-LIC-LOCATION")?
                .val
                .as_str()
                .parse::<Tz>()
                .ok()?;
            Some((id, location))
        })
        .collect()
}

struct Context<'a> {
    zones: &'a HashMap<String, Tz>,
}

impl Context<'_> {
    fn zone(&self, tzid: &str) -> Result<Tz, String> {
        tzid.parse::<Tz>()
            .ok()
            .or_else(|| self.zones.get(tzid).copied())
            .ok_or_else(|| format!("time zone {tzid:?} is neither an IANA name nor defined with X-LIC-LOCATION in the file"))
    }

    /// One DATE or DATE-TIME value with the property's parameters.
    fn moment(&self, value: &str, tzid: Option<&str>, is_date: bool) -> Result<Moment, String> {
        let value = value.trim();
        if is_date || value.len() == 8 {
            return NaiveDate::parse_from_str(value, "%Y%m%d")
                .map(Moment::Date)
                .map_err(|e| format!("{value:?} is not a DATE: {e}"));
        }
        if let Some(utc) = value.strip_suffix('Z') {
            return NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S")
                .map(Moment::Utc)
                .map_err(|e| format!("{value:?} is not a DATE-TIME: {e}"));
        }
        let naive = NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S")
            .map_err(|e| format!("{value:?} is not a DATE-TIME: {e}"))?;
        match tzid {
            Some(id) => Ok(Moment::Zoned(naive, self.zone(id)?)),
            None => Ok(Moment::Floating(naive)),
        }
    }

    fn prop_moment(&self, prop: &Property<'_>) -> Result<Moment, String> {
        let is_date = param(prop, "VALUE").is_some_and(|v| v.eq_ignore_ascii_case("DATE"));
        self.moment(prop.val.as_str(), param(prop, "TZID"), is_date)
            .map_err(|e| format!("{}: {e}", prop.name.as_str()))
    }

    /// Every value of every `name` property (EXDATE and RDATE may list several).
    fn moments(
        &self,
        component: &Component<'_>,
        name: &str,
        floating: Tz,
    ) -> Result<Vec<chrono::DateTime<Tz>>, String> {
        let mut out = Vec::new();
        for prop in component
            .properties
            .iter()
            .filter(|p| p.name.as_str().eq_ignore_ascii_case(name))
        {
            let is_date = param(prop, "VALUE").is_some_and(|v| v.eq_ignore_ascii_case("DATE"));
            for value in prop.val.as_str().split(',') {
                let m = self
                    .moment(value, param(prop, "TZID"), is_date)
                    .map_err(|e| format!("{name}: {e}"))?;
                out.push(m.resolve(floating));
            }
        }
        Ok(out)
    }
}

/// An RFC 5545 `dur-value` (`P1D`, `PT1H30M`, `-P2W`).
pub(crate) fn duration(value: &str) -> Option<TimeDelta> {
    let (sign, rest) = match value.as_bytes().first()? {
        b'-' => (-1, &value[1..]),
        b'+' => (1, &value[1..]),
        _ => (1, value),
    };
    let rest = rest.strip_prefix('P')?;
    let mut total = TimeDelta::zero();
    let mut number = String::new();
    let mut in_time = false;
    let mut any = false;
    for c in rest.chars() {
        match c {
            '0'..='9' => number.push(c),
            'T' if number.is_empty() && !in_time => in_time = true,
            unit => {
                let n: i64 = number.parse().ok()?;
                number.clear();
                any = true;
                total += match (unit, in_time) {
                    ('W', false) => TimeDelta::weeks(n),
                    ('D', false) => TimeDelta::days(n),
                    ('H', true) => TimeDelta::hours(n),
                    ('M', true) => TimeDelta::minutes(n),
                    ('S', true) => TimeDelta::seconds(n),
                    _ => return None,
                };
            }
        }
    }
    (any && number.is_empty()).then_some(total * sign)
}

/// A VEVENT reduced to what the expansion needs.
struct Parsed {
    uid: String,
    line: usize,
    event: CalendarEvent,
    start: Moment,
    duration: TimeDelta,
    series: Series,
    recurrence_id: Option<i64>,
    cancelled: bool,
}

fn parse_event(
    ctx: &Context<'_>,
    c: &Component<'_>,
    line: usize,
    floating: Tz,
) -> Result<Parsed, String> {
    let dtstart = c.find_prop("DTSTART").ok_or("VEVENT without DTSTART")?;
    let start = ctx.prop_moment(dtstart)?;
    let start_at = start.resolve(floating);
    let duration = if let Some(end) = c.find_prop("DTEND") {
        let end = ctx.prop_moment(end)?.resolve(floating);
        end - start_at
    } else if let Some(d) = c.find_prop("DURATION") {
        duration(d.val.as_str())
            .ok_or_else(|| format!("DURATION: {:?} is not a duration", d.val.as_str()))?
    } else if start.is_date() {
        TimeDelta::days(1)
    } else {
        TimeDelta::zero()
    };
    if duration < TimeDelta::zero() {
        return Err("the event ends before it starts".into());
    }
    let uid = c
        .find_prop("UID")
        .map_or_else(|| format!("line-{line}"), |p| p.val.as_str().to_string());
    let recurrence_id = match c.find_prop("RECURRENCE-ID") {
        Some(p) => Some(ctx.prop_moment(p)?.resolve(floating).timestamp_millis()),
        None => None,
    };
    let get = |name: &str| c.find_prop(name).map(text).filter(|s| !s.is_empty());
    let attendees = c
        .properties
        .iter()
        .filter(|p| p.name.as_str().eq_ignore_ascii_case("ATTENDEE"))
        .map(|p| {
            let v = p.val.as_str();
            v.strip_prefix("mailto:")
                .or_else(|| v.strip_prefix("MAILTO:"))
                .unwrap_or(v)
                .to_string()
        })
        .collect();
    let meeting = [
        "X-GOOGLE-CONFERENCE",
        "X-MICROSOFT-SKYPETEAMSMEETINGURL",
        "URL",
    ]
    .iter()
    .find_map(|name| get(name));
    let zone = start.zone(floating);
    let event = CalendarEvent {
        id: uid.clone(),
        title: get("SUMMARY").unwrap_or_default(),
        description: get("DESCRIPTION"),
        location: get("LOCATION"),
        attendees,
        start: 0,
        end: 0,
        time_zone: matches!(start, Moment::Zoned(..)).then(|| zone.name().to_string()),
        all_day: start.is_date(),
        transparency: if c
            .find_prop("TRANSP")
            .is_some_and(|p| p.val.as_str().eq_ignore_ascii_case("TRANSPARENT"))
        {
            Transparency::Transparent
        } else {
            Transparency::Opaque
        },
        online_meeting_url: meeting,
    };
    let rules = c
        .properties
        .iter()
        .filter(|p| p.name.as_str().eq_ignore_ascii_case("RRULE"))
        .map(|p| p.val.as_str().to_string())
        .collect();
    Ok(Parsed {
        uid,
        line,
        event,
        start,
        duration,
        series: Series {
            start: start_at,
            duration,
            rules,
            rdates: ctx.moments(c, "RDATE", floating)?,
            exdates: ctx.moments(c, "EXDATE", floating)?,
        },
        recurrence_id,
        cancelled: c
            .find_prop("STATUS")
            .is_some_and(|p| p.val.as_str().eq_ignore_ascii_case("CANCELLED")),
    })
}

pub(super) fn read(
    text: &str,
    label: &str,
    window: Window,
    floating: Tz,
) -> Result<Reading, CalendarFileError> {
    let normalized = text.trim_start_matches('\u{feff}').replace("\r\n", "\n");
    let unfolded = unfold(&normalized);
    let origins = logical_line_origins(&normalized);
    let original_line = |logical: usize| {
        origins
            .get(logical.saturating_sub(1))
            .copied()
            .unwrap_or(logical)
    };
    let first = unfolded
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if !first.trim().eq_ignore_ascii_case("BEGIN:VCALENDAR") {
        return Err(CalendarFileError::Syntax {
            path: label.to_string(),
            line: 1,
            message: "not an iCalendar file: it must begin with BEGIN:VCALENDAR".into(),
        });
    }
    for (i, line) in unfolded.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(problem) = shape_error(line) {
            return Err(CalendarFileError::Syntax {
                path: label.to_string(),
                line: original_line(i + 1),
                message: format!("{line:?}: {problem}"),
            });
        }
    }
    let calendar = read_calendar(&unfolded).map_err(|message| {
        let logical = error_line(&message).unwrap_or(1);
        let content = unfolded.lines().nth(logical - 1).unwrap_or("").trim();
        CalendarFileError::Syntax {
            path: label.to_string(),
            line: original_line(logical),
            message: format!("not a valid iCalendar content line: {content:?} (expected NAME[;PARAM=VALUE]:VALUE)"),
        }
    })?;
    let zones = file_zones(&calendar.components);
    let ctx = Context { zones: &zones };
    let vevent_lines: Vec<usize> = unfolded
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim().eq_ignore_ascii_case("BEGIN:VEVENT"))
        .map(|(i, _)| original_line(i + 1))
        .collect();

    let mut reading = Reading::default();
    let mut parsed = Vec::new();
    let events = calendar
        .components
        .iter()
        .filter(|c| c.name.as_str().eq_ignore_ascii_case("VEVENT"));
    for (i, component) in events.enumerate() {
        let line = vevent_lines.get(i).copied().unwrap_or(0);
        match parse_event(&ctx, component, line, floating) {
            Ok(p) => parsed.push(p),
            Err(message) => reading.warnings.push(Warning {
                line: Some(line),
                message: format!("event skipped: {message}"),
            }),
        }
    }

    // RECURRENCE-ID overrides replace (or, when cancelled, remove) one occurrence of their series.
    let overridden: HashMap<(String, i64), ()> = parsed
        .iter()
        .filter_map(|p| Some(((p.uid.clone(), p.recurrence_id?), ())))
        .collect();
    for p in &parsed {
        if p.cancelled {
            // A cancelled series shows nothing; a cancelled override removes its occurrence.
            continue;
        }
        let (starts, limited) = match expand(&p.series, window) {
            Ok(r) => r,
            Err(message) => {
                reading.warnings.push(Warning {
                    line: Some(p.line),
                    message: format!("event skipped: {message}"),
                });
                continue;
            }
        };
        if limited {
            reading.warnings.push(Warning {
                line: Some(p.line),
                message: "the series has more occurrences in the window than are listed".into(),
            });
        }
        for start in starts {
            let ms = start.timestamp_millis();
            if p.recurrence_id.is_none() && overridden.contains_key(&(p.uid.clone(), ms)) {
                continue;
            }
            let mut event = p.event.clone();
            event.start = ms;
            event.end = (start + p.duration).timestamp_millis();
            if p.recurrence_id.is_none() && !p.series.rules.is_empty() {
                event.id = format!("{}@{ms}", p.uid);
            }
            reading.occurrences.push(Occurrence {
                event,
                zone: p.start.zone(floating),
                line: Some(p.line),
            });
        }
    }
    Ok(reading)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("PT1H30M"), Some(TimeDelta::minutes(90)));
        assert_eq!(duration("P1D"), Some(TimeDelta::days(1)));
        assert_eq!(duration("-P2W"), Some(TimeDelta::weeks(-2)));
        assert_eq!(duration("P1DT2H"), Some(TimeDelta::hours(26)));
        for bad in ["", "P", "PT", "1H", "PT1D", "P1H", "PT1H2"] {
            assert_eq!(duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn folded_lines_map_back_to_the_original() {
        let text = "A\nB\n  continued\nC\n\tmore\nD";
        assert_eq!(logical_line_origins(text), [1, 2, 4, 6]);
        assert_eq!(error_line("0: at line 3:\nfoo"), Some(3));
    }

    #[test]
    fn content_line_shapes() {
        assert_eq!(shape_error("SUMMARY:Ceremony"), None);
        assert_eq!(
            shape_error("DTSTART;TZID=Europe/London:20260620T140000"),
            None
        );
        assert_eq!(
            shape_error("ATTENDEE;CN=\"Doe: John\":mailto:j@example.com"),
            None
        );
        assert!(shape_error("SUMMARY;broken").is_some());
        assert!(shape_error("ATTENDEE;CN=\"a:b\"").is_some());
        assert!(shape_error(":value").is_some());
        assert!(shape_error("BAD NAME:x").is_some());
    }
}
