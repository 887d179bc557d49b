//! The presence engine at 100,000 people (issue 7), against the floor of a plain
//! in-memory map update.
//!
//! 1. **Seeding**: 100,000 people, each with one calendar signal (busy from now
//!    for an hour), through `Store::commit_webhook` on SQLite in a temporary
//!    directory, 1,000 people per call (one transaction each). Every call derives
//!    each person's presence in the same transaction, as the webhook path does.
//! 2. **Changes**: 10,000 Zoom-style "call started" signals for 10,000 different
//!    people, one `commit_webhook` each and one at a time, as the webhook path
//!    commits one delivery; then the matching "call ended" signals from 8 tasks at
//!    once, as concurrent webhook requests would (SQLite serialises the writes).
//!    Total time, changes per second, and each change's latency (p50, p99).
//! 3. **Signal to SSE event**: the real `presence-host` binary, started on the
//!    seeded database, with one client on `GET /api/presence/stream`; 2,000
//!    people get a manual status through `PUT /api/presence/{user}` at a steady
//!    200 requests per second (open loop), and each request's time from sending
//!    to its `event: presence` arriving is measured, with the PUT round trip
//!    beside it.
//! 4. **Memory**: this process's peak RSS (`VmHWM`) after seeding and after the
//!    changes (SQLite's page caches and sqlx's workers, nothing per person), the
//!    database's size on disk, and the host binary's RSS once ready on the
//!    seeded database and its peak after the streaming phase.
//! 5. **Floor**: the same seeding and the same changes applied to a
//!    `HashMap<user, Vec<KeyedSignal>>` plus a `HashMap<user, Presence>` through
//!    `presence::derive` (what the engine must do at least: keep the signals,
//!    derive, store the result), timed the same way; its heap is counted exactly
//!    by a counting global allocator. For step 3 the same maps are served by a
//!    bare axum app (`PUT` updates them and broadcasts, `GET` streams the
//!    broadcast as SSE), driven by the same client at the same rate.
//!
//! Every engine change is checked (one change, the expected availability), a
//! sample of people is checked to have the same presence in the store and in the
//! floor's map, and every streamed request must produce its event, so the
//! numbers cannot come from work not done.
//!
//! Run it on a quiet machine: `cargo bench -p presence-host --bench presence`
//! (no plugins needed). It is bounded by its counts, the fixed stream rate (two
//! 10 s streaming phases) and a 15 s wait for late events, and is meant to
//! finish within two minutes on 2 cores. `PRESENCE_BENCH_SCALE=0.05` scales the
//! counts (not the stream rate) for a quick correctness run. Loopback only. The load generator, the floor's server and the in-process store share
//! the machine with the host binary; the counting allocator adds an atomic add
//! to every allocation of this process, on both sides.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use presence_host::api::presence::ManualPresence;
use presence_host::model::{
    Availability, Category, KeyedSignal, Presence, PresenceSignal, SignalSource,
};
use presence_host::presence;
use presence_host::store::presence::{Change, EngineRules};
use presence_host::store::{MasterKey, Store, WebhookCommit, now_ms};
use tokio::sync::broadcast;

#[path = "support.rs"]
mod support;
use support::{fmt_duration, percentile, proc_status};

#[allow(dead_code)] // the tests' SSE reader; this bench uses part of it
#[path = "../../tests/support/sse.rs"]
mod sse;

const USERS: usize = 100_000;
const CHANGES: usize = 10_000;
const STREAMED: usize = 2_000;
/// PUTs per second in the streaming phase; not scaled.
const STREAM_RATE: u64 = 200;
const SEED_BATCH: usize = 1_000;
const CONCURRENT_WRITERS: usize = 8;
const TENANT: &str = "default";
const ADMIN_TOKEN: &str = "presence-bench-admin-token";
/// The token `tests/support/sse.rs` presents: the bench host's admin token.
const OPERATOR_TOKEN: &str = ADMIN_TOKEN;
/// Zoom's plugin states a call for this long unless it hears the end.
const CALL_HORIZON_MS: i64 = 4 * 3_600_000;
/// The host's default `presence.max_call_minutes`, in ms.
const MAX_CALL_MS: i64 = 240 * 60_000;
const MANUAL_BODY: &str =
    r#"{"availability":"do_not_disturb","status_text":"Vows","duration_minutes":60}"#;

// --- the counting allocator: the floor's memory, exactly ----------------------

