//! Alarms: conditions an operator must look at, raised when they start and cleared when the
//! cause goes. Pure: the daemon feeds [`Inputs`] after every event and gets the changes back,
//! which it shows in status and metrics and writes to the journal.
//!
//! The conditions are the ones the seeds' troubleshooting sections ask about: two active (or
//! two standby) nodes for longer than the dead interval; packets for our cluster from an
//! unknown sender or with a wrong key (the cloud analogue of a second VRRP speaker on the same
//! router id); version or config-digest mismatch with the peer; a takeover running longer than
//! expected; a floating IP on neither or on both NICs; keepalive loss or round trip over a
//! threshold (a sick link, MTU trouble); clock skew between the peers.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::fsm::Role;

/// Loss is measured over this window, so the alarm clears once the link is healthy again.
const LOSS_WINDOW_MS: u64 = 10_000;
/// Fewer packets than this in the window say nothing about loss.
const LOSS_MIN_PACKETS: u64 = 10;

/// An error as one bounded line for an alarm's detail (the journal has it whole).
fn one_line(text: &str) -> String {
    const MAX: usize = 300;
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &flat[..cut]),
        None => flat,
    }
}

/// Every alarm name, for metrics (each is exported, 0 or 1).
pub const NAMES: &[&str] = &[
    "dual_active",
    "no_active",
    "bad_packets",
    "peer_bad_packets",
    "version_mismatch",
    "config_mismatch",
    "takeover_slow",
    "takeover_failing",
    "ip_unplaced",
    "ip_duplicated",
    "keepalive_loss",
    "keepalive_rtt",
    "clock_skew",
    "track_failing",
];

/// Thresholds (from `[alarms]` and the keepalive timing).
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub dead_interval_ms: u64,
    pub max_loss_percent: f64,
    pub max_rtt_ms: f64,
    pub max_clock_skew_ms: u64,
    pub takeover_pending_ms: u64,
    pub bad_packet_quiet_ms: u64,
}

/// One keepalive path's counters (cumulative) and round trip.
#[derive(Debug, Clone, Default)]
pub struct PathSample {
    pub name: String,
    pub received: u64,
    pub lost: u64,
    pub rtt_ms: Option<f64>,
}

/// What the daemon knows now.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub now_ms: u64,
    pub my_role: Option<Role>,
    /// The peer's role, when it is alive.
    pub peer_role: Option<Role>,
    /// Keepalives for our cluster dropped as unauthenticated or from an unknown sender
    /// (cumulative, all paths).
    pub bad_packets: u64,
    /// Keepalives dropped as replayed (they carry the peer's name) or malformed from the peer's
    /// address (cumulative, all paths): a recording replayed at this node, or a broken or
    /// hostile sender at the peer's address; also a peer that lost its state with its clock
    /// behind, until its new boot proves itself.
    pub peer_drops: u64,
    /// Set when the peer runs another version: what it runs.
    pub version_mismatch: Option<String>,
    /// Set when the peer's HA config digest differs: a description.
    pub config_mismatch: Option<String>,
    /// How long the current takeover has been running.
    pub takeover_running_ms: Option<u64>,
    /// Why the last attempt of a takeover that is waiting to retry failed (a missing
    /// permission names the action and the scope).
    pub takeover_error: Option<String>,
    /// Floating IPs the last cloud read found on neither node (each naming a third holder when
    /// the provider knows one), and on both.
    pub ips_unplaced: Vec<String>,
    pub ips_duplicated: Vec<String>,
    pub paths: Vec<PathSample>,
    pub clock_skew_ms: Option<i64>,
    /// Tracked checks failing now: `name (effect): detail`.
    pub tracks_failing: Vec<String>,
}

/// A raised alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub name: String,
    /// What was seen.
    pub detail: String,
    /// When it was raised (daemon clock, ms).
    pub since_ms: u64,
}

/// A change to report.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Raised { name: &'static str, detail: String },
    Cleared { name: &'static str, detail: String },
}

