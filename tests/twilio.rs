//! End to end: the real host and the real twilio plugin against a loopback Twilio
//! (tests/support/twilio.rs): signed SMS and WhatsApp webhooks in, notifications
//! out through the Messages API.
//!
//! The emulator's signer is first checked against the vectors of Twilio's own
//! validators; its signatures then verifying in the host (HMAC in the host's
//! `secrets` import, signed string built by the plugin) proves the plugin's side.

mod support;

use std::sync::Arc;

use presence_host::config::PluginOverrides;
use presence_host::model::{DeliveryReceipt, Notification, PluginFault, Urgency};
use presence_host::plugins::LoadedPlugin;
use presence_host::plugins::registry::load_plugin;
use presence_host::runtime::Runtime;
use presence_host::store::SecretName;
use support::twilio::*;
use support::*;

/// The URL the host is reached at from outside: Twilio signs URLs under it.
const PUBLIC_URL: &str = "https://presence.example.com";
const ROUTE: &str = "/api/webhooks/twilio";

fn start_host(auth_token: Option<&str>) -> Host {
    let secrets: Vec<(&str, &[u8], bool)> = auth_token
        .map(|t| ("twilio.auth-token", t.as_bytes(), false))
        .into_iter()
        .collect();
    Host::start(
        PluginsDir::new().with_bundled("twilio"),
        &format!("public_url = \"{PUBLIC_URL}\"\n"),
        &secrets,
    )
}

fn target(host: &Host) -> WebhookTarget {
    WebhookTarget::new(PUBLIC_URL, &host.url(""), ROUTE)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The vectors of twilio-python's tests/unit/test_request_validator.py and
/// twilio-node's spec/validation.spec.js (Twilio's request-validation example:
/// auth token 12345, https://mycompany.com/myapp.php?foo=1&bar=2), so that the
/// emulator signs as Twilio does.
#[test]
fn the_emulator_signs_as_twilios_own_validators() {
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let params = pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]);
    assert_eq!(
        twilio_signature("12345", url, &params),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    // The same URL with the default port written out (both SDKs accept it).
    assert_eq!(
        twilio_signature(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &params
        ),
        "kvajT1Ptam85bY51eRf/AJRuM3w="
    );
    // Repeated names: keys and values sorted, a repeated pair once.
    let repeated = pairs(&[
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
        ("Digits", "1234"),
    ]);
    assert_eq!(
        twilio_signature("12345", url, &repeated),
        "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    );
    // A JSON body: only the URL, carrying the body's SHA-256, is signed.
    let with_hash = format!(
        "{url}&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    );
    assert_eq!(
        twilio_signature("12345", &with_hash, &[]),
        "a9nBmqA0ju/hNViExpshrM61xv4="
    );
}

#[tokio::test]
async fn inbound_messages_are_answered_with_twiml_and_recorded_once() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let host = start_host(Some(&twilio.account.auth_token));
    let target = target(&host);
    let before = host.digest().await;

    let sms = twilio.inbound_sms(
        "+15557654321",
        SMS_NUMBER,
        "Running 10 min late, start without me",
    );
    let first = twilio.deliver(&target, &sms).await;
    assert_eq!(first.status, 200, "{}\n{}", first.body, host.log());
    assert_eq!(first.content_type.as_deref(), Some("text/xml"));
    assert_eq!(first.body, EMPTY_TWIML);
    assert_eq!(first.attempts, vec![200]);
    let recorded = host.digest().await;
    assert_ne!(recorded, before, "the delivery id was not recorded");

    // Twilio sends the same MessageSid again: acknowledged, nothing new recorded.
    let again = twilio.deliver(&target, &sms).await;
    assert_eq!((again.status, again.body.as_str()), (200, EMPTY_TWIML));
    assert_eq!(host.digest().await, recorded);

    // WhatsApp: `whatsapp:` addresses, profile name; a new message is a new delivery.
    let whatsapp = twilio.inbound_whatsapp(
        "+15557654321",
        "+14155238886",
        "Yes! 💍 confirmed",
        "Bea Smith",
    );
    let answer = twilio.deliver(&target, &whatsapp).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, EMPTY_TWIML));
    let with_whatsapp = host.digest().await;
    assert_ne!(with_whatsapp, recorded);

    // Inbound messages carry no presence yet.
    assert_eq!(host.get_json("/api/presence/+15557654321").await.0, 404);

    // Status callbacks: each status of a message is recorded once.
    let sent = AcceptedMessage {
        sid: message_sid(),
        form: pairs(&[("To", "+15557654321"), ("From", SMS_NUMBER), ("Body", "x")]),
        user: String::new(),
        received: std::time::Instant::now(),
    };
    let delivered = twilio.status_callback(&sent, "delivered");
    assert_eq!(twilio.deliver(&target, &delivered).await.status, 200);
    let with_status = host.digest().await;
    assert_ne!(with_status, with_whatsapp);
    assert_eq!(twilio.deliver(&target, &delivered).await.status, 200);
    assert_eq!(host.digest().await, with_status);
    let read = twilio.status_callback(&sent, "read");
    assert_eq!(twilio.deliver(&target, &read).await.status, 200);
    assert_ne!(host.digest().await, with_status);
}

