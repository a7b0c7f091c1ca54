//! A real NATS JetStream cluster on loopback for the tests: n nodes of the
//! `nats-server` that `tests/nats-server.sh` installs (path in
//! `GOVHUB_NATS_SERVER`, or the script is run), each with its own store
//! directory, `sync_interval: always` (the Jepsen analysis of 2.12.1 found
//! acknowledged writes lost to the default lazy fsync), its own log file,
//! and client, route and monitoring ports picked free on 127.0.0.1.
//!
//! Included where needed with
//! `#[path = "support/nats.rs"] mod nats;`, so the other test binaries
//! neither build it nor warn about it.
//!
//! async-nats takes a list of URLs ([`NatsCluster::url_list`]), not the
//! comma-separated string of [`NatsCluster::urls`] (that one parses as a
//! single, broken, URL there).
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a node may take to be ready (started, or restarted and caught
/// up); a few hundred milliseconds is usual.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Started nodes of one cluster; every node is killed when it drops.
pub struct NatsCluster {
    nodes: Vec<Node>,
    // Declared after `nodes`: the store directories go once the nodes are
    // dead (Drop kills them first anyway).
    dir: tempfile::TempDir,
}

struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    config: PathBuf,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts an `n`-node cluster and returns once every node answers its
    /// health check and JetStream has a meta leader that every node knows.
    pub fn start(n: usize) -> NatsCluster {
        assert!(n >= 1, "a cluster has at least one node");
        let dir = tempfile::Builder::new()
            .prefix("govhub-nats-")
            .tempdir()
            .expect("a temporary directory for the NATS cluster");
        let ports = free_ports(3 * n);
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("n{i}"),
                client_port: ports[3 * i],
                cluster_port: ports[3 * i + 1],
                monitor_port: ports[3 * i + 2],
                config: dir.path().join(format!("n{i}.conf")),
                store: dir.path().join(format!("n{i}-store")),
                log: dir.path().join(format!("n{i}.log")),
                child: None,
            })
            .collect();
        let routes: Vec<String> = nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.cluster_port))
            .collect();
        for node in &nodes {
            std::fs::write(&node.config, node.config_text(&routes)).unwrap();
        }
        let mut cluster = NatsCluster { nodes, dir };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_ready(i, READY_TIMEOUT);
        }
        cluster
    }

    /// One 3-node cluster for the whole test binary, started on first use,
    /// for tests that leave its nodes alone (a test that kills nodes starts
    /// its own). Give each test its own stream names. Its nodes are killed
    /// and its directory removed when the process exits.
    pub fn shared() -> &'static NatsCluster {
        static SHARED: OnceLock<NatsCluster> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(cluster) = SHARED.get() {
                for node in &cluster.nodes {
                    if let Some(child) = &node.child {
                        // SAFETY: plain syscalls on our own child's pid.
                        unsafe {
                            libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
                            libc::waitpid(child.id() as libc::pid_t, std::ptr::null_mut(), 0);
                        }
                    }
                }
                let _ = std::fs::remove_dir_all(cluster.dir.path());
            }
        }
        SHARED.get_or_init(|| {
            let cluster = NatsCluster::start(3);
            // Statics are never dropped; exit() runs this instead.
            // SAFETY: registers a function that does not unwind.
            unsafe { libc::atexit(stop_shared) };
            cluster
        })
    }

    /// How many nodes the cluster has (dead ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Every node's client URL, for `async_nats::connect`.
    pub fn url_list(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.url(i)).collect()
    }

    /// Every node's client URL, comma-separated (the form NATS's own tools
    /// and configuration take).
    pub fn urls(&self) -> String {
        self.url_list().join(",")
    }

    /// Node `i`'s `server_name` (`n0`, `n1`, ...), as stream and meta
    /// cluster info name peers.
    pub fn server_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node named `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node is named {name:?}"))
    }

    /// Node `i`'s monitoring endpoint `path` (`/varz`, `/jsz?streams=true`,
    /// ...) as JSON; `Err` with the reason when it does not answer 200.
    pub fn monitor(&self, i: usize, path: &str) -> Result<serde_json::Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.nodes[i].monitor_port);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let mut response = agent.get(&url).call().map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))?;
        if status != 200 {
            return Err(format!("{url}: {status} {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("{url}: {e}: {body}"))
    }

    /// The temporary directory holding every node's configuration, store
    /// and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `i`'s store directory (its `jetstream.store_dir`).
    pub fn store_dir(&self, i: usize) -> &Path {
        &self.nodes[i].store
    }

    /// The last `lines` lines of node `i`'s log (its stdout and stderr,
    /// every run of it).
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.nodes[i].log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether node `i` is running (not killed, not exited).
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs node `i` (no shutdown, no flush) and reaps it.
    pub fn kill(&mut self, i: usize) {
        let child = self.nodes[i].child.take();
        let mut child = child.unwrap_or_else(|| panic!("node {i} is not running"));
        let _ = child.kill();
        child.wait().expect("reaping a killed nats-server");
    }

    /// Starts node `i` again, killed or not, with the same ports, store
    /// and configuration, and waits until it is healthy: in the cluster,
    /// with a meta leader, and its streams and consumers current.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].child.is_some() {
            self.kill(i);
        }
        self.spawn(i);
        self.wait_ready(i, READY_TIMEOUT);
    }

    /// Waits until node `i` is ready: `/healthz` answers ok (the server
    /// is up, in contact with a JetStream meta leader, and its streams and
    /// consumers are current) and `/jsz` names the meta leader of a
    /// cluster of all the nodes. Polls every 20 ms; past `timeout`, or if
    /// the node exits, panics with the reason and the node's log tail.
    pub fn wait_ready(&mut self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let n = self.len();
        loop {
            let why = match self.nodes[i].child.as_mut().map(|c| c.try_wait()) {
                None => format!("node {i} is not running"),
                Some(Ok(Some(status))) => {
                    panic!(
                        "nats-server node {i} exited ({status}) before it was ready; its log ends:\n{}",
                        self.log_tail(i, 40)
                    );
                }
                Some(Err(e)) => format!("node {i}: {e}"),
                Some(Ok(None)) => match self.ready(i, n) {
                    Ok(()) => return,
                    Err(why) => why,
                },
            };
            if Instant::now() >= deadline {
                panic!(
                    "nats-server node {i} was not ready within {timeout:?}: {why}; its log ends:\n{}",
                    self.log_tail(i, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ready(&self, i: usize, n: usize) -> Result<(), String> {
        let health = self.monitor(i, "/healthz")?;
        if health["status"] != "ok" {
            return Err(format!("/healthz says {health}"));
        }
        if n == 1 {
            return Ok(());
        }
        let jsz = self.monitor(i, "/jsz")?;
        let meta = &jsz["meta_cluster"];
        let leader = meta["leader"].as_str().unwrap_or_default();
        if leader.is_empty() {
            return Err(format!("no meta leader yet: {meta}"));
        }
        if meta["cluster_size"] != n {
            return Err(format!("the meta cluster is not of {n} nodes: {meta}"));
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("a log file for nats-server");
        let mut cmd = Command::new(nats_server());
        cmd.arg("--config")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = spawn_tied_to_process(cmd)
            .unwrap_or_else(|e| panic!("starting {}: {e}", nats_server().display()));
        self.nodes[i].child = Some(child);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Node {
    fn config_text(&self, routes: &[String]) -> String {
        format!(
            r#"server_name: {name}
listen: "127.0.0.1:{client}"
http: "127.0.0.1:{monitor}"
jetstream {{
  store_dir: {store:?}
  sync_interval: always
}}
cluster {{
  name: govhub-test
  listen: "127.0.0.1:{cluster}"
  routes: [{routes}]
}}
"#,
            name = self.name,
            client = self.client_port,
            monitor = self.monitor_port,
            store = self.store.display().to_string(),
            cluster = self.cluster_port,
            routes = routes
                .iter()
                .map(|r| format!("{r:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

/// The `nats-server` binary: `GOVHUB_NATS_SERVER` when set (tests/run.sh
/// sets it), else what `tests/nats-server.sh` installs (it is quick when
/// the binary is already in target/nats/).
pub fn nats_server() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("GOVHUB_NATS_SERVER").filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "GOVHUB_NATS_SERVER={} is not a file (tests/nats-server.sh installs one)",
                path.display()
            );
            return path;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/nats-server.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} failed ({}): {stdout}",
            script.display(),
            out.status
        );
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(
            path.is_file(),
            "{} printed no binary: {stdout}",
            script.display()
        );
        path
    })
}

/// `n` distinct loopback ports free now, none handed out before in this
/// process (clusters of parallel tests start at once): bound together,
/// then released for the servers to take.
fn free_ports(n: usize) -> Vec<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            ports.push(port);
        }
        listeners.push(listener);
    }
    ports
}

/// Spawns `cmd` so that the kernel SIGKILLs it when this test process
/// ends, however it ends (a shared cluster is never dropped; a run may be
/// interrupted). Linux's parent-death signal follows the thread that
/// spawned the child, not the process, so every node is spawned by one
/// thread that lives as long as the process.
fn spawn_tied_to_process(mut cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("nats-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("a thread to spawn nats-server from");
        tx
    });
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have gone before the signal was asked for.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .expect("the nats-spawner thread is alive");
    rx.recv().expect("the nats-spawner thread answers")
}
