//! A loopback Resend, as its public documentation describes the Send Email API:
//!
//! - `POST /emails` ("Send Email", <https://resend.com/docs/api-reference/emails/send-email>)
//!   with `Authorization: Bearer re_...` and a JSON body: `from`, `to` (a string
//!   or up to 50 in an array) and `subject` required, `text` and `html`
//!   optional; `200 {"id": "<uuid>"}` for an accepted email, which is recorded.
//! - Errors as the Errors page lists them
//!   (<https://resend.com/docs/api-reference/errors>), in Resend's body
//!   `{"statusCode", "name", "message"}`: `missing_api_key` (401),
//!   `invalid_api_key` (403), `invalid_idempotency_key` (400),
//!   `missing_required_field` (422, a missing `from`, `to` or `subject`),
//!   `validation_error` (400: a malformed `to`, more than 50 recipients, a body
//!   that is not a JSON object), `invalid_from_address` (422), `validation_error`
//!   (403: the sender's domain is not verified), `invalid_idempotent_request`
//!   (409), and on request `rate_limit_exceeded` (429 with `retry-after` and the
//!   `ratelimit-*` headers of the Introduction page) or any other error.
//! - Idempotency keys ("Idempotency Keys",
//!   <https://resend.com/docs/dashboard/emails/idempotency-keys>): the same
//!   `Idempotency-Key` with the same payload answers the first email's id
//!   without sending a second; with another payload, `409
//!   invalid_idempotent_request`. Payloads compare as JSON values (key order and
//!   spacing aside).
//!
//! Test controls (queued, one per request, in the order given, applied after
//! the API key is checked): [`ResendEmulator::rate_limit_next`],
//! [`ResendEmulator::fail_next`], [`ResendEmulator::error_next`], and the holds
//! [`ResendEmulator::hold_next_after_accepting`] (the email is accepted and
//! recorded, then the answer is withheld: a crash now leaves an email the host
//! never heard of) and [`ResendEmulator::hold_next_before_accepting`] (nothing
//! is looked at until released). [`ResendEmulator::wait_until_held`] tells a
//! test when to kill the host; [`ResendEmulator::release_held`] lets the held
//! requests go on.
//!
//! Not emulated (the docs are silent or it does not matter on loopback): the
//! 24-hour expiry of keys (kept for the emulator's life), `concurrent_idempotent_requests`
//! (every request is handled at once), the per-second rate limit itself,
//! quotas, attachments, templates and batch sends; the wording of messages the
//! docs do not give is the emulator's.

use super::hold::{Holds, wait_until};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The API key the emulator accepts (store it as the secret `email.api-key`).
pub const API_KEY: &str = "re_emulator_0123456789abcdef";
/// A domain verified in the emulated account.
pub const VERIFIED_DOMAIN: &str = "presence.example";
/// A sender on the verified domain (the plugin's `from`).
pub const SENDER: &str = "Presence <alerts@presence.example>";
/// Resend's longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Resend's most recipients in `to`.
pub const MAX_RECIPIENTS: usize = 50;

/// An email Resend accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct SentEmail {
    pub id: String,
    pub from: String,
    /// The recipients, as sent (a single string becomes a one-element list).
    pub to: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub idempotency_key: Option<String>,
    /// The whole JSON body as received.
    pub body: Value,
    /// Milliseconds since the epoch.
    pub at_ms: i64,
}

/// One request to `POST /emails` and how it was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ResendRequest {
    pub idempotency_key: Option<String>,
    /// The body as received (`Null` when it was not JSON).
    pub body: Value,
    pub status: u16,
    /// Resend's error `name`; `None` for a 200.
    pub error: Option<String>,
    /// The email's id for a 200 (a repeated key answers the first email's).
    pub email_id: Option<String>,
    /// True when the 200 repeated an earlier answer (same key, same payload).
    pub replayed: bool,
}

/// What the next requests meet, one each.
#[derive(Debug, Clone)]
enum Trouble {
    RateLimit {
        retry_after_s: u64,
    },
    Error {
        status: u16,
        name: String,
        message: String,
    },
    HoldAfterAccepting,
    HoldBeforeAccepting,
}

#[derive(Default)]
struct Account {
    api_keys: HashSet<String>,
    domains: HashSet<String>,
    emails: Vec<SentEmail>,
    requests: Vec<ResendRequest>,
    arrivals: usize,
    /// Idempotency key -> (the payload, the email's id).
    keys: HashMap<String, (Value, String)>,
    trouble: VecDeque<Trouble>,
    /// Requests under way per recipient address, and the most there ever were.
    in_flight: HashMap<String, usize>,
    peak_in_flight: usize,
}

