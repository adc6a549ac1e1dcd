//! What is observed every poll (both daemons' status, the emulated cloud) and the
//! invariants checked on it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::backend::{Backend, CloudView, Holder};
use crate::netns::Node;

pub const NODES: [Node; 2] = [Node::A, Node::B];

fn index(node: Node) -> usize {
    match node {
        Node::A => 0,
        _ => 1,
    }
}

/// The daemon's status straight from its control socket (faster than spawning the CLI
/// every 100 ms); None while it does not answer.
pub fn status(socket: &Path) -> Option<Value> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"{\"op\":\"status\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    let answer: Value = serde_json::from_str(&line).ok()?;
    Some(answer.get("status")?.clone())
}

/// One poll of both daemons and the cloud.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Since the start of the run.
    pub at: Duration,
    pub status: [Option<Value>; 2],
    pub cloud: CloudView,
}

impl Observation {
    pub fn take(backend: &dyn Backend, sockets: [&Path; 2], at: Duration) -> Observation {
        Observation {
            at,
            status: sockets.map(status),
            cloud: backend.view(),
        }
    }

    pub fn field(&self, node: Node, key: &str) -> Option<&Value> {
        self.status[index(node)].as_ref().map(|s| &s[key])
    }

    pub fn role(&self, node: Node) -> Option<&str> {
        self.field(node, "role").and_then(Value::as_str)
    }

    /// The active node if the pair is in the stable state every fault must end in: both
    /// daemons answer, one active (its takeover done), the other standby, nobody fenced,
    /// the floating IP(s) settled on the active node's NIC only, every route pointing at it,
    /// and no cloud operation running.
    pub fn converged(&self) -> Option<Node> {
        let active = NODES
            .into_iter()
            .find(|n| self.role(*n) == Some("active"))?;
        let standby = NODES.into_iter().find(|n| *n != active)?;
        let ok = self.role(standby) == Some("standby")
            && NODES
                .iter()
                .all(|n| self.field(*n, "fenced") != Some(&Value::Bool(true)))
            && self
                .field(active, "takeover")
                .is_some_and(|t| t["state"] == "done")
            && self.cloud.holder == Holder::Node(active)
            && self.cloud.settled_on[index(active)]
            && self.cloud.route_owner == Some(active)
            && self.cloud.operations_in_progress == 0;
        ok.then_some(active)
    }

    /// One line for the timeline printed on failure.
    pub fn describe(&self) -> String {
        let role = |n: Node| {
            let r = self.role(n).unwrap_or("down");
            let fenced = self.field(n, "fenced") == Some(&Value::Bool(true));
            let takeover = self
                .field(n, "takeover")
                .and_then(|t| t["state"].as_str())
                .unwrap_or("-");
            format!("{r}{}/{takeover}", if fenced { "(fenced)" } else { "" })
        };
        format!(
            "A {} B {} ip@{} route->{} ops {}",
            role(Node::A),
            role(Node::B),
            match &self.cloud.holder {
                Holder::Node(n) => format!("{n:?}"),
                Holder::Both => "BOTH".into(),
                Holder::Nobody => "NOBODY".into(),
                Holder::Other(h) => h.clone(),
            },
            self.cloud.route_desc,
            self.cloud.operations_in_progress
        )
    }
}

/// The invariants checked on every poll, and what an episode needs to judge its own.
pub struct Monitor {
    /// Each NIC's settings apart from the floating IP, before any fault (Azure).
    baseline: Option<[Value; 2]>,
    pub violations: Vec<String>,
    /// State changes with their time, printed on failure.
    pub timeline: Vec<String>,
    last_description: String,
    ip_owner: Option<Node>,
    route_owner: Option<Node>,
    /// Ownership changes in the current episode.
    pub ip_changes: u32,
    pub route_changes: u32,
    /// Since when no NIC holds the floating IP.
    nobody_since: Option<Duration>,
    /// Longest time on no NIC that counted against the bound, in the whole run.
    pub max_nobody: Duration,
    /// Longest time on no NIC, excused or not.
    pub longest_nobody: Duration,
}

impl Monitor {
    pub fn new(first: &Observation) -> Monitor {
        Monitor {
            baseline: first
                .cloud
                .nic_settings
                .as_ref()
                .map(|n| [n[0][1].clone(), n[1][1].clone()]),
            violations: Vec::new(),
            timeline: Vec::new(),
            last_description: String::new(),
            ip_owner: match first.cloud.holder {
                Holder::Node(n) => Some(n),
                _ => None,
            },
            route_owner: first.cloud.route_owner,
            ip_changes: 0,
            route_changes: 0,
            nobody_since: None,
            max_nobody: Duration::ZERO,
            longest_nobody: Duration::ZERO,
        }
    }

