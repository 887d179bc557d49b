//! Notifications through Twilio's Messages API: `POST
//! {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded `To`,
//! `From` (or `MessagingServiceSid`) and `Body`, with HTTP Basic authentication the
//! host adds (the manifest's `basic_secrets`: the plugin names the secret, never
//! holds it).
//!
//! The recipient is an E.164 number (`+15551234567`) for SMS, or a WhatsApp
//! address (`whatsapp:+15551234567`), which must be sent from the configured
//! WhatsApp sender. The receipt carries the created Message's `sid`.

use presence_sdk::provider::http;
use presence_sdk::provider::{DeliveryReceipt, Notification, PluginError};
use presence_sdk::settings::{api_base, setting};
use presence_sdk::upstream::{Credential, accepted, request_failure, upstream_status};

use crate::form;

const DEFAULT_API_BASE: &str = "https://api.twilio.com";
const DEFAULT_API_SECRET: &str = "twilio.api-key-secret";
const WHATSAPP: &str = "whatsapp:";

/// The plugin's `[config]`, as the Messages API needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagesConfig {
    pub api_base: String,
    pub account_sid: String,
    /// The secret the host sends as the Basic auth password.
    pub api_secret: String,
    pub from_number: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub whatsapp_from: Option<String>,
}

impl MessagesConfig {
    /// Reads the settings through `get` (the `config` import); an empty value is unset.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Self, PluginError> {
        let value = |key: &str| setting(&get, key);
        let account_sid = value("account_sid").ok_or_else(|| {
            PluginError::Internal(
                "config account_sid is not set: set plugins.twilio.config.account_sid to the Account SID (AC...)".into(),
            )
        })?;
        // It becomes a path segment: letters and digits only, as Twilio's SIDs are.
        if !account_sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(PluginError::Internal(format!(
                "config account_sid {account_sid:?} is not a Twilio SID (AC followed by 32 hex digits)"
            )));
        }
        Ok(Self {
            api_base: api_base(&get, DEFAULT_API_BASE),
            account_sid,
            api_secret: value("api_secret").unwrap_or_else(|| DEFAULT_API_SECRET.to_string()),
            from_number: value("from_number"),
            messaging_service_sid: value("messaging_service_sid"),
            whatsapp_from: value("whatsapp_from"),
        })
    }

    pub fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.api_base, self.account_sid
        )
    }
}

/// `+` and 1 to 15 digits, the first not 0 (ITU-T E.164).
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (1..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// The sender parameter for `recipient`: the WhatsApp sender for a WhatsApp
/// address; for SMS the configured number, else the Messaging Service.
fn sender(config: &MessagesConfig, recipient: &str) -> Result<(&'static str, String), PluginError> {
    if recipient.starts_with(WHATSAPP) {
        let from = config.whatsapp_from.as_deref().ok_or_else(|| {
            PluginError::Internal(
                "cannot send to a WhatsApp address: set plugins.twilio.config.whatsapp_from to the WhatsApp sender (whatsapp:+...)".into(),
            )
        })?;
        let from = if from.starts_with(WHATSAPP) {
            from.to_string()
        } else {
            format!("{WHATSAPP}{from}")
        };
        return Ok(("From", from));
    }
    match (&config.from_number, &config.messaging_service_sid) {
        (Some(number), _) => Ok(("From", number.clone())),
        (None, Some(service)) => Ok(("MessagingServiceSid", service.clone())),
        (None, None) => Err(PluginError::Internal(
            "no SMS sender: set plugins.twilio.config.from_number or messaging_service_sid".into(),
        )),
    }
}

/// The Messages API parameters for one notification. SMS has no subject: it
/// becomes the first line.
pub fn message_form(
    config: &MessagesConfig,
    message: &Notification,
) -> Result<Vec<(&'static str, String)>, PluginError> {
    let recipient = message.recipient.trim();
    if !is_e164(recipient.strip_prefix(WHATSAPP).unwrap_or(recipient)) {
        return Err(PluginError::InvalidInput(format!(
            "recipient {recipient:?} is neither an E.164 number (+15551234567) nor a WhatsApp address (whatsapp:+15551234567)"
        )));
    }
    let body = match message.subject.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(subject) => format!("{subject}\n{}", message.body),
        None => message.body.clone(),
    };
    Ok(vec![
        ("To", recipient.to_string()),
        sender(config, recipient)?,
        ("Body", body),
    ])
}

