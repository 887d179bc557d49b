//! A loopback Firebase Cloud Messaging (HTTP v1), as its public documentation
//! describes `projects.messages.send`:
//!
//! - `POST /v1/projects/{project_id}/messages:send` with `Authorization: Bearer
//!   <OAuth 2.0 access token>` and `{"message": Message}`
//!   (<https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages/send>);
//!   an accepted message is recorded and answered with the Message's `name`,
//!   `projects/{project_id}/messages/0:<digits>%<hex>`, shaped as the docs'
//!   example. `validate_only: true` is checked and answered the same, but not
//!   recorded as sent.
//! - The Message as the reference describes it
//!   (<https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages>):
//!   exactly one target (`token`, `topic` or `condition`); `notification.title`
//!   and `.body` strings; `data` string values only, without the reserved keys
//!   (`from`, `gcm`, or starting with `google`); `android.priority` `NORMAL` or
//!   `HIGH` (any case); `apns.headers` string values; the payload (the keys and
//!   values of `notification` and `data`) at most 4096 bytes.
//! - Errors as `google.rpc.Status` bodies with an `FcmError` detail, per the
//!   error-codes pages (<https://firebase.google.com/docs/cloud-messaging/error-codes>,
//!   <https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode>):
//!   `INVALID_ARGUMENT` (400; a token never registered is "The registration
//!   token is not a valid FCM registration token", the docs' example; a bad
//!   value has a `google.rpc.BadRequest` detail), `UNREGISTERED` (404, a token
//!   [`FcmEmulator::unregister`]ed), and on request `QUOTA_EXCEEDED` (429),
//!   `UNAVAILABLE` (503), both with `Retry-After`, and `INTERNAL` (500). A
//!   missing or unknown access token is Google's `401 UNAUTHENTICATED` (no
//!   FcmError); another project than the emulator's is `404 NOT_FOUND`.
//!
//! Holds work as in the Resend emulator: [`FcmEmulator::hold_next_after_accepting`]
//! records the message (FCM has delivered it) and withholds the answer;
//! [`FcmEmulator::hold_next_before_accepting`] waits unread. FCM has no
//! idempotency key: a retry after a lost answer is a second message, recorded
//! as such.
//!
//! Not emulated: delivery to devices, topics' subscribers, message rate limits
//! by themselves (only on request), and the wording of messages the docs do not
//! give, which is the emulator's.

use super::hold::{Holds, wait_until};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The Firebase project the emulator serves (the plugin's `project_id`).
pub const PROJECT_ID: &str = "presence-emulator";
/// The service account's access token the emulator accepts (seed it as the
/// plugin's connection).
pub const ACCESS_TOKEN: &str = "ya29.emulator-service-account-token";
/// FCM's payload ceiling "for most messages", keys and values counted.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// The `@type` of FCM's error detail.
pub const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// A message FCM accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct PushMessage {
    /// `projects/{project}/messages/{id}`, as answered.
    pub name: String,
    /// The registration token (`None` for a topic or condition).
    pub token: Option<String>,
    pub title: Option<String>,
    pub body: Option<String>,
    /// `data`, string values.
    pub data: Map<String, Value>,
    /// `android.priority` as sent.
    pub android_priority: Option<String>,
    /// `apns.headers["apns-priority"]` as sent.
    pub apns_priority: Option<String>,
    /// `android.notification.tag` as sent.
    pub android_tag: Option<String>,
    /// `apns.headers["apns-collapse-id"]` as sent.
    pub apns_collapse_id: Option<String>,
    /// The whole `message` object as received.
    pub message: Value,
    pub at_ms: i64,
}

/// One request to `messages:send` and how it was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct FcmRequest {
    pub project: String,
    pub body: Value,
    pub status: u16,
    /// The FcmError `errorCode`, else the canonical `status` of an error answer.
    pub error: Option<String>,
    /// The message `name` for a 200.
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
enum Trouble {
    QuotaExceeded { retry_after_s: u64 },
    Unavailable { retry_after_s: u64 },
    Internal,
    HoldAfterAccepting,
    HoldBeforeAccepting,
}

#[derive(Default)]
struct Project {
    tokens: HashSet<String>,
    devices: HashSet<String>,
    unregistered: HashSet<String>,
    messages: Vec<PushMessage>,
    requests: Vec<FcmRequest>,
    arrivals: usize,
    trouble: VecDeque<Trouble>,
    next_message: u64,
}

struct Shared {
    project_id: String,
    state: Mutex<Project>,
    holds: Holds,
}

