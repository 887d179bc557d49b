//! The admin API for connections: a person's account at a provider.
//!
//! `GET /api/tenants/{tenant}/connections`, `GET|PUT|DELETE
//! /api/tenants/{tenant}/connections/{name}`, `POST .../{name}/refresh`.
//! Connections are made by the OAuth flow (`/api/oauth/{provider}/start`); `PUT`
//! seeds one with a bare access token instead (no refresh). A token goes in
//! and never comes back out, and only the plugin named on the connection can
//! use it. `DELETE` revokes the token at the provider (best effort) and
//! forgets it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::auth::Caller;
use super::error::{ApiError, no_content_or_not_found};
use super::openapi::ErrorBody;
use crate::App;
use crate::oauth::refresh::{Reason, RefreshError};
use crate::plugins::World;
use crate::store::connections::{Connection, valid_connection_name};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutConnection {
    /// The provider plugin that acts through this connection.
    pub plugin: String,
    /// The person it belongs to, as presence knows them.
    pub user: String,
    #[schema(value_type = String)]
    pub access_token: Zeroizing<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionList {
    pub connections: Vec<Connection>,
}

#[utoipa::path(
    get,
    path = "/api/tenants/{tenant}/connections",
    operation_id = "list_connections",
    tag = "connections",
    params(("tenant" = String, Path, description = "The tenant")),
    security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "The tenant's connections, without their tokens", body = ConnectionList)),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
) -> Result<Json<ConnectionList>, ApiError> {
    let connections = app.store.connections(&tenant, None).await?;
    Ok(Json(ConnectionList { connections }))
}

