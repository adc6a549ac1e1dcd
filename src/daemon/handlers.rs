//! One handler per input of the loop: a keepalive, a provider worker event (takeover result,
//! progress), a cloud read (reconcile), a failover proof, an operator command to refuse. Each
//! updates the daemon's view and returns the event, if any, for the state machine.

use std::time::Instant;

use cloudha_provider_core::{Holder, ProgressEvent, ProviderError};
use serde_json::{json, Value};
use tracing::{error, info, warn};

use super::tasks::FailoverProof;
use super::{millis, peer_holds_any, unix_ms, Daemon, ObserveResult, OBSERVE_TIMEOUT};
use crate::fsm::{Command, Event, Role, SentAt, TakeoverState};
use crate::keepalive::link::Received;
use crate::keepalive::packet::Accepted;
use crate::ops::journal::Kind;
use crate::provider_worker::WorkerEvent;
use crate::status::{ApiCallRecord, OperationRecord, MAX_CALL_RECORDS};

impl Daemon {
    /// Record a proof result; a change between proven and not proven is an event.
    pub(super) fn on_failover_proof(&mut self, proof: FailoverProof) {
        let was_ok = self.proof.as_ref().map(|p| p.failures().is_empty());
        let now_ok = proof.failures().is_empty();
        if was_ok != Some(now_ok) {
            let message = match proof.failures().first() {
                None => format!("failover proven ({} check(s) passed)", proof.checks.len()),
                Some(f) => format!("failover NOT proven: {}; fix: {}", f.detail, f.fix),
            };
            if now_ok {
                info!("{message}");
            } else {
                warn!("{message}");
            }
            self.record_event(Kind::Note, message);
        }
        self.proof = Some(proof);
        self.publish();
    }

    /// A switchover that would make this node take over, refused while the last proof says its
    /// takeover would fail: asking for a switchover must never cause an outage.
    pub(super) fn refuse_unprovable(&self, command: Command) -> Option<String> {
        if command != Command::Switchover || self.fsm.role() != Role::Standby {
            return None;
        }
        let failure = self
            .proof
            .as_ref()?
            .failures()
            .first()
            .map(|f| (f.detail.clone(), f.fix.clone()))?;
        Some(format!(
            "this node could not finish a takeover now: {}; fix: {}",
            failure.0, failure.1
        ))
    }

    /// Read the cloud now, or right after the read that is running (which may predate the
    /// change that asks for it).
    pub(super) fn observe_soon(&mut self) {
        self.next_observe = tokio::time::Instant::now();
        if self.observing {
            self.observe_again = true;
        }
    }

    /// Read the cloud in the background (reconcile); the result comes back through the loop.
    pub(super) fn start_observe(&mut self) {
        self.observing = true;
        let provider = self.provider.clone();
        let tx = self.observe_tx.clone();
        let generation = self.generation;
        tokio::spawn(async move {
            let result = tokio::time::timeout(OBSERVE_TIMEOUT, provider.observe())
                .await
                .unwrap_or_else(|_| {
                    Err(ProviderError::Transient {
                        operation: "observe".into(),
                        message: format!("no answer within {OBSERVE_TIMEOUT:?}"),
                        retry_after: None,
                    })
                });
            let _ = tx.send(ObserveResult { generation, result });
        });
    }

    pub(super) fn on_observed(&mut self, observed: ObserveResult) -> Option<Event> {
        self.observing = false;
        self.next_observe = if std::mem::take(&mut self.observe_again) {
            tokio::time::Instant::now()
        } else {
            tokio::time::Instant::now() + self.config.failover.reconcile_interval.0
        };
        let fresh = observed.generation == self.generation;
        let event = match &observed.result {
            Ok(obs) if fresh => {
                let off: Vec<String> = obs
                    .resources
                    .iter()
                    .filter(|r| !matches!(r.holder, Holder::Me | Holder::Unknown))
                    .map(|r| format!("{} held by {:?}", r.resource, r.holder).to_lowercase())
                    .collect();
                let peer_holds = peer_holds_any(obs);
                let drift = !off.is_empty();
                let write_in_flight = !obs.writes_in_flight.is_empty();
                if drift
                    && self.fsm.role() == Role::Active
                    && self.fsm.takeover() == TakeoverState::Done
                {
                    let text = if write_in_flight {
                        format!(
                            "reconcile found drift: {}; not repaired while a write this node did not make is in flight ({})",
                            off.join(", "),
                            obs.writes_in_flight.join(", ")
                        )
                    } else {
                        format!("reconcile found drift: {}", off.join(", "))
                    };
                    warn!("{text}");
                    self.record_event(Kind::Drift, text);
                }
                Some(Event::Observed {
                    drift,
                    peer_holds,
                    write_in_flight,
                })
            }
            Ok(_) => None,
            Err(e) => {
                warn!("reading the cloud state failed: {e}");
                None
            }
        };
        self.cloud = Some((Instant::now(), observed.result.map_err(|e| e.to_string())));
        event
    }