struct Shared {
    account: Mutex<Account>,
    holds: Holds,
    /// How long every answer takes, in milliseconds (0: at once).
    latency_ms: std::sync::atomic::AtomicU64,
}

/// A request under way to its recipients, counted until it is answered (or
/// the client gives up on it).
struct InFlight {
    shared: Arc<Shared>,
    to: Vec<String>,
}

impl InFlight {
    fn start(shared: &Arc<Shared>, body: &[u8]) -> Self {
        let to = match serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|b| b.get("to").cloned())
        {
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let mut account = shared.account.lock().unwrap();
        for address in &to {
            let n = account.in_flight.entry(address.clone()).or_default();
            *n += 1;
            let n = *n;
            account.peak_in_flight = account.peak_in_flight.max(n);
        }
        Self {
            shared: shared.clone(),
            to,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut account = self.shared.account.lock().unwrap();
        for address in &self.to {
            if let Some(n) = account.in_flight.get_mut(address) {
                *n -= 1;
            }
        }
    }
}

/// The emulator, serving on a loopback port until its runtime ends.
pub struct ResendEmulator {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ResendEmulator {
    /// Starts an account whose API key is [`API_KEY`] and whose verified domain
    /// is [`VERIFIED_DOMAIN`].
    pub async fn start() -> Self {
        let mut account = Account::default();
        account.api_keys.insert(API_KEY.into());
        account.domains.insert(VERIFIED_DOMAIN.into());
        let shared = Arc::new(Shared {
            account: Mutex::new(account),
            holds: Holds::default(),
            latency_ms: Default::default(),
        });
        let app = axum::Router::new()
            .route("/emails", axum::routing::post(send_email))
            .with_state(shared.clone());
        let addr = super::serve_loopback(app).await;
        Self { addr, shared }
    }

    /// The plugin's `api_base`: `http://127.0.0.1:PORT` (`https://api.resend.com` in production).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The pattern for the operator's `extra_allowed_hosts`.
    pub fn allowed_host(&self) -> String {
        self.base_url()
    }

    fn account(&self) -> std::sync::MutexGuard<'_, Account> {
        self.shared.account.lock().unwrap()
    }

    /// Accepts `key` as an API key too.
    pub fn add_api_key(&self, key: &str) {
        self.account().api_keys.insert(key.into());
    }

    /// Verifies `domain` for sending.
    pub fn verify_domain(&self, domain: &str) {
        self.account().domains.insert(domain.to_ascii_lowercase());
    }

    /// The emails accepted so far, oldest first (a replayed key adds none).
    pub fn emails(&self) -> Vec<SentEmail> {
        self.account().emails.clone()
    }

    /// The accepted emails to `address`.
    pub fn emails_to(&self, address: &str) -> Vec<SentEmail> {
        self.emails()
            .into_iter()
            .filter(|e| e.to.iter().any(|t| t.eq_ignore_ascii_case(address)))
            .collect()
    }

    /// Every request answered so far (or accepted and held), in order.
    pub fn requests(&self) -> Vec<ResendRequest> {
        self.account().requests.clone()
    }

    /// Requests that reached `POST /emails`, answered, held or not.
    pub fn request_count(&self) -> usize {
        self.account().arrivals
    }

    fn queue(&self, n: usize, trouble: Trouble) {
        let mut account = self.account();
        for _ in 0..n {
            account.trouble.push_back(trouble.clone());
        }
    }

    /// Answers the next `n` requests with `429 rate_limit_exceeded` and
    /// `retry-after: <retry_after_s>`.
    pub fn rate_limit_next(&self, n: usize, retry_after_s: u64) {
        self.queue(n, Trouble::RateLimit { retry_after_s });
    }

    /// Answers the next `n` requests with `500 internal_server_error`.
    pub fn fail_next(&self, n: usize) {
        self.error_next(
            n,
            500,
            "internal_server_error",
            "An unexpected error occurred.",
        );
    }

    /// Answers the next `n` requests with any error, in Resend's shape.
    pub fn error_next(&self, n: usize, status: u16, name: &str, message: &str) {
        self.queue(
            n,
            Trouble::Error {
                status,
                name: name.into(),
                message: message.into(),
            },
        );
    }

    /// The next `n` requests are handled (checked, deduplicated, accepted and
    /// recorded) and their answers withheld until [`Self::release_held`].
    pub fn hold_next_after_accepting(&self, n: usize) {
        self.queue(n, Trouble::HoldAfterAccepting);
    }

    /// The next `n` requests wait, unread, until [`Self::release_held`]; then
    /// they are handled as if they had just arrived. Never released, or their
    /// client gone first (a killed host: the handler is dropped with its
    /// connection), they are never accepted.
    pub fn hold_next_before_accepting(&self, n: usize) {
        self.queue(n, Trouble::HoldBeforeAccepting);
    }

