//! The audit chain: every load, unload, rollback and quarantine, every
//! operator's and admin's action (replay, clock, sign-in, refused sign-in,
//! sign-out) with the principal's name, append-only, each record carrying the sha256 of the
//! previous record's hash and its own fields. `govhub audit verify` walks
//! it: a changed record breaks its hash, a removed one breaks the
//! sequence and the link, a reordered one breaks the links.

use crate::journal::AuditRecord;

/// Checks the chain and that it ends at `head` (`"SEQ HASH"` of the last
/// record appended, as the journal keeps it); `Ok(n)` with the number of
/// records, or the first break, naming the record.
pub fn verify_with_head(log: &[AuditRecord], head: Option<&str>) -> Result<usize, String> {
    let n = verify(log)?;
    let last = log.last().map(|r| format!("{} {}", r.seq, r.hash));
    match (head, last.as_deref()) {
        (None, None) => Ok(n),
        (Some(h), Some(l)) if h == l => Ok(n),
        (Some(h), _) => Err(format!(
            "the chain ends at {} but the last record appended was {h}: records were removed from the end",
            last.as_deref().unwrap_or("nothing")
        )),
        (None, Some(_)) => Err("the log has records but no head: the head was removed".into()),
    }
}

/// Checks the chain; `Ok(n)` with the number of records, or the first
/// break, naming the record.
pub fn verify(log: &[AuditRecord]) -> Result<usize, String> {
    let mut prev = "0".repeat(64);
    for (i, r) in log.iter().enumerate() {
        let expected_seq = i as i64 + 1;
        if r.seq != expected_seq {
            return Err(format!(
                "record at position {expected_seq} has seq {}: a record was removed or the records were reordered",
                r.seq
            ));
        }
        if r.prev_hash != prev {
            return Err(format!(
                "record {} does not link to the record before it (prev_hash {}, expected {prev}): removed or reordered records",
                r.seq, r.prev_hash
            ));
        }
        let expected = r.expected_hash();
        if r.hash != expected {
            return Err(format!(
                "record {} ({} {} by {}) was changed: its hash is {}, its content hashes to {expected}",
                r.seq, r.action, r.target, r.actor, r.hash
            ));
        }
        prev = r.hash.clone();
    }
    Ok(log.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let mut r = AuditRecord {
                seq: i as i64 + 1,
                at_ms: 1000 + i as i64,
                actor: "admin".into(),
                action: "load".into(),
                target: format!("a{i}"),
                detail: "{}".into(),
                prev_hash: out
                    .last()
                    .map(|p| p.hash.clone())
                    .unwrap_or_else(|| "0".repeat(64)),
                hash: String::new(),
            };
            r.hash = r.expected_hash();
            out.push(r);
        }
        out
    }

    #[test]
    fn changes_removals_and_reorderings_are_found() {
        assert_eq!(verify(&chain(4)), Ok(4));
        let mut changed = chain(4);
        changed[2].target = "evil".into();
        assert!(verify(&changed).unwrap_err().contains("record 3"));
        let mut removed = chain(4);
        removed.remove(1);
        assert!(verify(&removed).is_err());
        let mut reordered = chain(4);
        reordered.swap(1, 2);
        assert!(verify(&reordered).is_err());
    }

    #[test]
    fn a_removed_last_record_is_found_by_the_head() {
        let log = chain(3);
        let head = format!("3 {}", log[2].hash);
        assert_eq!(verify_with_head(&log, Some(&head)), Ok(3));
        assert!(verify_with_head(&log[..2], Some(&head))
            .unwrap_err()
            .contains("removed from the end"));
        assert!(verify_with_head(&log, None).is_err());
        assert_eq!(verify_with_head(&[], None), Ok(0));
    }
}
