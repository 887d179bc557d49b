//! Resend's Send Email API, as its public documentation describes it.
//!
//! - Send Email (<https://resend.com/docs/api-reference/emails/send-email>):
//!   `POST https://api.resend.com/emails` with JSON `from` (`"Your Name
//!   <sender@domain.com>"` or a bare address), `to` (a string or an array of up
//!   to 50), `subject` (all three required) and `text`; the answer is
//!   `{"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}`.
//! - Introduction (<https://resend.com/docs/api-reference/introduction>):
//!   `Authorization: Bearer re_...`; HTTPS only; a `User-Agent` is required
//!   (the host sends its own); `retry-after` is "how many seconds you should
//!   wait before making a follow-up request" after a 429.
//! - Idempotency Keys (<https://resend.com/docs/dashboard/emails/idempotency-keys>):
//!   the `Idempotency-Key` header, "up to 256 characters", kept 24 hours; the
//!   same key and payload get "the same response, without actually sending the
//!   email again"; `invalid_idempotency_key` (400), `invalid_idempotent_request`
//!   (409: "this idempotency key has already been used on a request that had a
//!   different payload"), `concurrent_idempotent_requests` (409: "safe to retry
//!   this request later").
//! - Errors (<https://resend.com/docs/api-reference/errors>): the body is
//!   `{"statusCode": 422, "name": "missing_required_field", "message": "..."}`
//!   (the shape Resend's own SDKs read, e.g. resend-rust's `ErrorResponse`), with
//!   the names mapped in [`error_of`].
//!
//! Where the docs are silent: no subject length limit is documented (the
//! default subject is kept to one 78-character line, RFC 5322's recommended
//! line length), and whether a request Resend failed with a 5xx keeps its
//! idempotency key is not said (a retry sends the same key either way).

use presence_sdk::provider::http;
use presence_sdk::provider::{DeliveryReceipt, Notification, PluginError, Urgency, config};
use presence_sdk::settings::{api_base, setting};
use presence_sdk::text::truncate_with_ellipsis;
use presence_sdk::upstream::{Credential, accepted, request_failure, says_later, upstream_status};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Where Resend's API is, unless the `api_base` config key says otherwise.
pub const DEFAULT_API_BASE: &str = "https://api.resend.com";
/// The secret holding the API key (`re_...`), sent by the host as the bearer token.
pub const API_KEY_SECRET: &str = "email.api-key";
/// Resend's longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
/// The subject made from the body's first line is cut to this many characters.
pub const DEFAULT_SUBJECT_CHARS: usize = 78;
/// The subject of a notification with neither subject nor text.
pub const FALLBACK_SUBJECT: &str = "Notification";
/// What a critical notification's subject starts with.
pub const URGENT_PREFIX: &str = "[Urgent] ";

/// The plugin's `[config]`, as Resend needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendConfig {
    /// Without a trailing slash.
    pub api_base: String,
    /// The sender; `None` until the operator sets `from`.
    pub from: Option<String>,
}

impl ResendConfig {
    /// Reads the settings through `get` (the `config` import); an empty value is
    /// unset. A missing `from` is reported when a mail is sent, not here, so a
    /// plugin the operator has not configured yet still loads.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            api_base: api_base(&get, DEFAULT_API_BASE),
            from: setting(&get, "from"),
        }
    }

    /// The sender, or what the operator must set.
    pub fn sender(&self) -> Result<&str, PluginError> {
        self.from.as_deref().ok_or_else(|| {
            PluginError::Internal(
                "no sender: set plugins.email.config.from to an address of a domain verified in Resend, e.g. \"Presence <alerts@example.com>\"".into(),
            )
        })
    }

    pub fn emails_url(&self) -> String {
        format!("{}/emails", self.api_base)
    }
}

