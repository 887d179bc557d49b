//! Crash safety: the host is killed with SIGKILL at random moments while
//! signed webhooks stream in and status pushes go out, and restarted each time.
//! Afterwards every delivery that got a 2xx is in the store with its effects,
//! every delivery the sender retried (as providers do) counted once, and no
//! status was pushed twice.

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
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .connect(&format!(
            "sqlite://{}",
            host.data_dir.path().join("presence.db").display()
        ))
        .await
        .unwrap();
    for (id, event) in &acked {
        let deliveries: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE plugin = 'calendar-webhook' AND delivery_id = ?",
        )
        .bind(id)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(
            deliveries, 1,
            "delivery {id} acknowledged but not recorded once"
        );
        let signals: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM presence_signals WHERE signal_key = ?")
                .bind(format!("calendar-webhook:{event}"))
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(
            signals, 1,
            "delivery {id} acknowledged but its event {event} is missing"
        );
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
