//! Deliveries on the wire, against the kinds of servers departments really
//! run: servers that read only `Content-Length` (the Yingfeng departments
//! behind one, and Python's own `http.server`), one that closes idle
//! connections, one that never answers, one that never finishes its
//! answer, one that answers with 10 MB, one that cuts its answer short,
//! HTTPS with the deployment's own CA and mutual TLS; connection reuse; and
//! priority lanes under overload.

mod support;

use std::time::{Duration, Instant};
use support::wire::{ClServer, Options, PythonDepartment, Reply, ServerTls, TestCa};
use support::*;

/// A webhook adapter called `name` posting to `url` on `host`, for events
/// of `types`.
fn webhook(name: &str, host: &str, url: &str, types: &str, extra_limits: &str) -> AdapterSpec {
    AdapterSpec::new(name, "webhook-adapter")
        .top(&format!("subscribe = [{types}]"))
        .tables(&format!(
            "[limits]\n{extra_limits}\n[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"{url}\"\n"
        ))
}

/// One structured CloudEvent of `type` with `severity` (none: no severity).
fn event(id: &str, type_: &str, severity: Option<&str>, caseid: Option<&str>) -> serde_json::Value {
    let mut e = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:test:wire",
        "type": type_,
        "datacontenttype": "application/json",
        "data": { "description": format!("盈一佳苑小区西门电动三轮车拥堵 {id}"), "address": "盈一佳苑小区西门" },
    });
    if let Some(s) = severity {
        e["severity"] = s.into();
    }
    if let Some(c) = caseid {
        e["caseid"] = c.into();
    }
    e
}

/// A hub whose one adapter, `dept` (the webhook module), posts every alert
/// to `dept`, with these `[limits]` lines and this extra config. The
/// folder lives as long as the returned `HubDir`.
fn alerts_hub(dept: &str, limits: &str, config: &str) -> (HubDir, HubProcess) {
    let dir = HubDir::new(
        &[webhook(
            "dept",
            dept,
            &format!("http://{dept}/events"),
            "\"gov.alert.*\"",
            limits,
        )],
        config,
    );
    let hub = dir.start();
    (dir, hub)
}

/// Sends `info` alerts with these ids, a hundred to a batch.
fn notices(hub: &HubProcess, ids: impl Iterator<Item = String>) {
    let ids: Vec<String> = ids.collect();
    for chunk in ids.chunks(100) {
        let events: Vec<serde_json::Value> = chunk
            .iter()
            .map(|id| event(id, "gov.alert.issued", Some("info"), None))
            .collect();
        let (status, _, body) = send_batch(&hub.base, &events);
        assert_eq!(status, 202, "{body}");
    }
}

fn accepted(hub: &HubProcess, e: &serde_json::Value) {
    let (status, _, body) = send_event(&hub.base, e).unwrap();
    assert_eq!(status, 202, "{body}");
}

/// The deliveries of event `id`, once it has one with `attempts` ≥ `n`.
fn delivery(
    hub: &HubProcess,
    id: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    hub.wait_until(&format!("/v1/events/{id}"), Duration::from_secs(30), |v| {
        v["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(&check))
    })["deliveries"][0]
        .clone()
}

/// Asserts a request went out whole: a Content-Length that matches the
/// body, no chunked framing, and a body at all.
fn assert_whole(g: &Received) {
    assert_eq!(
        g.header("transfer-encoding"),
        None,
        "{} {} was chunked",
        g.method,
        g.path
    );
    let declared: usize = g
        .header("content-length")
        .unwrap_or_else(|| {
            panic!(
                "{} {} has no Content-Length: {:?}",
                g.method, g.path, g.headers
            )
        })
        .parse()
        .unwrap();
    assert_eq!(declared, g.body.len(), "{} {}", g.method, g.path);
    assert!(!g.body.is_empty(), "{} {} arrived empty", g.method, g.path);
}

/// Hands a request on to the mock departments and relays their answer: a
/// Content-Length-only front for the Yingfeng departments.
fn forward(base: &str, g: &Received) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{base}{}", g.path);
    let pass = |name: &str| {
        name == "content-type"
            || name == "idempotency-key"
            || name == "authorization"
            || name.starts_with("ce-")
    };
    let mut response = if g.method == "GET" {
        let mut r = agent.get(&url);
        for (n, v) in g.headers.iter().filter(|(n, _)| pass(n)) {
            r = r.header(n, v);
        }
        r.call()
    } else {
        let mut r = agent.post(&url);
        for (n, v) in g.headers.iter().filter(|(n, _)| pass(n)) {
            r = r.header(n, v);
        }
        r.send(&g.body[..])
    }
    .expect("the mock departments answer");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_string();
    let body = response.body_mut().read_to_vec().unwrap_or_default();
    Reply::Respond(status, content_type, body)
}