    /// Requests being held now (a held request whose client went away no longer counts).
    pub fn held(&self) -> usize {
        self.shared.holds.held()
    }

    /// Waits until at least `n` requests are held (panics after 30 s).
    pub async fn wait_until_held(&self, n: usize) {
        self.shared
            .holds
            .wait_until_held(n, "Resend emulator")
            .await
    }

    /// Waits until at least `n` emails were accepted (panics after 30 s); returns them all.
    pub async fn wait_for_emails(&self, n: usize) -> Vec<SentEmail> {
        wait_until(
            "Resend emulator",
            || Some(self.emails()).filter(|e| e.len() >= n),
            || format!("{} of {n} emails", self.emails().len()),
        )
        .await
    }

    /// Lets every held request go on (a client that went away gets nothing).
    /// Every answer from now on takes `latency` (a real API's round trip), so
    /// sends that overlap are seen to.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.latency_ms.store(
            latency.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The most requests ever under way at once to one recipient address.
    pub fn peak_sends_to_one_recipient(&self) -> usize {
        self.shared.account.lock().unwrap().peak_in_flight
    }

    pub fn release_held(&self) {
        self.shared.holds.release()
    }
}

/// A Resend error answer: `{"statusCode", "name", "message"}`.
fn resend_error(status: u16, name: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "statusCode": status, "name": name, "message": message });
    let mut response = (code, axum::Json(body)).into_response();
    // Kept beside the answer for the request log.
    response.extensions_mut().insert(ErrorName(name.into()));
    response
}

#[derive(Clone)]
struct ErrorName(String);

/// An error answer not yet built.
struct Refusal {
    status: u16,
    name: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: u16, name: &'static str, message: &str) -> Self {
        Self {
            status,
            name,
            message: message.into(),
        }
    }

    fn response(self) -> Response {
        resend_error(self.status, self.name, &self.message)
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// A bare address as Resend takes one: `local@domain.tld`, no spaces.
fn is_address(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|l| !l.is_empty())
        && !s.chars().any(|c| c.is_whitespace() || "<>,;\"".contains(c))
}

/// `email@example.com` or `Name <email@example.com>`: the address inside.
fn mailbox(s: &str) -> Option<&str> {
    let s = s.trim();
    let address = match s.rfind('<') {
        Some(open) => s[open + 1..].strip_suffix('>')?,
        None => s,
    };
    is_address(address).then_some(address)
}

/// The checks of a Send Email body, in the order the emulator reports them:
/// the recipients list, then what the account can send.
fn check_email(account: &Account, body: &Value) -> Result<(String, Vec<String>, String), Refusal> {
    let Some(fields) = body.as_object() else {
        return Err(Refusal::new(
            400,
            "validation_error",
            "The request body must be a JSON object.",
        ));
    };
    for field in ["from", "to", "subject"] {
        let present = match fields.get(field) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if !present {
            return Err(Refusal::new(
                422,
                "missing_required_field",
                &format!("Missing `{field}` field."),
            ));
        }
    }
    let to: Vec<String> = match &fields["to"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => {
            return Err(Refusal::new(
                400,
                "validation_error",
                "Invalid `to` field. Expected a string or an array of strings.",
            ));
        }
    };
    if to.len() > MAX_RECIPIENTS {
        return Err(Refusal::new(
            400,
            "validation_error",
            &format!("Invalid `to` field. Too many recipients: at most {MAX_RECIPIENTS}."),
        ));
    }
    if let Some(bad) = to.iter().find(|t| mailbox(t).is_none()) {
        return Err(Refusal::new(
            400,
            "validation_error",
            &format!(
                "Invalid `to` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format. Got {bad:?}."
            ),
        ));
    }
    let (Some(from), Some(subject)) = (fields["from"].as_str(), fields["subject"].as_str()) else {
        return Err(Refusal::new(
            400,
            "validation_error",
            "`from` and `subject` must be strings.",
        ));
    };
    for optional in ["text", "html"] {
        if fields
            .get(optional)
            .is_some_and(|v| !v.is_string() && !v.is_null())
        {
            return Err(Refusal::new(
                400,
                "validation_error",
                &format!("Invalid `{optional}` field. Expected a string."),
            ));
        }
    }
    let Some(sender) = mailbox(from) else {
        return Err(Refusal::new(
            422,
            "invalid_from_address",
            "Invalid `from` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format.",
        ));
    };
    let domain = sender.rsplit('@').next().unwrap_or("").to_ascii_lowercase();
    if !account.domains.contains(&domain) {
        return Err(Refusal::new(
            403,
            "validation_error",
            &format!("The {domain} domain is not verified. Please, add and verify your domain."),
        ));
    }
    Ok((from.to_string(), to, subject.to_string()))
}

