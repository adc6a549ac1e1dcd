//! The daemon's event loop: keepalives, timers, provider results and operator commands go into
//! the state machine; its actions come out and are carried out here.
//!
//! Everything slow runs in its own task (keepalive sockets in `keepalive::link`, provider calls in
//! `provider_worker`), so the loop only ever waits on channels and one timer.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cloudha_provider_core::{
    Check, Holder, Observation, Outcome, ProgressEvent, Provider, ProviderError,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::{self, CommandRequest, Response};
use crate::fsm::{Action, Command, Event, Fsm, FsmConfig, Millis, Role, SentAt, TakeoverState};
use crate::keepalive::link::{self, LinkIdentity, Links, PathSpec, Received};
use crate::keepalive::packet::{self, Accepted, Keepalive};
use crate::keepalive::peer_state::{self, PeerIncarnation};
use crate::ops::hooks::Hooks;
use crate::ops::journal::Kind;
use crate::ops::metrics::{self, Metrics};
use crate::provider_worker::{ProviderWorker, WorkerEvent};
use crate::status::{
    ApiCallRecord, CloudStatus, EventRecord, FailoverRecord, Indicator, OperationRecord,
    PathStatus, PeerStatus, PendingOperation, StatusSnapshot, TakeoverStatus, TransitionRecord,
    MAX_CALL_RECORDS,
};
use crate::ticker::Ticker;
use background::Background;

mod background;
mod health;
mod maintenance;
mod ops;

/// A finished cloud read, tagged with the takeover generation it started in.
struct ObserveResult {
    generation: u64,
    result: Result<Observation, ProviderError>,
}

/// This build's version, sent in every keepalive (owned by [`crate::version`]).
pub use crate::version::VERSION;
/// How often the provider's health is checked.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How often a failover is proven possible (permissions, NIC settings): a few minutes keeps
/// the cloud calls it costs far below every throttling limit.
const PROOF_INTERVAL: Duration = Duration::from_secs(300);
/// How soon a failed proof is tried again.
const PROOF_RETRY: Duration = Duration::from_secs(15);
/// Longest a proof may take.
const PROOF_TIMEOUT: Duration = Duration::from_secs(90);
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

/// Prove at start and every [`PROOF_INTERVAL`] that a failover would succeed now (see
/// `Provider::prove_failover`); each result goes to the loop.
async fn watch_failover_proof(
    provider: Arc<dyn Provider>,
    tx: mpsc::UnboundedSender<FailoverProof>,
) {
    loop {
        let checks = match tokio::time::timeout(PROOF_TIMEOUT, provider.prove_failover()).await {
            Ok(checks) => checks,
            Err(_) => vec![Check::fail(
                "failover_proven",
                format!(
                    "proving the failover's permissions and settings took over {} s",
                    PROOF_TIMEOUT.as_secs()
                ),
                "run cloudha selftest to see which cloud call hangs",
            )],
        };
        let proof = FailoverProof {
            at: Instant::now(),
            checks,
        };
        // A failure may be passing (a throttled or lost read): look again soon, not in 5 min.
        let next = if proof.failures().is_empty() {
            PROOF_INTERVAL
        } else {
            PROOF_RETRY
        };
        if tx.send(proof).is_err() {
            return;
        }
        tokio::time::sleep(next).await;
    }
}

async fn watch_health(provider: Arc<dyn Provider>, tx: mpsc::UnboundedSender<(bool, String)>) {
    let mut last: Option<bool> = None;
    let mut ticker = Ticker::in_phase(HEALTH_INTERVAL);
    loop {
        let result = tokio::time::timeout(Duration::from_secs(10), provider.health()).await;
        let (healthy, reason) = match result {
            Ok(Ok(())) => (true, "provider healthy".to_string()),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (false, "provider health check timed out".to_string()),
        };
        if last != Some(healthy) {
            last = Some(healthy);
            if tx.send((healthy, reason)).is_err() {
                return;
            }
        }
        ticker.tick().await;
    }
}

/// One result of `Provider::prove_failover`.
struct FailoverProof {
    at: Instant,
    checks: Vec<Check>,
}

impl FailoverProof {
    fn failures(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .collect()
    }
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
    /// Record a proof result; a change between proven and not proven is an event.
    fn on_failover_proof(&mut self, proof: FailoverProof) {
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
    fn refuse_unprovable(&self, command: Command) -> Option<String> {
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

    fn now(&self) -> Millis {
        millis(self.start.elapsed())
    }

    fn record_event(&mut self, kind: Kind, message: String) {
        self.emit(kind, message, Value::Null);
    }

    /// Read the cloud now, or right after the read that is running (which may predate the
    /// change that asks for it).
    fn observe_soon(&mut self) {
        self.next_observe = tokio::time::Instant::now();
        if self.observing {
            self.observe_again = true;
        }
    }

    /// Read the cloud in the background (reconcile); the result comes back through the loop.
    fn start_observe(&mut self) {
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

    fn on_observed(&mut self, observed: ObserveResult) -> Option<Event> {
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
    fn peer_boot(&mut self, incarnation: u64) -> (u64, bool) {
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

    fn on_keepalive(&mut self, received: Received) -> Option<Event> {
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

    fn on_worker(&mut self, event: WorkerEvent) -> Option<Event> {
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
    fn failover_data(&self) -> Value {
        match &self.last_failover {
            Some(f) => json!({ "failover": f }),
            None => Value::Null,
        }
    }

    fn on_progress(&mut self, event: ProgressEvent) {
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

    /// Feed one event to the FSM and carry out its actions; true when there were any.
    fn step(&mut self, event: Event) -> bool {
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

    fn execute(
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

    fn reply(&mut self, command: Command, response: Response) {
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

    fn publish(&mut self) {
        self.published_at = Instant::now();
        let mut snapshot = self.snapshot();
        self.evaluate_alarms(&snapshot);
        snapshot.alarms = self.ops.alarms.active();
        snapshot.recent_events = self.events.iter().cloned().collect();
        self.notify_systemd(&snapshot);
        self.status_tx.send_replace(snapshot);
    }

    fn snapshot(&self) -> StatusSnapshot {
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

    fn indicators(
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
    fn takeover_indicator(&self, alive: bool) -> Indicator {
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
    fn cloud_state_indicator(&self, mine: Role, theirs: Option<Role>) -> Indicator {
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
    fn failover_proven_indicator(&self) -> Indicator {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
