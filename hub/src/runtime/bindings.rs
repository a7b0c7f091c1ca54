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

impl From<wit::Event> for sdk::Event {
    fn from(e: wit::Event) -> Self {
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

impl From<&sdk::Event> for wit::Event {
    fn from(e: &sdk::Event) -> Self {
        wit::Event {
            id: e.id.clone(),
            source: e.source.clone(),
            type_: e.type_.clone(),
            subject: e.subject.clone(),
            time: e.time.clone(),
            datacontenttype: e.datacontenttype.clone(),
            dataschema: e.dataschema.clone(),
            data: e.data.clone(),
            caseid: e.caseid.clone(),
            grid: e.grid.clone(),
            severity: e.severity.map(Into::into),
            category: e.category.clone(),
            lat: e.lat,
            lon: e.lon,
            extensions: e
                .extensions
                .iter()
                .map(|a| wit::Attribute {
                    name: a.name.clone(),
                    value: a.value.clone(),
                })
                .collect(),
        }
    }
}

impl From<&sdk::Inbound> for wit::Inbound {
    fn from(m: &sdk::Inbound) -> Self {
        wit::Inbound {
            method: m.method.clone(),
            query: m.query.clone(),
            headers: m
                .headers
                .iter()
                .map(|h| wit::Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            body: m.body.clone(),
        }
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
