//! The benchmark load generator, in small: every `govhub-load` phase runs
//! end to end against the real binary and prints its figures, so the
//! commands BENCHMARKS.md gives keep working. (The figures themselves are
//! measured by hand, at full size: speed is not asserted here.)

mod support;

use std::process::Command;
use support::*;

/// Runs `govhub-load ARGS` in a temp folder; its stdout.
fn load(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_govhub-load"))
        .args(args)
        .arg("--govhub")
        .arg(govhub_bin())
        .current_dir(dir.path())
        .env("GOVHUB__RUNTIME__CACHE_DIR", cache_dir())
        .output()
        .expect("govhub-load runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "govhub-load {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The numbers in `line` (thousands separators aside).
fn numbers(line: &str) -> Vec<f64> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| w.trim_matches('.').parse().ok())
        .collect()
}

fn line_with<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with `{needle}` in:\n{out}"))
}

#[test]
fn http_phase_measures_the_hub_beside_bare_hyper() {
    let out = load(&[
        "http",
        "--events",
        "300",
        "--concurrency",
        "8",
        "--runs",
        "1",
    ]);
    let row = line_with(&out, "| 1 |");
    let n = numbers(row);
    // run, bare, full, ratio, normal, ratio, with a principal, ratio
    assert_eq!(n.len(), 8, "{row}");
    assert!(
        n[1] > 0.0 && n[2] > 0.0 && n[4] > 0.0 && n[6] > 0.0,
        "{row}"
    );
    // The CPU each side spent per request, and how busy the cores were:
    // run, bare µs, its client µs, cores busy, cores; govhub µs, its
    // client µs, cores busy.
    let cpu = line_with(&out, "CPU per request");
    assert!(
        cpu.contains("bare hyper") && cpu.contains("govhub full"),
        "{cpu}"
    );
    assert_eq!(numbers(cpu).len(), 8, "{cpu}");
}

#[test]
fn e2e_phase_delivers_every_event_and_times_them() {
    let wasm = wasm_dir().to_str().unwrap().to_string();
    let out = load(&[
        "e2e",
        "--events",
        "300",
        "--concurrency",
        "8",
        "--latency-seconds",
        "1",
        "--wasm-dir",
        &wasm,
    ]);
    assert!(
        line_with(&out, "closed loop").contains("300 events delivered"),
        "{out}"
    );
    // The hub's CPU per event, and its journal writer's share of it.
    assert!(
        line_with(&out, "CPU during it").contains("its journal writer thread"),
        "{out}"
    );
    let lat = line_with(&out, "p99");
    assert!(lat.contains("p50") && lat.contains("max"), "{lat}");
    // Keep-alive: the webhook adapter (concurrency 16) reuses its
    // connections instead of opening one per delivery.
    let conns = numbers(line_with(&out, "connections the department accepted"));
    assert!(conns[0] >= 1.0 && conns[0] <= 16.0, "{out}");
}

#[test]
fn memory_phase_loads_100_adapters_and_grows_a_pool() {
    let wasm = wasm_dir().to_str().unwrap().to_string();
    let out = load(&["memory", "--instances", "4", "--wasm-dir", &wasm]);
    let hundred = numbers(line_with(&out, "| 100 |"));
    assert!(hundred[1] > 0.0, "{out}");
    assert!(
        line_with(&out, "pool grown from 1 to 4 instances").contains("per further instance"),
        "{out}"
    );
}

#[test]
fn startup_phase_starts_the_yingfeng_deployment_cold_and_warm() {
    let wasm = wasm_dir().to_str().unwrap().to_string();
    let out = load(&["startup", "--cold", "1", "--warm", "1", "--wasm-dir", &wasm]);
    assert!(
        line_with(&out, "Yingfeng deployment").contains("7 adapters"),
        "{out}"
    );
    assert!(line_with(&out, "cache cold").contains("compile:"), "{out}");
    assert!(
        line_with(&out, "cache warm").contains("deserialize:"),
        "{out}"
    );
}

#[test]
fn durable_phase_measures_the_hub_beside_the_sqlite_ceiling() {
    let out = load(&["durable", "--events", "300", "--latency-seconds", "1"]);
    assert!(
        numbers(line_with(&out, "raw SQLite ceiling"))[1] > 0.0,
        "{out}"
    );
    assert!(
        line_with(&out, "single-event requests").contains("% of the ceiling"),
        "{out}"
    );
    assert!(
        line_with(&out, "batched requests").contains("% of the ceiling"),
        "{out}"
    );
    // What bounds each: its CPU, and the journal writer's.
    assert!(line_with(&out, "CPU per row:").contains("µs"), "{out}");
    let batch_cpu = line_with(&out, "CPU per event: the hub");
    assert!(
        batch_cpu.contains("the journal writer thread busy") && !batch_cpu.contains("NaN"),
        "{out}"
    );
    assert!(
        line_with(&out, "half the single maximum").contains("p99"),
        "{out}"
    );
}

#[test]
fn swap_phase_swaps_cold_and_warm_without_losing_the_stream() {
    let wasm = wasm_dir().to_str().unwrap().to_string();
    let out = load(&[
        "swap",
        "--cold",
        "1",
        "--warm",
        "2",
        "--rate",
        "100",
        "--wasm-dir",
        &wasm,
    ]);
    assert!(
        line_with(&out, "cache cold").contains("raw compile"),
        "{out}"
    );
    assert!(
        line_with(&out, "cache warm").contains("raw deserialize"),
        "{out}"
    );
    assert!(
        line_with(&out, "stream at 100 events/s").contains(" 0 lost"),
        "{out}"
    );
}
