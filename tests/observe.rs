//! Observability in the ecosystem's own terms, checked with the
//! ecosystem's own tools: `GET /metrics` in the Prometheus text format
//! 0.0.4 (linted by the real `promtool`) and in OpenMetrics 1.0 (scraped
//! by a real Prometheus server), chosen by the `Accept` header; the
//! Grafana dashboard in `examples/grafana/`, every query of which names a
//! metric the hub exports and answers in that Prometheus.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package,
//! which `tests/run.sh` installs.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// What Prometheus 2.42 sends when it scrapes (read off the wire).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A tool of Debian's `prometheus` package.
fn tool(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: install Debian's `prometheus` package (tests/run.sh does)",
        path.display()
    );
    path
}

/// The source the quota test's principal may send for.
const PATROL_SOURCE: &str = "urn:govhub:video-patrol";

/// A hub with one department (the webhook adapter to a stand-in) whose
/// every metric family has been moved: events received and duplicated,
/// deliveries delivered, retried and dead, delivery durations, events
/// shed for a full queue, requests refused by authentication and events
/// refused by a quota.
struct Moved {
    hub: HubProcess,
    _dir: HubDir,
    _department: Receiver,
}

fn event(id: &str, source: &str) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": "gov.alert.issued",
        "datacontenttype": "application/json",
        "data": { "text": "东风街道: 积水路段提醒" },
    })
}

fn post_event(hub: &HubProcess, e: &serde_json::Value, headers: &[(&str, &str)]) -> u16 {
    let mut h = vec![("content-type", "application/cloudevents+json")];
    h.extend_from_slice(headers);
    request("POST", &hub.url("/v1/events"), &h, e.to_string().as_bytes())
        .expect("the hub answers")
        .0
}

