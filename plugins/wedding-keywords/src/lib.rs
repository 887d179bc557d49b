//! The bundled wedding classification rules.
//!
//! An event's title, description and location are searched for each category's
//! keywords, as whole words (a plural "s"/"es" in the text still matches; so
//! "setups" is setup, but "photoshoot" is not "shoot" and is listed on its own).
//!
//! Precedence when several categories match, highest first:
//! **ceremony > venue > client > vendor**. The wedding itself outranks everything;
//! being on site constrains a vendor more than a meeting does; a couple's meeting
//! outranks a supplier call. So "Venue walkthrough with the couple" is *venue*.
//!
//! An event matching no keyword gets no classification: the host still counts its
//! busy time, without a wedding status.

use presence_sdk::classifier::{Availability, CalendarEvent, Category, Classification, Urgency};
use presence_sdk::text::{contains_phrase, truncate_chars, words};

/// Slack's limit on status text, in characters.
pub const MAX_STATUS_CHARS: usize = 100;

/// One category's rule.
struct Rule {
    category: Category,
    keywords: &'static [&'static str],
}

/// In precedence order: the first rule that matches decides.
const RULES: &[Rule] = &[
    Rule {
        category: Category::Ceremony,
        keywords: &[
            "ceremony",
            "rehearsal",
            "wedding day",
            "shoot",
            "photoshoot",
            "photography",
            "photos",
        ],
    },
    Rule {
        category: Category::Venue,
        keywords: &[
            "venue",
            "site visit",
            "walkthrough",
            "setup",
            "venue tour",
            "location",
        ],
    },
    Rule {
        category: Category::Client,
        keywords: &[
            "client",
            "couple",
            "consultation",
            "planning",
            "bride",
            "groom",
        ],
    },
    Rule {
        category: Category::Vendor,
        keywords: &[
            "vendor",
            "caterer",
            "florist",
            "coordinator",
            "supplier",
            "team meeting",
        ],
    },
];

/// The category an event's text falls in, and the keyword that decided it.
pub fn categorize(event: &CalendarEvent) -> Option<(Category, &'static str)> {
    let mut text = event.title.clone();
    for extra in [&event.description, &event.location].into_iter().flatten() {
        text.push(' ');
        text.push_str(extra);
    }
    let words = words(&text);
    RULES.iter().find_map(|rule| {
        rule.keywords
            .iter()
            .find(|k| contains_phrase(&words, k))
            .map(|k| (rule.category.clone(), *k))
    })
}

/// "site visit" -> "Site visit".
fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The consultation's topic: the title without a leading "client"/"consultation" label.
fn topic(title: &str) -> String {
    let mut rest = title.trim();
    loop {
        let lower = rest.to_lowercase();
        let stripped = ["client", "consultation", "couple"]
            .iter()
            .find(|label| {
                lower.starts_with(*label)
                    && !lower[label.len()..].starts_with(char::is_alphanumeric)
            })
            .map(|label| {
                rest[label.len()..].trim_start_matches(|c: char| {
                    c.is_whitespace() || matches!(c, ':' | '-' | '–' | '—' | ',')
                })
            });
        match stripped {
            Some(s) if s.len() < rest.len() => rest = s,
            _ => break,
        }
    }
    if rest.is_empty() {
        "planning".to_string()
    } else {
        rest.to_string()
    }
}

pub fn classify_event(event: &CalendarEvent) -> Option<Classification> {
    let (category, keyword) = categorize(event)?;
    let location = event
        .location
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty());
    let (text, emoji, availability, urgency) = match category {
        Category::Ceremony => (
            match location {
                Some(venue) => format!("📸 Ceremony prep - {venue}"),
                None => "📸 Ceremony prep".to_string(),
            },
            ":camera:",
            Availability::Busy,
            Urgency::High,
        ),
        Category::Venue => (
            "🏰 Venue visit - on-site".to_string(),
            ":european_castle:",
            Availability::Away,
            Urgency::Normal,
        ),
        Category::Client => (
            format!("💑 Client consultation - {}", topic(&event.title)),
            ":couple_with_heart:",
            Availability::Busy,
            Urgency::Normal,
        ),
        Category::Vendor => (
            format!("🤝 Vendor coordination - {}", capitalized(keyword)),
            ":handshake:",
            Availability::Available,
            Urgency::Low,
        ),
        Category::Other(_) => return None,
    };
    Some(Classification {
        category,
        status_text: truncate_chars(&text, MAX_STATUS_CHARS),
        status_emoji: emoji.to_string(),
        availability,
        urgency,
    })
}

