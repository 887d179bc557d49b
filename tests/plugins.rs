//! Loading plugins: bad manifests and components are refused with the file named,
//! the compile cache is never trusted blindly, and hot reload drops no request.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn bad_plugins() -> PluginsDir {
    let plugins = PluginsDir::new().with_fixture("echo", "echo", "");
    let echo = std::fs::read(fixture_wasm("echo")).unwrap();
    plugins.install("bad-toml", &echo, "schema_version = 1\nname = ");
    plugins.install(
        "future-wit",
        &echo,
        &fixture_manifest("future-wit", "").replace("wit = \"0.1.0\"", "wit = \"9.9.9\""),
    );
    plugins.install(
        "corrupt",
        b"\0asm\x01\0\0\0garbage",
        &fixture_manifest("corrupt", ""),
    );
    plugins.install(
        "wrong-world",
        &echo,
        &fixture_manifest("wrong-world", "")
            .replace("world = \"provider\"", "world = \"classifier\""),
    );
    plugins.install(
        "classifier-as-provider",
        &std::fs::read(bundled("wedding-keywords").join("plugin.wasm")).unwrap(),
        &fixture_manifest("classifier-as-provider", ""),
    );
    plugins.install(
        "greedy",
        &echo,
        &fixture_manifest("greedy", "[limits]\nmemory_mib = 100000"),
    );
    plugins
}

const EXPECTED: &[(&str, &str)] = &[
    ("bad-toml", "not a valid plugin manifest"),
    (
        "future-wit",
        "wit = \"9.9.9\" is not a wedsync:presence version this host accepts",
    ),
    ("corrupt", "not a valid WebAssembly component"),
    (
        "wrong-world",
        "does not fit the `classifier` world of wedsync:presence@0.1.0: it does not export \
         classify; it imports config, which the `classifier` world does not grant (it grants \
         types, log); it exports what a `provider` does: is `world = \"provider\"` meant",
    ),
    (
        "classifier-as-provider",
        "it does not export describe, handle-webhook, push-status, sync-calendar, \
         send-notification (a provider exports all five calls and answers `unsupported` for \
         those it does not offer); it exports what a `classifier` does",
    ),
    ("greedy", "limits.memory_mib"),
];

#[tokio::test]
async fn bad_plugins_are_refused_by_name_and_the_rest_load() {
    let host = Host::start(bad_plugins(), "", &[]);
    let (_, list) = host.get_json("/api/plugins").await;
    let loaded: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(loaded, ["echo"]);
    let failures = list["failures"].as_array().unwrap();
    assert_eq!(failures.len(), EXPECTED.len(), "{failures:?}");
    for (dir, message) in EXPECTED {
        let failure = failures
            .iter()
            .find(|f| f["dir"].as_str().unwrap().ends_with(dir))
            .unwrap_or_else(|| panic!("no failure for {dir}: {failures:?}"));
        let error = failure["error"].as_str().unwrap();
        assert!(error.contains(message), "{dir}: {error}");
        assert!(
            error.contains(&format!("{dir}/plugin.")),
            "{dir}: the error names no file: {error}"
        );
    }
    assert_eq!(host.post_json("/api/webhooks/echo", "{}").await.0, 200);
}

#[test]
fn plugin_check_explains_what_is_wrong() {
    let plugins = bad_plugins();
    for (dir, message) in EXPECTED {
        let path = plugins.path().join(dir);
        let (ok, _, err) = cli(&["plugin", "check", path.to_str().unwrap()], None);
        assert!(!ok, "{dir} passed the check");
        assert!(err.contains(message) && err.contains(dir), "{dir}: {err}");
    }
    let (ok, out, err) = cli(
        &[
            "plugin",
            "check",
            plugins.path().join("echo/plugin.wasm").to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("ok: echo 0.1.0 implements wedsync:presence@0.1.0 world provider"),
        "{out}"
    );
    for bundled_name in ["slack", "zoom", "calendar-webhook", "wedding-keywords"] {
        let (ok, out, err) = cli(
            &["plugin", "check", bundled(bundled_name).to_str().unwrap()],
            None,
        );
        assert!(ok && out.starts_with("ok:"), "{bundled_name}: {out}{err}");
    }
}

#[tokio::test]
async fn a_corrupt_compile_cache_entry_is_recompiled_not_trusted() {
    let plugins = PluginsDir::new().with_fixture("echo", "echo", "");
    let mut host = Host::start(plugins, "", &[]);
    assert_eq!(host.post_json("/api/webhooks/echo", "{}").await.0, 200);
    let cache = host.data_dir.path().join("cache");
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entries[0], &bytes).unwrap();

    host.restart();
    assert_eq!(host.post_json("/api/webhooks/echo", "{}").await.0, 200);
    let log = host.log();
    assert!(
        log.contains("cached component is corrupt; recompiling"),
        "{log}"
    );
    assert!(log.contains("cache=Recompiled"), "{log}");
    let repaired = std::fs::read(&entries[0]).unwrap();
    assert_ne!(repaired, bytes, "the corrupt entry was not replaced");
}

