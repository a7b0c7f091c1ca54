//! Operations end to end: upgrades under load, rollback, restart on the
//! same versions, signed modules, quarantine, the audit chain, metrics and
//! JSON logs. The real binary, a real journal, the marker fixtures (three
//! versions of one adapter that mark what they deliver).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const TOKEN: &str = "ops-test-token";

/// Fast retries so the tests do not wait for production backoff.
const FAST_RETRIES: &str =
    "[delivery]\nmax_attempts = 50\nbackoff_base_ms = 20\nbackoff_cap_ms = 200\n";

/// The marker adapter, built from `crate_name`, delivering to `receiver`.
fn marker(receiver: &Receiver, crate_name: &str) -> AdapterSpec {
    AdapterSpec::new("marker", crate_name)
        .top("subscribe = [\"gov.incident.*\"]")
        .tables(&format!(
            "[limits]\nconcurrency = 4\n[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"http://{host}/events\"",
            host = receiver.host()
        ))
}

/// Writes a manifest and module outside the watched folder, for `govhub
/// adapters load`; returns the manifest.
fn staged(dir: &Path, spec: &AdapterSpec) -> PathBuf {
    install(dir, spec);
    dir.join(format!("{}.toml", spec.name))
}

/// `govhub ARGS` against `hub` with the admin token.
fn cli(hub: &HubProcess, args: &[&str]) -> (bool, String, String) {
    govhub_with_env(
        args,
        &[("GOVHUB_URL", &hub.base), ("GOVHUB_ADMIN_TOKEN", TOKEN)],
    )
}

fn cli_ok(hub: &HubProcess, args: &[&str]) -> String {
    let (ok, out, err) = cli(hub, args);
    assert!(
        ok,
        "govhub {args:?} failed:\n{out}\n{err}\nhub log:\n{}",
        hub.log()
    );
    out
}

/// For each event id the receiver got: the marks of its deliveries.
fn marks(receiver: &Receiver) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in receiver.received() {
        if let (Some(id), Some(mark)) = (r.header("ce-id"), r.header("x-govhub-mark")) {
            out.entry(id.to_string())
                .or_default()
                .push(mark.to_string());
        }
    }
    out
}

/// Waits until every id in `want` reached the receiver; returns the marks.
fn wait_marks(
    receiver: &Receiver,
    want: &[String],
    timeout: Duration,
) -> HashMap<String, Vec<String>> {
    eventually(timeout, || {
        let got = marks(receiver);
        match want.iter().filter(|id| !got.contains_key(*id)).count() {
            0 => Ok(got),
            missing => Err(format!(
                "{missing} of {} events never reached the department",
                want.len()
            )),
        }
    })
}

/// Sends one event and waits for its delivery; returns the mark.
fn deliver_one(hub: &HubProcess, receiver: &Receiver, id: &str) -> String {
    let (status, _, body) = send_event(&hub.base, &cloudevent(id, None, 50)).expect("hub answers");
    assert_eq!(status, 202, "{body}");
    let got = wait_marks(receiver, &[id.to_string()], Duration::from_secs(30));
    got[id].last().unwrap().clone()
}

