//! `wedsync:presence/log`: plugin log lines, as tracing events in the call's span.

/// Longest message kept; longer ones are cut on a character boundary.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// Lines one call may log; the rest are dropped, and the drop is logged once,
/// so a plugin cannot flood the host's log (or its disk).
pub const MAX_LINES_PER_CALL: u32 = 100;

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes the `line`-th line (counting from 1) of a call's log, or notes once
/// that the call logged too much.
pub fn write(plugin: &str, tenant: &str, line: u32, level: Level, message: &str) {
    if line > MAX_LINES_PER_CALL {
        if line == MAX_LINES_PER_CALL + 1 {
            tracing::warn!(target: "plugin", plugin, tenant, "the plugin logged more than {MAX_LINES_PER_CALL} lines in one call; the rest of this call's lines are dropped");
        }
        return;
    }
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
