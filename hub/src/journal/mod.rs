//! The journal: where every accepted event, its routing decision and the
//! fate of each delivery are stored durably.
//!
//! The rest of the hub sees only the [`Journal`] trait: append events
//! (acknowledged only once they are on disk), record delivery outcomes,
//! list what is pending or dead, and read an event back. It also keeps the
//! change feed: every stored event, case change, adapter change and dead
//! letter as one ordered list with growing cursors, written in the same
//! transaction as the change itself, which the live stream replays and
//! follows. [`sqlite`] is the embedded default (one file, WAL, group
//! commit). `README.md` in this folder sets out the seam and the design
//! of the NATS JetStream backend.

pub mod nats;
pub mod sqlite;

use crate::router::Target;
use govhub_sdk::Event;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A journal operation that completes once it is durable.
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T, JournalError>> + Send>>;

/// Why the journal failed; the hub answers `503` and keeps nothing it did
/// not acknowledge.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// SQLite (or the disk) refused.
    #[error("journal: {0}")]
    Storage(String),
    /// The journal is shut down.
    #[error("journal is closed")]
    Closed,
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => JournalError::Storage(format!(
                "{e}: the journal file is damaged; restore it from a backup, or move it aside (keep it) and start with an empty journal"
            )),
            Some(rusqlite::ErrorCode::DiskFull) => JournalError::Storage(format!(
                "{e}: the disk holding the journal is full; free space there and the hub goes on by itself, without a restart"
            )),
            _ => JournalError::Storage(e.to_string()),
        }
    }
}

/// An event to store, with where it came from and where it must go.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The normalized event.
    pub event: std::sync::Arc<Event>,
    /// The event as CloudEvents JSON, encoded by the caller so the single
    /// writer thread only writes; shared with the live feed as it is.
    pub encoded: std::sync::Arc<str>,
    /// The adapter it came from (`None`: the CloudEvents endpoint).
    pub origin: Option<String>,
    /// The routing decision.
    pub targets: Vec<Target>,
    /// When the hub accepted it (unix ms, the hub's clock).
    pub received_ms: i64,
}

/// A stored event as the case tracker reads it, in journal order.
#[derive(Debug, Clone)]
pub struct FedEvent {
    /// Its sequence number.
    pub seq: i64,
    /// When the hub accepted it (unix ms, the hub's clock).
    pub received_ms: i64,
    /// The adapter it came from.
    pub origin: Option<String>,
    /// The event.
    pub event: Event,
    /// Where it was routed, and why.
    pub targets: Vec<Target>,
}

/// What kind of change a feed item records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedKind {
    /// An event was stored (its CloudEvent).
    Event,
    /// A case changed (its summary).
    Case,
    /// An adapter was loaded, refused, rolled back, unloaded, quarantined
    /// or released (its audit record).
    Adapter,
    /// A delivery died, or a dead letter was replayed.
    DeadLetter,
    /// The manual clock moved.
    Clock,
}

impl FeedKind {
    /// Every kind.
    pub const ALL: [FeedKind; 5] = [
        FeedKind::Event,
        FeedKind::Case,
        FeedKind::Adapter,
        FeedKind::DeadLetter,
        FeedKind::Clock,
    ];

    /// The name in the stream (the SSE `event:` field) and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Event => "event",
            FeedKind::Case => "case",
            FeedKind::Adapter => "adapter",
            FeedKind::DeadLetter => "dead-letter",
            FeedKind::Clock => "clock",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<FeedKind> {
        FeedKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The attributes of a feed item a subscriber may filter on; a kind of
/// item that has no such attribute leaves it `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedKeys {
    /// The event type (events, and a dead letter's event).
    pub type_: Option<String>,
    /// The grid code.
    pub grid: Option<String>,
    /// The category.
    pub category: Option<String>,
    /// The severity rank (0 info ... 3 critical).
    pub severity: Option<u8>,
    /// The case.
    pub caseid: Option<String>,
}

/// One change of the hub, in commit order: what the live stream carries.
#[derive(Debug, Clone)]
pub struct FeedItem {
    /// Its position: grows with every item, across restarts.
    pub cursor: i64,
    /// When it was committed (unix ms, wall clock).
    pub at_ms: i64,
    /// What changed.
    pub kind: FeedKind,
    /// What it can be filtered on.
    pub keys: FeedKeys,
    /// The item, JSON: the CloudEvent, the case summary, the audit record,
    /// the dead letter, the clock.
    pub data: Arc<str>,
}

/// The part of the feed that can be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSpan {
    /// The oldest cursor still kept (`head + 1` when nothing is).
    pub first: i64,
    /// The newest cursor given out (0 before the first item).
    pub head: i64,
}

