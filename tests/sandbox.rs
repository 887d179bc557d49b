//! The hostile-plugin catalogue: each misbehaviour ends that one call with a clear
//! error, stores nothing, and leaves the host serving other plugins.

mod support;

use support::*;

/// A host with the well-behaved `echo` plugin and one `hostile` plugin per attack.
async fn start(attacks: &[(&str, &str)], config: &str) -> Host {
    let mut plugins = PluginsDir::new().with_fixture("echo", "echo", "");
    for (name, manifest) in attacks {
        plugins = plugins.with_fixture(name, "hostile", manifest);
    }
    Host::start(plugins, config, &[])
}

async fn assert_still_serving(host: &Host) {
    let (status, body) = host.post_json("/api/webhooks/echo", "{}").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "echo:"),
        "the host stopped serving other plugins"
    );
}

/// Posts to the attack plugin and checks status, error text, and an unchanged store.
async fn assert_refused(host: &Host, plugin: &str, status: u16, expected: &[&str]) {
    let before = host.digest().await;
    let (got, body) = host
        .post_json(&format!("/api/webhooks/{plugin}"), "{}")
        .await;
    assert_eq!(got, status, "{plugin}: {body}");
    for e in expected {
        assert!(body.contains(e), "{plugin}: expected {e:?} in {body}");
    }
    assert_eq!(host.digest().await, before, "{plugin}: the store changed");
    assert_eq!(
        host.get_json("/api/presence/victim").await.0,
        404,
        "{plugin}: a presence was stored"
    );
    assert_still_serving(host).await;
}

#[tokio::test]
async fn runaway_plugins_are_stopped_with_clear_errors() {
    let host = start(
        &[
            ("loop", "[config]\nattack = \"loop\"\n[limits]\ntimeout_ms = 300"),
            ("memory", "[config]\nattack = \"memory\"\n[limits]\nmemory_mib = 16"),
            ("output", "[config]\nattack = \"output\"\noutput_bytes = \"3000000\"\n[limits]\nmax_output_kib = 64"),
            ("panic", "[config]\nattack = \"panic\""),
            ("nobody", "[config]\nattack = \"nobody\""),
        ],
        "",
    )
    .await;
    assert_refused(&host, "loop", 502, &["plugin loop", "300 ms deadline"]).await;
    assert_refused(
        &host,
        "memory",
        502,
        &["plugin memory", "memory limit of 16 MiB"],
    )
    .await;
    assert_refused(
        &host,
        "output",
        502,
        &["plugin output", "above its limit of 65536 bytes"],
    )
    .await;
    assert_refused(&host, "panic", 502, &["plugin panic", "trapped"]).await;
    assert_refused(
        &host,
        "nobody",
        502,
        &["nobody: returned a presence signal or calendar event without a user id"],
    )
    .await;
    // Repeated failures do not wear the host down (no leaked pool slots).
    for _ in 0..20 {
        assert_refused(&host, "panic", 502, &["trapped"]).await;
    }
    let log = host.log();
    assert!(
        log.contains("plugin=loop") && log.contains("deadline"),
        "failures are logged with the plugin's name"
    );
}