#[test]
fn every_shipped_adapter_delivers_every_byte_to_a_content_length_server() {
    let mock = MockDepartments::start();
    let front = ClServer::start(Options::default());
    let base = mock.url.clone();
    front.answer(move |g| forward(&base, g));
    let (hub, _dir) = yingfeng(&format!("http://{}", front.host()));
    // Police and the platforms; traffic, police and the village (webhook);
    // fire and the platforms; the city (an Open311 form); a CAP warning to
    // the platforms and the command center (webhook).
    for (id, category, extra) in [
        ("w-order", "safety.public-order", serde_json::json!({})),
        ("w-etrike", "traffic.congestion", serde_json::json!({})),
        ("w-smoke", "fire.smoke", serde_json::json!({})),
        (
            "w-city",
            "city.sanitation",
            serde_json::json!({"lat": "30.2447", "lon": "120.1921"}),
        ),
    ] {
        let mut e = event(id, "gov.incident.reported", Some("major"), None);
        e["category"] = category.into();
        e["grid"] = "yingfeng/yingyi/2".into();
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        if id == "w-city" {
            e.as_object_mut().unwrap().remove("grid");
        }
        accepted(&hub, &e);
    }
    let (status, _, body) = post(
        &hub.url("/v1/ingest/video-patrol"),
        &[("content-type", "application/cap+xml")],
        include_bytes!("../adapters/video-patrol/samples/typhoon-warning.xml"),
    );
    assert_eq!(status, 202, "{body}");

    let wanted: &[(&str, &str)] = &[
        ("/police/dispatch", "w-order"),
        ("/police/dispatch", "w-etrike"),
        ("/four-platforms/platforms/", "w-order"),
        ("/four-platforms/platforms/", "w-smoke"),
        ("/traffic/tasks", "w-etrike"),
        ("/village/events", "w-etrike"),
        ("/fire/incidents", "w-smoke"),
        ("/city/requests", "w-city"),
        ("/four-platforms/alerts", "HZ-MET-20250801-TY09"),
        ("/street-command/events", "HZ-MET-20250801-TY09"),
    ];
    let text = |g: &Received| {
        let raw = String::from_utf8_lossy(&g.body).into_owned();
        if g.header("content-type")
            .is_some_and(|c| c.contains("form-urlencoded"))
        {
            percent_encoding::percent_decode_str(&raw.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        } else {
            raw
        }
    };
    let got = eventually(Duration::from_secs(30), || {
        let got = front.got();
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(path, mark)| {
                !got.iter().any(|g| {
                    g.method == "POST"
                        && g.path.starts_with(path)
                        && (text(g).contains(mark) || g.header("ce-id") == Some(mark))
                })
            })
            .collect();
        match missing.is_empty() {
            true => Ok(got),
            false => Err(format!("never arrived whole: {missing:?}")),
        }
    });
    for g in got.iter().filter(|g| g.method == "POST") {
        assert_whole(g);
        let t = text(g);
        if !t.contains("HZ-MET-20250801-TY09") && g.header("ce-id") != Some("HZ-MET-20250801-TY09")
        {
            assert!(
                t.contains("电动三轮车") || t.contains("盈一佳苑小区西门"),
                "{} lost its Chinese text: {t}",
                g.path
            );
        }
    }
    // What the front read is what the departments got, and they answered:
    // every delivery of the four reports is recorded as delivered.
    for id in ["w-order", "w-etrike", "w-smoke", "w-city"] {
        hub.wait_until(&format!("/v1/events/{id}"), Duration::from_secs(30), |v| {
            v["deliveries"]
                .as_array()
                .is_some_and(|d| !d.is_empty() && d.iter().all(|x| x["status"] == "delivered"))
        });
    }
}

