//! Property tests: two simulated nodes, each a real `Fsm`, joined by simulated links, driven
//! through random faults (link cuts, loss, crashes, slow and failing takeovers, operator
//! commands). Time is simulated in 10 ms steps, so every run is deterministic for its seed.
//!
//! Invariants:
//! - once the faults stop, exactly one node is active within a bound, and stays active;
//! - while the nodes hear each other, both are never active for longer than it takes one
//!   keepalive to arrive;
//! - a partition causes at most one ownership change.

use cloudha::fsm::{Action, Command, Event, Fsm, FsmConfig, Millis, PeerAdvert, Role};
use proptest::prelude::*;

const STEP: Millis = 10;
const INTERVAL: Millis = 100;
const DEAD: Millis = 500;
const LATENCY: Millis = 10;

/// A deterministic pseudo-random generator (xorshift), seeded by proptest.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Node {
    fsm: Fsm,
    config: FsmConfig,
    up: bool,
    next_send: Millis,
    /// (finishes at, epoch, ok) of the takeover the provider is working on.
    takeover: Option<(Millis, u64, bool)>,
    takeover_failures_left: u32,
    became_active: u32,
}

impl Node {
    fn new(config: FsmConfig, now: Millis) -> Node {
        Node {
            fsm: Fsm::new(config.clone(), now),
            config,
            up: true,
            next_send: now,
            takeover: None,
            takeover_failures_left: 0,
            became_active: 0,
        }
    }

    fn apply(&mut self, event: Event, now: Millis, rng: &mut Rng, max_takeover: Millis) -> bool {
        let mut advertise = false;
        for action in self.fsm.step(event, now) {
            match action {
                Action::TakeOver { epoch } => {
                    let fail = self.takeover_failures_left > 0;
                    self.takeover_failures_left = self.takeover_failures_left.saturating_sub(1);
                    self.takeover = Some((now + rng.below(max_takeover) + STEP, epoch, !fail));
                }
                Action::CancelTakeover => self.takeover = None,
                Action::Advertise => advertise = true,
                Action::Transition {
                    to: Role::Active, ..
                } => self.became_active += 1,
                _ => {}
            }
        }
        advertise
    }
}

struct Link {
    up: bool,
    loss_percent: u64,
}

struct Sim {
    nodes: [Node; 2],
    links: Vec<Link>,
    /// (deliver at, to node, path, advert)
    in_flight: Vec<(Millis, usize, usize, PeerAdvert)>,
    rng: Rng,
    now: Millis,
    max_takeover: Millis,
}

fn config(
    node: &str,
    peer: &str,
    priority: u8,
    preempt: bool,
    hold: Millis,
    paths: usize,
) -> FsmConfig {
    FsmConfig {
        node: node.into(),
        peer: peer.into(),
        priority,
        preempt,
        hold_down_ms: hold,
        dead_interval_ms: DEAD,
        paths,
        retry_initial_ms: 200,
        retry_max_ms: 1000,
    }
}

impl Sim {
    fn new(
        seed: u64,
        prio_a: u8,
        prio_b: u8,
        preempt: bool,
        hold: Millis,
        paths: usize,
        max_takeover: Millis,
    ) -> Sim {
        Sim {
            nodes: [
                Node::new(config("fw-a", "fw-b", prio_a, preempt, hold, paths), 0),
                Node::new(config("fw-b", "fw-a", prio_b, preempt, hold, paths), 0),
            ],
            links: (0..paths)
                .map(|_| Link {
                    up: true,
                    loss_percent: 0,
                })
                .collect(),
            in_flight: Vec::new(),
            rng: Rng(seed | 1),
            now: 0,
            max_takeover,
        }
    }

    fn send(&mut self, from: usize) {
        let advert = self.nodes[from].fsm.advert();
        for path in 0..self.links.len() {
            let link = &self.links[path];
            if link.up && !self.rng.chance(link.loss_percent) {
                self.in_flight
                    .push((self.now + LATENCY, 1 - from, path, advert));
            }
        }
    }

    /// Advance one step: deliver packets, finish provider calls, send keepalives, tick.
    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        let mut advertise = [false, false];
        let (due, later): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|p| p.0 <= now);
        self.in_flight = later;
        for (_, to, path, advert) in due {
            if self.nodes[to].up {
                let max = self.max_takeover;
                advertise[to] |= self.nodes[to].apply(
                    Event::Keepalive {
                        path,
                        advert,
                        sent: None,
                        echo_us: None,
                    },
                    now,
                    &mut self.rng,
                    max,
                );
            }
        }
        for (i, adv) in advertise.iter_mut().enumerate() {
            if !self.nodes[i].up {
                continue;
            }
            if let Some((at, epoch, ok)) = self.nodes[i].takeover {
                if at <= now {
                    self.nodes[i].takeover = None;
                    let max = self.max_takeover;
                    let error = (!ok).then(|| "injected".to_string());
                    *adv |= self.nodes[i].apply(
                        Event::TakeoverFinished { epoch, ok, error },
                        now,
                        &mut self.rng,
                        max,
                    );
                }
            }
            let max = self.max_takeover;
            *adv |= self.nodes[i].apply(Event::Tick, now, &mut self.rng, max);
            if *adv || now >= self.nodes[i].next_send {
                self.nodes[i].next_send = now + INTERVAL;
                self.send(i);
            }
        }
    }

    fn run_for(&mut self, duration: Millis, mut check: impl FnMut(&Sim)) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
            check(self);
        }
    }

    fn roles(&self) -> [Role; 2] {
        [self.nodes[0].fsm.role(), self.nodes[1].fsm.role()]
    }

    fn active_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.up && n.fsm.role() == Role::Active)
            .count()
    }

    fn command(&mut self, node: usize, command: Command) {
        let now = self.now;
        let max = self.max_takeover;
        if self.nodes[node].up
            && self.nodes[node].apply(Event::Operator(command), now, &mut self.rng, max)
        {
            self.send(node);
        }
    }

    fn restart(&mut self, node: usize) {
        let config = self.nodes[node].config.clone();
        let became = self.nodes[node].became_active;
        self.nodes[node] = Node::new(config, self.now);
        self.nodes[node].became_active = became;
    }
}

