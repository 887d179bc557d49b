//! A loopback emulator of the Google Calendar API v3: events.list with full and
//! incremental sync, events.watch and channels.stop, and the push
//! notifications Google sends to a channel's address, as Google's docs
//! describe them.
//!
//! Calendars are keyed by access token: [`GoogleCalendarEmulator::add_calendar`]
//! makes a calendar and the token that reads it (`calendarId` `primary` or the
//! calendar's own id); other tokens get 401 `authError`.
//!
//! events.list (developers.google.com/calendar/api/v3/reference/events/list,
//! and "Synchronize resources efficiently", /calendar/api/guides/sync):
//! - `maxResults` (default 250, at most 2,500: "the page size can never be
//!   larger than 2500 items"), `pageToken` / `nextPageToken`, and
//!   `nextSyncToken` on the last page only;
//! - `syncToken`: only the events changed since the token's page, deleted and
//!   cancelled ones included as `status: "cancelled"` ("deletions since the
//!   previous list request will always be in the result set"); refused with 400
//!   beside `iCalUID`, `orderBy`, `privateExtendedProperty`, `q`,
//!   `sharedExtendedProperty`, `timeMin`, `timeMax` or `updatedMin`, and beside
//!   `showDeleted=false`; a token invalidated by
//!   [`GoogleCalendarEmulator::expire_sync_tokens`], or one Google never issued,
//!   gets 410 `fullSyncRequired`;
//! - a full sync leaves cancelled events out unless `showDeleted=true`;
//!   `timeMin` ("lower bound (exclusive) for an event's end time") and `timeMax`
//!   ("upper bound (exclusive) for an event's start time") filter it.
//! - Events are stored as single occurrences (what `singleEvents=true` lists):
//!   a recurring series is added expanded ([`GoogleCalendarEmulator::add_weekly_series`]),
//!   each occurrence `{recurringEventId}_{original start, UTC basic format}` with
//!   `recurringEventId` and `originalStartTime`. A cancelled item is listed
//!   with the fields Google guarantees: "Deleted events are only guaranteed to
//!   have the id field populated", cancelled exceptions also
//!   `recurringEventId` and `originalStartTime` (reference/events).
//!
//! Push notifications (/calendar/api/guides/push, reference/events/watch,
//! reference/channels/stop):
//! - `POST /calendar/v3/calendars/{calendarId}/events/watch` with `id` (at most
//!   64 of `[A-Za-z0-9-_+/=]`, unique), `type` `web_hook` (or `webhook`),
//!   `address` (HTTPS; for tests also `http` on a loopback address) and an
//!   optional `token` (at most 256 characters) and `expiration`; answered with
//!   the Channel resource (`kind` `api#channel`, `id`, `resourceId` (one per
//!   calendar), `resourceUri`, `token`, `expiration` as a string of ms: Google
//!   writes 64-bit integers as strings). The channel lives
//!   [`DEFAULT_CHANNEL_TTL`] unless it asked for less, or
//!   [`GoogleCalendarEmulator::set_channel_ttl`] says otherwise. Right after,
//!   the `sync` message is sent ("a sync message ... when a new channel is
//!   created").
//! - `POST /calendar/v3/channels/stop` with `id` and `resourceId`: 204 with no
//!   body; a channel the token's calendar does not have, or another resource
//!   id, 404.
//! - A change to a calendar is POSTed to each of its live channels (not
//!   stopped, not expired) with an empty body and the guide's headers:
//!   `X-Goog-Channel-ID`, `X-Goog-Channel-Token` (when the channel has one),
//!   `X-Goog-Channel-Expiration` (RFC 1123), `X-Goog-Resource-ID`,
//!   `X-Goog-Resource-URI`, `X-Goog-Resource-State` (`sync`, then `exists`) and
//!   `X-Goog-Message-Number` (per channel, `sync` is 1), plus the guide's
//!   example `Content-Type: application/json; utf-8`. Each delivery and its
//!   answer are recorded ([`GoogleCalendarEmulator::deliveries`]).
//!
//! Errors have the shape of "Handle API errors" (/calendar/api/guides/errors):
//! `{"error": {"errors": [{"domain", "reason", "message", ...}], "code",
//! "message"}}`, with the `status` Google's live answers add (`UNAUTHENTICATED`,
//! ...; not on 410, as the page shows it). Rate limits on request:
//! [`GoogleCalendarEmulator::rate_limit_next`] (403 `rateLimitExceeded`, domain
//! `usageLimits`) and [`GoogleCalendarEmulator::too_many_requests_next`] (429).
//!
//! Not emulated: recurring master events and their expansion at list time
//! (store occurrences), `orderBy` (items come in change order, which Google
//! leaves unspecified without it), `q` and extended properties (accepted,
//! not applied), retries of notifications Google makes after a 5xx,
//! per-project quotas, and ACL changes invalidating sync tokens (use
//! `expire_sync_tokens`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use serde_json::{Value, json};

/// How long a channel lives when neither the request nor the test says.
pub const DEFAULT_CHANNEL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// events.list's default and largest `maxResults`.
pub const DEFAULT_MAX_RESULTS: usize = 250;
pub const MAX_MAX_RESULTS: usize = 2500;
/// Query parameters events.list refuses beside a `syncToken`.
pub const NOT_WITH_SYNC_TOKEN: [&str; 8] = [
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];
/// How long a notification waits for the receiver's answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides whether a token not added with `add_calendar`/`add_token` reads a
/// calendar: the calendar's id, or none (e.g. tokens an OAuth emulator issued).
pub type TokenAuthority = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// One events.list call as received and answered.
#[derive(Debug, Clone)]
pub struct ListCall {
    /// The calendar read; `None` when the call was refused before that.
    pub calendar: Option<String>,
    /// The query parameters as sent (decoded), in order.
    pub query: Vec<(String, String)>,
    pub status: u16,
    /// Items in the answer (cancelled ones included).
    pub items: usize,
    pub next_page_token: bool,
    pub next_sync_token: bool,
    pub at_ms: i64,
}

