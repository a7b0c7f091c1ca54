//! The one table that says who may call each route, and the router
//! builder that refuses a route without a row in it.
//!
//! Deny by default, twice over: [`Routes::finish`] refuses to build a
//! router holding a route the table does not name (the hub does not
//! start), and the middleware refuses any request whose matched route has
//! no row (should a route ever be added around the builder).

use super::principal::Role;
use axum::handler::Handler;
use axum::routing::MethodFilter;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: liveness, the cockpit's page shell and assets (no data),
    /// the sign-in routes themselves.
    Open,
    /// `GET /metrics`: `viewer` and above, or anyone with
    /// `auth.metrics_open = true`.
    Metrics,
    /// These roles.
    Roles(&'static [Role]),
}

/// Departments send (each only its own sources).
pub const SEND: &[Role] = &[Role::Department];
/// Every role reads; a department sees only what concerns it.
pub const READ: &[Role] = &[Role::Department, Role::Viewer, Role::Operator, Role::Admin];
/// The cockpit and the read APIs of the whole hub.
pub const VIEW: &[Role] = &[Role::Viewer, Role::Operator, Role::Admin];
/// Replay dead letters, move the manual clock.
pub const OPERATE: &[Role] = &[Role::Operator, Role::Admin];
/// Adapters and the audit chain.
pub const ADMIN: &[Role] = &[Role::Admin];

/// Every route of the hub: method, path (as axum matches it), access.
pub const POLICY: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Access::Open),
    ("GET", "/readyz", Access::Open),
    ("GET", "/metrics", Access::Metrics),
    // The cockpit's shell and assets hold no data: they load, then ask
    // for a session.
    ("GET", "/", Access::Open),
    ("GET", "/cockpit/cockpit.js", Access::Open),
    ("GET", "/cockpit/i18n.js", Access::Open),
    ("GET", "/cockpit/cockpit.css", Access::Open),
    ("GET", "/cockpit/icon.svg", Access::Open),
    ("GET", "/favicon.ico", Access::Open),
    // Signing in is how a caller gets a role; signing out and asking who
    // one is need nothing more than the cookie they act on.
    ("POST", "/v1/session", Access::Open),
    ("GET", "/v1/session", Access::Open),
    ("DELETE", "/v1/session", Access::Open),
    ("POST", "/v1/events", Access::Roles(SEND)),
    ("POST", "/v1/ingest/{adapter}", Access::Roles(SEND)),
    ("GET", "/v1/events/{id}", Access::Roles(READ)),
    ("POST", "/v1/events/{id}/reveal", Access::Roles(ADMIN)),
    ("GET", "/v1/dead-letters", Access::Roles(READ)),
    ("GET", "/v1/dead-letters/{id}", Access::Roles(READ)),
    (
        "POST",
        "/v1/dead-letters/{id}/replay",
        Access::Roles(OPERATE),
    ),
    ("GET", "/v1/cases", Access::Roles(READ)),
    ("GET", "/v1/cases/{id}", Access::Roles(READ)),
    ("GET", "/v1/cases/{id}/flows", Access::Roles(READ)),
    ("GET", "/v1/stats", Access::Roles(VIEW)),
    ("POST", "/v1/clock", Access::Roles(OPERATE)),
    ("GET", "/v1/stream", Access::Roles(VIEW)),
    ("GET", "/v1/cockpit/snapshot", Access::Roles(VIEW)),
    ("GET", "/v1/adapters", Access::Roles(VIEW)),
    ("PUT", "/v1/adapters/{name}", Access::Roles(ADMIN)),
    ("DELETE", "/v1/adapters/{name}", Access::Roles(ADMIN)),
    ("POST", "/v1/adapters/{name}/rollback", Access::Roles(ADMIN)),
    ("GET", "/v1/audit", Access::Roles(ADMIN)),
];

/// The access of a route, `None` when the table has no row for it. `HEAD`
/// is `GET`'s (axum answers it with the `GET` handler).
pub fn lookup(method: &str, path: &str) -> Option<Access> {
    let method = if method == "HEAD" { "GET" } else { method };
    POLICY
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, a)| *a)
}

