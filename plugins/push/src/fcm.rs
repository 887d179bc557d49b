//! Firebase Cloud Messaging's HTTP v1 API, as its public documentation describes it.
//!
//! - projects.messages.send
//!   (<https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages/send>):
//!   `POST https://fcm.googleapis.com/v1/{parent=projects/*}/messages:send` with
//!   `{"message": Message}`; OAuth scope
//!   `https://www.googleapis.com/auth/firebase.messaging`; "if successful, the
//!   response body contains an instance of Message", whose `name` is "the
//!   identifier of the message sent, in the format of
//!   `projects/*/messages/{message_id}`"
//!   (<https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages>),
//!   e.g. `projects/myproject-b5ae1/messages/0:1500415314455276%31bd1c9631bd1c96`
//!   (<https://firebase.google.com/docs/cloud-messaging/send-message>).
//! - The Message: `token` (the registration token), `notification` (`title`,
//!   `body`), `data` (string values only; no key `from`, `gcm` or starting with
//!   `google`), `android.priority` (`AndroidMessagePriority`: `NORMAL` or
//!   `HIGH`), `apns.headers` (APNs' own request headers: `apns-priority` `10`
//!   "send the notification immediately" or `5` "based on power
//!   considerations"); see "Setting the priority of a message",
//!   <https://firebase.google.com/docs/cloud-messaging/concept-options>.
//! - Error codes (<https://firebase.google.com/docs/cloud-messaging/error-codes>,
//!   <https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode>): a
//!   `google.rpc.Status` body, `{"error": {"code": 404, "message": "...",
//!   "status": "NOT_FOUND", "details": [{"@type":
//!   "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode":
//!   "UNREGISTERED"}]}}`, read in [`error_of`]. "Message too big: ... 4096 bytes
//!   for most messages ... This includes both the keys and the values", which
//!   [`message_body`] keeps to.
//!
//! - FCM has no idempotency key: a retry after an answer that never came back
//!   sends the message again. So that the person still sees it once, the
//!   notification's id is the Android notification's `tag` ("Identifier used
//!   to replace existing notifications in the notification drawer ... If
//!   specified and a notification with the same tag is already being shown, the
//!   new notification replaces the existing one", AndroidNotification) and the
//!   APNs `apns-collapse-id` ("Multiple notifications with the same collapse
//!   identifier are displayed to the user as a single notification ... must not
//!   exceed 64 bytes", Apple's "Sending notification requests to APNs",
//!   <https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns>).
//!
//! Where the docs are silent: no limit of the title alone is documented (it is
//! kept to [`MAX_TITLE_CHARS`], one lock-screen line, the plugin's own choice),
//! nor how exactly the 4096 bytes are counted for a `notification` (the plugin
//! counts the keys and values of `notification` and `data`).

use presence_sdk::notify;
use presence_sdk::provider::http;
use presence_sdk::provider::{DeliveryReceipt, Notification, PluginError, Urgency, config};
use presence_sdk::settings::{api_base, setting};
use presence_sdk::text::{truncate_bytes_with_ellipsis, truncate_with_ellipsis};
use presence_sdk::upstream::{Credential, accepted, request_failure, says_later, upstream_status};
use serde_json::{Value, json};

/// Where FCM is, unless the `api_base` config key says otherwise.
pub const DEFAULT_API_BASE: &str = "https://fcm.googleapis.com";
/// FCM's payload ceiling "for most messages", keys and values counted.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// The title is cut to this many characters (the plugin's choice, see above).
pub const MAX_TITLE_CHARS: usize = 120;
/// The `data` key carrying the notification's id, for the app's acknowledgement.
pub const NOTIFICATION_ID_KEY: &str = "notification_id";
/// APNs' longest `apns-collapse-id`, in bytes.
pub const MAX_COLLAPSE_ID_BYTES: usize = 64;
/// The `@type` of FCM's own error detail.
pub const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// The plugin's `[config]`, as FCM needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcmConfig {
    /// Without a trailing slash.
    pub api_base: String,
    /// `None` until the operator sets `project_id`.
    pub project_id: Option<String>,
    /// The connection used when the channel names none.
    pub default_connection: Option<String>,
}

