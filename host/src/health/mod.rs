//! Integration health: what every plugin call, status push, token refresh and
//! scheduled job did, kept in memory per process, and judged into a report.
//!
//! - Per plugin and per tenant: calls, errors and refusals by kind, a latency
//!   histogram, the last success and the last failure with its message, and
//!   the share of successful calls over the last 5 minutes, hour and day.
//! - Per provider connection: the same, and a circuit breaker ([`breaker`])
//!   that pauses pushes to a provider that keeps failing.
//! - Scheduled jobs: when each last ran, how it went, when it runs next.
//! - [`Health::report`] turns these, the store's view (connections needing
//!   re-consent, the status outbox) and the plugin registry into an overall
//!   `ok`/`degraded`/`down`, alerts, and a recommendation per problem.
//! - [`metrics`] exposes the counters in Prometheus' text format, labelled by
//!   plugin, tenant, export and kind only: bounded cardinality, no per-person labels.
//!
//! Failures count against health; refusals (a bad signature, malformed input,
//! a provider's rate limit) are counted apart, since a sender's mistake or an
//! attack is not the integration failing. Everything here is per process: with
//! several replicas, each reports what it saw.

pub mod breaker;
pub mod metrics;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use breaker::{Admission, Breaker, BreakerConfig, BreakerState};
use window::{LatencyHistogram, Window};

/// Where health takes the time from: the system clock, or a test's hand.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::store::now_ms()
    }
}

/// Health settings (`[health]`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Consecutive failures of a connection's provider that open its breaker. Default 5.
    pub breaker_failures: u32,
    /// The breaker also opens when half of this many last calls failed (2-100). Default 20.
    pub breaker_window: u32,
    /// The first pause of an open breaker, in ms; it doubles while the provider
    /// keeps failing, up to `breaker_max_open_ms`. Defaults 30000 and 600000.
    pub breaker_open_ms: i64,
    /// The longest pause of an open breaker, in ms. Default 600000.
    pub breaker_max_open_ms: i64,
    /// A plugin failing at least this share of its calls over 5 minutes raises an alert. Default 0.2.
    pub alert_failure_ratio: f64,
    /// ...once it made at least this many calls in those 5 minutes. Default 10.
    pub alert_min_calls: u64,
    /// Status pushes waiting longer than this past their due time raise an alert (ms). Default 600000.
    pub alert_outbox_lag_ms: i64,
    /// Who is notified of each alert raised, through the notification router. Default: nobody (the log only).
    pub alert_to: Option<AlertRecipient>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            breaker_failures: 5,
            breaker_window: 20,
            breaker_open_ms: 30_000,
            breaker_max_open_ms: 600_000,
            alert_failure_ratio: 0.2,
            alert_min_calls: 10,
            alert_outbox_lag_ms: 600_000,
            alert_to: None,
        }
    }
}

