//! The four-platforms adapter: connects the street's case system, whose
//! four platforms are 综治工作 (comprehensive governance), 市场监管 (market
//! supervision), 综合执法 (comprehensive law enforcement) and 便民服务
//! (convenience services). Grid workers report through its app.
//!
//! - `ingest`: a grid worker's report (photos, grid, event code,
//!   description) becomes `gov.incident.reported`, its event code mapped by
//!   [`CODES`]; a platform's callback on a task (`accepted`, `handled`,
//!   `verified`) becomes `gov.incident.accepted` / `gov.incident.resolved` /
//!   `gov.incident.verified` (which closes the case).
//! - `deliver`: a task to the platform that owns the category,
//!   `POST {base_url}/platforms/{platform}/tasks`; escalations go to
//!   `POST {base_url}/escalations`, alerts to `POST {base_url}/alerts`.

use govhub_sdk::{
    config, export_adapter, http, lookup, when, Adapter, AdapterError, Description, Event, Inbound,
    Outcome, Severity,
};
use serde::{Deserialize, Serialize};

/// A platform of the case system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Platform {
    /// Its code in URLs.
    pub code: &'static str,
    /// Its name.
    pub name: &'static str,
}

/// The four platforms.
pub const PLATFORMS: [Platform; 4] = [
    Platform {
        code: "zongzhi",
        name: "综治工作",
    },
    Platform {
        code: "shichang",
        name: "市场监管",
    },
    Platform {
        code: "zhifa",
        name: "综合执法",
    },
    Platform {
        code: "bianmin",
        name: "便民服务",
    },
];

/// One row of the event-code table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Code {
    /// The platform's event code.
    pub code: &'static str,
    /// The platform that owns it.
    pub platform: &'static str,
    /// What it is.
    pub name: &'static str,
    /// The shared taxonomy category.
    pub taxonomy: &'static str,
    /// Severity.
    pub severity: Severity,
}

/// Event codes of the grid workers' reports → shared taxonomy (README.md
/// has the same table; a test checks it).
pub const CODES: &[Code] = &[
    Code {
        code: "ZZ-01",
        platform: "zongzhi",
        name: "矛盾纠纷 dispute",
        taxonomy: "dispute.neighbour",
        severity: Severity::Minor,
    },
    Code {
        code: "ZZ-02",
        platform: "zongzhi",
        name: "治安隐患 public-order hazard",
        taxonomy: "safety.public-order",
        severity: Severity::Major,
    },
    Code {
        code: "ZZ-03",
        platform: "zongzhi",
        name: "涉水安全 danger on water",
        taxonomy: "safety.water",
        severity: Severity::Critical,
    },
    Code {
        code: "SC-01",
        platform: "shichang",
        name: "无证经营 unlicensed business",
        taxonomy: "vendor.unlicensed",
        severity: Severity::Minor,
    },
    Code {
        code: "SC-02",
        platform: "shichang",
        name: "食品安全 food safety",
        taxonomy: "market.food-safety",
        severity: Severity::Major,
    },
    Code {
        code: "ZF-01",
        platform: "zhifa",
        name: "占道经营 street vending",
        taxonomy: "vendor.street",
        severity: Severity::Minor,
    },
    Code {
        code: "ZF-02",
        platform: "zhifa",
        name: "非机动车堵塞 e-trikes blocking",
        taxonomy: "traffic.congestion",
        severity: Severity::Major,
    },
    Code {
        code: "ZF-03",
        platform: "zhifa",
        name: "违章搭建 illegal construction",
        taxonomy: "city.illegal-building",
        severity: Severity::Minor,
    },
    Code {
        code: "BM-01",
        platform: "bianmin",
        name: "设施报修 facility repair",
        taxonomy: "service.facility",
        severity: Severity::Minor,
    },
    Code {
        code: "BM-02",
        platform: "bianmin",
        name: "人员走失 missing person",
        taxonomy: "person.missing",
        severity: Severity::Major,
    },
];

/// The platform that handles a category: the row with that taxonomy, else
/// by its first segment, else 综治工作.
pub fn platform_for(category: Option<&str>) -> &'static str {
    let c = category.unwrap_or("");
    if let Some(row) = CODES.iter().find(|r| r.taxonomy == c) {
        return row.platform;
    }
    match c.split('.').next().unwrap_or("") {
        "vendor" | "market" => "shichang",
        "traffic" | "city" => "zhifa",
        "service" => "bianmin",
        _ => "zongzhi",
    }
}

#[derive(Deserialize, Serialize)]
struct Worker {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    lat: f64,
    lon: f64,
}

