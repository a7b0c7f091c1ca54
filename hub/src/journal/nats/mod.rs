//! The NATS JetStream backend: several hub nodes over one JetStream
//! cluster. `README.md` in the folder above sets out the design and the
//! measurements it stands on.
//!
//! It is built in steps, each with its test on a real three-node cluster
//! (`tests/nats_journal.rs`), and `storage.backend = "nats"` is refused
//! until every concern has one. Here so far: the connection (the server's
//! version checked, the `GOVHUB` stream made or brought up to date, the
//! partition count pinned in the meta bucket), the [`EventLog`]: an
//! accepted event and its work items as one atomic batch, duplicates found
//! across nodes and partitions, events read back by sequence and identity;
//! [`Meta`] and [`AdapterState`] on KV buckets, read from a watched copy
//! in memory (`tables.rs`); the [`AuditLog`], one hash chain however
//! many nodes append (`audit.rs`); the [`Registry`], with the serving
//! version changed by compare-and-set, and the modules in an object store
//! (`registry.rs`); delivery outcomes, dead letters and replay
//! (`deliveries.rs`); the [`Feed`], one stream every node follows
//! (`feed.rs`); and the [`CaseStore`], one tracker at a time through a
//! pinned consumer, the cases in a bucket (`cases.rs`). Still to come:
//! the delivery consumers (and with them the whole `DeliveryLog`), the
//! deadlines as message schedules, and the hub's wiring.
//!
//! [`EventLog`]: super::EventLog
//! [`Meta`]: super::Meta
//! [`AdapterState`]: super::AdapterState
//! [`AuditLog`]: super::AuditLog
//! [`Registry`]: super::Registry
//! [`Feed`]: super::Feed
//! [`CaseStore`]: super::CaseStore

mod audit;
mod cases;
mod deliveries;
mod events;
mod feed;
mod registry;
mod tables;
mod work;

use super::JournalError;
use async_nats::jetstream::{self, kv, stream};
use std::time::Duration;

/// The oldest nats-server the backend runs on: 2.12 brought atomic batch
/// publish and message schedules, and Jepsen's analysis of 2.12.1 lost
/// acknowledged writes that 2.12.3 keeps.
pub const MINIMUM_SERVER: [u64; 3] = [2, 12, 3];

/// Where and how the backend keeps its streams and buckets.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// The servers, comma-separated (`nats://127.0.0.1:4222,...`).
    pub url: String,
    /// Partitions of the case space: fixed for a deployment's life.
    pub partitions: u32,
    /// Replicas of every stream and bucket: 3 in a cluster, 1 on one
    /// server.
    pub replicas: usize,
    /// How long events and work items are kept (`storage.retain_days`).
    pub retain: Duration,
    /// How long the server remembers a `Nats-Msg-Id` (a repeat later than
    /// this is still found by the identity check while the original is
    /// kept).
    pub duplicate_window: Duration,
    /// The name the streams and buckets start with, and the subjects'
    /// first token: one cluster can hold several deployments.
    pub prefix: String,
    /// How long one request to the server may take.
    pub request_timeout: Duration,
    /// How many change-feed items are kept (`stream.retain`).
    pub feed_retain: i64,
    /// How many items a live subscriber may fall behind before it is
    /// told to read them back (`stream.buffer`).
    pub feed_buffer: usize,
    /// How long a node may hold a delivery (its call included) before
    /// the server hands it to another node (`storage.nats_ack_wait_ms`).
    pub ack_wait: Duration,
    /// How long the case tracker's lease lasts without a renewal
    /// (`storage.nats_lease_ms`): how long the cases wait when the
    /// tracking node dies.
    pub lease: Duration,
    /// How many acceptance batches this node keeps open at once: its
    /// share of the server's 50 per stream, over every node.
    pub batches_in_flight: usize,
}