/// A case as stored: the columns queries filter on, and the whole case.
#[derive(Debug, Clone)]
pub struct CaseRow {
    /// The case id.
    pub id: String,
    /// `incident` or `dispute`.
    pub kind: String,
    /// Its category.
    pub category: Option<String>,
    /// Its grid.
    pub grid: Option<String>,
    /// Its stage, as a rank (0 reported ... 5 closed).
    pub stage: u8,
    /// Its escalation level.
    pub level: u8,
    /// Opened (unix ms).
    pub opened_ms: i64,
    /// Acceptance due.
    pub accept_due_ms: i64,
    /// Resolution due.
    pub resolve_due_ms: i64,
    /// Closed, if it is.
    pub closed_ms: Option<i64>,
    /// The case, JSON.
    pub doc: Vec<u8>,
    /// Its severity rank, for the feed's filters.
    pub severity: Option<u8>,
    /// What the feed says of the change (a summary, JSON).
    pub summary: Vec<u8>,
}

/// Which cases to list.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    /// `open`, `closed`, or a stage rank.
    pub status: Option<CaseStatus>,
    /// Grid prefix.
    pub grid: Option<String>,
    /// Category prefix.
    pub category: Option<String>,
    /// Only cases past a deadline at this time (unix ms).
    pub overdue_at: Option<i64>,
    /// At most this many, newest first.
    pub limit: usize,
    /// After skipping this many (a page further down).
    pub offset: usize,
}

/// A status filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseStatus {
    /// Not closed.
    Open,
    /// Closed.
    Closed,
    /// Exactly this stage rank.
    Stage(u8),
}

/// One delivery the journal created (or holds pending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRef {
    /// The delivery's id (also its dead-letter id).
    pub id: i64,
    /// The event's sequence number.
    pub event_seq: i64,
    /// The target adapter.
    pub target: String,
    /// Deliveries with the same key reach a target in order: the event's
    /// `caseid`, or its own id when it has none.
    pub order_key: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before this time (unix ms), for a retry waiting out its backoff.
    pub not_before_ms: Option<i64>,
    /// Its lane: the event's severity rank (0 `info` or none, 1 `minor`,
    /// 2 `major`, 3 `critical`); higher lanes are delivered first.
    pub priority: u8,
}

/// What became of one appended event.
#[derive(Debug, Clone)]
pub struct Appended {
    /// Its sequence number in the journal (of the first arrival, for a
    /// duplicate).
    pub seq: i64,
    /// True when (`source`, `id`) was already stored: nothing was added.
    pub duplicate: bool,
    /// The deliveries created for it.
    pub deliveries: Vec<DeliveryRef>,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryUpdate {
    /// The department has it.
    Delivered {
        /// The delivery.
        id: i64,
        /// Attempts it took.
        attempts: u32,
        /// The department's reference.
        reference: Option<String>,
        /// Its flow record (what went, JSON), appended to the audit chain
        /// in the same transaction.
        flow: Option<String>,
    },
    /// Failed; will be tried again.
    Retry {
        /// The delivery.
        id: i64,
        /// Attempts so far.
        attempts: u32,
        /// Why it failed.
        error: String,
        /// Not before (unix ms).
        next_attempt_ms: i64,
    },
    /// Failed for good: a dead letter.
    Dead {
        /// The delivery.
        id: i64,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: String,
        /// Its flow record, as for `Delivered`.
        flow: Option<String>,
    },
    /// Not sent, for good: the data may not leave the hub.
    Withheld {
        /// The delivery.
        id: i64,
        /// Why.
        reason: String,
        /// Its flow record.
        flow: Option<String>,
    },
}

impl DeliveryUpdate {
    /// Whether it ends the delivery (no further attempt).
    pub fn is_final(&self) -> bool {
        !matches!(self, DeliveryUpdate::Retry { .. })
    }

