//! The gate every outbound request of an adapter passes: the allowlist,
//! then the adapter's pooled client.

use super::client::HttpClient;
use crate::runtime::manifest::{HostPattern, HttpLimits};
use std::future::Future;
use std::sync::{Arc, Mutex};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// What one adapter may reach, and how.
pub struct Policy {
    /// The adapter's name, for log lines.
    pub adapter: String,
    /// Its `outbound_hosts`.
    pub allowed: Vec<HostPattern>,
    /// Its pooled client.
    pub client: Arc<HttpClient>,
    /// Its timeouts; a guest may ask for shorter ones, never longer.
    pub timeouts: HttpLimits,
}

/// The last transport failure of the current call, in words naming the
/// host and the cause, for the hub to add to the adapter's error.
#[derive(Clone)]
pub struct Failure {
    adapter: Arc<str>,
    slot: Arc<Mutex<Option<String>>>,
}

impl Failure {
    /// An empty record for `adapter`'s calls.
    pub fn new(adapter: &str) -> Failure {
        Failure {
            adapter: adapter.into(),
            slot: Arc::default(),
        }
    }

    /// Records `detail` (and logs it: the adapter, hosts and causes, never
    /// payloads), and gives back `code` to report to the adapter.
    pub fn set(
        &self,
        code: wasmtime_wasi_http::Error,
        detail: String,
    ) -> wasmtime_wasi_http::Error {
        tracing::warn!(adapter = %self.adapter, "outbound HTTP: {detail}");
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(detail);
        }
        code
    }

    /// Takes what was recorded.
    pub fn take(&self) -> Option<String> {
        self.slot.lock().ok().and_then(|mut s| s.take())
    }
}

/// One instance's gate.
pub struct Gate {
    policy: Arc<Policy>,
    /// The last host refused in the current call.
    pub denied: Option<String>,
    /// The last transport failure in the current call.
    pub failure: Failure,
    /// The trace context the current call's requests carry
    /// (`traceparent`, `tracestate`), unless the adapter set its own.
    pub trace: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Gate {
    /// A gate enforcing `policy`.
    pub fn new(policy: Arc<Policy>) -> Gate {
        Gate {
            failure: Failure::new(&policy.adapter),
            policy,
            denied: None,
            trace: Vec::new(),
        }
    }

    /// Forgets the previous call's refusal and failure.
    pub fn reset(&mut self) {
        self.denied = None;
        self.failure.take();
        self.trace.clear();
    }
}

impl WasiHttpHooks for Gate {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        _ = fut;
        let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let allowed = self
            .policy
            .allowed
            .iter()
            .any(|p| p.allows(&authority, https));
        if !allowed {
            tracing::warn!(adapter = %self.policy.adapter, host = %authority, "outbound HTTP denied: host not in outbound_hosts");
            self.denied = Some(authority);
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // The call's trace context, unless the adapter gave its own.
        if !request
            .headers()
            .contains_key(crate::telemetry::TRACEPARENT)
        {
            for (name, value) in &self.trace {
                if !request.headers().contains_key(name) {
                    request.headers_mut().insert(name.clone(), value.clone());
                }
            }
        }
        let mut timeouts = self.policy.timeouts;
        if let Some(o) = options {
            let shorter = |mine: &mut std::time::Duration, asked: Option<std::time::Duration>| {
                if let Some(a) = asked.filter(|a| !a.is_zero()) {
                    *mine = (*mine).min(a);
                }
            };
            shorter(&mut timeouts.first_byte, o.first_byte_timeout);
            shorter(&mut timeouts.between_bytes, o.between_bytes_timeout);
        }
        let client = self.policy.client.clone();
        let failure = self.failure.clone();
        Box::new(async move {
            let response = client.send(request, timeouts, failure).await?;
            // The connection is driven by the client's pool, not by this
            // request: nothing is left to run once the answer is read.
            Ok((
                response,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}
