//! Panics become an error the hub can show: the message is logged through
//! the host before the instance traps, so the hub reports "adapter panicked:
//! <message> at <file:line>" instead of a bare `unreachable` trap.

use std::sync::Once;

static HOOK: Once = Once::new();

pub(crate) fn install_hook() {
    // Natively (cargo test) the default hook is what test output expects.
    if cfg!(not(all(target_arch = "wasm32", target_env = "p2"))) {
        return;
    }
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            crate::log::write(
                crate::log::LogLevel::Error,
                &message,
                &[("panic", "true"), ("location", &location)],
            );
        }));
    });
}
