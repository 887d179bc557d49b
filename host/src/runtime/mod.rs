//! The WebAssembly runtime: one engine, compiled components cached on disk, an
//! `InstancePre` per plugin, and a fresh `Store` per call with memory, time and
//! output limits.
//!
//! A trap, a deadline, an exceeded limit or a guest panic ends that one call with
//! a [`CallError`]; the host and every other plugin keep serving.

pub mod cache;
pub mod profile;
pub mod since_calendar_v0_1_0;
pub mod since_v0_1_0;
pub mod state;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use crate::capabilities::Grants;
use crate::model;
use crate::plugins::manifest::{MAX_MEMORY_MIB, Manifest, PluginName, World};
pub use cache::CacheOutcome;
use cache::ComponentCache;
pub use state::{CallState, HostServices};

use crate::health::Outcome;

/// The `wedsync:presence` versions this host can run, oldest first.
pub const ACCEPTED_WIT_VERSIONS: &[&str] = &[since_v0_1_0::VERSION];

/// Linear memories one component may define: a Rust component has one, and the
/// pool's slots are not for a single call to hoard.
const MAX_MEMORIES_PER_COMPONENT: u32 = 2;

/// The low part of each memory slot kept resident between instances (see `engine_config`).
const KEEP_RESIDENT_BYTES: usize = 256 * 1024;

/// How often the engine's epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Plugin calls that may run at once (pooling allocator slots).
    pub max_concurrent_calls: u32,
    /// Where compiled components are cached; `None` compiles on every load.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Meter fuel and record each call's [`profile::CallProfile`] (slower;
    /// for `plugin run`, never for serving).
    pub profile: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}: not a valid WebAssembly component: {1}")]
    Compile(String, String),
    #[error("{0}: does not fit the `{1}` world of wedsync:presence@{2}: {3}")]
    World(String, World, String, String),
}

/// Why one plugin call failed. Always names the plugin.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin {plugin}: {kind}")]
pub struct CallError {
    pub plugin: PluginName,
    pub kind: CallErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallErrorKind {
    #[error("exceeded its {0} ms deadline")]
    Deadline(u64),
    #[error("exceeded its memory limit of {0} MiB")]
    MemoryLimit(u32),
    #[error("returned {size} bytes, above its limit of {limit} bytes")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("trapped (a panic or invalid operation): {0}")]
    Trap(String),
    #[error("could not start: {0}")]
    Instantiate(String),
    #[error("does not implement `{0}`")]
    WrongWorld(&'static str),
}

impl CallErrorKind {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Deadline(_) => "deadline",
            Self::MemoryLimit(_) => "memory_limit",
            Self::OutputTooLarge { .. } => "output_limit",
            Self::Trap(_) => "trap",
            Self::Instantiate(_) => "instantiate",
            Self::WrongWorld(_) => "wrong_world",
        }
    }
}

/// A plugin linked and ready to instantiate, per world and WIT version.
#[derive(Clone)]
pub enum PluginPre {
    ClassifierV0_1(since_v0_1_0::classifier::ClassifierPre<CallState>),
    ProviderV0_1 {
        provider: since_v0_1_0::provider::ProviderPre<CallState>,
        /// Bound when the component also exports `wedsync:calendar/calendar`.
        calendar: Option<since_calendar_v0_1_0::extension::CalendarExtensionPre<CallState>>,
    },
}

impl PluginPre {
    /// Whether the plugin is a calendar provider (`wedsync:calendar@0.1.0`).
    pub fn is_calendar(&self) -> bool {
        matches!(
            self,
            Self::ProviderV0_1 {
                calendar: Some(_),
                ..
            }
        )
    }
}

/// Advances the engine's epoch from its own thread, so deadlines fire even when
/// every async worker is busy running guest code.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub struct Runtime {
    engine: Engine,
    classifier_linker: Linker<CallState>,
    provider_linker: Linker<CallState>,
    cache: ComponentCache,
    services: Arc<HostServices>,
    profiles: Option<profile::Profiles>,
    _ticker: EpochTicker,
}

type CallFuture<'a, T> = Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 'a>>;

/// Bytes of strings and lists a value returned by a plugin carries.
/// How a call's result counts in health: a plugin's own error is a refusal
/// or a failure depending on what it says.
pub trait CallOutcome {
    fn outcome(&self, _export: &'static str) -> Outcome {
        Outcome::Ok
    }
}

