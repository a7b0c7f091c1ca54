//! `GET /v1/cockpit/snapshot`: everything the cockpit draws, and the
//! stream cursor it is consistent with.
//!
//! The cursor is read first and the recent events are exactly the feed's
//! events up to it; cases, adapters and dead letters are read after, so
//! they may already include changes past the cursor. A console applies
//! the stream from the cursor on; case and dead-letter items replace what
//! it holds by id, so seeing a change twice is harmless.

use crate::cases::{from_doc, stats, summary};
use crate::governance::Audience;
use crate::hub::Hub;
use crate::journal::{CaseFilter, CaseStatus, FeedKind, Journal, JournalError};
use serde_json::{json, Value};
use std::sync::Arc;

/// Recent events in a snapshot.
const EVENTS: usize = 100;
/// Closed cases in a snapshot, newest first, beside every open one.
const CLOSED: usize = 30;
/// Dead letters in a snapshot, newest first.
const DEAD_LETTERS: usize = 50;

/// The snapshot: the journal read, then put together off the async
/// threads (every case is parsed for the figures).
pub async fn read(hub: &Arc<Hub>) -> Result<Value, JournalError> {
    let journal: &dyn Journal = &*hub.journal;
    let span = journal.feed_span().await?;
    let cursor = span.head;
    let latest = journal.feed_latest(FeedKind::Event, cursor, EVENTS).await?;
    let open = journal
        .cases(&CaseFilter {
            status: Some(CaseStatus::Open),
            limit: usize::MAX >> 1,
            ..Default::default()
        })
        .await?;
    let closed = journal
        .cases(&CaseFilter {
            status: Some(CaseStatus::Closed),
            limit: CLOSED,
            ..Default::default()
        })
        .await?;
    let all = journal
        .cases(&CaseFilter {
            limit: usize::MAX >> 1,
            ..Default::default()
        })
        .await?;
    let dead_letters = journal.dead_letters(None, DEAD_LETTERS).await?;
    let hub = hub.clone();
    tokio::task::spawn_blocking(move || {
        let events: Vec<Value> = latest
            .into_iter()
            .map(|i| {
                // As viewers may see it.
                let event = hub.governance.read_json(&i.data, Audience::Viewers);
                json!({
                    "cursor": i.cursor,
                    "event": serde_json::from_str::<Value>(&event).unwrap_or(Value::Null),
                })
            })
            .collect();
        let everything: Vec<_> = all.iter().filter_map(|d| from_doc(d)).collect();
        let cases: Vec<Value> = open
            .iter()
            .chain(&closed)
            .filter_map(|d| from_doc(d))
            .map(|c| summary(&c))
            .collect();
        let figures = stats::compute(&everything);
        json!({
            "cursor": cursor,
            "now_ms": hub.clock.now_ms(),
            "clock": if hub.manual_clock.is_some() { "manual" } else { "system" },
            "time_zone": hub.config.cockpit.time_zone,
            "title": hub.config.cockpit.title,
            "street": hub.grid_map().map(|m| m.street().to_string()),
            "events": events,
            "cases": cases,
            "adapters": adapters(&hub),
            "dead_letters": dead_letters,
            "figures": {
                "total": figures.total,
                "by_grid": figures.by_grid,
                "mediation": figures.mediation,
            },
        })
    })
    .await
    .map_err(|e| JournalError::Storage(format!("snapshot: {e}")))
}

/// Each adapter's health: the version serving, quarantine, its queue, how
/// its deliveries went, its last error.
fn adapters(hub: &Arc<Hub>) -> Vec<Value> {
    hub.adapter_names()
        .into_iter()
        .filter_map(|name| {
            let loaded = hub.loaded(&name)?;
            let a = &loaded.adapter;
            let [delivered, retried, dead] = hub.metrics.delivery_counts(&name);
            let attempts = delivered + retried + dead;
            let lanes = hub.deliveries.lane_depths(&name);
            Some(json!({
                "name": name,
                "department": a.description.department,
                "version": a.description.version,
                "sha256": &a.sha256[..a.sha256.len().min(12)],
                "version_id": loaded.version_id,
                "loaded_ms": loaded.loaded_ms,
                "quarantined": hub.quarantined(&name),
                "queue_depth": hub.deliveries.depth(&name),
                "lanes": {"info": lanes[0], "minor": lanes[1], "major": lanes[2], "critical": lanes[3]},
                "deliveries": {"delivered": delivered, "retried": retried, "dead": dead},
                "error_rate": (attempts > 0).then(|| (retried + dead) as f64 / attempts as f64),
                "last_error": hub.deliveries.last_error(&name).map(|(at, e)| json!({"at_ms": at, "error": e})),
            }))
        })
        .collect()
}
