//! `govhub-load`: the load generator behind BENCHMARKS.md. Each run
//! measures govhub and its baseline on the same machine, in the same run.
//!
//! `govhub-load durable`: durable ingest of 1 KB CloudEvents through
//! `POST /v1/events` (single and batched requests) beside the raw ceiling of
//! the same disk (rusqlite inserting 1 KB rows, synchronous=FULL, 256 rows a
//! transaction), then p50/p99 latency at half the single-request maximum.

use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "govhub-load", about = "Load generator for govhub's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Durable ingest throughput vs the raw SQLite ceiling, and latency at
    /// half load.
    Durable {
        /// Working folder (on the disk to measure); default a temp folder.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Events per throughput phase.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Concurrent client connections.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Events per batched request.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Seconds of the half-load latency phase.
        #[arg(long, default_value_t = 5)]
        latency_seconds: u64,
        /// The govhub binary (default: next to this one).
        #[arg(long)]
        govhub: Option<PathBuf>,
        /// Event type sent. The default opens no case; `gov.incident.reported`
        /// makes every event a case the tracker opens too.
        #[arg(long = "type", default_value = "gov.alert.issued")]
        event_type: String,
        /// Which phases to run (for profiling one of them).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ceiling,single,batch,latency"
        )]
        phases: Vec<String>,
    },
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>;

static EVENT_TYPE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn event_json(id: &str) -> serde_json::Value {
    // About 1 KB once encoded, like the raw rows of the ceiling.
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:govhub:load",
        "type": EVENT_TYPE.get().map(String::as_str).unwrap_or("gov.alert.issued"),
        "time": "2025-08-01T14:05:00+08:00",
        "category": "traffic.congestion",
        "severity": "minor",
        "grid": "yingfeng/yingyi/2",
        "datacontenttype": "application/json",
        "data": { "text": "电动三轮车堵住小区西门 ".repeat(23) },
    })
}

/// rusqlite inserting `rows` 1 KB rows, synchronous=FULL, WAL, 256 a
/// transaction: the disk's ceiling for durable 1 KB writes.
fn sqlite_ceiling(dir: &Path, rows: usize) -> f64 {
    let path = dir.join("ceiling.db");
    let _ = std::fs::remove_file(&path);
    let conn = rusqlite::Connection::open(&path).expect("open ceiling db");
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        .unwrap();
    let row = vec![b'x'; 1024];
    let started = Instant::now();
    let mut done = 0;
    while done < rows {
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut s = tx
                .prepare_cached("INSERT INTO t (body) VALUES (?1)")
                .unwrap();
            for _ in 0..256.min(rows - done) {
                s.execute([&row]).unwrap();
                done += 1;
            }
        }
        tx.commit().unwrap();
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

struct Hub {
    child: Child,
    base: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hub(govhub: &Path, dir: &Path) -> Hub {
    let config = dir.join("govhub.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 8388608\n[storage]\npath = \"{}\"\n[adapters]\ndir = \"{}\"\n",
            dir.join("hub.db").display(),
            dir.join("adapters.d").display()
        ),
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.join("hub.db"));
    let mut child = Command::new(govhub)
        .args(["run", "--config"])
        .arg(&config)
        .env("GOVHUB_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("govhub starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.strip_prefix("govhub: listening on ") {
                    break addr.to_string();
                }
            }
            _ => panic!("govhub exited before listening"),
        }
    };
    Hub { child, base }
}

async fn post(client: &HttpClient, url: &str, content_type: &str, body: bytes::Bytes) -> u16 {
    let req = hyper::Request::post(url)
        .header("content-type", content_type)
        .body(Full::new(body))
        .unwrap();
    match client.request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }
        Err(_) => 0,
    }
}

