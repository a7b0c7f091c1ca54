//! The fuzz corpora, replayed on stable Rust with every other test: each
//! input committed under `tests/fuzz/corpus/<target>/` (what the fuzzer
//! kept: the seeds and the inputs that reached new code) and
//! `tests/fuzz/regressions/<target>/` (each crash or hang fuzzing found,
//! kept after its fix) goes through the same target body the fuzzer ran
//! (`tests/fuzz/targets.rs`). A panic, a failed round trip, or an input
//! taking more than a second fails the test, naming the file.

#[path = "fuzz/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz")
}

#[test]
fn every_committed_fuzz_input_passes_its_target() {
    // A panic's message is collected below, not printed for each input.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, target) in targets::ALL {
        let mut inputs = 0;
        for kind in ["corpus", "regressions"] {
            let dir = fuzz_dir().join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let started = Instant::now();
                let outcome = std::panic::catch_unwind(|| target(&data));
                let took = started.elapsed();
                inputs += 1;
                match outcome {
                    Err(panic) => {
                        let why = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures.push(format!("{}: panicked: {why}", path.display()));
                    }
                    Ok(()) if took > Duration::from_secs(1) => {
                        failures.push(format!("{}: took {took:?}", path.display()));
                    }
                    Ok(()) => {}
                }
            }
        }
        assert!(
            inputs > 0,
            "target {name} has no corpus in {}",
            fuzz_dir().display()
        );
        replayed += inputs;
    }
    let _ = std::panic::take_hook();
    eprintln!(
        "{replayed} fuzz inputs replayed over {} targets",
        targets::ALL.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fuzz_binary_is_a_target_the_replay_knows() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let binaries: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "govhub-fuzz")
        .collect();
    let known: Vec<&str> = targets::ALL.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        binaries, known,
        "tests/fuzz/Cargo.toml and targets::ALL differ"
    );
}
