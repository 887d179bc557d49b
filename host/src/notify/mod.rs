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
//! Every class but emergencies also waits out the recipient's quiet hours
//! ([`windows`]); business hours skip the recipient's days off. Then each
//! channel's send window picks the channels that may be used now, and, for
//! classes with `optimal_timing`, the delivery log may pick a better hour
//! inside the window ([`timing`]).
//!
//! [`decide`] is pure: given the recipient's presence and hours and the time,
//! it says deliver now or wait until when. A waiting notification is looked
//! at again when the recipient's presence changes (the worker listens to the
//! presence engine), when the quiet hours it waits out end, and at its latest
//! delivery time, whichever comes first, so it is never delivered later than
//! its policy allows.

pub mod timing;
pub mod windows;
pub mod worker;

use chrono::TimeZone;
use serde::{Deserialize, Serialize};

use crate::model::{Availability, Instant, Presence};
use crate::presence::working_hours::{self, Schedule};
use crate::store::notifications::Channel;

/// The urgency classes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    utoipa::ToSchema,
)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Wait while the recipient is busy, in a call or out of office.
    pub defer_if_busy: bool,
    /// Wait while the recipient is in do-not-disturb, and during their quiet hours.
    pub respect_dnd: bool,
    /// The longest a notification of this class waits, in minutes; none for
    /// `general`, which waits until the next business hours.
    pub max_delay_minutes: Option<u32>,
    /// Within the time it may wait, deliver in the hour of the week this
    /// recipient has acknowledged fastest (from the delivery log). Default:
    /// `general` only.
    #[serde(default)]
    pub optimal_timing: bool,
}

/// `[notifications]`: the classes' policies and the delivery retries.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
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
    /// How long a worker's claim on a notification lasts. A host that dies
    /// holding claims leaves them to run out: this long at most before
    /// another worker (or the restarted host) takes the work over. A live
    /// worker renews its claims while a send is under way (once half spent,
    /// then every third of this), so a slow send is never taken over.
    /// Default 60.
    pub claim_lease_seconds: u32,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            emergency: Policy {
                defer_if_busy: false,
                respect_dnd: false,
                max_delay_minutes: Some(0),
                optimal_timing: false,
            },
            timeline: Policy {
                defer_if_busy: true,
                respect_dnd: true,
                max_delay_minutes: Some(60),
                optimal_timing: false,
            },
            coordination: Policy {
                defer_if_busy: true,
                respect_dnd: true,
                max_delay_minutes: Some(240),
                optimal_timing: false,
            },
            general: Policy {
                defer_if_busy: true,
                respect_dnd: true,
                max_delay_minutes: None,
                optimal_timing: true,
            },
            general_max_delay_minutes_without_hours: 1440,
            max_rounds: 6,
            escalate_after_seconds: 600,
            claim_lease_seconds: 60,
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
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

/// What the router knows of a recipient when it decides.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recipient<'a> {
    /// Their effective presence; None when nothing is known of it.
    pub presence: Option<&'a Presence>,
    /// Their IANA time zone; UTC when none.
    pub time_zone: Option<&'a str>,
    /// Their business hours (with days off).
    pub hours: Option<&'a Schedule>,
    /// Their quiet hours.
    pub quiet: Option<&'a windows::Weekly>,
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

/// The latest moment a notification of `class` for `user`, submitted now,
/// may go out, read from their settings.
pub async fn deliver_by_for(
    app: &crate::App,
    tenant: &str,
    user: &str,
    class: Class,
    now: Instant,
) -> Result<Instant, crate::store::StoreError> {
    let settings = app.store.recipient_settings(tenant, user).await?;
    Ok(deliver_by(
        &app.config.notifications,
        class,
        settings.hours.as_ref(),
        settings.time_zone.as_deref(),
        now,
    ))
}