    /// The delivery it is the outcome of.
    pub fn id(&self) -> i64 {
        match self {
            DeliveryUpdate::Delivered { id, .. }
            | DeliveryUpdate::Retry { id, .. }
            | DeliveryUpdate::Dead { id, .. }
            | DeliveryUpdate::Withheld { id, .. } => *id,
        }
    }
}

/// A delivery's state, as `GET /v1/events/{id}` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct DeliveryStatus {
    /// The delivery's id.
    pub id: i64,
    /// The target adapter.
    pub target: String,
    /// The rule that chose the target.
    pub rule: String,
    /// `pending`, `delivered`, `dead` or `withheld`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The department's reference, once delivered.
    pub reference: Option<String>,
    /// When the delivery was created (RFC 3339).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// When it was delivered.
    pub delivered_at: Option<String>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<String>,
    /// While pending behind an earlier delivery of the same case to the
    /// same target (deliveries of one case go in order): that one, and why
    /// it has not gone yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<WaitingFor>,
}

/// The delivery a pending one waits for.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct WaitingFor {
    /// Its delivery id.
    pub delivery: i64,
    /// Its event's id.
    pub event: String,
    /// Attempts it has made.
    pub attempts: u32,
    /// Its last error: why the case's queue stands.
    pub last_error: Option<String>,
    /// When it is tried next.
    pub next_attempt_at: Option<String>,
}

/// An event as stored, with its deliveries.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its sequence number.
    pub seq: i64,
    /// The event.
    pub event: Event,
    /// The adapter it came from.
    pub origin: Option<String>,
    /// When the hub accepted it (RFC 3339).
    pub received_at: String,
    /// Its deliveries, one per target.
    pub deliveries: Vec<DeliveryStatus>,
}

/// A dead letter: a delivery that failed for good.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The delivery id (what `replay` takes).
    pub id: i64,
    /// The target adapter.
    pub target: String,
    /// The event's id.
    pub event_id: String,
    /// The event's source.
    pub event_source: String,
    /// The event's type.
    pub event_type: String,
    /// The event's case.
    pub caseid: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub last_error: Option<String>,
    /// When it died (RFC 3339).
    pub dead_at: String,
}

/// One loaded version of an adapter, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct VersionRecord {
    /// Its id (what rollback names).
    pub id: i64,
    /// The adapter.
    pub name: String,
    /// The module's sha256.
    pub sha256: String,
    /// The manifest as loaded, its `wasm` pointing at the stored module.
    pub manifest: String,
    /// `dir` (adapters.dir), `admin` (the admin API) or `rollback`.
    pub origin: String,
    /// When it was loaded (unix ms).
    pub loaded_ms: i64,
    /// Whether it is the one serving.
    pub active: bool,
}

/// An audit record: who did what to which adapter, chained by hash.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Its position in the chain.
    pub seq: i64,
    /// When (unix ms).
    pub at_ms: i64,
    /// Who: a principal's name, `anonymous` (a hub without principals, a
    /// refused sign-in), `dir` (the watched folder) or `hub` (itself).
    pub actor: String,
    /// What: `load`, `unload`, `rollback`, `quarantine`, `refused`,
    /// `replay`, `clock`, `sign-in`, `sign-in-refused`, `sign-out`, ...
    pub action: String,
    /// What it was done to: an adapter, a dead letter, `clock`, `cockpit`.
    pub target: String,
    /// Details (module hash, version, reason), JSON.
    pub detail: String,
    /// The previous record's hash (64 zeros for the first).
    pub prev_hash: String,
    /// sha256 of the previous hash and this record's fields.
    pub hash: String,
}

/// Which audit records to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this actor's (a principal's name, `dir`, `hub`, `anonymous`).
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only flow records of this case.
    pub caseid: Option<String>,
    /// After this sequence number.
    pub after: i64,
    /// At most this many.
    pub limit: usize,
}

impl AuditRecord {
    /// Record `seq`, linked to `prev_hash`, with its hash: what every
    /// backend appends.
    pub fn linked(
        seq: i64,
        prev_hash: String,
        at_ms: i64,
        [actor, action, target, detail]: &[String; 4],
    ) -> AuditRecord {
        let mut record = AuditRecord {
            seq,
            at_ms,
            actor: actor.clone(),
            action: action.clone(),
            target: target.clone(),
            detail: detail.clone(),
            prev_hash,
            hash: String::new(),
        };
        record.hash = record.expected_hash();
        record
    }

