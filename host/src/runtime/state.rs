//! What a single plugin call's `Store` holds: its grants, its limits and an empty WASI context.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::Grants;
use crate::store::Store;

/// Services shared by all calls.
#[derive(Clone)]
pub struct HostServices {
    pub store: Store,
    pub http: reqwest::Client,
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
}

impl CallState {
    pub fn new(grants: Arc<Grants>, services: Arc<HostServices>, tenant: &str) -> Self {
        // WASI is linked only because Rust's std imports it. Nothing is granted:
        // no preopened directories, no environment or arguments, no sockets, no
        // name lookups; stdio goes nowhere. Clocks and randomness are harmless.
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let memory_limit = grants.limits.memory_mib as usize * 1024 * 1024;
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: CallLimiter {
                memory_limit,
                memory_exceeded: false,
            },
            grants,
            services,
            tenant: tenant.to_string(),
            host_calls: 0,
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

/// Caps linear memory and table growth, and remembers when the cap was what stopped a call.
pub struct CallLimiter {
    pub memory_limit: usize,
    pub memory_exceeded: bool,
}

/// Table elements one instance may have; far above what a real plugin needs.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            // An error (not `Ok(false)`) traps at once, instead of letting the
            // guest's allocator report a failure it may mishandle.
            wasmtime::bail!("memory limit of {} bytes exceeded", self.memory_limit);
        }
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
