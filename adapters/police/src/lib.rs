//! The police adapter: connects a police station's computer-aided dispatch
//! (CAD) system to govhub.
//!
//! - `ingest`: a CAD incident (JSON: incident number, call time, category
//!   code, address, coordinates, reporter, description) becomes
//!   `gov.incident.reported`, with the category code mapped to the shared
//!   taxonomy by [`CATEGORIES`] (the table is also in this crate's README).
//! - `deliver`: any event routed to the police becomes a dispatch request,
//!   `POST {base_url}/dispatch`, with the event id as `Idempotency-Key` so a
//!   redelivered event is not dispatched twice.
//!
//! Config (manifest `[config]`):
//! - `base_url` (required for delivery), e.g. `http://127.0.0.1:9101`;
//! - `token` (optional): sent as `authorization: Bearer <token>`;
//! - `source` (optional): the events' `source`, default `urn:govhub:police`;
//! - `utc_offset` (optional): offset for CAD times without one, default `+08:00`.

use govhub_sdk::{
    config, export_adapter, http, log, lookup, Adapter, AdapterError, Description, Event, Inbound,
    Outcome, Severity,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// One row of the police category table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Category {
    /// The CAD category code.
    pub code: &'static str,
    /// What the police call it.
    pub name: &'static str,
    /// The shared taxonomy category.
    pub taxonomy: &'static str,
    /// Severity when the CAD gives no priority.
    pub severity: Severity,
}

const fn row(
    code: &'static str,
    name: &'static str,
    taxonomy: &'static str,
    severity: Severity,
) -> Category {
    Category {
        code,
        name,
        taxonomy,
        severity,
    }
}

/// CAD category codes → shared taxonomy. Keep README.md's table in step
/// (a test checks it). Unknown codes map to [`OTHER`].
pub const CATEGORIES: &[Category] = &[
    row(
        "0101",
        "治安案件 public order",
        "safety.public-order",
        Severity::Major,
    ),
    row("0102", "打架斗殴 fight", "safety.fight", Severity::Major),
    row(
        "0201",
        "交通事故 traffic accident",
        "traffic.accident",
        Severity::Major,
    ),
    row(
        "0202",
        "交通拥堵 traffic congestion",
        "traffic.congestion",
        Severity::Minor,
    ),
    row("0301", "火灾 fire", "fire.smoke", Severity::Critical),
    row(
        "0304",
        "水上险情 danger on water",
        "safety.water",
        Severity::Critical,
    ),
    row(
        "0401",
        "邻里纠纷 neighbour dispute",
        "dispute.neighbour",
        Severity::Minor,
    ),
    row(
        "0402",
        "物业纠纷 property dispute",
        "dispute.property",
        Severity::Minor,
    ),
    row(
        "0501",
        "人员走失 missing person",
        "person.missing",
        Severity::Major,
    ),
    row(
        "0601",
        "占道经营 street vending",
        "vendor.street",
        Severity::Minor,
    ),
];

/// What an unknown code maps to; its code is also what `deliver` sends for
/// a taxonomy category with no row of its own.
pub const OTHER: Category = row("9999", "其他 other", "other", Severity::Minor);

/// The row for a CAD code, or [`OTHER`].
pub fn by_code(code: &str) -> Category {
    CATEGORIES
        .iter()
        .copied()
        .find(|c| c.code == code)
        .unwrap_or(OTHER)
}

/// The row for a taxonomy category: exact match first, then the row whose
/// taxonomy shares the first segment (`safety.*`), then [`OTHER`].
pub fn by_taxonomy(category: &str) -> Category {
    if let Some(c) = CATEGORIES.iter().find(|c| c.taxonomy == category) {
        return *c;
    }
    let head = category.split('.').next().unwrap_or_default();
    CATEGORIES
        .iter()
        .copied()
        .find(|c| c.taxonomy.split('.').next() == Some(head))
        .unwrap_or(OTHER)
}

/// A CAD incident as the police system posts it. Its strings borrow from
/// the message where they can (no escapes): nothing is copied twice.
#[derive(Debug, Deserialize)]
pub struct Incident<'a> {
    #[serde(borrow)]
    incident_no: Cow<'a, str>,
    #[serde(borrow)]
    call_time: Cow<'a, str>,
    #[serde(borrow)]
    category_code: Cow<'a, str>,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default, borrow)]
    station: Option<Cow<'a, str>>,
    #[serde(borrow)]
    address: Cow<'a, str>,
    #[serde(default)]
    coordinates: Option<Coordinates>,
    #[serde(default, borrow)]
    reporter: Option<Reporter<'a>>,
    #[serde(borrow)]
    description: Cow<'a, str>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Coordinates {
    lat: f64,
    lon: f64,
}

