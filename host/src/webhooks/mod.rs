//! Webhook ingress: `POST /api/webhooks/{plugin}[/{tenant}]`.
//!
//! Before the plugin runs, the host checks the body's size (413), its content
//! type against the plugin's manifest (415) and the endpoint's rate limit (429
//! with `Retry-After`). The raw request then goes to the provider plugin, which
//! verifies it (through the `secrets` import) and says what it means; calendar
//! events are counted against the person's hourly limit and run through the
//! tenant's classifier chain; the resulting signals, the delivery id and the
//! presence they derive (with its status pushes and webhook messages) are
//! committed in one transaction, and only then is the provider answered. A
//! refused request changes nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::App;
use crate::api::error::ApiError;
use crate::classify;
use crate::model::{PluginFault, ShowAs, Transparency, WebhookRequest};
use crate::plugins::{LoadedPlugin, World};
use crate::store::{KeyedSignal, WebhookCommit};
use tracing::Instrument;

pub mod limits;

/// A signal's `user` of the form `connection:{name}` names the person by one
/// of the plugin's connections (a provider that knows people only by the
/// account they connected); the host puts the connection's person in its place.
pub const CONNECTION_USER_PREFIX: &str = "connection:";

/// The tenant of routes that name none.
pub const DEFAULT_TENANT: &str = "default";

/// Tenant names: what fits in a route segment and a storage key.
pub fn valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Reads a delivery's body before its handler runs, within
/// `[webhooks] body_timeout_ms` of its headers: a sender trickling the body
/// (slow loris) gets 408 instead of holding a connection and a task for as
/// long as it likes. Over `max_webhook_body_bytes` is 413, as before.
pub async fn body_in_time(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let deadline = std::time::Duration::from_millis(app.config.webhooks.body_timeout_ms);
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, app.config.max_webhook_body_bytes);
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(parts, bytes.into()))
                .await
        }
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
            if too_large {
                (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").into_response()
            } else {
                ApiError::BadRequest(format!("the body could not be read: {e}")).into_response()
            }
        }
        Err(_) => {
            tracing::warn!(path = %parts.uri.path(), "a webhook body did not arrive in time");
            ApiError::RequestTimeout(format!(
                "the body did not arrive within {} ms of the headers",
                deadline.as_millis()
            ))
            .into_response()
        }
    }
}

