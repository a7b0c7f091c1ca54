//! Principals: who may send, read and operate. Every route against every
//! role from the one policy table; departments that see only their own;
//! spoofed sources refused; quotas; the cockpit's session cookie; audited
//! operator actions; and a hub that will not listen openly by accident.
//!
//! Every request here carries exactly the credentials the test gives it
//! ([`request`]): none are added behind its back.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::*;

/// Tokens of the principals of [`Principals::hub`].
struct Principals {
    hub: HubProcess,
    tokens: HashMap<&'static str, String>,
    police: Receiver,
    traffic: Receiver,
    _dir: HubDir,
}

const NAMES: [&str; 7] = [
    "patrol",
    "police",
    "traffic",
    "reporter",
    "command-room",
    "duty-officer",
    "ops",
];

impl Principals {
    /// A hub with two departments bound to their adapters (webhooks to
    /// their receivers), a reporting department bound to none, a viewer,
    /// an operator and an admin; tokens by hash in the file for some and
    /// from the environment for others. Sessions last `session_ttl_s`.
    fn start(extra: &str) -> Principals {
        let police = Receiver::start();
        let traffic = Receiver::start();
        let webhook = |name: &str, r: &Receiver| {
            AdapterSpec::new(name, "webhook-adapter").tables(&format!(
                "[capabilities]\noutbound_hosts = [\"{h}\"]\n[config]\nurl = \"http://{h}/{name}\"",
                h = r.host()
            ))
        };
        let tokens: HashMap<&'static str, String> = NAMES.iter().map(|n| (*n, token())).collect();
        let config = format!(
            r#"
[auth]
session_ttl_s = 3
{extra}

[[auth.principals]]
name = "police"
role = "department"
token_sha256 = "{police}"
sources = ["urn:govhub:police"]
adapters = ["police"]

[[auth.principals]]
name = "traffic"
role = "department"
token_env = "AUTH_TEST_TRAFFIC"
sources = ["urn:govhub:traffic"]
adapters = ["traffic"]

[[auth.principals]]
name = "reporter"
role = "department"
token_sha256 = "{reporter}"
sources = ["urn:yingfeng:four-platforms"]

# Its own quota, above the hub's.
[[auth.principals]]
name = "patrol"
role = "department"
token_sha256 = "{patrol}"
sources = ["urn:govhub:video-patrol"]
events_per_s = 0.2
burst = 6

[[auth.principals]]
name = "command-room"
role = "viewer"
token_env = "AUTH_TEST_VIEWER"

[[auth.principals]]
name = "duty-officer"
role = "operator"
token_sha256 = "{operator}"

[[auth.principals]]
name = "ops"
role = "admin"
token_sha256 = "{admin}"

[delivery]
max_attempts = 1

[[routes]]
name = "water: the police"
match = {{ type = "gov.incident.*", category = "safety.water" }}
to = ["police"]

[[routes]]
name = "traffic: the squad"
match = {{ type = "gov.incident.*", category = "traffic" }}
to = ["traffic"]
"#,
            police = sha256_hex(&tokens["police"]),
            reporter = sha256_hex(&tokens["reporter"]),
            patrol = sha256_hex(&tokens["patrol"]),
            operator = sha256_hex(&tokens["duty-officer"]),
            admin = sha256_hex(&tokens["ops"]),
        );
        let dir = HubDir::new(
            &[webhook("police", &police), webhook("traffic", &traffic)],
            &config,
        );
        let hub = dir.start_with_env(&[
            ("AUTH_TEST_TRAFFIC", &tokens["traffic"]),
            ("AUTH_TEST_VIEWER", &tokens["command-room"]),
        ]);
        Principals {
            hub,
            tokens,
            police,
            traffic,
            _dir: dir,
        }
    }

    fn bearer(&self, who: &str) -> String {
        format!("Bearer {}", self.tokens[who])
    }

    /// `method path` as `who` (`None`: no credentials).
    fn call(&self, who: Option<&str>, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let auth = who.map(|w| self.bearer(w));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        call(&self.hub, method, path, &headers, body)
    }

