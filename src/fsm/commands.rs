//! Operator commands (switchover, maintenance) and leaving the active role on a fault or
//! maintenance: yield to a ready peer, or leave at once if none.

use super::{Action, Command, Fsm, Millis, Role, YieldReason};

impl Fsm {
    pub(super) fn on_command(&mut self, command: Command, now: Millis, out: &mut Vec<Action>) {
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
    pub(super) fn begin_leaving_active(
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
}
