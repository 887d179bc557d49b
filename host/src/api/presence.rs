//! Presence over HTTP: read a person's effective state and why, set or clear a
//! manual override, and set the time zone their statuses are rendered in.
//!
//! A tenant API key acts for its own tenant. The operator's admin token names
//! the tenant with the `X-Presence-Tenant` header (or `?tenant=`), `default`
//! when absent; a key naming another tenant is refused.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiError;
use super::openapi::ErrorBody;
use crate::App;
use crate::model::{Availability, Instant, KeyedSignal, Presence, PresenceSignal, SignalSource};
use crate::presence::working_hours::{Schedule, WorkingHours};
use crate::presence::{self, engine};
use crate::store::now_ms;

pub const TENANT_HEADER: &str = "x-presence-tenant";

/// The tenant a request names (`X-Presence-Tenant`, else `?tenant=`), if any.
pub fn named_tenant<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<Option<&'a str>, ApiError> {
    match headers.get(TENANT_HEADER) {
        Some(v) => Ok(Some(v.to_str().map_err(|_| {
            ApiError::BadRequest("X-Presence-Tenant is not text".into())
        })?)),
        None => Ok(query),
    }
}

/// The tenant a request acts for: the caller's to decide, and it must exist.
pub async fn tenant_of(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<String, ApiError> {
    let tenant = caller.tenant_for(named_tenant(headers, query)?)?;
    if !app.tenant_exists(&tenant).await? {
        return Err(ApiError::NotFound(format!("no tenant {tenant:?}")));
    }
    Ok(tenant)
}

#[derive(Debug, Deserialize)]
pub struct TenantQuery {
    pub tenant: Option<String>,
}

/// The two ways a request names its tenant, as the OpenAPI description lists them.
impl utoipa::IntoParams for TenantQuery {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let param = |name: &str, place: ParameterIn, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(place)
                .required(utoipa::openapi::Required::False)
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build()
        };
        vec![
            param(
                "X-Presence-Tenant",
                ParameterIn::Header,
                "The tenant this request acts for: the operator's choice (default `default`); a tenant key may name only its own",
            ),
            param(
                "tenant",
                ParameterIn::Query,
                "The same as `X-Presence-Tenant`, for clients that cannot set headers; the header wins",
            ),
        ]
    }
}

/// A person's presence, the signals behind it, and what happens next.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PresenceView {
    #[serde(flatten)]
    pub presence: Presence,
    /// The signals holding now and the next one to start (a synced calendar's
    /// later events are not listed).
    pub signals: Vec<KeyedSignal>,
    /// When the effective state next changes on its own (a signal starts or ends).
    pub next_change_at: Option<Instant>,
    /// Status pushes not yet delivered, with their last error.
    #[schema(value_type = Vec<PendingPush>)]
    pub pending_pushes: Vec<serde_json::Value>,
}

/// The wire shape of a pending status push, as `store::presence` reads it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct PendingPush {
    /// The connection the push goes through.
    connection: String,
    plugin: String,
    /// When it is next tried (ms since the epoch).
    due_at: Instant,
    attempts: i64,
    last_error: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/presence/{user}",
    tag = "presence",
    params(("user" = String, Path, description = "The person, as presence knows them"), TenantQuery),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The effective presence, the signals holding now and the next to start, the next scheduled change and pending status pushes", body = PresenceView),
        (status = 400, description = "The named tenant is not a valid tenant name", body = ErrorBody),
        (status = 403, description = "The API key belongs to another tenant", body = ErrorBody),
        (status = 404, description = "No such tenant, or nothing is known of this person", body = ErrorBody),
    ),
)]
pub async fn get_presence(
    State(app): State<Arc<App>>,
    Path(user): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<TenantQuery>,
) -> Result<Json<PresenceView>, ApiError> {
    let tenant = tenant_of(&app, &caller, &headers, q.tenant.as_deref()).await?;
    let now = now_ms();
    let signals = app.store.signals(&tenant, &user, now).await?;
    if signals.is_empty() && !app.store.knows_user(&tenant, &user).await? {
        return Err(ApiError::NotFound(format!(
            "no presence is known for user {user:?} in tenant {tenant:?}"
        )));
    }
    let presence = presence::derive(&user, &signals, now);
    let next_change_at = presence::next_change(&signals, now);
    let active = signals
        .into_iter()
        .filter(|k| presence::is_active(&k.signal, now) || k.signal.starts > Some(now))
        .collect();
    Ok(Json(PresenceView {
        presence,
        signals: active,
        next_change_at,
        pending_pushes: app.store.pending_pushes(&tenant, &user).await?,
    }))
}