/// A provider's webhook for tenant `default`: no key, the provider's
/// signature is the credential. `slack-presence` and `calendar-presence` are
/// the seed's names for Slack and for the calendar provider the headers show.
#[utoipa::path(
    post,
    path = "/api/webhooks/{plugin}",
    operation_id = "receive_webhook",
    tag = "webhooks",
    params(("plugin" = String, Path, description = "The provider plugin (or an alias: `slack-presence`, `calendar-presence`)")),
    request_body(content = Option<serde_json::Value>, description = "The provider's request, exactly as sent (any content type the plugin's manifest takes; empty bodies too): the plugin verifies its signature over these bytes", content_type = "*/*"),
    responses(
        (status = 200, description = "Accepted and committed; the body, headers and status (any the plugin chooses, 2xx here) are the plugin's answer to its provider (e.g. Slack's url_verification challenge)", content_type = "*/*", body = serde_json::Value),
        (status = 400, description = "A malformed body (the plugin's word) or an invalid tenant name", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "A bad or missing signature, or a stale timestamp", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such provider plugin or tenant, or an event the plugin does not handle", body = crate::api::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive within `[webhooks] body_timeout_ms` of the headers", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit (`max_webhook_body_bytes`)", content_type = "text/plain; charset=utf-8", body = String),
        (status = 415, description = "A content type the plugin's manifest does not take", body = crate::api::openapi::ErrorBody),
        (status = 429, description = "Over a rate limit", body = crate::api::openapi::ErrorBody, headers(("Retry-After" = u64, description = "Seconds until a retry may succeed"))),
        (status = 500, description = "The commit failed", body = crate::api::openapi::ErrorBody),
        (status = 502, description = "The plugin failed (trap, deadline, memory or output limit) or a signing secret cannot be used", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "The store is unavailable", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn receive_default(
    State(app): State<Arc<App>>,
    Path(plugin): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    receive(
        app,
        plugin,
        DEFAULT_TENANT.to_string(),
        method,
        uri,
        headers,
        body,
    )
    .await
}

/// The same, for a registered tenant.
#[utoipa::path(
    post,
    path = "/api/webhooks/{plugin}/{tenant}",
    operation_id = "receive_tenant_webhook",
    tag = "webhooks",
    params(
        ("plugin" = String, Path, description = "The provider plugin (or an alias: `slack-presence`, `calendar-presence`)"),
        ("tenant" = String, Path, description = "The tenant"),
    ),
    request_body(content = Option<serde_json::Value>, description = "The provider's request, exactly as sent (any content type the plugin's manifest takes; empty bodies too): the plugin verifies its signature over these bytes", content_type = "*/*"),
    responses(
        (status = 200, description = "Accepted and committed; the body, headers and status (any the plugin chooses, 2xx here) are the plugin's answer to its provider (e.g. Slack's url_verification challenge)", content_type = "*/*", body = serde_json::Value),
        (status = 400, description = "A malformed body (the plugin's word) or an invalid tenant name", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "A bad or missing signature, or a stale timestamp", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such provider plugin or tenant, or an event the plugin does not handle", body = crate::api::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive within `[webhooks] body_timeout_ms` of the headers", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit (`max_webhook_body_bytes`)", content_type = "text/plain; charset=utf-8", body = String),
        (status = 415, description = "A content type the plugin's manifest does not take", body = crate::api::openapi::ErrorBody),
        (status = 429, description = "Over a rate limit", body = crate::api::openapi::ErrorBody, headers(("Retry-After" = u64, description = "Seconds until a retry may succeed"))),
        (status = 500, description = "The commit failed", body = crate::api::openapi::ErrorBody),
        (status = 502, description = "The plugin failed (trap, deadline, memory or output limit) or a signing secret cannot be used", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "The store is unavailable", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn receive_for_tenant(
    State(app): State<Arc<App>>,
    Path((plugin, tenant)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    receive(app, plugin, tenant, method, uri, headers, body).await
}

async fn receive(
    app: Arc<App>,
    plugin_name: String,
    tenant: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !valid_tenant(&tenant) {
        return Err(ApiError::BadRequest(format!(
            "tenant {tenant:?} is not a valid tenant name"
        )));
    }
    let plugin_name = resolve_alias(&plugin_name, &headers).to_string();
    let plugin = app
        .registry
        .get(&plugin_name)
        .filter(|p| p.world() == World::Provider)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no provider plugin named {plugin_name:?} is loaded"
            ))
        })?;
    if !app.tenant_exists(&tenant).await? {
        return Err(ApiError::NotFound(format!("no tenant {tenant:?}")));
    }

    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !plugin.manifest.webhook.accepts(content_type, body.len()) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "{plugin_name} accepts {} bodies, not {}",
            plugin.manifest.webhook.content_types.join(" or "),
            content_type.unwrap_or("a body without a Content-Type")
        )));
    }
    let ceiling = app
        .config
        .plugins
        .get(&plugin_name)
        .and_then(|o| o.rate_limit_per_second);
    app.limits
        .check_endpoint(&plugin_name, &tenant, ceiling)
        .map_err(too_many)?;

    let request = WebhookRequest {
        method: method.to_string(),
        url: absolute_url(&app, &headers, &uri),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
        tenant: Some(tenant.clone()),
    };
    let span = tracing::info_span!("webhook", plugin = %plugin_name, %tenant, delivery = tracing::field::Empty);
    // `instrument`, not `span.enter()`: a guard held across an await would leak
    // the span into whatever task the worker thread polls next.
    process(app, plugin, plugin_name, tenant, request)
        .instrument(span)
        .await
}

