//! The connector under an adapter's pooled client: TCP (and TLS for
//! `https`) to one department, at most `max_per_authority` connections to
//! each at once.
//!
//! hyper-util's pool starts a new connection whenever a request finds no
//! idle one, even if one is about to come back; without a cap, a busy
//! adapter would open far more connections than it runs calls, and a small
//! department server (or its connection limit) would see them all. Each
//! connection holds a permit of its department's semaphore until it closes,
//! so an adapter never has more connections to a department than its
//! `concurrency`; a connect that waits for a permit is overtaken by the
//! connection that comes back idle first.

use super::tls;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a connection could not be opened, in words naming the department.
#[derive(Debug)]
pub struct ConnectError {
    /// What kind of failure, for the adapter's error code.
    pub code: wasmtime_wasi_http::Error,
    /// What happened, naming the host.
    pub detail: String,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for ConnectError {}

/// Opens connections for one adapter.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    max_per_authority: usize,
    slots: dashmap::DashMap<String, Arc<Semaphore>>,
    opened: AtomicU64,
}

impl Connector {
    /// A connector with its TLS configuration, connect timeout and cap.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        max_per_authority: usize,
    ) -> Connector {
        Connector {
            inner: Arc::new(Inner {
                tls,
                connect_timeout,
                max_per_authority: max_per_authority.max(1),
                slots: dashmap::DashMap::new(),
                opened: AtomicU64::new(0),
            }),
        }
    }

    /// Connections opened since it was made.
    pub fn opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.connect(uri).await })
    }
}

impl Inner {
    async fn connect(&self, uri: http::Uri) -> Result<Conn, ConnectError> {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = uri.host().unwrap_or_default();
        let authority = authority(&uri);
        let slot = self
            .slots
            .entry(authority.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_per_authority)))
            .clone();
        // Never closed, so acquiring fails only if it were.
        let permit = slot.acquire_owned().await.map_err(|_| ConnectError {
            code: wasmtime_wasi_http::Error::InternalError(None),
            detail: format!("{authority}: the connection pool is closed"),
        })?;
        let timeout = self.connect_timeout;
        let timed_out = || ConnectError {
            code: wasmtime_wasi_http::Error::ConnectionTimeout,
            detail: format!(
                "no connection to {authority} within {} ms (limits.connect_timeout_ms)",
                timeout.as_millis()
            ),
        };
        let work =
            async {
                let tcp = TcpStream::connect(&authority)
                    .await
                    .map_err(|e| connect_failed(&authority, &e))?;
                let _ = tcp.set_nodelay(true);
                if !https {
                    return Ok(Stream::Plain(tcp));
                }
                let name = host.trim_start_matches('[').trim_end_matches(']');
                let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| ConnectError {
                        code: wasmtime_wasi_http::Error::DnsError {
                            rcode: Some("invalid dns name".into()),
                            info_code: None,
                        },
                        detail: format!(
                            "{authority}: `{name}` is not a valid TLS server name: {e}"
                        ),
                    })?;
                let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| match tls::find(&e) {
                        Some(t) => ConnectError {
                            code: tls::error_code(t),
                            detail: tls::explain(t, &authority),
                        },
                        None => ConnectError {
                            code: wasmtime_wasi_http::Error::TlsProtocolError,
                            detail: format!("TLS with {authority} failed: {e}"),
                        },
                    })?;
                Ok(Stream::Tls(Box::new(stream)))
            };
        let stream = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| timed_out())??;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            io: TokioIo::new(stream),
            _permit: permit,
        })
    }
}

/// `host:port` of a request, the port filled in from the scheme.
pub fn authority(uri: &http::Uri) -> String {
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    format!("{host}:{port}")
}

fn connect_failed(authority: &str, e: &io::Error) -> ConnectError {
    use wasmtime_wasi_http::Error as E;
    let code = match e.kind() {
        io::ErrorKind::ConnectionRefused => E::ConnectionRefused,
        io::ErrorKind::TimedOut => E::ConnectionTimeout,
        _ if e.to_string().contains("lookup") => E::DnsError {
            rcode: Some("address not available".into()),
            info_code: None,
        },
        _ => E::DestinationUnavailable,
    };
    ConnectError {
        code,
        detail: format!("cannot connect to {authority}: {e}"),
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One open connection; its permit goes back when hyper drops it.
pub struct Conn {
    io: TokioIo<Stream>,
    _permit: OwnedSemaphorePermit,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service;

    /// A department that accepts connections and keeps them, saying
    /// nothing.
    async fn quiet_department() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut keep = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                keep.push(s);
            }
        });
        addr
    }

    fn connector(timeout_ms: u64, cap: usize) -> Connector {
        let trust = super::super::Trust::load(&super::super::TrustConfig::default()).unwrap();
        Connector::new(
            trust.client_config(None).unwrap(),
            Duration::from_millis(timeout_ms),
            cap,
        )
    }

    #[tokio::test]
    async fn no_more_than_the_cap_is_open_to_one_department() {
        let addr = quiet_department().await;
        let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
        let mut c = connector(1000, 2);
        let first = c.call(uri.clone()).await.unwrap();
        let _second = c.call(uri.clone()).await.unwrap();
        let mut third = tokio::spawn({
            let mut c = c.clone();
            let uri = uri.clone();
            async move { c.call(uri).await.map(|_conn| ()) }
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut third)
                .await
                .is_err(),
            "a third connection opened past the cap of 2"
        );
        assert_eq!(c.opened(), 2);
        // One closes: the waiting connect goes ahead.
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the third connect went ahead once one closed")
            .unwrap()
            .unwrap();
        assert_eq!(c.opened(), 3);
    }

    #[tokio::test]
    async fn a_tls_handshake_that_never_comes_is_cut_at_the_connect_timeout() {
        let addr = quiet_department().await;
        let uri: http::Uri = format!("https://{addr}/").parse().unwrap();
        let started = std::time::Instant::now();
        let e = connector(150, 1).call(uri).await.err().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(
            e.code,
            wasmtime_wasi_http::Error::ConnectionTimeout
        ));
        assert!(
            e.detail.contains(&addr.to_string()) && e.detail.contains("limits.connect_timeout_ms"),
            "{}",
            e.detail
        );
        // A port nobody listens on is refused at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let uri: http::Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let e = connector(1000, 1).call(uri).await.err().unwrap();
        assert!(
            matches!(e.code, wasmtime_wasi_http::Error::ConnectionRefused),
            "{}",
            e.detail
        );
        assert!(e.detail.contains(&port.to_string()), "{}", e.detail);
    }
}
