//! What can go wrong loading an adapter, and calling one.

use std::path::PathBuf;
use std::time::Duration;

/// Why an adapter could not be loaded. Each message names the adapter, the
/// file, and the fix where one is known.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest file could not be read.
    #[error("manifest {path}: cannot read it: {source}")]
    ManifestRead {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is not valid TOML or breaks a rule.
    #[error("manifest {path}: {message}")]
    ManifestInvalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The module file named by the manifest does not exist.
    #[error("adapter `{adapter}`: module file {path} not found (manifest field `wasm`)")]
    ModuleMissing {
        /// The adapter.
        adapter: String,
        /// Where the module was looked for.
        path: PathBuf,
    },
    /// The module could not be read.
    #[error("adapter `{adapter}`: cannot read module {path}: {source}")]
    ModuleRead {
        /// The adapter.
        adapter: String,
        /// The module file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The module's sha256 is not the one the manifest pins.
    #[error(
        "adapter `{adapter}`: sha256 mismatch for {path}: the manifest pins {expected}, the file has {actual} \
         (if the new module is intended, update `sha256` in the manifest)"
    )]
    HashMismatch {
        /// The adapter.
        adapter: String,
        /// The module file.
        path: PathBuf,
        /// The manifest's value.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// The file is not WebAssembly at all.
    #[error(
        "adapter `{adapter}`: {path} is not a WebAssembly file (it does not start with \\0asm)"
    )]
    NotWasm {
        /// The adapter.
        adapter: String,
        /// The file.
        path: PathBuf,
    },
    /// The file is a core module, not a component.
    #[error(
        "adapter `{adapter}`: {path} is a core WebAssembly module, not a component; \
         build adapters with `cargo build --target wasm32-wasip2 --release`"
    )]
    CoreModule {
        /// The adapter.
        adapter: String,
        /// The file.
        path: PathBuf,
    },
    /// The component was built against an incompatible version of the WIT.
    #[error(
        "adapter `{adapter}`: {path} was built against govhub:adapter@{found}, but this hub implements \
         govhub:adapter@{supported}; rebuild the adapter with a govhub-sdk for {supported}"
    )]
    WitVersion {
        /// The adapter.
        adapter: String,
        /// The file.
        path: PathBuf,
        /// The version the component exports.
        found: String,
        /// The version the hub implements.
        supported: &'static str,
    },
    /// The component does not implement the `adapter` world.
    #[error("adapter `{adapter}`: {path} does not implement the govhub:adapter world: {detail}")]
    NotAdapter {
        /// The adapter.
        adapter: String,
        /// The file.
        path: PathBuf,
        /// The missing export or unknown import.
        detail: String,
    },
    /// Cranelift refused the component.
    #[error("adapter `{adapter}`: compiling {path} failed: {detail}")]
    Compile {
        /// The adapter.
        adapter: String,
        /// The file.
        path: PathBuf,
        /// wasmtime's message.
        detail: String,
    },
    /// A `[config]` value refers to an environment variable that is not set.
    #[error(
        "adapter `{adapter}`: config key `{key}` takes its value from the environment variable \
         `{var}`, which is not set"
    )]
    MissingEnv {
        /// The adapter.
        adapter: String,
        /// The config key.
        key: String,
        /// The variable.
        var: String,
    },
    /// The manifest's `[tls]` client certificate could not be used.
    #[error("adapter `{adapter}`: {message}")]
    Tls {
        /// The adapter.
        adapter: String,
        /// What is wrong, naming the field and the file.
        message: String,
    },
    /// The `describe` self-check failed.
    #[error("adapter `{adapter}`: self-check (describe) failed: {source}")]
    SelfCheck {
        /// The adapter.
        adapter: String,
        /// Why the call failed.
        source: CallError,
    },
}

