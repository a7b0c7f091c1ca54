//! `govhub demo`: the typhoon river patrol, replayed on loopback with the
//! shipped adapters.
//!
//! The video patrol reports a person taking a small boat onto the Qiantang
//! river (a CloudEvent through the generic webhook adapter, loaded as
//! `video-patrol`); the hub routes it to the police station (police
//! adapter → the CAD's dispatch endpoint) and to the grid worker's app
//! (the webhook adapter again, loaded as `grid-app`). Both departments are
//! stand-ins on loopback that record what they receive. The demo prints
//! who got what, when, and exits 0 only if both did.

use crate::config::Config;
use crate::hub::Hub;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a stand-in department received.
#[derive(Clone, Debug)]
struct Delivery {
    at: Instant,
    path: String,
    summary: String,
}

/// A loopback stand-in for a department system: records each request and
/// answers `status` with `body`.
async fn department(answer: &'static str) -> anyhow::Result<(String, Arc<Mutex<Vec<Delivery>>>)> {
    let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let sink = received.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let sink = sink.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let header = |n: &str| {
                parts
                    .headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let summary = if !header("ce-type").is_empty() {
                format!("CloudEvent {} id={}", header("ce-type"), header("ce-id"))
            } else {
                format!(
                    "{} (idempotency-key {})",
                    String::from_utf8_lossy(&body),
                    header("idempotency-key")
                )
            };
            if let Ok(mut v) = sink.lock() {
                v.push(Delivery {
                    at: Instant::now(),
                    path: parts.uri.path().to_string(),
                    summary,
                });
            }
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                answer,
            )
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, received))
}

fn default_wasm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/adapters/wasm32-wasip2/release")
}

fn install(dir: &Path, name: &str, module: &Path, tables: &str) -> anyhow::Result<()> {
    let file = format!("{name}.wasm");
    std::fs::copy(module, dir.join(&file))
        .with_context(|| format!("cannot copy {}", module.display()))?;
    let sha = crate::runtime::sha256_file(module)?;
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("name = \"{name}\"\nwasm = \"{file}\"\nsha256 = \"{sha}\"\n{tables}\n"),
    )?;
    Ok(())
}

/// Runs the demo; `Err` (exit 1) unless every department got its event.
pub async fn run(wasm_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let wasm_dir = wasm_dir.unwrap_or_else(default_wasm_dir);
    let module = |crate_file: &str| -> anyhow::Result<PathBuf> {
        let p = wasm_dir.join(crate_file);
        if p.exists() {
            Ok(p)
        } else {
            anyhow::bail!(
                "{} not found: build the adapters first (examples/demo.sh does), or pass --wasm-dir",
                p.display()
            )
        }
    };
    let police_wasm = module("police_adapter.wasm")?;
    let webhook_wasm = module("webhook_adapter.wasm")?;

    let (cad, cad_got) = department(r#"{"dispatch_no":"钱江-D-0815"}"#).await?;
    let (grid_app, grid_got) = department("{}").await?;

    let work = tempfile::tempdir()?;
    let adapters = work.path().join("adapters.d");
    std::fs::create_dir_all(&adapters)?;
    install(
        &adapters,
        "police",
        &police_wasm,
        &format!(
            "[capabilities]\noutbound_hosts = [\"{cad}\"]\n[config]\nbase_url = \"http://{cad}\""
        ),
    )?;
    install(&adapters, "video-patrol", &webhook_wasm, "")?;
    install(
        &adapters,
        "grid-app",
        &webhook_wasm,
        &format!("[capabilities]\noutbound_hosts = [\"{grid_app}\"]\n[config]\nurl = \"http://{grid_app}/grid-worker/tasks\""),
    )?;
    let config_path = work.path().join("govhub.toml");
    std::fs::write(
        &config_path,
        r#"
[server]
listen = "127.0.0.1:0"

[[routes]]
name = "people on the river during a typhoon"
match = { type = "gov.incident.*", category = "safety.water" }
to = ["police", "grid-app"]
"#,
    )?;
    let mut config = Config::load(&config_path)?;
    if let Some(cache) = std::env::var_os("GOVHUB_CACHE_DIR") {
        config.runtime.cache_dir = Some(PathBuf::from(cache));
    }
    let hub = Hub::start(config).await?;
    hub.run_background()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = crate::ingress::router(hub.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    println!("govhub demo: hub on {base}, police CAD on {cad}, grid worker app on {grid_app}");
    println!();
    println!("typhoon river patrol");
    let started = Instant::now();
    println!(
        "  {:>7}  video patrol: person taking a small boat onto the Qiantang river",
        "0 ms"
    );

    // The video patrol's detection, as a binary-mode CloudEvent.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = http::Request::post(format!("{base}/v1/ingest/video-patrol"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "vp-20250801-140455-cam17")
        .header("ce-source", "urn:city-brain:video-patrol")
        .header("ce-type", "gov.incident.reported")
        .header("ce-time", "2025-08-01T14:04:55+08:00")
        .header("ce-category", "safety.water")
        .header("ce-severity", "critical")
        .header("ce-grid", "yingfeng/yingyi/2")
        .header("ce-lat", "30.2398")
        .header("ce-lon", "120.2026")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            r#"{"camera":"cam-17","detection":"person+boat","confidence":0.93,"description":"台风预警期间有人驾驶小船进入钱塘江"}"#,
        )))?;
    let response = client.request(request).await?;
    let status = response.status();
    println!(
        "  {:>7}  hub accepted the report: HTTP {status}",
        format!("{} ms", started.elapsed().as_millis())
    );
    if !status.is_success() {
        anyhow::bail!("the hub refused the report: HTTP {status}");
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done = !cad_got.lock().map(|v| v.is_empty()).unwrap_or(true)
            && !grid_got.lock().map(|v| v.is_empty()).unwrap_or(true);
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut timeline: Vec<(Duration, String)> = Vec::new();
    for (who, got) in [("police CAD", &cad_got), ("grid worker app", &grid_got)] {
        for d in got.lock().map(|v| v.clone()).unwrap_or_default() {
            timeline.push((
                d.at.duration_since(started),
                format!("{who} received {} {}", d.path, d.summary),
            ));
        }
    }
    timeline.sort();
    for (at, line) in &timeline {
        println!("  {:>7}  {line}", format!("{} ms", at.as_millis()));
    }
    let missing: Vec<&str> = [("police CAD", &cad_got), ("grid worker app", &grid_got)]
        .iter()
        .filter(|(_, got)| got.lock().map(|v| v.is_empty()).unwrap_or(true))
        .map(|(who, _)| *who)
        .collect();
    if missing.is_empty() {
        println!();
        println!("both departments got the incident: the silo is open.");
        Ok(())
    } else {
        anyhow::bail!("not delivered within 10 s to: {}", missing.join(", "))
    }
}