impl CallOutcome for Option<model::Classification> {}
impl CallOutcome for model::ProviderInfo {}

impl<T> CallOutcome for Result<T, model::PluginFault> {
    fn outcome(&self, export: &'static str) -> Outcome {
        match self {
            Ok(_) => Outcome::Ok,
            Err(fault) => Outcome::of_fault(fault, export),
        }
    }
}

pub trait OutputSize {
    fn output_size(&self) -> usize;
}

impl<T: OutputSize> OutputSize for Option<T> {
    fn output_size(&self) -> usize {
        self.as_ref().map_or(0, OutputSize::output_size)
    }
}

impl<T: OutputSize, E: OutputSize> OutputSize for Result<T, E> {
    fn output_size(&self) -> usize {
        match self {
            Ok(v) => v.output_size(),
            Err(e) => e.output_size(),
        }
    }
}

impl Runtime {
    pub fn new(config: &RuntimeConfig, services: HostServices) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(config.max_concurrent_calls, config.profile))
            .map_err(anyhow::Error::from)?;
        let mut classifier_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut classifier_linker)
            .map_err(anyhow::Error::from)?;
        since_v0_1_0::classifier::Classifier::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut classifier_linker,
            |s| s,
        )
        .map_err(anyhow::Error::from)?;
        let mut provider_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut provider_linker)
            .map_err(anyhow::Error::from)?;
        since_v0_1_0::provider::Provider::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut provider_linker,
            |s| s,
        )
        .map_err(anyhow::Error::from)?;
        // A calendar provider imports `calendar-host` too; other providers
        // simply do not use it.
        since_calendar_v0_1_0::extension::wedsync::calendar::calendar_host::add_to_linker::<
            _,
            wasmtime::component::HasSelf<_>,
        >(&mut provider_linker, |s| s)
        .map_err(anyhow::Error::from)?;
        since_calendar_v0_1_0::extension::wedsync::calendar::types::add_to_linker::<
            _,
            wasmtime::component::HasSelf<_>,
        >(&mut provider_linker, |s| s)
        .map_err(anyhow::Error::from)?;
        let cache = ComponentCache::new(&engine, config.cache_dir.clone());
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            classifier_linker,
            provider_linker,
            cache,
            services: Arc::new(services),
            profiles: config.profile.then(profile::Profiles::default),
            _ticker: ticker,
        })
    }

    /// A runtime that keeps nothing but (optionally) its compile cache: an
    /// in-memory store under a throwaway key. For commands that run plugins without
    /// serving (`plugin check`, `classify`) and for benchmarks.
    pub async fn standalone(
        max_concurrent_calls: u32,
        cache_dir: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        Self::standalone_with(
            RuntimeConfig {
                max_concurrent_calls,
                cache_dir,
                profile: false,
            },
            None,
        )
        .await
    }

    /// A standalone runtime that profiles every call and stands `stand` in for
    /// the outside world: what `plugin run` uses.
    pub async fn for_run(stand: profile::Stand) -> anyhow::Result<Self> {
        Self::standalone_with(
            RuntimeConfig {
                max_concurrent_calls: 1,
                // Metered code is not the code serving runs: never cached with it.
                cache_dir: None,
                profile: true,
            },
            Some(Arc::new(stand)),
        )
        .await
    }

    async fn standalone_with(
        config: RuntimeConfig,
        stand: Option<Arc<profile::Stand>>,
    ) -> anyhow::Result<Self> {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        let key = crate::store::MasterKey::from_base64(&base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            key,
        ))?;
        let store = crate::store::Store::open("sqlite::memory:", key).await?;
        Self::new(
            &config,
            HostServices {
                store,
                http: crate::capabilities::http::client(),
                oauth: std::sync::Arc::new(
                    crate::oauth::OAuth::new(&Default::default(), Default::default())
                        .map_err(anyhow::Error::msg)?,
                ),
                health: std::sync::Arc::new(crate::health::Health::new(
                    Default::default(),
                    std::sync::Arc::new(crate::health::SystemClock),
                )),
                stand,
                public_base: Default::default(),
            },
        )
    }

    /// The profiles of the calls made since the last take (profiling runtimes only).
    pub fn take_profiles(&self) -> Vec<profile::CallProfile> {
        self.profiles
            .as_ref()
            .map(profile::Profiles::take)
            .unwrap_or_default()
    }

    pub fn services(&self) -> &Arc<HostServices> {
        &self.services
    }

    /// Compiles (or loads from the cache) and links a component for the world its
    /// manifest declares. CPU-heavy: call it from a blocking thread.
    pub fn prepare(
        &self,
        manifest: &Manifest,
        wasm: &[u8],
        label: &str,
    ) -> Result<(PluginPre, CacheOutcome), PrepareError> {
        let (component, outcome) = self
            .cache
            .load_or_compile(&self.engine, wasm)
            .map_err(|e| PrepareError::Compile(label.to_string(), format!("{e:#}")))?;
        let world_error = |e: wasmtime::Error| {
            let ty = component.component_type();
            let exports: Vec<&str> = ty.exports(&self.engine).map(|(name, _)| name).collect();
            let imports: Vec<&str> = ty.imports(&self.engine).map(|(name, _)| name).collect();
            PrepareError::World(
                label.to_string(),
                manifest.world,
                manifest.wit.to_string(),
                describe_mismatch(manifest.world, &exports, &imports, &e),
            )
        };
        let pre = match (manifest.world, manifest.wit.to_string().as_str()) {
            (World::Classifier, since_v0_1_0::VERSION) => {
                let pre = self
                    .classifier_linker
                    .instantiate_pre(&component)
                    .map_err(world_error)?;
                PluginPre::ClassifierV0_1(
                    since_v0_1_0::classifier::ClassifierPre::new(pre).map_err(world_error)?,
                )
            }
            (World::Provider, since_v0_1_0::VERSION) => {
                let pre = self
                    .provider_linker
                    .instantiate_pre(&component)
                    .map_err(world_error)?;
                let exports_calendar = component
                    .component_type()
                    .exports(&self.engine)
                    .any(|(name, _)| name.starts_with("wedsync:calendar/calendar@"));
                let calendar = if exports_calendar {
                    Some(
                        since_calendar_v0_1_0::extension::CalendarExtensionPre::new(pre.clone())
                            .map_err(world_error)?,
                    )
                } else {
                    None
                };
                PluginPre::ProviderV0_1 {
                    provider: since_v0_1_0::provider::ProviderPre::new(pre).map_err(world_error)?,
                    calendar,
                }
            }
            (world, version) => {
                return Err(PrepareError::World(
                    label.to_string(),
                    world,
                    version.to_string(),
                    "this WIT version is not accepted".into(),
                ));
            }
        };
        Ok((pre, outcome))
    }

    /// Runs `call` against a fresh instance in a fresh store, enforcing the plugin's limits.
    async fn run<T, F>(
        &self,
        grants: &Arc<Grants>,
        tenant: &str,
        export: &'static str,
        call: F,
    ) -> Result<T, CallError>
    where
        T: OutputSize + CallOutcome + Send,
        F: for<'a> FnOnce(&'a mut Store<CallState>) -> CallFuture<'a, T> + Send,
    {
        let limits = grants.limits;
        let started = Instant::now();
        let mut store = Store::new(
            &self.engine,
            CallState::new(grants.clone(), self.services.clone(), tenant),
        );
        store.limiter(|s| &mut s.limiter);
        if self.profiles.is_some() {
            store
                .set_fuel(u64::MAX)
                .expect("fuel is metered in a profiling engine");
            store.data_mut().trace = Some(Vec::new());
        }
        store.set_epoch_deadline(limits.timeout_ms.div_ceil(EPOCH_TICK.as_millis() as u64) + 1);
        store.epoch_deadline_trap();
        let fail = |kind: CallErrorKind| CallError {
            plugin: grants.plugin.clone(),
            kind,
        };

        // The epoch deadline stops guest code; this stops a call stuck in a host
        // import (a slow HTTP answer) once the whole call is out of time.
        let outcome =
            tokio::time::timeout(Duration::from_millis(limits.timeout_ms), call(&mut store)).await;
        let limit = limits.max_output_kib as usize * 1024;
        let mut output_bytes = 0;
        let result = match outcome {
            Err(_elapsed) => Err(fail(CallErrorKind::Deadline(limits.timeout_ms))),
            Ok(Ok(value)) => {
                let size = value.output_size();
                output_bytes = size;
                if size > limit {
                    Err(fail(CallErrorKind::OutputTooLarge { size, limit }))
                } else {
                    Ok(value)
                }
            }
            Ok(Err(e)) => Err(fail(classify_error(
                &e,
                store.data(),
                limits.timeout_ms,
                limits.memory_mib,
            ))),
        };
        if let Some(profiles) = &self.profiles {
            profiles.push(profile::CallProfile {
                export,
                micros: started.elapsed().as_micros() as u64,
                fuel: u64::MAX - store.get_fuel().unwrap_or(u64::MAX),
                peak_memory_bytes: store.data().limiter.memory_in_use,
                memory_limit_bytes: store.data().limiter.memory_limit,
                output_bytes,
                output_limit_bytes: limit,
                host_call_count: store.data().host_calls,
                host_calls: store.data_mut().trace.take().unwrap_or_default(),
            });
        }
        let host_calls = store.data().host_calls;
        // Sync and watch requests are taken from `handle-webhook` only (the
        // calendar-host contract); elsewhere they are dropped, and said so.
        if export != "handle-webhook"
            && (!store.data().sync_requests.is_empty() || !store.data().watch_requests.is_empty())
        {
            tracing::warn!(plugin = %grants.plugin, tenant, export, "sync or watch requests outside handle-webhook are ignored");
        }
        let outcome = match &result {
            Ok(value) => value.outcome(export),
            Err(e) => Outcome::Failed(e.kind.label(), e.to_string()),
        };
        self.services.health.record_call(
            grants.plugin.as_str(),
            tenant,
            export,
            started.elapsed(),
            &outcome,
        );
        match &result {
            Ok(_) => {
                tracing::debug!(plugin = %grants.plugin, tenant, host_calls, elapsed_us = started.elapsed().as_micros() as u64, "plugin call")
            }
            Err(e) => {
                tracing::warn!(plugin = %grants.plugin, tenant, host_calls, error = %e, kind = e.kind.label(), "plugin call failed")
            }
        }
        result
    }

    /// Runs a classifier on one event.
    pub async fn classify(
        &self,
        pre: &PluginPre,
        grants: &Arc<Grants>,
        tenant: &str,
        event: &model::CalendarEvent,
    ) -> Result<Option<model::Classification>, CallError> {
        let PluginPre::ClassifierV0_1(pre) = pre else {
            return Err(wrong_world(grants, "classify"));
        };
        let pre = pre.clone();
        let event = since_v0_1_0::event_into(event);
        self.run(grants, tenant, "classify", move |store| {
            Box::pin(async move {
                let bindings = pre.instantiate_async(&mut *store).await?;
                let out = bindings.call_classify(&mut *store, &event).await?;
                Ok(out.map(since_v0_1_0::classification_from))
            })
        })
        .await
    }

    /// Hands a received webhook to a provider plugin.
    pub async fn handle_webhook(
        &self,
        pre: &PluginPre,
        grants: &Arc<Grants>,
        tenant: &str,
        request: &model::WebhookRequest,
    ) -> Result<Result<model::WebhookOutcome, model::PluginFault>, CallError> {
        let PluginPre::ProviderV0_1 { provider: pre, .. } = pre else {
            return Err(wrong_world(grants, "handle-webhook"));
        };
        let pre = pre.clone();
        let request = since_v0_1_0::webhook_request_into(request);
        self.run(grants, tenant, "handle-webhook", move |store| {
            Box::pin(async move {
                let bindings = pre.instantiate_async(&mut *store).await?;
                let out = bindings.call_handle_webhook(&mut *store, &request).await?;
                let sync_requests = std::mem::take(&mut store.data_mut().sync_requests);
                let watch_requests = std::mem::take(&mut store.data_mut().watch_requests);
                Ok(out
                    .map(|o| model::WebhookOutcome {
                        sync_requests,
                        watch_requests,
                        ..since_v0_1_0::webhook_outcome_from(o)
                    })
                    .map_err(since_v0_1_0::plugin_error_from))
            })
        })
        .await
    }

    /// Asks a provider plugin what it can do.
    pub async fn describe(
        &self,
        pre: &PluginPre,
        grants: &Arc<Grants>,
    ) -> Result<model::ProviderInfo, CallError> {
        let PluginPre::ProviderV0_1 { provider: pre, .. } = pre else {
            return Err(wrong_world(grants, "describe"));
        };
        let pre = pre.clone();
        self.run(grants, "", "describe", move |store| {
            Box::pin(async move {
                let bindings = pre.instantiate_async(&mut *store).await?;
                let out = bindings.call_describe(&mut *store).await?;
                Ok(since_v0_1_0::provider_info_from(out))
            })
        })
        .await
    }

    /// Asks a provider plugin to publish a presence to its service.
    pub async fn push_status(
        &self,
        pre: &PluginPre,
        grants: &Arc<Grants>,
        tenant: &str,
        connection: &str,
        presence: &model::Presence,
    ) -> Result<Result<(), model::PluginFault>, CallError> {
        let PluginPre::ProviderV0_1 { provider: pre, .. } = pre else {
            return Err(wrong_world(grants, "push-status"));
        };
        let pre = pre.clone();
        let presence = since_v0_1_0::presence_into(presence);
        let connection = connection.to_string();
        self.run(grants, tenant, "push-status", move |store| {
            Box::pin(async move {
                let bindings = pre.instantiate_async(&mut *store).await?;
                let out = bindings
                    .call_push_status(&mut *store, &connection, &presence)
                    .await?;
                Ok(out.map_err(since_v0_1_0::plugin_error_from))
            })
        })
        .await
    }
    /// Asks a channel provider plugin to deliver one message.
    pub async fn send_notification(
        &self,
        pre: &PluginPre,
        grants: &Arc<Grants>,
        tenant: &str,
        connection: &str,
        message: &model::Notification,
    ) -> Result<Result<model::DeliveryReceipt, model::PluginFault>, CallError> {
        let PluginPre::ProviderV0_1 { provider: pre, .. } = pre else {
            return Err(wrong_world(grants, "send-notification"));
        };
        let pre = pre.clone();
        let message = since_v0_1_0::notification_into(message);
        let connection = connection.to_string();
        self.run(grants, tenant, "send-notification", move |store| {
            Box::pin(async move {
                let bindings = pre.instantiate_async(&mut *store).await?;
                let out = bindings
                    .call_send_notification(&mut *store, &connection, &message)
                    .await?;
                Ok(out
                    .map(since_v0_1_0::receipt_from)
                    .map_err(since_v0_1_0::plugin_error_from))
            })
        })
        .await
    }
    /// Asks a calendar provider to create or renew its push subscriptions for `connection`.
    pub async fn watch(
        &self,
        pre: &PluginPre,
        grants: &Arc<Grants>,
        tenant: &str,
        connection: &str,
    ) -> Result<Result<model::WatchLease, model::PluginFault>, CallError> {
        let calendar = calendar_pre(pre, grants, "watch")?;
        let connection = connection.to_string();
        self.run(grants, tenant, "watch", move |store| {
            Box::pin(async move {
                let bindings = calendar.instantiate_async(&mut *store).await?;
                let out = bindings
                    .wedsync_calendar_calendar()
                    .call_watch(&mut *store, &connection)
                    .await?;
                Ok(out
                    .map(since_calendar_v0_1_0::lease_from)
                    .map_err(since_calendar_v0_1_0::plugin_error_from))
            })
        })
        .await
    }

    /// Asks a calendar provider to stop the push subscriptions of `connection`.
    pub async fn unwatch(
        &self,
        pre: &PluginPre,
        grants: &Arc<Grants>,
        tenant: &str,
        connection: &str,
    ) -> Result<Result<(), model::PluginFault>, CallError> {
        let calendar = calendar_pre(pre, grants, "unwatch")?;
        let connection = connection.to_string();
        self.run(grants, tenant, "unwatch", move |store| {
            Box::pin(async move {
                let bindings = calendar.instantiate_async(&mut *store).await?;
                let out = bindings
                    .wedsync_calendar_calendar()
                    .call_unwatch(&mut *store, &connection)
                    .await?;
                Ok(out.map_err(since_calendar_v0_1_0::plugin_error_from))
            })
        })
        .await
    }

    /// Asks a calendar provider for one page of `connection`'s changes since `cursor`.
    pub async fn sync_page(
        &self,
        pre: &PluginPre,
        grants: &Arc<Grants>,
        tenant: &str,
        connection: &str,
        cursor: Option<&str>,
    ) -> Result<Result<model::CalendarPage, model::PluginFault>, CallError> {
        let calendar = calendar_pre(pre, grants, "sync")?;
        let connection = connection.to_string();
        let cursor = cursor.map(str::to_string);
        self.run(grants, tenant, "sync", move |store| {
            Box::pin(async move {
                let bindings = calendar.instantiate_async(&mut *store).await?;
                let out = bindings
                    .wedsync_calendar_calendar()
                    .call_sync(&mut *store, &connection, cursor.as_deref())
                    .await?;
                Ok(out
                    .map(since_calendar_v0_1_0::page_from)
                    .map_err(since_calendar_v0_1_0::plugin_error_from))
            })
        })
        .await
    }
}