    /// The hash this record must carry, from its fields and `prev_hash`.
    pub fn expected_hash(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [
            self.prev_hash.as_str(),
            &self.seq.to_string(),
            &self.at_ms.to_string(),
            &self.actor,
            &self.action,
            &self.target,
            &self.detail,
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }
}

/// The durable store behind the hub: every concern's interface together.
///
/// Writes, and reads of the logs (events, deliveries, dead letters, cases,
/// the audit chain, the feed), return a [`Pending`] future: on SQLite they
/// run on a blocking thread, on NATS they are round trips. The small
/// tables a part reads while it works and may not wait on (the hub's
/// meta values, adapters' state and cursors, the registry) answer at once:
/// SQLite reads them from its file, NATS from a watched copy of its bucket.
/// A part is handed the one it uses; the hub holds the whole. Every
/// backend implements each of them (see `README.md` in this folder).
pub trait Journal:
    EventLog + DeliveryLog + AdapterState + CaseStore + Meta + Registry + AuditLog + Feed
{
    /// Waits until everything sent so far is committed.
    fn flush(&self) -> Pending<()>;

    /// The node stops: commits what it holds and, where work is shared,
    /// hands back what it took so other nodes go on at once.
    fn leave(&self) -> Pending<()> {
        self.flush()
    }
}

/// The event log: accepted events with their routing decisions, read back
/// by sequence or identity.
pub trait EventLog: Send + Sync + 'static {
    /// Stores events with their routing decisions; resolves once they are
    /// durable. A repeated (`source`, `id`) is reported as a duplicate and
    /// adds nothing.
    fn append(&self, events: Vec<NewEvent>) -> Pending<Vec<Appended>>;

    /// The event with sequence number `seq`.
    fn event_by_seq(&self, seq: i64) -> Pending<Option<Event>>;

    /// Events with this id (and source, when given), with their deliveries.
    fn events(&self, id: &str, source: Option<&str>) -> Pending<Vec<StoredEvent>>;
}

/// Delivery work: what is pending, each attempt's outcome, dead letters and
/// their replay.
pub trait DeliveryLog: Send + Sync + 'static {
    /// Records delivery outcomes.
    fn record(&self, updates: Vec<DeliveryUpdate>) -> Pending<()>;

    /// Puts a dead letter back in the queue (attempts reset); `None` when
    /// there is no dead letter with that id.
    fn replay(&self, delivery_id: i64) -> Pending<Option<DeliveryRef>>;

    /// Every delivery without a final outcome, oldest first.
    fn pending(&self) -> Pending<Vec<DeliveryRef>>;

    /// Dead letters, newest first, at most `limit`; of these targets only,
    /// when given.
    fn dead_letters(&self, targets: Option<&[String]>, limit: usize) -> Pending<Vec<DeadLetter>>;

    /// The dead letter with this id (a delivery that failed for good).
    fn dead_letter(&self, id: i64) -> Pending<Option<DeadLetter>>;

    /// How delivery work reaches this node's workers. `false` (SQLite): the
    /// node that appends an event queues its deliveries, [`pending`]
    /// resumes them after a restart, and a `Retry` outcome stays in the
    /// node's queue until its backoff ends. `true` (NATS): the work is
    /// shared by every node; the backend hands each node the deliveries
    /// it holds through [`serve`], whichever node accepted the event, and
    /// a `Retry` outcome gives the delivery back to the backend, which
    /// hands it out again once its backoff ends.
    ///
    /// [`pending`]: DeliveryLog::pending
    /// [`serve`]: DeliveryLog::serve
    fn shared_work(&self) -> bool {
        false
    }

    /// Starts handing `target`'s deliveries to `sink` (shared work only;
    /// a second call for one target does nothing).
    fn serve(&self, target: &str, sink: WorkSink) {
        let _ = (target, sink);
    }

    /// With shared work: `target`'s deliveries not yet final over the
    /// whole cluster (what `delivery.queue_depth` bounds), as last
    /// counted; `None` where this node's queue holds them all.
    fn backlog(&self, target: &str) -> Option<usize> {
        let _ = target;
        None
    }
}

/// Where a backend with shared work hands a delivery to this node's
/// workers.
pub type WorkSink = std::sync::Arc<dyn Fn(DeliveryRef) + Send + Sync>;

