//! A loopback emulator of Microsoft Graph v1.0: the person (`/me`), change
//! notification subscriptions and their webhooks, calendar view delta sync,
//! and Teams presence, as Microsoft's public docs describe them.
//!
//! People are known by bearer token ([`GraphEmulator::add_person`], or any
//! token an [`GraphEmulator::accept_tokens`] authority vouches for); a missing
//! or unknown token answers 401 `InvalidAuthenticationToken`. Every error has
//! Graph's shape, `{"error": {"code", "message", "innerError": {"date",
//! "request-id", "client-request-id"}}}` ("Microsoft Graph error responses").
//!
//! - `GET /v1.0/me`: `{id, displayName, userPrincipalName}` (user: get).
//! - Subscriptions ("Create subscription", "Update subscription", "Delete
//!   subscription", "Receive change notifications through webhooks"):
//!   `POST /v1.0/subscriptions` takes `me/events` (or `users/{id}/events`,
//!   change types among `created,updated,deleted`) and
//!   `/communications/presences/{id}` (`updated` only); `expirationDateTime`
//!   must be in the future (400 `InvalidRequest`) and within the resource's
//!   maximum, 10,080 minutes for events and 60 for presence (400
//!   `ExtensionError`); `clientState` at most 128 characters. Before answering,
//!   the emulator validates `notificationUrl` (and `lifecycleNotificationUrl`
//!   when given) as Graph does: `POST {url}?validationToken={token}` with
//!   `Content-Type: text/plain; charset=utf-8` and an empty body, wanting 200
//!   with the token as the body within 10 seconds, else 400 `ValidationError`
//!   ("Subscription validation request failed. Notification endpoint must
//!   respond with 200 OK to validation request."). It answers 201 with the
//!   subscription resource. `PATCH` renews (`expirationDateTime`, same rules,
//!   200 with the resource), `DELETE` answers 204; an unknown, expired or
//!   someone else's id answers 404 `ResourceNotFound`.
//! - Change notifications: a change to a person's event (or [`Series`]) is
//!   POSTed to each live events subscription of theirs, and a change of
//!   Teams status ([`GraphEmulator::set_presence`]) to each live presence
//!   subscription on them, as `{"value": [{subscriptionId,
//!   subscriptionExpirationDateTime, changeType, resource, resourceData,
//!   clientState, tenantId}]}` with `Content-Type: application/json`. Presence
//!   notifications carry no presence values: rich notifications need an
//!   encryption certificate, which the plugin does not give. Deliveries are
//!   recorded with the receiver's status ([`GraphEmulator::deliveries`]).
//! - `GET /v1.0/me/calendarView/delta` ("Get incremental changes to events in
//!   a calendar view", `event: delta`): `startDateTime` and `endDateTime` are
//!   required on the first call (400 `ErrorInvalidParameter`); events
//!   overlapping the window, occurrences and exceptions of a series as their
//!   own items (series masters are not in a calendar view), `Prefer:
//!   odata.maxpagesize` items per page (default [`DEFAULT_PAGE_SIZE`]),
//!   `@odata.nextLink` with `$skiptoken` while more follow, and
//!   `@odata.deltaLink` with `$deltatoken` on the last page. A delta token
//!   returns what changed since it was issued, deletions as `{"@removed":
//!   {"reason": "deleted"}, "id"}`. Times are given in the zone of `Prefer:
//!   outlook.timezone="..."` (UTC without it), with seven fractional digits; a
//!   `Preference-Applied` header says which preferences were applied. After
//!   [`GraphEmulator::expire_delta_tokens`], every token issued before answers
//!   410 `syncStateNotFound` ("The sync state generation is not found. The
//!   delta token is expired and data must be synchronized again.").
//! - Presence: `GET /v1.0/me/presence` and `/v1.0/users/{id}/presence`
//!   answer `{id, availability, activity, statusMessage}`; `POST
//!   /v1.0/users/{id}/presence/setPresence` (the caller's own id, else 403)
//!   checks its body per "presence: setPresence" (`sessionId` the application's
//!   id, a supported `availability`/`activity` pair, `expirationDuration` from
//!   PT5M to PT4H, PT5M when absent; else 400 `InvalidRequest`) and answers 200
//!   empty; `clearPresence` takes `{sessionId}`. Both are recorded
//!   ([`GraphEmulator::set_presence_calls`]).
//! - [`GraphEmulator::throttle_next`]: the next requests answer 429
//!   `TooManyRequests` with `Retry-After` ("Microsoft Graph throttling guidance").
//!
//! Not emulated: Graph's retries of failed deliveries (for up to 4 hours),
//! lifecycle notifications sent by itself (send one with
//! [`GraphEmulator::send_lifecycle`]), the aggregation of app presence sessions
//! into the person's presence (a setPresence changes nothing the person's
//! presence subscriptions report), the one-presence-subscription-per-app
//! limit, HTTPS-only notification URLs (loopback `http` is accepted), and
//! `Prefer: outlook.timezone` names other than UTC and IANA ones.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

/// The application (client) id the emulated app registration has: what
/// setPresence wants as `sessionId` (the plugin's config `client_id`).
pub const APPLICATION_ID: &str = "3f4e5a6b-1c2d-4e8f-9a0b-c1d2e3f4a5b6";
/// The directory (tenant) id notifications carry.
pub const TENANT_ID: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";
/// Items per delta page without `Prefer: odata.maxpagesize` (list events' default).
pub const DEFAULT_PAGE_SIZE: usize = 10;
/// Subscription lifetimes' maximums, in minutes ("subscription resource type").
pub const MAX_EVENTS_MINUTES: i64 = 10_080;
pub const MAX_PRESENCE_MINUTES: i64 = 60;
/// How long Graph waits for the answer to a validation request.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// setPresence's supported `availability`/`activity` pairs.
pub const PRESENCE_PAIRS: [(&str, &str); 5] = [
    ("Available", "Available"),
    ("Busy", "InACall"),
    ("Busy", "InAConferenceCall"),
    ("Away", "Away"),
    ("DoNotDisturb", "Presenting"),
];