/// `GET path` with the admin token.
fn admin_get(hub: &HubProcess, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = get_with(
        &hub.url(path),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    );
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn adapter_entry(hub: &HubProcess, name: &str) -> Option<serde_json::Value> {
    let (status, v) = admin_get(hub, "/v1/adapters");
    assert_eq!(status, 200, "{v}");
    v["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
}

/// Sends each id as an event; every one must be accepted.
fn send_all(hub: &HubProcess, ids: &[String]) {
    for id in ids {
        let (status, _, body) = send_event(&hub.base, &cloudevent(id, None, 50)).unwrap();
        assert_eq!(status, 202, "{body}");
    }
}

/// Waits until `/v1/adapters` shows `name` quarantined; returns its entry.
fn wait_quarantined(hub: &HubProcess, name: &str) -> serde_json::Value {
    eventually(Duration::from_secs(30), || {
        let e = adapter_entry(hub, name).unwrap();
        match e["quarantined"].is_string() {
            true => Ok(e),
            false => Err(format!("never quarantined: {e}")),
        }
    })
}

#[test]
fn an_upgrade_mid_stream_loses_nothing_and_every_later_event_goes_to_the_new_version() {
    const TOTAL: usize = 2_000;
    const CLIENTS: usize = 4;
    let receiver = Receiver::start();
    let dir = HubDir::new(&[marker(&receiver, "fixture-marker-v1")], "");
    let hub = dir.start_with_env(&[("GOVHUB_ADMIN_TOKEN", TOKEN)]);
    let staging = tempfile::tempdir().unwrap();
    let v2 = staged(staging.path(), &marker(&receiver, "fixture-marker-v2"));

    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let swapped = Arc::new(AtomicBool::new(false));
    let after_swap: Arc<Mutex<HashSet<String>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, acked, swapped, after_swap, base) = (
                next.clone(),
                acked.clone(),
                swapped.clone(),
                after_swap.clone(),
                hub.base.clone(),
            );
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TOTAL {
                    return;
                }
                let id = format!("up-{i}");
                // Sent after the swap returned: must be delivered by v2.
                let after = swapped.load(Ordering::SeqCst);
                let (status, _, body) =
                    send_event(&base, &cloudevent(&id, None, 100)).expect("hub answers");
                assert_eq!(status, 202, "{id}: {body}");
                acked.fetch_add(1, Ordering::SeqCst);
                if after {
                    after_swap.lock().unwrap().insert(id);
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::SeqCst) < TOTAL / 2 {
        assert!(
            Instant::now() < deadline,
            "the stream stalled before the swap"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = cli_ok(&hub, &["adapters", "load", v2.to_str().unwrap()]);
    swapped.store(true, Ordering::SeqCst);
    assert!(out.contains("now serves version 2"), "{out}");
    for c in clients {
        c.join().unwrap();
    }

    let want: Vec<String> = (0..TOTAL).map(|i| format!("up-{i}")).collect();
    let got = wait_marks(&receiver, &want, Duration::from_secs(120));
    let mut by = HashMap::<&str, usize>::new();
    for id in &want {
        let m = &got[id];
        assert_eq!(m.len(), 1, "{id} was delivered {} times: {m:?}", m.len());
        *by.entry(m[0].as_str()).or_default() += 1;
    }
    let after = after_swap.lock().unwrap();
    assert!(!after.is_empty(), "no event was sent after the swap");
    for id in after.iter() {
        assert_eq!(got[id], ["v2"], "{id} was sent after the swap");
    }
    // Both versions served: v1 before the swap, v2 after it (events sent
    // before the swap may be delivered by either).
    assert!(by.get("v1").copied().unwrap_or(0) > 0, "{by:?}");
    assert!(by.get("v2").copied().unwrap_or(0) >= after.len(), "{by:?}");
    assert_eq!(by.values().sum::<usize>(), TOTAL, "{by:?}");
    eprintln!(
        "delivered by version: {by:?}; sent after the swap: {}",
        after.len()
    );
    // The new version has the same limits, so it kept the adapter's
    // connections: both versions together opened at most `concurrency`.
    let opened = hub.metric(
        "govhub_outbound_connections_opened_total",
        &[("adapter", "marker")],
    );
    assert!(
        (1.0..=4.0).contains(&opened),
        "{opened} connections for {TOTAL} deliveries across a swap"
    );

    let entry = adapter_entry(&hub, "marker").unwrap();
    assert_eq!(entry["version_id"], 2);
    assert_eq!(entry["describe"]["version"], "2.0.0");
    assert_eq!(entry["versions"].as_array().unwrap().len(), 2);
    assert_eq!(entry["can_roll_back"], true);
}

#[test]
fn rollback_unload_and_restarts_keep_the_chosen_version() {
    let receiver = Receiver::start();
    let dir = HubDir::new(&[marker(&receiver, "fixture-marker-v1")], FAST_RETRIES);
    let env = [("GOVHUB_ADMIN_TOKEN", TOKEN)];
    let mut hub = dir.start_with_env(&env);
    let staging = tempfile::tempdir().unwrap();
    let v2 = staged(staging.path(), &marker(&receiver, "fixture-marker-v2"));
    let v2 = v2.to_str().unwrap();

    // The admin API wants the token.
    let (status, _, body) = request("GET", &hub.url("/v1/adapters"), &[], b"").unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    let (ok, _, err) = govhub_with_env(
        &["adapters", "list"],
        &[("GOVHUB_URL", &hub.base), ("GOVHUB_ADMIN_TOKEN", "wrong")],
    );
    assert!(!ok && err.contains("401"), "{err}");

    assert_eq!(deliver_one(&hub, &receiver, "r-1"), "v1");
    cli_ok(&hub, &["adapters", "load", v2]);
    assert_eq!(deliver_one(&hub, &receiver, "r-2"), "v2");
    let list = cli_ok(&hub, &["adapters", "list"]);
    assert!(
        list.contains("marker") && list.contains("2 versions"),
        "{list}"
    );

    let out = cli_ok(&hub, &["adapters", "rollback", "marker"]);
    assert!(out.contains("rolled back to version 1"), "{out}");
    assert_eq!(deliver_one(&hub, &receiver, "r-3"), "v1");

    // v2 again, then a restart: the hub comes back on v2, not on the
    // folder's v1.
    cli_ok(&hub, &["adapters", "load", v2]);
    assert_eq!(deliver_one(&hub, &receiver, "r-4"), "v2");
    hub.terminate(Duration::from_secs(20));
    drop(hub);
    let mut hub = dir.start_with_env(&env);
    assert_eq!(deliver_one(&hub, &receiver, "r-5"), "v2");
    let entry = adapter_entry(&hub, "marker").unwrap();
    assert_eq!(entry["describe"]["version"], "2.0.0");
    assert_eq!(entry["origin"], "admin");

    // Unloaded: its pending deliveries wait, through a restart, until a
    // version is loaded. (The department is down when r-6 comes, so r-6 is
    // pending at the unload.)
    receiver.answer(503);
    let (status, _, body) = send_event(&hub.base, &cloudevent("r-6", None, 50)).unwrap();
    assert_eq!(status, 202, "{body}");
    hub.wait_until("/v1/events/r-6", Duration::from_secs(10), |ev| {
        ev["deliveries"][0]["attempts"].as_u64() >= Some(1)
    });
    let out = cli_ok(&hub, &["adapters", "unload", "marker"]);
    assert!(out.contains("unloaded"), "{out}");
    // The department stays down until a version is loaded again: an
    // attempt that started before the unload may still be in flight.
    hub.terminate(Duration::from_secs(20));
    drop(hub);
    let hub = dir.start_with_env(&env);
    assert!(
        adapter_entry(&hub, "marker").is_none(),
        "an unloaded adapter came back"
    );
    hub.wait_log("left unloaded", Duration::from_secs(10));
    assert!(!marks(&receiver).contains_key("r-6"));
    let (_, ev) = hub.get_json("/v1/events/r-6");
    assert_eq!(ev["deliveries"][0]["status"], "pending", "{ev}");
    receiver.answer(200);
    cli_ok(&hub, &["adapters", "load", v2]);
    let got = wait_marks(&receiver, &["r-6".to_string()], Duration::from_secs(30));
    assert_eq!(got["r-6"], ["v2"]);
}

#[test]
fn unsigned_and_forged_modules_are_refused_when_signatures_are_required() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("team.key");
    let other = keys.path().join("other.key");
    for k in [&key, &other] {
        let (ok, out, err) = govhub(&["adapter", "keygen", "--out", k.to_str().unwrap()]);
        assert!(ok, "{out}{err}");
        assert!(out.contains("trusted_keys"), "{out}");
    }
    // The secret key is private to its owner.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let public = std::fs::read_to_string(keys.path().join("team.key.pub")).unwrap();
    let signing = format!(
        "[signing]\nrequire_signatures = true\ntrusted_keys = [\"{}\"]\n",
        public.trim()
    );
    let sign = |module: &Path, key: &Path| {
        let (ok, out, err) = govhub(&[
            "adapter",
            "sign",
            module.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]);
        assert!(ok, "{out}{err}");
    };

    // An unsigned module in the folder: check-config and run refuse it.
    let receiver = Receiver::start();
    let unsigned = HubDir::new(&[marker(&receiver, "fixture-marker-v1")], &signing);
    let config = unsigned.config();
    let (ok, _, err) = govhub(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(!ok && err.contains("not signed"), "{err}");
    let (ok, _, err) = govhub(&["run", "--config", config.to_str().unwrap()]);
    assert!(!ok && err.contains("not signed"), "{err}");

    // Signed: loads.
    sign(&unsigned.dir.path().join("adapters.d/marker.wasm"), &key);
    let (ok, out, err) = govhub(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("signed"), "{out}");
    let hub = unsigned.start_with_env(&[("GOVHUB_ADMIN_TOKEN", TOKEN)]);
    assert_eq!(adapter_entry(&hub, "marker").unwrap()["signed"], true);

    // Through the admin API: unsigned, then signed by an untrusted key,
    // then a trusted signature copied onto another module.
    let staging = tempfile::tempdir().unwrap();
    let v2 = staged(staging.path(), &marker(&receiver, "fixture-marker-v2"));
    let v2_module = staging.path().join("marker.wasm");
    let (ok, _, err) = cli(&hub, &["adapters", "load", v2.to_str().unwrap()]);
    assert!(!ok && err.contains("not signed"), "{err}");
    sign(&v2_module, &other);
    let (ok, _, err) = cli(&hub, &["adapters", "load", v2.to_str().unwrap()]);
    assert!(!ok && err.contains("does not verify"), "{err}");
    std::fs::copy(
        unsigned.dir.path().join("adapters.d/marker.wasm.sig"),
        staging.path().join("marker.wasm.sig"),
    )
    .unwrap();
    let (ok, _, err) = cli(&hub, &["adapters", "load", v2.to_str().unwrap()]);
    assert!(!ok && err.contains("does not verify"), "{err}");
    assert_eq!(
        deliver_one(&hub, &receiver, "s-1"),
        "v1",
        "a refused load changed the serving version"
    );

    sign(&v2_module, &key);
    cli_ok(&hub, &["adapters", "load", v2.to_str().unwrap()]);
    assert_eq!(deliver_one(&hub, &receiver, "s-2"), "v2");
    let (_, audit) = admin_get(&hub, "/v1/audit");
    let refused = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "refused" && r["actor"] == "admin")
        .count();
    assert_eq!(refused, 3, "{audit}");
    // The refused start is on record too.
    assert_eq!(audit["audit"][0]["action"], "refused", "{audit}");
    assert_eq!(audit["audit"][0]["actor"], "dir", "{audit}");
}

#[test]
fn a_failing_upgrade_is_quarantined_rolled_back_and_its_backlog_delivered() {
    let receiver = Receiver::start();
    let command_center = Receiver::start();
    let watcher = AdapterSpec::new("command-center", "webhook-adapter")
        .top("subscribe = [\"gov.adapter.*\"]")
        .tables(&format!(
            "[capabilities]\noutbound_hosts = [\"{host}\"]\n[config]\nurl = \"http://{host}/events\"",
            host = command_center.host()
        ));
    let config = format!(
        "{FAST_RETRIES}\n[quarantine]\nwindow = 10\nmin_calls = 5\nmax_failure_rate = 0.5\nrollback_window_s = 600\n"
    );
    let dir = HubDir::new(&[marker(&receiver, "fixture-marker-v1"), watcher], &config);
    let hub = dir.start_with_env(&[("GOVHUB_ADMIN_TOKEN", TOKEN)]);
    let staging = tempfile::tempdir().unwrap();
    let bad = staged(staging.path(), &marker(&receiver, "fixture-marker-bad"));
    cli_ok(&hub, &["adapters", "load", bad.to_str().unwrap()]);

    let ids: Vec<String> = (0..30).map(|i| format!("q-{i}")).collect();
    send_all(&hub, &ids);
    let got = wait_marks(&receiver, &ids, Duration::from_secs(60));
    for id in &ids {
        assert_eq!(got[id], ["v1"], "{id}");
    }
    let (_, dead) = hub.get_json("/v1/dead-letters");
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 0, "{dead}");

    // Both steps are events the command center receives, and audit records.
    let types = |r: &Receiver| -> Vec<String> {
        r.received()
            .iter()
            .filter_map(|x| x.header("ce-type").map(str::to_string))
            .collect()
    };
    command_center.wait_for(2, Duration::from_secs(30));
    let seen = types(&command_center);
    assert!(
        seen.iter().any(|t| t == "gov.adapter.quarantined"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|t| t == "gov.adapter.rolled-back"),
        "{seen:?}"
    );
    let entry = adapter_entry(&hub, "marker").unwrap();
    assert_eq!(entry["describe"]["version"], "1.0.0", "{entry}");
    assert_eq!(entry["origin"], "dir", "{entry}");
    assert!(entry["quarantined"].is_null(), "{entry}");
    let (_, audit) = admin_get(&hub, "/v1/audit");
    let actions: Vec<_> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["actor"].as_str().unwrap(),
                r["action"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        actions.contains(&"hub quarantine".to_string()),
        "{actions:?}"
    );
    assert!(actions.contains(&"hub rollback".to_string()), "{actions:?}");
}

#[test]
fn a_failing_adapter_with_nothing_to_roll_back_to_waits_quarantined_without_dropping() {
    let receiver = Receiver::start();
    let config = format!(
        "{FAST_RETRIES}\n[quarantine]\nwindow = 10\nmin_calls = 5\nmax_failure_rate = 0.5\n"
    );
    let dir = HubDir::new(&[marker(&receiver, "fixture-marker-bad")], &config);
    let hub = dir.start_with_env(&[("GOVHUB_ADMIN_TOKEN", TOKEN)]);
    let ids: Vec<String> = (0..20).map(|i| format!("w-{i}")).collect();
    send_all(&hub, &ids);
    let entry = wait_quarantined(&hub, "marker");
    assert!(
        entry["quarantined"].as_str().unwrap().contains("failed"),
        "{entry}"
    );
    let (status, body) = get(&hub.url("/metrics"));
    assert_eq!(status, 200);
    assert!(
        body.contains("govhub_adapter_quarantined{adapter=\"marker\"} 1"),
        "{body}"
    );
    // Its raw ingress answers 503 while it is out of rotation.
    let (status, _, body) = post(
        &hub.url("/v1/ingest/marker"),
        &[("content-type", "application/json")],
        cloudevent("w-raw", None, 10).to_string().as_bytes(),
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("quarantined"), "{body}");
    // Nothing dropped: no dead letter, every delivery still pending.
    let (_, dead) = hub.get_json("/v1/dead-letters");
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 0, "{dead}");
    for id in &ids {
        let (_, ev) = hub.get_json(&format!("/v1/events/{id}"));
        assert_eq!(ev["deliveries"][0]["status"], "pending", "{ev}");
    }
    // A working version takes the backlog.
    let staging = tempfile::tempdir().unwrap();
    let v1 = staged(staging.path(), &marker(&receiver, "fixture-marker-v1"));
    cli_ok(&hub, &["adapters", "load", v1.to_str().unwrap()]);
    let got = wait_marks(&receiver, &ids, Duration::from_secs(60));
    assert!(ids.iter().all(|id| got[id] == ["v1"]));
    assert!(adapter_entry(&hub, "marker").unwrap()["quarantined"].is_null());
}

