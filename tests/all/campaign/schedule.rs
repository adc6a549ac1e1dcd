//! The seeded schedule: which faults a run applies, in which order, for how long.
//!
//! Everything random about a run is drawn here, from one `StdRng` seeded with the run's u64
//! seed, before anything starts: the same seed always gives the same schedule (printed on
//! failure), so a failing seed reproduces with `--seed N`.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::delay::DelaySpec;

/// NIC propagation of the emulated cloud outside `SlowPropagation` episodes.
pub const BASE_NIC_PROPAGATION_MS: u64 = 1000;

/// A role, resolved to a node when its episode starts (after the previous one settled, so
/// exactly one node is active then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Active,
    Standby,
}

/// Which keepalive paths a network fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paths {
    Lan,
    Mgmt,
    All,
}

/// Which direction of keepalive traffic a loss fault drops, seen from the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
    Both,
}

/// One fault the emulated cloud answers with (queued on the emulator, `times` uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloudFault {
    /// 429 `SubscriptionRequestsThrottled` (Retry-After 1) on NIC PUTs.
    Throttled,
    /// 409 `AnotherOperationInProgress` on NIC PUTs.
    Conflict,
    /// 412 `PreconditionFailed` on NIC PUTs.
    PreconditionFailed,
    /// 400 `PrivateIPAddressInUse` on NIC PUTs.
    PrivateIpInUse,
    /// 500 on operation polls.
    InternalError,
    /// 503 (Retry-After 1) on route PUTs.
    Unavailable,
    /// Answers to NIC GETs held this long (a slow ARM front door).
    SlowAnswer { ms: u64 },
    /// A NIC PUT held beyond the provider's 10 s request timeout: the client times out
    /// while the emulator still applies the write.
    Timeout,
    /// The IMDS token endpoint answers 500.
    TokenFailure,
    /// The IMDS instance metadata answers 500.
    MetadataFailure,
    /// A NIC PUT is accepted but its operation ends `Failed` (the NIC rolls back).
    OperationFails,
}

impl CloudFault {
    /// How long an answer under this fault can be held, beyond the normal answer time.
    pub fn held_ms(self) -> u64 {
        match self {
            CloudFault::SlowAnswer { ms } => ms,
            CloudFault::Timeout => 11_000,
            _ => 0,
        }
    }
}

/// One fault of an episode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`, restarted after `restart_after_ms`; with `clock_offset_s` the new process
    /// runs in a time namespace whose CLOCK_MONOTONIC/BOOTTIME are shifted by that much.
    Kill {
        who: Who,
        restart_after_ms: u64,
        clock_offset_s: Option<i64>,
    },
    /// `kill -9` of the active node, then of the standby in the middle of its takeover: on
    /// arrival of its ARM request number `after_writes` counted from its first write (0 = the
    /// first PUT itself), counting only requests whose path contains `on_path` if set.
    /// Both restart after `restart_after_ms`.
    KillDuringTakeover {
        after_writes: u32,
        restart_after_ms: u64,
        on_path: Option<&'static str>,
    },
    /// Keepalives on `paths` dropped (`silent`: by a firewall rule, the link stays up) or
    /// the links set down (carrier loss). `Paths::All` is a partition: both nodes still
    /// reach the cloud API.
    Cut {
        who: Who,
        paths: Paths,
        silent: bool,
    },
    /// Random loss of `percent` of the keepalives in `direction` on every path.
    Loss {
        who: Who,
        direction: Direction,
        percent: u32,
    },
    /// The node's LAN link goes down and up every `period_ms` (mgmt stays up unless `all`).
    Flap { who: Who, period_ms: u64, all: bool },
    /// Queued on the emulated cloud, for `times` matching calls.
    Cloud { fault: CloudFault, times: usize },
    /// NIC updates take this long to propagate during the episode.
    SlowPropagation { nic_ms: u64 },
    /// The keepalives `who` receives, on every path, arrive `spec.delay_ms` ± `spec.jitter_ms`
    /// late (uniform per datagram, so they can be reordered); `both_ways`: the peer's too.
    Delay {
        who: Who,
        both_ways: bool,
        spec: DelaySpec,
    },
}

