//! The W3C trace context (`traceparent`, `tracestate`) in and out: read
//! from a request's headers or an event's CloudEvents extensions (the
//! distributed-tracing extension), made the parent of the hub's spans,
//! stored with the event, and written on every delivery.

use govhub_sdk::Event;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header and CloudEvents extension naming the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header and extension carrying vendors' trace state.
pub const TRACESTATE: &str = "tracestate";

/// A trace context read from somewhere: its two values, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<trace id>-<parent id>-<flags>`.
    pub traceparent: String,
    /// The vendors' state, when there is one.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context a `traceparent` (and `tracestate`) names, when the
    /// `traceparent` is well formed with non-zero ids; `None` otherwise
    /// (a malformed one is ignored, as W3C asks). Both are kept as they
    /// came, flags and later versions' fields included: handed on, they
    /// are what the sender sent.
    pub fn parse(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<TraceContext> {
        let traceparent = traceparent?.trim();
        if !well_formed(traceparent) {
            return None;
        }
        Some(TraceContext {
            traceparent: traceparent.to_string(),
            tracestate: tracestate
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    /// The context of the span `cx` holds, when it is valid.
    pub fn of(cx: &Context) -> Option<TraceContext> {
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(cx, &mut carrier);
        Some(TraceContext {
            traceparent: carrier.remove(TRACEPARENT)?,
            tracestate: carrier.remove(TRACESTATE).filter(|s| !s.is_empty()),
        })
    }

    /// The context of `span` when traces are exported (the span is
    /// recorded by the exporting layer); `None` when they are off.
    pub fn of_span(span: &tracing::Span) -> Option<TraceContext> {
        if !super::active() || span.is_disabled() {
            return None;
        }
        TraceContext::of(&span.context())
    }

    /// What an HTTP request's `traceparent` / `tracestate` headers name.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<TraceContext> {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        TraceContext::parse(get(TRACEPARENT), get(TRACESTATE))
    }

    /// What an event's `traceparent` / `tracestate` extensions name.
    pub fn from_event(event: &Event) -> Option<TraceContext> {
        TraceContext::parse(event.extension(TRACEPARENT), event.extension(TRACESTATE))
    }

    /// The OpenTelemetry context whose remote parent this is. Read as
    /// version `00` with only the sampled flag (OpenTelemetry refuses the
    /// flags it does not know, W3C's random-trace-id flag among them).
    pub fn context(&self) -> Context {
        let t = &self.traceparent;
        let flags = u8::from_str_radix(&t[53..55], 16).unwrap_or(0) & 1;
        let known = format!("00-{}-{flags:02x}", &t[3..52]);
        extract(&known, self.tracestate.as_deref())
    }

    /// Writes it into `event`'s extensions, replacing what was there.
    pub fn store(&self, event: &mut Event) {
        event
            .extensions
            .retain(|a| a.name != TRACEPARENT && a.name != TRACESTATE);
        event.extensions.push(govhub_sdk::Attribute {
            name: TRACEPARENT.into(),
            value: self.traceparent.clone(),
        });
        if let Some(state) = &self.tracestate {
            event.extensions.push(govhub_sdk::Attribute {
                name: TRACESTATE.into(),
                value: state.clone(),
            });
        }
    }

    /// As HTTP headers.
    pub fn headers(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let mut out = Vec::with_capacity(2);
        if let Ok(v) = http::HeaderValue::from_str(&self.traceparent) {
            out.push((http::HeaderName::from_static(TRACEPARENT), v));
        }
        if let Some(Ok(v)) = self.tracestate.as_deref().map(http::HeaderValue::from_str) {
            out.push((http::HeaderName::from_static(TRACESTATE), v));
        }
        out
    }

    /// Its trace id, 32 hex digits.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }
}

/// W3C's form, strictly: `version-traceid-parentid-flags`, lower-case
/// hex of 2, 32, 16 and 2 digits, neither id all zeros, version `ff`
/// invalid, and nothing after the flags in version `00` (a later version
/// may add fields after a `-`).
fn well_formed(traceparent: &str) -> bool {
    let b = traceparent.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b[r].iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let zero = |r: std::ops::Range<usize>| b[r].iter().all(|c| *c == b'0');
    b.len() >= 55
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(0..2)
        && &b[0..2] != b"ff"
        && hex(3..35)
        && !zero(3..35)
        && hex(36..52)
        && !zero(36..52)
        && hex(53..55)
        && match (&b[0..2], b.len()) {
            (b"00", n) => n == 55,
            (_, n) => n == 55 || b[55] == b'-',
        }
}

fn extract(traceparent: &str, tracestate: Option<&str>) -> Context {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert(TRACEPARENT.to_string(), traceparent.trim().to_string());
    if let Some(state) = tracestate {
        carrier.insert(TRACESTATE.to_string(), state.trim().to_string());
    }
    TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier)
}

/// Makes `parent` the parent of `span` (before the span is entered; a
/// no-op when traces are off).
pub fn follow(span: &tracing::Span, parent: Option<&TraceContext>) {
    if !super::active() {
        return;
    }
    if let Some(p) = parent {
        let _ = span.set_parent(p.context());
    }
}

/// Links `span` to another trace (an event's own, when the hub's
/// context replaces it).
pub fn link(span: &tracing::Span, other: &TraceContext) {
    let cx = other.context();
    span.add_link(cx.span().span_context().clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_well_formed_traceparent_reads_back_and_round_trips_through_an_event() {
        let t = TraceContext::parse(Some(TP), Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(t.traceparent, TP);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        let mut e = Event::new("gov.incident.reported").with_extension(TRACEPARENT, "old");
        t.store(&mut e);
        assert_eq!(e.extension(TRACEPARENT), Some(TP));
        assert_eq!(
            e.extensions
                .iter()
                .filter(|a| a.name == TRACEPARENT)
                .count(),
            1
        );
        assert_eq!(TraceContext::from_event(&e), Some(t.clone()));
        let headers = t.headers();
        assert_eq!(headers[0].1, TP);
        let mut map = http::HeaderMap::new();
        map.extend(headers);
        assert_eq!(TraceContext::from_headers(&map), Some(t));
    }

    #[test]
    fn what_the_sender_sent_is_kept_as_it_came_and_read_as_a_parent_all_the_same() {
        for (tp, sampled) in [
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
                true,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02",
                false,
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later",
                true,
            ),
        ] {
            let t = TraceContext::parse(Some(tp), Some(" a=1 ")).unwrap();
            assert_eq!(t.traceparent, tp);
            assert_eq!(t.tracestate.as_deref(), Some("a=1"));
            let cx = t.context();
            let sc = cx.span().span_context().clone();
            assert!(sc.is_valid() && sc.is_remote(), "{tp}");
            assert_eq!(
                sc.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
            assert_eq!(sc.is_sampled(), sampled, "{tp}");
        }
    }

    #[test]
    fn malformed_or_zero_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(TraceContext::parse(Some(bad), None), None, "{bad}");
        }
        assert_eq!(TraceContext::parse(None, Some("a=b")), None);
    }

    #[test]
    fn with_no_exporting_layer_a_span_has_no_context() {
        let span = tracing::info_span!("deliver");
        assert_eq!(TraceContext::of_span(&span), None);
    }
}
