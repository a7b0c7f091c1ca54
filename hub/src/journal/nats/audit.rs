//! The audit hash chain on its own stream, which nobody may purge or
//! delete from (`deny_delete`, `deny_purge`, no limits).
//!
//! Each record's sequence is its stream sequence. A node appends record
//! `n + 1` with `Nats-Expected-Last-Sequence: n`, so the chain has one
//! order whatever the number of nodes: a node that lost a race re-reads
//! the head and links to the record that won. Records are on subjects
//! `<root>.audit.<action>.<actor hash>.<case hash>`, so a query by action,
//! actor or case is a subject filter the server applies.

use super::{storage, Inner, NatsJournal};
use crate::journal::{
    now_ms, AuditLog, AuditQuery, AuditRecord, FeedKeys, FeedKind, JournalError, Pending,
};
use async_nats::jetstream::{context::PublishErrorKind, stream};
use async_nats::HeaderMap;

const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
/// How often a node that keeps losing the race for the next link tries.
const LINK_TRIES: usize = 100;

/// A token for a subject: 16 hex digits of sha256, `_` for none.
fn token(value: Option<&str>) -> String {
    value.map_or_else(|| "_".to_string(), super::id_hash)
}

/// An action as a subject token: the actions are the hub's own words.
fn action_token(action: &str) -> String {
    if !action.is_empty()
        && action
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        action.to_string()
    } else {
        format!("h{}", super::id_hash(action))
    }
}

/// The case a flow record is about.
fn caseid_of(action: &str, detail: &str) -> Option<String> {
    if action != "flow" {
        return None;
    }
    let d: serde_json::Value = serde_json::from_str(detail).ok()?;
    d["caseid"].as_str().map(str::to_string)
}

impl Inner {
    fn audit_subject(&self, action: &str, actor: Option<&str>, caseid: Option<&str>) -> String {
        format!(
            "{}.audit.{}.{}.{}",
            self.subjects.root,
            action_token(action),
            token(actor),
            token(caseid)
        )
    }

    /// The newest record's sequence and hash (0 and 64 zeros before the
    /// first).
    async fn audit_head(&self) -> Result<(i64, String), JournalError> {
        let mut stream = self.audit.clone();
        let last = stream
            .info()
            .await
            .map_err(|e| storage("audit stream", e))?
            .state
            .last_sequence;
        if last == 0 {
            return Ok((0, "0".repeat(64)));
        }
        let m = stream
            .get_raw_message(last)
            .await
            .map_err(|e| storage("the audit chain's head", e))?;
        let record: AuditRecord = serde_json::from_slice(&m.payload)
            .map_err(|e| storage(&format!("audit record {last}"), e))?;
        Ok((last as i64, record.hash))
    }

    /// Appends one record, linked to the one before it.
    async fn append_audit(
        &self,
        fields: [String; 4],
        adapter_change: bool,
    ) -> Result<AuditRecord, JournalError> {
        let [actor, action, _, detail] = &fields;
        let caseid = caseid_of(action, detail);
        let subject = self.audit_subject(action, Some(actor), caseid.as_deref());
        // One append at a time from this node; other nodes are ordered by
        // the expected-sequence check.
        let mut head = self.audit_head.lock().await;
        for _ in 0..LINK_TRIES {
            let (last, prev_hash) = match head.clone() {
                Some(h) => h,
                None => self.audit_head().await?,
            };
            let record = AuditRecord::linked(last + 1, prev_hash, now_ms(), &fields);
            let mut headers = HeaderMap::new();
            headers.insert(EXPECTED_LAST_SEQUENCE, last.to_string().as_str());
            let body = serde_json::to_vec(&record).map_err(|e| storage("audit record", e))?;
            let sent = self
                .js
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .map_err(|e| storage("audit chain", e))?
                .await;
            match sent {
                Ok(ack) if ack.sequence as i64 == record.seq => {
                    *head = Some((record.seq, record.hash.clone()));
                    drop(head);
                    if adapter_change {
                        self.feed_adapter_change(&record).await?;
                    }
                    return Ok(record);
                }
                Ok(ack) => {
                    return Err(storage(
                        "audit chain",
                        format!("record {} stored at {}", record.seq, ack.sequence),
                    ))
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Another node linked first: read the head again.
                    *head = None;
                }
                Err(e) => {
                    *head = None;
                    return Err(storage("audit chain", e));
                }
            }
        }
        Err(storage(
            "audit chain",
            "other nodes kept appending first; try again",
        ))
    }

