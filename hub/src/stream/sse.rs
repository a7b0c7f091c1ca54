//! The SSE handler: replay from the journal, then follow the live feed.

use super::Filter;
use crate::config::StreamConfig;
use crate::ingress::Problem;
use crate::journal::{FeedItem, FeedSpan, Journal, JournalError};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Items read from the journal per page when a subscriber catches up. A
/// subscriber that stops reading mid-page holds the page, so it is small:
/// 64 items of about 1 KB.
const PAGE: usize = 64;

/// Items waiting in one subscriber's own queue. A subscriber that does
/// not read holds this many and no more: the feed's shared ring and the
/// journal hold the rest.
const QUEUE: usize = 16;

/// How long a browser waits before reconnecting (the SSE `retry:`): short,
/// because the stream resumes exactly where it stopped.
const RETRY: Duration = Duration::from_millis(1_000);

/// The open streams, their limit, and the switch that ends them all.
pub struct Streams {
    config: StreamConfig,
    open: AtomicUsize,
    stop: watch::Sender<bool>,
}

impl Streams {
    /// No streams yet.
    pub fn new(config: StreamConfig) -> Streams {
        Streams {
            config,
            open: AtomicUsize::new(0),
            stop: watch::Sender::new(false),
        }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Ends every stream (shutdown); later ones end at once.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

struct Context {
    journal: Arc<dyn Journal>,
    streams: Arc<Streams>,
}

/// `GET /v1/stream`.
pub fn router(journal: Arc<dyn Journal>, streams: Arc<Streams>) -> axum::Router {
    axum::Router::new()
        .route("/v1/stream", axum::routing::get(stream))
        .with_state(Arc::new(Context { journal, streams }))
}

async fn stream(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, Problem> {
    let filter = Filter::parse(&pairs).map_err(|(field, why)| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid stream filter",
            format!("query parameter `{field}`: {why}"),
        )
        .with_field(&field)
    })?;
    // A browser coming back sends the last id it saw; it wins over the
    // `after` of the URL it first opened.
    let (field, after) = match headers.get("last-event-id") {
        Some(v) => ("Last-Event-ID", Some(v.to_str().unwrap_or("?").to_string())),
        None => (
            "after",
            pairs
                .iter()
                .find(|(k, _)| k == "after")
                .map(|(_, v)| v.clone()),
        ),
    };
    let after = match after.filter(|a| !a.trim().is_empty()) {
        Some(text) => Some(text.trim().parse::<i64>().map_err(|_| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid cursor",
                format!("`{field}` must be a cursor (the `id:` of a stream item), not `{text}`"),
            )
            .with_field(field)
        })?),
        None => None,
    };
    let streams = &ctx.streams;
    let max = streams.config.max_subscribers;
    if streams.open.fetch_add(1, Ordering::SeqCst) >= max {
        streams.open.fetch_sub(1, Ordering::SeqCst);
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many streams",
            format!("{max} streams are open (stream.max_subscribers); try again later"),
        )
        .with_kind("stream-limit")
        .with_retry_after(5));
    }
    let open = Open(streams.clone());
    // Subscribe before reading the journal: what commits meanwhile is in
    // the channel, and cursors drop what the journal already gave.
    let live = ctx.journal.feed_subscribe();
    let (tx, rx) = mpsc::channel(QUEUE);
    let subscription = Subscription {
        journal: ctx.journal.clone(),
        filter,
        tx,
        live,
        stop: streams.stop.subscribe(),
        last: 0,
    };
    tokio::spawn(async move {
        let _open = open;
        subscription.run(after).await;
    });
    let keepalive = Duration::from_millis(streams.config.keepalive_ms);
    let first = futures_util::stream::once(async { Ok(Event::default().retry(RETRY)) });
    let items = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, std::convert::Infallible>(event), rx))
    });
    let sse = Sse::new(futures_util::StreamExt::chain(first, items))
        .keep_alive(KeepAlive::new().interval(keepalive));
    // Proxies (nginx) must not hold the stream back.
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}

/// Counts a stream as open while it lives.
struct Open(Arc<Streams>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The subscriber went away.
struct Gone;

struct Subscription {
    journal: Arc<dyn Journal>,
    filter: Filter,
    tx: mpsc::Sender<Event>,
    live: broadcast::Receiver<Arc<FeedItem>>,
    stop: watch::Receiver<bool>,
    /// The last cursor handled (sent or filtered out).
    last: i64,
}

impl Subscription {
    async fn run(mut self, after: Option<i64>) {
        if *self.stop.borrow() {
            return;
        }
        let started = match after {
            // No cursor: from now on.
            None => match self.span().await {
                Ok(span) => {
                    self.last = span.head;
                    Ok(())
                }
                Err(_) => Err(Gone),
            },
            Some(cursor) => {
                self.last = cursor;
                self.catch_up().await
            }
        };
        if started.is_err() {
            return;
        }
        loop {
            let item = tokio::select! {
                biased;
                _ = self.stop.changed() => return,
                _ = self.tx.closed() => return,
                item = self.live.recv() => item,
            };
            let handled = match item {
                Ok(item) if item.cursor <= self.last => Ok(()),
                // Missed something (never expected): read it back first.
                Ok(item) if item.cursor > self.last + 1 => match self.catch_up().await {
                    Ok(()) if item.cursor > self.last => self.handle(&item).await,
                    other => other,
                },
                Ok(item) => self.handle(&item).await,
                // Fell out of the shared ring: the journal has the rest.
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if handled.is_err() {
                return;
            }
        }
    }

    async fn span(&self) -> Result<FeedSpan, JournalError> {
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || journal.feed_span())
            .await
            .map_err(|e| JournalError::Storage(e.to_string()))?
    }

    /// Sends what the journal holds after `last`, page by page; a cursor
    /// the journal no longer has (or never had) gets `resync`.
    async fn catch_up(&mut self) -> Result<(), Gone> {
        loop {
            let journal = self.journal.clone();
            let after = self.last;
            let read = tokio::task::spawn_blocking(move || {
                let span = journal.feed_span()?;
                let page = journal.feed_after(after, PAGE)?;
                Ok::<_, JournalError>((span, page))
            })
            .await;
            let (span, page) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => {
                    tracing::warn!("stream: cannot read the feed: {e}");
                    return Err(Gone);
                }
                Err(_) => return Err(Gone),
            };
            let pruned = page.first().is_some_and(|i| i.cursor != after + 1)
                || (page.is_empty() && after + 1 < span.first);
            if pruned || after > span.head {
                return self.resync(span.head).await;
            }
            let full = page.len() == PAGE;
            for item in &page {
                self.handle(item).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn resync(&mut self, head: i64) -> Result<(), Gone> {
        let data = serde_json::json!({
            "cursor": head,
            "reason": "the cursor is older than what the hub keeps (stream.retain): reload the snapshot",
        });
        self.last = head;
        let event = Event::default()
            .id(head.to_string())
            .event("resync")
            .data(data.to_string());
        self.tx.send(event).await.map_err(|_| Gone)
    }

    async fn handle(&mut self, item: &FeedItem) -> Result<(), Gone> {
        self.last = item.cursor;
        if !self.filter.matches(item) {
            return Ok(());
        }
        // JSON has no raw carriage return; SSE would split on one.
        let data = if item.data.contains('\r') {
            item.data.replace('\r', "")
        } else {
            item.data.to_string()
        };
        let event = Event::default()
            .id(item.cursor.to_string())
            .event(item.kind.as_str())
            .data(data);
        self.tx.send(event).await.map_err(|_| Gone)
    }
}
