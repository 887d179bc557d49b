//! Calendar sync at scale (issue 6): a Google calendar of 10,000 events
//! through the real `presence-host` binary, the real `google-calendar` and
//! `wedding-keywords` plugins, and the loopback Calendar API emulator of the
//! end-to-end tests.
//!
//! 1. **Full sync**: the connection is made, the host watches the calendar and
//!    syncs it in pages of 250: every event is mapped by the plugin,
//!    classified by the tenant's rules and stored as a calendar signal. Wall
//!    time from the connection's PUT to the sync's completion, events per
//!    second, and the host's peak RSS.
//! 2. **Incremental**: 100 events move, one after another. Each move is
//!    notified to the host's channel (as Google notifies), which syncs
//!    incrementally; the latency is from the change to the moved event being
//!    in the store with its new time.
//! 3. **Floor**: the same 10,000 events read straight from the emulator by a
//!    plain client, page by page, and parsed: what any sync must at least do.
//!    The full sync's time is reported as a ratio of it.
//!
//! Every synced event is checked to be in the store (10,000 less those that
//! are free time), so the numbers cannot come from work not done.
//!
//! Needs the bundled plugins: `cargo xtask plugins`, then
//! `cargo bench -p presence-host --bench calendar_sync`. Bounded (each wait
//! at most 120 s); loopback only. `PRESENCE_BENCH_SCALE=0.1` syncs 1,000
//! events for a quick run.

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};

#[path = "../../tests/support/google.rs"]
#[allow(dead_code)]
mod google;
#[path = "support.rs"]
mod support;

use support::{fmt_duration, percentile, proc_status};

const ADMIN: &str = "bench-operator-token";
const TOKEN: &str = "ya29.bench";
const CALENDAR: &str = "planner@example.com";
const CONNECTION: &str = "google-calendar:planner";
const USER: &str = "planner";
const CHANGES: usize = 100;
const WAIT: Duration = Duration::from_secs(120);

/// Where the Google emulator serves (its module calls `super::serve_loopback`).
async fn serve_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

const TITLES: [&str; 8] = [
    "Ceremony rehearsal",
    "Venue walkthrough",
    "Client consultation - Smith wedding",
    "Florist delivery",
    "Cake tasting",
    "Team standup",
    "Dentist",
    "Vendor call: catering",
];

/// Event `i` of the calendar: spread over the next 200 days, a realistic mix
/// (busy, a tenth free, some out of office, some all day).
fn event(i: usize, total: usize) -> Value {
    let start = Utc::now() + TimeDelta::minutes(30 + (i * 200 * 24 * 60 / total) as i64);
    let end = start + TimeDelta::minutes(45);
    let at = |t: chrono::DateTime<Utc>| json!({"dateTime": t.to_rfc3339_opts(SecondsFormat::Secs, true), "timeZone": "Europe/London"});
    let mut e = json!({
        "id": format!("evt{i:05}"),
        "summary": TITLES[i % TITLES.len()],
        "location": "Old Barn, Ashford",
        "attendees": [{"email": "couple@example.com"}, {"email": "planner@example.com"}],
        "start": at(start),
        "end": at(end),
    });
    match i % 20 {
        0 | 10 => e["transparency"] = json!("transparent"),
        5 => e["eventType"] = json!("outOfOffice"),
        15 => {
            let day = start.date_naive();
            e["start"] = json!({"date": day.to_string()});
            e["end"] = json!({"date": (day + TimeDelta::days(1)).to_string()});
        }
        _ => {}
    }
    e
}

fn is_free(i: usize) -> bool {
    matches!(i % 20, 0 | 10)
}

