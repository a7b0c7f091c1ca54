//! OASIS Common Alerting Protocol 1.2 (`urn:oasis:names:tc:emergency:cap:1.2`)
//! read into a small model: alert, info, area (polygon, circle, geocode).
//! Only what govhub uses; every required element is checked, and an error
//! names the element (`info[0]/urgency`).

use govhub_sdk::AdapterError;
use roxmltree::{Document, Node};
use serde::Serialize;

/// The CAP 1.2 namespace.
pub const NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";

/// A `valueName`/`value` pair (parameter, eventCode, geocode).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    /// `valueName`.
    pub name: String,
    /// `value`.
    pub value: String,
}

/// A circle: centre and radius in km.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Circle {
    /// Latitude of the centre.
    pub lat: f64,
    /// Longitude of the centre.
    pub lon: f64,
    /// Radius, km.
    pub radius_km: f64,
}

/// An `area`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Area {
    /// `areaDesc`.
    pub description: String,
    /// `polygon`s, each a ring of (lat, lon).
    pub polygons: Vec<Vec<(f64, f64)>>,
    /// `circle`s.
    pub circles: Vec<Circle>,
    /// `geocode`s.
    pub geocodes: Vec<Pair>,
}

/// An `info` block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Info {
    /// `language`, default `en-US`.
    pub language: String,
    /// `category`s.
    pub categories: Vec<String>,
    /// `event`.
    pub event: String,
    /// `urgency`.
    pub urgency: String,
    /// `severity`.
    pub severity: String,
    /// `certainty`.
    pub certainty: String,
    /// `headline`.
    pub headline: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `instruction`.
    pub instruction: Option<String>,
    /// `senderName`.
    pub sender_name: Option<String>,
    /// `expires`.
    pub expires: Option<String>,
    /// `eventCode`s.
    pub event_codes: Vec<Pair>,
    /// `parameter`s.
    pub parameters: Vec<Pair>,
    /// `area`s.
    pub areas: Vec<Area>,
}

/// An `alert`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// `identifier`.
    pub identifier: String,
    /// `sender`.
    pub sender: String,
    /// `sent`.
    pub sent: String,
    /// `status`: Actual, Exercise, System, Test, Draft.
    pub status: String,
    /// `msgType`: Alert, Update, Cancel, Ack, Error.
    pub msg_type: String,
    /// `scope`.
    pub scope: String,
    /// `references`.
    pub references: Option<String>,
    /// `info` blocks.
    pub infos: Vec<Info>,
}

fn invalid(message: String) -> AdapterError {
    AdapterError::InvalidInput(message)
}

fn children<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn text(node: Node<'_, '_>, name: &'static str) -> Option<String> {
    children(node, name)
        .next()
        .map(|n| n.text().unwrap_or_default().trim().to_string())
}

fn required(node: Node<'_, '_>, name: &'static str, at: &str) -> Result<String, AdapterError> {
    match text(node, name) {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(invalid(format!("CAP element `{at}{name}` is required"))),
    }
}

fn pairs(node: Node<'_, '_>, name: &'static str) -> Vec<Pair> {
    children(node, name)
        .map(|p| Pair {
            name: text(p, "valueName").unwrap_or_default(),
            value: text(p, "value").unwrap_or_default(),
        })
        .collect()
}

fn point(s: &str, at: &str) -> Result<(f64, f64), AdapterError> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| invalid(format!("CAP element `{at}`: `{s}` is not `lat,lon`")))?;
    let lat: f64 = lat
        .trim()
        .parse()
        .map_err(|_| invalid(format!("CAP element `{at}`: `{lat}` is not a latitude")))?;
    let lon: f64 = lon
        .trim()
        .parse()
        .map_err(|_| invalid(format!("CAP element `{at}`: `{lon}` is not a longitude")))?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(invalid(format!(
            "CAP element `{at}`: ({lat}, {lon}) is off the globe"
        )));
    }
    Ok((lat, lon))
}

