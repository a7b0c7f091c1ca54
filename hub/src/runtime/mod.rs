//! The wasmtime host: loads adapters, checks them, and calls them in a
//! sandbox.
//!
//! This wraps wasmtime, wasmtime-wasi and wasmtime-wasi-http and narrows
//! them to what govhub uses: one [`Runtime`] (one engine, one linker, one
//! compile cache) that turns a manifest into a loaded [`Adapter`], whose
//! four calls (`describe`, `ingest`, `deliver`, `poll`) run on a pool of
//! instances under a deadline, a memory cap and an outbound allowlist. The
//! rest of the hub never touches wasmtime.

mod adapter;
mod bindings;
mod error;
mod host;
pub mod manifest;
pub mod outbound;

pub use adapter::{Adapter, AdapterStats};
pub use error::{CallError, Disposition, LoadError};
pub use host::Scrub;
pub use manifest::{Limits, Manifest};

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::Engine;

/// The WIT package version this hub implements.
pub const WIT_VERSION: &str = govhub_sdk::WIT_VERSION;

/// The exported interface every adapter must have, without its version.
const HANDLER: &str = "govhub:adapter/handler";

/// The functions `handler` must export.
const HANDLER_FUNCS: [&str; 4] = ["describe", "ingest", "deliver", "poll"];

/// How often the engine's epoch advances. Deadlines are checked on each
/// tick, so a runaway call is stopped at most one tick after its deadline;
/// 10 ms keeps that overshoot small at a cost of 100 wakeups a second.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Where adapters' key-value state lives beyond the process (the journal).
pub trait StateStore: Send + Sync {
    /// The stored state of `adapter`.
    fn load(&self, adapter: &str) -> Vec<(String, Vec<u8>)>;
    /// Stores (or, with `None`, removes) one key.
    fn set(&self, adapter: &str, key: &str, value: Option<&[u8]>);
}

/// Runtime settings from the hub config.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// The roots trusted for HTTPS to departments.
    pub trust: outbound::TrustConfig,
    /// How long a keep-alive connection to a department may sit idle.
    pub idle_timeout: Duration,
    /// What relative paths in manifests' `[tls]` resolve against (the
    /// hub's `adapters.dir`; `None`: the working folder).
    pub files_dir: Option<PathBuf>,
    /// Where compiled modules are cached (`None`: no cache, compile every
    /// time).
    pub cache_dir: Option<PathBuf>,
    /// Where adapter state persists (`None`: in memory only).
    pub state: Option<Arc<dyn StateStore>>,
    /// wasmtime's pooling allocator (`None`: memory allocated on demand
    /// for each instance).
    pub pooling: Option<Pooling>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            trust: outbound::TrustConfig {
                system_roots: true,
                ca_files: Vec::new(),
            },
            idle_timeout: Duration::from_secs(30),
            files_dir: None,
            cache_dir: None,
            state: None,
            pooling: None,
        }
    }
}

/// Sizes of wasmtime's pooling allocator: slots reserved once, reused by
/// every instantiation.
#[derive(Debug, Clone, Copy)]
pub struct Pooling {
    /// Component instances alive at once, over all adapters.
    pub instances: u32,
    /// Largest linear memory an instance may have, MiB (an adapter's
    /// `memory_mb` may not exceed it).
    pub max_memory_mb: u32,
}

/// Whether a module came from the compile cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Read back from a `.cwasm` file.
    Hit,
    /// Compiled now (and written to the cache if there is one).
    Compiled,
}

/// One wasmtime engine, its linker and its compile cache.
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<host::HostState>>,
    cache_dir: Option<PathBuf>,
    pooling: Option<Pooling>,
    engine_key: String,
    ticker_stop: Arc<AtomicBool>,
    state: Option<Arc<dyn StateStore>>,
    clients: outbound::Clients,
    files_dir: Option<PathBuf>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A module checked and compiled, not yet instantiated.
pub struct Checked {
    /// The compiled component.
    component: Component,
    /// Its sha256, hex.
    pub sha256: String,
    /// The versioned handler export it implements.
    pub world: String,
    /// Everything it imports.
    pub imports: Vec<String>,
    /// Whether it came from the cache.
    pub cache: CacheUse,
}

