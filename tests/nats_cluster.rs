//! The NATS JetStream cluster the storage backend will stand on, tested
//! for real: three `nats-server` processes on loopback (tests/support/
//! nats.rs, the binary from tests/nats-server.sh), driven with async-nats.
//!
//! - the servers are a release with the fixes the backend relies on, in
//!   one cluster of three JetStream peers that fsync every write;
//! - a stream replicated three times keeps every acknowledged message
//!   exactly once through a kill -9 of its leader in the middle of a
//!   publish run, and the killed node catches up after its restart.
//!
//! And the server features the journal's design builds on
//! (hub/src/journal/README.md), each on R3 streams:
//! - atomic batch publish (ADR-50): an event and its work items stored under
//!   one commit, or nothing; duplicates refused whole, by msg id within the
//!   window and by `Nats-Expected-Last-Subject-Sequence: 0` over
//!   `gh.ev.*.<idhash>` on any partition, forever; two nodes racing for
//!   one identity store it once;
//! - the same identity check on a plain publish, and its error code;
//! - pinned-client priority groups (ADR-42): one node gets a partition's
//!   work, another takes over after the pinned TTL, and in what order the
//!   dead node's unacked items come back;
//! - message schedules (ADR-51): a case's deadline fires once at its time,
//!   a new schedule replaces the old, and a kill -9 of the stream leader
//!   before the time neither loses nor repeats it.

#[path = "support/nats.rs"]
mod nats;

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures_util::StreamExt;
use nats::NatsCluster;

/// The oldest server the backend accepts, and how it reads a version:
/// the journal's own.
use govhub::journal::nats::{version, MINIMUM_SERVER as MINIMUM_VERSION};

async fn connect(cluster: &NatsCluster) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(cluster.url_list())
        .await
        .expect("connecting to the NATS cluster")
}

