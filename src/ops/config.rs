//! The configuration of the day-two features: `[metrics]`, `[journal]`, `[alarms]`, `[hooks]`
//! and `[maintenance_events]`. None of them feeds the HA config digest: each node may differ.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::duration::ConfigDuration;

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address and TCP port; loopback by default so nothing is exposed by accident.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_metrics_listen(),
        }
    }
}

/// `[journal]`: the durable event log (JSON lines).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// The file; default `<node.state_dir>/journal.jsonl`.
    pub path: Option<PathBuf>,
    /// The file is rotated (to `<path>.1`, replacing the previous one) past this size.
    #[serde(default = "default_journal_max_bytes")]
    pub max_bytes: u64,
}

impl JournalConfig {
    /// The journal file: `path`, or `journal.jsonl` under `state_dir` (`node.state_dir`).
    pub fn path_or_default(&self, state_dir: &Path) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| state_dir.join("journal.jsonl"))
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_bytes: default_journal_max_bytes(),
        }
    }
}

/// `[alarms]`: thresholds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlarmsConfig {
    /// Keepalive loss on a path above this share (percent) raises `keepalive_loss`.
    #[serde(default = "default_max_loss_percent")]
    pub max_loss_percent: f64,
    /// Keepalive round trip on a path above this raises `keepalive_rtt`.
    #[serde(default = "default_max_rtt")]
    pub max_rtt: ConfigDuration,
    /// Wall-clock difference with the peer above this raises `clock_skew`.
    #[serde(default = "default_max_clock_skew")]
    pub max_clock_skew: ConfigDuration,
    /// A takeover still running after this raises `takeover_slow` (default: the failover
    /// deadline).
    pub takeover_pending: Option<ConfigDuration>,
    /// `bad_packets` clears after this long without a new bad packet.
    #[serde(default = "default_bad_packet_quiet")]
    pub bad_packet_quiet: ConfigDuration,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        Self {
            max_loss_percent: default_max_loss_percent(),
            max_rtt: default_max_rtt(),
            max_clock_skew: default_max_clock_skew(),
            takeover_pending: None,
            bad_packet_quiet: default_bad_packet_quiet(),
        }
    }
}

/// `[hooks]`: commands run on role changes, one at a time, in order. Each is a program and its
/// arguments (no shell); the state and reason come in `CLOUDHA_*` environment variables.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Run when this node becomes active.
    #[serde(default)]
    pub on_active: Vec<String>,
    /// Run when this node becomes standby.
    #[serde(default)]
    pub on_standby: Vec<String>,
    /// Run when this node enters fault.
    #[serde(default)]
    pub on_fault: Vec<String>,
    /// Run when this node enters maintenance.
    #[serde(default)]
    pub on_maintenance: Vec<String>,
    /// A hook still running after this is killed (default 10s).
    pub timeout: Option<ConfigDuration>,
}

impl HooksConfig {
    /// The command for a new role, if one is configured.
    pub fn for_role(&self, role: &str) -> Option<&[String]> {
        let command = match role {
            "active" => &self.on_active,
            "standby" => &self.on_standby,
            "fault" => &self.on_fault,
            "maintenance" => &self.on_maintenance,
            _ => return None,
        };
        (!command.is_empty()).then_some(command.as_slice())
    }

    /// The per-hook timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(Duration::from_secs(10), |t| t.0)
    }
}

/// `[maintenance_events]`: hand over before the platform's scheduled maintenance.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceEventsConfig {
    /// Poll the metadata service for scheduled events (cloud providers only).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often (Azure announces events at least 5 minutes ahead, spot notices 2 minutes).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: ConfigDuration,
}

impl Default for MaintenanceEventsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: default_poll_interval(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9465))
}
fn default_journal_max_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_max_loss_percent() -> f64 {
    5.0
}
fn default_max_rtt() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(100))
}
fn default_max_clock_skew() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(2))
}
fn default_bad_packet_quiet() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_poll_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

/// Problems with the day-two sections, each naming its field and the fix.
pub fn validate(
    journal: &JournalConfig,
    alarms: &AlarmsConfig,
    hooks: &HooksConfig,
    maintenance_events: &MaintenanceEventsConfig,
    problem: &mut impl FnMut(&str, String),
) {
    if journal.max_bytes < 64 * 1024 {
        problem(
            "journal.max_bytes",
            format!(
                "{} bytes cannot hold a failover's events; use at least 65536",
                journal.max_bytes
            ),
        );
    }
    if let Some(path) = &journal.path {
        if !path.is_absolute() {
            problem(
                "journal.path",
                format!(
                    "{} is empty or a relative path (it would depend on the daemon's working directory); write an absolute path or leave it out (default <node.state_dir>/journal.jsonl)",
                    crate::secure_fs::path_excerpt(path)
                ),
            );
        }
    }
    if !(0.0..=100.0).contains(&alarms.max_loss_percent) {
        problem(
            "alarms.max_loss_percent",
            format!(
                "{} is not a percentage; use a value from 0 to 100 (e.g. 5)",
                alarms.max_loss_percent
            ),
        );
    }
    for (field, command) in [
        ("hooks.on_active", &hooks.on_active),
        ("hooks.on_standby", &hooks.on_standby),
        ("hooks.on_fault", &hooks.on_fault),
        ("hooks.on_maintenance", &hooks.on_maintenance),
    ] {
        let Some(program) = command.first() else {
            continue;
        };
        if !program.starts_with('/') {
            problem(
                field,
                format!("{} is not an absolute path; write the program's full path, e.g. [\"/usr/local/bin/notify\", \"arg\"]", crate::secure_fs::excerpt(program)),
            );
        }
    }
    if hooks.timeout().is_zero() {
        problem("hooks.timeout", "must be more than 0; e.g. \"10s\"".into());
    }
    if maintenance_events.poll_interval.0 < Duration::from_secs(1) {
        problem(
            "maintenance_events.poll_interval",
            "polling the metadata service more than once a second gains nothing; use e.g. \"5s\""
                .into(),
        );
    }
}