#[test]
fn audit_verify_finds_a_changed_removed_or_reordered_record() {
    let receiver = Receiver::start();
    let dir = HubDir::new(&[marker(&receiver, "fixture-marker-v1")], "");
    let mut hub = dir.start_with_env(&[("GOVHUB_ADMIN_TOKEN", TOKEN)]);
    let staging = tempfile::tempdir().unwrap();
    let v2 = staged(staging.path(), &marker(&receiver, "fixture-marker-v2"));
    cli_ok(&hub, &["adapters", "load", v2.to_str().unwrap()]);
    cli_ok(&hub, &["adapters", "rollback", "marker"]);
    cli_ok(&hub, &["adapters", "unload", "marker"]);
    let (_, audit) = admin_get(&hub, "/v1/audit");
    let records = audit["audit"].as_array().unwrap();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["load", "load", "rollback", "unload"], "{audit}");
    assert_eq!(records[0]["actor"], "dir");
    // The admin API's caller is the `admin` principal (the
    // auth.admin_token_env shorthand).
    assert_eq!(records[1]["actor"], "admin", "{audit}");
    assert!(
        !audit.to_string().contains(TOKEN),
        "the token itself is in the log"
    );
    hub.terminate(Duration::from_secs(20));

    let config = dir.config();
    let verify = || govhub(&["audit", "verify", "--config", config.to_str().unwrap()]);
    let (ok, out, err) = verify();
    assert!(ok, "{out}{err}");
    assert!(out.contains("4 records, chain intact"), "{out}");

    let db = rusqlite::Connection::open(dir.dir.path().join("data/govhub.db")).unwrap();
    let row = |seq: i64| -> Vec<rusqlite::types::Value> {
        db.query_row("SELECT * FROM audit WHERE seq = ?1", [seq], |r| {
            (0..r.as_ref().column_count()).map(|i| r.get(i)).collect()
        })
        .unwrap()
    };
    let put_back = |values: &[rusqlite::types::Value]| {
        let marks = vec!["?"; values.len()].join(", ");
        db.execute(
            &format!("INSERT INTO audit VALUES ({marks})"),
            rusqlite::params_from_iter(values.iter()),
        )
        .unwrap();
    };

    // The journal itself refuses changes; a tamperer drops its guards.
    let refused = db.execute("UPDATE audit SET actor = 'someone' WHERE seq = 1", []);
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    db.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();

    // Changed.
    db.execute(
        "UPDATE audit SET detail = '{\"sha256\":\"feed\"}' WHERE seq = 2",
        [],
    )
    .unwrap();
    let (ok, _, err) = verify();
    assert!(
        !ok && err.contains("record 2") && err.contains("changed"),
        "{err}"
    );
    db.execute(
        "UPDATE audit SET detail = ?1 WHERE seq = 2",
        [records[1]["detail"].as_str().unwrap()],
    )
    .unwrap();
    assert!(verify().0, "restoring the record restores the chain");

    // Removed from the middle.
    let second = row(2);
    db.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
    let (ok, _, err) = verify();
    assert!(!ok && err.contains("removed"), "{err}");

    put_back(&second);
    assert!(verify().0, "the chain verifies again");

    // Reordered: the second and third records trade places.
    let swap = |a: i64, b: i64| {
        db.execute("UPDATE audit SET seq = -1 WHERE seq = ?1", [a])
            .unwrap();
        db.execute("UPDATE audit SET seq = ?1 WHERE seq = ?2", [a, b])
            .unwrap();
        db.execute("UPDATE audit SET seq = ?1 WHERE seq = -1", [b])
            .unwrap();
    };
    swap(2, 3);
    let (ok, _, err) = verify();
    assert!(!ok && err.contains("reordered"), "{err}");
    swap(2, 3);
    assert!(verify().0, "the chain in order verifies again");

    // The last record removed.
    db.execute("DELETE FROM audit WHERE seq = 4", []).unwrap();
    let (ok, _, err) = verify();
    assert!(!ok && err.contains("removed from the end"), "{err}");
}

