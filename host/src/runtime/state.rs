//! What a single plugin call's `Store` holds: its grants, its limits and an empty WASI context.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::Grants;
use crate::runtime::profile::{HostCall, Stand};
use crate::store::Store;

/// Services shared by all calls.
#[derive(Clone)]
pub struct HostServices {
    pub store: Store,
    pub http: reqwest::Client,
    /// Refreshes connections' tokens when a plugin's request needs it.
    pub oauth: Arc<crate::oauth::OAuth>,
    /// Where each call's outcome is counted.
    pub health: Arc<crate::health::Health>,
    /// What a `plugin run` puts in place of the outside world (recorded HTTP
    /// answers, a set wall clock); `None` when serving.
    pub stand: Option<Arc<Stand>>,
    /// Where providers reach this host (`public_url`, else the address it
    /// listens on, once bound): the base of the webhook URLs plugins register.
    pub public_base: Arc<std::sync::OnceLock<String>>,
}

impl HostServices {
    /// The absolute URL of `plugin`'s webhook route for `tenant`; a path alone
    /// while the host has no address yet.
    pub fn webhook_url(&self, plugin: &str, tenant: &str) -> String {
        let base = self
            .public_base
            .get()
            .map_or("", |b| b.trim_end_matches('/'));
        format!("{base}/api/webhooks/{plugin}/{tenant}")
    }
}

/// Per-call state. A new one is built for every call and dropped after it.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: CallLimiter,
    pub grants: Arc<Grants>,
    pub services: Arc<HostServices>,
    pub tenant: String,
    /// Host imports the call made, for its log line.
    pub host_calls: u32,
    /// Lines the call logged (capped).
    pub log_lines: u32,
    /// The outbound requests the call may still make.
    pub http_budget: crate::capabilities::http::RequestBudget,
    /// Each host import the call made, when the call is profiled.
    pub(crate) trace: Option<Vec<HostCall>>,
    /// Connections the call asked to have synced (`calendar-host.request-sync`).
    pub sync_requests: Vec<String>,
    /// Connections the call asked to have watched again (`calendar-host.request-watch`).
    pub watch_requests: Vec<String>,
}

impl CallState {
    pub fn new(grants: Arc<Grants>, services: Arc<HostServices>, tenant: &str) -> Self {
        // WASI is linked only because Rust's std imports it. Nothing is granted:
        // no preopened directories, no environment or arguments, no sockets, no
        // name lookups; stdio goes nowhere. Clocks and randomness are harmless.
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(clock) = services.stand.as_ref().and_then(|s| s.wall_clock()) {
            wasi.wall_clock(clock);
        }
        let wasi = wasi.build();
        let memory_limit = grants.limits.memory_mib as usize * 1024 * 1024;
        let http_budget =
            crate::capabilities::http::RequestBudget::new(grants.limits.max_http_requests);
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: CallLimiter {
                memory_limit,
                memory_in_use: 0,
                memory_exceeded: false,
            },
            grants,
            services,
            tenant: tenant.to_string(),
            host_calls: 0,
            log_lines: 0,
            http_budget,
            trace: None,
            sync_requests: Vec::new(),
            watch_requests: Vec::new(),
        }
    }

    /// A host import starts: counted, and timed when the call is profiled.
    pub(crate) fn import_starts(&mut self) -> Option<std::time::Instant> {
        self.host_calls += 1;
        self.trace.is_some().then(std::time::Instant::now)
    }

    /// A host import ended; in a profiled call, what it was asked and answered
    /// (the summaries are only made then).
    pub(crate) fn import_ended(
        &mut self,
        started: Option<std::time::Instant>,
        import: &'static str,
        args: impl FnOnce() -> String,
        answer: impl FnOnce() -> String,
    ) {
        // A profile is host memory outside the plugin's limits: the first
        // calls are listed, each summary cut short; all are counted.
        const LISTED: usize = 1_000;
        const SUMMARY_BYTES: usize = 512;
        let cut = |s: String| crate::capabilities::log::truncate(&s, SUMMARY_BYTES).to_string();
        if let (Some(trace), Some(started)) = (self.trace.as_mut(), started)
            && trace.len() < LISTED
        {
            trace.push(HostCall {
                import,
                args: cut(args()),
                answer: cut(answer()),
                micros: started.elapsed().as_micros() as u64,
            });
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory (all of an instance's memories together) and table growth,
/// and remembers when the cap was what stopped a call.
pub struct CallLimiter {
    pub memory_limit: usize,
    /// Bytes of linear memory the instance holds, over all its memories.
    pub memory_in_use: usize,
    pub memory_exceeded: bool,
}

/// Table elements one instance may have; far above what a real plugin needs.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Counted over every memory: a component with several modules must not
        // get the limit once per memory.
        let total = self.memory_in_use.saturating_sub(current) + desired;
        if total > self.memory_limit {
            self.memory_exceeded = true;
            // An error (not `Ok(false)`) traps at once, instead of letting the
            // guest's allocator report a failure it may mishandle.
            wasmtime::bail!("memory limit of {} bytes exceeded", self.memory_limit);
        }
        self.memory_in_use = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter;

    use super::CallLimiter;

    #[test]
    fn the_memory_limit_counts_every_memory_of_the_instance() {
        const MIB: usize = 1024 * 1024;
        let mut limiter = CallLimiter {
            memory_limit: 32 * MIB,
            memory_in_use: 0,
            memory_exceeded: false,
        };
        assert!(limiter.memory_growing(0, 20 * MIB, None).unwrap());
        // A second memory may not take another full limit.
        assert!(limiter.memory_growing(0, 20 * MIB, None).is_err());
        assert!(limiter.memory_exceeded);
        // Growing the first memory counts only the growth.
        let mut limiter = CallLimiter {
            memory_limit: 32 * MIB,
            memory_in_use: 0,
            memory_exceeded: false,
        };
        assert!(limiter.memory_growing(0, 16 * MIB, None).unwrap());
        assert!(limiter.memory_growing(16 * MIB, 30 * MIB, None).unwrap());
        assert_eq!(limiter.memory_in_use, 30 * MIB);
        assert!(!limiter.memory_exceeded);
    }
}
