use super::*;
use govhub_sdk::testing::Harness;

const DETECTION: &str = include_str!("../samples/detection-river.json");
const TYPHOON: &str = include_str!("../samples/typhoon-warning.xml");
const CAMERAS: &str =
    r#"{"cam-qjd-17": {"lat": 30.2331, "lon": 120.2046, "name": "钱江堤 望江门 17 号"}}"#;

fn harness() -> Harness {
    Harness::new().config("cameras", CAMERAS)
}

fn cap(xml: &str) -> Inbound {
    Inbound::post("application/cap+xml", xml)
}

#[test]
fn a_confident_detection_becomes_exactly_this_incident() {
    let got = harness()
        .ingest::<VideoPatrol>(Inbound::post_json(DETECTION))
        .unwrap();
    let want = Event::new("gov.incident.reported")
        .with_id("vp-20250801-140455-cam17")
        .with_source("urn:govhub:video-patrol")
        .with_subject("cam-qjd-17")
        .with_time("2025-08-01T14:04:55+08:00")
        .with_category("safety.water")
        .with_severity(Severity::Critical)
        .with_location(30.2331, 120.2046)
        .with_json(&serde_json::json!({
            "camera_id": "cam-qjd-17",
            "camera": "钱江堤 望江门 17 号",
            "class": "person_on_water",
            "class_name": "人员驾船下江 person on the water",
            "confidence": 0.93,
            "snapshot_url": "http://city-brain.example/snap/cam-qjd-17/140455.jpg",
        }));
    assert_eq!(got, vec![want]);
}

#[test]
fn an_unsure_detection_is_an_alert_for_a_person() {
    let unsure = DETECTION.replace("0.93", "0.55");
    let got = harness()
        .ingest::<VideoPatrol>(Inbound::post_json(unsure))
        .unwrap();
    assert_eq!(got[0].type_, "gov.alert.issued");
    let strict = harness()
        .config("min_confidence", "0.95")
        .ingest::<VideoPatrol>(Inbound::post_json(DETECTION))
        .unwrap();
    assert_eq!(strict[0].type_, "gov.alert.issued");
}