/// Decides whether a token not added with `add_person` belongs to someone:
/// the Graph user id it authenticates, or none (tokens an OAuth emulator issued).
pub type TokenAuthority = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What a subscription watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    Events,
    Presence,
}

/// A subscription as Graph keeps it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub kind: SubscriptionKind,
    /// The resource as given (`me/events`, `/communications/presences/{id}`).
    pub resource: String,
    /// The person whose events or presence it watches.
    pub target: String,
    /// The person who created it (whose token renews and deletes it).
    pub creator: String,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_notification_url: Option<String>,
    pub client_state: Option<String>,
    pub expiration: DateTime<Utc>,
}

impl Subscription {
    fn live(&self) -> bool {
        self.expiration > Utc::now()
    }

    fn resource_json(&self) -> Value {
        json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": APPLICATION_ID,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_notification_url,
            "expirationDateTime": graph_instant(self.expiration),
            "creatorId": self.creator,
            "includeResourceData": false,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": null,
            "encryptionCertificateId": null,
            "notificationUrlAppId": null,
            "notificationQueryOptions": null,
        })
    }
}

/// What a request to the webhook URL was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    Validation,
    Notification,
    Lifecycle,
}

/// One request the emulator made to a webhook URL.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub kind: DeliveryKind,
    pub url: String,
    pub subscription_id: Option<String>,
    pub body: String,
    /// The receiver's status; `None` when it did not answer.
    pub status: Option<u16>,
    /// The receiver's body (a validation answer's token).
    pub answer: String,
}

