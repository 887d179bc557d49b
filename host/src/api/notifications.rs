//! `POST /api/notifications` and `GET /api/notifications/{id}`.
//!
//! A submission names its recipients (people as presence knows them), an
//! urgency class, optionally the wedding it is about, and its content. It is
//! stored and answered at once (202); the router decides and delivers in the
//! background. An `Idempotency-Key` header makes a retried submission return
//! the notifications the first one made instead of sending again. An
//! emergency may name an escalation path; `POST .../{id}/ack` stops it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiError;
use super::openapi::ErrorBody;
use super::presence::{TenantQuery, tenant_of};
use crate::App;
use crate::notify::{Class, Wedding, deliver_by_for};
use crate::store::notifications::{Escalation, NewNotification, NotificationRecord, Submitted};
use crate::store::now_ms;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    pub recipients: Vec<String>,
    /// `emergency`, `timeline`, `coordination` or `general`.
    #[schema(value_type = Class)]
    pub urgency: String,
    #[serde(default)]
    pub wedding: Option<Wedding>,
    #[serde(default)]
    pub subject: Option<String>,
    pub body: String,
    /// For an emergency: who is told next, in order, when it is not
    /// acknowledged in time (`POST /api/notifications/{id}/ack`).
    #[serde(default)]
    pub escalation: Vec<String>,
}

const EXAMPLE: &str = r#"{"recipients": ["U123"], "urgency": "timeline", "wedding": {"id": "smith-2026", "date": "2026-06-13", "time_zone": "Europe/Lisbon", "venue": "Old Barn"}, "subject": "Smith wedding", "body": "First look moved to 15:30"}"#;

/// One notification made by a submission: one per recipient.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubmittedNotification {
    pub id: String,
    pub recipient: String,
    /// True when the `Idempotency-Key` was seen before: `id` is the first submission's.
    pub replayed: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubmittedNotifications {
    pub notifications: Vec<SubmittedNotification>,
}

