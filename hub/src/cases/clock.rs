//! Where the case tracker's time comes from: the system clock, or a manual
//! one that moves only when told (drills, tests) and is kept in the journal
//! so a restart resumes at the same moment.

use std::sync::atomic::{AtomicI64, Ordering};

/// A source of "now", in unix milliseconds.
pub trait Clock: Send + Sync {
    /// Now.
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::journal::now_ms()
    }
}

/// A clock that moves only by [`ManualClock::advance`].
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: i64) -> ManualClock {
        ManualClock {
            now: AtomicI64::new(start_ms),
        }
    }

    /// Moves it forward by `ms` (never back) and returns the new time.
    pub fn advance(&self, ms: i64) -> i64 {
        self.now.fetch_add(ms.max(0), Ordering::SeqCst) + ms.max(0)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_forward_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        assert_eq!(c.advance(500), 1_500);
        assert_eq!(c.advance(-100), 1_500);
        assert_eq!(c.now_ms(), 1_500);
    }
}