    /// A metric's value, read as the command room.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (status, body) = self.call(Some("command-room"), "GET", "/metrics", b"");
        assert_eq!(status, 200, "{body}");
        let scrape =
            prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
        metric_value(&scrape, name, labels)
    }

    fn get(&self, who: &str, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.call(Some(who), "GET", path, b"");
        (status, serde_json::from_str(&body).unwrap_or_default())
    }

    /// Posts a CloudEvent as `who`.
    fn send(&self, who: &str, event: &serde_json::Value) -> (u16, String) {
        let (status, _, body) = request(
            "POST",
            &self.hub.url("/v1/events"),
            &[
                ("content-type", "application/cloudevents+json"),
                ("authorization", &self.bearer(who)),
            ],
            event.to_string().as_bytes(),
        )
        .unwrap();
        (status, body)
    }

    /// Signs in as `who`: the session cookie (`name=value`).
    fn sign_in(&self, who: &str) -> String {
        let (status, headers, body) = request(
            "POST",
            &self.hub.url("/v1/session"),
            &[("content-type", "application/json")],
            serde_json::json!({ "token": self.tokens[who] })
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let set = &headers["set-cookie"];
        for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3"] {
            assert!(set.contains(part), "the cookie lacks {part}: {set}");
        }
        set.split(';').next().unwrap().to_string()
    }
}

fn report(id: &str, source: &str, category: &str, severity: &str) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": "gov.incident.reported",
        "category": category,
        "severity": severity,
        "grid": "yingfeng/yingyi/2",
        "datacontenttype": "application/json",
        "data": {"description": "test"},
    })
}

/// `method path` with exactly `headers` → (status, body). A stream
/// (`/v1/stream`) never ends: only its head is read.
fn call(
    hub: &HubProcess,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    if path.starts_with("/v1/stream") {
        return stream_head(hub, path, headers);
    }
    let (status, _, text) = request(method, &hub.url(path), headers, body).unwrap();
    (status, text)
}

/// The status of `GET path` and what of the answer came at once, on a
/// raw connection closed after.
fn stream_head(hub: &HubProcess, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = hub.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    (status, text)
}

/// A path of the policy table with its parameters filled.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{adapter}", "police")
        .replace("{name}", "nobody")
}

/// Whether `role` may call a route with `access`.
fn allowed(access: govhub::auth::policy::Access, role: govhub::auth::Role) -> bool {
    use govhub::auth::policy::Access;
    match access {
        Access::Open => true,
        Access::Metrics => govhub::auth::policy::VIEW.contains(&role),
        Access::Roles(roles) => roles.contains(&role),
    }
}

