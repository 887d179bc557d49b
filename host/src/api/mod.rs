//! The HTTP API: routes and the small read handlers. Webhook ingress lives in `webhooks`.

pub mod auth;
pub mod calendars;
pub mod connections;
pub mod error;
pub mod health;
pub mod notifications;
pub mod openapi;
pub mod presence;
pub mod presence_webhooks;
pub mod tenants;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json, Router, middleware};
use serde::Serialize;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::App;
use crate::{oauth, webhooks};

/// The routes, and the OpenAPI description built from the same calls (served
/// at `/api/openapi.json`).
pub fn router(app: Arc<App>) -> Router {
    let webhook_limit = app.config.max_webhook_body_bytes;
    // The providers' side: authenticated by the providers' own signatures.
    let webhook_routes = OpenApiRouter::new()
        .routes(routes!(webhooks::receive_default))
        .routes(routes!(webhooks::receive_for_tenant))
        .layer(DefaultBodyLimit::max(webhook_limit))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            webhooks::body_in_time,
        ));
    // A tenant's own resources: the caller must be that tenant or the operator.
    let mut tenant_routes = OpenApiRouter::new()
        .routes(routes!(tenants::list_keys, tenants::issue_key))
        .routes(routes!(tenants::revoke_key))
        .routes(routes!(tenants::rotate_key))
        .routes(routes!(tenants::audit))
        .routes(routes!(
            tenants::get_chain,
            tenants::put_chain,
            tenants::delete_chain
        ))
        .routes(routes!(connections::list))
        .routes(routes!(
            connections::get,
            connections::put,
            connections::delete
        ))
        .routes(routes!(connections::refresh))
        .routes(routes!(calendars::list))
        .routes(routes!(calendars::sync_now))
        .routes(routes!(presence_webhooks::list, presence_webhooks::create))
        .routes(routes!(presence_webhooks::delete))
        .routes(routes!(presence_webhooks::enable))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::tenant_route,
        ));
    openapi::guarded_by_tenant_check(tenant_routes.get_openapi_mut());
    // Everything else needs a key (or the admin token).
    let mut api_routes = OpenApiRouter::new()
        .routes(routes!(tenants::list_tenants, tenants::create_tenant))
        .routes(routes!(crate::presence::stream::stream))
        .routes(routes!(
            presence::get_presence,
            presence::put_manual,
            presence::delete_manual
        ))
        .routes(routes!(presence::put_user))
        .routes(routes!(list_plugins))
        .routes(routes!(health::integrations))
        .routes(routes!(notifications::submit))
        .routes(routes!(notifications::get))
        .routes(routes!(notifications::ack))
        .routes(routes!(health::metrics))
        .routes(routes!(oauth::flow::start))
        .merge(tenant_routes)
        // Runs once the caller is known (inside `require_caller`).
        .route_layer(middleware::from_fn(refuse_nul))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::require_caller,
        ));
    openapi::guarded_by_caller_check(api_routes.get_openapi_mut());
    openapi::add_error(
        api_routes.get_openapi_mut(),
        400,
        "A NUL character (U+0000) in the path, query or body",
    );
    let (router, mut spec) = OpenApiRouter::with_openapi(openapi::Frame::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        // The operator's page; it authenticates itself (HTTP Basic for browsers).
        .routes(routes!(health::dashboard))
        // The person's browser, back from the provider: the state is the credential.
        .routes(routes!(oauth::flow::callback))
        .routes(routes!(openapi_json))
        .merge(api_routes)
        .merge(webhook_routes)
        .split_for_parts();
    spec.info.version = env!("CARGO_PKG_VERSION").to_string();
    openapi::optional_bodies(&mut spec);
    SPEC_JSON.get_or_init(|| {
        let json = openapi::to_json(&spec).expect("the OpenAPI description serializes");
        bytes::Bytes::from(json)
    });
    router.with_state(app)
}

