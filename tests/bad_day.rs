//! The bad day, with the real binary: what the hub does when the file at
//! `storage.path` is not its journal, or is damaged.
//!
//! - a file that is not an SQLite database, a database of another
//!   application, a journal cut short, a journal with a damaged page and
//!   one from a newer govhub: the start stops with a message naming the
//!   file and what to do, and the file is left exactly as it was;
//! - a journal of an older govhub (before the application id) still opens,
//!   its events kept.

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
    // The case's own next event waits for it, then goes.
    assert_eq!(deliveries(&hub, "p-2")[0]["status"], "pending");
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
