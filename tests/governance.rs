//! Data governance: events carrying canary values of every category of
//! personal information go to recipients with different grants; then
//! everything that leaves the hub or can be read from it is searched for
//! them. Pseudonyms, failing closed, `core` data, the flow records and
//! `govhub audit flows|verify`.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::*;

/// A canary: a piece of one value that only its clear form holds, and
/// the categories whose clear grant lets it through (`pi.text~` also
/// under `mask`: masked free text keeps its words, only the numbers and
/// plates in it are masked).
const CANARIES: &[(&str, &[&str])] = &[
    ("鹂鸣", &["pi.name"]),
    ("00007777", &["pi.phone"]),
    ("0000 7777", &["pi.phone"]),
    ("19491231", &["pi.id"]),
    ("D71234", &["pi.plate", "pi.text"]),
    ("face-canary-5d1", &["pi.face"]),
    ("30.2327881", &["pi.location"]),
    ("120.2008771", &["pi.location"]),
    ("鹭栖苑", &["pi.address"]),
    ("06-15", &["pi.birth"]),
    ("翠鸟作证", &["pi.text~"]),
    ("kingfisher.7a", &["pi.contact"]),
    ("雏燕", &["pi.minor"]),
];

const ALL: &[&str] = &[
    "pi.name",
    "pi.phone",
    "pi.contact",
    "pi.id",
    "pi.plate",
    "pi.face",
    "pi.location",
    "pi.address",
    "pi.birth",
    "pi.text",
    "pi.minor",
];

fn canary_event(id: &str) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:test:reporter",
        "type": "gov.incident.reported",
        "category": "safety.public-order",
        "severity": "major",
        "grid": "yingfeng/yingyi/2",
        "lat": 30.2327881,
        "lon": 120.2008771,
        // A producer's own labels: the hub's replace them.
        "datagrade": "general",
        "datalabels": "nothing-here",
        "datacontenttype": "application/json",
        "data": {
            "reporter": {
                "name": "欧阳鹂鸣",
                "phone": "+86 139 0000 7777",
                "id_number": "11010519491231002X",
                "email": "kingfisher.7a@example.com",
                "birth": "1987-06-15",
            },
            "plate": "浙AD71234",
            "snapshot_url": "http://cam.example/face-canary-5d1.jpg",
            "address": "杭州市萧山区盈丰街道鹭栖苑7幢",
            "description": "报警人说：翠鸟作证，车牌浙AD71234",
            "minor": "未成年人 雏燕",
            "case_note": "unlabelled, passes",
        },
    })
}

const CLASSIFICATION: &str = r#"
[[classification]]
type = "gov.incident.reported"
grade = "general"
fields = { "/reporter/name" = "pi.name", "/reporter/phone" = "pi.phone", "/reporter/id_number" = "pi.id", "/reporter/email" = "pi.contact", "/reporter/birth" = "pi.birth", "/plate" = "pi.plate", "/snapshot_url" = "pi.face", "/address" = "pi.address", "/description" = "pi.text", "/minor" = "pi.minor" }
attributes = { lat = "pi.location", lon = "pi.location" }

[[classification]]
type = "gov.secret.*"
grade = "core"
"#;

/// The grants of the canary hub: category → action per recipient.
fn grants() -> HashMap<&'static str, HashMap<&'static str, &'static str>> {
    let all_clear: HashMap<_, _> = ALL.iter().map(|c| (*c, "clear")).collect();
    HashMap::from([
        ("police", all_clear.clone()),
        ("echo", all_clear),
        (
            "village",
            HashMap::from([
                ("pi.name", "mask"),
                ("pi.phone", "mask"),
                ("pi.plate", "mask"),
                ("pi.location", "generalize"),
                ("pi.address", "mask"),
                ("pi.birth", "generalize"),
                ("pi.text", "mask"),
                ("pi.contact", "pseudonymize"),
            ]),
        ),
        (
            "traffic",
            HashMap::from([
                ("pi.plate", "clear"),
                ("pi.location", "clear"),
                ("pi.contact", "pseudonymize"),
            ]),
        ),
        (
            "viewers",
            HashMap::from([
                ("pi.name", "mask"),
                ("pi.phone", "mask"),
                ("pi.id", "mask"),
                ("pi.plate", "mask"),
                ("pi.location", "generalize"),
                ("pi.address", "mask"),
                ("pi.birth", "generalize"),
                ("pi.text", "mask"),
                ("pi.contact", "mask"),
            ]),
        ),
    ])
}

fn grant_toml(table: &str, grant: &HashMap<&str, &str>) -> String {
    let mut out = format!("[{table}]\n");
    let mut pairs: Vec<_> = grant.iter().collect();
    pairs.sort();
    for (c, a) in pairs {
        out.push_str(&format!("\"{c}\" = \"{a}\"\n"));
    }
    out
}

/// The canaries that may appear where `grant` rules.
fn allowed(grant: &HashMap<&str, &str>) -> Vec<&'static str> {
    let lets_through = |c: &str| match c.strip_suffix('~') {
        Some(c) => matches!(grant.get(c), Some(&"clear") | Some(&"mask")),
        None => grant.get(c) == Some(&"clear"),
    };
    CANARIES
        .iter()
        .filter(|(_, cats)| cats.iter().any(|c| lets_through(c)))
        .map(|(t, _)| *t)
        .collect()
}

/// Every canary in `text` that `allowed` does not list.
fn leaks(text: &str, allowed: &[&str]) -> Vec<&'static str> {
    CANARIES
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| !allowed.contains(t) && text.contains(t))
        .collect()
}

