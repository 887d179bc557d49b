//! Fuzz targets: the host's reading of OAuth answers — token endpoint answers
//! (RFC 6749 and Slack's `oauth.v2.access`), granted scopes, ID tokens, the
//! JWK sets that verify them and those sets' `Cache-Control`.
//!
//! The token and JWKS targets go the whole way the host goes: the request is
//! sent to a loopback endpoint that answers with the fuzzed status, content
//! type and body, so `oauth2`'s parsing, the Slack adapter and the error
//! classification run as in production. ID tokens are signed with the test key
//! of `tests/fixtures/oauth/`, so a target knows which tokens must verify.
//!
//! Targets: `oauth_token_answers`, `oauth_scopes`, `oauth_id_tokens`,
//! `oauth_id_token_headers`, `oauth_id_token_claims`, `oauth_jwks_documents`
//! and `oauth_cache_control`; a long run of one:
//!
//! ```sh
//! cargo bolero test -p presence-fuzz --test oauth oauth_token_answers -T 600
//! ```

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use presence_fuzz::{Edit, FieldEdit, edit_json, edit_value, few, mutate, pick, set_path};
use presence_host::config::{OAuthConfig, OAuthProviderConfig};
use presence_host::oauth::id_token::{Expected, IdClaims, IdTokenError, JwksCache};
use presence_host::oauth::{OAuth, Provider, TokenError, Tokens};
use presence_host::store::{MasterKey, SecretName, Store};
use serde_json::{Map, Value, json};

const CLIENT_ID: &str = "client-123.apps.example";
const NONCE: &str = "n-0S6_WzA2Mj";
const KID: &str = "emulator-test-key-1";
const GOOGLE_ISSUER: &str = "https://accounts.google.com";
const MICROSOFT_ISSUER: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";
const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const OTHER_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const PEM: &str = include_str!("../../tests/fixtures/oauth/rsa-test-key.pem");
const JWK: &str = include_str!("../../tests/fixtures/oauth/rsa-test-key.jwk.json");

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------
// A loopback HTTP endpoint answering what the target says, per path.

#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

type Answers = Arc<Mutex<HashMap<String, Answer>>>;

/// A current-thread runtime with an axum server on 127.0.0.1: it serves while
/// the target waits in `block_on`.
struct Loopback {
    rt: tokio::runtime::Runtime,
    base: String,
    answers: Answers,
}

impl Loopback {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let answers: Answers = Arc::default();
        let base = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = axum::Router::new()
                .fallback(serve)
                .with_state(Arc::clone(&answers));
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}")
        });
        Self { rt, base, answers }
    }

    fn answer(&self, path: &str, status: u16, headers: &[(&str, &str)], body: Vec<u8>) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.answers.lock().unwrap().insert(
            path.to_string(),
            Answer {
                status,
                headers,
                body,
            },
        );
    }
}

