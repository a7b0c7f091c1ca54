//! Who may call the hub, and what each caller may do and see.
//!
//! - [`principal`]: the principals of `[[auth.principals]]` (and the two
//!   shorthands, `auth.admin_token_env` and `auth.ingest_token_env`), each
//!   with a role, a token held only as its SHA-256, the sources it may send
//!   and the adapters it is bound to, and its event quota;
//! - [`policy`]: the one table mapping every route to the roles allowed,
//!   and the router builder that refuses a route missing from it;
//! - [`session`]: the cockpit's sign-in cookie;
//! - [`middleware`]: the layer in front of every route: who is calling,
//!   may they, and the [`Caller`] handlers read;
//! - [`routes`]: `POST|GET|DELETE /v1/session`.
//!
//! It decides access, never content: what a department may see of a
//! stored event or case is decided by the read handlers with
//! [`Caller::department`]. It depends on the journal only to write the
//! audit records of sign-ins; nothing here reaches for the hub.

pub mod middleware;
pub mod policy;
pub mod principal;
pub mod routes;
pub mod session;

pub use principal::{Names, Principal, PrincipalConfig, Role};

use crate::config::AuthConfig;
use crate::journal::AuditLog;
use anyhow::Context;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Names the hub itself writes into the audit chain as actors: no
/// principal may take them.
const RESERVED: &[&str] = &["anonymous", "dir", "hub"];

/// Checks `[auth]` for what it can without the environment: names,
/// roles and bindings, token hashes, limits.
pub fn check_config(auth: &AuthConfig) -> anyhow::Result<()> {
    if auth.session_ttl_s == 0
        || auth.max_sessions == 0
        || auth.sessions_per_principal == 0
        || auth.signin_per_minute == 0
    {
        anyhow::bail!(
            "auth.session_ttl_s, auth.max_sessions, auth.sessions_per_principal and auth.signin_per_minute must be positive"
        );
    }
    if !(auth.events_per_s.is_finite() && auth.events_per_s > 0.0) || auth.burst == 0 {
        anyhow::bail!("auth.events_per_s and auth.burst must be positive");
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in auth.principals.iter().enumerate() {
        let at = format!("auth.principals[{i}] (`{}`)", p.name);
        check_name(&p.name).with_context(|| at.clone())?;
        if !seen.insert(p.name.as_str()) {
            anyhow::bail!("{at}: a second principal called `{}`", p.name);
        }
        match (&p.token_sha256, &p.token_env) {
            (Some(_), Some(_)) => {
                anyhow::bail!("{at}: give token_sha256 or token_env, not both")
            }
            (None, None) => anyhow::bail!(
                "{at}: no token: set token_sha256 (`govhub auth token --name {}` prints one) or token_env",
                p.name
            ),
            (Some(h), None) => {
                parse_hash(h).with_context(|| format!("{at}: token_sha256"))?;
            }
            (None, Some(var)) if var.trim().is_empty() => {
                anyhow::bail!("{at}: token_env is empty")
            }
            _ => {}
        }
        if p.role == Role::Department {
            if p.sources.is_empty() && p.adapters.is_empty() {
                anyhow::bail!(
                    "{at}: a department with no sources and no adapters could do nothing: \
                     list the source prefixes it sends (sources) and the adapters it is bound to (adapters)"
                );
            }
        } else if !p.sources.is_empty() || !p.adapters.is_empty() {
            anyhow::bail!(
                "{at}: only a department is bound to sources and adapters; a {} sees every one",
                p.role.as_str()
            );
        }
        if let Some(r) = p.events_per_s {
            if !(r.is_finite() && r > 0.0) {
                anyhow::bail!("{at}: events_per_s must be positive");
            }
        }
        if p.burst == Some(0) {
            anyhow::bail!("{at}: burst must be positive");
        }
    }
    Ok(())
}

/// Checks a principal's name: lower-case letters, digits, `-`, `_`, `.`,
/// and not one the hub writes into the audit chain itself.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
    {
        anyhow::bail!("name `{name}` must be lower-case letters, digits, `-`, `_` or `.`");
    }
    if RESERVED.contains(&name) {
        anyhow::bail!(
            "`{name}` is a name the hub writes into the audit chain itself; pick another"
        );
    }
    Ok(())
}