    /// The order in which the peer's boot was first accepted (1, 2, ...): what the FSM compares
    /// as the sender's incarnation. The raw incarnation is not ordered when the peer lost its
    /// state with its clock behind (its new boot's is lower); the link accepts a new one only
    /// with proof of liveness, so the boot accepted last is the peer's current one.
    pub(super) fn peer_boot(&mut self, incarnation: u64) -> (u64, bool) {
        if let Some(&generation) = self.peer_boots.get(&incarnation) {
            return (generation, false);
        }
        let generation = self.peer_boots.values().max().copied().unwrap_or(0) + 1;
        self.peer_boots.insert(incarnation, generation);
        if self.peer_boots.len() > 16 {
            if let Some((&oldest, _)) = self.peer_boots.iter().min_by_key(|(_, g)| **g) {
                self.peer_boots.remove(&oldest);
            }
        }
        (generation, true)
    }

    pub(super) fn on_keepalive(&mut self, received: Received) -> Option<Event> {
        let advert = received.packet.advert;
        let (generation, new_boot) = self.peer_boot(received.packet.incarnation);
        if new_boot && received.accepted == Accepted::Backwards {
            let message = format!(
                "peer {} came back with a lower incarnation ({}) than seen before: it lost its state directory and its clock is behind; accepted as its new boot because its keepalives echo this boot's timestamps (check NTP and the peer's node.state_dir)",
                self.config.peer.name, received.packet.incarnation
            );
            warn!("{message}");
            self.emit(
                Kind::Note,
                message,
                json!({ "peer_incarnation": received.packet.incarnation }),
            );
        } else if new_boot && self.peer_packet.is_some() {
            self.record_event(
                Kind::Note,
                format!("peer {} restarted (new incarnation)", self.config.peer.name),
            );
        }
        let fresher = self
            .peer_packet_at
            .is_none_or(|(g, tx)| (generation, received.packet.tx_timestamp_us) >= (g, tx));
        let sent = SentAt {
            incarnation: generation,
            at_us: received.packet.tx_timestamp_us,
        };
        let echo_us = Some(received.echo_fsm_us);
        // The peer just finished a takeover (or just became active): read the cloud again now,
        // not at the next reconcile, so this node's view (and its HA readiness) follows at once
        // instead of showing the half-moved state it may have read during the move.
        let peer_settled =
            |a: &crate::fsm::PeerAdvert| a.role == Role::Active && !a.takeover_in_progress;
        if fresher
            && peer_settled(&advert)
            && !self
                .peer_packet
                .as_ref()
                .is_some_and(|p| peer_settled(&p.advert))
        {
            self.observe_soon();
        }
        if fresher {
            self.peer_changed = self.peer_packet.as_ref().is_none_or(|p| p.advert != advert);
            self.peer_heard_unix_ms = unix_ms();
            self.peer_packet_at = Some((generation, received.packet.tx_timestamp_us));
            self.peer_packet = Some(received.packet);
        }
        Some(Event::Keepalive {
            path: received.path,
            advert,
            sent: Some(sent),
            echo_us,
        })
    }