/// Live heap bytes requested by this process (allocator overhead excluded).
static LIVE_HEAP: AtomicUsize = AtomicUsize::new(0);

struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to `System`; only a counter is kept.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                LIVE_HEAP.fetch_add(new_size - layout.size(), Ordering::Relaxed);
            } else {
                LIVE_HEAP.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

// --- sizes, people and signals -------------------------------------------------

struct Sizes {
    scale: f64,
    users: usize,
    changes: usize,
    streamed: usize,
}

impl Sizes {
    fn from_env() -> Self {
        let scale = std::env::var("PRESENCE_BENCH_SCALE")
            .ok()
            .map(|s| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| *f > 0.0 && *f <= 1.0)
                    .unwrap_or_else(|| panic!("PRESENCE_BENCH_SCALE={s:?}: expected 0 < x <= 1"))
            })
            .unwrap_or(1.0);
        let scaled = |n: usize, min: usize| ((n as f64 * scale) as usize).max(min);
        let users = scaled(USERS, 1_000);
        Self {
            scale,
            users,
            changes: scaled(CHANGES, 100).min(users),
            streamed: scaled(STREAMED, 50).min(users),
        }
    }

    /// `count` different people spread over everyone, starting at `offset`.
    fn spread(&self, count: usize, offset: usize) -> Vec<String> {
        (0..count)
            .map(|k| user((k * self.users / count + offset) % self.users))
            .collect()
    }
}

fn user(i: usize) -> String {
    format!("u{i:06}")
}

/// The signals the bench states, all relative to one start time, so the engine
/// and the floor derive from identical input.
struct Signals {
    base: i64,
}

impl Signals {
    /// A classified calendar event, busy from `base` for an hour.
    fn calendar(&self, user: &str) -> KeyedSignal {
        KeyedSignal {
            key: format!("calendar-webhook:evt-{user}"),
            origin: "wedding-keywords".into(),
            signal: PresenceSignal {
                user: user.to_string(),
                source: SignalSource::Calendar,
                availability: Availability::Busy,
                status_text: Some("Client consultation: Harper & Lee".into()),
                status_emoji: Some(":wedding:".into()),
                starts: Some(self.base),
                expires: Some(self.base + 3_600_000),
                clears: false,
                category: Some(Category::Client),
            },
        }
    }

    /// What the Zoom plugin states when a participant joins (`clears: false`)
    /// or leaves (`clears: true`); the host keys it by plugin name.
    fn call(&self, user: &str, in_call: bool) -> KeyedSignal {
        KeyedSignal {
            key: "zoom".into(),
            origin: "zoom".into(),
            signal: PresenceSignal {
                user: user.to_string(),
                source: SignalSource::Call,
                availability: Availability::InCall,
                status_text: in_call.then(|| "In a Zoom meeting".to_string()),
                status_emoji: in_call.then(|| ":video_camera:".to_string()),
                starts: None,
                expires: in_call.then_some(self.base + CALL_HORIZON_MS),
                clears: !in_call,
                category: None,
            },
        }
    }
}

// --- measurements --------------------------------------------------------------

/// A timed run of `each.len()` operations.
struct Timed {
    total: Duration,
    each: Vec<Duration>,
}

impl Timed {
    fn new(total: Duration, mut each: Vec<Duration>) -> Self {
        each.sort();
        Self { total, each }
    }

    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.each, p)
    }

    fn rate(&self) -> f64 {
        self.each.len() as f64 / self.total.as_secs_f64()
    }
}

fn fmt_count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A `/proc/<pid>/status` field given in kB, in bytes.
fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

// --- 1, 2, 4: the engine in process ---------------------------------------------

struct EngineRun {
    seed: Timed,
    starts: Timed,
    ends: Timed,
    peak_rss_seeded: u64,
    peak_rss_changed: u64,
    db_bytes: u64,
}

