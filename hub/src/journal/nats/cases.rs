//! Case state on JetStream: the case tracker's feed is a durable consumer
//! of the accepted events, and the cases are a KV bucket.
//!
//! - **One tracker at a time.** The `cases` consumer on `<root>.ev.>` has a
//!   pinned priority group: exactly one node receives the events; when it
//!   dies, another is pinned after the TTL and receives what the dead one
//!   took and never settled, once `ack_wait` runs out. Partitioned case
//!   consumers (one per partition, pinned separately) are the next step
//!   if one tracker proves too slow; the benchmark decides.
//! - **Take then settle.** A take is what has arrived, sorted by stream
//!   sequence (a redelivery does not keep stream order); the settle writes
//!   each case with compare-and-set on the revision this node last saw
//!   (a tracker that lost its pin and missed a write fails, reloads and
//!   takes again), publishes the case's feed item, then acknowledges the
//!   messages, and waits for the server to confirm each. A crash before
//!   the acknowledgements repeats the take; applying an event twice is
//!   what the tracker already tolerates after a crash on SQLite.
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
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

/// The priority group the trackers pull in.
const GROUP: &str = "govhub";
/// How long one pull waits; the pin outlives a dead node by
/// `PINNED_TTL` counted from its last pull.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
const PINNED_TTL: Duration = Duration::from_secs(3);

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

/// This node's end of the tracker's consumer: what arrived and was not
/// taken, and what was taken and not settled (a failed pass: taken again
/// first, in order, ahead of anything newer).
pub(crate) struct CaseFeed {
    rx: Mutex<mpsc::Receiver<Message>>,
    held: Mutex<Vec<Message>>,
}

fn seq_of(m: &Message) -> u64 {
    m.info().map(|i| i.stream_sequence).unwrap_or(0)
}

/// Starts pulling the `cases` consumer in the priority group; stops when
/// the journal is dropped.
pub(crate) async fn start(
    inner_stream: &async_nats::jetstream::stream::Stream,
    root: &str,
    ack_wait: Duration,
    window: usize,
    mut stop: tokio::sync::watch::Receiver<()>,
) -> Result<CaseFeed, JournalError> {
    let consumer: consumer::PullConsumer = inner_stream
        .get_or_create_consumer(
            "cases",
            consumer::pull::Config {
                durable_name: Some("cases".into()),
                filter_subject: format!("{root}.ev.>"),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: window as i64,
                priority_policy: consumer::PriorityPolicy::PinnedClient,
                priority_groups: vec![GROUP.into()],
                priority_timeout: PINNED_TTL,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| storage("the cases consumer", e))?;
    let (tx, rx) = mpsc::channel(window.max(1));
    tokio::spawn(async move {
        loop {
            let messages = consumer
                .stream()
                .group(GROUP)
                .expires(PULL_EXPIRES)
                .max_messages_per_batch(window.max(1))
                .messages();
            let mut messages = tokio::select! {
                m = messages => match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!("cases consumer: {e}");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                            _ = stop.changed() => return,
                        }
                    }
                },
                _ = stop.changed() => return,
            };
            loop {
                let next = tokio::select! {
                    next = messages.next() => next,
                    _ = stop.changed() => return,
                };
                match next {
                    Some(Ok(m)) => {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => tracing::debug!("cases consumer: {e}"),
                    None => break,
                }
            }
        }
    });
    Ok(CaseFeed {
        rx: Mutex::new(rx),
        held: Mutex::new(Vec::new()),
    })
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

/// Acknowledges `messages` in order, each confirmed by the server, and
/// lets go of them.
fn acknowledge(feed: Arc<CaseFeed>, messages: Vec<Message>) -> Pending<()> {
    Box::pin(async move {
        for m in &messages {
            m.double_ack()
                .await
                .map_err(|e| storage("settling case events", e))?;
        }
        let settled: std::collections::HashSet<u64> = messages.iter().map(seq_of).collect();
        feed.held
            .lock()
            .await
            .retain(|m| !settled.contains(&seq_of(m)));
        Ok(())
    })
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
            let feed = this.case_feed.clone();
            let mut held = feed.held.lock().await;
            let mut taken: Vec<Message> = held.clone();
            let mut rx = feed.rx.lock().await;
            while taken.len() < limit.max(held.len()) {
                match rx.try_recv() {
                    Ok(m) => taken.push(m),
                    Err(_) => break,
                }
            }
            drop(rx);
            // A held message the server already delivered again (its
            // ack_wait ran out) is taken once, by its newest delivery.
            taken.sort_by_key(seq_of);
            taken.reverse();
            taken.dedup_by_key(|m| seq_of(m));
            taken.reverse();
            *held = taken.clone();
            drop(held);
            let mut events = Vec::with_capacity(taken.len());
            for m in &taken {
                if let Some(e) = fed_event(m)? {
                    events.push(e);
                }
            }
            Ok(CaseTake {
                events,
                receipt: Receipt::Then(Box::new(move || acknowledge(feed, taken))),
            })
        })
    }

    fn settle_cases(&self, rows: Vec<CaseRow>, receipt: Receipt) -> Pending<()> {
        let this = self.handle();
        Box::pin(async move {
            this.put_cases(rows).await?;
            match receipt {
                Receipt::Then(settle) => settle().await,
                Receipt::Position(_) => Ok(()),
            }
        })
    }

    fn rewind_case_feed(&self) {
        // What was taken and not settled is held, and the next take
        // returns it first.
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
