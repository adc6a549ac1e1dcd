//! The daemon's event loop: keepalives, timers, provider results and operator commands go into
//! the state machine; its actions come out and are carried out here.
//!
//! Everything slow runs in its own task (keepalive sockets in `keepalive::link`, provider calls in
//! `provider_worker`), so the loop only ever waits on channels and one timer.
//!
//! # Files
//! This file owns startup ([`run`] up to the loop), the loop itself (one `select!` whose arms
//! each call one handler), shutdown, and the `Daemon` state the handlers share:
//! - `handlers`: one handler per input (keepalive, provider worker event, cloud read, failover
//!   proof, operator command to refuse), each returning the event for the state machine.
//! - `actions`: stepping the state machine and carrying out its actions.
//! - `status_view`: the status snapshot and its readiness indicators.
//! - `tasks`: the provider health check and failover proof tasks, apart from the loop.
//! - `background`: the one channel the background tasks report through.
//! - `health`, `maintenance`, `ops`: the node's own health, scheduled maintenance, and the
//!   day-two duties (journal, metrics, alarms, hooks, systemd, reload).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cloudha_provider_core::{Holder, Observation, Provider, ProviderError};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::Config;
use crate::control::{self, CommandRequest, Response};
use crate::fsm::{Event, Fsm, FsmConfig, Millis};
use crate::keepalive::link::{self, LinkIdentity, Links, PathSpec, Received};
use crate::keepalive::packet::Keepalive;
use crate::keepalive::peer_state::{self, PeerIncarnation};
use crate::ops::hooks::Hooks;
use crate::ops::journal::Kind;
use crate::ops::metrics::{self, Metrics};
use crate::provider_worker::{ProviderWorker, WorkerEvent};
use crate::status::{EventRecord, FailoverRecord, StatusSnapshot, TransitionRecord};
use background::Background;
use tasks::{watch_failover_proof, watch_health, FailoverProof};

mod actions;
mod background;
mod handlers;
mod health;
mod maintenance;
mod ops;
mod status_view;
mod tasks;

/// A finished cloud read, tagged with the takeover generation it started in.
struct ObserveResult {
    generation: u64,
    result: Result<Observation, ProviderError>,
}

/// This build's version, sent in every keepalive (owned by [`crate::version`]).
pub use crate::version::VERSION;
/// How many recent events `status` shows.
const RECENT_EVENTS: usize = 20;
/// Longest wait between two loop turns (refreshes elapsed times in status).
const MAX_IDLE: Duration = Duration::from_millis(500);
/// While nothing changes the status snapshot is rebuilt (and alarms evaluated) this often when
/// an alarm is raised or building up, and [`PUBLISH_WHEN_QUIET`] otherwise; readers (`status`,
/// metrics) always get a fresh one on request.
const PUBLISH_WHILE_WATCHING: Duration = Duration::from_secs(1);
const PUBLISH_WHEN_QUIET: Duration = Duration::from_secs(5);
/// A cloud read that takes longer than this is abandoned (and reported).
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The key could not be read.
    #[error("{0}")]
    Key(String),
    /// The state directory is not usable.
    #[error("node.state_dir {path}: {source}; point node.state_dir at a directory of the daemon's user, mode 0700 (created so if missing)")]
    StateDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The health probe's port could not be bound.
    #[error("{0}")]
    Probe(String),
    /// The control socket could not be bound.
    #[error("status.socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Read, bump and persist the incarnation so it grows across restarts even if the clock does
/// not: the peer rejects anything not newer than what it has seen.
///
/// The directory is created 0700 if missing; an existing one must be the daemon's and not
/// writable by others (one readable by others is made 0700, with a warning); the file is 0600.
pub fn next_incarnation(state_dir: &Path) -> std::io::Result<u64> {
    match crate::secure_fs::ensure_private_dir(state_dir, true) {
        Ok(Some(changed)) => warn!("node.state_dir: {changed}"),
        Ok(None) => {}
        Err(e) => return Err(std::io::Error::other(e)),
    }
    let path = state_dir.join("incarnation");
    let stored = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let now = unix_ms();
    let next = now.max(stored.saturating_add(1));
    cloudha_provider_core::durable::replace_file(&path, format!("{next}\n").as_bytes())?;
    Ok(next)
}