impl FcmConfig {
    /// Reads the settings through `get`; an empty value is unset. A missing
    /// `project_id` is reported when a message is sent, not here, so a plugin
    /// the operator has not configured yet still loads.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            api_base: api_base(&get, DEFAULT_API_BASE),
            project_id: setting(&get, "project_id"),
            default_connection: setting(&get, notify::CONNECTION_CONFIG_KEY),
        }
    }

    /// `{api_base}/v1/projects/{project_id}/messages:send`, or what the operator must set.
    pub fn send_url(&self) -> Result<String, PluginError> {
        let project = self.project_id.as_deref().ok_or_else(|| {
            PluginError::Internal(
                "no Firebase project: set plugins.push.config.project_id to the project's id (Firebase console, Project settings)".into(),
            )
        })?;
        // It becomes a path segment: Google's project ids are lower-case letters,
        // digits and hyphens; the numeric project number is accepted too.
        if !project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(PluginError::Internal(format!(
                "config project_id {project:?} is not a Firebase project id (lower-case letters, digits and hyphens)"
            )));
        }
        Ok(format!(
            "{}/v1/projects/{project}/messages:send",
            self.api_base
        ))
    }
}

/// Android's and APNs' priority for an urgency: the two urgent classes go at
/// once (`HIGH`, `10`), the others when the device sees fit (`NORMAL`, `5`).
pub fn priorities(urgency: Urgency) -> (&'static str, &'static str) {
    match urgency {
        Urgency::Critical | Urgency::High => ("HIGH", "10"),
        Urgency::Normal | Urgency::Low => ("NORMAL", "5"),
    }
}

/// The send request's body for `message` to the device `token`: the title (the
/// subject, when there is one) and the body cut so that the payload's keys and
/// values stay within [`MAX_PAYLOAD_BYTES`].
pub fn message_body(message: &Notification, token: &str) -> Vec<u8> {
    let title = message
        .subject
        .as_deref()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .map(|s| truncate_with_ellipsis(&s, MAX_TITLE_CHARS));
    let fixed = NOTIFICATION_ID_KEY.len()
        + message.id.len()
        + "body".len()
        + title.as_ref().map_or(0, |t| "title".len() + t.len());
    let body = truncate_bytes_with_ellipsis(&message.body, MAX_PAYLOAD_BYTES.saturating_sub(fixed));
    let mut notification = json!({ "body": body });
    if let Some(title) = title {
        notification["title"] = title.into();
    }
    let (android_priority, apns_priority) = priorities(message.urgency);
    let mut android = json!({ "priority": android_priority });
    let mut apns_headers = json!({ "apns-priority": apns_priority });
    // A resent message replaces the one shown, rather than showing twice.
    if !message.id.is_empty() {
        android["notification"] = json!({ "tag": message.id });
        if message.id.len() <= MAX_COLLAPSE_ID_BYTES {
            apns_headers["apns-collapse-id"] = message.id.clone().into();
        }
    }
    json!({
        "message": {
            "token": token,
            "notification": notification,
            "android": android,
            "apns": { "headers": apns_headers },
            "data": { NOTIFICATION_ID_KEY: message.id },
        }
    })
    .to_string()
    .into_bytes()
}

/// What FCM's answer means: the receipt (the message's `name`), or why not.
pub fn receipt_of(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<DeliveryReceipt, PluginError> {
    if (200..300).contains(&status) {
        return accepted("FCM", body, "name");
    }
    let answer: Option<Value> = serde_json::from_slice(body).ok();
    let error = answer.as_ref().and_then(|a| a.get("error"));
    let text = |k: &str| error.and_then(|e| e.get(k)).and_then(Value::as_str);
    let fcm_code = error
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|d| d.get("@type").and_then(Value::as_str) == Some(FCM_ERROR_TYPE))
        .and_then(|d| d.get("errorCode"))
        .and_then(Value::as_str);
    Err(error_of(
        status,
        headers,
        fcm_code,
        text("status"),
        text("message").unwrap_or(""),
    ))
}

