//! Presence is derived, never overwritten: each source states a signal with a
//! validity window, and the effective presence is the active signal that ranks
//! highest. When a higher signal ends, the next one shows through again, which
//! is how a person's presence is restored after a call or a meeting.
//!
//! Precedence, highest first:
//!
//! 1. **manual**: set through the API, until it expires or is removed;
//! 2. **the person's own away states**: an out-of-office or do-not-disturb the
//!    person set in a provider (Slack, Teams) or an out-of-office calendar entry.
//!    An automatic status never hides these: the most common complaint about
//!    calendar-to-status tools is that they overwrite a vacation notice;
//! 3. **call** (Zoom, Meet, Teams, a Slack huddle);
//! 4. **calendar** (the current event, classified);
//! 5. **provider status** (any other status the person set);
//! 6. **working hours**.
//!
//! Within one rank the latest statement wins. This module is pure: the store
//! runs it inside the transaction that changed the signals, and the engine
//! (`engine`) does the scheduling, streaming and pushing around it.

pub mod engine;
pub mod render;
pub mod stream;
pub mod webhooks_out;
pub mod working_hours;

use crate::model::{Availability, Instant, KeyedSignal, Presence, PresenceSignal, SignalSource};

/// Whether `signal` holds at `now`: windows are half-open, `[starts, expires)`.
pub fn is_active(signal: &PresenceSignal, now: Instant) -> bool {
    signal.starts.is_none_or(|s| s <= now) && signal.expires.is_none_or(|e| e > now)
}

/// A status the person set themselves that says "leave me be": never hidden by
/// an automatic (call or calendar) signal.
pub fn is_person_set_away(signal: &PresenceSignal) -> bool {
    matches!(
        (signal.source, signal.availability),
        (
            SignalSource::ProviderStatus,
            Availability::OutOfOffice | Availability::DoNotDisturb
        ) | (SignalSource::Calendar, Availability::OutOfOffice)
    )
}

/// The precedence rank of a signal; lower wins.
pub fn rank(signal: &PresenceSignal) -> u8 {
    match signal.source {
        SignalSource::Manual => 0,
        _ if is_person_set_away(signal) => 1,
        SignalSource::Call => 2,
        SignalSource::Calendar => 3,
        SignalSource::ProviderStatus => 4,
        SignalSource::WorkingHours => 5,
    }
}

/// The effective presence of `user` from `signals` (newest first) at `now`.
pub fn derive(user: &str, signals: &[KeyedSignal], now: Instant) -> Presence {
    // min_by_key keeps the first of equals, and the input is newest first,
    // so within one rank the latest statement wins.
    let winner = signals
        .iter()
        .filter(|k| is_active(&k.signal, now))
        .min_by_key(|k| rank(&k.signal));
    match winner {
        Some(k) => {
            let s = &k.signal;
            Presence {
                user: user.to_string(),
                availability: s.availability,
                status_text: s.status_text.clone(),
                status_emoji: s.status_emoji.clone(),
                until: s.expires,
                category: s.category.clone(),
                source: Some(s.source),
                origin: Some(k.origin.clone()),
            }
        }
        None => Presence {
            user: user.to_string(),
            availability: Availability::Available,
            status_text: None,
            status_emoji: None,
            until: None,
            category: None,
            source: None,
            origin: None,
        },
    }
}