fn main() {
    let scale: f64 = std::env::var("PRESENCE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let total = ((10_000.0 * scale) as usize).max(200);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for p in ["google-calendar", "wedding-keywords"] {
        assert!(
            root.join("target/plugins")
                .join(p)
                .join("plugin.wasm")
                .is_file(),
            "run `cargo xtask plugins` first"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(total, &root.join("target/plugins")));
}

async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(total: usize, bundled: &std::path::Path) {
    let google = google::GoogleCalendarEmulator::start().await;
    google.add_calendar(TOKEN, CALENDAR, "Europe/London");
    google.load_events(CALENDAR, (0..total).map(|i| event(i, total)));

    let work = tempfile::tempdir().unwrap();
    for p in ["google-calendar", "wedding-keywords"] {
        let dir = work.path().join("plugins").join(p);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["plugin.wasm", "plugin.toml"] {
            std::fs::copy(bundled.join(p).join(f), dir.join(f)).unwrap();
        }
    }
    let config = work.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.google-calendar]\nextra_allowed_hosts = [\"{base}\"]\n\
             [plugins.google-calendar.config]\napi_base = \"{base}\"\n",
            base = google.base_url()
        ),
    )
    .unwrap();
    let data = work.path().join("data");
    let (mut host, base) = support::serve_with_env(
        &data,
        &work.path().join("plugins"),
        &[
            ("PRESENCE_CONFIG", config.to_str().unwrap()),
            ("PRESENCE_ADMIN_TOKEN", ADMIN),
        ],
    );
    let pid = host.id().to_string();
    let rss_ready = proc_status(&pid, "VmRSS");
    let client = reqwest::Client::new();
    let calendar = || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let body: Value = client
                .get(format!("{base}/api/tenants/default/calendars"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["calendars"][0].clone()
        }
    };

    // 1. Full sync.
    let started = Instant::now();
    let r = client
        .put(format!(
            "{base}/api/tenants/default/connections/{CONNECTION}"
        ))
        .bearer_auth(ADMIN)
        .json(&json!({"plugin": "google-calendar", "user": USER, "access_token": TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let synced = until("the full sync", || async {
        let c = calendar().await;
        (c["last_synced_at"].is_i64() && c["paging"] == false).then_some(c)
    })
    .await;
    let full = started.elapsed();
    let rss_peak = proc_status(&pid, "VmHWM");
    assert_eq!(synced["failures"], 0, "{synced}");
    let store = open_store(&data).await;
    let stored = store
        .synced_events("default", USER, CONNECTION)
        .await
        .unwrap();
    let busy = (0..total).filter(|&i| !is_free(i)).count();
    assert_eq!(
        stored.len(),
        busy,
        "every event that is not free time is stored"
    );
    let pages = google.list_calls().len();

    // 2. Incremental: move events one after another.
    let mut latencies = Vec::with_capacity(CHANGES);
    // Timed events that are stored, spread over the calendar.
    let movable: Vec<usize> = (0..total)
        .map(|k| (k * 97 + 1) % total)
        .filter(|&i| !is_free(i) && i % 20 != 15)
        .take(CHANGES)
        .collect();
    for (k, i) in movable.into_iter().enumerate() {
        let mut e = event(i, total);
        let new_start = Utc::now() + TimeDelta::days(300) + TimeDelta::minutes(k as i64);
        let start_ms = new_start.timestamp_millis() / 1000 * 1000;
        let at = |t: chrono::DateTime<Utc>| json!({"dateTime": t.to_rfc3339_opts(SecondsFormat::Secs, true), "timeZone": "Europe/London"});
        let new_start = chrono::DateTime::from_timestamp_millis(start_ms).unwrap();
        e["start"] = at(new_start);
        e["end"] = at(new_start + TimeDelta::minutes(45));
        let id = e["id"].as_str().unwrap().to_string();
        let changed = Instant::now();
        google.upsert_event(CALENDAR, e);
        until("an incremental change", || {
            let (store, id) = (&store, id.clone());
            async move {
                let events = store
                    .synced_events("default", USER, CONNECTION)
                    .await
                    .unwrap();
                events
                    .iter()
                    .any(|(eid, s, _, _)| eid == &id && *s == Some(start_ms))
                    .then_some(())
            }
        })
        .await;
        latencies.push(changed.elapsed());
    }
    latencies.sort();
    let incremental: Vec<_> = google
        .list_calls()
        .into_iter()
        .skip(pages)
        .filter(|c| c.is_incremental())
        .collect();
    store.close().await;
    let _ = host.kill();
    let _ = host.wait();

    // 3. Floor: read and parse the same pages straight from the emulator.
    let floor_started = Instant::now();
    let mut page_token: Option<String> = None;
    let mut read = 0;
    loop {
        let mut url = format!(
            "{}/calendar/v3/calendars/{CALENDAR}/events?singleEvents=true&maxResults=250",
            google.base_url()
        );
        if let Some(t) = &page_token {
            url.push_str(&format!("&pageToken={t}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        read += page["items"].as_array().map_or(0, Vec::len);
        match page["nextPageToken"].as_str() {
            Some(t) => page_token = Some(t.to_string()),
            None => break,
        }
    }
    let floor = floor_started.elapsed();
    assert!(read >= total);

    println!("calendar sync, {total} events ({busy} stored, {pages} pages)");
    println!(
        "  full sync: {} ({:.0} events/s); floor (read and parse the pages): {} -> {:.1}x the floor",
        fmt_duration(full),
        total as f64 / full.as_secs_f64(),
        fmt_duration(floor),
        full.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  host RSS: {:.1} MiB at ready, {:.1} MiB peak",
        rss_ready as f64 / 1048576.0,
        rss_peak as f64 / 1048576.0
    );
    println!(
        "  {} incremental changes ({} incremental list calls): change to stored p50 {}, p95 {}, p99 {}, max {}",
        latencies.len(),
        incremental.len(),
        fmt_duration(percentile(&latencies, 0.5)),
        fmt_duration(percentile(&latencies, 0.95)),
        fmt_duration(percentile(&latencies, 0.99)),
        fmt_duration(latencies.last().copied().unwrap_or_default()),
    );
}

/// The host's store, opened beside it (SQLite in WAL mode allows it).
async fn open_store(data: &std::path::Path) -> presence_host::store::Store {
    let key = presence_host::store::MasterKey::load_or_create(None, data).unwrap();
    let url = format!("sqlite://{}", data.join("presence.db").display());
    presence_host::store::Store::open(&url, key).await.unwrap()
}