impl ListCall {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A call of an incremental sync (it sent a `syncToken`).
    pub fn is_incremental(&self) -> bool {
        self.param("syncToken").is_some()
    }

    /// The first page of a full sync (neither a `syncToken` nor a `pageToken`).
    pub fn is_full_sync_start(&self) -> bool {
        self.param("syncToken").is_none() && self.param("pageToken").is_none()
    }
}

/// Any API call (list, watch, stop) as answered.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub method: String,
    pub path: String,
    pub token: Option<String>,
    pub status: u16,
    pub at_ms: i64,
}

/// A notification channel as the emulator keeps it.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    pub id: String,
    pub calendar: String,
    pub resource_id: String,
    pub address: String,
    pub token: Option<String>,
    /// Milliseconds since the epoch.
    pub expiration_ms: i64,
    pub stopped: bool,
    /// Messages sent so far (the last `X-Goog-Message-Number`).
    pub messages: u64,
}

impl ChannelInfo {
    /// Not stopped and not expired: changes are notified to it.
    pub fn live(&self) -> bool {
        !self.stopped && self.expiration_ms > now_ms()
    }
}

/// One notification POSTed to a channel's address.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub channel_id: String,
    pub message_number: u64,
    /// `sync` or `exists`.
    pub state: String,
    /// True when a test forged it ([`GoogleCalendarEmulator::notify_with`]).
    pub forged: bool,
    pub headers: Vec<(String, String)>,
    /// The receiver's status; `None` when it did not answer.
    pub status: Option<u16>,
    pub failure: Option<String>,
    pub at_ms: i64,
}

impl Delivery {
    /// Google counts 200, 201, 202, 204 and 102 as success.
    pub fn delivered(&self) -> bool {
        matches!(self.status, Some(200 | 201 | 202 | 204 | 102))
    }
}

/// A weekly recurring event, added as its occurrences.
#[derive(Debug, Clone)]
pub struct WeeklySeries<'a> {
    /// The series' id (each occurrence's `recurringEventId`).
    pub base_id: &'a str,
    pub summary: &'a str,
    /// The first occurrence's start; the others follow at the same local time
    /// in `time_zone`, a week apart.
    pub first_start: DateTime<Utc>,
    pub duration: Duration,
    pub count: usize,
    /// An IANA zone, e.g. "Europe/London".
    pub time_zone: &'a str,
}

/// What the next authenticated API calls answer instead of doing their work.
#[derive(Debug, Clone, Copy)]
enum Trouble {
    /// 403 `rateLimitExceeded` (domain `usageLimits`).
    RateLimit,
    /// 429 `rateLimitExceeded`, with `Retry-After` when set.
    TooManyRequests(Option<u64>),
    /// A server error (`backendError`).
    Status(u16),
}

struct StoredEvent {
    resource: Value,
    /// The change sequence number of its last change.
    seq: u64,
}

struct Calendar {
    time_zone: String,
    resource_id: String,
    events: HashMap<String, StoredEvent>,
    /// Change sequence number -> event id; each event once, at its last change.
    changes: BTreeMap<u64, String>,
}

struct Google {
    /// Access token -> calendar id.
    tokens: HashMap<String, String>,
    authority: Option<TokenAuthority>,
    calendars: HashMap<String, Calendar>,
    /// The last change sequence number handed out (all calendars).
    seq: u64,
    /// Sync and page tokens of another generation are no longer valid.
    generation: u64,
    channels: Vec<ChannelInfo>,
    channel_ttl: Duration,
    trouble: VecDeque<Trouble>,
    list_calls: Vec<ListCall>,
    calls: Vec<ApiCall>,
    deliveries: Vec<Delivery>,
    next_id: u64,
}

