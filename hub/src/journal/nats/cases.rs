//! Case state on JetStream: one node tracks the cases at a time, under a
//! lease; the cases are a KV bucket every node reads.
//!
//! - **The tracker's lease.** `tracker.lease` in the meta bucket names the
//!   node that tracks and until when (`storage.nats_lease_ms`). Each node
//!   tries to take it when it is free or has run out, and the holder
//!   renews it; each take and renewal is a compare-and-set on the key's
//!   revision, so two nodes never both succeed. Only the holder applies
//!   events to cases and judges deadlines, with its own clock, which fire
//!   once: whoever holds the lease, an escalation's event id comes from
//!   (case, level), and a repeat is a duplicate the event log drops.
//! - **The feed is the event log itself, read in stream order** from the
//!   position stored with the cases (`tracker.position`), as the SQLite
//!   journal reads its table: the tracker reads each event once, in the
//!   order it was stored, and a new holder goes on from where the old one
//!   settled. A settle writes each case with compare-and-set on the
//!   revision this node saw, then the position, with compare-and-set too:
//!   a node that lost the lease and did not notice fails there, reloads,
//!   and stops.
//! - Every node keeps a watched copy of the bucket: `case` and `cases`
//!   answer from memory on any node.

use super::{storage, Inner, NatsJournal};
use crate::journal::{
    CaseFilter, CaseRow, CaseStatus, CaseStore, CaseTake, FedEvent, FeedKeys, FeedKind,
    JournalError, Pending, Receipt,
};
use async_nats::jetstream::{consumer, Message};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

/// The meta keys of the tracker's lease and of its position in the log.
const LEASE: &str = "tracker.lease";
const POSITION: &str = "tracker.position";

/// A case as the bucket keeps it.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    kind: String,
    category: Option<String>,
    grid: Option<String>,
    stage: u8,
    level: u8,
    opened_ms: i64,
    accept_due_ms: i64,
    resolve_due_ms: i64,
    closed_ms: Option<i64>,
    severity: Option<u8>,
    /// The case, JSON.
    doc: Box<serde_json::value::RawValue>,
}

impl Stored {
    fn of(r: &CaseRow) -> Result<Stored, JournalError> {
        let doc = String::from_utf8(r.doc.clone()).map_err(|e| storage("a case", e))?;
        Ok(Stored {
            id: r.id.clone(),
            kind: r.kind.clone(),
            category: r.category.clone(),
            grid: r.grid.clone(),
            stage: r.stage,
            level: r.level,
            opened_ms: r.opened_ms,
            accept_due_ms: r.accept_due_ms,
            resolve_due_ms: r.resolve_due_ms,
            closed_ms: r.closed_ms,
            severity: r.severity,
            doc: serde_json::value::RawValue::from_string(doc).map_err(|e| storage("a case", e))?,
        })
    }

    fn matches(&self, f: &CaseFilter) -> bool {
        let status = match f.status {
            Some(CaseStatus::Open) => self.closed_ms.is_none(),
            Some(CaseStatus::Closed) => self.closed_ms.is_some(),
            Some(CaseStatus::Stage(s)) => self.stage == s,
            None => true,
        };
        let under = |value: &Option<String>, prefix: &Option<String>, sep: char| match prefix {
            None => true,
            Some(p) => value.as_deref().is_some_and(|v| {
                v == p
                    || v.strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with(sep))
            }),
        };
        let overdue = f.overdue_at.is_none_or(|t| {
            self.closed_ms.is_none()
                && (self.resolve_due_ms <= t || (self.stage < 2 && self.accept_due_ms <= t))
        });
        status
            && under(&self.grid, &f.grid, '/')
            && under(&self.category, &f.category, '.')
            && overdue
    }
}

/// A case id as a bucket key: itself when it is one, encoded otherwise.
fn case_key(id: &str) -> String {
    super::tables::bucket_key(id)
}

/// The lease as the bucket keeps it.
#[derive(Serialize, Deserialize)]
struct Lease {
    node: String,
    until_ms: i64,
}

/// This node's side of the tracking: whether it holds the lease (and since
/// which revision of it), and its reader of the event log.
pub(crate) struct CaseFeed {
    term: std::sync::Mutex<Option<u64>>,
    reader: Mutex<Reader>,
    /// Told when the reader hands on an event.
    arrived: std::sync::Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Reader {
    /// Events of the log from the position on, while reading.
    rx: Option<mpsc::Receiver<Message>>,
    /// Stops the reading task.
    _stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The last sequence taken, and the position's revision when reading
    /// started.
    taken: u64,
    position_revision: u64,
}

impl CaseFeed {
    pub(crate) fn new() -> CaseFeed {
        CaseFeed {
            term: std::sync::Mutex::new(None),
            reader: Mutex::new(Reader::default()),
            arrived: Default::default(),
        }
    }