impl Delivery {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn payload(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One setPresence or clearPresence Graph accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetPresenceCall {
    pub user: String,
    /// `setPresence` or `clearPresence`.
    pub action: String,
    pub session_id: String,
    pub availability: Option<String>,
    pub activity: Option<String>,
    pub expiration_minutes: Option<i64>,
}

/// One API request as received and answered.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Every `Prefer` header value sent.
    pub prefer: Vec<String>,
    pub status: u16,
}

/// A recurring series made with [`GraphEmulator::add_series`].
#[derive(Debug, Clone)]
pub struct Series {
    pub master: String,
    /// The occurrences in the calendar view, in order, the exception included.
    pub occurrences: Vec<String>,
    /// The occurrence moved two hours later (type `exception`).
    pub exception: String,
    /// The occurrence the organiser deleted: never in the calendar view.
    pub deleted: String,
}

#[derive(Clone)]
struct StoredEvent {
    json: Value,
    /// The change sequence number of its last change.
    changed: u64,
}

struct Person {
    id: String,
    display_name: String,
    upn: String,
    events: BTreeMap<String, StoredEvent>,
    /// Deleted event ids and when.
    tombstones: Vec<(String, u64)>,
    availability: String,
    activity: String,
}

/// Where a delta round stands: the items still to page through, and the
/// sequence number the round's delta token will continue from.
struct Round {
    user: String,
    window: (DateTime<Utc>, DateTime<Utc>),
    items: Vec<Value>,
    offset: usize,
    seq: u64,
}

/// A delta token: the window, and the sequence number changes are counted from.
struct DeltaState {
    user: String,
    window: (DateTime<Utc>, DateTime<Utc>),
    seq: u64,
}

struct Directory {
    tokens: HashMap<String, String>,
    authority: Option<TokenAuthority>,
    people: HashMap<String, Person>,
    subscriptions: BTreeMap<String, Subscription>,
    skip_tokens: HashMap<String, Round>,
    delta_tokens: HashMap<String, DeltaState>,
    seq: u64,
    next_token: u64,
    throttled: u32,
    retry_after_s: u64,
    deliveries: Vec<Delivery>,
    set_presence_calls: Vec<SetPresenceCall>,
    calls: Vec<ApiCall>,
}

struct Shared {
    state: Mutex<Directory>,
    client: reqwest::Client,
    base: Mutex<String>,
    pending: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The emulator, serving on a loopback port until dropped with its runtime.
pub struct GraphEmulator {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl GraphEmulator {
    /// Starts an emulator with nobody in its directory.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(Directory {
                tokens: HashMap::new(),
                authority: None,
                people: HashMap::new(),
                subscriptions: BTreeMap::new(),
                skip_tokens: HashMap::new(),
                delta_tokens: HashMap::new(),
                seq: 0,
                next_token: 1,
                throttled: 0,
                retry_after_s: 0,
                deliveries: Vec::new(),
                set_presence_calls: Vec::new(),
                calls: Vec::new(),
            }),
            client: reqwest::Client::builder()
                .timeout(VALIDATION_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: Mutex::new(String::new()),
            pending: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/v1.0/me", get(me))
            .route("/v1.0/subscriptions", post(create_subscription))
            .route(
                "/v1.0/subscriptions/{id}",
                patch(renew_subscription).delete(delete_subscription),
            )
            .route("/v1.0/me/calendarView/delta", get(calendar_view_delta))
            .route("/v1.0/me/presence", get(my_presence))
            .route("/v1.0/users/{id}/presence", get(user_presence))
            .route("/v1.0/users/{id}/presence/{action}", post(presence_action))
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                record_and_throttle,
            ))
            .with_state(shared.clone());
        let addr = super::serve_loopback(app).await;
        *shared.base.lock().unwrap() = format!("http://{addr}");
        Self { addr, shared }
    }

    /// The plugin's `api_base`: `http://127.0.0.1:PORT` (requests go to `/v1.0/...`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The pattern for the operator's `extra_allowed_hosts`.
    pub fn allowed_host(&self) -> String {
        self.base_url()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Directory> {
        self.shared.state.lock().unwrap()
    }

    /// Adds a person with Graph user id `id` whose access token is `token`
    /// (call again to give them another token). Their Teams status starts
    /// Available/Available.
    pub fn add_person(&self, id: &str, token: &str) {
        let mut s = self.state();
        s.tokens.insert(token.into(), id.into());
        s.people.entry(id.into()).or_insert_with(|| Person {
            id: id.into(),
            display_name: format!("Person {id}"),
            upn: format!("{id}@contoso.example"),
            events: BTreeMap::new(),
            tombstones: Vec::new(),
            availability: "Available".into(),
            activity: "Available".into(),
        });
    }

    /// Accepts, besides the added tokens, whatever `authority` vouches for
    /// (the person must still be added, with any token).
    pub fn accept_tokens(&self, authority: TokenAuthority) {
        self.state().authority = Some(authority);
    }

    /// Makes `token` unknown: every request with it answers 401.
    pub fn revoke_token(&self, token: &str) {
        self.state().tokens.remove(token);
    }

    /// Answers the next `n` requests with 429 `TooManyRequests` and
    /// `Retry-After: retry_after_s`.
    pub fn throttle_next(&self, n: u32, retry_after_s: u64) {
        let mut s = self.state();
        s.throttled = n;
        s.retry_after_s = retry_after_s;
    }

    /// Every subscription Graph holds (expired ones included until removed).
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.state().subscriptions.values().cloned().collect()
    }

    /// The live subscriptions on `target`'s events or presence.
    pub fn live_subscriptions(&self, target: &str, kind: SubscriptionKind) -> Vec<Subscription> {
        self.subscriptions()
            .into_iter()
            .filter(|s| s.target == target && s.kind == kind && s.live())
            .collect()
    }

    /// Drops a subscription on Graph's side: its renewal answers 404.
    pub fn forget_subscription(&self, id: &str) {
        self.state().subscriptions.remove(id);
    }

    /// Makes every delta and skip token issued so far answer 410 `syncStateNotFound`.
    pub fn expire_delta_tokens(&self) {
        let mut s = self.state();
        s.delta_tokens.clear();
        s.skip_tokens.clear();
    }

    /// Every request made to a webhook URL so far (wait with [`Self::settle`] first).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state().deliveries.clone()
    }

    /// The change notifications delivered (or tried) so far.
    pub fn notifications(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.kind == DeliveryKind::Notification)
            .collect()
    }

    /// The setPresence and clearPresence calls Graph accepted.
    pub fn set_presence_calls(&self) -> Vec<SetPresenceCall> {
        self.state().set_presence_calls.clone()
    }

    /// Every API request, in order.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.state().calls.clone()
    }

    /// Waits until every notification sent so far has been answered or given up on.
    pub async fn settle(&self) {
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

    /// Adds or replaces an event of `user` (Graph's `event` JSON; an `id` is
    /// made when it has none; `type` defaults to `singleInstance`, `showAs` to
    /// `busy`), and notifies their events subscriptions (`created` or
    /// `updated`). Returns the event's id.
    pub fn upsert_event(&self, user: &str, event: Value) -> String {
        let (id, created) = store_event(&mut self.state(), user, event);
        self.notify_event(user, &id, if created { "created" } else { "updated" });
        id
    }

    /// Deletes an event of `user` (a delta round reports it `@removed`) and
    /// notifies their events subscriptions (`deleted`). False when there was none.
    pub fn delete_event(&self, user: &str, id: &str) -> bool {
        let removed = {
            let mut s = self.state();
            s.seq += 1;
            let seq = s.seq;
            let person = s.people.get_mut(user).expect("add_person first");
            let removed = person.events.remove(id).is_some();
            if removed {
                person.tombstones.push((id.to_string(), seq));
            }
            removed
        };
        if removed {
            self.notify_event(user, id, "deleted");
        }
        removed
    }

    /// The event of `user` with `id`, as stored.
    pub fn event(&self, user: &str, id: &str) -> Option<Value> {
        self.state()
            .people
            .get(user)?
            .events
            .get(id)
            .map(|e| e.json.clone())
    }

    /// A daily series of `count` occurrences (at least 3) of `minutes` from
    /// `first_start`, as a calendar view returns it: the second occurrence
    /// moved two hours later (an `exception`), the third deleted by the
    /// organiser (absent), the others `occurrence`s, each with
    /// `seriesMasterId`; the `seriesMaster` is stored but, as in a calendar
    /// view, never listed. Notifies once per item, as Graph does.
    pub fn add_series(
        &self,
        user: &str,
        master_id: &str,
        subject: &str,
        first_start: DateTime<Utc>,
        minutes: i64,
        count: u32,
    ) -> Series {
        assert!(
            count >= 3,
            "a series with an exception and a deleted occurrence"
        );
        let span = chrono::TimeDelta::minutes(minutes);
        let times = |start: DateTime<Utc>| {
            (
                json!({"dateTime": graph_local(start.naive_utc()), "timeZone": "UTC"}),
                json!({"dateTime": graph_local((start + span).naive_utc()), "timeZone": "UTC"}),
            )
        };
        let (start, end) = times(first_start);
        self.upsert_event(
            user,
            json!({"id": master_id, "subject": subject, "type": "seriesMaster",
                   "start": start, "end": end,
                   "recurrence": {"pattern": {"type": "daily", "interval": 1},
                                  "range": {"type": "numbered", "numberOfOccurrences": count,
                                            "startDate": first_start.date_naive().to_string()}}}),
        );
        let mut series = Series {
            master: master_id.to_string(),
            occurrences: Vec::new(),
            exception: String::new(),
            deleted: String::new(),
        };
        for i in 0..count {
            let id = format!("{master_id}_occ{i}");
            let mut at = first_start + chrono::TimeDelta::days(i64::from(i));
            let kind = match i {
                1 => {
                    at += chrono::TimeDelta::hours(2);
                    series.exception = id.clone();
                    "exception"
                }
                2 => {
                    series.deleted = id;
                    continue;
                }
                _ => "occurrence",
            };
            let (start, end) = times(at);
            self.upsert_event(
                user,
                json!({"id": id, "subject": subject, "type": kind, "seriesMasterId": master_id,
                       "start": start, "end": end}),
            );
            series.occurrences.push(id);
        }
        series
    }

    /// The person changes their Teams status: their presence subscriptions are notified.
    pub fn set_presence(&self, user: &str, availability: &str, activity: &str) {
        let subs = {
            let mut s = self.state();
            let person = s.people.get_mut(user).expect("add_person first");
            person.availability = availability.into();
            person.activity = activity.into();
            live_on(&s, user, SubscriptionKind::Presence)
        };
        for sub in subs {
            let item = presence_notification(&sub, sub.client_state.as_deref());
            self.spawn_delivery(
                sub.notification_url.clone(),
                Some(sub.id.clone()),
                json!({"value": [item]}),
            );
        }
    }

    /// [`Self::upsert_event`], but the change notifications are handed back
    /// instead of sent: each subscription's `notificationUrl` and the body
    /// Graph would POST (not in [`Self::deliveries`]). For a caller that posts
    /// and times them itself, as the load benchmark does.
    pub fn upsert_event_unsent(&self, user: &str, event: Value) -> Vec<(String, Value)> {
        let mut s = self.state();
        let (id, created) = store_event(&mut s, user, event);
        let change = if created { "created" } else { "updated" };
        live_on(&s, user, SubscriptionKind::Events)
            .into_iter()
            .filter(|sub| sub.change_type.split(',').any(|c| c.trim() == change))
            .map(|sub| {
                let item = event_notification(&sub, change, &id, sub.client_state.as_deref());
                (sub.notification_url, json!({"value": [item]}))
            })
            .collect()
    }

    /// [`Self::set_presence`], but the notifications are handed back instead
    /// of sent, as with [`Self::upsert_event_unsent`].
    pub fn set_presence_unsent(
        &self,
        user: &str,
        availability: &str,
        activity: &str,
    ) -> Vec<(String, Value)> {
        let mut s = self.state();
        let person = s.people.get_mut(user).expect("add_person first");
        person.availability = availability.into();
        person.activity = activity.into();
        live_on(&s, user, SubscriptionKind::Presence)
            .into_iter()
            .map(|sub| {
                let item = presence_notification(&sub, sub.client_state.as_deref());
                (sub.notification_url, json!({"value": [item]}))
            })
            .collect()
    }

    /// The person's Teams `(availability, activity)`.
    pub fn presence(&self, user: &str) -> Option<(String, String)> {
        let s = self.state();
        let p = s.people.get(user)?;
        Some((p.availability.clone(), p.activity.clone()))
    }

    /// Sends a notification for `subscription_id` carrying `client_state`
    /// (a forged or stale one) and waits for the answer's status.
    pub async fn notify_with_client_state(
        &self,
        subscription_id: &str,
        client_state: &str,
    ) -> Option<u16> {
        let sub = self
            .state()
            .subscriptions
            .get(subscription_id)
            .cloned()
            .expect("a known subscription");
        let item = match sub.kind {
            SubscriptionKind::Events => {
                event_notification(&sub, "updated", "AAMkForged", Some(client_state))
            }
            SubscriptionKind::Presence => presence_notification(&sub, Some(client_state)),
        };
        deliver(
            self.shared.clone(),
            DeliveryKind::Notification,
            sub.notification_url.clone(),
            Some(sub.id.clone()),
            json!({"value": [item]}),
        )
        .await
    }

    /// Sends a lifecycle notification (`reauthorizationRequired`,
    /// `subscriptionRemoved`, `missed`) for a subscription to its
    /// `lifecycleNotificationUrl` (else its `notificationUrl`); the status.
    pub async fn send_lifecycle(&self, subscription_id: &str, event: &str) -> Option<u16> {
        let sub = self
            .state()
            .subscriptions
            .get(subscription_id)
            .cloned()
            .expect("a known subscription");
        self.lifecycle(sub, event).await
    }

    /// Graph removes a subscription on its side (its renewal answers 404 from
    /// now on) and sends `subscriptionRemoved` for it; the status answered.
    pub async fn remove_subscription(&self, subscription_id: &str) -> Option<u16> {
        let sub = self
            .state()
            .subscriptions
            .remove(subscription_id)
            .expect("a known subscription");
        self.lifecycle(sub, "subscriptionRemoved").await
    }

    async fn lifecycle(&self, sub: Subscription, event: &str) -> Option<u16> {
        let item = json!({
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": graph_instant(sub.expiration),
            "tenantId": TENANT_ID,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        });
        let url = sub
            .lifecycle_notification_url
            .clone()
            .unwrap_or(sub.notification_url.clone());
        deliver(
            self.shared.clone(),
            DeliveryKind::Lifecycle,
            url,
            Some(sub.id.clone()),
            json!({"value": [item]}),
        )
        .await
    }

    fn notify_event(&self, user: &str, event_id: &str, change: &str) {
        let subs = live_on(&self.state(), user, SubscriptionKind::Events);
        for sub in subs {
            if !sub.change_type.split(',').any(|c| c.trim() == change) {
                continue;
            }
            let item = event_notification(&sub, change, event_id, sub.client_state.as_deref());
            self.spawn_delivery(
                sub.notification_url.clone(),
                Some(sub.id.clone()),
                json!({"value": [item]}),
            );
        }
    }

    fn spawn_delivery(&self, url: String, subscription_id: Option<String>, body: Value) {
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            deliver(
                shared,
                DeliveryKind::Notification,
                url,
                subscription_id,
                body,
            )
            .await;
        });
        self.shared.pending.lock().unwrap().push(task);
    }
}

