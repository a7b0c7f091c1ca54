//! A loaded adapter: its instance pool and its four calls, each under the
//! deadline, the memory cap and the outbound allowlist.

use super::bindings::{self, AdapterPre};
use super::error::{CallError, LoadError};
use super::host::{CallState, HostState, Scrub, Shared};
use super::manifest::Manifest;
use super::outbound::gate::Policy;
use super::{CacheUse, Checked, StateStore, EPOCH_TICK};
use govhub_sdk::{AdapterError, Description, Event, Inbound, Outcome, PollResult};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// Counters of one adapter since it was loaded.
#[derive(Debug, Default)]
pub struct AdapterStats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that ended in a typed adapter error.
    pub adapter_errors: AtomicU64,
    /// Calls stopped at the deadline.
    pub deadline_hits: AtomicU64,
    /// Calls that trapped (panics, memory cap, other traps).
    pub traps: AtomicU64,
    /// Instances created (the first, and every replacement).
    pub instances_created: AtomicU64,
    /// Total call time, microseconds.
    pub call_micros: AtomicU64,
}

struct Instance {
    store: Store<HostState>,
    bindings: bindings::Adapter,
}

enum Request<'a> {
    Describe,
    Ingest(&'a Inbound),
    Deliver(&'a Event),
    Poll(Option<&'a str>),
}

impl Request<'_> {
    /// The WIT function it calls.
    fn function(&self) -> &'static str {
        match self {
            Request::Describe => "describe",
            Request::Ingest(_) => "ingest",
            Request::Deliver(_) => "deliver",
            Request::Poll(_) => "poll",
        }
    }
}

enum Reply {
    Describe(Description),
    Ingest(Result<Vec<Event>, AdapterError>),
    Deliver(Result<Outcome, AdapterError>),
    Poll(Result<PollResult, AdapterError>),
}

/// A loaded, self-checked adapter.
pub struct Adapter {
    /// Its manifest.
    pub manifest: Manifest,
    /// What it said about itself on load.
    pub description: Description,
    /// Its module's sha256.
    pub sha256: String,
    /// The versioned interface it exports (`govhub:adapter/handler@0.1.0`).
    pub world: String,
    /// Everything it imports.
    pub imports: Vec<String>,
    /// Whether its compiled code came from the cache.
    pub cache: CacheUse,
    /// Its counters.
    pub stats: AdapterStats,
    engine: Engine,
    pre: AdapterPre<HostState>,
    shared: Arc<Shared>,
    idle: Mutex<Vec<Instance>>,
    permits: tokio::sync::Semaphore,
}

impl Adapter {
    pub(super) async fn start(
        engine: Engine,
        pre: AdapterPre<HostState>,
        manifest: Manifest,
        config: std::collections::BTreeMap<String, String>,
        checked: Checked,
        store: Option<Arc<dyn StateStore>>,
        outbound: Arc<Policy>,
    ) -> Result<Arc<Adapter>, LoadError> {
        let state = dashmap::DashMap::new();
        if let Some(store) = &store {
            for (k, v) in store.load(&manifest.name) {
                state.insert(k, v);
            }
        }
        let shared = Arc::new(Shared {
            name: manifest.name.clone(),
            config,
            state,
            store,
            outbound,
            log_lines_per_call: manifest.limits.log_lines_per_call,
            logs_dropped: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
        });
        let mut adapter = Adapter {
            permits: tokio::sync::Semaphore::new(manifest.limits.concurrency as usize),
            description: Description::new("", "", ""),
            sha256: checked.sha256,
            world: checked.world,
            imports: checked.imports,
            cache: checked.cache,
            stats: AdapterStats::default(),
            engine,
            pre,
            shared,
            idle: Mutex::new(Vec::new()),
            manifest,
        };
        adapter.description = adapter
            .describe()
            .await
            .map_err(|source| LoadError::SelfCheck {
                adapter: adapter.manifest.name.clone(),
                source,
            })?;
        Ok(Arc::new(adapter))
    }

