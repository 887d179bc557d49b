//! End to end: tenants and their API keys. A key sees only its own tenant,
//! through every route; keys are shown once and kept as hashes; rotation and
//! revocation take effect at once; every admin-route use is audited.

mod support;

use serde_json::json;
use support::sse::SseClient;
use support::*;

fn start() -> Host {
    let plugins = PluginsDir::new()
        .with_bundled("slack")
        .with_bundled("calendar-webhook")
        .with_bundled("wedding-keywords");
    Host::start(
        plugins,
        "[oauth.providers.slack]\nclient_id = \"test-client\"\n",
        &[("calendar-webhook.signing-secret", WHSEC.as_bytes(), true)],
    )
}

/// Every route a tenant key may use, with the tenant it acts for in the path
/// or in `X-Presence-Tenant`: (method, path, body).
fn routes_of(tenant: &str) -> Vec<(&'static str, String, Option<serde_json::Value>)> {
    let t = tenant;
    vec![
        ("GET", format!("/api/tenants/{t}/api-keys"), None),
        (
            "POST",
            format!("/api/tenants/{t}/api-keys"),
            Some(json!({})),
        ),
        (
            "DELETE",
            format!("/api/tenants/{t}/api-keys/0123456789ab"),
            None,
        ),
        (
            "POST",
            format!("/api/tenants/{t}/api-keys/0123456789ab/rotate"),
            Some(json!({})),
        ),
        ("GET", format!("/api/tenants/{t}/audit"), None),
        ("GET", format!("/api/tenants/{t}/classifiers"), None),
        (
            "PUT",
            format!("/api/tenants/{t}/classifiers"),
            Some(json!({"classifiers": ["wedding-keywords"]})),
        ),
        ("DELETE", format!("/api/tenants/{t}/classifiers"), None),
        ("GET", format!("/api/tenants/{t}/connections"), None),
        (
            "GET",
            format!("/api/tenants/{t}/connections/slack:U1"),
            None,
        ),
        (
            "PUT",
            format!("/api/tenants/{t}/connections/slack:U1"),
            Some(json!({"plugin": "slack", "user": "U1", "access_token": "xoxp-stolen"})),
        ),
        (
            "DELETE",
            format!("/api/tenants/{t}/connections/slack:U1"),
            None,
        ),
        (
            "POST",
            format!("/api/tenants/{t}/connections/slack:U1/refresh"),
            None,
        ),
        ("GET", format!("/api/tenants/{t}/presence-webhooks"), None),
        (
            "POST",
            format!("/api/tenants/{t}/presence-webhooks"),
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        ),
        (
            "DELETE",
            format!("/api/tenants/{t}/presence-webhooks/ep_1"),
            None,
        ),
        (
            "POST",
            format!("/api/tenants/{t}/presence-webhooks/ep_1/enable"),
            None,
        ),
        ("GET", format!("/api/presence/U1?tenant={t}"), None),
        (
            "PUT",
            format!("/api/presence/U1?tenant={t}"),
            Some(json!({"availability": "busy"})),
        ),
        ("DELETE", format!("/api/presence/U1?tenant={t}"), None),
        (
            "PUT",
            format!("/api/users/U1?tenant={t}"),
            Some(json!({"time_zone": "Europe/Lisbon"})),
        ),
        ("GET", format!("/api/presence/stream?tenant={t}"), None),
        (
            "GET",
            format!("/api/oauth/slack/start?user=U1&tenant={t}"),
            None,
        ),
        (
            "POST",
            format!("/api/notifications?tenant={t}"),
            Some(json!({"recipients": ["U1"], "urgency": "general", "body": "x"})),
        ),
        ("GET", format!("/api/notifications/ntf_1?tenant={t}"), None),
        (
            "POST",
            format!("/api/notifications/ntf_1/ack?tenant={t}"),
            None,
        ),
    ]
}

