//! The event log on JetStream: accepted events and their work items as
//! atomic batches on the `GOVHUB` stream, several events per batch when
//! several are waiting (group commit; a group refused as a duplicate is
//! stored one event per batch).
//!
//! A batch's messages get consecutive stream sequences (measured:
//! `tests/nats_cluster.rs`), so an event's sequence is its place in the
//! batch, and work item `k` (1-based) is the event's sequence plus `k`: that is the
//! delivery's id, and the item carries `k` (`Govhub-Offset`) so that a
//! consumer finds its event without a lookup.

use super::{storage, Identity, Inner, NatsJournal};
use crate::journal::{
    Appended, DeliveryRef, DeliveryStatus, EventLog, JournalError, NewEvent, Pending, StoredEvent,
};
use crate::router::Target;
use async_nats::HeaderMap;
use bytes::Bytes;
use govhub_sdk::Event;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BATCH_ID: &str = "Nats-Batch-Id";
const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const BATCH_COMMIT: &str = "Nats-Batch-Commit";
const MSG_ID: &str = "Nats-Msg-Id";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// Where the event came from (an adapter), when it was accepted (unix
/// ms), where it goes (JSON `[{adapter, rule}]`), and on a work item its
/// place in the batch, its order key and its lane.
const ORIGIN: &str = "Govhub-Origin";
const RECEIVED: &str = "Govhub-Received";
const TARGETS: &str = "Govhub-Targets";
const OFFSET: &str = "Govhub-Offset";
const ORDER: &str = "Govhub-Order";
const PRIORITY: &str = "Govhub-Priority";

/// The server's answers that mean "this identity is stored already":
/// its `Nats-Msg-Id` inside the duplicate window (10201), or the identity
/// check over every partition (10071, naming where the original is).
const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;
const ERR_ATOMIC_PUBLISH_DUPLICATE: u64 = 10201;
/// Another node is storing the same identity right now (10158, 10164):
/// asked again in a moment, it is a duplicate, or ours if theirs failed.
const ERR_DUPLICATE_IN_PROCESS: u64 = 10158;
const ERR_WRONG_LAST_SEQUENCE_CONSTANT: u64 = 10164;
/// The server holds a bounded number of open batches per stream (50 in
/// nats-server 2.15, over every client): past it, a batch is refused at
/// its first message and is asked again in a moment.
const ERR_ATOMIC_TOO_MANY_IN_FLIGHT: u64 = 10210;
/// How often a race with another node is asked again, and how long apart.
const RACE_TRIES: u32 = 40;
const RACE_PAUSE: Duration = Duration::from_millis(25);

static BATCHES: AtomicU64 = AtomicU64::new(0);

/// The most messages one atomic batch may hold (nats-server's limit is
/// 1,000); a bigger group is stored one event per batch.
const MAX_BATCH: usize = 1000;
/// The most events the group committer puts in one batch.
const MAX_GROUP: usize = 64;

/// An event waiting for the group committer, and where its answer goes.
/// One call's events stay together, in their order: events of one case
/// sent in one request are stored in the order they came.
pub(crate) type Grouped = (
    Vec<NewEvent>,
    tokio::sync::oneshot::Sender<Result<Vec<Appended>, JournalError>>,
);

