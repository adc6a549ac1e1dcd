//! The daemon's day-two duties, kept apart from the failover logic: every event goes to the
//! journal (and the recent-events list), metrics are counted, alarms re-evaluated, hooks
//! queued, systemd told, and a reloaded config applied or refused.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tracing::{info, warn};

use super::{unix_ms, Daemon, RECENT_EVENTS};
use crate::config::Config;
use crate::fsm::Role;
use crate::ops::alarms::{Alarms, Change, Inputs, PathSample, Thresholds};
use crate::ops::hooks::{HookResult, HookRun, Hooks};
use crate::ops::journal::{self, Entry, Journal, Kind};
use crate::ops::metrics::{self, Metrics};
use crate::ops::systemd::Systemd;
use crate::status::{EventRecord, StatusSnapshot};

/// The state of the day-two duties.
pub(super) struct Ops {
    pub journal: Option<Journal>,
    pub metrics: Arc<Metrics>,
    pub alarms: Alarms,
    pub hooks: Hooks,
    pub systemd: Systemd,
    /// Problems that do not stop the daemon (shown in status).
    pub warnings: Vec<String>,
    /// The epoch of a takeover the journal shows as interrupted by the last stop.
    pub interrupted: Option<u64>,
    /// Why the current failover started, while it has not ended.
    pub failover_cause: Option<&'static str>,
}

impl Ops {
    /// Open the journal and read what the last run left unfinished.
    pub fn start(config: &Config, hooks: Hooks, metrics: Arc<Metrics>) -> Ops {
        let path = config.journal_path();
        let mut warnings = Vec::new();
        let interrupted = match journal::read_all(&path) {
            Ok((entries, _)) => journal::interrupted_takeover(&entries).map(|(epoch, _)| epoch),
            Err(e) => {
                warnings.push(format!("cannot read the journal {}: {e}", path.display()));
                None
            }
        };
        let journal = match Journal::open(&path, config.journal.max_bytes) {
            Ok(j) => Some(j),
            Err(e) => {
                warnings.push(format!(
                    "cannot open the journal {}: {e}; events are only logged",
                    path.display()
                ));
                None
            }
        };
        Ops {
            journal,
            metrics,
            alarms: Alarms::new(thresholds(config)),
            hooks,
            systemd: Systemd::from_env(),
            warnings,
            interrupted,
            failover_cause: None,
        }
    }
}

/// Alarm thresholds from the config.
pub(super) fn thresholds(config: &Config) -> Thresholds {
    let alarms = &config.alarms;
    Thresholds {
        dead_interval_ms: config.keepalive.dead_interval.0.as_millis() as u64,
        max_loss_percent: alarms.max_loss_percent,
        max_rtt_ms: alarms.max_rtt.0.as_secs_f64() * 1000.0,
        max_clock_skew_ms: alarms.max_clock_skew.0.as_millis() as u64,
        takeover_pending_ms: alarms
            .takeover_pending
            .map_or(config.failover.deadline.0, |d| d.0)
            .as_millis() as u64,
        bad_packet_quiet_ms: alarms.bad_packet_quiet.0.as_millis() as u64,
    }
}

impl Daemon {
    /// Record an event: recent events in status, the journal (fsynced at failover boundaries).
    pub(super) fn emit(&mut self, kind: Kind, message: String, data: Value) {
        if self.events.len() == RECENT_EVENTS {
            self.events.pop_front();
        }
        let at_unix_ms = unix_ms();
        let role = self.fsm.role().as_str().to_string();
        self.events.push_back(EventRecord {
            at_unix_ms,
            role: role.clone(),
            message: message.clone(),
        });
        let Some(journal) = self.ops.journal.as_mut() else {
            return;
        };
        let entry = Entry {
            at_unix_ms,
            node: self.config.node.name.clone(),
            role,
            epoch: self.fsm.epoch(),
            kind: kind.as_str().into(),
            message,
            data,
        };
        if let Err(e) = journal.append(&entry, kind.is_boundary()) {
            self.ops.metrics.journal_error();
            let text = format!("journal {}: {e}", journal.path().display());
            if !self.ops.warnings.contains(&text) {
                warn!("{text}");
                self.ops.warnings.push(text);
            }
        }
    }