/// `PUT /api/presence/{user}`: a manual override.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualPresence {
    pub availability: Availability,
    #[serde(default)]
    pub status_text: Option<String>,
    #[serde(default)]
    pub status_emoji: Option<String>,
    /// When the override ends (ms since the epoch); or use `duration_minutes`.
    #[serde(default)]
    pub expires_at: Option<Instant>,
    #[serde(default)]
    pub duration_minutes: Option<u32>,
}

#[utoipa::path(
    put,
    path = "/api/presence/{user}",
    tag = "presence",
    params(("user" = String, Path, description = "The person, as presence knows them"), TenantQuery),
    request_body = ManualPresence,
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The person's presence with the override", body = Presence),
        (status = 400, description = "A malformed body, an invalid user id or tenant name", body = ErrorBody),
        (status = 403, description = "The API key belongs to another tenant", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ),
)]
pub async fn put_manual(
    State(app): State<Arc<App>>,
    Path(user): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<TenantQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Presence>, ApiError> {
    let tenant = writable(&app, &caller, &headers, q.tenant.as_deref(), &user).await?;
    let m: ManualPresence = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"availability\": \"do_not_disturb\", \"status_text\": \"...\", \"duration_minutes\": 60}}: {e}"
        ))
    })?;
    let now = now_ms();
    let expires = match (m.expires_at, m.duration_minutes) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give expires_at or duration_minutes, not both".into(),
            ));
        }
        (Some(at), None) if at <= now => {
            return Err(ApiError::BadRequest("expires_at is in the past".into()));
        }
        (Some(at), None) => Some(at),
        (None, Some(0)) => {
            return Err(ApiError::BadRequest(
                "duration_minutes must be at least 1".into(),
            ));
        }
        (None, Some(minutes)) => Some(now + i64::from(minutes) * 60_000),
        (None, None) => None,
    };
    let signal = PresenceSignal {
        user: user.clone(),
        source: SignalSource::Manual,
        availability: m.availability,
        status_text: m.status_text.filter(|t| !t.is_empty()),
        status_emoji: m.status_emoji.filter(|e| !e.is_empty()),
        starts: None,
        expires,
        clears: false,
        category: None,
    };
    let rules = engine::rules(&app).await;
    let effects = app
        .store
        .set_manual(&tenant, &user, Some(signal), &rules)
        .await?;
    announce_and_read(&app, &tenant, &user, effects).await
}

#[utoipa::path(
    delete,
    path = "/api/presence/{user}",
    tag = "presence",
    params(("user" = String, Path, description = "The person, as presence knows them"), TenantQuery),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The person's presence without the override", body = Presence),
        (status = 400, description = "A malformed body, an invalid user id or tenant name", body = ErrorBody),
        (status = 403, description = "The API key belongs to another tenant", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ),
)]
pub async fn delete_manual(
    State(app): State<Arc<App>>,
    Path(user): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<TenantQuery>,
) -> Result<Json<Presence>, ApiError> {
    let tenant = writable(&app, &caller, &headers, q.tenant.as_deref(), &user).await?;
    let rules = engine::rules(&app).await;
    let effects = app.store.set_manual(&tenant, &user, None, &rules).await?;
    announce_and_read(&app, &tenant, &user, effects).await
}

/// `PUT /api/users/{user}`: per-person settings. Each field left out stays as
/// it is; `null` removes it (and `[]` or `{}` empties a list or map).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    /// IANA time zone ("Europe/Lisbon") statuses and working hours are in; none for UTC.
    #[serde(default, deserialize_with = "present")]
    pub time_zone: Option<Option<String>>,
    /// `{"mon": ["09:00", "18:00"], ...}`; days not listed are days off.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, super::openapi::TimeSpan>>)]
    pub working_hours: Option<Option<WorkingHours>>,
    /// Where notifications reach the person, in order of preference:
    /// `[{"plugin": "twilio", "address": "+15551234567"}]`, each with an
    /// optional send window (`"windows": {"daily": ["08:00", "20:00"]}`).
    #[serde(default, deserialize_with = "present")]
    pub channels: Option<Option<Vec<crate::store::notifications::Channel>>>,
    /// Dates (`YYYY-MM-DD`, in the person's zone) the working hours do not apply.
    #[serde(default, deserialize_with = "present")]
    pub days_off: Option<Option<Vec<chrono::NaiveDate>>>,
    /// When only emergencies reach the person: `{"daily": ["22:00", "07:00"]}`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, super::openapi::TimeSpan>>)]
    pub quiet_hours: Option<Option<crate::notify::windows::WindowsSpec>>,
}

/// A field that is present, `null` included (`Some(None)`); left out, the
/// field's `default` makes it `None`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The most channels one person has.
const MAX_CHANNELS: usize = 10;

