//! The admin API for connections: a person's account at a provider.
//!
//! `GET /api/tenants/{tenant}/connections`, `PUT|DELETE
//! /api/tenants/{tenant}/connections/{name}`. Until the OAuth flows land, this
//! is how an operator seeds an access token; the token goes in and never comes
//! back out, and only the plugin named on the connection can use it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::error::{ApiError, no_content_or_not_found};
use super::tenants::admin_for;
use crate::App;
use crate::plugins::World;
use crate::store::connections::{Connection, valid_connection_name};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutConnection {
    /// The provider plugin that acts through this connection.
    pub plugin: String,
    /// The person it belongs to, as presence knows them.
    pub user: String,
    pub access_token: Zeroizing<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
}

pub async fn list(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin_for(&app, &headers, &tenant)?;
    let connections = app.store.connections(&tenant, None).await?;
    Ok(Json(serde_json::json!({ "connections": connections })))
}

pub async fn put(
    State(app): State<Arc<App>>,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Connection>, ApiError> {
    admin_for(&app, &headers, &tenant)?;
    if !valid_connection_name(&name) {
        return Err(ApiError::BadRequest(format!(
            "connection name {name:?} must be 1-200 of A-Z a-z 0-9 - _ . : @ +"
        )));
    }
    let request: PutConnection = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"plugin\": \"slack\", \"user\": \"U123\", \"access_token\": \"...\", \"expires_at\": null}}: {e}"
        ))
    })?;
    if request.user.is_empty() || request.access_token.is_empty() {
        return Err(ApiError::BadRequest(
            "user and access_token must not be empty".into(),
        ));
    }
    if !app
        .registry
        .get(&request.plugin)
        .is_some_and(|p| p.world() == World::Provider)
    {
        return Err(ApiError::BadRequest(format!(
            "no provider plugin named {:?} is loaded",
            request.plugin
        )));
    }
    let connection = Connection {
        name,
        plugin: request.plugin,
        user: request.user,
        expires_at: request.expires_at,
        updated_at: crate::store::now_ms(),
    };
    app.store
        .put_connection(&tenant, &connection, request.access_token.as_bytes())
        .await?;
    tracing::info!(%tenant, connection = %connection.name, plugin = %connection.plugin, user = %connection.user, "connection stored");
    Ok(Json(connection))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    admin_for(&app, &headers, &tenant)?;
    let found = app.store.delete_connection(&tenant, &name).await?;
    no_content_or_not_found(found, || {
        format!("no connection {name:?} in tenant {tenant:?}")
    })
}