#[test]
fn a_python_http_server_department_receives_every_byte() {
    let python = PythonDepartment::start();
    let host = format!("127.0.0.1:{}", python.port);
    let (_dir, hub) = alerts_hub(&host, "", "");
    let sent: Vec<serde_json::Value> = (0..3)
        .map(|i| event(&format!("py-{i}"), "gov.alert.issued", Some("minor"), None))
        .collect();
    for e in &sent {
        accepted(&hub, e);
    }
    let got = python.wait_for(3, Duration::from_secs(30));
    for e in &sent {
        let id = e["id"].as_str().unwrap();
        let r = got
            .iter()
            .find(|r| r["ce_id"] == id)
            .unwrap_or_else(|| panic!("{id} never reached the Python department: {got:?}"));
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD
            .decode(r["body_b64"].as_str().unwrap())
            .unwrap();
        assert_eq!(r["transfer_encoding"], serde_json::Value::Null, "{r}");
        assert_eq!(r["content_length"], body.len().to_string(), "{r}");
        let data: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{id}: the department read {} bytes that are not the event's data: {e}",
                body.len()
            )
        });
        assert_eq!(
            data, e["data"],
            "{id}: every byte of the data, Chinese text included"
        );
        delivery(&hub, id, |d| d["status"] == "delivered");
    }
}

#[test]
fn a_thousand_deliveries_reuse_at_most_concurrency_connections() {
    let dept = ClServer::start(Options::default());
    let host = dept.host();
    let (_dir, hub) = alerts_hub(&host, "concurrency = 4", "");
    const N: usize = 1000;
    notices(&hub, (0..N).map(|i| format!("reuse-{i}")));
    let got = dept.wait_for(N, Duration::from_secs(60));
    assert_eq!(got.len(), N);
    got.iter().for_each(assert_whole);
    let connections = dept.accepted();
    assert!(
        (1..=4).contains(&connections),
        "{N} deliveries opened {connections} connections (concurrency = 4)"
    );
    let opened = eventually(Duration::from_secs(5), || {
        let v = hub.metric(
            "govhub_outbound_connections_opened_total",
            &[("adapter", "dept")],
        );
        match v > 0.0 {
            true => Ok(v),
            false => Err("no connection counted".to_string()),
        }
    });
    assert_eq!(
        opened as usize, connections,
        "the hub counts what the department accepted"
    );
}

#[test]
fn a_department_that_closes_idle_connections_is_still_delivered_to() {
    let dept = ClServer::start(Options {
        idle_close: Some(Duration::from_millis(40)),
        ..Options::default()
    });
    let host = dept.host();
    let (_dir, hub) = alerts_hub(&host, "concurrency = 2", "");
    for i in 0..8 {
        let id = format!("idle-{i}");
        accepted(&hub, &event(&id, "gov.alert.issued", Some("info"), None));
        let d = delivery(&hub, &id, |d| d["status"] != "pending");
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(
            d["attempts"], 1,
            "a closed idle connection cost a failed attempt: {d}"
        );
        // Let the department close the connection the hub keeps.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        dept.accepted() >= 2,
        "the department closed idle connections, so the hub had to open new ones"
    );
}