    /// A role change: queue the hook, start or end the failover's metrics, settle a takeover
    /// the last run left unfinished.
    pub(super) fn on_transition(&mut self, from: Role, to: Role, reason: &str) {
        if let Some(command) = self.config.hooks.for_role(to.as_str()) {
            self.ops.hooks.queue(HookRun {
                command: command.to_vec(),
                state: to.as_str().into(),
                previous: from.as_str().into(),
                reason: reason.into(),
                epoch: self.fsm.epoch(),
                node: self.config.node.name.clone(),
                peer: self.config.peer.name.clone(),
                timeout: self.config.hooks.timeout(),
            });
        }
        if from == Role::Active {
            if let Some(cause) = self.ops.failover_cause.take() {
                self.ops.metrics.failover(cause, "abandoned");
            }
        }
        if to == Role::Active {
            self.ops.failover_cause = Some(metrics::failover_cause(reason));
        }
        if let Some(epoch) = self.ops.interrupted.take() {
            let (message, undone) = if to == Role::Active {
                (format!("the takeover for epoch {epoch} interrupted by the last stop is continued (now epoch {})", self.fsm.epoch()), false)
            } else {
                (format!("the takeover for epoch {epoch} interrupted by the last stop is undone: this node is {} and releases what it holds", to.as_str()), true)
            };
            info!("{message}");
            self.emit(
                Kind::Resume,
                message,
                json!({ "interrupted_epoch": epoch, "continued": !undone }),
            );
            if undone {
                self.worker.release();
            }
        }
    }

    /// A takeover converged: the failover's phases and result.
    pub(super) fn on_failover_converged(&mut self) {
        let Some(cause) = self.ops.failover_cause.take() else {
            return;
        };
        let m = &self.ops.metrics;
        m.failover(cause, "converged");
        if let Some(f) = &self.last_failover {
            for (phase, ms) in [
                ("detection", f.detection_ms),
                ("first_api_call", f.first_request_ms),
                ("first_write", f.first_write_ms),
                ("total", f.total_ms),
            ] {
                if let Some(ms) = ms {
                    m.phase(phase, ms);
                }
            }
        }
    }

    /// A hook finished.
    pub(super) fn on_hook_result(&mut self, result: HookResult) {
        let summary = result.summary();
        if result.succeeded() {
            info!("{summary}");
        } else {
            warn!("{summary}");
            self.ops.metrics.hook_failed();
        }
        let data = json!({
            "state": result.run.state,
            "command": result.run.command,
            "elapsed_ms": result.elapsed.as_millis() as u64,
            "output": result.output,
        });
        self.emit(Kind::Hook, summary, data);
    }

    /// Re-evaluate the alarms against `snapshot`; raise and clear.
    pub(super) fn evaluate_alarms(&mut self, snapshot: &StatusSnapshot) {
        let inputs = self.alarm_inputs(snapshot);
        for change in self.ops.alarms.evaluate(&inputs) {
            let (kind, name, message) = match change {
                Change::Raised { name, detail } => {
                    (Kind::AlarmRaised, name, format!("ALARM {name}: {detail}"))
                }
                Change::Cleared { name, detail } => (
                    Kind::AlarmCleared,
                    name,
                    format!("alarm {name} cleared (was: {detail})"),
                ),
            };
            warn!("{message}");
            self.emit(kind, message, json!({ "alarm": name }));
        }
    }

    fn alarm_inputs(&self, s: &StatusSnapshot) -> Inputs {
        let peer_role = self
            .fsm
            .peer()
            .filter(|_| s.peer.alive)
            .map(|p| p.advert.role);
        let bad_packets = s
            .paths
            .iter()
            .flat_map(|p| p.rejected.iter())
            .filter(|(reason, _)| matches!(reason.as_str(), "unauthenticated" | "unknown_sender"))
            .map(|(_, n)| n)
            .sum();
        let indicator_failing = |name: &str| {
            s.indicators
                .iter()
                .find(|i| i.name == name && !i.ok && !i.detail.contains("never heard"))
                .map(|i| i.detail.clone())
        };
        let mut unplaced = Vec::new();
        let mut duplicated = Vec::new();
        if let Some(cloud) = &s.cloud {
            for r in cloud
                .resources
                .iter()
                .filter(|r| r.resource.starts_with("ip "))
            {
                match r.holder {
                    cloudha_provider_core::Holder::Nobody => unplaced.push(r.resource.clone()),
                    cloudha_provider_core::Holder::Elsewhere => {
                        unplaced.push(format!("{} (on {})", r.resource, r.where_text()));
                    }
                    cloudha_provider_core::Holder::Both => duplicated.push(r.resource.clone()),
                    _ => {}
                }
            }
        }
        let takeover_running = matches!(s.takeover.state.as_str(), "running" | "retrying");
        Inputs {
            now_ms: self.now(),
            my_role: Some(self.fsm.role()),
            peer_role,
            bad_packets,
            peer_drops: self.links.stats().iter().map(|p| p.peer_drops).sum(),
            version_mismatch: indicator_failing("same_version").and(s.peer.version.clone()),
            config_mismatch: indicator_failing("same_config"),
            takeover_running_ms: self
                .failover_started
                .filter(|_| takeover_running)
                .map(|t| t.elapsed().as_millis() as u64),
            takeover_error: s
                .takeover
                .last_error
                .clone()
                .filter(|_| s.takeover.state == "retrying"),
            ips_unplaced: unplaced,
            ips_duplicated: duplicated,
            paths: s
                .paths
                .iter()
                .map(|p| PathSample {
                    name: p.name.clone(),
                    received: p.received,
                    lost: p.lost,
                    rtt_ms: p.rtt_ms,
                })
                .collect(),
            clock_skew_ms: s.peer.clock_skew_ms.filter(|_| s.peer.alive),
            tracks_failing: self.failing_tracks(),
        }
    }

