//! A loopback Twilio, as its public documentation describes it, playing both parts:
//!
//! - the webhook sender ("Twilio's request to your incoming message Webhook URL",
//!   "Webhooks security"): form-encoded inbound SMS and WhatsApp messages and
//!   status callbacks, signed with `X-Twilio-Signature` over the configured URL and
//!   the sorted parameters (JSON bodies through `bodySHA256`), retried on a 5xx or
//!   a failed connection as the connection overrides `#rc=N&rp=ct,5xx` ask;
//! - the Messages API ("Message resource", the error catalogue): `POST
//!   /2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP Basic
//!   authentication (an API key or the account's own credentials), Twilio's error
//!   answers (20003, 20404, 21211, 21602, 21603, 21604, 21606, 21910, 63007, and
//!   20429 with `Retry-After` when told to throttle), and a 201 Message resource
//!   for each message it accepts, which it records.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::json;

/// The empty TwiML document the plugin answers messages with.
pub const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#;

/// One Twilio account: its credentials and the senders it owns.
#[derive(Debug, Clone)]
pub struct TwilioAccount {
    pub sid: String,
    pub auth_token: String,
    pub api_key_sid: String,
    pub api_key_secret: String,
    /// SMS numbers (`+1...`) and WhatsApp senders (`whatsapp:+1...`) the account owns.
    pub senders: Vec<String>,
}

/// A message the Messages API accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedMessage {
    pub sid: String,
    /// The form parameters exactly as received, in order.
    pub form: Vec<(String, String)>,
    /// The HTTP Basic user name it was authenticated with.
    pub user: String,
    /// When the emulator accepted it.
    pub received: std::time::Instant,
}

#[derive(Default)]
struct ApiState {
    accepted: Vec<AcceptedMessage>,
    requests: usize,
    /// Answer the next request with 429 and this `Retry-After` (seconds).
    throttle: Option<u64>,
}

#[derive(Clone)]
struct Api {
    account: Arc<TwilioAccount>,
    state: Arc<Mutex<ApiState>>,
}

pub struct TwilioEmulator {
    pub addr: SocketAddr,
    pub account: Arc<TwilioAccount>,
    state: Arc<Mutex<ApiState>>,
    client: reqwest::Client,
}