    /// The adapter's manifest name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Event-type globs it subscribes to: the manifest's `subscribe` plus
    /// what `describe` answered.
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.manifest
            .subscribe
            .iter()
            .chain(self.description.subscriptions.iter())
            .map(String::as_str)
    }

    /// Instances idle in the pool right now.
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Linear memory of the live instances, bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.shared.memory_bytes.load(Ordering::Relaxed)
    }

    /// Connections its HTTP client has opened to departments (shared with
    /// other versions of the adapter that have the same settings).
    pub fn connections_opened(&self) -> u64 {
        self.shared.outbound.client.connections_opened()
    }

    /// Log lines dropped over the per-call budget since load.
    pub fn logs_dropped(&self) -> u64 {
        self.shared.logs_dropped.load(Ordering::Relaxed)
    }

    /// Reads a value of the adapter's state (for tests and admin views).
    pub fn state(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.state.get(key).map(|v| v.clone())
    }

    /// Calls `describe`.
    pub async fn describe(&self) -> Result<Description, CallError> {
        match self.call(Request::Describe, None).await? {
            Reply::Describe(d) => Ok(d),
            _ => unreachable!("describe answers describe"),
        }
    }

    /// Calls `ingest` with one raw message.
    pub async fn ingest(&self, message: &Inbound) -> Result<Vec<Event>, CallError> {
        match self.call(Request::Ingest(message), None).await? {
            Reply::Ingest(r) => r.map_err(CallError::Adapter),
            _ => unreachable!("ingest answers ingest"),
        }
    }

    /// Calls `deliver` with one event.
    pub async fn deliver(&self, event: &Event) -> Result<Outcome, CallError> {
        self.deliver_scrubbed(event, None).await
    }

    /// Calls `deliver`, its log lines rewritten by `scrub`.
    pub async fn deliver_scrubbed(
        &self,
        event: &Event,
        scrub: Option<Scrub>,
    ) -> Result<Outcome, CallError> {
        match self
            .call_with(Request::Deliver(event), Some(&event.id), scrub)
            .await?
        {
            Reply::Deliver(r) => r.map_err(CallError::Adapter),
            _ => unreachable!("deliver answers deliver"),
        }
    }

    /// Calls `poll` with the cursor of the previous poll.
    pub async fn poll(&self, cursor: Option<&str>) -> Result<PollResult, CallError> {
        match self.call(Request::Poll(cursor), None).await? {
            Reply::Poll(r) => r.map_err(CallError::Adapter),
            _ => unreachable!("poll answers poll"),
        }
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(self.manifest.limits.deadline_ms)
    }

    async fn instantiate(&self) -> Result<Instance, CallError> {
        let cap = u64::from(self.manifest.limits.memory_mb) * 1024 * 1024;
        let mut store = Store::new(&self.engine, HostState::new(self.shared.clone(), cap));
        store.limiter(|s| &mut s.memory);
        // Every tick past the epoch deadline lands here: yield to the
        // executor so one busy adapter cannot starve the others, and stop
        // the call once its wall-clock deadline has passed.
        store.epoch_deadline_callback(|ctx| {
            Ok(match ctx.data().call.deadline {
                Some(d) if Instant::now() >= d => UpdateDeadline::Interrupt,
                _ => UpdateDeadline::Yield(1),
            })
        });
        let started = Instant::now();
        store.data_mut().call = CallState {
            deadline: Some(started + self.deadline()),
            ..CallState::default()
        };
        store.set_epoch_deadline(1);
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        match self.pre.instantiate_async(&mut store).await {
            Ok(bindings) => Ok(Instance { store, bindings }),
            Err(e) => Err(
                classify(&e, store.data(), self.deadline(), started.elapsed()).unwrap_or_else(
                    || CallError::Instantiate {
                        message: instantiate_message(&e),
                    },
                ),
            ),
        }
    }

    async fn call(&self, request: Request<'_>, event_id: Option<&str>) -> Result<Reply, CallError> {
        self.call_with(request, event_id, None).await
    }

    async fn call_with(
        &self,
        request: Request<'_>,
        event_id: Option<&str>,
        scrub: Option<Scrub>,
    ) -> Result<Reply, CallError> {
        // The pool: at most `concurrency` calls at once, each on an idle
        // instance or a new one. The semaphore is never closed.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| CallError::Instantiate {
                message: "adapter is shutting down".into(),
            })?;
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let isolate = self.manifest.limits.isolate_calls;
        let pooled = if isolate {
            None
        } else {
            self.idle.lock().ok().and_then(|mut idle| idle.pop())
        };
        let mut instance = match pooled {
            Some(i) => i,
            None => self.instantiate().await.inspect_err(|e| self.count(e))?,
        };
        let limit = self.deadline();
        let started = Instant::now();
        // The call's span (its log lines become its events). A poll that
        // nothing asked for starts no trace of its own: most find nothing.
        let span = match request {
            Request::Poll(_) if tracing::Span::current().is_none() => tracing::Span::none(),
            _ => tracing::debug_span!(
                "adapter.call",
                govhub.adapter = %self.name(),
                govhub.function = request.function(),
                govhub.event.id = event_id.unwrap_or_default(),
                govhub.case.id = match request {
                    Request::Deliver(event) => event.caseid.as_deref(),
                    _ => None,
                },
                govhub.outcome = tracing::field::Empty,
            ),
        };
        // What its requests to the department carry: this span's context,
        // or with traces off the one the event came with.
        let trace = crate::telemetry::TraceContext::of_span(&span).or_else(|| match request {
            Request::Deliver(event) => crate::telemetry::TraceContext::from_event(event),
            _ => None,
        });
        {
            let data = instance.store.data_mut();
            data.call = CallState {
                deadline: Some(started + limit),
                event_id: event_id.map(str::to_string),
                scrub,
                ..CallState::default()
            };
            data.outbound.reset();
            data.outbound.trace = trace.map(|t| t.headers()).unwrap_or_default();
            data.memory.refused = None;
        }
        // The deadline is relative to the current epoch: re-arm it for
        // every call on a reused store.
        instance.store.set_epoch_deadline(1);
        // The epoch callback stops wasm that runs past the deadline; this
        // timeout stops a call parked in host I/O (a department that never
        // answers), where no wasm runs and no epoch check happens.
        let until = tokio::time::Instant::from_std(started + limit + 2 * EPOCH_TICK);
        let result = tracing::Instrument::instrument(
            tokio::time::timeout_at(until, invoke(&mut instance, request)),
            span.clone(),
        )
        .await;
        span.record(
            "govhub.outcome",
            match &result {
                Err(_) => "deadline",
                Ok(Err(_)) => "trap",
                Ok(Ok(Reply::Ingest(Err(_)) | Reply::Deliver(Err(_)) | Reply::Poll(Err(_)))) => {
                    "adapter-error"
                }
                Ok(Ok(_)) => "ok",
            },
        );
        let elapsed = started.elapsed();
        self.stats
            .call_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        let outcome = match result {
            Err(_) => Err(CallError::Deadline { limit, elapsed }),
            Ok(Err(e)) => Err(
                classify(&e, instance.store.data(), limit, elapsed).unwrap_or_else(|| {
                    CallError::Trap {
                        message: trap_message(&e),
                    }
                }),
            ),
            Ok(Ok(reply)) => {
                let denied = instance.store.data_mut().outbound.denied.take();
                let failure = instance.store.data().outbound.failure.take();
                let reply = match failure {
                    Some(detail) => with_transport_detail(reply, &detail),
                    None => reply,
                };
                if isolate {
                    drop(instance);
                } else if let Ok(mut idle) = self.idle.lock() {
                    idle.push(instance);
                }
                return match (reply, denied) {
                    (Reply::Ingest(Err(_)), Some(host))
                    | (Reply::Deliver(Err(_)), Some(host))
                    | (Reply::Poll(Err(_)), Some(host)) => {
                        let e = CallError::OutboundDenied { host };
                        self.count(&e);
                        Err(e)
                    }
                    (reply, _) => {
                        if matches!(
                            &reply,
                            Reply::Ingest(Err(_)) | Reply::Deliver(Err(_)) | Reply::Poll(Err(_))
                        ) {
                            self.stats.adapter_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(reply)
                    }
                };
            }
        };
        // A trapped or interrupted instance cannot be entered again: it is
        // dropped here and the next call instantiates a fresh one.
        drop(instance);
        if let Err(e) = &outcome {
            self.count(e);
            // The error may quote the adapter (a trap's or panic's text):
            // in the log, not in the caller's span (the span's outcome
            // says what happened).
            tracing::warn!(parent: None, adapter = %self.name(), error = %e, "adapter call failed; instance dropped");
        }
        outcome
    }

    fn count(&self, e: &CallError) {
        let counter = match e {
            CallError::Deadline { .. } => &self.stats.deadline_hits,
            CallError::Adapter(_) | CallError::OutboundDenied { .. } => &self.stats.adapter_errors,
            _ => &self.stats.traps,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

async fn invoke(instance: &mut Instance, request: Request<'_>) -> wasmtime::Result<Reply> {
    let handler = instance.bindings.govhub_adapter_handler();
    let store = &mut instance.store;
    Ok(match request {
        Request::Describe => Reply::Describe(handler.call_describe(store).await?.into()),
        Request::Ingest(message) => {
            let headers = bindings::headers(message);
            Reply::Ingest(
                handler
                    .call_ingest(store, bindings::inbound_param(message, &headers))
                    .await?
                    .map(|events| events.into_iter().map(Into::into).collect())
                    .map_err(Into::into),
            )
        }
        Request::Deliver(event) => {
            let extensions = bindings::attributes(&event.extensions);
            Reply::Deliver(
                handler
                    .call_deliver(store, bindings::event_param(event, &extensions))
                    .await?
                    .map(Into::into)
                    .map_err(Into::into),
            )
        }
        Request::Poll(cursor) => Reply::Poll(
            handler
                .call_poll(store, cursor)
                .await?
                .map(Into::into)
                .map_err(Into::into),
        ),
    })
}

/// An adapter error after a transport failure, with the hub's account of
/// it (the host, the certificate problem, the timeout that fired), which
/// the adapter saw only as a `wasi:http` error code.
fn with_transport_detail(reply: Reply, detail: &str) -> Reply {
    let add = |e: AdapterError| {
        let (same_kind, message): (fn(String) -> AdapterError, String) = match e {
            AdapterError::Unavailable(m) => (AdapterError::Unavailable, m),
            AdapterError::Rejected(m) => (AdapterError::Rejected, m),
            AdapterError::InvalidInput(m) => (AdapterError::InvalidInput, m),
        };
        if message.contains(detail) {
            same_kind(message)
        } else {
            same_kind(format!("{message}; {detail}"))
        }
    };
    match reply {
        Reply::Ingest(Err(e)) => Reply::Ingest(Err(add(e))),
        Reply::Deliver(Err(e)) => Reply::Deliver(Err(add(e))),
        Reply::Poll(Err(e)) => Reply::Poll(Err(add(e))),
        other => other,
    }
}

/// wasmtime's reason an instance could not be made, with what to change
/// when the pooling allocator's slots ran out.
fn instantiate_message(e: &wasmtime::Error) -> String {
    if e.chain()
        .any(|c| c.is::<wasmtime::PoolConcurrencyLimitError>())
    {
        format!(
            "{e:#}: every slot of the pooling allocator is in use (runtime.pooling_instances); \
             raise it, or lower the adapters' limits.concurrency"
        )
    } else {
        format!("{e:#}")
    }
}

/// Names a trap by what the hub knows about the call: a deadline, a
/// refused memory growth, or a panic the SDK reported just before.
fn classify(
    e: &wasmtime::Error,
    state: &HostState,
    limit: Duration,
    elapsed: Duration,
) -> Option<CallError> {
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Some(CallError::Deadline { limit, elapsed });
    }
    if let Some(requested_bytes) = state.memory.refused {
        return Some(CallError::MemoryCap {
            cap_bytes: state.memory.cap_bytes,
            requested_bytes,
        });
    }
    state.call.panic.as_ref().map(|message| CallError::Panic {
        message: message.clone(),
    })
}

fn trap_message(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => e.to_string(),
    }
}
