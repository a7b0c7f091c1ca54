//! The fuzz targets' bodies, shared by the libFuzzer binaries
//! (`tests/fuzz/fuzz_targets/`, nightly, `tests/fuzz.sh`) and the corpus
//! replay that runs on stable with every other test
//! (`tests/fuzz_replay.rs`). Each takes any bytes and must neither panic
//! nor hang; where a parser accepts its input, what it read must survive
//! being written and read again.

#![allow(dead_code)]

use govhub_sdk::cloudevents;
use govhub_sdk::testing::Harness;
use govhub_sdk::{Adapter, Inbound};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and corpus folder.
pub const ALL: &[(&str, Target)] = &[
    ("cloudevents_structured", cloudevents_structured),
    ("cloudevents_batch", cloudevents_batch),
    ("cloudevents_binary", cloudevents_binary),
    ("manifest", manifest),
    ("hub_config", hub_config),
    ("grid_map", grid_map),
    ("adapter_police", adapter_police),
    ("adapter_city_management", adapter_city_management),
    ("adapter_four_platforms", adapter_four_platforms),
    ("adapter_fire", adapter_fire),
    ("adapter_traffic", adapter_traffic),
    ("adapter_video_patrol", adapter_video_patrol),
    ("adapter_webhook", adapter_webhook),
];

/// An event read must read the same once written: the codec's writer and
/// reader agree on everything the reader accepts.
fn round_trips(event: &govhub_sdk::Event) {
    let written = cloudevents::to_vec(event);
    let again = cloudevents::from_slice(&written).unwrap_or_else(|e| {
        panic!(
            "an event the reader accepted, once written, is refused: {e}\n{}",
            String::from_utf8_lossy(&written)
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&cloudevents::to_vec(&again)),
        String::from_utf8_lossy(&written),
        "written twice, the event differs"
    );
    let (headers, body) = cloudevents::to_binary(event);
    let binary =
        cloudevents::from_binary(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())), &body)
            .unwrap_or_else(|e| {
                panic!("an accepted event in binary mode is refused: {e}: {headers:?}")
            });
    assert_eq!(
        String::from_utf8_lossy(&cloudevents::to_vec(&binary)),
        String::from_utf8_lossy(&written),
        "through binary mode, the event differs"
    );
}

/// `POST /v1/events`, `application/cloudevents+json`.
pub fn cloudevents_structured(data: &[u8]) {
    if let Ok(event) = cloudevents::from_slice(data) {
        round_trips(&event);
    }
}

/// `POST /v1/events`, `application/cloudevents-batch+json`.
pub fn cloudevents_batch(data: &[u8]) {
    if let Ok(events) = cloudevents::batch_from_slice(data) {
        for event in &events {
            round_trips(event);
        }
    }
}

/// `POST /v1/events` in binary mode: the input is an HTTP head and body,
/// `name: value` lines, an empty line, then the body (headers as the hub
/// hands them over: any bytes, UTF-8 read lossily).
pub fn cloudevents_binary(data: &[u8]) {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(data.len());
    let head = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 2..).unwrap_or_default();
    let headers: Vec<(&str, &str)> = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect();
    if !cloudevents::is_binary(headers.iter().copied()) {
        return;
    }
    if let Ok(event) = cloudevents::from_binary(headers.iter().copied(), body) {
        round_trips(&event);
    }
}

/// An adapter manifest (`adapters.d/*.toml`, `PUT /v1/adapters/{name}`).
pub fn manifest(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = govhub::runtime::Manifest::parse(text, Path::new("/fuzz/adapters.d/x.toml"));
    }
}

/// The hub's config file (what `govhub check-config` reads).
pub fn hub_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = govhub::config::Config::parse(text, Path::new("/fuzz"));
    }
}

/// A GeoJSON grid map (`grids.map`).
pub fn grid_map(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(map) = govhub::router::grids::GridMap::from_geojson(&value, None) {
            // Locating points must hold on any map that loaded.
            for (lat, lon) in [(30.18, 120.27), (0.0, 0.0), (f64::MAX, -f64::MAX)] {
                let _ = map.assign(lat, lon);
            }
        }
    }
}