async fn engine_run(
    store: &Store,
    sizes: &Sizes,
    signals: &Signals,
    changed: &[String],
) -> EngineRun {
    let rules = EngineRules {
        pushers: HashSet::new(),
        max_call_ms: MAX_CALL_MS,
        push_coalesce_ms: 1000,
    };
    let mut batches = Vec::new();
    let mut seed_total = Duration::ZERO;
    for (n, first) in (0..sizes.users).step_by(SEED_BATCH).enumerate() {
        let batch: Vec<KeyedSignal> = (first..(first + SEED_BATCH).min(sizes.users))
            .map(|i| signals.calendar(&user(i)))
            .collect();
        let started = Instant::now();
        let (commit, effects) = store
            .commit_webhook(
                "calendar-webhook",
                TENANT,
                Some(&format!("seed-{n}")),
                &batch,
                &rules,
            )
            .await
            .unwrap();
        let took = started.elapsed();
        seed_total += took;
        batches.push(took);
        assert_eq!(commit, WebhookCommit::Recorded);
        let changes = effects.changes;
        assert_eq!(changes.len(), batch.len(), "one change per seeded person");
        assert!(
            changes
                .iter()
                .all(|c| c.presence.availability == Availability::Busy)
        );
    }
    let peak_rss_seeded = proc_status("self", "VmHWM");

    let mut each = Vec::with_capacity(changed.len());
    let started = Instant::now();
    for (n, u) in changed.iter().enumerate() {
        let call = [signals.call(u, true)];
        let t = Instant::now();
        let (_, effects) = store
            .commit_webhook(
                "zoom",
                TENANT,
                Some(&format!("meeting.participant_joined:{n}")),
                &call,
                &rules,
            )
            .await
            .unwrap();
        each.push(t.elapsed());
        let changes = effects.changes;
        assert_eq!(changes.len(), 1, "{u}: one change per call start");
        assert_eq!(changes[0].presence.availability, Availability::InCall);
    }
    let starts = Timed::new(started.elapsed(), each);

    let started = Instant::now();
    let writers: Vec<_> = (0..CONCURRENT_WRITERS)
        .map(|w| {
            let store = store.clone();
            let rules = rules.clone();
            let mine: Vec<(usize, KeyedSignal)> = changed
                .iter()
                .enumerate()
                .skip(w)
                .step_by(CONCURRENT_WRITERS)
                .map(|(n, u)| (n, signals.call(u, false)))
                .collect();
            tokio::spawn(async move {
                let mut each = Vec::with_capacity(mine.len());
                for (n, ended) in mine {
                    let t = Instant::now();
                    let (_, effects) = store
                        .commit_webhook(
                            "zoom",
                            TENANT,
                            Some(&format!("meeting.participant_left:{n}")),
                            std::slice::from_ref(&ended),
                            &rules,
                        )
                        .await
                        .unwrap();
                    each.push(t.elapsed());
                    let changes = effects.changes;
                    assert_eq!(changes.len(), 1, "one change per call end");
                    // The calendar shows through again.
                    assert_eq!(changes[0].presence.availability, Availability::Busy);
                }
                each
            })
        })
        .collect();
    let mut each = Vec::with_capacity(changed.len());
    for w in writers {
        each.extend(w.await.unwrap());
    }
    let ends = Timed::new(started.elapsed(), each);
    let peak_rss_changed = proc_status("self", "VmHWM");
    EngineRun {
        seed: Timed::new(seed_total, batches),
        starts,
        ends,
        peak_rss_seeded,
        peak_rss_changed,
        db_bytes: 0,
    }
}

// --- 5: the floor ------------------------------------------------------------------

/// What any presence service must do at least: keep each person's signals,
/// derive, and keep the result.
#[derive(Default)]
struct Floor {
    signals: HashMap<String, Vec<KeyedSignal>>,
    presence: HashMap<String, Presence>,
    seq: i64,
}

impl Floor {
    /// States `keyed` (replacing the same source's statement under the same
    /// key, newest first, a withdrawal kept as expired now, as the store does)
    /// and re-derives; whether the person's presence changed.
    fn apply(&mut self, mut keyed: KeyedSignal, now: i64) -> bool {
        if keyed.signal.clears {
            keyed.signal.expires = Some(now);
            keyed.signal.clears = false;
        }
        let user = keyed.signal.user.clone();
        let list = self.signals.entry(user.clone()).or_default();
        list.retain(|k| !(k.signal.source == keyed.signal.source && k.key == keyed.key));
        list.insert(0, keyed);
        let derived = presence::derive(&user, list, now);
        match self.presence.get_mut(&user) {
            Some(p) if *p == derived => return false,
            Some(p) => *p = derived,
            None => {
                self.presence.insert(user, derived);
            }
        }
        self.seq += 1;
        true
    }
}

struct FloorRun {
    seed: Timed,
    starts: Timed,
    ends: Timed,
    heap_bytes: usize,
}