/// The alarm state.
#[derive(Debug)]
pub struct Alarms {
    thresholds: Thresholds,
    active: BTreeMap<&'static str, Alarm>,
    /// Since when a condition that must last (dual_active, no_active) has held.
    holding_since: BTreeMap<&'static str, u64>,
    /// The bad-packet count last seen and when it last grew.
    bad_packets: (u64, Option<u64>),
    /// The same for `peer_bad_packets`.
    peer_drops: (u64, Option<u64>),
    /// Per path: (time, received, lost) samples over the loss window.
    history: BTreeMap<String, VecDeque<(u64, u64, u64)>>,
}

impl Alarms {
    pub fn new(thresholds: Thresholds) -> Alarms {
        Alarms {
            thresholds,
            active: BTreeMap::new(),
            holding_since: BTreeMap::new(),
            bad_packets: (0, None),
            peer_drops: (0, None),
            history: BTreeMap::new(),
        }
    }

    /// Replace the thresholds (config reload).
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
    }

    /// Whether a condition is raised or building up (a role pair holding, bad packets arriving):
    /// then the loop re-evaluates every second, so an alarm rises or clears on time; otherwise a
    /// slower pace catches drift (loss over the window, skew), see `daemon::publish`.
    pub fn watching(&self, now_ms: u64) -> bool {
        let recent = |at: Option<u64>| {
            at.is_some_and(|at| now_ms.saturating_sub(at) < self.thresholds.bad_packet_quiet_ms)
        };
        !self.active.is_empty()
            || !self.holding_since.is_empty()
            || recent(self.bad_packets.1)
            || recent(self.peer_drops.1)
    }

    /// The raised alarms, by name.
    pub fn active(&self) -> Vec<Alarm> {
        self.active.values().cloned().collect()
    }

    /// Re-evaluate every condition; returns what was raised and cleared.
    pub fn evaluate(&mut self, inputs: &Inputs) -> Vec<Change> {
        let now = inputs.now_ms;
        let t = self.thresholds.clone();
        let mut conditions: Vec<(&'static str, Option<String>)> = Vec::new();

        let both = |role: Role| inputs.my_role == Some(role) && inputs.peer_role == Some(role);
        let dual = self.lasting("dual_active", both(Role::Active), now, t.dead_interval_ms);
        conditions.push((
            "dual_active",
            dual.then(|| "this node and the peer are both active".to_string()),
        ));
        let idle = self.lasting("no_active", both(Role::Standby), now, t.dead_interval_ms);
        conditions.push((
            "no_active",
            idle.then(|| {
                "this node and the peer are both standby: nobody serves the floating IPs"
                    .to_string()
            }),
        ));

        if inputs.bad_packets > self.bad_packets.0 {
            self.bad_packets = (inputs.bad_packets, Some(now));
        }
        let recent = self
            .bad_packets
            .1
            .is_some_and(|at| now.saturating_sub(at) < t.bad_packet_quiet_ms);
        conditions.push((
            "bad_packets",
            recent.then(|| {
                format!(
                    "keepalives for this cluster with a wrong key or from an unknown sender ({} dropped so far): another speaker uses this cluster id, or a node has the wrong key",
                    inputs.bad_packets
                )
            }),
        ));

        if inputs.peer_drops > self.peer_drops.0 {
            self.peer_drops = (inputs.peer_drops, Some(now));
        }
        let recent = self
            .peer_drops
            .1
            .is_some_and(|at| now.saturating_sub(at) < t.bad_packet_quiet_ms);
        conditions.push((
            "peer_bad_packets",
            recent.then(|| {
                format!(
                    "keepalives replayed with the peer's name or malformed from the peer's address ({} dropped so far): someone replays recorded keepalives, the peer came back with a lower incarnation (lost node.state_dir and a clock behind: check NTP), or a broken sender uses the peer's address",
                    inputs.peer_drops
                )
            }),
        ));

        conditions.push((
            "version_mismatch",
            inputs
                .version_mismatch
                .as_ref()
                .map(|v| format!("peer runs {v}, this node {}", crate::version::VERSION)),
        ));
        conditions.push(("config_mismatch", inputs.config_mismatch.clone()));
        conditions.push((
            "takeover_slow",
            inputs
                .takeover_running_ms
                .filter(|ms| *ms > t.takeover_pending_ms)
                .map(|ms| {
                    format!(
                        "takeover running for {:.0} s (expected within {:.0} s)",
                        ms as f64 / 1000.0,
                        t.takeover_pending_ms as f64 / 1000.0
                    )
                }),
        ));
        conditions.push((
            "takeover_failing",
            inputs.takeover_error.as_ref().map(|e| {
                format!(
                    "the last takeover attempt failed, retrying: {}",
                    one_line(e)
                )
            }),
        ));
        conditions.push((
            "ip_unplaced",
            (!inputs.ips_unplaced.is_empty())
                .then(|| format!("on neither node: {}", inputs.ips_unplaced.join(", "))),
        ));
        conditions.push((
            "ip_duplicated",
            (!inputs.ips_duplicated.is_empty())
                .then(|| format!("on both NICs: {}", inputs.ips_duplicated.join(", "))),
        ));

        let mut lossy = Vec::new();
        let mut slow = Vec::new();
        for path in &inputs.paths {
            if let Some(loss) = self.windowed_loss(path, now) {
                if loss > t.max_loss_percent {
                    lossy.push(format!("{} {loss:.1}%", path.name));
                }
            }
            if let Some(rtt) = path.rtt_ms.filter(|r| *r > t.max_rtt_ms) {
                slow.push(format!("{} {rtt:.1} ms", path.name));
            }
        }
        conditions.push((
            "keepalive_loss",
            (!lossy.is_empty()).then(|| {
                format!(
                    "keepalive loss over {}% in the last {} s: {}",
                    t.max_loss_percent,
                    LOSS_WINDOW_MS / 1000,
                    lossy.join(", ")
                )
            }),
        ));
        conditions.push((
            "keepalive_rtt",
            (!slow.is_empty()).then(|| {
                format!(
                    "keepalive round trip over {} ms: {}",
                    t.max_rtt_ms,
                    slow.join(", ")
                )
            }),
        ));
        conditions.push((
            "clock_skew",
            inputs
                .clock_skew_ms
                .filter(|s| s.unsigned_abs() > t.max_clock_skew_ms)
                .map(|s| format!("clocks differ by {s} ms: check NTP on both nodes")),
        ));

        conditions.push((
            "track_failing",
            (!inputs.tracks_failing.is_empty()).then(|| {
                format!(
                    "tracked check failing: {}",
                    inputs.tracks_failing.join("; ")
                )
            }),
        ));

        let mut changes = Vec::new();
        for (name, detail) in conditions {
            match (detail, self.active.contains_key(name)) {
                (Some(detail), false) => {
                    self.active.insert(
                        name,
                        Alarm {
                            name: name.into(),
                            detail: detail.clone(),
                            since_ms: now,
                        },
                    );
                    changes.push(Change::Raised { name, detail });
                }
                (Some(detail), true) => {
                    if let Some(alarm) = self.active.get_mut(name) {
                        alarm.detail = detail;
                    }
                }
                (None, true) => {
                    if let Some(alarm) = self.active.remove(name) {
                        changes.push(Change::Cleared {
                            name,
                            detail: alarm.detail,
                        });
                    }
                }
                (None, false) => {}
            }
        }
        changes
    }

    /// Whether `condition` has held for longer than `min_ms`.
    fn lasting(&mut self, name: &'static str, condition: bool, now: u64, min_ms: u64) -> bool {
        if !condition {
            self.holding_since.remove(name);
            return false;
        }
        let since = *self.holding_since.entry(name).or_insert(now);
        now.saturating_sub(since) > min_ms
    }

    /// Loss over the last window on `path`, once the window saw enough packets.
    fn windowed_loss(&mut self, path: &PathSample, now: u64) -> Option<f64> {
        let history = self.history.entry(path.name.clone()).or_default();
        history.push_back((now, path.received, path.lost));
        while history
            .front()
            .is_some_and(|(at, _, _)| now.saturating_sub(*at) > LOSS_WINDOW_MS)
        {
            history.pop_front();
        }
        let &(_, received0, lost0) = history.front()?;
        let received = path.received.saturating_sub(received0);
        let lost = path.lost.saturating_sub(lost0);
        let total = received + lost;
        (total >= LOSS_MIN_PACKETS).then(|| lost as f64 * 100.0 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            dead_interval_ms: 500,
            max_loss_percent: 5.0,
            max_rtt_ms: 100.0,
            max_clock_skew_ms: 2000,
            takeover_pending_ms: 60_000,
            bad_packet_quiet_ms: 30_000,
        }
    }

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Raised { name, .. } => format!("+{name}"),
                Change::Cleared { name, .. } => format!("-{name}"),
            })
            .collect()
    }

    #[test]
    fn dual_active_needs_to_last_longer_than_the_dead_interval_and_clears() {
        let mut alarms = Alarms::new(thresholds());
        let mut inputs = Inputs {
            my_role: Some(Role::Active),
            peer_role: Some(Role::Active),
            ..Inputs::default()
        };
        for now in [0, 300, 500] {
            inputs.now_ms = now;
            assert!(alarms.evaluate(&inputs).is_empty(), "at {now}");
        }
        inputs.now_ms = 501;
        assert_eq!(names(&alarms.evaluate(&inputs)), ["+dual_active"]);
        inputs.now_ms = 600;
        inputs.peer_role = Some(Role::Standby);
        assert_eq!(names(&alarms.evaluate(&inputs)), ["-dual_active"]);
        assert!(alarms.active().is_empty());
    }

    #[test]
    fn watching_while_a_condition_holds_or_is_raised_and_quiet_otherwise() {
        let mut alarms = Alarms::new(thresholds());
        let mut inputs = Inputs {
            my_role: Some(Role::Active),
            peer_role: Some(Role::Standby),
            ..Inputs::default()
        };
        alarms.evaluate(&inputs);
        assert!(
            !alarms.watching(0),
            "a healthy pair is evaluated at the slow pace"
        );
        inputs.peer_role = Some(Role::Active);
        inputs.now_ms = 100;
        alarms.evaluate(&inputs);
        assert!(
            alarms.watching(100),
            "dual active building up: not raised yet"
        );
        inputs.now_ms = 700;
        assert_eq!(names(&alarms.evaluate(&inputs)), ["+dual_active"]);
        assert!(alarms.watching(700));
        inputs.peer_role = Some(Role::Standby);
        inputs.now_ms = 800;
        alarms.evaluate(&inputs);
        assert!(!alarms.watching(800), "cleared");
        inputs.bad_packets = 1;
        alarms.evaluate(&inputs);
        assert!(alarms.watching(800), "bad packets arriving");
        inputs.now_ms = 800 + 30_000;
        assert_eq!(names(&alarms.evaluate(&inputs)), ["-bad_packets"]);
        assert!(!alarms.watching(inputs.now_ms), "quiet again");
    }

    #[test]
    fn bad_packets_raise_at_once_and_clear_after_a_quiet_period() {
        let mut alarms = Alarms::new(thresholds());
        let mut inputs = Inputs::default();
        assert!(alarms.evaluate(&inputs).is_empty());
        inputs.bad_packets = 3;
        inputs.now_ms = 1000;
        assert_eq!(names(&alarms.evaluate(&inputs)), ["+bad_packets"]);
        inputs.now_ms = 30_999;
        assert!(alarms.evaluate(&inputs).is_empty());
        inputs.now_ms = 31_000;
        assert_eq!(names(&alarms.evaluate(&inputs)), ["-bad_packets"]);
    }

    #[test]
    fn replayed_or_malformed_peer_packets_raise_an_alarm_that_clears_when_quiet() {
        let mut alarms = Alarms::new(thresholds());
        let mut inputs = Inputs {
            now_ms: 1000,
            ..Inputs::default()
        };
        assert!(!names(&alarms.evaluate(&inputs)).contains(&"+peer_bad_packets".to_string()));
        inputs.peer_drops = 3;
        inputs.now_ms = 2000;
        assert!(names(&alarms.evaluate(&inputs)).contains(&"+peer_bad_packets".to_string()));
        inputs.now_ms = 2000 + thresholds().bad_packet_quiet_ms + 1;
        assert!(names(&alarms.evaluate(&inputs)).contains(&"-peer_bad_packets".to_string()));
    }

    #[test]
    fn loss_is_measured_over_a_window_and_clears_when_the_link_heals() {
        let mut alarms = Alarms::new(thresholds());
        let mut path = PathSample {
            name: "lan".into(),
            ..PathSample::default()
        };
        let mut raised = Vec::new();
        // 10 s at 10 packets/s with 20% loss, then 20 s clean.
        for tick in 0..300u64 {
            let now = tick * 100;
            if tick < 100 && tick % 5 == 0 {
                path.lost += 1;
            } else {
                path.received += 1;
            }
            let inputs = Inputs {
                now_ms: now,
                paths: vec![path.clone()],
                ..Inputs::default()
            };
            for change in names(&alarms.evaluate(&inputs)) {
                raised.push((now, change));
            }
        }
        assert_eq!(raised.len(), 2, "{raised:?}");
        assert_eq!(raised[0].1, "+keepalive_loss");
        assert!(raised[0].0 < 2000, "{raised:?}");
        assert_eq!(raised[1].1, "-keepalive_loss");
        assert!((10_000..20_000).contains(&raised[1].0), "{raised:?}");
    }

    #[test]
    fn mismatches_slow_takeovers_placement_rtt_and_skew() {
        let mut alarms = Alarms::new(thresholds());
        let inputs = Inputs {
            now_ms: 1,
            version_mismatch: Some("0.2.0".into()),
            config_mismatch: Some("digests differ".into()),
            takeover_running_ms: Some(61_000),
            takeover_error: Some(
                "nic.put: HTTP 403 AuthorizationFailed: grant Microsoft.Network/networkInterfaces/write\non /subscriptions/s/.../nic-b"
                    .into(),
            ),
            ips_unplaced: vec!["10.0.1.100".into()],
            ips_duplicated: vec!["10.0.1.101".into()],
            paths: vec![PathSample {
                name: "lan".into(),
                rtt_ms: Some(250.0),
                ..PathSample::default()
            }],
            clock_skew_ms: Some(-5000),
            ..Inputs::default()
        };
        let mut got = names(&alarms.evaluate(&inputs));
        got.sort();
        assert_eq!(
            got,
            [
                "+clock_skew",
                "+config_mismatch",
                "+ip_duplicated",
                "+ip_unplaced",
                "+keepalive_rtt",
                "+takeover_failing",
                "+takeover_slow",
                "+version_mismatch"
            ]
        );
        let failing = alarms
            .active()
            .into_iter()
            .find(|a| a.name == "takeover_failing")
            .expect("takeover_failing");
        assert!(
            failing
                .detail
                .contains("networkInterfaces/write on /subscriptions"),
            "{}",
            failing.detail
        );
        let mut cleared = names(&alarms.evaluate(&Inputs {
            now_ms: 2,
            ..Inputs::default()
        }));
        cleared.sort();
        assert_eq!(cleared.len(), 8, "{cleared:?}");
        assert!(cleared.iter().all(|c| c.starts_with('-')));
    }
}
