//! A server-sent-events client for the stream tests: opens `GET
//! /v1/stream...` with hyper on its own thread and hands each event (and
//! each keep-alive comment) to the test as it arrives.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One SSE block.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    /// `id:`.
    pub id: Option<String>,
    /// `event:` (`message` when absent).
    pub event: String,
    /// `data:` lines, joined.
    pub data: String,
    /// A comment-only block (a keep-alive).
    pub comment: bool,
    /// `retry:`.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// The cursor in `id:`.
    pub fn cursor(&self) -> i64 {
        self.id
            .as_deref()
            .and_then(|i| i.parse().ok())
            .unwrap_or(-1)
    }
    /// `data` as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }
}

enum Msg {
    Head(u16, String),
    Event(SseEvent),
    End,
}

/// An open stream; dropping it closes the connection.
pub struct SseClient {
    rx: mpsc::Receiver<Msg>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The response status.
    pub status: u16,
    /// The response body when the status is not 200.
    pub body: String,
    ended: bool,
}

fn parse(block: &str) -> SseEvent {
    let mut e = SseEvent {
        event: "message".into(),
        comment: true,
        ..Default::default()
    };
    let mut data = Vec::new();
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        e.comment = false;
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => e.id = Some(value.to_string()),
            "event" => e.event = value.to_string(),
            "data" => data.push(value.to_string()),
            "retry" => e.retry = value.parse().ok(),
            _ => {}
        }
    }
    e.data = data.join("\n");
    e
}

impl SseClient {
    /// Opens `base` + `path`, with `Last-Event-ID` when given; returns
    /// once the response head arrived.
    pub fn open(base: &str, path: &str, last_event_id: Option<&str>) -> SseClient {
        let addr = base.trim_start_matches("http://").to_string();
        let path = path.to_string();
        let last = last_event_id.map(str::to_string);
        let (tx, rx) = mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use http_body_util::BodyExt;
                let Ok(tcp) = tokio::net::TcpStream::connect(&addr).await else {
                    let _ = tx.send(Msg::End);
                    return;
                };
                let io = hyper_util::rt::TokioIo::new(tcp);
                let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
                    let _ = tx.send(Msg::End);
                    return;
                };
                tokio::spawn(conn);
                let mut req = hyper::Request::get(path.as_str())
                    .header("host", addr.as_str())
                    .header("accept", "text/event-stream");
                if let Some(l) = &last {
                    req = req.header("last-event-id", l.as_str());
                }
                let req = req
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let Ok(res) = sender.send_request(req).await else {
                    let _ = tx.send(Msg::End);
                    return;
                };
                let status = res.status().as_u16();
                let mut body = res.into_body();
                if status != 200 {
                    let text = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let _ = tx.send(Msg::Head(status, String::from_utf8_lossy(&text).into()));
                    return;
                }
                let _ = tx.send(Msg::Head(status, String::new()));
                let mut buf = String::new();
                loop {
                    let frame = tokio::select! {
                        _ = &mut stopped => return,
                        f = body.frame() => f,
                    };
                    match frame {
                        Some(Ok(f)) => {
                            if let Some(bytes) = f.data_ref() {
                                buf.push_str(&String::from_utf8_lossy(bytes));
                                while let Some(end) = buf.find("\n\n") {
                                    let block: String = buf.drain(..end + 2).collect();
                                    if tx.send(Msg::Event(parse(block.trim_end()))).is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                        _ => {
                            let _ = tx.send(Msg::End);
                            return;
                        }
                    }
                }
            });
        });
        let (status, body) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Msg::Head(status, body)) => (status, body),
            _ => (0, String::new()),
        };
        SseClient {
            rx,
            stop: Some(stop),
            status,
            body,
            ended: false,
        }
    }

    /// The next block within `timeout`, keep-alives and `retry:` included;
    /// `None` when none came or the stream ended.
    pub fn next_block(&mut self, timeout: Duration) -> Option<SseEvent> {
        match self.rx.recv_timeout(timeout) {
            Ok(Msg::Event(e)) => Some(e),
            Ok(Msg::End) => {
                self.ended = true;
                None
            }
            _ => None,
        }
    }

    /// The next item with data (events, cases, resync, ...).
    pub fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let e = self.next_block(left)?;
            if !e.comment && !e.data.is_empty() {
                return Some(e);
            }
        }
    }

    /// Items of `kind` until `n` of them came, or panics after `timeout`.
    pub fn take(&mut self, kind: &str, n: usize, timeout: Duration) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!("{} of {n} `{kind}` items within {timeout:?}", got.len())
                });
            match self.next(left) {
                Some(e) if e.event == kind => got.push(e),
                Some(_) => {}
                None => panic!(
                    "the stream {} after {} of {n} `{kind}` items",
                    if self.ended { "ended" } else { "went quiet" },
                    got.len()
                ),
            }
        }
        got
    }

    /// Whether the server ended the stream within `timeout`.
    pub fn ends_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.ended {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            match self.rx.recv_timeout(left) {
                Ok(Msg::End) | Err(mpsc::RecvTimeoutError::Disconnected) => self.ended = true,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
        true
    }
}

impl Drop for SseClient {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
