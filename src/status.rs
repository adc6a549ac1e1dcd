//! The status snapshot the daemon serves to `cloudha status`, and its human rendering.
//!
//! The snapshot is rebuilt by the event loop from what was observed (the FSM, the link
//! counters, provider progress), never patched in place, so it cannot drift from the daemon's
//! real state. It is rebuilt after every event that changes something, at least once a second,
//! and whenever a reader asks for it ([`StatusSource::fresh`]); a keepalive that changes nothing
//! does not rebuild it (that was most of the daemon's idle CPU).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use cloudha_provider_core::{Holder, ObservedResource};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

/// How a reader (the control socket, `/metrics`) gets the status: the last snapshot, rebuilt on
/// request by the event loop.
#[derive(Debug, Clone)]
pub struct StatusSource {
    snapshot: watch::Receiver<StatusSnapshot>,
    refresh: Option<mpsc::Sender<oneshot::Sender<()>>>,
}

/// Pending refresh requests the loop holds at most; past that a reader gets the last snapshot
/// (at most a second old), so a flood of local connections cannot queue work in the loop.
pub const REFRESH_QUEUE: usize = 16;
/// A reader waits at most this long for the loop to rebuild the snapshot.
const REFRESH_WAIT: Duration = Duration::from_millis(500);

impl StatusSource {
    /// A source the event loop refreshes through `refresh`.
    pub fn new(
        snapshot: watch::Receiver<StatusSnapshot>,
        refresh: mpsc::Sender<oneshot::Sender<()>>,
    ) -> Self {
        Self {
            snapshot,
            refresh: Some(refresh),
        }
    }

    /// A source that serves whatever the channel holds (tests).
    pub fn fixed(snapshot: watch::Receiver<StatusSnapshot>) -> Self {
        Self {
            snapshot,
            refresh: None,
        }
    }

    /// The snapshot as of now: the loop rebuilds it first (unless it is busy or gone, then the
    /// last one, at most a second old).
    pub async fn fresh(&self) -> StatusSnapshot {
        if let Some(refresh) = &self.refresh {
            let (done, rebuilt) = oneshot::channel();
            if refresh.try_send(done).is_ok() {
                let _ = tokio::time::timeout(REFRESH_WAIT, rebuilt).await;
            }
        }
        self.snapshot.borrow().clone()
    }
}

/// Everything `cloudha status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// This node's name.
    pub node: String,
    /// This node's software version.
    pub version: String,
    /// Provider kind.
    pub provider: String,
    /// Current role.
    pub role: String,
    /// How long the node has had its role.
    pub role_for_ms: u64,
    /// Current epoch.
    pub epoch: u64,
    /// This node's priority.
    pub priority: u8,
    /// HA is Ready when every indicator is OK.
    pub ready: bool,
    /// Each readiness indicator.
    pub indicators: Vec<Indicator>,
    /// What is known of the peer.
    pub peer: PeerStatus,
    /// One entry per keepalive path.
    pub paths: Vec<PathStatus>,
    /// The takeover in progress or last completed.
    pub takeover: TakeoverStatus,
    /// The last role change.
    pub last_transition: Option<TransitionRecord>,
    /// The last failover (this node becoming active).
    pub last_failover: Option<FailoverRecord>,
    /// Whether the operator put this node in maintenance.
    pub maintenance: bool,
    /// Set while an active node hands over (`switchover`, `maintenance`, `fault`).
    pub yielding: Option<String>,
    /// Newest last.
    pub recent_events: Vec<EventRecord>,
    /// Standing by because the unheard peer took the floating IP (keepalive partition).
    #[serde(default)]
    pub fenced: bool,
    /// Lost the role to the peer against its will lately: a longer silence is needed before it
    /// takes over again (flapping or lossy keepalive link).
    #[serde(default)]
    pub damped: bool,
    /// What the last reconcile read from the cloud.
    #[serde(default)]
    pub cloud: Option<CloudStatus>,
    /// Raised alarms (see `ops::alarms`).
    #[serde(default)]
    pub alarms: Vec<crate::ops::alarms::Alarm>,
    /// Problems of the daemon itself that do not stop it (metrics listener, journal writes).
    #[serde(default)]
    pub daemon_warnings: Vec<String>,
    /// Platform maintenance scheduled for this node, and what the daemon does about it.
    #[serde(default)]
    pub scheduled_maintenance: Vec<String>,
    /// The configured priority (`priority` above is the effective one, with the weights of
    /// tracked checks applied).
    #[serde(default)]
    pub base_priority: u8,
    /// Each `[[track]]` check.
    #[serde(default)]
    pub tracks: Vec<TrackStatus>,
    /// The load-balancer health probe, when configured.
    #[serde(default)]
    pub health_probe: Option<ProbeStatus>,
}

