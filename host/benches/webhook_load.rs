//! Load on the webhook path (issue 12): the real `presence-host` binary with
//! its real plugins on loopback, against a bare axum floor in the same run,
//! driven by the same load generator.
//!
//! Webhooks, each as the provider sends it and as the end-to-end tests send it:
//! - Slack Events API `user_status_changed` (`X-Slack-Signature`, v0 HMAC);
//! - Zoom `meeting.participant_joined` / `_left` (`x-zm-signature`, v0 HMAC);
//! - Google Calendar push notifications (`X-Goog-*` headers) on the channels
//!   the host itself created against the Google Calendar emulator
//!   (tests/support/google.rs). Each follows a change to that calendar, so the
//!   host runs a real incremental sync (`syncToken`) against the emulator;
//! - Microsoft Graph change notifications carrying the `clientState` of the
//!   subscriptions the host created against the Graph emulator
//!   (tests/support/graph.rs): calendar changes (a `calendarView/delta` round
//!   follows) and Teams presence changes (the plugin reads `/me/presence`
//!   before it answers).
//!
//! The mix, per 20 webhooks: 9 Slack, 7 Zoom, 2 Google, 1 Graph calendar and
//! 1 Graph presence (45/35/10/10 %). On a wedding day a vendor's chat status
//! and calls change many times an hour; their calendar a few times a day.
//!
//! Alongside the webhooks: presence reads (`GET /api/presence/{user}`, one
//! per ten webhooks, as the operator) and four SSE subscribers on
//! `/api/presence/stream`, which count the events they receive and time each
//! Slack status change from its webhook's due time to its arrival (each Slack
//! status carries its webhook's number, so each is a change). The host's
//! subscribers also get the calendar and Teams changes, which the floor does
//! not derive, so the two counts are shown but not compared.
//!
//! Stepped rates, open loop: 100, 250, 500 and 1,000 webhooks a second for 10 s
//! each, floor then host at each step. Every request has a due time and its
//! latency counts from then, so a slow answer is not hidden by sending the
//! next one later; at most 64 are in flight, and the generator stops 2 s after
//! a step's end, reporting what it could not send.
//!
//! The floor is this binary again, run as a child process (`webhook_load
//! floor`), so that its memory is its own: a bare axum app doing for each kind
//! what any receiver must do at least. The same HMAC checks for Slack and Zoom
//! (with the same 5-minute window), a constant-time compare of the channel
//! token (and the resource id) for Google and of the `clientState` for Graph,
//! one SQLite insert per webhook (the delivery id, so redeliveries are
//! recognised; WAL, synchronous=NORMAL), presence kept in a map (read by the
//! reads) and each change sent to a broadcast channel (the SSE subscribers).
//! It syncs no calendar and reads no Teams presence: that work is the host's
//! alone.
//!
//! Also in the same run: saturation throughput with Slack events only (each a
//! status change) and 16 connections (closed loop), host and floor; peak memory (VmHWM) of both
//! processes; and scale-out on PostgreSQL (`$PRESENCE_BENCH_POSTGRES`, by
//! default the local server's database `test`, in a schema of its own; skipped
//! when it does not answer): the same saturating Slack load with one host
//! process, then two replicas sharing the database, each taking half the
//! connections, printed against the SQLite host.
//!
//! Loopback only; about two minutes. Needs the bundled plugins: `cargo xtask
//! plugins` first.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use e2e::google::GoogleCalendarEmulator;
use e2e::graph::{GraphEmulator, SubscriptionKind};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

#[path = "support.rs"]
mod support;

/// The end-to-end tests' support: the provider emulators, plugin folders,
/// signature helpers and the SSE reader.
#[path = "../../tests/support/mod.rs"]
mod e2e;

const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
const ADMIN_TOKEN: &str = "bench-operator-token";
/// The argument that makes this binary the floor.
const FLOOR_ARG: &str = "floor";

const SLACK_USERS: u64 = 300;
const ZOOM_PARTICIPANTS: u64 = 200;
const ZOOM_MEETINGS: u64 = 20;
const GOOGLE_PEOPLE: usize = 8;
const GRAPH_PEOPLE: usize = 8;
/// Events already in each calendar when it is connected (the full sync's work).
const CALENDAR_EVENTS: usize = 40;

const STEPS: [u32; 4] = [100, 250, 500, 1000];
const STEP: Duration = Duration::from_secs(10);
/// How long past a step's end the generator keeps sending what is due.
const OVERRUN: Duration = Duration::from_secs(2);
const IN_FLIGHT: usize = 64;
const READ_EVERY: u64 = 10;
const SUBSCRIBERS: usize = 4;
/// Waited after a step's last answer for its last SSE events.
const SSE_GRACE: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const SATURATION: Duration = Duration::from_secs(5);
const CONNECTIONS: usize = 16;

/// Issue 12's target: p99 at most 10 ms at 500 webhooks a second.
const TARGET_RATE: u32 = 500;
const TARGET_P99: Duration = Duration::from_millis(10);

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Slack,
    Zoom,
    Google,
    GraphCalendar,
    GraphPresence,
    Read,
}

