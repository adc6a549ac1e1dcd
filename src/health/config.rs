//! `[[track]]` and `[health_probe]`: what the node checks about its own appliance, and the
//! responder a load balancer probes. Neither feeds the HA config digest: each node tracks its
//! own processes and interfaces.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::duration::ConfigDuration;

/// Longest interface name Linux accepts (`IFNAMSIZ` minus the NUL).
const MAX_IFNAME_BYTES: usize = 15;
/// Most consecutive results `fall` or `rise` may ask for: more is a typo (an hour at 1 s).
const MAX_COUNT: u32 = 3600;
/// Shortest check interval: a check more often than this costs more than it tells.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `[[track]]`: one check of the appliance (like keepalived's `track_script` and
/// `track_interface`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrackConfig {
    /// Label in status, metrics, the journal and alarms.
    pub name: String,
    /// Program and arguments (no shell): healthy when it exits 0 within `timeout`.
    pub command: Option<Vec<String>>,
    /// Network interface: healthy while it is administratively up and has carrier.
    pub interface: Option<String>,
    /// Time between the end of one check and the start of the next.
    #[serde(default = "default_interval")]
    pub interval: ConfigDuration,
    /// A command still running after this is killed (with its process group) and counts as
    /// failed.
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// Consecutive failures that make a healthy check failing.
    #[serde(default = "one")]
    pub fall: u32,
    /// Consecutive successes that make a failing check healthy.
    #[serde(default = "one")]
    pub rise: u32,
    /// Priority adjustment instead of fault (keepalived's semantics): a negative weight is
    /// subtracted while the check fails, a positive one added while it succeeds.
    pub weight: Option<i32>,
    /// What a failing check does when it has no weight: `"fault"` (the default).
    pub effect: Option<TrackEffect>,
}

/// What a failing check does to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackEffect {
    /// The node enters FAULT (an active node hands over first).
    Fault,
}

/// What a check looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Run a program.
    Command(Vec<String>),
    /// Read an interface's flags and carrier.
    Interface(String),
}

impl TrackConfig {
    /// What the check runs (validation guarantees exactly one of the two is set).
    pub fn probe(&self) -> Probe {
        match (&self.command, &self.interface) {
            (Some(command), _) => Probe::Command(command.clone()),
            (None, Some(interface)) => Probe::Interface(interface.clone()),
            (None, None) => Probe::Command(Vec::new()),
        }
    }

    /// `fault`, or the signed weight.
    pub fn effect_label(&self) -> String {
        match self.weight {
            Some(w) => format!("weight {w:+}"),
            None => "fault".into(),
        }
    }
}

/// `[health_probe]`: a TCP or HTTP responder open only while this node should get traffic.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthProbeConfig {
    /// Address and TCP port the load balancer probes.
    pub listen: SocketAddr,
    /// `"tcp"`: the port accepts connections only while healthy. `"http"`: always listening,
    /// `200` on `path` while healthy and `503` otherwise.
    #[serde(default)]
    pub protocol: ProbeProtocol,
    /// The HTTP probe's path (HTTP only).
    pub path: Option<String>,
}

/// The probe's protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeProtocol {
    /// Open while healthy, closed (connection refused) otherwise.
    #[default]
    Tcp,
    /// 200 while healthy, 503 otherwise.
    Http,
}

impl HealthProbeConfig {
    /// The HTTP path answered (default `/`).
    pub fn http_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }
}

fn default_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}
fn default_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(2))
}
fn one() -> u32 {
    1
}

