//! What an integrator does with `govhub adapter`: scaffold a crate, build
//! it, inspect a module, and run its ingest and deliver offline.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

#[test]
fn inspect_prints_the_world_and_what_the_adapter_says() {
    let police = wasm("police-adapter");
    let (ok, out, err) = govhub(&["adapter", "inspect", police.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("implements:    govhub:adapter/handler@0.1.0"),
        "{out}"
    );
    assert!(out.contains("name:          police"), "{out}");
    assert!(
        out.contains("police station computer-aided dispatch"),
        "{out}"
    );
    assert!(out.contains(&sha256(&police)), "{out}");
    assert!(out.contains("wasi:http/outgoing-handler@0.2.12"), "{out}");

    let webhook = wasm("webhook-adapter");
    let (ok, out, err) = govhub(&["adapter", "inspect", "--json", webhook.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["describe"]["name"], "webhook");
    assert_eq!(v["world"], "govhub:adapter/handler@0.1.0");
    assert_eq!(v["sha256"], sha256(&webhook));
}

#[test]
fn test_ingest_prints_normalized_cloudevents() {
    let police = wasm("police-adapter");
    let sample = root().join("adapters/police/samples/incident-river.json");
    let (ok, out, err) = govhub(&[
        "adapter",
        "test",
        police.to_str().unwrap(),
        "--ingest",
        sample.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = &events[0];
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["type"], "gov.incident.reported");
    assert_eq!(e["id"], "330102-20250801-0042");
    assert_eq!(e["category"], "safety.water");
    assert_eq!(e["severity"], "critical");
    assert_eq!(
        e["data"]["description"],
        "台风预警期间，有人驾驶小船进入钱塘江江面"
    );

    // A malformed sample: the adapter's typed error, naming the field.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), r#"{"incident_no": "1"}"#).unwrap();
    let (ok, _, err) = govhub(&[
        "adapter",
        "test",
        police.to_str().unwrap(),
        "--ingest",
        bad.path().to_str().unwrap(),
        "--header",
        "content-type: application/json",
    ]);
    assert!(!ok);
    assert!(
        err.contains("invalid input") && err.contains("call_time"),
        "{err}"
    );
}

#[test]
fn test_ingest_reads_a_binary_cloudevent_with_headers() {
    let webhook = wasm("webhook-adapter");
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), "西门拥堵").unwrap();
    let (ok, out, err) = govhub(&[
        "adapter",
        "test",
        webhook.to_str().unwrap(),
        "--ingest",
        body.path().to_str().unwrap(),
        "--header",
        "ce-specversion:1.0",
        "--header",
        "ce-id:w-1",
        "--header",
        "ce-source:urn:grid-app",
        "--header",
        "ce-type:gov.incident.reported",
        "--header",
        "ce-grid:yingfeng%2Fyingyi%2F2",
        "--header",
        "content-type:text/plain; charset=utf-8",
    ]);
    assert!(ok, "{err}");
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events[0]["grid"], "yingfeng/yingyi/2");
    assert_eq!(events[0]["data"], "西门拥堵");
}

#[test]
fn test_deliver_reaches_only_the_allowed_host() {
    let receiver = Receiver::start();
    let police = wasm("police-adapter");
    let event = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        event.path(),
        r#"{"specversion":"1.0","id":"evt-9","source":"urn:govhub:hub","type":"gov.incident.dispatched",
            "category":"safety.water","severity":"critical","caseid":"case-9",
            "data":{"address":"望江门江堤","description":"有人在江中"}}"#,
    )
    .unwrap();
    let base = format!("base_url=http://{}", receiver.host());
    let args = |allow: &str| {
        vec![
            "adapter".to_string(),
            "test".into(),
            police.to_string_lossy().into_owned(),
            "--deliver".into(),
            event.path().to_string_lossy().into_owned(),
            "--config".into(),
            base.clone(),
            "--allow-host".into(),
            allow.into(),
        ]
    };
    // Not allowed: refused, nothing reaches the department.
    let denied = args("127.0.0.1:1");
    let (ok, _, err) = govhub(&denied.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok);
    assert!(
        err.contains(&format!("outbound HTTP to `{}` denied", receiver.host())),
        "{err}"
    );
    assert!(receiver.received().is_empty());

    let allowed = args(&receiver.host());
    let (ok, out, err) = govhub(&allowed.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    assert!(out.contains("\"delivered\": true"), "{out}");
    let got = receiver.wait_for(1, Duration::from_secs(5));
    assert_eq!(got[0].path, "/dispatch");
    assert_eq!(got[0].header("idempotency-key"), Some("evt-9"));
    let dispatch: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(dispatch["category_code"], "0304");
    assert_eq!(dispatch["priority"], 1);
    assert_eq!(dispatch["case_id"], "case-9");
}

#[test]
fn a_scaffolded_adapter_builds_passes_its_test_and_runs_in_the_hub() {
    let work = tempfile::tempdir().unwrap();
    let crate_dir = work.path().join("river-sensor");
    let (ok, out, err) = govhub(&[
        "adapter",
        "new",
        "river-sensor",
        "--dir",
        crate_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("cargo build --target wasm32-wasip2 --release"),
        "{out}"
    );
    // Shared between runs so only the first run pays for the dependencies.
    let target = root().join("target/scaffold");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["test", "--quiet"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(status.success(), "the scaffold's own tests fail");
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the scaffold does not build for wasm32-wasip2"
    );
    let module = target.join("wasm32-wasip2/release/river_sensor_adapter.wasm");
    let (ok, out, err) = govhub(&[
        "adapter",
        "test",
        module.to_str().unwrap(),
        "--ingest",
        crate_dir.join("samples/report.json").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events[0]["id"], "R-1");
    assert_eq!(events[0]["source"], "urn:govhub:river-sensor");
    // Its manifest template names the module it builds.
    let manifest = std::fs::read_to_string(crate_dir.join("river-sensor.toml")).unwrap();
    assert!(
        manifest.contains("wasm = \"river_sensor_adapter.wasm\""),
        "{manifest}"
    );
}

#[test]
fn adapter_new_refuses_bad_names_and_existing_folders() {
    let work = tempfile::tempdir().unwrap();
    let (ok, _, err) = govhub(&[
        "adapter",
        "new",
        "Bad_Name",
        "--dir",
        work.path().join("x").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("adapter name"), "{err}");
    std::fs::write(work.path().join("file"), "x").unwrap();
    let (ok, _, err) = govhub(&[
        "adapter",
        "new",
        "fine",
        "--dir",
        work.path().to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("not empty"), "{err}");
}