impl Kind {
    const WEBHOOKS: [Kind; 5] = [
        Kind::Slack,
        Kind::Zoom,
        Kind::Google,
        Kind::GraphCalendar,
        Kind::GraphPresence,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Slack => "slack",
            Kind::Zoom => "zoom",
            Kind::Google => "google",
            Kind::GraphCalendar => "graph calendar",
            Kind::GraphPresence => "graph presence",
            Kind::Read => "read",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The webhook mix, in the order it is sent (9 Slack, 7 Zoom, 2 Google,
/// 1 Graph calendar, 1 Graph presence), spread so that no kind comes in a burst.
#[rustfmt::skip]
const MIX: [Kind; 20] = {
    use Kind::*;
    [
        Slack, Zoom, Slack, Zoom, Google, Slack, Zoom, Slack, Zoom, GraphCalendar,
        Slack, Zoom, Slack, Zoom, Google, Slack, Zoom, Slack, Slack, GraphPresence,
    ]
};

/// Slack statuses vendors set; each sent with its webhook's number (`#n`),
/// which makes every one a change and lets an SSE subscriber time it.
const SLACK_STATUSES: [(&str, &str); 5] = [
    ("Ceremony prep - Old Barn", ":camera:"),
    ("Venue walkthrough", ":round_pushpin:"),
    ("Tasting with the couple", ":fork_and_knife:"),
    ("On a call with the florist", ":telephone_receiver:"),
    ("Available for coordination", ":green_heart:"),
];

/// Calendar entries the calendar people's current event cycles through, each
/// a different wedding category, so each change shows in their presence.
const CALENDAR_TITLES: [&str; 4] = [
    "Ceremony rehearsal",
    "Venue walkthrough",
    "Client consultation",
    "Florist call",
];

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn slack_user(i: u64) -> String {
    format!("UB{:07}", i % SLACK_USERS)
}

/// The number a Slack status carries (`... #n`).
fn status_number(text: &str) -> Option<u64> {
    text.rsplit_once(" #")?.1.parse().ok()
}

// ------------------------------------------------------------------ people

/// A person whose Google calendar the host watches.
struct GooglePerson {
    user: String,
    calendar: String,
    token: String,
}

/// A person whose Outlook calendar and Teams presence the host watches.
struct GraphPerson {
    user: String,
    graph_id: String,
    token: String,
}

/// The calendar people, and the time of the entry each has now (which the
/// load's calendar changes retitle).
struct Calendars {
    google: Vec<GooglePerson>,
    graph: Vec<GraphPerson>,
    now_start: DateTime<Utc>,
    now_end: DateTime<Utc>,
}

impl Calendars {
    fn new() -> Self {
        let now = Utc::now();
        Self {
            google: (0..GOOGLE_PEOPLE)
                .map(|i| GooglePerson {
                    user: format!("g-planner-{i}"),
                    calendar: format!("planner{i}@example.com"),
                    token: format!("ya29.bench-{i}"),
                })
                .collect(),
            graph: (0..GRAPH_PEOPLE)
                .map(|i| GraphPerson {
                    user: format!("o-florist-{i}"),
                    graph_id: format!("u-florist-{i}"),
                    token: format!("eyJ.bench-{i}"),
                })
                .collect(),
            now_start: now - TimeDelta::minutes(10),
            now_end: now + TimeDelta::hours(2),
        }
    }

    fn users(&self) -> impl Iterator<Item = &str> {
        let google = self.google.iter().map(|p| p.user.as_str());
        google.chain(self.graph.iter().map(|p| p.user.as_str()))
    }

    /// Fills the emulators' calendars: ten days of appointments ahead, and the
    /// entry happening now.
    fn fill(&self, google: &GoogleCalendarEmulator, graph: &GraphEmulator) {
        for p in &self.google {
            google.add_calendar(&p.token, &p.calendar, "Europe/London");
            let ahead = (0..CALENDAR_EVENTS).map(|i| {
                let start = self.now_end + TimeDelta::hours(6 * (i as i64 + 1));
                self.google_event(&format!("appt{i:03}"), "Menu tasting", start)
            });
            google.load_events(&p.calendar, ahead);
            google.upsert_event(
                &p.calendar,
                self.google_event("now", "Ceremony rehearsal", self.now_start),
            );
        }
        for p in &self.graph {
            graph.add_person(&p.graph_id, &p.token);
            for i in 0..CALENDAR_EVENTS {
                let start = self.now_end + TimeDelta::hours(6 * (i as i64 + 1));
                graph.upsert_event(
                    &p.graph_id,
                    self.graph_event(&format!("appt{i:03}"), "Site visit", start),
                );
            }
            graph.upsert_event(
                &p.graph_id,
                self.graph_event("now", "Ceremony rehearsal", self.now_start),
            );
        }
    }

    fn google_event(&self, id: &str, summary: &str, start: DateTime<Utc>) -> Value {
        let end = start + (self.now_end - self.now_start);
        json!({
            "id": id,
            "summary": summary,
            "location": "Old Barn",
            "start": {"dateTime": rfc3339(start), "timeZone": "Europe/London"},
            "end": {"dateTime": rfc3339(end), "timeZone": "Europe/London"},
        })
    }

    fn graph_event(&self, id: &str, subject: &str, start: DateTime<Utc>) -> Value {
        let end = start + (self.now_end - self.now_start);
        json!({
            "id": id,
            "subject": subject,
            "showAs": "busy",
            "location": {"displayName": "Old Barn"},
            "start": {"dateTime": e2e::graph::graph_local(start.naive_utc()), "timeZone": "UTC"},
            "end": {"dateTime": e2e::graph::graph_local(end.naive_utc()), "timeZone": "UTC"},
        })
    }
}

// ------------------------------------------------------------------ requests

/// One request of the load: where, what, and which kind it is.
struct Request {
    kind: Kind,
    url: String,
    headers: HeaderMap,
    body: String,
}

/// One answered (or failed) request.
struct Sample {
    kind: Kind,
    /// From the request's due time to the end of its answer.
    latency: Duration,
    done: Instant,
    /// `None` for a 2xx answer, else the status or the transport error.
    error: Option<String>,
}

async fn send(client: &reqwest::Client, request: Request, due: Instant) -> Sample {
    let builder = if request.kind == Kind::Read {
        client.get(&request.url)
    } else {
        client.post(&request.url).body(request.body)
    };
    let answer = builder.headers(request.headers).send().await;
    let error = match answer {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) if status.is_success() => None,
                Ok(_) => Some(status.as_u16().to_string()),
                Err(e) => Some(format!("body: {e}")),
            }
        }
        Err(e) if e.is_timeout() => Some("timeout".into()),
        Err(e) => Some(format!("transport: {e}")),
    };
    let done = Instant::now();
    Sample {
        kind: request.kind,
        latency: done - due,
        done,
        error,
    }
}

/// Makes the requests: numbers every webhook of the run (unique event ids),
/// makes the calendar changes the notifications are about, and remembers when
/// each Slack status change was due.
struct Generator {
    client: reqwest::Client,
    google: GoogleCalendarEmulator,
    graph: GraphEmulator,
    calendars: Calendars,
    /// Users whose presence is read (each has one on both targets).
    readable: Vec<String>,
    /// Webhooks made so far; the position in [`MIX`].
    made: AtomicU64,
    /// Requests made so far, per kind: whom the next one is about.
    per_kind: [AtomicU64; 6],
    slack_due: Mutex<HashMap<u64, Instant>>,
}

impl Generator {
    fn new(google: GoogleCalendarEmulator, graph: GraphEmulator, calendars: Calendars) -> Self {
        let readable = (0..SLACK_USERS)
            .map(slack_user)
            .chain(calendars.users().map(str::to_string))
            .collect();
        Self {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(IN_FLIGHT)
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap(),
            google,
            graph,
            calendars,
            readable,
            made: AtomicU64::new(0),
            per_kind: Default::default(),
            slack_due: Mutex::new(HashMap::new()),
        }
    }

    fn next_of(&self, kind: Kind) -> u64 {
        self.per_kind[kind.index()].fetch_add(1, Ordering::Relaxed)
    }

