//! Looking at what became of events: one event with its deliveries, the
//! dead letters, and replaying one.

use super::{journal_problem, App, Problem};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use govhub_sdk::cloudevents;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
pub(super) struct EventQuery {
    source: Option<String>,
}

pub(super) async fn get_event(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<EventQuery>,
) -> Result<Response, Problem> {
    let journal = app.hub.journal.clone();
    let (id2, source) = (id.clone(), q.source.clone());
    let found = tokio::task::spawn_blocking(move || journal.events(&id2, source.as_deref()))
        .await
        .map_err(journal_problem)?
        .map_err(journal_problem)?;
    match found.as_slice() {
        [] => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no such event",
            match &q.source {
                Some(s) => format!("no event with id `{id}` from source `{s}`"),
                None => format!("no event with id `{id}`"),
            },
        )),
        [one] => Ok(Json(serde_json::json!({
            "event": cloudevents::to_json(&one.event),
            "origin": one.origin,
            "received_at": one.received_at,
            "deliveries": one.deliveries,
        }))
        .into_response()),
        many => Err(Problem::new(
            StatusCode::CONFLICT,
            "ambiguous id",
            format!(
                "{} events have id `{id}`; add ?source= one of: {}",
                many.len(),
                many.iter()
                    .map(|s| s.event.source.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_field("source")),
    }
}

#[derive(Deserialize)]
pub(super) struct DeadQuery {
    target: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn dead_letters(
    State(app): State<Arc<App>>,
    Query(q): Query<DeadQuery>,
) -> Result<Response, Problem> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let journal = app.hub.journal.clone();
    let rows =
        tokio::task::spawn_blocking(move || journal.dead_letters(q.target.as_deref(), limit))
            .await
            .map_err(journal_problem)?
            .map_err(journal_problem)?;
    Ok(Json(serde_json::json!({ "dead_letters": rows })).into_response())
}

pub(super) async fn replay(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id: i64 = id.parse().map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid id",
            format!("dead-letter id `{id}` is not a number"),
        )
        .with_field("id")
    })?;
    match app.hub.journal.replay(id).await.map_err(journal_problem)? {
        Some(delivery) => {
            let target = delivery.target.clone();
            app.hub.deliveries.enqueue(&app.hub, vec![delivery], None);
            Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "replayed": id, "target": target })),
            )
                .into_response())
        }
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no such dead letter",
            format!("no dead letter with id {id} (it may have been replayed already)"),
        )),
    }
}
