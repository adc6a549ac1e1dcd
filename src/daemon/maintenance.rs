//! Scheduled platform maintenance (Azure Scheduled Events, AWS instance actions): hand over to
//! the healthy peer before the platform interrupts this node, and acknowledge the event only
//! once the handover has completed.
//!
//! The handover is the operator's maintenance mode, entered on the node's behalf: an active node
//! hands over first (the state machine refuses when no healthy peer could take over), and while
//! in maintenance the node never takes the role back, so a higher-priority node cannot preempt
//! just before its own reboot. The node leaves the mode by itself once the platform no longer
//! lists the event (a mode the operator entered is left alone).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cloudha_provider_core::{Maintenance, Provider, ProviderError};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Daemon;
use crate::fsm::{Command, Event, Role};
use crate::ops::journal::Kind;
use crate::ticker::Ticker;

/// A metadata poll that takes longer is abandoned (Azure's first call can take minutes).
const POLL_TIMEOUT: Duration = Duration::from_secs(15);

/// What the poller and the acknowledgements report to the event loop.
pub(super) enum MaintenanceReport {
    Polled(Result<Vec<Maintenance>, ProviderError>),
    Acknowledged {
        id: String,
        result: Result<(), ProviderError>,
    },
}

/// The node's view of its scheduled maintenance.
#[derive(Default)]
pub(super) struct MaintenanceState {
    /// As last listed by the platform.
    pub events: Vec<Maintenance>,
    /// Ids already announced in the journal.
    announced: BTreeSet<String>,
    /// Ids acknowledged (or being acknowledged).
    acknowledged: BTreeSet<String>,
    /// This node entered maintenance mode for an event (and leaves it when the events go).
    pub entered: bool,
    /// An event the node could not hand over for (no healthy peer), said once.
    warned: BTreeSet<String>,
}

/// Poll the provider every `every` until the loop goes away.
pub(super) async fn poll(
    provider: Arc<dyn Provider>,
    every: Duration,
    tx: mpsc::UnboundedSender<MaintenanceReport>,
) {
    let mut ticker = Ticker::in_phase(every);
    loop {
        let result = tokio::time::timeout(POLL_TIMEOUT, provider.scheduled_maintenance())
            .await
            .unwrap_or_else(|_| {
                Err(ProviderError::Transient {
                    operation: "scheduled maintenance".into(),
                    message: format!("no answer within {POLL_TIMEOUT:?}"),
                    retry_after: None,
                })
            });
        if tx.send(MaintenanceReport::Polled(result)).is_err() {
            return;
        }
        ticker.tick().await;
    }
}

fn when(event: &Maintenance) -> String {
    match event.not_before_unix_ms {
        Some(ms) => {
            let now = cloudha_provider_core::maintenance::now_unix_ms();
            if ms > now {
                format!("in {} s", (ms - now) / 1000)
            } else {
                "now".into()
            }
        }
        None => "at an unannounced time".into(),
    }
}

impl Daemon {
    /// Returns whether the report may have changed the status (a routine poll that found the
    /// same empty list did not: the status is not rebuilt for it).
    pub(super) fn on_maintenance_report(
        &mut self,
        report: MaintenanceReport,
        tx: &mpsc::UnboundedSender<MaintenanceReport>,
    ) -> bool {
        match report {
            MaintenanceReport::Polled(Err(e)) => {
                tracing::debug!("scheduled maintenance poll failed: {e}");
                false
            }
            MaintenanceReport::Polled(Ok(events)) => {
                let changed = !events.is_empty() || events != self.maintenance.events;
                self.maintenance.events = events;
                self.act_on_maintenance(tx);
                changed
            }
            MaintenanceReport::Acknowledged { id, result } => {
                match result {
                    Ok(()) => {
                        let message = format!("acknowledged scheduled maintenance {id}: the platform may start it now");
                        info!("{message}");
                        self.emit(
                            Kind::Maintenance,
                            message,
                            json!({ "event": id, "acknowledged": true }),
                        );
                    }
                    Err(e) => {
                        warn!("acknowledging scheduled maintenance {id} failed: {e}");
                        // Retried at the next poll.
                        self.maintenance.acknowledged.remove(&id);
                    }
                }
                true
            }
        }
    }

