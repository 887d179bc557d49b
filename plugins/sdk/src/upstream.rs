//! Reading a provider API's answers as plugin errors: the pieces every channel
//! and push plugin needs, whatever the provider's own error body looks like.
//!
//! - [`retry_after_ms`]: the `Retry-After` header (RFC 9110, section 10.2.3:
//!   `HTTP-date / delay-seconds`), in milliseconds from now;
//! - [`upstream`] and [`upstream_status`]: the `upstream` plugin error, which the
//!   host may retry, with the status and `retry-after-ms` it carries;
//! - [`request_failure`]: why the host could not make the request at all (an
//!   [`HttpError`]), as the plugin error the operator or the host can act on.
//!
//! Each plugin still reads its provider's body (Slack's `ok: false`, Resend's
//! `{statusCode, name, message}`, Google's `google.rpc.Status`) and decides which
//! of its errors are final; these helpers only keep the shared parts in one place.

use crate::provider::http::HttpError;
use crate::provider::{PluginError, UpstreamFailure};

/// The first value of header `name` (compared case-insensitively) in a response's headers.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `Retry-After` as milliseconds from now: delay-seconds, or an HTTP-date (a date
/// already past means "now", 0). `None` when the header is absent or unreadable.
pub fn retry_after_ms(headers: &[(String, String)]) -> Option<u64> {
    retry_after_ms_at(headers, crate::now_ms())
}

/// [`retry_after_ms`] as of `now_ms` (milliseconds since the epoch).
pub fn retry_after_ms_at(headers: &[(String, String)], now_ms: i64) -> Option<u64> {
    let value = header(headers, "retry-after")?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than u64 seconds is "never" in practice: saturate.
        return Some(
            value
                .parse::<u64>()
                .unwrap_or(u64::MAX)
                .saturating_mul(1000),
        );
    }
    let at = http_date_ms(value)?;
    Some(u64::try_from(at.saturating_sub(now_ms)).unwrap_or(0))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 section 5.6.7) as
