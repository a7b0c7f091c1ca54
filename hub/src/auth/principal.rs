//! Principals: who a caller is, what its role lets it do, which sources it
//! may send and which adapters it is bound to. A principal's token is held
//! only as its SHA-256 hash and compared in constant time.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// What a principal may do. Each role but `department` includes the one
/// before it: `viewer` < `operator` < `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A department system: sends its own sources, posts raw payloads to
    /// its adapters, reads what reached it.
    Department,
    /// The cockpit and every read API.
    Viewer,
    /// A viewer who may also replay dead letters and move the manual clock.
    Operator,
    /// An operator who may also load, unload and roll back adapters, and
    /// read the audit chain.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Department, Role::Viewer, Role::Operator, Role::Admin];

    /// Its name in config and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Department => "department",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// One `[[auth.principals]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// Its name: in the audit chain, in answers, in metrics.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Hex SHA-256 of its token (`govhub auth token` prints it).
    pub token_sha256: Option<String>,
    /// Or: the environment variable holding its token, hashed at start.
    pub token_env: Option<String>,
    /// `department`: the `source` prefixes it may send (`*`: any).
    #[serde(default)]
    pub sources: Vec<String>,
    /// `department`: the adapters it may post raw payloads to, whose
    /// deliveries, events and cases it may read (`*`: every one).
    #[serde(default)]
    pub adapters: Vec<String>,
    /// Its own event rate, events per second (default `auth.events_per_s`).
    pub events_per_s: Option<f64>,
    /// Its own burst, events (default `auth.burst`).
    pub burst: Option<u32>,
}

/// Names a principal is bound to: some, or every one (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Names {
    /// Every name.
    All,
    /// These.
    Some(Vec<String>),
}

impl Names {
    fn from(list: &[String]) -> Names {
        if list.iter().any(|n| n == "*") {
            Names::All
        } else {
            Names::Some(list.to_vec())
        }
    }

    /// Whether `name` is one of them.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Names::All => true,
            Names::Some(list) => list.iter().any(|n| n == name),
        }
    }

    /// As a list for messages.
    pub fn describe(&self) -> String {
        match self {
            Names::All => "*".into(),
            Names::Some(list) if list.is_empty() => "none".into(),
            Names::Some(list) => list.join(", "),
        }
    }
}

/// Whether `source` is `prefix` or lies under it: the prefix ends where
/// a URI segment ends (`urn:govhub:police` covers `urn:govhub:police` and
/// `urn:govhub:police:cad-2`, not `urn:govhub:policeman`).
pub fn source_under(source: &str, prefix: &str) -> bool {
    if prefix == "*" {
        return true;
    }
    match source.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => {
            prefix.ends_with([':', '/', '#', '?']) || rest.starts_with([':', '/', '#', '?'])
        }
        None => false,
    }
}

/// A caller the hub knows.
#[derive(Debug)]
pub struct Principal {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    token_sha256: [u8; 32],
    /// `department`: the source prefixes it may send.
    pub sources: Names,
    /// `department`: the adapters it is bound to.
    pub adapters: Names,
    /// Whether it reads what concerns it; the `ingest` shorthand is a
    /// sender only, as that token always was.
    pub reads: bool,
    quota: Mutex<Bucket>,
    rate: f64,
    burst: f64,
}

/// Why a principal's events were refused by its quota.
#[derive(Debug, Clone, PartialEq)]
pub enum OverQuota {
    /// Try again after this long.
    Wait(Duration),
    /// More events in one request than the burst: it can never pass.
    TooMany {
        /// Events that needed a token.
        events: u32,
        /// The burst.
        burst: u32,
    },
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Principal {
    /// A principal with its token's hash and quota.
    pub fn new(
        config: &PrincipalConfig,
        token_sha256: [u8; 32],
        default_rate: f64,
        default_burst: u32,
    ) -> Principal {
        let burst = f64::from(config.burst.unwrap_or(default_burst));
        Principal {
            name: config.name.clone(),
            role: config.role,
            token_sha256,
            sources: Names::from(&config.sources),
            adapters: Names::from(&config.adapters),
            reads: true,
            quota: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }),
            rate: config.events_per_s.unwrap_or(default_rate),
            burst,
        }
    }

    /// Whether `hash` is its token's hash, in time that does not depend
    /// on where the two differ.
    pub fn token_is(&self, hash: &[u8; 32]) -> bool {
        self.token_sha256.ct_eq(hash).into()
    }

    /// Whether it may send events with this `source`.
    pub fn may_send(&self, source: &str) -> bool {
        match &self.sources {
            Names::All => true,
            Names::Some(list) => list.iter().any(|p| source_under(source, p)),
        }
    }

    /// Whether an event of `source` is one it sent, for reading: under one
    /// of its named prefixes. `*` lets a principal send anything, not
    /// read everything.
    pub fn sent(&self, source: &str) -> bool {
        match &self.sources {
            Names::All => false,
            Names::Some(list) => list.iter().any(|p| p != "*" && source_under(source, p)),
        }
    }

    /// Takes a request's events from its quota. Critical events are never
    /// refused, but count: they are taken whatever is left, and may leave
    /// the bucket owing (down to one burst), so the sender's next ordinary
    /// events wait. The ordinary ones must fit what is left; when they do
    /// not, the request is refused, and nothing of it is taken.
    pub fn take_quota(&self, normal: u32, critical: u32, now: Instant) -> Result<(), OverQuota> {
        let Ok(mut b) = self.quota.lock() else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        let n = f64::from(normal);
        if n > self.burst {
            return Err(OverQuota::TooMany {
                events: normal,
                burst: self.burst as u32,
            });
        }
        let after_critical = (b.tokens - f64::from(critical)).max(-self.burst);
        if normal == 0 || after_critical >= n {
            b.tokens = after_critical - n;
            return Ok(());
        }
        let missing = n - after_critical;
        Err(OverQuota::Wait(Duration::from_secs_f64(
            (missing / self.rate).max(0.001),
        )))
    }

    /// Its rate (events per second) and burst, for messages.
    pub fn quota(&self) -> (f64, u32) {
        (self.rate, self.burst as u32)
    }
}

