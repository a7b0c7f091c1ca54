//! `govhub-load http` and `govhub-load e2e`: the HTTP ingest path beside a
//! bare hyper handler, and ingest → journal → deliver to a department.

use super::*;
use tokio::sync::Semaphore;

/// `govhub-load bare-202`: hyper alone, answering `202` once it has read
/// the body, on the same runtime settings as the hub (one multi-thread
/// tokio runtime, a worker per core). Prints `listening on ADDR`.
pub async fn bare_202() {
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async {
                    let _ = req.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .status(202)
                            .body(Full::new(bytes::Bytes::new()))
                            .unwrap(),
                    )
                });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A child process printing `<prefix>ADDR` on its first stdout line.
pub struct Process {
    pub child: Child,
    pub addr: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bare_server() -> Process {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("bare-202")
        .stdout(Stdio::piped())
        .spawn()
        .expect("govhub-load bare-202 starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("the bare server prints its address")
        .to_string();
    Process { child, addr }
}

#[derive(clap::Args)]
pub struct HttpOpts {
    #[command(flatten)]
    pub common: Common,
    /// Requests per figure.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Runs (each measures all three).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn bodies(prefix: &str, n: usize) -> Arc<Vec<bytes::Bytes>> {
    Arc::new(
        (0..n)
            .map(|i| bytes::Bytes::from(event_json(&format!("{prefix}-{i}")).to_string()))
            .collect(),
    )
}

/// The same closed loop, the same bodies, against the bare handler and
/// against the hub (journal `full`, then `normal`), `runs` times.
pub async fn http(dir: &Path, opts: HttpOpts) {
    let govhub = &opts.common.govhub();
    let HttpOpts {
        events,
        concurrency,
        runs,
        ..
    } = opts;
    println!(
        "machine: {} cores; {events} single-event requests of {} B, {concurrency} connections, per figure",
        cores(),
        event_json("x").to_string().len()
    );
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let bare = bare_server();
    let bare_url = format!("http://{}/v1/events", bare.addr);
    println!(
        "| run | bare hyper 202 | govhub, journal full | ratio | govhub, journal normal | ratio | govhub, normal, a principal's token | ratio to no principal |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for run in 1..=runs {
        let rate = |took: Duration| events as f64 / took.as_secs_f64();
        // Warm the connections, then measure.
        let warm = bodies(&format!("warm-bare-{run}"), concurrency * 4);
        closed_loop(&client, &bare_url, CE_JSON, warm, concurrency).await;
        let (took, bare_cpu) = measured(
            &client,
            &bare_url,
            bodies(&format!("bare-{run}"), events),
            concurrency,
            bare.child.id(),
        )
        .await;
        let bare_rate = rate(took);
        let mut full_cpu = None;
        let mut hub_rates = Vec::new();
        for sync in ["full", "normal"] {
            let hub = start_hub_with(govhub, dir, "", &[("GOVHUB__STORAGE__SYNCHRONOUS", sync)]);
            let url = format!("{}/v1/events", hub.base);
            let warm = bodies(&format!("warm-{sync}-{run}"), concurrency * 4);
            closed_loop(&client, &url, CE_JSON, warm, concurrency).await;
            let (took, cpu) = measured(
                &client,
                &url,
                bodies(&format!("{sync}-{run}"), events),
                concurrency,
                hub.child.id(),
            )
            .await;
            if sync == "full" {
                full_cpu = Some(cpu);
            }
            hub_rates.push(rate(took));
        }
        // The same with principals: every request is identified (a token's
        // SHA-256 against each principal's), its source checked against the
        // sender's and its quota taken. Beside the `normal` journal, whose
        // figures the disk's fsync does not blur.
        let principals = auth_config(&[("load", LOAD_TOKEN)]);
        let hub = start_hub_with(
            govhub,
            dir,
            &principals,
            &[("GOVHUB__STORAGE__SYNCHRONOUS", "normal")],
        );
        let url = format!("{}/v1/events", hub.base);
        let warm = bodies(&format!("warm-auth-{run}"), concurrency * 4);
        closed_loop_as(&client, &url, CE_JSON, warm, concurrency, LOAD_TOKEN).await;
        let auth_rate = rate(
            closed_loop_as(
                &client,
                &url,
                CE_JSON,
                bodies(&format!("auth-{run}"), events),
                concurrency,
                LOAD_TOKEN,
            )
            .await,
        );
        drop(hub);
        println!(
            "| {run} | {bare_rate:.0} req/s | {:.0} events/s | {:.0}% | {:.0} events/s | {:.0}% | {auth_rate:.0} events/s | {:.0}% |",
            hub_rates[0],
            100.0 * hub_rates[0] / bare_rate,
            hub_rates[1],
            100.0 * hub_rates[1] / bare_rate,
            100.0 * auth_rate / hub_rates[1]
        );
        if let Some(full) = full_cpu {
            println!(
                "  run {run}, CPU per request: bare hyper {:.1} µs (this client {:.1} µs), cores busy {:.2} of {}; govhub full {:.1} µs (this client {:.1} µs), cores busy {:.2}",
                bare_cpu.server_us,
                bare_cpu.client_us,
                bare_cpu.busy,
                cores(),
                full.server_us,
                full.client_us,
                full.busy
            );
        }
    }
}

/// A closed loop of `requests` to `url` with the CPU the server (`server`,
/// a pid) and this load generator spent on it.
async fn measured(
    client: &HttpClient,
    url: &str,
    requests: Arc<Vec<bytes::Bytes>>,
    concurrency: usize,
    server: u32,
) -> (Duration, CpuUse) {
    let n = requests.len();
    let cpu = Cpu::start(server);
    let took = closed_loop(client, url, CE_JSON, requests, concurrency).await;
    (took, cpu.per_request(n, took))
}

/// CPU time of a server, of its journal writer thread (a hub's) and of
/// this load generator over one timed loop.
pub(crate) struct Cpu {
    server: u32,
    before: (u64, u64),
    /// The writer thread's id and its ticks at the start.
    writer: Option<(u32, u64)>,
}

/// What [`Cpu`] measured, per request.
pub(crate) struct CpuUse {
    pub(crate) server_us: f64,
    pub(crate) client_us: f64,
    /// The server's `govhub-journal` thread, if it has one.
    pub(crate) writer_us: Option<f64>,
    /// Cores the two kept busy on average (the rest: idle, or other work).
    pub(crate) busy: f64,
    /// The writer thread's share of one core (it runs on one at most).
    pub(crate) writer_busy: Option<f64>,
}

impl Cpu {
    pub(crate) fn start(server: u32) -> Cpu {
        Cpu {
            server,
            before: (cpu_ticks(server), cpu_ticks(std::process::id())),
            writer: thread_named(server, "govhub-journal").map(|t| (t, thread_ticks(server, t))),
        }
    }

    pub(crate) fn per_request(self, requests: usize, took: Duration) -> CpuUse {
        let tick_us = 1e6 / ticks_per_second();
        let server = (cpu_ticks(self.server) - self.before.0) as f64 * tick_us;
        let client = (cpu_ticks(std::process::id()) - self.before.1) as f64 * tick_us;
        let writer = self
            .writer
            .map(|(t, before)| (thread_ticks(self.server, t) - before) as f64 * tick_us);
        let took_us = took.as_secs_f64() * 1e6;
        CpuUse {
            server_us: server / requests as f64,
            client_us: client / requests as f64,
            writer_us: writer.map(|w| w / requests as f64),
            busy: (server + client) / took_us,
            writer_busy: writer.map(|w| w / took_us),
        }
    }
}

/// CPU time of this process so far, in microseconds.
pub(crate) fn own_cpu_us() -> f64 {
    cpu_ticks(std::process::id()) as f64 * 1e6 / ticks_per_second()
}

/// The load sender's token.
const LOAD_TOKEN: &str = "govhub_load-sender-token";

/// `[[auth.principals]]` for departments sending the load's source, each
/// with its token, a quota the load never reaches, and nine more
/// principals besides (a street's worth), so identifying a caller
/// compares against every one of them.
fn auth_config(senders: &[(&str, &str)]) -> String {
    use sha2::Digest;
    let mut out = String::from("[auth]\nevents_per_s = 1000000\nburst = 1000000\n");
    let others: Vec<(String, String)> = (0..9)
        .map(|i| (format!("department-{i}"), format!("govhub_other-{i}")))
        .collect();
    for (name, token) in senders
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .chain(others)
    {
        out.push_str(&format!(
            "[[auth.principals]]\nname = \"{name}\"\nrole = \"department\"\ntoken_sha256 = \"{}\"\nsources = [\"urn:govhub:load\"]\n",
            hex::encode(sha2::Sha256::digest(token.as_bytes()))
        ));
    }
    out
}

#[derive(clap::Args)]
pub struct E2eOpts {
    #[command(flatten)]
    pub common: Common,
    /// Events in the maximum-rate phase.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Most events between the sender and the department at once (below
    /// `delivery.queue_depth`, so ingress never pushes back).
    #[arg(long, default_value_t = 2_000)]
    window: usize,
    /// Seconds of the half-rate latency phase.
    #[arg(long, default_value_t = 5)]
    latency_seconds: u64,
    /// Events per second of the latency phase (default: half the maximum
    /// just measured); give the same rate to compare two builds at equal
    /// load.
    #[arg(long)]
    latency_rate: Option<f64>,
    /// The webhook adapter's `concurrency`.
    #[arg(long, default_value_t = 16)]
    adapter_concurrency: u32,
    /// The journal's `storage.synchronous` (`full` or `normal`).
    #[arg(long, default_value = "full")]
    synchronous: String,
    /// Open `GET /v1/stream` subscribers (`kind=event`) during the run.
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
    /// `read`: each subscriber reads everything (and, following events,
    /// the run checks each got every one); `stall`: each sends its
    /// request and never reads.
    #[arg(long, value_enum, default_value_t = SubscriberMode::Read)]
    subscriber_mode: SubscriberMode,
    /// The `kind` the subscribers follow: `event` (every event of the
    /// run), or e.g. `clock` (nothing of it passes: the cost of waking and
    /// filtering alone).
    #[arg(long, default_value = "event")]
    subscriber_kind: String,
    /// The events sent: `alert` (1 KB of free text) or `report` (an
    /// incident report shaped like the Yingfeng e-trike report: a
    /// reporter's name, phone and ID, a worker, photos, an address, a
    /// position, a description; about 1 KB).
    #[arg(long, value_enum, default_value_t = Events::Alert)]
    events_kind: Events,
    /// Run under the Yingfeng data-governance policy: its
    /// `[[classification]]` rules (examples/yingfeng/govhub.toml) and the
    /// village committee's grant for the department (names, phones,
    /// plates and addresses masked, positions to the grid, ID numbers and
    /// photos dropped, free text masked), a flow record per delivery.
    #[arg(long)]
    policy: bool,
    /// Export the hub's traces (`[telemetry]` on, OTLP/HTTP protobuf) to
    /// a sink in this process that reads each export and answers 200, as
    /// a collector does; prints what it received.
    #[arg(long)]
    traces: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Events {
    Alert,
    Report,
}

/// The Yingfeng policy as `e2e --policy` applies it: every classification
/// rule, and the village's grant given to the load's department.
fn yingfeng_policy() -> String {
    let config: toml::Table =
        toml::from_str(include_str!("../../../../examples/yingfeng/govhub.toml"))
            .expect("examples/yingfeng/govhub.toml parses");
    let village = config["governance"]["grants"]["village"].clone();
    let mut policy = toml::Table::new();
    policy.insert("classification".into(), config["classification"].clone());
    policy.insert(
        "governance".into(),
        toml::Value::Table(toml::Table::from_iter([(
            "grants".to_string(),
            toml::Value::Table(toml::Table::from_iter([(
                "department".to_string(),
                village,
            )])),
        )])),
    );
    toml::to_string(&policy).unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum SubscriberMode {
    Read,
    Stall,
}

/// One `GET /v1/stream?kind=KIND` over a plain socket: either reading and
/// counting `event: event` frames, or never reading at all.
struct Subscriber {
    events: Arc<AtomicUsize>,
    _task: Option<tokio::task::JoinHandle<()>>,
    _stalled: Option<tokio::net::TcpStream>,
}

async fn subscribe(base: &str, kind: &str, mode: SubscriberMode) -> Subscriber {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        format!("GET /v1/stream?kind={kind} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    // The status line and the `retry:` frame say the stream is open.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(6).any(|w| w == b"retry:") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream closed before it opened");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let events = Arc::new(AtomicUsize::new(0));
    if mode == SubscriberMode::Stall {
        return Subscriber {
            events,
            _task: None,
            _stalled: Some(tcp),
        };
    }
    let counter = events.clone();
    let task = tokio::spawn(async move {
        const MARK: &[u8] = b"event: event\n";
        let finder = memchr::memmem::Finder::new(MARK);
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry = 0;
        loop {
            let n = match tcp.read(&mut buf[carry..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let filled = carry + n;
            let seen = finder.find_iter(&buf[..filled]).count();
            counter.fetch_add(seen, Ordering::Relaxed);
            // Keep the tail that could be the start of a mark.
            carry = (MARK.len() - 1).min(filled);
            buf.copy_within(filled - carry..filled, 0);
        }
    });
    Subscriber {
        events,
        _task: Some(task),
        _stalled: None,
    }
}

/// The department: records when each event id arrived; every arrival
/// gives a permit back to the sender's window.
struct Department {
    addr: std::net::SocketAddr,
    seen: Arc<std::sync::Mutex<HashMap<String, Instant>>>,
    arrivals: Arc<AtomicUsize>,
    window: Arc<Semaphore>,
    /// TCP connections it accepted.
    connections: Arc<AtomicUsize>,
}

async fn department(window: Arc<Semaphore>) -> Department {
    let seen: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let arrivals = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (rec, count, win) = (seen.clone(), arrivals.clone(), window.clone());
    // It reads each body before answering, as a department does: a server
    // that answers first makes the client close the connection under the
    // body it is still sending.
    let app =
        axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let (rec, count, win) = (rec.clone(), count.clone(), win.clone());
            async move {
                let _ = body;
                let now = Instant::now();
                let id = headers
                    .get("ce-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                if rec.lock().unwrap().insert(id, now).is_none() {
                    count.fetch_add(1, Ordering::SeqCst);
                    win.add_permits(1);
                }
                axum::http::StatusCode::OK
            }
        });
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(move |_| {
        accepted.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Department {
        addr,
        seen,
        arrivals,
        window,
        connections,
    }
}

/// What the OTLP sink received: export requests and their bytes.
struct Sink {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl Sink {
    fn line(&self) -> String {
        format!(
            "traces: the OTLP sink received {} exports, {:.1} MB",
            self.requests.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst) as f64 / 1e6
        )
    }
}

/// An OTLP/HTTP sink: reads each `POST /v1/traces` whole and answers 200
/// with an empty `ExportTraceServiceResponse` (zero bytes of protobuf).
async fn otlp_sink() -> Sink {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let (r, b) = (requests.clone(), bytes.clone());
    let app = axum::Router::new().fallback(move |body: bytes::Bytes| {
        let (r, b) = (r.clone(), b.clone());
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            b.fetch_add(body.len(), Ordering::SeqCst);
            (
                [("content-type", "application/x-protobuf")],
                bytes::Bytes::new(),
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Sink {
        addr,
        requests,
        bytes,
    }
}

async fn wait_arrivals(dept: &Department, n: usize, timeout: Duration) -> bool {
    wait_for(timeout, || dept.arrivals.load(Ordering::SeqCst) >= n).await
}

/// User and system CPU time of a process so far, in clock ticks (Linux).
fn cpu_ticks(pid: u32) -> u64 {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// utime + stime of a `/proc/.../stat` file.
fn stat_ticks(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).expect("/proc/PID/stat (Linux only)");
    // The fields after the command name (which may hold spaces) in ")".
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The id of `pid`'s thread named `name` (Linux), if it has one.
fn thread_named(pid: u32, name: &str) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .is_ok_and(|c| c.trim() == name)
        })
}

/// User and system CPU time of one thread so far, in clock ticks (Linux).
fn thread_ticks(pid: u32, tid: u32) -> u64 {
    stat_ticks(&format!("/proc/{pid}/task/{tid}/stat"))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we run).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `adapters.d/department.toml`: the webhook adapter (`module`) posting
/// every `gov.*` event to the department at `addr`.
pub(crate) fn write_department(
    dir: &Path,
    module: &Path,
    addr: std::net::SocketAddr,
    concurrency: usize,
) {
    std::fs::create_dir_all(dir.join("adapters.d")).unwrap();
    std::fs::write(
        dir.join("adapters.d/department.toml"),
        format!(
            "name = \"department\"\nwasm = \"{}\"\nsha256 = \"{}\"\nsubscribe = [\"gov.*\"]\n[limits]\nconcurrency = {concurrency}\n[capabilities]\noutbound_hosts = [\"{addr}\"]\n[config]\nurl = \"http://{addr}/events\"\n",
            module.display(),
            govhub::runtime::sha256_file(module).unwrap(),
        ),
    )
    .unwrap();
}

/// Polls `done` until it holds or `timeout` passes.
pub(crate) async fn wait_for(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// Ingest → journal → webhook adapter → the department, closed loop with
/// at most `window` events between the sender and the department, then
/// an open loop at half that rate timing each event from when it was due
/// until the department had it.
pub async fn e2e(dir: &Path, opts: E2eOpts) {
    let (govhub, wasm_dir) = (&opts.common.govhub(), opts.common.wasm_dir());
    let E2eOpts {
        events,
        concurrency,
        window,
        latency_seconds,
        latency_rate,
        adapter_concurrency,
        synchronous,
        subscribers,
        subscriber_mode,
        subscriber_kind,
        policy,
        events_kind,
        traces,
        ..
    } = opts;
    if events_kind == Events::Report {
        crate::REPORTS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let module = wasm_dir.join("webhook_adapter.wasm");
    assert!(
        module.exists(),
        "{} is missing: build the adapters (tests/run.sh builds them)",
        module.display()
    );
    let permits = Arc::new(Semaphore::new(0));
    let dept = department(permits.clone()).await;
    write_department(dir, &module, dept.addr, adapter_concurrency as usize);
    let sink = match traces {
        true => Some(otlp_sink().await),
        false => None,
    };
    let config = format!(
        "[stream]\nmax_subscribers = 1024\n{}{}",
        if policy {
            yingfeng_policy()
        } else {
            String::new()
        },
        match &sink {
            Some(s) => format!(
                "\n[telemetry]\nenabled = true\nprotocol = \"http/protobuf\"\nendpoint = \"http://{}\"\n",
                s.addr
            ),
            None => String::new(),
        }
    );
    let hub = start_hub_with(
        govhub,
        dir,
        &config,
        &[("GOVHUB__STORAGE__SYNCHRONOUS", synchronous.as_str())],
    );
    let url = format!("{}/v1/events", hub.base);
    println!(
        "machine: {} cores; 1 KB events ({events_kind:?}), {concurrency} connections, at most {window} in the hub at once; webhook adapter, concurrency {adapter_concurrency}; journal synchronous={synchronous}; {subscribers} stream subscribers ({subscriber_mode:?}, kind={subscriber_kind}); governance policy {}",
        cores(),
        if policy { "Yingfeng, the village's grant (a flow record per delivery)" } else { "off" }
    );
    let pid = hub.child.id();
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();

    // Warm up: the adapter pool, the connections. Then the closed loop
    // through the window.
    let warm = (concurrency * 8).min(window);
    permits.add_permits(window);
    let windowed = |requests| {
        windowed_loop(
            &client,
            &url,
            CE_JSON,
            requests,
            concurrency,
            Some(permits.clone()),
            None,
        )
    };
    windowed(bodies("warm", warm)).await;
    assert!(
        wait_arrivals(&dept, warm, Duration::from_secs(60)).await,
        "the warm-up events never all arrived"
    );
    let rss_warm = crate::footprint::rss_kib(pid);
    let mut subs = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        subs.push(subscribe(&hub.base, &subscriber_kind, subscriber_mode).await);
    }
    let rss_open = crate::footprint::rss_kib(pid);
    if subscribers > 0 {
        println!(
            "hub resident: {:.1} MiB after the warm-up, {:.1} MiB with {subscribers} streams open = {:.0} KiB per stream",
            rss_warm as f64 / 1024.0,
            rss_open as f64 / 1024.0,
            (rss_open as f64 - rss_warm as f64) / subscribers as f64
        );
    }
    let requests = bodies("max", events);
    let cpu = Cpu::start(pid);
    let started = Instant::now();
    windowed(requests).await;
    let complete = wait_arrivals(&dept, warm + events, Duration::from_secs(300)).await;
    let took = started.elapsed();
    let cpu = cpu.per_request(events, took);
    let delivered = dept.arrivals.load(Ordering::SeqCst) - warm;
    assert!(
        complete,
        "only {delivered} of {events} events reached the department"
    );
    let max = events as f64 / took.as_secs_f64();
    println!(
        "end to end, closed loop: {events} events delivered in {:.2} s = {max:.0} events/s",
        took.as_secs_f64()
    );
    let opened = dept.connections.load(Ordering::SeqCst);
    println!(
        "connections the department accepted: {opened} for {} deliveries = {:.1} per 1,000",
        warm + events,
        1000.0 * opened as f64 / (warm + events) as f64
    );
    let writer_use = cpu
        .writer_us
        .map(|w| format!(" (its journal writer thread {w:.1} µs)"))
        .unwrap_or_default();
    println!(
        "CPU during it: the hub {:.1} µs per event{writer_use}, this load generator (senders, department, subscribers) {:.1} µs per event",
        cpu.server_us, cpu.client_us
    );
    let rss_max = crate::footprint::rss_kib(pid);
    println!(
        "hub resident after the maximum-rate phase: {:.1} MiB (after the warm-up: {:.1} MiB)",
        rss_max as f64 / 1024.0,
        rss_warm as f64 / 1024.0
    );
    if subscriber_mode == SubscriberMode::Read && subscriber_kind == "event" && subscribers > 0 {
        // Every subscriber sees every event (they come before the
        // department has them, so a short wait is enough).
        let ok = wait_for(Duration::from_secs(60), || {
            subs.iter()
                .all(|s| s.events.load(Ordering::Relaxed) >= events)
        })
        .await;
        let least = subs
            .iter()
            .map(|s| s.events.load(Ordering::Relaxed))
            .min()
            .unwrap();
        assert!(ok, "a subscriber saw only {least} of {events} events");
        println!("every one of the {subscribers} subscribers saw all {events} events");
    }

    // Open loop at half of it (or the rate asked): no window, each event
    // due at start + i/rate.
    dept.window.add_permits(1 << 20);
    let rate = latency_rate.unwrap_or(max / 2.0);
    let at = if latency_rate.is_some() {
        "the rate asked"
    } else {
        "half the maximum"
    };
    let total = (rate * latency_seconds as f64) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(concurrency);
    for lane in 0..concurrency {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for i in (lane..total).step_by(concurrency) {
                tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
                let body = bytes::Bytes::from(event_json(&format!("lat-{i}")).to_string());
                let status = post(&client, &url, CE_JSON, body).await;
                assert_eq!(status, 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let before = warm + events;
    let complete = wait_arrivals(&dept, before + total, Duration::from_secs(120)).await;
    let start = start.into_std();
    let seen = dept.seen.lock().unwrap();
    let mut lat: Vec<Duration> = (0..total)
        .filter_map(|i| {
            seen.get(&format!("lat-{i}"))
                .map(|at| at.saturating_duration_since(start + interval.mul_f64(i as f64)))
        })
        .collect();
    assert!(
        complete,
        "only {} of {total} timed events arrived",
        lat.len()
    );
    if std::env::var_os("GOVHUB_LOAD_TIMELINE").is_some() {
        // The slowest event of each 100 ms, to see whether the tail is
        // spread out or comes in bursts.
        let mut worst: std::collections::BTreeMap<usize, f64> = Default::default();
        for i in 0..total {
            if let Some(at) = seen.get(&format!("lat-{i}")) {
                let due = start + interval.mul_f64(i as f64);
                let bucket = (due - start).as_millis() as usize / 100;
                let l = ms(at.saturating_duration_since(due));
                let w = worst.entry(bucket).or_default();
                *w = w.max(l);
            }
        }
        let line: Vec<String> = worst.values().map(|v| format!("{v:.0}")).collect();
        println!("slowest per 100 ms (ms): {}", line.join(" "));
    }
    lat.sort();
    println!(
        "end to end at {rate:.0} events/s ({at}), {total} events, sent to received: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap())
    );
    if let Some(sink) = &sink {
        println!("{}", sink.line());
    }
    drop(hub);
}
