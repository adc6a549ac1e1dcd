//! The TOML configuration: schema, defaults, and validation whose every error names the field
//! and says what to write instead.
//!
//! Parsing goes through `serde_path_to_error` so that type errors and unknown keys carry the full
//! path (`keepalive.path[1].bind`), not only a line number. Semantic checks live in
//! [`Config::validate`], which collects every problem at once so an operator fixes a file in one
//! pass.
//!
//! # Files
//! This file owns [`Config`] itself, loading and parsing, the node-wide sections (`[cluster]`,
//! `[node]`, `[peer]`, `[status]`), and the validation that spans sections. Each other section's
//! types live with their owner: `keepalive` (`[keepalive]` and its paths), `provider`
//! (`[provider]`, `[failover]`, `[[floating_ip]]`, `[[route]]`), [`crate::ops::config`] (the
//! day-two sections) and [`crate::health::config`] (`[[track]]`, `[health_probe]`); they share
//! the leaves [`duration`] and [`checks`]. Only this file's own section files import it back
//! (for `Config` and its limits); the ops and health sections import only the leaves.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloudha_provider_core::text::shorten;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub mod checks;
pub mod duration;
mod keepalive;
mod provider;

pub(crate) use checks::check_program;
pub use duration::ConfigDuration;
pub use keepalive::{KeepaliveConfig, PathConfig};
use provider::AZURE_TWO_STEP_DEADLINE;
pub use provider::{
    FailoverConfig, FloatingIpConfig, LocalProviderConfig, ProviderConfig, ProviderKind,
    RouteConfig,
};

/// Smallest key accepted: HMAC-SHA256 with less than 128 bits of secret is guessable.
pub const MIN_KEY_BYTES: usize = 16;
/// Longest node name; names travel in every keepalive.
pub const MAX_NAME_BYTES: usize = 32;
/// The most keepalive paths a node can have (the wire format carries the path id in a byte).
pub const MAX_PATHS: usize = 8;
/// Largest key file read: a key is one line; anything bigger is the wrong file.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;
/// Longest dead interval accepted: silence longer than this is no HA at all (and a typo such
/// as `"99999999h"` would make the standby never take over).
pub const MAX_DEAD_INTERVAL: Duration = Duration::from_secs(3600);
/// `sun_path` holds 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;
/// Longest parser message echoed: enough for "unknown field `x`, expected one of ..." but never
/// a whole multi-megabyte value.
const MAX_MESSAGE_CHARS: usize = 300;

/// The whole configuration of one node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Settings both nodes share.
    pub cluster: ClusterConfig,
    /// This node.
    pub node: NodeConfig,
    /// The other node of the pair.
    pub peer: PeerConfig,
    /// Keepalive timing and paths.
    pub keepalive: KeepaliveConfig,
    /// The local status endpoint.
    #[serde(default)]
    pub status: StatusConfig,
    /// Which provider moves the floating IPs.
    pub provider: ProviderConfig,
    /// Failover deadline and retry pacing.
    #[serde(default)]
    pub failover: FailoverConfig,
    /// The addresses that follow the active node.
    #[serde(default, rename = "floating_ip")]
    pub floating_ips: Vec<FloatingIpConfig>,
    /// Cloud route-table routes that must point at the active node.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: crate::ops::config::MetricsConfig,
    /// The event journal.
    #[serde(default)]
    pub journal: crate::ops::config::JournalConfig,
    /// Alarm thresholds.
    #[serde(default)]
    pub alarms: crate::ops::config::AlarmsConfig,
    /// Commands run on role changes.
    #[serde(default)]
    pub hooks: crate::ops::config::HooksConfig,
    /// Scheduled platform maintenance (Azure Scheduled Events, AWS instance actions).
    #[serde(default)]
    pub maintenance_events: crate::ops::config::MaintenanceEventsConfig,
    /// Checks of the appliance itself (processes, interfaces).
    #[serde(default, rename = "track")]
    pub tracks: Vec<crate::health::config::TrackConfig>,
    /// The load-balancer health probe that follows the HA role.
    #[serde(default)]
    pub health_probe: Option<crate::health::config::HealthProbeConfig>,
}

