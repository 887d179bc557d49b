//! Who is calling: the operator (the admin token) or a tenant (one of its API keys).
//!
//! Every API route except the providers' webhooks, the OAuth callback and the
//! liveness probe goes through [`require_caller`]. A tenant key acts only for
//! its own tenant: naming another one, in a route or in `X-Presence-Tenant`,
//! is refused before any handler runs. Routes under `/api/tenants/{tenant}/`
//! also go through [`tenant_route`], which checks that the tenant exists and
//! writes each use to the tenant's audit trail.

use std::sync::Arc;

use axum::extract::{RawPathParams, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::App;
use crate::store::audit::Actor;
use crate::store::tenants::{KeyRefusal, key_id_of};
use crate::webhooks::{DEFAULT_TENANT, valid_tenant};

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator: any tenant, and the operator-only routes.
    Operator,
    /// A tenant API key: that tenant only.
    Tenant { tenant: String, key_id: String },
}

impl Caller {
    pub fn actor(&self) -> Actor {
        match self {
            Caller::Operator => Actor::Operator,
            Caller::Tenant { key_id, .. } => Actor::Key(key_id.clone()),
        }
    }

    /// The tenant this request acts for: the one named (or `default`) for the
    /// operator; a key's own, which it may also name.
    pub fn tenant_for(&self, named: Option<&str>) -> Result<String, ApiError> {
        if let Some(name) = named
            && !valid_tenant(name)
        {
            return Err(ApiError::BadRequest(format!(
                "tenant {name:?} is not a valid tenant name"
            )));
        }
        match self {
            Caller::Operator => Ok(named.unwrap_or(DEFAULT_TENANT).to_string()),
            Caller::Tenant { tenant, .. } => match named {
                Some(name) if name != tenant => Err(foreign(tenant, name)),
                _ => Ok(tenant.clone()),
            },
        }
    }

    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Tenant { .. } => Err(ApiError::Forbidden(
                "only the operator (the admin token) may do this".into(),
            )),
        }
    }
}

fn foreign(own: &str, named: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "this API key belongs to tenant {own:?}; it cannot act for tenant {named:?}"
    ))
}

/// The presented credential: `Bearer <key>`, or, where `basic` allows it,
/// the password of HTTP Basic. Basic is accepted by the dashboard alone: a
/// browser re-sends Basic credentials on its own, so accepting them on the
/// API would let any web page the operator visits make API calls (CSRF);
/// a bearer token is never sent unless a program means to.
fn presented(headers: &HeaderMap, basic: bool) -> Option<zeroize::Zeroizing<String>> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(zeroize::Zeroizing::new(token.trim().to_string()));
    }
    if !basic {
        return None;
    }
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.strip_prefix("Basic ")?.trim())
        .ok()?;
    let pair = zeroize::Zeroizing::new(String::from_utf8(decoded).ok()?);
    let (_, password) = pair.split_once(':')?;
    Some(zeroize::Zeroizing::new(password.to_string()))
}

/// Who presented the request's `Authorization: Bearer` credential.
pub async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    authenticate_with(app, headers, false).await
}

/// The same, also taking the HTTP Basic password: for the dashboard only.
pub async fn authenticate_browser(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    authenticate_with(app, headers, true).await
}

async fn authenticate_with(
    app: &App,
    headers: &HeaderMap,
    basic: bool,
) -> Result<Caller, ApiError> {
    let Some(presented) = presented(headers, basic).filter(|p| !p.is_empty()) else {
        return Err(ApiError::Unauthorized(
            "an API key is required (Authorization: Bearer <key>)".into(),
        ));
    };
    let presented = presented.as_str();
    if key_id_of(presented).is_some() {
        return match app.store.check_api_key(presented).await? {
            Ok(grant) => {
                app.note_key_use(&grant.key_id).await;
                Ok(Caller::Tenant {
                    tenant: grant.tenant,
                    key_id: grant.key_id,
                })
            }
            Err(KeyRefusal::Unknown) => Err(ApiError::Unauthorized("unknown API key".into())),
            Err(KeyRefusal::Revoked) => {
                Err(ApiError::Unauthorized("this API key was revoked".into()))
            }
            Err(KeyRefusal::Expired) => Err(ApiError::Unauthorized(
                "this API key has expired (it was rotated or issued with an expiry)".into(),
            )),
        };
    }
    match app.config.admin_token.as_deref().filter(|t| !t.is_empty()) {
        Some(expected) if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) => {
            Ok(Caller::Operator)
        }
        _ => Err(ApiError::Unauthorized(
            "a valid API key or admin token is required (Authorization: Bearer <key>)".into(),
        )),
    }
}

/// Middleware: authenticates the caller and hands it to the handler as an extension.
pub async fn require_caller(
    State(app): State<Arc<App>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = authenticate(&app, request.headers()).await?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// Middleware of `/api/tenants/{tenant}/...`: the caller may act for the
/// tenant, the tenant exists, and the use is audited (method, path, status).
pub async fn tenant_route(
    State(app): State<Arc<App>>,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("tenant route without a caller".into()))?;
    let named = params
        .iter()
        .find(|(k, _)| *k == "tenant")
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| ApiError::Internal("tenant route without {tenant}".into()))?;
    let tenant = caller.tenant_for(Some(&named))?;
    if !app.tenant_exists(&tenant).await? {
        return Err(ApiError::NotFound(format!(
            "no tenant {tenant:?}: create it with POST /api/tenants or `presence-host tenant create`"
        )));
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let detail = serde_json::json!({
        "method": method.as_str(),
        "path": path,
        "status": response.status().as_u16(),
    });
    if let Err(e) = app
        .store
        .audit(
            &tenant,
            &caller.actor(),
            "api.request",
            Some(&path),
            Some(detail),
        )
        .await
    {
        tracing::error!(error = %e, %tenant, "could not audit an admin request");
    }
    Ok(response)
}
