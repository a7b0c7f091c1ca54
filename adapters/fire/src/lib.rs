//! The fire adapter: connects the online fire station and the smart-building
//! sensors.
//!
//! - `ingest`: a sensor alarm (smoke, water pressure, temperature, gas) from
//!   a device becomes `gov.incident.reported`; the device's place (coordinates,
//!   address, grid) comes from the `devices` table of the manifest's
//!   `[config]`, its severity from the alarm level. A status of the fire
//!   station on an incident (`dispatched`, `arrived`, `extinguished`,
//!   `false_alarm`) becomes a case event.
//! - `deliver`: an event routed to the fire station, `POST {base_url}/incidents`.
//!
//! ```toml
//! [config]
//! base_url = "http://127.0.0.1:9103/fire"
//! [config.devices.SD-0101]
//! lat = 30.2490
//! lon = 120.2062
//! address = "望江家园 3 幢 地下车库"
//! grid = "yingfeng/wangjiang/1"
//! ```

use govhub_sdk::{
    config, export_adapter, http, lookup, when, Adapter, AdapterError, Description, Event, Inbound,
    Outcome, Severity,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One row of the alarm-kind table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kind {
    /// The sensor's alarm kind.
    pub kind: &'static str,
    /// In words.
    pub name: &'static str,
    /// The shared taxonomy category.
    pub taxonomy: &'static str,
}

/// Alarm kinds → shared taxonomy (also in README.md; a test checks it).
pub const KINDS: &[Kind] = &[
    Kind {
        kind: "smoke",
        name: "烟感报警 smoke",
        taxonomy: "fire.smoke",
    },
    Kind {
        kind: "water_pressure",
        name: "消防水压异常 sprinkler water pressure",
        taxonomy: "fire.water-pressure",
    },
    Kind {
        kind: "temperature",
        name: "温度异常 heat",
        taxonomy: "fire.heat",
    },
    Kind {
        kind: "gas",
        name: "燃气泄漏 gas leak",
        taxonomy: "safety.gas-leak",
    },
];

/// Alarm level → severity: 1 minor, 2 major, 3 critical.
pub fn severity(level: u8) -> Result<Severity, AdapterError> {
    Ok(match level {
        1 => Severity::Minor,
        2 => Severity::Major,
        3 => Severity::Critical,
        other => {
            return Err(AdapterError::InvalidInput(format!(
                "field `level`: {other} is not an alarm level (1, 2 or 3)"
            )))
        }
    })
}

/// Where a device is.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Device {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Address.
    #[serde(default)]
    pub address: Option<String>,
    /// Grid code, when known.
    #[serde(default)]
    pub grid: Option<String>,
}

#[derive(Deserialize)]
struct Alarm {
    alarm_id: String,
    device_id: String,
    kind: String,
    level: u8,
    time: String,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    unit: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    incident_id: String,
    case_id: String,
    status: String,
    time: String,
    #[serde(default)]
    note: Option<String>,
}

/// The fire station's status words → event types.
pub const STATUSES: &[(&str, &str)] = &[
    ("dispatched", "gov.incident.accepted"),
    ("arrived", "gov.incident.on-scene"),
    ("extinguished", "gov.incident.resolved"),
    ("false_alarm", "gov.incident.resolved"),
];

/// What `deliver` sends the fire station.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Incident {
    /// The govhub event id (also the `Idempotency-Key`).
    pub incident_id: String,
    /// The case.
    pub case_id: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Severity.
    pub severity: Option<String>,
    /// Device, when the event came from one.
    pub device_id: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// Grid.
    pub grid: Option<String>,
    /// Latitude.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
}

fn devices() -> Result<BTreeMap<String, Device>, AdapterError> {
    match config::get("devices") {
        None => Ok(BTreeMap::new()),
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            AdapterError::Unavailable(format!(
                "config key `devices` is not a table of devices with lat and lon: {e}"
            ))
        }),
    }
}

fn source() -> String {
    config::get("source").unwrap_or_else(|| "urn:govhub:fire".into())
}

/// The fire adapter.
pub struct Fire;

impl Adapter for Fire {
    fn describe() -> Description {
        Description::new(
            "fire",
            env!("CARGO_PKG_VERSION"),
            "online fire station and smart-building sensors",
        )
    }

    fn ingest(message: Inbound) -> Result<Vec<Event>, AdapterError> {
        if message.has_json_key("status")? {
            let s: Status = message.json()?;
            let ty = lookup("status", STATUSES, &s.status)?;
            return Ok(vec![Event::new(ty)
                .with_id(format!("fire-{}-{}", s.incident_id, s.status))
                .with_source(source())
                .with_subject(&s.incident_id)
                .with_case(&s.case_id)
                .with_time(when::normalize(&s.time, "time")?)
                .with_json(
                    &serde_json::json!({ "status": s.status, "note": s.note }),
                )]);
        }
        let a: Alarm = message.json()?;
        let kind = KINDS.iter().find(|k| k.kind == a.kind).ok_or_else(|| {
            AdapterError::InvalidInput(format!(
                "field `kind`: `{}` is not one of smoke, water_pressure, temperature, gas",
                a.kind
            ))
        })?;
        let devices = devices()?;
        let device = devices.get(&a.device_id).ok_or_else(|| {
            AdapterError::InvalidInput(format!(
                "field `device_id`: `{}` is not in the adapter's device table (config `devices`)",
                a.device_id
            ))
        })?;
        let mut event = Event::new("gov.incident.reported")
            .with_id(&a.alarm_id)
            .with_source(source())
            .with_subject(&a.device_id)
            .with_time(when::normalize(&a.time, "time")?)
            .with_category(kind.taxonomy)
            .with_severity(severity(a.level)?)
            .with_location(device.lat, device.lon)
            .with_json(&serde_json::json!({
                "device_id": a.device_id,
                "kind": a.kind,
                "kind_name": kind.name,
                "level": a.level,
                "value": a.value,
                "unit": a.unit,
                "address": device.address,
            }));
        event.grid = device.grid.clone();
        Ok(vec![event])
    }

