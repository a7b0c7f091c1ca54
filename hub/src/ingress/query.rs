//! Looking at what became of events: one event with its deliveries, the
//! dead letters, and replaying one.

use super::{journal_problem, scope, App, Problem};
use crate::auth::{Caller, Names};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use govhub_sdk::cloudevents;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
pub(super) struct EventQuery {
    source: Option<String>,
}

pub(super) async fn get_event(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<EventQuery>,
) -> Result<Response, Problem> {
    let mut found = app
        .hub
        .journal
        .events(&id, q.source.as_deref())
        .await
        .map_err(journal_problem)?;
    if let Some(who) = caller.department() {
        found.retain(|e| scope::sees_event(who, e));
        for e in &mut found {
            scope::own_deliveries(who, e);
        }
    }
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
            "event": cloudevents::to_json(
                &app.hub.governance.read(&one.event, scope::audience(&caller, one))
            ),
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
    Extension(caller): Extension<Caller>,
    Query(q): Query<DeadQuery>,
) -> Result<Response, Problem> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    // A department reads its own adapters' only.
    let targets: Option<Vec<String>> = match (caller.department(), q.target) {
        (Some(who), _) if !who.reads => Some(Vec::new()),
        (Some(who), Some(t)) => Some(if who.adapters.contains(&t) {
            vec![t]
        } else {
            Vec::new()
        }),
        (Some(who), None) => match &who.adapters {
            Names::All => None,
            Names::Some(list) => Some(list.clone()),
        },
        (None, t) => t.map(|t| vec![t]),
    };
    let rows = app
        .hub
        .journal
        .dead_letters(targets.as_deref(), limit)
        .await
        .map_err(journal_problem)?;
    Ok(Json(serde_json::json!({ "dead_letters": rows })).into_response())
}

fn dead_letter_id(id: &str) -> Result<i64, Problem> {
    id.parse().map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid id",
            format!("dead-letter id `{id}` is not a number"),
        )
        .with_field("id")
    })
}

fn no_dead_letter(id: i64) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no such dead letter",
        format!("no dead letter with id {id} (it may have been replayed already)"),
    )
}

pub(super) async fn dead_letter(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = dead_letter_id(&id)?;
    let found = app
        .hub
        .journal
        .dead_letter(id)
        .await
        .map_err(journal_problem)?
        .filter(|d| {
            caller
                .department()
                .is_none_or(|who| scope::sees_dead_letter(who, d))
        });
    match found {
        Some(d) => Ok(Json(d).into_response()),
        None => Err(no_dead_letter(id)),
    }
}

pub(super) async fn replay(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = dead_letter_id(&id)?;
    let Some(dead) = app
        .hub
        .journal
        .dead_letter(id)
        .await
        .map_err(journal_problem)?
    else {
        return Err(no_dead_letter(id));
    };
    // On the record before it happens: a replay nobody could account for
    // is not made.
    app.hub
        .auth
        .audit(
            &caller,
            "replay",
            &dead.target,
            serde_json::json!({ "dead_letter": id, "event_id": dead.event_id }),
        )
        .await
        .map_err(journal_problem)?;
    let Some(delivery) = app.hub.journal.replay(id).await.map_err(journal_problem)? else {
        // Replayed by someone else in between.
        return Err(no_dead_letter(id));
    };
    let target = delivery.target.clone();
    app.hub.deliveries.enqueue(vec![delivery], None);
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "replayed": id, "target": target })),
    )
        .into_response())
}

#[derive(Deserialize)]
pub(super) struct Reveal {
    purpose: Option<String>,
}

/// The longest purpose a reveal may state.
const MAX_PURPOSE: usize = 500;

/// `POST /v1/events/{id}/reveal[?source=]` `{"purpose"}`: an admin reads
/// one event's personal information in the clear, for a stated purpose,
/// on the record before it is shown.
pub(super) async fn reveal(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<EventQuery>,
    Json(body): Json<Reveal>,
) -> Result<Response, Problem> {
    let purpose = body.purpose.unwrap_or_default().trim().to_string();
    if purpose.is_empty() || purpose.chars().count() > MAX_PURPOSE {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "purpose needed",
            format!(
                "a reveal states its purpose (`purpose`, 1 to {MAX_PURPOSE} characters): it is kept in the audit chain"
            ),
        )
        .with_field("purpose"));
    }
    let found = app
        .hub
        .journal
        .events(&id, q.source.as_deref())
        .await
        .map_err(journal_problem)?;
    let one = match found.as_slice() {
        [one] => one,
        [] => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "no such event",
                format!("no event with id `{id}`"),
            ))
        }
        _ => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "ambiguous id",
                format!("several events have id `{id}`; add ?source="),
            )
            .with_field("source"))
        }
    };
    app.hub
        .auth
        .audit(
            &caller,
            "reveal",
            &one.event.source,
            serde_json::json!({
                "event": one.event.id,
                "caseid": one.event.caseid,
                "purpose": purpose,
            }),
        )
        .await
        .map_err(journal_problem)?;
    Ok(Json(serde_json::json!({
        "event": cloudevents::to_json(&one.event),
        "revealed_to": caller.name(),
        "purpose": purpose,
    }))
    .into_response())
}