/// The emulator, serving on a loopback port until its runtime ends.
pub struct FcmEmulator {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FcmEmulator {
    /// Starts project [`PROJECT_ID`], accepting [`ACCESS_TOKEN`], with no devices.
    pub async fn start() -> Self {
        let mut project = Project::default();
        project.tokens.insert(ACCESS_TOKEN.into());
        let shared = Arc::new(Shared {
            project_id: PROJECT_ID.into(),
            state: Mutex::new(project),
            holds: Holds::default(),
        });
        // axum cannot route on a colon inside a segment: the segment is read whole.
        let app = axum::Router::new()
            .route("/v1/projects/{project}/{action}", axum::routing::post(send))
            .with_state(shared.clone());
        let addr = super::serve_loopback(app).await;
        Self { addr, shared }
    }

    /// The plugin's `api_base`: `http://127.0.0.1:PORT` (`https://fcm.googleapis.com` in production).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The pattern for the operator's `extra_allowed_hosts`.
    pub fn allowed_host(&self) -> String {
        self.base_url()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Project> {
        self.shared.state.lock().unwrap()
    }

    /// Accepts `token` as an access token too.
    pub fn add_access_token(&self, token: &str) {
        self.state().tokens.insert(token.into());
    }

    /// Stops accepting `token` (an expired or revoked access token: 401).
    pub fn revoke_access_token(&self, token: &str) {
        self.state().tokens.remove(token);
    }

    /// A device registered with FCM under `registration_token`.
    pub fn register_device(&self, registration_token: &str) {
        let mut s = self.state();
        s.devices.insert(registration_token.into());
        s.unregistered.remove(registration_token);
    }

    /// The app was uninstalled (or its token replaced): sends to it get `404 UNREGISTERED`.
    pub fn unregister(&self, registration_token: &str) {
        let mut s = self.state();
        s.devices.remove(registration_token);
        s.unregistered.insert(registration_token.into());
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<PushMessage> {
        self.state().messages.clone()
    }

    /// The accepted messages to the device `registration_token`.
    pub fn messages_to(&self, registration_token: &str) -> Vec<PushMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.token.as_deref() == Some(registration_token))
            .collect()
    }

    /// Every request answered so far (or accepted and held), in order.
    pub fn requests(&self) -> Vec<FcmRequest> {
        self.state().requests.clone()
    }

    /// Requests that reached `messages:send`, answered, held or not.
    pub fn request_count(&self) -> usize {
        self.state().arrivals
    }

    fn queue(&self, n: usize, trouble: Trouble) {
        let mut s = self.state();
        for _ in 0..n {
            s.trouble.push_back(trouble.clone());
        }
    }

    /// Answers the next `n` sends with `429 RESOURCE_EXHAUSTED` / `QUOTA_EXCEEDED`
    /// and `Retry-After: <retry_after_s>`.
    pub fn quota_exceeded_next(&self, n: usize, retry_after_s: u64) {
        self.queue(n, Trouble::QuotaExceeded { retry_after_s });
    }

    /// Answers the next `n` sends with `503 UNAVAILABLE` and `Retry-After: <retry_after_s>`.
    pub fn unavailable_next(&self, n: usize, retry_after_s: u64) {
        self.queue(n, Trouble::Unavailable { retry_after_s });
    }

    /// Answers the next `n` sends with `500 INTERNAL`.
    pub fn internal_error_next(&self, n: usize) {
        self.queue(n, Trouble::Internal);
    }

    /// The next `n` sends are accepted and recorded, and their answers withheld
    /// until [`Self::release_held`].
    pub fn hold_next_after_accepting(&self, n: usize) {
        self.queue(n, Trouble::HoldAfterAccepting);
    }

    /// The next `n` sends wait, unread, until [`Self::release_held`]; then they
    /// are handled as if they had just arrived. Never released, or their client
    /// gone first, they are never accepted.
    pub fn hold_next_before_accepting(&self, n: usize) {
        self.queue(n, Trouble::HoldBeforeAccepting);
    }

    /// Requests being held now (a held request whose client went away no longer counts).
    pub fn held(&self) -> usize {
        self.shared.holds.held()
    }

    /// Waits until at least `n` requests are held (panics after 30 s).
    pub async fn wait_until_held(&self, n: usize) {
        self.shared.holds.wait_until_held(n, "FCM emulator").await
    }

    /// Waits until at least `n` messages were accepted (panics after 30 s); returns them all.
    pub async fn wait_for_messages(&self, n: usize) -> Vec<PushMessage> {
        wait_until(
            "FCM emulator",
            || Some(self.messages()).filter(|m| m.len() >= n),
            || format!("{} of {n} messages", self.messages().len()),
        )
        .await
    }