/// A new email id, shaped as Resend's (a UUID).
fn email_id() -> String {
    let mut b = rand::random::<[u8; 16]>();
    // Version 4, RFC 4122 variant.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Records a request and its answer in the log.
fn record(
    account: &mut Account,
    key: Option<String>,
    body: Value,
    response: &Response,
    accepted: Option<(String, bool)>,
) {
    let (email_id, replayed) = match accepted {
        Some((id, replayed)) => (Some(id), replayed),
        None => (None, false),
    };
    account.requests.push(ResendRequest {
        idempotency_key: key,
        body,
        status: response.status().as_u16(),
        error: response
            .extensions()
            .get::<ErrorName>()
            .map(|n| n.0.clone()),
        email_id,
        replayed,
    });
}

/// Checks, deduplicates and accepts one request; records it and returns the answer.
fn handle(account: &mut Account, key: Option<String>, raw: &[u8]) -> Response {
    let body: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    let answer = (|| {
        if let Some(key) = &key {
            if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY {
                return Err(Refusal::new(
                    400,
                    "invalid_idempotency_key",
                    "The key must be between 1-256 chars.",
                ));
            }
            if let Some((payload, id)) = account.keys.get(key) {
                if *payload != body {
                    return Err(Refusal::new(
                        409,
                        "invalid_idempotent_request",
                        "Same idempotency key used with a different request payload.",
                    ));
                }
                return Ok((id.clone(), true));
            }
        }
        let (from, to, subject) = check_email(account, &body)?;
        let id = email_id();
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        account.emails.push(SentEmail {
            id: id.clone(),
            from,
            to,
            subject,
            text: text("text"),
            html: text("html"),
            idempotency_key: key.clone(),
            body: body.clone(),
            at_ms: now_ms(),
        });
        if let Some(key) = &key {
            account.keys.insert(key.clone(), (body.clone(), id.clone()));
        }
        Ok((id, false))
    })();
    match answer {
        Ok((id, replayed)) => {
            let response = (StatusCode::OK, axum::Json(json!({ "id": id }))).into_response();
            record(account, key, body, &response, Some((id, replayed)));
            response
        }
        Err(refusal) => {
            let response = refusal.response();
            record(account, key, body, &response, None);
            response
        }
    }
}

async fn send_email(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let json_body = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let _in_flight = InFlight::start(&shared, &body);
    let latency = shared.latency_ms.load(std::sync::atomic::Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let ticket = shared.holds.ticket();
    let trouble = {
        let mut account = shared.account.lock().unwrap();
        account.arrivals += 1;
        // Introduction: "All API requests must include a User-Agent header.
        // Requests without this header will be rejected with a 403 status code"
        // (an edge refusal, not Resend's JSON).
        if !headers.contains_key(header::USER_AGENT) {
            let response = (StatusCode::FORBIDDEN, "error code: 1010").into_response();
            record(&mut account, key, json_body(), &response, None);
            return response;
        }
        let refused = match bearer(&headers) {
            None => Some(resend_error(
                401,
                "missing_api_key",
                "Missing API key in the authorization header.",
            )),
            Some(k) if !account.api_keys.contains(&k) => {
                Some(resend_error(403, "invalid_api_key", "API key is invalid."))
            }
            Some(_) => None,
        };
        if let Some(response) = refused {
            record(&mut account, key, json_body(), &response, None);
            return response;
        }
        account.trouble.pop_front()
    };
    match trouble {
        None => handle(&mut shared.account.lock().unwrap(), key, &body),
        Some(Trouble::RateLimit { retry_after_s }) => {
            let mut response = resend_error(
                429,
                "rate_limit_exceeded",
                "Too many requests. Please limit the number of requests per second. Or contact support to increase rate limit.",
            );
            let h = response.headers_mut();
            h.insert("retry-after", retry_after_s.into());
            h.insert("ratelimit-limit", 2.into());
            h.insert("ratelimit-remaining", 0.into());
            h.insert("ratelimit-reset", retry_after_s.into());
            record(
                &mut shared.account.lock().unwrap(),
                key,
                json_body(),
                &response,
                None,
            );
            response
        }
        Some(Trouble::Error {
            status,
            name,
            message,
        }) => {
            let response = resend_error(status, &name, &message);
            record(
                &mut shared.account.lock().unwrap(),
                key,
                json_body(),
                &response,
                None,
            );
            response
        }
        Some(Trouble::HoldAfterAccepting) => {
            let response = handle(&mut shared.account.lock().unwrap(), key, &body);
            shared.holds.hold(ticket).await;
            response
        }
        Some(Trouble::HoldBeforeAccepting) => {
            shared.holds.hold(ticket).await;
            handle(&mut shared.account.lock().unwrap(), key, &body)
        }
    }
}
