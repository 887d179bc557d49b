//! The notification router: who gets a message, when, and how.
//!
//! A notification has an urgency class, each a policy ([`Policy`], from
//! `[notifications]`): whether it waits while the recipient is busy, whether
//! it respects do-not-disturb, and how long it may wait at most.
//!
//! | class | waits while busy | respects do-not-disturb | waits at most |
//! |---|---|---|---|
//! | emergency | no | no | 0 (on the wedding's day, on every channel at once) |
//! | timeline | yes | yes | 1 hour |
//! | coordination | yes | yes | 4 hours |
//! | general | yes, and outside business hours | yes | until the recipient's next business hours start |
//!
//! [`decide`] is pure: given the recipient's presence and hours and the time,
//! it says deliver now or wait until when. A waiting notification is looked
//! at again when the recipient's presence changes (the worker listens to the
//! presence engine) and at its latest delivery time, whichever comes first, so
//! it is never delivered later than its policy allows.

pub mod worker;

use chrono::TimeZone;
use serde::{Deserialize, Serialize};

use crate::model::{Availability, Instant, Presence};
use crate::presence::working_hours::{self, Schedule};

/// The urgency classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Emergency,
    Timeline,
    Coordination,
    General,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Emergency => "emergency",
            Class::Timeline => "timeline",
            Class::Coordination => "coordination",
            Class::General => "general",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
    }

    /// The urgency a channel plugin is told.
    pub fn urgency(self) -> crate::model::Urgency {
        match self {
            Class::Emergency => crate::model::Urgency::Critical,
            Class::Timeline => crate::model::Urgency::High,
            Class::Coordination => crate::model::Urgency::Normal,
            Class::General => crate::model::Urgency::Low,
        }
    }
}

/// One class's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub defer_if_busy: bool,
    pub respect_dnd: bool,
    /// The longest a notification of this class waits, in minutes; none for
    /// `general`, which waits until the next business hours.
    pub max_delay_minutes: Option<u32>,
}

/// `[notifications]`: the classes' policies and the delivery retries.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    pub emergency: Policy,
    pub timeline: Policy,
    pub coordination: Policy,
    pub general: Policy,
    /// How long a `general` notification waits at most for a recipient
    /// without working hours, in minutes. Default 1440 (a day).
    pub general_max_delay_minutes_without_hours: u32,
    /// Rounds over all of a recipient's channels before a notification is
    /// given up. Default 6.
    pub max_rounds: u32,
    /// An emergency with an escalation path not acknowledged this long after
    /// its delivery goes to the path's next contact. Default 600.
    pub escalate_after_seconds: u32,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            emergency: Policy {
                defer_if_busy: false,
                respect_dnd: false,
                max_delay_minutes: Some(0),
            },
            timeline: Policy {
                defer_if_busy: true,
                respect_dnd: true,
                max_delay_minutes: Some(60),
            },
            coordination: Policy {
                defer_if_busy: true,
                respect_dnd: true,
                max_delay_minutes: Some(240),
            },
            general: Policy {
                defer_if_busy: true,
                respect_dnd: true,
                max_delay_minutes: None,
            },
            general_max_delay_minutes_without_hours: 1440,
            max_rounds: 6,
            escalate_after_seconds: 600,
        }
    }
}

impl NotificationsConfig {
    pub fn policy(&self, class: Class) -> Policy {
        match class {
            Class::Emergency => self.emergency,
            Class::Timeline => self.timeline,
            Class::Coordination => self.coordination,
            Class::General => self.general,
        }
    }
}

/// The wedding a notification is about.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Wedding {
    pub id: String,
    /// The wedding's date, `YYYY-MM-DD`, in the venue's time zone.
    pub date: chrono::NaiveDate,
    /// The venue's IANA time zone.
    pub time_zone: String,
    #[serde(default)]
    pub venue: Option<String>,
    /// The recipient's role at this wedding ("photographer", "florist", ...).
    #[serde(default)]
    pub role: Option<String>,
}

impl Wedding {
    /// Whether `now` falls on the wedding's date where the venue is.
    pub fn is_today(&self, now: Instant) -> bool {
        let Ok(tz) = self.time_zone.parse::<chrono_tz::Tz>() else {
            return false;
        };
        tz.timestamp_millis_opt(now)
            .single()
            .is_some_and(|t| t.date_naive() == self.date)
    }
}

