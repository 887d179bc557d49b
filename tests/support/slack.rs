//! A loopback emulator of Slack: the Web API methods that set a status and post
//! a message, and the Events API sender that reports status changes back, as
//! Slack's docs describe them.
//!
//! Web API (`POST /api/users.profile.set`, `POST /api/users.setPresence`, `POST
//! /api/chat.postMessage`), per "Using the Slack Web API", the method pages and
//! the rate-limits page:
//! - arguments as JSON (token only in `Authorization: Bearer`) or as a form
//!   (token in the header or a `token` field), query-string arguments merged in;
//!   JSON without a charset gets Slack's `missing_charset` warning, a form with one
//!   `superfluous_charset`;
//! - HTTP 200 with `{"ok": false, "error": ...}` for every refusal: `not_authed`
//!   (no token), `invalid_auth` (unknown token), `token_revoked` and any error set
//!   on a token with [`SlackEmulator::fail_token`], `too_long` (status_text over
//!   100 characters), `invalid_emoji_not_allowed` (a status_emoji that is not a
//!   short code), `must_clear_both_status_text_and_status_emoji` (an emoji without
//!   text), `invalid_presence`, `invalid_profile`, `invalid_json`;
//! - a per-method rate limit answering HTTP 429, `Retry-After: <seconds>` and
//!   `{"ok": false, "error": "ratelimited"}`;
//! - chat.postMessage (<https://docs.slack.dev/reference/methods/chat.postMessage>):
//!   `channel` a channel id added with [`SlackEmulator::add_channel`] (the
//!   token's user must be a member: else `not_in_channel`; archived:
//!   `is_archived`) or a known user's id (their direct message, answered with
//!   its `D...` id); anything else `channel_not_found`; no `text` `no_text`;
//!   `text` over 40,000 characters is truncated ("Provide no more than 40,000
//!   characters or risk truncation"); the answer `{"ok": true, "channel", "ts",
//!   "message"}` as the method page's example; each message recorded
//!   ([`SlackEmulator::posted`]). Any other code on request with
//!   [`SlackEmulator::error_next`].
//!
//! Events API sender, per "The Events API" and the `user_change` event page: a
//! status changed by users.profile.set (or by the person, [`SlackEmulator::person_sets_status`])
//! is POSTed to the events URL as an `event_callback` envelope (`token`, `team_id`,
//! `api_app_id`, `event`, `type`, `event_id` "Ev...", `event_time`,
//! `authorizations`), signed as Slack signs (`X-Slack-Request-Timestamp`,
//! `X-Slack-Signature: v0=<hex HMAC-SHA256 of v0:{ts}:{body}>`). A delivery that
//! gets no 2xx within 3 seconds is retried up to 3 times with `X-Slack-Retry-Num`
//! and `X-Slack-Retry-Reason` (`http_error`, `http_timeout`, `connection_failed`,
//! `too_many_redirects`, `unknown_error`), unless the answer carries
//! `X-Slack-No-Retry: 1`. Slack waits 0 s, 1 min and 5 min between tries; the
//! emulator keeps that order at a thousandth of the time ([`TEST_RETRY_DELAYS`]).
//!
//! Not emulated: statuses expiring by themselves (and the user_change that
//! follows), workspace emoji lists (any well-formed short code is accepted),
//! admin tokens setting another person's profile (`user` is refused with `not_admin`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub const TEAM_ID: &str = "T0EMULATE1";
pub const API_APP_ID: &str = "A0EMULATE1";
/// The deprecated verification token Slack still puts in every envelope.
pub const VERIFICATION_TOKEN: &str = "emulatorVerificationToken";
/// Slack's own example signing secret ("Verifying requests from Slack").
pub const SIGNING_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
/// users.profile.set: "status_text allows up to 100 characters".
pub const MAX_STATUS_TEXT_CHARS: usize = 100;
/// chat.postMessage: "Provide no more than 40,000 characters or risk truncation".
pub const MAX_MESSAGE_CHARS: usize = 40_000;
/// Slack's retry schedule for events: at once, after 1 minute, after 5 minutes.
pub const SLACK_RETRY_DELAYS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(60),
    Duration::from_secs(300),
];
/// The same schedule at a thousandth of the time, the emulator's default.
pub const TEST_RETRY_DELAYS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(60),
    Duration::from_millis(300),
];
/// How long Slack waits for a 2xx before it retries (`http_timeout`).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3);

/// A person's custom status as Slack keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlackStatus {
    pub text: String,
    pub emoji: String,
    /// Unix seconds, 0 for none.
    pub expiration: i64,
}

impl SlackStatus {
    pub fn new(text: &str, emoji: &str, expiration: i64) -> Self {
        Self {
            text: text.into(),
            emoji: emoji.into(),
            expiration,
        }
    }
}