fn floor_run(floor: &mut Floor, sizes: &Sizes, signals: &Signals, changed: &[String]) -> FloorRun {
    let heap_before = LIVE_HEAP.load(Ordering::Relaxed);
    let mut batches = Vec::new();
    let mut seed_total = Duration::ZERO;
    for first in (0..sizes.users).step_by(SEED_BATCH) {
        let batch: Vec<KeyedSignal> = (first..(first + SEED_BATCH).min(sizes.users))
            .map(|i| signals.calendar(&user(i)))
            .collect();
        let started = Instant::now();
        let now = now_ms();
        for keyed in batch {
            assert!(floor.apply(keyed, now));
        }
        let took = started.elapsed();
        seed_total += took;
        batches.push(took);
    }
    let mut run = |in_call: bool| {
        let prepared: Vec<KeyedSignal> = changed.iter().map(|u| signals.call(u, in_call)).collect();
        let mut each = Vec::with_capacity(prepared.len());
        let started = Instant::now();
        for keyed in prepared {
            let user = keyed.signal.user.clone();
            let t = Instant::now();
            let applied = floor.apply(keyed, now_ms());
            each.push(t.elapsed());
            let expected = if in_call {
                Availability::InCall
            } else {
                Availability::Busy
            };
            assert!(applied, "{user}: one change per call start or end");
            assert_eq!(floor.presence[&user].availability, expected);
        }
        Timed::new(started.elapsed(), each)
    };
    let starts = run(true);
    let ends = run(false);
    FloorRun {
        seed: Timed::new(seed_total, batches),
        starts,
        ends,
        heap_bytes: LIVE_HEAP
            .load(Ordering::Relaxed)
            .saturating_sub(heap_before),
    }
}

/// The floor over HTTP: a bare axum app whose `PUT` updates the maps and
/// broadcasts the change, and whose stream relays the broadcast as SSE.
#[derive(Clone)]
struct FloorServer {
    floor: Arc<Mutex<Floor>>,
    changes: broadcast::Sender<Arc<String>>,
}

async fn floor_put(
    State(server): State<FloorServer>,
    UrlPath(user): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Presence>, StatusCode> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(ADMIN_TOKEN) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let m: ManualPresence = serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let now = now_ms();
    let keyed = KeyedSignal {
        key: "manual".into(),
        origin: "api".into(),
        signal: PresenceSignal {
            user: user.clone(),
            source: SignalSource::Manual,
            availability: m.availability,
            status_text: m.status_text,
            status_emoji: m.status_emoji,
            starts: None,
            expires: m.duration_minutes.map(|d| now + i64::from(d) * 60_000),
            clears: false,
            category: None,
        },
    };
    let mut floor = server.floor.lock().unwrap();
    let changed = floor.apply(keyed, now);
    let presence = floor.presence[&user].clone();
    if changed {
        let change = Change {
            seq: floor.seq,
            tenant: TENANT.into(),
            user,
            presence: presence.clone(),
            at: now,
        };
        // No subscriber is not an error, as in the host.
        let _ = server
            .changes
            .send(Arc::new(serde_json::to_string(&change).unwrap()));
    }
    Ok(Json(presence))
}

