//! `GET /metrics`: what flows, what is slow, what is stuck, in
//! OpenMetrics 1.0 (prometheus-client) or the Prometheus text format 0.0.4,
//! as the scraper's `Accept` asks.
//!
//! Counted as it happens: events received (per origin) and duplicates,
//! deliveries per adapter and outcome (`delivered`, `retry`, `dead`), the
//! delivery call's duration. Read at each scrape from the adapters and the
//! queues: calls, traps, deadline hits, instances created, idle instances,
//! linear memory, queue depth, quarantine.

use crate::delivery::Deliveries;
use crate::runtime::Adapter;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

type Labels = Vec<(String, String)>;

/// What a scrape reads from the parts around the metrics (the adapters'
/// own counters, the queues, the streams); `hub.rs` implements it.
pub trait Observed: Send + Sync + 'static {
    /// The adapters serving, by name, sorted.
    fn serving(&self) -> Vec<(String, Arc<Adapter>)>;
    /// The delivery queues.
    fn deliveries(&self) -> &Deliveries;
    /// Open `/v1/stream` connections.
    fn stream_subscribers(&self) -> usize;
    /// Whether `name` is out of rotation.
    fn quarantined(&self, name: &str) -> bool;
}

/// The hub's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    received: Family<Labels, Counter>,
    duplicates: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    delivery_seconds: Family<Labels, Histogram>,
    shed: Family<Labels, Counter>,
    /// What `crate::auth` counts.
    pub auth: crate::auth::AuthMetrics,
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

