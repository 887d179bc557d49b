//! Slack status push, end to end: the Slack emulator answers as Slack's Web API
//! and Events API docs say (checked first, on its own), then the sandboxed
//! `slack` plugin pushes presences to it through the real host, which adds the
//! connection's token.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presence_host::config::PluginOverrides;
use presence_host::model::{Availability, Category, PluginFault, Presence, SignalSource};
use presence_host::store::connections::Connection;
use presence_host::{App, Config, Running};
use serde_json::{Value, json};
use support::slack::{SIGNING_SECRET, SlackEmulator, SlackStatus};
use support::*;

const PROFILE_SET: &str = "users.profile.set";
const SET_PRESENCE: &str = "users.setPresence";

async fn call(
    emulator: &SlackEmulator,
    method: &str,
    token: Option<&str>,
    content_type: &str,
    body: String,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/api/{method}", emulator.base_url()))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, response.json().await.unwrap())
}

async fn set_status(
    emulator: &SlackEmulator,
    token: Option<&str>,
    text: &str,
    emoji: &str,
) -> Value {
    let body =
        json!({"profile": {"status_text": text, "status_emoji": emoji, "status_expiration": 0}});
    let (status, _, answer) = call(
        emulator,
        PROFILE_SET,
        token,
        "application/json; charset=utf-8",
        body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

// Slack's Web API docs: errors are HTTP 200 with ok:false; not_authed without a
// token, invalid_auth for an unknown one; users.profile.set refuses status_text
// over 100 characters with too_long; rate limits are HTTP 429 with Retry-After.
#[tokio::test]
async fn the_emulator_answers_as_slacks_web_api() {
    let slack = SlackEmulator::start().await;
    slack.add_user("U1", "xoxp-u1");

    let ok = set_status(&slack, Some("xoxp-u1"), "At the venue", ":european_castle:").await;
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["profile"]["status_text"], "At the venue");
    assert_eq!(ok["profile"]["status_emoji"], ":european_castle:");
    assert_eq!(
        slack.status("U1"),
        Some(SlackStatus::new("At the venue", ":european_castle:", 0))
    );

    assert_eq!(
        set_status(&slack, None, "x", "").await["error"],
        "not_authed"
    );
    assert_eq!(
        set_status(&slack, Some("xoxp-nobody"), "x", "").await["error"],
        "invalid_auth"
    );
    let hundred = "é".repeat(100);
    assert_eq!(
        set_status(&slack, Some("xoxp-u1"), &hundred, "").await["ok"],
        true
    );
    assert_eq!(
        set_status(&slack, Some("xoxp-u1"), &format!("{hundred}!"), "").await["error"],
        "too_long"
    );
    assert_eq!(
        set_status(&slack, Some("xoxp-u1"), "Shoot", "📸").await["error"],
        "invalid_emoji_not_allowed"
    );
    assert_eq!(
        set_status(&slack, Some("xoxp-u1"), "", ":camera:").await["error"],
        "must_clear_both_status_text_and_status_emoji"
    );

    // A form body, the token as a field and the profile as URL-encoded JSON.
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", "xoxp-u1")
        .append_pair(
            "profile",
            r#"{"status_text":"Tasting","status_emoji":":cake:"}"#,
        )
        .finish();
    let (status, _, answer) = call(
        &slack,
        PROFILE_SET,
        None,
        "application/x-www-form-urlencoded",
        form,
    )
    .await;
    assert_eq!((status, &answer["ok"]), (200, &json!(true)), "{answer}");
    // JSON without a charset works, with Slack's warning.
    let (_, _, answer) = call(
        &slack,
        SET_PRESENCE,
        Some("xoxp-u1"),
        "application/json",
        json!({"presence": "away"}).to_string(),
    )
    .await;
    assert_eq!(
        (&answer["ok"], &answer["warning"]),
        (&json!(true), &json!("missing_charset"))
    );
    assert_eq!(slack.presence("U1").as_deref(), Some("away"));
    let (_, _, answer) = call(
        &slack,
        SET_PRESENCE,
        Some("xoxp-u1"),
        "application/x-www-form-urlencoded",
        "presence=busy".into(),
    )
    .await;
    assert_eq!(answer["error"], "invalid_presence");

    slack.rate_limit(SET_PRESENCE, 1, Duration::from_secs(30));
    let form = || "presence=auto".to_string();
    let content_type = "application/x-www-form-urlencoded";
    let (status, _, _) = call(&slack, SET_PRESENCE, Some("xoxp-u1"), content_type, form()).await;
    assert_eq!(status, 200);
    let (status, retry_after, answer) =
        call(&slack, SET_PRESENCE, Some("xoxp-u1"), content_type, form()).await;
    assert_eq!(
        (status, &answer),
        (429, &json!({"ok": false, "error": "ratelimited"}))
    );
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=30).contains(&seconds), "{seconds}");

    slack.revoke_token("xoxp-u1");
    assert_eq!(
        set_status(&slack, Some("xoxp-u1"), "x", "").await["error"],
        "token_revoked"
    );

    let accepted = slack.accepted(PROFILE_SET);
    assert_eq!(accepted.len(), 3, "{accepted:#?}");
    assert!(accepted.iter().all(|c| c.user.as_deref() == Some("U1")));
    assert_eq!(accepted[2].fields["profile"]["status_emoji"], ":cake:");
}

