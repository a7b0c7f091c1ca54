//! Adapter versions across the nodes of a cluster (`storage.backend =
//! "nats"`): a version loaded, rolled back or unloaded through any node
//! serves on every node.
//!
//! The registry is shared: each node follows the serving version of each
//! adapter in its watched copy and, when it moves, fetches the module
//! from the shared store, checks its hash and its signature against its
//! own `signing` keys, compiles it through its own cache and swaps it in.
//! A node that refuses a version (a signature its keys do not accept, a
//! module that does not hash to its name, a failed self-check) says so
//! once, in its log and its audit record, and keeps serving the version
//! it had.

use crate::hub::Hub;
use std::sync::Arc;
use std::time::Duration;

/// How often a node compares what it serves with the shared registry.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

impl Hub {
    /// Pulls `name`'s deliveries on this node from now on (shared work).
    pub(crate) fn serve_deliveries(&self, name: &str) {
        match self.deliveries.sink() {
            Some(sink) => self.journal.serve(name, sink),
            None => {
                tracing::error!(adapter = %name, "deliveries served before the hub started its workers")
            }
        }
    }

    /// Follows the shared registry until the hub is dropped.
    pub(crate) fn follow_registry(self: &Arc<Hub>) {
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut refused: std::collections::HashMap<String, i64> = Default::default();
            loop {
                tokio::time::sleep(FOLLOW_EVERY).await;
                let Some(hub) = hub.upgrade() else { return };
                hub.follow_registry_once(&mut refused).await;
            }
        });
    }

    /// Brings what this node serves in line with the shared registry.
    async fn follow_registry_once(&self, refused: &mut std::collections::HashMap<String, i64>) {
        let active = match self.journal.active_versions() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("reading the shared registry: {e}");
                return;
            }
        };
        let serving = |name: &str| self.adapters.get(name).map(|s| s.active.version_id);
        let moved: Vec<_> = active
            .into_iter()
            .filter(|v| serving(&v.name) != Some(v.id) && refused.get(&v.name) != Some(&v.id))
            .collect();
        let gone: Vec<String> = self
            .adapters
            .iter()
            .map(|e| e.key().clone())
            .filter(|name| {
                self.journal
                    .versions(name)
                    .map(|vs| !vs.is_empty() && vs.iter().all(|v| !v.active))
                    .unwrap_or(false)
            })
            .collect();
        if moved.is_empty() && gone.is_empty() {
            return;
        }
        let _one_at_a_time = self.versions_lock.lock().await;
        for v in moved {
            // Looked at again under the lock: this node may have made the
            // change itself a moment ago.
            if serving(&v.name) == Some(v.id) {
                continue;
            }
            let still = self
                .journal
                .active_versions()
                .map(|a| a.iter().any(|a| a.id == v.id))
                .unwrap_or(false);
            if !still {
                continue;
            }
            match self.restore(&v).await {
                Ok(loaded) => {
                    tracing::info!(adapter = %v.name, version = v.id, sha256 = %v.sha256, "adapter version serving (loaded through another node)");
                    self.swap(loaded);
                    refused.remove(&v.name);
                }
                Err(e) => {
                    tracing::error!(adapter = %v.name, version = v.id, sha256 = %v.sha256, "refused the version another node loaded; the version this node had keeps serving: {e:#}");
                    let detail = serde_json::json!({
                        "origin": "cluster",
                        "version_id": v.id,
                        "sha256": v.sha256,
                        "reason": format!("{e:#}"),
                    });
                    let _ = self
                        .journal
                        .audit("cluster", "refused", &v.name, &detail.to_string())
                        .await;
                    refused.insert(v.name.clone(), v.id);
                }
            }
        }
        for name in gone {
            if self.adapters.remove(&name).is_some() {
                tracing::warn!(adapter = %name, "adapter unloaded (through another node)");
            }
        }
    }
}
