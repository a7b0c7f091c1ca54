//! `POST /v1/ingest/{adapter}`: a department's own payload, turned into
//! events by its adapter.

use super::{accept_problem, read_body, App, Problem};
use crate::auth::Caller;
use crate::hub::AcceptError;
use crate::runtime::CallError;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use govhub_sdk::{AdapterError, Header, Inbound};
use std::sync::Arc;

pub(super) async fn ingest(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, Problem> {
    let hub = &app.hub;
    super::senders::check_adapter(&hub.metrics.auth, &caller, &name)?;
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
    if let Some(reason) = hub.quarantined(&name) {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "adapter quarantined",
            format!("adapter `{name}` is quarantined ({reason}); load or roll back a version"),
        )
        .with_kind("quarantined")
        .with_retry_after(30));
    }
    let (parts, body) = request.into_parts();
    let body = read_body(
        body,
        hub.config.server.max_body_bytes,
        "server.max_body_bytes",
    )
    .await?;
    let message = Inbound {
        method: parts.method.as_str().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts
            .headers
            .iter()
            .filter(|(n, _)| *n != axum::http::header::AUTHORIZATION)
            .map(|(n, v)| Header {
                name: n.as_str().to_string(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect(),
        body: body.to_vec(),
    };
    // One span for the request: the adapter's own log lines and the
    // routing lines of the events it produced carry the adapter's name;
    // the sender's trace is its parent.
    let span = tracing::info_span!(
        "ingest",
        govhub.route = "/v1/ingest",
        govhub.adapter = %name,
        govhub.events = tracing::field::Empty,
        govhub.outcome = tracing::field::Empty,
    );
    let request = crate::telemetry::adopt(&span, &parts.headers, &mut []);
    let accepted = tracing::Instrument::instrument(
        async {
            let mut events = adapter.ingest(&message).await.map_err(|e| {
                tracing::Span::current().record("govhub.outcome", "adapter-error");
                call_problem(&name, &e)
            })?;
            tracing::Span::current().record("govhub.events", events.len());
            crate::telemetry::inherit(request.as_ref(), &mut events);
            // The adapter names the sources (it is the department's own
            // translator); the quota counts what it made.
            super::senders::take_quota(&hub.metrics.auth, &caller, &events)?;
            let accepted = hub.accept(events, Some(&name)).await;
            tracing::Span::current().record("govhub.outcome", super::events::outcome(&accepted));
            accepted.map_err(|e| match e {
                AcceptError::Invalid { .. } => Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "adapter produced an invalid event",
                    format!("adapter `{name}` produced an invalid {e}"),
                ),
                other => accept_problem(&other),
            })
        },
        span,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(super::Answer { accepted })).into_response())
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
