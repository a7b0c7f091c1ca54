//! The govhub adapter SDK: write a department adapter as one Rust trait.
//!
//! An adapter connects one department system (a police CAD, an Open311
//! endpoint, a fire-alarm gateway) to govhub. It is built with
//! `cargo build --target wasm32-wasip2 --release` into a WebAssembly component
//! that implements the `govhub:adapter` WIT world (see `wit/adapter.wit`, the
//! contract in full). This crate narrows that contract to:
//!
//! - one trait, [`Adapter`], and one macro, [`export_adapter!`];
//! - the WIT types, one to one ([`Event`], [`Inbound`], [`Outcome`],
//!   [`AdapterError`], ...), with builder helpers;
//! - the host functions: [`log`], [`config`], [`state`], and a small
//!   blocking HTTP client, [`http`], for calls to the department;
//! - an offline harness, [`testing`], that runs an adapter natively in
//!   `cargo test` with canned config, state and HTTP answers.
//!
//! It deliberately offers nothing else: no filesystem, no sockets, no
//! environment. The hub's sandbox refuses them anyway.
//!
//! ```
//! use govhub_sdk::{export_adapter, Adapter, AdapterError, Description, Event, Inbound, Severity};
//!
//! struct Hello;
//!
//! impl Adapter for Hello {
//!     fn describe() -> Description {
//!         Description::new("hello", "0.1.0", "a department that says hello")
//!     }
//!
//!     fn ingest(message: Inbound) -> Result<Vec<Event>, AdapterError> {
//!         #[derive(serde::Deserialize)]
//!         struct Report { no: String, text: String }
//!         let report: Report = message.json()?;
//!         Ok(vec![Event::new("gov.incident.reported")
//!             .with_id(report.no)
//!             .with_category("safety.water")
//!             .with_severity(Severity::Major)
//!             .with_json(&serde_json::json!({ "text": report.text }))])
//!     }
//! }
//!
//! export_adapter!(Hello);
//!
//! // Offline, natively:
//! let events = govhub_sdk::testing::Harness::new()
//!     .ingest::<Hello>(Inbound::post_json(r#"{"no":"7","text":"有人落水"}"#))
//!     .unwrap();
//! assert_eq!(events[0].id, "7");
//! ```
#![deny(missing_docs)]

