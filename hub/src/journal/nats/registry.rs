//! The adapter registry on a KV bucket, and the modules in an object
//! store.
//!
//! - `version.<name>.<uuid>`: one loaded version (its [`VersionRecord`]),
//!   written once. Its id is the revision the bucket gave it, unique and
//!   growing across nodes.
//! - `serving.<name>`: the id of the version serving, empty when unloaded.
//!   A load, a rollback and an unload change it with compare-and-set on
//!   its revision, so two nodes changing one adapter at once cannot both
//!   win: the loser is told to try again.
//!
//! Every node keeps a watched copy of the bucket (the registry's reads
//! answer at once) and sees another node's change within a round trip;
//! what it does then (fetch the module, check its hash and signature
//! itself, serve it) is the hub's. Modules are kept by their sha256 in
//! the `<prefix>-modules` object store.

use super::{storage, NatsJournal};
use crate::journal::{JournalError, Pending, Registry, VersionRecord};
use bytes::Bytes;

fn version_prefix(name: &str) -> String {
    format!("version.{name}.")
}

fn serving_key(name: &str) -> String {
    format!("serving.{name}")
}

/// An adapter's name as a bucket key token.
fn checked(name: &str) -> Result<&str, JournalError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(storage(
            "registry",
            format!("adapter name `{name}` is not letters, digits, - and _"),
        ))
    }
}

impl NatsJournal {
    /// The serving version's id of `name` (0: none), and the revision of
    /// the pointer, for a compare-and-set.
    fn serving(&self, name: &str) -> (i64, u64) {
        let (revision, value) = self.inner.registry.entry(&serving_key(name));
        let id = value
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(0);
        (id, revision)
    }

    fn version_records(&self, name: &str) -> Vec<VersionRecord> {
        let (serving, _) = self.serving(name);
        self.inner
            .registry
            .scan_revisions(&version_prefix(name))
            .into_iter()
            .filter_map(|(_, revision, value)| {
                let mut v: VersionRecord = serde_json::from_slice(&value).ok()?;
                v.id = revision as i64;
                v.active = v.id == serving;
                Some(v)
            })
            .collect()
    }

    /// Stores a module by its sha256 (which it is checked against).
    pub async fn put_module(&self, sha256: &str, bytes: Bytes) -> Result<(), JournalError> {
        let actual = hex::encode(super::sha_bytes(&bytes));
        if actual != sha256 {
            return Err(storage(
                "modules",
                format!("the module hashes to {actual}, not {sha256}"),
            ));
        }
        let mut reader = std::io::Cursor::new(bytes);
        self.inner
            .modules
            .put(sha256, &mut reader)
            .await
            .map_err(|e| storage(&format!("storing module {sha256}"), e))?;
        Ok(())
    }

    /// A stored module, by its sha256; `None` when no node stored it.
    pub async fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, JournalError> {
        use async_nats::jetstream::object_store::GetErrorKind;
        use tokio::io::AsyncReadExt;
        let mut object = match self.inner.modules.get(sha256).await {
            Ok(o) => o,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(storage(&format!("module {sha256}"), e)),
        };
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| storage(&format!("module {sha256}"), e))?;
        Ok(Some(bytes))
    }

    async fn point(&self, name: &str, id: i64) -> Result<(), JournalError> {
        let (_, revision) = self.serving(name);
        let value = Bytes::from(if id > 0 {
            id.to_string()
        } else {
            String::new()
        });
        match self
            .inner
            .registry
            .update(&serving_key(name), value, revision)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(storage(
                "registry",
                format!(
                    "another node changed the serving version of `{name}` at the same time; try again"
                ),
            )),
        }
    }
}

impl Registry for NatsJournal {
    fn add_version(&self, version: VersionRecord) -> Pending<i64> {
        let this = self.clone();
        Box::pin(async move {
            let name = checked(&version.name)?.to_string();
            let key = format!("{}{}", version_prefix(&name), uuid::Uuid::new_v4().simple());
            let record = VersionRecord {
                id: 0,
                active: false,
                ..version
            };
            let body = serde_json::to_vec(&record).map_err(|e| storage("registry", e))?;
            let id = this.inner.registry.put_revision(&key, body.into()).await? as i64;
            this.point(&name, id).await?;
            Ok(id)
        })
    }

    fn activate_version(&self, id: i64) -> Pending<()> {
        let this = self.clone();
        Box::pin(async move {
            let found = this
                .inner
                .registry
                .scan_revisions("version.")
                .into_iter()
                .find(|(_, revision, _)| *revision as i64 == id);
            let Some((key, _, _)) = found else {
                return Err(storage("registry", format!("no version {id}")));
            };
            let name = key
                .strip_prefix("version.")
                .and_then(|k| k.split('.').next())
                .unwrap_or_default()
                .to_string();
            this.point(&name, id).await
        })
    }

    fn deactivate(&self, name: &str) -> Pending<()> {
        let this = self.clone();
        let name = name.to_string();
        Box::pin(async move { this.point(checked(&name)?, 0).await })
    }

    fn active_versions(&self) -> Result<Vec<VersionRecord>, JournalError> {
        let mut names: Vec<String> = self
            .inner
            .registry
            .scan_revisions("serving.")
            .into_iter()
            .filter_map(|(k, _, _)| k.strip_prefix("serving.").map(str::to_string))
            .collect();
        names.sort();
        Ok(names
            .iter()
            .flat_map(|n| self.version_records(n))
            .filter(|v| v.active)
            .collect())
    }

    fn versions(&self, name: &str) -> Result<Vec<VersionRecord>, JournalError> {
        Ok(self.version_records(name))
    }

    fn share_module(
        &self,
        sha256: &str,
        module: Vec<u8>,
        signature: Option<String>,
    ) -> Pending<()> {
        let this = self.clone();
        let sha256 = sha256.to_string();
        Box::pin(async move {
            this.put_module(&sha256, Bytes::from(module)).await?;
            if let Some(sig) = signature {
                let mut reader = std::io::Cursor::new(sig.into_bytes());
                this.inner
                    .modules
                    .put(format!("{sha256}.sig").as_str(), &mut reader)
                    .await
                    .map_err(|e| storage(&format!("storing the signature of {sha256}"), e))?;
            }
            Ok(())
        })
    }

    fn shared_module(&self, sha256: &str) -> Pending<Option<(Vec<u8>, Option<String>)>> {
        let this = self.clone();
        let sha256 = sha256.to_string();
        Box::pin(async move {
            let Some(module) = this.module(&sha256).await? else {
                return Ok(None);
            };
            let signature = this
                .module(&format!("{sha256}.sig"))
                .await?
                .map(|s| String::from_utf8_lossy(&s).into_owned());
            Ok(Some((module, signature)))
        })
    }
}
