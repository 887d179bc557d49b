//! Emoji as Slack takes them: short codes for the status emoji.
//!
//! Slack's `status_emoji` is "a string referencing an emoji enabled for the
//! Slack team, such as `:mountain_railway:`" (users.profile.set, "Updating a
//! user's current status"): a short code, never the Unicode character. A
//! presence may carry either (a classifier's `status-emoji` is "a Unicode emoji
//! or a provider short code"), so a Unicode emoji is mapped to Slack's short code
//! for it when we know it, and dropped otherwise: a status without its emoji
//! (Slack then shows its default, :speech_balloon:) is better than a refused one.
//! The names are those of the emoji set Slack's short codes come from
//! (iamcal/emoji-data, e.g. U+1F4F8 `camera_with_flash`); the table holds the
//! emoji a wedding vendor's status uses, and grows when a rule needs another.

/// Unicode emoji (without variation selectors or skin tones) and their Slack short codes.
const SHORT_CODES: &[(&str, &str)] = &[
    ("📸", "camera_with_flash"),
    ("📷", "camera"),
    ("🎥", "movie_camera"),
    ("📹", "video_camera"),
    ("🏰", "european_castle"),
    ("💒", "wedding"),
    ("💑", "couple_with_heart"),
    ("💍", "ring"),
    ("💐", "bouquet"),
    ("🤝", "handshake"),
    ("🥂", "clinking_glasses"),
    ("🍾", "champagne"),
    ("🎂", "birthday"),
    ("🍰", "cake"),
    ("🍽", "knife_fork_plate"),
    ("☕", "coffee"),
    ("🎉", "tada"),
    ("📍", "round_pushpin"),
    ("📅", "date"),
    ("📆", "calendar"),
    ("🗓", "spiral_calendar_pad"),
    ("📝", "memo"),
    ("🌴", "palm_tree"),
    ("🏖", "beach_with_umbrella"),
    ("✈", "airplane"),
    ("🚗", "car"),
    ("🏠", "house"),
    ("🏢", "office"),
    ("💻", "computer"),
    ("📱", "iphone"),
    ("📞", "telephone_receiver"),
    ("🎧", "headphones"),
    ("💬", "speech_balloon"),
    ("🤒", "face_with_thermometer"),
    ("😴", "sleeping"),
    ("⛔", "no_entry"),
    ("🚫", "no_entry_sign"),
    ("🔕", "no_bell"),
    ("✅", "white_check_mark"),
];

/// The status emoji to send Slack: a `:short_code:` or nothing.
///
/// Short codes pass through (a bare `camera` gets its colons; a skin tone such as
/// `:wave::skin-tone-3:` is kept); a Unicode emoji becomes its short code when
/// [`SHORT_CODES`] knows it; anything else is `None`, and the status goes without
/// an emoji.
pub fn short_code(emoji: &str) -> Option<String> {
    let emoji = emoji.trim();
    if emoji.is_empty() {
        return None;
    }
    if is_short_code(emoji) {
        return Some(emoji.to_string());
    }
    if is_name(emoji) {
        return Some(format!(":{emoji}:"));
    }
    let base: String = emoji
        .chars()
        .filter(|&c| !is_presentation_only(c))
        .collect();
    SHORT_CODES
        .iter()
        .find(|(unicode, _)| *unicode == base)
        .map(|(_, name)| format!(":{name}:"))
}

/// `:name:` or `:name::skin-tone-N:`, the forms Slack's emoji picker writes.
pub fn is_short_code(s: &str) -> bool {
    let Some(inner) = s.strip_prefix(':').and_then(|s| s.strip_suffix(':')) else {
        return false;
    };
    match inner.split_once("::") {
        Some((name, tone)) => is_name(name) && is_skin_tone(tone),
        None => is_name(inner),
    }
}

/// Emoji names: lower-case letters, digits, `_` and `-` (custom emoji), and `+` (`:+1:`).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-+".contains(c))
}

fn is_skin_tone(s: &str) -> bool {
    matches!(
        s,
        "skin-tone-2" | "skin-tone-3" | "skin-tone-4" | "skin-tone-5" | "skin-tone-6"
    )
}

/// Code points that change how the emoji before them looks, not which emoji it is:
/// variation selectors (U+FE0E text, U+FE0F emoji style) and the five skin tones.
fn is_presentation_only(c: char) -> bool {
    matches!(c, '\u{FE0E}' | '\u{FE0F}' | '\u{1F3FB}'..='\u{1F3FF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    // Short codes as users.profile.set's docs write them (`:mountain_railway:`).
    #[test]
    fn short_codes_pass_and_unicode_maps_or_drops() {
        assert_eq!(
            short_code(":mountain_railway:").as_deref(),
            Some(":mountain_railway:")
        );
        assert_eq!(
            short_code(":wave::skin-tone-3:").as_deref(),
            Some(":wave::skin-tone-3:")
        );
        assert_eq!(short_code("camera").as_deref(), Some(":camera:"));
        assert_eq!(short_code("📸").as_deref(), Some(":camera_with_flash:"));
        // The emoji-style variation selector does not change which emoji it is.
        assert_eq!(short_code("✈\u{FE0F}").as_deref(), Some(":airplane:"));
        assert_eq!(short_code("🗓️").as_deref(), Some(":spiral_calendar_pad:"));
        assert_eq!(short_code("🤝🏽").as_deref(), Some(":handshake:"));
        assert_eq!(short_code("🦩"), None, "unknown emoji are dropped");
        assert_eq!(short_code("Camera!"), None);
        assert_eq!(short_code(":Camera:"), None, "Slack names are lower-case");
        assert_eq!(short_code("  "), None);
    }

    // The bundled wedding-keywords rules write their status text with an emoji first.
    #[test]
    fn a_wedding_status_keeps_its_leading_emoji() {
        let venue = "Old Barn ".repeat(20);
        let text = format!("📸 Ceremony prep - {venue}");
        let cut = presence_sdk::text::truncate_with_ellipsis(&text, 100);
        assert!(cut.starts_with("📸 Ceremony prep - Old Barn"));
        assert!(cut.chars().count() <= 100);
        assert!(cut.ends_with('…'));
    }
}
