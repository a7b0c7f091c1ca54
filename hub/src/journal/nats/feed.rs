//! The change feed on JetStream: `<PREFIX>_FEED`, whose sequence is the
//! feed's cursor.
//!
//! Accepted events are not published twice: the feed stream *sources*
//! the events' subjects from the main stream (the server copies each
//! stored event over, durably and in order), and the hub publishes the
//! other kinds itself on `<root>.feed.<kind>` with the item's filter keys
//! as headers. Every node follows the stream with an ordered consumer and
//! hands what arrives to its own subscribers, so a cockpit connected to
//! any node sees every node's changes.

use super::{storage, Inner, NatsJournal};
use crate::journal::{Feed, FeedItem, FeedKeys, FeedKind, FeedSpan, JournalError, Pending};
use async_nats::jetstream::{consumer, stream};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

const TYPE: &str = "Govhub-Type";
const GRID: &str = "Govhub-Grid";
const CATEGORY: &str = "Govhub-Category";
const SEVERITY: &str = "Govhub-Severity";
const CASE: &str = "Govhub-Case";

/// How long one page read may wait for messages the stream holds.
const READ_WAIT: Duration = Duration::from_secs(5);

/// The feed stream's configuration.
pub(crate) fn stream_config(config: &super::NatsConfig, root: &str) -> stream::Config {
    stream::Config {
        name: format!("{}_FEED", config.stream_name()),
        subjects: vec![format!("{root}.feed.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        max_messages: config.feed_retain,
        sources: Some(vec![stream::Source {
            name: config.stream_name(),
            filter_subject: Some(format!("{root}.ev.>")),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// What a stored message says as a feed item.
fn item_of(
    root: &str,
    seq: u64,
    at_ms: i64,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Option<FeedItem> {
    let data: Arc<str> = String::from_utf8_lossy(payload).into();
    if subject.starts_with(&format!("{root}.ev.")) {
        let e = govhub_sdk::cloudevents::from_slice(payload).ok()?;
        return Some(FeedItem {
            cursor: seq as i64,
            at_ms,
            kind: FeedKind::Event,
            keys: FeedKeys {
                type_: Some(e.type_.clone()),
                grid: e.grid.clone(),
                category: e.category.clone(),
                severity: e.severity.map(|s| s.rank()),
                caseid: e.caseid.clone(),
            },
            data,
        });
    }
    let kind = FeedKind::parse(subject.strip_prefix(&format!("{root}.feed."))?)?;
    let get = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    Some(FeedItem {
        cursor: seq as i64,
        at_ms,
        kind,
        keys: FeedKeys {
            type_: get(TYPE),
            grid: get(GRID),
            category: get(CATEGORY),
            severity: get(SEVERITY).and_then(|s| s.parse().ok()),
            caseid: get(CASE),
        },
        data,
    })
}

fn unix_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Follows the feed stream from now on and hands each item to this node's
/// subscribers. Stops when the journal is dropped.
pub(crate) fn start_follower(
    feed: stream::Stream,
    root: String,
    tx: broadcast::Sender<Arc<FeedItem>>,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    tokio::spawn(async move {
        let mut from = consumer::DeliverPolicy::New;
        // What was handed on last: async-nats 0.51's ordered consumer,
        // recreated before its first message, starts again from the
        // stream's first, and nothing is handed on twice.
        let mut handed = feed.cached_info().state.last_sequence;
        loop {
            let messages = async {
                feed.create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy: from,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .messages()
                .await
                .map_err(|e| e.to_string())
            };
            let mut messages = tokio::select! {
                m = messages => m,
                _ = stop.changed() => return,
            };
            if let Ok(messages) = messages.as_mut() {
                loop {
                    let next = tokio::select! {
                        next = messages.next() => next,
                        _ = stop.changed() => return,
                    };
                    let Some(Ok(m)) = next else { break };
                    let Ok(info) = m.info() else { continue };
                    let seq = info.stream_sequence;
                    if seq <= handed {
                        continue;
                    }
                    handed = seq;
                    let at = unix_ms(info.published);
                    if let Some(item) =
                        item_of(&root, seq, at, &m.subject, m.headers.as_ref(), &m.payload)
                    {
                        let _ = tx.send(Arc::new(item));
                    }
                }
            }
            // Lost: follow again from the item after the last one handed on.
            from = consumer::DeliverPolicy::ByStartSequence {
                start_sequence: handed + 1,
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => return,
            }
        }
    });
}

impl Inner {
    /// Publishes an item of the hub's own; its cursor.
    pub(crate) async fn publish_feed(
        &self,
        kind: FeedKind,
        keys: &FeedKeys,
        data: String,
    ) -> Result<i64, JournalError> {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (TYPE, keys.type_.clone()),
            (GRID, keys.grid.clone()),
            (CATEGORY, keys.category.clone()),
            (SEVERITY, keys.severity.map(|s| s.to_string())),
            (CASE, keys.caseid.clone()),
        ] {
            if let Some(v) = value {
                headers.insert(name, v.as_str());
            }
        }
        let ack = self
            .js
            .publish_with_headers(
                format!("{}.feed.{}", self.subjects.root, kind.as_str()),
                headers,
                data.into(),
            )
            .await
            .map_err(|e| storage("feed", e))?
            .await
            .map_err(|e| storage("feed", e))?;
        Ok(ack.sequence as i64)
    }

    async fn span(&self) -> Result<FeedSpan, JournalError> {
        let mut feed = self.feed.clone();
        let state = &feed.info().await.map_err(|e| storage("feed", e))?.state;
        let head = state.last_sequence as i64;
        let first = if state.messages == 0 {
            head + 1
        } else {
            state.first_sequence as i64
        };
        Ok(FeedSpan { first, head })
    }

    /// The items with cursors in `from..=to` on `filter`, oldest first, at
    /// most `limit`.
    async fn read(
        &self,
        filter: Vec<String>,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<FeedItem>, JournalError> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let reader = self
            .feed
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subjects: filter,
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1) as u64,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| storage("reading the feed", e))?;
        // Nothing on the filter from `from` on: no wait for what never
        // comes.
        if reader.cached_info().num_pending == 0 {
            return Ok(Vec::new());
        }
        let mut messages = reader
            .messages()
            .await
            .map_err(|e| storage("reading the feed", e))?;
        let mut items = Vec::new();
        let root = &self.subjects.root;
        while items.len() < limit {
            let next = match tokio::time::timeout(READ_WAIT, messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(storage("reading the feed", e)),
                // Nothing more on the filter up to `to`.
                Ok(None) | Err(_) => break,
            };
            let info = next.info().map_err(|e| storage("reading the feed", e))?;
            let seq = info.stream_sequence;
            if (seq as i64) < from {
                // async-nats 0.51's ordered consumer, recreated before its
                // first message, starts again from the stream's first.
                continue;
            }
            if seq as i64 > to {
                break;
            }
            let pending = info.pending;
            let at = unix_ms(info.published);
            if let Some(item) = item_of(
                root,
                seq,
                at,
                &next.subject,
                next.headers.as_ref(),
                &next.payload,
            ) {
                items.push(item);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(items)
    }

    fn filter_of(&self, kind: FeedKind) -> String {
        match kind {
            FeedKind::Event => format!("{}.ev.>", self.subjects.root),
            other => format!("{}.feed.{}", self.subjects.root, other.as_str()),
        }
    }
}

impl Feed for NatsJournal {
    fn feed_subscribe(&self) -> broadcast::Receiver<Arc<FeedItem>> {
        self.inner.feed_tx.subscribe()
    }

    fn feed_after(&self, cursor: i64, limit: usize) -> Pending<Vec<FeedItem>> {
        let this = self.handle();
        Box::pin(async move {
            let span = this.span().await?;
            let root = this.subjects.root.clone();
            this.read(
                vec![format!("{root}.ev.>"), format!("{root}.feed.>")],
                cursor + 1,
                span.head,
                limit,
            )
            .await
        })
    }

    fn feed_latest(&self, kind: FeedKind, cursor: i64, limit: usize) -> Pending<Vec<FeedItem>> {
        let this = self.handle();
        Box::pin(async move {
            // No reading backwards in a stream: read forward from a window
            // before `cursor`, twice as wide each time it holds too few.
            let span = this.span().await?;
            let to = cursor.min(span.head);
            let mut width = (limit as i64).saturating_mul(4).max(64);
            loop {
                let from = (to - width + 1).max(span.first);
                let mut items = this
                    .read(vec![this.filter_of(kind)], from, to, usize::MAX)
                    .await?;
                if items.len() >= limit || from <= span.first {
                    items.reverse();
                    items.truncate(limit);
                    return Ok(items);
                }
                width = width.saturating_mul(2);
            }
        })
    }

    fn feed_span(&self) -> Pending<FeedSpan> {
        let this = self.handle();
        Box::pin(async move { this.span().await })
    }

    fn feed_note(&self, kind: FeedKind, keys: FeedKeys, data: String) -> Pending<i64> {
        let this = self.handle();
        Box::pin(async move { this.publish_feed(kind, &keys, data).await })
    }
}
