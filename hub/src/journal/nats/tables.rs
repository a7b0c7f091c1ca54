//! The small tables on JetStream KV buckets, each with a watched copy in
//! memory: the hub's meta values, adapters' poll cursors and their state.
//!
//! A part reads these while it works and may not wait (an adapter's
//! instance loads its state as it is made), so reads answer from the copy.
//! The copy is filled before [`Mirror::start`] returns (everything up to
//! the bucket's last revision at that moment) and follows the bucket from
//! then on: a value another node writes arrives here within a round trip.
//! A node's own writes change its copy at once.
//!
//! Writes an adapter does not wait for (`set_state`) go through one
//! writer task per journal, in the order they were made; `flush` waits
//! for them.

use super::{storage, Inner, NatsJournal};
use crate::journal::{AdapterState, JournalError, Meta, Pending};
use async_nats::jetstream::kv;
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long the first fill of a copy may take before the start fails.
const FILL_TIMEOUT: Duration = Duration::from_secs(30);

/// A bucket and its copy: key → (revision, value; `None` once deleted).
#[derive(Clone)]
pub(crate) struct Mirror {
    store: kv::Store,
    copy: Arc<DashMap<String, (u64, Option<Bytes>)>>,
}

impl Mirror {
    /// Fills the copy with everything the bucket holds, then follows it.
    pub(crate) async fn start(
        store: kv::Store,
        stop: tokio::sync::watch::Receiver<()>,
    ) -> Result<Mirror, JournalError> {
        let name = store.name.clone();
        let last = store
            .status()
            .await
            .map_err(|e| storage(&format!("bucket {name}"), e))?
            .info
            .state
            .last_sequence;
        let mirror = Mirror {
            store,
            copy: Arc::new(DashMap::new()),
        };
        let mut watch = mirror
            .store
            .watch_all_from_revision(1)
            .await
            .map_err(|e| storage(&format!("watching {name}"), e))?;
        let mut seen = 0;
        if last > 0 {
            tokio::time::timeout(FILL_TIMEOUT, async {
                while let Some(entry) = watch.next().await {
                    let entry = entry.map_err(|e| storage(&format!("reading {name}"), e))?;
                    seen = entry.revision;
                    mirror.apply(entry);
                    if seen >= last {
                        break;
                    }
                }
                Ok::<_, JournalError>(())
            })
            .await
            .map_err(|_| storage(&format!("bucket {name}"), "reading it took too long"))??;
        }
        let follower = mirror.clone();
        tokio::spawn(async move { follower.follow(watch, seen, stop).await });
        Ok(mirror)
    }

