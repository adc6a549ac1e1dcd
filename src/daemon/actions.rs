//! Feeding the state machine: one event in, its actions carried out (role changes recorded,
//! takeovers started and cancelled, operator commands answered).

use std::time::Instant;

use serde_json::json;
use tracing::info;

use super::{unix_ms, Daemon};
use crate::control::Response;
use crate::fsm::{Action, Command, Event, Millis, Role};
use crate::ops::journal::Kind;
use crate::status::{FailoverRecord, TransitionRecord};

impl Daemon {
    /// Feed one event to the FSM and carry out its actions; true when there were any.
    pub(super) fn step(&mut self, event: Event) -> bool {
        let now = self.now();
        // Detection time is measured before the state machine sees the tick that decides.
        let last_heard = self.fsm.last_heard().iter().flatten().max().copied();
        let peer_was_alive = self.fsm.peer_alive(now);
        let from_reconcile = matches!(event, Event::Observed { .. });
        let actions = self.fsm.step(event, now);
        if from_reconcile && actions.iter().any(|a| matches!(a, Action::TakeOver { .. })) {
            info!("reconcile: repairing drift");
            self.ops.metrics.drift_repaired();
            self.record_event(
                Kind::Drift,
                "reconcile: taking over again to repair the drift".into(),
            );
        }
        self.update_probe(&actions);
        let _ = self.advert_tx.send_replace(self.fsm.advert());
        let acted = !actions.is_empty();
        for action in actions {
            self.execute(action, now, last_heard, peer_was_alive);
        }
        acted
    }

    pub(super) fn execute(
        &mut self,
        action: Action,
        now: Millis,
        last_heard: Option<Millis>,
        peer_was_alive: bool,
    ) {
        match action {
            Action::Transition { from, to, reason } => {
                info!(from = from.as_str(), to = to.as_str(), "{reason}");
                self.record_event(
                    Kind::Transition,
                    format!("{} -> {}: {reason}", from.as_str(), to.as_str()),
                );
                self.on_transition(from, to, &reason);
                self.last_transition = Some(TransitionRecord {
                    from: from.as_str().into(),
                    to: to.as_str().into(),
                    reason: reason.clone(),
                    at_unix_ms: unix_ms(),
                });
                if to == Role::Active {
                    let detection_ms = if peer_was_alive {
                        None
                    } else {
                        last_heard.map(|t| now.saturating_sub(t))
                    };
                    self.attempts = 0;
                    self.failover_started = Some(Instant::now());
                    self.last_failover = Some(FailoverRecord {
                        epoch: self.fsm.epoch(),
                        reason,
                        decided_unix_ms: unix_ms(),
                        detection_ms,
                        ..Default::default()
                    });
                }
            }
            Action::Advertise => self.links.advertise_now(),
            Action::TakeOver { epoch } => {
                self.generation += 1;
                self.attempts += 1;
                if let Some(f) = &mut self.last_failover {
                    f.attempts = self.attempts;
                }
                self.pending.clear();
                self.current_attempt = Some(self.worker.take_over(epoch));
                let attempts = self.attempts;
                self.emit(
                    Kind::TakeoverStarted,
                    format!("takeover for epoch {epoch} started (attempt {attempts})"),
                    json!({ "attempt": attempts }),
                );
            }
            Action::CancelTakeover => {
                self.worker.cancel_takeovers();
                self.current_attempt = None;
                self.pending.clear();
            }
            Action::Release => self.worker.release(),
            Action::Accepted { command, message } => {
                self.reply(command, Response::Accepted { message });
            }
            Action::Refused { command, message } => {
                self.reply(command, Response::Refused { message });
            }
        }
    }

    pub(super) fn reply(&mut self, command: Command, response: Response) {
        let text = match &response {
            Response::Accepted { message } => format!("operator {command:?}: {message}"),
            Response::Refused { message } => format!("operator {command:?} refused: {message}"),
            _ => return,
        };
        info!("{text}");
        self.record_event(Kind::Operator, text);
        if let Some(reply) = self.pending_command.take() {
            let _ = reply.send(response);
        }
    }
}
