//! Fuzz targets: the notification channels' reading of their APIs' answers —
//! the email plugin's of Resend's Send Email answers, the push plugin's of
//! Firebase Cloud Messaging's HTTP v1 `messages:send` answers (APNs is reached
//! through FCM, so its answers are FCM's).
//!
//! ```sh
//! cargo bolero test -p presence-fuzz --test channels email_answers -T 600
//! cargo bolero test -p presence-fuzz --test channels push_answers -T 600
//! ```
//!
//! Both plugins turn an answer into a receipt or a plugin error, and the host
//! acts on that: `invalid-input` is final for the channel, `upstream` is tried
//! again after at least `retry-after-ms` (the host caps the wait), the other
//! errors are tried again up to the round limit.

use presence_fuzz::{Edit, FieldEdit, edit_json, few};
use presence_sdk::provider::{DeliveryReceipt, PluginError, UpstreamFailure};
use presence_sdk::upstream::retry_after_ms_at;
use serde_json::{Value, json};

/// A documented answer of an API: its status, and its body.
struct Answer {
    status: u16,
    body: &'static [u8],
}

/// Statuses an API (or a proxy in front of it) answers with.
const STATUSES: [u16; 18] = [
    200, 201, 202, 400, 401, 403, 404, 405, 409, 413, 418, 422, 429, 451, 500, 502, 503, 504,
];

/// `Retry-After` values: delay-seconds, IMF-fixdates past and future, and
/// what RFC 9110 does not allow.
const RETRY_AFTER: [&str; 10] = [
    "1",
    "60",
    " 3 ",
    "99999999999999999999999",
    "Fri, 31 Dec 1999 23:59:59 GMT",
    "Sun, 06 Nov 2044 08:49:37 GMT",
    "-1",
    "1.5",
    "soon",
    "",
];

/// The answer's headers: mostly none or a documented `Retry-After`, else the fuzzer's.
fn headers(pick: u8, text: &str) -> Vec<(String, String)> {
    let name = if pick & 1 == 0 {
        "retry-after"
    } else {
        "Retry-After"
    };
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    match pick / 2 % 4 {
        0 => {}
        1 | 2 => headers.push((
            name.to_string(),
            RETRY_AFTER[pick as usize / 8 % RETRY_AFTER.len()].to_string(),
        )),
        _ => headers.push((name.to_string(), text.to_string())),
    }
    headers
}

/// A plugin's `receipt_of`: status, headers and body to a receipt or an error.
type ReceiptOf = fn(u16, &[(String, String)], &[u8]) -> Result<DeliveryReceipt, PluginError>;

/// The plugins' answer-reading functions, and what their answers look like.
struct Api {
    service: &'static str,
    /// Where the accepted message's id is.
    id_field: &'static str,
    receipt_of: ReceiptOf,
    answers: &'static [Answer],
    paths: &'static [&'static str],
    constants: Vec<Value>,
}

