//! The soak, as CI runs it: `govhub-load soak` for one minute at half the
//! hub's maximum rate with a slice of failing deliveries (the hour-long
//! run is in BENCHMARKS.md). It must account for every event (taken by
//! the department or dead-lettered), refuse none at ingress, and hold its
//! file descriptors and journal size steady.

mod support;

use std::process::Command;

/// The report lines: (sent, open fds, journal MiB) of each.
fn lines(out: &str) -> Vec<(u64, u64, f64)> {
    out.lines()
        .filter(|l| l.starts_with("| ") && l.contains(" s |"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[2].parse().unwrap(),
                cells[9].parse().unwrap(),
                cells[10].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_one_minute_soak_loses_nothing_and_holds_its_descriptors_and_log() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_govhub-load"))
        .args([
            "soak",
            "--minutes",
            "1",
            "--report-seconds",
            "15",
            "--probe-seconds",
            "5",
            "--govhub",
        ])
        .arg(support::govhub_bin())
        .arg("--wasm-dir")
        .arg(support::wasm_dir())
        .arg("--dir")
        .arg(work.path())
        .output()
        .expect("govhub-load runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("soak passed: nothing lost"), "{stdout}");
    let rows = lines(&stdout);
    assert!(rows.len() >= 4, "a line every 15 s: {stdout}");
    let (first, last) = (rows[0], rows[rows.len() - 1]);
    assert!(last.0 > first.0, "events were sent: {stdout}");
    assert!(
        last.1 <= first.1 + 16,
        "open file descriptors went from {} to {}",
        first.1,
        last.1
    );
    // The write-ahead log is restarted at 64 MiB: the journal holds the
    // events (about 2 KiB each) and at most that much log.
    let events = last.0 as f64;
    assert!(
        last.2 < 80.0 + events * 4.0 / 1024.0,
        "the journal is {} MiB for {events} events",
        last.2
    );
}