#[test]
fn a_department_that_never_answers_is_cut_at_the_first_byte_timeout_and_retried() {
    let dept = ClServer::start(Options::default());
    dept.answer(|_| Reply::Silent);
    let host = dept.host();
    let (_dir, hub) = alerts_hub(
        &host,
        "deadline_ms = 5000\nfirst_byte_timeout_ms = 300\nconcurrency = 1",
        "[delivery]\nbackoff_base_ms = 50\nbackoff_cap_ms = 200\n",
    );
    let started = Instant::now();
    accepted(
        &hub,
        &event("silent", "gov.alert.issued", Some("major"), None),
    );
    let d = delivery(&hub, "silent", |d| d["attempts"].as_u64() >= Some(2));
    let waited = started.elapsed();
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&host)
            && error.contains("300 ms")
            && error.contains("first_byte_timeout_ms"),
        "{error}"
    );
    assert!(
        waited < Duration::from_millis(4500),
        "two attempts took {waited:?}: the call deadline (5 s), not the first-byte timeout, cut them"
    );
    // The instance reported the timeout itself: never stopped, never replaced.
    assert_eq!(
        hub.metric("govhub_adapter_deadline_hits_total", &[("adapter", "dept")]),
        0.0
    );
    assert_eq!(
        hub.metric(
            "govhub_adapter_instances_created_total",
            &[("adapter", "dept")]
        ),
        1.0
    );
    dept.answer(|_| Reply::Respond(200, "text/plain".into(), Vec::new()));
    let d = delivery(&hub, "silent", |d| d["status"] == "delivered");
    assert!(d["attempts"].as_u64().unwrap() >= 3, "{d}");
}

#[test]
fn a_department_that_never_finishes_its_answer_is_cut_at_the_deadline_and_dead_lettered() {
    // A byte every 100 ms: no pause reaches the between-bytes timeout, so
    // only the call deadline ends the call; the instance is replaced.
    let dept = ClServer::start(Options::default());
    dept.answer(|_| Reply::Trickle {
        len: 100_000,
        every: Duration::from_millis(100),
    });
    let host = dept.host();
    let (_dir, hub) = alerts_hub(
        &host,
        "deadline_ms = 1000\nbetween_bytes_timeout_ms = 500\nconcurrency = 1",
        "[delivery]\nmax_attempts = 2\nbackoff_base_ms = 50\nbackoff_cap_ms = 100\n",
    );
    let started = Instant::now();
    accepted(
        &hub,
        &event("slow", "gov.alert.issued", Some("major"), None),
    );
    let d = delivery(&hub, "slow", |d| d["status"] == "dead");
    let took = started.elapsed();
    assert_eq!(d["attempts"], 2, "{d}");
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("deadline"), "{error}");
    // Two calls of one second each, not 100,000 bytes at 100 ms.
    assert!(took < Duration::from_secs(8), "dead after {took:?}");
    assert!(
        hub.metric("govhub_adapter_deadline_hits_total", &[("adapter", "dept")]) >= 2.0,
        "the deadline stopped the calls"
    );
    assert!(
        hub.metric(
            "govhub_adapter_instances_created_total",
            &[("adapter", "dept")]
        ) >= 2.0,
        "a stopped instance is replaced"
    );
    // The replacement delivers once the department answers.
    dept.answer(|_| Reply::Respond(200, "text/plain".into(), Vec::new()));
    accepted(
        &hub,
        &event("after-slow", "gov.alert.issued", Some("major"), None),
    );
    delivery(&hub, "after-slow", |d| d["status"] == "delivered");
    let (_, letters) = hub.get_json("/v1/dead-letters");
    assert!(letters.to_string().contains("slow"), "{letters}");
}

