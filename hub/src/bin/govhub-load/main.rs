//! `govhub-load`: the load generator behind BENCHMARKS.md. Each run
//! measures govhub and its baseline on the same machine, in the same run.
//!
//! `govhub-load durable`: durable ingest of 1 KB CloudEvents through
//! `POST /v1/events` (single and batched requests) beside the raw ceiling of
//! the same disk (rusqlite inserting 1 KB rows, synchronous=FULL, 256 rows a
//! transaction), then p50/p99 latency at half the single-request maximum.
//!
//! `govhub-load swap`: adapter swap time from upload to serving (compile
//! cache cold and warm) beside raw wasmtime compiling / deserializing the
//! same module, and the delivery pause a stream sees during swaps.
//!
//! `govhub-load http`: the HTTP ingest path beside a bare hyper handler
//! answering `202`, same client, same machine.
//!
//! `govhub-load e2e`: ingest → journal → webhook adapter → a department,
//! maximum rate and latency at half of it.
//!
//! `govhub-load memory`: resident memory with 0, 10 and 100 adapters, and
//! per instance.
//!
//! `govhub-load startup`: the Yingfeng deployment's start-up to ready,
//! compile cache cold and warm.
//!
//! `govhub-load soak`: minutes or hours at half the maximum rate with a
//! slice of failing deliveries, memory and p99 at every report line.

mod footprint;
mod path;
mod soak;

use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
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
    Durable(Durable),
    /// Swap time (cold and warm compile cache) and the delivery pause
    /// during swaps, with the marker fixtures.
    Swap(Swap),
    /// HTTP ingest path: `/v1/events` beside a bare hyper handler that
    /// answers 202, same client, same bodies.
    Http(path::HttpOpts),
    /// End to end: ingest → journal → webhook adapter → a department on
    /// loopback; maximum rate, then p50/p99 at half of it.
    E2e(path::E2eOpts),
    /// Resident memory with 0, 10 and 100 adapters loaded, and per
    /// instance.
    Memory(footprint::MemoryOpts),
    /// Start-up to ready with the Yingfeng deployment, compile cache cold
    /// and warm.
    Startup(footprint::StartupOpts),
    /// Minutes or hours at half the maximum rate with a slice of failing
    /// deliveries: memory, file descriptors, journal size and p99 at every
    /// report line; every event delivered or dead-lettered at the end.
    Soak(soak::SoakOpts),
    /// The baseline of `http`: hyper alone answering 202 (started by it).
    #[command(name = "bare-202", hide = true)]
    Bare202,
}

/// The working folder: `dir`, or a temp folder in the current one (on the
/// disk to measure) kept alive by the returned guard.
fn workdir(dir: Option<PathBuf>) -> (PathBuf, tempfile::TempDir) {
    let temp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    (dir, temp)
}

/// Options every newer phase takes.
#[derive(clap::Args)]
struct Common {
    /// Working folder (on the disk to measure); default a temp folder in
    /// the current one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The govhub binary (default: next to this one).
    #[arg(long)]
    govhub: Option<PathBuf>,
    /// Folder with the adapters' modules (default:
    /// target/adapters/wasm32-wasip2/release, as tests/run.sh builds them).
    #[arg(long)]
    wasm_dir: Option<PathBuf>,
}

impl Common {
    fn govhub(&self) -> PathBuf {
        self.govhub
            .clone()
            .unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("govhub"))
    }

    fn wasm_dir(&self) -> PathBuf {
        self.wasm_dir.clone().unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/adapters/wasm32-wasip2/release")
        })
    }
}

const CE_JSON: &str = "application/cloudevents+json";

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>;

