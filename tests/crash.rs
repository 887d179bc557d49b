//! Crash safety: the host is killed with SIGKILL at random moments, and
//! restarted each time, while signed webhooks stream in and status pushes go
//! out, or while notifications are submitted and delivered. Afterwards every
//! delivery that got a 2xx is in the store with its effects, every delivery the
//! sender retried (as providers do) counted once, no status was pushed twice,
//! and every acknowledged notification reached its vendor in exactly one email.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use support::slack::SlackEmulator;
use support::*;

const USERS: [&str; 3] = ["U1", "U2", "U3"];

/// One calendar event for `user`, starting a second ago and lasting an hour
/// and `n` minutes: each ends later than the last, so each pushes a new status.
fn delivery(n: u64, user: &str) -> String {
    let now = now_s() * 1000;
    json!({"type": "event.upserted", "user": user, "event": {
        "id": format!("e-{n}"), "title": format!("Ceremony {n}"), "location": "Old Barn",
        "start": now - 1000, "end": now + 3_600_000 + n as i64 * 60_000, "time_zone": "Europe/London"}})
    .to_string()
}

/// Waits (at most 30 s) until `n` requests were acknowledged: the kills come
/// at random moments, and a slow machine may not have sent enough between them.
async fn until_acked<T>(acked: &Mutex<Vec<T>>, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn killed_five_times_under_load_nothing_acknowledged_is_lost_or_repeated() {
    let slack = SlackEmulator::start().await;
    let plugins = PluginsDir::new()
        .with_bundled("slack")
        .with_bundled("calendar-webhook")
        .with_bundled("wedding-keywords");
    let mut host = Host::start(
        plugins,
        &format!(
            "[webhooks]\ncalendar_events_per_user_per_hour = 1000000\n\
             [presence]\npush_coalesce_ms = 20\nmax_pushes_per_hour = 1000000\n[plugins.slack]\nextra_allowed_hosts = [\"{}\"]\n\
             [plugins.slack.config]\napi_base = \"{}\"\n",
            slack.allowed_host(),
            slack.base_url()
        ),
        &[("calendar-webhook.signing-secret", WHSEC.as_bytes(), true)],
    );
    let admin = host.admin.clone();
    for user in USERS {
        let token = format!("xoxp-{user}");
        slack.add_user(user, &token);
        let (status, body) = host
            .api(
                "PUT",
                &format!("/api/tenants/default/connections/slack:{user}"),
                &admin,
                Some(json!({"plugin": "slack", "user": user, "access_token": token})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // The sender: like a provider, it retries a delivery (same webhook-id)
    // until it gets a 2xx, whatever happened to the host meanwhile.
    let base = Arc::new(RwLock::new(host.url("")));
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (base, acked, stop) = (base.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let key = WHSEC.trim_start_matches("whsec_");
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let (id, user) = (format!("d-{n}"), USERS[n as usize % USERS.len()]);
                let body = delivery(n, user);
                loop {
                    let url = format!("{}/api/webhooks/calendar-webhook", base.read().unwrap());
                    let mut request = client.post(url).body(body.clone());
                    for (k, v) in standard_webhook_headers(key, &id, now_s(), &body) {
                        request = request.header(k, v);
                    }
                    match request.send().await {
                        Ok(resp) if resp.status().is_success() => {
                            acked.lock().unwrap().push((id.clone(), format!("e-{n}")));
                            break;
                        }
                        Ok(resp) => {
                            assert!(
                                resp.status().is_server_error() || resp.status() == 429,
                                "a valid delivery was refused: {}",
                                resp.status()
                            );
                        }
                        Err(_) => {}
                    }
                    if stop.load(Ordering::SeqCst) {
                        return n;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            n
        })
    };

    for round in 0..5 {
        let pause = rand::rng().random_range(300..900);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let before = acked.lock().unwrap().len();
        host.restart();
        *base.write().unwrap() = host.url("");
        eprintln!("round {round}: killed after {pause} ms with {before} deliveries acknowledged");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    until_acked(&acked, 20).await;
    stop.store(true, Ordering::SeqCst);
    let sent = sender.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "too little load to mean anything: {}",
        acked.len()
    );
    eprintln!(
        "{} of {sent} deliveries acknowledged across 5 kills",
        acked.len()
    );

    // Every acknowledged delivery is recorded, with its effect, exactly once.
    let db = host.db.pool().await;
    for (id, event) in &acked {
        assert_recorded_once(&db, id, event).await;
    }

    // The pushes drain: a push claimed by a killed process waits for its
    // claim (60 s) to lapse, then goes out. A status is never pushed twice in
    // a row, except the one in flight when the host was killed (Slack may
    // have shown it before the host could record so): at most once per kill.
    let mut repeats = 0;
    for user in USERS {
        let mut drained = false;
        for _ in 0..900 {
            let (_, presence) = host.get_json(&format!("/api/presence/{user}")).await;
            if presence["pending_pushes"]
                .as_array()
                .is_some_and(|p| p.is_empty())
            {
                drained = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            drained,
            "{user}'s status pushes did not drain: {}",
            host.get_json(&format!("/api/presence/{user}")).await.1["pending_pushes"]
        );
        let pushed: Vec<serde_json::Value> = slack
            .accepted("users.profile.set")
            .into_iter()
            .filter(|c| c.ok() && c.user.as_deref() == Some(user))
            .map(|c| c.fields["profile"].clone())
            .collect();
        assert!(!pushed.is_empty(), "{user} got no status at all");
        repeats += pushed.windows(2).filter(|pair| pair[0] == pair[1]).count();
        // The last push shows the person's presence now.
        let (_, presence) = host.get_json(&format!("/api/presence/{user}")).await;
        let last = pushed.last().unwrap();
        let shown = last["status_text"].as_str().unwrap_or_default();
        let now = presence["status_text"].as_str().unwrap_or_default();
        assert!(
            !now.is_empty() && shown.contains(now),
            "{user}: Slack shows {shown:?}, presence is {now:?}"
        );
    }
    assert!(
        repeats <= 5,
        "{repeats} statuses pushed twice in a row across 5 kills"
    );
    db.close().await;
}

/// The urgencies the notification load cycles through: general notes for a
/// busy vendor wait (and go out as digests), the others go at once or wait
/// for the vendor to be free.
const URGENCIES: [&str; 4] = ["general", "coordination", "emergency", "general"];
const VENDORS: [&str; 6] = ["v0", "v1", "v2", "v3", "v4", "v5"];

#[tokio::test]
async fn killed_five_times_while_notifying_no_acknowledged_notification_is_lost_or_sent_twice() {
    use support::email::{self, ResendEmulator};
    let resend = ResendEmulator::start().await;
    let mut host = Host::start(
        PluginsDir::new().with_bundled("email"),
        &format!(
            "[notifications]\nclaim_lease_seconds = 2\n\
             [plugins.email]\nextra_allowed_hosts = [\"{r}\"]\n\
             [plugins.email.config]\napi_base = \"{r}\"\nfrom = \"{sender}\"\n",
            r = resend.base_url(),
            sender = email::SENDER,
        ),
        &[("email.api-key", email::API_KEY.as_bytes(), false)],
    );
    let admin = host.admin.clone();
    for vendor in VENDORS {
        let (status, body) = host
            .api(
                "PUT",
                &format!("/api/users/{vendor}"),
                &admin,
                Some(json!({"channels": [{"plugin": "email", "address": format!("{vendor}@example.com")}]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Half of them are busy: what is not urgent waits for them.
    let set_busy = |host: &Host, busy: bool| {
        let (url, client, admin) = (host.url(""), host.client.clone(), admin.clone());
        async move {
            for vendor in &VENDORS[..3] {
                let path = format!("{url}/api/presence/{vendor}");
                let request = if busy {
                    client
                        .put(&path)
                        .json(&json!({"availability": "busy", "status_text": "Vows"}))
                } else {
                    client.delete(&path)
                };
                let resp = request.bearer_auth(&admin).send().await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
            }
        }
    };
    set_busy(&host, true).await;

    // The client: retries a submission (same Idempotency-Key) until it gets a 202.
    let base = Arc::new(RwLock::new(host.url("")));
    let acked = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let client_task = {
        let (base, acked, stop, admin) = (base.clone(), acked.clone(), stop.clone(), admin.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let body = json!({
                    "recipients": [VENDORS[n as usize % VENDORS.len()]],
                    "urgency": URGENCIES[n as usize % URGENCIES.len()],
                    "body": format!("[note-{n}] table plan"),
                });
                loop {
                    let url = format!("{}/api/notifications", base.read().unwrap());
                    let sent = client
                        .post(url)
                        .bearer_auth(&admin)
                        .header("idempotency-key", format!("k-{n}"))
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(resp) = sent {
                        let status = resp.status();
                        assert!(
                            status.as_u16() == 202 || status.is_server_error(),
                            "a valid submission was refused: {status}"
                        );
                        // A host killed between the status line and the body is
                        // a failed try: the same key makes the retry safe.
                        if status.as_u16() == 202
                            && let Ok(answer) = resp.json::<serde_json::Value>().await
                        {
                            let id = answer["notifications"][0]["id"]
                                .as_str()
                                .unwrap()
                                .to_string();
                            acked.lock().unwrap().push((n, id));
                            break;
                        }
                    }
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    for round in 0..5 {
        let pause = rand::rng().random_range(300..900);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        // Midway the busy vendors free up: their waiting notes go out (as
        // digests) while the host keeps being killed.
        if round == 2 {
            // Enough notes wait for them to test deferral (about a third do).
            until_acked(&acked, 18).await;
            set_busy(&host, false).await;
        }
        let before = acked.lock().unwrap().len();
        host.restart();
        *base.write().unwrap() = host.url("");
        eprintln!(
            "round {round}: killed after {pause} ms with {before} notifications acknowledged"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    until_acked(&acked, 20).await;
    stop.store(true, Ordering::SeqCst);
    client_task.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "too little load to mean anything: {}",
        acked.len()
    );

    // Every acknowledged notification is delivered: none was lost, deferred
    // ones included (claims of a killed host lapse after 2 s)...
    for (n, id) in &acked {
        let mut state = serde_json::Value::Null;
        for _ in 0..600 {
            state = host.get_json(&format!("/api/notifications/{id}")).await.1;
            if state["state"] == "delivered" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            state["state"], "delivered",
            "note-{n} was not delivered: {state}"
        );
    }
    let mut deferred = 0;
    for (_, id) in &acked {
        let state = host.get_json(&format!("/api/notifications/{id}")).await.1;
        if state["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["decision"] == "deferred")
        {
            deferred += 1;
        }
    }
    assert!(
        deferred >= 5,
        "too few notifications waited to test deferral: {deferred}"
    );
    // ...and reached its vendor in exactly one email, alone or in a digest:
    // a send cut short went again with the same Idempotency-Key, which Resend
    // answers with the first email.
    let emails = resend.emails();
    for (n, _) in &acked {
        let tag = format!("[note-{n}]");
        let carrying = emails
            .iter()
            .filter(|e| e.text.as_deref().is_some_and(|t| t.contains(&tag)))
            .count();
        assert_eq!(carrying, 1, "{tag} was in {carrying} emails");
    }
    let digests = emails
        .iter()
        .filter(|e| {
            e.text
                .as_deref()
                .is_some_and(|t| t.matches("[note-").count() > 1)
        })
        .count();
    eprintln!(
        "{} notifications acknowledged across 5 kills, {} emails, {digests} of them digests, {} replayed sends",
        acked.len(),
        emails.len(),
        resend.requests().into_iter().filter(|r| r.replayed).count()
    );
}
