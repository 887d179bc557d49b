//! A loopback emulator of OAuth 2.0 authorization servers: Google, the Microsoft
//! identity platform (v2.0 endpoints), Slack (OAuth v2) and Zoom, behaving as each
//! provider documents it and as RFC 6749 (OAuth 2.0) and RFC 7636 (PKCE) specify.
//!
//! One emulator is one provider with one registered confidential client and one
//! user, who approves every requested scope unless a test says otherwise
//! ([`OAuthEmulator::grant_only`], [`OAuthEmulator::deny_next`]).
//!
//! Endpoints (paths as each provider publishes them, on `http://127.0.0.1:PORT`):
//!
//! | flavor    | authorize                          | token                          | revoke             | keys                           |
//! |-----------|------------------------------------|--------------------------------|--------------------|--------------------------------|
//! | Google    | `/o/oauth2/v2/auth`                | `/token`                       | `/revoke`          | `/oauth2/v3/certs`             |
//! | Microsoft | `/{tenant}/oauth2/v2.0/authorize`  | `/{tenant}/oauth2/v2.0/token`  | none (404)         | `/{tenant}/discovery/v2.0/keys`|
//! | Slack     | `/oauth/v2/authorize`              | `/api/oauth.v2.access`         | `/api/auth.revoke` | `/jwks` (empty set)            |
//! | Zoom      | `/oauth/authorize`                 | `/oauth/token`                 | `/oauth/revoke`    | `/jwks` (empty set)            |
//!
//! Sources, cited again where each behaviour is implemented:
//! - RFC 6749 §4.1 (authorization code grant), §5.1/§5.2 (token responses and
//!   errors), §6 (refreshing), §10.5 (code replay); RFC 7636 §4 (PKCE).
//! - Google: "Using OAuth 2.0 for Web Server Applications"
//!   (developers.google.com/identity/protocols/oauth2/web-server) and "OpenID Connect"
//!   (developers.google.com/identity/openid-connect/openid-connect).
//! - Microsoft: "Microsoft identity platform and OAuth 2.0 authorization code flow"
//!   (learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow), "Refresh
//!   tokens in the Microsoft identity platform" (…/refresh-tokens), "ID token claims
//!   reference" (…/id-token-claims-reference), "Microsoft Entra authentication and
//!   authorization error codes" (…/reference-error-codes).
//! - Slack: "Installing with OAuth" (docs.slack.dev/authentication/installing-with-oauth),
//!   the `oauth.v2.access` and `auth.revoke` method pages (docs.slack.dev/reference/methods/…),
//!   "Using token rotation" (docs.slack.dev/authentication/using-token-rotation).
//! - Zoom: "OAuth 2.0" (developers.zoom.us/docs/integrations/oauth/) and "OAuth error
//!   messages" (developers.zoom.us/docs/integrations/oauth-error-messages/).
//!
//! Deliberately stricter than the providers (test policy, not provider behaviour):
//! PKCE with `S256` is required by every flavor (the providers also accept `plain`
//! or no PKCE); `redirect_uri` is required by every flavor (Slack and Zoom fall back
//! to the app's configured URL); any absolute http(s) URL is accepted as registered.
//!
//! Documented provider behaviours a client must cope with, reproduced here:
//! - Google issues a refresh token only for `access_type=offline`, and only on the
//!   first offline consent unless the request says `prompt=consent`; refreshing
//!   returns no new refresh token.
//! - Microsoft issues a refresh token only when `offline_access` is requested, and a
//!   new one on every refresh while the old one stays usable; its ID token carries
//!   `oid`, `name` and `preferred_username` only with the `profile` scope, and its
//!   `sub` is a pairwise value, not the `oid`.
//! - Slack (token rotation on) and Zoom issue a new refresh token on every refresh
//!   and refuse the used one; Slack's rotating tokens look like `xoxe.xoxp-1-…`.
//!
//! Not emulated: discovery documents, userinfo endpoints, device and client
//! credential grants, `response_mode` other than `query`, refresh-token expiry by
//! age or inactivity (use [`OAuthEmulator::fail_next_refresh`] or
//! [`OAuthEmulator::revoke_user_consent`]), Google's per-user refresh-token cap.

// Test-support modules are compiled into several test binaries, and each uses
// only part of this one.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

// ---------------------------------------------------------------------------
// Fixtures and fixed identities
// ---------------------------------------------------------------------------

/// The test-only RSA key that signs ID tokens (and Microsoft's JWT access tokens).
const SIGNING_KEY_PEM: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/oauth/rsa-test-key.pem"
));
/// Its public half, as served on the JWKS endpoints.
const PUBLIC_JWK: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/oauth/rsa-test-key.jwk.json"
));
/// The `kid` of [`PUBLIC_JWK`], put in every signed token's header.
pub const SIGNING_KEY_ID: &str = "emulator-test-key-1";

/// Google's `sub`: a stable numeric account id.
pub const GOOGLE_SUBJECT: &str = "110248495921238986420";
pub const GOOGLE_EMAIL: &str = "emulated.user@example.com";
/// The tenant the Microsoft user signs in to (`tid`, and part of `iss`).
pub const MS_TENANT_ID: &str = "4b9c5a3e-7d21-4f06-9a8e-2c1d3f5b6a70";
/// The Microsoft user's object id (`oid`): Microsoft Graph's user `id`.
pub const MS_OBJECT_ID: &str = "d7f2a1c4-93be-4e58-8a6d-0c5f1e2b3a49";
/// The Microsoft `sub`, a pairwise value distinct from `oid` ("ID token claims reference").
pub const MS_PAIRWISE_SUBJECT: &str = "AAAAAAAAAAAAAAAAAAAAAGmKx3sJq1tQ0b6hYc2vPzE";
pub const MS_USERNAME: &str = "emulated.user@contoso.example";
/// The Slack user who installs the app (`authed_user.id`).
pub const SLACK_USER_ID: &str = "U0EMULATE1";
/// The workspace and app, the same as the Slack Web API emulator's (`support::slack`).
pub const SLACK_TEAM_ID: &str = "T0EMULATE1";
pub const SLACK_TEAM_NAME: &str = "Emulated Workspace";
pub const SLACK_APP_ID: &str = "A0EMULATE1";
pub const SLACK_BOT_USER_ID: &str = "U0EMULBOT1";
/// The Zoom user's id (as `GET /v2/users/me` would return it).
pub const ZOOM_USER_ID: &str = "KDcuGIm1QgePTO8WbOqwIQ";
/// What Zoom puts in `api_url` ("OAuth 2.0"); see [`OAuthEmulator::set_zoom_api_url`].
pub const ZOOM_API_URL: &str = "https://api.zoom.us";
const USER_DISPLAY_NAME: &str = "Emulated User";

/// Access-token lifetime unless a test sets another.
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: u64 = 3_600;
/// Slack's expiring tokens last 12 hours ("Using token rotation": `expires_in` 43200).
pub const SLACK_ROTATING_TOKEN_LIFETIME: u64 = 43_200;
/// ID tokens are valid for an hour.
const ID_TOKEN_LIFETIME: u64 = 3_600;
/// Zoom refresh tokens carry a 90-day `exp` (they are JWTs like its access tokens).
const ZOOM_REFRESH_LIFETIME: u64 = 90 * 86_400;

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// Which provider an emulator behaves as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Google,
    Microsoft,
    Slack,
    Zoom,
}

/// A one-shot misbehaviour of the next refresh-token grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshFailure {
    /// Answers `invalid_grant` in the flavor's own shape (Google "Token has been
    /// expired or revoked.", Microsoft AADSTS700082, Slack `invalid_refresh_token`,
    /// Zoom "Invalid Token!"). The refresh token itself stays valid.
    InvalidGrant,
    /// Answers this HTTP status with the flavor's error body and no `Retry-After`.
    ServerError(u16),
    /// Waits this long, then answers normally.
    Slow(Duration),
}

