//! Delivery work on JetStream: one durable pull consumer per (target,
//! partition), shared by every node.
//!
//! - **Per-case order across nodes.** Each consumer reads
//!   `<root>.wk.<target>.<p>` with `max_ack_pending = 1`: the server hands
//!   out a partition's next work item only once the one before it is
//!   acknowledged, so the events of one case (one partition) reach a
//!   department in the order they were stored, whichever node holds them,
//!   and through a failover. Different partitions and targets run at once,
//!   on every node.
//! - **The partitions are shared out among the live nodes.** Every node
//!   writes a heartbeat (`nodes.<id>` in the meta bucket, renewed every
//!   third of `storage.nats_lease_ms`); each (target, partition) belongs
//!   to the live node that scores highest for it (rendezvous hashing), so
//!   every node computes the same owner, and a node joining or leaving
//!   moves only its share. A node pulls only what it owns; when it stops
//!   owning a partition it stops pulling and unpins the consumer.
//! - **One node per consumer at a time, whatever the heartbeats say.** The
//!   consumers have a pinned priority group: the server hands a
//!   partition's items to one node, and when that node stops pulling
//!   (dead, cut off) another is pinned after [`PINNED_TTL`]. The dead
//!   node's unacknowledged item comes back to the new one once
//!   `storage.nats_ack_wait_ms` has run out, and nothing newer of its
//!   partition goes before it.
//! - **Held work is kept.** Every third of `ack_wait` the node tells the
//!   server it still works on what it holds, so an item waiting behind a
//!   quarantined adapter is not handed to another node while this one
//!   lives.
//! - **Outcomes.** A final outcome (delivered, dead, withheld) is written
//!   to the delivery's state first and acknowledged last, so a crash in
//!   between delivers again rather than losing a delivery; a redelivered
//!   item whose state is already final is acknowledged without a call. A
//!   retry is a NAK with the backoff as its delay: the server hands the
//!   item out again (to whichever node is pinned then), and the attempts
//!   made so far come from the delivery's state.
//! - The price of `max_ack_pending = 1`: a case retrying against a
//!   department that is down holds the other cases of its partition for
//!   that department behind it. More partitions make that share smaller
//!   (`storage.nats_partitions`).

use super::deliveries::WorkItem;
use super::{storage, Inner, NatsJournal};
use crate::journal::{DeliveryRef, DeliveryUpdate, JournalError, WorkSink};
use async_nats::jetstream::{consumer, AckKind, Message};
use futures_util::StreamExt;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The priority group every node pulls in.
const GROUP: &str = "govhub";
/// How long one pull waits for an item.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// How long a pin outlives its node's last pull.
pub(crate) const PINNED_TTL: Duration = Duration::from_secs(5);

/// The work items this node holds (handed to its workers, no outcome
/// acknowledged yet), by delivery id.
#[derive(Default)]
pub(crate) struct Held {
    items: dashmap::DashMap<i64, (Message, WorkItem)>,
    /// Targets this node pulls for.
    serving: dashmap::DashSet<String>,
    /// Each target's deliveries not yet final over the cluster, as last
    /// counted from its consumers.
    backlog: dashmap::DashMap<String, usize>,
}

impl Held {
    /// How many items this node holds.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn backlog(&self, target: &str) -> usize {
        self.backlog.get(target).map(|b| *b).unwrap_or(0)
    }
}

/// How often each node counts every target's backlog.
const BACKLOG_EVERY: Duration = Duration::from_millis(500);

/// Counts each served target's deliveries not yet final (the consumers'
/// pending and unacknowledged items) for ingest's backpressure
/// (`delivery.queue_depth` over the whole cluster).
pub(crate) fn start_backlog(inner: Weak<Inner>, mut stop: tokio::sync::watch::Receiver<()>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(BACKLOG_EVERY) => {}
                _ = stop.changed() => return,
            }
            let Some(journal) = inner.upgrade() else {
                return;
            };
            let targets: Vec<String> = journal.held.serving.iter().map(|t| t.clone()).collect();
            for target in targets {
                let counts = (0..journal.config.partitions).map(|p| {
                    let journal = journal.clone();
                    let target = target.clone();
                    async move {
                        let name = consumer_name(&target, p);
                        let info = journal.stream.consumer_info(&name).await.ok()?;
                        Some(info.num_pending as usize + info.num_ack_pending)
                    }
                });
                let counts = futures_util::future::join_all(counts).await;
                // A partition not counted this time keeps the others'
                // sum (never less than what is known).
                let total: usize = counts.into_iter().flatten().sum();
                journal.held.backlog.insert(target, total);
            }
        }
    });
}

