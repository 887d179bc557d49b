//! OAuth connections: people connect their provider accounts here, and only the
//! host ever holds the tokens.
//!
//! - [`flow`]: `GET /api/oauth/{provider}/start` and `/callback`, the
//!   authorization code flow with PKCE (S256) and a single-use, expiring state
//!   bound to the tenant and the person.
//! - [`refresh`]: refresh ahead of expiry, on a refused token, and at least
//!   daily; one refresh at a time per connection, held by a lock in the store.
//! - [`id_token`]: ID tokens (Google, Microsoft) verified against the provider's JWKS.
//!
//! Providers are data ([`Provider`], from `[oauth.providers.<name>]` over a
//! built-in template); token requests go through the `oauth2` crate with one
//! adapter for Slack, whose `oauth.v2.access` answers in its own shape.

pub mod flow;
pub mod id_token;
pub mod refresh;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RedirectUrl,
    StandardRevocableToken, StandardTokenResponse, TokenResponse as _, TokenUrl,
};
use serde::{Deserialize, Serialize};
use url::Url;
use zeroize::Zeroizing;

use crate::config::{OAuthConfig, OAuthProviderConfig};
use crate::store::{SecretName, Store};

/// How a provider's token endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStyle {
    /// RFC 6749 §5.1/§5.2.
    Standard,
    /// Slack's `oauth.v2.access`: HTTP 200 with `ok`, user tokens under
    /// `authed_user`, comma-separated scopes.
    Slack,
}

/// A provider, resolved from its configuration and template.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// The built-in provider it follows (`google`, ...), or its own name.
    pub template: String,
    pub client_id: String,
    pub client_secret: SecretName,
    pub authorize_url: Url,
    pub token_url: Url,
    pub revoke_url: Option<Url>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub scopes: Vec<String>,
    pub authorize_params: BTreeMap<String, String>,
    pub token_auth: AuthType,
    pub style: TokenStyle,
}

struct Template {
    authorize_url: &'static str,
    token_url: &'static str,
    revoke_url: Option<&'static str>,
    jwks_url: Option<&'static str>,
    issuer: Option<&'static str>,
    scopes: &'static [&'static str],
    authorize_params: &'static [(&'static str, &'static str)],
    basic_auth: bool,
    style: TokenStyle,
}

/// The providers' published endpoints and conventions.
fn template(name: &str) -> Option<Template> {
    Some(match name {
        // developers.google.com/identity/protocols/oauth2/web-server; offline
        // access and consent each time, so a refresh token is always issued.
        "google" => Template {
            authorize_url: "https://accounts.google.com/o/oauth2/v2/auth",
            token_url: "https://oauth2.googleapis.com/token",
            revoke_url: Some("https://oauth2.googleapis.com/revoke"),
            jwks_url: Some("https://www.googleapis.com/oauth2/v3/certs"),
            issuer: Some("https://accounts.google.com"),
            scopes: &["openid", "email"],
            authorize_params: &[
                ("access_type", "offline"),
                ("prompt", "consent"),
                ("include_granted_scopes", "true"),
            ],
            basic_auth: false,
            style: TokenStyle::Standard,
        },
        // learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow;
        // `offline_access` is what yields a refresh token.
        "microsoft" => Template {
            authorize_url: "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
            token_url: "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            revoke_url: None,
            jwks_url: Some("https://login.microsoftonline.com/common/discovery/v2.0/keys"),
            issuer: Some("https://login.microsoftonline.com/{tenantid}/v2.0"),
            scopes: &["openid", "profile", "offline_access"],
            authorize_params: &[],
            basic_auth: false,
            style: TokenStyle::Standard,
        },
        // api.slack.com/authentication/oauth-v2: user scopes go in `user_scope`.
        "slack" => Template {
            authorize_url: "https://slack.com/oauth/v2/authorize",
            token_url: "https://slack.com/api/oauth.v2.access",
            revoke_url: Some("https://slack.com/api/auth.revoke"),
            jwks_url: None,
            issuer: None,
            scopes: &[],
            authorize_params: &[],
            basic_auth: false,
            style: TokenStyle::Slack,
        },
        // developers.zoom.us/docs/integrations/oauth: the token endpoint takes HTTP Basic.
        "zoom" => Template {
            authorize_url: "https://zoom.us/oauth/authorize",
            token_url: "https://zoom.us/oauth/token",
            revoke_url: Some("https://zoom.us/oauth/revoke"),
            jwks_url: None,
            issuer: None,
            scopes: &[],
            authorize_params: &[],
            basic_auth: true,
            style: TokenStyle::Standard,
        },
        _ => return None,
    })
}

