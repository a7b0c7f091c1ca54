//! What a sender may send: its own sources only, its own adapters only,
//! within its quota. Checked before anything of the request is stored:
//! a refusal stores nothing.

use super::Problem;
use crate::auth::principal::OverQuota;
use crate::auth::{AuthMetrics, Caller};
use axum::http::StatusCode;
use govhub_sdk::{Event, Severity};
use std::time::Instant;

/// Refuses the request (`403`) when an event's `source` is not one of
/// the sending department's prefixes, naming the source and the
/// principal.
pub fn check_sources(
    metrics: &AuthMetrics,
    caller: &Caller,
    events: &[Event],
) -> Result<(), Problem> {
    let Some(who) = caller.principal() else {
        return Ok(());
    };
    for (i, e) in events.iter().enumerate() {
        if !who.may_send(&e.source) {
            metrics.refuse("source");
            let at = if events.len() > 1 {
                format!("event [{i}]: ")
            } else {
                String::new()
            };
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "source not allowed",
                format!(
                    "{at}source `{}` is not one of principal `{}`'s sources ({}); nothing of this request was stored",
                    e.source,
                    who.name,
                    who.sources.describe()
                ),
            )
            .with_field(&if events.len() > 1 {
                format!("[{i}].source")
            } else {
                "source".to_string()
            })
            .with_kind("source"));
        }
    }
    Ok(())
}

/// Refuses raw ingest (`403`) to an adapter the sender is not bound to.
pub fn check_adapter(metrics: &AuthMetrics, caller: &Caller, adapter: &str) -> Result<(), Problem> {
    match caller.principal() {
        Some(who) if !who.adapters.contains(adapter) => {
            metrics.refuse("adapter");
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "adapter not allowed",
                format!(
                    "principal `{}` may post raw payloads to its own adapters ({}), not to `{adapter}`",
                    who.name,
                    who.adapters.describe()
                ),
            )
            .with_kind("adapter"))
        }
        _ => Ok(()),
    }
}

/// Takes the events from the sender's quota; `429` with `Retry-After`
/// when they do not fit. Critical events are never refused (they count).
pub fn take_quota(metrics: &AuthMetrics, caller: &Caller, events: &[Event]) -> Result<(), Problem> {
    let Some(who) = caller.principal() else {
        return Ok(());
    };
    let critical = events
        .iter()
        .filter(|e| e.severity == Some(Severity::Critical))
        .count() as u32;
    let normal = events.len() as u32 - critical;
    let refused = match who.take_quota(normal, critical, Instant::now()) {
        Ok(()) => return Ok(()),
        Err(why) => why,
    };
    metrics.refuse("quota");
    metrics
        .quota_refused
        .get_or_create(&vec![("principal".to_string(), who.name.clone())])
        .inc_by(events.len() as u64);
    let (rate, burst) = who.quota();
    match refused {
        OverQuota::Wait(wait) => Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "over quota",
            format!(
                "principal `{}` is over its quota ({rate} events a second, bursts of {burst}: \
                 auth.events_per_s and auth.burst, or the principal's own); nothing of this request \
                 was stored{}",
                who.name,
                if critical > 0 {
                    "; its critical events pass alone: send them in a request of their own"
                } else {
                    "; critical events are never refused"
                }
            ),
        )
        .with_kind("quota")
        .with_retry_after(wait.as_secs_f64().ceil().max(1.0) as u64)),
        // Waiting would not help: it can never fit.
        OverQuota::TooMany { events, burst } => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch over the burst",
            format!(
                "{events} events in one request is more than principal `{}`'s burst ({burst}, \
                 auth.burst or the principal's own): split the batch",
                who.name
            ),
        )
        .with_kind("quota")),
    }
}