/// RFC 7636 §4.6: `BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) == code_challenge`.
pub fn s256_matches(verifier: &str, challenge: &str) -> bool {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

/// The emulator, serving on a loopback port until dropped.
pub struct OAuthEmulator {
    base: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl OAuthEmulator {
    /// Binds `127.0.0.1:0` and serves `flavor`'s endpoints for one registered
    /// client (`client_id`, `client_secret`).
    pub async fn start(flavor: Flavor, client_id: &str, client_secret: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the OAuth emulator");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            flavor,
            base: base.clone(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            rsa_key: EncodingKey::from_rsa_pem(SIGNING_KEY_PEM.as_bytes())
                .expect("tests/fixtures/oauth/rsa-test-key.pem is an RSA private key"),
            zoom_key: EncodingKey::from_secret(&random_bytes(32)),
            jwk: serde_json::from_str(PUBLIC_JWK)
                .expect("tests/fixtures/oauth/rsa-test-key.jwk.json is JSON"),
            state: Mutex::new(AuthServer::new(flavor)),
        });
        let app = router(flavor).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base,
            shared,
            server,
        }
    }

    pub fn flavor(&self) -> Flavor {
        self.shared.flavor
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The flavor's authorization endpoint (Microsoft: the `common` tenant).
    pub fn authorize_url(&self) -> String {
        let path = match self.flavor() {
            Flavor::Google => "/o/oauth2/v2/auth",
            Flavor::Microsoft => "/common/oauth2/v2.0/authorize",
            Flavor::Slack => "/oauth/v2/authorize",
            Flavor::Zoom => "/oauth/authorize",
        };
        format!("{}{path}", self.base)
    }

    /// The flavor's token endpoint (Google's is oauth2.googleapis.com's `/token`).
    pub fn token_url(&self) -> String {
        let path = match self.flavor() {
            Flavor::Google => "/token",
            Flavor::Microsoft => "/common/oauth2/v2.0/token",
            Flavor::Slack => "/api/oauth.v2.access",
            Flavor::Zoom => "/oauth/token",
        };
        format!("{}{path}", self.base)
    }

    /// The keys that verify ID tokens. Slack and Zoom issue none: `/jwks` serves an
    /// empty set.
    pub fn jwks_url(&self) -> String {
        let path = match self.flavor() {
            Flavor::Google => "/oauth2/v3/certs",
            Flavor::Microsoft => "/common/discovery/v2.0/keys",
            Flavor::Slack | Flavor::Zoom => "/jwks",
        };
        format!("{}{path}", self.base)
    }

    /// Google `POST /revoke` (token as `?token=` or form field), Slack
    /// `auth.revoke` (token as Bearer), Zoom `/oauth/revoke` (HTTP Basic, `token`).
    /// The Microsoft identity platform documents no revocation endpoint for apps:
    /// this returns a path the emulator does not serve (404).
    pub fn revoke_url(&self) -> String {
        let path = match self.flavor() {
            Flavor::Google => "/revoke",
            Flavor::Microsoft => "/common/oauth2/v2.0/revoke",
            Flavor::Slack => "/api/auth.revoke",
            Flavor::Zoom => "/oauth/revoke",
        };
        format!("{}{path}", self.base)
    }

    /// The `iss` of the ID tokens: Google's is the emulator's base URL (standing in
    /// for `https://accounts.google.com`); Microsoft's `{base}/{tid}/v2.0`. Slack and
    /// Zoom issue no ID tokens; their issuer is the base URL.
    pub fn issuer(&self) -> String {
        self.shared.issuer()
    }

    /// The fixed tenant the Microsoft user belongs to.
    pub fn ms_tenant_id(&self) -> &str {
        MS_TENANT_ID
    }

    /// The provider-side id of the user who signs in: Google `sub`, Microsoft `oid`
    /// (the ID token's `sub` is pairwise, [`MS_PAIRWISE_SUBJECT`]), Slack
    /// `authed_user.id`, Zoom user id.
    pub fn subject(&self) -> &str {
        match self.flavor() {
            Flavor::Google => GOOGLE_SUBJECT,
            Flavor::Microsoft => MS_OBJECT_ID,
            Flavor::Slack => SLACK_USER_ID,
            Flavor::Zoom => ZOOM_USER_ID,
        }
    }

    /// From now on the user grants only these of the requested scopes, so token
    /// responses list exactly the requested ones among them. Sign-in scopes the
    /// consent screen does not offer to decline (`openid`, `email`, `profile`,
    /// `offline_access`) stay granted when requested.
    pub fn grant_only(&self, scopes: &[&str]) {
        self.shared.lock().grant_only = Some(scopes.iter().map(|s| s.to_string()).collect());
    }

    /// Back to the default: the user grants every requested scope.
    pub fn grant_all(&self) {
        self.shared.lock().grant_only = None;
    }

    /// The next authorization is refused by the user: a redirect with
    /// `error=access_denied` (and `state`).
    pub fn deny_next(&self) {
        self.shared.lock().deny_next = true;
    }

    /// `expires_in` of access tokens issued from now on (default 3600; Slack 43200).
    pub fn set_access_token_lifetime(&self, secs: u64) {
        self.shared.lock().access_lifetime = secs;
    }

    /// Every refresh-token grant waits this long before it is processed and
    /// answered, so concurrent refreshes overlap.
    pub fn set_refresh_delay(&self, d: Duration) {
        self.shared.lock().refresh_delay = d;
    }

    /// Makes the next refresh-token grant misbehave once.
    pub fn fail_next_refresh(&self, failure: RefreshFailure) {
        self.shared.lock().next_refresh_failure = Some(failure);
    }

    /// The user removes the app's access: every grant made so far is revoked, so
    /// its refresh tokens get `invalid_grant` in the flavor's own shape and its
    /// access tokens stop being valid. A later authorization starts a new grant.
    pub fn revoke_user_consent(&self) {
        let mut s = self.shared.lock();
        for grant in &mut s.grants {
            grant.revoked = true;
        }
    }

    /// Token-endpoint requests with this effective `grant_type`
    /// (`authorization_code`, `refresh_token`), refused ones included; requests
    /// whose body could not be read count under `""`.
    pub fn token_requests(&self, grant_type: &str) -> usize {
        self.shared
            .lock()
            .token_requests
            .get(grant_type)
            .copied()
            .unwrap_or(0)
    }

    /// The most recently issued refresh token that is still usable.
    pub fn current_refresh_token(&self) -> Option<String> {
        self.shared.lock().current_refresh_token()
    }

    /// Whether a resource server would accept `token` now: issued here, unexpired,
    /// not superseded by a later refresh of the same grant, not revoked.
    pub fn is_valid_access_token(&self, token: &str) -> bool {
        self.shared.lock().access_token_is_valid(token)
    }

    /// The query of the last authorization request, in order, refused ones included.
    pub fn last_authorize_query(&self) -> Option<Vec<(String, String)>> {
        self.shared.lock().last_authorize_query.clone()
    }

    /// The `api_url` Zoom's token responses carry (default [`ZOOM_API_URL`]), to
    /// point a client that honours it at a loopback API emulator.
    pub fn set_zoom_api_url(&self, url: &str) {
        self.shared.lock().zoom_api_url = url.to_string();
    }
}

impl Drop for OAuthEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

struct Shared {
    flavor: Flavor,
    base: String,
    client_id: String,
    client_secret: String,
    rsa_key: EncodingKey,
    /// Zoom signs its JWT-shaped tokens with a secret of its own (HS512).
    zoom_key: EncodingKey,
    jwk: Value,
    state: Mutex<AuthServer>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, AuthServer> {
        // A panicking handler must not take the rest of a test down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn issuer(&self) -> String {
        match self.flavor {
            Flavor::Microsoft => format!("{}/{MS_TENANT_ID}/v2.0", self.base),
            _ => self.base.clone(),
        }
    }
}

/// Everything the authorization server knows and what the simulated user does.
struct AuthServer {
    codes: HashMap<String, AuthorizationCode>,
    grants: Vec<Grant>,
    access_tokens: HashMap<String, AccessRecord>,
    refresh_tokens: HashMap<String, RefreshRecord>,
    /// Issuance counter: orders refresh tokens for `current_refresh_token`.
    issued: u64,
    grant_only: Option<Vec<String>>,
    deny_next: bool,
    access_lifetime: u64,
    refresh_delay: Duration,
    next_refresh_failure: Option<RefreshFailure>,
    token_requests: HashMap<String, usize>,
    last_authorize_query: Option<Vec<(String, String)>>,
    zoom_api_url: String,
}

/// One authorization code and what it is bound to (RFC 6749 §4.1.2, RFC 7636 §4.4).
struct AuthorizationCode {
    redirect_uri: String,
    challenge: String,
    /// Granted scopes (Slack: user scopes).
    scopes: Vec<String>,
    /// Slack only: granted bot scopes.
    bot_scopes: Vec<String>,
    nonce: Option<String>,
    /// Whether the exchange may come with a refresh token (Google
    /// `access_type=offline`, Microsoft `offline_access`; always for Slack and Zoom).
    offline: bool,
    /// Google `prompt=consent`: a refresh token even if one was issued before.
    prompt_consent: bool,
    expires_at: Instant,
    redeemed: bool,
    /// The grants its exchange created, revoked if it is replayed.
    grants: Vec<usize>,
}

/// What one consent produced: the tokens of one kind issued from one code.
struct Grant {
    kind: TokenKind,
    scopes: Vec<String>,
    has_refresh: bool,
    revoked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenKind {
    /// A token acting for the user (Slack `xoxp`, everything for the others).
    User,
    /// Slack's bot token (`xoxb`), issued when bot scopes are requested.
    SlackBot,
}

struct AccessRecord {
    grant: usize,
    expires_at: Instant,
    superseded: bool,
}

struct RefreshRecord {
    grant: usize,
    order: u64,
    /// Used and rotated away (Slack, Zoom).
    spent: bool,
}

impl AuthServer {
    fn new(flavor: Flavor) -> Self {
        Self {
            codes: HashMap::new(),
            grants: Vec::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            issued: 0,
            grant_only: None,
            deny_next: false,
            access_lifetime: match flavor {
                Flavor::Slack => SLACK_ROTATING_TOKEN_LIFETIME,
                _ => DEFAULT_ACCESS_TOKEN_LIFETIME,
            },
            refresh_delay: Duration::ZERO,
            next_refresh_failure: None,
            token_requests: HashMap::new(),
            last_authorize_query: None,
            zoom_api_url: ZOOM_API_URL.to_string(),
        }
    }

    fn count_token_request(&mut self, grant_type: &str) {
        *self
            .token_requests
            .entry(grant_type.to_string())
            .or_default() += 1;
    }

    fn access_token_is_valid(&self, token: &str) -> bool {
        self.access_tokens.get(token).is_some_and(|rec| {
            !rec.superseded && Instant::now() < rec.expires_at && !self.grants[rec.grant].revoked
        })
    }

    fn refresh_token_is_valid(&self, token: &str) -> bool {
        self.refresh_tokens
            .get(token)
            .is_some_and(|rec| !rec.spent && !self.grants[rec.grant].revoked)
    }

    fn current_refresh_token(&self) -> Option<String> {
        self.refresh_tokens
            .iter()
            .filter(|(token, _)| self.refresh_token_is_valid(token))
            .max_by_key(|(_, rec)| rec.order)
            .map(|(token, _)| token.clone())
    }

    /// The grant a presented access or refresh token belongs to, if it is usable.
    fn live_grant_of(&self, token: &str) -> Option<usize> {
        if self.access_token_is_valid(token) {
            return self.access_tokens.get(token).map(|rec| rec.grant);
        }
        if self.refresh_token_is_valid(token) {
            return self.refresh_tokens.get(token).map(|rec| rec.grant);
        }
        None
    }

    /// The scopes the user grants out of `requested`.
    fn consent(&self, requested: &[String]) -> Vec<String> {
        match &self.grant_only {
            None => requested.to_vec(),
            Some(only) => requested
                .iter()
                .filter(|s| SIGN_IN_SCOPES.contains(&s.as_str()) || only.contains(s))
                .cloned()
                .collect(),
        }
    }

    fn new_grant(&mut self, kind: TokenKind, scopes: Vec<String>, has_refresh: bool) -> usize {
        self.grants.push(Grant {
            kind,
            scopes,
            has_refresh,
            revoked: false,
        });
        self.grants.len() - 1
    }

    /// Records a new access token for `grant`; earlier ones of the grant are superseded.
    fn record_access_token(&mut self, grant: usize, token: &str) {
        for rec in self.access_tokens.values_mut() {
            if rec.grant == grant {
                rec.superseded = true;
            }
        }
        self.access_tokens.insert(
            token.to_string(),
            AccessRecord {
                grant,
                expires_at: Instant::now() + Duration::from_secs(self.access_lifetime),
                superseded: false,
            },
        );
    }

    fn record_refresh_token(&mut self, grant: usize, token: &str) {
        self.issued += 1;
        self.refresh_tokens.insert(
            token.to_string(),
            RefreshRecord {
                grant,
                order: self.issued,
                spent: false,
            },
        );
    }
}

/// Scopes that sign the user in rather than reach their data; a consent screen
/// does not let the user decline them.
const SIGN_IN_SCOPES: [&str; 4] = ["openid", "email", "profile", "offline_access"];

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

fn router(flavor: Flavor) -> Router<Arc<Shared>> {
    let app = Router::new();
    match flavor {
        // "Using OAuth 2.0 for Web Server Applications": accounts.google.com/o/oauth2/v2/auth,
        // oauth2.googleapis.com/token and /revoke; "OpenID Connect": jwks_uri
        // www.googleapis.com/oauth2/v3/certs.
        Flavor::Google => app
            .route("/o/oauth2/v2/auth", get(authorize))
            .route("/token", post(token_endpoint))
            .route("/revoke", post(revoke))
            .route("/oauth2/v3/certs", get(jwks)),
        // "OAuth 2.0 authorization code flow": login.microsoftonline.com/{tenant}/oauth2/v2.0/….
        Flavor::Microsoft => app
            .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
            .route("/{tenant}/oauth2/v2.0/token", post(token_endpoint))
            .route("/{tenant}/discovery/v2.0/keys", get(jwks)),
        // "Installing with OAuth": slack.com/oauth/v2/authorize, then oauth.v2.access.
        Flavor::Slack => app
            .route("/oauth/v2/authorize", get(authorize))
            .route("/api/oauth.v2.access", post(token_endpoint))
            .route("/api/auth.revoke", post(revoke))
            .route("/jwks", get(jwks)),
        // Zoom "OAuth 2.0": zoom.us/oauth/authorize, /oauth/token, /oauth/revoke.
        Flavor::Zoom => app
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/token", post(token_endpoint))
            .route("/oauth/revoke", post(revoke))
            .route("/jwks", get(jwks)),
    }
}

/// Request parameters with RFC 6749 §3.1's rules: a parameter sent without a
/// value is treated as omitted, and a repeated one makes the request invalid.
struct Params {
    values: HashMap<String, String>,
    repeated: Option<String>,
}

impl Params {
    fn new(pairs: &[(String, String)]) -> Self {
        let mut values = HashMap::new();
        let mut repeated = None;
        for (k, v) in pairs {
            if values.insert(k.clone(), v.clone()).is_some() && repeated.is_none() {
                repeated = Some(k.clone());
            }
        }
        Self { values, repeated }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

// ---------------------------------------------------------------------------
// Authorization endpoint
// ---------------------------------------------------------------------------

/// `GET` authorization endpoint: validates the request, lets the simulated user
/// decide, and redirects back with `code` and `state` (RFC 6749 §4.1.1–§4.1.2).
async fn authorize(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Response {
    let flavor = shared.flavor;
    let pairs = form_pairs(query.as_deref().unwrap_or("").as_bytes());
    let mut s = shared.lock();
    s.last_authorize_query = Some(pairs.clone());
    let params = Params::new(&pairs);

    // Microsoft: the tenant segment must name one ("Endpoints": common,
    // organizations, consumers or a tenant id).
    if flavor == Flavor::Microsoft {
        let tenant = uri
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        if !["common", "organizations", "consumers", MS_TENANT_ID].contains(&tenant) {
            return error_page(
                flavor,
                "invalid_tenant",
                &format!("Tenant '{tenant}' not found."),
            );
        }
    }

    // RFC 6749 §4.1.2.1: with an unknown client or an unusable redirect URI the
    // server informs the user and MUST NOT redirect. Every provider shows a page.
    match params.get("client_id") {
        Some(id) if id == shared.client_id => {}
        other => return error_page(flavor, "invalid_client", other.unwrap_or("")),
    }
    let Some(redirect) = params.get("redirect_uri").and_then(parse_redirect_uri) else {
        return error_page(
            flavor,
            "invalid_redirect_uri",
            params.get("redirect_uri").unwrap_or(""),
        );
    };
    let state = params.get("state").map(str::to_string);
    let refuse = |error: &str, description: &str| {
        error_redirect(flavor, &redirect, state.as_deref(), error, description)
    };

    if let Some(name) = &params.repeated {
        return refuse("invalid_request", &format!("Duplicate parameter: {name}"));
    }
    match params.get("response_type") {
        Some("code") => {}
        None => {
            return refuse(
                "invalid_request",
                "Missing required parameter: response_type",
            );
        }
        Some(other) => {
            return refuse(
                "unsupported_response_type",
                &format!("Unsupported response_type: {other}"),
            );
        }
    }
    // PKCE, S256 only (RFC 7636 §4.3, §4.4.1: invalid_request when required and absent).
    let Some(challenge) = params.get("code_challenge") else {
        return refuse("invalid_request", "code_challenge is required");
    };
    if params.get("code_challenge_method") != Some("S256") {
        return refuse("invalid_request", "code_challenge_method must be S256");
    }
    if !is_s256_challenge(challenge) {
        return refuse(
            "invalid_request",
            "code_challenge is not a BASE64URL SHA-256 digest",
        );
    }

    let (requested, requested_bot) = match flavor {
        // Slack: `user_scope` for the user token and `scope` for the bot, both
        // comma-separated ("Installing with OAuth").
        Flavor::Slack => (
            split_scopes(params.get("user_scope").unwrap_or(""), ','),
            split_scopes(params.get("scope").unwrap_or(""), ','),
        ),
        // Google and Microsoft: `scope` is required and space-delimited.
        Flavor::Google | Flavor::Microsoft => match params.get("scope") {
            Some(scope) => (split_scopes(scope, ' '), Vec::new()),
            None => return refuse("invalid_request", "Missing required parameter: scope"),
        },
        // Zoom: `scope` is optional (the app's configured scopes apply without it).
        Flavor::Zoom => (
            split_scopes(params.get("scope").unwrap_or(""), ' '),
            Vec::new(),
        ),
    };

    if std::mem::take(&mut s.deny_next) {
        // Microsoft's table: access_denied, "Resource owner denied consent", with a
        // description; AADSTS65004 is the user declining consent.
        return refuse(
            "access_denied",
            "AADSTS65004: User declined to consent to access the app.",
        );
    }

    let scopes = s.consent(&requested);
    let bot_scopes = s.consent(&requested_bot);
    let offline = match flavor {
        // Google: a refresh token only for `access_type=offline`.
        Flavor::Google => params.get("access_type") == Some("offline"),
        // Microsoft: "Only provided if offline_access scope was requested."
        Flavor::Microsoft => scopes.iter().any(|s| s == "offline_access"),
        // Slack (the emulated app has token rotation on) and Zoom: always.
        Flavor::Slack | Flavor::Zoom => true,
    };
    let prompt_consent = params
        .get("prompt")
        .is_some_and(|p| p.split(' ').any(|v| v == "consent"));
    let code = new_code(flavor);
    s.codes.insert(
        code.clone(),
        AuthorizationCode {
            redirect_uri: params.get("redirect_uri").unwrap_or_default().to_string(),
            challenge: challenge.to_string(),
            scopes,
            bot_scopes,
            nonce: params.get("nonce").map(str::to_string),
            offline,
            prompt_consent,
            expires_at: Instant::now() + code_lifetime(flavor),
            redeemed: false,
            grants: Vec::new(),
        },
    );
    let mut back = vec![("code", code.as_str())];
    if let Some(state) = &state {
        back.push(("state", state));
    }
    redirect_to(&redirect, &back)
}

/// How long a code can be exchanged: RFC 6749 §4.1.2 recommends at most ten
/// minutes, Microsoft's codes "expire after about 10 minutes", and Zoom's "OAuth
/// code expires in 5 minutes" (Zoom's Rooms OAuth page; error 4733 "Code is expired").
fn code_lifetime(flavor: Flavor) -> Duration {
    match flavor {
        Flavor::Zoom => Duration::from_secs(5 * 60),
        _ => Duration::from_secs(10 * 60),
    }
}

/// An absolute http(s) URL without fragment (RFC 6749 §3.1.2).
fn parse_redirect_uri(raw: &str) -> Option<Url> {
    let url = Url::parse(raw).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host().is_some() && url.fragment().is_none())
        .then_some(url)
}

/// RFC 7636 §4.2: an S256 challenge is the 43-character BASE64URL of a SHA-256 digest.
fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn is_code_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn split_scopes(raw: &str, separator: char) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for scope in raw
        .split(separator)
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
    }
    scopes
}

fn redirect_to(redirect: &Url, params: &[(&str, &str)]) -> Response {
    let mut url = redirect.clone();
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

/// RFC 6749 §4.1.2.1 error redirect. Microsoft always adds `error_description`
/// ("Error response"); Google and Slack send a denial as `error=access_denied`
/// alone, as their guides show; Google and Zoom describe the other errors.
fn error_redirect(
    flavor: Flavor,
    redirect: &Url,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    let describe = match flavor {
        Flavor::Microsoft => true,
        Flavor::Slack => false,
        Flavor::Google | Flavor::Zoom => error != "access_denied",
    };
    let mut params = vec![("error", error)];
    if describe {
        params.push(("error_description", description));
    }
    if let Some(state) = state {
        params.push(("state", state));
    }
    redirect_to(redirect, &params)
}

/// The page a provider shows instead of redirecting (HTTP 400, no `Location`).
fn error_page(flavor: Flavor, problem: &str, value: &str) -> Response {
    let value = html_escape(value);
    let message = match (flavor, problem) {
        (Flavor::Google, "invalid_client") => {
            "Error 401: invalid_client. The OAuth client was not found.".to_string()
        }
        (Flavor::Google, _) => {
            format!("Error 400: invalid_request. Invalid parameter value for redirect_uri: {value}")
        }
        (Flavor::Microsoft, "invalid_client") => format!(
            "AADSTS700016: Application with identifier '{value}' was not found in the directory."
        ),
        (Flavor::Microsoft, "invalid_tenant") => format!("AADSTS90002: {value}"),
        (Flavor::Microsoft, _) => format!(
            "AADSTS50011: The redirect URI '{value}' specified in the request does not match the redirect URIs configured for the application."
        ),
        (Flavor::Slack, "invalid_client") => "invalid_client_id".to_string(),
        (Flavor::Slack, _) => "bad_redirect_uri".to_string(),
        (Flavor::Zoom, "invalid_client") => format!("Invalid client_id: {value} (4702)"),
        (Flavor::Zoom, _) => "Redirect URI mismatch. (4709)".to_string(),
    };
    let body = format!(
        "<!doctype html><html><head><title>Authorization error</title></head><body><h1>Authorization error</h1><p>{message}</p></body></html>"
    );
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Token endpoint
// ---------------------------------------------------------------------------

/// Why the token endpoint refuses a request, before each provider words it.
#[derive(Debug, Clone)]
enum Refusal {
    InvalidRequest(RequestFault),
    InvalidClient(ClientFault),
    InvalidGrant(GrantFault),
    InvalidScope(String),
    UnsupportedGrantType(String),
    /// Slack: neither `scope` nor `user_scope` was granted.
    NoScopes,
    /// An injected outage with this HTTP status.
    Outage(u16),
}

#[derive(Debug, Clone)]
enum RequestFault {
    /// The body is not `application/x-www-form-urlencoded` (Slack: nor JSON).
    ContentType,
    Repeated(String),
    Missing(&'static str),
    /// HTTP Basic and a body `client_secret` together (RFC 6749 §2.3: one method).
    TwoAuthMethods,
}

#[derive(Debug, Clone)]
enum ClientFault {
    /// No client credentials at all.
    Missing,
    /// A client id but no secret.
    MissingSecret,
    UnknownClient(String),
    BadSecret,
    /// Zoom: credentials anywhere but the `Authorization: Basic` header.
    BasicRequired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrantFault {
    UnknownCode,
    ExpiredCode,
    RedeemedCode,
    RedirectMismatch,
    VerifierMissing,
    VerifierMismatch,
    UnknownRefresh,
    /// Already used and rotated away.
    SpentRefresh,
    /// The grant was revoked (consent withdrawn, token revoked, code replayed).
    RevokedGrant,
    /// [`RefreshFailure::InvalidGrant`].
    Injected,
}

impl GrantFault {
    fn is_refresh(self) -> bool {
        matches!(
            self,
            Self::UnknownRefresh | Self::SpentRefresh | Self::RevokedGrant | Self::Injected
        )
    }
}

/// `POST` token endpoint (RFC 6749 §4.1.3, §6).
async fn token_endpoint(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let flavor = shared.flavor;
    let params = match token_request_params(flavor, &headers, &body) {
        Ok(params) => params,
        Err(refusal) => {
            shared.lock().count_token_request("");
            return refuse(&shared, refusal);
        }
    };
    let grant_type = match params.get("grant_type") {
        Some(g) => g.to_string(),
        // Slack: `grant_type` is optional and defaults to the code exchange.
        None if flavor == Flavor::Slack => "authorization_code".to_string(),
        None => String::new(),
    };
    shared.lock().count_token_request(&grant_type);

    if let Err(refusal) = authenticate_client(&shared, &headers, &params) {
        return refuse(&shared, refusal);
    }
    let outcome = match grant_type.as_str() {
        "authorization_code" => {
            let mut s = shared.lock();
            exchange_code(&shared, &mut s, &params)
        }
        "refresh_token" => refresh(&shared, &params).await,
        "" => Err(Refusal::InvalidRequest(RequestFault::Missing("grant_type"))),
        other => Err(Refusal::UnsupportedGrantType(other.to_string())),
    };
    match outcome {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(refusal) => refuse(&shared, refusal),
    }
}

/// The body's parameters. RFC 6749 §4.1.3 requires a form; Slack's `oauth.v2.access`
/// page also lists `application/json`.
fn token_request_params(
    flavor: Flavor,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Params, Refusal> {
    let pairs = match media_type(headers).as_deref() {
        Some("application/x-www-form-urlencoded") => form_pairs(body),
        Some("application/json") if flavor == Flavor::Slack => {
            let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
                return Err(Refusal::InvalidRequest(RequestFault::ContentType));
            };
            fields
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect()
        }
        _ => return Err(Refusal::InvalidRequest(RequestFault::ContentType)),
    };
    let params = Params::new(&pairs);
    match &params.repeated {
        Some(name) => Err(Refusal::InvalidRequest(RequestFault::Repeated(
            name.clone(),
        ))),
        None => Ok(params),
    }
}

/// Client authentication (RFC 6749 §2.3.1). Google and Microsoft accept the
/// credentials in the body or as HTTP Basic; Slack recommends Basic and accepts the
/// body ("If possible, avoid sending client_id and client_secret as parameters");
/// Zoom requires `Authorization: Basic base64(client_id:client_secret)`.
fn authenticate_client(
    shared: &Shared,
    headers: &HeaderMap,
    params: &Params,
) -> Result<(), Refusal> {
    let check = |id: &str, secret: &str| {
        if !credential_eq(id, &shared.client_id) {
            Err(Refusal::InvalidClient(ClientFault::UnknownClient(
                id.to_string(),
            )))
        } else if !credential_eq(secret, &shared.client_secret) {
            Err(Refusal::InvalidClient(ClientFault::BadSecret))
        } else {
            Ok(())
        }
    };
    match basic_credentials(headers) {
        Some(Some((id, secret))) => {
            if params.get("client_secret").is_some() {
                return Err(Refusal::InvalidRequest(RequestFault::TwoAuthMethods));
            }
            // A body `client_id` beside Basic is allowed, but must be the same client.
            if let Some(body_id) = params.get("client_id")
                && !credential_eq(&id, body_id)
            {
                return Err(Refusal::InvalidClient(ClientFault::UnknownClient(
                    body_id.to_string(),
                )));
            }
            check(&id, &secret)
        }
        Some(None) => Err(Refusal::InvalidClient(ClientFault::BadSecret)),
        None if shared.flavor == Flavor::Zoom => {
            Err(Refusal::InvalidClient(ClientFault::BasicRequired))
        }
        None => match (params.get("client_id"), params.get("client_secret")) {
            (None, _) => Err(Refusal::InvalidClient(ClientFault::Missing)),
            (Some(id), None) if id != shared.client_id => Err(Refusal::InvalidClient(
                ClientFault::UnknownClient(id.to_string()),
            )),
            (Some(_), None) => Err(Refusal::InvalidClient(ClientFault::MissingSecret)),
            (Some(id), Some(secret)) => check(id, secret),
        },
    }
}

/// `Authorization: Basic` credentials as sent: `None` without the header,
/// `Some(None)` when it cannot be decoded.
fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    Some(decoded.and_then(|pair| {
        let (id, secret) = pair.split_once(':')?;
        Some((id.to_string(), secret.to_string()))
    }))
}

/// Whether a Basic credential names `expected`. RFC 6749 §2.3.1 has clients
/// form-encode both parts before base64, and many clients do not: either matches.
fn credential_eq(presented: &str, expected: &str) -> bool {
    presented == expected || form_decode(presented).as_deref() == Some(expected)
}

/// `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.5–§4.6).
fn exchange_code(shared: &Shared, s: &mut AuthServer, params: &Params) -> Result<Value, Refusal> {
    let flavor = shared.flavor;
    let code = params
        .get("code")
        .ok_or(Refusal::InvalidRequest(RequestFault::Missing("code")))?;
    let Some(rec) = s.codes.get(code) else {
        return Err(Refusal::InvalidGrant(GrantFault::UnknownCode));
    };
    if rec.redeemed {
        // RFC 6749 §4.1.2 / §10.5: deny, and revoke the tokens issued from the code.
        for grant in rec.grants.clone() {
            s.grants[grant].revoked = true;
        }
        return Err(Refusal::InvalidGrant(GrantFault::RedeemedCode));
    }
    if Instant::now() >= rec.expires_at {
        return Err(Refusal::InvalidGrant(GrantFault::ExpiredCode));
    }
    // RFC 6749 §4.1.3: identical to the authorization request's redirect_uri
    // (Slack: "required if your app passed it" to the authorize step).
    if params.get("redirect_uri") != Some(rec.redirect_uri.as_str()) {
        return Err(Refusal::InvalidGrant(GrantFault::RedirectMismatch));
    }
    let Some(verifier) = params.get("code_verifier") else {
        return Err(Refusal::InvalidGrant(GrantFault::VerifierMissing));
    };
    if !is_code_verifier(verifier) || !s256_matches(verifier, &rec.challenge) {
        return Err(Refusal::InvalidGrant(GrantFault::VerifierMismatch));
    }
    if flavor == Flavor::Slack && rec.scopes.is_empty() && rec.bot_scopes.is_empty() {
        return Err(Refusal::NoScopes);
    }

    let (scopes, bot_scopes, nonce) = (
        rec.scopes.clone(),
        rec.bot_scopes.clone(),
        rec.nonce.clone(),
    );
    let with_refresh = match flavor {
        // Google returns a refresh token "the first time that your application
        // exchanges an authorization code" of an offline grant; `prompt=consent`
        // asks again and gets a new one.
        Flavor::Google => {
            let live_offline_grant = s.grants.iter().any(|g| g.has_refresh && !g.revoked);
            rec.offline && (rec.prompt_consent || !live_offline_grant)
        }
        _ => rec.offline,
    };

    let mut issued = Vec::new();
    if flavor != Flavor::Slack || !scopes.is_empty() {
        issued.push(issue(
            shared,
            s,
            TokenKind::User,
            scopes,
            nonce.clone(),
            with_refresh,
        ));
    }
    if !bot_scopes.is_empty() {
        issued.push(issue(
            shared,
            s,
            TokenKind::SlackBot,
            bot_scopes,
            None,
            with_refresh,
        ));
    }
    let rec = s.codes.get_mut(code).expect("the code was just read");
    rec.redeemed = true;
    rec.grants = issued.iter().map(|i| i.grant).collect();
    Ok(code_response(shared, s, &issued))
}

/// `grant_type=refresh_token`, after the injected delay or failure, if any.
async fn refresh(shared: &Shared, params: &Params) -> Result<Value, Refusal> {
    let (failure, mut wait) = {
        let mut s = shared.lock();
        (s.next_refresh_failure.take(), s.refresh_delay)
    };
    if let Some(RefreshFailure::Slow(extra)) = &failure {
        wait += *extra;
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    match failure {
        Some(RefreshFailure::InvalidGrant) => Err(Refusal::InvalidGrant(GrantFault::Injected)),
        Some(RefreshFailure::ServerError(status)) => Err(Refusal::Outage(status)),
        Some(RefreshFailure::Slow(_)) | None => {
            let mut s = shared.lock();
            refresh_grant(shared, &mut s, params)
        }
    }
}

/// RFC 6749 §6, with each provider's rotation:
/// - Google: the response has no new refresh token; the old one keeps working.
/// - Microsoft: a new refresh token every time, and "the Microsoft identity platform
///   doesn't revoke old refresh tokens when used" ("Refresh tokens…").
/// - Slack (token rotation): "The refresh token is then revoked" — the old one is
///   refused after use ("Using token rotation").
/// - Zoom: every refresh returns a new refresh token and the old one stops working.
fn refresh_grant(shared: &Shared, s: &mut AuthServer, params: &Params) -> Result<Value, Refusal> {
    let flavor = shared.flavor;
    let presented =
        params
            .get("refresh_token")
            .ok_or(Refusal::InvalidRequest(RequestFault::Missing(
                "refresh_token",
            )))?;
    let Some(rec) = s.refresh_tokens.get(presented) else {
        return Err(Refusal::InvalidGrant(GrantFault::UnknownRefresh));
    };
    let grant = rec.grant;
    if s.grants[grant].revoked {
        return Err(Refusal::InvalidGrant(GrantFault::RevokedGrant));
    }
    if rec.spent {
        return Err(Refusal::InvalidGrant(GrantFault::SpentRefresh));
    }
    // RFC 6749 §6: a requested scope MUST NOT exceed the original grant. Google
    // (RFC) and Microsoft (documented `scope` parameter) narrow the access token;
    // Slack and Zoom document no `scope` on refresh and ignore it.
    let granted = s.grants[grant].scopes.clone();
    let scopes = match params.get("scope") {
        Some(requested) if matches!(flavor, Flavor::Google | Flavor::Microsoft) => {
            let requested = split_scopes(requested, ' ');
            if let Some(extra) = requested.iter().find(|r| !granted.contains(r)) {
                return Err(Refusal::InvalidScope(extra.clone()));
            }
            requested
        }
        _ => granted,
    };

    let kind = s.grants[grant].kind;
    let access_token = new_access_token(shared, s.access_lifetime, kind, &scopes);
    s.record_access_token(grant, &access_token);
    let refresh_token = match flavor {
        Flavor::Google => None,
        Flavor::Microsoft | Flavor::Slack | Flavor::Zoom => {
            if matches!(flavor, Flavor::Slack | Flavor::Zoom) {
                s.refresh_tokens
                    .get_mut(presented)
                    .expect("just read")
                    .spent = true;
            }
            let token = new_refresh_token(shared);
            s.record_refresh_token(grant, &token);
            Some(token)
        }
    };
    // Microsoft returns an ID token on refresh too ("Only provided if openid scope
    // was requested"); Google's refresh sample has none.
    let id_token = (flavor == Flavor::Microsoft && scopes.iter().any(|s| s == "openid"))
        .then(|| id_token(shared, &scopes, None, &access_token));
    let issued = Issued {
        grant,
        kind,
        access_token,
        refresh_token,
        scopes,
        id_token,
    };
    Ok(refresh_response(shared, s, &issued))
}

/// The tokens one grant step produced.
struct Issued {
    grant: usize,
    kind: TokenKind,
    access_token: String,
    refresh_token: Option<String>,
    scopes: Vec<String>,
    id_token: Option<String>,
}

/// Creates a grant and its first tokens.
fn issue(
    shared: &Shared,
    s: &mut AuthServer,
    kind: TokenKind,
    scopes: Vec<String>,
    nonce: Option<String>,
    with_refresh: bool,
) -> Issued {
    let grant = s.new_grant(kind, scopes.clone(), with_refresh);
    let access_token = new_access_token(shared, s.access_lifetime, kind, &scopes);
    s.record_access_token(grant, &access_token);
    let refresh_token = with_refresh.then(|| new_refresh_token(shared));
    if let Some(token) = &refresh_token {
        s.record_refresh_token(grant, token);
    }
    // Google and Microsoft: an ID token when `openid` was among the scopes.
    let id_token = (matches!(shared.flavor, Flavor::Google | Flavor::Microsoft)
        && scopes.iter().any(|s| s == "openid"))
    .then(|| id_token(shared, &scopes, nonce.as_deref(), &access_token));
    Issued {
        grant,
        kind,
        access_token,
        refresh_token,
        scopes,
        id_token,
    }
}

// ---------------------------------------------------------------------------
// Successful token responses
// ---------------------------------------------------------------------------

fn code_response(shared: &Shared, s: &AuthServer, issued: &[Issued]) -> Value {
    match shared.flavor {
        Flavor::Slack => slack_code_response(s, issued),
        _ => standard_response(shared, s, &issued[0]),
    }
}

fn refresh_response(shared: &Shared, s: &AuthServer, issued: &Issued) -> Value {
    match shared.flavor {
        Flavor::Slack => slack_refresh_response(s, issued),
        _ => standard_response(shared, s, issued),
    }
}

/// RFC 6749 §5.1 as Google, Microsoft and Zoom shape it:
/// - Google ("Step 5: Exchange authorization code…", "Refreshing an access token"):
///   `access_token`, `expires_in`, `token_type` "Bearer", `scope`, and
///   `refresh_token` / `id_token` when issued.
/// - Microsoft ("Successful response"): the same, `token_type` "Bearer".
/// - Zoom ("OAuth 2.0"): `token_type` "bearer", always a `refresh_token`, `api_url`.
fn standard_response(shared: &Shared, s: &AuthServer, issued: &Issued) -> Value {
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": if shared.flavor == Flavor::Zoom { "bearer" } else { "Bearer" },
        "expires_in": s.access_lifetime,
        "scope": issued.scopes.join(" "),
    });
    if let Some(refresh) = &issued.refresh_token {
        body["refresh_token"] = json!(refresh);
    }
    if let Some(id_token) = &issued.id_token {
        body["id_token"] = json!(id_token);
    }
    if shared.flavor == Flavor::Zoom {
        body["api_url"] = json!(s.zoom_api_url);
    }
    body
}

/// `oauth.v2.access` for a code ("Installing with OAuth" and the method's examples):
/// user-token fields under `authed_user`, bot-token fields at the top level, scopes
/// comma-separated; with token rotation each token has `refresh_token` and `expires_in`.
fn slack_code_response(s: &AuthServer, issued: &[Issued]) -> Value {
    let mut body = json!({
        "ok": true,
        "app_id": SLACK_APP_ID,
        "authed_user": {"id": SLACK_USER_ID},
        "team": {"id": SLACK_TEAM_ID, "name": SLACK_TEAM_NAME},
        "enterprise": null,
        "is_enterprise_install": false,
    });
    for token in issued {
        match token.kind {
            TokenKind::User => {
                let mut user = json!({
                    "id": SLACK_USER_ID,
                    "scope": token.scopes.join(","),
                    "access_token": token.access_token,
                    "token_type": "user",
                });
                if let Some(refresh) = &token.refresh_token {
                    user["refresh_token"] = json!(refresh);
                    user["expires_in"] = json!(s.access_lifetime);
                }
                body["authed_user"] = user;
            }
            TokenKind::SlackBot => {
                body["access_token"] = json!(token.access_token);
                body["token_type"] = json!("bot");
                body["scope"] = json!(token.scopes.join(","));
                body["bot_user_id"] = json!(SLACK_BOT_USER_ID);
                if let Some(refresh) = &token.refresh_token {
                    body["refresh_token"] = json!(refresh);
                    body["expires_in"] = json!(s.access_lifetime);
                }
            }
        }
    }
    body
}

/// `oauth.v2.access` with `grant_type=refresh_token` ("Using token rotation"; the
/// shape Slack's own SDKs read: top-level `token_type` "user" or "bot",
/// `access_token`, `refresh_token`, `expires_in`, `scope`).
fn slack_refresh_response(s: &AuthServer, issued: &Issued) -> Value {
    let mut body = json!({
        "ok": true,
        "app_id": SLACK_APP_ID,
        "scope": issued.scopes.join(","),
        "token_type": if issued.kind == TokenKind::SlackBot { "bot" } else { "user" },
        "access_token": issued.access_token,
        "refresh_token": issued.refresh_token,
        "expires_in": s.access_lifetime,
        "team": {"id": SLACK_TEAM_ID, "name": SLACK_TEAM_NAME},
        "enterprise": null,
        "is_enterprise_install": false,
    });
    if issued.kind == TokenKind::SlackBot {
        body["bot_user_id"] = json!(SLACK_BOT_USER_ID);
    }
    body
}

// ---------------------------------------------------------------------------
// Refusals, in each provider's words
// ---------------------------------------------------------------------------

fn refuse(shared: &Shared, refusal: Refusal) -> Response {
    let (status, body) = match shared.flavor {
        Flavor::Google => google_refusal(&refusal),
        Flavor::Microsoft => microsoft_refusal(shared, &refusal),
        Flavor::Slack => slack_refusal(&refusal),
        Flavor::Zoom => zoom_refusal(&refusal),
    };
    let mut response = json_response(status, &body);
    if status == StatusCode::UNAUTHORIZED {
        // RFC 6749 §5.2: a 401 names the authentication scheme the server supports.
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"oauth\""),
        );
    }
    response
}

fn outage_status(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Google: RFC 6749 §5.2 bodies (`error`, `error_description`), 401 for `invalid_client`.
fn google_refusal(refusal: &Refusal) -> (StatusCode, Value) {
    let (status, error, description) = match refusal {
        Refusal::InvalidRequest(fault) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            request_fault_text(fault),
        ),
        Refusal::InvalidClient(ClientFault::UnknownClient(_)) => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.".to_string(),
        ),
        Refusal::InvalidClient(_) => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Unauthorized".to_string(),
        ),
        Refusal::InvalidGrant(GrantFault::VerifierMissing) => (
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Missing code verifier.".to_string(),
        ),
        Refusal::InvalidGrant(GrantFault::VerifierMismatch) => (
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid code verifier.".to_string(),
        ),
        Refusal::InvalidGrant(fault) if fault.is_refresh() => (
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Token has been expired or revoked.".to_string(),
        ),
        Refusal::InvalidGrant(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Bad Request".to_string(),
        ),
        Refusal::InvalidScope(scope) => (
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            format!("Requested scope exceeds the granted scopes: {scope}"),
        ),
        Refusal::UnsupportedGrantType(g) => (
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("Invalid grant_type: {g}"),
        ),
        Refusal::NoScopes => (
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "No scope granted".to_string(),
        ),
        Refusal::Outage(status) => outage_rfc(*status),
    };
    (
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// RFC 6749 names no token-endpoint outage error; its authorization-endpoint codes
/// `temporarily_unavailable` and `server_error` fit.
fn outage_rfc(status: u16) -> (StatusCode, &'static str, String) {
    if status == 503 {
        (
            outage_status(status),
            "temporarily_unavailable",
            "The service is temporarily unavailable.".to_string(),
        )
    } else {
        (
            outage_status(status),
            "server_error",
            "The server encountered an unexpected error.".to_string(),
        )
    }
}

fn request_fault_text(fault: &RequestFault) -> String {
    match fault {
        RequestFault::ContentType => {
            "Content-Type must be application/x-www-form-urlencoded".to_string()
        }
        RequestFault::Repeated(name) => format!("Parameter repeated: {name}"),
        RequestFault::Missing(name) => format!("Missing required parameter: {name}"),
        RequestFault::TwoAuthMethods => {
            "Only one client authentication method may be used".to_string()
        }
    }
}

/// Microsoft: `error`, `error_description` ("AADSTS…: text\r\nTrace ID…\r\nCorrelation
/// ID…\r\nTimestamp…"), `error_codes`, `timestamp`, `trace_id`, `correlation_id`,
/// `error_uri` ("Error response"; codes from "…authorization error codes").
fn microsoft_refusal(shared: &Shared, refusal: &Refusal) -> (StatusCode, Value) {
    let bad = StatusCode::BAD_REQUEST;
    let (status, error, code, text): (StatusCode, &str, u32, String) = match refusal {
        // An unreadable body reads as one without `grant_type`.
        Refusal::InvalidRequest(RequestFault::ContentType) => (
            bad,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.".into(),
        ),
        Refusal::InvalidRequest(RequestFault::Missing(name)) => (
            bad,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        ),
        Refusal::InvalidRequest(_) => (
            bad,
            "invalid_request",
            9002313,
            "Invalid request. Request is malformed or invalid.".into(),
        ),
        Refusal::InvalidClient(ClientFault::UnknownClient(id)) => (
            bad,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{id}' was not found in the directory '{MS_TENANT_ID}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
        ),
        Refusal::InvalidClient(ClientFault::BadSecret) => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                shared.client_id
            ),
        ),
        Refusal::InvalidClient(_) => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
        ),
        Refusal::InvalidGrant(fault) => match fault {
            GrantFault::UnknownCode | GrantFault::UnknownRefresh => (
                bad,
                "invalid_grant",
                9002313,
                "Invalid request. Request is malformed or invalid.".into(),
            ),
            GrantFault::ExpiredCode => (
                bad,
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.".into(),
            ),
            GrantFault::RedeemedCode => (
                bad,
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.".into(),
            ),
            GrantFault::RedirectMismatch => (
                bad,
                "invalid_grant",
                50011,
                "The redirect URI specified in the request does not match the redirect URI used to acquire the authorization code.".into(),
            ),
            GrantFault::VerifierMissing => (
                bad,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'code_verifier'.".into(),
            ),
            GrantFault::VerifierMismatch => (
                bad,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.".into(),
            ),
            GrantFault::SpentRefresh => (
                bad,
                "invalid_grant",
                70000,
                "Provided grant is invalid or malformed.".into(),
            ),
            GrantFault::RevokedGrant => (
                bad,
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.".into(),
            ),
            GrantFault::Injected => (
                bad,
                "invalid_grant",
                700082,
                format!(
                    "The refresh token has expired due to inactivity. The token was issued on {} and was inactive for 90.00:00:00.",
                    iso_timestamp(now_unix().saturating_sub(91 * 86_400))
                ),
            ),
        },
        Refusal::InvalidScope(scope) => (
            bad,
            "invalid_scope",
            70011,
            format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
        ),
        Refusal::UnsupportedGrantType(g) => (
            bad,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{g}'."),
        ),
        Refusal::NoScopes => (
            bad,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.".into(),
        ),
        Refusal::Outage(503) => (
            outage_status(503),
            "temporarily_unavailable",
            90006,
            "The service is temporarily unavailable.".into(),
        ),
        Refusal::Outage(status) => (
            outage_status(*status),
            "server_error",
            50000,
            "There was an error issuing a token.".into(),
        ),
    };
    let timestamp = ms_timestamp(now_unix());
    let trace_id = guid();
    let correlation_id = guid();
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, body)
}

