//! Prometheus metrics (`GET /metrics`, text exposition format), with
//! `prometheus-client`. Labels are plugin, tenant, export, outcome, kind and
//! job names only, so the series stay bounded whatever the number of people.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{Outcome, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    tenant: String,
    export: String,
    outcome: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExportLabels {
    plugin: String,
    export: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
    outcome: String,
}

pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    durations: Family<ExportLabels, Histogram>,
    breakers_open: Family<PluginLabels, Gauge>,
    job_runs: Family<JobLabels, Counter>,
    job_last_run: Family<JobLabels, Gauge>,
    status: Gauge,
    alerts: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("presence");
        let calls = Family::<CallLabels, Counter>::default();
        let durations = Family::<ExportLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
        });
        let breakers_open = Family::<PluginLabels, Gauge>::default();
        let job_runs = Family::<JobLabels, Counter>::default();
        let job_last_run = Family::<JobLabels, Gauge>::default();
        let status = Gauge::default();
        let alerts = Gauge::default();
        registry.register(
            "plugin_calls",
            "Plugin calls by plugin, tenant, export and outcome (ok, refused, failed) with its kind",
            calls.clone(),
        );
        registry.register(
            "plugin_call_duration_seconds",
            "Plugin call durations",
            durations.clone(),
        );
        registry.register(
            "breakers_open",
            "Provider connections whose circuit breaker is open or half-open, by plugin",
            breakers_open.clone(),
        );
        registry.register(
            "job_runs",
            "Scheduled job runs by outcome",
            job_runs.clone(),
        );
        registry.register(
            "job_last_run_timestamp_seconds",
            "When each scheduled job last ran, by outcome",
            job_last_run.clone(),
        );
        registry.register(
            "health_status",
            "Overall health: 0 ok, 1 degraded, 2 down",
            status.clone(),
        );
        registry.register("alerts_active", "Active alerts", alerts.clone());
        Self {
            registry,
            calls,
            durations,
            breakers_open,
            job_runs,
            job_last_run,
            status,
            alerts,
        }
    }

    pub fn call(
        &self,
        plugin: &str,
        tenant: &str,
        export: &'static str,
        duration: Duration,
        outcome: &Outcome,
    ) {
        let (outcome, kind) = match outcome {
            Outcome::Ok => ("ok", ""),
            Outcome::Refused(kind) => ("refused", *kind),
            Outcome::Failed(kind, _) => ("failed", *kind),
        };
        self.calls
            .get_or_create(&CallLabels {
                plugin: plugin.into(),
                tenant: tenant.into(),
                export: export.into(),
                outcome: outcome.into(),
                kind: kind.into(),
            })
            .inc();
        self.durations
            .get_or_create(&ExportLabels {
                plugin: plugin.into(),
                export: export.into(),
            })
            .observe(duration.as_secs_f64());
    }

    pub fn breaker_changed(&self, plugin: &str, opened: bool) {
        let gauge = self.breakers_open.get_or_create(&PluginLabels {
            plugin: plugin.into(),
        });
        if opened {
            gauge.inc();
        } else {
            gauge.dec();
        }
    }

    pub fn job_ran(&self, job: &str, at_ms: i64, ok: bool) {
        let labels = JobLabels {
            job: job.into(),
            outcome: if ok { "ok" } else { "error" }.into(),
        };
        self.job_runs.get_or_create(&labels).inc();
        self.job_last_run.get_or_create(&labels).set(at_ms / 1000);
    }

    pub fn set_status(&self, status: Status, alerts: i64) {
        self.status.set(match status {
            Status::Ok => 0,
            Status::Degraded => 1,
            Status::Down => 2,
        });
        self.alerts.set(alerts);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a String does not fail");
        out
    }
}