/// A loopback receiver for events that answers with a scripted list of statuses
/// (then 200) and keeps every request's headers and body.
struct EventsReceiver {
    url: String,
    received: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>,
}

impl EventsReceiver {
    async fn start(script: Vec<(u16, bool)>) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let log = received.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (log, script) = (log.clone(), script.clone());
                async move {
                    log.lock().unwrap().push((headers, body));
                    let (status, no_retry) =
                        script.lock().unwrap().pop_front().unwrap_or((200, false));
                    let mut response = axum::response::IntoResponse::into_response(
                        axum::http::StatusCode::from_u16(status).unwrap(),
                    );
                    if no_retry {
                        response
                            .headers_mut()
                            .insert("x-slack-no-retry", "1".parse().unwrap());
                    }
                    response
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, received }
    }

    fn received(&self) -> Vec<(axum::http::HeaderMap, String)> {
        self.received.lock().unwrap().clone()
    }
}

fn header<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

// The Events API: user_change in an event_callback envelope, signed with
// v0=HMAC-SHA256("v0:{ts}:{body}"), retried on a non-2xx with X-Slack-Retry-Num
// and X-Slack-Retry-Reason, not retried after X-Slack-No-Retry: 1.
#[tokio::test]
async fn status_changes_come_back_as_signed_user_change_events() {
    let slack = SlackEmulator::start().await;
    slack.add_user("U1", "xoxp-u1");
    let receiver = EventsReceiver::start(vec![(500, false)]).await;
    slack.send_events_to(&receiver.url, SIGNING_SECRET);

    set_status(&slack, Some("xoxp-u1"), "Ceremony prep", ":camera:").await;
    slack.flush().await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "one failure, one retry");
    for (headers, body) in &got {
        let ts: i64 = header(headers, "x-slack-request-timestamp")
            .unwrap()
            .parse()
            .unwrap();
        assert!((now_s() - ts).abs() < 60);
        assert_eq!(
            header(headers, "x-slack-signature").unwrap(),
            slack_signature(SIGNING_SECRET, ts, body)
        );
    }
    assert_eq!(header(&got[0].0, "x-slack-retry-num"), None);
    assert_eq!(header(&got[1].0, "x-slack-retry-num"), Some("1"));
    assert_eq!(
        header(&got[1].0, "x-slack-retry-reason"),
        Some("http_error")
    );
    assert_eq!(got[0].1, got[1].1, "a retry carries the same payload");
    let payload: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(payload["type"], "event_callback");
    assert_eq!(payload["team_id"], support::slack::TEAM_ID);
    assert_eq!(payload["api_app_id"], support::slack::API_APP_ID);
    assert!(payload["event_id"].as_str().unwrap().starts_with("Ev"));
    assert!(payload["event_time"].as_i64().unwrap() > 0);
    let event = &payload["event"];
    assert_eq!(event["type"], "user_change");
    assert_eq!(event["user"]["id"], "U1");
    assert_eq!(event["user"]["profile"]["status_text"], "Ceremony prep");
    assert_eq!(event["user"]["profile"]["status_emoji"], ":camera:");
    assert_eq!(event["user"]["profile"]["status_expiration"], 0);

    // The same status again changes nothing, so Slack sends nothing.
    set_status(&slack, Some("xoxp-u1"), "Ceremony prep", ":camera:").await;
    slack.flush().await;
    assert_eq!(receiver.received().len(), 2);

    // The person clears their status in the client; the receiver refuses, no retries.
    let receiver = EventsReceiver::start(vec![(503, true)]).await;
    slack.send_events_to(&receiver.url, SIGNING_SECRET);
    let attempts = slack.person_sets_status("U1", SlackStatus::default()).await;
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].status, Some(503));
    assert_eq!(
        attempts[0].payload()["event"]["user"]["profile"]["status_text"],
        ""
    );
    assert_eq!(slack.status("U1"), Some(SlackStatus::default()));

    // Nobody listening: the first try and three retries, then Slack gives up.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", closed.local_addr().unwrap());
    drop(closed);
    slack.send_events_to(&url, SIGNING_SECRET);
    let attempts = slack
        .send_event(json!({"type": "user_huddle_changed", "user": slack.user_object("U1")}))
        .await;
    let reasons: Vec<_> = attempts.iter().map(|a| a.retry_reason.as_deref()).collect();
    assert_eq!(
        reasons,
        [
            None,
            Some("connection_failed"),
            Some("connection_failed"),
            Some("connection_failed")
        ]
    );
    assert_eq!(attempts.last().unwrap().retry_num, 3);
}

