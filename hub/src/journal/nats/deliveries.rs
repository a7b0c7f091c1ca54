//! Delivery outcomes, dead letters and their replay on JetStream.
//!
//! A delivery's id is its work item's stream sequence. Its state (what
//! `GET /v1/events/{id}` shows) is one key per delivery in the
//! `<prefix>-deliveries` bucket, written with each outcome. A delivery
//! that fails for good is also published to `<PREFIX>_DEAD` on
//! `<root>.dead.<target>`, and its flow record goes to the audit chain,
//! as on SQLite. A replay sets the state back to pending (compare-and-set,
//! so two operators replaying one dead letter put it back once) and
//! publishes a new work item that names the delivery it continues
//! (`Govhub-Delivery`) and its event (`Govhub-Event`).
//!
//! Still to come with the consumers that feed the delivery workers:
//! acknowledging work items, and the `DeliveryLog` trait as a whole (on
//! NATS, what is pending is what the consumers have not had acked).

use super::{storage, Inner, NatsJournal};
use crate::journal::{
    now_ms, rfc3339_ms, DeadLetter, DeliveryLog, DeliveryRef, DeliveryStatus, DeliveryUpdate,
    FeedKeys, FeedKind, JournalError, Pending, WorkSink,
};
use async_nats::jetstream::stream;
use async_nats::HeaderMap;
use bytes::Bytes;

/// Headers a work item carries (see `events.rs`), and those of a replay.
const OFFSET: &str = "Govhub-Offset";
const ORDER: &str = "Govhub-Order";
const PRIORITY: &str = "Govhub-Priority";
const DELIVERY: &str = "Govhub-Delivery";
const EVENT: &str = "Govhub-Event";
/// On a replay's work item: the revision of the dead state it replays.
pub(crate) const REPLAY_OF: &str = "Govhub-Replay-Of";
const MSG_ID: &str = "Nats-Msg-Id";
pub(crate) const RECEIVED: &str = "Govhub-Received";
pub(crate) const RULE: &str = "Govhub-Rule";

/// A work item, read back from the stream.
#[derive(Debug, Clone)]
pub(crate) struct WorkItem {
    /// The delivery it is (its own sequence, or the one a replay names).
    pub(crate) id: i64,
    pub(crate) event_seq: i64,
    pub(crate) target: String,
    pub(crate) partition: u32,
    pub(crate) order_key: String,
    pub(crate) priority: u8,
    /// When its event was accepted, and the route that chose the target
    /// (carried by work items stored since they carry them).
    pub(crate) facts: Option<(i64, String)>,
    /// What the node holding it knows of its recorded state:
    /// `Some(None)` when nothing is recorded yet (a first delivery).
    pub(crate) known: Option<Option<DeliveryStatus>>,
}

fn header<T: std::str::FromStr>(h: &HeaderMap, name: &str) -> Option<T> {
    h.get(name).and_then(|v| v.as_str().parse().ok())
}

impl WorkItem {
    /// The work item stored at `seq` on `subject`; `None` when that is
    /// not a work item.
    pub(crate) fn parse(root: &str, seq: i64, subject: &str, h: &HeaderMap) -> Option<WorkItem> {
        let rest = subject.strip_prefix(root)?.strip_prefix(".wk.")?;
        let (target, partition) = rest.rsplit_once('.')?;
        let event_seq = match (header::<i64>(h, EVENT), header::<i64>(h, OFFSET)) {
            (Some(event), _) => event,
            (None, Some(offset)) => seq - offset,
            (None, None) => return None,
        };
        Some(WorkItem {
            id: header(h, DELIVERY).unwrap_or(seq),
            event_seq,
            target: target.to_string(),
            partition: partition.parse().unwrap_or(0),
            order_key: h
                .get(ORDER)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default(),
            priority: header(h, PRIORITY).unwrap_or(0),
            facts: header::<i64>(h, RECEIVED).map(|received| {
                // A JSON string: a route's name may hold anything.
                let rule = h
                    .get(RULE)
                    .and_then(|v| serde_json::from_str::<String>(v.as_str()).ok())
                    .unwrap_or_default();
                (received, rule)
            }),
            known: None,
        })
    }
}