async fn process(
    app: Arc<App>,
    plugin: Arc<LoadedPlugin>,
    plugin_name: String,
    tenant: String,
    request: WebhookRequest,
) -> Result<Response, ApiError> {
    let outcome = app
        .runtime
        .handle_webhook(&plugin.pre, &plugin.grants, &tenant, &request)
        .await
        .map_err(|e| ApiError::PluginFailed(e.to_string()))?;
    let outcome = outcome.map_err(|fault| match fault {
        PluginFault::Unauthorized(m) => ApiError::Unauthorized(format!("{plugin_name}: {m}")),
        PluginFault::InvalidInput(m) => ApiError::BadRequest(format!("{plugin_name}: {m}")),
        PluginFault::Unsupported(m) => ApiError::NotFound(format!("{plugin_name}: {m}")),
        other => ApiError::PluginFailed(format!("{plugin_name}: {other}")),
    })?;
    if let Some(id) = &outcome.delivery_id {
        tracing::Span::current().record("delivery", id.as_str());
    }
    // Presence belongs to someone: a plugin naming nobody is a plugin bug,
    // refused (and so redelivered once it is fixed) rather than stored.
    if outcome.signals.iter().any(|s| s.user.trim().is_empty())
        || outcome.events.iter().any(|e| e.user.trim().is_empty())
    {
        return Err(ApiError::PluginFailed(format!(
            "{plugin_name}: returned a presence signal or calendar event without a user id"
        )));
    }

    let mut per_user: std::collections::BTreeMap<&str, u32> = Default::default();
    for e in &outcome.events {
        *per_user.entry(e.user.as_str()).or_default() += 1;
    }
    for (user, count) in per_user {
        app.limits
            .check_calendar_events(&tenant, user, count)
            .map_err(too_many)?;
    }

    let mut signals = Vec::with_capacity(outcome.signals.len() + outcome.events.len());
    for s in &outcome.signals {
        let mut signal = s.clone();
        // A calendar provider knows people by their connection: the host
        // knows whose the connection is.
        if let Some(connection) = s.user.strip_prefix(CONNECTION_USER_PREFIX) {
            match app.store.connection(&tenant, connection).await? {
                Some(c) if c.plugin == plugin_name => signal.user = c.user,
                _ => {
                    tracing::warn!(
                        connection,
                        "signal for a connection this plugin does not have; ignored"
                    );
                    continue;
                }
            }
        }
        signals.push(KeyedSignal {
            key: plugin_name.clone(),
            origin: plugin_name.clone(),
            signal,
        });
    }
    // Read only when there is something to classify: most webhooks carry no events.
    let chain = if outcome.events.is_empty() {
        Vec::new()
    } else {
        crate::api::tenants::chain_for(&app, &tenant)
            .await?
            .classifiers
    };
    for user_event in &outcome.events {
        let event = &user_event.event;
        let show_as = match event.transparency {
            Transparency::Transparent => ShowAs::Free,
            Transparency::Opaque => ShowAs::Busy,
        };
        signals.push(
            classify::event_signal(
                classify::Chain {
                    registry: &app.registry,
                    classifiers: &chain,
                    tenant: &tenant,
                },
                &user_event.user,
                format!("{plugin_name}:{}", event.id),
                &plugin_name,
                event,
                show_as,
            )
            .await,
        );
    }

    let rules = crate::presence::engine::rules(&app).await;
    // Committed and announced in a task of its own: a provider that gives up
    // waiting (its deadline, a dropped connection) cancels this handler, not
    // the commit, and a committed change is always announced (SSE, the
    // router's wake, the scheduler), even though the redelivery is a duplicate.
    // A calendar provider's sync requests are recorded there too, after the
    // delivery.
    let delivery_id = outcome.delivery_id.clone();
    let (sync_requests, watch_requests) = (
        outcome.sync_requests.clone(),
        outcome.watch_requests.clone(),
    );
    let committing = app.clone();
    let commit = tokio::spawn(
        async move {
            let (commit, effects) = committing
                .store
                .commit_webhook(
                    &plugin_name,
                    &tenant,
                    delivery_id.as_deref(),
                    &signals,
                    &rules,
                )
                .await?;
            committing.engine.publish(effects);
            // A redelivery asks again: requests coalesce, and the first
            // asking may not have been recorded (a crash after the commit).
            {
                use crate::calendar::sync::{Wanted, request};
                for (wanted, connections) in [
                    (Wanted::Sync, &sync_requests),
                    (Wanted::Watch, &watch_requests),
                ] {
                    if !connections.is_empty() {
                        request(&committing, &tenant, &plugin_name, wanted, connections).await?;
                    }
                }
            }
            Ok::<_, crate::store::StoreError>(commit)
        }
        .instrument(tracing::Span::current()),
    )
    .await
    .map_err(|e| ApiError::Internal(format!("committing the webhook failed: {e}")))??;
    if commit == WebhookCommit::Duplicate {
        tracing::info!("redelivery acknowledged; already processed");
    }
    Ok(plugin_response(outcome.response))
}

