//! Adapter manifests: the TOML file beside each `.wasm` that names the
//! adapter, pins its module, and sets its sandbox.
//!
//! ```toml
//! name = "webhook"
//! wasm = "webhook.wasm"
//! sha256 = "…"                    # refused if the module does not match
//! subscribe = ["gov.*"]           # event types delivered to it, besides routes
//! poll_interval_ms = 30000        # optional: call `poll` this often
//! [limits]
//! memory_mb = 64
//! deadline_ms = 2000
//! concurrency = 4
//! connect_timeout_ms = 1000       # TCP connect and TLS handshake to the department
//! first_byte_timeout_ms = 1500    # from the request on the wire to the answer's head
//! between_bytes_timeout_ms = 1000 # between two pieces of the answer's body
//! max_answer_bytes = 4194304      # the largest answer body read from a department
//! [capabilities]
//! outbound_hosts = ["127.0.0.1:9000"]
//! [tls]                           # optional: mutual TLS with the department
//! client_cert = "webhook-client.pem"  # PEM chain; relative paths: the hub's adapters.dir
//! client_key = "webhook-client.key"   # PEM private key (PKCS#8, PKCS#1 or SEC1)
//! [config]
//! url = "http://127.0.0.1:9000/events"
//! token = { env = "WEBHOOK_TOKEN" }   # secrets come from the hub's environment
//! ```

use super::error::LoadError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default memory cap. Adapters are translators, not databases: a few MiB
/// of JSON in flight is normal; 64 MiB leaves room while keeping 100
/// loaded adapters × `concurrency` instances well inside a small machine.
pub const DEFAULT_MEMORY_MB: u32 = 64;
/// Default per-call deadline. A department call over loopback or a LAN takes
/// milliseconds; two seconds leaves room for a slow department without
/// letting one stuck call hold a delivery slot for long.
pub const DEFAULT_DEADLINE_MS: u64 = 2_000;
/// Default instances running at once per adapter.
pub const DEFAULT_CONCURRENCY: u32 = 4;
/// Default log lines one call may write; more are dropped and counted, so a
/// chatty or looping adapter cannot flood the hub's log.
pub const DEFAULT_LOG_LINES_PER_CALL: u32 = 100;
/// Default time to open a connection to a department (TCP and, for HTTPS,
/// the TLS handshake). Inside a government network a connect takes
/// milliseconds; a second means the host is down or unreachable.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Default time from a request on the wire to the answer's status line. A
/// department that accepted the connection but does not answer is cut here,
/// before the call deadline, so the adapter itself reports it (the
/// instance stays healthy) and the delivery is retried.
pub const DEFAULT_FIRST_BYTE_TIMEOUT_MS: u64 = 1_500;
/// Default longest pause between two pieces of an answer's body.
pub const DEFAULT_BETWEEN_BYTES_TIMEOUT_MS: u64 = 1_000;
/// Default largest answer body read from a department. A department
/// answers a delivery with a status and a few lines, a poll with a page of
/// records; 4 MiB is room for that, and an answer past it (a misrouted
/// download, a server in a loop) is cut there, never read into the
/// adapter's memory.
pub const DEFAULT_MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

/// The sandbox limits of one adapter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear-memory cap per instance, MiB.
    pub memory_mb: u32,
    /// Wall-clock deadline per call, milliseconds.
    pub deadline_ms: u64,
    /// Instances that may run at once (the pool size).
    pub concurrency: u32,
    /// Log lines one call may write.
    pub log_lines_per_call: u32,
    /// A fresh instance for every call, dropped after it: nothing one call
    /// leaves in the adapter's memory reaches the next (costs an
    /// instantiation per call).
    pub isolate_calls: bool,
    /// Time to open a connection to the department, ms (unset: the
    /// default, or less when the deadline is short).
    pub connect_timeout_ms: Option<u64>,
    /// Time from the request to the answer's status line, ms.
    pub first_byte_timeout_ms: Option<u64>,
    /// Longest pause between two pieces of the answer's body, ms.
    pub between_bytes_timeout_ms: Option<u64>,
    /// Largest answer body read from a department, bytes; a longer one is
    /// an error (retried, as the department misbehaved).
    pub max_answer_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: DEFAULT_MEMORY_MB,
            deadline_ms: DEFAULT_DEADLINE_MS,
            concurrency: DEFAULT_CONCURRENCY,
            log_lines_per_call: DEFAULT_LOG_LINES_PER_CALL,
            isolate_calls: false,
            connect_timeout_ms: None,
            first_byte_timeout_ms: None,
            between_bytes_timeout_ms: None,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }
}

