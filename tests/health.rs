//! End to end: integration health. A provider answering 500s opens its
//! connection's circuit breaker, the health report turns degraded with a
//! recommendation, the breaker half-opens and closes when the provider
//! recovers, and the status push that waited goes out, once. The operator's
//! dashboard shows it in a real browser.

mod support;

use std::time::Duration;

use serde_json::json;
use support::slack::SlackEmulator;
use support::*;

fn host_for(slack: &SlackEmulator, health: &str) -> Host {
    let plugins = PluginsDir::new()
        .with_bundled("slack")
        .with_bundled("wedding-keywords");
    Host::start(
        plugins,
        &format!(
            "[presence]\npush_coalesce_ms = 50\n[health]\n{health}\n[plugins.slack]\n\
             extra_allowed_hosts = [\"{}\"]\n[plugins.slack.config]\napi_base = \"{}\"\n",
            slack.allowed_host(),
            slack.base_url()
        ),
        &[],
    )
}

/// Seeds a Slack connection for U1 and asks for a status: its push starts at once.
async fn push_a_status(host: &Host, slack: &SlackEmulator, text: &str) {
    slack.add_user("U1", "xoxp-u1");
    let admin = host.admin.clone();
    let (status, body) = host
        .api(
            "PUT",
            "/api/tenants/default/connections/slack:U1",
            &admin,
            Some(json!({"plugin": "slack", "user": "U1", "access_token": "xoxp-u1"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = host
        .api(
            "PUT",
            "/api/presence/U1",
            &admin,
            Some(json!({"availability": "busy", "status_text": text})),
        )
        .await;
    assert_eq!(status, 200);
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn breaker_alert(report: &serde_json::Value) -> Option<serde_json::Value> {
    report["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["id"] == "breaker:default/slack:U1")
        .cloned()
}

#[tokio::test]
async fn a_failing_provider_opens_the_breaker_and_recovers_with_nothing_lost() {
    let slack = SlackEmulator::start().await;
    let host = host_for(
        &slack,
        "breaker_failures = 3\nbreaker_open_ms = 2000\nbreaker_max_open_ms = 4000",
    );
    let (status, report) = host.get_json("/api/integrations/health").await;
    assert_eq!(status, 200);
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(host.get_json("/readyz").await.0, 200);

    // Slack answers users.profile.set with 500 three times, then recovers.
    for _ in 0..3 {
        slack.fail_next("users.profile.set", 500);
    }
    push_a_status(&host, &slack, "Vows").await;

    // Three failures open the breaker: health says degraded, and why, and what to do.
    let mut alert = None;
    wait_for("the breaker to open", Duration::from_secs(30), async || {
        let (_, report) = host.get_json("/api/integrations/health").await;
        alert = breaker_alert(&report);
        alert.is_some() && report["status"] == "degraded"
    })
    .await;
    let alert = alert.unwrap();
    assert!(
        alert["message"].as_str().unwrap().contains("slack"),
        "{alert}"
    );
    assert!(
        alert["recommendation"]
            .as_str()
            .unwrap()
            .contains("nothing is lost"),
        "{alert}"
    );
    let (_, report) = host.get_json("/api/integrations/health").await;
    let connection = report["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connection"] == "slack:U1")
        .cloned()
        .expect("the connection is reported");
    assert_ne!(connection["breaker"]["state"], "closed", "{connection}");
    assert_eq!(connection["errors"]["http_5xx"], 3, "{connection}");

    // The provider is back: the probe goes through, the breaker closes, and
    // the status that waited is shown, exactly once.
    wait_for("the status in Slack", Duration::from_secs(30), async || {
        slack.status("U1").is_some_and(|s| s.text.contains("Vows"))
    })
    .await;
    wait_for("health to recover", Duration::from_secs(10), async || {
        let (_, report) = host.get_json("/api/integrations/health").await;
        breaker_alert(&report).is_none() && report["status"] == "ok"
    })
    .await;
    let accepted = slack.accepted("users.profile.set");
    assert_eq!(
        accepted.iter().filter(|c| c.ok()).count(),
        1,
        "one successful push: {accepted:?}"
    );

    // The numbers, per plugin, per tenant, and for Prometheus.
    let (_, report) = host.get_json("/api/integrations/health").await;
    let slack_plugin = report["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plugin"] == "slack")
        .unwrap()
        .clone();
    assert_eq!(slack_plugin["errors"]["http_5xx"], 3, "{slack_plugin}");
    assert!(slack_plugin["last_success_at"].is_i64(), "{slack_plugin}");
    assert!(report["tenants"]["default"]["calls"].as_u64().unwrap() >= 4);
    let jobs: Vec<&str> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    for job in ["presence-scheduler", "status-outbox", "token-refresh"] {
        assert!(jobs.contains(&job), "{job} in {jobs:?}");
    }
    let resp = host
        .client
        .get(host.url("/metrics"))
        .bearer_auth(&host.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("presence_plugin_calls_total{")
                && l.contains("plugin=\"slack\"")
                && l.contains("kind=\"http_5xx\"")
                && l.ends_with(" 3")),
        "{text}"
    );
    assert!(text.contains("presence_plugin_call_duration_seconds_bucket"));

    // A tenant key sees its own view, not the operator's metrics.
    let key = host.tenant_with_key("acme").await;
    let (status, mine) = host
        .api("GET", "/api/integrations/health", &key, None)
        .await;
    assert_eq!(status, 200);
    assert!(mine["jobs"].as_array().unwrap().is_empty());
    assert!(mine["tenants"].get("default").is_none(), "{mine}");
    assert!(
        mine["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("calls").is_none() && p.get("last_failure").is_none()),
        "plugins' numbers mix tenants: {mine}"
    );
    assert!(
        mine["connections"].as_array().unwrap().is_empty(),
        "another tenant's connection: {mine}"
    );
    let resp = host
        .client
        .get(host.url("/metrics"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

/// Where Debian's chromium is, if anywhere (`cargo xtask test` installs it).
fn chromium() -> Option<std::path::PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

#[tokio::test]
async fn the_dashboard_shows_an_open_breaker_and_its_advice_in_a_real_browser() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED the_dashboard_shows_an_open_breaker_and_its_advice_in_a_real_browser: \
             no chromium on PATH (`cargo xtask test` installs Debian's chromium where it can)"
        );
        return;
    };
    let slack = SlackEmulator::start().await;
    let host = host_for(
        &slack,
        "breaker_failures = 2\nbreaker_open_ms = 600000\nbreaker_max_open_ms = 600000",
    );
    for _ in 0..5 {
        slack.fail_next("users.profile.set", 503);
    }
    push_a_status(&host, &slack, "Ceremony").await;
    wait_for("the breaker to open", Duration::from_secs(30), async || {
        let (_, report) = host.get_json("/api/integrations/health").await;
        breaker_alert(&report).is_some()
    })
    .await;

    // Without the admin token the dashboard asks for it.
    let resp = host
        .client
        .get(host.url("/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));

    let url = format!("http://operator:{}@{}/dashboard", host.admin, host.addr);
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && dom.contains("<h1>"),
        "chromium failed: {}\n{dom}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dom.contains("data-status=\"degraded\""), "{dom}");
    assert!(dom.contains("data-connection=\"slack:U1\""), "{dom}");
    assert!(dom.contains("open until"), "{dom}");
    assert!(dom.contains("nothing is lost"), "{dom}");
    assert!(dom.contains("data-plugin=\"slack\""), "{dom}");
    assert!(dom.contains("0.1.0"), "the plugin's version: {dom}");
    assert!(dom.contains("data-job=\"status-outbox\""), "{dom}");
    assert!(dom.contains("http_5xx"), "{dom}");
}

#[tokio::test]
async fn a_plugin_that_traps_is_an_alert_naming_its_version_and_what_to_do() {
    let plugins = PluginsDir::new()
        .with_fixture("echo", "echo", "")
        .with_fixture("panicky", "hostile", "[config]\nattack = \"panic\"");
    let host = Host::start(
        plugins,
        "[health.alert_to]\ntenant = \"default\"\nuser = \"ops\"\n",
        &[],
    );
    for _ in 0..10 {
        assert_eq!(host.post_json("/api/webhooks/panicky", "{}").await.0, 502);
        assert_eq!(host.post_json("/api/webhooks/echo", "{}").await.0, 200);
    }
    let (status, report) = host.get_json("/api/integrations/health").await;
    assert_eq!(status, 200, "degraded still answers 200");
    assert_eq!(report["status"], "degraded", "{report}");
    let alert = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "plugin:panicky")
        .cloned()
        .expect("an alert for the trapping plugin");
    let message = alert["message"].as_str().unwrap();
    let plugin = |name: &str| {
        report["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["plugin"] == name)
            .unwrap()
            .clone()
    };
    // Ten webhooks trapped; the good calls are the host's `describe`, once
    // or more (start-up tasks and the first webhooks may ask for the
    // plugin's features at once).
    let calls = plugin("panicky")["calls"].as_u64().unwrap();
    assert!((11..=14).contains(&calls), "{calls} calls");
    let failing = (1000.0 / calls as f64).round();
    assert!(
        message.contains(&format!("panicky 0.1.0 fails {failing} %"))
            && message.contains(&format!("(10 of {calls}, mostly trap)")),
        "{message}"
    );
    assert!(
        alert["recommendation"]
            .as_str()
            .unwrap()
            .contains("roll back"),
        "{alert}"
    );
    assert_eq!(plugin("panicky")["status"], "degraded");
    assert_eq!(plugin("panicky")["errors"]["trap"], 10);
    // Uptime is the share of good calls.
    let uptime = plugin("panicky")["uptime"]["last_5m"].as_f64().unwrap();
    let good = (calls - 10) as f64;
    assert!(
        (uptime - good / calls as f64).abs() < 1e-9,
        "{uptime} of {calls} calls"
    );
    assert_eq!(plugin("echo")["status"], "ok");
    assert_eq!(plugin("echo")["uptime"]["last_5m"], 1.0);
    assert!(plugin("echo")["latency_ms"]["p99"].is_f64());

    // The operator named in [health.alert_to] is told through the router.
    let db = host.db.pool().await;
    let mut told = None;
    for _ in 0..150 {
        told = sqlx::query_scalar::<_, String>(
            "SELECT body FROM notifications WHERE recipient = 'ops' AND subject LIKE '%panicky%'",
        )
        .fetch_optional(&db)
        .await
        .unwrap();
        if told.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = told.expect("no notification to the operator");
    assert!(
        body.contains("What to do: ") && body.contains("roll back"),
        "{body}"
    );
    db.close().await;
}
