//! One adapter's pooled HTTP client, and the registry that keeps each
//! adapter's client across versions.
//!
//! A client belongs to one adapter (its manifest name): its connections
//! carry that adapter's client certificate, if any, and count against that
//! adapter's `concurrency`. A new version with the same settings keeps the
//! client, so a hot swap does not drop the warm connections.

use super::connect::{authority, ConnectError, Connector};
use super::gate::Failure;
use super::tls::{self, Identity, Trust};
use crate::runtime::manifest::HttpLimits;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::capture_connection;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime_wasi_http::{Error, WasiBody};

/// What a client is built from; a new version with equal settings keeps
/// the client (and its connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Connections to one department at most (the adapter's concurrency).
    pub max_connections: usize,
    /// Connect and TLS handshake.
    pub connect_timeout: Duration,
    /// The fingerprint of its client certificate and key, if any.
    pub identity: Option<[u8; 32]>,
}

/// An adapter's client.
pub struct HttpClient {
    client: Client<Connector, WasiBody>,
    connector: Connector,
    settings: ClientSettings,
}

/// Every adapter's client, and the trust they share.
pub struct Clients {
    trust: Trust,
    idle_timeout: Duration,
    by_adapter: dashmap::DashMap<String, Arc<HttpClient>>,
}

impl Clients {
    /// A registry over `trust`; idle connections close after
    /// `idle_timeout`.
    pub fn new(trust: Trust, idle_timeout: Duration) -> Clients {
        Clients {
            trust,
            idle_timeout,
            by_adapter: dashmap::DashMap::new(),
        }
    }

    /// The trusted roots.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The client for `adapter` with these limits and client certificate:
    /// the one it has if nothing changed, a new one otherwise.
    pub fn client_for(
        &self,
        adapter: &str,
        max_connections: usize,
        timeouts: &HttpLimits,
        identity: Option<Identity>,
    ) -> Result<Arc<HttpClient>, String> {
        let settings = ClientSettings {
            max_connections,
            connect_timeout: timeouts.connect,
            identity: identity.as_ref().map(|i| i.fingerprint),
        };
        if let Some(c) = self.by_adapter.get(adapter) {
            if c.settings == settings {
                return Ok(c.clone());
            }
        }
        let tls = self.trust.client_config(identity.as_ref())?;
        let connector = Connector::new(tls, settings.connect_timeout, max_connections);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.idle_timeout)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(max_connections)
            // A request that never left on a reused connection (the
            // department closed it while it sat idle) goes again on a new one.
            .retry_canceled_requests(true)
            // The guest's `host` header (wasmtime-wasi-http sets it from the
            // authority) is the one sent.
            .set_host(false)
            .build(connector.clone());
        let client = Arc::new(HttpClient {
            client,
            connector,
            settings,
        });
        self.by_adapter.insert(adapter.to_string(), client.clone());
        Ok(client)
    }

    /// Connections `adapter`'s client has opened (0 for an adapter without
    /// one).
    pub fn connections_opened(&self, adapter: &str) -> u64 {
        self.by_adapter
            .get(adapter)
            .map(|c| c.connections_opened())
            .unwrap_or(0)
    }
}

impl HttpClient {
    /// Connections opened since the client was made.
    pub fn connections_opened(&self) -> u64 {
        self.connector.opened()
    }

    /// Sends one request. From the moment it has a connection, the answer's
    /// head must come within `first_byte`; then no pause in its body may
    /// last longer than `between_bytes`. What goes wrong is written into
    /// `failure` in words, and returned as the `wasi:http` error.
    pub async fn send(
        &self,
        mut request: http::Request<WasiBody>,
        timeouts: HttpLimits,
        failure: Failure,
    ) -> Result<http::Response<WasiBody>, Error> {
        let authority = authority(request.uri());
        let mut connected = capture_connection(&mut request);
        let response = self.client.request(request);
        tokio::pin!(response);
        // Until a connection is in hand, the connector's own timeout (and
        // the call deadline above it) bounds the wait.
        let head = tokio::select! {
            biased;
            r = &mut response => Some(r),
            _ = connected.wait_for_connection_metadata() => None,
        };
        let head = match head {
            Some(r) => r,
            None => match tokio::time::timeout(timeouts.first_byte, &mut response).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(failure.set(
                        Error::ConnectionReadTimeout,
                        format!(
                            "{authority} took the request but sent no answer within {} ms \
                             (limits.first_byte_timeout_ms)",
                            timeouts.first_byte.as_millis()
                        ),
                    ))
                }
            },
        };
        let response = head.map_err(|e| {
            let (code, detail) = request_failed(&e, &authority);
            failure.set(code, detail)
        })?;
        // An answer that says it is too long is refused before its body
        // is read.
        let limit = timeouts.max_answer_bytes;
        if let Some(declared) = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > limit)
        {
            return Err(failure.set(
                Error::HttpResponseBodySize(Some(declared)),
                too_long(&authority, &format!("declared {declared} bytes"), limit),
            ));
        }
        Ok(response.map(|incoming| {
            Answer {
                incoming,
                between: timeouts.between_bytes,
                pause: None,
                failure,
                authority,
                read: 0,
                limit,
            }
            .boxed_unsync()
        }))
    }
}

