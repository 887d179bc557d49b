//! Presence is derived, never overwritten: each source states a signal with a
//! validity window, and the effective presence is the active signal of the
//! highest-precedence source (manual > call > calendar > provider status >
//! working hours). When a higher signal ends, the next one shows through again.

use crate::model::{Availability, Presence, PresenceSignal};

/// Whether `signal` holds at `now`.
pub fn is_active(signal: &PresenceSignal, now: i64) -> bool {
    signal.starts.is_none_or(|s| s <= now) && signal.expires.is_none_or(|e| e > now)
}

/// The effective presence of `user` from `signals` (newest first) at `now`.
pub fn derive(user: &str, signals: &[PresenceSignal], now: i64) -> Presence {
    // min_by_key keeps the first of equals, and the input is newest first,
    // so within one source the latest statement wins.
    let winner = signals
        .iter()
        .filter(|s| is_active(s, now))
        .min_by_key(|s| s.source);
    match winner {
        Some(s) => Presence {
            user: user.to_string(),
            availability: s.availability,
            status_text: s.status_text.clone(),
            status_emoji: s.status_emoji.clone(),
            until: s.expires,
            category: s.category.clone(),
            source: Some(s.source),
        },
        None => Presence {
            user: user.to_string(),
            availability: Availability::Available,
            status_text: None,
            status_emoji: None,
            until: None,
            category: None,
            source: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SignalSource;

    fn signal(
        source: SignalSource,
        availability: Availability,
        starts: Option<i64>,
        expires: Option<i64>,
    ) -> PresenceSignal {
        PresenceSignal {
            user: "u".into(),
            source,
            availability,
            status_text: Some(format!("{source:?}")),
            status_emoji: None,
            starts,
            expires,
            clears: false,
            category: None,
        }
    }

    #[test]
    fn the_highest_active_source_wins_and_the_next_shows_through_when_it_ends() {
        let signals = vec![
            signal(
                SignalSource::Call,
                Availability::InCall,
                Some(100),
                Some(200),
            ),
            signal(
                SignalSource::Calendar,
                Availability::Busy,
                Some(0),
                Some(500),
            ),
            signal(SignalSource::ProviderStatus, Availability::Away, None, None),
        ];
        assert_eq!(
            derive("u", &signals, 150).availability,
            Availability::InCall
        );
        assert_eq!(derive("u", &signals, 250).availability, Availability::Busy);
        assert_eq!(derive("u", &signals, 250).until, Some(500));
        assert_eq!(derive("u", &signals, 600).availability, Availability::Away);
        assert_eq!(derive("u", &signals[..0], 600).source, None);
    }

    #[test]
    fn windows_are_half_open() {
        let s = signal(
            SignalSource::Calendar,
            Availability::Busy,
            Some(10),
            Some(20),
        );
        assert!(!is_active(&s, 9));
        assert!(is_active(&s, 10));
        assert!(is_active(&s, 19));
        assert!(!is_active(&s, 20));
    }
}
