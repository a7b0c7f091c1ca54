//! Labelling an event, and the view of it one recipient gets.
//!
//! Labels are computed when the hub accepts an event and stored with it:
//! the `datagrade` extension (the highest of the matching rules' grades
//! and of the categories present) and `datalabels` (the categories
//! present, comma-separated). What a producer wrote there is overwritten.
//! The view is computed from the stored event whenever it leaves the hub
//! or is read: each labelled field present gets its recipient's action;
//! a category without a grant is dropped.

use super::functions;
use super::policy::{Action, Category, Grade, Grant, Rule};
use govhub_sdk::Event;
use std::collections::BTreeSet;

/// The extension holding the event's grade.
pub const GRADE: &str = "datagrade";
/// The extension holding the categories present.
pub const LABELS: &str = "datalabels";

/// Where a labelled value sits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// A JSON pointer into `data`.
    Data(String),
    /// An attribute: `lat`, `lon`, `subject`.
    Attribute(String),
}

impl Field {
    /// How a flow record names it: the pointer, or `@lat`.
    pub fn name(&self) -> String {
        match self {
            Field::Data(p) => p.clone(),
            Field::Attribute(a) => format!("@{a}"),
        }
    }
}

/// What one recipient got of one event: each labelled field present and
/// the action applied, or why nothing went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The event's grade.
    pub grade: Grade,
    /// Each labelled field present, its category and what was done.
    pub fields: Vec<(Field, Category, Action)>,
    /// `data` was not JSON and something in it was not granted in the
    /// clear: it was dropped whole.
    pub data_dropped: bool,
}

/// How the view reaches what it needs beyond the event: the recipient's
/// pseudonym key and the grid of a place.
pub struct Context<'a> {
    /// The key and its version, when the grant pseudonymizes.
    pub key: Option<(&'a ring::hmac::Key, u32)>,
    /// The grid of a point, when the deployment has a map.
    pub grid_of: &'a dyn Fn(f64, f64) -> Option<String>,
}

fn matching<'a>(rules: &'a [Rule], ty: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
    rules.iter().filter(move |r| r.glob.matches(ty))
}

/// The labelled fields of an event of type `ty`, in rule order, each
/// once.
pub fn fields_for(rules: &[Rule], ty: &str) -> Vec<(Field, Category)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in matching(rules, ty) {
        for (p, c) in &r.fields {
            if seen.insert(Field::Data(p.clone())) {
                out.push((Field::Data(p.clone()), *c));
            }
        }
        for (a, c) in &r.attributes {
            if seen.insert(Field::Attribute(a.clone())) {
                out.push((Field::Attribute(a.clone()), *c));
            }
        }
    }
    out
}

/// Whether `event.data` is (said to be) JSON.
fn json_data(event: &Event) -> Option<&[u8]> {
    let data = event.data.as_deref()?;
    let json_type = event
        .datacontenttype
        .as_deref()
        .map(|t| {
            let t = t.split(';').next().unwrap_or("").trim();
            t == "application/json" || t.ends_with("+json")
        })
        .unwrap_or(true);
    json_type.then_some(data)
}

/// The raw JSON values of one level of a document, borrowed from it.
type Level<'a> =
    std::collections::HashMap<std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue>;

/// Whether the JSON document `top` (its first level, read once) holds a
/// non-null value at `pointer`, read without building the document:
/// deeper levels are read as they are reached, and a long text beside
/// the labelled fields is never copied. `Err` when it cannot be read.
fn present(top: &Level<'_>, pointer: &str) -> Result<bool, ()> {
    use serde_json::value::RawValue;
    let mut tokens = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"));
    let Some(first) = tokens.next() else {
        return Ok(true);
    };
    let Some(mut raw) = top.get(first.as_str()).copied() else {
        return Ok(false);
    };
    for key in tokens {
        let text = raw.get().trim_start();
        raw = if text.starts_with('{') {
            let map: Level<'_> = serde_json::from_str(raw.get()).map_err(|_| ())?;
            match map.get(key.as_str()) {
                Some(v) => v,
                None => return Ok(false),
            }
        } else if text.starts_with('[') {
            let list: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|_| ())?;
            match key.parse::<usize>().ok().and_then(|i| list.get(i)) {
                Some(v) => v,
                None => return Ok(false),
            }
        } else {
            return Ok(false);
        };
    }
    Ok(raw.get().trim() != "null")
}

