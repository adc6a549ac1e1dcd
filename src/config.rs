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
//! the leaves [`duration`] and [`checks`], and none imports this file back except for `Config`.

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
pub(crate) mod tests {
    /// Found by the `config_parse` fuzz target: an empty key gave an error naming no field.
    #[test]
    fn empty_key_error_still_names_a_field() {
        let (field, message) = Config::parse(" \"\"= 2").expect_err("an empty key is unknown");
        assert_eq!(field, ".");
        assert!(message.contains("unknown field"), "{message}");
    }

    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
[cluster]
id = 7
key_file = "/nonexistent/key"

[node]
name = "fw-a"
priority = 200

[peer]
name = "fw-b"

[keepalive]
interval = "100ms"
dead_interval = "500ms"

[[keepalive.path]]
name = "lan"
bind = "10.0.0.1:5405"
peer = "10.0.0.2:5405"

[provider]
kind = "local"

[provider.local]
interface = "lan0"

[[floating_ip]]
address = "10.0.0.100"
prefix_len = 24
"#;

    fn parse_err(text: &str) -> (String, String) {
        match Config::parse(text) {
            Ok(_) => panic!("expected a parse error"),
            Err(e) => e,
        }
    }

    #[test]
    fn example_parses_with_defaults() {
        let config = Config::parse(EXAMPLE).expect("example parses");
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        assert!(config.node.preempt);
        assert_eq!(config.node.preempt_hold_down.0, Duration::from_secs(10));
        assert_eq!(
            config.status.socket,
            PathBuf::from("/run/cloudha/cloudha.sock")
        );
        assert_eq!(config.floating_ips()[0].prefix_len, 24);
    }

    #[test]
    fn unknown_key_names_its_path() {
        let text = EXAMPLE.replace("dead_interval = \"500ms\"", "dead_intervall = \"500ms\"");
        let (field, message) = parse_err(&text);
        assert_eq!(field, "keepalive.dead_intervall");
        assert!(
            message.contains("unknown field `dead_intervall`"),
            "{message}"
        );
        assert!(
            message.contains("dead_interval"),
            "lists the expected keys: {message}"
        );
    }

    #[test]
    fn bad_value_names_field_and_fix() {
        let text = EXAMPLE.replace("\"100ms\"", "\"100 parsecs\"");
        let (field, message) = parse_err(&text);
        assert_eq!(field, "keepalive.interval");
        assert!(message.contains("200ms"), "{message}");

        let text = EXAMPLE.replace("bind = \"10.0.0.1:5405\"", "bind = \"10.0.0.1\"");
        let (field, _) = parse_err(&text);
        assert_eq!(field, "keepalive.path[0].bind");
    }

