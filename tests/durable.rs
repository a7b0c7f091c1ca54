//! The durable flow end to end: the real binary, a real SQLite file, the
//! webhook adapter delivering to a recording department.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

fn webhook_to(receiver: &Receiver, limits: &str) -> AdapterSpec {
    AdapterSpec::new("webhook", "webhook-adapter")
        .top("subscribe = [\"gov.*\"]")
        .tables(&format!(
            "{limits}\n[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"http://{host}/events\"",
            host = receiver.host()
        ))
}

/// Fast retries so the tests do not wait for production backoff.
const FAST_RETRIES: &str =
    "[delivery]\nmax_attempts = 50\nbackoff_base_ms = 20\nbackoff_cap_ms = 200\n";

#[test]
fn kill_9_while_streaming_loses_no_acknowledged_event() {
    const TOTAL: usize = 5_000;
    const CLIENTS: usize = 8;
    let receiver = Receiver::start();
    let dir = HubDir::new(
        &[webhook_to(&receiver, "[limits]\nconcurrency = 8")],
        FAST_RETRIES,
    );
    let hub = Arc::new(Mutex::new(dir.start()));
    let base = hub.lock().unwrap().base.clone();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();

    // Clients stream events; the hub is killed with SIGKILL once 1,500 are
    // acknowledged. Whatever got no 202 is kept for after the restart.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let unacked: Arc<Mutex<Vec<usize>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, acked, unacked, base) =
                (next.clone(), acked.clone(), unacked.clone(), base.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= TOTAL {
                    return;
                }
                let id = format!("stream-{i}");
                let event = cloudevent(&id, Some(&format!("case-{}", i % 50)), 200);
                match send_event(&base, &event) {
                    Some((202, _, _)) => {
                        acked.lock().unwrap().insert(id);
                    }
                    _ => unacked.lock().unwrap().push(i),
                }
            })
        })
        .collect();
    let killer = {
        let (acked, hub) = (acked.clone(), hub.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while acked.lock().unwrap().len() < 1_500 {
                assert!(
                    Instant::now() < deadline,
                    "the stream stalled before the kill"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            hub.lock().unwrap().kill9();
        })
    };
    killer.join().unwrap();
    for c in clients {
        c.join().unwrap();
    }
    let acked_before_kill = acked.lock().unwrap().len();
    let refused = unacked.lock().unwrap().len();
    assert!(
        refused > 0,
        "the kill came after the stream ended: nothing was tested"
    );

    // Restart on the same journal; the client sends what got no 202 again
    // (a repeat of something already stored is answered as a duplicate).
    let restarted = dir.start();
    for i in unacked.lock().unwrap().iter() {
        let id = format!("stream-{i}");
        let event = cloudevent(&id, Some(&format!("case-{}", i % 50)), 200);
        let (status, _, body) = send_event(&restarted.base, &event).expect("restarted hub answers");
        assert_eq!(status, 202, "{body}");
        acked.lock().unwrap().insert(id);
    }
    let want = acked.lock().unwrap().clone();
    assert_eq!(want.len(), TOTAL);
    let got = receiver.wait_for_ids("the department", &want, Duration::from_secs(180));
    let duplicates = got.len() - got.iter().collect::<HashSet<_>>().len();
    eprintln!(
        "kill -9 after {acked_before_kill} acknowledged events ({refused} refused while down); \
         after restart all {TOTAL} arrived, {duplicates} duplicate deliveries"
    );
}