#[test]
fn metrics_parse_and_move_with_traffic_and_json_logs_carry_the_event() {
    let receiver = Receiver::start();
    let dir = HubDir::new(&[marker(&receiver, "fixture-marker-v1")], "");
    // No admin token: the admin API is off.
    let hub = dir.start_with_env(&[("GOVHUB_LOG_JSON", "true")]);
    let (status, body) = get(&hub.url("/v1/audit"));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("admin_token_env"), "{body}");

    let scrape = || hub.scrape();
    let value = metric_value;
    let before = scrape();
    const N: usize = 25;
    let ids: Vec<String> = (0..N).map(|i| format!("m-{i}")).collect();
    send_all(&hub, &ids);
    wait_marks(&receiver, &ids, Duration::from_secs(30));
    // The outcome is counted just after the department answers, and the
    // queue shrinks once that outcome is committed to the journal.
    let after = eventually(Duration::from_secs(10), || {
        let s = scrape();
        let delivered = value(
            &s,
            "govhub_deliveries_total",
            &[("adapter", "marker"), ("outcome", "delivered")],
        );
        match delivered >= N as f64
            && value(&s, "govhub_queue_depth", &[("adapter", "marker")]) == 0.0
        {
            true => Ok(s),
            false => Err(format!(
                "delivery counter never reached {N} with an empty queue"
            )),
        }
    });
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(
        moved("govhub_events_received_total", &[("origin", "cloudevents")]),
        N as f64
    );
    assert_eq!(
        moved(
            "govhub_deliveries_total",
            &[("adapter", "marker"), ("outcome", "delivered")]
        ),
        N as f64
    );
    assert_eq!(
        moved(
            "govhub_delivery_duration_seconds_count",
            &[("adapter", "marker")]
        ),
        N as f64
    );
    assert!(moved("govhub_adapter_calls_total", &[("adapter", "marker")]) >= N as f64);
    assert!(
        value(
            &after,
            "govhub_adapter_memory_bytes",
            &[("adapter", "marker")]
        ) > 0.0
    );
    assert_eq!(
        value(&after, "govhub_queue_depth", &[("adapter", "marker")]),
        0.0
    );
    assert_eq!(
        value(&after, "govhub_adapter_pool_size", &[("adapter", "marker")]),
        4.0
    );

    // JSON log lines; the adapter's own line sits in the deliver span of
    // its event.
    let log = hub.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let own = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "marking as v1" && l["span"]["govhub.event.id"] == "m-0"
        })
        .unwrap_or_else(|| panic!("no adapter line inside the deliver span of m-0:\n{log}"));
    // At `debug` the innermost span is the adapter call, inside the
    // delivery attempt.
    assert_eq!(own["span"]["name"], "adapter.call");
    assert_eq!(own["span"]["govhub.function"], "deliver");
    let deliver = own["spans"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "deliver"))
        .unwrap_or_else(|| panic!("no deliver span around the line: {own}"));
    assert_eq!(deliver["govhub.adapter"], "marker");
    assert_eq!(deliver["govhub.event.id"], "m-0");
    assert_eq!(deliver["govhub.attempt"], 1);
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "routed" && l["fields"]["event"] == "m-0"),
        "no routing line for m-0"
    );
}