/// One Web API call as the emulator received and answered it.
#[derive(Debug, Clone)]
pub struct WebApiCall {
    pub method: String,
    /// The token presented (header or form field), if any.
    pub token: Option<String>,
    /// The user the token belongs to; `None` when it was not accepted.
    pub user: Option<String>,
    pub content_type: Option<String>,
    /// The arguments as Slack read them, `token` left out; a `profile` sent as a
    /// URL-encoded JSON string appears parsed, so both encodings compare equal.
    pub fields: Value,
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub http_status: u16,
    /// Slack's error code; `None` when the answer was `"ok": true`.
    pub error: Option<String>,
    /// Slack's warnings (`missing_charset`, `superfluous_charset`).
    pub warnings: Vec<String>,
}

impl WebApiCall {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// A message chat.postMessage accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage {
    /// The `channel` argument as sent (a channel id, or a user id for a DM).
    pub requested_channel: String,
    /// The conversation it landed in (`C...`, or the DM's `D...`).
    pub channel: String,
    pub ts: String,
    /// The text as Slack keeps it (truncated past [`MAX_MESSAGE_CHARS`]).
    pub text: String,
    /// True when the text was longer than Slack keeps.
    pub truncated: bool,
    /// The user the token belongs to (the author).
    pub author: String,
    pub token: String,
}

/// A channel of the workspace.
#[derive(Debug, Clone, Default)]
struct Conversation {
    members: HashSet<String>,
    archived: bool,
}

/// One attempt to deliver an event to the events URL.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: String,
    pub event_type: String,
    /// 0 for the first attempt, then 1 to 3 (`X-Slack-Retry-Num`).
    pub retry_num: u32,
    pub retry_reason: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The receiver's status; `None` when it did not answer.
    pub status: Option<u16>,
    /// Why there was no answer (`http_timeout`, `connection_failed`, ...).
    pub failure: Option<String>,
    pub at_ms: i64,
}

impl Delivery {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn payload(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

struct RateLimit {
    max_calls: u32,
    window: Duration,
    window_start: Instant,
    calls: u32,
}

struct EventsTarget {
    url: String,
    signing_secret: Vec<u8>,
}

/// Decides whether a token not added with `add_user` belongs to someone: the
/// user it authenticates, or none (tokens issued by an OAuth emulator).
pub type TokenAuthority = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

struct Workspace {
    /// Token -> user id.
    tokens: HashMap<String, String>,
    authority: Option<TokenAuthority>,
    /// Token -> the error Slack answers for it (`token_revoked`, `missing_scope`, ...).
    token_errors: HashMap<String, String>,
    statuses: HashMap<String, SlackStatus>,
    presences: HashMap<String, String>,
    limits: HashMap<String, RateLimit>,
    /// Method -> HTTP statuses to answer its next calls with (server trouble).
    injected: HashMap<String, VecDeque<u16>>,
    /// Method -> error codes to answer its next calls with (`ok: false`).
    injected_errors: HashMap<String, VecDeque<String>>,
    channels: HashMap<String, Conversation>,
    posted: Vec<PostedMessage>,
    /// Microseconds of the last `ts` handed out (each is later than the one before).
    last_ts_us: i64,
    calls: Vec<WebApiCall>,
    deliveries: Vec<Delivery>,
    events: Option<EventsTarget>,
    subscriptions: Vec<String>,
    retry_delays: [Duration; 3],
    delivery_timeout: Duration,
    event_delay: Duration,
}

struct Shared {
    state: Mutex<Workspace>,
    client: reqwest::Client,
    pending: Mutex<Vec<tokio::task::JoinHandle<Vec<Delivery>>>>,
    next_event: AtomicU64,
}

/// The emulator, serving on a loopback port until dropped with its runtime.
pub struct SlackEmulator {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl SlackEmulator {
    /// Starts an emulator with no users, no rate limits and no events URL; events
    /// are `user_change` only (what the presence app subscribes to).
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(Workspace {
                tokens: HashMap::new(),
                authority: None,
                token_errors: HashMap::new(),
                statuses: HashMap::new(),
                presences: HashMap::new(),
                limits: HashMap::new(),
                injected: HashMap::new(),
                injected_errors: HashMap::new(),
                channels: HashMap::new(),
                posted: Vec::new(),
                last_ts_us: 0,
                calls: Vec::new(),
                deliveries: Vec::new(),
                events: None,
                subscriptions: vec!["user_change".into()],
                retry_delays: TEST_RETRY_DELAYS,
                delivery_timeout: DELIVERY_TIMEOUT,
                event_delay: Duration::ZERO,
            }),
            client: reqwest::Client::builder()
                // Slack follows at most two redirects, then retries as too_many_redirects.
                .redirect(reqwest::redirect::Policy::limited(2))
                .build()
                .unwrap(),
            pending: Mutex::new(Vec::new()),
            next_event: AtomicU64::new(1),
        });
        let app = axum::Router::new()
            .route("/api/{method}", axum::routing::post(web_api))
            .with_state(shared.clone());
        let addr = super::serve_loopback(app).await;
        Self { addr, shared }
    }