#[tokio::test]
async fn forged_or_tampered_webhooks_are_refused_and_change_nothing() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let host = start_host(Some(&twilio.account.auth_token));
    let target = target(&host);
    let sms = twilio.inbound_sms("+15557654321", SMS_NUMBER, "Cake arrives at 2");
    let genuine = twilio.form_webhook(&target, &sms);
    let before = host.digest().await;

    let mut cases: Vec<(&str, SignedWebhook, &str)> = Vec::new();
    let mut bad = genuine.clone();
    bad.signature = Some("bm90IHRoZSBzaWduYXR1cmUgYXQgYWxs".into());
    cases.push(("a bad signature", bad, "does not match"));
    let mut garbage = genuine.clone();
    garbage.signature = Some("%%% not base64 %%%".into());
    cases.push((
        "a signature that is not base64",
        garbage,
        "malformed signature",
    ));
    let mut other_token = genuine.clone();
    other_token.signature = Some(twilio_signature(
        "another-accounts-token",
        &target.url(),
        &sms,
    ));
    cases.push((
        "a signature made with another token",
        other_token,
        "does not match",
    ));
    let mut missing = genuine.clone();
    missing.signature = None;
    cases.push(("no signature header", missing, "missing X-Twilio-Signature"));
    let mut tampered = genuine.clone();
    let mut changed = sms.clone();
    for (name, value) in changed.iter_mut() {
        if name == "Body" {
            *value = "Cake cancelled".into();
        }
    }
    tampered.body = form_body(&changed).into_bytes();
    cases.push(("a tampered parameter", tampered, "does not match"));
    let mut added = genuine.clone();
    added.body.extend_from_slice(b"&Extra=1");
    cases.push(("an added parameter", added, "does not match"));
    let mut other_url = genuine.clone();
    other_url.signature = Some(twilio_signature(
        &twilio.account.auth_token,
        &format!("http://presence.example.com{ROUTE}"),
        &sms,
    ));
    cases.push(("a signature over another URL", other_url, "does not match"));

    for (what, webhook, expected) in cases {
        let answer = twilio.send(&target, &webhook).await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.body);
        assert_eq!(answer.attempts.len(), 1, "{what}: a 401 is not retried");
        assert!(answer.body.contains(expected), "{what}: {}", answer.body);
    }
    assert_eq!(
        host.digest().await,
        before,
        "a refused webhook changed the store"
    );

    // The genuine one still goes through.
    assert_eq!(twilio.send(&target, &genuine).await.status, 200);
    assert_ne!(host.digest().await, before);
}

#[tokio::test]
async fn json_bodies_must_match_their_signed_body_sha256() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let host = start_host(Some(&twilio.account.auth_token));
    let target = target(&host);
    let body = serde_json::json!({
        "MessageSid": message_sid(), "AccountSid": twilio.account.sid,
        "From": "+15557654321", "To": SMS_NUMBER, "Body": "See you at the barn", "NumMedia": 0,
    })
    .to_string();
    let genuine = twilio.json_webhook(&target, &body);
    assert!(genuine.path_and_query.contains("?bodySHA256="));
    let before = host.digest().await;

    // Signed over a URL carrying the hash of another body.
    let wrong_hash = twilio.json_webhook(&target, r#"{"MessageSid":"SMother"}"#);
    let mut mismatched = genuine.clone();
    mismatched.path_and_query = wrong_hash.path_and_query;
    mismatched.signature = wrong_hash.signature;
    let answer = twilio.send(&target, &mismatched).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(answer.body.contains("bodySHA256"), "{}", answer.body);
    // The right hash, but the body changed on the way.
    let mut tampered = genuine.clone();
    tampered.body = body.replace("barn", "chapel").into_bytes();
    assert_eq!(twilio.send(&target, &tampered).await.status, 401);
    // The hash changed in the URL without re-signing.
    let mut rehashed = tampered.clone();
    rehashed.path_and_query = twilio
        .json_webhook(&target, &body.replace("barn", "chapel"))
        .path_and_query;
    assert_eq!(twilio.send(&target, &rehashed).await.status, 401);
    assert_eq!(host.digest().await, before);

    let answer = twilio.send(&target, &genuine).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_ne!(host.digest().await, before);
}

/// A secret the host cannot use is the host's fault: 502, which Twilio retries
/// (here with `#rc=2`), and nothing is recorded.
#[tokio::test]
async fn twilio_retries_while_the_auth_token_is_not_set() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let host = start_host(None);
    let mut target = target(&host);
    target.retries = 2;
    let before = host.digest().await;
    let sms = twilio.inbound_sms("+15557654321", SMS_NUMBER, "Hello?");
    let answer = twilio.deliver(&target, &sms).await;
    assert_eq!(answer.attempts, vec![502, 502, 502], "{}", answer.body);
    assert!(
        answer.body.contains("twilio.auth-token is not set"),
        "{}",
        answer.body
    );
    assert_eq!(host.digest().await, before);
}

