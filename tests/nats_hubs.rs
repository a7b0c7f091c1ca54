//! Three hub nodes (the real `govhub` binary) over a real three-node NATS
//! JetStream cluster (`storage.backend = "nats"`): they share the work,
//! keep each case's order at every department, lose nothing when a hub
//! node or a NATS node is killed, serve an adapter loaded through any of
//! them, and escalate an overdue case once.
//!
//! The NATS cluster is the one the test binary shares
//! ([`NatsCluster::shared`]); each test has its own `storage.nats_prefix`,
//! so its streams and buckets are its own. A test that kills a NATS node
//! starts its own cluster.

#[path = "support/nats.rs"]
mod nats;
mod support;

use nats::NatsCluster;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// Two departments, each a webhook adapter delivering to its own
/// recording server.
fn departments(police: &Receiver, fire: &Receiver) -> Vec<AdapterSpec> {
    let spec = |name: &str, r: &Receiver| {
        AdapterSpec::new(name, "webhook-adapter")
            .top("subscribe = [\"gov.incident.*\"]")
            .tables(&format!(
                "[limits]\nconcurrency = 8\n[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"http://{host}/events\"",
                host = r.host()
            ))
    };
    vec![spec("police-desk", police), spec("fire-desk", fire)]
}

/// Three hub folders sharing one deployment on `cluster`.
struct Nodes {
    /// Kept: each node's folder lives as long as the test.
    _dirs: Vec<HubDir>,
    hubs: Vec<Option<HubProcess>>,
}

impl Drop for Nodes {
    /// A failed test (or any, with `GOVHUB_TEST_KEEP_LOGS` set) leaves
    /// each node's log in `target/nats-hubs-logs/`.
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("GOVHUB_TEST_KEEP_LOGS").is_none() {
            return;
        }
        let dir = root().join("target/nats-hubs-logs");
        let _ = std::fs::create_dir_all(&dir);
        for (i, hub) in self.hubs.iter().enumerate() {
            if let Some(h) = hub {
                let _ = std::fs::write(dir.join(format!("node{i}.log")), h.log());
            }
        }
        eprintln!("the nodes' logs are in {}", dir.display());
    }
}

impl Nodes {
    fn start(cluster: &NatsCluster, prefix: &str, adapters: &[AdapterSpec], extra: &str) -> Nodes {
        Nodes::start_with_env(cluster, prefix, adapters, extra, &[])
    }

    fn start_with_env(
        cluster: &NatsCluster,
        prefix: &str,
        adapters: &[AdapterSpec],
        extra: &str,
        env: &[(&str, &str)],
    ) -> Nodes {
        let config = format!(
            "[storage]\nbackend = \"nats\"\nnats_url = \"{}\"\nnats_prefix = \"{prefix}\"\nnats_partitions = 16\nnats_ack_wait_ms = 6000\nnats_lease_ms = 1500\n\n[delivery]\nmax_attempts = 50\nbackoff_base_ms = 20\nbackoff_cap_ms = 200\n\n{extra}",
            cluster.urls()
        );
        let dirs: Vec<HubDir> = (0..3).map(|_| HubDir::new(adapters, &config)).collect();
        // One after the other: the first makes the streams and loads the
        // adapters, the others find them.
        let hubs = dirs.iter().map(|d| Some(d.start_with_env(env))).collect();
        Nodes { _dirs: dirs, hubs }
    }

    /// Stops every node (SIGKILL) and starts them again, one by one.
    fn restart_all(&mut self, env: &[(&str, &str)]) {
        for h in self.hubs.iter_mut() {
            if let Some(mut h) = h.take() {
                h.kill9();
            }
        }
        for (i, d) in self._dirs.iter().enumerate() {
            self.hubs[i] = Some(d.start_with_env(env));
        }
    }

    fn base(&self, i: usize) -> String {
        self.hubs[i].as_ref().expect("node running").base.clone()
    }

    fn hub(&self, i: usize) -> &HubProcess {
        self.hubs[i].as_ref().expect("node running")
    }
}

fn ids_by_case(received: &[Received]) -> BTreeMap<String, Vec<usize>> {
    let mut by_case: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for r in received {
        let Some(id) = r.header("ce-id") else {
            continue;
        };
        // ev-<case>-<n>
        let mut parts = id.rsplitn(2, '-');
        // A later round's numbers (`b<n>`) come after the first round's.
        let n = parts.next().unwrap();
        let n: usize = match n.strip_prefix('b') {
            Some(later) => 1_000_000 + later.parse::<usize>().unwrap(),
            None => n.parse().unwrap(),
        };
        let case = parts.next().unwrap().to_string();
        by_case.entry(case).or_default().push(n);
    }
    by_case
}

