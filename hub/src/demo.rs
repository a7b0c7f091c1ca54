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
//!
//! With `--serve` it is a demo to watch: it prints the cockpit's address,
//! waits for a browser to open it, replays the two stories at a pace a
//! person can follow, then a day at Yingfeng (a missing person found, a
//! smart-building smoke alarm, a street vendor regulated, two disputes at
//! the mediation rooms), and keeps the hub running until Ctrl-C.

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
    /// Keep the hub running for the cockpit, on this address, replaying
    /// at this pace.
    pub serve: Option<Serve>,
}

/// `govhub demo --serve`.
#[derive(Debug, Clone)]
pub struct Serve {
    /// Where the hub (and its cockpit) listens.
    pub listen: String,
    /// The pause after each step of a story, so a person can follow it.
    pub pace: Duration,
    /// Start at once instead of waiting for a browser to open the cockpit.
    pub no_wait: bool,
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

/// The deployment's principals, each with a token the demo made for it:
/// the hub gets only their hashes, the demo speaks as each department, as
/// the command room and as the duty officer.
pub struct Principals {
    issued: Vec<(crate::auth::PrincipalConfig, String)>,
}

impl Principals {
    /// Makes a token for every principal whose token comes from the
    /// environment (`token_env`), and puts its hash in the config instead.
    pub fn issue(config: &mut Config) -> anyhow::Result<Principals> {
        let mut issued = Vec::new();
        for p in &mut config.auth.principals {
            if p.token_env.take().is_some() {
                let token = crate::auth::principal::new_token()?;
                p.token_sha256 = Some(hex::encode(crate::auth::principal::token_hash(&token)));
                issued.push((p.clone(), token));
            }
        }
        Ok(Principals { issued })
    }

    /// The token of the department bound to `adapter`.
    pub fn for_adapter(&self, adapter: &str) -> Option<&str> {
        self.issued
            .iter()
            .find(|(p, _)| {
                p.role == crate::auth::Role::Department && p.adapters.iter().any(|a| a == adapter)
            })
            .map(|(_, t)| t.as_str())
    }

    /// The token of the department that sends `source`.
    pub fn for_source(&self, source: &str) -> Option<&str> {
        self.issued
            .iter()
            .find(|(p, _)| {
                p.role == crate::auth::Role::Department
                    && p.sources
                        .iter()
                        .any(|s| crate::auth::principal::source_under(source, s))
            })
            .map(|(_, t)| t.as_str())
    }

    /// The first principal with `role`: its name and token.
    pub fn with_role(&self, role: crate::auth::Role) -> Option<(&str, &str)> {
        self.issued
            .iter()
            .find(|(p, _)| p.role == role)
            .map(|(p, t)| (p.name.as_str(), t.as_str()))
    }

    /// Every department's token by the adapters it is bound to (what the
    /// mock departments present when they report back).
    pub fn by_adapter(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (p, token) in &self.issued {
            if p.role == crate::auth::Role::Department {
                for a in &p.adapters {
                    out.insert(a.clone(), token.clone().into());
                }
            }
        }
        out
    }
}

/// A client presenting `token`, or none.
fn client(token: Option<&str>) -> Http {
    match token {
        Some(t) => Http::new().with_bearer(t),
        None => Http::new(),
    }
}

struct Demo {
    /// Reads cases and events: the command room's screens.
    http: Http,
    principals: Principals,
    /// Talks to the mock departments (no hub token goes there).
    mock_http: Http,
    hub: String,
    mock: String,
    core: Arc<Hub>,
    pace: Duration,
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

    /// Lets a person watching the cockpit see what just happened.
    async fn pause(&self) {
        if !self.pace.is_zero() {
            tokio::time::sleep(self.pace).await;
        }
    }