async fn floor_stream(
    State(server): State<FloorServer>,
) -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let live = server.changes.subscribe();
    let events = futures::stream::unfold(live, |mut live| async move {
        loop {
            match live.recv().await {
                Ok(json) => {
                    let event = Event::default().event("presence").data(json.as_str());
                    return Some((Ok(event), live));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn serve_floor(floor: Floor) -> SocketAddr {
    let server = FloorServer {
        floor: Arc::new(Mutex::new(floor)),
        changes: broadcast::channel(4096).0,
    };
    let app = axum::Router::new()
        .route("/api/presence/stream", axum::routing::get(floor_stream))
        .route("/api/presence/{user}", axum::routing::put(floor_put))
        .with_state(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

// --- 3: signal to SSE event -----------------------------------------------------------

struct StreamRun {
    /// From sending the PUT to its event's arrival, sorted.
    to_event: Vec<Duration>,
    /// The PUT's round trip, sorted.
    round_trip: Vec<Duration>,
    missing: usize,
    errors: usize,
    elapsed: Duration,
}

async fn put_manual(client: &reqwest::Client, base: &str, user: &str) -> bool {
    client
        .put(format!("{base}/api/presence/{user}"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(MANUAL_BODY)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Sets a manual status for each of `users` at `rate` per second (open loop)
/// while one SSE client watches the stream.
async fn stream_run(base: &str, users: &[String], warm_up: &[String], rate: u64) -> StreamRun {
    // A request that hangs counts as an error instead of stalling the run.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for u in warm_up {
        assert!(put_manual(&client, base, u).await, "warm-up PUT failed");
    }
    let mut events = sse::SseClient::connect(&format!("{base}/api/presence/stream"), None).await;
    let expected: HashSet<String> = users.iter().cloned().collect();
    let sending = Duration::from_secs_f64(users.len() as f64 / rate as f64);
    let deadline = Instant::now() + sending + Duration::from_secs(15);
    let reader = tokio::spawn(async move {
        let mut arrived: HashMap<String, Instant> = HashMap::new();
        while arrived.len() < expected.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(event) = events.next_of("presence", left).await else {
                break;
            };
            let at = Instant::now();
            let change = event.json();
            let user = change["user"].as_str().unwrap_or_default();
            if expected.contains(user) {
                arrived.entry(user.to_string()).or_insert(at);
            }
        }
        arrived
    });

    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::with_capacity(users.len());
    for u in users {
        ticker.tick().await;
        let (client, base, u) = (client.clone(), base.to_string(), u.clone());
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = put_manual(&client, &base, &u).await;
            (u, sent, sent.elapsed(), ok)
        }));
    }
    let mut sent_at = HashMap::new();
    let mut round_trip = Vec::with_capacity(users.len());
    let mut errors = 0;
    for r in requests {
        let (u, sent, rtt, ok) = r.await.unwrap();
        round_trip.push(rtt);
        errors += usize::from(!ok);
        sent_at.insert(u, sent);
    }
    let arrived = reader.await.unwrap();
    let elapsed = started.elapsed();
    let mut to_event: Vec<Duration> = arrived
        .iter()
        .filter_map(|(u, at)| Some(at.saturating_duration_since(*sent_at.get(u)?)))
        .collect();
    to_event.sort();
    round_trip.sort();
    StreamRun {
        missing: users.len() - to_event.len(),
        to_event,
        round_trip,
        errors,
        elapsed,
    }
}

// --- the report ---------------------------------------------------------------------

fn ratio(engine: Duration, floor: Duration) -> String {
    let r = engine.as_secs_f64() / floor.as_secs_f64().max(1e-12);
    if r >= 10.0 {
        format!("{r:.0}x")
    } else {
        format!("{r:.1}x")
    }
}

fn print_changes(what: &str, engine: &Timed, floor: &Timed) {
    println!("{what}");
    for (name, t) in [("engine", engine), ("floor", floor)] {
        println!(
            "  {name:<7} {:>10}  {:>7}/s  p50 {:>9}  p99 {:>9}  max {:>9}",
            fmt_duration(t.total),
            fmt_count(t.rate()),
            fmt_duration(t.percentile(0.50)),
            fmt_duration(t.percentile(0.99)),
            fmt_duration(t.percentile(1.0)),
        );
    }
    println!(
        "  ratio   total {}, p50 {}, p99 {}",
        ratio(engine.total, floor.total),
        ratio(engine.percentile(0.50), floor.percentile(0.50)),
        ratio(engine.percentile(0.99), floor.percentile(0.99)),
    );
}

fn print_stream(name: &str, r: &StreamRun) {
    println!(
        "  {name:<7} to event p50 {:>9}  p99 {:>9}  max {:>9} | PUT p50 {:>9}  p99 {:>9} | {} sent in {}, {} errors, {} events missing",
        fmt_duration(percentile(&r.to_event, 0.50)),
        fmt_duration(percentile(&r.to_event, 0.99)),
        fmt_duration(percentile(&r.to_event, 1.0)),
        fmt_duration(percentile(&r.round_trip, 0.50)),
        fmt_duration(percentile(&r.round_trip, 0.99)),
        r.round_trip.len(),
        fmt_duration(r.elapsed),
        r.errors,
        r.missing,
    );
}

fn main() {
    let sizes = Sizes::from_env();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let db = data.join("presence.db");
    let signals = Signals { base: now_ms() };
    let changed = sizes.spread(sizes.changes, 0);
    // Different people from the changed ones where there is room.
    let streamed = sizes.spread(sizes.streamed, sizes.users / sizes.streamed.max(1) / 2 + 1);
    let warm_up = sizes.spread(20, 3);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "presence engine: {} people, {} changes, {} streamed at {STREAM_RATE}/s (scale {})",
        sizes.users, sizes.changes, sizes.streamed, sizes.scale
    );

    let (engine, floor, floor_state) = rt.block_on(async {
        let key = MasterKey::load_or_create(None, &data).unwrap();
        let store = Store::open(&format!("sqlite://{}", db.display()), key)
            .await
            .unwrap();
        let mut engine = engine_run(&store, &sizes, &signals, &changed).await;
        let mut floor_state = Floor::default();
        let floor = floor_run(&mut floor_state, &sizes, &signals, &changed);
        // The engine and the floor agree on everyone they were both told about.
        for u in sizes.spread(500.min(sizes.users), 1).iter().chain(&changed) {
            let (stored, _) = store.presence_state(TENANT, u).await.unwrap().unwrap();
            assert_eq!(&stored, &floor_state.presence[u], "{u}");
        }
        store.close().await;
        engine.db_bytes = file_size(&db) + file_size(&data.join("presence.db-wal"));
        (engine, floor, floor_state)
    });

    let ready_started = Instant::now();
    let (mut host, host_url) =
        support::serve_with_env(&data, &plugins, &[("PRESENCE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let host_ready = ready_started.elapsed();
    let host_pid = host.id().to_string();
    let host_rss_ready = proc_status(&host_pid, "VmRSS");

    let (host_stream, floor_stream) = rt.block_on(async {
        let host_stream = stream_run(&host_url, &streamed, &warm_up, STREAM_RATE).await;
        // The floor serves the very maps measured above (the same people, the same state).
        let floor_url = format!("http://{}", serve_floor(floor_state).await);
        let floor_stream = stream_run(&floor_url, &streamed, &warm_up, STREAM_RATE).await;
        (host_stream, floor_stream)
    });
    let host_rss_peak = proc_status(&host_pid, "VmHWM");
    let _ = host.kill();
    let _ = host.wait();

    println!(
        "seeding {} people, one calendar signal each, {SEED_BATCH} per commit_webhook",
        sizes.users
    );
    for (name, t) in [("engine", &engine.seed), ("floor", &floor.seed)] {
        println!(
            "  {name:<7} {:>10}  {:>7} people/s  per batch p50 {:>9}  p99 {:>9}",
            fmt_duration(t.total),
            fmt_count(sizes.users as f64 / t.total.as_secs_f64()),
            fmt_duration(t.percentile(0.50)),
            fmt_duration(t.percentile(0.99)),
        );
    }
    println!("  ratio   {}", ratio(engine.seed.total, floor.seed.total));
    print_changes(
        &format!(
            "{} call starts, one commit_webhook each, sequential",
            sizes.changes
        ),
        &engine.starts,
        &floor.starts,
    );
    print_changes(
        &format!(
            "{} call ends, engine from {CONCURRENT_WRITERS} tasks at once (floor: sequential)",
            sizes.changes
        ),
        &engine.ends,
        &floor.ends,
    );
    println!(
        "signal to SSE event: PUT /api/presence/{{user}} at {STREAM_RATE}/s, one stream client, {} people",
        sizes.streamed
    );
    print_stream("host", &host_stream);
    print_stream("floor", &floor_stream);
    println!(
        "  ratio   to event p50 {}, p99 {}",
        ratio(
            percentile(&host_stream.to_event, 0.50),
            percentile(&floor_stream.to_event, 0.50)
        ),
        ratio(
            percentile(&host_stream.to_event, 0.99),
            percentile(&floor_stream.to_event, 0.99)
        ),
    );
    println!("memory");
    println!(
        "  engine in process: peak RSS {} after seeding, {} after the changes; database on disk {}",
        mib(engine.peak_rss_seeded),
        mib(engine.peak_rss_changed),
        mib(engine.db_bytes),
    );
    println!(
        "  host binary on the seeded database: ready in {}, RSS {} at ready, peak {} after streaming",
        fmt_duration(host_ready),
        mib(host_rss_ready),
        mib(host_rss_peak),
    );
    println!(
        "  floor maps: {} of heap ({} bytes per person)",
        mib(floor.heap_bytes as u64),
        floor.heap_bytes / sizes.users,
    );

    assert_eq!(
        host_stream.errors + host_stream.missing,
        0,
        "the host failed requests or lost events"
    );
    assert_eq!(
        floor_stream.errors + floor_stream.missing,
        0,
        "the floor failed requests or lost events"
    );
}
