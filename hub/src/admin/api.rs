//! The admin API: `GET /v1/adapters`, `PUT /v1/adapters/{name}`,
//! `DELETE /v1/adapters/{name}`, `POST /v1/adapters/{name}/rollback`,
//! `GET /v1/audit`. Every call needs `authorization: Bearer <token>`, the
//! token being the value of the environment variable named by
//! `auth.admin_token_env`; without that variable the admin API is off.

use super::audit::actor_of_token;
use super::versions::{Candidate, Origin};
use crate::hub::Hub;
use crate::ingress::{read_body, Problem};
use crate::runtime::Manifest;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use base64::Engine as _;
use std::sync::Arc;

struct Admin {
    hub: Arc<Hub>,
    token: Option<String>,
}

/// The admin routes.
pub fn router(hub: Arc<Hub>) -> axum::Router {
    let var = &hub.config.auth.admin_token_env;
    let token = std::env::var(var).ok().filter(|t| !t.is_empty());
    let admin = Arc::new(Admin { hub, token });
    axum::Router::new()
        .route("/v1/adapters", get(list))
        .route("/v1/adapters/{name}", put(load).delete(unload))
        .route("/v1/adapters/{name}/rollback", post(rollback))
        .route("/v1/audit", get(audit))
        .with_state(admin)
}

impl Admin {
    /// The caller's audit identity, or the problem refusing it.
    fn authorize(&self, headers: &HeaderMap) -> Result<String, Problem> {
        let Some(token) = &self.token else {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "admin API off",
                format!(
                    "the admin API is off: set the environment variable {} (auth.admin_token_env) to a token",
                    self.hub.config.auth.admin_token_env
                ),
            ));
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if g == token => Ok(actor_of_token(g)),
            _ => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the admin API needs `authorization: Bearer <token>`",
            )
            .with_header("www-authenticate", "Bearer")),
        }
    }
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

async fn list(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, Problem> {
    a.authorize(&headers)?;
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
    Path(name): Path<String>,
    request: Request<Body>,
) -> Result<Response, Problem> {
    let actor = a.authorize(request.headers())?;
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
            &actor,
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
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let actor = a.authorize(&headers)?;
    a.hub.unload(&name, &actor).await.map_err(failed)?;
    Ok(Json(serde_json::json!({ "unloaded": name })).into_response())
}

async fn rollback(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let actor = a.authorize(&headers)?;
    let swapped = a.hub.rollback(&name, &actor).await.map_err(failed)?;
    Ok(Json(swapped).into_response())
}

async fn audit(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, Problem> {
    a.authorize(&headers)?;
    let log = a.hub.journal.audit_log().map_err(|e| failed(e.into()))?;
    Ok(Json(serde_json::json!({ "audit": log })).into_response())
}