/// The group committer: waits for a share of the server's open batches,
/// then takes everything waiting (up to `MAX_GROUP` events) into one
/// batch. While every share is busy the queue grows, so groups grow with
/// the load. Stops when the journal is dropped.
pub(crate) fn start_grouper(
    inner: std::sync::Weak<Inner>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Grouped>,
) {
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let Some(this) = inner.upgrade() else { return };
            let Ok(open) = this.batches.clone().acquire_owned().await else {
                return;
            };
            let mut size = first.0.len();
            let mut group = vec![first];
            while size < MAX_GROUP {
                match rx.try_recv() {
                    Ok(g) => {
                        size += g.0.len();
                        group.push(g);
                    }
                    Err(_) => break,
                }
            }
            tokio::spawn(async move {
                let sizes: Vec<usize> = group.iter().map(|g| g.0.len()).collect();
                let (calls, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
                let events: Vec<NewEvent> = calls.into_iter().flatten().collect();
                match this.append_group(events, open).await {
                    Ok(appended) => {
                        let mut appended = appended.into_iter();
                        for (reply, n) in replies.into_iter().zip(sizes) {
                            let _ = reply.send(Ok(appended.by_ref().take(n).collect()));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            });
        }
    });
}

/// One message of a batch.
struct Part {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

/// What the server answered a batch's commit.
enum Answer {
    /// Nobody listens on the subject: the stream has no leader right now
    /// (an election after a node died, or a stream just made). Nothing
    /// was stored, and asking again in a moment is safe.
    NoLeader,
    /// Stored: the last message's sequence and how many there were.
    Stored { last: u64, count: u64 },
    /// Refused with a JetStream error.
    Refused { code: u64, description: String },
}

impl Inner {
    /// The batch that accepts `e`: the event, then a work item per target.
    fn acceptance(&self, e: &NewEvent) -> (Identity, u32, Vec<Part>, Vec<DeliveryRef>) {
        let ev = &e.event;
        let identity = Identity::of(&ev.source, &ev.id);
        let order_key = ev.caseid.clone().unwrap_or_else(|| identity.both.clone());
        let p = super::partition(&order_key, self.config.partitions);
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID, identity.both.as_str());
        headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
            self.subjects.identity(&identity).as_str(),
        );
        if let Some(origin) = &e.origin {
            headers.insert(ORIGIN, origin.as_str());
        }
        headers.insert(RECEIVED, e.received_ms.to_string().as_str());
        headers.insert(TARGETS, targets_json(&e.targets).as_str());
        let mut parts = vec![Part {
            subject: self.subjects.event(p, &identity),
            headers,
            payload: Bytes::copy_from_slice(e.encoded.as_bytes()),
        }];
        let priority = ev.severity.map(|s| s.rank()).unwrap_or(0);
        let mut refs = Vec::new();
        for (k, target) in e.targets.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(OFFSET, (k + 1).to_string().as_str());
            // What the delivery's first recorded state needs, so its
            // outcome need not read the event back.
            headers.insert(RECEIVED, e.received_ms.to_string().as_str());
            headers.insert(
                super::deliveries::RULE,
                serde_json::Value::String(target.rule.clone())
                    .to_string()
                    .as_str(),
            );
            headers.insert(ORDER, order_key.as_str());
            headers.insert(PRIORITY, priority.to_string().as_str());
            parts.push(Part {
                subject: self.subjects.work(&target.adapter, p),
                headers,
                payload: Bytes::new(),
            });
            refs.push(DeliveryRef {
                id: 0,
                event_seq: 0,
                target: target.adapter.clone(),
                order_key: order_key.clone(),
                attempts: 0,
                not_before_ms: None,
                priority,
            });
        }
        (identity, p, parts, refs)
    }

    /// Publishes `parts` as one atomic batch; the answer to its commit.
    async fn publish_batch(&self, parts: &[Part]) -> Result<Answer, JournalError> {
        // This node's share of the server's open batches.
        let _open = self
            .batches
            .acquire()
            .await
            .map_err(|_| JournalError::Closed)?;
        self.publish_batch_open(parts).await
    }

    /// [`Inner::publish_batch`] for a caller that holds a share already.
    async fn publish_batch_open(&self, parts: &[Part]) -> Result<Answer, JournalError> {
        let batch = format!(
            "{}-{}",
            uuid::Uuid::new_v4().simple(),
            BATCHES.fetch_add(1, Ordering::Relaxed)
        );
        let n = parts.len();
        for (i, part) in parts.iter().enumerate() {
            let mut headers = part.headers.clone();
            headers.insert(BATCH_ID, batch.as_str());
            headers.insert(BATCH_SEQUENCE, (i + 1).to_string().as_str());
            let last = i + 1 == n;
            if last {
                headers.insert(BATCH_COMMIT, "1");
            }
            // The first message is asked (the server refuses a batch it
            // cannot take there), the last is the commit; the ones in
            // between are sent.
            if i == 0 || last {
                let reply = match self
                    .client
                    .request_with_headers(part.subject.clone(), headers, part.payload.clone())
                    .await
                {
                    Ok(reply) => reply,
                    Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                        return Ok(Answer::NoLeader)
                    }
                    Err(e) => return Err(storage(&format!("publishing to {}", part.subject), e)),
                };
                let answer = parse_answer(&reply.payload)?;
                match answer {
                    None if !last => continue,
                    None => return Err(storage("commit", "the server answered nothing")),
                    Some(a) => return Ok(a),
                }
            } else {
                self.client
                    .publish_with_headers(part.subject.clone(), headers, part.payload.clone())
                    .await
                    .map_err(|e| storage(&format!("publishing to {}", part.subject), e))?;
            }
        }
        Err(storage("commit", "an empty batch"))
    }

    /// Stores one event with its work items, or finds it stored already.
    async fn append_one(&self, e: NewEvent) -> Result<Appended, JournalError> {
        let (identity, _p, parts, mut refs) = self.acceptance(&e);
        let leaderless_until = std::time::Instant::now() + self.config.request_timeout;
        let mut attempt = 0;
        while attempt < RACE_TRIES {
            match self.publish_batch(&parts).await? {
                Answer::NoLeader if std::time::Instant::now() < leaderless_until => {
                    tokio::time::sleep(RACE_PAUSE).await;
                }
                Answer::NoLeader => {
                    return Err(storage(
                        &format!("stream {}", self.config.stream_name()),
                        format!(
                            "no leader answered for {:?}; nothing was stored",
                            self.config.request_timeout
                        ),
                    ))
                }
                Answer::Stored { last, count } => {
                    if count != parts.len() as u64 {
                        return Err(storage(
                            "commit",
                            format!("stored {count} of a batch of {}", parts.len()),
                        ));
                    }
                    let seq = (last + 1 - count) as i64;
                    for (k, r) in refs.iter_mut().enumerate() {
                        r.id = seq + k as i64 + 1;
                        r.event_seq = seq;
                    }
                    return Ok(Appended {
                        seq,
                        duplicate: false,
                        deliveries: refs,
                    });
                }
                Answer::Refused { code, description } => match code {
                    ERR_WRONG_LAST_SEQUENCE => {
                        let seq = match original_from(&description) {
                            Some(seq) => seq,
                            None => self.stored_seq(&identity).await?,
                        };
                        return Ok(duplicate(seq));
                    }
                    ERR_ATOMIC_PUBLISH_DUPLICATE => {
                        return Ok(duplicate(self.stored_seq(&identity).await?));
                    }
                    ERR_DUPLICATE_IN_PROCESS
                    | ERR_WRONG_LAST_SEQUENCE_CONSTANT
                    | ERR_ATOMIC_TOO_MANY_IN_FLIGHT => {
                        attempt += 1;
                        tokio::time::sleep(RACE_PAUSE * attempt.min(8)).await;
                    }
                    _ => {
                        return Err(storage(
                            &format!("stream {}", self.config.stream_name()),
                            format!("{description} (error {code})"),
                        ))
                    }
                },
            }
        }
        Err(storage(
            "append",
            "another node kept storing the same event; try again",
        ))
    }

    /// Stores several events in one atomic batch (the per-batch cost
    /// shared: group commit). The group's messages get consecutive
    /// sequences, so each event's sequence is the first plus its offset in
    /// the batch. A group the server refuses for any reason but a moment's
    /// contention (a duplicate among them, say) is stored one event per
    /// batch instead, which finds the duplicate and stores the rest.
    async fn append_group(
        &self,
        events: Vec<NewEvent>,
        open: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Vec<Appended>, JournalError> {
        // Cut into batches the server takes (at most `MAX_BATCH` messages),
        // committed one after the other, in order.
        let mut chunks: Vec<Vec<NewEvent>> = Vec::new();
        let mut messages = 0;
        for e in events {
            let m = 1 + e.targets.len();
            match chunks.last_mut() {
                Some(c) if messages + m <= MAX_BATCH && c.len() < MAX_GROUP => c.push(e),
                _ => {
                    chunks.push(vec![e]);
                    messages = 0;
                }
            }
            messages += m;
        }
        let mut out = Vec::new();
        let mut open = Some(open);
        for chunk in chunks {
            let share = match open.take() {
                Some(share) => share,
                None => self
                    .batches
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| JournalError::Closed)?,
            };
            out.extend(self.commit_group(chunk, share).await?);
        }
        Ok(out)
    }

    /// One group that fits in a batch.
    async fn commit_group(
        &self,
        events: Vec<NewEvent>,
        open: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Vec<Appended>, JournalError> {
        if events.len() < 2 {
            drop(open);
            let mut out = Vec::new();
            for e in events {
                out.push(self.append_one(e).await?);
            }
            return Ok(out);
        }
        let mut parts = Vec::new();
        let mut accepted = Vec::with_capacity(events.len());
        for e in &events {
            let (_, _, p, refs) = self.acceptance(e);
            accepted.push((parts.len() as i64, refs));
            parts.extend(p);
        }
        if parts.len() > MAX_BATCH {
            drop(open);
            return self.append_each(events).await;
        }
        let mut attempt = 0;
        loop {
            match self.publish_batch_open(&parts).await? {
                Answer::Stored { last, count } if count == parts.len() as u64 => {
                    let first = (last + 1 - count) as i64;
                    return Ok(accepted
                        .into_iter()
                        .map(|(offset, mut refs)| {
                            let seq = first + offset;
                            for (k, r) in refs.iter_mut().enumerate() {
                                r.id = seq + k as i64 + 1;
                                r.event_seq = seq;
                            }
                            Appended {
                                seq,
                                duplicate: false,
                                deliveries: refs,
                            }
                        })
                        .collect());
                }
                Answer::Refused {
                    code: ERR_ATOMIC_TOO_MANY_IN_FLIGHT,
                    ..
                } if attempt < RACE_TRIES => {
                    attempt += 1;
                    tokio::time::sleep(RACE_PAUSE * attempt.min(8)).await;
                }
                _ => {
                    drop(open);
                    return self.append_each(events).await;
                }
            }
        }
    }

    /// One batch per event, all in flight at once.
    /// One batch per event, one after the other: events of one case keep
    /// their order.
    async fn append_each(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, JournalError> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(self.append_one(e).await?);
        }
        Ok(out)
    }

    /// The sequence of the stored event with this identity.
    async fn stored_seq(&self, identity: &Identity) -> Result<i64, JournalError> {
        let m = self
            .stream
            .get_last_raw_message_by_subject(&self.subjects.identity(identity))
            .await
            .map_err(|e| storage("looking up a duplicate", e))?;
        Ok(m.sequence as i64)
    }

    /// The stored event messages with this id (of one source, when given).
    async fn event_messages(
        &self,
        id: &str,
        source: Option<&str>,
    ) -> Result<Vec<async_nats::jetstream::message::StreamMessage>, JournalError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let subjects: Vec<String> = match source {
            Some(source) => vec![self.subjects.identity(&Identity::of(source, id))],
            None => {
                let mut found = self
                    .stream
                    .info_with_subjects(self.subjects.with_id(&super::id_hash(id)))
                    .await
                    .map_err(|e| storage("listing subjects", e))?;
                let mut subjects = Vec::new();
                use futures_util::StreamExt;
                while let Some(s) = found.next().await {
                    let (subject, _) = s.map_err(|e| storage("listing subjects", e))?;
                    subjects.push(subject);
                }
                subjects
            }
        };
        let mut messages = Vec::new();
        for subject in subjects {
            match self.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => messages.push(m),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(storage("reading an event", e)),
            }
        }
        messages.sort_by_key(|m| m.sequence);
        Ok(messages)
    }

    /// The deliveries of a stored event, with their state as the delivery
    /// log recorded it (pending until it records otherwise).
    async fn delivery_statuses(
        &self,
        seq: i64,
        received_ms: i64,
        targets: &[Target],
    ) -> Result<Vec<DeliveryStatus>, JournalError> {
        let mut statuses = Vec::with_capacity(targets.len());
        for (k, t) in targets.iter().enumerate() {
            let id = seq + k as i64 + 1;
            let recorded = self
                .deliveries
                .get(id.to_string())
                .await
                .map_err(|e| storage("reading a delivery", e))?;
            let status = match recorded {
                Some(bytes) => serde_json::from_slice::<DeliveryStatus>(&bytes)
                    .map_err(|e| storage(&format!("delivery {id}"), e))?,
                None => DeliveryStatus {
                    id,
                    target: t.adapter.clone(),
                    rule: t.rule.clone(),
                    status: "pending".into(),
                    attempts: 0,
                    last_error: None,
                    reference: None,
                    created_at: crate::journal::rfc3339_ms(received_ms),
                    updated_at: crate::journal::rfc3339_ms(received_ms),
                    delivered_at: None,
                    next_attempt_at: None,
                    waiting_for: None,
                },
            };
            statuses.push(status);
        }
        Ok(statuses)
    }
}