#[test]
fn every_route_answers_every_role_as_the_policy_table_says() {
    use govhub::auth::policy::{Access, POLICY};
    use govhub::auth::Role;
    let p = Principals::start("");
    // A session for the expired-cookie column, signed in first so it has
    // expired (3 s) by the time the matrix gets there.
    let expiring = p.sign_in("command-room");
    let signed_in = Instant::now();
    let roles = [
        ("police", Role::Department),
        ("command-room", Role::Viewer),
        ("duty-officer", Role::Operator),
        ("ops", Role::Admin),
    ];
    let mut failures = Vec::new();
    let mut check = |what: String, got: u16, body: &str, ok: &dyn Fn(u16) -> bool| {
        if !ok(got) {
            failures.push(format!("{what}: {got} {body}"));
        }
        // Every route exists: nothing falls through to the router's 404.
        if body.contains("\"title\":\"not found\"") {
            failures.push(format!("{what}: no such route: {body}"));
        }
    };
    for (method, path, access) in POLICY {
        let url = concrete(path);
        // A body no handler accepts: an allowed call is answered on its
        // merits (400, 404, 409, ...), never 401 or 403, and changes nothing.
        let body = b"{\"not\": \"valid\"}";
        for (who, role) in roles {
            let (status, text) = p.call(Some(who), method, &url, body);
            let want = allowed(*access, role);
            check(
                format!("{method} {path} as {} ({who})", role.as_str()),
                status,
                &text,
                &|s| if want { s != 401 && s != 403 } else { s == 403 },
            );
        }
        let open = *access == Access::Open;
        let (status, text) = p.call(None, method, &url, body);
        check(
            format!("{method} {path} with no token"),
            status,
            &text,
            &|s| if open { s != 401 && s != 403 } else { s == 401 },
        );
        let (status, text) = call(
            &p.hub,
            method,
            &url,
            &[
                ("authorization", "Bearer not-a-token"),
                ("content-type", "application/json"),
            ],
            body,
        );
        check(
            format!("{method} {path} with a wrong token"),
            status,
            &text,
            &|s| if open { s != 401 && s != 403 } else { s == 401 },
        );
        let (status, text) = call(
            &p.hub,
            method,
            &url,
            &[
                ("cookie", "govhub_session=forged"),
                ("content-type", "application/json"),
            ],
            body,
        );
        check(
            format!("{method} {path} with a forged cookie"),
            status,
            &text,
            &|s| if open { s != 401 && s != 403 } else { s == 401 },
        );
    }
    // The expired cookie (sessions last 3 s here): every route that needs
    // a role refuses it.
    eventually(Duration::from_secs(10), || {
        let (_, text) = call(
            &p.hub,
            "GET",
            "/v1/session",
            &[("cookie", expiring.as_str())],
            b"",
        );
        match text.contains("\"name\":null") {
            true => Ok(()),
            false => Err(format!("the session outlived its 3 s: {text}")),
        }
    });
    // (It ended because its time was up, not earlier; the hub started its
    // clock a moment before the answer reached us.)
    assert!(signed_in.elapsed() >= Duration::from_millis(2900));
    for (method, path, access) in POLICY {
        if *access == Access::Open {
            continue;
        }
        let url = concrete(path);
        let (status, text) = call(
            &p.hub,
            method,
            &url,
            &[
                ("cookie", expiring.as_str()),
                ("content-type", "application/json"),
            ],
            b"{}",
        );
        check(
            format!("{method} {path} with an expired cookie"),
            status,
            &text,
            &|s| s == 401,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // 403 names the role needed and the caller's; 401 says how to
    // authenticate.
    let (status, body) = p.call(Some("police"), "POST", "/v1/clock", b"{\"advance_s\":1}");
    assert_eq!(status, 403);
    assert!(
        body.contains("operator or admin")
            && body.contains("`police`")
            && body.contains("department"),
        "{body}"
    );
    let (status, _, body) = request("GET", &p.hub.url("/v1/cases"), &[], b"").unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("Bearer"), "{body}");
}

#[test]
fn departments_read_their_own_and_nothing_of_the_others() {
    let p = Principals::start("");
    // The grid worker reports a boat on the river (the police's) and a
    // jammed gate (the traffic squad's).
    let (s, b) = p.send(
        "reporter",
        &report(
            "river-1",
            "urn:yingfeng:four-platforms",
            "safety.water",
            "major",
        ),
    );
    assert_eq!(s, 202, "{b}");
    let river_case = serde_json::from_str::<serde_json::Value>(&b).unwrap()["accepted"][0]
        ["caseid"]
        .as_str()
        .unwrap()
        .to_string();
    // The squad's system answers 400 to this one: a dead letter at once.
    p.traffic.answer(400);
    let (s, b) = p.send(
        "reporter",
        &report(
            "gate-1",
            "urn:yingfeng:four-platforms",
            "traffic.congestion",
            "minor",
        ),
    );
    assert_eq!(s, 202, "{b}");
    let gate_case = serde_json::from_str::<serde_json::Value>(&b).unwrap()["accepted"][0]["caseid"]
        .as_str()
        .unwrap()
        .to_string();
    p.police.wait_for(1, Duration::from_secs(20));
    let dead = eventually(Duration::from_secs(20), || {
        let (_, v) = p.get("command-room", "/v1/dead-letters");
        v["dead_letters"][0]["id"]
            .as_i64()
            .ok_or_else(|| format!("no dead letter yet: {v}"))
    });
    eventually(Duration::from_secs(20), || {
        let (_, c) = p.get("command-room", &format!("/v1/cases/{river_case}"));
        match c["id"] == river_case.as_str() {
            true => Ok(()),
            false => Err(format!("no case yet: {c}")),
        }
    });
    eventually(Duration::from_secs(20), || {
        let (s, _) = p.get("command-room", &format!("/v1/cases/{gate_case}"));
        match s == 200 {
            true => Ok(()),
            false => Err("no gate case yet".to_string()),
        }
    });

    // The police read their delivery, and only theirs.
    let (s, ev) = p.get("police", "/v1/events/river-1");
    assert_eq!(s, 200, "{ev}");
    let targets: Vec<&str> = ev["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["police"]);
    let (s, case) = p.get("police", &format!("/v1/cases/{river_case}"));
    assert_eq!(s, 200, "{case}");
    let (_, list) = p.get("police", "/v1/cases");
    let ids: Vec<&str> = list["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [river_case.as_str()], "the police see their case only");
    // The squad sees its own dead letter, the police do not.
    let (s, d) = p.get("traffic", &format!("/v1/dead-letters/{dead}"));
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["target"], "traffic");
    let (_, list) = p.get("traffic", "/v1/dead-letters");
    assert_eq!(list["dead_letters"].as_array().unwrap().len(), 1, "{list}");
    let (_, list) = p.get("police", "/v1/dead-letters");
    assert_eq!(list["dead_letters"], serde_json::json!([]), "{list}");
    let (_, list) = p.get("police", "/v1/dead-letters?target=traffic");
    assert_eq!(list["dead_letters"], serde_json::json!([]), "{list}");

    // Another department's event, case and dead letter answer 404, word
    // for word as one that does not exist: nothing leaks.
    let (s, other) = p.get("traffic", "/v1/events/river-1");
    let (_, none) = p.get("traffic", "/v1/events/never-sent");
    assert_eq!(s, 404);
    assert_eq!(other["title"], none["title"]);
    let (s, _) = p.get("traffic", &format!("/v1/cases/{river_case}"));
    assert_eq!(s, 404);
    let (s, _) = p.get("police", &format!("/v1/cases/{gate_case}"));
    assert_eq!(s, 404);
    let (s, _) = p.get("police", &format!("/v1/dead-letters/{dead}"));
    assert_eq!(s, 404);
    // The reporter sees what it sent (its source), with no deliveries.
    let (s, ev) = p.get("reporter", "/v1/events/gate-1");
    assert_eq!(s, 200, "{ev}");
    assert_eq!(ev["deliveries"], serde_json::json!([]));
    let (_, list) = p.get("reporter", "/v1/cases");
    assert_eq!(list["cases"].as_array().unwrap().len(), 2, "{list}");
    // Viewers see everything.
    let (_, list) = p.get("command-room", "/v1/cases");
    assert_eq!(list["cases"].as_array().unwrap().len(), 2, "{list}");
}

#[test]
fn a_spoofed_source_or_a_foreign_adapter_is_refused_and_nothing_is_stored() {
    let p = Principals::start("");
    // The traffic squad claims to be the police.
    let (s, body) = p.send(
        "traffic",
        &report("spoof-1", "urn:govhub:police", "safety.water", "major"),
    );
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("urn:govhub:police")
            && body.contains("`traffic`")
            && body.contains("\"field\":\"source\""),
        "{body}"
    );
    // Not even the first of a batch is stored when one is spoofed.
    let batch = serde_json::json!([
        report(
            "batch-ok",
            "urn:govhub:traffic:cad",
            "traffic.congestion",
            "minor"
        ),
        report(
            "batch-spoof",
            "urn:govhub:policeman",
            "safety.water",
            "major"
        ),
    ]);
    let (s, _, body) = request(
        "POST",
        &p.hub.url("/v1/events"),
        &[
            ("content-type", "application/cloudevents-batch+json"),
            ("authorization", &p.bearer("traffic")),
        ],
        batch.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("[1].source"), "{body}");
    for id in ["spoof-1", "batch-ok", "batch-spoof"] {
        let (s, _) = p.get("command-room", &format!("/v1/events/{id}"));
        assert_eq!(s, 404, "{id} was stored");
    }
    // Its own source passes (a sub-source of its prefix).
    let (s, body) = p.send(
        "traffic",
        &report(
            "own-1",
            "urn:govhub:traffic:cad",
            "traffic.congestion",
            "minor",
        ),
    );
    assert_eq!(s, 202, "{body}");
    // Raw ingest to the police's adapter is refused; to its own, answered.
    let (s, body) = p.call(Some("traffic"), "POST", "/v1/ingest/police", b"{}");
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("`traffic`") && body.contains("`police`"),
        "{body}"
    );
    let (s, body) = p.call(Some("traffic"), "POST", "/v1/ingest/traffic", b"{}");
    assert_eq!(
        s, 400,
        "the webhook adapter reads it and finds no CloudEvent: {body}"
    );
    assert_eq!(
        p.metric("govhub_auth_refused_total", &[("reason", "source")]),
        2.0
    );
    assert_eq!(
        p.metric("govhub_auth_refused_total", &[("reason", "adapter")]),
        1.0
    );
}