/// What the router decided, with the reason it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send now; on every channel at once when `all_channels`.
    Deliver { all_channels: bool, reason: String },
    /// Wait: look again at `until` at the latest (or when presence changes).
    Defer { until: Instant, reason: String },
}

/// The latest moment a notification of `class` created at `created` may go out.
pub fn deliver_by(
    config: &NotificationsConfig,
    class: Class,
    schedule: Option<&Schedule>,
    time_zone: Option<&str>,
    created: Instant,
) -> Instant {
    match config.policy(class).max_delay_minutes {
        Some(minutes) => created + i64::from(minutes) * 60_000,
        None => schedule
            .and_then(|s| working_hours::next_start(s, time_zone, created))
            .unwrap_or(
                created + i64::from(config.general_max_delay_minutes_without_hours) * 60_000,
            ),
    }
}

/// Whether `availability` keeps a class that waits while busy waiting.
fn busy(availability: Availability) -> bool {
    matches!(
        availability,
        Availability::Busy | Availability::InCall | Availability::OutOfOffice
    )
}

/// Deliver now, or wait until when. `presence` is None for a recipient of whom
/// nothing is known (delivered: there is nothing to wait for).
#[allow(clippy::too_many_arguments)]
pub fn decide(
    config: &NotificationsConfig,
    class: Class,
    wedding: Option<&Wedding>,
    presence: Option<&Presence>,
    schedule: Option<&Schedule>,
    time_zone: Option<&str>,
    deliver_by: Instant,
    now: Instant,
) -> Decision {
    if class == Class::Emergency {
        return if wedding.is_some_and(|w| w.is_today(now)) {
            Decision::Deliver {
                all_channels: true,
                reason:
                    "emergency on the wedding's day: every channel at once, whatever the presence"
                        .into(),
            }
        } else {
            Decision::Deliver {
                all_channels: false,
                reason: "emergency: delivered at once, whatever the presence".into(),
            }
        };
    }
    if now >= deliver_by {
        return Decision::Deliver {
            all_channels: false,
            reason: "its latest delivery time has come".into(),
        };
    }
    let policy = config.policy(class);
    let availability = presence.map(|p| p.availability);
    let mut waits = Vec::new();
    if policy.respect_dnd && availability == Some(Availability::DoNotDisturb) {
        waits.push("the recipient is in do-not-disturb".to_string());
    }
    if policy.defer_if_busy && availability.is_some_and(busy) {
        let what = presence
            .and_then(|p| p.status_text.clone())
            .unwrap_or_else(|| {
                availability
                    .map(|a| a.as_str().to_string())
                    .unwrap_or_default()
            });
        waits.push(format!("the recipient is busy ({what})"));
    }
    if class == Class::General
        && let Some(s) = schedule
        && !working_hours::inside(s, time_zone, now)
    {
        waits.push("it is outside the recipient's business hours".to_string());
    }
    if waits.is_empty() {
        Decision::Deliver {
            all_channels: false,
            reason: match availability {
                Some(a) => format!("the recipient is {}", a.as_str()),
                None => "nothing is known of the recipient's presence".into(),
            },
        }
    } else {
        Decision::Defer {
            until: deliver_by,
            reason: format!(
                "{}; waits until free, at the latest until then",
                waits.join(" and ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::working_hours::WorkingHours;

    fn utc(s: &str) -> Instant {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    fn presence(a: Availability) -> Presence {
        Presence {
            user: "u".into(),
            availability: a,
            status_text: None,
            status_emoji: None,
            until: None,
            category: None,
            source: None,
            origin: None,
        }
    }

    fn weekdays(start: &str, end: &str) -> Schedule {
        let hours: WorkingHours = ["mon", "tue", "wed", "thu", "fri"]
            .iter()
            .map(|d| (d.to_string(), (start.to_string(), end.to_string())))
            .collect();
        Schedule::parse(&hours).unwrap()
    }

    #[test]
    fn each_class_against_each_presence() {
        let c = NotificationsConfig::default();
        let now = utc("2026-06-10T14:00:00Z"); // a Wednesday
        let all = [
            Availability::Available,
            Availability::Busy,
            Availability::InCall,
            Availability::DoNotDisturb,
            Availability::Away,
            Availability::OutOfOffice,
            Availability::Offline,
        ];
        for class in [
            Class::Emergency,
            Class::Timeline,
            Class::Coordination,
            Class::General,
        ] {
            let by = deliver_by(&c, class, None, None, now);
            for a in all {
                let p = presence(a);
                let d = decide(&c, class, None, Some(&p), None, None, by, now);
                let waits = matches!(d, Decision::Defer { .. });
                let expected = class != Class::Emergency
                    && matches!(
                        a,
                        Availability::Busy
                            | Availability::InCall
                            | Availability::DoNotDisturb
                            | Availability::OutOfOffice
                    );
                assert_eq!(waits, expected, "{class:?} / {a:?}: {d:?}");
            }
        }
        // Timeline waits exactly an hour at most, coordination four.
        assert_eq!(
            deliver_by(&c, Class::Timeline, None, None, now),
            now + 3_600_000
        );
        assert_eq!(
            deliver_by(&c, Class::Coordination, None, None, now),
            now + 4 * 3_600_000
        );
        let busy = presence(Availability::Busy);
        let at = now + 3_600_000;
        assert!(matches!(
            decide(&c, Class::Timeline, None, Some(&busy), None, None, at, at),
            Decision::Deliver { .. }
        ));
    }

    #[test]
    fn emergencies_on_the_wedding_day_go_to_every_channel_in_the_venues_zone() {
        let c = NotificationsConfig::default();
        let wedding = Wedding {
            id: "w1".into(),
            date: chrono::NaiveDate::from_ymd_opt(2026, 6, 13).unwrap(),
            time_zone: "America/New_York".into(),
            venue: Some("Old Barn".into()),
            role: None,
        };
        let dnd = presence(Availability::DoNotDisturb);
        // 2026-06-13 02:00Z is still the 12th in New York: not the day yet.
        let eve = utc("2026-06-13T02:00:00Z");
        let d = decide(
            &c,
            Class::Emergency,
            Some(&wedding),
            Some(&dnd),
            None,
            None,
            eve,
            eve,
        );
        assert!(
            matches!(
                d,
                Decision::Deliver {
                    all_channels: false,
                    ..
                }
            ),
            "{d:?}"
        );
        let day = utc("2026-06-13T15:00:00Z");
        let d = decide(
            &c,
            Class::Emergency,
            Some(&wedding),
            Some(&dnd),
            None,
            None,
            day,
            day,
        );
        assert!(
            matches!(
                d,
                Decision::Deliver {
                    all_channels: true,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn general_notes_wait_for_business_hours_in_the_recipients_zone_across_dst() {
        let c = NotificationsConfig::default();
        let hours = weekdays("09:00", "18:00");
        let available = presence(Availability::Available);
        // Friday 2026-03-27 19:00 in Lisbon (WET, UTC+0): after hours. Summer
        // time starts on Sunday the 29th; Monday's 09:00 is 08:00Z.
        let friday_evening = utc("2026-03-27T19:00:00Z");
        let by = deliver_by(
            &c,
            Class::General,
            Some(&hours),
            Some("Europe/Lisbon"),
            friday_evening,
        );
        assert_eq!(by, utc("2026-03-30T08:00:00Z"));
        let d = decide(
            &c,
            Class::General,
            None,
            Some(&available),
            Some(&hours),
            Some("Europe/Lisbon"),
            by,
            friday_evening,
        );
        assert!(
            matches!(&d, Decision::Defer { until, reason } if *until == by && reason.contains("business hours")),
            "{d:?}"
        );
        // The same moment is 15:00 in New York (EDT since the 8th): inside hours.
        let by = deliver_by(
            &c,
            Class::General,
            Some(&hours),
            Some("America/New_York"),
            friday_evening,
        );
        assert_eq!(by, utc("2026-03-30T13:00:00Z"), "Monday 09:00 EDT");
        let d = decide(
            &c,
            Class::General,
            None,
            Some(&available),
            Some(&hours),
            Some("America/New_York"),
            by,
            friday_evening,
        );
        assert!(matches!(d, Decision::Deliver { .. }), "{d:?}");
        // Busy inside hours: waits, at the latest until the next business day starts.
        let busy = presence(Availability::Busy);
        let d = decide(
            &c,
            Class::General,
            None,
            Some(&busy),
            Some(&hours),
            Some("America/New_York"),
            by,
            friday_evening,
        );
        assert!(
            matches!(d, Decision::Defer { until, .. } if until == by),
            "{d:?}"
        );
    }
}