fn every_metric_moved() -> Moved {
    let department = Receiver::start();
    let patrol = token();
    let spec = AdapterSpec::new("police", "webhook-adapter")
        .top("subscribe = [\"gov.alert.*\"]")
        .tables(&format!(
            "[limits]\nconcurrency = 1\n[capabilities]\noutbound_hosts = [\"{h}\"]\n[config]\nurl = \"http://{h}/events\"",
            h = department.host()
        ));
    let config = format!(
        r#"
[delivery]
max_attempts = 2
backoff_base_ms = 20
backoff_cap_ms = 50
queue_depth = 4

[auth]
metrics_open = true

[[auth.principals]]
name = "patrol"
role = "department"
token_sha256 = "{hash}"
sources = ["{PATROL_SOURCE}"]
events_per_s = 0.01
burst = 1
"#,
        hash = sha256_hex(&patrol)
    );
    let dir = HubDir::new(&[spec], &config);
    let hub = dir.start_with_env(&[("GOVHUB_ADMIN_TOKEN", &token())]);
    let base = hub.base.clone();
    let metric = |name: &str, labels: &[(&str, &str)]| hub.metric(name, labels);
    let wait_metric = |name: &str, labels: &[(&str, &str)], at_least: f64| {
        eventually(Duration::from_secs(60), || {
            let v = metric(name, labels);
            match v >= at_least {
                true => Ok(()),
                false => Err(format!("{name}{labels:?} stayed at {v}, below {at_least}")),
            }
        })
    };

    // Refused by the department until dead: a retry, then a dead letter.
    department.answer(503);
    assert_eq!(
        send_event(&base, &event("om-dead", "urn:test:observe"))
            .unwrap()
            .0,
        202
    );
    let dead = [("adapter", "police"), ("outcome", "dead")];
    wait_metric("govhub_deliveries_total", &dead, 1.0);
    department.answer(200);
    // Delivered, and one sent twice.
    let mut accepted = Vec::new();
    for i in 0..3 {
        let e = event(&format!("om-{i}"), "urn:test:observe");
        assert_eq!(send_event(&base, &e).unwrap().0, 202);
        accepted.push(format!("om-{i}"));
    }
    let e = event("om-0", "urn:test:observe");
    assert_eq!(send_event(&base, &e).unwrap().0, 202, "a duplicate is 202");
    let delivered = [("adapter", "police"), ("outcome", "delivered")];
    wait_metric("govhub_deliveries_total", &delivered, 3.0);
    // A slow department and a queue of four: some are shed.
    department.delay(800);
    let mut shed = 0;
    for i in 0..12 {
        match send_event(&base, &event(&format!("om-slow-{i}"), "urn:test:observe"))
            .unwrap()
            .0
        {
            202 => accepted.push(format!("om-slow-{i}")),
            503 => shed += 1,
            s => panic!("om-slow-{i}: {s}"),
        }
    }
    assert!(shed > 0, "nothing was shed with a queue of 4");
    department.delay(0);
    // A wrong token, and a principal over its quota.
    let wrong = post_event(
        &hub,
        &event("om-wrong", "urn:test:observe"),
        &[("authorization", "Bearer not-a-token")],
    );
    assert_eq!(wrong, 401);
    let bearer = format!("Bearer {patrol}");
    let statuses: Vec<u16> = (0..3)
        .map(|i| {
            let id = format!("om-patrol-{i}");
            let status = post_event(
                &hub,
                &event(&id, PATROL_SOURCE),
                &[("authorization", &bearer)],
            );
            if status == 202 {
                accepted.push(id);
            }
            status
        })
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    // Everything accepted reaches the department, and its outcome is
    // committed (the queue is empty).
    department.wait_for_ids("police", &accepted, Duration::from_secs(60));
    eventually(Duration::from_secs(30), || {
        match metric("govhub_queue_depth", &[("adapter", "police")]) {
            0.0 => Ok(()),
            d => Err(format!("{d} deliveries still queued")),
        }
    });
    for (name, labels) in [
        ("govhub_events_received_total", vec![]),
        ("govhub_events_duplicate_total", vec![]),
        ("govhub_deliveries_total", vec![("outcome", "retry")]),
        ("govhub_delivery_duration_seconds_count", vec![]),
        ("govhub_events_shed_total", vec![]),
        (
            "govhub_auth_refused_total",
            vec![("reason", "unauthenticated")],
        ),
        (
            "govhub_quota_refused_events_total",
            vec![("principal", "patrol")],
        ),
        ("govhub_adapter_calls_total", vec![("adapter", "police")]),
    ] {
        assert!(metric(name, &labels) > 0.0, "{name}{labels:?} did not move");
    }
    Moved {
        hub,
        _dir: dir,
        _department: department,
    }
}

/// `GET /metrics` with these headers → (content type, body).
fn scrape(hub: &HubProcess, headers: &[(&str, &str)]) -> (String, String) {
    let (status, headers, body) =
        request("GET", &hub.url("/metrics"), headers, b"").expect("the hub answers");
    assert_eq!(status, 200, "{body}");
    (headers["content-type"].clone(), body)
}

/// The names of the samples of an exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// `promtool check metrics` over `text` → (success, what it printed).
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A Prometheus server on loopback scraping the hub every second, its
/// data in a temporary folder; killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn scraping(hub: &HubProcess) -> Prometheus {
        let data = tempfile::tempdir().unwrap();
        let target = hub.base.trim_start_matches("http://");
        let config = data.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: govhub\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _data: data,
        }
    }

    /// An instant query → its result vector (`None` if the server is not
    /// up yet; a failed query panics with Prometheus's error).
    fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let url = url::Url::parse_with_params(
            &format!("{}/api/v1/query", self.base),
            &[("query", promql)],
        )
        .unwrap();
        let (status, _, body) = request("GET", url.as_str(), &[], b"")?;
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        assert!(
            status == 200 && answer["status"] == "success",
            "Prometheus refused `{promql}`: {status} {body}"
        );
        answer["data"]["result"].as_array().cloned()
    }

    /// The hub's scrape target as Prometheus sees it.
    fn target(&self) -> Option<serde_json::Value> {
        let (_, _, body) = request("GET", &format!("{}/api/v1/targets", self.base), &[], b"")?;
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        answer["data"]["activeTargets"].get(0).cloned()
    }
}

/// The dashboard's queries, with its panels' titles.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = root().join("examples/grafana/govhub-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    queries
}