impl Provider {
    /// The provider `name` as configured over its template.
    pub fn resolve(name: &str, c: &OAuthProviderConfig) -> Result<Self, String> {
        if crate::plugins::manifest::PluginName::parse(name).is_err() {
            return Err("a provider name is lower-case letters, digits and '-'".into());
        }
        let template_name = c.template.as_deref().unwrap_or(name);
        let t = template(template_name);
        if c.template.is_some() && t.is_none() {
            return Err(format!(
                "unknown template {template_name:?} (google, microsoft, slack or zoom)"
            ));
        }
        let client_id = c
            .client_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or("client_id is required")?;
        let url = |field: &str, configured: &Option<String>, default: Option<&str>| {
            configured
                .as_deref()
                .or(default)
                .map(|u| Url::parse(u).map_err(|e| format!("{field} {u:?}: {e}")))
                .transpose()
        };
        let authorize_url = url(
            "authorize_url",
            &c.authorize_url,
            t.as_ref().map(|t| t.authorize_url),
        )?
        .ok_or("authorize_url is required for a provider without a template")?;
        let token_url = url("token_url", &c.token_url, t.as_ref().map(|t| t.token_url))?
            .ok_or("token_url is required for a provider without a template")?;
        let revoke_url = url(
            "revoke_url",
            &c.revoke_url,
            t.as_ref().and_then(|t| t.revoke_url),
        )?;
        let jwks_url = c
            .jwks_url
            .clone()
            .or_else(|| t.as_ref().and_then(|t| t.jwks_url).map(String::from));
        let issuer = c
            .issuer
            .clone()
            .or_else(|| t.as_ref().and_then(|t| t.issuer).map(String::from));
        if jwks_url.is_some() != issuer.is_some() {
            return Err("jwks_url and issuer go together (both verify ID tokens)".into());
        }
        let client_secret = SecretName::parse(
            c.client_secret
                .as_deref()
                .unwrap_or(&format!("oauth.{name}.client-secret")),
        )?;
        let token_auth = match c.token_auth.as_deref() {
            None if t.as_ref().is_some_and(|t| t.basic_auth) => AuthType::BasicAuth,
            None | Some("body") => AuthType::RequestBody,
            Some("basic") => AuthType::BasicAuth,
            Some(other) => return Err(format!("token_auth {other:?} is not body or basic")),
        };
        Ok(Self {
            name: name.to_string(),
            template: template_name.to_string(),
            client_id,
            client_secret,
            authorize_url,
            token_url,
            revoke_url,
            jwks_url,
            issuer,
            // Configured scopes and parameters add to the template's (which
            // carry what yields a refresh token: `offline_access`, `access_type`).
            scopes: {
                let mut scopes: Vec<String> = t
                    .as_ref()
                    .map(|t| t.scopes.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default();
                for s in c.scopes.iter().flatten() {
                    if !scopes.contains(s) {
                        scopes.push(s.clone());
                    }
                }
                scopes
            },
            authorize_params: {
                let mut params: BTreeMap<String, String> = t
                    .as_ref()
                    .map(|t| {
                        t.authorize_params
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                params.extend(c.authorize_params.clone().unwrap_or_default());
                params
            },
            token_auth,
            style: t.as_ref().map_or(TokenStyle::Standard, |t| t.style),
        })
    }

    /// Whether ID tokens from this provider are verified (an OpenID provider).
    pub fn verifies_id_tokens(&self) -> bool {
        self.jwks_url.is_some()
    }

    /// A scope as this provider's grants spell it, for comparing what was
    /// granted with what a plugin declares: Microsoft scopes are
    /// case-insensitive and may carry the Graph resource prefix; Google
    /// reports `email` and `profile` by their full URLs.
    pub fn normalize_scope(&self, scope: &str) -> String {
        match self.template.as_str() {
            // Case-insensitive, the resource prefix included.
            "microsoft" => scope
                .to_ascii_lowercase()
                .trim_start_matches("https://graph.microsoft.com/")
                .to_owned(),
            "google" => match scope {
                "https://www.googleapis.com/auth/userinfo.email" => "email".into(),
                "https://www.googleapis.com/auth/userinfo.profile" => "profile".into(),
                other => other.to_string(),
            },
            _ => scope.to_string(),
        }
    }
}

/// Fields of a token response beyond RFC 6749's.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ProviderFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The person's account id, lifted by the Slack adapter from `authed_user.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_account: Option<String>,
}

impl oauth2::ExtraTokenFields for ProviderFields {}

type TokenResponse = StandardTokenResponse<ProviderFields, BasicTokenType>;

type Client = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Tokens a token endpoint issued.
pub struct Tokens {
    pub access_token: Zeroizing<String>,
    /// Present when the provider issued (or rotated) one.
    pub refresh_token: Option<Zeroizing<String>>,
    pub expires_at: Option<i64>,
    /// The granted scopes, when the provider said (RFC 6749 §5.1: omitted means as requested).
    pub scopes: Option<Vec<String>>,
    pub id_token: Option<String>,
    pub account: Option<String>,
}

/// Why a token request failed, in the terms that decide what happens next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The grant (code or refresh token) is no longer valid (`invalid_grant`):
    /// only the person can fix it, by consenting again.
    #[error("the provider refused the grant ({code}): {description}")]
    Refused { code: String, description: String },
    /// Our side is misconfigured (client id or secret, redirect URI): the operator must fix it.
    #[error("the provider refused this host's client ({code}): {description}")]
    Client { code: String, description: String },
    /// Network trouble, timeouts, 5xx, rate limits: worth retrying later.
    #[error("token request failed, will retry: {0}")]
    Transient(String),
}

/// Transport failures of a token request, as the adapter reports them to `oauth2`.
#[derive(Debug, thiserror::Error)]
enum TokenHttpError {
    #[error("{0}")]
    Transport(String),
    #[error("the token endpoint answered HTTP {0}")]
    Status(u16),
    #[error("the token endpoint's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("unreadable token response: {0}")]
    Unreadable(&'static str),
}

const TOKEN_RESPONSE_CAP: usize = 64 * 1024;
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Callers in this process waiting to refresh one connection.
type RefreshQueue = tokio::sync::Mutex<()>;

/// The connections' token service: providers, the token HTTP client, the JWKS
/// cache, and the in-process half of the one-refresher-per-connection rule.
pub struct OAuth {
    providers: BTreeMap<String, Provider>,
    http: reqwest::Client,
    pub jwks: id_token::JwksCache,
    /// In-process queue per connection, so callers here wait on a mutex rather
    /// than polling the store's lock.
    local: Mutex<HashMap<(String, String), Weak<RefreshQueue>>>,
    /// This process's name as a lock owner.
    owner: String,
    pub state_ttl_ms: i64,
    lock_ms: i64,
    /// Wakes the refresher when a connection's schedule changed.
    pub wake: tokio::sync::Notify,
    /// Wakes the tenant-webhook sender when an announcement was queued.
    webhooks_wake: Arc<tokio::sync::Notify>,
    /// Where refresh outcomes are counted, per connection (set once at start).
    health: std::sync::OnceLock<Arc<crate::health::Health>>,
}

impl OAuth {
    pub fn new(
        config: &OAuthConfig,
        webhooks_wake: Arc<tokio::sync::Notify>,
    ) -> Result<Self, String> {
        let providers = config
            .providers
            .iter()
            .map(|(name, c)| Ok((name.clone(), Provider::resolve(name, c)?)))
            .collect::<Result<_, String>>()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("presence-host/", env!("CARGO_PKG_VERSION")))
            .timeout(TOKEN_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let mut owner = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut owner);
        Ok(Self {
            providers,
            jwks: id_token::JwksCache::new(http.clone()),
            http,
            local: Mutex::new(HashMap::new()),
            owner: format!("{}-{}", std::process::id(), hex::encode(owner)),
            state_ttl_ms: (config.state_ttl_s as i64).saturating_mul(1000),
            lock_ms: (config.refresh_lock_s.max(1) as i64).saturating_mul(1000),
            wake: tokio::sync::Notify::new(),
            webhooks_wake,
            health: std::sync::OnceLock::new(),
        })
    }

