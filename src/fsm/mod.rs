//! The HA state machine: a pure function of events and time.
//!
//! `Fsm::step(event, now)` takes one event and the current monotonic time in milliseconds and
//! returns the actions the daemon must carry out. It performs no I/O and never reads a clock,
//! so every decision can be replayed from a log (the golden tests in `tests/golden/` do exactly
//! that) and explored by property tests with simulated time.
//!
//! # Rules
//! - **Election**: when nobody is active, the higher `(priority, lower name)` becomes active.
//! - **Failure detection**: a standby takes over only when the peer has been silent on *every*
//!   path for the dead interval, or when the peer says it is leaving, faulty, in maintenance, or
//!   handing over.
//! - **Conflict**: if both nodes claim active, the higher `(epoch, priority, lower name)` keeps
//!   the role. The epoch grows on every takeover, so after a partition heals the node that took
//!   over most recently (and therefore holds the cloud resources) stays: one ownership change
//!   per partition, never ping-pong.
//! - **Preemption**: a higher-priority standby takes the role back only when preemption is on,
//!   the peer has been continuously healthy for the hold-down, and no takeover is in progress.
//! - **Maintenance / fault / switchover**: an active node hands over by advertising that it is
//!   yielding; it steps down when the peer has become active with a newer epoch (or, for
//!   maintenance and fault, when no peer can take over within the yield timeout).
//!
//! # Files
//! This file owns the types, the [`Fsm`] state, its read-only views, and [`Fsm::step`], the one
//! entry point, which dispatches each event to its rule family and then re-evaluates the role
//! (`evaluate`, which hands over to the election rules) and changes it (`transition`). The rule
//! families are `impl Fsm` blocks in their own files:
//! - `liveness`: which keepalives are believed (proof of liveness, held in flight, freshness)
//!   and the dead interval.
//! - `damping`: flap damping after losing the role against its will.
//! - `election`: election, preemption and hold-down, the epoch rule when both are active.
//! - `fencing`: reconcile reads, drift repair, and the fence set when the unheard peer took over.
//! - `takeover`: a takeover attempt's outcome and the retry back-off.
//! - `commands`: operator commands and leaving the active role (fault, maintenance).

use serde::{Deserialize, Serialize};

mod commands;
mod damping;
mod election;
mod fencing;
mod liveness;
mod takeover;

pub use damping::{DAMPED_DEAD_INTERVALS, DAMPING_CLEAN_DEAD_INTERVALS};
pub use liveness::PROOF_WINDOW_DEAD_INTERVALS;

use damping::Damping;
use liveness::LagReference;

/// Monotonic time in milliseconds (the daemon's clock since start; simulated in tests).
pub type Millis = u64;

/// The role a node plays, as advertised in every keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Just started: listening for the peer before deciding.
    Init,
    /// Healthy and ready to take over.
    Standby,
    /// Holds (or is taking) the floating IPs and routes.
    Active,
    /// Unhealthy (the provider cannot work, or a tracked check with the fault effect fails);
    /// never becomes active.
    Fault,
    /// Taken out of service by the operator; never becomes active.
    Maintenance,
}

impl Role {
    /// Lower-case name used in status, logs and hooks.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::Standby => "standby",
            Role::Active => "active",
            Role::Fault => "fault",
            Role::Maintenance => "maintenance",
        }
    }

    /// Wire encoding (one byte).
    pub fn to_byte(self) -> u8 {
        match self {
            Role::Init => 0,
            Role::Standby => 1,
            Role::Active => 2,
            Role::Fault => 3,
            Role::Maintenance => 4,
        }
    }

    /// Wire decoding; `None` for an unknown value.
    pub fn from_byte(byte: u8) -> Option<Role> {
        Some(match byte {
            0 => Role::Init,
            1 => Role::Standby,
            2 => Role::Active,
            3 => Role::Fault,
            4 => Role::Maintenance,
            _ => return None,
        })
    }
}