#[tokio::test]
async fn hot_reload_swaps_plugins_without_failing_a_request() {
    let plugins =
        PluginsDir::new().with_fixture("swap", "echo", "[config]\nreply = \"v1\"\nattack = \"ok\"");
    // Six clients as fast as they can go may pass the endpoint's rate limit
    // (1,000 a second): lifted, since this test is about the reload.
    let host = std::sync::Arc::new(Host::start(
        plugins,
        "[webhooks]\nper_endpoint_per_second = 1000000\n",
        &[],
    ));
    assert_eq!(
        host.post_json("/api/webhooks/swap", "{}").await.1,
        "echo:v1"
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..6 {
        let host = host.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                answers.push(host.post_json("/api/webhooks/swap", "{}").await);
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A half-written component is refused and the old version keeps serving...
    let wasm_path = host.plugins.path().join("swap/plugin.wasm");
    let hostile = std::fs::read(fixture_wasm("hostile")).unwrap();
    std::fs::write(&wasm_path, &hostile[..hostile.len() / 3]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = host.get_json("/api/plugins").await;
        if list["failures"].as_array().is_some_and(|f| !f.is_empty()) {
            let error = list["failures"][0]["error"].as_str().unwrap().to_string();
            assert!(error.contains("swap/plugin.wasm"), "{error}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken component was never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        host.post_json("/api/webhooks/swap", "{}").await.1,
        "echo:v1"
    );

    // A new folder that reuses the serving plugin's name is the one refused.
    host.plugins.install(
        "aaa-impostor",
        &hostile,
        &fixture_manifest("swap", "[config]\nattack = \"panic\""),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = host.get_json("/api/plugins").await;
        let failures = list["failures"].to_string();
        if failures.contains("aaa-impostor") {
            assert!(failures.contains("already used by"), "{failures}");
            break;
        }
        assert!(Instant::now() < deadline, "the impostor was never reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        host.post_json("/api/webhooks/swap", "{}").await.1,
        "echo:v1"
    );
    std::fs::remove_dir_all(host.plugins.path().join("aaa-impostor")).unwrap();

    // ...and the whole new component replaces it.
    let tmp = host.plugins.path().join("swap/.plugin.wasm.tmp");
    std::fs::write(&tmp, &hostile).unwrap();
    std::fs::rename(&tmp, &wasm_path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.post_json("/api/webhooks/swap", "{}").await.1 != "hostile:ok" {
        assert!(Instant::now() < deadline, "the new version never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut counts = std::collections::BTreeMap::new();
    for w in workers {
        for (status, body) in w.await.unwrap() {
            assert_eq!(status, 200, "a request failed during the reload: {body}");
            *counts.entry(body).or_insert(0) += 1;
        }
    }
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["echo:v1", "hostile:ok"],
        "{counts:?}"
    );
    assert!(counts.values().all(|&n| n > 0));
}

/// Runs cargo in a generated crate, with a target folder shared across runs.
fn cargo_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env(
            "CARGO_TARGET_DIR",
            workspace_root().join("target/template-check"),
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "cargo {args:?} failed in {}:\n{text}",
        dir.display()
    );
    text
}

/// An agency's journey: `plugin new`, the template's own tests, a wasm build,
/// `plugin check`, and the plugin deciding first in its tenant's chain.
#[tokio::test]
async fn plugin_templates_build_pass_their_tests_and_classify_in_a_tenant_chain() {
    let work = tempfile::tempdir().unwrap();
    let parent = work.path().to_str().unwrap();
    let mut built = Vec::new();
    for (name, world) in [("acme-rules", "classifier"), ("acme-sms", "provider")] {
        let (ok, out, err) = cli(
            &["plugin", "new", name, "--world", world, "--dir", parent],
            None,
        );
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!("created {world} plugin {name}")),
            "{out}"
        );
        let dir = work.path().join(name);
        let tests = cargo_in(&dir, &["test"]);
        assert!(tests.contains("test result: ok. 1 passed"), "{tests}");
        // `plugin build`: the wasm build, plugin.wasm beside plugin.toml, and its check.
        let target_dir = workspace_root().join("target/template-check");
        let (ok, out, err) = cli_with_env(
            &["plugin", "build", dir.to_str().unwrap()],
            None,
            &[("CARGO_TARGET_DIR", target_dir.as_os_str())],
        );
        assert!(ok, "{out}{err}");
        assert!(out.contains(&format!("world {world}")), "{out}{err}");
        assert!(dir.join("plugin.wasm").is_file());
        // Not a terminal: no spinner in the output.
        assert!(!err.contains("building"), "{err}");
        built.push(dir);
    }

    // A crate that does not compile: cargo's diagnostics, and no plugin.wasm.
    let broken = &built[0];
    let lib = broken.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        format!("{source}\nfn broken() -> u32 {{ \"not a number\" }}\n"),
    )
    .unwrap();
    let before = std::fs::read(broken.join("plugin.wasm")).unwrap();
    let (ok, _, err) = cli_with_env(
        &["plugin", "build", broken.to_str().unwrap()],
        None,
        &[(
            "CARGO_TARGET_DIR",
            workspace_root().join("target/template-check").as_os_str(),
        )],
    );
    assert!(
        !ok && err.contains("cargo build failed") && err.contains("mismatched types"),
        "{err}"
    );
    assert_eq!(std::fs::read(broken.join("plugin.wasm")).unwrap(), before);
    std::fs::write(&lib, source).unwrap();
    let (ok, _, err) = cli(&["plugin", "build", work.path().to_str().unwrap()], None);
    assert!(!ok && err.contains("has no Cargo.toml"), "{err}");

    // Agency "acme" runs its rules before the bundled ones; tenant "default" does not.
    let plugins = PluginsDir::new()
        .with_bundled("calendar-webhook")
        .with_bundled("wedding-keywords");
    let rules = std::fs::read(built[0].join("plugin.wasm")).unwrap();
    plugins.install(
        "acme-rules",
        &rules,
        &std::fs::read_to_string(built[0].join("plugin.toml")).unwrap(),
    );
    let key = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let host = Host::start(
        plugins,
        "[tenants.acme]\nclassifiers = [\"acme-rules\", \"wedding-keywords\"]\n",
        &[("calendar-webhook.signing-secret", key.as_bytes(), true)],
    );
    let now_ms = now_s() * 1000;
    for (tenant, title, expected) in [
        (
            "acme",
            "Cake tasting with the couple",
            "🍰 Menu tasting - Old Barn",
        ),
        ("acme", "Venue walkthrough", "🏰 Venue visit - on-site"),
        (
            "default",
            "Cake tasting with the couple",
            "💑 Client consultation - Cake tasting with the couple",
        ),
    ] {
        let body = serde_json::json!({"type": "event.upserted", "user": "bea", "event": {
            "id": title, "title": title, "location": "Old Barn", "start": now_ms - 1000, "end": now_ms + 600_000}})
        .to_string();
        let id = format!("msg-{tenant}-{title}");
        let path = format!("/api/webhooks/calendar-webhook/{tenant}");
        let (status, text) = host
            .post(
                &path,
                &standard_webhook_headers(key, &id, now_s(), &body),
                body,
            )
            .await;
        assert_eq!(status, 200, "{text}");
        let (_, presence) = host
            .get_json(&format!("/api/presence/bea?tenant={tenant}"))
            .await;
        assert_eq!(presence["status_text"], expected, "{tenant}: {title}");
    }
}

/// `plugin run`'s JSON report of one call.
fn run_json(args: &[&str]) -> (bool, serde_json::Value, String) {
    let mut all = vec!["plugin", "run"];
    all.extend_from_slice(args);
    all.push("--json");
    let (ok, out, err) = cli(&all, None);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (ok, report, err)
}

fn recorded(name: &str) -> String {
    workspace_root()
        .join("tests/fixtures/recorded")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn plugin_run_replays_a_recorded_slack_event_and_reports_its_signals_and_cost() {
    let slack = bundled("slack");
    let slack = slack.to_str().unwrap();
    let event = recorded("slack-user-status-changed.json");
    let imports = recorded("slack-imports.json");
    // Signed at 2026-05-29T10:00:00Z: the plugin's clock is set to then.
    let (ok, report, err) = run_json(&[slack, &event, "--imports", &imports, "--at", "1780048800"]);
    assert!(ok, "{report}{err}");
    let result = &report["result"]["ok"];
    assert_eq!(result["response"]["status"], 200, "{report}");
    assert_eq!(result["delivery_id"], "Ev08MFMKH6");
    let signals = result["signals"].as_array().unwrap();
    assert_eq!(signals.len(), 1, "{report}");
    assert_eq!(signals[0]["user"], "U0G9QF9C6");
    assert_eq!(signals[0]["availability"], "busy");
    assert_eq!(signals[0]["status_text"], "Ceremony prep - Old Barn");
    assert_eq!(signals[0]["expires"], 1_780_063_200_000i64);
    let cost = &report["cost"];
    assert!(cost["fuel"].as_u64().unwrap() > 1_000, "{cost}");
    let peak = cost["peak_memory_bytes"].as_u64().unwrap();
    assert!(peak > 0 && peak <= 16 << 20, "{cost}");
    assert!(cost["output_bytes"].as_u64().unwrap() > 0, "{cost}");
    assert_eq!(cost["output_limit_bytes"], 1 << 20);
    let calls = cost["host_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{cost}");
    assert_eq!(calls[0]["import"], "secrets.hmac-verify");
    assert_eq!(calls[0]["answer"], "true");
    assert!(
        calls[0]["args"]
            .as_str()
            .unwrap()
            .starts_with("\"slack.signing-secret\" sha256"),
        "{cost}"
    );
    // The secret's value appears nowhere in the report.
    assert!(
        !report
            .to_string()
            .contains("8f742231b10e8888abcd99yyyzzz85a5")
    );

    // The same for a person: the signal and the host call, in words.
    let (ok, out, err) = cli(
        &[
            "plugin",
            "run",
            slack,
            &event,
            "--imports",
            &imports,
            "--at",
            "2026-05-29T10:00:00Z",
        ],
        None,
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("signal   U0G9QF9C6 busy \"Ceremony prep - Old Barn\""),
        "{out}"
    );
    assert!(
        out.contains("secrets.hmac-verify") && out.contains("fuel"),
        "{out}"
    );

    // Now, the recording is stale: the plugin refuses it and the run fails.
    let (ok, report, _) = run_json(&[slack, &event, "--imports", &imports]);
    assert!(!ok);
    let fault = report["result"]["fault"].as_str().unwrap();
    assert!(fault.contains("outside the 300 s window"), "{report}");
    // Without the secret the host says which one is missing.
    let (ok, report, _) = run_json(&[slack, &event, "--at", "1780048800"]);
    assert!(!ok);
    assert!(
        report["cost"]["host_calls"][0]["answer"]
            .as_str()
            .unwrap()
            .contains("NotSet(\"slack.signing-secret\")"),
        "{report}"
    );
}

#[test]
fn plugin_run_answers_outbound_requests_from_recordings_inside_the_allow_list() {
    let plugins = PluginsDir::new().with_fixture(
        "hostile",
        "hostile",
        "[capabilities]\nallowed_hosts = [\"https://api.example.com\"]\n[config]\nattack = \"http\"\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.json");
    std::fs::write(
        &request,
        r#"{"headers": [["content-type", "text/plain"]], "body": "hi"}"#,
    )
    .unwrap();
    let imports = |target: &str| {
        let path = dir.path().join("imports.json");
        std::fs::write(
            &path,
            serde_json::json!({
                "config": {"target": target},
                "http": [{"method": "GET", "url": "https://api.example.com/v1/*", "status": 202,
                          "json": {"queued": true}},
                         {"method": "GET", "url": "https://elsewhere.example.net/x", "status": 200}]
            })
            .to_string(),
        )
        .unwrap();
        path
    };
    let plugin = plugins.path().join("hostile");
    let plugin = plugin.to_str().unwrap();
    let request = request.to_str().unwrap();

    let allowed = imports("https://api.example.com/v1/people");
    let (ok, report, err) = run_json(&[plugin, request, "--imports", allowed.to_str().unwrap()]);
    assert!(ok, "{report}{err}");
    assert_eq!(report["result"]["ok"]["response"]["body"], "reached: 202");
    let calls = report["cost"]["host_calls"].as_array().unwrap();
    let call = calls.last().unwrap();
    assert_eq!(call["import"], "http.send", "{report}");
    assert!(
        calls[..calls.len() - 1]
            .iter()
            .all(|c| c["import"] == "config.get"),
        "{report}"
    );
    assert_eq!(
        call["args"],
        "GET https://api.example.com/v1/people (0 body bytes)"
    );
    assert_eq!(call["answer"], "202 (15 bytes)");

    // A recording does not widen the manifest's allow-list.
    let outside = imports("https://elsewhere.example.net/x");
    let (ok, report, _) = run_json(&[plugin, request, "--imports", outside.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        report["result"]["fault"]
            .as_str()
            .unwrap()
            .contains("NotAllowed"),
        "{report}"
    );
    // An allowed request nobody recorded an answer for says so.
    let unrecorded = imports("https://api.example.com/v2/people");
    let (ok, report, _) = run_json(&[plugin, request, "--imports", unrecorded.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        report["result"]["fault"]
            .as_str()
            .unwrap()
            .contains("no recorded answer for GET https://api.example.com/v2/people"),
        "{report}"
    );
}

#[test]
fn plugin_run_classifies_an_event_and_sends_a_message_through_a_recorded_api() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        r#"{"title": "Smith wedding ceremony", "location": "Old Barn",
            "start": "2026-06-20T14:00:00+01:00", "end": "2026-06-20T16:00:00+01:00"}"#,
    )
    .unwrap();
    let keywords = bundled("wedding-keywords");
    let (ok, report, err) = run_json(&[keywords.to_str().unwrap(), event.to_str().unwrap()]);
    assert!(ok, "{report}{err}");
    assert_eq!(report["export"], "classify");
    assert_eq!(report["result"]["ok"]["category"], "ceremony", "{report}");
    assert!(report["cost"]["fuel"].as_u64().unwrap() > 0);
    // A call the plugin's world does not have is named as such.
    let (ok, _, err) = cli(
        &[
            "plugin",
            "run",
            keywords.to_str().unwrap(),
            event.to_str().unwrap(),
            "--export",
            "handle-webhook",
        ],
        None,
    );
    assert!(!ok);
    assert!(
        err.contains("handle-webhook is a provider's call; wedding-keywords is a classifier"),
        "{err}"
    );

    // A channel plugin's send, answered by a recorded Messages API reply.
    let message = dir.path().join("message.json");
    std::fs::write(
        &message,
        r#"{"id": "ntf_1", "recipient": "+15558675310", "subject": null,
            "body": "Cake arrives 15:30", "urgency": "high"}"#,
    )
    .unwrap();
    let imports = |secrets: serde_json::Value| {
        let path = dir.path().join("imports.json");
        std::fs::write(
            &path,
            serde_json::json!({
                "secrets": secrets,
                "config": {"account_sid": "AC00000000000000000000000000000001",
                           "from_number": "+15017122661", "api_key_sid": "SK1"},
                "http": [{"method": "POST",
                          "url": "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json",
                          "status": 201,
                          "json": {"sid": "SM00000000000000000000000000000042", "status": "queued"}}]
            })
            .to_string(),
        )
        .unwrap();
        path
    };
    let twilio = bundled("twilio");
    let send = |imports: &std::path::Path| {
        run_json(&[
            twilio.to_str().unwrap(),
            message.to_str().unwrap(),
            "--export",
            "send-notification",
            "--imports",
            imports.to_str().unwrap(),
        ])
    };
    // A recorded answer replaces only the wire: without its API key secret the
    // plugin's request fails as it would when serving.
    let (ok, report, _) = send(&imports(serde_json::json!({})));
    assert!(!ok);
    assert!(
        report["result"]["fault"]
            .as_str()
            .unwrap()
            .contains("twilio.api-key-secret"),
        "{report}"
    );
    let (ok, report, err) = send(&imports(
        serde_json::json!({"twilio.api-key-secret": "api-secret"}),
    ));
    assert!(ok, "{report}{err}");
    assert_eq!(
        report["result"]["ok"]["provider_message_id"],
        "SM00000000000000000000000000000042"
    );
    let send = report["cost"]["host_calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["import"] == "http.send")
        .cloned()
        .unwrap_or_else(|| panic!("no http.send in {report}"));
    assert!(
        send["args"]
            .as_str()
            .unwrap()
            .starts_with("POST https://api.twilio.com/"),
        "{send}"
    );
    assert!(
        send["answer"].as_str().unwrap().starts_with("201"),
        "{send}"
    );
}
