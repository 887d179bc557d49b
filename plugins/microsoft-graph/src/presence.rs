//! Teams presence both ways: Graph's `availability`/`activity` into presence
//! signals, and the host's derived presence into a `setPresence` request.
//!
//! Reading (the `presence` resource type): availability is one of
//! `Available`, `AvailableIdle`, `Away`, `BeRightBack`, `Busy`, `BusyIdle`,
//! `DoNotDisturb`, `Offline`, `PresenceUnknown`; activity adds detail
//! (`InACall`, `InAConferenceCall`, `Presenting`, `OutOfOffice`, ...).
//!
//! Writing (`presence: setPresence`): the supported `availability`/`activity`
//! pairs are `Available/Available`, `Busy/InACall`, `Busy/InAConferenceCall`,
//! `Away/Away` and `DoNotDisturb/Presenting`; `expirationDuration` is ISO 8601
//! from `PT5M` to `PT4H` (five minutes when absent); `sessionId` is the
//! application's (client) id. Being offline has no pair: the app's session is
//! cleared instead (`presence: clearPresence`), so Teams shows the person's
//! own clients' state.

use presence_sdk::provider::{Availability, Presence, PresenceSignal, SignalSource, kv};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long a call signal holds if the end of the call is never heard of.
const CALL_CAP_MS: i64 = 4 * 3_600_000;

/// The shortest and longest `expirationDuration` setPresence takes, in minutes.
pub const MIN_EXPIRATION_MIN: i64 = 5;
pub const MAX_EXPIRATION_MIN: i64 = 240;

/// The host's user of a connection: the host maps `connection:{name}` to the
/// person who owns the connection (Graph's ids mean nothing to it).
pub fn signal_user(connection: &str) -> String {
    format!("connection:{connection}")
}

/// What a Teams presence says about availability; `None` for values Graph
/// does not document.
pub fn availability_of(availability: &str, activity: &str) -> Option<Availability> {
    match activity {
        "OutOfOffice" => return Some(Availability::OutOfOffice),
        "Presenting" => return Some(Availability::DoNotDisturb),
        _ => {}
    }
    Some(match availability {
        "Available" | "AvailableIdle" => Availability::Available,
        "Busy" | "BusyIdle" => Availability::Busy,
        "DoNotDisturb" => Availability::DoNotDisturb,
        "Away" | "BeRightBack" => Availability::Away,
        "Offline" | "PresenceUnknown" => Availability::Offline,
        _ => return None,
    })
}

/// Whether the activity is a live call.
pub fn in_call(activity: &str) -> bool {
    matches!(activity, "InACall" | "InAConferenceCall")
}

/// The signals a presence makes for `connection`: the Teams status
/// (`provider-status`), and a `call` signal that holds while the activity is a
/// call and clears when it no longer is.
pub fn signals(
    connection: &str,
    availability: &str,
    activity: &str,
    now_ms: i64,
) -> Vec<PresenceSignal> {
    let user = signal_user(connection);
    let mut signals = Vec::new();
    if let Some(derived) = availability_of(availability, activity) {
        signals.push(PresenceSignal {
            user: user.clone(),
            source: SignalSource::ProviderStatus,
            availability: derived,
            status_text: None,
            status_emoji: None,
            starts: None,
            expires: None,
            clears: false,
        });
    }
    let calling = in_call(activity);
    signals.push(PresenceSignal {
        user,
        source: SignalSource::Call,
        availability: Availability::InCall,
        status_text: calling.then(|| "In a Teams call".to_string()),
        status_emoji: calling.then(|| "📞".to_string()),
        starts: None,
        expires: calling.then_some(now_ms + CALL_CAP_MS),
        clears: !calling,
    });
    signals
}

/// `expirationDuration` in minutes: until the presence's `until`, within
/// setPresence's bounds; the longest when it holds until replaced (the host
/// pushes again when it changes, and a host that went away lets it lapse).
pub fn expiration_minutes(until: Option<i64>, now_ms: i64) -> i64 {
    match until {
        None => MAX_EXPIRATION_MIN,
        Some(until) => {
            let minutes = until.saturating_sub(now_ms).div_euclid(60_000)
                + i64::from(until.saturating_sub(now_ms).rem_euclid(60_000) > 0);
            minutes.clamp(MIN_EXPIRATION_MIN, MAX_EXPIRATION_MIN)
        }
    }
}

/// The documented setPresence pair for an availability; `None` for offline,
/// which clears the app's session instead.
pub fn pair_of(availability: Availability) -> Option<(&'static str, &'static str)> {
    Some(match availability {
        Availability::Available => ("Available", "Available"),
        Availability::InCall => ("Busy", "InACall"),
        // Busy is almost always a meeting, and Busy has no plain pair.
        Availability::Busy => ("Busy", "InAConferenceCall"),
        Availability::DoNotDisturb => ("DoNotDisturb", "Presenting"),
        Availability::Away | Availability::OutOfOffice => ("Away", "Away"),
        Availability::Offline => return None,
    })
}

