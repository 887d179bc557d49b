//! `presence-host classify <file>`: what a tenant's classifier chain makes of a
//! real calendar, occurrence by occurrence, without serving anything.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::Config;
use crate::calendar::{self, Occurrence, Window};
use crate::classify::{self, Decision};
use crate::model::{CalendarEvent, Transparency};
use crate::plugins::{PluginRegistry, World, registry::load_plugin};

fn instant(text: &str, zone: Tz, what: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").with_context(|| {
        format!(
            "--{what} {text:?}: expected RFC 3339 (2026-06-20T14:00:00Z) or a date (2026-06-20)"
        )
    })?;
    Ok(calendar::local(zone, date.and_hms_opt(0, 0, 0).expect("midnight")).with_timezone(&Utc))
}

fn when(o: &Occurrence) -> String {
    let start = o.zone.timestamp_millis_opt(o.event.start).single();
    let end = o.zone.timestamp_millis_opt(o.event.end).single();
    match (start, end) {
        (Some(s), Some(e)) if o.event.all_day => format!(
            "{} (all day) {}",
            s.format("%Y-%m-%d %a"),
            e.format("to %m-%d")
        ),
        (Some(s), Some(e)) if s.date_naive() == e.date_naive() => {
            format!(
                "{}-{} {}",
                s.format("%Y-%m-%d %a %H:%M"),
                e.format("%H:%M"),
                o.zone.name()
            )
        }
        (Some(s), Some(e)) => format!(
            "{} to {} {}",
            s.format("%Y-%m-%d %a %H:%M"),
            e.format("%m-%d %H:%M"),
            o.zone.name()
        ),
        _ => "?".to_string(),
    }
}

fn verdict(d: &Option<Decision>, event: &CalendarEvent) -> String {
    match d {
        Some(d) => format!(
            "{:<9} {} [{}]",
            d.classification.category.to_storage(),
            d.classification.status_text,
            d.plugin
        ),
        None if event.transparency == Transparency::Transparent => {
            "free      (transparent: no presence)".to_string()
        }
        None => "-         (busy, no wedding category)".to_string(),
    }
}

pub async fn run(
    config: &Config,
    file: &Path,
    tenant: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    tz: &str,
    compare: Option<&Path>,
) -> anyhow::Result<()> {
    let floating: Tz = tz
        .parse()
        .map_err(|_| anyhow::anyhow!("--tz {tz:?} is not an IANA time zone name"))?;
    let from = match from {
        Some(t) => instant(t, floating, "from")?,
        None => Utc::now(),
    };
    let to = match to {
        Some(t) => instant(t, floating, "to")?,
        None => from + chrono::TimeDelta::days(30),
    };
    if to <= from {
        bail!("--to must be after --from");
    }
    // Progress goes to stderr, and only when it is a terminal (indicatif
    // hides it otherwise): the listing on stdout stays clean for pipes.
    let progress =
        indicatif::ProgressBar::new_spinner().with_finish(indicatif::ProgressFinish::AndClear);
    progress.enable_steady_tick(std::time::Duration::from_millis(120));
    progress.set_message(format!("reading {}", file.display()));
    let reading = calendar::read_file(file, Window { from, to }, floating)?;
    for w in &reading.warnings {
        progress.suspend(|| eprintln!("warning: {}: {w}", file.display()));
    }
    progress.set_message("loading plugins");

    let runtime = Arc::new(crate::runtime::Runtime::standalone(4, Some(config.cache_dir())).await?);
    let registry = PluginRegistry::new(
        runtime.clone(),
        config.plugins_dir(),
        config.plugins.clone(),
    );
    let report = registry.reload().await;
    for f in &report.failed {
        progress.suspend(|| eprintln!("warning: plugin not loaded: {}", f.error));
    }
    let tenant = tenant.unwrap_or(crate::webhooks::DEFAULT_TENANT);
    // A chain set through the admin API lives in the store: read it when there is one.
    let stored = if config.database_url.is_some() || config.data_dir.join("presence.db").exists() {
        let store = crate::open_store(config).await?;
        let chain = store.tenant_classifiers(tenant).await?;
        store.close().await;
        chain
    } else {
        None
    };
    let chain = stored.unwrap_or_else(|| config.classifiers_for(tenant));
    let other = match compare {
        Some(path) => {
            let folder = crate::cli::plugin_folder(path)?;
            let rt = runtime.clone();
            let plugin = tokio::task::spawn_blocking(move || load_plugin(&rt, &folder, None))
                .await?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if plugin.world() != World::Classifier {
                bail!("{}: --compare takes a classifier plugin", path.display());
            }
            Some(plugin)
        }
        None => None,
    };

    progress.suspend(|| {
        println!(
            "{} occurrence(s) in {} from {} to {}, tenant {tenant}, chain [{}]",
            reading.occurrences.len(),
            file.display(),
            from.format("%Y-%m-%d %H:%M UTC"),
            to.format("%Y-%m-%d %H:%M UTC"),
            chain.join(", ")
        )
    });
    progress.set_length(reading.occurrences.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} classified, {eta} left")
            .expect("a valid template"),
    );
    let mut disagreements = 0;
    for o in &reading.occurrences {
        progress.inc(1);
        let decision = if o.event.transparency == Transparency::Transparent {
            None
        } else {
            classify::classify(&registry, &chain, tenant, &o.event).await
        };
        progress.suspend(|| {
            println!(
                "{:<42} {:<60} {}",
                when(o),
                verdict(&decision, &o.event),
                o.event.title
            )
        });
        if let Some(other) = &other {
            let theirs = match o.event.transparency {
                Transparency::Transparent => None,
                Transparency::Opaque => runtime
                    .classify(&other.pre, &other.grants, tenant, &o.event)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .map(|classification| Decision {
                        classification,
                        plugin: other.name().to_string(),
                    }),
            };
            let same = decision.as_ref().map(|d| &d.classification)
                == theirs.as_ref().map(|d| &d.classification);
            if !same {
                disagreements += 1;
                progress.suspend(|| {
                    println!(
                        "  differs: {} says {}",
                        other.name(),
                        verdict(&theirs, &o.event)
                    )
                });
            }
        }
    }
    progress.finish_and_clear();
    if let Some(other) = &other {
        println!(
            "{disagreements} occurrence(s) classified differently by {}",
            other.name()
        );
    }
    Ok(())
}