    /// After each loop turn: systemd's READY / STATUS / WATCHDOG.
    pub(super) fn notify_systemd(&mut self, s: &StatusSnapshot) {
        let status = format!(
            "{} (epoch {}), HA {}{}",
            s.role,
            s.epoch,
            if s.ready { "ready" } else { "not ready" },
            if s.alarms.is_empty() {
                String::new()
            } else {
                format!(", {} alarm(s)", s.alarms.len())
            }
        );
        let role = s.role.clone();
        self.ops.systemd.update(&role, status);
    }

    /// SIGHUP: apply a new config if only settings that can change at run time differ;
    /// otherwise keep the running one and say which field needs a restart.
    pub(super) fn reload(&mut self, new: Result<Config, String>) {
        self.ops.systemd.reloading(false);
        let outcome = match new {
            Err(problem) => Err(format!(
                "config reload rejected, keeping the running config: {problem}"
            )),
            Ok(new) => {
                let fixed = restart_required(&self.config, &new);
                if fixed.is_empty() {
                    self.ops.alarms.set_thresholds(thresholds(&new));
                    self.config.hooks = new.hooks;
                    self.config.alarms = new.alarms;
                    self.config.maintenance_events = new.maintenance_events;
                    self.config.journal.max_bytes = new.journal.max_bytes;
                    self.config.failover.reconcile_interval = new.failover.reconcile_interval;
                    Ok("config reloaded (hooks, alarms, maintenance_events, journal.max_bytes, failover.reconcile_interval)".to_string())
                } else {
                    Err(format!(
                        "config reload rejected, keeping the running config: {} changed, which needs a restart (systemctl restart cloudha)",
                        fixed.join(", ")
                    ))
                }
            }
        };
        match outcome {
            Ok(message) => {
                info!("{message}");
                self.emit(Kind::Reload, message, json!({ "applied": true }));
            }
            Err(message) => {
                warn!("{message}");
                self.emit(Kind::Reload, message, json!({ "applied": false }));
            }
        }
        self.ops.systemd.reloading(true);
    }
}

/// The sections (or fields) that differ between `old` and `new` and cannot change while the
/// daemon runs. Compared through their `Debug` text: every field counts, including ones added
/// later, so a new setting is never silently ignored by a reload.
fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let mut fixed = Vec::new();
    let mut check = |name: &'static str, equal: bool| {
        if !equal {
            fixed.push(name);
        }
    };
    check("cluster", same(&old.cluster, &new.cluster));
    check("node", same(&old.node, &new.node));
    check("peer", same(&old.peer, &new.peer));
    check("keepalive", same(&old.keepalive, &new.keepalive));
    check("status", same(&old.status, &new.status));
    check("provider", same(&old.provider, &new.provider));
    check("floating_ip", same(&old.floating_ips, &new.floating_ips));
    check("route", same(&old.routes, &new.routes));
    check("metrics", same(&old.metrics, &new.metrics));
    check("track", same(&old.tracks, &new.tracks));
    check("health_probe", same(&old.health_probe, &new.health_probe));
    check("journal.path", same(&old.journal.path, &new.journal.path));
    let failover = |c: &Config| {
        let f = &c.failover;
        (f.deadline, f.retry_initial, f.retry_max)
    };
    check(
        "failover.deadline/retry_initial/retry_max",
        failover(old) == failover(new),
    );
    fixed
}

/// Keep the watchdog fed even when nothing happens.
pub(super) fn loop_wake(wake: Duration, systemd: &Systemd) -> Duration {
    systemd
        .watchdog_interval()
        .map_or(wake, |every| wake.min(every))
}
