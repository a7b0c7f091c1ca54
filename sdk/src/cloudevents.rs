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
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

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

/// The media type without its parameters, lower case:
/// `Application/JSON; charset=utf-8` → `application/json`.
pub fn media_type_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// True for `application/json`, `text/json` and any `+json` media type.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = media_type_essence(content_type);
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

fn is_text_media_type(content_type: &str) -> bool {
    let essence = media_type_essence(content_type);
    essence.starts_with("text/")
        || essence.ends_with("+xml")
        || essence.starts_with("application/xml")
}

/// How `data` goes into the JSON format.
enum Embedded<'a> {
    /// The bytes are JSON (and the content type is JSON or absent).
    Json(&'a RawValue),
    /// The bytes are UTF-8 text of a text content type.
    Text(&'a str),
    /// Anything else.
    Base64(String),
}

fn embed(event: &Event) -> Option<Embedded<'_>> {
    // Zero bytes of data are no data: binary mode cannot tell them apart.
    let data = event.data.as_deref().filter(|d| !d.is_empty())?;
    let ct = event.datacontenttype.as_deref();
    if ct.is_none_or(is_json_media_type) {
        if let Ok(raw) = read_json::<&RawValue>(data) {
            return Some(Embedded::Json(raw));
        }
    } else if ct.is_some_and(is_text_media_type) {
        if let Ok(text) = simdutf8::basic::from_utf8(data) {
            return Some(Embedded::Text(text));
        }
    }
    Some(Embedded::Base64(
        base64::engine::general_purpose::STANDARD.encode(data),
    ))
}

/// The JSON-format writer: fields straight into the output, `data`
/// embedded without being parsed into a tree.
struct Wire<'a>(&'a Event);

impl Serialize for Wire<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let embedded = embed(e);
        // JSON data with no content type is read back as
        // `application/json` (the format's default); say so, so that the
        // event written is the event read.
        let implied_json = (e.datacontenttype.is_none()
            && matches!(embedded, Some(Embedded::Json(_))))
        .then(|| "application/json".to_string());
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("specversion", SPECVERSION)?;
        m.serialize_entry("id", &e.id)?;
        m.serialize_entry("source", &e.source)?;
        m.serialize_entry("type", &e.type_)?;
        for (name, v) in [
            ("subject", &e.subject),
            ("time", &e.time),
            (
                "datacontenttype",
                if implied_json.is_some() {
                    &implied_json
                } else {
                    &e.datacontenttype
                },
            ),
            ("dataschema", &e.dataschema),
            ("caseid", &e.caseid),
            ("grid", &e.grid),
            ("category", &e.category),
        ] {
            if let Some(v) = v {
                m.serialize_entry(name, v)?;
            }
        }
        if let Some(sev) = e.severity {
            m.serialize_entry("severity", sev.as_str())?;
        }
        if let Some(lat) = e.lat {
            m.serialize_entry("lat", &lat.to_string())?;
        }
        if let Some(lon) = e.lon {
            m.serialize_entry("lon", &lon.to_string())?;
        }
        for a in &e.extensions {
            m.serialize_entry(&a.name, &a.value)?;
        }
        match embedded {
            Some(Embedded::Json(raw)) => m.serialize_entry("data", raw)?,
            Some(Embedded::Text(text)) => m.serialize_entry("data", text)?,
            Some(Embedded::Base64(b64)) => m.serialize_entry("data_base64", &b64)?,
            None => {}
        }
        m.end()
    }
}

/// The event as CloudEvents JSON bytes (structured mode).
///
/// `data` is embedded as JSON when the content type is JSON (or absent) and
/// the bytes are JSON, as a string when the content type is text and the
/// bytes are UTF-8, and as `data_base64` otherwise.
pub fn to_vec(event: &Event) -> Vec<u8> {
    // Writing plain strings and validated raw JSON into a Vec cannot fail.
    serde_json::to_vec(&Wire(event)).unwrap_or_default()
}

/// The same JSON as [`to_vec`], as text (no second check of its UTF-8).
pub fn to_string(event: &Event) -> String {
    serde_json::to_string(&Wire(event)).unwrap_or_default()
}

/// The same bytes as [`to_vec`], written to `out` (a hasher, say) with no
/// copy of them kept. A writer that fails stops the writing; the error is
/// the writer's to report.
pub fn write<W: std::io::Write>(out: &mut W, event: &Event) {
    let _ = serde_json::to_writer(out, &Wire(event));
}