    /// Applies what the bucket sends; when the watch ends (the connection
    /// was lost and the server forgot it), watches again from where it was.
    /// Stops when the journal is dropped.
    async fn follow(
        self,
        mut watch: kv::Watch,
        mut seen: u64,
        mut stop: tokio::sync::watch::Receiver<()>,
    ) {
        loop {
            loop {
                let entry = tokio::select! {
                    entry = watch.next() => entry,
                    _ = stop.changed() => return,
                };
                match entry {
                    Some(Ok(entry)) => {
                        seen = seen.max(entry.revision);
                        self.apply(entry);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(bucket = %self.store.name, "watch: {e}");
                        break;
                    }
                    None => break,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => return,
            }
            match self.store.watch_all_from_revision(seen + 1).await {
                Ok(w) => watch = w,
                Err(e) => tracing::warn!(bucket = %self.store.name, "watching again: {e}"),
            }
        }
    }

    fn apply(&self, entry: kv::Entry) {
        let value = match entry.operation {
            kv::Operation::Put => Some(entry.value),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        self.set(entry.key, entry.revision, value);
    }

    /// Keeps the newer of what is held and what arrives.
    fn set(&self, key: String, revision: u64, value: Option<Bytes>) {
        let mut slot = self.copy.entry(key).or_insert((0, None));
        if revision > slot.0 {
            *slot = (revision, value);
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        self.copy.get(key).and_then(|v| v.1.clone())
    }

    /// Every live key starting with `prefix`, with its value.
    pub(crate) fn scan(&self, prefix: &str) -> Vec<(String, Bytes)> {
        self.copy
            .iter()
            .filter(|e| e.key().starts_with(prefix))
            .filter_map(|e| Some((e.key().clone(), e.value().1.clone()?)))
            .collect()
    }

    /// The revision a key is at in the copy (0: never written), and its
    /// value.
    pub(crate) fn entry(&self, key: &str) -> (u64, Option<Bytes>) {
        self.copy.get(key).map(|v| v.clone()).unwrap_or((0, None))
    }

    /// Every live key starting with `prefix`, with its revision and value,
    /// in revision order.
    pub(crate) fn scan_revisions(&self, prefix: &str) -> Vec<(String, u64, Bytes)> {
        let mut found: Vec<(String, u64, Bytes)> = self
            .copy
            .iter()
            .filter(|e| e.key().starts_with(prefix))
            .filter_map(|e| Some((e.key().clone(), e.value().0, e.value().1.clone()?)))
            .collect();
        found.sort_by_key(|f| f.1);
        found
    }

    /// Writes a value only if the key is still at `revision` (0: only if
    /// it was never written); `Ok(None)` when another write came first.
    pub(crate) async fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<Option<u64>, JournalError> {
        match self.store.update(key, value.clone(), revision).await {
            Ok(revision) => {
                self.set(key.to_string(), revision, Some(value));
                Ok(Some(revision))
            }
            // Another write came first: the client names it
            // WrongLastRevision, or passes on the server's 10071 or 10164
            // ("wrong last sequence") as another error.
            Err(e)
                if e.kind() == kv::UpdateErrorKind::WrongLastRevision
                    || e.to_string().contains("wrong last sequence") =>
            {
                Ok(None)
            }
            Err(e) => Err(storage(&format!("writing {key} to {}", self.store.name), e)),
        }
    }

    /// Reads a key from the bucket itself (not the copy), and holds what
    /// it read: its revision (0: never written) and value.
    pub(crate) async fn fetch(&self, key: &str) -> Result<(u64, Option<Bytes>), JournalError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| storage(&format!("reading {key} from {}", self.store.name), e))?;
        Ok(match entry {
            Some(e) => {
                let value = (e.operation == kv::Operation::Put).then(|| e.value.clone());
                self.set(key.to_string(), e.revision, value.clone());
                (e.revision, value)
            }
            None => (0, None),
        })
    }

    /// Writes a value and holds it in the copy at once; its revision.
    pub(crate) async fn put_revision(&self, key: &str, value: Bytes) -> Result<u64, JournalError> {
        let revision = self
            .store
            .put(key, value.clone())
            .await
            .map_err(|e| storage(&format!("writing {key} to {}", self.store.name), e))?;
        self.set(key.to_string(), revision, Some(value));
        Ok(revision)
    }

    /// Writes a value and holds it in the copy at once.
    pub(crate) async fn put(&self, key: &str, value: Bytes) -> Result<(), JournalError> {
        self.put_revision(key, value).await.map(|_| ())
    }

    /// Deletes a value (the bucket keeps a marker, which the watch brings).
    pub(crate) async fn delete(&self, key: &str) -> Result<(), JournalError> {
        self.store
            .delete(key)
            .await
            .map_err(|e| storage(&format!("deleting {key} from {}", self.store.name), e))?;
        if let Some(mut slot) = self.copy.get_mut(key) {
            slot.1 = None;
        }
        Ok(())
    }
}

/// A write nobody waits on, or a request to be told when the ones before
/// it are done.
pub(crate) enum Deferred {
    State { key: String, value: Option<Bytes> },
    Flush(oneshot::Sender<()>),
}

/// Runs the deferred writes in order.
pub(crate) fn start_writer(state: Mirror) -> mpsc::UnboundedSender<Deferred> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(w) = rx.recv().await {
            match w {
                Deferred::State { key, value } => {
                    let done = match value {
                        Some(v) => state.put(&key, v).await,
                        None => state.delete(&key).await,
                    };
                    if let Err(e) = done {
                        tracing::error!("adapter state not stored: {e}");
                    }
                }
                Deferred::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    });
    tx
}

/// An adapter's state key in the bucket: `<adapter>.k<base64url(key)>`
/// (any string an adapter chose is a valid key).
fn state_key(adapter: &str, key: &str) -> String {
    format!("{adapter}.k{}", b64(key))
}

fn state_key_name(stored: &str) -> Option<String> {
    use base64::Engine;
    let (_, encoded) = stored.split_once(".k")?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    String::from_utf8(raw).ok()
}

/// URL-safe base64 without padding: only characters a bucket key takes.
fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// A key of the hub's choosing in a bucket (a meta key, a case id):
/// itself when it is a valid key already (`clock_ms`, `YF-2025-0801-001`),
/// encoded otherwise.
pub(crate) fn bucket_key(key: &str) -> String {
    let plain = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b));
    if plain {
        key.to_string()
    } else {
        format!("=b64.{}", b64(key))
    }
}

