//! The running hub: the loaded adapters, the router, the journal and the
//! delivery queues, and the one path every event takes through them:
//! normalize → route → journal (durable) → delivery queues.

use crate::cases::clock::{Clock, ManualClock, SystemClock};
use crate::cases::Tracker;
use crate::config::Config;
use crate::delivery::Deliveries;
pub use crate::delivery::{Gate, Health};
use crate::journal::sqlite::{SqliteConfig, SqliteJournal, Synchronous};
use crate::journal::{Journal, JournalError, NewEvent};
use crate::router::{Router, Target, TypeGlob};
use crate::runtime::{Adapter, Runtime, StateStore};
use anyhow::Context;
use dashmap::DashMap;
use govhub_sdk::{cloudevents, Event};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A loaded version of an adapter with its compiled subscriptions.
pub struct Loaded {
    /// The adapter.
    pub adapter: Arc<Adapter>,
    /// Its subscriptions, compiled.
    pub subscriptions: Arc<[TypeGlob]>,
    /// Its version record in the journal.
    pub version_id: i64,
    /// `dir`, `admin` or `rollback`.
    pub origin: String,
    /// When it started serving (unix ms).
    pub loaded_ms: i64,
    /// Whether its module's signature was verified.
    pub signed: bool,
}

/// A registry entry: the version serving, and whether it is quarantined.
pub struct Slot {
    /// The version serving.
    pub active: Arc<Loaded>,
    /// Why it is out of rotation, if it is.
    pub quarantined: Option<String>,
    /// While quarantined: when the next probe delivery may go.
    pub next_probe: Option<std::time::Instant>,
}

/// What became of one event handed to the hub.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepted {
    /// The event id (assigned by the hub when the event had none).
    pub id: String,
    /// Its source.
    pub source: String,
    /// Its case (assigned by the hub to a report that had none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caseid: Option<String>,
    /// True when the same (`source`, `id`) had arrived before; it was not
    /// routed again.
    pub duplicate: bool,
    /// Where it was routed (empty for duplicates).
    pub targets: Vec<Target>,
}

/// Why events were not accepted. Nothing of the request was stored.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// An event is invalid.
    #[error("event {index}: {error}")]
    Invalid {
        /// Its position in the request.
        index: usize,
        /// What is wrong.
        error: cloudevents::Error,
    },
    /// A target's delivery queue is full (for this event's severity).
    #[error("{}", backpressure_message(.target, *.depth, *.limit, .severity))]
    Backpressure {
        /// The full target.
        target: String,
        /// Its depth.
        depth: usize,
        /// The limit for the event's severity.
        limit: usize,
        /// The event's severity (`None`: none given), when the refusal
        /// comes from the reserve kept for `major` and `critical`.
        severity: Option<Option<govhub_sdk::Severity>>,
    },
    /// The journal could not store them.
    #[error("{0}")]
    Journal(#[from] JournalError),
}

fn backpressure_message(
    target: &str,
    depth: usize,
    limit: usize,
    severity: &Option<Option<govhub_sdk::Severity>>,
) -> String {
    match severity {
        None => format!(
            "the delivery queue of adapter `{target}` is full ({depth} deliveries waiting, \
             delivery.queue_depth = {limit}); try again later"
        ),
        Some(s) => format!(
            "the delivery queue of adapter `{target}` holds {depth} deliveries: past {limit}, the rest \
             (delivery.priority_reserve) is kept for major and critical events, and this one is {}; \
             try again later",
            s.map(|s| s.as_str()).unwrap_or("without a severity")
        ),
    }
}

