//! The video-patrol adapter: connects the city brain's video patrol and any
//! alerting authority that speaks OASIS CAP 1.2.
//!
//! - `ingest`, a detection (JSON: camera id, detection class, confidence,
//!   snapshot URL): the camera's place comes from the `cameras` table of the
//!   manifest's `[config]`; the class maps to the shared taxonomy by
//!   [`CLASSES`]. At or above `min_confidence` (default 0.8) it is a
//!   `gov.incident.reported`; below, a `gov.alert.issued` for a person to
//!   look at.
//! - `ingest`, a CAP 1.2 alert (`application/cap+xml`, or XML in the CAP
//!   namespace): `gov.alert.issued`, with `msgtype` (`alert`, `update`,
//!   `cancel`, ...) and `references` as extensions, the CAP severity and
//!   category mapped, the place from the first polygon's centroid or
//!   circle's centre, and the whole alert (areas with polygons, circles and
//!   geocodes) as JSON data.
//!
//! It receives nothing: the city brain is a source only.

pub mod cap;

use govhub_sdk::{
    config, export_adapter, when, Adapter, AdapterError, Description, Event, Inbound, Severity,
};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One row of the detection-class table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Class {
    /// The detector's class.
    pub class: &'static str,
    /// In words.
    pub name: &'static str,
    /// The shared taxonomy category.
    pub taxonomy: &'static str,
    /// Severity.
    pub severity: Severity,
}

/// Detection classes → shared taxonomy (README.md has it too; a test checks).
pub const CLASSES: &[Class] = &[
    Class {
        class: "person_on_water",
        name: "人员驾船下江 person on the water",
        taxonomy: "safety.water",
        severity: Severity::Critical,
    },
    Class {
        class: "crowd",
        name: "人群聚集 crowd gathering",
        taxonomy: "safety.public-order",
        severity: Severity::Major,
    },
    Class {
        class: "smoke",
        name: "烟雾 smoke",
        taxonomy: "fire.smoke",
        severity: Severity::Major,
    },
    Class {
        class: "street_vending",
        name: "占道经营 street vending",
        taxonomy: "vendor.street",
        severity: Severity::Minor,
    },
    Class {
        class: "e_trike_jam",
        name: "电动三轮车堵塞 e-trikes blocking",
        taxonomy: "traffic.congestion",
        severity: Severity::Minor,
    },
    Class {
        class: "litter",
        name: "垃圾堆放 litter",
        taxonomy: "city.sanitation",
        severity: Severity::Minor,
    },
];

/// CAP `category` → shared taxonomy.
pub const CAP_CATEGORIES: &[(&str, &str)] = &[
    ("Geo", "geo"),
    ("Met", "weather"),
    ("Safety", "safety"),
    ("Security", "safety.security"),
    ("Rescue", "person.rescue"),
    ("Fire", "fire"),
    ("Health", "health"),
    ("Env", "environment"),
    ("Transport", "traffic"),
    ("Infra", "infrastructure"),
    ("CBRNE", "safety.cbrne"),
    ("Other", "other"),
];

/// CAP `severity` → govhub severity (`Unknown`: none).
pub fn cap_severity(s: &str) -> Option<Severity> {
    Some(match s {
        "Extreme" => Severity::Critical,
        "Severe" => Severity::Major,
        "Moderate" => Severity::Minor,
        "Minor" => Severity::Info,
        _ => return None,
    })
}

/// A camera's place.
#[derive(Debug, Clone, Deserialize)]
pub struct Camera {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Deserialize)]
struct Detection {
    detection_id: String,
    camera_id: String,
    class: String,
    confidence: f64,
    time: String,
    #[serde(default)]
    snapshot_url: Option<String>,
}

fn source(default: &str) -> String {
    config::get("source").unwrap_or_else(|| default.into())
}