    /// The next webhook of the mix for the target at `base`: usually one
    /// request; a calendar change brings one per live channel or subscription.
    fn webhook(&self, base: &str, due: Instant) -> Vec<Request> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        match MIX[(n % MIX.len() as u64) as usize] {
            Kind::Slack => vec![self.slack(base, n, due)],
            Kind::Zoom => vec![self.zoom(base)],
            Kind::Google => self.google(base),
            Kind::GraphCalendar => self.graph_calendar(base),
            Kind::GraphPresence => self.graph_presence(base),
            Kind::Read => unreachable!("reads are not in the mix"),
        }
    }

    /// A Slack `user_status_changed` event, numbered `n`.
    fn slack(&self, base: &str, n: u64, due: Instant) -> Request {
        let i = self.next_of(Kind::Slack);
        let (text, emoji) =
            SLACK_STATUSES[((i / SLACK_USERS) % SLACK_STATUSES.len() as u64) as usize];
        let ts = e2e::now_s();
        let body = json!({
            "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
            "team_id": "T0BENCH01",
            "api_app_id": "A0BENCH01",
            "event": {
                "type": "user_status_changed",
                "user": {
                    "id": slack_user(i),
                    "team_id": "T0BENCH01",
                    "name": format!("vendor{}", i % SLACK_USERS),
                    "profile": {
                        "status_text": format!("{text} #{n}"),
                        "status_emoji": emoji,
                        "status_expiration": 0,
                    },
                },
                "event_ts": format!("{ts}.{:06}", n % 1_000_000),
            },
            "type": "event_callback",
            "event_id": format!("Ev{n:010}"),
            "event_time": ts,
        })
        .to_string();
        self.slack_due.lock().unwrap().insert(n, due);
        Request {
            kind: Kind::Slack,
            url: format!("{base}/api/webhooks/slack"),
            headers: e2e::header_map(&e2e::slack_headers(SLACK_SECRET, ts, &body)),
            body,
        }
    }

    /// A participant joins a meeting, or leaves it (every other time).
    fn zoom(&self, base: &str) -> Request {
        let i = self.next_of(Kind::Zoom);
        let participant = i % ZOOM_PARTICIPANTS;
        let meeting = participant % ZOOM_MEETINGS;
        let joined = (i / ZOOM_PARTICIPANTS).is_multiple_of(2);
        let (event, at_field) = if joined {
            ("meeting.participant_joined", "join_time")
        } else {
            ("meeting.participant_left", "leave_time")
        };
        let now = Utc::now();
        let body = json!({
            "event": event,
            "event_ts": now.timestamp_millis(),
            "payload": {
                "account_id": "AcBench0001",
                "object": {
                    "id": format!("{}", 85_000_000_000u64 + meeting),
                    "uuid": format!("mtg{meeting:02}Bench4AiAiAii=="),
                    "host_id": format!("zhost{meeting:02}"),
                    "topic": "Smith wedding - run of show",
                    "type": 2,
                    "start_time": rfc3339(now - TimeDelta::minutes(5)),
                    "timezone": "Europe/London",
                    "duration": 60,
                    "participant": {
                        "user_id": format!("{}", 16_778_240 + participant),
                        "user_name": format!("Vendor {participant}"),
                        "id": format!("zoomvendor{participant:03}"),
                        "participant_uuid": format!("pu{participant:03}mtg{meeting:02}"),
                        at_field: rfc3339(now),
                        "email": format!("vendor{participant}@example.com"),
                    },
                },
            },
        })
        .to_string();
        Request {
            kind: Kind::Zoom,
            url: format!("{base}/api/webhooks/zoom"),
            headers: e2e::header_map(&e2e::zoom_headers(&body)),
            body,
        }
    }

    /// A Google person's current entry changes; Google's notification of it.
    fn google(&self, base: &str) -> Vec<Request> {
        let i = self.next_of(Kind::Google) as usize;
        let person = &self.calendars.google[i % GOOGLE_PEOPLE];
        let title = CALENDAR_TITLES[(i / GOOGLE_PEOPLE + 1) % CALENDAR_TITLES.len()];
        let event = self
            .calendars
            .google_event("now", title, self.calendars.now_start);
        let notes = self.google.upsert_event_unsent(&person.calendar, event);
        notes
            .into_iter()
            .map(|(address, headers)| {
                let pairs: Vec<(&str, String)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                Request {
                    kind: Kind::Google,
                    url: rebase(&address, base),
                    headers: e2e::header_map(&pairs),
                    body: String::new(),
                }
            })
            .collect()
    }

    /// An Outlook person's current entry changes; Graph's notification of it.
    fn graph_calendar(&self, base: &str) -> Vec<Request> {
        let i = self.next_of(Kind::GraphCalendar) as usize;
        let person = &self.calendars.graph[i % GRAPH_PEOPLE];
        let subject = CALENDAR_TITLES[(i / GRAPH_PEOPLE + 1) % CALENDAR_TITLES.len()];
        let event = self
            .calendars
            .graph_event("now", subject, self.calendars.now_start);
        let notes = self.graph.upsert_event_unsent(&person.graph_id, event);
        graph_requests(Kind::GraphCalendar, notes, base)
    }

    /// An Outlook person's Teams status changes; Graph's notification of it.
    fn graph_presence(&self, base: &str) -> Vec<Request> {
        let i = self.next_of(Kind::GraphPresence) as usize;
        let person = &self.calendars.graph[i % GRAPH_PEOPLE];
        let pairs = e2e::graph::PRESENCE_PAIRS;
        let (availability, activity) = pairs[(i / GRAPH_PEOPLE + 1) % pairs.len()];
        let notes = self
            .graph
            .set_presence_unsent(&person.graph_id, availability, activity);
        graph_requests(Kind::GraphPresence, notes, base)
    }

    /// A presence read, as the operator.
    fn read(&self, base: &str) -> Request {
        let i = self.next_of(Kind::Read) as usize;
        let user = &self.readable[i % self.readable.len()];
        Request {
            kind: Kind::Read,
            url: format!("{base}/api/presence/{user}"),
            headers: e2e::header_map(&[("authorization", format!("Bearer {ADMIN_TOKEN}"))]),
            body: String::new(),
        }
    }

    /// When the Slack status numbered `n` was due, if it was one.
    fn slack_due(&self, n: u64) -> Option<Instant> {
        self.slack_due.lock().unwrap().get(&n).copied()
    }
}

fn graph_requests(kind: Kind, notes: Vec<(String, Value)>, base: &str) -> Vec<Request> {
    notes
        .into_iter()
        .map(|(url, body)| Request {
            kind,
            url: rebase(&url, base),
            headers: e2e::header_map(&[("content-type", "application/json".to_string())]),
            body: body.to_string(),
        })
        .collect()
}

/// The host's webhook address, at `base` instead: the floor serves the same paths.
fn rebase(address: &str, base: &str) -> String {
    let url = url::Url::parse(address).expect("a notification address is a URL");
    format!("{base}{}", url.path())
}

// ------------------------------------------------------------------ SSE

/// What a target's subscribers received during a step.
#[derive(Default)]
struct SseTally {
    events: u64,
    /// Per Slack status change and subscriber: from the webhook's due time to
    /// the event's arrival.
    delays: Vec<Duration>,
}