/// The hub's metric names a PromQL expression reads.
fn metrics_named(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("govhub_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn metrics_speak_both_formats_that_prometheus_tooling_accepts_and_the_dashboard_reads_them() {
    let moved = every_metric_moved();
    let hub = &moved.hub;

    // Negotiation: the text format 0.0.4 by default and when asked for,
    // OpenMetrics for what Prometheus sends.
    let (text_type, text) = scrape(hub, &[]);
    assert_eq!(text_type, "text/plain; version=0.0.4; charset=utf-8");
    let (asked_type, asked) = scrape(hub, &[("accept", "text/plain;version=0.0.4")]);
    assert_eq!(asked_type, text_type);
    assert_eq!(sample_names(&asked), sample_names(&text));
    let (om_type, om) = scrape(hub, &[("accept", PROMETHEUS_ACCEPT)]);
    assert_eq!(
        om_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(!text.contains("# EOF"), "{text}");
    // The same series in both.
    assert_eq!(sample_names(&om), sample_names(&text));
    // 0.0.4 names a counter's _total series in HELP and TYPE.
    assert!(
        text.contains("# TYPE govhub_deliveries_total counter\n"),
        "{text}"
    );
    assert!(om.contains("# TYPE govhub_deliveries counter\n"), "{om}");

    // promtool's linter: clean on the text format, not a word.
    let (ok, said) = promtool_check(&text);
    assert!(ok && said.trim().is_empty(), "promtool: {said}\n{text}");
    // It reads only the text format (prometheus/prometheus#8932), so on
    // OpenMetrics it names every counter: the reason 0.0.4 is the default.
    let (_, said) = promtool_check(&om);
    assert!(
        said.contains("govhub_deliveries_total no help text"),
        "{said}"
    );

    // Every dashboard query names metrics the hub exports.
    let exported = sample_names(&text);
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    for (panel, expr) in &queries {
        let names = metrics_named(expr);
        assert!(
            !names.is_empty(),
            "{panel}: `{expr}` reads no govhub metric"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "{panel}: `{expr}` reads {name}, which /metrics does not export:\n{text}"
            );
        }
    }

    // A real Prometheus scrapes the hub (asking for OpenMetrics), takes
    // every series, and answers every dashboard query with data.
    let prometheus = Prometheus::scraping(hub);
    let target = eventually(Duration::from_secs(60), || match prometheus.target() {
        Some(t) if t["health"] == "up" => Ok(t),
        t => Err(format!("the hub's target is not up in Prometheus: {t:?}")),
    });
    assert_eq!(target["lastError"], "", "{target}");
    let dead = prometheus
        .query("govhub_deliveries_total{outcome=\"dead\"}")
        .unwrap();
    assert_eq!(dead[0]["value"][1], "1", "{dead:?}");
    // rate() needs two scrapes; every panel's query then has data.
    eventually(Duration::from_secs(60), || {
        let empty: Vec<&(String, String)> = queries
            .iter()
            .filter(|(_, expr)| {
                let expr = expr.replace("$__rate_interval", "1m");
                prometheus.query(&expr).is_none_or(|r| r.is_empty())
            })
            .collect();
        match empty.is_empty() {
            true => Ok(()),
            false => Err(format!("queries with no data: {empty:?}")),
        }
    });
    let scraped = prometheus.query("scrape_samples_scraped").unwrap();
    let samples: usize = scraped[0]["value"][1].as_str().unwrap().parse().unwrap();
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert_eq!(samples, series, "Prometheus took every series");
}

// Traces: OpenTelemetry over OTLP, the W3C trace context in and out.

/// The sender's span: a patrol system's, say, that saw the incident.
const SENDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_SPAN: &str = "00f067aa0ba902b7";

fn sender_traceparent() -> String {
    format!("00-{SENDER_TRACE}-{SENDER_SPAN}-01")
}

/// The names of `pid`'s threads.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

/// The batch span processor's thread (`OpenTelemetry.Traces.BatchProcessor`,
/// cut to 15 bytes by the kernel).
fn exporter_threads(pid: u32) -> Vec<String> {
    threads(pid)
        .into_iter()
        .filter(|t| t.starts_with("OpenTelemetry"))
        .collect()
}

/// A report of e-trikes jamming the gate of 望江家园 (Yingfeng's first
/// story): the traffic police, the police and the village committee must
/// act.
fn etrike_report(id: &str, extensions: serde_json::Value) -> serde_json::Value {
    let mut e = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:test:video-patrol",
        "type": "gov.incident.reported",
        "category": "traffic.congestion",
        "severity": "major",
        "grid": "yingfeng/wangjiang/1",
        "data": { "description": "电动三轮车堵塞望江家园东门", "address": "望江家园东门" },
    });
    for (k, v) in extensions.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