#[utoipa::path(
    put,
    path = "/api/users/{user}",
    tag = "presence",
    params(("user" = String, Path, description = "The person, as presence knows them"), TenantQuery),
    request_body = UserSettings,
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The person's presence under the new settings", body = Presence),
        (status = 400, description = "A malformed body, an invalid user id or tenant name", body = ErrorBody),
        (status = 403, description = "The API key belongs to another tenant", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ),
)]
pub async fn put_user(
    State(app): State<Arc<App>>,
    Path(user): Path<String>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<TenantQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Presence>, ApiError> {
    let tenant = writable(&app, &caller, &headers, q.tenant.as_deref(), &user).await?;
    let settings: UserSettings =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "{e}; expected {{\"time_zone\": \"Europe/Lisbon\", \"working_hours\": {{\"mon\": [\"09:00\", \"18:00\"]}}, \"days_off\": [\"2026-12-25\"], \"quiet_hours\": {{\"daily\": [\"22:00\", \"07:00\"]}}, \"channels\": [...]}}"
                ))
            })?;
    if let Some(Some(zone)) = &settings.time_zone
        && zone.parse::<chrono_tz::Tz>().is_err()
    {
        return Err(ApiError::BadRequest(format!(
            "time_zone {zone:?} is not an IANA time zone name"
        )));
    }
    if let Some(Some(hours)) = &settings.working_hours {
        Schedule::parse(hours).map_err(|e| ApiError::BadRequest(format!("working_hours: {e}")))?;
    }
    if let Some(Some(days)) = &settings.days_off
        && days.len() > crate::presence::working_hours::MAX_DAYS_OFF
    {
        return Err(ApiError::BadRequest(format!(
            "days_off: at most {} dates",
            crate::presence::working_hours::MAX_DAYS_OFF
        )));
    }
    if let Some(Some(quiet)) = &settings.quiet_hours {
        crate::notify::windows::Weekly::parse(quiet)
            .map_err(|e| ApiError::BadRequest(format!("quiet_hours: {e}")))?;
    }
    if let Some(Some(channels)) = &settings.channels {
        if channels.len() > MAX_CHANNELS {
            return Err(ApiError::BadRequest(format!(
                "channels: at most {MAX_CHANNELS}"
            )));
        }
        for c in channels {
            if !app
                .registry
                .get(&c.plugin)
                .is_some_and(|p| p.world() == crate::plugins::World::Provider)
            {
                return Err(ApiError::BadRequest(format!(
                    "channels: no provider plugin named {:?} is loaded",
                    c.plugin
                )));
            }
            if c.address.is_empty() || c.address.len() > 320 {
                return Err(ApiError::BadRequest(
                    "channels: an address is 1-320 characters".into(),
                ));
            }
            if let Some(windows) = &c.windows {
                if windows.is_empty() {
                    return Err(ApiError::BadRequest(format!(
                        "channels: {} windows name no day: give at least one, or leave windows out for always",
                        c.plugin
                    )));
                }
                crate::notify::windows::Weekly::parse(windows).map_err(|e| {
                    ApiError::BadRequest(format!("channels: {} windows: {e}", c.plugin))
                })?;
            }
        }
    }
    if let Some(channels) = &settings.channels {
        app.store
            .set_user_channels(&tenant, &user, channels.as_deref().unwrap_or_default())
            .await?;
    }
    let rules = engine::rules(&app).await;
    let effects = app
        .store
        .set_user_settings(
            &tenant,
            &user,
            &crate::store::presence::UserSettings {
                time_zone: settings.time_zone.as_ref().map(Option::as_deref),
                working_hours: settings.working_hours.as_ref().map(Option::as_ref),
                days_off: settings.days_off.as_ref().map(Option::as_deref),
                quiet_hours: settings.quiet_hours.as_ref().map(Option::as_ref),
            },
            &rules,
        )
        .await?;
    // New channels, windows or hours may let a waiting notification go now.
    app.store
        .wake_notifications(&tenant, &user, now_ms())
        .await?;
    app.engine.wake_notifications();
    announce_and_read(&app, &tenant, &user, effects).await
}

/// A presence write's checks: the tenant and the user id.
async fn writable(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    query_tenant: Option<&str>,
    user: &str,
) -> Result<String, ApiError> {
    valid_user(user)?;
    tenant_of(app, caller, headers, query_tenant).await
}

/// Announces what a write changed, and answers with the person's presence now.
async fn announce_and_read(
    app: &App,
    tenant: &str,
    user: &str,
    effects: crate::store::presence::Effects,
) -> Result<Json<Presence>, ApiError> {
    app.engine.publish(effects);
    let now = now_ms();
    let signals = app.store.signals(tenant, user, now).await?;
    Ok(Json(presence::derive(user, &signals, now)))
}

fn valid_user(user: &str) -> Result<(), ApiError> {
    if user.is_empty() || user.len() > 200 || user.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "user {user:?} must be 1-200 printable characters"
        )));
    }
    Ok(())
}