// ---------------------------------------------------------------- helpers

/// An instant as Graph writes it in resources: `2026-11-26T10:00:00.0000000Z`.
pub fn graph_instant(at: DateTime<Utc>) -> String {
    format!("{}Z", graph_local(at.naive_utc()))
}

/// A local time with Graph's seven fractional digits: `2026-11-26T10:00:00.0000000`.
pub fn graph_local(t: NaiveDateTime) -> String {
    format!(
        "{}.{:07}",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.nanosecond() % 1_000_000_000 / 100
    )
}

fn uuid() -> String {
    let b: [u8; 16] = rand::random();
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

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"code": code, "message": message, "innerError": {
            "date": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            "request-id": uuid(),
            "client-request-id": uuid(),
        }}})
        .to_string(),
    )
        .into_response()
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn zone(name: &str) -> Option<Tz> {
    if name.eq_ignore_ascii_case("UTC") {
        return Some(chrono_tz::UTC);
    }
    name.parse().ok()
}

/// A `dateTimeTimeZone` as an instant (unknown zones read as UTC).
fn instant_of(v: &Value) -> Option<DateTime<Utc>> {
    let local =
        NaiveDateTime::parse_from_str(v.get("dateTime")?.as_str()?, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    let tz = v
        .get("timeZone")
        .and_then(Value::as_str)
        .and_then(zone)
        .unwrap_or(chrono_tz::UTC);
    tz.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

fn is_all_day(event: &Value) -> bool {
    event
        .get("isAllDay")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// An event's span; an all-day event's dates as midnight UTC.
fn span_of(event: &Value) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if is_all_day(event) {
        let date = |v: &Value| -> Option<DateTime<Utc>> {
            let d: NaiveDate = v.get("dateTime")?.as_str()?.get(..10)?.parse().ok()?;
            Some(d.and_hms_opt(0, 0, 0)?.and_utc())
        };
        return Some((date(event.get("start")?)?, date(event.get("end")?)?));
    }
    Some((
        instant_of(event.get("start")?)?,
        instant_of(event.get("end")?)?,
    ))
}

/// The event as served with times in `tz`.
fn render(event: &Value, tz: Tz) -> Value {
    let mut out = event.clone();
    for key in ["start", "end"] {
        let Some(v) = event.get(key) else { continue };
        let local = if is_all_day(event) {
            v.get("dateTime")
                .and_then(Value::as_str)
                .and_then(|d| d.get(..10))
                .and_then(|d| d.parse::<NaiveDate>().ok())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        } else {
            instant_of(v).map(|t| t.with_timezone(&tz).naive_local())
        };
        if let Some(local) = local {
            out[key] = json!({"dateTime": graph_local(local), "timeZone": tz.name()});
        }
    }
    out
}

/// Stores an event; its id, and whether it is new.
fn store_event(s: &mut Directory, user: &str, mut event: Value) -> (String, bool) {
    s.seq += 1;
    let seq = s.seq;
    let now = graph_instant(Utc::now());
    let person = s.people.get_mut(user).expect("add_person first");
    let id = event
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("AAMkAD{}", uuid().replace('-', "")));
    let created = person
        .events
        .get(&id)
        .and_then(|e| e.json.get("createdDateTime").cloned())
        .unwrap_or_else(|| json!(now));
    let zone_of = |key: &str| {
        event
            .pointer(&format!("/{key}/timeZone"))
            .cloned()
            .unwrap_or_else(|| json!("UTC"))
    };
    let defaults = json!({
        "@odata.type": "#microsoft.graph.event",
        "@odata.etag": format!("W/\"{}\"", uuid()),
        "id": id,
        "createdDateTime": created,
        "lastModifiedDateTime": if person.events.contains_key(&id) { json!(now) } else { created.clone() },
        "subject": "",
        "bodyPreview": "",
        "body": {"contentType": "html", "content": ""},
        "isAllDay": false,
        "isCancelled": false,
        "isOnlineMeeting": false,
        "onlineMeetingProvider": "unknown",
        "onlineMeeting": null,
        "showAs": "busy",
        "type": "singleInstance",
        "seriesMasterId": null,
        "location": {"displayName": ""},
        "attendees": [],
        "originalStartTimeZone": zone_of("start"),
        "originalEndTimeZone": zone_of("end"),
    });
    if let (Value::Object(d), Value::Object(e)) = (defaults, &mut event) {
        for (k, v) in d {
            if k == "@odata.etag" || k == "lastModifiedDateTime" || k == "id" {
                e.insert(k, v);
            } else {
                e.entry(k).or_insert(v);
            }
        }
    }
    person.tombstones.retain(|(t, _)| t != &id);
    let created = person
        .events
        .insert(
            id.clone(),
            StoredEvent {
                json: event,
                changed: seq,
            },
        )
        .is_none();
    (id, created)
}

fn live_on(s: &Directory, user: &str, kind: SubscriptionKind) -> Vec<Subscription> {
    s.subscriptions
        .values()
        .filter(|sub| sub.target == user && sub.kind == kind && sub.live())
        .cloned()
        .collect()
}

fn event_notification(
    sub: &Subscription,
    change: &str,
    event_id: &str,
    client_state: Option<&str>,
) -> Value {
    let resource = format!("Users/{}/Events/{event_id}", sub.target);
    json!({
        "id": uuid(),
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": graph_instant(sub.expiration),
        "changeType": change,
        "resource": resource,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": resource,
            "@odata.etag": format!("W/\"{}\"", uuid()),
            "id": event_id,
        },
        "clientState": client_state,
        "tenantId": TENANT_ID,
    })
}