/// Static settings of the state machine, taken from the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsmConfig {
    /// This node's name (ties are broken by the lower name).
    pub node: String,
    /// The peer's name.
    pub peer: String,
    /// This node's priority.
    pub priority: u8,
    /// Whether a higher priority takes the role back.
    pub preempt: bool,
    /// How long the peer must be healthy before preempting.
    pub hold_down_ms: Millis,
    /// Silence on every path for this long means the peer is dead.
    pub dead_interval_ms: Millis,
    /// Number of keepalive paths.
    pub paths: usize,
    /// First retry delay after a failed takeover.
    pub retry_initial_ms: Millis,
    /// Longest retry delay.
    pub retry_max_ms: Millis,
}

impl FsmConfig {
    /// How long an active node waits for the peer to take over after it started yielding.
    pub fn yield_timeout_ms(&self) -> Millis {
        self.dead_interval_ms.saturating_mul(5).max(3_000)
    }
}

/// What the peer said in its last authenticated keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAdvert {
    /// The peer's role.
    pub role: Role,
    /// The peer's priority.
    pub priority: u8,
    /// The peer's epoch.
    pub epoch: u64,
    /// The peer is active and its takeover has not converged yet.
    #[serde(default)]
    pub takeover_in_progress: bool,
    /// The peer is active but asks to be relieved (switchover, maintenance, fault).
    #[serde(default)]
    pub yielding: bool,
    /// The peer is shutting down.
    #[serde(default)]
    pub leaving: bool,
    /// The peer is active in a term that began by a planned handover (preemption, operator
    /// switchover, or this node handing over or leaving): the node it relieved does not damp.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub planned: bool,
}

/// When the peer sent a keepalive, on the peer's own monotonic clock.
///
/// Paths can deliver late: a path that comes back flushes keepalives queued while it was down
/// (the kernel holds them while ARP resolves). Those are authentic and new on their path, but
/// older than what another path already delivered, so they must not overwrite the peer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SentAt {
    /// The peer's boot incarnation.
    pub incarnation: u64,
    /// The peer's monotonic send time in microseconds.
    pub at_us: u64,
}

/// Operator commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Hand the active role to the peer (or, on the standby, take it from a healthy peer).
    Switchover,
    /// Enter maintenance; `force` allows it on an active node with no peer to take over.
    MaintenanceOn {
        /// Leave even when nobody can take over.
        #[serde(default)]
        force: bool,
    },
    /// Leave maintenance.
    MaintenanceOff,
}

/// Everything that can happen to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An authenticated keepalive (not a replay on its path) arrived on `path`.
    Keepalive {
        /// Index of the path it arrived on.
        path: usize,
        /// What the peer said.
        advert: PeerAdvert,
        /// When the peer sent it, on the peer's clock; absent means "just now".
        #[serde(default)]
        sent: Option<SentAt>,
        /// The newest of this node's keepalives the peer had received when it sent this one:
        /// its send time on this node's clock (the FSM's, in microseconds). It proves the
        /// advert was sent after that time, with no clock sync. Absent means "just now".
        #[serde(default)]
        echo_us: Option<u64>,
    },
    /// Time passed; re-evaluate deadlines.
    Tick,
    /// The provider finished a takeover attempt.
    TakeoverFinished {
        /// The epoch the attempt was for.
        epoch: u64,
        /// Whether the cloud state converged.
        ok: bool,
        /// The error, if any.
        #[serde(default)]
        error: Option<String>,
    },
    /// The node's health changed: the provider's health check, or a tracked check with the
    /// fault effect (`[[track]]`).
    Health {
        /// Whether the node can serve.
        healthy: bool,
        /// Why (shown in status and in the transition's reason).
        reason: String,
    },
    /// The effective priority changed (a tracked check with a weight, see `[[track]]`).
    Priority {
        /// The new priority, 1..=255.
        priority: u8,
    },
    /// Reconcile read the cloud. `drift`: something is not on this node; `peer_holds`: a
    /// floating IP is on the peer's NIC or a route points at the peer.
    Observed {
        /// Some resource is held by the peer, by nobody, or by both.
        drift: bool,
        /// A floating IP or a route is on the peer.
        peer_holds: bool,
        /// An update this node did not make is still being applied to a resource the move
        /// touches (Azure: a NIC `Updating`): what the read shows may be half of someone
        /// else's move.
        #[serde(default)]
        write_in_flight: bool,
    },
    /// An operator command.
    Operator(Command),
    /// The daemon is stopping (SIGTERM): tell the peer.
    Shutdown,
}