#[test]
fn a_sender_over_its_quota_waits_but_critical_events_pass_and_others_are_unaffected() {
    let p = Principals::start("events_per_s = 0.2\nburst = 3");
    let source = "urn:yingfeng:four-platforms";
    for i in 0..3 {
        let (s, b) = p.send(
            "reporter",
            &report(&format!("q-{i}"), source, "traffic", "minor"),
        );
        assert_eq!(s, 202, "{b}");
    }
    let (s, headers, body) = request(
        "POST",
        &p.hub.url("/v1/events"),
        &[
            ("content-type", "application/cloudevents+json"),
            ("authorization", &p.bearer("reporter")),
        ],
        report("q-3", source, "traffic", "minor")
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(s, 429, "{body}");
    let retry: u64 = headers["retry-after"].parse().unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    assert!(
        body.contains("`reporter`") && body.contains("auth.events_per_s"),
        "{body}"
    );
    let (s, _) = p.get("command-room", "/v1/events/q-3");
    assert_eq!(s, 404, "a refused event is not stored");
    // A person in the river is never held back by a quota.
    let (s, b) = p.send(
        "reporter",
        &report("q-critical", source, "safety.water", "critical"),
    );
    assert_eq!(s, 202, "{b}");
    // Another sender has its own bucket.
    for i in 0..3 {
        let (s, b) = p.send(
            "traffic",
            &report(&format!("t-{i}"), "urn:govhub:traffic", "traffic", "minor"),
        );
        assert_eq!(s, 202, "{b}");
    }
    // A principal's own burst (6) stands in for the hub's (3).
    for i in 0..6 {
        let (s, b) = p.send(
            "patrol",
            &report(
                &format!("p-{i}"),
                "urn:govhub:video-patrol",
                "traffic",
                "minor",
            ),
        );
        assert_eq!(s, 202, "patrol's event {i}: {b}");
    }
    let (s, b) = p.send(
        "patrol",
        &report("p-6", "urn:govhub:video-patrol", "traffic", "minor"),
    );
    assert_eq!(s, 429, "patrol over its own burst: {b}");
    // More than the burst in one batch can never pass: it says to split.
    let batch: Vec<_> = (0..4)
        .map(|i| {
            report(
                &format!("big-{i}"),
                "urn:govhub:police",
                "safety.water",
                "minor",
            )
        })
        .collect();
    let (s, _, body) = request(
        "POST",
        &p.hub.url("/v1/events"),
        &[
            ("content-type", "application/cloudevents-batch+json"),
            ("authorization", &p.bearer("police")),
        ],
        serde_json::Value::Array(batch).to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(s, 413, "waiting would not help: {body}");
    assert!(body.contains("split the batch"), "{body}");
    // A critical event does not carry ordinary ones past the quota: the
    // mixed request is refused and says to send the critical one alone.
    let mixed = serde_json::json!([
        report("mixed-critical", source, "safety.water", "critical"),
        report("mixed-minor", source, "traffic", "minor"),
    ]);
    let (s, _, body) = request(
        "POST",
        &p.hub.url("/v1/events"),
        &[
            ("content-type", "application/cloudevents-batch+json"),
            ("authorization", &p.bearer("reporter")),
        ],
        mixed.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(s, 429, "{body}");
    assert!(
        body.contains("send them in a request of their own"),
        "{body}"
    );
    assert!(
        p.metric(
            "govhub_quota_refused_events_total",
            &[("principal", "reporter")]
        ) >= 1.0
    );
}

/// Reads a stream's bytes until `needle` arrives or the stream ends;
/// `Ok(text)` when it arrived, `Err(text)` when the stream ended first.
fn read_stream_until(
    stream: &mut std::net::TcpStream,
    needle: &str,
    timeout: Duration,
) -> Result<String, String> {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return Err(text),
            Ok(n) => {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                if text.contains(needle) {
                    return Ok(text);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Err(text),
        }
    }
    panic!("neither `{needle}` nor the end of the stream within {timeout:?}: {text}")
}

/// Opens `GET /v1/stream` with `cookie` on a raw connection.
fn open_stream(hub: &HubProcess, cookie: &str) -> std::net::TcpStream {
    use std::io::Write;
    let addr = hub.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /v1/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s
}

#[test]
fn the_cockpit_signs_in_follows_the_stream_with_its_cookie_and_signing_out_ends_it() {
    let p = Principals::start("signin_per_minute = 2");
    let cookie = p.sign_in("command-room");
    let (s, _, who) = request(
        "GET",
        &p.hub.url("/v1/session"),
        &[("cookie", &cookie)],
        b"",
    )
    .unwrap();
    assert_eq!(s, 200);
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        (
            who["name"].as_str(),
            who["role"].as_str(),
            who["via"].as_str()
        ),
        (Some("command-room"), Some("viewer"), Some("cookie"))
    );
    // The cookie is all the stream needs (EventSource sends no header).
    let mut stream = open_stream(&p.hub, &cookie);
    read_stream_until(&mut stream, "retry:", Duration::from_secs(10)).expect("the stream opens");
    let (s, b) = p.send(
        "reporter",
        &report(
            "seen-live",
            "urn:yingfeng:four-platforms",
            "safety.water",
            "major",
        ),
    );
    assert_eq!(s, 202, "{b}");
    read_stream_until(&mut stream, "seen-live", Duration::from_secs(10))
        .expect("the event arrives");
    // Signing out ends the session, and the stream with it.
    let (s, headers, _) = request(
        "DELETE",
        &p.hub.url("/v1/session"),
        &[("cookie", &cookie)],
        b"",
    )
    .unwrap();
    assert_eq!(s, 204);
    assert!(headers["set-cookie"].contains("Max-Age=0"), "{headers:?}");
    let ended = read_stream_until(&mut stream, "never-sent", Duration::from_secs(10));
    assert!(ended.is_err(), "the stream went on after sign-out");
    let (s, _) = call(&p.hub, "GET", "/v1/stream", &[("cookie", &cookie)], b"");
    assert_eq!(s, 401, "a signed-out cookie opens nothing");
    // An expiring session ends its stream at expiry.
    let cookie = p.sign_in("duty-officer");
    let mut stream = open_stream(&p.hub, &cookie);
    read_stream_until(&mut stream, "retry:", Duration::from_secs(10)).expect("the stream opens");
    let ended = read_stream_until(&mut stream, "never-sent", Duration::from_secs(10));
    assert!(ended.is_err(), "the stream outlived its session");
    // Departments cannot sign in to the cockpit, nor can a wrong token;
    // past auth.signin_per_minute wrong tokens the hub stops answering
    // them, and a right one still signs in.
    for (token, want) in [
        (p.tokens["police"].as_str(), 403),
        ("govhub_wrong", 401),
        ("govhub_wrong", 401),
        ("govhub_wrong", 429),
    ] {
        let (s, _, body) = request(
            "POST",
            &p.hub.url("/v1/session"),
            &[("content-type", "application/json")],
            serde_json::json!({ "token": token }).to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(s, want, "{body}");
    }
    let cookie = p.sign_in("duty-officer");
    // A write with the cookie from another origin (another port of the
    // same host counts as the same site for SameSite) is refused.
    for cross in [
        [
            ("origin", "http://127.0.0.1:1"),
            ("sec-fetch-site", "same-site"),
        ],
        [("origin", "http://127.0.0.1:1"), ("x-none", "")],
    ] {
        let mut headers = vec![
            ("cookie", cookie.as_str()),
            ("content-type", "application/json"),
        ];
        headers.extend(cross);
        let (s, _, body) = request(
            "POST",
            &p.hub.url("/v1/dead-letters/1/replay"),
            &headers,
            b"",
        )
        .unwrap();
        assert_eq!(s, 403, "{body}");
        assert!(body.contains("cross-site"), "{body}");
    }
    // From the hub's own page it is answered (no such dead letter here).
    let own = p.hub.base.clone();
    let (s, _, body) = request(
        "POST",
        &p.hub.url("/v1/dead-letters/1/replay"),
        &[
            ("cookie", &cookie),
            ("origin", &own),
            ("sec-fetch-site", "same-origin"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(s, 404, "{body}");
}

#[test]
fn operator_and_admin_actions_are_in_the_audit_chain_by_principal_and_it_verifies() {
    let p = Principals::start("[cases]\nclock = \"manual\"");
    // A refused sign-in, a sign-in and a sign-out.
    let (s, _, _) = request(
        "POST",
        &p.hub.url("/v1/session"),
        &[("content-type", "application/json")],
        br#"{"token": "govhub_guessed"}"#,
    )
    .unwrap();
    assert_eq!(s, 401);
    let (s, _, _) = request(
        "POST",
        &p.hub.url("/v1/session"),
        &[("content-type", "application/json")],
        serde_json::json!({ "token": p.tokens["police"] })
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(s, 403, "a department cannot sign in to the cockpit");
    let cookie = p.sign_in("duty-officer");
    // The duty officer moves the drill clock and replays a dead letter
    // (from the cockpit: with the cookie).
    let (s, body) = p.call(
        Some("duty-officer"),
        "POST",
        "/v1/clock",
        br#"{"advance_s": 60}"#,
    );
    assert_eq!(s, 200, "{body}");
    p.traffic.answer(400);
    let (s, b) = p.send(
        "reporter",
        &report("dead-1", "urn:yingfeng:four-platforms", "traffic", "minor"),
    );
    assert_eq!(s, 202, "{b}");
    let dead = eventually(Duration::from_secs(20), || {
        let (_, v) = p.get("command-room", "/v1/dead-letters");
        v["dead_letters"][0]["id"]
            .as_i64()
            .ok_or_else(|| format!("{v}"))
    });
    p.traffic.answer(200);
    let (s, _, body) = request(
        "POST",
        &p.hub.url(&format!("/v1/dead-letters/{dead}/replay")),
        &[("cookie", &cookie)],
        b"",
    )
    .unwrap();
    assert_eq!(s, 202, "{body}");
    p.traffic.wait_for(1, Duration::from_secs(20));
    let (s, _, _) = request(
        "DELETE",
        &p.hub.url("/v1/session"),
        &[("cookie", &cookie)],
        b"",
    )
    .unwrap();
    assert_eq!(s, 204);
    // The admin unloads an adapter and reads the chain.
    let (s, body) = p.call(Some("ops"), "DELETE", "/v1/adapters/police", b"");
    assert_eq!(s, 200, "{body}");

    let (s, log) = p.get("ops", "/v1/audit");
    assert_eq!(s, 200);
    let seen: Vec<(String, String)> = log["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (actor, action) in [
        ("anonymous", "sign-in-refused"),
        ("duty-officer", "sign-in"),
        ("duty-officer", "clock"),
        ("duty-officer", "replay"),
        ("duty-officer", "sign-out"),
        ("ops", "unload"),
    ] {
        assert!(
            seen.contains(&(actor.to_string(), action.to_string())),
            "no `{action}` by `{actor}` in {seen:?}"
        );
    }
    // Filtered by principal, by action.
    let (_, mine) = p.get("ops", "/v1/audit?principal=duty-officer");
    assert!(mine["audit"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["actor"] == "duty-officer"));
    assert_eq!(mine["audit"].as_array().unwrap().len(), 4, "{mine}");
    let (_, replays) = p.get("ops", "/v1/audit?action=replay");
    let replays = replays["audit"].as_array().unwrap();
    assert_eq!(replays.len(), 1);
    assert_eq!(replays[0]["target"], "traffic");
    assert!(replays[0]["detail"]
        .as_str()
        .unwrap()
        .contains(&dead.to_string()));
    // The refused sign-ins are there, a department's by its name, and no
    // token, nor anything of one, is.
    let text = log.to_string();
    assert!(
        !text.contains("govhub_guessed"),
        "a token is in the audit chain"
    );
    assert!(!text.contains(&sha256_hex("govhub_guessed")[..8]), "{text}");
    assert!(
        seen.contains(&("police".to_string(), "sign-in-refused".to_string())),
        "{seen:?}"
    );
    // No token of anyone's anywhere in it.
    for t in p.tokens.values() {
        assert!(!text.contains(t.as_str()));
    }
    // Paged: `next_after` continues where a page ended.
    let (_, page) = p.get("ops", "/v1/audit?limit=2");
    assert_eq!(page["audit"].as_array().unwrap().len(), 2);
    let after = page["next_after"].as_i64().unwrap();
    let (_, rest) = p.get("ops", &format!("/v1/audit?after={after}"));
    assert_eq!(rest["audit"][0]["seq"].as_i64(), Some(after + 1));

    let mut hub = p.hub;
    hub.terminate(Duration::from_secs(20));
    let config = hub.dir.join("govhub.toml");
    let (ok, out, err) = govhub(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert!(ok && out.contains("chain intact"), "{out}{err}");
}

#[test]
fn a_hub_with_no_principal_will_not_listen_beyond_loopback_unless_told() {
    let dir = HubDir::new(&[], "");
    let (ok, _, err) = govhub_with_env(
        &["run", "--config", dir.config().to_str().unwrap()],
        &[("GOVHUB__SERVER__LISTEN", "0.0.0.0:0")],
    );
    assert!(!ok);
    assert!(
        err.contains("0.0.0.0")
            && err.contains("no principal")
            && err.contains("auth.open = true")
            && err.contains("govhub auth token"),
        "{err}"
    );
    // On loopback it serves, open, and says so.
    let hub = dir.start();
    assert_eq!(get(&hub.url("/v1/cases")).0, 200);
    hub.wait_log("no principals", Duration::from_secs(10));
    let (s, body) = get(&hub.url("/v1/audit"));
    assert_eq!(
        s, 404,
        "nobody can use the admin API of a hub without principals: {body}"
    );
}

#[test]
fn govhub_auth_token_makes_a_token_the_hub_accepts_by_its_hash() {
    let (ok, out, err) = govhub(&["auth", "token", "--name", "fire", "--role", "department"]);
    assert!(ok, "{err}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .to_string();
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("token_sha256 = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    assert_eq!(hash, sha256_hex(&token));
    assert!(
        out.contains("[[auth.principals]]") && out.contains("name = \"fire\""),
        "{out}"
    );
    let principal: String = out
        .lines()
        .skip_while(|l| !l.starts_with("[[auth.principals]]"))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = HubDir::new(&[], &principal);
    let (ok, out, err) = govhub(&["check-config", "--config", dir.config().to_str().unwrap()]);
    assert!(
        ok && out.contains("principals: fire (department)"),
        "{out}{err}"
    );
    let hub = dir.start();
    let (s, _, body) = request(
        "POST",
        &hub.url("/v1/events"),
        &[
            ("content-type", "application/cloudevents+json"),
            ("authorization", &format!("Bearer {token}")),
        ],
        report("fire-1", "urn:govhub:fire", "fire.smoke", "major")
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(s, 202, "{body}");
    // A bad name is refused before any token is made.
    let (ok, out, err) = govhub(&["auth", "token", "--name", "Fire Station"]);
    assert!(
        !ok && !out.contains("token:") && err.contains("lower-case"),
        "{out}{err}"
    );
    // A token_env that is not set stops the start, naming it.
    let dir = HubDir::new(
        &[],
        "[[auth.principals]]\nname = \"fire\"\nrole = \"department\"\ntoken_env = \"AUTH_TEST_UNSET\"\nsources = [\"urn:govhub:fire\"]",
    );
    let (ok, _, err) = govhub(&["run", "--config", dir.config().to_str().unwrap()]);
    assert!(
        !ok && err.contains("AUTH_TEST_UNSET") && err.contains("`fire`"),
        "{err}"
    );
}

#[test]
fn metrics_open_lets_a_scraper_in_without_a_token_and_nothing_else() {
    let closed = Principals::start("");
    let (s, _) = closed.call(None, "GET", "/metrics", b"");
    assert_eq!(s, 401, "/metrics is for viewers unless auth.metrics_open");
    drop(closed);
    let open = Principals::start("metrics_open = true");
    let (s, body) = open.call(None, "GET", "/metrics", b"");
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("govhub_"), "{body}");
    for path in ["/v1/cases", "/v1/dead-letters", "/v1/audit"] {
        let (s, body) = open.call(None, "GET", path, b"");
        assert_eq!(s, 401, "{path} stays closed: {body}");
    }
}
