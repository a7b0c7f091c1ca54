//! `POST /v1/session` (sign in with a token: a session cookie),
//! `GET /v1/session` (who am I: `{"auth": "off"}` on a hub without
//! principals, `"name": null` when nobody), `DELETE /v1/session` (sign out: the
//! session and its streams end). Every sign-in, refused sign-in and
//! sign-out is an audit record.

use super::policy::Routes;
use super::session::COOKIE;
use super::{Authority, Caller, Role};
use crate::ingress::{read_body, Problem};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::sync::Arc;

/// The session routes.
pub fn router(auth: Arc<Authority>) -> Routes {
    Routes::new()
        .add("POST", "/v1/session", sign_in)
        .add("GET", "/v1/session", who)
        .add("DELETE", "/v1/session", sign_out)
        .with_state(auth)
}

/// A sign-in body is a token and nothing else.
const MAX_SIGNIN_BYTES: usize = 4096;

fn session_json(who: &super::Principal, expires_ms: Option<i64>, via: &str) -> serde_json::Value {
    serde_json::json!({
        "auth": "on",
        "name": who.name,
        "role": who.role.as_str(),
        "expires_at": expires_ms.map(crate::journal::rfc3339_ms),
        "via": via,
    })
}

fn cookie(auth: &Authority, value: &str, max_age_s: u64) -> HeaderValue {
    let secure = if auth.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("govhub_session=; Path=/; Max-Age=0"))
}

async fn sign_in(
    State(auth): State<Arc<Authority>>,
    request: Request,
) -> Result<Response, Problem> {
    if !auth.enabled() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "auth off",
            "the hub has no principals: there is nothing to sign in to, every page is open",
        ));
    }
    let body = read_body(request.into_body(), MAX_SIGNIN_BYTES, "the sign-in limit").await?;
    #[derive(serde::Deserialize)]
    struct SignIn {
        token: String,
    }
    let given: SignIn = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid sign-in",
            format!("the body must be JSON {{\"token\": \"…\"}}: {e}"),
        )
        .with_field("token")
    })?;
    // A refusal is on the record, by the principal when the token is one
    // (a department's), else by `anonymous`; never with the token.
    let refuse = |caller: Caller, reason: &str, problem: Problem| {
        let auth = auth.clone();
        let detail = serde_json::json!({ "reason": reason });
        async move {
            auth.metrics.refuse("signin");
            if let Err(e) = auth
                .audit(&caller, "sign-in-refused", "cockpit", detail)
                .await
            {
                tracing::error!("cannot audit a refused sign-in: {e}");
            }
            Err(problem)
        }
    };
    let Some(who) = auth.identify(given.token.trim()) else {
        // Only wrong tokens count against the minute's allowance: a
        // guesser cannot lock the duty officer out, and past it the
        // guesses are not written to the chain one by one.
        if let Err(wait) = auth.signin_allowed() {
            auth.metrics.refuse("signin");
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many sign-ins",
                format!(
                    "more than {} refused sign-ins this minute (auth.signin_per_minute); try again later",
                    auth.config.signin_per_minute
                ),
            )
            .with_retry_after(wait.as_secs().max(1)));
        }
        return refuse(
            Caller::Anonymous,
            "unknown token",
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "sign-in refused",
                "the token is not one of a principal the hub knows",
            )
            .with_field("token"),
        )
        .await;
    };
    let caller = Caller::Principal {
        who: who.clone(),
        session: None,
    };
    if who.role == Role::Department {
        let why = format!(
            "principal `{}` is a department: the cockpit needs the role viewer, operator or admin",
            who.name
        );
        return refuse(
            caller,
            "a department cannot sign in to the cockpit",
            Problem::new(StatusCode::FORBIDDEN, "sign-in refused", why).with_kind("role"),
        )
        .await;
    }
    let (value, session) = match auth.sessions.start(who.clone()) {
        Ok(Ok(started)) => started,
        Ok(Err(super::session::Full(max))) => {
            let why = format!(
                "{max} cockpit sessions are open (auth.max_sessions); sign one out or wait for one to expire"
            );
            return refuse(
                caller,
                "too many sessions",
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "too many sessions", why)
                    .with_kind("session-limit")
                    .with_retry_after(60),
            )
            .await;
        }
        Err(e) => {
            return Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no session",
                e.to_string(),
            ))
        }
    };
    let detail = serde_json::json!({
        "role": who.role.as_str(),
        "expires_at": crate::journal::rfc3339_ms(session.expires_ms),
    });
    if let Err(e) = auth.audit(&caller, "sign-in", "cockpit", detail).await {
        // No record, no session: an operator's hand on the system is
        // always on the record.
        auth.sessions.end(&value);
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "journal unavailable",
            format!("the sign-in could not be recorded in the audit chain: {e}"),
        )
        .with_retry_after(5));
    }
    let mut response = Json(session_json(&who, Some(session.expires_ms), "cookie")).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&auth, &value, auth.sessions.ttl().as_secs()),
    );
    Ok(response)
}

async fn who(
    State(auth): State<Arc<Authority>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Problem> {
    if !auth.enabled() {
        return Ok(Json(serde_json::json!({ "auth": "off" })).into_response());
    }
    match &caller {
        // Asking is open: nobody is signed in (or the session ended).
        Caller::Anonymous => {
            Ok(Json(serde_json::json!({ "auth": "on", "name": null })).into_response())
        }
        Caller::Principal { who, session } => Ok(Json(session_json(
            who,
            session.as_ref().map(|s| s.expires_ms),
            if session.is_some() {
                "cookie"
            } else {
                "bearer"
            },
        ))
        .into_response()),
    }
}

async fn sign_out(State(auth): State<Arc<Authority>>, headers: axum::http::HeaderMap) -> Response {
    if let Some(value) = super::session::cookie_value(&headers) {
        if let Some(who) = auth.sessions.end(value) {
            let caller = Caller::Principal { who, session: None };
            if let Err(e) = auth
                .audit(&caller, "sign-out", "cockpit", serde_json::json!({}))
                .await
            {
                tracing::error!("cannot audit a sign-out: {e}");
            }
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&auth, "", 0));
    response
}