#[derive(Debug, Deserialize, Serialize)]
struct Reporter<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    phone: Option<Cow<'a, str>>,
}

/// The `data` of a reported incident.
#[derive(Serialize)]
struct IncidentData<'a> {
    incident_no: &'a str,
    station: Option<&'a str>,
    category_code: &'a str,
    category_name: &'a str,
    address: &'a str,
    reporter: Option<&'a Reporter<'a>>,
    description: &'a str,
}

/// The police dispatch request `deliver` sends.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Dispatch {
    /// The govhub event id (also the `Idempotency-Key` header).
    pub dispatch_id: String,
    /// The govhub case, when known.
    pub case_id: Option<String>,
    /// The govhub event type that caused the dispatch.
    pub event_type: String,
    /// CAD category code.
    pub category_code: String,
    /// 1 (highest) to 4.
    pub priority: u8,
    /// Grid code.
    pub grid: Option<String>,
    /// Address, when the event carries one.
    pub address: Option<String>,
    /// Latitude.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
    /// What happened.
    pub description: Option<String>,
    /// When it was reported (RFC 3339).
    pub reported_at: Option<String>,
}

fn priority_to_severity(p: u8) -> Result<Severity, AdapterError> {
    Ok(match p {
        1 => Severity::Critical,
        2 => Severity::Major,
        3 => Severity::Minor,
        4 => Severity::Info,
        other => {
            return Err(AdapterError::InvalidInput(format!(
                "field `priority`: {other} is not a CAD priority (1 highest .. 4 lowest)"
            )))
        }
    })
}

fn severity_to_priority(s: Severity) -> u8 {
    match s {
        Severity::Critical => 1,
        Severity::Major => 2,
        Severity::Minor => 3,
        Severity::Info => 4,
    }
}

/// The CAD's status on a dispatch it was sent.
#[derive(Debug, Deserialize)]
pub struct Status {
    dispatch_id: String,
    case_id: String,
    status: String,
    time: String,
    #[serde(default)]
    officer: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// The CAD's status words → event types.
pub const STATUSES: &[(&str, &str)] = &[
    ("accepted", "gov.incident.accepted"),
    ("on_scene", "gov.incident.on-scene"),
    ("resolved", "gov.incident.resolved"),
];

fn status(s: Status) -> Result<Vec<Event>, AdapterError> {
    let ty = lookup("status", STATUSES, &s.status)?;
    let source = config::get("source").unwrap_or_else(|| "urn:govhub:police".to_string());
    Ok(vec![Event::new(ty)
        .with_id(format!("police-{}-{}", s.dispatch_id, s.status))
        .with_source(source)
        .with_subject(&s.dispatch_id)
        .with_case(&s.case_id)
        .with_time(govhub_sdk::when::normalize(&s.time, "time")?)
        .with_json(
            &serde_json::json!({ "officer": s.officer, "note": s.note }),
        )])
}

/// The police adapter.
pub struct Police;

impl Adapter for Police {
    fn describe() -> Description {
        Description::new(
            "police",
            env!("CARGO_PKG_VERSION"),
            "police station computer-aided dispatch (CAD)",
        )
    }

    fn ingest(message: Inbound) -> Result<Vec<Event>, AdapterError> {
        // Incidents are most of the traffic: one pass reads them. A body
        // that is not an incident but carries `status` is a status report;
        // anything else gets the incident's error, naming the field.
        let incident: Incident = match message.json_borrowed() {
            Ok(incident) => incident,
            Err(_) if message.has_json_key("status")? => return status(message.json()?),
            Err(e) => return Err(e),
        };
        if incident.incident_no.trim().is_empty() {
            return Err(AdapterError::InvalidInput(
                "field `incident_no` must not be empty".into(),
            ));
        }
        let category = by_code(&incident.category_code);
        if category == OTHER {
            log::write(
                log::LogLevel::Warn,
                "unknown CAD category code, mapped to `other`",
                &[("category_code", &incident.category_code)],
            );
        }
        let severity = match incident.priority {
            Some(p) => priority_to_severity(p)?,
            None => category.severity,
        };
        let source = config::get("source").unwrap_or_else(|| "urn:govhub:police".to_string());
        let mut event = Event::new("gov.incident.reported")
            .with_id(incident.incident_no.as_ref())
            .with_source(source)
            .with_subject(incident.incident_no.as_ref())
            .with_time(govhub_sdk::when::normalize(
                &incident.call_time,
                "call_time",
            )?)
            .with_category(category.taxonomy)
            .with_severity(severity);
        if let Some(c) = &incident.coordinates {
            event = event.with_position("coordinates", c.lat, c.lon)?;
        }
        event = event.with_json(&IncidentData {
            incident_no: &incident.incident_no,
            station: incident.station.as_deref(),
            category_code: &incident.category_code,
            category_name: category.name,
            address: &incident.address,
            reporter: incident.reporter.as_ref(),
            description: &incident.description,
        });
        Ok(vec![event])
    }

