//! A small blocking HTTP client for calls to the department system, over
//! `wasi:http/outgoing-handler`.
//!
//! The hub only lets an adapter reach the hosts its manifest lists under
//! `[capabilities] outbound_hosts`; a request to any other host fails with
//! [`AdapterError::Rejected`] naming the host. Transport failures (refused,
//! reset, timed out) are [`AdapterError::Unavailable`], so the hub retries.
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
    pub fn send(self) -> Result<Response, AdapterError> {
        let url = Url::parse(&self.url)?;
        send(&self, &url)
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
        let message = format!("department answered {}: {}", self.status, snippet.trim());
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
fn send(request: &Request, _url: &Url<'_>) -> Result<Response, AdapterError> {
    crate::testing::with_current(|h| h.send(request)).map_err(AdapterError::Unavailable)
}

#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
fn send(request: &Request, url: &Url<'_>) -> Result<Response, AdapterError> {
    use crate::bindings::wasi::http::outgoing_handler;
    use crate::bindings::wasi::http::types::{
        ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use crate::bindings::wasi::io::streams::StreamError;

    let unavailable = |what: &str, e: ErrorCode| {
        AdapterError::Unavailable(format!("{} {}: {what}: {e:?}", request.method, request.url))
    };

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

    let body = outgoing
        .body()
        .map_err(|()| AdapterError::Unavailable("request body already taken".into()))?;
    let future = match outgoing_handler::handle(outgoing, None) {
        Ok(f) => f,
        Err(ErrorCode::HttpRequestDenied) => {
            return Err(denied(url.authority));
        }
        Err(e) => return Err(unavailable("request failed", e)),
    };
    {
        let stream = body
            .write()
            .map_err(|()| AdapterError::Unavailable("request body stream unavailable".into()))?;
        // blocking_write_and_flush takes at most 4096 bytes per call.
        for chunk in request.body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| {
                AdapterError::Unavailable(format!(
                    "{} {}: writing the body failed: {e:?}",
                    request.method, request.url
                ))
            })?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| unavailable("finishing the body failed", e))?;

    future.subscribe().block();
    let incoming = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(ErrorCode::HttpRequestDenied))) => return Err(denied(url.authority)),
        Some(Ok(Err(e))) => return Err(unavailable("no response", e)),
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
                Err(e) => {
                    return Err(AdapterError::Unavailable(format!(
                        "{} {}: reading the response failed: {e:?}",
                        request.method, request.url
                    )))
                }
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
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
