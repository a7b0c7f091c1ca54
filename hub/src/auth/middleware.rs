//! The layer in front of every route: finds the route's row in the policy
//! table, finds the caller (a bearer token, else the session cookie),
//! refuses with `401` (who are you?) or `403` (not with your role), and
//! hands the handler a [`Caller`].

use super::policy::{self, Access};
use super::{session, Authority, Caller};
use crate::ingress::Problem;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Where credentials were looked for and what was found.
enum Found {
    Nothing,
    Principal(Caller),
    /// A bearer token no principal has.
    UnknownToken,
    /// A cookie of no live session (forged, expired, signed out).
    NoSession,
}

impl Authority {
    fn credentials(&self, headers: &axum::http::HeaderMap) -> Found {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(token) = bearer {
            return match self.identify(token) {
                Some(who) => Found::Principal(Caller::Principal { who, session: None }),
                None => Found::UnknownToken,
            };
        }
        match session::cookie_value(headers) {
            Some(value) => match self.sessions.find(value) {
                Some(s) => Found::Principal(Caller::Principal {
                    who: s.principal.clone(),
                    session: Some(s),
                }),
                None => Found::NoSession,
            },
            None => Found::Nothing,
        }
    }

    /// The caller of a request to a route with `access`, or the problem
    /// refusing it.
    pub fn decide(
        &self,
        access: Access,
        headers: &axum::http::HeaderMap,
    ) -> Result<Caller, Problem> {
        let found = self.credentials(headers);
        let roles = match access {
            Access::Open => {
                return Ok(match found {
                    Found::Principal(c) => c,
                    _ => Caller::Anonymous,
                })
            }
            Access::Metrics if self.config.metrics_open => return Ok(Caller::Anonymous),
            Access::Metrics => policy::VIEW,
            Access::Roles(roles) => roles,
        };
        if !self.enabled() {
            // No principals: open, as a developer's loopback hub always
            // was, but for the admin API, which nobody can use then.
            if roles == policy::ADMIN {
                return Err(Problem::new(
                    StatusCode::NOT_FOUND,
                    "admin API off",
                    format!(
                        "the admin API is off: the hub has no principal; set the environment variable {} \
                         (auth.admin_token_env) to a token, or add an admin to [[auth.principals]]",
                        self.config.admin_token_env
                    ),
                ));
            }
            return Ok(Caller::Anonymous);
        }
        let caller = match found {
            Found::Principal(c) => c,
            Found::Nothing => {
                self.metrics.refuse("unauthenticated");
                return Err(unauthenticated(
                    "no credentials: send `authorization: Bearer <token>` (a principal's token), \
                     or sign in to the cockpit",
                ));
            }
            Found::UnknownToken => {
                self.metrics.refuse("unauthenticated");
                return Err(unauthenticated(
                    "the bearer token is not one of a principal the hub knows",
                ));
            }
            Found::NoSession => {
                self.metrics.refuse("unauthenticated");
                return Err(unauthenticated(
                    "the session has ended (expired, signed out, or the hub restarted): sign in again",
                ));
            }
        };
        let who = caller.principal().expect("a principal");
        if !roles.contains(&who.role) {
            self.metrics.refuse("forbidden");
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this needs the role {}; principal `{}` has the role {}",
                    policy::describe(roles),
                    who.name,
                    who.role.as_str()
                ),
            )
            .with_kind("role"));
        }
        Ok(caller)
    }
}

fn is_safe(method: &axum::http::Method) -> bool {
    matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD)
}

/// A write made with the session cookie must come from the cockpit's own
/// page: the browser says where a request comes from (`Sec-Fetch-Site`,
/// `Origin`), and a page of another origin (another port or a sibling
/// host, which SameSite counts as the same site) is refused.
fn same_origin(headers: &axum::http::HeaderMap) -> Result<(), Problem> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let refused = |why: String| {
        Err(Problem::new(StatusCode::FORBIDDEN, "cross-site request", why).with_kind("cross-site"))
    };
    if let Some(site) = header("sec-fetch-site") {
        if site != "same-origin" {
            return refused(format!(
                "a write with the session cookie must come from the cockpit's own page, not a {site} one"
            ));
        }
    }
    if let (Some(origin), Some(host)) = (header("origin"), header("host")) {
        let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or(origin);
        if !authority.eq_ignore_ascii_case(host) {
            return refused(format!(
                "a write with the session cookie came from {origin}, not from the hub's own page ({host})"
            ));
        }
    }
    Ok(())
}

fn unauthenticated(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
        .with_header("www-authenticate", "Bearer")
}

/// The middleware: `route_layer` it over the finished router.
pub async fn authorize(
    State(auth): State<Arc<Authority>>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = matched.as_ref().map(|m| m.as_str()).unwrap_or("");
    let method = request.method().as_str().to_string();
    let Some(access) = policy::lookup(&method, path) else {
        let allowed: Vec<&str> = policy::POLICY
            .iter()
            .filter(|(_, p, _)| *p == path)
            .map(|(m, _, _)| *m)
            .collect();
        if !allowed.is_empty() {
            return Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                format!("{path} answers {}, not {method}", allowed.join(", ")),
            )
            .into_response();
        }
        // Deny by default: a route that reached the server without a row.
        return Problem::new(
            StatusCode::FORBIDDEN,
            "no access policy",
            format!("{method} {path} has no access policy: refused"),
        )
        .into_response();
    };
    match auth.decide(access, request.headers()) {
        Ok(caller) if caller.session().is_some() && !is_safe(request.method()) => {
            if let Err(p) = same_origin(request.headers()) {
                auth.metrics.refuse("cross-site");
                return p.into_response();
            }
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(problem) => problem.into_response(),
    }
}
