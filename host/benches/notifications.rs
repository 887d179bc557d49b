//! The notification router under load (issue 9): 10,000 notifications for
//! 1,000 recipients with mixed presence, through the real `presence-host`
//! binary and the real twilio plugin to the loopback Twilio emulator of the
//! end-to-end tests.
//!
//! 1. **Setup**: 1,000 recipients, each with an SMS channel. A third are
//!    available, a third busy, a third in do-not-disturb (manual presence).
//! 2. **Routing**: each recipient gets 10 notifications (1 emergency, 3
//!    timeline, 3 coordination, 3 general), submitted 100 recipients per
//!    request, one class after another. The host decides each at once: the
//!    available recipients' and every emergency go out, the rest wait. Measured:
//!    the submission rate, routing decisions per second (the decisions the host
//!    recorded from the first submission until the last of this phase), the
//!    messages sent per second, and each immediate message's time from its
//!    submission being acknowledged to the emulator receiving it.
//! 3. **Lateness**: the busy and do-not-disturb recipients then become free
//!    one after another over 10 s, from 30 s after the setup (their manual
//!    presence was set with that `expires_at`; `PRESENCE_BENCH_FREE_WINDOW_S`
//!    changes the window), and every waiting notification must go out. Its
//!    lateness is the time from its recipient's free moment to the emulator
//!    receiving its message (the three general notes go out as one digest,
//!    counted for each). Target: p99 at most 1 s. Each freed recipient has
//!    seven messages waiting (three timeline, three coordination, one
//!    digest): over 10 s that is about 470 messages a second, about the send
//!    rate of step 2.
//! 4. **Floor**: the same number of messages posted straight to the same
//!    emulator by 16 concurrent clients, as any sender must at least do; the
//!    host's send rate is reported as a ratio of it. Peak RSS of the host.
//!
//! Every notification must reach the emulator exactly once (each carries a
//! token, and each token must be seen in one message), so the numbers cannot
//! come from work not done.
//!
//! Needs the bundled plugins: `cargo xtask plugins`, then
//! `cargo bench -p presence-host --bench notifications`. Bounded (a 60 s wait
//! for late messages at most); loopback only. `PRESENCE_BENCH_SCALE=0.1`
//! scales the number of recipients for a quick correctness run.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

#[path = "support.rs"]
mod support;
#[path = "../../tests/support/twilio.rs"]
#[allow(dead_code)]
mod twilio;

use support::{fmt_duration, percentile, proc_status};

const ADMIN: &str = "bench-operator-token";
const PER_RECIPIENT: usize = 10;
/// From the setup to the first recipient becoming free.
const LEAD: Duration = Duration::from_secs(30);
const CONCURRENCY: usize = 16;

fn class_of(round: usize) -> &'static str {
    match round {
        0 => "emergency",
        1..=3 => "timeline",
        4..=6 => "coordination",
        _ => "general",
    }
}