static EVENT_TYPE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Set by `e2e --events report`: the load's events are incident reports
/// shaped like the Yingfeng e-trike report.
static REPORTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn event_json(id: &str) -> serde_json::Value {
    if REPORTS.load(std::sync::atomic::Ordering::Relaxed) {
        return report_json(id);
    }
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

/// A four-platforms incident report like the Yingfeng demo's e-trike
/// report (a reporter's name, phone and ID number, a grid worker, photos,
/// an address, a position, a description with a phone number in it),
/// about 1 KB once encoded.
fn report_json(id: &str) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:govhub:four-platforms",
        "type": "gov.incident.reported",
        "time": "2025-08-01T17:40:00+08:00",
        "category": "traffic.congestion",
        "severity": "minor",
        "grid": "yingfeng/yingyi/2",
        "lat": 30.2325,
        "lon": 120.2008,
        "datacontenttype": "application/json",
        "data": {
            "description": format!("{}联系电话 13812341234", "盈一佳苑小区西门早晚高峰电动三轮车拥堵，存在安全隐患。".repeat(6)),
            "photos": ["https://img.example/gw/0712/1.jpg", "https://img.example/gw/0712/2.jpg"],
            "address": "杭州市萧山区盈丰街道盈一佳苑西门",
            "worker": { "id": "W-0712", "name": "管九阳" },
            "reporter": { "name": "欧阳娜娜", "phone": "+86 139 0000 7777", "id_number": "33010919900101123X" },
            "event_code": "ZF-02",
            "platform": "综合执法",
        },
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
    start_hub_with(govhub, dir, "", &[])
}

fn start_hub_with(govhub: &Path, dir: &Path, extra: &str, env: &[(&str, &str)]) -> Hub {
    let config = dir.join("govhub.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 8388608\n[storage]\npath = \"{}\"\n[adapters]\ndir = \"{}\"\n{extra}",
            dir.join("hub.db").display(),
            dir.join("adapters.d").display()
        ),
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.join("hub.db"));
    std::fs::create_dir_all(dir.join("adapters.d")).unwrap();
    spawn_config(govhub, &config, dir, env)
}

/// `govhub run --config CONFIG` in `dir`; returns once it listens.
fn spawn_config(govhub: &Path, config: &Path, dir: &Path, env: &[(&str, &str)]) -> Hub {
    let mut cmd = Command::new(govhub);
    cmd.args(["run", "--config"])
        .arg(config)
        .current_dir(dir)
        .env("GOVHUB_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
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
    post_as(client, url, content_type, body, None).await
}

/// [`post`] presenting a bearer token.
async fn post_as(
    client: &HttpClient,
    url: &str,
    content_type: &str,
    body: bytes::Bytes,
    token: Option<&str>,
) -> u16 {
    let mut req = hyper::Request::post(url).header("content-type", content_type);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Full::new(body)).unwrap();
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
    windowed_loop(client, url, content_type, requests, concurrency, None, None).await
}

/// [`closed_loop`] presenting a principal's bearer token.
async fn closed_loop_as(
    client: &HttpClient,
    url: &str,
    content_type: &'static str,
    requests: Arc<Vec<bytes::Bytes>>,
    concurrency: usize,
    token: &str,
) -> Duration {
    let token: Arc<str> = token.into();
    windowed_loop(
        client,
        url,
        content_type,
        requests,
        concurrency,
        None,
        Some(token),
    )
    .await
}

