//! End to end: the presence engine in the real host. Manual overrides, the
//! scheduler applying transitions on time (and after a restart), the SSE stream
//! with `Last-Event-ID`, and the bound on calls whose end never arrives.

mod support;

use std::time::Duration;

use support::sse::SseClient;
use support::*;

const ADMIN: &str = OPERATOR_TOKEN;

fn start() -> Host {
    start_with("[presence]\nmax_call_minutes = 30\n")
}

fn start_with(config: &str) -> Host {
    let plugins = PluginsDir::new()
        .with_bundled("calendar-webhook")
        .with_bundled("zoom")
        .with_bundled("wedding-keywords");
    Host::start(
        plugins,
        &format!("admin_token = \"{ADMIN}\"\n{config}"),
        &[
            ("calendar-webhook.signing-secret", WHSEC.as_bytes(), true),
            ("zoom.secret-token", ZOOM_SECRET, false),
        ],
    )
}

async fn put_manual(
    host: &Host,
    user: &str,
    body: serde_json::Value,
    token: &str,
) -> (u16, String) {
    let resp = host
        .client
        .put(host.url(&format!("/api/presence/{user}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A ceremony on the calendar for `user`, from a second ago for an hour.
async fn ceremony(host: &Host, user: &str) -> i64 {
    let now = now_s() * 1000;
    let end = now + 3_600_000;
    let body = calendar_delivery(
        "event.upserted",
        user,
        "Ceremony",
        "Old Barn",
        now - 1000,
        end,
    );
    assert_eq!(
        post_calendar(host, &format!("cal-{user}"), &body).await,
        200
    );
    end
}

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn manual_presence_wins_until_it_expires_and_the_scheduler_restores_the_calendar() {
    let host = start();
    let mut stream = SseClient::connect(&host.url("/api/presence/stream?users=alice"), None).await;

    let end = ceremony(&host, "alice").await;
    let first = stream
        .next_of("presence", WAIT)
        .await
        .expect("calendar change");
    let change = first.json();
    assert_eq!(change["user"], "alice");
    assert_eq!(change["presence"]["source"], "calendar");
    assert_eq!(
        change["presence"]["status_text"],
        "📸 Ceremony prep - Old Barn"
    );

    // Writes need the admin token, and a refused write changes nothing.
    let before = host.digest().await;
    let dnd = |expires_at: i64| serde_json::json!({"availability": "do_not_disturb", "status_text": "Vows", "expires_at": expires_at});
    assert_eq!(
        put_manual(&host, "alice", dnd(now_s() * 1000 + 60_000), "wrong")
            .await
            .0,
        401
    );
    let bad = serde_json::json!({"availability": "sleepy"});
    assert_eq!(put_manual(&host, "alice", bad, ADMIN).await.0, 400);
    assert_eq!(host.digest().await, before);

    // At least 4 s on (`now_s` is whole seconds): time for the PUT and the reads below.
    let expires = now_s() * 1000 + 5000;
    let (status, text) = put_manual(&host, "alice", dnd(expires), ADMIN).await;
    assert_eq!(status, 200, "{text}");
    let manual = stream
        .next_of("presence", WAIT)
        .await
        .expect("manual change");
    assert_eq!(manual.json()["presence"]["source"], "manual");
    assert_eq!(manual.json()["presence"]["availability"], "do_not_disturb");
    let (_, view) = host.get_json("/api/presence/alice").await;
    assert_eq!(view["source"], "manual");
    assert_eq!(view["next_change_at"], expires);

    // Nobody asks again: the scheduler applies the expiry on time by itself.
    let restored = stream
        .next_of("presence", WAIT)
        .await
        .expect("expiry applied");
    assert_eq!(restored.json()["presence"]["source"], "calendar");
    assert_eq!(restored.json()["presence"]["until"], end);
    assert!(
        restored.id.unwrap().parse::<i64>().unwrap() > manual.id.unwrap().parse::<i64>().unwrap()
    );

    // DELETE clears a manual override at once.
    put_manual(
        &host,
        "alice",
        serde_json::json!({"availability": "away"}),
        ADMIN,
    )
    .await;
    assert_eq!(
        stream.next_of("presence", WAIT).await.unwrap().json()["presence"]["availability"],
        "away"
    );
    let resp = host
        .client
        .delete(host.url("/api/presence/alice"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        stream.next_of("presence", WAIT).await.unwrap().json()["presence"]["source"],
        "calendar"
    );
}

#[tokio::test]
async fn a_transition_due_while_the_host_was_down_is_applied_after_restart_and_resumed_streams_miss_nothing()
 {
    let mut host = start();
    ceremony(&host, "bob").await;
    let away = serde_json::json!({"availability": "away", "expires_at": now_s() * 1000 + 3000});
    assert_eq!(put_manual(&host, "bob", away, ADMIN).await.0, 200);
    let mut stream =
        SseClient::connect(&host.url("/api/presence/stream?users=bob"), Some("0")).await;
    let calendar = stream.next_of("presence", WAIT).await.unwrap();
    let manual = stream.next_of("presence", WAIT).await.unwrap();
    assert_eq!(calendar.json()["presence"]["source"], "calendar");
    assert_eq!(manual.json()["presence"]["source"], "manual");
    drop(stream);

    // Killed before the override expires; back after it did.
    host.restart();
    let mut resumed = SseClient::connect(
        &host.url("/api/presence/stream?users=bob"),
        Some(manual.id.as_deref().unwrap()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let next = resumed
        .next_of("presence", WAIT)
        .await
        .expect("transition after restart");
    assert_eq!(next.json()["presence"]["source"], "calendar");
    assert!(next.id.unwrap().parse::<i64>().unwrap() > manual.id.unwrap().parse::<i64>().unwrap());
    // Exactly once: nothing else follows.
    assert!(
        resumed
            .next_of("presence", Duration::from_secs(2))
            .await
            .is_none()
    );

    // A stream resumed from the beginning replays the same history, in order.
    let mut replay =
        SseClient::connect(&host.url("/api/presence/stream?users=bob"), Some("0")).await;
    let mut sources = Vec::new();
    while let Some(e) = replay.next_of("presence", Duration::from_secs(2)).await {
        sources.push(e.json()["presence"]["source"].as_str().unwrap().to_string());
    }
    assert_eq!(sources, ["calendar", "manual", "calendar"]);
}

#[tokio::test]
async fn a_call_whose_end_never_arrives_is_bounded_and_streams_are_filtered_by_tenant_and_user() {
    let host = start_with("[presence]\nmax_call_minutes = 30\n[tenants.agency-b]\n");
    let mut carol_only =
        SseClient::connect(&host.url("/api/presence/stream?users=carol"), None).await;
    let mut other_tenant =
        SseClient::connect(&host.url("/api/presence/stream?tenant=agency-b"), None).await;
    ceremony(&host, "dave").await;
    let started = format!(
        r#"{{"event":"meeting.started","event_ts":{},"payload":{{"account_id":"A","object":{{"uuid":"m-9","id":"99","host_id":"carol","topic":"Tasting"}}}}}}"#,
        now_s() * 1000
    );
    let (status, text) = host
        .post(
            "/api/webhooks/zoom",
            &zoom_headers(&started),
            started.clone(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let call = carol_only
        .next_of("presence", WAIT)
        .await
        .expect("carol's call");
    assert_eq!(
        call.json()["user"],
        "carol",
        "dave's change is filtered out"
    );
    let until = call.json()["presence"]["until"]
        .as_i64()
        .expect("a call has an end");
    let bound = now_s() * 1000 + 30 * 60_000;
    assert!(
        until <= bound + 1000,
        "call bounded by max_call_minutes: {until} vs {bound}"
    );
    assert!(
        other_tenant
            .next_of("presence", Duration::from_millis(500))
            .await
            .is_none()
    );

    // Bad stream requests are refused clearly.
    let resp = host
        .client
        .get(host.url("/api/presence/stream"))
        .bearer_auth(ADMIN)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = host
        .client
        .get(host.url("/api/presence/stream"))
        .bearer_auth(ADMIN)
        .header("x-presence-tenant", "not a tenant")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

// --- status pushes to Slack, against the Slack emulator -------------------------

mod slack_push {
    use super::*;
    use support::slack::{SIGNING_SECRET, SlackEmulator, SlackStatus};

    const PROFILE_SET: &str = "users.profile.set";

    async fn start_with_slack(presence: &str) -> (Host, SlackEmulator) {
        let slack = SlackEmulator::start().await;
        slack.add_user("U1", "xoxp-u1");
        let plugins = PluginsDir::new()
            .with_bundled("slack")
            .with_bundled("calendar-webhook")
            .with_bundled("wedding-keywords");
        let config = format!(
            "admin_token = \"{ADMIN}\"\n[presence]\n{presence}\n[plugins.slack]\nextra_allowed_hosts = [\"{}\"]\n[plugins.slack.config]\napi_base = \"{}\"\n",
            slack.allowed_host(),
            slack.base_url()
        );
        let host = Host::start(
            plugins,
            &config,
            &[
                ("slack.signing-secret", SIGNING_SECRET, false),
                ("calendar-webhook.signing-secret", WHSEC.as_bytes(), true),
            ],
        );
        slack.send_events_to(&host.url("/api/webhooks/slack"), SIGNING_SECRET);
        let resp = host
            .client
            .put(host.url("/api/tenants/default/connections/slack:U1"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"plugin": "slack", "user": "U1", "access_token": "xoxp-u1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        (host, slack)
    }

    /// Polls `done` until it holds, up to 15 s.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..150 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn pushed_texts(slack: &SlackEmulator) -> Vec<String> {
        slack
            .accepted(PROFILE_SET)
            .iter()
            .map(|c| {
                c.fields["profile"]["status_text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    #[tokio::test]
    async fn slack_shows_the_wedding_status_without_echo_and_gets_the_persons_own_back_after() {
        let (host, slack) = start_with_slack("").await;
        let own = SlackStatus::new("Editing the Hendersons' album", ":frame_with_picture:", 0);
        let deliveries = slack.person_sets_status("U1", own.clone()).await;
        assert!(deliveries.iter().any(|d| d.delivered()));
        let (_, view) = host.get_json("/api/presence/U1").await;
        assert_eq!(view["source"], "provider_status");
        // Their own status is already showing in Slack: nothing is pushed over it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(pushed_texts(&slack), Vec::<String>::new());

        // A ceremony on the calendar: Slack shows it, with its end in the person's zone.
        let resp = host
            .client
            .put(host.url("/api/users/U1"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"time_zone": "Europe/Lisbon"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let end = ceremony(&host, "U1").await;
        eventually("the ceremony status push", || {
            pushed_texts(&slack).len() == 1
        })
        .await;
        // Rendered against the moment of the push: "16:00" today, "Thu 00:07" past midnight.
        let expected_until =
            presence_host::presence::render::local_time(end, Some("Europe/Lisbon"), now_s() * 1000);
        assert_eq!(
            pushed_texts(&slack),
            [format!(
                "📸 Ceremony prep - Old Barn until {expected_until}"
            )]
        );
        let call = &slack.accepted(PROFILE_SET)[0];
        assert_eq!(call.token.as_deref(), Some("xoxp-u1"));
        assert_eq!(call.fields["profile"]["status_expiration"], end / 1000);

        // Slack announces the change as user_change: our own echo, not a new status.
        slack.flush().await;
        assert!(slack.deliveries().iter().filter(|d| d.delivered()).count() >= 2);
        let (_, view) = host.get_json("/api/presence/U1").await;
        let own_signal = view["signals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["signal"]["source"] == "provider_status")
            .expect("the person's own status is still known")
            .clone();
        assert_eq!(own_signal["signal"]["status_text"], own.text);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(pushed_texts(&slack).len(), 1, "the echo bounced back out");

        // The ceremony is cancelled: what the person had before comes back.
        let cancelled =
            serde_json::json!({"type": "event.deleted", "user": "U1", "event": {"id": "evt-42"}})
                .to_string();
        assert_eq!(post_calendar(&host, "cal-U1-cancel", &cancelled).await, 200);
        eventually("the restoring push", || pushed_texts(&slack).len() == 2).await;
        assert_eq!(slack.status("U1").unwrap().text, own.text);
        assert_eq!(slack.status("U1").unwrap().emoji, own.emoji);
        slack.flush().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(pushed_texts(&slack).len(), 2);
        assert_eq!(
            host.get_json("/api/presence/U1").await.1["source"],
            "provider_status"
        );
    }

    #[tokio::test]
    async fn a_burst_of_changes_goes_out_coalesced_and_ends_on_the_current_state() {
        let (host, slack) = start_with_slack("max_pushes_per_hour = 100").await;
        for i in 0..150 {
            let body = serde_json::json!({"availability": "busy", "status_text": format!("Timeline check {i}")});
            assert_eq!(put_manual(&host, "U1", body, ADMIN).await.0, 200);
        }
        eventually("the last state to reach Slack", || {
            slack
                .status("U1")
                .is_some_and(|s| s.text == "Timeline check 149")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let texts = pushed_texts(&slack);
        assert!(texts.len() <= 100, "{} pushes for 150 changes", texts.len());
        assert_eq!(texts.last().unwrap(), "Timeline check 149");
        // Nothing stale after a newer state: pushes went out in order.
        let numbers: Vec<u32> = texts
            .iter()
            .map(|t| t.trim_start_matches("Timeline check ").parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    }

    #[tokio::test]
    async fn the_hourly_budget_holds_the_latest_state_back_and_says_why() {
        let (host, slack) = start_with_slack("max_pushes_per_hour = 3\npush_coalesce_ms = 0").await;
        for i in 0..5 {
            let body =
                serde_json::json!({"availability": "busy", "status_text": format!("Step {i}")});
            assert_eq!(put_manual(&host, "U1", body, ADMIN).await.0, 200);
            if i < 3 {
                eventually("each push", || pushed_texts(&slack).len() == i + 1).await;
            }
        }
        // The outbox looks at the latest state on its own time, and holds it back.
        let mut view = serde_json::Value::Null;
        for _ in 0..150 {
            view = host.get_json("/api/presence/U1").await.1;
            if view["pending_pushes"][0]["last_error"].is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(pushed_texts(&slack), ["Step 0", "Step 1", "Step 2"]);
        let pending = &view["pending_pushes"][0];
        assert_eq!(pending["connection"], "slack:U1");
        assert_eq!(pending["last_error"], "hourly push budget spent");
        assert!(pending["due_at"].as_i64().unwrap() > now_s() * 1000 + 3_000_000);
    }

    #[tokio::test]
    async fn a_rate_limited_push_is_retried_when_slack_says() {
        let (host, slack) = start_with_slack("push_coalesce_ms = 0").await;
        slack.rate_limit(PROFILE_SET, 0, Duration::from_secs(1));
        let body = serde_json::json!({"availability": "away", "status_text": "Venue walk-through"});
        assert_eq!(put_manual(&host, "U1", body, ADMIN).await.0, 200);
        eventually("a refused attempt", || !slack.calls().is_empty()).await;
        // The refusal is recorded on the pending push, with Slack's own words.
        let mut last_error = serde_json::Value::Null;
        for _ in 0..50 {
            let (_, view) = host.get_json("/api/presence/U1").await;
            last_error = view["pending_pushes"][0]["last_error"].clone();
            if !last_error.is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            last_error.as_str().unwrap_or("").contains("429"),
            "{last_error}"
        );
        assert!(slack.accepted(PROFILE_SET).is_empty());
        slack.clear_rate_limit(PROFILE_SET);
        eventually("the retried push", || {
            slack
                .status("U1")
                .is_some_and(|s| s.text == "Venue walk-through")
        })
        .await;
    }
}

// --- presence webhooks to tenants' own systems ------------------------------------

mod presence_webhooks {
    /// The listed endpoint with `id`.
    fn endpoint<'a>(
        listed: &'a serde_json::Value,
        id: &serde_json::Value,
    ) -> &'a serde_json::Value {
        listed["endpoints"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["id"] == *id))
            .unwrap_or(&serde_json::Value::Null)
    }

    use super::*;
    use std::sync::{Arc, Mutex};

    /// A tenant's endpoint: records what it receives; answers 500 to the first
    /// `fail_first` deliveries, then 200.
    #[derive(Clone, Default)]
    struct Receiver {
        received: Arc<Mutex<Vec<(reqwest::header::HeaderMap, String)>>>,
        fail_first: Arc<Mutex<usize>>,
    }

    async fn receiver(fail_first: usize) -> (String, Receiver) {
        let r = Receiver::default();
        *r.fail_first.lock().unwrap() = fail_first;
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let mut headers_out = reqwest::header::HeaderMap::new();
                    for (k, v) in headers.iter() {
                        headers_out.insert(
                            reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
                            reqwest::header::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
                        );
                    }
                    state.received.lock().unwrap().push((headers_out, body));
                    let mut fail = state.fail_first.lock().unwrap();
                    if *fail > 0 {
                        *fail -= 1;
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, r)
    }

    async fn register(host: &Host, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = host
            .client
            .post(host.url("/api/tenants/default/presence-webhooks"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// Verifies a delivery as a receiver following the Standard Webhooks spec would.
    fn verify(secret: &str, headers: &reqwest::header::HeaderMap, body: &str) -> bool {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .unwrap();
        let id = headers["webhook-id"].to_str().unwrap();
        let ts = headers["webhook-timestamp"].to_str().unwrap();
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&key).unwrap();
        hmac::Mac::update(&mut mac, format!("{id}.{ts}.{body}").as_bytes());
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(hmac::Mac::finalize(mac).into_bytes())
        );
        let fresh = (now_s() - ts.parse::<i64>().unwrap()).abs() < 300;
        fresh
            && headers["webhook-signature"]
                .to_str()
                .unwrap()
                .split(' ')
                .any(|s| s == expected)
    }

    #[tokio::test]
    async fn changes_reach_tenants_endpoints_signed_retried_and_failing_ones_are_disabled() {
        let host = start_with(
            "[presence]\nwebhook_retry_schedule_ms = [200, 200]\nwebhook_disable_after_s = 0\n",
        );
        let (good_url, good) = receiver(1).await;
        let (bad_url, bad) = receiver(usize::MAX).await;

        assert_eq!(
            register(&host, serde_json::json!({"url": "ftp://x"}))
                .await
                .0,
            400
        );
        let resp = host
            .client
            .post(host.url("/api/tenants/default/presence-webhooks"))
            .json(&serde_json::json!({"url": good_url}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let (status, good_ep) = register(
            &host,
            serde_json::json!({"url": good_url, "users": ["erin"]}),
        )
        .await;
        assert_eq!(status, 201, "{good_ep}");
        let (_, bad_ep) = register(&host, serde_json::json!({"url": bad_url})).await;
        let secret = good_ep["secret"].as_str().unwrap();
        assert!(secret.starts_with("whsec_"));

        let body = serde_json::json!({"availability": "busy", "status_text": "Cake tasting"});
        assert_eq!(put_manual(&host, "erin", body, ADMIN).await.0, 200);
        let other = serde_json::json!({"availability": "away"});
        assert_eq!(put_manual(&host, "frank", other, ADMIN).await.0, 200);

        // The good endpoint: first attempt answered 500, the retry delivered, with the same id.
        for _ in 0..100 {
            if good.received.lock().unwrap().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let received = good.received.lock().unwrap().clone();
        assert_eq!(
            received.len(),
            2,
            "one failure, one retry; frank's change filtered out"
        );
        let (headers, body) = &received[1];
        assert!(verify(secret, headers, body), "signature does not verify");
        assert_eq!(received[0].0["webhook-id"], headers["webhook-id"]);
        let message: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(message["type"], "presence.changed");
        assert_eq!(message["data"]["user"], "erin");
        assert_eq!(message["data"]["presence"]["status_text"], "Cake tasting");

        // The failing endpoint: tried once plus the two retries for each change, then disabled.
        let mut listed = serde_json::Value::Null;
        for _ in 0..100 {
            let resp = host
                .client
                .get(host.url("/api/tenants/default/presence-webhooks"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            listed = resp.json().await.unwrap();
            if endpoint(&listed, &bad_ep["id"])["enabled"] == false {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Two endpoints made in the same millisecond list in id order: found by id.
        let failing = endpoint(&listed, &bad_ep["id"]);
        assert_eq!(failing["id"], bad_ep["id"]);
        assert_eq!(failing["enabled"], false, "{listed}");
        assert!(
            failing["disabled_reason"]
                .as_str()
                .unwrap()
                .contains("HTTP 500")
        );
        let working = endpoint(&listed, &good_ep["id"]);
        assert_eq!(working["enabled"], true);
        assert!(working["last_success_at"].is_i64());
        tokio::time::sleep(Duration::from_millis(600)).await;
        let attempts = bad.received.lock().unwrap().len();
        assert!((3..=6).contains(&attempts), "{attempts} attempts");
        // Disabled means no more traffic.
        let body = serde_json::json!({"availability": "busy"});
        assert_eq!(put_manual(&host, "erin", body, ADMIN).await.0, 200);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(bad.received.lock().unwrap().len(), attempts);
        assert!(host.log().contains("presence webhook endpoint disabled"));
    }
}

#[tokio::test]
async fn working_hours_are_the_lowest_source_in_the_persons_own_zone() {
    let host = start();
    let put_user = |body: serde_json::Value| {
        let req = host
            .client
            .put(host.url("/api/users/gina"))
            .bearer_auth(ADMIN)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let bad = serde_json::json!({"time_zone": "Europe/Lisbon", "working_hours": {"mon": ["18:00", "09:00"]}});
    let (status, text) = put_user(bad).await;
    assert_eq!(status, 400);
    assert!(text.contains("not before"), "{text}");
    assert_eq!(
        put_user(serde_json::json!({"time_zone": "Mars/Olympus"}))
            .await
            .0,
        400
    );

    // Hours that start two hours from now (UTC), every day: now is outside them.
    let hour = (now_s() / 3600 % 24 + 2) % 24;
    let (start, end) = (format!("{hour:02}:00"), format!("{hour:02}:59"));
    let days: serde_json::Map<String, serde_json::Value> =
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .map(|d| (d.to_string(), serde_json::json!([start, end])))
            .collect();
    let (status, text) =
        put_user(serde_json::json!({"time_zone": "UTC", "working_hours": days})).await;
    assert_eq!(status, 200, "{text}");
    let (_, view) = host.get_json("/api/presence/gina").await;
    assert_eq!(view["source"], "working_hours");
    assert_eq!(view["availability"], "away");
    assert_eq!(view["status_text"], "Outside working hours");
    let until = view["until"].as_i64().unwrap();
    let expected = (now_s() / 3600 + 2) * 3_600_000;
    assert_eq!(until, expected, "away until the hours start");
    assert_eq!(view["next_change_at"], until);

    // Anything else outranks them.
    ceremony(&host, "gina").await;
    assert_eq!(
        host.get_json("/api/presence/gina").await.1["source"],
        "calendar"
    );
}

/// Scale-out: a change made through one replica reaches streams opened on
/// another, at once (PostgreSQL's LISTEN/NOTIFY; there is no polling behind
/// a stream), in both directions.
#[tokio::test]
async fn a_change_made_on_one_replica_reaches_streams_on_the_other() {
    if support::db::postgres_server().is_none() {
        eprintln!("skipped: needs PostgreSQL ({})", support::db::POSTGRES_ENV);
        return;
    }
    let soon = Duration::from_secs(5);
    let host = start();
    let replica = host.replica();
    let mut on_b = SseClient::connect(&replica.url("/api/presence/stream?users=erin"), None).await;
    let mut on_a = SseClient::connect(&host.url("/api/presence/stream?users=erin"), None).await;

    // Through A: the ceremony reaches B's stream.
    ceremony(&host, "erin").await;
    let seen = on_b
        .next_of("presence", soon)
        .await
        .expect("A's change on B's stream");
    assert_eq!(seen.json()["user"], "erin");
    assert_eq!(seen.json()["presence"]["availability"], "busy");
    let first = on_a
        .next_of("presence", soon)
        .await
        .expect("on A's own stream");
    assert_eq!(
        first.id, seen.id,
        "one change, one event id on both replicas"
    );

    // Through B: a manual presence reaches A's stream.
    let resp = host
        .client
        .put(replica.url("/api/presence/erin"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"availability": "do_not_disturb", "status_text": "Speeches"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = on_a
        .next_of("presence", soon)
        .await
        .expect("B's change on A's stream");
    assert_eq!(seen.json()["presence"]["status_text"], "Speeches");
    let on_b_too = on_b
        .next_of("presence", soon)
        .await
        .expect("on B's own stream");
    assert_eq!(on_b_too.id, seen.id);
}
