//! govhub: the integration hub for street-level social governance.
//!
//! Department systems (police, city management, traffic, fire, the "four
//! platforms" case system, video patrol) connect through sandboxed
//! WebAssembly adapters; the hub stores each normalized governance event,
//! routes it to every department that must act, and delivers it. It
//! deliberately runs no department logic of its own: everything
//! department-specific lives in an adapter, behind the one WIT contract.
//!
//! The modules follow the flow: [`ingress`] → [`router`] → [`journal`] →
//! [`delivery`], with [`cases`] following each case to its close, [`runtime`]
//! (the wasmtime host) underneath and [`config`] and [`cli`] on top. What
//! people watch comes out of the journal's change feed: [`stream`] (the
//! live SSE stream) and [`cockpit`] (the command room's console). In front
//! of every route, [`auth`] decides who may call it; [`governance`]
//! decides what of each event's personal information each recipient and
//! reader sees.
#![deny(missing_docs)]

pub mod admin;
pub mod auth;
pub mod cases;
pub mod cli;
pub mod client;
pub mod cockpit;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod governance;
pub mod hub;
pub mod ingress;
pub mod journal;
pub mod metrics;
pub mod router;
pub mod runtime;
pub mod stream;
pub mod telemetry;