/// The channel's address as a bare e-mail address (`bea@example.com`): one `@`,
/// a local part and a dotted domain, no whitespace, control characters or the
/// punctuation that would make it a list or a display name (`, ; < > " ( ) [ ] \`).
/// Stricter than RFC 5321, which allows quoted local parts: a channel address is
/// one mailbox, written plainly.
pub fn recipient(message: &Notification) -> Result<&str, PluginError> {
    let address = message.recipient.trim();
    let refused = || {
        PluginError::InvalidInput(format!(
            "recipient {address:?} is not an e-mail address (bea@example.com)"
        ))
    };
    if address.len() > 254
        || address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ",;<>\"()[]\\".contains(c))
    {
        return Err(refused());
    }
    let (local, domain) = address.split_once('@').ok_or_else(refused)?;
    let domain_ok = domain.contains('.')
        && !domain.contains('@')
        && domain.split('.').all(|label| !label.is_empty());
    if local.is_empty() || !domain_ok {
        return Err(refused());
    }
    Ok(address)
}

/// The subject: the notification's own (on one line), else its body's first
/// non-empty line cut to [`DEFAULT_SUBJECT_CHARS`], else [`FALLBACK_SUBJECT`];
/// a critical notification's starts with [`URGENT_PREFIX`].
pub fn subject(message: &Notification) -> String {
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let own = message
        .subject
        .as_deref()
        .map(one_line)
        .filter(|s| !s.is_empty());
    let subject = own.unwrap_or_else(|| {
        message
            .body
            .lines()
            .map(one_line)
            .find(|l| !l.is_empty())
            .map(|l| truncate_with_ellipsis(&l, DEFAULT_SUBJECT_CHARS))
            .unwrap_or_else(|| FALLBACK_SUBJECT.to_string())
    });
    if message.urgency == Urgency::Critical && !subject.starts_with(URGENT_PREFIX) {
        format!("{URGENT_PREFIX}{subject}")
    } else {
        subject
    }
}

/// The `Idempotency-Key` of `message` sent to `to`: the notification's id, a
/// slash, and 32 hex digits of the SHA-256 of the address.
///
/// The id alone would do for one address, but the host may send one
/// notification to two e-mail channels of the same person (an emergency goes
/// to every channel), and Resend refuses a key reused with another payload
/// (`invalid_idempotent_request`): the address makes the key one per mailbox,
/// and the digest keeps it short and free of characters a header cannot carry.
/// An id that is not printable ASCII, or too long to leave room, is digested too.
pub fn idempotency_key(message: &Notification, to: &str) -> String {
    let hex = |bytes: &[u8], n: usize| -> String {
        bytes
            .iter()
            .take(n / 2)
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let address = hex(&Sha256::digest(to.as_bytes()), 32);
    let id = message.id.as_str();
    let printable = !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic());
    if printable && id.len() + 1 + address.len() <= MAX_IDEMPOTENCY_KEY {
        format!("{id}/{address}")
    } else {
        format!("{}/{address}", hex(&Sha256::digest(id.as_bytes()), 64))
    }
}

/// The Send Email request body.
pub fn email_body(from: &str, to: &str, subject: &str, text: &str) -> Vec<u8> {
    json!({ "from": from, "to": [to], "subject": subject, "text": text })
        .to_string()
        .into_bytes()
}

