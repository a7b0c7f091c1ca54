//! The hub's configuration: one TOML file, every key overridable by a
//! `GOVHUB__SECTION__KEY` environment variable
//! (`GOVHUB__SERVER__LISTEN=127.0.0.1:9090`). Relative paths are resolved
//! against the config file's folder. Unknown keys are errors, so a typo is
//! caught at start-up rather than silently ignored.

use crate::router::RouteConfig;
use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address, `host:port`.
    pub listen: String,
    /// Largest request body accepted; larger ones get `413`. 1 MiB holds a
    /// batch of hundreds of events or a report with inline photos.
    pub max_body_bytes: usize,
    /// On SIGTERM, how long calls in flight may take to finish; what is
    /// left stays pending in the journal. Ten seconds covers a department
    /// call at the default deadline several times over.
    pub shutdown_grace_ms: u64,
    /// Largest admin upload (a module with its manifest), bytes.
    pub max_upload_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            shutdown_grace_ms: 10_000,
            max_upload_bytes: 32 * 1024 * 1024,
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite` (embedded, default) or `nats`.
    pub backend: String,
    /// The SQLite file.
    pub path: PathBuf,
    /// The NATS server, for `backend = "nats"`.
    pub nats_url: Option<String>,
    /// `full` (default: an acknowledged event survives power loss) or
    /// `normal` (survives a hub crash, not a machine crash; faster).
    pub synchronous: String,
    /// Most journal commands committed in one transaction (group commit).
    pub group_commit_max: usize,
    /// SQLite: the write-ahead log's size, MiB, past which it is copied
    /// whole into the database and started again from its beginning
    /// (the writer pauses for the last frames only) rather than let it
    /// grow under steady load.
    pub wal_max_mb: u64,
    /// NATS: partitions of the case space, fixed for the deployment's life.
    pub nats_partitions: u32,
    /// NATS: replicas of every stream and bucket (3 in a cluster, 1 on a
    /// single server).
    pub nats_replicas: usize,
    /// NATS: the name the streams and buckets start with (one cluster can
    /// hold several deployments).
    pub nats_prefix: String,
    /// NATS: how long a node may hold a delivery, its call included,
    /// before the server hands it to another node. Longer than any
    /// adapter's call deadline.
    pub nats_ack_wait_ms: u64,
    /// NATS: how long the case tracker's lease lasts without a renewal
    /// (how long cases wait when the tracking node dies).
    pub nats_lease_ms: u64,
    /// NATS: days events, work items and dead letters are kept.
    pub nats_retain_days: u64,
    /// NATS: how long one request to the server may take.
    pub nats_request_timeout_ms: u64,
    /// NATS: acceptance batches this node keeps open at once (its share
    /// of the server's 50 per stream, over every node).
    pub nats_batches_in_flight: usize,
}

impl StorageConfig {
    /// The NATS backend's settings.
    pub fn nats(&self, stream: &StreamConfig) -> crate::journal::nats::NatsConfig {
        let mut c =
            crate::journal::nats::NatsConfig::at(self.nats_url.as_deref().unwrap_or_default());
        c.partitions = self.nats_partitions;
        c.replicas = self.nats_replicas;
        c.prefix = self.nats_prefix.clone();
        c.ack_wait = std::time::Duration::from_millis(self.nats_ack_wait_ms);
        c.lease = std::time::Duration::from_millis(self.nats_lease_ms);
        c.retain = std::time::Duration::from_secs(self.nats_retain_days * 86_400);
        c.request_timeout = std::time::Duration::from_millis(self.nats_request_timeout_ms);
        c.batches_in_flight = self.nats_batches_in_flight;
        c.feed_retain = stream.retain as i64;
        c.feed_buffer = stream.buffer;
        c
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: "sqlite".into(),
            path: PathBuf::from("data/govhub.db"),
            nats_url: None,
            synchronous: "full".into(),
            group_commit_max: 1024,
            wal_max_mb: 64,
            nats_partitions: 16,
            nats_replicas: 3,
            nats_prefix: "govhub".into(),
            nats_ack_wait_ms: 60_000,
            nats_lease_ms: 5_000,
            nats_retain_days: 30,
            nats_request_timeout_ms: 5_000,
            nats_batches_in_flight: 16,
        }
    }
}

/// `[auth]`: who may call the hub (see `crate::auth`).
///
/// With no principal at all (no `[[auth.principals]]`, and neither
/// shorthand's environment variable set) every route but the admin API is
/// open, as on a developer's loopback hub; such a hub refuses to listen
/// on anything but loopback unless `open = true` says it is meant to.
/// With any principal, every route needs one (deny by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Shorthand: the environment variable holding the token of a
    /// principal called `admin` with the `admin` role. Unset or empty: no
    /// such principal.
    pub admin_token_env: String,
    /// Shorthand: the environment variable holding the token of a
    /// principal called `ingest`, a department allowed every source and
    /// every adapter. Unset or empty: no such principal.
    pub ingest_token_env: Option<String>,
    /// The principals: departments, viewers, operators, admins.
    pub principals: Vec<crate::auth::PrincipalConfig>,
    /// Run with no principal on a non-loopback address, on purpose.
    pub open: bool,
    /// `GET /metrics` without a principal (a scraper that cannot send a
    /// token); otherwise it needs `viewer` or above.
    pub metrics_open: bool,
    /// How long a cockpit sign-in lasts, seconds. Eight hours is a shift
    /// in the command room; the session ends then whatever it is doing.
    pub session_ttl_s: u64,
    /// Cockpit sessions alive at once; a sign-in past it is refused
    /// (`503`) until one ends. A command room has a handful of screens.
    pub max_sessions: usize,
    /// Cockpit sessions one principal holds at once; its oldest ends for
    /// a new one past it. Twenty screens share a command room's token at
    /// most, and one token cannot take every slot of `max_sessions`.
    pub sessions_per_principal: usize,
    /// Mark the session cookie `Secure` (the cockpit is served over HTTPS,
    /// by a proxy in front of the hub, say).
    pub cookie_secure: bool,
    /// Refused sign-ins (unknown tokens) the hub answers per minute, all
    /// callers together; more get `429`, unrecorded. Each refused attempt
    /// is an audit record, so this bounds what a guesser can write to the
    /// chain; a valid token always signs in.
    pub signin_per_minute: u32,
    /// Each principal's event quota, events per second (a principal may
    /// set its own `events_per_s`). 200 a second is far above a
    /// department's steady rate and low enough that one runaway sender
    /// cannot starve the rest of the journal.
    pub events_per_s: f64,
    /// Each principal's burst above the rate, events (a principal may set
    /// its own `burst`): a department catching up after an outage sends a
    /// backlog at once.
    pub burst: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            admin_token_env: "GOVHUB_ADMIN_TOKEN".into(),
            ingest_token_env: None,
            principals: Vec::new(),
            open: false,
            metrics_open: false,
            session_ttl_s: 8 * 3600,
            max_sessions: 1000,
            sessions_per_principal: 20,
            cookie_secure: false,
            signin_per_minute: 30,
            events_per_s: 200.0,
            burst: 2000,
        }
    }
}

/// `[adapters]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptersConfig {
    /// Every `NAME.toml` manifest (and its module) in this folder is loaded.
    pub dir: PathBuf,
    /// Watch the folder: a changed manifest or module is loaded as a new
    /// version while the hub runs.
    pub watch: bool,
    /// How often the folder is looked at, ms.
    pub watch_interval_ms: u64,
}