    /// Posts a CloudEvent as a department system of its own would.
    async fn send(&self, event: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let source = event["source"].as_str().unwrap_or_default();
        let v = client(self.principals.for_source(source))
            .post_typed(
                &format!("{}/v1/events", self.hub),
                "application/cloudevents+json",
                event,
            )
            .await?;
        self.pause().await;
        Ok(v)
    }

    async fn report(
        &self,
        department: &str,
        case: &str,
        status: &str,
        note: &str,
    ) -> anyhow::Result<()> {
        self.mock_http
            .post(
                &format!("{}/_control/report", self.mock),
                serde_json::json!({
                    "department": department, "case_id": case, "status": status, "note": note,
                    "time": crate::journal::rfc3339_ms(self.core.clock.now_ms()),
                }),
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
        self.pause().await;
        Ok(())
    }

    /// Waits until every department in `who` received something of `case`.
    async fn delivered(&self, case: &str, who: &[&str]) -> anyhow::Result<()> {
        let url = format!("{}/_records", self.mock);
        self.until(
            &format!("deliveries of {case} to {}", who.join(", ")),
            || async {
                let Ok(records) = self.mock_http.get(&url).await else {
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

    /// Waits until `department` has accepted case `id` (a department that
    /// reports by being polled is heard on the wall clock, not the hub's).
    async fn accepted(&self, id: &str, department: &str) -> anyhow::Result<()> {
        self.until(&format!("{department} to accept case {id}"), || async {
            self.case(id).await.is_ok_and(|c| {
                c["departments"].as_array().is_some_and(|ds| {
                    ds.iter()
                        .any(|d| d["name"] == department && !d["accepted_at"].is_null())
                })
            })
        })
        .await
    }

    async fn ingest(&self, adapter: &str, body: serde_json::Value) -> anyhow::Result<String> {
        let v = client(self.principals.for_adapter(adapter))
            .post(&format!("{}/v1/ingest/{adapter}", self.hub), body)
            .await?;
        self.pause().await;
        v["accepted"][0]["caseid"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("the report opened no case: {v}"))
    }

    /// Prints what of one report each of `departments` received: the
    /// hub's flow records (each labelled field and what was done to it),
    /// and the grid worker's name as the department's system got it.
    async fn views(&self, case: &str, report: &str, departments: &[&str]) -> anyhow::Result<()> {
        // The case is the tracker's, made from the journal a moment after
        // the deliveries: wait for it and for each department's record.
        let url = format!("{}/v1/cases/{case}/flows", self.hub);
        let has = |flows: &serde_json::Value, d: &str| {
            flows["flows"]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f["target"] == d && f["event"] == report))
        };
        self.until(&format!("the flow records of case {case}"), || async {
            self.http
                .get(&url)
                .await
                .is_ok_and(|f| departments.iter().all(|d| has(&f, d)))
        })
        .await?;
        let flows = self.http.get(&url).await?;
        let records = self
            .mock_http
            .get(&format!("{}/_records", self.mock))
            .await?;
        let empty = Vec::new();
        println!("  the report as two departments received it (data governance):");
        for d in departments {
            let Some(flow) = flows["flows"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .find(|f| f["target"] == *d && f["event"] == report)
            else {
                continue;
            };
            let fields: Vec<String> = flow["fields"]
                .as_object()
                .map(|f| {
                    f.iter()
                        .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?")))
                        .collect()
                })
                .unwrap_or_default();
            // The name as it reached the department, where its protocol
            // carries it.
            let name = records
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .rev()
                .find_map(|r| {
                    (r["department"] == *d)
                        .then(|| r["body"].as_str())
                        .flatten()
                        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                        .and_then(|b| b["worker"]["name"].as_str().map(str::to_string))
                });
            println!(
                "    {d:<8} {}{}",
                fields.join(", "),
                name.map(|n| format!("; the grid worker reached it as 「{n}」"))
                    .unwrap_or_default()
            );
        }
        self.pause().await;
        Ok(())
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
        "  {}  grid worker Guan Jiuyang (grid 2 of Yingyi village) photographs e-trikes jamming the west gate of Yingyi Jiayuan, reports through the four platforms",
        local(demo.core.clock.now_ms())
    );
    let case = demo
        .ingest(
            "four-platforms",
            serde_json::json!({
                "report_id": "GW-20250801-1740-07",
                "worker": { "id": "W-0712", "name": "管九阳" },
                "grid": "yingfeng/yingyi/2",
                "event_code": "ZF-02",
                "description": "盈一佳苑小区西门早晚高峰电动三轮车拥堵，存在安全隐患",
                "photos": ["https://img.example/gw/0712/1.jpg"],
                "location": { "lat": 30.2325, "lon": 120.2008 },
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
    demo.views(&case, "GW-20250801-1740-07", &["police", "village"])
        .await?;
    demo.advance(300).await?;
    demo.report("traffic", &case, "accepted", "").await?;
    demo.report("police", &case, "accepted", "").await?;
    demo.report("village", &case, "accepted", "").await?;
    demo.advance(1200).await?;
    demo.report("traffic", &case, "done", "交通执法中队：三轮车已疏导")
        .await?;
    demo.report("police", &case, "resolved", "").await?;
    demo.report(
        "village",
        &case,
        "resolved",
        "盈一村：已约谈车主，划定临时停放区",
    )
    .await?;
    demo.closed(&case).await?;
    Ok(case)
}

/// The rest of a day at Yingfeng, for the cockpit: every case of it closes
/// but the last, a dispute that climbs to the street's mediation centre.
async fn a_day_at_yingfeng(demo: &Demo) -> anyhow::Result<Vec<String>> {
    println!();
    println!("a day at Yingfeng");
    let mut cases = Vec::new();
    let at = |what: &str| println!("  {}  {what}", local(demo.core.clock.now_ms()));

    demo.advance(25 * 60).await?;
    at("a family calls 110: an elderly man has not come home to Fengbei Second Garden");
    let missing = demo
        .ingest(
            "police",
            serde_json::json!({
                "incident_no": "330109-20250801-0412",
                "call_time": "2025-08-01T18:30:00+08:00",
                "category_code": "0501",
                "address": "丰北村丰北二苑 7 幢",
                "coordinates": { "lat": 30.2555, "lon": 120.1905 },
                "reporter": { "name": "家属", "phone": "" },
                "description": "八旬老人傍晚外出未归，身穿蓝色外套",
            }),
        )
        .await?;
    demo.delivered(&missing, &["four-platforms"]).await?;
    demo.advance(240).await?;
    demo.report("four-platforms", &missing, "accepted", "网格员沿丰北路寻找")
        .await?;
    demo.advance(1500).await?;
    demo.report(
        "four-platforms",
        &missing,
        "handled",
        "在丰北公园找到老人，已送回家",
    )
    .await?;
    demo.closed(&missing).await?;
    cases.push(missing);

    demo.advance(10 * 60).await?;
    at("the smart-building platform (智慧楼宇): a smoke detector in Wangjiang Jiayuan's garage goes off");
    let smoke = demo
        .send(serde_json::json!({
            "specversion": "1.0",
            "id": "sb-20250801-1912-0101",
            "source": "urn:yingfeng:smart-building",
            "type": "gov.incident.reported",
            "category": "fire.smoke",
            "severity": "major",
            "lat": "30.2490",
            "lon": "120.2062",
            "data": { "description": "望江家园 3 幢 地下车库 烟感报警", "device": "SD-0101", "level": 2 },
        }))
        .await?;
    let smoke = smoke["accepted"][0]["caseid"]
        .as_str()
        .map(str::to_string)
        .context("the alarm opened no case")?;
    demo.delivered(&smoke, &["fire"]).await?;
    demo.advance(60).await?;
    demo.report("fire", &smoke, "dispatched", "在线消防站出动")
        .await?;
    demo.report("four-platforms", &smoke, "accepted", "网格员通知物业到场")
        .await?;
    demo.advance(240).await?;
    demo.report("fire", &smoke, "arrived", "").await?;
    demo.advance(300).await?;
    demo.report("fire", &smoke, "extinguished", "电瓶车充电冒烟，已处置")
        .await?;
    demo.report("four-platforms", &smoke, "verified", "物业已清理现场")
        .await?;
    demo.closed(&smoke).await?;
    cases.push(smoke);

    demo.advance(15 * 60).await?;
    at("a grid worker finds mobile vendors blocking the pavement by Ying'er village");
    let vendor = demo
        .ingest(
            "four-platforms",
            serde_json::json!({
                "report_id": "GW-20250801-1945-12",
                "worker": { "id": "W-0733" },
                "grid": "yingfeng/yinger/1",
                "event_code": "ZF-01",
                "description": "流动商贩占道经营，影响行人通行",
                "location": { "lat": 30.244, "lon": 120.1985 },
                "time": "2025-08-01 19:45:00",
            }),
        )
        .await?;
    demo.delivered(&vendor, &["city"]).await?;
    // The city's system is polled: its request, open, is the acceptance.
    demo.accepted(&vendor, "city-management").await?;
    demo.advance(20 * 60).await?;
    demo.report("city", &vendor, "closed", "已劝离，引导至便民疏导点")
        .await?;
    demo.closed(&vendor).await?;
    cases.push(vendor);

    demo.advance(10 * 60).await?;
    at("owners and the property manager of a compound in Haichao fall out over parking fees: a police-and-mediation (警调) case");
    let property = demo
        .ingest(
            "police",
            serde_json::json!({
                "incident_no": "330109-20250801-0466",
                "call_time": "2025-08-01T20:15:00+08:00",
                "category_code": "0402",
                "address": "海潮社区 物管中心",
                "coordinates": { "lat": 30.2302, "lon": 120.2163 },
                "reporter": { "name": "业主代表", "phone": "" },
                "description": "业主与物业因停车费发生争执",
            }),
        )
        .await?;
    demo.delivered(&property, &["four-platforms"]).await?;
    demo.report("four-platforms", &property, "accepted", "")
        .await?;
    demo.advance(30 * 60).await?;
    mediation(
        demo,
        &property,
        "grid",
        "referred",
        "网格调解未果，移交社区",
    )
    .await?;
    demo.advance(60 * 60).await?;
    mediation(
        demo,
        &property,
        "community",
        "mediated",
        "物管中心调解室调解成功，双方签订协议",
    )
    .await?;
    demo.closed(&property).await?;
    cases.push(property);

    demo.advance(10 * 60).await?;
    at("a neighbours' quarrel over a shared stairway at a Ying Ju He (盈聚和) workstation in Songcheng");
    let quarrel = demo
        .send(serde_json::json!({
            "specversion": "1.0",
            "id": "yjh-20250801-2135-03",
            "source": "urn:yingfeng:yingjuhe:songcheng",
            "type": "gov.incident.reported",
            "category": "dispute.neighbour",
            "severity": "minor",
            "grid": "yingfeng/songcheng/2",
            "data": { "description": "邻里因楼道堆物发生纠纷，情绪激动" },
        }))
        .await?;
    let quarrel = quarrel["accepted"][0]["caseid"]
        .as_str()
        .map(str::to_string)
        .context("the quarrel opened no case")?;
    demo.delivered(&quarrel, &["four-platforms"]).await?;
    demo.report("four-platforms", &quarrel, "accepted", "")
        .await?;
    demo.advance(20 * 60).await?;
    mediation(demo, &quarrel, "grid", "referred", "").await?;
    demo.advance(40 * 60).await?;
    mediation(demo, &quarrel, "community", "referred", "提交街道矛调中心").await?;
    at("the quarrel is with the street's conflict mediation centre (矛调中心) now");
    cases.push(quarrel);
    Ok(cases)
}

/// A mediation room reports an outcome (`gov.mediation.concluded`).
async fn mediation(
    demo: &Demo,
    case: &str,
    level: &str,
    outcome: &str,
    note: &str,
) -> anyhow::Result<()> {
    println!(
        "  {}  {level} mediation: {outcome}{}",
        local(demo.core.clock.now_ms()),
        if note.is_empty() {
            String::new()
        } else {
            format!(": {note}")
        }
    );
    demo.send(serde_json::json!({
        "specversion": "1.0",
        "id": format!("mediation-{case}-{level}"),
        "source": "urn:yingfeng:mediation",
        "type": "gov.mediation.concluded",
        "caseid": case,
        "level": level,
        "outcome": outcome,
        "data": { "note": note },
    }))
    .await?;
    Ok(())
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

    let listen = options
        .serve
        .as_ref()
        .map(|s| s.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let hub_url = format!("http://{}", listener.local_addr()?);
    let (_mock, mock_url) = start_mock(&mock_bin, &hub_url)?;
    render(&deployment, &wasm_dir, &workdir, &mock_url)?;

    let mut config = Config::load(&workdir.join("govhub.toml"))?;
    config.server.listen = listen.clone();
    let principals = Principals::issue(&mut config)?;
    // Compressed time: the hub's clock moves only when the demo moves it.
    config.cases.clock = "manual".into();
    config.cases.clock_start = Some("2025-08-01T14:04:55+08:00".into());
    if let Some(cache) = std::env::var_os("GOVHUB_CACHE_DIR") {
        config.runtime.cache_dir = Some(PathBuf::from(cache));
    }
    let hub = Hub::start(config).await?;
    hub.auth.check_exposure(&listener.local_addr()?)?;
    hub.run_background().await?;
    let app = crate::ingress::router(hub.clone())?;
    // The departments report back with their own tokens.
    Http::new()
        .post(
            &format!("{mock_url}/_control/hub"),
            serde_json::json!({"url": hub_url, "tokens": principals.by_adapter()}),
        )
        .await
        .context("telling the mock departments their tokens")?;
    let streams = hub.streams.clone();
    let (stop_serving, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
                streams.stop();
            })
            .await;
    });
    println!(
        "govhub demo: the Yingfeng deployment ({} adapters, 57 grids) on {hub_url}, mock departments on {mock_url}",
        hub.adapter_names().len()
    );
    println!("working copy: {}", workdir.display());
    println!();
    if let Some(serve) = &options.serve {
        println!("cockpit: {hub_url}/   (open it in a browser)");
        for role in [crate::auth::Role::Viewer, crate::auth::Role::Operator] {
            if let Some((name, token)) = principals.with_role(role) {
                println!("  sign in as {name} ({}): {token}", role.as_str());
            }
        }
        if !serve.no_wait {
            println!("waiting for the cockpit to connect before the stories start…");
            let waited = Instant::now();
            while hub.streams.open() == 0 && waited.elapsed() < Duration::from_secs(600) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        println!();
    }
    let demo = Demo {
        http: client(
            principals
                .with_role(crate::auth::Role::Viewer)
                .map(|(_, t)| t),
        ),
        principals,
        mock_http: Http::new(),
        hub: hub_url.clone(),
        mock: mock_url,
        core: hub.clone(),
        pace: options.serve.as_ref().map(|s| s.pace).unwrap_or_default(),
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
    if !all_closed {
        anyhow::bail!("a case did not close")
    }
    println!("both cases closed: every department that had to act reported back.");
    if options.serve.is_some() {
        let day = a_day_at_yingfeng(&demo).await?;
        println!();
        println!(
            "the day at Yingfeng: {} more cases, the last still with the street's mediation centre",
            day.len()
        );
        println!("the hub keeps running for the cockpit: {hub_url}/   (Ctrl-C to stop)");
        crate::cli::shutdown_signal().await;
        let _ = stop_serving.send(());
        let _ = server.await;
        hub.shutdown().await;
    }
    Ok(())
}