/// The SHA-256 of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// 32 random bytes, base64url: a token's or a session cookie's secret.
pub fn random_secret() -> anyhow::Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A fresh token: `govhub_` and 32 random bytes, base64url. The prefix
/// lets secret scanners find one pasted where it should not be.
pub fn new_token() -> anyhow::Result<String> {
    Ok(format!("govhub_{}", random_secret()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(rate: f64, burst: u32) -> Principal {
        Principal::new(
            &PrincipalConfig {
                name: "police".into(),
                role: Role::Department,
                token_sha256: None,
                token_env: None,
                sources: vec!["urn:govhub:police".into()],
                adapters: vec!["police".into()],
                events_per_s: Some(rate),
                burst: Some(burst),
            },
            token_hash("t"),
            0.0,
            0,
        )
    }

    #[test]
    fn sources_are_prefixes_that_end_at_a_segment() {
        assert!(source_under("urn:govhub:police", "urn:govhub:police"));
        assert!(source_under("urn:govhub:police:cad-2", "urn:govhub:police"));
        assert!(source_under(
            "https://cad.example/police/1",
            "https://cad.example/police"
        ));
        assert!(source_under("urn:yingfeng:x", "urn:yingfeng:"));
        assert!(!source_under("urn:govhub:policeman", "urn:govhub:police"));
        assert!(!source_under("urn:govhub:traffic", "urn:govhub:police"));
        assert!(source_under("anything", "*"));
        let p = principal(1.0, 1);
        assert!(p.may_send("urn:govhub:police:cad"));
        assert!(!p.may_send("urn:govhub:fire"));
        assert!(p.sent("urn:govhub:police:cad") && !p.sent("urn:govhub:fire"));
        let mut anything = principal(1.0, 1);
        anything.sources = Names::All;
        assert!(anything.may_send("urn:govhub:fire"));
        assert!(
            !anything.sent("urn:govhub:fire"),
            "`*` sends anything, reads nothing by it"
        );
    }

    #[test]
    fn tokens_match_their_hash_only() {
        let p = principal(1.0, 1);
        assert!(p.token_is(&token_hash("t")));
        assert!(!p.token_is(&token_hash("u")));
        let t = new_token().unwrap();
        assert!(t.starts_with("govhub_") && t.len() > 40, "{t}");
        assert_ne!(t, new_token().unwrap());
    }

    #[test]
    fn the_bucket_refills_at_its_rate_and_critical_events_always_pass() {
        let p = principal(10.0, 5);
        let t0 = Instant::now();
        assert_eq!(p.take_quota(5, 0, t0), Ok(()));
        let Err(OverQuota::Wait(w)) = p.take_quota(1, 0, t0) else {
            panic!("the sixth event passed an empty bucket")
        };
        assert!(
            w > Duration::from_millis(50) && w <= Duration::from_millis(100),
            "{w:?}"
        );
        // A critical event passes an empty bucket, and is owed.
        assert_eq!(p.take_quota(0, 1, t0), Ok(()));
        // 100 ms later one token came back, but the critical one took it.
        assert!(p.take_quota(1, 0, t0 + Duration::from_millis(100)).is_err());
        assert_eq!(p.take_quota(1, 0, t0 + Duration::from_millis(300)), Ok(()));
        // More than the burst in one request can never pass.
        assert_eq!(
            p.take_quota(6, 0, t0 + Duration::from_secs(60)),
            Err(OverQuota::TooMany {
                events: 6,
                burst: 5
            })
        );
        // A critical event does not carry ordinary ones past the quota:
        // a mixed request that does not fit is refused, nothing taken.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(p.take_quota(5, 0, t1), Ok(()));
        assert!(matches!(p.take_quota(1, 1, t1), Err(OverQuota::Wait(_))));
        assert_eq!(p.take_quota(0, 1, t1), Ok(()), "alone it passes");
        // Owing is bounded by one burst: a storm of critical events does
        // not lock the sender out for ever.
        for _ in 0..100 {
            p.take_quota(0, 5, t0 + Duration::from_secs(60)).unwrap();
        }
        assert_eq!(
            p.take_quota(1, 0, t0 + Duration::from_millis(60_600)),
            Ok(())
        );
    }
}
