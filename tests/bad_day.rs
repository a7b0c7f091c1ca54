//! The bad day, with the real binary: what the hub does when the file at
//! `storage.path` is not its journal, or is damaged, and when the hub or
//! its clock misbehave.
//!
//! - a file that is not an SQLite database, a database of another
//!   application, a journal cut short, a journal with a damaged page and
//!   one from a newer govhub: the start stops with a message naming the
//!   file and what to do, and the file is left exactly as it was;
//! - a journal of an older govhub (before the application id) still opens,
//!   its events kept;
//! - a poison event (its adapter traps every time) is dead-lettered after
//!   its attempts while other cases flow;
//! - a hub frozen (SIGSTOP) for 30 s during a stream loses nothing and
//!   escalates the deadline that passed while it was frozen once;
//! - the system clock stepped back an hour and forward a day (libfaketime
//!   under the real binary) neither loses nor repeats an escalation;
//! - the journal's disk fills (a 2 MiB tmpfs the test mounts, as root):
//!   `503` naming the cause, nothing acknowledged lost, events taken again
//!   once space returns, without a restart.
//!
//! Departments that never finish answering or answer with 10 MB are in
//! tests/wire.rs; the soak in tests/soak.rs.

mod support;

use std::path::{Path, PathBuf};
use support::*;

fn journal(dir: &HubDir) -> PathBuf {
    dir.dir.path().join("data/govhub.db")
}

/// `govhub run` on `dir`: it must refuse to start; its error text.
fn refused(dir: &HubDir) -> String {
    let (ok, out, err) = govhub_with_env(&["run", "--config", dir.config().to_str().unwrap()], &[]);
    assert!(!ok, "the hub started: {out}{err}");
    err
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// A journal holding one event, written by a hub stopped cleanly.
fn used_journal() -> HubDir {
    let dir = HubDir::new(&[], "");
    let mut hub = dir.start();
    let (status, _, body) =
        send_event(&hub.base, &cloudevent("bd-1", Some("YF-BD-1"), 4096)).expect("sent");
    assert_eq!(status, 202, "{body}");
    hub.terminate(std::time::Duration::from_secs(20));
    dir
}

#[test]
fn a_file_that_is_not_a_journal_stops_the_start_by_name_and_is_left_alone() {
    let dir = HubDir::new(&[], "");
    let path = journal(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "id,name\n1,管九阳\n").unwrap();
    let before = sha256(&path);
    let err = refused(&dir);
    assert!(
        err.contains(path.to_str().unwrap())
            && err.contains("is not a govhub journal")
            && err.contains("not an SQLite database")
            && err.contains("storage.path"),
        "{err}"
    );
    assert_eq!(sha256(&path), before, "the file was changed");
}

#[test]
fn a_database_of_another_application_is_refused_untouched() {
    let dir = HubDir::new(&[], "");
    let path = journal(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE residents (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO residents (name) VALUES ('管九阳');",
        )
        .unwrap();
    }
    let before = sha256(&path);
    let err = refused(&dir);
    assert!(
        err.contains(path.to_str().unwrap())
            && err.contains("another application")
            && err.contains("residents")
            && err.contains("Nothing was changed"),
        "{err}"
    );
    assert_eq!(sha256(&path), before, "someone else's database was changed");
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "it was switched to WAL");
}

#[test]
fn a_journal_cut_short_or_with_a_damaged_page_stops_the_start_by_name() {
    let dir = used_journal();
    let path = journal(&dir);
    let whole = std::fs::read(&path).unwrap();
    assert!(whole.len() >= 4 * 4096, "{} bytes", whole.len());
    // Cut short: half of it, as a copy that stopped half way.
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    let err = refused(&dir);
    assert!(
        err.contains(path.to_str().unwrap())
            && err.contains("is damaged")
            && err.contains("cut short")
            && err.contains("backup"),
        "{err}"
    );
    // A damaged page: the schema page overwritten past its header.
    let mut damaged = whole.clone();
    for b in &mut damaged[100..4096] {
        *b = 0xA5;
    }
    std::fs::write(&path, &damaged).unwrap();
    let err = refused(&dir);
    assert!(
        err.contains(path.to_str().unwrap()) && err.contains("damaged") && err.contains("backup"),
        "{err}"
    );
    // Put back whole, it opens with its event.
    std::fs::write(&path, &whole).unwrap();
    let hub = dir.start();
    let (status, e) = hub.get_json("/v1/events/bd-1");
    assert_eq!(status, 200, "{e}");
}

#[test]
fn a_journal_of_a_newer_govhub_is_refused_not_migrated_backwards() {
    let dir = used_journal();
    let path = journal(&dir);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 999i64).unwrap();
    }
    let before = sha256(&path);
    let err = refused(&dir);
    assert!(
        err.contains(path.to_str().unwrap())
            && err.contains("schema version 999")
            && err.contains("upgrade govhub"),
        "{err}"
    );
    assert_eq!(sha256(&path), before);
}

