//! `GET /v1/stream`: the hub's changes, live, as server-sent events.
//!
//! Every stored event, case change, adapter change, dead letter and clock
//! step is an item of the journal's change feed, with a cursor that only
//! grows; each SSE `id:` is that cursor. A subscriber that comes back with
//! `Last-Event-ID` (browsers send it on their own) or `?after=CURSOR` gets
//! exactly the items after it, from the journal, then the live ones, with
//! no gap and no duplicate. A cursor older than the journal keeps (or
//! newer than it knows) gets `event: resync`: reload the snapshot
//! (`GET /v1/cockpit/snapshot`) and follow on from its cursor.
//!
//! It refuses to let a subscriber cost the hub more than a bounded amount:
//! live items sit in one shared ring of `stream.buffer`; a subscriber that
//! falls out of it reads the rest from the journal; one that does not
//! read at all holds a dozen items and its socket. Streams end when the
//! hub shuts down, so they never hold up the SIGTERM grace.

mod filter;
mod sse;

pub use filter::Filter;
pub use sse::{router, Streams};