/// The outbound-HTTP timeouts and answer limit of one adapter, as they
/// apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// TCP connect and TLS handshake.
    pub connect: std::time::Duration,
    /// Request to the answer's head.
    pub first_byte: std::time::Duration,
    /// Between two pieces of the body.
    pub between_bytes: std::time::Duration,
    /// The largest answer body, bytes.
    pub max_answer_bytes: u64,
}

impl Limits {
    /// The timeouts that apply: each as set, or its default, and a default
    /// never more than three quarters of the call deadline, so the adapter
    /// still has time to report the timeout before the deadline stops it.
    pub fn http_limits(&self) -> HttpLimits {
        let room = self.deadline_ms.saturating_mul(3) / 4;
        let pick = |set: Option<u64>, default: u64| {
            std::time::Duration::from_millis(set.unwrap_or(default.min(room)).max(1))
        };
        HttpLimits {
            connect: pick(self.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS),
            first_byte: pick(self.first_byte_timeout_ms, DEFAULT_FIRST_BYTE_TIMEOUT_MS),
            between_bytes: pick(
                self.between_bytes_timeout_ms,
                DEFAULT_BETWEEN_BYTES_TIMEOUT_MS,
            ),
            max_answer_bytes: self.max_answer_bytes,
        }
    }
}

/// `[tls]` of a manifest: the client certificate the adapter presents to a
/// department that asks for one (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsIdentity {
    /// The certificate chain, PEM (the adapter's certificate first).
    pub client_cert: Option<PathBuf>,
    /// Its private key, PEM.
    pub client_key: Option<PathBuf>,
}

/// What the adapter may reach outside its sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// `host:port` (or `host`, meaning the scheme's default port) the adapter
    /// may call over HTTP. Nothing else is reachable.
    pub outbound_hosts: Vec<String>,
}

/// A `[config]` value: a literal, or a reference to an environment variable
/// of the hub (for secrets; the adapter never sees the environment).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// `key = { env = "NAME" }`.
    Env {
        /// The environment variable.
        env: String,
    },
    /// `key = "text"`.
    Text(String),
    /// `key = 3`.
    Integer(i64),
    /// `key = 2.5`.
    Float(f64),
    /// `key = true`.
    Bool(bool),
    /// A table or an array (a device table, say): the adapter reads it as
    /// JSON text.
    Structured(serde_json::Value),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    wasm: PathBuf,
    sha256: Option<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    poll_interval_ms: Option<u64>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    capabilities: Capabilities,
    #[serde(default)]
    tls: TlsIdentity,
    #[serde(default)]
    config: BTreeMap<String, ConfigValue>,
    #[serde(default)]
    clearance: BTreeMap<String, String>,
}

/// A parsed and checked manifest. Paths are resolved against the manifest's
/// folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The adapter's name in this hub (`[a-z0-9-]`, unique).
    pub name: String,
    /// The manifest file, when loaded from one.
    pub path: Option<PathBuf>,
    /// The module file.
    pub wasm: PathBuf,
    /// The module's pinned sha256 (lower-case hex); `None` only for the
    /// offline CLI, which hashes what it is given.
    pub sha256: Option<String>,
    /// Event-type globs delivered to it besides routes.
    pub subscribe: Vec<String>,
    /// How often to call `poll`, if at all.
    pub poll_interval_ms: Option<u64>,
    /// Sandbox limits.
    pub limits: Limits,
    /// What it may reach.
    pub capabilities: Capabilities,
    /// Its client certificate for mutual TLS, as written (relative paths
    /// resolve against the hub's `adapters.dir` when loaded).
    pub tls: TlsIdentity,
    /// Its `[config]` table, unresolved.
    pub config: BTreeMap<String, ConfigValue>,
    /// What it asks to see of personal information (`[clearance]`:
    /// category → action). A request only: the hub's
    /// `[governance.grants]` decide.
    pub clearance: BTreeMap<String, String>,
}

