//! How the spans leave: the batch processor's one thread hands each batch
//! to the hub's runtime, where the OTLP exporter sends it (tonic's gRPC
//! channel and hyper both need that runtime; the processor's thread has
//! none). Over HTTP the hub's own pooled client sends, so `[tls]` applies.

use crate::config::TlsConfig;
use crate::runtime::outbound::connect::Connector;
use crate::runtime::outbound::{Trust, TrustConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An exporter whose sends run on the hub's runtime, whoever calls it;
/// a failed export is logged once (naming the collector and the cause),
/// and so is the first that succeeds after it.
#[derive(Debug)]
pub struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: tokio::runtime::Handle,
    endpoint: String,
    failing: AtomicBool,
}

impl<E> OnRuntime<E> {
    /// `inner`, its exports spawned on `runtime`, sending to `endpoint`.
    pub fn new(inner: E, runtime: tokio::runtime::Handle, endpoint: String) -> OnRuntime<E> {
        OnRuntime {
            inner: Arc::new(inner),
            runtime,
            endpoint,
            failing: AtomicBool::new(false),
        }
    }
}

impl<E: SpanExporter + Sync + 'static> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        let spans = batch.len();
        let result = match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(result) => result,
            Err(e) => Err(OTelSdkError::InternalFailure(format!(
                "the export did not finish: {e}"
            ))),
        };
        // Outside any span: these lines are not exported themselves.
        match &result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                endpoint = %self.endpoint,
                spans,
                "telemetry: spans not exported (dropped; the hub carries on): {e}"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "telemetry: exporting again")
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.shutdown_with_timeout(timeout),
            // An export still holds it: it ends with its own deadline.
            None => Ok(()),
        }
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.force_flush(),
            None => Ok(()),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, when the provider is built: nothing shares it yet.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// The OTLP/HTTP sender: a pooled keep-alive client over the hub's
/// connector (rustls, the roots `[tls]` names).
pub struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// A client trusting what `tls` trusts, each send given `timeout`.
    pub fn new(tls: &TlsConfig, timeout: Duration) -> anyhow::Result<HttpClient> {
        let trust = Trust::load(&trust_config(tls)).map_err(anyhow::Error::msg)?;
        let connector = Connector::new(
            trust.client_config(None).map_err(anyhow::Error::msg)?,
            Duration::from_secs(10),
            // One export at a time; a second connection for overlap.
            2,
        );
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HttpClient { client, timeout })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let send = async {
            let response = self.client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis()).into()),
        }
    }
}

fn trust_config(tls: &TlsConfig) -> TrustConfig {
    TrustConfig {
        system_roots: tls.system_roots,
        ca_files: tls.ca_files.clone(),
    }
}

/// gRPC over TLS: the system's roots and the CA files of `[tls]`.
pub fn grpc_tls(
    tls: &TlsConfig,
) -> anyhow::Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    let mut config = ClientTlsConfig::new();
    if tls.system_roots {
        config = config.with_native_roots();
    }
    for file in &tls.ca_files {
        let pem = std::fs::read(file)
            .map_err(|e| anyhow::anyhow!("tls.ca_files: cannot read {}: {e}", file.display()))?;
        config = config.ca_certificate(Certificate::from_pem(pem));
    }
    Ok(config)
}