impl NatsConfig {
    /// Defaults for `url`: 16 partitions, R3, 30 days, a 2-minute
    /// duplicate window, prefix `govhub`.
    pub fn at(url: &str) -> NatsConfig {
        NatsConfig {
            url: url.to_string(),
            partitions: 16,
            replicas: 3,
            retain: Duration::from_secs(30 * 86_400),
            duplicate_window: Duration::from_secs(120),
            prefix: "govhub".into(),
            request_timeout: Duration::from_secs(5),
            feed_retain: 100_000,
            feed_buffer: 1024,
            ack_wait: Duration::from_secs(60),
            lease: Duration::from_secs(5),
            batches_in_flight: 16,
        }
    }

    /// The main stream's name: `GOVHUB` for the default prefix.
    pub fn stream_name(&self) -> String {
        self.prefix.to_ascii_uppercase().replace(['.', '-'], "_")
    }

    fn bucket(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix.replace('.', "-"))
    }
}

/// The subjects of one deployment.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    root: String,
}

impl Subjects {
    /// `<root>.ev.<p>.<idhash>`: an accepted event. `idhash` is
    /// `<hash of id>.<hash of (source, id)>`, so an id can be found
    /// without its source.
    fn event(&self, p: u32, id: &Identity) -> String {
        format!("{}.ev.{p}.{}.{}", self.root, id.id, id.both)
    }

    /// Every partition's subject for one identity: what the identity
    /// check and the lookup by (source, id) use.
    fn identity(&self, id: &Identity) -> String {
        format!("{}.ev.*.*.{}", self.root, id.both)
    }

    /// Every source's events with one id.
    fn with_id(&self, id_hash: &str) -> String {
        format!("{}.ev.*.{id_hash}.*", self.root)
    }

    /// `<root>.wk.<target>.<p>`: the work of delivering to `target`.
    fn work(&self, target: &str, p: u32) -> String {
        format!("{}.wk.{target}.{p}", self.root)
    }

    fn all(&self) -> Vec<String> {
        ["ev", "wk", "sched", "due"]
            .iter()
            .map(|kind| format!("{}.{kind}.>", self.root))
            .collect()
    }
}

/// An event's identity, hashed for subjects and message ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// sha256 of the id, 16 hex digits.
    id: String,
    /// sha256 of (source, id), in hex: the event's `Nats-Msg-Id`.
    both: String,
}

impl Identity {
    pub(crate) fn of(source: &str, id: &str) -> Identity {
        Identity {
            id: id_hash(id),
            both: hex::encode(sha(&format!("{source}\n{id}"))),
        }
    }
}

fn sha(text: &str) -> [u8; 32] {
    sha_bytes(text.as_bytes())
}

fn sha_bytes(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn id_hash(id: &str) -> String {
    hex::encode(&sha(id)[..8])
}

/// The partition of an order key (a case id, or an event's own identity):
/// FNV-1a, 32 bits, modulo `partitions`.
pub fn partition(key: &str, partitions: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % partitions.max(1)
}

/// `2.15.1` (or `v2.15.1`, `2.15.1-beta.2`) → [2, 15, 1].
pub fn version(text: &str) -> [u64; 3] {
    let mut parts = text.trim_start_matches('v').split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u64>()
            .unwrap_or(0)
    });
    [0; 3].map(|_| parts.next().unwrap_or(0))
}

/// The journal on a NATS JetStream cluster. Cheap to clone: every clone
/// shares one connection.
#[derive(Clone)]
pub struct NatsJournal {
    inner: std::sync::Arc<Inner>,
}

pub(crate) struct Inner {
    config: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    subjects: Subjects,
    /// This node's open acceptance batches.
    batches: std::sync::Arc<tokio::sync::Semaphore>,
    /// Events waiting for the group committer.
    grouped: tokio::sync::mpsc::UnboundedSender<events::Grouped>,
    /// Delivery outcomes by delivery id (written by the delivery log).
    deliveries: kv::Store,
    /// The audit chain, and the head this node last linked to.
    audit: stream::Stream,
    /// Dead letters.
    dead: stream::Stream,
    /// The change feed, and this node's subscribers to it.
    feed: stream::Stream,
    feed_tx: tokio::sync::broadcast::Sender<std::sync::Arc<super::FeedItem>>,
    audit_head: tokio::sync::Mutex<Option<(i64, String)>>,
    /// The hub's meta values, adapters' cursors and state, with their
    /// watched copies.
    meta: self::tables::Mirror,
    cursors: self::tables::Mirror,
    state: self::tables::Mirror,
    /// The cases, with their watched copy, and this node's end of the
    /// case tracker's feed.
    cases: self::tables::Mirror,
    case_feed: std::sync::Arc<cases::CaseFeed>,
    /// The work items this node holds for its delivery workers.
    held: work::Held,
    /// This node's id in heartbeats and the tracker's lease (new at each
    /// start).
    node: String,
    /// The adapter registry, with its watched copy, and the modules.
    registry: self::tables::Mirror,
    modules: jetstream::object_store::ObjectStore,
    /// Writes nobody waits on, in order.
    deferred: tokio::sync::mpsc::UnboundedSender<self::tables::Deferred>,
    /// Dropped with the journal: the watches stop.
    _stop: tokio::sync::watch::Sender<()>,
}