impl HealthConfig {
    fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            failures_to_open: self.breaker_failures.max(1),
            ratio_window: self.breaker_window.clamp(2, 100),
            open_ms: self.breaker_open_ms.max(1),
            max_open_ms: self.breaker_max_open_ms.max(self.breaker_open_ms.max(1)),
        }
    }
}

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Not the integration's fault: bad signature, bad input, rate limited, unsupported.
    Refused(&'static str),
    /// The integration failed: trap, deadline, limits, provider 5xx, transport...
    Failed(&'static str, String),
}

impl Outcome {
    /// How a plugin's own error counts. A webhook's bad signature or bad
    /// input is the sender's; a provider's 429 is a rate limit; the rest fail.
    pub fn of_fault(fault: &crate::model::PluginFault, export: &str) -> Self {
        use crate::model::PluginFault as F;
        let webhook = export == "handle-webhook";
        match fault {
            F::Unauthorized(_) if webhook => Outcome::Refused("signature"),
            F::InvalidInput(_) if webhook => Outcome::Refused("invalid_input"),
            F::Unsupported(_) => Outcome::Refused("unsupported"),
            F::Unauthorized(m) => Outcome::Failed("unauthorized", m.clone()),
            F::InvalidInput(m) => Outcome::Failed("invalid_input", m.clone()),
            F::Upstream {
                status: Some(429), ..
            } => Outcome::Refused("rate_limited"),
            F::Upstream {
                status: None,
                retry_after_ms: Some(_),
                ..
            } => Outcome::Refused("rate_limited"),
            F::Upstream {
                status: Some(s),
                message,
                ..
            } if *s >= 500 => Outcome::Failed("http_5xx", message.clone()),
            F::Upstream {
                status: Some(_),
                message,
                ..
            } => Outcome::Failed("http_4xx", message.clone()),
            F::Upstream { message, .. } => Outcome::Failed("upstream", message.clone()),
            F::Internal(m) => Outcome::Failed("internal", m.clone()),
        }
    }
}

/// Counters of one subject (a plugin, a tenant, a connection).
#[derive(Debug, Default, Clone)]
struct Stats {
    calls: u64,
    errors: BTreeMap<&'static str, u64>,
    refusals: BTreeMap<&'static str, u64>,
    latency: LatencyHistogram,
    last_success_at: Option<i64>,
    last_failure: Option<Failure>,
    window: Window,
    /// The failure kinds seen in the window's span, newest message each (for recommendations).
    recent_failures: BTreeMap<&'static str, (i64, u64, String)>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Failure {
    pub at: i64,
    pub kind: &'static str,
    pub message: String,
}

impl Stats {
    fn record(&mut self, now: i64, duration: Option<Duration>, outcome: &Outcome) {
        self.calls += 1;
        if let Some(d) = duration {
            self.latency.observe(d);
        }
        match outcome {
            Outcome::Ok => {
                self.last_success_at = Some(now);
                self.window.record(now, true);
            }
            Outcome::Refused(kind) => {
                *self.refusals.entry(kind).or_default() += 1;
                self.window.record_refusal(now);
            }
            Outcome::Failed(kind, message) => {
                *self.errors.entry(kind).or_default() += 1;
                self.last_failure = Some(Failure {
                    at: now,
                    kind,
                    message: message.clone(),
                });
                self.window.record(now, false);
                let entry = self
                    .recent_failures
                    .entry(kind)
                    .or_insert((now, 0, String::new()));
                if now - entry.0 > 300_000 {
                    *entry = (now, 0, String::new());
                }
                entry.1 += 1;
                entry.2 = message.clone();
            }
        }
    }

    fn view(&self, now: i64) -> StatsView {
        StatsView {
            calls: self.calls,
            errors: self.errors.clone(),
            refusals: self.refusals.clone(),
            latency_ms: self.latency.summary(),
            last_success_at: self.last_success_at,
            last_failure: self.last_failure.clone(),
            uptime: Uptime {
                last_5m: self.window.success_ratio(now, 5),
                last_1h: self.window.success_ratio(now, 60),
                last_24h: self.window.success_ratio(now, 24 * 60),
            },
            calls_5m: self.window.calls(now, 5),
            failures_5m: self.window.failures(now, 5),
        }
    }
}

/// Success ratios (successes / (successes + failures)); null without calls.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Uptime {
    pub last_5m: Option<f64>,
    pub last_1h: Option<f64>,
    pub last_24h: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatsView {
    pub calls: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub refusals: BTreeMap<&'static str, u64>,
    pub latency_ms: window::LatencySummary,
    pub last_success_at: Option<i64>,
    pub last_failure: Option<Failure>,
    pub uptime: Uptime,
    pub calls_5m: u64,
    pub failures_5m: u64,
}

#[derive(Debug, Default)]
struct ConnectionHealth {
    plugin: String,
    stats: Stats,
    breaker: Breaker,
}

/// A scheduled job's last run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub job: &'static str,
    pub last_run_at: Option<i64>,
    pub last_outcome: Option<String>,
    pub last_error_at: Option<i64>,
    pub runs: u64,
    pub next_run_at: Option<i64>,
}

#[derive(Default)]
struct Inner {
    plugins: BTreeMap<String, Stats>,
    tenants: BTreeMap<String, Stats>,
    connections: HashMap<(String, String), ConnectionHealth>,
    jobs: BTreeMap<&'static str, JobStatus>,
    /// Alert ids raised and not yet cleared, to log each change once.
    raised: BTreeMap<String, i64>,
}

/// A connection's entry, made on first use, naming the plugin it serves now.
fn connection_entry<'a>(
    inner: &'a mut Inner,
    tenant: &str,
    connection: &str,
    plugin: &str,
) -> &'a mut ConnectionHealth {
    let c = inner
        .connections
        .entry((tenant.to_string(), connection.to_string()))
        .or_default();
    if c.plugin != plugin {
        c.plugin = plugin.to_string();
    }
    c
}

