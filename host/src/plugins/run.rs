//! `presence-host plugin run`: one call of a plugin against a recorded input,
//! outside any server, with a report of what it did and cost (time, fuel,
//! peak memory, output size, every host import it called).
//!
//! The host imports are the real ones over a throwaway in-memory store, seeded
//! from an imports file (secrets, kv, settings); outbound HTTP is answered from
//! the same file's recordings when it has any, and the plugin's wall clock can
//! be set to when a recorded request was made, so its signature is still fresh.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::PluginOverrides;
use crate::model;
use crate::plugins::manifest::MANIFEST_FILE;
use crate::plugins::registry::load_plugin;
use crate::plugins::{Manifest, World};
use crate::runtime::Runtime;
use crate::runtime::profile::{CallProfile, RecordedAnswer, Stand};
use crate::store::SecretName;

/// The plugin calls a run can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Export {
    /// A provider's `handle-webhook`, with a recorded HTTP request.
    HandleWebhook,
    /// A classifier's `classify`, with a calendar event.
    Classify,
    /// A channel provider's `send-notification`, with a message.
    SendNotification,
}

impl Export {
    fn name(self) -> &'static str {
        match self {
            Self::HandleWebhook => "handle-webhook",
            Self::Classify => "classify",
            Self::SendNotification => "send-notification",
        }
    }
}

/// What a run is asked to do.
#[derive(Debug)]
pub struct RunRequest<'a> {
    pub plugin: &'a Path,
    pub input: &'a Path,
    pub export: Option<Export>,
    pub imports: Option<&'a Path>,
    pub tenant: &'a str,
    pub connection: &'a str,
    /// The wall clock the plugin reads, as of the call.
    pub at: Option<SystemTime>,
    /// The host configuration's `[plugins.<name>]` settings.
    pub overrides: &'a BTreeMap<String, PluginOverrides>,
}

/// The imports file: what the host's imports hold for the run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Imports {
    /// Secret values by name, as text (the plugin can only use them, never read them).
    secrets: BTreeMap<String, String>,
    /// The plugin's kv entries for the tenant, as text.
    kv: BTreeMap<String, String>,
    /// Settings that replace the manifest's `[config]` values.
    config: BTreeMap<String, String>,
    /// Recorded answers to outbound requests; without the key, requests go out
    /// for real (under the manifest's allow-list).
    http: Option<Vec<RecordedAnswer>>,
}

/// A recorded webhook request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedRequest {
    #[serde(default = "post")]
    method: String,
    #[serde(default)]
    url: Option<String>,
    /// An object, or a list of `[name, value]` pairs (for repeated headers).
    #[serde(default)]
    headers: Headers,
    /// The body exactly as received, as text; or `body_base64` for bytes.
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
}

fn post() -> String {
    "POST".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Headers {
    #[default]
    None,
    Map(BTreeMap<String, String>),
    Pairs(Vec<(String, String)>),
}

/// A calendar event as a file gives it: times as RFC 3339 or milliseconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedEvent {
    #[serde(default = "event_id")]
    id: String,
    title: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    attendees: Vec<String>,
    start: Value,
    end: Value,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    all_day: bool,
    #[serde(default)]
    transparency: model::Transparency,
    #[serde(default)]
    online_meeting_url: Option<String>,
}

fn event_id() -> String {
    "run".into()
}

fn instant(value: &Value, field: &str) -> anyhow::Result<model::Instant> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .with_context(|| format!("{field}: {n} is not milliseconds since the epoch")),
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis())
            .with_context(|| {
                format!("{field}: {text:?} is not RFC 3339 (2026-06-20T14:00:00+01:00)")
            }),
        other => bail!("{field}: expected RFC 3339 text or milliseconds, found {other}"),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        anyhow::anyhow!(
            "{}: not {what}: {} at {}",
            path.display(),
            e.inner(),
            e.path()
        )
    })
}

/// What a run did and cost; serialized, the `--json` report.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub plugin: String,
    pub version: String,
    pub export: &'static str,
    pub tenant: String,
    /// `{"ok": ...}` with what the call returned, `{"fault": ...}` when the
    /// plugin refused, `{"failed": ...}` when the call itself failed.
    pub result: Value,
    pub cost: CallProfile,
    /// Whether the call returned a success.
    #[serde(skip)]
    pub succeeded: bool,
}

