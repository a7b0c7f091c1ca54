//! The journal's NATS JetStream backend (hub/src/journal/nats/), part by
//! part, on a real three-node cluster (tests/support/nats.rs). Each test
//! has its own prefix, so its streams and buckets are its own.
//!
//! So far, the event log:
//! - connecting checks the server and pins the partition count;
//! - an event and its work items are stored together, with consecutive
//!   sequences: the deliveries' ids, read back by sequence and identity;
//! - the same (source, id) sent through two nodes at once, and again
//!   after the duplicate window, is stored once;
//! - a kill -9 of the stream leader in the middle of a run loses no
//!   acknowledged event, and the killed node catches up.
//!
//! The audit chain: one chain however many nodes append, queried by actor,
//! action and case, on a stream nobody may purge.
//!
//! The adapter registry: a load through one node serves on the others, a
//! rollback on a third takes effect everywhere, two nodes changing one
//! adapter at once cannot both win; modules stored once, read anywhere.
//!
//! And the small tables (meta values, adapters' cursors and state): read
//! at once from a copy every node keeps, filled before the start returns
//! and following what the other nodes write.

#[path = "support/nats.rs"]
mod nats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use govhub::journal::nats::{NatsConfig, NatsJournal};
use govhub::journal::{
    AdapterState, AuditLog, AuditQuery, DeliveryLog, EventLog, Meta, NewEvent, Registry,
    VersionRecord,
};
use govhub::router::Target;
use govhub_sdk::{cloudevents, Event, Severity};
use nats::NatsCluster;

fn config(cluster: &NatsCluster, prefix: &str) -> NatsConfig {
    NatsConfig {
        prefix: prefix.into(),
        partitions: 8,
        ..NatsConfig::at(&cluster.urls())
    }
}

/// An event as the ingress hands it to the journal.
fn new_event(source: &str, id: &str, case: Option<&str>, targets: &[&str]) -> NewEvent {
    let mut e = Event::new("gov.incident.reported")
        .with_id(id)
        .with_source(source)
        .with_severity(Severity::Major)
        .with_json(&serde_json::json!({ "summary": format!("event {id}") }));
    e.caseid = case.map(str::to_string);
    NewEvent {
        encoded: cloudevents::to_string(&e).into(),
        event: Arc::new(e),
        origin: Some("police".into()),
        targets: targets
            .iter()
            .map(|t| Target {
                adapter: t.to_string(),
                rule: format!("route:{t}"),
            })
            .collect(),
        received_ms: 1_754_028_295_000,
    }
}