fn too_many(limited: limits::Limited) -> ApiError {
    tracing::warn!(what = %limited.what, retry_after_ms = limited.retry_after.as_millis() as u64, "webhook rate limited");
    ApiError::TooManyRequests {
        message: format!("rate limit reached for {}; retry later", limited.what),
        retry_after: limited.retry_after,
    }
}

/// The seed's route names, kept so that providers configured with them keep working:
/// `slack-presence` is Slack; `calendar-presence` is whichever calendar provider
/// the request's headers show (Google's channel headers, Standard Webhooks'
/// `webhook-id`, else Microsoft Graph, whose notifications carry no telling header).
pub fn resolve_alias<'a>(name: &'a str, headers: &HeaderMap) -> &'a str {
    match name {
        "slack-presence" => "slack",
        "calendar-presence" if headers.contains_key("x-goog-channel-id") => "google-calendar",
        "calendar-presence" if headers.contains_key("webhook-id") => "calendar-webhook",
        "calendar-presence" => "microsoft-graph",
        other => other,
    }
}

/// The URL the provider called, as signature schemes over the URL need it.
fn absolute_url(app: &App, headers: &HeaderMap, uri: &Uri) -> String {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match &app.config.public_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}{path}")
        }
    }
}

/// Response headers that are the server's to set, never a plugin's: the
/// message's framing, the connection's (RFC 9110 §7.6.1's hop-by-hop fields),
/// and cookies.
pub const SERVER_HEADERS: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "set-cookie",
];

/// Headers every answer to a provider carries, whatever the plugin set: it is
/// served from the host's own origin (the dashboard's too), so a plugin's
/// body is never sniffed, run or framed as a page there.
pub const FORCED_HEADERS: [(&str, &str); 2] = [
    ("x-content-type-options", "nosniff"),
    ("content-security-policy", "sandbox; default-src 'none'"),
];

/// The plugin's answer to the provider, as the host sends it: its status when
/// that is a final one (200-599; anything else, an interim 1xx included, is a
/// broken plugin: 502), its body, its headers that are valid and not
/// [`SERVER_HEADERS`] (the last of a repeated name wins), and the
/// [`FORCED_HEADERS`].
pub fn plugin_response(r: crate::model::WebhookResponse) -> Response {
    let status = StatusCode::from_u16(r.status)
        .ok()
        .filter(|s| (200..600).contains(&s.as_u16()))
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, r.body).into_response();
    for (name, value) in r.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            continue;
        };
        if SERVER_HEADERS.contains(&name.as_str()) {
            continue;
        }
        response.headers_mut().insert(name, value);
    }
    for (name, value) in FORCED_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}
