//! `govhub-load soak`: the hub under steady load for minutes or hours, at
//! half its maximum rate, with a slice of deliveries that fail (some once,
//! then delivered on a retry; some every time, then dead-lettered). Every
//! report interval it prints the hub's resident memory, open file
//! descriptors, journal size and the delivery latency of that interval; at
//! the end it checks that every event sent was delivered or dead-lettered
//! and says how memory moved.

use super::*;
use std::sync::atomic::{AtomicU64, AtomicU8};
use std::sync::Mutex;
use tokio::sync::Semaphore;

#[derive(clap::Args)]
pub struct SoakOpts {
    #[command(flatten)]
    pub common: Common,
    /// Minutes of steady load.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Events per second (default: half the maximum, measured first by a
    /// closed loop of `--probe-seconds`).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of the closed loop that measures the maximum rate.
    #[arg(long, default_value_t = 15)]
    probe_seconds: u64,
    /// Seconds between two report lines.
    #[arg(long, default_value_t = 60)]
    report_seconds: u64,
    /// Per mille of events the department refuses every time (503): they
    /// are retried, then dead-lettered.
    #[arg(long, default_value_t = 10)]
    dead_per_mille: u64,
    /// Per mille of events the department refuses once (503), then takes.
    #[arg(long, default_value_t = 40)]
    retry_per_mille: u64,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The journal's `storage.synchronous` (`full` or `normal`).
    #[arg(long, default_value = "full")]
    synchronous: String,
}

/// What the department does with event `i` of the soak.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Taken the first time.
    Take,
    /// Refused once, then taken.
    Retry,
    /// Refused every time.
    Dead,
}

fn fate(i: u64, dead: u64, retry: u64) -> Fate {
    // Spread over the run rather than in blocks: a multiplicative hash.
    let slot = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54; // 0..1024
    let slot = slot * 1000 / 1024;
    if slot < dead {
        Fate::Dead
    } else if slot < dead + retry {
        Fate::Retry
    } else {
        Fate::Take
    }
}

/// The soak's department: takes or refuses each event by its fate, records
/// when each soak event first arrived relative to when it was due.
struct SoakDepartment {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    /// Probe-phase arrivals (each gives a permit back).
    probe_arrivals: AtomicUsize,
    probe_window: Arc<Semaphore>,
    /// Soak timing, once the soak starts: the start and the interval.
    schedule: std::sync::OnceLock<(Instant, Duration, Vec<AtomicU8>)>,
    dead: u64,
    retry: u64,
    /// Soak events taken (first arrival that was answered 200).
    taken: AtomicUsize,
    /// Events taken after a refusal.
    taken_on_retry: AtomicUsize,
    /// A taken event arriving again.
    duplicates: AtomicUsize,
    /// Latencies (µs, due to arrival) of events taken the first time, since
    /// the last report.
    latencies: Mutex<Vec<u32>>,
}

const TAKEN: u8 = 2;
const REFUSED: u8 = 1;