/// The hub's resident memory, KiB (Linux).
fn rss_kib(hub: &HubProcess) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", hub.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn ten_megabyte_answers_are_not_read_but_retried_and_dead_lettered_and_memory_stays_flat() {
    const TEN_MB: usize = 10 * 1000 * 1000;
    let dept = ClServer::start(Options::default());
    dept.answer(|g| match g.header("ce-id") {
        Some(id) if id.starts_with("declared") => {
            Reply::Respond(200, "application/json".into(), vec![b' '; TEN_MB])
        }
        Some(id) if id.starts_with("chunked") => Reply::Chunked { len: TEN_MB },
        _ => Reply::Respond(200, "text/plain".into(), Vec::new()),
    });
    let host = dept.host();
    // One instance (what one holds is what is measured); quarantine only
    // after many calls (the department fails every call here).
    let (_dir, hub) = alerts_hub(
        &host,
        "concurrency = 1",
        "[delivery]\nmax_attempts = 2\nbackoff_base_ms = 50\nbackoff_cap_ms = 100\n[quarantine]\nwindow = 1000\nmin_calls = 1000\n",
    );
    accepted(&hub, &event("warm", "gov.alert.issued", Some("info"), None));
    delivery(&hub, "warm", |d| d["status"] == "delivered");
    let before = rss_kib(&hub);
    // Eight rounds of four events, each answered twice with 10 MB (with
    // and without a length said ahead): 64 answers, 640 MB in all.
    let mut after = Vec::new();
    for round in 0..8 {
        let ids: Vec<String> = (0..2)
            .flat_map(|i| {
                [
                    format!("declared-{round}-{i}"),
                    format!("chunked-{round}-{i}"),
                ]
            })
            .collect();
        for id in &ids {
            accepted(&hub, &event(id, "gov.alert.issued", Some("info"), None));
        }
        for id in &ids {
            let d = delivery(&hub, id, |d| d["status"] == "dead");
            assert_eq!(d["attempts"], 2, "{d}");
            let error = d["last_error"].as_str().unwrap_or_default();
            assert!(
                error.contains(&host)
                    && error.contains("more than 4194304 bytes")
                    && error.contains("limits.max_answer_bytes"),
                "{id}: {error}"
            );
        }
        after.push(rss_kib(&hub));
    }
    // Memory rises in the first rounds (the instance's buffer for an
    // answer up to the limit, the allocator's arenas, which settle in
    // 2 MiB steps over the first three or four rounds) and then stays:
    // the last four rounds add less than 16 MiB however much the
    // department sends (they were sent 320 MB; a leak of one answer a
    // round would add 40 MB).
    eprintln!("hub resident: {before} KiB before, {after:?} KiB after each round");
    assert!(
        after[0] - before < 128 * 1024,
        "the first round grew the hub by {} KiB",
        after[0] - before
    );
    assert!(
        after[7].saturating_sub(after[3]) < 16 * 1024,
        "memory kept growing with the answers: {before} KiB, then {after:?} KiB"
    );
    // The adapter goes on delivering.
    accepted(
        &hub,
        &event("after-big", "gov.alert.issued", Some("info"), None),
    );
    delivery(&hub, "after-big", |d| d["status"] == "delivered");
}

#[test]
fn answers_cut_short_or_refused_for_length_are_errors_never_deliveries() {
    let dept = ClServer::start(Options::default());
    dept.answer(|g| match g.header("ce-id") {
        Some("short") => Reply::CutShort {
            declared: 100,
            sent: 10,
        },
        _ => Reply::Respond(411, "text/plain".into(), b"Length Required".to_vec()),
    });
    let host = dept.host();
    let (_dir, hub) = alerts_hub(
        &host,
        "",
        "[delivery]\nmax_attempts = 2\nbackoff_base_ms = 50\nbackoff_cap_ms = 100\n",
    );
    accepted(
        &hub,
        &event("short", "gov.alert.issued", Some("info"), None),
    );
    accepted(
        &hub,
        &event("length", "gov.alert.issued", Some("info"), None),
    );
    let d = delivery(&hub, "short", |d| d["status"] == "dead");
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&host) && error.contains("Content-Length"),
        "{error}"
    );
    let d = delivery(&hub, "length", |d| d["status"] == "dead");
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("411") && error.contains("Content-Length"),
        "{error}"
    );
    assert_eq!(d["attempts"], 1, "a refusal is not retried: {d}");
}