fn presence_notification(sub: &Subscription, client_state: Option<&str>) -> Value {
    let resource = format!("communications/presences('{}')", sub.target);
    json!({
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": graph_instant(sub.expiration),
        "changeType": "updated",
        "resource": resource,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.presence",
            "@odata.id": resource,
            "id": sub.target,
        },
        "clientState": client_state,
        "tenantId": TENANT_ID,
    })
}

/// POSTs a notification body to `url`, records the delivery, returns the status.
async fn deliver(
    shared: Arc<Shared>,
    kind: DeliveryKind,
    url: String,
    subscription_id: Option<String>,
    body: Value,
) -> Option<u16> {
    let text = body.to_string();
    let answer = shared
        .client
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(text.clone())
        .send()
        .await;
    let (status, answer) = match answer {
        Ok(r) => (
            Some(r.status().as_u16()),
            r.text().await.unwrap_or_default(),
        ),
        Err(_) => (None, String::new()),
    };
    shared.state.lock().unwrap().deliveries.push(Delivery {
        kind,
        url,
        subscription_id,
        body: text,
        status,
        answer,
    });
    status
}

/// Graph's validation request: true when `url` echoed the token in time.
async fn validate(shared: &Arc<Shared>, url: &str) -> bool {
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid()
    );
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("validationToken", &token)
        .finish();
    let target = format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' });
    let answer = shared
        .client
        .post(&target)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .send()
        .await;
    let (status, content_type, body) = match answer {
        Ok(r) => {
            let status = r.status().as_u16();
            let content_type = r
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (
                Some(status),
                content_type,
                r.text().await.unwrap_or_default(),
            )
        }
        Err(_) => (None, String::new(), String::new()),
    };
    shared.state.lock().unwrap().deliveries.push(Delivery {
        kind: DeliveryKind::Validation,
        url: target,
        subscription_id: None,
        body: String::new(),
        status,
        answer: body.clone(),
    });
    status == Some(200) && content_type.starts_with("text/plain") && body == token
}