#[test]
fn a_changed_module_in_the_watched_folder_is_loaded_as_a_new_version() {
    let receiver = Receiver::start();
    let dir = HubDir::new(
        &[marker(&receiver, "fixture-marker-v1")],
        "[adapters]\nwatch_interval_ms = 50\n",
    );
    let hub = dir.start_with_env(&[
        ("GOVHUB_ADMIN_TOKEN", TOKEN),
        ("GOVHUB__SERVER__MAX_UPLOAD_BYTES", "65536"),
    ]);
    assert_eq!(deliver_one(&hub, &receiver, "d-1"), "v1");
    let folder = dir.dir.path().join("adapters.d");

    // Uploads are capped by server.max_upload_bytes (the module is larger).
    let staging = tempfile::tempdir().unwrap();
    let v2 = staged(staging.path(), &marker(&receiver, "fixture-marker-v2"));
    let (ok, _, err) = cli(&hub, &["adapters", "load", v2.to_str().unwrap()]);
    assert!(
        !ok && err.contains("413") && err.contains("server.max_upload_bytes"),
        "{err}"
    );

    // A broken manifest is refused and logged; the serving version stays.
    std::fs::write(folder.join("marker.toml"), "name = \"marker\"\nwasm = 7\n").unwrap();
    hub.wait_log("not loaded", Duration::from_secs(20));
    assert_eq!(deliver_one(&hub, &receiver, "d-2"), "v1");

    install(&folder, &marker(&receiver, "fixture-marker-v2"));
    let e = eventually(Duration::from_secs(20), || {
        let e = adapter_entry(&hub, "marker").unwrap();
        match e["describe"]["version"] == "2.0.0" {
            true => Ok(e),
            false => Err(format!("the new module was not loaded: {e}")),
        }
    });
    assert_eq!(e["origin"], "dir");
    assert_eq!(deliver_one(&hub, &receiver, "d-3"), "v2");
}

