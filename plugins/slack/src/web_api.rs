//! Calling Slack's Web API through the host, and reading its answers as plugin errors.
//!
//! The request names the person's connection; the host adds its user token as
//! `Authorization: Bearer xoxp-...` (Slack's preferred way, and the only one for
//! JSON bodies). The plugin never sees the token.
//!
//! Slack answers most failures with HTTP 200 and `{"ok": false, "error": "<code>"}`
//! (Web API basics: "callers should always check the value of the ok param").
//! How each code is reported, from the method pages and the common errors:
//! - the token no longer works (`invalid_auth`, `not_authed`, `token_revoked`,
//!   `token_expired`, `account_inactive`, `missing_scope`, ...): `unauthorized`,
//!   since only the person reconnecting Slack (re-consent) fixes it;
//! - `ratelimited`, or HTTP 429 (docs/apis/web-api/rate-limits: "a Retry-After
//!   HTTP header containing the number of seconds until you can retry"):
//!   `upstream` with status 429 and `retry-after-ms`; chat.postMessage's page
//!   spells the code `rate_limited` ("Application has posted too many
//!   messages"), so both spellings are read as a rate limit;
//! - HTTP 5xx and Slack's own trouble (`internal_error`, `fatal_error`,
//!   `profile_set_failed`, ...): `upstream` with the status, worth a retry;
//! - the request itself was refused (`too_long`, `invalid_emoji_not_allowed`,
//!   `invalid_presence`, `invalid_profile`, ...), or cannot reach where it goes
//!   (chat.postMessage's `channel_not_found`, `not_in_channel`, `is_archived`,
//!   `msg_too_long`, `restricted_action`, ...): `invalid-input`, as the same
//!   request would be refused again.
//!
//! Sources: <https://docs.slack.dev/apis/web-api/>,
//! <https://docs.slack.dev/apis/web-api/rate-limits>, and each method's page
//! under <https://docs.slack.dev/reference/methods/>.

use presence_sdk::provider::PluginError;
use presence_sdk::provider::http::{self, Request};
use presence_sdk::upstream::{Credential, request_failure, retry_after_ms, upstream};
use serde_json::Value;

/// Error codes meaning the connection's token cannot be used: the person must
/// connect Slack again. `not_allowed_token_type`, `is_bot` and `user_is_bot` say
/// the token is not a user token (users.profile.set "requires a user access token").
const RECONSENT: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "missing_scope",
    "no_permission",
    "not_allowed_token_type",
    "is_bot",
    "user_is_bot",
];

/// Error codes for a request Slack will refuse however often it is sent.
const REFUSED_REQUEST: &[&str] = &[
    "too_long",
    "invalid_emoji_not_allowed",
    "must_clear_both_status_text_and_status_emoji",
    "invalid_profile",
    "invalid_presence",
    "invalid_arguments",
    "invalid_arg_name",
    "invalid_array_arg",
    "invalid_charset",
    "invalid_form_data",
    "invalid_post_type",
    "missing_post_type",
    "invalid_json",
    "json_not_object",
    // chat.postMessage (docs.slack.dev/reference/methods/chat.postMessage, "Errors").
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "msg_too_long",
    "no_text",
    "restricted_action",
    "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel",
    "restricted_action_non_threadable_channel",
    "too_many_attachments",
    "as_user_not_supported",
    "ekm_access_denied",
];

/// Error codes for Slack's own, passing trouble: worth a retry later.
const SLACK_TROUBLE: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "profile_set_failed",
    "partial_profile_set_failed",
    "team_added_to_org",
    "org_login_required",
];

/// Calls `{api_base}/api/{method}` for `connection`; the answer (`"ok": true`
/// and whatever the method returns), or why not.
pub fn call(
    api_base: &str,
    method: &str,
    content_type: &str,
    body: Vec<u8>,
    connection: &str,
) -> Result<Value, PluginError> {
    let request = Request {
        method: "POST".into(),
        url: format!("{api_base}/api/{method}"),
        headers: vec![("content-type".into(), content_type.into())],
        body,
        connection: Some(connection.to_string()),
        bearer_secret: None,
    };
    let response = http::send(&request)
        .map_err(|e| request_failure(&format!("Slack {method}"), e, Credential::Connection))?;
    outcome(method, response.status, &response.headers, &response.body)
}