    fn deliver(event: Event) -> Result<Outcome, AdapterError> {
        let base = config::require("base_url")?;
        let data: serde_json::Value = event
            .data
            .as_deref()
            .and_then(|d| serde_json::from_slice(d).ok())
            .unwrap_or_default();
        let text = |k: &str| data.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let incident = Incident {
            incident_id: event.id.clone(),
            case_id: event.caseid.clone(),
            category: event.category.clone(),
            severity: event.severity.map(|s| s.as_str().to_string()),
            device_id: text("device_id"),
            address: text("address"),
            grid: event.grid.clone(),
            lat: event.lat,
            lon: event.lon,
        };
        http::Request::post(&format!("{}/incidents", base.trim_end_matches('/')))
            .header("idempotency-key", &event.id)
            .json(&incident)
            .send()?
            .error_for_status()?;
        Ok(Outcome::delivered().with_note("sent to the fire station"))
    }
}

export_adapter!(Fire);

#[cfg(test)]
mod tests {
    use super::*;
    use govhub_sdk::http::Response;
    use govhub_sdk::testing::Harness;

    const SMOKE: &str = include_str!("../samples/smoke-alarm.json");
    const DEVICES: &str = r#"{"SD-0101": {"lat": 30.249, "lon": 120.2062, "address": "望江家园 3 幢 地下车库", "grid": "yingfeng/wangjiang/1"}}"#;

    fn harness() -> Harness {
        Harness::new().config("devices", DEVICES)
    }

    #[test]
    fn an_alarm_becomes_exactly_this_event() {
        let got = harness().ingest::<Fire>(Inbound::post_json(SMOKE)).unwrap();
        let mut want = Event::new("gov.incident.reported")
            .with_id("FA-20250801-0032")
            .with_source("urn:govhub:fire")
            .with_subject("SD-0101")
            .with_time("2025-08-01T09:12:00+08:00")
            .with_category("fire.smoke")
            .with_severity(Severity::Major)
            .with_location(30.249, 120.2062)
            .with_json(&serde_json::json!({
                "device_id": "SD-0101",
                "kind": "smoke",
                "kind_name": "烟感报警 smoke",
                "level": 2,
                "value": 0.42,
                "unit": "dB/m",
                "address": "望江家园 3 幢 地下车库",
            }));
        want.grid = Some("yingfeng/wangjiang/1".into());
        assert_eq!(got, vec![want]);
    }

    #[test]
    fn malformed_alarms_name_the_field() {
        let cases = [
            (SMOKE.replace("\"SD-0101\"", "\"SD-9999\""), "device_id"),
            (SMOKE.replace("\"smoke\"", "\"ghosts\""), "kind"),
            (SMOKE.replace("\"level\": 2", "\"level\": 7"), "level"),
            (SMOKE.replace("\"alarm_id\"", "\"alarm\""), "alarm_id"),
        ];
        for (body, field) in cases {
            match harness().ingest::<Fire>(Inbound::post_json(body)) {
                Err(AdapterError::InvalidInput(m)) => assert!(m.contains(field), "{field}: {m}"),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(matches!(
            Harness::new().config("devices", "[1]").ingest::<Fire>(Inbound::post_json(SMOKE)),
            Err(AdapterError::Unavailable(m)) if m.contains("`devices`")
        ));
    }

    #[test]
    fn station_status_becomes_case_events() {
        let body = r#"{"incident_id": "FA-20250801-0032", "case_id": "case-1", "status": "false_alarm", "time": "2025-08-01 09:30:00"}"#;
        let e = &harness().ingest::<Fire>(Inbound::post_json(body)).unwrap()[0];
        assert_eq!(e.type_, "gov.incident.resolved");
        assert_eq!(e.caseid.as_deref(), Some("case-1"));
    }

    #[test]
    fn deliver_posts_the_incident() {
        let h = harness()
            .config("base_url", "http://127.0.0.1:9103/fire")
            .respond(|_| Response::new(201, "{}"));
        let event = harness()
            .ingest::<Fire>(Inbound::post_json(SMOKE))
            .unwrap()
            .remove(0)
            .with_case("case-9");
        h.deliver::<Fire>(event).unwrap();
        let sent = &h.requests()[0];
        assert_eq!(sent.url, "http://127.0.0.1:9103/fire/incidents");
        let i: Incident = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(i.device_id.as_deref(), Some("SD-0101"));
        assert_eq!(i.severity.as_deref(), Some("major"));
        assert_eq!(i.case_id.as_deref(), Some("case-9"));
    }

    #[test]
    fn readme_table_matches_the_code() {
        let readme = include_str!("../README.md");
        for k in KINDS {
            let line = format!("| `{}` | {} | `{}` |", k.kind, k.name, k.taxonomy);
            assert!(readme.contains(&line), "README.md lacks: {line}");
        }
    }
}