#[test]
fn a_department_outage_quarantines_without_rollback_until_a_probe_succeeds() {
    let receiver = Receiver::start();
    let config = format!(
        "{FAST_RETRIES}\n[quarantine]\nwindow = 10\nmin_calls = 5\nmax_failure_rate = 0.5\nprobe_interval_ms = 200\n"
    );
    let dir = HubDir::new(&[marker(&receiver, "fixture-marker-v1")], &config);
    let hub = dir.start_with_env(&[("GOVHUB_ADMIN_TOKEN", TOKEN)]);
    let staging = tempfile::tempdir().unwrap();
    let v2 = staged(staging.path(), &marker(&receiver, "fixture-marker-v2"));
    cli_ok(&hub, &["adapters", "load", v2.to_str().unwrap()]);

    // The department goes down just after the upgrade.
    receiver.answer(503);
    let ids: Vec<String> = (0..20).map(|i| format!("o-{i}")).collect();
    send_all(&hub, &ids);
    let entry = wait_quarantined(&hub, "marker");
    assert!(
        entry["quarantined"]
            .as_str()
            .unwrap()
            .contains("unavailable"),
        "{entry}"
    );
    // Not the upgrade's fault: it stays on v2.
    assert_eq!(entry["describe"]["version"], "2.0.0", "{entry}");

    // Back up: a probe succeeds, the backlog flows to v2.
    receiver.answer(200);
    let got = wait_marks(&receiver, &ids, Duration::from_secs(60));
    assert!(ids.iter().all(|id| got[id] == ["v2"]), "{got:?}");
    let e = adapter_entry(&hub, "marker").unwrap();
    assert!(e["quarantined"].is_null(), "{e}");
    assert_eq!(e["describe"]["version"], "2.0.0");
    // The release is audited just after the slot goes back in rotation.
    let actions = eventually(Duration::from_secs(10), || {
        let (_, audit) = admin_get(&hub, "/v1/audit");
        let actions: Vec<String> = audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap().to_string())
            .collect();
        match actions.iter().any(|a| a == "quarantine") && actions.iter().any(|a| a == "release") {
            true => Ok(actions),
            false => Err(format!("{actions:?}")),
        }
    });
    assert!(!actions.iter().any(|a| a == "rollback"), "{actions:?}");
}
