//! The admin API for tenants' presence webhooks.
//!
//! `POST /api/tenants/{tenant}/presence-webhooks` registers an endpoint and
//! answers with its signing secret, shown this once; `GET` lists endpoints
//! with their health; `DELETE .../{id}` removes one; `POST .../{id}/enable`
//! turns a disabled one back on.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, no_content_or_not_found};
use crate::App;
use crate::presence::webhooks_out::new_secret;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    pub url: String,
    /// Only these users' changes; all of the tenant's when absent.
    #[serde(default)]
    pub users: Option<Vec<String>>,
}

pub async fn create(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let new: NewEndpoint = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"url\": \"https://...\", \"users\": [\"...\"]}}: {e}"
        ))
    })?;
    let url = url::Url::parse(&new.url)
        .map_err(|e| ApiError::BadRequest(format!("url {:?}: {e}", new.url)))?;
    if !matches!(url.scheme(), "https" | "http")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(ApiError::BadRequest(
            "url must be http(s) without credentials in it".into(),
        ));
    }
    if new.users.as_ref().is_some_and(|u| u.is_empty()) {
        return Err(ApiError::BadRequest(
            "users, when given, must name at least one user".into(),
        ));
    }
    let id = format!("ep_{}", hex::encode(rand::random::<[u8; 8]>()));
    let (secret_text, key) = new_secret();
    app.store
        .create_presence_webhook(&tenant, &id, url.as_str(), new.users.as_deref(), &key)
        .await?;
    tracing::info!(%tenant, endpoint = %id, url = %url, "presence webhook registered");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "id": id,
            "url": url.as_str(),
            "users": new.users,
            "secret": secret_text,
        })),
    ))
}

pub async fn list(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let endpoints = app.store.presence_webhooks(&tenant).await?;
    Ok(Json(serde_json::json!({ "endpoints": endpoints })))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let found = app.store.delete_presence_webhook(&tenant, &id).await?;
    no_content_or_not_found(found, || missing(&tenant, &id))
}

pub async fn enable(
    State(app): State<Arc<App>>,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let found = app.store.enable_presence_webhook(&tenant, &id).await?;
    if found {
        app.engine.wake_webhooks();
    }
    no_content_or_not_found(found, || missing(&tenant, &id))
}

fn missing(tenant: &str, id: &str) -> String {
    format!("no presence webhook {id:?} in tenant {tenant:?}")
}