#[test]
fn malformed_detections_name_the_field() {
    let cases = [
        (
            DETECTION.replace("\"cam-qjd-17\"", "\"cam-nowhere\""),
            "camera_id",
        ),
        (DETECTION.replace("\"person_on_water\"", "\"ufo\""), "class"),
        (DETECTION.replace("0.93", "1.7"), "confidence"),
        (
            DETECTION.replace("\"detection_id\"", "\"id\""),
            "detection_id",
        ),
    ];
    for (body, field) in cases {
        match harness().ingest::<VideoPatrol>(Inbound::post_json(body)) {
            Err(AdapterError::InvalidInput(m)) => assert!(m.contains(field), "{field}: {m}"),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn a_cap_typhoon_warning_becomes_exactly_this_alert() {
    let got = harness().ingest::<VideoPatrol>(cap(TYPHOON)).unwrap();
    let e = &got[0];
    assert_eq!(e.type_, "gov.alert.issued");
    assert_eq!(e.id, "HZ-MET-20250801-TY09");
    assert_eq!(e.source, "urn:cap:warning@hzmet.example");
    assert_eq!(e.time.as_deref(), Some("2025-08-01T08:00:00+08:00"));
    assert_eq!(e.severity, Some(Severity::Critical));
    assert_eq!(e.category.as_deref(), Some("weather"));
    assert_eq!((e.lat, e.lon), (Some(30.231), Some(120.206)));
    assert_eq!(e.extension("msgtype"), Some("alert"));
    assert_eq!(e.extension("capstatus"), Some("exercise"));
    let data: serde_json::Value = e.json().unwrap();
    assert_eq!(
        data["infos"][0]["areas"][0]["polygons"][0][0],
        serde_json::json!([30.226, 120.186])
    );
    assert_eq!(
        data["infos"][0]["instruction"],
        "钱塘江沿岸人员远离江堤，船只回港避风。"
    );
}

#[test]
fn the_oasis_cap_1_2_appendix_examples_parse() {
    let samples = [
        include_str!("../samples/oasis-cap-1.2/appendix-a1.xml"),
        include_str!("../samples/oasis-cap-1.2/appendix-a2.xml"),
        include_str!("../samples/oasis-cap-1.2/appendix-a3.xml"),
        include_str!("../samples/oasis-cap-1.2/appendix-a4.xml"),
    ];
    let events: Vec<Event> = samples
        .iter()
        // Served as plain XML, sniffed as CAP by its namespace.
        .map(|xml| {
            harness()
                .ingest::<VideoPatrol>(Inbound::post("text/xml", *xml))
                .unwrap()
                .remove(0)
        })
        .collect();
    // A.1: a nationwide alert with no polygon: no place.
    assert_eq!(events[0].id, "43b080713727");
    assert_eq!(events[0].category.as_deref(), Some("safety.security"));
    assert_eq!(events[0].severity, Some(Severity::Major));
    assert_eq!(events[0].lat, None);
    // A.2: a polygon (five points, closed) and three geocodes.
    assert_eq!(events[1].source, "urn:cap:KSTO@NWS.NOAA.GOV");
    assert_eq!(
        (events[1].lat, events[1].lon),
        (Some(38.4875), Some(-119.93))
    );
    let a2: serde_json::Value = events[1].json().unwrap();
    assert_eq!(
        a2["infos"][0]["areas"][0]["geocodes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(a2["infos"][0]["event_codes"][0]["value"], "SVR");
    // A.3: an Update that references the first report; a circle.
    assert_eq!(events[2].extension("msgtype"), Some("update"));
    assert_eq!(
        events[2].extension("references"),
        Some("trinet@caltech.edu,TRI13970876.1,2003-06-11T20:30:00-07:00")
    );
    assert_eq!(
        (events[2].lat, events[2].lon),
        (Some(32.9525), Some(-115.5527))
    );
    assert_eq!(events[2].severity, Some(Severity::Info));
    // A.4: two languages, one alert.
    let a4: serde_json::Value = events[3].json().unwrap();
    assert_eq!(a4["infos"][1]["language"], "es-US");
    assert_eq!(a4["infos"][1]["event"], "Abducción de Niño");
    assert_eq!(events[3].category.as_deref(), Some("person.rescue"));
}

#[test]
fn malformed_cap_names_the_element() {
    let cases = [
        (
            TYPHOON.replace("<identifier>HZ-MET-20250801-TY09</identifier>", ""),
            "`identifier`",
        ),
        (
            TYPHOON.replace("<urgency>Expected</urgency>", ""),
            "`info[0]/urgency`",
        ),
        (
            TYPHOON.replace("<msgType>Alert</msgType>", "<msgType>Shout</msgType>"),
            "`msgType`",
        ),
        (
            TYPHOON.replace(" 30.226,120.186</polygon>", "</polygon>"),
            "`info[0]/area[0]/polygon[0]`",
        ),
        (
            TYPHOON.replace("30.236,120.226", "30.236;120.226"),
            "polygon[0]",
        ),
        (
            TYPHOON.replace(
                "urn:oasis:names:tc:emergency:cap:1.2",
                "urn:oasis:names:tc:emergency:cap:1.1",
            ),
            "not a CAP 1.2 alert",
        ),
        ("<alert".to_string(), "not XML"),
    ];
    for (xml, cause) in cases {
        match harness().ingest::<VideoPatrol>(cap(&xml)) {
            Err(AdapterError::InvalidInput(m)) => assert!(m.contains(cause), "{cause}: {m}"),
            other => panic!("{cause}: {other:?}"),
        }
    }
}

#[test]
fn readme_table_matches_the_code() {
    let readme = include_str!("../README.md");
    for c in CLASSES {
        let line = format!(
            "| `{}` | {} | `{}` | {} |",
            c.class, c.name, c.taxonomy, c.severity
        );
        assert!(readme.contains(&line), "README.md lacks: {line}");
    }
    for (cap, t) in CAP_CATEGORIES {
        let line = format!("| {cap} | `{t}` |");
        assert!(readme.contains(&line), "README.md lacks: {line}");
    }
}