#[tokio::test]
async fn a_tenant_key_cannot_read_or_change_anything_of_another_tenant() {
    let host = start();
    let acme = host.tenant_with_key("acme").await;
    let bliss = host.tenant_with_key("bliss").await;

    // Bliss has data of every kind: presence, a connection, an endpoint, a chain.
    let (status, _) = host
        .api(
            "PUT",
            "/api/presence/U1",
            &bliss,
            Some(json!({"availability": "busy", "status_text": "Bliss secret"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = host
        .api(
            "PUT",
            "/api/tenants/bliss/connections/slack:U1",
            &bliss,
            Some(json!({"plugin": "slack", "user": "U1", "access_token": "xoxp-bliss"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A tenant may only register public https endpoints (no SSRF into our
    // network); the operator may register a loopback one for it.
    let hook = json!({"url": "http://127.0.0.1:9/bliss"});
    let path = "/api/tenants/bliss/presence-webhooks";
    let (status, body) = host.api("POST", path, &bliss, Some(hook.clone())).await;
    assert_eq!(status, 400, "{body}");
    let admin = host.admin.clone();
    let (status, _) = host.api("POST", path, &admin, Some(hook)).await;
    assert_eq!(status, 201);
    // Acme's key has been used once, so its last-use stamp is already written.
    assert_eq!(
        host.api("GET", "/api/tenants/acme/audit", &acme, None)
            .await
            .0,
        200
    );

    let before = host.digest().await;
    for (method, path, body) in routes_of("bliss") {
        let (status, answer) = host.api(method, &path, &acme, body.clone()).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("belongs to tenant \"acme\""),
            "{method} {path}: {answer}"
        );
        // Naming the other tenant in the header instead of the query changes nothing.
        if path.contains("?tenant=") {
            let bare = path.split('?').next().unwrap().to_string();
            let mut req = host
                .client
                .request(method.parse().unwrap(), host.url(&bare))
                .bearer_auth(&acme)
                .header("x-presence-tenant", "bliss");
            if let Some(b) = &body {
                req = req.json(b);
            }
            assert_eq!(
                req.send().await.unwrap().status(),
                403,
                "{method} {bare} (header)"
            );
        }
    }
    assert_eq!(
        host.digest().await,
        before,
        "a refused request changed the store"
    );

    // Acme's own view never shows Bliss's data.
    let (status, sent) = host
        .api(
            "POST",
            "/api/notifications",
            &bliss,
            Some(json!({"recipients": ["U1"], "urgency": "general", "body": "Bliss only"})),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let bliss_note = sent["notifications"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/api/notifications/{bliss_note}");
    assert_eq!(host.api("GET", &path, &acme, None).await.0, 404);
    assert_eq!(
        host.api("POST", &format!("{path}/ack"), &acme, None)
            .await
            .0,
        404
    );
    assert_eq!(host.api("GET", &path, &bliss, None).await.0, 200);
    let (status, _) = host.api("GET", "/api/presence/U1", &acme, None).await;
    assert_eq!(status, 404, "acme has no U1; bliss's is not visible");
    let (_, conns) = host
        .api("GET", "/api/tenants/acme/connections", &acme, None)
        .await;
    assert_eq!(conns["connections"], json!([]));
    let (_, endpoints) = host
        .api("GET", "/api/tenants/acme/presence-webhooks", &acme, None)
        .await;
    assert_eq!(endpoints["endpoints"], json!([]));
    let (_, tenants) = host.api("GET", "/api/tenants", &acme, None).await;
    assert_eq!(tenants["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(tenants["tenants"][0]["name"], "acme");

    // The stream of Acme carries none of Bliss's changes.
    let mut stream =
        SseClient::connect_as(&host.url("/api/presence/stream"), &acme, Some("0")).await;
    let (status, _) = host
        .api(
            "PUT",
            "/api/presence/U2",
            &bliss,
            Some(json!({"availability": "away"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = host
        .api(
            "PUT",
            "/api/presence/A1",
            &acme,
            Some(json!({"availability": "away"})),
        )
        .await;
    assert_eq!(status, 200);
    let event = stream
        .next(std::time::Duration::from_secs(10))
        .await
        .expect("acme's change");
    assert_eq!(event.json()["user"], "A1", "{}", event.data);

    // The operator sees both.
    let (status, presence) = host.get_json("/api/presence/U1?tenant=bliss").await;
    assert_eq!(
        (status, presence["status_text"].as_str()),
        (200, Some("Bliss secret"))
    );
}

#[tokio::test]
async fn keys_are_shown_once_kept_as_hashes_rotated_and_revoked() {
    let host = start();
    let admin = host.admin.clone();
    let key = host.tenant_with_key("acme").await;
    assert!(key.starts_with("phk_"), "{key}");
    let id = key[4..16].to_string();

    // Listing shows metadata only; the database holds no trace of the key.
    let (_, list) = host
        .api("GET", "/api/tenants/acme/api-keys", &key, None)
        .await;
    assert_eq!(list["api_keys"][0]["id"], id.as_str());
    assert!(!list.to_string().contains(&key[17..]));
    let secret_part = key.as_bytes()[17..].to_vec();
    for file in ["presence.db", "presence.db-wal"] {
        if let Ok(bytes) = std::fs::read(host.data_dir.path().join(file)) {
            assert!(
                !bytes
                    .windows(secret_part.len())
                    .any(|w| w == secret_part.as_slice()),
                "{file} contains the key"
            );
        }
    }

    // Only the operator manages keys and tenants.
    let (status, _) = host
        .api("POST", "/api/tenants/acme/api-keys", &key, Some(json!({})))
        .await;
    assert_eq!(status, 403);
    let (status, _) = host
        .api("POST", "/api/tenants", &key, Some(json!({"name": "mine"})))
        .await;
    assert_eq!(status, 403);
    let (status, _) = host
        .api(
            "POST",
            "/api/tenants",
            &admin,
            Some(json!({"name": "acme"})),
        )
        .await;
    assert_eq!(status, 409);

    // Rotation with a grace period: both keys work until it ends.
    let (status, rotated) = host
        .api(
            "POST",
            &format!("/api/tenants/acme/api-keys/{id}/rotate"),
            &admin,
            Some(json!({"grace_seconds": 3600})),
        )
        .await;
    assert_eq!(status, 201, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap().to_string();
    assert_eq!(
        host.api("GET", "/api/tenants/acme/audit", &key, None)
            .await
            .0,
        200
    );
    assert_eq!(
        host.api("GET", "/api/tenants/acme/audit", &new_key, None)
            .await
            .0,
        200
    );
    // A second rotation of the replaced key is refused.
    let (status, _) = host
        .api(
            "POST",
            &format!("/api/tenants/acme/api-keys/{id}/rotate"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Rotation without grace: the old key stops at once.
    let new_id = rotated["id"].as_str().unwrap().to_string();
    let (_, again) = host
        .api(
            "POST",
            &format!("/api/tenants/acme/api-keys/{new_id}/rotate"),
            &admin,
            Some(json!({"grace_seconds": 0})),
        )
        .await;
    let third = again["key"].as_str().unwrap().to_string();
    let (status, body) = host
        .api("GET", "/api/tenants/acme/audit", &new_key, None)
        .await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // Revocation ends what the key opened: a stream closes within seconds.
    let mut stream = SseClient::connect_as(&host.url("/api/presence/stream"), &third, None).await;
    let third_id = &third[4..16];
    let (status, _) = host
        .api(
            "DELETE",
            &format!("/api/tenants/acme/api-keys/{third_id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = host
        .api("GET", "/api/tenants/acme/audit", &third, None)
        .await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    let started = std::time::Instant::now();
    assert!(
        stream
            .next(std::time::Duration::from_secs(25))
            .await
            .is_none()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the stream outlived its key"
    );

    // A made-up key of the right shape, or none at all.
    let forged = format!("phk_{id}_{}", "A".repeat(43));
    assert_eq!(
        host.api("GET", "/api/tenants/acme/audit", &forged, None)
            .await
            .0,
        401
    );
    let resp = host
        .client
        .get(host.url("/api/presence/U1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The audit trail has each step, with who did it.
    let (_, audit) = host
        .api(
            "GET",
            "/api/tenants/acme/audit?action=api_key.",
            &admin,
            None,
        )
        .await;
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "api_key.created",
            "api_key.rotated",
            "api_key.rotated",
            "api_key.revoked"
        ]
    );
    assert!(
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "operator")
    );
    let (_, uses) = host
        .api(
            "GET",
            "/api/tenants/acme/audit?action=api.request",
            &admin,
            None,
        )
        .await;
    let first = uses["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["actor"] != "operator")
        .expect("a use by the key");
    assert_eq!(first["actor"], format!("key:{id}"));
    assert_eq!(first["detail"]["method"], "GET");
    assert_eq!(first["detail"]["path"], "/api/tenants/acme/api-keys");
}

#[tokio::test]
async fn webhooks_to_an_unknown_tenant_are_refused_and_the_cli_makes_tenants_and_keys() {
    let host = start();
    let key = WHSEC.trim_start_matches("whsec_");
    let now_ms = now_s() * 1000;
    let body = calendar_delivery(
        "event.upserted",
        "dee",
        "Ceremony",
        "Old Barn",
        now_ms,
        now_ms + 60_000,
    );
    let headers = standard_webhook_headers(key, "m-1", now_s(), &body);

    let before = host.digest().await;
    let (status, text) = host
        .post(
            "/api/webhooks/calendar-webhook/nobody",
            &headers,
            body.clone(),
        )
        .await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("no tenant"), "{text}");
    assert_eq!(host.digest().await, before);

    // The CLI, on the running host's data directory.
    let (ok, out, err) = host.cli(&["tenant", "create", "nobody"]);
    assert!(ok, "{err}");
    assert!(out.contains("created"), "{out}");
    let (ok, _, err) = host.cli(&["tenant", "create", "nobody"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, out, err) = host.cli(&["api-key", "create", "--tenant", "nobody", "--label", "cli"]);
    assert!(ok, "{err}");
    let cli_key = out.trim().to_string();
    assert!(cli_key.starts_with("phk_"), "{out}");

    let (status, text) = host
        .post(
            "/api/webhooks/calendar-webhook/nobody",
            &headers,
            body.clone(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let (status, presence) = host.api("GET", "/api/presence/dee", &cli_key, None).await;
    assert_eq!(status, 200, "{presence}");
    assert_eq!(presence["availability"], "busy");

    let (ok, out, _) = host.cli(&["api-key", "list", "--tenant", "nobody"]);
    assert!(ok && out.contains("live") && out.contains("cli"), "{out}");
    assert!(!out.contains(&cli_key), "the list shows the key: {out}");
    let id = &cli_key[4..16];
    let (ok, _, err) = host.cli(&["api-key", "revoke", "--tenant", "nobody", id]);
    assert!(ok, "{err}");
    assert_eq!(
        host.api("GET", "/api/presence/dee", &cli_key, None).await.0,
        401
    );
}

/// A NUL character (U+0000) anywhere in an API request, in the path, the
/// query or the JSON body, is refused with a 400 naming it before any handler
/// runs, and changes nothing. PostgreSQL's text cannot hold one, so without
/// this some of these were 5xx there; the suite's PostgreSQL pass runs this too.
#[tokio::test]
async fn a_nul_in_an_api_request_is_refused_and_changes_nothing() {
    let host = start();
    let admin = host.admin.clone();
    let key = host.tenant_with_key("acme").await;
    // The key's first use is recorded (its `last_used_at`, at most once a
    // minute): before the store's digest is taken.
    let (status, _) = host
        .api("GET", "/api/tenants/acme/api-keys", &key, None)
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = host.digest().await;
    let manual = json!({"availability": "busy", "status_text": "Vows"});
    for (method, path, body) in [
        ("POST", "/api/tenants", Some(json!({"name": "nul\u{0}"}))),
        (
            "POST",
            "/api/tenants/acme/api-keys",
            Some(json!({"label": "front\u{0}desk"})),
        ),
        ("PUT", "/api/presence/ana%00", Some(manual.clone())),
        (
            "PUT",
            "/api/presence/ana?tenant=ac%00me",
            Some(manual.clone()),
        ),
        (
            "PUT",
            "/api/presence/ana",
            Some(json!({"availability": "busy", "status_text": "Vows\u{0}"})),
        ),
        (
            "POST",
            "/api/notifications",
            Some(json!({"recipients": ["ana\u{0}"], "urgency": "general", "body": "Cake at 4"})),
        ),
    ] {
        let (status, answer) = host.api(method, path, &admin, body.clone()).await;
        assert_eq!(status, 400, "{method} {path} {body:?}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains("NUL")),
            "{method} {path}: {answer}"
        );
    }
    // A tenant's key meets the same answer, and a backslash before the
    // letters `u0000` is not a NUL.
    let (status, answer) = host
        .api(
            "PUT",
            "/api/presence/ana",
            &key,
            Some(json!({"availability": "busy", "status_text": "Vows\u{0}"})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        host.digest().await,
        before,
        "a refused request changed the store"
    );
    let (status, answer) = host
        .api(
            "PUT",
            "/api/presence/ana",
            &key,
            Some(json!({"availability": "busy", "status_text": "C:\\u0000 drive"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status_text"], "C:\\u0000 drive");
}
