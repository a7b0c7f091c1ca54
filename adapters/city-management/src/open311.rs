//! Open311 GeoReport v2 wire formats: the `POST requests` form, and the
//! service-request lists servers answer in XML or JSON.

use govhub_sdk::AdapterError;
use std::collections::BTreeMap;

/// A flat Open311 record (a posted request, or one `request` of a list):
/// field → text. `attribute[...]` fields are kept apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Plain fields.
    pub fields: BTreeMap<String, String>,
    /// `attribute[CODE]` values.
    pub attributes: BTreeMap<String, String>,
}

impl Record {
    /// A field, trimmed; empty counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn insert(&mut self, name: &str, value: String) {
        match name
            .strip_prefix("attribute[")
            .and_then(|n| n.strip_suffix(']'))
        {
            Some(code) => {
                self.attributes.insert(code.to_string(), value);
            }
            None => {
                self.fields.insert(name.to_string(), value);
            }
        }
    }
}

/// An `application/x-www-form-urlencoded` body.
pub fn parse_form(body: &[u8]) -> Record {
    let mut r = Record::default();
    for (k, v) in form_urlencoded::parse(body) {
        r.insert(&k, v.into_owned());
    }
    r
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn record_from_object(obj: &serde_json::Map<String, serde_json::Value>) -> Record {
    let mut r = Record::default();
    for (k, v) in obj {
        if k == "attributes" || k == "attribute" {
            if let Some(map) = v.as_object() {
                for (code, value) in map {
                    if let Some(s) = scalar(value) {
                        r.attributes.insert(code.clone(), s);
                    }
                }
            }
            continue;
        }
        if let Some(s) = scalar(v) {
            r.insert(k, s);
        }
    }
    r
}

/// A JSON request body (one object with the form's fields).
pub fn parse_json_request(body: &[u8]) -> Result<Record, AdapterError> {
    let v: serde_json::Value = parse_lenient_json(body)?;
    let obj = v.as_object().ok_or_else(|| {
        AdapterError::InvalidInput("body: a JSON service request must be an object".into())
    })?;
    Ok(record_from_object(obj))
}

/// Quotes number tokens with leading zeros (`006` → `"006"`), outside
/// strings. Service codes are identifiers, and servers (the GeoReport v2
/// specification's own JSON example among them) write them unquoted,
/// which JSON does not allow.
fn quote_leading_zeros(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(escaped) = chars.next() {
                    out.push(escaped);
                }
            } else if c == '"' {
                in_string = false;
            }
            previous = c;
            continue;
        }
        let leading_zero = c == '0'
            && chars.peek().is_some_and(|n| n.is_ascii_digit())
            && !(previous.is_ascii_digit() || matches!(previous, '.' | 'e' | 'E' | '+' | '-'));
        if leading_zero {
            out.push('"');
            out.push(c);
            while let Some(d) = chars.next_if(|d| d.is_ascii_digit()) {
                out.push(d);
            }
            out.push('"');
            previous = '"';
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        out.push(c);
        previous = c;
    }
    out
}

/// JSON, tolerating unquoted leading-zero codes (see [`quote_leading_zeros`]).
pub fn parse_lenient_json(body: &[u8]) -> Result<serde_json::Value, AdapterError> {
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(first) => {
            let text = std::str::from_utf8(body)
                .map_err(|e| AdapterError::InvalidInput(format!("body is not UTF-8: {e}")))?;
            serde_json::from_str(&quote_leading_zeros(text))
                .map_err(|_| AdapterError::InvalidInput(format!("body is not valid JSON: {first}")))
        }
    }
}

/// A list of service requests, XML (`<service_requests><request>...`) or
/// JSON (an array of objects), as GET and POST `requests` answer.
pub fn parse_list(body: &[u8]) -> Result<Vec<Record>, AdapterError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'<') {
        let text = std::str::from_utf8(body)
            .map_err(|e| AdapterError::Unavailable(format!("Open311 answer is not UTF-8: {e}")))?;
        let doc = roxmltree::Document::parse(text)
            .map_err(|e| AdapterError::Unavailable(format!("Open311 answer is not XML: {e}")))?;
        let root = doc.root_element();
        if root.tag_name().name() != "service_requests" {
            return Err(AdapterError::Unavailable(format!(
                "Open311 answer: root element `{}`, expected `service_requests`",
                root.tag_name().name()
            )));
        }
        return Ok(root
            .children()
            .filter(|n| n.is_element() && n.tag_name().name() == "request")
            .map(|req| {
                let mut r = Record::default();
                for f in req.children().filter(|n| n.is_element()) {
                    r.insert(
                        f.tag_name().name(),
                        f.text().unwrap_or_default().to_string(),
                    );
                }
                r
            })
            .collect());
    }
    let v = parse_lenient_json(body).map_err(|e| match e {
        AdapterError::InvalidInput(m) => AdapterError::Unavailable(format!("Open311 answer: {m}")),
        other => other,
    })?;
    let items = v.as_array().ok_or_else(|| {
        AdapterError::Unavailable("Open311 answer: expected a JSON array of requests".into())
    })?;
    Ok(items
        .iter()
        .filter_map(|i| i.as_object())
        .map(record_from_object)
        .collect())
}

/// A form body for `POST requests`.
pub fn encode_form(fields: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zero_codes_are_quoted_outside_strings_only() {
        assert_eq!(
            quote_leading_zeros(r#"{"a":006,"b":"x 006","c":0.5,"d":10,"e":"田"}"#),
            r#"{"a":"006","b":"x 006","c":0.5,"d":10,"e":"田"}"#
        );
    }
}