/// What Resend's answer means: the receipt (the email's id), or why not.
pub fn receipt_of(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<DeliveryReceipt, PluginError> {
    if (200..300).contains(&status) {
        return accepted("Resend", body, "id");
    }
    let answer: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        answer
            .as_ref()
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Err(error_of(
        status,
        headers,
        field("name").as_deref(),
        field("message").as_deref().unwrap_or(""),
    ))
}

/// The plugin error for Resend's error `name` (per its Errors page) answered
/// with `status`:
/// - rate limits and quotas (429: `rate_limit_exceeded`, `daily_quota_exceeded`,
///   `monthly_quota_exceeded`), `concurrent_idempotent_requests` (409, "safe to
///   retry later") and Resend's own failures (5xx: `application_error`,
///   `internal_server_error`): `upstream`, with `retry-after` when sent;
/// - the API key (`missing_api_key`, `invalid_api_key`, `restricted_api_key`):
///   `unauthorized`, the operator's to fix;
/// - the sender (`invalid_from_address`; a 403 `validation_error`: only test
///   mail without a verified domain, or the domain not verified), a wrong
///   `api_base` (`not_found`, `method_not_allowed`) or a key this plugin made
///   badly (`invalid_idempotency_key`): `internal`, the configuration's fault;
/// - the email itself (400/422 `validation_error`, `missing_required_field`,
///   `invalid_parameter`, `invalid_attachment`, 451 `security_error`) and
///   `invalid_idempotent_request`: `invalid-input`, final, as the same request
///   would be refused again.
///
/// A 429 or 5xx is `upstream` whatever its name says, and an unknown name is
/// `upstream` with its status, so the host's bounded retries decide.
pub fn error_of(
    status: u16,
    headers: &[(String, String)],
    name: Option<&str>,
    message: &str,
) -> PluginError {
    let what = format!(
        "Resend {} ({status}){}",
        name.unwrap_or("error"),
        if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        }
    );
    if says_later(status) {
        // A rate limit or the provider's own failure, whatever its body names.
        return upstream_status(what, status, headers);
    }
    match name {
        Some("rate_limit_exceeded" | "daily_quota_exceeded" | "monthly_quota_exceeded")
        | Some("concurrent_idempotent_requests")
        | Some("application_error" | "internal_server_error") => {
            upstream_status(what, status, headers)
        }
        Some("missing_api_key" | "invalid_api_key" | "restricted_api_key") => {
            PluginError::Unauthorized(format!(
                "{what}; check the API key stored as the secret {API_KEY_SECRET} (it needs sending access)"
            ))
        }
        Some("invalid_from_address") => PluginError::Internal(format!(
            "{what}; set plugins.email.config.from to an address of a domain verified in Resend"
        )),
        Some("validation_error") if status == 403 => PluginError::Internal(format!(
            "{what}; verify the sender's domain in Resend and send from it (plugins.email.config.from)"
        )),
        Some("not_found" | "method_not_allowed") => PluginError::Internal(format!(
            "{what}; check plugins.email.config.api_base ({DEFAULT_API_BASE})"
        )),
        Some("invalid_idempotency_key") => {
            PluginError::Internal(format!("{what}; the plugin's idempotency key was refused"))
        }
        Some("invalid_idempotent_request") => PluginError::InvalidInput(format!(
            "{what}; Resend already accepted a different email under this notification's key for this address, so it is not sent again"
        )),
        Some(
            "validation_error"
            | "missing_required_field"
            | "invalid_parameter"
            | "invalid_attachment"
            | "security_error",
        ) => PluginError::InvalidInput(what),
        _ => upstream_status(what, status, headers),
    }
}