/// Refuses (400, before any handler runs) an API request that carries a NUL
/// character (U+0000): `%00` in its path or query, or a NUL in its JSON body,
/// raw or as the escape `\u0000`. No name, key or text of this API needs one,
/// and PostgreSQL's text cannot hold one, so both backends answer alike: a
/// clear error, and nothing changed. (Providers' webhooks are not refused for
/// it: their texts keep U+FFFD in its place.)
async fn refuse_nul(
    request: axum::extract::Request,
    next: middleware::Next,
) -> Result<axum::response::Response, axum::response::Response> {
    let refused = |what: &str| {
        error::ApiError::BadRequest(format!(
            "the request's {what} contains a NUL character (U+0000), which no part of this API accepts"
        ))
        .into_response()
    };
    if request
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().contains("%00"))
    {
        return Err(refused("path or query"));
    }
    if axum::body::HttpBody::size_hint(request.body()).exact() == Some(0) {
        return Ok(next.run(request).await);
    }
    let (parts, body) = request.into_parts();
    // Read as the handlers read it: within the same body limit, with the same
    // answer when it is over.
    let bytes = <bytes::Bytes as axum::extract::FromRequest<()>>::from_request(
        axum::extract::Request::from_parts(parts.clone(), body),
        &(),
    )
    .await
    .map_err(IntoResponse::into_response)?;
    if json_has_nul(&bytes) {
        return Err(refused("body"));
    }
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    Ok(next.run(request).await)
}

/// Whether JSON text holds a NUL: a raw 0 byte, or a `\u0000` escape (one
/// whose backslash is not itself escaped).
fn json_has_nul(json: &[u8]) -> bool {
    if json.contains(&0) {
        return true;
    }
    json.windows(5)
        .enumerate()
        .filter(|(_, w)| *w == b"u0000")
        .any(|(at, _)| {
            let backslashes = json[..at].iter().rev().take_while(|&&b| b == b'\\').count();
            backslashes % 2 == 1
        })
}

/// The OpenAPI description, serialized once, when the first router is built
/// (every router of this build describes the same API).
static SPEC_JSON: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();

/// This API's OpenAPI 3.1 description, generated from the handlers and their types.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        SPEC_JSON.get().cloned().unwrap_or_default(),
    )
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PluginList {
    plugins: Vec<PluginSummary>,
    /// Plugins that failed to load: the operator's concern, not shown to tenants.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<LoadFailureSchema>>)]
    failures: Option<Vec<crate::plugins::registry::LoadFailure>>,
}

/// The wire shape of `plugins::registry::LoadFailure` (a plugin folder that
/// failed to load), described here because that module is the registry's.
#[derive(utoipa::ToSchema)]
#[schema(as = LoadFailure)]
#[allow(dead_code)]
struct LoadFailureSchema {
    /// The plugin's folder.
    dir: String,
    /// Why it did not load.
    error: String,
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
#[utoipa::path(
    get,
    path = "/api/plugins",
    tag = "operations",
    security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "The loaded plugins; the operator also sees their folders and load failures", body = PluginList)),
)]
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

#[cfg(test)]
mod tests {
    use super::json_has_nul;

    #[test]
    fn a_nul_is_found_in_json_whichever_way_it_is_written() {
        for (text, nul) in [
            ("plain", false),
            ("a\0b", true),
            ("\0", true),
            // A backslash followed by the letters u0000: no NUL.
            ("\\u0000", false),
            ("\\\0", true),
            ("u0000", false),
        ] {
            let json = serde_json::to_vec(&serde_json::json!({ "label": text })).unwrap();
            assert_eq!(
                json_has_nul(&json),
                nul,
                "{}",
                String::from_utf8_lossy(&json)
            );
        }
        assert!(json_has_nul(b"{\"label\":\"\\\\\\u0000\"}"));
        assert!(!json_has_nul(b"{\"label\":\"\\\\u0000\"}"));
        assert!(json_has_nul(b"{\"a\0\":1}"));
    }
}
