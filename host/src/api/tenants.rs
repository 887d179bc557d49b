//! The admin API for tenants' classifier chains, behind the operator's admin token.
//!
//! `GET|PUT|DELETE /api/tenants/{tenant}/classifiers`. A chain set here takes
//! precedence over the configuration file; deleting it falls back to the file,
//! then to the default chain.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::App;
use crate::plugins::World;

/// Where a tenant's chain comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainSource {
    Api,
    Config,
    Default,
}

#[derive(Debug, Serialize)]
pub struct TenantChain {
    pub tenant: String,
    pub classifiers: Vec<String>,
    pub source: ChainSource,
}

#[derive(Debug, Deserialize)]
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

pub(crate) fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = app.config.admin_token.as_deref().filter(|t| !t.is_empty()) else {
        return Err(ApiError::Forbidden(
            "the admin API is off: set admin_token (or PRESENCE_ADMIN_TOKEN) to enable it".into(),
        ));
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "a valid admin token is required (Authorization: Bearer <token>)".into(),
        ))
    }
}

/// The admin token, and a valid tenant name in the route: every admin route's checks.
pub(crate) fn admin_for(app: &App, headers: &HeaderMap, tenant: &str) -> Result<(), ApiError> {
    authorize(app, headers)?;
    tenant_name(tenant)
}

pub(crate) fn tenant_name(tenant: &str) -> Result<(), ApiError> {
    if crate::webhooks::valid_tenant(tenant) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "tenant {tenant:?} is not a valid tenant name"
        )))
    }
}

pub async fn get_chain(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<TenantChain>, ApiError> {
    admin_for(&app, &headers, &tenant)?;
    Ok(Json(chain_for(&app, &tenant).await?))
}

pub async fn put_chain(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<TenantChain>, ApiError> {
    admin_for(&app, &headers, &tenant)?;
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

pub async fn delete_chain(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<TenantChain>, ApiError> {
    admin_for(&app, &headers, &tenant)?;
    app.store.set_tenant_classifiers(&tenant, None).await?;
    Ok(Json(chain_for(&app, &tenant).await?))
}
