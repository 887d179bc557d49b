//! End to end: OAuth connections against loopback emulators of each provider's
//! authorization server (RFC 6749, RFC 7636 and the providers' own docs).
//!
//! The real host and the real bundled Slack plugin; a person's consent is a
//! GET of the emulator's authorization URL, whose redirect leads back to the
//! host's callback.

#[path = "support/oauth.rs"]
mod oauth_emulator;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oauth_emulator::{Flavor, OAuthEmulator, RefreshFailure};
use serde_json::json;
use support::slack::SlackEmulator;
use support::*;

const CLIENT_ID: &str = "presence-client";
const CLIENT_SECRET: &[u8] = b"presence-client-secret";

fn provider_config(name: &str, emu: &OAuthEmulator, ttl_s: u64) -> String {
    let mut c = format!(
        "[oauth]\nstate_ttl_s = {ttl_s}\n[oauth.providers.{name}]\nclient_id = \"{CLIENT_ID}\"\n\
         authorize_url = \"{}\"\ntoken_url = \"{}\"\nrevoke_url = \"{}\"\n",
        emu.authorize_url(),
        emu.token_url(),
        emu.revoke_url()
    );
    if matches!(emu.flavor(), Flavor::Google | Flavor::Microsoft) {
        // ID tokens are verified against the emulator's keys.
        c.push_str(&format!(
            "jwks_url = \"{}\"\nissuer = \"{}\"\n",
            emu.jwks_url(),
            if emu.flavor() == Flavor::Microsoft {
                emu.issuer().replace(emu.ms_tenant_id(), "{tenantid}")
            } else {
                emu.issuer()
            }
        ));
    }
    c
}

/// A host with the Slack plugin pointed at `slack_api` and OAuth provider `slack` at `emu`.
fn slack_host(emu: &OAuthEmulator, slack_api: &SlackEmulator, ttl_s: u64) -> Host {
    let plugins = PluginsDir::new()
        .with_bundled("slack")
        .with_bundled("wedding-keywords");
    let config = format!(
        "[presence]\npush_coalesce_ms = 50\n[plugins.slack]\nextra_allowed_hosts = [\"{}\"]\n\
         [plugins.slack.config]\napi_base = \"{}\"\n{}",
        slack_api.allowed_host(),
        slack_api.base_url(),
        provider_config("slack", emu, ttl_s)
    );
    Host::start(
        plugins,
        &config,
        &[("oauth.slack.client-secret", CLIENT_SECRET, false)],
    )
}

/// A host whose test plugin `calendar-sync` connects through `provider` at `emu`
/// (the echo fixture, declaring `[oauth]`).
fn provider_host(name: &str, emu: &OAuthEmulator, scopes: &str) -> Host {
    let plugins = PluginsDir::new().with_fixture(
        "calendar-sync",
        "echo",
        &format!("[oauth]\nprovider = \"{name}\"\nscopes = [{scopes}]\n"),
    );
    let secret = format!("oauth.{name}.client-secret");
    Host::start(
        plugins,
        &provider_config(name, emu, 600),
        &[(secret.as_str(), CLIENT_SECRET, false)],
    )
}

/// What the person's browser goes through: start (by the tenant's app), the
/// provider's consent, and the redirect back. Returns the callback's status,
/// its page, and the callback URL (for replay tests).
async fn connect(host: &Host, key: &str, provider: &str, query: &str) -> (u16, String, String) {
    let resp = host
        .client
        .get(host.url(&format!("/api/oauth/{provider}/start?{query}")))
        .bearer_auth(key)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let started: serde_json::Value = resp.json().await.unwrap();
    let callback = consent(started["authorize_url"].as_str().unwrap()).await;
    let resp = reqwest::get(&callback).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap(), callback)
}

/// The provider's consent screen, approved: the redirect's target.
async fn consent(authorize_url: &str) -> String {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = browser.get(authorize_url).send().await.unwrap();
    assert_eq!(resp.status(), 302, "{}", resp.text().await.unwrap());
    resp.headers()["location"].to_str().unwrap().to_string()
}

