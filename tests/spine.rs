//! The spine end to end: the real `govhub` binary, the shipped adapters
//! built for wasm32-wasip2, and hostile adapters that must not get out of
//! their sandbox.

mod support;

use std::time::{Duration, Instant};
use support::*;

const RIVER: &str = include_str!("../adapters/police/samples/incident-river.json");

fn police() -> AdapterSpec {
    AdapterSpec::new("police", "police-adapter")
}

fn webhook_to(receiver: &Receiver) -> AdapterSpec {
    AdapterSpec::new("webhook", "webhook-adapter").tables(&format!(
        "[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"http://{host}/events\"",
        host = receiver.host()
    ))
}

fn hostile(deadline_ms: u64) -> AdapterSpec {
    AdapterSpec::new("hostile", "fixture-hostile").tables(&format!(
        "[limits]\nmemory_mb = 64\ndeadline_ms = {deadline_ms}\nconcurrency = 2"
    ))
}

const RIVER_ROUTE: &str = r#"
[[routes]]
name = "people on the river during a typhoon"
match = { type = "gov.incident.*", category = "safety.water" }
to = ["webhook"]
"#;

#[test]
fn police_report_reaches_the_webhook_receiver_as_a_cloudevent() {
    let receiver = Receiver::start();
    let dir = HubDir::new(&[police(), webhook_to(&receiver)], RIVER_ROUTE);
    let hub = dir.start();

    let (status, ct, body) = post(
        &hub.url("/v1/ingest/police"),
        &[("content-type", "application/json")],
        RIVER.as_bytes(),
    );
    assert_eq!(status, 202, "{ct} {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["accepted"][0]["id"], "330102-20250801-0042");
    assert_eq!(
        answer["accepted"][0]["targets"][0]["rule"],
        "route: people on the river during a typhoon"
    );

    let got = receiver.wait_for(1, Duration::from_secs(20));
    let r = &got[0];
    assert_eq!(r.path, "/events");
    // Binary mode: every attribute a ce- header, one by one.
    let expect = [
        ("ce-specversion", "1.0"),
        ("ce-id", "330102-20250801-0042"),
        ("ce-source", "urn:govhub:police"),
        ("ce-type", "gov.incident.reported"),
        ("ce-subject", "330102-20250801-0042"),
        ("ce-time", "2025-08-01T14:05:00+08:00"),
        ("ce-category", "safety.water"),
        ("ce-severity", "critical"),
        ("ce-lat", "30.2398"),
        ("ce-lon", "120.2026"),
        ("content-type", "application/json"),
    ];
    for (name, value) in expect {
        assert_eq!(r.header(name), Some(value), "header {name}");
    }
    let data: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        data["description"],
        "台风预警期间，有人驾驶小船进入钱塘江江面"
    );
    assert_eq!(data["category_code"], "0304");
    assert_eq!(data["incident_no"], "330102-20250801-0042");

    // The same incident again is a duplicate and is not routed again.
    let (status, _, body) = post(
        &hub.url("/v1/ingest/police"),
        &[("content-type", "application/json")],
        RIVER.as_bytes(),
    );
    assert_eq!(status, 202);
    assert!(body.contains("\"duplicate\":true"), "{body}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.received().len(), 1);
}

#[test]
fn malformed_police_payload_is_a_problem_naming_the_field() {
    let dir = HubDir::new(&[police()], "");
    let hub = dir.start();
    let bad = RIVER.replace("30.2398", "\"north\"");
    let (status, ct, body) = post(
        &hub.url("/v1/ingest/police"),
        &[("content-type", "application/json")],
        bad.as_bytes(),
    );
    assert_eq!(status, 400);
    assert_eq!(ct, "application/problem+json");
    assert!(body.contains("coordinates.lat"), "{body}");
    let (status, ct, body) = post(&hub.url("/v1/ingest/nobody"), &[], b"{}");
    assert_eq!((status, ct.as_str()), (404, "application/problem+json"));
    assert!(body.contains("`nobody`"), "{body}");
}

/// Sends `body` to the hostile adapter and returns (status, detail, time).
fn provoke(hub: &HubProcess, body: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let (status, _, answer) = post(&hub.url("/v1/ingest/hostile"), &[], body.as_bytes());
    (status, answer, started.elapsed())
}

/// After each attack the same process still serves: the hostile adapter
/// itself (on a fresh instance) and a healthy one.
fn still_serves(hub: &HubProcess) {
    assert!(hub.healthy());
    let (status, answer, _) = provoke(hub, "behave");
    assert_eq!(status, 202, "{answer}");
    let (status, _, body) = post(
        &hub.url("/v1/ingest/police"),
        &[("content-type", "application/json")],
        RIVER
            .replace("0042", &format!("{}", fastrand::u32(..)))
            .as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
}

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline() {
    let dir = HubDir::new(&[police(), hostile(300)], "");
    let hub = dir.start();
    let (status, detail, took) = provoke(&hub, "loop");
    eprintln!("infinite loop with a 300 ms deadline stopped after {took:?} (HTTP round trip)");
    assert_eq!(status, 504, "{detail}");
    assert!(detail.contains("deadline of 300 ms exceeded"), "{detail}");
    // Generous: the bound is for a loaded 2-core CI machine; the figure is
    // printed above.
    assert!(took < Duration::from_millis(3000), "took {took:?}");
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    still_serves(&hub);
}

#[test]
fn a_1_gib_allocation_is_refused_by_the_memory_cap() {
    let dir = HubDir::new(&[police(), hostile(2000)], "");
    let hub = dir.start();
    let (status, detail, took) = provoke(&hub, "alloc");
    eprintln!("1 GiB allocation against a 64 MiB cap refused after {took:?}");
    assert_eq!(status, 502, "{detail}");
    assert!(detail.contains("memory cap of 64 MiB exceeded"), "{detail}");
    still_serves(&hub);
}

#[test]
fn a_call_outside_the_allowlist_fails_naming_the_host() {
    let receiver = Receiver::start();
    // The hostile adapter may reach nothing; the receiver exists, so only
    // the allowlist can stop the call.
    let dir = HubDir::new(&[police(), hostile(2000)], "");
    let hub = dir.start();
    let (status, detail, _) = provoke(&hub, &format!("http http://{}/steal", receiver.host()));
    assert_eq!(status, 502, "{detail}");
    assert!(
        detail.contains(&format!("outbound HTTP to `{}` denied", receiver.host())),
        "{detail}"
    );
    assert!(receiver.received().is_empty());
    still_serves(&hub);
}

#[test]
fn a_panic_becomes_an_error_with_its_message() {
    let dir = HubDir::new(&[police(), hostile(2000)], "");
    let hub = dir.start();
    let (status, detail, _) = provoke(&hub, "panic");
    assert_eq!(status, 502, "{detail}");
    assert!(
        detail.contains("adapter panicked: hostile adapter panicked on purpose"),
        "{detail}"
    );
    still_serves(&hub);
}

#[test]
fn the_pooling_allocator_and_isolated_calls_serve_end_to_end() {
    let receiver = Receiver::start();
    let isolated = AdapterSpec::new("isolated", "fixture-hostile")
        .tables("[limits]\nmemory_mb = 64\nisolate_calls = true\nconcurrency = 1");
    let pooled = AdapterSpec::new("hostile", "fixture-hostile")
        .tables("[limits]\nmemory_mb = 64\nconcurrency = 1");
    let dir = HubDir::new(
        &[police(), webhook_to(&receiver), isolated, pooled],
        RIVER_ROUTE,
    );
    // Through the environment overrides, as an operator would.
    let hub = dir.start_with_env(&[
        ("GOVHUB__RUNTIME__POOLING_ALLOCATOR", "true"),
        ("GOVHUB__RUNTIME__POOLING_INSTANCES", "20"),
        ("GOVHUB__RUNTIME__POOLING_MAX_MEMORY_MB", "64"),
    ]);
    assert!(hub.log().contains("pooling allocator"), "{}", hub.log());
    // An incident through slots of the pool, to the department.
    let (status, _, body) = post(
        &hub.url("/v1/ingest/police"),
        &[("content-type", "application/json")],
        RIVER.as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    let got = receiver.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].header("ce-id"), Some("330102-20250801-0042"));

    let calls = |adapter: &str, i: usize| -> String {
        let (status, _, body) = post(
            &hub.url(&format!("/v1/ingest/{adapter}")),
            &[],
            format!("instance-calls {i}").as_bytes(),
        );
        assert_eq!(status, 202, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["accepted"][0]["id"].as_str().unwrap().to_string()
    };
    // A fresh instance for every call: nothing left from the one before.
    for i in 0..3 {
        assert_eq!(calls("isolated", i), format!("instance-calls-1-{i}"));
    }
    // A pooled instance keeps its memory from call to call.
    for i in 0..3 {
        assert_eq!(calls("hostile", i), format!("instance-calls-{}-{i}", i + 1));
    }
    // The memory cap holds inside a pool slot.
    let (status, detail, _) = provoke(&hub, "alloc");
    assert_eq!(status, 502, "{detail}");
    assert!(detail.contains("memory cap of 64 MiB exceeded"), "{detail}");
    still_serves(&hub);

    // An adapter that wants more memory than a slot holds is refused by
    // name, before the hub starts.
    let dir = HubDir::new(
        &[AdapterSpec::new("hostile", "fixture-hostile").tables("[limits]\nmemory_mb = 128")],
        "",
    );
    let (ok, _, stderr) = govhub_with_env(
        &["check-config", "--config", dir.config().to_str().unwrap()],
        &[
            ("GOVHUB__RUNTIME__POOLING_ALLOCATOR", "true"),
            ("GOVHUB__RUNTIME__POOLING_MAX_MEMORY_MB", "64"),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("limits.memory_mb = 128")
            && stderr.contains("runtime.pooling_max_memory_mb = 64"),
        "{stderr}"
    );
}

#[test]
fn exhausted_pool_slots_are_a_clear_error_and_free_again() {
    let dir = HubDir::new(&[hostile(600)], "");
    // One slot: the instance the hostile adapter got at load.
    let hub = dir.start_with_env(&[
        ("GOVHUB__RUNTIME__POOLING_ALLOCATOR", "true"),
        ("GOVHUB__RUNTIME__POOLING_INSTANCES", "1"),
        ("GOVHUB__RUNTIME__POOLING_MAX_MEMORY_MB", "64"),
    ]);
    let idle = |n: u32| {
        get(&hub.url("/metrics")).1.contains(&format!(
            "govhub_adapter_instances_idle{{adapter=\"hostile\"}} {n}"
        ))
    };
    assert!(idle(1), "the instance made at load waits idle");
    let looping = {
        let url = hub.url("/v1/ingest/hostile");
        std::thread::spawn(move || post(&url, &[], b"loop"))
    };
    // While the loop holds the only slot (no idle instance left), a second
    // call needs another.
    eventually(Duration::from_secs(10), || match idle(0) {
        true => Ok(()),
        false => Err("the loop never took the slot".to_string()),
    });
    let (status, detail, _) = provoke(&hub, "behave");
    assert_eq!(status, 502, "{detail}");
    assert!(
        detail.contains("\"kind\":\"instantiate\"") && detail.contains("runtime.pooling_instances"),
        "{detail}"
    );
    // The deadline stops the loop, its instance is dropped, the slot is
    // free again.
    assert_eq!(looping.join().unwrap().0, 504);
    let (status, answer, _) = provoke(&hub, "behave");
    assert_eq!(status, 202, "{answer}");
}

#[test]
fn govhub_perf_map_names_the_adapters_compiled_functions() {
    let dir = HubDir::new(&[police()], "");
    let hub = dir.start_with_env(&[("GOVHUB_PERF_MAP", "1")]);
    let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", hub.child.id()));
    let text = std::fs::read_to_string(&map).unwrap_or_default();
    let _ = std::fs::remove_file(&map);
    // perf's format: start, size, name; the police adapter's own ingest.
    assert!(
        text.lines()
            .any(|l| l.split(' ').count() >= 3 && l.contains("police_adapter")),
        "no police function in {}:\n{}",
        map.display(),
        text.lines().take(5).collect::<Vec<_>>().join("\n")
    );
}

/// `govhub check-config` on a folder holding one bad adapter → its error.
fn check_error(setup: impl FnOnce(&std::path::Path)) -> String {
    let dir = HubDir::new(&[], "");
    let adapters = dir.dir.path().join("adapters.d");
    std::fs::create_dir_all(&adapters).unwrap();
    setup(&adapters);
    let (ok, _, stderr) = govhub(&["check-config", "--config", dir.config().to_str().unwrap()]);
    assert!(!ok, "check-config should fail");
    stderr
}

fn manifest_for(dir: &std::path::Path, name: &str, file: &str, sha: &str) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("name = \"{name}\"\nwasm = \"{file}\"\nsha256 = \"{sha}\"\n"),
    )
    .unwrap();
}

#[test]
fn bad_manifests_and_modules_give_named_errors() {
    let police_wasm = wasm("police-adapter");
    let police_sha = sha256(&police_wasm);

    let e = check_error(|d| manifest_for(d, "police", "police.wasm", &police_sha));
    assert!(
        e.contains("adapter `police`: module file") && e.contains("not found"),
        "{e}"
    );

    let e = check_error(|d| {
        std::fs::copy(&police_wasm, d.join("police.wasm")).unwrap();
        manifest_for(d, "police", "police.wasm", &"0".repeat(64));
    });
    assert!(e.contains("sha256 mismatch"), "{e}");
    assert!(
        e.contains(&police_sha),
        "the error shows the file's real hash: {e}"
    );

    let e = check_error(|d| {
        let core = b"\0asm\x01\0\0\0";
        std::fs::write(d.join("core.wasm"), core).unwrap();
        manifest_for(d, "core", "core.wasm", &hex_sha(core));
    });
    assert!(
        e.contains("is a core WebAssembly module, not a component"),
        "{e}"
    );

    let e = check_error(|d| {
        let other = wasm("fixture-not-an-adapter");
        std::fs::copy(&other, d.join("other.wasm")).unwrap();
        manifest_for(d, "other", "other.wasm", &sha256(&other));
    });
    assert!(
        e.contains("does not implement the govhub:adapter world")
            && e.contains("does not export `govhub:adapter/handler@0.1.0`")
            && e.contains("hello"),
        "{e}"
    );

    let e = check_error(|d| {
        let future = wasm("fixture-future-major");
        std::fs::copy(&future, d.join("future.wasm")).unwrap();
        manifest_for(d, "future", "future.wasm", &sha256(&future));
    });
    assert!(
        e.contains("built against govhub:adapter@1.0.0")
            && e.contains("implements govhub:adapter@0.1.0"),
        "{e}"
    );

    let e = check_error(|d| {
        std::fs::write(d.join("text.wasm"), b"not wasm at all").unwrap();
        manifest_for(d, "text", "text.wasm", &hex_sha(b"not wasm at all"));
    });
    assert!(e.contains("is not a WebAssembly file"), "{e}");

    let e = check_error(|d| {
        std::fs::write(d.join("broken.toml"), "name = \"broken\"\nwasm = 3\n").unwrap();
    });
    assert!(e.contains("broken.toml") && e.contains("wasm"), "{e}");
}

fn hex_sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn a_route_to_a_missing_adapter_is_refused_at_start() {
    let dir = HubDir::new(&[police()], RIVER_ROUTE);
    let (ok, _, stderr) = govhub(&["check-config", "--config", dir.config().to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("route `people on the river during a typhoon` sends to adapter `webhook`"),
        "{stderr}"
    );
}

#[test]
fn env_overrides_config_keys() {
    // max_body_bytes from the environment: a small body passes, a larger
    // one gets 413 problem+json.
    let dir = HubDir::new(&[police()], "");
    let hub = dir.start_with_env(&[("GOVHUB__SERVER__MAX_BODY_BYTES", "600")]);
    let (status, _, body) = post(
        &hub.url("/v1/ingest/police"),
        &[("content-type", "application/json")],
        RIVER.as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    let big = RIVER.replace("台风预警期间", &"台风".repeat(200));
    let (status, ct, body) = post(&hub.url("/v1/ingest/police"), &[], big.as_bytes());
    assert_eq!(
        (status, ct.as_str()),
        (413, "application/problem+json"),
        "{body}"
    );
    assert!(body.contains("server.max_body_bytes (600 bytes)"), "{body}");
}
