//! An OTLP receiver, as a tracing backend's collector is one: it takes
//! what the hub exports over OTLP/HTTP (protobuf bodies on `/v1/traces`)
//! or OTLP/gRPC (`TraceService/Export`, length-prefixed messages over
//! HTTP/2), and decodes it with the official OpenTelemetry protobuf
//! definitions (`opentelemetry-proto`).

use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the hub sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Otlp {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP, protobuf.
    Http,
}

impl Otlp {
    /// Its `OTEL_EXPORTER_OTLP_PROTOCOL` name.
    pub fn protocol(self) -> &'static str {
        match self {
            Otlp::Grpc => "grpc",
            Otlp::Http => "http/protobuf",
        }
    }
}

/// One span received.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    /// Span events: the name and its attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
    /// The trace ids of its links.
    pub links: Vec<String>,
    /// Its `tracestate`, its status message and its links' attributes:
    /// the rest of what a span can carry, for leak checks.
    pub rest: String,
    /// The resource of the batch it came in.
    pub resource: BTreeMap<String, String>,
}

impl Span {
    /// An attribute's value, or "".
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    requests: usize,
    /// The request paths and content types seen.
    seen: Vec<(String, String)>,
}

/// A running receiver on a loopback port.
pub struct Receiver {
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
    /// Its transport.
    pub kind: Otlp,
    state: Arc<Mutex<Received>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(&kv.value)))
        .collect()
}

fn decode(body: &[u8]) -> Result<Vec<Span>, String> {
    let request = ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    name: s.name.clone(),
                    attributes: attributes(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), attributes(&e.attributes)))
                        .collect(),
                    links: s.links.iter().map(|l| hex::encode(&l.trace_id)).collect(),
                    rest: format!(
                        "{} {:?} {:?}",
                        s.trace_state,
                        s.status.as_ref().map(|st| &st.message),
                        s.links
                            .iter()
                            .map(|l| attributes(&l.attributes))
                            .collect::<Vec<_>>()
                    ),
                    resource: resource.clone(),
                });
            }
        }
    }
    Ok(out)
}

type Answer =
    hyper::Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>;

async fn serve(
    kind: Otlp,
    state: Arc<Mutex<Received>>,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<Answer, std::convert::Infallible> {
    let path = request.uri().path().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut s = state.lock().unwrap();
    s.requests += 1;
    s.seen.push((path.clone(), content_type.clone()));
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    Ok(match kind {
        Otlp::Http => {
            let ok = path == "/v1/traces" && content_type == "application/x-protobuf";
            match ok.then(|| decode(&body)) {
                Some(Ok(spans)) => {
                    s.spans.extend(spans);
                    hyper::Response::builder()
                        .header("content-type", "application/x-protobuf")
                        .body(Full::new(Bytes::from(reply)).boxed())
                        .unwrap()
                }
                _ => hyper::Response::builder()
                    .status(400)
                    .body(Full::new(Bytes::new()).boxed())
                    .unwrap(),
            }
        }
        Otlp::Grpc => {
            // One length-prefixed message, not compressed.
            let message = (path == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                && content_type.starts_with("application/grpc")
                && body.len() >= 5
                && body[0] == 0)
                .then(|| {
                    let n = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
                    body.get(5..5 + n).map(decode)
                })
                .flatten();
            let status = match message {
                Some(Ok(spans)) => {
                    s.spans.extend(spans);
                    "0"
                }
                // INVALID_ARGUMENT.
                _ => "3",
            };
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(reply.len() as u32).to_be_bytes());
            frame.extend_from_slice(&reply);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", status.parse().unwrap());
            let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
                Ok(Frame::data(Bytes::from(frame))),
                Ok(Frame::trailers(trailers)),
            ];
            hyper::Response::builder()
                .header("content-type", "application/grpc")
                .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
                .unwrap()
        }
    })
}

impl Receiver {
    /// Starts one on a free loopback port, on a thread of its own.
    pub fn start(kind: Otlp) -> Receiver {
        let state = Arc::new(Mutex::new(Received::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let state = shared.clone();
                        let service =
                            hyper::service::service_fn(move |r| serve(kind, state.clone(), r));
                        tokio::spawn(async move {
                            let io = TokioIo::new(tcp);
                            let _ = match kind {
                                Otlp::Http => {
                                    hyper::server::conn::http1::Builder::new()
                                        .serve_connection(io, service)
                                        .await
                                }
                                Otlp::Grpc => {
                                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                        .serve_connection(io, service)
                                        .await
                                }
                            };
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {},
                    _ = stopped => {},
                }
            });
        });
        Receiver {
            endpoint,
            kind,
            state,
            _stop: stop,
        }
    }

    /// The hub's environment to export here (`OTEL_EXPORTER_OTLP_*`),
    /// with traces turned on and sent every 100 ms.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GOVHUB__TELEMETRY__ENABLED".into(), "true".into()),
            ("GOVHUB__TELEMETRY__BATCH_DELAY_MS".into(), "100".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), self.endpoint.clone()),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL".into(),
                self.kind.protocol().into(),
            ),
        ]
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.state.lock().unwrap().spans.clone()
    }

    /// Export requests received (well formed or not).
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// The paths and content types of the requests.
    pub fn seen(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Waits until `check` is satisfied by the spans received.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[Span]) -> Result<T, String>,
    ) -> T {
        super::eventually(timeout, || check(&self.spans()))
    }

    /// Everything received as text: names, attributes, events, resource.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for s in self.spans() {
            out.push_str(&format!(
                "{} {:?} {:?} {:?}\n",
                s.name, s.attributes, s.events, s.resource
            ));
        }
        out
    }
}
