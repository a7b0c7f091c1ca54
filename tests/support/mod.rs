//! What the end-to-end tests share: the adapters built once, the real
//! `govhub` binary started on a loopback port, and a recording HTTP
//! receiver standing in for a department.
#![allow(dead_code)]

pub mod browser;
pub mod otlp;
pub mod sse;
pub mod wire;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Calls `check` every 20 ms until it gives a value and returns it; past
/// `timeout`, fails the test with the reason `check` gave last.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Tokens of a hub with principals, which the request helpers below
/// present when a test gives no `authorization` of its own: a story about
/// something else need not carry tokens around. The auth tests
/// (`tests/auth.rs`) send theirs explicitly, through [`request`].
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// For `POST /v1/events` and `POST /v1/ingest/*`.
    pub sender: Option<String>,
    /// For every `GET`.
    pub reader: Option<String>,
    /// For other writes (replay, clock, the admin API).
    pub operator: Option<String>,
}

fn credentials() -> &'static Mutex<Vec<(String, Credentials)>> {
    static HUBS: OnceLock<Mutex<Vec<(String, Credentials)>>> = OnceLock::new();
    HUBS.get_or_init(Default::default)
}

/// The token the helpers present for `method url`, if the hub it goes to
/// has credentials.
fn default_token(method: &str, url: &str) -> Option<String> {
    let hubs = credentials().lock().unwrap();
    let (base, c) = hubs.iter().find(|(base, _)| {
        url.strip_prefix(base.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })?;
    let path = &url[base.len()..];
    match method {
        "GET" | "HEAD" => c.reader.clone(),
        _ if path.starts_with("/v1/events") || path.starts_with("/v1/ingest/") => c.sender.clone(),
        _ => c.operator.clone().or_else(|| c.reader.clone()),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The `govhub` binary under test.
pub fn govhub_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_govhub"))
}

/// The compile cache every test shares, so each module is compiled once
/// per run.
pub fn cache_dir() -> PathBuf {
    let dir = root().join("target/test-compile-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every adapter crate the tests use, built for wasm32-wasip2 once per
/// test binary (cargo makes the later builds no-ops, so the whole run
/// builds them once). They build into their own target folder so the build
/// never waits on the lock of the `cargo test` that runs us.
pub const ADAPTER_CRATES: &[&str] = &[
    "police-adapter",
    "webhook-adapter",
    "traffic-adapter",
    "fire-adapter",
    "four-platforms-adapter",
    "video-patrol-adapter",
    "city-management-adapter",
    "fixture-hostile",
    "fixture-not-an-adapter",
    "fixture-future-major",
    "fixture-marker-v1",
    "fixture-marker-v2",
    "fixture-marker-bad",
    "fixture-trivial",
    "fixture-chatty",
];

/// The folder holding the built `.wasm` files.
pub fn wasm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = root().join("target/adapters");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(root())
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&target);
        for c in ADAPTER_CRATES {
            cmd.args(["-p", c]);
        }
        let started = Instant::now();
        let status = cmd.status().expect("cargo must be on PATH");
        assert!(
            status.success(),
            "building the adapters for wasm32-wasip2 failed"
        );
        eprintln!("adapters built (or up to date) in {:?}", started.elapsed());
        target.join("wasm32-wasip2/release")
    })
}

