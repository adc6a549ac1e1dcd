//! cloudha: an HA controller for pairs of network appliances in the cloud.
//!
//! Two nodes exchange authenticated UDP keepalives; when the standby stops hearing the active
//! node it asks its provider (a cloud API, or the on-prem L2 mode) to move the floating IPs and
//! routes to itself, and keeps exchanging keepalives while that long-running operation
//! completes.
//!
//! # Layout
//! - [`config`]: the TOML schema and validation (errors name the field and the fix); the
//!   keepalive and provider sections in their own files, the day-two and health sections with
//!   [`ops`] and [`health`]; shared leaves [`config::duration`] and [`config::checks`], which
//!   the section modules import.
//! - [`version`]: this build's version string.
//! - [`keepalive`]: the wire format ([`keepalive::packet`]) and the UDP tasks
//!   ([`keepalive::link`]).
//! - [`fsm`]: the pure state machine: `step(event, now) -> actions`, one file per rule family
//!   (liveness, damping, election, fencing, takeover, commands).
//! - [`daemon`]: the event loop that feeds the state machine and carries out its actions; its
//!   handlers, actions, status view and tasks in their own files.
//! - [`provider_worker`]: runs provider calls one at a time, cancellable.
//! - [`provider`]: builds the configured provider (crates under `providers/`).
//! - [`status`]: the snapshot served to `cloudha status` (owned here, not by the daemon).
//! - [`control`]: the local Unix-socket endpoint for status and operator commands.
//! - [`health`]: tracked checks (`[[track]]`) and the load-balancer health probe.
//! - [`ops`]: journal, metrics, alarms, notify hooks, systemd.
//! - [`secure_fs`]: private files and directories (key file, state, control socket).
//! - [`selftest`]: `cloudha selftest`, every failover prerequisite checked on a healthy pair.
//! - [`ticker`]: a periodic timer that collapses missed ticks.

pub mod config;
pub mod control;
pub mod daemon;
pub mod fsm;
pub mod health;
pub mod keepalive;
pub mod ops;
pub mod provider;
pub mod provider_worker;
pub mod secure_fs;
pub mod selftest;
pub mod status;
pub mod ticker;
pub mod version;