/// A consumer's durable name: `wk_<target>_<p>` (a target name's dots and
/// dashes are fine in a subject, not all in a name).
fn consumer_name(target: &str, p: u32) -> String {
    let safe: String = target
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("wk_{safe}_{}_{p}", &super::id_hash(target)[..6])
}

impl Inner {
    /// Starts pulling every partition of `target`'s work for `sink`.
    fn serve_target(self: &Arc<Self>, target: &str, sink: WorkSink) {
        if !self.held.serving.insert(target.to_string()) {
            return;
        }
        for p in 0..self.config.partitions {
            tokio::spawn(pull(
                Arc::downgrade(self),
                target.to_string(),
                p,
                sink.clone(),
                self._stop.subscribe(),
            ));
        }
    }

    async fn work_consumer(
        &self,
        target: &str,
        p: u32,
    ) -> Result<consumer::PullConsumer, JournalError> {
        let name = consumer_name(target, p);
        self.stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.subjects.work(target, p),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    max_ack_pending: 1,
                    deliver_policy: consumer::DeliverPolicy::All,
                    priority_policy: consumer::PriorityPolicy::PinnedClient,
                    priority_groups: vec![GROUP.into()],
                    priority_timeout: PINNED_TTL,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| storage(&format!("the work consumer {name}"), e))
    }

    /// One work item pulled: handed to the workers, or acknowledged at
    /// once when a node before this one finished it and died before its
    /// acknowledgement.
    async fn take_item(&self, m: Message, sink: &WorkSink) -> Result<(), JournalError> {
        let info = m.info().map_err(|e| storage("a work item", e))?;
        let (seq, delivered) = (info.stream_sequence as i64, info.delivered);
        let Some(item) = WorkItem::parse(
            &self.subjects.root,
            seq,
            &m.subject,
            &m.headers.clone().unwrap_or_default(),
        ) else {
            tracing::error!(subject = %m.subject, seq, "not a work item: acknowledged and skipped");
            let _ = m.ack().await;
            return Ok(());
        };
        if let Some(mut held) = self.held.items.get_mut(&item.id) {
            // Handed out again while this node still holds it (it waited
            // past ack_wait, a quarantined adapter say): the newer copy is
            // the one to settle, and the workers have it already.
            held.0 = m;
            return Ok(());
        }
        let mut item = item;
        let mut attempts = 0;
        let replay = m
            .headers
            .as_ref()
            .is_some_and(|h| h.get("Govhub-Delivery").is_some());
        // The revision of the death a replay's item replays.
        let replay_of: Option<u64> = m
            .headers
            .as_ref()
            .and_then(|h| h.get(super::deliveries::REPLAY_OF))
            .and_then(|v| v.as_str().parse().ok());
        if delivered > 1 || replay {
            // Handed out before (a retry, or a node died holding it), or a
            // replay of a dead letter: its state is recorded.
            let (mut state, revision) = self.delivery_state(item.id).await?;
            if let Some(s) = state.as_mut().filter(|s| s.status == "dead") {
                if replay_of == Some(revision) {
                    // Still the death this item replays: the replay's
                    // state is not written yet (a moment away, or its
                    // node died between the two). The item is the replay.
                    s.status = "pending".into();
                    s.attempts = 0;
                    s.next_attempt_at = None;
                }
            }
            if let Some(state) = &state {
                if matches!(state.status.as_str(), "delivered" | "dead" | "withheld") {
                    m.ack()
                        .await
                        .map_err(|e| storage("a finished work item", e))?;
                    return Ok(());
                }
                attempts = state.attempts;
            }
            item.known = Some(state);
        } else {
            // A first delivery: nothing is recorded yet.
            item.known = Some(None);
        }
        let delivery = DeliveryRef {
            id: item.id,
            event_seq: item.event_seq,
            target: item.target.clone(),
            order_key: item.order_key.clone(),
            attempts,
            not_before_ms: None,
            priority: item.priority,
        };
        tracing::debug!(adapter = %item.target, partition = item.partition, delivery = item.id, seq, delivered, "work item taken");
        self.held.items.insert(item.id, (m, item));
        sink(delivery);
        Ok(())
    }

    /// Lets go of the item of delivery `id` without an outcome: the server
    /// hands it out again after a moment (or after `ack_wait`, if even
    /// this does not reach it).
    pub(crate) async fn give_back(&self, id: i64) {
        if let Some((_, (m, _))) = self.held.items.remove(&id) {
            let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
        }
    }

    /// The work item this node holds for delivery `id`, if it holds it.
    pub(crate) fn held_item(&self, id: i64) -> Option<WorkItem> {
        self.held.items.get(&id).map(|h| h.1.clone())
    }

    /// Settles the work item of an outcome just recorded: acknowledged
    /// when final, given back with the backoff as its delay on a retry.
    pub(crate) async fn settle_item(&self, update: &DeliveryUpdate) -> Result<(), JournalError> {
        let id = update.id();
        let kind = match update {
            DeliveryUpdate::Retry {
                next_attempt_ms, ..
            } => {
                let wait = (*next_attempt_ms - crate::journal::now_ms()).max(0) as u64;
                AckKind::Nak(Some(Duration::from_millis(wait)))
            }
            _ => AckKind::Ack,
        };
        let Some((_, (m, _))) = self.held.items.remove(&id) else {
            tracing::debug!(
                delivery = id,
                "outcome of a work item this node does not hold"
            );
            return Ok(());
        };
        tracing::debug!(delivery = id, ack = ?kind, "work item settled");
        m.ack_with(kind)
            .await
            .map_err(|e| storage(&format!("settling delivery {id}"), e))
    }
}