/// milliseconds since the epoch. The two obsolete formats, which recipients
/// "should" but need not accept, are not read.
pub fn http_date_ms(value: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = value.split_ascii_whitespace().collect();
    let [day_name, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    if day_name.len() != 4 || !day_name.ends_with(',') {
        return None;
    }
    let number = |s: &str, len: usize| -> Option<u32> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let day = number(day, 2).filter(|d| (1..=31).contains(d))?;
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let year = number(year, 4)?;
    let mut hms = time.split(':');
    let (hour, minute, second) = (
        number(hms.next()?, 2).filter(|h| *h < 24)?,
        number(hms.next()?, 2).filter(|m| *m < 60)?,
        number(hms.next()?, 2).filter(|s| *s <= 60)?,
    );
    if hms.next().is_some() {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds =
        days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second);
    Some(seconds * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The receipt for a message the provider accepted (a 2xx answer): the id at
/// `field` of its JSON answer. A JSON answer without it still means the
/// message was taken, so it is a delivery with no id rather than an error (an
/// error would be retried, and the person would get the message twice). A 2xx
/// that is not a JSON object is not the provider's API answering (a proxy's
/// or portal's page, a wrong `api_base`): `internal`, for the operator. An
/// empty id is no id.
pub fn accepted(
    service: &str,
    answer: &[u8],
    field: &str,
) -> Result<crate::provider::DeliveryReceipt, PluginError> {
    let Ok(serde_json::Value::Object(answer)) = serde_json::from_slice(answer) else {
        return Err(PluginError::Internal(format!(
            "{service} answered 2xx with something that is not its JSON: check the plugin's api_base"
        )));
    };
    Ok(crate::provider::DeliveryReceipt {
        // An empty id identifies nothing: the same as none.
        provider_message_id: answer
            .get(field)
            .and_then(|v| v.as_str())
            .filter(|id| !id.is_empty())
            .map(str::to_string),
    })
}

/// Whether an HTTP status says "try again later" whatever its body names: a
/// 429 or a 5xx. An error name in such an answer never makes it final.
pub fn says_later(status: u16) -> bool {
    status == 429 || status >= 500
}

/// The `upstream` plugin error: the provider failed, possibly for a while.
pub fn upstream(
    message: impl Into<String>,
    status: Option<u16>,
    retry_after_ms: Option<u64>,
) -> PluginError {
    PluginError::Upstream(UpstreamFailure {
        message: message.into(),
        status,
        retry_after_ms,
    })
}

/// The `upstream` plugin error for an HTTP answer: its status, and the
/// `Retry-After` its headers carry.
pub fn upstream_status(
    message: impl Into<String>,
    status: u16,
    headers: &[(String, String)],
) -> PluginError {
    upstream(message, Some(status), retry_after_ms(headers))
}

/// What a request authenticated with, to say who can fix a credential the host
/// could not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A person's (or an operator-seeded) connection: connecting it again fixes it.
    Connection,
    /// A secret the manifest names (an API key): the operator sets it.
    Secret,
    /// Nothing.
    None,
}

/// Why the host did not deliver the request, as a plugin error. `service` names
/// the call in messages ("Slack chat.postMessage", "Resend").
///
/// The provider unreachable, slow or too talkative is `upstream` (worth a
/// retry); a refused URL or header is the plugin's configuration, `internal`; a
/// credential the host cannot use is `unauthorized` for a connection (the person
/// connects again) and `internal` for a secret (the operator sets it).
pub fn request_failure(service: &str, error: HttpError, credential: Credential) -> PluginError {
    match error {
        HttpError::NotAllowed(m) => PluginError::Internal(format!(
            "{service}: the host refused the request ({m}); check the plugin's api_base and allowed_hosts"
        )),
        HttpError::InvalidRequest(m) => {
            PluginError::Internal(format!("{service}: malformed request: {m}"))
        }
        HttpError::CredentialUnavailable(m) => match credential {
            Credential::Connection => PluginError::Unauthorized(format!(
                "{service}: the connection's token cannot be used ({m}); connect the account again"
            )),
            Credential::Secret | Credential::None => PluginError::Internal(format!(
                "{service}: the credential is unavailable ({m}); set the secret with `presence-host secret set`"
            )),
        },
        HttpError::Timeout => upstream(format!("{service}: no answer in time"), None, None),
        HttpError::TooLarge => upstream(
            format!("{service}: the answer exceeded the plugin's response-size cap"),
            None,
            None,
        ),
        HttpError::Transport(m) => upstream(format!("{service}: cannot reach it: {m}"), None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // RFC 9110 section 10.2.3's own examples: `Retry-After: 120` and
    // `Retry-After: Fri, 31 Dec 1999 23:59:59 GMT`.
    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(
            retry_after_ms_at(&headers(&[("Retry-After", "120")]), 0),
            Some(120_000)
        );
        assert_eq!(
            retry_after_ms_at(&headers(&[("retry-after", " 3 ")]), 0),
            Some(3_000)
        );
        let date = http_date_ms("Fri, 31 Dec 1999 23:59:59 GMT").unwrap();
        assert_eq!(date, 946_684_799_000);
        let h = headers(&[("Retry-After", "Fri, 31 Dec 1999 23:59:59 GMT")]);
        assert_eq!(retry_after_ms_at(&h, date - 5_000), Some(5_000));
        assert_eq!(retry_after_ms_at(&h, date + 5_000), Some(0), "past: now");
        assert_eq!(retry_after_ms_at(&headers(&[]), 0), None);
        for bad in ["", "soon", "-1", "1.5", "Fri, 31 Dec 1999 23:59:59 UTC"] {
            assert_eq!(
                retry_after_ms_at(&headers(&[("Retry-After", bad)]), 0),
                None,
                "{bad:?}"
            );
        }
        assert_eq!(
            retry_after_ms_at(&headers(&[("Retry-After", "99999999999999999999999")]), 0),
            Some(u64::MAX)
        );
    }

    // RFC 9110 section 5.6.7's example: "Sun, 06 Nov 1994 08:49:37 GMT".
    #[test]
    fn imf_fixdates_parse_and_other_forms_do_not() {
        assert_eq!(
            http_date_ms("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        assert_eq!(http_date_ms("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date_ms("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400_000)
        );
        // The obsolete RFC 850 and asctime forms.
        assert_eq!(http_date_ms("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(http_date_ms("Sun Nov  6 08:49:37 1994"), None);
        assert_eq!(http_date_ms("Sun, 06 Nov 1994 24:00:00 GMT"), None);
        assert_eq!(http_date_ms("Sun, 6 Nov 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn request_failures_say_who_can_fix_them() {
        assert!(matches!(
            request_failure("Resend", HttpError::Timeout, Credential::Secret),
            PluginError::Upstream(UpstreamFailure { status: None, .. })
        ));
        assert!(matches!(
            request_failure("Slack chat.postMessage", HttpError::CredentialUnavailable("gone".into()), Credential::Connection),
            PluginError::Unauthorized(m) if m.contains("Slack chat.postMessage") && m.contains("gone")
        ));
        assert!(matches!(
            request_failure("Resend", HttpError::CredentialUnavailable("email.api-key is not set".into()), Credential::Secret),
            PluginError::Internal(m) if m.contains("secret set")
        ));
        assert!(matches!(
            request_failure("FCM", HttpError::NotAllowed("x".into()), Credential::Connection),
            PluginError::Internal(m) if m.contains("allowed_hosts")
        ));
        assert!(matches!(
            request_failure("FCM", HttpError::Transport("refused".into()), Credential::Connection),
            PluginError::Upstream(UpstreamFailure { ref message, .. }) if message.contains("refused")
        ));
    }

    #[test]
    fn upstream_status_carries_retry_after() {
        assert_eq!(
            upstream_status("busy", 503, &headers(&[("Retry-After", "7")])),
            PluginError::Upstream(UpstreamFailure {
                message: "busy".into(),
                status: Some(503),
                retry_after_ms: Some(7_000),
            })
        );
    }
}
