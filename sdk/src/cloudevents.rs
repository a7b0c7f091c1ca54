//! The CloudEvents 1.0 codec for [`Event`]: JSON format (single and batch)
//! and the HTTP binary mode (`ce-*` headers). The hub and the webhook adapter
//! share it, so an event reads and writes the same on both sides of the
//! sandbox.
//!
//! govhub's extension attributes (`caseid`, `grid`, `severity`, `category`,
//! `lat`, `lon`) map to typed fields of [`Event`]; any other extension goes
//! to [`Event::extensions`]. CloudEvents has no floating-point type, so
//! `lat`/`lon` are written as strings and read from strings or numbers.
//!
//! ```
//! use govhub_sdk::{cloudevents, Event, Severity};
//! let event = Event::new("gov.incident.reported")
//!     .with_id("42")
//!     .with_source("urn:govhub:police:yingfeng")
//!     .with_severity(Severity::Major)
//!     .with_json(&serde_json::json!({"text": "有人落水"}));
//! let json = cloudevents::to_json(&event);
//! assert_eq!(json["severity"], "major");
//! assert_eq!(json["data"]["text"], "有人落水");
//! assert_eq!(cloudevents::from_json(&json).unwrap(), event);
//! ```

use crate::{Attribute, Event, Severity};
use base64::Engine as _;
use serde_json::{Map, Value};

/// The one CloudEvents version govhub speaks.
pub const SPECVERSION: &str = "1.0";

/// Attribute names with a field of their own in [`Event`] (context
/// attributes and govhub's extensions); everything else is an extension.
const KNOWN: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
    "caseid",
    "grid",
    "severity",
    "category",
    "lat",
    "lon",
];

/// Why an input is not a valid CloudEvent; names the attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The attribute (or header, or batch position) at fault.
    pub attribute: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attribute `{}`: {}", self.attribute, self.message)
    }
}

impl std::error::Error for Error {}

fn err(attribute: &str, message: impl Into<String>) -> Error {
    Error {
        attribute: attribute.to_string(),
        message: message.into(),
    }
}

/// True for `application/json`, `text/json` and any `+json` media type.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

fn is_text_media_type(content_type: &str) -> bool {
    let essence = content_type.trim().to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+xml")
        || essence.starts_with("application/xml")
}

/// The event as a CloudEvents JSON object (structured mode).
///
/// `data` is embedded as JSON when the content type is JSON (or absent) and
/// the bytes parse as JSON, as a string when the content type is text and
/// the bytes are UTF-8, and as `data_base64` otherwise.
pub fn to_json(event: &Event) -> Value {
    let mut m = Map::new();
    m.insert("specversion".into(), SPECVERSION.into());
    m.insert("id".into(), event.id.clone().into());
    m.insert("source".into(), event.source.clone().into());
    m.insert("type".into(), event.type_.clone().into());
    let mut opt = |name: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(name.into(), v.clone().into());
        }
    };
    opt("subject", &event.subject);
    opt("time", &event.time);
    opt("datacontenttype", &event.datacontenttype);
    opt("dataschema", &event.dataschema);
    opt("caseid", &event.caseid);
    opt("grid", &event.grid);
    opt("category", &event.category);
    if let Some(s) = event.severity {
        m.insert("severity".into(), s.as_str().into());
    }
    if let Some(lat) = event.lat {
        m.insert("lat".into(), lat.to_string().into());
    }
    if let Some(lon) = event.lon {
        m.insert("lon".into(), lon.to_string().into());
    }
    for a in &event.extensions {
        m.insert(a.name.clone(), a.value.clone().into());
    }
    if let Some(data) = &event.data {
        let ct = event.datacontenttype.as_deref();
        let as_json = ct.is_none_or(is_json_media_type);
        let embedded = if as_json {
            serde_json::from_slice::<Value>(data).ok()
        } else if ct.is_some_and(is_text_media_type) {
            std::str::from_utf8(data)
                .ok()
                .map(|s| Value::String(s.into()))
        } else {
            None
        };
        match embedded {
            Some(v) => {
                m.insert("data".into(), v);
            }
            None => {
                m.insert(
                    "data_base64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(data)
                        .into(),
                );
            }
        }
    }
    Value::Object(m)
}