    /// The plugin's `api_base`: `http://127.0.0.1:PORT` (methods are under `/api/`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The pattern for the operator's `extra_allowed_hosts`.
    pub fn allowed_host(&self) -> String {
        self.base_url()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Workspace> {
        self.shared.state.lock().unwrap()
    }

    /// Adds a user whose user token (`xoxp-...`) is `token`; a user may have several.
    pub fn add_user(&self, user: &str, token: &str) {
        let mut s = self.state();
        s.tokens.insert(token.into(), user.into());
        s.statuses.entry(user.into()).or_default();
        s.presences
            .entry(user.into())
            .or_insert_with(|| "auto".into());
    }

    /// Accepts, besides the added users' tokens, whatever `authority` vouches
    /// for (for instance the tokens an OAuth emulator issued and still honours).
    pub fn accept_tokens(&self, authority: TokenAuthority) {
        self.state().authority = Some(authority);
    }

    /// Makes every call with `token` answer `token_revoked`.
    pub fn revoke_token(&self, token: &str) {
        self.fail_token(token, "token_revoked");
    }

    /// Makes every call with `token` answer `error` (`token_expired`,
    /// `account_inactive`, `missing_scope`, ...), as an `ok: false` with HTTP 200.
    pub fn fail_token(&self, token: &str, error: &str) {
        self.state().token_errors.insert(token.into(), error.into());
    }

    /// Allows `max_calls` accepted calls of `method` per `window`, counted from the
    /// window's first call; calls beyond get 429 with `Retry-After` set to the
    /// seconds left in the window (at least 1). `max_calls = 0` limits every call.
    pub fn rate_limit(&self, method: &str, max_calls: u32, window: Duration) {
        self.state().limits.insert(
            method.into(),
            RateLimit {
                max_calls,
                window,
                window_start: Instant::now(),
                calls: 0,
            },
        );
    }

    pub fn clear_rate_limit(&self, method: &str) {
        self.state().limits.remove(method);
    }

    /// Answers the next call of `method` (after authentication) with HTTP `status`
    /// and Slack's `fatal_error`, as during an outage. Queues up when called again.
    pub fn fail_next(&self, method: &str, status: u16) {
        self.state()
            .injected
            .entry(method.into())
            .or_default()
            .push_back(status);
    }

    /// Answers the next call of `method` (after authentication) with HTTP 200 and
    /// `{"ok": false, "error": code}` (`msg_too_long`, `restricted_action`,
    /// `fatal_error`, ...). Queues up when called again.
    pub fn error_next(&self, method: &str, code: &str) {
        self.state()
            .injected_errors
            .entry(method.into())
            .or_default()
            .push_back(code.into());
    }

    /// A person of the workspace without a token of their own (a DM's recipient).
    pub fn add_person(&self, user: &str) {
        let mut s = self.state();
        s.statuses.entry(user.into()).or_default();
        s.presences
            .entry(user.into())
            .or_insert_with(|| "auto".into());
    }

    /// A channel (`C...`) whose members are `members` (user ids; a bot is its bot user).
    pub fn add_channel(&self, channel: &str, members: &[&str]) {
        self.state().channels.insert(
            channel.into(),
            Conversation {
                members: members.iter().map(|m| m.to_string()).collect(),
                archived: false,
            },
        );
    }

    /// Archives a channel: posting to it answers `is_archived`.
    pub fn archive_channel(&self, channel: &str) {
        if let Some(c) = self.state().channels.get_mut(channel) {
            c.archived = true;
        }
    }

    /// The messages chat.postMessage accepted, oldest first.
    pub fn posted(&self) -> Vec<PostedMessage> {
        self.state().posted.clone()
    }

    /// The accepted messages whose `channel` argument was `channel` (a channel
    /// id, or the user id a DM was sent to).
    pub fn posted_to(&self, channel: &str) -> Vec<PostedMessage> {
        self.posted()
            .into_iter()
            .filter(|m| m.requested_channel == channel || m.channel == channel)
            .collect()
    }

    /// Sends events to `url`, signed with `signing_secret`.
    pub fn send_events_to(&self, url: &str, signing_secret: &[u8]) {
        self.state().events = Some(EventsTarget {
            url: url.into(),
            signing_secret: signing_secret.to_vec(),
        });
    }

    /// The event types sent for a status change: `user_change` (the default) and/or
    /// `user_status_changed`, which Slack dispatches "at the exact same time".
    pub fn subscribe(&self, event_types: &[&str]) {
        self.state().subscriptions = event_types.iter().map(|t| t.to_string()).collect();
    }

    /// The waits before retries 1, 2 and 3 ([`SLACK_RETRY_DELAYS`] for Slack's own).
    pub fn set_retry_delays(&self, delays: [Duration; 3]) {
        self.state().retry_delays = delays;
    }

    /// How long after a users.profile.set its events leave (default: at once), to
    /// order an echo after the caller has read its answer, or to race it.
    pub fn set_event_delay(&self, delay: Duration) {
        self.state().event_delay = delay;
    }

    /// How long a delivery waits for its answer before retrying as `http_timeout`.
    pub fn set_delivery_timeout(&self, timeout: Duration) {
        self.state().delivery_timeout = timeout;
    }

    /// Every Web API call received, in order.
    pub fn calls(&self) -> Vec<WebApiCall> {
        self.state().calls.clone()
    }

    /// The calls of `method` that Slack accepted (`"ok": true`).
    pub fn accepted(&self, method: &str) -> Vec<WebApiCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.ok())
            .collect()
    }

    /// The user's current custom status.
    pub fn status(&self, user: &str) -> Option<SlackStatus> {
        self.state().statuses.get(user).cloned()
    }

    /// The user's manual presence, `auto` or `away`.
    pub fn presence(&self, user: &str) -> Option<String> {
        self.state().presences.get(user).cloned()
    }

    /// Every delivery attempt so far (wait with [`Self::flush`] first).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state().deliveries.clone()
    }

    /// Waits until every event sent so far has been delivered or given up on.
    pub async fn flush(&self) {
        loop {
            let pending: Vec<_> = std::mem::take(&mut *self.shared.pending.lock().unwrap());
            if pending.is_empty() {
                return;
            }
            for task in pending {
                task.await.unwrap();
            }
        }
    }

    /// The person changes their status in the Slack client: the status is stored
    /// and the subscribed events are sent, as for users.profile.set. Returns the
    /// delivery attempts once they are done.
    pub async fn person_sets_status(&self, user: &str, status: SlackStatus) -> Vec<Delivery> {
        let (events, target) = {
            let mut s = self.state();
            s.statuses.insert(user.into(), status);
            (
                status_events(&self.shared, &s, user),
                s.events.as_ref().map(clone_target),
            )
        };
        let target = target.expect("send_events_to first");
        let mut all = Vec::new();
        for (event_id, event_type, payload) in events {
            all.extend(deliver(self.shared.clone(), &target, event_id, event_type, payload).await);
        }
        all
    }

    /// Sends any inner `event` (e.g. a `user_huddle_changed`) wrapped in an
    /// `event_callback` envelope, signed, with retries. Returns the attempts.
    pub async fn send_event(&self, event: Value) -> Vec<Delivery> {
        let (event_id, payload) = self.event_callback(event.clone());
        let target = self
            .state()
            .events
            .as_ref()
            .map(clone_target)
            .expect("send_events_to first");
        let event_type = event["type"].as_str().unwrap_or("").to_string();
        deliver(self.shared.clone(), &target, event_id, event_type, payload).await
    }

    /// An `event_callback` envelope around `event`, with a fresh `event_id`.
    pub fn event_callback(&self, event: Value) -> (String, Value) {
        envelope(&self.shared, event)
    }

    /// The `user` object Slack puts in user events, with the current status.
    pub fn user_object(&self, user: &str) -> Value {
        let status = self.status(user).unwrap_or_default();
        user_json(user, &status)
    }
}