async fn serve(
    axum::extract::State(answers): axum::extract::State<Answers>,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::http::{HeaderName, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    let answer = answers.lock().unwrap().get(uri.path()).cloned();
    let Some(answer) = answer else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = axum::response::Response::new(axum::body::Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap();
    for (name, value) in &answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

// ---------------------------------------------------------------------------
// Token endpoint answers.

/// A documented answer of a provider's token endpoint, and the status it comes with.
struct TokenSeed {
    provider: &'static str,
    status: u16,
    body: &'static [u8],
    success: bool,
}

const TOKEN_SEEDS: &[TokenSeed] = &[
    // developers.google.com/identity/protocols/oauth2/web-server, "Step 5".
    TokenSeed {
        provider: "google",
        status: 200,
        body: br#"{"access_token":"1/fFAGRNJru1FTz70BzhT3Zg","expires_in":3920,"token_type":"Bearer","scope":"https://www.googleapis.com/auth/drive.metadata.readonly https://www.googleapis.com/auth/calendar.readonly","refresh_token":"1//xEoDL4iW3cxlI7yDbSRFYNG01kVKM2C-259HOF2aQbI"}"#,
        success: true,
    },
    // The same page: a refresh token that was revoked or expired.
    TokenSeed {
        provider: "google",
        status: 400,
        body: br#"{"error":"invalid_grant","error_description":"Bad Request"}"#,
        success: false,
    },
    // learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow,
    // "Successful response" (the page's scope is URL-encoded, as here).
    TokenSeed {
        provider: "microsoft",
        status: 200,
        body: br#"{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6Ik5HVEZ2ZEstZnl0aEV1Q","token_type":"Bearer","expires_in":3599,"scope":"https%3A%2F%2Fgraph.microsoft.com%2Fmail.read","refresh_token":"AwABAAAAvPM1KaPlrEqdFSBzjqfTGAMxZGUTdM0t4B4","id_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJhdWQiOiIyZDRkMTFhMi1mODE0LTQ2YTctOD"}"#,
        success: true,
    },
    // The same page, "Error response".
    TokenSeed {
        provider: "microsoft",
        status: 400,
        body: br#"{"error":"invalid_scope","error_description":"AADSTS70011: The provided value for the input parameter 'scope' isn't valid. The scope https://foo.microsoft.com/mail.read is not valid.\r\nTrace ID: 255d1aef-8c98-452f-ac51-23d051240864\r\nCorrelation ID: fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7\r\nTimestamp: 2016-01-09 02:02:12Z","error_codes":[70011],"timestamp":"2016-01-09 02:02:12Z","trace_id":"255d1aef-8c98-452f-ac51-23d051240864","correlation_id":"fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7"}"#,
        success: false,
    },
    // api.slack.com/methods/oauth.v2.access: a user-token install, with token rotation.
    TokenSeed {
        provider: "slack",
        status: 200,
        body: br#"{"ok":true,"app_id":"A0KRD7HC3","authed_user":{"id":"U1234","scope":"users.profile:write,users:write","access_token":"xoxp-1234","token_type":"user","refresh_token":"xoxe-1-abc","expires_in":43200},"team":{"id":"T9TK3CUKW","name":"Slack Softworks"},"enterprise":null,"is_enterprise_install":false}"#,
        success: true,
    },
    // The same page's example: a bot token, and the installing user's token.
    TokenSeed {
        provider: "slack",
        status: 200,
        body: br#"{"ok":true,"access_token":"xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy","token_type":"bot","scope":"commands,incoming-webhook","bot_user_id":"U0KRQLJ9H","app_id":"A0KRD7HC3","team":{"name":"Slack Softworks","id":"T9TK3CUKW"},"enterprise":{"name":"slack-sports","id":"E12345678"},"authed_user":{"id":"U1234","scope":"chat:write","access_token":"xoxp-1234","token_type":"user"}}"#,
        success: true,
    },
    // The same page's errors: HTTP 200 with `ok: false`.
    TokenSeed {
        provider: "slack",
        status: 200,
        body: br#"{"ok":false,"error":"invalid_code"}"#,
        success: false,
    },
    // developers.zoom.us/docs/integrations/oauth: "Request an access token".
    TokenSeed {
        provider: "zoom",
        status: 200,
        body: br#"{"access_token":"eyJhbGciOiJIUzUxMiIsInYiOiIyLjAiLCJraWQiOiI8S0lEPiJ9.eyJ2ZXIiOiI2IiwiY2xpZW50SWQiOiI8Q2xpZW50X0lEPiJ9.F9o_w7_lde4Jlmk_yspIlDc","token_type":"bearer","refresh_token":"eyJhbGciOiJIUzUxMiIsInYiOiIyLjAiLCJraWQiOiI8S0lEPiJ9.eyJ2ZXIiOiI2In0.DwuqOMmLr","expires_in":3599,"scope":"meeting:read meeting:write user:read"}"#,
        success: true,
    },
    // The same page: a refresh token that is no longer valid.
    TokenSeed {
        provider: "zoom",
        status: 400,
        body: br#"{"reason":"Invalid Token!","error":"invalid_request"}"#,
        success: false,
    },
];

const PROVIDERS: [&str; 4] = ["google", "microsoft", "slack", "zoom"];

/// Statuses a token endpoint (or something in front of it) may answer with.
const STATUSES: [u16; 10] = [200, 200, 201, 400, 401, 403, 404, 429, 500, 503];

const CONTENT_TYPES: [Option<&str>; 5] = [
    Some("application/json; charset=utf-8"),
    Some("application/json"),
    None,
    Some("text/html; charset=UTF-8"),
    Some("text/plain"),
];

const TOKEN_FIELDS: &[&str] = &[
    "access_token",
    "token_type",
    "expires_in",
    "refresh_token",
    "scope",
    "id_token",
    "error",
    "error_description",
    "ok",
    "authed_user",
    "authed_user.access_token",
    "authed_user.token_type",
    "authed_user.scope",
    "authed_user.expires_in",
    "authed_user.refresh_token",
    "authed_user.id",
];

fn token_constants() -> Vec<Value> {
    vec![
        json!(""),
        json!("Bearer"),
        json!("bot"),
        json!("user"),
        json!("invalid_grant"),
        json!("invalid_client"),
        json!("consent_required"),
        json!("interaction_required"),
        json!("server_error"),
        json!("invalid_code"),
        json!("token_revoked"),
        json!("bad_client_secret"),
        json!("users:write,,users.profile:write"),
        json!("openid  email"),
        json!(false),
        json!(true),
        json!(0),
        json!(u64::MAX),
        json!(i64::MAX),
        json!(-1),
        json!(1e300),
    ]
}

const REFUSED_CODES: [&str; 4] = [
    "invalid_grant",
    "invalid_scope",
    "interaction_required",
    "consent_required",
];
const CLIENT_CODES: [&str; 4] = [
    "invalid_client",
    "unauthorized_client",
    "invalid_request",
    "unsupported_grant_type",
];

/// The host's OAuth service, with a provider of each template whose token
/// endpoint is the loopback.
struct TokenEnv {
    net: Loopback,
    store: Store,
    oauth: OAuth,
}

impl TokenEnv {
    fn start() -> Self {
        let net = Loopback::start();
        let (store, oauth) = net.rt.block_on(async {
            let key =
                MasterKey::from_base64("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=").unwrap();
            let store = Store::open("sqlite::memory:", key).await.unwrap();
            let mut config = OAuthConfig::default();
            for name in PROVIDERS {
                config.providers.insert(
                    name.to_string(),
                    OAuthProviderConfig {
                        client_id: Some(CLIENT_ID.into()),
                        token_url: Some(format!("{}/{name}/token", net.base)),
                        ..Default::default()
                    },
                );
                let secret = SecretName::parse(&format!("oauth.{name}.client-secret")).unwrap();
                store.set_secret(&secret, b"client-secret").await.unwrap();
            }
            let oauth = OAuth::new(&config, Arc::new(tokio::sync::Notify::new())).unwrap();
            (store, oauth)
        });
        Self { net, store, oauth }
    }

    /// A refresh at `provider`, whose token endpoint answers `status`, `content_type` and `body`.
    fn refresh(
        &self,
        provider: &str,
        status: u16,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Tokens, TokenError> {
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| ("content-type", ct))
            .into_iter()
            .collect();
        self.net
            .answer(&format!("/{provider}/token"), status, &headers, body);
        let provider = self.oauth.provider(provider).expect("configured");
        self.net.rt.block_on(
            self.oauth
                .exchange_refresh(&self.store, provider, "1//refresh-token"),
        )
    }
}

fn describe_tokens(t: &Tokens) -> String {
    format!(
        "access_token {:?}, refresh_token {:?}, expires_at {:?}, scopes {:?}, id_token {:?}, account {:?}",
        t.access_token.as_str(),
        t.refresh_token.as_ref().map(|r| r.as_str().to_string()),
        t.expires_at,
        t.scopes,
        t.id_token,
        t.account
    )
}

/// Token endpoint answers, fuzzed from the providers' documented examples, go
/// through the host's whole token request: status, content type, size cap,
/// the Slack adapter, `oauth2`'s parsing and the error classification.
///
/// - A success is what the answer says: its (or, for a Slack user-token
///   install, `authed_user`'s) access token, never empty; its refresh token,
///   never the bot's in place of the person's; an expiry `expires_in` after
///   the request, never in the past whatever the number; its scopes, split at
///   spaces (Slack's commas become spaces).
/// - A refusal is an error, never a partial success: any status but 200 for an
///   RFC 6749 provider, `ok: false` for Slack.
/// - Errors are classified by the code the provider sent: `Refused` (the person
///   consents again) only for the grant's own codes, `Client` only for the
///   client's, and 5xx and 429 are always transient.
#[test]
fn oauth_token_answers() {
    // The fuzz engines catch panics; the environment is only read across them.
    let env = AssertUnwindSafe(TokenEnv::start());
    let constants = token_constants();
    presence_fuzz::fuzz!((u8, u8, u8, Vec<FieldEdit>, Vec<Edit>), |(
        seed,
        status,
        content_type,
        fields,
        edits,
    )| {
        let seed_index = *seed as usize % TOKEN_SEEDS.len();
        let s = &TOKEN_SEEDS[seed_index];
        // Mostly the seed's own provider, status and content type.
        let provider = if (*seed as usize / TOKEN_SEEDS.len()) % 4 == 3 {
            PROVIDERS[*seed as usize % PROVIDERS.len()]
        } else {
            s.provider
        };
        let status = if status % 2 == 0 {
            s.status
        } else {
            STATUSES[*status as usize / 2 % STATUSES.len()]
        };
        let content_type = if content_type % 2 == 0 {
            CONTENT_TYPES[0]
        } else {
            CONTENT_TYPES[*content_type as usize / 2 % CONTENT_TYPES.len()]
        };
        let (fields, edits) = (few(fields, 3), few(edits, 4));
        let body = edit_json(s.body, TOKEN_FIELDS, &constants, fields, edits);
        let before = now_ms();
        let result = env.refresh(provider, status, content_type, body.clone());
        let after = now_ms();
        let context = format!(
            "provider {provider}, HTTP {status}, content type {content_type:?}, body {}",
            String::from_utf8_lossy(&body)
        );
        check_token_answer(provider, status, &body, before, after, &result, &context);
        let json = content_type.is_none_or(|ct| ct.starts_with("application/json"));
        if fields.is_empty()
            && edits.is_empty()
            && provider == s.provider
            && status == s.status
            && json
        {
            // The documented examples themselves.
            match (&result, s.success) {
                (Ok(_), true) => {}
                (Err(TokenError::Refused { .. } | TokenError::Client { .. }), false) => {}
                (Err(e), _) => panic!("{context}: {e:?}"),
                (Ok(t), false) => panic!("{context}: {}", describe_tokens(t)),
            }
        }
    });
}

/// The members of a success the host reads (RFC 6749's and its own), read
/// as `oauth2` reads them: into named fields, the others skipped unread.
#[derive(serde::Deserialize, serde::Serialize)]
struct TokenMembers {
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<Value>,
}

/// The members of an error answer the host reads, the same way.
#[derive(serde::Deserialize, serde::Serialize)]
struct ErrorMembers {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<Value>,
}

/// The first JSON value of `bytes` read as `T`, as a JSON value again.
fn read_as<T: serde::de::DeserializeOwned + serde::Serialize>(bytes: &[u8]) -> Option<Value> {
    let read: T = serde_json::Deserializer::from_slice(bytes)
        .into_iter::<T>()
        .next()?
        .ok()?;
    serde_json::to_value(read).ok()
}

fn check_token_answer(
    provider: &str,
    status: u16,
    body: &[u8],
    before: i64,
    after: i64,
    result: &Result<Tokens, TokenError>,
    context: &str,
) {
    let slack = provider == "slack";
    // The answer as JSON. `oauth2` reads it into structs, which skip unknown
    // members unread: bytes that are not UTF-8 may hide there.
    let strict: Option<Value> = serde_json::from_slice(body).ok();
    // It also reads the first JSON value and leaves what follows unread.
    let first = |bytes: &[u8]| {
        serde_json::Deserializer::from_slice(bytes)
            .into_iter::<Value>()
            .next()
            .and_then(Result::ok)
    };
    // And it skips the members it does not read (an error answer's token
    // members among them) without reading their values: a number too large
    // for any type may hide there, which `Value` refuses.
    let members = |bytes: &[u8]| {
        if status == 200 {
            read_as::<TokenMembers>(bytes)
        } else {
            read_as::<ErrorMembers>(bytes)
        }
    };
    let answer = strict
        .clone()
        .or_else(|| first(body))
        .or_else(|| first(String::from_utf8_lossy(body).as_bytes()))
        .or_else(|| members(body))
        .or_else(|| members(String::from_utf8_lossy(body).as_bytes()));
    let object = answer.as_ref().and_then(Value::as_object);
    let get = |k: &str| object.and_then(|o| o.get(k));
    let retry_status = status >= 500 || status == 429;
    // Slack's `oauth.v2.access` answer (it has `ok`), and whether it says no.
    let slack_answer = slack && get("ok").is_some();
    // Only `ok: true` is a success.
    let slack_refused = slack_answer && get("ok") != Some(&Value::Bool(true));
    // Whether the Slack adapter rewrote it: it reads the answer as a JSON value.
    let rewritten = slack_answer && strict.is_some();
    let user = get("authed_user")
        .and_then(Value::as_object)
        .filter(|u| rewritten && !slack_refused && u.contains_key("access_token"));
    // Where the token the host acts with comes from.
    let source = |k: &str| match user {
        Some(u) => u.get(k),
        None => get(k),
    };
    match result {
        Ok(t) => {
            let tokens = describe_tokens(t);
            assert!(
                !t.access_token.is_empty(),
                "an empty access token was accepted: {tokens}\n{context}"
            );
            assert!(
                !retry_status,
                "HTTP {status} gave tokens: {tokens}\n{context}"
            );
            if slack {
                assert!(
                    !slack_refused,
                    "Slack's `ok: false` gave tokens: {tokens}\n{context}"
                );
                assert!(
                    rewritten,
                    "a Slack answer the adapter did not read gave tokens: {tokens}\n{context}"
                );
            } else {
                assert_eq!(
                    status, 200,
                    "a refused answer gave tokens: {tokens}\n{context}"
                );
            }
            assert_eq!(
                Some(t.access_token.as_str()),
                source("access_token").and_then(Value::as_str),
                "{tokens}\n{context}"
            );
            assert_eq!(
                t.refresh_token.as_ref().map(|r| r.as_str()),
                source("refresh_token").and_then(Value::as_str),
                "{tokens}\n{context}"
            );
            assert_eq!(
                t.id_token.as_deref(),
                get("id_token").and_then(Value::as_str),
                "{tokens}\n{context}"
            );
            match (t.expires_at, source("expires_in").and_then(Value::as_u64)) {
                (None, None) => {}
                (Some(at), Some(secs)) => {
                    let ms = (u128::from(secs) * 1000).min(i64::MAX as u128) as i64;
                    assert!(
                        before.saturating_add(ms) <= at && at <= after.saturating_add(ms),
                        "expires_in {secs} gave expires_at {at} (requested at {before}..{after})\n{context}"
                    );
                }
                (at, secs) => panic!("expires_in {secs:?} gave expires_at {at:?}\n{context}"),
            }
            match (&t.scopes, source("scope").and_then(Value::as_str)) {
                (None, None) => {}
                (Some(scopes), Some(said)) => {
                    let said = if rewritten {
                        said.replace(',', " ")
                    } else {
                        said.to_string()
                    };
                    assert_eq!(scopes.join(" "), said, "{context}");
                    // Split at spaces; Slack's commas are spaces by then.
                    let separator = |c: char| c == ' ' || (rewritten && c == ',');
                    assert!(
                        scopes.iter().all(|s| !s.contains(separator)),
                        "{scopes:?}\n{context}"
                    );
                }
                (scopes, said) => panic!("scope {said:?} gave {scopes:?}\n{context}"),
            }
            if let Some(u) = user {
                assert_eq!(
                    t.account.as_deref(),
                    u.get("id")
                        .and_then(Value::as_str)
                        .or(get("presence_account").and_then(Value::as_str)),
                    "{context}"
                );
            }
        }
        Err(e) => {
            if retry_status {
                assert!(
                    matches!(e, TokenError::Transient(_)),
                    "HTTP {status} is worth retrying, but: {e:?}\n{context}"
                );
            }
            let (code, description) = match e {
                TokenError::Refused { code, description } => {
                    assert!(REFUSED_CODES.contains(&code.as_str()), "{e:?}\n{context}");
                    (code, description)
                }
                TokenError::Client { code, description } => {
                    assert!(CLIENT_CODES.contains(&code.as_str()), "{e:?}\n{context}");
                    (code, description)
                }
                TokenError::Transient(_) => return,
            };
            // The provider said so: a Slack error, Slack's answer with only a
            // bot token, or an RFC 6749 error answer.
            let said = if rewritten && slack_refused {
                get("error").and_then(Value::as_str) == Some(description.as_str())
            } else if rewritten {
                code == "invalid_scope"
                    && get("token_type").and_then(Value::as_str) == Some("bot")
                    && user.is_none()
            } else {
                status != 200 && get("error").and_then(Value::as_str) == Some(code.as_str())
            };
            assert!(said, "{e:?} is not what the answer says\n{context}");
        }
    }
}

// ---------------------------------------------------------------------------
// Granted scopes.

const SCOPES: [&str; 8] = [
    "User.Read",
    "https://graph.microsoft.com/Calendars.Read",
    "offline_access",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
    "https://www.googleapis.com/auth/calendar.readonly",
    "users.profile:write",
    "meeting:read",
];

/// Granted-scope normalisation, as grants and plugins' declarations are
/// compared: Microsoft's is case-insensitive and ignores the Graph resource
/// prefix; Google's names `email` and `profile` by either spelling; the others
/// compare scopes as they are.
#[test]
fn oauth_scopes() {
    let config = OAuthProviderConfig {
        client_id: Some(CLIENT_ID.into()),
        ..Default::default()
    };
    let providers: Vec<Provider> = PROVIDERS
        .iter()
        .map(|name| Provider::resolve(name, &config).unwrap())
        .collect();
    presence_fuzz::fuzz!((u8, u8, Vec<Edit>), |(provider, seed, edits)| {
        let provider = &providers[*provider as usize % providers.len()];
        let seeds: Vec<&[u8]> = SCOPES.iter().map(|s| s.as_bytes()).collect();
        let scope = String::from_utf8_lossy(&pick(&seeds, *seed, edits)).into_owned();
        let n = provider.normalize_scope(&scope);
        match provider.template.as_str() {
            "microsoft" => {
                assert!(
                    !n.bytes().any(|b| b.is_ascii_uppercase()),
                    "{scope:?} -> {n:?}"
                );
                assert_eq!(
                    provider.normalize_scope(&format!("https://graph.microsoft.com/{scope}")),
                    n,
                    "the Graph prefix is ignored: {scope:?}"
                );
                assert_eq!(
                    provider.normalize_scope(&scope.to_ascii_lowercase()),
                    n,
                    "Microsoft scopes are case-insensitive: {scope:?}"
                );
            }
            "google" => {
                let short = match scope.as_str() {
                    "https://www.googleapis.com/auth/userinfo.email" => "email",
                    "https://www.googleapis.com/auth/userinfo.profile" => "profile",
                    other => other,
                };
                assert_eq!(n, short, "{scope:?}");
                assert_eq!(provider.normalize_scope(&n), n, "{scope:?}");
            }
            _ => assert_eq!(n, scope),
        }
    });
}

// ---------------------------------------------------------------------------
// ID tokens.

fn fixture_jwk() -> Value {
    serde_json::from_str(JWK).unwrap()
}

fn sign(header: &jsonwebtoken::Header, claims: &Value) -> String {
    static KEY: std::sync::LazyLock<jsonwebtoken::EncodingKey> = std::sync::LazyLock::new(|| {
        jsonwebtoken::EncodingKey::from_rsa_pem(PEM.as_bytes()).unwrap()
    });
    jsonwebtoken::encode(header, claims, &KEY).unwrap()
}

fn rs256() -> jsonwebtoken::Header {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(KID.to_string());
    header
}

/// Google's ID token claims, as its "OpenID Connect" guide shows them.
fn google_claims(now: i64) -> Value {
    json!({
        "iss": GOOGLE_ISSUER,
        "azp": CLIENT_ID,
        "aud": CLIENT_ID,
        "sub": "110169484474386276334",
        "email": "vendor@example.com",
        "email_verified": true,
        "name": "Ada Vendor",
        "iat": now,
        // Long-lived, so that long fuzzing runs keep one valid token.
        "exp": now + 30 * 86_400,
        "nonce": NONCE,
    })
}

/// Microsoft identity platform v2 ID token claims ("ID token claims reference").
fn microsoft_claims(now: i64) -> Value {
    json!({
        "ver": "2.0",
        "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "aud": CLIENT_ID,
        "tid": TENANT,
        "oid": "00000000-0000-0000-66f3-3332eca7ea81",
        "preferred_username": "ada@contoso.example",
        "email": "ada@contoso.example",
        "name": "Ada Vendor",
        "iat": now,
        "nbf": now,
        "exp": now + 30 * 86_400,
        "nonce": NONCE,
    })
}

/// Which provider a token comes from: its expected issuer, and the issuer its
/// JWKS publishes the key with (Microsoft's do).
#[derive(Clone, Copy)]
struct Issuer {
    path: &'static str,
    issuer: &'static str,
    key_issuer: Option<&'static str>,
}

const GOOGLE: Issuer = Issuer {
    path: "/google/jwks",
    issuer: GOOGLE_ISSUER,
    key_issuer: None,
};
const MICROSOFT: Issuer = Issuer {
    path: "/microsoft/jwks",
    issuer: MICROSOFT_ISSUER,
    key_issuer: Some(MICROSOFT_ISSUER),
};

/// A JWKS cache whose providers' key sets are served on the loopback, and a
/// token of each provider signed with the test key.
struct IdEnv {
    net: Loopback,
    cache: JwksCache,
    client: reqwest::Client,
    /// Google's and Microsoft's tokens, with their claims.
    tokens: [(Issuer, String, Value); 2],
}

impl IdEnv {
    fn start() -> Self {
        let net = Loopback::start();
        let json = [("content-type", "application/json")];
        net.answer(
            GOOGLE.path,
            200,
            &json,
            json!({ "keys": [fixture_jwk()] }).to_string().into_bytes(),
        );
        let mut microsoft_key = fixture_jwk();
        microsoft_key["issuer"] = MICROSOFT_ISSUER.into();
        net.answer(
            MICROSOFT.path,
            200,
            &json,
            json!({ "keys": [microsoft_key] }).to_string().into_bytes(),
        );
        let now = now_s();
        let (google, microsoft) = (google_claims(now), microsoft_claims(now));
        let client = reqwest::Client::new();
        Self {
            cache: JwksCache::new(client.clone()),
            client,
            tokens: [
                (GOOGLE, sign(&rs256(), &google), google),
                (MICROSOFT, sign(&rs256(), &microsoft), microsoft),
            ],
            net,
        }
    }

    fn verify_with(
        &self,
        cache: &JwksCache,
        token: &str,
        issuer: Issuer,
        nonce: Option<&str>,
    ) -> Result<IdClaims, IdTokenError> {
        let url = format!("{}{}", self.net.base, issuer.path);
        let expected = Expected {
            jwks_url: &url,
            issuer: issuer.issuer,
            audience: CLIENT_ID,
            nonce,
        };
        self.net.rt.block_on(cache.verify(token, &expected))
    }

    fn verify(&self, token: &str, issuer: Issuer) -> Result<IdClaims, IdTokenError> {
        self.verify_with(&self.cache, token, issuer, Some(NONCE))
    }
}

/// What a verified token must report for `claims` (checked by [`oidc_model`]).
fn reported(claims: &Value) -> IdClaims {
    oidc_model(
        claims.as_object().unwrap(),
        if claims.get("tid").is_some() {
            MICROSOFT
        } else {
            GOOGLE
        },
        Some(NONCE),
        now_s(),
    )
    .expect("the seed's claims are valid")
}

/// Random edits of well-formed ID tokens: an edited token never verifies (its
/// signature no longer covers it), and whatever the edit the verifier refuses
/// with an error rather than a panic. The tokens themselves verify.
#[test]
fn oauth_id_tokens() {
    let env = AssertUnwindSafe(IdEnv::start());
    presence_fuzz::fuzz!((u8, Vec<Edit>), |(seed, edits)| {
        let (issuer, token, claims) = &env.tokens[*seed as usize % env.tokens.len()];
        let edited = String::from_utf8_lossy(&mutate(token.as_bytes(), edits)).into_owned();
        match env.verify(&edited, *issuer) {
            Ok(verified) => {
                assert_eq!(
                    &edited, token,
                    "an edited token verified: {verified:?}\nedits {edits:?}"
                );
                assert_eq!(verified, reported(claims));
            }
            Err(e) => assert_ne!(&edited, token, "the signed token was refused: {e:?}"),
        }
    });
}

const HEADER_FIELDS: &[&str] = &[
    "alg", "kid", "typ", "crit", "jwk", "x5c", "x5t", "x5t#S256", "enc", "zip", "cty", "jku",
    "b64", "nonce", "url",
];

/// ID token headers (unauthenticated until the signature is checked): an
/// algorithm other than RS256 is refused before any key lookup, as are `crit`
/// and a missing key id; a token whose header changed never verifies; and the
/// header's values appear in errors only shortened, however long they are.
#[test]
fn oauth_id_token_headers() {
    let env = AssertUnwindSafe(IdEnv::start());
    let constants = vec![
        json!("RS256"),
        json!("HS256"),
        json!("none"),
        json!(KID),
        json!(""),
        json!("JWT"),
        json!("DEF"),
        json!("A256GCM"),
        json!(["exp"]),
        json!({ "kty": "RSA", "n": "AQAB", "e": "AQAB" }),
    ];
    presence_fuzz::fuzz!((u8, Vec<(u8, u8, String, u64)>, u8), |(
        seed,
        fields,
        repeat,
    )| {
        let (issuer, token, claims) = &env.tokens[*seed as usize % env.tokens.len()];
        let mut parts = token.splitn(2, '.');
        let (signed_header, rest) = (parts.next().unwrap(), parts.next().unwrap());
        let mut header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(signed_header).unwrap()).unwrap();
        // Long values, to see that errors shorten them.
        let long = |text: &str| text.repeat(1 + *repeat as usize % 64 * 4);
        for (field, kind, text, n) in few(fields, 3) {
            let path = HEADER_FIELDS[*field as usize % HEADER_FIELDS.len()];
            let value = match kind % 10 {
                8 => Some(json!([long(text)])),
                9 => Some(json!({ "kty": long(text) })),
                kind => edit_value(kind, &long(text), *n, &constants),
            };
            // A dotted name is one field here (`x5t#S256`), not a path.
            match value {
                Some(v) => header[path] = v,
                None => {
                    header.as_object_mut().unwrap().remove(path);
                }
            }
        }
        let encoded = URL_SAFE_NO_PAD.encode(header.to_string());
        let edited = format!("{encoded}.{rest}");
        let result = env.verify(&edited, *issuer);
        let context = format!("header {header}");
        let err = match result {
            Ok(verified) => {
                assert_eq!(
                    encoded, signed_header,
                    "a changed header verified\n{context}"
                );
                assert_eq!(verified, reported(claims));
                return;
            }
            Err(e) => e,
        };
        let message = err.to_string();
        assert!(
            message.len() <= 1024,
            "an error repeats the untrusted header at length ({} bytes): {}…\n{context}",
            message.len(),
            &message[..message.floor_char_boundary(300)]
        );
        if edited.len() > 64 * 1024 {
            assert!(
                matches!(err, IdTokenError::Malformed(_)),
                "{err:?}\n{context}"
            );
            return;
        }
        // The header's own checks, in their order.
        let field = |k: &str| header.get(k).filter(|v| !v.is_null());
        let alg = header.get("alg");
        let kid = field("kid");
        let typed = alg.is_some_and(Value::is_string) && kid.is_none_or(Value::is_string);
        if !typed {
            assert!(
                matches!(err, IdTokenError::Malformed(_)),
                "{err:?}\n{context}"
            );
        } else if alg != Some(&json!("RS256")) {
            assert!(
                matches!(err, IdTokenError::UnsupportedAlgorithm(_)),
                "{err:?}\n{context}"
            );
        } else if field("crit").is_some() {
            assert!(
                matches!(err, IdTokenError::Malformed(_)),
                "{err:?}\n{context}"
            );
        } else if kid.is_none_or(|k| k.as_str() == Some("")) {
            assert!(
                matches!(err, IdTokenError::MissingKeyId),
                "{err:?}\n{context}"
            );
        } else if kid != Some(&json!(KID)) {
            assert!(
                matches!(err, IdTokenError::UnknownKey(_)),
                "{err:?}\n{context}"
            );
        } else {
            assert!(
                matches!(err, IdTokenError::Malformed(_) | IdTokenError::Signature),
                "{err:?}\n{context}"
            );
        }
    });
}

const CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "azp",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "email",
    "email_verified",
    "name",
    "tid",
    "oid",
];

/// A string claim: `Err` when it is there but not a string.
fn string_claim(c: &Map<String, Value>, k: &str) -> Result<Option<String>, ()> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly fractional).
fn date_claim(c: &Map<String, Value>, k: &str) -> Result<Option<i64>, ()> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(s) => Ok(Some(s)),
            None => match n.as_f64() {
                Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f as i64)),
                _ => Err(()),
            },
        },
        Some(_) => Err(()),
    }
}

