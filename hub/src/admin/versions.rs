//! Adapter versions: load (from the folder or the admin API), swap,
//! roll back, unload, quarantine, and come back on the same versions after
//! a restart.
//!
//! A load compiles (or reads the compile cache), instantiates and runs the
//! `describe` self-check, keeps a copy of the module under
//! `modules/<sha256>.wasm` beside the journal, records the version and an
//! audit record, and only then swaps the registry entry: calls in flight
//! hold the old version and finish on it; every later call gets the new
//! one. The journal's active versions are what a restart loads.

use super::signing;
use crate::hub::{Health, Hub, Loaded, Slot};
use crate::journal::VersionRecord;
use crate::router::TypeGlob;
use crate::runtime::{Adapter, Manifest};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a load comes from, for the version record and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The watched adapters folder.
    Dir,
    /// The admin API.
    Admin,
    /// A rollback.
    Rollback,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Dir => "dir",
            Origin::Admin => "admin",
            Origin::Rollback => "rollback",
        }
    }
}

/// A manifest with its text and signature, ready to load.
pub struct Candidate {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Its text, as kept in the version record.
    pub text: String,
    /// The module's signature (base64), if any.
    pub signature: Option<String>,
}

impl Candidate {
    /// A manifest file of the adapters folder, with `MODULE.wasm.sig`.
    pub fn from_file(path: &Path) -> anyhow::Result<Candidate> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("manifest {}", path.display()))?;
        let manifest = Manifest::parse(&text, path)?;
        let signature = signing::signature_beside(&manifest.wasm);
        Ok(Candidate {
            manifest,
            text,
            signature,
        })
    }
}

/// How long a swap took, for the admin API's answer and the benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Swapped {
    /// The adapter.
    pub name: String,
    /// The version record's id.
    pub version_id: i64,
    /// The module's sha256.
    pub sha256: String,
    /// From the start of the load to serving, ms.
    pub load_ms: f64,
    /// Whether the compiled module came from the cache.
    pub cached: bool,
}

impl Hub {
    /// The folder that keeps every loaded module by hash.
    pub fn modules_dir(&self) -> PathBuf {
        self.config
            .storage
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
            .join("modules")
    }

    fn stored_module(&self, sha256: &str) -> PathBuf {
        self.modules_dir().join(format!("{sha256}.wasm"))
    }

    fn check_signature(&self, c: &Candidate, module: &[u8]) -> anyhow::Result<bool> {
        let keys = signing::parse_keys(&self.config.signing.trusted_keys)?;
        Ok(signing::check(
            &c.manifest.name,
            module,
            c.signature.as_deref(),
            &keys,
            self.config.signing.require_signatures,
        )?)
    }

    /// Loads `c` as a new version and swaps it in. A refusal (signature,
    /// hash, self-check) is audited and leaves the serving version alone.
    pub async fn install(
        &self,
        c: Candidate,
        origin: Origin,
        actor: &str,
    ) -> anyhow::Result<Swapped> {
        let started = std::time::Instant::now();
        let _one_at_a_time = self.versions_lock.lock().await;
        let name = c.manifest.name.clone();
        let result = self.install_inner(&c, origin).await;
        match result {
            Ok((loaded, cached)) => {
                // A manifest may ask to see more than the hub grants: said,
                // and kept in the load's record; the grant stands.
                let beyond = self
                    .governance
                    .requests_beyond(&name, &c.manifest.clearance);
                for r in &beyond {
                    tracing::info!(adapter = %name, "clearance requested beyond the grant: {r}");
                }
                let detail = serde_json::json!({
                    "sha256": loaded.adapter.sha256,
                    "version_id": loaded.version_id,
                    "adapter_version": loaded.adapter.description.version,
                    "origin": origin.as_str(),
                    "signed": loaded.signed,
                    "clearance_requested_beyond_grant": beyond,
                });
                self.journal
                    .audit(actor, "load", &name, &detail.to_string())
                    .await?;
                let swapped = Swapped {
                    name: name.clone(),
                    version_id: loaded.version_id,
                    sha256: loaded.adapter.sha256.clone(),
                    load_ms: 0.0,
                    cached,
                };
                self.swap(loaded);
                let load_ms = started.elapsed().as_secs_f64() * 1000.0;
                tracing::info!(adapter = %name, version = swapped.version_id, sha256 = %swapped.sha256, origin = origin.as_str(), load_ms, "adapter version serving");
                Ok(Swapped { load_ms, ..swapped })
            }
            Err(e) => {
                let detail =
                    serde_json::json!({ "origin": origin.as_str(), "reason": format!("{e:#}") });
                let _ = self
                    .journal
                    .audit(actor, "refused", &name, &detail.to_string())
                    .await;
                Err(e)
            }
        }
    }