/// The hub.
pub struct Hub {
    /// The configuration it runs with.
    pub config: Config,
    /// The wasmtime host.
    pub runtime: Runtime,
    /// The durable store.
    pub journal: Arc<dyn Journal>,
    /// The delivery queues.
    pub deliveries: Deliveries,
    /// The case tracker.
    pub cases: Arc<Tracker>,
    /// The hub's time (cases, received times).
    pub clock: Arc<dyn Clock>,
    /// The same clock when it is manual (`cases.clock = "manual"`).
    pub manual_clock: Option<Arc<ManualClock>>,
    pub(crate) adapters: DashMap<String, Slot>,
    pub(crate) health: DashMap<String, std::sync::Mutex<std::collections::VecDeque<Health>>>,
    pub(crate) dir_seen: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, String>>,
    /// Counters for `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Who may call the hub.
    pub auth: Arc<crate::auth::Authority>,
    /// What each recipient and reader may see of the events.
    pub governance: Arc<crate::governance::Governance>,
    /// The open `/v1/stream` subscriptions.
    pub streams: Arc<crate::stream::Streams>,
    /// One version change (load, rollback, unload) at a time, so the
    /// journal's active version is always the one serving.
    pub(crate) versions_lock: tokio::sync::Mutex<()>,
    router: Router,
    grids: Option<Arc<crate::router::grids::GridMap>>,
}

/// Adapter state kept in the journal.
struct JournalState(Arc<dyn crate::journal::AdapterState>);

impl StateStore for JournalState {
    fn load(&self, adapter: &str) -> Vec<(String, Vec<u8>)> {
        self.0.state(adapter).unwrap_or_else(|e| {
            tracing::error!(%adapter, "cannot read adapter state: {e}");
            Vec::new()
        })
    }
    fn set(&self, adapter: &str, key: &str, value: Option<&[u8]>) {
        self.0.set_state(adapter, key, value);
    }
}

/// Opens the journal `storage.backend` names.
async fn open_journal(config: &Config) -> anyhow::Result<Arc<dyn Journal>> {
    Ok(match config.storage.backend.as_str() {
        "nats" => {
            let nats = config.storage.nats(&config.stream);
            let journal = crate::journal::nats::NatsJournal::connect(&nats)
                .await
                .with_context(|| format!("the NATS journal at {}", nats.url))?;
            tracing::info!(
                url = %nats.url,
                server = %journal.server_version(),
                partitions = nats.partitions,
                replicas = nats.replicas,
                "journal on NATS JetStream"
            );
            Arc::new(journal)
        }
        _ => Arc::new(
            SqliteJournal::open(&SqliteConfig {
                path: config.storage.path.clone(),
                synchronous: Synchronous::parse(&config.storage.synchronous)
                    .unwrap_or(Synchronous::Full),
                max_group: config.storage.group_commit_max,
                wal_max_bytes: config.storage.wal_max_mb.saturating_mul(1024 * 1024),
                feed_retain: config.stream.retain,
                feed_buffer: config.stream.buffer,
            })
            .with_context(|| format!("journal {}", config.storage.path.display()))?,
        ),
    })
}

