//! The authorization code flow with PKCE: `GET /api/oauth/{provider}/start`
//! and `GET /api/oauth/{provider}/callback`.
//!
//! `start` (a tenant's key, or the operator naming the tenant) records a
//! pending authorization under a fresh 256-bit `state`, bound to the tenant,
//! the person, the plugin and the provider, with a PKCE S256 challenge and, for
//! OpenID providers, a nonce; it answers with the provider's authorization URL
//! (a redirect, or JSON for `Accept: application/json`). The `state` is usable
//! once and for `oauth.state_ttl_s` seconds.
//!
//! `callback` (no key: the person's browser arrives here from the provider)
//! uses the state up, exchanges the code with the PKCE verifier, verifies the
//! ID token if there is one, checks that the granted scopes cover what the
//! plugin declares, and only then stores the connection. Every refusal
//! answers 400 (502 when the provider failed) with a page saying why, and
//! stores nothing but an audit event.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth2::{AuthUrl, ClientId, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Provider, TokenError, TokenStyle};
use crate::App;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::store::audit::Actor;
use crate::store::connections::{Connection, NEEDS_RECONSENT, NewTokens, valid_connection_name};
use crate::store::now_ms;
use crate::store::oauth_states::PendingAuthorization;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StartQuery {
    /// The person connecting, as presence knows them.
    pub user: String,
    /// The plugin that will act through the connection (default: the one plugin using this provider).
    pub plugin: Option<String>,
    /// The connection's name (default `<plugin>:<user>`).
    pub connection: Option<String>,
    /// The tenant, for the operator (a tenant key acts for its own).
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Started {
    pub authorize_url: String,
    pub connection: String,
    pub plugin: String,
    pub expires_at: i64,
}

/// What stays secret until the callback: sealed in the pending authorization.
#[derive(Serialize, Deserialize)]
struct Sealed {
    verifier: String,
    nonce: Option<String>,
    redirect_uri: String,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Where the provider sends the person back: `public_url`, else this request's own origin.
fn callback_url(app: &App, headers: &HeaderMap, provider: &str) -> Result<String, ApiError> {
    let base = match app.config.public_url.as_deref() {
        Some(base) => base.trim_end_matches('/').to_string(),
        // Without public_url, only a loopback host (a test, a local trial) may
        // name itself: anything else would let the caller's Host header pick
        // where the provider sends codes, over plain http.
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    let name = h.rsplit_once(':').map_or(*h, |(n, _)| n);
                    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
                })
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "set public_url (the https address providers send people back to) to use OAuth"
                            .into(),
                    )
                })?;
            format!("http://{host}")
        }
    };
    Ok(format!("{base}/api/oauth/{provider}/callback"))
}