    pub fn note(&mut self, at: Duration, what: impl AsRef<str>) {
        self.timeline
            .push(format!("{:>8.2}s  {}", at.as_secs_f64(), what.as_ref()));
    }

    fn violate(&mut self, at: Duration, what: String) {
        // One report per kind of violation is enough to debug; the rest would flood.
        let kind: String = what.chars().take(40).collect();
        if !self.violations.iter().any(|v| v.starts_with(&kind)) {
            self.note(at, format!("VIOLATION {what}"));
            self.violations.push(what);
        }
    }

    pub fn start_episode(&mut self) {
        self.ip_changes = 0;
        self.route_changes = 0;
    }

    /// Checks one poll. `excused_until`: run time before which the floating IP being on no
    /// NIC does not count (a fault of the episode stops or killed the node moving it);
    /// `nobody_bound`: how long it may be on no NIC after that.
    pub fn observe(&mut self, obs: &Observation, excused_until: Duration, nobody_bound: Duration) {
        let description = obs.describe();
        if description != self.last_description {
            self.note(obs.at, &description);
            self.last_description = description;
        }
        if let (Some(baseline), Some(now)) = (&self.baseline, &obs.cloud.nic_settings) {
            let mut lost = Vec::new();
            for (i, node) in NODES.into_iter().enumerate() {
                for (view, which) in now[i].iter().zip(["as read", "settled"]) {
                    if *view != baseline[i] {
                        lost.push(format!(
                            "NIC of {node:?} ({which}) lost or changed a setting that is not the floating IP:\n  before {}\n  now    {}",
                            baseline[i], view
                        ));
                    }
                }
            }
            for what in lost {
                self.violate(obs.at, what);
            }
        }
        if let Holder::Other(h) = &obs.cloud.holder {
            self.violate(obs.at, format!("floating IP held by a third party: {h}"));
        }
        match (&obs.cloud.holder, self.nobody_since) {
            (Holder::Nobody, None) => self.nobody_since = Some(obs.at),
            (Holder::Node(_) | Holder::Both, Some(_)) => self.nobody_since = None,
            _ => {}
        }
        if let Some(since) = self.nobody_since {
            self.longest_nobody = self.longest_nobody.max(obs.at.saturating_sub(since));
            let counted = obs.at.saturating_sub(since.max(excused_until));
            self.max_nobody = self.max_nobody.max(counted);
            if counted > nobody_bound {
                self.violate(
                    obs.at,
                    format!(
                        "floating IP on no NIC for {:.1}s (bound {:.1}s)",
                        counted.as_secs_f64(),
                        nobody_bound.as_secs_f64()
                    ),
                );
            }
        }
        // Ownership is the settled holder: an update that fails and rolls back (an injected
        // `OperationFails`) is a retry of one move, not a move back.
        if let Some(now) = NODES.into_iter().find(|n| obs.cloud.settled_on[index(*n)]) {
            if self.ip_owner.is_some_and(|before| before != now) {
                self.ip_changes += 1;
            }
            self.ip_owner = Some(now);
        }
        if let Some(now) = obs.cloud.route_owner {
            if self.route_owner.is_some_and(|before| before != now) {
                self.route_changes += 1;
            }
            self.route_owner = Some(now);
        }
    }

    /// After an episode without a kill has settled: a partition (or loss, flapping, cloud
    /// faults) moves the floating IP and the route at most once each: `partitions` is how
    /// many separate partitions the episode made (a flapping link makes one per outage
    /// longer than the dead interval).
    pub fn check_no_ping_pong(&mut self, at: Duration, episode: &str, partitions: u32) {
        if self.ip_changes > partitions || self.route_changes > partitions {
            self.violate(
                at,
                format!(
                    "ping-pong: {} floating IP and {} route ownership changes in episode {episode} ({partitions} partition(s))",
                    self.ip_changes, self.route_changes
                ),
            );
        }
    }

    pub fn check_logs(&mut self, at: Duration, logs: &str) {
        if let Some(line) = logs.lines().find(|l| l.contains("panicked")) {
            self.violate(at, format!("daemon panicked: {line}"));
        }
    }

    pub fn fail(&mut self, at: Duration, what: String) {
        self.violate(at, what);
    }
}