/// Slack: HTTP 200 with `{"ok": false, "error": …}` using the `oauth.v2.access`
/// page's error codes; an outage answers its HTTP status.
fn slack_refusal(refusal: &Refusal) -> (StatusCode, Value) {
    let error = match refusal {
        Refusal::InvalidRequest(RequestFault::ContentType) => "invalid_post_type",
        Refusal::InvalidRequest(RequestFault::Missing("code")) => "invalid_code",
        Refusal::InvalidRequest(RequestFault::Missing("refresh_token")) => "invalid_refresh_token",
        Refusal::InvalidRequest(_) => "invalid_arguments",
        Refusal::InvalidClient(ClientFault::BadSecret | ClientFault::MissingSecret) => {
            "bad_client_secret"
        }
        Refusal::InvalidClient(_) => "invalid_client_id",
        Refusal::InvalidGrant(GrantFault::RedirectMismatch) => "bad_redirect_uri",
        Refusal::InvalidGrant(fault) if fault.is_refresh() => "invalid_refresh_token",
        Refusal::InvalidGrant(_) => "invalid_code",
        Refusal::InvalidScope(_) => "invalid_scope",
        Refusal::UnsupportedGrantType(_) => "invalid_grant_type",
        Refusal::NoScopes => "no_scopes",
        Refusal::Outage(status) => {
            let error = if *status == 503 {
                "service_unavailable"
            } else {
                "internal_error"
            };
            return (outage_status(*status), json!({"ok": false, "error": error}));
        }
    };
    (StatusCode::OK, json!({"ok": false, "error": error}))
}

