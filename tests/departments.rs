//! The departments of the Yingfeng deployment, each through its adapter to
//! its mock department system and back, and the two stories end to end.

mod support;

use std::time::Duration;
use support::*;

/// Posts a CloudEvent from an outside system (so no adapter is its origin).
fn report(d: &Deployment, id: &str, category: &str, extra: serde_json::Value) -> String {
    let mut e = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:test:departments",
        "type": "gov.incident.reported",
        "category": category,
        "severity": "major",
        "grid": "yingfeng/wangjiang/1",
        "data": { "description": format!("test report {id}"), "address": "望江家园" },
    });
    if let (Some(obj), Some(more)) = (e.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            obj.insert(k.clone(), v.clone());
        }
    }
    let (status, _, body) = send_event(&d.hub.base, &e).unwrap();
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["accepted"][0]["caseid"].as_str().unwrap().to_string()
}

/// Waits until `department` of `case` has reached `stage`.
fn wait_stage(d: &Deployment, case: &str, department: &str, stage: &str) -> serde_json::Value {
    d.hub
        .wait_until(&format!("/v1/cases/{case}"), Duration::from_secs(20), |c| {
            c["departments"].as_array().is_some_and(|ds| {
                ds.iter()
                    .any(|x| x["name"] == department && x["stage"] == stage)
            })
        })
}

