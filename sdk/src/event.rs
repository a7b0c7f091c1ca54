//! Builder helpers on the WIT types, so adapters read as mappings rather
//! than as struct literals.

use crate::{AdapterError, Attribute, Description, Event, Header, Inbound, Outcome, Severity};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version of the `govhub:adapter` WIT package this SDK implements.
pub const WIT_VERSION: &str = "0.1.0";

/// What `word` maps to in a department's code `table`, or
/// [`AdapterError::InvalidInput`] naming `field` and every word the table
/// knows.
///
/// ```
/// const STATUSES: &[(&str, &str)] = &[("accepted", "gov.incident.accepted"), ("done", "gov.incident.resolved")];
/// assert_eq!(govhub_sdk::lookup("status", STATUSES, "done").unwrap(), "gov.incident.resolved");
/// let e = govhub_sdk::lookup("status", STATUSES, "lost").unwrap_err();
/// assert!(format!("{e:?}").contains("field `status`: `lost` is not one of accepted, done"));
/// ```
pub fn lookup<T: Copy>(field: &str, table: &[(&str, T)], word: &str) -> Result<T, AdapterError> {
    table
        .iter()
        .find(|(w, _)| *w == word)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let words: Vec<&str> = table.iter().map(|(w, _)| *w).collect();
            AdapterError::InvalidInput(format!(
                "field `{field}`: `{word}` is not one of {}",
                words.join(", ")
            ))
        })
}

impl Event {
    /// A new event of type `ty` (`gov.<noun>.<verb>`); every other attribute
    /// empty. The hub fills an empty `id`, `source` and `time` on arrival.
    pub fn new(ty: impl Into<String>) -> Event {
        Event {
            id: String::new(),
            source: String::new(),
            type_: ty.into(),
            subject: None,
            time: None,
            datacontenttype: None,
            dataschema: None,
            data: None,
            caseid: None,
            grid: None,
            severity: None,
            category: None,
            lat: None,
            lon: None,
            extensions: Vec::new(),
        }
    }

    /// Sets `id`: derive it from the department's own identifier so a
    /// repeated message is recognised as a duplicate.
    pub fn with_id(mut self, id: impl Into<String>) -> Event {
        self.id = id.into();
        self
    }
    /// Sets `source`, a URI-reference such as `urn:govhub:police:yingfeng`.
    pub fn with_source(mut self, source: impl Into<String>) -> Event {
        self.source = source.into();
        self
    }
    /// Sets `subject`.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Event {
        self.subject = Some(subject.into());
        self
    }
    /// Sets `time` (RFC 3339).
    pub fn with_time(mut self, time: impl Into<String>) -> Event {
        self.time = Some(time.into());
        self
    }
    /// Sets `caseid`.
    pub fn with_case(mut self, caseid: impl Into<String>) -> Event {
        self.caseid = Some(caseid.into());
        self
    }
    /// Sets `grid`.
    pub fn with_grid(mut self, grid: impl Into<String>) -> Event {
        self.grid = Some(grid.into());
        self
    }
    /// Sets `severity`.
    pub fn with_severity(mut self, severity: Severity) -> Event {
        self.severity = Some(severity);
        self
    }
    /// Sets `category` (dotted taxonomy, `safety.water`).
    pub fn with_category(mut self, category: impl Into<String>) -> Event {
        self.category = Some(category.into());
        self
    }
    /// Sets `lat`/`lon` (WGS-84 decimal degrees).
    pub fn with_location(mut self, lat: f64, lon: f64) -> Event {
        self.lat = Some(lat);
        self.lon = Some(lon);
        self
    }
    /// Sets `lat`/`lon` from the department's `field`, or
    /// [`AdapterError::InvalidInput`] naming it when the pair is not a
    /// WGS-84 position.
    ///
    /// ```
    /// use govhub_sdk::Event;
    /// assert!(Event::new("gov.incident.reported").with_position("location", 30.24, 120.2).is_ok());
    /// let e = Event::new("gov.incident.reported").with_position("location", 120.2, 30.24);
    /// assert!(format!("{:?}", e.unwrap_err()).contains("field `location`: (120.2, 30.24)"));
    /// ```
    pub fn with_position(self, field: &str, lat: f64, lon: f64) -> Result<Event, AdapterError> {
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err(AdapterError::InvalidInput(format!(
                "field `{field}`: ({lat}, {lon}) is not a WGS-84 position"
            )));
        }
        Ok(self.with_location(lat, lon))
    }
    /// Sets `data` to `value` as JSON and `datacontenttype` to
    /// `application/json`.
    pub fn with_json<T: Serialize + ?Sized>(mut self, value: &T) -> Event {
        // Serialising plain data (maps, strings, numbers) cannot fail.
        // Sized for a typical payload: growing from empty copies it over
        // and over (and a copy is a libcall in wasm).
        let mut data = Vec::with_capacity(512);
        if serde_json::to_writer(&mut data, value).is_err() {
            data.clear();
        }
        self.data = Some(data);
        self.datacontenttype = Some("application/json".to_string());
        self
    }
    /// Sets `data` to raw bytes of the given media type.
    pub fn with_data(mut self, data: impl Into<Vec<u8>>, content_type: impl Into<String>) -> Event {
        self.data = Some(data.into());
        self.datacontenttype = Some(content_type.into());
        self
    }
    /// Adds (or replaces) a CloudEvents extension attribute.
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Event {
        let name = name.into();
        let value = value.into();
        match self.extensions.iter_mut().find(|a| a.name == name) {
            Some(a) => a.value = value,
            None => self.extensions.push(Attribute { name, value }),
        }
        self
    }

    /// The value of an extension attribute.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }

    /// `data` parsed as JSON into `T`; a missing or malformed payload is
    /// [`AdapterError::InvalidInput`] naming the field.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, AdapterError> {
        let data = self
            .data
            .as_deref()
            .ok_or_else(|| AdapterError::InvalidInput(format!("event {} has no data", self.id)))?;
        parse_json(data, "event data")
    }
}