/// Runs one call and reports it.
pub async fn run(req: RunRequest<'_>) -> anyhow::Result<RunReport> {
    let imports: Imports = match req.imports {
        Some(path) => read_json(path, "an imports file")?,
        None => Imports::default(),
    };
    let folder = crate::cli::plugin_folder(req.plugin)?;
    let runtime = Arc::new(Runtime::for_run(Stand::new(imports.http, req.at)).await?);
    let manifest = Manifest::load(&folder.join(MANIFEST_FILE))?;
    let mut overrides = req
        .overrides
        .get(manifest.name.as_str())
        .cloned()
        .unwrap_or_default();
    overrides.config.extend(imports.config);
    let rt = runtime.clone();
    let plugin = tokio::task::spawn_blocking(move || load_plugin(&rt, &folder, Some(&overrides)))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = &runtime.services().store;
    for (name, value) in &imports.secrets {
        let name = SecretName::parse(name).map_err(anyhow::Error::msg)?;
        store.set_secret(&name, value.as_bytes()).await?;
    }
    for (key, value) in &imports.kv {
        crate::capabilities::kv::set(store, &plugin.grants, req.tenant, key, value.as_bytes())
            .await
            .map_err(|e| anyhow::anyhow!("kv entry {key:?} from the imports file: {e}"))?;
    }

    let export = match (req.export, plugin.world()) {
        (Some(e), world) => {
            let of = match e {
                Export::Classify => World::Classifier,
                Export::HandleWebhook | Export::SendNotification => World::Provider,
            };
            if of != world {
                bail!(
                    "{} is a {of}'s call; {} is a {world}",
                    e.name(),
                    plugin.name()
                );
            }
            e
        }
        (None, World::Provider) => Export::HandleWebhook,
        (None, World::Classifier) => Export::Classify,
    };
    let (outcome, succeeded) = match export {
        Export::HandleWebhook => {
            let recorded: RecordedRequest = read_json(req.input, "a recorded webhook request")?;
            let body = match (recorded.body, recorded.body_base64) {
                (Some(_), Some(_)) => bail!(
                    "{}: give body or body_base64, not both",
                    req.input.display()
                ),
                (Some(text), None) => text.into_bytes(),
                (None, Some(b64)) => {
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim())
                        .with_context(|| format!("{}: body_base64", req.input.display()))?
                }
                (None, None) => Vec::new(),
            };
            let headers = match recorded.headers {
                Headers::None => Vec::new(),
                Headers::Map(m) => m.into_iter().collect(),
                Headers::Pairs(p) => p,
            };
            let request = model::WebhookRequest {
                method: recorded.method,
                url: recorded
                    .url
                    .unwrap_or_else(|| format!("http://localhost/api/webhooks/{}", plugin.name())),
                headers,
                body,
                tenant: Some(req.tenant.to_string()),
            };
            match runtime
                .handle_webhook(&plugin.pre, &plugin.grants, req.tenant, &request)
                .await
            {
                Ok(Ok(outcome)) => (json!({"ok": webhook_outcome(&outcome)}), true),
                Ok(Err(fault)) => (json!({"fault": fault.to_string()}), false),
                Err(e) => (json!({"failed": e.kind.to_string()}), false),
            }
        }
        Export::Classify => {
            let e: RecordedEvent = read_json(req.input, "a calendar event")?;
            let event = model::CalendarEvent {
                start: instant(&e.start, "start")?,
                end: instant(&e.end, "end")?,
                id: e.id,
                title: e.title,
                description: e.description,
                location: e.location,
                attendees: e.attendees,
                time_zone: e.time_zone,
                all_day: e.all_day,
                transparency: e.transparency,
                online_meeting_url: e.online_meeting_url,
            };
            match runtime
                .classify(&plugin.pre, &plugin.grants, req.tenant, &event)
                .await
            {
                Ok(c) => (json!({"ok": c}), true),
                Err(e) => (json!({"failed": e.kind.to_string()}), false),
            }
        }
        Export::SendNotification => {
            let message: model::Notification = read_json(req.input, "a notification")?;
            match runtime
                .send_notification(
                    &plugin.pre,
                    &plugin.grants,
                    req.tenant,
                    req.connection,
                    &message,
                )
                .await
            {
                Ok(Ok(receipt)) => (json!({"ok": receipt}), true),
                Ok(Err(fault)) => (json!({"fault": fault.to_string()}), false),
                Err(e) => (json!({"failed": e.kind.to_string()}), false),
            }
        }
    };
    let profile = runtime
        .take_profiles()
        .pop()
        .context("the call left no profile")?;
    Ok(RunReport {
        plugin: plugin.name().to_string(),
        version: plugin.manifest.version.to_string(),
        export: export.name(),
        tenant: req.tenant.to_string(),
        result: outcome,
        cost: profile,
        succeeded,
    })
}

