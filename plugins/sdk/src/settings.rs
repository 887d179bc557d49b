//! Reading a plugin's `[config]` settings (the manifest's, overridden by the
//! operator's `[plugins.<name>.config]`) the same way in every plugin.

/// The setting `key` through `get` (the `config` import, or a map in tests),
/// trimmed; an empty value is unset.
pub fn setting(get: &impl Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The `api_base` setting, or `default`, without a trailing slash, so paths
/// can be appended with one.
pub fn api_base(get: &impl Fn(&str) -> Option<String>, default: &str) -> String {
    setting(get, "api_base")
        .unwrap_or_else(|| default.to_string())
        .trim_end_matches('/')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_settings_are_unset_and_api_bases_lose_their_trailing_slash() {
        let get = |k: &str| match k {
            "from" => Some("  Presence <a@b.example> ".to_string()),
            "blank" => Some("   ".to_string()),
            "api_base" => Some("http://127.0.0.1:9/".to_string()),
            _ => None,
        };
        assert_eq!(
            setting(&get, "from").as_deref(),
            Some("Presence <a@b.example>")
        );
        assert_eq!(setting(&get, "blank"), None);
        assert_eq!(setting(&get, "missing"), None);
        assert_eq!(api_base(&get, "https://x.example"), "http://127.0.0.1:9");
        assert_eq!(
            api_base(&|_: &str| None, "https://x.example/"),
            "https://x.example"
        );
    }
}