/// `[cluster]`: identical on both nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Identifies the pair on the wire; packets with another id are dropped and counted.
    pub id: u32,
    /// File holding the shared keepalive secret (at least 16 bytes).
    pub key_file: PathBuf,
}

/// `[node]`: this node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name (letters, digits, `.`, `_`, `-`; up to 32 bytes).
    pub name: String,
    /// Election priority, 1..=255; higher wins.
    pub priority: u8,
    /// Whether a higher-priority node takes the active role back from a healthy peer.
    #[serde(default = "default_true")]
    pub preempt: bool,
    /// How long the peer must have been healthy before a preempting takeover.
    #[serde(default = "default_hold_down")]
    pub preempt_hold_down: ConfigDuration,
    /// Where the node keeps its incarnation counter across restarts.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

/// `[peer]`: the other node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's `node.name`; keepalives from any other sender are dropped and counted.
    pub name: String,
}

/// `[status]`: where `cloudha status` and the operator commands reach the daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// Unix socket path (local only: never reachable from the network).
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            socket: default_socket(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_hold_down() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cloudha")
}
fn default_socket() -> PathBuf {
    PathBuf::from("/run/cloudha/cloudha.sock")
}
/// A configuration that could not be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("config {path}: {field}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Dotted path of the offending field (`.` for the whole file).
        field: String,
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// The file parsed but some values are not usable.
    #[error("config {path}: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// One semantic problem: the field and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field path, e.g. `keepalive.dead_interval`.
    pub field: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl Config {
    /// The journal file: `journal.path`, or `journal.jsonl` under `node.state_dir`.
    pub fn journal_path(&self) -> PathBuf {
        self.journal.path_or_default(&self.node.state_dir)
    }

    /// Read, parse and validate a config file (the key file is checked too).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|(field, message)| ConfigError::Parse {
            path: path.to_path_buf(),
            field,
            message,
        })?;
        let mut problems = config.validate();
        problems.extend(config.check_files());
        if let Err(problem) = config.read_key() {
            problems.push(problem);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// Parse TOML text; on error returns the field path and the parser's message.
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| (".".to_string(), render_toml_error(&e, text)))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            // A key written as `""` gives an empty path: name the whole file rather than nothing
            // (the message names the key and the fields expected there).
            let field = match e.path().to_string() {
                path if path.is_empty() => ".".to_string(),
                path => shorten(&path, 120),
            };
            (field, render_toml_error(&e.into_inner(), text))
        })
    }

    /// What is usable but risky: `config check` and the daemon's start print these (never
    /// refused, exit code 0).
    pub fn warnings(&self) -> Vec<Problem> {
        let mut warnings = Vec::new();
        if self.provider.kind == ProviderKind::Azure
            && self.failover.deadline.0 < AZURE_TWO_STEP_DEADLINE
        {
            warnings.push(Problem {
                field: "failover.deadline".to_string(),
                message: format!(
                    "{} is shorter than an Azure two-step move (two NIC updates of up to ~120 s each); \
                     a first attempt may fail at the deadline and raise takeover_slow: use at least {}",
                    self.failover.deadline,
                    ConfigDuration(AZURE_TWO_STEP_DEADLINE)
                ),
            });
        }
        if self.provider.kind == ProviderKind::None && self.health_probe.is_none() {
            warnings.push(Problem {
                field: "health_probe".into(),
                message: "provider.kind = \"none\" moves nothing and there is no [health_probe]: only the hooks follow the role. Add [health_probe] listen = \"<LAN address>:<port>\" for the load balancer's probe".into(),
            });
        }
        if self.metrics.enabled && !self.metrics.listen.ip().is_loopback() {
            warnings.push(Problem {
                field: "metrics.listen".into(),
                message: format!(
                    "{} serves /metrics beyond this host: whoever reaches the port reads the node's role, peer and alarms; prefer 127.0.0.1:9465 (scrape through a tunnel) or firewall the port",
                    self.metrics.listen
                ),
            });
        }
        warnings
    }

    /// Every semantic problem in the configuration (empty when it is usable).
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(Problem {
                field: field.to_string(),
                message,
            })
        };

        check_name("node.name", &self.node.name, &mut problem);
        check_name("peer.name", &self.peer.name, &mut problem);
        crate::ops::config::validate(
            &self.journal,
            &self.alarms,
            &self.hooks,
            &self.maintenance_events,
            &mut problem,
        );
        crate::health::config::validate(&self.tracks, self.health_probe.as_ref(), &mut problem);
        if self.node.name == self.peer.name {
            problem(
                "peer.name",
                format!(
                    "is the same as node.name ({:?}); each node needs its own name",
                    self.node.name
                ),
            );
        }
        if self.node.priority == 0 {
            problem(
                "node.priority",
                "must be 1..=255 (higher wins the election)".into(),
            );
        }
        if self.node.preempt && self.node.preempt_hold_down.0 < Duration::from_secs(1) {
            problem(
                "node.preempt_hold_down",
                format!(
                    "{} would take the role back the moment the peer is heard, so a flapping node moves the addresses on every blip; use at least \"1s\" (default \"10s\"), or node.preempt = false",
                    self.node.preempt_hold_down
                ),
            );
        }
        absolute_path(
            "cluster.key_file",
            &self.cluster.key_file,
            "/etc/cloudha/key",
            &mut problem,
        );
        absolute_path(
            "node.state_dir",
            &self.node.state_dir,
            "/var/lib/cloudha",
            &mut problem,
        );
        self.validate_socket(&mut problem);

        let interval = self.keepalive.interval.0;
        let dead = self.keepalive.dead_interval.0;
        if interval < Duration::from_millis(10) || interval > Duration::from_secs(10) {
            problem(
                "keepalive.interval",
                format!("{} is out of range; use 10ms..10s", self.keepalive.interval),
            );
        }
        if dead > MAX_DEAD_INTERVAL {
            problem(
                "keepalive.dead_interval",
                format!(
                    "{} is longer than {}: the standby would wait that long before taking over; use a few seconds (default \"1s\")",
                    self.keepalive.dead_interval,
                    ConfigDuration(MAX_DEAD_INTERVAL)
                ),
            );
        } else if dead < interval.saturating_mul(3) {
            problem(
                "keepalive.dead_interval",
                format!(
                    "{} is shorter than 3 × keepalive.interval ({}); one lost packet would fail over. Raise it to at least {}",
                    self.keepalive.dead_interval,
                    self.keepalive.interval,
                    ConfigDuration(interval.saturating_mul(3))
                ),
            );
        }
        self.validate_paths(&mut problem);

        if self.floating_ips.is_empty() && self.provider.kind != ProviderKind::None {
            problem(
                "floating_ip",
                "no [[floating_ip]] entries; add at least one with address = \"10.0.0.100\"".into(),
            );
        }
        let mut seen_ips = BTreeSet::new();
        for (i, ip) in self.floating_ips.iter().enumerate() {
            if !seen_ips.insert(ip.address) {
                problem(
                    &format!("floating_ip[{i}].address"),
                    format!("{} is listed twice; list each address once", ip.address),
                );
            }
            if ip.prefix_len == 0 || ip.prefix_len > 32 {
                problem(
                    &format!("floating_ip[{i}].prefix_len"),
                    format!("{} is not an IPv4 prefix length; use 1..=32", ip.prefix_len),
                );
            }
            if let Some(why) = self.unusable_floating_ip(ip) {
                problem(
                    &format!("floating_ip[{i}].address"),
                    format!("{} {why}; use a spare address of the subnet that no node has as its own (e.g. the cluster's VIP)", ip.address),
                );
            }
        }

        match self.provider.kind {
            ProviderKind::Azure => self.validate_azure(&mut problem),
            ProviderKind::Aws => self.validate_aws(&mut problem),
            ProviderKind::None => self.validate_none(&mut problem),
            ProviderKind::Local => {
                match &self.provider.local {
                    None => problem(
                        "provider.local",
                        "kind = \"local\" needs a [provider.local] table with interface = \"<name>\"".into(),
                    ),
                    Some(local) => {
                        if !is_interface_name(&local.interface) {
                            problem(
                                "provider.local.interface",
                                format!(
                                    "{} is not a Linux interface name; write the name `ip link` shows (1 to 15 letters, digits, '-', '_', '.' or '@', not \".\" or \"..\")",
                                    crate::secure_fs::excerpt(&local.interface)
                                ),
                            );
                        }
                    }
                }
                if !self.routes.is_empty() {
                    problem(
                        "route",
                        "the local provider does not manage route tables; remove the [[route]] entries or use a cloud provider".into(),
                    );
                }
            }
        }

        if self.failover.retry_initial > self.failover.retry_max {
            problem(
                "failover.retry_initial",
                format!(
                    "{} is longer than failover.retry_max ({}); make it shorter",
                    self.failover.retry_initial, self.failover.retry_max
                ),
            );
        }
        if self.failover.deadline.0 < Duration::from_secs(1) {
            problem(
                "failover.deadline",
                format!(
                    "{} is too short for any cloud call; use at least 1s (Azure needs 300s)",
                    self.failover.deadline
                ),
            );
        }
        problems
    }

    /// `status.socket`: an absolute path that fits a Unix socket address and names a file.
    fn validate_socket(&self, problem: &mut impl FnMut(&str, String)) {
        let socket = &self.status.socket;
        if !absolute_path(
            "status.socket",
            socket,
            "/run/cloudha/cloudha.sock",
            problem,
        ) {
            return;
        }
        let bytes = socket.as_os_str().len();
        if bytes > MAX_SOCKET_PATH_BYTES {
            problem(
                "status.socket",
                format!(
                    "{} is {bytes} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH_BYTES}: use a shorter one, e.g. /run/cloudha/cloudha.sock",
                    crate::secure_fs::path_excerpt(socket)
                ),
            );
        }
        let named = socket
            .file_name()
            .is_some_and(|_| !socket.as_os_str().to_string_lossy().ends_with('/'));
        if !named {
            problem(
                "status.socket",
                format!(
                    "{} names a directory, not a socket file; write e.g. /run/cloudha/cloudha.sock",
                    crate::secure_fs::path_excerpt(socket)
                ),
            );
        }
    }

    /// The checks that look at this machine's file system (run by `config check` and at start,
    /// with the key file's in [`Config::read_key`]): the control socket's path and directory,
    /// the state directory, the journal, the hook programs. Each names the field and the fix.
    pub fn check_files(&self) -> Vec<Problem> {
        use std::os::unix::fs::FileTypeExt;
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(Problem {
                field: field.to_string(),
                message,
            })
        };
        let socket = &self.status.socket;
        if socket.is_absolute() {
            if let Ok(meta) = std::fs::symlink_metadata(socket) {
                if !meta.file_type().is_socket() {
                    problem(
                        "status.socket",
                        format!(
                            "{} exists and is not a socket (the daemon deletes only a stale socket there, never another file); remove it or point status.socket at another path, e.g. /run/cloudha/cloudha.sock",
                            crate::secure_fs::shown(socket)
                        ),
                    );
                }
            }
            if let Some(dir) = socket.parent().filter(|d| d.exists()) {
                if let Err(e) = crate::secure_fs::check_private_dir(dir) {
                    problem("status.socket", e);
                }
            }
        }
        let state_dir = &self.node.state_dir;
        if state_dir.is_absolute() && state_dir.exists() {
            if let Err(e) = crate::secure_fs::check_private_dir(state_dir) {
                problem("node.state_dir", e);
            }
        }
        let journal = self.journal_path();
        if journal.is_absolute() {
            if let Some(dir) = journal.parent().filter(|d| d.exists() && *d != state_dir) {
                if let Err(e) = crate::secure_fs::check_private_dir(dir) {
                    problem("journal.path", e);
                }
            }
            if let Ok(meta) = std::fs::symlink_metadata(&journal) {
                if !meta.file_type().is_file() {
                    problem(
                        "journal.path",
                        format!(
                            "{} exists and is not a regular file (a symlink is never followed); remove it or point journal.path elsewhere",
                            crate::secure_fs::shown(&journal)
                        ),
                    );
                }
            }
        }
        let hooks = &self.hooks;
        for (field, command) in [
            ("hooks.on_active", &hooks.on_active),
            ("hooks.on_standby", &hooks.on_standby),
            ("hooks.on_fault", &hooks.on_fault),
            ("hooks.on_maintenance", &hooks.on_maintenance),
        ] {
            let Some(program) = command.first().filter(|p| p.starts_with('/')) else {
                continue;
            };
            check_program(field, program, &mut problem);
        }
        crate::health::config::check_files(&self.tracks, &mut problem);
        problems
    }

    /// Read the shared key; the file's trimmed content is the secret. The file must be a regular
    /// file of root or the daemon's user, mode 0600 or 0400, at most [`MAX_KEY_FILE_BYTES`]
    /// (see [`crate::secure_fs::read_private_file`]).
    pub fn read_key(&self) -> Result<Vec<u8>, Problem> {
        let field = "cluster.key_file".to_string();
        let bytes = crate::secure_fs::read_private_file(&self.cluster.key_file, MAX_KEY_FILE_BYTES)
            .map_err(|message| Problem {
                field: field.clone(),
                message,
            })?;
        let key = bytes.trim_ascii().to_vec();
        if key.len() < MIN_KEY_BYTES {
            return Err(Problem {
                field,
                message: format!(
                    "{} holds {} bytes; the key needs at least {MIN_KEY_BYTES} (use 32 random bytes, base64)",
                    self.cluster.key_file.display(),
                    key.len()
                ),
            });
        }
        Ok(key)
    }

    /// Digest of every setting both nodes must agree on; a mismatch makes HA "Not ready".
    ///
    /// Node-specific settings (name, priority, addresses, socket) are left out on purpose.
    pub fn ha_digest(&self) -> [u8; 16] {
        let shared = serde_json::json!({
            "cluster_id": self.cluster.id,
            "interval_ms": self.keepalive.interval.0.as_millis() as u64,
            "dead_interval_ms": self.keepalive.dead_interval.0.as_millis() as u64,
            "paths": self.keepalive.paths.len(),
            "provider": self.provider.kind,
            "floating_ips": self.floating_ips(),
            "routes": self.route_specs(),
        });
        let digest = Sha256::digest(shared.to_string().as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }
}