/// The sha256 of the payload an adapter was handed, from what its
/// department received: a structured-mode body is the payload itself; a
/// binary-mode request is read back into the event and written as
/// CloudEvents JSON, as the hub writes what it hands over.
fn payload_sha256(r: &Received) -> String {
    use govhub_sdk::cloudevents;
    use sha2::Digest;
    let bytes = match r.header("content-type") {
        Some("application/cloudevents+json") => r.body.clone(),
        _ => {
            let headers = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
            cloudevents::to_vec(&cloudevents::from_binary(headers, &r.body).unwrap())
        }
    };
    hex::encode(sha2::Sha256::digest(&bytes))
}

struct Canary {
    hub: HubProcess,
    /// Where the hub exports its traces.
    otlp: otlp::Receiver,
    receivers: HashMap<&'static str, Receiver>,
    tokens: HashMap<&'static str, String>,
    dir: HubDir,
}

impl Canary {
    /// A hub labelling the canary event, four recipients (the police in
    /// the clear, through the chatty fixture, which logs the personal data
    /// it is handed and posts the event in structured mode; over webhooks:
    /// the village masked and pseudonymized; traffic plates and places
    /// only; `echo`, all clear, whose department quotes the request back in
    /// a refusal) and principals for each reader.
    fn start(extra: &str) -> Canary {
        let names = ["police", "village", "traffic", "echo", "fire"];
        let receivers: HashMap<&str, Receiver> =
            names.iter().map(|n| (*n, Receiver::start())).collect();
        receivers["echo"].answer(422);
        receivers["echo"].echo(true);
        let adapters: Vec<AdapterSpec> = names
            .iter()
            .map(|n| {
                let module = match *n {
                    "police" => "fixture-chatty",
                    _ => "webhook-adapter",
                };
                AdapterSpec::new(n, module).tables(&format!(
                    "[capabilities]\noutbound_hosts = [\"{h}\"]\n[config]\nurl = \"http://{h}/{n}\"",
                    h = receivers[n].host()
                ))
            })
            .collect();
        let tokens: HashMap<&str, String> = [
            "reporter",
            "village-dept",
            "traffic-dept",
            "command-room",
            "ops",
        ]
        .iter()
        .map(|n| (*n, token()))
        .collect();
        let g = grants();
        let mut config = String::from(CLASSIFICATION);
        config.push_str("\n[delivery]\nmax_attempts = 1\n");
        config.push_str(
            "\n[[routes]]\nname = \"public order: everyone\"\nmatch = { type = \"gov.incident.reported\" }\nto = [\"police\", \"village\", \"traffic\", \"echo\"]\n",
        );
        config.push_str(
            "\n[[routes]]\nname = \"secrets: the police\"\nmatch = { type = \"gov.secret.*\" }\nto = [\"police\"]\n",
        );
        for (who, role, extra) in [
            (
                "reporter",
                "department",
                "sources = [\"urn:test:reporter\"]",
            ),
            ("village-dept", "department", "adapters = [\"village\"]"),
            ("traffic-dept", "department", "adapters = [\"traffic\"]"),
            ("command-room", "viewer", ""),
            ("ops", "admin", ""),
        ] {
            config.push_str(&format!(
                "\n[[auth.principals]]\nname = \"{who}\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\n{extra}\n",
                sha256_hex(&tokens[who])
            ));
        }
        config.push_str("\n[governance]\n");
        config.push_str(extra);
        for r in ["police", "village", "traffic", "echo"] {
            config.push('\n');
            config.push_str(&grant_toml(&format!("governance.grants.{r}"), &g[r]));
        }
        config.push('\n');
        config.push_str(&grant_toml("governance.viewers", &g["viewers"]));
        let dir = HubDir::new(&adapters, &config);
        let otlp = otlp::Receiver::start(otlp::Otlp::Http);
        let hub = start_exporting(&dir, &otlp);
        Canary {
            hub,
            otlp,
            receivers,
            tokens,
            dir,
        }
    }

    fn get(&self, who: &str, path: &str) -> (u16, String) {
        let (s, _, body) = request(
            "GET",
            &self.hub.url(path),
            &[("authorization", &format!("Bearer {}", self.tokens[who]))],
            b"",
        )
        .unwrap();
        (s, body)
    }