/// How often a puller looks at whether this node still owns its
/// partition.
const OWNER_CHECK: Duration = Duration::from_millis(250);

fn score(node: &str, target: &str, p: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node
        .bytes()
        .chain([0])
        .chain(target.bytes())
        .chain([0])
        .chain(p.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV mixes its last bytes poorly: finish with a murmur step.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl Inner {
    /// Writes this node's heartbeat, and forgets nodes long gone.
    pub(crate) async fn heartbeat(&self) -> Result<(), JournalError> {
        let lease = self.config.lease.as_millis() as i64;
        let now = crate::journal::now_ms();
        self.meta
            .put(
                &format!("nodes.{}", self.node),
                bytes::Bytes::from((now + lease).to_string()),
            )
            .await?;
        for (key, until) in self.meta.scan("nodes.") {
            let until: i64 = String::from_utf8_lossy(&until).parse().unwrap_or(0);
            if until + 100 * lease < now {
                let _ = self.meta.delete(&key).await;
            }
        }
        Ok(())
    }

    /// Hands back every work item this node holds (the server gives each
    /// to the next owner at once), gives up the tracker's lease if it
    /// holds it, and takes its heartbeat out.
    pub(crate) async fn leave(&self) -> Result<(), JournalError> {
        let held: Vec<i64> = self.held.items.iter().map(|e| *e.key()).collect();
        for id in held {
            if let Some((_, (m, _))) = self.held.items.remove(&id) {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
        }
        self.release_lease().await;
        self.meta.delete(&format!("nodes.{}", self.node)).await
    }

    /// The nodes whose heartbeat has not run out.
    fn live_nodes(&self) -> Vec<String> {
        let now = crate::journal::now_ms();
        self.meta
            .scan("nodes.")
            .into_iter()
            .filter(|(_, until)| String::from_utf8_lossy(until).parse::<i64>().unwrap_or(0) >= now)
            .filter_map(|(key, _)| key.strip_prefix("nodes.").map(str::to_string))
            .collect()
    }

    /// Whether this node owns (target, partition) now.
    fn owns(&self, target: &str, p: u32) -> bool {
        let mut live = self.live_nodes();
        if !live.contains(&self.node) {
            // Its own heartbeat is late (a busy moment): it counts itself
            // in all the same, so what it owns does not flap.
            live.push(self.node.clone());
        }
        live.iter()
            .max_by_key(|n| score(n, target, p))
            .map(String::as_str)
            == Some(&self.node)
    }
}

/// Tells the server every third of `ack_wait` that this node is still
/// working on what it holds (a delivery waiting behind a quarantined
/// adapter, or a long call), so it is not handed to another node while
/// this one lives.
pub(crate) fn start_progress(inner: Weak<Inner>, mut stop: tokio::sync::watch::Receiver<()>) {
    tokio::spawn(async move {
        loop {
            let Some(journal) = inner.upgrade() else {
                return;
            };
            let every = (journal.config.ack_wait / 3).max(Duration::from_millis(100));
            let held: Vec<Message> = journal
                .held
                .items
                .iter()
                .map(|e| e.value().0.clone())
                .collect();
            drop(journal);
            for m in held {
                if let Err(e) = m.ack_with(AckKind::Progress).await {
                    tracing::debug!("work in progress: {e}");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    });
}

/// Pulls one (target, partition) while this node owns it, until the
/// journal is dropped.
async fn pull(
    inner: Weak<Inner>,
    target: String,
    p: u32,
    sink: WorkSink,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let mut consumer = None;
    loop {
        let Some(journal) = inner.upgrade() else {
            return;
        };
        if consumer.is_none() {
            match journal.work_consumer(&target, p).await {
                Ok(c) => consumer = Some(c),
                Err(e) => {
                    tracing::warn!(adapter = %target, partition = p, "{e}");
                    drop(journal);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            }
        }
        let Some(c) = consumer.as_ref() else { continue };
        if !journal.owns(&target, p) {
            drop(journal);
            tracing::trace!(adapter = %target, partition = p, "not this node's partition");
            tokio::select! {
                _ = tokio::time::sleep(OWNER_CHECK) => continue,
                _ = stop.changed() => return,
            }
        }
        tracing::debug!(adapter = %target, partition = p, "pulling");
        let messages = c
            .stream()
            .group(GROUP)
            .expires(PULL_EXPIRES)
            .max_messages_per_batch(1)
            .messages();
        drop(journal);
        let mut messages = tokio::select! {
            m = messages => match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(adapter = %target, partition = p, "work consumer: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            },
            _ = stop.changed() => return,
        };
        let mut check = tokio::time::interval(OWNER_CHECK);
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = check.tick() => {
                    let Some(journal) = inner.upgrade() else { return };
                    if journal.owns(&target, p) {
                        continue;
                    }
                    // Another node owns it now: stop pulling and, once
                    // the pulls this node left with the server expired
                    // (so none of them can be pinned), let the server pin
                    // the owner at once rather than after the pin's TTL.
                    drop(messages);
                    drop(journal);
                    tracing::debug!(adapter = %target, partition = p, "partition handed to another node");
                    tokio::select! {
                        _ = tokio::time::sleep(PULL_EXPIRES + OWNER_CHECK) => {}
                        _ = stop.changed() => return,
                    }
                    let Some(journal) = inner.upgrade() else { return };
                    if !journal.owns(&target, p) {
                        let name = consumer_name(&target, p);
                        if let Err(e) = journal.stream.unpin_consumer(&name, GROUP).await {
                            tracing::debug!(adapter = %target, partition = p, "unpinning: {e}");
                        }
                    }
                    break;
                }
                _ = stop.changed() => return,
            };
            match next {
                Some(Ok(m)) => {
                    let Some(journal) = inner.upgrade() else {
                        return;
                    };
                    if let Err(e) = journal.take_item(m, &sink).await {
                        // Not acknowledged: the server hands it out again
                        // after ack_wait.
                        tracing::warn!(adapter = %target, partition = p, "work item: {e}");
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(adapter = %target, partition = p, "work consumer: {e}");
                    break;
                }
                None => break,
            }
        }
    }
}

impl NatsJournal {
    /// Work items this node holds now (handed to its workers, no outcome
    /// yet).
    pub fn held_work(&self) -> usize {
        self.inner.held.len()
    }

    pub(crate) fn serve_work(&self, target: &str, sink: WorkSink) {
        self.inner.serve_target(target, sink);
    }
}