/// Refuse an empty or relative path (it would depend on the daemon's working directory);
/// whether it is absolute.
fn absolute_path(
    field: &str,
    path: &Path,
    example: &str,
    problem: &mut impl FnMut(&str, String),
) -> bool {
    if path.as_os_str().is_empty() {
        problem(
            field,
            format!("is empty; write an absolute path, e.g. {example}"),
        );
        return false;
    }
    if !path.is_absolute() {
        problem(
            field,
            format!(
                "{} is a relative path (it would depend on the daemon's working directory); write an absolute path, e.g. {example}",
                crate::secure_fs::path_excerpt(path)
            ),
        );
        return false;
    }
    true
}

/// Whether Linux accepts `name` as an interface name (`dev_valid_name`: 1 to 15 bytes, not `.`
/// or `..`, no `/`, `:` or white space), restricted further to the printable characters
/// interface names use, so the name is safe in a path under /sys and in messages.
pub fn is_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// A parser error as its message (cut short) and position, without the source line the
/// `toml` crate quotes: the file may not be a config at all (a password file passed by
/// mistake), and a value may be megabytes long.
fn render_toml_error(error: &toml::de::Error, text: &str) -> String {
    let message = shorten(error.message().trim_end(), MAX_MESSAGE_CHARS);
    match error.span().and_then(|span| text.get(..span.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{message} (line {line}, column {column})")
        }
        None => message,
    }
}

fn check_name(field: &str, name: &str, problem: &mut impl FnMut(&str, String)) {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !valid_chars {
        problem(
            field,
            format!(
                "{} is not a node name; use 1 to {MAX_NAME_BYTES} letters, digits, '.', '_' or '-'",
                crate::secure_fs::excerpt(name)
            ),
        );
    }
}

#[cfg(test)]
pub(crate) mod tests;