    #[test]
    fn missing_section_and_bad_toml_are_errors_not_panics() {
        let (field, message) = parse_err("[cluster]\nid = 1\n");
        assert_eq!(field, "cluster");
        assert!(message.contains("missing field `key_file`"), "{message}");
        let (_, message) = parse_err("[cluster\nid = ");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn validate_collects_every_problem() {
        let text = EXAMPLE
            .replace("dead_interval = \"500ms\"", "dead_interval = \"200ms\"")
            .replace("name = \"fw-b\"", "name = \"fw-a\"")
            .replace(
                "interface = \"lan0\"",
                "interface = \"a-very-long-interface-name\"",
            );
        let config = Config::parse(&text).expect("parses");
        let fields: Vec<String> = config.validate().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "peer.name",
                "keepalive.dead_interval",
                "provider.local.interface"
            ]
        );
    }

    #[test]
    fn local_provider_rejects_routes() {
        let text = format!(
            "{EXAMPLE}\n[[route]]\ntable = \"rt\"\nname = \"default\"\nprefix = \"0.0.0.0/0\"\n"
        );
        let config = Config::parse(&text).expect("parses");
        let problems = config.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "route");
    }

    #[test]
    fn key_file_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_path = dir.path().join("key");
        std::fs::write(&key_path, "short\n").expect("write key");
        std::fs::set_permissions(
            &key_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod");
        let text = EXAMPLE.replace("/nonexistent/key", &key_path.display().to_string());
        let config = Config::parse(&text).expect("parses");
        let problem = config.read_key().expect_err("too short");
        assert_eq!(problem.field, "cluster.key_file");
        std::fs::write(&key_path, "0123456789abcdef0123456789abcdef\n").expect("write key");
        assert_eq!(config.read_key().expect("long enough").len(), 32);
    }

    /// The fields `validate` names for `EXAMPLE` with `edits` applied.
    fn fields_after(edits: &[(&str, &str)]) -> Vec<String> {
        let mut text = EXAMPLE.to_string();
        for (from, to) in edits {
            assert!(text.contains(from), "EXAMPLE has no {from:?}");
            text = text.replace(from, to);
        }
        let config = Config::parse(&text).expect("parses");
        config.validate().into_iter().map(|p| p.field).collect()
    }

    fn problems_after(edits: &[(&str, &str)]) -> Vec<Problem> {
        let mut text = EXAMPLE.to_string();
        for (from, to) in edits {
            text = text.replace(from, to);
        }
        Config::parse(&text).expect("parses").validate()
    }

    /// `EXAMPLE` with `kind = "none"`: no provider table, no floating IP.
    fn none_example() -> String {
        let provider = "[provider]\nkind = \"local\"\n\n[provider.local]\ninterface = \"lan0\"\n\n[[floating_ip]]\naddress = \"10.0.0.100\"\nprefix_len = 24\n";
        assert!(EXAMPLE.contains(provider));
        EXAMPLE.replace(
            provider,
            "[provider]\nkind = \"none\"\n\n[health_probe]\nlisten = \"10.0.0.1:8080\"\n",
        )
    }

    #[test]
    fn provider_none_needs_no_floating_ip_and_refuses_cloud_resources() {
        let config = Config::parse(&none_example()).expect("parses");
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        assert_eq!(config.provider.kind.to_string(), "none");

        let with_cloud = none_example()
            + "\n[provider.local]\ninterface = \"lan0\"\n\n[[floating_ip]]\naddress = \"10.0.0.100\"\n\n[[route]]\ntable = \"rt-1\"\nname = \"default\"\nprefix = \"0.0.0.0/0\"\n";
        let problems = match Config::parse(&with_cloud) {
            Ok(config) => config.validate(),
            Err(e) => panic!("parses: {e:?}"),
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for field in ["provider.local", "floating_ip", "route"] {
            assert!(fields.contains(&field), "{field} in {problems:?}");
        }
        assert!(problems
            .iter()
            .any(|p| p.field == "floating_ip" && p.message.contains("moves no address")));

        let no_probe = none_example().replace("[health_probe]\nlisten = \"10.0.0.1:8080\"\n", "");
        let config = Config::parse(&no_probe).expect("parses");
        assert!(config.validate().is_empty());
        let warnings = config.warnings();
        assert!(
            warnings.iter().any(|w| w.field == "health_probe"),
            "{warnings:?}"
        );
    }

    #[test]
    fn tracks_and_the_probe_are_validated_with_the_rest() {
        let text = format!(
            "{EXAMPLE}\n[[track]]\nname = \"fw\"\ncommand = [\"fwcheck\"]\n\n[health_probe]\nlisten = \"10.0.0.1:0\"\n"
        );
        let fields: Vec<String> = Config::parse(&text)
            .expect("parses")
            .validate()
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert!(
            fields.contains(&"track[0].command".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"health_probe.listen".to_string()),
            "{fields:?}"
        );
        let (field, _) = parse_err(&format!("{EXAMPLE}\n[[track]]\nname = \"fw\"\nfalls = 3\n"));
        assert_eq!(field, "track[0].falls");
    }

    #[test]
    fn floating_ip_that_is_no_spare_address_is_refused() {
        let addr = "address = \"10.0.0.100\"";
        for (address, why) in [
            (
                "10.0.0.1",
                "this node's own address (keepalive.path[0].bind)",
            ),
            (
                "10.0.0.2",
                "the peer's own address (keepalive.path[0].peer)",
            ),
            ("0.0.0.0", "0.0.0.0"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.18", "multicast"),
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("10.0.0.0", "network address of its /24"),
            ("10.0.0.255", "broadcast address of its /24"),
        ] {
            let problems = problems_after(&[(addr, &format!("address = \"{address}\""))]);
            assert_eq!(problems.len(), 1, "{address}: {problems:?}");
            assert_eq!(problems[0].field, "floating_ip[0].address", "{address}");
            assert!(
                problems[0].message.contains(why),
                "{address}: {}",
                problems[0].message
            );
            assert!(
                problems[0].message.contains("spare address"),
                "names the fix"
            );
        }
        // A /32 (the cloud default) has no network or broadcast address of its own.
        assert!(fields_after(&[
            (addr, "address = \"10.0.0.255\""),
            ("prefix_len = 24", "prefix_len = 32")
        ])
        .is_empty());
    }

    #[test]
    fn keepalive_timing_and_paths_that_cannot_work_are_refused() {
        assert_eq!(
            fields_after(&[("dead_interval = \"500ms\"", "dead_interval = \"99999999h\"")]),
            ["keepalive.dead_interval"]
        );
        assert!(
            fields_after(&[("dead_interval = \"500ms\"", "dead_interval = \"1h\"")]).is_empty()
        );
        assert_eq!(
            fields_after(&[("bind = \"10.0.0.1:5405\"", "bind = \"10.0.0.1:0\"")]),
            ["keepalive.path[0].bind"]
        );
        for peer in ["255.255.255.255", "0.0.0.0", "239.1.2.3"] {
            assert_eq!(
                fields_after(&[(
                    "peer = \"10.0.0.2:5405\"",
                    &format!("peer = \"{peer}:5405\"")
                )]),
                ["keepalive.path[0].peer"],
                "{peer}"
            );
        }
        let second = "[[keepalive.path]]\nname = \"mgmt\"\nbind = \"10.1.0.1:5405\"\npeer = \"10.0.0.2:5406\"\n\n[provider]";
        let problems = problems_after(&[("[provider]", second)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "keepalive.path[1].peer");
        assert!(
            problems[0].message.contains("peer of another path"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn preempt_hold_down_of_zero_is_refused_unless_preemption_is_off() {
        let zero = (
            "priority = 200",
            "priority = 200\npreempt_hold_down = \"0s\"",
        );
        assert_eq!(fields_after(&[zero]), ["node.preempt_hold_down"]);
        let off = (
            "priority = 200",
            "priority = 200\npreempt = false\npreempt_hold_down = \"0s\"",
        );
        assert!(fields_after(&[off]).is_empty());
    }

    #[test]
    fn interface_names_follow_linux_rules() {
        for bad in [
            "../../x",
            "a/b",
            "",
            ".",
            "..",
            "eth 0",
            "eth0:1",
            "0123456789abcdef",
            "eth\\n0",
        ] {
            let problems =
                problems_after(&[("interface = \"lan0\"", &format!("interface = \"{bad}\""))]);
            assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
            assert_eq!(problems[0].field, "provider.local.interface");
            assert!(problems[0].message.contains("ip link"), "names the fix");
        }
        for good in ["lan0", "eth0.100", "br-lan", "veth_a@x", "0123456789abcde"] {
            assert!(is_interface_name(good), "{good}");
        }
    }

    #[test]
    fn paths_must_be_absolute() {
        for (from, to, field) in [
            (
                "key_file = \"/nonexistent/key\"",
                "key_file = \"key\"",
                "cluster.key_file",
            ),
            (
                "priority = 200",
                "priority = 200\nstate_dir = \"\"",
                "node.state_dir",
            ),
            (
                "priority = 200",
                "priority = 200\nstate_dir = \"var/state\"",
                "node.state_dir",
            ),
            (
                "[provider]",
                "[status]\nsocket = \"cloudha.sock\"\n[provider]",
                "status.socket",
            ),
            (
                "[provider]",
                "[status]\nsocket = \"\"\n[provider]",
                "status.socket",
            ),
            (
                "[provider]",
                "[status]\nsocket = \"/run/cloudha/\"\n[provider]",
                "status.socket",
            ),
            (
                "[provider]",
                "[journal]\npath = \"journal.jsonl\"\n[provider]",
                "journal.path",
            ),
        ] {
            let problems = problems_after(&[(from, to)]);
            assert_eq!(problems.len(), 1, "{to}: {problems:?}");
            assert_eq!(problems[0].field, field, "{to}");
            assert!(
                problems[0].message.contains("absolute path")
                    || problems[0].message.contains("names a directory"),
                "{}",
                problems[0].message
            );
        }
        let long = format!(
            "[status]\nsocket = \"/run/{}.sock\"\n[provider]",
            "s".repeat(120)
        );
        let problems = problems_after(&[("[provider]", &long)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("at most 107"),
            "{}",
            problems[0].message
        );
        assert!(problems[0].message.len() < 250, "the path is cut short");
    }

    #[test]
    fn metrics_beyond_loopback_is_a_warning_not_a_problem() {
        let config = Config::parse(EXAMPLE).expect("parses");
        assert!(config.warnings().is_empty());
        let text = format!("{EXAMPLE}\n[metrics]\nlisten = \"0.0.0.0:9465\"\n");
        let config = Config::parse(&text).expect("parses");
        assert!(config.validate().is_empty());
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].field, "metrics.listen");
        let text = format!("{EXAMPLE}\n[metrics]\nenabled = false\nlisten = \"0.0.0.0:9465\"\n");
        assert!(Config::parse(&text).expect("parses").warnings().is_empty());
    }

    #[test]
    fn errors_never_echo_a_source_line_or_a_huge_value() {
        // Not TOML at all, as when a password file is passed by mistake.
        let (field, message) = parse_err("root:$6$secrethash:19000:0:99999:7:::\n");
        assert_eq!(field, ".");
        assert!(!message.contains("secrethash"), "{message}");
        assert!(message.contains("line 1"), "{message}");
        // A valid line followed by a broken one: the position, not the text.
        let (_, message) = parse_err("[cluster]\nid = 1\nkey_file = secret-value-here\n");
        assert!(!message.contains("secret-value-here"), "{message}");
        assert!(message.contains("line 3"), "{message}");
        // A 5 MB value in a typed field comes back as a short excerpt.
        let huge = "9".repeat(5_000_000);
        let text = EXAMPLE.replace("\"100ms\"", &format!("\"{huge}x\""));
        let (field, message) = parse_err(&text);
        assert_eq!(field, "keepalive.interval");
        assert!(message.len() < 400, "{} bytes", message.len());
        let text = EXAMPLE.replace("name = \"fw-a\"", &format!("name = {huge}"));
        let (_, message) = parse_err(&text);
        assert!(message.len() < 400, "{} bytes", message.len());
        let text = EXAMPLE.replace("\"lan0\"", &format!("\"{huge}\""));
        let problems = Config::parse(&text).expect("parses").validate();
        assert!(
            problems.iter().all(|p| p.message.len() < 400),
            "{problems:?}"
        );
    }

    #[test]
    fn files_on_disk_are_checked_by_config_check() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        let text = EXAMPLE.replace(
            "[provider]",
            &format!(
                "[status]\nsocket = \"{0}/run/cloudha.sock\"\n[hooks]\non_active = [\"{0}/hook\"]\n[provider]",
                base.display()
            ),
        )
        .replace("priority = 200", &format!("priority = 200\nstate_dir = \"{}/state\"", base.display()));
        let config = Config::parse(&text).expect("parses");
        let fields =
            || -> Vec<String> { config.check_files().into_iter().map(|p| p.field).collect() };
        // Missing directories are created at start; a missing hook program is not.
        assert_eq!(fields(), ["hooks.on_active"]);
        let hook = base.join("hook");
        std::fs::write(&hook, "#!/bin/sh\n").expect("write hook");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(fields(), ["hooks.on_active"], "not executable");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(fields().is_empty());

        // A regular file where the socket goes is never deleted: refused.
        let run = base.join("run");
        std::fs::create_dir(&run).expect("mkdir");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::write(run.join("cloudha.sock"), "precious").expect("write");
        let problems = config.check_files();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "status.socket");
        assert!(
            problems[0].message.contains("is not a socket"),
            "{}",
            problems[0].message
        );
        std::fs::remove_file(run.join("cloudha.sock")).expect("rm");
        // A socket directory others can write is refused.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(fields(), ["status.socket"]);
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // A state directory others can write is refused.
        let state = base.join("state");
        std::fs::create_dir(&state).expect("mkdir");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o757)).expect("chmod");
        assert_eq!(fields(), ["node.state_dir"]);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(fields().is_empty());
    }

    #[test]
    fn digest_ignores_node_specific_settings() {
        let a = Config::parse(EXAMPLE).expect("parses");
        let b_text = EXAMPLE
            .replace("name = \"fw-a\"", "name = \"X\"")
            .replace("priority = 200", "priority = 100")
            .replace("10.0.0.1:5405", "10.0.0.9:5405");
        let b = Config::parse(&b_text).expect("parses");
        assert_eq!(a.ha_digest(), b.ha_digest());
        let c = Config::parse(&EXAMPLE.replace("10.0.0.100", "10.0.0.101")).expect("parses");
        assert_ne!(a.ha_digest(), c.ha_digest());
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(
            ConfigDuration::parse("250ms").map(|d| d.0),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            ConfigDuration::parse("2m").map(|d| d.0),
            Ok(Duration::from_secs(120))
        );
        assert!(ConfigDuration::parse("5").is_err());
        assert!(ConfigDuration::parse("ms").is_err());
        assert!(ConfigDuration::parse("99999999999999999999s").is_err());
        assert_eq!(
            ConfigDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(ConfigDuration(Duration::from_secs(3)).to_string(), "3s");
    }

    fn azure_example(failover: &str) -> Config {
        let text = EXAMPLE.replace(
            "[provider]\nkind = \"local\"\n\n[provider.local]\ninterface = \"lan0\"\n",
            &format!(
                "[provider]\nkind = \"azure\"\n\n[provider.azure]\npeer_nic = \"/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkInterfaces/fw-b-lan\"\n{failover}"
            ),
        );
        assert!(
            text.contains("kind = \"azure\""),
            "the example's provider table moved"
        );
        Config::parse(&text).expect("azure example parses")
    }

    #[test]
    fn the_default_deadline_fits_an_azure_two_step_move() {
        let config = azure_example("");
        assert_eq!(config.failover.deadline.0, Duration::from_secs(300));
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    }

    #[test]
    fn an_azure_deadline_below_two_nic_updates_is_warned_about() {
        let config = azure_example("\n[failover]\ndeadline = \"180s\"\n");
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].field, "failover.deadline");
        assert!(
            warnings[0].message.contains("use at least 300s"),
            "{}",
            warnings[0].message
        );
        // Usable, so a warning and not a refusal.
        assert!(config
            .validate()
            .iter()
            .all(|p| p.field != "failover.deadline"));
    }

    #[test]
    fn a_short_deadline_is_fine_where_the_cloud_is_fast() {
        let text = EXAMPLE.to_string() + "\n[failover]\ndeadline = \"60s\"\n";
        let config = Config::parse(&text).expect("parses");
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    }
}