impl Default for AdaptersConfig {
    fn default() -> Self {
        AdaptersConfig {
            dir: PathBuf::from("adapters.d"),
            watch: true,
            watch_interval_ms: 1000,
        }
    }
}

/// `[signing]`: which adapter modules the hub accepts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Refuse modules without a valid signature.
    pub require_signatures: bool,
    /// ed25519 public keys (base64) whose signatures are trusted.
    pub trusted_keys: Vec<String>,
}

/// `[quarantine]`: when an adapter that keeps failing is taken out of
/// rotation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Calls remembered per adapter.
    pub window: usize,
    /// Fewest calls in the window before judging.
    pub min_calls: usize,
    /// Failures (traps, deadline hits, `unavailable`) over calls at which
    /// the adapter is quarantined.
    pub max_failure_rate: f64,
    /// An adapter quarantined within this many seconds of an upgrade, with
    /// traps or deadline hits among its failures, is rolled back to the
    /// version before.
    pub rollback_window_s: u64,
    /// While quarantined, one delivery is let through this often as a
    /// probe; when it succeeds the adapter is back in rotation.
    pub probe_interval_ms: u64,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        // Half of the last twenty calls failing is not a blip: a department
        // outage alone (`unavailable`) gets there too, and then deliveries
        // wait in the journal anyway, probed every ten seconds; ten minutes
        // after an upgrade, a crashing upgrade is the first suspect.
        QuarantineConfig {
            window: 20,
            min_calls: 10,
            max_failure_rate: 0.5,
            rollback_window_s: 600,
            probe_interval_ms: 10_000,
        }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// Compiled-module cache. Default: `cache/` beside the storage file.
    pub cache_dir: Option<PathBuf>,
    /// wasmtime's pooling allocator: instance slots reserved at start and
    /// reused (faster instantiation; reserves address space up front).
    pub pooling_allocator: bool,
    /// With the pooling allocator: instances alive at once, all adapters.
    pub pooling_instances: u32,
    /// With the pooling allocator: the largest `memory_mb` an adapter may
    /// have.
    pub pooling_max_memory_mb: u32,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            cache_dir: None,
            pooling_allocator: false,
            pooling_instances: 1000,
            pooling_max_memory_mb: 256,
        }
    }
}