impl Fault {
    pub fn kills(&self) -> bool {
        matches!(self, Fault::Kill { .. } | Fault::KillDuringTakeover { .. })
    }

    /// A short label for the one-line result.
    pub fn label(&self) -> String {
        let who = |w: &Who| match w {
            Who::Active => "active",
            Who::Standby => "standby",
        };
        match self {
            Fault::Kill {
                who: w,
                clock_offset_s: Some(s),
                ..
            } => format!("kill({})+clock{s:+}s", who(w)),
            Fault::Kill { who: w, .. } => format!("kill({})", who(w)),
            Fault::KillDuringTakeover { after_writes, .. } => {
                format!("kill-mid-takeover(write+{after_writes})")
            }
            Fault::Cut {
                paths: Paths::All,
                silent,
                ..
            } => format!("partition({})", if *silent { "silent" } else { "carrier" }),
            Fault::Cut {
                who: w,
                paths,
                silent,
            } => format!(
                "cut({},{paths:?},{})",
                who(w),
                if *silent { "silent" } else { "carrier" }
            ),
            Fault::Loss {
                who: w,
                direction,
                percent,
            } => format!("loss({},{direction:?},{percent}%)", who(w)),
            Fault::Flap {
                who: w,
                period_ms,
                all,
            } => format!(
                "flap({},{}{period_ms}ms)",
                who(w),
                if *all { "all," } else { "" }
            ),
            Fault::Cloud { fault, times } => format!("{fault:?}x{times}"),
            Fault::SlowPropagation { nic_ms } => format!("propagation{nic_ms}ms"),
            Fault::Delay {
                who: w,
                both_ways,
                spec,
            } => format!(
                "delay({},{}±{}ms)",
                if *both_ways { "both" } else { who(w) },
                spec.delay_ms,
                spec.jitter_ms
            ),
        }
    }
}

/// Faults applied together for `hold_ms`, then healed; the run then waits for the pair to
/// settle before the next episode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    pub faults: Vec<Fault>,
    pub hold_ms: u64,
}

impl Episode {
    pub fn kills(&self) -> bool {
        self.faults.iter().any(Fault::kills)
    }

    /// The NIC propagation in effect during the episode.
    pub fn nic_propagation_ms(&self) -> u64 {
        self.faults
            .iter()
            .find_map(|f| match f {
                Fault::SlowPropagation { nic_ms } => Some(*nic_ms),
                _ => None,
            })
            .unwrap_or(BASE_NIC_PROPAGATION_MS)
    }

    /// The longest an answer can be held by a cloud fault of this episode.
    pub fn held_ms(&self) -> u64 {
        self.faults
            .iter()
            .filter_map(|f| match f {
                Fault::Cloud { fault, .. } => Some(fault.held_ms()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    pub fn label(&self) -> String {
        let faults: Vec<String> = self.faults.iter().map(Fault::label).collect();
        format!("{}@{}ms", faults.join("+"), self.hold_ms)
    }
}

/// One run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    /// Azure: the daemons move the IP with the atomic `moveIpConfigurations` instead of the
    /// two-step NIC PUTs.
    pub atomic_move: bool,
    pub episodes: Vec<Episode>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule of seed {} ({} move):",
            self.seed,
            if self.atomic_move {
                "atomic"
            } else {
                "two-step"
            }
        )?;
        for (i, e) in self.episodes.iter().enumerate() {
            writeln!(f, "  episode {}: hold {} ms", i + 1, e.hold_ms)?;
            for fault in &e.faults {
                writeln!(f, "    {fault:?}")?;
            }
        }
        Ok(())
    }
}

impl Schedule {
    /// The schedule of `seed`, with up to `max_episodes` episodes. `allow_timeouts` admits the
    /// hung write past the 10 s request timeout (kept out of the short CI run for its length).
    pub fn generate(seed: u64, max_episodes: usize, allow_timeouts: bool) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        let count = rng.random_range(1..=max_episodes.max(1));
        let mut episodes: Vec<Episode> = (0..count)
            .map(|_| episode(&mut rng, allow_timeouts))
            .collect();
        // Drawn last, so that adding it left every earlier seed's faults as they were.
        let atomic_move = rng.random_bool(0.3);
        // Keepalive delay came after that, so it is drawn after it: a delay joins some
        // episodes, and sometimes makes one of its own.
        for e in &mut episodes {
            if rng.random_bool(0.25) {
                e.faults.push(delay(&mut rng));
            }
        }
        if episodes.len() < max_episodes && rng.random_bool(0.3) {
            episodes.push(Episode {
                faults: vec![delay(&mut rng)],
                hold_ms: rng.random_range(15..=50) * 100,
            });
        }
        Schedule {
            seed,
            atomic_move,
            episodes,
        }
    }

