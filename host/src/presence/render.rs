//! What a presence looks like as a status line on a provider: default texts per
//! availability (the seed's wording, overridable per tenant), the until-time in
//! the person's own time zone ("busy until 16:00"), and providers' length limits.

use std::collections::BTreeMap;

use chrono::TimeZone;
use serde::{Deserialize, Serialize};

use crate::model::{Availability, Instant, Presence, SignalSource};

/// The longest status line pushed (Slack's `status_text` limit, the tightest of
/// the providers we push to).
pub const MAX_STATUS_CHARS: usize = 100;

/// A status line and its emoji.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusText {
    /// The status line ("📸 Ceremony prep").
    pub text: String,
    /// Its emoji as a short code (`:camera:`).
    pub emoji: String,
}

/// The default line for an availability, from the seed where it gives one.
pub fn default_text(availability: Availability) -> StatusText {
    let (emoji, text) = match availability {
        Availability::Available => (":green_heart:", "Available for wedding coordination"),
        Availability::Busy => (":wedding:", "In wedding meeting"),
        Availability::Away => (
            ":camera:",
            "At wedding venue - available for urgent coordination",
        ),
        Availability::InCall => (":telephone_receiver:", "On a call"),
        Availability::DoNotDisturb => (":no_bell:", "Do not disturb"),
        Availability::OutOfOffice => (":palm_tree:", "Out of office"),
        Availability::Offline => (":zzz:", "Offline"),
    };
    StatusText {
        text: text.into(),
        emoji: emoji.into(),
    }
}

/// The presence to push: texts filled in and rendered for the person.
///
/// - No active signal: an empty status, so whatever the person had before an
///   automatic status is what remains (nothing).
/// - The person's own provider status: exactly as they set it.
/// - Otherwise: the deciding signal's own text (a classified event's "📸
///   Ceremony prep - Old Barn"), else the tenant's text for the availability,
///   else the default; with "until HH:MM" in `time_zone` when it ends.
pub fn render(
    presence: &Presence,
    texts: &BTreeMap<String, StatusText>,
    time_zone: Option<&str>,
    now: Instant,
) -> Presence {
    let mut out = presence.clone();
    match presence.source {
        None => {
            out.status_text = None;
            out.status_emoji = None;
            return out;
        }
        Some(SignalSource::ProviderStatus) => return out,
        Some(_) => {}
    }
    let fallback = texts
        .get(presence.availability.as_str())
        .cloned()
        .unwrap_or_else(|| default_text(presence.availability));
    let mut text = presence
        .status_text
        .clone()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(fallback.text);
    let emoji = presence
        .status_emoji
        .clone()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or(fallback.emoji);
    if let Some(until) = presence.until
        && !text.contains(" until ")
    {
        text = format!("{text} until {}", local_time(until, time_zone, now));
    }
    out.status_text = Some(truncate(&text, MAX_STATUS_CHARS));
    out.status_emoji = Some(emoji);
    out
}

/// `16:00` when `at` falls on today (in the zone), else `Sat 16:00`, else `12 Jun 16:00`.
pub fn local_time(at: Instant, time_zone: Option<&str>, now: Instant) -> String {
    let tz: chrono_tz::Tz = time_zone
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC);
    let (Some(at), Some(now)) = (
        tz.timestamp_millis_opt(at).single(),
        tz.timestamp_millis_opt(now).single(),
    ) else {
        return String::new();
    };
    let days = (at.date_naive() - now.date_naive()).num_days();
    if days == 0 {
        at.format("%H:%M").to_string()
    } else if (1..7).contains(&days) {
        at.format("%a %H:%M").to_string()
    } else {
        at.format("%-d %b %H:%M").to_string()
    }
}

/// At most `max` characters, ending in an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(source: Option<SignalSource>, availability: Availability) -> Presence {
        Presence {
            user: "u".into(),
            availability,
            status_text: None,
            status_emoji: None,
            until: None,
            category: None,
            source,
            origin: None,
        }
    }

    // 2026-06-13T14:00:00Z, a Saturday: 15:00 in Lisbon (WEST), 10:00 in New York (EDT).
    const JUNE_13_1400Z: i64 = 1_781_359_200_000;

    #[test]
    fn until_is_rendered_in_the_persons_own_zone() {
        let mut p = presence(Some(SignalSource::Calendar), Availability::Busy);
        p.until = Some(JUNE_13_1400Z + 3_600_000);
        let lisbon = render(&p, &BTreeMap::new(), Some("Europe/Lisbon"), JUNE_13_1400Z);
        assert_eq!(
            lisbon.status_text.as_deref(),
            Some("In wedding meeting until 16:00")
        );
        assert_eq!(lisbon.status_emoji.as_deref(), Some(":wedding:"));
        let ny = render(
            &p,
            &BTreeMap::new(),
            Some("America/New_York"),
            JUNE_13_1400Z,
        );
        assert_eq!(
            ny.status_text.as_deref(),
            Some("In wedding meeting until 11:00")
        );
        assert_eq!(
            local_time(
                JUNE_13_1400Z + 86_400_000,
                Some("Europe/Lisbon"),
                JUNE_13_1400Z
            ),
            "Sun 15:00"
        );
    }

    #[test]
    fn a_classified_text_wins_and_tenant_texts_replace_defaults() {
        let mut p = presence(Some(SignalSource::Calendar), Availability::Busy);
        p.status_text = Some("📸 Ceremony prep - Old Barn".into());
        let r = render(&p, &BTreeMap::new(), None, 0);
        assert_eq!(
            r.status_text.as_deref(),
            Some("📸 Ceremony prep - Old Barn")
        );
        let texts = BTreeMap::from([(
            "away".to_string(),
            StatusText {
                text: "On site".into(),
                emoji: ":round_pushpin:".into(),
            },
        )]);
        let r = render(
            &presence(Some(SignalSource::Manual), Availability::Away),
            &texts,
            None,
            0,
        );
        assert_eq!(
            (r.status_text.as_deref(), r.status_emoji.as_deref()),
            (Some("On site"), Some(":round_pushpin:"))
        );
    }

    #[test]
    fn nothing_active_clears_and_the_persons_own_status_is_untouched() {
        let r = render(
            &presence(None, Availability::Available),
            &BTreeMap::new(),
            None,
            0,
        );
        assert_eq!((r.status_text, r.status_emoji), (None, None));
        let mut own = presence(Some(SignalSource::ProviderStatus), Availability::Available);
        own.status_text = Some("Editing photos".into());
        own.until = Some(10_000);
        assert_eq!(render(&own, &BTreeMap::new(), None, 0), own);
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let long = "💐".repeat(150);
        let cut = truncate(&long, MAX_STATUS_CHARS);
        assert_eq!(cut.chars().count(), MAX_STATUS_CHARS);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", MAX_STATUS_CHARS), "short");
    }
}