/// [`SUBSCRIBERS`] readers of one target's presence stream.
struct SseWatch {
    tally: Arc<Mutex<SseTally>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl SseWatch {
    async fn start(generator: &Arc<Generator>, base: &str) -> Self {
        let tally = Arc::new(Mutex::new(SseTally::default()));
        let url = format!("{base}/api/presence/stream");
        let mut readers = Vec::new();
        for _ in 0..SUBSCRIBERS {
            let mut client = e2e::sse::SseClient::connect_as(&url, ADMIN_TOKEN, None).await;
            let (tally, generator) = (tally.clone(), generator.clone());
            readers.push(tokio::spawn(async move {
                while let Some(event) = client.next(Duration::from_secs(3600)).await {
                    if event.event != "presence" {
                        continue;
                    }
                    let arrived = Instant::now();
                    let due = serde_json::from_str::<Value>(&event.data)
                        .ok()
                        .and_then(|v| status_number(v["presence"]["status_text"].as_str()?))
                        .and_then(|n| generator.slack_due(n));
                    let mut tally = tally.lock().unwrap();
                    tally.events += 1;
                    if let Some(due) = due {
                        tally.delays.push(arrived - due);
                    }
                }
            }));
        }
        Self { tally, readers }
    }

    /// What arrived since the last call.
    fn take(&self) -> SseTally {
        std::mem::take(&mut *self.tally.lock().unwrap())
    }
}

impl Drop for SseWatch {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

// ------------------------------------------------------------------ steps

/// A server under load.
struct Target {
    base: String,
    pid: u32,
}

impl Target {
    fn peak_memory(&self) -> u64 {
        support::proc_status(&self.pid.to_string(), "VmHWM")
    }
}

/// One step's outcome on one target.
struct StepReport {
    samples: Vec<Sample>,
    /// From the step's start to its last answer.
    elapsed: Duration,
    /// Requests the generator could not send in time (the target was saturated).
    unsent: u64,
    sse: SseTally,
}

impl StepReport {
    fn latencies(&self, wanted: impl Fn(Kind) -> bool) -> Vec<Duration> {
        let mut l: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| wanted(s.kind))
            .map(|s| s.latency)
            .collect();
        l.sort();
        l
    }

    fn webhooks(&self) -> Vec<Duration> {
        self.latencies(|k| k != Kind::Read)
    }

    fn reads(&self) -> Vec<Duration> {
        self.latencies(|k| k == Kind::Read)
    }

    fn webhook_rate(&self) -> f64 {
        self.webhooks().len() as f64 / self.elapsed.as_secs_f64()
    }

    fn errors(&self) -> usize {
        self.samples.iter().filter(|s| s.error.is_some()).count()
    }

    /// Errors by kind and cause: `"zoom 502" -> 3`.
    fn error_causes(&self) -> BTreeMap<String, usize> {
        let mut causes = BTreeMap::new();
        for s in &self.samples {
            if let Some(e) = &s.error {
                *causes.entry(format!("{} {e}", s.kind.name())).or_default() += 1;
            }
        }
        causes
    }

