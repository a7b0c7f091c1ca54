//! Outbound HTTP: how an adapter's requests reach its department system.
//!
//! Every request an adapter makes through `wasi:http/outgoing-handler`
//! passes the [`gate`] (the manifest's `outbound_hosts`, checked before any
//! connect), then goes out on its adapter's [`client`]: a hyper-util pooled
//! client keeping keep-alive connections per department, at most the
//! adapter's `concurrency` of them, with connect, first-byte and
//! between-bytes timeouts inside the call deadline. HTTPS uses one rustls
//! configuration built once from the system's roots and the deployment's
//! own CAs ([`tls`]), with the adapter's client certificate where its
//! manifest names one. A failure is reported to the adapter as a
//! `wasi:http` error code and, in words naming the host and the cause, to
//! the hub, which adds it to the error the adapter returns.
//!
//! It refuses what an integration hub should not do: reuse a connection
//! across adapters (one adapter's client certificate would serve another),
//! open more connections to a department than the adapter may run calls,
//! or follow a request anywhere the manifest does not allow.

pub mod client;
pub mod connect;
pub mod gate;
pub mod tls;

pub use client::{ClientSettings, Clients, HttpClient};
pub use gate::{Failure, Gate};
pub use tls::{Trust, TrustConfig};