#[tokio::test]
async fn outbound_http_goes_only_to_allowed_hosts() {
    let allowed = CountingServer::start().await;
    let forbidden = CountingServer::start().await;
    let a = allowed.addr.port();
    let f = forbidden.addr;
    let grant = format!("[capabilities]\nallowed_hosts = [\"http://localhost:{a}\"]\n");
    let attack = |kind: &str, target: String| {
        format!(
            "{grant}[config]\nattack = \"{kind}\"\ntarget = \"{target}\"\nspoofed_host = \"{f}\"\n"
        )
    };
    let host = start(
        &[
            ("direct", &attack("http", format!("http://{f}/"))),
            (
                "redirect",
                &attack(
                    "http",
                    format!("http://localhost:{a}/redirect?to=http://{f}/stolen"),
                ),
            ),
            (
                "host-header",
                &attack("http-host-header", format!("http://localhost:{a}/")),
            ),
            (
                "userinfo",
                &attack("http", format!("http://localhost:{a}@{f}/")),
            ),
            (
                "ip-literal",
                &attack("http", format!("http://127.0.0.1:{a}/")),
            ),
            (
                "decimal-ip",
                &attack("http", format!("http://2130706433:{}/", f.port())),
            ),
            ("scheme", &attack("http", "file:///etc/passwd".to_string())),
            ("allowed", &attack("http", format!("http://localhost:{a}/"))),
        ]
        .map(|(n, m)| (n, m.as_str())),
        "",
    )
    .await;

    for plugin in ["direct", "userinfo", "decimal-ip", "scheme"] {
        assert_refused(&host, plugin, 502, &["http refused", "NotAllowed("]).await;
    }
    assert_refused(&host, "ip-literal", 502, &["NotAllowed", "127.0.0.1"]).await;
    assert_refused(&host, "host-header", 502, &["NotAllowed", "Host"]).await;
    assert_eq!(
        allowed.hits(),
        0,
        "a refused request reached the allowed server"
    );
    assert_refused(&host, "redirect", 502, &["NotAllowed", "redirect refused"]).await;
    assert_eq!(
        allowed.hits(),
        1,
        "the first hop of the redirect is allowed"
    );
    assert_eq!(
        forbidden.hits(),
        0,
        "a request reached a host outside the allow-list"
    );

    // The positive control: an allowed request goes through.
    let (status, body) = host.post_json("/api/webhooks/allowed", "{}").await;
    assert_eq!((status, body.as_str()), (200, "reached: 200"));
    assert_eq!(allowed.hits(), 2);
}

#[tokio::test]
async fn a_signing_secret_is_never_sent_as_a_bearer_token() {
    let server = CountingServer::start().await;
    let target = format!("http://localhost:{}/", server.addr.port());
    let manifest = |bearer: &str| {
        format!(
            "[capabilities]\nallowed_hosts = [\"http://localhost:{}\"]\nsecrets = [\"signing\"]\nbearer_secrets = [\"api-key\"]\n[config]\nattack = \"http\"\ntarget = \"{target}\"\nbearer = \"{bearer}\"\n",
            server.addr.port()
        )
    };
    let plugins = PluginsDir::new()
        .with_fixture("echo", "echo", "")
        .with_fixture("exfiltrate", "hostile", &manifest("signing"))
        .with_fixture("api-client", "hostile", &manifest("api-key"));
    let host = Host::start(
        plugins,
        "",
        &[
            ("signing", b"hmac-key", false),
            ("api-key", b"token-123", false),
        ],
    );
    assert_refused(
        &host,
        "exfiltrate",
        502,
        &["CredentialUnavailable(", "not granted secret", "signing"],
    )
    .await;
    assert_eq!(server.hits(), 0, "the signing secret left the host");
    // The positive control: a bearer secret goes to an allowed (loopback) host.
    let (status, body) = host.post_json("/api/webhooks/api-client", "{}").await;
    assert_eq!((status, body.as_str()), (200, "reached: 200"));
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn secrets_files_and_sockets_are_out_of_reach() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let host = start(
        &[
            ("secret", "[config]\nattack = \"secret\""),
            ("file", "[config]\nattack = \"file\""),
            (
                "socket",
                &format!("[config]\nattack = \"socket\"\ntarget = \"{target}\""),
            ),
            (
                "kv-quota",
                "[config]\nattack = \"kv-quota\"\n[limits]\nkv_quota_kib = 256",
            ),
        ],
        "",
    )
    .await;
    assert_refused(
        &host,
        "secret",
        502,
        &["secret refused", "NotGranted(", "not-granted-secret"],
    )
    .await;
    assert_refused(&host, "file", 502, &["file refused"]).await;
    assert_refused(&host, "socket", 502, &["socket refused"]).await;
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the plugin opened a socket");

    // The kv quota stops the writes; what was written within quota stays (kv is
    // the plugin's own state), and nothing else changes.
    let (status, body) = host.post_json("/api/webhooks/kv-quota", "{}").await;
    assert_eq!(status, 502);
    assert!(body.contains("QuotaExceeded"), "{body}");
    let store = host.store().await;
    let keys = store
        .kv_list("kv-quota", "default", "", 1000)
        .await
        .unwrap();
    assert_eq!(keys.len(), 3, "256 KiB holds three 64 KiB values: {keys:?}");
    assert_still_serving(&host).await;
}

