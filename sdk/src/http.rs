//! A small blocking HTTP client for calls to the department system, over
//! `wasi:http/outgoing-handler`.
//!
//! The hub only lets an adapter reach the hosts its manifest lists under
//! `[capabilities] outbound_hosts`; a request to any other host fails with
//! [`AdapterError::Rejected`] naming the host. Transport failures (refused,
//! reset, timed out) are [`AdapterError::Unavailable`], so the hub retries.
//!
//! A body given whole ([`Request::body`], [`Request::json`], or the `body`
//! field) goes out with a `Content-Length`: many department systems (Python's
//! `http.server`, older Java, .NET and PHP stacks, some API gateways) read
//! only `Content-Length` and would see a chunked body as empty. Only
//! [`Request::send_streaming`], for a body that really is a stream, sends
//! `Transfer-Encoding: chunked`.
//!
//! ```no_run
//! use govhub_sdk::http::Request;
//! # fn f() -> Result<(), govhub_sdk::AdapterError> {
//! let answer = Request::post("http://127.0.0.1:9100/dispatch")
//!     .header("idempotency-key", "evt-42")
//!     .json(&serde_json::json!({ "incident": "HZ-1" }))
//!     .send()?
//!     .error_for_status()?;
//! let body: serde_json::Value = answer.json()?;
//! # Ok(()) }
//! ```

use crate::AdapterError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An outbound request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
}

/// A response from the department.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers in order, names lower case.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with `method` to `url`.
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    /// A `GET`.
    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }
    /// A `POST`.
    pub fn post(url: &str) -> Request {
        Request::new("POST", url)
    }
    /// A `PUT`.
    pub fn put(url: &str) -> Request {
        Request::new("PUT", url)
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    /// The first header called `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    /// Sets a JSON body and `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, body: &T) -> Request {
        self.body(
            serde_json::to_vec(body).unwrap_or_default(),
            "application/json",
        )
    }
    /// Sets a body of the given media type.
    pub fn body(mut self, body: impl Into<Vec<u8>>, content_type: &str) -> Request {
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        self.headers
            .push(("content-type".to_string(), content_type.to_string()));
        self.body = body.into();
        self
    }

    /// Sends the request and reads the whole response. Any status is a
    /// response; use [`Response::error_for_status`] to turn 4xx/5xx into the
    /// right [`AdapterError`].
    ///
    /// The body goes out with a `Content-Length` (unless the request already
    /// carries one, or a `Transfer-Encoding`); a `POST`, `PUT` or `PATCH`
    /// without a body says `content-length: 0`.
    pub fn send(mut self) -> Result<Response, AdapterError> {
        self.frame_body();
        let url = Url::parse(&self.url)?;
        send(&self, &url, None)
    }

    /// Sends the request with a body read from `body` as it goes, in chunks
    /// (`Transfer-Encoding: chunked`, no `Content-Length`), for a body too
    /// large to hold or not known in advance. `self.body` is ignored. Most
    /// department systems want [`Request::send`]: use this only for one that
    /// reads chunked bodies.
    pub fn send_streaming(mut self, body: impl std::io::Read) -> Result<Response, AdapterError> {
        self.body.clear();
        let url = Url::parse(&self.url)?;
        let mut body = body;
        send(&self, &url, Some(&mut body))
    }

    /// Adds the `content-length` a whole body needs, as it will be sent.
    fn frame_body(&mut self) {
        let framed = self.headers.iter().any(|(n, _)| {
            n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
        });
        let expects_body = matches!(self.method.as_str(), "POST" | "PUT" | "PATCH");
        if !framed && (expects_body || !self.body.is_empty()) {
            self.headers
                .push(("content-length".to_string(), self.body.len().to_string()));
        }
    }
}

