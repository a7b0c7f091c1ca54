//! Delivery: a durable queue per target adapter, fed by the journal.
//!
//! Each target has its own queue and worker. Events of one case (`caseid`)
//! reach a target in order: a case is a lane, and a lane's next event
//! waits until the one before it is delivered or dead. Different cases do
//! not wait for each other; at most the adapter's `concurrency` deliveries
//! run at once. A failed attempt that can succeed later (`unavailable`, a
//! trap, a deadline) is retried with exponential backoff and jitter; one
//! that cannot (`rejected`, `invalid-input`, a denied host) or that ran out
//! of attempts becomes a dead letter. Every outcome is recorded in the
//! journal, and on start every delivery without a final outcome resumes.
//!
//! Under overload the most urgent go first: a ready lane is taken by its
//! severity (`critical`, `major`, `minor`, `info`), then by age. When a
//! queue fills, ingress sheds from the bottom: the last part of each queue
//! (`delivery.priority_reserve`) is kept for `major` and `critical`
//! events, so a fire alarm is still accepted while `info` notices get
//! `503`.

mod queue;

pub use queue::{backoff, Job, TargetQueue, LANES};

use crate::config::DeliveryConfig;
use crate::governance::{Applied, Governance, Outgoing};
use crate::journal::{now_ms, DeliveryLog, DeliveryRef, DeliveryUpdate, EventLog};
use crate::runtime::{Adapter, Disposition};
use dashmap::DashMap;
use govhub_sdk::Event;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// What the delivery workers need of the parts around them; `hub.rs`
/// composes them and implements it. The workers hold it weakly: a hub
/// dropped stops them.
pub trait Host: Send + Sync + 'static {
    /// The queues.
    fn deliveries(&self) -> &Deliveries;
    /// Where the events are read back from.
    fn events(&self) -> Arc<dyn EventLog>;
    /// Where each attempt's outcome is recorded.
    fn outcomes(&self) -> Arc<dyn DeliveryLog>;
    /// What each recipient may see.
    fn governance(&self) -> &Arc<Governance>;
    /// Whether `target`'s deliveries may go now.
    fn gate(&self, target: &str) -> Gate;
    /// The version of `target` serving.
    fn adapter(&self, target: &str) -> Option<Arc<Adapter>>;
    /// One call's result, for quarantine.
    fn record_health(self: Arc<Self>, target: &str, health: Health);
    /// One attempt's outcome and duration, for `/metrics`.
    fn count(&self, target: &str, outcome: &str, seconds: f64);
    /// Takes in the events a department answered a delivery with, as
    /// produced by `origin` (in the background: the delivery's outcome does
    /// not wait for them).
    fn answered(self: Arc<Self>, events: Vec<Event>, origin: String);
}

/// Whether a target's worker may start deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// In rotation.
    Open,
    /// Quarantined, and one probe delivery may go now.
    Probe,
    /// Quarantined (or not loaded); look again after this long.
    Closed(std::time::Duration),
}

/// One delivery call's result, as quarantine counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Delivered, or refused for a reason of the event's own.
    Ok,
    /// The department was unavailable.
    Unavailable,
    /// The adapter trapped, panicked, hit its memory cap or its deadline.
    Crashed,
}

/// All target queues, and the count of attempts in flight.
pub struct Deliveries {
    config: DeliveryConfig,
    queues: DashMap<String, Arc<TargetQueue>>,
    /// Each target's last failed attempt: when (unix ms) and why.
    last_error: DashMap<String, (i64, String)>,
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    host: OnceLock<Weak<dyn Host>>,
}

impl Deliveries {
    /// No queues yet.
    pub fn new(config: DeliveryConfig) -> Deliveries {
        Deliveries {
            config,
            queues: DashMap::new(),
            last_error: DashMap::new(),
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            host: OnceLock::new(),
        }
    }

    /// Gives the workers the parts they work with (once, at start).
    pub fn attach(&self, host: Weak<dyn Host>) {
        if self.host.set(host).is_err() {
            tracing::error!("the delivery queues were attached twice");
        }
    }

    /// Where a backend with shared work hands this node deliveries:
    /// `None` before the hub attached its parts.
    pub fn sink(&self) -> Option<crate::journal::WorkSink> {
        let host = self.host.get()?.clone();
        Some(Arc::new(move |r: DeliveryRef| {
            if let Some(hub) = host.upgrade() {
                hub.deliveries().enqueue(vec![r], None);
            }
        }))
    }