// The component's export. Natively this crate is a plain library (tests,
// benchmarks), and two plugins linked into one binary must not export the same symbols.
#[cfg(target_arch = "wasm32")]
mod component {
    use super::*;
    use presence_sdk::classifier::Guest;

    struct WeddingKeywords;

    impl Guest for WeddingKeywords {
        fn classify(event: CalendarEvent) -> Option<Classification> {
            classify_event(&event)
        }
    }

    presence_sdk::export_classifier!(WeddingKeywords);
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_sdk::classifier::Transparency;

    fn event(title: &str, location: Option<&str>) -> CalendarEvent {
        CalendarEvent {
            id: "e1".into(),
            title: title.into(),
            description: None,
            location: location.map(Into::into),
            attendees: vec![],
            start: 0,
            end: 3_600_000,
            time_zone: None,
            all_day: false,
            transparency: Transparency::Opaque,
            online_meeting_url: None,
        }
    }

    fn category(title: &str) -> Option<Category> {
        categorize(&event(title, None)).map(|(c, _)| c)
    }

    #[test]
    fn every_keyword_selects_its_category() {
        for rule in RULES {
            for keyword in rule.keywords {
                assert_eq!(
                    category(&format!("Agenda: {keyword}")),
                    Some(rule.category.clone()),
                    "{keyword}"
                );
                assert_eq!(
                    category(&keyword.to_uppercase()),
                    Some(rule.category.clone()),
                    "{keyword} upper-case"
                );
            }
        }
    }

    #[test]
    fn precedence_when_several_categories_match() {
        let cases = [
            ("Venue walkthrough with the couple", Category::Venue),
            ("Rehearsal at the venue", Category::Ceremony),
            ("Florist consultation with the bride", Category::Client),
            ("Caterer site visit", Category::Venue),
            ("Wedding day timeline with coordinator", Category::Ceremony),
            ("Team meeting: planning", Category::Client),
        ];
        for (title, expected) in cases {
            assert_eq!(category(title), Some(expected), "{title}");
        }
    }

    #[test]
    fn whole_words_only() {
        assert_eq!(category("Relocation paperwork"), None);
        assert_eq!(category("Groomer appointment for the dog"), None);
        assert_eq!(category("Clientele review"), None);
        assert_eq!(category("Dentist"), None);
        assert_eq!(category("Setups for Saturday"), Some(Category::Venue));
        assert_eq!(category("Scout locations"), Some(Category::Venue));
        assert_eq!(category("Engagement photoshoot"), Some(Category::Ceremony));
    }

    #[test]
    fn description_and_location_count_too() {
        let mut e = event("Saturday", Some("Old Barn venue"));
        assert_eq!(categorize(&e).map(|(c, _)| c), Some(Category::Venue));
        e.location = None;
        e.description = Some("Final rehearsal".into());
        assert_eq!(categorize(&e).map(|(c, _)| c), Some(Category::Ceremony));
    }

    #[test]
    fn status_texts_per_category() {
        let c = classify_event(&event("Ceremony", Some("Old Barn"))).unwrap();
        assert_eq!(c.status_text, "📸 Ceremony prep - Old Barn");
        assert_eq!(
            (c.availability, c.urgency),
            (Availability::Busy, Urgency::High)
        );
        assert_eq!(
            classify_event(&event("Ceremony", None))
                .unwrap()
                .status_text,
            "📸 Ceremony prep"
        );
        let c = classify_event(&event("Site visit", None)).unwrap();
        assert_eq!(c.status_text, "🏰 Venue visit - on-site");
        assert_eq!(c.availability, Availability::Away);
        let c = classify_event(&event("Client consultation: Smith & Jones", None)).unwrap();
        assert_eq!(c.status_text, "💑 Client consultation - Smith & Jones");
        assert_eq!(
            classify_event(&event("Consultation", None))
                .unwrap()
                .status_text,
            "💑 Client consultation - planning"
        );
        let c = classify_event(&event("Call with the florist", None)).unwrap();
        assert_eq!(c.status_text, "🤝 Vendor coordination - Florist");
        assert_eq!(
            (c.availability, c.urgency),
            (Availability::Available, Urgency::Low)
        );
        assert!(classify_event(&event("Dentist", None)).is_none());
    }

    #[test]
    fn status_text_fits_slack_without_splitting_characters() {
        let venue = "🏰".repeat(120);
        let c = classify_event(&event("Ceremony", Some(&venue))).unwrap();
        assert_eq!(c.status_text.chars().count(), MAX_STATUS_CHARS);
        assert!(c.status_text.starts_with("📸 Ceremony prep - 🏰"));
        assert!(c.status_text.ends_with('🏰'));
    }
}