fn area(node: Node<'_, '_>, at: &str) -> Result<Area, AdapterError> {
    let mut polygons = Vec::new();
    for (i, p) in children(node, "polygon").enumerate() {
        let at = format!("{at}polygon[{i}]");
        let ring = p
            .text()
            .unwrap_or_default()
            .split_whitespace()
            .map(|pt| point(pt, &at))
            .collect::<Result<Vec<_>, _>>()?;
        // CAP: at least four points, the first and last the same.
        if ring.len() < 4 || ring.first() != ring.last() {
            return Err(invalid(format!(
                "CAP element `{at}`: a polygon needs four or more points, the last equal to the first"
            )));
        }
        polygons.push(ring);
    }
    let mut circles = Vec::new();
    for (i, c) in children(node, "circle").enumerate() {
        let at = format!("{at}circle[{i}]");
        let t = c.text().unwrap_or_default().trim().to_string();
        let (centre, radius) = t
            .split_once(char::is_whitespace)
            .ok_or_else(|| invalid(format!("CAP element `{at}`: `{t}` is not `lat,lon radius`")))?;
        let (lat, lon) = point(centre, &at)?;
        let radius_km: f64 = radius
            .trim()
            .parse()
            .map_err(|_| invalid(format!("CAP element `{at}`: `{radius}` is not a radius")))?;
        circles.push(Circle {
            lat,
            lon,
            radius_km,
        });
    }
    Ok(Area {
        description: required(node, "areaDesc", at)?,
        polygons,
        circles,
        geocodes: pairs(node, "geocode"),
    })
}

/// Parses a CAP 1.2 alert.
pub fn parse(xml: &str) -> Result<Alert, AdapterError> {
    let doc = Document::parse(xml).map_err(|e| invalid(format!("body is not XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "alert" || root.tag_name().namespace() != Some(NAMESPACE) {
        return Err(invalid(format!(
            "not a CAP 1.2 alert: the root element is `{}` in namespace `{}` (expected `alert` in `{NAMESPACE}`)",
            root.tag_name().name(),
            root.tag_name().namespace().unwrap_or("(none)")
        )));
    }
    let mut infos = Vec::new();
    for (i, info) in children(root, "info").enumerate() {
        let at = format!("info[{i}]/");
        let mut areas = Vec::new();
        for (j, a) in children(info, "area").enumerate() {
            areas.push(area(a, &format!("{at}area[{j}]/"))?);
        }
        let categories: Vec<String> = children(info, "category")
            .map(|c| c.text().unwrap_or_default().trim().to_string())
            .collect();
        if categories.is_empty() {
            return Err(invalid(format!("CAP element `{at}category` is required")));
        }
        infos.push(Info {
            language: text(info, "language").unwrap_or_else(|| "en-US".into()),
            categories,
            event: required(info, "event", &at)?,
            urgency: required(info, "urgency", &at)?,
            severity: required(info, "severity", &at)?,
            certainty: required(info, "certainty", &at)?,
            headline: text(info, "headline"),
            description: text(info, "description"),
            instruction: text(info, "instruction"),
            sender_name: text(info, "senderName"),
            expires: text(info, "expires"),
            event_codes: pairs(info, "eventCode"),
            parameters: pairs(info, "parameter"),
            areas,
        });
    }
    let msg_type = required(root, "msgType", "")?;
    if !matches!(
        msg_type.as_str(),
        "Alert" | "Update" | "Cancel" | "Ack" | "Error"
    ) {
        return Err(invalid(format!(
            "CAP element `msgType`: `{msg_type}` is not one of Alert, Update, Cancel, Ack, Error"
        )));
    }
    Ok(Alert {
        identifier: required(root, "identifier", "")?,
        sender: required(root, "sender", "")?,
        sent: required(root, "sent", "")?,
        status: required(root, "status", "")?,
        msg_type,
        scope: required(root, "scope", "")?,
        references: text(root, "references"),
        infos,
    })
}

impl Alert {
    /// A place for the alert: the centroid of its first polygon, else the
    /// centre of its first circle.
    pub fn place(&self) -> Option<(f64, f64)> {
        let area = self.infos.iter().flat_map(|i| i.areas.iter());
        for a in area {
            if let Some(ring) = a.polygons.first() {
                let pts = &ring[..ring.len() - 1];
                let n = pts.len() as f64;
                let lat = pts.iter().map(|p| p.0).sum::<f64>() / n;
                let lon = pts.iter().map(|p| p.1).sum::<f64>() / n;
                return Some(((lat * 1e6).round() / 1e6, (lon * 1e6).round() / 1e6));
            }
            if let Some(c) = a.circles.first() {
                return Some((c.lat, c.lon));
            }
        }
        None
    }
}