    fn deliver(event: Event) -> Result<Outcome, AdapterError> {
        let base_url = config::require("base_url")?;
        let data: serde_json::Value = event
            .data
            .as_deref()
            .and_then(|d| serde_json::from_slice(d).ok())
            .unwrap_or(serde_json::Value::Null);
        let text = |key: &str| data.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let category = by_taxonomy(event.category.as_deref().unwrap_or("other"));
        let dispatch = Dispatch {
            dispatch_id: event.id.clone(),
            case_id: event.caseid.clone(),
            event_type: event.type_.clone(),
            category_code: category.code.to_string(),
            priority: severity_to_priority(event.severity.unwrap_or(category.severity)),
            grid: event.grid.clone(),
            address: text("address"),
            lat: event.lat,
            lon: event.lon,
            description: text("description").or_else(|| text("text")),
            reported_at: event.time.clone(),
        };
        let mut request =
            http::Request::post(&format!("{}/dispatch", base_url.trim_end_matches('/')))
                .header("idempotency-key", &event.id)
                .json(&dispatch);
        if let Some(token) = config::get("token") {
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        let response = request.send()?.error_for_status()?;
        #[derive(Deserialize)]
        struct Answer {
            dispatch_no: Option<String>,
        }
        let answer: Answer = response.json().unwrap_or(Answer { dispatch_no: None });
        let mut outcome = Outcome::delivered().with_note(format!(
            "dispatch requested, category {} priority {}",
            dispatch.category_code, dispatch.priority
        ));
        if let Some(no) = answer.dispatch_no {
            outcome = outcome.with_reference(no);
        }
        Ok(outcome)
    }
}

export_adapter!(Police);

#[cfg(test)]
mod tests {
    use super::*;
    use govhub_sdk::http::Response;
    use govhub_sdk::testing::Harness;

    const SAMPLE: &str = include_str!("../samples/incident-river.json");

    #[test]
    fn river_incident_maps_to_a_reported_event() {
        let events = Harness::new()
            .ingest::<Police>(Inbound::post_json(SAMPLE))
            .unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.type_, "gov.incident.reported");
        assert_eq!(e.id, "330102-20250801-0042");
        assert_eq!(e.source, "urn:govhub:police");
        assert_eq!(e.time.as_deref(), Some("2025-08-01T14:05:00+08:00"));
        assert_eq!(e.category.as_deref(), Some("safety.water"));
        assert_eq!(e.severity, Some(Severity::Critical));
        assert_eq!((e.lat, e.lon), (Some(30.2398), Some(120.2026)));
        let data: serde_json::Value = e.json().unwrap();
        assert_eq!(
            data["description"],
            "台风预警期间，有人驾驶小船进入钱塘江江面"
        );
        assert_eq!(data["category_code"], "0304");
    }

    #[test]
    fn local_call_time_and_priority() {
        let body = SAMPLE
            .replace("2025-08-01T14:05:00+08:00", "2025-08-01 14:05:00")
            .replace(
                "\"category_code\": \"0304\"",
                "\"category_code\": \"0202\", \"priority\": 2",
            );
        let e = &Harness::new()
            .config("utc_offset", "+08:00")
            .ingest::<Police>(Inbound::post_json(body))
            .unwrap()[0];
        assert_eq!(e.time.as_deref(), Some("2025-08-01T14:05:00+08:00"));
        assert_eq!(e.category.as_deref(), Some("traffic.congestion"));
        assert_eq!(e.severity, Some(Severity::Major));
    }