/// The plugin a connection is for: the one named, else the only one using the provider.
fn plugin_for(
    app: &App,
    provider: &str,
    named: Option<&str>,
) -> Result<(String, Vec<String>), ApiError> {
    let users: Vec<(String, Vec<String>)> = app
        .registry
        .all()
        .values()
        .filter_map(|p| {
            let needs = p.manifest.oauth.as_ref()?;
            (needs.provider == provider).then(|| (p.name().to_string(), needs.scopes.clone()))
        })
        .collect();
    match named {
        Some(name) => users.into_iter().find(|(n, _)| n == name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "plugin {name:?} is not loaded or does not connect through provider {provider:?} (its plugin.toml has no [oauth] provider = {provider:?})"
            ))
        }),
        None => match users.len() {
            1 => Ok(users.into_iter().next().expect("one plugin")),
            0 => Err(ApiError::BadRequest(format!(
                "no loaded plugin connects through provider {provider:?}"
            ))),
            _ => Err(ApiError::BadRequest(format!(
                "several plugins connect through provider {provider:?} ({}): name one with ?plugin=",
                users.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        },
    }
}

#[utoipa::path(
    get,
    path = "/api/oauth/{provider}/start",
    operation_id = "start_oauth",
    tag = "connections",
    params(
        ("provider" = String, Path, description = "A provider configured under `[oauth.providers.<name>]`"),
        StartQuery,
        ("X-Presence-Tenant" = Option<String>, Header, description = "The tenant, for the operator; a tenant key may name only its own"),
    ),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "With `Accept: application/json`: where to send the person", body = Started),
        (status = 302, description = "Otherwise: a redirect to the provider's consent page", headers(("Location" = String, description = "The provider's authorization URL"))),
        (status = 400, description = "A bad user, plugin or redirect host (JSON), or a query the extractor refuses (plain text)", content(
            (crate::api::openapi::ErrorBody = "application/json"),
            (String = "text/plain"),
        )),
        (status = 403, description = "The API key belongs to another tenant", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such tenant, or the provider is not configured", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn start(
    State(app): State<Arc<App>>,
    Path(provider_name): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Result<Response, ApiError> {
    let named = crate::api::presence::named_tenant(&headers, q.tenant.as_deref())?;
    let tenant = caller.tenant_for(named)?;
    if !app.tenant_exists(&tenant).await? {
        return Err(ApiError::NotFound(format!("no tenant {tenant:?}")));
    }
    let provider = app.oauth.provider(&provider_name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "OAuth provider {provider_name:?} is not configured ([oauth.providers.{provider_name}] with a client_id)"
        ))
    })?;
    if q.user.is_empty() || q.user.len() > 200 || q.user.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "user must be 1-200 printable characters".into(),
        ));
    }
    let (plugin, required) = plugin_for(&app, &provider.name, q.plugin.as_deref())?;
    let connection = q
        .connection
        .clone()
        .unwrap_or_else(|| format!("{plugin}:{}", q.user));
    if !valid_connection_name(&connection) {
        return Err(ApiError::BadRequest(format!(
            "connection name {connection:?} must be 1-200 of A-Z a-z 0-9 - _ . : @ + (name it with ?connection=)"
        )));
    }
    let redirect_uri = callback_url(&app, &headers, &provider.name)?;
    let state = random_token();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = provider.verifies_id_tokens().then(random_token);
    let mut requested: Vec<String> = provider.scopes.clone();
    for scope in &required {
        if !requested.contains(scope) {
            requested.push(scope.clone());
        }
    }
    let authorize_url = authorize_url(
        provider,
        &redirect_uri,
        &state,
        challenge,
        nonce.as_deref(),
        &requested,
    )?;
    let expires_at = now_ms() + app.oauth.state_ttl_ms;
    let sealed = Zeroizing::new(
        serde_json::to_vec(&Sealed {
            verifier: verifier.secret().clone(),
            nonce,
            redirect_uri,
        })
        .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    let pending = PendingAuthorization {
        provider: provider.name.clone(),
        tenant: tenant.clone(),
        user: q.user.clone(),
        plugin: plugin.clone(),
        connection: connection.clone(),
        scopes: required,
        expires_at,
    };
    app.store.put_oauth_state(&state, &pending, &sealed).await?;
    app.store
        .audit(
            &tenant,
            &caller.actor(),
            "oauth.started",
            Some(&connection),
            Some(serde_json::json!({
                "provider": provider.name,
                "plugin": plugin,
                "user": q.user,
                "scopes": requested,
            })),
        )
        .await?;
    let started = Started {
        authorize_url,
        connection,
        plugin,
        expires_at,
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    Ok(if wants_json {
        Json(started).into_response()
    } else {
        (
            StatusCode::FOUND,
            [(header::LOCATION, started.authorize_url)],
        )
            .into_response()
    })
}

fn authorize_url(
    provider: &Provider,
    redirect_uri: &str,
    state: &str,
    challenge: PkceCodeChallenge,
    nonce: Option<&str>,
    scopes: &[String],
) -> Result<String, ApiError> {
    let bad = |e: oauth2::url::ParseError| ApiError::Internal(format!("OAuth URL: {e}"));
    let client = oauth2::basic::BasicClient::new(ClientId::new(provider.client_id.clone()))
        .set_auth_uri(AuthUrl::from_url(provider.authorize_url.clone()))
        .set_redirect_uri(RedirectUrl::new(redirect_uri.to_string()).map_err(bad)?);
    let state = state.to_string();
    let mut request = client
        .authorize_url(move || CsrfToken::new(state))
        .set_pkce_challenge(challenge);
    request = match provider.style {
        // Slack: the person's own token comes from `user_scope`, comma-separated.
        TokenStyle::Slack => request.add_extra_param("user_scope", scopes.join(",")),
        TokenStyle::Standard => request.add_scopes(scopes.iter().cloned().map(Scope::new)),
    };
    for (k, v) in &provider.authorize_params {
        request = request.add_extra_param(k.clone(), v.clone());
    }
    if let Some(nonce) = nonce {
        request = request.add_extra_param("nonce", nonce.to_string());
    }
    Ok(request.url().0.to_string())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The page the person sees at the end.
fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>{t}</title>\
         <body style=\"font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto\">\
         <h1>{t}</h1><p>{m}</p></body></html>",
        t = escape(title),
        m = escape(message)
    );
    (status, Html(body)).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[utoipa::path(
    get,
    path = "/api/oauth/{provider}/callback",
    operation_id = "oauth_callback",
    tag = "connections",
    params(
        ("provider" = String, Path, description = "The provider the person comes back from"),
        CallbackQuery,
    ),
    responses(
        (status = 200, description = "Connected: a page telling the person so", content_type = "text/html; charset=utf-8", body = String),
        (status = 400, description = "Refused (an unknown or used state, the provider's error, missing scopes): a page saying why", content_type = "text/html; charset=utf-8", body = String),
        (status = 404, description = "An unknown provider: a page saying so", content_type = "text/html; charset=utf-8", body = String),
        (status = 500, description = "A pending authorization that cannot be read: a page saying so", content_type = "text/html; charset=utf-8", body = String),
        (status = 502, description = "The provider's token endpoint failed: a page saying so", content_type = "text/html; charset=utf-8", body = String),
        (status = 503, description = "The store is unavailable: a page asking to start again", content_type = "text/html; charset=utf-8", body = String),
    ),
)]
pub async fn callback(
    State(app): State<Arc<App>>,
    Path(provider_name): Path<String>,
    Query(q): Query<CallbackQuery>,
) -> Response {
    if crate::plugins::manifest::PluginName::parse(&provider_name).is_err() {
        return page(StatusCode::NOT_FOUND, "Not connected", "unknown provider");
    }
    match complete(&app, &provider_name, q).await {
        Ok(connection) => page(
            StatusCode::OK,
            "Connected",
            &format!("Your account is connected ({connection}). You can close this window."),
        ),
        Err((status, message)) => {
            tracing::warn!(provider = %provider_name, %message, "OAuth callback refused");
            page(status, "Not connected", &message)
        }
    }
}

type Refusal = (StatusCode, String);

fn refused(message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, message.into())
}