    /// Counts refresh outcomes in `health` from now on.
    pub fn report_to(&self, health: Arc<crate::health::Health>) {
        let _ = self.health.set(health);
    }

    /// Records a refresh's outcome in the connection's health.
    pub(crate) fn count(
        &self,
        tenant: &str,
        connection: &str,
        plugin: &str,
        outcome: crate::health::Outcome,
    ) {
        if let Some(health) = self.health.get() {
            health.connection_event(tenant, connection, plugin, &outcome);
        }
    }

    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values()
    }

    async fn client(
        &self,
        store: &Store,
        provider: &Provider,
        redirect_uri: Option<&str>,
    ) -> Result<Client, TokenError> {
        let secret = store
            .secret(&provider.client_secret)
            .await
            .map_err(|e| TokenError::Transient(e.to_string()))?
            .ok_or_else(|| TokenError::Client {
                code: "missing_client_secret".into(),
                description: format!(
                    "secret {} is not set: `presence-host secret set {}`",
                    provider.client_secret, provider.client_secret
                ),
            })?;
        let secret =
            String::from_utf8(secret.expose().to_vec()).map_err(|_| TokenError::Client {
                code: "bad_client_secret".into(),
                description: format!("secret {} is not text", provider.client_secret),
            })?;
        let mut client = oauth2::Client::new(ClientId::new(provider.client_id.clone()))
            .set_client_secret(ClientSecret::new(secret))
            .set_auth_uri(AuthUrl::from_url(provider.authorize_url.clone()))
            .set_token_uri(TokenUrl::from_url(provider.token_url.clone()))
            .set_auth_type(provider.token_auth.clone());
        if let Some(uri) = redirect_uri {
            client = client.set_redirect_uri(RedirectUrl::new(uri.to_string()).map_err(|e| {
                TokenError::Client {
                    code: "bad_redirect_uri".into(),
                    description: e.to_string(),
                }
            })?);
        }
        Ok(client)
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        store: &Store,
        provider: &Provider,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<Tokens, TokenError> {
        let client = self.client(store, provider, Some(redirect_uri)).await?;
        let http = TokenHttp {
            http: &self.http,
            style: provider.style,
        };
        let response = client
            .exchange_code(oauth2::AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(oauth2::PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&http)
            .await
            .map_err(classify)?;
        tokens_from(response)
    }

    /// Uses a refresh token.
    pub async fn exchange_refresh(
        &self,
        store: &Store,
        provider: &Provider,
        refresh_token: &str,
    ) -> Result<Tokens, TokenError> {
        let client = self.client(store, provider, None).await?;
        let http = TokenHttp {
            http: &self.http,
            style: provider.style,
        };
        let token = oauth2::RefreshToken::new(refresh_token.to_string());
        let response = client
            .exchange_refresh_token(&token)
            .request_async(&http)
            .await
            .map_err(classify)?;
        tokens_from(response)
    }

    /// Tells the provider a token is no longer wanted (best effort: the
    /// connection is gone here whatever the provider answers).
    pub async fn revoke(
        &self,
        store: &Store,
        provider: &Provider,
        token: &str,
    ) -> Result<(), String> {
        let Some(url) = &provider.revoke_url else {
            return Ok(());
        };
        let request = match provider.style {
            // auth.revoke takes the token being revoked as its credential.
            TokenStyle::Slack => self.http.post(url.clone()).bearer_auth(token),
            // RFC 7009: the token in a form, the client authenticated as at the token endpoint.
            TokenStyle::Standard => {
                let request = self.http.post(url.clone()).form(&[("token", token)]);
                if matches!(provider.token_auth, AuthType::BasicAuth) {
                    let secret = store
                        .secret(&provider.client_secret)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("secret {} is not set", provider.client_secret))?;
                    let secret = String::from_utf8_lossy(secret.expose()).into_owned();
                    request.basic_auth(&provider.client_id, Some(secret))
                } else {
                    request
                }
            }
        };
        let response = request.send().await.map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("revocation answered HTTP {}", response.status()))
        }
    }
}