#[test]
fn https_with_the_deployments_ca_and_mutual_tls() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "yingfeng");
    let rogue = TestCa::new(pki.path(), "rogue");
    let (cert, key) = ca.issue("dept", false);
    let (rogue_cert, rogue_key) = rogue.issue("rogue-dept", false);
    let (client_cert, client_key) = ca.issue("police-client", true);
    let trusted = ClServer::start(Options {
        tls: Some(ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
        }),
        ..Options::default()
    });
    let untrusted = ClServer::start(Options {
        tls: Some(ServerTls {
            cert: rogue_cert,
            key: rogue_key,
            client_ca: None,
        }),
        ..Options::default()
    });
    let mutual = ClServer::start(Options {
        tls: Some(ServerTls {
            cert,
            key,
            client_ca: Some(ca.cert_file()),
        }),
        ..Options::default()
    });
    let url = |s: &ClServer| format!("https://{}/events", s.host());
    // Client certificates live beside the manifests (relative paths are
    // the adapters folder's).
    let adapters = |spec: AdapterSpec| spec;
    let with_cert = adapters(webhook(
        "mutual-cert",
        &mutual.host(),
        &url(&mutual),
        "\"gov.test.mutual\"",
        "",
    ))
    .tables("[tls]\nclient_cert = \"police-client.pem\"\nclient_key = \"police-client.key\"\n");
    let dir = HubDir::new(
        &[
            webhook(
                "trusted",
                &trusted.host(),
                &url(&trusted),
                "\"gov.test.trusted\"",
                "",
            ),
            webhook(
                "untrusted",
                &untrusted.host(),
                &url(&untrusted),
                "\"gov.test.untrusted\"",
                "",
            ),
            webhook(
                "mutual-none",
                &mutual.host(),
                &url(&mutual),
                "\"gov.test.mutual\"",
                "",
            ),
            with_cert,
        ],
        &format!(
            "[tls]\nca_files = [\"{}\"]\n[delivery]\nmax_attempts = 1\n",
            ca.cert_file().display()
        ),
    );
    std::fs::copy(
        &client_cert,
        dir.dir.path().join("adapters.d/police-client.pem"),
    )
    .unwrap();
    std::fs::copy(
        &client_key,
        dir.dir.path().join("adapters.d/police-client.key"),
    )
    .unwrap();
    let hub = dir.start();
    accepted(
        &hub,
        &event("tls-ok", "gov.test.trusted", Some("info"), None),
    );
    accepted(
        &hub,
        &event("tls-rogue", "gov.test.untrusted", Some("info"), None),
    );
    accepted(
        &hub,
        &event("tls-mutual", "gov.test.mutual", Some("info"), None),
    );

    let d = delivery(&hub, "tls-ok", |d| d["status"] != "pending");
    assert_eq!(d["status"], "delivered", "{d}");
    assert_whole(&trusted.got()[0]);

    let d = delivery(&hub, "tls-rogue", |d| d["status"] == "dead");
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&untrusted.host())
            && error.contains("not trusted")
            && error.contains("ca_files"),
        "{error}"
    );
    assert!(
        untrusted.got().is_empty(),
        "nothing may reach a server the hub does not trust"
    );

    let deliveries = hub.wait_until("/v1/events/tls-mutual", Duration::from_secs(30), |v| {
        v["deliveries"]
            .as_array()
            .is_some_and(|d| d.len() == 2 && d.iter().all(|x| x["status"] != "pending"))
    })["deliveries"]
        .clone();
    let by = |name: &str| {
        deliveries
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["target"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by("mutual-cert")["status"], "delivered", "{deliveries}");
    let refused = by("mutual-none");
    assert_eq!(refused["status"], "dead", "{deliveries}");
    let error = refused["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&mutual.host()) && error.contains("client certificate"),
        "{error}"
    );
    assert_eq!(
        mutual.got().len(),
        1,
        "only the adapter with the certificate got through"
    );
}