fn data_json(event: &Event) -> Option<serde_json::Value> {
    serde_json::from_slice(json_data(event)?).ok()
}

fn attribute_present(event: &Event, name: &str) -> bool {
    match name {
        "lat" => event.lat.is_some(),
        "lon" => event.lon.is_some(),
        "subject" => event.subject.is_some(),
        _ => false,
    }
}

fn set_extension(event: &mut Event, name: &str, value: Option<String>) {
    event.extensions.retain(|a| a.name != name);
    if let Some(v) = value {
        event.extensions.push(govhub_sdk::Attribute {
            name: name.into(),
            value: v,
        });
    }
}

/// The event's grade as labelled (general when it has none).
pub fn grade_of(event: &Event) -> Grade {
    match event.extension(GRADE) {
        Some("core") => Grade::Core,
        Some("important") => Grade::Important,
        _ => Grade::General,
    }
}

/// Labels an event: its grade and the categories present, overwriting
/// whatever a producer set. An event no rule matches carries neither.
pub fn label(rules: &[Rule], event: &mut Event) {
    set_extension(event, GRADE, None);
    set_extension(event, LABELS, None);
    let mut grade: Option<Grade> = None;
    for r in matching(rules, &event.type_) {
        grade = grade.max(Some(r.grade));
    }
    let Some(mut grade) = grade else { return };
    let fields = fields_for(rules, &event.type_);
    // Data that is not JSON (or not an object) cannot be looked into:
    // every category the rules name for it counts as present.
    let top: Option<Level<'_>> = json_data(event).and_then(|d| serde_json::from_slice(d).ok());
    let mut found = BTreeSet::new();
    for (field, category) in &fields {
        let here = match field {
            Field::Data(p) => match &top {
                Some(t) => present(t, p).unwrap_or(true),
                None => event.data.is_some(),
            },
            Field::Attribute(a) => attribute_present(event, a),
        };
        if here {
            found.insert(*category);
            grade = grade.max(category.grade());
        }
    }
    let present = found;
    set_extension(event, GRADE, Some(grade.as_str().into()));
    if !present.is_empty() {
        let names: Vec<&str> = present.iter().map(|c| c.as_str()).collect();
        set_extension(event, LABELS, Some(names.join(",")));
    }
}

/// Applies `action` to one JSON value of `category`; `None` removes it.
fn transform(
    value: &serde_json::Value,
    category: Category,
    action: Action,
    event: &Event,
    cx: &Context<'_>,
) -> Option<serde_json::Value> {
    use serde_json::Value;
    match action {
        Action::Clear => Some(value.clone()),
        Action::Drop => None,
        Action::Generalize if category == Category::Location => {
            let point = match value {
                Value::Object(o) => o
                    .get("lat")
                    .and_then(Value::as_f64)
                    .zip(o.get("lon").and_then(Value::as_f64)),
                Value::Array(a) if a.len() == 2 => {
                    a[1].as_f64().zip(a[0].as_f64()) // GeoJSON order: lon, lat
                }
                Value::String(s) => s
                    .split_once(',')
                    .and_then(|(a, b)| a.trim().parse().ok().zip(b.trim().parse().ok())),
                _ => None,
            };
            point
                .and_then(|(lat, lon)| (cx.grid_of)(lat, lon))
                .or_else(|| event.grid.clone())
                .map(Value::String)
        }
        Action::Generalize => match value {
            Value::String(s) => functions::generalize_birth(s).map(Value::String),
            _ => None,
        },
        Action::Mask | Action::Pseudonymize => match value {
            Value::String(s) if action == Action::Mask => {
                Some(Value::String(functions::mask(category, s)))
            }
            Value::String(s) => {
                let (key, version) = cx.key?;
                Some(Value::String(functions::pseudonymize(
                    key, version, category, s,
                )))
            }
            Value::Number(n) => {
                transform(&Value::String(n.to_string()), category, action, event, cx)
            }
            // Every string inside (a list of photos, a reporter's
            // several phones) gets it.
            Value::Array(items) => Some(Value::Array(
                items
                    .iter()
                    .filter_map(|v| transform(v, category, action, event, cx))
                    .collect(),
            )),
            Value::Object(map) => Some(Value::Object(
                map.iter()
                    .filter_map(|(k, v)| {
                        transform(v, category, action, event, cx).map(|v| (k.clone(), v))
                    })
                    .collect(),
            )),
            other => Some(other.clone()),
        },
    }
}