/// Sends `requests` bodies with `concurrency` connections; returns the
/// wall time. Panics on any answer but 202.
async fn closed_loop(
    client: &HttpClient,
    url: &str,
    content_type: &'static str,
    requests: Arc<Vec<bytes::Bytes>>,
    concurrency: usize,
) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, requests, next) = (
            client.clone(),
            url.to_string(),
            requests.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = requests.get(i) else { return };
                let status = post(&client, &url, content_type, body.clone()).await;
                assert_eq!(status, 202, "request {i} answered {status}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct Durable {
    events: usize,
    concurrency: usize,
    batch: usize,
    latency_seconds: u64,
    phases: Vec<String>,
}

async fn durable(dir: &Path, govhub: &Path, opts: Durable) {
    let Durable {
        events,
        concurrency,
        batch,
        latency_seconds,
        phases,
    } = opts;
    let run = |p: &str| phases.iter().any(|x| x == p);
    println!(
        "machine: {} cores; working folder {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        dir.display()
    );
    let ceiling = if run("ceiling") {
        let c = tokio::task::spawn_blocking({
            let dir = dir.to_path_buf();
            move || sqlite_ceiling(&dir, events.max(50_000))
        })
        .await
        .unwrap();
        println!("raw SQLite ceiling (1 KB rows, synchronous=FULL, 256/txn): {c:.0} rows/s");
        c
    } else {
        f64::NAN
    };

    let hub = start_hub(govhub, dir);
    let url = format!("{}/v1/events", hub.base);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();

    let single: Vec<bytes::Bytes> = (0..events)
        .map(|i| bytes::Bytes::from(event_json(&format!("single-{i}")).to_string()))
        .collect();
    let size = single[0].len();
    // Warm the connections and the hub.
    let warm: Vec<bytes::Bytes> = (0..concurrency * 4)
        .map(|i| bytes::Bytes::from(event_json(&format!("warm-{i}")).to_string()))
        .collect();
    closed_loop(
        &client,
        &url,
        "application/cloudevents+json",
        Arc::new(warm),
        concurrency,
    )
    .await;

    let mut single_rate = f64::NAN;
    if run("single") || run("latency") {
        let took = closed_loop(
            &client,
            &url,
            "application/cloudevents+json",
            Arc::new(single),
            concurrency,
        )
        .await;
        single_rate = events as f64 / took.as_secs_f64();
        println!(
        "govhub single-event requests ({size} B each, {concurrency} connections): {single_rate:.0} events/s = {:.0}% of the ceiling",
        100.0 * single_rate / ceiling
    );
    }

    if run("batch") {
        let batches: Vec<bytes::Bytes> = (0..events.div_ceil(batch))
            .map(|b| {
                let items: Vec<serde_json::Value> = (0..batch)
                    .map(|i| event_json(&format!("batch-{b}-{i}")))
                    .collect();
                bytes::Bytes::from(serde_json::Value::Array(items).to_string())
            })
            .collect();
        let n_batches = batches.len();
        let batch_conc = concurrency.min(8);
        let took = closed_loop(
            &client,
            &url,
            "application/cloudevents-batch+json",
            Arc::new(batches),
            batch_conc,
        )
        .await;
        let batch_rate = (n_batches * batch) as f64 / took.as_secs_f64();
        println!(
        "govhub batched requests ({batch} events each, {batch_conc} connections): {batch_rate:.0} events/s = {:.0}% of the ceiling",
        100.0 * batch_rate / ceiling
    );
    }

    if !run("latency") {
        return;
    }
    // Open loop at half the single-request maximum, on the same number of
    // connections: request i is due at start + i/rate on connection
    // i mod C, and its latency counts from when it was due, so a stall
    // shows in every request it delayed (no coordinated omission).
    let rate = single_rate / 2.0;
    let total = (rate * latency_seconds as f64) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total)));
    let started = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(concurrency);
    for lane in 0..concurrency {
        let (client, url, latencies) = (client.clone(), url.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in (lane..total).step_by(concurrency) {
                let due = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due).await;
                let body = bytes::Bytes::from(event_json(&format!("lat-{i}")).to_string());
                let status = post(&client, &url, "application/cloudevents+json", body).await;
                assert_eq!(status, 202);
                mine.push(due.elapsed());
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    println!(
        "latency at {rate:.0} events/s (half the single maximum), {} requests: p50 {:.2} ms, p99 {:.2} ms",
        lat.len(),
        percentile(&lat, 0.50).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0
    );
    drop(hub);
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match cli.command {
        Cmd::Durable {
            dir,
            events,
            concurrency,
            batch,
            latency_seconds,
            govhub,
            phases,
            event_type,
        } => {
            let _ = EVENT_TYPE.set(event_type.clone());
            println!("event type: {event_type}");
            let temp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
            let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());
            std::fs::create_dir_all(&dir).unwrap();
            let govhub =
                govhub.unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("govhub"));
            rt.block_on(durable(
                &dir,
                &govhub,
                Durable {
                    events,
                    concurrency,
                    batch,
                    latency_seconds,
                    phases,
                },
            ));
        }
    }
}
