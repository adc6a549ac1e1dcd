//! Running one seed's episodes: applying each fault, healing, waiting for the pair to
//! settle, with the invariants checked on every poll.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::delay::{DelayRelay, DelaySpec};
use super::faults::{self, KillAtRequest};
use super::invariants::{Monitor, Observation, NODES};
use super::schedule::{self, Episode, Fault, Paths, Who, BASE_NIC_PROPAGATION_MS};
use crate::e2e_local::{name, Pair};
use crate::netns::Node;

/// The timing the pair runs with (`e2e_local::Options::default()` and `e2e_azure`'s
/// `[failover]` section); the bounds below are computed from it.
const KEEPALIVE_INTERVAL_MS: u64 = 100;
const DEAD_INTERVAL_MS: u64 = 500;
const RETRY_MAX_MS: u64 = 2000;
const RECONCILE_INTERVAL_MS: u64 = 1000;
/// `Retry-After` of the emulated operations: one status poll per second.
const OPERATION_POLL_MS: u64 = 1000;
/// Scheduling, status polling and process start-up on a busy 2-core machine.
const SLACK_MS: u64 = 2000;
const POLL: Duration = Duration::from_millis(100);
/// How long the converged state must hold to count as stable.
const STABLE: Duration = Duration::from_secs(1);
/// How long past its bound a run waits to tell "late" from "stuck".
const STUCK_AFTER: Duration = Duration::from_secs(30);

/// After the faults stop, the pair must be converged within: detection (dead interval) +
/// start-up of a restarted daemon (one more dead interval to hear its peer) + the longest
/// retry backoff + a reconcile interval (drift found) + an answer a fault held + the NIC move
/// (an update still in flight, the removal, the add, and a failed operation rolled back:
/// 4 × propagation) + two operation polls + slack.
fn convergence_bound(e: &Episode) -> Duration {
    Duration::from_millis(
        2 * DEAD_INTERVAL_MS
            + RETRY_MAX_MS
            + RECONCILE_INTERVAL_MS
            + e.held_ms()
            + 4 * e.nic_propagation_ms()
            + 2 * OPERATION_POLL_MS
            + SLACK_MS,
    )
}

/// The floating IP may be on no NIC between the removal from one NIC and the add to the
/// other: the removal's propagation, the add's, a poll each, a retry backoff, slack.
fn nobody_bound(e: &Episode) -> Duration {
    Duration::from_millis(
        2 * e.nic_propagation_ms() + 2 * OPERATION_POLL_MS + RETRY_MAX_MS + SLACK_MS,
    )
}

pub(super) fn bound_formula() -> String {
    format!(
        "convergence bound = 2 x dead interval ({DEAD_INTERVAL_MS} ms) + retry_max ({RETRY_MAX_MS} ms) \
         + reconcile_interval ({RECONCILE_INTERVAL_MS} ms) + longest held answer + 4 x NIC propagation \
         + 2 x operation poll ({OPERATION_POLL_MS} ms) + slack ({SLACK_MS} ms); \
         no-NIC bound = 2 x NIC propagation + 2 x operation poll + retry_max + slack"
    )
}

/// A keepalive delay this small never silences a path for a dead interval: the gap as it
/// starts (one interval plus the longest hold) and the gap jitter can open between two
/// accepted keepalives (one interval plus twice the jitter) both stay a keepalive interval
/// short of it, room for scheduling on a busy machine.
fn harmless(spec: &DelaySpec) -> bool {
    let onset_gap = KEEPALIVE_INTERVAL_MS + spec.delay_ms + spec.jitter_ms;
    let jitter_gap = KEEPALIVE_INTERVAL_MS + 2 * spec.jitter_ms;
    onset_gap.max(jitter_gap) + KEEPALIVE_INTERVAL_MS < DEAD_INTERVAL_MS
}

/// How many separate partitions an episode makes: a link flapping on every path with
/// outages at least a dead interval long (minus one keepalive) makes one per outage, an
/// episode of nothing but harmless delays none, every other fault at most one.
fn partitions(e: &Episode) -> u32 {
    let only_harmless_delays = e
        .faults
        .iter()
        .all(|f| matches!(f, Fault::Delay { spec, .. } if harmless(spec)));
    if only_harmless_delays {
        return 0;
    }
    let flapping = e.faults.iter().find_map(|f| match f {
        Fault::Flap {
            period_ms,
            all: true,
            ..
        } if *period_ms + KEEPALIVE_INTERVAL_MS >= DEAD_INTERVAL_MS => Some(*period_ms),
        _ => None,
    });
    match flapping {
        Some(period) => e.hold_ms.div_ceil(2 * period) as u32,
        None => 1,
    }
}