const TENANT: &str = "acme";

/// The real host, in process, with the bundled slack plugin pointed at `slack`,
/// and a connection `slack:U1` whose token is `xoxp-token-u1`.
struct PushingHost {
    running: Running,
    _data: tempfile::TempDir,
    _plugins: PluginsDir,
}

impl PushingHost {
    async fn start(slack: &SlackEmulator) -> Self {
        let data = tempfile::tempdir().unwrap();
        let plugins = PluginsDir::new().with_bundled("slack");
        let mut config = Config {
            data_dir: data.path().to_path_buf(),
            plugins_dir: Some(plugins.path().to_path_buf()),
            hot_reload: false,
            ..Config::default()
        };
        config.plugins.insert(
            "slack".into(),
            PluginOverrides {
                extra_allowed_hosts: vec![slack.allowed_host()],
                config: BTreeMap::from([("api_base".to_string(), slack.base_url())]),
                ..Default::default()
            },
        );
        let running = App::start(config).await.unwrap();
        assert!(
            running.app.registry.get("slack").is_some(),
            "slack did not load: {:?}",
            running.app.registry.failures()
        );
        let connection = Connection::seeded("slack:U1", "slack", "U1", None);
        running
            .app
            .store
            .put_connection(TENANT, &connection, b"xoxp-token-u1")
            .await
            .unwrap();
        Self {
            running,
            _data: data,
            _plugins: plugins,
        }
    }

    fn app(&self) -> &Arc<App> {
        &self.running.app
    }

    async fn push(&self, connection: &str, presence: &Presence) -> Result<(), PluginFault> {
        let plugin = self.app().registry.get("slack").unwrap();
        self.app()
            .runtime
            .push_status(&plugin.pre, &plugin.grants, TENANT, connection, presence)
            .await
            .expect("the plugin call ran to its end")
    }
}

