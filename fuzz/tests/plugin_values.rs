//! Fuzz targets for the values a provider plugin returns to the host through
//! WIT, after the component model's own checks (valid UTF-8, well-formed
//! records) and the output limit: what the host does with them must hold
//! whatever a buggy or hostile plugin says.
//!
//! - `webhook_responses`: the answer a plugin gives the provider is sent with
//!   a final status or 502, never a header that is the server's to set, and
//!   always with the headers that keep its body from being run as a page.
//! - `webhook_signals`: presence signals with any user, texts and times are
//!   committed (never a store error, never a panic on a time at the ends of
//!   `i64`), read back without NUL, and a redelivery changes nothing.
//!
//! ```sh
//! PRESENCE_FUZZ_SECONDS=600 cargo test -p presence-fuzz --test plugin_values
//! ```

use std::panic::AssertUnwindSafe;

use presence_host::model::{
    Availability, KeyedSignal, PresenceSignal, SignalSource, WebhookResponse,
};
use presence_host::store::presence::EngineRules;
use presence_host::store::{MasterKey, Store, WebhookCommit, now_ms};
use presence_host::webhooks::{FORCED_HEADERS, SERVER_HEADERS, plugin_response};

// ---------------------------------------------------------------------------
// The answer to the provider.

const HEADER_NAMES: [&str; 13] = [
    "content-type",
    "Content-Type",
    "content-length",
    "Transfer-Encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "set-cookie",
    "x-request-id",
    "retry-after",
    "X-Content-Type-Options",
    "bad name",
    "",
];

#[test]
fn webhook_responses() {
    presence_fuzz::fuzz!((u16, Vec<(u8, String, String)>, Vec<u8>), |(
        status,
        headers,
        body,
    )| {
        let headers: Vec<(String, String)> = presence_fuzz::few(headers, 6)
            .iter()
            .map(|(pick, name, value)| {
                let name = match HEADER_NAMES.get(*pick as usize) {
                    Some(known) => known.to_string(),
                    None => name.clone(),
                };
                (name, value.clone())
            })
            .collect();
        let response = plugin_response(WebhookResponse {
            status: *status,
            headers: headers.clone(),
            body: body.clone(),
        });
        let sent = response.status().as_u16();
        if (200..600).contains(status) {
            assert_eq!(sent, *status);
        } else {
            assert_eq!(sent, 502, "status {status} is not a final one");
        }
        for name in SERVER_HEADERS {
            if name == "content-length" {
                // Set by the server from the body, never from the plugin.
                continue;
            }
            assert!(
                !response.headers().contains_key(name),
                "{name} passed: {headers:?}"
            );
        }
        // Every valid header the plugin set, but the server's, is sent
        // with the last value given for its name.
        for (name, value) in &headers {
            let (Ok(n), Ok(_)) = (
                axum::http::HeaderName::try_from(name.as_str()),
                axum::http::HeaderValue::try_from(value.as_str()),
            ) else {
                continue;
            };
            if SERVER_HEADERS.contains(&n.as_str())
                || FORCED_HEADERS
                    .iter()
                    .any(|(forced, _)| *forced == n.as_str())
            {
                continue;
            }
            let last = headers
                .iter()
                .rev()
                .find(|(other, v)| {
                    axum::http::HeaderName::try_from(other.as_str())
                        .ok()
                        .as_ref()
                        == Some(&n)
                        && axum::http::HeaderValue::try_from(v.as_str()).is_ok()
                })
                .map(|(_, v)| v.as_str());
            assert_eq!(
                response.headers().get(&n).map(|v| v.as_bytes()),
                last.map(str::as_bytes),
                "{name}: {headers:?}"
            );
        }
        for (name, value) in FORCED_HEADERS {
            assert_eq!(
                response.headers().get_all(name).iter().collect::<Vec<_>>(),
                [value],
                "{name}: {headers:?}"
            );
        }
        let sent_body = body_of(response);
        assert_eq!(&sent_body, body);
    });
}

/// The response's body, read to the end.
fn body_of(response: axum::response::Response) -> Vec<u8> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .unwrap()
        .to_vec()
}

// ---------------------------------------------------------------------------
// Presence signals.

/// Times at the ends of the range, and around zero.
const EXTREME_TIMES: [i64; 5] = [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX];

