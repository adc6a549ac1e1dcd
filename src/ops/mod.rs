//! Running cloudha in production: the journal, metrics, alarms, notify hooks and systemd.
//!
//! - [`config`]: the `[metrics]`, `[journal]`, `[alarms]`, `[hooks]`, `[maintenance_events]`
//!   sections.
//! - [`events`]: `cloudha events` (the journal for people, followed).
//! - [`journal`]: the durable JSON-lines event journal (and what a restart reads back from it).
//! - [`metrics`]: Prometheus metrics and the `/metrics` listener.
//! - [`alarms`]: conditions raised and cleared from what the daemon observes.
//! - [`hooks`]: the operator's commands run on role changes, in order, with a timeout.
//! - [`systemd`]: READY, STATUS, WATCHDOG notifications.
//! - [`timeline`]: `cloudha events --failover` (one failover drawn on a time axis).

pub mod alarms;
pub mod config;
pub mod events;
pub mod hooks;
pub mod journal;
pub mod metrics;
pub mod systemd;
pub mod timeline;
