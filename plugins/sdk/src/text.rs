//! Text helpers for rules and status lines.

/// `s` cut to at most `max` characters (Unicode scalar values), never inside one.
/// Slack counts status text in characters and caps it at 100.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_string(),
        None => s.to_string(),
    }
}

/// Lower-cased words of `s`: runs of letters, digits and apostrophes.
pub fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether the phrase (one or more words) occurs in `words` as whole words; each
/// word of the text may carry a plural "s" or "es" the phrase does not.
pub fn contains_phrase(words: &[String], phrase: &str) -> bool {
    let wanted: Vec<String> = self::words(phrase);
    if wanted.is_empty() || wanted.len() > words.len() {
        return false;
    }
    words
        .windows(wanted.len())
        .any(|window| window.iter().zip(&wanted).all(|(w, p)| word_matches(w, p)))
}

fn word_matches(word: &str, wanted: &str) -> bool {
    word == wanted
        || word.strip_suffix('s').is_some_and(|w| w == wanted)
        || word.strip_suffix("es").is_some_and(|w| w == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters_and_keeps_emoji_whole() {
        assert_eq!(truncate_chars("📸 Ceremony", 1), "📸");
        assert_eq!(truncate_chars("📸 Ceremony", 3), "📸 C");
        assert_eq!(truncate_chars("short", 100), "short");
        let long = "é".repeat(150);
        assert_eq!(truncate_chars(&long, 100).chars().count(), 100);
    }

    #[test]
    fn phrases_match_whole_words_with_plurals() {
        let w = words("Venue walkthrough with the couple, Site-Visit & setups");
        assert!(contains_phrase(&w, "walkthrough"));
        assert!(contains_phrase(&w, "site visit"));
        assert!(contains_phrase(&w, "setup"));
        assert!(contains_phrase(&w, "couple"));
        assert!(!contains_phrase(&w, "walk"));
        assert!(!contains_phrase(&words("photoshoot"), "shoot"));
        assert!(!contains_phrase(&words("relocation"), "location"));
        assert!(contains_phrase(&words("Locations"), "location"));
        assert!(contains_phrase(&words("the BRIDE's dress"), "bride's"));
    }
}