/// Whether an error at the start says the cluster is still forming (no
/// leader answers yet, or too few peers are known to place replicas on).
fn not_ready_yet(why: &str) -> bool {
    [
        "no responders",
        "timed out",
        "no suitable peers",
        "insufficient resources",
    ]
    .iter()
    .any(|s| why.contains(s))
}

fn storage(what: &str, e: impl std::fmt::Display) -> JournalError {
    JournalError::Storage(format!("nats: {what}: {e}"))
}

impl NatsJournal {
    /// Connects, checks the server, and makes (or updates) the streams and
    /// buckets. Refuses a server older than [`MINIMUM_SERVER`] and a
    /// partition count other than the one the deployment was made with.
    ///
    /// A cluster that was just started, or whose streams were just made,
    /// answers "no responders" (or cannot place replicas yet: a peer not
    /// known) for a moment on some nodes: the start asks again for up to
    /// three request timeouts.
    pub async fn connect(config: &NatsConfig) -> Result<NatsJournal, JournalError> {
        Self::connect_as(config, true).await
    }

    /// Connects to read what the cluster holds (`govhub audit`), taking
    /// no part in its work: no heartbeat (no delivery partition is this
    /// connection's), no case tracker lease, no backlog counting.
    pub async fn connect_reader(config: &NatsConfig) -> Result<NatsJournal, JournalError> {
        Self::connect_as(config, false).await
    }