async fn soak_department(window: Arc<Semaphore>, dead: u64, retry: u64) -> SoakDepartment {
    let shared = Arc::new(Shared {
        probe_arrivals: AtomicUsize::new(0),
        probe_window: window,
        schedule: std::sync::OnceLock::new(),
        dead,
        retry,
        taken: AtomicUsize::new(0),
        taken_on_retry: AtomicUsize::new(0),
        duplicates: AtomicUsize::new(0),
        latencies: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = shared.clone();
    let app =
        axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let s = state.clone();
            async move {
                let _ = body;
                let now = Instant::now();
                let id = headers
                    .get("ce-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if id.starts_with("probe-") {
                    s.probe_arrivals.fetch_add(1, Ordering::SeqCst);
                    s.probe_window.add_permits(1);
                    return axum::http::StatusCode::OK;
                }
                let (Some(i), Some((start, interval, marks))) = (
                    id.strip_prefix("soak-").and_then(|n| n.parse::<u64>().ok()),
                    s.schedule.get(),
                ) else {
                    return axum::http::StatusCode::OK;
                };
                let Some(mark) = marks.get(i as usize) else {
                    return axum::http::StatusCode::OK;
                };
                let before = mark.load(Ordering::SeqCst);
                let refuse = match fate(i, s.dead, s.retry) {
                    Fate::Dead => true,
                    Fate::Retry => before == 0,
                    Fate::Take => false,
                };
                if refuse {
                    mark.store(REFUSED, Ordering::SeqCst);
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                if mark.swap(TAKEN, Ordering::SeqCst) == TAKEN {
                    s.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    s.taken.fetch_add(1, Ordering::SeqCst);
                    if before == REFUSED {
                        s.taken_on_retry.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let due = *start + interval.mul_f64(i as f64);
                        let micros = now.saturating_duration_since(due).as_micros();
                        s.latencies
                            .lock()
                            .unwrap()
                            .push(micros.min(u32::MAX as u128) as u32);
                    }
                }
                axum::http::StatusCode::OK
            }
        });
    tokio::spawn(async move { axum::serve(listener, app).await });
    SoakDepartment { addr, shared }
}

/// Open file descriptors of a process (Linux).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The journal's bytes on disk: the database and its WAL.
fn journal_bytes(dir: &Path) -> u64 {
    ["hub.db", "hub.db-wal", "hub.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// `govhub_deliveries_total{adapter="department",outcome=OUTCOME}`.
async fn deliveries(client: &HttpClient, base: &str, outcome: &str) -> Option<u64> {
    let resp = client
        .get(format!("{base}/metrics").parse().ok()?)
        .await
        .ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    let wanted = format!("outcome=\"{outcome}\"");
    text.lines()
        .filter(|l| l.starts_with("govhub_deliveries_total{") && l.contains(&wanted))
        .filter(|l| l.contains("adapter=\"department\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .next()
        .or(Some(0))
}

fn micros_ms(us: u32) -> f64 {
    us as f64 / 1000.0
}

pub async fn soak(dir: &Path, opts: SoakOpts) {
    let (govhub, wasm_dir) = (&opts.common.govhub(), opts.common.wasm_dir());
    let SoakOpts {
        minutes,
        rate,
        probe_seconds,
        report_seconds,
        dead_per_mille,
        retry_per_mille,
        concurrency,
        synchronous,
        ..
    } = opts;
    assert!(
        dead_per_mille + retry_per_mille <= 1000,
        "--dead-per-mille plus --retry-per-mille is at most 1000"
    );
    let module = wasm_dir.join("webhook_adapter.wasm");
    assert!(
        module.exists(),
        "{} is missing: build the adapters (tests/run.sh builds them)",
        module.display()
    );
    let window = Arc::new(Semaphore::new(0));
    let dept = soak_department(window.clone(), dead_per_mille, retry_per_mille).await;
    crate::path::write_department(dir, &module, dept.addr, 16);
    // Three attempts, a short backoff: a refused event is dead within
    // seconds, so the run's end accounts for all of them.
    let hub = start_hub_with(
        govhub,
        dir,
        "[delivery]\nmax_attempts = 3\nbackoff_base_ms = 200\nbackoff_cap_ms = 1000\n",
        &[
            ("GOVHUB__STORAGE__SYNCHRONOUS", synchronous.as_str()),
            // A dead letter is a warning; the soak makes them on purpose.
            ("GOVHUB_LOG", "error"),
        ],
    );
    let pid = hub.child.id();
    let url = format!("{}/v1/events", hub.base);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    println!(
        "machine: {} cores; 1 KB events, {concurrency} connections; the department refuses {dead_per_mille}‰ every time (dead after 3 attempts) and {retry_per_mille}‰ once; journal synchronous={synchronous}",
        cores()
    );

    let rate = match rate {
        Some(r) => r,
        None => {
            // The maximum: a closed loop through a window of 2,000 events
            // for `probe_seconds` (bounded by count: 50,000 a second at
            // most).
            window.add_permits(2_000);
            let n = (probe_seconds as usize * 50_000).max(1);
            let (next, accepted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let stop = Instant::now() + Duration::from_secs(probe_seconds);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, url, window, next, accepted) = (
                    client.clone(),
                    url.clone(),
                    window.clone(),
                    next.clone(),
                    accepted.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < stop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return;
                        }
                        window.acquire().await.unwrap().forget();
                        let body =
                            bytes::Bytes::from(event_json(&format!("probe-{i}")).to_string());
                        let status = post(&client, &url, CE_JSON, body).await;
                        assert_eq!(status, 202, "probe event {i} answered {status}");
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let accepted = accepted.load(Ordering::SeqCst);
            let shared = dept.shared.clone();
            let all = crate::path::wait_for(Duration::from_secs(120), move || {
                shared.probe_arrivals.load(Ordering::SeqCst) >= accepted
            })
            .await;
            assert!(all, "the probe's events never all arrived");
            let took = started.elapsed().as_secs_f64();
            let arrived = dept.shared.probe_arrivals.load(Ordering::SeqCst);
            let max = arrived as f64 / took;
            println!(
                "maximum, closed loop: {arrived} events delivered in {took:.1} s = {max:.0} events/s"
            );
            max / 2.0
        }
    };
    assert!(rate > 0.0, "the rate must be above zero");
    let total = (rate * minutes as f64 * 60.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let marks: Vec<AtomicU8> = (0..total).map(|_| AtomicU8::new(0)).collect();
    let start = Instant::now() + Duration::from_millis(100);
    let _ = dept.shared.schedule.set((start, interval, marks));
    let expected_dead = (0..total)
        .filter(|&i| fate(i, dead_per_mille, retry_per_mille) == Fate::Dead)
        .count();
    println!(
        "soak: {rate:.0} events/s for {minutes} min = {total} events ({expected_dead} to be dead-lettered), a line every {report_seconds} s"
    );
    println!(
        "| at | sent | taken | taken on a retry | dead | p50 ms | p99 ms | hub RSS MiB | open fds | journal MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");

    // The senders: an open loop, each event due at start + i × interval.
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    let tokio_start = tokio::time::Instant::from_std(start);
    for lane in 0..concurrency as u64 {
        let (client, url, sent, refused) =
            (client.clone(), url.clone(), sent.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = lane;
            while i < total {
                tokio::time::sleep_until(tokio_start + interval.mul_f64(i as f64)).await;
                let body = bytes::Bytes::from(event_json(&format!("soak-{i}")).to_string());
                let status = post(&client, &url, CE_JSON, body).await;
                if status == 202 {
                    sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    eprintln!("soak event {i} answered {status}");
                }
                i += concurrency as u64;
            }
        }));
    }

    // The reports, until every sender is done.
    let mut rss = Vec::new();
    let report = |at: Duration,
                  client: HttpClient,
                  base: String,
                  sent: u64,
                  rss: &mut Vec<u64>,
                  shared: Arc<Shared>| {
        let dir = dir.to_path_buf();
        let mut lat = std::mem::take(&mut *shared.latencies.lock().unwrap());
        lat.sort_unstable();
        let pick = |p: f64| {
            if lat.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", micros_ms(percentile(&lat, p)))
            }
        };
        let (p50, p99) = (pick(0.50), pick(0.99));
        let r = crate::footprint::rss_kib(pid);
        rss.push(r);
        async move {
            let dead = deliveries(&client, &base, "dead")
                .await
                .map(|d| d.to_string())
                .unwrap_or_else(|| "?".into());
            println!(
                "| {:.0} s | {sent} | {} | {} | {dead} | {p50} | {p99} | {:.1} | {} | {:.1} |",
                at.as_secs_f64(),
                shared.taken.load(Ordering::SeqCst),
                shared.taken_on_retry.load(Ordering::Relaxed),
                r as f64 / 1024.0,
                open_fds(pid),
                journal_bytes(&dir) as f64 / (1024.0 * 1024.0),
            );
        }
    };
    let every = Duration::from_secs(report_seconds.max(1));
    let mut next = start + every;
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        report(
            next - start,
            client.clone(),
            hub.base.clone(),
            sent.load(Ordering::Relaxed),
            &mut rss,
            dept.shared.clone(),
        )
        .await;
        next += every;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    let refused_at_ingress = refused.load(Ordering::Relaxed);

    // Then every event is taken or dead: wait (bounded) for the last
    // retries and dead letters.
    let to_take = total as usize - expected_dead;
    let drained = {
        let (client, base, shared) = (client.clone(), hub.base.clone(), dept.shared.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let dead = deliveries(&client, &base, "dead").await.unwrap_or(0);
            if shared.taken.load(Ordering::SeqCst) >= to_take && dead as usize >= expected_dead {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    report(
        start.elapsed(),
        client.clone(),
        hub.base.clone(),
        sent,
        &mut rss,
        dept.shared.clone(),
    )
    .await;
    let taken = dept.shared.taken.load(Ordering::SeqCst);
    let dead = deliveries(&client, &hub.base, "dead").await.unwrap_or(0) as usize;
    let duplicates = dept.shared.duplicates.load(Ordering::Relaxed);
    println!(
        "accounted for: {sent} sent and accepted, {refused_at_ingress} refused at ingress; {taken} taken + {dead} dead-lettered = {} (expected {to_take} + {expected_dead}); {duplicates} taken twice",
        taken + dead
    );
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        let peak = rss.iter().max().unwrap();
        println!(
            "hub resident: {:.1} MiB at the first line, {:.1} MiB at the last, peak {:.1} MiB ({:+.1}% first to last)",
            *first as f64 / 1024.0,
            *last as f64 / 1024.0,
            *peak as f64 / 1024.0,
            (*last as f64 - *first as f64) * 100.0 / *first as f64
        );
    }
    assert_eq!(
        refused_at_ingress, 0,
        "the hub refused events at half its maximum rate"
    );
    assert!(
        drained && taken == to_take && dead == expected_dead,
        "events unaccounted for: {taken} taken of {to_take}, {dead} dead of {expected_dead}"
    );
    println!("soak passed: nothing lost");
    drop(hub);
}