impl Hub {
    /// Opens the journal, builds the runtime, loads every manifest in
    /// `adapters.dir` and checks that every route names a loaded adapter.
    /// Nothing runs in the background until [`Hub::run_background`].
    pub async fn start(config: Config) -> anyhow::Result<Arc<Hub>> {
        let journal = open_journal(&config).await?;
        let metrics = crate::metrics::Metrics::new();
        let auth = Arc::new(crate::auth::Authority::new(
            &config.auth,
            journal.clone(),
            metrics.auth.clone(),
        )?);
        let runtime =
            Runtime::new(config.runtime_config(Some(Arc::new(JournalState(journal.clone())))))?;
        if let Some(p) = config.runtime.pooling() {
            tracing::info!(
                instances = p.instances,
                max_memory_mb = p.max_memory_mb,
                "wasmtime pooling allocator on: instance slots reserved at start"
            );
        }
        let router = Router::new(&config.routes).map_err(anyhow::Error::msg)?;
        let manual_clock = if config.cases.clock == "manual" {
            let start = match journal.meta("clock_ms")? {
                Some(v) => v.parse().unwrap_or_else(|_| crate::journal::now_ms()),
                None => config
                    .cases
                    .clock_start
                    .as_deref()
                    .and_then(|s| {
                        time::OffsetDateTime::parse(
                            s,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    })
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                    .unwrap_or_else(crate::journal::now_ms),
            };
            Some(Arc::new(ManualClock::new(start)))
        } else {
            None
        };
        let clock: Arc<dyn Clock> = match &manual_clock {
            Some(m) => m.clone(),
            None => Arc::new(SystemClock),
        };
        let cases = Arc::new(Tracker::load(config.cases.clone(), &*journal).await?);
        let grids = match &config.grids.map {
            Some(path) => {
                let map =
                    crate::router::grids::GridMap::load(path, config.grids.street.as_deref())?;
                tracing::info!(grids = map.len(), map = %path.display(), "grid map loaded");
                Some(Arc::new(map))
            }
            None => None,
        };
        // A cluster's nodes pseudonymize alike: with no key named, the
        // journal holds one for all of them (the first node's).
        let shared_key = match (&config.governance.key_env, &config.governance.key_file) {
            (None, None) => journal
                .shared_value("governance.key", &crate::governance::Governance::new_key()?)
                .await
                .context("the pseudonym key the cluster shares")?,
            _ => None,
        };
        let governance = Arc::new(
            crate::governance::Governance::load(
                &config.classification,
                &config.governance,
                config
                    .storage
                    .path
                    .parent()
                    .unwrap_or_else(|| Path::new(".")),
                shared_key.as_deref(),
                grids.clone(),
            )
            .context("data governance")?,
        );
        record_policy(&*journal, &governance).await?;
        let hub = Arc::new(Hub {
            deliveries: Deliveries::new(config.delivery.clone()),
            cases,
            clock,
            manual_clock,
            runtime,
            journal,
            adapters: DashMap::new(),
            health: DashMap::new(),
            dir_seen: Default::default(),
            versions_lock: Default::default(),
            metrics,
            auth,
            governance: governance.clone(),
            streams: Arc::new(crate::stream::Streams::new(
                config.stream.clone(),
                governance.clone(),
            )),
            router,
            grids,
            config,
        });
        hub.deliveries
            .attach(Arc::downgrade(&hub) as std::sync::Weak<dyn crate::delivery::Host>);
        hub.metrics
            .watch(Arc::downgrade(&hub) as std::sync::Weak<dyn crate::metrics::Observed>);
        hub.load_at_start().await?;
        for (route, target) in hub.router.route_targets() {
            if hub.adapters.contains_key(target) {
                continue;
            }
            if !hub.journal.versions(target)?.is_empty() {
                // Unloaded by an operator: its deliveries wait for a load.
                tracing::warn!(%route, adapter = %target, "route sends to an unloaded adapter: its deliveries wait until a version is loaded");
            } else {
                anyhow::bail!(
                    "route `{route}` sends to adapter `{target}`, but no manifest in {} names it",
                    hub.config.adapters.dir.display()
                );
            }
        }
        Ok(hub)
    }

    /// Starts the background work: resumes every delivery the journal holds
    /// pending, starts the case tracker and the poll loops.
    pub async fn run_background(self: &Arc<Hub>) -> anyhow::Result<()> {
        let pending = self.journal.pending().await?;
        if !pending.is_empty() {
            tracing::info!(
                deliveries = pending.len(),
                "resuming deliveries left pending"
            );
        }
        self.deliveries.enqueue(pending, None);
        if self.journal.shared_work() {
            self.follow_registry();
        }
        let host = Arc::downgrade(self) as std::sync::Weak<dyn crate::cases::Host>;
        tokio::spawn(self.cases.clone().run(host));
        self.start_polling();
        if self.config.adapters.watch {
            let hub = Arc::downgrade(self);
            let every = Duration::from_millis(self.config.adapters.watch_interval_ms);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(hub) = hub.upgrade() else { return };
                    hub.scan_folder().await;
                }
            });
        }
        Ok(())
    }

    /// Moves a manual clock forward (and keeps it in the journal); `None`
    /// when the clock is the system's.
    pub async fn advance_clock(&self, ms: i64) -> anyhow::Result<Option<i64>> {
        let Some(clock) = &self.manual_clock else {
            return Ok(None);
        };
        let now = clock.advance(ms);
        self.journal.set_meta("clock_ms", &now.to_string()).await?;
        // Consoles count deadlines down against the hub's time: tell them
        // it jumped.
        self.journal
            .feed_note(
                crate::journal::FeedKind::Clock,
                Default::default(),
                serde_json::json!({"now_ms": now, "manual": true}).to_string(),
            )
            .await?;
        self.cases.wake();
        Ok(Some(now))
    }

    /// Starts the poll loops of adapters with a `poll_interval_ms`.
    fn start_polling(self: &Arc<Hub>) {
        for name in self.adapter_names() {
            let Some(adapter) = self.adapter(&name) else {
                continue;
            };
            let Some(interval) = adapter.manifest.poll_interval_ms else {
                continue;
            };
            let hub = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(interval));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(hub) = hub.upgrade() else { return };
                    if let Err(e) = hub.poll_once(&name).await {
                        tracing::warn!(adapter = %name, "poll failed: {e:#}");
                    }
                }
            });
        }
    }

    /// Polls `adapter` once: its events are accepted, then its cursor is
    /// stored (so a crash in between polls the same events again, and
    /// dedup drops them).
    pub async fn poll_once(self: &Arc<Hub>, name: &str) -> anyhow::Result<usize> {
        let adapter = self
            .adapter(name)
            .with_context(|| format!("no adapter `{name}`"))?;
        let cursor = self.journal.cursor(name)?;
        let mut result = adapter.poll(cursor.as_deref()).await?;
        let n = result.events.len();
        if n > 0 {
            let span = tracing::debug_span!(
                "ingest",
                govhub.route = "poll",
                govhub.adapter = name,
                govhub.events = n,
            );
            crate::telemetry::adopt(&span, &http::HeaderMap::new(), &mut result.events);
            tracing::Instrument::instrument(self.accept(result.events, Some(name)), span).await?;
        }
        if let Some(c) = result.cursor {
            self.journal.set_cursor(name, &c).await?;
        }
        Ok(n)
    }

    /// The adapter called `name`.
    pub fn adapter(&self, name: &str) -> Option<Arc<Adapter>> {
        self.adapters.get(name).map(|s| s.active.adapter.clone())
    }

    /// Why `name` is quarantined, if it is.
    pub fn quarantined(&self, name: &str) -> Option<String> {
        self.adapters.get(name).and_then(|s| s.quarantined.clone())
    }

    /// Whether `name`'s deliveries may go: in rotation, a probe of a
    /// quarantined adapter now due (taken by this call), or not yet.
    pub fn gate(&self, name: &str) -> Gate {
        // A recipient whose grant does not load gets nothing rather than
        // raw data: its deliveries wait in the journal.
        if let Some(why) = self.governance.broken(name) {
            self.deliveries.note_error(name, &why);
            return Gate::Closed(std::time::Duration::from_secs(1));
        }
        let Some(mut slot) = self.adapters.get_mut(name) else {
            return Gate::Closed(std::time::Duration::from_secs(1));
        };
        if slot.quarantined.is_none() {
            return Gate::Open;
        }
        let now = std::time::Instant::now();
        let interval = std::time::Duration::from_millis(self.config.quarantine.probe_interval_ms);
        match slot.next_probe {
            Some(at) if at > now => Gate::Closed((at - now).min(std::time::Duration::from_secs(1))),
            _ => {
                slot.next_probe = Some(now + interval);
                Gate::Probe
            }
        }
    }

    /// The serving version of `name`.
    pub fn loaded(&self, name: &str) -> Option<Arc<Loaded>> {
        self.adapters.get(name).map(|s| s.active.clone())
    }

    /// The grid map, if the deployment has one.
    pub fn grid_map(&self) -> Option<&crate::router::grids::GridMap> {
        self.grids.as_deref()
    }

    /// Names of the loaded adapters, sorted.
    pub fn adapter_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.adapters.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }

    /// Takes events in: fills what the hub assigns, validates, routes,
    /// refuses when a target's queue is full, stores them durably (answering
    /// duplicates as such), and queues their deliveries. `origin` is the
    /// adapter that produced them (never routed back to it). Returns once
    /// the events are on disk.
    pub async fn accept(
        self: &Arc<Hub>,
        events: Vec<Event>,
        origin: Option<&str>,
    ) -> Result<Vec<Accepted>, AcceptError> {
        let mut batch = Vec::with_capacity(events.len());
        let received_ms = self.clock.now_ms();
        for (index, mut event) in events.into_iter().enumerate() {
            // Every report opens a case; the hub names it when the sender
            // did not, from the report's identity so a repeat maps to it.
            if event.caseid.is_none() && crate::cases::model::opens_case(&event.type_) {
                if event.source.is_empty() || event.id.is_empty() {
                    event = normalize(event, origin, received_ms)
                        .map_err(|error| AcceptError::Invalid { index, error })?;
                }
                event.caseid = Some(crate::cases::model::case_id_for(&event.source, &event.id));
            }
            let mut event = normalize(event, origin, received_ms)
                .map_err(|error| AcceptError::Invalid { index, error })?;
            self.assign_grid(&mut event);
            // The labels are the hub's: what a producer set is overwritten.
            self.governance.label(&mut event);
            let span = tracing::debug_span!(
                "route",
                govhub.event.id = %event.id,
                govhub.case.id = event.caseid.as_deref(),
                govhub.targets = tracing::field::Empty,
            );
            let targets = span.in_scope(|| self.route(&event, origin));
            span.record("govhub.targets", targets.len());
            // Traces on: the deliveries follow from this span (the context
            // is stored with the event; one the event came with in a
            // different trace is linked); off, the sender's context stays.
            if let Some(context) = crate::telemetry::TraceContext::of_span(&span) {
                if let Some(own) = crate::telemetry::TraceContext::from_event(&event) {
                    if own.trace_id() != context.trace_id() {
                        crate::telemetry::propagate::link(&span, &own);
                    }
                }
                context.store(&mut event);
            }
            tracing::debug!(
                event = %event.id,
                source = %event.source,
                r#type = %event.type_,
                targets = ?targets.iter().map(|t| t.adapter.as_str()).collect::<Vec<_>>(),
                "routed"
            );
            let encoded = cloudevents::to_string(&event).into();
            batch.push(NewEvent {
                event: Arc::new(event),
                encoded,
                origin: origin.map(str::to_string),
                targets,
                received_ms,
            });
        }
        for new in &batch {
            let severity = new.event.severity;
            let priority = severity.map(|s| s.rank()).unwrap_or(0);
            let limit = self.deliveries.limit_for(priority);
            for t in &new.targets {
                let depth = self
                    .journal
                    .backlog(&t.adapter)
                    .unwrap_or_else(|| self.deliveries.depth(&t.adapter));
                if depth >= limit {
                    self.metrics.shed(severity);
                    let reserved = limit < self.deliveries.limit_for(u8::MAX);
                    return Err(AcceptError::Backpressure {
                        target: t.adapter.clone(),
                        depth,
                        limit,
                        severity: reserved.then_some(severity),
                    });
                }
            }
        }
        let summary: Vec<(Arc<Event>, Vec<Target>)> = batch
            .iter()
            .map(|n| (n.event.clone(), n.targets.clone()))
            .collect();
        let span = tracing::debug_span!(
            "journal.commit",
            govhub.events = batch.len(),
            govhub.event.id = tracing::field::Empty,
            govhub.case.id = tracing::field::Empty,
            govhub.outcome = tracing::field::Empty,
        );
        if let [one] = &batch[..] {
            span.record("govhub.event.id", one.event.id.as_str());
            if let Some(case) = &one.event.caseid {
                span.record("govhub.case.id", case.as_str());
            }
        }
        let appended =
            tracing::Instrument::instrument(self.journal.append(batch), span.clone()).await;
        span.record(
            "govhub.outcome",
            match &appended {
                Ok(stored) if stored.iter().all(|s| s.duplicate) => "duplicate",
                Ok(_) => "stored",
                Err(_) => "failed",
            },
        );
        let appended = appended?;
        let mut accepted = Vec::with_capacity(summary.len());
        for ((event, targets), stored) in summary.into_iter().zip(appended) {
            self.metrics.received(origin, stored.duplicate);
            tracing::debug!(event = %event.id, seq = stored.seq, duplicate = stored.duplicate, deliveries = ?stored.deliveries.iter().map(|d| (d.target.as_str(), d.id)).collect::<Vec<_>>(), "stored");
            // Shared work (NATS): whichever node holds the partition
            // delivers, fed by the backend.
            if !stored.deliveries.is_empty() && !self.journal.shared_work() {
                self.deliveries
                    .enqueue(stored.deliveries, Some(event.clone()));
            }
            accepted.push(Accepted {
                id: event.id.clone(),
                source: event.source.clone(),
                caseid: event.caseid.clone(),
                duplicate: stored.duplicate,
                targets: if stored.duplicate {
                    Vec::new()
                } else {
                    targets
                },
            });
        }
        // The case tracker reads what was just stored.
        self.cases.wake();
        Ok(accepted)
    }

    /// An event with coordinates and no grid gets its grid from the map.
    fn assign_grid(&self, event: &mut Event) {
        let (Some(map), None, Some(lat), Some(lon)) =
            (&self.grids, &event.grid, event.lat, event.lon)
        else {
            return;
        };
        let a = map.assign(lat, lon);
        if !a.inside {
            event.extensions.push(govhub_sdk::Attribute {
                name: "gridflag".into(),
                value: "outside-map".into(),
            });
        }
        event.grid = Some(a.grid);
    }

    fn route(&self, event: &Event, origin: Option<&str>) -> Vec<Target> {
        let subs: Vec<(String, Arc<[TypeGlob]>)> = self
            .adapters
            .iter()
            .filter(|e| !e.active.subscriptions.is_empty())
            .map(|e| (e.key().clone(), e.active.subscriptions.clone()))
            .collect();
        self.router.route(
            event,
            origin,
            subs.iter().map(|(n, g)| (n.as_str(), &g[..])),
        )
    }

    /// Stops deliveries (in-flight calls get `server.shutdown_grace_ms`),
    /// then commits what the journal holds queued.
    pub async fn shutdown(&self) {
        let grace = Duration::from_millis(self.config.server.shutdown_grace_ms);
        let left = self.deliveries.stop(grace).await;
        if left > 0 {
            tracing::warn!(
                in_flight = left,
                "grace period over: deliveries still in flight stay pending in the journal"
            );
        }
        if let Err(e) = self.journal.leave().await {
            tracing::error!("final journal flush failed: {e}");
        }
    }
}

