//! The SSE handler: replay from the journal, then follow the live feed.
//!
//! Each live item is rendered as its SSE frame once, by one fan-out task,
//! and the same bytes go to every subscriber that wants it. A subscriber
//! takes everything that is waiting at once (a group commit's items come
//! together) and writes it as one chunk, so a hundred subscribers cost a
//! hundred writes per burst, not per item.

use super::Filter;
use crate::auth::policy::Routes;
use crate::auth::Caller;
use crate::config::StreamConfig;
use crate::governance::{Audience, Governance};
use crate::ingress::Problem;
use crate::journal::{Feed, FeedItem, FeedKind, FeedSpan, JournalError};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Items read from the journal per page when a subscriber catches up. A
/// subscriber that stops reading mid-page holds the page, so it is small:
/// 64 items of about 1 KB.
const PAGE: usize = 64;

/// The most one write to a subscriber carries; more waiting is written
/// in further chunks.
const CHUNK: usize = 32 * 1024;

/// Chunks waiting for one subscriber's socket. A subscriber that does not
/// read holds this many (and one being filled) and no more: the shared
/// ring and the journal hold the rest.
const QUEUE: usize = 2;

/// How long a browser waits before reconnecting (the SSE `retry:`): short,
/// because the stream resumes exactly where it stopped.
const RETRY: Duration = Duration::from_millis(1_000);

/// A live item and its SSE frame, rendered once for every subscriber.
struct Frame {
    item: Arc<FeedItem>,
    bytes: Bytes,
}

/// An item as an SSE frame: `id:` its cursor, `event:` its kind, its JSON
/// as `data:` (a line each, should it hold a newline; carriage returns,
/// which SSE would split on, dropped). An event is as viewers may see it
/// (`[governance.viewers]`): the stream is theirs.
fn render(item: &FeedItem, governance: &Governance) -> Bytes {
    let viewed;
    let data: &str = if item.kind == FeedKind::Event && governance.enabled() {
        viewed = governance.read_json(&item.data, Audience::Viewers);
        &viewed
    } else {
        &item.data
    };
    let mut out = BytesMut::with_capacity(data.len() + 48);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(item.cursor.to_string().as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(item.kind.as_str().as_bytes());
    out.extend_from_slice(b"\n");
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        if line.contains('\r') {
            out.extend_from_slice(line.replace('\r', "").as_bytes());
        } else {
            out.extend_from_slice(line.as_bytes());
        }
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
    out.freeze()
}

/// The open streams, their limit, the shared live ring, and the switch
/// that ends them all.
pub struct Streams {
    config: StreamConfig,
    governance: Arc<Governance>,
    open: AtomicUsize,
    stop: watch::Sender<bool>,
    live: OnceLock<broadcast::Sender<Arc<Frame>>>,
}

impl Streams {
    /// No streams yet; events on them are as `governance` lets viewers
    /// see them.
    pub fn new(config: StreamConfig, governance: Arc<Governance>) -> Streams {
        Streams {
            config,
            governance,
            open: AtomicUsize::new(0),
            stop: watch::Sender::new(false),
            live: OnceLock::new(),
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

    /// A receiver of the rendered live feed; the first call starts the
    /// task that renders it (inside the server's runtime).
    fn live(&self, journal: &Arc<dyn Feed>) -> broadcast::Receiver<Arc<Frame>> {
        self.live
            .get_or_init(|| {
                let mut from = journal.feed_subscribe();
                let (tx, _) = broadcast::channel(self.config.buffer.max(1));
                let out = tx.clone();
                let mut stop = self.stop.subscribe();
                let governance = self.governance.clone();
                tokio::spawn(async move {
                    if *stop.borrow_and_update() {
                        return;
                    }
                    loop {
                        let item = tokio::select! {
                            _ = stop.changed() => return,
                            item = from.recv() => item,
                        };
                        match item {
                            // Nobody watching: nothing to render.
                            Ok(_) if out.receiver_count() == 0 => {}
                            Ok(item) => {
                                let bytes = render(&item, &governance);
                                let _ = out.send(Arc::new(Frame { item, bytes }));
                            }
                            // Subscribers see the gap in the cursors and
                            // read it from the journal.
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                });
                tx
            })
            .subscribe()
    }
}

struct Context {
    journal: Arc<dyn Feed>,
    streams: Arc<Streams>,
}

/// `GET /v1/stream`.
pub fn router(journal: Arc<dyn Feed>, streams: Arc<Streams>) -> Routes {
    Routes::new()
        .add("GET", "/v1/stream", stream)
        .with_state(Arc::new(Context { journal, streams }))
}

/// Ends when the hub stops or, for a stream opened with a cockpit
/// session, when the session ends (signed out, expired): a receiver that
/// flips to `true` then.
fn stop_for(streams: &Streams, caller: &Caller) -> watch::Receiver<bool> {
    let Some(session) = caller.session().cloned() else {
        return streams.stop.subscribe();
    };
    let mut hub_stop = streams.stop.subscribe();
    let (tx, rx) = watch::channel(*hub_stop.borrow());
    tokio::spawn(async move {
        tokio::select! {
            _ = hub_stop.wait_for(|s| *s) => {}
            _ = session.ended() => {}
            // The stream ended first: nobody is listening.
            _ = tx.closed() => return,
        }
        tx.send_replace(true);
    });
    rx
}

async fn stream(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
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
    let after =
        match after.filter(|a| !a.trim().is_empty()) {
            Some(text) => Some(
                text.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|c| *c >= 0)
                    .ok_or(())
                    .map_err(|_| {
                        Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid cursor",
                format!("`{field}` must be a cursor (the `id:` of a stream item), not `{text}`"),
            )
            .with_field(field)
                    })?,
            ),
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
    let live = streams.live(&ctx.journal);
    let (tx, rx) = mpsc::channel(QUEUE);
    let subscription = Subscription {
        journal: ctx.journal.clone(),
        governance: streams.governance.clone(),
        filter,
        tx,
        live,
        stop: stop_for(streams, &caller),
        last: 0,
        told: 0,
        pending: BytesMut::new(),
        keepalive: Duration::from_millis(streams.config.keepalive_ms),
        coalesce: Duration::from_millis(streams.config.coalesce_ms),
        looked: tokio::time::Instant::now()
            .checked_sub(Duration::from_millis(streams.config.coalesce_ms))
            .unwrap_or_else(tokio::time::Instant::now),
        written: tokio::time::Instant::now(),
    };
    tokio::spawn(async move {
        let _open = open;
        subscription.run(after).await;
    });
    let first = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("retry: {}\n\n", RETRY.as_millis())))
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frames| (Ok(frames), rx))
    });
    let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(first, frames));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // Proxies (nginx) must not hold the stream back.
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}