/// Zoom: `{"reason": …, "error": …}`, reasons from "OAuth error messages".
fn zoom_refusal(refusal: &Refusal) -> (StatusCode, Value) {
    let bad = StatusCode::BAD_REQUEST;
    let (status, error, reason) = match refusal {
        Refusal::InvalidRequest(RequestFault::Missing("grant_type")) => {
            (bad, "invalid_request", "Missing grant type.".to_string())
        }
        Refusal::InvalidRequest(fault) => (bad, "invalid_request", request_fault_text(fault)),
        Refusal::InvalidClient(ClientFault::UnknownClient(_) | ClientFault::BadSecret) => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client_id or client_secret".to_string(),
        ),
        Refusal::InvalidClient(_) => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client ID or client secret is missing.".to_string(),
        ),
        Refusal::InvalidGrant(GrantFault::ExpiredCode) => {
            (bad, "invalid_grant", "Code is expired.".to_string())
        }
        Refusal::InvalidGrant(GrantFault::RedirectMismatch) => {
            (bad, "invalid_grant", "Redirect URI mismatch.".to_string())
        }
        Refusal::InvalidGrant(fault) if fault.is_refresh() => {
            (bad, "invalid_grant", "Invalid Token!".to_string())
        }
        Refusal::InvalidGrant(_) => (
            bad,
            "invalid_grant",
            "Invalid authorization code".to_string(),
        ),
        Refusal::InvalidScope(_) => (bad, "invalid_scope", "Invalid scope.".to_string()),
        Refusal::UnsupportedGrantType(_) => (
            bad,
            "unsupported_grant_type",
            "Grant type is not supported from token endpoint.".to_string(),
        ),
        Refusal::NoScopes => (bad, "invalid_scope", "Invalid scope.".to_string()),
        Refusal::Outage(status) => outage_rfc(*status),
    };
    (status, json!({"reason": reason, "error": error}))
}

