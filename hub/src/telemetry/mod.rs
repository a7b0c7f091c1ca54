//! Traces: the hub's spans exported over OTLP, and the W3C trace context
//! carried from the sender through the journal to every department.
//!
//! Off by default (`[telemetry] enabled`). When on, `tracing`'s spans of
//! the hub become OpenTelemetry spans (`tracing-opentelemetry`), batched
//! on one exporter thread and sent over gRPC or HTTP/protobuf; the sends
//! themselves run on the hub's runtime. When off, no exporter, thread or
//! span processor exists, and the spans below `info` are not even made.
//!
//! The spans of one incident:
//! - `ingest` (a request bringing events in; its parent the sender's
//!   `traceparent` header, or else the first event's CloudEvents
//!   `traceparent` extension);
//! - `route` per event, and `journal.commit` for the request's events;
//! - `deliver` per delivery attempt, whose parent is the trace context
//!   stored with the event (its `traceparent` extension);
//! - `adapter.call` per call of an adapter, whose log lines become its
//!   span events, and whose outbound requests carry its `traceparent`.
//!
//! Attributes are identifiers and outcomes: `govhub.event.id`,
//! `govhub.case.id`, `govhub.adapter`, `govhub.outcome` and the like, never
//! an event's data. Span events are the hub's log lines, which data
//! governance has already scrubbed.
//!
//! With telemetry off a `traceparent` still travels: the sender's is
//! stored with the event and handed on to the departments unchanged.

mod export;
pub mod propagate;

use crate::config::{TelemetryConfig, TlsConfig};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use std::time::Duration;

pub use propagate::{TraceContext, TRACEPARENT, TRACESTATE};

use govhub_sdk::Event;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this process exports traces (set once, at start).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces: the spans' contexts are worth
/// reading only then.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// For a request bringing `events` in, in `span`: the sender's trace
/// becomes the span's parent (the request's `traceparent` header, else
/// the first event's extension), and an event without a trace context of
/// its own takes the request's (stored with it, so its deliveries carry
/// it on, traces on or off). An event in another trace is linked from its
/// own `route` span. Returns the request's context, for events made later
/// in the span.
pub fn adopt(
    span: &tracing::Span,
    headers: &http::HeaderMap,
    events: &mut [Event],
) -> Option<TraceContext> {
    let request = TraceContext::from_headers(headers);
    inherit(request.as_ref(), events);
    if active() {
        let parent = request
            .clone()
            .or_else(|| events.iter().find_map(TraceContext::from_event));
        propagate::follow(span, parent.as_ref());
    }
    request
}

/// Gives `context` to each of `events` that has no valid one of its own.
pub fn inherit(context: Option<&TraceContext>, events: &mut [Event]) {
    let Some(context) = context else { return };
    for e in events {
        if TraceContext::from_event(e).is_none() {
            context.store(e);
        }
    }
}

/// The two OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (default port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318).
    HttpProtobuf,
}

impl Protocol {
    fn parse(text: &str, key: &str) -> anyhow::Result<Protocol> {
        match text.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => {
                anyhow::bail!("{key} `{other}`: the hub exports over `grpc` or `http/protobuf`")
            }
        }
    }

    /// Its name in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Where and how the spans go, the config and the environment resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The transport.
    pub protocol: Protocol,
    /// The full URL (for HTTP, of `/v1/traces`).
    pub endpoint: String,
}

const TRACES_PATH: &str = "/v1/traces";

/// Whether traces are on: `[telemetry] enabled`, unless the standard
/// `OTEL_SDK_DISABLED=true` says otherwise.
pub fn enabled(config: &TelemetryConfig) -> bool {
    config.enabled && !env_is_true("OTEL_SDK_DISABLED")
}