/// The calendar half of a calendar provider, or the error for calling it on another plugin.
fn calendar_pre(
    pre: &PluginPre,
    grants: &Grants,
    export: &'static str,
) -> Result<since_calendar_v0_1_0::extension::CalendarExtensionPre<CallState>, CallError> {
    match pre {
        PluginPre::ProviderV0_1 {
            calendar: Some(calendar),
            ..
        } => Ok(calendar.clone()),
        _ => Err(CallError {
            plugin: grants.plugin.clone(),
            kind: CallErrorKind::WrongWorld(export),
        }),
    }
}

fn wrong_world(grants: &Grants, export: &'static str) -> CallError {
    CallError {
        plugin: grants.plugin.clone(),
        kind: CallErrorKind::WrongWorld(export),
    }
}

fn engine_config(max_concurrent_calls: u32, fuel: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    let n = max_concurrent_calls.max(1);
    let mut pool = PoolingAllocationConfig::new();
    // A Rust wasip2 component holds a few core instances, memories and tables
    // (the program plus the component's adapter shims).
    // Returning a slot's memory to the kernel one instance at a time costs a
    // madvise and a TLB shootdown each; batching them measured a few percent
    // better on both the classifier and the webhook benchmarks.
    pool.decommit_batch_size(32)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .total_component_instances(n)
        .total_core_instances(n * 8)
        .total_memories(n * 2)
        .total_tables(n * 4)
        .total_stacks(n)
        .max_memory_size(MAX_MEMORY_MIB as usize * 1024 * 1024);
    // Every call starts a fresh instance, and its first touches of stack and heap
    // pages would each fault in a zeroed page. Keeping the low part of a memory
    // slot resident (and zeroing it with memset on reuse) is cheaper than those
    // faults: measured 36 us -> 20 us per classifier call here, with guests linked
    // with a 64 KiB stack so that stack, data and first heap pages sit low.
    pool.linear_memory_keep_resident(KEEP_RESIDENT_BYTES);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Turns a wasmtime error from a call into what the operator needs to know.
fn classify_error(
    e: &wasmtime::Error,
    state: &CallState,
    timeout_ms: u64,
    memory_mib: u32,
) -> CallErrorKind {
    if state.limiter.memory_exceeded {
        return CallErrorKind::MemoryLimit(memory_mib);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallErrorKind::Deadline(timeout_ms),
        Some(trap) => CallErrorKind::Trap(trap.to_string()),
        None => {
            let message = format!("{e:#}");
            if message.contains("instantiat")
                || message.contains("resource limit")
                || message.contains("concurrent")
            {
                CallErrorKind::Instantiate(message)
            } else {
                CallErrorKind::Trap(message)
            }
        }
    }
}

/// What each world's component must export.
fn required_exports(world: World) -> &'static [&'static str] {
    match world {
        World::Classifier => &["classify"],
        World::Provider => &[
            "describe",
            "handle-webhook",
            "push-status",
            "sync-calendar",
            "send-notification",
        ],
    }
}