impl RuntimeSection {
    /// The pooling sizes, when the pooling allocator is on.
    pub fn pooling(&self) -> Option<crate::runtime::Pooling> {
        self.pooling_allocator.then_some(crate::runtime::Pooling {
            instances: self.pooling_instances,
            max_memory_mb: self.pooling_max_memory_mb,
        })
    }
}

/// `[delivery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Attempts per delivery before it becomes a dead letter.
    pub max_attempts: u32,
    /// First retry delay, ms; doubled each attempt, with jitter.
    pub backoff_base_ms: u64,
    /// Longest retry delay, ms.
    pub backoff_cap_ms: u64,
    /// Deliveries one target may have waiting; past it, ingress answers
    /// `503` with `Retry-After` rather than grow without bound. 10,000 is
    /// hours of a busy street's events, and a few MiB of memory.
    pub queue_depth: usize,
    /// The share of `queue_depth` kept for `major` and `critical` events:
    /// past `queue_depth × (1 − priority_reserve)` deliveries waiting,
    /// ingress answers `503` to `info` and `minor` events (and events
    /// without a severity) while it still accepts the urgent ones. A tenth
    /// holds a storm of alarms while the notices wait.
    pub priority_reserve: f64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        // Eight attempts from 200 ms doubling to a 30 s cap span about a
        // minute: long enough to ride out a department restart, short
        // enough that a dead letter is raised while people still care.
        DeliveryConfig {
            max_attempts: 8,
            backoff_base_ms: 200,
            backoff_cap_ms: 30_000,
            queue_depth: 10_000,
            priority_reserve: 0.1,
        }
    }
}

/// `[tls]`: what the hub trusts when adapters call departments over HTTPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM files of CAs to trust besides the system's: a government
    /// network's own CA, say. Relative paths: the config file's folder.
    pub ca_files: Vec<PathBuf>,
    /// Trust the system's certificate store too.
    pub system_roots: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_files: Vec::new(),
            system_roots: true,
        }
    }
}

/// `[telemetry]`: traces exported over OTLP (off by default). A key left
/// out here falls to the standard `OTEL_EXPORTER_OTLP_*` variables, then
/// to OpenTelemetry's defaults; see `crate::telemetry`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Export traces. `OTEL_SDK_DISABLED=true` turns them off again.
    pub enabled: bool,
    /// `grpc` or `http/protobuf`; else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, then `http/protobuf`.
    pub protocol: Option<String>,
    /// The collector, `http://host:port` (`https` for TLS, trusting what
    /// `[tls]` trusts). Over `http/protobuf` the hub posts to its
    /// `/v1/traces` unless the path already names it. Else
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is),
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, then `localhost:4318` / `:4317`.
    pub endpoint: Option<String>,
    /// Headers (gRPC metadata) on every export, an API key say; merged
    /// with `OTEL_EXPORTER_OTLP_HEADERS`. Never logged.
    pub headers: std::collections::BTreeMap<String, String>,
    /// One export's deadline, ms; else `OTEL_EXPORTER_OTLP_TIMEOUT`, then
    /// 10 s.
    pub timeout_ms: Option<u64>,
    /// The `service.name` of the hub's spans; else `OTEL_SERVICE_NAME`,
    /// then `govhub`.
    pub service_name: Option<String>,
    /// Of the traces the hub starts itself (no sender's `traceparent`),
    /// the share recorded, 0 to 1; a sender's sampling decision is kept.
    pub sample_ratio: f64,
    /// Finished spans are sent at least this often, ms.
    pub batch_delay_ms: u64,
    /// Finished spans waiting to be sent at most; past it new ones are
    /// dropped (and counted in the exporter's own log), never the hub's
    /// work held up.
    pub max_queue: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: false,
            protocol: None,
            endpoint: None,
            headers: Default::default(),
            timeout_ms: None,
            service_name: None,
            sample_ratio: 1.0,
            batch_delay_ms: 5_000,
            max_queue: 2_048,
        }
    }
}