#[test]
fn a_journal_of_an_older_govhub_without_the_application_id_still_opens() {
    let dir = used_journal();
    let path = journal(&dir);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "application_id", 0i64).unwrap();
    }
    let hub = dir.start();
    let (status, e) = hub.get_json("/v1/events/bd-1");
    assert_eq!(status, 200, "{e}");
    drop(hub);
    let c = rusqlite::Connection::open(&path).unwrap();
    let id: i64 = c
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(id, 0x4756_4842, "the journal is marked as govhub's");
}

/// Every delivery of an event: (target, status, attempts, last_error).
fn deliveries(hub: &HubProcess, id: &str) -> Vec<serde_json::Value> {
    let (_, e) = hub.get_json(&format!("/v1/events/{id}"));
    e["deliveries"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_poison_event_is_dead_lettered_after_its_attempts_and_blocks_nobody_else() {
    let dir = HubDir::new(
        &[AdapterSpec::new("hostile", "fixture-hostile")
            .top("subscribe = [\"gov.*\"]")
            .tables("[limits]\nconcurrency = 4")],
        "[delivery]\nmax_attempts = 3\nbackoff_base_ms = 200\nbackoff_cap_ms = 400\n",
    );
    let hub = dir.start();
    let mut poison = cloudevent("p-1", Some("YF-POISON"), 0);
    poison["data"] = serde_json::json!({ "text": "poison" });
    let after = cloudevent("p-2", Some("YF-POISON"), 8);
    for e in [&poison, &after] {
        let (status, _, body) = send_event(&hub.base, e).expect("sent");
        assert_eq!(status, 202, "{body}");
    }
    // Other cases, sent while the poison traps and waits for its retries.
    let others: Vec<String> = (0..20).map(|i| format!("o-{i}")).collect();
    for (i, id) in others.iter().enumerate() {
        let (status, _, body) = send_event(
            &hub.base,
            &cloudevent(id, Some(&format!("YF-OTHER-{i}")), 8),
        )
        .expect("sent");
        assert_eq!(status, 202, "{body}");
    }
    // They flow at once: before the poison has used its attempts.
    eventually(std::time::Duration::from_secs(10), || {
        let waiting: Vec<&String> = others
            .iter()
            .filter(|id| {
                deliveries(&hub, id)
                    .iter()
                    .any(|d| d["status"] != "delivered")
            })
            .collect();
        match waiting.len() {
            0 => Ok(()),
            n => Err(format!(
                "{n} events of other cases not delivered: {waiting:?}"
            )),
        }
    });
    let d = &deliveries(&hub, "p-1")[0];
    assert_ne!(d["status"], "dead", "the others waited for the poison: {d}");
    // The case's own next event waits for it, saying so, then goes.
    let waiting = &deliveries(&hub, "p-2")[0];
    assert_eq!(waiting["status"], "pending");
    assert_eq!(waiting["waiting_for"]["event"], "p-1", "{waiting}");
    assert!(
        waiting["waiting_for"]["attempts"].as_u64() >= Some(1),
        "{waiting}"
    );
    assert!(
        waiting["waiting_for"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("is poison"),
        "the reason is visible: {waiting}"
    );
    // The poison itself waits for nobody.
    assert!(deliveries(&hub, "p-1")[0].get("waiting_for").is_none());
    let dead = eventually(std::time::Duration::from_secs(20), || {
        let d = deliveries(&hub, "p-1")[0].clone();
        (d["status"] == "dead")
            .then_some(d.clone())
            .ok_or(format!("{d}"))
    });
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("is poison"),
        "the trap's message is the reason: {dead}"
    );
    eventually(std::time::Duration::from_secs(10), || {
        let d = deliveries(&hub, "p-2")[0].clone();
        (d["status"] == "delivered")
            .then_some(())
            .ok_or(format!("{d}"))
    });
    let (_, letters) = hub.get_json("/v1/dead-letters");
    assert!(letters.to_string().contains("p-1"), "{letters}");
    // Three traps among the deliveries do not quarantine the adapter.
    let (_, adapters) = hub.get_json("/v1/adapters");
    assert!(
        !adapters.to_string().contains("\"quarantined\":true"),
        "{adapters}"
    );
}

/// A webhook adapter standing for one department, delivering to `receiver`
/// under `/<name>`.
fn department(name: &str, receiver: &Receiver) -> AdapterSpec {
    AdapterSpec::new(name, "webhook-adapter").tables(&format!(
        "[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"http://{host}/{name}\"",
        host = receiver.host()
    ))
}

/// A hub whose police (a webhook to `receiver`) get the events of
/// `police_types` and never accept a case, and whose community grid gets
/// the escalations; `cases` is the `[cases]` section's deadline lines.
fn escalating_hub(receiver: &Receiver, cases: &str, police_types: &str) -> HubDir {
    HubDir::new(
        &[
            department("police", receiver),
            department("community", receiver),
        ],
        &format!(
            r#"
[cases]
default_resolve_s = 3600
{cases}

[[routes]]
name = "to the police"
match = {{ type = "{police_types}" }}
to = ["police"]

[[routes]]
name = "escalations to the community grid"
match = {{ type = "gov.case.escalated" }}
to = ["community"]
"#
        ),
    )
}

/// Escalations of case `caseid` the community grid received.
fn escalations(receiver: &Receiver, caseid: &str) -> usize {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.path == "/community" && r.header("ce-type") == Some("gov.case.escalated"))
        .filter(|r| r.header("ce-caseid") == Some(caseid))
        .count()
}

/// Posts a river report with this id (a case the police must accept);
/// returns the case id the hub gave it.
fn report_case(hub: &HubProcess, id: &str) -> String {
    let report = serde_json::json!({
        "specversion": "1.0", "id": id, "source": "urn:four-platforms:grid-app",
        "type": "gov.incident.reported", "category": "safety.water", "severity": "major",
        "grid": "yingfeng/yingyi/2", "data": { "text": "河边有人" },
    });
    let (status, _, body) = send_event(&hub.base, &report).unwrap();
    assert_eq!(status, 202, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["accepted"][0]["caseid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `kill -SIG pid`.
fn signal(hub: &HubProcess, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &hub.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

#[test]
fn a_hub_frozen_for_thirty_seconds_loses_nothing_and_escalates_a_passed_deadline_once() {
    use std::time::{Duration, Instant};
    let receiver = Receiver::start();
    let dir = escalating_hub(
        &receiver,
        "default_accept_s = 5\nescalation_s = [600, 1200]\ncheck_interval_ms = 200",
        "gov.*",
    );
    let hub = dir.start();
    // A case the police never accept: its deadline passes while frozen.
    let caseid = report_case(&hub, "frozen-report");
    // A stream of alerts to the police, ten a second, during the freeze.
    let base = hub.base.clone();
    let sender = std::thread::spawn(move || {
        let mut refused = Vec::new();
        for i in 0..400 {
            let e = serde_json::json!({
                "specversion": "1.0", "id": format!("stream-{i}"), "source": "urn:test:stream",
                "type": "gov.alert.issued", "severity": "info",
            });
            // A request sent while the hub is stopped waits for it; one
            // that outlives the client's 30 s goes again (the same id: the
            // hub takes it once).
            let mut answer = None;
            for _ in 0..3 {
                answer = send_event(&base, &e);
                if answer.is_some() {
                    break;
                }
            }
            match answer {
                Some((200 | 202, _, _)) => {}
                other => refused.push((i, other)),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        refused
    });
    std::thread::sleep(Duration::from_secs(2));
    signal(&hub, "-STOP");
    let frozen = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    signal(&hub, "-CONT");
    eprintln!("frozen for {:?}", frozen.elapsed());
    let refused = sender.join().unwrap();
    assert!(refused.is_empty(), "refused: {refused:?}");
    // Every event of the stream reaches the police.
    eventually(Duration::from_secs(30), || {
        let got: std::collections::HashSet<String> = receiver
            .received()
            .into_iter()
            .filter(|r| r.path == "/police")
            .filter_map(|r| r.header("ce-id").map(str::to_string))
            .collect();
        let missing: Vec<String> = (0..400)
            .map(|i| format!("stream-{i}"))
            .filter(|id| !got.contains(id))
            .collect();
        match missing.len() {
            0 => Ok(()),
            n => Err(format!(
                "{n} not delivered, e.g. {:?}",
                &missing[..n.min(5)]
            )),
        }
    });
    // The deadline that passed while frozen escalated the case once.
    let c = hub.wait_until(
        &format!("/v1/cases/{caseid}"),
        Duration::from_secs(10),
        |c| c["level"] == 1,
    );
    assert_eq!(c["level_name"], "community", "{c}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        escalations(&receiver, &caseid),
        1,
        "escalated more than once"
    );
    let (_, c) = hub.get_json(&format!("/v1/cases/{caseid}"));
    assert_eq!(c["level"], 1, "{c}");
}

/// libfaketime, which steps the system clock under one process.
fn libfaketime() -> Option<PathBuf> {
    let lib = std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    if lib.is_none() {
        eprintln!(
            "SKIPPED: libfaketime is not installed (Debian: apt-get install libfaketime; tests/run.sh installs it as root)"
        );
    }
    lib
}

#[test]
fn a_system_clock_stepped_back_an_hour_or_forward_a_day_neither_loses_nor_repeats_an_escalation() {
    use std::time::Duration;
    let Some(lib) = libfaketime() else { return };
    let receiver = Receiver::start();
    let dir = escalating_hub(
        &receiver,
        "default_accept_s = 4\nescalation_s = [3600, 7200]\ncheck_interval_ms = 100",
        "gov.incident.reported",
    );
    // The system clock as the hub sees it: the file's offset, read at
    // every call; the monotonic clock is left alone.
    let offset = dir.dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let hub = dir.start_with_env(&[
        ("LD_PRELOAD", lib.to_str().unwrap()),
        ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
        ("FAKETIME_NO_CACHE", "1"),
        ("DONT_FAKE_MONOTONIC", "1"),
    ]);
    let caseid = report_case(&hub, "clock-report");
    // Back an hour, a second after the case opened: its deadline (4 s)
    // still comes in 4 s, not in an hour and 4 s.
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&offset, "-1h\n").unwrap();
    let c = hub.wait_until(
        &format!("/v1/cases/{caseid}"),
        Duration::from_secs(15),
        |c| c["level"] == 1,
    );
    assert_eq!(c["level_name"], "community", "{c}");
    hub.wait_log("the system clock was stepped", Duration::from_secs(5));
    // Forward a day: the next level is an hour away on the steady clock;
    // it does not fire now.
    std::fs::write(&offset, "+1d\n").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (_, c) = hub.get_json(&format!("/v1/cases/{caseid}"));
    assert_eq!(c["level"], 1, "escalated again after the step: {c}");
    assert_eq!(escalations(&receiver, &caseid), 1);
    // A case opened after the steps keeps its own deadline.
    let second_case = report_case(&hub, "clock-report-2");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        hub.get_json(&format!("/v1/cases/{second_case}")).1["level"],
        0
    );
    hub.wait_until(
        &format!("/v1/cases/{second_case}"),
        Duration::from_secs(15),
        |c| c["level"] == 1,
    );
}

/// A tmpfs mounted at a folder for one test, unmounted when dropped; `None`
/// (with the reason printed) where the test cannot mount (not root, no
/// mount permission in a container).
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk {
                at: at.to_path_buf(),
            }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a small filesystem (run as root; tests/run.sh in CI is): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: no mount command: {e}");
                None
            }
        }
    }

    /// Gives the filesystem more room (space returns).
    fn grow(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {}", self.at.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}

#[test]
fn a_full_disk_answers_503_with_its_cause_loses_nothing_acknowledged_and_recovers_by_itself() {
    use std::time::Duration;
    let receiver = Receiver::start();
    let dir = HubDir::new(
        &[department("police", &receiver)],
        r#"
[[routes]]
name = "everything to the police"
match = { type = "gov.*" }
to = ["police"]
"#,
    );
    // The journal's folder on a 2 MiB filesystem.
    let Some(disk) = SmallDisk::mount(&dir.dir.path().join("data"), "2m") else {
        return;
    };
    let hub = dir.start();
    let event = |id: &str| {
        serde_json::json!({
            "specversion": "1.0", "id": id, "source": "urn:test:disk",
            "type": "gov.alert.issued", "severity": "info",
            "data": { "text": "x".repeat(8 * 1024) },
        })
    };
    // Fill it: 8 KiB events until the hub says no (bounded).
    let mut accepted = Vec::new();
    let mut refusal = None;
    for i in 0..2_000 {
        let id = format!("full-{i}");
        let (status, _, body) = send_event(&hub.base, &event(&id)).expect("an answer");
        match status {
            202 => accepted.push(id),
            _ => {
                refusal = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refusal.expect("2,000 events of 8 KiB never filled 2 MiB");
    eprintln!(
        "{} events accepted before the disk filled; then: {body}",
        accepted.len()
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("journal unavailable") && body.contains("full"),
        "the cause is named: {body}"
    );
    assert!(!accepted.is_empty());
    // Still refused while full, and the hub stays up.
    let (status, _, _) = send_event(&hub.base, &event("still-full")).unwrap();
    assert_eq!(status, 503);
    assert!(hub.healthy());
    // Space returns: the hub takes events again, no restart.
    disk.grow("64m");
    eventually(Duration::from_secs(20), || {
        match send_event(&hub.base, &event("after-full")) {
            Some((202, _, _)) => Ok(()),
            other => Err(format!("not yet: {other:?}")),
        }
    });
    accepted.push("after-full".into());
    // Everything acknowledged is kept and delivered.
    receiver.wait_for_ids("the department", &accepted, Duration::from_secs(60));
    for id in [&accepted[0], &accepted[accepted.len() - 1]] {
        let (status, e) = hub.get_json(&format!("/v1/events/{id}"));
        assert_eq!(status, 200, "{id}: {e}");
    }
    drop(hub);
    drop(disk);
}