impl Metrics {
    /// Empty counters, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("govhub");
        let received = Family::<Labels, Counter>::default();
        let duplicates = Family::<Labels, Counter>::default();
        let deliveries = Family::<Labels, Counter>::default();
        // 1 ms to about 16 s: loopback departments answer in a millisecond,
        // a slow one near its deadline in seconds.
        let delivery_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "events_received",
            "Events accepted, by origin adapter (or `cloudevents`)",
            received.clone(),
        );
        registry.register(
            "events_duplicate",
            "Events answered as duplicates, by origin",
            duplicates.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts by adapter and outcome (delivered, retry, dead)",
            deliveries.clone(),
        );
        registry.register(
            "delivery_duration_seconds",
            "Duration of adapter deliver calls",
            delivery_seconds.clone(),
        );
        let shed = Family::<Labels, Counter>::default();
        registry.register(
            "events_shed",
            "Events refused with 503 because a target's queue was full for their severity (info, minor, major, critical, none)",
            shed.clone(),
        );
        let auth = crate::auth::AuthMetrics::default();
        registry.register(
            "auth_refused",
            "Requests refused by authentication or authorization, by reason (unauthenticated, forbidden, source, adapter, quota, signin)",
            auth.refused.clone(),
        );
        registry.register(
            "quota_refused_events",
            "Events refused with 429 by their sender's quota, by principal",
            auth.quota_refused.clone(),
        );
        Metrics {
            auth,
            registry: Mutex::new(registry),
            received,
            duplicates,
            deliveries,
            delivery_seconds,
            shed,
        }
    }

    /// Reads the adapters' and queues' own counters at each scrape.
    pub fn watch(&self, observed: Weak<dyn Observed>) {
        if let Ok(mut r) = self.registry.lock() {
            r.register_collector(Box::new(HubCollector(observed)));
        }
    }

    /// Counts an accepted event.
    pub fn received(&self, origin: Option<&str>, duplicate: bool) {
        let l = label("origin", origin.unwrap_or("cloudevents"));
        if duplicate {
            self.duplicates.get_or_create(&l).inc();
        } else {
            self.received.get_or_create(&l).inc();
        }
    }

    /// Counts an event refused for a full queue.
    pub fn shed(&self, severity: Option<govhub_sdk::Severity>) {
        let s = severity.map(|s| s.as_str()).unwrap_or("none");
        self.shed.get_or_create(&label("severity", s)).inc();
    }

    /// Counts a delivery attempt and its duration.
    pub fn delivery(&self, adapter: &str, outcome: &str, seconds: f64) {
        self.deliveries
            .get_or_create(&vec![
                ("adapter".to_string(), adapter.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ])
            .inc();
        self.delivery_seconds
            .get_or_create(&label("adapter", adapter))
            .observe(seconds);
    }

    /// Delivery attempts to `adapter` so far: delivered, retried, dead.
    pub fn delivery_counts(&self, adapter: &str) -> [u64; 3] {
        ["delivered", "retry", "dead"].map(|outcome| {
            self.deliveries
                .get_or_create(&vec![
                    ("adapter".to_string(), adapter.to_string()),
                    ("outcome".to_string(), outcome.to_string()),
                ])
                .get()
        })
    }

    /// The OpenMetrics exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }

    /// The exposition in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::Text => openmetrics_to_text(&self.encode()),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

struct HubCollector(Weak<dyn Observed>);

impl std::fmt::Debug for HubCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubCollector")
    }
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(String, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (adapter, v) in values {
        let l = label("adapter", adapter);
        ConstCounter::new(*v).encode(m.encode_family(&l)?)?;
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(String, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (adapter, v) in values {
        let l = label("adapter", adapter);
        ConstGauge::new(*v).encode(m.encode_family(&l)?)?;
    }
    Ok(())
}

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(hub) = self.0.upgrade() else {
            return Ok(());
        };
        let adapters = hub.serving();
        let names: Vec<String> = adapters.iter().map(|(n, _)| n.clone()).collect();
        let stat = |f: fn(&crate::runtime::AdapterStats) -> u64| -> Vec<(String, u64)> {
            adapters
                .iter()
                .map(|(n, a)| (n.clone(), f(&a.stats)))
                .collect()
        };
        counters(
            &mut encoder,
            "adapter_calls",
            "Calls into the adapter",
            &stat(|s| s.calls.load(Ordering::Relaxed)),
        )?;
        counters(
            &mut encoder,
            "adapter_traps",
            "Calls that trapped (panics, memory cap, other traps)",
            &stat(|s| s.traps.load(Ordering::Relaxed)),
        )?;
        counters(
            &mut encoder,
            "adapter_deadline_hits",
            "Calls stopped at their deadline",
            &stat(|s| s.deadline_hits.load(Ordering::Relaxed)),
        )?;
        counters(
            &mut encoder,
            "adapter_instances_created",
            "Instances created (the first and every replacement)",
            &stat(|s| s.instances_created.load(Ordering::Relaxed)),
        )?;
        let idle: Vec<(String, i64)> = adapters
            .iter()
            .map(|(n, a)| (n.clone(), a.idle_instances() as i64))
            .collect();
        gauges(
            &mut encoder,
            "adapter_instances_idle",
            "Instances idle in the pool",
            &idle,
        )?;
        let concurrency: Vec<(String, i64)> = adapters
            .iter()
            .map(|(n, a)| (n.clone(), i64::from(a.manifest.limits.concurrency)))
            .collect();
        gauges(
            &mut encoder,
            "adapter_pool_size",
            "Instances the pool may hold (concurrency)",
            &concurrency,
        )?;
        let memory: Vec<(String, i64)> = adapters
            .iter()
            .map(|(n, a)| (n.clone(), a.memory_bytes() as i64))
            .collect();
        gauges(
            &mut encoder,
            "adapter_memory_bytes",
            "Linear memory of the adapter's live instances",
            &memory,
        )?;
        let depth: Vec<(String, i64)> = names
            .iter()
            .map(|n| (n.clone(), hub.deliveries().depth(n) as i64))
            .collect();
        gauges(
            &mut encoder,
            "queue_depth",
            "Deliveries waiting, per target adapter",
            &depth,
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "queue_lane_depth",
                "Deliveries waiting, per target adapter and lane (the events' severity; info holds events without one)",
                None,
                MetricType::Gauge,
            )?;
            for n in &names {
                for (rank, d) in hub.deliveries().lane_depths(n).iter().enumerate() {
                    let lane = govhub_sdk::Severity::from_rank(rank as u8).as_str();
                    let l = vec![
                        ("adapter".to_string(), n.clone()),
                        ("lane".to_string(), lane.to_string()),
                    ];
                    ConstGauge::new(*d as i64).encode(m.encode_family(&l)?)?;
                }
            }
        }
        counters(
            &mut encoder,
            "outbound_connections_opened",
            "Connections the adapter's HTTP client opened to departments (kept alive and reused)",
            &adapters
                .iter()
                .map(|(n, a)| (n.clone(), a.connections_opened()))
                .collect::<Vec<_>>(),
        )?;
        {
            let m = encoder.encode_descriptor(
                "stream_subscribers",
                "Open GET /v1/stream connections",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(hub.stream_subscribers() as i64).encode(m)?;
        }
        let quarantined: Vec<(String, i64)> = names
            .iter()
            .map(|n| (n.clone(), i64::from(hub.quarantined(n))))
            .collect();
        gauges(
            &mut encoder,
            "adapter_quarantined",
            "1 while the adapter is out of rotation",
            &quarantined,
        )?;
        Ok(())
    }
}