/// The twilio plugin loaded in-process against the emulator's Messages API
/// (`send-notification` has no HTTP route yet: the notification router calls it).
struct Channel {
    runtime: Arc<Runtime>,
    plugin: LoadedPlugin,
}

impl Channel {
    async fn load(twilio: &TwilioEmulator) -> Self {
        let runtime = Arc::new(Runtime::standalone(8, None).await.unwrap());
        let store = &runtime.services().store;
        let name = SecretName::parse("twilio.api-key-secret").unwrap();
        store
            .set_secret(&name, twilio.account.api_key_secret.as_bytes())
            .await
            .unwrap();
        // A tenant with a stale key: its own secret replaces the shared one.
        let stale = SecretName::parse("stale-agency/twilio.api-key-secret").unwrap();
        store.set_secret(&stale, b"revoked-key").await.unwrap();
        let overrides = PluginOverrides {
            extra_allowed_hosts: vec![twilio.api_base()],
            config: [
                ("api_base", twilio.api_base()),
                ("account_sid", twilio.account.sid.clone()),
                ("api_key_sid", twilio.account.api_key_sid.clone()),
                ("from_number", SMS_NUMBER.to_string()),
                ("whatsapp_from", WHATSAPP_SENDER.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            ..Default::default()
        };
        let rt = runtime.clone();
        let plugin = tokio::task::spawn_blocking(move || {
            load_plugin(&rt, &bundled("twilio"), Some(&overrides))
        })
        .await
        .unwrap()
        .unwrap();
        Self { runtime, plugin }
    }

    async fn send(
        &self,
        tenant: &str,
        recipient: &str,
        subject: Option<&str>,
    ) -> Result<DeliveryReceipt, PluginFault> {
        let message = Notification {
            id: "notif-1".into(),
            recipient: recipient.into(),
            subject: subject.map(str::to_string),
            body: "The florist is at the north gate".into(),
            urgency: Urgency::High,
        };
        self.runtime
            .send_notification(&self.plugin.pre, &self.plugin.grants, tenant, "", &message)
            .await
            .expect("the plugin call itself failed")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_go_out_as_sms_and_whatsapp_through_the_messages_api() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let channel = Channel::load(&twilio).await;

    // SMS: To, From, Body exactly, under the API key.
    let receipt = channel
        .send("default", "+15551234567", Some("Smith wedding"))
        .await
        .unwrap();
    let accepted = twilio.messages();
    assert_eq!(accepted.len(), 1);
    let sms = &accepted[0];
    assert_eq!(
        receipt.provider_message_id.as_deref(),
        Some(sms.sid.as_str())
    );
    assert!(
        sms.sid.starts_with("SM") && sms.sid.len() == 34,
        "{}",
        sms.sid
    );
    assert_eq!(
        sms.form,
        pairs(&[
            ("To", "+15551234567"),
            ("From", SMS_NUMBER),
            ("Body", "Smith wedding\nThe florist is at the north gate"),
        ])
    );
    assert_eq!(sms.user, twilio.account.api_key_sid);

    // WhatsApp: the WhatsApp sender.
    let receipt = channel
        .send("default", "whatsapp:+15551234567", None)
        .await
        .unwrap();
    let whatsapp = twilio.messages().pop().unwrap();
    assert_eq!(receipt.provider_message_id, Some(whatsapp.sid));
    assert_eq!(
        whatsapp.form,
        pairs(&[
            ("To", "whatsapp:+15551234567"),
            ("From", WHATSAPP_SENDER),
            ("Body", "The florist is at the north gate"),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_errors_become_plugin_errors() {
    let twilio = TwilioEmulator::start(test_account()).await;
    let channel = Channel::load(&twilio).await;

    // 429 with Retry-After: upstream, with when to come back.
    twilio.throttle_next(7);
    match channel.send("default", "+15551234567", None).await {
        Err(PluginFault::Upstream {
            status,
            retry_after_ms,
            message,
        }) => {
            assert_eq!((status, retry_after_ms), (Some(429), Some(7000)));
            assert!(message.contains("20429"), "{message}");
        }
        other => panic!("expected an upstream failure, got {other:?}"),
    }

    // Credentials Twilio refuses (401, code 20003): unauthorized.
    match channel.send("stale-agency", "+15551234567", None).await {
        Err(PluginFault::Unauthorized(message)) => assert!(message.contains("20003"), "{message}"),
        other => panic!("expected unauthorized, got {other:?}"),
    }

    // A number Twilio cannot text (400, code 21211): upstream with Twilio's reason.
    match channel.send("default", "+1555", None).await {
        Err(PluginFault::Upstream {
            status: Some(400),
            message,
            retry_after_ms: None,
        }) => assert!(
            message.contains("21211") && message.contains("Invalid 'To' Phone Number"),
            "{message}"
        ),
        other => panic!("expected a 400 upstream failure, got {other:?}"),
    }

    // Not a phone number at all: refused before any request.
    let requests = twilio.requests();
    assert!(matches!(
        channel.send("default", "bea@example.com", None).await,
        Err(PluginFault::InvalidInput(_))
    ));
    assert_eq!(twilio.requests(), requests);
    assert!(twilio.messages().is_empty(), "a refused send was recorded");
}