    /// Lets every held request go on.
    pub fn release_held(&self) {
        self.shared.holds.release()
    }
}

/// The error a request met: HTTP status, canonical status, FcmError code (if
/// any), message, extra details, `Retry-After`.
struct Refusal {
    status: u16,
    rpc_status: &'static str,
    fcm_code: Option<&'static str>,
    message: String,
    details: Vec<Value>,
    retry_after_s: Option<u64>,
}

impl Refusal {
    fn new(
        status: u16,
        rpc_status: &'static str,
        fcm_code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            rpc_status,
            fcm_code,
            message: message.into(),
            details: Vec::new(),
            retry_after_s: None,
        }
    }

    /// `400 INVALID_ARGUMENT` for a bad field, with a `google.rpc.BadRequest`
    /// detail as the error-codes page's first example.
    fn bad_field(field: &str, description: String) -> Self {
        let mut r = Self::new(400, "INVALID_ARGUMENT", None, description.clone());
        r.details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "field": field, "description": description }],
        }));
        r
    }

    fn response(self) -> Response {
        let mut details = self.details;
        if let Some(code) = self.fcm_code {
            details.insert(0, json!({ "@type": FCM_ERROR_TYPE, "errorCode": code }));
        }
        let mut error = json!({
            "code": self.status,
            "message": self.message,
            "status": self.rpc_status,
        });
        if !details.is_empty() {
            error["details"] = Value::Array(details);
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }

    fn code(&self) -> String {
        self.fcm_code.unwrap_or(self.rpc_status).to_string()
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The checks of a send request, in the order the emulator reports them.
fn check(project: &Project, body: &Value) -> Result<(Value, bool), Refusal> {
    let invalid = |m: &str| Refusal::new(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), m);
    let Some(message) = body.get("message").filter(|m| m.is_object()) else {
        return Err(Refusal::bad_field(
            "message",
            "Required field 'message' is missing.".into(),
        ));
    };
    let validate_only = body
        .get("validate_only")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|t| message.get(**t).is_some_and(|v| !v.is_null()))
        .count();
    if targets != 1 {
        return Err(invalid(
            "Exactly one of token, topic or condition must be set.",
        ));
    }
    let mut payload = 0usize;
    if let Some(notification) = message.get("notification") {
        for field in ["title", "body", "image"] {
            match notification.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => payload += field.len() + s.len(),
                Some(other) => {
                    return Err(Refusal::bad_field(
                        &format!("message.notification.{field}"),
                        format!(
                            "Invalid value at 'message.notification.{field}' (TYPE_STRING), {other}"
                        ),
                    ));
                }
            }
        }
    }
    if let Some(data) = message.get("data") {
        let Some(data) = data.as_object() else {
            return Err(Refusal::bad_field(
                "message.data",
                "Invalid value at 'message.data' (map), not an object".into(),
            ));
        };
        for (i, (key, value)) in data.iter().enumerate() {
            let Some(text) = value.as_str() else {
                return Err(Refusal::bad_field(
                    &format!("message.data[{i}].value"),
                    format!("Invalid value at 'message.data[{i}].value' (TYPE_STRING), {value}"),
                ));
            };
            if key == "from" || key == "gcm" || key.starts_with("google") {
                return Err(invalid(&format!("Invalid data key: {key:?} is reserved.")));
            }
            payload += key.len() + text.len();
        }
    }
    if payload > MAX_PAYLOAD_BYTES {
        return Err(invalid(&format!(
            "Message is too big: {payload} bytes of payload, at most {MAX_PAYLOAD_BYTES}."
        )));
    }
    if let Some(priority) = message.get("android").and_then(|a| a.get("priority")) {
        let known = priority
            .as_str()
            .is_some_and(|p| p.eq_ignore_ascii_case("NORMAL") || p.eq_ignore_ascii_case("HIGH"));
        if !known {
            return Err(Refusal::bad_field(
                "message.android.priority",
                format!(
                    "Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {priority}"
                ),
            ));
        }
    }
    if let Some(headers) = message.get("apns").and_then(|a| a.get("headers")) {
        let strings = headers
            .as_object()
            .is_some_and(|h| h.values().all(Value::is_string));
        if !strings {
            return Err(Refusal::bad_field(
                "message.apns.headers",
                "Invalid value at 'message.apns.headers' (map), values must be strings".into(),
            ));
        }
    }
    if let Some(token) = message.get("token").and_then(Value::as_str) {
        if project.unregistered.contains(token) {
            return Err(Refusal::new(
                404,
                "NOT_FOUND",
                Some("UNREGISTERED"),
                "Requested entity was not found.",
            ));
        }
        if !project.devices.contains(token) {
            return Err(invalid(
                "The registration token is not a valid FCM registration token",
            ));
        }
    }
    Ok((message.clone(), validate_only))
}