// ---------------------------------------------------------------- handlers

async fn record_and_throttle(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let prefer: Vec<String> = request
        .headers()
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let throttled = {
        let mut s = shared.state.lock().unwrap();
        if s.throttled > 0 {
            s.throttled -= 1;
            Some(s.retry_after_s)
        } else {
            None
        }
    };
    let response = match throttled {
        Some(seconds) => {
            let mut r = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Please retry again later.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, seconds.to_string().parse().unwrap());
            r
        }
        None => next.run(request).await,
    };
    shared.state.lock().unwrap().calls.push(ApiCall {
        method,
        uri,
        prefer,
        status: response.status().as_u16(),
    });
    response
}

/// The Graph user id the request's bearer token belongs to, or Graph's 401.
// The error is the answer itself (a Response, large): returned once per request.
#[allow(clippy::result_large_err)]
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        ));
    };
    let s = shared.state.lock().unwrap();
    let user = s
        .tokens
        .get(token)
        .cloned()
        .or_else(|| s.authority.as_ref().and_then(|a| a(token)))
        .filter(|u| s.people.contains_key(u));
    user.ok_or_else(|| {
        graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        )
    })
}

macro_rules! user_or_answer {
    ($shared:expr, $headers:expr) => {
        match authenticate(&$shared, &$headers) {
            Ok(u) => u,
            Err(r) => return r,
        }
    };
}

async fn me(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let user = user_or_answer!(shared, headers);
    let s = shared.state.lock().unwrap();
    let p = &s.people[&user];
    json_answer(
        StatusCode::OK,
        json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
               "id": p.id, "displayName": p.display_name, "userPrincipalName": p.upn}),
    )
}

/// Checks a requested `expirationDateTime` against the kind's maximum.
// The error is the answer itself (a Response, large): returned once per request.
#[allow(clippy::result_large_err)]
fn check_expiration(
    value: Option<&Value>,
    kind: SubscriptionKind,
) -> Result<DateTime<Utc>, Response> {
    let Some(at) = value
        .and_then(Value::as_str)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|d| d.with_timezone(&Utc))
    else {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "expirationDateTime is missing or not a date.",
        ));
    };
    let now = Utc::now();
    if at <= now {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "Subscription expiration date time must be in the future.",
        ));
    }
    let max = match kind {
        SubscriptionKind::Events => MAX_EVENTS_MINUTES,
        SubscriptionKind::Presence => MAX_PRESENCE_MINUTES,
    };
    if at > now + chrono::TimeDelta::minutes(max) {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "ExtensionError",
            &format!("Subscription expiration can only be {max} minutes in the future."),
        ));
    }
    Ok(at)
}

/// The kind and target person of a subscription resource, for `user`.
fn parse_resource(s: &Directory, user: &str, resource: &str) -> Option<(SubscriptionKind, String)> {
    let path = resource.trim_start_matches('/');
    if path.eq_ignore_ascii_case("me/events") {
        return Some((SubscriptionKind::Events, user.to_string()));
    }
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [users, id, events]
            if users.eq_ignore_ascii_case("users")
                && events.eq_ignore_ascii_case("events")
                && *id == user =>
        {
            Some((SubscriptionKind::Events, user.to_string()))
        }
        [comms, presences, id]
            if comms.eq_ignore_ascii_case("communications")
                && presences.eq_ignore_ascii_case("presences")
                && s.people.contains_key(*id) =>
        {
            Some((SubscriptionKind::Presence, id.to_string()))
        }
        _ => None,
    }
}

