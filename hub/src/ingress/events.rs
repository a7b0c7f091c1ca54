//! `POST /v1/events`: CloudEvents over HTTP, per the CloudEvents 1.0 HTTP
//! binding: structured (`application/cloudevents+json`), batched
//! (`application/cloudevents-batch+json`) and binary (`ce-*` headers).

use super::{accept_problem, read_body, App, Problem};
use crate::auth::Caller;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use govhub_sdk::cloudevents;
use std::sync::Arc;

fn invalid(e: cloudevents::Error) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid CloudEvent", e.to_string())
        .with_field(&e.attribute)
}

pub(super) async fn post_events(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let body = read_body(
        body,
        app.hub.config.server.max_body_bytes,
        "server.max_body_bytes",
    )
    .await?;
    let headers = || {
        parts
            .headers
            .iter()
            .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
    };
    let mut events = if cloudevents::is_binary(headers()) {
        vec![cloudevents::from_binary(headers(), &body).map_err(invalid)?]
    } else {
        let content_type = parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        match cloudevents::media_type_essence(content_type).as_str() {
            "application/cloudevents+json" => {
                vec![cloudevents::from_slice(&body).map_err(invalid)?]
            }
            "application/cloudevents-batch+json" => {
                cloudevents::batch_from_slice(&body).map_err(invalid)?
            }
            _ => {
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "not a CloudEvent",
                    format!(
                        "content-type `{content_type}` and no ce-specversion header: send \
                         application/cloudevents+json, application/cloudevents-batch+json, \
                         or a binary-mode event with ce-* headers"
                    ),
                )
                .with_field("content-type"))
            }
        }
    };
    let metrics = &app.hub.metrics.auth;
    super::senders::check_sources(metrics, &caller, &events)?;
    super::senders::take_quota(metrics, &caller, &events)?;
    // The request's span: the sender's trace its parent.
    let span = tracing::debug_span!(
        "ingest",
        govhub.route = "/v1/events",
        govhub.events = events.len(),
        govhub.outcome = tracing::field::Empty,
    );
    crate::telemetry::adopt(&span, &parts.headers, &mut events);
    let accepted =
        tracing::Instrument::instrument(app.hub.accept(events, None), span.clone()).await;
    span.record("govhub.outcome", outcome(&accepted));
    let accepted = accepted.map_err(|e| accept_problem(&e))?;
    Ok((StatusCode::ACCEPTED, Json(super::Answer { accepted })).into_response())
}

/// An `ingest` span's outcome.
pub(super) fn outcome<T>(accepted: &Result<T, crate::hub::AcceptError>) -> &'static str {
    match accepted {
        Ok(_) => "accepted",
        Err(crate::hub::AcceptError::Invalid { .. }) => "invalid",
        Err(crate::hub::AcceptError::Backpressure { .. }) => "backpressure",
        Err(crate::hub::AcceptError::Journal(_)) => "journal-unavailable",
    }
}
