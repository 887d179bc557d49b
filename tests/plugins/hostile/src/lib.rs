//! A provider plugin that misbehaves on purpose, for the host's sandbox tests.
//! The manifest's `[config] attack` chooses the misbehaviour; each attack reports
//! what the host answered (as a plugin error) so tests can assert on it.

use presence_sdk::provider::http::{self, Request};
use presence_sdk::provider::secrets::{self, HmacAlgorithm};
use presence_sdk::provider::{
    Availability, Feature, Guest, PluginError, PresenceSignal, ProviderInfo, SignalSource,
    WebhookOutcome, WebhookRequest, config, kv,
};
use presence_sdk::webhook::respond;

fn setting(key: &str) -> String {
    config::get(key).unwrap_or_default()
}

fn outbound(url: &str, headers: Vec<(String, String)>) -> Result<WebhookOutcome, PluginError> {
    let bearer = setting("bearer");
    let result = http::send(&Request {
        method: "GET".into(),
        url: url.into(),
        headers,
        body: Vec::new(),
        connection: None,
        bearer_secret: (!bearer.is_empty()).then_some(bearer),
    });
    match result {
        Ok(r) => Ok(answer(&format!("reached: {}", r.status))),
        Err(e) => Err(PluginError::Internal(format!("http refused: {e:?}"))),
    }
}

/// A successful outcome that also states a presence, to prove it is (or is not) stored.
fn answer(body: &str) -> WebhookOutcome {
    WebhookOutcome {
        response: respond(200, "text/plain", body),
        delivery_id: None,
        events: Vec::new(),
        signals: vec![PresenceSignal {
            user: "victim".into(),
            source: SignalSource::Manual,
            availability: Availability::DoNotDisturb,
            status_text: Some(format!("hostile: {body}")),
            status_emoji: None,
            starts: None,
            expires: None,
            clears: false,
        }],
    }
}

struct Hostile;

impl Guest for Hostile {
    fn describe() -> ProviderInfo {
        ProviderInfo {
            display_name: "Hostile".into(),
            features: vec![Feature::Webhooks],
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        let target = setting("target");
        match setting("attack").as_str() {
            "ok" => Ok(answer("hostile:ok")),
            "nobody" => {
                let mut outcome = answer("for nobody");
                outcome.signals[0].user = " ".into();
                Ok(outcome)
            }
            "impersonate" => {
                // A presence for the person behind another plugin's connection.
                let mut outcome = answer("as someone else's connection");
                outcome.signals[0].user = format!("connection:{target}");
                Ok(outcome)
            }
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "output" => {
                let size: usize = setting("output_bytes").parse().unwrap_or(4 << 20);
                Ok(WebhookOutcome {
                    response: respond(200, "text/plain", vec![b'x'; size]),
                    ..answer("big")
                })
            }
            "panic" => panic!("hostile plugin panics on purpose"),
            "http" => outbound(&target, Vec::new()),
            "http-host-header" => outbound(&target, vec![("Host".into(), setting("spoofed_host"))]),
            "secret" => match secrets::hmac_sign("not-granted-secret", HmacAlgorithm::Sha256, b"x")
            {
                Ok(mac) => Ok(answer(&format!("signed {} bytes", mac.len()))),
                Err(e) => Err(PluginError::Internal(format!("secret refused: {e:?}"))),
            },
            "file" => match std::fs::read("/etc/passwd") {
                Ok(bytes) => Ok(answer(&format!("read {} bytes", bytes.len()))),
                Err(e) => Err(PluginError::Internal(format!("file refused: {e}"))),
            },
            "socket" => match std::net::TcpStream::connect(target.as_str()) {
                Ok(_) => Ok(answer("connected")),
                Err(e) => Err(PluginError::Internal(format!("socket refused: {e}"))),
            },
            "log-flood" => {
                for i in 0..10_000 {
                    presence_sdk::log::info(&format!("flood line {i}"));
                }
                Ok(answer("logged 10000 lines"))
            }
            "http-loop" => {
                for i in 0..1_000 {
                    let sent = http::send(&Request {
                        method: "GET".into(),
                        url: target.clone(),
                        headers: Vec::new(),
                        body: Vec::new(),
                        connection: None,
                        bearer_secret: None,
                    });
                    if let Err(e) = sent {
                        return Err(PluginError::Internal(format!(
                            "http refused after {i} requests: {e:?}"
                        )));
                    }
                }
                Ok(answer("sent 1000 requests"))
            }
            // Reads the note a call for any tenant may have left; leaves its own.
            "kv-peek" => match kv::get("note") {
                Ok(Some(note)) => Ok(answer(&format!(
                    "found: {}",
                    String::from_utf8_lossy(&note)
                ))),
                Ok(None) => {
                    let tenant = request.tenant.unwrap_or_default();
                    kv::set("note", tenant.as_bytes())
                        .map_err(|e| PluginError::Internal(format!("kv: {e:?}")))?;
                    Ok(answer(&format!("left a note for {tenant}")))
                }
                Err(e) => Err(PluginError::Internal(format!("kv: {e:?}"))),
            },
            "kv-quota" => {
                let chunk = vec![0u8; 64 * 1024];
                for i in 0.. {
                    if let Err(e) = kv::set(&format!("k{i}"), &chunk) {
                        return Err(PluginError::Internal(format!(
                            "kv refused after {i} writes: {e:?}"
                        )));
                    }
                }
                unreachable!()
            }
            other => Err(PluginError::InvalidInput(format!(
                "unknown attack {other:?}"
            ))),
        }
    }

    presence_sdk::unsupported!(push_status, sync_calendar, send_notification);
}

presence_sdk::export_provider!(Hostile);