impl Runtime {
    /// Builds the engine with the features govhub uses (component model,
    /// async calls, epoch interruption) and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true);
        wasm.epoch_interruption(true);
        wasm.cranelift_opt_level(wasmtime::OptLevel::Speed);
        if std::env::var_os("GOVHUB_PERF_MAP").is_some_and(|v| v == "1") {
            // Names the compiled adapter functions for `perf report`
            // (/tmp/perf-PID.map); see BENCHMARKS.md, "Profiling".
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(p) = &config.pooling {
            // A Rust wasm32-wasip2 adapter is one component with a few core
            // instances, one memory and a few tables; async calls each take
            // a fiber stack.
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            pool.total_component_instances(p.instances)
                .total_core_instances(p.instances.saturating_mul(8))
                .total_memories(p.instances.saturating_mul(2))
                .total_tables(p.instances.saturating_mul(4))
                .total_stacks(p.instances)
                .max_memory_size(p.max_memory_mb as usize * 1024 * 1024);
            wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::<host::HostState>::new(&engine);
        // Rust's std imports a dozen WASI interfaces even when an adapter
        // uses none, so all of WASI p2 is linked, but with a context that
        // grants nothing (see HostState::new).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::govhub::adapter::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        bindings::govhub::adapter::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = ticker_stop.clone();
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("govhub-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })?;

        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create the compile cache {}: {e}", dir.display())
            })?;
        }
        let trust = outbound::Trust::load(&config.trust).map_err(anyhow::Error::msg)?;
        tracing::debug!(roots = trust.roots(), "TLS roots for departments loaded");
        Ok(Runtime {
            clients: outbound::Clients::new(trust, config.idle_timeout),
            files_dir: config.files_dir,
            engine,
            linker: Arc::new(linker),
            cache_dir: config.cache_dir,
            engine_key,
            ticker_stop,
            state: config.state,
            pooling: config.pooling,
        })
    }

    /// The engine, configured as for adapters (benchmarks compile with it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads, verifies, compiles (or reads from the cache) and checks a
    /// module against the `adapter` world, without instantiating it.
    pub fn check(&self, manifest: &Manifest) -> Result<Checked, LoadError> {
        let name = &manifest.name;
        let path = &manifest.wasm;
        let bytes = read_module(manifest)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(expected) = &manifest.sha256 {
            if *expected != sha256 {
                return Err(LoadError::HashMismatch {
                    adapter: name.clone(),
                    path: path.clone(),
                    expected: expected.clone(),
                    actual: sha256,
                });
            }
        }
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(LoadError::NotWasm {
                adapter: name.clone(),
                path: path.clone(),
            });
        }
        // Bytes 4..8: version and layer. Layer 0 is a core module, layer 1
        // a component.
        if bytes[6..8] == [0, 0] {
            return Err(LoadError::CoreModule {
                adapter: name.clone(),
                path: path.clone(),
            });
        }
        let (component, cache) = self
            .compile(&bytes, &sha256)
            .map_err(|e| LoadError::Compile {
                adapter: name.clone(),
                path: path.clone(),
                detail: format!("{e:#}"),
            })?;

        let ty = component.component_type();
        let exports: Vec<(String, wasmtime::component::types::ComponentItem)> = ty
            .exports(&self.engine)
            .map(|(n, item)| (n.to_string(), item.ty))
            .collect();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let not_adapter = |detail: String| LoadError::NotAdapter {
            adapter: name.clone(),
            path: path.clone(),
            detail,
        };
        let Some((world, item)) = exports
            .iter()
            .find(|(n, _)| n == HANDLER || n.starts_with(&format!("{HANDLER}@")))
        else {
            let found: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
            return Err(not_adapter(format!(
                "it does not export `{HANDLER}@{WIT_VERSION}` (it exports: {})",
                if found.is_empty() {
                    "nothing".to_string()
                } else {
                    found.join(", ")
                }
            )));
        };
        let found_version = world
            .split_once('@')
            .map(|(_, v)| v)
            .unwrap_or("(unversioned)");
        if !compatible(found_version, WIT_VERSION) {
            return Err(LoadError::WitVersion {
                adapter: name.clone(),
                path: path.clone(),
                found: found_version.to_string(),
                supported: WIT_VERSION,
            });
        }
        if let wasmtime::component::types::ComponentItem::ComponentInstance(instance) = item {
            let funcs: Vec<String> = instance
                .exports(&self.engine)
                .map(|(n, _)| n.to_string())
                .collect();
            if let Some(missing) = HANDLER_FUNCS
                .iter()
                .find(|f| !funcs.iter().any(|n| n == *f))
            {
                return Err(not_adapter(format!(
                    "its export `{world}` lacks the function `{missing}`"
                )));
            }
        } else {
            return Err(not_adapter(format!(
                "its export `{world}` is not an interface"
            )));
        }
        Ok(Checked {
            component,
            sha256,
            world: world.clone(),
            imports,
            cache,
        })
    }

    /// Loads an adapter: [`Runtime::check`], link, instantiate one instance
    /// and run the `describe` self-check.
    pub async fn load(&self, manifest: &Manifest) -> Result<Arc<Adapter>, LoadError> {
        if let Some(p) = &self.pooling {
            if manifest.limits.memory_mb > p.max_memory_mb {
                return Err(LoadError::ManifestInvalid {
                    path: manifest.wasm.clone(),
                    message: format!(
                        "adapter `{}`: limits.memory_mb = {} is more than the pooling allocator's slots hold (runtime.pooling_max_memory_mb = {})",
                        manifest.name, manifest.limits.memory_mb, p.max_memory_mb
                    ),
                });
            }
        }
        let checked = self.check(manifest)?;
        let config = manifest.resolve_config()?;
        let instance_pre = self
            .linker
            .instantiate_pre(&checked.component)
            .map_err(|e| LoadError::NotAdapter {
                adapter: manifest.name.clone(),
                path: manifest.wasm.clone(),
                detail: format!("{e:#}"),
            })?;
        let pre = bindings::AdapterPre::new(instance_pre).map_err(|e| LoadError::NotAdapter {
            adapter: manifest.name.clone(),
            path: manifest.wasm.clone(),
            detail: format!("{e:#}"),
        })?;
        let outbound = self.outbound_policy(manifest)?;
        Adapter::start(
            self.engine.clone(),
            pre,
            manifest.clone(),
            config,
            checked,
            self.state.clone(),
            outbound,
        )
        .await
    }

    /// What `manifest`'s adapter may reach over HTTP, and its client (kept
    /// from the previous version when the settings are the same).
    fn outbound_policy(
        &self,
        manifest: &Manifest,
    ) -> Result<Arc<outbound::gate::Policy>, LoadError> {
        let tls_error = |message: String| LoadError::Tls {
            adapter: manifest.name.clone(),
            message,
        };
        let resolve = |p: &Path| match &self.files_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        };
        let identity = match (&manifest.tls.client_cert, &manifest.tls.client_key) {
            (Some(cert), Some(key)) => Some(
                outbound::tls::Identity::load(&resolve(cert), &resolve(key)).map_err(tls_error)?,
            ),
            _ => None,
        };
        let timeouts = manifest.limits.http_limits();
        let client = self
            .clients
            .client_for(
                &manifest.name,
                manifest.limits.concurrency as usize,
                &timeouts,
                identity,
            )
            .map_err(tls_error)?;
        Ok(Arc::new(outbound::gate::Policy {
            adapter: manifest.name.clone(),
            allowed: manifest
                .capabilities
                .outbound_hosts
                .iter()
                .filter_map(|h| manifest::HostPattern::parse(h).ok())
                .collect(),
            client,
            timeouts,
        }))
    }

    fn compile(&self, bytes: &[u8], sha256: &str) -> anyhow::Result<(Component, CacheUse)> {
        let Some(dir) = &self.cache_dir else {
            return Ok((Component::new(&self.engine, bytes)?, CacheUse::Compiled));
        };
        let file = dir.join(format!("{sha256}-{}.cwasm", self.engine_key));
        if file.exists() {
            // SAFETY: the file is in the hub's own cache directory and was
            // written by `precompile_component` of an engine with the same
            // compatibility hash (it is in the name). wasmtime still checks
            // the header and engine settings, and on any error the module
            // is compiled afresh below.
            match unsafe { Component::deserialize_file(&self.engine, &file) } {
                Ok(c) => return Ok((c, CacheUse::Hit)),
                Err(e) => {
                    tracing::warn!(file = %file.display(), "compile cache entry unusable, recompiling: {e:#}");
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        let serialized = self.engine.precompile_component(bytes)?;
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = dir.join(format!(
            ".{sha256}-{}.{}.tmp",
            self.engine_key,
            std::process::id()
        ));
        match std::fs::write(&tmp, &serialized).and_then(|()| std::fs::rename(&tmp, &file)) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "cannot write the compile cache: {e}");
                let _ = std::fs::remove_file(&tmp);
            }
        }
        // SAFETY: `serialized` was produced just now by this engine.
        let component = unsafe { Component::deserialize(&self.engine, &serialized)? };
        Ok((component, CacheUse::Compiled))
    }
}