fn string_attr(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, Error> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(err(name, format!("must be a string, got {other}"))),
    }
}

fn required(obj: &Map<String, Value>, name: &str) -> Result<String, Error> {
    match string_attr(obj, name)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(err(name, "must not be empty")),
        None => Err(err(name, "is required")),
    }
}

/// Reads one event from a CloudEvents JSON object (structured mode).
pub fn from_json(value: &Value) -> Result<Event, Error> {
    let obj = value.as_object().ok_or_else(|| {
        err(
            "(event)",
            "a CloudEvent in JSON format must be a JSON object",
        )
    })?;
    match obj.get("specversion") {
        Some(Value::String(v)) if v == SPECVERSION => {}
        Some(Value::String(v)) => {
            return Err(err(
                "specversion",
                format!("`{v}` is not supported; govhub speaks CloudEvents {SPECVERSION}"),
            ))
        }
        Some(other) => {
            return Err(err(
                "specversion",
                format!("must be the string \"1.0\", got {other}"),
            ))
        }
        None => return Err(err("specversion", "is required")),
    }
    let mut event = Event::new(required(obj, "type")?);
    event.id = required(obj, "id")?;
    event.source = required(obj, "source")?;
    event.subject = string_attr(obj, "subject")?;
    event.time = string_attr(obj, "time")?;
    event.datacontenttype = string_attr(obj, "datacontenttype")?;
    event.dataschema = string_attr(obj, "dataschema")?;
    event.caseid = string_attr(obj, "caseid")?;
    event.grid = string_attr(obj, "grid")?;
    event.category = string_attr(obj, "category")?;
    event.severity = string_attr(obj, "severity")?
        .map(|s| parse_severity(&s))
        .transpose()?;
    event.lat = coordinate(obj.get("lat"), "lat", 90.0)?;
    event.lon = coordinate(obj.get("lon"), "lon", 180.0)?;
    for (name, v) in obj {
        if KNOWN.contains(&name.as_str()) {
            continue;
        }
        check_extension_name(name)?;
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            other => {
                return Err(err(
                    name,
                    format!("extension values must be strings, numbers or booleans, got {other}"),
                ))
            }
        };
        event.extensions.push(Attribute {
            name: name.clone(),
            value,
        });
    }
    match (obj.get("data"), obj.get("data_base64")) {
        (Some(_), Some(_)) => {
            return Err(err("data_base64", "must not appear together with `data`"));
        }
        (Some(Value::Null), None) | (None, None) => {}
        (Some(Value::String(s)), None)
            if !event
                .datacontenttype
                .as_deref()
                .is_none_or(is_json_media_type) =>
        {
            event.data = Some(s.as_bytes().to_vec());
        }
        (Some(v), None) => {
            event.data = Some(serde_json::to_vec(v).unwrap_or_default());
            if event.datacontenttype.is_none() {
                event.datacontenttype = Some("application/json".into());
            }
        }
        (None, Some(Value::String(b64))) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| err("data_base64", format!("is not valid base64: {e}")))?;
            event.data = Some(bytes);
        }
        (None, Some(other)) => {
            return Err(err(
                "data_base64",
                format!("must be a base64 string, got {other}"),
            ))
        }
    }
    validate(&event)?;
    Ok(event)
}

/// Reads a batch (`application/cloudevents-batch+json`): a JSON array of
/// events. An error names the position, as `[3].time`.
pub fn from_batch_json(value: &Value) -> Result<Vec<Event>, Error> {
    let items = value
        .as_array()
        .ok_or_else(|| err("(batch)", "a CloudEvents batch must be a JSON array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            from_json(item).map_err(|e| Error {
                attribute: format!("[{i}].{}", e.attribute),
                message: e.message,
            })
        })
        .collect()
}

fn parse_severity(s: &str) -> Result<Severity, Error> {
    Severity::parse(s).ok_or_else(|| {
        err(
            "severity",
            format!("`{s}` is not one of info, minor, major, critical"),
        )
    })
}