/// A request that got no answer: the connector's reason, a TLS failure
/// during the exchange (a department refusing the client certificate only
/// says so after the handshake), or what hyper saw.
fn request_failed(e: &hyper_util::client::legacy::Error, authority: &str) -> (Error, String) {
    if let Some(c) = causes(e).find_map(|c| c.downcast_ref::<ConnectError>()) {
        return (copy_code(&c.code), c.detail.clone());
    }
    if let Some(t) = tls::find(e) {
        return (tls::error_code(t), tls::explain(t, authority));
    }
    let hyper_err = causes(e).find_map(|c| c.downcast_ref::<hyper::Error>());
    let code = match hyper_err {
        Some(h) if h.is_incomplete_message() => Error::HttpResponseIncomplete,
        Some(h) if h.is_parse() => Error::HttpProtocolError,
        _ if e.is_connect() => Error::DestinationUnavailable,
        _ => Error::ConnectionTerminated,
    };
    (
        code,
        format!("{authority}: the request failed: {}", chain(e)),
    )
}

/// An error and its causes, outermost first.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// An error with its causes, in one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    causes(e)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// wasmtime-wasi-http's error is not `Clone`; the connector's codes are
/// the simple ones.
fn copy_code(code: &Error) -> Error {
    match code {
        Error::ConnectionRefused => Error::ConnectionRefused,
        Error::ConnectionTimeout => Error::ConnectionTimeout,
        Error::TlsCertificateError => Error::TlsCertificateError,
        Error::TlsAlertReceived {
            alert_id,
            alert_message,
        } => Error::TlsAlertReceived {
            alert_id: *alert_id,
            alert_message: alert_message.clone(),
        },
        Error::TlsProtocolError => Error::TlsProtocolError,
        Error::DnsError { rcode, info_code } => Error::DnsError {
            rcode: rcode.clone(),
            info_code: *info_code,
        },
        Error::DestinationUnavailable => Error::DestinationUnavailable,
        _ => Error::InternalError(None),
    }
}

fn too_long(authority: &str, what: &str, limit: u64) -> String {
    format!(
        "{authority} answered more than {limit} bytes ({what}; limits.max_answer_bytes): \
         the answer was not read"
    )
}

/// The department's answer body, with the between-bytes timeout and the
/// size limit.
struct Answer {
    incoming: hyper::body::Incoming,
    between: Duration,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    failure: Failure,
    authority: String,
    /// Bytes of the body so far, and the most allowed.
    read: u64,
    limit: u64,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.pause = None;
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.read > this.limit {
                        let detail = too_long(
                            &this.authority,
                            &format!("{} bytes read so far", this.read),
                            this.limit,
                        );
                        return Poll::Ready(Some(Err(this
                            .failure
                            .set(Error::HttpResponseBodySize(Some(this.read)), detail))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.pause = None;
                let cut_short = e.is_incomplete_message()
                    || causes(&e).any(|c| {
                        c.downcast_ref::<std::io::Error>()
                            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
                    });
                let (code, what) = if cut_short {
                    (
                        Error::HttpResponseIncomplete,
                        "the answer ended before its Content-Length",
                    )
                } else {
                    (Error::ConnectionTerminated, "reading the answer failed")
                };
                let detail = format!("{}: {what} ({})", this.authority, chain(&e));
                Poll::Ready(Some(Err(this.failure.set(code, detail))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let between = this.between;
                let pause = this
                    .pause
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(between)));
                match pause.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let detail = format!(
                            "{} stopped sending its answer: nothing for {} ms \
                             (limits.between_bytes_timeout_ms)",
                            this.authority,
                            between.as_millis()
                        );
                        Poll::Ready(Some(Err(this
                            .failure
                            .set(Error::ConnectionReadTimeout, detail))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