impl Severity {
    /// The CloudEvents attribute value: `info`, `minor`, `major`, `critical`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }

    /// Its place in the order `info` < `minor` < `major` < `critical`:
    /// 0 to 3.
    pub fn rank(&self) -> u8 {
        match self {
            Severity::Info => 0,
            Severity::Minor => 1,
            Severity::Major => 2,
            Severity::Critical => 3,
        }
    }

    /// The severity of rank 0 to 3 (higher ranks are `critical`).
    pub fn from_rank(rank: u8) -> Severity {
        match rank {
            0 => Severity::Info,
            1 => Severity::Minor,
            2 => Severity::Major,
            _ => Severity::Critical,
        }
    }

    /// Parses an attribute value; `None` for anything else.
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "info" => Severity::Info,
            "minor" => Severity::Minor,
            "major" => Severity::Major,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

impl Description {
    /// A description with no subscriptions.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        department: impl Into<String>,
    ) -> Description {
        Description {
            name: name.into(),
            version: version.into(),
            department: department.into(),
            subscriptions: Vec::new(),
        }
    }
    /// Adds an event-type glob this adapter wants delivered.
    pub fn subscribe(mut self, glob: impl Into<String>) -> Description {
        self.subscriptions.push(glob.into());
        self
    }
}

impl Outcome {
    /// A plain success.
    pub fn delivered() -> Outcome {
        Outcome {
            reference: None,
            note: None,
            events: Vec::new(),
        }
    }
    /// Sets the department's reference for what it received.
    pub fn with_reference(mut self, reference: impl Into<String>) -> Outcome {
        self.reference = Some(reference.into());
        self
    }
    /// Sets a short note.
    pub fn with_note(mut self, note: impl Into<String>) -> Outcome {
        self.note = Some(note.into());
        self
    }
    /// Adds an event the department answered with.
    pub fn with_event(mut self, event: Event) -> Outcome {
        self.events.push(event);
        self
    }
}

impl Inbound {
    /// A `POST` of `body` with the given `content-type` (none when empty),
    /// as tests and the harness build it.
    pub fn post(content_type: &str, body: impl Into<Vec<u8>>) -> Inbound {
        let message = Inbound {
            method: "POST".to_string(),
            query: String::new(),
            headers: Vec::new(),
            body: body.into(),
        };
        if content_type.is_empty() {
            message
        } else {
            message.with_header("content-type", content_type)
        }
    }

    /// A `POST` with a JSON body.
    pub fn post_json(body: impl Into<Vec<u8>>) -> Inbound {
        Inbound::post("application/json", body)
    }