/// Whether the peer holds any shared resource, a floating IP or a route: the sign that it
/// took over. Routes count too because they move in about a second while a NIC update takes
/// minutes: across a keepalive partition the route is the first thing the peer takes, and an
/// active node that "repaired" it back would ping-pong the route with the peer's retries
/// (found by the fault campaign, seed 4).
fn peer_holds_any(obs: &Observation) -> bool {
    obs.resources.iter().any(|r| r.holder == Holder::Peer)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The state-machine settings derived from the config.
pub fn fsm_config(config: &Config) -> FsmConfig {
    FsmConfig {
        node: config.node.name.clone(),
        peer: config.peer.name.clone(),
        priority: config.node.priority,
        preempt: config.node.preempt,
        hold_down_ms: millis(config.node.preempt_hold_down.0),
        dead_interval_ms: millis(config.keepalive.dead_interval.0),
        paths: config.keepalive.paths.len(),
        retry_initial_ms: millis(config.failover.retry_initial.0),
        retry_max_ms: millis(config.failover.retry_max.0),
    }
}

/// Run the daemon until `shutdown` resolves, then tell the peer we are leaving and release
/// local resources.
pub async fn run(
    config: Config,
    provider: Arc<dyn Provider>,
    shutdown: impl Future<Output = ()>,
    reloads: mpsc::UnboundedReceiver<Result<Config, String>>,
) -> Result<(), DaemonError> {
    let key = config
        .read_key()
        .map_err(|p| DaemonError::Key(p.to_string()))?;
    let incarnation =
        next_incarnation(&config.node.state_dir).map_err(|source| DaemonError::StateDir {
            path: config.node.state_dir.display().to_string(),
            source,
        })?;
    // Before the control socket: a probe port in use stops the start with nothing to clean up.
    let probe = config
        .health_probe
        .as_ref()
        .map(crate::health::probe::HealthProbe::start)
        .transpose()
        .map_err(DaemonError::Probe)?;
    let listener = control::bind(&config.status.socket)
        .await
        .map_err(|source| DaemonError::Socket {
            path: config.status.socket.display().to_string(),
            source,
        })?;

    let start = Instant::now();
    let fsm = Fsm::new(fsm_config(&config), 0);
    let (advert_tx, advert_rx) = watch::channel(fsm.advert());
    let (received_tx, mut received_rx) = mpsc::unbounded_channel::<Received>();
    let identity =
        LinkIdentity {
            cluster_id: config.cluster.id,
            key: Arc::from(key),
            node_name: config.node.name.clone(),
            peer_name: config.peer.name.clone(),
            incarnation,
            config_digest: config.ha_digest(),
            software_version: VERSION.to_string(),
            boot_offset_us: peer_state::random_boot_offset_us(),
            proof_window: config.keepalive.dead_interval.0.saturating_mul(
                u32::try_from(crate::fsm::PROOF_WINDOW_DEAD_INTERVALS).unwrap_or(10),
            ),
            max_age: config
                .keepalive
                .dead_interval
                .0
                .saturating_add(config.alarms.max_clock_skew.0),
            peer_incarnation: PeerIncarnation::load(&config.node.state_dir),
        };
    let paths = config
        .keepalive
        .paths
        .iter()
        .enumerate()
        .map(|(index, p)| PathSpec {
            index,
            name: p.name.clone(),
            bind: p.bind,
            peer: p.peer,
        })
        .collect();
    // The keepalives' timestamps count from the FSM's zero, so that an echoed one says when,
    // on the FSM's clock, the peer had last heard this node.
    let links = link::start(
        identity,
        paths,
        config.keepalive.interval.0,
        start,
        advert_rx,
        received_tx,
    );

    let (worker_tx, worker_rx) = mpsc::unbounded_channel();
    let worker = ProviderWorker::start(provider.clone(), config.failover.deadline.0, worker_tx);

    let (health_tx, health_rx) = mpsc::unbounded_channel();
    tokio::spawn(watch_health(provider.clone(), health_tx));

    let (observe_tx, observe_rx) = mpsc::unbounded_channel::<ObserveResult>();

    let (track_tx, track_rx) = mpsc::unbounded_channel();
    let _trackers = crate::health::track::Trackers::start(&config.tracks, track_tx);

    let (proof_tx, proof_rx) = mpsc::unbounded_channel();
    tokio::spawn(watch_failover_proof(provider.clone(), proof_tx));

    let (status_tx, status_rx) = watch::channel(StatusSnapshot::default());
    let (command_tx, mut command_rx) = mpsc::channel::<CommandRequest>(16);
    let (refresh_tx, mut refresh_rx) = mpsc::channel(crate::status::REFRESH_QUEUE);
    let status_source = crate::status::StatusSource::new(status_rx.clone(), refresh_tx);
    tokio::spawn(control::serve(listener, status_source.clone(), command_tx));

    let (maintenance_tx, maintenance_rx) = mpsc::unbounded_channel();
    if config.maintenance_events.enabled && !matches!(provider.kind(), "local" | "none") {
        tokio::spawn(maintenance::poll(
            provider.clone(),
            config.maintenance_events.poll_interval.0,
            maintenance_tx.clone(),
        ));
    }
    let (hook_tx, hook_rx) = mpsc::unbounded_channel();
    let metrics = Metrics::new();
    let mut ops = ops::Ops::start(&config, Hooks::start(hook_tx), metrics.clone());
    if config.metrics.enabled {
        match metrics::bind(config.metrics.listen).await {
            Ok(listener) => {
                tokio::spawn(metrics::serve(listener, metrics, status_source.clone()));
            }
            Err(e) => {
                // Monitoring must never keep the pair from failing over: say it, run on.
                warn!("{e}");
                ops.warnings.push(e);
            }
        }
    }

    info!(
        node = %config.node.name,
        peer = %config.peer.name,
        provider = provider.kind(),
        incarnation,
        "cloudha {VERSION} started"
    );

    let health = health::HealthState::new(&config.tracks, probe);
    let mut daemon = Daemon {
        ha_digest: config.ha_digest(),
        config,
        proof: None,
        fsm,
        start,
        provider_kind: provider.kind(),
        links,
        advert_tx,
        status_tx,
        worker,
        current_attempt: None,
        attempts: 0,
        pending: BTreeMap::new(),
        last_transition: None,
        last_failover: None,
        failover_started: None,
        events: VecDeque::new(),
        peer_packet: None,
        peer_packet_at: None,
        peer_boots: BTreeMap::new(),
        peer_heard_unix_ms: 0,
        provider_health: Ok(()),
        pending_command: None,
        provider: provider.clone(),
        observe_tx,
        observing: false,
        observe_again: false,
        published_at: Instant::now(),
        peer_changed: false,
        next_observe: tokio::time::Instant::now(),
        generation: 0,
        cloud: None,
        ops,
        maintenance: maintenance::MaintenanceState::default(),
        health,
    };
    let started = format!(
        "cloudha {VERSION} started (incarnation {incarnation}, provider {})",
        daemon.provider_kind
    );
    daemon.emit(Kind::Start, started, Value::Null);
    if let Some(epoch) = daemon.ops.interrupted {
        let message = format!("the last run stopped during its takeover for epoch {epoch}: it is continued if this node becomes active, undone otherwise");
        warn!("{message}");
        daemon.emit(Kind::Note, message, json!({ "interrupted_epoch": epoch }));
    }
    daemon.publish();

    let mut background = background::forward(background::Sources {
        worker: worker_rx,
        health: health_rx,
        track: track_rx,
        observe: observe_rx,
        proof: proof_rx,
        maintenance: maintenance_rx,
        hook: hook_rx,
        reloads,
    });
    // Kept across turns of the loop and moved only when the next read is rescheduled: a new
    // timer per turn would be registered and dropped on every keepalive.
    let observe_timer = tokio::time::sleep_until(daemon.next_observe);
    tokio::pin!(shutdown, observe_timer);
    loop {
        if observe_timer.deadline() != daemon.next_observe {
            observe_timer.as_mut().reset(daemon.next_observe);
        }
        let now = daemon.now();
        let wake = daemon
            .fsm
            .next_wakeup()
            .into_iter()
            .chain(daemon.probe_wakeup())
            .min()
            .map(|at| Duration::from_millis(at.saturating_sub(now)))
            .unwrap_or(MAX_IDLE)
            .min(MAX_IDLE);
        let wake = ops::loop_wake(wake, &daemon.ops.systemd);
        let event = tokio::select! {
            // The keepalives first: an idle node's every wake is one, and a ready branch ends
            // the poll (see `background`).
            biased;
            Some(received) = received_rx.recv() => daemon.on_keepalive(received),
            _ = &mut shutdown => break,
            Some(report) = background.recv() => match report {
                Background::Worker(event) => daemon.on_worker(event),
                Background::ProviderHealth(healthy, reason) => {
                    daemon.on_provider_health(healthy, reason)
                }
                Background::Track(report) => daemon.on_track(report),
                Background::Observed(observed) => daemon.on_observed(observed),
                Background::Proof(proof) => {
                    daemon.on_failover_proof(proof);
                    None
                }
                Background::Maintenance(report) => {
                    if !daemon.on_maintenance_report(report, &maintenance_tx) {
                        continue;
                    }
                    None
                }
                Background::Hook(result) => {
                    daemon.on_hook_result(result);
                    None
                }
                Background::Reload(new_config) => {
                    daemon.reload(*new_config);
                    None
                }
            },
            Some(stream) = health::accept_probe(&daemon.health.probe) => {
                // A TCP probe only needs the handshake, which the kernel completed.
                drop(stream);
                continue;
            }
            Some((command, reply)) = command_rx.recv() => {
                if let Some(message) = daemon.refuse_unprovable(command) {
                    let _ = reply.send(Response::Refused { message });
                    None
                } else {
                    daemon.pending_command = Some(reply);
                    Some(Event::Operator(command))
                }
            }
            _ = &mut observe_timer, if !daemon.observing => {
                daemon.start_observe();
                None
            }
            Some(done) = refresh_rx.recv() => {
                // A reader wants the status as of now.
                daemon.publish();
                let _ = done.send(());
                continue;
            }
            _ = tokio::time::sleep(wake) => {
                // A deadline is judged on what has arrived, not on what this process has read:
                // after a stall of its own (a loaded host, CPU steal) the peer's keepalives can
                // wait in the socket while the dead interval runs out. One yield lets the
                // receive tasks read what the kernel holds (tokio polls the reactor before it
                // resumes a yielded task); those keepalives are stepped before the timer.
                tokio::task::yield_now().await;
                while let Ok(received) = received_rx.try_recv() {
                    if let Some(event) = daemon.on_keepalive(received) {
                        daemon.step(event);
                    }
                }
                Some(Event::Tick)
            }
        };
        let routine = match event {
            Some(event) => {
                let routine = matches!(event, Event::Keepalive { .. } | Event::Tick)
                    && !std::mem::take(&mut daemon.peer_changed);
                let acted = daemon.step(event);
                routine && !acted
            }
            // Handled outside the FSM (a worker's progress, a hook, a proof): it changed status.
            None => false,
        };
        // A keepalive or a timer that changed nothing leaves the status as it was, apart from
        // counters and ages: rebuilt (and alarms evaluated) on a slow pace, every second while
        // an alarm is raised or building up, and whenever a reader asks.
        let pace = if daemon.ops.alarms.watching(daemon.now()) {
            PUBLISH_WHILE_WATCHING
        } else {
            PUBLISH_WHEN_QUIET
        };
        if !routine || daemon.published_at.elapsed() >= pace {
            daemon.publish();
        }
    }

    info!("shutting down: telling the peer we are leaving");
    daemon.ops.systemd.stopping();
    daemon.step(Event::Shutdown);
    daemon.emit(
        Kind::Stop,
        "stopping (SIGTERM): told the peer this node is leaving".into(),
        Value::Null,
    );
    // Three immediate keepalives with the leaving flag: one lost packet must not make the peer
    // wait for the dead interval.
    for _ in 0..3 {
        daemon.links.advertise_now();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.worker.cancel_takeovers();
    daemon.worker.release();
    let drained = tokio::time::timeout(Duration::from_secs(35), async {
        while let Some(report) = background.recv().await {
            if let Background::Worker(WorkerEvent::ReleaseDone { result }) = report {
                return result;
            }
        }
        Ok(())
    })
    .await;
    match drained {
        Ok(Ok(())) => info!("released local resources"),
        Ok(Err(e)) => warn!("release on shutdown failed: {e}"),
        Err(_) => warn!("release on shutdown timed out"),
    }
    control::remove_socket(&daemon.config.status.socket);
    Ok(())
}

struct Daemon {
    config: Config,
    /// Our HA config digest (of settings a reload cannot change): computed once, not per status.
    ha_digest: [u8; 16],
    /// The last proof that a failover would succeed now (`None` until the first).
    proof: Option<FailoverProof>,
    fsm: Fsm,
    start: Instant,
    provider_kind: &'static str,
    links: Links,
    advert_tx: watch::Sender<crate::fsm::PeerAdvert>,
    status_tx: watch::Sender<StatusSnapshot>,
    worker: ProviderWorker,
    current_attempt: Option<u64>,
    attempts: u32,
    pending: BTreeMap<String, (String, Instant)>,
    last_transition: Option<TransitionRecord>,
    last_failover: Option<FailoverRecord>,
    failover_started: Option<Instant>,
    events: VecDeque<EventRecord>,
    peer_packet: Option<Keepalive>,
    /// `(boot order, tx timestamp)` of `peer_packet` (see `Daemon::peer_boot`).
    peer_packet_at: Option<(u64, u64)>,
    /// The peer's incarnations accepted so far, with the order of their first acceptance.
    peer_boots: BTreeMap<u64, u64>,
    peer_heard_unix_ms: u64,
    provider_health: Result<(), String>,
    pending_command: Option<tokio::sync::oneshot::Sender<Response>>,
    provider: Arc<dyn Provider>,
    observe_tx: mpsc::UnboundedSender<ObserveResult>,
    observing: bool,
    /// A read was asked for while one was running: start the next one as soon as it ends.
    observe_again: bool,
    /// When the status snapshot was last rebuilt.
    published_at: Instant,
    /// The last keepalive's advert differed from the one before (role, epoch, flags).
    peer_changed: bool,
    next_observe: tokio::time::Instant,
    /// Bumped whenever a takeover starts or ends: a cloud read that straddles one is stale.
    generation: u64,
    cloud: Option<(Instant, Result<Observation, String>)>,
    ops: ops::Ops,
    maintenance: maintenance::MaintenanceState,
    health: health::HealthState,
}

impl Daemon {
    fn now(&self) -> Millis {
        millis(self.start.elapsed())
    }

    fn record_event(&mut self, kind: Kind, message: String) {
        self.emit(kind, message, Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnation_grows_even_if_the_clock_goes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("incarnation"),
            format!("{}\n", u64::MAX - 5),
        )
        .expect("write");
        let first = next_incarnation(dir.path()).expect("first");
        assert_eq!(first, u64::MAX - 4);
        let second = next_incarnation(dir.path()).expect("second");
        assert!(second > first);
    }

    #[test]
    fn a_route_on_the_peer_counts_as_the_peer_holding_a_resource() {
        let resource = |name: &str, holder| cloudha_provider_core::ObservedResource {
            resource: name.into(),
            holder,
            held_by: None,
        };
        let observed = |holders: [Holder; 2]| Observation {
            resources: vec![
                resource("ip 10.10.1.100", holders[0]),
                resource("route rt-workloads/default", holders[1]),
            ],
            warnings: Vec::new(),
            writes_in_flight: Vec::new(),
        };
        // Across a partition the peer's route PUT lands in a second, its NIC move much later:
        // the route alone must fence this node, or its repair ping-pongs the route.
        assert!(peer_holds_any(&observed([Holder::Me, Holder::Peer])));
        assert!(peer_holds_any(&observed([Holder::Peer, Holder::Me])));
        assert!(!peer_holds_any(&observed([Holder::Me, Holder::Nobody])));
        assert!(!peer_holds_any(&observed([Holder::Nobody, Holder::Me])));
    }

    #[test]
    fn incarnation_starts_from_the_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = unix_ms();
        let value = next_incarnation(&dir.path().join("new")).expect("creates dir");
        assert!(value >= before);
    }

    #[test]
    fn state_dir_is_created_0700_with_a_0600_incarnation_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("var/lib/cloudha");
        next_incarnation(&state).expect("created");
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("incarnation")), 0o600);

        // Readable by others (made by hand with the default umask): tightened.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        next_incarnation(&state).expect("tightened");
        assert_eq!(mode(&state), 0o700);

        // Writable by others: refused, the daemon does not start on it.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = next_incarnation(&state).expect_err("others can write");
        assert!(err.to_string().contains("0777"), "{err}");
        assert!(next_incarnation(Path::new("")).is_err(), "empty path");
        assert!(
            next_incarnation(Path::new("state")).is_err(),
            "relative path"
        );
    }
}
