//! `[keepalive]`: timing and the `[[keepalive.path]]` entries, and the paths' validation.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::duration::ConfigDuration;
use super::{Config, MAX_PATHS};

/// `[keepalive]`: timing and the paths keepalives travel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveConfig {
    /// Time between two keepalives on each path.
    #[serde(default = "default_interval")]
    pub interval: ConfigDuration,
    /// Silence on every path for this long means the peer is dead.
    #[serde(default = "default_dead_interval")]
    pub dead_interval: ConfigDuration,
    /// One entry per path (e.g. LAN and MGMT).
    #[serde(default, rename = "path")]
    pub paths: Vec<PathConfig>,
}

/// `[[keepalive.path]]`: one independent keepalive path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathConfig {
    /// Label used in status and metrics (`lan`, `mgmt`).
    pub name: String,
    /// Local address and UDP port to send from and listen on.
    pub bind: SocketAddr,
    /// The peer's address and port on this path.
    pub peer: SocketAddr,
}

fn default_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(200))
}
fn default_dead_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}
impl Config {
    pub(super) fn validate_paths(&self, problem: &mut impl FnMut(&str, String)) {
        let paths = &self.keepalive.paths;
        if paths.is_empty() {
            problem(
                "keepalive.path",
                "no [[keepalive.path]]; add one with name, bind = \"<own ip>:5405\" and peer = \"<peer ip>:5405\"".into(),
            );
        }
        if paths.len() > MAX_PATHS {
            problem(
                "keepalive.path",
                format!(
                    "{} paths configured; at most {MAX_PATHS} are supported",
                    paths.len()
                ),
            );
        }
        let mut names = BTreeSet::new();
        let mut binds = BTreeSet::new();
        let mut peers = BTreeSet::new();
        for (i, path) in paths.iter().enumerate() {
            if path.bind.port() == 0 {
                problem(
                    &format!("keepalive.path[{i}].bind"),
                    format!(
                        "{} has port 0 (a random port the peer cannot know); write the port both nodes use, e.g. :5405",
                        path.bind
                    ),
                );
            }
            // By address, whatever the port: two paths to one address fail together.
            if !peers.insert(path.peer.ip()) {
                problem(
                    &format!("keepalive.path[{i}].peer"),
                    format!(
                        "{} is the peer of another path too: two paths to one address fail together, so they are one path; give each path the peer's address on its own network",
                        path.peer.ip()
                    ),
                );
            }
            if path.name.is_empty() || !names.insert(path.name.as_str()) {
                problem(
                    &format!("keepalive.path[{i}].name"),
                    format!(
                        "{} is empty or used twice; give each path its own name",
                        crate::secure_fs::excerpt(&path.name)
                    ),
                );
            }
            if !binds.insert(path.bind) {
                problem(
                    &format!("keepalive.path[{i}].bind"),
                    format!(
                        "{} is used by another path; each path needs its own address",
                        path.bind
                    ),
                );
            }
            if path.bind.is_ipv4() != path.peer.is_ipv4() {
                problem(
                    &format!("keepalive.path[{i}].peer"),
                    format!(
                        "{} and bind {} are different address families; use IPv4 or IPv6 on both",
                        path.peer, path.bind
                    ),
                );
            }
            if path.peer.port() == 0 {
                problem(
                    &format!("keepalive.path[{i}].peer"),
                    format!(
                        "{} has port 0; write the peer's port, e.g. :5405",
                        path.peer
                    ),
                );
            }
            if path.peer.ip().is_unspecified()
                || path.peer.ip().is_multicast()
                || path.peer.ip() == std::net::IpAddr::V4(Ipv4Addr::BROADCAST)
            {
                problem(
                    &format!("keepalive.path[{i}].peer"),
                    format!("{} is not a unicast address; clouds drop multicast, name the peer's own address", path.peer),
                );
            }
        }
    }
}
