//! Calling the Calendar API v3 through the host, and reading its answers as
//! plugin errors.
//!
//! Every request names the person's connection; the host adds its access token
//! as `Authorization: Bearer ...` (and refreshes it once on a 401), so the
//! plugin never sees it.
//!
//! Google answers failures with a status and a `google.rpc.Status`-like body,
//! `{"error": {"code", "message", "errors": [{"domain", "reason", "message"}]}}`
//! ("Handle API errors", developers.google.com/calendar/api/guides/errors).
//! How each is reported:
//! - 401 `authError` (the token is expired or revoked, and the host's refresh
//!   did not help), and 403 `insufficientPermissions` (a scope is missing):
//!   `unauthorized`, as only the person connecting Google again fixes it;
//! - 403 `rateLimitExceeded`, `userRateLimitExceeded`, `dailyLimitExceeded`,
//!   `quotaExceeded` (domain `usageLimits`, or `calendar` for the per-calendar
//!   limits) and 429: `upstream` with the status and any `Retry-After`; the
//!   page asks for exponential backoff, which is the host's retry policy;
//! - 409 (a channel id already taken), 5xx (`backendError`): `upstream`;
//! - 400, 404 (no such calendar: the `calendar_id` setting) and other 403s
//!   (`forbidden`, a domain policy): `invalid-input`, as the same request
//!   would be refused again;
//! - 410 `fullSyncRequired` is not an error to the caller of `sync`: see
//!   [`ListAnswer::Gone`].

use presence_sdk::provider::PluginError;
use presence_sdk::provider::http::{self, Request, Response};
use presence_sdk::upstream::{Credential, request_failure, retry_after_ms, upstream};
use serde::Deserialize;

/// Reasons that mean "slow down", whatever the status (403 or 429).
const RATE_LIMITED: &[&str] = &[
    "rateLimitExceeded",
    "userRateLimitExceeded",
    "dailyLimitExceeded",
    "quotaExceeded",
];

/// Reasons that mean the token lacks a scope this plugin needs.
const MISSING_SCOPE: &[&str] = &["insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"];

/// Google's error body: `{"error": {"code", "message", "errors": [...], "status"}}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

/// A request with a JSON body (or none) for `connection`.
pub fn request(method: &str, url: String, body: Option<Vec<u8>>, connection: &str) -> Request {
    let mut headers = vec![("accept".to_string(), "application/json".to_string())];
    if body.is_some() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    Request {
        method: method.into(),
        url,
        headers,
        body: body.unwrap_or_default(),
        connection: Some(connection.to_string()),
        bearer_secret: None,
    }
}

/// Sends `request`; the answer whatever its status, or why there was none.
pub fn send(call: &str, request: &Request) -> Result<Response, PluginError> {
    http::send(request).map_err(|e| request_failure(call, e, Credential::Connection))
}

/// Sends `request` and reads a 2xx answer's body; any other status is the error it means.
pub fn call(call: &str, request: &Request) -> Result<Vec<u8>, PluginError> {
    let response = send(call, request)?;
    if (200..300).contains(&response.status) {
        Ok(response.body)
    } else {
        Err(error(
            call,
            response.status,
            &response.headers,
            &response.body,
        ))
    }
}

/// What events.list answered.
#[derive(Debug)]
pub enum ListAnswer {
    Page(Vec<u8>),
    /// 410 Gone: the sync token (or page token) is no longer valid and "a full
    /// sync is required" (Synchronize resources efficiently).
    Gone,
}