fn send(d: &Deployment, e: &serde_json::Value, headers: &[(&str, &str)]) -> String {
    let mut h = vec![("content-type", "application/cloudevents+json")];
    h.extend_from_slice(headers);
    let (status, _, body) =
        try_post(&d.hub.url("/v1/events"), &h, e.to_string().as_bytes()).unwrap();
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["accepted"][0]["caseid"].as_str().unwrap().to_string()
}

/// A department's request's header, from the mock departments' record.
fn header(record: &serde_json::Value, name: &str) -> String {
    record["headers"][name]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The `traceparent` each of `departments` got with `case`.
fn traceparents<'a>(d: &Deployment, case: &str, departments: &[&'a str]) -> Vec<(&'a str, String)> {
    departments
        .iter()
        .map(|dep| {
            (
                *dep,
                header(&d.mock.wait_received(dep, case)[0], "traceparent"),
            )
        })
        .collect()
}

/// The trace id of a `traceparent`.
fn trace_of(traceparent: &str) -> &str {
    traceparent.get(3..35).unwrap_or_default()
}

/// The parent id of a `traceparent`.
fn parent_of(traceparent: &str) -> &str {
    traceparent.get(36..52).unwrap_or_default()
}

/// Checks one incident's trace as received: the ingest span is the
/// sender's span's child; routing and the commit are the ingest's; one
/// delivered `deliver` span per department follows from the routing,
/// each with its adapter call; and each department's request names that
/// call as its parent. Returns the spans of the trace.
fn check_one_trace(
    otlp: &otlp::Receiver,
    route_path: &str,
    trace: &str,
    sender_span: &str,
    event_id: &str,
    case: &str,
    requests: &[(&str, String)],
) -> Vec<otlp::Span> {
    let departments: Vec<&str> = requests.iter().map(|(d, _)| *d).collect();
    let spans = otlp.wait_for(Duration::from_secs(20), |all| {
        let spans: Vec<otlp::Span> = all
            .iter()
            .filter(|s| s.trace_id == trace)
            .cloned()
            .collect();
        let delivered = |d: &str| {
            spans.iter().any(|s| {
                s.name == "deliver"
                    && s.attr("govhub.adapter") == d
                    && s.attr("govhub.outcome") == "delivered"
            })
        };
        let calls = spans.iter().filter(|s| s.name == "adapter.call").count();
        match departments.iter().all(|d| delivered(d)) && calls >= departments.len() {
            true => Ok(spans),
            false => Err(format!(
                "trace {trace} lacks a delivered span for one of {departments:?}: {:#?}",
                spans
                    .iter()
                    .map(|s| (&s.name, &s.attributes))
                    .collect::<Vec<_>>()
            )),
        }
    });
    let one = |name: &str| -> &otlp::Span {
        let found: Vec<&otlp::Span> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
        found[0]
    };
    let ingest = one("ingest");
    assert_eq!(
        ingest.parent_span_id, sender_span,
        "the ingest follows the sender's span"
    );
    assert_eq!(ingest.attr("govhub.route"), route_path);
    assert_eq!(ingest.attr("govhub.outcome"), "accepted");
    assert_eq!(
        ingest.resource.get("service.name").map(String::as_str),
        Some("govhub")
    );
    let route = one("route");
    assert_eq!(route.parent_span_id, ingest.span_id);
    assert_eq!(route.attr("govhub.event.id"), event_id);
    assert_eq!(route.attr("govhub.case.id"), case);
    assert_eq!(route.attr("govhub.targets"), departments.len().to_string());
    let commit = one("journal.commit");
    assert_eq!(commit.parent_span_id, ingest.span_id);
    assert_eq!(commit.attr("govhub.outcome"), "stored");
    assert_eq!(commit.attr("govhub.event.id"), event_id);
    assert_eq!(commit.attr("govhub.case.id"), case);
    for (department, traceparent) in requests {
        let deliver = spans
            .iter()
            .find(|s| s.name == "deliver" && s.attr("govhub.adapter") == *department)
            .unwrap();
        assert_eq!(
            deliver.parent_span_id, route.span_id,
            "{department}: the delivery follows the routing"
        );
        assert_eq!(deliver.attr("govhub.event.id"), event_id);
        assert_eq!(deliver.attr("govhub.case.id"), case);
        assert_eq!(deliver.attr("govhub.attempt"), "1");
        let call = spans
            .iter()
            .find(|s| s.name == "adapter.call" && s.parent_span_id == deliver.span_id)
            .unwrap_or_else(|| panic!("{department}: no adapter call under its delivery"));
        assert_eq!(call.attr("govhub.adapter"), *department);
        assert_eq!(call.attr("govhub.function"), "deliver");
        assert_eq!(call.attr("govhub.case.id"), case);
        assert_eq!(call.attr("govhub.outcome"), "ok");
        assert_eq!(
            trace_of(traceparent),
            trace,
            "{department}'s request is in the trace"
        );
        assert_eq!(
            parent_of(traceparent),
            call.span_id,
            "{department}'s request names the adapter call as its parent"
        );
    }
    spans
}