/// The plugin error for FCM's `errorCode` (or, without one, the canonical
/// `status`) answered with HTTP `status`, per the ErrorCode page:
/// - `UNREGISTERED` (404: "the token used is no longer valid and a new one must
///   be used"), `INVALID_ARGUMENT` (400) and `SENDER_ID_MISMATCH` (403: the token
///   belongs to another project): `invalid-input`, final for this token;
/// - `QUOTA_EXCEEDED` (429), `UNAVAILABLE` (503: "honor the Retry-After header")
///   and `INTERNAL` (500, retried like a timeout): `upstream`, with
///   `retry-after-ms` when FCM sent `Retry-After`;
/// - `THIRD_PARTY_AUTH_ERROR` (401: "APNs certificate or web push auth key was
///   invalid or missing"): `internal`, fixed in the Firebase console;
/// - without an FCM code: `UNAUTHENTICATED` (401) and `PERMISSION_DENIED` (403)
///   say the connection's token does not work, `unauthorized`; `NOT_FOUND` (404)
///   a project that does not exist, `internal`.
///
/// A 429 or 5xx is `upstream` whatever its code says, and anything else is
/// `upstream` with its status, so the host's bounded retries decide.
pub fn error_of(
    status: u16,
    headers: &[(String, String)],
    fcm_code: Option<&str>,
    rpc_status: Option<&str>,
    message: &str,
) -> PluginError {
    let code = fcm_code.or(rpc_status).unwrap_or("error");
    let what = format!(
        "FCM {code} ({status}){}",
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
    match (fcm_code, rpc_status) {
        (Some("UNREGISTERED"), _) => PluginError::InvalidInput(format!(
            "{what}; the device token is no longer registered (the app was uninstalled or its token replaced): replace the channel's token"
        )),
        (Some("SENDER_ID_MISMATCH"), _) => PluginError::InvalidInput(format!(
            "{what}; the device token belongs to another Firebase project than plugins.push.config.project_id"
        )),
        (Some("INVALID_ARGUMENT"), _) | (None, Some("INVALID_ARGUMENT")) => {
            PluginError::InvalidInput(what)
        }
        (Some("QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL"), _) => {
            upstream_status(what, status, headers)
        }
        (Some("THIRD_PARTY_AUTH_ERROR"), _) => PluginError::Internal(format!(
            "{what}; upload a valid APNs key or web push credentials in the Firebase console"
        )),
        (None, Some("UNAUTHENTICATED" | "PERMISSION_DENIED")) => {
            PluginError::Unauthorized(format!(
                "{what}; the connection's access token was refused: seed the push connection again with a fresh token of a service account allowed to send (scope https://www.googleapis.com/auth/firebase.messaging)"
            ))
        }
        (None, Some("NOT_FOUND")) => {
            PluginError::Internal(format!("{what}; check plugins.push.config.project_id"))
        }
        _ => upstream_status(what, status, headers),
    }
}

/// Sends one notification to the device whose token is the channel's address.
pub fn send(connection: &str, message: &Notification) -> Result<DeliveryReceipt, PluginError> {
    let config = FcmConfig::read(config::get);
    let url = config.send_url()?;
    let token = notify::opaque_address(message, "FCM registration token")?;
    let connection = notify::connection(connection, config.default_connection.clone())
        .ok_or_else(|| {
            PluginError::Internal(format!(
                "no connection to send with: seed one holding the service account's access token (plugin \"push\") and set plugins.push.config.{} to its name, or name it on the channel",
                notify::CONNECTION_CONFIG_KEY
            ))
        })?;
    let response = http::send(&http::Request {
        method: "POST".into(),
        url,
        headers: vec![(
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        )],
        body: message_body(message, token),
        connection: Some(connection),
        bearer_secret: None,
    })
    .map_err(|e| request_failure("FCM", e, Credential::Connection))?;
    receipt_of(response.status, &response.headers, &response.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_sdk::provider::UpstreamFailure;

    /// A registration token shaped like FCM's (they are opaque; this one is made up).
    const TOKEN: &str = "bk3RNwTe3H0:CI2k_HHwgIpoDKCIZvvDMExUdFQ3P1";

    fn config(pairs: &[(&str, &str)]) -> FcmConfig {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FcmConfig::read(|k| map.get(k).cloned())
    }

    fn note(subject: Option<&str>, body: &str, urgency: Urgency) -> Notification {
        Notification {
            id: "ntf_0123456789abcdef0123".into(),
            recipient: TOKEN.into(),
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

    // projects.messages.send: POST https://fcm.googleapis.com/v1/{parent=projects/*}/messages:send.
    #[test]
    fn the_url_names_the_project_and_needs_one() {
        let c = config(&[("project_id", "myproject-b5ae1")]);
        assert_eq!(
            c.send_url().unwrap(),
            "https://fcm.googleapis.com/v1/projects/myproject-b5ae1/messages:send"
        );
        let local = config(&[("project_id", "p1"), ("api_base", "http://127.0.0.1:9/")]);
        assert_eq!(
            local.send_url().unwrap(),
            "http://127.0.0.1:9/v1/projects/p1/messages:send"
        );
        assert!(
            matches!(config(&[]).send_url(), Err(PluginError::Internal(m)) if m.contains("project_id"))
        );
        assert!(config(&[("project_id", "../admin")]).send_url().is_err());
        assert_eq!(
            config(&[("notification_connection", "fcm")])
                .default_connection
                .as_deref(),
            Some("fcm")
        );
    }

    #[test]
    fn a_notification_becomes_the_documented_message() {
        let body: Value = serde_json::from_slice(&message_body(
            &note(
                Some("Smith wedding"),
                "The florist is at the gate",
                Urgency::High,
            ),
            TOKEN,
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({"message": {
                "token": TOKEN,
                "notification": {"title": "Smith wedding", "body": "The florist is at the gate"},
                "android": {"priority": "HIGH", "notification": {"tag": "ntf_0123456789abcdef0123"}},
                "apns": {"headers": {"apns-priority": "10", "apns-collapse-id": "ntf_0123456789abcdef0123"}},
                "data": {"notification_id": "ntf_0123456789abcdef0123"},
            }})
        );
        let quiet: Value = serde_json::from_slice(&message_body(
            &note(None, "Menu tasting moved", Urgency::Low),
            TOKEN,
        ))
        .unwrap();
        assert_eq!(
            quiet["message"]["notification"],
            json!({"body": "Menu tasting moved"})
        );
        assert_eq!(quiet["message"]["android"]["priority"], "NORMAL");
        assert_eq!(quiet["message"]["apns"]["headers"]["apns-priority"], "5");
        let mut long_id = note(None, "b", Urgency::Low);
        long_id.id = "n".repeat(65);
        let long: Value = serde_json::from_slice(&message_body(&long_id, TOKEN)).unwrap();
        assert_eq!(
            long["message"]["android"]["notification"]["tag"],
            "n".repeat(65)
        );
        assert!(
            long["message"]["apns"]["headers"]
                .get("apns-collapse-id")
                .is_none()
        );
    }

    #[test]
    fn priorities_follow_urgency() {
        assert_eq!(priorities(Urgency::Critical), ("HIGH", "10"));
        assert_eq!(priorities(Urgency::High), ("HIGH", "10"));
        assert_eq!(priorities(Urgency::Normal), ("NORMAL", "5"));
        assert_eq!(priorities(Urgency::Low), ("NORMAL", "5"));
    }

    // "4096 bytes for most messages ... both the keys and the values".
    #[test]
    fn long_texts_fit_the_payload_limit() {
        let digest = "1. Cake: the baker is late\n\n".repeat(400);
        let body: Value = serde_json::from_slice(&message_body(
            &note(Some(&"Ten notes ".repeat(40)), &digest, Urgency::Normal),
            TOKEN,
        ))
        .unwrap();
        let n = &body["message"]["notification"];
        let (title, text) = (n["title"].as_str().unwrap(), n["body"].as_str().unwrap());
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS);
        assert!(text.ends_with('…'));
        let payload = "title".len()
            + title.len()
            + "body".len()
            + text.len()
            + NOTIFICATION_ID_KEY.len()
            + "ntf_0123456789abcdef0123".len();
        assert!(payload <= MAX_PAYLOAD_BYTES, "{payload}");
    }

    // The send page's example answer.
    #[test]
    fn an_accepted_message_is_its_name() {
        let r = receipt_of(
            200,
            &[],
            br#"{"name":"projects/myproject-b5ae1/messages/0:1500415314455276%31bd1c9631bd1c96"}"#,
        )
        .unwrap();
        assert_eq!(
            r.provider_message_id.as_deref(),
            Some("projects/myproject-b5ae1/messages/0:1500415314455276%31bd1c9631bd1c96")
        );
        // Accepted without a name: delivered all the same, never sent again.
        assert_eq!(
            receipt_of(200, &[], b"{}").unwrap().provider_message_id,
            None
        );
    }

    fn rpc(code: u16, status: &str, message: &str, fcm: Option<&str>) -> Vec<u8> {
        let details: Vec<Value> = fcm
            .map(|c| json!({"@type": FCM_ERROR_TYPE, "errorCode": c}))
            .into_iter()
            .collect();
        json!({"error": {"code": code, "message": message, "status": status, "details": details}})
            .to_string()
            .into_bytes()
    }

    // The error-codes page's two examples, and the ErrorCode table.
    #[test]
    fn documented_errors_map_to_plugin_errors() {
        let invalid_token = rpc(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            Some("INVALID_ARGUMENT"),
        );
        assert!(matches!(
            receipt_of(400, &[], &invalid_token),
            Err(PluginError::InvalidInput(m)) if m.contains("not a valid FCM registration token")
        ));
        let bad_value = json!({"error": {
            "code": 400,
            "message": "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
            "status": "INVALID_ARGUMENT",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{
                    "field": "message.data[0].value",
                    "description": "Invalid value at 'message.data[0].value' (TYPE_STRING), 12"
                }]
            }]
        }});
        assert!(matches!(
            receipt_of(400, &[], bad_value.to_string().as_bytes()),
            Err(PluginError::InvalidInput(_))
        ));
        let gone = rpc(
            404,
            "NOT_FOUND",
            "Requested entity was not found.",
            Some("UNREGISTERED"),
        );
        assert!(matches!(
            receipt_of(404, &[], &gone),
            Err(PluginError::InvalidInput(m)) if m.contains("UNREGISTERED")
        ));
        let mismatch = rpc(
            403,
            "PERMISSION_DENIED",
            "SenderId mismatch",
            Some("SENDER_ID_MISMATCH"),
        );
        assert!(matches!(
            receipt_of(403, &[], &mismatch),
            Err(PluginError::InvalidInput(_))
        ));
        for (status, rpc_status, fcm, retry) in [
            (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", Some(60_000)),
            (503, "UNAVAILABLE", "UNAVAILABLE", Some(60_000)),
            (500, "INTERNAL", "INTERNAL", None),
        ] {
            let h = if retry.is_some() {
                headers(&[("Retry-After", "60")])
            } else {
                Vec::new()
            };
            match receipt_of(status, &h, &rpc(status, rpc_status, "x", Some(fcm))) {
                Err(PluginError::Upstream(UpstreamFailure {
                    status: s,
                    retry_after_ms,
                    ..
                })) => {
                    assert_eq!((s, retry_after_ms), (Some(status), retry), "{fcm}")
                }
                other => panic!("{fcm}: {other:?}"),
            }
        }
        let apns = rpc(
            401,
            "UNAUTHENTICATED",
            "Auth error from APNS or Web Push Service",
            Some("THIRD_PARTY_AUTH_ERROR"),
        );
        assert!(matches!(
            receipt_of(401, &[], &apns),
            Err(PluginError::Internal(_))
        ));
        let expired = rpc(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            None,
        );
        assert!(matches!(
            receipt_of(401, &[], &expired),
            Err(PluginError::Unauthorized(_))
        ));
        let no_project = rpc(404, "NOT_FOUND", "Requested entity was not found.", None);
        assert!(
            matches!(receipt_of(404, &[], &no_project), Err(PluginError::Internal(m)) if m.contains("project_id"))
        );
        assert!(matches!(
            receipt_of(502, &[], b"<html>Bad Gateway</html>"),
            Err(PluginError::Upstream(UpstreamFailure {
                status: Some(502),
                ..
            }))
        ));
    }
}
