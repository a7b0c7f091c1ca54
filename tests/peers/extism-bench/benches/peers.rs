//! The adapter call beside its peer, one process, one run:
//! - `police.ingest`: the 303-byte CAD incident through native Rust, a
//!   govhub component on a pooled instance, and the same mapping (same
//!   crate) as an Extism 1.30 plugin. Extism passes bytes, so its figure
//!   includes reading the CloudEvents batch the plugin writes back into
//!   events on the host: the component hands over typed records.
//! - `boundary`: u32 in, u32 out, the call cost alone, in a component and
//!   in an Extism plugin.
//!
//! Run by `tests/peers/run.sh`, which builds the modules first.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::PathBuf;

#[path = "../../../../hub/benches/shared/mod.rs"]
mod shared;
use shared::Mode;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

fn module(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run tests/peers/run.sh, which builds it",
        path.display()
    );
    path
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let components = root().join("target/adapters/wasm32-wasip2/release");
    let plugin_wasm = std::fs::read(module(
        root().join("tests/peers/target/wasm32-unknown-unknown/release/extism_police.wasm"),
    ))
    .unwrap();
    let message = shared::message();

    let adapter = shared::police(
        &rt,
        &module(components.join("police_adapter.wasm")),
        Mode::Pooled,
    );
    // The same events from all three, before anything is timed.
    let expected = shared::native(&message);
    assert_eq!(rt.block_on(adapter.ingest(&message)).unwrap(), expected);
    let mut plugin = extism::Plugin::new(&plugin_wasm, [], false).unwrap();
    let extism_ingest = |plugin: &mut extism::Plugin, body: &[u8]| {
        let out: &[u8] = plugin.call("ingest", body).unwrap();
        govhub_sdk::cloudevents::batch_from_slice(out).unwrap()
    };
    assert_eq!(
        extism_ingest(&mut plugin, shared::INCIDENT.as_bytes()),
        expected
    );

    let mut group = c.benchmark_group("police.ingest");
    group.bench_function("native", |b| b.iter(|| shared::native(black_box(&message))));
    group.bench_function("govhub-pooled-instance", |b| {
        b.to_async(&rt)
            .iter(|| async { adapter.ingest(black_box(&message)).await.unwrap() })
    });
    group.bench_function("extism-plugin", |b| {
        b.iter(|| extism_ingest(&mut plugin, black_box(shared::INCIDENT.as_bytes())))
    });
    group.finish();

    let mut group = c.benchmark_group("boundary");
    let trivial = tokio::sync::Mutex::new(rt.block_on(shared::Trivial::new(&module(
        components.join("fixture_trivial.wasm"),
    ))));
    assert_eq!(
        rt.block_on(async { trivial.lock().await.call(41).await }),
        42
    );
    group.bench_function("component-add-one-async", |b| {
        b.to_async(&rt).iter(|| async {
            // Uncontended: criterion runs one iteration at a time.
            trivial.lock().await.call(black_box(41)).await
        })
    });
    let add_one = |plugin: &mut extism::Plugin, x: u32| -> u32 {
        plugin.call::<u32, u32>("add_one", x).unwrap()
    };
    assert_eq!(add_one(&mut plugin, 41), 42);
    group.bench_function("extism-add-one", |b| {
        b.iter(|| add_one(&mut plugin, black_box(41)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