    fn term(&self) -> Option<u64> {
        *self.term.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_term(&self, term: Option<u64>) {
        *self.term.lock().unwrap_or_else(|p| p.into_inner()) = term;
    }
}

fn now_ms() -> i64 {
    crate::journal::now_ms()
}

/// Takes and renews the lease every third of its length; stops when the
/// journal is dropped, and gives the lease up on the way out.
pub(crate) fn start_lease(inner: Weak<Inner>, mut stop: tokio::sync::watch::Receiver<()>) {
    tokio::spawn(async move {
        loop {
            let Some(journal) = inner.upgrade() else {
                return;
            };
            let every = journal.config.lease / 3;
            if let Err(e) = journal.heartbeat().await {
                tracing::warn!("node heartbeat: {e}");
            }
            if let Err(e) = journal.renew_lease().await {
                tracing::warn!("case tracker lease: {e}");
                if journal.case_feed.term().is_some() {
                    journal.case_feed.set_term(None);
                }
            }
            drop(journal);
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    });
}

impl Inner {
    /// Takes the lease when it is free or ran out, renews it when this
    /// node holds it.
    async fn renew_lease(&self) -> Result<(), JournalError> {
        let feed = &self.case_feed;
        let (revision, value) = self.meta.fetch(LEASE).await?;
        let held: Option<Lease> = value.and_then(|v| serde_json::from_slice(&v).ok());
        let mine = held.as_ref().is_some_and(|l| l.node == self.node);
        let free = held.as_ref().is_none_or(|l| l.until_ms < now_ms());
        if !mine && !free {
            if feed.term().is_some() {
                tracing::warn!("this node no longer tracks the cases: another took the lease");
                feed.set_term(None);
            }
            return Ok(());
        }
        let lease = Lease {
            node: self.node.clone(),
            until_ms: now_ms() + self.config.lease.as_millis() as i64,
        };
        let body = serde_json::to_vec(&lease).map_err(|e| storage("lease", e))?;
        match self.meta.update(LEASE, Bytes::from(body), revision).await? {
            Some(new) => {
                if !mine || feed.term().is_none() {
                    tracing::info!("this node tracks the cases now");
                    // Read from the stored position on.
                    *feed.reader.lock().await = Reader::default();
                    feed.set_term(Some(new));
                }
            }
            None => {
                if feed.term().is_some() {
                    tracing::warn!("this node no longer tracks the cases: another took the lease");
                }
                feed.set_term(None);
            }
        }
        Ok(())
    }

    /// Gives the lease up when this node holds it (a node stopping).
    pub(crate) async fn release_lease(&self) {
        if self.case_feed.term().is_none() {
            return;
        }
        self.case_feed.set_term(None);
        if let Ok((revision, Some(value))) = self.meta.fetch(LEASE).await {
            let mine = serde_json::from_slice::<Lease>(&value).is_ok_and(|l| l.node == self.node);
            if mine {
                let free = Lease {
                    node: String::new(),
                    until_ms: 0,
                };
                let body = serde_json::to_vec(&free).unwrap_or_default();
                let _ = self.meta.update(LEASE, Bytes::from(body), revision).await;
            }
        }
    }

    /// Starts reading the log from the stored position.
    async fn start_reader(&self, reader: &mut Reader) -> Result<(), JournalError> {
        let (revision, value) = self.meta.fetch(POSITION).await?;
        let position: u64 = value
            .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::channel(1024);
        let (stop_tx, mut stop) = tokio::sync::oneshot::channel();
        let stream = self.stream.clone();
        let filter = format!("{}.ev.>", self.subjects.root);
        let arrived = self.case_feed.arrived.clone();
        tokio::spawn(async move {
            let mut handed = position;
            loop {
                let messages = async {
                    stream
                        .create_consumer(consumer::pull::OrderedConfig {
                            filter_subject: filter.clone(),
                            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                                start_sequence: handed + 1,
                            },
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| e.to_string())?
                        .messages()
                        .await
                        .map_err(|e| e.to_string())
                };
                let messages = tokio::select! {
                    m = messages => m,
                    _ = &mut stop => return,
                };
                if let Ok(mut messages) = messages {
                    loop {
                        let next = tokio::select! {
                            next = messages.next() => next,
                            _ = &mut stop => return,
                        };
                        let Some(Ok(m)) = next else { break };
                        let Ok(info) = m.info() else { continue };
                        // async-nats 0.51's ordered consumer, recreated
                        // before its first message, starts from the
                        // stream's first: skip what was handed on.
                        let seq = info.stream_sequence;
                        if seq <= handed {
                            continue;
                        }
                        handed = seq;
                        if tx.send(m).await.is_err() {
                            return;
                        }
                        arrived.notify_one();
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = &mut stop => return,
                }
            }
        });
        *reader = Reader {
            rx: Some(rx),
            _stop: Some(stop_tx),
            taken: position,
            position_revision: revision,
        };
        Ok(())
    }

    async fn settle_position(&self, position: i64) -> Result<(), JournalError> {
        let mut reader = self.case_feed.reader.lock().await;
        let revision = reader.position_revision;
        match self
            .meta
            .update(POSITION, Bytes::from(position.to_string()), revision)
            .await?
        {
            Some(new) => {
                reader.position_revision = new;
                Ok(())
            }
            None => {
                *reader = Reader::default();
                self.case_feed.set_term(None);
                Err(storage(
                    "case tracker",
                    "another node moved the tracker's position: this node no longer tracks the cases",
                ))
            }
        }
    }
}

fn fed_event(m: &Message) -> Result<Option<FedEvent>, JournalError> {
    let info = m.info().map_err(|e| storage("a case event", e))?;
    let event = super::events::decode(&m.payload)?;
    if event.caseid.is_none() {
        return Ok(None);
    }
    let header = |name: &str| {
        m.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    Ok(Some(FedEvent {
        seq: info.stream_sequence as i64,
        received_ms: header("Govhub-Received")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        origin: header("Govhub-Origin"),
        targets: m
            .headers
            .as_ref()
            .map(super::events::targets_of)
            .unwrap_or_default(),
        event,
    }))
}

impl Inner {
    async fn put_cases(&self, rows: Vec<CaseRow>) -> Result<(), JournalError> {
        for r in rows {
            let key = case_key(&r.id);
            let body = serde_json::to_vec(&Stored::of(&r)?).map_err(|e| storage("a case", e))?;
            let (revision, _) = self.cases.entry(&key);
            if self
                .cases
                .update(&key, Bytes::from(body), revision)
                .await?
                .is_none()
            {
                return Err(storage(
                    &format!("case {}", r.id),
                    "another node wrote it since this one read it (the tracker moved); reloading",
                ));
            }
            let keys = FeedKeys {
                type_: None,
                grid: r.grid.clone(),
                category: r.category.clone(),
                severity: r.severity,
                caseid: Some(r.id.clone()),
            };
            self.publish_feed(
                FeedKind::Case,
                &keys,
                String::from_utf8_lossy(&r.summary).into_owned(),
            )
            .await?;
        }
        Ok(())
    }

    fn stored_cases(&self) -> Vec<Stored> {
        self.cases
            .scan("")
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }
}

impl CaseStore for NatsJournal {
    fn take_case_events(&self, limit: usize) -> Pending<CaseTake> {
        let this = self.handle();
        Box::pin(async move {
            let mut reader = this.case_feed.reader.lock().await;
            if this.case_feed.term().is_none() {
                return Ok(CaseTake {
                    events: Vec::new(),
                    receipt: Receipt::Position(reader.taken as i64),
                });
            }
            if reader.rx.is_none() {
                this.start_reader(&mut reader).await?;
            }
            let mut events = Vec::new();
            let mut seen = 0;
            while events.len() < limit && seen < limit * 4 {
                let Some(rx) = reader.rx.as_mut() else { break };
                let Ok(m) = rx.try_recv() else { break };
                seen += 1;
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                if seq <= reader.taken {
                    continue;
                }
                reader.taken = seq;
                if let Some(e) = fed_event(&m)? {
                    events.push(e);
                }
            }
            Ok(CaseTake {
                events,
                receipt: Receipt::Position(reader.taken as i64),
            })
        })
    }

    fn settle_cases(&self, rows: Vec<CaseRow>, receipt: Receipt) -> Pending<()> {
        let this = self.handle();
        Box::pin(async move {
            this.put_cases(rows).await?;
            match receipt {
                Receipt::Position(p) => this.settle_position(p).await,
                Receipt::Then(settle) => settle().await,
            }
        })
    }

    fn rewind_case_feed(&self) {
        // Read again from the stored position at the next take.
        if let Ok(mut reader) = self.inner.case_feed.reader.try_lock() {
            *reader = Reader::default();
        } else {
            let inner = self.handle();
            tokio::spawn(async move {
                *inner.case_feed.reader.lock().await = Reader::default();
            });
        }
    }

    fn tracking(&self) -> Option<u64> {
        self.inner.case_feed.term()
    }

    fn arrivals(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.inner.case_feed.arrived.clone())
    }

    fn store_cases(&self, rows: Vec<CaseRow>) -> Pending<()> {
        let this = self.handle();
        Box::pin(async move { this.put_cases(rows).await })
    }

    fn case(&self, id: &str) -> Pending<Option<Vec<u8>>> {
        let found = self
            .inner
            .cases
            .get(&case_key(id))
            .and_then(|v| serde_json::from_slice::<Stored>(&v).ok())
            .map(|s| s.doc.get().as_bytes().to_vec());
        Box::pin(async move { Ok(found) })
    }

    fn cases(&self, filter: &CaseFilter) -> Pending<Vec<Vec<u8>>> {
        let mut matching: Vec<Stored> = self
            .inner
            .stored_cases()
            .into_iter()
            .filter(|s| s.matches(filter))
            .collect();
        matching.sort_by(|a, b| b.opened_ms.cmp(&a.opened_ms).then(a.id.cmp(&b.id)));
        let page: Vec<Vec<u8>> = matching
            .into_iter()
            .skip(filter.offset)
            .take(filter.limit)
            .map(|s| s.doc.get().as_bytes().to_vec())
            .collect();
        Box::pin(async move { Ok(page) })
    }
}