#[test]
fn a_department_that_recovers_gets_its_backlog_in_order_per_case() {
    let receiver = Receiver::start();
    receiver.answer(503);
    let dir = HubDir::new(
        &[webhook_to(&receiver, "[limits]\nconcurrency = 4")],
        FAST_RETRIES,
    );
    let hub = dir.start();
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..60 {
        let case = format!("case-{}", i % 3);
        let id = format!("backlog-{i:03}");
        let (status, _, body) = send_event(&hub.base, &cloudevent(&id, Some(&case), 64)).unwrap();
        assert_eq!(status, 202, "{body}");
        sent.entry(case).or_default().push(id);
    }
    // The department is down: deliveries are retried, none recorded.
    hub.wait_until("/v1/events/backlog-000", Duration::from_secs(20), |v| {
        v["deliveries"][0]["attempts"].as_u64() >= Some(3)
    });
    assert!(receiver.received().is_empty());
    let first_error = hub.get_json("/v1/events/backlog-000").1;
    assert!(
        first_error["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{first_error}"
    );
    receiver.answer(200);
    let want: HashSet<String> = sent.values().flatten().cloned().collect();
    let got = receiver.wait_for_ids("the department", &want, Duration::from_secs(60));
    for (case, ids) in &sent {
        let order: Vec<&String> = got.iter().filter(|id| ids.contains(id)).collect();
        let mut firsts: Vec<&String> = Vec::new();
        for id in order {
            if !firsts.contains(&id) {
                firsts.push(id);
            }
        }
        assert_eq!(
            firsts,
            ids.iter().collect::<Vec<_>>(),
            "{case} arrived out of order"
        );
    }
    let v = hub.wait_until("/v1/events/backlog-059", Duration::from_secs(10), |v| {
        v["deliveries"][0]["status"] == "delivered"
    });
    assert!(v["deliveries"][0]["delivered_at"].is_string(), "{v}");
}

#[test]
fn dedup_holds_across_a_restart() {
    let receiver = Receiver::start();
    let dir = HubDir::new(&[webhook_to(&receiver, "")], "");
    let event = cloudevent("once-only", None, 32);
    {
        let hub = dir.start();
        let (status, _, body) = send_event(&hub.base, &event).unwrap();
        assert_eq!(status, 202);
        assert!(body.contains("\"duplicate\":false"), "{body}");
        // Delivered and recorded as such, so the restart below has nothing
        // to resume: the department answers before the hub commits.
        hub.wait_until("/v1/events/once-only", Duration::from_secs(10), |v| {
            v["deliveries"][0]["status"] == "delivered"
        });
    }
    let hub = dir.start();
    let (status, _, body) = send_event(&hub.base, &event).unwrap();
    assert_eq!(status, 202);
    assert!(body.contains("\"duplicate\":true"), "{body}");
    // The same id from another source is a different event.
    let mut other = event.clone();
    other["source"] = "urn:test:other".into();
    let (_, _, body) = send_event(&hub.base, &other).unwrap();
    assert!(body.contains("\"duplicate\":false"), "{body}");
    hub.wait_until(
        "/v1/events/once-only?source=urn:test:other",
        Duration::from_secs(10),
        |v| v["deliveries"][0]["status"] == "delivered",
    );
    receiver.wait_for(2, Duration::from_secs(10));
    let once = receiver
        .ce_ids()
        .iter()
        .filter(|id| *id == "once-only")
        .count();
    assert_eq!(once, 2, "once per source");
}

/// An event with every attribute kind: extensions, coordinates, binary data.
fn full_event(id: &str) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:city-brain:video-patrol",
        "type": "gov.alert.issued",
        "subject": "cam-17",
        "time": "2025-08-01T14:04:55.120+08:00",
        "dataschema": "https://example.org/schemas/detection",
        "datacontenttype": "image/jpeg",
        "caseid": "case-river-1",
        "grid": "yingfeng/yingyi/2",
        "severity": "critical",
        "category": "safety.water",
        "lat": "30.2398",
        "lon": "120.2026",
        "camera": "钱江-17",
        "confidence": "0.93",
        "data_base64": "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//",
    })
}

fn stored(hub: &HubProcess, id: &str) -> serde_json::Value {
    let (status, v) = hub.get_json(&format!("/v1/events/{id}"));
    assert_eq!(status, 200, "{v}");
    v["event"].clone()
}