#[utoipa::path(
    post,
    path = "/api/notifications",
    operation_id = "submit_notifications",
    tag = "notifications",
    params(
        TenantQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "1-200 characters: a retry with the same key answers the same ids and sends nothing again"),
    ),
    request_body = Submit,
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 202, description = "Stored: the router decides and delivers in the background", body = SubmittedNotifications),
        (status = 400, description = "A malformed or invalid submission, or an invalid tenant name", body = ErrorBody),
        (status = 403, description = "The API key belongs to another tenant", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ),
)]
pub async fn submit(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<TenantQuery>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<SubmittedNotifications>), ApiError> {
    let tenant = tenant_of(&app, &caller, &headers, q.tenant.as_deref()).await?;
    let submit: Submit = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("expected {EXAMPLE}: {e}")))?;
    let class = Class::parse(&submit.urgency).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "urgency {:?} is not emergency, timeline, coordination or general",
            submit.urgency
        ))
    })?;
    if submit.recipients.is_empty() || submit.recipients.len() > 100 {
        return Err(ApiError::BadRequest("name 1 to 100 recipients".into()));
    }
    if submit
        .recipients
        .iter()
        .any(|r| r.is_empty() || r.len() > 200 || r.chars().any(char::is_control))
    {
        return Err(ApiError::BadRequest(
            "a recipient is 1-200 printable characters".into(),
        ));
    }
    if submit.body.trim().is_empty() || submit.body.len() > 4096 {
        return Err(ApiError::BadRequest("body must be 1-4096 bytes".into()));
    }
    // A NUL anywhere never gets here: `api::refuse_nul` answers 400 first.
    if submit.subject.as_ref().is_some_and(|s| s.len() > 200) {
        return Err(ApiError::BadRequest(
            "subject must be at most 200 bytes".into(),
        ));
    }
    if let Some(w) = &submit.wedding
        && w.time_zone.parse::<chrono_tz::Tz>().is_err()
    {
        return Err(ApiError::BadRequest(format!(
            "wedding.time_zone {:?} is not an IANA time zone",
            w.time_zone
        )));
    }
    if !submit.escalation.is_empty() && class != Class::Emergency {
        return Err(ApiError::BadRequest(
            "only emergencies escalate: drop escalation or make it an emergency".into(),
        ));
    }
    if submit.escalation.len() > 10
        || submit
            .escalation
            .iter()
            .any(|r| r.is_empty() || r.len() > 200 || r.chars().any(char::is_control))
    {
        return Err(ApiError::BadRequest(
            "escalation names at most 10 people of 1-200 printable characters".into(),
        ));
    }
    let idempotency_key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    ApiError::BadRequest("Idempotency-Key must be 1-200 characters".into())
                })?
                .to_string(),
        ),
        None => None,
    };
    let now = now_ms();
    let mut batch = Vec::with_capacity(submit.recipients.len());
    for recipient in &submit.recipients {
        let deliver_by = deliver_by_for(&app, &tenant, recipient, class, now).await?;
        let id = format!("ntf_{}", hex::encode(rand::random::<[u8; 10]>()));
        let n = NewNotification {
            id: id.clone(),
            tenant: tenant.clone(),
            recipient: recipient.clone(),
            class,
            wedding: submit.wedding.clone(),
            subject: submit.subject.clone(),
            body: submit.body.clone(),
            idempotency_key: idempotency_key
                .as_ref()
                // A newline cannot occur in either (a header value; a
                // recipient of printable characters), so keys never collide.
                .map(|k| format!("{k}\n{recipient}")),
            deliver_by,
            escalation: (!submit.escalation.is_empty()).then(|| Escalation {
                path: submit.escalation.clone(),
                step: 0,
                chain: Vec::new(),
            }),
        };
        batch.push(n);
    }
    let submitted = app.store.submit_notifications(&batch).await?;
    let notifications: Vec<SubmittedNotification> = batch
        .iter()
        .zip(submitted)
        .map(|(n, submitted)| {
            let (id, replayed) = match submitted {
                Submitted::Created => (n.id.clone(), false),
                Submitted::Existing(first) => (first, true),
            };
            SubmittedNotification {
                id,
                recipient: n.recipient.clone(),
                replayed,
            }
        })
        .collect();
    app.engine.wake_notifications();
    Ok((
        StatusCode::ACCEPTED,
        Json(SubmittedNotifications { notifications }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/notifications/{id}",
    operation_id = "get_notification",
    tag = "notifications",
    params(("id" = String, Path, description = "The notification's id (`ntf_...`)"), TenantQuery),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The notification's state, every decision with its reason, and every channel attempt", body = NotificationRecord),
        (status = 400, description = "An invalid tenant name", body = ErrorBody),
        (status = 403, description = "The API key belongs to another tenant", body = ErrorBody),
        (status = 404, description = "No such notification (or tenant)", body = ErrorBody),
    ),
)]
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<TenantQuery>,
) -> Result<Json<NotificationRecord>, ApiError> {
    let tenant = tenant_of(&app, &caller, &headers, q.tenant.as_deref()).await?;
    app.store
        .notification(&tenant, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no notification {id:?} in tenant {tenant:?}")))
}

/// `POST /api/notifications/{id}/ack`: the recipient saw it; an emergency's
/// escalation stops. 204, or 404 for an unknown notification.
#[utoipa::path(
    post,
    path = "/api/notifications/{id}/ack",
    operation_id = "ack_notification",
    tag = "notifications",
    params(("id" = String, Path, description = "The notification's id (`ntf_...`)"), TenantQuery),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 204, description = "Acknowledged: an emergency's escalation stops"),
        (status = 400, description = "An invalid tenant name", body = ErrorBody),
        (status = 403, description = "The API key belongs to another tenant", body = ErrorBody),
        (status = 404, description = "No such notification (or tenant)", body = ErrorBody),
    ),
)]
pub async fn ack(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<TenantQuery>,
) -> Result<StatusCode, ApiError> {
    let tenant = tenant_of(&app, &caller, &headers, q.tenant.as_deref()).await?;
    let by = caller.actor().to_string();
    match app.store.ack_notification(&tenant, &id, &by).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::NotFound(format!(
            "no notification {id:?} in tenant {tenant:?}"
        ))),
    }
}
