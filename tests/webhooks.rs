//! End to end: the real host, the real bundled plugins, signed webhooks in,
//! presence out.

mod support;

use support::*;

const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

fn start() -> Host {
    start_with("")
}

fn start_with(config: &str) -> Host {
    let plugins = PluginsDir::new()
        .with_bundled("slack")
        .with_bundled("calendar-webhook")
        .with_bundled("wedding-keywords");
    Host::start(
        plugins,
        config,
        &[
            ("slack.signing-secret", SLACK_SECRET, false),
            ("calendar-webhook.signing-secret", WHSEC.as_bytes(), true),
        ],
    )
}

fn status_event(user: &str, event_id: &str, text: &str, emoji: &str) -> String {
    serde_json::json!({
        "token": "unused", "team_id": "T1", "type": "event_callback", "event_id": event_id,
        "event_time": now_s(),
        "event": {"type": "user_status_changed", "user": {"id": user, "profile": {
            "status_text": text, "status_emoji": emoji, "status_expiration": 0}}}
    })
    .to_string()
}

#[tokio::test]
async fn slack_signed_status_change_sets_presence_and_bad_signatures_change_nothing() {
    let host = start();
    let body = status_event("U123", "Ev1", "Out of office", ":palm_tree:");

    // Wrong secret, stale timestamp, future timestamp, missing headers: 401 and nothing stored.
    let before = host.digest().await;
    let refusals = [
        (
            slack_headers(b"not-the-secret", now_s(), &body),
            "does not match",
        ),
        (slack_headers(SLACK_SECRET, now_s() - 301, &body), "window"),
        // Future timestamps come closer as the clock runs on while the
        // requests before it are sent: this one stays outside for 29 s.
        (slack_headers(SLACK_SECRET, now_s() + 331, &body), "window"),
        (
            vec![("content-type", "application/json".to_string())],
            "missing",
        ),
    ];
    for (headers, expected) in refusals {
        let (status, text) = host
            .post("/api/webhooks/slack", &headers, body.clone())
            .await;
        assert_eq!(status, 401, "{text}");
        assert!(text.contains(expected), "{text}");
    }
    assert_eq!(
        host.digest().await,
        before,
        "a refused webhook changed the store"
    );
    assert_eq!(host.get_json("/api/presence/U123").await.0, 404);

    // Correctly signed: acknowledged, and the presence reads back.
    let (status, text) = host
        .post(
            "/api/webhooks/slack",
            &slack_headers(SLACK_SECRET, now_s(), &body),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let (status, presence) = host.get_json("/api/presence/U123").await;
    assert_eq!(status, 200);
    assert_eq!(presence["availability"], "out_of_office");
    assert_eq!(presence["status_text"], "Out of office");
    assert_eq!(presence["status_emoji"], ":palm_tree:");
    assert_eq!(presence["source"], "provider_status");

    // A redelivery of the same event_id (Slack retries) is acknowledged and ignored,
    // even if its content differs.
    let after_first = host.digest().await;
    let replay = status_event("U123", "Ev1", "Back", "");
    let (status, _) = host
        .post(
            "/api/webhooks/slack",
            &slack_headers(SLACK_SECRET, now_s(), &replay),
            replay.clone(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(host.digest().await, after_first);

    // Clearing the status withdraws the signal.
    let cleared = status_event("U123", "Ev2", "", "");
    let (status, _) = host
        .post(
            "/api/webhooks/slack",
            &slack_headers(SLACK_SECRET, now_s(), &cleared),
            cleared.clone(),
        )
        .await;
    assert_eq!(status, 200);
    let (_, presence) = host.get_json("/api/presence/U123").await;
    assert_eq!(presence["availability"], "available");
    assert_eq!(presence["source"], serde_json::Value::Null);
}

#[tokio::test]
async fn slack_url_verification_is_answered_with_the_challenge_on_both_routes() {
    let host = start();
    let body = r#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    // `slack-presence` is the seed's name for the Slack route.
    for route in ["/api/webhooks/slack", "/api/webhooks/slack-presence"] {
        let (status, text) = host
            .post(route, &slack_headers(SLACK_SECRET, now_s(), body), body)
            .await;
        assert_eq!(status, 200, "{route}");
        assert_eq!(text, "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P");
    }
}

/// Slack's published example ("Verifying requests from Slack"): the signature
/// verifies, so the request fails only on its 2018 timestamp.
#[tokio::test]
async fn slack_documentation_test_vector() {
    let host = start();
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let headers = vec![
        ("x-slack-request-timestamp", "1531420618".to_string()),
        (
            "x-slack-signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503".to_string(),
        ),
        // A slash command, as Slack sends it: a form body.
        (
            "content-type",
            "application/x-www-form-urlencoded".to_string(),
        ),
    ];
    let (status, text) = host.post("/api/webhooks/slack", &headers, body).await;
    assert_eq!(status, 401);
    assert!(
        text.contains("outside the 300 s window"),
        "signature should verify: {text}"
    );
    let mut tampered = headers.clone();
    tampered[1].1 =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b504".to_string();
    let (_, text) = host.post("/api/webhooks/slack", &tampered, body).await;
    assert!(text.contains("does not match"), "{text}");
}

/// The Standard Webhooks specification's example: its signature verifies (so
/// only the 2021 timestamp is refused); one changed byte fails.
#[tokio::test]
async fn standard_webhooks_specification_test_vector() {
    let host = start();
    let body = r#"{"test": 2432232314}"#;
    let headers = |sig: &str| {
        vec![
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".to_string()),
            ("webhook-timestamp", "1614265330".to_string()),
            ("webhook-signature", sig.to_string()),
            ("content-type", "application/json".to_string()),
        ]
    };
    let (status, text) = host
        .post(
            "/api/webhooks/calendar-webhook",
            &headers("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            body,
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        text.contains("outside the 300 s window"),
        "signature should verify: {text}"
    );
    let (_, text) = host
        .post(
            "/api/webhooks/calendar-webhook",
            &headers("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE"),
            body,
        )
        .await;
    assert!(
        text.contains("outside the 300 s window"),
        "unpadded base64 is accepted too: {text}"
    );
    let (_, text) = host
        .post(
            "/api/webhooks/calendar-webhook",
            &headers("v1,h0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            body,
        )
        .await;
    assert!(text.contains("does not match"), "{text}");
}

#[tokio::test]
async fn calendar_events_are_classified_into_wedding_presence() {
    let host = start();
    let key = WHSEC.trim_start_matches("whsec_");
    let now_ms = now_s() * 1000;
    let body = calendar_delivery(
        "event.upserted",
        "alice",
        "Ceremony rehearsal",
        "Old Barn",
        now_ms - 60_000,
        now_ms + 3_600_000,
    );

    // A bad signature is refused and changes nothing.
    let before = host.digest().await;
    let bad = standard_webhook_headers(
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "msg_1",
        now_s(),
        &body,
    );
    let (status, _) = host
        .post("/api/webhooks/calendar-webhook", &bad, body.clone())
        .await;
    assert_eq!(status, 401);
    assert_eq!(host.digest().await, before);

    // Signed: classified by wedding-keywords and stored. (`calendar-presence`, the seed's
    // route, dispatches a Standard Webhooks delivery to calendar-webhook.)
    let (status, text) = host
        .post(
            "/api/webhooks/calendar-presence",
            &standard_webhook_headers(key, "msg_1", now_s(), &body),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let (_, presence) = host.get_json("/api/presence/alice").await;
    assert_eq!(presence["availability"], "busy");
    assert_eq!(presence["status_text"], "📸 Ceremony prep - Old Barn");
    assert_eq!(presence["category"], "ceremony");
    assert_eq!(presence["source"], "calendar");
    assert_eq!(presence["until"], now_ms + 3_600_000);

    // Malformed JSON with a valid signature: 400, nothing stored.
    let before = host.digest().await;
    let junk = "{not json";
    let (status, text) = host
        .post(
            "/api/webhooks/calendar-webhook",
            &standard_webhook_headers(key, "msg_2", now_s(), junk),
            junk,
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(host.digest().await, before);

    // The event is deleted: the calendar no longer says anything.
    let deleted = calendar_delivery("event.deleted", "alice", "", "", 0, 0);
    let (status, _) = host
        .post(
            "/api/webhooks/calendar-webhook",
            &standard_webhook_headers(key, "msg_3", now_s(), &deleted),
            deleted.clone(),
        )
        .await;
    assert_eq!(status, 200);
    let (_, presence) = host.get_json("/api/presence/alice").await;
    assert_eq!(presence["availability"], "available");

    // A non-wedding event still makes the person busy, without exposing its title.
    let dentist = calendar_delivery(
        "event.upserted",
        "alice",
        "Dentist",
        "",
        now_ms - 1000,
        now_ms + 600_000,
    );
    let (status, _) = host
        .post(
            "/api/webhooks/calendar-webhook",
            &standard_webhook_headers(key, "msg_4", now_s(), &dentist),
            dentist.clone(),
        )
        .await;
    assert_eq!(status, 200);
    let (_, presence) = host.get_json("/api/presence/alice").await;
    assert_eq!(presence["availability"], "busy");
    assert_eq!(presence["status_text"], serde_json::Value::Null);
}

#[tokio::test]
async fn unknown_plugins_tenants_and_oversized_bodies_are_refused() {
    let host = start();
    let (status, text) = host.post("/api/webhooks/nope", &[], "{}").await;
    assert_eq!(status, 404);
    assert!(text.contains("nope"), "{text}");
    // A classifier does not receive webhooks.
    assert_eq!(
        host.post("/api/webhooks/wedding-keywords", &[], "{}")
            .await
            .0,
        404
    );
    assert_eq!(
        host.post("/api/webhooks/slack/bad%20tenant", &[], "{}")
            .await
            .0,
        400
    );
    let big = "x".repeat(1024 * 1024 + 1);
    assert_eq!(host.post("/api/webhooks/slack", &[], big).await.0, 413);
}

#[tokio::test]
async fn tenants_are_kept_apart() {
    let host = start_with("[tenants.agency-a]\n[tenants.agency-b]\n");
    let body = status_event("U9", "Ev9", "In a meeting", "");
    let (status, _) = host
        .post(
            "/api/webhooks/slack/agency-a",
            &slack_headers(SLACK_SECRET, now_s(), &body),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        host.get_json("/api/presence/U9?tenant=agency-a").await.1["availability"],
        "busy"
    );
    assert_eq!(
        host.get_json("/api/presence/U9?tenant=agency-b").await.0,
        404
    );
    assert_eq!(host.get_json("/api/presence/U9").await.0, 404);
}

/// A tenant's own secret (`<tenant>/<name>`) is used for its route instead of the
/// shared one, so one agency cannot sign deliveries for another.
#[tokio::test]
async fn a_tenant_secret_replaces_the_shared_one_on_its_route() {
    let tenant_key = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk=";
    let plugins = PluginsDir::new()
        .with_bundled("calendar-webhook")
        .with_bundled("wedding-keywords");
    let host = Host::start(
        plugins,
        "[tenants.agency-a]\n[tenants.agency-b]\n",
        &[
            ("calendar-webhook.signing-secret", WHSEC.as_bytes(), true),
            (
                "agency-a/calendar-webhook.signing-secret",
                tenant_key.as_bytes(),
                true,
            ),
        ],
    );
    let shared_key = WHSEC.trim_start_matches("whsec_");
    let now_ms = now_s() * 1000;
    let body = calendar_delivery(
        "event.upserted",
        "cat",
        "Ceremony",
        "Chapel",
        now_ms - 1000,
        now_ms + 60_000,
    );
    let path = "/api/webhooks/calendar-webhook/agency-a";
    let (status, _) = host
        .post(
            path,
            &standard_webhook_headers(shared_key, "m1", now_s(), &body),
            body.clone(),
        )
        .await;
    assert_eq!(
        status, 401,
        "the shared key signed for a tenant with its own"
    );
    let (status, text) = host
        .post(
            path,
            &standard_webhook_headers(tenant_key, "m2", now_s(), &body),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    // Tenants without their own secret keep using the shared one.
    let (status, _) = host
        .post(
            "/api/webhooks/calendar-webhook/agency-b",
            &standard_webhook_headers(shared_key, "m3", now_s(), &body),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200);
}

/// A secret the host cannot use is the host's fault: 502 (providers retry), not 401.
#[tokio::test]
async fn a_missing_signing_secret_is_not_blamed_on_the_sender() {
    let host = Host::start(PluginsDir::new().with_bundled("slack"), "", &[]);
    let body = status_event("U1", "Ev1", "x", "");
    let (status, text) = host
        .post(
            "/api/webhooks/slack",
            &slack_headers(SLACK_SECRET, now_s(), &body),
            body,
        )
        .await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("slack.signing-secret is not set"), "{text}");
}

/// The admin API sets a tenant's chain; its plugins decide first for that tenant only.
#[tokio::test]
async fn tenant_chains_are_set_through_the_admin_api() {
    let plugins = PluginsDir::new()
        .with_bundled("calendar-webhook")
        .with_bundled("wedding-keywords");
    let tasting = std::fs::read(fixture_wasm("tasting")).unwrap();
    plugins.install(
        "tasting",
        &tasting,
        &fixture_manifest("tasting", "").replace("provider", "classifier"),
    );
    let host = Host::start(
        plugins,
        "admin_token = \"s3cret-admin\"\n[tenants.acme]\n[tenants.other]\n",
        &[("calendar-webhook.signing-secret", WHSEC.as_bytes(), true)],
    );
    let url = host.url("/api/tenants/acme/classifiers");
    let put = |token: &str, body: &str| {
        host.client
            .put(&url)
            .header("authorization", format!("Bearer {token}"))
            .body(body.to_string())
            .send()
    };
    // Without the token, with a wrong one, or with a bad chain: refused, nothing stored.
    let before = host.digest().await;
    assert_eq!(
        host.client
            .put(&url)
            .body("{}")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        put("wrong", r#"{"classifiers":["tasting"]}"#)
            .await
            .unwrap()
            .status(),
        401
    );
    for (body, expected) in [
        (r#"{"classifiers":["nope"]}"#, "no classifier plugin named"),
        (
            r#"{"classifiers":["calendar-webhook"]}"#,
            "not a classifier",
        ),
        (r#"{"classifiers":[]}"#, "at least one"),
        (r#"{"chain":["tasting"]}"#, "expected"),
    ] {
        let resp = put("s3cret-admin", body).await.unwrap();
        assert_eq!(resp.status(), 400);
        assert!(resp.text().await.unwrap().contains(expected), "{body}");
    }
    assert_eq!(host.digest().await, before);

    let resp = put(
        "s3cret-admin",
        r#"{"classifiers":["tasting","wedding-keywords"]}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let chain: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(chain["source"], "api");

    let key = WHSEC.trim_start_matches("whsec_");
    let now_ms = now_s() * 1000;
    let body = calendar_delivery(
        "event.upserted",
        "dee",
        "Cake tasting with the couple",
        "Old Barn",
        now_ms - 1000,
        now_ms + 60_000,
    );
    for (tenant, expected) in [
        ("acme", "🍰 Menu tasting"),
        (
            "other",
            "💑 Client consultation - Cake tasting with the couple",
        ),
    ] {
        let path = format!("/api/webhooks/calendar-webhook/{tenant}");
        let (status, text) = host
            .post(
                &path,
                &standard_webhook_headers(key, &format!("m-{tenant}"), now_s(), &body),
                body.clone(),
            )
            .await;
        assert_eq!(status, 200, "{text}");
        let (_, presence) = host
            .get_json(&format!("/api/presence/dee?tenant={tenant}"))
            .await;
        assert_eq!(presence["status_text"], expected, "{tenant}");
    }

    // DELETE falls back to the default chain.
    let resp = host
        .client
        .delete(&url)
        .header("authorization", "Bearer s3cret-admin")
        .send()
        .await
        .unwrap();
    let chain: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (chain["source"].as_str(), chain["classifiers"][0].as_str()),
        (Some("default"), Some("wedding-keywords"))
    );
}

#[tokio::test]
async fn every_api_route_but_webhooks_and_probes_needs_a_key() {
    let host = Host::start(PluginsDir::new().with_bundled("wedding-keywords"), "", &[]);
    for path in [
        "/api/plugins",
        "/api/tenants",
        "/api/tenants/default/classifiers",
        "/api/presence/U1",
        "/api/presence/stream",
        "/api/oauth/slack/start?user=U1",
    ] {
        let resp = host.client.get(host.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert!(resp.text().await.unwrap().contains("API key"), "{path}");
        let resp = host
            .client
            .get(host.url(path))
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
    }
    // HTTP Basic, which browsers re-send on their own, opens the dashboard only:
    // on the API it would let any page the operator visits call it (CSRF).
    let resp = host
        .client
        .get(host.url("/api/plugins"))
        .basic_auth("operator", Some(&host.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = host.client.get(host.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (status, plugins) = host.get_json("/api/plugins").await;
    assert_eq!(status, 200);
    assert!(
        plugins["plugins"][0]["dir"].is_string(),
        "the operator sees folders"
    );
    let key = host.tenant_with_key("acme").await;
    let (_, plugins) = host.api("GET", "/api/plugins", &key, None).await;
    assert_eq!(plugins["plugins"][0]["name"], "wedding-keywords");
    assert!(
        plugins["plugins"][0].get("dir").is_none(),
        "tenants do not see folders"
    );
    assert!(plugins.get("failures").is_none());
}

/// Zoom's URL validation, and a call over a calendar event: when the call ends,
/// the calendar's status shows through again (post-meeting restoration).
#[tokio::test]
async fn zoom_calls_override_the_calendar_and_restore_it_when_they_end() {
    let plugins = PluginsDir::new()
        .with_bundled("zoom")
        .with_bundled("calendar-webhook")
        .with_bundled("wedding-keywords");
    let host = Host::start(
        plugins,
        "",
        &[
            ("zoom.secret-token", ZOOM_SECRET, false),
            ("calendar-webhook.signing-secret", WHSEC.as_bytes(), true),
        ],
    );
    let validation = r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let (status, text) = host
        .post("/api/webhooks/zoom", &zoom_headers(validation), validation)
        .await;
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(ZOOM_SECRET).unwrap();
    hmac::Mac::update(&mut mac, b"qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(answer["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(
        answer["encryptedToken"],
        hex::encode(hmac::Mac::finalize(mac).into_bytes())
    );

    // A badly signed Zoom event changes nothing.
    let started = format!(
        r#"{{"event":"meeting.started","event_ts":{},"payload":{{"account_id":"A","object":{{"uuid":"m-1","id":"85","host_id":"alice","topic":"Smith wedding"}}}}}}"#,
        now_s() * 1000
    );
    let before = host.digest().await;
    let mut bad = zoom_headers(&started);
    bad[1].1 = "v0=00".to_string();
    assert_eq!(
        host.post("/api/webhooks/zoom", &bad, started.clone())
            .await
            .0,
        401
    );
    assert_eq!(host.digest().await, before);

    let key = WHSEC.trim_start_matches("whsec_");
    let now_ms = now_s() * 1000;
    let ceremony = calendar_delivery(
        "event.upserted",
        "alice",
        "Ceremony",
        "Old Barn",
        now_ms - 1000,
        now_ms + 3_600_000,
    );
    let (status, _) = host
        .post(
            "/api/webhooks/calendar-webhook",
            &standard_webhook_headers(key, "c1", now_s(), &ceremony),
            ceremony.clone(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        host.get_json("/api/presence/alice").await.1["status_text"],
        "📸 Ceremony prep - Old Barn"
    );

    let (status, text) = host
        .post(
            "/api/webhooks/zoom",
            &zoom_headers(&started),
            started.clone(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let (_, presence) = host.get_json("/api/presence/alice").await;
    assert_eq!(
        (
            presence["availability"].as_str(),
            presence["source"].as_str()
        ),
        (Some("in_call"), Some("call"))
    );
    assert_eq!(
        presence["status_text"], "In a Zoom meeting",
        "the meeting topic stays private"
    );

    let ended = started.replace("meeting.started", "meeting.ended");
    let (status, _) = host
        .post("/api/webhooks/zoom", &zoom_headers(&ended), ended.clone())
        .await;
    assert_eq!(status, 200);
    let (_, presence) = host.get_json("/api/presence/alice").await;
    assert_eq!(presence["source"], "calendar");
    assert_eq!(presence["status_text"], "📸 Ceremony prep - Old Barn");
}

/// Content types the plugin does not take get 415; a flood gets 429 with
/// `Retry-After` and is served again once the bucket refills; a person's calendar
/// events are limited per hour. Every refusal leaves the store as it was.
#[tokio::test]
async fn wrong_content_types_and_floods_are_refused_and_change_nothing() {
    let plugins = PluginsDir::new()
        .with_bundled("slack")
        .with_bundled("calendar-webhook")
        .with_bundled("wedding-keywords");
    let host = Host::start(
        plugins,
        "[webhooks]\nper_endpoint_per_second = 2\ncalendar_events_per_user_per_hour = 3\n[plugins.calendar-webhook]\nrate_limit_per_second = 100\n",
        &[
            ("slack.signing-secret", SLACK_SECRET, false),
            ("calendar-webhook.signing-secret", WHSEC.as_bytes(), true),
        ],
    );
    let key = WHSEC.trim_start_matches("whsec_");
    let before = host.digest().await;

    // calendar-webhook takes JSON only; the plugin is never asked.
    let now_ms = now_s() * 1000;
    let body = calendar_delivery(
        "event.upserted",
        "alice",
        "Menu tasting",
        "Mill",
        now_ms,
        now_ms + 60_000,
    );
    let mut headers = standard_webhook_headers(key, "ct-1", now_s(), &body);
    headers[3].1 = "text/plain".into();
    let (status, text) = host
        .post("/api/webhooks/calendar-webhook", &headers, body.clone())
        .await;
    assert_eq!(status, 415, "{text}");
    assert!(text.contains("application/json"), "{text}");
    headers.truncate(3);
    assert_eq!(
        host.post("/api/webhooks/calendar-webhook", &headers, body.clone())
            .await
            .0,
        415
    );
    assert_eq!(host.digest().await, before);

    // Slack's endpoint: of a flood sent at once, a burst of twice the rate
    // passes and the rest get 429 until the bucket refills.
    let flood: Vec<_> = (0..8)
        .map(|i| status_event("U9", &format!("EvFlood{i}"), "At the venue", ":camera:"))
        .collect();
    let answers = futures::future::join_all(flood.iter().map(|event| {
        host.client
            .post(host.url("/api/webhooks/slack"))
            .headers(header_map(&slack_headers(SLACK_SECRET, now_s(), event)))
            .body(event.clone())
            .send()
    }))
    .await;
    let mut accepted = 0;
    let mut refused = None;
    for (event, resp) in flood.iter().zip(answers) {
        let resp = resp.unwrap();
        match resp.status().as_u16() {
            200 => accepted += 1,
            429 => {
                let retry_after: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                refused.get_or_insert((event.clone(), retry_after));
            }
            other => panic!("unexpected {other}"),
        }
    }
    // Four at once; a fifth if the flood took longer than a refill (500 ms).
    assert!(
        (4..=5).contains(&accepted),
        "{accepted} accepted before the limit"
    );
    let (refused, retry_after) = refused.expect("the flood was limited");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let after_flood = host.digest().await;
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    let (status, _) = host
        .post(
            "/api/webhooks/slack",
            &slack_headers(SLACK_SECRET, now_s(), &refused),
            refused.clone(),
        )
        .await;
    assert_eq!(status, 200, "served again once the bucket refilled");
    assert_ne!(host.digest().await, after_flood);

    // Calendar events: 3 per person per hour, then 429 for a long while.
    for i in 0..3 {
        let body = calendar_delivery(
            "event.upserted",
            "alice",
            "Menu tasting",
            "Mill",
            now_ms,
            now_ms + 60_000,
        );
        assert_eq!(post_calendar(&host, &format!("cal-{i}"), &body).await, 200);
    }
    let before = host.digest().await;
    let resp = host
        .client
        .post(host.url("/api/webhooks/calendar-webhook"))
        .headers(header_map(&standard_webhook_headers(
            key,
            "cal-3",
            now_s(),
            &body,
        )))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 60, "{retry_after}");
    assert_eq!(
        host.digest().await,
        before,
        "a limited delivery is not recorded, so its retry counts"
    );
    // Someone else's calendar is not affected.
    let bob = calendar_delivery(
        "event.upserted",
        "bob",
        "Menu tasting",
        "Mill",
        now_ms,
        now_ms + 60_000,
    );
    assert_eq!(post_calendar(&host, "cal-bob", &bob).await, 200);
}

/// A sender that trickles its body (slow loris) is cut off with 408 once
/// `[webhooks] body_timeout_ms` has passed since its headers; the store does
/// not change and the host keeps serving everyone else meanwhile.
#[tokio::test]
async fn a_body_trickled_past_the_deadline_gets_408_and_changes_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = start_with("[webhooks]\nbody_timeout_ms = 500\n");
    let before = host.digest().await;
    let body = status_event("U1", "Ev-slow", "In a meeting", ":calendar:");
    let mut slow = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let head = format!(
        "POST /api/webhooks/slack HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    // One byte every 100 ms: each arrives well within any per-read timeout,
    // the whole body never within the deadline.
    let trickle = tokio::spawn(async move {
        for b in body.as_bytes().iter().take(20) {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // The answer, read until its JSON body is complete (the connection
        // may stay open).
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        let read_until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !answer.ends_with(b"}") {
            let left = read_until.saturating_duration_since(std::time::Instant::now());
            match tokio::time::timeout(left, slow.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    });
    // Meanwhile everyone else is served.
    assert_eq!(host.get_json("/api/plugins").await.0, 200);
    let answer = trickle.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 500 ms"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(host.digest().await, before);
}

/// A client that trickles its request headers (a slow loris on the headers,
/// before any handler or body limit can act), or keeps a connection open
/// without sending a request, is disconnected once `header_timeout_ms` has
/// passed; the store does not change and everyone else is served meanwhile.
#[tokio::test]
async fn headers_trickled_past_the_deadline_or_an_idle_connection_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = start_with("header_timeout_ms = 500\n");
    let before = host.digest().await;
    let started = std::time::Instant::now();
    // Whether the host closed `stream` (within 10 s), and after how long.
    async fn closed(mut stream: tokio::net::TcpStream) -> Option<std::time::Duration> {
        let started = std::time::Instant::now();
        let mut chunk = [0u8; 256];
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
                .await
            {
                Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => {}
                Err(_) => return None,
            }
        }
    }
    // One header byte every 100 ms: the head never completes.
    let mut slow = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    slow.write_all(b"POST /api/webhooks/slack HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        let (mut read, mut write) = slow.into_split();
        let writing = tokio::spawn(async move {
            for b in b"x-slack-request-timestamp: 1700000000000000000000000".iter() {
                if write.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        let started = std::time::Instant::now();
        let mut chunk = [0u8; 256];
        let answer =
            tokio::time::timeout(std::time::Duration::from_secs(10), read.read(&mut chunk)).await;
        writing.abort();
        (
            answer.map(|r| r.map(|n| chunk[..n].to_vec())),
            started.elapsed(),
        )
    });
    // A connection that never sends anything.
    let idle = tokio::spawn(closed(
        tokio::net::TcpStream::connect(host.addr).await.unwrap(),
    ));
    // Meanwhile everyone else is served.
    assert_eq!(host.get_json("/api/plugins").await.0, 200);
    let (answer, took) = trickle.await.unwrap();
    match answer {
        // Closed without an answer (or with hyper's 408 for a head that
        // timed out part-way).
        Ok(Ok(bytes)) => assert!(
            bytes.is_empty() || bytes.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&bytes)
        ),
        Ok(Err(_)) => {}
        Err(_) => panic!("the trickled head was still open after 10 s"),
    }
    assert!(
        took < std::time::Duration::from_secs(3),
        "cut off after {took:?}"
    );
    let idle_for = idle
        .await
        .unwrap()
        .expect("the idle connection was still open after 10 s");
    assert!(
        idle_for < std::time::Duration::from_secs(3),
        "idle connection closed after {idle_for:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    assert_eq!(host.digest().await, before);
}

/// At `max_connections`, a further client waits unaccepted (it is neither
/// served nor refused) until a connection closes; then it is served.
#[tokio::test]
async fn past_max_connections_a_client_waits_until_a_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = start_with("max_connections = 2\n");
    // Two kept-alive connections, each answered once: they hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(host.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_exact(&mut head),
        )
        .await
        .expect("a connection within the limit is served")
        .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
        held.push(stream);
    }
    let probe = || async {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(1))
            .build()
            .unwrap()
            .get(host.url("/healthz"))
            .send()
            .await
    };
    let waited = probe().await;
    assert!(
        waited.as_ref().is_err_and(|e| e.is_timeout()),
        "a third client was not kept waiting: {waited:?}"
    );
    drop(held.pop());
    let mut served = None;
    for _ in 0..10 {
        if let Ok(resp) = probe().await {
            served = Some(resp.status().as_u16());
            break;
        }
    }
    assert_eq!(served, Some(200), "no client was served once a slot freed");
    let log = host.log();
    assert!(log.contains("every connection slot is taken"), "{log}");
}

/// A NUL in a provider's ids or texts is stored alike on both backends
/// (PostgreSQL's text cannot hold one): the delivery is acknowledged, not
/// failed for the provider to send again forever.
#[tokio::test]
async fn a_nul_in_a_providers_ids_and_texts_is_stored_not_refused() {
    let host = start();
    let now_ms = now_s() * 1000;
    let body = calendar_delivery(
        "event.upserted",
        "ali\u{0}ce",
        "Ceremony\u{0} rehearsal",
        "Old\u{0} Barn",
        now_ms - 60_000,
        now_ms + 3_600_000,
    );
    assert_eq!(post_calendar(&host, "msg_nul", &body).await, 200);
    let (status, presence) = host.get_json("/api/presence/ali%EF%BF%BDce").await;
    assert_eq!(status, 200, "{presence}");
    assert_eq!(presence["availability"], "busy");
    let text = presence["status_text"].as_str().unwrap_or_default();
    assert!(!text.contains('\0'), "{text:?}");
}