/// Adapters' own state and poll cursors.
pub trait AdapterState: Send + Sync + 'static {
    /// Stores an adapter's poll cursor.
    fn set_cursor(&self, adapter: &str, cursor: &str) -> Pending<()>;

    /// Stores (or, with `None`, removes) one key of an adapter's state.
    /// Not awaited by the adapter: written with the next commit.
    fn set_state(&self, adapter: &str, key: &str, value: Option<&[u8]>);

    /// An adapter's poll cursor.
    fn cursor(&self, adapter: &str) -> Result<Option<String>, JournalError>;

    /// An adapter's whole state.
    fn state(&self, adapter: &str) -> Result<Vec<(String, Vec<u8>)>, JournalError>;
}

/// Case events taken from the case feed, not yet settled.
#[derive(Debug)]
pub struct CaseTake {
    /// The events, oldest first: each case sees its own in order.
    pub events: Vec<FedEvent>,
    /// What settling the take records.
    pub receipt: Receipt,
}

/// What a backend needs to settle a take: SQLite, the position read up
/// to (stored with the cases); NATS, acknowledging the messages taken
/// once the cases are stored.
pub enum Receipt {
    /// Read up to this event sequence.
    Position(i64),
    /// Run once the cases are stored.
    Then(Box<dyn FnOnce() -> Pending<()> + Send>),
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Receipt::Position(p) => write!(f, "Position({p})"),
            Receipt::Then(_) => write!(f, "Then(..)"),
        }
    }
}

/// Case state: the case tracker's feed of case events and the cases it
/// derives. The feed is take-then-settle: events taken are taken again
/// after a crash or a [`CaseStore::rewind_case_feed`] until a settle
/// stores the cases they made, so no event is lost to a failure in
/// between and none is applied twice once settled.
pub trait CaseStore: Send + Sync + 'static {
    /// Takes up to `limit` events of a case (with a `caseid`) that have
    /// not been taken, oldest first.
    fn take_case_events(&self, limit: usize) -> Pending<CaseTake>;

    /// Stores the cases a take made and settles it, together.
    fn settle_cases(&self, rows: Vec<CaseRow>, receipt: Receipt) -> Pending<()>;

    /// Gives back every take not settled: they are taken again.
    fn rewind_case_feed(&self);

    /// Whether this node tracks the cases now, and since when: `Some(term)`
    /// while it does, a term that changes each time it starts to (the
    /// tracker then reads the cases back before it goes on); `None` while
    /// another node does. SQLite: always this node, term 0. NATS: the node
    /// holding the tracker's lease.
    fn tracking(&self) -> Option<u64> {
        Some(0)
    }

    /// Notified when case events arrive that this node did not append
    /// itself (NATS: another node accepted them); `None` where every
    /// event goes through this node (SQLite), which wakes the tracker
    /// itself.
    fn arrivals(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// Stores cases changed without a take (an escalation).
    fn store_cases(&self, rows: Vec<CaseRow>) -> Pending<()>;

    /// One case, JSON.
    fn case(&self, id: &str) -> Pending<Option<Vec<u8>>>;

    /// Cases matching a filter, JSON, newest first.
    fn cases(&self, filter: &CaseFilter) -> Pending<Vec<Vec<u8>>>;
}

/// The hub's own bookkeeping values (the manual clock, the policy's hash).
pub trait Meta: Send + Sync + 'static {
    /// A value of the hub's own bookkeeping (the manual clock).
    fn meta(&self, key: &str) -> Result<Option<String>, JournalError>;

    /// Stores a bookkeeping value.
    fn set_meta(&self, key: &str, value: &str) -> Pending<()>;

    /// A value every node of a cluster must hold alike (the pseudonym
    /// key): the one stored, or `candidate`, stored now, when none is.
    /// `None` where the journal is one node's own (SQLite: the hub keeps
    /// such values in files beside it).
    fn shared_value(&self, key: &str, candidate: &str) -> Pending<Option<String>> {
        let _ = (key, candidate);
        Box::pin(async { Ok(None) })
    }
}

