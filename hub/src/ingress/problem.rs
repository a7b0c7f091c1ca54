//! RFC 9457 problem details, the one error shape of the HTTP API.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An `application/problem+json` answer.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The HTTP status.
    #[serde(serialize_with = "status_code")]
    pub status: StatusCode,
    /// A short summary of the kind of problem.
    pub title: String,
    /// What exactly is wrong, naming the field or cause.
    pub detail: String,
    /// A machine-readable kind (`invalid-input`, `deadline`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The attribute or field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before trying again (`503`).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

fn status_code<S: serde::Serializer>(s: &StatusCode, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_u16(s.as_u16())
}

impl Problem {
    /// A problem with a status, a title and a detail.
    pub fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            title: title.to_string(),
            detail: detail.into(),
            kind: None,
            field: None,
            retry_after: None,
        }
    }

    /// Adds the machine-readable kind.
    pub fn with_kind(mut self, kind: &str) -> Problem {
        self.kind = Some(kind.to_string());
        self
    }

    /// Adds the field at fault.
    pub fn with_field(mut self, field: &str) -> Problem {
        self.field = Some(field.to_string());
        self
    }

    /// Adds a `Retry-After`.
    pub fn with_retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}