fn duplicate(seq: i64) -> Appended {
    Appended {
        seq,
        duplicate: true,
        deliveries: Vec::new(),
    }
}

fn targets_json(targets: &[Target]) -> String {
    serde_json::Value::Array(
        targets
            .iter()
            .map(|t| serde_json::json!({ "adapter": t.adapter, "rule": t.rule }))
            .collect(),
    )
    .to_string()
}

pub(crate) fn targets_of(headers: &HeaderMap) -> Vec<Target> {
    let Some(json) = headers.get(TARGETS) else {
        return Vec::new();
    };
    let list: Vec<serde_json::Value> = serde_json::from_str(json.as_str()).unwrap_or_default();
    list.iter()
        .filter_map(|t| {
            Some(Target {
                adapter: t["adapter"].as_str()?.to_string(),
                rule: t["rule"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// `wrong last sequence: 42` → 42.
fn original_from(description: &str) -> Option<i64> {
    description
        .rsplit(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n: &i64| n > 0)
}

/// A publish's answer: nothing (a staged batch message), a pub ack, or a
/// JetStream error.
fn parse_answer(payload: &[u8]) -> Result<Option<Answer>, JournalError> {
    if payload.is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| storage("the server's answer", e))?;
    if let Some(error) = v.get("error") {
        return Ok(Some(Answer::Refused {
            code: error["err_code"].as_u64().unwrap_or(0),
            description: error["description"].as_str().unwrap_or("").to_string(),
        }));
    }
    let last = v["seq"]
        .as_u64()
        .ok_or_else(|| storage("the server's answer", format!("no sequence in {v}")))?;
    Ok(Some(Answer::Stored {
        last,
        count: v["count"].as_u64().unwrap_or(1),
    }))
}

pub(crate) fn decode(body: &[u8]) -> Result<Event, JournalError> {
    govhub_sdk::cloudevents::from_slice(body).map_err(|e| storage("a stored event", e))
}

impl EventLog for NatsJournal {
    fn append(&self, events: Vec<NewEvent>) -> Pending<Vec<Appended>> {
        // The call's events go to the group committer together, which
        // puts what is waiting into one batch (a duplicate among them
        // sends each through its own, in order).
        let (reply, rx) = tokio::sync::oneshot::channel();
        let sent = self.inner.grouped.send((events, reply));
        Box::pin(async move {
            sent.map_err(|_| JournalError::Closed)?;
            rx.await.map_err(|_| JournalError::Closed)?
        })
    }

    fn event_by_seq(&self, seq: i64) -> Pending<Option<Event>> {
        let this = self.handle();
        Box::pin(async move {
            use async_nats::jetstream::stream::RawMessageErrorKind;
            let Ok(at) = u64::try_from(seq) else {
                return Ok(None);
            };
            match this.message_at(at).await {
                Ok(m)
                    if m.subject
                        .starts_with(&format!("{}.ev.", this.subjects.root)) =>
                {
                    decode(&m.payload).map(Some)
                }
                Ok(_) => Ok(None),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {
                    // None only when the stream does not hold that
                    // sequence (expired past storage.nats_retain_days, or
                    // never stored); a work item's event is otherwise
                    // stored with it, and the server's "not found" is a
                    // moment's.
                    let mut stream = this.stream.clone();
                    let state = stream
                        .info()
                        .await
                        .map_err(|e| storage("reading an event", e))?
                        .state
                        .clone();
                    if at < state.first_sequence || at > state.last_sequence {
                        Ok(None)
                    } else {
                        Err(storage(
                            &format!("event {seq}"),
                            "the server does not find it yet; asked again later",
                        ))
                    }
                }
                Err(e) => Err(storage("reading an event", e)),
            }
        })
    }

    fn events(&self, id: &str, source: Option<&str>) -> Pending<Vec<StoredEvent>> {
        let this = self.handle();
        let (id, source) = (id.to_string(), source.map(str::to_string));
        Box::pin(async move {
            let mut stored = Vec::new();
            for m in this.event_messages(&id, source.as_deref()).await? {
                let event = decode(&m.payload)?;
                if event.id != id {
                    continue; // the first 64 bits of another id's hash
                }
                let received_ms = m
                    .headers
                    .get(RECEIVED)
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(0);
                let seq = m.sequence as i64;
                let targets = targets_of(&m.headers);
                stored.push(StoredEvent {
                    seq,
                    deliveries: this.delivery_statuses(seq, received_ms, &targets).await?,
                    origin: m.headers.get(ORIGIN).map(|v| v.as_str().to_string()),
                    received_at: crate::journal::rfc3339_ms(received_ms),
                    event,
                });
            }
            Ok(stored)
        })
    }
}