impl Inner {
    /// The work item stored at `seq` (a delivery's id), if that is one.
    pub(crate) async fn work_item(&self, seq: i64) -> Result<Option<WorkItem>, JournalError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let Ok(at) = u64::try_from(seq) else {
            return Ok(None);
        };
        let m = match self.message_at(at).await {
            Ok(m) => m,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(storage("reading a work item", e)),
        };
        Ok(WorkItem::parse(
            &self.subjects.root,
            seq,
            &m.subject,
            &m.headers,
        ))
    }

    /// A delivery's recorded state and its revision (0: nothing recorded:
    /// pending since its event was accepted).
    pub(crate) async fn delivery_state(
        &self,
        id: i64,
    ) -> Result<(Option<DeliveryStatus>, u64), JournalError> {
        let entry = self
            .deliveries
            .entry(id.to_string())
            .await
            .map_err(|e| storage(&format!("delivery {id}"), e))?;
        match entry {
            Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put => {
                let status = serde_json::from_slice(&e.value)
                    .map_err(|err| storage(&format!("delivery {id}"), err))?;
                Ok((Some(status), e.revision))
            }
            Some(e) => Ok((None, e.revision)),
            None => Ok((None, 0)),
        }
    }

    /// The state a delivery starts in: pending since its event came.
    async fn initial_state(&self, item: &WorkItem) -> Result<DeliveryStatus, JournalError> {
        let (received, rule) = match &item.facts {
            Some(facts) => facts.clone(),
            None => self.event_facts(item).await?,
        };
        Ok(DeliveryStatus {
            id: item.id,
            target: item.target.clone(),
            rule,
            status: "pending".into(),
            attempts: 0,
            last_error: None,
            reference: None,
            created_at: rfc3339_ms(received),
            updated_at: rfc3339_ms(received),
            delivered_at: None,
            next_attempt_at: None,
            waiting_for: None,
        })
    }

    /// When the item's event was accepted and the rule that chose its
    /// target.
    async fn event_facts(&self, item: &WorkItem) -> Result<(i64, String), JournalError> {
        let m = self
            .message_at(item.event_seq as u64)
            .await
            .map_err(|e| storage(&format!("event {}", item.event_seq), e))?;
        let received = header(&m.headers, "Govhub-Received").unwrap_or(0);
        let rule = super::events::targets_of(&m.headers)
            .into_iter()
            .find(|t| t.adapter == item.target)
            .map(|t| t.rule)
            .unwrap_or_default();
        Ok((received, rule))
    }

    /// Records outcomes: the state, a dead letter, the flow record.
    pub(crate) async fn record_outcomes(
        &self,
        updates: Vec<DeliveryUpdate>,
    ) -> Result<(), JournalError> {
        for u in updates {
            let id = u.id();
            let item = match self.held_item(id) {
                Some(item) => item,
                None => self
                    .work_item(id)
                    .await?
                    .ok_or_else(|| storage("record", format!("no delivery {id}")))?,
            };
            let known = match item.known.clone() {
                Some(known) => known,
                None => self.delivery_state(id).await?.0,
            };
            let mut state = match known {
                Some(s) => s,
                None => self.initial_state(&item).await?,
            };
            let now = now_ms();
            state.updated_at = rfc3339_ms(now);
            let flow = match u {
                DeliveryUpdate::Delivered {
                    attempts,
                    reference,
                    flow,
                    ..
                } => {
                    state.status = "delivered".into();
                    state.attempts = attempts;
                    state.reference = reference;
                    state.delivered_at = Some(rfc3339_ms(now));
                    state.next_attempt_at = None;
                    flow
                }
                DeliveryUpdate::Retry {
                    attempts,
                    error,
                    next_attempt_ms,
                    ..
                } => {
                    state.attempts = attempts;
                    state.last_error = Some(error);
                    state.next_attempt_at = Some(rfc3339_ms(next_attempt_ms));
                    None
                }
                DeliveryUpdate::Dead {
                    attempts,
                    error,
                    flow,
                    ..
                } => {
                    state.status = "dead".into();
                    state.attempts = attempts;
                    state.last_error = Some(error);
                    state.next_attempt_at = None;
                    flow
                }
                DeliveryUpdate::Withheld { reason, flow, .. } => {
                    state.status = "withheld".into();
                    state.last_error = Some(reason);
                    state.next_attempt_at = None;
                    flow
                }
            };
            // The final state goes last: a node that dies before it
            // leaves the item to be handed out again, and that node
            // writes the flow record and the dead letter again (a flow
            // record per hand-off; dead letters are listed by delivery).
            // Written first, a death in between would leave a final state
            // with no flow record or dead letter, acknowledged as done.
            if let Some(detail) = flow {
                let detail = with_delivery(&detail, id, &state.rule);
                self.append_flow(&item.target, detail).await?;
            }
            if state.status == "dead" {
                self.publish_dead(&item, &state, now).await?;
            }
            let body = serde_json::to_vec(&state).map_err(|e| storage("record", e))?;
            self.deliveries
                .put(id.to_string(), body.into())
                .await
                .map_err(|e| storage(&format!("recording delivery {id}"), e))?;
        }
        Ok(())
    }

    async fn publish_dead(
        &self,
        item: &WorkItem,
        state: &DeliveryStatus,
        now: i64,
    ) -> Result<(), JournalError> {
        let (dead, keys) = self.dead_letter_of(item, state, now).await?;
        let body = serde_json::to_vec(&dead).map_err(|e| storage("dead letter", e))?;
        let mut headers = HeaderMap::new();
        // A crash between publishing and acking repeats this: the same
        // death is one message.
        headers.insert(MSG_ID, format!("dead.{}.{}", item.id, now).as_str());
        self.js
            .publish_with_headers(
                format!("{}.dead.{}", self.subjects.root, item.target),
                headers,
                body.clone().into(),
            )
            .await
            .map_err(|e| storage("dead letter", e))?
            .await
            .map_err(|e| storage("dead letter", e))?;
        self.feed_dead_letter(&dead, &keys, false).await
    }

    async fn dead_letter_of(
        &self,
        item: &WorkItem,
        state: &DeliveryStatus,
        now: i64,
    ) -> Result<(DeadLetter, FeedKeys), JournalError> {
        let m = self
            .message_at(item.event_seq as u64)
            .await
            .map_err(|e| storage(&format!("event {}", item.event_seq), e))?;
        let event = super::events::decode(&m.payload)?;
        let keys = FeedKeys {
            type_: Some(event.type_.clone()),
            grid: event.grid.clone(),
            category: event.category.clone(),
            severity: Some(item.priority),
            caseid: event.caseid.clone(),
        };
        let dead = DeadLetter {
            id: item.id,
            target: item.target.clone(),
            event_id: event.id,
            event_source: event.source,
            event_type: event.type_,
            caseid: event.caseid,
            attempts: state.attempts,
            last_error: state.last_error.clone(),
            dead_at: rfc3339_ms(now),
        };
        Ok((dead, keys))
    }

    async fn feed_dead_letter(
        &self,
        dead: &DeadLetter,
        keys: &FeedKeys,
        replayed: bool,
    ) -> Result<(), JournalError> {
        let mut data = serde_json::to_value(dead).unwrap_or_default();
        data["replayed"] = replayed.into();
        self.publish_feed(FeedKind::DeadLetter, keys, data.to_string())
            .await?;
        Ok(())
    }

    /// Puts a dead letter back: pending again with its attempts reset, and
    /// a new work item for it. `None` when `id` is not a dead letter (now).
    pub(crate) async fn replay_dead(&self, id: i64) -> Result<Option<DeliveryRef>, JournalError> {
        let (Some(mut state), revision) = self.delivery_state(id).await? else {
            return Ok(None);
        };
        if state.status != "dead" {
            return Ok(None);
        }
        let Some(item) = self.work_item(id).await? else {
            return Ok(None);
        };
        let (dead, keys) = self.dead_letter_of(&item, &state, now_ms()).await?;
        // The work item first, naming the death it replays, then the
        // state. A node dying between the two leaves the item, and its
        // taker finishes the replay (the state is still that death); the
        // other way round it would leave a delivery pending with no work
        // item, never delivered. Two replays of the same death publish
        // one item (the same message id) and one of them sets the state.
        let mut headers = HeaderMap::new();
        headers.insert(DELIVERY, id.to_string().as_str());
        headers.insert(REPLAY_OF, revision.to_string().as_str());
        headers.insert(EVENT, item.event_seq.to_string().as_str());
        headers.insert(ORDER, item.order_key.as_str());
        headers.insert(PRIORITY, item.priority.to_string().as_str());
        headers.insert(MSG_ID, format!("replay.{id}.{revision}").as_str());
        let subject = format!(
            "{}.wk.{}.{}",
            self.subjects.root, item.target, item.partition
        );
        // Bounded: a replay of the same death in flight on another node
        // (10158) is waited for, then found a duplicate or stored.
        let mut tries = 0;
        loop {
            let stored = async {
                self.js
                    .publish_with_headers(subject.clone(), headers.clone(), Bytes::new())
                    .await?
                    .await
            }
            .await;
            match stored {
                Ok(_) => break,
                Err(e) if tries < 20 && e.to_string().contains("10158") => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                Err(e) => return Err(storage("replay", e)),
            }
        }
        state.status = "pending".into();
        state.attempts = 0;
        state.next_attempt_at = None;
        state.updated_at = rfc3339_ms(now_ms());
        let body = serde_json::to_vec(&state).map_err(|e| storage("replay", e))?;
        match self
            .deliveries
            .update(id.to_string(), body.into(), revision)
            .await
        {
            Ok(_) => {}
            // Replayed by someone else a moment ago (or its item taken
            // and recorded already): the one item goes out once.
            Err(e) if e.to_string().contains("wrong last sequence") => return Ok(None),
            Err(e) => return Err(storage(&format!("replaying {id}"), e)),
        }
        self.feed_dead_letter(&dead, &keys, true).await?;
        Ok(Some(DeliveryRef {
            id,
            event_seq: item.event_seq,
            target: item.target,
            order_key: item.order_key,
            attempts: 0,
            not_before_ms: None,
            priority: item.priority,
        }))
    }

    /// Dead letters still dead, newest first, at most `limit`; of these
    /// targets only, when given. Reads the dead-letter stream through a
    /// short-lived consumer (it holds what died within `retain`).
    pub(crate) async fn list_dead(
        &self,
        targets: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, JournalError> {
        let filters: Vec<String> = match targets {
            Some([]) => return Ok(Vec::new()),
            Some(t) => t
                .iter()
                .map(|t| format!("{}.dead.{t}", self.subjects.root))
                .collect(),
            None => vec![format!("{}.dead.>", self.subjects.root)],
        };
        // The latest death of each delivery.
        let mut latest: std::collections::HashMap<i64, DeadLetter> = Default::default();
        for body in super::read_filtered(&self.dead, filters, 1, usize::MAX, "dead letters").await?
        {
            if let Ok(d) = serde_json::from_slice::<DeadLetter>(&body) {
                latest.insert(d.id, d);
            }
        }
        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut by_newest: Vec<DeadLetter> = latest.into_values().collect();
        by_newest.sort_by(|a, b| b.dead_at.cmp(&a.dead_at).then(b.id.cmp(&a.id)));
        for d in by_newest {
            if dead.len() >= limit {
                break;
            }
            // Replayed since (and not dead again): not a dead letter.
            if let (Some(state), _) = self.delivery_state(d.id).await? {
                if state.status == "dead" {
                    dead.push(d);
                }
            }
        }
        Ok(dead)
    }
}

