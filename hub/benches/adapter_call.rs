//! `police.ingest` of the river incident (a ~430-byte CAD JSON with a
//! Chinese description) on a pooled instance, beside the same mapping as
//! native Rust, in one run.
//!
//! `cargo bench -p govhub --bench adapter_call`

use criterion::{criterion_group, criterion_main, Criterion};
use govhub::runtime::{Manifest, Runtime, RuntimeConfig};
use govhub_sdk::{Adapter, Inbound};
use std::path::Path;
use std::process::Command;

const RIVER: &str = include_str!("../../adapters/police/samples/incident-river.json");

fn police_wasm() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("GOVHUB_BENCH_POLICE_WASM") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
            "target/adapters",
            "-p",
            "police-adapter",
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success());
    root.join("target/adapters/wasm32-wasip2/release/police_adapter.wasm")
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
