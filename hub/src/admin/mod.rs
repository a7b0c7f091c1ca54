//! Operating the hub: adapter versions (hot load, upgrade, rollback,
//! unload, the watched folder, quarantine), signed modules, the audit
//! chain, and the admin API over them.

pub mod api;
pub mod audit;
pub mod cluster;
pub mod signing;
pub mod versions;
