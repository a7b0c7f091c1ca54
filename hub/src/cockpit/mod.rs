//! The digital cockpit (数字驾驶舱): the command room's live console at
//! `GET /`.
//!
//! One page, served by the hub itself with everything it needs embedded in
//! the binary: no CDN, no map tiles, no build step, a strict
//! Content-Security-Policy (`default-src 'self'`, nothing inline). The
//! shell and the grid map are rendered in Rust ([`page`]: maud templates,
//! the map's polygons projected to SVG by [`map`]); plain ES modules draw
//! the live parts from `GET /v1/cockpit/snapshot` ([`snapshot`]) and follow
//! `GET /v1/stream`.
//!
//! It shows what a command room needs most: where the open cases are, how
//! long each has left, how far up the grid it has climbed, and who has
//! done what; with adapter health, dead letters and the street's figures.
//! It decides nothing: every action it offers (replaying a dead letter) is
//! an existing API call.

pub mod map;
mod page;
pub mod snapshot;

pub use page::router;