    async fn install_inner(&self, c: &Candidate, origin: Origin) -> anyhow::Result<(Loaded, bool)> {
        let module = crate::runtime::read_module(&c.manifest)?;
        let signed = self.check_signature(c, &module)?;
        let adapter = self.runtime.load(&c.manifest).await?;
        // Keep the exact module, so a rollback or a restart finds it even
        // after the folder changed.
        let stored = self.stored_module(&adapter.sha256);
        if !stored.exists() {
            std::fs::create_dir_all(self.modules_dir())?;
            let tmp = stored.with_extension("tmp");
            std::fs::write(&tmp, &module)?;
            std::fs::rename(&tmp, &stored)?;
        }
        if let Some(sig) = &c.signature {
            std::fs::write(stored.with_extension("wasm.sig"), sig)?;
        }
        // Every node of a cluster fetches it from there (and checks its
        // hash and signature itself).
        self.journal
            .share_module(&adapter.sha256, module, c.signature.clone())
            .await?;
        let version_id = self
            .journal
            .add_version(VersionRecord {
                id: 0,
                name: c.manifest.name.clone(),
                sha256: adapter.sha256.clone(),
                manifest: c.text.clone(),
                origin: origin.as_str().to_string(),
                loaded_ms: 0,
                active: true,
            })
            .await?;
        let cached = adapter.cache == crate::runtime::CacheUse::Hit;
        Ok((
            self.make_loaded(adapter, version_id, origin.as_str(), signed)?,
            cached,
        ))
    }

    fn make_loaded(
        &self,
        adapter: Arc<Adapter>,
        version_id: i64,
        origin: &str,
        signed: bool,
    ) -> anyhow::Result<Loaded> {
        let subscriptions = adapter
            .subscriptions()
            .map(TypeGlob::new)
            .collect::<Result<Arc<[_]>, _>>()
            .map_err(|m| anyhow::anyhow!("adapter `{}` subscription: {m}", adapter.name()))?;
        Ok(Loaded {
            adapter,
            subscriptions,
            version_id,
            origin: origin.to_string(),
            loaded_ms: crate::journal::now_ms(),
            signed,
        })
    }

    /// Swaps the registry entry: new calls get the new version at once.
    /// With shared work (NATS), this node pulls the adapter's deliveries
    /// from then on.
    pub(crate) fn swap(&self, loaded: Loaded) {
        let name = loaded.adapter.name().to_string();
        if self.journal.shared_work() {
            self.serve_deliveries(&name);
        }
        self.adapters.insert(
            name.clone(),
            Slot {
                active: Arc::new(loaded),
                quarantined: None,
                next_probe: None,
            },
        );
        self.health.remove(&name);
        self.deliveries.wake(&name);
    }

    /// Puts a module another node shared beside this node's journal,
    /// once its hash is checked; nothing when it is there already.
    async fn fetch_module(&self, sha256: &str) -> anyhow::Result<()> {
        let stored = self.stored_module(sha256);
        if stored.exists() {
            return Ok(());
        }
        let Some((module, signature)) = self.journal.shared_module(sha256).await? else {
            anyhow::bail!(
                "module {sha256} is neither in {} nor shared by another node",
                self.modules_dir().display()
            );
        };
        let actual = crate::runtime::sha256_hex(&module);
        if actual != sha256 {
            anyhow::bail!("the shared module {sha256} hashes to {actual}: refused");
        }
        std::fs::create_dir_all(self.modules_dir())?;
        let tmp = stored.with_extension("tmp");
        std::fs::write(&tmp, &module)?;
        std::fs::rename(&tmp, &stored)?;
        if let Some(sig) = signature {
            std::fs::write(stored.with_extension("wasm.sig"), sig)?;
        }
        Ok(())
    }

