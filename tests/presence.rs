//! End to end: the presence engine in the real host. Manual overrides, the
//! scheduler applying transitions on time (and after a restart), the SSE stream
//! with `Last-Event-ID`, and the bound on calls whose end never arrives.

mod support;

use std::time::Duration;

use support::sse::SseClient;
use support::*;

const ADMIN: &str = "presence-admin-token-for-tests";

fn start() -> Host {
    let plugins = PluginsDir::new()
        .with_bundled("calendar-webhook")
        .with_bundled("zoom")
        .with_bundled("wedding-keywords");
    Host::start(
        plugins,
        &format!("admin_token = \"{ADMIN}\"\n[presence]\nmax_call_minutes = 30\n"),
        &[
            ("calendar-webhook.signing-secret", WHSEC.as_bytes(), true),
            ("zoom.secret-token", ZOOM_SECRET, false),
        ],
    )
}

async fn put_manual(host: &Host, user: &str, body: serde_json::Value, token: &str) -> (u16, String) {
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
    let body = calendar_delivery("event.upserted", user, "Ceremony", "Old Barn", now - 1000, end);
    assert_eq!(post_calendar(host, &format!("cal-{user}"), &body).await, 200);
    end
}

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn manual_presence_wins_until_it_expires_and_the_scheduler_restores_the_calendar() {
    let host = start();
    let mut stream = SseClient::connect(&host.url("/api/presence/stream?users=alice"), None).await;

    let end = ceremony(&host, "alice").await;
    let first = stream.next_of("presence", WAIT).await.expect("calendar change");
    let change = first.json();
    assert_eq!(change["user"], "alice");
    assert_eq!(change["presence"]["source"], "calendar");
    assert_eq!(change["presence"]["status_text"], "📸 Ceremony prep - Old Barn");

    // Writes need the admin token, and a refused write changes nothing.
    let before = host.digest().await;
    let dnd = |expires_at: i64| serde_json::json!({"availability": "do_not_disturb", "status_text": "Vows", "expires_at": expires_at});
    assert_eq!(put_manual(&host, "alice", dnd(now_s() * 1000 + 60_000), "wrong").await.0, 401);
    let bad = serde_json::json!({"availability": "sleepy"});
    assert_eq!(put_manual(&host, "alice", bad, ADMIN).await.0, 400);
    assert_eq!(host.digest().await, before);

    let expires = now_s() * 1000 + 2500;
    let (status, text) = put_manual(&host, "alice", dnd(expires), ADMIN).await;
    assert_eq!(status, 200, "{text}");
    let manual = stream.next_of("presence", WAIT).await.expect("manual change");
    assert_eq!(manual.json()["presence"]["source"], "manual");
    assert_eq!(manual.json()["presence"]["availability"], "do_not_disturb");
    let (_, view) = host.get_json("/api/presence/alice").await;
    assert_eq!(view["source"], "manual");
    assert_eq!(view["next_change_at"], expires);

    // Nobody asks again: the scheduler applies the expiry on time by itself.
    let restored = stream.next_of("presence", WAIT).await.expect("expiry applied");
    assert_eq!(restored.json()["presence"]["source"], "calendar");
    assert_eq!(restored.json()["presence"]["until"], end);
    assert!(
        restored.id.unwrap().parse::<i64>().unwrap() > manual.id.unwrap().parse::<i64>().unwrap()
    );

    // DELETE clears a manual override at once.
    put_manual(&host, "alice", serde_json::json!({"availability": "away"}), ADMIN).await;
    assert_eq!(stream.next_of("presence", WAIT).await.unwrap().json()["presence"]["availability"], "away");
    let resp = host
        .client
        .delete(host.url("/api/presence/alice"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(stream.next_of("presence", WAIT).await.unwrap().json()["presence"]["source"], "calendar");
}

#[tokio::test]
async fn a_transition_due_while_the_host_was_down_is_applied_after_restart_and_resumed_streams_miss_nothing() {
    let mut host = start();
    ceremony(&host, "bob").await;
    let away = serde_json::json!({"availability": "away", "expires_at": now_s() * 1000 + 1500});
    assert_eq!(put_manual(&host, "bob", away, ADMIN).await.0, 200);
    let mut stream = SseClient::connect(&host.url("/api/presence/stream?users=bob"), Some("0")).await;
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
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let next = resumed.next_of("presence", WAIT).await.expect("transition after restart");
    assert_eq!(next.json()["presence"]["source"], "calendar");
    assert!(next.id.unwrap().parse::<i64>().unwrap() > manual.id.unwrap().parse::<i64>().unwrap());
    // Exactly once: nothing else follows.
    assert!(resumed.next_of("presence", Duration::from_secs(2)).await.is_none());

    // A stream resumed from the beginning replays the same history, in order.
    let mut replay = SseClient::connect(&host.url("/api/presence/stream?users=bob"), Some("0")).await;
    let mut sources = Vec::new();
    while let Some(e) = replay.next_of("presence", Duration::from_secs(2)).await {
        sources.push(e.json()["presence"]["source"].as_str().unwrap().to_string());
    }
    assert_eq!(sources, ["calendar", "manual", "calendar"]);
}

#[tokio::test]
async fn a_call_whose_end_never_arrives_is_bounded_and_streams_are_filtered_by_tenant_and_user() {
    let host = start();
    let mut carol_only = SseClient::connect(&host.url("/api/presence/stream?users=carol"), None).await;
    let mut other_tenant =
        SseClient::connect(&host.url("/api/presence/stream?tenant=agency-b"), None).await;
    ceremony(&host, "dave").await;
    let started = format!(
        r#"{{"event":"meeting.started","event_ts":{},"payload":{{"account_id":"A","object":{{"uuid":"m-9","id":"99","host_id":"carol","topic":"Tasting"}}}}}}"#,
        now_s() * 1000
    );
    let (status, text) = host.post("/api/webhooks/zoom", &zoom_headers(&started), started.clone()).await;
    assert_eq!(status, 200, "{text}");
    let call = carol_only.next_of("presence", WAIT).await.expect("carol's call");
    assert_eq!(call.json()["user"], "carol", "dave's change is filtered out");
    let until = call.json()["presence"]["until"].as_i64().expect("a call has an end");
    let bound = now_s() * 1000 + 30 * 60_000;
    assert!(until <= bound + 1000, "call bounded by max_call_minutes: {until} vs {bound}");
    assert!(other_tenant.next_of("presence", Duration::from_millis(500)).await.is_none());

    // Bad stream requests are refused clearly.
    let resp = host
        .client
        .get(host.url("/api/presence/stream"))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = host
        .client
        .get(host.url("/api/presence/stream"))
        .header("x-presence-tenant", "not a tenant")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}