/// The health of this process's integrations.
pub struct Health {
    config: HealthConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    pub metrics: metrics::Metrics,
    started_at: i64,
}

impl Health {
    pub fn new(config: HealthConfig, clock: Arc<dyn Clock>) -> Self {
        let started_at = clock.now_ms();
        Self {
            config,
            clock,
            inner: Mutex::new(Inner::default()),
            metrics: metrics::Metrics::new(),
            started_at,
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("health lock")
    }

    /// Records one plugin call.
    pub fn record_call(
        &self,
        plugin: &str,
        tenant: &str,
        export: &'static str,
        duration: Duration,
        outcome: &Outcome,
    ) {
        let now = self.now_ms();
        self.metrics.call(plugin, tenant, export, duration, outcome);
        let mut inner = self.lock();
        inner
            .plugins
            .entry(plugin.to_string())
            .or_default()
            .record(now, Some(duration), outcome);
        if !tenant.is_empty() {
            inner.tenants.entry(tenant.to_string()).or_default().record(
                now,
                Some(duration),
                outcome,
            );
        }
    }

    /// Whether a call to `connection`'s provider may go now (its breaker).
    pub fn admit(&self, tenant: &str, connection: &str) -> Admission {
        let now = self.now_ms();
        let mut inner = self.lock();
        match inner
            .connections
            .get_mut(&(tenant.to_string(), connection.to_string()))
        {
            Some(c) => c.breaker.admit(now),
            None => Admission::Go,
        }
    }

    /// Records how a call through `connection` went; failures count against its breaker.
    pub fn connection_outcome(
        &self,
        tenant: &str,
        connection: &str,
        plugin: &str,
        outcome: &Outcome,
    ) {
        let now = self.now_ms();
        let breaker = self.config.breaker();
        let mut inner = self.lock();
        let c = connection_entry(&mut inner, tenant, connection, plugin);
        c.stats.record(now, None, outcome);
        let was_open = !matches!(c.breaker.state(), BreakerState::Closed);
        match outcome {
            Outcome::Ok => c.breaker.success(),
            Outcome::Failed(kind, message) => {
                c.breaker
                    .failure(&breaker, now, &format!("{kind}: {message}"), rand::random())
            }
            Outcome::Refused(_) => c.breaker.neutral(),
        }
        let open = !matches!(c.breaker.state(), BreakerState::Closed);
        if open != was_open {
            self.metrics.breaker_changed(plugin, open);
            if open {
                tracing::warn!(%tenant, %connection, %plugin, state = ?c.breaker.state(), "circuit breaker opened: calls to this provider pause");
            } else {
                tracing::info!(%tenant, %connection, %plugin, "circuit breaker closed: the provider answers again");
            }
        }
    }

    /// Records something that happened to a connection besides a call to its
    /// provider's API (a token refresh): counted in its numbers, not in its breaker.
    pub fn connection_event(
        &self,
        tenant: &str,
        connection: &str,
        plugin: &str,
        outcome: &Outcome,
    ) {
        let now = self.now_ms();
        let mut inner = self.lock();
        connection_entry(&mut inner, tenant, connection, plugin)
            .stats
            .record(now, None, outcome);
    }

    /// Records a scheduled job's run.
    pub fn job_ran(
        &self,
        job: &'static str,
        outcome: Result<(), String>,
        next_run_at: Option<i64>,
    ) {
        let now = self.now_ms();
        self.metrics.job_ran(job, now, outcome.is_ok());
        let mut inner = self.lock();
        let status = inner.jobs.entry(job).or_insert_with(|| JobStatus {
            job,
            last_run_at: None,
            last_outcome: None,
            last_error_at: None,
            runs: 0,
            next_run_at: None,
        });
        status.last_run_at = Some(now);
        status.runs += 1;
        status.next_run_at = next_run_at;
        match outcome {
            Ok(()) => status.last_outcome = Some("ok".into()),
            Err(e) => {
                status.last_outcome = Some(e);
                status.last_error_at = Some(now);
            }
        }
    }

    /// Forgets a connection (it was deleted): its breaker and numbers go.
    pub fn forget_connection(&self, tenant: &str, connection: &str) {
        let mut inner = self.lock();
        if let Some(c) = inner
            .connections
            .remove(&(tenant.to_string(), connection.to_string()))
            && !matches!(c.breaker.state(), BreakerState::Closed)
        {
            self.metrics.breaker_changed(&c.plugin, false);
        }
    }

    /// The connection's breaker state, for callers that report it.
    pub fn breaker_state(&self, tenant: &str, connection: &str) -> BreakerState {
        self.lock()
            .connections
            .get(&(tenant.to_string(), connection.to_string()))
            .map_or(BreakerState::Closed, |c| c.breaker.state())
    }
}

/// Overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Degraded,
    Down,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: String,
    pub severity: &'static str,
    pub subject: String,
    pub message: String,
    pub recommendation: String,
    pub since: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginReport {
    pub plugin: String,
    pub version: String,
    pub world: String,
    pub status: Status,
    #[serde(flatten)]
    #[schema(value_type = crate::api::openapi::FlattenedStats)]
    pub stats: Option<StatsView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectionReport {
    pub tenant: String,
    pub connection: String,
    pub plugin: String,
    pub status: String,
    pub breaker: BreakerState,
    #[serde(flatten)]
    pub stats: StatsView,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub status: Status,
    pub checked_at: i64,
    pub up_since: i64,
    pub store: Status,
    pub plugins: Vec<PluginReport>,
    pub tenants: BTreeMap<String, StatsView>,
    /// Connections with something to say: failures, an open breaker, a refused grant.
    pub connections: Vec<ConnectionReport>,
    pub jobs: Vec<JobStatus>,
    pub outbox: Option<crate::store::presence::OutboxStats>,
    pub alerts: Vec<Alert>,
}

impl Health {
    /// Judges everything into a report; `tenant` limits it to one tenant's
    /// view (a tenant key's), None is the operator's.
    pub async fn report(&self, app: &crate::App, tenant: Option<&str>) -> Report {
        let now = self.now_ms();
        let store_ok = app.store.ping().await.is_ok();
        let reconsent = app
            .store
            .connections_needing_reconsent()
            .await
            .unwrap_or_default();
        let outbox = app.store.outbox_stats(now).await.ok();
        let mut alerts = Vec::new();
        if !store_ok {
            alerts.push(Alert {
                id: "store".into(),
                severity: "critical",
                subject: "store".into(),
                message: "the database does not answer".into(),
                recommendation: "check the database (disk space, permissions, the PostgreSQL server); webhooks are refused with 503 until it answers, and providers retry them".into(),
                since: now,
            });
        }
        let registry = app.registry.all();
        let mut plugins = Vec::new();
        let (tenants, connections, jobs) = {
            let inner = self.lock();
            for (name, p) in registry.iter() {
                let stats = inner.plugins.get(name.as_str()).map(|s| s.view(now));
                let mut status = Status::Ok;
                // Plugins' numbers mix every tenant's calls: the operator's view only.
                if tenant.is_none()
                    && let Some(s) = &stats
                    && s.calls_5m >= self.config.alert_min_calls
                    && s.failures_5m as f64 >= self.config.alert_failure_ratio * s.calls_5m as f64
                {
                    status = Status::Degraded;
                    let kinds = inner.plugins.get(name.as_str()).map(|s| {
                        s.recent_failures
                            .iter()
                            .filter(|(_, (at, _, _))| now - at <= 300_000)
                            .max_by_key(|(_, (_, n, _))| *n)
                            .map(|(k, (_, _, m))| (*k, m.clone()))
                    });
                    let (kind, message) = kinds.flatten().unwrap_or(("failure", String::new()));
                    let pct = 100.0 * s.failures_5m as f64 / s.calls_5m as f64;
                    let advice = match kind {
                        "trap" | "memory_limit" | "output_limit" | "instantiate" => format!(
                            "the plugin itself fails: roll back to the previous version of {name} (drop the old folder in again) or fix it; {message}"
                        ),
                        "deadline" => format!(
                            "{name} runs out of time: the provider it calls is slow, or its limits.timeout_ms is too low"
                        ),
                        _ => format!(
                            "the provider behind {name} fails ({message}); check the provider's status page, the connection's credentials and the plugin's configuration"
                        ),
                    };
                    alerts.push(Alert {
                        id: format!("plugin:{name}"),
                        severity: "warning",
                        subject: format!("plugin {name}"),
                        message: format!(
                            "{name} {} fails {pct:.0} % of calls over the last 5 minutes ({} of {}, mostly {kind}) since it was loaded from {}",
                            p.manifest.version,
                            s.failures_5m,
                            s.calls_5m,
                            p.dir.display()
                        ),
                        recommendation: advice,
                        since: now,
                    });
                }
                plugins.push(PluginReport {
                    plugin: name.clone(),
                    version: p.manifest.version.to_string(),
                    world: p.world().to_string(),
                    status,
                    stats,
                });
            }
            let tenants: BTreeMap<String, StatsView> = inner
                .tenants
                .iter()
                .filter(|(t, _)| tenant.is_none_or(|only| only == t.as_str()))
                .map(|(t, s)| (t.clone(), s.view(now)))
                .collect();
            let mut connections: Vec<ConnectionReport> = inner
                .connections
                .iter()
                .filter(|((t, _), _)| tenant.is_none_or(|only| only == t))
                .filter(|(_, c)| {
                    !matches!(c.breaker.state(), BreakerState::Closed)
                        || c.stats.last_failure.is_some()
                })
                .map(|((t, name), c)| ConnectionReport {
                    tenant: t.clone(),
                    connection: name.clone(),
                    plugin: c.plugin.clone(),
                    status: crate::store::connections::ACTIVE.into(),
                    breaker: c.breaker.state(),
                    stats: c.stats.view(now),
                })
                .collect();
            for c in &connections {
                // An open breaker whose pause is over waits for the next call to
                // probe; with nothing to send, there is nothing to alert about.
                let paused = match c.breaker {
                    BreakerState::Closed => false,
                    BreakerState::Open { until } => until > now,
                    BreakerState::HalfOpen { .. } => true,
                };
                if paused {
                    let last = c
                        .stats
                        .last_failure
                        .as_ref()
                        .map(|f| format!("{}: {}", f.kind, f.message))
                        .unwrap_or_default();
                    let resume = match c.breaker {
                        BreakerState::Open { until } => format!(
                            "calls resume on their own with a probe at {}",
                            rfc3339(until)
                        ),
                        _ => "a probe call is under way".into(),
                    };
                    alerts.push(Alert {
                        id: format!("breaker:{}/{}", c.tenant, c.connection),
                        severity: "warning",
                        subject: format!("connection {} ({})", c.connection, c.plugin),
                        message: format!(
                            "the {} provider keeps failing for connection {} of tenant {} (last: {last}); its calls are paused",
                            c.plugin, c.connection, c.tenant
                        ),
                        recommendation: format!(
                            "{resume}; nothing is lost, pushes wait in the outbox. Check the provider's status page; if it persists, check the connection's credentials"
                        ),
                        since: now,
                    });
                }
            }
            connections.sort_by(|a, b| (&a.tenant, &a.connection).cmp(&(&b.tenant, &b.connection)));
            let jobs: Vec<JobStatus> = inner.jobs.values().cloned().collect();
            (tenants, connections, jobs)
        };
        let mut connections = connections;
        for r in reconsent
            .into_iter()
            .filter(|r| tenant.is_none_or(|only| only == r.tenant))
        {
            let provider = r.provider.clone().unwrap_or_default();
            alerts.push(Alert {
                id: format!("reconsent:{}/{}", r.tenant, r.name),
                severity: "warning",
                subject: format!("connection {} ({})", r.name, r.plugin),
                message: format!(
                    "the {provider} connection {} of {} (tenant {}) needs re-consent: {}",
                    r.name,
                    r.user,
                    r.tenant,
                    r.status_detail.clone().unwrap_or_default()
                ),
                recommendation: format!(
                    "send {} to /api/oauth/{provider}/start?user={}&connection={} (with tenant {}'s key) to connect again",
                    r.user, r.user, r.name, r.tenant
                ),
                since: r.updated_at,
            });
            if !connections
                .iter()
                .any(|c| c.tenant == r.tenant && c.connection == r.name)
            {
                connections.push(ConnectionReport {
                    tenant: r.tenant.clone(),
                    connection: r.name.clone(),
                    plugin: r.plugin.clone(),
                    status: crate::store::connections::NEEDS_RECONSENT.into(),
                    breaker: BreakerState::Closed,
                    stats: Stats::default().view(now),
                });
            } else if let Some(c) = connections
                .iter_mut()
                .find(|c| c.tenant == r.tenant && c.connection == r.name)
            {
                c.status = crate::store::connections::NEEDS_RECONSENT.into();
            }
        }
        if tenant.is_none() {
            for f in app.registry.failures().iter() {
                alerts.push(Alert {
                    id: format!("load:{}", f.dir.display()),
                    severity: "warning",
                    subject: format!("plugin folder {}", f.dir.display()),
                    message: format!("a plugin failed to load: {}", f.error),
                    recommendation: "fix the plugin (`presence-host plugin check <folder>` says what is wrong) and drop it in again; a version that was working keeps serving meanwhile".into(),
                    since: now,
                });
            }
            if let Some(o) = &outbox
                && o.oldest_due_at
                    .is_some_and(|due| now - due > self.config.alert_outbox_lag_ms)
            {
                alerts.push(Alert {
                    id: "outbox".into(),
                    severity: "warning",
                    subject: "status outbox".into(),
                    message: format!(
                        "{} status pushes wait, the oldest for {} s past its time",
                        o.pending,
                        (now - o.oldest_due_at.unwrap_or(now)) / 1000
                    ),
                    recommendation: "see the connections above: an open breaker or a provider's rate limit holds them; they go out when it clears".into(),
                    since: now,
                });
            }
        }
        let status = if !store_ok {
            Status::Down
        } else if alerts.is_empty() {
            Status::Ok
        } else {
            Status::Degraded
        };
        let plugins = if tenant.is_some() {
            // A tenant sees every plugin's state, not other tenants' numbers.
            plugins
                .into_iter()
                .map(|mut p| {
                    p.stats = None;
                    p
                })
                .collect()
        } else {
            plugins
        };
        Report {
            status,
            checked_at: now,
            up_since: self.started_at,
            store: if store_ok { Status::Ok } else { Status::Down },
            plugins,
            tenants,
            connections,
            jobs: if tenant.is_none() { jobs } else { Vec::new() },
            outbox: if tenant.is_none() { outbox } else { None },
            alerts,
        }
    }

    /// Logs each alert of the operator's report when it is first raised and
    /// when it clears; returns the newly raised ones.
    fn alert_changes(&self, alerts: &[Alert], now: i64) -> Vec<Alert> {
        let mut inner = self.lock();
        let mut raised = Vec::new();
        for a in alerts {
            if !inner.raised.contains_key(&a.id) {
                tracing::warn!(alert = %a.id, severity = a.severity, message = %a.message, recommendation = %a.recommendation, "alert raised");
                inner.raised.insert(a.id.clone(), now);
                raised.push(a.clone());
            }
        }
        let current: std::collections::BTreeSet<&str> =
            alerts.iter().map(|a| a.id.as_str()).collect();
        let cleared: Vec<String> = inner
            .raised
            .keys()
            .filter(|id| !current.contains(id.as_str()))
            .cloned()
            .collect();
        for id in cleared {
            inner.raised.remove(&id);
            tracing::info!(alert = %id, "alert cleared");
        }
        raised
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Re-evaluates health every few seconds so alerts are logged as they arise,
/// whether or not anyone asks, and sent to the operator through the
/// notification router when `[health] alert_to` names someone.
pub async fn run(app: Arc<crate::App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let report = app.health.report(&app, None).await;
        app.health
            .metrics
            .set_status(report.status, report.alerts.len() as i64);
        let raised = app.health.alert_changes(&report.alerts, report.checked_at);
        if let Some(to) = &app.config.health.alert_to {
            for alert in raised {
                if let Err(e) = notify_operator(&app, to, &alert).await {
                    tracing::error!(alert = %alert.id, error = %e, "could not notify the operator of an alert");
                }
            }
        }
    }
}

/// Where alerts go as notifications (`[health.alert_to]`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRecipient {
    /// The tenant the person belongs to.
    pub tenant: String,
    /// The person, whose channels the alerts go out on.
    pub user: String,
    /// The urgency class they go out with. Default `timeline`.
    #[serde(default = "default_alert_urgency")]
    pub urgency: crate::notify::Class,
}

fn default_alert_urgency() -> crate::notify::Class {
    crate::notify::Class::Timeline
}

async fn notify_operator(
    app: &crate::App,
    to: &AlertRecipient,
    alert: &Alert,
) -> Result<(), crate::store::StoreError> {
    let now = crate::store::now_ms();
    let deliver_by =
        crate::notify::deliver_by_for(app, &to.tenant, &to.user, to.urgency, now).await?;
    let n = crate::store::notifications::NewNotification {
        id: format!("ntf_{}", hex::encode(rand::random::<[u8; 10]>())),
        tenant: to.tenant.clone(),
        recipient: to.user.clone(),
        class: to.urgency,
        wedding: None,
        subject: Some(format!("presence-host alert: {}", alert.subject)),
        body: format!("{}\n\nWhat to do: {}", alert.message, alert.recommendation),
        // One notification per alert raised, whatever the replicas do.
        idempotency_key: Some(format!(
            "\u{1}alert\u{1}{}\u{1}{}",
            alert.id,
            alert.since / 60_000
        )),
        deliver_by,
        escalation: None,
    };
    app.store.submit_notification(&n).await?;
    app.engine.wake_notifications();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    struct ManualClock(AtomicI64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn windows_slide_and_refusals_do_not_count_against_uptime() {
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000_000)));
        let health = Health::new(HealthConfig::default(), clock.clone());
        let d = Duration::from_millis(3);
        for _ in 0..8 {
            health.record_call("zoom", "acme", "handle-webhook", d, &Outcome::Ok);
        }
        for _ in 0..2 {
            health.record_call(
                "zoom",
                "acme",
                "handle-webhook",
                d,
                &Outcome::Failed("trap", "unreachable".into()),
            );
        }
        health.record_call(
            "zoom",
            "acme",
            "handle-webhook",
            d,
            &Outcome::Refused("signature"),
        );
        let view = |h: &Health| h.lock().plugins["zoom"].view(h.now_ms());
        let v = view(&health);
        assert_eq!(v.calls, 11);
        assert_eq!(v.uptime.last_5m, Some(0.8));
        assert_eq!(v.errors["trap"], 2);
        assert_eq!(v.refusals["signature"], 1);
        assert_eq!(v.last_failure.as_ref().unwrap().kind, "trap");

        // Ten minutes on: the 5-minute window is empty, the hour still counts.
        clock.0.fetch_add(10 * 60_000, Ordering::SeqCst);
        let v = view(&health);
        assert_eq!(v.uptime.last_5m, None);
        assert_eq!(v.uptime.last_1h, Some(0.8));
        // Two hours on: only the day remembers.
        clock.0.fetch_add(2 * 3_600_000, Ordering::SeqCst);
        let v = view(&health);
        assert_eq!(v.uptime.last_1h, None);
        assert_eq!(v.uptime.last_24h, Some(0.8));
        clock.0.fetch_add(25 * 3_600_000, Ordering::SeqCst);
        assert_eq!(view(&health).uptime.last_24h, None);
    }