fn coordinate(v: Option<&Value>, name: &str, bound: f64) -> Result<Option<f64>, Error> {
    let n = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    check_coordinate(n, name, bound, v.map(|v| v.to_string()).unwrap_or_default())
}

fn check_coordinate(
    n: Option<f64>,
    name: &str,
    bound: f64,
    shown: String,
) -> Result<Option<f64>, Error> {
    match n {
        Some(x) if x.is_finite() && x.abs() <= bound => Ok(Some(x)),
        _ => Err(err(
            name,
            format!("{shown} is not a WGS-84 decimal degree between -{bound} and {bound}"),
        )),
    }
}

fn check_extension_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(err(
            name,
            "extension attribute names must be lower-case letters a-z and digits only",
        ));
    }
    Ok(())
}

/// Checks what both modes share: `time` is RFC 3339, extension names are
/// legal, required attributes are present.
pub fn validate(event: &Event) -> Result<(), Error> {
    for (name, v) in [
        ("id", &event.id),
        ("source", &event.source),
        ("type", &event.type_),
    ] {
        if v.is_empty() {
            return Err(err(name, "is required"));
        }
    }
    if let Some(t) = &event.time {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|e| err("time", format!("`{t}` is not an RFC 3339 timestamp: {e}")))?;
    }
    for a in &event.extensions {
        check_extension_name(&a.name)?;
        if KNOWN.contains(&a.name.as_str()) {
            return Err(err(&a.name, "is a reserved attribute, not an extension"));
        }
    }
    if let Some(lat) = event.lat {
        check_coordinate(Some(lat), "lat", 90.0, lat.to_string())?;
    }
    if let Some(lon) = event.lon {
        check_coordinate(Some(lon), "lon", 180.0, lon.to_string())?;
    }
    Ok(())
}

/// Characters the HTTP binding says to percent-encode in `ce-*` header
/// values: everything outside printable ASCII, plus `"` and `%` (and space).
const HEADER_ESCAPE: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'%');

/// The event in HTTP binary mode: `ce-*` headers (values percent-encoded)
/// plus `content-type`, and the body (`data`, unchanged).
pub fn to_binary(event: &Event) -> (Vec<(String, String)>, Vec<u8>) {
    let mut headers = Vec::new();
    let mut put = |name: &str, value: &str| {
        headers.push((
            format!("ce-{name}"),
            percent_encoding::utf8_percent_encode(value, HEADER_ESCAPE).to_string(),
        ));
    };
    put("specversion", SPECVERSION);
    put("id", &event.id);
    put("source", &event.source);
    put("type", &event.type_);
    for (name, v) in [
        ("subject", &event.subject),
        ("time", &event.time),
        ("dataschema", &event.dataschema),
        ("caseid", &event.caseid),
        ("grid", &event.grid),
        ("category", &event.category),
    ] {
        if let Some(v) = v {
            put(name, v);
        }
    }
    if let Some(s) = event.severity {
        put("severity", s.as_str());
    }
    if let Some(lat) = event.lat {
        put("lat", &lat.to_string());
    }
    if let Some(lon) = event.lon {
        put("lon", &lon.to_string());
    }
    for a in &event.extensions {
        put(&a.name, &a.value);
    }
    if let Some(ct) = &event.datacontenttype {
        headers.push(("content-type".into(), ct.clone()));
    }
    (headers, event.data.clone().unwrap_or_default())
}

/// True when the headers carry a binary-mode CloudEvent (`ce-specversion`).
pub fn is_binary<'a>(mut headers: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
    headers.any(|(n, _)| n.eq_ignore_ascii_case("ce-specversion"))
}