/// Polls `check` every 50 ms until it gives a value; past `timeout`, fails
/// with the reason it gave last.
async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(why) => assert!(Instant::now() < deadline, "after {timeout:?}: {why}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stream `name` as node `i` holds it locally (its `/jsz` detail):
/// (messages, first sequence, last sequence).
fn local_stream_state(
    cluster: &NatsCluster,
    i: usize,
    name: &str,
) -> Result<(u64, u64, u64), String> {
    let jsz = cluster.monitor(i, "/jsz?streams=true")?;
    let streams = jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten());
    for s in streams {
        if s["name"] == name {
            let state = &s["state"];
            let n = |k: &str| state[k].as_u64().unwrap_or(0);
            return Ok((n("messages"), n("first_seq"), n("last_seq")));
        }
    }
    Err(format!("node {i} holds no stream {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_three_jetstream_peers_of_a_recent_server_syncing_always() {
    let cluster = NatsCluster::shared();
    assert_eq!(cluster.len(), 3);
    let client = connect(cluster).await;

    let info = client.server_info();
    assert!(
        version(&info.version) >= MINIMUM_VERSION,
        "the server is {}, older than {MINIMUM_VERSION:?}",
        info.version
    );
    assert!(info.jetstream, "JetStream is off: {info:?}");
    assert_eq!(info.cluster.as_deref(), Some("govhub-test"));

    // Every node: the same recent release, JetStream fsyncing every write,
    // one meta group of three agreeing on its leader.
    let mut meta_leaders = BTreeSet::new();
    for i in 0..cluster.len() {
        let varz = cluster.monitor(i, "/varz").unwrap();
        assert_eq!(varz["server_name"], cluster.server_name(i));
        let v = varz["version"].as_str().unwrap_or_default();
        assert!(
            version(v) >= MINIMUM_VERSION,
            "node {i} runs {v:?}, older than {MINIMUM_VERSION:?}"
        );
        let jsz = cluster.monitor(i, "/jsz").unwrap();
        assert_eq!(
            jsz["config"]["sync_always"], true,
            "node {i} does not fsync every write: {}",
            jsz["config"]
        );
        assert_eq!(jsz["meta_cluster"]["cluster_size"], 3, "node {i}: {jsz}");
        meta_leaders.insert(
            jsz["meta_cluster"]["leader"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(
        meta_leaders.len(),
        1,
        "the nodes disagree on the meta leader: {meta_leaders:?}"
    );
    assert!(!meta_leaders.contains(""), "no meta leader");

    // JetStream answers for the account, and a stream of three replicas
    // is placed on all three peers, each current.
    let js = jetstream::new(client);
    js.query_account().await.expect("JetStream account info");
    let name = "PEERS";
    let stream = js
        .create_stream(stream::Config {
            name: name.into(),
            subjects: vec!["peers.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("creating a stream of three replicas");
    js.publish("peers.one", "x".into())
        .await
        .unwrap()
        .await
        .expect("the stream acknowledges a message");
    let peers = eventually(Duration::from_secs(10), || {
        let info = stream.get_info();
        async move {
            let info = info.await.map_err(|e| e.to_string())?;
            let cluster_info = info.cluster.clone().ok_or("no cluster info")?;
            let leader = cluster_info.leader.clone().ok_or("no stream leader")?;
            let lagging: Vec<_> = cluster_info
                .replicas
                .iter()
                .filter(|r| !r.current)
                .collect();
            if !lagging.is_empty() {
                return Err(format!("replicas not current: {lagging:?}"));
            }
            let mut peers: BTreeSet<String> = cluster_info
                .replicas
                .iter()
                .map(|r| r.name.clone())
                .collect();
            peers.insert(leader);
            Ok(peers)
        }
    })
    .await;
    let all: BTreeSet<String> = (0..3).map(|i| cluster.server_name(i).to_string()).collect();
    assert_eq!(peers, all, "the stream's peers");
    js.delete_stream(name).await.unwrap();
}

const STREAM: &str = "ORDERS";
const SUBJECT: &str = "orders.new";
const TOTAL: usize = 1_000;
/// Publishes in flight at once.
const BATCH: usize = 50;
/// The stream leader is killed halfway: once this batch is sent and its
/// first ack is back, with the other 49 publishes in the air.
const KILL_AFTER_BATCH: usize = TOTAL / BATCH / 2;

fn msg_id(m: usize) -> String {
    format!("order-{m}")
}

fn payload(m: usize) -> String {
    format!("{{\"order\":{m}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_keeps_every_acknowledged_message_exactly_once_through_a_kill_9() {
    let started = Instant::now();
    // Its own cluster: this test kills a node.
    let mut cluster = NatsCluster::start(3);
    let client = connect(&cluster).await;
    // Acks not back within 2 s are retried (same message id).
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client);
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["orders.>".into()],
            num_replicas: 3,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(300),
            ..Default::default()
        })
        .await
        .expect("creating the stream");
    let leader = stream
        .get_info()
        .await
        .unwrap()
        .cluster
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let victim = cluster.index_of(&leader);

    // Publish with acks, 50 in flight at a time; whatever is not
    // acknowledged is sent again with the same id until it is, for at
    // most 30 s per batch.
    let mut acked: BTreeMap<usize, u64> = BTreeMap::new();
    let mut resent = 0;
    let mut duplicates_on_resend = 0;
    let mut killed_at = None;
    for (b, first) in (0..TOTAL).step_by(BATCH).enumerate() {
        let mut todo: Vec<usize> = (first..first + BATCH).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut in_flight = Vec::new();
            let mut failed = Vec::new();
            let mut last_error = String::new();
            for &m in &todo {
                let message = PublishMessage::build()
                    .message_id(msg_id(m))
                    .payload(payload(m).into());
                match js.send_publish(SUBJECT, message).await {
                    Ok(ack) => in_flight.push((m, ack)),
                    Err(e) => {
                        last_error = e.to_string();
                        failed.push(m);
                    }
                }
            }
            let (ids, acks): (Vec<usize>, Vec<_>) = in_flight.into_iter().unzip();
            let mut acks = acks.into_iter().map(IntoFuture::into_future);
            let mut results = Vec::with_capacity(ids.len());
            if b == KILL_AFTER_BATCH && attempt == 1 {
                // Mid-way: the batch's first publish acknowledged, the
                // other 49 sent and in the air.
                if let Some(first) = acks.next() {
                    results.push(first.await);
                }
                cluster.kill(victim);
                killed_at = Some(Instant::now());
            }
            // Awaited together: each ack's 2 s run at once, not in turn.
            results.extend(futures_util::future::join_all(acks).await);
            for (m, ack) in ids.into_iter().zip(results) {
                match ack {
                    Ok(ack) => {
                        assert_eq!(ack.stream, STREAM);
                        if attempt == 1 {
                            assert!(
                                !ack.duplicate,
                                "the first publish of {m} was taken for a duplicate"
                            );
                        } else if ack.duplicate {
                            duplicates_on_resend += 1;
                        }
                        let before = acked.insert(m, ack.sequence);
                        assert_eq!(before, None, "message {m} was acknowledged twice");
                    }
                    Err(e) => {
                        last_error = e.to_string();
                        failed.push(m);
                    }
                }
            }
            if failed.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "batch {b}: {} messages still unacknowledged after {attempt} attempts: {last_error}",
                failed.len()
            );
            eprintln!(
                "batch {b}, attempt {attempt}: {} of {} unacknowledged ({last_error})",
                failed.len(),
                todo.len()
            );
            resent += failed.len();
            tokio::time::sleep(Duration::from_millis(200)).await;
            todo = failed;
        }
    }
    let killed_at = killed_at.expect("the leader was killed");
    eprintln!(
        "{TOTAL} acknowledged in {:?} ({:?} after the kill), {resent} resent, {duplicates_on_resend} of them already stored",
        started.elapsed(),
        killed_at.elapsed()
    );
    assert!(resent > 0, "killing the stream leader disturbed no publish");
    let new_leader = stream
        .get_info()
        .await
        .unwrap()
        .cluster
        .and_then(|c| c.leader);
    assert!(
        new_leader.is_some() && new_leader.as_deref() != Some(leader.as_str()),
        "the stream's leader after {leader} was killed: {new_leader:?}"
    );
    assert_eq!(acked.len(), TOTAL);
    let sequences: BTreeSet<u64> = acked.values().copied().collect();
    assert_eq!(
        sequences.len(),
        TOTAL,
        "two messages acknowledged at one sequence"
    );

    // The killed node comes back (restart waits for its health check,
    // which wants its streams current) and holds every message.
    cluster.restart(victim);
    let last_seq = *sequences.last().unwrap();
    let local = eventually(Duration::from_secs(20), || {
        let state = local_stream_state(&cluster, victim, STREAM);
        async move {
            let state = state?;
            if state.0 == TOTAL as u64 && state.2 == last_seq {
                Ok(state)
            } else {
                Err(format!("node {victim} holds (messages, first, last) = {state:?}, not {TOTAL} up to {last_seq}"))
            }
        }
    })
    .await;
    eprintln!("node {victim} caught up: {local:?}");
    eventually(Duration::from_secs(20), || {
        let info = stream.get_info();
        let name = cluster.server_name(victim).to_string();
        async move {
            let info = info.await.map_err(|e| e.to_string())?;
            let c = info.cluster.clone().ok_or("no cluster info")?;
            let peers: Vec<_> = c
                .replicas
                .iter()
                .map(|r| (r.name.clone(), r.current))
                .collect();
            let current = c.leader.as_deref() == Some(name.as_str())
                || c.replicas.iter().any(|r| r.name == name && r.current);
            if current && c.replicas.len() == 2 && c.replicas.iter().all(|r| r.current) {
                Ok(())
            } else {
                Err(format!(
                    "stream peers after the restart: leader {:?}, replicas {peers:?}",
                    c.leader
                ))
            }
        }
    })
    .await;

    // The same ids again, before and during the kill: deduplicated, each
    // answered with the sequence it was first stored at.
    let again: Vec<usize> = (0..10)
        .chain(KILL_AFTER_BATCH * BATCH..(KILL_AFTER_BATCH + 1) * BATCH)
        .collect();
    for &m in &again {
        let message = PublishMessage::build()
            .message_id(msg_id(m))
            .payload(payload(m).into());
        let ack = js
            .send_publish(SUBJECT, message)
            .await
            .unwrap()
            .await
            .unwrap_or_else(|e| panic!("publishing {m} again: {e}"));
        assert!(
            ack.duplicate,
            "message {m} published twice was not deduplicated: {ack:?}"
        );
        assert_eq!(ack.sequence, acked[&m], "message {m}'s duplicate ack");
    }
    let info = stream.get_info().await.unwrap();
    assert_eq!(
        info.state.messages, TOTAL as u64,
        "the stream's count: {:?}",
        info.state
    );
    assert_eq!(info.state.last_sequence, last_seq);

    // Everything read back through a durable pull consumer: each
    // acknowledged message once, at the sequence its ack named.
    let reader = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("verify".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("creating the durable consumer");
    let mut seen: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read < TOTAL {
        assert!(
            Instant::now() < deadline,
            "read {read} of {TOTAL} messages in 30 s"
        );
        // A consumer just created may not be known yet on the node this
        // client talks to (503, no responders): fetch again, within the
        // deadline.
        let mut batch = match reader.fetch().max_messages(250).messages().await {
            Ok(batch) => batch,
            Err(e) => {
                eprintln!("fetching from the durable consumer: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    eprintln!("a message from the consumer: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            };
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_string())
                .expect("a Nats-Msg-Id header");
            let m: usize = id
                .strip_prefix("order-")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("an id not published: {id}"));
            assert_eq!(
                message.payload,
                payload(m).as_bytes(),
                "message {m}'s payload"
            );
            let seq = message.info().expect("JetStream metadata").stream_sequence;
            seen.entry(m).or_default().push(seq);
            message.double_ack().await.expect("acking a message");
            read += 1;
        }
    }
    let mut extra = reader.fetch().max_messages(10).messages().await.unwrap();
    if let Some(message) = extra.next().await {
        panic!("more than {TOTAL} messages in the stream: {message:?}");
    }
    for m in 0..TOTAL {
        assert_eq!(
            seen.get(&m),
            Some(&vec![acked[&m]]),
            "message {m}: read at {:?}, acknowledged at {}",
            seen.get(&m),
            acked[&m]
        );
    }
    let consumer_info = stream.consumer_info("verify").await.unwrap();
    assert_eq!(consumer_info.num_pending, 0);
    assert_eq!(consumer_info.num_ack_pending, 0);
    eprintln!("done in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// The server features the NATS journal builds on (hub/src/journal/README.md,
// "The order of the work", step 1), each on R3 streams of a 3-node cluster.
// Header names and API fields are the server's own (nats-server's
// stream.go and consumer.go; ADR-50, ADR-51 and ADR-42).
//
// Streams of the shared cluster may not overlap, so each test puts the
// design's subjects under a namespace of its own: `<ns>.gh.ev.<p>.<idhash>`,
// `<ns>.gh.wk.<target>.<p>`, `<ns>.gh.sched.<case>`, `<ns>.gh.due.<p>`.

/// ADR-50 atomic batch publish: the batch's id, the message's place in it,
/// and `1` on the message that commits it.
const BATCH_ID: &str = "Nats-Batch-Id";
const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const BATCH_COMMIT: &str = "Nats-Batch-Commit";
/// Deduplication within the stream's duplicate window.
const MSG_ID: &str = "Nats-Msg-Id";
/// Optimistic concurrency on a subject (or, with `...-Subject`, on every
/// subject a wildcard matches): `0` means "no message there yet".
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";
/// ADR-51 message schedules: the schedule (`@at <RFC 3339>`) and its target;
/// what the server adds to the message it fires.
const SCHEDULE: &str = "Nats-Schedule";
const SCHEDULE_TARGET: &str = "Nats-Schedule-Target";
const SCHEDULER: &str = "Nats-Scheduler";
const SCHEDULE_NEXT: &str = "Nats-Schedule-Next";
/// ADR-42: the pin the server hands the pinned client, on each message.
const PIN_ID: &str = "Nats-Pin-Id";

/// The server's error codes (nats-server's errors.json) the journal meets.
const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;
const ERR_DUPLICATE_IN_PROCESS: u64 = 10158;
const ERR_WRONG_LAST_SEQUENCE_CONSTANT: u64 = 10164;
const ERR_ATOMIC_PUBLISH_DISABLED: u64 = 10174;
const ERR_ATOMIC_PUBLISH_INCOMPLETE: u64 = 10176;
const ERR_ATOMIC_PUBLISH_DUPLICATE: u64 = 10201;

async fn connect_to(url: String) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(url)
        .await
        .expect("connecting to a NATS node")
}

/// The hub's name for an event's identity: sha256 of (source, id), in hex.
fn idhash(source: &str, id: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("{source}\n{id}")))
}

/// A message to publish.
#[derive(Clone, Debug)]
struct Msg {
    subject: String,
    headers: Vec<(&'static str, String)>,
    payload: String,
}

impl Msg {
    fn new(subject: impl Into<String>, payload: impl Into<String>) -> Msg {
        Msg {
            subject: subject.into(),
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Msg {
        self.headers.push((name, value.into()));
        self
    }

    fn header_map(&self) -> async_nats::HeaderMap {
        let mut map = async_nats::HeaderMap::new();
        for (name, value) in &self.headers {
            map.insert(*name, value.as_str());
        }
        map
    }
}

/// An answer's JSON: a pub ack (`{"stream","seq",...}`), an API response,
/// or `{"error":{"code","err_code","description"}}`. `Null` for the empty
/// answer (a staged batch message).
fn answer_json(payload: &[u8]) -> serde_json::Value {
    if payload.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("an answer that is not JSON ({e}): {payload:?}"))
}

/// Publishes `msg` as a request and returns the server's answer. "No
/// responders" (a stream just created, its interest not yet known on every
/// node) is retried for up to 5 s.
async fn publish_request(client: &async_nats::Client, msg: &Msg) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client
            .request_with_headers(
                msg.subject.clone(),
                msg.header_map(),
                msg.payload.clone().into(),
            )
            .await
        {
            Ok(reply) => return answer_json(&reply.payload),
            Err(e)
                if e.kind() == async_nats::RequestErrorKind::NoResponders
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("publishing to {}: {e}", msg.subject),
        }
    }
}

/// The server's `err_code` when `answer` is an error.
fn err_code(answer: &serde_json::Value) -> Option<u64> {
    answer["error"]["err_code"].as_u64()
}

/// How many messages `stream` holds on each subject.
async fn subject_counts(client: &async_nats::Client, stream: &str) -> BTreeMap<String, u64> {
    js_api_counts(client, stream)
        .await
        .unwrap_or_else(|e| panic!("stream info of {stream}: {e}"))
}

/// [`subject_counts`], or why not (no stream leader yet, say).
async fn js_api_counts(
    client: &async_nats::Client,
    stream: &str,
) -> Result<BTreeMap<String, u64>, String> {
    let reply = client
        .request(
            format!("$JS.API.STREAM.INFO.{stream}"),
            serde_json::json!({ "subjects_filter": ">" })
                .to_string()
                .into(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let info = answer_json(&reply.payload);
    if err_code(&info).is_some() {
        return Err(info.to_string());
    }
    Ok(info["state"]["subjects"]
        .as_object()
        .map(|subjects| {
            subjects
                .iter()
                .map(|(s, n)| (s.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default())
}

/// Message `seq` of atomic batch `batch` (ADR-50): `Nats-Batch-Id`,
/// `Nats-Batch-Sequence`, and `Nats-Batch-Commit: 1` when `commit`. With
/// `reply` it is a request and its answer is returned: empty for a staged
/// message, the batch's pub ack or the error refusing it for the commit.
/// Without, a plain publish (`Null`).
async fn batch_part(
    client: &async_nats::Client,
    batch: &str,
    seq: usize,
    msg: &Msg,
    commit: bool,
    reply: bool,
) -> serde_json::Value {
    let mut msg = msg
        .clone()
        .header(BATCH_ID, batch)
        .header(BATCH_SEQUENCE, seq.to_string());
    if commit {
        msg = msg.header(BATCH_COMMIT, "1");
    }
    if reply {
        return publish_request(client, &msg).await;
    }
    client
        .publish_with_headers(msg.subject.clone(), msg.header_map(), msg.payload.into())
        .await
        .expect("publishing a batch message");
    serde_json::Value::Null
}

/// Publishes `msgs` as atomic batch `batch`: the first as a request (the
/// server answers it with nothing, or with an error when the stream takes
/// no batches), the middle ones as plain publishes, the last with the
/// commit as a request when `commit`. Returns the commit's answer, or the
/// first message's error; `Null` when not committed (an abandoned batch).
async fn publish_batch(
    client: &async_nats::Client,
    batch: &str,
    msgs: &[Msg],
    commit: bool,
) -> serde_json::Value {
    assert!(msgs.len() >= 2, "a batch of one message");
    let first = batch_part(client, batch, 1, &msgs[0], false, true).await;
    if !first.is_null() {
        return first;
    }
    for (i, msg) in msgs.iter().enumerate().skip(1) {
        let seq = i + 1;
        if seq == msgs.len() && commit {
            return batch_part(client, batch, seq, msg, true, true).await;
        }
        batch_part(client, batch, seq, msg, false, false).await;
    }
    client.flush().await.expect("flushing a batch");
    serde_json::Value::Null
}

/// The targets an accepted event is routed to in these tests.
const TARGETS: [&str; 3] = ["police", "fire", "city"];

/// The batch that accepts one event under namespace `ns`: the event on
/// `<ns>.gh.ev.<p>.<idhash>`, then one work item per target on
/// `<ns>.gh.wk.<target>.<p>`. With `msg_ids`, the event carries
/// `Nats-Msg-Id: <idhash>` and each work item `<idhash>.<target>`. With
/// `identity_check`, the event also carries
/// `Nats-Expected-Last-Subject-Sequence: 0` for `<ns>.gh.ev.*.<idhash>`:
/// "no event of this identity on any partition yet".
fn acceptance(ns: &str, p: u32, h: &str, msg_ids: bool, identity_check: bool) -> Vec<Msg> {
    let mut event = Msg::new(
        format!("{ns}.gh.ev.{p}.{h}"),
        format!("{{\"specversion\":\"1.0\",\"id\":\"{h}\"}}"),
    );
    if msg_ids {
        event = event.header(MSG_ID, h);
    }
    if identity_check {
        event = event.header(EXPECTED_LAST_SUBJECT_SEQUENCE, "0").header(
            EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
            format!("{ns}.gh.ev.*.{h}"),
        );
    }
    let mut msgs = vec![event];
    for target in TARGETS {
        let mut work = Msg::new(
            format!("{ns}.gh.wk.{target}.{p}"),
            format!("{{\"event\":\"{ns}.gh.ev.{p}.{h}\"}}"),
        );
        if msg_ids {
            work = work.header(MSG_ID, format!("{h}.{target}"));
        }
        msgs.push(work);
    }
    msgs
}

/// A stream holding both events and work items of namespace `ns`, three
/// replicas, atomic batches allowed.
fn acceptance_stream(name: &str, ns: &str) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: vec![format!("{ns}.gh.ev.>"), format!("{ns}.gh.wk.>")],
        num_replicas: 3,
        storage: stream::StorageType::File,
        allow_atomic_publish: true,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// Waits until every node of `cluster` holds (messages, first, last) of
/// stream `name` locally.
async fn every_node_holds(cluster: &NatsCluster, name: &str, expected: (u64, u64, u64)) {
    for i in 0..cluster.len() {
        eventually(Duration::from_secs(10), || {
            let state = local_stream_state(cluster, i, name);
            async move {
                match state? {
                    state if state == expected => Ok(()),
                    state => Err(format!(
                        "node {i} holds {state:?} of {name}, not {expected:?}"
                    )),
                }
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_batch_stores_an_event_and_its_work_items_under_one_commit_or_nothing() {
    let cluster = NatsCluster::shared();
    let client = connect(cluster).await;
    let js = jetstream::new(client.clone());
    let (name, ns) = ("GH_BATCH", "batch");
    let stream = js
        .create_stream(acceptance_stream(name, ns))
        .await
        .expect("creating a stream that allows atomic batches");

    // One event and its three work items, committed together: one ack,
    // naming the batch, its size and the last sequence.
    let h1 = idhash("police-feed", "e-1");
    let msgs = acceptance(ns, 7, &h1, false, false);
    let started = Instant::now();
    let ack = publish_batch(&client, "accept-1", &msgs, true).await;
    eprintln!(
        "atomic batch of 4 committed in {:?}: {ack}",
        started.elapsed()
    );
    assert_eq!(err_code(&ack), None, "the batch was refused: {ack}");
    assert_eq!(ack["stream"], name, "{ack}");
    assert_eq!(ack["seq"], 4, "the ack names the commit's sequence: {ack}");
    assert_eq!(ack["batch"], "accept-1", "{ack}");
    assert_eq!(ack["count"], 4, "{ack}");
    for (i, msg) in msgs.iter().enumerate() {
        let stored = stream.get_raw_message(i as u64 + 1).await.unwrap();
        assert_eq!(stored.subject.as_str(), msg.subject, "message {}", i + 1);
        assert_eq!(stored.payload, msg.payload.as_bytes(), "message {}", i + 1);
        if i == 0 || i == msgs.len() - 1 {
            eprintln!("stored message {} headers: {:?}", i + 1, stored.headers);
        }
    }
    every_node_holds(cluster, name, (4, 1, 4)).await;

    // Abandoned: all four staged, no commit (the publishing node died).
    // Nothing is stored, on any node.
    let h2 = idhash("police-feed", "e-2");
    let abandoned = publish_batch(
        &client,
        "accept-2",
        &acceptance(ns, 3, &h2, false, false),
        false,
    )
    .await;
    assert!(abandoned.is_null(), "staging was refused: {abandoned}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = stream.get_info().await.unwrap();
    assert_eq!(
        (info.state.messages, info.state.last_sequence),
        (4, 4),
        "an uncommitted batch stored something: {:?}",
        info.state
    );
    every_node_holds(cluster, name, (4, 1, 4)).await;

    // A batch with a message missing (1, 2, then the commit as 4) is
    // refused whole at its commit.
    let h3 = idhash("police-feed", "e-3");
    let gap = acceptance(ns, 5, &h3, false, false);
    assert!(batch_part(&client, "accept-3", 1, &gap[0], false, true)
        .await
        .is_null());
    batch_part(&client, "accept-3", 2, &gap[1], false, false).await;
    let refused = batch_part(&client, "accept-3", 4, &gap[3], true, true).await;
    eprintln!("a batch with a gap: {refused}");
    assert_eq!(
        err_code(&refused),
        Some(ERR_ATOMIC_PUBLISH_INCOMPLETE),
        "{refused}"
    );
    assert_eq!(stream.get_info().await.unwrap().state.messages, 4);

    // The abandoned event is accepted later by a batch of its own; nothing
    // staged by the abandoned one comes with it.
    let ack = publish_batch(
        &client,
        "accept-4",
        &acceptance(ns, 3, &h2, false, false),
        true,
    )
    .await;
    assert_eq!(err_code(&ack), None, "{ack}");
    assert_eq!(
        (ack["seq"].as_u64(), ack["count"].as_u64()),
        (Some(8), Some(4)),
        "{ack}"
    );
    let counts = subject_counts(&client, name).await;
    assert_eq!(counts.values().sum::<u64>(), 8, "{counts:?}");
    assert_eq!(
        counts.get(&format!("{ns}.gh.ev.3.{h2}")),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get(&format!("{ns}.gh.ev.5.{h3}")),
        None,
        "{counts:?}"
    );
    every_node_holds(cluster, name, (8, 1, 8)).await;

    // A stream without `allow_atomic` refuses a batch at its first message
    // (what the hub would see on a cluster that cannot do this).
    js.create_stream(stream::Config {
        allow_atomic_publish: false,
        ..acceptance_stream("GH_NO_ATOMIC", "noatomic")
    })
    .await
    .unwrap();
    let refused = publish_batch(
        &client,
        "plain-1",
        &acceptance("noatomic", 1, &h1, false, false),
        true,
    )
    .await;
    eprintln!("a batch to a stream without allow_atomic: {refused}");
    assert_eq!(
        err_code(&refused),
        Some(ERR_ATOMIC_PUBLISH_DISABLED),
        "{refused}"
    );
    js.delete_stream("GH_NO_ATOMIC").await.unwrap();
    js.delete_stream(name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_batch_for_an_identity_already_stored_is_refused_whole_even_on_another_partition()
{
    let cluster = NatsCluster::shared();
    let client = connect(cluster).await;
    let js = jetstream::new(client.clone());
    let (name, ns) = ("GH_BATCH_DEDUP", "dedup");
    // A short duplicate window, to see what answers a repeat beyond it.
    let window = Duration::from_secs(1);
    let stream = js
        .create_stream(stream::Config {
            duplicate_window: window,
            ..acceptance_stream(name, ns)
        })
        .await
        .unwrap();
    let h = idhash("police-feed", "e-1");

    // Msg ids on every message, the identity check on the event: taken.
    let ack = publish_batch(&client, "dedup-1", &acceptance(ns, 7, &h, true, true), true).await;
    assert_eq!(err_code(&ack), None, "{ack}");
    assert_eq!(
        (ack["seq"].as_u64(), ack["count"].as_u64()),
        (Some(4), Some(4)),
        "{ack}"
    );

    // The same batch again within the window (a retry after a lost ack):
    // refused whole for its duplicate msg ids, before the identity check.
    let again = publish_batch(&client, "dedup-2", &acceptance(ns, 7, &h, true, true), true).await;
    eprintln!("the same batch again, within the window: {again}");
    assert_eq!(
        err_code(&again),
        Some(ERR_ATOMIC_PUBLISH_DUPLICATE),
        "{again}"
    );

    // The same identity on another partition, without msg ids (as a
    // repeat beyond the window looks): refused whole by the identity
    // check, which names the sequence holding the identity.
    let other = publish_batch(
        &client,
        "dedup-3",
        &acceptance(ns, 3, &h, false, true),
        true,
    )
    .await;
    eprintln!("the same identity on another partition: {other}");
    assert_eq!(err_code(&other), Some(ERR_WRONG_LAST_SEQUENCE), "{other}");
    assert_eq!(
        other["error"]["description"], "wrong last sequence: 1",
        "{other}"
    );
    let same = publish_batch(
        &client,
        "dedup-4",
        &acceptance(ns, 7, &h, false, true),
        true,
    )
    .await;
    assert_eq!(err_code(&same), Some(ERR_WRONG_LAST_SEQUENCE), "{same}");

    // Once the window has passed, the retry with the same msg ids is
    // refused by the identity check instead.
    let mut attempt = 0;
    let beyond = eventually(Duration::from_secs(10), || {
        attempt += 1;
        let client = client.clone();
        let batch = format!("dedup-late-{attempt}");
        let msgs = acceptance(ns, 7, &h, true, true);
        async move {
            let answer = publish_batch(&client, &batch, &msgs, true).await;
            match err_code(&answer) {
                Some(ERR_WRONG_LAST_SEQUENCE) => Ok(answer),
                Some(ERR_ATOMIC_PUBLISH_DUPLICATE) => {
                    Err(format!("still within the window: {answer}"))
                }
                _ => panic!("a repeat beyond the window: {answer}"),
            }
        }
    })
    .await;
    eprintln!("the same batch beyond the {window:?} window ({attempt} attempts): {beyond}");

    // Nothing of any refused batch was stored; another identity is taken.
    let info = stream.get_info().await.unwrap();
    assert_eq!(
        (info.state.messages, info.state.last_sequence),
        (4, 4),
        "{:?}",
        info.state
    );
    let h2 = idhash("police-feed", "e-2");
    let ack = publish_batch(
        &client,
        "dedup-5",
        &acceptance(ns, 3, &h2, true, true),
        true,
    )
    .await;
    assert_eq!(err_code(&ack), None, "{ack}");
    assert_eq!(ack["seq"], 8, "{ack}");
    let counts = subject_counts(&client, name).await;
    let events: Vec<_> = counts.keys().filter(|s| s.contains(".gh.ev.")).collect();
    assert_eq!(
        events,
        [&format!("{ns}.gh.ev.3.{h2}"), &format!("{ns}.gh.ev.7.{h}")],
        "{counts:?}"
    );
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert_eq!(counts.values().sum::<u64>(), 8, "{counts:?}");
    every_node_holds(cluster, name, (8, 1, 8)).await;
    js.delete_stream(name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_for_one_identity_through_two_nodes_store_it_once() {
    let cluster = NatsCluster::shared();
    let client = connect(cluster).await;
    let js = jetstream::new(client.clone());
    let (name, ns) = ("GH_BATCH_RACE", "race");
    js.create_stream(acceptance_stream(name, ns)).await.unwrap();
    // Two hub nodes, each connected to a different NATS node, accept the
    // same event at once, each routing it to its own partition.
    let a = connect_to(cluster.url(0)).await;
    let b = connect_to(cluster.url(2)).await;
    const ROUNDS: usize = 20;
    let mut refusals: BTreeMap<u64, usize> = BTreeMap::new();
    for k in 0..ROUNDS {
        let h = idhash("race", &k.to_string());
        // Half with msg ids (within the window), half without (beyond it).
        let msg_ids = k % 2 == 0;
        let (batch_a, batch_b) = (format!("a-{k}"), format!("b-{k}"));
        let (msgs_a, msgs_b) = (
            acceptance(ns, 1, &h, msg_ids, true),
            acceptance(ns, 2, &h, msg_ids, true),
        );
        let (ra, rb) = tokio::join!(
            publish_batch(&a, &batch_a, &msgs_a, true),
            publish_batch(&b, &batch_b, &msgs_b, true),
        );
        let (ok, refused): (Vec<_>, Vec<_>) =
            [&ra, &rb].into_iter().partition(|r| err_code(r).is_none());
        assert_eq!(ok.len(), 1, "round {k}: {ra} / {rb}");
        let code = err_code(refused[0]).unwrap();
        assert!(
            [
                ERR_WRONG_LAST_SEQUENCE,
                ERR_WRONG_LAST_SEQUENCE_CONSTANT,
                ERR_ATOMIC_PUBLISH_DUPLICATE,
                ERR_DUPLICATE_IN_PROCESS
            ]
            .contains(&code),
            "round {k}: refused with {}",
            refused[0]
        );
        *refusals.entry(code).or_default() += 1;
    }
    eprintln!("{ROUNDS} races: the loser's error codes {refusals:?}");
    let counts = subject_counts(&client, name).await;
    let events: u64 = counts
        .iter()
        .filter(|(s, _)| s.contains(".gh.ev."))
        .map(|(_, n)| n)
        .sum();
    let work: u64 = counts
        .iter()
        .filter(|(s, _)| s.contains(".gh.wk."))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        (events, work),
        (ROUNDS as u64, 3 * ROUNDS as u64),
        "{counts:?}"
    );
    assert!(
        counts
            .iter()
            .filter(|(s, _)| s.contains(".gh.ev."))
            .all(|(_, &n)| n == 1),
        "{counts:?}"
    );
    js.delete_stream(name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_publish_for_an_identity_stored_on_another_partition_is_refused_on_every_node() {
    let cluster = NatsCluster::shared();
    let client = connect(cluster).await;
    let js = jetstream::new(client.clone());
    let (name, ns) = ("GH_EVENTS_PLAIN", "plain");
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![format!("{ns}.gh.ev.>")],
        num_replicas: 3,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let h = idhash("police-feed", "e-1");
    let event = |p: u32, h: &str| {
        Msg::new(format!("{ns}.gh.ev.{p}.{h}"), "{}")
            .header(EXPECTED_LAST_SUBJECT_SEQUENCE, "0")
            .header(
                EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
                format!("{ns}.gh.ev.*.{h}"),
            )
    };

    let ack = publish_request(&client, &event(7, &h)).await;
    assert_eq!(err_code(&ack), None, "{ack}");
    assert_eq!(ack["seq"], 1, "{ack}");

    // Partition 3, through each node: refused, naming where it is.
    for i in 0..cluster.len() {
        let node = connect_to(cluster.url(i)).await;
        let refused = publish_request(&node, &event(3, &h)).await;
        if i == 0 {
            eprintln!("the same identity on another partition: {refused}");
        }
        assert_eq!(
            err_code(&refused),
            Some(ERR_WRONG_LAST_SEQUENCE),
            "node {i}: {refused}"
        );
        assert_eq!(refused["error"]["code"], 400, "{refused}");
        assert_eq!(
            refused["error"]["description"], "wrong last sequence: 1",
            "{refused}"
        );
    }
    // The same partition: refused alike.
    let refused = publish_request(&client, &event(7, &h)).await;
    assert_eq!(
        err_code(&refused),
        Some(ERR_WRONG_LAST_SEQUENCE),
        "{refused}"
    );

    // async-nats maps it to its own kind.
    let msg = event(3, &h);
    let error = js
        .publish_with_headers(
            msg.subject.clone(),
            msg.header_map(),
            msg.payload.clone().into(),
        )
        .await
        .unwrap()
        .await
        .expect_err("a second event of one identity was taken");
    assert_eq!(
        error.kind(),
        jetstream::context::PublishErrorKind::WrongLastSequence
    );

    // With a msg id as well, a retry within the window is answered by the
    // msg id, checked first: an ack marked duplicate (the first sequence),
    // not an error, although the identity check would refuse it.
    let h2 = idhash("police-feed", "e-2");
    let ack = publish_request(&client, &event(4, &h2).header(MSG_ID, h2.as_str())).await;
    assert_eq!(ack["seq"], 2, "{ack}");
    let duplicate = publish_request(&client, &event(4, &h2).header(MSG_ID, h2.as_str())).await;
    eprintln!("the same event again with its msg id, within the window: {duplicate}");
    assert_eq!(err_code(&duplicate), None, "{duplicate}");
    assert_eq!(duplicate["duplicate"], true, "{duplicate}");
    assert_eq!(duplicate["seq"], 2, "{duplicate}");

    // Another identity is not held back by the check.
    let h3 = idhash("police-feed", "e-3");
    let ack = publish_request(&client, &event(3, &h3)).await;
    assert_eq!(ack["seq"], 3, "{ack}");
    let info = js.get_stream(name).await.unwrap().get_info().await.unwrap();
    assert_eq!(info.state.messages, 3, "{:?}", info.state);
    js.delete_stream(name).await.unwrap();
}

/// The priority group every hub node pulls a partition's consumer in.
const GROUP: &str = "hub";
/// How long a pull request waits on the server; well below the pinned
/// TTL, so a live pinned client renews its pin in time.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// One message a hub node pulled.
struct Pulled {
    node: usize,
    seq: u64,
    delivered: i64,
    pin: Option<String>,
    at: Instant,
    message: jetstream::Message,
}

/// What [`pinned_failover`] saw.
struct Failover {
    /// The node that was pinned first, and its pin.
    pinned: usize,
    pin: String,
    /// When the pinned node received items 1 to 6.
    first_deliveries: Vec<Instant>,
    /// When the pinned node's connection was closed.
    closed_at: Instant,
    /// Everything the other node pulled after that, in order.
    takeover: Vec<Pulled>,
    /// The other node's pin.
    new_pin: String,
}

/// Hub node `node`: its own connection (to the NATS node at `url`) pulling
/// consumer `durable` of `stream` in the priority group, as async-nats's
/// pull stream does it (it keeps the pin it is given and renews its pull
/// every PULL_EXPIRES), until the reader is aborted. Every message goes to
/// `tx`, unacked.
async fn hub_node_pulling(
    node: usize,
    url: String,
    stream: &str,
    durable: &str,
    tx: tokio::sync::mpsc::UnboundedSender<Pulled>,
) -> (async_nats::Client, tokio::task::JoinHandle<()>) {
    let client = connect_to(url).await;
    let consumer: consumer::PullConsumer = jetstream::new(client.clone())
        .get_stream(stream)
        .await
        .unwrap()
        .get_consumer(durable)
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut messages = consumer
            .stream()
            .group(GROUP)
            .expires(PULL_EXPIRES)
            .max_messages_per_batch(10)
            .messages()
            .await
            .expect("pulling in the priority group");
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    eprintln!("hub node {node}: {e}");
                    continue;
                }
            };
            let info = message.info().expect("JetStream metadata");
            let pulled = Pulled {
                node,
                seq: info.stream_sequence,
                delivered: info.delivered,
                pin: message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(PIN_ID))
                    .map(|v| v.as_str().to_string()),
                at: Instant::now(),
                message,
            };
            if tx.send(pulled).is_err() {
                break;
            }
        }
    });
    (client, reader)
}

/// Receives `n` messages from `rx`, for at most `timeout`.
async fn receive(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Pulled>,
    n: usize,
    timeout: Duration,
) -> Vec<Pulled> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(pulled)) => got.push(pulled),
            Ok(None) => panic!("the readers stopped"),
            Err(_) => panic!(
                "{} of {n} messages within {timeout:?}: {:?}",
                got.len(),
                got.iter().map(|p| (p.node, p.seq)).collect::<Vec<_>>()
            ),
        }
    }
    got
}

/// A partition's work consumer, pinned (ADR-42: `priority_policy:
/// pinned_client`, one priority group, `priority_timeout` = the pinned
/// TTL), pulled by two hub nodes. Six items go to the pinned node, which
/// acks 1 and 3 and dies (its connection closed) with 2, 4, 5 and 6
/// unacked; a seventh item arrives right after. Returns what the other
/// node got, all acked as they came.
async fn pinned_failover(
    cluster: &NatsCluster,
    name: &str,
    ns: &str,
    pinned_ttl: Duration,
    ack_wait: Duration,
    spacing: Duration,
) -> Failover {
    let admin = connect(cluster).await;
    let js = jetstream::new(admin.clone());
    let stream = js
        .create_stream(stream::Config {
            name: name.into(),
            subjects: vec![format!("{ns}.gh.wk.>")],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let subject = format!("{ns}.gh.wk.police.7");
    let durable = "police-7";
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.into()),
            filter_subject: subject.clone(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            priority_policy: consumer::PriorityPolicy::PinnedClient,
            priority_groups: vec![GROUP.into()],
            priority_timeout: pinned_ttl,
            ..Default::default()
        })
        .await
        .expect("creating a pinned-client consumer");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut nodes = vec![
        hub_node_pulling(0, cluster.url(1), name, durable, tx.clone()).await,
        hub_node_pulling(1, cluster.url(2), name, durable, tx).await,
    ];
    eventually(Duration::from_secs(5), || {
        let info = stream.consumer_info(durable);
        async move {
            let info = info.await.map_err(|e| e.to_string())?;
            if info.num_waiting >= 2 {
                Ok(())
            } else {
                Err(format!("{} pulls waiting", info.num_waiting))
            }
        }
    })
    .await;

    // Items 1..6: all to one node, the pinned one, each with its pin.
    for i in 1..=6 {
        js.publish(subject.clone(), format!("item-{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
        tokio::time::sleep(spacing).await;
    }
    let first = receive(&mut rx, 6, Duration::from_secs(10)).await;
    let pinned = first[0].node;
    let pin = first[0]
        .pin
        .clone()
        .expect("a Nats-Pin-Id header on the pinned node's message");
    for p in &first {
        assert_eq!(p.node, pinned, "item {} went to the node not pinned", p.seq);
        assert_eq!(p.pin.as_deref(), Some(pin.as_str()), "item {}'s pin", p.seq);
        assert_eq!(p.delivered, 1);
    }
    assert_eq!(
        first.iter().map(|p| p.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    let info = stream.consumer_info(durable).await.unwrap();
    assert_eq!(
        info.priority_groups
            .iter()
            .map(|g| (g.group.as_str(), g.pinned_client_id.as_deref()))
            .collect::<Vec<_>>(),
        [(GROUP, Some(pin.as_str()))],
        "the consumer's priority groups"
    );
    // The other node, pulling all along, got nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Ok(p) = rx.try_recv() {
        panic!(
            "node {} got item {} while node {pinned} was pinned",
            p.node, p.seq
        );
    }

    // The pinned node acks 1 and 3, then dies with the rest unacked.
    for p in &first {
        if p.seq == 1 || p.seq == 3 {
            p.message.double_ack().await.expect("acking");
        }
    }
    let first_deliveries = first.iter().map(|p| p.at).collect();
    let (client, reader) = nodes.remove(pinned);
    reader.abort();
    let _ = reader.await;
    client
        .drain()
        .await
        .expect("closing the pinned node's connection");
    drop(client);
    let closed_at = Instant::now();
    js.publish(subject.clone(), "item-7".into())
        .await
        .unwrap()
        .await
        .unwrap();

    // The other node takes over once the pin expires.
    let mut takeover = Vec::new();
    let deadline = pinned_ttl + ack_wait + Duration::from_secs(5);
    for p in receive(&mut rx, 5, deadline).await {
        assert_ne!(p.node, pinned, "the dead node got item {}", p.seq);
        p.message.double_ack().await.expect("acking");
        takeover.push(p);
    }
    let new_pin = takeover[0].pin.clone().expect("a pin for the new node");
    assert!(takeover
        .iter()
        .all(|p| p.pin.as_deref() == Some(new_pin.as_str())));
    assert_ne!(new_pin, pin, "the new pinned node has the old pin");
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Ok(p) = rx.try_recv() {
        panic!("item {} came again (delivery {})", p.seq, p.delivered);
    }
    let info = stream.consumer_info(durable).await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");
    assert_eq!(
        info.priority_groups[0].pinned_client_id.as_deref(),
        Some(new_pin.as_str())
    );
    for (_, reader) in nodes {
        reader.abort();
    }
    js.delete_stream(name).await.unwrap();
    Failover {
        pinned,
        pin,
        first_deliveries,
        closed_at,
        takeover,
        new_pin,
    }
}

/// (sequence, delivery count) of each item, in the order pulled.
fn order(pulled: &[Pulled]) -> Vec<(u64, i64)> {
    pulled.iter().map(|p| (p.seq, p.delivered)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_priority_group_feeds_one_node_and_fails_over_after_the_pinned_ttl() {
    let cluster = NatsCluster::shared();
    let pinned_ttl = Duration::from_secs(2);
    let ack_wait = Duration::from_secs(8);
    let f = pinned_failover(
        cluster,
        "GH_PIN",
        "pin",
        pinned_ttl,
        ack_wait,
        Duration::from_millis(100),
    )
    .await;
    let takeover = f.takeover[0].at - f.closed_at;
    eprintln!(
        "node {} pinned ({}); after its death node {} pinned ({}) in {takeover:?}; it pulled {:?}",
        f.pinned,
        f.pin,
        1 - f.pinned,
        f.new_pin,
        order(&f.takeover)
    );
    // The pin outlives the dead node by up to the TTL, counted from its
    // last pull (at most PULL_EXPIRES before it died).
    assert!(
        takeover >= pinned_ttl - PULL_EXPIRES - Duration::from_millis(100),
        "the pin moved {takeover:?} after the pinned node died"
    );
    // Upper bound loose for a loaded CI machine, but below ack_wait.
    assert!(
        takeover <= pinned_ttl + Duration::from_secs(5),
        "{takeover:?}"
    );
    // Item 7, new, comes first: the pin moved before ack_wait ran out on
    // the dead node's items. Those follow once it does, each on its
    // second delivery (in stream order in every run so far; the journal
    // does not rely on it).
    let got = order(&f.takeover);
    assert_eq!(got[0], (7, 1), "{got:?}");
    let mut rest = got[1..].to_vec();
    rest.sort();
    assert_eq!(rest, [(2, 2), (4, 2), (5, 2), (6, 2)], "{got:?}");
    for p in &f.takeover[1..] {
        let first = f.first_deliveries[p.seq as usize - 1];
        // Timed here, on receipt: a few microseconds short of the server's.
        assert!(
            p.at - first >= ack_wait - Duration::from_millis(50),
            "item {} redelivered after {:?}",
            p.seq,
            p.at - first
        );
    }
}

/// One pull request sent by hand to `$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`
/// (ADR-42's `group`, and `id` once pinned, in its JSON), and what it got
/// until the server ended it: the messages, then the status that ended
/// the request (`408 Request Timeout` when it expired).
async fn pull_once(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
    expires: Duration,
) -> (Vec<jetstream::Message>, Option<u16>) {
    let client = js.client();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    let request = serde_json::json!({
        "batch": 10,
        "expires": expires.as_nanos() as u64,
        "group": GROUP,
    });
    client
        .publish_with_reply(
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
            inbox,
            request.to_string().into(),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + expires + Duration::from_secs(2);
    let mut messages = Vec::new();
    loop {
        let reply = tokio::time::timeout_at(deadline, replies.next())
            .await
            .expect("a pull request the server never ended")
            .expect("the inbox subscription ended");
        match reply.status {
            Some(status) if status != async_nats::StatusCode::OK => {
                return (messages, Some(status.as_u16()));
            }
            _ => messages.push(jetstream::Message {
                message: reply,
                context: js.clone(),
            }),
        }
    }
}

/// (stream sequence, delivery count, pin) of each message.
fn pulled(messages: &[jetstream::Message]) -> Vec<(u64, i64, Option<String>)> {
    messages
        .iter()
        .map(|m| {
            let info = m.info().expect("JetStream metadata");
            let pin = m
                .headers
                .as_ref()
                .and_then(|h| h.get(PIN_ID))
                .map(|v| v.as_str().to_string());
            (info.stream_sequence, info.delivered, pin)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_standby_pull_while_a_dead_node_holds_the_pin_rotates_its_redeliveries() {
    let cluster = NatsCluster::shared();
    let admin = connect(cluster).await;
    let js = jetstream::new(admin.clone());
    let (name, ns) = ("GH_PIN_ROTATE", "pinrot");
    let stream = js
        .create_stream(stream::Config {
            name: name.into(),
            subjects: vec![format!("{ns}.gh.wk.>")],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    // The pinned TTL outlasts ack_wait (plus a pull's expiry), so the dead
    // node's items are all due again before the pin moves.
    let pinned_ttl = Duration::from_secs(3);
    let ack_wait = Duration::from_secs(1);
    let subject = format!("{ns}.gh.wk.police.7");
    // Copies of one partition's consumer: on "quiet" nobody pulls while the
    // dead node holds the pin; on "busy<k>" a standby node pulls k times.
    let consumers = [("quiet", 0), ("busy1", 1), ("busy2", 2)];
    for (durable, _) in consumers {
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(durable.into()),
                filter_subject: subject.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                priority_policy: consumer::PriorityPolicy::PinnedClient,
                priority_groups: vec![GROUP.into()],
                priority_timeout: pinned_ttl,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for i in 1..=4 {
        js.publish(subject.clone(), format!("item-{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // A node pulls items 1..4 of each and dies without acking any.
    let dead = jetstream::new(connect_to(cluster.url(1)).await);
    for (durable, _) in consumers {
        let (got, status) = pull_once(&dead, name, durable, Duration::from_millis(200)).await;
        let got = pulled(&got);
        assert_eq!(
            got.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(),
            [(1, 1), (2, 1), (3, 1), (4, 1)],
            "{durable}"
        );
        assert!(got[0].2.is_some(), "{durable}: no pin: {got:?}");
        assert_eq!(status, Some(408), "{durable}");
    }
    drop(dead);
    tokio::time::sleep(ack_wait + Duration::from_millis(300)).await;

    // Standby pulls while the dead node's pin holds: the server delivers
    // nothing to them (each ends with 408), but each one takes the head of
    // the redelivery queue and puts it back at the tail.
    let standby = jetstream::new(connect_to(cluster.url(2)).await);
    for (durable, k) in consumers {
        for _ in 0..k {
            let (got, status) =
                pull_once(&standby, name, durable, Duration::from_millis(100)).await;
            assert!(
                got.is_empty(),
                "{durable}: a standby pull got {:?}",
                pulled(&got)
            );
            assert_eq!(status, Some(408), "{durable}");
        }
    }
    // A new item for the partition, after the death.
    js.publish(subject.clone(), "item-5".into())
        .await
        .unwrap()
        .await
        .unwrap();

    // The pins expire; the standby node's next pull is pinned and gets the
    // dead node's items before the new one, rotated once per standby pull.
    eventually(pinned_ttl + Duration::from_secs(3), || {
        let infos = consumers.map(|(durable, _)| stream.consumer_info(durable));
        async move {
            for info in infos {
                let info = info.await.map_err(|e| e.to_string())?;
                if info.priority_groups[0].pinned_client_id.is_some() {
                    return Err(format!("{} still pinned", info.name));
                }
            }
            Ok(())
        }
    })
    .await;
    let mut orders = BTreeMap::new();
    for (durable, _) in consumers {
        let (got, _) = pull_once(&standby, name, durable, Duration::from_millis(500)).await;
        for m in &got {
            m.double_ack().await.unwrap();
        }
        let got = pulled(&got);
        assert!(
            got.iter().all(|g| g.2.is_some() && g.2 == got[0].2),
            "{durable}: {got:?}"
        );
        orders.insert(durable, got.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>());
    }
    eprintln!("after the failover, in the order pulled: {orders:?}");
    assert_eq!(orders["quiet"], [(1, 2), (2, 2), (3, 2), (4, 2), (5, 1)]);
    assert_eq!(orders["busy1"], [(2, 2), (3, 2), (4, 2), (1, 2), (5, 1)]);
    assert_eq!(orders["busy2"], [(3, 2), (4, 2), (1, 2), (2, 2), (5, 1)]);
    js.delete_stream(name).await.unwrap();
}

/// The first whole second at least `ahead` from now: the Unix time and
/// its RFC 3339 form, as `Nats-Schedule: @at` takes it.
fn whole_second_ahead(ahead: Duration) -> (SystemTime, String) {
    let since_epoch = (SystemTime::now() + ahead)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let secs = since_epoch.as_secs() + 1;
    let text = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    (SystemTime::UNIX_EPOCH + Duration::from_secs(secs), text)
}

/// A case's next deadline: schedule `<ns>.gh.sched.<case>` firing `body`
/// into `<ns>.gh.due.<p>` at `at`.
fn deadline(ns: &str, case: &str, p: u32, at: &str, body: &str) -> Msg {
    Msg::new(format!("{ns}.gh.sched.{case}"), body)
        .header(SCHEDULE, format!("@at {at}"))
        .header(SCHEDULE_TARGET, format!("{ns}.gh.due.{p}"))
}

/// A stream of schedules and the messages they fire, three replicas.
fn schedule_stream(name: &str, ns: &str) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: vec![format!("{ns}.gh.sched.>"), format!("{ns}.gh.due.>")],
        num_replicas: 3,
        storage: stream::StorageType::File,
        allow_message_schedules: true,
        ..Default::default()
    }
}

/// A message fired by a schedule, as a consumer of `<ns>.gh.due.>` got it.
#[derive(Debug)]
struct Fired {
    subject: String,
    body: String,
    scheduler: Option<String>,
    next: Option<String>,
    /// When it reached the consumer, and when the stream stored it.
    received: SystemTime,
    stored: SystemTime,
}

/// Everything `consumer` gets until `until` (acked as it comes), or until
/// 1.5 s more have brought nothing else once it has `enough`.
async fn fired_until(
    consumer: &consumer::PullConsumer,
    mut until: SystemTime,
    enough: usize,
) -> Vec<Fired> {
    let mut messages = consumer
        .stream()
        .expires(PULL_EXPIRES)
        .messages()
        .await
        .unwrap();
    let mut fired = Vec::new();
    loop {
        let left = until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return fired;
        }
        let message = match tokio::time::timeout(left, messages.next()).await {
            Err(_) => return fired,
            Ok(None) => panic!("the consumer's messages ended"),
            Ok(Some(Err(e))) => {
                eprintln!("pulling: {e}");
                continue;
            }
            Ok(Some(Ok(message))) => message,
        };
        let received = SystemTime::now();
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let published = message.info().expect("JetStream metadata").published;
        fired.push(Fired {
            subject: message.subject.to_string(),
            body: String::from_utf8_lossy(&message.payload).into_owned(),
            scheduler: header(SCHEDULER),
            next: header(SCHEDULE_NEXT),
            received,
            stored: SystemTime::UNIX_EPOCH
                + Duration::from_nanos(published.unix_timestamp_nanos() as u64),
        });
        message.double_ack().await.expect("acking");
        if fired.len() >= enough {
            until = until.min(SystemTime::now() + Duration::from_millis(1500));
        }
    }
}

/// A durable pull consumer of everything schedules fire under `ns`.
fn due_consumer(ns: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some("due".into()),
        filter_subject: format!("{ns}.gh.due.>"),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    }
}

fn late(fired: &Fired, at: SystemTime) -> Duration {
    fired.received.duration_since(at).unwrap_or_else(|e| {
        panic!(
            "{fired:?} reached the consumer {:?} before its time",
            e.duration()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_schedule_fires_once_at_its_time_and_a_new_one_for_the_case_replaces_it() {
    let cluster = NatsCluster::shared();
    let client = connect(cluster).await;
    let js = jetstream::new(client.clone());
    let (name, ns) = ("GH_SCHED", "sched");
    let stream = js
        .create_stream(schedule_stream(name, ns))
        .await
        .expect("creating a stream that allows message schedules");
    let due: consumer::PullConsumer = stream.create_consumer(due_consumer(ns)).await.unwrap();

    // Case 1's deadline ~2 s ahead. Case 2's at the same time, then moved
    // 2 s later by a new schedule on the same subject.
    let (t1, t1_text) = whole_second_ahead(Duration::from_secs(2));
    let (t2, t2_text) =
        whole_second_ahead(t1.duration_since(SystemTime::now()).unwrap() + Duration::from_secs(1));
    let ack = publish_request(
        &client,
        &deadline(ns, "case-1", 3, &t1_text, "case-1 level 1"),
    )
    .await;
    assert_eq!(err_code(&ack), None, "the schedule was refused: {ack}");
    let ack = publish_request(
        &client,
        &deadline(ns, "case-2", 5, &t1_text, "case-2 level 1"),
    )
    .await;
    assert_eq!(err_code(&ack), None, "{ack}");
    let ack = publish_request(
        &client,
        &deadline(ns, "case-2", 5, &t2_text, "case-2 level 1, moved"),
    )
    .await;
    assert_eq!(err_code(&ack), None, "{ack}");
    let counts = subject_counts(&client, name).await;
    assert_eq!(
        counts,
        BTreeMap::from([
            (format!("{ns}.gh.sched.case-1"), 1),
            (format!("{ns}.gh.sched.case-2"), 1),
        ]),
        "one schedule per case (the new one rolled the old one up)"
    );

    // Pulling may lag on a loaded machine (CI runs every suite at once on
    // two cores); the window is wide and closes 1.5 s after both arrived.
    let fired = fired_until(&due, t2 + Duration::from_secs(15), 2).await;
    eprintln!("schedules at {t1_text} and {t2_text} fired: {fired:#?}");
    assert_eq!(fired.len(), 2, "{fired:#?}");
    let (case1, case2) = (&fired[0], &fired[1]);
    assert_eq!(
        (case1.subject.as_str(), case1.body.as_str()),
        (format!("{ns}.gh.due.3").as_str(), "case-1 level 1")
    );
    assert_eq!(
        case1.scheduler.as_deref(),
        Some(format!("{ns}.gh.sched.case-1").as_str())
    );
    assert_eq!(case1.next.as_deref(), Some("purge"));
    assert_eq!(
        (case2.subject.as_str(), case2.body.as_str()),
        (format!("{ns}.gh.due.5").as_str(), "case-2 level 1, moved"),
        "the replaced schedule fired"
    );
    // When it fired is the server's stored time; when the test process
    // got it adds the pull's latency, which only the machine's load sets.
    for (f, at) in [(case1, t1), (case2, t2)] {
        assert!(f.stored >= at, "{f:?} was stored before its time");
        let fired_after = f.stored.duration_since(at).unwrap();
        eprintln!(
            "{} fired {fired_after:?} after its time and reached the consumer {:?} after it",
            f.subject,
            late(f, at)
        );
        assert!(fired_after < Duration::from_secs(5), "{f:?}");
    }

    // A fired `@at` schedule is gone; each case's deadline fired once.
    let counts = subject_counts(&client, name).await;
    assert_eq!(
        counts,
        BTreeMap::from([(format!("{ns}.gh.due.3"), 1), (format!("{ns}.gh.due.5"), 1)]),
    );
    js.delete_stream(name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_schedule_fires_once_after_its_stream_leader_is_killed() {
    // Its own cluster: this test kills a node.
    let mut cluster = NatsCluster::start(3);
    let client = connect(&cluster).await;
    let js = jetstream::new(client.clone());
    let (name, ns) = ("GH_SCHED_KILL", "schedkill");
    let stream = js.create_stream(schedule_stream(name, ns)).await.unwrap();
    stream.create_consumer(due_consumer(ns)).await.unwrap();

    let (at, at_text) = whole_second_ahead(Duration::from_secs(3));
    let ack = publish_request(
        &client,
        &deadline(ns, "case-9", 3, &at_text, "case-9 level 2"),
    )
    .await;
    assert_eq!(err_code(&ack), None, "{ack}");
    let leader = stream
        .get_info()
        .await
        .unwrap()
        .cluster
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let victim = cluster.index_of(&leader);
    // Watched through a node that stays up (a client of the killed one
    // spends its request timeouts finding out).
    let survivor = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(1)))
        .connect(cluster.url((victim + 1) % cluster.len()))
        .await
        .unwrap();
    let due: consumer::PullConsumer = jetstream::new(survivor.clone())
        .get_stream(name)
        .await
        .unwrap()
        .get_consumer("due")
        .await
        .unwrap();
    cluster.kill(victim);
    eprintln!(
        "killed the stream leader {leader} {:?} before the schedule's time",
        at.duration_since(SystemTime::now()).unwrap_or_default()
    );

    // The new leader fires it: the stream holds one message on the target
    // once a leader is elected again (nats-server's raft elections take 4
    // to 9 s), stored no earlier than its time.
    let due_subject = format!("{ns}.gh.due.3");
    let stored = eventually(Duration::from_secs(25), || {
        let counts = js_api_counts(&survivor, name);
        let due_subject = due_subject.clone();
        async move {
            let counts = counts.await?;
            match counts.get(&due_subject) {
                Some(&n) => Ok(n),
                None => Err(format!("nothing fired yet: {counts:?}")),
            }
        }
    })
    .await;
    assert_eq!(stored, 1, "fired {stored} times");
    let fired = fired_until(&due, SystemTime::now() + Duration::from_secs(12), 1).await;
    eprintln!("after the kill: {fired:#?}");
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].subject, due_subject);
    assert_eq!(fired[0].body, "case-9 level 2");
    assert!(fired[0].stored >= at, "{:?}", fired[0]);
    eprintln!(
        "stored {:?} and received {:?} after its time",
        fired[0].stored.duration_since(at).unwrap(),
        late(&fired[0], at)
    );
    let info = eventually(Duration::from_secs(10), || {
        let info = stream.get_info();
        async move { info.await.map_err(|e| e.to_string()) }
    })
    .await;
    let new_leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
    assert!(
        new_leader.is_some() && new_leader.as_deref() != Some(leader.as_str()),
        "the leader after {leader}: {new_leader:?}"
    );

    // The killed node comes back holding the schedule it was never told
    // had fired; it catches up and nothing fires again.
    cluster.restart(victim);
    let state = (
        info.state.messages,
        info.state.first_sequence,
        info.state.last_sequence,
    );
    assert_eq!(state.0, 1, "{:?}", info.state);
    every_node_holds(&cluster, name, state).await;
    let again = fired_until(&due, SystemTime::now() + Duration::from_secs(1), 0).await;
    assert!(
        again.is_empty(),
        "fired again after the restart: {again:#?}"
    );
    assert_eq!(
        subject_counts(&survivor, name).await,
        BTreeMap::from([(format!("{ns}.gh.due.3"), 1)])
    );
}