    /// Adds a header (the name is lower-cased, as the hub does).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Inbound {
        self.headers.push(Header {
            name: name.to_ascii_lowercase(),
            value: value.into(),
        });
        self
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The media type of the body (`content-type` without parameters,
    /// lower case), if given.
    pub fn content_type(&self) -> Option<String> {
        self.header("content-type")
            .map(crate::cloudevents::media_type_essence)
    }

    /// The body as UTF-8 text, or [`AdapterError::InvalidInput`].
    pub fn text(&self) -> Result<&str, AdapterError> {
        std::str::from_utf8(&self.body)
            .map_err(|e| AdapterError::InvalidInput(format!("body is not UTF-8 text: {e}")))
    }

    /// The body parsed as JSON into `T`. A malformed body is
    /// [`AdapterError::InvalidInput`] naming the field path
    /// (`location.lat: invalid type: string "x", expected f64`).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, AdapterError> {
        parse_json(&self.body, "body")
    }

    /// Like [`Inbound::json`], but `T` may borrow from the body: a
    /// `Cow<'a, str>` field marked `#[serde(borrow)]` points into the body
    /// instead of copying (strings with escapes are still copied). Saves
    /// an allocation and a copy per string field.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// #[derive(serde::Deserialize)]
    /// struct Report<'a> {
    ///     #[serde(borrow)]
    ///     text: Cow<'a, str>,
    /// }
    /// let message = govhub_sdk::Inbound::post_json(r#"{"text":"井盖缺失"}"#);
    /// let r: Report = message.json_borrowed().unwrap();
    /// assert!(matches!(r.text, Cow::Borrowed("井盖缺失")));
    /// ```
    pub fn json_borrowed<'a, T: Deserialize<'a>>(&'a self) -> Result<T, AdapterError> {
        parse_json(&self.body, "body")
    }

    /// Whether the body is a JSON object with a top-level `key` (whatever
    /// its value): tells one message shape from another without building
    /// either. A body that is not JSON is [`AdapterError::InvalidInput`];
    /// JSON that is not an object has no keys.
    ///
    /// ```
    /// let m = govhub_sdk::Inbound::post_json(r#"{"task_id":"T-1","status":"done"}"#);
    /// assert!(m.has_json_key("status").unwrap());
    /// assert!(!m.has_json_key("callback").unwrap());
    /// ```
    pub fn has_json_key(&self, key: &str) -> Result<bool, AdapterError> {
        use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
        struct Seek<'k>(&'k str);
        impl<'de> DeserializeSeed<'de> for Seek<'_> {
            type Value = bool;
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
                d.deserialize_map(self)
            }
        }
        impl<'de> Visitor<'de> for Seek<'_> {
            type Value = bool;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
                let mut found = false;
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    found |= k == self.0;
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(found)
            }
        }
        let mut de = serde_json::Deserializer::from_slice(&self.body);
        match Seek(key)
            .deserialize(&mut de)
            .and_then(|found| de.end().map(|_| found))
        {
            Ok(found) => Ok(found),
            // Not an object, or not JSON: the reader's own error for the
            // latter.
            Err(_) => parse_json::<IgnoredAny>(&self.body, "body").map(|_| false),
        }
    }
}

/// Parses JSON and names the failing field path in the error. The plain
/// parser runs first; only a failure pays for the path-tracking second pass.
pub(crate) fn parse_json<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &str,
) -> Result<T, AdapterError> {
    if let Ok(value) = crate::cloudevents::read_json(bytes) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(value) => Ok(value),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Err(if path == "." || path.is_empty() {
                AdapterError::InvalidInput(format!("{what} is not valid: {inner}"))
            } else {
                AdapterError::InvalidInput(format!("{what} field `{path}`: {inner}"))
            })
        }
    }
}

impl serde::Serialize for Severity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Severity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Severity::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("`{s}` is not one of info, minor, major, critical"))
        })
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Loc {
        lat: f64,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Report {
        no: String,
        location: Loc,
    }

    #[test]
    fn json_errors_name_the_field_path() {
        let msg = Inbound::post_json(r#"{"no":"1","location":{"lat":"north"}}"#);
        let err = msg.json::<Report>().unwrap_err();
        match err {
            AdapterError::InvalidInput(m) => assert!(m.contains("location.lat"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
        let err = Inbound::post_json(r#"{"location":{"lat":1}}"#)
            .json::<Report>()
            .unwrap_err();
        assert!(matches!(err, AdapterError::InvalidInput(m) if m.contains("`no`")));
    }

    #[test]
    fn extension_replaces_existing_value() {
        let e = Event::new("gov.x.y")
            .with_extension("station", "a")
            .with_extension("station", "b");
        assert_eq!(e.extensions.len(), 1);
        assert_eq!(e.extension("station"), Some("b"));
    }
}
