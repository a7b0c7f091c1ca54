//! What one adapter instance's store holds, and the host side of the WIT
//! `host` interface: logging, config, state and the memory limiter (the
//! outbound-HTTP gate is in `outbound`).

use super::bindings::govhub::adapter::host::{self, Level};
use super::bindings::govhub::adapter::types::HeaderResult as Header;
use super::outbound::gate::Policy;
use super::outbound::Gate;
use dashmap::DashMap;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// What all instances of one adapter share.
pub struct Shared {
    /// The adapter's manifest name.
    pub name: String,
    /// Its resolved `[config]`.
    pub config: BTreeMap<String, String>,
    /// Its key-value state (read here, written through to `store`).
    pub state: DashMap<String, Vec<u8>>,
    /// Where state persists.
    pub store: Option<Arc<dyn super::StateStore>>,
    /// What it may reach over HTTP, and the client it reaches it with.
    pub outbound: Arc<Policy>,
    /// Log lines one call may write.
    pub log_lines_per_call: u32,
    /// Log lines dropped over the budget, since load.
    pub logs_dropped: AtomicU64,
    /// Linear memory of the live instances, bytes.
    pub memory_bytes: AtomicU64,
}

/// Rewrites an adapter's log line before it is written: the hub's data
/// governance takes out what the line quotes of an event's personal
/// information.
pub type Scrub = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Per-call bookkeeping, reset before each call.
#[derive(Default)]
pub struct CallState {
    /// What rewrites this call's log lines, besides the phone numbers, ID
    /// numbers and plates every line has masked.
    pub scrub: Option<Scrub>,
    /// When the call must end.
    pub deadline: Option<Instant>,
    /// The event being handled, for log lines.
    pub event_id: Option<String>,
    /// Log lines written in this call.
    pub log_lines: u32,
    /// The panic message the SDK logged just before the trap.
    pub panic: Option<String>,
}

/// The memory cap of one instance.
pub struct MemoryCap {
    /// The cap in bytes.
    pub cap_bytes: u64,
    /// A refused growth (bytes asked for); read after a failed call.
    pub refused: Option<u64>,
    /// The instance's memory now, bytes (counted in `shared.memory_bytes`).
    current: u64,
    shared: Arc<Shared>,
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        self.shared
            .memory_bytes
            .fetch_sub(self.current, Ordering::Relaxed);
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.cap_bytes {
            // Refuse the growth (memory.grow returns -1) rather than trap:
            // a guest that handles allocation failure keeps working; one
            // that aborts traps, and the recorded size says why.
            self.refused = Some(desired as u64);
            return Ok(false);
        }
        let desired = desired as u64;
        if desired > self.current {
            self.shared
                .memory_bytes
                .fetch_add(desired - self.current, Ordering::Relaxed);
            self.current = desired;
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; 100k is far beyond any adapter
        // and keeps a runaway table from eating host memory.
        Ok(desired <= 100_000)
    }
}

/// The data of one instance's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    /// The outbound-HTTP gate.
    pub outbound: Gate,
    /// The memory cap.
    pub memory: MemoryCap,
    /// Per-adapter shared data.
    pub shared: Arc<Shared>,
    /// Per-call bookkeeping.
    pub call: CallState,
}

impl HostState {
    /// A fresh state: WASI with no capabilities at all (no preopened
    /// directories, no environment, no arguments, no network, stdio
    /// discarded), the memory cap, and the allowlist.
    pub fn new(shared: Arc<Shared>, memory_cap_bytes: u64) -> HostState {
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let wasi = wasi.build();
        HostState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound: Gate::new(shared.outbound.clone()),
            memory: MemoryCap {
                cap_bytes: memory_cap_bytes,
                refused: None,
                current: 0,
                shared: shared.clone(),
            },
            shared,
            call: CallState::default(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl super::bindings::govhub::adapter::types::Host for HostState {}

impl HostState {
    /// No personal data in the hub's log: what the call's event holds
    /// (when the hub knows it), and any phone, ID number or plate.
    fn clean(&self, text: String) -> String {
        let text = match &self.call.scrub {
            Some(scrub) => scrub(&text),
            None => text,
        };
        if crate::governance::functions::has_patterns(&text) {
            crate::governance::functions::mask_text(&text)
        } else {
            text
        }
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: Level, message: String, fields: Vec<Header>) {
        let is_panic = fields
            .iter()
            .any(|f| f.name == "panic" && f.value == "true");
        if is_panic {
            let location = fields
                .iter()
                .find(|f| f.name == "location")
                .map(|f| f.value.as_str())
                .unwrap_or_default();
            // Kept for the call's error, which reaches log lines and
            // answers: scrubbed like the line itself.
            let text = if location.is_empty() {
                message.clone()
            } else {
                format!("{message} at {location}")
            };
            self.call.panic = Some(self.clean(text));
        }
        self.call.log_lines += 1;
        if self.call.log_lines > self.shared.log_lines_per_call && !is_panic {
            self.shared.logs_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let adapter = self.shared.name.as_str();
        let event = self.call.event_id.as_deref().unwrap_or("");
        let fields: String = fields
            .iter()
            .map(|f| format!("{}={:?}", f.name, f.value))
            .collect::<Vec<_>>()
            .join(" ");
        let message = self.clean(message);
        let fields = self.clean(fields);
        // A line of a call handed an event (deliver) was scrubbed of what
        // the event's labels mark personal, and becomes an event of the
        // call's span too; a line of any other call (ingest, poll: there
        // is no event to scrub against yet) is only masked, so it stays in
        // the log alone and is not exported.
        macro_rules! line {
            ($level:ident) => {
                if self.call.event_id.is_some() {
                    tracing::$level!(target: "adapter", adapter, event, fields, "{message}")
                } else {
                    tracing::$level!(target: "adapter", parent: None, adapter, event, fields, "{message}")
                }
            };
        }
        match level {
            Level::Trace => line!(trace),
            Level::Debug => line!(debug),
            Level::Info => line!(info),
            Level::Warn => line!(warn),
            Level::Error => line!(error),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.shared.config.get(&key).cloned()
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.shared.state.get(&key).map(|v| v.clone())
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let state = &self.shared.state;
        govhub_sdk::state::check_limits(&key, &value, state.len(), state.contains_key(&key))?;
        if let Some(store) = &self.shared.store {
            store.set(&self.shared.name, &key, Some(&value));
        }
        state.insert(key, value);
        Ok(())
    }

    fn state_delete(&mut self, key: String) {
        if let Some(store) = &self.shared.store {
            store.set(&self.shared.name, &key, None);
        }
        self.shared.state.remove(&key);
    }
}
