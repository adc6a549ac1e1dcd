//! The software version this build reports (status, keepalives, alarms, the start log line).
//! A leaf, so the status, alarm and metric modules need not import the daemon for it.

/// This build's version (`Cargo.toml`), shown in status and carried in keepalives.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