impl Response {
    /// A response with a text body, for test responders.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
    /// A JSON response, for test responders.
    pub fn json_body<T: Serialize + ?Sized>(status: u16, body: &T) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body parsed as JSON; a malformed answer is
    /// [`AdapterError::Unavailable`] (the department misbehaved; try again).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, AdapterError> {
        crate::event::parse_json(&self.body, "department response").map_err(|e| match e {
            AdapterError::InvalidInput(m) => AdapterError::Unavailable(m),
            other => other,
        })
    }
    /// `Ok(self)` for 1xx-3xx. For errors, what the hub should do:
    /// 408, 425, 429 and 5xx are [`AdapterError::Unavailable`] (retry);
    /// other 4xx are [`AdapterError::Rejected`] (the department refused).
    /// The message carries the status and the start of the body.
    pub fn error_for_status(self) -> Result<Response, AdapterError> {
        if self.status < 400 {
            return Ok(self);
        }
        let mut snippet = self.text();
        if snippet.len() > 300 {
            let mut cut = 300;
            while !snippet.is_char_boundary(cut) {
                cut -= 1;
            }
            snippet.truncate(cut);
            snippet.push('…');
        }
        let hint = match self.status {
            411 => " (it wants a Content-Length: send the body whole with Request::send)",
            413 => " (the body is larger than the department accepts)",
            _ => "",
        };
        let message = format!(
            "department answered {}{hint}: {}",
            self.status,
            snippet.trim()
        );
        Err(match self.status {
            408 | 425 | 429 | 500..=599 => AdapterError::Unavailable(message),
            _ => AdapterError::Rejected(message),
        })
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The parts of a URL that `wasi:http` takes separately.
#[derive(Debug, PartialEq)]
pub(crate) struct Url<'a> {
    pub(crate) https: bool,
    pub(crate) authority: &'a str,
    pub(crate) path_and_query: &'a str,
}

impl<'a> Url<'a> {
    pub(crate) fn parse(url: &'a str) -> Result<Url<'a>, AdapterError> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(AdapterError::Rejected(format!(
                "URL `{url}` must start with http:// or https://"
            )));
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return Err(AdapterError::Rejected(format!("URL `{url}` has no host")));
        }
        Ok(Url {
            https,
            authority,
            path_and_query: if path.is_empty() { "/" } else { path },
        })
    }
}

#[cfg(not(all(target_arch = "wasm32", target_env = "p2")))]
fn send(
    request: &Request,
    _url: &Url<'_>,
    stream: Option<&mut dyn std::io::Read>,
) -> Result<Response, AdapterError> {
    // The harness records the request as it would go on the wire: a
    // streamed body whole, marked chunked.
    let streamed;
    let request = match stream {
        Some(reader) => {
            let mut r = request.clone();
            reader.read_to_end(&mut r.body).map_err(|e| {
                AdapterError::Unavailable(format!("reading the streamed body failed: {e}"))
            })?;
            r.headers
                .push(("transfer-encoding".to_string(), "chunked".to_string()));
            streamed = r;
            &streamed
        }
        None => request,
    };
    crate::testing::with_current(|h| h.send(request)).map_err(AdapterError::Unavailable)
}