/// The `wedsync:presence` interfaces each world may import (WASI is linked for both).
fn granted_imports(world: World) -> &'static [&'static str] {
    match world {
        World::Classifier => &["types", "log"],
        World::Provider => &["types", "log", "http", "secrets", "kv", "config"],
    }
}

/// Why a component does not fit the world its manifest names, in terms a
/// plugin author can act on: the exports it lacks, the imports the world does
/// not grant, and whether it looks like the other world. wasmtime's own
/// message follows.
fn describe_mismatch(
    world: World,
    exports: &[&str],
    imports: &[&str],
    e: &wasmtime::Error,
) -> String {
    let mut parts = Vec::new();
    let missing: Vec<&str> = required_exports(world)
        .iter()
        .copied()
        .filter(|r| !exports.contains(r))
        .collect();
    if !missing.is_empty() {
        let mut part = format!("it does not export {}", missing.join(", "));
        if world == World::Provider {
            part.push_str(
                " (a provider exports all five calls and answers `unsupported` for those it does not offer)",
            );
        }
        parts.push(part);
    }
    let foreign: Vec<&str> = imports
        .iter()
        .copied()
        .filter_map(|name| name.strip_prefix("wedsync:presence/"))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter(|interface| !granted_imports(world).contains(interface))
        .collect();
    if !foreign.is_empty() {
        parts.push(format!(
            "it imports {}, which the `{world}` world does not grant (it grants {})",
            foreign.join(", "),
            granted_imports(world).join(", ")
        ));
    }
    let other = match world {
        World::Classifier => World::Provider,
        World::Provider => World::Classifier,
    };
    if required_exports(other).iter().all(|r| exports.contains(r)) {
        parts.push(format!(
            "it exports what a `{other}` does: is `world = \"{other}\"` meant in plugin.toml?"
        ));
    }
    let detail = format!("{e:#}");
    if parts.is_empty() {
        detail
    } else {
        format!("{} [{detail}]", parts.join("; "))
    }
}

