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

use serde::{Deserialize, Serialize};

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

/// The delivery lag of the keepalive last taken from the peer (see `Fsm::held_in_flight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct LagReference {
    incarnation: u64,
    /// Receive time (ours) minus send time (the peer's), µs: clock offset plus delay.
    lag_us: i128,
    /// Since when keepalives have been arriving much later than that.
    held_since: Option<Millis>,
}

/// While a node that lost the active role against its will (outranked by the peer after both
/// were active, or fenced) is damped, the peer counts as dead only after this many dead
/// intervals of silence. Without it, heavy random loss on every path (the fault campaign's 80 %
/// both ways) had the two nodes take the role from each other every few seconds: each run of
/// lost keepalives as long as a dead interval looks like a dead peer to whichever is standby.
pub const DAMPED_DEAD_INTERVALS: u64 = 3;
/// Damping ends once the peer has been heard without a gap (a silence longer than half a dead
/// interval) for this many dead intervals.
pub const DAMPING_CLEAN_DEAD_INTERVALS: u64 = 10;

/// A keepalive proves the peer alive now only when it echoes one of this node's own timestamps
/// sent within this many dead intervals (and of this boot: the link counts its timestamps from
/// a random per-boot offset, so a recording made in an earlier boot never matches). Anything
/// else may be a recording: it is neither believed nor counted as hearing the peer.
pub const PROOF_WINDOW_DEAD_INTERVALS: u64 = 10;

/// See [`DAMPED_DEAD_INTERVALS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Damping {
    /// Since when the peer has been heard without a gap.
    clean_since: Millis,
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