fn detection(message: &Inbound) -> Result<Event, AdapterError> {
    let d: Detection = message.json()?;
    let class = CLASSES.iter().find(|c| c.class == d.class).ok_or_else(|| {
        AdapterError::InvalidInput(format!(
            "field `class`: `{}` is not a detection class ({})",
            d.class,
            CLASSES
                .iter()
                .map(|c| c.class)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    if !(0.0..=1.0).contains(&d.confidence) {
        return Err(AdapterError::InvalidInput(format!(
            "field `confidence`: {} is not between 0 and 1",
            d.confidence
        )));
    }
    let cameras: BTreeMap<String, Camera> = match config::get("cameras") {
        None => BTreeMap::new(),
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            AdapterError::Unavailable(format!(
                "config key `cameras` is not a table of cameras with lat and lon: {e}"
            ))
        })?,
    };
    let camera = cameras.get(&d.camera_id).ok_or_else(|| {
        AdapterError::InvalidInput(format!(
            "field `camera_id`: `{}` is not in the adapter's camera table (config `cameras`)",
            d.camera_id
        ))
    })?;
    let threshold = config::get("min_confidence")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.8);
    let ty = if d.confidence >= threshold {
        "gov.incident.reported"
    } else {
        "gov.alert.issued"
    };
    Ok(Event::new(ty)
        .with_id(&d.detection_id)
        .with_source(source("urn:govhub:video-patrol"))
        .with_subject(&d.camera_id)
        .with_time(when::normalize(&d.time, "time")?)
        .with_category(class.taxonomy)
        .with_severity(class.severity)
        .with_location(camera.lat, camera.lon)
        .with_json(&serde_json::json!({
            "camera_id": d.camera_id,
            "camera": camera.name,
            "class": d.class,
            "class_name": class.name,
            "confidence": d.confidence,
            "snapshot_url": d.snapshot_url,
        })))
}

fn alert(message: &Inbound) -> Result<Event, AdapterError> {
    let alert = cap::parse(message.text()?)?;
    let severity = alert
        .infos
        .iter()
        .filter_map(|i| cap_severity(&i.severity))
        .max_by_key(|s| *s as u8);
    let category = alert
        .infos
        .first()
        .and_then(|i| i.categories.first())
        .map(|c| {
            CAP_CATEGORIES
                .iter()
                .find(|(cap, _)| cap == c)
                .map(|(_, t)| *t)
                .unwrap_or("other")
        });
    let mut event = Event::new("gov.alert.issued")
        .with_id(&alert.identifier)
        .with_source(format!("urn:cap:{}", alert.sender))
        .with_time(when::normalize(&alert.sent, "sent")?)
        .with_extension("msgtype", alert.msg_type.to_ascii_lowercase())
        .with_extension("capstatus", alert.status.to_ascii_lowercase());
    if let Some(info) = alert.infos.first() {
        event = event.with_subject(&info.event);
    }
    if let Some(r) = &alert.references {
        event = event.with_extension("references", r);
    }
    event.severity = severity;
    event.category = category.map(str::to_string);
    if let Some((lat, lon)) = alert.place() {
        event = event.with_location(lat, lon);
    }
    Ok(event.with_json(&alert))
}

fn is_cap(message: &Inbound) -> bool {
    let ct = message.content_type().unwrap_or_default();
    ct == "application/cap+xml"
        || ((ct.ends_with("/xml") || ct.ends_with("+xml") || ct.is_empty())
            && message.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<'))
}

/// The video-patrol adapter.
pub struct VideoPatrol;

impl Adapter for VideoPatrol {
    fn describe() -> Description {
        Description::new(
            "video-patrol",
            env!("CARGO_PKG_VERSION"),
            "city-brain video patrol detections and CAP 1.2 alerts",
        )
    }

    fn ingest(message: Inbound) -> Result<Vec<Event>, AdapterError> {
        if is_cap(&message) {
            Ok(vec![alert(&message)?])
        } else {
            Ok(vec![detection(&message)?])
        }
    }
}

export_adapter!(VideoPatrol);

#[cfg(test)]
mod tests;
