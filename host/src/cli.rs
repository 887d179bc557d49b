//! The command line: `serve`, `secret set|list`, `plugin list|check|new`,
//! `tenant create|list`, `api-key create|list|revoke|rotate`, `key status|reseal`,
//! `classify`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::plugins::manifest::MANIFEST_FILE;
use crate::plugins::registry::{load_plugin, plugin_dirs};
use crate::runtime::Runtime;
use crate::store::SecretName;
use crate::store::audit::Actor;
use crate::{App, Config};

#[derive(Debug, Parser)]
#[command(name = "presence-host", version = version_line(), about = "Presence and notification routing for wedding vendors, with sandboxed WebAssembly plugins")]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Command,
}

fn version_line() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (accepts wedsync:presence@0.1.0)"
    )
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// A TOML configuration file; flags and PRESENCE_* variables override it.
    #[arg(long, env = "PRESENCE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Where the database, master key and compiled-plugin cache live [default: ./data].
    #[arg(long, env = "PRESENCE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// The folder of plugins to load [default: the bundled plugins in target/plugins].
    #[arg(long, env = "PRESENCE_PLUGINS_DIR", global = true)]
    pub plugins_dir: Option<PathBuf>,
    /// Database URL [default: SQLite in the data directory].
    #[arg(long, env = "PRESENCE_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server with the plugins in the plugins folder.
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "PRESENCE_LISTEN")]
        listen: Option<SocketAddr>,
    },
    /// Manage secrets (stored encrypted in the data directory's database).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Inspect and check plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// The master key: which keys sealed what, and rewriting records under the current key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage tenants (agencies).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage tenants' API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// The configuration: `config reference` prints every key, its default and its variable.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Dry run: classify every event occurrence of a calendar file (.ics, Google or Graph JSON).
    Classify {
        file: PathBuf,
        /// Use this tenant's classifier chain [default: the default chain].
        #[arg(long)]
        tenant: Option<String>,
        /// Window start: RFC 3339 or YYYY-MM-DD [default: now].
        #[arg(long)]
        from: Option<String>,
        /// Window end: RFC 3339 or YYYY-MM-DD [default: 30 days after the start].
        #[arg(long)]
        to: Option<String>,
        /// The zone floating and all-day times are read in [default: UTC].
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Another classifier (its folder, plugin.toml or .wasm): print where it disagrees with the chain.
        #[arg(long)]
        compare: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret; its value is read from standard input (one trailing newline is dropped).
    Set {
        name: String,
        /// The value is base64 (a `whsec_` prefix, as Standard Webhooks secrets have, is dropped first).
        #[arg(long)]
        base64: bool,
    },
    /// List the names of stored secrets (never their values).
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Show the current key's id and how many sealed records each key id holds.
    Status,
    /// Re-seal every record under the current key (after a rotation, with the
    /// old key in `previous_master_keys`); then the old key can be dropped.
    Reseal,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Register a tenant.
    Create {
        name: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List tenants.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Issue a key for a tenant; it is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "api key")]
        label: String,
        /// The key stops working after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List a tenant's keys (never their secrets).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key at once.
    Revoke {
        #[arg(long)]
        tenant: String,
        id: String,
    },
    /// Issue a replacement; the old key keeps working for the grace period.
    Rotate {
        #[arg(long)]
        tenant: String,
        id: String,
        #[arg(long, default_value_t = 3600)]
        grace_seconds: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration reference (Markdown; `docs/configuration.md`).
    Reference,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load every plugin of the plugins folder and report each one's state.
    List,
    /// Check a plugin (its folder, its plugin.toml or its .wasm) against this host's WIT, without serving.
    Check { path: PathBuf },
    /// Build a plugin crate for wasm32-wasip2 (release), put the component
    /// beside its plugin.toml as plugin.wasm, and check it.
    Build {
        /// The plugin crate's folder.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Call a plugin once on a recorded input (a webhook request, a calendar
    /// event or a message, as JSON) and report what it did and cost: time,
    /// fuel, peak memory, output size and every host import it called.
    Run {
        /// The plugin: its folder, its plugin.toml or its .wasm.
        path: PathBuf,
        /// The recorded input, as JSON.
        input: PathBuf,
        /// The call to make (default: handle-webhook for providers, classify
        /// for classifiers).
        #[arg(long, value_enum)]
        export: Option<crate::plugins::run::Export>,
        /// A JSON file with what the host imports hold: `secrets`, `kv`,
        /// `config`, and recorded `http` answers (without it requests go out).
        #[arg(long)]
        imports: Option<PathBuf>,
        /// The tenant the call is made for.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The connection a send-notification uses.
        #[arg(long, default_value = "")]
        connection: String,
        /// The plugin's wall clock at the call (RFC 3339 or epoch seconds), e.g.
        /// when a recorded request was signed.
        #[arg(long)]
        at: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a new plugin crate, ready to build and test, into `<dir>/<name>/`.
    New {
        name: String,
        /// The world the plugin implements.
        #[arg(long, value_enum, default_value = "classifier")]
        world: WorldArg,
        /// The folder to create the crate in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WorldArg {
    Classifier,
    Provider,
}

impl CommonArgs {
    /// Defaults, then the configuration file, then environment and flags.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(d) = &self.plugins_dir {
            config.plugins_dir = Some(d.clone());
        }
        if let Some(u) = &self.database_url {
            config.database_url = Some(u.clone());
        }
        use crate::config::reference::env_var;
        if let Ok(key) = std::env::var(env_var("master_key")) {
            config.master_key = Some(key);
        }
        if let Ok(keys) = std::env::var(env_var("previous_master_keys")) {
            config.previous_master_keys = keys
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(String::from)
                .collect();
        }
        if let Ok(token) = std::env::var(env_var("admin_token")) {
            config.admin_token = Some(token);
        }
        Ok(config)
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = cli.common.config()?;
    match cli.command {
        Command::Serve { listen } => {
            if let Some(l) = listen {
                config.listen = l;
            }
            let running = App::start(config).await?;
            running
                .serve(
                    |addr| {
                        println!("presence-host listening on http://{addr}");
                        tracing::info!(%addr, "ready");
                    },
                    shutdown_signal(),
                )
                .await
        }
        Command::Secret(SecretCommand::Set { name, base64 }) => {
            let name = SecretName::parse(&name).map_err(anyhow::Error::msg)?;
            let mut raw = Vec::new();
            std::io::stdin()
                .read_to_end(&mut raw)
                .context("reading the secret from standard input")?;
            let raw = zeroize::Zeroizing::new(raw);
            let mut value: &[u8] = &raw;
            if value.ends_with(b"\n") {
                value = &value[..value.len() - 1];
            }
            if value.ends_with(b"\r") {
                value = &value[..value.len() - 1];
            }
            let decoded;
            if base64 {
                use base64::Engine as _;
                let text = std::str::from_utf8(value).context("a base64 secret must be text")?;
                let text = text.trim().trim_start_matches("whsec_");
                decoded = zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .context("the secret is not valid base64")?,
                );
                value = &decoded;
            }
            if value.is_empty() {
                bail!("the secret read from standard input is empty");
            }
            let store = crate::open_store(&config).await?;
            store.set_secret(&name, value).await?;
            println!(
                "secret {name} stored ({} bytes, master key {})",
                value.len(),
                store.master_key_id()
            );
            Ok(())
        }
        Command::Secret(SecretCommand::List) => {
            let store = crate::open_store(&config).await?;
            for (name, updated) in store.secret_names().await? {
                let when = chrono::DateTime::from_timestamp_millis(updated)
                    .map_or_else(String::new, |t| t.to_rfc3339());
                println!("{name}\t{when}");
            }
            Ok(())
        }
        Command::Plugin(PluginCommand::List) => plugin_list(&config).await,
        Command::Key(command) => {
            let store = crate::open_store(&config).await?;
            if let KeyCommand::Reseal = command {
                for (what, n) in store.reseal().await? {
                    println!("{what}: {n} re-sealed");
                }
            }
            println!("current master key: {}", store.master_key_id());
            for (id, n) in store.sealed_key_ids().await? {
                let note = if id == store.master_key_id() {
                    " (current)"
                } else {
                    ""
                };
                println!("{id}	{n} records{note}");
            }
            store.close().await;
            Ok(())
        }
        Command::Tenant(command) => tenant_command(&config, command).await,
        Command::ApiKey(command) => api_key_command(&config, command).await,
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", crate::config::reference::reference());
            Ok(())
        }
        Command::Classify {
            file,
            tenant,
            from,
            to,
            tz,
            compare,
        } => {
            crate::dry_run::run(
                &config,
                &file,
                tenant.as_deref(),
                from.as_deref(),
                to.as_deref(),
                &tz,
                compare.as_deref(),
            )
            .await
        }
        Command::Plugin(PluginCommand::Check { path }) => plugin_check(&path).await,
        Command::Plugin(PluginCommand::Build { path }) => {
            let wasm =
                tokio::task::spawn_blocking(move || crate::plugins::build::build(&path)).await??;
            println!("built {}", wasm.display());
            plugin_check(&wasm).await
        }
        Command::Plugin(PluginCommand::Run {
            path,
            input,
            export,
            imports,
            tenant,
            connection,
            at,
            json,
        }) => {
            let at = at
                .as_deref()
                .map(crate::plugins::run::parse_at)
                .transpose()?;
            let report = crate::plugins::run::run(crate::plugins::run::RunRequest {
                plugin: &path,
                input: &input,
                export,
                imports: imports.as_deref(),
                tenant: &tenant,
                connection: &connection,
                at,
                overrides: &config.plugins,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            if report.succeeded {
                Ok(())
            } else {
                Err(anyhow::anyhow!("the call did not succeed"))
            }
        }
        Command::Plugin(PluginCommand::New { name, world, dir }) => {
            let world = match world {
                WorldArg::Classifier => crate::plugins::World::Classifier,
                WorldArg::Provider => crate::plugins::World::Provider,
            };
            let created = crate::plugins::scaffold::new_plugin(&dir, &name, world)?;
            println!("created {world} plugin {name} in {}", created.display());
            println!(
                "next: cd {} && cargo test && presence-host plugin build",
                created.display()
            );
            Ok(())
        }
    }
}

async fn tenant_command(config: &Config, command: TenantCommand) -> anyhow::Result<()> {
    let store = crate::open_store(config).await?;
    match command {
        TenantCommand::Create { name, display_name } => {
            if !crate::webhooks::valid_tenant(&name) {
                bail!("tenant {name:?}: a tenant name is 1-64 letters, digits, '-' and '_'");
            }
            if !store.create_tenant(&name, display_name.as_deref()).await? {
                bail!("tenant {name:?} already exists");
            }
            store
                .audit(&name, &Actor::Operator, "tenant.created", Some(&name), None)
                .await?;
            println!("tenant {name} created");
        }
        TenantCommand::List => {
            for t in store.tenants().await? {
                println!("{}\t{}", t.name, t.display_name.unwrap_or_default());
            }
        }
    }
    Ok(())
}

async fn api_key_command(config: &Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    let store = crate::open_store(config).await?;
    let tenant_must_exist = |tenant: &str| {
        let store = store.clone();
        let tenant = tenant.to_string();
        async move {
            if store.tenant(&tenant).await?.is_none() {
                bail!(
                    "no tenant {tenant:?}: create it with `presence-host tenant create {tenant}`"
                );
            }
            Ok(())
        }
    };
    match command {
        ApiKeyCommand::Create {
            tenant,
            label,
            expires_in_days,
        } => {
            tenant_must_exist(&tenant).await?;
            let expires_at =
                expires_in_days.map(|d| crate::store::now_ms() + i64::from(d) * 86_400_000);
            let issued = store.issue_api_key(&tenant, &label, expires_at).await?;
            store
                .audit(
                    &tenant,
                    &Actor::Operator,
                    "api_key.created",
                    Some(&issued.meta.id),
                    Some(serde_json::json!({ "label": label, "expires_at": expires_at })),
                )
                .await?;
            eprintln!(
                "key {} for tenant {tenant}; it is shown this once, keep it safe:",
                issued.meta.id
            );
            println!("{}", issued.key);
        }
        ApiKeyCommand::List { tenant } => {
            tenant_must_exist(&tenant).await?;
            for k in store.api_keys(&tenant).await? {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|at| at <= crate::store::now_ms()) {
                    "expired"
                } else if k.replaced_by.is_some() {
                    "rotating"
                } else {
                    "live"
                };
                println!("{}\t{state}\t{}", k.id, k.label);
            }
        }
        ApiKeyCommand::Revoke { tenant, id } => {
            if !store.revoke_api_key(&tenant, &id).await? {
                bail!("no live API key {id:?} in tenant {tenant:?}");
            }
            store
                .audit(
                    &tenant,
                    &Actor::Operator,
                    "api_key.revoked",
                    Some(&id),
                    None,
                )
                .await?;
            println!("key {id} revoked");
        }
        ApiKeyCommand::Rotate {
            tenant,
            id,
            grace_seconds,
        } => {
            let grace_ms = i64::from(grace_seconds) * 1000;
            let Some(issued) = store.rotate_api_key(&tenant, &id, grace_ms).await? else {
                bail!("no live API key {id:?} in tenant {tenant:?}");
            };
            store
                .audit(
                    &tenant,
                    &Actor::Operator,
                    "api_key.rotated",
                    Some(&id),
                    Some(
                        serde_json::json!({ "replaced_by": issued.meta.id, "grace_ms": grace_ms }),
                    ),
                )
                .await?;
            eprintln!(
                "key {id} replaced by {}; the old key works for {grace_seconds} more seconds. The new key, shown this once:",
                issued.meta.id
            );
            println!("{}", issued.key);
        }
    }
    store.close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

async fn plugin_list(config: &Config) -> anyhow::Result<()> {
    let root = config.plugins_dir();
    let runtime = Arc::new(Runtime::standalone(4, Some(config.cache_dir())).await?);
    let dirs = plugin_dirs(&root)
        .with_context(|| format!("reading the plugins folder {}", root.display()))?;
    println!(
        "{:<20} {:<9} {:<11} {:<6} status",
        "name", "version", "world", "wit"
    );
    let mut failed = 0;
    for dir in dirs {
        let rt = runtime.clone();
        let overrides = None;
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || load_plugin(&rt, &d, overrides)).await? {
            Ok(p) => println!(
                "{:<20} {:<9} {:<11} {:<6} ok ({})",
                p.name(),
                p.manifest.version.to_string(),
                p.world().to_string(),
                p.manifest.wit.to_string(),
                p.dir.display()
            ),
            Err(e) => {
                failed += 1;
                println!(
                    "{:<20} {:<9} {:<11} {:<6} error: {e}",
                    dir.file_name().unwrap_or_default().to_string_lossy(),
                    "-",
                    "-",
                    "-"
                );
            }
        }
    }
    if failed > 0 {
        bail!("{failed} plugin(s) failed to load");
    }
    Ok(())
}

/// The plugin folder a path names: the folder itself, or the folder of its manifest or component.
pub(crate) fn plugin_folder(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let parent = if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent
    };
    if !path.exists() {
        bail!("{}: no such file or folder", path.display());
    }
    if !parent.join(MANIFEST_FILE).is_file() {
        bail!(
            "{}: no {MANIFEST_FILE} beside it; a plugin is a folder with plugin.toml and its component",
            path.display()
        );
    }
    Ok(parent)
}

async fn plugin_check(path: &Path) -> anyhow::Result<()> {
    let folder = plugin_folder(path)?;
    let runtime = Arc::new(Runtime::standalone(4, None).await?);
    let rt = runtime.clone();
    let dir = folder.clone();
    let plugin = tokio::task::spawn_blocking(move || load_plugin(&rt, &dir, None))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let detail = match plugin.world() {
        crate::plugins::World::Provider => {
            let info = runtime
                .describe(&plugin.pre, &plugin.grants)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let calendar = if plugin.pre.is_calendar() {
                "; a calendar provider: wedsync:calendar@0.1.0 (watch, unwatch, sync)"
            } else {
                ""
            };
            format!(
                "{}; features: {:?}{calendar}",
                info.display_name, info.features
            )
        }
        crate::plugins::World::Classifier => "classify export present".to_string(),
    };
    println!(
        "ok: {} {} implements wedsync:presence@{} world {} ({detail})",
        plugin.name(),
        plugin.manifest.version,
        plugin.manifest.wit,
        plugin.world()
    );
    Ok(())
}