impl crate::delivery::Host for Hub {
    fn deliveries(&self) -> &Deliveries {
        &self.deliveries
    }
    fn events(&self) -> Arc<dyn crate::journal::EventLog> {
        self.journal.clone()
    }
    fn outcomes(&self) -> Arc<dyn crate::journal::DeliveryLog> {
        self.journal.clone()
    }
    fn governance(&self) -> &Arc<crate::governance::Governance> {
        &self.governance
    }
    fn gate(&self, target: &str) -> Gate {
        Hub::gate(self, target)
    }
    fn adapter(&self, target: &str) -> Option<Arc<Adapter>> {
        Hub::adapter(self, target)
    }
    fn record_health(self: Arc<Self>, target: &str, health: Health) {
        Hub::record_health(&self, target, health)
    }
    fn count(&self, target: &str, outcome: &str, seconds: f64) {
        self.metrics.delivery(target, outcome, seconds)
    }
    fn answered(self: Arc<Self>, mut events: Vec<Event>, origin: String) {
        // In the trace of the delivery they answer (their context, when
        // the adapter gave none, is the delivered event's).
        let span = tracing::debug_span!(
            "ingest",
            govhub.route = "answer",
            govhub.adapter = %origin,
            govhub.events = events.len(),
        );
        crate::telemetry::adopt(&span, &http::HeaderMap::new(), &mut events);
        let accept = async move {
            if let Err(e) = self.accept(events, Some(&origin)).await {
                tracing::warn!(adapter = %origin, "events answered by deliver were not accepted: {e}");
            }
        };
        tokio::spawn(tracing::Instrument::instrument(accept, span));
    }
}