#[test]
fn one_incident_is_one_trace_from_the_sender_through_the_hub_into_every_department_over_http() {
    let otlp = otlp::Receiver::start(otlp::Otlp::Http);
    let d = Deployment::start_with_env(&otlp.env());
    let pid = d.hub.child.id();
    assert_eq!(
        exporter_threads(pid).len(),
        1,
        "one exporter thread: {:?}",
        threads(pid)
    );
    let tp = sender_traceparent();
    let case = send(
        &d,
        &etrike_report("trace-http-1", serde_json::json!({})),
        &[("traceparent", &tp)],
    );
    let requests = traceparents(&d, &case, &["traffic", "police", "village"]);
    let spans = check_one_trace(
        &otlp,
        "/v1/events",
        SENDER_TRACE,
        SENDER_SPAN,
        "trace-http-1",
        &case,
        &requests,
    );
    // The village gets CloudEvents (binary mode): the event's own
    // distributed-tracing extension names the routing.
    let village = &d.mock.wait_received("village", &case)[0];
    let extension = header(village, "ce-traceparent");
    let route = spans.iter().find(|s| s.name == "route").unwrap();
    assert_eq!(trace_of(&extension), SENDER_TRACE);
    assert_eq!(parent_of(&extension), route.span_id);
    // The stored event carries it too, for deliveries after a restart.
    let (_, stored) = d
        .hub
        .get_json("/v1/events/trace-http-1?source=urn:test:video-patrol");
    assert!(stored.to_string().contains(&extension), "{stored}");
    // A department's raw payload (`POST /v1/ingest/{adapter}`): the
    // adapter's ingest call is in the trace, under the request's span.
    let trace = "5b8efff798038103d269b633813fc60c";
    let span = "eee19b7ec3c1b174";
    let (status, _, body) = try_post(
        &d.hub.url("/v1/ingest/video-patrol"),
        &[
            ("content-type", "application/json"),
            ("traceparent", &format!("00-{trace}-{span}-01")),
        ],
        include_bytes!("../adapters/video-patrol/samples/detection-river.json"),
    )
    .unwrap();
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (id, river) = (
        v["accepted"][0]["id"].as_str().unwrap().to_string(),
        v["accepted"][0]["caseid"].as_str().unwrap().to_string(),
    );
    let requests = traceparents(&d, &river, &["police", "four-platforms"]);
    let spans = check_one_trace(&otlp, "/v1/ingest", trace, span, &id, &river, &requests);
    let ingest = spans.iter().find(|s| s.name == "ingest").unwrap();
    assert_eq!(ingest.attr("govhub.adapter"), "video-patrol");
    assert!(
        spans.iter().any(|s| s.name == "adapter.call"
            && s.parent_span_id == ingest.span_id
            && s.attr("govhub.function") == "ingest"
            && s.attr("govhub.adapter") == "video-patrol"
            && s.attr("govhub.outcome") == "ok"),
        "no ingest call under the request: {spans:#?}"
    );
    assert!(
        otlp.seen()
            .iter()
            .all(|(p, t)| p == "/v1/traces" && t == "application/x-protobuf"),
        "{:?}",
        otlp.seen()
    );
}