    async fn connect_as(config: &NatsConfig, node: bool) -> Result<NatsJournal, JournalError> {
        let deadline = std::time::Instant::now() + config.request_timeout * 3;
        loop {
            match Self::connect_once(config, node).await {
                Err(JournalError::Storage(why))
                    if not_ready_yet(&why) && std::time::Instant::now() < deadline =>
                {
                    tracing::debug!("the NATS cluster is not ready yet: {why}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                done => return done,
            }
        }
    }

    async fn connect_once(config: &NatsConfig, node: bool) -> Result<NatsJournal, JournalError> {
        if config.partitions == 0 {
            return Err(storage("storage.nats_partitions", "must be at least 1"));
        }
        let servers: Vec<async_nats::ServerAddr> = config
            .url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| storage(&format!("storage.nats_url `{}`", config.url), e))?;
        let client = async_nats::ConnectOptions::new()
            .name("govhub")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(config.request_timeout))
            .max_reconnects(None)
            .connect(servers)
            .await
            .map_err(|e| storage(&format!("connecting to {}", config.url), e))?;
        let info = client.server_info();
        if version(&info.version) < MINIMUM_SERVER {
            return Err(storage(
                &format!("storage.nats_url {}", config.url),
                format!(
                    "nats-server {} is older than {}.{}.{}, which the journal needs (atomic batches, message schedules, and acknowledged writes kept through a crash)",
                    info.version, MINIMUM_SERVER[0], MINIMUM_SERVER[1], MINIMUM_SERVER[2]
                ),
            ));
        }
        let js = jetstream::new(client.clone());
        let subjects = Subjects {
            root: config.prefix.clone(),
        };
        let stream = ensure_stream(
            &js,
            stream::Config {
                name: config.stream_name(),
                subjects: subjects.all(),
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                max_age: config.retain,
                duplicate_window: config.duplicate_window,
                allow_atomic_publish: true,
                allow_message_schedules: true,
                ..Default::default()
            },
        )
        .await?;
        let audit = ensure_stream(&js, audit::stream_config(config, &subjects.root)).await?;
        let dead = ensure_stream(&js, deliveries::dead_config(config, &subjects.root)).await?;
        let feed = ensure_stream(&js, feed::stream_config(config, &subjects.root)).await?;
        let bucket = |what: &str, history: i64| kv::Config {
            bucket: config.bucket(what),
            history,
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let meta = create_bucket(&js, bucket("meta", 1)).await?;
        let deliveries = create_bucket(&js, bucket("deliveries", 1)).await?;
        pin_partitions(&meta, config.partitions).await?;
        let (stop, stopped) = tokio::sync::watch::channel(());
        let meta = self::tables::Mirror::start(meta, stopped.clone()).await?;
        let cursors = self::tables::Mirror::start(
            create_bucket(&js, bucket("cursors", 1)).await?,
            stopped.clone(),
        )
        .await?;
        let state = self::tables::Mirror::start(
            create_bucket(&js, bucket("state", 1)).await?,
            stopped.clone(),
        )
        .await?;
        let registry = self::tables::Mirror::start(
            create_bucket(&js, bucket("registry", 1)).await?,
            stopped.clone(),
        )
        .await?;
        let cases = self::tables::Mirror::start(
            create_bucket(&js, bucket("cases", 1)).await?,
            stopped.clone(),
        )
        .await?;
        let case_feed = std::sync::Arc::new(cases::CaseFeed::new());
        let modules_bucket = config.bucket("modules");
        let modules = match js.get_object_store(&modules_bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(jetstream::object_store::Config {
                    bucket: modules_bucket.clone(),
                    num_replicas: config.replicas,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| storage(&format!("object store {modules_bucket}"), e))?,
        };
        let deferred = self::tables::start_writer(state.clone());
        let (feed_tx, _) = tokio::sync::broadcast::channel(config.feed_buffer.max(1));
        feed::start_follower(
            feed.clone(),
            subjects.root.clone(),
            feed_tx.clone(),
            stopped.clone(),
        );
        let (grouped, to_group) = tokio::sync::mpsc::unbounded_channel();
        let journal = NatsJournal {
            inner: std::sync::Arc::new(Inner {
                config: config.clone(),
                client,
                js,
                stream,
                subjects,
                batches: std::sync::Arc::new(tokio::sync::Semaphore::new(
                    config.batches_in_flight.max(1),
                )),
                grouped,
                deliveries,
                audit,
                dead,
                feed,
                feed_tx,
                audit_head: tokio::sync::Mutex::new(None),
                meta,
                cursors,
                state,
                cases,
                case_feed,
                held: Default::default(),
                node: uuid::Uuid::new_v4().simple().to_string(),
                registry,
                modules,
                deferred,
                _stop: stop,
            }),
        };
        events::start_grouper(std::sync::Arc::downgrade(&journal.inner), to_group);
        if !node {
            return Ok(journal);
        }
        // Seen by the other nodes before this one pulls anything.
        journal.inner.heartbeat().await?;
        work::start_progress(std::sync::Arc::downgrade(&journal.inner), stopped.clone());
        work::start_backlog(std::sync::Arc::downgrade(&journal.inner), stopped.clone());
        cases::start_lease(std::sync::Arc::downgrade(&journal.inner), stopped);
        Ok(journal)
    }

    /// What a future that outlives the call holds on to.
    fn handle(&self) -> std::sync::Arc<Inner> {
        self.inner.clone()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// The server version it is connected to.
    pub fn server_version(&self) -> String {
        self.inner.client.server_info().version
    }

    /// The JetStream context (for the parts still to come, and tests).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }
}

impl Inner {
    /// The message of the main stream at `seq`. Under load the server has
    /// been measured answering "no message found" (10037) for a message
    /// its consumers had just delivered the work item of (stored in the
    /// same atomic batch); such an answer is asked again, for up to about
    /// a second, before it is believed.
    pub(crate) async fn message_at(
        &self,
        seq: u64,
    ) -> Result<
        async_nats::jetstream::message::StreamMessage,
        async_nats::jetstream::stream::RawMessageError,
    > {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let mut pause = Duration::from_millis(25);
        loop {
            match self.stream.get_raw_message(seq).await {
                Err(e)
                    if e.kind() == RawMessageErrorKind::NoMessageFound
                        && pause < Duration::from_millis(800) =>
                {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Ok(m) if pause > Duration::from_millis(25) => {
                    tracing::debug!(seq, "message found when asked again");
                    return Ok(m);
                }
                done => return done,
            }
        }
    }
}

/// The payloads of the messages on `filters` from sequence `start` on,
/// in order, at most `limit`: read through a short-lived consumer the
/// server filters for, and removed after.
pub(crate) async fn read_filtered(
    stream: &stream::Stream,
    filters: Vec<String>,
    start: u64,
    limit: usize,
    what: &str,
) -> Result<Vec<bytes::Bytes>, JournalError> {
    use async_nats::jetstream::consumer;
    use futures_util::StreamExt;
    /// The most messages one fetch asks for.
    const PAGE: usize = 512;
    /// How many fetches in a row may bring nothing before the read fails.
    const FETCH_STALLS: usize = 40;
    if limit == 0 || filters.is_empty() {
        return Ok(Vec::new());
    }
    let what = format!("reading {what}");
    let reader = stream
        .create_consumer(consumer::pull::Config {
            filter_subjects: filters,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            num_replicas: 1,
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| storage(&what, e))?;
    let wanted = (reader.cached_info().num_pending as usize).min(limit);
    let mut bodies = Vec::with_capacity(wanted.min(PAGE * 4));
    // A consumer just made may not be known yet on the node a fetch
    // reaches (503, no responders): fetched again after a moment. What a
    // fetch delivered before failing is kept (nothing is acknowledged, so
    // nothing is delivered twice).
    let mut stalls = 0;
    while bodies.len() < wanted {
        let before = bodies.len();
        let failed = match reader
            .fetch()
            .max_messages((wanted - bodies.len()).min(PAGE))
            .expires(Duration::from_secs(2))
            .messages()
            .await
        {
            Ok(mut batch) => loop {
                match batch.next().await {
                    Some(Ok(m)) => bodies.push(m.payload.clone()),
                    Some(Err(e)) => break Some(e.to_string()),
                    None => break None,
                }
            },
            Err(e) => Some(e.to_string()),
        };
        if bodies.len() > before {
            stalls = 0;
            continue;
        }
        stalls += 1;
        if stalls > FETCH_STALLS {
            return Err(storage(
                &what,
                format!(
                    "{} of {wanted} messages arrived{}",
                    bodies.len(),
                    failed.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stream.delete_consumer(&reader.cached_info().name).await;
    Ok(bodies)
}

/// Makes a stream, or brings an existing one up to `config`, and returns
/// a handle on it.
async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, JournalError> {
    let name = config.name.clone();
    js.create_or_update_stream(config)
        .await
        .map_err(|e| storage(&format!("stream {name}"), e))?;
    js.get_stream(&name)
        .await
        .map_err(|e| storage(&format!("stream {name}"), e))
}

async fn create_bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, JournalError> {
    let name = config.bucket.clone();
    js.create_or_update_key_value(config)
        .await
        .map_err(|e| storage(&format!("bucket {name}"), e))
}

/// The partition count is the deployment's: the first node to start
/// records it, and every later start must agree.
async fn pin_partitions(meta: &kv::Store, partitions: u32) -> Result<(), JournalError> {
    let wanted = partitions.to_string();
    match meta.create("partitions", wanted.clone().into()).await {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(storage("meta bucket", e)),
    }
    let stored = meta
        .get("partitions")
        .await
        .map_err(|e| storage("meta bucket", e))?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    match stored {
        Some(p) if p == wanted => Ok(()),
        Some(p) => Err(storage(
            "storage.nats_partitions",
            format!(
                "is {partitions}, but this deployment was made with {p} partitions; the count is fixed for its life (set it back to {p})"
            ),
        )),
        None => Err(storage("meta bucket", "the partition count vanished")),
    }
}
