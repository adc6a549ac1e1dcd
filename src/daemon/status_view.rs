//! The status snapshot built from the daemon's view (`cloudha status`, metrics, alarms) and
//! its readiness indicators.

use std::time::Instant;

use cloudha_provider_core::Holder;

use super::{millis, Daemon, VERSION};
use crate::fsm::{Role, TakeoverState};
use crate::keepalive::packet::{self, Keepalive};
use crate::status::{
    CloudStatus, Indicator, PathStatus, PeerStatus, PendingOperation, StatusSnapshot,
    TakeoverStatus,
};

impl Daemon {
    pub(super) fn publish(&mut self) {
        self.published_at = Instant::now();
        let mut snapshot = self.snapshot();
        self.evaluate_alarms(&snapshot);
        snapshot.alarms = self.ops.alarms.active();
        snapshot.recent_events = self.events.iter().cloned().collect();
        self.notify_systemd(&snapshot);
        self.status_tx.send_replace(snapshot);
    }

    pub(super) fn snapshot(&self) -> StatusSnapshot {
        let now = self.now();
        let fsm = &self.fsm;
        let dead = fsm.config().dead_interval_ms;
        let stats = self.links.stats();
        let paths: Vec<PathStatus> = self
            .config
            .keepalive
            .paths
            .iter()
            .zip(stats)
            .zip(fsm.last_heard())
            .map(|((cfg, s), heard)| {
                let heard_ago = heard.map(|t| now.saturating_sub(t));
                PathStatus {
                    name: cfg.name.clone(),
                    bind: cfg.bind.to_string(),
                    peer: cfg.peer.to_string(),
                    up: heard_ago.is_some_and(|a| a < dead),
                    sent: s.sent,
                    send_errors: s.send_errors,
                    received: s.received,
                    lost: s.lost,
                    loss_percent: s.loss_percent(),
                    rtt_ms: s.rtt_us.map(|us| us as f64 / 1000.0),
                    last_heard_ms_ago: heard_ago,
                    rejected: s
                        .rejected
                        .iter()
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect(),
                    last_error: s.last_error.clone(),
                }
            })
            .collect();

        let alive = fsm.peer_alive(now);
        let peer_view = fsm.peer();
        let packet = self.peer_packet.as_ref();
        let rtt_ms = paths
            .iter()
            .filter_map(|p| p.rtt_ms)
            .fold(None, |acc: Option<f64>, r| {
                Some(acc.map_or(r, |a| a.min(r)))
            });
        let peer = PeerStatus {
            name: self.config.peer.name.clone(),
            alive,
            state: match peer_view {
                Some(p) if alive => p.advert.role.as_str().to_string(),
                Some(p) => format!("unknown (last said {})", p.advert.role.as_str()),
                None => "unknown".into(),
            },
            priority: peer_view.map(|p| p.advert.priority),
            epoch: peer_view.map(|p| p.advert.epoch),
            version: packet.map(|p| packet::escape(&p.software_version)),
            config_digest: packet.map(|p| hex(&p.config_digest)),
            last_heard_ms_ago: peer_view.map(|p| now.saturating_sub(p.at)),
            takeover_in_progress: peer_view.is_some_and(|p| p.advert.takeover_in_progress),
            yielding: peer_view.is_some_and(|p| p.advert.yielding),
            leaving: peer_view.is_some_and(|p| p.advert.leaving),
            clock_skew_ms: packet.map(|p| {
                let half_rtt = rtt_ms.unwrap_or(0.0) / 2.0;
                self.peer_heard_unix_ms as i64 - p.wall_clock_ms as i64 - half_rtt as i64
            }),
        };

        let indicators = self.indicators(alive, &paths, packet);
        let ready = indicators.iter().all(|i| i.ok);
        let takeover = TakeoverStatus {
            state: match fsm.takeover() {
                TakeoverState::Idle => "idle",
                TakeoverState::Running { .. } => "running",
                TakeoverState::RetryAt { .. } => "retrying",
                TakeoverState::Done => "done",
            }
            .into(),
            pending: self
                .pending
                .iter()
                .map(|(id, (description, since))| PendingOperation {
                    id: id.clone(),
                    description: description.clone(),
                    elapsed_ms: millis(since.elapsed()),
                })
                .collect(),
            last_error: fsm.last_takeover_error().map(str::to_string),
        };
        let mut last_failover = self.last_failover.clone();
        if let (Some(f), Some(started)) = (&mut last_failover, self.failover_started) {
            if f.total_ms.is_none() && fsm.role() != Role::Active {
                // The role was lost before convergence; show how long it ran.
                f.total_ms = Some(millis(started.elapsed()));
            }
        }
        StatusSnapshot {
            node: self.config.node.name.clone(),
            version: VERSION.into(),
            provider: self.provider_kind.into(),
            role: fsm.role().as_str().into(),
            role_for_ms: now.saturating_sub(fsm.role_since()),
            epoch: fsm.epoch(),
            priority: fsm.config().priority,
            base_priority: self.config.node.priority,
            ready,
            indicators,
            peer,
            paths,
            takeover,
            last_transition: self.last_transition.clone(),
            last_failover,
            maintenance: fsm.in_maintenance(),
            yielding: fsm.yielding().map(|y| format!("{y:?}").to_lowercase()),
            recent_events: self.events.iter().cloned().collect(),
            fenced: fsm.fenced(),
            damped: fsm.damped(),
            alarms: Vec::new(),
            daemon_warnings: self
                .ops
                .warnings
                .iter()
                .cloned()
                .chain(self.ops.metrics.listener_warning())
                .collect(),
            scheduled_maintenance: self.maintenance_lines(),
            tracks: self.track_statuses(),
            health_probe: self.probe_status(),
            cloud: self.cloud.as_ref().map(|(at, result)| CloudStatus {
                observed_ms_ago: millis(at.elapsed()),
                resources: result
                    .as_ref()
                    .map(|o| o.resources.clone())
                    .unwrap_or_default(),
                warnings: result
                    .as_ref()
                    .map(|o| {
                        let in_flight = o.writes_in_flight.iter().map(|w| {
                            format!(
                                "update in flight on {w}: reconcile repairs nothing until it ends"
                            )
                        });
                        o.warnings.iter().cloned().chain(in_flight).collect()
                    })
                    .unwrap_or_default(),
                error: result.as_ref().err().cloned(),
            }),
        }
    }