/// The content types departments send, chosen by the input's second byte.
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/x-www-form-urlencoded",
    "application/cap+xml",
    "application/xml",
    "text/xml",
    "text/plain",
    "",
    "application/json; charset=utf-8",
];

/// An adapter's `ingest`, compiled natively: the first byte says how the
/// rest is read. Even: a raw body, its content type chosen by the second
/// byte. Odd: one of the adapter's own samples, changed at places the
/// rest of the input chooses (a value replaced, a key dropped or added),
/// so the mapping sees well-formed JSON with wrong shapes in it.
/// The config an adapter gets in the Yingfeng deployment (its manifest's
/// `[config]`, as the hub hands it over).
fn yingfeng_config(manifest: &str) -> BTreeMap<String, String> {
    // The demo fills in the module's hash when it builds the adapters.
    let manifest = manifest.replace("{{sha256}}", &"0".repeat(64));
    govhub::runtime::Manifest::parse(&manifest, Path::new("/fuzz/adapters.d/x.toml"))
        .expect("a Yingfeng manifest")
        .resolve_config()
        .expect("its config")
}

fn adapter<A: Adapter>(data: &[u8], samples: &[&str], config: &BTreeMap<String, String>) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let message = if mode % 2 == 0 {
        let Some((&ct, body)) = rest.split_first() else {
            return;
        };
        Inbound::post(
            CONTENT_TYPES[ct as usize % CONTENT_TYPES.len()],
            body.to_vec(),
        )
    } else {
        let json: Vec<&str> = samples
            .iter()
            .copied()
            .filter(|s| s.trim_start().starts_with('{') || s.trim_start().starts_with('['))
            .collect();
        if json.is_empty() {
            return;
        }
        let mut u = arbitrary::Unstructured::new(rest);
        let pick = u.choose_index(json.len()).unwrap_or(0);
        let mut value: serde_json::Value = serde_json::from_str(json[pick]).unwrap();
        let changes = u.int_in_range(1..=4u8).unwrap_or(1);
        for _ in 0..changes {
            shape::change(&mut value, &mut u);
        }
        Inbound::post_json(serde_json::to_vec(&value).unwrap())
    };
    let harness = config
        .iter()
        .fold(Harness::new(), |h, (k, v)| h.config(k, v.as_str()));
    if let Ok(events) = harness.ingest::<A>(message) {
        for event in &events {
            // What an adapter hands back crosses to the hub as CloudEvents.
            let _ = cloudevents::validate(event);
        }
    }
}

mod shape {
    use arbitrary::Unstructured;
    use serde_json::{Map, Value};

    /// One change at a place chosen by `u`.
    pub fn change(value: &mut Value, u: &mut Unstructured<'_>) {
        let descend = u.ratio(3u8, 4).unwrap_or(false);
        match value {
            Value::Object(map) if descend && !map.is_empty() => {
                let i = u.choose_index(map.len()).unwrap_or(0);
                let key = map.keys().nth(i).cloned().unwrap();
                match u.int_in_range(0..=3u8).unwrap_or(0) {
                    0 => {
                        map.remove(&key);
                    }
                    1 => {
                        map.insert(key, any(u, 2));
                    }
                    _ => change(map.get_mut(&key).unwrap(), u),
                }
            }
            Value::Array(items) if descend && !items.is_empty() => {
                let i = u.choose_index(items.len()).unwrap_or(0);
                change(&mut items[i], u);
            }
            _ => *value = any(u, 2),
        }
    }

