//! The change feed in SQLite: one `feed` table whose `cursor` only grows
//! (AUTOINCREMENT never reuses a value, even after pruning), written in the
//! same transaction as the change it records, so a committed change always
//! has its item and an item never outlives a rolled-back change.
//!
//! An event's item keeps only a reference to the stored CloudEvent; the
//! other kinds keep their JSON. The oldest items are pruned past
//! `retain`; a subscriber whose cursor is older than what is kept has to
//! start again from a snapshot.

use super::super::{FeedItem, FeedKeys, FeedKind, FeedSpan};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::sync::Arc;

/// Prune at most once per this many items, so a busy writer does not
/// run a DELETE in every transaction.
const PRUNE_EVERY: i64 = 1_000;

/// What one transaction adds besides its rows: the feed items, sent to
/// subscribers once it commits, and the audit chain's last record, whose
/// `seq` and hash the next record links to and whose head is written once
/// at the end (a flow record per delivery makes the chain busy).
#[derive(Default)]
pub(super) struct Batch {
    pub(super) items: Vec<FeedItem>,
    pub(super) audit_last: Option<(i64, String)>,
}

impl Batch {
    /// Adds an item: `event_seq` for an event (its body is the stored
    /// CloudEvent), the JSON otherwise.
    pub(super) fn add(
        &mut self,
        tx: &Transaction<'_>,
        at_ms: i64,
        kind: FeedKind,
        keys: FeedKeys,
        event_seq: Option<i64>,
        data: Arc<str>,
    ) -> Result<i64, rusqlite::Error> {
        let mut insert = tx.prepare_cached(
            "INSERT INTO feed (at_ms, kind, type, grid, category, severity, caseid, event_seq, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let body: Option<&[u8]> = match event_seq {
            Some(_) => None,
            None => Some(data.as_bytes()),
        };
        insert.execute(params![
            at_ms,
            kind.as_str(),
            keys.type_,
            keys.grid,
            keys.category,
            keys.severity,
            keys.caseid,
            event_seq,
            body
        ])?;
        let cursor = tx.last_insert_rowid();
        self.items.push(FeedItem {
            cursor,
            at_ms,
            kind,
            keys,
            data,
        });
        Ok(cursor)
    }

    /// Drops the oldest items past `retain`, now and then.
    pub(super) fn prune(&self, tx: &Transaction<'_>, retain: i64) -> Result<(), rusqlite::Error> {
        let (Some(first), Some(last)) = (self.items.first(), self.items.last()) else {
            return Ok(());
        };
        if first.cursor / PRUNE_EVERY == last.cursor / PRUNE_EVERY
            && first.cursor % PRUNE_EVERY != 0
        {
            return Ok(());
        }
        tx.execute(
            "DELETE FROM feed WHERE cursor <= ?1",
            params![last.cursor - retain],
        )?;
        Ok(())
    }
}

const SELECT: &str = "SELECT f.cursor, f.at_ms, f.kind, f.type, f.grid, f.category, f.severity,
        f.caseid, COALESCE(e.cloudevent, f.body)
    FROM feed f LEFT JOIN events e ON e.seq = f.event_seq";

fn item(r: &rusqlite::Row<'_>) -> Result<FeedItem, rusqlite::Error> {
    let kind: String = r.get(2)?;
    let body: Vec<u8> = r.get(8)?;
    Ok(FeedItem {
        cursor: r.get(0)?,
        at_ms: r.get(1)?,
        kind: FeedKind::parse(&kind).unwrap_or(FeedKind::Event),
        keys: FeedKeys {
            type_: r.get(3)?,
            grid: r.get(4)?,
            category: r.get(5)?,
            severity: r.get(6)?,
            caseid: r.get(7)?,
        },
        data: String::from_utf8_lossy(&body).into(),
    })
}

/// Up to `limit` items after `cursor`, oldest first.
pub(super) fn after(
    conn: &Connection,
    cursor: i64,
    limit: usize,
) -> Result<Vec<FeedItem>, rusqlite::Error> {
    let mut s = conn.prepare_cached(&format!(
        "{SELECT} WHERE f.cursor > ?1 ORDER BY f.cursor LIMIT ?2"
    ))?;
    let rows = s.query_map(params![cursor, limit as i64], item)?;
    rows.collect()
}

/// Up to `limit` items of `kind` at or before `cursor`, newest first.
pub(super) fn latest(
    conn: &Connection,
    kind: FeedKind,
    cursor: i64,
    limit: usize,
) -> Result<Vec<FeedItem>, rusqlite::Error> {
    let mut s = conn.prepare_cached(&format!(
        "{SELECT} WHERE f.kind = ?1 AND f.cursor <= ?2 ORDER BY f.cursor DESC LIMIT ?3"
    ))?;
    let rows = s.query_map(params![kind.as_str(), cursor, limit as i64], item)?;
    rows.collect()
}

/// The cursors that can be replayed.
pub(super) fn span(conn: &Connection) -> Result<FeedSpan, rusqlite::Error> {
    let head: i64 = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'feed'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let first: Option<i64> = conn.query_row("SELECT MIN(cursor) FROM feed", [], |r| r.get(0))?;
    Ok(FeedSpan {
        first: first.unwrap_or(head + 1),
        head,
    })
}