/// Apply one random fault.
fn random_fault(sim: &mut Sim) {
    let paths = sim.links.len() as u64;
    match sim.rng.below(8) {
        0 => {
            let p = sim.rng.below(paths) as usize;
            sim.links[p].up = !sim.links[p].up;
        }
        1 => {
            let p = sim.rng.below(paths) as usize;
            sim.links[p].loss_percent = sim.rng.below(40);
        }
        2 => {
            let n = sim.rng.below(2) as usize;
            if sim.nodes[n].up {
                sim.nodes[n].up = false;
            } else {
                sim.restart(n);
            }
        }
        3 => {
            let n = sim.rng.below(2) as usize;
            sim.command(n, Command::Switchover);
        }
        4 => {
            let n = sim.rng.below(2) as usize;
            let force = sim.rng.chance(50);
            sim.command(n, Command::MaintenanceOn { force });
        }
        5 => {
            let n = sim.rng.below(2) as usize;
            sim.command(n, Command::MaintenanceOff);
        }
        6 => {
            let n = sim.rng.below(2) as usize;
            sim.nodes[n].takeover_failures_left = sim.rng.below(3) as u32;
        }
        _ => {
            for link in &mut sim.links {
                link.up = false;
            }
        }
    }
}

/// End every fault: links clean, both nodes up, maintenance off.
fn heal(sim: &mut Sim) {
    for link in &mut sim.links {
        link.up = true;
        link.loss_percent = 0;
    }
    for n in 0..2 {
        if !sim.nodes[n].up {
            sim.restart(n);
        }
        sim.nodes[n].takeover_failures_left = 0;
        sim.command(n, Command::MaintenanceOff);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    /// After any fault schedule, the pair converges to exactly one active node and stays there;
    /// while they hear each other, both are never active for long.
    #[test]
    fn converges_to_one_active_and_never_stays_split(
        seed in any::<u64>(),
        prio_a in 1u8..=255,
        prio_b in 1u8..=255,
        preempt in any::<bool>(),
        hold in 200u64..2000,
        paths in 1usize..=2,
        max_takeover in 10u64..1500,
        faults in 0usize..25,
    ) {
        let mut sim = Sim::new(seed, prio_a, prio_b, preempt, hold, paths, max_takeover);
        sim.run_for(1000, |_| {});
        for _ in 0..faults {
            random_fault(&mut sim);
            let wait = 50 + sim.rng.below(800);
            sim.run_for(wait, |_| {});
        }
        heal(&mut sim);

        // Bound: dead interval (a restarted node's init wait) + yield timeout + takeover time
        // with retries + the hold-down, with margin.
        let bound = DEAD + 3_000 + 2 * max_takeover + 2_000 + hold + 1_000;
        let mut both_active_since: Option<Millis> = None;
        let mut worst_both_active = 0;
        sim.run_for(bound, |s| {
            if s.active_count() == 2 {
                let since = *both_active_since.get_or_insert(s.now);
                worst_both_active = worst_both_active.max(s.now - since);
            } else {
                both_active_since = None;
            }
        });
        prop_assert_eq!(sim.active_count(), 1, "roles {:?} after the convergence bound", sim.roles());
        prop_assert!(worst_both_active <= INTERVAL + LATENCY + STEP, "both active for {} ms on healthy links", worst_both_active);

        // Stable: no further change for a while.
        let settled = sim.roles();
        sim.run_for(hold + 3_000, |s| assert_eq!(s.roles(), settled, "role changed after convergence at {} ms", s.now));
    }

    /// A partition in which both nodes stay up causes at most one ownership change, and
    /// healing it causes none. (The hold-down is longer than the observation after healing:
    /// a preempting node taking the role back later is policy, not ping-pong.)
    #[test]
    fn partition_causes_at_most_one_ownership_change(
        seed in any::<u64>(),
        prio_a in 1u8..=255,
        prio_b in 1u8..=255,
        preempt in any::<bool>(),
        hold in 3_000u64..5_000,
        paths in 1usize..=2,
        max_takeover in 10u64..1500,
        partition in 600u64..10_000,
    ) {
        let mut sim = Sim::new(seed, prio_a, prio_b, preempt, hold, paths, max_takeover);
        // Settle first, past any preemption.
        sim.run_for(DEAD + hold + 2 * max_takeover + 2_000, |_| {});
        prop_assert_eq!(sim.active_count(), 1);
        let before: u32 = sim.nodes.iter().map(|n| n.became_active).sum();

        for link in &mut sim.links {
            link.up = false;
        }
        sim.run_for(partition, |_| {});
        for link in &mut sim.links {
            link.up = true;
        }
        sim.run_for(DEAD + 2_000, |_| {});
        let changes: u32 = sim.nodes.iter().map(|n| n.became_active).sum::<u32>() - before;
        prop_assert!(changes <= 1, "{} ownership changes for one partition", changes);
        prop_assert_eq!(sim.active_count(), 1, "roles {:?} after healing", sim.roles());
    }
}
