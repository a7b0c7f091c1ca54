//! The city-management adapter: connects the city-management system through
//! Open311 GeoReport v2.
//!
//! - `ingest`: a service request as a citizen app posts it to `POST
//!   requests` (the form, or the same fields as JSON: `service_code`,
//!   `lat`/`long` or `address_string`, `description`, `media_url`,
//!   `attribute[...]`) becomes `gov.incident.reported`, its service code
//!   mapped by [`SERVICES`].
//! - `deliver`: a dispatch becomes a service request, `POST
//!   {base_url}/requests.{format}` (form), tagged with the govhub case and
//!   event as attributes; the request id the city answers is remembered in
//!   the adapter's state.
//! - `poll`: `GET {base_url}/requests.{format}?start_date=...` finds status
//!   changes of the requests it made (`open` → `gov.incident.accepted`,
//!   `closed` → `gov.incident.resolved` with the `status_notes`). XML and
//!   JSON answers are both read.

pub mod open311;

use govhub_sdk::{
    config, export_adapter, http, log, state, Adapter, AdapterError, Description, Event, Inbound,
    Outcome, PollResult, Severity,
};
use open311::Record;

/// One Open311 service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Service {
    /// `service_code`.
    pub code: &'static str,
    /// `service_name`.
    pub name: &'static str,
    /// The shared taxonomy category.
    pub taxonomy: &'static str,
}

/// The city's service codes → shared taxonomy (README.md has the same
/// table; a test checks it).
pub const SERVICES: &[Service] = &[
    Service {
        code: "001",
        name: "路面坑洼 pothole",
        taxonomy: "city.road-damage",
    },
    Service {
        code: "002",
        name: "垃圾堆放 garbage",
        taxonomy: "city.sanitation",
    },
    Service {
        code: "003",
        name: "占道经营 street vending",
        taxonomy: "vendor.street",
    },
    Service {
        code: "004",
        name: "违章停车 illegal parking",
        taxonomy: "traffic.parking",
    },
    Service {
        code: "005",
        name: "井盖缺失 missing manhole cover",
        taxonomy: "safety.facility",
    },
    Service {
        code: "006",
        name: "人行道损坏 sidewalk and curb issues",
        taxonomy: "city.sidewalk",
    },
];

fn source() -> String {
    config::get("source").unwrap_or_else(|| "urn:govhub:city-management".into())
}

/// FNV-1a: a stable id for a request that carries none of its own (a
/// repeat of the same report is then recognised as a duplicate).
fn fnv1a(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn number(r: &Record, name: &str, bound: f64) -> Result<Option<f64>, AdapterError> {
    match r.get(name) {
        None => Ok(None),
        Some(v) => match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x.abs() <= bound => Ok(Some(x)),
            _ => Err(AdapterError::InvalidInput(format!(
                "field `{name}`: `{v}` is not a WGS-84 decimal degree"
            ))),
        },
    }
}