    fn sse_delays(&self) -> Vec<Duration> {
        let mut d = self.sse.delays.clone();
        d.sort();
        d
    }
}

/// Sends the mix at `rate` webhooks a second (and a read per [`READ_EVERY`])
/// for `duration`, open loop; then waits for the answers and the SSE events.
async fn step(
    generator: &Arc<Generator>,
    target: &Target,
    rate: u32,
    duration: Duration,
    sse: Option<&SseWatch>,
) -> StepReport {
    if let Some(sse) = sse {
        sse.take();
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut answers = tokio::task::JoinSet::new();
    let count = u64::from(rate) * duration.as_secs();
    let period = Duration::from_secs(1) / rate;
    let start = Instant::now();
    let mut unsent = 0;
    for i in 0..count {
        let due = start + period * i as u32;
        tokio::time::sleep_until(due.into()).await;
        if start.elapsed() > duration + OVERRUN {
            unsent = count - i;
            break;
        }
        let mut requests = generator.webhook(&target.base, due);
        if i.is_multiple_of(READ_EVERY) {
            requests.push(generator.read(&target.base));
        }
        for request in requests {
            let permit = permits.clone().acquire_owned().await.unwrap();
            let generator = generator.clone();
            answers.spawn(async move {
                let sample = send(&generator.client, request, due).await;
                drop(permit);
                sample
            });
        }
    }
    let samples = answers.join_all().await;
    let elapsed = samples.iter().map(|s| s.done).max().unwrap_or(start) - start;
    let sse = match sse {
        Some(sse) => {
            tokio::time::sleep(SSE_GRACE).await;
            sse.take()
        }
        None => SseTally::default(),
    };
    StepReport {
        samples,
        elapsed,
        unsent,
        sse,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ratio(host: f64, floor: f64) -> String {
    if floor > 0.0 {
        format!("{:.2}", host / floor)
    } else {
        "-".into()
    }
}

fn print_step_row(name: &str, r: &StepReport) {
    let (w, reads, sse) = (r.webhooks(), r.reads(), r.sse_delays());
    let p = support::percentile;
    println!(
        "  {name:<15} {:>8.0} {:>7.2} {:>7.2} {:>7.2} | {:>7.2} {:>7.2} | {:>6} | {:>7.0} {:>7.2} {:>7.2}",
        r.webhook_rate(),
        ms(p(&w, 0.50)),
        ms(p(&w, 0.95)),
        ms(p(&w, 0.99)),
        ms(p(&reads, 0.50)),
        ms(p(&reads, 0.99)),
        r.errors(),
        r.sse.events as f64 / SUBSCRIBERS as f64,
        ms(p(&sse, 0.50)),
        ms(p(&sse, 0.99)),
    );
}

fn print_step(rate: u32, floor: &StepReport, host: &StepReport) {
    let p = support::percentile;
    println!(
        "{rate} webhooks/s for {} s, {} reads/s, {SUBSCRIBERS} SSE subscribers (times in ms)",
        STEP.as_secs(),
        u64::from(rate) / READ_EVERY
    );
    println!(
        "  {:<15} {:>8} {:>7} {:>7} {:>7} | {:>7} {:>7} | {:>6} | {:>7} {:>7} {:>7}",
        "",
        "hooks/s",
        "p50",
        "p95",
        "p99",
        "read50",
        "read99",
        "errors",
        "SSE/sub",
        "SSE p50",
        "SSE p99"
    );
    print_step_row("floor", floor);
    print_step_row("presence-host", host);
    let (fw, hw) = (floor.webhooks(), host.webhooks());
    let (fr, hr) = (floor.reads(), host.reads());
    let (fs, hs) = (floor.sse_delays(), host.sse_delays());
    let q = |h: &[Duration], f: &[Duration], at: f64| ratio(ms(p(h, at)), ms(p(f, at)));
    println!(
        "  {:<15} {:>8} {:>7} {:>7} {:>7} | {:>7} {:>7} | {:>6} | {:>7} {:>7} {:>7}",
        "host / floor",
        ratio(host.webhook_rate(), floor.webhook_rate()),
        q(&hw, &fw, 0.50),
        q(&hw, &fw, 0.95),
        q(&hw, &fw, 0.99),
        q(&hr, &fr, 0.50),
        q(&hr, &fr, 0.99),
        "",
        // The host's subscribers also see calendar and Teams changes, which
        // the floor does not derive: their counts are not a ratio to compare.
        "",
        q(&hs, &fs, 0.50),
        q(&hs, &fs, 0.99),
    );
    let by_kind: Vec<String> = Kind::WEBHOOKS
        .iter()
        .map(|&k| {
            let l = host.latencies(|x| x == k);
            format!("{} {:.2} ({})", k.name(), ms(p(&l, 0.99)), l.len())
        })
        .collect();
    println!("  host p99 by kind (count): {}", by_kind.join(", "));
    for (name, r) in [("floor", floor), ("host", host)] {
        if r.unsent > 0 {
            println!(
                "  the {name} fell behind: {} webhooks not sent within {} s of the step's end",
                r.unsent,
                OVERRUN.as_secs()
            );
        }
        let causes = r.error_causes();
        if !causes.is_empty() {
            println!("  {name} errors: {causes:?}");
        }
    }
}

/// Every Slack user gets a status (so that each read finds one), then a
/// little of the whole mix goes out; the errors.
async fn warm_up(generator: &Arc<Generator>, target: &Target) -> usize {
    let statuses = saturate(generator, &target.base, 8, Duration::from_millis(1500)).await;
    let mix = step(generator, target, 100, Duration::from_secs(2), None).await;
    statuses.errors + mix.errors()
}

// ------------------------------------------------------------------ saturation

/// A closed-loop run: every request, the errors, how long it took.
struct Closed {
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
}

impl Closed {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        support::percentile(&self.latencies, p)
    }

    /// Both replicas' loads as one: every request, the longer of the two runs.
    fn merged(mut self, other: Closed) -> Closed {
        self.latencies.extend(other.latencies);
        self.latencies.sort();
        Closed {
            latencies: self.latencies,
            errors: self.errors + other.errors,
            elapsed: self.elapsed.max(other.elapsed),
        }
    }
}

/// Slack events to `base` as fast as `connections` allow, for `duration`.
async fn saturate(
    generator: &Arc<Generator>,
    base: &str,
    connections: usize,
    duration: Duration,
) -> Closed {
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (generator, base) = (generator.clone(), base.to_string());
        workers.spawn(async move {
            let mut samples = Vec::new();
            while started.elapsed() < duration {
                let sent = Instant::now();
                let n = generator.made.fetch_add(1, Ordering::Relaxed);
                let request = generator.slack(&base, n, sent);
                samples.push(send(&generator.client, request, sent).await);
            }
            samples
        });
    }
    let samples: Vec<Sample> = workers.join_all().await.into_iter().flatten().collect();
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort();
    Closed {
        errors: samples.iter().filter(|s| s.error.is_some()).count(),
        latencies,
        elapsed: started.elapsed(),
    }
}

fn print_closed(name: &str, r: &Closed) {
    println!(
        "  {name:<34} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
        r.rate(),
        ms(r.percentile(0.50)),
        ms(r.percentile(0.99)),
        r.errors
    );
}

// ------------------------------------------------------------------ the host

/// The host under load: its process, address, data and log.
struct HostProcess {
    child: Child,
    base: String,
    log: PathBuf,
    /// The plugins folder, removed when the host is done with it.
    _plugins: e2e::PluginsDir,
}

impl HostProcess {
    /// Starts the host with the bundled plugins, its calendar plugins pointed
    /// at the emulators, and the webhook rate limit lifted (1,000 a second
    /// per endpoint by default, which would answer the top step with 429s).
    fn start(work: &Path, google: &GoogleCalendarEmulator, graph: &GraphEmulator) -> Self {
        let plugins = e2e::PluginsDir::new()
            .with_bundled("slack")
            .with_bundled("zoom")
            .with_bundled("google-calendar")
            .with_bundled("microsoft-graph")
            .with_bundled("wedding-keywords");
        let data = work.join("host-data");
        let config = work.join("host.toml");
        std::fs::write(
            &config,
            format!(
                "admin_token = \"{ADMIN_TOKEN}\"\n\
                 [webhooks]\nper_endpoint_per_second = 1000000\n\
                 [plugins.google-calendar]\nextra_allowed_hosts = [\"{}\"]\n\
                 [plugins.google-calendar.config]\napi_base = \"{}\"\n\
                 [plugins.microsoft-graph]\nextra_allowed_hosts = [\"{}\"]\n\
                 [plugins.microsoft-graph.config]\napi_base = \"{}\"\nclient_id = \"{}\"\n",
                google.allowed_host(),
                google.base_url(),
                graph.allowed_host(),
                graph.base_url(),
                e2e::graph::APPLICATION_ID,
            ),
        )
        .unwrap();
        set_secrets(&data, &config);
        let log = work.join("host.log");
        let (child, base) = support::serve_logged(
            &data,
            plugins.path(),
            &[("PRESENCE_CONFIG", config.to_str().unwrap())],
            &log,
        );
        Self {
            child,
            base,
            log,
            _plugins: plugins,
        }
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = reqwest::Client::new()
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    /// Connects every calendar person, then waits until the host watches each
    /// calendar (a Google channel; Graph subscriptions on events and presence)
    /// and has synced it in full.
    async fn connect_calendars(
        &self,
        calendars: &Calendars,
        google: &GoogleCalendarEmulator,
        graph: &GraphEmulator,
    ) {
        let connections = calendars
            .google
            .iter()
            .map(|p| (&p.user, "google-calendar", &p.token))
            .chain(
                calendars
                    .graph
                    .iter()
                    .map(|p| (&p.user, "microsoft-graph", &p.token)),
            );
        for (user, plugin, token) in connections {
            self.api(
                reqwest::Method::PUT,
                &format!("/api/users/{user}"),
                Some(json!({"time_zone": "Europe/London"})),
            )
            .await;
            self.api(
                reqwest::Method::PUT,
                &format!("/api/tenants/default/connections/{plugin}:{user}"),
                Some(json!({"plugin": plugin, "user": user, "access_token": token})),
            )
            .await;
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let watched = calendars
                .google
                .iter()
                .all(|p| !google.live_channels(&p.calendar).is_empty())
                && calendars.graph.iter().all(|p| {
                    [SubscriptionKind::Events, SubscriptionKind::Presence]
                        .iter()
                        .all(|&k| !graph.live_subscriptions(&p.graph_id, k).is_empty())
                });
            let view = self
                .api(reqwest::Method::GET, "/api/tenants/default/calendars", None)
                .await;
            let synced = view["calendars"].as_array().is_some_and(|all| {
                all.len() == GOOGLE_PEOPLE + GRAPH_PEOPLE
                    && all
                        .iter()
                        .all(|c| c["last_synced_at"].is_i64() && c["paging"] == false)
            });
            if watched && synced {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the host did not watch and sync every calendar: {view}\nits log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The warnings and errors the host logged: each distinct message (its
    /// level, module and text, without the timestamp and trailing fields),
    /// with how often it came.
    fn log_summary(&self) -> BTreeMap<String, usize> {
        let is_field = |w: &str| {
            w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut messages = BTreeMap::new();
        for line in log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        {
            let mut words: Vec<&str> = line.split_whitespace().skip(1).collect();
            while words.last().is_some_and(|w| is_field(w)) {
                words.pop();
            }
            let message: String = words.join(" ").chars().take(200).collect();
            *messages.entry(message).or_default() += 1;
        }
        messages
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stores the Slack signing secret and the Zoom secret token for a host.
fn set_secrets(data: &Path, config: &Path) {
    for (name, value) in [
        ("slack.signing-secret", SLACK_SECRET),
        ("zoom.secret-token", e2e::ZOOM_SECRET),
    ] {
        let (ok, _, err) = e2e::cli(
            &[
                "secret",
                "set",
                name,
                "--data-dir",
                data.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
            Some(value),
        );
        assert!(ok, "secret set {name}: {err}");
    }
}

/// The host's calendar work as the emulators saw it: (Google incremental
/// syncs, Graph delta rounds, Graph presence reads, Graph setPresence calls).
fn calendar_work(google: &GoogleCalendarEmulator, graph: &GraphEmulator) -> [usize; 4] {
    let calls = graph.calls();
    let count = |p: &dyn Fn(&e2e::graph::ApiCall) -> bool| calls.iter().filter(|c| p(c)).count();
    [
        google
            .list_calls()
            .iter()
            .filter(|c| c.is_incremental())
            .count(),
        count(&|c| c.uri.contains("calendarView/delta") && c.uri.contains("deltatoken")),
        count(&|c| c.method == "GET" && c.uri.contains("/me/presence")),
        graph.set_presence_calls().len(),
    ]
}

// ------------------------------------------------------------------ the floor

/// The floor's process: this binary, run with [`FLOOR_ARG`].
struct FloorProcess {
    child: Child,
    base: String,
}

impl FloorProcess {
    /// Starts the floor with what it must know to check the calendar
    /// notifications: the host's channels and subscriptions, as the emulators
    /// hold them; and the calendar people, whose presence it is given.
    fn start(
        work: &Path,
        calendars: &Calendars,
        google: &GoogleCalendarEmulator,
        graph: &GraphEmulator,
    ) -> Self {
        let channels: serde_json::Map<String, Value> = google
            .channels()
            .into_iter()
            .filter(|c| c.live())
            .map(|c| {
                (
                    c.id,
                    json!({"token": c.token, "resource_id": c.resource_id}),
                )
            })
            .collect();
        let client_states: serde_json::Map<String, Value> = graph
            .subscriptions()
            .into_iter()
            .map(|s| (s.id, json!(s.client_state)))
            .collect();
        let config = work.join("floor.json");
        std::fs::write(
            &config,
            json!({
                "database": work.join("floor.db"),
                "channels": channels,
                "client_states": client_states,
                "calendar_users": calendars.users().collect::<Vec<_>>(),
            })
            .to_string(),
        )
        .unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg(FLOOR_ARG)
            .arg(&config)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let base = support::ready_address(&mut child, "floor listening on ");
        Self { child, base }
    }
}

impl Drop for FloorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The floor: what any receiver of these webhooks must do at least.
mod floor {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::{Arc, RwLock};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::sse::{Event, KeepAlive, Sse};
    use axum::response::{IntoResponse, Response};
    use hmac::{Hmac, Mac};
    use serde_json::{Value, json};
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    };
    use subtle::ConstantTimeEq;
    use tokio::sync::broadcast;

    use super::{ADMIN_TOKEN, SLACK_SECRET};

    /// Slack's and Zoom's replay window, as their plugins apply it.
    const WINDOW_S: i64 = 300;

    struct Floor {
        db: SqlitePool,
        /// Google channel id: (token, resource id).
        channels: HashMap<String, (String, String)>,
        /// Graph subscription id: clientState.
        client_states: HashMap<String, String>,
        presence: RwLock<HashMap<String, Value>>,
        changes: broadcast::Sender<Arc<(i64, String)>>,
        seq: AtomicI64,
    }

    /// Serves the floor on a free loopback port, printing its address first.
    pub fn run(config: &str) {
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let floor = Arc::new(Floor::open(&config).await);
            let app = axum::Router::new()
                .route("/api/webhooks/slack", axum::routing::post(slack))
                .route("/api/webhooks/zoom", axum::routing::post(zoom))
                .route(
                    "/api/webhooks/google-calendar/default",
                    axum::routing::post(google),
                )
                .route(
                    "/api/webhooks/microsoft-graph/default",
                    axum::routing::post(graph),
                )
                .route("/api/presence/stream", axum::routing::get(stream))
                .route("/api/presence/{user}", axum::routing::get(read))
                .with_state(floor);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            println!(
                "floor listening on http://{}",
                listener.local_addr().unwrap()
            );
            axum::serve(listener, app).await.unwrap();
        });
    }

    impl Floor {
        async fn open(config: &Value) -> Self {
            let options = SqliteConnectOptions::new()
                .filename(config["database"].as_str().unwrap())
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            let db = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await
                .unwrap();
            sqlx::query("CREATE TABLE deliveries (id TEXT PRIMARY KEY, body BLOB NOT NULL)")
                .execute(&db)
                .await
                .unwrap();
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let channels = config["channels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(id, c)| (id.clone(), (text(&c["token"]), text(&c["resource_id"]))))
                .collect();
            let client_states = config["client_states"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(id, s)| (id.clone(), text(s)))
                .collect();
            // The calendar people have a presence from their calendars on the
            // host; the floor syncs none, so it is given one.
            let presence = config["calendar_users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| {
                    let user = text(u);
                    let p = json!({"user": user, "availability": "busy", "status_text": "Ceremony prep"});
                    (user, p)
                })
                .collect();
            Self {
                db,
                channels,
                client_states,
                presence: RwLock::new(presence),
                changes: broadcast::channel(4096).0,
                seq: AtomicI64::new(0),
            }
        }

        /// Records a delivery once; a new one's presence change, if any, is
        /// kept and broadcast. Answers `status`.
        async fn deliver(
            &self,
            id: String,
            body: &[u8],
            change: Option<(String, Value)>,
            status: StatusCode,
        ) -> StatusCode {
            let inserted = sqlx::query("INSERT OR IGNORE INTO deliveries (id, body) VALUES (?, ?)")
                .bind(id)
                .bind(body)
                .execute(&self.db)
                .await;
            match inserted {
                Ok(done) if done.rows_affected() == 1 => {
                    if let Some((user, presence)) = change {
                        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
                        let data = json!({"seq": seq, "tenant": "default", "user": user, "presence": presence});
                        self.presence.write().unwrap().insert(user, presence);
                        let _ = self.changes.send(Arc::new((seq, data.to_string())));
                    }
                    status
                }
                Ok(_) => status,
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
            }
        }

        fn authorized(headers: &HeaderMap) -> bool {
            let expected = format!("Bearer {ADMIN_TOKEN}");
            headers
                .get("authorization")
                .is_some_and(|v| v.as_bytes().ct_eq(expected.as_bytes()).into())
        }
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Slack's and Zoom's scheme: `v0=` + hex HMAC-SHA256 of `v0:{ts}:{body}`,
    /// the timestamp within the window.
    fn signed_v0(secret: &[u8], timestamp: &str, signature: &str, body: &[u8]) -> bool {
        let Ok(seconds) = timestamp.parse::<i64>() else {
            return false;
        };
        if (chrono::Utc::now().timestamp() - seconds).abs() > WINDOW_S {
            return false;
        }
        let Some(expected) = signature
            .strip_prefix("v0=")
            .and_then(|h| hex::decode(h).ok())
        else {
            return false;
        };
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("v0:{timestamp}:").as_bytes());
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    }

    fn text_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
        v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
    }

    async fn slack(State(floor): State<Arc<Floor>>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let (ts, sig) = (
            header(&headers, "x-slack-request-timestamp"),
            header(&headers, "x-slack-signature"),
        );
        if !signed_v0(SLACK_SECRET, ts, sig, &body) {
            return StatusCode::UNAUTHORIZED;
        }
        let Ok(event) = serde_json::from_slice::<Value>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        let user = text_at(&event, "/event/user/id").to_string();
        let presence = json!({
            "user": user,
            "availability": "available",
            "status_text": text_at(&event, "/event/user/profile/status_text"),
            "status_emoji": text_at(&event, "/event/user/profile/status_emoji"),
        });
        let id = text_at(&event, "/event_id").to_string();
        floor
            .deliver(id, &body, Some((user, presence)), StatusCode::OK)
            .await
    }

    async fn zoom(State(floor): State<Arc<Floor>>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let (ts, sig) = (
            header(&headers, "x-zm-request-timestamp"),
            header(&headers, "x-zm-signature"),
        );
        if !signed_v0(super::e2e::ZOOM_SECRET, ts, sig, &body) {
            return StatusCode::UNAUTHORIZED;
        }
        let Ok(event) = serde_json::from_slice::<Value>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        let kind = text_at(&event, "/event");
        let user = text_at(&event, "/payload/object/participant/id").to_string();
        let joined = kind == "meeting.participant_joined";
        let presence = json!({
            "user": user,
            "availability": if joined { "in_call" } else { "available" },
            "status_text": joined.then_some("In a Zoom meeting"),
        });
        let id = format!(
            "{kind}:{}:{}:{}",
            text_at(&event, "/payload/object/uuid"),
            text_at(&event, "/payload/object/participant/participant_uuid"),
            event["event_ts"]
        );
        floor
            .deliver(id, &body, Some((user, presence)), StatusCode::OK)
            .await
    }

    async fn google(State(floor): State<Arc<Floor>>, headers: HeaderMap) -> StatusCode {
        let id = header(&headers, "x-goog-channel-id");
        let Some((token, resource)) = floor.channels.get(id) else {
            return StatusCode::UNAUTHORIZED;
        };
        let given = header(&headers, "x-goog-channel-token");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes()))
            || header(&headers, "x-goog-resource-id") != resource
        {
            return StatusCode::UNAUTHORIZED;
        }
        let delivery = format!("{id}:{}", header(&headers, "x-goog-message-number"));
        floor.deliver(delivery, b"", None, StatusCode::OK).await
    }

    async fn graph(State(floor): State<Arc<Floor>>, body: Bytes) -> StatusCode {
        let Ok(delivery) = serde_json::from_slice::<Value>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        let Some(items) = delivery["value"].as_array() else {
            return StatusCode::BAD_REQUEST;
        };
        for item in items {
            let Some(expected) = floor.client_states.get(text_at(item, "/subscriptionId")) else {
                return StatusCode::UNAUTHORIZED;
            };
            let given = text_at(item, "/clientState");
            if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
                return StatusCode::UNAUTHORIZED;
            }
        }
        let id = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
        floor.deliver(id, &body, None, StatusCode::ACCEPTED).await
    }

    async fn read(
        State(floor): State<Arc<Floor>>,
        headers: HeaderMap,
        Path(user): Path<String>,
    ) -> Response {
        if !Floor::authorized(&headers) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        match floor.presence.read().unwrap().get(&user) {
            Some(p) => axum::Json(p.clone()).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }

    async fn stream(State(floor): State<Arc<Floor>>, headers: HeaderMap) -> Response {
        if !Floor::authorized(&headers) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let changes = floor.changes.subscribe();
        let events = futures::stream::unfold(changes, |mut changes| async move {
            loop {
                match changes.recv().await {
                    Ok(change) => {
                        let event = Event::default()
                            .id(change.0.to_string())
                            .event("presence")
                            .data(change.1.as_str());
                        return Some((Ok::<_, Infallible>(event), changes));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Sse::new(events)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response()
    }
}

// ------------------------------------------------------------------ scale-out

/// The PostgreSQL server of the scale-out part, if it answers.
async fn postgres() -> Option<String> {
    let url = std::env::var("PRESENCE_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    match <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await {
        Ok(conn) => {
            let _ = sqlx::Connection::close(conn).await;
            Some(url)
        }
        Err(e) => {
            println!("scale-out skipped: PostgreSQL at {url} does not answer ({e})");
            None
        }
    }
}

async fn execute(server: &str, statement: &str) {
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(server)
        .await
        .unwrap();
    sqlx::Executor::execute(&mut conn, statement).await.unwrap();
}

/// Saturation on PostgreSQL with one host process, then two: their reports.
async fn scale_out(generator: &Arc<Generator>, server: &str, work: &Path) -> (Closed, Closed) {
    let schema = format!("bench_{}", std::process::id());
    execute(server, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    execute(server, &format!("CREATE SCHEMA {schema}")).await;
    let plugins = e2e::PluginsDir::new()
        .with_bundled("slack")
        .with_bundled("wedding-keywords");
    let data = work.join("pg-data");
    let config = work.join("pg.toml");
    let sep = if server.contains('?') { '&' } else { '?' };
    std::fs::write(
        &config,
        format!(
            "database_url = \"{server}{sep}options[search_path]={schema}\"\n\
             [webhooks]\nper_endpoint_per_second = 1000000\n"
        ),
    )
    .unwrap();
    set_secrets(&data, &config);
    let env = [("PRESENCE_CONFIG", config.to_str().unwrap())];
    let (mut a, a_url) = support::serve_with_env(&data, plugins.path(), &env);
    saturate(generator, &a_url, 4, Duration::from_millis(500)).await;
    let one = saturate(generator, &a_url, CONNECTIONS, SATURATION).await;
    let (mut b, b_url) = support::serve_with_env(&data, plugins.path(), &env);
    saturate(generator, &b_url, 4, Duration::from_millis(500)).await;
    let (on_a, on_b) = tokio::join!(
        saturate(generator, &a_url, CONNECTIONS / 2, SATURATION),
        saturate(generator, &b_url, CONNECTIONS / 2, SATURATION),
    );
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
    execute(server, &format!("DROP SCHEMA {schema} CASCADE")).await;
    (one, on_a.merged(on_b))
}

// ------------------------------------------------------------------ main

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(FLOOR_ARG) {
        floor::run(&args[2]);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let google = GoogleCalendarEmulator::start().await;
    let graph = GraphEmulator::start().await;
    let calendars = Calendars::new();
    calendars.fill(&google, &graph);
    let host = HostProcess::start(work.path(), &google, &graph);
    host.connect_calendars(&calendars, &google, &graph).await;
    let floor = FloorProcess::start(work.path(), &calendars, &google, &graph);
    let generator = Arc::new(Generator::new(google, graph, calendars));
    let floor_target = Target {
        base: floor.base.clone(),
        pid: floor.child.id(),
    };
    let host_target = Target {
        base: host.base.clone(),
        pid: host.child.id(),
    };
    println!(
        "webhook load on loopback: the host with the slack, zoom, google-calendar, microsoft-graph \
         and wedding-keywords plugins ({GOOGLE_PEOPLE} Google and {GRAPH_PEOPLE} Outlook calendars \
         watched), against a bare axum floor"
    );

    warm_up(&generator, &floor_target).await;
    let mut host_errors = warm_up(&generator, &host_target).await;

    println!("saturation, Slack events only, {CONNECTIONS} connections, closed loop:");
    let floor_sat = saturate(&generator, &floor_target.base, CONNECTIONS, SATURATION).await;
    let host_sat = saturate(&generator, &host_target.base, CONNECTIONS, SATURATION).await;
    print_closed("floor", &floor_sat);
    print_closed("presence-host", &host_sat);
    println!(
        "  host / floor: {:.2} of the throughput",
        host_sat.rate() / floor_sat.rate()
    );
    host_errors += host_sat.errors;

    let work_before = calendar_work(&generator.google, &generator.graph);
    let floor_sse = SseWatch::start(&generator, &floor_target.base).await;
    let host_sse = SseWatch::start(&generator, &host_target.base).await;
    let mut at_target = None;
    let mut host_calendar_notes = 0;
    let mut logged_before = host.log_summary().values().sum::<usize>();
    for rate in STEPS {
        let floor_step = step(&generator, &floor_target, rate, STEP, Some(&floor_sse)).await;
        let host_step = step(&generator, &host_target, rate, STEP, Some(&host_sse)).await;
        print_step(rate, &floor_step, &host_step);
        let logged = host.log_summary().values().sum::<usize>();
        if logged > logged_before {
            println!(
                "  host log: {} warnings or errors during the step",
                logged - logged_before
            );
        }
        logged_before = logged;
        host_errors += host_step.errors() + host_step.unsent as usize;
        host_calendar_notes += host_step
            .samples
            .iter()
            .filter(|s| {
                matches!(
                    s.kind,
                    Kind::Google | Kind::GraphCalendar | Kind::GraphPresence
                )
            })
            .count();
        if rate == TARGET_RATE {
            at_target = Some(support::percentile(&host_step.webhooks(), 0.99));
        }
    }
    drop((floor_sse, host_sse));
    let work_after = calendar_work(&generator.google, &generator.graph);
    let [syncs, deltas, presence_reads, set_presence] =
        std::array::from_fn(|i| work_after[i] - work_before[i]);
    println!(
        "host's calendar work during the steps, for {host_calendar_notes} calendar notifications: \
         {syncs} Google incremental syncs, {deltas} Graph delta rounds, {presence_reads} Teams \
         presence reads, {set_presence} setPresence pushes"
    );
    let view = host
        .api(reqwest::Method::GET, "/api/tenants/default/calendars", None)
        .await;
    let failing: Vec<&Value> = view["calendars"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["failures"] != 0 || c["watch_failures"] != 0)
        .collect();
    println!("calendars with sync or watch failures: {}", failing.len());
    for c in &failing {
        println!("  {}: {}", c["connection"], c["last_error"]);
    }
    if let Some(p99) = at_target {
        println!(
            "target: p99 <= {} ms at {TARGET_RATE} webhooks/s; measured {:.2} ms ({})",
            TARGET_P99.as_millis(),
            ms(p99),
            if p99 <= TARGET_P99 { "met" } else { "not met" }
        );
    }
    let (floor_peak, host_peak) = (floor_target.peak_memory(), host_target.peak_memory());
    println!(
        "peak memory (VmHWM, whole run so far): floor {:.1} MiB, presence-host {:.1} MiB ({:.1}x)",
        floor_peak as f64 / (1 << 20) as f64,
        host_peak as f64 / (1 << 20) as f64,
        host_peak as f64 / floor_peak as f64
    );
    let logged = host.log_summary();
    let count = |level: &str| -> usize {
        logged
            .iter()
            .filter(|(m, _)| m.starts_with(level))
            .map(|(_, n)| n)
            .sum()
    };
    println!(
        "host log: {} warnings, {} errors",
        count("WARN"),
        count("ERROR")
    );
    for (message, n) in &logged {
        println!("  {n} x {message}");
    }

    if let Some(server) = postgres().await {
        let (one, two) = scale_out(&generator, &server, work.path()).await;
        println!("scale-out, Slack events only, saturation, {CONNECTIONS} connections in all:");
        print_closed("SQLite, one process (above)", &host_sat);
        print_closed("PostgreSQL, one replica", &one);
        print_closed("PostgreSQL, two replicas", &two);
        println!(
            "  PostgreSQL: {:.0} % of SQLite with one replica, {:.0} % with two ({:.2}x one replica)",
            100.0 * one.rate() / host_sat.rate(),
            100.0 * two.rate() / host_sat.rate(),
            two.rate() / one.rate()
        );
        assert_eq!(
            one.errors + two.errors,
            0,
            "PostgreSQL replicas failed requests"
        );
    }
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    assert_eq!(
        host_errors, 0,
        "the host refused, failed or fell behind on requests under load"
    );
}