/// OpenID Connect Core §3.1.3.7 for these claims of a token signed with the
/// provider's key, at `now`, as the module documentation spells the rules
/// out: what the host must report, or `None` when the token is refused.
fn oidc_model(
    c: &Map<String, Value>,
    issuer: Issuer,
    nonce: Option<&str>,
    now: i64,
) -> Option<IdClaims> {
    const LEEWAY: i64 = 60;
    // Every claim read has its type, or the token is malformed.
    let strings: Vec<Option<String>> =
        ["iss", "sub", "azp", "nonce", "email", "name", "tid", "oid"]
            .iter()
            .map(|k| string_claim(c, k))
            .collect::<Result<_, _>>()
            .ok()?;
    let [iss, sub, azp, token_nonce, email, name, tid, oid] =
        <[Option<String>; 8]>::try_from(strings).unwrap();
    let dates: Vec<Option<i64>> = ["exp", "iat", "nbf"]
        .iter()
        .map(|k| date_claim(c, k))
        .collect::<Result<_, _>>()
        .ok()?;
    let [exp, iat, nbf] = <[Option<i64>; 3]>::try_from(dates).unwrap();
    let audiences: Option<Vec<String>> = match c.get("aud") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => Some(vec![a.clone()]),
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
        ),
        Some(_) => return None,
    };

    // The issuer, with Microsoft's `{tenantid}` the token's own tenant.
    let resolve = |template: &str| -> Option<String> {
        if template.contains("{tenantid}") {
            let tid = tid.as_deref().filter(|t| !t.is_empty())?;
            Some(template.replace("{tenantid}", tid))
        } else {
            Some(template.to_string())
        }
    };
    let iss = iss?;
    let expected = resolve(issuer.issuer)?;
    if iss != expected && format!("https://{iss}") != expected {
        return None;
    }
    if let Some(key_issuer) = issuer.key_issuer
        && resolve(key_issuer)? != iss
    {
        return None;
    }
    let audiences = audiences?;
    if !audiences.iter().any(|a| a == CLIENT_ID) {
        return None;
    }
    match &azp {
        Some(azp) if azp != CLIENT_ID => return None,
        None if audiences.len() > 1 => return None,
        _ => {}
    }
    let exp = exp?;
    if now >= exp.saturating_add(LEEWAY) || iat? > now.saturating_add(LEEWAY) {
        return None;
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY)) {
        return None;
    }
    if let Some(sent) = nonce
        && token_nonce.as_deref() != Some(sent)
    {
        return None;
    }
    let subject = sub.filter(|s| !s.is_empty())?;
    let unverified = matches!(c.get("email_verified"), Some(Value::Bool(false)))
        || c.get("email_verified") == Some(&json!("false"));
    Some(IdClaims {
        subject,
        issuer: iss,
        email: email.filter(|_| !unverified),
        name,
        tenant_id: tid,
        object_id: oid,
        expires_at: exp,
    })
}

