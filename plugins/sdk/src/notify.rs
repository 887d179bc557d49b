//! What every channel plugin's `send-notification` does the same way, whatever
//! the provider: choosing the connection a message goes through, and reading
//! an address that is an opaque provider id (a Slack channel, a device token).

use crate::provider::{Notification, PluginError};

/// The `[config]` key naming the connection a plugin sends notifications
/// through when the recipient's channel names none (an operator-seeded bot or
/// service-account connection, the same for everyone in the tenant).
pub const CONNECTION_CONFIG_KEY: &str = "notification_connection";

/// The connection to send through: the channel's own (`passed`, what the host
/// hands `send-notification`), else the configured default. `None` when neither
/// is set.
pub fn connection(passed: &str, configured: Option<String>) -> Option<String> {
    let passed = passed.trim();
    if !passed.is_empty() {
        return Some(passed.to_string());
    }
    configured
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
}

/// The recipient's address as an opaque provider id: trimmed, not empty, and
/// free of whitespace and control characters (which no provider id holds, and
/// which would let one address smuggle in a second one). `what` names it in the
/// error ("Slack channel", "FCM registration token").
pub fn opaque_address<'a>(message: &'a Notification, what: &str) -> Result<&'a str, PluginError> {
    let address = message.recipient.trim();
    if address.is_empty() {
        return Err(PluginError::InvalidInput(format!(
            "the channel has no address: set it to a {what}"
        )));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PluginError::InvalidInput(format!(
            "{address:?} is not a {what}: it holds whitespace or control characters"
        )));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Urgency;

    fn to(recipient: &str) -> Notification {
        Notification {
            id: "ntf_1".into(),
            recipient: recipient.into(),
            subject: None,
            body: "b".into(),
            urgency: Urgency::Normal,
        }
    }

    #[test]
    fn the_channels_connection_wins_over_the_configured_one() {
        assert_eq!(
            connection("slack-U1", Some("slack-bot".into())).as_deref(),
            Some("slack-U1")
        );
        assert_eq!(
            connection(" ", Some(" slack-bot ".into())).as_deref(),
            Some("slack-bot")
        );
        assert_eq!(connection("", Some("".into())), None);
        assert_eq!(connection("", None), None);
    }

    #[test]
    fn opaque_addresses_are_single_tokens() {
        assert_eq!(
            opaque_address(&to(" C1H9RESGL "), "Slack channel"),
            Ok("C1H9RESGL")
        );
        for bad in ["", "  ", "C1 C2", "tok\nen", "a\u{0}b"] {
            assert!(
                matches!(
                    opaque_address(&to(bad), "Slack channel"),
                    Err(PluginError::InvalidInput(_))
                ),
                "{bad:?}"
            );
        }
    }
}
