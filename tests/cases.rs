//! The closed loop end to end: cases opened by reports, closed when every
//! department reports back, escalated up the grid when a deadline passes
//! (on a manual clock the test moves), across a restart.

mod support;

use std::time::Duration;
use support::*;

/// A webhook adapter standing for one department, delivering to `receiver`
/// under `/<name>`.
fn department(name: &str, receiver: &Receiver) -> AdapterSpec {
    AdapterSpec::new(name, "webhook-adapter").tables(&format!(
        "[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"http://{host}/{name}\"",
        host = receiver.host()
    ))
}

const MANUAL_CLOCK: &str = r#"
[cases]
clock = "manual"
clock_start = "2025-08-01T14:00:00+08:00"
default_accept_s = 300
default_resolve_s = 1800
escalation_s = [600, 1200]
"#;

fn report(id: &str, category: &str, severity: &str, grid: &str) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:four-platforms:grid-app",
        "type": "gov.incident.reported",
        "category": category,
        "severity": severity,
        "grid": grid,
        "data": { "text": "电动三轮车堵住小区西门" },
    })
}

/// A department's status as a CloudEvent posted to `/v1/events`.
fn status(hub: &HubProcess, caseid: &str, ty: &str, department: &str, extra: &[(&str, &str)]) {
    let mut e = serde_json::json!({
        "specversion": "1.0",
        "id": format!("{ty}-{department}-{caseid}"),
        "source": format!("urn:dept:{department}"),
        "type": ty,
        "caseid": caseid,
        "department": department,
    });
    for (k, v) in extra {
        e[*k] = (*v).into();
    }
    let (status, _, body) = send_event(&hub.base, &e).unwrap();
    assert_eq!(status, 202, "{body}");
}

/// Posts a report; returns the case id the hub assigned.
fn open_case(hub: &HubProcess, event: &serde_json::Value) -> String {
    let (status, _, body) = send_event(&hub.base, event).unwrap();
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let caseid = v["accepted"][0]["caseid"].as_str().unwrap().to_string();
    hub.wait_until(
        &format!("/v1/cases/{caseid}"),
        Duration::from_secs(10),
        |_| true,
    );
    caseid
}