/// Whether a keepalive echoing `echo_us` (see `Event::Keepalive`) was sent after `at`: the
/// peer had then received one this node sent at `at` or later. Absent: sent just now.
fn sent_after(echo_us: Option<u64>, at: Millis) -> bool {
    echo_us.is_none_or(|echo| echo >= at.saturating_mul(1000))
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

    /// Whether the node stands by because the unheard peer took the floating IP.
    pub fn fenced(&self) -> bool {
        self.fenced_at.is_some()
    }

    /// Whether the node lost the role against its will recently and waits
    /// [`DAMPED_DEAD_INTERVALS`] of silence before taking over again.
    pub fn damped(&self) -> bool {
        let last = self.last_heard.iter().flatten().max().copied();
        self.damping.is_some_and(|d| {
            last.unwrap_or(d.clean_since).saturating_sub(d.clean_since)
                < self
                    .config
                    .dead_interval_ms
                    .saturating_mul(DAMPING_CLEAN_DEAD_INTERVALS)
        })
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

    /// Whether any path heard the peer within the dead interval.
    pub fn peer_alive(&self, now: Millis) -> bool {
        self.last_heard
            .iter()
            .flatten()
            .any(|&t| now.saturating_sub(t) < self.config.dead_interval_ms)
    }

    /// When the peer will be declared dead if nothing more is heard (paths never heard count
    /// from the node's start; a damped node waits longer).
    fn peer_dead_at(&self) -> Millis {
        let silence = if self.damped() {
            self.config
                .dead_interval_ms
                .saturating_mul(DAMPED_DEAD_INTERVALS)
        } else {
            self.config.dead_interval_ms
        };
        self.last_heard
            .iter()
            .map(|t| t.unwrap_or(self.started_at))
            .max()
            .unwrap_or(self.started_at)
            .saturating_add(silence)
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

    /// Whether a keepalive echoing `echo_us` (this node's send time, on the FSM's clock) proves
    /// the peer alive now: the echo is not from the future and within
    /// [`PROOF_WINDOW_DEAD_INTERVALS`]. Absent: "just now" (the daemon never sends an event
    /// without a matching echo; the link drops those as `unproven`).
    fn proves_liveness(&self, echo_us: Option<u64>, now: Millis) -> bool {
        let Some(echo) = echo_us else { return true };
        // `now` is whole milliseconds, truncated: the true time is up to 999 µs later. On a
        // sub-millisecond link an active node answering the standby at once echoes a packet
        // sent in the same millisecond; judged against the truncated clock it looked like an
        // echo from the future, and every answer was dropped until the standby took over.
        let latest_us = now.saturating_mul(1000).saturating_add(999);
        let window_us = self
            .config
            .dead_interval_ms
            .saturating_mul(PROOF_WINDOW_DEAD_INTERVALS)
            .saturating_mul(1000);
        echo <= latest_us && latest_us - echo <= window_us.saturating_add(999)
    }

    /// Delivered more than a dead interval later than the keepalive last taken from the same
    /// peer boot (comparing `receive time - send time`, which needs no clock sync): a burst
    /// released after a partition heals starts with adverts from its beginning (the peer still
    /// standby, say), newer than anything heard yet. Believing them made a fenced node win an
    /// election against a peer that had long taken over. Compared with the last keepalive taken,
    /// not the fastest ever, so that clock drift between the nodes never adds up; and a delay
    /// that stays high for a dead interval (a slower path, not a queue) becomes the reference.
    fn held_in_flight(&mut self, sent: Option<SentAt>, now: Millis) -> bool {
        let Some(sent) = sent else { return false };
        let lag_us = i128::from(now) * 1000 - i128::from(sent.at_us);
        let dead_us = i128::from(self.config.dead_interval_ms) * 1000;
        match &mut self.peer_lag {
            Some(r) if r.incarnation == sent.incarnation => {
                if lag_us - r.lag_us > dead_us {
                    let since = *r.held_since.get_or_insert(now);
                    if now.saturating_sub(since) <= self.config.dead_interval_ms {
                        return true;
                    }
                }
                r.lag_us = lag_us;
                r.held_since = None;
                false
            }
            // An older boot's keepalive is not fresh anyway; it does not move the reference.
            Some(r) if r.incarnation > sent.incarnation => false,
            _ => {
                self.peer_lag = Some(LagReference {
                    incarnation: sent.incarnation,
                    lag_us,
                    held_since: None,
                });
                false
            }
        }
    }

    /// A fenced node stood down because the cloud showed the peer holding what it had: an
    /// advert saying the peer is not active that may have been sent before then is not news.
    /// Keepalives delayed on their way (a slow or congested path: the fault campaign delays
    /// them by up to 700 ms) still said "standby" after the peer had taken over; believing
    /// one lifted the fence, and the node won an election it had just lost (AWS seed 225).
    /// An advert claiming "active" is believed: the epoch rule decides then.
    fn predates_fence(&self, advert: &PeerAdvert, echo_us: Option<u64>) -> bool {
        self.fenced_at
            .is_some_and(|at| advert.role != Role::Active && !sent_after(echo_us, at))
    }

    /// Sent no earlier than the freshest keepalive already taken (records it if so).
    fn is_fresh(&mut self, sent: Option<SentAt>) -> bool {
        let Some(sent) = sent else { return true };
        if self.peer_newest.is_some_and(|newest| sent < newest) {
            return false;
        }
        self.peer_newest = Some(sent);
        true
    }

    /// Sent by the peer's current boot within a dead interval of its freshest keepalive.
    fn is_recent(&self, sent: Option<SentAt>) -> bool {
        match (sent, self.peer_newest) {
            (Some(sent), Some(newest)) => {
                sent.incarnation == newest.incarnation
                    && newest.at_us.saturating_sub(sent.at_us)
                        <= self.config.dead_interval_ms.saturating_mul(1000)
            }
            _ => true,
        }
    }

    fn on_keepalive(&mut self, path: usize, advert: PeerAdvert, echo_us: Option<u64>, now: Millis) {
        let settled = advert.role == Role::Active
            && !advert.takeover_in_progress
            && !advert.yielding
            && !advert.leaving;
        if !settled || !self.peer_alive(now) {
            self.peer_settled_since = None;
        }
        if settled && self.peer_settled_since.is_none() {
            self.peer_settled_since = Some(now);
        }
        self.track_damping(now);
        if let Some(slot) = self.last_heard.get_mut(path) {
            *slot = Some(now);
        }
        // Heard again: the keepalives decide from here on.
        self.fenced_at = None;
        self.peer = Some(PeerView {
            advert,
            at: now,
            echo_us,
        });
        // Adopt the highest epoch seen so the next takeover by either node is newer still. An
        // active node keeps its own until it steps down: the both-active comparison needs it.
        if self.role != Role::Active {
            self.epoch = self.epoch.max(advert.epoch);
        }
    }

    /// A keepalive was taken at `now`: a gap since the previous one restarts the clean period
    /// that ends damping; a clean period long enough ends it.
    fn track_damping(&mut self, now: Millis) {
        let previous = self.last_heard.iter().flatten().max().copied();
        let dead = self.config.dead_interval_ms;
        if let Some(d) = &mut self.damping {
            if previous.is_none_or(|p| now.saturating_sub(p) > dead / 2) {
                d.clean_since = now;
            } else if now.saturating_sub(d.clean_since)
                >= dead.saturating_mul(DAMPING_CLEAN_DEAD_INTERVALS)
            {
                self.damping = None;
            }
        }
    }

    /// Reconcile: repair drift on a settled active node, except where the peer holds a floating
    /// IP or route and claims it (alive and active: the epoch rule decides) or cannot be heard (it took
    /// over across a partition: taking it back would start a ping-pong, so stand by instead).
    ///
    /// A peer that is heard, not active, and holds something is repaired only once it has been
    /// heard again, still not active, in an advert sent after an earlier read already saw it
    /// holding. The two
    /// nodes' dead-interval clocks are up to a keepalive interval apart, so when a partition
    /// starts the peer can take over (and its route PUT land) while this node still counts the
    /// peer's last advert, "standby", as current: repairing then wrote against the peer's
    /// takeover and the route moved three times in one partition (fault campaign, Azure seed
    /// 81). One reconcile interval later the peer is either heard (it is active: the epoch rule;
    /// still standby: a leftover, repaired) or not (fenced).
    ///
    /// Drift the unheard peer does not hold is repaired on the second read in a row that
    /// finds it (see below).
    ///
    /// Nothing is repaired while a write this node did not make is in flight: the second read
    /// covers a peer's removal that lands within one reconcile interval, but an Azure NIC
    /// update can take minutes, and repairing against it moved the route three times in one
    /// partition (fault campaign, Azure seed 106). The count of reads starts again once the
    /// write has ended, so the peer's add that follows it is seen first.
    fn on_observed(
        &mut self,
        drift: bool,
        peer_holds: bool,
        write_in_flight: bool,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        let unheard_drift_seen = std::mem::take(&mut self.unheard_drift_seen);
        if !peer_holds {
            self.fenced_at = None;
        }
        if !peer_holds {
            self.peer_hold_seen_at = None;
        }
        if self.role != Role::Active
            || self.takeover != TakeoverState::Done
            || self.yielding.is_some()
            || !drift
        {
            return;
        }
        let peer = self.peer.filter(|_| self.peer_alive(now)).map(|p| p.advert);
        match peer {
            Some(p) if p.role == Role::Active => {}
            // Standing by for a peer that took over stays as it is; any repair waits.
            _ if write_in_flight && !(peer.is_none() && peer_holds) => {}
            None if peer_holds => {
                self.fenced_at = Some(now);
                self.damping = Some(Damping { clean_since: now });
                self.step_down(
                    Role::Standby,
                    "the floating IP or a route is on the peer and the peer is not heard: it took over across a keepalive partition; standing by until it is heard again".into(),
                    now,
                    out,
                );
            }
            Some(_) if peer_holds => {
                // Heard again since, in an advert the peer sent after that read: one merely
                // delivered since could have been sent before the peer took over.
                let heard_since = |seen: Millis| {
                    self.peer
                        .is_some_and(|v| v.at > seen && sent_after(v.echo_us, seen))
                };
                match self.peer_hold_seen_at {
                    Some(seen) if heard_since(seen) => {
                        self.peer_hold_seen_at = None;
                        self.repair(now, out);
                    }
                    _ => {
                        self.peer_hold_seen_at.get_or_insert(now);
                    }
                }
            }
            // Drift the unheard peer does not hold: an address on no NIC (Azure: the peer's
            // removal landed, its add not yet) or on both ENIs (AWS: reassigned, not yet
            // unassigned). The peer may be half way through a takeover across a partition, and
            // repairing now takes the address from under it: two moves in one partition (fault
            // campaign, Azure seeds 228 and 416, AWS seed 230). The next read shows the peer
            // holding it (fenced) or still nobody (repaired then, one reconcile later).
            None if !unheard_drift_seen => self.unheard_drift_seen = true,
            _ => self.repair(now, out),
        }
    }

    /// Take over again, in place, to put back what reconcile found elsewhere.
    fn repair(&mut self, now: Millis, out: &mut Vec<Action>) {
        self.takeover = TakeoverState::Running { since: now };
        out.push(Action::TakeOver { epoch: self.epoch });
        out.push(Action::Advertise);
    }

    fn on_takeover_finished(&mut self, epoch: u64, ok: bool, error: Option<String>, now: Millis) {
        // A result for an older claim, or after the role was lost, changes nothing.
        if self.role != Role::Active || epoch != self.epoch {
            return;
        }
        self.last_takeover_error = error;
        if ok {
            self.takeover = TakeoverState::Done;
            self.retry_delay_ms = self.config.retry_initial_ms;
        } else {
            self.takeover = TakeoverState::RetryAt {
                at: now.saturating_add(self.retry_delay_ms),
            };
            self.retry_delay_ms = self
                .retry_delay_ms
                .saturating_mul(2)
                .min(self.config.retry_max_ms);
        }
    }

    fn on_command(&mut self, command: Command, now: Millis, out: &mut Vec<Action>) {
        let peer_ready = self.peer_ready(now);
        let peer = self.config.peer.clone();
        match command {
            Command::Switchover => match self.role {
                Role::Active if self.yielding.is_some() => out.push(Action::Refused {
                    command,
                    message: "already handing over".into(),
                }),
                Role::Active if peer_ready => {
                    self.yielding = Some((YieldReason::Switchover, now));
                    out.push(Action::Advertise);
                    out.push(Action::Accepted {
                        command,
                        message: format!("handing the active role to {peer}"),
                    });
                }
                Role::Active => out.push(Action::Refused {
                    command,
                    message: format!(
                        "{peer} is not ready to take over ({}); fix the peer first",
                        self.peer_summary(now)
                    ),
                }),
                Role::Standby if self.peer_is_active_and_settled(now) => {
                    let note = if self.peer_wins_election_on_priority() {
                        format!("; {peer} has the higher priority and will take the role back after the hold-down if it preempts")
                    } else {
                        String::new()
                    };
                    out.push(Action::Accepted {
                        command,
                        message: format!("taking the active role from {peer}{note}"),
                    });
                    self.become_active_as("operator switchover", true, now, out);
                }
                _ => out.push(Action::Refused {
                    command,
                    message: format!(
                        "switchover needs one node active and the other standby; this node is {} and {}",
                        self.role.as_str(),
                        self.peer_summary(now)
                    ),
                }),
            },
            Command::MaintenanceOn { force } => {
                if self.maintenance {
                    out.push(Action::Accepted {
                        command,
                        message: "already in maintenance".into(),
                    });
                    return;
                }
                if self.role == Role::Active && !peer_ready && !force {
                    out.push(Action::Refused {
                        command,
                        message: format!(
                            "this node is active and {peer} cannot take over ({}); the floating IPs would be left unserved. Fix the peer, or use --force",
                            self.peer_summary(now)
                        ),
                    });
                    return;
                }
                self.maintenance = true;
                out.push(Action::Accepted {
                    command,
                    message: if self.role == Role::Active && peer_ready {
                        format!("handing over to {peer}, then entering maintenance")
                    } else {
                        "entering maintenance".into()
                    },
                });
                self.begin_leaving_active(YieldReason::Maintenance, "operator maintenance", now, out);
            }
            Command::MaintenanceOff => {
                if !self.maintenance {
                    out.push(Action::Refused {
                        command,
                        message: "not in maintenance".into(),
                    });
                    return;
                }
                self.maintenance = false;
                if self.yielding.map(|(r, _)| r) == Some(YieldReason::Maintenance) {
                    self.yielding = None;
                    out.push(Action::Advertise);
                }
                out.push(Action::Accepted {
                    command,
                    message: "leaving maintenance".into(),
                });
            }
        }
    }

    /// Fault or maintenance: an active node yields to a ready peer, or leaves at once if none.
    fn begin_leaving_active(
        &mut self,
        reason: YieldReason,
        why: &str,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        if self.role != Role::Active {
            return;
        }
        if self.peer_ready(now) {
            self.yielding = Some((reason, now));
            out.push(Action::Advertise);
        } else {
            let target = match reason {
                YieldReason::Fault => Role::Fault,
                _ => Role::Maintenance,
            };
            self.step_down(target, format!("{why}; no peer can take over"), now, out);
        }
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

    fn evaluate_standby(&mut self, peer: Option<PeerAdvert>, now: Millis, out: &mut Vec<Action>) {
        let Some(p) = peer else {
            let waited = now.saturating_sub(self.started_at);
            if self.role == Role::Init {
                if waited >= self.config.dead_interval_ms {
                    self.become_active(
                        &format!(
                            "no peer heard within the dead interval ({} ms) after start",
                            self.config.dead_interval_ms
                        ),
                        now,
                        out,
                    );
                }
            } else if now >= self.peer_dead_at() && self.fenced_at.is_none() {
                let reason = if self.damped() {
                    format!(
                        "peer silent on all {} path(s) for {DAMPED_DEAD_INTERVALS} dead intervals ({} ms; damped: this node lost the role lately)",
                        self.last_heard.len(),
                        self.config.dead_interval_ms.saturating_mul(DAMPED_DEAD_INTERVALS)
                    )
                } else {
                    format!(
                        "peer silent on all {} path(s) for the dead interval ({} ms)",
                        self.last_heard.len(),
                        self.config.dead_interval_ms
                    )
                };
                self.become_active(&reason, now, out);
            }
            return;
        };
        if p.leaving
            || matches!(p.role, Role::Fault | Role::Maintenance)
            || (p.role == Role::Active && p.yielding)
        {
            let why = if p.leaving {
                "peer is shutting down".to_string()
            } else if p.role == Role::Active {
                "peer is handing over".to_string()
            } else {
                format!("peer is in {}", p.role.as_str())
            };
            self.become_active_as(&why, true, now, out);
            return;
        }
        match p.role {
            Role::Init | Role::Standby => {
                if self.wins_election(&p) {
                    self.become_active("no active node; this node wins the election", now, out);
                } else if self.role == Role::Init {
                    self.transition(Role::Standby, "peer wins the election".into(), now, out);
                }
            }
            Role::Active => {
                if self.role == Role::Init {
                    self.transition(Role::Standby, "peer is active".into(), now, out);
                } else if let Some(at) = self.preempt_at() {
                    if now >= at {
                        self.become_active_as(
                            "preempting: higher priority and the peer is healthy past the hold-down",
                            true,
                            now,
                            out,
                        );
                    }
                }
            }
            Role::Fault | Role::Maintenance => {}
        }
    }

    fn evaluate_active(&mut self, peer: Option<PeerAdvert>, now: Millis, out: &mut Vec<Action>) {
        if let Some(p) = peer {
            if p.role == Role::Active && self.peer_outranks(&p) {
                // Handing over on purpose (switchover, maintenance, fault) is not a contest, and
                // neither is being relieved by a planned handover of the peer's (preemption, or
                // the peer's operator switchover): damping then only made the next failure take
                // three dead intervals to detect.
                if self.yielding.is_none() && !p.planned {
                    self.damping = Some(Damping { clean_since: now });
                }
                let target = match self.yielding.map(|(r, _)| r) {
                    Some(YieldReason::Fault) => Role::Fault,
                    Some(YieldReason::Maintenance) => Role::Maintenance,
                    _ if !self.healthy => Role::Fault,
                    _ if self.maintenance => Role::Maintenance,
                    _ => Role::Standby,
                };
                let mut reason = format!(
                    "peer is active with epoch {} (ours {})",
                    p.epoch, self.epoch
                );
                if target == Role::Fault {
                    reason = format!("unhealthy ({}): {reason}", self.unhealthy_reason);
                }
                self.epoch = self.epoch.max(p.epoch);
                self.step_down(target, reason, now, out);
                return;
            }
        }
        if let Some((reason, since)) = self.yielding {
            let timed_out = now >= since.saturating_add(self.config.yield_timeout_ms());
            let peer_gone = peer.is_none();
            if timed_out || peer_gone {
                let why = if peer_gone {
                    "peer went silent"
                } else {
                    "peer did not take over in time"
                };
                match reason {
                    YieldReason::Switchover => {
                        self.yielding = None;
                        out.push(Action::Advertise);
                        out.push(Action::Refused {
                            command: Command::Switchover,
                            message: format!("switchover abandoned: {why}; staying active"),
                        });
                    }
                    YieldReason::Maintenance => {
                        self.step_down(Role::Maintenance, format!("maintenance: {why}"), now, out)
                    }
                    YieldReason::Fault => {
                        let reason = format!("unhealthy ({}): {why}", self.unhealthy_reason);
                        self.step_down(Role::Fault, reason, now, out)
                    }
                }
                return;
            }
        }
        if let TakeoverState::RetryAt { at } = self.takeover {
            if now >= at {
                self.takeover = TakeoverState::Running { since: now };
                out.push(Action::TakeOver { epoch: self.epoch });
                out.push(Action::Advertise);
            }
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

    /// Ranking used for elections: higher priority, then the lower name.
    fn wins_election(&self, p: &PeerAdvert) -> bool {
        (self.config.priority, std::cmp::Reverse(&self.config.node))
            > (p.priority, std::cmp::Reverse(&self.config.peer))
    }

    fn peer_wins_election_on_priority(&self) -> bool {
        self.peer
            .map(|p| !self.wins_election(&p.advert))
            .unwrap_or(false)
    }

    /// Both active: the newer epoch keeps the role, then the election ranking.
    fn peer_outranks(&self, p: &PeerAdvert) -> bool {
        if p.epoch != self.epoch {
            return p.epoch > self.epoch;
        }
        !self.wins_election(p)
    }

    /// The peer can take the active role right now.
    fn peer_ready(&self, now: Millis) -> bool {
        self.peer_alive(now)
            && self
                .peer
                .map(|p| p.advert.role == Role::Standby && !p.advert.leaving)
                .unwrap_or(false)
    }

    fn peer_is_active_and_settled(&self, now: Millis) -> bool {
        self.peer_alive(now)
            && self
                .peer
                .map(|p| {
                    p.advert.role == Role::Active
                        && !p.advert.takeover_in_progress
                        && !p.advert.leaving
                })
                .unwrap_or(false)
    }

    /// When a preempting takeover becomes allowed, if preemption applies at all.
    fn preempt_at(&self) -> Option<Millis> {
        if !self.config.preempt || self.role != Role::Standby || !self.healthy || self.maintenance {
            return None;
        }
        let p = self.peer?.advert;
        if p.role != Role::Active || p.takeover_in_progress || p.yielding || !self.wins_election(&p)
        {
            return None;
        }
        let stable_since = self.peer_settled_since?.max(self.role_since);
        Some(stable_since.saturating_add(self.config.hold_down_ms))
    }

    fn peer_summary(&self, now: Millis) -> String {
        match self.peer {
            Some(p) if self.peer_alive(now) => format!(
                "{} is {}{}",
                self.config.peer,
                p.advert.role.as_str(),
                if p.advert.takeover_in_progress {
                    " (takeover in progress)"
                } else {
                    ""
                }
            ),
            _ => format!("{} is not heard", self.config.peer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fsm() -> Fsm {
        Fsm::new(
            FsmConfig {
                node: "fw-a".into(),
                peer: "fw-b".into(),
                priority: 100,
                preempt: false,
                hold_down_ms: 1000,
                dead_interval_ms: 500,
                paths: 1,
                retry_initial_ms: 500,
                retry_max_ms: 2000,
            },
            0,
        )
    }

    fn sent(at_us: u64) -> Option<SentAt> {
        Some(SentAt {
            incarnation: 1,
            at_us,
        })
    }

    #[test]
    fn an_echo_of_a_packet_sent_earlier_in_the_current_millisecond_proves_liveness() {
        let f = fsm();
        // Sent at 1112.238 ms, echoed back and stepped while the clock still reads 1112 ms.
        assert!(f.proves_liveness(Some(1_112_238), 1112));
        assert!(f.proves_liveness(Some(1_112_999), 1112));
        // From a later millisecond than now: not ours of this boot, or a forged echo.
        assert!(!f.proves_liveness(Some(1_113_000), 1112));
        // Older than the proof window: a recording.
        let window_ms = 500 * PROOF_WINDOW_DEAD_INTERVALS;
        assert!(f.proves_liveness(Some(1_000_000), 1000 + window_ms));
        assert!(!f.proves_liveness(Some(1_000_000), 1001 + window_ms));
    }

    #[test]
    fn clock_drift_between_the_nodes_never_adds_up_to_a_held_keepalive() {
        let mut f = fsm();
        // The peer's clock runs 1% slow: after 100 s our lag reference has moved by 1 s, in
        // steps of 1 ms per keepalive, none of which looks held.
        for i in 0..1000u64 {
            let now = 1000 + i * 100;
            assert!(!f.held_in_flight(sent(i * 99_000), now), "keepalive {i}");
        }
    }

    #[test]
    fn a_queued_burst_is_held_but_a_lasting_slower_path_is_adopted() {
        let mut f = fsm();
        assert!(!f.held_in_flight(sent(0), 1000));
        assert!(!f.held_in_flight(sent(100_000), 1100));
        // Sent 100 ms later, delivered 2 s later: held (a queue released).
        assert!(f.held_in_flight(sent(200_000), 3100));
        assert!(f.held_in_flight(sent(300_000), 3100));
        // The fresh ones after it are taken.
        assert!(!f.held_in_flight(sent(3_000_000), 3101));
        // A path whose delay rises by 800 ms for good: held for a dead interval, then taken.
        assert!(f.held_in_flight(sent(3_100_000), 3900));
        assert!(f.held_in_flight(sent(3_200_000), 4000));
        assert!(f.held_in_flight(sent(3_600_000), 4400));
        assert!(!f.held_in_flight(sent(3_700_000), 4500));
        assert!(!f.held_in_flight(sent(3_800_000), 4600));
        // A new boot of the peer starts a new reference.
        let reboot = Some(SentAt {
            incarnation: 2,
            at_us: 5,
        });
        assert!(!f.held_in_flight(reboot, 9000));
    }
}