    pub fn label(&self) -> String {
        let e: Vec<String> = self.episodes.iter().map(Episode::label).collect();
        let atomic = if self.atomic_move { "[atomic] " } else { "" };
        format!("{atomic}{}", e.join(" | "))
    }

    /// The same schedule with what moto behind the fault proxy cannot do taken out: a
    /// mid-takeover kill becomes a kill of the active node (the proxy has no request hook),
    /// propagation delays and NIC-level cloud faults are dropped (moto applies at once).
    pub fn for_aws(mut self) -> Schedule {
        self.atomic_move = false;
        for e in &mut self.episodes {
            e.faults = std::mem::take(&mut e.faults)
                .into_iter()
                .filter_map(|f| match f {
                    Fault::KillDuringTakeover {
                        restart_after_ms, ..
                    } => Some(Fault::Kill {
                        who: Who::Active,
                        restart_after_ms,
                        clock_offset_s: None,
                    }),
                    Fault::SlowPropagation { .. } => None,
                    Fault::Cloud { fault, .. } if !fault.on_aws() => None,
                    other => Some(other),
                })
                .collect();
        }
        self
    }
}

impl CloudFault {
    /// Whether the AWS backend injects it (through the EC2 fault proxy).
    pub fn on_aws(self) -> bool {
        matches!(
            self,
            CloudFault::Throttled
                | CloudFault::InternalError
                | CloudFault::Unavailable
                | CloudFault::SlowAnswer { .. }
        )
    }
}

fn who(rng: &mut StdRng) -> Who {
    if rng.random_bool(0.5) {
        Who::Active
    } else {
        Who::Standby
    }
}

/// One episode: a primary fault (process or network), plus cloud faults and a slow
/// propagation now and then, which bite when the primary fault causes a takeover.
fn episode(rng: &mut StdRng, allow_timeouts: bool) -> Episode {
    let mut faults = vec![primary(rng)];
    let cloud_faults = rng.random_range(0..=3);
    for _ in 0..cloud_faults {
        faults.push(Fault::Cloud {
            fault: cloud_fault(rng, allow_timeouts),
            times: rng.random_range(1..=3),
        });
    }
    if rng.random_bool(0.25) {
        faults.push(Fault::SlowPropagation {
            nic_ms: rng.random_range(2..=4) * 1000,
        });
    }
    Episode {
        faults,
        hold_ms: rng.random_range(15..=50) * 100,
    }
}

fn primary(rng: &mut StdRng) -> Fault {
    match rng.random_range(0..100) {
        0..=19 => Fault::Kill {
            who: who(rng),
            restart_after_ms: rng.random_range(2..=30) * 100,
            clock_offset_s: None,
        },
        20..=27 => Fault::Kill {
            who: who(rng),
            restart_after_ms: rng.random_range(2..=20) * 100,
            // Up to a day ahead or an hour back (the machine has been up for longer).
            clock_offset_s: Some(if rng.random_bool(0.5) {
                rng.random_range(60..=86_400)
            } else {
                -rng.random_range(60..=3_600)
            }),
        },
        28..=42 => Fault::KillDuringTakeover {
            after_writes: rng.random_range(0..=10),
            restart_after_ms: rng.random_range(2..=20) * 100,
            on_path: None,
        },
        43..=60 => Fault::Cut {
            who: who(rng),
            paths: Paths::All,
            silent: rng.random_bool(0.7),
        },
        61..=68 => Fault::Cut {
            who: who(rng),
            paths: if rng.random_bool(0.5) {
                Paths::Lan
            } else {
                Paths::Mgmt
            },
            silent: rng.random_bool(0.5),
        },
        69..=80 => Fault::Loss {
            who: who(rng),
            direction: match rng.random_range(0..3) {
                0 => Direction::Inbound,
                1 => Direction::Outbound,
                _ => Direction::Both,
            },
            percent: [20, 50, 80, 100][rng.random_range(0..4)],
        },
        _ => Fault::Flap {
            who: who(rng),
            period_ms: rng.random_range(2..=15) * 100,
            all: rng.random_bool(0.3),
        },
    }
}