impl std::fmt::Debug for TelemetryConfig {
    // The headers' values are credentials: their names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("enabled", &self.enabled)
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout_ms", &self.timeout_ms)
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("batch_delay_ms", &self.batch_delay_ms)
            .field("max_queue", &self.max_queue)
            .finish()
    }
}

/// `[outbound]`: the connections adapters keep to departments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// A keep-alive connection idle this long is closed, ms. Below the 60 s
    /// many department servers and gateways allow, so the hub closes first
    /// rather than write into a connection the other side is closing.
    pub idle_timeout_ms: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            idle_timeout_ms: 30_000,
        }
    }
}

/// `[stream]`: `GET /v1/stream`, the live feed of changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Feed items kept for resuming (`Last-Event-ID`, `?after=`); a cursor
    /// older than these gets `event: resync`. 100,000 is weeks of a
    /// street's changes and a few tens of MiB of journal.
    pub retain: usize,
    /// Items held in memory for subscribers that fall behind, shared by
    /// all; one further behind reads the rest from the journal. 1,024 is a
    /// burst of a few seconds at full rate, about 1 MiB.
    pub buffer: usize,
    /// Streams open at once; more get `503`. Each costs a task and a
    /// small buffer, and the command room needs a handful.
    pub max_subscribers: usize,
    /// A comment on a quiet stream this often, so proxies and browsers
    /// keep the connection, ms.
    pub keepalive_ms: u64,
    /// While a stream is busy, writes to it are at least this far apart
    /// (what comes meanwhile goes in the next write), ms. A quiet stream
    /// is written at once; a busy one costs its subscriber's socket a
    /// write per interval, not one per item. 0: every burst at once.
    pub coalesce_ms: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            retain: 100_000,
            buffer: 1024,
            max_subscribers: 256,
            keepalive_ms: 15_000,
            coalesce_ms: 50,
        }
    }
}

/// `[cockpit]`: the command room's console at `GET /`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CockpitConfig {
    /// The time zone times are shown in (IANA name).
    pub time_zone: String,
    /// The title over the console.
    pub title: String,
}

impl Default for CockpitConfig {
    fn default() -> Self {
        CockpitConfig {
            time_zone: "Asia/Shanghai".into(),
            title: "城街一体数字驾驶舱".into(),
        }
    }
}

/// `[grids]`: the grid map.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridsConfig {
    /// A GeoJSON FeatureCollection of the grids' polygons, each with a
    /// `code` property. Without it, events keep the grid they came with.
    pub map: Option<PathBuf>,
    /// The street's code, used for places outside every grid (default:
    /// the map's shortest code).
    pub street: Option<String>,
}

/// One `[[cases.deadlines]]` rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeadlineRule {
    /// Category prefix (dotted segments); none matches every category.
    pub category: Option<String>,
    /// Minimum severity; none matches every severity.
    pub severity: Option<String>,
    /// Seconds every dispatched department has to accept.
    pub accept_s: u64,
    /// Seconds to close the case.
    pub resolve_s: u64,
}