/// Why a call into an adapter failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The adapter answered with one of its typed errors.
    #[error("{}", describe_adapter_error(.0))]
    Adapter(govhub_sdk::AdapterError),
    /// The adapter tried to reach a host its manifest does not allow.
    #[error(
        "outbound HTTP to `{host}` denied: the host is not in the manifest's \
         [capabilities] outbound_hosts"
    )]
    OutboundDenied {
        /// The host:port it tried.
        host: String,
    },
    /// The call ran past its deadline; the instance was stopped and replaced.
    #[error("deadline of {} ms exceeded (stopped after {} ms); the instance was replaced", .limit.as_millis(), .elapsed.as_millis())]
    Deadline {
        /// The manifest's `deadline_ms`.
        limit: Duration,
        /// How long the call had run when stopped.
        elapsed: Duration,
    },
    /// The adapter tried to grow its memory past the cap.
    #[error(
        "memory cap of {} MiB exceeded (the adapter asked for {} MiB); the instance was replaced",
        .cap_bytes / (1024 * 1024),
        .requested_bytes / (1024 * 1024)
    )]
    MemoryCap {
        /// The manifest's `memory_mb`, in bytes.
        cap_bytes: u64,
        /// The size it tried to grow to.
        requested_bytes: u64,
    },
    /// The adapter panicked; the instance was replaced.
    #[error("adapter panicked: {message}; the instance was replaced")]
    Panic {
        /// The panic message and location.
        message: String,
    },
    /// Any other trap; the instance was replaced.
    #[error("adapter trapped: {message}; the instance was replaced")]
    Trap {
        /// wasmtime's description.
        message: String,
    },
    /// A new instance could not be created.
    #[error("cannot instantiate the adapter: {message}")]
    Instantiate {
        /// wasmtime's description.
        message: String,
    },
}

fn describe_adapter_error(e: &govhub_sdk::AdapterError) -> String {
    match e {
        govhub_sdk::AdapterError::InvalidInput(m) => format!("invalid input: {m}"),
        govhub_sdk::AdapterError::Unavailable(m) => format!("unavailable: {m}"),
        govhub_sdk::AdapterError::Rejected(m) => format!("rejected: {m}"),
    }
}

/// What the delivery policy does after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try again later (with backoff).
    Retry,
    /// Never retry: dead-letter it (or answer the sender with an error).
    Fail,
}

impl CallError {
    /// Whether a retry could succeed.
    pub fn disposition(&self) -> Disposition {
        use govhub_sdk::AdapterError as A;
        match self {
            CallError::Adapter(A::Unavailable(_)) => Disposition::Retry,
            CallError::Adapter(A::InvalidInput(_) | A::Rejected(_)) => Disposition::Fail,
            CallError::OutboundDenied { .. } => Disposition::Fail,
            // A crashed or slow instance may be a transient state (a huge
            // payload, a bug on one path): retried under the delivery
            // policy, which dead-letters after its last attempt.
            CallError::Deadline { .. }
            | CallError::MemoryCap { .. }
            | CallError::Panic { .. }
            | CallError::Trap { .. }
            | CallError::Instantiate { .. } => Disposition::Retry,
        }
    }

    /// True when the instance died (trap, deadline, memory) and was replaced.
    pub fn killed_instance(&self) -> bool {
        matches!(
            self,
            CallError::Deadline { .. }
                | CallError::MemoryCap { .. }
                | CallError::Panic { .. }
                | CallError::Trap { .. }
        )
    }

    /// A short machine-readable kind, for metrics and problem+json.
    pub fn kind(&self) -> &'static str {
        use govhub_sdk::AdapterError as A;
        match self {
            CallError::Adapter(A::InvalidInput(_)) => "invalid-input",
            CallError::Adapter(A::Unavailable(_)) => "unavailable",
            CallError::Adapter(A::Rejected(_)) => "rejected",
            CallError::OutboundDenied { .. } => "outbound-denied",
            CallError::Deadline { .. } => "deadline",
            CallError::MemoryCap { .. } => "memory-cap",
            CallError::Panic { .. } => "panic",
            CallError::Trap { .. } => "trap",
            CallError::Instantiate { .. } => "instantiate",
        }
    }
}
