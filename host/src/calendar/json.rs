//! Google Calendar (`calendar#event`, `calendar#events`) and Microsoft Graph
//! (`event`, a `value` list) event JSON, as their APIs return them.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta};
use chrono_tz::Tz;
use serde_json::Value;

use super::recurrence::{Series, expand};
use super::{CalendarFileError, Moment, Occurrence, Reading, Warning, Window};
use crate::model::{CalendarEvent, Transparency};

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

pub(super) fn read(
    text: &str,
    label: &str,
    window: Window,
    floating: Tz,
) -> Result<Reading, CalendarFileError> {
    let root: Value = serde_json::from_str(text).map_err(|e| CalendarFileError::Syntax {
        path: label.to_string(),
        line: e.line(),
        message: format!("not valid JSON: {e}"),
    })?;
    let invalid = |message: String| CalendarFileError::Invalid {
        path: label.to_string(),
        message,
    };
    let items: Vec<&Value> = match (&root, root.get("items"), root.get("value")) {
        (Value::Array(a), _, _) => a.iter().collect(),
        (_, Some(Value::Array(a)), _) | (_, _, Some(Value::Array(a))) => a.iter().collect(),
        (Value::Object(_), _, _) => vec![&root],
        _ => {
            return Err(invalid(
                "expected an event, a list of events, or a Google `items` / Graph `value` list"
                    .into(),
            ));
        }
    };
    // Google lists name the calendar's zone, used for recurrences written without one.
    let list_zone = s(&root, "timeZone").and_then(|z| z.parse::<Tz>().ok());
    let mut reading = Reading::default();
    for (i, item) in items.into_iter().enumerate() {
        let result = if item.get("subject").is_some() || item.get("isAllDay").is_some() {
            graph_event(item, window, floating)
        } else if item.get("summary").is_some() || s(item, "kind") == Some("calendar#event") {
            google_event(item, window, floating, list_zone)
        } else {
            Err("neither a Google Calendar nor a Microsoft Graph event".to_string())
        };
        match result {
            Ok(mut occurrences) => reading.occurrences.append(&mut occurrences),
            Err(message) => reading.warnings.push(Warning {
                line: None,
                message: format!(
                    "event {} ({}) skipped: {message}",
                    i + 1,
                    s(item, "id").unwrap_or("no id")
                ),
            }),
        }
    }
    Ok(reading)
}

fn occurrences_of(
    template: CalendarEvent,
    series: Series,
    zone: Tz,
    window: Window,
) -> Result<Vec<Occurrence>, String> {
    if series.duration < TimeDelta::zero() {
        return Err("the event ends before it starts".into());
    }
    let (starts, _) = expand(&series, window)?;
    let recurring = !series.rules.is_empty();
    Ok(starts
        .into_iter()
        .map(|start| {
            let mut event = template.clone();
            event.start = start.timestamp_millis();
            event.end = (start + series.duration).timestamp_millis();
            if recurring {
                event.id = format!("{}@{}", template.id, event.start);
            }
            Occurrence {
                event,
                zone,
                line: None,
            }
        })
        .collect())
}

/// Google: `{"dateTime": RFC 3339, "timeZone": IANA}` or `{"date": "YYYY-MM-DD"}`.
fn google_time(
    v: Option<&Value>,
    zone: Option<Tz>,
    floating: Tz,
) -> Result<(DateTime<Tz>, Moment), String> {
    let v = v.ok_or("missing start or end")?;
    if let Some(date) = s(v, "date") {
        let d = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|e| format!("date {date:?}: {e}"))?;
        return Ok((Moment::Date(d).resolve(floating), Moment::Date(d)));
    }
    let text = s(v, "dateTime").ok_or("start/end has neither date nor dateTime")?;
    let zone = match s(v, "timeZone") {
        Some(z) => Some(
            z.parse::<Tz>()
                .map_err(|_| format!("time zone {z:?} is not an IANA name"))?,
        ),
        None => zone,
    };
    let t = DateTime::parse_from_rfc3339(text).map_err(|e| format!("dateTime {text:?}: {e}"))?;
    let zone = zone.unwrap_or(Tz::UTC);
    let local = t.with_timezone(&zone);
    Ok((local, Moment::Zoned(local.naive_local(), zone)))
}