/// Twilio's error answer: `{"code", "message", "more_info", "status"}`.
#[derive(serde::Deserialize)]
struct TwilioError {
    code: Option<u32>,
    message: Option<String>,
    more_info: Option<String>,
}

/// What the Messages API's answer means: the receipt, or why not.
pub fn receipt_of(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<DeliveryReceipt, PluginError> {
    if (200..300).contains(&status) {
        return accepted("Twilio", body, "sid");
    }
    let detail = match serde_json::from_slice::<TwilioError>(body) {
        Ok(e) => format!(
            "Twilio error {}: {}{}",
            e.code.map_or_else(|| "?".to_string(), |c| c.to_string()),
            e.message.unwrap_or_default(),
            e.more_info.map(|m| format!(" ({m})")).unwrap_or_default()
        ),
        Err(_) => format!("Twilio answered {status}"),
    };
    if status == 401 {
        return Err(PluginError::Unauthorized(format!(
            "{detail}; check the API key SID in the config and its secret (the manifest's basic_secrets)"
        )));
    }
    Err(upstream_status(detail, status, headers))
}

/// Sends one notification as an SMS or WhatsApp message.
pub fn send(message: &Notification) -> Result<DeliveryReceipt, PluginError> {
    let config = MessagesConfig::read(presence_sdk::provider::config::get)?;
    let fields = message_form(&config, message)?;
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = http::send(&http::Request {
        method: "POST".into(),
        url: config.messages_url(),
        headers: vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("accept".into(), "application/json".into()),
        ],
        body: form::encode(&pairs).into_bytes(),
        connection: None,
        bearer_secret: Some(config.api_secret.clone()),
    })
    .map_err(|e| request_failure("Twilio Messages API", e, Credential::Secret))?;
    receipt_of(response.status, &response.headers, &response.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_sdk::provider::{UpstreamFailure, Urgency};

    fn config(pairs: &[(&str, &str)]) -> Result<MessagesConfig, PluginError> {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        MessagesConfig::read(|k| map.get(k).cloned())
    }

    fn notification(recipient: &str, subject: Option<&str>) -> Notification {
        Notification {
            id: "n1".into(),
            recipient: recipient.into(),
            subject: subject.map(str::to_string),
            body: "The florist is at the gate".into(),
            urgency: Urgency::High,
        }
    }

    /// Twilio's "Message resource" docs: the create URL, with the account SID in the path.
    #[test]
    fn config_defaults_and_the_messages_url() {
        let c = config(&[("account_sid", "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX")]).unwrap();
        assert_eq!(
            c.messages_url(),
            "https://api.twilio.com/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Messages.json"
        );
        assert_eq!(c.api_secret, "twilio.api-key-secret");
        let local = config(&[("account_sid", "AC1"), ("api_base", "http://127.0.0.1:9/")]).unwrap();
        assert_eq!(
            local.messages_url(),
            "http://127.0.0.1:9/2010-04-01/Accounts/AC1/Messages.json"
        );
        assert!(matches!(config(&[]), Err(PluginError::Internal(m)) if m.contains("account_sid")));
        assert!(config(&[("account_sid", "AC1/../x")]).is_err());
    }

    #[test]
    fn sms_goes_from_the_number_else_the_messaging_service() {
        let c = config(&[("account_sid", "AC1"), ("from_number", "+15017122661")]).unwrap();
        assert_eq!(
            message_form(&c, &notification("+15551234567", None)).unwrap(),
            vec![
                ("To", "+15551234567".to_string()),
                ("From", "+15017122661".to_string()),
                ("Body", "The florist is at the gate".to_string()),
            ]
        );
        let c = config(&[("account_sid", "AC1"), ("messaging_service_sid", "MG1")]).unwrap();
        let form = message_form(&c, &notification("+15551234567", Some("Smith wedding"))).unwrap();
        assert_eq!(form[1], ("MessagingServiceSid", "MG1".to_string()));
        assert_eq!(form[2].1, "Smith wedding\nThe florist is at the gate");
        let none = config(&[("account_sid", "AC1")]).unwrap();
        assert!(matches!(
            message_form(&none, &notification("+15551234567", None)),
            Err(PluginError::Internal(_))
        ));
    }

    /// WhatsApp addresses as Twilio's WhatsApp docs write them: `whatsapp:` + E.164.
    #[test]
    fn whatsapp_goes_from_the_whatsapp_sender() {
        let c = config(&[
            ("account_sid", "AC1"),
            ("from_number", "+15017122661"),
            ("whatsapp_from", "+14155238886"),
        ])
        .unwrap();
        let form = message_form(&c, &notification("whatsapp:+15551234567", None)).unwrap();
        assert_eq!(form[0], ("To", "whatsapp:+15551234567".to_string()));
        assert_eq!(form[1], ("From", "whatsapp:+14155238886".to_string()));
        let no_sender = config(&[("account_sid", "AC1"), ("from_number", "+15017122661")]).unwrap();
        assert!(matches!(
            message_form(&no_sender, &notification("whatsapp:+15551234567", None)),
            Err(PluginError::Internal(m)) if m.contains("whatsapp_from")
        ));
    }

    #[test]
    fn recipients_must_be_e164_or_whatsapp() {
        let c = config(&[("account_sid", "AC1"), ("from_number", "+15017122661")]).unwrap();
        for bad in [
            "bea@example.com",
            "5551234567",
            "+0123",
            "+1234567890123456",
            "whatsapp:bea",
            "sms:+1555",
        ] {
            assert!(
                matches!(
                    message_form(&c, &notification(bad, None)),
                    Err(PluginError::InvalidInput(_))
                ),
                "{bad}"
            );
        }
    }

    /// Answers shaped as Twilio's docs show them: a 201 Message resource; errors as
    /// `{"code","message","more_info","status"}` (20003 Authenticate, 20429 Too Many
    /// Requests with Retry-After, 21211 Invalid 'To' Phone Number).
    #[test]
    fn answers_map_to_receipts_and_plugin_errors() {
        let created = br#"{"sid":"SM1f0e8ae6ade43cb3c0ce4525424e404f","status":"queued"}"#;
        assert_eq!(
            receipt_of(201, &[], created)
                .unwrap()
                .provider_message_id
                .as_deref(),
            Some("SM1f0e8ae6ade43cb3c0ce4525424e404f")
        );
        let auth = br#"{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}"#;
        assert!(
            matches!(receipt_of(401, &[], auth), Err(PluginError::Unauthorized(m)) if m.contains("20003"))
        );
        let throttled = br#"{"code":20429,"message":"Too Many Requests","more_info":"https://www.twilio.com/docs/errors/20429","status":429}"#;
        let headers = vec![("Retry-After".to_string(), "3".to_string())];
        assert_eq!(
            receipt_of(429, &headers, throttled),
            Err(PluginError::Upstream(UpstreamFailure {
                message: "Twilio error 20429: Too Many Requests (https://www.twilio.com/docs/errors/20429)".into(),
                status: Some(429),
                retry_after_ms: Some(3000),
            }))
        );
        let invalid = br#"{"code":21211,"message":"Invalid 'To' Phone Number","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#;
        assert!(matches!(
            receipt_of(400, &[], invalid),
            Err(PluginError::Upstream(UpstreamFailure { status: Some(400), retry_after_ms: None, ref message })) if message.contains("21211")
        ));
        assert!(matches!(
            receipt_of(503, &[], b"<html>"),
            Err(PluginError::Upstream(UpstreamFailure {
                status: Some(503),
                ..
            }))
        ));
        // Created without a sid: delivered all the same, never sent again.
        assert_eq!(
            receipt_of(201, &[], b"{}").unwrap().provider_message_id,
            None
        );
    }
}