    fn send(&self, event: &serde_json::Value) -> String {
        let (s, _, body) = request(
            "POST",
            &self.hub.url("/v1/events"),
            &[
                ("content-type", "application/cloudevents+json"),
                (
                    "authorization",
                    &format!("Bearer {}", self.tokens["reporter"]),
                ),
            ],
            event.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(s, 202, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["accepted"][0]["caseid"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn restart(&mut self) {
        self.hub.terminate(Duration::from_secs(20));
        self.hub = start_exporting(&self.dir, &self.otlp);
    }
}

/// `dir`'s hub, exporting its traces to `otlp`.
fn start_exporting(dir: &HubDir, otlp: &otlp::Receiver) -> HubProcess {
    let env = otlp.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    dir.start_with_env(&env)
}

/// What a receiver got, headers and body, as one text.
fn received_text(r: &Receiver) -> String {
    r.received()
        .iter()
        .map(|x| {
            let headers: String = x
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect();
            format!("{headers}\n{}\n", String::from_utf8_lossy(&x.body))
        })
        .collect()
}

/// The viewer's stream from the start, read until the dead letter's item.
fn stream_text(hub: &HubProcess, token: &str) -> String {
    use std::io::{Read, Write};
    let addr = hub.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /v1/stream?after=0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline && !text.contains("event: dead-letter") {
        if let Ok(n) = s.read(&mut buf) {
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(text.contains("event: dead-letter"), "{text}");
    text
}

#[test]
fn no_canary_reaches_a_recipient_a_reader_a_log_a_metric_or_the_audit_chain_against_its_grant() {
    let c = Canary::start("");
    let g = grants();
    let case = c.send(&canary_event("canary-1"));
    for r in ["police", "village", "traffic"] {
        c.receivers[r].wait_for(1, Duration::from_secs(20));
    }
    let dead = eventually(Duration::from_secs(20), || {
        let (_, body) = c.get("command-room", "/v1/dead-letters");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        match v["dead_letters"].as_array().map(|a| a.len()) {
            Some(1) => Ok(body),
            _ => Err(format!("no dead letter yet: {body}")),
        }
    });
    let dead_id = serde_json::from_str::<serde_json::Value>(&dead).unwrap()["dead_letters"][0]
        ["id"]
        .to_string();
    // The case tracker opens the case from the journal on its own task:
    // the reads below start once it has.
    eventually(Duration::from_secs(20), || {
        match c.get("ops", &format!("/v1/cases/{case}")) {
            (200, _) => Ok(()),
            (s, body) => Err(format!("the case is not open yet: {s} {body}")),
        }
    });
    let mut failures = Vec::new();
    let mut check = |place: String, text: &str, allowed: &[&str]| {
        let l = leaks(text, allowed);
        if !l.is_empty() {
            failures.push(format!("{place}: {l:?}"));
        }
    };

    // What each department's system received (headers too: binary-mode
    // CloudEvents carry attributes as ce-* headers).
    for r in ["police", "village", "traffic"] {
        check(
            format!("delivery to {r}"),
            &received_text(&c.receivers[r]),
            &allowed(&g[r]),
        );
    }
    // The police got everything: the test would catch nothing otherwise.
    assert!(
        leaks(&received_text(&c.receivers["police"]), &[]).len() >= 10,
        "the police should see every canary"
    );
    let village = received_text(&c.receivers["village"]);
    assert!(
        village.contains("欧阳**") && village.contains("139****7777"),
        "{village}"
    );
    assert!(
        village.contains("ps1:") && village.contains("yingfeng/yingyi/2"),
        "{village}"
    );
    assert!(village.contains("unlabelled, passes"));

    // Every read, as each reader. Operators and admins read what viewers
    // do (`[governance.viewers]`); the clear values only through a reveal.
    let viewer = allowed(&g["viewers"]);
    let readers = [
        ("command-room", viewer.clone()),
        ("ops", viewer.clone()),
        ("village-dept", allowed(&g["village"])),
        ("traffic-dept", allowed(&g["traffic"])),
    ];
    for (who, allowed) in &readers {
        for path in [
            "/v1/events/canary-1".to_string(),
            "/v1/cases".to_string(),
            format!("/v1/cases/{case}"),
            format!("/v1/cases/{case}/flows"),
            "/v1/dead-letters".to_string(),
            format!("/v1/dead-letters/{dead_id}"),
            "/v1/adapters".to_string(),
            "/v1/stats".to_string(),
            "/v1/audit".to_string(),
        ] {
            let (s, body) = c.get(who, &path);
            // The admin reads every one of them (the test would prove
            // nothing of a refusal); the others what their role may.
            match *who {
                "ops" => assert_eq!(s, 200, "{who} {path}: {body}"),
                _ => assert!(s == 200 || s == 403 || s == 404, "{who} {path}: {s} {body}"),
            }
            // Events are read through the reader's view; cases, dead
            // letters, adapters, statistics and the audit chain hold no
            // labelled data at all (a dead letter's error quoting a
            // department's answer has every value masked).
            let allowed: &[&str] = match path.as_str() {
                "/v1/events/canary-1" => allowed,
                _ => &[],
            };
            check(format!("GET {path} as {who}"), &body, allowed);
        }
    }
    // The echo's dead letter, read alone, quotes what its department
    // answered (the whole request) with every value masked.
    let (_, one) = c.get("ops", &format!("/v1/dead-letters/{dead_id}"));
    assert!(
        one.contains("\"target\":\"echo\"") && one.contains("欧阳**"),
        "{one}"
    );
    // The viewer's own views: the cockpit's snapshot, the stream from
    // its start, the metrics.
    let (_, snapshot) = c.get("command-room", "/v1/cockpit/snapshot");
    assert!(snapshot.contains("canary-1"));
    check("the cockpit snapshot".into(), &snapshot, &viewer);
    let stream = stream_text(&c.hub, &c.tokens["command-room"]);
    assert!(stream.contains("canary-1"), "{stream}");
    check("the stream".into(), &stream, &viewer);
    check("dead letters".into(), &dead, &[]);
    let (_, metrics) = c.get("command-room", "/metrics");
    check("/metrics".into(), &metrics, &[]);
    // The hub's own log, the adapters' lines in it, and the audit chain:
    // nothing at all. The police's adapter logged what it was handed,
    // every value in the clear: its lines are there, scrubbed.
    c.hub
        .wait_log("chatty: the scene is at", Duration::from_secs(20));
    let log = c.hub.log();
    let chatty: Vec<&str> = log.lines().filter(|l| l.contains("chatty")).collect();
    assert!(
        chatty.iter().any(|l| l.contains("chatty got canary-1"))
            && chatty.iter().any(|l| l.contains("chatty: reporter 欧阳**"))
            && chatty.iter().any(|l| l.contains("chatty: the scene is at")),
        "the chatty adapter's lines are missing from the hub's log:\n{log}"
    );
    check("the hub's log".into(), &log, &[]);
    // The spans the hub exported, once every delivery's span is in: the
    // adapter's lines are events of its call's span, scrubbed; no
    // attribute or event carries a canary.
    c.otlp.wait_for(Duration::from_secs(20), |spans| {
        let delivered: Vec<&str> = spans
            .iter()
            .filter(|s| s.name == "deliver" && s.attr("govhub.event.id") == "canary-1")
            .map(|s| s.attr("govhub.adapter"))
            .collect();
        match ["police", "village", "traffic", "echo"]
            .iter()
            .all(|r| delivered.contains(r))
        {
            true => Ok(()),
            false => Err(format!("delivery spans so far: {delivered:?}")),
        }
    });
    let call = c
        .otlp
        .spans()
        .into_iter()
        .find(|s| {
            s.name == "adapter.call"
                && s.attr("govhub.adapter") == "police"
                && s.attr("govhub.event.id") == "canary-1"
        })
        .expect("the police's adapter call is exported");
    let lines = format!("{:?}", call.events);
    assert!(
        [
            "chatty got canary-1",
            "chatty: reporter 欧阳**",
            "chatty: the scene is at"
        ]
        .iter()
        .all(|line| lines.contains(line)),
        "the chatty adapter's lines are not events of its call's span: {lines}"
    );
    let spans = c.otlp.text();
    check("the exported spans".into(), &spans, &[]);
    let db = rusqlite::Connection::open(c.dir.dir.path().join("data/govhub.db")).unwrap();
    let audit: String = db
        .prepare("SELECT actor || ' ' || action || ' ' || target || ' ' || detail FROM audit")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(audit.contains("\"outcome\":\"delivered\""), "{audit}");
    check("the audit chain".into(), &audit, &[]);
    assert!(
        failures.is_empty(),
        "canaries where their grant forbids:\n{}",
        failures.join("\n")
    );

    // The labels are the hub's: the producer's are gone.
    let (_, ev) = c.get("command-room", "/v1/events/canary-1");
    let ev: serde_json::Value = serde_json::from_str(&ev).unwrap();
    assert_eq!(ev["event"]["datagrade"], "important", "{ev}");
    assert_eq!(
        ev["event"]["datalabels"],
        "pi.name,pi.phone,pi.contact,pi.id,pi.plate,pi.face,pi.location,pi.address,pi.birth,pi.text,pi.minor"
    );
    // The sender reads what it sent in the clear; an admin may reveal it
    // for a stated purpose, on the record.
    let (_, own) = c.get("reporter", "/v1/events/canary-1");
    assert!(own.contains("鹂鸣"), "{own}");
    let reveal = |purpose: &str| {
        request(
            "POST",
            &c.hub.url("/v1/events/canary-1/reveal"),
            &[
                ("authorization", &format!("Bearer {}", c.tokens["ops"])),
                ("content-type", "application/json"),
            ],
            serde_json::json!({ "purpose": purpose })
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    };
    let (s, _, body) = reveal(" ");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("purpose"), "{body}");
    let (s, _, body) = reveal("警情核查 2025-08-01 钱江派出所来函");
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("鹂鸣") && body.contains("19491231"), "{body}");
    let (_, log) = c.get("ops", "/v1/audit?action=reveal");
    assert!(
        log.contains("警情核查") && log.contains("\"actor\":\"ops\""),
        "{log}"
    );
    assert!(leaks(&log, &[]).is_empty(), "{log}");
    // The whole chain as the API answers it, the reveal on it: still
    // nothing of what was revealed.
    let (s, all) = c.get("ops", "/v1/audit");
    assert_eq!(s, 200, "{all}");
    assert!(
        all.contains("\"action\":\"reveal\"") && all.contains("\"action\":\"flow\""),
        "{all}"
    );
    assert!(leaks(&all, &[]).is_empty(), "{:?}", leaks(&all, &[]));
}

#[test]
fn pseudonyms_hold_for_one_recipient_across_events_and_restarts_and_differ_between_recipients() {
    let mut c = Canary::start("");
    let pseudonym = |r: &Receiver, i: usize| -> String {
        let got = r.wait_for(i + 1, Duration::from_secs(20));
        let body: serde_json::Value = serde_json::from_slice(&got[i].body).unwrap();
        body["reporter"]["email"].as_str().unwrap().to_string()
    };
    c.send(&canary_event("p-1"));
    let mut second = canary_event("p-2");
    // The same person, written another way: normalized before keying.
    second["data"]["reporter"]["email"] = " Kingfisher.7a@Example.com ".into();
    c.send(&second);
    let first = pseudonym(&c.receivers["village"], 0);
    assert!(first.starts_with("ps1:"), "{first}");
    assert_eq!(pseudonym(&c.receivers["village"], 1), first);
    // A change of the grants is on the record at the next start (and
    // leaves the pseudonyms alone: they follow the key, not the policy).
    let policy = |c: &Canary| -> Vec<serde_json::Value> {
        let (_, log) = c.get("ops", "/v1/audit?action=policy");
        let log: serde_json::Value = serde_json::from_str(&log).unwrap();
        log["audit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(r["detail"].as_str().unwrap()).unwrap())
            .collect()
    };
    let before = policy(&c);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0]["from"].is_null());
    let config = std::fs::read_to_string(c.dir.config()).unwrap();
    let changed = config.replace("\"pi.birth\" = \"generalize\"", "\"pi.birth\" = \"drop\"");
    assert_ne!(config, changed);
    std::fs::write(c.dir.config(), changed).unwrap();
    c.restart();
    let after = policy(&c);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[1]["from"], before[0]["to"]);
    assert_ne!(after[1]["to"], before[0]["to"]);
    c.send(&canary_event("p-3"));
    assert_eq!(
        pseudonym(&c.receivers["village"], 2),
        first,
        "the key outlives the hub"
    );
    // Never an unkeyed hash of the value.
    assert!(!sha256_hex("kingfisher.7a@example.com").contains(&first[4..]));
    // Another recipient granted pseudonyms gets its own: the two cannot
    // join their records on it.
    let traffic = pseudonym(&c.receivers["traffic"], 0);
    assert!(traffic.starts_with("ps1:"), "{traffic}");
    assert_ne!(traffic, first);
    assert_eq!(pseudonym(&c.receivers["traffic"], 2), traffic);
}

#[test]
fn fail_closed_ungranted_labels_drop_a_broken_grant_withholds_and_core_data_stays() {
    // A grant naming a category the hub does not know does not load: that
    // recipient gets nothing, not the raw event.
    let receiver = Receiver::start();
    let adapters = ["broken", "empty"]
        .iter()
        .map(|n| {
            AdapterSpec::new(n, "webhook-adapter").tables(&format!(
                "[capabilities]\noutbound_hosts = [\"{h}\"]\n[config]\nurl = \"http://{h}/{n}\"",
                h = receiver.host()
            ))
        })
        .collect::<Vec<_>>();
    let config = format!(
        "{CLASSIFICATION}\n[[routes]]\nname = \"all\"\nmatch = {{ type = \"gov.*\" }}\nto = [\"broken\", \"empty\"]\n\n[governance.grants.broken]\n\"pi.voice\" = \"clear\"\n\n[governance.grants.empty]\n"
    );
    let dir = HubDir::new(&adapters, &config);
    let (ok, out, err) = govhub(&["check-config", "--config", dir.config().to_str().unwrap()]);
    assert!(
        !ok && err.contains("governance.grants.broken") && err.contains("pi.voice"),
        "{out}{err}"
    );
    let mut hub = dir.start();
    let mut e = canary_event("closed-1");
    e["source"] = "urn:test:anyone".into();
    let (s, _, body) = send_event(&hub.base, &e).unwrap();
    assert_eq!(s, 202, "{body}");
    // The recipient without a grant gets the event, every labelled field
    // dropped; the broken one nothing.
    let got = receiver.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].path, "/empty");
    let text = received_text(&receiver);
    assert!(leaks(&text, &[]).is_empty(), "{text}");
    assert!(text.contains("unlabelled, passes"), "{text}");
    let (_, adapters) = hub.get_json("/v1/adapters");
    let broken = adapters["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "broken")
        .unwrap()["clearance"]["broken"]
        .clone();
    assert!(
        broken.as_str().is_some_and(|b| b.contains("pi.voice")),
        "{adapters}"
    );
    let (_, ev) = hub.get_json("/v1/events/closed-1");
    let status: Vec<(String, String)> = ev["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["target"].as_str().unwrap().into(),
                d["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        status.contains(&("broken".into(), "pending".into())),
        "{status:?}"
    );
    // Core data never leaves the hub: withheld, on the record.
    let secret = serde_json::json!({
        "specversion": "1.0", "id": "secret-1", "source": "urn:test:anyone", "type": "gov.secret.reported",
        "caseid": "case-secret-1",
        "data": {"plan": "核心数据"},
    });
    let (s, _, body) = send_event(&hub.base, &secret).unwrap();
    assert_eq!(s, 202, "{body}");
    let secret_case = "case-secret-1";
    let ev = hub.wait_until("/v1/events/secret-1", Duration::from_secs(20), |v| {
        v["deliveries"].as_array().is_some_and(|d| {
            d.iter()
                .any(|d| d["target"] == "empty" && d["status"] == "withheld")
        })
    });
    assert_eq!(ev["event"]["datagrade"], "core");
    // Read through the hub, core data is not shown either (an admin's
    // reveal is the way).
    assert!(ev["event"].get("data").is_none(), "{ev}");
    assert!(!ev.to_string().contains("核心数据"), "{ev}");

    // Nothing more arrived: one delivery in all.
    assert_eq!(receiver.received().len(), 1);
    let log = hub.log();
    assert!(
        log.contains("pi.voice"),
        "the broken grant is named in the log"
    );

    // The withholding is on the record: `audit flows` lists it, with no
    // payload hash (nothing was handed over). The broken recipient has no
    // flow at all: nothing went to it, its deliveries wait.
    hub.terminate(Duration::from_secs(20));
    let config = dir.config();
    let config = config.to_str().unwrap();
    let (ok, out, err) = govhub(&[
        "audit",
        "flows",
        "--config",
        config,
        "--case",
        secret_case,
        "--json",
    ]);
    assert!(ok, "{err}");
    let records: Vec<(String, serde_json::Value)> = out
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                r["target"].as_str().unwrap().to_string(),
                serde_json::from_str(r["detail"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    let withheld: Vec<&(String, serde_json::Value)> = records
        .iter()
        .filter(|(_, f)| f["event"] == "secret-1")
        .collect();
    assert_eq!(withheld.len(), 1, "{out}");
    let (target, f) = withheld[0];
    assert_eq!(target, "empty", "{out}");
    assert_eq!(f["outcome"], "withheld", "{f}");
    assert_eq!(f["grade"], "core", "{f}");
    assert_eq!(f["type"], "gov.secret.reported", "{f}");
    assert!(f["policy"].as_str().is_some_and(|p| p.len() == 64), "{f}");
    assert!(f.get("payload_sha256").is_none(), "{f}");
    assert!(!out.contains("核心数据"), "{out}");
    assert!(records.iter().all(|(t, _)| t != "broken"), "{out}");
    let (ok, text, err) = govhub(&["audit", "flows", "--config", config, "--case", secret_case]);
    assert!(ok, "{err}");
    assert!(
        text.lines().any(|l| l.contains("secret-1")
            && l.contains("empty")
            && l.contains("withheld")
            && l.contains("none (withheld)")),
        "{text}"
    );
    let (ok, out, err) = govhub(&["audit", "verify", "--config", config]);
    assert!(ok, "{out}{err}");
}

#[test]
fn flow_records_list_exactly_the_deliveries_made_and_verify_catches_tampering() {
    let mut c = Canary::start("");
    let case = c.send(&canary_event("flow-1"));
    for r in ["police", "village", "traffic"] {
        c.receivers[r].wait_for(1, Duration::from_secs(20));
    }
    let final_deliveries = eventually(Duration::from_secs(20), || {
        let (_, ev) = c.get("command-room", "/v1/events/flow-1");
        let ev: serde_json::Value = serde_json::from_str(&ev).unwrap();
        let d = ev["deliveries"].as_array().unwrap().clone();
        match d.iter().all(|d| d["status"] != "pending") {
            true => Ok(d),
            false => Err(format!("{d:?}")),
        }
    });
    assert_eq!(final_deliveries.len(), 4, "{final_deliveries:?}");
    c.hub.terminate(Duration::from_secs(20));
    let config = c.dir.config();
    let config = config.to_str().unwrap();
    let (ok, out, err) = govhub(&[
        "audit", "flows", "--config", config, "--case", &case, "--json",
    ]);
    assert!(ok, "{err}");
    let flows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::from_str(r["detail"].as_str().unwrap()).unwrap()
        })
        .collect();
    let mut listed: Vec<(String, String)> = flows
        .iter()
        .map(|f| {
            (
                f["delivery"].to_string(),
                f["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut made: Vec<(String, String)> = final_deliveries
        .iter()
        .map(|d| {
            (
                d["id"].to_string(),
                d["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    listed.sort();
    made.sort();
    assert_eq!(
        listed, made,
        "one flow record per delivery, with its outcome"
    );
    for f in &flows {
        assert_eq!(f["route"], "route: public order: everyone");
        assert!(f["policy"].as_str().is_some_and(|p| p.len() == 64));
        assert_eq!(f["event"], "flow-1");
    }
    let by_target = |name: &str| -> serde_json::Value {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("\"target\":\"{name}\"")))
            .unwrap();
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        serde_json::from_str(r["detail"].as_str().unwrap()).unwrap()
    };
    assert_eq!(
        by_target("village")["fields"]["/reporter/id_number"],
        "drop"
    );
    assert_eq!(by_target("village")["fields"]["@lat"], "generalize");
    assert_eq!(
        by_target("police")["fields"]["/reporter/id_number"],
        "clear"
    );
    // The payload's hash is of exactly what each adapter was handed (the
    // view as CloudEvents JSON): the police's chatty adapter posts those
    // very bytes; the webhooks post it in binary mode, read back here into
    // the event they were handed. (The echo's department refused it, and
    // its stand-in keeps only what it accepts: its hash is not checked.)
    let mut hashes = Vec::new();
    for line in out.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let target = r["target"].as_str().unwrap();
        let f: serde_json::Value = serde_json::from_str(r["detail"].as_str().unwrap()).unwrap();
        assert!(f["payload_sha256"].as_str().is_some_and(|h| h.len() == 64));
        if target == "echo" {
            assert_eq!(f["outcome"], "dead");
            continue;
        }
        let got = c.receivers[target].received();
        assert_eq!(got.len(), 1, "{target}");
        assert_eq!(
            f["payload_sha256"].as_str(),
            Some(payload_sha256(&got[0]).as_str()),
            "{target}: the flow record's payload hash is not of what the adapter was handed"
        );
        hashes.push(payload_sha256(&got[0]));
    }
    assert_eq!(
        c.receivers["police"].received()[0].header("content-type"),
        Some("application/cloudevents+json")
    );
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), 3, "each target's view is its own");
    // The text listing names the deliveries too.
    let (ok, text, _) = govhub(&["audit", "flows", "--config", config, "--case", &case]);
    assert!(ok && text.lines().count() == 4, "{text}");

    // verify covers the flow records.
    let verify = || govhub(&["audit", "verify", "--config", config]);
    let (ok, out, err) = verify();
    assert!(ok, "{out}{err}");
    let db = rusqlite::Connection::open(c.dir.dir.path().join("data/govhub.db")).unwrap();
    db.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    let flow_seq: i64 = db
        .query_row(
            "SELECT seq FROM audit WHERE action = 'flow' AND target = 'village'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let original: String = db
        .query_row("SELECT detail FROM audit WHERE seq = ?1", [flow_seq], |r| {
            r.get(0)
        })
        .unwrap();
    // Changed: "the village got the ID in the clear".
    db.execute(
        "UPDATE audit SET detail = replace(detail, '\"/reporter/id_number\":\"drop\"', '\"/reporter/id_number\":\"clear\"') WHERE seq = ?1",
        [flow_seq],
    )
    .unwrap();
    let (ok, _, err) = verify();
    assert!(
        !ok && err.contains(&format!("record {flow_seq}")) && err.contains("changed"),
        "{err}"
    );
    db.execute(
        "UPDATE audit SET detail = ?1 WHERE seq = ?2",
        rusqlite::params![original, flow_seq],
    )
    .unwrap();
    assert!(verify().0, "restored");
    // Removed.
    let row: Vec<rusqlite::types::Value> = db
        .query_row("SELECT * FROM audit WHERE seq = ?1", [flow_seq], |r| {
            (0..r.as_ref().column_count()).map(|i| r.get(i)).collect()
        })
        .unwrap();
    db.execute("DELETE FROM audit WHERE seq = ?1", [flow_seq])
        .unwrap();
    let (ok, _, err) = verify();
    assert!(!ok, "a removed flow record went unnoticed");
    let _ = err;
    // Reordered: put it back after the others.
    let marks = vec!["?"; row.len()].join(", ");
    db.execute(
        &format!("INSERT INTO audit VALUES ({marks})"),
        rusqlite::params_from_iter(row.iter()),
    )
    .unwrap();
    assert!(verify().0, "restored");
    let next: i64 = db
        .query_row(
            // Its nearest neighbour in the chain, whichever side it is on.
            "SELECT seq FROM audit WHERE seq != ?1 ORDER BY abs(seq - ?1) LIMIT 1",
            [flow_seq],
            |r| r.get(0),
        )
        .unwrap();
    db.execute_batch(&format!(
        "UPDATE audit SET seq = -1 WHERE seq = {flow_seq}; UPDATE audit SET seq = {flow_seq} WHERE seq = {next}; UPDATE audit SET seq = {next} WHERE seq = -1;"
    ))
    .unwrap();
    let (ok, _, err) = verify();
    assert!(!ok, "reordered flow records went unnoticed: {err}");
}

#[test]
fn a_manifest_asking_for_clearance_beyond_its_grant_is_on_the_record_and_gets_only_the_grant() {
    let receiver = Receiver::start();
    let h = receiver.host();
    let tables = |asks: &str| {
        format!(
            "[capabilities]\noutbound_hosts = [\"{h}\"]\n[config]\nurl = \"http://{h}/village\"\n\n[clearance]\n{asks}"
        )
    };
    // The village's manifest asks to see IDs and phones in the clear, and
    // names masked (as granted), plates not at all (less than granted),
    // and a category the hub does not know.
    let village = AdapterSpec::new("village", "webhook-adapter").tables(&tables(
        "\"pi.id\" = \"clear\"\n\"pi.phone\" = \"clear\"\n\"pi.name\" = \"mask\"\n\"pi.plate\" = \"drop\"\n\"pi.voice\" = \"clear\"\n",
    ));
    let config = format!(
        "{CLASSIFICATION}\n[[routes]]\nname = \"village\"\nmatch = {{ type = \"gov.incident.reported\" }}\nto = [\"village\"]\n\n[governance.grants.village]\n\"pi.name\" = \"mask\"\n\"pi.phone\" = \"mask\"\n\"pi.plate\" = \"mask\"\n"
    );
    let grant = HashMap::from([
        ("pi.name", "mask"),
        ("pi.phone", "mask"),
        ("pi.plate", "mask"),
    ]);
    let dir = HubDir::new(&[village], &config);
    // A request is no grant, and no error either.
    let (ok, out, err) = govhub(&["check-config", "--config", dir.config().to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let admin = token();
    let hub = dir.start_with_env(&[("GOVHUB_ADMIN_TOKEN", &admin)]);
    let send = |id: &str| {
        let mut e = canary_event(id);
        e["source"] = "urn:test:anyone".into();
        let (s, _, body) = send_event(&hub.base, &e).unwrap();
        assert_eq!(s, 202, "{body}");
    };
    send("ask-1");
    receiver.wait_for(1, Duration::from_secs(20));
    let text = received_text(&receiver);
    assert!(
        leaks(&text, &allowed(&grant)).is_empty(),
        "{:?} in {text}",
        leaks(&text, &allowed(&grant))
    );
    assert!(
        text.contains("欧阳**") && text.contains("139****7777"),
        "{text}"
    );
    assert!(!text.contains("11010519"), "{text}");

    // What was asked beyond the grant is in the load's record, and said.
    let loads = || -> Vec<serde_json::Value> {
        let (s, audit) = hub.get_json("/v1/audit?action=load");
        assert_eq!(s, 200, "{audit}");
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["target"] == "village")
            .map(|r| serde_json::from_str(r["detail"].as_str().unwrap()).unwrap())
            .collect()
    };
    let first = loads();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        first[0]["clearance_requested_beyond_grant"],
        serde_json::json!([
            "pi.id: asks clear, granted drop",
            "pi.phone: asks clear, granted mask",
            "pi.voice: not a category the hub knows",
        ]),
        "{first:?}"
    );
    assert!(
        hub.log()
            .contains("clearance requested beyond the grant: pi.id: asks clear, granted drop"),
        "{}",
        hub.log()
    );
    let (_, adapters) = hub.get_json("/v1/adapters");
    let clearance = &adapters["adapters"][0]["clearance"];
    assert_eq!(clearance["requested"]["pi.id"], "clear", "{clearance}");
    assert_eq!(
        clearance["granted"],
        serde_json::json!({ "pi.name": "mask", "pi.phone": "mask", "pi.plate": "mask" }),
        "{clearance}"
    );
    assert!(clearance["broken"].is_null(), "{clearance}");

    // Loaded again through the admin API, asking for faces in the clear
    // and addresses masked: on the record again, and the grant stands.
    let module = wasm("webhook-adapter");
    let manifest = format!(
        "name = \"village\"\nwasm = \"village.wasm\"\nsha256 = \"{}\"\n{}",
        sha256(&module),
        tables("\"pi.face\" = \"clear\"\n\"pi.address\" = \"mask\"\n\"pi.name\" = \"clear\"\n")
    );
    use base64::Engine as _;
    let upload = serde_json::json!({
        "manifest": manifest,
        "module": base64::engine::general_purpose::STANDARD.encode(std::fs::read(&module).unwrap()),
    });
    let (s, _, body) = request(
        "PUT",
        &hub.url("/v1/adapters/village"),
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {admin}")),
        ],
        upload.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(s, 200, "{body}");
    send("ask-2");
    let got = receiver.wait_for(2, Duration::from_secs(20));
    let second = String::from_utf8_lossy(&got[1].body).to_string();
    assert!(
        leaks(&second, &allowed(&grant)).is_empty(),
        "{:?} in {second}",
        leaks(&second, &allowed(&grant))
    );
    assert!(second.contains("欧阳**"), "{second}");
    assert!(
        !second.contains("face-canary") && !second.contains("snapshot_url"),
        "{second}"
    );
    let both = loads();
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(both[1]["origin"], "admin", "{both:?}");
    assert_eq!(
        both[1]["clearance_requested_beyond_grant"],
        serde_json::json!([
            "pi.address: asks mask, granted drop",
            "pi.face: asks clear, granted drop",
            "pi.name: asks clear, granted mask",
        ]),
        "{both:?}"
    );
}

#[test]
fn a_pseudonym_key_that_cannot_be_read_holds_that_recipients_deliveries_back_until_it_can() {
    const VAR: &str = "GOVHUB_TEST_PSEUDONYM_KEY_UNSET";
    let receiver = Receiver::start();
    let adapters: Vec<AdapterSpec> = ["keyed", "plain"]
        .iter()
        .map(|n| {
            AdapterSpec::new(n, "webhook-adapter").tables(&format!(
                "[capabilities]\noutbound_hosts = [\"{h}\"]\n[config]\nurl = \"http://{h}/{n}\"",
                h = receiver.host()
            ))
        })
        .collect();
    let key_env = format!("key_env = \"{VAR}\"");
    let config = format!(
        "{CLASSIFICATION}\n[[routes]]\nname = \"all\"\nmatch = {{ type = \"gov.incident.*\" }}\nto = [\"keyed\", \"plain\"]\n\n[governance]\n{key_env}\n\n[governance.grants.keyed]\n\"pi.contact\" = \"pseudonymize\"\n\"pi.name\" = \"mask\"\n\n[governance.grants.plain]\n\"pi.name\" = \"mask\"\n"
    );
    let grant = HashMap::from([("pi.contact", "pseudonymize"), ("pi.name", "mask")]);
    let dir = HubDir::new(&adapters, &config);
    let to = |path: &str, id: &str| -> Vec<Received> {
        receiver
            .received()
            .into_iter()
            .filter(|r| r.path == path && r.header("ce-id") == Some(id))
            .collect()
    };
    let status = |hub: &HubProcess, id: &str, target: &str| -> String {
        let (_, ev) = hub.get_json(&format!("/v1/events/{id}"));
        ev["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["target"] == target)
            .map(|d| d["status"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    // Sends `id`; the plain recipient gets it (no pseudonym, nothing
    // keyed); the keyed one, whose key cannot be read, gets nothing, its
    // delivery pending, and says why.
    let held_back = |hub: &HubProcess, id: &str, why: &str| {
        let mut e = canary_event(id);
        e["source"] = "urn:test:anyone".into();
        let (s, _, body) = send_event(&hub.base, &e).unwrap();
        assert_eq!(s, 202, "{body}");
        let plain = eventually(Duration::from_secs(20), || match to("/plain", id).pop() {
            Some(r) => Ok(r),
            None => Err(format!("{id} never reached the plain recipient")),
        });
        let body = String::from_utf8_lossy(&plain.body).to_string();
        assert!(
            body.contains("欧阳**") && !body.contains("kingfisher"),
            "{body}"
        );
        // The gate looks again every second: a few looks.
        std::thread::sleep(Duration::from_millis(2500));
        assert!(to("/keyed", id).is_empty(), "{id} went out without its key");
        assert_eq!(status(hub, id, "keyed"), "pending");
        assert_eq!(status(hub, id, "plain"), "delivered");
        let (_, adapters) = hub.get_json("/v1/adapters");
        let broken = adapters["adapters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "keyed")
            .unwrap()["clearance"]["broken"]
            .clone();
        assert!(
            broken
                .as_str()
                .is_some_and(|b| b.contains("pseudonym key") && b.contains(why)),
            "{adapters}"
        );
        assert!(hub.log().contains(why), "{}", hub.log());
    };

    // The variable named by key_env is not set.
    let mut hub = dir.start();
    held_back(&hub, "key-1", VAR);
    hub.terminate(Duration::from_secs(20));

    // The key file cannot be read (a folder stands where it should be).
    let folder = dir.dir.path().join("not-a-key");
    std::fs::create_dir(&folder).unwrap();
    let key_file = format!("key_file = \"{}\"", folder.display());
    std::fs::write(dir.config(), config.replace(&key_env, &key_file)).unwrap();
    let mut hub = dir.start();
    held_back(&hub, "key-2", "governance.key_file");
    assert_eq!(status(&hub, "key-1", "keyed"), "pending");
    hub.terminate(Duration::from_secs(20));

    // Once it can be read, what waited goes out, pseudonymized, one
    // person one pseudonym.
    std::fs::write(dir.config(), &config).unwrap();
    let key = "7f".repeat(32);
    let hub = dir.start_with_env(&[(VAR, &key)]);
    let got: Vec<Received> = ["key-1", "key-2"]
        .iter()
        .map(|id| {
            eventually(Duration::from_secs(20), || match to("/keyed", id).pop() {
                Some(r) => Ok(r),
                None => Err(format!("{id} never reached the keyed recipient")),
            })
        })
        .collect();
    let pseudonyms: Vec<String> = got
        .iter()
        .map(|r| {
            let body = String::from_utf8_lossy(&r.body).to_string();
            assert!(
                leaks(&body, &allowed(&grant)).is_empty() && body.contains("欧阳**"),
                "{body}"
            );
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["reporter"]["email"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(pseudonyms[0].starts_with("ps1:"), "{pseudonyms:?}");
    assert_eq!(pseudonyms[0], pseudonyms[1]);
    // Recorded a moment after the department got it.
    for id in ["key-1", "key-2"] {
        eventually(Duration::from_secs(20), || {
            match status(&hub, id, "keyed") {
                s if s == "delivered" => Ok(()),
                s => Err(format!("{id} to keyed: {s}")),
            }
        });
    }
    let (_, adapters) = hub.get_json("/v1/adapters");
    let keyed = adapters["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "keyed")
        .unwrap();
    assert!(keyed["clearance"]["broken"].is_null(), "{keyed}");
}