fn remove_pointer(root: &mut serde_json::Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match root.pointer_mut(parent) {
        Some(serde_json::Value::Object(o)) => {
            o.remove(&key);
        }
        Some(serde_json::Value::Array(a)) => {
            if let Ok(i) = key.parse::<usize>() {
                if i < a.len() {
                    a.remove(i);
                }
            }
        }
        _ => {}
    }
}

/// The view of `event` under `grant`: each labelled field present gets
/// its action. Returns the view and what was applied.
pub fn apply(rules: &[Rule], event: &Event, grant: &Grant, cx: &Context<'_>) -> (Event, Applied) {
    let mut view = event.clone();
    let mut applied = Applied {
        grade: grade_of(event),
        ..Applied::default()
    };
    let fields = fields_for(rules, &event.type_);
    if fields.is_empty() {
        return (view, applied);
    }
    let mut data = data_json(event);
    let mut data_changed = false;
    for (field, category) in fields {
        let action = grant.action(category);
        match &field {
            Field::Data(pointer) => {
                let Some(d) = data.as_mut() else {
                    // Opaque data: in the clear only if the grant says so.
                    if event.data.is_some() && action != Action::Clear {
                        applied.data_dropped = true;
                    }
                    continue;
                };
                let Some(value) = d.pointer(pointer).filter(|v| !v.is_null()).cloned() else {
                    continue;
                };
                applied.fields.push((field.clone(), category, action));
                if action == Action::Clear {
                    continue;
                }
                data_changed = true;
                match transform(&value, category, action, event, cx) {
                    Some(v) => {
                        if let Some(slot) = d.pointer_mut(pointer) {
                            *slot = v;
                        }
                    }
                    None => remove_pointer(d, pointer),
                }
            }
            Field::Attribute(name) => {
                if !attribute_present(event, name) {
                    continue;
                }
                applied.fields.push((field.clone(), category, action));
                match (name.as_str(), action) {
                    (_, Action::Clear) => {}
                    // A place generalized is its grid, which the event
                    // carries already: the coordinates go.
                    ("lat", _) => view.lat = None,
                    ("lon", _) => view.lon = None,
                    ("subject", a) => {
                        view.subject = view.subject.as_ref().and_then(|s| {
                            transform(
                                &serde_json::Value::String(s.clone()),
                                category,
                                a,
                                event,
                                cx,
                            )
                            .and_then(|v| v.as_str().map(str::to_string))
                        })
                    }
                    _ => {}
                }
            }
        }
    }
    if applied.data_dropped {
        view.data = None;
        view.datacontenttype = None;
    } else if data_changed {
        if let Some(d) = data {
            view.data = serde_json::to_vec(&d).ok();
        }
    }
    (view, applied)
}

