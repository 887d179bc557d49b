//! The admin API of tenants: the tenants themselves, their API keys, their
//! audit trail and their classifier chains.
//!
//! - `POST /api/tenants`, `GET /api/tenants`: create (operator) and list
//!   (the operator sees all, a key its own).
//! - `POST /api/tenants/{tenant}/api-keys` (operator): a new key, shown once;
//!   `GET` lists keys without secrets; `DELETE .../{id}` revokes;
//!   `POST .../{id}/rotate` issues a replacement and lets the old key live for
//!   `grace_seconds` (default 3600) so clients can switch without downtime.
//! - `GET /api/tenants/{tenant}/audit?after=&limit=&action=`: the audit trail, oldest first.
//! - `GET|PUT|DELETE /api/tenants/{tenant}/classifiers`. A chain set here takes
//!   precedence over the configuration file; deleting it falls back to the
//!   file, then to the default chain.
//!
//! Routes under `/api/tenants/{tenant}/` are checked by `auth::tenant_route`
//! before these handlers run.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::{ApiError, no_content_or_not_found};
use super::openapi::ErrorBody;
use crate::App;
use crate::plugins::World;
use crate::store::audit::AuditEvent;
use crate::store::tenants::{ApiKey, IssuedKey, Tenant};

/// Where a tenant's chain comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChainSource {
    Api,
    Config,
    Default,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantChain {
    pub tenant: String,
    pub classifiers: Vec<String>,
    pub source: ChainSource,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetChain {
    pub classifiers: Vec<String>,
}

/// The chain `tenant` classifies with: the admin API's, else the file's, else the default.
pub async fn chain_for(app: &App, tenant: &str) -> Result<TenantChain, ApiError> {
    if let Some(classifiers) = app.store.tenant_classifiers(tenant).await? {
        return Ok(TenantChain {
            tenant: tenant.to_string(),
            classifiers,
            source: ChainSource::Api,
        });
    }
    let source = match app.config.tenants.get(tenant) {
        Some(t) if !t.classifiers.is_empty() => ChainSource::Config,
        _ => ChainSource::Default,
    };
    Ok(TenantChain {
        tenant: tenant.to_string(),
        classifiers: app.config.classifiers_for(tenant),
        source,
    })
}

#[utoipa::path(
    get,
    path = "/api/tenants/{tenant}/classifiers",
    tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant")),
    security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "The tenant's classifier chain and where it comes from", body = TenantChain)),
)]
pub async fn get_chain(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
) -> Result<Json<TenantChain>, ApiError> {
    Ok(Json(chain_for(&app, &tenant).await?))
}

#[utoipa::path(
    put,
    path = "/api/tenants/{tenant}/classifiers",
    tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant")),
    request_body = SetChain,
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The chain, set", body = TenantChain),
        (status = 400, description = "A malformed body, an empty chain, or a name that is not a loaded classifier (or an invalid tenant name)", body = ErrorBody),
    ),
)]
pub async fn put_chain(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<TenantChain>, ApiError> {
    let SetChain { classifiers } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"classifiers\": [\"plugin\", ...]}}: {e}"
        ))
    })?;
    if classifiers.is_empty() {
        return Err(ApiError::BadRequest(
            "a chain needs at least one classifier; DELETE restores the default".into(),
        ));
    }
    for name in &classifiers {
        match app.registry.get(name) {
            Some(p) if p.world() == World::Classifier => {}
            Some(_) => {
                return Err(ApiError::BadRequest(format!(
                    "plugin {name:?} is not a classifier"
                )));
            }
            None => {
                return Err(ApiError::BadRequest(format!(
                    "no classifier plugin named {name:?} is loaded"
                )));
            }
        }
    }
    app.store
        .set_tenant_classifiers(&tenant, Some(&classifiers))
        .await?;
    tracing::info!(%tenant, ?classifiers, "tenant classifier chain set");
    Ok(Json(chain_for(&app, &tenant).await?))
}