#[test]
fn each_cloudevents_mode_round_trips_every_attribute_and_binary_data() {
    let receiver = Receiver::start();
    let dir = HubDir::new(&[webhook_to(&receiver, "")], "");
    let hub = dir.start();

    // Structured.
    let structured = full_event("mode-structured");
    let (status, _, body) = post(
        &hub.url("/v1/events"),
        &[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )],
        structured.to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(stored(&hub, "mode-structured"), structured);

    // Batch.
    let batch = serde_json::json!([full_event("mode-batch-1"), full_event("mode-batch-2")]);
    let (status, _, body) = post(
        &hub.url("/v1/events"),
        &[("content-type", "application/cloudevents-batch+json")],
        batch.to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(stored(&hub, "mode-batch-2"), full_event("mode-batch-2"));

    // Binary: percent-encoded header values, raw bytes as the body.
    let jpeg: Vec<u8> = vec![
        0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x00, 0x80, 0xff,
    ];
    let (status, _, body) = post(
        &hub.url("/v1/events"),
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "mode-binary"),
            ("ce-source", "urn:city-brain:video-patrol"),
            ("ce-type", "gov.alert.issued"),
            ("ce-time", "2025-08-01T14:04:55.120+08:00"),
            ("ce-caseid", "case-river-1"),
            ("ce-grid", "yingfeng%2Fyingyi%2F2"),
            ("ce-camera", "%E9%92%B1%E6%B1%9F-17"),
            ("ce-severity", "critical"),
            ("ce-lat", "30.2398"),
            ("content-type", "image/jpeg"),
        ],
        &jpeg,
    );
    assert_eq!(status, 202, "{body}");
    let v = stored(&hub, "mode-binary");
    assert_eq!(v["camera"], "钱江-17");
    assert_eq!(v["grid"], "yingfeng/yingyi/2");
    assert_eq!(v["datacontenttype"], "image/jpeg");
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(v["data_base64"].as_str().unwrap())
            .unwrap(),
        jpeg
    );

    // And out again, binary mode, to the department: the same bytes and
    // attributes.
    let got = receiver.wait_for(4, Duration::from_secs(10));
    let r = got
        .iter()
        .find(|r| r.header("ce-id") == Some("mode-binary"))
        .unwrap();
    assert_eq!(r.body, jpeg);
    assert_eq!(r.header("ce-camera"), Some("%E9%92%B1%E6%B1%9F-17"));
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    let r = got
        .iter()
        .find(|r| r.header("ce-id") == Some("mode-structured"))
        .unwrap();
    let back = govhub_sdk::cloudevents::from_binary(
        r.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        &r.body,
    )
    .unwrap();
    assert_eq!(govhub_sdk::cloudevents::to_json(&back), structured);
}