/// One tracked check.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrackStatus {
    /// `name` of the `[[track]]`.
    pub name: String,
    /// `fault` or `weight -50`.
    pub effect: String,
    /// `None` until its first result.
    pub healthy: Option<bool>,
    /// What the result that set the state said.
    pub detail: String,
    /// Time since the state was set.
    pub since_ms_ago: Option<u64>,
}

/// The health probe.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// `tcp 0.0.0.0:8080` or `http 0.0.0.0:8080/healthz`.
    pub listen: String,
    /// Whether it answers "healthy".
    pub open: bool,
    /// Why it is closed, or why it cannot open.
    pub detail: String,
}

/// The cloud state as last read (who holds each floating IP and route).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CloudStatus {
    /// Time since the read finished.
    pub observed_ms_ago: u64,
    /// Each resource and its holder (`me`, `peer`, `nobody`, `both`, `unknown`).
    pub resources: Vec<ObservedResource>,
    /// Settings that will hurt a failover, and fallbacks in use.
    pub warnings: Vec<String>,
    /// Why the last read failed, if it did.
    pub error: Option<String>,
}

/// One readiness indicator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Indicator {
    /// `keepalive`, `same_version`, `same_config`, `provider_healthy`, `roles`.
    pub name: String,
    /// Whether it is OK.
    pub ok: bool,
    /// What was observed.
    pub detail: String,
}

/// The peer as last heard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Configured peer name.
    pub name: String,
    /// Heard on at least one path within the dead interval.
    pub alive: bool,
    /// Its advertised role (`unknown` before the first keepalive).
    pub state: String,
    /// Its priority.
    pub priority: Option<u8>,
    /// Its epoch.
    pub epoch: Option<u64>,
    /// Its software version.
    pub version: Option<String>,
    /// Its HA config digest (hex).
    pub config_digest: Option<String>,
    /// Time since the last keepalive on any path.
    pub last_heard_ms_ago: Option<u64>,
    /// Its takeover is in progress.
    pub takeover_in_progress: bool,
    /// It is handing over.
    pub yielding: bool,
    /// It announced shutdown.
    pub leaving: bool,
    /// Our wall clock minus its wall clock, minus half the RTT (ms).
    pub clock_skew_ms: Option<i64>,
}

/// One keepalive path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PathStatus {
    /// Label.
    pub name: String,
    /// Local address.
    pub bind: String,
    /// Peer address.
    pub peer: String,
    /// The peer was heard on this path within the dead interval.
    pub up: bool,
    /// Keepalives sent.
    pub sent: u64,
    /// Send errors.
    pub send_errors: u64,
    /// Keepalives accepted.
    pub received: u64,
    /// Keepalives lost (sequence gaps).
    pub lost: u64,
    /// Loss in percent of the peer's keepalives.
    pub loss_percent: f64,
    /// Last RTT in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Time since the last accepted keepalive.
    pub last_heard_ms_ago: Option<u64>,
    /// Dropped datagrams by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Last socket error.
    pub last_error: Option<String>,
}

/// The takeover in progress or last done.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TakeoverStatus {
    /// `idle`, `running`, `retrying`, `done`.
    pub state: String,
    /// Operations still running, with elapsed time.
    pub pending: Vec<PendingOperation>,
    /// The last error, until an attempt succeeds.
    pub last_error: Option<String>,
}