/// Problems with `[[track]]` and `[health_probe]` that the text alone shows.
pub fn validate(
    tracks: &[TrackConfig],
    probe: Option<&HealthProbeConfig>,
    problem: &mut impl FnMut(&str, String),
) {
    let mut names = std::collections::BTreeSet::new();
    for (i, t) in tracks.iter().enumerate() {
        let field = |key: &str| format!("track[{i}].{key}");
        let valid_name = t
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if t.name.is_empty() || t.name.len() > 32 || !valid_name {
            problem(
                &field("name"),
                format!(
                    "{} is not a check name; use up to 32 letters, digits, '.', '_' or '-', e.g. \"firewall\"",
                    crate::secure_fs::excerpt(&t.name)
                ),
            );
        } else if !names.insert(t.name.as_str()) {
            problem(
                &field("name"),
                format!(
                    "{:?} names another [[track]] too; give each check its own name",
                    t.name
                ),
            );
        }
        match (&t.command, &t.interface) {
            (Some(_), Some(_)) | (None, None) => problem(
                &field("command"),
                "a check has exactly one of command = [\"/path/to/program\", \"arg\"] or interface = \"<name>\"".into(),
            ),
            (Some(command), None) => match command.first() {
                None => problem(
                    &field("command"),
                    "is empty; write the program and its arguments, e.g. [\"/usr/bin/pgrep\", \"-x\", \"fwd\"]".into(),
                ),
                Some(program) if !program.starts_with('/') => problem(
                    &field("command"),
                    format!(
                        "{} is not an absolute path (checks run without a shell or PATH); write the program's full path, e.g. [\"/usr/bin/pgrep\", \"-x\", \"fwd\"]",
                        crate::secure_fs::excerpt(program)
                    ),
                ),
                Some(_) => {}
            },
            (None, Some(interface)) => {
                if interface.is_empty()
                    || interface.len() > MAX_IFNAME_BYTES
                    || interface.contains(['/', ' ', '\0'])
                    || interface == "."
                    || interface == ".."
                {
                    problem(
                        &field("interface"),
                        format!(
                            "{} is not an interface name (1 to 15 bytes, no '/' or space); write e.g. \"eth1\"",
                            crate::secure_fs::excerpt(interface)
                        ),
                    );
                }
            }
        }
        if t.interval.0 < MIN_INTERVAL {
            problem(
                &field("interval"),
                "must be at least 100ms; e.g. \"1s\"".into(),
            );
        }
        if t.timeout.0.is_zero() {
            problem(&field("timeout"), "must be more than 0; e.g. \"2s\"".into());
        }
        for (key, value) in [("fall", t.fall), ("rise", t.rise)] {
            if !(1..=MAX_COUNT).contains(&value) {
                problem(
                    &field(key),
                    format!("{value} is not a count of consecutive results; use 1..={MAX_COUNT}, e.g. 3"),
                );
            }
        }
        match (t.weight, t.effect) {
            (Some(_), Some(_)) => problem(
                &field("weight"),
                "a check either adjusts the priority (weight) or faults the node (effect = \"fault\"); remove one of the two".into(),
            ),
            (Some(w), None) if w == 0 || !(-254..=254).contains(&w) => problem(
                &field("weight"),
                format!("{w} is not a priority adjustment; use -254..=254 without 0 (negative: subtracted while failing; positive: added while healthy), or effect = \"fault\""),
            ),
            _ => {}
        }
    }
    if let Some(p) = probe {
        match (p.protocol, &p.path) {
            (ProbeProtocol::Tcp, Some(_)) => problem(
                "health_probe.path",
                "is for protocol = \"http\"; a TCP probe only connects. Set protocol = \"http\" or remove path".into(),
            ),
            (ProbeProtocol::Http, Some(path)) if !path.starts_with('/') || path.contains(char::is_whitespace) => {
                problem(
                    "health_probe.path",
                    format!(
                        "{} is not an HTTP path; write e.g. \"/healthz\"",
                        crate::secure_fs::excerpt(path)
                    ),
                )
            }
            _ => {}
        }
        if p.listen.port() == 0 {
            problem(
                "health_probe.listen",
                "port 0 would pick a random port the load balancer cannot know; write the probe's port, e.g. \"0.0.0.0:8080\"".into(),
            );
        }
    }
}

