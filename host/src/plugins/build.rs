//! `presence-host plugin build`: a plugin crate built for wasm32-wasip2 and
//! placed beside its `plugin.toml` as `plugin.wasm`, ready for `plugin check`
//! and for the plugins folder.
//!
//! Cargo does the building; the component it writes is found from cargo's own
//! JSON messages (so workspaces and `CARGO_TARGET_DIR` need no guessing). A
//! spinner shows what is being compiled when standard error is a terminal,
//! and nothing otherwise; cargo's diagnostics are shown when the build fails.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// The target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Builds the plugin crate in `dir`; the path of the `plugin.wasm` written.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} has no Cargo.toml: give the plugin crate's folder (made by `presence-host plugin new`)",
            dir.display()
        );
    }
    if !dir.join("plugin.toml").is_file() {
        bail!(
            "{} has no plugin.toml: a plugin crate keeps its manifest beside Cargo.toml",
            dir.display()
        );
    }
    target_installed(dir)?;
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("reading {}", manifest.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // In the crate's folder: cargo reads its `.cargo/config.toml` (the
    // scaffold's stack size) and rustup its toolchain file from there.
    let mut child = Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", TARGET])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo")?;
    // Cargo's own output, shown only if the build fails.
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let progress =
        indicatif::ProgressBar::new_spinner().with_finish(indicatif::ProgressFinish::AndClear);
    progress.enable_steady_tick(Duration::from_millis(120));
    progress.set_message(format!("building {} for {TARGET}", dir.display()));
    let mut compiled = 0;
    let mut wasm = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        compiled += 1;
        let name = message["target"]["name"].as_str().unwrap_or_default();
        progress.set_message(format!("compiled {compiled} crates ({name})"));
        let ours = message["manifest_path"]
            .as_str()
            .is_some_and(|m| Path::new(m) == manifest)
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if ours
            && let Some(file) = message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_str)
                .find(|f| f.ends_with(".wasm"))
        {
            wasm = Some(PathBuf::from(file));
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    progress.finish_and_clear();
    let output = errors.join().unwrap_or_default();
    if !status.success() {
        bail!("cargo build failed:\n{}", output.trim_end());
    }
    let Some(wasm) = wasm else {
        bail!(
            "cargo built no .wasm for {}: a plugin crate's [lib] has crate-type = [\"cdylib\"]",
            manifest.display()
        );
    };
    let installed = dir.join("plugin.wasm");
    std::fs::copy(&wasm, &installed)
        .with_context(|| format!("copying {} to {}", wasm.display(), installed.display()))?;
    Ok(installed)
}

/// Fails with what to run when rustup says the target is missing (without
/// rustup there is nothing to ask; cargo then says so itself).
fn target_installed(dir: &Path) -> anyhow::Result<()> {
    let Ok(out) = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && !installed.lines().any(|t| t.trim() == TARGET) {
        bail!("the {TARGET} target is not installed: run `rustup target add {TARGET}`");
    }
    Ok(())
}