/// The principals of `config`, their tokens read from the environment
/// where they come from there. A `token_env` that is not set stops the
/// start (a department silently locked out is worse); a shorthand's
/// variable that is not set means no such principal.
pub fn load_principals(config: &AuthConfig) -> anyhow::Result<Vec<Arc<Principal>>> {
    check_config(config)?;
    let mut principals: Vec<Arc<Principal>> = Vec::new();
    let mut add = |p: &PrincipalConfig, hash: [u8; 32], reads: bool| -> anyhow::Result<()> {
        if principals.iter().any(|q| q.name == p.name) {
            anyhow::bail!(
                "auth: a principal called `{}` is configured twice (a shorthand's and an [[auth.principals]] entry)",
                p.name
            );
        }
        let mut principal = Principal::new(p, hash, config.events_per_s, config.burst);
        principal.reads = reads;
        principals.push(Arc::new(principal));
        Ok(())
    };
    for p in &config.principals {
        let hash = match (&p.token_sha256, &p.token_env) {
            (Some(h), _) => parse_hash(h)?,
            (None, Some(var)) => match env_token(var) {
                Some(t) => principal::token_hash(&t),
                None => anyhow::bail!(
                    "auth: principal `{}` takes its token from the environment variable {var} (token_env), which is not set",
                    p.name
                ),
            },
            (None, None) => anyhow::bail!("auth: principal `{}` has no token", p.name),
        };
        add(p, hash, true)?;
    }
    let shorthand = |name: &str, role: Role, var: &str, everything: bool| PrincipalConfig {
        name: name.into(),
        role,
        token_sha256: None,
        token_env: Some(var.into()),
        sources: if everything { vec!["*".into()] } else { vec![] },
        adapters: if everything { vec!["*".into()] } else { vec![] },
        events_per_s: None,
        burst: None,
    };
    if let Some(token) = env_token(&config.admin_token_env) {
        add(
            &shorthand("admin", Role::Admin, &config.admin_token_env, false),
            principal::token_hash(&token),
            true,
        )?;
    }
    if let Some(var) = &config.ingest_token_env {
        if let Some(token) = env_token(var) {
            add(
                &shorthand("ingest", Role::Department, var, true),
                principal::token_hash(&token),
                // A sender only, as that token always was.
                false,
            )?;
        }
    }
    Ok(principals)
}

/// A token from the environment, trimmed (files and shells add a
/// newline); unset or empty: `None`.
fn env_token(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn parse_hash(hex_text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(hex_text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .context("must be 64 hexadecimal digits, the SHA-256 of the token")?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// Who is calling, as a handler sees it.
#[derive(Clone)]
pub enum Caller {
    /// Nobody in particular: the hub has no principals (auth off).
    Anonymous,
    /// A principal, by bearer token or by a cockpit session.
    Principal {
        /// Who.
        who: Arc<Principal>,
        /// The session it came with (cookie), if that is how.
        session: Option<session::SessionRef>,
    },
}

impl Caller {
    /// The name written in the audit chain.
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Principal { who, .. } => &who.name,
        }
    }

    /// The department, when the caller is one: its reads are narrowed to
    /// what concerns it. `None`: the caller sees everything it may read.
    pub fn department(&self) -> Option<&Principal> {
        match self {
            Caller::Principal { who, .. } if who.role == Role::Department => Some(who),
            _ => None,
        }
    }

    /// The principal, if there is one.
    pub fn principal(&self) -> Option<&Arc<Principal>> {
        match self {
            Caller::Anonymous => None,
            Caller::Principal { who, .. } => Some(who),
        }
    }

    /// The session, when the caller came with its cookie.
    pub fn session(&self) -> Option<&session::SessionRef> {
        match self {
            Caller::Principal { session, .. } => session.as_ref(),
            Caller::Anonymous => None,
        }
    }
}

/// Counters the hub exports in `/metrics`.
#[derive(Clone, Default)]
pub struct AuthMetrics {
    /// Requests refused, by reason (`unauthenticated`, `forbidden`,
    /// `source`, `adapter`, `quota`, `signin`).
    pub refused: Family<Vec<(String, String)>, Counter>,
    /// Events refused by a principal's quota, by principal.
    pub quota_refused: Family<Vec<(String, String)>, Counter>,
}

impl AuthMetrics {
    /// Counts a refusal.
    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }
}

