//! The traffic adapter: connects the traffic enforcement squad's system.
//!
//! - `ingest`: a camera report (congestion, illegal parking, e-trikes
//!   blocking a gate, a violation, an accident) becomes
//!   `gov.incident.reported`, its event code mapped by [`CODES`]; a status
//!   report of the squad on a task (`accepted`, `on_scene`, `done`) becomes
//!   `gov.incident.accepted` / `gov.incident.on-scene` / `gov.incident.resolved`.
//! - `deliver`: an event routed to the squad becomes a joint-rectification
//!   task, `POST {base_url}/tasks`, with the event id as `Idempotency-Key`.
//!
//! Config: `base_url` (for delivery), `source` (default
//! `urn:govhub:traffic`), `utc_offset` (default `+08:00`).

use govhub_sdk::{
    config, export_adapter, http, lookup, when, Adapter, AdapterError, Description, Event, Inbound,
    Outcome, Severity,
};
use serde::{Deserialize, Serialize};

/// One row of the event-code table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Code {
    /// The squad's event code.
    pub code: &'static str,
    /// What the squad calls it.
    pub name: &'static str,
    /// The shared taxonomy category.
    pub taxonomy: &'static str,
    /// Severity.
    pub severity: Severity,
}

/// Event codes of the camera reports → shared taxonomy. README.md has the
/// same table (a test checks it).
pub const CODES: &[Code] = &[
    Code {
        code: "101",
        name: "道路拥堵 congestion",
        taxonomy: "traffic.congestion",
        severity: Severity::Minor,
    },
    Code {
        code: "102",
        name: "违法停车 illegal parking",
        taxonomy: "traffic.parking",
        severity: Severity::Minor,
    },
    Code {
        code: "103",
        name: "电动三轮车堵塞 e-trikes blocking",
        taxonomy: "traffic.congestion",
        severity: Severity::Major,
    },
    Code {
        code: "201",
        name: "闯红灯 running a red light",
        taxonomy: "traffic.violation",
        severity: Severity::Minor,
    },
    Code {
        code: "301",
        name: "交通事故 accident",
        taxonomy: "traffic.accident",
        severity: Severity::Major,
    },
];

fn code(c: &str) -> Result<Code, AdapterError> {
    CODES.iter().copied().find(|x| x.code == c).ok_or_else(|| {
        AdapterError::InvalidInput(format!(
            "field `event_code`: `{c}` is not a traffic event code ({})",
            CODES.iter().map(|x| x.code).collect::<Vec<_>>().join(", ")
        ))
    })
}

#[derive(Deserialize)]
struct Location {
    lat: f64,
    lon: f64,
}

/// A camera report.
#[derive(Deserialize)]
struct CameraReport {
    report_id: String,
    camera_id: String,
    event_code: String,
    time: String,
    location: Location,
    #[serde(default)]
    road: Option<String>,
    #[serde(default)]
    vehicles: Option<u32>,
    #[serde(default)]
    plate: Option<String>,
    #[serde(default)]
    snapshot_url: Option<String>,
}

/// The squad's status on a task it was given.
#[derive(Deserialize)]
struct Status {
    task_id: String,
    case_id: String,
    status: String,
    time: String,
    #[serde(default)]
    squad: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// A joint-rectification task, as `deliver` sends it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Task {
    /// The govhub event id (also the `Idempotency-Key`).
    pub task_id: String,
    /// The case.
    pub case_id: Option<String>,
    /// The event type that caused it.
    pub event_type: String,
    /// Shared taxonomy category.
    pub category: Option<String>,
    /// Grid code.
    pub grid: Option<String>,
    /// Latitude.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
    /// What to rectify.
    pub description: Option<String>,
    /// Jointly with the other departments of the case.
    pub joint: bool,
}

/// The status words of the squad → event types.
pub const STATUSES: &[(&str, &str)] = &[
    ("accepted", "gov.incident.accepted"),
    ("on_scene", "gov.incident.on-scene"),
    ("done", "gov.incident.resolved"),
];

fn source() -> String {
    config::get("source").unwrap_or_else(|| "urn:govhub:traffic".into())
}

/// The traffic adapter.
pub struct Traffic;

impl Adapter for Traffic {
    fn describe() -> Description {
        Description::new(
            "traffic",
            env!("CARGO_PKG_VERSION"),
            "traffic enforcement squad",
        )
    }

    fn ingest(message: Inbound) -> Result<Vec<Event>, AdapterError> {
        if message.has_json_key("status")? {
            let s: Status = message.json()?;
            let ty = lookup("status", STATUSES, &s.status)?;
            return Ok(vec![Event::new(ty)
                .with_id(format!("traffic-{}-{}", s.task_id, s.status))
                .with_source(source())
                .with_subject(&s.task_id)
                .with_case(&s.case_id)
                .with_time(when::normalize(&s.time, "time")?)
                .with_json(
                    &serde_json::json!({ "squad": s.squad, "note": s.note }),
                )]);
        }
        let r: CameraReport = message.json()?;
        let c = code(&r.event_code)?;
        // A jam of many vehicles is more than a minor matter.
        let severity = match (c.taxonomy, r.vehicles) {
            ("traffic.congestion", Some(n)) if n >= 30 => Severity::Major,
            _ => c.severity,
        };
        Ok(vec![Event::new("gov.incident.reported")
            .with_position("location", r.location.lat, r.location.lon)?
            .with_id(&r.report_id)
            .with_source(source())
            .with_subject(&r.camera_id)
            .with_time(when::normalize(&r.time, "time")?)
            .with_category(c.taxonomy)
            .with_severity(severity)
            .with_json(&serde_json::json!({
                "camera_id": r.camera_id,
                "event_code": r.event_code,
                "event_name": c.name,
                "road": r.road,
                "vehicles": r.vehicles,
                "plate": r.plate,
                "snapshot_url": r.snapshot_url,
            }))])
    }

