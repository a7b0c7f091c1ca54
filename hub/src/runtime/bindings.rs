//! Host-side bindings of `wit/adapter.wit`, and the conversions between
//! them and [`govhub_sdk`]'s types, which are the hub's own event model
//! (one CloudEvents codec on both sides of the sandbox).

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "adapter",
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
    require_store_data_send: true,
    // Arguments to the adapter (`inbound`, the event to deliver) are
    // lowered straight from the hub's own values, not from a copy.
    ownership: Borrowing {
        duplicate_if_necessary: true
    },
});

use self::govhub::adapter::types as wit;
use govhub_sdk as sdk;

impl From<wit::Severity> for sdk::Severity {
    fn from(s: wit::Severity) -> Self {
        match s {
            wit::Severity::Info => sdk::Severity::Info,
            wit::Severity::Minor => sdk::Severity::Minor,
            wit::Severity::Major => sdk::Severity::Major,
            wit::Severity::Critical => sdk::Severity::Critical,
        }
    }
}

impl From<sdk::Severity> for wit::Severity {
    fn from(s: sdk::Severity) -> Self {
        match s {
            sdk::Severity::Info => wit::Severity::Info,
            sdk::Severity::Minor => wit::Severity::Minor,
            sdk::Severity::Major => wit::Severity::Major,
            sdk::Severity::Critical => wit::Severity::Critical,
        }
    }
}

impl From<wit::EventResult> for sdk::Event {
    fn from(e: wit::EventResult) -> Self {
        sdk::Event {
            id: e.id,
            source: e.source,
            type_: e.type_,
            subject: e.subject,
            time: e.time,
            datacontenttype: e.datacontenttype,
            dataschema: e.dataschema,
            data: e.data,
            caseid: e.caseid,
            grid: e.grid,
            severity: e.severity.map(Into::into),
            category: e.category,
            lat: e.lat,
            lon: e.lon,
            extensions: e
                .extensions
                .into_iter()
                .map(|a| sdk::Attribute {
                    name: a.name,
                    value: a.value,
                })
                .collect(),
        }
    }
}

/// An event's extensions, borrowed for [`event_param`].
pub fn attributes(a: &[sdk::Attribute]) -> Vec<wit::AttributeParam<'_>> {
    a.iter()
        .map(|a| wit::AttributeParam {
            name: &a.name,
            value: &a.value,
        })
        .collect()
}

/// The event as the argument of `deliver`, borrowing every field (no copy
/// of the data before it is lowered into the adapter's memory).
pub fn event_param<'a>(
    e: &'a sdk::Event,
    extensions: &'a [wit::AttributeParam<'a>],
) -> wit::EventParam<'a> {
    wit::EventParam {
        id: &e.id,
        source: &e.source,
        type_: &e.type_,
        subject: e.subject.as_deref(),
        time: e.time.as_deref(),
        datacontenttype: e.datacontenttype.as_deref(),
        dataschema: e.dataschema.as_deref(),
        data: e.data.as_deref(),
        caseid: e.caseid.as_deref(),
        grid: e.grid.as_deref(),
        severity: e.severity.map(Into::into),
        category: e.category.as_deref(),
        lat: e.lat,
        lon: e.lon,
        extensions,
    }
}

/// A message's headers, borrowed for [`inbound_param`].
pub fn headers(m: &sdk::Inbound) -> Vec<wit::HeaderParam<'_>> {
    m.headers
        .iter()
        .map(|h| wit::HeaderParam {
            name: &h.name,
            value: &h.value,
        })
        .collect()
}

/// The message as the argument of `ingest`, borrowing every field.
pub fn inbound_param<'a>(
    m: &'a sdk::Inbound,
    headers: &'a [wit::HeaderParam<'a>],
) -> wit::Inbound<'a> {
    wit::Inbound {
        method: &m.method,
        query: &m.query,
        headers,
        body: &m.body,
    }
}

impl From<wit::AdapterError> for sdk::AdapterError {
    fn from(e: wit::AdapterError) -> Self {
        match e {
            wit::AdapterError::InvalidInput(m) => sdk::AdapterError::InvalidInput(m),
            wit::AdapterError::Unavailable(m) => sdk::AdapterError::Unavailable(m),
            wit::AdapterError::Rejected(m) => sdk::AdapterError::Rejected(m),
        }
    }
}

impl From<wit::Description> for sdk::Description {
    fn from(d: wit::Description) -> Self {
        sdk::Description {
            name: d.name,
            version: d.version,
            department: d.department,
            subscriptions: d.subscriptions,
        }
    }
}

impl From<wit::Outcome> for sdk::Outcome {
    fn from(o: wit::Outcome) -> Self {
        sdk::Outcome {
            reference: o.reference,
            note: o.note,
            events: o.events.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<wit::PollResult> for sdk::PollResult {
    fn from(p: wit::PollResult) -> Self {
        sdk::PollResult {
            events: p.events.into_iter().map(Into::into).collect(),
            cursor: p.cursor,
        }
    }
}