/// A restart waiting for its time.
struct Restart {
    node: Node,
    at: Duration,
    clock_offset_s: Option<i64>,
}

/// One seed's run in progress.
pub(super) struct Run {
    pub(super) monitor: Monitor,
    start: Instant,
    /// Daemons we killed (or the hook killed) and have not restarted.
    down: [bool; 2],
    excused_until: Duration,
    /// The victim of an armed mid-takeover kill, the hook, and the victim's restart delay.
    hook: Option<(Node, Arc<Mutex<KillAtRequest>>, Duration)>,
    restarts: Vec<Restart>,
    /// Keepalive delays of the current episode (dropping one ends it).
    delays: Vec<DelayRelay>,
    /// Per episode: convergence time and bound.
    pub(super) converged: Vec<(Duration, Duration)>,
    /// Where each mid-takeover kill fired (for the result line).
    pub(super) fired: Vec<String>,
    // Dropped in this order: the daemons (pair) before the cloud's runtime.
    pub(super) pair: Pair,
    pub(super) cloud: Box<dyn Backend>,
}

fn slot(node: Node) -> usize {
    match node {
        Node::A => 0,
        _ => 1,
    }
}

impl Run {
    /// A run on a started pair; `first` is the converged state before any fault.
    pub(super) fn new(pair: Pair, cloud: Box<dyn Backend>, first: &Observation) -> Run {
        Run {
            monitor: Monitor::new(first),
            start: Instant::now(),
            down: [false; 2],
            excused_until: Duration::ZERO,
            hook: None,
            restarts: Vec::new(),
            delays: Vec::new(),
            converged: Vec::new(),
            fired: Vec::new(),
            pair,
            cloud,
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn observe(&mut self, nobody_bound: Duration) -> Observation {
        let now = self.now();
        for node in NODES {
            if self.down[slot(node)] {
                continue;
            }
            if let Ok(Some(status)) = self.pair.daemon(node).try_wait() {
                self.down[slot(node)] = true;
                let by_hook = self.hook.as_ref().and_then(|(victim, h, after)| {
                    let fired = h.lock().unwrap_or_else(|e| e.into_inner()).fired.clone();
                    (*victim == node)
                        .then_some(fired)
                        .flatten()
                        .map(|f| (f, *after))
                });
                match by_hook {
                    Some((at, restart_after)) => {
                        // Attributed: the hook has done its one kill.
                        self.hook = None;
                        self.fired
                            .push(at.split(" (").next().unwrap_or(&at).to_string());
                        self.monitor
                            .note(now, format!("{} killed mid-takeover at {at}", name(node)));
                        self.restarts.push(Restart {
                            node,
                            at: now + restart_after,
                            clock_offset_s: None,
                        });
                    }
                    None => self
                        .monitor
                        .fail(now, format!("{} exited on its own ({status})", name(node))),
                }
            }
        }
        let sockets = [self.pair.socket(Node::A), self.pair.socket(Node::B)];
        let obs = Observation::take(
            self.cloud.as_ref(),
            [sockets[0].as_path(), sockets[1].as_path()],
            now,
        );
        self.monitor.observe(&obs, self.excused_until, nobody_bound);
        obs
    }

    fn kill(&mut self, node: Node) {
        if let Err(e) = self.pair.daemon(node).kill9() {
            self.monitor
                .fail(self.now(), format!("kill -9 {}: {e}", name(node)));
        }
        self.down[slot(node)] = true;
        let now = self.now();
        self.monitor.note(now, format!("kill -9 {}", name(node)));
    }

    fn restart(&mut self, node: Node, clock_offset_s: Option<i64>) {
        // Reaps a process the hook killed; a no-op for one already reaped.
        let _ = self.pair.daemon(node).kill9();
        match clock_offset_s {
            Some(offset) => {
                let offset = faults::clamp_clock_offset(offset);
                let wrapper = faults::time_namespace_wrapper(offset);
                let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
                self.pair.spawn_wrapped(node, &wrapper);
                let now = self.now();
                self.monitor.note(
                    now,
                    format!(
                        "restart {} with its monotonic clock {offset:+} s off",
                        name(node)
                    ),
                );
            }
            None => {
                self.pair.spawn(node);
                let now = self.now();
                self.monitor.note(now, format!("restart {}", name(node)));
            }
        }
        self.down[slot(node)] = false;
    }

    fn due_restarts(&mut self, all: bool) {
        let now = self.now();
        let (due, later): (Vec<Restart>, Vec<Restart>) = std::mem::take(&mut self.restarts)
            .into_iter()
            .partition(|r| all || r.at <= now);
        self.restarts = later;
        for r in due {
            if self.down[slot(r.node)] {
                self.restart(r.node, r.clock_offset_s);
            }
        }
    }

    fn pace(&self, tick: Instant) {
        let spent = tick.elapsed();
        if spent < POLL {
            std::thread::sleep(POLL - spent);
        }
    }

    pub(super) fn run_episode(&mut self, number: usize, episode: &Episode) {
        let label = episode.label();
        let nobody = nobody_bound(episode);
        self.monitor.start_episode();
        let first = self.observe(nobody);
        let Some(active) = first.converged() else {
            self.monitor.fail(
                first.at,
                format!(
                    "episode {number} starts without a converged pair: {}",
                    first.describe()
                ),
            );
            return;
        };
        let now = self.now();
        self.monitor.note(
            now,
            format!("episode {number}: {label} (active {})", name(active)),
        );
        let flap = self.apply(episode, active);
        let cloud_faults = episode
            .faults
            .iter()
            .any(|f| matches!(f, Fault::Cloud { .. }));
        self.hold(episode, flap, cloud_faults, nobody);
        let healed = self.heal(nobody);
        if cloud_faults || episode.kills() {
            self.excused_until = healed;
        }
        self.settle(number, episode, healed, nobody);
        let now = self.now();
        self.monitor.check_logs(now, &self.pair.logs());
        if !episode.kills() {
            self.monitor
                .check_no_ping_pong(now, &label, partitions(episode));
        }
    }

    /// Applies the episode's faults; returns the flapping link to drive, if any.
    fn apply(&mut self, episode: &Episode, active: Node) -> Option<(Node, Duration, bool)> {
        let standby = if active == Node::A { Node::B } else { Node::A };
        let of = |w: Who| match w {
            Who::Active => active,
            Who::Standby => standby,
        };
        self.cloud.set_nic_propagation(episode.nic_propagation_ms());
        let mut flap = None;
        for fault in &episode.faults {
            match fault {
                Fault::Cloud { fault, times } => {
                    if !self.cloud.inject(*fault, *times) {
                        let now = self.now();
                        let backend = self.cloud.name();
                        self.monitor
                            .note(now, format!("{fault:?}: not injectable on {backend}"));
                    }
                }
                Fault::SlowPropagation { .. } => {}
                Fault::Kill {
                    who,
                    restart_after_ms,
                    clock_offset_s,
                } => {
                    let node = of(*who);
                    self.kill(node);
                    self.restarts.push(Restart {
                        node,
                        at: self.now() + Duration::from_millis(*restart_after_ms),
                        clock_offset_s: *clock_offset_s,
                    });
                }
                Fault::KillDuringTakeover {
                    after_writes,
                    restart_after_ms,
                    on_path,
                } => {
                    let pid = self.pair.daemon(standby).pid();
                    let restart_after = Duration::from_millis(*restart_after_ms);
                    let hook =
                        self.cloud
                            .arm_kill(standby, on_path.unwrap_or(""), pid, *after_writes);
                    self.hook = hook.map(|h| (standby, h, restart_after));
                    self.kill(active);
                    self.restarts.push(Restart {
                        node: active,
                        at: self.now() + restart_after,
                        clock_offset_s: None,
                    });
                }
                Fault::Cut { who, paths, silent } => self.cut(of(*who), *paths, *silent),
                Fault::Loss {
                    who,
                    direction,
                    percent,
                } => faults::impair(&self.pair.topo, of(*who), Paths::All, *direction, *percent)
                    .expect("apply loss"),
                Fault::Flap {
                    who,
                    period_ms,
                    all,
                } => flap = Some((of(*who), Duration::from_millis(*period_ms), *all)),
                Fault::Delay {
                    who,
                    both_ways,
                    spec,
                } => {
                    let node = of(*who);
                    let peer = if node == active { standby } else { active };
                    let nodes = if *both_ways {
                        vec![node, peer]
                    } else {
                        vec![node]
                    };
                    for (i, n) in nodes.into_iter().enumerate() {
                        let spec = DelaySpec {
                            seed: spec.seed.wrapping_add(i as u64),
                            ..*spec
                        };
                        let relay =
                            DelayRelay::start(&self.pair.topo, n, spec).expect("apply delay");
                        self.delays.push(relay);
                    }
                }
            }
        }
        flap
    }

    /// Keepalives on `paths` dropped (`silent`) or the links down.
    fn cut(&self, node: Node, paths: Paths, silent: bool) {
        let topo = &self.pair.topo;
        if silent {
            faults::impair(topo, node, paths, schedule::Direction::Both, 100).expect("silent cut");
            return;
        }
        if matches!(paths, Paths::Lan | Paths::All) {
            topo.set_lan(node, false).expect("lan down");
        }
        if matches!(paths, Paths::Mgmt | Paths::All) {
            topo.set_mgmt(false).expect("mgmt down");
        }
    }

    /// Holds the faults for the episode's time: flaps the link, restarts killed daemons when
    /// due, polls.
    fn hold(
        &mut self,
        episode: &Episode,
        flap: Option<(Node, Duration, bool)>,
        cloud_faults: bool,
        nobody: Duration,
    ) {
        let hold_start = Instant::now();
        let hold = Duration::from_millis(episode.hold_ms);
        let mut link_down = false;
        while hold_start.elapsed() < hold {
            let tick = Instant::now();
            if let Some((node, period, all)) = flap {
                let down =
                    (hold_start.elapsed().as_millis() / period.as_millis()).is_multiple_of(2);
                if down != link_down {
                    link_down = down;
                    self.pair.topo.set_lan(node, !down).expect("flap lan");
                    if all {
                        self.pair.topo.set_mgmt(!down).expect("flap mgmt");
                    }
                }
            }
            self.due_restarts(false);
            // The no-NIC clock runs while both daemons run and the cloud answers normally.
            if cloud_faults || self.down.iter().any(|d| *d) {
                self.excused_until = self.now();
            }
            self.observe(nobody);
            self.pace(tick);
        }
    }

    /// Every fault stops, every daemon runs again; returns when (run time).
    fn heal(&mut self, nobody: Duration) -> Duration {
        self.delays.clear();
        let topo = &self.pair.topo;
        for node in NODES {
            faults::clear_impairment(topo, node).expect("clear impairment");
            topo.set_lan(node, true).expect("lan up");
        }
        topo.set_mgmt(true).expect("mgmt up");
        self.cloud.clear_faults();
        self.cloud.set_nic_propagation(BASE_NIC_PROPAGATION_MS);
        self.cloud.disarm();
        // A victim that the hook has killed but whose exit was not yet seen is noticed here;
        // one killed by a hook call still running as it was disarmed counts as killed too.
        self.observe(nobody);
        if let Some((victim, hook, _)) = self.hook.take() {
            let fired = hook.lock().unwrap_or_else(|e| e.into_inner()).fired.clone();
            if let (Some(at), false) = (fired, self.down[slot(victim)]) {
                self.down[slot(victim)] = true;
                let now = self.now();
                self.fired
                    .push(at.split(" (").next().unwrap_or(&at).to_string());
                self.monitor
                    .note(now, format!("{} killed mid-takeover at {at}", name(victim)));
            }
        }
        self.due_restarts(true);
        for node in NODES {
            if self.down[slot(node)] {
                self.restart(node, None);
            }
        }
        let healed = self.now();
        self.monitor.note(healed, "healed: faults stopped");
        healed
    }

    /// Waits for the converged state to hold for `STABLE`; checks it came within the bound.
    fn settle(&mut self, number: usize, episode: &Episode, healed: Duration, nobody: Duration) {
        let bound = convergence_bound(episode);
        let mut stable_since: Option<(Duration, Node)> = None;
        let converged_at = loop {
            let tick = Instant::now();
            let obs = self.observe(nobody);
            match (obs.converged(), stable_since) {
                (Some(n), Some((since, m))) if n == m => {
                    if obs.at.saturating_sub(since) >= STABLE {
                        break Some(since);
                    }
                }
                (Some(n), _) => stable_since = Some((obs.at, n)),
                (None, _) => stable_since = None,
            }
            if obs.at.saturating_sub(healed) > bound + STUCK_AFTER {
                self.monitor.fail(
                    obs.at,
                    format!(
                        "stuck: no stable state {:.0}s after the faults stopped (bound {:.1}s): {}",
                        (obs.at - healed).as_secs_f64(),
                        bound.as_secs_f64(),
                        obs.describe()
                    ),
                );
                break None;
            }
            self.pace(tick);
        };
        if let Some(at) = converged_at {
            let took = at.saturating_sub(healed);
            self.converged.push((took, bound));
            if took > bound {
                self.monitor.fail(
                    at,
                    format!(
                        "converged {:.1}s after the faults stopped, beyond the bound {:.1}s (episode {number})",
                        took.as_secs_f64(),
                        bound.as_secs_f64()
                    ),
                );
            }
        }
    }
}