/// The tokens of a successful answer. An empty access token is no token: it
/// is refused as an unreadable answer (worth retrying), never stored.
fn tokens_from(response: TokenResponse) -> Result<Tokens, TokenError> {
    if response.access_token().secret().is_empty() {
        return Err(TokenError::Transient(
            "unreadable token response: the access token is empty".into(),
        ));
    }
    let now = crate::store::now_ms();
    Ok(Tokens {
        access_token: Zeroizing::new(response.access_token().secret().clone()),
        refresh_token: response
            .refresh_token()
            .map(|t| Zeroizing::new(t.secret().clone())),
        expires_at: response
            .expires_in()
            .map(|d| now.saturating_add(d.as_millis().min(i64::MAX as u128) as i64)),
        scopes: response
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect()),
        id_token: response.extra_fields().id_token.clone(),
        account: response.extra_fields().presence_account.clone(),
    })
}

fn classify(e: oauth2::RequestTokenError<TokenHttpError, BasicErrorResponse>) -> TokenError {
    use oauth2::RequestTokenError as E;
    match e {
        E::ServerResponse(r) => {
            let code = r.error().to_string();
            let description = r.error_description().cloned().unwrap_or_default();
            match r.error() {
                BasicErrorResponseType::InvalidGrant | BasicErrorResponseType::InvalidScope => {
                    TokenError::Refused { code, description }
                }
                // Microsoft: the person (or their admin) must act again.
                BasicErrorResponseType::Extension(e)
                    if matches!(e.as_str(), "interaction_required" | "consent_required") =>
                {
                    TokenError::Refused { code, description }
                }
                BasicErrorResponseType::InvalidClient
                | BasicErrorResponseType::UnauthorizedClient
                | BasicErrorResponseType::InvalidRequest
                | BasicErrorResponseType::UnsupportedGrantType => {
                    TokenError::Client { code, description }
                }
                _ => TokenError::Transient(format!("{code}: {description}")),
            }
        }
        E::Request(e) => TokenError::Transient(e.to_string()),
        E::Parse(e, _) => TokenError::Transient(format!("unreadable token response: {e}")),
        E::Other(m) => TokenError::Transient(m),
    }
}

