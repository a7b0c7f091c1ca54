//! The closed loop, read: cases, one case with its timeline, statistics;
//! and the manual clock of drills and tests.

use super::{journal_problem, scope, App, Problem};
use crate::auth::Caller;
use crate::cases::{from_doc, model::Stage, stats, view};
use crate::journal::{CaseFilter, CaseStatus};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
pub(super) struct CasesQuery {
    status: Option<String>,
    grid: Option<String>,
    category: Option<String>,
    overdue: Option<bool>,
    limit: Option<usize>,
}

pub(super) async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<CasesQuery>,
) -> Result<Response, Problem> {
    let status = match q.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some("open") => Some(CaseStatus::Open),
        Some("closed") => Some(CaseStatus::Closed),
        Some(s) => match Stage::parse(s) {
            Some(stage) => Some(CaseStatus::Stage(stage as u8)),
            None => {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid status",
                    format!(
                        "status `{s}` is not one of open, closed, reported, dispatched, accepted, on-scene, resolved"
                    ),
                )
                .with_field("status"))
            }
        },
    };
    let now = app.hub.clock.now_ms();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let department = caller
        .principal()
        .filter(|p| p.role == crate::auth::Role::Department)
        .cloned();
    let mut filter = CaseFilter {
        status,
        grid: q.grid.filter(|g| !g.is_empty()),
        category: q.category.filter(|c| !c.is_empty()),
        overdue_at: q.overdue.unwrap_or(false).then_some(now),
        limit,
        offset: 0,
    };
    // A department's cases are found among all of them, newest first, a
    // page at a time until `limit` of its own are there.
    let mut cases = Vec::new();
    loop {
        let page = app
            .hub
            .journal
            .cases(&filter)
            .await
            .map_err(journal_problem)?;
        let last = page.len() < filter.limit;
        cases.extend(page.iter().filter_map(|d| from_doc(d)).filter(|c| {
            department
                .as_ref()
                .is_none_or(|who| scope::sees_case(who, c))
        }));
        if department.is_none() || last || cases.len() >= limit {
            break;
        }
        filter.offset += filter.limit;
    }
    cases.truncate(limit);
    let cases: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            let mut v = view(c, now);
            // The list is a summary; the timeline is on the case itself.
            if let Some(o) = v.as_object_mut() {
                o.remove("timeline");
            }
            v
        })
        .collect();
    Ok(Json(serde_json::json!({ "cases": cases })).into_response())
}

pub(super) async fn one(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let doc = app.hub.journal.case(&id).await.map_err(journal_problem)?;
    let visible = doc.as_deref().and_then(from_doc).filter(|c| {
        caller
            .department()
            .is_none_or(|who| scope::sees_case(who, c))
    });
    match visible {
        Some(case) => Ok(Json(view(&case, app.hub.clock.now_ms())).into_response()),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no such case",
            format!("no case `{id}`"),
        )),
    }
}

pub(super) async fn statistics(State(app): State<Arc<App>>) -> Result<Response, Problem> {
    let docs = app
        .hub
        .journal
        .cases(&CaseFilter {
            limit: usize::MAX >> 1,
            ..Default::default()
        })
        .await
        .map_err(journal_problem)?;
    // Every case parsed and counted: off the runtime's threads.
    let stats = tokio::task::spawn_blocking(move || {
        let cases: Vec<_> = docs.iter().filter_map(|d| from_doc(d)).collect();
        stats::compute(&cases)
    })
    .await
    .map_err(journal_problem)?;
    Ok(Json(stats).into_response())
}

#[derive(Deserialize)]
pub(super) struct Advance {
    advance_s: i64,
}

pub(super) async fn advance_clock(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<Advance>,
) -> Result<Response, Problem> {
    if body.advance_s < 0 {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid advance",
            "advance_s must not be negative: the clock only moves forward",
        )
        .with_field("advance_s"));
    }
    if app.hub.manual_clock.is_some() {
        // On the record before it happens: a step nobody could account
        // for is not taken.
        app.hub
            .auth
            .audit(
                &caller,
                "clock",
                "clock",
                serde_json::json!({ "advance_s": body.advance_s }),
            )
            .await
            .map_err(journal_problem)?;
    }
    match app
        .hub
        .advance_clock(body.advance_s * 1000)
        .await
        .map_err(journal_problem)?
    {
        Some(now) => Ok(Json(serde_json::json!({
            "now": crate::journal::rfc3339_ms(now)
        }))
        .into_response()),
        None => Err(Problem::new(
            StatusCode::CONFLICT,
            "system clock",
            "the clock can only be moved when cases.clock = \"manual\"",
        )),
    }
}

/// `GET /v1/cases/{caseid}/flows`: what of the case's events went to each
/// department, what was withheld, under which policy (its flow records);
/// a department sees its own.
pub(super) async fn flows(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let journal = app.hub.journal.clone();
    let department = caller
        .principal()
        .filter(|p| p.role == crate::auth::Role::Department)
        .cloned();
    let case = journal.case(&id).await.map_err(journal_problem)?;
    let records = journal
        .audit_query(&crate::journal::AuditQuery {
            action: Some("flow".into()),
            caseid: Some(id.clone()),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .map_err(journal_problem)?;
    let visible = case.as_deref().and_then(from_doc).filter(|c| {
        department
            .as_ref()
            .is_none_or(|who| scope::sees_case(who, c))
    });
    if visible.is_none() {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no such case",
            format!("no case `{id}`"),
        ));
    }
    let flows: Vec<serde_json::Value> = records
        .into_iter()
        .filter(|r| {
            department
                .as_ref()
                .is_none_or(|who| who.adapters.contains(&r.target))
        })
        .map(|r| {
            let mut detail: serde_json::Value = serde_json::from_str(&r.detail).unwrap_or_default();
            if let Some(d) = detail.as_object_mut() {
                d.insert("target".into(), r.target.into());
                d.insert("at".into(), crate::journal::rfc3339_ms(r.at_ms).into());
                d.insert("audit_seq".into(), r.seq.into());
            }
            detail
        })
        .collect();
    Ok(Json(serde_json::json!({ "caseid": id, "flows": flows })).into_response())
}