fn phone(i: usize) -> String {
    format!("+1555{i:07}")
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs `f` over `items` with [`CONCURRENCY`] at once.
async fn each<T, F, Fut>(items: Vec<T>, f: F)
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let queue = Arc::new(std::sync::Mutex::new(items));
    let f = Arc::new(f);
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (queue, f) = (queue.clone(), f.clone());
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().unwrap().pop();
                    match next {
                        Some(item) => f(item).await,
                        None => break,
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
}

fn main() {
    let scale: f64 = std::env::var("PRESENCE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let recipients = ((1000.0 * scale) as usize).max(30);
    let window = Duration::from_secs(
        std::env::var("PRESENCE_BENCH_FREE_WINDOW_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundled = root.join("target/plugins/twilio");
    assert!(
        bundled.join("plugin.wasm").is_file(),
        "run `cargo xtask plugins` first"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(recipients, window, &bundled));
}

async fn run(recipients: usize, window: Duration, bundled: &std::path::Path) {
    let emulator = twilio::TwilioEmulator::start(twilio::test_account()).await;
    let work = tempfile::tempdir().unwrap();
    let plugins = work.path().join("plugins/twilio");
    std::fs::create_dir_all(&plugins).unwrap();
    for f in ["plugin.wasm", "plugin.toml"] {
        std::fs::copy(bundled.join(f), plugins.join(f)).unwrap();
    }
    let data = work.path().join("data");
    let mut set = Command::new(env!("CARGO_BIN_EXE_presence-host"))
        .args(["secret", "set", "twilio.api-key-secret", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut set.stdin.take().unwrap(),
        emulator.account.api_key_secret.as_bytes(),
    )
    .unwrap();
    assert!(set.wait().unwrap().success());
    let config = work.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.twilio]\nextra_allowed_hosts = [\"{base}\"]\n\
             [plugins.twilio.config]\napi_base = \"{base}\"\naccount_sid = \"{sid}\"\n\
             api_key_sid = \"{key}\"\nfrom_number = \"{from}\"\n",
            base = emulator.api_base(),
            sid = emulator.account.sid,
            key = emulator.account.api_key_sid,
            from = twilio::SMS_NUMBER,
        ),
    )
    .unwrap();
    let (mut host, base) = support::serve_with_env(
        &data,
        &work.path().join("plugins"),
        &[
            ("PRESENCE_CONFIG", config.to_str().unwrap()),
            ("PRESENCE_ADMIN_TOKEN", ADMIN),
        ],
    );
    let host_pid = host.id().to_string();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let put = {
        let (client, base) = (client.clone(), base.clone());
        move |path: String, body: serde_json::Value| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let r = client
                    .put(format!("{base}{path}"))
                    .bearer_auth(ADMIN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{path}: {}", r.text().await.unwrap());
            }
        }
    };

    // 1. Setup: channels, and a third busy, a third in do-not-disturb, each
    // until their own moment in the window that opens after LEAD, by when
    // routing (step 2) is long done.
    let opens = epoch_ms() + LEAD.as_millis() as i64;
    let opens_at = Instant::now() + LEAD;
    let busy: Vec<usize> = (0..recipients).filter(|i| i % 3 != 0).collect();
    let step = window.as_millis() as i64 / busy.len().max(1) as i64;
    let free_at: HashMap<usize, (i64, Instant)> = busy
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let offset = k as i64 * step;
            (
                i,
                (
                    opens + offset,
                    opens_at + Duration::from_millis(offset as u64),
                ),
            )
        })
        .collect();
    let setup = put.clone();
    let free_ms: HashMap<usize, i64> = free_at.iter().map(|(&i, &(ms, _))| (i, ms)).collect();
    each((0..recipients).collect(), move |i| {
        let put = setup.clone();
        let free = free_ms.get(&i).copied();
        async move {
            put(
                format!("/api/users/v{i}"),
                json!({"channels": [{"plugin": "twilio", "address": phone(i)}]}),
            )
            .await;
            let availability = match i % 3 {
                0 => return,
                1 => "busy",
                _ => "do_not_disturb",
            };
            put(
                format!("/api/presence/v{i}"),
                json!({"availability": availability, "status_text": "Ceremony", "expires_at": free}),
            )
            .await;
        }
    })
    .await;

    // 2. Routing: 10 notifications each, 100 recipients a request.
    let started = Instant::now();
    let started_ms = epoch_ms();
    let submitted: Arc<std::sync::Mutex<HashMap<(usize, usize), Instant>>> = Default::default();
    let ids: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let batches: Vec<(usize, usize)> = (0..PER_RECIPIENT)
        .flat_map(|round| (0..recipients.div_ceil(100)).map(move |b| (round, b)))
        .rev()
        .collect();
    {
        let (client, base, submitted, ids) =
            (client.clone(), base.clone(), submitted.clone(), ids.clone());
        each(batches, move |(round, batch)| {
            let (client, base, submitted, ids) =
                (client.clone(), base.clone(), submitted.clone(), ids.clone());
            async move {
                let who: Vec<usize> = (batch * 100..((batch + 1) * 100).min(recipients)).collect();
                let r = client
                    .post(format!("{base}/api/notifications"))
                    .bearer_auth(ADMIN)
                    .json(&json!({
                        "recipients": who.iter().map(|i| format!("v{i}")).collect::<Vec<_>>(),
                        "urgency": class_of(round),
                        "subject": "Smith wedding",
                        "body": format!("[r{round}] the timeline changed"),
                    }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let at = Instant::now();
                let answer: serde_json::Value = r.json().await.unwrap();
                let mut submitted = submitted.lock().unwrap();
                for i in who {
                    submitted.insert((i, round), at);
                }
                ids.lock().unwrap().extend(
                    answer["notifications"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|n| n["id"].as_str().unwrap().to_string()),
                );
            }
        })
        .await;
    }
    let submit_time = started.elapsed();
    let total = recipients * PER_RECIPIENT;
    // Immediately due: every emergency, and everything for the available.
    let immediate = (0..recipients)
        .map(|i| if i % 3 == 0 { PER_RECIPIENT } else { 1 })
        .sum::<usize>();
    let seen = |emulator: &twilio::TwilioEmulator| -> usize {
        emulator
            .messages()
            .iter()
            .map(|m| body_of(m).matches("[r").count())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen(&emulator) < immediate && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let routed = started.elapsed();
    let sent_immediately = emulator.messages().len();

    // 3. Lateness: the others become free one after another.
    assert!(
        Instant::now() < opens_at,
        "routing took longer than the {} s lead: the lateness would count the queue",
        LEAD.as_secs()
    );
    let deadline = opens_at + window + Duration::from_secs(60);
    while seen(&emulator) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every note exactly once, and each one's time.
    let by_phone: HashMap<String, usize> = (0..recipients).map(|i| (phone(i), i)).collect();
    let submitted = submitted.lock().unwrap().clone();
    let mut count: HashMap<(usize, usize), usize> = HashMap::new();
    let mut immediate_latency = Vec::new();
    let mut lateness = Vec::new();
    let mut digests = 0;
    for m in emulator.messages() {
        let to = m.form.iter().find(|(k, _)| k == "To").unwrap().1.clone();
        let i = by_phone[&to];
        let body = body_of(&m);
        let rounds: Vec<usize> = body
            .split("[r")
            .skip(1)
            .map(|rest| rest[..rest.find(']').unwrap()].parse().unwrap())
            .collect();
        digests += usize::from(rounds.len() > 1);
        for round in rounds {
            *count.entry((i, round)).or_default() += 1;
            let submitted_at = submitted[&(i, round)];
            match free_at.get(&i) {
                Some(&(_, free)) if round != 0 => {
                    lateness.push(m.received.saturating_duration_since(free.max(submitted_at)));
                }
                _ => immediate_latency.push(m.received.saturating_duration_since(submitted_at)),
            }
        }
    }
    let missing = (0..recipients)
        .flat_map(|i| (0..PER_RECIPIENT).map(move |r| (i, r)))
        .filter(|k| !count.contains_key(k))
        .count();
    let doubled = count.values().filter(|&&c| c > 1).count();
    assert_eq!(
        (missing, doubled),
        (0, 0),
        "every notification exactly once"
    );

    // The decisions the host recorded during the routing phase.
    let mut decisions = Vec::new();
    let all_ids = ids.lock().unwrap().clone();
    let found: Arc<std::sync::Mutex<Vec<i64>>> = Default::default();
    {
        let (client, base, found) = (client.clone(), base.clone(), found.clone());
        each(all_ids, move |id| {
            let (client, base, found) = (client.clone(), base.clone(), found.clone());
            async move {
                let n: serde_json::Value = client
                    .get(format!("{base}/api/notifications/{id}"))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let at: Vec<i64> = n["decisions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["decision"] != "received")
                    .map(|d| d["at"].as_i64().unwrap())
                    .filter(|&at| at < opens)
                    .collect();
                found.lock().unwrap().extend(at);
            }
        })
        .await;
    }
    decisions.extend(found.lock().unwrap().iter().copied());
    let last_decision = decisions.iter().copied().max().unwrap_or(started_ms);
    let routing_s = (last_decision - started_ms).max(1) as f64 / 1000.0;
    let host_rss = proc_status(&host_pid, "VmHWM");

    // 4. Floor: the same messages straight to the emulator.
    let floor_started = Instant::now();
    let before = emulator.messages().len();
    {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            emulator.api_base(),
            emulator.account.sid
        );
        let (user, pass) = (
            emulator.account.api_key_sid.clone(),
            emulator.account.api_key_secret.clone(),
        );
        let client = client.clone();
        each((0..total).collect(), move |k| {
            let (client, url, user, pass) =
                (client.clone(), url.clone(), user.clone(), pass.clone());
            async move {
                let r = client
                    .post(&url)
                    .basic_auth(user, Some(pass))
                    .form(&[
                        ("To", phone(k % recipients)),
                        ("From", twilio::SMS_NUMBER.to_string()),
                        (
                            "Body",
                            format!("Smith wedding: [f{k}] the timeline changed"),
                        ),
                    ])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
        .await;
    }
    let floor_time = floor_started.elapsed();
    assert_eq!(emulator.messages().len() - before, total);
    host.kill().ok();
    host.wait().ok();

    immediate_latency.sort();
    lateness.sort();
    let send_rate = sent_immediately as f64 / routed.as_secs_f64();
    let floor_rate = total as f64 / floor_time.as_secs_f64();
    println!("notification router: {recipients} recipients, {total} notifications");
    println!(
        "  submission       {total} accepted in {} ({:.0}/s, 100 recipients a request)",
        fmt_duration(submit_time),
        total as f64 / submit_time.as_secs_f64()
    );
    println!(
        "  routing          {} decisions in {:.2} s: {:.0} decisions/s",
        decisions.len(),
        routing_s,
        decisions.len() as f64 / routing_s
    );
    println!(
        "  sent at once     {sent_immediately} messages in {}: {send_rate:.0}/s; submission to emulator p50 {} p99 {}",
        fmt_duration(routed),
        fmt_duration(percentile(&immediate_latency, 0.50)),
        fmt_duration(percentile(&immediate_latency, 0.99)),
    );
    println!(
        "  deferred         {} notes ({digests} digests), freed over {} s; lateness after the recipient is free: p50 {} p95 {} p99 {} max {} (target p99 <= 1 s)",
        lateness.len(),
        window.as_secs(),
        fmt_duration(percentile(&lateness, 0.50)),
        fmt_duration(percentile(&lateness, 0.95)),
        fmt_duration(percentile(&lateness, 0.99)),
        fmt_duration(lateness.last().copied().unwrap_or_default()),
    );
    println!(
        "  floor            {total} messages posted straight to the emulator in {}: {floor_rate:.0}/s; the router sends at {:.0}% of it",
        fmt_duration(floor_time),
        100.0 * send_rate / floor_rate
    );
    println!(
        "  host peak RSS    {:.1} MiB",
        host_rss as f64 / 1_048_576.0
    );
}

fn body_of(m: &twilio::AcceptedMessage) -> String {
    m.form
        .iter()
        .find(|(k, _)| k == "Body")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}