/// Counts a stream as open while it lives.
struct Open(Arc<Streams>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The subscriber went away (or the hub is stopping).
struct Gone;

struct Subscription {
    journal: Arc<dyn Feed>,
    governance: Arc<Governance>,
    filter: Filter,
    tx: mpsc::Sender<Bytes>,
    live: broadcast::Receiver<Arc<Frame>>,
    stop: watch::Receiver<bool>,
    /// The last cursor handled (sent or filtered out).
    last: i64,
    /// The last cursor the client was given as an `id:`: what it would
    /// resume after.
    told: i64,
    /// Frames not yet handed to the socket.
    pending: BytesMut,
    keepalive: Duration,
    /// A busy stream looks at the live ring at most this often.
    coalesce: Duration,
    /// When it last did.
    looked: tokio::time::Instant,
    /// When the last write went out (a keep-alive follows a quiet spell).
    written: tokio::time::Instant,
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
                (self.last, self.told) = (cursor, cursor);
                self.catch_up().await
            }
        };
        // The client gets its place at once, so a reconnect before the
        // first item that passes its filter resumes from here.
        if started.is_err() || self.tell().await.is_err() {
            return;
        }
        while self.follow().await.is_ok() {}
    }

    /// Waits for the next live item (or a quiet `keepalive`), then takes
    /// every item already waiting and writes them together.
    async fn follow(&mut self) -> Result<(), Gone> {
        let first = tokio::select! {
            biased;
            _ = self.stop.changed() => return Err(Gone),
            _ = self.tx.closed() => return Err(Gone),
            _ = tokio::time::sleep_until(self.written + self.keepalive) => {
                // Where the filter has let nothing through for a while,
                // the keep-alive moves the client's place on.
                self.mark();
                self.pending.extend_from_slice(b":\n\n");
                return self.flush().await;
            }
            item = self.live.recv() => item,
        };
        // Busy: wait out the interval since the last look at the ring, and
        // take what came meanwhile with it; a subscriber wakes at most
        // once an interval, whatever the rate. Quiet: at once.
        let due = self.looked + self.coalesce;
        if tokio::time::Instant::now() < due {
            tokio::select! {
                biased;
                _ = self.stop.changed() => return Err(Gone),
                _ = self.tx.closed() => return Err(Gone),
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        self.looked = tokio::time::Instant::now();
        self.take_all(first).await?;
        self.flush().await
    }

    /// The next live item if one is waiting.
    fn try_next(&mut self) -> Option<Result<Arc<Frame>, broadcast::error::RecvError>> {
        use broadcast::error::{RecvError, TryRecvError};
        match self.live.try_recv() {
            Ok(frame) => Some(Ok(frame)),
            Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
            Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
            Err(TryRecvError::Empty) => None,
        }
    }

    /// Takes `first` and every live item already waiting behind it.
    async fn take_all(
        &mut self,
        first: Result<Arc<Frame>, broadcast::error::RecvError>,
    ) -> Result<(), Gone> {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Ok(frame) => self.take(&frame).await?,
                // Fell out of the shared ring: the journal has the rest.
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await?,
                Err(broadcast::error::RecvError::Closed) => {
                    self.flush().await?;
                    return Err(Gone);
                }
            }
            next = self.try_next();
        }
        Ok(())
    }

    /// One live frame, in cursor order.
    async fn take(&mut self, frame: &Frame) -> Result<(), Gone> {
        let cursor = frame.item.cursor;
        if cursor <= self.last {
            return Ok(());
        }
        if cursor > self.last + 1 {
            // Missed something (never expected): read it back first.
            self.catch_up().await?;
            if cursor <= self.last {
                return Ok(());
            }
        }
        self.last = cursor;
        if self.filter.matches(&frame.item) {
            self.push(&frame.bytes).await?;
            self.told = cursor;
        }
        Ok(())
    }

    /// An `id:`-only frame with the last cursor handled, if the client's
    /// place is behind it (filtered-out items): a browser takes it as its
    /// `Last-Event-ID` and dispatches nothing.
    fn mark(&mut self) {
        if self.last > self.told {
            self.pending
                .extend_from_slice(format!("id: {}\n\n", self.last).as_bytes());
            self.told = self.last;
        }
    }

    /// [`Self::mark`], written now.
    async fn tell(&mut self) -> Result<(), Gone> {
        self.mark();
        self.flush().await
    }

    async fn span(&self) -> Result<FeedSpan, JournalError> {
        self.journal.feed_span().await
    }

    /// Sends what the journal holds after `last`, page by page; a cursor
    /// the journal no longer has (or never had) gets `resync`.
    async fn catch_up(&mut self) -> Result<(), Gone> {
        loop {
            // A filter that passes nothing never waits on the socket: see
            // the hub stopping and the client leaving here.
            if *self.stop.borrow() || self.tx.is_closed() {
                return Err(Gone);
            }
            let after = self.last;
            let read = async {
                let span = self.journal.feed_span().await?;
                let page = self.journal.feed_after(after, PAGE).await?;
                Ok::<_, JournalError>((span, page))
            };
            let (span, page) = match read.await {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!("stream: cannot read the feed: {e}");
                    return Err(Gone);
                }
            };
            let pruned = page.first().is_some_and(|i| i.cursor != after + 1)
                || (page.is_empty() && after.saturating_add(1) < span.first);
            if pruned || after > span.head {
                return self.resync(span.head).await;
            }
            let full = page.len() == PAGE;
            for item in &page {
                self.last = item.cursor;
                if self.filter.matches(item) {
                    self.push(&render(item, &self.governance)).await?;
                    self.told = item.cursor;
                }
            }
            self.flush().await?;
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
        (self.last, self.told) = (head, head);
        let frame = format!("id: {head}\nevent: resync\ndata: {data}\n\n");
        self.pending.extend_from_slice(frame.as_bytes());
        self.flush().await
    }

    /// Adds a frame to the chunk being filled; a full chunk goes out.
    async fn push(&mut self, frame: &[u8]) -> Result<(), Gone> {
        if !self.pending.is_empty() && self.pending.len() + frame.len() > CHUNK {
            self.flush().await?;
        }
        self.pending.extend_from_slice(frame);
        Ok(())
    }

    /// Hands the chunk to the socket, waiting while the subscriber's queue
    /// is full (it reads slowly); the hub stopping ends the wait.
    async fn flush(&mut self) -> Result<(), Gone> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = self.pending.split().freeze();
        self.written = tokio::time::Instant::now();
        tokio::select! {
            biased;
            _ = self.stop.changed() => Err(Gone),
            sent = self.tx.send(chunk) => sent.map_err(|_| Gone),
        }
    }
}
