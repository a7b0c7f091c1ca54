//! The police mapping as an Extism plugin, for the adapter-call benchmark.
//!
//! `ingest`: the CAD JSON in, the events out as a CloudEvents JSON batch
//! (Extism passes bytes; the component passes typed records).
//! `add_one`: u32 in, u32 out, for the pure call cost.

use extism_pdk::*;
use govhub_sdk::{cloudevents, Adapter, Inbound};

#[plugin_fn]
pub fn ingest(body: Vec<u8>) -> FnResult<Vec<u8>> {
    let events = police_adapter::Police::ingest(Inbound::post("application/json", body))
        .map_err(|e| Error::msg(format!("{e:?}")))?;
    let mut out = Vec::with_capacity(512);
    out.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&cloudevents::to_vec(e));
    }
    out.push(b']');
    Ok(out)
}

#[plugin_fn]
pub fn add_one(x: u32) -> FnResult<u32> {
    Ok(x.wrapping_add(1))
}