/// One cloud operation in flight.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PendingOperation {
    /// Operation id.
    pub id: String,
    /// What it changes.
    pub description: String,
    /// Time since it started.
    pub elapsed_ms: u64,
}

/// A role change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TransitionRecord {
    /// Previous role.
    pub from: String,
    /// New role.
    pub to: String,
    /// Why.
    pub reason: String,
    /// When (Unix ms).
    pub at_unix_ms: u64,
}

/// Timings of this node's last takeover.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FailoverRecord {
    /// The epoch claimed.
    pub epoch: u64,
    /// Why.
    pub reason: String,
    /// When the decision was taken (Unix ms).
    pub decided_unix_ms: u64,
    /// Last keepalive from the peer -> decision, when the peer went silent.
    pub detection_ms: Option<u64>,
    /// Decision -> first API request sent.
    #[serde(default)]
    pub first_request_ms: Option<u64>,
    /// Decision -> first mutating (PUT/POST) API request sent.
    #[serde(default)]
    pub first_write_ms: Option<u64>,
    /// Decision -> cloud state converged (None while running).
    pub total_ms: Option<u64>,
    /// Attempts made.
    pub attempts: u32,
    /// Operations finished, with their durations.
    pub operations: Vec<OperationRecord>,
    /// API requests by operation.
    pub api_calls: BTreeMap<String, u64>,
    /// Time spent waiting for API answers, by operation (ms, summed over its calls).
    #[serde(default)]
    pub api_call_ms: BTreeMap<String, u64>,
    /// The first [`MAX_CALL_RECORDS`] API requests one by one, for the timeline
    /// (`cloudha events --failover`); the counts above stay complete past the cap.
    #[serde(default)]
    pub calls: Vec<ApiCallRecord>,
}

/// How many API requests a failover record keeps one by one: a takeover makes tens; a
/// throttled one that retries for minutes must not grow the status and the journal without end.
pub const MAX_CALL_RECORDS: usize = 200;

/// One API request of a takeover.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiCallRecord {
    /// API operation name (`nic.put`, `AssignPrivateIpAddresses`).
    pub api: String,
    /// HTTP status (0 for a transport error).
    pub status: u16,
    /// Whether it changes cloud state.
    pub write: bool,
    /// Decision -> request sent.
    pub sent_ms: u64,
    /// Request sent -> answer.
    pub duration_ms: u64,
}

/// A finished operation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OperationRecord {
    /// Operation id.
    pub id: String,
    /// `ok` or the error.
    pub outcome: String,
    /// Duration.
    pub elapsed_ms: u64,
    /// Decision -> operation started (absent in records written before it was kept).
    #[serde(default)]
    pub started_ms: Option<u64>,
}

/// A line in the recent-events list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventRecord {
    /// When (Unix ms).
    pub at_unix_ms: u64,
    /// The node's role when it happened.
    pub role: String,
    /// What happened.
    pub message: String,
}

/// Where a resource is, upper case where it is not where it should be.
fn holder_name(r: &ObservedResource) -> String {
    match (r.holder, &r.held_by) {
        (Holder::Me, _) => "this node".into(),
        (Holder::Peer, _) => "PEER".into(),
        (Holder::Nobody, _) => "NEITHER NODE".into(),
        (Holder::Elsewhere, Some(by)) => format!("NIC {by} (NEITHER NODE'S)"),
        (Holder::Elsewhere, None) => "NEITHER NODE'S".into(),
        (Holder::Both, _) => "BOTH".into(),
        (Holder::Unknown, _) => "unknown".into(),
    }
}

fn format_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03} UTC", ms % 1000)
}

fn ago(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("{:.1}s ago", ms as f64 / 1000.0),
        None => "never".into(),
    }
}