impl crate::cases::Host for Hub {
    fn store(&self) -> Arc<dyn crate::journal::CaseStore> {
        self.journal.clone()
    }
    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    fn emit(
        self: Arc<Self>,
        events: Vec<Event>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(async move {
            self.accept(events, None).await?;
            Ok(())
        })
    }
}

impl crate::metrics::Observed for Hub {
    fn serving(&self) -> Vec<(String, Arc<Adapter>)> {
        self.adapter_names()
            .into_iter()
            .filter_map(|n| self.adapter(&n).map(|a| (n, a)))
            .collect()
    }
    fn deliveries(&self) -> &Deliveries {
        &self.deliveries
    }
    fn stream_subscribers(&self) -> usize {
        self.streams.open()
    }
    fn quarantined(&self, name: &str) -> bool {
        Hub::quarantined(self, name).is_some()
    }
}

/// Records a change of the governance policy in the audit chain (its
/// hash against the one the journal last knew), so who may see what is
/// accountable like any other operator's act.
async fn record_policy(
    journal: &dyn Journal,
    governance: &crate::governance::Governance,
) -> anyhow::Result<()> {
    let now = governance.hash().to_string();
    let before = journal.meta("governance_policy")?;
    if before.as_deref() == Some(now.as_str()) {
        return Ok(());
    }
    if governance.enabled() || before.is_some() {
        journal
            .audit_action(
                "hub",
                "policy",
                "governance",
                &serde_json::json!({ "from": before, "to": now }).to_string(),
            )
            .await?;
    }
    journal.set_meta("governance_policy", &now).await?;
    Ok(())
}

/// Fills what the hub assigns (a random `id`, the adapter's `source`, the
/// arrival `time`: `now_ms` of the hub's clock, so a drill on the manual
/// clock stamps its events with the drill's time) and validates the result.
pub fn normalize(
    mut event: Event,
    origin: Option<&str>,
    now_ms: i64,
) -> Result<Event, cloudevents::Error> {
    if event.id.is_empty() {
        event.id = uuid::Uuid::now_v7().to_string();
    }
    if event.source.is_empty() {
        event.source = match origin {
            Some(adapter) => format!("urn:govhub:adapter:{adapter}"),
            None => "urn:govhub:hub".to_string(),
        };
    }
    if event.time.is_none() {
        event.time = Some(crate::journal::rfc3339_ms(now_ms));
    }
    cloudevents::validate(&event)?;
    Ok(event)
}

/// The current time, RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    crate::journal::rfc3339_ms(crate::journal::now_ms())
}

/// Every `*.toml` manifest in `dir`, sorted by file name.
pub fn manifest_paths(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    if !dir.exists() {
        tracing::warn!(dir = %dir.display(), "adapters.dir does not exist: no adapters loaded from it");
        return Ok(Vec::new());
    }
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("adapters.dir {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    Ok(paths)
}
