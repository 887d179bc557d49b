//! The admin API for tenants' presence webhooks.
//!
//! `POST /api/tenants/{tenant}/presence-webhooks` registers an endpoint and
//! answers with its signing secret, shown this once; `GET` lists endpoints
//! with their health; `DELETE .../{id}` removes one; `POST .../{id}/enable`
//! turns a disabled one back on.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::{ApiError, no_content_or_not_found};
use super::openapi::ErrorBody;
use crate::App;
use crate::presence::webhooks_out::new_secret;
use crate::store::presence_webhooks::PresenceWebhook;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    pub url: String,
    /// Only these users' changes; all of the tenant's when absent.
    #[serde(default)]
    pub users: Option<Vec<String>>,
}

/// A registered endpoint with its signing secret, shown this once. (Fields
/// in name order, as the answer has always listed them.)
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedEndpoint {
    pub id: String,
    /// The Standard Webhooks signing secret (`whsec_...`): shown this once.
    pub secret: String,
    pub url: String,
    pub users: Option<Vec<String>>,
}

#[utoipa::path(
    post,
    path = "/api/tenants/{tenant}/presence-webhooks",
    operation_id = "create_presence_webhook",
    tag = "presence-webhooks",
    params(("tenant" = String, Path, description = "The tenant")),
    request_body = NewEndpoint,
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 201, description = "The endpoint, registered, with its signing secret (shown this once)", body = CreatedEndpoint),
        (status = 400, description = "A malformed body or URL, or (for a tenant key) a URL that is not public https (or an invalid tenant name)", body = ErrorBody),
    ),
)]
pub async fn create(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<CreatedEndpoint>), ApiError> {
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
    if matches!(caller, Caller::Tenant { .. }) && !public_destination(&url) {
        return Err(ApiError::BadRequest(
            "a tenant's webhook URL must be https and must not name a loopback, private or link-local address; the operator may register others".into(),
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
        Json(CreatedEndpoint {
            id,
            secret: secret_text,
            url: url.to_string(),
            users: new.users,
        }),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointList {
    pub endpoints: Vec<PresenceWebhook>,
}

#[utoipa::path(
    get,
    path = "/api/tenants/{tenant}/presence-webhooks",
    operation_id = "list_presence_webhooks",
    tag = "presence-webhooks",
    params(("tenant" = String, Path, description = "The tenant")),
    security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "The tenant's endpoints with their health, without their secrets", body = EndpointList)),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
) -> Result<Json<EndpointList>, ApiError> {
    let endpoints = app.store.presence_webhooks(&tenant).await?;
    Ok(Json(EndpointList { endpoints }))
}

#[utoipa::path(
    delete,
    path = "/api/tenants/{tenant}/presence-webhooks/{id}",
    operation_id = "delete_presence_webhook",
    tag = "presence-webhooks",
    params(("tenant" = String, Path, description = "The tenant"), ("id" = String, Path, description = "The endpoint's id (`ep_...`)")),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such endpoint (or tenant)", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let found = app.store.delete_presence_webhook(&tenant, &id).await?;
    no_content_or_not_found(found, || missing(&tenant, &id))
}

#[utoipa::path(
    post,
    path = "/api/tenants/{tenant}/presence-webhooks/{id}/enable",
    operation_id = "enable_presence_webhook",
    tag = "presence-webhooks",
    params(("tenant" = String, Path, description = "The tenant"), ("id" = String, Path, description = "The endpoint's id (`ep_...`)")),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 204, description = "Enabled: deliveries resume"),
        (status = 404, description = "No such endpoint (or tenant)", body = ErrorBody),
    ),
)]
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

/// Whether a tenant may have the host call `url`: https to a name or a public
/// address, so a tenant cannot point the host at its own network (SSRF). A
/// name is not resolved here; pinning names to public addresses at send time
/// is left to the egress policy (see the README).
fn public_destination(url: &url::Url) -> bool {
    use std::net::IpAddr;
    if url.scheme() != "https" {
        return false;
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            return d != "localhost" && !d.ends_with(".localhost") && !d.ends_with(".internal");
        }
        None => return false,
    };
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some())
        }
    }
}

fn missing(tenant: &str, id: &str) -> String {
    format!("no presence webhook {id:?} in tenant {tenant:?}")
}

#[cfg(test)]
mod tests {
    use super::public_destination;

    #[test]
    fn tenants_may_only_name_public_https_destinations() {
        for ok in [
            "https://hooks.example.com/x",
            "https://8.8.8.8/x",
            "https://[2001:db8::1]/x",
        ] {
            assert!(public_destination(&url::Url::parse(ok).unwrap()), "{ok}");
        }
        for bad in [
            "http://hooks.example.com/x",
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://10.1.2.3/x",
            "https://169.254.169.254/latest/meta-data",
            "https://192.168.0.1/x",
            "https://100.64.0.1/x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://metadata.google.internal/x",
        ] {
            assert!(!public_destination(&url::Url::parse(bad).unwrap()), "{bad}");
        }
    }
}