/// The event as a CloudEvents JSON object (structured mode); the same
/// encoding as [`to_vec`].
pub fn to_json(event: &Event) -> Value {
    serde_json::to_value(Wire(event)).unwrap_or(Value::Null)
}

/// An attribute value as it arrived, before it is checked.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(serde_json::Number),
    Bool(bool),
    Null,
    /// An object or array, shown as JSON in the error.
    Other(String),
}

impl std::fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "{}", Value::String(s.to_string())),
            Scalar::Num(n) => write!(f, "{n}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Null => f.write_str("null"),
            Scalar::Other(s) => f.write_str(s),
        }
    }
}

impl<'a> From<&'a Value> for Scalar<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::String(s) => Scalar::Str(Cow::Borrowed(s)),
            Value::Number(n) => Scalar::Num(n.clone()),
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Null => Scalar::Null,
            other => Scalar::Other(other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar<'de>, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Scalar::Null, Scalar::Num))
            }
            fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar<'de>, A::Error> {
                let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Scalar::Other(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Scalar<'de>, A::Error> {
                let v = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Scalar::Other(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A key, borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `data` as it arrived: its JSON text.
enum RawData<'a> {
    Borrowed(&'a RawValue),
    Owned(Box<RawValue>),
}

impl RawData<'_> {
    fn get(&self) -> &str {
        match self {
            RawData::Borrowed(r) => r.get(),
            RawData::Owned(r) => r.get(),
        }
    }
}

/// One event's attributes as they arrived, in order; a repeated name
/// counts once, the last value winning (as in a JSON object read into a
/// map).
#[derive(Default)]
struct Raw<'a> {
    attributes: Vec<(Cow<'a, str>, Scalar<'a>)>,
    data: Option<RawData<'a>>,
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a CloudEvent (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
                let mut raw = Raw::default();
                while let Some(Key(key)) = map.next_key()? {
                    if key == "data" {
                        raw.data = Some(RawData::Borrowed(map.next_value()?));
                    } else {
                        let value: Scalar<'de> = map.next_value()?;
                        raw.attributes.push((key, value));
                    }
                }
                Ok(raw)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Raw<'a> {
    fn from_value(value: &'a Value) -> Result<Raw<'a>, Error> {
        let obj = value.as_object().ok_or_else(not_an_object)?;
        let mut raw = Raw::default();
        for (k, v) in obj {
            if k == "data" {
                let text = serde_json::to_string(v).unwrap_or_default();
                raw.data = RawValue::from_string(text).ok().map(RawData::Owned);
            } else {
                raw.attributes.push((Cow::Borrowed(k.as_str()), v.into()));
            }
        }
        Ok(raw)
    }

    fn get(&self, name: &str) -> Option<&Scalar<'a>> {
        self.attributes
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    fn string(&self, name: &str) -> Result<Option<String>, Error> {
        match self.get(name) {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Str(s)) => Ok(Some(s.to_string())),
            Some(other) => Err(err(name, format!("must be a string, got {other}"))),
        }
    }

    fn required(&self, name: &str) -> Result<String, Error> {
        match self.string(name)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(err(name, "must not be empty")),
            None => Err(err(name, "is required")),
        }
    }

    /// The checks and conversions every input mode shares.
    fn build(self) -> Result<Event, Error> {
        match self.get("specversion") {
            Some(Scalar::Str(v)) if v == SPECVERSION => {}
            Some(Scalar::Str(v)) => {
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
        let mut event = Event::new(self.required("type")?);
        event.id = self.required("id")?;
        event.source = self.required("source")?;
        event.subject = self.string("subject")?;
        event.time = self.string("time")?;
        event.datacontenttype = self.string("datacontenttype")?;
        event.dataschema = self.string("dataschema")?;
        event.caseid = self.string("caseid")?;
        event.grid = self.string("grid")?;
        event.category = self.string("category")?;
        event.severity = self
            .string("severity")?
            .map(|s| parse_severity(&s))
            .transpose()?;
        event.lat = coordinate(self.get("lat"), "lat", 90.0)?;
        event.lon = coordinate(self.get("lon"), "lon", 180.0)?;
        for (i, (name, v)) in self.attributes.iter().enumerate() {
            if KNOWN.contains(&name.as_ref())
                || self.attributes[i + 1..].iter().any(|(n, _)| n == name)
            {
                continue;
            }
            check_extension_name(name)?;
            let value = match v {
                Scalar::Str(s) => s.to_string(),
                Scalar::Num(n) => n.to_string(),
                Scalar::Bool(b) => b.to_string(),
                Scalar::Null => continue,
                other => {
                    return Err(err(
                        name,
                        format!(
                            "extension values must be strings, numbers or booleans, got {other}"
                        ),
                    ))
                }
            };
            event.extensions.push(Attribute {
                name: name.to_string(),
                value,
            });
        }
        let base64 = self.get("data_base64");
        match (&self.data, base64) {
            (Some(_), Some(_)) => {
                return Err(err("data_base64", "must not appear together with `data`"));
            }
            (None, None) | (None, Some(Scalar::Null)) => {}
            (Some(raw), None) => {
                let text = raw.get();
                let json_type = event
                    .datacontenttype
                    .as_deref()
                    .is_none_or(is_json_media_type);
                if text == "null" {
                } else if text.starts_with('"') && !json_type {
                    let s: String = serde_json::from_str(text)
                        .map_err(|e| err("data", format!("is not a valid JSON string: {e}")))?;
                    event.data = Some(s.into_bytes());
                } else {
                    event.data = Some(text.as_bytes().to_vec());
                    if event.datacontenttype.is_none() {
                        event.datacontenttype = Some("application/json".into());
                    }
                }
            }
            (None, Some(Scalar::Str(b64))) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
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
        if event.data.as_ref().is_some_and(|d| d.is_empty()) {
            // Zero bytes are no data (binary mode has no way to send them).
            event.data = None;
        }
        validate(&event)?;
        Ok(event)
    }
}

fn not_an_object() -> Error {
    err(
        "(event)",
        "a CloudEvent in JSON format must be a JSON object",
    )
}

/// A parse failure of the whole body: not JSON at all, or the wrong shape.
fn body_error(e: serde_json::Error, shape: fn() -> Error) -> Error {
    match e.classify() {
        serde_json::error::Category::Data => shape(),
        _ => err("(body)", format!("the body is not JSON: {e}")),
    }
}

/// Reads one event from a CloudEvents JSON object (structured mode).
pub fn from_json(value: &Value) -> Result<Event, Error> {
    Raw::from_value(value)?.build()
}

/// Reads one event from CloudEvents JSON bytes (structured mode) without
/// building a JSON tree; `data` is kept as it arrived.
pub fn from_slice(bytes: &[u8]) -> Result<Event, Error> {
    read_json::<Raw<'_>>(bytes)
        .map_err(|e| body_error(e, not_an_object))?
        .build()
}

/// JSON from bytes, their UTF-8 checked once up front: the slice reader
/// would check every string and key again as it reads them. Bytes that
/// are not UTF-8 go to the slice reader, for its error.
pub(crate) fn read_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

fn at_position(i: usize, e: Error) -> Error {
    Error {
        attribute: format!("[{i}].{}", e.attribute),
        message: e.message,
    }
}

fn not_a_batch() -> Error {
    err(
        "(batch)",
        "a CloudEvents batch must be a JSON array of event objects",
    )
}

/// Reads a batch (`application/cloudevents-batch+json`): a JSON array of
/// events. An error names the position, as `[3].time`.
pub fn from_batch_json(value: &Value) -> Result<Vec<Event>, Error> {
    let items = value.as_array().ok_or_else(not_a_batch)?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| from_json(item).map_err(|e| at_position(i, e)))
        .collect()
}

/// Reads a batch from JSON bytes, as [`from_batch_json`].
pub fn batch_from_slice(bytes: &[u8]) -> Result<Vec<Event>, Error> {
    read_json::<Vec<Raw<'_>>>(bytes)
        .map_err(|e| body_error(e, not_a_batch))?
        .into_iter()
        .enumerate()
        .map(|(i, raw)| raw.build().map_err(|e| at_position(i, e)))
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

fn coordinate(v: Option<&Scalar<'_>>, name: &str, bound: f64) -> Result<Option<f64>, Error> {
    let n = match v {
        None | Some(Scalar::Null) => return Ok(None),
        Some(Scalar::Num(n)) => n.as_f64(),
        Some(Scalar::Str(s)) => s.trim().parse::<f64>().ok(),
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
    let mut raw = Raw::default();
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
        raw.attributes.push((
            Cow::Owned(attr.to_string()),
            Scalar::Str(Cow::Owned(decoded)),
        ));
    }
    let mut event = raw.build()?;
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
    fn zero_bytes_of_data_are_no_data_in_every_mode() {
        // Found by fuzzing: `data_base64: ""` was read as empty data, which
        // binary mode cannot carry, so the two modes disagreed.
        let e = from_slice(
            br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":""}"#,
        )
        .unwrap();
        assert_eq!(e.data, None);
        let text = from_slice(
            br#"{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":""}"#,
        )
        .unwrap();
        assert_eq!(text.data, None);
        let mut empty = Event::new("t").with_id("1").with_source("s");
        empty.data = Some(Vec::new());
        let json = to_json(&empty);
        assert!(json.get("data").is_none() && json.get("data_base64").is_none());
    }

    #[test]
    fn json_data_without_a_content_type_is_written_as_application_json() {
        // Found by fuzzing: a binary event with a JSON body and no
        // content-type was written with no type and read back as
        // `application/json`.
        let (headers, body) = (
            [
                ("ce-specversion", "1.0"),
                ("ce-id", "b-1"),
                ("ce-source", "urn:govhub:police"),
                ("ce-type", "gov.incident.reported"),
            ],
            br#"{"text":"x"}"#,
        );
        let e = from_binary(headers.into_iter(), body).unwrap();
        assert_eq!(e.datacontenttype, None);
        let json = to_json(&e);
        assert_eq!(json["datacontenttype"], "application/json");
        let back = from_slice(&to_vec(&e)).unwrap();
        assert_eq!(back.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(back.data, e.data);
        // Non-JSON bytes with no type stay untyped, as base64.
        let mut raw = e.clone();
        raw.data = Some(vec![0xff, 0x00]);
        let json = to_json(&raw);
        assert!(json.get("datacontenttype").is_none());
        assert!(json.get("data_base64").is_some());
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

    #[test]
    fn bytes_and_tree_decoders_agree_on_every_input() {
        let inputs = [
            serde_json::to_string(&to_json(&full())).unwrap(),
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":{ "a" : [1, 2] }}"#.into(),
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":"h\u00e9\n"}"#.into(),
            r#"{"specversion":"1.0","id":"1","id":"2","source":"s","type":"t"}"#.into(),
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","x1":3,"x2":true,"x3":null}"#.into(),
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":null}"#.into(),
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","lat":30.5,"lon":"120.25"}"#.into(),
            r#"{"specversion":1,"id":"1","source":"s","type":"t"}"#.into(),
            r#"{"specversion":"1.0","id":"1","source":{"a":1},"type":"t"}"#.into(),
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","ext":[1]}"#.into(),
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":5}"#.into(),
        ];
        for input in inputs {
            let tree: Value = serde_json::from_str(&input).unwrap();
            let a = from_json(&tree);
            let b = from_slice(input.as_bytes());
            match (&a, &b) {
                (Ok(x), Ok(y)) => {
                    // The tree decoder re-encodes `data` compactly; the
                    // bytes decoder keeps it as sent.
                    let norm = |e: &Event| {
                        let mut e = e.clone();
                        if let Some(d) = &e.data {
                            if let Ok(v) = serde_json::from_slice::<Value>(d) {
                                e.data = Some(serde_json::to_vec(&v).unwrap());
                            }
                        }
                        e
                    };
                    assert_eq!(norm(x), norm(y), "{input}");
                }
                (Err(x), Err(y)) => assert_eq!(x, y, "{input}"),
                _ => panic!("decoders disagree on {input}: {a:?} vs {b:?}"),
            }
        }
        assert_eq!(
            from_slice(br#"{"specversion":"1.0","id":"1","id":"2","source":"s","type":"t"}"#)
                .unwrap()
                .id,
            "2"
        );
    }

    #[test]
    fn the_bytes_encoder_is_the_tree_encoder() {
        let events = [
            full(),
            Event::new("t")
                .with_id("1")
                .with_source("s")
                .with_json(&serde_json::json!({"a": "有"})),
            Event::new("t")
                .with_id("1")
                .with_source("s")
                .with_data("plain 文本", "text/plain"),
            Event::new("t")
                .with_id("1")
                .with_source("s")
                .with_data(b"{not json".to_vec(), "application/json"),
        ];
        for e in events {
            let bytes = to_vec(&e);
            assert_eq!(
                serde_json::from_slice::<Value>(&bytes).unwrap(),
                to_json(&e)
            );
            assert_eq!(from_slice(&bytes).unwrap(), e);
        }
    }

    #[test]
    fn body_shape_errors() {
        assert_eq!(from_slice(b"{nope").unwrap_err().attribute, "(body)");
        assert_eq!(from_slice(b"[1]").unwrap_err().attribute, "(event)");
        assert_eq!(batch_from_slice(b"{}").unwrap_err().attribute, "(batch)");
        let batch = br#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},{"specversion":"1.0","id":"2","source":"s"}]"#;
        assert_eq!(batch_from_slice(batch).unwrap_err().attribute, "[1].type");
    }
}
