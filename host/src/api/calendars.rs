//! Where each calendar connection's sync stands: `GET
//! /api/tenants/{tenant}/calendars`, and `POST .../calendars/{connection}/sync`
//! to sync one now (after fixing a connection, or to check a provider).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::error::ApiError;
use super::openapi::ErrorBody;
use crate::App;
use crate::model::Instant;
use crate::store::calendar::CalendarSync;

/// One calendar connection's sync.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CalendarView {
    pub connection: String,
    pub plugin: String,
    pub user: String,
    /// When the last sync completed (all its pages).
    pub last_synced_at: Option<Instant>,
    /// When the next sync is due (a notification's request, a retry, the periodic re-sync).
    pub sync_due_at: Option<Instant>,
    /// A sync is part-way through its pages.
    pub paging: bool,
    /// When the provider's push subscriptions were last made or renewed, and when they lapse.
    pub watched_at: Option<Instant>,
    pub watch_expires_at: Option<Instant>,
    /// When they are renewed next.
    pub watch_due_at: Option<Instant>,
    /// Consecutive failed syncs and failed watches, and the last failure's message.
    pub failures: u32,
    pub watch_failures: u32,
    pub last_error: Option<String>,
}

impl From<CalendarSync> for CalendarView {
    fn from(s: CalendarSync) -> Self {
        Self {
            connection: s.connection,
            plugin: s.plugin,
            user: s.user,
            last_synced_at: s.last_synced_at,
            sync_due_at: s.sync_due_at,
            paging: s.paging,
            watched_at: s.watched_at,
            watch_expires_at: s.watch_expires_at,
            watch_due_at: s.watch_due_at,
            failures: s.failures,
            watch_failures: s.watch_failures,
            last_error: s.last_error,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CalendarList {
    pub calendars: Vec<CalendarView>,
}

#[utoipa::path(
    get,
    path = "/api/tenants/{tenant}/calendars",
    operation_id = "list_calendars",
    tag = "connections",
    params(("tenant" = String, Path, description = "The tenant")),
    security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "The sync of each connection of a calendar provider", body = CalendarList)),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
) -> Result<Json<CalendarList>, ApiError> {
    let calendars = app.store.calendar_syncs(&tenant).await?;
    Ok(Json(CalendarList {
        calendars: calendars.into_iter().map(CalendarView::from).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/api/tenants/{tenant}/calendars/{connection}/sync",
    operation_id = "sync_calendar",
    tag = "connections",
    params(("tenant" = String, Path, description = "The tenant"), ("connection" = String, Path, description = "The calendar connection")),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 202, description = "A sync is due now; `GET .../calendars` shows when it completed"),
        (status = 404, description = "No calendar connection of that name (it may not be tracked yet: the sync worker picks up new connections within 30 seconds)", body = ErrorBody),
    ),
)]
pub async fn sync_now(
    State(app): State<Arc<App>>,
    Path((tenant, connection)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tracked = app.store.calendar_syncs(&tenant).await?;
    let Some(sync) = tracked.iter().find(|s| s.connection == connection) else {
        return Err(ApiError::NotFound(format!(
            "no calendar connection {connection:?} in tenant {tenant:?}"
        )));
    };
    let wanted = crate::calendar::sync::Wanted::Sync;
    crate::calendar::sync::request(
        &app,
        &tenant,
        &sync.plugin,
        wanted,
        std::slice::from_ref(&connection),
    )
    .await?;
    Ok(StatusCode::ACCEPTED)
}
