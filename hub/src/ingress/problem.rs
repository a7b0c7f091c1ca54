//! RFC 9457 problem details, the one error shape of the HTTP API.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An `application/problem+json` answer. Boxed: it travels in the `Err` of
/// every handler, and the happy path should not pay for its size.
#[derive(Debug, Clone)]
pub struct Problem(Box<Body>);

#[derive(Debug, Clone, Serialize)]
struct Body {
    #[serde(serialize_with = "status_code")]
    status: StatusCode,
    title: String,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip)]
    retry_after: Option<u64>,
    #[serde(skip)]
    headers: Vec<(&'static str, &'static str)>,
}

fn status_code<S: serde::Serializer>(s: &StatusCode, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_u16(s.as_u16())
}

impl Problem {
    /// A problem with a status, a short title and a detail that names the
    /// field or cause.
    pub fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> Problem {
        Problem(Box::new(Body {
            status,
            title: title.to_string(),
            detail: detail.into(),
            kind: None,
            field: None,
            retry_after: None,
            headers: Vec::new(),
        }))
    }

    /// Adds a machine-readable kind (`invalid-input`, `deadline`, ...).
    pub fn with_kind(mut self, kind: &str) -> Problem {
        self.0.kind = Some(kind.to_string());
        self
    }

    /// Adds the field or attribute at fault.
    pub fn with_field(mut self, field: &str) -> Problem {
        self.0.field = Some(field.to_string());
        self
    }

    /// Adds a `Retry-After` (seconds).
    pub fn with_retry_after(mut self, seconds: u64) -> Problem {
        self.0.retry_after = Some(seconds);
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Problem {
        self.0.headers.push((name, value));
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut response = (self.0.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.0.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        for (name, value) in &self.0.headers {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        response
    }
}