/// `[cases]`: the closed loop.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CasesConfig {
    /// Seconds to accept when no rule matches.
    pub default_accept_s: u64,
    /// Seconds to close when no rule matches.
    pub default_resolve_s: u64,
    /// Seconds a case may stay at each escalation level before it goes one
    /// level higher: community grid, then street command center.
    pub escalation_s: Vec<u64>,
    /// Deadlines per category and severity; the most specific wins.
    pub deadlines: Vec<DeadlineRule>,
    /// `system`, or `manual` (drills and tests: time moves only through
    /// `POST /v1/clock`, and is kept in the journal across restarts).
    pub clock: String,
    /// Where a manual clock starts (RFC 3339); default: the first start.
    pub clock_start: Option<String>,
    /// How often deadlines are checked, ms.
    pub check_interval_ms: u64,
}

impl Default for CasesConfig {
    fn default() -> Self {
        // A quarter of an hour to accept and four hours to close are the
        // street's ordinary service promise; the levels above get half an
        // hour and an hour before the next escalation.
        CasesConfig {
            default_accept_s: 900,
            default_resolve_s: 4 * 3600,
            escalation_s: vec![1800, 3600],
            deadlines: Vec::new(),
            clock: "system".into(),
            clock_start: None,
            check_interval_ms: 1000,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[storage]`.
    #[serde(default)]
    pub storage: StorageConfig,
    /// `[auth]`.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[adapters]`.
    #[serde(default)]
    pub adapters: AdaptersConfig,
    /// `[runtime]`.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// `[delivery]`.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// `[cases]`.
    #[serde(default)]
    pub cases: CasesConfig,
    /// `[grids]`.
    #[serde(default)]
    pub grids: GridsConfig,
    /// `[signing]`.
    #[serde(default)]
    pub signing: SigningConfig,
    /// `[quarantine]`.
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// `[tls]`.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `[outbound]`.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// `[telemetry]`.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// `[stream]`.
    #[serde(default)]
    pub stream: StreamConfig,
    /// `[cockpit]`.
    #[serde(default)]
    pub cockpit: CockpitConfig,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// `[[classification]]`: which fields are personal information.
    #[serde(default)]
    pub classification: Vec<crate::governance::ClassificationRule>,
    /// `[governance]`: what each recipient may see of it.
    #[serde(default)]
    pub governance: crate::governance::GovernanceConfig,
}

impl Config {
    /// Reads `path`, applies `GOVHUB__SECTION__KEY` overrides, resolves
    /// relative paths against the file's folder, and checks values.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        if !path.exists() {
            anyhow::bail!("config file {} not found", path.display());
        }
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("GOVHUB")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .with_context(|| format!("config {}", path.display()))?;
        let base = path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Config::finish(raw, &base).with_context(|| format!("config {}", path.display()))
    }