fn clone_target(t: &EventsTarget) -> EventsTarget {
    EventsTarget {
        url: t.url.clone(),
        signing_secret: t.signing_secret.clone(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------- Web API

/// The arguments of one call, as Slack reads them from the query and the body.
struct Arguments {
    fields: Map<String, Value>,
    token: Option<String>,
    content_type: Option<String>,
    warnings: Vec<String>,
    /// A body Slack could not read: the error it answers once the token is checked.
    malformed: Option<&'static str>,
}

fn read_arguments(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Arguments {
    let mut args = Arguments {
        fields: Map::new(),
        token: bearer(headers),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        warnings: Vec::new(),
        malformed: None,
    };
    let mut form_token = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "token" {
            form_token = Some(v.into_owned());
        } else {
            args.fields
                .insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    let content_type = args
        .content_type
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let has_charset = content_type.contains("charset=");
    if body.is_empty() {
        // Nothing to read.
    } else if content_type.is_empty() {
        args.malformed = Some("missing_post_type");
    } else if content_type.starts_with("application/json") {
        if !has_charset {
            args.warnings.push("missing_charset".into());
        }
        match serde_json::from_slice::<Value>(body) {
            // JSON bodies carry no token: "present your token in your request's
            // Authorization header".
            Ok(Value::Object(map)) => args
                .fields
                .extend(map.into_iter().filter(|(k, _)| k != "token")),
            Ok(_) => args.malformed = Some("json_not_object"),
            Err(_) => args.malformed = Some("invalid_json"),
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        if has_charset {
            args.warnings.push("superfluous_charset".into());
        }
        for (k, v) in url::form_urlencoded::parse(body) {
            if k == "token" {
                form_token = Some(v.into_owned());
            } else {
                args.fields
                    .insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
    } else {
        args.malformed = Some("invalid_post_type");
    }
    if args.token.is_none() {
        args.token = form_token;
    }
    args
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// How a call was answered.
struct Answer {
    status: StatusCode,
    body: Value,
    retry_after_s: Option<u64>,
}

impl Answer {
    fn ok(body: Value) -> Self {
        let mut body = body;
        body["ok"] = json!(true);
        Self {
            status: StatusCode::OK,
            body,
            retry_after_s: None,
        }
    }

    fn error(code: &str) -> Self {
        Self {
            status: StatusCode::OK,
            body: json!({"ok": false, "error": code}),
            retry_after_s: None,
        }
    }

    fn code(&self) -> Option<String> {
        self.body["error"].as_str().map(str::to_string)
    }
}

async fn web_api(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let args = read_arguments(&headers, query.as_deref(), &body);
    let mut events = Vec::new();
    let mut s = shared.state.lock().unwrap();
    let (answer, user) = answer_call(&shared, &mut s, &method, &args, &mut events);
    s.calls.push(WebApiCall {
        method: method.clone(),
        token: args.token.clone(),
        user,
        content_type: args.content_type.clone(),
        fields: recorded_fields(&args.fields),
        at_ms: now_ms(),
        http_status: answer.status.as_u16(),
        error: answer.code(),
        warnings: args.warnings.clone(),
    });
    if let Some(target) = &s.events {
        let mut pending = shared.pending.lock().unwrap();
        for (event_id, event_type, payload) in events {
            let (target, shared, delay) = (clone_target(target), shared.clone(), s.event_delay);
            // Slack sends the event on its own schedule, not within the call: it may
            // reach the receiver before or after the caller reads this answer.
            pending.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                deliver(shared, &target, event_id, event_type, payload).await
            }));
        }
    }
    drop(s);
    respond(answer, &args.warnings)
}

fn respond(answer: Answer, warnings: &[String]) -> Response {
    let mut body = answer.body;
    if !warnings.is_empty() && body["ok"] == json!(true) {
        body["warning"] = json!(warnings.join(","));
        body["response_metadata"] = json!({"warnings": warnings});
    }
    let mut response = (answer.status, axum::Json(body)).into_response();
    if let Some(seconds) = answer.retry_after_s {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, seconds.to_string().parse().unwrap());
    }
    response
}

/// Authentication, rate limit, injected trouble, then the method itself.
fn answer_call(
    shared: &Shared,
    s: &mut Workspace,
    method: &str,
    args: &Arguments,
    events: &mut Vec<(String, String, Value)>,
) -> (Answer, Option<String>) {
    let Some(token) = &args.token else {
        return (Answer::error("not_authed"), None);
    };
    if let Some(error) = s.token_errors.get(token) {
        return (Answer::error(error), None);
    }
    let user = s
        .tokens
        .get(token)
        .cloned()
        .or_else(|| s.authority.as_ref().and_then(|a| a(token)));
    let Some(user) = user else {
        return (Answer::error("invalid_auth"), None);
    };
    s.statuses.entry(user.clone()).or_default();
    s.presences
        .entry(user.clone())
        .or_insert_with(|| "auto".into());
    if let Some(retry_after_s) = rate_limited(s, method) {
        return (
            Answer {
                status: StatusCode::TOO_MANY_REQUESTS,
                body: json!({"ok": false, "error": "ratelimited"}),
                retry_after_s: Some(retry_after_s),
            },
            Some(user),
        );
    }
    if let Some(status) = s.injected.get_mut(method).and_then(VecDeque::pop_front) {
        return (
            Answer {
                status: StatusCode::from_u16(status).unwrap(),
                body: json!({"ok": false, "error": "fatal_error"}),
                retry_after_s: None,
            },
            Some(user),
        );
    }
    if let Some(code) = s
        .injected_errors
        .get_mut(method)
        .and_then(VecDeque::pop_front)
    {
        return (Answer::error(&code), Some(user));
    }
    if let Some(code) = args.malformed {
        return (Answer::error(code), Some(user));
    }
    let answer = match method {
        "users.profile.set" => profile_set(shared, s, &user, &args.fields, events),
        "users.setPresence" => set_presence(s, &user, &args.fields),
        "chat.postMessage" => {
            post_message(s, &user, args.token.as_deref().unwrap_or(""), &args.fields)
        }
        _ => Answer::error("unknown_method"),
    };
    (answer, Some(user))
}

/// Counts an authenticated call against the method's limit; `Some(seconds)` when over it.
fn rate_limited(s: &mut Workspace, method: &str) -> Option<u64> {
    let limit = s.limits.get_mut(method)?;
    let elapsed = limit.window_start.elapsed();
    if elapsed >= limit.window {
        limit.window_start = Instant::now();
        limit.calls = 0;
    }
    if limit.calls >= limit.max_calls {
        let left = limit.window.saturating_sub(limit.window_start.elapsed());
        return Some(left.as_secs_f64().ceil().max(1.0) as u64);
    }
    limit.calls += 1;
    None
}

fn recorded_fields(fields: &Map<String, Value>) -> Value {
    let mut out = fields.clone();
    if let Some(Value::String(profile)) = out.get("profile")
        && let Ok(parsed) = serde_json::from_str::<Value>(profile)
    {
        out.insert("profile".into(), parsed);
    }
    Value::Object(out)
}

/// The profile fields a call sets: the `profile` object (JSON, or a URL-encoded
/// JSON string in a form), or one `name`/`value` pair.
fn profile_changes(fields: &Map<String, Value>) -> Result<Map<String, Value>, &'static str> {
    match fields.get("profile") {
        Some(Value::Object(p)) => Ok(p.clone()),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(p)) => Ok(p),
            _ => Err("invalid_profile"),
        },
        Some(_) => Err("invalid_profile"),
        None => match (fields.get("name"), fields.get("value")) {
            (Some(Value::String(name)), Some(value)) => {
                Ok(Map::from_iter([(name.clone(), value.clone())]))
            }
            _ => Err("invalid_arguments"),
        },
    }
}

fn string_field(
    changes: &Map<String, Value>,
    key: &str,
    current: &str,
) -> Result<String, &'static str> {
    match changes.get(key) {
        None => Ok(current.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) => Ok(String::new()),
        Some(_) => Err("invalid_profile"),
    }
}

fn expiration_field(changes: &Map<String, Value>, current: i64) -> Result<i64, &'static str> {
    match changes.get("status_expiration") {
        None => Ok(current),
        Some(Value::Number(n)) => n.as_i64().ok_or("invalid_profile"),
        Some(Value::String(s)) if s.is_empty() => Ok(0),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| "invalid_profile"),
        Some(_) => Err("invalid_profile"),
    }
}