/// The built module of a crate (`police-adapter` → `police_adapter.wasm`).
pub fn wasm(crate_name: &str) -> PathBuf {
    let path = wasm_dir().join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The SHA-256 of `text`, in hex: a principal's `token_sha256`.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Hex sha256 of a file.
pub fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// One adapter to install in a test hub.
pub struct AdapterSpec {
    /// The manifest name.
    pub name: String,
    /// The crate whose module it runs.
    pub crate_name: String,
    /// Extra manifest lines (after `sha256`, before the tables): `subscribe`.
    pub top: String,
    /// The `[limits]`, `[capabilities]` and `[config]` tables, as TOML.
    pub tables: String,
}

impl AdapterSpec {
    /// An adapter with default limits and nothing allowed.
    pub fn new(name: &str, crate_name: &str) -> AdapterSpec {
        AdapterSpec {
            name: name.into(),
            crate_name: crate_name.into(),
            top: String::new(),
            tables: String::new(),
        }
    }
    /// Adds top-level manifest lines.
    pub fn top(mut self, text: &str) -> AdapterSpec {
        self.top.push_str(text);
        self.top.push('\n');
        self
    }
    /// Adds manifest tables.
    pub fn tables(mut self, text: &str) -> AdapterSpec {
        self.tables.push_str(text);
        self.tables.push('\n');
        self
    }
}

/// Writes a module and its manifest into `dir`.
pub fn install(dir: &Path, spec: &AdapterSpec) {
    std::fs::create_dir_all(dir).unwrap();
    let src = wasm(&spec.crate_name);
    let file = format!("{}.wasm", spec.name);
    std::fs::copy(&src, dir.join(&file)).unwrap();
    let manifest = format!(
        "name = \"{}\"\nwasm = \"{}\"\nsha256 = \"{}\"\n{}\n{}",
        spec.name,
        file,
        sha256(&src),
        spec.top,
        spec.tables
    );
    std::fs::write(dir.join(format!("{}.toml", spec.name)), manifest).unwrap();
}

/// A running `govhub run` process on a loopback port, killed on drop.
pub struct HubProcess {
    pub child: Child,
    pub base: String,
    pub dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    /// Each principal's token, by name, where the test made them.
    pub tokens: std::collections::HashMap<String, String>,
    /// What the helpers present to it.
    pub creds: Credentials,
}

/// A temporary folder for one hub: `govhub.toml`, `adapters.d/`, `data/`.
pub struct HubDir {
    pub dir: tempfile::TempDir,
}

impl HubDir {
    /// A folder with the given adapters and extra config (routes, sections).
    pub fn new(adapters: &[AdapterSpec], extra_config: &str) -> HubDir {
        let dir = tempfile::tempdir().unwrap();
        for a in adapters {
            install(&dir.path().join("adapters.d"), a);
        }
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[runtime]\ncache_dir = \"{}\"\n\n{}\n",
            cache_dir().display(),
            extra_config
        );
        std::fs::write(dir.path().join("govhub.toml"), config).unwrap();
        HubDir { dir }
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("govhub.toml")
    }

    /// Starts `govhub run` on it and waits until it serves.
    pub fn start(&self) -> HubProcess {
        self.start_with_env(&[])
    }

    /// Starts with extra environment variables.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> HubProcess {
        spawn_hub(&self.config(), self.dir.path(), env)
    }
}

/// A fresh random token.
pub fn token() -> String {
    format!("test_{}", uuid::Uuid::new_v4().simple())
}

/// Starts `govhub run --config CONFIG` and waits until it serves.
///
/// A hub started with `GOVHUB_ADMIN_TOKEN` has a principal, so every
/// route needs one: it also gets a test sender (the `ingest` shorthand,
/// every source and adapter) with a quota no test reaches, and the
/// helpers present the admin's and the sender's tokens.
pub fn spawn_hub(config: &Path, dir: &Path, env: &[(&str, &str)]) -> HubProcess {
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut creds = Credentials::default();
    if let Some((_, admin)) = env.iter().find(|(k, _)| k == "GOVHUB_ADMIN_TOKEN") {
        creds.reader = Some(admin.clone());
        creds.operator = Some(admin.clone());
        creds.sender = Some(token());
        env.extend(test_sender(creds.sender.as_deref().unwrap()));
    }
    spawn_hub_with(config, dir, &env, creds)
}

