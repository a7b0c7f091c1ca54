//! The running hub: the loaded adapters, the router and the delivery
//! dispatcher, and the one path every event takes through them.

use crate::config::Config;
use crate::delivery::Dispatcher;
use crate::router::{Router, Target, TypeGlob};
use crate::runtime::{Adapter, Manifest, Runtime, RuntimeConfig};
use anyhow::Context;
use dashmap::{DashMap, DashSet};
use govhub_sdk::{cloudevents, Event};
use std::path::Path;
use std::sync::Arc;

/// A loaded adapter with its compiled subscriptions.
pub struct Loaded {
    /// The adapter.
    pub adapter: Arc<Adapter>,
    /// Its subscriptions, compiled.
    pub subscriptions: Vec<TypeGlob>,
}

/// What became of one event handed to the hub.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepted {
    /// The event id (assigned by the hub when the event had none).
    pub id: String,
    /// Its source.
    pub source: String,
    /// True when the same (`source`, `id`) had arrived before; it was not
    /// routed again.
    pub duplicate: bool,
    /// Where it was routed (empty for duplicates).
    pub targets: Vec<Target>,
}

/// The hub.
pub struct Hub {
    /// The configuration it runs with.
    pub config: Config,
    /// The wasmtime host.
    pub runtime: Runtime,
    adapters: DashMap<String, Loaded>,
    router: Router,
    seen: DashSet<(String, String)>,
    dispatcher: Dispatcher,
}

impl Hub {
    /// Builds the runtime, loads every manifest in `adapters.dir`, and checks
    /// that every route names a loaded adapter.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Hub>> {
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: config.runtime.cache_dir.clone(),
        })?;
        let router = Router::new(&config.routes).map_err(anyhow::Error::msg)?;
        let hub = Arc::new(Hub {
            dispatcher: Dispatcher::new(config.delivery.clone()),
            runtime,
            adapters: DashMap::new(),
            router,
            seen: DashSet::new(),
            config,
        });
        for manifest in read_manifests(&hub.config.adapters.dir)? {
            hub.load(&manifest).await?;
        }
        for (route, target) in hub.router.route_targets() {
            if !hub.adapters.contains_key(target) {
                anyhow::bail!(
                    "route `{route}` sends to adapter `{target}`, but no manifest in {} names it",
                    hub.config.adapters.dir.display()
                );
            }
        }
        Ok(hub)
    }

    /// Loads (or replaces) one adapter.
    pub async fn load(&self, manifest: &Manifest) -> anyhow::Result<Arc<Adapter>> {
        let adapter = self.runtime.load(manifest).await?;
        let subscriptions = adapter
            .subscriptions()
            .map(TypeGlob::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| anyhow::anyhow!("adapter `{}` subscription: {m}", manifest.name))?;
        tracing::info!(
            adapter = %manifest.name,
            version = %adapter.description.version,
            sha256 = %adapter.sha256,
            cache = ?adapter.cache,
            "adapter loaded"
        );
        self.adapters.insert(
            manifest.name.clone(),
            Loaded {
                adapter: adapter.clone(),
                subscriptions,
            },
        );
        Ok(adapter)
    }

    /// The adapter called `name`.
    pub fn adapter(&self, name: &str) -> Option<Arc<Adapter>> {
        self.adapters.get(name).map(|l| l.adapter.clone())
    }

    /// Names of the loaded adapters, sorted.
    pub fn adapter_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.adapters.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }

    /// Takes events in: fills what the hub assigns, validates, drops
    /// duplicates, routes, and hands each to delivery. `origin` is the
    /// adapter that produced them (never routed back to it).
    pub fn accept(
        &self,
        events: Vec<Event>,
        origin: Option<&str>,
    ) -> Result<Vec<Accepted>, cloudevents::Error> {
        let events = events
            .into_iter()
            .map(|e| normalize(e, origin))
            .collect::<Result<Vec<_>, _>>()?;
        let mut accepted = Vec::with_capacity(events.len());
        for event in events {
            let key = (event.source.clone(), event.id.clone());
            if !self.seen.insert(key) {
                accepted.push(Accepted {
                    id: event.id,
                    source: event.source,
                    duplicate: true,
                    targets: Vec::new(),
                });
                continue;
            }
            let targets = self.route(&event, origin);
            for target in &targets {
                if let Some(adapter) = self.adapter(&target.adapter) {
                    self.dispatcher.dispatch(adapter, event.clone());
                }
            }
            accepted.push(Accepted {
                id: event.id,
                source: event.source,
                duplicate: false,
                targets,
            });
        }
        Ok(accepted)
    }

    fn route(&self, event: &Event, origin: Option<&str>) -> Vec<Target> {
        let subs: Vec<(String, Vec<TypeGlob>)> = self
            .adapters
            .iter()
            .map(|e| (e.key().clone(), e.subscriptions.clone()))
            .collect();
        self.router.route(
            event,
            origin,
            subs.iter().map(|(n, g)| (n.as_str(), g.as_slice())),
        )
    }
}

/// Fills what the hub assigns (a random `id`, the adapter's `source`, the
/// arrival `time`) and validates the result.
pub fn normalize(mut event: Event, origin: Option<&str>) -> Result<Event, cloudevents::Error> {
    if event.id.is_empty() {
        event.id = uuid::Uuid::now_v7().to_string();
    }
    if event.source.is_empty() {
        event.source = match origin {
            Some(adapter) => format!("urn:govhub:adapter:{adapter}"),
            None => "urn:govhub:hub".to_string(),
        };
    }
    if event.time.is_none() {
        event.time = Some(now_rfc3339());
    }
    cloudevents::validate(&event)?;
    Ok(event)
}

/// The current time, RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Every `*.toml` manifest in `dir`, sorted by file name.
pub fn read_manifests(dir: &Path) -> anyhow::Result<Vec<Manifest>> {
    if !dir.exists() {
        tracing::warn!(dir = %dir.display(), "adapters.dir does not exist: no adapters loaded");
        return Ok(Vec::new());
    }
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("adapters.dir {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let manifests = paths
        .iter()
        .map(|p| Manifest::load(p).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut names = std::collections::HashSet::new();
    for m in &manifests {
        if !names.insert(m.name.clone()) {
            anyhow::bail!(
                "two manifests in {} name the adapter `{}`",
                dir.display(),
                m.name
            );
        }
    }
    Ok(manifests)
}