    /// The queue of `target`, created (with its worker) on first use.
    pub fn queue(&self, target: &str) -> Arc<TargetQueue> {
        if let Some(q) = self.queues.get(target) {
            return q.clone();
        }
        self.queues
            .entry(target.to_string())
            .or_insert_with(|| {
                let q = Arc::new(TargetQueue::new(target));
                match self.host.get() {
                    Some(host) => {
                        tokio::spawn(worker(host.clone(), q.clone()));
                    }
                    // Kept in the journal: delivered after the next start.
                    None => tracing::error!(adapter = %target, "deliveries queued before the hub started its workers"),
                }
                q
            })
            .clone()
    }

    /// Deliveries waiting for `target` (pending, including retries).
    pub fn depth(&self, target: &str) -> usize {
        self.queues.get(target).map(|q| q.depth()).unwrap_or(0)
    }

    /// Wakes `target`'s worker (after a swap, a rollback, a release).
    pub fn wake(&self, target: &str) {
        if let Some(q) = self.queues.get(target) {
            q.wake();
        }
    }

    /// `target`'s last failed attempt: when (unix ms) and why.
    pub fn last_error(&self, target: &str) -> Option<(i64, String)> {
        self.last_error.get(target).map(|e| e.clone())
    }

    /// Notes why `target` gets nothing now (shown as its last error).
    pub fn note_error(&self, target: &str, why: &str) {
        let same = self.last_error.get(target).is_some_and(|e| e.1 == why);
        if !same {
            tracing::warn!(adapter = %target, "deliveries wait: {why}");
            self.last_error
                .insert(target.to_string(), (now_ms(), why.to_string()));
        }
    }

    /// Deliveries waiting for `target` per priority (`info` first).
    pub fn lane_depths(&self, target: &str) -> [usize; LANES] {
        self.queues
            .get(target)
            .map(|q| q.lane_depths())
            .unwrap_or_default()
    }

    /// How deep `target`'s queue may grow before it refuses an event of
    /// severity rank `priority`: `delivery.queue_depth` for `major` and
    /// `critical`, less the reserve (`delivery.priority_reserve`) for
    /// `minor`, `info` and events without a severity.
    pub fn limit_for(&self, priority: u8) -> usize {
        let depth = self.config.queue_depth;
        if priority >= govhub_sdk::Severity::Major.rank() {
            depth
        } else {
            depth - self.reserve()
        }
    }

    /// The part of each queue only `major` and `critical` events may use.
    pub fn reserve(&self) -> usize {
        let depth = self.config.queue_depth;
        ((depth as f64 * self.config.priority_reserve).round() as usize).min(depth - 1)
    }

    /// Queues deliveries the journal just stored.
    pub fn enqueue(&self, refs: Vec<DeliveryRef>, event: Option<Arc<Event>>) {
        for r in refs {
            let target = r.target.clone();
            self.queue(&target).push(Job {
                delivery: r,
                event: event.clone(),
            });
        }
    }