/// How many messages the stream holds per subject.
async fn subject_counts(journal: &NatsJournal) -> BTreeMap<String, u64> {
    let name = journal.config().stream_name();
    let stream = journal.jetstream().get_stream(&name).await.unwrap();
    let mut subjects = stream.info_with_subjects(">").await.unwrap();
    let mut counts = BTreeMap::new();
    use futures_util::StreamExt;
    while let Some(s) = subjects.next().await {
        let (subject, n) = s.unwrap();
        counts.insert(subject, n as u64);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_checks_the_server_and_pins_the_partition_count() {
    let cluster = NatsCluster::shared();
    let journal = NatsJournal::connect(&config(cluster, "pin"))
        .await
        .expect("connecting");
    assert!(
        govhub::journal::nats::version(&journal.server_version())
            >= govhub::journal::nats::MINIMUM_SERVER
    );
    let info = journal
        .jetstream()
        .get_stream("PIN")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    assert!(info.config.allow_atomic_publish && info.config.allow_message_schedules);
    assert_eq!(
        info.config.subjects,
        ["pin.ev.>", "pin.wk.>", "pin.sched.>", "pin.due.>"]
    );

    // A second node with the same count joins; one with another is refused,
    // naming the key and the count to set back.
    NatsJournal::connect(&config(cluster, "pin"))
        .await
        .expect("a second node with the same partitions");
    let refused = NatsJournal::connect(&NatsConfig {
        partitions: 4,
        ..config(cluster, "pin")
    })
    .await
    .err()
    .expect("another partition count is refused")
    .to_string();
    assert!(
        refused.contains("storage.nats_partitions") && refused.contains("set it back to 8"),
        "{refused}"
    );

    // A URL that is no NATS URL is named.
    let bad = NatsJournal::connect(&NatsConfig::at("nats://127.0.0.1:notaport"))
        .await
        .err()
        .expect("a bad url is refused")
        .to_string();
    assert!(bad.contains("storage.nats_url"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_and_its_work_items_are_stored_together_and_read_back() {
    let cluster = NatsCluster::shared();
    let journal = NatsJournal::connect(&config(cluster, "store"))
        .await
        .unwrap();
    let appended = journal
        .append(vec![
            new_event(
                "urn:govhub:police",
                "e-1",
                Some("case-7"),
                &["police", "fire"],
            ),
            new_event("urn:govhub:traffic", "e-2", None, &[]),
            new_event("urn:govhub:traffic", "e-1", Some("case-8"), &["city"]),
        ])
        .await
        .expect("appending");
    assert_eq!(appended.len(), 3);
    assert!(appended.iter().all(|a| !a.duplicate));
    // The deliveries' ids follow their event's sequence.
    for a in &appended {
        for (k, d) in a.deliveries.iter().enumerate() {
            assert_eq!((d.id, d.event_seq), (a.seq + k as i64 + 1, a.seq), "{a:?}");
            assert_eq!(d.attempts, 0);
            assert_eq!(d.priority, Severity::Major.rank());
        }
    }
    let first = &appended[0];
    assert_eq!(
        first
            .deliveries
            .iter()
            .map(|d| (d.target.as_str(), d.order_key.as_str()))
            .collect::<Vec<_>>(),
        [("police", "case-7"), ("fire", "case-7")]
    );
    assert!(appended[1].deliveries.is_empty());

    // Read back by sequence: the event; a work item's sequence is none.
    let e = journal.event_by_seq(first.seq).await.unwrap().unwrap();
    assert_eq!(
        (e.id.as_str(), e.caseid.as_deref()),
        ("e-1", Some("case-7"))
    );
    assert!(journal
        .event_by_seq(first.deliveries[0].id)
        .await
        .unwrap()
        .is_none());
    assert!(journal.event_by_seq(1 << 40).await.unwrap().is_none());

    // By identity, with its deliveries (pending: nothing recorded yet).
    let stored = journal
        .events("e-1", Some("urn:govhub:police"))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    let s = &stored[0];
    assert_eq!(s.seq, first.seq);
    assert_eq!(s.origin.as_deref(), Some("police"));
    assert_eq!(s.received_at, "2025-08-01T06:04:55Z");
    assert_eq!(
        s.deliveries
            .iter()
            .map(|d| (d.id, d.target.as_str(), d.rule.as_str(), d.status.as_str()))
            .collect::<Vec<_>>(),
        [
            (first.seq + 1, "police", "route:police", "pending"),
            (first.seq + 2, "fire", "route:fire", "pending")
        ]
    );
    // By id alone: both sources' e-1, in order.
    let both = journal.events("e-1", None).await.unwrap();
    assert_eq!(
        both.iter()
            .map(|s| (s.seq, s.event.source.as_str()))
            .collect::<Vec<_>>(),
        [
            (appended[0].seq, "urn:govhub:police"),
            (appended[2].seq, "urn:govhub:traffic")
        ]
    );
    assert!(journal.events("e-404", None).await.unwrap().is_empty());
    assert!(journal
        .events("e-1", Some("urn:govhub:fire"))
        .await
        .unwrap()
        .is_empty());

    // On the wire: the event on its case's partition, a work item per
    // target on the same partition, nothing else.
    let counts = subject_counts(&journal).await;
    assert_eq!(counts.values().sum::<u64>(), 6, "{counts:?}");
    let p = govhub::journal::nats::partition("case-7", 8);
    assert_eq!(
        counts.get(&format!("store.wk.police.{p}")),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get(&format!("store.wk.fire.{p}")),
        Some(&1),
        "{counts:?}"
    );
    assert!(
        counts
            .keys()
            .filter(|s| s.starts_with(&format!("store.ev.{p}.")))
            .count()
            >= 1,
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_through_two_nodes_is_stored_once_even_after_the_duplicate_window() {
    let cluster = NatsCluster::shared();
    let through = |i: usize| NatsConfig {
        duplicate_window: Duration::from_secs(1),
        ..NatsConfig {
            url: cluster.url(i),
            ..config(cluster, "dup")
        }
    };
    let a = NatsJournal::connect(&through(0)).await.unwrap();
    let b = NatsJournal::connect(&through(1)).await.unwrap();

    // 50 events, each sent through both nodes at once.
    let mut stored = BTreeMap::new();
    for i in 0..50 {
        let id = format!("race-{i}");
        let e = || {
            new_event(
                "urn:govhub:police",
                &id,
                Some(&format!("case-{i}")),
                &["police"],
            )
        };
        let (ra, rb) = tokio::join!(a.append(vec![e()]), b.append(vec![e()]));
        let (ra, rb) = (ra.unwrap().remove(0), rb.unwrap().remove(0));
        assert_eq!(ra.seq, rb.seq, "{id}: both name the one stored");
        assert!(
            ra.duplicate != rb.duplicate,
            "{id}: exactly one stored it: {ra:?} {rb:?}"
        );
        let winner = if ra.duplicate { &rb } else { &ra };
        assert_eq!(winner.deliveries.len(), 1);
        stored.insert(id, ra.seq);
    }

    // Past the window the message id is forgotten; the identity check over
    // every partition still finds it, even for another case.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = b
        .append(vec![new_event(
            "urn:govhub:police",
            "race-7",
            Some("case-moved"),
            &["police"],
        )])
        .await
        .unwrap()
        .remove(0);
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.seq, stored["race-7"]);
    assert!(again.deliveries.is_empty());

    let counts = subject_counts(&a).await;
    let events = counts.keys().filter(|s| s.starts_with("dup.ev.")).count();
    let work: u64 = counts
        .iter()
        .filter(|(s, _)| s.starts_with("dup.wk."))
        .map(|(_, n)| n)
        .sum();
    assert_eq!((events, work), (50, 50), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_the_stream_leader_loses_no_acknowledged_event() {
    // Its own cluster: this test kills a node.
    let mut cluster = NatsCluster::start(3);
    let journal = NatsJournal::connect(&NatsConfig {
        request_timeout: Duration::from_secs(2),
        ..config(&cluster, "kill")
    })
    .await
    .unwrap();
    const EVENTS: usize = 400;
    const BATCH: usize = 10;
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    let mut refused = 0;
    let mut killed = None;
    let started = Instant::now();
    let mut next = 0;
    while next < EVENTS {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "stuck at {next}"
        );
        if next == EVENTS / 2 && killed.is_none() {
            let mut stream = journal.jetstream().get_stream("KILL").await.unwrap();
            let leader = stream
                .info()
                .await
                .unwrap()
                .cluster
                .clone()
                .unwrap()
                .leader
                .unwrap();
            let victim = cluster.index_of(&leader);
            cluster.kill(victim);
            killed = Some(victim);
        }
        let ids: Vec<String> = (next..(next + BATCH).min(EVENTS))
            .map(|i| format!("k-{i}"))
            .collect();
        let batch = ids
            .iter()
            .enumerate()
            .map(|(j, id)| {
                new_event(
                    "urn:govhub:fire",
                    id,
                    Some(&format!("case-{}", j % 3)),
                    &["fire", "police"],
                )
            })
            .collect();
        match journal.append(batch).await {
            Ok(appended) => {
                for (id, a) in ids.iter().zip(appended) {
                    acked.insert(id.clone(), a.seq);
                }
                next += BATCH;
            }
            // Refused while the cluster elects a new leader: a client
            // sends the same events again (the duplicates are found).
            Err(e) => {
                refused += 1;
                eprintln!("append refused ({e}); sending again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!(
        "{EVENTS} events acknowledged in {:?}, {refused} appends refused around the kill",
        started.elapsed()
    );
    assert_eq!(acked.len(), EVENTS);

    // Every acknowledged event is there once, where its ack said.
    for (id, seq) in &acked {
        let stored = journal.events(id, Some("urn:govhub:fire")).await.unwrap();
        assert_eq!(stored.len(), 1, "{id}");
        assert_eq!(stored[0].seq, *seq, "{id}");
        assert_eq!(stored[0].deliveries.len(), 2, "{id}");
    }
    let counts = subject_counts(&journal).await;
    assert_eq!(
        counts.keys().filter(|s| s.starts_with("kill.ev.")).count(),
        EVENTS
    );

    // Another node leads the stream now; the killed one comes back and
    // holds the same.
    let victim = killed.unwrap();
    let mut stream = journal.jetstream().get_stream("KILL").await.unwrap();
    let info = stream.info().await.unwrap().clone();
    let leader = info.cluster.and_then(|c| c.leader).unwrap_or_default();
    assert_ne!(
        leader,
        cluster.server_name(victim),
        "the killed node still leads"
    );
    cluster.restart(victim);
    let state = info.state;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jsz = cluster
            .monitor(victim, "/jsz?streams=true")
            .unwrap_or_default();
        let local = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == "KILL")
            .map(|s| {
                (
                    s["state"]["messages"].as_u64(),
                    s["state"]["last_seq"].as_u64(),
                )
            });
        if local == Some((Some(state.messages), Some(state.last_sequence))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node holds {local:?}, not {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 20 ms for up to 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_cursors_and_adapter_state_are_read_at_once_and_shared_by_every_node() {
    let cluster = NatsCluster::shared();
    let through = |i: usize| NatsConfig {
        url: cluster.url(i),
        ..config(cluster, "tables")
    };
    let a = NatsJournal::connect(&through(0)).await.unwrap();
    let b = NatsJournal::connect(&through(1)).await.unwrap();
    assert_eq!(a.meta("clock_ms").unwrap(), None);

    // Meta: the writer reads it back at once, the other node soon.
    a.set_meta("clock_ms", "1754028295000").await.unwrap();
    assert_eq!(
        a.meta("clock_ms").unwrap().as_deref(),
        Some("1754028295000")
    );
    eventually("b sees the clock", || {
        b.meta("clock_ms").unwrap().as_deref() == Some("1754028295000")
    })
    .await;
    b.set_meta("clock_ms", "1754031895000").await.unwrap();
    eventually("a sees b's clock", || {
        a.meta("clock_ms").unwrap().as_deref() == Some("1754031895000")
    })
    .await;
    // A key that is no bucket key is kept all the same.
    a.set_meta("policy of 盈丰", "v2").await.unwrap();
    assert_eq!(a.meta("policy of 盈丰").unwrap().as_deref(), Some("v2"));

    // Cursors.
    a.set_cursor("four-platforms", "2025-08-01T06:04:55Z#17")
        .await
        .unwrap();
    eventually("b sees the cursor", || {
        b.cursor("four-platforms").unwrap().as_deref() == Some("2025-08-01T06:04:55Z#17")
    })
    .await;

    // State: written without waiting, read back at once, in order.
    a.set_state("police", "token", Some(b"t-1"));
    a.set_state("police", "token", Some(b"t-2"));
    a.set_state("police", "last seen/网格", Some(b"\x00\xff"));
    a.set_state("fire", "token", Some(b"f-1"));
    let police = |j: &NatsJournal| j.state("police").unwrap();
    let expected = vec![
        ("last seen/网格".to_string(), b"\x00\xff".to_vec()),
        ("token".to_string(), b"t-2".to_vec()),
    ];
    assert_eq!(police(&a), expected);
    a.flush().await.unwrap();
    eventually("b sees police's state", || police(&b) == expected).await;
    // Written last: seen last.
    eventually("b sees fire's state", || {
        b.state("fire").unwrap() == [("token".to_string(), b"f-1".to_vec())]
    })
    .await;
    b.set_state("police", "token", None);
    assert_eq!(police(&b).len(), 1);
    b.flush().await.unwrap();
    eventually("a sees the key removed", || police(&a).len() == 1).await;

    // A node that starts later has it all before its start returns.
    let c = NatsJournal::connect(&through(2)).await.unwrap();
    assert_eq!(
        c.meta("clock_ms").unwrap().as_deref(),
        Some("1754031895000")
    );
    assert_eq!(
        c.cursor("four-platforms").unwrap().as_deref(),
        Some("2025-08-01T06:04:55Z#17")
    );
    assert_eq!(police(&c), expected[..1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_audit_chain_however_many_nodes_append_and_nobody_may_purge_it() {
    let cluster = NatsCluster::shared();
    let through = |i: usize| NatsConfig {
        url: cluster.url(i),
        ..config(cluster, "audit")
    };
    let a = Arc::new(NatsJournal::connect(&through(0)).await.unwrap());
    let b = Arc::new(NatsJournal::connect(&through(1)).await.unwrap());

    // Two nodes append at once: operators' acts, adapter changes and one
    // flow record per delivery of two cases.
    const EACH: usize = 60;
    let run = |j: Arc<NatsJournal>, who: &'static str| async move {
        for i in 0..EACH {
            match i % 3 {
                0 => j.audit_action(who, "replay", &format!("dead-letter/{i}"), "{}").await,
                1 => j.audit(who, "load", "police", r#"{"sha256":"ab12"}"#).await,
                _ => {
                    let case = if i % 2 == 0 { "YF-2025-0801-001" } else { "YF-2025-0801-002" };
                    let detail = serde_json::json!({ "caseid": case, "fields": { "/reporter/phone": "mask" } });
                    j.audit_action("hub", "flow", "village", &detail.to_string()).await
                }
            }
            .unwrap();
        }
    };
    tokio::join!(
        run(a.clone(), "duty-officer"),
        run(b.clone(), "command-room")
    );

    // One chain, intact, read through either node.
    let log = b.audit_log().await.unwrap();
    assert_eq!(log.len(), 2 * EACH);
    assert_eq!(
        govhub::admin::audit::verify(&log),
        Ok(2 * EACH),
        "the chain does not verify"
    );
    assert_eq!(log, a.audit_log().await.unwrap());
    assert!(log.iter().enumerate().all(|(i, r)| r.seq == i as i64 + 1));
    // The nodes did take turns: each link after the other node's was made
    // after losing a race on a head it held (its cached head was stale).
    let officers: Vec<&str> = log
        .iter()
        .filter(|r| r.actor != "hub")
        .map(|r| r.actor.as_str())
        .collect();
    let turns = officers.windows(2).filter(|w| w[0] != w[1]).count();
    eprintln!(
        "{turns} turns between the two nodes in {} records",
        log.len()
    );
    assert!(turns >= 2, "the nodes never raced: {officers:?}");

    // Queries: by actor, by action, by case, and in pages.
    let q = |actor: Option<&str>, action: Option<&str>, case: Option<&str>| AuditQuery {
        actor: actor.map(str::to_string),
        action: action.map(str::to_string),
        caseid: case.map(str::to_string),
        after: 0,
        limit: 1000,
    };
    let by_officer = a
        .audit_query(&q(Some("duty-officer"), None, None))
        .await
        .unwrap();
    assert_eq!(by_officer.len(), 2 * EACH / 3);
    assert!(by_officer.iter().all(|r| r.actor == "duty-officer"));
    let loads = a.audit_query(&q(None, Some("load"), None)).await.unwrap();
    assert_eq!(loads.len(), 2 * EACH / 3);
    let case1 = a
        .audit_query(&q(None, None, Some("YF-2025-0801-001")))
        .await
        .unwrap();
    let expected: Vec<_> = log
        .iter()
        .filter(|r| r.action == "flow" && r.detail.contains("YF-2025-0801-001"))
        .cloned()
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(case1, expected);
    assert!(a
        .audit_query(&q(None, Some("load"), Some("YF-2025-0801-001")))
        .await
        .unwrap()
        .is_empty());
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = a
            .audit_query(&AuditQuery {
                after,
                limit: 7,
                ..q(None, None, None)
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, log);

    // Adapter changes are on the change feed too.
    let mut feed = a.jetstream().get_stream("AUDIT_FEED").await.unwrap();
    assert_eq!(
        feed.info().await.unwrap().state.messages,
        loads.len() as u64
    );

    // Nobody may purge the chain or delete from it.
    let mut chain = a.jetstream().get_stream("AUDIT_AUDIT").await.unwrap();
    assert!(chain.purge().await.is_err(), "the chain was purged");
    assert!(
        chain.delete_message(3).await.is_err(),
        "a record was deleted"
    );
    assert_eq!(chain.info().await.unwrap().state.messages, 2 * EACH as u64);
}

fn version(name: &str, sha256: &str) -> VersionRecord {
    VersionRecord {
        id: 0,
        name: name.into(),
        sha256: sha256.into(),
        manifest: format!("name = \"{name}\"\nwasm = \"modules/{sha256}.wasm\"\n"),
        origin: "admin".into(),
        loaded_ms: 1_754_028_295_000,
        active: false,
    }
}

/// The serving version's (id, sha256) of each adapter, as `j` sees it.
fn serving(j: &NatsJournal) -> Vec<(String, i64, String)> {
    j.active_versions()
        .unwrap()
        .into_iter()
        .map(|v| (v.name, v.id, v.sha256))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_loaded_through_one_node_serves_on_all_and_a_rollback_anywhere_moves_all() {
    let cluster = NatsCluster::shared();
    let through = |i: usize| NatsConfig {
        url: cluster.url(i),
        ..config(cluster, "registry")
    };
    let nodes = [
        NatsJournal::connect(&through(0)).await.unwrap(),
        NatsJournal::connect(&through(1)).await.unwrap(),
        NatsJournal::connect(&through(2)).await.unwrap(),
    ];
    let all_serve = |want: Vec<(String, i64, String)>| {
        let nodes = &nodes;
        async move {
            eventually(&format!("every node serves {want:?}"), || {
                nodes.iter().all(|n| serving(n) == want)
            })
            .await
        }
    };

    // Loaded through node 1: serving there at once, then everywhere.
    let v1 = nodes[0]
        .add_version(version("police", "aa11"))
        .await
        .unwrap();
    assert_eq!(serving(&nodes[0]), [("police".into(), v1, "aa11".into())]);
    all_serve(vec![("police".into(), v1, "aa11".into())]).await;

    // A new version through node 2 replaces it everywhere.
    let v2 = nodes[1]
        .add_version(version("police", "bb22"))
        .await
        .unwrap();
    assert!(v2 > v1);
    all_serve(vec![("police".into(), v2, "bb22".into())]).await;
    let fire = nodes[1].add_version(version("fire", "ff00")).await.unwrap();
    all_serve(vec![
        ("fire".into(), fire, "ff00".into()),
        ("police".into(), v2, "bb22".into()),
    ])
    .await;

    // Rolled back on node 3: everywhere.
    nodes[2].activate_version(v1).await.unwrap();
    all_serve(vec![
        ("fire".into(), fire, "ff00".into()),
        ("police".into(), v1, "aa11".into()),
    ])
    .await;
    let listed: Vec<(i64, bool)> = nodes[0]
        .versions("police")
        .unwrap()
        .iter()
        .map(|v| (v.id, v.active))
        .collect();
    assert_eq!(listed, [(v1, true), (v2, false)]);
    assert!(nodes[0].activate_version(1 << 40).await.is_err());

    // Unloaded through node 1: serving nowhere, still listed.
    nodes[0].deactivate("fire").await.unwrap();
    all_serve(vec![("police".into(), v1, "aa11".into())]).await;
    assert_eq!(nodes[2].versions("fire").unwrap().len(), 1);

    // Two nodes switching one adapter at once: a switch either wins or
    // is told to try again, and every node ends on the same version.
    let mut refused = 0;
    for round in 0..20 {
        let (a, b) = if round % 2 == 0 { (v1, v2) } else { (v2, v1) };
        let (ra, rb) = tokio::join!(nodes[0].activate_version(a), nodes[1].activate_version(b));
        for r in [ra, rb] {
            if let Err(e) = r {
                assert!(e.to_string().contains("try again"), "{e}");
                refused += 1;
            }
        }
        // The nodes come to agree (on whichever won).
        eventually("the nodes agree", || {
            let first = serving(&nodes[0]);
            nodes.iter().all(|n| serving(n) == first)
        })
        .await;
    }
    eprintln!("{refused} of 40 concurrent switches were told to try again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_stored_through_one_node_is_read_through_another() {
    let cluster = NatsCluster::shared();
    let through = |i: usize| NatsConfig {
        url: cluster.url(i),
        ..config(cluster, "modules")
    };
    let a = NatsJournal::connect(&through(0)).await.unwrap();
    let b = NatsJournal::connect(&through(1)).await.unwrap();
    // Bigger than one object-store chunk (128 KiB).
    let module: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&module))
    };
    a.put_module(&sha, module.clone().into()).await.unwrap();
    assert_eq!(b.module(&sha).await.unwrap(), Some(module.clone()));
    assert_eq!(b.module(&"0".repeat(64)).await.unwrap(), None);
    let wrong = a
        .put_module(&"1".repeat(64), module.into())
        .await
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("hashes to"), "{wrong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_dead_letters_and_a_replay_are_recorded_once_for_every_node() {
    use govhub::journal::DeliveryUpdate;
    let cluster = NatsCluster::shared();
    let through = |i: usize| NatsConfig {
        url: cluster.url(i),
        ..config(cluster, "outcomes")
    };
    let a = NatsJournal::connect(&through(0)).await.unwrap();
    let b = NatsJournal::connect(&through(1)).await.unwrap();
    let appended = a
        .append(vec![
            new_event(
                "urn:govhub:police",
                "d-1",
                Some("YF-1"),
                &["police", "village"],
            ),
            new_event("urn:govhub:police", "d-2", Some("YF-2"), &["police"]),
        ])
        .await
        .unwrap();
    let (police1, village1) = (appended[0].deliveries[0].id, appended[0].deliveries[1].id);
    let police2 = appended[1].deliveries[0].id;

    // d-1 reaches the police; the village committee gets it masked.
    a.record(vec![
        DeliveryUpdate::Delivered {
            id: police1,
            attempts: 1,
            reference: Some("CAD-77".into()),
            flow: Some(r#"{"caseid":"YF-1","fields":{}}"#.into()),
        },
        DeliveryUpdate::Retry {
            id: village1,
            attempts: 1,
            error: "503 from the village system".into(),
            next_attempt_ms: 1_754_028_300_000,
        },
    ])
    .await
    .unwrap();
    let seen = b.events("d-1", Some("urn:govhub:police")).await.unwrap();
    let states: Vec<(String, u32, Option<String>, Option<String>)> = seen[0]
        .deliveries
        .iter()
        .map(|d| {
            (
                d.status.clone(),
                d.attempts,
                d.reference.clone(),
                d.last_error.clone(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("delivered".into(), 1, Some("CAD-77".into()), None),
            (
                "pending".into(),
                1,
                None,
                Some("503 from the village system".into())
            ),
        ]
    );
    assert!(seen[0].deliveries[1].next_attempt_at.is_some());

    // Both of d-2's and the village's d-1 die.
    b.record(vec![
        DeliveryUpdate::Dead {
            id: village1,
            attempts: 5,
            error: "503 from the village system".into(),
            flow: Some(r#"{"caseid":"YF-1","fields":{"/reporter/phone":"mask"}}"#.into()),
        },
        DeliveryUpdate::Dead {
            id: police2,
            attempts: 5,
            error: "connection refused".into(),
            flow: None,
        },
    ])
    .await
    .unwrap();
    let dead = a.dead_letters(None, 10).await.unwrap();
    let mut ids: Vec<i64> = dead.iter().map(|d| d.id).collect();
    ids.sort();
    assert_eq!(ids, [village1, police2]);
    let village = a.dead_letter(village1).await.unwrap().unwrap();
    assert_eq!(
        (
            village.target.as_str(),
            village.event_id.as_str(),
            village.caseid.as_deref(),
            village.attempts
        ),
        ("village", "d-1", Some("YF-1"), 5)
    );
    assert!(
        a.dead_letter(police1).await.unwrap().is_none(),
        "delivered is no dead letter"
    );
    let only_police = b
        .dead_letters(Some(&["police".to_string()]), 10)
        .await
        .unwrap();
    assert_eq!(
        only_police.iter().map(|d| d.id).collect::<Vec<_>>(),
        [police2]
    );
    assert_eq!(a.dead_letters(None, 1).await.unwrap().len(), 1);

    // The flow records are in the chain, with the delivery and its route.
    let flows = a
        .audit_query(&AuditQuery {
            action: Some("flow".into()),
            caseid: Some("YF-1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(flows.len(), 2, "{flows:?}");
    let last: serde_json::Value = serde_json::from_str(&flows[1].detail).unwrap();
    assert_eq!(last["delivery"], village1);
    assert_eq!(last["route"], "route:village");
    assert_eq!(last["fields"]["/reporter/phone"], "mask");
    assert_eq!(flows[1].target, "village");

    // Two operators replay the same dead letter through two nodes: it goes
    // back once, as a work item naming the delivery.
    let (ra, rb) = tokio::join!(a.replay(village1), b.replay(village1));
    let replays: Vec<_> = [ra.unwrap(), rb.unwrap()].into_iter().flatten().collect();
    assert_eq!(replays.len(), 1, "{replays:?}");
    let r = &replays[0];
    assert_eq!(
        (
            r.id,
            r.event_seq,
            r.target.as_str(),
            r.order_key.as_str(),
            r.attempts
        ),
        (village1, appended[0].seq, "village", "YF-1", 0)
    );
    assert!(
        a.replay(village1).await.unwrap().is_none(),
        "not dead any more"
    );
    assert!(a.replay(police1).await.unwrap().is_none(), "never dead");
    assert_eq!(
        b.dead_letters(None, 10)
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        [police2]
    );
    let counts = subject_counts(&a).await;
    assert_eq!(
        counts.get(
            "outcomes.wk.village.{p}"
                .replace(
                    "{p}",
                    &govhub::journal::nats::partition("YF-1", 8).to_string()
                )
                .as_str()
        ),
        Some(&2),
        "{counts:?}"
    );
    let state = &b.events("d-1", None).await.unwrap()[0].deliveries[1];
    assert_eq!((state.status.as_str(), state.attempts), ("pending", 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_follows_one_change_feed_and_reads_it_back_by_cursor() {
    use govhub::journal::{DeliveryUpdate, Feed, FeedKeys, FeedKind};
    let cluster = NatsCluster::shared();
    let through = |i: usize| NatsConfig {
        url: cluster.url(i),
        ..config(cluster, "feed")
    };
    let a = NatsJournal::connect(&through(0)).await.unwrap();
    let b = NatsJournal::connect(&through(1)).await.unwrap();
    let mut live = b.feed_subscribe();

    // Changes made through node 1: three events, an adapter loaded, a
    // delivery dead, the manual clock moved.
    let appended = a
        .append(vec![
            new_event("urn:govhub:police", "f-1", Some("YF-9"), &["police"]),
            new_event("urn:govhub:police", "f-2", Some("YF-9"), &["police"]),
            new_event("urn:govhub:fire", "f-3", None, &[]),
        ])
        .await
        .unwrap();
    a.audit("duty-officer", "load", "police", r#"{"sha256":"aa11"}"#)
        .await
        .unwrap();
    a.record(vec![DeliveryUpdate::Dead {
        id: appended[0].deliveries[0].id,
        attempts: 5,
        error: "connection refused".into(),
        flow: None,
    }])
    .await
    .unwrap();
    let clock = a
        .feed_note(
            FeedKind::Clock,
            FeedKeys::default(),
            r#"{"now_ms":1754031895000}"#.into(),
        )
        .await
        .unwrap();

    // Node 2's subscribers see all six, events included (the feed sources
    // them from the event stream), in cursor order.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 6 {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, live.recv())
            .await
            .expect("the feed went quiet")
            .unwrap();
        seen.push(item);
    }
    let mut kinds: Vec<FeedKind> = seen.iter().map(|i| i.kind).collect();
    kinds.sort_by_key(|k| k.as_str());
    assert_eq!(
        kinds,
        [
            FeedKind::Adapter,
            FeedKind::Clock,
            FeedKind::DeadLetter,
            FeedKind::Event,
            FeedKind::Event,
            FeedKind::Event
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].cursor < w[1].cursor));
    // The three were appended at once: in any order.
    let first_event = seen
        .iter()
        .find(|i| i.kind == FeedKind::Event && i.data.contains("\"f-1\""))
        .unwrap();
    assert_eq!(
        first_event.keys.type_.as_deref(),
        Some("gov.incident.reported")
    );
    assert_eq!(first_event.keys.caseid.as_deref(), Some("YF-9"));
    assert_eq!(first_event.keys.severity, Some(Severity::Major.rank()));
    assert!(first_event.data.contains("\"f-1\""));
    let dead = seen
        .iter()
        .find(|i| i.kind == FeedKind::DeadLetter)
        .unwrap();
    assert_eq!(dead.keys.caseid.as_deref(), Some("YF-9"));
    assert!(dead.data.contains("connection refused"));
    assert_eq!(
        seen.iter()
            .find(|i| i.kind == FeedKind::Clock)
            .unwrap()
            .cursor,
        clock
    );

    // Read back through either node: the same items, by cursor and page.
    let span = a.feed_span().await.unwrap();
    assert_eq!((span.first, span.head), (1, seen.last().unwrap().cursor));
    let all = a.feed_after(0, 100).await.unwrap();
    let cursors = |items: &[govhub::journal::FeedItem]| {
        items.iter().map(|i| (i.cursor, i.kind)).collect::<Vec<_>>()
    };
    let seen_items: Vec<_> = seen.iter().map(|i| (**i).clone()).collect();
    assert_eq!(cursors(&all), cursors(&seen_items));
    let page = b.feed_after(all[1].cursor, 2).await.unwrap();
    assert_eq!(cursors(&page), cursors(&all[2..4]));
    assert!(b.feed_after(span.head, 10).await.unwrap().is_empty());

    // The newest of a kind, newest first, at or before a cursor.
    let events = b.feed_latest(FeedKind::Event, span.head, 2).await.unwrap();
    let newest: Vec<_> = all
        .iter()
        .filter(|i| i.kind == FeedKind::Event)
        .rev()
        .take(2)
        .cloned()
        .collect();
    assert_eq!(cursors(&events), cursors(&newest));
    let adapters = b
        .feed_latest(FeedKind::Adapter, span.head, 10)
        .await
        .unwrap();
    assert_eq!(adapters.len(), 1);
    assert!(adapters[0].data.contains("\"change\":\"load\""));
    let before = b.feed_latest(FeedKind::Clock, clock - 1, 10).await.unwrap();
    assert!(before.is_empty());
}

fn case_row(id: &str, grid: &str, opened_ms: i64, closed: bool) -> govhub::journal::CaseRow {
    govhub::journal::CaseRow {
        id: id.into(),
        kind: "incident".into(),
        category: Some("public-safety.e-trike".into()),
        grid: Some(grid.into()),
        stage: if closed { 5 } else { 1 },
        level: 0,
        opened_ms,
        accept_due_ms: opened_ms + 600_000,
        resolve_due_ms: opened_ms + 7_200_000,
        closed_ms: closed.then_some(opened_ms + 3_600_000),
        doc: serde_json::json!({ "id": id, "grid": grid })
            .to_string()
            .into_bytes(),
        severity: Some(2),
        summary: serde_json::json!({ "id": id }).to_string().into_bytes(),
    }
}

/// Takes from `j` until it has `n` events or 10 s pass.
async fn take_until(j: &NatsJournal, n: usize) -> Vec<govhub::journal::CaseTake> {
    use govhub::journal::CaseStore;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut takes = Vec::new();
    let mut got = 0;
    while got < n && Instant::now() < deadline {
        let t = j.take_case_events(100).await.unwrap();
        got += t.events.len();
        if !t.events.is_empty() {
            takes.push(t);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    takes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_tracks_the_cases_and_another_takes_over_what_it_never_settled() {
    use govhub::journal::{CaseFilter, CaseStatus, CaseStore};
    let cluster = NatsCluster::shared();
    let through = |i: usize| NatsConfig {
        url: cluster.url(i),
        lease: Duration::from_secs(1),
        ..config(cluster, "cases")
    };
    let a = NatsJournal::connect(&through(0)).await.unwrap();
    let mut b = Some(NatsJournal::connect(&through(1)).await.unwrap());
    a.append(vec![new_event(
        "urn:govhub:police",
        "c-1",
        Some("YF-1"),
        &["police"],
    )])
    .await
    .unwrap();
    a.append(vec![new_event(
        "urn:govhub:police",
        "c-2",
        None,
        &["police"],
    )])
    .await
    .unwrap();
    a.append(vec![new_event(
        "urn:govhub:fire",
        "c-3",
        Some("YF-2"),
        &["fire"],
    )])
    .await
    .unwrap();
    a.append(vec![new_event(
        "urn:govhub:police",
        "c-4",
        Some("YF-1"),
        &["police"],
    )])
    .await
    .unwrap();

    // One node holds the tracker's lease and gets the case events, in
    // order; the other gets nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    let owner_index = loop {
        match (a.tracking(), b.as_ref().unwrap().tracking()) {
            (Some(_), None) => break 0,
            (None, Some(_)) => break 1,
            (Some(_), Some(_)) => panic!("both nodes track the cases"),
            (None, None) => {
                assert!(Instant::now() < deadline, "no node took the lease");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let other = 1 - owner_index;
    let by_index = |i: usize| if i == 0 { &a } else { b.as_ref().unwrap() };
    let owner_j = by_index(owner_index);
    let ids: Vec<String> = take_until(owner_j, 3)
        .await
        .iter()
        .flat_map(|t| t.events.iter().map(|e| e.event.id.clone()))
        .collect();
    assert_eq!(
        ids,
        ["c-1", "c-3", "c-4"],
        "in stream order, the one without a case left out"
    );
    assert!(by_index(other)
        .take_case_events(100)
        .await
        .unwrap()
        .events
        .is_empty());

    // A failed pass: after a rewind the next take gives the same events
    // again.
    owner_j.rewind_case_feed();
    let mut again = take_until(owner_j, 3).await;
    let events: Vec<&govhub::journal::FedEvent> =
        again.iter().flat_map(|t| t.events.iter()).collect();
    assert_eq!(
        events
            .iter()
            .map(|e| e.event.id.as_str())
            .collect::<Vec<_>>(),
        ["c-1", "c-3", "c-4"]
    );
    assert_eq!(events[0].origin.as_deref(), Some("police"));
    assert_eq!(events[0].targets[0].adapter, "police");
    let again = again.pop().unwrap();

    // Settled: the cases are stored, read on every node, and the events
    // are not taken again.
    owner_j
        .settle_cases(
            vec![
                case_row("YF-1", "yingfeng/yingyi/2", 1_754_028_295_000, false),
                case_row("YF-2", "yingfeng/yingfeng-comm/1", 1_754_031_895_000, true),
            ],
            again.receipt,
        )
        .await
        .unwrap();
    assert!(owner_j
        .take_case_events(100)
        .await
        .unwrap()
        .events
        .is_empty());
    let other_j = by_index(other);
    let deadline = Instant::now() + Duration::from_secs(10);
    while other_j.case("YF-2").await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the other node never read the cases"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let doc = other_j.case("YF-1").await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&doc).unwrap()["grid"],
        "yingfeng/yingyi/2"
    );
    let list = |f: CaseFilter| async move {
        other_j
            .cases(&f)
            .await
            .unwrap()
            .iter()
            .map(|d| {
                serde_json::from_slice::<serde_json::Value>(d).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    let all = CaseFilter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(list(all.clone()).await, ["YF-2", "YF-1"], "newest first");
    assert_eq!(
        list(CaseFilter {
            status: Some(CaseStatus::Open),
            ..all.clone()
        })
        .await,
        ["YF-1"]
    );
    assert_eq!(
        list(CaseFilter {
            grid: Some("yingfeng/yingyi".into()),
            ..all.clone()
        })
        .await,
        ["YF-1"]
    );
    assert!(list(CaseFilter {
        grid: Some("yingfeng/ying".into()),
        ..all.clone()
    })
    .await
    .is_empty());
    assert_eq!(
        list(CaseFilter {
            overdue_at: Some(1_754_028_295_000 + 700_000),
            ..all.clone()
        })
        .await,
        ["YF-1"],
        "acceptance overdue"
    );
    assert_eq!(
        list(CaseFilter {
            offset: 1,
            ..all.clone()
        })
        .await,
        ["YF-1"]
    );

    // The owner takes a new event and dies before settling it: the other
    // node takes the lease once it runs out, and reads on from the
    // position the owner settled.
    a.append(vec![new_event(
        "urn:govhub:police",
        "c-5",
        Some("YF-1"),
        &["police"],
    )])
    .await
    .unwrap();
    let taken = take_until(owner_j, 1).await;
    assert_eq!(taken.last().map(|t| t.events.len()), Some(1));
    drop(taken);
    let started = Instant::now();
    let survivor = if owner_index == 0 {
        drop(a);
        b.take().unwrap()
    } else {
        b.take();
        a
    };
    let taken_over = take_until(&survivor, 1).await;
    let ids: Vec<&str> = taken_over
        .iter()
        .flat_map(|t| t.events.iter().map(|e| e.event.id.as_str()))
        .collect();
    eprintln!("taken over after {:?}", started.elapsed());
    assert_eq!(ids, ["c-5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_batches_at_once_than_the_server_keeps_open_are_all_stored() {
    let cluster = NatsCluster::shared();
    // Above the server's 50 open batches per stream, on purpose: the ones
    // it refuses (10210) are asked again.
    let journal = Arc::new(
        NatsJournal::connect(&NatsConfig {
            batches_in_flight: 200,
            ..config(cluster, "inflight")
        })
        .await
        .unwrap(),
    );
    let appends = (0..300).map(|i| {
        let journal = journal.clone();
        async move {
            journal
                .append(vec![new_event(
                    "urn:govhub:video-patrol",
                    &format!("busy-{i}"),
                    Some(&format!("YF-{}", i % 40)),
                    &["police", "city-management"],
                )])
                .await
        }
    });
    let results = futures_util::future::join_all(appends).await;
    let stored = results
        .into_iter()
        .map(|r| r.expect("an append was refused"))
        .filter(|a| !a[0].duplicate)
        .count();
    assert_eq!(stored, 300);
    let counts = subject_counts(&journal).await;
    assert_eq!(
        counts
            .keys()
            .filter(|s| s.starts_with("inflight.ev."))
            .count(),
        300
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_one_append_share_a_batch_and_a_duplicate_among_them_is_found() {
    let cluster = NatsCluster::shared();
    let journal = NatsJournal::connect(&config(cluster, "group"))
        .await
        .unwrap();
    let group: Vec<NewEvent> = (0..20)
        .map(|i| {
            new_event(
                "urn:govhub:police",
                &format!("g-{i}"),
                Some(&format!("YF-{}", i % 3)),
                &["police", "fire"],
            )
        })
        .collect();
    let stored = journal.append(group).await.unwrap();
    // One batch: consecutive, each event followed by its two work items.
    for (i, a) in stored.iter().enumerate() {
        assert!(!a.duplicate);
        assert_eq!(a.seq, stored[0].seq + 3 * i as i64, "{stored:?}");
        assert_eq!(
            a.deliveries.iter().map(|d| d.id).collect::<Vec<_>>(),
            [a.seq + 1, a.seq + 2]
        );
    }
    for (i, a) in stored.iter().enumerate() {
        let e = journal.event_by_seq(a.seq).await.unwrap().unwrap();
        assert_eq!(e.id, format!("g-{i}"));
    }

    // A group holding a stored event and the same new event twice: the
    // stored one is reported with its sequence, the new one stored once.
    let again = journal
        .append(vec![
            new_event("urn:govhub:police", "g-new", Some("YF-1"), &["police"]),
            new_event(
                "urn:govhub:police",
                "g-7",
                Some("YF-1"),
                &["police", "fire"],
            ),
            new_event("urn:govhub:police", "g-new", Some("YF-1"), &["police"]),
        ])
        .await
        .unwrap();
    assert!(again[1].duplicate);
    assert_eq!(again[1].seq, stored[7].seq);
    let new: Vec<_> = [&again[0], &again[2]]
        .into_iter()
        .filter(|a| !a.duplicate)
        .collect();
    assert_eq!(new.len(), 1, "{again:?}");
    assert_eq!(again[0].seq, again[2].seq);
    let counts = subject_counts(&journal).await;
    assert_eq!(
        counts.keys().filter(|s| s.starts_with("group.ev.")).count(),
        21
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_many_events_is_stored_whole_and_in_its_order() {
    let cluster = NatsCluster::shared();
    let journal = NatsJournal::connect(&config(cluster, "many"))
        .await
        .unwrap();
    // 500 events of 20 cases with two targets each: 1,500 messages, more
    // than one batch holds.
    let events: Vec<NewEvent> = (0..500)
        .map(|i| {
            new_event(
                "urn:govhub:four-platforms",
                &format!("m-{i}"),
                Some(&format!("YF-{}", i % 20)),
                &["police", "village"],
            )
        })
        .collect();
    let stored = journal.append(events).await.unwrap();
    assert_eq!(stored.len(), 500);
    assert!(stored.iter().all(|a| !a.duplicate));
    assert!(
        stored.windows(2).all(|w| w[0].seq < w[1].seq),
        "stored out of the request's order"
    );
    for i in [0, 250, 499] {
        let e = journal.event_by_seq(stored[i].seq).await.unwrap().unwrap();
        assert_eq!(e.id, format!("m-{i}"));
    }
}