    pub(super) fn on_worker(&mut self, event: WorkerEvent) -> Option<Event> {
        match event {
            WorkerEvent::Progress { attempt, event } => {
                if Some(attempt) != self.current_attempt {
                    return None;
                }
                self.on_progress(event);
                None
            }
            WorkerEvent::TakeoverDone {
                epoch,
                attempt,
                result,
                elapsed,
            } => {
                if Some(attempt) != self.current_attempt {
                    return None;
                }
                self.current_attempt = None;
                self.pending.clear();
                self.generation += 1;
                // Read the result back soon, for status and to start the reconcile clock.
                self.observe_soon();
                match &result {
                    Ok(report) => {
                        let total = self.failover_started.map(|t| millis(t.elapsed()));
                        if let Some(f) = &mut self.last_failover {
                            f.total_ms = total;
                        }
                        info!(
                            epoch,
                            elapsed_ms = millis(elapsed),
                            changed = report.changed,
                            "takeover converged"
                        );
                        let record = self.failover_data();
                        self.emit(
                            Kind::TakeoverDone,
                            format!(
                                "takeover for epoch {epoch} converged in {} ms",
                                millis(elapsed)
                            ),
                            record,
                        );
                        self.on_failover_converged();
                    }
                    Err(e) => {
                        error!(epoch, "takeover attempt failed: {e}");
                        self.ops.metrics.takeover_attempt_failed();
                        let record = self.failover_data();
                        self.emit(
                            Kind::TakeoverFailed,
                            format!("takeover attempt failed: {e}"),
                            record,
                        );
                    }
                }
                Some(Event::TakeoverFinished {
                    epoch,
                    ok: result.is_ok(),
                    error: result.err().map(|e| e.to_string()),
                })
            }
            WorkerEvent::ReleaseDone { result } => {
                match result {
                    Ok(()) => info!("released local resources"),
                    Err(e) => {
                        error!("release failed: {e}");
                        self.record_event(Kind::Release, format!("release failed: {e}"));
                    }
                }
                None
            }
        }
    }

    /// The failover record as it stands, for the journal's takeover_done / takeover_failed
    /// entries: `cloudha events --failover` draws the timeline from it after the fact.
    pub(super) fn failover_data(&self) -> Value {
        match &self.last_failover {
            Some(f) => json!({ "failover": f }),
            None => Value::Null,
        }
    }

    pub(super) fn on_progress(&mut self, event: ProgressEvent) {
        match event {
            ProgressEvent::OperationStarted { id, description } => {
                info!(operation = %id, "{description}");
                self.pending.insert(id, (description, Instant::now()));
            }
            ProgressEvent::OperationFinished {
                id,
                outcome,
                elapsed_ms,
            } => {
                info!(operation = %id, elapsed_ms, "{outcome}");
                let started = self.pending.remove(&id).map(|(_, at)| at);
                self.ops.metrics.operation(&id, elapsed_ms);
                self.emit(
                    Kind::Operation,
                    format!("{id}: {outcome} in {elapsed_ms} ms"),
                    json!({ "operation": id, "elapsed_ms": elapsed_ms }),
                );
                let started_ms = match (self.failover_started, started) {
                    (Some(decided), Some(at)) => {
                        Some(millis(at.saturating_duration_since(decided)))
                    }
                    _ => None,
                };
                if let Some(f) = &mut self.last_failover {
                    f.operations.push(OperationRecord {
                        id,
                        outcome,
                        elapsed_ms,
                        started_ms,
                    });
                }
            }
            ProgressEvent::ApiCall {
                operation,
                status,
                write,
                duration_ms,
            } => {
                self.ops.metrics.api_call(&operation, status);
                let sent_ms = self
                    .failover_started
                    .map(|t| millis(t.elapsed()).saturating_sub(duration_ms));
                if let Some(f) = &mut self.last_failover {
                    *f.api_call_ms.entry(operation.clone()).or_insert(0) += duration_ms;
                    *f.api_calls.entry(operation.clone()).or_insert(0) += 1;
                    // Calls run in parallel and report when they end: the earliest send
                    // wins, not the first answer.
                    let earliest = |a: Option<u64>, b: Option<u64>| match (a, b) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    f.first_request_ms = earliest(f.first_request_ms, sent_ms);
                    if write {
                        f.first_write_ms = earliest(f.first_write_ms, sent_ms);
                    }
                    if let (Some(sent_ms), true) = (sent_ms, f.calls.len() < MAX_CALL_RECORDS) {
                        f.calls.push(ApiCallRecord {
                            api: operation,
                            status,
                            write,
                            sent_ms,
                            duration_ms,
                        });
                    }
                }
            }
            ProgressEvent::Note { message } => {
                info!("{message}");
                self.record_event(Kind::Note, message);
            }
        }
    }
}
