//! `govhub demo`: the Yingfeng deployment on loopback, and its two stories
//! replayed with compressed time.
//!
//! The demo renders `examples/yingfeng` into a working folder (the modules
//! it finds built, their sha256 pinned, the department URLs pointing at the
//! mock departments), starts `mock-departments` and the hub on loopback,
//! and plays the typhoon river patrol and the e-trike congestion: the
//! department systems report back through their own protocols while the
//! demo moves the hub's manual clock, so fifteen minutes pass in a moment.
//! It prints each case's timeline and exits 0 only if both cases closed.

use crate::config::Config;
use crate::hub::Hub;
use anyhow::Context;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the demo finds what it needs; every path has a default.
#[derive(Debug, Default)]
pub struct Options {
    /// Built adapter modules (`police_adapter.wasm`, ...).
    pub wasm_dir: Option<PathBuf>,
    /// The deployment to render (`examples/yingfeng`).
    pub deployment: Option<PathBuf>,
    /// Where to render it (kept afterwards); default a temporary folder.
    pub workdir: Option<PathBuf>,
    /// The `mock-departments` binary; default next to `govhub`.
    pub mock: Option<PathBuf>,
}

fn source_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

use crate::client::Http;

/// The mock departments' process, stopped when dropped.
struct MockProcess(Child);

impl Drop for MockProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_mock(binary: &Path, hub_url: &str) -> anyhow::Result<(MockProcess, String)> {
    let mut child = Command::new(binary)
        .args(["--hub", hub_url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (build it with `cargo build --release -p govhub`)",
                binary.display()
            )
        })?;
    let stdout = child.stdout.take().context("mock stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("mock-departments: listening on ")
        .map(str::to_string)
        .with_context(|| format!("mock-departments did not start: {line:?}"))?;
    Ok((MockProcess(child), url))
}