    /// Reads config text as if it were a file in `base` (relative paths
    /// resolve against it), without environment overrides; checks values.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Config> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?;
        Config::finish(raw, base)
    }

    fn finish(raw: config::Config, base: &Path) -> anyhow::Result<Config> {
        let mut config: Config = raw.try_deserialize()?;
        config.resolve_paths(base);
        config.check()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.storage.path);
        resolve(&mut self.adapters.dir);
        for file in &mut self.tls.ca_files {
            resolve(file);
        }
        if let Some(key) = &mut self.governance.key_file {
            resolve(key);
        }
        if let Some(map) = &mut self.grids.map {
            resolve(map);
        }
        match &mut self.runtime.cache_dir {
            Some(dir) => resolve(dir),
            None => {
                let parent = self
                    .storage
                    .path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| base.to_path_buf());
                self.runtime.cache_dir = Some(parent.join("cache"));
            }
        }
    }

    /// The wasmtime host's settings; `state` is where adapter state
    /// persists.
    pub fn runtime_config(
        &self,
        state: Option<std::sync::Arc<dyn crate::runtime::StateStore>>,
    ) -> crate::runtime::RuntimeConfig {
        crate::runtime::RuntimeConfig {
            trust: crate::runtime::outbound::TrustConfig {
                system_roots: self.tls.system_roots,
                ca_files: self.tls.ca_files.clone(),
            },
            idle_timeout: std::time::Duration::from_millis(self.outbound.idle_timeout_ms),
            files_dir: Some(self.adapters.dir.clone()),
            cache_dir: self.runtime.cache_dir.clone(),
            state,
            pooling: self.runtime.pooling(),
        }
    }

    /// Checks values the types cannot.
    pub fn check(&self) -> anyhow::Result<()> {
        crate::telemetry::check(&self.telemetry)?;
        if self.server.max_body_bytes == 0 {
            anyhow::bail!("server.max_body_bytes must be positive");
        }
        self.server
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| anyhow::anyhow!("server.listen `{}`: {e}", self.server.listen))?;
        match self.storage.backend.as_str() {
            "sqlite" => {}
            "nats" => check_nats(&self.storage, &self.cases)?,
            other => anyhow::bail!("storage.backend `{other}` is not one of sqlite, nats"),
        }
        if crate::journal::sqlite::Synchronous::parse(&self.storage.synchronous).is_none() {
            anyhow::bail!(
                "storage.synchronous `{}` is not one of full, normal",
                self.storage.synchronous
            );
        }
        if self.storage.group_commit_max == 0 {
            anyhow::bail!("storage.group_commit_max must be at least 1");
        }
        if self.storage.wal_max_mb == 0 {
            anyhow::bail!("storage.wal_max_mb must be at least 1");
        }
        if self.delivery.queue_depth == 0 {
            anyhow::bail!("delivery.queue_depth must be at least 1");
        }
        if !(0.0..1.0).contains(&self.delivery.priority_reserve) {
            anyhow::bail!(
                "delivery.priority_reserve {} must be at least 0 and less than 1 (a share of delivery.queue_depth)",
                self.delivery.priority_reserve
            );
        }
        crate::auth::check_config(&self.auth)?;
        crate::governance::policy::compile_rules(&self.classification)?;
        crate::governance::policy::parse_grant(&self.governance.viewers)
            .map_err(|e| anyhow::anyhow!("governance.viewers: {e}"))?;
        if self.governance.key_version == 0 {
            anyhow::bail!("governance.key_version must be at least 1");
        }
        crate::admin::signing::parse_keys(&self.signing.trusted_keys)?;
        if self.signing.require_signatures && self.signing.trusted_keys.is_empty() {
            anyhow::bail!("signing.require_signatures is on but signing.trusted_keys is empty");
        }
        let q = &self.quarantine;
        if q.window == 0
            || q.min_calls == 0
            || q.min_calls > q.window
            || !(0.0..=1.0).contains(&q.max_failure_rate)
        {
            anyhow::bail!(
                "quarantine: window and min_calls must be positive, min_calls at most window, max_failure_rate between 0 and 1"
            );
        }
        if self.runtime.pooling_allocator
            && (self.runtime.pooling_instances == 0 || self.runtime.pooling_max_memory_mb == 0)
        {
            anyhow::bail!(
                "runtime.pooling_instances and runtime.pooling_max_memory_mb must be positive"
            );
        }
        if q.probe_interval_ms == 0 {
            anyhow::bail!("quarantine.probe_interval_ms must be positive");
        }
        if self.adapters.watch_interval_ms == 0 {
            anyhow::bail!("adapters.watch_interval_ms must be positive");
        }
        if self.outbound.idle_timeout_ms == 0 {
            anyhow::bail!("outbound.idle_timeout_ms must be positive");
        }
        let st = &self.stream;
        if st.retain == 0 || st.buffer == 0 || st.max_subscribers == 0 || st.keepalive_ms == 0 {
            anyhow::bail!(
                "stream.retain, stream.buffer, stream.max_subscribers and stream.keepalive_ms must be positive"
            );
        }
        if st.keepalive_ms > 3_600_000 {
            anyhow::bail!(
                "stream.keepalive_ms is {}: at most 3600000 (an hour; proxies close quiet connections long before)",
                st.keepalive_ms
            );
        }
        if st.coalesce_ms > 10_000 {
            anyhow::bail!(
                "stream.coalesce_ms is {}: at most 10000 (a busy stream is written at least every 10 s)",
                st.coalesce_ms
            );
        }
        if self.cockpit.time_zone.trim().is_empty() {
            anyhow::bail!("cockpit.time_zone must name a time zone (e.g. Asia/Shanghai)");
        }
        for file in &self.tls.ca_files {
            if !file.is_file() {
                anyhow::bail!("tls.ca_files: {} is not a file", file.display());
            }
        }
        let d = &self.delivery;
        if d.max_attempts == 0 {
            anyhow::bail!("delivery.max_attempts must be at least 1");
        }
        if d.backoff_base_ms == 0 || d.backoff_cap_ms < d.backoff_base_ms {
            anyhow::bail!(
                "delivery.backoff_base_ms must be positive and at most delivery.backoff_cap_ms"
            );
        }
        crate::router::Router::new(&self.routes).map_err(anyhow::Error::msg)?;
        let c = &self.cases;
        if !matches!(c.clock.as_str(), "system" | "manual") {
            anyhow::bail!("cases.clock `{}` is not one of system, manual", c.clock);
        }
        if let Some(start) = &c.clock_start {
            time::OffsetDateTime::parse(start, &time::format_description::well_known::Rfc3339)
                .map_err(|e| anyhow::anyhow!("cases.clock_start `{start}`: {e}"))?;
        }
        if c.default_accept_s == 0 || c.default_resolve_s == 0 || c.check_interval_ms == 0 {
            anyhow::bail!(
                "cases.default_accept_s, cases.default_resolve_s and cases.check_interval_ms must be positive"
            );
        }
        for (i, d) in c.deadlines.iter().enumerate() {
            if let Some(s) = &d.severity {
                if govhub_sdk::Severity::parse(s).is_none() {
                    anyhow::bail!(
                        "cases.deadlines[{i}].severity `{s}` is not one of info, minor, major, critical"
                    );
                }
            }
            if d.accept_s == 0 || d.resolve_s == 0 {
                anyhow::bail!("cases.deadlines[{i}]: accept_s and resolve_s must be positive");
            }
        }
        Ok(())
    }
}

