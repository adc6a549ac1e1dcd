//! Election and preemption: who should be active when both are heard (priority, then the lower
//! name; both active: the newer epoch), when a standby takes over (dead peer, yielding peer,
//! preemption after the hold-down), and when an active node steps down.

use super::damping::{Damping, DAMPED_DEAD_INTERVALS};
use super::{Action, Command, Fsm, Millis, PeerAdvert, Role, TakeoverState, YieldReason};

impl Fsm {
    pub(super) fn evaluate_standby(
        &mut self,
        peer: Option<PeerAdvert>,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
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

    pub(super) fn evaluate_active(
        &mut self,
        peer: Option<PeerAdvert>,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
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

    /// Ranking used for elections: higher priority, then the lower name.
    pub(super) fn wins_election(&self, p: &PeerAdvert) -> bool {
        (self.config.priority, std::cmp::Reverse(&self.config.node))
            > (p.priority, std::cmp::Reverse(&self.config.peer))
    }

    pub(super) fn peer_wins_election_on_priority(&self) -> bool {
        self.peer
            .map(|p| !self.wins_election(&p.advert))
            .unwrap_or(false)
    }

    /// Both active: the newer epoch keeps the role, then the election ranking.
    pub(super) fn peer_outranks(&self, p: &PeerAdvert) -> bool {
        if p.epoch != self.epoch {
            return p.epoch > self.epoch;
        }
        !self.wins_election(p)
    }

    /// The peer can take the active role right now.
    pub(super) fn peer_ready(&self, now: Millis) -> bool {
        self.peer_alive(now)
            && self
                .peer
                .map(|p| p.advert.role == Role::Standby && !p.advert.leaving)
                .unwrap_or(false)
    }

    pub(super) fn peer_is_active_and_settled(&self, now: Millis) -> bool {
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
    pub(super) fn preempt_at(&self) -> Option<Millis> {
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

    pub(super) fn peer_summary(&self, now: Millis) -> String {
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