/// Reads a binary-mode event from HTTP headers and body. Header names are
/// matched case-insensitively; values are percent-decoded as UTF-8.
pub fn from_binary<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
    body: &[u8],
) -> Result<Event, Error> {
    let mut obj = Map::new();
    let mut content_type = None;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if lower == "content-type" {
            content_type = Some(value.to_string());
            continue;
        }
        let Some(attr) = lower.strip_prefix("ce-") else {
            continue;
        };
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| err(attr, "header value is not percent-encoded UTF-8"))?
            .into_owned();
        if matches!(attr, "data" | "data_base64" | "datacontenttype") {
            return Err(err(
                attr,
                "is not a header in binary mode (data is the body, its type is content-type)",
            ));
        }
        obj.insert(attr.to_string(), Value::String(decoded));
    }
    let mut event = from_json(&Value::Object(obj))?;
    event.datacontenttype = content_type;
    if !body.is_empty() {
        event.data = Some(body.to_vec());
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Event {
        Event::new("gov.incident.reported")
            .with_id("e-1")
            .with_source("urn:govhub:police:yingfeng")
            .with_subject("HZ-0042")
            .with_time("2025-08-01T14:05:00+08:00")
            .with_case("case-9")
            .with_grid("yingfeng/yingyi/2")
            .with_severity(Severity::Critical)
            .with_category("safety.water")
            .with_location(30.2741, 120.1551)
            .with_extension("station", "钱江派出所 1")
            .with_data(vec![0u8, 159, 146, 150, 255], "application/octet-stream")
    }

    #[test]
    fn structured_round_trip_keeps_every_attribute_and_binary_data() {
        let e = full();
        let json = to_json(&e);
        assert!(json.get("data_base64").is_some());
        assert_eq!(json["lat"], "30.2741");
        let back = from_json(&json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn binary_round_trip_percent_encodes_non_ascii() {
        let e = full();
        let (headers, body) = to_binary(&e);
        let station = headers.iter().find(|(n, _)| n == "ce-station").unwrap();
        assert!(
            station.1.is_ascii() && station.1.contains('%'),
            "{station:?}"
        );
        let back =
            from_binary(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())), &body).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn json_data_is_embedded() {
        let e = Event::new("t")
            .with_id("1")
            .with_source("s")
            .with_json(&serde_json::json!({"a": [1, 2]}));
        let json = to_json(&e);
        assert_eq!(json["data"]["a"][1], 2);
        assert_eq!(from_json(&json).unwrap(), e);
    }

    #[test]
    fn invalid_inputs_name_the_attribute() {
        let cases = [
            (
                serde_json::json!({"id":"1","source":"s","type":"t"}),
                "specversion",
            ),
            (
                serde_json::json!({"specversion":"0.3","id":"1","source":"s","type":"t"}),
                "specversion",
            ),
            (
                serde_json::json!({"specversion":"1.0","source":"s","type":"t"}),
                "id",
            ),
            (
                serde_json::json!({"specversion":"1.0","id":"1","type":"t"}),
                "source",
            ),
            (
                serde_json::json!({"specversion":"1.0","id":"1","source":"s","type":""}),
                "type",
            ),
            (
                serde_json::json!({"specversion":"1.0","id":"1","source":"s","type":"t","time":"yesterday"}),
                "time",
            ),
            (
                serde_json::json!({"specversion":"1.0","id":"1","source":"s","type":"t","severity":"huge"}),
                "severity",
            ),
            (
                serde_json::json!({"specversion":"1.0","id":"1","source":"s","type":"t","lat":"91"}),
                "lat",
            ),
            (
                serde_json::json!({"specversion":"1.0","id":"1","source":"s","type":"t","Bad-Name":"x"}),
                "Bad-Name",
            ),
            (
                serde_json::json!({"specversion":"1.0","id":"1","source":"s","type":"t","data":1,"data_base64":"AA=="}),
                "data_base64",
            ),
            (
                serde_json::json!({"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"!!"}),
                "data_base64",
            ),
        ];
        for (input, attribute) in cases {
            let e = from_json(&input).unwrap_err();
            assert_eq!(e.attribute, attribute, "{input}: {e}");
        }
        let batch = serde_json::json!([
            {"specversion":"1.0","id":"1","source":"s","type":"t"},
            {"specversion":"1.0","id":"2","source":"s"}
        ]);
        assert_eq!(from_batch_json(&batch).unwrap_err().attribute, "[1].type");
    }
}