/// Checks an adapter name: `[a-z0-9-]`, 1 to 64 characters, used in URLs.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "field `name`: `{name}` must be 1-64 characters of a-z, 0-9 and -"
        ));
    }
    Ok(())
}

impl Manifest {
    /// A manifest for a module used without one (the offline CLI): default
    /// limits, the given outbound hosts and config.
    pub fn for_module(wasm: &Path, name: &str) -> Manifest {
        Manifest {
            name: name.to_string(),
            path: None,
            wasm: wasm.to_path_buf(),
            sha256: None,
            subscribe: Vec::new(),
            poll_interval_ms: None,
            limits: Limits::default(),
            capabilities: Capabilities::default(),
            tls: TlsIdentity::default(),
            config: BTreeMap::new(),
            clearance: BTreeMap::new(),
        }
    }

    /// Reads and checks a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::ManifestRead {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::parse(&text, path)
    }

    /// Parses and checks manifest text; `path` locates the file (its folder
    /// resolves `wasm`).
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, LoadError> {
        let invalid = |message: String| LoadError::ManifestInvalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        check_name(&raw.name).map_err(invalid)?;
        let sha256 = match raw.sha256 {
            Some(s) => {
                let s = s.trim().to_ascii_lowercase();
                if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(format!(
                        "field `sha256`: `{s}` is not 64 hex digits (`govhub adapter inspect FILE.wasm` prints it)"
                    )));
                }
                Some(s)
            }
            None => {
                return Err(invalid(
                    "field `sha256` is required: pin the module (`govhub adapter inspect FILE.wasm` prints it)"
                        .into(),
                ))
            }
        };
        let l = &raw.limits;
        if !(1..=4096).contains(&l.memory_mb) {
            return Err(invalid(format!(
                "field `limits.memory_mb`: {} is outside 1..=4096",
                l.memory_mb
            )));
        }
        if !(1..=600_000).contains(&l.deadline_ms) {
            return Err(invalid(format!(
                "field `limits.deadline_ms`: {} is outside 1..=600000",
                l.deadline_ms
            )));
        }
        if !(1..=256).contains(&l.concurrency) {
            return Err(invalid(format!(
                "field `limits.concurrency`: {} is outside 1..=256",
                l.concurrency
            )));
        }
        for (field, value) in [
            ("connect_timeout_ms", l.connect_timeout_ms),
            ("first_byte_timeout_ms", l.first_byte_timeout_ms),
            ("between_bytes_timeout_ms", l.between_bytes_timeout_ms),
        ] {
            match value {
                Some(0) => return Err(invalid(format!("field `limits.{field}` must be positive"))),
                Some(v) if v >= l.deadline_ms => {
                    return Err(invalid(format!(
                        "field `limits.{field}`: {v} must be less than limits.deadline_ms ({}), \
                         so the adapter can still report the timeout",
                        l.deadline_ms
                    )))
                }
                _ => {}
            }
        }
        let memory = u64::from(l.memory_mb) * 1024 * 1024;
        if l.max_answer_bytes == 0 || l.max_answer_bytes >= memory {
            return Err(invalid(format!(
                "field `limits.max_answer_bytes`: {} must be positive and less than limits.memory_mb ({} MiB), \
                 so the adapter can hold the answer",
                l.max_answer_bytes, l.memory_mb
            )));
        }
        if raw.tls.client_cert.is_some() != raw.tls.client_key.is_some() {
            return Err(invalid(
                "fields `tls.client_cert` and `tls.client_key` go together: set both or neither"
                    .into(),
            ));
        }
        for host in &raw.capabilities.outbound_hosts {
            HostPattern::parse(host)
                .map_err(|m| invalid(format!("field `capabilities.outbound_hosts`: {m}")))?;
        }
        for glob in &raw.subscribe {
            crate::router::TypeGlob::new(glob)
                .map_err(|m| invalid(format!("field `subscribe`: {m}")))?;
        }
        if raw.poll_interval_ms == Some(0) {
            return Err(invalid("field `poll_interval_ms` must be positive".into()));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(Manifest {
            name: raw.name,
            path: Some(path.to_path_buf()),
            wasm: dir.join(raw.wasm),
            sha256,
            subscribe: raw.subscribe,
            poll_interval_ms: raw.poll_interval_ms,
            limits: raw.limits,
            capabilities: raw.capabilities,
            tls: raw.tls,
            config: raw.config,
            clearance: raw.clearance,
        })
    }

    /// The `[config]` table with environment references resolved.
    pub fn resolve_config(&self) -> Result<BTreeMap<String, String>, LoadError> {
        self.config
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    ConfigValue::Env { env } => {
                        std::env::var(env).map_err(|_| LoadError::MissingEnv {
                            adapter: self.name.clone(),
                            key: key.clone(),
                            var: env.clone(),
                        })?
                    }
                    ConfigValue::Text(s) => s.clone(),
                    ConfigValue::Integer(i) => i.to_string(),
                    ConfigValue::Float(f) => f.to_string(),
                    ConfigValue::Bool(b) => b.to_string(),
                    ConfigValue::Structured(v) => v.to_string(),
                };
                Ok((key.clone(), text))
            })
            .collect()
    }
}

