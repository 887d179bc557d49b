//! presence-host: keeps wedding vendors' presence true from their calendars, calls
//! and chats, through sandboxed WebAssembly provider and rule plugins.
//!
//! [`App::start`] builds everything from a [`Config`]; `main.rs` only parses the
//! command line. Tests use the same entry points.

pub mod api;
pub mod calendar;
pub mod capabilities;
pub mod classify;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dry_run;
pub mod health;
pub mod model;
pub mod notify;
pub mod oauth;
pub mod plugins;
pub mod presence;
pub mod runtime;
pub mod server;
pub mod store;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
use plugins::PluginRegistry;
use runtime::{HostServices, Runtime, RuntimeConfig};
use store::{MasterKey, Store};

/// The running host's shared state.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub registry: Arc<PluginRegistry>,
    pub engine: presence::engine::Engine,
    pub limits: webhooks::limits::Limits,
    pub oauth: Arc<oauth::OAuth>,
    pub health: Arc<health::Health>,
    /// Tenants known to exist. Tenants are never deleted, so a name seen once
    /// stays valid; unknown names are looked up in the store.
    known_tenants: std::sync::RwLock<std::collections::HashSet<String>>,
    /// When each API key's `last_used_at` was last written, to write it at most once a minute.
    key_uses: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

impl App {
    /// Whether `tenant` is registered.
    pub async fn tenant_exists(&self, tenant: &str) -> Result<bool, store::StoreError> {
        if self
            .known_tenants
            .read()
            .expect("tenant cache lock")
            .contains(tenant)
        {
            return Ok(true);
        }
        let exists = self.store.tenant(tenant).await?.is_some();
        if exists {
            self.known_tenants
                .write()
                .expect("tenant cache lock")
                .insert(tenant.to_string());
        }
        Ok(exists)
    }

    /// Records an API key's use, at most once a minute per key.
    pub async fn note_key_use(&self, key_id: &str) {
        let now = store::now_ms();
        {
            let mut uses = self.key_uses.lock().expect("key use lock");
            match uses.get(key_id) {
                Some(at) if now - at < 60_000 => return,
                _ => {
                    uses.insert(key_id.to_string(), now);
                }
            }
        }
        if let Err(e) = self.store.touch_api_key(key_id, now).await {
            tracing::warn!(error = %e, "could not record an API key's use");
        }
    }
}

/// A started app; dropping it stops hot reload and the background workers.
pub struct Running {
    pub app: Arc<App>,
    _watcher: Option<plugins::reload::ReloadWatcher>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.abort();
        }
    }
}

/// Opens the store with the configured (or data-dir) master key.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let key = MasterKey::load_or_create(config.master_key.as_deref(), &config.data_dir)?
        .with_previous(&config.previous_master_keys)?;
    Ok(Store::open(&config.database_url(), key).await?)
}

impl App {
    /// Opens the store, starts the runtime and loads every plugin.
    pub async fn start(config: Config) -> anyhow::Result<Running> {
        let store = open_store(&config).await?;
        // `default` and the configuration's tenants exist without being created.
        store.create_tenant(webhooks::DEFAULT_TENANT, None).await?;
        for tenant in config.tenants.keys() {
            store.create_tenant(tenant, None).await?;
        }
        let engine = presence::engine::Engine::default();
        let oauth = Arc::new(
            oauth::OAuth::new(&config.oauth, engine.webhooks_wake.clone())
                .map_err(|e| anyhow::anyhow!("oauth: {e}"))?,
        );
        let health = Arc::new(health::Health::new(
            config.health.clone(),
            Arc::new(health::SystemClock),
        ));
        oauth.report_to(health.clone());
        // Set now from public_url, or once serve() knows the bound address.
        let public_base: Arc<std::sync::OnceLock<String>> = Default::default();
        if let Some(url) = &config.public_url {
            let _ = public_base.set(url.trim_end_matches('/').to_string());
        }
        let runtime = Arc::new(Runtime::new(
            &RuntimeConfig {
                max_concurrent_calls: config.max_concurrent_calls,
                cache_dir: Some(config.cache_dir()),
                profile: false,
            },
            HostServices {
                store: store.clone(),
                http: capabilities::http::client(),
                oauth: oauth.clone(),
                health: health.clone(),
                stand: None,
                public_base,
            },
        )?);
        let plugins_dir = config.plugins_dir();
        let registry = Arc::new(PluginRegistry::new(
            runtime.clone(),
            plugins_dir.clone(),
            config.plugins.clone(),
        ));
        if !plugins_dir.is_dir() {
            tracing::warn!(dir = %plugins_dir.display(), "the plugins folder does not exist; build the bundled plugins with `cargo xtask plugins` or set --plugins-dir");
        }
        let report = registry.reload().await;
        for failure in &report.failed {
            tracing::error!(error = %failure.error, "plugin not loaded");
        }
        tracing::info!(dir = %plugins_dir.display(), loaded = ?report.loaded, "plugins loaded");
        let watcher = if config.hot_reload && plugins_dir.is_dir() {
            Some(plugins::reload::watch(registry.clone())?)
        } else {
            None
        };
        let config_limits = config.webhooks.clone();
        let app = Arc::new(App {
            config,
            store,
            runtime,
            registry,
            engine,
            limits: webhooks::limits::Limits::new(config_limits),
            oauth,
            health,
            known_tenants: Default::default(),
            key_uses: Default::default(),
        });
        // The scheduler and the outbox pick up where the store says things
        // stand: transitions that came due and pushes left over from before a
        // restart are applied first.
        let mut workers = vec![
            tokio::spawn(presence::engine::run_scheduler(app.clone())),
            tokio::spawn(presence::engine::run_outbox(app.clone())),
            tokio::spawn(presence::webhooks_out::run(app.clone())),
            tokio::spawn(shrink_rate_limits(app.clone())),
            tokio::spawn(oauth::refresh::run(app.clone())),
            tokio::spawn(health::run(app.clone())),
            tokio::spawn(notify::worker::run(app.clone())),
            tokio::spawn(calendar::sync::run(app.clone())),
        ];
        workers.extend(cluster::start(&app));
        Ok(Running {
            app,
            _watcher: watcher,
            workers,
        })
    }
}

/// Forgets refilled rate-limit buckets once a minute, so idle senders cost nothing.
async fn shrink_rate_limits(app: Arc<App>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        app.limits.shrink();
    }
}

impl Running {
    /// Serves HTTP on the configured address until `shutdown` resolves; `ready` is
    /// called with the bound address once the listener accepts connections.
    pub async fn serve(
        self,
        ready: impl FnOnce(SocketAddr),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.app.config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", self.app.config.listen))?;
        let addr = listener.local_addr()?;
        // Without public_url, plugins register the address we listen on: right
        // for a trial on one machine, and why production sets public_url.
        let _ = self
            .app
            .runtime
            .services()
            .public_base
            .set(format!("http://{addr}"));
        let router =
            api::router(self.app.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
        ready(addr);
        server::serve(
            listener,
            router,
            server::Limits {
                header_timeout: std::time::Duration::from_millis(self.app.config.header_timeout_ms),
                max_connections: self.app.config.max_connections as usize,
            },
            shutdown,
        )
        .await;
        for worker in &self.workers {
            worker.abort();
        }
        self.app.store.close().await;
        Ok(())
    }
}