/// What Slack's answer to `method` means: the answer itself when `"ok": true`.
pub fn outcome(
    method: &str,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Value, PluginError> {
    let retry_after_ms = retry_after_ms(headers);
    if status == 429 {
        return Err(upstream(
            format!("Slack {method}: rate limited (HTTP 429)"),
            Some(429),
            retry_after_ms,
        ));
    }
    if status >= 500 {
        return Err(upstream(
            format!("Slack {method}: HTTP {status}"),
            Some(status),
            retry_after_ms,
        ));
    }
    let answer: Option<Value> = serde_json::from_slice(body).ok();
    let ok = answer
        .as_ref()
        .and_then(|a| a.get("ok"))
        .and_then(Value::as_bool);
    match (status, answer) {
        (200..=299, Some(answer)) if ok == Some(true) => Ok(answer),
        (_, Some(answer)) if ok == Some(false) => {
            let code = answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown_error");
            Err(slack_error(method, code, retry_after_ms))
        }
        _ => Err(upstream(
            format!("Slack {method}: HTTP {status} without a Web API answer"),
            Some(status),
            retry_after_ms,
        )),
    }
}

/// The plugin error for an `ok: false` answer carrying `code`.
pub fn slack_error(method: &str, code: &str, retry_after_ms: Option<u64>) -> PluginError {
    if RECONSENT.contains(&code) {
        return PluginError::Unauthorized(format!(
            "Slack {method}: {code}; the connection's token no longer works, so the person must connect Slack again"
        ));
    }
    if code == "ratelimited" || code == "rate_limited" {
        return upstream(format!("Slack {method}: {code}"), Some(429), retry_after_ms);
    }
    if REFUSED_REQUEST.contains(&code) {
        return PluginError::InvalidInput(format!("Slack {method} refused the request: {code}"));
    }
    let why = if SLACK_TROUBLE.contains(&code) {
        "Slack could not complete it; retry later"
    } else {
        "an error this plugin does not know"
    };
    upstream(
        format!("Slack {method}: {code} ({why})"),
        None,
        retry_after_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Result<(), PluginError> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        outcome("users.profile.set", status, &headers, body.as_bytes()).map(|_| ())
    }

    fn failure(r: Result<(), PluginError>) -> presence_sdk::provider::UpstreamFailure {
        match r {
            Err(PluginError::Upstream(f)) => f,
            other => panic!("expected upstream, got {other:?}"),
        }
    }

    // users.profile.set's "Common successful response": {"ok": true, "profile": {...}}.
    #[test]
    fn ok_true_is_success() {
        assert_eq!(answer(200, &[], r#"{"ok":true,"profile":{}}"#), Ok(()));
        assert_eq!(
            answer(200, &[], r#"{"ok":true,"warning":"missing_charset"}"#),
            Ok(())
        );
    }

    // Common errors of every method: not_authed, invalid_auth, account_inactive,
    // token_revoked, token_expired, missing_scope.
    #[test]
    fn dead_tokens_need_reconsent() {
        for code in [
            "invalid_auth",
            "not_authed",
            "token_revoked",
            "token_expired",
            "account_inactive",
            "missing_scope",
        ] {
            match answer(200, &[], &format!(r#"{{"ok":false,"error":"{code}"}}"#)) {
                Err(PluginError::Unauthorized(m)) => assert!(m.contains(code), "{m}"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    // Rate limits: "HTTP 429 Too Many Requests ... a Retry-After HTTP header
    // containing the number of seconds until you can retry".
    #[test]
    fn rate_limits_carry_retry_after() {
        let f = failure(answer(
            429,
            &[("Retry-After", "30")],
            r#"{"ok":false,"error":"ratelimited"}"#,
        ));
        assert_eq!((f.status, f.retry_after_ms), (Some(429), Some(30_000)));
        let f = failure(answer(
            200,
            &[("retry-after", "2")],
            r#"{"ok":false,"error":"ratelimited"}"#,
        ));
        assert_eq!((f.status, f.retry_after_ms), (Some(429), Some(2_000)));
        let f = failure(answer(429, &[], ""));
        assert_eq!((f.status, f.retry_after_ms), (Some(429), None));
    }

    #[test]
    fn server_errors_are_upstream_with_their_status() {
        let f = failure(answer(503, &[("Retry-After", "5")], "<html>down</html>"));
        assert_eq!((f.status, f.retry_after_ms), (Some(503), Some(5_000)));
        let f = failure(answer(500, &[], ""));
        assert_eq!(f.status, Some(500));
        // Slack's own failure inside a 200.
        let f = failure(answer(
            200,
            &[],
            r#"{"ok":false,"error":"profile_set_failed"}"#,
        ));
        assert_eq!(f.status, None);
        assert!(f.message.contains("profile_set_failed"), "{}", f.message);
        let f = failure(answer(200, &[], "not json"));
        assert_eq!(f.status, Some(200));
        let f = failure(answer(404, &[], "Not Found"));
        assert_eq!(f.status, Some(404));
    }

    // users.profile.set errors: too_long ("longer than the maximum allowed, 100"),
    // invalid_emoji_not_allowed, must_clear_both_status_text_and_status_emoji;
    // users.setPresence: invalid_presence.
    #[test]
    fn refused_requests_are_invalid_input() {
        for code in [
            "too_long",
            "invalid_emoji_not_allowed",
            "must_clear_both_status_text_and_status_emoji",
            "invalid_presence",
        ] {
            match answer(200, &[], &format!(r#"{{"ok":false,"error":"{code}"}}"#)) {
                Err(PluginError::InvalidInput(m)) => assert!(m.contains(code), "{m}"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_codes_are_upstream_and_named() {
        let f = failure(answer(
            200,
            &[],
            r#"{"ok":false,"error":"brand_new_error"}"#,
        ));
        assert!(f.message.contains("brand_new_error"), "{}", f.message);
        let f = failure(answer(200, &[], r#"{"ok":false}"#));
        assert!(f.message.contains("unknown_error"), "{}", f.message);
    }
}
