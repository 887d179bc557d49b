//! The HTTP API: routes and the small read handlers. Webhook ingress lives in `webhooks`.

pub mod connections;
pub mod error;
pub mod presence;
pub mod presence_webhooks;
pub mod tenants;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::App;
use crate::webhooks;

pub fn router(app: Arc<App>) -> Router {
    let webhook_limit = app.config.max_webhook_body_bytes;
    let webhook_routes = Router::new()
        .route("/api/webhooks/{plugin}", post(webhooks::receive_default))
        .route(
            "/api/webhooks/{plugin}/{tenant}",
            post(webhooks::receive_for_tenant),
        )
        .layer(DefaultBodyLimit::max(webhook_limit));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/presence/stream", get(crate::presence::stream::stream))
        .route(
            "/api/presence/{user}",
            get(presence::get_presence)
                .put(presence::put_manual)
                .delete(presence::delete_manual),
        )
        .route("/api/users/{user}", axum::routing::put(presence::put_user))
        .route("/api/plugins", get(list_plugins))
        .route(
            "/api/tenants/{tenant}/classifiers",
            get(tenants::get_chain)
                .put(tenants::put_chain)
                .delete(tenants::delete_chain),
        )
        .route("/api/tenants/{tenant}/connections", get(connections::list))
        .route(
            "/api/tenants/{tenant}/presence-webhooks",
            get(presence_webhooks::list).post(presence_webhooks::create),
        )
        .route(
            "/api/tenants/{tenant}/presence-webhooks/{id}",
            axum::routing::delete(presence_webhooks::delete),
        )
        .route(
            "/api/tenants/{tenant}/presence-webhooks/{id}/enable",
            post(presence_webhooks::enable),
        )
        .route(
            "/api/tenants/{tenant}/connections/{name}",
            axum::routing::put(connections::put).delete(connections::delete),
        )
        .merge(webhook_routes)
        .with_state(app)
}

#[derive(Debug, Serialize)]
pub struct PluginSummary {
    pub name: String,
    pub version: String,
    pub world: String,
    pub wit: String,
    pub dir: String,
    pub component_sha256: String,
}

#[derive(Debug, Serialize)]
struct PluginList {
    plugins: Vec<PluginSummary>,
    failures: Vec<crate::plugins::registry::LoadFailure>,
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

async fn list_plugins(State(app): State<Arc<App>>) -> Json<PluginList> {
    Json(PluginList {
        plugins: app.registry.all().values().map(|p| summarize(p)).collect(),
        failures: app.registry.failures().to_vec(),
    })
}