/// Every case's events arrived in the order they were sent: each number
/// after the one before it, a repeat (a delivery in flight at a kill)
/// only of a number already seen.
fn assert_in_order(department: &str, received: &[Received]) {
    for (case, ns) in ids_by_case(received) {
        let mut highest = None;
        for n in &ns {
            match highest {
                Some(h) if *n < h => {
                    // A repeat is fine only when it is a redelivery of one
                    // already delivered.
                    assert!(
                        ns.iter().filter(|m| *m == n).count() > 1,
                        "{department}: case {case} got event {n} after {h}: {ns:?}"
                    );
                }
                _ => highest = Some(*n),
            }
        }
    }
}

/// Sends `per_case` events of each of `cases` cases, round-robin over
/// the nodes, each case by one client in order (the next once the one
/// before is acknowledged), `clients` clients at once; the ids
/// acknowledged. `kill` runs once `kill_after` were acknowledged.
fn stream_events(
    nodes: &Arc<Mutex<Nodes>>,
    cases: usize,
    per_case: usize,
    clients: usize,
    kill_after: Option<(usize, Box<dyn FnOnce() + Send>)>,
) -> HashSet<String> {
    stream_events_with(nodes, cases, per_case, clients, kill_after, "")
}

fn stream_events_with(
    nodes: &Arc<Mutex<Nodes>>,
    cases: usize,
    per_case: usize,
    clients: usize,
    kill_after: Option<(usize, Box<dyn FnOnce() + Send>)>,
    tag: &str,
) -> HashSet<String> {
    let tag = tag.to_string();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let bases: Vec<String> = {
        let n = nodes.lock().unwrap();
        (0..3).map(|i| n.base(i)).collect()
    };
    let count = Arc::new(AtomicUsize::new(0));
    let (kill_at, kill) = match kill_after {
        Some((at, f)) => (at, Some(f)),
        None => (usize::MAX, None),
    };
    let kill = Arc::new(Mutex::new(kill));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (acked, bases, count, kill, tag) = (
                acked.clone(),
                bases.clone(),
                count.clone(),
                kill.clone(),
                tag.clone(),
            );
            std::thread::spawn(move || {
                let mut turn = c;
                for n in 0..per_case {
                    for case in (c..cases).step_by(clients) {
                        let id = format!("ev-YF{case:04}-{tag}{n}");
                        let event = cloudevent(&id, Some(&format!("YF{case:04}")), 64);
                        // Bounded: a node that is down is skipped, and the
                        // event is sent again to the next.
                        let mut sent = false;
                        for _ in 0..30 {
                            let base = &bases[turn % bases.len()];
                            turn += 1;
                            match send_event(base, &event) {
                                Some((202, _, _)) => {
                                    sent = true;
                                    break;
                                }
                                _ => std::thread::sleep(Duration::from_millis(100)),
                            }
                        }
                        assert!(sent, "event {id} was refused by every node 30 times");
                        acked.lock().unwrap().insert(id);
                        if count.fetch_add(1, Ordering::SeqCst) + 1 == kill_at {
                            if let Some(f) = kill.lock().unwrap().take() {
                                f();
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

/// [`stream_events`] with ids of another round (`ev-<case>-<tag><n>`).
fn stream_events_tagged(
    nodes: &Arc<Mutex<Nodes>>,
    cases: usize,
    per_case: usize,
    clients: usize,
    tag: &str,
) -> HashSet<String> {
    stream_events_with(nodes, cases, per_case, clients, None, tag)
}

fn delivered_by(hub: &HubProcess, adapter: &str) -> f64 {
    hub.metric(
        "govhub_deliveries_total",
        &[("adapter", adapter), ("outcome", "delivered")],
    )
}

#[test]
fn ten_thousand_events_over_three_nodes_reach_every_department_once_and_in_order() {
    const CASES: usize = 500;
    const PER_CASE: usize = 20;
    let cluster = NatsCluster::shared();
    let (police, fire) = (Receiver::start(), Receiver::start());
    let nodes = Arc::new(Mutex::new(Nodes::start(
        cluster,
        "spread",
        &departments(&police, &fire),
        "",
    )));
    let started = Instant::now();
    let acked = stream_events(&nodes, CASES, PER_CASE, 16, None);
    assert_eq!(acked.len(), CASES * PER_CASE);
    eprintln!(
        "{} events acknowledged in {:?}",
        acked.len(),
        started.elapsed()
    );
    police.wait_for_ids("police-desk", &acked, Duration::from_secs(300));
    fire.wait_for_ids("fire-desk", &acked, Duration::from_secs(300));
    eprintln!("every event delivered twice after {:?}", started.elapsed());
    for (name, r) in [("police-desk", &police), ("fire-desk", &fire)] {
        let got = r.received();
        assert_in_order(name, &got);
        // No node killed: each delivery made once, by one node.
        assert_eq!(got.len(), acked.len(), "{name}: deliveries made twice");
    }
    // The work was shared: every node delivered some of it.
    let n = nodes.lock().unwrap();
    let per_node: Vec<f64> = (0..3)
        .map(|i| delivered_by(n.hub(i), "police-desk") + delivered_by(n.hub(i), "fire-desk"))
        .collect();
    eprintln!("deliveries per node: {per_node:?}");
    assert_eq!(per_node.iter().sum::<f64>() as usize, 2 * acked.len());
    assert!(
        per_node.iter().all(|d| *d > 0.0),
        "a node delivered nothing: {per_node:?}"
    );
    // The cases were tracked once each, and every node reads them.
    for i in 0..3 {
        let (status, case) = n.hub(i).get_json("/v1/cases/YF0007");
        assert_eq!(status, 200, "node {i}: {case}");
        assert_eq!(case["id"], "YF0007");
    }
}

/// Of the cases that received anything after `since`, the longest time
/// one waited for its first arrival after it.
fn longest_silence_after(received: &[Received], since: Instant) -> Duration {
    let mut first_after: BTreeMap<String, Instant> = BTreeMap::new();
    for r in received.iter().filter(|r| r.at > since) {
        let Some(case) = r
            .header("ce-id")
            .and_then(|id| id.rsplit_once('-').map(|(case, _)| case))
        else {
            continue;
        };
        let first = first_after.entry(case.to_string()).or_insert(r.at);
        *first = (*first).min(r.at);
    }
    first_after
        .values()
        .map(|at| at.duration_since(since))
        .max()
        .unwrap_or_default()
}

#[test]
fn a_killed_hub_node_loses_nothing_and_its_work_is_taken_over() {
    const CASES: usize = 120;
    const PER_CASE: usize = 10;
    let cluster = NatsCluster::shared();
    let (police, fire) = (Receiver::start(), Receiver::start());
    let nodes = Arc::new(Mutex::new(Nodes::start(
        cluster,
        "killhub",
        &departments(&police, &fire),
        "",
    )));
    // Slow departments: the killed node holds deliveries in flight.
    police.delay(20);
    fire.delay(20);
    let killer = nodes.clone();
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let when = killed_at.clone();
    let acked = stream_events(
        &nodes,
        CASES,
        PER_CASE,
        8,
        Some((
            CASES * PER_CASE / 3,
            Box::new(move || {
                let mut n = killer.lock().unwrap();
                n.hubs[1].as_mut().unwrap().kill9();
                *when.lock().unwrap() = Some(Instant::now());
            }),
        )),
    );
    assert_eq!(acked.len(), CASES * PER_CASE);
    police.delay(0);
    fire.delay(0);
    police.wait_for_ids("police-desk", &acked, Duration::from_secs(120));
    fire.wait_for_ids("fire-desk", &acked, Duration::from_secs(120));
    let killed = killed_at.lock().unwrap().unwrap();
    eprintln!("everything delivered {:?} after the kill", killed.elapsed());
    for (name, r) in [("police-desk", &police), ("fire-desk", &fire)] {
        let got = r.received();
        // The killed node's partitions stand still until another node
        // takes them: their cases' next arrival after the kill is the
        // takeover. Its in-flight items come back after `ack_wait` (6 s);
        // ownership moves after the lease (1.5 s); room for a loaded CI.
        let takeover = longest_silence_after(&got, killed);
        eprintln!("{name}: every case went on within {takeover:?} of the kill");
        assert!(
            takeover <= Duration::from_millis(6_000 + 1_500 + 6_000),
            "{name}: a case waited {takeover:?} after the kill (ack_wait is 6 s)"
        );
        assert_in_order(name, &got);
        let repeats = got.len() - acked.len();
        // Repeats only of deliveries in flight at the kill: at most one
        // per partition and department.
        assert!(repeats <= 16, "{name}: {repeats} deliveries made twice");
    }
}

#[test]
fn a_duplicate_sent_to_two_nodes_is_routed_once() {
    let cluster = NatsCluster::shared();
    let (police, fire) = (Receiver::start(), Receiver::start());
    let nodes = Nodes::start(cluster, "dup", &departments(&police, &fire), "");
    let event = cloudevent("ev-dup-1", Some("YF-DUP"), 16);
    let (a, _, body_a) = send_batch(&nodes.base(0), std::slice::from_ref(&event));
    let (b, _, body_b) = send_batch(&nodes.base(2), &[event]);
    assert_eq!((a, b), (202, 202), "{body_a} {body_b}");
    assert!(body_a.contains("\"duplicate\":false"), "{body_a}");
    assert!(body_b.contains("\"duplicate\":true"), "{body_b}");
    police.wait_for(1, Duration::from_secs(30));
    fire.wait_for(1, Duration::from_secs(30));
    // Give a second delivery time to show up, bounded.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(police.received().len(), 1);
    assert_eq!(fire.received().len(), 1);
}

/// Seconds to accept, and to stay at the first escalation level, short
/// enough for a test.
const QUICK_DEADLINES: &str = r#"
[cases]
default_accept_s = 2
default_resolve_s = 600
escalation_s = [12, 3600]
check_interval_ms = 200

[[routes]]
name = "reports go to the police desk"
match = { type = "gov.incident.reported" }
to = ["police-desk"]
"#;

fn escalations(r: &Receiver) -> Vec<String> {
    r.received()
        .iter()
        .filter(|x| x.header("ce-type") == Some("gov.case.escalated"))
        .filter_map(|x| x.header("ce-id").map(str::to_string))
        .collect()
}

#[test]
fn an_overdue_case_escalates_once_although_three_nodes_watch_and_a_full_restart_keeps_it() {
    let cluster = NatsCluster::shared();
    let (police, watch) = (Receiver::start(), Receiver::start());
    let adapters = vec![
        AdapterSpec::new("police-desk", "webhook-adapter").tables(&format!(
            "[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"http://{host}/events\"",
            host = police.host()
        )),
        AdapterSpec::new("escalation-desk", "webhook-adapter")
            .top("subscribe = [\"gov.case.escalated\"]")
            .tables(&format!(
                "[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"http://{host}/events\"",
                host = watch.host()
            )),
    ];
    let mut nodes = Nodes::start(cluster, "deadline", &adapters, QUICK_DEADLINES);
    let opened = Instant::now();
    let (status, _, body) = send_batch(
        &nodes.base(1),
        &[cloudevent("ev-overdue-1", Some("YF-LATE-1"), 16)],
    );
    assert_eq!(status, 202, "{body}");
    police.wait_for(1, Duration::from_secs(30));
    // Nobody accepts it: past 2 s it goes to the community level, once.
    eventually(Duration::from_secs(30), || {
        match escalations(&watch).len() {
            0 => Err("no escalation".to_string()),
            _ => Ok(()),
        }
    });
    eprintln!("escalated {:?} after it was opened", opened.elapsed());
    for i in 0..3 {
        nodes
            .hub(i)
            .wait_until("/v1/cases/YF-LATE-1", Duration::from_secs(10), |c| {
                c["level"] == 1
            });
    }
    // A full restart: every node killed and started again. The level
    // stays, and the next level comes once, when its time comes.
    nodes.restart_all(&[]);
    for i in 0..3 {
        let (status, case) = nodes.hub(i).get_json("/v1/cases/YF-LATE-1");
        assert_eq!(status, 200, "{case}");
        assert_eq!(case["level"], 1, "node {i} after the restart: {case}");
    }
    eventually(Duration::from_secs(60), || {
        match escalations(&watch).len() {
            1 => Err("no second escalation".to_string()),
            _ => Ok(()),
        }
    });
    eprintln!("escalated again {:?} after it was opened", opened.elapsed());
    assert!(
        opened.elapsed() >= Duration::from_secs(12),
        "the second level came before its time"
    );
    // Time for any repeat to show up, bounded.
    std::thread::sleep(Duration::from_secs(2));
    let got = escalations(&watch);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(got.len(), 2, "escalations delivered: {got:?}");
    assert_eq!(unique.len(), 2, "one escalation per level: {got:?}");
    for i in 0..3 {
        nodes
            .hub(i)
            .wait_until("/v1/cases/YF-LATE-1", Duration::from_secs(10), |c| {
                c["level"] == 2
            });
    }
}

/// The admin token of the adapter test's nodes.
const TOKEN: &str = "cluster-admin-token";

fn cli(hub: &HubProcess, args: &[&str]) -> (bool, String, String) {
    govhub_with_env(
        args,
        &[("GOVHUB_URL", &hub.base), ("GOVHUB_ADMIN_TOKEN", TOKEN)],
    )
}

/// The version of `name` a node serves, from its admin API.
fn serving(hub: &HubProcess, name: &str) -> Option<String> {
    let (status, body) = get_with(
        &hub.url("/v1/adapters"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["adapters"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)
        .and_then(|a| a["describe"]["version"].as_str().map(str::to_string))
}

fn wait_serving(nodes: &Nodes, name: &str, version: &str) {
    for i in 0..3 {
        eventually(Duration::from_secs(30), || {
            match serving(nodes.hub(i), name).as_deref() {
                Some(v) if v == version => Ok(()),
                other => Err(format!("node {i} serves {other:?}, not {version}")),
            }
        });
    }
}

/// Sends `n` events of different cases through the nodes in turn and
/// returns the marks their deliveries carried.
fn marks_of(nodes: &Nodes, receiver: &Receiver, tag: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let (status, _, body) = send_batch(
            &nodes.base(i % 3),
            &[cloudevent(id, Some(&format!("YF-{tag}-{i}")), 16)],
        );
        assert_eq!(status, 202, "{body}");
    }
    eventually(Duration::from_secs(60), || {
        let got: Vec<(String, String)> = receiver
            .received()
            .iter()
            .filter_map(|r| {
                Some((
                    r.header("ce-id")?.to_string(),
                    r.header("x-govhub-mark")?.to_string(),
                ))
            })
            .filter(|(id, _)| id.starts_with(&format!("{tag}-")))
            .collect();
        match got.len() >= n {
            true => Ok(got.into_iter().map(|(_, m)| m).collect()),
            false => Err(format!("{} of {n} {tag} events delivered", got.len())),
        }
    })
}

#[test]
fn an_adapter_loaded_through_one_node_serves_everywhere_and_a_bad_signature_nowhere() {
    let keys = tempfile::tempdir().unwrap();
    let (key, other) = (keys.path().join("team.key"), keys.path().join("other.key"));
    for k in [&key, &other] {
        let (ok, out, err) = govhub(&["adapter", "keygen", "--out", k.to_str().unwrap()]);
        assert!(ok, "{out}{err}");
    }
    let public = std::fs::read_to_string(keys.path().join("team.key.pub")).unwrap();
    let sign = |module: &std::path::Path, key: &std::path::Path| {
        let (ok, out, err) = govhub(&[
            "adapter",
            "sign",
            module.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]);
        assert!(ok, "{out}{err}");
    };
    let receiver = Receiver::start();
    let marker = |crate_name: &str| {
        AdapterSpec::new("marker", crate_name)
            .top("subscribe = [\"gov.incident.*\"]")
            .tables(&format!(
                "[limits]\nconcurrency = 4\n[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"http://{host}/events\"",
                host = receiver.host()
            ))
    };
    // v1 signed in the folder of every node, which all require signatures.
    let signed_v1 = tempfile::tempdir().unwrap();
    install(signed_v1.path(), &marker("fixture-marker-v1"));
    sign(&signed_v1.path().join("marker.wasm"), &key);
    let signing = format!(
        "[signing]\nrequire_signatures = true\ntrusted_keys = [\"{}\"]\n",
        public.trim()
    );
    let env = [("GOVHUB_ADMIN_TOKEN", TOKEN)];
    let cluster = NatsCluster::shared();
    let nodes = Nodes::start_with_env(cluster, "registry", &[], &signing, &env);
    // Each node's folder gets the signed v1 (the same files): the first
    // node loads it, the others find it serving.
    for dir in &nodes._dirs {
        let folder = dir.dir.path().join("adapters.d");
        std::fs::create_dir_all(&folder).unwrap();
        for f in ["marker.toml", "marker.wasm", "marker.wasm.sig"] {
            std::fs::copy(signed_v1.path().join(f), folder.join(f)).unwrap();
        }
    }
    let nodes = {
        let mut nodes = nodes;
        nodes.restart_all(&env);
        nodes
    };
    wait_serving(&nodes, "marker", "1.0.0");
    assert!(marks_of(&nodes, &receiver, "one", 12)
        .iter()
        .all(|m| m == "v1"));

    // v2, signed, loaded through node 0: every node serves it.
    let staging = tempfile::tempdir().unwrap();
    install(staging.path(), &marker("fixture-marker-v2"));
    let v2 = staging.path().join("marker.toml");
    sign(&staging.path().join("marker.wasm"), &key);
    let (ok, out, err) = cli(nodes.hub(0), &["adapters", "load", v2.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    wait_serving(&nodes, "marker", "2.0.0");
    let marks = marks_of(&nodes, &receiver, "two", 24);
    assert!(marks.iter().all(|m| m == "v2"), "{marks:?}");

    // Rolled back through node 2: every node serves v1 again.
    let (ok, out, err) = cli(nodes.hub(2), &["adapters", "rollback", "marker"]);
    assert!(ok, "{out}{err}");
    wait_serving(&nodes, "marker", "1.0.0");
    let marks = marks_of(&nodes, &receiver, "three", 24);
    assert!(marks.iter().all(|m| m == "v1"), "{marks:?}");

    // Signed by a key nobody trusts: refused through every node, and the
    // version serving stays.
    sign(&staging.path().join("marker.wasm"), &other);
    for i in 0..3 {
        let (ok, _, err) = cli(nodes.hub(i), &["adapters", "load", v2.to_str().unwrap()]);
        assert!(!ok && err.contains("does not verify"), "node {i}: {err}");
    }
    std::thread::sleep(Duration::from_millis(500));
    wait_serving(&nodes, "marker", "1.0.0");
}

#[test]
fn a_killed_nats_node_stops_neither_ingest_nor_delivery_and_misses_nothing_after() {
    const CASES: usize = 60;
    const PER_CASE: usize = 10;
    let mut cluster = NatsCluster::start(3);
    let (police, fire) = (Receiver::start(), Receiver::start());
    let nodes = Arc::new(Mutex::new(Nodes::start(
        &cluster,
        "killnats",
        &departments(&police, &fire),
        "",
    )));
    let first = stream_events(&nodes, CASES, PER_CASE / 2, 6, None);
    cluster.kill(1);
    let killed = Instant::now();
    // Ingest and delivery go on over the two left.
    let second = stream_events_tagged(&nodes, CASES, PER_CASE / 2, 6, "b");
    eprintln!("{} events acknowledged with a NATS node down", second.len());
    let acked: HashSet<String> = first.union(&second).cloned().collect();
    police.wait_for_ids("police-desk", &acked, Duration::from_secs(120));
    fire.wait_for_ids("fire-desk", &acked, Duration::from_secs(120));
    eprintln!(
        "everything delivered {:?} after the NATS node died",
        killed.elapsed()
    );
    for (name, r) in [("police-desk", &police), ("fire-desk", &fire)] {
        assert_in_order(name, &r.received());
    }
    // It comes back and catches up: its copy of the stream ends where the
    // others' do.
    cluster.restart(1);
    cluster.wait_ready(1, nats::READY_TIMEOUT);
    let stream = "KILLNATS";
    let last = |i: usize| -> Result<u64, String> {
        let jsz = cluster.monitor(i, "/jsz?streams=true")?;
        jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == stream)
            .and_then(|s| s["state"]["last_seq"].as_u64())
            .ok_or_else(|| format!("node {i} has no {stream} stream yet"))
    };
    eventually(Duration::from_secs(60), || {
        let (a, b, c) = (last(0)?, last(1)?, last(2)?);
        match a == b && b == c {
            true => Ok(()),
            false => Err(format!("last sequences differ: {a} {b} {c}")),
        }
    });
}

/// The benchmark of BENCHMARKS.md section 9a (not part of the suite):
/// the end-to-end rate (accepted through `POST /v1/events`, delivered to
/// a department) with one hub node and with three, over the same
/// three-node NATS cluster, alternating, each round with its own streams.
///
/// `cargo test --release -p govhub --test nats_hubs -- --ignored --nocapture`
/// (`NATS_E2E_EVENTS`, `NATS_E2E_CLIENTS`, `NATS_E2E_ROUNDS`).
#[test]
#[ignore]
fn end_to_end_rate_with_one_and_with_three_hub_nodes() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (events, clients, rounds) = (
        env("NATS_E2E_EVENTS", 3000),
        env("NATS_E2E_CLIENTS", 32),
        env("NATS_E2E_ROUNDS", 2),
    );
    let cluster = NatsCluster::shared();
    println!("| round | hub nodes | events | accepted/s | end to end/s | delivered by node |");
    println!("|---|---|---|---|---|---|");
    for round in 1..=rounds {
        for n in [1usize, 3] {
            let department = Receiver::start();
            let spec = AdapterSpec::new("police-desk", "webhook-adapter")
                .top("subscribe = [\"gov.incident.*\"]")
                .tables(&format!(
                    "[limits]\nconcurrency = 16\n[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"http://{host}/events\"",
                    host = department.host()
                ));
            let mut nodes = Nodes::start(cluster, &format!("bench{round}n{n}"), &[spec], "");
            // The nodes not in this run are stopped.
            for i in n..3 {
                if let Some(mut h) = nodes.hubs[i].take() {
                    h.kill9();
                }
            }
            let bases: Vec<String> = (0..n).map(|i| nodes.base(i)).collect();
            let next = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let threads: Vec<_> = (0..clients)
                .map(|c| {
                    let (bases, next) = (bases.clone(), next.clone());
                    std::thread::spawn(move || loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= events {
                            return;
                        }
                        let event = cloudevent(
                            &format!("bench-{i}"),
                            Some(&format!("YF-B{}", i % 500)),
                            256,
                        );
                        let base = &bases[(i + c) % bases.len()];
                        let mut tries = 0;
                        while !matches!(send_event(base, &event), Some((202, _, _))) {
                            tries += 1;
                            assert!(tries < 50, "event {i} refused 50 times");
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let accepted = started.elapsed();
            department.wait_for(events, Duration::from_secs(600));
            let delivered = started.elapsed();
            let by_node: Vec<f64> = (0..n)
                .map(|i| delivered_by(nodes.hub(i), "police-desk"))
                .collect();
            println!(
                "| {round} | {n} | {events} | {:.0} | {:.0} | {by_node:?} |",
                events as f64 / accepted.as_secs_f64(),
                events as f64 / delivered.as_secs_f64(),
            );
        }
    }
}

#[test]
fn a_full_department_queue_is_counted_over_the_cluster_and_every_node_sheds() {
    let cluster = NatsCluster::shared();
    let (police, fire) = (Receiver::start(), Receiver::start());
    // The police desk is down: its deliveries pile up, retried.
    police.answer(503);
    let nodes = Nodes::start_with_env(
        cluster,
        "backlog",
        &departments(&police, &fire),
        "",
        &[("GOVHUB__DELIVERY__QUEUE_DEPTH", "30")],
    );
    let mut accepted = HashSet::new();
    let mut refused = None;
    for i in 0..400 {
        let id = format!("ev-full-{i}");
        let event = cloudevent(&id, Some(&format!("YF-FULL-{i}")), 16);
        match send_event(&nodes.base(i % 3), &event) {
            Some((202, _, _)) => {
                accepted.insert(id);
            }
            Some((503, _, body)) => {
                refused = Some((i, body));
                break;
            }
            other => panic!("event {i}: {other:?}"),
        }
    }
    let (at, body) = refused.expect("400 events and no node refused any");
    eprintln!("refused after {at} events: {body}");
    assert!(at >= 30, "refused before the queue was full: {at}");
    assert!(body.contains("police-desk"), "{body}");
    // Every node counts the same backlog, whichever accepted the events
    // (each counts twice a second).
    for i in 0..3 {
        let mut tries = 0;
        eventually(Duration::from_secs(5), || {
            tries += 1;
            let id = format!("ev-full-node{i}-{tries}");
            let event = cloudevent(&id, Some("YF-FULL-X"), 16);
            match send_event(&nodes.base(i), &event) {
                Some((503, _, _)) => Ok(()),
                Some((202, _, _)) => {
                    accepted.insert(id);
                    Err(format!("node {i} still accepts"))
                }
                other => Err(format!("node {i}: {other:?}")),
            }
        });
    }
    // The department comes back: everything accepted is delivered, and
    // the nodes accept again.
    police.answer(200);
    police.wait_for_ids("police-desk", &accepted, Duration::from_secs(120));
    eventually(Duration::from_secs(30), || {
        let event = cloudevent("ev-full-after", Some("YF-FULL-Y"), 16);
        match send_event(&nodes.base(1), &event) {
            Some((202, _, _)) => Ok(()),
            other => Err(format!("still refused: {other:?}")),
        }
    });
}

#[test]
fn every_node_pseudonymizes_alike_and_the_flows_are_read_and_verified_over_the_cluster() {
    const CASES: usize = 24;
    let cluster = NatsCluster::shared();
    let (police, fire) = (Receiver::start(), Receiver::start());
    let policy = r#"
[[classification]]
type = "gov.incident.*"
grade = "general"
fields = { "/reporter/name" = "pi.name", "/reporter/phone" = "pi.phone" }

[governance.grants.police-desk]
"pi.name" = "clear"
"pi.phone" = "pseudonymize"

[governance.grants.fire-desk]
"pi.phone" = "pseudonymize"
"#;
    let nodes = Nodes::start(cluster, "policy", &departments(&police, &fire), policy);
    // One reporter, writing their number two ways, in cases spread over
    // the partitions (so over the nodes that own them).
    for i in 0..CASES {
        let mut event = cloudevent(&format!("pp-{i}"), Some(&format!("YF-PP-{i:02}")), 8);
        let phone = if i % 2 == 0 {
            "+86 138 0013 8000"
        } else {
            "13800138000"
        };
        event["data"] = serde_json::json!({ "reporter": { "name": "张三", "phone": phone } });
        let (status, _, body) = send_event(&nodes.base(i % 3), &event).expect("sent");
        assert_eq!(status, 202, "{body}");
    }
    let pseudonyms = |name: &str, r: &Receiver| -> HashSet<String> {
        let got = r.wait_for(CASES, Duration::from_secs(60));
        got.iter()
            .map(|x| {
                let body: serde_json::Value = serde_json::from_slice(&x.body).unwrap();
                assert!(!body.to_string().contains("8000"), "{name}: {body}");
                body["reporter"]["phone"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let (p, f) = (pseudonyms("police", &police), pseudonyms("fire", &fire));
    let delivering = (0..3)
        .filter(|i| delivered_by(nodes.hub(*i), "police-desk") > 0.0)
        .count();
    eprintln!("{delivering} nodes delivered to the police; pseudonyms {p:?} and {f:?}");
    assert!(delivering >= 2, "the deliveries were made by one node only");
    assert_eq!(p.len(), 1, "the police got one person as several: {p:?}");
    assert_eq!(f.len(), 1, "the fire desk got one person as several: {f:?}");
    assert_ne!(p, f, "two departments could join their records");
    // The flow records, read through the CLI as a reader of the cluster.
    let config = nodes._dirs[2].config();
    let config = config.to_str().unwrap();
    let (ok, out, err) = govhub_with_env(
        &["audit", "flows", "--config", config, "--case", "YF-PP-03"],
        &[],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "one flow per department: {out}");
    for department in ["police-desk", "fire-desk"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(department) && l.contains("/reporter/phone=pseudonymize")),
            "{department}: {out}"
        );
    }
    let (ok, out, err) = govhub_with_env(&["audit", "verify", "--config", config], &[]);
    assert!(ok && out.contains("chain intact"), "{out}{err}");
    // The reader took no share of the work: what comes next is
    // delivered at once, not after a reader's lease runs out.
    let mut event = cloudevent("pp-after", Some("YF-PP-03"), 8);
    event["data"] = serde_json::json!({ "reporter": { "phone": "13800138000" } });
    let (status, _, body) = send_event(&nodes.base(0), &event).expect("sent");
    assert_eq!(status, 202, "{body}");
    police.wait_for(CASES + 1, Duration::from_secs(5));
    fire.wait_for(CASES + 1, Duration::from_secs(5));
}

/// The police desk's delivery of `event` once it is dead: its id.
fn dead_delivery(hub: &HubProcess, event: &str) -> i64 {
    eventually(Duration::from_secs(30), || {
        let (_, e) = hub.get_json(&format!("/v1/events/{event}"));
        e["deliveries"]
            .as_array()
            .and_then(|d| {
                d.iter()
                    .find(|d| d["target"] == "police-desk" && d["status"] == "dead")
            })
            .and_then(|d| d["id"].as_i64())
            .ok_or(format!("not dead yet: {e}"))
    })
}

#[test]
fn a_replay_whose_node_died_between_its_two_writes_is_still_delivered() {
    let cluster = NatsCluster::shared();
    let (police, fire) = (Receiver::start(), Receiver::start());
    police.answer(500);
    let nodes = Nodes::start_with_env(
        cluster,
        "replaycrash",
        &departments(&police, &fire),
        "",
        &[("GOVHUB__DELIVERY__MAX_ATTEMPTS", "2")],
    );
    let (status, _, body) =
        send_event(&nodes.base(0), &cloudevent("rc-1", Some("YF-RC-1"), 8)).expect("sent");
    assert_eq!(status, 202, "{body}");
    let id = dead_delivery(nodes.hub(1), "rc-1");
    police.answer(200);
    // A replay writes its work item, then the delivery's state: here the
    // node dies between the two. The item is what it would publish.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let urls: Vec<async_nats::ServerAddr> = cluster
            .urls()
            .split(',')
            .map(|u| u.parse().unwrap())
            .collect();
        let js = async_nats::jetstream::new(async_nats::connect(urls).await.unwrap());
        let state = js
            .get_key_value("replaycrash-deliveries")
            .await
            .unwrap()
            .entry(id.to_string())
            .await
            .unwrap()
            .expect("the delivery's state");
        let stream = js.get_stream("REPLAYCRASH").await.unwrap();
        let original = stream.get_raw_message(id as u64).await.unwrap();
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in original.headers.iter() {
            if !AsRef::<str>::as_ref(name).starts_with("Nats-") {
                headers.insert(name.clone(), values[0].clone());
            }
        }
        let offset: i64 = headers
            .get("Govhub-Offset")
            .map(|v| v.as_str().parse().unwrap())
            .unwrap_or(0);
        headers.insert("Govhub-Event", (id - offset).to_string().as_str());
        headers.insert("Govhub-Delivery", id.to_string().as_str());
        headers.insert("Govhub-Replay-Of", state.revision.to_string().as_str());
        js.publish_with_headers(original.subject.to_string(), headers, bytes::Bytes::new())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let got = police.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].header("ce-id"), Some("rc-1"));
    nodes
        .hub(2)
        .wait_until("/v1/events/rc-1", Duration::from_secs(10), |e| {
            e["deliveries"].as_array().is_some_and(|d| {
                d.iter()
                    .any(|d| d["target"] == "police-desk" && d["status"] == "delivered")
            })
        });
}