/// What the daemon must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The role changed.
    Transition {
        /// Previous role.
        from: Role,
        /// New role.
        to: Role,
        /// Why, for the operator.
        reason: String,
    },
    /// Send a keepalive on every path now (the advert changed).
    Advertise,
    /// Ask the provider to take every resource for `epoch`.
    TakeOver {
        /// The epoch claimed.
        epoch: u64,
    },
    /// Abort a takeover still running (the role was lost meanwhile).
    CancelTakeover,
    /// Ask the provider to give up local resources.
    Release,
    /// An operator command was accepted.
    Accepted {
        /// The command.
        command: Command,
        /// What will happen.
        message: String,
    },
    /// An operator command was refused.
    Refused {
        /// The command.
        command: Command,
        /// Why, and what to do instead.
        message: String,
    },
}

/// Why an active node is asking the peer to take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum YieldReason {
    /// Operator switchover: stay active if nobody takes over.
    Switchover,
    /// Maintenance: leave even if nobody takes over.
    Maintenance,
    /// Unhealthy: leave even if nobody takes over.
    Fault,
}

/// Where the current takeover stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TakeoverState {
    /// Not active, or nothing to do.
    Idle,
    /// The provider is working on it since `since`.
    Running {
        /// When the attempt started.
        since: Millis,
    },
    /// The last attempt failed; try again at `at`.
    RetryAt {
        /// When to retry.
        at: Millis,
    },
    /// The cloud state converged.
    Done,
}

/// The last thing heard from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// Its advert.
    pub advert: PeerAdvert,
    /// When it arrived.
    pub at: Millis,
    /// This node's send time it echoed (see `Event::Keepalive`).
    pub echo_us: Option<u64>,
}

/// The state of one node's HA state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fsm {
    config: FsmConfig,
    role: Role,
    role_since: Millis,
    epoch: u64,
    started_at: Millis,
    last_heard: Vec<Option<Millis>>,
    peer: Option<PeerView>,
    /// Since when the peer has been active, alive and not taking over (the preemption clock).
    peer_settled_since: Option<Millis>,
    last_takeover_error: Option<String>,
    /// Send time of the freshest keepalive taken from the peer.
    peer_newest: Option<SentAt>,
    /// How late the peer's keepalives arrive, to spot one that sat in a queue (e.g. the
    /// sender's ARP queue while a link was down) and says what the peer was, not what it is.
    peer_lag: Option<LagReference>,
    healthy: bool,
    /// Why the node is unhealthy, while it is.
    #[serde(default)]
    unhealthy_reason: String,
    maintenance: bool,
    yielding: Option<(YieldReason, Millis)>,
    takeover: TakeoverState,
    retry_delay_ms: Millis,
    leaving: bool,
    /// Stepped down (at this time) because the cloud showed the (unheard) peer holding the
    /// floating IP: it took over across a keepalive partition. Silence no longer means "dead"
    /// until it is heard again.
    fenced_at: Option<Millis>,
    /// Lost the role against its will: silence must last longer before taking over again.
    damping: Option<Damping>,
    /// The current active term began by a planned handover (advertised as `planned`).
    #[serde(default)]
    planned_term: bool,
    /// When a reconcile first saw the peer, heard and not active, holding a floating IP or a
    /// route (see `on_observed`).
    peer_hold_seen_at: Option<Millis>,
    /// The previous reconcile found drift the unheard peer did not hold (see `on_observed`).
    unheard_drift_seen: bool,
}