    /// Loads a stored version again (a restart, a rollback, a version
    /// another node of the cluster loaded).
    pub(crate) async fn restore(&self, v: &VersionRecord) -> anyhow::Result<Loaded> {
        self.fetch_module(&v.sha256).await?;
        let module = self.stored_module(&v.sha256);
        let mut manifest = Manifest::parse(&v.manifest, &module)?;
        manifest.wasm = module.clone();
        // The hash was checked when the version was first loaded; the
        // stored copy is named by it, and Runtime::check verifies it again.
        manifest.sha256 = Some(v.sha256.clone());
        let signature = signing::signature_beside(&module);
        let c = Candidate {
            manifest,
            text: v.manifest.clone(),
            signature,
        };
        let bytes = std::fs::read(&module)
            .with_context(|| format!("stored module {}", module.display()))?;
        let signed = self.check_signature(&c, &bytes)?;
        let adapter = self.runtime.load(&c.manifest).await?;
        self.make_loaded(adapter, v.id, &v.origin, signed)
    }

    /// Rolls `name` back to the version before the one serving.
    pub async fn rollback(&self, name: &str, actor: &str) -> anyhow::Result<Swapped> {
        let started = std::time::Instant::now();
        let _one_at_a_time = self.versions_lock.lock().await;
        let versions = self.journal.versions(name)?;
        let active = versions
            .iter()
            .rfind(|v| v.active)
            .with_context(|| format!("adapter `{name}` is not loaded"))?;
        let previous = versions
            .iter()
            .rfind(|v| v.id < active.id && v.sha256 != active.sha256)
            .or_else(|| versions.iter().rfind(|v| v.id < active.id))
            .with_context(|| format!("adapter `{name}` has no earlier version to roll back to"))?;
        let loaded = self.restore(previous).await?;
        self.journal.activate_version(previous.id).await?;
        let detail = serde_json::json!({
            "from_version": active.id,
            "from_sha256": active.sha256,
            "to_version": previous.id,
            "to_sha256": previous.sha256,
        });
        self.journal
            .audit(actor, "rollback", name, &detail.to_string())
            .await?;
        let swapped = Swapped {
            name: name.to_string(),
            version_id: previous.id,
            sha256: previous.sha256.clone(),
            load_ms: 0.0,
            cached: loaded.adapter.cache == crate::runtime::CacheUse::Hit,
        };
        self.swap(loaded);
        tracing::warn!(adapter = %name, from = active.id, to = previous.id, "adapter rolled back");
        Ok(Swapped {
            load_ms: started.elapsed().as_secs_f64() * 1000.0,
            ..swapped
        })
    }

    /// Takes `name` out: its deliveries wait in the journal until it is
    /// loaded again.
    pub async fn unload(&self, name: &str, actor: &str) -> anyhow::Result<()> {
        let _one_at_a_time = self.versions_lock.lock().await;
        let Some((_, slot)) = self.adapters.remove(name) else {
            anyhow::bail!("adapter `{name}` is not loaded");
        };
        self.journal.deactivate(name).await?;
        let detail = serde_json::json!({ "sha256": slot.active.adapter.sha256, "version_id": slot.active.version_id });
        self.journal
            .audit(actor, "unload", name, &detail.to_string())
            .await?;
        tracing::warn!(adapter = %name, "adapter unloaded");
        Ok(())
    }