#[utoipa::path(
    get,
    path = "/api/tenants/{tenant}/connections/{name}",
    operation_id = "get_connection",
    tag = "connections",
    params(("tenant" = String, Path, description = "The tenant"), ("name" = String, Path, description = "The connection's name (default `<plugin>:<user>`)")),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The connection, without its token", body = Connection),
        (status = 404, description = "No such connection (or tenant)", body = ErrorBody),
    ),
)]
pub async fn get(
    State(app): State<Arc<App>>,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Json<Connection>, ApiError> {
    app.store
        .connection(&tenant, &name)
        .await?
        .map(Json)
        .ok_or_else(|| missing(&tenant, &name))
}

fn missing(tenant: &str, name: &str) -> ApiError {
    ApiError::NotFound(format!("no connection {name:?} in tenant {tenant:?}"))
}

#[utoipa::path(
    put,
    path = "/api/tenants/{tenant}/connections/{name}",
    operation_id = "put_connection",
    tag = "connections",
    params(("tenant" = String, Path, description = "The tenant"), ("name" = String, Path, description = "The connection's name (default `<plugin>:<user>`)")),
    request_body = PutConnection,
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The connection, seeded with the token (which never comes back out)", body = Connection),
        (status = 400, description = "A malformed body or name, or no provider plugin of that name (or an invalid tenant name)", body = ErrorBody),
    ),
)]
pub async fn put(
    State(app): State<Arc<App>>,
    Path((tenant, name)): Path<(String, String)>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Json<Connection>, ApiError> {
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
    let connection = Connection::seeded(&name, &request.plugin, &request.user, request.expires_at);
    app.store
        .put_connection(&tenant, &connection, request.access_token.as_bytes())
        .await?;
    app.store
        .audit(
            &tenant,
            &caller.actor(),
            "connection.seeded",
            Some(&connection.name),
            Some(serde_json::json!({ "plugin": connection.plugin, "user": connection.user })),
        )
        .await?;
    tracing::info!(%tenant, connection = %connection.name, plugin = %connection.plugin, user = %connection.user, "connection stored");
    // A calendar provider's connection is watched and synced at once (a new
    // token ends any wait after earlier failures).
    app.store
        .calendar_connection_renewed(&tenant, &connection.name, crate::store::now_ms())
        .await?;
    app.engine.wake_calendar();
    let stored = app.store.connection(&tenant, &connection.name).await?;
    Ok(Json(stored.unwrap_or(connection)))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// Refresh only if the token is still this version (what a caller that saw
    /// it refused passes, so that concurrent callers make one refresh).
    #[serde(default)]
    pub if_version: Option<i64>,
}

/// `POST .../connections/{name}/refresh`: refreshes the token now (or makes
/// sure it is newer than `if_version`), and answers with the connection.
#[utoipa::path(
    post,
    path = "/api/tenants/{tenant}/connections/{name}/refresh",
    operation_id = "refresh_connection",
    tag = "connections",
    params(("tenant" = String, Path, description = "The tenant"), ("name" = String, Path, description = "The connection's name (default `<plugin>:<user>`)")),
    request_body(content = Option<RefreshRequest>, description = "Optional: refresh only if the token is still this version"),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The connection after the refresh", body = Connection),
        (status = 400, description = "A malformed body (or an invalid tenant name)", body = ErrorBody),
        (status = 404, description = "No such connection (or tenant)", body = ErrorBody),
        (status = 409, description = "The connection cannot be refreshed (a seeded token) or needs the person's consent again", body = ErrorBody),
        (status = 502, description = "The provider's token endpoint failed", body = ErrorBody),
    ),
)]
pub async fn refresh(
    State(app): State<Arc<App>>,
    Path((tenant, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Connection>, ApiError> {
    let request: RefreshRequest = if body.is_empty() {
        RefreshRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("expected {{\"if_version\": 3}}: {e}")))?
    };
    let result = match request.if_version {
        Some(version) => {
            app.oauth
                .refresh(&app.store, &tenant, &name, version, Reason::Requested)
                .await
        }
        None => {
            app.oauth
                .refresh_current(&app.store, &tenant, &name, Reason::Requested)
                .await
        }
    };
    match result {
        Ok(_) => {}
        Err(RefreshError::Gone(_)) => return Err(missing(&tenant, &name)),
        Err(e @ (RefreshError::NotRefreshable(_) | RefreshError::NeedsReconsent { .. })) => {
            return Err(ApiError::Conflict(e.to_string()));
        }
        Err(RefreshError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(ApiError::PluginFailed(e.to_string())),
    }
    get(State(app), Path((tenant, name))).await
}

#[utoipa::path(
    delete,
    path = "/api/tenants/{tenant}/connections/{name}",
    operation_id = "delete_connection",
    tag = "connections",
    params(("tenant" = String, Path, description = "The tenant"), ("name" = String, Path, description = "The connection's name (default `<plugin>:<user>`)")),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 204, description = "Revoked at the provider (best effort) and forgotten"),
        (status = 404, description = "No such connection (or tenant)", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    Path((tenant, name)): Path<(String, String)>,
    Extension(caller): Extension<Caller>,
) -> Result<StatusCode, ApiError> {
    let Some(connection) = app.store.connection(&tenant, &name).await? else {
        return Err(missing(&tenant, &name));
    };
    // A calendar's push subscriptions are stopped while the token still works
    // (best effort: they lapse by themselves).
    if let Some(plugin) = app.registry.get(&connection.plugin)
        && plugin.pre.is_calendar()
    {
        match app
            .runtime
            .unwatch(&plugin.pre, &plugin.grants, &tenant, &name)
            .await
        {
            Ok(Ok(())) => {
                tracing::info!(%tenant, connection = %name, "calendar subscriptions stopped")
            }
            Ok(Err(fault)) => {
                tracing::warn!(%tenant, connection = %name, error = %fault, "stopping calendar subscriptions failed; they lapse by themselves")
            }
            Err(e) => {
                tracing::warn!(%tenant, connection = %name, error = %e, "stopping calendar subscriptions failed; they lapse by themselves")
            }
        }
    }
    // Tell the provider first, while the token is still here; the connection
    // goes whatever it answers.
    // RFC 7009: revoking the refresh token ends the whole grant (Google);
    // Slack's auth.revoke takes the access token. A token that cannot be read
    // (a key no longer configured) does not keep the connection alive here.
    let mut revoked = None;
    if let Some(provider) = connection
        .provider
        .as_deref()
        .and_then(|p| app.oauth.provider(p))
    {
        let token = match provider.style {
            crate::oauth::TokenStyle::Standard => app
                .store
                .refresh_grant(&tenant, &name)
                .await
                .ok()
                .flatten()
                .map(|g| g.refresh_token),
            crate::oauth::TokenStyle::Slack => None,
        };
        let token = match token {
            Some(t) => Some(t),
            None => app
                .store
                .connection_access_token(&tenant, &name)
                .await
                .ok()
                .flatten(),
        };
        revoked = Some(match token {
            Some(token) => {
                let token = String::from_utf8_lossy(token.expose()).into_owned();
                match app.oauth.revoke(&app.store, provider, &token).await {
                    Ok(()) => "revoked at the provider".to_string(),
                    Err(e) => format!("revocation failed: {e}"),
                }
            }
            None => "skipped: the token could not be read".to_string(),
        });
    }
    let found = app.store.delete_connection(&tenant, &name).await?;
    app.health.forget_connection(&tenant, &name);
    // Its synced events go with it.
    app.engine.wake_calendar();
    app.store
        .audit(
            &tenant,
            &caller.actor(),
            "connection.revoked",
            Some(&name),
            Some(serde_json::json!({ "provider": connection.provider, "provider_revocation": revoked })),
        )
        .await?;
    no_content_or_not_found(found, || {
        format!("no connection {name:?} in tenant {tenant:?}")
    })
}
