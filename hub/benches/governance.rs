//! What data governance costs one delivery, side by side in one run:
//! - `baseline`: what the hub does without a policy (the event cloned for
//!   the adapter);
//! - `label`: labelling an event on arrival (its data parsed once);
//! - `view`: the view one recipient gets (parse, mask, pseudonymize,
//!   generalize, serialize);
//! - `flow`: the view plus the flow record (the payload's sha256, the
//!   fields and actions as JSON): the whole of a redacted delivery's
//!   extra work outside the journal.
//!
//! Under the Yingfeng policy as shipped (examples/yingfeng/govhub.toml:
//! every `[[classification]]` rule, the village committee's grant), on
//! two events: the e-trike report of the Yingfeng demo, and the 1 KB
//! incident report of `govhub-load e2e --events-kind report --policy`.
//!
//! `cargo bench -p govhub --bench governance`.

use criterion::{criterion_group, criterion_main, Criterion};
use govhub::governance::{ClassificationRule, Governance, GovernanceConfig, Outgoing};
use govhub_sdk::Event;
use std::hint::black_box;

/// The Yingfeng classification rules and the village's grant.
fn yingfeng() -> Governance {
    #[derive(serde::Deserialize)]
    struct Policy {
        classification: Vec<ClassificationRule>,
        governance: GovernanceConfig,
    }
    let p: Policy = toml::from_str(include_str!("../../examples/yingfeng/govhub.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = p.governance;
    config.key_file = Some(dir.path().join("key"));
    Governance::load(&p.classification, &config, dir.path(), None, None).unwrap()
}

fn report() -> Event {
    Event::new("gov.incident.reported")
        .with_id("GW-20250801-1740-07")
        .with_source("urn:govhub:four-platforms")
        .with_grid("yingfeng/yingyi/2")
        .with_location(30.2325, 120.2008)
        .with_json(&serde_json::json!({
            "description": "盈一佳苑小区西门早晚高峰电动三轮车拥堵，存在安全隐患，联系电话 13812341234",
            "photos": ["https://img.example/gw/0712/1.jpg"],
            "worker": {"id": "W-0712", "name": "管九阳"},
            "reporter": {"name": "欧阳娜娜", "phone": "+86 139 0000 7777", "id_number": "33010919900101123X"},
            "event_code": "ZF-02",
            "platform": "综合执法",
        }))
}

/// The load generator's report (`govhub-load e2e --events-kind report`).
fn load_report() -> Event {
    Event::new("gov.incident.reported")
        .with_id("max-1")
        .with_source("urn:govhub:four-platforms")
        .with_grid("yingfeng/yingyi/2")
        .with_location(30.2325, 120.2008)
        .with_json(&serde_json::json!({
            "description": format!("{}联系电话 13812341234", "盈一佳苑小区西门早晚高峰电动三轮车拥堵，存在安全隐患。".repeat(6)),
            "photos": ["https://img.example/gw/0712/1.jpg", "https://img.example/gw/0712/2.jpg"],
            "address": "杭州市萧山区盈丰街道盈一佳苑西门",
            "worker": { "id": "W-0712", "name": "管九阳" },
            "reporter": { "name": "欧阳娜娜", "phone": "+86 139 0000 7777", "id_number": "33010919900101123X" },
            "event_code": "ZF-02",
            "platform": "综合执法",
        }))
}

fn bench(c: &mut Criterion) {
    let g = yingfeng();
    for (name, mut event) in [
        ("yingfeng-report", report()),
        ("e2e-report-1kb", load_report()),
    ] {
        let recipient = "village";
        g.label(&mut event);
        let mut group = c.benchmark_group(name);
        group.bench_function("baseline", |b| b.iter(|| black_box(&event).clone()));
        group.bench_function("label", |b| {
            b.iter(|| {
                let mut e = black_box(&event).clone();
                g.label(&mut e);
                e
            })
        });
        group.bench_function("view", |b| {
            b.iter(|| g.outgoing(black_box(&event), recipient))
        });
        group.bench_function("flow", |b| {
            b.iter(|| match g.outgoing(black_box(&event), recipient) {
                Outgoing::Send(view, applied) => {
                    g.flow_record(&event, Some(&view), &applied, "delivered", 1)
                }
                Outgoing::Withhold(_) => None,
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