/// `:name:` or `:name::skin-tone-N:`.
fn is_short_code(s: &str) -> bool {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-+".contains(c))
    };
    let Some(inner) = s.strip_prefix(':').and_then(|s| s.strip_suffix(':')) else {
        return false;
    };
    match inner.split_once("::") {
        Some((name, tone)) => name_ok(name) && tone.starts_with("skin-tone-") && name_ok(tone),
        None => name_ok(inner),
    }
}

fn profile_set(
    shared: &Shared,
    s: &mut Workspace,
    user: &str,
    fields: &Map<String, Value>,
    events: &mut Vec<(String, String, Value)>,
) -> Answer {
    if fields
        .get("user")
        .and_then(Value::as_str)
        .is_some_and(|target| target != user)
    {
        return Answer::error("not_admin");
    }
    let changes = match profile_changes(fields) {
        Ok(c) => c,
        Err(code) => return Answer::error(code),
    };
    let current = s.statuses.get(user).cloned().unwrap_or_default();
    let next = (|| -> Result<SlackStatus, &'static str> {
        let text = string_field(&changes, "status_text", &current.text)?;
        let emoji = string_field(&changes, "status_emoji", &current.emoji)?;
        let expiration = expiration_field(&changes, current.expiration)?;
        Ok(SlackStatus {
            text,
            emoji,
            expiration,
        })
    })();
    let mut next = match next {
        Ok(n) => n,
        Err(code) => return Answer::error(code),
    };
    if next.text.chars().count() > MAX_STATUS_TEXT_CHARS {
        return Answer::error("too_long");
    }
    if !next.emoji.is_empty() && !is_short_code(&next.emoji) {
        return Answer::error("invalid_emoji_not_allowed");
    }
    if next.text.is_empty() && !next.emoji.is_empty() {
        return Answer::error("must_clear_both_status_text_and_status_emoji");
    }
    if next.text.is_empty() && next.emoji.is_empty() {
        // A cleared status has nothing left to expire.
        next.expiration = 0;
    }
    if next != current {
        s.statuses.insert(user.into(), next.clone());
        events.extend(status_events(shared, s, user));
    }
    Answer::ok(json!({"profile": profile_json(user, &next)}))
}