/// The channels a notification may go out on now, in the recipient's order
/// of preference: those whose send window is open. When `urgent` (an
/// emergency, or a notification whose latest delivery time has come) the
/// others follow, so windows order the channels but never hold it back.
/// Otherwise, when every channel is closed, `Err` says when the first one
/// opens (None: none opens within a week).
pub fn channels_now(
    channels: &[Channel],
    time_zone: Option<&str>,
    now: Instant,
    urgent: bool,
) -> Result<Vec<Channel>, Option<Instant>> {
    let (open, closed): (Vec<&Channel>, Vec<&Channel>) = channels.iter().partition(|c| {
        c.send_windows()
            .is_none_or(|w| w.open_until(time_zone, now).is_some())
    });
    if urgent || !open.is_empty() || closed.is_empty() {
        let rest = if urgent { closed } else { Vec::new() };
        return Ok(open.into_iter().chain(rest).cloned().collect());
    }
    Err(closed
        .iter()
        .filter_map(|c| c.send_windows()?.next_open(time_zone, now))
        .min())
}

/// Whether `availability` keeps a class that waits while busy waiting.
fn busy(availability: Availability) -> bool {
    matches!(
        availability,
        Availability::Busy | Availability::InCall | Availability::OutOfOffice
    )
}

/// Deliver now, or wait until when. A recipient of whose presence nothing is
/// known is not waited for on that account (there is nothing to wait for).
pub fn decide(
    config: &NotificationsConfig,
    class: Class,
    wedding: Option<&Wedding>,
    recipient: &Recipient<'_>,
    deliver_by: Instant,
    now: Instant,
) -> Decision {
    let presence = recipient.presence;
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
        && let Some(s) = recipient.hours
        && !working_hours::inside(s, recipient.time_zone, now)
    {
        waits.push("it is outside the recipient's business hours".to_string());
    }
    // Quiet hours end by themselves, with no presence change to wake on:
    // their end is a time to look again.
    let mut until = deliver_by;
    if policy.respect_dnd
        && let Some(end) = recipient
            .quiet
            .and_then(|q| q.open_until(recipient.time_zone, now))
    {
        waits.push("it is the recipient's quiet hours".to_string());
        until = until.min(end);
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
            until,
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

    fn who<'a>(
        presence: &'a Presence,
        hours: Option<&'a Schedule>,
        time_zone: Option<&'a str>,
    ) -> Recipient<'a> {
        Recipient {
            presence: Some(presence),
            time_zone,
            hours,
            quiet: None,
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
                let d = decide(&c, class, None, &who(&p, None, None), by, now);
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
            decide(&c, Class::Timeline, None, &who(&busy, None, None), at, at),
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
            &who(&dnd, None, None),
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
            &who(&dnd, None, None),
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
            &who(&available, Some(&hours), Some("Europe/Lisbon")),
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
            &who(&available, Some(&hours), Some("America/New_York")),
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
            &who(&busy, Some(&hours), Some("America/New_York")),
            by,
            friday_evening,
        );
        assert!(
            matches!(d, Decision::Defer { until, .. } if until == by),
            "{d:?}"
        );
    }

    #[test]
    fn quiet_hours_hold_all_but_emergencies_until_they_end_never_past_the_latest_time() {
        let c = NotificationsConfig::default();
        let spec = windows::WindowsSpec::from([(
            "daily".to_string(),
            ("22:00".to_string(), "07:00".to_string()),
        )]);
        let quiet = windows::Weekly::parse(&spec).unwrap();
        let available = presence(Availability::Available);
        let lisbon = Recipient {
            presence: Some(&available),
            time_zone: Some("Europe/Lisbon"),
            hours: None,
            quiet: Some(&quiet),
        };
        // 06:30 Lisbon (WEST) is 05:30Z; the quiet hours end at 07:00 (06:00Z).
        let now = utc("2026-06-11T05:30:00Z");
        let by = deliver_by(&c, Class::Timeline, None, None, now);
        let d = decide(&c, Class::Timeline, None, &lisbon, by, now);
        assert_eq!(
            d,
            Decision::Defer {
                until: utc("2026-06-11T06:00:00Z"),
                reason:
                    "it is the recipient's quiet hours; waits until free, at the latest until then"
                        .into()
            }
        );
        // 23:30 Lisbon: a timeline note waits its hour at most, not the night.
        let late = utc("2026-06-10T22:30:00Z");
        let by = deliver_by(&c, Class::Timeline, None, None, late);
        assert!(matches!(
            decide(&c, Class::Timeline, None, &lisbon, by, late),
            Decision::Defer { until, .. } if until == by
        ));
        assert!(matches!(
            decide(&c, Class::Timeline, None, &lisbon, by, by),
            Decision::Deliver { .. }
        ));
        assert!(matches!(
            decide(&c, Class::Emergency, None, &lisbon, late, late),
            Decision::Deliver { .. }
        ));
        // Outside the quiet hours nothing waits.
        let noon = utc("2026-06-11T11:00:00Z");
        let by = deliver_by(&c, Class::Coordination, None, None, noon);
        assert!(matches!(
            decide(&c, Class::Coordination, None, &lisbon, by, noon),
            Decision::Deliver { .. }
        ));
    }

    #[test]
    fn general_notes_skip_the_recipients_days_off() {
        let c = NotificationsConfig::default();
        let off = [chrono::NaiveDate::from_ymd_opt(2026, 6, 12).unwrap()];
        let hours = weekdays("09:00", "18:00").with_days_off(&off).unwrap();
        let available = presence(Availability::Available);
        // Thursday the 11th, 19:00 UTC: the next business hours are Monday's,
        // Friday being a day off.
        let now = utc("2026-06-11T19:00:00Z");
        let by = deliver_by(&c, Class::General, Some(&hours), None, now);
        assert_eq!(by, utc("2026-06-15T09:00:00Z"));
        let friday = utc("2026-06-12T10:00:00Z");
        let d = decide(
            &c,
            Class::General,
            None,
            &who(&available, Some(&hours), None),
            by,
            friday,
        );
        assert!(
            matches!(&d, Decision::Defer { until, reason } if *until == by && reason.contains("business hours")),
            "{d:?}"
        );
    }

    #[test]
    fn send_windows_pick_the_channels_open_now_and_never_hold_back_the_urgent() {
        let channel = |plugin: &str, window: Option<(&str, &str)>| Channel {
            plugin: plugin.into(),
            address: format!("{plugin}-address"),
            connection: None,
            windows: window.map(|(s, e)| {
                windows::WindowsSpec::from([("daily".to_string(), (s.to_string(), e.to_string()))])
            }),
        };
        let sms = channel("twilio", Some(("08:00", "20:00")));
        let slack = channel("slack", Some(("09:00", "18:00")));
        let email = channel("email", None);
        let names = |c: Vec<Channel>| c.into_iter().map(|c| c.plugin).collect::<Vec<_>>();
        // 07:30 in New York (EDT) is 11:30Z: only email, which has no window.
        let early = utc("2026-06-10T11:30:00Z");
        let all = [sms.clone(), slack.clone(), email.clone()];
        assert_eq!(
            names(channels_now(&all, Some("America/New_York"), early, false).unwrap()),
            ["email"]
        );
        // Without email nothing is open: wait for SMS at 08:00 EDT (12:00Z).
        let windowed = [sms.clone(), slack.clone()];
        assert_eq!(
            channels_now(&windowed, Some("America/New_York"), early, false),
            Err(Some(utc("2026-06-10T12:00:00Z")))
        );
        // Urgent: the closed channels still go, after any open one.
        assert_eq!(
            names(channels_now(&windowed, Some("America/New_York"), early, true).unwrap()),
            ["twilio", "slack"]
        );
        assert_eq!(
            names(channels_now(&all, Some("America/New_York"), early, true).unwrap()),
            ["email", "twilio", "slack"]
        );
        // 10:00 EDT: both windows open, the person's order kept.
        let morning = utc("2026-06-10T14:00:00Z");
        assert_eq!(
            names(channels_now(&windowed, Some("America/New_York"), morning, false).unwrap()),
            ["twilio", "slack"]
        );
        assert_eq!(channels_now(&[], None, morning, false), Ok(Vec::new()));
    }
}
