//! Department servers of the kinds departments really run, for the wire
//! tests: a minimal HTTP/1.1 server that reads bodies by `Content-Length`
//! only (as Python's `http.server` and many legacy Java, .NET and PHP
//! stacks do: a chunked body reads as empty), optionally over TLS with a
//! CA the test makes, optionally asking for a client certificate; and
//! Python's own `http.server`.

use super::{eventually, Received};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A status, a content type and a body, with its Content-Length.
    Respond(u16, String, Vec<u8>),
    /// Never answers; the connection stays open until the client goes.
    Silent,
    /// Declares `declared` bytes, sends `sent` of them and closes.
    CutShort { declared: usize, sent: usize },
    /// `200` with a body of `len` bytes in chunked framing (no length said
    /// ahead), 64 KiB a chunk, until done or the client goes.
    Chunked { len: usize },
    /// `200` declaring a body of `len` bytes, then one byte every `every`:
    /// never a pause long enough for a between-bytes timeout, never done
    /// before any call deadline.
    Trickle { len: usize, every: Duration },
}

type Answer = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// TLS for the server: its certificate and key, and the CA whose client
/// certificates it requires (none: no client certificate asked).
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The server's settings.
#[derive(Default)]
pub struct Options {
    /// Close a keep-alive connection idle this long.
    pub idle_close: Option<Duration>,
    /// Serve HTTPS.
    pub tls: Option<ServerTls>,
}

struct Hold {
    held: Mutex<bool>,
    released: Condvar,
}

/// A department server that reads bodies by Content-Length only, counts
/// the connections it accepts and records every request.
pub struct ClServer {
    pub addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    accepted: Arc<AtomicUsize>,
    answer: Arc<Mutex<Answer>>,
    hold: Arc<Hold>,
}

impl ClServer {
    /// Starts on a free loopback port, answering `200` with an empty body.
    pub fn start(options: Options) -> ClServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let answer: Arc<Mutex<Answer>> = Arc::new(Mutex::new(Arc::new(|_: &Received| {
            Reply::Respond(200, "text/plain".into(), Vec::new())
        })));
        let hold = Arc::new(Hold {
            held: Mutex::new(false),
            released: Condvar::new(),
        });
        let tls = options.tls.as_ref().map(server_config);
        let (g, a, ans, h) = (got.clone(), accepted.clone(), answer.clone(), hold.clone());
        let idle = options.idle_close;
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let (g, ans, h, tls) = (g.clone(), ans.clone(), h.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    match tls {
                        None => serve(stream.try_clone().unwrap(), stream, idle, &g, &ans, &h),
                        Some(config) => {
                            let conn = rustls::ServerConnection::new(config).unwrap();
                            let tcp = stream.try_clone().unwrap();
                            let tls = rustls::StreamOwned::new(conn, stream);
                            serve(tcp, tls, idle, &g, &ans, &h)
                        }
                    }
                });
            }
        });
        ClServer {
            addr,
            got,
            accepted,
            answer,
            hold,
        }
    }

    /// `host:port`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Answers with `f` from now on.
    pub fn answer(&self, f: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
        *self.answer.lock().unwrap() = Arc::new(f);
    }

    /// Holds every request (recorded, not answered) until `release`.
    pub fn hold(&self) {
        *self.hold.held.lock().unwrap() = true;
    }

    /// Answers the held requests and every later one.
    pub fn release(&self) {
        *self.hold.held.lock().unwrap() = false;
        self.hold.released.notify_all();
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every request read so far, in arrival order.
    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, || {
            let got = self.got();
            match got.len() >= n {
                true => Ok(got),
                false => Err(format!("{} of {n} requests arrived", got.len())),
            }
        })
    }
}

fn serve<S: Read + Write>(
    tcp: TcpStream,
    stream: S,
    idle: Option<Duration>,
    got: &Mutex<Vec<Received>>,
    answer: &Mutex<Answer>,
    hold: &Hold,
) {
    let mut reader = BufReader::new(stream);
    loop {
        // Between requests, a server with an idle limit closes the
        // connection when nothing comes.
        let _ = tcp.set_read_timeout(idle);
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let _ = tcp.set_read_timeout(None);
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, path) = (method.to_string(), path.to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        // Exactly `Content-Length` bytes (none without the header, whatever
        // else the request said).
        let request = Received {
            method,
            path,
            headers,
            body,
            at: std::time::Instant::now(),
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let reply = (answer.lock().unwrap().clone())(&request);
        got.lock().unwrap().push(request);
        {
            let mut held = hold.held.lock().unwrap();
            while *held {
                held = hold.released.wait(held).unwrap();
            }
        }
        let out = reader.get_mut();
        match reply {
            Reply::Respond(status, content_type, body) => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if out.write_all(head.as_bytes()).is_err()
                    || out.write_all(&body).is_err()
                    || out.flush().is_err()
                {
                    return;
                }
            }
            Reply::Silent => {
                // Wait for the client to give up (EOF or reset).
                let mut sink = [0u8; 1024];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
            Reply::Chunked { len } => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if out.write_all(format!("{n:x}\r\n").as_bytes()).is_err()
                        || out.write_all(&chunk[..n]).is_err()
                        || out.write_all(b"\r\n").is_err()
                    {
                        return;
                    }
                    left -= n;
                }
                if out.write_all(b"0\r\n\r\n").is_err() || out.flush().is_err() {
                    return;
                }
            }
            Reply::Trickle { len, every } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {len}\r\n\r\n"
                );
                if out.write_all(head.as_bytes()).is_err() || out.flush().is_err() {
                    return;
                }
                for _ in 0..len {
                    std::thread::sleep(every);
                    if out.write_all(b".").is_err() || out.flush().is_err() {
                        return;
                    }
                }
            }
            Reply::CutShort { declared, sent } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
                );
                let _ = out.write_all(head.as_bytes());
                let _ = out.write_all(&vec![b' '; sent]);
                let _ = out.flush();
                return;
            }
        }
        if close {
            return;
        }
    }
}

fn server_config(tls: &ServerTls) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&tls.key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

/// A CA the test makes, and certificates it signs, as PEM files in `dir`.
pub struct TestCa {
    ca: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub dir: PathBuf,
    pub name: String,
}

impl TestCa {
    /// A new CA called `name`; its certificate is `DIR/NAME-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
        TestCa {
            ca,
            issuer: rcgen::Issuer::new(params, key),
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    /// The CA's certificate file.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Signs a certificate for `127.0.0.1` and `localhost` (`client`: for
    /// client authentication); returns its certificate and key files.
    pub fn issue(&self, file: &str, client: bool) -> (PathBuf, PathBuf) {
        let _ = &self.ca;
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, file.to_string());
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_file = self.dir.join(format!("{file}.pem"));
        let key_file = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

/// Python's `http.server` as a department: it reads bodies by
/// Content-Length, answers `200` with HTTP/1.0 (closing every
/// connection), and reports each request as a JSON line.
pub struct PythonDepartment {
    child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl PythonDepartment {
    /// Starts `tests/support/python_department.py` with `python3`.
    pub fn start() -> PythonDepartment {
        let script = super::root().join("tests/support/python_department.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed (the department stand-in is Python's http.server)");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let port = first
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("python department said `{first}`"));
        let lines: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        PythonDepartment { child, port, lines }
    }

    /// Waits until `n` requests were reported.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        eventually(timeout, || {
            let got = self.lines.lock().unwrap().clone();
            match got.len() >= n {
                true => Ok(got),
                false => Err(format!("python department got {} of {n}", got.len())),
            }
        })
    }
}

impl Drop for PythonDepartment {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
