//! The node's own health in the event loop: the provider's health and the tracked checks become
//! the state machine's `Health` and `Priority` events, and the load-balancer probe is opened or
//! closed after every step, before that step's actions are carried out.

use std::time::Instant;

use serde_json::json;
use tracing::{info, warn};

use super::{millis, Daemon};
use crate::fsm::{Action, Event, Role, TakeoverState};
use crate::health::config::TrackConfig;
use crate::health::probe::HealthProbe;
use crate::health::track::TrackReport;
use crate::ops::journal::Kind;
use crate::status::{ProbeStatus, TrackStatus};

/// One `[[track]]` check as the loop knows it.
pub(super) struct TrackView {
    pub config: TrackConfig,
    /// `None` until its first result.
    pub healthy: Option<bool>,
    pub detail: String,
    pub since: Option<Instant>,
}

impl TrackView {
    pub fn new(config: TrackConfig) -> TrackView {
        TrackView {
            config,
            healthy: None,
            detail: String::new(),
            since: None,
        }
    }

    fn failing(&self) -> bool {
        self.healthy == Some(false)
    }
}

/// What the health side of the daemon holds.
pub(super) struct HealthState {
    pub tracks: Vec<TrackView>,
    pub probe: Option<HealthProbe>,
    /// The current active term's takeover has converged once.
    pub term_converged: bool,
    /// The health last given to the state machine.
    pub told: (bool, String),
}

impl HealthState {
    pub fn new(tracks: &[TrackConfig], probe: Option<HealthProbe>) -> HealthState {
        HealthState {
            tracks: tracks.iter().cloned().map(TrackView::new).collect(),
            probe,
            term_converged: false,
            told: (true, String::new()),
        }
    }

    /// Every check has passed its last decision (a check without a result yet counts as not
    /// healthy).
    pub fn checks_healthy(&self) -> bool {
        self.tracks.iter().all(|t| t.healthy == Some(true))
    }

    /// Every check with the fault effect has passed its last decision: what the probe needs.
    /// A check with a weight acts through the election instead (the peer preempts once it
    /// outranks this node): closing the probe for it would leave nobody serving until then.
    /// A check without a result yet keeps the probe closed: its node may not be able to serve.
    pub fn fault_checks_healthy(&self) -> bool {
        self.tracks
            .iter()
            .filter(|t| t.config.weight.is_none())
            .all(|t| t.healthy == Some(true))
    }
}

impl Daemon {
    /// The provider's health check changed.
    pub(super) fn on_provider_health(&mut self, healthy: bool, reason: String) -> Option<Event> {
        self.provider_health = if healthy { Ok(()) } else { Err(reason.clone()) };
        if !healthy {
            warn!("provider unhealthy: {reason}");
        }
        self.record_event(
            Kind::Note,
            format!(
                "provider {}: {reason}",
                if healthy { "healthy" } else { "UNHEALTHY" }
            ),
        );
        self.health_event()
    }

    /// A tracked check changed state: journal it, then tell the state machine.
    pub(super) fn on_track(&mut self, report: TrackReport) -> Option<Event> {
        let track = self.health.tracks.get_mut(report.index)?;
        track.healthy = Some(report.healthy);
        track.detail = report.detail.clone();
        track.since = Some(Instant::now());
        let name = track.config.name.clone();
        let effect = track.config.effect_label();
        let weighted = track.config.weight.is_some();
        let message = if report.healthy {
            format!("tracked check {name} healthy: {}", report.detail)
        } else {
            format!("tracked check {name} FAILING ({effect}): {}", report.detail)
        };
        if report.healthy {
            info!("{message}");
        } else {
            warn!("{message}");
        }
        self.emit(
            Kind::Health,
            message,
            json!({ "check": name, "healthy": report.healthy, "effect": effect }),
        );
        if weighted {
            Some(Event::Priority {
                priority: self.effective_priority(),
            })
        } else {
            // Always a step, so that the probe follows even when the FSM's health stays.
            self.health_event().or(Some(Event::Tick))
        }
    }

    /// The configured priority with the weights of the tracked checks applied (keepalived: a
    /// negative weight counts while the check fails, a positive one while it passes).
    pub(super) fn effective_priority(&self) -> u8 {
        let adjust: i32 = self
            .health
            .tracks
            .iter()
            .filter_map(|t| {
                let w = t.config.weight?;
                let counts = if w < 0 {
                    t.healthy == Some(false)
                } else {
                    t.healthy == Some(true)
                };
                counts.then_some(w)
            })
            .sum();
        let priority = i32::from(self.config.node.priority) + adjust;
        u8::try_from(priority.clamp(1, 255)).unwrap_or(1)
    }

    /// The node's health for the state machine (the provider's and every fault-effect check's),
    /// when it differs from what it was last told.
    fn health_event(&mut self) -> Option<Event> {
        let failing_check = self
            .health
            .tracks
            .iter()
            .find(|t| t.config.weight.is_none() && t.failing())
            .map(|t| format!("tracked check {} failing: {}", t.config.name, t.detail));
        let told = match (&self.provider_health, failing_check) {
            (_, Some(check)) => (false, check),
            (Err(e), None) => (false, format!("provider unhealthy: {e}")),
            (Ok(()), None) => (true, "healthy".to_string()),
        };
        if told == self.health.told {
            return None;
        }
        self.health.told = told.clone();
        Some(Event::Health {
            healthy: told.0,
            reason: told.1,
        })
    }