// Output sizes of what plugins return.

impl OutputSize for model::Classification {
    fn output_size(&self) -> usize {
        let category = match &self.category {
            model::Category::Other(name) => name.len(),
            _ => 0,
        };
        self.status_text.len() + self.status_emoji.len() + category
    }
}

impl OutputSize for model::WebhookOutcome {
    fn output_size(&self) -> usize {
        let headers: usize = self
            .response
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let events: usize = self
            .events
            .iter()
            .map(|ue| ue.user.len() + event_size(&ue.event))
            .sum();
        let signals: usize = self
            .signals
            .iter()
            .map(|s| {
                s.user.len()
                    + s.status_text.as_ref().map_or(0, String::len)
                    + s.status_emoji.as_ref().map_or(0, String::len)
            })
            .sum();
        self.response.body.len()
            + headers
            + self.delivery_id.as_ref().map_or(0, String::len)
            + events
            + signals
    }
}

fn event_size(e: &model::CalendarEvent) -> usize {
    e.id.len()
        + e.title.len()
        + e.description.as_ref().map_or(0, String::len)
        + e.location.as_ref().map_or(0, String::len)
        + e.attendees.iter().map(String::len).sum::<usize>()
        + e.time_zone.as_ref().map_or(0, String::len)
        + e.online_meeting_url.as_ref().map_or(0, String::len)
}