#[derive(Deserialize)]
struct Report {
    report_id: String,
    worker: Worker,
    #[serde(default)]
    grid: Option<String>,
    event_code: String,
    description: String,
    #[serde(default)]
    photos: Vec<String>,
    #[serde(default)]
    location: Option<Location>,
    time: String,
}

#[derive(Deserialize)]
struct Callback {
    callback: String,
    task_id: String,
    case_id: String,
    time: String,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// Callback words → event types.
pub const CALLBACKS: &[(&str, &str)] = &[
    ("accepted", "gov.incident.accepted"),
    ("handled", "gov.incident.resolved"),
    ("verified", "gov.incident.verified"),
];

/// A task, as `deliver` sends it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Task {
    /// The govhub event id (also the `Idempotency-Key`).
    pub task_id: String,
    /// The case.
    pub case_id: Option<String>,
    /// The event type.
    pub event_type: String,
    /// Platform code.
    pub platform: String,
    /// Category.
    pub category: Option<String>,
    /// Severity.
    pub severity: Option<String>,
    /// Grid.
    pub grid: Option<String>,
    /// What happened.
    pub description: Option<String>,
    /// The event's data, as received.
    pub detail: serde_json::Value,
}

fn source() -> String {
    config::get("source").unwrap_or_else(|| "urn:govhub:four-platforms".into())
}

/// The four-platforms adapter.
pub struct FourPlatforms;

impl Adapter for FourPlatforms {
    fn describe() -> Description {
        Description::new(
            "four-platforms",
            env!("CARGO_PKG_VERSION"),
            "the street's four-platforms case system and its grid-worker app",
        )
    }

    fn ingest(message: Inbound) -> Result<Vec<Event>, AdapterError> {
        if message.has_json_key("callback")? {
            let c: Callback = message.json()?;
            let ty = lookup("callback", CALLBACKS, &c.callback)?;
            return Ok(vec![Event::new(ty)
                .with_id(format!("four-platforms-{}-{}", c.task_id, c.callback))
                .with_source(source())
                .with_subject(&c.task_id)
                .with_case(&c.case_id)
                .with_time(when::normalize(&c.time, "time")?)
                .with_json(&serde_json::json!({
                    "platform": c.platform,
                    "worker": c.worker,
                    "note": c.note,
                }))]);
        }
        let r: Report = message.json()?;
        let code = CODES
            .iter()
            .find(|c| c.code == r.event_code)
            .ok_or_else(|| {
                AdapterError::InvalidInput(format!(
                    "field `event_code`: `{}` is not a four-platforms event code",
                    r.event_code
                ))
            })?;
        if r.grid.is_none() && r.location.is_none() {
            return Err(AdapterError::InvalidInput(
                "fields `grid` and `location`: a report needs at least one of them".into(),
            ));
        }
        let mut event = Event::new("gov.incident.reported")
            .with_id(&r.report_id)
            .with_source(source())
            .with_subject(&r.worker.id)
            .with_time(when::normalize(&r.time, "time")?)
            .with_category(code.taxonomy)
            .with_severity(code.severity)
            .with_json(&serde_json::json!({
                "description": r.description,
                "photos": r.photos,
                "worker": r.worker,
                "event_code": code.code,
                "platform": code.platform,
            }));
        event.grid = r.grid;
        if let Some(l) = r.location {
            event = event.with_position("location", l.lat, l.lon)?;
        }
        Ok(vec![event])
    }

    fn deliver(event: Event) -> Result<Outcome, AdapterError> {
        let base = config::require("base_url")?;
        let base = base.trim_end_matches('/');
        let detail: serde_json::Value = event
            .data
            .as_deref()
            .and_then(|d| serde_json::from_slice(d).ok())
            .unwrap_or_default();
        let platform = platform_for(event.category.as_deref());
        let (url, what) = match event.type_.as_str() {
            "gov.case.escalated" => (format!("{base}/escalations"), "escalation"),
            "gov.alert.issued" => (format!("{base}/alerts"), "alert"),
            _ => (format!("{base}/platforms/{platform}/tasks"), "task"),
        };
        let description = ["description", "text", "reason"]
            .iter()
            .find_map(|k| detail.get(*k).and_then(|v| v.as_str()).map(str::to_string));
        let task = Task {
            task_id: event.id.clone(),
            case_id: event.caseid.clone(),
            event_type: event.type_.clone(),
            platform: platform.to_string(),
            category: event.category.clone(),
            severity: event.severity.map(|s| s.as_str().to_string()),
            grid: event.grid.clone(),
            description,
            detail,
        };
        http::Request::post(&url)
            .header("idempotency-key", &event.id)
            .json(&task)
            .send()?
            .error_for_status()?;
        Ok(Outcome::delivered().with_note(format!("{what} for {platform}")))
    }
}