fn meta_key(key: &str) -> String {
    bucket_key(key)
}

fn text(bytes: Bytes) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Inner {
    pub(crate) fn flush_deferred(&self) -> Pending<()> {
        let (done, rx) = oneshot::channel();
        let sent = self.deferred.send(Deferred::Flush(done));
        Box::pin(async move {
            sent.map_err(|_| JournalError::Closed)?;
            rx.await.map_err(|_| JournalError::Closed)
        })
    }
}

impl NatsJournal {
    /// Waits until the writes made so far without waiting (adapters'
    /// state) are stored.
    pub fn flush(&self) -> Pending<()> {
        self.inner.flush_deferred()
    }
}

impl Meta for NatsJournal {
    fn meta(&self, key: &str) -> Result<Option<String>, JournalError> {
        Ok(self.inner.meta.get(&meta_key(key)).map(text))
    }

    fn set_meta(&self, key: &str, value: &str) -> Pending<()> {
        let this = self.handle();
        let (key, value) = (meta_key(key), Bytes::from(value.to_string()));
        Box::pin(async move { this.meta.put(&key, value).await })
    }

    /// The first node to ask stores its candidate (written only if the
    /// key never was); every other node reads what it stored.
    fn shared_value(&self, key: &str, candidate: &str) -> Pending<Option<String>> {
        let this = self.handle();
        let (key, candidate) = (meta_key(key), candidate.to_string());
        Box::pin(async move {
            // Bounded: a lost race reads the winner's value at once.
            for _ in 0..5 {
                if let (_, Some(value)) = this.meta.fetch(&key).await? {
                    return Ok(Some(text(value)));
                }
                let value = Bytes::from(candidate.clone());
                if this.meta.update(&key, value, 0).await?.is_some() {
                    return Ok(Some(candidate));
                }
            }
            Err(JournalError::Storage(format!(
                "{key}: neither stored nor readable after five tries"
            )))
        })
    }
}

impl AdapterState for NatsJournal {
    fn set_cursor(&self, adapter: &str, cursor: &str) -> Pending<()> {
        let this = self.handle();
        let (key, value) = (adapter.to_string(), Bytes::from(cursor.to_string()));
        Box::pin(async move { this.cursors.put(&key, value).await })
    }

    fn set_state(&self, adapter: &str, key: &str, value: Option<&[u8]>) {
        let key = state_key(adapter, key);
        let value = value.map(Bytes::copy_from_slice);
        // Held in the copy at once, so the adapter reads back what it
        // wrote; stored by the writer in order.
        match &value {
            Some(v) => self.inner.state.set_pending(&key, v.clone()),
            None => self.inner.state.clear_pending(&key),
        }
        if self
            .inner
            .deferred
            .send(Deferred::State { key, value })
            .is_err()
        {
            tracing::error!(%adapter, "adapter state not stored: the journal is closed");
        }
    }

    fn cursor(&self, adapter: &str) -> Result<Option<String>, JournalError> {
        Ok(self.inner.cursors.get(adapter).map(text))
    }

    fn state(&self, adapter: &str) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
        let mut pairs: Vec<(String, Vec<u8>)> = self
            .inner
            .state
            .scan(&format!("{adapter}.k"))
            .into_iter()
            .filter_map(|(k, v)| Some((state_key_name(&k)?, v.to_vec())))
            .collect();
        pairs.sort();
        Ok(pairs)
    }
}

impl Mirror {
    /// A value written by this node that the bucket does not hold yet: it
    /// keeps the revision it had, so the bucket's answer replaces it.
    fn set_pending(&self, key: &str, value: Bytes) {
        let mut slot = self.copy.entry(key.to_string()).or_insert((0, None));
        slot.1 = Some(value);
    }

    fn clear_pending(&self, key: &str) {
        if let Some(mut slot) = self.copy.get_mut(key) {
            slot.1 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_in_a_bucket_and_come_back() {
        for key in ["", "token", "a b/c", "网格.一", "..", "x.ky"] {
            let k = state_key("police", key);
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)),
                "{k}"
            );
            assert_eq!(state_key_name(&k).as_deref(), Some(key));
        }
        assert_eq!(meta_key("clock_ms"), "clock_ms");
        assert_eq!(meta_key("cursor/police"), "cursor/police");
        assert!(meta_key("a b").starts_with("=b64."));
        assert!(meta_key(".x").starts_with("=b64."));
        assert!(meta_key("a..b").starts_with("=b64."));
        assert_eq!(bucket_key("YF-2025-0801-001"), "YF-2025-0801-001");
    }
}