#[tokio::test]
async fn log_and_request_floods_are_capped_per_call_and_tenants_never_share_kv() {
    let server = CountingServer::start().await;
    let port = server.addr.port();
    let http_loop = |target: String| {
        format!(
            "[capabilities]\nallowed_hosts = [\"http://localhost:{port}\"]\n\
             [config]\nattack = \"http-loop\"\ntarget = \"{target}\"\n\
             [limits]\nmax_http_requests = 5\ntimeout_ms = 10000"
        )
    };
    let host = start(
        &[
            ("log-flood", "[config]\nattack = \"log-flood\""),
            ("http-loop", &http_loop(format!("http://localhost:{port}/"))),
            (
                "redirect-loop",
                &http_loop(format!(
                    "http://localhost:{port}/redirect?to=http://localhost:{port}/"
                )),
            ),
            ("kv-peek", "[config]\nattack = \"kv-peek\""),
        ],
        "",
    )
    .await;

    // A loop on an allowed API stops at the manifest's request cap.
    assert_refused(
        &host,
        "http-loop",
        502,
        &["http refused after 5 requests", "limits.max_http_requests"],
    )
    .await;
    assert_eq!(
        server.hits(),
        5,
        "only the allowed number of requests went out"
    );
    // Every request on the wire counts, redirect hops included: two sends of
    // two hops each, then the fifth request is the last.
    assert_refused(
        &host,
        "redirect-loop",
        502,
        &["http refused after 2 requests", "limits.max_http_requests"],
    )
    .await;
    assert_eq!(server.hits(), 10);

    // 10,000 lines in one call: the first 100 reach the log, then one note.
    let (status, body) = host.post_json("/api/webhooks/log-flood", "{}").await;
    assert_eq!(status, 200, "{body}");
    let mut log = host.log();
    for _ in 0..50 {
        if log.contains("the rest of this call's lines are dropped") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        log = host.log();
    }
    assert!(log.contains("more than 100 lines in one call"), "{log}");
    assert_eq!(log.matches("flood line").count(), 100);
    assert!(log.contains("flood line 99") && !log.contains("flood line 100"));

    // kv is namespaced by tenant: a call for one never sees another's note.
    let admin = host.admin.clone();
    for tenant in ["acme", "bloom"] {
        let (status, body) = host
            .api(
                "POST",
                "/api/tenants",
                &admin,
                Some(serde_json::json!({"name": tenant})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let peek = |tenant: &'static str| {
        let host = &host;
        async move {
            let (status, body) = host
                .post_json(&format!("/api/webhooks/kv-peek/{tenant}"), "{}")
                .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    assert_eq!(peek("acme").await, "left a note for acme");
    assert_eq!(peek("acme").await, "found: acme");
    assert_eq!(peek("bloom").await, "left a note for bloom");
    assert_eq!(peek("bloom").await, "found: bloom");
    assert_eq!(peek("acme").await, "found: acme");
}

#[tokio::test]
async fn a_plugin_cannot_speak_for_another_plugins_connection() {
    let host = start(
        &[(
            "impersonate",
            "[config]\nattack = \"impersonate\"\ntarget = \"echo:victim\"",
        )],
        "",
    )
    .await;
    let (status, body) = host
        .api(
            "PUT",
            "/api/tenants/default/connections/echo:victim",
            &host.admin.clone(),
            Some(serde_json::json!({"plugin": "echo", "user": "victim", "access_token": "t"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The delivery is answered (the plugin's own business), but the signal
    // naming echo's connection is dropped: victim has no presence.
    let (status, _) = host.post_json("/api/webhooks/impersonate", "{}").await;
    assert_eq!(status, 200);
    assert_eq!(host.get_json("/api/presence/victim").await.0, 404);
    assert!(
        host.log()
            .contains("signal for a connection this plugin does not have")
    );
    assert_still_serving(&host).await;
}
