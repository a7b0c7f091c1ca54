//! The `govhub` command line.

use crate::config::Config;
use crate::hub::Hub;
use crate::runtime::{Manifest, Runtime, RuntimeConfig};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use govhub_sdk::{cloudevents, Header, Inbound};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod ops;
mod scaffold;

#[derive(Parser)]
#[command(
    name = "govhub",
    version,
    about = "Integration hub for street-level social governance"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "GOVHUB_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the Yingfeng deployment on loopback with the mock departments and
    /// replay its two stories (typhoon river patrol, e-trike congestion).
    Demo {
        /// Folder with the built adapters (police_adapter.wasm, ...).
        #[arg(long)]
        wasm_dir: Option<PathBuf>,
        /// The deployment to render (default: examples/yingfeng).
        #[arg(long)]
        deployment: Option<PathBuf>,
        /// Render it here and keep it (default: a temporary folder).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// The mock-departments binary (default: next to govhub).
        #[arg(long)]
        mock: Option<PathBuf>,
        /// Keep the hub running with its cockpit: wait for a browser to open
        /// it, replay the stories at a watchable pace, then a day at
        /// Yingfeng, until Ctrl-C.
        #[arg(long)]
        serve: bool,
        /// With --serve: where the hub and its cockpit listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// With --serve: the pause after each step, ms.
        #[arg(long, default_value_t = 1500)]
        pace_ms: u64,
        /// With --serve: start at once, without waiting for the cockpit.
        #[arg(long)]
        no_wait: bool,
    },
    /// Check a config file and every adapter manifest it loads, then exit.
    CheckConfig {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Work on one adapter module: scaffold, inspect, test offline, sign.
    #[command(subcommand)]
    Adapter(AdapterCommand),
    /// Manage the adapters of a running hub (its admin API): list, load a
    /// new version, unload, roll back.
    #[command(subcommand)]
    Adapters(ops::AdaptersCommand),
    /// The tamper-evident audit log of adapter loads and admin actions.
    #[command(subcommand)]
    Audit(ops::AuditCommand),
    /// Principals: make a token for one.
    #[command(subcommand)]
    Auth(ops::AuthCommand),
}

