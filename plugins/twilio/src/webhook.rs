//! Twilio's webhooks: inbound SMS and WhatsApp messages and message status
//! callbacks, verified as Twilio's "Webhooks security" documentation specifies.
//!
//! - `X-Twilio-Signature` is the base64 HMAC-SHA1, under the account's auth token
//!   (named `twilio.auth-token`; the host holds it), of the full URL Twilio called
//!   followed by every POST parameter's name and value, sorted by name.
//! - A JSON body is not in the signed string: Twilio adds a `bodySHA256` query
//!   parameter (the hex SHA-256 of the body) to the URL it signs, and the body must
//!   hash to it.
//! - Twilio's own validators (twilio-python, twilio-node) accept the URL with and
//!   without its port, because Twilio has signed both forms; so does this plugin.
//!
//! The URL is the one the host hands over, built from its `public_url`: it must be
//! the URL configured in Twilio, or nothing verifies.

use presence_sdk::provider::secrets::HmacAlgorithm;
use presence_sdk::provider::{PluginError, WebhookOutcome, WebhookRequest, WebhookResponse};
use presence_sdk::signature::{self, SignatureError};
use presence_sdk::webhook::{header, respond};
use sha2::{Digest, Sha256};

use crate::form;

/// The secret Twilio signs webhooks with.
pub const AUTH_TOKEN: &str = "twilio.auth-token";

/// An empty TwiML document: received, nothing to reply.
pub const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#;

/// The string Twilio signs: the URL, then each parameter's name and value with no
/// separators, sorted by name in byte order (case-sensitive).
/// A name sent more than once has its values sorted, and a repeated name/value pair
/// counts once, as Twilio's SDK validators sign it.
pub fn signed_string(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut signed = url.to_string();
    for (name, value) in sorted {
        signed.push_str(name);
        signed.push_str(value);
    }
    signed
}

/// The URL as received, then the same URL with its port written the other way: an
/// explicit port removed, or the scheme's default port added.
pub fn url_variants(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return vec![url.to_string()];
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        _ => return vec![url.to_string()],
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (userinfo, host_port) = authority.split_at(authority.rfind('@').map_or(0, |i| i + 1));
    // The port follows the last ':', unless that ':' is inside an IPv6 literal.
    let other = match host_port.rfind(':') {
        Some(i) if !host_port[i..].contains(']') => {
            format!("{scheme}://{userinfo}{}{tail}", &host_port[..i])
        }
        _ => format!("{scheme}://{userinfo}{host_port}:{default_port}{tail}"),
    };
    vec![url.to_string(), other]
}

/// The `bodySHA256` query parameter of the URL, present when Twilio sent a JSON body.
pub fn body_sha256_param(url: &str) -> Option<String> {
    form::parse(form::query(url).as_bytes())
        .into_iter()
        .find(|(name, _)| name == "bodySHA256")
        .map(|(_, value)| value)
}

/// Whether `body` hashes to the hex SHA-256 in `expected_hex`. The hash is not
/// keyed (the URL carrying it is what is signed), so it is computed here.
pub fn body_matches(body: &[u8], expected_hex: &str) -> bool {
    signature::decode_hex(expected_hex).is_some_and(|h| h == Sha256::digest(body).as_slice())
}

/// What Twilio signed after the URL: a form POST's parameters. A JSON body's hash
/// and a GET's parameters are in the URL itself (and are read from it).
fn signed_params(request: &WebhookRequest, json: bool) -> Vec<(String, String)> {
    if json || !request.method.eq_ignore_ascii_case("POST") {
        Vec::new()
    } else {
        form::parse(&request.body)
    }
}

fn verify_signature(
    request: &WebhookRequest,
    params: &[(String, String)],
) -> Result<(), SignatureError> {
    let signature = header(request, "x-twilio-signature")
        .ok_or(SignatureError::Missing("X-Twilio-Signature"))?;
    for url in url_variants(&request.url) {
        let message = signed_string(&url, params);
        match signature::verify_base64(
            AUTH_TOKEN,
            HmacAlgorithm::Sha1,
            message.as_bytes(),
            signature,
        ) {
            Err(SignatureError::Mismatch) => continue,
            verdict => return verdict,
        }
    }
    Err(SignatureError::Mismatch)
}