#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
fn send(
    request: &Request,
    url: &Url<'_>,
    mut stream: Option<&mut dyn std::io::Read>,
) -> Result<Response, AdapterError> {
    use crate::bindings::wasi::http::outgoing_handler;
    use crate::bindings::wasi::http::types::{
        ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use crate::bindings::wasi::io::streams::StreamError;

    let failed = |what: &str, e: ErrorCode| transport_error(request, what, &e);

    let entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&entries)
        .map_err(|e| AdapterError::Rejected(format!("invalid request header: {e:?}")))?;
    let outgoing = OutgoingRequest::new(fields);
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    };
    let _ = outgoing.set_method(&method);
    let _ = outgoing.set_scheme(Some(if url.https {
        &Scheme::Https
    } else {
        &Scheme::Http
    }));
    outgoing
        .set_authority(Some(url.authority))
        .map_err(|()| AdapterError::Rejected(format!("invalid host in `{}`", request.url)))?;
    outgoing
        .set_path_with_query(Some(url.path_and_query))
        .map_err(|()| AdapterError::Rejected(format!("invalid path in `{}`", request.url)))?;

    // No body at all unless there is one to send: the hub then sends no
    // body framing (a `content-length: 0` header, when present, is the
    // whole of it).
    let body = if request.body.is_empty() && stream.is_none() {
        None
    } else {
        Some(
            outgoing
                .body()
                .map_err(|()| AdapterError::Unavailable("request body already taken".into()))?,
        )
    };
    let future = match outgoing_handler::handle(outgoing, None) {
        Ok(f) => f,
        Err(ErrorCode::HttpRequestDenied) => {
            return Err(denied(url.authority));
        }
        Err(e) => return Err(failed("request failed", e)),
    };
    if let Some(body) = body {
        {
            let out = body.write().map_err(|()| {
                AdapterError::Unavailable("request body stream unavailable".into())
            })?;
            let write = |chunk: &[u8]| {
                out.blocking_write_and_flush(chunk).map_err(|e| {
                    AdapterError::Unavailable(format!(
                        "{} {}: writing the body failed: {e:?}",
                        request.method, request.url
                    ))
                })
            };
            // blocking_write_and_flush takes at most 4096 bytes per call.
            match stream.as_mut() {
                None => {
                    for chunk in request.body.chunks(4096) {
                        write(chunk)?;
                    }
                }
                Some(reader) => {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let n = reader.read(&mut buf).map_err(|e| {
                            AdapterError::Unavailable(format!(
                                "{} {}: reading the streamed body failed: {e}",
                                request.method, request.url
                            ))
                        })?;
                        if n == 0 {
                            break;
                        }
                        write(&buf[..n])?;
                    }
                }
            }
        }
        OutgoingBody::finish(body, None).map_err(|e| failed("finishing the body failed", e))?;
    }

    future.subscribe().block();
    let incoming = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(ErrorCode::HttpRequestDenied))) => return Err(denied(url.authority)),
        Some(Ok(Err(e))) => return Err(failed("no response", e)),
        Some(Err(())) | None => {
            return Err(AdapterError::Unavailable(format!(
                "{} {}: response future failed",
                request.method, request.url
            )))
        }
    };
    let status = incoming.status();
    let headers = incoming
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let body_res = incoming
        .consume()
        .map_err(|()| AdapterError::Unavailable("response body unavailable".into()))?;
    let mut body = Vec::new();
    {
        let stream = body_res
            .stream()
            .map_err(|()| AdapterError::Unavailable("response body stream unavailable".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    // The debug string may carry the host's backtrace: its
                    // first line is the cause.
                    let detail = crate::bindings::wasi::http::types::http_error_code(&e)
                        .map(|code| describe(&code))
                        .unwrap_or_else(|| {
                            e.to_debug_string()
                                .lines()
                                .next()
                                .unwrap_or_default()
                                .to_string()
                        });
                    return Err(AdapterError::Unavailable(format!(
                        "{} {}: reading the response failed: {detail}",
                        request.method, request.url
                    )));
                }
            }
        }
    }
    // A body cut short of its Content-Length ends in an error above; one
    // that ends cleanly is whole.
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// What went wrong on the way to the department, as an [`AdapterError`]:
/// a request the hub refused for its shape (a body that does not match its
/// `Content-Length`) will never succeed; everything else may next time.
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
fn transport_error(
    request: &Request,
    what: &str,
    e: &crate::bindings::wasi::http::types::ErrorCode,
) -> AdapterError {
    use crate::bindings::wasi::http::types::ErrorCode;
    let message = format!(
        "{} {}: {what}: {}",
        request.method,
        request.url,
        describe(e)
    );
    match e {
        ErrorCode::HttpRequestBodySize(_)
        | ErrorCode::HttpRequestMethodInvalid
        | ErrorCode::HttpRequestUriInvalid
        | ErrorCode::HttpRequestHeaderSize(_)
        | ErrorCode::HttpRequestHeaderSectionSize(_) => AdapterError::Rejected(message),
        _ => AdapterError::Unavailable(message),
    }
}