/// Checks and accepts one request; records it and returns the answer.
fn handle(shared: &Shared, project: &mut Project, project_id: &str, body: &Value) -> Response {
    let mut record = FcmRequest {
        project: project_id.to_string(),
        body: body.clone(),
        status: 200,
        error: None,
        name: None,
    };
    let answer = match check(project, body) {
        Ok((message, validate_only)) => {
            project.next_message += 1;
            let id = format!(
                "0:{}{:06}%{}",
                now_ms(),
                project.next_message,
                hex::encode(rand::random::<[u8; 8]>())
            );
            let name = format!("projects/{}/messages/{id}", shared.project_id);
            if !validate_only {
                let apns_header = |k: &str| {
                    message
                        .get("apns")
                        .and_then(|a| a.get("headers"))
                        .and_then(|h| h.get(k))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                let text = |k: &str| {
                    message
                        .get("notification")
                        .and_then(|n| n.get(k))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                project.messages.push(PushMessage {
                    name: name.clone(),
                    token: message
                        .get("token")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    title: text("title"),
                    body: text("body"),
                    data: message
                        .get("data")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default(),
                    android_priority: message
                        .get("android")
                        .and_then(|a| a.get("priority"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    apns_priority: apns_header("apns-priority"),
                    android_tag: message
                        .get("android")
                        .and_then(|a| a.get("notification"))
                        .and_then(|n| n.get("tag"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    apns_collapse_id: apns_header("apns-collapse-id"),
                    message: message.clone(),
                    at_ms: now_ms(),
                });
            }
            record.name = Some(name.clone());
            (StatusCode::OK, axum::Json(json!({ "name": name }))).into_response()
        }
        Err(refusal) => {
            record.status = refusal.status;
            record.error = Some(refusal.code());
            refusal.response()
        }
    };
    project.requests.push(record);
    answer
}

async fn send(
    State(shared): State<Arc<Shared>>,
    Path((project_id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ticket = shared.holds.ticket();
    let refuse = |state: &mut Project, refusal: Refusal| {
        state.requests.push(FcmRequest {
            project: project_id.clone(),
            body: body.clone(),
            status: refusal.status,
            error: Some(refusal.code()),
            name: None,
        });
        refusal.response()
    };
    let trouble = {
        let mut state = shared.state.lock().unwrap();
        state.arrivals += 1;
        if action != "messages:send" {
            return refuse(
                &mut state,
                Refusal::new(
                    404,
                    "NOT_FOUND",
                    None,
                    format!("Method not found: {action}"),
                ),
            );
        }
        if !bearer(&headers).is_some_and(|t| state.tokens.contains(&t)) {
            let refusal = Refusal::new(
                401,
                "UNAUTHENTICATED",
                None,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            );
            return refuse(&mut state, refusal);
        }
        if project_id != shared.project_id {
            return refuse(
                &mut state,
                Refusal::new(404, "NOT_FOUND", None, "Requested entity was not found."),
            );
        }
        state.trouble.pop_front()
    };
    let troubled = |refusal: Refusal| refuse(&mut shared.state.lock().unwrap(), refusal);
    match trouble {
        None => handle(
            &shared,
            &mut shared.state.lock().unwrap(),
            &project_id,
            &body,
        ),
        Some(Trouble::QuotaExceeded { retry_after_s }) => {
            let mut r = Refusal::new(
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                "Quota exceeded for quota metric 'Send requests' and limit 'Send requests per minute' of service 'fcm.googleapis.com'.",
            );
            r.retry_after_s = Some(retry_after_s);
            troubled(r)
        }
        Some(Trouble::Unavailable { retry_after_s }) => {
            let mut r = Refusal::new(
                503,
                "UNAVAILABLE",
                Some("UNAVAILABLE"),
                "The service is currently unavailable.",
            );
            r.retry_after_s = Some(retry_after_s);
            troubled(r)
        }
        Some(Trouble::Internal) => troubled(Refusal::new(
            500,
            "INTERNAL",
            Some("INTERNAL"),
            "Internal error encountered.",
        )),
        Some(Trouble::HoldAfterAccepting) => {
            let response = handle(
                &shared,
                &mut shared.state.lock().unwrap(),
                &project_id,
                &body,
            );
            shared.holds.hold(ticket).await;
            response
        }
        Some(Trouble::HoldBeforeAccepting) => {
            shared.holds.hold(ticket).await;
            handle(
                &shared,
                &mut shared.state.lock().unwrap(),
                &project_id,
                &body,
            )
        }
    }
}