struct Shared {
    state: Mutex<Google>,
    client: reqwest::Client,
    pending: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The emulator, serving on a loopback port until dropped with its runtime.
pub struct GoogleCalendarEmulator {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

/// A notification to send: where, with which headers.
struct Outgoing {
    address: String,
    delivery: Delivery,
}

impl GoogleCalendarEmulator {
    /// Starts an emulator with no calendars.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(Google {
                tokens: HashMap::new(),
                authority: None,
                calendars: HashMap::new(),
                seq: 0,
                generation: 1,
                channels: Vec::new(),
                channel_ttl: DEFAULT_CHANNEL_TTL,
                trouble: VecDeque::new(),
                list_calls: Vec::new(),
                calls: Vec::new(),
                deliveries: Vec::new(),
                next_id: 1,
            }),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            pending: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route(
                "/calendar/v3/calendars/{calendar_id}/events",
                axum::routing::get(events_list),
            )
            .route(
                "/calendar/v3/calendars/{calendar_id}/events/watch",
                axum::routing::post(events_watch),
            )
            .route(
                "/calendar/v3/channels/stop",
                axum::routing::post(channels_stop),
            )
            .with_state(shared.clone());
        let addr = super::serve_loopback(app).await;
        Self { addr, shared }
    }

    /// The plugin's `api_base`: `http://127.0.0.1:PORT` (calls go to `/calendar/v3/...`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The pattern for the operator's `extra_allowed_hosts`.
    pub fn allowed_host(&self) -> String {
        self.base_url()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Google> {
        self.shared.state.lock().unwrap()
    }

    // ------------------------------------------------------------ set-up

    /// Adds calendar `calendar_id` (an e-mail address, say) in `time_zone`,
    /// read with access token `token`.
    pub fn add_calendar(&self, token: &str, calendar_id: &str, time_zone: &str) {
        let mut s = self.state();
        let resource_id = format!("emu-resource-{}", s.next_id);
        s.next_id += 1;
        s.calendars.insert(
            calendar_id.into(),
            Calendar {
                time_zone: time_zone.into(),
                resource_id,
                events: HashMap::new(),
                changes: BTreeMap::new(),
            },
        );
        s.tokens.insert(token.into(), calendar_id.into());
    }

    /// Another access token for a calendar (a refreshed token).
    pub fn add_token(&self, token: &str, calendar_id: &str) {
        self.state().tokens.insert(token.into(), calendar_id.into());
    }

    /// Accepts, besides the added tokens, whatever `authority` maps to a calendar.
    pub fn accept_tokens(&self, authority: TokenAuthority) {
        self.state().authority = Some(authority);
    }

    /// Makes `token` answer 401 from now on.
    pub fn revoke_token(&self, token: &str) {
        self.state().tokens.remove(token);
    }

    /// How long channels created from now on live (unless they ask for less).
    pub fn set_channel_ttl(&self, ttl: Duration) {
        self.state().channel_ttl = ttl;
    }

    /// Invalidates every sync token and page token issued so far: their next
    /// use answers 410 `fullSyncRequired`.
    pub fn expire_sync_tokens(&self) {
        self.state().generation += 1;
    }

    /// Answers the next `n` authenticated calls with 403 `rateLimitExceeded`.
    pub fn rate_limit_next(&self, n: usize) {
        let mut s = self.state();
        s.trouble.extend(std::iter::repeat_n(Trouble::RateLimit, n));
    }

    /// Answers the next `n` authenticated calls with 429 `rateLimitExceeded`,
    /// with `Retry-After: <seconds>` when `retry_after` is set.
    pub fn too_many_requests_next(&self, n: usize, retry_after: Option<Duration>) {
        let trouble = Trouble::TooManyRequests(retry_after.map(|d| d.as_secs()));
        self.state().trouble.extend(std::iter::repeat_n(trouble, n));
    }

    /// Answers the next authenticated call with `status` (500 `backendError`, 503, ...).
    pub fn fail_next(&self, status: u16) {
        self.state().trouble.push_back(Trouble::Status(status));
    }

    // ------------------------------------------------------------ changes

    /// Adds or replaces an event (an events resource: `id`, `summary`,
    /// `start`, `end`, ...); `kind`, `etag`, `status` (`confirmed`),
    /// `created`, `updated` and `iCalUID` are filled in, an `id` if missing.
    /// Live channels are notified. Returns the event as stored.
    pub fn upsert_event(&self, calendar: &str, event: Value) -> Value {
        let stored = {
            let mut s = self.state();
            store(&mut s, calendar, event)
        };
        self.notify_changed(calendar);
        stored
    }

    /// [`Self::upsert_event`], but the notifications are handed back instead
    /// of sent: each live channel's next `exists` message, as its address and
    /// headers (numbered as Google numbers them; not in [`Self::deliveries`]).
    /// For a caller that posts and times them itself, as the load benchmark does.
    pub fn upsert_event_unsent(
        &self,
        calendar: &str,
        event: Value,
    ) -> Vec<(String, Vec<(String, String)>)> {
        let mut s = self.state();
        store(&mut s, calendar, event);
        s.channels
            .iter_mut()
            .filter(|c| c.calendar == calendar && c.live())
            .map(|c| {
                let message = next_message(c, "exists");
                (message.address, message.delivery.headers)
            })
            .collect()
    }

    /// Adds many events with one notification per channel (a bulk import):
    /// for loading large calendars.
    pub fn load_events(&self, calendar: &str, events: impl IntoIterator<Item = Value>) {
        {
            let mut s = self.state();
            for event in events {
                store(&mut s, calendar, event);
            }
        }
        self.notify_changed(calendar);
    }

    /// The organizer cancels event `id`: it keeps its fields with `status:
    /// "cancelled"` (listed to clients as Google lists cancelled items).
    /// False when there is no such event.
    pub fn cancel_event(&self, calendar: &str, id: &str) -> bool {
        self.change(calendar, id, |event| {
            event["status"] = json!("cancelled");
        })
    }

    /// The owner deletes event `id`: only what Google keeps of a deleted event
    /// is left (`id`, `status: "cancelled"`, and for an occurrence
    /// `recurringEventId` and `originalStartTime`). False when there is none.
    pub fn delete_event(&self, calendar: &str, id: &str) -> bool {
        self.change(calendar, id, |event| {
            *event = cancelled_view(event);
        })
    }

    /// Adds a weekly series as its occurrences; returns their ids, in order.
    /// Move one with [`Self::move_occurrence`], cancel one with
    /// [`Self::delete_event`]: as Google lists a series with exceptions.
    pub fn add_weekly_series(&self, calendar: &str, series: &WeeklySeries<'_>) -> Vec<String> {
        let tz: chrono_tz::Tz = series.time_zone.parse().expect("an IANA time zone");
        let duration = chrono::Duration::from_std(series.duration).unwrap();
        let first_local = series.first_start.with_timezone(&tz).naive_local();
        let mut ids = Vec::new();
        let mut events = Vec::new();
        for week in 0..series.count {
            let local = first_local + chrono::Duration::weeks(week as i64);
            let start = tz
                .from_local_datetime(&local)
                .earliest()
                .expect("a local time that exists");
            let end = start + duration;
            let original = start.with_timezone(&Utc);
            let id = format!("{}_{}", series.base_id, original.format("%Y%m%dT%H%M%SZ"));
            let at = |t: DateTime<chrono_tz::Tz>| {
                json!({
                    "dateTime": t.to_rfc3339_opts(SecondsFormat::Secs, false),
                    "timeZone": series.time_zone,
                })
            };
            events.push(json!({
                "id": id,
                "summary": series.summary,
                "start": at(start),
                "end": at(end),
                "recurringEventId": series.base_id,
                "originalStartTime": at(start),
                "iCalUID": format!("{}@google.com", series.base_id),
                "eventType": "default",
            }));
            ids.push(id);
        }
        self.load_events(calendar, events);
        ids
    }

    /// Moves one occurrence (an exception of its series): new start and end,
    /// same id and `originalStartTime`. False when there is no such event.
    pub fn move_occurrence(
        &self,
        calendar: &str,
        id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> bool {
        self.change(calendar, id, |event| {
            // The occurrence keeps its zone: its times are written in it.
            let zone = event["start"]["timeZone"].clone();
            let tz = zone.as_str().and_then(|z| z.parse::<chrono_tz::Tz>().ok());
            let at = |t: DateTime<Utc>| match tz {
                Some(tz) => json!({
                    "dateTime": t.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, false),
                    "timeZone": zone,
                }),
                None => json!({"dateTime": t.to_rfc3339_opts(SecondsFormat::Secs, true)}),
            };
            event["start"] = at(start);
            event["end"] = at(end);
        })
    }

    fn change(&self, calendar: &str, id: &str, edit: impl FnOnce(&mut Value)) -> bool {
        let changed = {
            let mut s = self.state();
            let seq = next_seq(&mut s);
            let cal = s.calendars.get_mut(calendar).expect("add_calendar first");
            match cal.events.get_mut(id) {
                Some(stored) => {
                    edit(&mut stored.resource);
                    stored.resource["updated"] = json!(rfc3339_now());
                    stored.resource["etag"] = json!(format!("\"{seq}\""));
                    cal.changes.remove(&stored.seq);
                    stored.seq = seq;
                    cal.changes.insert(seq, id.to_string());
                    true
                }
                None => false,
            }
        };
        if changed {
            self.notify_changed(calendar);
        }
        changed
    }

    // ------------------------------------------------------------ inspection

    /// The stored event `id` (a deleted one as its tombstone).
    pub fn event(&self, calendar: &str, id: &str) -> Option<Value> {
        self.state()
            .calendars
            .get(calendar)?
            .events
            .get(id)
            .map(|e| e.resource.clone())
    }

    /// Events not cancelled.
    pub fn live_event_count(&self, calendar: &str) -> usize {
        self.state().calendars.get(calendar).map_or(0, |c| {
            c.events
                .values()
                .filter(|e| e.resource["status"] != "cancelled")
                .count()
        })
    }

    /// The calendar's `resourceId` (the same for every channel on it).
    pub fn resource_id(&self, calendar: &str) -> Option<String> {
        self.state()
            .calendars
            .get(calendar)
            .map(|c| c.resource_id.clone())
    }

    /// Every channel created, in order.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.state().channels.clone()
    }

    /// The channels of `calendar` that are live.
    pub fn live_channels(&self, calendar: &str) -> Vec<ChannelInfo> {
        self.channels()
            .into_iter()
            .filter(|c| c.calendar == calendar && c.live())
            .collect()
    }

    /// Makes channel `id` lapse now, as at its expiration.
    pub fn expire_channel(&self, id: &str) {
        if let Some(c) = self.state().channels.iter_mut().find(|c| c.id == id) {
            c.expiration_ms = now_ms();
        }
    }

    /// Every events.list call, in order.
    pub fn list_calls(&self) -> Vec<ListCall> {
        self.state().list_calls.clone()
    }

    /// Every API call (events.list, events.watch, channels.stop), in order.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.state().calls.clone()
    }

    /// Every notification sent so far (wait with [`Self::flush`] first).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state().deliveries.clone()
    }

    /// Waits until every notification sent so far has been answered or failed.
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

    // ------------------------------------------------------------ notifications

    /// Sends a genuine `exists` message on channel `id` now (live or not);
    /// returns the receiver's status.
    pub async fn notify(&self, id: &str) -> Option<u16> {
        let outgoing = {
            let mut s = self.state();
            let channel = s.channels.iter_mut().find(|c| c.id == id)?;
            next_message(channel, "exists")
        };
        send(self.shared.clone(), outgoing).await.status
    }

    /// Sends an `exists` message on channel `id` with `token` in place of the
    /// channel's (`None`: no `X-Goog-Channel-Token` at all), as a forger would;
    /// returns the receiver's status.
    pub async fn notify_with(&self, id: &str, token: Option<&str>) -> Option<u16> {
        let mut outgoing = {
            let mut s = self.state();
            let channel = s.channels.iter_mut().find(|c| c.id == id)?;
            next_message(channel, "exists")
        };
        let d = &mut outgoing.delivery;
        d.forged = true;
        d.headers.retain(|(k, _)| k != "x-goog-channel-token");
        if let Some(token) = token {
            d.headers
                .push(("x-goog-channel-token".into(), token.to_string()));
        }
        send(self.shared.clone(), outgoing).await.status
    }

    /// Sends delivery `message_number` of channel `id` again, same headers (a
    /// redelivery); returns the receiver's status.
    pub async fn redeliver(&self, id: &str, message_number: u64) -> Option<u16> {
        let outgoing = {
            let s = self.state();
            let channel = s.channels.iter().find(|c| c.id == id)?;
            let earlier = s
                .deliveries
                .iter()
                .find(|d| d.channel_id == id && d.message_number == message_number)?;
            Outgoing {
                address: channel.address.clone(),
                delivery: Delivery {
                    status: None,
                    failure: None,
                    at_ms: now_ms(),
                    ..earlier.clone()
                },
            }
        };
        send(self.shared.clone(), outgoing).await.status
    }

    /// Notifies each live channel of `calendar` that it changed.
    fn notify_changed(&self, calendar: &str) {
        let outgoing: Vec<Outgoing> = {
            let mut s = self.state();
            s.channels
                .iter_mut()
                .filter(|c| c.calendar == calendar && c.live())
                .map(|c| next_message(c, "exists"))
                .collect()
        };
        spawn_all(&self.shared, outgoing);
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn rfc3339_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn next_seq(s: &mut Google) -> u64 {
    s.seq += 1;
    s.seq
}

/// Stores `event` in `calendar` as Google keeps it; returns it.
fn store(s: &mut Google, calendar: &str, mut event: Value) -> Value {
    let seq = next_seq(s);
    if event["id"].as_str().is_none() {
        event["id"] = json!(format!("emuevent{seq}"));
    }
    let id = event["id"].as_str().unwrap_or_default().to_string();
    let cal = s.calendars.get_mut(calendar).expect("add_calendar first");
    let now = rfc3339_now();
    let previous = cal.events.remove(&id);
    let created = previous
        .as_ref()
        .and_then(|p| p.resource.get("created").cloned())
        .or_else(|| event.get("created").cloned())
        .unwrap_or_else(|| json!(now));
    if let Some(previous) = previous {
        cal.changes.remove(&previous.seq);
    }
    event["kind"] = json!("calendar#event");
    event["etag"] = json!(format!("\"{seq}\""));
    if event["status"].as_str().is_none() {
        event["status"] = json!("confirmed");
    }
    if event["iCalUID"].as_str().is_none() {
        event["iCalUID"] = json!(format!("{id}@google.com"));
    }
    event["created"] = created;
    event["updated"] = json!(now);
    cal.changes.insert(seq, id.clone());
    cal.events.insert(
        id,
        StoredEvent {
            resource: event.clone(),
            seq,
        },
    );
    event
}

/// What Google lists of a cancelled item: the fields it guarantees.
fn cancelled_view(event: &Value) -> Value {
    let mut view = json!({
        "kind": "calendar#event",
        "etag": event["etag"],
        "id": event["id"],
        "status": "cancelled",
    });
    for field in ["recurringEventId", "originalStartTime", "updated"] {
        if let Some(v) = event.get(field) {
            view[field] = v.clone();
        }
    }
    view
}

/// The next message on `channel`, numbered.
fn next_message(channel: &mut ChannelInfo, state: &str) -> Outgoing {
    channel.messages += 1;
    let expiration = DateTime::<Utc>::from_timestamp_millis(channel.expiration_ms)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let mut headers = vec![
        (
            "content-type".to_string(),
            "application/json; utf-8".to_string(),
        ),
        ("x-goog-channel-id".to_string(), channel.id.clone()),
        ("x-goog-channel-expiration".to_string(), expiration),
        (
            "x-goog-resource-id".to_string(),
            channel.resource_id.clone(),
        ),
        (
            "x-goog-resource-uri".to_string(),
            resource_uri(&channel.calendar),
        ),
        ("x-goog-resource-state".to_string(), state.to_string()),
        (
            "x-goog-message-number".to_string(),
            channel.messages.to_string(),
        ),
    ];
    if let Some(token) = &channel.token {
        headers.push(("x-goog-channel-token".to_string(), token.clone()));
    }
    Outgoing {
        address: channel.address.clone(),
        delivery: Delivery {
            channel_id: channel.id.clone(),
            message_number: channel.messages,
            state: state.to_string(),
            forged: false,
            headers,
            status: None,
            failure: None,
            at_ms: now_ms(),
        },
    }
}

fn resource_uri(calendar: &str) -> String {
    format!(
        "https://www.googleapis.com/calendar/v3/calendars/{}/events?alt=json",
        url::form_urlencoded::byte_serialize(calendar.as_bytes()).collect::<String>()
    )
}

fn spawn_all(shared: &Arc<Shared>, outgoing: Vec<Outgoing>) {
    let mut pending = shared.pending.lock().unwrap();
    for o in outgoing {
        let shared = shared.clone();
        pending.push(tokio::spawn(async move {
            send(shared, o).await;
        }));
    }
}

/// POSTs one notification with an empty body; records and returns it.
async fn send(shared: Arc<Shared>, outgoing: Outgoing) -> Delivery {
    let mut delivery = outgoing.delivery;
    let mut request = shared
        .client
        .post(&outgoing.address)
        .timeout(DELIVERY_TIMEOUT)
        .body(Vec::new());
    for (k, v) in &delivery.headers {
        request = request.header(k, v);
    }
    match request.send().await {
        Ok(response) => delivery.status = Some(response.status().as_u16()),
        Err(e) => delivery.failure = Some(e.to_string()),
    }
    delivery.at_ms = now_ms();
    shared
        .state
        .lock()
        .unwrap()
        .deliveries
        .push(delivery.clone());
    delivery
}

// ---------------------------------------------------------------- the API

/// An error answer in Google's shape: `{"error": {"errors": [item], "code",
/// "message", "status"}}`.
#[derive(Debug, Clone)]
struct Refusal {
    status: u16,
    /// The `errors[0]` item: `domain`, `reason`, `message`, maybe a location.
    item: Value,
    retry_after_s: Option<u64>,
}

impl Refusal {
    fn new(status: u16, domain: &str, reason: &str, message: &str) -> Self {
        Self {
            status,
            item: json!({"domain": domain, "reason": reason, "message": message}),
            retry_after_s: None,
        }
    }

    fn bad_request(reason: &str, message: &str) -> Self {
        Self::new(400, "global", reason, message)
    }

    /// 410 with the errors page's own body.
    fn gone() -> Self {
        Self::new(
            410,
            "calendar",
            "fullSyncRequired",
            "Sync token is no longer valid, a full sync is required.",
        )
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut error = json!({
            "errors": [self.item],
            "code": self.status,
            "message": self.item["message"],
        });
        // Live answers add the google.rpc code; the errors page shows none for 410.
        let grpc = match self.status {
            400 => Some("INVALID_ARGUMENT"),
            401 => Some("UNAUTHENTICATED"),
            403 => Some("PERMISSION_DENIED"),
            404 => Some("NOT_FOUND"),
            429 => Some("RESOURCE_EXHAUSTED"),
            500 => Some("INTERNAL"),
            503 => Some("UNAVAILABLE"),
            _ => None,
        };
        if let Some(grpc) = grpc {
            error["status"] = json!(grpc);
        }
        let code = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, axum::Json(json!({ "error": error }))).into_response();
        if self.status == 401 {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"https://accounts.google.com/\""
                    .parse()
                    .unwrap(),
            );
        }
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.to_string().parse().unwrap());
        }
        response
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Authentication, injected trouble, then which calendar `calendar_id` names
/// for the token: its own (also as `primary`), else 404.
fn authorize(
    s: &mut Google,
    token: Option<&str>,
    calendar_id: Option<&str>,
) -> Result<String, Refusal> {
    let known = token.and_then(|t| {
        s.tokens
            .get(t)
            .cloned()
            .or_else(|| s.authority.as_ref().and_then(|a| a(t)))
    });
    let Some(own) = known.filter(|c| s.calendars.contains_key(c)) else {
        let mut refusal = Refusal::new(401, "global", "authError", "Invalid Credentials");
        refusal.item["locationType"] = json!("header");
        refusal.item["location"] = json!("Authorization");
        return Err(refusal);
    };
    if let Some(trouble) = s.trouble.pop_front() {
        return Err(match trouble {
            Trouble::RateLimit => Refusal::new(
                403,
                "usageLimits",
                "rateLimitExceeded",
                "Rate Limit Exceeded",
            ),
            Trouble::TooManyRequests(retry_after_s) => Refusal {
                retry_after_s,
                ..Refusal::new(
                    429,
                    "usageLimits",
                    "rateLimitExceeded",
                    "Rate Limit Exceeded",
                )
            },
            Trouble::Status(status) => {
                Refusal::new(status, "global", "backendError", "Backend Error")
            }
        });
    }
    match calendar_id {
        None | Some("primary") => Ok(own),
        Some(id) if id == own => Ok(own),
        Some(_) => Err(Refusal::new(404, "global", "notFound", "Not Found")),
    }
}