/// A keepalive delay: from a LAN's few milliseconds to beyond the dead interval (500 ms),
/// with a jitter of up to the delay.
fn delay(rng: &mut StdRng) -> Fault {
    let delay_ms = [20, 50, 100, 200, 300, 450, 700][rng.random_range(0..7)];
    let jitter_ms = [0, 10, 25, 50, 100, 200][rng.random_range(0..6)];
    Fault::Delay {
        who: who(rng),
        both_ways: rng.random_bool(0.5),
        spec: DelaySpec {
            delay_ms,
            jitter_ms: jitter_ms.min(delay_ms),
            seed: rng.random(),
        },
    }
}

fn cloud_fault(rng: &mut StdRng, allow_timeouts: bool) -> CloudFault {
    let kinds = if allow_timeouts { 11 } else { 10 };
    match rng.random_range(0..kinds) {
        0 => CloudFault::Throttled,
        1 => CloudFault::Conflict,
        2 => CloudFault::PreconditionFailed,
        3 => CloudFault::PrivateIpInUse,
        4 => CloudFault::InternalError,
        5 => CloudFault::Unavailable,
        6 => CloudFault::SlowAnswer {
            ms: rng.random_range(5..=30) * 100,
        },
        7 => CloudFault::TokenFailure,
        8 => CloudFault::MetadataFailure,
        9 => CloudFault::OperationFails,
        _ => CloudFault::Timeout,
    }
}

#[test]
fn campaign_schedule_is_a_function_of_the_seed() {
    let a = Schedule::generate(42, 4, true);
    assert_eq!(a, Schedule::generate(42, 4, true));
    // Different seeds give different schedules (over a few, at least one differs).
    assert!((43..48).any(|s| Schedule::generate(s, 4, true) != a));
    assert!((1..200).all(|s| {
        let n = Schedule::generate(s, 3, false).episodes.len();
        (1..=3).contains(&n)
    }));
}

/// The delay was added to the draw after the 1,000-schedule campaign: each seed keeps the
/// faults it had then, and only gains delays.
#[test]
fn campaign_delays_leave_each_seeds_other_faults_as_they_were() {
    let mut delayed = 0;
    for seed in 1..300 {
        let schedule = Schedule::generate(seed, 4, true);
        let mut rng = StdRng::seed_from_u64(seed);
        let count = rng.random_range(1..=4);
        let before: Vec<Episode> = (0..count).map(|_| episode(&mut rng, true)).collect();
        assert_eq!(schedule.atomic_move, rng.random_bool(0.3), "seed {seed}");
        assert!(schedule.episodes.len() >= before.len(), "seed {seed}");
        for (now, then) in schedule.episodes.iter().zip(&before) {
            let kept: Vec<&Fault> = now
                .faults
                .iter()
                .filter(|f| !matches!(f, Fault::Delay { .. }))
                .collect();
            assert_eq!(kept, then.faults.iter().collect::<Vec<_>>(), "seed {seed}");
            assert_eq!(now.hold_ms, then.hold_ms, "seed {seed}");
        }
        for extra in &schedule.episodes[before.len()..] {
            assert!(
                matches!(extra.faults.as_slice(), [Fault::Delay { .. }]),
                "seed {seed}: {extra:?}"
            );
        }
        delayed += usize::from(schedule.label().contains("delay("));
    }
    // About half the seeds get a delay somewhere.
    assert!(
        (60..240).contains(&delayed),
        "{delayed} of 299 seeds delayed"
    );
}