#[derive(Subcommand)]
enum AdapterCommand {
    /// Scaffold a new adapter crate that builds and passes its own test.
    New {
        /// The adapter's name (a-z, 0-9, -).
        name: String,
        /// Where to create the crate (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Path to the govhub-sdk crate (default: the SDK of this govhub's
        /// source tree).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Print what a module implements and what it says about itself.
    Inspect {
        /// The adapter module (.wasm).
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Run a module's ingest or deliver offline and print the result.
    Test(TestArgs),
    /// Make an ed25519 key pair for signing modules.
    Keygen {
        /// Where to write the secret key (the public key goes to OUT.pub).
        #[arg(long, default_value = "govhub-signing.key")]
        out: PathBuf,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Sign a module: writes MODULE.wasm.sig beside it.
    Sign {
        /// The adapter module (.wasm).
        module: PathBuf,
        /// The secret key file made by `govhub adapter keygen`.
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Args)]
struct CacheArgs {
    /// Compile cache folder (default: $GOVHUB_CACHE_DIR, else ~/.cache/govhub).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Args)]
struct TestArgs {
    /// The adapter module (.wasm).
    file: PathBuf,
    /// A raw department payload to hand to `ingest`.
    #[arg(long, conflicts_with = "deliver", required_unless_present = "deliver")]
    ingest: Option<PathBuf>,
    /// A CloudEvent (JSON) to hand to `deliver`.
    #[arg(long)]
    deliver: Option<PathBuf>,
    /// A header of the inbound message, `name:value` (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// An adapter config value, `key=value` (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// A host the adapter may call, `host:port` (repeatable; none by default).
    #[arg(long = "allow-host", value_name = "HOST:PORT")]
    allow_hosts: Vec<String>,
    /// Memory cap, MiB.
    #[arg(long, default_value_t = crate::runtime::manifest::DEFAULT_MEMORY_MB)]
    memory_mb: u32,
    /// Per-call deadline, ms.
    #[arg(long, default_value_t = crate::runtime::manifest::DEFAULT_DEADLINE_MS)]
    deadline_ms: u64,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Runs the CLI; the exit code is 0 on success, 1 on failure, 2 on usage
/// errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story; only warnings from the hub.
    let default_filter = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info,wasmtime=warn,cranelift=warn",
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("govhub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `run` reads its config before the log starts: when it turns traces
    // on, the exporting layer is there from the first span.
    let mut loaded = None;
    let mut telemetry = None;
    if let Command::Run { config } = &cli.command {
        let _inside = runtime.enter();
        let started = Config::load(config).and_then(|c| {
            let t =
                crate::telemetry::Telemetry::start(&c.telemetry, &c.tls).context("telemetry")?;
            Ok((c, t))
        });
        match started {
            Ok((c, t)) => {
                loaded = Some(c);
                telemetry = t;
            }
            Err(e) => {
                eprintln!("govhub: error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    init_tracing(cli.log_json, default_filter, telemetry.as_ref());
    if let Some(t) = &telemetry {
        tracing::info!(
            endpoint = %t.target.endpoint,
            protocol = t.target.protocol.as_str(),
            "telemetry: exporting traces"
        );
    }
    let result = runtime.block_on(dispatch(cli.command, loaded));
    // The last spans, sent on the runtime while it still runs.
    if let Some(t) = telemetry {
        t.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("govhub: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log (stderr, text or JSON, filtered by `GOVHUB_LOG`) and, when
/// traces are on, the layer exporting the hub's spans with its own filter
/// (`crate::telemetry::exported`), whatever `GOVHUB_LOG` says. Without
/// traces the subscriber is the log alone, as cheap as before them.
fn init_tracing(json: bool, default_filter: &str, telemetry: Option<&crate::telemetry::Telemetry>) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("GOVHUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let log_level = filter.max_level_hint();
    match telemetry {
        // The log alone, its filter global: what the hub had before traces.
        None => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr);
            if json {
                builder.json().init();
            } else {
                builder.init();
            }
        }
        Some(t) => {
            // No busy/idle timing per poll of a future, no thread or
            // source location per span: what a governance trace needs is
            // the span's own times and attributes, at the least cost.
            let traces = tracing_opentelemetry::layer()
                .with_tracer(t.tracer())
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_filter(
                    tracing_subscriber::filter::filter_fn(crate::telemetry::exported)
                        .with_max_level_hint(tracing::level_filters::LevelFilter::DEBUG),
                );
            tracing_subscriber::registry()
                .with(traces)
                .with(log_layer(json).with_filter(filter))
                .init();
            // The `log` crate's records (wasmtime, cranelift) are wanted
            // by the log alone: they stay as cheap as its level makes
            // them, not raised to the spans' `debug`.
            log::set_max_level(match log_level {
                Some(tracing::level_filters::LevelFilter::OFF) => log::LevelFilter::Off,
                Some(tracing::level_filters::LevelFilter::ERROR) => log::LevelFilter::Error,
                Some(tracing::level_filters::LevelFilter::WARN) => log::LevelFilter::Warn,
                Some(tracing::level_filters::LevelFilter::INFO) => log::LevelFilter::Info,
                Some(tracing::level_filters::LevelFilter::DEBUG) => log::LevelFilter::Debug,
                _ => log::LevelFilter::Trace,
            });
        }
    }
}

/// The log's layer: stderr, text or JSON.
fn log_layer<S>(json: bool) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        layer.json().boxed()
    } else {
        layer.boxed()
    }
}

async fn dispatch(command: Command, loaded: Option<Config>) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => match loaded {
            Some(c) => run(c).await,
            None => run(Config::load(&config)?).await,
        },
        Command::CheckConfig { config } => check_config(&config).await,
        Command::Demo {
            wasm_dir,
            deployment,
            workdir,
            mock,
            serve,
            listen,
            pace_ms,
            no_wait,
        } => {
            crate::demo::run(crate::demo::Options {
                wasm_dir,
                deployment,
                workdir,
                mock,
                serve: serve.then(|| crate::demo::Serve {
                    listen,
                    pace: std::time::Duration::from_millis(pace_ms),
                    no_wait,
                }),
            })
            .await
        }
        Command::Adapter(AdapterCommand::New {
            name,
            dir,
            sdk_path,
        }) => scaffold::new_adapter(&name, dir, sdk_path),
        Command::Adapter(AdapterCommand::Inspect { file, json, cache }) => {
            inspect(&file, json, cache).await
        }
        Command::Adapter(AdapterCommand::Test(args)) => test(args).await,
        Command::Adapter(AdapterCommand::Keygen { out, force }) => ops::keygen(&out, force),
        Command::Adapter(AdapterCommand::Sign { module, key }) => ops::sign(&module, &key),
        Command::Adapters(c) => ops::adapters(c).await,
        Command::Audit(c) => ops::audit(c).await,
        Command::Auth(c) => ops::auth(c),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let hub = Hub::start(config).await?;
    let addr: std::net::SocketAddr = hub.config.server.listen.parse()?;
    hub.auth.check_exposure(&addr)?;
    let app = crate::ingress::router(hub.clone())?;
    let listener = tokio::net::TcpListener::bind(&hub.config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", hub.config.server.listen))?;
    let addr = listener.local_addr()?;
    // One line on stdout that scripts and tests wait for.
    println!("govhub: listening on http://{addr}");
    tracing::info!(
        %addr,
        adapters = ?hub.adapter_names(),
        principals = hub.auth.principals().len(),
        "govhub is serving"
    );
    if !hub.auth.enabled() {
        tracing::warn!(
            "no principals: every route but the admin API is open to anyone who reaches {addr}"
        );
    }
    hub.run_background().await?;
    // Answers go out at once, not held back waiting for an ACK (Nagle).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let streams = hub.streams.clone();
    let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        // Open streams never end on their own: end them, or they
        // would hold the shutdown.
        streams.stop();
        let _ = signalled.send(());
    });
    // A connection that stops reading (a stream whose client froze with
    // its socket full) would hold the drain forever: it gets the grace.
    let grace = Duration::from_millis(hub.config.server.shutdown_grace_ms);
    tokio::select! {
        served = async { serve.await } => served?,
        _ = async {
            if on_signal.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!("connections still open after server.shutdown_grace_ms: closed");
        }
    }
    hub.shutdown().await;
    tracing::info!("govhub stopped");
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: no new requests; finishing those in flight");
}

async fn check_config(config_path: &Path) -> anyhow::Result<()> {
    // Checks without touching the journal: the config, the routes, the
    // grid map, and every manifest compiled, instantiated and described.
    let config = Config::load(config_path)?;
    if let Some(path) = &config.grids.map {
        crate::router::grids::GridMap::load(path, config.grids.street.as_deref())?;
    }
    let principals = crate::auth::load_principals(&config.auth)?;
    // A grant that does not load stops deliveries to its recipient at
    // run time; here it is an error.
    let broken: Vec<String> = config
        .governance
        .grants
        .iter()
        .filter_map(|(name, pairs)| {
            crate::governance::policy::parse_grant(pairs)
                .err()
                .map(|e| format!("governance.grants.{name}: {e}"))
        })
        .collect();
    if !broken.is_empty() {
        anyhow::bail!(
            "{} grant(s) do not load (their recipients would get nothing): {}",
            broken.len(),
            broken.join("; ")
        );
    }
    let keys = crate::admin::signing::parse_keys(&config.signing.trusted_keys)?;
    let runtime = Runtime::new(config.runtime_config(None))?;
    let router = crate::router::Router::new(&config.routes).map_err(anyhow::Error::msg)?;
    let mut names = Vec::new();
    let mut lines = Vec::new();
    for path in crate::hub::manifest_paths(&config.adapters.dir)? {
        let c = crate::admin::versions::Candidate::from_file(&path)?;
        let module = crate::runtime::read_module(&c.manifest)?;
        let signed = crate::admin::signing::check(
            &c.manifest.name,
            &module,
            c.signature.as_deref(),
            &keys,
            config.signing.require_signatures,
        )?;
        let a = runtime.load(&c.manifest).await?;
        names.push(c.manifest.name.clone());
        lines.push(format!(
            "  adapter {}: {} {} ({}), sha256 {}{}",
            c.manifest.name,
            a.description.name,
            a.description.version,
            a.world,
            a.sha256,
            if signed { ", signed" } else { "" }
        ));
    }
    for (route, target) in router.route_targets() {
        if !names.iter().any(|n| n == target) {
            anyhow::bail!(
                "route `{route}` sends to adapter `{target}`, but no manifest in {} names it",
                config.adapters.dir.display()
            );
        }
    }
    println!("config {} is valid", config_path.display());
    for line in lines {
        println!("{line}");
    }
    println!("  routes: {}", config.routes.len());
    if config.classification.is_empty() {
        println!("  data governance: off (no [[classification]])");
    } else {
        println!(
            "  data governance: {} classification rule(s), grants for {}",
            config.classification.len(),
            config
                .governance
                .grants
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if principals.is_empty() {
        println!("  principals: none (every route but the admin API is open; loopback only unless auth.open)");
    } else {
        let list: Vec<String> = principals
            .iter()
            .map(|p| format!("{} ({})", p.name, p.role.as_str()))
            .collect();
        println!("  principals: {}", list.join(", "));
    }
    Ok(())
}

fn cache_dir(args: &CacheArgs) -> Option<PathBuf> {
    args.cache_dir
        .clone()
        .or_else(|| std::env::var_os("GOVHUB_CACHE_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("govhub")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/govhub")))
}

/// An adapter name from a module file name: `police_adapter.wasm` →
/// `police-adapter`.
fn name_from_file(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if name.is_empty() {
        "adapter".into()
    } else {
        name
    }
}

async fn inspect(file: &Path, json: bool, cache: CacheArgs) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: cache_dir(&cache),
        ..RuntimeConfig::default()
    })?;
    let manifest = Manifest::for_module(file, &name_from_file(file));
    let adapter = runtime.load(&manifest).await?;
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let d = &adapter.description;
    if json {
        let out = serde_json::json!({
            "file": file,
            "bytes": size,
            "sha256": adapter.sha256,
            "world": adapter.world,
            "hub_wit_version": crate::runtime::WIT_VERSION,
            "imports": adapter.imports,
            "describe": {
                "name": d.name,
                "version": d.version,
                "department": d.department,
                "subscriptions": d.subscriptions,
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "file:          {} ({} KiB)",
        file.display(),
        size.div_ceil(1024)
    );
    println!("sha256:        {}", adapter.sha256);
    println!(
        "implements:    {} (world govhub:adapter/adapter; this hub implements {})",
        adapter.world,
        crate::runtime::WIT_VERSION
    );
    println!("exports:       describe, ingest, deliver, poll");
    println!("imports:");
    for i in &adapter.imports {
        println!("  {i}");
    }
    println!("describe:");
    println!("  name:          {}", d.name);
    println!("  version:       {}", d.version);
    println!("  department:    {}", d.department);
    println!(
        "  subscriptions: {}",
        if d.subscriptions.is_empty() {
            "(none)".to_string()
        } else {
            d.subscriptions.join(", ")
        }
    );
    println!();
    println!("a manifest to start from (adapters.d/{}.toml):", d.name);
    println!("name = \"{}\"", d.name);
    println!(
        "wasm = \"{}\"",
        file.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default()
    );
    println!("sha256 = \"{}\"", adapter.sha256);
    println!("subscribe = []");
    println!(
        "[limits]\nmemory_mb = {}\ndeadline_ms = {}\nconcurrency = {}",
        crate::runtime::manifest::DEFAULT_MEMORY_MB,
        crate::runtime::manifest::DEFAULT_DEADLINE_MS,
        crate::runtime::manifest::DEFAULT_CONCURRENCY
    );
    println!("[capabilities]\noutbound_hosts = []\n[config]");
    Ok(())
}

fn split_pair<'a>(s: &'a str, sep: char, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    s.split_once(sep)
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{what} `{s}` must look like name{sep}value"))
}

async fn test(args: TestArgs) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: cache_dir(&args.cache),
        ..RuntimeConfig::default()
    })?;
    let mut manifest = Manifest::for_module(&args.file, &name_from_file(&args.file));
    manifest.limits.memory_mb = args.memory_mb;
    manifest.limits.deadline_ms = args.deadline_ms;
    for host in &args.allow_hosts {
        crate::runtime::manifest::HostPattern::parse(host)
            .map_err(|m| anyhow::anyhow!("--allow-host: {m}"))?;
        manifest.capabilities.outbound_hosts.push(host.clone());
    }
    for pair in &args.config {
        let (k, v) = split_pair(pair, '=', "--config")?;
        manifest.config.insert(
            k.to_string(),
            crate::runtime::manifest::ConfigValue::Text(v.to_string()),
        );
    }
    let adapter = runtime.load(&manifest).await?;
    let name = manifest.name.clone();
    if let Some(sample) = &args.ingest {
        let body = std::fs::read(sample)
            .with_context(|| format!("cannot read the sample {}", sample.display()))?;
        let mut headers: Vec<Header> = Vec::new();
        for h in &args.headers {
            let (n, v) = split_pair(h, ':', "--header")?;
            headers.push(Header {
                name: n.to_ascii_lowercase(),
                value: v.to_string(),
            });
        }
        if !headers.iter().any(|h| h.name == "content-type") {
            let guessed = match sample.extension().and_then(|e| e.to_str()) {
                Some("json") => "application/json",
                Some("xml") => "application/xml",
                Some("txt") => "text/plain; charset=utf-8",
                _ => "application/octet-stream",
            };
            headers.push(Header {
                name: "content-type".into(),
                value: guessed.into(),
            });
        }
        let message = Inbound {
            method: "POST".into(),
            query: String::new(),
            headers,
            body,
        };
        let events = adapter
            .ingest(&message)
            .await
            .map_err(|e| anyhow::anyhow!("adapter `{name}` ingest failed: {e}"))?;
        let normalized = events
            .into_iter()
            .map(|e| crate::hub::normalize(e, Some(&name), crate::journal::now_ms()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("adapter `{name}` produced an invalid event: {e}"))?;
        let json: Vec<serde_json::Value> = normalized.iter().map(cloudevents::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else if let Some(event_file) = &args.deliver {
        let text = std::fs::read(event_file)
            .with_context(|| format!("cannot read the event {}", event_file.display()))?;
        let value: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not JSON", event_file.display()))?;
        let event = cloudevents::from_json(&value).map_err(|e| {
            anyhow::anyhow!("{} is not a valid CloudEvent: {e}", event_file.display())
        })?;
        let outcome = adapter
            .deliver(&event)
            .await
            .map_err(|e| anyhow::anyhow!("adapter `{name}` deliver failed: {e}"))?;
        let out = serde_json::json!({
            "delivered": true,
            "reference": outcome.reference,
            "note": outcome.note,
            "events": outcome.events.iter().map(cloudevents::to_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