/// [`closed_loop`], each request first taking a permit from `window`
/// (given back by whoever sees the request's effect).
async fn windowed_loop(
    client: &HttpClient,
    url: &str,
    content_type: &'static str,
    requests: Arc<Vec<bytes::Bytes>>,
    concurrency: usize,
    window: Option<Arc<tokio::sync::Semaphore>>,
    token: Option<Arc<str>>,
) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, requests, next, window, token) = (
            client.clone(),
            url.to_string(),
            requests.clone(),
            next.clone(),
            window.clone(),
            token.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = requests.get(i) else { return };
                if let Some(w) = &window {
                    w.acquire().await.unwrap().forget();
                }
                let status =
                    post_as(&client, &url, content_type, body.clone(), token.as_deref()).await;
                assert_eq!(status, 202, "request {i} answered {status}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[derive(clap::Args)]
struct Durable {
    #[command(flatten)]
    common: Common,
    /// Events per throughput phase.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Events per batched request.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Concurrent connections of the batched phase.
    #[arg(long, default_value_t = 8)]
    batch_concurrency: usize,
    /// Seconds of the half-load latency phase.
    #[arg(long, default_value_t = 5)]
    latency_seconds: u64,
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
}

async fn durable(dir: &Path, opts: Durable) {
    let govhub = &opts.common.govhub();
    let Durable {
        events,
        concurrency,
        batch,
        batch_concurrency,
        latency_seconds,
        event_type,
        phases,
        ..
    } = opts;
    let _ = EVENT_TYPE.set(event_type.clone());
    println!("event type: {event_type}");
    let run = |p: &str| phases.iter().any(|x| x == p);
    println!(
        "machine: {} cores; working folder {}",
        cores(),
        dir.display()
    );
    let ceiling = if run("ceiling") {
        let rows = events.max(50_000);
        // In this process: its CPU over the run is the ceiling's.
        let cpu_before = path::own_cpu_us();
        let started = Instant::now();
        let c = tokio::task::spawn_blocking({
            let dir = dir.to_path_buf();
            move || sqlite_ceiling(&dir, rows)
        })
        .await
        .unwrap();
        let cpu_us = path::own_cpu_us() - cpu_before;
        println!("raw SQLite ceiling (1 KB rows, synchronous=FULL, 256/txn): {c:.0} rows/s");
        println!(
            "  CPU per row: {:.1} µs (cores busy {:.2})",
            cpu_us / rows as f64,
            cpu_us / 1e6 / started.elapsed().as_secs_f64()
        );
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
        let batch_conc = batch_concurrency.max(1);
        let cpu = path::Cpu::start(hub.child.id());
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
        let used = cpu.per_request(n_batches * batch, took);
        // The journal's writer is one thread: busy 1.0 is its limit.
        let writer_busy = used.writer_busy.unwrap_or(f64::NAN);
        println!(
            "  CPU per event: the hub {:.1} µs, this load generator {:.1} µs; cores busy {:.2} of {}; the journal writer thread busy {:.2}",
            used.server_us,
            used.client_us,
            used.busy,
            cores(),
            writer_busy
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

/// A department on loopback recording when each event arrived, and from
/// which marker version.
struct Arrivals {
    addr: std::net::SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

async fn arrivals() -> Arrivals {
    let seen: Arc<std::sync::Mutex<Vec<(Instant, String)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rec = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let rec = rec.clone();
        async move {
            let id = headers
                .get("ce-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            rec.lock().unwrap().push((Instant::now(), id));
            axum::http::StatusCode::OK
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Arrivals { addr, seen }
}

fn marker_manifest(module: &Path, receiver: std::net::SocketAddr) -> String {
    format!(
        "name = \"marker\"\nwasm = \"{}\"\nsha256 = \"{}\"\nsubscribe = [\"gov.*\"]\n[limits]\nconcurrency = 4\n[capabilities]\noutbound_hosts = [\"{receiver}\"]\n[config]\nurl = \"http://{receiver}/events\"\n",
        module.display(),
        govhub::runtime::sha256_file(module).unwrap()
    )
}

/// The swap bench's sender token.
const SWAP_SENDER: &str = "swap-sender";

/// PUT the module as a new version; the client-side time until the hub
/// answered (it answers once the new version serves) and the hub's own
/// `load_ms`.
async fn put_version(
    client: &HttpClient,
    base: &str,
    module: &Path,
    receiver: std::net::SocketAddr,
) -> (Duration, f64, bool) {
    use base64::Engine as _;
    let body = serde_json::json!({
        "manifest": marker_manifest(module, receiver),
        "module": base64::engine::general_purpose::STANDARD.encode(std::fs::read(module).unwrap()),
    })
    .to_string();
    let req = hyper::Request::put(format!("{base}/v1/adapters/marker"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer swap-bench")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let started = Instant::now();
    let resp = client.request(req).await.expect("hub answers");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let took = started.elapsed();
    assert!(
        status.is_success(),
        "swap answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (
        took,
        v["load_ms"].as_f64().unwrap_or(f64::NAN),
        v["cached"].as_bool() == Some(true),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[derive(clap::Args)]
struct Swap {
    #[command(flatten)]
    common: Common,
    /// Cold swaps (each on a fresh hub with an empty compile cache).
    #[arg(long, default_value_t = 3)]
    cold: usize,
    /// Warm swaps (v1 and v2 alternately, both cached).
    #[arg(long, default_value_t = 20)]
    warm: usize,
    /// Events per second streamed through the hub during the warm swaps.
    #[arg(long, default_value_t = 500)]
    rate: u64,
}

async fn swap(dir: &Path, opts: Swap) {
    let govhub = &opts.common.govhub();
    let wasm_dir = opts.common.wasm_dir();
    let v1 = wasm_dir.join("fixture_marker_v1.wasm");
    let v2 = wasm_dir.join("fixture_marker_v2.wasm");
    for m in [&v1, &v2] {
        assert!(
            m.exists(),
            "{} is missing: build the fixtures (tests/run.sh builds them)",
            m.display()
        );
    }
    println!(
        "machine: {} cores; modules {} KiB / {} KiB",
        cores(),
        std::fs::metadata(&v1).unwrap().len() / 1024,
        std::fs::metadata(&v2).unwrap().len() / 1024
    );
    // Baseline: raw wasmtime with the hub's engine settings.
    let runtime = govhub::runtime::Runtime::new(govhub::runtime::RuntimeConfig::default()).unwrap();
    let bytes = std::fs::read(&v2).unwrap();
    let mut raw_compile = Vec::new();
    let mut raw_deserialize = Vec::new();
    for _ in 0..opts.cold.max(1) {
        let t = Instant::now();
        let c = wasmtime::component::Component::new(runtime.engine(), &bytes).unwrap();
        raw_compile.push(ms(t.elapsed()));
        let serialized = c.serialize().unwrap();
        let path = dir.join("raw.cwasm");
        std::fs::write(&path, &serialized).unwrap();
        let t = Instant::now();
        // SAFETY: the file was serialized by this engine a moment ago.
        let _ =
            unsafe { wasmtime::component::Component::deserialize_file(runtime.engine(), &path) }
                .unwrap();
        raw_deserialize.push(ms(t.elapsed()));
    }
    let raw_compile = median(&mut raw_compile);
    let raw_deserialize = median(&mut raw_deserialize);

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let receiver = arrivals().await;
    // The run's own compile cache, set through the environment so that one
    // inherited from the caller cannot stand in for it.
    let start = |run: &Path| {
        let cache = run.join("cache");
        // The admin loads versions; a sender (the ingest shorthand) with a
        // quota the bench never reaches sends the events.
        let env = [
            ("GOVHUB_ADMIN_TOKEN", "swap-bench"),
            ("GOVHUB__AUTH__INGEST_TOKEN_ENV", "GOVHUB_LOAD_SENDER"),
            ("GOVHUB_LOAD_SENDER", SWAP_SENDER),
            ("GOVHUB__AUTH__EVENTS_PER_S", "1000000"),
            ("GOVHUB__AUTH__BURST", "1000000"),
            ("GOVHUB__RUNTIME__CACHE_DIR", cache.to_str().unwrap()),
        ];
        start_hub_with(govhub, run, "", &env)
    };
    let setup = |run: &Path| {
        let adapters = run.join("adapters.d");
        std::fs::create_dir_all(&adapters).unwrap();
        std::fs::copy(&v1, adapters.join("marker.wasm")).unwrap();
        std::fs::write(
            adapters.join("marker.toml"),
            marker_manifest(&adapters.join("marker.wasm"), receiver.addr),
        )
        .unwrap();
    };

    // Cold: a fresh hub and an empty cache each time; v2 never compiled.
    let mut cold = Vec::new();
    let mut cold_hub = Vec::new();
    for i in 0..opts.cold {
        let run = dir.join(format!("cold-{i}"));
        setup(&run);
        let hub = start(&run);
        let (took, load_ms, cached) = put_version(&client, &hub.base, &v2, receiver.addr).await;
        assert!(!cached, "the cold swap hit the cache");
        cold.push(ms(took));
        cold_hub.push(load_ms);
        println!(
            "  cold swap {}: {:.1} ms (hub: {load_ms:.1} ms)",
            i + 1,
            ms(took)
        );
    }

    // Warm: both versions cached; alternate under a stream of events.
    let run = dir.join("warm");
    setup(&run);
    let hub = start(&run);
    put_version(&client, &hub.base, &v2, receiver.addr).await;
    put_version(&client, &hub.base, &v1, receiver.addr).await;
    let url = format!("{}/v1/events", hub.base);
    let sent: Arc<std::sync::Mutex<Vec<(Instant, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lanes = 8;
    let interval = Duration::from_secs_f64(lanes as f64 / opts.rate as f64);
    let mut streams = Vec::new();
    for lane in 0..lanes {
        let (client, url, sent, stop) = (client.clone(), url.clone(), sent.clone(), stop.clone());
        streams.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now() + interval.mul_f64(lane as f64 / lanes as f64);
            // Bounded: at most 10 minutes of events.
            for i in 0..(opts.rate as usize * 600 / lanes) {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
                let id = format!("s-{lane}-{i}");
                let body = bytes::Bytes::from(event_json(&id).to_string());
                let at = Instant::now();
                let status = post_as(
                    &client,
                    &url,
                    "application/cloudevents+json",
                    body,
                    Some(SWAP_SENDER),
                )
                .await;
                assert_eq!(status, 202);
                sent.lock().unwrap().push((at, id));
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut warm = Vec::new();
    let mut warm_hub = Vec::new();
    let mut windows = Vec::new();
    for i in 0..opts.warm {
        let module = if i % 2 == 0 { &v2 } else { &v1 };
        let t = Instant::now();
        let (took, load_ms, cached) = put_version(&client, &hub.base, module, receiver.addr).await;
        assert!(cached, "the warm swap missed the cache");
        windows.push((t, t + took));
        warm.push(ms(took));
        warm_hub.push(load_ms);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for s in streams {
        s.await.unwrap();
    }
    // Wait for the last deliveries.
    let want = sent.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.seen.lock().unwrap().len() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrived: std::collections::HashMap<String, Instant> = receiver
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(t, id)| (id.clone(), *t))
        .collect();
    let sent = sent.lock().unwrap().clone();
    let lost = sent
        .iter()
        .filter(|(_, id)| !arrived.contains_key(id))
        .count();
    // Send-to-delivery latency of each event, split by whether it was
    // sent while a swap was under way (or within 50 ms after).
    let (mut during, mut outside) = (Vec::new(), Vec::new());
    for (at, id) in &sent {
        let Some(got) = arrived.get(id) else { continue };
        let latency = ms(got.saturating_duration_since(*at));
        if windows
            .iter()
            .any(|(a, b)| *at >= *a && *at <= *b + Duration::from_millis(50))
        {
            during.push(latency);
        } else {
            outside.push(latency);
        }
    }
    let pct = |v: &mut Vec<f64>, p: f64| -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
        }
    };
    let cold_med = median(&mut cold);
    let cold_hub_med = median(&mut cold_hub);
    let warm_med = median(&mut warm.clone());
    let warm_max = warm.iter().cloned().fold(0.0, f64::max);
    let warm_hub_med = median(&mut warm_hub);
    println!("raw wasmtime, same engine settings: compile {raw_compile:.1} ms, deserialize {raw_deserialize:.2} ms");
    println!(
        "swap, cache cold ({} runs): median {cold_med:.1} ms upload-to-serving (hub {cold_hub_med:.1} ms) = {:.2}x raw compile",
        cold.len(),
        cold_med / raw_compile
    );
    println!(
        "swap, cache warm ({} swaps): median {warm_med:.1} ms, max {warm_max:.1} ms upload-to-serving (hub {warm_hub_med:.1} ms) = {:.1}x raw deserialize",
        warm.len(),
        warm_med / raw_deserialize
    );
    println!(
        "stream at {} events/s: {} sent, {lost} lost; send-to-delivery p50/p99/max {:.1}/{:.1}/{:.1} ms outside swaps vs {:.1}/{:.1}/{:.1} ms during swaps ({} events)",
        opts.rate,
        sent.len(),
        pct(&mut outside, 0.5),
        pct(&mut outside, 0.99),
        pct(&mut outside, 1.0),
        pct(&mut during, 0.5),
        pct(&mut during, 0.99),
        pct(&mut during, 1.0),
        during.len()
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
        Cmd::Durable(opts) => {
            let (dir, _temp) = workdir(opts.common.dir.clone());
            rt.block_on(durable(&dir, opts));
        }
        Cmd::Swap(opts) => {
            let (dir, _temp) = workdir(opts.common.dir.clone());
            rt.block_on(swap(&dir, opts));
        }
        Cmd::Http(opts) => {
            let (dir, _temp) = workdir(opts.common.dir.clone());
            rt.block_on(path::http(&dir, opts));
        }
        Cmd::E2e(opts) => {
            let (dir, _temp) = workdir(opts.common.dir.clone());
            rt.block_on(path::e2e(&dir, opts));
        }
        Cmd::Memory(opts) => {
            let (dir, _temp) = workdir(opts.common.dir.clone());
            rt.block_on(footprint::memory(&dir, opts));
        }
        Cmd::Startup(opts) => {
            let (dir, _temp) = workdir(opts.common.dir.clone());
            rt.block_on(footprint::startup(&dir, opts));
        }
        Cmd::Soak(opts) => {
            let (dir, _temp) = workdir(opts.common.dir.clone());
            rt.block_on(soak::soak(&dir, opts));
        }
        Cmd::Bare202 => rt.block_on(path::bare_202()),
    }
}
