//! The host functions, behind one switch: inside the hub (a wasm32-wasip2 component) they are
//! the WIT imports; natively (in `cargo test`, or any other target) they are served by the
//! offline harness in [`crate::testing`].

use crate::bindings::govhub::adapter::host::Level;
use crate::Header;

#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
mod imp {
    use super::*;
    use crate::bindings::govhub::adapter::host;

    pub fn log(level: Level, message: &str, fields: &[Header]) {
        host::log(level, message, fields)
    }
    /// An instance's config never changes (a new manifest means new
    /// instances), so each key crosses the boundary once per instance.
    /// An adapter reads a handful of keys: a list scanned by comparison
    /// beats hashing each key (SipHash) on every call.
    pub fn config(key: &str) -> Option<String> {
        use std::cell::RefCell;
        thread_local! {
            static CACHE: RefCell<Vec<(String, Option<String>)>> = const { RefCell::new(Vec::new()) };
        }
        CACHE.with(|c| {
            if let Some((_, v)) = c.borrow().iter().find(|(k, _)| k == key) {
                return v.clone();
            }
            let v = host::config(key);
            c.borrow_mut().push((key.to_string(), v.clone()));
            v
        })
    }
    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        host::state_get(key)
    }
    pub fn state_set(key: &str, value: &[u8]) -> Result<(), String> {
        host::state_set(key, value)
    }
    pub fn state_delete(key: &str) {
        host::state_delete(key)
    }
}

#[cfg(not(all(target_arch = "wasm32", target_env = "p2")))]
mod imp {
    use super::*;
    use crate::testing::with_current;

    pub fn log(level: Level, message: &str, fields: &[Header]) {
        with_current(|h| h.record_log(level, message, fields))
    }
    pub fn config(key: &str) -> Option<String> {
        with_current(|h| h.config.get(key).cloned())
    }
    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        with_current(|h| h.state.get(key).cloned())
    }
    pub fn state_set(key: &str, value: &[u8]) -> Result<(), String> {
        with_current(|h| h.state_set(key, value))
    }
    pub fn state_delete(key: &str) {
        with_current(|h| {
            h.state.remove(key);
        })
    }
}

pub use imp::*;