#[test]
fn police_traffic_fire_and_the_four_platforms_round_trip() {
    let d = Deployment::start();
    // Police: a public-order report → a CAD dispatch → the CAD reports back.
    let case = report(
        &d,
        "rt-police",
        "safety.public-order",
        serde_json::json!({}),
    );
    let dispatch = &d.mock.wait_received("police", &case)[0];
    assert_eq!(dispatch["path"], "/police/dispatch");
    assert_eq!(dispatch["headers"]["idempotency-key"], "rt-police");
    let body: serde_json::Value = serde_json::from_str(dispatch["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["category_code"], "0101");
    for s in ["accepted", "on_scene", "resolved"] {
        d.mock.report("police", &case, s);
    }
    wait_stage(&d, &case, "police", "resolved");
    // The four platforms got the same report, as a task of 综治工作.
    let task = &d.mock.wait_received("four-platforms", &case)[0];
    assert_eq!(task["path"], "/four-platforms/platforms/zongzhi/tasks");
    d.mock.report("four-platforms", &case, "handled");
    let c = wait_stage(&d, &case, "four-platforms", "resolved");
    d.hub
        .wait_until(&format!("/v1/cases/{case}"), Duration::from_secs(20), |c| {
            c["status"] == "closed"
        });
    assert!(c["timeline"].as_array().unwrap().len() >= 4, "{c}");

    // Traffic: illegal parking → a joint-rectification task → done.
    let case = report(&d, "rt-traffic", "traffic.parking", serde_json::json!({}));
    let task = &d.mock.wait_received("traffic", &case)[0];
    assert_eq!(task["path"], "/traffic/tasks");
    d.mock.report("traffic", &case, "accepted");
    d.mock.report("traffic", &case, "done");
    wait_stage(&d, &case, "traffic", "resolved");

    // Fire: smoke → the fire station (and the platforms) → extinguished.
    let case = report(&d, "rt-fire", "fire.smoke", serde_json::json!({}));
    let incident = &d.mock.wait_received("fire", &case)[0];
    assert_eq!(incident["path"], "/fire/incidents");
    d.mock.report("fire", &case, "dispatched");
    d.mock.report("fire", &case, "arrived");
    d.mock.report("fire", &case, "extinguished");
    wait_stage(&d, &case, "fire", "resolved");
    // The four platforms verify: the case closes even before they handled it.
    d.mock.wait_received("four-platforms", &case);
    d.mock.report("four-platforms", &case, "verified");
    let c = d
        .hub
        .wait_until(&format!("/v1/cases/{case}"), Duration::from_secs(20), |c| {
            c["status"] == "closed"
        });
    assert_eq!(c["close_reason"], "verified by four-platforms");
}

#[test]
fn the_city_gets_an_open311_request_and_the_hub_polls_its_status() {
    let d = Deployment::start();
    let case = report(
        &d,
        "rt-city",
        "city.sanitation",
        serde_json::json!({"lat": "30.2447", "lon": "120.1921", "grid": null}),
    );
    let posted = &d.mock.wait_received("city", &case)[0];
    assert_eq!(posted["path"], "/city/requests.xml");
    let form = posted["body"].as_str().unwrap();
    assert!(form.contains("service_code=002"), "{form}");
    assert!(
        form.contains(&format!("attribute%5Bgovhub_case%5D={case}")),
        "{form}"
    );
    // The poll sees it open: accepted. Then the city closes it.
    wait_stage(&d, &case, "city-management", "accepted");
    d.mock.report("city", &case, "closed");
    let c = wait_stage(&d, &case, "city-management", "resolved");
    assert_eq!(c["status"], "closed");
    // The hub placed the report by its coordinates.
    assert_eq!(c["grid"], "yingfeng/chaoyang/1");
}

#[test]
fn the_village_committee_joins_through_the_webhook() {
    let d = Deployment::start();
    let case = report(
        &d,
        "rt-village",
        "traffic.congestion",
        serde_json::json!({}),
    );
    let got = &d.mock.wait_received("village", &case)[0];
    assert_eq!(got["headers"]["ce-type"], "gov.incident.reported");
    assert_eq!(got["headers"]["ce-id"], "rt-village");
    d.mock.report("village", &case, "accepted");
    d.mock.report("village", &case, "resolved");
    wait_stage(&d, &case, "village", "resolved");
}

#[test]
fn video_patrol_detections_are_placed_on_the_grid_map_and_cap_alerts_go_out() {
    let d = Deployment::start();
    let (status, _, body) = post(
        &d.hub.url("/v1/ingest/video-patrol"),
        &[("content-type", "application/json")],
        include_bytes!("../adapters/video-patrol/samples/detection-river.json"),
    );
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let case = v["accepted"][0]["caseid"].as_str().unwrap().to_string();
    let c = d.hub.wait_until(
        &format!("/v1/cases/{case}"),
        Duration::from_secs(10),
        |_| true,
    );
    // cam-qjd-17 stands in sub-grid 2 of the yingyi community.
    assert_eq!(c["grid"], "yingfeng/yingyi/2");
    assert_eq!(
        c["open_departments"],
        serde_json::json!(["police", "four-platforms"])
    );
    d.mock.wait_received("police", &case);

    // A place outside every grid falls to the street, flagged.
    let outside = serde_json::json!({
        "specversion": "1.0", "id": "far-away", "source": "urn:test", "type": "gov.alert.issued",
        "lat": "30.30", "lon": "120.30",
    });
    send_event(&d.hub.base, &outside).unwrap();
    let (_, v) = d.hub.get_json("/v1/events/far-away");
    assert_eq!(v["event"]["grid"], "yingfeng");
    assert_eq!(v["event"]["gridflag"], "outside-map");

    // A CAP typhoon warning reaches the platforms and the command center.
    let (status, _, body) = post(
        &d.hub.url("/v1/ingest/video-patrol"),
        &[("content-type", "application/cap+xml")],
        include_bytes!("../adapters/video-patrol/samples/typhoon-warning.xml"),
    );
    assert_eq!(status, 202, "{body}");
    eventually(Duration::from_secs(20), || {
        let records = d.mock.records();
        let has = |dept: &str, path: &str| {
            records.iter().any(|r| {
                r["department"] == dept
                    && r["path"] == path
                    && r["body"]
                        .as_str()
                        .is_some_and(|b| b.contains("HZ-MET-20250801-TY09"))
                    || (r["department"] == dept && r["headers"]["ce-id"] == "HZ-MET-20250801-TY09")
            })
        };
        match has("four-platforms", "/four-platforms/alerts")
            && has("street-command", "/street-command/events")
        {
            true => Ok(()),
            false => Err("the CAP alert was not delivered".to_string()),
        }
    });
    let (_, v) = d.hub.get_json("/v1/events/HZ-MET-20250801-TY09");
    assert_eq!(
        v["event"]["grid"], "yingfeng/qianjiang/1",
        "the warning's centroid is on the river bank"
    );
}

#[test]
fn both_stories_replay_with_govhub_demo() {
    let out = std::process::Command::new(govhub_bin())
        .args(["demo", "--wasm-dir"])
        .arg(wasm_dir())
        .arg("--mock")
        .arg(env!("CARGO_BIN_EXE_mock-departments"))
        .env("GOVHUB_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "story 1: typhoon river patrol",
        "safety.water (critical), grid yingfeng/yingyi/2, closed, on time",
        "got it: police",
        "gov.incident.on-scene    police",
        "story 2: e-trike congestion",
        "traffic.congestion (major), grid yingfeng/yingyi/2, closed, on time",
        "got it: village",
        "18:05:00  gov.case.closed",
        "both cases closed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
    // One report as two departments received it: the police everything in
    // the clear (its dispatch carries no reporter's name to show); the
    // village committee the grid worker's name masked, the photos
    // dropped, the place generalized to its grid.
    let views: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("the report as two departments received it"))
        .skip(1)
        .take(2)
        .collect();
    assert_eq!(views.len(), 2, "{stdout}");
    let police = views[0].trim_start();
    let village = views[1].trim_start();
    assert!(police.starts_with("police "), "{police}");
    for expected in ["/worker/name clear", "/photos clear", "@lat clear"] {
        assert!(police.contains(expected), "missing `{expected}`: {police}");
    }
    assert!(
        !police.contains("mask") && !police.contains("drop") && !police.contains("generalize"),
        "{police}"
    );
    assert!(village.starts_with("village "), "{village}");
    for expected in [
        "/worker/name mask",
        "/photos drop",
        "@lat generalize",
        "@lon generalize",
        "the grid worker reached it as 「管**」",
    ] {
        assert!(
            village.contains(expected),
            "missing `{expected}`: {village}"
        );
    }
    assert!(
        !stdout.contains("管九阳"),
        "the worker's name in the clear: {stdout}"
    );
}
