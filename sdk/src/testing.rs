//! The offline harness: run an adapter natively in `cargo test`, with canned
//! config, state and HTTP answers, and look at what it logged and sent.
//!
//! The harness calls the [`Adapter`] methods directly (no WebAssembly), so a
//! test compiles and runs in seconds. To run the built component the way the
//! hub does, use `govhub adapter test FILE.wasm --ingest SAMPLE`.
//!
//! ```
//! use govhub_sdk::testing::Harness;
//! use govhub_sdk::http::Response;
//! # use govhub_sdk::{Adapter, AdapterError, Description, Event, Inbound, Outcome};
//! # struct Forward;
//! # impl Adapter for Forward {
//! #     fn describe() -> Description { Description::new("forward", "0.1.0", "test") }
//! #     fn ingest(_: Inbound) -> Result<Vec<Event>, AdapterError> { Ok(vec![]) }
//! #     fn deliver(e: Event) -> Result<Outcome, AdapterError> {
//! #         let url = govhub_sdk::config::require("url")?;
//! #         govhub_sdk::http::Request::post(&url).json(&e.id).send()?.error_for_status()?;
//! #         Ok(Outcome::delivered())
//! #     }
//! # }
//! let harness = Harness::new()
//!     .config("url", "http://127.0.0.1:9000/in")
//!     .respond(|_req| Response::new(202, "accepted"));
//! harness.deliver::<Forward>(Event::new("gov.incident.reported").with_id("e1")).unwrap();
//! let sent = harness.requests();
//! assert_eq!(sent[0].url, "http://127.0.0.1:9000/in");
//! assert_eq!(sent[0].body, br#""e1""#);
//! ```

#![cfg_attr(all(target_arch = "wasm32", target_env = "p2"), allow(dead_code))]

use crate::bindings::govhub::adapter::host::Level;
use crate::http::{Request, Response};
use crate::{Adapter, AdapterError, Description, Event, Header, Inbound, Outcome, PollResult};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

type Responder = Box<dyn FnMut(&Request) -> Result<Response, String>>;

/// One log line an adapter wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message.
    pub message: String,
    /// Extra fields.
    pub fields: Vec<(String, String)>,
}

#[doc(hidden)]
#[derive(Default)]
pub struct HarnessState {
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) state: BTreeMap<String, Vec<u8>>,
    logs: Vec<LogLine>,
    requests: Vec<Request>,
    responder: Option<Responder>,
}

impl HarnessState {
    pub(crate) fn record_log(&mut self, level: Level, message: &str, fields: &[Header]) {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.logs.push(LogLine {
            level,
            message: message.to_string(),
            fields: fields
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        });
    }

    pub(crate) fn state_set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        crate::state::check_limits(key, value, self.state.len(), self.state.contains_key(key))?;
        self.state.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    pub(crate) fn send(&mut self, request: &Request) -> Result<Response, String> {
        self.requests.push(request.clone());
        match self.responder.as_mut() {
            Some(f) => f(request),
            None => Err("the test harness has no HTTP responder: call Harness::respond".into()),
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RefCell<HarnessState>>>> = const { RefCell::new(None) };
}

/// Runs `f` on the harness installed for the running call, or on a fresh
/// empty one when an adapter function is called outside a harness.
#[doc(hidden)]
pub fn with_current<R>(f: impl FnOnce(&mut HarnessState) -> R) -> R {
    let current = CURRENT.with(|c| c.borrow().clone());
    match current {
        Some(state) => f(&mut state.borrow_mut()),
        None => f(&mut HarnessState::default()),
    }
}

/// A fake hub for one adapter: its config, its state, an HTTP responder,
/// and a record of what it logged and sent.
#[derive(Clone, Default)]
pub struct Harness {
    inner: Rc<RefCell<HarnessState>>,
}

impl Harness {
    /// An empty harness: no config, no state, no HTTP answers.
    pub fn new() -> Harness {
        Harness::default()
    }

    /// Sets a `[config]` value.
    pub fn config(self, key: &str, value: &str) -> Harness {
        self.inner
            .borrow_mut()
            .config
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Answers every outbound HTTP request with `f`.
    pub fn respond(self, mut f: impl FnMut(&Request) -> Response + 'static) -> Harness {
        self.inner.borrow_mut().responder = Some(Box::new(move |r| Ok(f(r))));
        self
    }

    /// Makes every outbound HTTP request fail at the transport level (the
    /// department is unreachable) with `message`.
    pub fn unreachable(self, message: &str) -> Harness {
        let message = message.to_string();
        self.inner.borrow_mut().responder = Some(Box::new(move |_| Err(message.clone())));
        self
    }

    /// Runs `f` with this harness serving the host functions.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|c| c.replace(Some(self.inner.clone())));
        struct Restore(Option<Rc<RefCell<HarnessState>>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = previous);
            }
        }
        let _restore = Restore(previous);
        f()
    }

    /// Calls `A::describe`.
    pub fn describe<A: Adapter>(&self) -> Description {
        self.run(A::describe)
    }
    /// Calls `A::ingest`.
    pub fn ingest<A: Adapter>(&self, message: Inbound) -> Result<Vec<Event>, AdapterError> {
        self.run(|| A::ingest(message))
    }
    /// Calls `A::deliver`.
    pub fn deliver<A: Adapter>(&self, event: Event) -> Result<Outcome, AdapterError> {
        self.run(|| A::deliver(event))
    }
    /// Calls `A::poll`.
    pub fn poll<A: Adapter>(&self, cursor: Option<String>) -> Result<PollResult, AdapterError> {
        self.run(|| A::poll(cursor))
    }

    /// The HTTP requests the adapter sent, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.borrow().requests.clone()
    }
    /// The lines the adapter logged, in order.
    pub fn logs(&self) -> Vec<LogLine> {
        self.inner.borrow().logs.clone()
    }
    /// The adapter's state value for `key`.
    pub fn state(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.borrow().state.get(key).cloned()
    }
}
