//! Shared by the benchmarks: the same event for the sandboxed and the native
//! side, and the real binary started on loopback.
#![allow(dead_code)] // each benchmark uses its own part of this file

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use presence_host::model::{CalendarEvent, Transparency};

/// A realistic calendar event whose title is `title`.
pub fn event(id: usize, title: &str) -> CalendarEvent {
    CalendarEvent {
        id: format!("evt-{id}"),
        title: title.to_string(),
        description: Some("Bring the floor plan and the timeline".into()),
        location: Some("Old Barn, Ashford".into()),
        attendees: vec!["planner@example.com".into(), "couple@example.com".into()],
        start: 1_781_960_400_000 + id as i64 * 60_000,
        end: 1_781_964_000_000 + id as i64 * 60_000,
        time_zone: Some("Europe/London".into()),
        all_day: false,
        transparency: Transparency::Opaque,
        online_meeting_url: None,
    }
}

/// The same event as the natively compiled plugins take it.
pub fn native(e: &CalendarEvent) -> presence_sdk::classifier::CalendarEvent {
    presence_sdk::classifier::CalendarEvent {
        id: e.id.clone(),
        title: e.title.clone(),
        description: e.description.clone(),
        location: e.location.clone(),
        attendees: e.attendees.clone(),
        start: e.start,
        end: e.end,
        time_zone: e.time_zone.clone(),
        all_day: e.all_day,
        transparency: presence_sdk::classifier::Transparency::Opaque,
        online_meeting_url: e.online_meeting_url.clone(),
    }
}

/// Starts `presence-host serve` on a free loopback port and waits until it is
/// ready; returns the process and its base URL.
pub fn serve(data_dir: &Path, plugins_dir: &Path) -> (Child, String) {
    serve_with_env(data_dir, plugins_dir, &[])
}

/// [`serve`] with extra environment variables (`PRESENCE_ADMIN_TOKEN`, ...).
pub fn serve_with_env(
    data_dir: &Path,
    plugins_dir: &Path,
    env: &[(&str, &str)],
) -> (Child, String) {
    serve_logging_to(data_dir, plugins_dir, env, Stdio::null())
}

/// [`serve_with_env`], with the host's log (warnings and errors) written to
/// `log`, so that a benchmark can say what went wrong under load.
pub fn serve_logged(
    data_dir: &Path,
    plugins_dir: &Path,
    env: &[(&str, &str)],
    log: &Path,
) -> (Child, String) {
    let log = std::fs::File::create(log).unwrap();
    serve_logging_to(data_dir, plugins_dir, env, log.into())
}

fn serve_logging_to(
    data_dir: &Path,
    plugins_dir: &Path,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_presence-host"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--plugins-dir")
        .arg(plugins_dir)
        .env("PRESENCE_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let url = ready_address(&mut child, "presence-host listening on ");
    (child, url)
}

/// What a child process started with piped stdout says after `prefix` on its
/// first line (the address it listens on, once ready).
pub fn ready_address(child: &mut Child, prefix: &str) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("the process did not start: {line:?}"))
        .to_string()
}

/// The `p` quantile (0.0-1.0) of sorted durations; zero for none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// A duration in the unit that reads best.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.2} µs", s * 1e6)
    }
}

/// A `/proc/<pid>/status` size field (`VmHWM`, `VmRSS`) in bytes; 0 when unreadable.
pub fn proc_status(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