    /// Appends a delivery's flow record.
    pub(crate) async fn append_flow(
        &self,
        target: &str,
        detail: String,
    ) -> Result<AuditRecord, JournalError> {
        self.append_audit(
            ["hub".into(), "flow".into(), target.to_string(), detail],
            false,
        )
        .await
    }

    /// A change of an adapter is on the change feed too (the cockpit shows
    /// it), as on SQLite.
    async fn feed_adapter_change(&self, record: &AuditRecord) -> Result<(), JournalError> {
        let detail: serde_json::Value = serde_json::from_str(&record.detail).unwrap_or_default();
        let data = serde_json::json!({
            "adapter": record.target,
            "change": record.action,
            "detail": detail,
            "at_ms": record.at_ms,
            "audit_seq": record.seq,
        });
        self.publish_feed(FeedKind::Adapter, &FeedKeys::default(), data.to_string())
            .await?;
        Ok(())
    }

    /// Records on `filter` after sequence `after`, in order, at most
    /// `limit`: read through a short-lived consumer the server filters for.
    async fn read_audit(
        &self,
        filter: String,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, JournalError> {
        let messages = super::read_filtered(
            &self.audit,
            vec![filter],
            (after.max(0) + 1) as u64,
            limit,
            "the audit chain",
        )
        .await?;
        messages
            .iter()
            .map(|m| serde_json::from_slice(m).map_err(|e| storage("an audit record", e)))
            .collect()
    }
}

impl AuditLog for NatsJournal {
    fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) -> Pending<AuditRecord> {
        let this = self.handle();
        let fields = [actor, action, target, detail].map(str::to_string);
        Box::pin(async move { this.append_audit(fields, true).await })
    }

    fn audit_action(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Pending<AuditRecord> {
        let this = self.handle();
        let fields = [actor, action, target, detail].map(str::to_string);
        Box::pin(async move { this.append_audit(fields, false).await })
    }

    fn audit_query(&self, q: &AuditQuery) -> Pending<Vec<AuditRecord>> {
        let this = self.handle();
        let q = q.clone();
        Box::pin(async move {
            // A case's records are flow records.
            let action = match (&q.action, &q.caseid) {
                (Some(a), Some(_)) if a != "flow" => return Ok(Vec::new()),
                (_, Some(_)) => Some("flow".to_string()),
                (a, None) => a.clone(),
            };
            let filter = format!(
                "{}.audit.{}.{}.{}",
                this.subjects.root,
                action.as_deref().map_or_else(|| "*".into(), action_token),
                q.actor
                    .as_deref()
                    .map_or_else(|| "*".into(), |a| token(Some(a))),
                q.caseid
                    .as_deref()
                    .map_or_else(|| "*".into(), |c| token(Some(c)))
            );
            let mut records = this.read_audit(filter, q.after, q.limit).await?;
            // The subject holds hashes: what they stand for is checked.
            records.retain(|r| {
                q.actor.as_ref().is_none_or(|a| &r.actor == a)
                    && action.as_ref().is_none_or(|a| &r.action == a)
                    && q.caseid
                        .as_ref()
                        .is_none_or(|c| caseid_of(&r.action, &r.detail).as_ref() == Some(c))
            });
            Ok(records)
        })
    }

    fn audit_log(&self) -> Pending<Vec<AuditRecord>> {
        let this = self.handle();
        Box::pin(async move {
            let filter = format!("{}.audit.>", this.subjects.root);
            this.read_audit(filter, 0, usize::MAX).await
        })
    }

    /// The stream's last message (the stream refuses deletes and
    /// purges, so the chain cannot be cut short behind it).
    fn audit_head(&self) -> Pending<Option<String>> {
        let this = self.handle();
        Box::pin(async move {
            let (seq, hash) = this.audit_head().await?;
            Ok((seq > 0).then(|| format!("{seq} {hash}")))
        })
    }
}

/// The audit stream's configuration.
pub(crate) fn stream_config(config: &super::NatsConfig, root: &str) -> stream::Config {
    stream::Config {
        name: format!("{}_AUDIT", config.stream_name()),
        subjects: vec![format!("{root}.audit.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    }
}