/// The roles named, for messages: `viewer, operator or admin`.
pub fn describe(roles: &[Role]) -> String {
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    match names.as_slice() {
        [] => "no role".into(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// A router being built, with every route it was given, so the finished
/// one can be checked against [`POLICY`].
pub struct Routes<S = ()> {
    router: axum::Router<S>,
    added: Vec<(&'static str, &'static str)>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            router: axum::Router::new(),
            added: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet.
    pub fn new() -> Routes<S> {
        Routes::default()
    }

    /// Adds `handler` for `method` (`GET`, `POST`, `PUT`, `DELETE`) at
    /// `path`.
    pub fn add<H, T>(mut self, method: &'static str, path: &'static str, handler: H) -> Routes<S>
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = match method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "DELETE" => MethodFilter::DELETE,
            other => panic!("Routes::add: method {other} is not one the hub serves"),
        };
        self.router = self.router.route(path, axum::routing::on(filter, handler));
        self.added.push((method, path));
        self
    }

    /// Gives the routes their state.
    pub fn with_state<S2>(self, state: S) -> Routes<S2> {
        Routes {
            router: self.router.with_state(state),
            added: self.added,
        }
    }
}

impl Routes<()> {
    /// These routes and `other`'s.
    pub fn merge(mut self, other: Routes<()>) -> Routes<()> {
        self.router = self.router.merge(other.router);
        self.added.extend(other.added);
        self
    }

    /// Every route added, method and path.
    pub fn added(&self) -> &[(&'static str, &'static str)] {
        &self.added
    }

    /// The router, once every route has a row in [`POLICY`] and every row
    /// a route; otherwise the routes at fault, named.
    pub fn finish(self) -> Result<axum::Router, String> {
        let missing: Vec<String> = self
            .added
            .iter()
            .filter(|(m, p)| lookup(m, p).is_none())
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "routes without an access policy (add them to auth::policy::POLICY): {}",
                missing.join(", ")
            ));
        }
        let stale: Vec<String> = POLICY
            .iter()
            .filter(|(m, p, _)| !self.added.iter().any(|(am, ap)| am == m && ap == p))
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect();
        if !stale.is_empty() {
            return Err(format!(
                "access policy rows for routes that do not exist: {}",
                stale.join(", ")
            ));
        }
        Ok(self.router)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/v1/cases/{caseid}` and `/v1/cases/{id}` are the same route.
    fn shape(path: &str) -> String {
        let mut out = String::new();
        let mut inside = false;
        for c in path.chars() {
            match c {
                '{' => {
                    inside = true;
                    out.push_str("{}");
                }
                '}' => inside = false,
                _ if !inside => out.push(c),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn the_readme_api_table_names_every_route_with_the_role_of_this_table() {
        let readme = include_str!("../../../README.md");
        // Each table row: the routes it names (`METHOD /path`) and its
        // role column.
        let mut rows: Vec<(Vec<(String, String)>, String)> = Vec::new();
        for line in readme.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split(" | ").collect();
            let routes = cells[0]
                .split('`')
                .skip(1)
                .step_by(2)
                .filter_map(|r| {
                    let (method, rest) = r.split_once(' ')?;
                    let path = rest.split(['[', ' ']).next()?;
                    Some((method.to_string(), shape(path)))
                })
                .collect();
            rows.push((routes, cells.get(1).unwrap_or(&"").to_string()));
        }
        for (method, path, access) in POLICY {
            // The cockpit's assets go with its page (`GET /`).
            if path.starts_with("/cockpit/") || *path == "/favicon.ico" {
                continue;
            }
            let want = (method.to_string(), shape(path));
            let Some((_, role)) = rows.iter().find(|(routes, _)| routes.contains(&want)) else {
                panic!("README's API table has no row for `{method} {path}`");
            };
            let expected = match access {
                Access::Open => "any",
                Access::Metrics => "viewer+ (any with `auth.metrics_open`)",
                Access::Roles(r) if *r == SEND => "department",
                Access::Roles(r) if *r == READ => "department+",
                Access::Roles(r) if *r == VIEW => "viewer+",
                Access::Roles(r) if *r == OPERATE => "operator+",
                Access::Roles(r) if *r == ADMIN => "admin",
                Access::Roles(r) => panic!("no README word for {r:?}"),
            };
            assert!(
                role.starts_with(expected),
                "README gives `{method} {path}` the role `{role}`, the table `{expected}`"
            );
        }
    }

    #[test]
    fn a_route_without_a_policy_is_refused_and_so_is_a_row_without_a_route() {
        let all = POLICY
            .iter()
            .fold(Routes::new(), |r, (m, p, _)| r.add(m, p, || async { "ok" }));
        assert!(all.finish().is_ok());
        let extra = POLICY
            .iter()
            .fold(Routes::new(), |r, (m, p, _)| r.add(m, p, || async { "ok" }))
            .add("POST", "/v1/everything", || async { "ok" });
        let e = extra.finish().unwrap_err();
        assert!(e.contains("POST /v1/everything"), "{e}");
        let short = Routes::<()>::new().add("GET", "/healthz", || async { "ok" });
        let e = short.finish().unwrap_err();
        assert!(e.contains("GET /v1/audit"), "{e}");
    }

    #[test]
    fn roles_are_named_for_people() {
        assert_eq!(describe(VIEW), "viewer, operator or admin");
        assert_eq!(describe(ADMIN), "admin");
        assert_eq!(lookup("HEAD", "/"), Some(Access::Open));
        assert_eq!(lookup("GET", "/v1/nothing"), None);
    }
}
