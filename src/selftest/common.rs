//! The checks that are the same for every provider: the config, the key file, and the peer as
//! the running daemon sees it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cloudha_provider_core::Check;

use crate::config::Config;
use crate::control::{self, Request, Response};

/// Parse and validate the config; `Err` (exit code 2) when it cannot be used at all.
pub fn load_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}; pass --config PATH", path.display()))?;
    let config = Config::parse(&text)
        .map_err(|(field, message)| format!("config {}: {field}: {message}", path.display()))?;
    let problems = config.validate();
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        return Err(format!("config {}: {}", path.display(), list.join("; ")));
    }
    Ok(config)
}

/// The config parsed and validated (it did, or `load_config` would have refused it).
pub fn config_check(path: &Path, config: &Config) -> Check {
    Check::pass(
        "config",
        format!(
            "{} is valid: node {}, peer {}, {} path(s), {} floating IP(s), {} route(s), provider {}",
            path.display(),
            config.node.name,
            config.peer.name,
            config.keepalive.paths.len(),
            config.floating_ips.len(),
            config.routes.len(),
            config.provider.kind
        ),
    )
}

/// The shared key: present, long enough, and readable by its owner only.
pub fn key_file_check(config: &Config) -> Check {
    let path = &config.cluster.key_file;
    // The mode first: a key others can read is the one failure whose fix is a chmod.
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            return Check::fail(
                "key_file",
                format!(
                    "{} has mode {mode:03o}: other users can read the cluster key and forge keepalives",
                    path.display()
                ),
                format!("chmod 600 {} (readable by its owner only)", path.display()),
            );
        }
    }
    if let Err(problem) = config.read_key() {
        return Check::fail(
            "key_file",
            problem.message.clone(),
            format!(
                "create it with the same content on both nodes: `head -c 32 /dev/urandom | base64 > {0}; chmod 600 {0}`",
                path.display()
            ),
        );
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return Check::fail(
                "key_file",
                format!("cannot stat {}: {e}", path.display()),
                "check the path in cluster.key_file",
            )
        }
    };
    Check::pass(
        "key_file",
        format!(
            "{} present, mode {:03o}, owner uid {}",
            path.display(),
            meta.mode() & 0o777,
            meta.uid()
        ),
    )
}

/// The files the daemon uses on this machine (control socket path and directory, state
/// directory, journal, hook programs): the checks `config check` makes.
pub fn files_check(config: &Config) -> Check {
    let problems = config.check_files();
    if problems.is_empty() {
        return Check::pass(
            "files",
            format!(
                "state directory {}, control socket {}, journal and hook programs are usable",
                config.node.state_dir.display(),
                config.status.socket.display()
            ),
        );
    }
    let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    Check::fail(
        "files",
        list.join("; "),
        "fix each named field as its message says, then `cloudha config check`",
    )
}

/// Keepalives heard on each path, same version and config digest, from the running daemon.
pub async fn peer_checks(config: &Config) -> Vec<Check> {
    let socket = &config.status.socket;
    let status = match control::request(socket, &Request::Status).await {
        Ok(Response::Status { status }) => status,
        Ok(other) => {
            return vec![Check::warn(
                "peer",
                format!("the daemon at {} answered {other:?}", socket.display()),
                "check that status.socket belongs to this node's cloudha daemon",
            )]
        }
        Err(e) => {
            return vec![Check::warn(
                "peer",
                format!(
                    "the daemon is not running here ({e}); keepalives, version and config digest of the peer were not checked"
                ),
                "start `cloudha run` (systemctl start cloudha) and run the self-test again",
            )]
        }
    };
    let mut out = Vec::new();
    let peer = &config.peer.name;
    for path in &status.paths {
        let heard = path
            .last_heard_ms_ago
            .map(|ms| format!(", last heard {:.1}s ago", ms as f64 / 1000.0))
            .unwrap_or_default();
        if path.up {
            out.push(Check::pass(
                "keepalive",
                format!(
                    "path {} {} -> {}: peer {peer} heard ({} received, {:.1}% lost{heard})",
                    path.name, path.bind, path.peer, path.received, path.loss_percent
                ),
            ));
        } else {
            let rejected: Vec<String> = path
                .rejected
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(why, n)| format!("{why} {n}"))
                .collect();
            let rejected = if rejected.is_empty() {
                String::new()
            } else {
                format!(", rejected: {}", rejected.join(", "))
            };
            out.push(Check::fail(
                "keepalive",
                format!(
                    "path {} {} -> {}: peer {peer} NOT heard ({} sent, {} received{heard}{rejected})",
                    path.name, path.bind, path.peer, path.sent, path.received
                ),
                "allow UDP to the keepalive port between the nodes (NSG / security group, host firewall) and check keepalive.path peer addresses and the key file on both nodes",
            ));
        }
    }
    for name in ["same_version", "same_config"] {
        match status.indicators.iter().find(|i| i.name == name) {
            Some(i) if i.ok => out.push(Check::pass(name, i.detail.clone())),
            Some(i) => out.push(Check::fail(
                name,
                i.detail.clone(),
                if name == "same_version" {
                    "upgrade both nodes to the same cloudha version"
                } else {
                    "make cluster, keepalive timing, floating_ip and route sections identical on both nodes"
                },
            )),
            None => out.push(Check::warn(
                name,
                format!("the daemon's status has no {name} indicator"),
                "run the same cloudha version as the daemon",
            )),
        }
    }
    let ours = hex(&config.ha_digest());
    let running = status
        .indicators
        .iter()
        .find(|i| i.name == "same_config")
        .map(|i| i.detail.contains(&ours))
        .unwrap_or(false);
    if !running {
        out.push(Check::warn(
            "config_loaded",
            format!(
                "the running daemon does not report this file's HA config digest {ours}: the file changed since the daemon started, or the peer is not heard"
            ),
            "restart the daemon after changing the config (systemctl restart cloudha)",
        ));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The on-premises provider: the interface exists.
pub fn local_checks(config: &Config) -> Vec<Check> {
    let Some(local) = &config.provider.local else {
        return vec![Check::fail(
            "config",
            "provider.kind = \"local\" but there is no [provider.local] table",
            "add [provider.local] interface = \"...\"",
        )];
    };
    let sys = Path::new("/sys/class/net").join(&local.interface);
    if sys.exists() {
        vec![Check::pass(
            "interface",
            format!("interface {} exists", local.interface),
        )]
    } else {
        vec![Check::fail(
            "interface",
            format!(
                "interface {} does not exist in this network namespace",
                local.interface
            ),
            "set provider.local.interface to the LAN interface (ip -br link)",
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudha_provider_core::Outcome;

    #[test]
    fn files_check_fails_on_a_file_where_the_socket_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("ctl.sock");
        let text = crate::config::tests::EXAMPLE.replace(
            "[provider]",
            &format!("[status]\nsocket = \"{}\"\n[provider]", socket.display()),
        );
        let config = Config::parse(&text).expect("parses");
        assert_eq!(files_check(&config).outcome, Outcome::Pass);
        std::fs::write(&socket, "not a socket").expect("write");
        let check = files_check(&config);
        assert_eq!(check.outcome, Outcome::Fail);
        assert!(check.detail.contains("status.socket"), "{}", check.detail);
    }
}