fn unavailable(e: crate::store::StoreError) -> Refusal {
    tracing::error!(error = %e, "store error in the OAuth callback");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the service is unavailable; start the connection again in a moment".into(),
    )
}

async fn complete(app: &App, provider_name: &str, q: CallbackQuery) -> Result<String, Refusal> {
    let state = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refused("the state parameter is missing"))?;
    let (pending, secret) = app
        .store
        .take_oauth_state(state, provider_name)
        .await
        .map_err(unavailable)?
        .map_err(|r| refused(r.to_string()))?;
    let tenant = pending.tenant.as_str();
    let actor = Actor::User(pending.user.clone());
    let audit = |action: &'static str, detail: serde_json::Value| {
        let store = app.store.clone();
        let tenant = tenant.to_string();
        let actor = actor.clone();
        let connection = pending.connection.clone();
        async move {
            store
                .audit(&tenant, &actor, action, Some(&connection), Some(detail))
                .await
                .map_err(unavailable)
        }
    };
    if let Some(error) = &q.error {
        let description = q.error_description.clone().unwrap_or_default();
        audit(
            "oauth.denied",
            serde_json::json!({ "error": error, "description": description }),
        )
        .await?;
        return Err(refused(format!(
            "the provider did not grant access ({error}{}{description})",
            if description.is_empty() { "" } else { ": " }
        )));
    }
    let code = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| refused("the code parameter is missing"))?;
    let provider = app.oauth.provider(provider_name).ok_or_else(|| {
        refused(format!(
            "OAuth provider {provider_name:?} is no longer configured"
        ))
    })?;
    let sealed: Sealed = serde_json::from_slice(secret.expose()).map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("pending authorization: {e}"),
        )
    })?;
    let tokens = match app
        .oauth
        .exchange_code(
            &app.store,
            provider,
            code,
            &sealed.verifier,
            &sealed.redirect_uri,
        )
        .await
    {
        Ok(tokens) => tokens,
        Err(e) => {
            audit(
                "oauth.failed",
                serde_json::json!({ "error": e.to_string() }),
            )
            .await?;
            // The person sees what they can act on; the operator's details
            // (secret names, client errors) are in the audit trail and the log.
            return Err(match e {
                TokenError::Refused { .. } => (
                    StatusCode::BAD_REQUEST,
                    "the provider did not accept this authorization; start again".into(),
                ),
                TokenError::Client { .. } => {
                    tracing::error!(provider = %provider.name, error = %e, "OAuth client misconfigured");
                    (
                        StatusCode::BAD_GATEWAY,
                        "this service's connection to the provider is misconfigured; the operator has been told".into(),
                    )
                }
                TokenError::Transient(_) => (
                    StatusCode::BAD_GATEWAY,
                    "the provider could not be reached; start again in a moment".into(),
                ),
            });
        }
    };
    // RFC 6749 §5.1: no `scope` in the answer means the scopes requested.
    let granted: Vec<String> = tokens.scopes.clone().unwrap_or_else(|| {
        provider
            .scopes
            .iter()
            .chain(&pending.scopes)
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    });
    let granted_normalized: BTreeSet<String> = granted
        .iter()
        .map(|s| provider.normalize_scope(s))
        .collect();
    let missing: Vec<&String> = pending
        .scopes
        .iter()
        .filter(|s| !granted_normalized.contains(&provider.normalize_scope(s)))
        .collect();
    if !missing.is_empty() {
        audit(
            "connection.scope_missing",
            serde_json::json!({ "required": pending.scopes, "granted": granted, "missing": missing }),
        )
        .await?;
        revoke_unused(app, provider, &tokens.access_token);
        return Err(refused(format!(
            "the permissions granted do not include {}, which {} needs; connect again and allow them",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            pending.plugin
        )));
    }
    let mut account = tokens.account.clone();
    let openid = provider.scopes.iter().any(|s| s == "openid");
    if provider.verifies_id_tokens() && openid && tokens.id_token.is_none() {
        audit(
            "oauth.failed",
            serde_json::json!({ "error": "no ID token in the token response" }),
        )
        .await?;
        revoke_unused(app, provider, &tokens.access_token);
        return Err(refused("the provider sent no ID token; start again"));
    }
    if let (Some(id_token), Some(jwks_url), Some(issuer)) =
        (&tokens.id_token, &provider.jwks_url, &provider.issuer)
    {
        let expected = super::id_token::Expected {
            jwks_url,
            issuer,
            audience: &provider.client_id,
            nonce: sealed.nonce.as_deref(),
        };
        match app.oauth.jwks.verify(id_token, &expected).await {
            Ok(claims) => account = Some(claims.object_id.unwrap_or(claims.subject)),
            Err(e) => {
                audit(
                    "oauth.failed",
                    serde_json::json!({ "error": format!("ID token: {e}") }),
                )
                .await?;
                revoke_unused(app, provider, &tokens.access_token);
                return Err(refused(format!(
                    "the provider's ID token is not valid: {e}"
                )));
            }
        }
    }
    let previous = app
        .store
        .connection(tenant, &pending.connection)
        .await
        .map_err(unavailable)?;
    let connection = Connection {
        name: pending.connection.clone(),
        plugin: pending.plugin.clone(),
        user: pending.user.clone(),
        expires_at: tokens.expires_at,
        updated_at: now_ms(),
        provider: Some(provider.name.clone()),
        scopes: granted.clone(),
        account: account.clone(),
        status: crate::store::connections::ACTIVE.into(),
        status_detail: None,
        refreshed_at: None,
        version: 0,
    };
    // Google issues a refresh token on the first consent only: a later one
    // without it keeps the one we have.
    let kept_refresh = match (&tokens.refresh_token, &previous) {
        (None, Some(p)) if p.provider.as_deref() == Some(provider.name.as_str()) => app
            .store
            .refresh_grant(tenant, &pending.connection)
            .await
            .map_err(unavailable)?
            .map(|g| g.refresh_token),
        _ => None,
    };
    let new = NewTokens {
        access_token: tokens.access_token.as_bytes(),
        refresh_token: tokens
            .refresh_token
            .as_ref()
            .map(|t| t.as_bytes())
            .or(kept_refresh.as_ref().map(|r| r.expose())),
        expires_at: tokens.expires_at,
        scopes: &granted,
    };
    app.store
        .put_oauth_connection(tenant, &connection, &new)
        .await
        .map_err(unavailable)?;
    // A calendar provider's connection is watched and synced at once (a new
    // token ends any wait after earlier failures).
    app.store
        .calendar_connection_renewed(tenant, &pending.connection, crate::store::now_ms())
        .await
        .map_err(unavailable)?;
    app.engine.wake_calendar();
    audit(
        "connection.connected",
        serde_json::json!({
            "provider": provider.name,
            "plugin": pending.plugin,
            "user": pending.user,
            "scopes": granted,
            "account": account,
            "refresh_token": tokens.refresh_token.is_some(),
        }),
    )
    .await?;
    if let Some(previous) = previous {
        if previous.scopes != granted && previous.provider.is_some() {
            audit(
                "connection.scope_changed",
                serde_json::json!({ "before": previous.scopes, "after": granted }),
            )
            .await?;
        }
        if previous.status == NEEDS_RECONSENT {
            app.oauth
                .announce(
                    &app.store,
                    tenant,
                    &pending.connection,
                    &pending.user,
                    "connection.recovered",
                    Some("the person connected again"),
                )
                .await
                .map_err(unavailable)?;
        }
    }
    app.oauth.wake.notify_one();
    tracing::info!(%tenant, connection = %pending.connection, provider = %provider.name, "connection made");
    Ok(pending.connection)
}

/// Gives back a token we will not keep (best effort, in the background).
fn revoke_unused(app: &App, provider: &Provider, token: &Zeroizing<String>) {
    let oauth = app.oauth.clone();
    let store = app.store.clone();
    let provider = provider.clone();
    let token = token.clone();
    tokio::spawn(async move {
        if let Err(e) = oauth.revoke(&store, &provider, &token).await {
            tracing::warn!(provider = %provider.name, error = %e, "revoking an unused token failed");
        }
    });
}
