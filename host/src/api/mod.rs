//! The HTTP API: routes and the small read handlers. Webhook ingress lives in `webhooks`.

pub mod auth;
pub mod connections;
pub mod error;
pub mod health;
pub mod notifications;
pub mod presence;
pub mod presence_webhooks;
pub mod tenants;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router, middleware};
use serde::Serialize;

use crate::App;
use crate::{oauth, webhooks};

pub fn router(app: Arc<App>) -> Router {
    let webhook_limit = app.config.max_webhook_body_bytes;
    // The providers' side: authenticated by the providers' own signatures.
    let webhook_routes = Router::new()
        .route("/api/webhooks/{plugin}", post(webhooks::receive_default))
        .route(
            "/api/webhooks/{plugin}/{tenant}",
            post(webhooks::receive_for_tenant),
        )
        .layer(DefaultBodyLimit::max(webhook_limit));
    // A tenant's own resources: the caller must be that tenant or the operator.
    let tenant_routes = Router::new()
        .route(
            "/api/tenants/{tenant}/api-keys",
            get(tenants::list_keys).post(tenants::issue_key),
        )
        .route(
            "/api/tenants/{tenant}/api-keys/{id}",
            delete(tenants::revoke_key),
        )
        .route(
            "/api/tenants/{tenant}/api-keys/{id}/rotate",
            post(tenants::rotate_key),
        )
        .route("/api/tenants/{tenant}/audit", get(tenants::audit))
        .route(
            "/api/tenants/{tenant}/classifiers",
            get(tenants::get_chain)
                .put(tenants::put_chain)
                .delete(tenants::delete_chain),
        )
        .route("/api/tenants/{tenant}/connections", get(connections::list))
        .route(
            "/api/tenants/{tenant}/connections/{name}",
            get(connections::get)
                .put(connections::put)
                .delete(connections::delete),
        )
        .route(
            "/api/tenants/{tenant}/connections/{name}/refresh",
            post(connections::refresh),
        )
        .route(
            "/api/tenants/{tenant}/presence-webhooks",
            get(presence_webhooks::list).post(presence_webhooks::create),
        )
        .route(
            "/api/tenants/{tenant}/presence-webhooks/{id}",
            delete(presence_webhooks::delete),
        )
        .route(
            "/api/tenants/{tenant}/presence-webhooks/{id}/enable",
            post(presence_webhooks::enable),
        )
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::tenant_route,
        ));
    // Everything else needs a key (or the admin token).
    let api_routes = Router::new()
        .route(
            "/api/tenants",
            get(tenants::list_tenants).post(tenants::create_tenant),
        )
        .route("/api/presence/stream", get(crate::presence::stream::stream))
        .route(
            "/api/presence/{user}",
            get(presence::get_presence)
                .put(presence::put_manual)
                .delete(presence::delete_manual),
        )
        .route("/api/users/{user}", put(presence::put_user))
        .route("/api/plugins", get(list_plugins))
        .route("/api/integrations/health", get(health::integrations))
        .route("/api/notifications", post(notifications::submit))
        .route("/api/notifications/{id}", get(notifications::get))
        .route("/api/notifications/{id}/ack", post(notifications::ack))
        .route("/metrics", get(health::metrics))
        .route("/api/oauth/{provider}/start", get(oauth::flow::start))
        .merge(tenant_routes)
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::require_caller,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(health::readyz))
        // The operator's page; it authenticates itself (HTTP Basic for browsers).
        .route("/dashboard", get(health::dashboard))
        // The person's browser, back from the provider: the state is the credential.
        .route("/api/oauth/{provider}/callback", get(oauth::flow::callback))
        .merge(api_routes)
        .merge(webhook_routes)
        .with_state(app)
}

#[derive(Debug, Serialize)]
pub struct PluginSummary {
    pub name: String,
    pub version: String,
    pub world: String,
    pub wit: String,
    /// Where it was loaded from (shown to the operator only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dir: String,
    pub component_sha256: String,
}

#[derive(Debug, Serialize)]
struct PluginList {
    plugins: Vec<PluginSummary>,
    /// Plugins that failed to load: the operator's concern, not shown to tenants.
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<Vec<crate::plugins::registry::LoadFailure>>,
}

pub fn summarize(p: &crate::plugins::LoadedPlugin) -> PluginSummary {
    PluginSummary {
        name: p.name().to_string(),
        version: p.manifest.version.to_string(),
        world: p.world().to_string(),
        wit: p.manifest.wit.to_string(),
        dir: p.dir.display().to_string(),
        component_sha256: p.component_sha256.clone(),
    }
}

/// Every tenant can use every loaded plugin; only the operator sees where
/// they live on disk and which failed to load.
async fn list_plugins(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<auth::Caller>,
) -> Json<PluginList> {
    let operator = caller == auth::Caller::Operator;
    Json(PluginList {
        plugins: app
            .registry
            .all()
            .values()
            .map(|p| {
                let mut summary = summarize(p);
                if !operator {
                    summary.dir = String::new();
                }
                summary
            })
            .collect(),
        failures: operator.then(|| app.registry.failures().to_vec()),
    })
}