/// Everything the hub knows of its callers.
pub struct Authority {
    config: AuthConfig,
    principals: Vec<Arc<Principal>>,
    /// The cockpit's sessions.
    pub sessions: session::Sessions,
    journal: Arc<dyn AuditLog>,
    signins: Mutex<(Instant, u32)>,
    /// Its counters.
    pub metrics: AuthMetrics,
}

impl Authority {
    /// The principals of `config` ([`load_principals`]), no sessions yet.
    pub fn new(
        config: &AuthConfig,
        journal: Arc<dyn AuditLog>,
        metrics: AuthMetrics,
    ) -> anyhow::Result<Authority> {
        let principals = load_principals(config)?;
        Ok(Authority {
            sessions: session::Sessions::new(
                Duration::from_secs(config.session_ttl_s),
                config.max_sessions,
                config.sessions_per_principal,
            ),
            config: config.clone(),
            principals,
            journal,
            signins: Mutex::new((Instant::now(), 0)),
            metrics,
        })
    }

    /// Whether the hub has any principal: then every route needs one
    /// (but the open ones).
    pub fn enabled(&self) -> bool {
        !self.principals.is_empty()
    }

    /// The principals, in config order then the shorthands.
    pub fn principals(&self) -> &[Arc<Principal>] {
        &self.principals
    }

    /// `[auth]`.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The principal whose token this is. Every principal's hash is
    /// compared, in constant time each, whichever matches.
    pub fn identify(&self, token: &str) -> Option<Arc<Principal>> {
        let hash = principal::token_hash(token);
        let mut found = None;
        for p in &self.principals {
            if p.token_is(&hash) {
                found = Some(p.clone());
            }
        }
        found
    }

    /// Refuses to serve a non-loopback address with no principal, unless
    /// `auth.open` says so.
    pub fn check_exposure(&self, addr: &std::net::SocketAddr) -> anyhow::Result<()> {
        if self.enabled() || self.config.open || addr.ip().is_loopback() {
            return Ok(());
        }
        anyhow::bail!(
            "govhub would listen on {addr} with no principal: anyone who can reach it could read every \
             case (reporters' names and phones) and replay dead letters. Add [[auth.principals]] \
             (`govhub auth token --name NAME` makes a token and its token_sha256), or set the variable \
             {} (auth.admin_token_env); or listen on 127.0.0.1; or set auth.open = true to run open on purpose",
            self.config.admin_token_env
        )
    }

    /// Takes one sign-in attempt from the shared allowance; `Err` with the
    /// wait when a minute's attempts are used up.
    fn signin_allowed(&self) -> Result<(), Duration> {
        let Ok(mut s) = self.signins.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        if now.duration_since(s.0) >= minute {
            *s = (now, 0);
        }
        if s.1 >= self.config.signin_per_minute {
            return Err(minute.saturating_sub(now.duration_since(s.0)));
        }
        s.1 += 1;
        Ok(())
    }