impl Fsm {
    /// A node that starts at `now` in `Init`.
    pub fn new(config: FsmConfig, now: Millis) -> Fsm {
        let paths = config.paths.max(1);
        let retry = config.retry_initial_ms;
        Fsm {
            config,
            role: Role::Init,
            role_since: now,
            epoch: 0,
            started_at: now,
            last_heard: vec![None; paths],
            peer: None,
            peer_settled_since: None,
            last_takeover_error: None,
            peer_newest: None,
            peer_lag: None,
            healthy: true,
            unhealthy_reason: String::new(),
            maintenance: false,
            yielding: None,
            takeover: TakeoverState::Idle,
            retry_delay_ms: retry,
            leaving: false,
            fenced_at: None,
            damping: None,
            planned_term: false,
            peer_hold_seen_at: None,
            unheard_drift_seen: false,
        }
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current epoch (the highest seen or claimed).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The static settings.
    pub fn config(&self) -> &FsmConfig {
        &self.config
    }

    /// Since when the node has had its role.
    pub fn role_since(&self) -> Millis {
        self.role_since
    }

    /// The last advert heard from the peer.
    pub fn peer(&self) -> Option<PeerView> {
        self.peer
    }

    /// Where the takeover stands.
    pub fn takeover(&self) -> TakeoverState {
        self.takeover
    }

    /// The error of the last failed takeover attempt, until one succeeds.
    pub fn last_takeover_error(&self) -> Option<&str> {
        self.last_takeover_error.as_deref()
    }

    /// Whether the operator put this node in maintenance.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance
    }

    /// Whether the node is active and asking the peer to take over.
    pub fn yielding(&self) -> Option<YieldReason> {
        self.yielding.map(|(reason, _)| reason)
    }

    /// When each path last delivered a keepalive.
    pub fn last_heard(&self) -> &[Option<Millis>] {
        &self.last_heard
    }

    /// The advert this node sends in its keepalives.
    pub fn advert(&self) -> PeerAdvert {
        PeerAdvert {
            role: self.role,
            priority: self.config.priority,
            epoch: self.epoch,
            takeover_in_progress: self.role == Role::Active
                && matches!(
                    self.takeover,
                    TakeoverState::Running { .. } | TakeoverState::RetryAt { .. }
                ),
            yielding: self.yielding.is_some(),
            leaving: self.leaving,
            planned: self.role == Role::Active && self.planned_term,
        }
    }

    /// The next time a `Tick` could change something, if any.
    pub fn next_wakeup(&self) -> Option<Millis> {
        let mut times = Vec::new();
        match self.role {
            Role::Init => times.push(self.started_at.saturating_add(self.config.dead_interval_ms)),
            Role::Standby => {
                // A fenced node does not act on silence, so silence needs no wake-up.
                if self.fenced_at.is_none() {
                    times.push(self.peer_dead_at());
                }
                if let Some(at) = self.preempt_at() {
                    times.push(at);
                }
            }
            Role::Active => {
                if let TakeoverState::RetryAt { at } = self.takeover {
                    times.push(at);
                }
                if let Some((_, since)) = self.yielding {
                    times.push(since.saturating_add(self.config.yield_timeout_ms()));
                }
                // A yielding node also watches for the peer dying.
                if self.yielding.is_some() {
                    times.push(self.peer_dead_at());
                }
            }
            Role::Fault | Role::Maintenance => {}
        }
        times.into_iter().min()
    }

