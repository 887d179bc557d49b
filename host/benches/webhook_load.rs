//! Load on the webhook path: correctly signed Slack events, each with a new
//! `event_id`, against (a) the real `presence-host` binary with the real Slack
//! plugin (verification in the sandbox, classification chain, one transaction),
//! and (b) the floor: a bare axum handler doing the same HMAC check and one
//! SQLite insert (WAL, synchronous=NORMAL). Both measured in the same run, with
//! the same load generator: saturation throughput with 16 connections, then a
//! fixed 500 requests/s. Loopback only; bounded in time.
//!
//! Then scale-out, in the same run: the same saturating load on PostgreSQL
//! (`$PRESENCE_BENCH_POSTGRES`, by default the local server's database `test`,
//! in a schema of its own; skipped when it does not answer) with one host
//! process, then with two replicas sharing it, each taking half the
//! connections; printed against the SQLite host measured above.
//!
//! Needs the bundled plugins: `cargo xtask plugins` first.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
#[path = "support.rs"]
mod support;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
const SATURATION: Duration = Duration::from_secs(5);
const CONNECTIONS: usize = 16;
const FIXED_RATE: u64 = 500;

fn sign(timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn body(n: u64) -> String {
    format!(
        r#"{{"type":"event_callback","event_id":"Ev{n}","event":{{"type":"user_status_changed","user":{{"id":"U{}","profile":{{"status_text":"In a meeting","status_emoji":":calendar:","status_expiration":0}}}}}}}}"#,
        n % 500
    )
}

/// The floor: what any webhook receiver must do at least.
async fn floor(dir: &std::path::Path) -> SocketAddr {
    let options = SqliteConnectOptions::new()
        .filename(dir.join("floor.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE events (id TEXT PRIMARY KEY, body BLOB NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let app = axum::Router::new().route(
        "/slack",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let pool = pool.clone();
            async move {
                let ts = headers
                    .get("x-slack-request-timestamp")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let sig = headers
                    .get("x-slack-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
                mac.update(format!("v0:{ts}:").as_bytes());
                mac.update(&body);
                let Some(expected) = sig.strip_prefix("v0=").and_then(|h| hex::decode(h).ok())
                else {
                    return StatusCode::UNAUTHORIZED;
                };
                if mac.verify_slice(&expected).is_err() {
                    return StatusCode::UNAUTHORIZED;
                }
                let id = format!(
                    "{:x}",
                    sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&body))
                );
                match sqlx::query("INSERT INTO events (id, body) VALUES (?, ?)")
                    .bind(id)
                    .bind(body.to_vec())
                    .execute(&pool)
                    .await
                {
                    Ok(_) => StatusCode::OK,
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct Report {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Report {
    fn percentile(&self, p: f64) -> Duration {
        support::percentile(&self.latencies, p)
    }
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends signed events to `url`: as fast as `connections` allow for `duration`,
/// or at `rate` per second when given.
async fn drive(
    url: &str,
    connections: usize,
    duration: Duration,
    rate: Option<u64>,
    counter: Arc<AtomicU64>,
) -> Report {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let (client, url, counter) = (client.clone(), url.to_string(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut ticker = rate.map(|r| {
                let mut t =
                    tokio::time::interval(Duration::from_secs_f64(connections as f64 / r as f64));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            tokio::time::sleep(Duration::from_micros(worker as u64 * 200)).await;
            while started.elapsed() < duration {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let body = body(n);
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let sent = Instant::now();
                let ok = client
                    .post(&url)
                    .header("x-slack-request-timestamp", ts.to_string())
                    .header("x-slack-signature", sign(ts, &body))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                latencies.push(sent.elapsed());
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    Report {
        requests: latencies.len(),
        errors,
        elapsed: started.elapsed(),
        latencies,
    }
}

/// Both replicas' loads as one: every request, the longer of the two runs.
fn merged(a: Report, b: Report) -> Report {
    let mut latencies = a.latencies;
    latencies.extend(b.latencies);
    latencies.sort();
    Report {
        requests: latencies.len(),
        errors: a.errors + b.errors,
        elapsed: a.elapsed.max(b.elapsed),
        latencies,
    }
}

/// The PostgreSQL server of the scale-out half, if it answers.
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
async fn scale_out(
    server: &str,
    work: &std::path::Path,
    plugins: &std::path::Path,
    counter: Arc<AtomicU64>,
) -> (Report, Report) {
    let schema = format!("bench_{}", std::process::id());
    execute(server, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    execute(server, &format!("CREATE SCHEMA {schema}")).await;
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
    let exe = env!("CARGO_BIN_EXE_presence-host");
    let mut set = Command::new(exe)
        .args(["secret", "set", "slack.signing-secret", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut set.stdin.take().unwrap(), SECRET).unwrap();
    assert!(set.wait().unwrap().success());
    let env = [("PRESENCE_CONFIG", config.to_str().unwrap())];
    let (mut a, a_url) = support::serve_with_env(&data, plugins, &env);
    let a_url = format!("{a_url}/api/webhooks/slack");
    drive(&a_url, 4, Duration::from_millis(500), None, counter.clone()).await;
    let one = drive(&a_url, CONNECTIONS, SATURATION, None, counter.clone()).await;
    let (mut b, b_url) = support::serve_with_env(&data, plugins, &env);
    let b_url = format!("{b_url}/api/webhooks/slack");
    drive(&b_url, 4, Duration::from_millis(500), None, counter.clone()).await;
    let (on_a, on_b) = tokio::join!(
        drive(&a_url, CONNECTIONS / 2, SATURATION, None, counter.clone()),
        drive(&b_url, CONNECTIONS / 2, SATURATION, None, counter.clone()),
    );
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
    execute(server, &format!("DROP SCHEMA {schema} CASCADE")).await;
    (one, merged(on_a, on_b))
}

fn print(name: &str, r: &Report) {
    println!(
        "  {name:<34} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
        r.rate(),
        r.percentile(0.50).as_secs_f64() * 1e3,
        r.percentile(0.99).as_secs_f64() * 1e3,
        r.errors
    );
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let slack = root.join("target/plugins/slack");
    assert!(
        slack.join("plugin.wasm").is_file(),
        "run `cargo xtask plugins` first"
    );
    let work = tempfile::tempdir().unwrap();
    let plugins = work.path().join("plugins");
    for name in ["slack", "wedding-keywords"] {
        let dir = plugins.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["plugin.wasm", "plugin.toml"] {
            std::fs::copy(root.join("target/plugins").join(name).join(f), dir.join(f)).unwrap();
        }
    }
    let data = work.path().join("data");
    let exe = env!("CARGO_BIN_EXE_presence-host");
    let mut set = Command::new(exe)
        .args(["secret", "set", "slack.signing-secret", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut set.stdin.take().unwrap(), SECRET).unwrap();
    assert!(set.wait().unwrap().success());
    // The webhook rate limit (1,000 a second per endpoint by default) would
    // answer a saturating load with 429s: lift it, to measure the path itself.
    let config = work.path().join("bench.toml");
    std::fs::write(&config, "[webhooks]\nper_endpoint_per_second = 1000000\n").unwrap();
    let (mut host, base_url) = support::serve_with_env(
        &data,
        &plugins,
        &[("PRESENCE_CONFIG", config.to_str().unwrap())],
    );
    let host_url = format!("{base_url}/api/webhooks/slack");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let floor_url = format!("http://{}/slack", floor(work.path()).await);
        let counter = Arc::new(AtomicU64::new(0));
        // Warm both up.
        drive(
            &floor_url,
            4,
            Duration::from_millis(500),
            None,
            counter.clone(),
        )
        .await;
        drive(
            &host_url,
            4,
            Duration::from_millis(500),
            None,
            counter.clone(),
        )
        .await;
        println!("webhook path, signed Slack events, loopback, {CONNECTIONS} connections");
        let floor_sat = drive(&floor_url, CONNECTIONS, SATURATION, None, counter.clone()).await;
        let host_sat = drive(&host_url, CONNECTIONS, SATURATION, None, counter.clone()).await;
        print("floor (axum + HMAC + SQLite insert)", &floor_sat);
        print("presence-host (slack plugin)", &host_sat);
        println!(
            "  saturation ratio: {:.0} % of the floor",
            100.0 * host_sat.rate() / floor_sat.rate()
        );
        let floor_fixed = drive(
            &floor_url,
            CONNECTIONS,
            SATURATION,
            Some(FIXED_RATE),
            counter.clone(),
        )
        .await;
        let host_fixed = drive(
            &host_url,
            CONNECTIONS,
            SATURATION,
            Some(FIXED_RATE),
            counter.clone(),
        )
        .await;
        println!("at {FIXED_RATE} req/s:");
        print("floor", &floor_fixed);
        print("presence-host", &host_fixed);
        assert_eq!(
            host_sat.errors + host_fixed.errors,
            0,
            "the host refused or failed requests under load"
        );
        if let Some(server) = postgres().await {
            let (one, two) = scale_out(&server, work.path(), &plugins, counter.clone()).await;
            println!("scale-out, saturation, {CONNECTIONS} connections in all:");
            print("SQLite, one process (above)", &host_sat);
            print("PostgreSQL, one replica", &one);
            print("PostgreSQL, two replicas", &two);
            println!(
                "  PostgreSQL: {:.0} % of SQLite with one replica, {:.0} % with two ({:.2}x one replica)",
                100.0 * one.rate() / host_sat.rate(),
                100.0 * two.rate() / host_sat.rate(),
                two.rate() / one.rate()
            );
            assert_eq!(one.errors + two.errors, 0, "PostgreSQL replicas failed requests");
        }
    });
    let _ = host.kill();
    let _ = host.wait();
}
