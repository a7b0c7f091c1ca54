//! What the adapter-call benchmarks share: the incident, the native
//! mapping, the govhub adapter in its three instance modes, and the
//! trivial component. Used by `hub/benches/adapter_call.rs` and by the
//! peer benchmark in `tests/peers/extism-bench` (one run, same machine).

#![allow(dead_code)]

use govhub::runtime::{Adapter, Manifest, Pooling, Runtime, RuntimeConfig};
use govhub_sdk::{Adapter as _, Event, Inbound};
use std::path::Path;
use std::sync::Arc;

/// A 303-byte CAD incident with a Chinese description.
pub const INCIDENT: &str = include_str!("../../../adapters/police/samples/incident-compact.json");

/// The raw message, as the hub hands it to `ingest`.
pub fn message() -> Inbound {
    Inbound::post("application/json", INCIDENT.as_bytes().to_vec())
}

/// The same mapping, native.
pub fn native(message: &Inbound) -> Vec<Event> {
    police_adapter::Police::ingest(message.clone()).unwrap()
}

/// How the govhub adapter gets its instance.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// A pooled instance, reused call after call (the default).
    Pooled,
    /// A fresh instance per call (`isolate_calls`), memory on demand.
    Fresh,
    /// A fresh instance per call from wasmtime's pooling allocator.
    FreshPoolingAllocator,
}

/// The police adapter loaded in `mode`.
pub fn police(rt: &tokio::runtime::Runtime, wasm: &Path, mode: Mode) -> Arc<Adapter> {
    let runtime = Runtime::new(RuntimeConfig {
        pooling: matches!(mode, Mode::FreshPoolingAllocator).then_some(Pooling {
            instances: 100,
            max_memory_mb: 64,
        }),
        // Compiled once, then loaded from the cache: a run under valgrind
        // (instruction counts) does not compile under it.
        cache_dir: Some(std::env::temp_dir().join("govhub-bench-cache")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let mut manifest = Manifest::for_module(wasm, "police");
    manifest.limits.isolate_calls = !matches!(mode, Mode::Pooled);
    let adapter = rt.block_on(runtime.load(&manifest)).unwrap();
    // The runtime's epoch ticker lives as long as the runtime.
    std::mem::forget(runtime);
    adapter
}

/// `add-one: func(u32) -> u32` in a component, called the way the hub
/// calls adapters (async, on a reused instance).
pub struct Trivial {
    store: wasmtime::Store<TrivialState>,
    func: wasmtime::component::TypedFunc<(u32,), (u32,)>,
}

pub struct TrivialState {
    wasi: wasmtime_wasi::WasiCtx,
    table: wasmtime::component::ResourceTable,
}

impl wasmtime_wasi::WasiView for TrivialState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The trivial component on the hub's engine settings, an empty linker
/// and a store, for [`Trivial`] and [`TrivialSync`] to link their way.
fn trivial_parts(
    wasm: &Path,
) -> (
    wasmtime::component::Component,
    wasmtime::component::Linker<TrivialState>,
    wasmtime::Store<TrivialState>,
) {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let engine = runtime.engine().clone();
    std::mem::forget(runtime);
    let component = wasmtime::component::Component::from_file(&engine, wasm).unwrap();
    let linker = wasmtime::component::Linker::new(&engine);
    let mut store = wasmtime::Store::new(
        &engine,
        TrivialState {
            wasi: wasmtime_wasi::WasiCtx::builder().build(),
            table: wasmtime::component::ResourceTable::new(),
        },
    );
    store.set_epoch_deadline(u64::MAX / 2);
    (component, linker, store)
}

impl Trivial {
    /// Instantiates the trivial component with the hub's engine settings.
    pub async fn new(wasm: &Path) -> Trivial {
        let (component, mut linker, mut store) = trivial_parts(wasm);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        let instance = linker
            .instantiate_async(&mut store, &component)
            .await
            .unwrap();
        let func = instance
            .get_typed_func::<(u32,), (u32,)>(&mut store, "add-one")
            .unwrap();
        Trivial { store, func }
    }

    /// One call.
    pub async fn call(&mut self, x: u32) -> u32 {
        let (y,) = self.func.call_async(&mut self.store, (x,)).await.unwrap();
        y
    }
}

/// The same component on a store that needs nothing async (the WASI
/// imports linked synchronously, no async yield): the call without the
/// fiber the hub's async calls run on. What a synchronous call path for
/// `ingest` could save at most.
pub struct TrivialSync {
    store: wasmtime::Store<TrivialState>,
    func: wasmtime::component::TypedFunc<(u32,), (u32,)>,
}

impl TrivialSync {
    /// Instantiates the trivial component with the hub's engine settings.
    pub fn new(wasm: &Path) -> TrivialSync {
        let (component, mut linker, mut store) = trivial_parts(wasm);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        let instance = linker.instantiate(&mut store, &component).unwrap();
        let func = instance
            .get_typed_func::<(u32,), (u32,)>(&mut store, "add-one")
            .unwrap();
        TrivialSync { store, func }
    }

    /// One call.
    pub fn call(&mut self, x: u32) -> u32 {
        let (y,) = self.func.call(&mut self.store, (x,)).unwrap();
        y
    }
}