#[test]
fn invalid_inputs_get_a_status_and_a_message_naming_the_cause() {
    let dir = HubDir::new(
        &[],
        "[auth]\ningest_token_env = \"GOVHUB_TEST_INGEST_TOKEN\"\nadmin_token_env = \"GOVHUB_TEST_ADMIN\"\n",
    );
    let hub = dir.start_with_env(&[
        ("GOVHUB_TEST_INGEST_TOKEN", "s3cret"),
        ("GOVHUB_TEST_ADMIN", "adm1n"),
        ("GOVHUB__SERVER__MAX_BODY_BYTES", "4096"),
    ]);
    let auth = ("authorization", "Bearer s3cret");
    let structured = ("content-type", "application/cloudevents+json");
    let ok = cloudevent("fine", None, 8);
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut e = ok.clone();
        f(&mut e);
        e.to_string()
    };
    // (headers, body, expected status, text the problem must contain)
    type Case<'a> = (Vec<(&'a str, &'a str)>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![structured], ok.to_string(), 401, "authorization"),
        (
            vec![auth, structured],
            with(&|e| {
                e.as_object_mut().unwrap().remove("specversion");
            }),
            400,
            "`specversion`",
        ),
        (
            vec![auth, structured],
            with(&|e| e["specversion"] = "0.3".into()),
            400,
            "`0.3` is not supported",
        ),
        (
            vec![auth, structured],
            with(&|e| {
                e.as_object_mut().unwrap().remove("id");
            }),
            400,
            "`id`",
        ),
        (
            vec![auth, structured],
            with(&|e| e["source"] = 7.into()),
            400,
            "`source`",
        ),
        (
            vec![auth, structured],
            with(&|e| e["time"] = "yesterday".into()),
            400,
            "`time`",
        ),
        (
            vec![auth, structured],
            with(&|e| e["severity"] = "apocalyptic".into()),
            400,
            "`severity`",
        ),
        (
            vec![auth, structured],
            with(&|e| e["lat"] = "91.5".into()),
            400,
            "`lat`",
        ),
        (
            vec![auth, structured],
            with(&|e| e["Bad_Ext"] = "x".into()),
            400,
            "`Bad_Ext`",
        ),
        (
            vec![auth, structured],
            with(&|e| e["data_base64"] = "AA==".into()),
            400,
            "`data_base64`",
        ),
        (vec![auth, structured], "{not json".into(), 400, "not JSON"),
        (
            vec![auth, ("content-type", "application/cloudevents-batch+json")],
            format!(
                "[{}, {}]",
                ok,
                with(&|e| {
                    e.as_object_mut().unwrap().remove("type");
                })
            ),
            400,
            "`[1].type`",
        ),
        (
            vec![auth, ("content-type", "application/json")],
            ok.to_string(),
            415,
            "content-type",
        ),
        (
            vec![
                auth,
                ("ce-specversion", "1.0"),
                ("ce-id", "b"),
                ("ce-source", "s"),
                ("ce-type", "t"),
                ("ce-time", "noon"),
            ],
            String::new(),
            400,
            "`time`",
        ),
        (
            vec![auth, structured],
            with(&|e| e["data"]["text"] = "x".repeat(5000).into()),
            413,
            "server.max_body_bytes (4096 bytes)",
        ),
    ];
    for (headers, body, status, cause) in cases {
        let (got, ct, answer) = post(&hub.url("/v1/events"), &headers, body.as_bytes());
        assert_eq!(got, status, "{cause}: {answer}");
        assert_eq!(ct, "application/problem+json", "{cause}");
        assert!(answer.contains(cause), "expected `{cause}` in {answer}");
    }
    // Nothing invalid was stored; the valid event, sent properly, is.
    let (status, _, _) = post(
        &hub.url("/v1/events"),
        &[auth, structured],
        ok.to_string().as_bytes(),
    );
    assert_eq!(status, 202);
    // The sender (the ingest shorthand) only sends: it reads nothing, and
    // reading needs a principal. The admin sees the valid event stored and
    // nothing of the invalid ones.
    assert_eq!(get_with(&hub.url("/v1/events/fine"), &[auth]).0, 404);
    assert_eq!(
        get(&hub.url("/v1/events/fine")).0,
        401,
        "reading needs a principal"
    );
    let admin = ("authorization", "Bearer adm1n");
    assert_eq!(get_with(&hub.url("/v1/events/fine"), &[admin]).0, 200);
    assert_eq!(get_with(&hub.url("/v1/events/b"), &[admin]).0, 404);
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_loses_nothing_accepted() {
    let receiver = Receiver::start();
    receiver.answer(503);
    let dir = HubDir::new(
        &[webhook_to(&receiver, "")],
        &format!("{FAST_RETRIES}queue_depth = 5\n"),
    );
    let hub = dir.start();
    let mut accepted = HashSet::new();
    let mut refused = None;
    for i in 0..20 {
        let id = format!("bp-{i}");
        let (status, ct, body) = send_event(&hub.base, &cloudevent(&id, None, 16)).unwrap();
        match status {
            202 => {
                accepted.insert(id);
            }
            503 => {
                assert_eq!(ct, "application/problem+json");
                assert!(
                    body.contains("delivery queue of adapter `webhook` is full"),
                    "{body}"
                );
                refused = Some(body);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused.is_some(), "the queue never filled");
    assert_eq!(accepted.len(), 5);
    // Retry-After is set.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .post(&hub.url("/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .send(cloudevent("bp-late", None, 16).to_string())
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers().get("retry-after").unwrap(), "5");
    receiver.answer(200);
    receiver.wait_for_ids("the department", &accepted, Duration::from_secs(30));
    // Drained: accepted again.
    hub.wait_until("/v1/events/bp-4", Duration::from_secs(10), |v| {
        v["deliveries"][0]["status"] == "delivered"
    });
    let (status, _, _) = send_event(&hub.base, &cloudevent("bp-after", None, 16)).unwrap();
    assert_eq!(status, 202);
}

#[test]
fn rejected_and_exhausted_deliveries_become_dead_letters_that_replay() {
    let receiver = Receiver::start();
    receiver.answer(422);
    let dir = HubDir::new(
        &[webhook_to(&receiver, "")],
        "[delivery]\nmax_attempts = 3\nbackoff_base_ms = 10\nbackoff_cap_ms = 20\n",
    );
    let hub = dir.start();
    send_event(&hub.base, &cloudevent("refused", None, 16)).unwrap();
    let v = hub.wait_until("/v1/events/refused", Duration::from_secs(10), |v| {
        v["deliveries"][0]["status"] == "dead"
    });
    assert_eq!(
        v["deliveries"][0]["attempts"], 1,
        "rejected is never retried: {v}"
    );
    receiver.answer(503);
    send_event(&hub.base, &cloudevent("exhausted", None, 16)).unwrap();
    let v = hub.wait_until("/v1/events/exhausted", Duration::from_secs(10), |v| {
        v["deliveries"][0]["status"] == "dead"
    });
    assert_eq!(v["deliveries"][0]["attempts"], 3, "{v}");

    let (status, v) = hub.get_json("/v1/dead-letters");
    assert_eq!(status, 200);
    let dead = v["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 2, "{v}");
    let refused = dead.iter().find(|d| d["event_id"] == "refused").unwrap();
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap()
            .contains("rejected: department answered 422"),
        "{refused}"
    );
    let exhausted = dead.iter().find(|d| d["event_id"] == "exhausted").unwrap();
    assert!(
        exhausted["last_error"].as_str().unwrap().contains("503"),
        "{exhausted}"
    );

    receiver.answer(200);
    let id = refused["id"].as_i64().unwrap();
    let (status, _, body) = post(&hub.url(&format!("/v1/dead-letters/{id}/replay")), &[], b"");
    assert_eq!(status, 202, "{body}");
    receiver.wait_for(1, Duration::from_secs(10));
    hub.wait_until("/v1/events/refused", Duration::from_secs(10), |v| {
        v["deliveries"][0]["status"] == "delivered"
    });
    let (status, _, body) = post(&hub.url(&format!("/v1/dead-letters/{id}/replay")), &[], b"");
    assert_eq!(status, 404, "replayed already: {body}");
    assert_eq!(
        hub.get_json("/v1/dead-letters").1["dead_letters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn sigterm_lets_calls_in_flight_finish_and_leaves_the_rest_pending() {
    let receiver = Receiver::start();
    receiver.delay(700);
    let dir = HubDir::new(&[webhook_to(&receiver, "[limits]\nconcurrency = 1")], "");
    let mut hub = dir.start();
    // Two events of one case: the second waits for the first.
    for id in ["term-1", "term-2"] {
        let (status, _, _) = send_event(&hub.base, &cloudevent(id, Some("case-term"), 16)).unwrap();
        assert_eq!(status, 202);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.arrivals() == 0 {
        assert!(
            Instant::now() < deadline,
            "the first delivery never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = hub.terminate(Duration::from_secs(15));
    eprintln!("SIGTERM to exit: {took:?}");
    // The call in flight finished...
    assert_eq!(receiver.ce_ids(), ["term-1"]);
    hub.wait_log("shutdown requested", Duration::from_secs(10));
    // ...and after a restart term-1 is delivered and term-2 resumes.
    receiver.delay(0);
    let hub = dir.start();
    let v = hub.get_json("/v1/events/term-1").1;
    assert_eq!(v["deliveries"][0]["status"], "delivered", "{v}");
    assert_eq!(v["deliveries"][0]["attempts"], 1, "{v}");
    receiver.wait_for(2, Duration::from_secs(10));
    assert_eq!(receiver.ce_ids(), ["term-1", "term-2"]);
}

#[test]
fn get_event_shows_the_stored_event_and_each_delivery() {
    let receiver = Receiver::start();
    let dir = HubDir::new(
        &[
            webhook_to(&receiver, ""),
            AdapterSpec::new("police", "police-adapter"),
        ],
        "[[routes]]\nname = \"water\"\nmatch = { category = \"safety\" }\nto = [\"police\"]\n",
    );
    let hub = dir.start();
    send_event(&hub.base, &cloudevent("status-1", Some("case-s"), 16)).unwrap();
    let v = hub.wait_until("/v1/events/status-1", Duration::from_secs(10), |v| {
        v["deliveries"].as_array().is_some_and(|d| {
            d.iter()
                .any(|d| d["target"] == "webhook" && d["status"] == "delivered")
                && d.iter()
                    .any(|d| d["target"] == "police" && d["last_error"].is_string())
        })
    });
    assert_eq!(v["event"]["id"], "status-1");
    assert_eq!(v["event"]["caseid"], "case-s");
    assert!(v["received_at"].is_string());
    let deliveries = v["deliveries"].as_array().unwrap();
    let police = deliveries.iter().find(|d| d["target"] == "police").unwrap();
    let webhook = deliveries
        .iter()
        .find(|d| d["target"] == "webhook")
        .unwrap();
    assert_eq!(police["rule"], "route: water");
    assert_eq!(webhook["rule"], "subscription: gov.*");
    assert_eq!(webhook["status"], "delivered");
    assert!(
        webhook["delivered_at"].is_string() && webhook["attempts"] == 1,
        "{webhook}"
    );
    // The police adapter has no base_url configured: unavailable, so it is
    // pending a retry, and its error names the missing key.
    assert_eq!(police["status"], "pending", "{police}");
    assert!(police["next_attempt_at"].is_string(), "{police}");
    assert!(
        police["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("base_url"),
        "{police}"
    );
    assert_eq!(hub.get_json("/v1/events/nope").0, 404);
}

fn hostile() -> AdapterSpec {
    AdapterSpec::new("hostile", "fixture-hostile").tables("[limits]\nconcurrency = 2")
}

fn ingest_hostile(hub: &HubProcess, body: &str) -> (u16, serde_json::Value) {
    let (status, _, answer) = post(&hub.url("/v1/ingest/hostile"), &[], body.as_bytes());
    (status, serde_json::from_str(&answer).unwrap_or_default())
}

#[test]
fn adapter_state_persists_across_instances_and_restarts() {
    let dir = HubDir::new(&[hostile()], "");
    {
        let hub = dir.start();
        for n in 1..=3 {
            let (status, v) = ingest_hostile(&hub, "count");
            assert_eq!(status, 202, "{v}");
            assert_eq!(v["accepted"][0]["id"], format!("count-{n}"));
        }
        // A trap replaces the instance; the state is the adapter's, not the
        // instance's.
        assert_eq!(ingest_hostile(&hub, "panic").0, 502);
        assert_eq!(
            ingest_hostile(&hub, "count").1["accepted"][0]["id"],
            "count-4"
        );
        let (status, v) = ingest_hostile(&hub, "bigstate");
        assert_eq!(status, 400, "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains("the limit is 65536"),
            "{v}"
        );
    }
    let hub = dir.start();
    assert_eq!(
        ingest_hostile(&hub, "count").1["accepted"][0]["id"],
        "count-5"
    );
}

#[test]
fn poll_pulls_events_and_its_cursor_survives_a_restart() {
    let receiver = Receiver::start();
    let dir = HubDir::new(
        &[
            hostile().top("poll_interval_ms = 50"),
            webhook_to(&receiver, ""),
        ],
        "",
    );
    let parse = |id: &str| -> (u64, u64) {
        let parts: Vec<&str> = id.split('-').collect();
        (parts[1].parse().unwrap(), parts[3].parse().unwrap())
    };
    let polled = |r: &Receiver| -> Vec<(u64, u64)> {
        r.ce_ids()
            .iter()
            .filter(|id| id.starts_with("poll-"))
            .map(|id| parse(id))
            .collect()
    };
    let mut hub = dir.start();
    eventually(Duration::from_secs(20), || {
        match polled(&receiver).len() >= 3 {
            true => Ok(()),
            false => Err("polls never arrived".to_string()),
        }
    });
    hub.terminate(Duration::from_secs(15));
    let mut before = polled(&receiver);
    // Events without a case may arrive in any order.
    before.sort_by_key(|(_, call)| *call);
    let (max_n, max_call) = before
        .iter()
        .fold((0, 0), |(n, c), (a, b)| (n.max(*a), c.max(*b)));
    // Each poll got the cursor the previous one returned.
    for (i, (n, call)) in before.iter().enumerate() {
        assert_eq!((*n, *call), (i as u64 + 1, i as u64 + 1), "{before:?}");
    }
    let _hub = dir.start();
    let first_after = eventually(Duration::from_secs(20), || {
        polled(&receiver)
            .into_iter()
            .find(|(_, c)| *c > max_call)
            .ok_or_else(|| "no poll after the restart".to_string())
    });
    // The restarted hub went on from the stored cursor, not from the start.
    assert!(
        first_after.0 >= max_n,
        "restarted at {first_after:?} after {max_n}"
    );
}