// ---------------------------------------------------------------------------
// Revocation and keys
// ---------------------------------------------------------------------------

/// Revocation as each provider documents it; revoking either token of a grant
/// revokes the grant (its access and refresh tokens).
async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let query = Params::new(&form_pairs(query.as_deref().unwrap_or("").as_bytes()));
    let form = if media_type(&headers).as_deref() == Some("application/x-www-form-urlencoded") {
        Params::new(&form_pairs(&body))
    } else {
        Params::new(&[])
    };
    let token = query.get("token").or(form.get("token")).map(str::to_string);
    match shared.flavor {
        Flavor::Google => revoke_google(&shared, token),
        Flavor::Slack => {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|v| v.trim().to_string());
            let test = form.get("test").or(query.get("test"));
            revoke_slack(
                &shared,
                bearer.or(token),
                test.is_some_and(|t| t != "0" && t != "false"),
            )
        }
        Flavor::Zoom => revoke_zoom(&shared, &headers, token),
        Flavor::Microsoft => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Google "Revoking a token": `POST https://oauth2.googleapis.com/revoke?token={token}`;
/// "If the token is an access token and it has a corresponding refresh token, the
/// refresh token will also be revoked"; 200 on success, 400 with an error code otherwise.
fn revoke_google(shared: &Shared, token: Option<String>) -> Response {
    let mut s = shared.lock();
    let Some(token) = token else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request", "error_description": "Missing required parameter: token"}),
        );
    };
    match s.live_grant_of(&token) {
        Some(grant) => {
            s.grants[grant].revoked = true;
            json_response(StatusCode::OK, &json!({}))
        }
        None => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_token", "error_description": "Token expired or revoked"}),
        ),
    }
}