    /// Open or close the probe for the state the FSM is now in; called after each step and
    /// before its actions are carried out, so the probe closes before the node advertises that
    /// it hands over or steps down.
    pub(super) fn update_probe(&mut self, actions: &[Action]) {
        let advert = self.fsm.advert();
        // A new term (even one that follows a step down within the same step) starts
        // unconverged.
        let new_term = actions.iter().any(|a| {
            matches!(
                a,
                Action::Transition {
                    to: Role::Active,
                    ..
                }
            )
        });
        if advert.role != Role::Active || new_term {
            self.health.term_converged = false;
        }
        if advert.role != Role::Active {
            self.health.term_converged = false;
        } else if self.fsm.takeover() == TakeoverState::Done {
            self.health.term_converged = true;
        }
        let open = crate::health::probe_should_be_open(
            &advert,
            crate::health::ProbeInputs {
                term_converged: self.health.term_converged,
                checks_healthy: self.health.fault_checks_healthy(),
                peer_active: self.peer_active(),
            },
        );
        let Some(probe) = self.health.probe.as_mut() else {
            return;
        };
        if probe.set(open) {
            let message = format!(
                "health probe {} {}: {}",
                probe.describe(),
                if open { "opened" } else { "closed" },
                self.probe_detail(open)
            );
            info!("{message}");
            self.emit(Kind::Health, message, json!({ "probe_open": open }));
        }
    }

    /// The peer is heard and says it is active.
    /// A peer handing over or leaving has closed its own probe before it said so.
    fn peer_active(&self) -> bool {
        let now = self.now();
        self.fsm.peer_alive(now)
            && self.fsm.peer().is_some_and(|p| {
                p.advert.role == Role::Active && !p.advert.yielding && !p.advert.leaving
            })
    }

    /// When the probe may open without any event: a closed probe that waits only for a peer
    /// still heard as active (both active, the peer then silent) opens once that peer counts
    /// as dead. The loop must wake then: nothing else may happen (and a reader polling the
    /// status keeps restarting the idle timer).
    pub(super) fn probe_wakeup(&self) -> Option<crate::fsm::Millis> {
        let probe = self.health.probe.as_ref()?;
        if probe.is_open() || self.fsm.role() != Role::Active || !self.peer_active() {
            return None;
        }
        let last = self.fsm.last_heard().iter().flatten().max().copied()?;
        Some(last.saturating_add(self.fsm.config().dead_interval_ms))
    }

    /// Why the probe is open or closed.
    fn probe_detail(&self, open: bool) -> String {
        if open {
            return "active, takeover converged, every tracked check healthy".into();
        }
        let advert = self.fsm.advert();
        if advert.leaving {
            "shutting down".into()
        } else if advert.role != Role::Active {
            format!("this node is {}", advert.role.as_str())
        } else if advert.yielding {
            "handing over to the peer".into()
        } else if !self.health.term_converged {
            "takeover not converged yet".into()
        } else if self.peer_active() {
            "the peer still says it is active".into()
        } else {
            let failing: Vec<&str> = self
                .health
                .tracks
                .iter()
                .filter(|t| t.config.weight.is_none() && t.healthy != Some(true))
                .map(|t| t.config.name.as_str())
                .collect();
            format!("tracked check not healthy: {}", failing.join(", "))
        }
    }

    /// The checks for status.
    pub(super) fn track_statuses(&self) -> Vec<TrackStatus> {
        self.health
            .tracks
            .iter()
            .map(|t| TrackStatus {
                name: t.config.name.clone(),
                effect: t.config.effect_label(),
                healthy: t.healthy,
                detail: t.detail.clone(),
                since_ms_ago: t.since.map(|s| millis(s.elapsed())),
            })
            .collect()
    }

    /// The probe for status.
    pub(super) fn probe_status(&self) -> Option<ProbeStatus> {
        let probe = self.health.probe.as_ref()?;
        let open = probe.is_open();
        let detail = match probe.warning() {
            Some(w) => w.to_string(),
            None => self.probe_detail(open),
        };
        Some(ProbeStatus {
            listen: probe.describe(),
            open,
            detail,
        })
    }

    /// Failing checks for the `track_failing` alarm.
    pub(super) fn failing_tracks(&self) -> Vec<String> {
        self.health
            .tracks
            .iter()
            .filter(|t| t.failing())
            .map(|t| {
                format!(
                    "{} ({}): {}",
                    t.config.name,
                    t.config.effect_label(),
                    t.detail
                )
            })
            .collect()
    }
}

/// The next TCP probe connection, to be closed at once (pending while there is no probe).
pub(super) async fn accept_probe(probe: &Option<HealthProbe>) -> Option<tokio::net::TcpStream> {
    match probe {
        Some(probe) => probe.accept().await,
        None => std::future::pending().await,
    }
}
