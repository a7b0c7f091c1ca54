//! Cockpit sessions: a browser signs in with a token once and is then
//! known by an HttpOnly, SameSite=Strict cookie, because `EventSource`
//! (the cockpit's live stream) cannot send an `authorization` header.
//!
//! A session lives in the hub's memory for `auth.session_ttl_s` from its
//! sign-in, not longer: a restart signs everyone out. The cookie carries
//! 32 random bytes; the hub keeps only their SHA-256, so a look-up's
//! timing says nothing about the value a guesser sent. Ending a session
//! (sign-out, expiry) ends the streams it opened.

use super::principal::{token_hash, Principal};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The cookie's name.
pub const COOKIE: &str = "govhub_session";

/// A live session as a request sees it.
#[derive(Clone)]
pub struct SessionRef {
    /// Who signed in.
    pub principal: Arc<Principal>,
    /// When it ends (the hub's monotonic clock).
    pub expires: Instant,
    /// When it ends, unix ms.
    pub expires_ms: i64,
    ended: watch::Receiver<bool>,
}

impl SessionRef {
    /// Resolves when the session ends: signed out, or expired.
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        tokio::select! {
            _ = ended.wait_for(|e| *e) => {}
            _ = tokio::time::sleep_until(self.expires.into()) => {}
        }
    }
}

struct Session {
    principal: Arc<Principal>,
    expires: Instant,
    expires_ms: i64,
    ended: watch::Sender<bool>,
}

/// Why a sign-in got no session.
#[derive(Debug, PartialEq, Eq)]
pub struct Full(pub usize);

/// The sessions alive.
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], Session>>,
    ttl: Duration,
    max: usize,
    per_principal: usize,
}

impl Sessions {
    /// No sessions yet; each will last `ttl`, at most `max` at once and
    /// `per_principal` of one principal (its oldest ends for a new one).
    pub fn new(ttl: Duration, max: usize, per_principal: usize) -> Sessions {
        Sessions {
            live: Mutex::new(HashMap::new()),
            ttl,
            max,
            per_principal,
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for `principal`: the cookie value and the session.
    pub fn start(
        &self,
        principal: Arc<Principal>,
    ) -> anyhow::Result<Result<(String, SessionRef), Full>> {
        let value = super::principal::random_secret()?;
        let now = Instant::now();
        let mut live = self
            .live
            .lock()
            .map_err(|_| anyhow::anyhow!("sessions poisoned"))?;
        // One principal's screens: past its share, its oldest session ends
        // (whoever holds its token signs in anew), so one token cannot
        // take every slot.
        let mut mine: Vec<([u8; 32], Instant)> = live
            .iter()
            .filter(|(_, s)| s.principal.name == principal.name && s.expires > now)
            .map(|(k, s)| (*k, s.expires))
            .collect();
        if mine.len() >= self.per_principal {
            mine.sort_by_key(|(_, expires)| *expires);
            for (key, _) in &mine[..=mine.len() - self.per_principal] {
                if let Some(old) = live.remove(key) {
                    old.ended.send_replace(true);
                }
            }
        }
        if live.len() >= self.max {
            live.retain(|_, s| s.expires > now);
            if live.len() >= self.max {
                return Ok(Err(Full(self.max)));
            }
        }
        let (ended, rx) = watch::channel(false);
        let expires_ms = crate::journal::now_ms() + self.ttl.as_millis() as i64;
        let session = Session {
            principal: principal.clone(),
            expires: now + self.ttl,
            expires_ms,
            ended,
        };
        let r = SessionRef {
            principal,
            expires: session.expires,
            expires_ms,
            ended: rx,
        };
        live.insert(token_hash(&value), session);
        Ok(Ok((value, r)))
    }

    /// The live session with this cookie value, if any; an expired one is
    /// ended on the way.
    pub fn find(&self, value: &str) -> Option<SessionRef> {
        let key = token_hash(value);
        let mut live = self.live.lock().ok()?;
        let s = live.get(&key)?;
        if s.expires <= Instant::now() {
            if let Some(s) = live.remove(&key) {
                s.ended.send_replace(true);
            }
            return None;
        }
        Some(SessionRef {
            principal: s.principal.clone(),
            expires: s.expires,
            expires_ms: s.expires_ms,
            ended: s.ended.subscribe(),
        })
    }

    /// Ends the session with this cookie value (sign-out); its streams end.
    pub fn end(&self, value: &str) -> Option<Arc<Principal>> {
        let s = self.live.lock().ok()?.remove(&token_hash(value))?;
        s.ended.send_replace(true);
        Some(s.principal)
    }

    /// Sessions alive now.
    pub fn count(&self) -> usize {
        let now = Instant::now();
        self.live
            .lock()
            .map(|l| l.values().filter(|s| s.expires > now).count())
            .unwrap_or(0)
    }
}

/// The session cookie's value in a `cookie` header, if there is one.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::principal::{PrincipalConfig, Role};

    fn viewer() -> Arc<Principal> {
        Arc::new(Principal::new(
            &PrincipalConfig {
                name: "command-room".into(),
                role: Role::Viewer,
                token_sha256: None,
                token_env: None,
                sources: vec![],
                adapters: vec![],
                events_per_s: None,
                burst: None,
            },
            token_hash("t"),
            1.0,
            1,
        ))
    }

    #[tokio::test]
    async fn a_session_is_found_until_it_ends_and_its_end_is_heard() {
        let s = Sessions::new(Duration::from_secs(60), 2, 2);
        let (cookie, r) = s.start(viewer()).unwrap().unwrap();
        assert_eq!(s.find(&cookie).unwrap().principal.name, "command-room");
        assert!(s.find("forged").is_none());
        assert!(s.end(&cookie).is_some());
        assert!(s.find(&cookie).is_none());
        tokio::time::timeout(Duration::from_secs(1), r.ended())
            .await
            .expect("the stream hears its session end");
    }

    #[tokio::test]
    async fn sessions_expire_and_are_bounded() {
        let s = Sessions::new(Duration::from_millis(50), 2, 5);
        let (a, ra) = s.start(viewer()).unwrap().unwrap();
        s.start(viewer()).unwrap().unwrap();
        assert_eq!(s.start(viewer()).unwrap().err(), Some(Full(2)));
        tokio::time::timeout(Duration::from_secs(1), ra.ended())
            .await
            .expect("an expiring session ends its streams");
        assert!(s.find(&a).is_none(), "an expired session is not found");
        // Expired sessions make room.
        assert!(s.start(viewer()).unwrap().is_ok());
    }

    #[tokio::test]
    async fn one_principal_cannot_take_every_slot_its_oldest_session_ends() {
        let s = Sessions::new(Duration::from_secs(60), 100, 2);
        let (first, r1) = s.start(viewer()).unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let (second, _) = s.start(viewer()).unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let (third, _) = s.start(viewer()).unwrap().unwrap();
        assert!(s.find(&first).is_none(), "the oldest session ended");
        assert!(s.find(&second).is_some() && s.find(&third).is_some());
        assert_eq!(s.count(), 2);
        tokio::time::timeout(Duration::from_secs(1), r1.ended())
            .await
            .expect("its stream hears it");
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=1; govhub_session=abc ; b=2".parse().unwrap());
        assert_eq!(cookie_value(&h), Some("abc"));
        h.insert("cookie", "a=1".parse().unwrap());
        assert_eq!(cookie_value(&h), None);
    }
}