/// Everything either plugin promises of any answer:
/// - a 2xx is never an error the host retries as a failed send (`upstream`)
///   nor a final one: it is the receipt, or `internal` when it is not the
///   API's JSON (a proxy's page, a wrong `api_base`);
/// - a receipt only for a 2xx, whose id is the answer's, never empty (an
///   empty one is none);
/// - `upstream` carries the answer's status and exactly the `Retry-After` the
///   answer sent (none invented, none lost; the host caps the wait);
/// - a final error (`invalid-input`) only for a 4xx other than 429: a 5xx or
///   a 429 says "try again later", whatever the body;
/// - every error names the service and the status.
fn check_answer(api: &Api, status: u16, headers: &[(String, String)], body: &[u8]) {
    let before = presence_sdk::now_ms();
    let result = (api.receipt_of)(status, headers, body);
    let after = presence_sdk::now_ms();
    let context = format!(
        "{} HTTP {status}, headers {headers:?}, body {}",
        api.service,
        String::from_utf8_lossy(body)
    );
    let success = (200..300).contains(&status);
    let json_object = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object);
    match &result {
        Ok(receipt) => {
            assert!(success, "a {status} answer was taken as sent\n{context}");
            let said = json_object
                .as_ref()
                .and_then(|a| a.get(api.id_field))
                .and_then(Value::as_str)
                // An empty id is no id.
                .filter(|id| !id.is_empty());
            assert_eq!(
                receipt.provider_message_id.as_deref(),
                said,
                "the receipt is not the answer's id\n{context}"
            );
            assert!(
                receipt
                    .provider_message_id
                    .as_ref()
                    .is_none_or(|id| !id.is_empty()),
                "a receipt with an empty message id: {receipt:?}\n{context}"
            );
        }
        Err(e) if success => {
            assert!(
                matches!(e, PluginError::Internal(_)) && json_object.is_none(),
                "a 2xx answer became {e:?}\n{context}"
            );
        }
        Err(e) => {
            let message = match e {
                PluginError::Upstream(UpstreamFailure {
                    message,
                    status: said,
                    retry_after_ms,
                }) => {
                    assert_eq!(*said, Some(status), "{context}");
                    // Retry-After as the SDK reads it, at the time of the call.
                    let (late, early) = (
                        retry_after_ms_at(headers, before),
                        retry_after_ms_at(headers, after),
                    );
                    assert!(
                        match (retry_after_ms, late, early) {
                            (None, None, None) => true,
                            (Some(ms), Some(late), Some(early)) => early <= *ms && *ms <= late,
                            _ => false,
                        },
                        "retry after {retry_after_ms:?} ms, but the answer said {:?}\n{context}",
                        presence_sdk::upstream::header(headers, "retry-after")
                    );
                    message
                }
                PluginError::InvalidInput(message) => {
                    assert!(
                        (400..500).contains(&status) && status != 429,
                        "HTTP {status} made a final error: {message}\n{context}"
                    );
                    message
                }
                PluginError::Unauthorized(message)
                | PluginError::Internal(message)
                | PluginError::Unsupported(message) => message,
            };
            assert!(
                message.contains(api.service) && message.contains(&format!("({status})")),
                "{message:?} does not name the service and the status\n{context}"
            );
        }
    }
}

/// One input of a channel target: the seed answer, its status or another, a
/// `Retry-After` or none, and edits of the body's fields and bytes.
type Input = (u8, u8, u8, String, Vec<FieldEdit>, Vec<Edit>);

/// Reads the answer `input` makes of `api`'s documented ones, and checks it.
fn check_input(api: &Api, input: &Input) {
    let (seed, status, retry, retry_text, fields, edits) = input;
    let answer = &api.answers[*seed as usize % api.answers.len()];
    let status = if status % 2 == 0 {
        answer.status
    } else {
        STATUSES[*status as usize / 2 % STATUSES.len()]
    };
    let (fields, edits) = (few(fields, 3), few(edits, 4));
    let body = edit_json(answer.body, api.paths, &api.constants, fields, edits);
    check_answer(api, status, &headers(*retry, retry_text), &body);
}

/// Resend's Send Email answers (resend.com/docs/api-reference/emails/send-email
/// and /errors): the email's id, or `{statusCode, name, message}`.
#[test]
fn email_answers() {
    const ANSWERS: &[Answer] = &[
        Answer {
            status: 200,
            body: br#"{"id":"49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}"#,
        },
        Answer {
            status: 429,
            body: br#"{"statusCode":429,"name":"rate_limit_exceeded","message":"Too many requests. Please limit the number of requests per second. Or contact support to increase rate limit."}"#,
        },
        Answer {
            status: 429,
            body: br#"{"statusCode":429,"name":"daily_quota_exceeded","message":"You have reached your daily email sending quota."}"#,
        },
        Answer {
            status: 422,
            body: br#"{"statusCode":422,"name":"missing_required_field","message":"Missing `to` field."}"#,
        },
        Answer {
            status: 422,
            body: br#"{"statusCode":422,"name":"invalid_from_address","message":"Invalid `from` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format."}"#,
        },
        Answer {
            status: 401,
            body: br#"{"statusCode":401,"name":"missing_api_key","message":"Missing API key in the authorization header. Include the following header `Authorization: Bearer YOUR_API_KEY` in the request."}"#,
        },
        Answer {
            status: 403,
            body: br#"{"statusCode":403,"name":"validation_error","message":"You can only send testing emails to your own email address (ana@example.com)."}"#,
        },
        Answer {
            status: 409,
            body: br#"{"statusCode":409,"name":"concurrent_idempotent_requests","message":"Same idempotency key used while original request is still in progress."}"#,
        },
        Answer {
            status: 409,
            body: br#"{"statusCode":409,"name":"invalid_idempotent_request","message":"Same idempotency key used with a different request payload."}"#,
        },
        Answer {
            status: 500,
            body: br#"{"statusCode":500,"name":"application_error","message":"An unexpected error occurred."}"#,
        },
    ];
    let names = [
        "rate_limit_exceeded",
        "daily_quota_exceeded",
        "monthly_quota_exceeded",
        "concurrent_idempotent_requests",
        "application_error",
        "internal_server_error",
        "missing_api_key",
        "invalid_api_key",
        "restricted_api_key",
        "invalid_from_address",
        "validation_error",
        "not_found",
        "method_not_allowed",
        "invalid_idempotency_key",
        "invalid_idempotent_request",
        "missing_required_field",
        "invalid_parameter",
        "invalid_attachment",
        "security_error",
        "brand_new_error",
        "",
    ];
    let api = Api {
        service: "Resend",
        id_field: "id",
        receipt_of: email::resend::receipt_of,
        answers: ANSWERS,
        paths: &["id", "statusCode", "name", "message"],
        constants: names.iter().map(|n| json!(n)).collect(),
    };
    presence_fuzz::fuzz!(Input, |input| check_input(&api, input));
}

