//! The router: decides which adapters must act on an event, and why.
//!
//! Targets come from two places: the `[[routes]]` of the hub config (match
//! on type glob, category prefix, grid prefix, minimum severity) and each
//! adapter's subscriptions (type globs). The adapter an event came from is
//! never a target of it: a department does not need its own report back,
//! and it would loop.

pub mod grids;

use govhub_sdk::{Event, Severity};
use serde::{Deserialize, Serialize};

/// An event-type glob such as `gov.incident.*` (`*` matches any run of
/// characters, `?` one character).
#[derive(Debug, Clone)]
pub struct TypeGlob {
    text: String,
    matcher: globset::GlobMatcher,
}

impl TypeGlob {
    /// Compiles a glob; the error names it.
    pub fn new(text: &str) -> Result<TypeGlob, String> {
        if text.trim().is_empty() {
            return Err("an event-type glob must not be empty".into());
        }
        let glob = globset::GlobBuilder::new(text)
            .literal_separator(false)
            .build()
            .map_err(|e| format!("`{text}` is not a valid glob: {e}"))?;
        Ok(TypeGlob {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    /// Whether `ty` matches.
    pub fn matches(&self, ty: &str) -> bool {
        self.matcher.is_match(ty)
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The `match` table of a route. Every given field must match.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Event-type glob, e.g. `gov.incident.*`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Category prefix by dotted segments: `safety` matches `safety.water`.
    pub category: Option<String>,
    /// Grid prefix by `/` segments: `yingfeng/yingyi` matches
    /// `yingfeng/yingyi/2`.
    pub grid: Option<String>,
    /// Minimum severity: `major` matches `major` and `critical`.
    pub severity: Option<String>,
    /// Extension attributes that must have exactly these values, e.g.
    /// `{ escalatedto = "street" }` for escalations to the street level.
    #[serde(default)]
    pub extensions: std::collections::BTreeMap<String, String>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Why the route exists, in words; stored with each routing decision.
    pub name: String,
    /// What it matches.
    #[serde(rename = "match", default)]
    pub match_: RouteMatch,
    /// Adapters that receive what matches.
    pub to: Vec<String>,
}

/// A target chosen for an event, and the rule that chose it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The adapter.
    pub adapter: String,
    /// `route: <name>` or `subscription: <glob>`.
    pub rule: String,
}

struct Route {
    name: String,
    type_: Option<TypeGlob>,
    category: Option<String>,
    grid: Option<String>,
    severity: Option<Severity>,
    extensions: Vec<(String, String)>,
    to: Vec<String>,
}

/// The compiled routes.
pub struct Router {
    routes: Vec<Route>,
}

/// `value` equals `prefix` or continues it after `sep`.
pub(crate) fn segment_prefix(value: &str, prefix: &str, sep: char) -> bool {
    let prefix = prefix.trim_end_matches(sep);
    value == prefix
        || (value.starts_with(prefix) && value[prefix.len()..].starts_with(sep))
        || prefix.is_empty()
}

impl Router {
    /// Compiles the routes; an error names the route and the field.
    pub fn new(routes: &[RouteConfig]) -> Result<Router, String> {
        let routes = routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at =
                    |field: &str, m: String| format!("routes[{i}] (`{}`) {field}: {m}", r.name);
                if r.to.is_empty() {
                    return Err(at("to", "names no adapter".into()));
                }
                Ok(Route {
                    name: r.name.clone(),
                    type_: r
                        .match_
                        .type_
                        .as_deref()
                        .map(TypeGlob::new)
                        .transpose()
                        .map_err(|m| at("match.type", m))?,
                    category: r.match_.category.clone(),
                    grid: r.match_.grid.clone(),
                    severity: r
                        .match_
                        .severity
                        .as_deref()
                        .map(|s| {
                            Severity::parse(s).ok_or_else(|| {
                                at(
                                    "match.severity",
                                    format!("`{s}` is not one of info, minor, major, critical"),
                                )
                            })
                        })
                        .transpose()?,
                    extensions: r
                        .match_
                        .extensions
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    to: r.to.clone(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Router { routes })
    }

    /// The adapters every route sends to (to check they exist).
    pub fn route_targets(&self) -> impl Iterator<Item = (&str, &str)> {
        self.routes
            .iter()
            .flat_map(|r| r.to.iter().map(move |t| (r.name.as_str(), t.as_str())))
    }

    /// The targets of `event`: matching routes first (in config order), then
    /// subscriptions; each adapter once, with the first rule that chose it;
    /// never `origin`.
    pub fn route<'a>(
        &self,
        event: &Event,
        origin: Option<&str>,
        subscriptions: impl IntoIterator<Item = (&'a str, &'a [TypeGlob])>,
    ) -> Vec<Target> {
        let mut targets: Vec<Target> = Vec::new();
        let mut add = |adapter: &str, rule: String| {
            if Some(adapter) != origin && !targets.iter().any(|t| t.adapter == adapter) {
                targets.push(Target {
                    adapter: adapter.to_string(),
                    rule,
                });
            }
        };
        for r in &self.routes {
            let matches = r.type_.as_ref().is_none_or(|g| g.matches(&event.type_))
                && r.category.as_deref().is_none_or(|p| {
                    event
                        .category
                        .as_deref()
                        .is_some_and(|c| segment_prefix(c, p, '.'))
                })
                && r.grid.as_deref().is_none_or(|p| {
                    event
                        .grid
                        .as_deref()
                        .is_some_and(|g| segment_prefix(g, p, '/'))
                })
                && r.severity
                    .is_none_or(|min| event.severity.is_some_and(|s| s.rank() >= min.rank()))
                && r.extensions
                    .iter()
                    .all(|(k, v)| event.extension(k) == Some(v.as_str()));
            if matches {
                for to in &r.to {
                    add(to, format!("route: {}", r.name));
                }
            }
        }
        for (adapter, globs) in subscriptions {
            if let Some(g) = globs.iter().find(|g| g.matches(&event.type_)) {
                add(adapter, format!("subscription: {}", g.as_str()));
            }
        }
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, m: RouteMatch, to: &[&str]) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            match_: m,
            to: to.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn event() -> Event {
        Event::new("gov.incident.reported")
            .with_category("safety.water")
            .with_grid("yingfeng/yingyi/2")
            .with_severity(Severity::Major)
    }

    #[test]
    fn routes_match_on_every_given_field() {
        let router = Router::new(&[
            route(
                "river",
                RouteMatch {
                    type_: Some("gov.incident.*".into()),
                    category: Some("safety".into()),
                    ..Default::default()
                },
                &["police", "four-platforms"],
            ),
            route(
                "serious in yingyi",
                RouteMatch {
                    grid: Some("yingfeng/yingyi".into()),
                    severity: Some("major".into()),
                    ..Default::default()
                },
                &["street-command"],
            ),
            route(
                "critical only",
                RouteMatch {
                    severity: Some("critical".into()),
                    ..Default::default()
                },
                &["fire"],
            ),
            route(
                "no prefix confusion",
                RouteMatch {
                    category: Some("safe".into()),
                    grid: Some("yingfeng/yingyi/2".into()),
                    ..Default::default()
                },
                &["wrong"],
            ),
        ])
        .unwrap();
        let globs = [TypeGlob::new("gov.*").unwrap()];
        let subs = [("webhook", &globs[..]), ("police", &globs[..])];
        let targets = router.route(&event(), Some("video-patrol"), subs);
        let names: Vec<_> = targets.iter().map(|t| t.adapter.as_str()).collect();
        assert_eq!(
            names,
            ["police", "four-platforms", "street-command", "webhook"]
        );
        assert_eq!(targets[0].rule, "route: river");
        assert_eq!(targets[3].rule, "subscription: gov.*");
    }

    #[test]
    fn routes_can_require_extension_values() {
        let mut m = RouteMatch {
            type_: Some("gov.case.escalated".into()),
            ..Default::default()
        };
        m.extensions.insert("escalatedto".into(), "street".into());
        let router = Router::new(&[route("street", m, &["command-center"])]).unwrap();
        let e = Event::new("gov.case.escalated");
        assert!(router
            .route(
                &e.clone().with_extension("escalatedto", "community"),
                None,
                []
            )
            .is_empty());
        assert_eq!(
            router
                .route(&e.with_extension("escalatedto", "street"), None, [])
                .len(),
            1
        );
    }

    #[test]
    fn the_origin_is_never_a_target() {
        let router = Router::new(&[route("all", RouteMatch::default(), &["police"])]).unwrap();
        assert!(router.route(&event(), Some("police"), []).is_empty());
    }

    #[test]
    fn bad_routes_name_the_field() {
        let e = Router::new(&[route(
            "x",
            RouteMatch {
                severity: Some("loud".into()),
                ..Default::default()
            },
            &["a"],
        )])
        .err()
        .unwrap();
        assert!(e.contains("match.severity"), "{e}");
        let e = Router::new(&[route("y", RouteMatch::default(), &[])])
            .err()
            .unwrap();
        assert!(e.contains("`y`") && e.contains("to"), "{e}");
    }
}