    #[test]
    fn malformed_incidents_name_the_field() {
        let cases = [
            (
                SAMPLE.replace("\"incident_no\"", "\"incident\""),
                "incident_no",
            ),
            (
                SAMPLE.replace("\"2025-08-01T14:05:00+08:00\"", "\"yesterday\""),
                "call_time",
            ),
            (SAMPLE.replace("30.2398", "\"north\""), "coordinates.lat"),
            (SAMPLE.replace("30.2398", "130.2"), "coordinates"),
            (
                SAMPLE.replace("\"0304\"", "\"0304\", \"priority\": 9"),
                "priority",
            ),
            ("not json".to_string(), "body"),
        ];
        for (body, field) in cases {
            match Harness::new().ingest::<Police>(Inbound::post_json(body)) {
                Err(AdapterError::InvalidInput(m)) => assert!(m.contains(field), "{field}: {m}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_code_maps_to_other_and_warns() {
        let h = Harness::new();
        let body = SAMPLE.replace("\"0304\"", "\"7777\"");
        let e = &h.ingest::<Police>(Inbound::post_json(body)).unwrap()[0];
        assert_eq!(e.category.as_deref(), Some("other"));
        assert_eq!(h.logs()[0].level, "warn");
    }

    #[test]
    fn deliver_posts_a_dispatch_with_the_event_id_as_idempotency_key() {
        let h = Harness::new()
            .config("base_url", "http://127.0.0.1:9101/")
            .config("token", "s3cret")
            .respond(|_| Response::json_body(201, &serde_json::json!({"dispatch_no": "D-7"})));
        let event = Harness::new()
            .ingest::<Police>(Inbound::post_json(SAMPLE))
            .unwrap()
            .remove(0)
            .with_case("case-1")
            .with_grid("yingfeng/yingyi/2");
        let outcome = h.deliver::<Police>(event).unwrap();
        assert_eq!(outcome.reference.as_deref(), Some("D-7"));
        let sent = &h.requests()[0];
        assert_eq!(sent.url, "http://127.0.0.1:9101/dispatch");
        assert_eq!(
            sent.header_value("idempotency-key"),
            Some("330102-20250801-0042")
        );
        assert_eq!(sent.header_value("authorization"), Some("Bearer s3cret"));
        let d: Dispatch = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(d.category_code, "0304");
        assert_eq!(d.priority, 1);
        assert_eq!(d.case_id.as_deref(), Some("case-1"));
        assert_eq!(
            d.description.as_deref(),
            Some("台风预警期间，有人驾驶小船进入钱塘江江面")
        );
    }

    #[test]
    fn status_back_becomes_case_events() {
        let body = include_str!("../samples/status-on-scene.json");
        let e = &Harness::new()
            .ingest::<Police>(Inbound::post_json(body))
            .unwrap()[0];
        assert_eq!(e.type_, "gov.incident.on-scene");
        assert_eq!(e.id, "police-vp-20250801-140455-cam17-on_scene");
        assert_eq!(e.caseid.as_deref(), Some("case-5f0c2a8e1b7d3c44"));
        assert_eq!(e.subject.as_deref(), Some("vp-20250801-140455-cam17"));
        let bad = body.replace("\"on_scene\"", "\"asleep\"");
        assert!(matches!(
            Harness::new().ingest::<Police>(Inbound::post_json(bad)),
            Err(AdapterError::InvalidInput(m)) if m.contains("`status`")
        ));
        let no_case = body.replace("\"case_id\"", "\"case\"");
        assert!(matches!(
            Harness::new().ingest::<Police>(Inbound::post_json(no_case)),
            Err(AdapterError::InvalidInput(m)) if m.contains("case_id")
        ));
    }

    #[test]
    fn taxonomy_reverse_mapping() {
        assert_eq!(by_taxonomy("safety.water").code, "0304");
        assert_eq!(by_taxonomy("traffic.parking").code, "0201");
        assert_eq!(by_taxonomy("weather.typhoon").code, "9999");
    }

    #[test]
    fn readme_table_matches_the_code() {
        let readme = include_str!("../README.md");
        for c in CATEGORIES.iter().chain([&OTHER]) {
            let line = format!(
                "| {} | {} | `{}` | {} |",
                c.code, c.name, c.taxonomy, c.severity
            );
            assert!(readme.contains(&line), "README.md lacks the row: {line}");
        }
    }
}