fn set_presence(s: &mut Workspace, user: &str, fields: &Map<String, Value>) -> Answer {
    match fields.get("presence").and_then(Value::as_str) {
        Some(p @ ("auto" | "away")) => {
            s.presences.insert(user.into(), p.into());
            Answer::ok(json!({}))
        }
        _ => Answer::error("invalid_presence"),
    }
}

/// The direct-message conversation with `user`: `D` and the rest of their id.
fn dm_channel(user: &str) -> String {
    format!("D{}", user.trim_start_matches(['U', 'W']))
}

fn post_message(
    s: &mut Workspace,
    author: &str,
    token: &str,
    fields: &Map<String, Value>,
) -> Answer {
    let Some(requested) = fields.get("channel").and_then(Value::as_str) else {
        return Answer::error("channel_not_found");
    };
    let channel = if let Some(c) = s.channels.get(requested) {
        if c.archived {
            return Answer::error("is_archived");
        }
        if !c.members.contains(author) {
            return Answer::error("not_in_channel");
        }
        requested.to_string()
    } else if s.statuses.contains_key(requested) {
        dm_channel(requested)
    } else {
        return Answer::error("channel_not_found");
    };
    let full = fields.get("text").and_then(Value::as_str).unwrap_or("");
    if full.trim().is_empty() {
        return Answer::error("no_text");
    }
    let truncated = full.chars().count() > MAX_MESSAGE_CHARS;
    let text: String = full.chars().take(MAX_MESSAGE_CHARS).collect();
    let now_us = now_ms() * 1000;
    s.last_ts_us = now_us.max(s.last_ts_us + 1);
    let ts = format!(
        "{}.{:06}",
        s.last_ts_us / 1_000_000,
        s.last_ts_us % 1_000_000
    );
    s.posted.push(PostedMessage {
        requested_channel: requested.to_string(),
        channel: channel.clone(),
        ts: ts.clone(),
        text: text.clone(),
        truncated,
        author: author.to_string(),
        token: token.to_string(),
    });
    Answer::ok(json!({
        "channel": channel,
        "ts": ts,
        "message": {
            "type": "message",
            "user": author,
            "text": text,
            "ts": ts,
            "team": TEAM_ID,
        },
    }))
}