fn advance(hub: &HubProcess, seconds: i64) {
    let (status, _, body) = post(
        &hub.url("/v1/clock"),
        &[("content-type", "application/json")],
        format!("{{\"advance_s\": {seconds}}}").as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
}

fn case(hub: &HubProcess, id: &str) -> serde_json::Value {
    let (status, v) = hub.get_json(&format!("/v1/cases/{id}"));
    assert_eq!(status, 200, "{v}");
    v
}

#[test]
fn joint_dispatch_closes_only_when_every_department_resolved() {
    let receiver = Receiver::start();
    let dir = HubDir::new(
        &[
            department("traffic", &receiver),
            department("police", &receiver),
            department("village", &receiver),
        ],
        &format!(
            "{MANUAL_CLOCK}\n[[routes]]\nname = \"e-trike congestion\"\nmatch = {{ category = \"traffic.congestion\" }}\nto = [\"traffic\", \"police\", \"village\"]\n"
        ),
    );
    let hub = dir.start();
    let caseid = open_case(
        &hub,
        &report(
            "etrike-1",
            "traffic.congestion",
            "minor",
            "yingfeng/yingyi/2",
        ),
    );
    let c = case(&hub, &caseid);
    assert_eq!(c["status"], "dispatched", "{c}");
    assert_eq!(
        c["open_departments"],
        serde_json::json!(["traffic", "police", "village"])
    );
    // Each department got the report, carrying the case id.
    let got = receiver.wait_for(3, Duration::from_secs(10));
    assert!(got
        .iter()
        .all(|r| r.header("ce-caseid") == Some(caseid.as_str())));

    // The traffic squad reports back through its own adapter (binary
    // CloudEvent on /v1/ingest/traffic: the department is the adapter).
    advance(&hub, 120);
    for ty in ["gov.incident.accepted", "gov.incident.resolved"] {
        let (code, _, body) = post(
            &hub.url("/v1/ingest/traffic"),
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", &format!("traffic-{ty}")),
                ("ce-source", "urn:traffic-squad"),
                ("ce-type", ty),
                ("ce-caseid", &caseid),
            ],
            b"",
        );
        assert_eq!(code, 202, "{body}");
    }
    status(&hub, &caseid, "gov.incident.accepted", "police", &[]);
    status(&hub, &caseid, "gov.incident.on-scene", "police", &[]);
    status(&hub, &caseid, "gov.incident.resolved", "police", &[]);
    let c = hub.wait_until(
        &format!("/v1/cases/{caseid}"),
        Duration::from_secs(10),
        |c| c["open_departments"] == serde_json::json!(["village"]),
    );
    assert_ne!(c["status"], "closed");
    assert_eq!(
        c["status"], "dispatched",
        "the village has not even accepted: {c}"
    );

    advance(&hub, 60);
    status(&hub, &caseid, "gov.incident.accepted", "village", &[]);
    status(&hub, &caseid, "gov.incident.resolved", "village", &[]);
    let c = hub.wait_until(
        &format!("/v1/cases/{caseid}"),
        Duration::from_secs(10),
        |c| c["status"] == "closed",
    );
    assert_eq!(c["close_reason"], "every department resolved it");
    assert_eq!(c["on_time"], true);
    assert_eq!(c["closed_at"], "2025-08-01T06:03:00Z");
    let police = c["departments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "police")
        .unwrap()
        .clone();
    assert_eq!(police["stage"], "resolved");
    assert!(police["on_scene_at"].is_string());
    let timeline: Vec<&str> = c["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(timeline.first(), Some(&"gov.incident.reported"));
    assert!(timeline.contains(&"gov.incident.on-scene"));
    // A second case where the village never answers: it stays open, shows
    // who is missing, and is overdue once the deadline passes.
    let stuck = open_case(
        &hub,
        &report(
            "etrike-2",
            "traffic.congestion",
            "minor",
            "yingfeng/yingyi/2",
        ),
    );
    for d in ["traffic", "police"] {
        status(&hub, &stuck, "gov.incident.accepted", d, &[]);
        status(&hub, &stuck, "gov.incident.resolved", d, &[]);
    }
    hub.wait_until(
        &format!("/v1/cases/{stuck}"),
        Duration::from_secs(10),
        |c| c["open_departments"] == serde_json::json!(["village"]),
    );
    advance(&hub, 1801);
    let c = hub.wait_until(
        &format!("/v1/cases/{stuck}"),
        Duration::from_secs(10),
        |c| c["overdue"] == true && c["level"] == 1,
    );
    assert_ne!(c["status"], "closed");
    assert_eq!(c["open_departments"], serde_json::json!(["village"]));
    let overdue = hub.get_json("/v1/cases?overdue=true").1;
    let ids: Vec<&str> = overdue["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [stuck.as_str()], "the closed case is not overdue");
    // The hub announced the close as an event of the case.
    let (code, closed) = hub.get_json(&format!("/v1/events/closed-{caseid}"));
    assert_eq!(code, 200, "{closed}");
    assert_eq!(closed["event"]["type"], "gov.case.closed");
}

fn escalation_config(receiver: &Receiver) -> (Vec<AdapterSpec>, String) {
    (
        vec![
            department("police", receiver),
            department("community", receiver),
            department("street", receiver),
            department("four-platforms", receiver),
            department("grid-app", receiver),
        ],
        format!(
            r#"{MANUAL_CLOCK}
[[cases.deadlines]]
category = "safety.water"
severity = "major"
accept_s = 300
resolve_s = 900

[[routes]]
name = "people on the river"
match = {{ category = "safety.water" }}
to = ["police"]

[[routes]]
name = "small matters stay in the grid"
match = {{ type = "gov.incident.reported", category = "vendor" }}
to = ["grid-app"]

[[routes]]
name = "escalations go to the four platforms"
match = {{ type = "gov.case.escalated" }}
to = ["four-platforms"]

[[routes]]
name = "first escalation: the community grid"
match = {{ type = "gov.case.escalated", extensions = {{ escalatedto = "community" }} }}
to = ["community"]

[[routes]]
name = "second escalation: the street command center"
match = {{ type = "gov.case.escalated", extensions = {{ escalatedto = "street" }} }}
to = ["street"]
"#
        ),
    )
}

/// Waits until something reached `path`.
fn wait_received_at(receiver: &Receiver, path: &str) {
    eventually(Duration::from_secs(10), || {
        match received_at(receiver, path).is_empty() {
            false => Ok(()),
            true => Err(format!("nothing reached {path}")),
        }
    })
}

fn received_at(receiver: &Receiver, path: &str) -> Vec<Received> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

#[test]
fn an_unanswered_case_escalates_level_by_level_across_a_restart() {
    let receiver = Receiver::start();
    let (adapters, config) = escalation_config(&receiver);
    let dir = HubDir::new(&adapters, &config);
    let caseid;
    {
        let hub = dir.start();
        caseid = open_case(
            &hub,
            &report("river-1", "safety.water", "critical", "yingfeng/yingyi/2"),
        );
        receiver.wait_for(1, Duration::from_secs(10));
        // Police never answers. One second before the deadline: nothing.
        advance(&hub, 299);
        hub.wait_until("/v1/cases?overdue=true", Duration::from_secs(5), |v| {
            v["cases"].as_array().is_some_and(|c| c.is_empty())
        });
        advance(&hub, 1);
        let c = hub.wait_until(
            &format!("/v1/cases/{caseid}"),
            Duration::from_secs(10),
            |c| c["level"] == 1,
        );
        assert_eq!(c["level_name"], "community");
        assert_eq!(c["overdue"], true);
        assert_eq!(c["open_departments"], serde_json::json!(["police"]));
        let escalated = |to: &str| {
            receiver
                .received()
                .into_iter()
                .filter(|r| r.path == to && r.header("ce-type") == Some("gov.case.escalated"))
                .collect::<Vec<_>>()
        };
        eventually(Duration::from_secs(10), || {
            match escalated("/community").is_empty() || escalated("/four-platforms").is_empty() {
                false => Ok(()),
                true => Err("escalation not delivered".to_string()),
            }
        });
        let to_community = &escalated("/community")[0];
        assert_eq!(to_community.header("ce-grid"), Some("yingfeng/yingyi"));
        assert_eq!(to_community.header("ce-caseid"), Some(caseid.as_str()));
        assert!(escalated("/street").is_empty());
        let listed = hub
            .get_json("/v1/cases?overdue=true&grid=yingfeng/yingyi")
            .1;
        assert_eq!(listed["cases"][0]["id"], caseid.as_str());
    }
    // Restart: the level, the deadlines and the clock are where they were.
    let hub = dir.start();
    let c = case(&hub, &caseid);
    assert_eq!(c["level"], 1, "{c}");
    advance(&hub, 599);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(case(&hub, &caseid)["level"], 1);
    advance(&hub, 1);
    let c = hub.wait_until(
        &format!("/v1/cases/{caseid}"),
        Duration::from_secs(10),
        |c| c["level"] == 2,
    );
    assert_eq!(c["level_name"], "street");
    wait_received_at(&receiver, "/street");
    assert_eq!(
        received_at(&receiver, "/street")[0].header("ce-grid"),
        Some("yingfeng")
    );
    // The escalation events come back through the journal onto the
    // timeline.
    let notes = |c: &serde_json::Value| -> Vec<String> {
        c["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["note"].as_str().map(str::to_string))
            .collect()
    };
    let c = hub.wait_until(
        &format!("/v1/cases/{caseid}"),
        Duration::from_secs(10),
        |c| {
            notes(c)
                .iter()
                .any(|n| n == "escalated to the street level")
        },
    );
    assert!(
        notes(&c)
            .iter()
            .any(|n| n == "escalated to the community level"),
        "{:?}",
        notes(&c)
    );
    // The street is the top: no third escalation.
    advance(&hub, 100_000);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(case(&hub, &caseid)["level"], 2);
    // Police finally resolves: the loop closes, late.
    status(&hub, &caseid, "gov.incident.resolved", "police", &[]);
    let c = hub.wait_until(
        &format!("/v1/cases/{caseid}"),
        Duration::from_secs(10),
        |c| c["status"] == "closed",
    );
    assert_eq!(c["on_time"], false);
}

#[test]
fn a_minor_case_resolved_in_the_grid_never_leaves_it() {
    let receiver = Receiver::start();
    let (adapters, config) = escalation_config(&receiver);
    let dir = HubDir::new(&adapters, &config);
    let hub = dir.start();
    let caseid = open_case(
        &hub,
        &report("vendor-1", "vendor.street", "minor", "yingfeng/yingyi/2"),
    );
    // The grid worker got the report (checked again at the end: only once).
    wait_received_at(&receiver, "/grid-app");
    advance(&hub, 60);
    status(&hub, &caseid, "gov.incident.accepted", "grid-app", &[]);
    advance(&hub, 60);
    status(&hub, &caseid, "gov.incident.resolved", "grid-app", &[]);
    hub.wait_until(
        &format!("/v1/cases/{caseid}"),
        Duration::from_secs(10),
        |c| c["status"] == "closed",
    );
    advance(&hub, 100_000);
    std::thread::sleep(Duration::from_millis(300));
    let c = case(&hub, &caseid);
    assert_eq!(c["level"], 0);
    assert_eq!(
        hub.get_json(&format!("/v1/events/escalated-{caseid}-1")).0,
        404
    );
    assert!(received_at(&receiver, "/community").is_empty());
    assert!(received_at(&receiver, "/four-platforms").is_empty());
    assert_eq!(
        received_at(&receiver, "/grid-app").len(),
        1,
        "only the grid worker heard of it"
    );
}

#[test]
fn stats_match_a_hand_computed_set_of_cases() {
    let receiver = Receiver::start();
    let dir = HubDir::new(
        &[department("grid-app", &receiver)],
        // Disputes take their time at the mediation rooms (as in
        // Yingfeng): accepted within an hour, so neither dispute is
        // overdue when the figures are taken and both stay in their grid.
        &format!(
            "{MANUAL_CLOCK}\n[[cases.deadlines]]\ncategory = \"dispute\"\naccept_s = 3600\nresolve_s = 259200\n[[routes]]\nname = \"grid\"\nmatch = {{ type = \"gov.incident.reported\", category = \"traffic\" }}\nto = [\"grid-app\"]\n[[routes]]\nname = \"vendors\"\nmatch = {{ type = \"gov.incident.reported\", category = \"vendor\" }}\nto = [\"grid-app\"]\n"
        ),
    );
    let hub = dir.start();
    let c1 = open_case(&hub, &report("c1", "traffic.congestion", "minor", "g/a/1"));
    let c2 = open_case(&hub, &report("c2", "traffic.congestion", "minor", "g/a/1"));
    let c3 = open_case(&hub, &report("c3", "vendor.street", "minor", "g/a/2"));
    let c4 = open_case(&hub, &report("c4", "vendor.street", "minor", "g/a/2"));
    let d1 = open_case(&hub, &report("d1", "dispute.property", "minor", "g/a/1"));
    let d2 = open_case(&hub, &report("d2", "dispute.neighbour", "minor", "g/a/2"));
    let mediation = |caseid: &str, level: &str, outcome: &str| {
        status(
            &hub,
            caseid,
            "gov.mediation.concluded",
            &format!("mediation-{level}"),
            &[("level", level), ("outcome", outcome)],
        );
    };
    let mut now = 0;
    let mut at = |t: i64| {
        advance(&hub, t - now);
        now = t;
    };
    at(30);
    status(&hub, &c3, "gov.incident.accepted", "grid-app", &[]);
    at(60);
    status(&hub, &c1, "gov.incident.accepted", "grid-app", &[]);
    at(90);
    status(&hub, &c4, "gov.incident.accepted", "grid-app", &[]);
    at(120);
    status(&hub, &c2, "gov.incident.accepted", "grid-app", &[]);
    at(300);
    mediation(&d2, "grid", "failed");
    at(600);
    status(&hub, &c1, "gov.incident.resolved", "grid-app", &[]);
    mediation(&d1, "grid", "referred");
    at(900);
    status(&hub, &c4, "gov.incident.resolved", "grid-app", &[]);
    at(1200);
    mediation(&d1, "community", "mediated");
    at(2400);
    // Past its deadline c2 escalates out of its grid (the hub's deadline
    // check runs on its own): wait for it, so the figures do not depend
    // on which comes first.
    hub.wait_until(&format!("/v1/cases/{c2}"), Duration::from_secs(10), |c| {
        c["level"].as_u64().is_some_and(|l| l >= 1)
    });
    status(&hub, &c2, "gov.incident.resolved", "grid-app", &[]);
    hub.wait_until(&format!("/v1/cases/{c2}"), Duration::from_secs(10), |c| {
        c["status"] == "closed"
    });

    let (code, s) = hub.get_json("/v1/stats");
    assert_eq!(code, 200);
    type Spread = (u64, Option<u64>, Option<u64>);
    let figures = |open: u64,
                   closed: u64,
                   accept: Spread,
                   resolve: Spread,
                   rates: (Option<f64>, Option<f64>)| {
        serde_json::json!({
            "open": open,
            "closed": closed,
            "time_to_accept": {"n": accept.0, "p50_s": accept.1, "p90_s": accept.2},
            "time_to_resolve": {"n": resolve.0, "p50_s": resolve.1, "p90_s": resolve.2},
            "on_time_rate": rates.0,
            "in_grid_rate": rates.1,
        })
    };
    // Hand-computed (nearest-rank percentiles):
    // accept: c3 30, c1 60, c4 90, c2 120; resolve: d2 300, c1 600, c4 900,
    // d1 1200, c2 2400 (late: the deadline is 1800, so it escalated to the
    // community: the one case closed outside its grid).
    let expect = [
        (
            "total",
            &s["total"],
            figures(
                1,
                5,
                (4, Some(60), Some(120)),
                (5, Some(900), Some(2400)),
                (Some(0.8), Some(0.8)),
            ),
        ),
        (
            "g/a/1",
            &s["by_grid"]["g/a/1"],
            figures(
                0,
                3,
                (2, Some(60), Some(120)),
                (3, Some(1200), Some(2400)),
                (Some(2.0 / 3.0), Some(2.0 / 3.0)),
            ),
        ),
        (
            "g/a/2",
            &s["by_grid"]["g/a/2"],
            figures(
                1,
                2,
                (2, Some(30), Some(90)),
                (2, Some(300), Some(900)),
                (Some(1.0), Some(1.0)),
            ),
        ),
        (
            "traffic",
            &s["by_category"]["traffic.congestion"],
            figures(
                0,
                2,
                (2, Some(60), Some(120)),
                (2, Some(600), Some(2400)),
                (Some(0.5), Some(0.5)),
            ),
        ),
        (
            "vendor",
            &s["by_category"]["vendor.street"],
            figures(
                1,
                1,
                (2, Some(30), Some(90)),
                (1, Some(900), Some(900)),
                (Some(1.0), Some(1.0)),
            ),
        ),
        (
            "dispute",
            &s["by_category"]["dispute.property"],
            figures(
                0,
                1,
                (0, None, None),
                (1, Some(1200), Some(1200)),
                (Some(1.0), Some(1.0)),
            ),
        ),
    ];
    for (label, got, want) in expect {
        assert_eq!(got, &want, "{label}");
    }
    assert_eq!(
        s["mediation"],
        serde_json::json!({
            "community": {"concluded": 1, "mediated": 1, "success_rate": 1.0},
            "grid": {"concluded": 2, "mediated": 0, "success_rate": 0.0},
            "street": {"concluded": 0, "mediated": 0, "success_rate": null},
        })
    );
    let d = case(&hub, &d1);
    assert_eq!(d["kind"], "dispute");
    assert_eq!(d["close_reason"], "mediated at community level");
    let listed = hub.get_json("/v1/cases?status=open").1;
    assert_eq!(listed["cases"].as_array().unwrap().len(), 1);
    assert_eq!(listed["cases"][0]["id"], c3.as_str());
    let (code, _, body) = post(
        &hub.url("/v1/clock"),
        &[("content-type", "application/json")],
        b"{\"advance_s\": -5}",
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(hub.get_json("/v1/cases?status=sleeping").0, 400);
}
