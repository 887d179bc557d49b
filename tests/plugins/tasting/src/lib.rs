//! An agency's rule in front of the bundled ones: decides menu tastings, passes
//! everything else down the chain. Used to measure a realistic tenant chain.

use presence_sdk::classifier::{Availability, CalendarEvent, Category, Classification, Urgency};
use presence_sdk::text::{contains_phrase, words};

pub fn classify_event(event: &CalendarEvent) -> Option<Classification> {
    if !contains_phrase(&words(&event.title), "tasting") {
        return None;
    }
    Some(Classification {
        category: Category::Other("tasting".into()),
        status_text: "🍰 Menu tasting".into(),
        status_emoji: ":cake:".into(),
        availability: Availability::Busy,
        urgency: Urgency::Normal,
    })
}

// The component's export. Natively this crate is a plain library (tests,
// benchmarks), and two plugins linked into one binary must not export the same symbols.
#[cfg(target_arch = "wasm32")]
mod component {
    use super::*;
    use presence_sdk::classifier::Guest;

    struct Tasting;

    impl Guest for Tasting {
        fn classify(event: CalendarEvent) -> Option<Classification> {
            classify_event(&event)
        }
    }

    presence_sdk::export_classifier!(Tasting);
}