/// Problems only the file system shows: a check program that is missing or not executable.
pub fn check_files(tracks: &[TrackConfig], problem: &mut impl FnMut(&str, String)) {
    for (i, t) in tracks.iter().enumerate() {
        // A relative program is reported by `validate`.
        let Some(program) = t.command.as_ref().and_then(|c| c.first()) else {
            continue;
        };
        if program.starts_with('/') {
            crate::config::checks::check_program(&format!("track[{i}].command"), program, problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(text: &str) -> TrackConfig {
        toml::from_str(text).expect("a track")
    }

    fn problems(tracks: &[TrackConfig], probe: Option<&HealthProbeConfig>) -> Vec<String> {
        let mut out = Vec::new();
        validate(tracks, probe, &mut |f, m| out.push(format!("{f}: {m}")));
        check_files(tracks, &mut |f, m| out.push(format!("{f}: {m}")));
        out
    }

    #[test]
    fn a_good_command_and_interface_check_pass() {
        let tracks = [
            track("name = \"fw\"\ncommand = [\"/bin/true\"]\nfall = 3\nrise = 2\nweight = -50"),
            track("name = \"wan\"\ninterface = \"eth1\"\neffect = \"fault\""),
        ];
        assert_eq!(problems(&tracks, None), Vec::<String>::new());
        assert_eq!(tracks[0].effect_label(), "weight -50");
        assert_eq!(tracks[1].effect_label(), "fault");
        assert_eq!(tracks[1].probe(), Probe::Interface("eth1".into()));
        assert_eq!(tracks[0].interval.0, Duration::from_secs(1));
    }

    #[test]
    fn each_mistake_names_its_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("not-executable");
        std::fs::write(&plain, "#!/bin/sh\n").expect("write");
        let cases = [
            (
                "name = \"a\"\ncommand = [\"/nonexistent/check\"]".to_string(),
                "track[0].command: \"/nonexistent/check\": No such file",
            ),
            (
                format!("name = \"a\"\ncommand = [\"{}\"]", plain.display()),
                "is not executable",
            ),
            (
                format!("name = \"a\"\ncommand = [\"{}\"]", dir.path().display()),
                "is not a regular file",
            ),
            (
                "name = \"a\"\ncommand = [\"pgrep\"]".into(),
                "track[0].command: \"pgrep\" is not an absolute path",
            ),
            (
                "name = \"a\"\ncommand = []".into(),
                "track[0].command: is empty",
            ),
            ("name = \"a\"".into(), "exactly one of command"),
            (
                "name = \"a\"\ninterface = \"x\"\ncommand = [\"/bin/true\"]".into(),
                "exactly one of command",
            ),
            (
                "name = \"a\"\ninterface = \"much-too-long-ifname\"".into(),
                "track[0].interface:",
            ),
            ("name = \"a b\"\ninterface = \"x\"".into(), "track[0].name:"),
            (
                "name = \"a\"\ninterface = \"x\"\nfall = 0".into(),
                "track[0].fall: 0 is not a count",
            ),
            (
                "name = \"a\"\ninterface = \"x\"\ninterval = \"10ms\"".into(),
                "track[0].interval:",
            ),
            (
                "name = \"a\"\ninterface = \"x\"\nweight = 0".into(),
                "track[0].weight: 0 is not",
            ),
            (
                "name = \"a\"\ninterface = \"x\"\nweight = -10\neffect = \"fault\"".into(),
                "track[0].weight: a check either",
            ),
        ];
        for (text, expected) in cases {
            let found = problems(&[track(&text)], None);
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{text:?}: expected {expected:?} in {found:?}"
            );
        }
        let twice = [
            track("name = \"a\"\ninterface = \"x\""),
            track("name = \"a\"\ninterface = \"y\""),
        ];
        assert!(problems(&twice, None)[0].starts_with("track[1].name:"));
    }

    #[test]
    fn probe_mistakes_name_their_field() {
        let probe = |text: &str| -> HealthProbeConfig { toml::from_str(text).expect("a probe") };
        assert!(problems(&[], Some(&probe("listen = \"0.0.0.0:8080\""))).is_empty());
        let http = probe("listen = \"0.0.0.0:8080\"\nprotocol = \"http\"\npath = \"/healthz\"");
        assert!(problems(&[], Some(&http)).is_empty());
        assert_eq!(http.http_path(), "/healthz");
        for (text, expected) in [
            (
                "listen = \"0.0.0.0:8080\"\npath = \"/x\"",
                "health_probe.path: is for protocol",
            ),
            (
                "listen = \"0.0.0.0:8080\"\nprotocol = \"http\"\npath = \"healthz\"",
                "health_probe.path: \"healthz\" is not an HTTP path",
            ),
            ("listen = \"0.0.0.0:0\"", "health_probe.listen: port 0"),
        ] {
            let found = problems(&[], Some(&probe(text)));
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{text:?}: {found:?}"
            );
        }
    }
}