    /// At start: every adapter on the version the journal says serves,
    /// except where the folder holds something new since it was last
    /// loaded from there.
    pub async fn load_at_start(&self) -> anyhow::Result<()> {
        let active = self.journal.active_versions()?;
        let mut done = std::collections::HashSet::new();
        for path in crate::hub::manifest_paths(&self.config.adapters.dir)? {
            let c = Candidate::from_file(&path)?;
            let name = c.manifest.name.clone();
            if !done.insert(name.clone()) {
                anyhow::bail!(
                    "two manifests in {} name the adapter `{name}`",
                    self.config.adapters.dir.display()
                );
            }
            if self.folder_changed(&c)? {
                self.install(c, Origin::Dir, "dir").await?;
            } else if let Some(v) = active.iter().find(|v| v.name == name) {
                let loaded = self.restore(v).await?;
                self.swap(loaded);
            } else {
                tracing::info!(adapter = %name, "left unloaded: it was unloaded and its files did not change since");
            }
            self.remember_file_state(&path);
        }
        for v in active.iter().filter(|v| !done.contains(&v.name)) {
            let loaded = self.restore(v).await?;
            self.swap(loaded);
        }
        Ok(())
    }

    /// Whether a folder manifest differs from the last version loaded from
    /// the folder (text or module).
    fn folder_changed(&self, c: &Candidate) -> anyhow::Result<bool> {
        let sha = crate::runtime::sha256_file(&c.manifest.wasm).unwrap_or_default();
        let last = self
            .journal
            .versions(&c.manifest.name)?
            .into_iter()
            .rfind(|v| v.origin == "dir");
        Ok(match last {
            None => true,
            Some(v) => v.sha256 != sha || v.manifest != c.text,
        })
    }