#[test]
fn over_grpc_a_traceparent_in_the_cloudevent_itself_is_the_parent() {
    let otlp = otlp::Receiver::start(otlp::Otlp::Grpc);
    let d = Deployment::start_with_env(&otlp.env());
    // No header: the sender's context travels in the event (structured
    // mode, the CloudEvents distributed-tracing extension).
    // With W3C level 2's random-trace-id flag, which OpenTelemetry does
    // not know: still the parent.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let span = "b7ad6b7169203331";
    let e = etrike_report(
        "trace-grpc-1",
        serde_json::json!({ "traceparent": format!("00-{trace}-{span}-03"), "tracestate": "yingfeng=patrol" }),
    );
    let case = send(&d, &e, &[]);
    let requests = traceparents(&d, &case, &["traffic", "police", "village"]);
    check_one_trace(
        &otlp,
        "/v1/events",
        trace,
        span,
        "trace-grpc-1",
        &case,
        &requests,
    );
    let village = &d.mock.wait_received("village", &case)[0];
    assert_eq!(header(village, "tracestate"), "yingfeng=patrol");
    assert!(
        otlp.seen()
            .iter()
            .all(|(p, t)| p.ends_with("TraceService/Export") && t.starts_with("application/grpc")),
        "{:?}",
        otlp.seen()
    );
}

#[test]
fn with_telemetry_off_nothing_is_exported_no_exporter_thread_runs_and_the_senders_context_still_travels(
) {
    let otlp = otlp::Receiver::start(otlp::Otlp::Http);
    // Everything but the switch: the endpoint is there, and unused.
    let env: Vec<(String, String)> = otlp
        .env()
        .into_iter()
        .filter(|(k, _)| k != "GOVHUB__TELEMETRY__ENABLED")
        .collect();
    let d = Deployment::start_with_env(&env);
    // W3C level 2's random-trace-id flag, and a vendor's state: handed on
    // exactly as they came.
    let tp = format!("00-{SENDER_TRACE}-{SENDER_SPAN}-03");
    let case = send(
        &d,
        &etrike_report("trace-off-1", serde_json::json!({})),
        &[("traceparent", &tp), ("tracestate", "yingfeng=patrol")],
    );
    for dep in ["traffic", "police", "village"] {
        let got = &d.mock.wait_received(dep, &case)[0];
        assert_eq!(
            header(got, "traceparent"),
            tp,
            "{dep} gets the sender's context as it came"
        );
        assert_eq!(header(got, "tracestate"), "yingfeng=patrol", "{dep}");
    }
    let village = &d.mock.wait_received("village", &case)[0];
    assert_eq!(header(village, "ce-traceparent"), tp);
    // The next event, sent without one, reaches the same adapters'
    // instances with none: nothing of the first call's context stays.
    let next = send(
        &d,
        &etrike_report("trace-off-2", serde_json::json!({})),
        &[],
    );
    for dep in ["traffic", "police", "village"] {
        let got = &d.mock.wait_received(dep, &next)[0];
        assert_eq!(header(got, "traceparent"), "", "{dep}: {got}");
        assert_eq!(header(got, "tracestate"), "", "{dep}: {got}");
    }
    // Five times the batch delay the endpoint was given: a running
    // exporter would have sent by now.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(otlp.requests(), 0, "exported with telemetry off");
    let pid = d.hub.child.id();
    assert!(exporter_threads(pid).is_empty(), "{:?}", threads(pid));
    // The log says nothing about an exporter either.
    assert!(!d.hub.log().contains("telemetry: exporting traces"));
}