/// The HTTP client `oauth2` sends token requests with: ours, through [`send`].
struct TokenHttp<'a> {
    http: &'a reqwest::Client,
    style: TokenStyle,
}

type TokenFuture<'c> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, TokenHttpError>> + Send + 'c>,
>;

impl<'c> oauth2::AsyncHttpClient<'c> for TokenHttp<'_> {
    type Error = TokenHttpError;
    type Future = TokenFuture<'c>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(send(self.http, self.style, request))
    }
}

/// Sends a token request for `oauth2`, with a size cap; 5xx and 429 become
/// transport errors (retry later), and Slack's answers are rewritten to RFC 6749's shape.
async fn send(
    http: &reqwest::Client,
    style: TokenStyle,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, TokenHttpError> {
    let (parts, body) = request.into_parts();
    let mut response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| TokenHttpError::Transport(e.to_string()))?;
    let status = response.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(TokenHttpError::Status(status.as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| TokenHttpError::Transport(e.to_string()))?
    {
        if body.len() + chunk.len() > TOKEN_RESPONSE_CAP {
            return Err(TokenHttpError::TooLarge(TOKEN_RESPONSE_CAP));
        }
        body.extend_from_slice(&chunk);
    }
    let (mut status, headers) = (status, response.headers().clone());
    if style == TokenStyle::Slack {
        // Only Slack's own answer is read, never handed on as it came: a body
        // `oauth2`'s lenient reading might take for tokens while it says
        // `ok: false` in a way the adapter cannot read.
        (status, body) = slack_to_standard(&body).ok_or(TokenHttpError::Unreadable(
            "Slack's oauth.v2.access answers a JSON object with `ok`",
        ))?;
    }
    let mut builder = http::Response::builder().status(status.as_u16());
    if let Some(h) = builder.headers_mut() {
        // oauth2 checks the content type; keep the provider's.
        if let Some(ct) = headers.get(reqwest::header::CONTENT_TYPE) {
            h.insert(http::header::CONTENT_TYPE, ct.clone());
        }
    }
    builder
        .body(body)
        .map_err(|e| TokenHttpError::Transport(e.to_string()))
}

/// Rewrites a Slack `oauth.v2.access` answer into RFC 6749's shape: errors
/// (`ok: false`, HTTP 200) become 400s with the standard code, the user token
/// under `authed_user` moves to the top, and comma-separated scopes become
/// space-separated. None when the body is not Slack's JSON (an object with `ok`).
fn slack_to_standard(body: &[u8]) -> Option<(reqwest::StatusCode, Vec<u8>)> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = v.as_object_mut()?;
    // Only `ok: true` is a success; anything else is a refusal, named by its
    // `error` when Slack sent one.
    if object.get("ok")? != &serde_json::Value::Bool(true) {
        let slack_error = object
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("Slack answered without `ok: true` and without an error")
            .to_string();
        // api.slack.com/methods/oauth.v2.access#errors
        let code = match slack_error.as_str() {
            "invalid_code"
            | "invalid_refresh_token"
            | "code_already_used"
            | "token_revoked"
            | "token_expired"
            | "app_uninstalled"
            | "account_inactive"
            | "invalid_auth" => "invalid_grant",
            "invalid_client_id" | "bad_client_secret" | "invalid_client" => "invalid_client",
            "bad_redirect_uri" | "invalid_grant_type" | "invalid_arguments" => "invalid_request",
            "oauth_authorization_url_mismatch" => "invalid_grant",
            _ => "server_error",
        };
        let out = serde_json::json!({ "error": code, "error_description": slack_error });
        return Some((
            reqwest::StatusCode::BAD_REQUEST,
            out.to_string().into_bytes(),
        ));
    }
    // The host acts with the person's own token (`user_scope`); an answer
    // with only the app's bot token is not what was asked for.
    if object.get("token_type").and_then(|t| t.as_str()) == Some("bot")
        && object
            .get("authed_user")
            .is_none_or(|u| u.get("access_token").is_none())
    {
        let out = serde_json::json!({
            "error": "invalid_scope",
            "error_description": "Slack granted the app's bot token but no user token for the person",
        });
        return Some((
            reqwest::StatusCode::BAD_REQUEST,
            out.to_string().into_bytes(),
        ));
    }
    // A user-token install: the token the host acts with is the person's.
    if let Some(user) = object
        .get("authed_user")
        .and_then(|u| u.as_object())
        .cloned()
        && user.contains_key("access_token")
    {
        for field in [
            "access_token",
            "token_type",
            "scope",
            "refresh_token",
            "expires_in",
        ] {
            match user.get(field) {
                Some(value) => {
                    object.insert(field.to_string(), value.clone());
                }
                None => {
                    object.remove(field);
                }
            }
        }
        if let Some(id) = user.get("id") {
            object.insert("presence_account".into(), id.clone());
        }
    }
    if let Some(scope) = object.get("scope").and_then(|s| s.as_str()) {
        let spaced = scope.replace(',', " ");
        object.insert("scope".into(), spaced.into());
    }
    object
        .entry("token_type")
        .or_insert_with(|| "bearer".into());
    Some((reqwest::StatusCode::OK, v.to_string().into_bytes()))
}

