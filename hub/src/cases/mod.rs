//! Closed-loop cases: every reported incident is a case that is done only
//! when every department that had to act has reported back, within its
//! deadline; an overdue case escalates up the grid.
//!
//! The tracker is fed by the journal: it reads stored events in order and
//! stores the cases it derives together with how far it has read, in one
//! transaction, so after a crash it picks up exactly where it stopped. The
//! events it emits (`gov.case.escalated`, `gov.case.closed`) have ids
//! derived from the case, so emitting one twice (after a crash between
//! emitting and storing) is a duplicate the journal drops.

pub mod clock;
pub mod model;
pub mod stats;

use crate::config::CasesConfig;
use crate::journal::{CaseRow, CaseStore, FedEvent, JournalError};
use model::{opens_case, Case, Effect, Entry, Stage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// What the tracker needs of the parts around it; `hub.rs` composes them
/// and implements it. The tracker holds it weakly: a hub dropped stops it.
pub trait Host: Send + Sync + 'static {
    /// Where case events are read and cases stored.
    fn store(&self) -> Arc<dyn CaseStore>;
    /// The hub's time, which deadlines are judged by.
    fn clock(&self) -> &Arc<dyn clock::Clock>;
    /// Takes in the events the tracker produces (escalations, closes) as
    /// the hub's own, routed like any other; done once they are stored.
    fn emit(
        self: Arc<Self>,
        events: Vec<govhub_sdk::Event>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;
}

/// Events read from the journal per pass.
const FEED_BATCH: usize = 500;

/// Shortest time between two passes. Under load every accepted request
/// wakes the tracker; gathering what arrives in 20 ms into one pass costs
/// cases 20 ms of freshness and saves thousands of journal reads a second.
const MIN_PASS_GAP: Duration = Duration::from_millis(20);

/// The case tracker.
pub struct Tracker {
    config: CasesConfig,
    open: Mutex<HashMap<String, Case>>,
    wake: Notify,
    /// The hub-clock time deadlines were last checked at.
    checked_at: AtomicI64,
}

/// The stored form of a case.
pub fn row(case: &Case) -> CaseRow {
    CaseRow {
        id: case.id.clone(),
        kind: match case.kind {
            model::Kind::Incident => "incident".into(),
            model::Kind::Dispute => "dispute".into(),
        },
        category: case.category.clone(),
        grid: case.grid.clone(),
        stage: case.stage as u8,
        level: case.level,
        opened_ms: case.opened_ms,
        accept_due_ms: case.accept_due_ms,
        resolve_due_ms: case.resolve_due_ms,
        closed_ms: case.closed_ms,
        doc: serde_json::to_vec(case).unwrap_or_default(),
        severity: case.severity.map(|s| s.rank()),
        summary: serde_json::to_vec(&summary(case)).unwrap_or_default(),
    }
}

/// What the live stream and the cockpit know of a case: where it stands,
/// its deadlines (unix ms, hub clock, so a console can count down against
/// the hub's `now`), its escalation level, each department's stage, and
/// the last step of its timeline. `GET /v1/cases/{id}` has the rest.
pub fn summary(case: &Case) -> serde_json::Value {
    let departments: Vec<serde_json::Value> = case
        .departments
        .iter()
        .map(|d| serde_json::json!({"name": d.name, "stage": d.stage.as_str()}))
        .collect();
    let last = case.timeline.last().map(|e| {
        serde_json::json!({
            "at_ms": e.at_ms,
            "what": e.what,
            "department": e.department,
        })
    });
    with_head(
        case,
        serde_json::json!({
            "opened_ms": case.opened_ms,
            "accept_due_ms": case.accept_due_ms,
            "resolve_due_ms": case.resolve_due_ms,
            "level_due_ms": case.level_due_ms,
            "closed_ms": case.closed_ms,
            "close_reason": case.close_reason,
            "on_time": case.on_time(),
            "open_departments": case.open_departments(),
            "departments": departments,
            "mediation_level": mediation_level(case),
            "steps": case.timeline.len(),
            "last_step": last,
        }),
    )
}

/// `rest` after what every view of a case begins with: which case, where,
/// its stage and its escalation level.
fn with_head(case: &Case, rest: serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::json!({
        "id": case.id,
        "kind": case.kind,
        "category": case.category,
        "severity": case.severity.map(|s| s.as_str()),
        "grid": case.grid,
        "status": case.stage.as_str(),
        "level": case.level,
        "level_name": model::ESCALATION_LEVELS[case.level as usize],
    });
    if let (Some(out), serde_json::Value::Object(rest)) = (out.as_object_mut(), rest) {
        out.extend(rest);
    }
    out
}

/// How far up the mediation rooms a dispute has gone: 0 the grid's, 1 the
/// community's, 2 the street's mediation centre (each `referred` outcome
/// sends it one room up).
fn mediation_level(case: &Case) -> usize {
    case.mediation
        .iter()
        .filter(|m| m.outcome == "referred")
        .filter_map(|m| model::MEDIATION_LEVELS.iter().position(|l| *l == m.level))
        .map(|i| (i + 1).min(model::MEDIATION_LEVELS.len() - 1))
        .max()
        .unwrap_or(0)
}

/// A stored case, read back.
pub fn from_doc(doc: &[u8]) -> Option<Case> {
    serde_json::from_slice(doc).ok()
}

impl Tracker {
    /// A tracker with the open cases and feed position stored in `journal`.
    pub async fn load(
        config: CasesConfig,
        journal: &dyn CaseStore,
    ) -> Result<Tracker, JournalError> {
        let open = journal
            .cases(&crate::journal::CaseFilter {
                status: Some(crate::journal::CaseStatus::Open),
                limit: usize::MAX >> 1,
                ..Default::default()
            })
            .await?
            .iter()
            .filter_map(|d| from_doc(d))
            .map(|c| (c.id.clone(), c))
            .collect();
        Ok(Tracker {
            config,
            open: Mutex::new(open),
            wake: Notify::new(),
            checked_at: AtomicI64::new(i64::MIN),
        })
    }

    /// Asks the tracker to read new events (and check deadlines) now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Cases open right now.
    pub fn open_count(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Case>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs until the hub is dropped: feed, check deadlines, sleep until
    /// woken or the next check.
    pub async fn run(self: Arc<Tracker>, host: Weak<dyn Host>) {
        let interval = Duration::from_millis(self.config.check_interval_ms);
        let arrivals = host.upgrade().and_then(|h| h.store().arrivals());
        // The term this node tracks under: the cases are read back from
        // the store each time it starts to track (on NATS another node may
        // have tracked them in between).
        let mut term = Some(0);
        // How far the system clock had stepped when last said.
        let mut reported_step = 0i64;
        loop {
            let Some(hub) = host.upgrade() else { return };
            let now_term = hub.store().tracking();
            if now_term != term {
                if now_term.is_some() {
                    self.reload(&*hub.store()).await;
                    self.checked_at.store(i64::MIN, Ordering::SeqCst);
                }
                term = now_term;
            }
            if term.is_none() {
                // Another node tracks the cases.
                drop(hub);
                tokio::time::sleep(interval.min(Duration::from_millis(500))).await;
                continue;
            }
            // The time is read before the feed: everything the journal
            // held at `now` is applied before deadlines are judged at
            // `now` (a status that came in just before a clock step is
            // not missed).
            let now = hub.clock().now_ms();
            let step = crate::journal::clock_step_ms();
            if (step - reported_step).abs() > 2_000 {
                tracing::warn!(
                    step_s = step / 1000,
                    "the system clock was stepped {} s {} the hub's steady clock: deadlines and event times keep to the steady clock (neither lost nor fired early) until the hub restarts",
                    (step / 1000).abs(),
                    if step > 0 { "ahead of" } else { "behind" }
                );
                reported_step = step;
            }
            if let Err(e) = self.feed(&hub).await {
                tracing::warn!("case tracker could not read the journal: {e:#}");
                self.reload(&*hub.store()).await;
            }
            if let Err(e) = self.check(&hub, now).await {
                tracing::warn!("case tracker could not escalate: {e:#}");
                self.reload(&*hub.store()).await;
            }
            drop(hub);
            let arrived = async {
                match &arrivals {
                    Some(a) => a.notified().await,
                    None => std::future::pending().await,
                }
            };
            let woken = async {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = arrived => {}
                }
            };
            let _ = tokio::time::timeout(interval, woken).await;
            tokio::time::sleep(MIN_PASS_GAP).await;
        }
    }

    /// After a failure half way, forget the in-memory state and read it
    /// back from the journal; what was taken and not settled is taken
    /// again.
    async fn reload(&self, journal: &dyn CaseStore) {
        journal.rewind_case_feed();
        if let Ok(fresh) = Tracker::load(self.config.clone(), journal).await {
            *self.lock() = fresh.open.into_inner().unwrap_or_default();
        }
    }

    /// Reads every case event stored since the last pass into the cases.
    pub async fn feed(&self, hub: &Arc<dyn Host>) -> anyhow::Result<()> {
        loop {
            let take = hub.store().take_case_events(FEED_BATCH).await?;
            let batch = take.events;
            if batch.is_empty() {
                // Only events without a case since: nothing to store (after
                // a restart those events are skipped again, cheaply).
                return Ok(());
            }
            let full = batch.len() == FEED_BATCH;
            let closed = self.closed_cases_of(&*hub.store(), &batch).await?;
            let (rows, effects) = self.apply_batch(closed, batch);
            self.emit(hub, effects).await?;
            hub.store().settle_cases(rows, take.receipt).await?;
            self.forget_closed();
            if !full {
                return Ok(());
            }
        }
    }

    /// The stored cases that `batch` names and that are not open: closed
    /// ones (an event after closing joins their timeline), read before
    /// the batch is applied so that applying it never waits.
    async fn closed_cases_of(
        &self,
        journal: &dyn CaseStore,
        batch: &[FedEvent],
    ) -> Result<HashMap<String, Case>, JournalError> {
        let wanted: std::collections::BTreeSet<String> = {
            let open = self.lock();
            batch
                .iter()
                .filter_map(|fe| fe.event.caseid.clone())
                .filter(|id| !open.contains_key(id))
                .collect()
        };
        let mut closed = HashMap::new();
        for id in wanted {
            if let Some(case) = journal.case(&id).await?.and_then(|d| from_doc(&d)) {
                closed.insert(id, case);
            }
        }
        Ok(closed)
    }

    fn apply_batch(
        &self,
        mut closed: HashMap<String, Case>,
        batch: Vec<FedEvent>,
    ) -> (Vec<CaseRow>, Vec<govhub_sdk::Event>) {
        let mut changed: HashMap<String, Case> = HashMap::new();
        let mut effects = Vec::new();
        let mut open = self.lock();
        for fe in batch {
            let Some(caseid) = fe.event.caseid.clone() else {
                continue;
            };
            let department = fe
                .event
                .extension("department")
                .map(str::to_string)
                .or_else(|| fe.origin.clone());
            if let Some(case) = open.get_mut(&caseid) {
                if opens_case(&fe.event.type_) {
                    case.timeline
                        .push(entry(&fe, department.as_deref(), Some("reported again")));
                } else {
                    effects.extend(case.apply(&fe.event, department.as_deref(), fe.received_ms));
                }
                changed.insert(caseid, case.clone());
                continue;
            }
            // Not open: closed already (look it up), or new.
            let stored = changed
                .get(&caseid)
                .cloned()
                .or_else(|| closed.remove(&caseid));
            match stored {
                Some(mut closed) => {
                    // The hub's own announcement of the close is no news.
                    let own = fe.event.type_ == "gov.case.closed";
                    let note = (!own).then_some("after closing");
                    closed
                        .timeline
                        .push(entry(&fe, department.as_deref(), note));
                    changed.insert(caseid, closed);
                }
                None if opens_case(&fe.event.type_) => {
                    // The departments that must act are those the routes
                    // chose; subscribers only listen.
                    let departments: Vec<String> = fe
                        .targets
                        .iter()
                        .filter(|t| t.rule.starts_with("route:"))
                        .map(|t| t.adapter.clone())
                        .collect();
                    let case = Case::open(
                        &self.config,
                        &caseid,
                        &fe.event,
                        &departments,
                        fe.received_ms,
                    );
                    tracing::info!(case = %caseid, departments = ?departments, "case opened");
                    open.insert(caseid.clone(), case.clone());
                    changed.insert(caseid, case);
                }
                None => {
                    tracing::debug!(case = %caseid, event = %fe.event.id, "event of an unknown case");
                }
            }
        }
        let rows = changed.values().map(row).collect();
        let emit = effects.into_iter().map(|Effect::Emit(e)| e).collect();
        (rows, emit)
    }

    fn forget_closed(&self) {
        self.lock().retain(|_, c| c.stage != Stage::Closed);
    }

    /// Escalates every open case past its deadline at `now`. Runs at most
    /// once per `check_interval_ms` of the hub's clock (a busy feed wakes
    /// the tracker far more often than deadlines can pass).
    pub async fn check(&self, hub: &Arc<dyn Host>, now: i64) -> anyhow::Result<()> {
        let last = self.checked_at.load(Ordering::SeqCst);
        if last != i64::MIN && now.saturating_sub(last) < self.config.check_interval_ms as i64 {
            return Ok(());
        }
        self.checked_at.store(now, Ordering::SeqCst);
        let mut rows = Vec::new();
        let mut effects = Vec::new();
        {
            let mut open = self.lock();
            for case in open.values_mut() {
                let e = case.check(&self.config, now);
                if !e.is_empty() {
                    tracing::warn!(case = %case.id, level = case.level, "case overdue: escalated");
                    rows.push(row(case));
                    effects.extend(e.into_iter().map(|Effect::Emit(e)| e));
                }
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.emit(hub, effects).await?;
        hub.store().store_cases(rows).await?;
        Ok(())
    }

    async fn emit(
        &self,
        hub: &Arc<dyn Host>,
        events: Vec<govhub_sdk::Event>,
    ) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        hub.clone().emit(events).await
    }
}

fn entry(fe: &FedEvent, department: Option<&str>, note: Option<&str>) -> Entry {
    Entry {
        at_ms: fe.received_ms,
        what: fe.event.type_.clone(),
        source: fe.event.source.clone(),
        department: department.map(str::to_string),
        event_id: fe.event.id.clone(),
        note: note.map(str::to_string),
    }
}

/// A case as the API shows it: times as RFC 3339, whether it is overdue,
/// who is still open.
pub fn view(case: &Case, now_ms: i64) -> serde_json::Value {
    use crate::journal::rfc3339_ms as t;
    let departments: Vec<serde_json::Value> = case
        .departments
        .iter()
        .map(|d| {
            serde_json::json!({
                "name": d.name,
                "stage": d.stage.as_str(),
                "dispatched_at": d.dispatched_ms.map(t),
                "accepted_at": d.accepted_ms.map(t),
                "on_scene_at": d.on_scene_ms.map(t),
                "resolved_at": d.resolved_ms.map(t),
            })
        })
        .collect();
    let timeline: Vec<serde_json::Value> = case
        .timeline
        .iter()
        .map(|e| {
            serde_json::json!({
                "at": t(e.at_ms),
                "what": e.what,
                "source": e.source,
                "department": e.department,
                "event_id": e.event_id,
                "note": e.note,
            })
        })
        .collect();
    with_head(
        case,
        serde_json::json!({
            "opened_at": t(case.opened_ms),
            "accept_due_at": t(case.accept_due_ms),
            "resolve_due_at": t(case.resolve_due_ms),
            "level_due_at": case.level_due_ms.map(t),
            "closed_at": case.closed_ms.map(t),
            "close_reason": case.close_reason,
            "on_time": case.on_time(),
            "overdue": case.overdue(now_ms),
            "open_departments": case.open_departments(),
            "departments": departments,
            "mediation": case.mediation,
            "timeline": timeline,
        }),
    )
}