    pub(super) fn indicators(
        &self,
        alive: bool,
        paths: &[PathStatus],
        packet: Option<&Keepalive>,
    ) -> Vec<Indicator> {
        let down: Vec<&str> = paths
            .iter()
            .filter(|p| !p.up)
            .map(|p| p.name.as_str())
            .collect();
        let keepalive = Indicator {
            name: "keepalive".into(),
            ok: alive && down.is_empty(),
            detail: if !alive {
                format!("peer {} not heard on any path", self.config.peer.name)
            } else if down.is_empty() {
                format!("peer heard on every path ({})", paths.len())
            } else {
                format!("peer not heard on: {}", down.join(", "))
            },
        };
        let same_version = match packet {
            Some(p) if p.software_version == VERSION => Indicator {
                name: "same_version".into(),
                ok: true,
                detail: format!("both run {VERSION}"),
            },
            Some(p) => Indicator {
                name: "same_version".into(),
                ok: false,
                detail: format!(
                    "peer runs {}, this node {VERSION}",
                    packet::escape(&p.software_version)
                ),
            },
            None => Indicator {
                name: "same_version".into(),
                ok: false,
                detail: "peer never heard".into(),
            },
        };
        let ours = self.ha_digest;
        let same_config = match packet {
            Some(p) if p.config_digest == ours => Indicator {
                name: "same_config".into(),
                ok: true,
                detail: format!("HA config digest {}", hex(&ours)),
            },
            Some(p) => Indicator {
                name: "same_config".into(),
                ok: false,
                detail: format!(
                    "peer's HA config digest {} differs from ours {}: compare cluster, keepalive timing, floating_ip and route sections",
                    hex(&p.config_digest),
                    hex(&ours)
                ),
            },
            None => Indicator {
                name: "same_config".into(),
                ok: false,
                detail: "peer never heard".into(),
            },
        };
        let provider_healthy = Indicator {
            name: "provider_healthy".into(),
            ok: self.provider_health.is_ok(),
            detail: match &self.provider_health {
                Ok(()) => format!("{} provider healthy", self.provider_kind),
                Err(e) => e.clone(),
            },
        };
        let mine = self.fsm.role();
        let theirs = self.fsm.peer().filter(|_| alive).map(|p| p.advert.role);
        let roles_ok = matches!(
            (mine, theirs),
            (Role::Active, Some(Role::Standby)) | (Role::Standby, Some(Role::Active))
        );
        let roles = Indicator {
            name: "roles".into(),
            ok: roles_ok,
            detail: format!(
                "this node {}, peer {}",
                mine.as_str(),
                theirs.map(Role::as_str).unwrap_or("unknown")
            ),
        };
        let cloud_api = Indicator {
            name: "cloud_api".into(),
            ok: matches!(self.cloud, Some((_, Ok(_)))),
            detail: match &self.cloud {
                None => "cloud state not read yet".into(),
                Some((at, Ok(o))) => format!(
                    "read {} resource(s) {:.1}s ago",
                    o.resources.len(),
                    at.elapsed().as_secs_f64()
                ),
                Some((_, Err(e))) => format!("reading the cloud state failed: {e}"),
            },
        };
        let mut indicators = vec![
            keepalive,
            same_version,
            same_config,
            provider_healthy,
            cloud_api,
            roles,
            self.takeover_indicator(alive),
            self.cloud_state_indicator(mine, theirs),
            self.failover_proven_indicator(),
        ];
        if !self.health.tracks.is_empty() {
            let failing = self.failing_tracks();
            indicators.push(Indicator {
                name: "tracked_checks".into(),
                ok: self.health.checks_healthy(),
                detail: if !failing.is_empty() {
                    failing.join("; ")
                } else if self.health.checks_healthy() {
                    format!("{} check(s) healthy", self.health.tracks.len())
                } else {
                    "waiting for the first result of every check".into()
                },
            });
        }
        indicators
    }
}