    #[test]
    fn a_connection_breaker_opens_pauses_and_closes_on_the_clock() {
        let clock = Arc::new(ManualClock(AtomicI64::new(0)));
        let config = HealthConfig {
            breaker_failures: 3,
            breaker_open_ms: 1_000,
            ..Default::default()
        };
        let health = Health::new(config, clock.clone());
        let fail = Outcome::Failed("http_5xx", "HTTP 500".into());
        for _ in 0..3 {
            assert_eq!(health.admit("acme", "slack:U1"), Admission::Go);
            health.connection_outcome("acme", "slack:U1", "slack", &fail);
        }
        let Admission::WaitUntil(until) = health.admit("acme", "slack:U1") else {
            panic!("the breaker did not open")
        };
        assert!((500..=1_000).contains(&until), "{until}");
        // Other connections are not affected.
        assert_eq!(health.admit("acme", "slack:U2"), Admission::Go);
        clock.0.store(until, Ordering::SeqCst);
        assert_eq!(health.admit("acme", "slack:U1"), Admission::Probe);
        health.connection_outcome("acme", "slack:U1", "slack", &Outcome::Ok);
        assert_eq!(health.admit("acme", "slack:U1"), Admission::Go);
        assert_eq!(
            health.breaker_state("acme", "slack:U1"),
            BreakerState::Closed
        );
    }
}