extern crate self as govhub_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The bindings `wit-bindgen` generates from `wit/adapter.wit`. Use the
/// re-exports at the crate root instead; this module is public only so the
/// export macro can reach it.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "adapter",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_govhub_adapter",
        default_bindings_module: "govhub_sdk::bindings",
        runtime_path: "govhub_sdk::__wit_bindgen::rt",
        additional_type_attributes: {
            "govhub:adapter/types@0.1.0/event": [#[derive(PartialEq)]],
            "govhub:adapter/types@0.1.0/attribute": [#[derive(PartialEq)]],
            "govhub:adapter/types@0.1.0/header": [#[derive(PartialEq)]],
            "govhub:adapter/types@0.1.0/inbound": [#[derive(PartialEq)]],
            "govhub:adapter/types@0.1.0/description": [#[derive(PartialEq)]],
            "govhub:adapter/types@0.1.0/outcome": [#[derive(PartialEq)]],
            "govhub:adapter/types@0.1.0/poll-result": [#[derive(PartialEq)]],
            "govhub:adapter/types@0.1.0/adapter-error": [#[derive(PartialEq)]],
        },
    });
}

pub mod cloudevents;
mod event;
pub mod http;
mod panic;
mod sys;
pub mod testing;
pub mod when;

pub use bindings::govhub::adapter::types::{
    AdapterError, Attribute, Description, Event, Header, Inbound, Outcome, PollResult, Severity,
};
pub use event::{lookup, WIT_VERSION};

use bindings::exports::govhub::adapter::handler::Guest;

/// What an adapter implements. Each method is one export of the WIT
/// `handler` interface; see `wit/adapter.wit` for the full contract.
///
/// The methods are associated functions (no `self`): the hub may run several
/// instances of an adapter at once and replace any of them at any time, so
/// anything that must last belongs in [`state`].
pub trait Adapter {
    /// Names the adapter. Called on load as a self-check: must not fail or
    /// call out.
    fn describe() -> Description;

    /// Turns one raw message from the department into governance events.
    /// A malformed message is [`AdapterError::InvalidInput`] naming the field.
    fn ingest(message: Inbound) -> Result<Vec<Event>, AdapterError>;

    /// Hands one event to the department. The default refuses: an adapter
    /// that only ingests should not be a delivery target.
    fn deliver(event: Event) -> Result<Outcome, AdapterError> {
        Err(AdapterError::Rejected(format!(
            "this adapter does not deliver events (got {} {})",
            event.type_, event.id
        )))
    }

    /// Pulls news from a department that cannot push. The default finds
    /// nothing and keeps the cursor.
    fn poll(cursor: Option<String>) -> Result<PollResult, AdapterError> {
        let _ = cursor;
        Ok(PollResult {
            events: Vec::new(),
            cursor: None,
        })
    }
}

impl<T: Adapter> Guest for T {
    fn describe() -> Description {
        panic::install_hook();
        T::describe()
    }
    fn ingest(message: Inbound) -> Result<Vec<Event>, AdapterError> {
        panic::install_hook();
        T::ingest(message)
    }
    fn deliver(event: Event) -> Result<Outcome, AdapterError> {
        panic::install_hook();
        T::deliver(event)
    }
    fn poll(cursor: Option<String>) -> Result<PollResult, AdapterError> {
        panic::install_hook();
        T::poll(cursor)
    }
}

/// Exports a type implementing [`Adapter`] as the component's `handler`.
/// Call it once, at the crate root of the adapter crate (a `cdylib`).
///
/// ```
/// struct Quiet;
/// impl govhub_sdk::Adapter for Quiet {
///     fn describe() -> govhub_sdk::Description {
///         govhub_sdk::Description::new("quiet", "0.1.0", "says nothing")
///     }
///     fn ingest(_: govhub_sdk::Inbound) -> Result<Vec<govhub_sdk::Event>, govhub_sdk::AdapterError> {
///         Ok(vec![])
///     }
/// }
/// govhub_sdk::export_adapter!(Quiet);
/// ```
#[macro_export]
macro_rules! export_adapter {
    ($adapter:ident) => {
        // Outside a wasm32-wasip2 component (cargo test, the offline
        // harness, a plain library build) nothing is exported:
        // the component ABI's export names are not valid native symbols.
        #[cfg(all(target_arch = "wasm32", target_env = "p2"))]
        $crate::__export_adapter_impl!($adapter with_types_in $crate::bindings);
        // ...but the adapter type still counts as used there.
        #[cfg(not(all(target_arch = "wasm32", target_env = "p2")))]
        const _: fn() -> $crate::Description = <$adapter as $crate::Adapter>::describe;
    };
}

/// Structured logging into the hub's log, tagged with the adapter's name.
pub mod log {
    use crate::bindings::govhub::adapter::host::Level;

    /// Writes one line at `level` with extra key/value fields.
    pub fn write(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<crate::Header> = fields
            .iter()
            .map(|(k, v)| crate::Header {
                name: (*k).to_string(),
                value: (*v).to_string(),
            })
            .collect();
        crate::sys::log(level, message, &fields);
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        write(Level::Debug, message, &[]);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        write(Level::Info, message, &[]);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        write(Level::Warn, message, &[]);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        write(Level::Error, message, &[]);
    }
    pub use crate::bindings::govhub::adapter::host::Level as LogLevel;
}

/// The adapter's `[config]` table from its manifest.
pub mod config {
    use crate::AdapterError;

    /// The value of `key`, if configured.
    pub fn get(key: &str) -> Option<String> {
        crate::sys::config(key)
    }

    /// The value of `key`, or an [`AdapterError::Unavailable`] naming the
    /// missing key (retried, so a fixed manifest heals the backlog).
    pub fn require(key: &str) -> Result<String, AdapterError> {
        get(key).ok_or_else(|| {
            AdapterError::Unavailable(format!(
                "config key `{key}` is not set in the adapter manifest's [config] table"
            ))
        })
    }
}

/// The adapter's own small key-value state, kept by the hub and shared by
/// all its instances.
pub mod state {
    /// Largest key, bytes.
    pub const MAX_KEY_BYTES: usize = 256;
    /// Largest value, bytes.
    pub const MAX_VALUE_BYTES: usize = 64 * 1024;
    /// Most keys one adapter may hold.
    pub const MAX_KEYS: usize = 1024;

    /// Checks a `set` against the limits above (the hub and the offline
    /// harness both enforce them); the message says which was passed.
    pub fn check_limits(
        key: &str,
        value: &[u8],
        keys_held: usize,
        replaces: bool,
    ) -> Result<(), String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "state key is {} bytes, the limit is {MAX_KEY_BYTES}",
                key.len()
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "state value for `{key}` is {} bytes, the limit is {MAX_VALUE_BYTES}",
                value.len()
            ));
        }
        if !replaces && keys_held >= MAX_KEYS {
            return Err(format!(
                "adapter state already holds {MAX_KEYS} keys, the limit"
            ));
        }
        Ok(())
    }

    /// Reads `key`.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        crate::sys::state_get(key)
    }
    /// Stores `value` under `key`; fails when either is over the hub's limits.
    pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
        crate::sys::state_set(key, value)
    }
    /// Removes `key`.
    pub fn delete(key: &str) {
        crate::sys::state_delete(key)
    }
}