/// What to send for `presence`: `setPresence` with its body, or `clearPresence`.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceCall {
    Set(Value),
    Clear(Value),
}

impl PresenceCall {
    /// The action's name, the last segment of its path.
    pub fn action(&self) -> &'static str {
        match self {
            PresenceCall::Set(_) => "setPresence",
            PresenceCall::Clear(_) => "clearPresence",
        }
    }

    pub fn body(&self) -> &Value {
        match self {
            PresenceCall::Set(b) | PresenceCall::Clear(b) => b,
        }
    }
}

pub fn call_for(session_id: &str, presence: &Presence, now_ms: i64) -> PresenceCall {
    match pair_of(presence.availability) {
        Some((availability, activity)) => PresenceCall::Set(json!({
            "sessionId": session_id,
            "availability": availability,
            "activity": activity,
            "expirationDuration": format!("PT{}M", expiration_minutes(presence.until, now_ms)),
        })),
        None => PresenceCall::Clear(json!({ "sessionId": session_id })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_that_repeats_the_persons_own_state_is_not_made() {
        assert!(repeats_own(("Busy", "InACall"), Some(("Busy", "InACall"))));
        assert!(!repeats_own(
            ("Busy", "InACall"),
            Some(("Available", "Available"))
        ));
        assert!(!repeats_own(("Busy", "InACall"), None));
    }

    #[test]
    fn our_own_push_read_back_is_an_echo_until_it_lapses() {
        let pushed = Pushed {
            availability: "Busy".into(),
            activity: "InAConferenceCall".into(),
            until_ms: 10_000,
        };
        assert!(pushed.echoes("Busy", "InAConferenceCall", 5_000));
        // The person's own call, or after our session lapsed, is news.
        assert!(!pushed.echoes("Busy", "InACall", 5_000));
        assert!(!pushed.echoes("Busy", "InAConferenceCall", 10_000));
    }

    #[test]
    fn teams_statuses_map_to_availability() {
        let cases = [
            ("Available", "Available", Availability::Available),
            ("AvailableIdle", "Inactive", Availability::Available),
            ("Busy", "InAMeeting", Availability::Busy),
            ("BusyIdle", "Inactive", Availability::Busy),
            ("Busy", "InACall", Availability::Busy),
            ("DoNotDisturb", "Presenting", Availability::DoNotDisturb),
            ("Busy", "Presenting", Availability::DoNotDisturb),
            ("BeRightBack", "BeRightBack", Availability::Away),
            ("Away", "Away", Availability::Away),
            ("Offline", "OffWork", Availability::Offline),
            ("PresenceUnknown", "PresenceUnknown", Availability::Offline),
            ("Offline", "OutOfOffice", Availability::OutOfOffice),
        ];
        for (availability, activity, expected) in cases {
            assert_eq!(
                availability_of(availability, activity),
                Some(expected),
                "{availability}/{activity}"
            );
        }
        assert_eq!(availability_of("Sleeping", "Snoring"), None);
    }

    #[test]
    fn calls_start_and_clear_a_call_signal() {
        // The presence resource's example: {"availability": "Available", "activity": "Available"}.
        let s = signals("alice-teams", "Available", "Available", 0);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].user, "connection:alice-teams");
        assert_eq!(
            (s[0].source, s[0].availability),
            (SignalSource::ProviderStatus, Availability::Available)
        );
        assert_eq!((s[1].source, s[1].clears), (SignalSource::Call, true));
        let s = signals("alice-teams", "Busy", "InAConferenceCall", 1_000);
        assert_eq!(
            (s[1].source, s[1].clears, s[1].expires),
            (SignalSource::Call, false, Some(1_000 + CALL_CAP_MS))
        );
        assert_eq!(s[0].availability, Availability::Busy);
        let s = signals("alice-teams", "Nonsense", "InACall", 0);
        assert_eq!(s.len(), 1, "an unknown availability makes no status signal");
    }

    #[test]
    fn expiration_is_clamped_to_five_minutes_to_four_hours() {
        assert_eq!(expiration_minutes(None, 0), 240);
        assert_eq!(expiration_minutes(Some(60_000), 0), 5);
        assert_eq!(expiration_minutes(Some(-5), 0), 5);
        assert_eq!(expiration_minutes(Some(30 * 60_000 + 1), 0), 31);
        assert_eq!(expiration_minutes(Some(90 * 60_000), 0), 90);
        assert_eq!(expiration_minutes(Some(i64::MAX), i64::MIN), 240);
    }

    fn presence(availability: Availability, until: Option<i64>) -> Presence {
        Presence {
            user: "u".into(),
            availability,
            status_text: None,
            status_emoji: None,
            until,
            category: None,
        }
    }

    #[test]
    fn pushes_use_documented_pairs_or_clear_the_session() {
        // setPresence's example body: Available/Available for PT1H.
        let call = call_for(
            "22553876-f5ab-4529-bffb-cfe50aa89f87",
            &presence(Availability::Available, Some(3_600_000)),
            0,
        );
        assert_eq!(call.action(), "setPresence");
        assert_eq!(
            call.body(),
            &json!({"sessionId": "22553876-f5ab-4529-bffb-cfe50aa89f87", "availability": "Available",
                    "activity": "Available", "expirationDuration": "PT60M"})
        );
        let documented = [
            ("Available", "Available"),
            ("Busy", "InACall"),
            ("Busy", "InAConferenceCall"),
            ("Away", "Away"),
            ("DoNotDisturb", "Presenting"),
        ];
        for a in [
            Availability::Available,
            Availability::Busy,
            Availability::InCall,
            Availability::DoNotDisturb,
            Availability::Away,
            Availability::OutOfOffice,
        ] {
            assert!(documented.contains(&pair_of(a).unwrap()), "{a:?}");
        }
        let clear = call_for("app", &presence(Availability::Offline, None), 0);
        assert_eq!(clear, PresenceCall::Clear(json!({"sessionId": "app"})));
        assert_eq!(clear.action(), "clearPresence");
    }
}