/// What `storage.backend = "nats"` needs, and the keys it cannot honour.
fn check_nats(s: &StorageConfig, cases: &CasesConfig) -> anyhow::Result<()> {
    let d = StorageConfig::default();
    match s.nats_url.as_deref() {
        None | Some("") => anyhow::bail!(
            "storage.nats_url is needed with storage.backend = \"nats\" (e.g. \"nats://127.0.0.1:4222\", several separated by commas)"
        ),
        Some(_) => {}
    }
    if s.synchronous != d.synchronous {
        anyhow::bail!(
            "storage.synchronous applies to the SQLite journal only: on NATS each server's `jetstream {{ sync_interval: always }}` makes writes durable; remove the key"
        );
    }
    if s.group_commit_max != d.group_commit_max {
        anyhow::bail!(
            "storage.group_commit_max applies to the SQLite journal only (on NATS use storage.nats_batches_in_flight); remove the key"
        );
    }
    if s.wal_max_mb != d.wal_max_mb {
        anyhow::bail!(
            "storage.wal_max_mb applies to the SQLite journal only (JetStream keeps its own files); remove the key"
        );
    }
    if cases.clock == "manual" {
        anyhow::bail!(
            "cases.clock = \"manual\" is not available with storage.backend = \"nats\": every node judges deadlines by its own system clock"
        );
    }
    for (key, value) in [
        ("storage.nats_partitions", s.nats_partitions as u64),
        ("storage.nats_replicas", s.nats_replicas as u64),
        ("storage.nats_ack_wait_ms", s.nats_ack_wait_ms),
        ("storage.nats_lease_ms", s.nats_lease_ms),
        ("storage.nats_retain_days", s.nats_retain_days),
        ("storage.nats_request_timeout_ms", s.nats_request_timeout_ms),
        (
            "storage.nats_batches_in_flight",
            s.nats_batches_in_flight as u64,
        ),
    ] {
        if value == 0 {
            anyhow::bail!("{key} must be at least 1");
        }
    }
    if s.nats_replicas > 5 {
        anyhow::bail!("storage.nats_replicas is at most 5 (JetStream's limit)");
    }
    if s.nats_lease_ms < 300 {
        anyhow::bail!(
            "storage.nats_lease_ms must be at least 300 (it is renewed every third of it)"
        );
    }
    let prefix_ok = !s.nats_prefix.is_empty()
        && s.nats_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !prefix_ok {
        anyhow::bail!(
            "storage.nats_prefix `{}` may hold only letters, digits, `_` and `-`",
            s.nats_prefix
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("govhub.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_paths_and_routes() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"
            [server]
            listen = "127.0.0.1:8089"
            [[routes]]
            name = "people on the river during a typhoon"
            match = { type = "gov.incident.*", category = "safety.water" }
            to = ["police", "four-platforms"]
            "#,
        );
        let c = Config::load(&path).unwrap();
        assert_eq!(c.server.max_body_bytes, 1024 * 1024);
        assert_eq!(c.delivery.priority_reserve, 0.1);
        assert!(c.tls.system_roots && c.tls.ca_files.is_empty());
        assert_eq!(c.outbound.idle_timeout_ms, 30_000);
        let base = dir.path().canonicalize().unwrap();
        assert_eq!(c.storage.path, base.join("data/govhub.db"));
        assert_eq!(c.adapters.dir, base.join("adapters.d"));
        assert_eq!(c.runtime.cache_dir, Some(base.join("data/cache")));
        assert_eq!(c.routes[0].to, ["police", "four-platforms"]);
        assert_eq!(c.routes[0].match_.category.as_deref(), Some("safety.water"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        for (text, named) in [
            ("[server]\nlisten_on = \"x\"", &["listen_on"][..]),
            ("[server]\nlisten = \"nowhere\"", &["server.listen"]),
            ("[storage]\nbackend = \"mysql\"", &["storage.backend"]),
            (
                "[delivery]\npriority_reserve = 1.5",
                &["delivery.priority_reserve"],
            ),
            (
                "[outbound]\nidle_timeout_ms = 0",
                &["outbound.idle_timeout_ms"],
            ),
            ("[stream]\nkeepalive_ms = 0", &["stream.keepalive_ms"]),
            (
                "[stream]\nkeepalive_ms = 86400000",
                &["stream.keepalive_ms", "3600000"],
            ),
            (
                "[stream]\ncoalesce_ms = 60000",
                &["stream.coalesce_ms", "10000"],
            ),
            (
                "[tls]\nca_files = [\"nowhere.pem\"]",
                &["tls.ca_files", "nowhere.pem"],
            ),
            ("[storage]\nbackend = \"nats\"", &["storage.nats_url"]),
            (
                "[storage]\nbackend = \"nats\"\nnats_url = \"nats://127.0.0.1:4222\"\nsynchronous = \"normal\"",
                &["storage.synchronous", "sync_interval"],
            ),
            (
                "[storage]\nbackend = \"nats\"\nnats_url = \"nats://127.0.0.1:4222\"\ngroup_commit_max = 10",
                &["storage.group_commit_max"],
            ),
            (
                "[storage]\nbackend = \"nats\"\nnats_url = \"nats://127.0.0.1:4222\"\nwal_max_mb = 16",
                &["storage.wal_max_mb"],
            ),
            ("[storage]\nwal_max_mb = 0", &["storage.wal_max_mb"]),
            (
                "[storage]\nbackend = \"nats\"\nnats_url = \"nats://127.0.0.1:4222\"\n[cases]\nclock = \"manual\"",
                &["cases.clock"],
            ),
            (
                "[storage]\nbackend = \"nats\"\nnats_url = \"nats://127.0.0.1:4222\"\nnats_partitions = 0",
                &["storage.nats_partitions"],
            ),
            (
                "[storage]\nbackend = \"nats\"\nnats_url = \"nats://127.0.0.1:4222\"\nnats_ack_wait_ms = 0",
                &["storage.nats_ack_wait_ms"],
            ),
            (
                "[storage]\nbackend = \"nats\"\nnats_url = \"nats://127.0.0.1:4222\"\nnats_lease_ms = 100",
                &["storage.nats_lease_ms"],
            ),
            (
                "[storage]\nbackend = \"nats\"\nnats_url = \"nats://127.0.0.1:4222\"\nnats_replicas = 7",
                &["storage.nats_replicas"],
            ),
            (
                "[storage]\nbackend = \"nats\"\nnats_url = \"nats://127.0.0.1:4222\"\nnats_prefix = \"a.b\"",
                &["storage.nats_prefix"],
            ),
        ] {
            let e = format!("{:#}", Config::load(&write(dir.path(), text)).unwrap_err());
            assert!(named.iter().all(|n| e.contains(n)), "{text}: {e}");
        }
        let e = format!(
            "{:#}",
            Config::load(&dir.path().join("missing.toml")).unwrap_err()
        );
        assert!(e.contains("not found"), "{e}");
    }
}