fn env_is_true(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The protocol and endpoint: `[telemetry]` first, then the standard
/// variables, then OpenTelemetry's defaults.
pub fn target(config: &TelemetryConfig) -> anyhow::Result<Target> {
    let protocol = match &config.protocol {
        Some(p) => Protocol::parse(p, "telemetry.protocol")?,
        None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(p) => Protocol::parse(&p, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")?,
            None => match env("OTEL_EXPORTER_OTLP_PROTOCOL") {
                Some(p) => Protocol::parse(&p, "OTEL_EXPORTER_OTLP_PROTOCOL")?,
                None => Protocol::HttpProtobuf,
            },
        },
    };
    let base = |url: String| match protocol {
        Protocol::HttpProtobuf if !url.trim_end_matches('/').ends_with(TRACES_PATH) => {
            format!("{}{TRACES_PATH}", url.trim_end_matches('/'))
        }
        _ => url,
    };
    let (given, key) = match (&config.endpoint, env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
        (Some(e), _) => (e.clone(), "telemetry.endpoint"),
        (None, Some(e)) => (e, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        (None, None) => match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(e) => (e, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            None => (
                match protocol {
                    Protocol::Grpc => "http://localhost:4317".to_string(),
                    Protocol::HttpProtobuf => "http://localhost:4318".to_string(),
                },
                "the default endpoint",
            ),
        },
    };
    let uri: http::Uri = given
        .parse()
        .map_err(|e| anyhow::anyhow!("{key} `{given}`: not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() => {}
        _ => anyhow::bail!("{key} `{given}`: give an http:// or https:// URL with a host"),
    }
    // The signal's own variable is the whole URL; the others are the
    // collector's base.
    let endpoint = match key {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => given,
        _ => base(given),
    };
    Ok(Target { protocol, endpoint })
}

/// One export's deadline: `telemetry.timeout_ms`, else
/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT` (ms),
/// then 10 s.
pub fn export_timeout(config: &TelemetryConfig) -> Duration {
    let env_ms = |name: &str| env(name).and_then(|v| v.trim().parse::<u64>().ok());
    Duration::from_millis(
        config
            .timeout_ms
            .or_else(|| env_ms("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"))
            .or_else(|| env_ms("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .filter(|ms| *ms > 0)
            .unwrap_or(10_000),
    )
}

/// Checks `[telemetry]` when the config loads.
pub fn check(config: &TelemetryConfig) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&config.sample_ratio) {
        anyhow::bail!(
            "telemetry.sample_ratio {} must be between 0 and 1",
            config.sample_ratio
        );
    }
    if config.batch_delay_ms == 0 {
        anyhow::bail!("telemetry.batch_delay_ms must be positive");
    }
    if config.max_queue == 0 {
        anyhow::bail!("telemetry.max_queue must be positive");
    }
    if config.timeout_ms == Some(0) {
        anyhow::bail!("telemetry.timeout_ms must be positive");
    }
    if let Some(p) = &config.protocol {
        Protocol::parse(p, "telemetry.protocol")?;
    }
    for name in config.headers.keys() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            anyhow::bail!("telemetry.headers: `{name}` is not a header name");
        }
    }
    if enabled(config) {
        target(config)?;
    }
    Ok(())
}

/// The running exporter: what the tracing layer records spans with, and
/// what flushes them at the end.
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// Where the spans go.
    pub target: Target,
}

impl Telemetry {
    /// Starts the exporter when `[telemetry]` enables it; `None` when off.
    /// Must run inside the hub's runtime: the exports run on it.
    pub fn start(config: &TelemetryConfig, tls: &TlsConfig) -> anyhow::Result<Option<Telemetry>> {
        if !enabled(config) {
            return Ok(None);
        }
        let target = target(config)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("telemetry starts inside the hub's runtime"))?;
        let timeout = export_timeout(config);
        let exporter = match target.protocol {
            Protocol::Grpc => {
                let mut headers = http::HeaderMap::new();
                for (name, value) in &config.headers {
                    let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        anyhow::anyhow!("telemetry.headers: `{name}` is not a header name")
                    })?;
                    let value = http::HeaderValue::from_str(value).map_err(|_| {
                        anyhow::anyhow!("telemetry.headers.{name}: not a valid header value")
                    })?;
                    headers.insert(name, value);
                }
                let metadata =
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(target.endpoint.clone())
                    .with_metadata(metadata)
                    .with_timeout(timeout);
                if target.endpoint.starts_with("https:") {
                    builder = builder.with_tls_config(export::grpc_tls(tls)?);
                }
                builder.build()?
            }
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(target.endpoint.clone())
                .with_headers(config.headers.clone().into_iter().collect())
                .with_timeout(timeout)
                .with_http_client(export::HttpClient::new(tls, timeout)?)
                .build()?,
        };
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(config.batch_delay_ms))
            .with_max_queue_size(config.max_queue)
            .with_max_export_batch_size(config.max_queue.min(512))
            .build();
        let processor = BatchSpanProcessor::builder(export::OnRuntime::new(
            exporter,
            runtime,
            target.endpoint.clone(),
        ))
        .with_batch_config(batch)
        .build();
        let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
            opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        );
        match (&config.service_name, env("OTEL_SERVICE_NAME")) {
            (Some(name), _) => resource = resource.with_service_name(name.clone()),
            (None, None) => resource = resource.with_service_name("govhub"),
            // The resource detector has read it.
            (None, Some(_)) => {}
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource.build())
            .build();
        ACTIVE.store(true, Ordering::Relaxed);
        Ok(Some(Telemetry { provider, target }))
    }

    /// The tracer the `tracing` layer records with.
    pub fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        self.provider.tracer("govhub")
    }

    /// Sends what is left and stops the exporter thread. Blocks: call it
    /// off the runtime's workers (the sends run on the runtime).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("telemetry: the last spans were not all sent: {e}");
        }
    }
}

/// What the exporting layer takes: the hub's spans (at `debug` and
/// above: the `ingest`, `route`, `journal.commit`, `deliver` and
/// `adapter.call` spans), and as span events the hub's and the adapters'
/// log lines at `info` and above.
pub fn exported(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    let ours = target == "govhub" || target.starts_with("govhub::");
    if meta.is_span() {
        ours && *meta.level() <= tracing::Level::DEBUG
    } else {
        (ours || target == "adapter") && *meta.level() <= tracing::Level::INFO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(protocol: &str, endpoint: &str) -> TelemetryConfig {
        TelemetryConfig {
            enabled: true,
            protocol: Some(protocol.into()),
            endpoint: Some(endpoint.into()),
            ..TelemetryConfig::default()
        }
    }

    #[test]
    fn the_configured_endpoint_is_the_collectors_base_over_http_and_whole_over_grpc() {
        for (protocol, given, want) in [
            (
                "http/protobuf",
                "http://collector:4318",
                "http://collector:4318/v1/traces",
            ),
            (
                "http/protobuf",
                "http://collector:4318/",
                "http://collector:4318/v1/traces",
            ),
            (
                "http/protobuf",
                "https://c.example/otlp",
                "https://c.example/otlp/v1/traces",
            ),
            (
                "http/protobuf",
                "http://c:4318/v1/traces",
                "http://c:4318/v1/traces",
            ),
            ("grpc", "http://collector:4317", "http://collector:4317"),
        ] {
            let t = target(&with(protocol, given)).unwrap();
            assert_eq!(t.endpoint, want, "{protocol} {given}");
            assert_eq!(t.protocol.as_str(), protocol);
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_naming_the_key() {
        let refused = |c: TelemetryConfig| check(&c).unwrap_err().to_string();
        assert!(
            refused(with("http/json", "http://c:4318")).contains("telemetry.protocol `http/json`")
        );
        assert!(refused(with("grpc", "c:4317")).contains("telemetry.endpoint `c:4317`"));
        assert!(refused(with("grpc", "ftp://c")).contains("http:// or https://"));
        let mut c = with("grpc", "http://c:4317");
        c.headers.insert("bad header".into(), "x".into());
        assert!(refused(c).contains("telemetry.headers"));
        for (c, says) in [
            (
                TelemetryConfig {
                    sample_ratio: -0.1,
                    ..Default::default()
                },
                "sample_ratio",
            ),
            (
                TelemetryConfig {
                    batch_delay_ms: 0,
                    ..Default::default()
                },
                "batch_delay_ms",
            ),
            (
                TelemetryConfig {
                    max_queue: 0,
                    ..Default::default()
                },
                "max_queue",
            ),
            (
                TelemetryConfig {
                    timeout_ms: Some(0),
                    ..Default::default()
                },
                "timeout_ms",
            ),
        ] {
            assert!(refused(c).contains(says), "{says}");
        }
        // Off, an endpoint is not even looked at.
        assert!(check(&TelemetryConfig::default()).is_ok());
    }

    #[test]
    fn only_the_hubs_spans_and_log_lines_are_exported() {
        // The filter reads a callsite's metadata; made by the macros here,
        // whose target is this module's path.
        struct Seen(std::sync::Mutex<Vec<(String, bool)>>);
        impl tracing::Subscriber for Seen {
            fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
                self.0
                    .lock()
                    .unwrap()
                    .push((m.name().to_string(), exported(m)));
                false
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, _: &tracing::Event<'_>) {}
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }
        let seen = std::sync::Arc::new(Seen(Default::default()));
        tracing::subscriber::with_default(seen.clone(), || {
            let _ = tracing::debug_span!("a-debug-span");
            let _ = tracing::trace_span!("a-trace-span");
            tracing::info!("an info line");
            tracing::debug!("a debug line");
            tracing::info!(target: "adapter", "an adapter's line");
            tracing::info!(target: "wasmtime", "someone else's line");
        });
        let seen = seen.0.lock().unwrap().clone();
        let of = |prefix: &str| seen.iter().find(|(n, _)| n.starts_with(prefix)).unwrap().1;
        assert!(of("a-debug-span"));
        assert!(!of("a-trace-span"));
        let lines: Vec<bool> = seen
            .iter()
            .filter(|(n, _)| n.starts_with("event "))
            .map(|(_, e)| *e)
            .collect();
        assert_eq!(lines, [true, false, true, false], "{seen:?}");
    }
}