fn google_event(
    v: &Value,
    window: Window,
    floating: Tz,
    list_zone: Option<Tz>,
) -> Result<Vec<Occurrence>, String> {
    if s(v, "status") == Some("cancelled") {
        return Ok(Vec::new());
    }
    let (start, moment) = google_time(v.get("start"), list_zone, floating)?;
    let (end, _) = google_time(v.get("end"), list_zone, floating)?;
    let zone = moment.zone(floating);
    let meeting = s(v, "hangoutLink").map(str::to_string).or_else(|| {
        v.pointer("/conferenceData/entryPoints")?
            .as_array()?
            .iter()
            .find(|e| s(e, "entryPointType") == Some("video"))
            .and_then(|e| s(e, "uri"))
            .map(str::to_string)
    });
    let event = CalendarEvent {
        id: s(v, "id").unwrap_or("").to_string(),
        title: s(v, "summary").unwrap_or("").to_string(),
        description: s(v, "description").map(str::to_string),
        location: s(v, "location").map(str::to_string),
        attendees: v
            .get("attendees")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| s(x, "email"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        start: 0,
        end: 0,
        time_zone: matches!(moment, Moment::Zoned(..)).then(|| zone.name().to_string()),
        all_day: moment.is_date(),
        transparency: if s(v, "transparency") == Some("transparent") {
            Transparency::Transparent
        } else {
            Transparency::Opaque
        },
        online_meeting_url: meeting,
    };
    // `recurrence` holds iCalendar RRULE / EXDATE / RDATE lines.
    let mut rules = Vec::new();
    let mut exdates = Vec::new();
    let mut rdates = Vec::new();
    for line in v
        .get("recurrence")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let (head, values) = line
            .split_once(':')
            .ok_or_else(|| format!("recurrence line {line:?}"))?;
        let mut parts = head.split(';');
        let name = parts.next().unwrap_or("").to_ascii_uppercase();
        let tz = parts
            .find_map(|p| p.strip_prefix("TZID="))
            .map(|z| {
                z.parse::<Tz>()
                    .map_err(|_| format!("TZID {z:?} is not an IANA name"))
            })
            .transpose()?
            .unwrap_or(zone);
        let dates = || -> Result<Vec<DateTime<Tz>>, String> {
            values
                .split(',')
                .map(|value| {
                    let m = if value.len() == 8 {
                        Moment::Date(
                            NaiveDate::parse_from_str(value, "%Y%m%d")
                                .map_err(|e| e.to_string())?,
                        )
                    } else if let Some(u) = value.strip_suffix('Z') {
                        Moment::Utc(
                            NaiveDateTime::parse_from_str(u, "%Y%m%dT%H%M%S")
                                .map_err(|e| e.to_string())?,
                        )
                    } else {
                        Moment::Zoned(
                            NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S")
                                .map_err(|e| e.to_string())?,
                            tz,
                        )
                    };
                    Ok(m.resolve(floating))
                })
                .collect()
        };
        match name.as_str() {
            "RRULE" => rules.push(values.to_string()),
            "EXDATE" => exdates.extend(dates()?),
            "RDATE" => rdates.extend(dates()?),
            other => return Err(format!("recurrence line {other} is not supported")),
        }
    }
    let series = Series {
        start,
        duration: end - start,
        rules,
        rdates,
        exdates,
    };
    occurrences_of(event, series, zone, window)
}

/// Graph: `{"dateTime": "2026-06-20T14:00:00.0000000", "timeZone": "Europe/London" | "UTC"}`.
fn graph_time(v: Option<&Value>) -> Result<(DateTime<Tz>, Tz), String> {
    let v = v.ok_or("missing start or end")?;
    let text = s(v, "dateTime").ok_or("start/end without dateTime")?;
    let zone_name = s(v, "timeZone").unwrap_or("UTC");
    let zone = zone_name.parse::<Tz>().map_err(|_| {
        format!("time zone {zone_name:?} is not an IANA name; ask Graph for IANA zones with the header Prefer: outlook.timezone=\"<IANA zone>\"")
    })?;
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .map_err(|e| format!("dateTime {text:?}: {e}"))?;
    Ok((super::local(zone, naive), zone))
}

fn graph_event(v: &Value, window: Window, floating: Tz) -> Result<Vec<Occurrence>, String> {
    if v.get("isCancelled").and_then(Value::as_bool) == Some(true) {
        return Ok(Vec::new());
    }
    if s(v, "type") == Some("seriesMaster") {
        return Err("a seriesMaster carries a Graph recurrence pattern; export its occurrences with /calendarView".into());
    }
    let all_day = v.get("isAllDay").and_then(Value::as_bool).unwrap_or(false);
    let (start, zone) = graph_time(v.get("start"))?;
    let (end, _) = graph_time(v.get("end"))?;
    let (start, end, zone) = if all_day {
        // All-day events are midnight to midnight in the viewer's zone.
        let s = Moment::Date(start.date_naive()).resolve(floating);
        let days = (end.date_naive() - start.date_naive()).num_days().max(1);
        (s, s + TimeDelta::days(days), floating)
    } else {
        (start, end, zone)
    };
    let event = CalendarEvent {
        id: s(v, "id").unwrap_or("").to_string(),
        title: s(v, "subject").unwrap_or("").to_string(),
        description: s(v, "bodyPreview").map(str::to_string),
        location: v
            .pointer("/location/displayName")
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
            .map(str::to_string),
        attendees: v
            .get("attendees")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.pointer("/emailAddress/address")?.as_str())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        start: 0,
        end: 0,
        time_zone: (!all_day).then(|| zone.name().to_string()),
        all_day,
        transparency: if s(v, "showAs") == Some("free") {
            Transparency::Transparent
        } else {
            Transparency::Opaque
        },
        online_meeting_url: v
            .pointer("/onlineMeeting/joinUrl")
            .and_then(Value::as_str)
            .or_else(|| s(v, "onlineMeetingUrl"))
            .map(str::to_string),
    };
    let series = Series {
        start,
        duration: end - start,
        rules: Vec::new(),
        rdates: Vec::new(),
        exdates: Vec::new(),
    };
    occurrences_of(event, series, zone, window)
}