/// Render the snapshot for a person.
pub fn render_human(s: &StatusSnapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({} provider, v{}): {} for {:.1}s, epoch {}, priority {}{}",
        s.node,
        s.provider,
        s.version,
        s.role.to_uppercase(),
        s.role_for_ms as f64 / 1000.0,
        s.epoch,
        s.priority,
        if s.maintenance { ", MAINTENANCE" } else { "" }
    );
    if let Some(y) = &s.yielding {
        let _ = writeln!(out, "  handing over to the peer ({y})");
    }
    let _ = writeln!(out, "HA: {}", if s.ready { "Ready" } else { "Not ready" });
    for i in &s.indicators {
        let _ = writeln!(
            out,
            "  [{}] {:<17} {}",
            if i.ok { " OK " } else { "FAIL" },
            i.name,
            i.detail
        );
    }
    let p = &s.peer;
    let _ = writeln!(
        out,
        "Peer {}: {} ({}), last heard {}{}",
        p.name,
        if p.alive { "alive" } else { "NOT HEARD" },
        p.state,
        ago(p.last_heard_ms_ago),
        p.clock_skew_ms
            .map(|k| format!(", clock skew {k} ms"))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "Keepalive paths:");
    for path in &s.paths {
        let rejected = if path.rejected.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = path
                .rejected
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!(", dropped {}", list.join(" "))
        };
        let _ =
            writeln!(
            out,
            "  {:<6} {} -> {}: {}, sent {}, received {}, lost {} ({:.1}%), rtt {}, heard {}{}{}",
            path.name,
            path.bind,
            path.peer,
            if path.up { "up" } else { "DOWN" },
            path.sent,
            path.received,
            path.lost,
            path.loss_percent,
            path.rtt_ms.map(|r| format!("{r:.2} ms")).unwrap_or_else(|| "-".into()),
            ago(path.last_heard_ms_ago),
            rejected,
            path.last_error
                .as_ref()
                .map(|e| format!(", error: {e}"))
                .unwrap_or_default()
        );
    }
    if !s.tracks.is_empty() {
        let _ = writeln!(out, "Tracked checks:");
    }
    for t in &s.tracks {
        let state = match t.healthy {
            Some(true) => " OK ",
            Some(false) => "FAIL",
            None => " .. ",
        };
        let _ = writeln!(
            out,
            "  [{state}] {:<17} ({}) {} (for {})",
            t.name,
            t.effect,
            if t.detail.is_empty() {
                "no result yet"
            } else {
                &t.detail
            },
            ago(t.since_ms_ago).trim_end_matches(" ago")
        );
    }
    if let Some(p) = &s.health_probe {
        let _ = writeln!(
            out,
            "Health probe {}: {} ({})",
            p.listen,
            if p.open { "OPEN" } else { "closed" },
            p.detail
        );
    }
    for a in &s.alarms {
        let _ = writeln!(out, "ALARM {}: {}", a.name, a.detail);
    }
    for w in &s.daemon_warnings {
        let _ = writeln!(out, "WARNING: {w}");
    }
    for m in &s.scheduled_maintenance {
        let _ = writeln!(out, "Scheduled maintenance: {m}");
    }
    if s.fenced {
        let _ = writeln!(
            out,
            "FENCED: the peer took the floating IP while unheard; standing by until it is heard again"
        );
    }
    if s.damped && !s.fenced {
        let _ = writeln!(
            out,
            "DAMPED: lost the role to the peer lately; takes over only after {} dead intervals of silence, until the keepalives have arrived without a gap for {} dead intervals",
            crate::fsm::DAMPED_DEAD_INTERVALS,
            crate::fsm::DAMPING_CLEAN_DEAD_INTERVALS
        );
    }
    if let Some(c) = &s.cloud {
        let held: Vec<String> = c
            .resources
            .iter()
            .map(|r| format!("{} -> {}", r.resource, holder_name(r)))
            .collect();
        let _ = writeln!(
            out,
            "Cloud (read {:.1}s ago): {}",
            c.observed_ms_ago as f64 / 1000.0,
            if held.is_empty() {
                "-".into()
            } else {
                held.join(", ")
            }
        );
        if let Some(e) = &c.error {
            let _ = writeln!(out, "  read failed: {e}");
        }
        for w in &c.warnings {
            let _ = writeln!(out, "  WARNING: {w}");
        }
    }
    let t = &s.takeover;
    if t.state != "idle" || t.last_error.is_some() {
        let _ = writeln!(out, "Takeover: {}", t.state);
        for op in &t.pending {
            let _ = writeln!(
                out,
                "  pending {} ({}) for {:.1}s",
                op.id,
                op.description,
                op.elapsed_ms as f64 / 1000.0
            );
        }
        if let Some(e) = &t.last_error {
            let _ = writeln!(out, "  last error: {e}");
        }
    }
    if let Some(tr) = &s.last_transition {
        let _ = writeln!(
            out,
            "Last transition: {} -> {} at {}: {}",
            tr.from,
            tr.to,
            format_unix_ms(tr.at_unix_ms),
            tr.reason
        );
    }
    if let Some(f) = &s.last_failover {
        let calls: u64 = f.api_calls.values().sum();
        let _ = writeln!(
            out,
            "Last failover: epoch {}, detection {}, first API request {}, first write {}, total {}, {} attempt(s), {} API call(s)",
            f.epoch,
            f.detection_ms
                .map(|d| format!("{d} ms"))
                .unwrap_or_else(|| "-".into()),
            f.first_request_ms
                .map(|d| format!("+{d} ms"))
                .unwrap_or_else(|| "-".into()),
            f.first_write_ms
                .map(|d| format!("+{d} ms"))
                .unwrap_or_else(|| "-".into()),
            f.total_ms
                .map(|d| format!("{d} ms"))
                .unwrap_or_else(|| "running".into()),
            f.attempts,
            calls
        );
        for op in &f.operations {
            let _ = writeln!(out, "  {} {} in {} ms", op.id, op.outcome, op.elapsed_ms);
        }
    }
    if !s.recent_events.is_empty() {
        let _ = writeln!(out, "Recent events:");
        for e in &s.recent_events {
            let _ = writeln!(
                out,
                "  {} [{}] {}",
                format_unix_ms(e.at_unix_ms),
                e.role,
                e.message
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_gets_the_snapshot_rebuilt_for_it() {
        let (tx, rx) = watch::channel(StatusSnapshot::default());
        let (refresh_tx, mut refresh_rx) = mpsc::channel(REFRESH_QUEUE);
        let source = StatusSource::new(rx, refresh_tx);
        // The event loop's part: rebuild, then say so.
        tokio::spawn(async move {
            while let Some(done) = refresh_rx.recv().await {
                tx.send_modify(|s| s.epoch += 1);
                let _ = done.send(());
            }
        });
        assert_eq!(source.fresh().await.epoch, 1);
        assert_eq!(source.fresh().await.epoch, 2);
    }

    #[tokio::test]
    async fn a_loop_that_does_not_answer_leaves_the_last_snapshot() {
        let (_tx, rx) = watch::channel(StatusSnapshot {
            epoch: 7,
            ..StatusSnapshot::default()
        });
        let (refresh_tx, _held) = mpsc::channel(1);
        let source = StatusSource::new(rx, refresh_tx);
        // One request queued and never answered, then the queue is full: both readers still
        // get the last snapshot (after at most the bounded wait).
        assert_eq!(source.fresh().await.epoch, 7);
        assert_eq!(source.fresh().await.epoch, 7);
    }

    #[test]
    fn human_rendering_shows_readiness_and_failing_indicators() {
        let snapshot = StatusSnapshot {
            node: "fw-a".into(),
            role: "standby".into(),
            ready: false,
            indicators: vec![Indicator {
                name: "same_version".into(),
                ok: false,
                detail: "peer runs 0.2.0, this node 0.1.0".into(),
            }],
            ..Default::default()
        };
        let text = render_human(&snapshot);
        assert!(text.contains("STANDBY"), "{text}");
        assert!(text.contains("HA: Not ready"), "{text}");
        assert!(text.contains("[FAIL] same_version"), "{text}");
    }

    #[test]
    fn time_of_day_formatting() {
        assert_eq!(format_unix_ms(3_723_004), "01:02:03.004 UTC");
    }
}