/// A profile as users.profile.set answers it and user events carry it.
fn profile_json(user: &str, status: &SlackStatus) -> Value {
    let name = user.to_lowercase();
    json!({
        "title": "",
        "phone": "",
        "skype": "",
        "real_name": format!("Vendor {user}"),
        "real_name_normalized": format!("Vendor {user}"),
        "display_name": name,
        "display_name_normalized": name,
        "fields": {},
        "status_text": status.text,
        "status_emoji": status.emoji,
        "status_emoji_display_info": [],
        "status_expiration": status.expiration,
        "avatar_hash": "g0emulator01",
        "huddle_state": "default_unset",
        "huddle_state_expiration_ts": 0,
        "first_name": "Vendor",
        "last_name": user,
        "team": TEAM_ID,
    })
}

/// The `user` object of user events (the user_change page's example, trimmed of images).
fn user_json(user: &str, status: &SlackStatus) -> Value {
    json!({
        "id": user,
        "team_id": TEAM_ID,
        "name": user.to_lowercase(),
        "deleted": false,
        "color": "4bbe2e",
        "real_name": format!("Vendor {user}"),
        "tz": "Europe/London",
        "tz_label": "British Summer Time",
        "tz_offset": 3600,
        "profile": profile_json(user, status),
        "is_admin": false,
        "is_owner": false,
        "is_primary_owner": false,
        "is_restricted": false,
        "is_ultra_restricted": false,
        "is_bot": false,
        "is_app_user": false,
        "updated": now_ms() / 1000,
        "is_email_confirmed": true,
        "who_can_share_contact_card": "EVERYONE",
        "locale": "en-GB",
    })
}

// ---------------------------------------------------------------- Events API