/// The top-level string and number fields of a JSON body, as name/value pairs.
fn json_fields(body: &[u8]) -> Result<Vec<(String, String)>, PluginError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| PluginError::InvalidInput(format!("body is not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Ok(Vec::new());
    };
    Ok(object
        .iter()
        .filter_map(|(name, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((name.clone(), text))
        })
        .collect())
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, v)| n == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// The delivery id of a messaging webhook: the message's `MessageSid` (or the older
/// `SmsSid`) for an inbound message, and `{MessageSid}:{MessageStatus}` for a status
/// callback, since one message reports each status once. None when the request is
/// not about a message (a voice webhook pointed here, say).
pub fn delivery_id(fields: &[(String, String)]) -> Option<String> {
    let sid = field(fields, "MessageSid").or_else(|| field(fields, "SmsSid"))?;
    match field(fields, "MessageStatus").filter(|s| *s != "received") {
        Some(status) => Some(format!("{sid}:{status}")),
        None => Some(sid.to_string()),
    }
}

fn twiml() -> WebhookResponse {
    respond(200, "text/xml", EMPTY_TWIML)
}

/// Verifies one webhook and says what it means: a delivery to record, answered
/// with empty TwiML.
pub fn handle(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
    // A Webhook Rule makes Twilio sign with a Setting's shared key instead of the
    // auth token: a secret this plugin is not granted, so say so rather than
    // "does not match".
    if header(&request, "x-twilio-webhooks-signature-settings").is_some() {
        return Err(PluginError::Unauthorized(
            "signed with a Webhooks Setting's shared key, which this plugin does not verify; \
             remove the Webhook Rule so that Twilio signs with the auth token"
                .into(),
        ));
    }
    let body_sha256 = body_sha256_param(&request.url);
    let params = signed_params(&request, body_sha256.is_some());
    verify_signature(&request, &params).map_err(SignatureError::into_plugin_error)?;
    let fields = match &body_sha256 {
        Some(expected) if !body_matches(&request.body, expected) => {
            return Err(PluginError::Unauthorized(
                "body does not match the signed bodySHA256".into(),
            ));
        }
        Some(_) => json_fields(&request.body)?,
        None if params.is_empty() => form::parse(form::query(&request.url).as_bytes()),
        None => params,
    };
    let delivery_id = delivery_id(&fields);
    if delivery_id.is_none() {
        presence_sdk::log::debug("verified Twilio request without a MessageSid: acknowledged");
    }
    // Inbound messages say nothing about presence yet: the notification router will
    // read replies as acknowledgements. Recording the delivery keeps retries out.
    Ok(WebhookOutcome {
        response: twiml(),
        delivery_id,
        events: Vec::new(),
        signals: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    /// Twilio's request-validation example (auth token 12345, this URL, a call's
    /// CallSid/Caller/Digits/From/To), as twilio-python's
    /// tests/unit/test_request_validator.py and twilio-node's spec/validation.spec.js
    /// carry it: it signs to `RSOYDt4T1cUTdK1PDd93/VVr8B8=`. Here: the signed string;
    /// the HMAC runs in the host and is checked end to end in tests/twilio.rs.
    #[test]
    fn the_signed_string_is_url_then_sorted_names_and_values() {
        let docs = params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]);
        let mut shuffled = docs.clone();
        shuffled.reverse();
        assert_eq!(
            signed_string(URL, &shuffled),
            "https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675309Digits1234From+14158675309To+18005551212"
        );
    }

    /// twilio-python's `test_compute_signature_duplicate_multi_dict`: keys sorted,
    /// a repeated key's values sorted, a repeated pair counted once (signs to
    /// `IK+Dwps556ElfBT0I3Rgjkr1wJU=` under 12345).
    #[test]
    fn repeated_parameters_sort_by_value_and_count_once() {
        let repeated = params(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            signed_string(URL, &repeated),
            format!("{URL}Digits1234Digits5678SidCA123SidAccountAC123")
        );
    }

    /// twilio-python and twilio-node check a signature against the URL without its
    /// port and with the scheme's default port (`kvajT1Ptam85bY51eRf/AJRuM3w=` is the
    /// docs example signed over `https://mycompany.com:443/...`).
    #[test]
    fn url_variants_toggle_the_port() {
        assert_eq!(
            url_variants(URL),
            vec![
                URL.to_string(),
                "https://mycompany.com:443/myapp.php?foo=1&bar=2".to_string()
            ]
        );
        assert_eq!(
            url_variants("https://mycompany.com:1234/myapp.php?foo=1&bar=2"),
            vec![
                "https://mycompany.com:1234/myapp.php?foo=1&bar=2".to_string(),
                URL.to_string()
            ]
        );
        assert_eq!(
            url_variants("http://user:pass@[::1]/hook")[1],
            "http://user:pass@[::1]:80/hook"
        );
        assert_eq!(url_variants("http://[::1]:8080")[1], "http://[::1]");
        assert_eq!(url_variants("not a url"), vec!["not a url".to_string()]);
    }

    /// twilio-python `test_compute_hash_unicode` / twilio-node "should validate post
    /// body correctly": this body hashes to 0a1ff763...6620; and the JSON example of
    /// Twilio's "Webhooks security" page (api-snippets
    /// security/signature_validation_json): its body hashes to 5ccde714...0aec9.
    #[test]
    fn body_sha256_vectors() {
        let sdk_url = format!(
            "{URL}&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
        let expected = body_sha256_param(&sdk_url).unwrap();
        assert!(body_matches(
            br#"{"property": "value", "boolean": true}"#,
            &expected
        ));
        assert!(!body_matches(
            br#"{"property": "value", "boolean": false}"#,
            &expected
        ));
        assert!(!body_matches(b"x", "WRONG_HASH"));

        let docs_url = "https://example.com/myapp?bodySHA256=5ccde7145dfb8f56479710896586cb9d5911809d83afbe34627818790db0aec9";
        let expected = body_sha256_param(docs_url).unwrap();
        assert!(body_matches(
            br#"{"CallSid":"CA1234567890ABCDE","Caller":"+12349013030"}"#,
            &expected
        ));
        // The JSON body is not part of the signed string: only the URL is.
        assert_eq!(signed_string(&sdk_url, &[]), sdk_url);
        assert_eq!(body_sha256_param(URL), None);
    }

    #[test]
    fn delivery_ids_are_message_sids_and_status_changes() {
        let inbound = params(&[
            ("SmsMessageSid", "SM1"),
            ("SmsSid", "SM1"),
            ("MessageSid", "SM1"),
            ("SmsStatus", "received"),
        ]);
        assert_eq!(delivery_id(&inbound).as_deref(), Some("SM1"));
        let older = params(&[("SmsSid", "SM2"), ("MessageSid", "")]);
        assert_eq!(delivery_id(&older).as_deref(), Some("SM2"));
        let status = params(&[("MessageSid", "SM3"), ("MessageStatus", "delivered")]);
        assert_eq!(delivery_id(&status).as_deref(), Some("SM3:delivered"));
        assert_eq!(delivery_id(&params(&[("CallSid", "CA1")])), None);
    }

    #[test]
    fn json_fields_are_top_level_strings_and_numbers() {
        let fields = json_fields(br#"{"MessageSid":"SM9","NumMedia":0,"Nested":{"a":1}}"#).unwrap();
        assert_eq!(fields, params(&[("MessageSid", "SM9"), ("NumMedia", "0")]));
        assert!(matches!(
            json_fields(b"{oops"),
            Err(PluginError::InvalidInput(_))
        ));
    }
}