/// The flow record with the delivery and the route that chose the target
/// added (as the SQLite journal adds them).
fn with_delivery(detail: &str, id: i64, rule: &str) -> String {
    let body = detail.trim_end().strip_suffix('}').unwrap_or(detail);
    let joined = if body.trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    format!(
        "{body}{joined}\"delivery\":{id},\"route\":{}}}",
        serde_json::Value::String(rule.to_string())
    )
}

impl DeliveryLog for NatsJournal {
    /// Records each outcome, then settles its work item: acknowledged
    /// when final, given back with its backoff on a retry.
    fn record(&self, updates: Vec<DeliveryUpdate>) -> Pending<()> {
        let this = self.handle();
        Box::pin(async move {
            for u in updates {
                let recorded = match this.record_outcomes(vec![u.clone()]).await {
                    Ok(()) => this.settle_item(&u).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = recorded {
                    // Not recorded (the cluster is electing a leader, say):
                    // the server hands the item out again soon, and it is
                    // delivered again rather than lost.
                    this.give_back(u.id()).await;
                    return Err(e);
                }
            }
            Ok(())
        })
    }

    fn replay(&self, id: i64) -> Pending<Option<DeliveryRef>> {
        let this = self.handle();
        Box::pin(async move { this.replay_dead(id).await })
    }

    /// Nothing: the work is shared, and the consumers hand each node what
    /// it holds ([`DeliveryLog::serve`]).
    fn pending(&self) -> Pending<Vec<DeliveryRef>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn dead_letters(&self, targets: Option<&[String]>, limit: usize) -> Pending<Vec<DeadLetter>> {
        let this = self.handle();
        let targets = targets.map(<[String]>::to_vec);
        Box::pin(async move { this.list_dead(targets.as_deref(), limit).await })
    }

    fn dead_letter(&self, id: i64) -> Pending<Option<DeadLetter>> {
        let this = self.handle();
        Box::pin(async move {
            let (Some(state), _) = this.delivery_state(id).await? else {
                return Ok(None);
            };
            if state.status != "dead" {
                return Ok(None);
            }
            let Some(item) = this.work_item(id).await? else {
                return Ok(None);
            };
            let (mut dead, _) = this.dead_letter_of(&item, &state, now_ms()).await?;
            dead.dead_at = state.updated_at;
            Ok(Some(dead))
        })
    }

    fn shared_work(&self) -> bool {
        true
    }

    fn serve(&self, target: &str, sink: WorkSink) {
        self.serve_work(target, sink);
    }

    fn backlog(&self, target: &str) -> Option<usize> {
        Some(self.inner.held.backlog(target))
    }
}

impl crate::journal::Journal for NatsJournal {
    fn flush(&self) -> Pending<()> {
        NatsJournal::flush(self)
    }

    fn leave(&self) -> Pending<()> {
        let this = self.handle();
        let flush = NatsJournal::flush(self);
        Box::pin(async move {
            flush.await?;
            this.leave().await
        })
    }
}

/// The dead-letter stream's configuration: kept as long as the events.
pub(crate) fn dead_config(config: &super::NatsConfig, root: &str) -> stream::Config {
    stream::Config {
        name: format!("{}_DEAD", config.stream_name()),
        subjects: vec![format!("{root}.dead.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        max_age: config.retain,
        duplicate_window: config.duplicate_window,
        ..Default::default()
    }
}
