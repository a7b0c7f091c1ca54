//! The adapter call, one run, side by side:
//! - `police.ingest` of a 303-byte CAD incident (Chinese description):
//!   native Rust, govhub on a pooled instance, on a fresh instance per call
//!   (`isolate_calls`), and on a fresh instance from wasmtime's pooling
//!   allocator;
//! - `boundary`: a component's `add-one(u32) -> u32`, the call cost alone.
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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
