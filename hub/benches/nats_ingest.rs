//! Ingest on the NATS JetStream journal vs a raw JetStream
//! publish-with-ack of the same bodies, on a three-node cluster started
//! here (the test support's, `sync_interval: always`, R3 streams).
//!
//! `cargo bench -p govhub --bench nats_ingest` (the server from
//! `tests/nats-server.sh`, found through `GOVHUB_NATS_SERVER` or installed
//! by it). Each round runs both, one after the other, with the same
//! events and the same number in flight, and prints the ratio.
//! `NATS_BENCH_EVENTS`, `NATS_BENCH_IN_FLIGHT` and `NATS_BENCH_ROUNDS` set
//! the sizes (5,000, 64 and 3); `NATS_BENCH_BATCHES` the journal's open
//! batches (16, its default); `NATS_BENCH_GROUP` how many events one
//! append carries (1: one per call, as single-event requests do), with
//! the in-flight count divided among the groups (the same number of
//! events in flight as the baseline).

#[path = "../../tests/support/nats.rs"]
mod nats;

use futures_util::StreamExt;
use govhub::journal::nats::{NatsConfig, NatsJournal};
use govhub::journal::{EventLog, NewEvent};
use govhub::router::Target;
use govhub_sdk::{cloudevents, Event, Severity};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An incident like the Yingfeng demo's, routed to two departments.
fn event(round: usize, i: usize) -> NewEvent {
    let e = Event::new("gov.incident.reported")
        .with_id(format!("r{round}-e{i}"))
        .with_source("urn:govhub:video-patrol")
        .with_case(format!("YF-2025-0801-{:04}", i % 500))
        .with_grid("yingfeng/yingyi/2")
        .with_category("public-safety.e-trike")
        .with_severity(Severity::Major)
        .with_json(&serde_json::json!({
            "summary": "电动三轮车占道 west gate of 盈一佳苑",
            "camera": "YF-CAM-017",
            "confidence": 0.93,
        }));
    NewEvent {
        encoded: cloudevents::to_string(&e).into(),
        event: Arc::new(e),
        origin: Some("video-patrol".into()),
        targets: ["police", "city-management"]
            .iter()
            .map(|t| Target {
                adapter: t.to_string(),
                rule: format!("route:{t}"),
            })
            .collect(),
        received_ms: 1_754_028_295_000,
    }
}

fn main() {
    let events = env("NATS_BENCH_EVENTS", 5_000);
    let in_flight = env("NATS_BENCH_IN_FLIGHT", 64);
    let rounds = env("NATS_BENCH_ROUNDS", 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = nats::NatsCluster::start(3);
    println!(
        "nats ingest: {events} events, {in_flight} in flight, 3 nodes, R3, sync_interval always"
    );
    println!("round | raw publish-with-ack | govhub append (event + 2 work items, atomic) | ratio");
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(10)))
            .connect(cluster.url_list())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        for round in 0..rounds {
            let bodies: Vec<NewEvent> = (0..events).map(|i| event(round, i)).collect();

            // Raw: the same bodies, one publish each, acknowledged.
            let name = format!("RAW{round}");
            js.create_stream(async_nats::jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("raw{round}.>")],
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .unwrap();
            // The stream's interest reaches every node first.
            let warm = js
                .publish(format!("raw{round}.warm"), "warm".into())
                .await
                .unwrap();
            warm.await.unwrap();
            let started = Instant::now();
            let js_raw = js.clone();
            futures_util::stream::iter(bodies.iter().enumerate())
                .map(|(i, e)| {
                    let js = js_raw.clone();
                    let body = bytes::Bytes::copy_from_slice(e.encoded.as_bytes());
                    async move {
                        js.publish(format!("raw{round}.ev.{}", i % 16), body)
                            .await
                            .unwrap()
                            .await
                            .unwrap();
                    }
                })
                .buffer_unordered(in_flight)
                .collect::<Vec<_>>()
                .await;
            let raw = events as f64 / started.elapsed().as_secs_f64();

            // govhub: the journal's append, one event per call.
            let journal = NatsJournal::connect(&NatsConfig {
                prefix: format!("bench{round}"),
                batches_in_flight: env("NATS_BENCH_BATCHES", 16),
                request_timeout: Duration::from_secs(10),
                ..NatsConfig::at(&cluster.urls())
            })
            .await
            .unwrap();
            journal.append(vec![event(round + 1000, 0)]).await.unwrap();
            let started = Instant::now();
            let journal = Arc::new(journal);
            let group = env("NATS_BENCH_GROUP", 1).max(1);
            let mut groups: Vec<Vec<NewEvent>> = Vec::new();
            for e in bodies {
                match groups.last_mut() {
                    Some(g) if g.len() < group => g.push(e),
                    _ => groups.push(vec![e]),
                }
            }
            futures_util::stream::iter(groups)
                .map(|g| {
                    let journal = journal.clone();
                    async move {
                        let a = journal.append(g).await.unwrap();
                        assert!(a.iter().all(|a| !a.duplicate));
                    }
                })
                .buffer_unordered((in_flight / group).max(1))
                .collect::<Vec<_>>()
                .await;
            let ours = events as f64 / started.elapsed().as_secs_f64();
            println!(
                "{} | {raw:.0} events/s | {ours:.0} events/s | {:.2}",
                round + 1,
                ours / raw
            );
        }
    });
}