/// A time as a plugin may say it: none, soon, any `i64`, or an extreme one.
fn time(pick: u8, raw: i64, now: i64) -> Option<i64> {
    match pick % 4 {
        0 => None,
        1 => Some(now + raw.rem_euclid(86_400_000) - 3_600_000),
        2 => Some(raw),
        _ => Some(EXTREME_TIMES[raw.unsigned_abs() as usize % EXTREME_TIMES.len()]),
    }
}

/// One signal's input: its user (one of a few, or the fuzzer's text), source,
/// availability, texts, start, expiry and whether it withdraws.
type SignalInput = (
    u8,
    String,
    u8,
    u8,
    Option<String>,
    Option<String>,
    (u8, i64),
    (u8, i64),
    bool,
);

struct SignalEnv {
    rt: tokio::runtime::Runtime,
    store: Store,
    rules: EngineRules,
}

impl SignalEnv {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(async {
            let key =
                MasterKey::from_base64("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=").unwrap();
            Store::open("sqlite::memory:", key).await.unwrap()
        });
        let rules = EngineRules {
            pushers: ["slack".to_string()].into_iter().collect(),
            max_call_ms: 4 * 3_600_000,
            push_coalesce_ms: 1000,
        };
        Self { rt, store, rules }
    }
}

#[test]
fn webhook_signals() {
    let env = AssertUnwindSafe(SignalEnv::start());
    let delivery = std::sync::atomic::AtomicU64::new(0);
    // Two store transactions per input: a tenth of the usual sweep.
    presence_fuzz::fuzz!(
        Vec<SignalInput>,
        sweep = presence_fuzz::SWEEP / 10,
        |inputs| {
            let now = now_ms();
            let signals: Vec<KeyedSignal> = presence_fuzz::few(inputs, 4)
                .iter()
                .map(
                    |(user, text, source, availability, status, emoji, starts, expires, clears)| {
                        let user = match user % 4 {
                            0 => "U1".to_string(),
                            1 => "U2".to_string(),
                            // The host refuses a signal for nobody before the store.
                            _ if text.trim().is_empty() => "U3".to_string(),
                            _ => text.clone(),
                        };
                        KeyedSignal {
                            key: "slack".into(),
                            origin: "slack".into(),
                            signal: PresenceSignal {
                                user,
                                source: SignalSource::ALL
                                    [*source as usize % SignalSource::ALL.len()],
                                availability: Availability::ALL
                                    [*availability as usize % Availability::ALL.len()],
                                status_text: status.clone(),
                                status_emoji: emoji.clone(),
                                starts: time(starts.0, starts.1, now),
                                expires: time(expires.0, expires.1, now),
                                clears: *clears,
                                category: None,
                            },
                        }
                    },
                )
                .collect();
            // Each input is a new delivery, to a tenant of its own.
            let n = delivery.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (tenant, id) = (format!("t{n}"), format!("d{n}"));
            let context = format!("{signals:#?}");
            env.rt.block_on(async {
                let (commit, _) = env
                    .store
                    .commit_webhook("slack", &tenant, Some(&id), &signals, &env.rules)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("the store refused a plugin's signals: {e}\n{context}")
                    });
                assert_eq!(commit, WebhookCommit::Recorded, "{context}");
                let mut users: Vec<String> = signals
                    .iter()
                    .map(|s| s.signal.user.replace('\0', "\u{FFFD}"))
                    .collect();
                users.sort();
                users.dedup();
                let mut before = Vec::new();
                for user in &users {
                    let state = env.store.presence_state(&tenant, user).await.unwrap();
                    if let Some((presence, _)) = &state {
                        assert_eq!(&presence.user, user, "{context}");
                        for text in [&presence.status_text, &presence.status_emoji]
                            .into_iter()
                            .flatten()
                        {
                            assert!(!text.contains('\0'), "{presence:?}\n{context}");
                        }
                    }
                    before.push(state);
                }
                // The provider sends it again: acknowledged, nothing changes.
                let (again, effects) = env
                    .store
                    .commit_webhook("slack", &tenant, Some(&id), &signals, &env.rules)
                    .await
                    .unwrap();
                assert_eq!(again, WebhookCommit::Duplicate, "{context}");
                assert!(effects.changes.is_empty(), "{context}");
                for (user, state) in users.iter().zip(before) {
                    assert_eq!(
                        env.store.presence_state(&tenant, user).await.unwrap(),
                        state,
                        "{context}"
                    );
                }
            });
        }
    );
}