/// The environment that gives a hub a test sender with `token` and a
/// quota no test reaches.
pub fn test_sender(token: &str) -> Vec<(String, String)> {
    [
        ("GOVHUB__AUTH__INGEST_TOKEN_ENV", "GOVHUB_TEST_SENDER_TOKEN"),
        ("GOVHUB_TEST_SENDER_TOKEN", token),
        ("GOVHUB__AUTH__EVENTS_PER_S", "1000000"),
        ("GOVHUB__AUTH__BURST", "1000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Starts `govhub run --config CONFIG` with `env`; the helpers present
/// `creds` to it.
pub fn spawn_hub_with(
    config: &Path,
    dir: &Path,
    env: &[(String, String)],
    creds: Credentials,
) -> HubProcess {
    let mut cmd = Command::new(govhub_bin());
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env("GOVHUB_LOG", "info,govhub=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("govhub binary starts");
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("govhub: listening on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let base = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(base) => {
            if creds.sender.is_some() || creds.reader.is_some() {
                credentials()
                    .lock()
                    .unwrap()
                    .push((base.clone(), creds.clone()));
            }
            base
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "govhub did not start within 60 s; its log:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
    };
    HubProcess {
        child,
        base,
        dir: dir.to_path_buf(),
        log,
        tokens: Default::default(),
        creds,
    }
}

/// The sum of the samples of `name` with these labels in a scrape.
pub fn metric_value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// The `mock-departments` binary, stopped when dropped.
pub struct MockDepartments {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Drop for MockDepartments {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MockDepartments {
    /// Starts it on a free loopback port.
    pub fn start() -> MockDepartments {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mock-departments"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("mock-departments starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("mock-departments: listening on ")
            .expect("mock-departments announces its address")
            .to_string();
        MockDepartments { child, url }
    }

    /// Everything the departments received.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let (_, body) = get(&format!("{}/_records", self.url));
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap_or_default()
    }

    /// What `department` received of `case`.
    pub fn received(&self, department: &str, case: &str) -> Vec<serde_json::Value> {
        self.records()
            .into_iter()
            .filter(|r| {
                r["department"] == department
                    && (r["body"].as_str().is_some_and(|b| b.contains(case))
                        || r["headers"]["ce-caseid"] == case)
            })
            .collect()
    }

    /// Waits until `department` received something of `case`.
    pub fn wait_received(&self, department: &str, case: &str) -> Vec<serde_json::Value> {
        eventually(Duration::from_secs(20), || {
            let got = self.received(department, case);
            match got.is_empty() {
                false => Ok(got),
                true => Err(format!("{department} never received {case}")),
            }
        })
    }

    /// The department reports on the case, in its own protocol.
    pub fn report(&self, department: &str, case: &str, status: &str) {
        let (code, _, body) = post(
            &format!("{}/_control/report", self.url),
            &[("content-type", "application/json")],
            serde_json::json!({"department": department, "case_id": case, "status": status, "note": "test"})
                .to_string()
                .as_bytes(),
        );
        assert!(
            (200..300).contains(&code),
            "{department} report {status}: {code} {body}"
        );
    }
}

/// `examples/yingfeng` rendered into a temporary folder with its
/// departments at `departments` (`http://host:port`), and its hub started
/// there with a fresh token for each of its principals (in the variables
/// their `token_env` names) and a test sender; the folder lives as long as
/// the returned `TempDir`. The helpers read as the command room, operate
/// as the duty officer and send as the test sender.
pub fn yingfeng(departments: &str) -> (HubProcess, tempfile::TempDir) {
    yingfeng_with_env(departments, &[])
}

/// [`yingfeng`] with more of the hub's environment.
pub fn yingfeng_with_env(
    departments: &str,
    more: &[(String, String)],
) -> (HubProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    govhub::demo::render(
        &root().join("examples/yingfeng"),
        wasm_dir(),
        dir.path(),
        departments,
    )
    .unwrap();
    let config = govhub::config::Config::load(&dir.path().join("govhub.toml")).unwrap();
    let mut tokens = std::collections::HashMap::new();
    let cache = cache_dir();
    let mut env: Vec<(String, String)> = vec![
        ("GOVHUB__SERVER__LISTEN".into(), "127.0.0.1:0".into()),
        (
            "GOVHUB__RUNTIME__CACHE_DIR".into(),
            cache.to_str().unwrap().into(),
        ),
    ];
    for p in &config.auth.principals {
        let var = p
            .token_env
            .clone()
            .expect("Yingfeng's tokens come from the environment");
        let t = token();
        env.push((var, t.clone()));
        tokens.insert(p.name.clone(), t);
    }
    let sender = token();
    env.extend(test_sender(&sender));
    env.extend(more.iter().cloned());
    let creds = Credentials {
        sender: Some(sender),
        reader: tokens.get("command-room").cloned(),
        operator: tokens.get("duty-officer").cloned(),
    };
    let mut hub = spawn_hub_with(&dir.path().join("govhub.toml"), dir.path(), &env, creds);
    hub.tokens = tokens;
    (hub, dir)
}

/// Each department's token by the adapters it is bound to, as the mock
/// departments present them when they report back.
pub fn tokens_by_adapter(hub: &HubProcess) -> serde_json::Value {
    let config = govhub::config::Config::load(&hub.dir.join("govhub.toml")).unwrap();
    let mut out = serde_json::Map::new();
    for p in &config.auth.principals {
        for a in &p.adapters {
            out.insert(a.clone(), hub.tokens[&p.name].clone().into());
        }
    }
    serde_json::Value::Object(out)
}

/// The Yingfeng deployment, rendered and running against the mock
/// departments.
pub struct Deployment {
    pub hub: HubProcess,
    pub mock: MockDepartments,
    _dir: tempfile::TempDir,
}

impl Deployment {
    /// Renders `examples/yingfeng` and starts it.
    pub fn start() -> Deployment {
        Deployment::start_with_env(&[])
    }

    /// [`Deployment::start`] with more of the hub's environment.
    pub fn start_with_env(env: &[(String, String)]) -> Deployment {
        let mock = MockDepartments::start();
        let (hub, dir) = yingfeng_with_env(&mock.url, env);
        let (code, _, _) = post(
            &format!("{}/_control/hub", mock.url),
            &[("content-type", "application/json")],
            serde_json::json!({"url": hub.base, "tokens": tokens_by_adapter(&hub)})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(code, 200);
        Deployment {
            hub,
            mock,
            _dir: dir,
        }
    }
}

impl HubProcess {
    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the process to exit;
    /// returns how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> Duration {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "govhub did not exit within {timeout:?} of SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// GET `path` as JSON.
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = get(&self.url(path));
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Waits until `GET path` satisfies `check`, or panics after `timeout`.
    pub fn wait_until(
        &self,
        path: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(timeout, || {
            let (status, v) = self.get_json(path);
            match status == 200 && check(&v) {
                true => Ok(v),
                false => Err(format!("{path} never got there: {v}")),
            }
        })
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// What the hub logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until the log holds `needle` (stdout and stderr are read by
    /// separate threads, so a line can arrive after a later event).
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        eventually(timeout, || {
            let log = self.log();
            match log.contains(needle) {
                true => Ok(()),
                false => Err(format!("`{needle}` never appeared in the log:\n{log}")),
            }
        })
    }

    /// `GET /metrics`, parsed.
    pub fn scrape(&self) -> prometheus_parse::Scrape {
        let (status, body) = get(&self.url("/metrics"));
        assert_eq!(status, 200);
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("/metrics is not Prometheus text ({e}):\n{body}"))
    }

    /// The sum of the samples of `name` with these labels, now.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.scrape(), name, labels)
    }

    /// Whether `/healthz` answers 200.
    pub fn healthy(&self) -> bool {
        get(&self.url("/healthz")).0 == 200
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A later hub on the same port is another hub.
        credentials()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(base, _)| *base != self.base);
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// One request exactly as given, no credentials added: method, URL,
/// headers, body → (status, headers with lower-case names, body), or
/// `None` when no answer came (connection refused or reset).
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, std::collections::HashMap<String, String>, String)> {
    let method: ureq::http::Method = method.parse().expect("a method");
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = agent().run(req.body(body.to_vec()).unwrap()).ok()?;
    let headers = r
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    Some((
        r.status().as_u16(),
        headers,
        r.body_mut().read_to_string().unwrap_or_default(),
    ))
}

/// `headers`, plus the hub's default token for `method url` when they
/// carry no `authorization`.
fn with_credentials(method: &str, url: &str, headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        if let Some(t) = default_token(method, url) {
            out.push(("authorization".into(), format!("Bearer {t}")));
        }
    }
    out
}

/// GET → (status, body).
pub fn get(url: &str) -> (u16, String) {
    get_with(url, &[])
}

/// GET with headers → (status, body).
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = agent().get(url);
    for (k, v) in with_credentials("GET", url, headers) {
        req = req.header(k, v);
    }
    let mut r = req.call().expect("request sent");
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// GET → (status, headers with lower-case names).
pub fn head(url: &str) -> (u16, std::collections::HashMap<String, String>) {
    let mut req = agent().get(url);
    for (k, v) in with_credentials("GET", url, &[]) {
        req = req.header(k, v);
    }
    let r = req.call().expect("request sent");
    let headers = r
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    (r.status().as_u16(), headers)
}

/// POST → (status, content-type, body).
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, String) {
    try_post(url, headers, body).expect("request sent")
}

/// POST → (status, content-type, body), or `None` when no answer came
/// (connection refused or reset).
pub fn try_post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<(u16, String, String)> {
    let mut req = agent().post(url);
    for (k, v) in with_credentials("POST", url, headers) {
        req = req.header(k, v);
    }
    let mut r = req.send(body).ok()?;
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((
        r.status().as_u16(),
        ct,
        r.body_mut().read_to_string().unwrap_or_default(),
    ))
}

/// A structured-mode CloudEvent (JSON) with the given id, case and a
/// payload of about `size` bytes.
pub fn cloudevent(id: &str, caseid: Option<&str>, size: usize) -> serde_json::Value {
    let mut e = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:test:stream",
        "type": "gov.incident.reported",
        "category": "safety.water",
        "severity": "major",
        "datacontenttype": "application/json",
        "data": { "text": "x".repeat(size) },
    });
    if let Some(c) = caseid {
        e["caseid"] = c.into();
    }
    e
}