/// ID token claims, edited and signed again with the provider's key: the
/// verifier accepts exactly the tokens OpenID Connect's rules accept
/// ([`oidc_model`]: issuer, with Microsoft's tenant; audience and `azp`;
/// expiry, issue and not-before times with 60 s of leeway; nonce; subject;
/// the claims' types), and reports what they say.
#[test]
fn oauth_id_token_claims() {
    let env = AssertUnwindSafe(IdEnv::start());
    let constants = vec![
        json!(CLIENT_ID),
        json!(NONCE),
        json!(GOOGLE_ISSUER),
        json!("accounts.google.com"),
        json!(format!("https://login.microsoftonline.com/{TENANT}/v2.0")),
        json!(format!("login.microsoftonline.com/{TENANT}/v2.0")),
        json!(MICROSOFT_ISSUER),
        json!(TENANT),
        json!(OTHER_TENANT),
        json!(""),
        json!("false"),
        json!("true"),
        json!([CLIENT_ID]),
        json!([CLIENT_ID, "other-client"]),
        json!(["other-client"]),
        json!([]),
        json!(1e15),
        json!(i64::MIN),
        json!(u64::MAX),
    ];
    presence_fuzz::fuzz!((u8, bool, Vec<(u8, u8, String, i64)>), |(
        seed,
        send_nonce,
        fields,
    )| {
        // RSA signing takes milliseconds: the test command's sweep signs one
        // input in five; random and coverage-guided runs sign every input.
        if presence_fuzz::random_time().is_none() && !cfg!(fuzzing) && seed % 5 != 0 {
            return;
        }
        let now = now_s();
        let (issuer, _, claims) = &env.tokens[*seed as usize % env.tokens.len()];
        let mut claims = claims.clone();
        for (field, kind, text, n) in few(fields, 1 + (*seed as usize >> 3) % 3) {
            let name = CLAIMS[*field as usize % CLAIMS.len()];
            // Times near now (and the leeway's edges) are the interesting ones.
            let near = now + n.rem_euclid(7201) - 3600;
            let value = match kind % 10 {
                8 => Some(json!(near)),
                9 => Some(json!(near as f64 + 0.5)),
                kind => edit_value(kind, text, *n as u64, &constants),
            };
            set_path(&mut claims, name, value);
        }
        let nonce = send_nonce.then_some(NONCE);
        let token = sign(&rs256(), &claims);
        let before = now_s();
        let result = env.verify_with(&env.cache, &token, *issuer, nonce);
        let after = now_s();
        let object = claims.as_object().unwrap();
        let (early, late) = (
            oidc_model(object, *issuer, nonce, before),
            oidc_model(object, *issuer, nonce, after),
        );
        if early != late {
            return; // the clock crossed an edge during the call
        }
        match (result, early) {
            (Ok(verified), Some(model)) => assert_eq!(verified, model, "claims {claims}"),
            (Err(_), None) => {}
            (Ok(verified), None) => {
                panic!("accepted against OpenID Connect's rules: {verified:?}\nclaims {claims}")
            }
            (Err(e), Some(model)) => {
                panic!("refused ({e}) though valid: {model:?}\nclaims {claims}")
            }
        }
    });
}

