//! Ingress: the HTTP API through which events enter the hub.
//!
//! - `POST /v1/ingest/{adapter}`: a department's raw payload, handed to that
//!   adapter's `ingest`;
//! - `GET /healthz`, `GET /readyz`.
//!
//! Every error is `application/problem+json` whose `detail` names the
//! field or cause.

mod problem;

pub use problem::Problem;

use crate::hub::Hub;
use crate::runtime::CallError;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use govhub_sdk::{AdapterError, Header, Inbound};
use std::sync::Arc;

/// The HTTP routes.
pub fn router(hub: Arc<Hub>) -> axum::Router {
    axum::Router::new()
        .route("/v1/ingest/{adapter}", post(ingest))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(hub)
}

async fn not_found(request: Request) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(hub): State<Arc<Hub>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ready", "adapters": hub.adapter_names() }))
}

/// Reads the whole body, refusing more than `limit` bytes with `413`.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, Problem> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<http_body_util::LengthLimitError>())
            .is_some()
            || e.to_string().contains("length limit");
        if too_large {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large",
                format!("the request body is larger than server.max_body_bytes ({limit} bytes)"),
            )
        } else {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "unreadable body",
                format!("the request body could not be read: {e}"),
            )
        }
    })
}

async fn ingest(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, Problem> {
    let adapter = hub.adapter(&name).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown adapter",
            format!(
                "no adapter `{name}` is loaded (loaded: {})",
                hub.adapter_names().join(", ")
            ),
        )
    })?;
    let (parts, body) = request.into_parts();
    let body = read_body(body, hub.config.server.max_body_bytes).await?;
    let message = Inbound {
        method: parts.method.as_str().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| Header {
                name: n.as_str().to_string(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect(),
        body: body.to_vec(),
    };
    let events = adapter
        .ingest(&message)
        .await
        .map_err(|e| call_problem(&name, &e))?;
    let accepted = hub.accept(events, Some(&name)).map_err(|e| {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "adapter produced an invalid event",
            format!("adapter `{name}` produced an invalid event: {e}"),
        )
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": accepted })),
    )
        .into_response())
}

/// The problem for a failed adapter call: the sender's fault (`400`), the
/// department's (`422`), a retryable state (`503`), or the adapter's own
/// failure (`502`, `504` for a deadline).
pub fn call_problem(adapter: &str, e: &CallError) -> Problem {
    let (status, title) = match e {
        CallError::Adapter(AdapterError::InvalidInput(_)) => {
            (StatusCode::BAD_REQUEST, "invalid input")
        }
        CallError::Adapter(AdapterError::Rejected(_)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "rejected")
        }
        CallError::Adapter(AdapterError::Unavailable(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        CallError::Deadline { .. } => (StatusCode::GATEWAY_TIMEOUT, "adapter deadline exceeded"),
        _ => (StatusCode::BAD_GATEWAY, "adapter failed"),
    };
    Problem::new(status, title, format!("adapter `{adapter}`: {e}")).with_kind(e.kind())
}