/// A sync token: `{generation}.{sequence}` behind a prefix, opaque to clients.
fn sync_token(generation: u64, seq: u64) -> String {
    format!("CE{generation}x{seq}")
}

fn read_sync_token(token: &str) -> Option<(u64, u64)> {
    let (generation, seq) = token.strip_prefix("CE")?.split_once('x')?;
    Some((generation.parse().ok()?, seq.parse().ok()?))
}

/// Where a paged result continues.
#[derive(Debug, Clone, Copy)]
struct PageState {
    generation: u64,
    /// Changes up to this sequence number are in the result.
    snapshot: u64,
    /// Changes up to this one have been listed.
    after: u64,
    /// An incremental result lists changes after this one, deletions included.
    since: Option<u64>,
}

fn page_token(p: &PageState) -> String {
    match p.since {
        Some(since) => format!("EI{}x{}x{}x{since}", p.generation, p.snapshot, p.after),
        None => format!("EF{}x{}x{}", p.generation, p.snapshot, p.after),
    }
}

fn read_page_token(token: &str) -> Option<PageState> {
    let (incremental, rest) = if let Some(rest) = token.strip_prefix("EI") {
        (true, rest)
    } else {
        (false, token.strip_prefix("EF")?)
    };
    let numbers: Vec<u64> = rest
        .split('x')
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    match (incremental, numbers.as_slice()) {
        (true, [generation, snapshot, after, since]) => Some(PageState {
            generation: *generation,
            snapshot: *snapshot,
            after: *after,
            since: Some(*since),
        }),
        (false, [generation, snapshot, after]) => Some(PageState {
            generation: *generation,
            snapshot: *snapshot,
            after: *after,
            since: None,
        }),
        _ => None,
    }
}

