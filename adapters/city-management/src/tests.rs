use super::*;
use govhub_sdk::http::Response;
use govhub_sdk::testing::Harness;

const FORM: &str = include_str!("../samples/citizen-request.form");
const JSON: &str = include_str!("../samples/citizen-request.json");
const SPEC_POST: &str = include_str!("../samples/open311-georeport-v2/post-request.form");
const SPEC_POST_XML: &str = include_str!("../samples/open311-georeport-v2/post-response.xml");
const SPEC_POST_JSON: &str = include_str!("../samples/open311-georeport-v2/post-response.json");
const SPEC_GET_XML: &str = include_str!("../samples/open311-georeport-v2/get-requests.xml");
const SPEC_GET_JSON: &str = include_str!("../samples/open311-georeport-v2/get-requests.json");

fn form(body: &str) -> Inbound {
    Inbound::post("application/x-www-form-urlencoded", body)
}

fn expected_vending_event() -> Event {
    Event::new("gov.incident.reported")
        .with_id("open311-a12d95c428571a67")
        .with_source("urn:govhub:city-management")
        .with_category("vendor.street")
        .with_severity(Severity::Minor)
        .with_json(&serde_json::json!({
            "service_code": "003",
            "service_name": "占道经营 street vending",
            "description": "菜市场西侧人行道占道经营",
            "address": "景芳路 菜市场西侧",
            "media_url": "https://img.example/311/8841.jpg",
            "attributes": {"stall_count": "4"},
            "reporter": {"first_name": null, "last_name": null, "email": null, "phone": null},
        }))
        .with_location(30.2447, 120.1921)
}

#[test]
fn a_citizen_form_becomes_exactly_this_event_and_json_the_same() {
    let from_form = Harness::new().ingest::<CityManagement>(form(FORM)).unwrap();
    assert_eq!(from_form, vec![expected_vending_event()]);
    let from_json = Harness::new()
        .ingest::<CityManagement>(Inbound::post_json(JSON))
        .unwrap();
    assert_eq!(
        from_json, from_form,
        "the same request, the same event (and id)"
    );
}

#[test]
fn the_specifications_post_request_parses() {
    let e = &Harness::new()
        .ingest::<CityManagement>(form(SPEC_POST))
        .unwrap()[0];
    assert_eq!(e.category.as_deref(), Some("city.road-damage"));
    assert_eq!((e.lat, e.lon), (Some(37.76524078), Some(-122.4212043)));
    let data: serde_json::Value = e.json().unwrap();
    assert_eq!(
        data["description"],
        "A large sinkhole is destroying the street"
    );
    assert_eq!(data["attributes"]["WHISDORN"], "COISL001");
    assert_eq!(data["reporter"]["email"], "smit333@sfgov.edu");
    assert_eq!(data["address"], "1234 5th street");
}

#[test]
fn malformed_requests_name_the_field() {
    let cases = [
        (FORM.replace("service_code=003&", ""), "service_code"),
        (FORM.replace("service_code=003", "service_code=999"), "service_code"),
        (FORM.replace("lat=30.2447", "lat=north"), "`lat`"),
        (
            FORM.replace("lat=30.2447&", "").replace(
                "address_string=%E6%99%AF%E8%8A%B3%E8%B7%AF+%E8%8F%9C%E5%B8%82%E5%9C%BA%E8%A5%BF%E4%BE%A7&",
                "",
            ),
            "address_string",
        ),
    ];
    for (body, field) in cases {
        match Harness::new().ingest::<CityManagement>(form(&body)) {
            Err(AdapterError::InvalidInput(m)) => assert!(m.contains(field), "{field}: {m}"),
            other => panic!("{field}: {other:?}"),
        }
    }
}

fn dispatch() -> Event {
    Event::new("gov.incident.reported")
        .with_id("evt-311")
        .with_case("case-311")
        .with_category("vendor.street")
        .with_location(30.2447, 120.1921)
        .with_json(&serde_json::json!({"description": "占道经营", "address": "景芳路"}))
}

#[test]
fn deliver_posts_a_service_request_and_reads_either_answer() {
    for (format, answer) in [("xml", SPEC_POST_XML), ("json", SPEC_POST_JSON)] {
        let h = Harness::new()
            .config("base_url", "http://127.0.0.1:9105/city")
            .config("format", format)
            .config("api_key", "k-1")
            .respond(move |_| Response::new(201, answer));
        let outcome = h.deliver::<CityManagement>(dispatch()).unwrap();
        assert_eq!(outcome.reference.as_deref(), Some("293944"), "{format}");
        assert!(outcome.note.unwrap().contains("The City will inspect"));
        let sent = &h.requests()[0];
        assert_eq!(
            sent.url,
            format!("http://127.0.0.1:9105/city/requests.{format}")
        );
        let posted = open311::parse_form(&sent.body);
        assert_eq!(posted.get("service_code"), Some("003"));
        assert_eq!(posted.get("api_key"), Some("k-1"));
        assert_eq!(posted.attributes["govhub_case"], "case-311");
        assert!(
            h.state("sr/293944").is_some(),
            "the request is remembered for polling"
        );
    }
    let h = Harness::new().config("base_url", "http://x");
    let odd = Event::new("gov.incident.reported")
        .with_id("e")
        .with_category("weather.typhoon");
    assert!(
        matches!(h.deliver::<CityManagement>(odd), Err(AdapterError::Rejected(m)) if m.contains("default_service_code"))
    );
}

#[test]
fn poll_turns_the_specifications_status_lists_into_case_events() {
    for answer in [SPEC_GET_XML, SPEC_GET_JSON] {
        let h = Harness::new()
            .config("base_url", "http://127.0.0.1:9105/city")
            .respond(move |_| Response::new(200, answer));
        // As if govhub had made both requests.
        h.run(|| {
            for (id, case) in [("638344", "case-a"), ("638349", "case-b")] {
                track(
                    id,
                    &Tracked {
                        case: Some(case.into()),
                        event: format!("e-{id}"),
                        status: None,
                    },
                )
                .unwrap();
            }
        });
        let polled = h.poll::<CityManagement>(None).unwrap();
        let summary: Vec<(String, Option<String>)> = polled
            .events
            .iter()
            .map(|e| (e.type_.clone(), e.caseid.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "gov.incident.resolved".to_string(),
                    Some("case-a".to_string())
                ),
                (
                    "gov.incident.accepted".to_string(),
                    Some("case-b".to_string())
                ),
            ]
        );
        let notes: serde_json::Value = polled.events[0].json().unwrap();
        assert_eq!(notes["status_notes"], "Duplicate request.");
        assert_eq!(
            polled.events[0].time.as_deref(),
            Some("2010-04-14T06:37:38-08:00")
        );
        // The open request keeps the window: the cursor is its request time.
        assert_eq!(polled.cursor.as_deref(), Some("2010-04-19T06:37:38-08:00"));
        // Nothing changed since: nothing new.
        assert!(h
            .poll::<CityManagement>(polled.cursor)
            .unwrap()
            .events
            .is_empty());
        assert!(
            h.requests()[1]
                .url
                .ends_with("start_date=2010-04-19T06%3A37%3A38-08%3A00"),
            "{}",
            h.requests()[1].url
        );
    }
}

#[test]
fn readme_table_matches_the_code() {
    let readme = include_str!("../README.md");
    for s in SERVICES {
        let line = format!("| {} | {} | `{}` |", s.code, s.name, s.taxonomy);
        assert!(readme.contains(&line), "README.md lacks: {line}");
    }
}