/// A `wasi:http` error code in words. The hub adds its own account of the
/// failure (the host, the certificate problem, the timeout that fired) to
/// the error the adapter returns.
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
fn describe(e: &crate::bindings::wasi::http::types::ErrorCode) -> String {
    use crate::bindings::wasi::http::types::ErrorCode;
    match e {
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTimeout => "connecting timed out".into(),
        ErrorCode::ConnectionReadTimeout => "timed out waiting for the department".into(),
        ErrorCode::ConnectionTerminated => "the department closed the connection".into(),
        ErrorCode::ConnectionLimitReached => "connection limit reached".into(),
        ErrorCode::DnsError(p) => format!(
            "cannot resolve the host ({})",
            p.rcode.as_deref().unwrap_or("no detail")
        ),
        ErrorCode::TlsCertificateError => "the department's TLS certificate was refused".into(),
        ErrorCode::TlsProtocolError => "the TLS handshake failed".into(),
        ErrorCode::TlsAlertReceived(p) => format!(
            "the department ended TLS with an alert ({})",
            p.alert_message.as_deref().unwrap_or("no detail")
        ),
        ErrorCode::HttpRequestBodySize(n) => format!(
            "the body does not match its Content-Length ({} bytes written)",
            n.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
        ),
        ErrorCode::HttpResponseIncomplete => "the answer was cut short".into(),
        ErrorCode::HttpResponseBodySize(n) => format!(
            "the answer's body is longer than allowed or than its Content-Length ({})",
            n.map(|n| format!("{n} bytes"))
                .unwrap_or_else(|| "size unknown".into())
        ),
        ErrorCode::HttpResponseTimeout => "timed out reading the answer".into(),
        ErrorCode::InternalError(Some(m)) => m.clone(),
        other => format!("{other:?}"),
    }
}

#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
fn denied(authority: &str) -> AdapterError {
    AdapterError::Rejected(format!(
        "outbound HTTP to `{authority}` denied by the hub: the host is not in the manifest's [capabilities] outbound_hosts"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts() {
        let u = Url::parse("http://127.0.0.1:9000/events?x=1").unwrap();
        assert_eq!(
            u,
            Url {
                https: false,
                authority: "127.0.0.1:9000",
                path_and_query: "/events?x=1"
            }
        );
        assert_eq!(Url::parse("https://a.example").unwrap().path_and_query, "/");
        assert!(Url::parse("ftp://a").is_err());
        assert!(Url::parse("http:///x").is_err());
    }

    fn sent(f: impl FnOnce() -> Result<Response, AdapterError>) -> Request {
        let h = crate::testing::Harness::new().respond(|_| Response::new(200, ""));
        h.run(f).unwrap();
        h.requests().remove(0)
    }

    #[test]
    fn whole_bodies_go_out_with_their_content_length() {
        let body = serde_json::json!({"note": "盈一佳苑小区西门拥堵"});
        let r = sent(|| Request::post("http://127.0.0.1:9/x").json(&body).send());
        let len = serde_json::to_vec(&body).unwrap().len();
        assert_eq!(r.header_value("content-length"), Some(&*len.to_string()));
        assert_eq!(r.header_value("transfer-encoding"), None);
        // A body set through the field (as the webhook adapter does) too.
        let r = sent(|| {
            let mut req = Request::put("http://127.0.0.1:9/x");
            req.body = "钱塘江".as_bytes().to_vec();
            req.send()
        });
        assert_eq!(r.header_value("content-length"), Some("9"));
        // A POST without a body says so; a GET without one says nothing.
        let r = sent(|| Request::post("http://127.0.0.1:9/x").send());
        assert_eq!(r.header_value("content-length"), Some("0"));
        let r = sent(|| Request::get("http://127.0.0.1:9/x").send());
        assert_eq!(r.header_value("content-length"), None);
        // A length the adapter set itself is not repeated.
        let r = sent(|| {
            Request::post("http://127.0.0.1:9/x")
                .header("Content-Length", "2")
                .body("ok", "text/plain")
                .send()
        });
        let lengths = r
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .count();
        assert_eq!(lengths, 1);
    }

    #[test]
    fn a_streamed_body_goes_out_chunked() {
        let r = sent(|| {
            Request::post("http://127.0.0.1:9/x").send_streaming(&b"part one, part two"[..])
        });
        assert_eq!(r.header_value("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header_value("content-length"), None);
        assert_eq!(r.body, b"part one, part two");
    }

    #[test]
    fn refusals_for_length_say_what_to_do() {
        match Response::new(411, "Length Required").error_for_status() {
            Err(AdapterError::Rejected(m)) => assert!(m.contains("Content-Length"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_classes() {
        assert!(matches!(
            Response::new(503, "busy").error_for_status(),
            Err(AdapterError::Unavailable(m)) if m.contains("503") && m.contains("busy")
        ));
        assert!(matches!(
            Response::new(422, "bad").error_for_status(),
            Err(AdapterError::Rejected(_))
        ));
        assert!(Response::new(201, "").error_for_status().is_ok());
    }
}