    /// Stops starting attempts and waits up to `grace` for those in flight;
    /// whatever is left stays pending in the journal.
    pub async fn stop(&self, grace: Duration) -> usize {
        self.stopping.store(true, Ordering::SeqCst);
        for q in self.queues.iter() {
            q.wake();
        }
        let wait = async {
            while self.in_flight.load(Ordering::SeqCst) > 0 {
                let notified = self.idle.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
        self.in_flight.load(Ordering::SeqCst)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// One target's worker: starts attempts while the adapter has free
/// instances and a lane is ready.
async fn worker(host: Weak<dyn Host>, queue: Arc<TargetQueue>) {
    loop {
        let Some(hub) = host.upgrade() else { return };
        if hub.deliveries().stopping() {
            return;
        }
        // A quarantined or unloaded adapter gets nothing but, when
        // quarantined, a probe now and then: its deliveries wait in the
        // journal until a probe succeeds or a load or rollback wakes the
        // worker.
        let concurrency = match hub.gate(queue.target()) {
            Gate::Open => hub
                .adapter(queue.target())
                .map(|a| a.manifest.limits.concurrency as usize)
                .unwrap_or(1),
            Gate::Probe => 1,
            Gate::Closed(wait) => {
                drop(hub);
                queue.wait(queue::Wait::For(wait.as_millis() as u64)).await;
                continue;
            }
        };
        match queue.next(concurrency) {
            Ok(job) => {
                hub.deliveries().in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(attempt(hub, queue.clone(), job));
            }
            Err(wait) => {
                drop(hub);
                queue.wait(wait).await;
            }
        }
    }
}

/// One call of `deliver`, timed, traced and counted for health and metrics.
async fn call(
    hub: &Arc<dyn Host>,
    d: &DeliveryRef,
    event: &govhub_sdk::Event,
    adapter: &Adapter,
    attempts: u32,
    scrub: Option<crate::runtime::Scrub>,
) -> (
    Result<govhub_sdk::Outcome, crate::runtime::CallError>,
    tracing::Span,
) {
    let config = &hub.deliveries().config;
    // One attempt; its parent the trace context stored with the event.
    let span = tracing::info_span!(
        "deliver",
        govhub.adapter = %d.target,
        govhub.event.id = %event.id,
        govhub.case.id = event.caseid.as_deref(),
        govhub.attempt = attempts,
        govhub.outcome = tracing::field::Empty,
    );
    if crate::telemetry::active() {
        crate::telemetry::propagate::follow(
            &span,
            crate::telemetry::TraceContext::from_event(event).as_ref(),
        );
    }
    let started = std::time::Instant::now();
    let result =
        tracing::Instrument::instrument(adapter.deliver_scrubbed(event, scrub), span.clone()).await;
    let health = match &result {
        Err(crate::runtime::CallError::Adapter(govhub_sdk::AdapterError::Unavailable(_))) => {
            Health::Unavailable
        }
        Err(e) if e.killed_instance() => Health::Crashed,
        _ => Health::Ok,
    };
    hub.clone().record_health(&d.target, health);
    let outcome = match &result {
        Ok(_) => "delivered",
        Err(e) if e.disposition() == Disposition::Fail || attempts >= config.max_attempts => "dead",
        Err(_) => "retry",
    };
    // For the traces (the log says the outcome in its own lines).
    if crate::telemetry::active() {
        span.record("govhub.outcome", outcome);
    }
    hub.count(&d.target, outcome, started.elapsed().as_secs_f64());
    (result, span)
}

/// One delivery attempt, its outcome recorded before the lane moves on.
async fn attempt(hub: Arc<dyn Host>, queue: Arc<TargetQueue>, job: Job) {
    let d = &job.delivery;
    let attempts = d.attempts + 1;
    let config = &hub.deliveries().config;
    let event = match &job.event {
        Some(e) => Ok(Some(e.clone())),
        None => hub
            .events()
            .event_by_seq(d.event_seq)
            .await
            .map(|e| e.map(Arc::new)),
    };
    let update = match (event, hub.adapter(&d.target)) {
        // Not read (a timeout, an election on NATS): tried again, never a
        // dead letter for a read that failed.
        (Err(e), _) => DeliveryUpdate::Retry {
            id: d.id,
            attempts: d.attempts,
            error: format!("event #{} could not be read: {e}", d.event_seq),
            next_attempt_ms: now_ms() + backoff(config, attempts).as_millis() as i64,
        },
        (Ok(None), _) => DeliveryUpdate::Dead {
            id: d.id,
            attempts,
            error: format!("event #{} is missing from the journal", d.event_seq),
            flow: None,
        },
        (Ok(Some(_)), None) => DeliveryUpdate::Retry {
            id: d.id,
            attempts: d.attempts,
            error: format!("adapter `{}` is not loaded", d.target),
            next_attempt_ms: now_ms() + config.backoff_cap_ms as i64,
        },
        (Ok(Some(event)), Some(adapter)) => match hub.governance().outgoing(&event, &d.target) {
            Outgoing::Withhold(reason) => {
                tracing::info!(adapter = %d.target, event = %event.id, "delivery withheld: {reason}");
                DeliveryUpdate::Withheld {
                    id: d.id,
                    // Nothing applied, nothing handed over; the grade is
                    // the event's (why it was withheld), not a default.
                    flow: hub.governance().flow_record(
                        &event,
                        None,
                        &Applied {
                            grade: crate::governance::view::grade_of(&event),
                            ..Applied::default()
                        },
                        "withheld",
                        0,
                    ),
                    reason,
                }
            }
            Outgoing::Send(view, applied) => {
                send(&hub, d, &event, &view, &applied, &adapter, attempts).await
            }
        },
    };
    if let DeliveryUpdate::Retry { error, .. } | DeliveryUpdate::Dead { error, .. } = &update {
        hub.deliveries()
            .last_error
            .insert(d.target.clone(), (now_ms(), error.clone()));
    }
    if let Err(e) = hub.outcomes().record(vec![update.clone()]).await {
        // Not recorded: the delivery stays pending in the journal and is
        // tried again after a restart; here it is retried after a pause.
        tracing::error!(adapter = %d.target, "cannot record a delivery outcome: {e}");
    }
    match update {
        // Shared work: the backend hands the retry out again (perhaps to
        // another node) once its backoff ends.
        DeliveryUpdate::Retry { .. } if hub.outcomes().shared_work() => queue.hand_back(job),
        _ => queue.finish(job, &update),
    }
    if hub.deliveries().in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
        hub.deliveries().idle.notify_waiters();
    }
}

/// Hands `view` (the event as its target may see it) to the adapter; the
/// outcome, with any error quoting what the adapter saw scrubbed of the
/// event's personal information.
async fn send(
    hub: &Arc<dyn Host>,
    d: &DeliveryRef,
    event: &Event,
    view: &Event,
    applied: &Applied,
    adapter: &Adapter,
    attempts: u32,
) -> DeliveryUpdate {
    let config = &hub.deliveries().config;
    let governance = hub.governance().clone();
    // The event's values in the clear, worked out only when a log line or
    // an error needs scrubbing (most deliveries have neither).
    let values: Arc<std::sync::OnceLock<Vec<(String, String)>>> = Arc::default();
    let clear = {
        let (g, e) = (governance.clone(), Arc::new(event.clone()));
        move |v: &std::sync::OnceLock<Vec<(String, String)>>| {
            v.get_or_init(|| g.clear_values(&e)).clone()
        }
    };
    let scrub: Option<crate::runtime::Scrub> = governance.enabled().then(|| {
        let (g, v, clear) = (governance.clone(), values.clone(), clear.clone());
        Arc::new(move |text: &str| g.scrub(text, &clear(&v))) as crate::runtime::Scrub
    });
    let scrubbed = |e: &dyn std::fmt::Display| governance.scrub(&e.to_string(), &clear(&values));
    let (result, span) = call(hub, d, view, adapter, attempts, scrub).await;
    // What is said of the attempt is said in its span.
    let _in = span.enter();
    match result {
        Ok(outcome) => {
            tracing::debug!(adapter = %d.target, event = %event.id, attempts, "delivered");
            if !outcome.events.is_empty() {
                // The answers follow from this attempt (traces off: from
                // the event's own context).
                let mut answers = outcome.events;
                let context = crate::telemetry::TraceContext::of_span(&span)
                    .or_else(|| crate::telemetry::TraceContext::from_event(event));
                crate::telemetry::inherit(context.as_ref(), &mut answers);
                hub.clone().answered(answers, d.target.clone());
            }
            DeliveryUpdate::Delivered {
                id: d.id,
                attempts,
                reference: outcome.reference,
                flow: governance.flow_record(event, Some(view), applied, "delivered", attempts),
            }
        }
        Err(e) if e.disposition() == Disposition::Fail || attempts >= config.max_attempts => {
            let error = scrubbed(&e);
            tracing::warn!(adapter = %d.target, event = %event.id, attempts, error = %error, "delivery failed for good: dead letter");
            DeliveryUpdate::Dead {
                id: d.id,
                attempts,
                flow: governance.flow_record(event, Some(view), applied, "dead", attempts),
                error,
            }
        }
        Err(e) => {
            let wait = backoff(config, attempts);
            let error = scrubbed(&e);
            tracing::info!(adapter = %d.target, event = %event.id, attempts, error = %error, retry_in_ms = wait.as_millis() as u64, "delivery failed; will retry");
            DeliveryUpdate::Retry {
                id: d.id,
                attempts,
                error,
                next_attempt_ms: now_ms() + wait.as_millis() as i64,
            }
        }
    }
}