    fn deliver(event: Event) -> Result<Outcome, AdapterError> {
        let base = config::require("base_url")?;
        let data: serde_json::Value = event
            .data
            .as_deref()
            .and_then(|d| serde_json::from_slice(d).ok())
            .unwrap_or_default();
        let description = ["description", "text", "note"]
            .iter()
            .find_map(|k| data.get(*k).and_then(|v| v.as_str()).map(str::to_string));
        let task = Task {
            task_id: event.id.clone(),
            case_id: event.caseid.clone(),
            event_type: event.type_.clone(),
            category: event.category.clone(),
            grid: event.grid.clone(),
            lat: event.lat,
            lon: event.lon,
            description,
            joint: true,
        };
        let answer = http::Request::post(&format!("{}/tasks", base.trim_end_matches('/')))
            .header("idempotency-key", &event.id)
            .json(&task)
            .send()?
            .error_for_status()?;
        let reference = answer.json::<serde_json::Value>().ok().and_then(|v| {
            v.get("task_no")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        });
        let mut outcome = Outcome::delivered().with_note("joint-rectification task sent");
        if let Some(r) = reference {
            outcome = outcome.with_reference(r);
        }
        Ok(outcome)
    }
}

export_adapter!(Traffic);

#[cfg(test)]
mod tests {
    use super::*;
    use govhub_sdk::http::Response;
    use govhub_sdk::testing::Harness;

    const JAM: &str = include_str!("../samples/etrike-jam.json");
    const STATUS: &str = include_str!("../samples/status-done.json");

    #[test]
    fn a_camera_report_becomes_exactly_this_event() {
        let got = Harness::new()
            .ingest::<Traffic>(Inbound::post_json(JAM))
            .unwrap();
        let want = Event::new("gov.incident.reported")
            .with_id("TC-20250801-0815")
            .with_source("urn:govhub:traffic")
            .with_subject("cam-xm-03")
            .with_time("2025-08-01T17:42:10+08:00")
            .with_category("traffic.congestion")
            .with_severity(Severity::Major)
            .with_location(30.2461, 120.1897)
            .with_json(&serde_json::json!({
                "camera_id": "cam-xm-03",
                "event_code": "103",
                "event_name": "电动三轮车堵塞 e-trikes blocking",
                "road": "景芳路 小区西门",
                "vehicles": 14,
                "plate": null,
                "snapshot_url": "http://cam.example/xm-03/0815.jpg",
            }));
        assert_eq!(got, vec![want]);
    }

    #[test]
    fn a_status_report_becomes_a_case_event() {
        let got = Harness::new()
            .ingest::<Traffic>(Inbound::post_json(STATUS))
            .unwrap();
        assert_eq!(got[0].type_, "gov.incident.resolved");
        assert_eq!(got[0].id, "traffic-evt-77-done");
        assert_eq!(got[0].caseid.as_deref(), Some("case-0a1b2c3d4e5f6071"));
        assert_eq!(got[0].time.as_deref(), Some("2025-08-01T18:05:00+08:00"));
    }

    #[test]
    fn malformed_reports_name_the_field() {
        let cases = [
            (JAM.replace("\"103\"", "\"999\""), "event_code"),
            (JAM.replace("\"report_id\"", "\"id\""), "report_id"),
            (JAM.replace("30.2461", "\"north\""), "location.lat"),
            (JAM.replace("30.2461", "95.0"), "location"),
            (JAM.replace("2025-08-01 17:42:10", "yesterday"), "time"),
            (STATUS.replace("\"done\"", "\"napping\""), "status"),
            (STATUS.replace("\"case_id\"", "\"case\""), "case_id"),
        ];
        for (body, field) in cases {
            match Harness::new().ingest::<Traffic>(Inbound::post_json(body)) {
                Err(AdapterError::InvalidInput(m)) => assert!(m.contains(field), "{field}: {m}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn deliver_posts_a_joint_task() {
        let h = Harness::new()
            .config("base_url", "http://127.0.0.1:9102/traffic")
            .respond(|_| Response::json_body(201, &serde_json::json!({"task_no": "JX-9"})));
        let event = Event::new("gov.incident.reported")
            .with_id("evt-1")
            .with_case("case-1")
            .with_category("traffic.congestion")
            .with_json(&serde_json::json!({"description": "电动三轮车堵住西门"}));
        assert_eq!(
            h.deliver::<Traffic>(event).unwrap().reference.as_deref(),
            Some("JX-9")
        );
        let sent = &h.requests()[0];
        assert_eq!(sent.url, "http://127.0.0.1:9102/traffic/tasks");
        assert_eq!(sent.header_value("idempotency-key"), Some("evt-1"));
        let task: Task = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(task.description.as_deref(), Some("电动三轮车堵住西门"));
        assert!(task.joint);
    }

    #[test]
    fn readme_table_matches_the_code() {
        let readme = include_str!("../README.md");
        for c in CODES {
            let line = format!(
                "| {} | {} | `{}` | {} |",
                c.code, c.name, c.taxonomy, c.severity
            );
            assert!(readme.contains(&line), "README.md lacks: {line}");
        }
    }
}