export_adapter!(FourPlatforms);

#[cfg(test)]
mod tests {
    use super::*;
    use govhub_sdk::http::Response;
    use govhub_sdk::testing::Harness;

    const REPORT: &str = include_str!("../samples/grid-worker-report.json");
    const CALLBACK: &str = include_str!("../samples/callback-handled.json");

    #[test]
    fn a_grid_worker_report_becomes_exactly_this_event() {
        let got = Harness::new()
            .ingest::<FourPlatforms>(Inbound::post_json(REPORT))
            .unwrap();
        let mut want = Event::new("gov.incident.reported")
            .with_id("GW-20250801-1740-07")
            .with_source("urn:govhub:four-platforms")
            .with_subject("W-0712")
            .with_time("2025-08-01T17:40:00+08:00")
            .with_category("traffic.congestion")
            .with_severity(Severity::Major)
            .with_json(&serde_json::json!({
                "description": "电动三轮车堵住小区西门，晚高峰通行受阻",
                "photos": ["https://img.example/gw/0712/1.jpg", "https://img.example/gw/0712/2.jpg"],
                "worker": {"id": "W-0712", "name": "李网格"},
                "event_code": "ZF-02",
                "platform": "zhifa",
            }))
            .with_location(30.2461, 120.1897);
        want.grid = Some("yingfeng/chaoyang/1".into());
        assert_eq!(got, vec![want]);
    }

    #[test]
    fn callbacks_become_case_events() {
        let e = &Harness::new()
            .ingest::<FourPlatforms>(Inbound::post_json(CALLBACK))
            .unwrap()[0];
        assert_eq!(e.type_, "gov.incident.resolved");
        assert_eq!(e.caseid.as_deref(), Some("case-5f0c2a8e1b7d3c44"));
        let verified = CALLBACK.replace("\"handled\"", "\"verified\"");
        let e = &Harness::new()
            .ingest::<FourPlatforms>(Inbound::post_json(verified))
            .unwrap()[0];
        assert_eq!(e.type_, "gov.incident.verified");
    }

    #[test]
    fn malformed_messages_name_the_field() {
        let cases = [
            (REPORT.replace("\"ZF-02\"", "\"XX-99\""), "event_code"),
            (REPORT.replace("\"description\"", "\"desc\""), "description"),
            (
                REPORT.replace("\"worker\": {\"id\": \"W-0712\",", "\"worker\": {"),
                "worker",
            ),
            (
                REPORT
                    .replace("\"grid\": \"yingfeng/chaoyang/1\",", "")
                    .replace("\"location\": { \"lat\": 30.2461, \"lon\": 120.1897 },", ""),
                "location",
            ),
            (CALLBACK.replace("\"handled\"", "\"ignored\""), "callback"),
        ];
        for (body, field) in cases {
            match Harness::new().ingest::<FourPlatforms>(Inbound::post_json(body)) {
                Err(AdapterError::InvalidInput(m)) => assert!(m.contains(field), "{field}: {m}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn deliver_sends_each_kind_where_it_belongs() {
        let h = Harness::new()
            .config("base_url", "http://127.0.0.1:9104/four-platforms/")
            .respond(|_| Response::new(201, "{}"));
        let task = Event::new("gov.incident.reported")
            .with_id("a")
            .with_category("vendor.street");
        let escalated = Event::new("gov.case.escalated")
            .with_id("b")
            .with_category("safety.water");
        let water = Event::new("gov.incident.reported")
            .with_id("c")
            .with_category("safety.water");
        for e in [task, escalated, water] {
            h.deliver::<FourPlatforms>(e).unwrap();
        }
        let urls: Vec<String> = h.requests().iter().map(|r| r.url.clone()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:9104/four-platforms/platforms/zhifa/tasks",
                "http://127.0.0.1:9104/four-platforms/escalations",
                "http://127.0.0.1:9104/four-platforms/platforms/zongzhi/tasks",
            ]
        );
        assert_eq!(platform_for(Some("market.prices")), "shichang");
        assert_eq!(platform_for(None), "zongzhi");
    }

    #[test]
    fn readme_table_matches_the_code() {
        let readme = include_str!("../README.md");
        for c in CODES {
            let line = format!(
                "| {} | {} | {} | `{}` | {} |",
                c.code, c.platform, c.name, c.taxonomy, c.severity
            );
            assert!(readme.contains(&line), "README.md lacks: {line}");
        }
    }
}
