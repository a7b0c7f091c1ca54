//! `police.ingest` of the river incident (a ~430-byte CAD JSON with a
//! Chinese description) on a pooled instance, beside the same mapping as
//! native Rust, in one run.
//!
//! `cargo bench -p govhub --bench adapter_call`

use criterion::{criterion_group, criterion_main, Criterion};
use govhub::runtime::{Manifest, Runtime, RuntimeConfig};
use govhub_sdk::{Adapter, Inbound};

const RIVER: &str = include_str!("../../adapters/police/samples/incident-river.json");

/// The adapters, built once the way the end-to-end tests build them.
#[path = "../../tests/support/mod.rs"]
mod support;

fn police_wasm() -> std::path::PathBuf {
    match std::env::var_os("GOVHUB_BENCH_POLICE_WASM") {
        Some(p) => p.into(),
        None => support::wasm("police-adapter"),
    }
}

fn bench(c: &mut Criterion) {
    let message = Inbound::post_json(RIVER);
    let mut group = c.benchmark_group("police.ingest");

    group.bench_function("native", |b| {
        b.iter(|| police_adapter::Police::ingest(std::hint::black_box(message.clone())).unwrap())
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let wasm = police_wasm();
    let adapter = rt
        .block_on(runtime.load(&Manifest::for_module(&wasm, "police")))
        .unwrap();
    group.bench_function("govhub-pooled", |b| {
        b.to_async(&rt).iter(|| async {
            adapter
                .ingest(std::hint::black_box(&message))
                .await
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