/// Semver compatibility of a component's WIT version with the hub's: same
/// major, and for 0.x the same minor.
pub fn compatible(found: &str, supported: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split(['.', '-', '+']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    match (parse(found), parse(supported)) {
        (Some((0, fmin)), Some((0, smin))) => fmin == smin,
        (Some((fmaj, _)), Some((smaj, _))) => fmaj == smaj,
        _ => false,
    }
}

/// Reads a manifest's module, with the named error for a missing file.
pub fn read_module(manifest: &Manifest) -> Result<Vec<u8>, LoadError> {
    std::fs::read(&manifest.wasm).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            LoadError::ModuleMissing {
                adapter: manifest.name.clone(),
                path: manifest.wasm.clone(),
            }
        } else {
            LoadError::ModuleRead {
                adapter: manifest.name.clone(),
                path: manifest.wasm.clone(),
                source,
            }
        }
    })
}

/// Hex sha256 of a file, for manifests.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    Ok(sha256_hex(&std::fs::read(path)?))
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn wit_version_compatibility_follows_semver() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.7", "0.1.0"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(!compatible("1.0.0", "0.1.0"));
        assert!(compatible("1.4.0", "1.0.0"));
        assert!(!compatible("2.0.0", "1.0.0"));
        assert!(!compatible("(unversioned)", "0.1.0"));
    }
}