/// A derived presence, read from JSON so that fields the model gains later
/// (with serde defaults) need no change here.
fn presence(availability: Availability, text: Option<&str>, emoji: Option<&str>) -> Presence {
    serde_json::from_value(json!({
        "user": "U1",
        "availability": availability,
        "status_text": text,
        "status_emoji": emoji,
        "until": 1_900_000_000_000_i64,
        "category": Category::Venue,
        "source": SignalSource::Calendar,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_status_sets_the_status_and_presence_with_the_connections_token() {
    let slack = SlackEmulator::start().await;
    slack.add_user("U1", "xoxp-token-u1");
    let host = PushingHost::start(&slack).await;

    let venue = presence(
        Availability::Away,
        Some("🏰 Venue visit - on-site"),
        Some("🏰"),
    );
    host.push("slack:U1", &venue).await.unwrap();

    let calls = slack.calls();
    assert_eq!(
        calls.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(),
        [PROFILE_SET, SET_PRESENCE]
    );
    let (profile, presence_call) = (&calls[0], &calls[1]);
    assert_eq!(profile.token.as_deref(), Some("xoxp-token-u1"));
    assert_eq!(profile.user.as_deref(), Some("U1"));
    assert_eq!(
        profile.content_type.as_deref(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        profile.fields,
        json!({"profile": {
            "status_text": "🏰 Venue visit - on-site",
            "status_emoji": ":european_castle:",
            "status_expiration": 1_900_000_000,
        }})
    );
    assert!(profile.ok() && profile.warnings.is_empty(), "{profile:?}");
    assert_eq!(presence_call.token.as_deref(), Some("xoxp-token-u1"));
    assert_eq!(presence_call.fields, json!({"presence": "away"}));
    assert!(
        presence_call.ok() && presence_call.warnings.is_empty(),
        "{presence_call:?}"
    );
    assert_eq!(
        slack.status("U1"),
        Some(SlackStatus::new(
            "🏰 Venue visit - on-site",
            ":european_castle:",
            1_900_000_000
        ))
    );
    assert_eq!(slack.presence("U1").as_deref(), Some("away"));

    // Over Slack's 100 characters: cut by the plugin, so Slack takes it.
    let long = format!("📸 Ceremony prep - {}", "Old Barn ".repeat(20));
    host.push(
        "slack:U1",
        &presence(Availability::Busy, Some(&long), Some(":camera:")),
    )
    .await
    .unwrap();
    let status = slack.status("U1").unwrap();
    // At most 100 characters, the ellipsis included (a space before it is trimmed).
    assert!(status.text.chars().count() <= 100, "{}", status.text);
    assert!(status.text.starts_with("📸 Ceremony prep - Old Barn") && status.text.ends_with('…'));
    assert_eq!(slack.presence("U1").as_deref(), Some("auto"));

    // Nothing to say: the status is cleared.
    host.push("slack:U1", &presence(Availability::Available, None, None))
        .await
        .unwrap();
    assert_eq!(slack.status("U1"), Some(SlackStatus::default()));
    assert!(slack.calls().iter().all(|c| c.ok()), "{:#?}", slack.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_refusals_come_back_as_plugin_errors() {
    let slack = SlackEmulator::start().await;
    slack.add_user("U1", "xoxp-token-u1");
    let host = PushingHost::start(&slack).await;
    let busy = presence(
        Availability::Busy,
        Some("Client consultation"),
        Some(":couple_with_heart:"),
    );

    slack.rate_limit(PROFILE_SET, 0, Duration::from_secs(30));
    match host.push("slack:U1", &busy).await {
        Err(PluginFault::Upstream {
            status: Some(429),
            retry_after_ms: Some(ms),
            ..
        }) => assert!((1_000..=30_000).contains(&ms), "{ms}"),
        other => panic!("expected a 429 with retry-after, got {other:?}"),
    }
    assert!(
        slack.accepted(SET_PRESENCE).is_empty(),
        "presence is not set after a refused status"
    );
    slack.clear_rate_limit(PROFILE_SET);

    slack.fail_next(SET_PRESENCE, 503);
    match host.push("slack:U1", &busy).await {
        Err(PluginFault::Upstream {
            status: Some(503), ..
        }) => {}
        other => panic!("expected upstream 503, got {other:?}"),
    }

    slack.revoke_token("xoxp-token-u1");
    match host.push("slack:U1", &busy).await {
        Err(PluginFault::Unauthorized(message)) => {
            assert!(message.contains("token_revoked"), "{message}")
        }
        other => panic!("expected unauthorized, got {other:?}"),
    }

    // No such connection: nothing to send Slack, and the person must connect.
    let before = slack.calls().len();
    match host.push("slack:U2", &busy).await {
        Err(PluginFault::Unauthorized(message)) => {
            assert!(message.contains("slack:U2"), "{message}")
        }
        other => panic!("expected unauthorized, got {other:?}"),
    }
    assert_eq!(slack.calls().len(), before);
}