/// The two text formats `GET /metrics` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`application/openmetrics-text`), what Prometheus
    /// asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain; version=0.0.4`),
    /// for every client that does not ask for OpenMetrics: older
    /// scrapers, Telegraf, Zabbix, curl.
    Text,
}

impl Format {
    /// The answer's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` (version 1.0.0, 0.0.1 or none) with
    /// a weight above the text format's (or the same weight, named
    /// first); the text format otherwise, and with no header.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        // (weight, position) of the best range for each format.
        let mut open: Option<(f32, usize)> = None;
        let mut text: Option<(f32, usize)> = None;
        for (at, range) in accept.split(',').enumerate() {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let (mut q, mut version) = (1.0f32, None);
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.parse().unwrap_or(0.0),
                    "version" => version = Some(v.to_string()),
                    _ => {}
                }
            }
            if q <= 0.0 {
                continue;
            }
            let slot = match media.as_str() {
                "application/openmetrics-text"
                    if version
                        .as_deref()
                        .is_none_or(|v| v == "1.0.0" || v == "0.0.1") =>
                {
                    &mut open
                }
                "text/plain" if version.as_deref().is_none_or(|v| v == "0.0.4") => &mut text,
                "text/*" | "*/*" => &mut text,
                _ => continue,
            };
            if slot.is_none_or(|(best, _)| q > best) {
                *slot = Some((q, at));
            }
        }
        match (open, text) {
            (Some(_), None) => Format::OpenMetrics,
            (Some((qo, ao)), Some((qt, at))) if qo > qt || (qo == qt && ao < at) => {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }
}

/// The OpenMetrics exposition rewritten in the text format 0.0.4: a
/// counter's `# HELP` and `# TYPE` name its `_total` series (OpenMetrics
/// names the family without the suffix), `# UNIT` and `# EOF` go (0.0.4
/// has neither), and `\"` in help text becomes `"` (0.0.4 escapes only
/// backslash and line feed there). Samples are the same in both.
pub fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 8 * counters.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match described {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(p);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                if p == "# HELP " {
                    out.push_str(&tail.replace("\\\"", "\""));
                } else {
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_header_picks_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (None, Format::Text),
            (Some(prometheus), Format::OpenMetrics),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("application/openmetrics-text; version=0.0.1"),
                Format::OpenMetrics,
            ),
            (Some("text/plain;version=0.0.4"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some("*/*"), Format::Text),
            (Some("application/json"), Format::Text),
            // Ranked below the text format, or refused outright.
            (
                Some("application/openmetrics-text;q=0.3, text/plain"),
                Format::Text,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Text),
            // The same rank: the first named.
            (
                Some("text/plain, application/openmetrics-text"),
                Format::Text,
            ),
            (
                Some("application/openmetrics-text, text/plain"),
                Format::OpenMetrics,
            ),
            // A version this hub does not write.
            (
                Some("application/openmetrics-text;version=2.0.0"),
                Format::Text,
            ),
            (
                Some("Application/OpenMetrics-Text; Version=\"1.0.0\""),
                Format::OpenMetrics,
            ),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn counters_are_named_by_their_total_series_in_the_text_format() {
        let om = "# HELP x_events Events \\\"in\\\".\n# TYPE x_events counter\nx_events_total{origin=\"a\"} 3\n# HELP x_seconds Durations.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\nx_seconds_bucket{le=\"+Inf\"} 1\nx_seconds_sum 0.5\nx_seconds_count 1\n# HELP x_depth Depth.\n# TYPE x_depth gauge\nx_depth 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP x_events_total Events \"in\".\n# TYPE x_events_total counter\nx_events_total{origin=\"a\"} 3\n# HELP x_seconds Durations.\n# TYPE x_seconds histogram\nx_seconds_bucket{le=\"+Inf\"} 1\nx_seconds_sum 0.5\nx_seconds_count 1\n# HELP x_depth Depth.\n# TYPE x_depth gauge\nx_depth 2\n"
        );
    }

    #[test]
    fn both_formats_carry_the_same_samples() {
        let m = Metrics::new();
        m.received(Some("police"), false);
        m.received(Some("police"), true);
        m.delivery("police", "delivered", 0.004);
        let om = m.encode();
        let text = m.encode_as(Format::Text);
        assert!(om.ends_with("# EOF\n"));
        let samples = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        assert_eq!(samples(&om), samples(&text));
        assert!(
            text.contains("# TYPE govhub_events_received_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }
}