async fn create_subscription(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = user_or_answer!(shared, headers);
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unable to read JSON request payload.",
        );
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(resource), Some(change_type), Some(notification_url)) = (
        text("resource"),
        text("changeType"),
        text("notificationUrl"),
    ) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "resource, changeType and notificationUrl are required.",
        );
    };
    let parsed = parse_resource(&shared.state.lock().unwrap(), &user, &resource);
    let Some((kind, target)) = parsed else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            &format!("Resource '{resource}' is not supported."),
        );
    };
    let allowed: &[&str] = match kind {
        SubscriptionKind::Events => &["created", "updated", "deleted"],
        SubscriptionKind::Presence => &["updated"],
    };
    if change_type.split(',').any(|c| !allowed.contains(&c.trim())) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            &format!("ChangeType '{change_type}' is not supported for resource '{resource}'."),
        );
    }
    let expiration = match check_expiration(body.get("expirationDateTime"), kind) {
        Ok(at) => at,
        Err(r) => return r,
    };
    let client_state = text("clientState");
    if client_state
        .as_ref()
        .is_some_and(|c| c.chars().count() > 128)
    {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "clientState must be at most 128 characters.",
        );
    }
    let lifecycle_url = text("lifecycleNotificationUrl");
    for url in std::iter::once(&notification_url).chain(lifecycle_url.iter()) {
        if !(url.starts_with("https://")
            || url.starts_with("http://127.0.0.1")
            || url.starts_with("http://localhost"))
        {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "The notification URL must use HTTPS.",
            );
        }
        if !validate(&shared, url).await {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
            );
        }
    }
    let sub = Subscription {
        id: uuid(),
        kind,
        resource,
        target,
        creator: user,
        change_type,
        notification_url,
        lifecycle_notification_url: lifecycle_url,
        client_state,
        expiration,
    };
    let answer = sub.resource_json();
    shared
        .state
        .lock()
        .unwrap()
        .subscriptions
        .insert(sub.id.clone(), sub);
    json_answer(StatusCode::CREATED, answer)
}

/// The caller's own live subscription `id`, or Graph's 404.
// The error is the answer itself (a Response, large): returned once per request.
#[allow(clippy::result_large_err)]
fn own_subscription(shared: &Shared, user: &str, id: &str) -> Result<Subscription, Response> {
    let s = shared.state.lock().unwrap();
    s.subscriptions
        .get(id)
        .filter(|sub| sub.creator == user && sub.live())
        .cloned()
        .ok_or_else(|| {
            graph_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!("The object was not found. Subscription '{id}' does not exist."),
            )
        })
}

async fn renew_subscription(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = user_or_answer!(shared, headers);
    let sub = match own_subscription(&shared, &user, &id) {
        Ok(sub) => sub,
        Err(r) => return r,
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let expiration = match check_expiration(body.get("expirationDateTime"), sub.kind) {
        Ok(at) => at,
        Err(r) => return r,
    };
    let mut s = shared.state.lock().unwrap();
    let Some(stored) = s.subscriptions.get_mut(&id) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "The object was not found.",
        );
    };
    stored.expiration = expiration;
    json_answer(StatusCode::OK, stored.resource_json())
}

async fn delete_subscription(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let user = user_or_answer!(shared, headers);
    if let Err(r) = own_subscription(&shared, &user, &id) {
        return r;
    }
    shared.state.lock().unwrap().subscriptions.remove(&id);
    StatusCode::NO_CONTENT.into_response()
}

/// The `Prefer` preferences of a request: the page size and the time zone.
fn preferences(headers: &HeaderMap) -> (Option<usize>, Option<String>) {
    let mut page = None;
    let mut zone = None;
    for value in headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for pref in value.split(',') {
            let (k, v) = pref.split_once('=').unwrap_or((pref, ""));
            match k.trim() {
                "odata.maxpagesize" => page = v.trim().parse().ok().filter(|n| *n > 0),
                "outlook.timezone" => zone = Some(v.trim().trim_matches('"').to_string()),
                _ => {}
            }
        }
    }
    (page, zone)
}

fn parse_window_bound(v: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|d| d.and_utc())
        })
}

fn overlaps(event: &Value, window: (DateTime<Utc>, DateTime<Utc>)) -> bool {
    span_of(event).is_some_and(|(start, end)| start < window.1 && end > window.0)
}

