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

impl Nodes {
    fn start(cluster: &NatsCluster, prefix: &str, adapters: &[AdapterSpec], extra: &str) -> Nodes {
        let config = format!(
            "[storage]\nbackend = \"nats\"\nnats_url = \"{}\"\nnats_prefix = \"{prefix}\"\nnats_partitions = 8\nnats_ack_wait_ms = 6000\nnats_lease_ms = 1500\n\n[delivery]\nmax_attempts = 50\nbackoff_base_ms = 20\nbackoff_cap_ms = 200\n\n{extra}",
            cluster.urls()
        );
        let dirs: Vec<HubDir> = (0..3).map(|_| HubDir::new(adapters, &config)).collect();
        // One after the other: the first makes the streams and loads the
        // adapters, the others find them.
        let hubs = dirs.iter().map(|d| Some(d.start())).collect();
        Nodes { _dirs: dirs, hubs }
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
        let n: usize = parts.next().unwrap().parse().unwrap();
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
            let (acked, bases, count, kill) =
                (acked.clone(), bases.clone(), count.clone(), kill.clone());
            std::thread::spawn(move || {
                let mut turn = c;
                for n in 0..per_case {
                    for case in (c..cases).step_by(clients) {
                        let id = format!("ev-YF{case:04}-{n}");
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

fn wait_all(department: &str, r: &Receiver, want: &HashSet<String>, timeout: Duration) {
    eventually(timeout, || {
        let got: HashSet<String> = r
            .received()
            .iter()
            .filter_map(|x| x.header("ce-id").map(str::to_string))
            .collect();
        match want.iter().filter(|id| !got.contains(*id)).count() {
            0 => Ok(()),
            missing => Err(format!(
                "{department}: {missing} of {} acknowledged events never arrived",
                want.len()
            )),
        }
    })
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
    wait_all("police-desk", &police, &acked, Duration::from_secs(300));
    wait_all("fire-desk", &fire, &acked, Duration::from_secs(300));
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
    wait_all("police-desk", &police, &acked, Duration::from_secs(120));
    wait_all("fire-desk", &fire, &acked, Duration::from_secs(120));
    let taken_over = killed_at.lock().unwrap().unwrap().elapsed();
    eprintln!("everything delivered {taken_over:?} after the kill");
    for (name, r) in [("police-desk", &police), ("fire-desk", &fire)] {
        let got = r.received();
        assert_in_order(name, &got);
        let repeats = got.len() - acked.len();
        // Repeats only of deliveries in flight at the kill: at most one
        // per partition and department.
        assert!(repeats <= 8, "{name}: {repeats} deliveries made twice");
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
