//! The HTTP API: how events enter the hub, and how people look at what
//! became of them.
//!
//! - `POST /v1/events`: CloudEvents (structured, batch, binary mode);
//! - `POST /v1/ingest/{adapter}`: a department's raw payload, handed to
//!   that adapter's `ingest`;
//! - `GET /v1/events/{id}`: the stored event and its deliveries;
//! - `GET /v1/dead-letters`, `POST /v1/dead-letters/{id}/replay`;
//! - `GET /v1/cases`, `GET /v1/cases/{id}`, `GET /v1/stats`, and
//!   `POST /v1/clock` when the clock is manual;
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`;
//! - `GET /v1/stream` (`crate::stream`);
//! - `GET /` and `GET /v1/cockpit/snapshot` (`crate::cockpit`);
//! - the admin API (`crate::admin::api`).
//!
//! Every error is `application/problem+json` whose `detail` names the
//! field or cause. Events are acknowledged (`202`) only once the journal
//! has them on disk.

mod cases;
mod events;
mod problem;
mod query;
mod raw;

pub use problem::Problem;

use crate::hub::{AcceptError, Hub};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use std::sync::Arc;

/// What the handlers share.
pub struct App {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The bearer token ingress requires, if any.
    ingest_token: Option<String>,
}

/// The HTTP routes.
pub fn router(hub: Arc<Hub>) -> axum::Router {
    let ingest_token = hub
        .config
        .auth
        .ingest_token_env
        .as_deref()
        .and_then(|var| std::env::var(var).ok())
        .filter(|t| !t.is_empty());
    let admin = crate::admin::api::router(hub.clone());
    let stream = crate::stream::router(hub.journal.clone(), hub.streams.clone());
    let cockpit = crate::cockpit::router(hub.clone());
    let app = Arc::new(App { hub, ingest_token });
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/events", post(events::post_events))
        .route("/v1/events/{id}", get(query::get_event))
        .route("/v1/ingest/{adapter}", post(raw::ingest))
        .route("/v1/dead-letters", get(query::dead_letters))
        .route("/v1/dead-letters/{id}/replay", post(query::replay))
        .route("/v1/cases", get(cases::list))
        .route("/v1/cases/{id}", get(cases::one))
        .route("/v1/stats", get(cases::statistics))
        .route("/v1/clock", post(cases::advance_clock))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(app)
        .merge(admin)
        .merge(stream)
        .merge(cockpit)
}

async fn metrics(State(app): State<Arc<App>>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.hub.metrics.encode(),
    )
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

async fn readyz(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ready", "adapters": app.hub.adapter_names() }))
}

impl App {
    /// Refuses a sender without the ingress token, when one is configured.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let Some(token) = &self.ingest_token else {
            return Ok(());
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given == Some(token.as_str()) {
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "ingress needs `authorization: Bearer <token>` (the token in the env var named by auth.ingest_token_env)",
            )
            .with_header("www-authenticate", "Bearer"))
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes with `413`
/// naming `key`, the config key that sets the limit.
pub async fn read_body(body: Body, limit: usize, key: &str) -> Result<bytes::Bytes, Problem> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<http_body_util::LengthLimitError>())
            .is_some()
            || e.to_string().contains("length limit");
        if too_large {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large",
                format!("the request body is larger than {key} ({limit} bytes)"),
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

/// The `202` answer: what became of each event, in request order.
#[derive(serde::Serialize)]
struct Answer {
    accepted: Vec<crate::hub::Accepted>,
}

/// The problem for a journal read or write that failed.
fn journal_problem(e: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "journal unavailable",
        e.to_string(),
    )
    .with_retry_after(5)
}

/// The problem for events the hub did not accept.
fn accept_problem(e: &AcceptError) -> Problem {
    match e {
        AcceptError::Invalid { error, .. } => {
            Problem::new(StatusCode::BAD_REQUEST, "invalid event", e.to_string())
                .with_field(&error.attribute)
        }
        AcceptError::Backpressure { severity, .. } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "delivery queue full",
            e.to_string(),
        )
        .with_kind(if severity.is_some() {
            "backpressure-reserve"
        } else {
            "backpressure"
        })
        .with_retry_after(5),
        AcceptError::Journal(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "journal unavailable",
            format!("{e}; nothing of this request was stored"),
        )
        .with_kind("journal")
        .with_retry_after(5),
    }
}