#[test]
fn a_collector_that_hangs_holds_nothing_up_and_the_log_says_so() {
    // A collector that takes connections (the kernel's backlog) and never
    // answers one.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let department = Receiver::start();
    let spec = AdapterSpec::new("police", "webhook-adapter")
        .top("subscribe = [\"gov.alert.*\"]")
        .tables(&format!(
            "[capabilities]\noutbound_hosts = [\"{h}\"]\n[config]\nurl = \"http://{h}/events\"",
            h = department.host()
        ));
    // The keys in the file this time, the queue and deadline small.
    let config = format!(
        "[telemetry]\nenabled = true\nendpoint = \"http://{}\"\ntimeout_ms = 300\nbatch_delay_ms = 50\nmax_queue = 8\n",
        hung.local_addr().unwrap()
    );
    let dir = HubDir::new(&[spec], &config);
    let hub = dir.start();
    let mut slowest = Duration::ZERO;
    let ids: Vec<String> = (0..40).map(|i| format!("hung-{i}")).collect();
    for id in &ids {
        let started = std::time::Instant::now();
        let traceparent = format!("00-{SENDER_TRACE}-{SENDER_SPAN}-01");
        assert_eq!(
            post_event(
                &hub,
                &event(id, "urn:test:observe"),
                &[("traceparent", &traceparent)]
            ),
            202
        );
        slowest = slowest.max(started.elapsed());
    }
    department.wait_for_ids("the department", &ids, Duration::from_secs(30));
    assert!(
        slowest < Duration::from_secs(2),
        "an event took {slowest:?} to be accepted while the collector hung"
    );
    hub.wait_log("telemetry: spans not exported", Duration::from_secs(20));
    let log = hub.log();
    let line = log
        .lines()
        .find(|l| l.contains("telemetry: spans not exported"))
        .unwrap();
    assert!(
        line.contains(&hung.local_addr().unwrap().to_string())
            && line.contains("no answer within 300 ms"),
        "{line}"
    );
    // Said once for the whole outage, not once a batch.
    assert_eq!(
        log.matches("telemetry: spans not exported").count(),
        1,
        "{log}"
    );
}

#[test]
fn a_telemetry_setting_that_cannot_work_stops_the_start_naming_it() {
    for (toml, env, says) in [
        (
            "[telemetry]\nenabled = true\nprotocol = \"http/json\"\n",
            vec![],
            "telemetry.protocol `http/json`",
        ),
        (
            "[telemetry]\nenabled = true\nendpoint = \"collector:4317\"\n",
            vec![],
            "telemetry.endpoint `collector:4317`",
        ),
        (
            "[telemetry]\nsample_ratio = 2.0\n",
            vec![],
            "telemetry.sample_ratio 2",
        ),
        (
            "[telemetry]\nmax_queue = 0\n",
            vec![],
            "telemetry.max_queue must be positive",
        ),
        (
            "[telemetry]\nenabled = true\n",
            vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")],
            "OTEL_EXPORTER_OTLP_PROTOCOL `thrift`",
        ),
    ] {
        let dir = HubDir::new(&[], toml);
        let config = dir.config();
        let (ok, _, stderr) = govhub_with_env(
            &["check-config", "--config", config.to_str().unwrap()],
            &env,
        );
        assert!(!ok && stderr.contains(says), "{toml}: {stderr}");
    }
    // And the standard switch turns a configured exporter off.
    let otlp = otlp::Receiver::start(otlp::Otlp::Http);
    let dir = HubDir::new(
        &[],
        &format!(
            "[telemetry]\nenabled = true\nendpoint = \"{}\"\nbatch_delay_ms = 50\n",
            otlp.endpoint
        ),
    );
    let hub = dir.start_with_env(&[("OTEL_SDK_DISABLED", "true")]);
    assert!(exporter_threads(hub.child.id()).is_empty());
    assert_eq!(get(&hub.url("/healthz")).0, 200);
}