    /// Any JSON value, `depth` levels deep at most.
    pub fn any(u: &mut Unstructured<'_>, depth: u8) -> Value {
        let kinds = if depth == 0 { 5 } else { 7 };
        match u.int_in_range(0..=kinds - 1).unwrap_or(0) {
            0 => Value::Null,
            1 => Value::Bool(u.arbitrary().unwrap_or(false)),
            2 => match u.int_in_range(0..=3u8).unwrap_or(0) {
                0 => Value::from(u.arbitrary::<i64>().unwrap_or(0)),
                1 => Value::from(u.arbitrary::<u64>().unwrap_or(0)),
                2 => serde_json::Number::from_f64(u.arbitrary::<f64>().unwrap_or(0.0))
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                _ => Value::from(-1),
            },
            3 => Value::String(u.arbitrary::<String>().unwrap_or_default()),
            4 => Value::String(
                [
                    "",
                    " ",
                    "有人落水",
                    "2026-13-45T25:61:61Z",
                    "-0",
                    "1e999",
                    "\u{0}",
                    "浙A·D1234F",
                ][u.choose_index(8).unwrap_or(0)]
                .to_string(),
            ),
            5 => Value::Array(
                (0..u.int_in_range(0..=3u8).unwrap_or(0))
                    .map(|_| any(u, depth - 1))
                    .collect(),
            ),
            _ => {
                let mut map = Map::new();
                for _ in 0..u.int_in_range(0..=3u8).unwrap_or(0) {
                    map.insert(
                        u.arbitrary::<String>().unwrap_or_default(),
                        any(u, depth - 1),
                    );
                }
                Value::Object(map)
            }
        }
    }
}

macro_rules! samples {
    ($($path:literal),* $(,)?) => {
        &[$(include_str!(concat!("../../adapters/", $path))),*]
    };
}

pub fn adapter_police(data: &[u8]) {
    static CONFIG: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        yingfeng_config(include_str!(
            "../../examples/yingfeng/adapters.d/police.toml"
        ))
    });
    adapter::<police_adapter::Police>(
        data,
        samples!(
            "police/samples/incident-compact.json",
            "police/samples/incident-river.json",
            "police/samples/status-on-scene.json",
        ),
        config,
    );
}

pub fn adapter_city_management(data: &[u8]) {
    static CONFIG: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        yingfeng_config(include_str!(
            "../../examples/yingfeng/adapters.d/city-management.toml"
        ))
    });
    adapter::<city_management_adapter::CityManagement>(
        data,
        samples!(
            "city-management/samples/citizen-request.json",
            "city-management/samples/citizen-request.form",
        ),
        config,
    );
}

pub fn adapter_four_platforms(data: &[u8]) {
    static CONFIG: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        yingfeng_config(include_str!(
            "../../examples/yingfeng/adapters.d/four-platforms.toml"
        ))
    });
    adapter::<four_platforms_adapter::FourPlatforms>(
        data,
        samples!(
            "four-platforms/samples/callback-handled.json",
            "four-platforms/samples/grid-worker-report.json",
        ),
        config,
    );
}

pub fn adapter_fire(data: &[u8]) {
    static CONFIG: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        yingfeng_config(include_str!("../../examples/yingfeng/adapters.d/fire.toml"))
    });
    adapter::<fire_adapter::Fire>(data, samples!("fire/samples/smoke-alarm.json"), config);
}

pub fn adapter_traffic(data: &[u8]) {
    static CONFIG: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        yingfeng_config(include_str!(
            "../../examples/yingfeng/adapters.d/traffic.toml"
        ))
    });
    adapter::<traffic_adapter::Traffic>(
        data,
        samples!(
            "traffic/samples/etrike-jam.json",
            "traffic/samples/status-done.json",
        ),
        config,
    );
}

pub fn adapter_video_patrol(data: &[u8]) {
    static CONFIG: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        yingfeng_config(include_str!(
            "../../examples/yingfeng/adapters.d/video-patrol.toml"
        ))
    });
    adapter::<video_patrol_adapter::VideoPatrol>(
        data,
        samples!(
            "video-patrol/samples/detection-river.json",
            "video-patrol/samples/typhoon-warning.xml",
        ),
        config,
    );
}

pub fn adapter_webhook(data: &[u8]) {
    static CONFIG: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(BTreeMap::new);
    adapter::<webhook_adapter::Webhook>(data, &[], config);
}