async fn audit_actions(host: &Host, tenant: &str, prefix: &str) -> Vec<String> {
    let (_, audit) = host
        .get_json(&format!(
            "/api/tenants/{tenant}/audit?action={prefix}&limit=1000"
        ))
        .await;
    audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

fn database_contains(host: &Host, needle: &str) -> bool {
    ["presence.db", "presence.db-wal"].iter().any(|file| {
        std::fs::read(host.data_dir.path().join(file))
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

async fn access_token(host: &Host, tenant: &str, connection: &str, plugin: &str) -> String {
    let store = host.store().await;
    let credential = store
        .connection_credential(tenant, connection, plugin)
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    String::from_utf8(credential.token.expose().to_vec()).unwrap()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Slack's OAuth server, and its Web API accepting the tokens that server
/// issued and still honours, as the emulated person.
async fn slack_with_oauth() -> (Arc<OAuthEmulator>, SlackEmulator) {
    let emu =
        Arc::new(OAuthEmulator::start(Flavor::Slack, CLIENT_ID, "presence-client-secret").await);
    let slack_api = SlackEmulator::start().await;
    let authority = emu.clone();
    slack_api.accept_tokens(Arc::new(move |token| {
        authority
            .is_valid_access_token(token)
            .then(|| oauth_emulator::SLACK_USER_ID.to_string())
    }));
    (emu, slack_api)
}

#[tokio::test]
async fn a_person_connects_slack_with_pkce_and_the_host_keeps_only_ciphertext() {
    let (emu, slack_api) = slack_with_oauth().await;
    let host = slack_host(&emu, &slack_api, 600);
    let key = host.tenant_with_key("acme").await;

    let (status, page, callback) = connect(&host, &key, "slack", "user=U1").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Connected"), "{page}");

    // The authorization request: PKCE S256, a 256-bit state, the plugin's user scopes.
    let query = emu.last_authorize_query().unwrap();
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(get("code_challenge").map(|c| c.len()), Some(43));
    assert_eq!(get("state").map(|s| s.len()), Some(43));
    assert_eq!(
        get("user_scope").as_deref(),
        Some("users.profile:write,users:write")
    );
    assert_eq!(get("client_id").as_deref(), Some(CLIENT_ID));

    let (status, connection) = host
        .api("GET", "/api/tenants/acme/connections/slack:U1", &key, None)
        .await;
    assert_eq!(status, 200, "{connection}");
    assert_eq!(connection["provider"], "slack");
    assert_eq!(connection["status"], "active");
    assert_eq!(connection["account"], oauth_emulator::SLACK_USER_ID);
    assert_eq!(
        connection["scopes"],
        json!(["users.profile:write", "users:write"])
    );
    assert_eq!(connection["user"], "U1");
    assert!(connection.get("access_token").is_none());

    // At rest, both tokens are ciphertext only.
    let token = access_token(&host, "acme", "slack:U1", "slack").await;
    assert!(emu.is_valid_access_token(&token));
    let refresh = emu
        .current_refresh_token()
        .expect("Slack rotation issues refresh tokens");
    assert!(
        !database_contains(&host, &token),
        "the access token is in the database"
    );
    assert!(
        !database_contains(&host, &refresh),
        "the refresh token is in the database"
    );

    // The state is single-use: a replayed callback is refused and changes nothing.
    let before = host.digest().await;
    let resp = reqwest::get(&callback).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("already used"));
    // A state that was never issued, and a callback without one.
    let forged = callback.replace("state=", "state=x");
    assert_eq!(reqwest::get(&forged).await.unwrap().status(), 400);
    let bare = host.url("/api/oauth/slack/callback?code=abc");
    assert_eq!(reqwest::get(&bare).await.unwrap().status(), 400);
    assert_eq!(host.digest().await, before);

    // A state issued for Slack, presented at another provider's callback, is
    // refused there and still works where it belongs.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = browser
        .get(host.url("/api/oauth/slack/start?user=U2"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "without Accept: json, start redirects");
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&emu.authorize_url())
    );
    let resp = host
        .client
        .get(host.url("/api/oauth/slack/start?user=U2"))
        .bearer_auth(&key)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let started: serde_json::Value = resp.json().await.unwrap();
    let callback = consent(started["authorize_url"].as_str().unwrap()).await;
    let foreign = callback.replace("/api/oauth/slack/", "/api/oauth/zoom/");
    let resp = reqwest::get(&foreign).await.unwrap();
    assert_eq!(resp.status(), 400);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("issued for provider &quot;slack&quot;"),
        "{page}"
    );
    assert_eq!(reqwest::get(&callback).await.unwrap().status(), 200);

    // The plugin pushes with the connection's token, which it never sees.
    show_in_slack(&host, &key, &slack_api, "Vows").await;

    let actions = audit_actions(&host, "acme", "").await;
    for expected in ["oauth.started", "connection.connected"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
}

#[tokio::test]
async fn missing_scopes_denied_consent_and_expired_states_store_no_connection() {
    let emu = OAuthEmulator::start(Flavor::Slack, CLIENT_ID, "presence-client-secret").await;
    let slack_api = SlackEmulator::start().await;
    // States live 5 s: long enough for a whole round trip on a loaded machine.
    let host = slack_host(&emu, &slack_api, 5);
    let key = host.tenant_with_key("acme").await;

    // The person unticks users.profile:write: the grant cannot push statuses.
    emu.grant_only(&["users:write"]);
    let (status, page, _) = connect(&host, &key, "slack", "user=U1").await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("users.profile:write"), "{page}");
    emu.grant_all();

    // The person says no.
    emu.deny_next();
    let (status, page, _) = connect(&host, &key, "slack", "user=U1").await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("access_denied"), "{page}");

    // Too slow: the state expired before the callback.
    let resp = host
        .client
        .get(host.url("/api/oauth/slack/start?user=U1"))
        .bearer_auth(&key)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let started: serde_json::Value = resp.json().await.unwrap();
    let callback = consent(started["authorize_url"].as_str().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(5100)).await;
    let resp = reqwest::get(&callback).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("expired"));

    let (status, _) = host
        .api("GET", "/api/tenants/acme/connections/slack:U1", &key, None)
        .await;
    assert_eq!(status, 404);
    let actions = audit_actions(&host, "acme", "").await;
    assert!(
        actions.iter().any(|a| a == "connection.scope_missing"),
        "{actions:?}"
    );
    assert!(actions.iter().any(|a| a == "oauth.denied"), "{actions:?}");
    assert!(
        !actions.iter().any(|a| a == "connection.connected"),
        "{actions:?}"
    );

    // Start refuses what it cannot do, before anything is stored.
    for (query, expected) in [
        (
            "user=U1&plugin=wedding-keywords",
            "does not connect through",
        ),
        ("user=", "1-200"),
        ("user=U1&connection=bad%20name", "connection name"),
    ] {
        let resp = host
            .client
            .get(host.url(&format!("/api/oauth/slack/start?{query}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        assert!(resp.text().await.unwrap().contains(expected), "{query}");
    }
    let resp = host
        .client
        .get(host.url("/api/oauth/google/start?user=U1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// Zoom rotates refresh tokens on every use and takes HTTP Basic client auth.
#[tokio::test]
async fn twenty_concurrent_refreshes_make_one_token_request_and_keep_the_newest_refresh_token() {
    let emu = OAuthEmulator::start(Flavor::Zoom, CLIENT_ID, "presence-client-secret").await;
    let host = provider_host("zoom", &emu, "\"meeting:read\"");
    let key = host.tenant_with_key("acme").await;
    let (status, page, _) = connect(&host, &key, "zoom", "user=vendor-1").await;
    assert_eq!(status, 200, "{page}");
    let (_, connection) = host
        .api(
            "GET",
            "/api/tenants/acme/connections/calendar-sync:vendor-1",
            &key,
            None,
        )
        .await;
    let version = connection["version"].as_i64().unwrap();
    let first_refresh_token = emu.current_refresh_token().unwrap();

    emu.set_refresh_delay(Duration::from_millis(300));
    let path = "/api/tenants/acme/connections/calendar-sync:vendor-1/refresh";
    let calls = (0..20).map(|_| host.api("POST", path, &key, Some(json!({"if_version": version}))));
    let answers = futures::future::join_all(calls).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["version"].as_i64(), Some(version + 1), "{body}");
    }
    assert_eq!(emu.token_requests("refresh_token"), 1);

    // The rotated refresh token was stored: it is the provider's newest, and the
    // old one is dead.
    let store = host.store().await;
    let grant = store
        .refresh_grant("acme", "calendar-sync:vendor-1")
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    let stored = String::from_utf8(grant.refresh_token.expose().to_vec()).unwrap();
    assert_eq!(Some(stored.clone()), emu.current_refresh_token());
    assert_ne!(stored, first_refresh_token);

    // And it works: a second refresh uses it.
    let (status, body) = host.api("POST", path, &key, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(emu.token_requests("refresh_token"), 2);
    let actions = audit_actions(&host, "acme", "connection.refreshed").await;
    assert_eq!(actions.len(), 2, "{actions:?}");

    // Two processes on one database: the lock is in the store, so ten callers
    // on each still make one token request between them.
    let replica = host.replica();
    let version = body["version"].as_i64().unwrap();
    let calls = (0..20).map(|i| {
        let url = if i % 2 == 0 {
            host.url(path)
        } else {
            replica.url(path)
        };
        host.client
            .post(url)
            .bearer_auth(&key)
            .json(&json!({"if_version": version}))
            .send()
    });
    for resp in futures::future::join_all(calls).await {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["version"].as_i64(), Some(version + 1), "{body}");
    }
    assert_eq!(emu.token_requests("refresh_token"), 3);
    let store = host.store().await;
    let grant = store
        .refresh_grant("acme", "calendar-sync:vendor-1")
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    assert_eq!(
        Some(String::from_utf8(grant.refresh_token.expose().to_vec()).unwrap()),
        emu.current_refresh_token()
    );
}

/// Receives a tenant's webhook messages.
async fn capture_server() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let sink = sink.clone();
        async move {
            if let Ok(v) = serde_json::from_slice(&body) {
                sink.lock().unwrap().push(v);
            }
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}

/// Microsoft: the ID token is verified (keys, issuer with the tenant id,
/// audience, nonce); a refused refresh token means re-consent, a 503 does not.
#[tokio::test]
async fn invalid_grant_needs_reconsent_and_is_announced_while_outages_are_retried() {
    let emu = OAuthEmulator::start(Flavor::Microsoft, CLIENT_ID, "presence-client-secret").await;
    let host = provider_host("microsoft", &emu, "\"Calendars.Read\"");
    let key = host.tenant_with_key("acme").await;
    let (hook, seen) = capture_server().await;
    let admin = host.admin.clone();
    let (status, _) = host
        .api(
            "POST",
            "/api/tenants/acme/presence-webhooks",
            &admin,
            Some(json!({"url": hook})),
        )
        .await;
    assert_eq!(status, 201);

    let (status, page, _) = connect(
        &host,
        &key,
        "microsoft",
        "user=planner&connection=graph:planner",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let conn_path = "/api/tenants/acme/connections/graph:planner";
    let (_, connection) = host.api("GET", conn_path, &key, None).await;
    assert_eq!(
        connection["account"],
        oauth_emulator::MS_OBJECT_ID,
        "from the verified ID token"
    );
    assert!(
        connection["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "Calendars.Read")
    );

    // An outage: retried later, the connection stays usable.
    emu.fail_next_refresh(RefreshFailure::ServerError(503));
    let refresh = format!("{conn_path}/refresh");
    let (status, body) = host.api("POST", &refresh, &key, None).await;
    assert_eq!(status, 502, "{body}");
    let (_, connection) = host.api("GET", conn_path, &key, None).await;
    assert_eq!(connection["status"], "active");
    // Health counts it against the connection, as a token refresh failure.
    let (_, report) = host.get_json("/api/integrations/health").await;
    let troubled = report["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connection"] == "graph:planner")
        .cloned()
        .unwrap_or_else(|| panic!("not in health: {report}"));
    assert_eq!(troubled["errors"]["token_refresh"], 1, "{troubled}");

    // The person revoked the app: invalid_grant.
    emu.revoke_user_consent();
    let (status, body) = host.api("POST", &refresh, &key, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("re-consent"),
        "{body}"
    );
    let (_, connection) = host.api("GET", conn_path, &key, None).await;
    assert_eq!(connection["status"], "needs_reconsent");
    // No more requests to the provider until the person consents again.
    let requests = emu.token_requests("refresh_token");
    let (status, _) = host.api("POST", &refresh, &key, None).await;
    assert_eq!(status, 409);
    assert_eq!(emu.token_requests("refresh_token"), requests);
    eventually("the re-consent announcement", async || {
        seen.lock().unwrap().iter().any(|m| {
            m["type"] == "connection.needs_reconsent" && m["data"]["connection"] == "graph:planner"
        })
    })
    .await;

    // Health says what to do about it.
    let (_, report) = host.get_json("/api/integrations/health").await;
    assert_eq!(report["status"], "degraded", "{report}");
    let alert = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "reconsent:acme/graph:planner")
        .cloned()
        .expect("a re-consent alert");
    assert!(
        alert["recommendation"]
            .as_str()
            .unwrap()
            .contains("/api/oauth/microsoft/start?user=planner&connection=graph:planner"),
        "{alert}"
    );

    // Connecting again recovers it, and that is announced too.
    let (status, page, _) = connect(
        &host,
        &key,
        "microsoft",
        "user=planner&connection=graph:planner",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let (_, connection) = host.api("GET", conn_path, &key, None).await;
    assert_eq!(connection["status"], "active");
    eventually("the recovery announcement", async || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|m| m["type"] == "connection.recovered")
    })
    .await;
    let actions = audit_actions(&host, "acme", "connection.").await;
    for expected in [
        "connection.connected",
        "connection.refresh_failed",
        "connection.needs_reconsent",
        "connection.recovered",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }

    // Deleting the connection forgets it and audits the revocation.
    let (status, _) = host.api("DELETE", conn_path, &key, None).await;
    assert_eq!(status, 204);
    assert_eq!(host.api("GET", conn_path, &key, None).await.0, 404);
    assert!(
        audit_actions(&host, "acme", "connection.revoked")
            .await
            .len()
            == 1
    );
}

/// Slack: a token about to expire is refreshed ahead of time by the
/// scheduler, and a token Slack calls expired (`ok: false`, HTTP 200) is
/// refreshed and the push retried.
#[tokio::test]
async fn slack_tokens_are_refreshed_ahead_of_expiry_and_when_slack_refuses_them() {
    let (emu, slack_api) = slack_with_oauth().await;
    let host = slack_host(&emu, &slack_api, 600);
    let key = host.tenant_with_key("acme").await;

    // The first token lives 4 s: the scheduler refreshes it half-way through
    // its life, with nothing else happening (the refreshed one lives an hour:
    // the lifetime changes well before that refresh).
    emu.set_access_token_lifetime(4);
    let (status, page, _) = connect(&host, &key, "slack", "user=U1").await;
    assert_eq!(status, 200, "{page}");
    emu.set_access_token_lifetime(3600);
    eventually("the scheduled refresh", async || {
        emu.token_requests("refresh_token") == 1
    })
    .await;
    let (_, audit) = host
        .get_json("/api/tenants/acme/audit?action=connection.refreshed")
        .await;
    assert_eq!(audit["events"][0]["detail"]["reason"], "scheduled");
    assert_eq!(audit["events"][0]["detail"]["rotated"], true);
    eventually("the refreshed token stored", async || {
        let token = access_token(&host, "acme", "slack:U1", "slack").await;
        emu.is_valid_access_token(&token)
    })
    .await;

    show_in_slack(&host, &key, &slack_api, "Vows").await;
    assert_eq!(emu.token_requests("refresh_token"), 1);

    // Slack says the token expired: refresh, then the push is retried.
    let current = access_token(&host, "acme", "slack:U1", "slack").await;
    slack_api.fail_token(&current, "token_expired");
    show_in_slack(&host, &key, &slack_api, "Dinner").await;
    assert_eq!(emu.token_requests("refresh_token"), 2);
    let (_, audit) = host
        .get_json("/api/tenants/acme/audit?action=connection.refreshed")
        .await;
    assert_eq!(audit["events"][1]["detail"]["reason"], "refused");
}

/// Sets U1 busy with `text` and waits until Slack shows it.
async fn show_in_slack(host: &Host, key: &str, slack_api: &SlackEmulator, text: &str) {
    let (status, _) = host
        .api(
            "PUT",
            "/api/presence/U1",
            key,
            Some(json!({"availability": "busy", "status_text": text})),
        )
        .await;
    assert_eq!(status, 200);
    eventually(&format!("{text:?} in Slack"), async || {
        slack_api
            .status(oauth_emulator::SLACK_USER_ID)
            .is_some_and(|s| s.text.contains(text))
    })
    .await;
}

/// A resource server in the manner of Google's APIs: 401 with
/// `WWW-Authenticate: Bearer error="invalid_token"` unless the token is one
/// the authorization server still honours. Records the tokens it saw.
async fn resource_server(emu: Arc<OAuthEmulator>) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let emu = emu.clone();
        let log = log.clone();
        async move {
            use axum::response::IntoResponse;
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_string();
            log.lock().unwrap().push(token.clone());
            if emu.is_valid_access_token(&token) {
                (axum::http::StatusCode::OK, "{\"items\": []}").into_response()
            } else {
                (
                    axum::http::StatusCode::UNAUTHORIZED,
                    [("www-authenticate", "Bearer error=\"invalid_token\"")],
                    "{\"error\": {\"code\": 401, \"status\": \"UNAUTHENTICATED\"}}",
                )
                    .into_response()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// The HTTP capability itself (no scheduler running): an expiring token is
/// refreshed before the request, a 401 makes one refresh and one retry, and a
/// refused grant leaves the plugin a clear error.
#[tokio::test]
async fn the_http_capability_refreshes_before_expiry_and_retries_once_after_a_401() {
    use presence_host::capabilities::Grants;
    use presence_host::capabilities::http::{self, HttpError, OutboundRequest};
    use presence_host::config::{OAuthConfig, OAuthProviderConfig};
    use presence_host::oauth::OAuth;
    use presence_host::store::connections::{Connection, NewTokens};
    use presence_host::store::{MasterKey, SecretName, Store};

    let emu =
        Arc::new(OAuthEmulator::start(Flavor::Google, CLIENT_ID, "presence-client-secret").await);
    let (api, seen) = resource_server(emu.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = support::db::TestDb::new(dir.path());
    let store = Store::open(
        &db.url,
        MasterKey::load_or_create(None, dir.path()).unwrap(),
    )
    .await
    .unwrap();
    store
        .set_secret(
            &SecretName::parse("oauth.google.client-secret").unwrap(),
            CLIENT_SECRET,
        )
        .await
        .unwrap();
    let config = OAuthConfig {
        providers: [(
            "google".to_string(),
            OAuthProviderConfig {
                client_id: Some(CLIENT_ID.into()),
                authorize_url: Some(emu.authorize_url()),
                token_url: Some(emu.token_url()),
                jwks_url: Some(emu.jwks_url()),
                issuer: Some(emu.issuer()),
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    let oauth = Arc::new(OAuth::new(&config, Default::default()).unwrap());
    let provider = oauth.provider("google").unwrap().clone();

    // A consent, by hand: the code flow with PKCE against the emulator.
    let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
    let redirect = "http://127.0.0.1:9/callback";
    let mut authorize = url::Url::parse(&emu.authorize_url()).unwrap();
    authorize.query_pairs_mut().extend_pairs([
        ("client_id", CLIENT_ID),
        ("redirect_uri", redirect),
        ("response_type", "code"),
        (
            "scope",
            "openid https://www.googleapis.com/auth/calendar.readonly",
        ),
        ("access_type", "offline"),
        ("prompt", "consent"),
        ("state", "s"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    let location = consent(authorize.as_str()).await;
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .to_string();
    let tokens = oauth
        .exchange_code(&store, &provider, &code, verifier.secret(), redirect)
        .await
        .unwrap();
    let refresh_token = tokens.refresh_token.clone().expect("offline access");
    let mut connection = Connection::seeded("google:vendor", "calendar-sync", "vendor", None);
    connection.provider = Some("google".into());
    // Stored as expiring in 20 s: inside the one-minute margin.
    let soon = presence_host::store::now_ms() + 20_000;
    store
        .put_oauth_connection(
            "acme",
            &connection,
            &NewTokens {
                access_token: tokens.access_token.as_bytes(),
                refresh_token: Some(refresh_token.as_bytes()),
                expires_at: Some(soon),
                scopes: &[],
            },
        )
        .await
        .unwrap();

    let mut grants = Grants {
        plugin: presence_host::plugins::manifest::PluginName::parse("calendar-sync").unwrap(),
        allowed_hosts: vec![http::HostPattern::parse(&api).unwrap()],
        secrets: Default::default(),
        bearer_secrets: Default::default(),
        basic_secrets: Default::default(),
        limits: Default::default(),
        config: Default::default(),
    };
    grants.limits.http_timeout_ms = 5_000;
    let client = http::client();
    let wire = http::Wire::Network(&client);
    let mut budget = http::RequestBudget::new(20);
    let request = || OutboundRequest {
        method: "GET".into(),
        url: format!("{api}/calendar/v3/calendars/primary/events"),
        headers: vec![],
        body: vec![],
        connection: Some("google:vendor".into()),
        bearer_secret: None,
    };

    // 1. Expiring: refreshed first, so the request goes out once, with a fresh token.
    let response = http::send(
        wire,
        &store,
        &oauth,
        &grants,
        "acme",
        request(),
        &mut budget,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(emu.token_requests("refresh_token"), 1);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_ne!(seen.lock().unwrap()[0], *tokens.access_token);

    // 2. A token the provider no longer honours: 401, one refresh, one retry.
    store
        .put_oauth_connection(
            "acme",
            &connection,
            &NewTokens {
                access_token: b"ya29.revoked-elsewhere",
                refresh_token: Some(refresh_token.as_bytes()),
                expires_at: Some(presence_host::store::now_ms() + 3_600_000),
                scopes: &[],
            },
        )
        .await
        .unwrap();
    let response = http::send(
        wire,
        &store,
        &oauth,
        &grants,
        "acme",
        request(),
        &mut budget,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(emu.token_requests("refresh_token"), 2);
    let tokens_seen = seen.lock().unwrap().clone();
    assert_eq!(tokens_seen.len(), 3);
    assert_eq!(tokens_seen[1], "ya29.revoked-elsewhere");

    // 3. Consent revoked: the 401 comes back to the plugin after one failed
    // refresh, and the next request is refused before it leaves the host.
    emu.revoke_user_consent();
    let response = http::send(
        wire,
        &store,
        &oauth,
        &grants,
        "acme",
        request(),
        &mut budget,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 401);
    assert_eq!(emu.token_requests("refresh_token"), 3);
    let err = http::send(
        wire,
        &store,
        &oauth,
        &grants,
        "acme",
        request(),
        &mut budget,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, HttpError::CredentialUnavailable(m) if m.contains("re-consent")),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert_eq!(emu.token_requests("refresh_token"), 3);

    // A plugin can only use its own connections.
    grants.plugin = presence_host::plugins::manifest::PluginName::parse("other").unwrap();
    let err = http::send(
        wire,
        &store,
        &oauth,
        &grants,
        "acme",
        request(),
        &mut budget,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HttpError::CredentialUnavailable(_)));
    store.close().await;
}
