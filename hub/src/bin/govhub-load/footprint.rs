//! `govhub-load memory` and `govhub-load startup`: what adapters cost in
//! resident memory, and how long the Yingfeng deployment takes to serve.

use super::*;

/// Resident set of a process, from /proc (Linux), in KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status (Linux only)")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A department that answers after `delay`, so deliveries stay in flight.
async fn slow_department(delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        axum::http::StatusCode::OK
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn webhook_manifest(
    name: &str,
    module: &Path,
    sha: &str,
    department: std::net::SocketAddr,
    concurrency: u32,
) -> String {
    format!(
        "name = \"{name}\"\nwasm = \"{}\"\nsha256 = \"{sha}\"\nsubscribe = [\"gov.memory.{name}\"]\n[limits]\nconcurrency = {concurrency}\n[capabilities]\noutbound_hosts = [\"{department}\"]\n[config]\nurl = \"http://{department}/events\"\n",
        module.display()
    )
}

/// Waits a moment for the allocator to settle, then reads the RSS twice
/// and keeps the larger.
async fn settled_rss(pid: u32) -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = rss_kib(pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.max(rss_kib(pid))
}

#[derive(clap::Args)]
pub struct MemoryOpts {
    #[command(flatten)]
    pub common: Common,
    /// Instances one adapter's pool grows to.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(2..))]
    instances: u32,
}

#[derive(clap::Args)]
pub struct StartupOpts {
    #[command(flatten)]
    pub common: Common,
    /// Cold starts (each with a new, empty compile cache).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    cold: u64,
    /// Warm starts.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    warm: u64,
}

/// RSS of the hub with 0, 10 and 100 copies of the webhook adapter loaded
/// (one idle instance each, as after start), then the cost of each
/// further instance: one adapter's pool grown to `instances` by
/// deliveries held open by a slow department.
pub async fn memory(dir: &Path, opts: MemoryOpts) {
    let (govhub, instances) = (&opts.common.govhub(), opts.instances);
    let module = opts.common.wasm_dir().join("webhook_adapter.wasm");
    assert!(
        module.exists(),
        "{} is missing: build the adapters (tests/run.sh builds them)",
        module.display()
    );
    let sha = govhub::runtime::sha256_file(&module).unwrap();
    let department = slow_department(Duration::from_millis(1500)).await;
    // One compile cache for every run: start-up compiles once, and the
    // figures are what a running hub holds, not the compiler's peak.
    let cache = dir.join("cache");
    let cache_env = [("GOVHUB__RUNTIME__CACHE_DIR", cache.to_str().unwrap())];
    println!(
        "machine: {} cores; webhook adapter ({} KiB module); journal synchronous=full",
        cores(),
        std::fs::metadata(&module).unwrap().len() / 1024
    );
    let mut rss = Vec::new();
    // The first start (n = None) fills the compile cache and is not
    // measured.
    for n in [None, Some(0usize), Some(1), Some(10), Some(100)] {
        let warm_up = n.is_none();
        let n = n.unwrap_or(1);
        let hub_dir = dir.join(format!("hub-{n}-{warm_up}"));
        let adapters = hub_dir.join("adapters.d");
        std::fs::create_dir_all(&adapters).unwrap();
        for i in 0..n {
            std::fs::write(
                adapters.join(format!("w{i}.toml")),
                webhook_manifest(&format!("w{i}"), &module, &sha, department, 4),
            )
            .unwrap();
        }
        let hub = start_hub_with(govhub, &hub_dir, "", &cache_env);
        if warm_up {
            continue;
        }
        let kib = settled_rss(hub.child.id()).await;
        rss.push((n, kib));
        if n == 0 {
            println!("| adapters loaded | hub RSS | above no adapters | per adapter |");
            println!("|---|---|---|---|");
            println!("| 0 | {:.1} MiB | | |", mib(kib));
        } else {
            let above = kib.saturating_sub(rss[0].1);
            println!(
                "| {n} | {:.1} MiB | {:.1} MiB | {:.2} MiB |",
                mib(kib),
                mib(above),
                mib(above) / n as f64
            );
        }
    }

    // One adapter, its pool grown from 1 instance to `instances`.
    let hub_dir = dir.join("hub-pool");
    let adapters = hub_dir.join("adapters.d");
    std::fs::create_dir_all(&adapters).unwrap();
    std::fs::write(
        adapters.join("w0.toml"),
        webhook_manifest("w0", &module, &sha, department, instances),
    )
    .unwrap();
    let hub = start_hub_with(govhub, &hub_dir, "", &cache_env);
    let before = settled_rss(hub.child.id()).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("{}/v1/events", hub.base);
    for i in 0..instances {
        let mut e = event_json(&format!("pool-{i}"));
        e["type"] = "gov.memory.w0".into();
        let status = post(&client, &url, CE_JSON, bytes::Bytes::from(e.to_string())).await;
        assert_eq!(status, 202);
    }
    // The department holds each delivery 1.5 s: all `instances` are busy
    // at once, then idle in the pool.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = settled_rss(hub.child.id()).await;
    // The hub's own count of the adapter's instances.
    let req = hyper::Request::get(format!("{}/metrics", hub.base))
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let metrics = client
        .request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let pool: f64 = String::from_utf8_lossy(&metrics)
        .lines()
        .find(|l| l.starts_with("govhub_adapter_pool_size{adapter=\"w0\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    assert_eq!(
        pool, instances as f64,
        "the pool did not grow to {instances}"
    );
    let per = mib(after.saturating_sub(before)) / (instances - 1).max(1) as f64;
    println!(
        "one adapter's pool grown from 1 to {instances} instances: {:.1} MiB → {:.1} MiB = {per:.2} MiB per further instance",
        mib(before),
        mib(after)
    );
}

/// Start-up to ready (the `listening on` line, printed once every adapter
/// is loaded) with the Yingfeng deployment: compile cache cold (a new
/// empty cache each time) and warm; beside raw wasmtime compiling the same
/// modules, and deserializing them, in this process.
pub async fn startup(dir: &Path, opts: StartupOpts) {
    let (govhub, wasm_dir) = (&opts.common.govhub(), &opts.common.wasm_dir());
    let (cold, warm) = (opts.cold as usize, opts.warm as usize);
    let deployment = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/yingfeng");
    let work = dir.join("yingfeng");
    govhub::demo::render(&deployment, wasm_dir, &work, "http://127.0.0.1:9").unwrap();
    let modules: Vec<PathBuf> = std::fs::read_dir(work.join("adapters.d"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    let total: u64 = modules
        .iter()
        .map(|m| std::fs::metadata(m).unwrap().len())
        .sum();
    println!(
        "machine: {} cores; Yingfeng deployment: {} adapters, {} KiB of modules",
        cores(),
        modules.len(),
        total / 1024
    );

    // Raw wasmtime, the hub's engine settings, one module after another.
    let runtime = govhub::runtime::Runtime::new(govhub::runtime::RuntimeConfig::default()).unwrap();
    let engine = runtime.engine().clone();
    let started = Instant::now();
    let compiled: Vec<Vec<u8>> = modules
        .iter()
        .map(|m| {
            engine
                .precompile_component(&std::fs::read(m).unwrap())
                .unwrap()
        })
        .collect();
    let raw_compile = started.elapsed();
    let started = Instant::now();
    for c in &compiled {
        // SAFETY: bytes this engine produced just above.
        unsafe { wasmtime::component::Component::deserialize(&engine, c) }.unwrap();
    }
    let raw_load = started.elapsed();

    // The deployment's principals take their tokens from the environment.
    let config = govhub::config::Config::load(&work.join("govhub.toml")).unwrap();
    let tokens: Vec<(String, String)> = config
        .auth
        .principals
        .iter()
        .filter_map(|p| p.token_env.clone())
        .map(|var| (var, govhub::auth::principal::new_token().unwrap()))
        .collect();
    let time_start = |cache: &Path| {
        let mut env = vec![
            ("GOVHUB__RUNTIME__CACHE_DIR", cache.to_str().unwrap()),
            ("GOVHUB__SERVER__LISTEN", "127.0.0.1:0"),
        ];
        env.extend(tokens.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let started = Instant::now();
        let hub = spawn_config(govhub, &work.join("govhub.toml"), &work, &env);
        let took = started.elapsed();
        drop(hub);
        took
    };
    let mut colds: Vec<f64> = (0..cold)
        .map(|i| {
            let cache = dir.join(format!("cache-cold-{i}"));
            ms(time_start(&cache))
        })
        .collect();
    let cache = dir.join("cache-warm");
    time_start(&cache);
    let mut warms: Vec<f64> = (0..warm).map(|_| ms(time_start(&cache))).collect();
    println!("| start-up to ready | govhub (median) | raw wasmtime, same modules | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| compile cache cold ({cold} runs) | {:.0} ms | compile: {:.0} ms | {:.2}× |",
        median(&mut colds),
        ms(raw_compile),
        median(&mut colds) / ms(raw_compile)
    );
    println!(
        "| compile cache warm ({warm} runs) | {:.0} ms | deserialize: {:.1} ms | {:.1}× |",
        median(&mut warms),
        ms(raw_load),
        median(&mut warms) / ms(raw_load)
    );
}