    /// Feed one event at time `now`; returns what the daemon must do, in order.
    pub fn step(&mut self, event: Event, now: Millis) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Keepalive {
                path,
                advert,
                sent,
                echo_us,
            } => {
                if !self.proves_liveness(echo_us, now) {
                    // A recording, or sent before it heard anything recent of ours: no action
                    // on it can be justified ("leaving", "handing over" or "active" alike).
                } else if self.held_in_flight(sent, now) {
                    // Neither believed nor counted as hearing the peer now: marking it alive
                    // would have the node decide on the advert it last believed, older still.
                } else if self.predates_fence(&advert, echo_us) {
                    // Neither believed nor counted, for the same reason.
                } else if self.is_fresh(sent) {
                    self.on_keepalive(path, advert, echo_us, now);
                } else if self.is_recent(sent) {
                    // Late but recent: the path works, the advert is outdated.
                    if let Some(slot) = self.last_heard.get_mut(path) {
                        *slot = Some(now);
                    }
                }
            }
            Event::Tick => {}
            Event::TakeoverFinished { epoch, ok, error } => {
                self.on_takeover_finished(epoch, ok, error, now)
            }
            Event::Health { healthy, reason } => {
                if !healthy {
                    self.unhealthy_reason = reason.clone();
                }
                if self.healthy != healthy {
                    self.healthy = healthy;
                    if !healthy {
                        self.begin_leaving_active(YieldReason::Fault, &reason, now, &mut out);
                    }
                }
            }
            Event::Priority { priority } => {
                let priority = priority.max(1);
                if self.config.priority != priority {
                    self.config.priority = priority;
                    // Elections and preemption compare the advertised priority: tell the peer.
                    out.push(Action::Advertise);
                }
            }
            Event::Observed {
                drift,
                peer_holds,
                write_in_flight,
            } => self.on_observed(drift, peer_holds, write_in_flight, now, &mut out),
            Event::Operator(command) => self.on_command(command, now, &mut out),
            Event::Shutdown => {
                if !self.leaving {
                    self.leaving = true;
                    out.push(Action::Advertise);
                }
            }
        }
        if !self.leaving {
            self.evaluate(now, &mut out);
        }
        out
    }

    /// Decide transitions from the current facts. Called after every event.
    fn evaluate(&mut self, now: Millis, out: &mut Vec<Action>) {
        let alive = self.peer_alive(now);
        if !alive {
            self.peer_settled_since = None;
        }
        let peer = if alive {
            self.peer.map(|p| p.advert)
        } else {
            None
        };
        match self.role {
            Role::Init | Role::Standby | Role::Fault | Role::Maintenance => {
                if !self.healthy {
                    if self.role != Role::Fault {
                        let reason = format!("unhealthy: {}", self.unhealthy_reason);
                        self.transition(Role::Fault, reason, now, out);
                    }
                    return;
                }
                if self.maintenance {
                    if self.role != Role::Maintenance {
                        self.transition(Role::Maintenance, "operator maintenance".into(), now, out);
                    }
                    return;
                }
                if matches!(self.role, Role::Fault | Role::Maintenance) {
                    let reason = if self.role == Role::Fault {
                        "healthy again"
                    } else {
                        "maintenance ended"
                    };
                    self.transition(Role::Standby, reason.into(), now, out);
                }
                self.evaluate_standby(peer, now, out);
            }
            Role::Active => self.evaluate_active(peer, now, out),
        }
    }

    fn become_active(&mut self, reason: &str, now: Millis, out: &mut Vec<Action>) {
        self.become_active_as(reason, false, now, out)
    }

    /// `planned`: the term begins by a planned handover (see `PeerAdvert::planned`).
    fn become_active_as(
        &mut self,
        reason: &str,
        planned: bool,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        self.planned_term = planned;
        let peer_epoch = self.peer.map(|p| p.advert.epoch).unwrap_or(0);
        self.epoch = self.epoch.max(peer_epoch).saturating_add(1);
        self.yielding = None;
        self.damping = None;
        self.retry_delay_ms = self.config.retry_initial_ms;
        self.takeover = TakeoverState::Running { since: now };
        let epoch = self.epoch;
        self.transition(Role::Active, format!("{reason} (epoch {epoch})"), now, out);
        out.push(Action::TakeOver { epoch });
    }

    fn step_down(&mut self, to: Role, reason: String, now: Millis, out: &mut Vec<Action>) {
        if matches!(self.takeover, TakeoverState::Running { .. }) {
            out.push(Action::CancelTakeover);
        }
        self.takeover = TakeoverState::Idle;
        self.yielding = None;
        self.transition(to, reason, now, out);
        out.push(Action::Release);
    }

    fn transition(&mut self, to: Role, reason: String, now: Millis, out: &mut Vec<Action>) {
        let from = self.role;
        self.role = to;
        self.role_since = now;
        self.peer_hold_seen_at = None;
        out.push(Action::Transition { from, to, reason });
        out.push(Action::Advertise);
        // A restarted node may still hold what its previous run claimed (a `kill -9` leaves the
        // address on the interface): start every non-active life from a clean slate.
        if from == Role::Init && to != Role::Active {
            out.push(Action::Release);
        }
    }
}
