//! The operator's view: `GET /api/integrations/health`, `GET /metrics`,
//! `GET /dashboard`, and the probes `GET /healthz` (alive) and `GET /readyz`
//! (the store answers).
//!
//! The health report answers 200 when `ok` or `degraded` and 503 when `down`,
//! so a load balancer can use it; a tenant key gets its own tenant's view.
//! `/metrics` and `/dashboard` are the operator's. The dashboard also accepts
//! the admin token as an HTTP Basic password, so a browser can open it.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::auth::{Caller, authenticate_browser};
use super::error::ApiError;
use super::openapi::ErrorBody;
use crate::App;
use crate::health::breaker::BreakerState;
use crate::health::{Report, Status};

#[utoipa::path(
    get,
    path = "/api/integrations/health",
    operation_id = "integrations_health",
    tag = "operations",
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "`ok` or `degraded`: every plugin's calls, errors, latency and success ratios, troubled connections, jobs, the outbox and alerts (a tenant key sees its own tenant's view)", body = Report),
        (status = 503, description = "`down`: the same report", body = Report),
    ),
)]
pub async fn integrations(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let tenant = match &caller {
        Caller::Operator => None,
        Caller::Tenant { tenant, .. } => Some(tenant.as_str()),
    };
    let report = app.health.report(&app, tenant).await;
    let status = if report.status == Status::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(report)).into_response()
}

/// Liveness: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", content_type = "text/plain", body = String, example = "ok")),
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: whether the store answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: the store answers", body = Readiness),
        (status = 503, description = "Not ready, with the reason", body = Readiness),
    ),
)]
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Readiness {
                ready: true,
                reason: None,
            }),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                ready: false,
                reason: Some(format!("store: {e}")),
            }),
        )
            .into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Prometheus metrics in the OpenMetrics text format", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = 403, description = "Only the operator reads the metrics", body = ErrorBody),
    ),
)]
pub async fn metrics(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.health.metrics.encode(),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "operations",
    security(("admin_token" = []), ("admin_basic" = [])),
    responses(
        (status = 200, description = "The operator's page, rendered from the health report; it reloads every 10 s", content_type = "text/html; charset=utf-8", body = String),
        (status = 401, description = "No admin token: a Basic challenge, so a browser prompts", content_type = "text/plain; charset=utf-8", body = String,
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"presence-host\"`"))),
        (status = 403, description = "A tenant key: the dashboard is the operator's", content_type = "text/plain; charset=utf-8", body = String),
    ),
)]
pub async fn dashboard(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let challenge = || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"presence-host\"")],
            "the dashboard is the operator's: sign in with the admin token as the password",
        )
            .into_response()
    };
    match authenticate_browser(&app, &headers).await {
        Ok(Caller::Operator) => {}
        Ok(Caller::Tenant { .. }) => {
            return (StatusCode::FORBIDDEN, "the dashboard is the operator's").into_response();
        }
        Err(_) => return challenge(),
    }
    let report = app.health.report(&app, None).await;
    Html(render(&report)).into_response()
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

fn pct(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "—".into(), |r| format!("{:.1} %", r * 100.0))
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Degraded => "degraded",
        Status::Down => "down",
    }
}

fn breaker_word(b: &BreakerState) -> String {
    match b {
        BreakerState::Closed => "closed".into(),
        BreakerState::Open { until } => format!("open until {}", time(Some(*until))),
        BreakerState::HalfOpen { .. } => "half-open (probing)".into(),
    }
}