/// Every labelled value of `event` in the clear, as text, with the mask
/// that stands in for it in a log line or an error. Short values (two
/// characters or fewer, a surname alone) are left out: replacing them
/// everywhere would garble the text and hide little.
pub fn clear_values(rules: &[Rule], event: &Event) -> Vec<(String, String)> {
    let fields = fields_for(rules, &event.type_);
    if fields.is_empty() {
        return Vec::new();
    }
    let data = data_json(event);
    let mut out = Vec::new();
    let mut push = |category: Category, v: &serde_json::Value| {
        let mut strings = Vec::new();
        collect_strings(v, &mut strings);
        for s in strings {
            if s.chars().count() > 2 {
                let masked = match category {
                    // Free text masked keeps its words (only the numbers
                    // and plates in it go): a log line gets none of it.
                    Category::Face | Category::Location | Category::Minor | Category::Text => {
                        format!("[{}]", category.as_str())
                    }
                    c => functions::mask(c, &s),
                };
                out.push((s, masked));
            }
        }
    };
    for (field, category) in fields {
        match field {
            Field::Data(p) => {
                if let Some(v) = data.as_ref().and_then(|d| d.pointer(&p)) {
                    push(category, v);
                }
            }
            Field::Attribute(a) => match a.as_str() {
                "subject" => {
                    if let Some(s) = &event.subject {
                        push(category, &serde_json::Value::String(s.clone()));
                    }
                }
                "lat" | "lon" => {
                    let v = if a == "lat" { event.lat } else { event.lon };
                    if let Some(x) = v {
                        push(category, &serde_json::Value::String(x.to_string()));
                    }
                }
                _ => {}
            },
        }
    }
    // The longest first, so a value inside another is not replaced first.
    out.sort_by_key(|v| std::cmp::Reverse(v.0.len()));
    out
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Number(n) => out.push(n.to_string()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// `text` with each of `values` replaced by its mask, and every phone
/// number, ID number and plate masked: for log lines and error messages,
/// which may quote what an adapter saw.
pub fn scrub(text: &str, values: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (clear, masked) in values {
        if out.contains(clear.as_str()) {
            out = out.replace(clear.as_str(), masked);
        }
    }
    // A quote cut short (a department's answer, truncated by the SDK
    // with `…`) may end in the first part of a value.
    let body_end = out.trim_end().trim_end_matches('…').len();
    let (body, tail) = out.split_at(body_end);
    let mut cut = None;
    for (clear, _) in values {
        let chars: Vec<(usize, char)> = clear.char_indices().collect();
        for k in (3..chars.len()).rev() {
            let prefix = &clear[..chars[k].0];
            if body.ends_with(prefix) {
                cut = cut.max(Some(prefix.chars().count()));
                break;
            }
        }
    }
    if let Some(n) = cut {
        let keep: String = {
            let chars: Vec<char> = body.chars().collect();
            chars[..chars.len() - n].iter().collect()
        };
        out = format!("{keep}{}{tail}", "*".repeat(n));
    }
    if functions::has_patterns(&out) {
        out = functions::mask_text(&out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::policy::{compile_rules, parse_grant, ClassificationRule};
    use std::collections::BTreeMap;

    fn rules() -> Vec<Rule> {
        let fields: BTreeMap<String, String> = [
            ("/reporter/name", "pi.name"),
            ("/reporter/phone", "pi.phone"),
            ("/reporter/id_number", "pi.id"),
            ("/plate", "pi.plate"),
            ("/snapshot_url", "pi.face"),
            ("/description", "pi.text"),
            ("/location", "pi.location"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        compile_rules(&[ClassificationRule {
            type_: "gov.incident.*".into(),
            fields,
            attributes: [("lat".to_string(), "pi.location".to_string())]
                .into_iter()
                .chain([("lon".to_string(), "pi.location".to_string())])
                .collect(),
            grade: Grade::General,
        }])
        .unwrap()
    }

    fn event() -> Event {
        Event::new("gov.incident.reported")
            .with_id("e1")
            .with_source("urn:test")
            .with_grid("yingfeng/yingyi/2")
            .with_location(30.2, 120.2)
            .with_json(&serde_json::json!({
                "reporter": {"name": "欧阳娜娜", "phone": "+86 138 1234 1234", "id_number": "33010919900101123X"},
                "plate": "浙AD12345",
                "snapshot_url": "http://cam/1.jpg",
                "description": "打电话13900001111",
                "location": {"lat": 30.2, "lon": 120.2},
                "other": "kept",
            }))
            .with_extension(GRADE, "general")
            .with_extension(LABELS, "nothing")
    }

    fn cx_grid(lat: f64, _: f64) -> Option<String> {
        (lat > 30.0).then(|| "yingfeng/yingyi/2".to_string())
    }

    #[test]
    fn labels_are_the_hubs_and_sensitive_fields_raise_the_grade() {
        let mut e = event();
        label(&rules(), &mut e);
        assert_eq!(
            e.extension(GRADE),
            Some("important"),
            "an ID and a face are sensitive"
        );
        assert_eq!(
            e.extension(LABELS),
            Some("pi.name,pi.phone,pi.id,pi.plate,pi.face,pi.location,pi.text")
        );
        assert_eq!(
            e.extensions.iter().filter(|a| a.name == GRADE).count(),
            1,
            "the producer's went"
        );
        let mut other = Event::new("gov.alert.issued").with_extension(GRADE, "core");
        label(&rules(), &mut other);
        assert_eq!(
            other.extension(GRADE),
            None,
            "no rule: no grade, and a forged one is gone"
        );
    }

    #[test]
    fn each_recipient_sees_what_its_grant_says_and_nothing_ungranted() {
        let rules = rules();
        let mut e = event();
        label(&rules, &mut e);
        let key = functions::recipient_key(b"0123456789abcdef0123456789abcdef", "village", 1);
        let cx = Context {
            key: Some((&key, 1)),
            grid_of: &cx_grid,
        };
        let grant = parse_grant(
            &[
                ("pi.name", "mask"),
                ("pi.phone", "pseudonymize"),
                ("pi.plate", "clear"),
                ("pi.text", "mask"),
                ("pi.location", "generalize"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
        .unwrap();
        let (view, applied) = apply(&rules, &e, &grant, &cx);
        let d: serde_json::Value = serde_json::from_slice(view.data.as_deref().unwrap()).unwrap();
        assert_eq!(d["reporter"]["name"], "欧阳**");
        assert!(d["reporter"]["phone"].as_str().unwrap().starts_with("ps1:"));
        assert!(
            d["reporter"].get("id_number").is_none(),
            "no grant: dropped"
        );
        assert!(d.get("snapshot_url").is_none());
        assert_eq!(d["plate"], "浙AD12345");
        assert_eq!(d["description"], "打电话139****1111");
        assert_eq!(d["location"], "yingfeng/yingyi/2");
        assert_eq!(d["other"], "kept", "unlabelled fields pass");
        assert_eq!((view.lat, view.lon), (None, None));
        assert_eq!(view.grid.as_deref(), Some("yingfeng/yingyi/2"));
        let actions: Vec<(String, &str)> = applied
            .fields
            .iter()
            .map(|(f, _, a)| (f.name(), a.as_str()))
            .collect();
        assert!(
            actions.contains(&("/reporter/id_number".into(), "drop")),
            "{actions:?}"
        );
        assert!(
            actions.contains(&("@lat".into(), "generalize")),
            "{actions:?}"
        );
        // Without the key a pseudonym cannot be made: the value goes.
        let cx = Context {
            key: None,
            grid_of: &cx_grid,
        };
        let (view, _) = apply(&rules, &e, &grant, &cx);
        let d: serde_json::Value = serde_json::from_slice(view.data.as_deref().unwrap()).unwrap();
        assert!(d["reporter"].get("phone").is_none());
    }

    #[test]
    fn opaque_data_goes_whole_or_not_at_all() {
        let rules = rules();
        let mut e = event();
        e.datacontenttype = Some("text/plain".into());
        e.data = Some("张三 13812341234".as_bytes().to_vec());
        label(&rules, &mut e);
        let cx = Context {
            key: None,
            grid_of: &cx_grid,
        };
        let (view, applied) = apply(&rules, &e, &Grant::default(), &cx);
        assert!(view.data.is_none() && applied.data_dropped);
        let (view, applied) = apply(&rules, &e, &Grant::clear(), &cx);
        assert!(view.data.is_some() && !applied.data_dropped);
    }

    #[test]
    fn log_lines_lose_the_values_they_quote() {
        let rules = rules();
        let e = event();
        let values = clear_values(&rules, &e);
        let line = "department said: 欧阳娜娜 at +86 138 1234 1234, plate 浙AD12345, id 33010919900101123X";
        let s = scrub(line, &values);
        for clear in ["欧阳娜娜", "1234 1234", "D12345", "19900101"] {
            assert!(!s.contains(clear), "`{clear}` in {s}");
        }
        assert!(s.starts_with("department said: 欧阳**"), "{s}");
        // Free text, whose mask keeps its words, goes whole.
        let s = scrub("adapter saw: 打电话13900001111 (description)", &values);
        assert_eq!(s, "adapter saw: [pi.text] (description)");
        // Quoted and cut short: the start of a value is not left.
        let cut = scrub(
            "department answered 422: {\"reporter\":{\"name\":\"欧阳娜…",
            &values,
        );
        assert!(!cut.contains("欧阳娜"), "{cut}");
    }
}