/// POSTs events as one batch (`application/cloudevents-batch+json`).
pub fn send_batch(hub_base: &str, events: &[serde_json::Value]) -> (u16, String, String) {
    post(
        &format!("{hub_base}/v1/events"),
        &[("content-type", "application/cloudevents-batch+json")],
        serde_json::Value::Array(events.to_vec())
            .to_string()
            .as_bytes(),
    )
}

/// POSTs one structured CloudEvent to `/v1/events`.
pub fn send_event(hub_base: &str, event: &serde_json::Value) -> Option<(u16, String, String)> {
    try_post(
        &format!("{hub_base}/v1/events"),
        &[("content-type", "application/cloudevents+json")],
        event.to_string().as_bytes(),
    )
}

/// A request a department stand-in got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it was recorded.
    pub at: Instant,
}

impl Received {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A department stand-in on a loopback port that records every request and
/// answers with a settable status, after a settable delay.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    echo: Arc<std::sync::atomic::AtomicBool>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    arrivals: Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    /// Starts on a free loopback port, answering 200.
    pub fn start() -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let echo = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let echoes = echo.clone();
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let arrivals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (delay, arrived) = (delay_ms.clone(), arrivals.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (rec, st) = (received.clone(), status.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                    let rec = rec.clone();
                    let st = st.clone();
                    let echoes = echoes.clone();
                    let delay = delay.clone();
                    let arrived = arrived.clone();
                    async move {
                        arrived.fetch_add(1, Ordering::SeqCst);
                        let wait = delay.load(Ordering::SeqCst);
                        if wait > 0 {
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                        }
                        let (parts, body) = req.into_parts();
                        let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
                            .await
                            .unwrap_or_default();
                        let status = st.load(Ordering::SeqCst);
                        if status < 300 {
                            rec.lock().unwrap().push(Received {
                                method: parts.method.to_string(),
                                path: parts.uri.to_string(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (n.to_string(), v.to_str().unwrap_or_default().to_string())
                                    })
                                    .collect(),
                                body: body.to_vec(),
                                at: Instant::now(),
                            });
                        }
                        let code = axum::http::StatusCode::from_u16(status).unwrap();
                        // A department that quotes the request in its answer.
                        let quoted = if echoes.load(Ordering::SeqCst) {
                            body.to_vec()
                        } else {
                            Vec::new()
                        };
                        (code, quoted)
                    }
                });
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver {
            addr,
            received,
            status,
            echo,
            delay_ms,
            arrivals,
        }
    }

    /// Makes it answer with the body it got (a department quoting the
    /// request in its error).
    pub fn echo(&self, on: bool) {
        self.echo.store(on, Ordering::SeqCst);
    }

    /// Makes it wait `ms` before answering each request.
    pub fn delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Requests that arrived (answered or not, recorded or not).
    pub fn arrivals(&self) -> usize {
        self.arrivals.load(Ordering::SeqCst)
    }

    /// `host:port`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Sets the status it answers with (requests answered >= 300 are not
    /// recorded).
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Everything recorded so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The CloudEvents ids (`ce-id`) of everything recorded so far, in
    /// order of arrival, repeats included.
    pub fn ce_ids(&self) -> Vec<String> {
        self.received()
            .iter()
            .filter_map(|r| r.header("ce-id").map(str::to_string))
            .collect()
    }

    /// Waits until every id of `want` was recorded, or panics after
    /// `timeout` naming `who` and some of the ids missing; the ids
    /// recorded by then ([`Receiver::ce_ids`]).
    pub fn wait_for_ids<'a>(
        &self,
        who: &str,
        want: impl IntoIterator<Item = &'a String> + Copy,
        timeout: Duration,
    ) -> Vec<String> {
        eventually(timeout, || {
            let got = self.ce_ids();
            let have: std::collections::HashSet<&String> = got.iter().collect();
            let missing: Vec<&String> = want.into_iter().filter(|id| !have.contains(id)).collect();
            match missing.len() {
                0 => Ok(got),
                n => Err(format!(
                    "{who}: {n} of {} acknowledged events never arrived, e.g. {:?}",
                    want.into_iter().count(),
                    &missing[..n.min(5)]
                )),
            }
        })
    }

    /// Waits until `n` requests were recorded, or panics after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, || {
            let got = self.received();
            match got.len() >= n {
                true => Ok(got),
                false => Err(format!(
                    "expected {n} requests within {timeout:?}, got {}",
                    got.len()
                )),
            }
        })
    }
}

/// Runs `govhub` with arguments → (exit success, stdout, stderr).
pub fn govhub(args: &[&str]) -> (bool, String, String) {
    govhub_with_env(args, &[])
}

/// Runs `govhub` with arguments and environment variables.
pub fn govhub_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(govhub_bin());
    cmd.args(args).env("GOVHUB_CACHE_DIR", cache_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback port nobody listens on now (for a process told where to
/// listen).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