/// The signature Twilio puts in `X-Twilio-Signature`: base64 HMAC-SHA1, under the
/// auth token, of the URL followed by each parameter's name and value, sorted by
/// name (a repeated name's values sorted too).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `application/x-www-form-urlencoded`, as Twilio sends webhook parameters.
pub fn form_body(params: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// A new Message SID: `SM` and 32 hex digits.
pub fn message_sid() -> String {
    format!("SM{}", hex::encode(rand::random::<[u8; 16]>()))
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Where Twilio delivers webhooks: the URL configured in the Console (the one it
/// signs, under `public_base`) and the address it reaches it at (the host itself,
/// as a reverse proxy would forward it).
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub public_base: String,
    pub connect_base: String,
    pub path: String,
    /// Retries after the first attempt (the `rc` connection override).
    pub retries: u32,
}

impl WebhookTarget {
    pub fn new(public_base: &str, connect_base: &str, path: &str) -> Self {
        Self {
            public_base: public_base.trim_end_matches('/').to_string(),
            connect_base: connect_base.trim_end_matches('/').to_string(),
            path: path.to_string(),
            retries: 1,
        }
    }

    /// The configured webhook URL, as Twilio signs it.
    pub fn url(&self) -> String {
        format!("{}{}", self.public_base, self.path)
    }
}

/// One webhook request, signed and ready to send; tests tamper with its parts.
#[derive(Debug, Clone)]
pub struct SignedWebhook {
    /// The path and query, appended to the target's bases.
    pub path_and_query: String,
    pub signature: Option<String>,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// What the host answered: every attempt's status, then the last answer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub attempts: Vec<u16>,
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl TwilioEmulator {
    pub async fn start(account: TwilioAccount) -> Self {
        let account = Arc::new(account);
        let state = Arc::new(Mutex::new(ApiState::default()));
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{account_sid}/Messages.json",
                axum::routing::post(create_message),
            )
            .with_state(Api {
                account: account.clone(),
                state: state.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            account,
            state,
            client: reqwest::Client::new(),
        }
    }

    /// The REST API's base URL (`https://api.twilio.com` in production).
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<AcceptedMessage> {
        self.state.lock().unwrap().accepted.clone()
    }

    /// Requests the Messages API received, accepted or not.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// Answers the next Messages API request with 429 Too Many Requests.
    pub fn throttle_next(&self, retry_after_s: u64) {
        self.state.lock().unwrap().throttle = Some(retry_after_s);
    }

    /// An inbound SMS, with the parameters Twilio's incoming-message webhook sends.
    pub fn inbound_sms(&self, from: &str, to: &str, body: &str) -> Vec<(String, String)> {
        let sid = message_sid();
        owned(&[
            ("ToCountry", "US"),
            ("ToState", "CA"),
            ("SmsMessageSid", &sid),
            ("NumMedia", "0"),
            ("ToCity", "SAN FRANCISCO"),
            ("FromZip", "94105"),
            ("SmsSid", &sid),
            ("FromState", "CA"),
            ("SmsStatus", "received"),
            ("FromCity", "SAN FRANCISCO"),
            ("Body", body),
            ("FromCountry", "US"),
            ("To", to),
            ("ToZip", "94105"),
            ("NumSegments", "1"),
            ("MessageSid", &sid),
            ("AccountSid", &self.account.sid),
            ("From", from),
            ("ApiVersion", "2010-04-01"),
        ])
    }

    /// An inbound WhatsApp message: `whatsapp:` addresses, the sender's profile name
    /// and WhatsApp id, no geographic fields.
    pub fn inbound_whatsapp(
        &self,
        from: &str,
        to: &str,
        body: &str,
        profile_name: &str,
    ) -> Vec<(String, String)> {
        let sid = message_sid();
        owned(&[
            ("SmsMessageSid", &sid),
            ("NumMedia", "0"),
            ("ProfileName", profile_name),
            ("MessageType", "text"),
            ("SmsSid", &sid),
            ("WaId", from.trim_start_matches('+')),
            ("SmsStatus", "received"),
            ("Body", body),
            ("To", &format!("whatsapp:{to}")),
            ("NumSegments", "1"),
            ("ReferralNumMedia", "0"),
            ("MessageSid", &sid),
            ("AccountSid", &self.account.sid),
            ("From", &format!("whatsapp:{from}")),
            ("ApiVersion", "2010-04-01"),
        ])
    }

    /// A status callback for an outbound message.
    pub fn status_callback(
        &self,
        message: &AcceptedMessage,
        status: &str,
    ) -> Vec<(String, String)> {
        let field = |name: &str| {
            message
                .form
                .iter()
                .find(|(k, _)| k == name)
                .map_or(String::new(), |(_, v)| v.clone())
        };
        owned(&[
            ("SmsSid", &message.sid),
            ("SmsStatus", status),
            ("MessageStatus", status),
            ("To", &field("To")),
            ("MessageSid", &message.sid),
            ("AccountSid", &self.account.sid),
            ("From", &field("From")),
            ("ApiVersion", "2010-04-01"),
        ])
    }

    /// A form-encoded webhook, signed with the account's auth token.
    pub fn form_webhook(
        &self,
        target: &WebhookTarget,
        params: &[(String, String)],
    ) -> SignedWebhook {
        SignedWebhook {
            path_and_query: target.path.clone(),
            signature: Some(twilio_signature(
                &self.account.auth_token,
                &target.url(),
                params,
            )),
            content_type: "application/x-www-form-urlencoded",
            body: form_body(params).into_bytes(),
        }
    }

    /// A JSON webhook: the body's hex SHA-256 goes into the URL as `bodySHA256`,
    /// and the URL alone is signed.
    pub fn json_webhook(&self, target: &WebhookTarget, body: &str) -> SignedWebhook {
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
        let path_and_query = format!("{}?bodySHA256={hash}", target.path);
        let url = format!("{}{path_and_query}", target.public_base);
        SignedWebhook {
            path_and_query,
            signature: Some(twilio_signature(&self.account.auth_token, &url, &[])),
            content_type: "application/json",
            body: body.as_bytes().to_vec(),
        }
    }

    /// Signs and sends a form-encoded webhook.
    pub async fn deliver(&self, target: &WebhookTarget, params: &[(String, String)]) -> Delivery {
        self.send(target, &self.form_webhook(target, params)).await
    }

    /// Posts a webhook to the target, retrying a 5xx or a failed connection up to
    /// `target.retries` times; a 4xx is final (a refused signature stays refused).
    pub async fn send(&self, target: &WebhookTarget, webhook: &SignedWebhook) -> Delivery {
        let url = format!("{}{}", target.connect_base, webhook.path_and_query);
        let mut attempts = Vec::new();
        loop {
            let mut request = self
                .client
                .post(&url)
                .header("content-type", webhook.content_type)
                .header("user-agent", "TwilioProxy/1.1")
                .header("i-twilio-idempotency-token", idempotency_token())
                .body(webhook.body.clone());
            if let Some(signature) = &webhook.signature {
                request = request.header("x-twilio-signature", signature);
            }
            let answer = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let content_type = response
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body = response.text().await.unwrap_or_default();
                    Some((status, content_type, body))
                }
                Err(_) => None,
            };
            let status = answer.as_ref().map_or(0, |a| a.0);
            attempts.push(status);
            let retry = status == 0 || status >= 500;
            if !retry || attempts.len() > target.retries as usize {
                let (status, content_type, body) = answer.unwrap_or((0, None, String::new()));
                return Delivery {
                    attempts,
                    status,
                    content_type,
                    body,
                };
            }
        }
    }
}

fn idempotency_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Twilio's error answer: `{"code", "message", "more_info", "status"}`.
fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, axum::Json(body)).into_response()
}