/// FCM HTTP v1 `messages:send` answers (firebase.google.com/docs/reference/fcm/rest/v1/
/// projects.messages/send and ErrorCode): the message's `name`, or a
/// `google.rpc.Status` with an `FcmError` detail.
#[test]
fn push_answers() {
    const ANSWERS: &[Answer] = &[
        Answer {
            status: 200,
            body: br#"{"name":"projects/myproject-b5ae1/messages/0:1500415314455276%31bd1c9631bd1c96"}"#,
        },
        Answer {
            status: 400,
            body: br#"{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"}]}}"#,
        },
        Answer {
            status: 400,
            body: br#"{"error":{"code":400,"message":"Invalid value at 'message.data[0].value' (TYPE_STRING), 12","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.data[0].value","description":"Invalid value at 'message.data[0].value' (TYPE_STRING), 12"}]}]}}"#,
        },
        Answer {
            status: 404,
            body: br#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#,
        },
        Answer {
            status: 403,
            body: br#"{"error":{"code":403,"message":"SenderId mismatch","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"SENDER_ID_MISMATCH"}]}}"#,
        },
        Answer {
            status: 429,
            body: br#"{"error":{"code":429,"message":"Quota exceeded for quota metric 'Send requests'.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"}]}}"#,
        },
        Answer {
            status: 503,
            body: br#"{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNAVAILABLE"}]}}"#,
        },
        Answer {
            status: 401,
            body: br#"{"error":{"code":401,"message":"Auth error from APNS or Web Push Service","status":"UNAUTHENTICATED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"THIRD_PARTY_AUTH_ERROR"}]}}"#,
        },
        Answer {
            status: 401,
            body: br#"{"error":{"code":401,"message":"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.","status":"UNAUTHENTICATED"}}"#,
        },
    ];
    let codes = [
        "UNREGISTERED",
        "SENDER_ID_MISMATCH",
        "INVALID_ARGUMENT",
        "QUOTA_EXCEEDED",
        "UNAVAILABLE",
        "INTERNAL",
        "THIRD_PARTY_AUTH_ERROR",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "NOT_FOUND",
        "RESOURCE_EXHAUSTED",
        push::fcm::FCM_ERROR_TYPE,
        "type.googleapis.com/google.rpc.BadRequest",
        "",
    ];
    let mut constants: Vec<Value> = codes.iter().map(|c| json!(c)).collect();
    constants.push(json!({"@type": push::fcm::FCM_ERROR_TYPE, "errorCode": "UNREGISTERED"}));
    constants.push(json!([]));
    let api = Api {
        service: "FCM",
        id_field: "name",
        receipt_of: push::fcm::receipt_of,
        answers: ANSWERS,
        paths: &[
            "name",
            "error",
            "error.code",
            "error.status",
            "error.message",
            "error.details",
            "error.details.0",
            "error.details.0.@type",
            "error.details.0.errorCode",
            "error.details.1",
        ],
        constants,
    };
    presence_fuzz::fuzz!(Input, |input| check_input(&api, input));
}
