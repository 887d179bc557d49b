//! Text helpers for rules, status lines and messages.

/// `s` cut to at most `max` characters (Unicode scalar values), never inside one.
/// Slack counts status text in characters and caps it at 100.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_string(),
        None => s.to_string(),
    }
}

/// `text` cut to at most `max` characters (Unicode scalar values, as Slack counts
/// its status text and its messages), ending in "…" when cut, and never inside an emoji: a cut that would part
/// a ZWJ sequence (👩‍👩‍👧), a flag's two regional indicators, a skin tone or a
/// variation selector from its emoji moves back to before the whole emoji.
pub fn truncate_with_ellipsis(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return text.to_string();
    }
    if max == 0 {
        return String::new();
    }
    // Room for the ellipsis.
    cut_before(&chars, max - 1)
}

/// At most the first `end` of `chars` (fewer when the cut would part an
/// emoji: back to a boundary between two emoji or letters), then "…".
/// `end` is less than `chars.len()`.
fn cut_before(chars: &[char], mut end: usize) -> String {
    while end > 0 && !is_boundary(chars, end) {
        end -= 1;
    }
    let kept: String = chars[..end].iter().collect();
    format!("{}…", kept.trim_end())
}

/// `text` cut to at most `max_bytes` bytes of UTF-8, ending in "…" when cut,
/// never inside a character or an emoji (as [`truncate_with_ellipsis`]): for
/// limits counted in bytes, such as a push payload's.
pub fn truncate_bytes_with_ellipsis(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    const ELLIPSIS_BYTES: usize = '…'.len_utf8();
    let Some(room) = max_bytes.checked_sub(ELLIPSIS_BYTES) else {
        return String::new();
    };
    // The characters that fit beside the ellipsis (fewer than all: the text
    // is longer than the limit), then the same cut as by characters.
    let fitting = text
        .char_indices()
        .take_while(|(at, c)| at + c.len_utf8() <= room)
        .count();
    let chars: Vec<char> = text.chars().collect();
    cut_before(&chars, fitting)
}

/// Whether a cut between `chars[at - 1]` and `chars[at]` keeps every emoji whole:
/// the emoji rules of Unicode's grapheme clusters (UAX #29, GB9, GB11, GB12/13).
fn is_boundary(chars: &[char], at: usize) -> bool {
    let (before, after) = (chars[at - 1], chars[at]);
    if is_extender(after) || before == ZWJ {
        return false;
    }
    if is_regional_indicator(before) && is_regional_indicator(after) {
        // Flags are pairs: a cut is allowed only after an even run of indicators.
        let run = chars[..at]
            .iter()
            .rev()
            .take_while(|&&c| is_regional_indicator(c))
            .count();
        return run % 2 == 0;
    }
    true
}

const ZWJ: char = '\u{200D}';

/// Code points that belong to the character before them (GB9: Extend and ZWJ).
fn is_extender(c: char) -> bool {
    matches!(c,
        '\u{200D}'                      // zero-width joiner
        | '\u{0300}'..='\u{036F}'       // combining diacritical marks
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'       // combining marks for symbols, incl. the keycap U+20E3
        | '\u{FE00}'..='\u{FE0F}'       // variation selectors
        | '\u{FE20}'..='\u{FE2F}'
        | '\u{1F3FB}'..='\u{1F3FF}'     // skin tones
        | '\u{E0020}'..='\u{E007F}'     // tags (subdivision flags)
        | '\u{E0100}'..='\u{E01EF}')
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
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

    // Slack: status_text "allows up to 100 characters" (users.profile.set).
    #[test]
    fn long_text_is_cut_to_the_limit_with_an_ellipsis() {
        assert_eq!(truncate_with_ellipsis("short", 100), "short");
        let exact = "x".repeat(100);
        assert_eq!(truncate_with_ellipsis(&exact, 100), exact);
        let cut = truncate_with_ellipsis(&"é".repeat(150), 100);
        assert_eq!(cut.chars().count(), 100);
        assert!(cut.ends_with("é…"));
        assert_eq!(
            truncate_with_ellipsis("Ceremony prep - Old Barn", 16),
            "Ceremony prep -…"
        );
        assert_eq!(truncate_with_ellipsis("Vendor coordination", 8), "Vendor…");
    }

    #[test]
    fn byte_limits_cut_whole_characters() {
        assert_eq!(truncate_bytes_with_ellipsis("short", 5), "short");
        assert_eq!(truncate_bytes_with_ellipsis("abcdef", 5), "ab…");
        // "é" is two bytes: 2 + 2 + 3 (the ellipsis) fits 7, a third does not.
        assert_eq!(truncate_bytes_with_ellipsis("ééééé", 7), "éé…");
        assert_eq!(truncate_bytes_with_ellipsis("ééééé", 8), "éé…");
        assert_eq!(truncate_bytes_with_ellipsis("ééééé", 2), "");
        let long = "📸 Ceremony prep ".repeat(500);
        let cut = truncate_bytes_with_ellipsis(&long, 4000);
        assert!(cut.len() <= 4000 && cut.ends_with('…'), "{}", cut.len());
        let family = "👩\u{200D}👩\u{200D}👧";
        assert_eq!(
            truncate_bytes_with_ellipsis(&format!("ab{family}cd"), 12),
            "ab…"
        );
    }

    #[test]
    fn a_byte_cut_stays_within_the_limit_when_all_but_the_last_character_fit() {
        // Found by the SDK's fuzz target: 19 bytes to 18, where the first four
        // characters (15 bytes) fit beside the ellipsis and the last does not.
        let text = "𐚈𐚈𐚈ჸ𐚈";
        let cut = truncate_bytes_with_ellipsis(text, 18);
        assert_eq!(cut, "𐚈𐚈𐚈ჸ…");
        assert!(cut.len() <= 18);
    }

    #[test]
    fn cuts_never_split_an_emoji() {
        let family = "👩\u{200D}👩\u{200D}👧"; // five code points, one emoji
        let text = format!("ab{family}cd");
        // A cut at 3, 4, 5 or 6 characters would land inside the family.
        for max in 4..=7 {
            let cut = truncate_with_ellipsis(&text, max);
            assert_eq!(cut, "ab…", "max {max}");
        }
        assert_eq!(truncate_with_ellipsis(&text, 8), format!("ab{family}…"));

        let flags = "🇬🇧🇫🇷🇮🇹"; // three flags, six regional indicators
        assert_eq!(truncate_with_ellipsis(flags, 5), "🇬🇧🇫🇷…");
        assert_eq!(truncate_with_ellipsis(flags, 4), "🇬🇧…");

        let thumbs = "👍🏽👍🏽"; // base plus skin tone, twice
        assert_eq!(truncate_with_ellipsis(thumbs, 3), "👍🏽…");
        assert_eq!(truncate_with_ellipsis(thumbs, 2), "…");

        let keycap = "1\u{FE0F}\u{20E3}23";
        assert_eq!(truncate_with_ellipsis(keycap, 3), "…");
        assert_eq!(truncate_with_ellipsis(keycap, 4), "1\u{FE0F}\u{20E3}…");
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