/// Slack `auth.revoke`: the token to revoke authenticates the call (Bearer, or a
/// `token` field); `{"ok": true, "revoked": true}`; `test=1` revokes nothing.
/// Errors `not_authed`, `invalid_auth`, and the common `token_expired` / `token_revoked`.
fn revoke_slack(shared: &Shared, token: Option<String>, test: bool) -> Response {
    let mut s = shared.lock();
    let Some(token) = token else {
        return json_response(StatusCode::OK, &json!({"ok": false, "error": "not_authed"}));
    };
    let Some(rec) = s.access_tokens.get(&token) else {
        return json_response(
            StatusCode::OK,
            &json!({"ok": false, "error": "invalid_auth"}),
        );
    };
    let grant = rec.grant;
    if s.grants[grant].revoked || rec.superseded {
        return json_response(
            StatusCode::OK,
            &json!({"ok": false, "error": "token_revoked"}),
        );
    }
    if Instant::now() >= rec.expires_at {
        return json_response(
            StatusCode::OK,
            &json!({"ok": false, "error": "token_expired"}),
        );
    }
    if !test {
        s.grants[grant].revoked = true;
    }
    json_response(StatusCode::OK, &json!({"ok": true, "revoked": !test}))
}

/// Zoom "Revoke Access Token": `POST /oauth/revoke?token=…` with the client's HTTP
/// Basic credentials; `{"status": "success"}`.
fn revoke_zoom(shared: &Shared, headers: &HeaderMap, token: Option<String>) -> Response {
    let authenticated = matches!(
        basic_credentials(headers),
        Some(Some((id, secret)))
            if credential_eq(&id, &shared.client_id) && credential_eq(&secret, &shared.client_secret)
    );
    if !authenticated {
        return refuse(shared, Refusal::InvalidClient(ClientFault::BadSecret));
    }
    let mut s = shared.lock();
    match token.as_deref().and_then(|t| s.live_grant_of(t)) {
        Some(grant) => {
            s.grants[grant].revoked = true;
            json_response(StatusCode::OK, &json!({"status": "success"}))
        }
        None => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"reason": "Invalid Token!", "error": "invalid_request"}),
        ),
    }
}

/// JWKS (RFC 7517): the signing key for Google and Microsoft, nothing for the others.
async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    let keys = match shared.flavor {
        Flavor::Google | Flavor::Microsoft => vec![shared.jwk.clone()],
        Flavor::Slack | Flavor::Zoom => Vec::new(),
    };
    let mut response = json_response(StatusCode::OK, &json!({"keys": keys}));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

// ---------------------------------------------------------------------------
// Tokens in each provider's style
// ---------------------------------------------------------------------------

/// Codes as the providers' examples show them: Google `4/0A…`, Microsoft
/// `OAAABAAAA…`, Slack `digits.digits.hex`, Zoom `…_…`.
fn new_code(flavor: Flavor) -> String {
    match flavor {
        Flavor::Google => format!("4/0A{}", random_b64(48)),
        Flavor::Microsoft => format!("OAAABAAAA{}", random_b64(96)),
        Flavor::Slack => format!(
            "{}.{}.{}",
            random_digits(10),
            random_digits(13),
            random_hex(32)
        ),
        Flavor::Zoom => format!("{}_{}", random_b64(8), random_b64(16)),
    }
}

/// Google `ya29.…`; Microsoft a JWT (RS256, Microsoft Graph audience); Slack
/// rotating `xoxe.xoxp-1-…` / `xoxe.xoxb-1-…` (the method page's rotation example);
/// Zoom a JWT (HS512).
fn new_access_token(shared: &Shared, lifetime: u64, kind: TokenKind, scopes: &[String]) -> String {
    let now = now_unix();
    match (shared.flavor, kind) {
        (Flavor::Google, _) => format!("ya29.a0{}", random_b64(120)),
        (Flavor::Microsoft, _) => sign_rs256(
            shared,
            &json!({
                "aud": "00000003-0000-0000-c000-000000000000",
                "iss": format!("https://sts.windows.net/{MS_TENANT_ID}/"),
                "iat": now,
                "nbf": now,
                "exp": now + lifetime,
                "appid": shared.client_id,
                "oid": MS_OBJECT_ID,
                "sub": MS_PAIRWISE_SUBJECT,
                "tid": MS_TENANT_ID,
                "scp": scopes.join(" "),
                "ver": "1.0",
                "uti": random_b64(16),
            }),
        ),
        (Flavor::Slack, TokenKind::User) => format!("xoxe.xoxp-1-{}", random_b64(48)),
        (Flavor::Slack, TokenKind::SlackBot) => format!("xoxe.xoxb-1-{}", random_b64(48)),
        (Flavor::Zoom, _) => sign_zoom(shared, "access_token", lifetime),
    }
}

/// Google `1//0…`; Microsoft `AwABAAAA…`; Slack `xoxe-1-…`; Zoom a JWT.
fn new_refresh_token(shared: &Shared) -> String {
    match shared.flavor {
        Flavor::Google => format!("1//0{}", random_b64(72)),
        Flavor::Microsoft => format!("AwABAAAA{}", random_b64(120)),
        Flavor::Slack => format!("xoxe-1-{}", random_b64(64)),
        Flavor::Zoom => sign_zoom(shared, "refresh_token", ZOOM_REFRESH_LIFETIME),
    }
}