/// The page, server-rendered from the report; it reloads itself every 10 s.
pub fn render(r: &Report) -> String {
    let mut html = String::with_capacity(8 * 1024);
    let status = status_word(r.status);
    html.push_str(&format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>presence-host: {status}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}\
         table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}}\
         .ok{{color:#176f2c}}.degraded{{color:#a15c00}}.down{{color:#b00020}}</style></head><body>\
         <h1>presence-host <span id=\"status\" class=\"{status}\" data-status=\"{status}\">{status}</span></h1>\
         <p>Checked {checked}; up since {up}. Store: {store}.</p>",
        checked = time(Some(r.checked_at)),
        up = time(Some(r.up_since)),
        store = status_word(r.store),
    ));

    html.push_str("<h2>Alerts</h2>");
    if r.alerts.is_empty() {
        html.push_str("<p id=\"alerts\">None.</p>");
    } else {
        html.push_str("<table id=\"alerts\"><tr><th>subject</th><th>problem</th><th>what to do</th><th>since</th></tr>");
        for a in &r.alerts {
            html.push_str(&format!(
                "<tr data-alert=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.id),
                esc(&a.subject),
                esc(&a.message),
                esc(&a.recommendation),
                time(Some(a.since))
            ));
        }
        html.push_str("</table>");
    }

    html.push_str("<h2>Plugins</h2><table id=\"plugins\"><tr><th>plugin</th><th>version</th><th>world</th><th>state</th><th>calls</th><th>success 5 min / 1 h / 24 h</th><th>p99</th><th>last failure</th></tr>");
    for p in &r.plugins {
        let (calls, uptime, p99, failure) = match &p.stats {
            Some(s) => (
                s.calls.to_string(),
                format!(
                    "{} / {} / {}",
                    pct(s.uptime.last_5m),
                    pct(s.uptime.last_1h),
                    pct(s.uptime.last_24h)
                ),
                s.latency_ms
                    .p99
                    .map_or_else(|| "—".into(), |v| format!("≤ {v} ms")),
                s.last_failure.as_ref().map_or_else(
                    || "—".into(),
                    |f| format!("{} {}: {}", time(Some(f.at)), f.kind, f.message),
                ),
            ),
            None => ("0".into(), "—".into(), "—".into(), "—".into()),
        };
        html.push_str(&format!(
            "<tr data-plugin=\"{name}\"><td>{name}</td><td>{}</td><td>{}</td><td class=\"{st}\">{st}</td><td>{calls}</td><td>{uptime}</td><td>{p99}</td><td>{}</td></tr>",
            esc(&p.version),
            esc(&p.world),
            esc(&failure),
            name = esc(&p.plugin),
            st = status_word(p.status),
        ));
    }
    html.push_str("</table>");

    html.push_str("<h2>Connections with trouble</h2>");
    if r.connections.is_empty() {
        html.push_str("<p id=\"connections\">None.</p>");
    } else {
        html.push_str("<table id=\"connections\"><tr><th>tenant</th><th>connection</th><th>plugin</th><th>state</th><th>breaker</th><th>last failure</th></tr>");
        for c in &r.connections {
            let failure = c.stats.last_failure.as_ref().map_or_else(
                || "—".into(),
                |f| format!("{} {}: {}", time(Some(f.at)), f.kind, f.message),
            );
            html.push_str(&format!(
                "<tr data-connection=\"{conn}\"><td>{}</td><td>{conn}</td><td>{}</td><td>{}</td><td class=\"breaker\">{}</td><td>{}</td></tr>",
                esc(&c.tenant),
                esc(&c.plugin),
                esc(&c.status),
                esc(&breaker_word(&c.breaker)),
                esc(&failure),
                conn = esc(&c.connection),
            ));
        }
        html.push_str("</table>");
    }

    html.push_str("<h2>Scheduled jobs</h2><table id=\"jobs\"><tr><th>job</th><th>runs</th><th>last run</th><th>outcome</th><th>next run</th></tr>");
    for j in &r.jobs {
        html.push_str(&format!(
            "<tr data-job=\"{job}\"><td>{job}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            j.runs,
            time(j.last_run_at),
            esc(j.last_outcome.as_deref().unwrap_or("—")),
            time(j.next_run_at),
            job = esc(j.job),
        ));
    }
    html.push_str("</table>");
    if let Some(o) = &r.outbox {
        html.push_str(&format!(
            "<p id=\"outbox\">Status outbox: {} waiting; oldest due {}.</p>",
            o.pending,
            time(o.oldest_due_at)
        ));
    }
    html.push_str("</body></html>");
    html
}