#[test]
fn under_overload_critical_events_go_first_and_info_is_shed_into_the_reserve() {
    let dept = ClServer::start(Options::default());
    dept.hold();
    let host = dept.host();
    let (_dir, hub) = alerts_hub(
        &host,
        "concurrency = 1\ndeadline_ms = 60000",
        "[delivery]\nqueue_depth = 600\npriority_reserve = 0.1\n",
    );
    // One notice in flight, held by the stalled department, then 500
    // behind it.
    accepted(
        &hub,
        &event("info-0", "gov.alert.issued", Some("info"), None),
    );
    dept.wait_for(1, Duration::from_secs(30));
    notices(&hub, (1..=500).map(|i| format!("info-{i}")));
    // A fire alarm of its own case, then a case whose notice is followed
    // by an urgent update: the case keeps its order.
    accepted(
        &hub,
        &event(
            "fire-alarm",
            "gov.alert.issued",
            Some("critical"),
            Some("case-fire"),
        ),
    );
    accepted(
        &hub,
        &event("x-notice", "gov.alert.issued", Some("info"), Some("case-x")),
    );
    accepted(
        &hub,
        &event(
            "x-urgent",
            "gov.alert.issued",
            Some("critical"),
            Some("case-x"),
        ),
    );
    // Fill the queue up to the reserve: 600 less a tenth for info.
    let mut shed = None;
    for i in 0..100 {
        let e = event(&format!("fill-{i}"), "gov.alert.issued", Some("info"), None);
        let (status, content_type, body) = send_event(&hub.base, &e).unwrap();
        if status == 503 {
            shed = Some((i, content_type, body));
            break;
        }
        assert_eq!(status, 202, "{body}");
    }
    let (filled, content_type, body) = shed.expect("info events were never shed");
    assert_eq!(
        501 + 3 + filled,
        540,
        "info is refused exactly at queue_depth less the reserve"
    );
    assert!(
        content_type.starts_with("application/problem+json"),
        "{content_type}"
    );
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["kind"], "backpressure-reserve", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("priority_reserve"),
        "{problem}"
    );
    // The urgent still get in, into the reserve.
    accepted(
        &hub,
        &event("gas-leak", "gov.alert.issued", Some("major"), None),
    );
    accepted(
        &hub,
        &event("fire-alarm-2", "gov.alert.issued", Some("critical"), None),
    );
    assert_eq!(
        hub.metric("govhub_events_shed_total", &[("severity", "info")]),
        1.0
    );
    assert_eq!(
        hub.metric(
            "govhub_queue_lane_depth",
            &[("adapter", "dept"), ("lane", "critical")]
        ),
        3.0
    );
    assert_eq!(
        hub.metric(
            "govhub_queue_lane_depth",
            &[("adapter", "dept"), ("lane", "major")]
        ),
        1.0
    );

    dept.release();
    let total = 501 + 3 + filled + 2;
    let got = dept.wait_for(total, Duration::from_secs(120));
    let order: Vec<&str> = got
        .iter()
        .map(|g| g.header("ce-id").unwrap_or("?"))
        .collect();
    assert_eq!(
        &order[..6],
        ["info-0", "fire-alarm", "x-notice", "x-urgent", "fire-alarm-2", "gas-leak"],
        "after the one in flight: critical first (the case lifted by its urgent update keeps its order), then major"
    );
    assert_eq!(order[6], "info-1", "then the notices, oldest first");
    let mut seen = std::collections::HashSet::new();
    assert!(
        order.iter().all(|id| seen.insert(*id)),
        "a delivery arrived twice"
    );
    assert_eq!(seen.len(), total, "every accepted event was delivered");
}