fn service_request(message: &Inbound) -> Result<Event, AdapterError> {
    let r = if message.content_type().as_deref() == Some("application/json") {
        open311::parse_json_request(&message.body)?
    } else {
        open311::parse_form(&message.body)
    };
    let code = r
        .get("service_code")
        .ok_or_else(|| AdapterError::InvalidInput("field `service_code` is required".into()))?;
    let service = SERVICES.iter().find(|s| s.code == code).ok_or_else(|| {
        AdapterError::InvalidInput(format!(
            "field `service_code`: `{code}` is not a service of this city ({})",
            SERVICES
                .iter()
                .map(|s| s.code)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let lat = number(&r, "lat", 90.0)?;
    let lon = number(&r, "long", 180.0)?;
    let address = r.get("address_string").or(r.get("address_id"));
    if (lat.is_none() || lon.is_none()) && address.is_none() {
        return Err(AdapterError::InvalidInput(
            "fields `lat` and `long` (both), or `address_string`: a service request needs a place"
                .into(),
        ));
    }
    let id = format!(
        "open311-{}",
        fnv1a(&[
            code,
            r.get("lat").unwrap_or(""),
            r.get("long").unwrap_or(""),
            address.unwrap_or(""),
            r.get("description").unwrap_or(""),
            r.get("device_id").or(r.get("email")).unwrap_or(""),
        ])
    );
    let mut event = Event::new("gov.incident.reported")
        .with_id(id)
        .with_source(source())
        .with_category(service.taxonomy)
        .with_severity(Severity::Minor)
        .with_json(&serde_json::json!({
            "service_code": service.code,
            "service_name": service.name,
            "description": r.get("description"),
            "address": address,
            "media_url": r.get("media_url"),
            "attributes": r.attributes,
            "reporter": {
                "first_name": r.get("first_name"),
                "last_name": r.get("last_name"),
                "email": r.get("email"),
                "phone": r.get("phone"),
            },
        }));
    if let (Some(lat), Some(lon)) = (lat, lon) {
        event = event.with_location(lat, lon);
    }
    Ok(event)
}

fn format() -> String {
    match config::get("format").as_deref() {
        Some("xml") => "xml".into(),
        _ => "json".into(),
    }
}

/// The service code for a category: the service with that taxonomy, else
/// `default_service_code` of the config.
fn service_code_for(category: Option<&str>) -> Result<String, AdapterError> {
    if let Some(s) = SERVICES.iter().find(|s| Some(s.taxonomy) == category) {
        return Ok(s.code.to_string());
    }
    config::get("default_service_code").ok_or_else(|| {
        AdapterError::Rejected(format!(
            "no Open311 service for category `{}` (add one, or set config `default_service_code`)",
            category.unwrap_or("(none)")
        ))
    })
}

/// What the adapter remembers of a request it made: the case and event
/// behind it, and the last status it reported.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Tracked {
    case: Option<String>,
    event: String,
    status: Option<String>,
}

fn tracked(id: &str) -> Option<Tracked> {
    state::get(&format!("sr/{id}")).and_then(|v| serde_json::from_slice(&v).ok())
}

fn track(id: &str, t: &Tracked) -> Result<(), AdapterError> {
    state::set(
        &format!("sr/{id}"),
        &serde_json::to_vec(t).unwrap_or_default(),
    )
    .map_err(AdapterError::Unavailable)
}

/// The city-management adapter.
pub struct CityManagement;

impl Adapter for CityManagement {
    fn describe() -> Description {
        Description::new(
            "city-management",
            env!("CARGO_PKG_VERSION"),
            "city-management system (Open311 GeoReport v2)",
        )
    }

    fn ingest(message: Inbound) -> Result<Vec<Event>, AdapterError> {
        Ok(vec![service_request(&message)?])
    }

    fn deliver(event: Event) -> Result<Outcome, AdapterError> {
        let base = config::require("base_url")?;
        let data: serde_json::Value = event
            .data
            .as_deref()
            .and_then(|d| serde_json::from_slice(d).ok())
            .unwrap_or_default();
        let text = |k: &str| data.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let mut fields: Vec<(&str, String)> =
            vec![("service_code", service_code_for(event.category.as_deref())?)];
        if let Some(k) = config::get("api_key") {
            fields.push(("api_key", k));
        }
        if let Some(j) = config::get("jurisdiction_id") {
            fields.push(("jurisdiction_id", j));
        }
        if let (Some(lat), Some(lon)) = (event.lat, event.lon) {
            fields.push(("lat", lat.to_string()));
            fields.push(("long", lon.to_string()));
        }
        if let Some(a) = text("address") {
            fields.push(("address_string", a));
        }
        let description = text("description")
            .or_else(|| text("text"))
            .unwrap_or_else(|| {
                event
                    .category
                    .clone()
                    .unwrap_or_else(|| event.type_.clone())
            });
        fields.push(("description", description));
        if let Some(m) = text("media_url") {
            fields.push(("media_url", m));
        }
        if let Some(c) = &event.caseid {
            fields.push(("attribute[govhub_case]", c.clone()));
        }
        fields.push(("attribute[govhub_event]", event.id.clone()));
        let url = format!("{}/requests.{}", base.trim_end_matches('/'), format());
        let answer = http::Request::post(&url)
            .header("idempotency-key", &event.id)
            .body(
                open311::encode_form(&fields),
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .send()?
            .error_for_status()?;
        let records = open311::parse_list(&answer.body)?;
        let first = records.first().ok_or_else(|| {
            AdapterError::Unavailable("Open311 answered an empty list to POST requests".into())
        })?;
        if let Some(id) = first.get("service_request_id") {
            track(
                id,
                &Tracked {
                    case: event.caseid.clone(),
                    event: event.id.clone(),
                    status: None,
                },
            )?;
            let mut outcome = Outcome::delivered().with_reference(id);
            if let Some(n) = first.get("service_notice") {
                outcome = outcome.with_note(n);
            }
            Ok(outcome)
        } else if let Some(token) = first.get("token") {
            log::warn("Open311 answered a token, not a request id: its status cannot be followed");
            Ok(Outcome::delivered().with_reference(format!("token:{token}")))
        } else {
            Err(AdapterError::Unavailable(
                "Open311 answer has neither service_request_id nor token".into(),
            ))
        }
    }

    fn poll(cursor: Option<String>) -> Result<PollResult, AdapterError> {
        let base = config::require("base_url")?;
        let mut url = format!("{}/requests.{}", base.trim_end_matches('/'), format());
        if let Some(c) = &cursor {
            url.push_str("?start_date=");
            url.push_str(&open311::encode_form(&[("x", c.clone())])[2..]);
        }
        let answer = http::Request::get(&url).send()?.error_for_status()?;
        let records = open311::parse_list(&answer.body)?;
        let mut events = Vec::new();
        let mut oldest_open: Option<String> = None;
        let mut newest: Option<String> = None;
        for r in &records {
            let Some(id) = r.get("service_request_id") else {
                continue;
            };
            let requested = r.get("requested_datetime").map(str::to_string);
            if let Some(t) = &requested {
                if newest.as_ref().is_none_or(|n| t > n) {
                    newest = Some(t.clone());
                }
            }
            // Only requests this adapter made belong to govhub cases.
            let Some(mut t) = tracked(id) else { continue };
            let status = r.get("status").unwrap_or("open").to_ascii_lowercase();
            if status == "open" {
                if let Some(req) = &requested {
                    if oldest_open.as_ref().is_none_or(|o| req < o) {
                        oldest_open = Some(req.clone());
                    }
                }
            }
            if t.status.as_deref() == Some(status.as_str()) {
                continue;
            }
            let ty = match status.as_str() {
                "open" => "gov.incident.accepted",
                "closed" => "gov.incident.resolved",
                other => {
                    log::warn(&format!(
                        "Open311 request {id} has unknown status `{other}`"
                    ));
                    continue;
                }
            };
            let mut e = Event::new(ty)
                .with_id(format!("open311-{id}-{status}"))
                .with_source(source())
                .with_subject(id)
                .with_json(&serde_json::json!({
                    "service_request_id": id,
                    "status": status,
                    "status_notes": r.get("status_notes"),
                    "agency_responsible": r.get("agency_responsible"),
                    "govhub_event": t.event,
                }));
            if let Some(updated) = r.get("updated_datetime") {
                e = e.with_time(govhub_sdk::when::normalize(updated, "updated_datetime")?);
            }
            e.caseid = t.case.clone();
            events.push(e);
            t.status = Some(status);
            track(id, &t)?;
        }
        // Keep every open request of ours inside the next window.
        let cursor = oldest_open.or(newest).or(cursor);
        Ok(PollResult { events, cursor })
    }
}

export_adapter!(CityManagement);

#[cfg(test)]
mod tests;
