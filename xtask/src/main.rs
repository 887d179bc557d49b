//! `cargo xtask`: the project's build steps that cargo alone cannot express.
//!
//! - `cargo xtask plugins`: build every bundled plugin (`plugins/*` with a
//!   `plugin.toml`) for wasm32-wasip2 and install it as
//!   `target/plugins/<name>/{plugin.wasm,plugin.toml}`, the host's default plugins folder.
//! - `cargo xtask test-plugins`: build the test fixtures (`tests/plugins/*`) into
//!   `target/test-plugins/<crate>.wasm`.
//! - `cargo xtask run [-- <serve args>]`: `plugins`, then `presence-host serve`.
//! - `cargo xtask test [-- <cargo test args>]`: `plugins`, `test-plugins`, Debian's
//!   `chromium` for the dashboard's browser test (installed with apt-get when
//!   absent and possible), then the whole test suite; then the host's
//!   end-to-end suite again on PostgreSQL (`$PRESENCE_TEST_POSTGRES`, by default
//!   the local server's database `test`; empty skips it).
//!
//! Plugins are built one world at a time: the SDK's `classifier` and `provider`
//! features must not be unified into one component.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

struct PluginCrate {
    dir: PathBuf,
    package: String,
    world: String,
    /// The name from plugin.toml (the install folder's name).
    name: String,
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.skip_while(|a| a == "--").collect();
    match task.as_str() {
        "plugins" => build_bundled(&root),
        "test-plugins" => build_fixtures(&root),
        "run" => {
            build_bundled(&root)?;
            let mut cmd = cargo();
            cmd.args(["run", "--package", "presence-host", "--", "serve"])
                .args(&rest);
            run(cmd)
        }
        "test" => {
            build_bundled(&root)?;
            build_fixtures(&root)?;
            ensure_browser();
            let mut cmd = cargo();
            cmd.args(["test", "--workspace"]).args(&rest);
            run(cmd)?;
            // The second pass: the host's end-to-end suite again, every host
            // on a schema of its own on PostgreSQL.
            let Some(server) = postgres_for_tests()? else {
                return Ok(());
            };
            eprintln!("xtask: the end-to-end suite again, on PostgreSQL ({server})");
            let mut cmd = cargo();
            cmd.args(["test", "--package", "presence-host", "--test", "*"])
                .args(&rest)
                .env(POSTGRES_ENV, &server);
            run(cmd)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <plugins | test-plugins | run [-- serve args] | test [-- cargo test args]>"
            );
            bail!("unknown task {task:?}")
        }
    }
}

/// Names the PostgreSQL server of the suite's second pass (as the tests' support reads it).
const POSTGRES_ENV: &str = "PRESENCE_TEST_POSTGRES";

/// The PostgreSQL server the suite's second pass runs on: `$PRESENCE_TEST_POSTGRES`,
/// or the local server (127.0.0.1:5432, database `test`). Set the variable
/// empty to skip the pass; a server that does not answer is an error, not a
/// silent skip.
fn postgres_for_tests() -> anyhow::Result<Option<String>> {
    let server = match std::env::var(POSTGRES_ENV) {
        Ok(url) if url.is_empty() => {
            eprintln!("xtask: {POSTGRES_ENV} is empty: skipping the PostgreSQL pass");
            return Ok(None);
        }
        Ok(url) => url,
        Err(_) => "postgres://postgres@127.0.0.1:5432/test".to_string(),
    };
    let hostport = server
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split(['/', '?']).next())
        .map(|auth| auth.rsplit('@').next().unwrap_or(auth))
        .filter(|h| !h.is_empty())
        .unwrap_or("127.0.0.1:5432");
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    };
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3)).is_ok()
        });
    if !reachable {
        bail!(
            "PostgreSQL at {hostport} does not answer: start it, point {POSTGRES_ENV} at one, \
             or set {POSTGRES_ENV}= (empty) to skip the PostgreSQL pass"
        );
    }
    Ok(Some(server))
}