/// What the app last set for a connection. Graph's presence combines every
/// session's, the app's included, so what it reports back can be our own
/// push: read back, it is not news (our `Busy/InAConferenceCall` for a
/// meeting is not a call the person is in). The ambiguity that remains: if
/// the person's own state becomes exactly the pair we set, it is taken for
/// our echo until our session lapses or the host pushes something else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    pub availability: String,
    pub activity: String,
    /// When the app's session lapses at Graph.
    pub until_ms: i64,
}

impl Pushed {
    /// Whether a presence read at `now_ms` is this push coming back.
    pub fn echoes(&self, availability: &str, activity: &str, now_ms: i64) -> bool {
        now_ms < self.until_ms && self.availability == availability && self.activity == activity
    }
}

fn pushed_key(connection: &str) -> String {
    format!("pushed/{connection}")
}

fn own_key(connection: &str) -> String {
    format!("own/{connection}")
}

/// Remembers the person's own presence as last read (not our echo).
pub fn remember_own(connection: &str, availability: &str, activity: &str) {
    let value = serde_json::to_vec(&(availability, activity)).expect("a pair serializes");
    if let Err(e) = kv::set(&own_key(connection), &value) {
        presence_sdk::log::warn(&format!(
            "could not remember the presence read for {connection}: {e:?}"
        ));
    }
}

/// The person's own presence as last read, if any.
pub fn own(connection: &str) -> Option<(String, String)> {
    let bytes = kv::get(&own_key(connection)).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Whether setting `pair` would only repeat what the person's own clients
/// already show (`own`). Then the app's session is cleared instead: it adds
/// nothing, and a session holding their state would be read back as theirs
/// after it changed (a call they hung up would seem to go on).
pub fn repeats_own(pair: (&str, &str), own: Option<(&str, &str)>) -> bool {
    own == Some(pair)
}

/// Remembers what was just pushed for `connection` (forgets it for a clear).
pub fn remember_push(connection: &str, presence: &Presence, now_ms: i64) {
    let key = pushed_key(connection);
    let written = match pair_of(presence.availability) {
        Some((availability, activity)) => {
            let pushed = Pushed {
                availability: availability.into(),
                activity: activity.into(),
                until_ms: now_ms + expiration_minutes(presence.until, now_ms) * 60_000,
            };
            let value = serde_json::to_vec(&pushed).expect("a record serializes");
            kv::set(&key, &value)
        }
        None => kv::delete(&key),
    };
    if let Err(e) = written {
        presence_sdk::log::warn(&format!(
            "could not remember the presence pushed for {connection}: {e:?}"
        ));
    }
}

/// Forgets the last push (the app's session was cleared).
pub fn forget_push(connection: &str) {
    if let Err(e) = kv::delete(&pushed_key(connection)) {
        presence_sdk::log::warn(&format!(
            "could not forget the presence pushed for {connection}: {e:?}"
        ));
    }
}

/// Whether Graph's presence for `connection` is only our own last push.
pub fn is_own_echo(connection: &str, availability: &str, activity: &str, now_ms: i64) -> bool {
    match kv::get(&pushed_key(connection)) {
        Ok(Some(bytes)) => serde_json::from_slice::<Pushed>(&bytes)
            .is_ok_and(|p| p.echoes(availability, activity, now_ms)),
        _ => false,
    }
}