    /// What the watcher compares: the manifest's text and its module's
    /// time and size (a manifest that does not parse is a state too, so
    /// its error is logged once).
    fn file_state(path: &Path) -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let module = Manifest::parse(&text, path)
            .ok()
            .and_then(|m| std::fs::metadata(&m.wasm).ok())
            .map(|m| format!("{:?} {}", m.modified().ok(), m.len()))
            .unwrap_or_default();
        Some(format!("{text}\n{module}"))
    }

    fn remember_file_state(&self, path: &Path) {
        if let Some(state) = Self::file_state(path) {
            if let Ok(mut seen) = self.dir_seen.lock() {
                seen.insert(path.to_path_buf(), state);
            }
        }
    }

    /// Looks at the adapters folder once: a new or changed manifest or
    /// module is loaded as a new version (a failure is logged and audited;
    /// the serving version stays).
    pub async fn scan_folder(&self) {
        let Ok(paths) = crate::hub::manifest_paths(&self.config.adapters.dir) else {
            return;
        };
        for path in paths {
            let Some(state) = Self::file_state(&path) else {
                continue;
            };
            let unchanged = self
                .dir_seen
                .lock()
                .map(|seen| seen.get(&path) == Some(&state))
                .unwrap_or(true);
            if unchanged {
                continue;
            }
            match Candidate::from_file(&path) {
                Ok(c) => {
                    if let Err(e) = self.install(c, Origin::Dir, "dir").await {
                        tracing::error!(manifest = %path.display(), "not loaded: {e:#}");
                    }
                }
                Err(e) => tracing::error!(manifest = %path.display(), "not loaded: {e:#}"),
            }
            // Once per change, loaded or refused: no retry loop on a bad file.
            if let Ok(mut seen) = self.dir_seen.lock() {
                seen.insert(path, state);
            }
        }
    }

    /// Records one delivery outcome of `name` for quarantine: enough
    /// failures take it out of rotation; while quarantined, a success (a
    /// probe's) puts it back.
    pub fn record_health(self: &Arc<Hub>, name: &str, health: Health) {
        let q = &self.config.quarantine;
        if health == Health::Ok && self.quarantined(name).is_some() {
            self.release(name);
            return;
        }
        let (trip, crashed) = {
            let entry = self.health.entry(name.to_string()).or_default();
            let mut window = entry.lock().unwrap_or_else(|p| p.into_inner());
            window.push_back(health);
            while window.len() > q.window {
                window.pop_front();
            }
            let failures = window.iter().filter(|h| **h != Health::Ok).count();
            let crashed = window.iter().any(|h| *h == Health::Crashed);
            (
                window.len() >= q.min_calls
                    && failures as f64 / window.len() as f64 >= q.max_failure_rate,
                crashed,
            )
        };
        if !trip {
            return;
        }
        let already = self
            .adapters
            .get(name)
            .is_none_or(|s| s.quarantined.is_some());
        if already {
            return;
        }
        if let Some(mut slot) = self.adapters.get_mut(name) {
            slot.quarantined = Some(format!(
                "at least {:.0}% of its last {} calls failed ({})",
                q.max_failure_rate * 100.0,
                q.window,
                if crashed {
                    "traps or deadline hits"
                } else {
                    "the department was unavailable"
                }
            ));
            slot.next_probe = Some(
                std::time::Instant::now() + std::time::Duration::from_millis(q.probe_interval_ms),
            );
        }
        let hub = self.clone();
        let name = name.to_string();
        tokio::spawn(async move { hub.quarantine(&name, crashed).await });
    }

    /// A probe succeeded: back in rotation.
    fn release(self: &Arc<Hub>, name: &str) {
        let released = match self.adapters.get_mut(name) {
            Some(mut slot) if slot.quarantined.is_some() => {
                slot.quarantined = None;
                slot.next_probe = None;
                true
            }
            _ => false,
        };
        if !released {
            return;
        }
        self.health.remove(name);
        self.deliveries.wake(name);
        tracing::warn!(adapter = %name, "adapter back in rotation: a probe delivery succeeded");
        let hub = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let _ = hub.journal.audit("hub", "release", &name, "{}").await;
        });
    }

    /// Announces a quarantine and, when the adapter was upgraded within
    /// `quarantine.rollback_window_s`, rolls it back.
    async fn quarantine(self: Arc<Hub>, name: &str, crashed: bool) {
        let Some((reason, loaded_ms, version)) = self.adapters.get(name).map(|s| {
            (
                s.quarantined.clone().unwrap_or_default(),
                s.active.loaded_ms,
                s.active.version_id,
            )
        }) else {
            return;
        };
        tracing::error!(adapter = %name, %reason, "adapter quarantined: its deliveries wait in the journal");
        let now = crate::journal::now_ms();
        let detail = serde_json::json!({ "reason": reason, "version_id": version });
        let _ = self
            .journal
            .audit("hub", "quarantine", name, &detail.to_string())
            .await;
        self.announce(
            "gov.adapter.quarantined",
            name,
            &format!("{version}-{now}"),
            detail,
        )
        .await;
        let recent = now - loaded_ms <= (self.config.quarantine.rollback_window_s as i64) * 1000;
        let upgraded = self
            .journal
            .versions(name)
            .map(|v| v.iter().filter(|x| x.id < version).count() > 0)
            .unwrap_or(false);
        // An outage of the department is no reason to leave the new
        // version; traps and deadline hits are.
        if recent && upgraded && crashed {
            match self.rollback(name, "hub").await {
                Ok(s) => {
                    let detail = serde_json::json!({ "from_version": version, "to_version": s.version_id, "reason": reason });
                    self.announce(
                        "gov.adapter.rolled-back",
                        name,
                        &format!("{version}-{now}"),
                        detail,
                    )
                    .await;
                }
                Err(e) => tracing::error!(adapter = %name, "automatic rollback failed: {e:#}"),
            }
        }
    }

    async fn announce(
        self: &Arc<Hub>,
        ty: &str,
        adapter: &str,
        key: &str,
        detail: serde_json::Value,
    ) {
        let event = govhub_sdk::Event::new(ty)
            .with_id(format!("{ty}-{adapter}-{key}"))
            .with_source("urn:govhub:hub")
            .with_subject(adapter)
            .with_severity(govhub_sdk::Severity::Major)
            .with_json(&detail);
        if let Err(e) = self.accept(vec![event], None).await {
            tracing::error!(adapter = %adapter, "cannot announce {ty}: {e}");
        }
    }
}