/// An RFC 3339 time, or a date as midnight UTC, in ms.
fn event_time_ms(time: &Value) -> Option<i64> {
    if let Some(t) = time["dateTime"].as_str() {
        return DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.timestamp_millis());
    }
    let date = NaiveDate::parse_from_str(time["date"].as_str()?, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// An events.list page, with what the call log keeps of it.
struct Listed {
    body: Value,
    items: usize,
    next_page_token: bool,
    next_sync_token: bool,
}

async fn events_list(
    State(shared): State<Arc<Shared>>,
    Path(calendar_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let token = bearer(&headers);
    let mut s = shared.state.lock().unwrap();
    let calendar = authorize(&mut s, token.as_deref(), Some(&calendar_id));
    let (response, listed) = match &calendar {
        Err(refused) => (refused.clone().into_response(), None),
        Ok(calendar) => match list_page(&s, calendar, &query) {
            Ok(listed) => (
                (StatusCode::OK, axum::Json(&listed.body)).into_response(),
                Some(listed),
            ),
            Err(refused) => (refused.into_response(), None),
        },
    };
    let status = response.status().as_u16();
    s.list_calls.push(ListCall {
        calendar: calendar.ok(),
        query,
        status,
        items: listed.as_ref().map_or(0, |l| l.items),
        next_page_token: listed.as_ref().is_some_and(|l| l.next_page_token),
        next_sync_token: listed.as_ref().is_some_and(|l| l.next_sync_token),
        at_ms: now_ms(),
    });
    s.calls.push(ApiCall {
        method: "GET".into(),
        path: format!("/calendar/v3/calendars/{calendar_id}/events"),
        token,
        status,
        at_ms: now_ms(),
    });
    response
}

/// One page of events.list on `calendar` for `query`.
fn list_page(s: &Google, calendar: &str, query: &[(String, String)]) -> Result<Listed, Refusal> {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let cal = &s.calendars[calendar];
    let max_results = match param("maxResults") {
        None => DEFAULT_MAX_RESULTS,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => n.min(MAX_MAX_RESULTS),
            _ => {
                return Err(Refusal::bad_request(
                    "invalid",
                    &format!("Invalid value '{n}'. Values must be within the range: [1, 2500]"),
                ));
            }
        },
    };
    let show_deleted = param("showDeleted") == Some("true");
    let sync = param("syncToken");
    if sync.is_some() {
        if let Some(p) = NOT_WITH_SYNC_TOKEN.iter().find(|p| param(p).is_some()) {
            return Err(Refusal::bad_request(
                "invalid",
                &format!("The parameter {p} cannot be used with syncToken."),
            ));
        }
        if param("showDeleted") == Some("false") {
            return Err(Refusal::bad_request(
                "invalid",
                "showDeleted cannot be false together with syncToken.",
            ));
        }
    }
    let time_bound = |name: &str| -> Result<Option<i64>, Refusal> {
        match param(name) {
            None => Ok(None),
            Some(t) => DateTime::parse_from_rfc3339(t)
                .map(|t| Some(t.timestamp_millis()))
                .map_err(|_| {
                    Refusal::bad_request("invalid", &format!("Bad Request: {name} {t:?}"))
                }),
        }
    };
    let (time_min, time_max) = (time_bound("timeMin")?, time_bound("timeMax")?);
    if let (Some(min), Some(max)) = (time_min, time_max)
        && max <= min
    {
        let mut refusal = Refusal::new(
            400,
            "calendar",
            "timeRangeEmpty",
            "The specified time range is empty.",
        );
        refusal.item["locationType"] = json!("parameter");
        refusal.item["location"] = json!("timeMax");
        return Err(refusal);
    }
    let state = match (param("pageToken"), sync) {
        (Some(page), _) => {
            let Some(state) = read_page_token(page) else {
                return Err(Refusal::bad_request("invalid", "Invalid page token value."));
            };
            if state.generation != s.generation {
                return Err(Refusal::gone());
            }
            state
        }
        (None, Some(sync)) => match read_sync_token(sync) {
            Some((generation, since)) if generation == s.generation && since <= s.seq => {
                PageState {
                    generation,
                    snapshot: s.seq,
                    after: since,
                    since: Some(since),
                }
            }
            _ => return Err(Refusal::gone()),
        },
        (None, None) => PageState {
            generation: s.generation,
            snapshot: s.seq,
            after: 0,
            since: None,
        },
    };
    let incremental = state.since.is_some();
    let wanted = |e: &Value| -> bool {
        let cancelled = e["status"] == "cancelled";
        if incremental {
            return true;
        }
        if cancelled {
            return show_deleted;
        }
        let ends_after =
            time_min.is_none_or(|min| event_time_ms(&e["end"]).is_some_and(|end| end > min));
        let starts_before =
            time_max.is_none_or(|max| event_time_ms(&e["start"]).is_some_and(|start| start < max));
        ends_after && starts_before
    };
    let mut items = Vec::new();
    let mut last = state.after;
    let mut more = false;
    let unlisted = if state.after < state.snapshot {
        cal.changes.range(state.after + 1..=state.snapshot)
    } else {
        cal.changes.range(0..0)
    };
    for (seq, id) in unlisted {
        let event = &cal.events[id].resource;
        if !wanted(event) {
            last = *seq;
            continue;
        }
        if items.len() == max_results {
            more = true;
            break;
        }
        items.push(if event["status"] == "cancelled" {
            cancelled_view(event)
        } else {
            event.clone()
        });
        last = *seq;
    }
    let mut body = json!({
        "kind": "calendar#events",
        "etag": format!("\"{}\"", state.snapshot),
        "summary": calendar,
        "description": "",
        "updated": rfc3339_now(),
        "timeZone": cal.time_zone,
        "accessRole": "owner",
        "defaultReminders": [],
    });
    let (mut next_page_token, mut next_sync_token) = (false, false);
    if more {
        body["nextPageToken"] = json!(page_token(&PageState {
            after: last,
            ..state
        }));
        next_page_token = true;
    } else {
        body["nextSyncToken"] = json!(sync_token(state.generation, state.snapshot));
        next_sync_token = true;
    }
    let count = items.len();
    body["items"] = Value::Array(items);
    Ok(Listed {
        body,
        items: count,
        next_page_token,
        next_sync_token,
    })
}

/// Whether Google would deliver to `address`: HTTPS, or (tests) HTTP on loopback.
fn acceptable_address(address: &str) -> bool {
    let Ok(url) = url::Url::parse(address) else {
        return false;
    };
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
        _ => false,
    }
}

