//! The adapter call, one run, side by side:
//! - `police.ingest` of a 303-byte CAD incident (Chinese description):
//!   native Rust, govhub on a pooled instance, on a fresh instance per call
//!   (`isolate_calls`), and on a fresh instance from wasmtime's pooling
//!   allocator;
//! - `boundary`: a component's `add-one(u32) -> u32`, the call cost alone,
//!   called the hub's way (async, on a fiber) and synchronously.
//!
//! `cargo bench -p govhub --bench adapter_call`. The Extism peer runs in
//! `tests/peers` (`tests/peers/run.sh`), with these same functions.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

mod shared;
use shared::Mode;

/// The adapters, built once the way the end-to-end tests build them.
#[path = "../../tests/support/mod.rs"]
mod support;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let message = shared::message();
    let police = support::wasm("police-adapter");
    if let Ok(variants) = std::env::var("GOVHUB_BENCH_POLICE") {
        // Only the builds side by side: nothing else is loaded (under
        // valgrind, neither the pooling allocator's reservation).
        interleaved(&rt, &message, &police, &variants);
        return;
    }
    let mut group = c.benchmark_group("police.ingest");
    group.bench_function("native", |b| b.iter(|| shared::native(black_box(&message))));
    for (name, mode) in [
        ("govhub-pooled-instance", Mode::Pooled),
        ("govhub-fresh-instance", Mode::Fresh),
        (
            "govhub-fresh-instance-pooling-allocator",
            Mode::FreshPoolingAllocator,
        ),
    ] {
        let adapter = shared::police(&rt, &police, mode);
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { adapter.ingest(black_box(&message)).await.unwrap() })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("boundary");
    let trivial = tokio::sync::Mutex::new(
        rt.block_on(shared::Trivial::new(&support::wasm("fixture-trivial"))),
    );
    group.bench_function("component-add-one-async", |b| {
        b.to_async(&rt).iter(|| async {
            // Uncontended: criterion runs one iteration at a time.
            trivial.lock().await.call(black_box(41)).await
        })
    });
    let mut sync = shared::TrivialSync::new(&support::wasm("fixture-trivial"));
    group.bench_function("component-add-one-sync", |b| {
        b.iter(|| sync.call(black_box(41)))
    });
    group.finish();
}

/// Other builds of the police adapter (an allocator or a build flag tried
/// against the shipped one), timed in one process in alternating rounds so
/// that the machine's drift falls on all of them alike:
/// `GOVHUB_BENCH_POLICE="shipped,name=path.wasm,other=path.wasm"`, rounds from
/// `GOVHUB_BENCH_ROUNDS` (default 9), each of `GOVHUB_BENCH_CALLS` calls
/// (default 20000). Prints min / median / max µs per call and the median of
/// each round's ratio to native. This machine's speed drifts by a third
/// from one second to the next; for differences below that, count
/// instructions instead (BENCHMARKS.md section 1: the same run under
/// `valgrind --tool=callgrind` at two call counts, the difference divided).
fn interleaved(
    rt: &tokio::runtime::Runtime,
    message: &govhub_sdk::Inbound,
    shipped: &std::path::Path,
    variants: &str,
) {
    let setting = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(default)
    };
    let rounds = setting("GOVHUB_BENCH_ROUNDS", 9) as usize;
    let calls = setting("GOVHUB_BENCH_CALLS", 20_000);
    let mut adapters = Vec::new();
    for variant in variants.split(',').filter(|v| !v.is_empty()) {
        // `shipped` alone: the adapter as the tests build it.
        let (name, path) = match variant.split_once('=') {
            Some((name, path)) => (name, std::path::Path::new(path)),
            None if variant == "shipped" => ("shipped", shipped),
            None => panic!("GOVHUB_BENCH_POLICE lists name=path.wasm pairs (or `shipped`)"),
        };
        let adapter = shared::police(rt, path, Mode::Pooled);
        assert_eq!(
            rt.block_on(adapter.ingest(message)).unwrap(),
            shared::native(message),
            "{name} maps the incident differently"
        );
        adapters.push((name.to_string(), adapter));
    }
    let mut native = Vec::new();
    let mut times = vec![Vec::new(); adapters.len()];
    for _ in 0..rounds {
        let started = std::time::Instant::now();
        for _ in 0..calls {
            black_box(shared::native(black_box(message)));
        }
        native.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(calls));
        for (i, (_, adapter)) in adapters.iter().enumerate() {
            let started = std::time::Instant::now();
            rt.block_on(async {
                for _ in 0..calls {
                    black_box(adapter.ingest(black_box(message)).await.unwrap());
                }
            });
            times[i].push(started.elapsed().as_secs_f64() * 1e6 / f64::from(calls));
        }
    }
    let spread = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        (s[0], s[s.len() / 2], s[s.len() - 1])
    };
    let (lo, mid, hi) = spread(&native);
    println!(
        "interleaved, {rounds} rounds of {calls} calls: native {lo:.3} / {mid:.3} / {hi:.3} µs"
    );
    for (i, (name, _)) in adapters.iter().enumerate() {
        let (lo, mid, hi) = spread(&times[i]);
        let ratios: Vec<f64> = times[i].iter().zip(&native).map(|(t, n)| t / n).collect();
        let (_, ratio, _) = spread(&ratios);
        println!("  {name}: {lo:.3} / {mid:.3} / {hi:.3} µs, {ratio:.2}x native");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