impl Daemon {
    /// Not ready while either node's takeover is still converging.
    pub(super) fn takeover_indicator(&self, alive: bool) -> Indicator {
        let mine = self.fsm.role() == Role::Active
            && !matches!(
                self.fsm.takeover(),
                TakeoverState::Done | TakeoverState::Idle
            );
        let theirs = alive
            && self
                .fsm
                .peer()
                .is_some_and(|p| p.advert.role == Role::Active && p.advert.takeover_in_progress);
        let detail = match (mine, theirs) {
            (true, _) => format!(
                "this node's takeover is in progress{}",
                self.fsm
                    .last_takeover_error()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ),
            (_, true) => format!("{}'s takeover is in progress", self.config.peer.name),
            _ => "no takeover in progress".into(),
        };
        Indicator {
            name: "takeover".into(),
            ok: !mine && !theirs,
            detail,
        }
    }

    /// Ready only while the cloud shows every resource on the active node: not on no NIC, not
    /// on both, not on the standby.
    pub(super) fn cloud_state_indicator(&self, mine: Role, theirs: Option<Role>) -> Indicator {
        let expected = match (mine, theirs) {
            (Role::Active, _) => Some(Holder::Me),
            (_, Some(Role::Active)) => Some(Holder::Peer),
            _ => None,
        };
        let resources = match &self.cloud {
            Some((_, Ok(o))) => &o.resources,
            _ => {
                return Indicator {
                    name: "cloud_state".into(),
                    ok: false,
                    detail: "cloud state not read".into(),
                }
            }
        };
        let wrong: Vec<String> = resources
            .iter()
            .filter(|r| r.holder != Holder::Unknown && Some(r.holder) != expected)
            .map(|r| format!("{} on {}", r.resource, r.where_text()))
            .collect();
        Indicator {
            name: "cloud_state".into(),
            ok: expected.is_some() && wrong.is_empty(),
            detail: if expected.is_none() {
                "no node is active".into()
            } else if wrong.is_empty() {
                format!("all {} resource(s) on the active node", resources.len())
            } else {
                format!(
                    "{} (expected on the active node; reconcile repairs it, or see the troubleshooting table)",
                    wrong.join(", ")
                )
            },
        }
    }

    /// Ready only while the provider's last proof that a failover would succeed holds.
    pub(super) fn failover_proven_indicator(&self) -> Indicator {
        let (ok, detail) = match &self.proof {
            None => (false, "not proven yet (runs at start)".to_string()),
            Some(p) => {
                let age = p.at.elapsed().as_secs();
                match p.failures().as_slice() {
                    [] => (
                        true,
                        format!("{} check(s) passed {age}s ago", p.checks.len()),
                    ),
                    [first, rest @ ..] => (
                        false,
                        format!(
                            "{}; fix: {}{} ({age}s ago)",
                            first.detail,
                            first.fix,
                            if rest.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    "; {} more failure(s): cloudha selftest lists them",
                                    rest.len()
                                )
                            }
                        ),
                    ),
                }
            }
        };
        Indicator {
            name: "failover_proven".into(),
            ok,
            detail,
        }
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