/// The adapter registry: every loaded version and the one serving.
pub trait Registry: Send + Sync + 'static {
    /// Records a newly loaded version of an adapter and makes it the active
    /// one; returns its id.
    fn add_version(&self, version: VersionRecord) -> Pending<i64>;

    /// Makes version `id` the active one of its adapter (rollback).
    fn activate_version(&self, id: i64) -> Pending<()>;

    /// Marks no version of `name` active (unload).
    fn deactivate(&self, name: &str) -> Pending<()>;

    /// The active version of every adapter.
    fn active_versions(&self) -> Result<Vec<VersionRecord>, JournalError>;

    /// Every version of `name`, oldest first.
    fn versions(&self, name: &str) -> Result<Vec<VersionRecord>, JournalError>;

    /// Keeps a module, and its signature, where every node finds it.
    /// SQLite: nothing to do (the hub keeps modules beside the journal).
    fn share_module(
        &self,
        sha256: &str,
        module: Vec<u8>,
        signature: Option<String>,
    ) -> Pending<()> {
        let _ = (sha256, module, signature);
        Box::pin(async { Ok(()) })
    }

    /// A module another node shared, with its signature; `None` when no
    /// node did (always, on SQLite).
    fn shared_module(&self, sha256: &str) -> Pending<Option<(Vec<u8>, Option<String>)>> {
        let _ = sha256;
        Box::pin(async { Ok(None) })
    }
}

/// The audit hash chain: operators' acts, adapter changes, flow records.
pub trait AuditLog: Send + Sync + 'static {
    /// Appends a change of an adapter to the audit chain (the writer
    /// computes the hashes); it is on the change feed too.
    fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) -> Pending<AuditRecord>;

    /// Appends another action (an operator's replay or clock step, a
    /// sign-in) to the audit chain; not on the change feed.
    fn audit_action(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Pending<AuditRecord>;

    /// Audit records after `after`, of one actor and action when given, in
    /// order, at most `limit`.
    fn audit_query(&self, query: &AuditQuery) -> Pending<Vec<AuditRecord>>;

    /// The whole audit chain, in order.
    fn audit_log(&self) -> Pending<Vec<AuditRecord>>;

    /// The last record appended, as `SEQ HASH`, kept apart from the
    /// records (so a chain cut short at its end is seen); `None` before
    /// the first.
    fn audit_head(&self) -> Pending<Option<String>>;
}

/// The change feed the live stream and the cockpit replay and follow.
pub trait Feed: Send + Sync + 'static {
    /// Every feed item committed from now on, as it commits. The channel
    /// holds a bounded number of items: a receiver that falls further
    /// behind is told how many it missed and reads them with
    /// [`Feed::feed_after`].
    fn feed_subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<FeedItem>>;

    /// Up to `limit` feed items after `cursor`, oldest first.
    fn feed_after(&self, cursor: i64, limit: usize) -> Pending<Vec<FeedItem>>;

    /// Up to `limit` items of `kind` at or before `cursor`, newest first.
    fn feed_latest(&self, kind: FeedKind, cursor: i64, limit: usize) -> Pending<Vec<FeedItem>>;

    /// What can be replayed.
    fn feed_span(&self) -> Pending<FeedSpan>;

    /// Adds an item of the hub's own (the manual clock moved); resolves to
    /// its cursor once committed.
    fn feed_note(&self, kind: FeedKind, keys: FeedKeys, data: String) -> Pending<i64>;
}

/// Milliseconds since the Unix epoch, on the hub's steady clock: the
/// system clock read once, when first asked, then moved by the monotonic
/// clock. A step of the system clock while the hub runs (set by hand, NTP
/// stepping after a long drift, a virtual machine restored) moves neither
/// deadlines nor event times: a step back an hour does not hold every
/// deadline an hour longer, a step forward a day does not make every open
/// case overdue at once. The hub takes the system's time again at its next
/// start; [`clock_step_ms`] says how far the two have parted.
pub fn now_ms() -> i64 {
    steady().now_ms()
}

/// The system clock now minus the hub's steady clock, ms: 0 unless the
/// system clock was stepped since the hub started (or drifted more than
/// the monotonic clock).
pub fn clock_step_ms() -> i64 {
    system_ms() - now_ms()
}

fn system_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A wall clock anchored once and moved by the monotonic clock.
pub struct SteadyClock {
    anchor_ms: i64,
    anchor: std::time::Instant,
}

impl SteadyClock {
    /// A clock reading `anchor_ms` now.
    pub fn new(anchor_ms: i64) -> SteadyClock {
        SteadyClock {
            anchor_ms,
            anchor: std::time::Instant::now(),
        }
    }

    /// The anchor plus the monotonic time since.
    pub fn now_ms(&self) -> i64 {
        self.anchor_ms + self.anchor.elapsed().as_millis() as i64
    }
}

fn steady() -> &'static SteadyClock {
    static CLOCK: std::sync::OnceLock<SteadyClock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(|| SteadyClock::new(system_ms()))
}

/// Unix ms as RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
