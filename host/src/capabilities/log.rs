//! `wedsync:presence/log`: plugin log lines, as tracing events in the call's span.

/// Longest message kept; longer ones are cut on a character boundary.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

pub fn write(plugin: &str, tenant: &str, level: Level, message: &str) {
    let message = truncate(message, MAX_MESSAGE_BYTES);
    match level {
        Level::Trace => tracing::trace!(target: "plugin", plugin, tenant, "{message}"),
        Level::Debug => tracing::debug!(target: "plugin", plugin, tenant, "{message}"),
        Level::Info => tracing::info!(target: "plugin", plugin, tenant, "{message}"),
        Level::Warn => tracing::warn!(target: "plugin", plugin, tenant, "{message}"),
        Level::Error => tracing::error!(target: "plugin", plugin, tenant, "{message}"),
    }
}

/// `s` cut to at most `max` bytes without splitting a character.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("héllo", 3), "hé");
        assert_eq!(super::truncate("📸x", 3), "");
        assert_eq!(super::truncate("abc", 10), "abc");
    }
}