/// Installs Debian's `chromium` for the browser test when it is missing and
/// this is a Debian machine where we may (root, apt-get). Best effort: the
/// browser test says clearly that it skipped when there is no browser.
fn ensure_browser() {
    let found = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    if found("chromium") || !found("apt-get") {
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root {
        eprintln!(
            "xtask: chromium is not installed and this is not root; the browser test will skip"
        );
        return;
    }
    eprintln!("xtask: installing Debian's chromium for the dashboard's browser test");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").arg("update").status();
        if !install() {
            eprintln!("xtask: could not install chromium; the browser test will skip");
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Adds the wasm32-wasip2 target through rustup when it is missing.
fn ensure_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (the wasm32-wasip2 target is added with it)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("xtask: adding the {TARGET} target");
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", TARGET]);
    run(cmd)
}

/// The string at `path` (dot-separated keys) in a TOML file.
fn toml_string(file: &Path, path: &str) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", file.display()))?;
    let mut value = &toml::Value::Table(table);
    for key in path.split('.') {
        value = value
            .get(key)
            .with_context(|| format!("{}: no {path}", file.display()))?;
    }
    value
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{}: {path} is not a string", file.display()))
}

fn plugin_crates(parent: &Path) -> anyhow::Result<Vec<PluginCrate>> {
    let mut crates = Vec::new();
    for entry in
        std::fs::read_dir(parent).with_context(|| format!("reading {}", parent.display()))?
    {
        let dir = entry?.path();
        let (manifest, cargo_toml) = (dir.join("plugin.toml"), dir.join("Cargo.toml"));
        if !manifest.is_file() || !cargo_toml.is_file() {
            continue;
        }
        crates.push(PluginCrate {
            package: toml_string(&cargo_toml, "package.name")?,
            world: toml_string(&manifest, "world")?,
            name: toml_string(&manifest, "name")?,
            dir,
        });
    }
    crates.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(crates)
}

/// Builds the crates, one cargo invocation per world.
fn build(root: &Path, crates: &[PluginCrate]) -> anyhow::Result<PathBuf> {
    ensure_target()?;
    let mut worlds: Vec<&str> = crates.iter().map(|c| c.world.as_str()).collect();
    worlds.sort();
    worlds.dedup();
    for world in worlds {
        let mut cmd = cargo();
        cmd.args(["build", "--target", TARGET, "--profile", PROFILE]);
        for c in crates.iter().filter(|c| c.world == world) {
            cmd.args(["--package", &c.package]);
        }
        run(cmd)?;
    }
    Ok(root.join("target").join(TARGET).join(PROFILE))
}

fn wasm_name(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

fn build_bundled(root: &Path) -> anyhow::Result<()> {
    let crates = plugin_crates(&root.join("plugins"))?;
    let out = build(root, &crates)?;
    let install = root.join("target").join("plugins");
    for c in &crates {
        let dest = install.join(&c.name);
        std::fs::create_dir_all(&dest)?;
        // Copy to a temporary name and rename, so a running host's hot reload
        // never reads half a component.
        let tmp = dest.join(".plugin.wasm.tmp");
        std::fs::copy(out.join(wasm_name(&c.package)), &tmp)?;
        std::fs::copy(c.dir.join("plugin.toml"), dest.join("plugin.toml"))?;
        std::fs::rename(&tmp, dest.join("plugin.wasm"))?;
    }
    eprintln!(
        "xtask: {} plugins installed in {}",
        crates.len(),
        install.display()
    );
    Ok(())
}

fn build_fixtures(root: &Path) -> anyhow::Result<()> {
    let crates = plugin_crates(&root.join("tests").join("plugins"))?;
    let out = build(root, &crates)?;
    let install = root.join("target").join("test-plugins");
    std::fs::create_dir_all(&install)?;
    for c in &crates {
        std::fs::copy(
            out.join(wasm_name(&c.package)),
            install.join(wasm_name(&c.package)),
        )?;
    }
    eprintln!(
        "xtask: {} test plugins built in {}",
        crates.len(),
        install.display()
    );
    Ok(())
}
