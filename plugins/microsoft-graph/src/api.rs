//! Calling Microsoft Graph through the host, and reading its answers as plugin
//! errors.
//!
//! Every request names the person's connection; the host adds its access
//! token as `Authorization: Bearer ...`. Graph's errors are `{"error":
//! {"code", "message", "innerError"}}` ("Microsoft Graph error responses and
//! resource types"); how they are reported:
//! - 401 (`InvalidAuthenticationToken`) and 403 (`Authorization_RequestDenied`,
//!   `ErrorAccessDenied`: a scope missing): `unauthorized`, since the person
//!   must connect again (the host first tries a token refresh);
//! - 429 and 5xx ("Microsoft Graph throttling guidance": `Retry-After` in
//!   seconds): `upstream` with the status and `retry-after-ms`;
//! - other 4xx: `invalid-input` with Graph's code and message, as the same
//!   request would be refused again.
//!
//! Callers read the statuses that mean something to them first (404 on a
//! renewal, 410 on a delta cursor).

use presence_sdk::provider::PluginError;
use presence_sdk::provider::http::{self, Request, Response};
use presence_sdk::upstream::{Credential, request_failure, upstream_status};
use serde_json::Value;

/// Where Graph is, unless the `api_base` config key says otherwise.
pub const DEFAULT_API_BASE: &str = "https://graph.microsoft.com";

/// How many events a delta page may carry (`Prefer: odata.maxpagesize`).
pub const PAGE_SIZE: u32 = 100;

/// The `api_base` setting, without a trailing slash.
pub fn api_base() -> String {
    presence_sdk::settings::api_base(&presence_sdk::provider::config::get, DEFAULT_API_BASE)
}

/// Sends one request with the connection's token. `service` names the call in messages.
pub fn send(
    service: &str,
    method: &str,
    url: &str,
    body: Option<&Value>,
    extra_headers: &[(&str, String)],
    connection: &str,
) -> Result<Response, PluginError> {
    let mut headers = vec![("accept".to_string(), "application/json".to_string())];
    if body.is_some() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    headers.extend(
        extra_headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone())),
    );
    http::send(&Request {
        method: method.into(),
        url: url.into(),
        headers,
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        connection: Some(connection.into()),
        bearer_secret: None,
    })
    .map_err(|e| request_failure(service, e, Credential::Connection))
}

/// The `Prefer` headers of calendar reads: a page size, and times in UTC.
pub fn calendar_preferences() -> [(&'static str, String); 2] {
    [
        ("prefer", format!("odata.maxpagesize={PAGE_SIZE}")),
        ("prefer", "outlook.timezone=\"UTC\"".to_string()),
    ]
}

/// Graph's error code in an error body, if it has one.
pub fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/code")?.as_str().map(str::to_string)
}

/// A non-2xx answer as a plugin error.
pub fn failure(service: &str, response: &Response) -> PluginError {
    let detail: Option<(String, String)> = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("code")?.as_str()?.to_string(),
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ))
        });
    let what = match &detail {
        Some((code, message)) => format!(
            "{service}: Graph answered {} {code}: {message}",
            response.status
        ),
        None => format!("{service}: Graph answered {}", response.status),
    };
    match response.status {
        401 | 403 => {
            PluginError::Unauthorized(format!("{what}; connect the Microsoft account again"))
        }
        429 | 500..=599 => upstream_status(what, response.status, &response.headers),
        400..=499 => PluginError::InvalidInput(what),
        _ => upstream_status(what, response.status, &response.headers),
    }
}

/// A 2xx answer's JSON object, or the answer as a plugin error.
pub fn json(service: &str, response: Response) -> Result<Value, PluginError> {
    if !(200..300).contains(&response.status) {
        return Err(failure(service, &response));
    }
    match serde_json::from_slice(&response.body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(PluginError::Internal(format!(
            "{service}: Graph answered {} with something that is not its JSON; check the plugin's api_base",
            response.status
        ))),
    }
}

/// The person's Graph user id (`GET /v1.0/me`, field `id`).
pub fn my_id(api_base: &str, connection: &str) -> Result<String, PluginError> {
    let service = "Graph GET /me";
    let me = json(
        service,
        send(
            service,
            "GET",
            &format!("{api_base}/v1.0/me"),
            None,
            &[],
            connection,
        )?,
    )?;
    me.get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(|| PluginError::Internal(format!("{service}: the answer has no id")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn graph_errors_become_plugin_errors() {
        // "Microsoft Graph error responses": the documented error shape.
        let unauthorized = response(
            401,
            &[],
            r#"{"error": {"code": "InvalidAuthenticationToken",
            "message": "Access token has expired or is not yet valid.", "innerError": {"request-id": "x"}}}"#,
        );
        assert!(matches!(failure("Graph GET /me", &unauthorized),
            PluginError::Unauthorized(m) if m.contains("InvalidAuthenticationToken")));
        let throttled = response(
            429,
            &[("Retry-After", "10")],
            r#"{"error": {"code": "TooManyRequests", "message": "Please retry again later."}}"#,
        );
        assert!(matches!(failure("s", &throttled),
            PluginError::Upstream(f) if f.status == Some(429) && f.retry_after_ms == Some(10_000)));
        let bad = response(
            400,
            &[],
            r#"{"error": {"code": "InvalidRequest", "message": "bad"}}"#,
        );
        assert!(
            matches!(failure("s", &bad), PluginError::InvalidInput(m) if m.contains("InvalidRequest: bad"))
        );
        assert!(matches!(
            failure("s", &response(503, &[], "<html>")),
            PluginError::Upstream(_)
        ));
        assert_eq!(
            error_code(bad.body.as_slice()).as_deref(),
            Some("InvalidRequest")
        );
        assert!(matches!(
            json("s", response(200, &[], "[]")),
            Err(PluginError::Internal(_))
        ));
    }
}