    /// Writes an operator's or admin's action into the audit chain.
    pub async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), crate::journal::JournalError> {
        self.journal
            .audit_action(caller.name(), action, target, &detail.to_string())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(name: &str, role: &str, extra: &str) -> String {
        format!(
            "[[principals]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\n{extra}\n",
            hex::encode(principal::token_hash(name))
        )
    }

    fn auth(text: &str) -> AuthConfig {
        toml::from_str(text).unwrap()
    }

    fn authority(config: &AuthConfig) -> (Authority, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let journal = crate::journal::sqlite::SqliteJournal::open(
            &crate::journal::sqlite::SqliteConfig::at(&dir.path().join("j.db")),
        )
        .unwrap();
        let a = Authority::new(config, Arc::new(journal), AuthMetrics::default()).unwrap();
        (a, dir)
    }

    #[test]
    fn bad_principals_and_limits_are_named() {
        for (text, named) in [
            (
                principal("Police", "department", "sources = [\"x\"]"),
                "lower-case",
            ),
            (principal("hub", "viewer", ""), "audit chain itself"),
            (
                principal("police", "department", "sources = [\"x\"]")
                    + &principal("police", "viewer", ""),
                "a second principal called `police`",
            ),
            (principal("police", "department", ""), "could do nothing"),
            (
                principal("wall", "viewer", "adapters = [\"police\"]"),
                "only a department",
            ),
            (
                "[[principals]]\nname = \"p\"\nrole = \"viewer\"\n".to_string(),
                "no token",
            ),
            (
                "[[principals]]\nname = \"p\"\nrole = \"viewer\"\ntoken_sha256 = \"abc\"\n"
                    .to_string(),
                "64 hexadecimal digits",
            ),
            (principal("p", "viewer", "token_env = \"P\""), "not both"),
            (
                principal("p", "department", "sources = [\"x\"]\nevents_per_s = 0"),
                "events_per_s must be positive",
            ),
            (
                principal("p", "department", "sources = [\"x\"]\nburst = 0"),
                "burst must be positive",
            ),
            ("session_ttl_s = 0".to_string(), "auth.session_ttl_s"),
            ("max_sessions = 0".to_string(), "auth.max_sessions"),
            (
                "sessions_per_principal = 0".to_string(),
                "auth.sessions_per_principal",
            ),
            (
                "signin_per_minute = 0".to_string(),
                "auth.signin_per_minute",
            ),
            ("events_per_s = 0.0".to_string(), "auth.events_per_s"),
            ("burst = 0".to_string(), "auth.burst"),
        ] {
            let e = format!("{:#}", check_config(&auth(&text)).unwrap_err());
            assert!(e.contains(named), "{text}: {e}");
        }
        assert!(check_config(&auth(&principal(
            "police",
            "department",
            "sources = [\"x\"]"
        )))
        .is_ok());
    }

    #[test]
    fn only_a_hub_with_principals_or_told_so_listens_beyond_loopback() {
        let anywhere: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let loopback: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v6: std::net::SocketAddr = "[::1]:8080".parse().unwrap();
        let bare = AuthConfig {
            admin_token_env: "GOVHUB_TEST_NEVER_SET".into(),
            ..AuthConfig::default()
        };
        let (a, _dir) = authority(&bare);
        assert!(!a.enabled());
        let e = a.check_exposure(&anywhere).unwrap_err().to_string();
        assert!(
            e.contains("auth.open = true") && e.contains("govhub auth token"),
            "{e}"
        );
        assert!(a.check_exposure(&loopback).is_ok() && a.check_exposure(&v6).is_ok());
        let open = AuthConfig {
            open: true,
            ..bare.clone()
        };
        assert!(authority(&open).0.check_exposure(&anywhere).is_ok());
        let mut guarded = auth(&principal("wall", "viewer", ""));
        guarded.admin_token_env = "GOVHUB_TEST_NEVER_SET".into();
        let (a, _dir) = authority(&guarded);
        assert!(a.enabled() && a.check_exposure(&anywhere).is_ok());
        assert_eq!(
            a.identify("wall").map(|p| p.name.clone()),
            Some("wall".into())
        );
        assert!(a.identify("nobody").is_none());
    }

    #[test]
    fn sign_in_attempts_are_bounded_per_minute() {
        let mut config = auth(&principal("wall", "viewer", ""));
        config.signin_per_minute = 2;
        let (a, _dir) = authority(&config);
        assert!(a.signin_allowed().is_ok() && a.signin_allowed().is_ok());
        let wait = a.signin_allowed().unwrap_err();
        assert!(
            wait <= Duration::from_secs(60) && wait > Duration::from_secs(50),
            "{wait:?}"
        );
    }
}