#[utoipa::path(
    delete,
    path = "/api/tenants/{tenant}/classifiers",
    tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant")),
    security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "The chain the tenant falls back to (the configuration file's, else the default)", body = TenantChain)),
)]
pub async fn delete_chain(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
) -> Result<Json<TenantChain>, ApiError> {
    app.store.set_tenant_classifiers(&tenant, None).await?;
    Ok(Json(chain_for(&app, &tenant).await?))
}

pub(crate) fn tenant_name(tenant: &str) -> Result<(), ApiError> {
    if crate::webhooks::valid_tenant(tenant) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "tenant {tenant:?} is not a valid tenant name (letters, digits, '-' and '_', at most 64)"
        )))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `POST /api/tenants` (operator): 201 with the tenant, 409 if it exists.
#[utoipa::path(
    post,
    path = "/api/tenants",
    tag = "tenants",
    request_body = NewTenant,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The tenant, created", body = Tenant),
        (status = 400, description = "A malformed body or an invalid tenant name", body = ErrorBody),
        (status = 403, description = "Only the operator creates tenants", body = ErrorBody),
        (status = 409, description = "The tenant exists", body = ErrorBody),
    ),
)]
pub async fn create_tenant(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    caller.require_operator()?;
    let new: NewTenant = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"name\": \"acme\", \"display_name\": \"Acme Weddings\"}}: {e}"
        ))
    })?;
    tenant_name(&new.name)?;
    if !app
        .store
        .create_tenant(&new.name, new.display_name.as_deref())
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "tenant {:?} already exists",
            new.name
        )));
    }
    app.store
        .audit(
            &new.name,
            &caller.actor(),
            "tenant.created",
            Some(&new.name),
            None,
        )
        .await?;
    tracing::info!(tenant = %new.name, "tenant created");
    let tenant = app
        .store
        .tenant(&new.name)
        .await?
        .ok_or_else(|| ApiError::Internal("the tenant just created is missing".into()))?;
    Ok((StatusCode::CREATED, Json(tenant)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantList {
    pub tenants: Vec<Tenant>,
}

#[utoipa::path(
    get,
    path = "/api/tenants",
    tag = "tenants",
    security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "Every tenant for the operator; its own for a tenant key", body = TenantList)),
)]
pub async fn list_tenants(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<TenantList>, ApiError> {
    let tenants = match &caller {
        Caller::Operator => app.store.tenants().await?,
        Caller::Tenant { tenant, .. } => app.store.tenant(tenant).await?.into_iter().collect(),
    };
    Ok(Json(TenantList { tenants }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[serde(default)]
    pub label: Option<String>,
    /// The key stops working by itself after this many days.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

fn parse_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    example: &str,
) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("expected {example}: {e}")))
}

/// `POST /api/tenants/{tenant}/api-keys` (operator): 201 with the key, shown this once.
#[utoipa::path(
    post,
    path = "/api/tenants/{tenant}/api-keys",
    tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant")),
    request_body(content = Option<NewKey>, description = "Optional: an empty body issues a key labelled `api key` that does not expire"),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The key, with its secret: shown this once", body = IssuedKey),
        (status = 400, description = "A malformed body or label (or an invalid tenant name)", body = ErrorBody),
    ),
)]
pub async fn issue_key(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    caller.require_operator()?;
    let new: NewKey =
        parse_or_default(&body, r#"{"label": "planner app", "expires_in_days": 90}"#)?;
    let label = new.label.unwrap_or_else(|| "api key".into());
    if label.len() > 200 || label.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "label must be at most 200 printable characters".into(),
        ));
    }
    let expires_at = new
        .expires_in_days
        .map(|d| crate::store::now_ms() + i64::from(d) * 86_400_000);
    let issued = app.store.issue_api_key(&tenant, &label, expires_at).await?;
    app.store
        .audit(
            &tenant,
            &caller.actor(),
            "api_key.created",
            Some(&issued.meta.id),
            Some(serde_json::json!({ "label": label, "expires_at": expires_at })),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKey>,
}