impl OutputSize for model::CalendarPage {
    fn output_size(&self) -> usize {
        // Each item costs at least its fixed fields, so many empty ones count too.
        const PER_ITEM: usize = 64;
        self.events
            .iter()
            .map(|s| PER_ITEM + event_size(&s.event))
            .sum::<usize>()
            + self
                .removed
                .iter()
                .map(|r| PER_ITEM + r.len())
                .sum::<usize>()
            + self.next_cursor.as_ref().map_or(0, String::len)
    }
}

impl OutputSize for model::WatchLease {
    fn output_size(&self) -> usize {
        0
    }
}

impl OutputSize for model::PluginFault {
    fn output_size(&self) -> usize {
        match self {
            Self::Unauthorized(m)
            | Self::InvalidInput(m)
            | Self::Unsupported(m)
            | Self::Internal(m) => m.len(),
            Self::Upstream { message, .. } => message.len(),
        }
    }
}

impl OutputSize for model::ProviderInfo {
    fn output_size(&self) -> usize {
        self.display_name.len() + self.features.len()
    }
}

impl OutputSize for () {
    fn output_size(&self) -> usize {
        0
    }
}

impl OutputSize for model::DeliveryReceipt {
    fn output_size(&self) -> usize {
        self.provider_message_id.as_ref().map_or(0, String::len)
    }
}