fn sync_state_not_found() -> Response {
    graph_error(
        StatusCode::GONE,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
}

async fn calendar_view_delta(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let user = user_or_answer!(shared, headers);
    let (page_size, zone_name) = preferences(&headers);
    let tz = match zone_name.as_deref().map(zone) {
        None => chrono_tz::UTC,
        Some(Some(tz)) => tz,
        Some(None) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorTimeZoneNotSupported",
                "The time zone is not supported.",
            );
        }
    };
    let page_size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    let get = |k: &str| {
        query
            .get(k)
            .or_else(|| query.get(&k.to_ascii_lowercase()))
            .cloned()
    };
    let mut s = shared.state.lock().unwrap();
    let mut round = if let Some(skip) = get("$skiptoken") {
        match s.skip_tokens.remove(&skip) {
            Some(r) if r.user == user => r,
            _ => return sync_state_not_found(),
        }
    } else if let Some(delta) = get("$deltatoken") {
        let Some(state) = s.delta_tokens.get(&delta).filter(|d| d.user == user) else {
            return sync_state_not_found();
        };
        let (window, since) = (state.window, state.seq);
        let person = &s.people[&user];
        let mut items: Vec<Value> = person
            .events
            .values()
            .filter(|e| {
                e.changed > since && e.json["type"] != "seriesMaster" && overlaps(&e.json, window)
            })
            .map(|e| e.json.clone())
            .collect();
        items.extend(
            person
                .tombstones
                .iter()
                .filter(|(_, at)| *at > since)
                .map(|(id, _)| json!({"@odata.type": "#microsoft.graph.event", "id": id, "@removed": {"reason": "deleted"}})),
        );
        Round {
            user: user.clone(),
            window,
            items,
            offset: 0,
            seq: s.seq,
        }
    } else {
        let (Some(start), Some(end)) = (
            get("startDateTime").as_deref().and_then(parse_window_bound),
            get("endDateTime").as_deref().and_then(parse_window_bound),
        ) else {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidParameter",
                "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
            );
        };
        let items = s.people[&user]
            .events
            .values()
            .filter(|e| e.json["type"] != "seriesMaster" && overlaps(&e.json, (start, end)))
            .map(|e| e.json.clone())
            .collect();
        Round {
            user: user.clone(),
            window: (start, end),
            items,
            offset: 0,
            seq: s.seq,
        }
    };
    let end = (round.offset + page_size).min(round.items.len());
    let value: Vec<Value> = round.items[round.offset..end]
        .iter()
        .map(|item| {
            if item.get("@removed").is_some() {
                item.clone()
            } else {
                render(item, tz)
            }
        })
        .collect();
    round.offset = end;
    let base = shared.base.lock().unwrap().clone();
    let token = format!("{:016x}{}", s.next_token, uuid().replace('-', ""));
    s.next_token += 1;
    let mut answer = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)",
        "value": value,
    });
    if round.offset < round.items.len() {
        answer["@odata.nextLink"] = json!(format!(
            "{base}/v1.0/me/calendarView/delta?$skiptoken={token}"
        ));
        s.skip_tokens.insert(token, round);
    } else {
        answer["@odata.deltaLink"] = json!(format!(
            "{base}/v1.0/me/calendarView/delta?$deltatoken={token}"
        ));
        s.delta_tokens.insert(
            token,
            DeltaState {
                user: round.user,
                window: round.window,
                seq: round.seq,
            },
        );
    }
    let applied = format!(
        "odata.maxpagesize={page_size}, outlook.timezone=\"{}\"",
        tz.name()
    );
    let mut response = json_answer(StatusCode::OK, answer);
    response
        .headers_mut()
        .insert("preference-applied", applied.parse().unwrap());
    response
}

fn presence_json(p: &Person) -> Value {
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('{id}')/presence/$entity",
        "id": p.id,
        "availability": p.availability,
        "activity": p.activity,
        "statusMessage": null,
    })
}

async fn my_presence(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let user = user_or_answer!(shared, headers);
    let s = shared.state.lock().unwrap();
    json_answer(StatusCode::OK, presence_json(&s.people[&user]))
}

async fn user_presence(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let _ = user_or_answer!(shared, headers);
    let s = shared.state.lock().unwrap();
    match s.people.get(&id) {
        Some(p) => json_answer(StatusCode::OK, presence_json(p)),
        None => graph_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "The user was not found.",
        ),
    }
}

/// Minutes of an ISO 8601 duration of hours, minutes and seconds (`PT1H30M`).
fn duration_minutes(v: &str) -> Option<i64> {
    let rest = v.strip_prefix("PT")?;
    let mut seconds = 0i64;
    let mut number = String::new();
    for c in rest.chars() {
        match c {
            '0'..='9' => number.push(c),
            'H' | 'M' | 'S' => {
                let n: i64 = number.parse().ok()?;
                number.clear();
                seconds += n * match c {
                    'H' => 3600,
                    'M' => 60,
                    _ => 1,
                };
            }
            _ => return None,
        }
    }
    (number.is_empty() && !rest.is_empty() && seconds % 60 == 0).then_some(seconds / 60)
}

async fn presence_action(
    State(shared): State<Arc<Shared>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = user_or_answer!(shared, headers);
    if id != user {
        return graph_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "A delegated caller may only set their own presence.",
        );
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unable to read JSON request payload.",
        );
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let Some(session_id) = text("sessionId").filter(|s| s == APPLICATION_ID) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "sessionId must be the application's id.",
        );
    };
    let call = match action.as_str() {
        "setPresence" => {
            let (Some(availability), Some(activity)) = (text("availability"), text("activity"))
            else {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    "availability and activity are required.",
                );
            };
            if !PRESENCE_PAIRS.contains(&(availability.as_str(), activity.as_str())) {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    &format!(
                        "The availability '{availability}' and activity '{activity}' combination is not supported."
                    ),
                );
            }
            let minutes = match text("expirationDuration") {
                None => Some(5),
                Some(d) => duration_minutes(&d),
            };
            let Some(minutes) = minutes.filter(|m| (5..=240).contains(m)) else {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    "expirationDuration must be between PT5M and PT4H.",
                );
            };
            SetPresenceCall {
                user,
                action,
                session_id,
                availability: Some(availability),
                activity: Some(activity),
                expiration_minutes: Some(minutes),
            }
        }
        "clearPresence" => SetPresenceCall {
            user,
            action,
            session_id,
            availability: None,
            activity: None,
            expiration_minutes: None,
        },
        _ => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Unknown action '{action}'."),
            );
        }
    };
    shared.state.lock().unwrap().set_presence_calls.push(call);
    StatusCode::OK.into_response()
}
