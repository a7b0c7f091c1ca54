//! The admin API: `GET /v1/adapters` (viewers too), `PUT /v1/adapters/{name}`,
//! `DELETE /v1/adapters/{name}`, `POST /v1/adapters/{name}/rollback`,
//! `GET /v1/audit`. Who may call each is in `crate::auth::policy`; the
//! caller's principal is the actor of each audit record.

use super::versions::{Candidate, Origin};
use crate::auth::policy::Routes;
use crate::auth::Caller;
use crate::hub::Hub;
use crate::ingress::{read_body, Problem};
use crate::journal::AuditQuery;
use crate::runtime::Manifest;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use std::sync::Arc;

struct Admin {
    hub: Arc<Hub>,
}

/// The admin routes.
pub fn router(hub: Arc<Hub>) -> Routes {
    Routes::new()
        .add("GET", "/v1/adapters", list)
        .add("PUT", "/v1/adapters/{name}", load)
        .add("DELETE", "/v1/adapters/{name}", unload)
        .add("POST", "/v1/adapters/{name}/rollback", rollback)
        .add("GET", "/v1/audit", audit)
        .with_state(Arc::new(Admin { hub }))
}

fn failed(e: anyhow::Error) -> Problem {
    let text = format!("{e:#}");
    let status = if text.contains("is not loaded") || text.contains("no earlier version") {
        StatusCode::CONFLICT
    } else if text.contains("journal") {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Problem::new(status, "refused", text)
}

async fn list(State(a): State<Arc<Admin>>) -> Result<Response, Problem> {
    let hub = &a.hub;
    let mut out = Vec::new();
    for name in hub.adapter_names() {
        let Some(l) = hub.loaded(&name) else { continue };
        let d = &l.adapter.description;
        let versions = hub.journal.versions(&name).unwrap_or_default();
        let s = &l.adapter.stats;
        use std::sync::atomic::Ordering::Relaxed;
        out.push(serde_json::json!({
            "name": name,
            "describe": { "name": d.name, "version": d.version, "department": d.department },
            "sha256": l.adapter.sha256,
            "version_id": l.version_id,
            "origin": l.origin,
            "signed": l.signed,
            "loaded_at": crate::journal::rfc3339_ms(l.loaded_ms),
            "quarantined": hub.quarantined(&name),
            "can_roll_back": versions.iter().any(|v| v.id < l.version_id),
            "versions": versions.iter().map(|v| serde_json::json!({
                "id": v.id, "sha256": v.sha256, "origin": v.origin,
                "loaded_at": crate::journal::rfc3339_ms(v.loaded_ms), "active": v.active,
            })).collect::<Vec<_>>(),
                        "queue_depth": hub.deliveries.depth(&name),
            // What its manifest asks to see, and what the hub grants.
            "clearance": {
                "requested": l.adapter.manifest.clearance,
                "granted": hub.governance.grant(&name).0.iter()
                    .map(|(c, a)| (c.as_str().to_string(), serde_json::Value::from(a.as_str())))
                    .collect::<serde_json::Map<_, _>>(),
                "broken": hub.governance.broken(&name),
            },
            "stats": {
                "calls": s.calls.load(Relaxed),
                "traps": s.traps.load(Relaxed),
                "deadline_hits": s.deadline_hits.load(Relaxed),
                "instances_created": s.instances_created.load(Relaxed),
                "idle_instances": l.adapter.idle_instances(),
                "memory_bytes": l.adapter.memory_bytes(),
            },
        }));
    }
    Ok(Json(serde_json::json!({ "adapters": out })).into_response())
}

/// `PUT /v1/adapters/{name}` with JSON `{"manifest": TOML text, "module":
/// base64 of the .wasm, "signature": base64 (optional)}`.
async fn load(
    State(a): State<Arc<Admin>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    request: Request<Body>,
) -> Result<Response, Problem> {
    let actor = caller.name();
    let hub = &a.hub;
    let body = read_body(
        request.into_body(),
        hub.config.server.max_upload_bytes,
        "server.max_upload_bytes",
    )
    .await?;
    #[derive(serde::Deserialize)]
    struct Upload {
        manifest: String,
        module: String,
        signature: Option<String>,
    }
    let up: Upload = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid upload",
            format!("the body must be JSON {{\"manifest\", \"module\", \"signature\"?}}: {e}"),
        )
    })?;
    let module = base64::engine::general_purpose::STANDARD
        .decode(up.module.trim())
        .map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid upload",
                format!("`module` is not base64: {e}"),
            )
            .with_field("module")
        })?;
    // Staged under the modules folder; the load copies it under its hash.
    let staging = hub.modules_dir().join("staging");
    std::fs::create_dir_all(&staging).map_err(|e| failed(e.into()))?;
    let path = staging.join(format!("{}.wasm", uuid::Uuid::new_v4()));
    std::fs::write(&path, &module).map_err(|e| failed(e.into()))?;
    let result = async {
        let mut manifest = Manifest::parse(&up.manifest, &path.with_extension("toml"))?;
        if manifest.name != name {
            anyhow::bail!(
                "the manifest names the adapter `{}`, the URL `{name}`",
                manifest.name
            );
        }
        manifest.wasm = path.clone();
        hub.install(
            Candidate {
                manifest,
                text: up.manifest.clone(),
                signature: up.signature.clone(),
            },
            Origin::Admin,
            actor,
        )
        .await
    }
    .await;
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(swapped) => Ok((StatusCode::OK, Json(swapped)).into_response()),
        Err(e) => Err(failed(e)),
    }
}

async fn unload(
    State(a): State<Arc<Admin>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    a.hub.unload(&name, caller.name()).await.map_err(failed)?;
    Ok(Json(serde_json::json!({ "unloaded": name })).into_response())
}

async fn rollback(
    State(a): State<Arc<Admin>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let swapped = a.hub.rollback(&name, caller.name()).await.map_err(failed)?;
    Ok(Json(swapped).into_response())
}

#[derive(serde::Deserialize)]
struct AuditParams {
    principal: Option<String>,
    action: Option<String>,
    case: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

/// `GET /v1/audit[?principal=&action=&case=&after=&limit=]`: the chain in
/// order, a page at a time (`next_after` continues it); `case` gives a
/// case's flow records.
async fn audit(
    State(a): State<Arc<Admin>>,
    Query(p): Query<AuditParams>,
) -> Result<Response, Problem> {
    let limit = p.limit.unwrap_or(1000).clamp(1, 10_000);
    let query = AuditQuery {
        actor: p.principal.filter(|s| !s.is_empty()),
        action: p.action.filter(|s| !s.is_empty()),
        caseid: p.case.filter(|s| !s.is_empty()),
        after: p.after.unwrap_or(0).max(0),
        limit,
    };
    let log = a
        .hub
        .journal
        .audit_query(&query)
        .await
        .map_err(|e| failed(e.into()))?;
    let next = (log.len() == limit)
        .then(|| log.last().map(|r| r.seq))
        .flatten();
    Ok(Json(serde_json::json!({ "audit": log, "next_after": next })).into_response())
}