/// Renders the deployment into `workdir`: config, grid map, manifests with
/// the modules copied in and pinned, department URLs filled in.
pub fn render(
    deployment: &Path,
    wasm_dir: &Path,
    workdir: &Path,
    departments: &str,
) -> anyhow::Result<()> {
    let host = departments
        .strip_prefix("http://")
        .unwrap_or(departments)
        .trim_end_matches('/');
    std::fs::create_dir_all(workdir.join("adapters.d"))?;
    for file in ["govhub.toml", "grids.geojson"] {
        std::fs::copy(deployment.join(file), workdir.join(file))
            .with_context(|| format!("{}", deployment.join(file).display()))?;
    }
    let mut templates: Vec<PathBuf> = std::fs::read_dir(deployment.join("adapters.d"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    templates.sort();
    for template in templates {
        let text = std::fs::read_to_string(&template)?;
        let wasm = text
            .lines()
            .find_map(|l| l.strip_prefix("wasm = \""))
            .and_then(|l| l.strip_suffix('"'))
            .with_context(|| format!("{}: no `wasm = \"...\"` line", template.display()))?;
        let module = wasm_dir.join(format!(
            "{}_adapter.wasm",
            wasm.trim_end_matches(".wasm").replace('-', "_")
        ));
        if !module.exists() {
            anyhow::bail!(
                "{} not found: build the adapters first (examples/demo.sh does), or pass --wasm-dir",
                module.display()
            );
        }
        std::fs::copy(&module, workdir.join("adapters.d").join(wasm))?;
        let rendered = text
            .replace("{{sha256}}", &crate::runtime::sha256_file(&module)?)
            .replace("{{departments}}", departments.trim_end_matches('/'))
            .replace("{{departments_host}}", host);
        let name = template.file_name().context("template name")?;
        std::fs::write(workdir.join("adapters.d").join(name), rendered)?;
    }
    Ok(())
}

/// Unix ms as Yingfeng local time, `14:04:55`.
fn local(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC));
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

fn rfc3339_to_ms(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

struct Demo {
    http: Http,
    hub: String,
    mock: String,
    core: Arc<Hub>,
}

impl Demo {
    /// Waits (at most 15 s of real time) until `check` holds.
    async fn until<F, Fut>(&self, what: &str, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !check().await {
            if Instant::now() > deadline {
                anyhow::bail!("timed out waiting for: {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn advance(&self, seconds: i64) -> anyhow::Result<()> {
        self.core.advance_clock(seconds * 1000).await?;
        Ok(())
    }

    async fn report(
        &self,
        department: &str,
        case: &str,
        status: &str,
        note: &str,
    ) -> anyhow::Result<()> {
        self.http
            .post(
                &format!("{}/_control/report", self.mock),
                serde_json::json!({ "department": department, "case_id": case, "status": status, "note": note }),
            )
            .await?;
        println!(
            "  {}  {department} reports `{status}`{}",
            local(self.core.clock.now_ms()),
            if note.is_empty() {
                String::new()
            } else {
                format!(": {note}")
            }
        );
        Ok(())
    }

    /// Waits until every department in `who` received something of `case`.
    async fn delivered(&self, case: &str, who: &[&str]) -> anyhow::Result<()> {
        let url = format!("{}/_records", self.mock);
        self.until(
            &format!("deliveries of {case} to {}", who.join(", ")),
            || async {
                let Ok(records) = self.http.get(&url).await else {
                    return false;
                };
                let empty = Vec::new();
                let records = records.as_array().unwrap_or(&empty);
                who.iter().all(|d| {
                    records.iter().any(|r| {
                        r["department"] == *d
                            && (r["body"].as_str().is_some_and(|b| b.contains(case))
                                || r["headers"]["ce-caseid"] == case)
                    })
                })
            },
        )
        .await
    }

    async fn case(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        self.http.get(&format!("{}/v1/cases/{id}", self.hub)).await
    }

    /// Waits until the case is closed and the hub's announcement of it is
    /// on its timeline.
    async fn closed(&self, id: &str) -> anyhow::Result<()> {
        self.until(&format!("case {id} to close"), || async {
            self.case(id).await.is_ok_and(|c| {
                c["status"] == "closed"
                    && c["timeline"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|e| e["what"] == "gov.case.closed"))
            })
        })
        .await
    }

    async fn ingest(&self, adapter: &str, body: serde_json::Value) -> anyhow::Result<String> {
        let v = self
            .http
            .post(&format!("{}/v1/ingest/{adapter}", self.hub), body)
            .await?;
        v["accepted"][0]["caseid"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("the report opened no case: {v}"))
    }

    /// Prints a case: who got it, and its timeline on the hub's clock.
    async fn print_case(
        &self,
        id: &str,
        report_id: &str,
        report_source: &str,
    ) -> anyhow::Result<bool> {
        let c = self.case(id).await?;
        let closed = c["status"] == "closed";
        println!();
        println!(
            "case {id}: {} ({}), grid {}, {}{}",
            c["category"].as_str().unwrap_or("?"),
            c["severity"].as_str().unwrap_or("?"),
            c["grid"].as_str().unwrap_or("?"),
            c["status"].as_str().unwrap_or("?"),
            match c["on_time"].as_bool() {
                Some(true) => format!(
                    ", on time (deadline {})",
                    c["resolve_due_at"]
                        .as_str()
                        .and_then(rfc3339_to_ms)
                        .map(local)
                        .unwrap_or_default()
                ),
                Some(false) => ", LATE".to_string(),
                None => String::new(),
            }
        );
        let event = self
            .http
            .get(&format!(
                "{}/v1/events/{report_id}?source={}",
                self.hub,
                crate::demo::url_encode(report_source)
            ))
            .await?;
        for d in event["deliveries"].as_array().cloned().unwrap_or_default() {
            println!(
                "  got it: {:<15} {} after {} attempt(s){}  [{}]",
                d["target"].as_str().unwrap_or("?"),
                d["status"].as_str().unwrap_or("?"),
                d["attempts"],
                d["reference"]
                    .as_str()
                    .map(|r| format!(", reference {r}"))
                    .unwrap_or_default(),
                d["rule"].as_str().unwrap_or("")
            );
        }
        println!("  timeline (Yingfeng time):");
        for e in c["timeline"].as_array().cloned().unwrap_or_default() {
            let at = e["at"]
                .as_str()
                .and_then(rfc3339_to_ms)
                .map(local)
                .unwrap_or_default();
            let who = match (e["department"].as_str(), e["source"].as_str()) {
                (Some(d), _) => d,
                (None, Some("urn:govhub:cases")) => "the hub",
                (None, s) => s.unwrap_or(""),
            };
            println!(
                "    {at}  {:<24} {who}{}",
                e["what"].as_str().unwrap_or(""),
                e["note"]
                    .as_str()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
        }
        if let Some(reason) = c["close_reason"].as_str() {
            println!("  closed: {reason}");
        } else {
            let open: Vec<String> = c["open_departments"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            println!("  still open: {}", open.join(", "));
        }
        Ok(closed)
    }
}

/// Percent-encodes a query value.
pub fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn typhoon_patrol(demo: &Demo) -> anyhow::Result<String> {
    println!("story 1: typhoon river patrol");
    println!(
        "  {}  video patrol cam-qjd-17: a person taking a small boat onto the Qiantang river",
        local(demo.core.clock.now_ms())
    );
    let case = demo
        .ingest(
            "video-patrol",
            serde_json::json!({
                "detection_id": "vp-20250801-140455-cam17",
                "camera_id": "cam-qjd-17",
                "class": "person_on_water",
                "confidence": 0.93,
                "snapshot_url": "http://city-brain.example/snap/cam-qjd-17/140455.jpg",
                "time": "2025-08-01 14:04:55",
            }),
        )
        .await?;
    demo.delivered(&case, &["police", "four-platforms"]).await?;
    println!(
        "  {}  the police station and the grid worker have it",
        local(demo.core.clock.now_ms())
    );
    demo.advance(120).await?;
    demo.report("police", &case, "accepted", "钱江派出所出警")
        .await?;
    demo.report("four-platforms", &case, "accepted", "网格员赶往江堤")
        .await?;
    demo.advance(180).await?;
    demo.report("police", &case, "on_scene", "民警到达望江门江堤")
        .await?;
    demo.advance(600).await?;
    demo.report("four-platforms", &case, "handled", "已劝导驾船人员上岸")
        .await?;
    demo.report("police", &case, "resolved", "江面已无人员")
        .await?;
    demo.closed(&case).await?;
    Ok(case)
}

async fn etrike_congestion(demo: &Demo) -> anyhow::Result<String> {
    println!();
    println!("story 2: e-trike congestion at a compound's west gate");
    // Rush hour, later the same day: 17:40.
    demo.advance(3 * 3600 + 20 * 60 + 5).await?;
    println!(
        "  {}  grid worker W-0712 photographs e-trikes jamming the west gate, reports through the four platforms",
        local(demo.core.clock.now_ms())
    );
    let case = demo
        .ingest(
            "four-platforms",
            serde_json::json!({
                "report_id": "GW-20250801-1740-07",
                "worker": { "id": "W-0712", "name": "李网格" },
                "grid": "yingfeng/chaoyang/1",
                "event_code": "ZF-02",
                "description": "电动三轮车堵住小区西门，晚高峰通行受阻",
                "photos": ["https://img.example/gw/0712/1.jpg"],
                "location": { "lat": 30.2461, "lon": 120.1897 },
                "time": "2025-08-01 17:40:00",
            }),
        )
        .await?;
    demo.delivered(&case, &["traffic", "police", "village"])
        .await?;
    println!(
        "  {}  dispatched jointly: traffic squad, police station, village committee",
        local(demo.core.clock.now_ms())
    );
    demo.advance(300).await?;
    demo.report("traffic", &case, "accepted", "").await?;
    demo.report("police", &case, "accepted", "").await?;
    demo.report("village", &case, "accepted", "").await?;
    demo.advance(1200).await?;
    demo.report("traffic", &case, "done", "三轮车已疏导")
        .await?;
    demo.report("police", &case, "resolved", "").await?;
    demo.report("village", &case, "resolved", "已约谈车主，划定临时停放区")
        .await?;
    demo.closed(&case).await?;
    Ok(case)
}

/// Runs the demo; `Err` (exit 1) unless both cases closed.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let root = source_tree();
    let wasm_dir = options
        .wasm_dir
        .unwrap_or_else(|| root.join("target/adapters/wasm32-wasip2/release"));
    let deployment = options
        .deployment
        .unwrap_or_else(|| root.join("examples/yingfeng"));
    let mock_bin = match options.mock {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("mock-departments"),
    };
    let temp = tempfile::tempdir()?;
    let workdir = options.workdir.unwrap_or_else(|| temp.path().to_path_buf());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hub_url = format!("http://{}", listener.local_addr()?);
    let (_mock, mock_url) = start_mock(&mock_bin, &hub_url)?;
    render(&deployment, &wasm_dir, &workdir, &mock_url)?;

    let mut config = Config::load(&workdir.join("govhub.toml"))?;
    // Compressed time: the hub's clock moves only when the demo moves it.
    config.cases.clock = "manual".into();
    config.cases.clock_start = Some("2025-08-01T14:04:55+08:00".into());
    if let Some(cache) = std::env::var_os("GOVHUB_CACHE_DIR") {
        config.runtime.cache_dir = Some(PathBuf::from(cache));
    }
    let hub = Hub::start(config).await?;
    hub.run_background()?;
    let app = crate::ingress::router(hub.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    println!(
        "govhub demo: the Yingfeng deployment ({} adapters, 57 grids) on {hub_url}, mock departments on {mock_url}",
        hub.adapter_names().len()
    );
    println!("working copy: {}", workdir.display());
    println!();
    let demo = Demo {
        http: Http::new(),
        hub: hub_url,
        mock: mock_url,
        core: hub,
    };
    let river = typhoon_patrol(&demo).await?;
    let etrike = etrike_congestion(&demo).await?;
    let mut all_closed = demo
        .print_case(
            &river,
            "vp-20250801-140455-cam17",
            "urn:govhub:video-patrol",
        )
        .await?;
    all_closed &= demo
        .print_case(&etrike, "GW-20250801-1740-07", "urn:govhub:four-platforms")
        .await?;
    println!();
    if all_closed {
        println!("both cases closed: every department that had to act reported back.");
        Ok(())
    } else {
        anyhow::bail!("a case did not close")
    }
}