/// events.list's answer: the page, 410, or the error another status means.
pub fn list_answer(
    status: u16,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<ListAnswer, PluginError> {
    match status {
        200..=299 => Ok(ListAnswer::Page(body)),
        410 => Ok(ListAnswer::Gone),
        _ => Err(error("Google Calendar events.list", status, headers, &body)),
    }
}

/// The plugin error a non-2xx answer to `call` means (see the module doc).
pub fn error(call: &str, status: u16, headers: &[(String, String)], body: &[u8]) -> PluginError {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_default();
    let reason = detail
        .errors
        .first()
        .map(|e| e.reason.as_str())
        .filter(|r| !r.is_empty())
        .or(detail.status.as_deref())
        .unwrap_or("no reason given");
    let said = if detail.message.is_empty() {
        format!("{call}: HTTP {status} ({reason})")
    } else {
        format!("{call}: HTTP {status} {reason}: {}", detail.message)
    };
    let retry_after = retry_after_ms(headers);
    let has_reason = |list: &[&str]| {
        detail
            .errors
            .iter()
            .any(|e| list.contains(&e.reason.as_str()))
            || detail.status.as_deref().is_some_and(|s| list.contains(&s))
    };
    match status {
        401 => PluginError::Unauthorized(format!(
            "{said}; the connection's Google token no longer works: connect Google Calendar again"
        )),
        429 => upstream(said, Some(status), retry_after),
        403 if has_reason(RATE_LIMITED) => upstream(said, Some(status), retry_after),
        403 if has_reason(MISSING_SCOPE) => PluginError::Unauthorized(format!(
            "{said}; the connection lacks the calendar scope: connect Google Calendar again"
        )),
        404 => PluginError::InvalidInput(format!(
            "{said}; check the plugin's calendar_id setting and that the person can see that calendar"
        )),
        400 | 403 => PluginError::InvalidInput(said),
        _ => upstream(said, Some(status), retry_after),
    }
}

/// `s` as one path segment or query value: every byte but RFC 3986's
/// unreserved characters percent-encoded (calendar ids are e-mail addresses;
/// sync and page tokens may hold `=`, `+` and `/`).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_sdk::provider::UpstreamFailure;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // The JSON of each error on "Handle API errors".
    const INVALID_CREDENTIALS: &str = r#"{"error": {"errors": [{"domain": "global", "reason": "authError", "message": "Invalid Credentials", "locationType": "header", "location": "Authorization"}], "code": 401, "message": "Invalid Credentials"}}"#;
    const USER_RATE_LIMIT: &str = r#"{"error": {"errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded", "message": "User Rate Limit Exceeded"}], "code": 403, "message": "User Rate Limit Exceeded"}}"#;
    const RATE_LIMIT: &str = r#"{"error": {"errors": [{"domain": "usageLimits", "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"}], "code": 403, "message": "Rate Limit Exceeded"}}"#;
    const TOO_MANY: &str = r#"{"error": {"errors": [{"domain": "usageLimits", "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"}], "code": 429, "message": "Rate Limit Exceeded"}}"#;
    const FORBIDDEN: &str = r#"{"error": {"errors": [{"domain": "global", "reason": "forbiddenForNonOrganizer", "message": "Shared properties can only be changed by the organizer of the event."}], "code": 403, "message": "Shared properties can only be changed by the organizer of the event."}}"#;
    const NOT_FOUND: &str = r#"{"error": {"errors": [{"domain": "global", "reason": "notFound", "message": "Not Found"}], "code": 404, "message": "Not Found"}}"#;
    const TIME_RANGE_EMPTY: &str = r#"{"error": {"errors": [{"domain": "calendar", "reason": "timeRangeEmpty", "message": "The specified time range is empty.", "locationType": "parameter", "location": "timeMax"}], "code": 400, "message": "The specified time range is empty."}}"#;
    const BACKEND: &str = r#"{"error": {"errors": [{"domain": "global", "reason": "backendError", "message": "Backend Error"}], "code": 500, "message": "Backend Error"}}"#;
    const GONE: &str = r#"{"error": {"errors": [{"domain": "calendar", "reason": "fullSyncRequired", "message": "Sync token is no longer valid, a full sync is required."}], "code": 410, "message": "Sync token is no longer valid, a full sync is required."}}"#;

    fn upstream_failure(e: PluginError) -> UpstreamFailure {
        match e {
            PluginError::Upstream(f) => f,
            other => panic!("expected upstream, got {other:?}"),
        }
    }

    #[test]
    fn invalid_credentials_need_the_person_to_connect_again() {
        let e = error("events.list", 401, &[], INVALID_CREDENTIALS.as_bytes());
        assert!(
            matches!(&e, PluginError::Unauthorized(m) if m.contains("authError") && m.contains("Invalid Credentials")),
            "{e:?}"
        );
    }

    #[test]
    fn rate_limits_are_upstream_with_retry_after() {
        for (status, body) in [(403, USER_RATE_LIMIT), (403, RATE_LIMIT), (429, TOO_MANY)] {
            let f = upstream_failure(error(
                "events.list",
                status,
                &headers(&[("Retry-After", "12")]),
                body.as_bytes(),
            ));
            assert_eq!(f.status, Some(status));
            assert_eq!(f.retry_after_ms, Some(12_000));
            assert!(f.message.contains("Rate Limit Exceeded"), "{}", f.message);
        }
        let f = upstream_failure(error("events.list", 429, &[], b""));
        assert_eq!((f.status, f.retry_after_ms), (Some(429), None));
    }

    #[test]
    fn refused_requests_are_invalid_input_and_outages_upstream() {
        assert!(matches!(
            error("events.list", 403, &[], FORBIDDEN.as_bytes()),
            PluginError::InvalidInput(m) if m.contains("forbiddenForNonOrganizer")
        ));
        assert!(matches!(
            error("events.list", 404, &[], NOT_FOUND.as_bytes()),
            PluginError::InvalidInput(m) if m.contains("calendar_id")
        ));
        assert!(matches!(
            error("events.list", 400, &[], TIME_RANGE_EMPTY.as_bytes()),
            PluginError::InvalidInput(m) if m.contains("timeRangeEmpty")
        ));
        let f = upstream_failure(error("events.list", 500, &[], BACKEND.as_bytes()));
        assert_eq!(f.status, Some(500));
        let f = upstream_failure(error("events.list", 502, &[], b"<html>bad gateway</html>"));
        assert!(f.message.contains("HTTP 502"), "{}", f.message);
    }

    #[test]
    fn a_missing_scope_needs_consent_again() {
        let body = r#"{"error": {"code": 403, "message": "Request had insufficient authentication scopes.", "errors": [{"message": "Insufficient Permission", "domain": "global", "reason": "insufficientPermissions"}], "status": "PERMISSION_DENIED"}}"#;
        assert!(matches!(
            error("events.watch", 403, &[], body.as_bytes()),
            PluginError::Unauthorized(m) if m.contains("scope")
        ));
    }

    #[test]
    fn gone_is_an_answer_not_an_error() {
        assert!(matches!(
            list_answer(410, &[], GONE.as_bytes().to_vec()),
            Ok(ListAnswer::Gone)
        ));
        assert!(matches!(
            list_answer(200, &[], b"{}".to_vec()),
            Ok(ListAnswer::Page(b)) if b == b"{}"
        ));
        assert!(list_answer(401, &[], INVALID_CREDENTIALS.as_bytes().to_vec()).is_err());
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode_component("primary"), "primary");
        assert_eq!(
            encode_component("my_calendar@gmail.com"),
            "my_calendar%40gmail.com"
        );
        assert_eq!(
            encode_component("CPDAlvWDx70CEPDAlvWDx70CGAU="),
            "CPDAlvWDx70CEPDAlvWDx70CGAU%3D"
        );
        assert_eq!(encode_component("a+b/c d"), "a%2Bb%2Fc%20d");
        assert_eq!(encode_component("é"), "%C3%A9");
    }
}