fn valid_channel_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/' | b'='))
}

async fn events_watch(
    State(shared): State<Arc<Shared>>,
    Path(calendar_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = bearer(&headers);
    let (response, sync_message) = {
        let mut s = shared.state.lock().unwrap();
        let answer = watch(&mut s, token.as_deref(), &calendar_id, &body);
        let (response, sync_message) = match answer {
            Ok((channel, outgoing)) => (
                (StatusCode::OK, axum::Json(channel)).into_response(),
                Some(outgoing),
            ),
            Err(refused) => (refused.into_response(), None),
        };
        s.calls.push(ApiCall {
            method: "POST".into(),
            path: format!("/calendar/v3/calendars/{calendar_id}/events/watch"),
            token,
            status: response.status().as_u16(),
            at_ms: now_ms(),
        });
        (response, sync_message)
    };
    // The sync message goes out on its own, as Google sends it: it may reach
    // the receiver before or after the watch call's answer.
    spawn_all(&shared, sync_message.into_iter().collect());
    response
}

/// Creates a channel; its Channel resource and its `sync` message.
fn watch(
    s: &mut Google,
    token: Option<&str>,
    calendar_id: &str,
    body: &[u8],
) -> Result<(Value, Outgoing), Refusal> {
    let calendar = authorize(s, token, Some(calendar_id))?;
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return Err(Refusal::bad_request("parseError", "Parse Error"));
    };
    let text = |k: &str| request.get(k).and_then(Value::as_str);
    let id = text("id").ok_or_else(|| Refusal::bad_request("required", "Required: id"))?;
    if !valid_channel_id(id) {
        return Err(Refusal::bad_request(
            "invalid",
            &format!("Invalid channel id: {id}"),
        ));
    }
    if s.channels.iter().any(|c| c.id == id) {
        return Err(Refusal::bad_request(
            "channelIdNotUnique",
            &format!("Channel id {id} not unique"),
        ));
    }
    match text("type") {
        Some("web_hook" | "webhook") => {}
        Some(other) => {
            return Err(Refusal::bad_request(
                "invalid",
                &format!("Unknown channel type: {other}"),
            ));
        }
        None => return Err(Refusal::bad_request("required", "Required: type")),
    }
    let address =
        text("address").ok_or_else(|| Refusal::bad_request("required", "Required: address"))?;
    if !acceptable_address(address) {
        return Err(Refusal::bad_request(
            "push.webhookUrlNotHttps",
            &format!("WebHook callback must be HTTPS: {address}"),
        ));
    }
    let channel_token = text("token").map(str::to_string);
    if channel_token.as_ref().is_some_and(|t| t.len() > 256) {
        return Err(Refusal::bad_request(
            "invalid",
            "Channel token is longer than 256 characters",
        ));
    }
    let longest = now_ms() + s.channel_ttl.as_millis() as i64;
    let asked = match request.get("expiration") {
        Some(Value::String(ms)) => ms.parse::<i64>().ok(),
        Some(Value::Number(ms)) => ms.as_i64(),
        _ => None,
    };
    let expiration_ms = asked.map_or(longest, |a| a.min(longest));
    let resource_id = s.calendars[&calendar].resource_id.clone();
    let mut info = ChannelInfo {
        id: id.to_string(),
        calendar: calendar.clone(),
        resource_id: resource_id.clone(),
        address: address.to_string(),
        token: channel_token.clone(),
        expiration_ms,
        stopped: false,
        messages: 0,
    };
    let sync_message = next_message(&mut info, "sync");
    s.channels.push(info);
    let mut channel = json!({
        "kind": "api#channel",
        "id": id,
        "resourceId": resource_id,
        "resourceUri": resource_uri(&calendar),
        "expiration": expiration_ms.to_string(),
    });
    if let Some(t) = channel_token {
        channel["token"] = json!(t);
    }
    Ok((channel, sync_message))
}

async fn channels_stop(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = bearer(&headers);
    let mut s = shared.state.lock().unwrap();
    let response = match stop(&mut s, token.as_deref(), &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused.into_response(),
    };
    s.calls.push(ApiCall {
        method: "POST".into(),
        path: "/calendar/v3/channels/stop".into(),
        token,
        status: response.status().as_u16(),
        at_ms: now_ms(),
    });
    response
}

fn stop(s: &mut Google, token: Option<&str>, body: &[u8]) -> Result<(), Refusal> {
    let calendar = authorize(s, token, None)?;
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return Err(Refusal::bad_request("parseError", "Parse Error"));
    };
    let id = request
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let resource_id = request.get("resourceId").and_then(Value::as_str);
    let channel = s.channels.iter_mut().find(|c| {
        c.id == id
            && c.calendar == calendar
            && !c.stopped
            && Some(c.resource_id.as_str()) == resource_id
    });
    match channel {
        Some(c) => {
            c.stopped = true;
            Ok(())
        }
        None => Err(Refusal::new(
            404,
            "global",
            "notFound",
            &format!("Channel '{id}' not found for project 'emulator'"),
        )),
    }
}