// ---------------------------------------------------------------------------
// JWK sets.

/// A JWK set and the token verified with it.
struct JwksSeed {
    body: Value,
    token: usize,
}

fn jwks_seeds() -> Vec<JwksSeed> {
    let fixture = fixture_jwk();
    let n = fixture["n"].as_str().unwrap();
    // Another 2048-bit modulus: the fixture's with one character changed.
    let mut other_n = n.as_bytes().to_vec();
    other_n[100] = if other_n[100] == b'A' { b'B' } else { b'A' };
    let other_n = String::from_utf8(other_n).unwrap();
    vec![
        JwksSeed {
            body: json!({ "keys": [fixture] }),
            token: 0,
        },
        // Google's www.googleapis.com/oauth2/v3/certs: two keys, by rotation.
        JwksSeed {
            body: json!({ "keys": [
                { "e": "AQAB", "kty": "RSA", "alg": "RS256", "n": other_n, "use": "sig", "kid": "6f7254101f56e41cf35c9926de84a2d552b4c6f1" },
                { "e": "AQAB", "kty": "RSA", "alg": "RS256", "n": n, "use": "sig", "kid": KID },
            ]}),
            token: 0,
        },
        // Microsoft's discovery/v2.0/keys: x5t, x5c and each key's issuer.
        JwksSeed {
            body: json!({ "keys": [
                { "kty": "RSA", "use": "sig", "kid": KID, "x5t": "L1KfKFI_jnXbwWc22xZxw1sUHH0", "n": n, "e": "AQAB",
                  "x5c": ["MIIC/TCCAeWgAwIBAgIIUd7j/OIahkYwDQYJKoZIhvcNAQELBQAwLTErMCkGA1UEAxMiYWNjb3VudHMuYWNjZXNzY29udHJvbC53aW5kb3dzLm5ldDAeFw0yMzExMDExNjAzMjdaFw0yODExMDExNjAzMjda"],
                  "cloud_instance_name": "microsoftonline.com", "issuer": MICROSOFT_ISSUER },
            ]}),
            token: 1,
        },
        // Keys the verifier must pass over: EC, a shared secret, an encryption
        // key and a 1024-bit one, before the signing key.
        JwksSeed {
            body: json!({ "keys": [
                { "kty": "EC", "crv": "P-256", "kid": KID, "use": "sig", "alg": "ES256",
                  "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
                { "kty": "oct", "kid": KID, "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(JWK) },
                { "kty": "RSA", "kid": KID, "use": "enc", "alg": "RSA-OAEP", "n": n, "e": "AQAB" },
                { "kty": "RSA", "kid": KID, "n": URL_SAFE_NO_PAD.encode([0xC5_u8; 128]), "e": "AQAB" },
                fixture_jwk(),
            ]}),
            token: 0,
        },
    ]
}

const JWK_FIELDS: &[&str] = &[
    "kty", "use", "alg", "kid", "n", "e", "issuer", "key_ops", "x5c", "crv",
];

/// Whether `key` is the test key, published for signing with RS256 under
/// `KID`, for a token whose claims are `claims`.
fn is_the_signing_key(key: &Value, claims: &Value) -> bool {
    let fixture = fixture_jwk();
    let decoded = |v: &Value| -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(v.as_str()?).ok()?;
        Some(bytes.into_iter().skip_while(|b| *b == 0).collect())
    };
    let is_none_or = |k: &str, value: &str| key.get(k).is_none_or(|v| v.is_null() || v == value);
    let key_issuer_matches = match key.get("issuer").and_then(Value::as_str) {
        None => true,
        Some(template) => match claims.get("tid").and_then(Value::as_str) {
            Some(tid) if !tid.is_empty() => template.replace("{tenantid}", tid) == claims["iss"],
            _ => !template.contains("{tenantid}") && template == claims["iss"],
        },
    };
    key.get("kid") == Some(&json!(KID))
        && key.get("kty") == Some(&json!("RSA"))
        && is_none_or("use", "sig")
        && is_none_or("alg", "RS256")
        && decoded(&key["n"]).is_some_and(|n| Some(n) == decoded(&fixture["n"]))
        && decoded(&key["e"]).is_some_and(|e| e == [1, 0, 1])
        && key_issuer_matches
}

/// JWK sets as providers publish them, fuzzed and served with a fuzzed status
/// and `Cache-Control`: a token verifies only with the set that publishes the
/// test key under the token's `kid`, as an RS256 signing key, for the token's
/// issuer; everything else is refused as a key set problem, an unknown key or
/// a bad signature, never a panic.
#[test]
fn oauth_jwks_documents() {
    let env = AssertUnwindSafe(IdEnv::start());
    let seeds = jwks_seeds();
    let fixture_n = fixture_jwk()["n"].clone();
    let constants = vec![
        json!("RSA"),
        json!("EC"),
        json!("oct"),
        json!("sig"),
        json!("enc"),
        json!("RS256"),
        json!("RS512"),
        json!(KID),
        fixture_n,
        json!("AQAB"),
        json!("AQ"),
        json!("AAEAAQ"),
        json!(MICROSOFT_ISSUER),
        json!(GOOGLE_ISSUER),
        json!(["verify"]),
    ];
    const CACHE_CONTROL: [Option<&str>; 4] = [
        None,
        Some("public, max-age=19695, must-revalidate, no-transform"),
        Some("max-age=0"),
        Some("no-store"),
    ];
    const JWKS_STATUSES: [u16; 6] = [200, 200, 200, 203, 404, 503];
    presence_fuzz::fuzz!((u8, u8, Vec<(u8, u8, u8, String, u64)>, Vec<Edit>), |(
        seed,
        status,
        fields,
        edits,
    )| {
        let (fields, edits) = (few(fields, 3), few(edits, 4));
        let s = &seeds[*seed as usize % seeds.len()];
        let (issuer, token, claims) = &env.tokens[s.token];
        let mut body = s.body.clone();
        for (key, field, kind, text, n) in fields {
            let keys = body["keys"].as_array_mut().unwrap();
            let i = *key as usize % (keys.len() + 1);
            if i == keys.len() {
                keys.push(json!({}));
            }
            let path = JWK_FIELDS[*field as usize % JWK_FIELDS.len()];
            set_path(&mut keys[i], path, edit_value(*kind, text, *n, &constants));
        }
        let body = mutate(body.to_string().as_bytes(), edits);
        let code = JWKS_STATUSES[*status as usize % JWKS_STATUSES.len()];
        let mut headers = vec![("content-type", "application/json")];
        if let Some(cc) = CACHE_CONTROL[*status as usize / 8 % CACHE_CONTROL.len()] {
            headers.push(("cache-control", cc));
        }
        env.net.answer(issuer.path, code, &headers, body.clone());
        // A cache of its own: the served set is fetched for this token.
        let cache = JwksCache::new(env.client.clone());
        let result = env.verify_with(&cache, token, *issuer, Some(NONCE));
        let context = format!("HTTP {code}, set {}", String::from_utf8_lossy(&body));
        match result {
            Ok(verified) => {
                assert!((200..300).contains(&code), "{context}");
                let set: Value = serde_json::from_slice(&body).expect(&context);
                assert!(
                    set["keys"]
                        .as_array()
                        .is_some_and(|keys| keys.iter().any(|k| is_the_signing_key(k, claims))),
                    "verified with a set that does not publish the key: {verified:?}\n{context}"
                );
                assert_eq!(verified, reported(claims), "{context}");
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        IdTokenError::Jwks(_)
                            | IdTokenError::UnknownKey(_)
                            | IdTokenError::Signature
                            | IdTokenError::KeyIssuerMismatch { .. }
                            | IdTokenError::MissingClaim("tid")
                    ),
                    "{e:?}\n{context}"
                );
                if !(200..300).contains(&code) {
                    assert!(matches!(e, IdTokenError::Jwks(_)), "{e:?}\n{context}");
                }
                assert!(
                    !(fields.is_empty() && edits.is_empty() && code == 200),
                    "the provider's set was refused: {e:?}\n{context}"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Cache-Control of JWK sets.

/// `Cache-Control` of a JWK set: the first `max-age` directive with a number
/// decides, clamped to 5 minutes..24 hours, and a set without one is kept an
/// hour; names are case-insensitive, spaces and quotes around the number are
/// allowed, other directives are ignored.
#[test]
fn oauth_cache_control() {
    use presence_host::oauth::id_token::cache_lifetime;
    use reqwest::header::{CACHE_CONTROL, HeaderMap, HeaderValue};
    const MIN: u64 = 5 * 60;
    const MAX: u64 = 24 * 60 * 60;
    const DEFAULT: u64 = 60 * 60;
    const NAMES: [&str; 8] = [
        "public",
        "no-cache",
        "must-revalidate",
        "s-maxage",
        "max-age",
        "Max-Age",
        "MAX-AGE",
        "stale-while-revalidate",
    ];
    // (directive name, how the number is written, the number, other text, header line break)
    presence_fuzz::fuzz!(Vec<(u8, u8, u64, String, bool)>, |directives| {
        // Each header line, the first max-age written as a number in it, and
        // whether it holds text the model does not read (commas, `=`, a number).
        let mut lines: Vec<(String, Option<u64>, bool)> = vec![Default::default()];
        for (name, form, n, text, new_line) in directives {
            let name = NAMES[*name as usize % NAMES.len()];
            let is_max_age = name.eq_ignore_ascii_case("max-age");
            if *new_line && !lines.last().unwrap().0.is_empty() {
                lines.push(Default::default());
            }
            let (line, first, free_text) = lines.last_mut().unwrap();
            let (directive, number) = match form % 6 {
                0 => (name.to_string(), None),
                1 => (format!("{name}={n}"), Some(*n)),
                2 => (format!(" {name} = \"{n}\" "), Some(*n)),
                3 => (format!("{name}={n}s"), None),
                4 => (format!("{name}=-{n}"), None),
                _ => {
                    *free_text |= is_max_age || text.contains([',', '=']);
                    (format!("{name}={text}"), None)
                }
            };
            if is_max_age && first.is_none() {
                *first = number;
            }
            if !line.is_empty() {
                line.push(',');
            }
            line.push_str(&directive);
        }
        let mut headers = HeaderMap::new();
        for (line, _, _) in &lines {
            match HeaderValue::from_str(line) {
                Ok(value) => {
                    headers.append(CACHE_CONTROL, value);
                }
                // Not a header value at all (control characters): not sent.
                Err(_) => return,
            }
        }
        let lifetime = cache_lifetime(&headers).as_secs();
        assert!((MIN..=MAX).contains(&lifetime), "{lines:?}: {lifetime} s");
        // The model: lines that are not ASCII text are passed over, and the
        // first max-age written as a number decides.
        let mut expected = Some(DEFAULT);
        for (line, first, free_text) in &lines {
            if !line
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) || b == b'\t')
            {
                continue;
            }
            if *free_text {
                expected = None;
                break;
            }
            if let Some(n) = first {
                expected = Some((*n).clamp(MIN, MAX));
                break;
            }
        }
        if let Some(expected) = expected {
            assert_eq!(lifetime, expected, "{lines:?}");
        }
    });
    // Some header values are not text (obs-text): they are skipped, not misread.
    let mut headers = HeaderMap::new();
    headers.append(
        CACHE_CONTROL,
        HeaderValue::from_bytes(b"max-age=\xff").unwrap(),
    );
    headers.append(CACHE_CONTROL, HeaderValue::from_static("max-age=600"));
    assert_eq!(cache_lifetime(&headers), Duration::from_secs(600));
}