#[utoipa::path(
    get,
    path = "/api/tenants/{tenant}/api-keys",
    tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant")),
    security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "The tenant's keys, without their secrets", body = ApiKeyList)),
)]
pub async fn list_keys(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let api_keys: Vec<ApiKey> = app.store.api_keys(&tenant).await?;
    Ok(Json(ApiKeyList { api_keys }))
}

/// The operator, or the tenant itself (a leaked key can be killed by its owner).
#[utoipa::path(
    delete,
    path = "/api/tenants/{tenant}/api-keys/{id}",
    tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant"), ("id" = String, Path, description = "The key's id (the 12 hex digits after `phk_`)")),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 204, description = "Revoked: the key stops working at once"),
        (status = 404, description = "No live key with this id in the tenant (or no such tenant)", body = ErrorBody),
    ),
)]
pub async fn revoke_key(
    State(app): State<Arc<App>>,
    Path((tenant, id)): Path<(String, String)>,
    Extension(caller): Extension<Caller>,
) -> Result<StatusCode, ApiError> {
    let revoked = app.store.revoke_api_key(&tenant, &id).await?;
    if revoked {
        app.store
            .audit(&tenant, &caller.actor(), "api_key.revoked", Some(&id), None)
            .await?;
    }
    no_content_or_not_found(revoked, || {
        format!("no live API key {id:?} in tenant {tenant:?}")
    })
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the old key keeps working, in seconds. Default 3600.
    #[serde(default)]
    pub grace_seconds: Option<u32>,
}

#[utoipa::path(
    post,
    path = "/api/tenants/{tenant}/api-keys/{id}/rotate",
    tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant"), ("id" = String, Path, description = "The key's id")),
    request_body(content = Option<Rotate>, description = "Optional: the old key's grace period (default an hour)"),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The replacement key, with its secret: shown this once", body = IssuedKey),
        (status = 400, description = "A malformed body (or an invalid tenant name)", body = ErrorBody),
        (status = 404, description = "No live key with this id in the tenant (or no such tenant)", body = ErrorBody),
    ),
)]
pub async fn rotate_key(
    State(app): State<Arc<App>>,
    Path((tenant, id)): Path<(String, String)>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    caller.require_operator()?;
    let rotate: Rotate = parse_or_default(&body, r#"{"grace_seconds": 3600}"#)?;
    let grace_ms = i64::from(rotate.grace_seconds.unwrap_or(3600)) * 1000;
    let issued = app
        .store
        .rotate_api_key(&tenant, &id, grace_ms)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no live API key {id:?} in tenant {tenant:?} (revoked and replaced keys are not rotated)"
            ))
        })?;
    app.store
        .audit(
            &tenant,
            &caller.actor(),
            "api_key.rotated",
            Some(&id),
            Some(serde_json::json!({ "replaced_by": issued.meta.id, "grace_ms": grace_ms })),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Events after this `seq` (0: from the start).
    #[serde(default)]
    pub after: i64,
    /// At most this many (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only actions starting with this (`connection.`, `api_key.rotated`).
    #[serde(default)]
    pub action: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `after` for the next page.
    pub next_after: i64,
}

#[utoipa::path(
    get,
    path = "/api/tenants/{tenant}/audit",
    operation_id = "list_audit_events",
    tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant"), AuditQuery),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The tenant's audit trail, oldest first", body = AuditPage),
        (status = 400, description = "A query the extractor refuses (plain text), or an invalid tenant name", content(
            (ErrorBody = "application/json"),
            (String = "text/plain"),
        )),
    ),
)]
pub async fn audit(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let events = app
        .store
        .audit_events(&tenant, q.after, q.action.as_deref(), limit)
        .await?;
    let next_after = events.last().map_or(q.after, |e| e.seq);
    Ok(Json(AuditPage { events, next_after }))
}