/// An OpenID Connect ID token (RS256, header `kid`).
/// - Google ("OpenID Connect", ID token payload): `iss`, `azp`, `aud`, `sub`,
///   `at_hash`, `iat`, `exp`, `nonce`; `email`/`email_verified` with the `email`
///   scope, `name` with `profile`.
/// - Microsoft ("ID token claims reference", v2.0): `aud`, `iss`, `iat`, `nbf`,
///   `exp`, `sub` (pairwise), `tid`, `ver`, `nonce`; `oid`, `name` and
///   `preferred_username` need the `profile` scope, `email` the `email` scope; no
///   `at_hash` from the token endpoint.
fn id_token(shared: &Shared, scopes: &[String], nonce: Option<&str>, access_token: &str) -> String {
    let now = now_unix();
    let has = |scope: &str| scopes.iter().any(|s| s == scope);
    let mut claims = json!({
        "iss": shared.issuer(),
        "aud": shared.client_id,
        "iat": now,
        "exp": now + ID_TOKEN_LIFETIME,
    });
    match shared.flavor {
        Flavor::Microsoft => {
            claims["sub"] = json!(MS_PAIRWISE_SUBJECT);
            claims["tid"] = json!(MS_TENANT_ID);
            claims["nbf"] = json!(now);
            claims["ver"] = json!("2.0");
            if has("profile") {
                claims["oid"] = json!(MS_OBJECT_ID);
                claims["name"] = json!(USER_DISPLAY_NAME);
                claims["preferred_username"] = json!(MS_USERNAME);
            }
            if has("email") {
                claims["email"] = json!(MS_USERNAME);
            }
        }
        _ => {
            let digest = Sha256::digest(access_token.as_bytes());
            claims["sub"] = json!(GOOGLE_SUBJECT);
            claims["azp"] = json!(shared.client_id);
            claims["at_hash"] = json!(URL_SAFE_NO_PAD.encode(&digest[..16]));
            if has("email") {
                claims["email"] = json!(GOOGLE_EMAIL);
                claims["email_verified"] = json!(true);
            }
            if has("profile") {
                claims["name"] = json!(USER_DISPLAY_NAME);
            }
        }
    }
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    sign_rs256(shared, &claims)
}

fn sign_rs256(shared: &Shared, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(SIGNING_KEY_ID.to_string());
    jsonwebtoken::encode(&header, claims, &shared.rsa_key).expect("sign with the test RSA key")
}

/// Zoom's tokens are JWTs signed by Zoom (opaque to clients); this mimics the shape.
fn sign_zoom(shared: &Shared, token_type: &str, lifetime: u64) -> String {
    let now = now_unix();
    let claims = json!({
        "ver": 9,
        "uid": ZOOM_USER_ID,
        "iss": format!("zm:cid:{}", shared.client_id),
        "aud": "https://oauth.zoom.us",
        "nbf": now,
        "iat": now,
        "exp": now + lifetime,
        "tokenType": token_type,
        "jti": random_b64(16),
    });
    jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &shared.zoom_key)
        .expect("sign with the emulator's Zoom secret")
}

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// A token-endpoint JSON answer with RFC 6749 §5.1's no-store headers.
fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The media type of the request body, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
}

fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` and `%XX`).
fn form_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn html_escape(raw: &str) -> String {
    raw.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::rng().fill(&mut bytes[..]);
    bytes
}

fn random_b64(n: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(n))
}

fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

fn random_digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// A random GUID in Microsoft's 8-4-4-4-12 form.
fn guid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Microsoft's error timestamp, `2016-01-09 02:02:12Z`.
fn ms_timestamp(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil_time(unix);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}Z")
}

/// `2016-01-09T02:02:12Z`.
fn iso_timestamp(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil_time(unix);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// UTC calendar time of a Unix timestamp (H. Hinnant's `civil_from_days`).
fn civil_time(unix: u64) -> (i64, u32, u32, u64, u64, u64) {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3_600, secs % 3_600 / 60, secs % 60)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "emulator-client-id";
    const SECRET: &str = "emulator client secret+/=";
    const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// A fresh RFC 7636 verifier and its S256 challenge.
    fn pkce() -> (String, String) {
        let verifier = random_b64(32);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        (verifier, challenge)
    }

    /// The scope parameters a real client of each provider sends.
    fn scope_params(flavor: Flavor) -> Vec<(&'static str, &'static str)> {
        match flavor {
            Flavor::Google => vec![
                (
                    "scope",
                    "openid email https://www.googleapis.com/auth/calendar.readonly",
                ),
                ("access_type", "offline"),
                ("nonce", "n-0S6_WzA2Mj"),
            ],
            Flavor::Microsoft => vec![
                (
                    "scope",
                    "openid profile offline_access https://graph.microsoft.com/Calendars.Read",
                ),
                ("nonce", "n-0S6_WzA2Mj"),
            ],
            Flavor::Slack => vec![("user_scope", "users.profile:write,users:write")],
            Flavor::Zoom => vec![("scope", "user:read meeting:read")],
        }
    }

    /// Sends the user through the authorization endpoint; returns the redirect's query.
    async fn authorize_query(
        emu: &OAuthEmulator,
        challenge: &str,
        method: &str,
        extra: &[(&str, &str)],
    ) -> (u16, HashMap<String, String>) {
        let mut url = Url::parse(&emu.authorize_url()).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", ID)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("response_type", "code")
            .append_pair("state", "st-123")
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", method)
            .extend_pairs(extra);
        let resp = client().get(url).send().await.unwrap();
        let status = resp.status().as_u16();
        let query = resp
            .headers()
            .get(header::LOCATION)
            .map(|l| {
                let location = Url::parse(l.to_str().unwrap()).unwrap();
                assert!(location.as_str().starts_with(REDIRECT), "{location}");
                location.query_pairs().into_owned().collect()
            })
            .unwrap_or_default();
        (status, query)
    }

    /// A code for the flavor's usual scopes, and the verifier that redeems it.
    async fn authorize(emu: &OAuthEmulator) -> (String, String) {
        let (verifier, challenge) = pkce();
        let (status, query) =
            authorize_query(emu, &challenge, "S256", &scope_params(emu.flavor())).await;
        assert_eq!(status, 302);
        assert_eq!(query["state"], "st-123");
        (query["code"].clone(), verifier)
    }

    /// A token request authenticated as the flavor documents (Zoom and Slack:
    /// HTTP Basic; Google and Microsoft: body credentials).
    async fn token(emu: &OAuthEmulator, form: &[(&str, &str)]) -> (u16, Value) {
        let mut form = form.to_vec();
        let mut req = client().post(emu.token_url());
        match emu.flavor() {
            Flavor::Zoom | Flavor::Slack => req = req.basic_auth(ID, Some(SECRET)),
            Flavor::Google | Flavor::Microsoft => {
                form.push(("client_id", ID));
                form.push(("client_secret", SECRET));
            }
        }
        let resp = req.form(&form).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn redeem(emu: &OAuthEmulator, code: &str, verifier: &str) -> (u16, Value) {
        token(
            emu,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
            ],
        )
        .await
    }

    async fn refresh_with(emu: &OAuthEmulator, refresh_token: &str) -> (u16, Value) {
        token(
            emu,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// The (access, refresh) tokens of a success body; Slack's user token sits in
    /// `authed_user` after a code exchange and at the top level after a refresh.
    fn tokens(body: &Value) -> (String, Option<String>) {
        let holder = if body["authed_user"]["access_token"].is_string() {
            &body["authed_user"]
        } else {
            body
        };
        (
            holder["access_token"]
                .as_str()
                .expect("an access token")
                .to_string(),
            holder["refresh_token"].as_str().map(str::to_string),
        )
    }

    /// Verifies an ID token against the emulator's JWKS endpoint.
    async fn verify_id_token(emu: &OAuthEmulator, id_token: &str) -> Value {
        let jwks: Value = client()
            .get(emu.jwks_url())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = &jwks["keys"][0];
        assert_eq!(key["kid"], SIGNING_KEY_ID);
        let header = jsonwebtoken::decode_header(id_token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(SIGNING_KEY_ID));
        let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
            key["n"].as_str().unwrap(),
            key["e"].as_str().unwrap(),
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_audience(&[ID]);
        validation.set_issuer(&[emu.issuer()]);
        jsonwebtoken::decode::<Value>(id_token, &decoding, &validation)
            .expect("the ID token verifies with the served key")
            .claims
    }

    /// RFC 7636 Appendix B: the verifier `dBjftJeZ…OEjXk` has the S256 challenge
    /// `E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM`.
    #[test]
    fn rfc7636_appendix_b_vector() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(s256_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        // A near-miss of the vector, as sometimes quoted, does not match.
        assert!(!s256_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCjaoeKB6f0MwBj5-rCBEIcM"
        ));
        assert!(!s256_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }

    #[test]
    fn microsoft_timestamps_match_the_documented_example() {
        assert_eq!(ms_timestamp(1_452_304_932), "2016-01-09 02:02:12Z");
        assert_eq!(iso_timestamp(951_868_799), "2000-02-29T23:59:59Z");
    }

    #[tokio::test]
    async fn google_code_flow_with_pkce() {
        let emu = OAuthEmulator::start(Flavor::Google, ID, SECRET).await;
        let (code, verifier) = authorize(&emu).await;
        assert!(code.starts_with("4/0A"));
        let (status, body) = redeem(&emu, &code, &verifier).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(
            body["scope"],
            "openid email https://www.googleapis.com/auth/calendar.readonly"
        );
        let (access, refresh) = tokens(&body);
        let refresh = refresh.expect("access_type=offline gives a refresh token");
        assert!(access.starts_with("ya29.") && refresh.starts_with("1//"));
        assert!(emu.is_valid_access_token(&access));
        assert_eq!(
            emu.current_refresh_token().as_deref(),
            Some(refresh.as_str())
        );

        let claims = verify_id_token(&emu, body["id_token"].as_str().unwrap()).await;
        assert_eq!(claims["sub"], emu.subject());
        assert_eq!(claims["email"], GOOGLE_EMAIL);
        assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
        let digest = Sha256::digest(access.as_bytes());
        assert_eq!(claims["at_hash"], URL_SAFE_NO_PAD.encode(&digest[..16]));

        // Google does not rotate: no new refresh token, the old one keeps working.
        for _ in 0..2 {
            let (status, body) = refresh_with(&emu, &refresh).await;
            assert_eq!(status, 200, "{body}");
            assert!(body.get("refresh_token").is_none());
            assert!(emu.is_valid_access_token(body["access_token"].as_str().unwrap()));
        }
        assert!(
            !emu.is_valid_access_token(&access),
            "superseded by the refresh"
        );
        assert_eq!(emu.token_requests("refresh_token"), 2);

        // A second consent without prompt=consent gets no new refresh token.
        let (code, verifier) = authorize(&emu).await;
        let (_, body) = redeem(&emu, &code, &verifier).await;
        assert!(body.get("refresh_token").is_none(), "{body}");

        // Revoking the refresh token revokes the grant.
        let resp = client()
            .post(format!("{}?token={refresh}", emu.revoke_url()))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let (status, body) = refresh_with(&emu, &refresh).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(
            body["error_description"],
            "Token has been expired or revoked."
        );
    }

    #[tokio::test]
    async fn microsoft_code_flow_with_pkce() {
        let emu = OAuthEmulator::start(Flavor::Microsoft, ID, SECRET).await;
        let (code, verifier) = authorize(&emu).await;
        let (status, body) = redeem(&emu, &code, &verifier).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        let (access, refresh) = tokens(&body);
        let refresh = refresh.expect("offline_access gives a refresh token");
        assert!(emu.is_valid_access_token(&access));

        let claims = verify_id_token(&emu, body["id_token"].as_str().unwrap()).await;
        assert_eq!(
            emu.issuer(),
            format!("{}/{}/v2.0", emu.base(), emu.ms_tenant_id())
        );
        assert_eq!(claims["tid"], emu.ms_tenant_id());
        assert_eq!(claims["oid"], emu.subject());
        assert_eq!(claims["sub"], MS_PAIRWISE_SUBJECT);
        assert_eq!(claims["preferred_username"], MS_USERNAME);
        assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");

        // A new refresh token every time; the old one is not revoked ("Refresh tokens").
        let (status, body) = refresh_with(&emu, &refresh).await;
        assert_eq!(status, 200, "{body}");
        let (_, newer) = tokens(&body);
        let newer = newer.unwrap();
        assert_ne!(newer, refresh);
        assert_eq!(emu.current_refresh_token(), Some(newer.clone()));
        let (status, _) = refresh_with(&emu, &refresh).await;
        assert_eq!(status, 200);

        // Narrowing the scope is allowed, widening is not.
        let (status, body) = token(
            &emu,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &newer),
                ("scope", "https://graph.microsoft.com/Mail.Read"),
            ],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_scope"))
        );
        assert_eq!(body["error_codes"][0], 70011);

        emu.revoke_user_consent();
        let (status, body) = refresh_with(&emu, &newer).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(body["error_codes"][0], 50173);
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS50173: ")
        );
        for field in ["timestamp", "trace_id", "correlation_id"] {
            assert!(body[field].is_string(), "{field} in {body}");
        }
        assert_eq!(emu.current_refresh_token(), None);
    }

    #[tokio::test]
    async fn slack_code_flow_with_pkce_and_rotation() {
        let emu = OAuthEmulator::start(Flavor::Slack, ID, SECRET).await;
        let (code, verifier) = authorize(&emu).await;
        let (status, body) = redeem(&emu, &code, &verifier).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["ok"], true);
        assert_eq!(body["authed_user"]["id"], emu.subject());
        assert_eq!(
            body["authed_user"]["scope"],
            "users.profile:write,users:write"
        );
        assert_eq!(body["authed_user"]["token_type"], "user");
        assert_eq!(body["authed_user"]["expires_in"], 43_200);
        assert_eq!(body["team"]["id"], SLACK_TEAM_ID);
        assert_eq!(body["enterprise"], Value::Null);
        assert_eq!(body["is_enterprise_install"], false);
        assert!(
            body.get("access_token").is_none(),
            "no bot token without bot scopes"
        );
        let (access, refresh) = tokens(&body);
        let refresh = refresh.unwrap();
        assert!(access.starts_with("xoxe.xoxp-1-") && refresh.starts_with("xoxe-1-"));

        let (status, body) = refresh_with(&emu, &refresh).await;
        assert_eq!(status, 200);
        assert_eq!(body["token_type"], "user");
        assert_eq!(body["expires_in"], 43_200);
        let (new_access, newer) = tokens(&body);
        assert!(emu.is_valid_access_token(&new_access) && !emu.is_valid_access_token(&access));

        // Rotation: the used refresh token is refused, as HTTP 200 ok:false.
        let (status, body) = refresh_with(&emu, &refresh).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({"ok": false, "error": "invalid_refresh_token"}));
        assert_eq!(emu.current_refresh_token(), newer);

        // auth.revoke with the token as Bearer revokes it and its refresh token.
        let resp = client()
            .post(emu.revoke_url())
            .bearer_auth(&new_access)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"ok": true, "revoked": true})
        );
        assert!(!emu.is_valid_access_token(&new_access));
        assert_eq!(emu.current_refresh_token(), None);
    }

    #[tokio::test]
    async fn zoom_code_flow_with_pkce_and_rotation() {
        let emu = OAuthEmulator::start(Flavor::Zoom, ID, SECRET).await;
        let (code, verifier) = authorize(&emu).await;
        let (status, body) = redeem(&emu, &code, &verifier).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["scope"], "user:read meeting:read");
        assert_eq!(body["api_url"], ZOOM_API_URL);
        let (access, refresh) = tokens(&body);
        let refresh = refresh.unwrap();
        assert!(emu.is_valid_access_token(&access));

        let (status, body) = refresh_with(&emu, &refresh).await;
        assert_eq!(status, 200);
        let (_, newer) = tokens(&body);
        assert_ne!(newer.as_deref(), Some(refresh.as_str()));
        let (status, body) = refresh_with(&emu, &refresh).await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"reason": "Invalid Token!", "error": "invalid_grant"})
        );

        let resp = client()
            .post(format!("{}?token={}", emu.revoke_url(), newer.unwrap()))
            .basic_auth(ID, Some(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"status": "success"})
        );
        assert_eq!(emu.current_refresh_token(), None);
    }

    #[tokio::test]
    async fn zoom_refuses_client_credentials_in_the_body() {
        let emu = OAuthEmulator::start(Flavor::Zoom, ID, SECRET).await;
        let (code, verifier) = authorize(&emu).await;
        let resp = client()
            .post(emu.token_url())
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier.as_str()),
                ("client_id", ID),
                ("client_secret", SECRET),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
        // The refusal did not consume the code.
        let (status, _) = redeem(&emu, &code, &verifier).await;
        assert_eq!(status, 200);
        assert_eq!(emu.token_requests("authorization_code"), 2);
    }

    #[tokio::test]
    async fn basic_credentials_may_be_form_encoded() {
        let emu = OAuthEmulator::start(Flavor::Slack, ID, SECRET).await;
        let encoded: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
        let resp = client()
            .post(emu.token_url())
            .header(
                header::AUTHORIZATION,
                format!("Basic {}", STANDARD.encode(format!("{ID}:{encoded}"))),
            )
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "xoxe-1-unknown"),
            ])
            .send()
            .await
            .unwrap();
        // Authenticated, so the refusal is about the token, not the client.
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"ok": false, "error": "invalid_refresh_token"}));
    }

    #[tokio::test]
    async fn wrong_verifier_is_refused_by_every_flavor() {
        for flavor in [
            Flavor::Google,
            Flavor::Microsoft,
            Flavor::Slack,
            Flavor::Zoom,
        ] {
            let emu = OAuthEmulator::start(flavor, ID, SECRET).await;
            let (code, _) = authorize(&emu).await;
            let (other_verifier, _) = pkce();
            let (status, body) = redeem(&emu, &code, &other_verifier).await;
            match flavor {
                Flavor::Slack => assert_eq!(body, json!({"ok": false, "error": "invalid_code"})),
                Flavor::Microsoft => assert_eq!(body["error_codes"][0], 501481, "{body}"),
                _ => assert_eq!(
                    (status, body["error"].as_str()),
                    (400, Some("invalid_grant"))
                ),
            }
            assert_eq!(emu.current_refresh_token(), None, "{flavor:?}");
        }
    }

    #[tokio::test]
    async fn replayed_code_is_refused_and_revokes_its_tokens() {
        for flavor in [
            Flavor::Google,
            Flavor::Microsoft,
            Flavor::Slack,
            Flavor::Zoom,
        ] {
            let emu = OAuthEmulator::start(flavor, ID, SECRET).await;
            let (code, verifier) = authorize(&emu).await;
            let (status, body) = redeem(&emu, &code, &verifier).await;
            assert_eq!(status, 200, "{flavor:?}: {body}");
            let (access, _) = tokens(&body);
            let (_, replay) = redeem(&emu, &code, &verifier).await;
            match flavor {
                Flavor::Slack => assert_eq!(replay["error"], "invalid_code"),
                Flavor::Microsoft => assert_eq!(replay["error_codes"][0], 54005),
                _ => assert_eq!(replay["error"], "invalid_grant"),
            }
            assert!(!emu.is_valid_access_token(&access), "{flavor:?}");
            assert_eq!(emu.current_refresh_token(), None, "{flavor:?}");
        }
    }

    #[tokio::test]
    async fn consent_screen_choices() {
        let emu = OAuthEmulator::start(Flavor::Google, ID, SECRET).await;
        let (_, challenge) = pkce();
        let scopes = scope_params(Flavor::Google);

        emu.deny_next();
        let (status, query) = authorize_query(&emu, &challenge, "S256", &scopes).await;
        assert_eq!(status, 302);
        assert_eq!(query["error"], "access_denied");
        assert_eq!(query["state"], "st-123");
        assert!(!query.contains_key("code"));
        let recorded = emu.last_authorize_query().unwrap();
        assert!(recorded.contains(&("access_type".to_string(), "offline".to_string())));

        // plain PKCE is refused with a redirect.
        let (_, query) = authorize_query(&emu, &challenge, "plain", &scopes).await;
        assert_eq!(query["error"], "invalid_request");

        // An unknown client gets a page, not a redirect.
        let resp = client()
            .get(format!(
                "{}?client_id=someone-else&redirect_uri={REDIRECT}&response_type=code",
                emu.authorize_url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert!(!resp.headers().contains_key(header::LOCATION));

        // The user grants only part of what was asked.
        emu.grant_only(&["https://www.googleapis.com/auth/calendar.readonly"]);
        let (verifier, challenge) = pkce();
        let (_, query) = authorize_query(
            &emu,
            &challenge,
            "S256",
            &[
                (
                    "scope",
                    "https://www.googleapis.com/auth/calendar.readonly https://www.googleapis.com/auth/gmail.readonly",
                ),
                ("access_type", "offline"),
            ],
        )
        .await;
        let (_, body) = redeem(&emu, &query["code"], &verifier).await;
        assert_eq!(
            body["scope"],
            "https://www.googleapis.com/auth/calendar.readonly"
        );
    }

    #[tokio::test]
    async fn injected_refresh_failures() {
        let emu = OAuthEmulator::start(Flavor::Zoom, ID, SECRET).await;
        let (code, verifier) = authorize(&emu).await;
        let (_, body) = redeem(&emu, &code, &verifier).await;
        let refresh = tokens(&body).1.unwrap();

        emu.fail_next_refresh(RefreshFailure::ServerError(503));
        let resp = client()
            .post(emu.token_url())
            .basic_auth(ID, Some(SECRET))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        assert!(!resp.headers().contains_key(header::RETRY_AFTER));

        emu.fail_next_refresh(RefreshFailure::InvalidGrant);
        let (status, body) = refresh_with(&emu, &refresh).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );

        emu.fail_next_refresh(RefreshFailure::Slow(Duration::from_millis(20)));
        let started = Instant::now();
        let (status, _) = refresh_with(&emu, &refresh).await;
        assert_eq!(status, 200);
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(emu.token_requests("refresh_token"), 3);
    }

    #[tokio::test]
    async fn overlapping_refreshes_race_for_a_rotating_token() {
        let emu = OAuthEmulator::start(Flavor::Slack, ID, SECRET).await;
        let (code, verifier) = authorize(&emu).await;
        let (_, body) = redeem(&emu, &code, &verifier).await;
        let refresh = tokens(&body).1.unwrap();
        emu.set_refresh_delay(Duration::from_millis(30));
        let (a, b) = tokio::join!(refresh_with(&emu, &refresh), refresh_with(&emu, &refresh));
        let oks = [a.1["ok"].as_bool(), b.1["ok"].as_bool()];
        assert!(
            oks.contains(&Some(true)) && oks.contains(&Some(false)),
            "{a:?} {b:?}"
        );
        assert_eq!(emu.token_requests("refresh_token"), 2);
    }

    #[tokio::test]
    async fn access_token_lifetime_is_configurable() {
        let emu = OAuthEmulator::start(Flavor::Google, ID, SECRET).await;
        emu.set_access_token_lifetime(0);
        let (code, verifier) = authorize(&emu).await;
        let (_, body) = redeem(&emu, &code, &verifier).await;
        assert_eq!(body["expires_in"], 0);
        assert!(!emu.is_valid_access_token(&tokens(&body).0));
    }
}