/// When the derivation of `signals` next changes without new input: the
/// earliest start or expiry after `now`.
pub fn next_change(signals: &[KeyedSignal], now: Instant) -> Option<Instant> {
    signals
        .iter()
        .flat_map(|k| [k.signal.starts, k.signal.expires])
        .flatten()
        .filter(|&t| t > now)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keyed(
        source: SignalSource,
        availability: Availability,
        starts: Option<i64>,
        expires: Option<i64>,
    ) -> KeyedSignal {
        KeyedSignal {
            key: format!("{source:?}"),
            origin: "test".into(),
            signal: PresenceSignal {
                user: "u".into(),
                source,
                availability,
                status_text: Some(format!("{source:?}")),
                status_emoji: None,
                starts,
                expires,
                clears: false,
                category: None,
            },
        }
    }

    #[test]
    fn the_highest_active_source_wins_and_the_next_shows_through_when_it_ends() {
        let signals = vec![
            keyed(
                SignalSource::Call,
                Availability::InCall,
                Some(100),
                Some(200),
            ),
            keyed(
                SignalSource::Calendar,
                Availability::Busy,
                Some(0),
                Some(500),
            ),
            keyed(SignalSource::ProviderStatus, Availability::Away, None, None),
        ];
        assert_eq!(
            derive("u", &signals, 150).availability,
            Availability::InCall
        );
        assert_eq!(derive("u", &signals, 250).availability, Availability::Busy);
        assert_eq!(derive("u", &signals, 250).until, Some(500));
        assert_eq!(derive("u", &signals, 600).availability, Availability::Away);
        assert_eq!(derive("u", &signals[..0], 600).source, None);
        assert_eq!(next_change(&signals, 0), Some(100));
        assert_eq!(next_change(&signals, 100), Some(200));
        assert_eq!(next_change(&signals, 500), None);
    }

    #[test]
    fn a_vacation_the_person_set_is_not_hidden_by_a_meeting() {
        let signals = vec![
            keyed(SignalSource::Calendar, Availability::Busy, None, None),
            keyed(
                SignalSource::ProviderStatus,
                Availability::OutOfOffice,
                None,
                None,
            ),
        ];
        assert_eq!(
            derive("u", &signals, 0).availability,
            Availability::OutOfOffice
        );
        // ...but a manual statement still beats it.
        let mut with_manual = signals.clone();
        with_manual.push(keyed(
            SignalSource::Manual,
            Availability::Available,
            None,
            None,
        ));
        assert_eq!(
            derive("u", &with_manual, 0).source,
            Some(SignalSource::Manual)
        );
    }

    #[test]
    fn windows_are_half_open() {
        let s = keyed(
            SignalSource::Calendar,
            Availability::Busy,
            Some(10),
            Some(20),
        )
        .signal;
        assert!(!is_active(&s, 9));
        assert!(is_active(&s, 10));
        assert!(is_active(&s, 19));
        assert!(!is_active(&s, 20));
    }

    fn any_signal() -> impl Strategy<Value = KeyedSignal> {
        (
            prop::sample::select(SignalSource::ALL.to_vec()),
            prop::sample::select(Availability::ALL.to_vec()),
            prop::option::of(0i64..1000),
            prop::option::of(0i64..1000),
            0u32..1000,
        )
            .prop_map(|(source, availability, starts, length, id)| KeyedSignal {
                key: format!("k{id}"),
                origin: format!("p{id}"),
                signal: PresenceSignal {
                    user: "u".into(),
                    source,
                    availability,
                    status_text: Some(format!("s{id}")),
                    status_emoji: None,
                    starts,
                    expires: length.map(|l| starts.unwrap_or(0) + l + 1),
                    clears: false,
                    category: None,
                },
            })
    }

    proptest! {
        /// For any signals and any time, the effective state is the first
        /// (newest) active signal of the best rank, or "available" when none holds.
        #[test]
        fn the_effective_state_is_the_best_ranked_active_signal(
            signals in prop::collection::vec(any_signal(), 0..12),
            now in 0i64..2500,
        ) {
            let p = derive("u", &signals, now);
            let active: Vec<&KeyedSignal> = signals.iter().filter(|k| is_active(&k.signal, now)).collect();
            match active.iter().map(|k| rank(&k.signal)).min() {
                None => {
                    prop_assert_eq!(p.source, None);
                    prop_assert_eq!(p.availability, Availability::Available);
                }
                Some(best) => {
                    let first = active.iter().find(|k| rank(&k.signal) == best).unwrap();
                    prop_assert_eq!(p.source, Some(first.signal.source));
                    prop_assert_eq!(&p.status_text, &first.signal.status_text);
                    prop_assert_eq!(p.availability, first.signal.availability);
                    prop_assert_eq!(p.until, first.signal.expires);
                    // No active signal outranks the winner.
                    prop_assert!(active.iter().all(|k| rank(&k.signal) >= best));
                }
            }
        }

        /// Removing every call signal yields exactly the state derived from the rest:
        /// a call leaves nothing behind when it ends.
        #[test]
        fn removing_the_call_restores_the_state_without_it(
            signals in prop::collection::vec(any_signal(), 0..12),
            now in 0i64..2500,
        ) {
            let without: Vec<KeyedSignal> = signals.iter()
                .filter(|k| k.signal.source != SignalSource::Call).cloned().collect();
            let mut with_call = without.clone();
            with_call.insert(0, KeyedSignal {
                key: "call".into(),
                origin: "zoom".into(),
                signal: PresenceSignal {
                    user: "u".into(),
                    source: SignalSource::Call,
                    availability: Availability::InCall,
                    status_text: None,
                    status_emoji: None,
                    starts: None,
                    expires: None,
                    clears: false,
                    category: None,
                },
            });
            let after: Vec<KeyedSignal> = with_call.into_iter()
                .filter(|k| k.signal.source != SignalSource::Call).collect();
            prop_assert_eq!(derive("u", &after, now), derive("u", &without, now));
        }

        /// Nothing changes between now and the computed next change.
        #[test]
        fn the_state_holds_until_the_next_change(
            signals in prop::collection::vec(any_signal(), 0..12),
            now in 0i64..2500,
        ) {
            let here = derive("u", &signals, now);
            let end = next_change(&signals, now).unwrap_or(now + 3000);
            for t in [now + 1, (now + end) / 2, end - 1] {
                if t > now && t < end {
                    prop_assert_eq!(&derive("u", &signals, t), &here);
                }
            }
        }
    }
}