/// The events a status change of `user` sends: one per subscribed type, each
/// with its own `event_id`, as Slack dispatches user_change and
/// user_status_changed side by side.
fn status_events(shared: &Shared, s: &Workspace, user: &str) -> Vec<(String, String, Value)> {
    let status = s.statuses.get(user).cloned().unwrap_or_default();
    let now_s = now_ms() / 1000;
    s.subscriptions
        .iter()
        .filter(|t| *t == "user_change" || *t == "user_status_changed")
        .map(|event_type| {
            let event = json!({
                "type": event_type,
                "user": user_json(user, &status),
                "cache_ts": now_s,
                "event_ts": format!("{now_s}.{:06}", (now_ms() % 1000) * 1000),
            });
            let (event_id, payload) = envelope(shared, event);
            (event_id, event_type.clone(), payload)
        })
        .collect()
}

/// The Events API's `event_callback` wrapper around `event`.
fn envelope(shared: &Shared, event: Value) -> (String, Value) {
    let n = shared.next_event.fetch_add(1, Ordering::Relaxed);
    let event_id = format!("Ev0EMU{n:06X}");
    let installer = event["user"]["id"]
        .as_str()
        .unwrap_or("U0EMULATE1")
        .to_string();
    let payload = json!({
        "token": VERIFICATION_TOKEN,
        "team_id": TEAM_ID,
        "api_app_id": API_APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": now_ms() / 1000,
        "authorizations": [{
            "enterprise_id": null,
            "team_id": TEAM_ID,
            "user_id": installer,
            "is_bot": false,
            "is_enterprise_install": false,
        }],
        "is_ext_shared_channel": false,
        "event_context": format!("4-emulator-{n}"),
    });
    (event_id, payload)
}

/// Delivers one event with Slack's retries; records and returns every attempt.
async fn deliver(
    shared: Arc<Shared>,
    target: &EventsTarget,
    event_id: String,
    event_type: String,
    payload: Value,
) -> Vec<Delivery> {
    let body = payload.to_string();
    let (delays, timeout) = {
        let s = shared.state.lock().unwrap();
        (s.retry_delays, s.delivery_timeout)
    };
    let mut attempts = Vec::new();
    let mut reason: Option<String> = None;
    for retry_num in 0..=3u32 {
        if retry_num > 0 {
            tokio::time::sleep(delays[retry_num as usize - 1]).await;
        }
        let attempt = attempt_delivery(
            &shared.client,
            target,
            &body,
            timeout,
            retry_num,
            reason.as_deref(),
        )
        .await;
        let (delivered, no_retry) = (attempt.0.delivered(), attempt.1);
        let failure = attempt.0.failure.clone();
        let mut delivery = attempt.0;
        delivery.event_id = event_id.clone();
        delivery.event_type = event_type.clone();
        shared
            .state
            .lock()
            .unwrap()
            .deliveries
            .push(delivery.clone());
        attempts.push(delivery);
        if delivered || no_retry {
            break;
        }
        reason = Some(failure.unwrap_or_else(|| "http_error".into()));
    }
    attempts
}

/// One signed POST; also says whether the receiver asked for no retries.
async fn attempt_delivery(
    client: &reqwest::Client,
    target: &EventsTarget,
    body: &str,
    timeout: Duration,
    retry_num: u32,
    reason: Option<&str>,
) -> (Delivery, bool) {
    let timestamp = now_ms() / 1000;
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        (
            "user-agent".to_string(),
            "Slackbot 1.0 (+https://api.slack.com/robots)".to_string(),
        ),
        (
            "x-slack-request-timestamp".to_string(),
            timestamp.to_string(),
        ),
        (
            "x-slack-signature".to_string(),
            super::slack_signature(&target.signing_secret, timestamp, body),
        ),
    ];
    if let Some(reason) = reason {
        headers.push(("x-slack-retry-num".into(), retry_num.to_string()));
        headers.push(("x-slack-retry-reason".into(), reason.to_string()));
    }
    let mut request = client
        .post(&target.url)
        .timeout(timeout)
        .body(body.to_string());
    for (k, v) in &headers {
        request = request.header(k, v);
    }
    let (status, failure, no_retry) = match request.send().await {
        Ok(response) => {
            let no_retry = response
                .headers()
                .get("x-slack-no-retry")
                .is_some_and(|v| v == "1");
            (Some(response.status().as_u16()), None, no_retry)
        }
        Err(e) if e.is_timeout() => (None, Some("http_timeout"), false),
        Err(e) if e.is_redirect() => (None, Some("too_many_redirects"), false),
        Err(e) if e.is_connect() => (None, Some("connection_failed"), false),
        Err(_) => (None, Some("unknown_error"), false),
    };
    (
        Delivery {
            event_id: String::new(),
            event_type: String::new(),
            retry_num,
            retry_reason: reason.map(str::to_string),
            headers,
            body: body.to_string(),
            status,
            failure: failure.map(str::to_string),
            at_ms: now_ms(),
        },
        no_retry,
    )
}