/// Sends one notification as an email.
pub fn send(message: &Notification) -> Result<DeliveryReceipt, PluginError> {
    let config = ResendConfig::read(config::get);
    let from = config.sender()?;
    let to = recipient(message)?;
    let response = http::send(&http::Request {
        method: "POST".into(),
        url: config.emails_url(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("idempotency-key".into(), idempotency_key(message, to)),
        ],
        body: email_body(from, to, &subject(message), &message.body),
        connection: None,
        bearer_secret: Some(API_KEY_SECRET.into()),
    })
    .map_err(|e| request_failure("Resend", e, Credential::Secret))?;
    receipt_of(response.status, &response.headers, &response.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_sdk::provider::UpstreamFailure;

    fn config(pairs: &[(&str, &str)]) -> ResendConfig {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ResendConfig::read(|k| map.get(k).cloned())
    }

    fn note(to: &str, subject: Option<&str>, body: &str, urgency: Urgency) -> Notification {
        Notification {
            id: "ntf_0123456789abcdef0123".into(),
            recipient: to.into(),
            subject: subject.map(str::to_string),
            body: body.into(),
            urgency,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn config_defaults_to_resend_and_needs_a_sender_only_to_send() {
        let c = config(&[]);
        assert_eq!(c.emails_url(), "https://api.resend.com/emails");
        assert!(
            matches!(c.sender(), Err(PluginError::Internal(m)) if m.contains("plugins.email.config.from"))
        );
        let c = config(&[
            ("api_base", "http://127.0.0.1:4010/"),
            ("from", " Acme <onboarding@resend.dev> "),
        ]);
        assert_eq!(c.emails_url(), "http://127.0.0.1:4010/emails");
        assert_eq!(c.sender(), Ok("Acme <onboarding@resend.dev>"));
        assert!(config(&[("from", "  ")]).sender().is_err());
    }

    // Send Email's example: from "Acme <onboarding@resend.dev>", to
    // ["delivered@resend.dev"], subject "hello world".
    #[test]
    fn the_body_is_the_documented_send_email_request() {
        let body: Value = serde_json::from_slice(&email_body(
            "Acme <onboarding@resend.dev>",
            "delivered@resend.dev",
            "hello world",
            "it works!",
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "from": "Acme <onboarding@resend.dev>",
                "to": ["delivered@resend.dev"],
                "subject": "hello world",
                "text": "it works!",
            })
        );
    }

    #[test]
    fn recipients_are_single_plain_addresses() {
        for good in ["delivered@resend.dev", " bea@example.co.uk ", "a+b@x.io"] {
            assert_eq!(
                recipient(&note(good, None, "b", Urgency::Normal)),
                Ok(good.trim()),
                "{good}"
            );
        }
        for bad in [
            "",
            "bea",
            "@example.com",
            "bea@",
            "bea@localhost",
            "bea@example..com",
            "a@b@example.com",
            "Bea <bea@example.com>",
            "a@example.com, b@example.com",
            "bea @example.com",
            "+15551234567",
        ] {
            assert!(
                matches!(
                    recipient(&note(bad, None, "b", Urgency::Normal)),
                    Err(PluginError::InvalidInput(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn subjects_default_to_the_first_line_and_flag_emergencies() {
        assert_eq!(
            subject(&note(
                "a@b.co",
                Some("Smith wedding: florist late"),
                "b",
                Urgency::High
            )),
            "Smith wedding: florist late"
        );
        assert_eq!(
            subject(&note("a@b.co", Some("Two\nlines "), "b", Urgency::Normal)),
            "Two lines"
        );
        assert_eq!(
            subject(&note(
                "a@b.co",
                None,
                "\n  The cake is here \nmore",
                Urgency::Low
            )),
            "The cake is here"
        );
        let long = "Timeline change ".repeat(10);
        let s = subject(&note("a@b.co", Some(" "), &long, Urgency::Normal));
        assert_eq!(s.chars().count(), DEFAULT_SUBJECT_CHARS);
        assert!(s.ends_with('…'));
        assert_eq!(
            subject(&note("a@b.co", None, "  ", Urgency::Normal)),
            FALLBACK_SUBJECT
        );
        assert_eq!(
            subject(&note(
                "a@b.co",
                Some("Fire alarm at the venue"),
                "b",
                Urgency::Critical
            )),
            "[Urgent] Fire alarm at the venue"
        );
        assert_eq!(
            subject(&note(
                "a@b.co",
                Some("[Urgent] already"),
                "b",
                Urgency::Critical
            )),
            "[Urgent] already"
        );
    }

    // Idempotency Keys: "up to 256 characters", one per email.
    #[test]
    fn idempotency_keys_are_per_notification_and_address() {
        let n = note("bea@example.com", None, "b", Urgency::Normal);
        let key = idempotency_key(&n, "bea@example.com");
        assert!(key.starts_with("ntf_0123456789abcdef0123/"), "{key}");
        assert_eq!(key.len(), "ntf_0123456789abcdef0123/".len() + 32);
        assert_eq!(
            key,
            idempotency_key(&n, "bea@example.com"),
            "stable across retries"
        );
        assert_ne!(key, idempotency_key(&n, "bea@work.example.com"));
        let mut other = n.clone();
        other.id = "ntf_fedcba9876543210fedc".into();
        assert_ne!(key, idempotency_key(&other, "bea@example.com"));
        for id in [
            "x".repeat(300),
            "ntf with spaces".into(),
            "ntf_é".into(),
            String::new(),
        ] {
            let mut odd = n.clone();
            odd.id = id.clone();
            let key = idempotency_key(&odd, "bea@example.com");
            assert!(
                key.len() <= MAX_IDEMPOTENCY_KEY && key.bytes().all(|b| b.is_ascii_graphic()),
                "{id:?}: {key}"
            );
        }
    }

    // Send Email's example response.
    #[test]
    fn an_accepted_email_is_its_id() {
        let r = receipt_of(
            200,
            &[],
            br#"{"id":"49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}"#,
        )
        .unwrap();
        assert_eq!(
            r.provider_message_id.as_deref(),
            Some("49a3999c-0ce1-4ea6-ab68-afcd6dc2e794")
        );
        // Accepted without an id: delivered all the same, never sent again.
        assert_eq!(
            receipt_of(200, &[], b"{}").unwrap().provider_message_id,
            None
        );
        // A 2xx that is not Resend's JSON (a proxy's page): the operator's to fix.
        assert!(matches!(
            receipt_of(200, &[], b"<html>Sign in to the Wi-Fi</html>"),
            Err(PluginError::Internal(m)) if m.contains("api_base")
        ));
    }

    fn error(status: u16, name: &str, message: &str, headers: &[(String, String)]) -> PluginError {
        let body = json!({"statusCode": status, "name": name, "message": message}).to_string();
        receipt_of(status, headers, body.as_bytes()).unwrap_err()
    }

    // The Errors page's names, statuses and messages.
    #[test]
    fn documented_errors_map_to_plugin_errors() {
        let limited = error(
            429,
            "rate_limit_exceeded",
            "Too many requests. Please limit the number of requests per second. Or contact support to increase rate limit.",
            &headers(&[("retry-after", "1"), ("ratelimit-limit", "2")]),
        );
        assert!(matches!(
            limited,
            PluginError::Upstream(UpstreamFailure { status: Some(429), retry_after_ms: Some(1_000), ref message })
                if message.contains("rate_limit_exceeded")
        ));
        for (status, name) in [
            (429, "daily_quota_exceeded"),
            (429, "monthly_quota_exceeded"),
            (409, "concurrent_idempotent_requests"),
            (500, "application_error"),
            (500, "internal_server_error"),
        ] {
            assert!(
                matches!(error(status, name, "", &[]), PluginError::Upstream(UpstreamFailure { status: Some(s), .. }) if s == status),
                "{name}"
            );
        }
        for (status, name) in [
            (401, "missing_api_key"),
            (403, "invalid_api_key"),
            (401, "restricted_api_key"),
        ] {
            assert!(
                matches!(error(status, name, "", &[]), PluginError::Unauthorized(m) if m.contains(API_KEY_SECRET)),
                "{name}"
            );
        }
        for (status, name) in [
            (422, "invalid_from_address"),
            (403, "validation_error"),
            (404, "not_found"),
            (405, "method_not_allowed"),
            (400, "invalid_idempotency_key"),
        ] {
            assert!(
                matches!(error(status, name, "", &[]), PluginError::Internal(_)),
                "{name}"
            );
        }
        for (status, name) in [
            (400, "validation_error"),
            (422, "validation_error"),
            (422, "missing_required_field"),
            (422, "invalid_parameter"),
            (422, "invalid_attachment"),
            (451, "security_error"),
            (409, "invalid_idempotent_request"),
        ] {
            assert!(
                matches!(error(status, name, "", &[]), PluginError::InvalidInput(_)),
                "{name}"
            );
        }
        assert!(matches!(
            error(422, "missing_required_field", "Missing `to` field.", &[]),
            PluginError::InvalidInput(m) if m == "Resend missing_required_field (422): Missing `to` field."
        ));
        // Not Resend's JSON at all (a proxy's page), or a name this plugin does not know.
        assert!(matches!(
            receipt_of(
                502,
                &headers(&[("Retry-After", "30")]),
                b"<html>Bad gateway</html>"
            ),
            Err(PluginError::Upstream(UpstreamFailure {
                status: Some(502),
                retry_after_ms: Some(30_000),
                ..
            }))
        ));
        assert!(matches!(
            error(418, "brand_new_error", "", &[]),
            PluginError::Upstream(UpstreamFailure {
                status: Some(418),
                ..
            })
        ));
    }
}