    fn act_on_maintenance(&mut self, tx: &mpsc::UnboundedSender<MaintenanceReport>) {
        let events = self.maintenance.events.clone();
        for event in &events {
            if self.maintenance.announced.insert(event.id.clone()) {
                let message = format!(
                    "platform scheduled {} ({}) for this node {}{}",
                    event.kind,
                    event.description,
                    when(event),
                    if event.needs_handover {
                        ": handing over to the peer first"
                    } else {
                        ""
                    }
                );
                warn!("{message}");
                self.emit(
                    Kind::Maintenance,
                    message,
                    json!({ "event": event.id, "kind": event.kind, "not_before_unix_ms": event.not_before_unix_ms }),
                );
            }
        }
        let interrupting: Vec<&Maintenance> = events.iter().filter(|e| e.needs_handover).collect();
        if interrupting.is_empty() {
            if self.maintenance.entered {
                self.maintenance.entered = false;
                self.emit(
                    Kind::Maintenance,
                    "scheduled maintenance is over: leaving maintenance mode".into(),
                    json!({}),
                );
                self.operator_step(Command::MaintenanceOff);
            }
            return;
        }
        let upcoming: Vec<&Maintenance> = interrupting
            .iter()
            .copied()
            .filter(|e| !e.in_progress)
            .collect();
        if upcoming.is_empty() {
            return;
        }
        if self.fsm.role() != Role::Maintenance {
            if self.fsm.in_maintenance() {
                return;
            }
            self.operator_step(Command::MaintenanceOn { force: false });
            if self.fsm.in_maintenance() {
                self.maintenance.entered = true;
            } else {
                for e in &upcoming {
                    if self.maintenance.warned.insert(e.id.clone()) {
                        let message = format!(
                            "cannot hand over before scheduled {} {}: no healthy peer to take over; the maintenance will interrupt service",
                            e.kind, e.id
                        );
                        warn!("{message}");
                        self.emit(Kind::Maintenance, message, json!({ "event": e.id }));
                    }
                }
                return;
            }
        }
        // Acknowledge once the peer serves and its takeover has finished.
        let now = self.now();
        let peer_settled = self.fsm.peer_alive(now)
            && self
                .fsm
                .peer()
                .is_some_and(|p| p.advert.role == Role::Active && !p.advert.takeover_in_progress);
        if self.fsm.role() != Role::Maintenance || !peer_settled {
            return;
        }
        for e in upcoming {
            if !self.maintenance.acknowledged.insert(e.id.clone()) {
                continue;
            }
            let provider = self.provider.clone();
            let tx = tx.clone();
            let id = e.id.clone();
            tokio::spawn(async move {
                let result = provider.acknowledge_maintenance(&id).await;
                let _ = tx.send(MaintenanceReport::Acknowledged { id, result });
            });
        }
    }

    /// Run an operator command on the node's own behalf (its answer is journaled, not sent).
    fn operator_step(&mut self, command: Command) {
        let waiting_operator = self.pending_command.take();
        self.step(Event::Operator(command));
        self.pending_command = waiting_operator;
    }

    /// Lines for `status`.
    pub(super) fn maintenance_lines(&self) -> Vec<String> {
        self.maintenance
            .events
            .iter()
            .map(|e| {
                let state = if e.in_progress {
                    "in progress"
                } else if self.maintenance.acknowledged.contains(&e.id) {
                    "handed over, acknowledged"
                } else if !e.needs_handover {
                    "no handover needed"
                } else if self.maintenance.entered {
                    "handing over"
                } else {
                    "no healthy peer to hand over to"
                };
                format!(
                    "{} {} {} ({}): {state}",
                    e.kind,
                    e.id,
                    when(e),
                    e.description
                )
            })
            .collect()
    }
}
