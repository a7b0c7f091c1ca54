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
//! - the admin API (`crate::admin::api`);
//! - `POST|GET|DELETE /v1/session`, the cockpit's sign-in (`crate::auth`).
//!
//! Every route has a row in `crate::auth::policy::POLICY` (who may call
//! it); a department's reads are narrowed to what concerns it
//! ([`scope`]), and what it sends to its own sources and quota
//! ([`senders`]).
//!
//! Every error is `application/problem+json` whose `detail` names the
//! field or cause. Events are acknowledged (`202`) only once the journal
//! has them on disk.

mod cases;
mod events;
mod problem;
mod query;
mod raw;
mod scope;
mod senders;

pub use problem::Problem;

use crate::auth::policy::Routes;
use crate::hub::{AcceptError, Hub};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::Json;
use std::sync::Arc;

/// What the handlers share.
pub struct App {
    /// The hub.
    pub hub: Arc<Hub>,
}

/// The hub's routes, every one behind [`crate::auth`]: a route missing
/// from the access policy stops the start, naming it.
pub fn router(hub: Arc<Hub>) -> anyhow::Result<axum::Router> {
    let auth = hub.auth.clone();
    let routes = Routes::new()
        .add("GET", "/metrics", metrics)
        .add("POST", "/v1/events", events::post_events)
        .add("GET", "/v1/events/{id}", query::get_event)
        .add("POST", "/v1/events/{id}/reveal", query::reveal)
        .add("POST", "/v1/ingest/{adapter}", raw::ingest)
        .add("GET", "/v1/dead-letters", query::dead_letters)
        .add("GET", "/v1/dead-letters/{id}", query::dead_letter)
        .add("POST", "/v1/dead-letters/{id}/replay", query::replay)
        .add("GET", "/v1/cases", cases::list)
        .add("GET", "/v1/cases/{id}", cases::one)
        .add("GET", "/v1/cases/{id}/flows", cases::flows)
        .add("GET", "/v1/stats", cases::statistics)
        .add("POST", "/v1/clock", cases::advance_clock)
        .add("GET", "/healthz", healthz)
        .add("GET", "/readyz", readyz)
        .with_state(Arc::new(App { hub: hub.clone() }))
        .merge(crate::admin::api::router(hub.clone()))
        .merge(crate::stream::router(
            hub.journal.clone(),
            hub.streams.clone(),
        ))
        .merge(crate::cockpit::router(hub.clone()))
        .merge(crate::auth::routes::router(auth.clone()));
    let router = routes.finish().map_err(anyhow::Error::msg)?;
    Ok(router
        .route_layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::middleware::authorize,
        ))
        .fallback(not_found))
}

/// OpenMetrics when the scraper's `Accept` asks for it (Prometheus does),
/// the text format 0.0.4 otherwise.
async fn metrics(
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
) -> impl axum::response::IntoResponse {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = crate::metrics::Format::negotiate(accept);
    (
        [
            (axum::http::header::CONTENT_TYPE, format.content_type()),
            (axum::http::header::VARY, "accept"),
        ],
        app.hub.metrics.encode_as(format),
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
