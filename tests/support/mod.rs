//! What the end-to-end tests share: the adapters built once, the real
//! `govhub` binary started on a loopback port, and a recording HTTP
//! receiver standing in for a department.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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
    "fixture-hostile",
    "fixture-not-an-adapter",
    "fixture-future-major",
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
        let mut cmd = Command::new(govhub_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(self.config())
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
            Ok(base) => base,
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
            dir: self.dir.path().to_path_buf(),
            log,
        }
    }
}

impl HubProcess {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// What the hub logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
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
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// GET → (status, body).
pub fn get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().expect("request sent");
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// POST → (status, content-type, body).
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, String) {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.send(body).expect("request sent");
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        r.status().as_u16(),
        ct,
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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
/// answers with a settable status.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    /// Starts on a free loopback port, answering 200.
    pub fn start() -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
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
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
                            .await
                            .unwrap_or_default();
                        let status = st.load(Ordering::SeqCst);
                        if status < 300 {
                            rec.lock().unwrap().push(Received {
                                path: parts.uri.to_string(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (n.to_string(), v.to_str().unwrap_or_default().to_string())
                                    })
                                    .collect(),
                                body: body.to_vec(),
                            });
                        }
                        axum::http::StatusCode::from_u16(status).unwrap()
                    }
                });
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver {
            addr,
            received,
            status,
        }
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

    /// Waits until `n` requests were recorded, or panics after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} requests within {timeout:?}, got {}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `govhub` with arguments → (exit success, stdout, stderr).
pub fn govhub(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(govhub_bin())
        .args(args)
        .env("GOVHUB_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