fn webhook_outcome(o: &model::WebhookOutcome) -> Value {
    let body = match std::str::from_utf8(&o.response.body) {
        Ok(text) => json!(text),
        Err(_) => {
            json!({"base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &o.response.body)})
        }
    };
    json!({
        "response": {
            "status": o.response.status,
            "headers": o.response.headers,
            "body": body,
        },
        "delivery_id": o.delivery_id,
        "signals": o.signals,
        "events": o.events,
    })
}

impl RunReport {
    /// The report for a person reading a terminal.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} {} · {} · tenant {}\n",
            self.plugin, self.version, self.export, self.tenant
        );
        let result = &self.result;
        if let Some(fault) = result["fault"].as_str() {
            out.push_str(&format!("result: the plugin refused: {fault}\n"));
        } else if let Some(failed) = result["failed"].as_str() {
            out.push_str(&format!("result: the call failed: {failed}\n"));
        } else {
            let ok = &result["ok"];
            out.push_str("result: ok\n");
            if ok["response"].is_object() {
                out.push_str(&format!(
                    "  response {} {}\n",
                    ok["response"]["status"], ok["response"]["body"]
                ));
                if let Some(id) = ok["delivery_id"].as_str() {
                    out.push_str(&format!("  delivery id {id}\n"));
                }
                for s in ok["signals"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "  signal   {} {} {}{}\n",
                        s["user"].as_str().unwrap_or("?"),
                        s["availability"].as_str().unwrap_or("?"),
                        s["status_text"]
                            .as_str()
                            .map(|t| format!("{t:?}"))
                            .unwrap_or_default(),
                        if s["clears"] == true { " (clears)" } else { "" },
                    ));
                }
                for e in ok["events"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "  event    {} {:?}\n",
                        e["user"].as_str().unwrap_or("?"),
                        e["event"]["title"].as_str().unwrap_or("?"),
                    ));
                }
            } else {
                out.push_str(&format!("  {ok}\n"));
            }
        }
        let c = &self.cost;
        out.push_str(&format!(
            "cost:\n  time         {}\n  fuel         {} (about one per WebAssembly instruction)\n  peak memory  {} of {}\n  output       {} of {}\n  host calls   {}\n",
            fmt_micros(c.micros),
            group_digits(c.fuel),
            fmt_bytes(c.peak_memory_bytes),
            fmt_bytes(c.memory_limit_bytes),
            fmt_bytes(c.output_bytes),
            fmt_bytes(c.output_limit_bytes),
            c.host_call_count
        ));
        let unlisted =
            c.host_call_count as usize - c.host_calls.len().min(c.host_call_count as usize);
        for (i, call) in c.host_calls.iter().enumerate() {
            let answer = if call.answer.is_empty() {
                "done"
            } else {
                &call.answer
            };
            out.push_str(&format!(
                "    {:>2}. {:<20} {} -> {answer}  ({})\n",
                i + 1,
                call.import,
                call.args,
                fmt_micros(call.micros)
            ));
        }
        if unlisted > 0 {
            out.push_str(&format!("    ... and {unlisted} more\n"));
        }
        out
    }
}

fn fmt_micros(us: u64) -> String {
    let d = Duration::from_micros(us);
    if us >= 1_000_000 {
        format!("{:.2} s", d.as_secs_f64())
    } else if us >= 1_000 {
        format!("{:.2} ms", us as f64 / 1_000.0)
    } else {
        format!("{us} µs")
    }
}

fn fmt_bytes(n: usize) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `--at`: RFC 3339, or seconds since the epoch (a Slack timestamp header).
pub fn parse_at(text: &str) -> anyhow::Result<SystemTime> {
    let ms = match text.parse::<u64>() {
        Ok(seconds) => seconds.saturating_mul(1000),
        Err(_) => {
            let t = chrono::DateTime::parse_from_rfc3339(text).with_context(|| {
                format!(
                    "--at {text:?}: expected RFC 3339 (2026-06-20T14:00:00Z) or seconds since the epoch"
                )
            })?;
            u64::try_from(t.timestamp_millis())
                .with_context(|| format!("--at {text:?}: before 1970"))?
        }
    };
    // Seconds, not milliseconds: year 10000 is as far as anyone means.
    if ms >= LATEST_AT_MS {
        bail!("--at {text:?}: after the year 9999 (seconds since the epoch are expected)");
    }
    Ok(UNIX_EPOCH + Duration::from_millis(ms))
}

/// 10000-01-01T00:00:00Z in milliseconds since the epoch.
const LATEST_AT_MS: u64 = 253_402_300_800_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_takes_rfc3339_or_epoch_seconds() {
        assert_eq!(
            parse_at("1531420618").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_531_420_618)
        );
        assert_eq!(
            parse_at("2018-07-12T18:36:58Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_531_420_618)
        );
        assert!(
            parse_at("yesterday")
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
        // Milliseconds by mistake, or anything absurd, is refused, not a panic.
        assert!(
            parse_at("1780048800000")
                .unwrap_err()
                .to_string()
                .contains("year 9999")
        );
        assert!(parse_at(&u64::MAX.to_string()).is_err());
    }

    #[test]
    fn digits_are_grouped_and_sizes_scaled() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(1234567), "1,234,567");
        assert_eq!(group_digits(123), "123");
        assert_eq!(fmt_bytes(64), "64 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(3 << 20), "3.0 MiB");
        assert_eq!(fmt_micros(1500), "1.50 ms");
    }
}