/// The Basic auth user name, when the credentials are the account's API key or
/// its Account SID and auth token.
fn authenticate(account: &TwilioAccount, headers: &HeaderMap) -> Option<String> {
    let encoded = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    let valid = (user == account.api_key_sid && password == account.api_key_secret)
        || (user == account.sid && password == account.auth_token);
    valid.then(|| user.to_string())
}

/// An E.164 number as Twilio's messaging accepts it: `+`, then 7 to 15 digits.
fn is_phone_number(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// Twilio's checks on a create request, in the order it reports them.
fn validate(account: &TwilioAccount, form: &[(String, String)]) -> Result<(), (u32, String)> {
    let get = |name: &str| {
        form.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    let to = get("To").ok_or((21604, "A 'To' phone number is required.".to_string()))?;
    let to_whatsapp = to.starts_with("whatsapp:");
    if !is_phone_number(to.trim_start_matches("whatsapp:")) {
        return Err((21211, format!("Invalid 'To' Phone Number: {to}")));
    }
    let from = get("From");
    if from.is_none() && get("MessagingServiceSid").is_none() {
        return Err((21603, "A 'From' phone number is required.".to_string()));
    }
    if get("Body").is_none() && get("MediaUrl").is_none() {
        return Err((21602, "Message body is required.".to_string()));
    }
    if let Some(from) = from {
        if from.starts_with("whatsapp:") != to_whatsapp {
            return Err((
                21910,
                "Invalid 'From' and 'To' pair. 'From' and 'To' should be of the same channel"
                    .to_string(),
            ));
        }
        if !account.senders.iter().any(|s| s == from) {
            return Err(if to_whatsapp {
                (
                    63007,
                    "Twilio could not find a Channel with the specified From address".to_string(),
                )
            } else {
                (
                    21606,
                    format!(
                        "The From phone number {from} is not a valid, SMS-capable inbound phone number or short code for your account."
                    ),
                )
            });
        }
    }
    Ok(())
}

async fn create_message(
    State(api): State<Api>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = api.state.lock().unwrap();
    state.requests += 1;
    if let Some(seconds) = state.throttle.take() {
        let mut response = twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
        return response;
    }
    let Some(user) = authenticate(&api.account, &headers) else {
        let mut response = twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
        response.headers_mut().insert(
            "www-authenticate",
            "Basic realm=\"Twilio API\"".parse().unwrap(),
        );
        return response;
    };
    if account_sid != api.account.sid {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            &format!(
                "The requested resource /2010-04-01/Accounts/{account_sid}/Messages.json was not found"
            ),
        );
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    if let Err((code, message)) = validate(&api.account, &form) {
        return twilio_error(StatusCode::BAD_REQUEST, code, &message);
    }
    let sid = message_sid();
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let now = chrono::Utc::now().to_rfc2822();
    let service = get("MessagingServiceSid");
    let uri = format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json");
    let resource = json!({
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": get("Body").unwrap_or_default(),
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": get("From"),
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": "1",
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        // A Messaging Service first accepts a message, then picks a sender and queues it.
        "status": if service.is_some() && get("From").is_none() { "accepted" } else { "queued" },
        "subresource_uris": {"media": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json")},
        "to": get("To"),
        "uri": uri,
    });
    state.accepted.push(AcceptedMessage {
        sid,
        form,
        user,
        received: std::time::Instant::now(),
    });
    (StatusCode::CREATED, axum::Json(resource)).into_response()
}

/// The SMS number the tests' account sends from.
pub const SMS_NUMBER: &str = "+15017122661";
/// The WhatsApp sender the tests' account sends from.
pub const WHATSAPP_SENDER: &str = "whatsapp:+14155238886";

/// The account the tests' Twilio emulators serve.
pub fn test_account() -> TwilioAccount {
    TwilioAccount {
        sid: "AC0123456789abcdef0123456789abcdef".into(),
        auth_token: "f0e1d2c3b4a5968778695a4b3c2d1e0f".into(),
        api_key_sid: "SK0123456789abcdef0123456789abcdef".into(),
        api_key_secret: "api-key-secret-for-tests".into(),
        senders: vec![SMS_NUMBER.into(), WHATSAPP_SENDER.into()],
    }
}