/// One `outbound_hosts` entry: a host and an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    /// Parses `host`, `host:port` or `[v6]:port`.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let s = s.trim();
        if s.is_empty() || s.contains('/') || s.contains('*') || s.contains('@') {
            return Err(format!(
                "`{s}` must be `host` or `host:port` (no scheme, path or wildcard)"
            ));
        }
        let (host, port) = split_host_port(s);
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("`{s}`: `{p}` is not a port number"))?,
            ),
            None => None,
        };
        Ok(HostPattern {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a request to `authority` (as sent: `host[:port]`) over
    /// `https` or plain HTTP matches. An entry without a port allows only
    /// the scheme's default port.
    pub fn allows(&self, authority: &str, https: bool) -> bool {
        let (host, port) = split_host_port(authority);
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(p) => p,
                Err(_) => return false,
            },
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
        };
        let wanted = self.port.unwrap_or(if https { 443 } else { 80 });
        host.eq_ignore_ascii_case(&self.host) && port == wanted
    }
}

fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        // [v6]:port
        if let Some(end) = rest.find(']') {
            let host = &s[..end + 2];
            let port = rest[end + 1..].strip_prefix(':');
            return (host, port);
        }
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, LoadError> {
        Manifest::parse(text, Path::new("/srv/adapters.d/x.toml"))
    }

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn full_manifest_parses_with_resolved_paths() {
        let m = parse(&format!(
            r#"
            name = "webhook"
            wasm = "webhook.wasm"
            sha256 = "{SHA}"
            subscribe = ["gov.*"]
            [limits]
            memory_mb = 32
            [capabilities]
            outbound_hosts = ["127.0.0.1:9000"]
            [config]
            url = "http://127.0.0.1:9000/events"
            retries = 3
            [config.devices.SD-0101]
            lat = 30.249
            grid = "yingfeng/wangjiang/1"
            "#
        ))
        .unwrap();
        assert_eq!(m.wasm, Path::new("/srv/adapters.d/webhook.wasm"));
        assert_eq!(m.limits.memory_mb, 32);
        assert_eq!(m.limits.deadline_ms, DEFAULT_DEADLINE_MS);
        let config = m.resolve_config().unwrap();
        assert_eq!(config["retries"], "3");
        let devices: serde_json::Value = serde_json::from_str(&config["devices"]).unwrap();
        assert_eq!(devices["SD-0101"]["grid"], "yingfeng/wangjiang/1");
    }

    #[test]
    fn bad_manifests_name_the_field() {
        let cases = [
            (format!("name = \"Bad Name\"\nwasm = \"x.wasm\"\nsha256 = \"{SHA}\""), "name"),
            ("name = \"x\"\nwasm = \"x.wasm\"".to_string(), "sha256"),
            ("name = \"x\"\nwasm = \"x.wasm\"\nsha256 = \"abc\"".to_string(), "sha256"),
            (format!("name = \"x\"\nwasm = \"x.wasm\"\nsha256 = \"{SHA}\"\n[limits]\nmemory_mb = 0"), "limits.memory_mb"),
            (format!("name = \"x\"\nwasm = \"x.wasm\"\nsha256 = \"{SHA}\"\n[limits]\nmemroy_mb = 1"), "memroy_mb"),
            (format!("name = \"x\"\nwasm = \"x.wasm\"\nsha256 = \"{SHA}\"\n[capabilities]\noutbound_hosts = [\"http://a/\"]"), "outbound_hosts"),
            (format!("name = \"x\"\nsha256 = \"{SHA}\""), "wasm"),
            (format!("name = \"x\"\nwasm = \"x.wasm\"\nsha256 = \"{SHA}\"\n[limits]\ndeadline_ms = 500\nfirst_byte_timeout_ms = 500"), "limits.first_byte_timeout_ms"),
            (format!("name = \"x\"\nwasm = \"x.wasm\"\nsha256 = \"{SHA}\"\n[limits]\nconnect_timeout_ms = 0"), "limits.connect_timeout_ms"),
            (format!("name = \"x\"\nwasm = \"x.wasm\"\nsha256 = \"{SHA}\"\n[limits]\nmax_answer_bytes = 0"), "limits.max_answer_bytes"),
            (format!("name = \"x\"\nwasm = \"x.wasm\"\nsha256 = \"{SHA}\"\n[limits]\nmemory_mb = 4\nmax_answer_bytes = 4194304"), "limits.max_answer_bytes"),
            (format!("name = \"x\"\nwasm = \"x.wasm\"\nsha256 = \"{SHA}\"\n[tls]\nclient_cert = \"c.pem\""), "tls.client_key"),
        ];
        for (text, field) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn http_limits_default_inside_the_deadline() {
        let t = Limits::default().http_limits();
        assert_eq!(t.connect.as_millis(), DEFAULT_CONNECT_TIMEOUT_MS as u128);
        assert_eq!(
            t.first_byte.as_millis(),
            DEFAULT_FIRST_BYTE_TIMEOUT_MS as u128
        );
        assert_eq!(
            t.between_bytes.as_millis(),
            DEFAULT_BETWEEN_BYTES_TIMEOUT_MS as u128
        );
        // A short deadline pulls the defaults in; a value set stays.
        let short = Limits {
            deadline_ms: 400,
            connect_timeout_ms: Some(50),
            ..Limits::default()
        };
        let t = short.http_limits();
        assert_eq!(t.connect.as_millis(), 50);
        assert_eq!(t.first_byte.as_millis(), 300);
        assert_eq!(t.between_bytes.as_millis(), 300);
        let m = parse(&format!(
            "name = \"x\"\nwasm = \"x.wasm\"\nsha256 = \"{SHA}\"\n[limits]\nfirst_byte_timeout_ms = 250\n[tls]\nclient_cert = \"c.pem\"\nclient_key = \"c.key\""
        ))
        .unwrap();
        assert_eq!(m.limits.http_limits().first_byte.as_millis(), 250);
        assert_eq!(t.max_answer_bytes, DEFAULT_MAX_ANSWER_BYTES);
        assert_eq!(m.tls.client_cert.as_deref(), Some(Path::new("c.pem")));
    }

    #[test]
    fn env_references_resolve_or_name_the_variable() {
        let m = parse(&format!(
            "name = \"x\"\nwasm = \"x.wasm\"\nsha256 = \"{SHA}\"\n[config]\ntoken = {{ env = \"GOVHUB_TEST_SURELY_UNSET_VAR\" }}"
        ))
        .unwrap();
        let e = m.resolve_config().unwrap_err().to_string();
        assert!(
            e.contains("GOVHUB_TEST_SURELY_UNSET_VAR") && e.contains("`token`"),
            "{e}"
        );
    }

    #[test]
    fn host_patterns() {
        let p = HostPattern::parse("127.0.0.1:9000").unwrap();
        assert!(p.allows("127.0.0.1:9000", false));
        assert!(!p.allows("127.0.0.1:9001", false));
        assert!(!p.allows("127.0.0.2:9000", false));
        let p = HostPattern::parse("Police.Example").unwrap();
        assert!(p.allows("police.example", true));
        assert!(p.allows("police.example:443", true));
        assert!(!p.allows("police.example:8443", true));
        assert!(!p.allows("police.example.evil.com", true));
        let p = HostPattern::parse("[::1]:8080").unwrap();
        assert!(p.allows("[::1]:8080", false));
        assert!(HostPattern::parse("*.example").is_err());
    }
}
