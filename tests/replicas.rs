//! Scale-out: two host processes on one PostgreSQL share the work, nothing
//! lost or doubled.
//!
//! Host A and replica B (`Host::replica`: a second process on the same data
//! directory and configuration, so on the same database) run side by side.
//! The same signed webhook delivery sent to both at once is processed once
//! (one delivery row, one signal, the same presence read from either); a
//! thousand deferred notifications that come due together while both claim
//! work each reach their vendor in exactly one email, one vendor's emails
//! never sent side by side from both replicas; and when B is killed
//! (SIGKILL) in the middle of a run, A takes its work over and every
//! acknowledged notification still reaches its vendor in exactly one email.
//!
//! Replicas only mean something on PostgreSQL: without
//! `PRESENCE_TEST_POSTGRES` (the suite's SQLite pass) every test here says it
//! is skipped and passes; `cargo xtask test`'s PostgreSQL pass runs them.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use support::email::{self, ResendEmulator, SentEmail};
use support::*;

/// True (after saying so) when this run has no PostgreSQL to put replicas on.
fn skipped() -> bool {
    if support::db::postgres_server().is_none() {
        eprintln!("skipped: needs PostgreSQL (PRESENCE_TEST_POSTGRES)");
        return true;
    }
    false
}

/// An API call on any replica's base URL as `token`: the status and the JSON
/// answer (`Null` when the body is not JSON).
async fn call(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {base}{path}: {e}"));
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// How many lines of a host log say `what`.
fn log_count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

/// Replica B's log (A's is `Host::log`).
fn replica_log(host: &Host) -> String {
    std::fs::read_to_string(host.data_dir.path().join("replica.log")).unwrap_or_default()
}

/// One scalar (a count) from the host's database.
async fn scalar(db: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The notifications by state, for failure messages.
async fn states(db: &sqlx::AnyPool) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>("SELECT state, COUNT(*) FROM notifications GROUP BY state")
        .fetch_all(db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

// ---------------------------------------------------------------------------
// Webhook deliveries
// ---------------------------------------------------------------------------

const USERS: [&str; 3] = ["U1", "U2", "U3"];
const DELIVERIES: u64 = 60;

/// One calendar event for `user`, as crash.rs sends them: started a second
/// ago, lasting an hour and `n` minutes.
fn delivery(n: u64, user: &str) -> String {
    let now = now_s() * 1000;
    json!({"type": "event.upserted", "user": user, "event": {
        "id": format!("e-{n}"), "title": format!("Ceremony {n}"), "location": "Old Barn",
        "start": now - 1000, "end": now + 3_600_000 + n as i64 * 60_000, "time_zone": "Europe/London"}})
    .to_string()
}

/// Posts one signed delivery exactly as given (same id, timestamp, signature
/// and body whichever replica gets it); the status.
async fn post_signed(
    client: &reqwest::Client,
    base: &str,
    headers: &[(&'static str, String)],
    body: &str,
) -> u16 {
    let resp = client
        .post(format!("{base}/api/webhooks/calendar-webhook"))
        .headers(header_map(headers))
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {base}/api/webhooks/calendar-webhook: {e}"));
    resp.status().as_u16()
}

#[tokio::test]
async fn the_same_delivery_at_both_replicas_is_processed_once() {
    if skipped() {
        return;
    }
    let started = Instant::now();
    let host = Host::start(
        PluginsDir::new()
            .with_bundled("calendar-webhook")
            .with_bundled("wedding-keywords"),
        "[webhooks]\ncalendar_events_per_user_per_hour = 1000000\n",
        &[("calendar-webhook.signing-secret", WHSEC.as_bytes(), true)],
    );
    let replica = host.replica();
    let (a, b) = (host.url(""), replica.url(""));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let key = WHSEC.trim_start_matches("whsec_");

    // Each delivery reaches both replicas at once, byte for byte the same;
    // which of the two is asked first alternates.
    for n in 0..DELIVERIES {
        let (id, user) = (format!("d-{n}"), USERS[n as usize % USERS.len()]);
        let body = delivery(n, user);
        let headers = standard_webhook_headers(key, &id, now_s(), &body);
        let (first, second) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (s1, s2) = tokio::join!(
            post_signed(&client, first, &headers, &body),
            post_signed(&client, second, &headers, &body),
        );
        assert!(
            (200..300).contains(&s1) && (200..300).contains(&s2),
            "delivery {id} sent to both replicas was answered {s1} by {first} and {s2} by {second}"
        );
    }

    // Recorded once, with its effect once.
    let db = host.db.pool().await;
    for n in 0..DELIVERIES {
        assert_recorded_once(&db, &format!("d-{n}"), &format!("e-{n}")).await;
    }
    let total = scalar(
        &db,
        "SELECT COUNT(*) FROM webhook_deliveries WHERE plugin = 'calendar-webhook'",
    )
    .await;
    assert_eq!(total, DELIVERIES as i64, "delivery rows in all");
    // Each pair: one replica recorded it, the other found it already processed.
    let duplicates = log_count(&host.log(), "redelivery acknowledged; already processed")
        + log_count(
            &replica_log(&host),
            "redelivery acknowledged; already processed",
        );
    assert_eq!(
        duplicates, DELIVERIES as usize,
        "one of each pair of requests should be the acknowledged duplicate"
    );

    // Either replica reads the same presence, with every event of the person.
    let admin = host.admin.clone();
    for user in USERS {
        let path = format!("/api/presence/{user}");
        let (status_a, on_a) = host.get_json(&path).await;
        let (status_b, on_b) = call(&client, &b, "GET", &path, &admin, None).await;
        assert_eq!((status_a, status_b), (200, 200), "{on_a} / {on_b}");
        assert_eq!(on_a, on_b, "{user}'s presence differs between the replicas");
        let events = on_a["signals"].as_array().map_or(0, Vec::len);
        assert_eq!(
            events,
            DELIVERIES as usize / USERS.len(),
            "{user}'s signals: {on_a}"
        );
        assert_eq!(on_a["availability"], "busy", "{on_a}");
    }
    db.close().await;
    drop(replica);
    eprintln!(
        "{DELIVERIES} deliveries sent to both replicas, each processed once; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------

/// Enough that 12 sends (`HELD`), each to a different vendor, can be under
/// way at once.
const VENDORS: usize = 20;

fn vendor(i: usize) -> String {
    format!("v{i}")
}

/// A host with the bundled email plugin on the Resend emulator, claims
/// lasting `lease_seconds`, and `VENDORS` vendors with an email channel each.
async fn email_host(resend: &ResendEmulator, lease_seconds: u32) -> Host {
    let host = Host::start(
        PluginsDir::new().with_bundled("email"),
        &format!(
            "[notifications]\nclaim_lease_seconds = {lease_seconds}\n\
             [plugins.email]\nextra_allowed_hosts = [\"{r}\"]\n\
             [plugins.email.config]\napi_base = \"{r}\"\nfrom = \"{sender}\"\n",
            r = resend.base_url(),
            sender = email::SENDER,
        ),
        &[("email.api-key", email::API_KEY.as_bytes(), false)],
    );
    let admin = host.admin.clone();
    for v in 0..VENDORS {
        let (status, body) = host
            .api(
                "PUT",
                &format!("/api/users/{}", vendor(v)),
                &admin,
                Some(json!({"channels": [{"plugin": "email", "address": format!("{}@example.com", vendor(v))}]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    host
}

/// The tag a note's body starts with: unique, and no tag is part of another.
fn tag(n: usize) -> String {
    format!("[note-{n}]")
}

/// The note numbers an email carries, from the `[note-N]` tags in its text.
fn tags_in(text: &str) -> Vec<usize> {
    text.split("[note-")
        .skip(1)
        .filter_map(|rest| rest.split_once(']')?.0.parse().ok())
        .collect()
}

/// Checks that each of `notes` (note number, its vendor) is in exactly one
/// email, sent to its vendor, and that every email carries at least one of
/// them and nothing else; returns how many emails carried more than one. A
/// note in two emails fails with what the store and both logs say of it.
async fn each_note_in_exactly_one_email(
    host: &Host,
    db: &sqlx::AnyPool,
    emails: &[SentEmail],
    notes: &[(usize, String)],
) -> usize {
    let vendor_of: HashMap<usize, &str> = notes.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut carried: HashMap<usize, Vec<&SentEmail>> = HashMap::new();
    let mut digests = 0;
    for e in emails {
        let text = e.text.as_deref().unwrap_or_default();
        let tags = tags_in(text);
        assert!(
            !tags.is_empty(),
            "an email carries no note: {} {:?}",
            e.subject,
            e.text
        );
        if tags.len() > 1 {
            digests += 1;
        }
        for n in tags {
            let Some(v) = vendor_of.get(&n) else {
                panic!("an email carries {}, which was never acknowledged", tag(n));
            };
            assert_eq!(
                e.to,
                [format!("{v}@example.com")],
                "{} went to the wrong vendor",
                tag(n)
            );
            carried.entry(n).or_default().push(e);
        }
    }
    let mut doubled: Vec<usize> = notes
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| carried.get(n).map_or(0, Vec::len) > 1)
        .collect();
    doubled.sort();
    if !doubled.is_empty() {
        let mut report = String::new();
        for n in doubled.iter().take(3) {
            report += &format!("\n=== {} went out in these emails:\n", tag(*n));
            let mut leads = Vec::new();
            for e in &carried[n] {
                report += &format!(
                    "  email {} at {} key {:?} subject {:?} carrying {:?}\n",
                    e.id,
                    e.at_ms,
                    e.idempotency_key,
                    e.subject,
                    tags_in(e.text.as_deref().unwrap_or_default())
                );
                if let Some((lead, _)) =
                    e.idempotency_key.as_deref().and_then(|k| k.split_once('/'))
                {
                    leads.push(lead.to_string());
                }
            }
            let id: Option<String> =
                sqlx::query_scalar("SELECT id FROM notifications WHERE body LIKE $1")
                    .bind(format!("{} %", tag(*n)))
                    .fetch_optional(db)
                    .await
                    .unwrap();
            let mut ids: Vec<String> = id.into_iter().collect();
            ids.extend(leads);
            ids.dedup();
            for id in &ids {
                report += &describe_notification(db, id).await;
            }
            for (who, log) in [("A", host.log()), ("B", replica_log(host))] {
                for line in log
                    .lines()
                    .filter(|l| ids.iter().any(|id| l.contains(id.as_str())))
                {
                    report += &format!("  {who}: {line}\n");
                }
            }
        }
        panic!(
            "{} of {} notes went out in more than one email: {:?}{report}",
            doubled.len(),
            notes.len(),
            doubled.iter().map(|n| tag(*n)).collect::<Vec<_>>()
        );
    }
    let missing: Vec<String> = notes
        .iter()
        .filter(|(n, _)| !carried.contains_key(n))
        .map(|(n, _)| tag(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} notes are in no email: {:?}",
        missing.len(),
        notes.len(),
        &missing[..missing.len().min(20)]
    );
    digests
}

/// An attempt as a failure message shows it: its number, start, end,
/// outcome, provider message id and the notes it carried.
type AttemptRow = (
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A notification's row and attempts, for a failure message.
async fn describe_notification(db: &sqlx::AnyPool, id: &str) -> String {
    let row: Option<(String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT body, state, digest_lead, decisions FROM notifications WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
    .unwrap();
    let mut out = format!("  notification {id}: {row:?}\n");
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT attempt, started_at, finished_at, outcome, provider_message_id, carried
         FROM notification_attempts WHERE notification_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(db)
    .await
    .unwrap();
    for a in attempts {
        out += &format!("    attempt {a:?}\n");
    }
    out
}

/// Submits one note with its own Idempotency-Key; the status and the id.
async fn submit(
    client: &reqwest::Client,
    base: &str,
    admin: &str,
    n: usize,
    urgency: &str,
    recipient: &str,
) -> Result<(u16, Option<String>), reqwest::Error> {
    let resp = client
        .post(format!("{base}/api/notifications"))
        .bearer_auth(admin)
        .header("idempotency-key", format!("k-{n}"))
        .json(&json!({
            "recipients": [recipient],
            "urgency": urgency,
            "body": format!("{} for table {n}: the seating plan changed", tag(n)),
        }))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await?;
    Ok((
        status,
        answer["notifications"][0]["id"]
            .as_str()
            .map(str::to_string),
    ))
}

/// Waits (at most `limit`) until every notification in the database is
/// delivered and there are `expected` of them; panics naming what is not.
async fn wait_all_delivered(db: &sqlx::AnyPool, expected: i64, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let delivered = scalar(
            db,
            "SELECT COUNT(*) FROM notifications WHERE state = 'delivered'",
        )
        .await;
        if delivered == expected {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let pending: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT body, state, decisions FROM notifications WHERE state <> 'delivered'
                 ORDER BY created_at LIMIT 10",
            )
            .fetch_all(db)
            .await
            .unwrap();
            panic!(
                "after {limit:?} {delivered} of {expected} notifications are delivered \
                 (states: {:?}); the first not delivered: {pending:#?}",
                states(db).await
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const NOTES: usize = 1000;

#[tokio::test]
async fn a_thousand_deferred_notifications_due_at_once_are_each_delivered_once() {
    if skipped() {
        return;
    }
    let started = Instant::now();
    let resend = ResendEmulator::start().await;
    // A real API's round trip, so two sends to one vendor at once would overlap.
    resend.set_latency(Duration::from_millis(40));
    // Claims outlast any send here: a claim lapsing mid-send (on a loaded
    // machine) would let the other replica in, which this test counts.
    let host = email_host(&resend, 30).await;
    let replica = host.replica();
    let (a, b) = (host.url(""), replica.url(""));
    let admin = host.admin.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Every vendor is busy: general notes wait for them.
    for v in 0..VENDORS {
        let (status, body) = call(
            &client,
            &a,
            "PUT",
            &format!("/api/presence/{}", vendor(v)),
            &admin,
            Some(json!({"availability": "busy", "status_text": "Vows"})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    // Fifty notes per vendor, submitted through A and B in turn (each
    // vendor gets notes through both), sixteen at a time.
    let notes: Vec<(usize, String)> = (0..NOTES).map(|n| (n, vendor(n % VENDORS))).collect();
    let submitted: Vec<(usize, String, String)> = futures::stream::iter(notes.iter().cloned())
        .map(|(n, v)| {
            let (client, admin) = (&client, &admin);
            let base = if (n / VENDORS).is_multiple_of(2) {
                &a
            } else {
                &b
            };
            async move {
                let (status, id) = submit(client, base, admin, n, "general", &v)
                    .await
                    .unwrap_or_else(|e| panic!("submitting {} to {base}: {e}", tag(n)));
                assert_eq!(status, 202, "submitting {} to {base}", tag(n));
                (n, base.clone(), id.expect("a 202 names the notification"))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let submitting = started.elapsed();

    // All of them wait (whichever replica's router looked at them first).
    let db = host.db.pool().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let deferred = scalar(
            &db,
            "SELECT COUNT(*) FROM notifications WHERE state = 'deferred'",
        )
        .await;
        if deferred == NOTES as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{deferred} of {NOTES} notes deferred for busy vendors after 30 s: {:?}",
            states(&db).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        resend.emails().len(),
        0,
        "nothing goes out while every vendor is busy"
    );
    for (n, via, id) in submitted.iter().step_by(97) {
        for base in [&a, &b] {
            let (status, note) = call(
                &client,
                base,
                "GET",
                &format!("/api/notifications/{id}"),
                &admin,
                None,
            )
            .await;
            assert_eq!(status, 200, "{note}");
            assert_eq!(
                note["state"],
                "deferred",
                "{} (submitted to {via}) read on {base}: {note}",
                tag(*n)
            );
            let reason = note["decisions"]
                .as_array()
                .and_then(|d| d.last())
                .map_or(String::new(), |d| d["reason"].to_string());
            assert!(reason.contains("busy"), "{note}");
        }
    }

    // Everyone is free at once: half through A, half through B.
    let freed = Instant::now();
    let frees = (0..VENDORS).map(|v| {
        let base = if v < VENDORS / 2 { &a } else { &b };
        let (client, admin) = (&client, &admin);
        async move {
            let (status, body) = call(
                client,
                base,
                "DELETE",
                &format!("/api/presence/{}", vendor(v)),
                admin,
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    });
    futures::future::join_all(frees).await;

    let took = wait_all_delivered(&db, NOTES as i64, Duration::from_secs(90)).await;
    // Anything sent twice would have gone out by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let emails = resend.emails();
    let digests = each_note_in_exactly_one_email(&host, &db, &emails, &notes).await;
    let mut keys: Vec<_> = emails.iter().map(|e| e.idempotency_key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        emails.len(),
        "two emails were sent under one idempotency key"
    );
    for (n, _, id) in submitted.iter().step_by(97) {
        let (_, note) = call(
            &client,
            &b,
            "GET",
            &format!("/api/notifications/{id}"),
            &admin,
            None,
        )
        .await;
        assert_eq!(note["state"], "delivered", "{}: {note}", tag(*n));
    }

    // One vendor's notes are handled by one replica at a time: what is due
    // together leaves as digests, one after another, never side by side.
    assert_eq!(
        resend.peak_sends_to_one_recipient(),
        1,
        "two sends to one vendor were under way at once"
    );

    let requests = resend.requests();
    let conflicts = requests
        .iter()
        .filter(|r| r.error.as_deref() == Some("invalid_idempotent_request"))
        .count();
    let (by_a, by_b) = (
        log_count(&host.log(), "notification delivered"),
        log_count(&replica_log(&host), "notification delivered"),
    );
    eprintln!(
        "{NOTES} notes submitted in {:.1} s, delivered {:.1} s after the vendors were free \
         (waited {:.1} s): {} emails, {digests} of them digests; sends by A {by_a}, by B {by_b}; \
         {} replayed and {conflicts} conflicting requests to Resend; {:.1} s in all",
        submitting.as_secs_f64(),
        freed.elapsed().as_secs_f64(),
        took.as_secs_f64(),
        emails.len(),
        requests.iter().filter(|r| r.replayed).count(),
        started.elapsed().as_secs_f64(),
    );
    db.close().await;
    drop(replica);
}

const KILL_RUN_NOTES: usize = 300;
/// Resend starts holding its answers once B has acknowledged this many.
const HOLD_AFTER: usize = 40;
/// Sends Resend accepts and then leaves unanswered until B is killed. A
/// replica's router has at most 8 sends under way (one per recipient task,
/// its `CONCURRENT_RECIPIENTS`), so with 12 held at once (to 12 vendors: one
/// vendor's sends never overlap) B holds at least 4: B dies with at least 4
/// emails out that it never heard back about.
const HELD: usize = 12;
const MOST_SENDS_PER_REPLICA: usize = 8;

#[tokio::test]
async fn a_replica_killed_mid_run_leaves_its_work_to_the_other() {
    if skipped() {
        return;
    }
    let started = Instant::now();
    let resend = ResendEmulator::start().await;
    // Claims lasting 2 s (as crash.rs's notification test): A takes B's over soon.
    let host = email_host(&resend, 2).await;
    let replica = host.replica();
    let (a, b) = (host.url(""), replica.url(""));
    let admin = host.admin.clone();

    // The client: submits through B until B is gone, then through A; like a
    // real client it retries a note (same Idempotency-Key) until it gets a
    // 202. Vendors are free: coordination notes go out at once, general ones
    // too (together, when several wait for one vendor).
    let acked = Arc::new(Mutex::new(Vec::<(usize, String, String)>::new()));
    let b_gone = Arc::new(AtomicBool::new(false));
    let client_task = {
        let (acked, b_gone, a, b, admin) = (
            acked.clone(),
            b_gone.clone(),
            a.clone(),
            b.clone(),
            admin.clone(),
        );
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            for n in 0..KILL_RUN_NOTES {
                let urgency = if n % 3 == 0 {
                    "general"
                } else {
                    "coordination"
                };
                let mut tries = 0;
                loop {
                    tries += 1;
                    assert!(tries <= 100, "{} was never acknowledged", tag(n));
                    let to_b = !b_gone.load(Ordering::SeqCst);
                    let base = if to_b { &b } else { &a };
                    match submit(&client, base, &admin, n, urgency, &vendor(n % VENDORS)).await {
                        Ok((202, Some(id))) => {
                            acked.lock().unwrap().push((n, base.clone(), id));
                            break;
                        }
                        Ok((status, _)) => assert!(
                            status >= 500,
                            "a valid submission of {} was refused by {base}: {status}",
                            tag(n)
                        ),
                        // B was killed under this request: A takes it (and the rest).
                        Err(_) if to_b => b_gone.store(true, Ordering::SeqCst),
                        Err(e) => eprintln!("{} to {base}: {e}; trying again", tag(n)),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };

    // Once B has taken some of the notes, Resend accepts the next sends and
    // withholds its answers; when twelve are held (so at least four are B's),
    // B is killed (SIGKILL): its emails went out, and it never recorded so.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < HOLD_AFTER {
        assert!(
            Instant::now() < deadline,
            "B acknowledged only {} notes in 30 s",
            acked.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    resend.hold_next_after_accepting(HELD);
    resend.wait_until_held(HELD).await;
    let emails_at_kill = resend.emails().len();
    drop(replica);
    b_gone.store(true, Ordering::SeqCst);
    let at_kill = acked.lock().unwrap().len();
    let sent_by_b = log_count(&replica_log(&host), "notification delivered");
    // B's held requests lost their client; A's go on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held_by_a = resend.held();
    resend.release_held();

    tokio::time::timeout(Duration::from_secs(60), client_task)
        .await
        .expect("the client submitted every note within 60 s")
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), KILL_RUN_NOTES);
    let through_b = acked.iter().filter(|(_, via, _)| *via == b).count();

    // Each note was stored once, whichever replica took it or its retry...
    let db = host.db.pool().await;
    let stored = scalar(&db, "SELECT COUNT(*) FROM notifications").await;
    assert_eq!(
        stored, KILL_RUN_NOTES as i64,
        "notifications stored for {KILL_RUN_NOTES} notes"
    );
    let mut ids: Vec<&String> = acked.iter().map(|(_, _, id)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), KILL_RUN_NOTES, "two notes got the same id");

    // ...is delivered (claims B held run out after 2 s, and A takes them)...
    let took = wait_all_delivered(&db, KILL_RUN_NOTES as i64, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...and reached its vendor in exactly one email: a send B had under way
    // goes again from A with the same Idempotency-Key, which Resend answers
    // with the first email.
    let notes: Vec<(usize, String)> = acked
        .iter()
        .map(|(n, _, _)| (*n, vendor(n % VENDORS)))
        .collect();
    let emails = resend.emails();
    let digests = each_note_in_exactly_one_email(&host, &db, &emails, &notes).await;

    // The emails B sent without hearing back were sent again by A, with the
    // same key, and answered from Resend's record of the first.
    let replayed = resend.requests().into_iter().filter(|r| r.replayed).count();
    assert!(
        replayed >= HELD - MOST_SENDS_PER_REPLICA,
        "B was killed with at least {} sends unanswered, but only {replayed} sends were \
         answered from Resend's idempotency record",
        HELD - MOST_SENDS_PER_REPLICA
    );
    let interrupted = scalar(
        &db,
        "SELECT COUNT(*) FROM notification_attempts WHERE outcome = 'interrupted'",
    )
    .await;
    let open = scalar(
        &db,
        "SELECT COUNT(*) FROM notification_attempts WHERE outcome IS NULL",
    )
    .await;
    eprintln!(
        "B acknowledged {through_b} of {KILL_RUN_NOTES} notes and was killed at {at_kill} \
         with {HELD} sends held ({} of them A's), {emails_at_kill} emails out and {sent_by_b} \
         sends logged by B; all delivered {:.1} s after the last submission: {} emails, \
         {digests} digests, {replayed} replayed requests to Resend, {interrupted} interrupted \
         and {open} open attempts; {:.1} s in all",
        held_by_a,
        took.as_secs_f64(),
        emails.len(),
        started.elapsed().as_secs_f64(),
    );
    db.close().await;
}

/// A send that outlasts its claim keeps it: the claim is renewed while the
/// send is under way, so the other replica, which looks again as soon as the
/// claim would have run out, neither takes the note over nor sends it again.
#[tokio::test]
async fn a_send_outlasting_its_claim_is_not_taken_over_by_the_other_replica() {
    if skipped() {
        return;
    }
    let resend = ResendEmulator::start().await;
    // 1 s claims; the email plugin's request may take 4.5 s.
    let host = email_host(&resend, 1).await;
    let replica = host.replica();
    let client = reqwest::Client::new();
    resend.hold_next_before_accepting(1);
    let (status, _) = submit(
        &client,
        &host.url(""),
        &host.admin,
        0,
        "coordination",
        &vendor(0),
    )
    .await
    .unwrap();
    assert_eq!(status, 202);
    resend.wait_until_held(1).await;
    // Three leases pass with the send (by whichever replica took the note) held at Resend.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert!(
        resend.emails().is_empty(),
        "the note was sent again while its first send was under way: {:?}",
        resend.emails()
    );
    let db = host.db.pool().await;
    resend.release_held();
    wait_all_delivered(&db, 1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    each_note_in_exactly_one_email(&host, &db, &resend.emails(), &[(0, vendor(0))]).await;
    assert_eq!(resend.requests().len(), 1, "{:?}", resend.requests());
    db.close().await;
    drop(replica);
}
