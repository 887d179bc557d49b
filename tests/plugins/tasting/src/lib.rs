//! An agency's rule in front of the bundled ones: decides menu tastings, passes
//! everything else down the chain. Used to measure a realistic tenant chain.

use presence_sdk::classifier::{
    Availability, CalendarEvent, Category, Classification, Guest, Urgency,
};
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

struct Tasting;

impl Guest for Tasting {
    fn classify(event: CalendarEvent) -> Option<Classification> {
        classify_event(&event)
    }
}

// Exported only in the component: natively this crate is a plain library (tests,
// benchmarks), and two plugins linked into one binary must not export the same symbols.
#[cfg(target_arch = "wasm32")]
presence_sdk::export_classifier!(Tasting);
