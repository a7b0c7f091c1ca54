//! Delivery: hands each routed event to its target adapter's `deliver`,
//! retrying what can succeed later, with exponential backoff and jitter.

use crate::config::DeliveryConfig;
use crate::runtime::{Adapter, CallError, Disposition};
use govhub_sdk::Event;
use std::sync::Arc;
use std::time::Duration;

/// Starts deliveries.
pub struct Dispatcher {
    config: DeliveryConfig,
}

/// The delay before retry number `attempt` (1-based): `base · 2^(attempt-1)`,
/// capped, then a random factor in [0.5, 1.0] ("equal jitter") so that a
/// department coming back is not hit by every retry at the same instant.
pub fn backoff(config: &DeliveryConfig, attempt: u32) -> Duration {
    let exp = config
        .backoff_base_ms
        .saturating_mul(1u64 << (attempt.saturating_sub(1)).min(30));
    let capped = exp.min(config.backoff_cap_ms);
    let jitter = 0.5 + 0.5 * fastrand::f64();
    Duration::from_millis((capped as f64 * jitter) as u64)
}

impl Dispatcher {
    /// A dispatcher with the retry policy of `config`.
    pub fn new(config: DeliveryConfig) -> Dispatcher {
        Dispatcher { config }
    }

    /// Delivers `event` to `adapter` in the background.
    pub fn dispatch(&self, adapter: Arc<Adapter>, event: Event) {
        let config = self.config.clone();
        tokio::spawn(async move {
            for attempt in 1..=config.max_attempts {
                match adapter.deliver(&event).await {
                    Ok(outcome) => {
                        tracing::info!(
                            adapter = %adapter.name(),
                            event = %event.id,
                            attempt,
                            reference = outcome.reference.as_deref().unwrap_or(""),
                            "delivered"
                        );
                        return;
                    }
                    Err(e) => {
                        let last = attempt == config.max_attempts;
                        if e.disposition() == Disposition::Fail || last {
                            dead_letter(&adapter, &event, attempt, &e);
                            return;
                        }
                        tracing::warn!(adapter = %adapter.name(), event = %event.id, attempt, error = %e, "delivery failed; will retry");
                        tokio::time::sleep(backoff(&config, attempt)).await;
                    }
                }
            }
        });
    }
}

fn dead_letter(adapter: &Adapter, event: &Event, attempts: u32, error: &CallError) {
    tracing::error!(
        adapter = %adapter.name(),
        event = %event.id,
        attempts,
        error = %error,
        "delivery failed for good: dead letter"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let c = DeliveryConfig {
            max_attempts: 10,
            backoff_base_ms: 100,
            backoff_cap_ms: 1000,
        };
        for _ in 0..100 {
            let d1 = backoff(&c, 1).as_millis();
            assert!((50..=100).contains(&d1), "{d1}");
            let d3 = backoff(&c, 3).as_millis();
            assert!((200..=400).contains(&d3), "{d3}");
            let d9 = backoff(&c, 9).as_millis();
            assert!((500..=1000).contains(&d9), "{d9}");
        }
    }
}