/// The in-process mutex of a connection (created on first use, dropped with its last user).
impl OAuth {
    fn local_lock(&self, tenant: &str, name: &str) -> Arc<RefreshQueue> {
        let mut map = self.local.lock().expect("oauth local lock map");
        map.retain(|_, w| w.strong_count() > 0);
        let key = (tenant.to_string(), name.to_string());
        if let Some(lock) = map.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(RefreshQueue::new(()));
        map.insert(key, Arc::downgrade(&lock));
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_give_each_provider_its_published_endpoints() {
        let c = OAuthProviderConfig {
            client_id: Some("id".into()),
            ..Default::default()
        };
        let google = Provider::resolve("google", &c).unwrap();
        assert_eq!(
            google.token_url.as_str(),
            "https://oauth2.googleapis.com/token"
        );
        assert!(google.verifies_id_tokens());
        assert_eq!(google.client_secret.as_str(), "oauth.google.client-secret");
        let zoom = Provider::resolve("zoom", &c).unwrap();
        assert!(matches!(zoom.token_auth, AuthType::BasicAuth));
        let slack = Provider::resolve("slack", &c).unwrap();
        assert_eq!(slack.style, TokenStyle::Slack);
        // An unknown provider needs its endpoints spelled out.
        let err = Provider::resolve("acme-idp", &c).unwrap_err();
        assert!(err.contains("authorize_url"), "{err}");
        let err = Provider::resolve("google", &OAuthProviderConfig::default()).unwrap_err();
        assert!(err.contains("client_id"), "{err}");
    }

    #[test]
    fn slack_answers_are_rewritten_to_rfc_6749() {
        // The user-token install answer documented for oauth.v2.access.
        let body = br#"{"ok":true,"app_id":"A0KRD7HC3","authed_user":{"id":"U1234","scope":"users.profile:write,users:write","access_token":"xoxp-1234","token_type":"user","refresh_token":"xoxe-1-abc","expires_in":43200},"team":{"id":"T9TK3CUKW","name":"Slack Softworks"},"enterprise":null,"is_enterprise_install":false}"#;
        let (status, out) = slack_to_standard(body).unwrap();
        assert_eq!(status, reqwest::StatusCode::OK);
        let r: TokenResponse = serde_json::from_slice(&out).unwrap();
        let t = tokens_from(r).unwrap();
        assert_eq!(t.access_token.as_str(), "xoxp-1234");
        assert_eq!(
            t.refresh_token.as_deref().map(|s| s.as_str()),
            Some("xoxe-1-abc")
        );
        assert_eq!(
            t.scopes.unwrap(),
            vec!["users.profile:write".to_string(), "users:write".to_string()]
        );
        assert_eq!(t.account.as_deref(), Some("U1234"));
        assert!(t.expires_at.is_some());

        let (status, out) =
            slack_to_standard(br#"{"ok":false,"error":"invalid_refresh_token"}"#).unwrap();
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
        let e: BasicErrorResponse = serde_json::from_slice(&out).unwrap();
        assert_eq!(e.error(), &BasicErrorResponseType::InvalidGrant);
        assert!(slack_to_standard(b"<html>").is_none());

        // A refusal without a (string) error is still a refusal, never the
        // bot token it may carry; anything but `ok: true` is one.
        for body in [
            br#"{"ok":false,"access_token":"xoxb-bot","token_type":"bot"}"#.as_slice(),
            br#"{"ok":false,"error":7,"access_token":"xoxb-bot"}"#,
            br#"{"ok":"true","access_token":"xoxb-bot"}"#,
        ] {
            let (status, out) = slack_to_standard(body).unwrap();
            assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
            let e: BasicErrorResponse = serde_json::from_slice(&out).unwrap();
            assert_eq!(e.error().to_string(), "server_error", "{out:?}");
        }
    }

    #[test]
    fn an_empty_access_token_is_no_token() {
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"","token_type":"Bearer"}"#).unwrap();
        assert!(matches!(tokens_from(r), Err(TokenError::Transient(_))));
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"ya29.x","token_type":"Bearer"}"#).unwrap();
        assert_eq!(tokens_from(r).unwrap().access_token.as_str(), "ya29.x");
    }

    #[test]
    fn microsoft_scopes_compare_without_case_or_graph_prefix() {
        let c = OAuthProviderConfig {
            client_id: Some("c".into()),
            ..Default::default()
        };
        let microsoft = Provider::resolve("microsoft", &c).unwrap();
        for spelling in [
            "Calendars.Read",
            "https://graph.microsoft.com/Calendars.Read",
            "HTTPS://Graph.Microsoft.com/calendars.read",
        ] {
            assert_eq!(microsoft.normalize_scope(spelling), "calendars.read");
        }
    }

    #[test]
    fn rfc_7636_appendix_b_vector() {
        // The S256 challenge this host sends is the one RFC 7636 Appendix B derives.
        let verifier =
            oauth2::PkceCodeVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        let challenge = oauth2::PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        assert_eq!(
            challenge.as_str(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(challenge.method().as_str(), "S256");
    }
}
