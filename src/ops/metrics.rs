//! Prometheus metrics, served as text at `/metrics` on a loopback HTTP listener.
//!
//! Two sources: what the status snapshot already holds (role, epoch, keepalive counters per
//! path, round trips, alarms) is copied in at scrape time, so the two can never disagree; what
//! only happens as events (failovers, phase durations, API calls, throttling, drift repairs)
//! is counted by the daemon as it happens.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::ops::alarms;
use crate::status::{StatusSnapshot, StatusSource};

/// The content type of the Prometheus text exposition format that `prometheus-client`
/// writes (OpenMetrics text, which Prometheus and its text parsers read).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    path: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabels {
    cause: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    operation: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IndicatorLabels {
    indicator: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabels {
    alarm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrackLabels {
    check: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 5 ms .. ~328 s: keepalive-scale detection up to Azure's minutes-long NIC updates.
    Histogram::new(exponential_buckets(0.005, 2.0, 17))
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    role: Family<RoleLabels, Gauge>,
    epoch: Gauge,
    ready: Gauge,
    indicators: Family<IndicatorLabels, Gauge>,
    peer_alive: Gauge,
    keepalives_sent: Family<PathLabels, Counter>,
    keepalives_received: Family<PathLabels, Counter>,
    keepalives_lost: Family<PathLabels, Counter>,
    keepalives_rejected: Family<RejectLabels, Counter>,
    keepalive_rtt: Family<PathLabels, Gauge<f64, AtomicU64>>,
    clock_skew: Gauge<f64, AtomicU64>,
    failovers: Family<FailoverLabels, Counter>,
    takeover_attempts_failed: Counter,
    phases: Histograms<PhaseLabels>,
    operations: Histograms<OperationLabels>,
    api_calls: Family<ApiLabels, Counter>,
    throttled: Family<OperationLabels, Counter>,
    drift_repaired: Counter,
    alarms: Family<AlarmLabels, Gauge>,
    hooks_failed: Counter,
    tracks_healthy: Family<TrackLabels, Gauge>,
    priority: Gauge,
    probe_open: Gauge,
    journal_errors: Counter,
    connections_refused: Counter,
    /// Why the listener cannot accept, while it cannot (shown in status).
    listener_warning: Mutex<Option<String>>,
}

/// The roles exported, each as 0 or 1.
const ROLES: &[&str] = &["init", "standby", "active", "fault", "maintenance"];

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("cloudha");
        let m = Metrics {
            role: Family::default(),
            epoch: Gauge::default(),
            ready: Gauge::default(),
            indicators: Family::default(),
            peer_alive: Gauge::default(),
            keepalives_sent: Family::default(),
            keepalives_received: Family::default(),
            keepalives_lost: Family::default(),
            keepalives_rejected: Family::default(),
            keepalive_rtt: Family::default(),
            clock_skew: Gauge::default(),
            failovers: Family::default(),
            takeover_attempts_failed: Counter::default(),
            phases: Family::new_with_constructor(seconds_histogram),
            operations: Family::new_with_constructor(seconds_histogram),
            api_calls: Family::default(),
            throttled: Family::default(),
            drift_repaired: Counter::default(),
            alarms: Family::default(),
            hooks_failed: Counter::default(),
            tracks_healthy: Family::default(),
            priority: Gauge::default(),
            probe_open: Gauge::default(),
            journal_errors: Counter::default(),
            connections_refused: Counter::default(),
            listener_warning: Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register("role", "1 for the node's current role", m.role.clone());
        registry.register("epoch", "The failover epoch", m.epoch.clone());
        registry.register(
            "ha_ready",
            "1 when every readiness indicator is OK",
            m.ready.clone(),
        );
        registry.register(
            "ha_indicator",
            "1 while the readiness indicator is OK, by indicator (failover_proven: permissions and NIC settings proven)",
            m.indicators.clone(),
        );
        registry.register(
            "peer_alive",
            "1 when the peer is heard on some path",
            m.peer_alive.clone(),
        );
        registry.register(
            "keepalives_sent",
            "Keepalives sent, by path",
            m.keepalives_sent.clone(),
        );
        registry.register(
            "keepalives_received",
            "Authenticated keepalives received, by path",
            m.keepalives_received.clone(),
        );
        registry.register(
            "keepalives_lost",
            "Keepalives missing from the peer's sequence, by path",
            m.keepalives_lost.clone(),
        );
        registry.register(
            "keepalives_rejected",
            "Datagrams dropped, by path and reason (unauthenticated = wrong key)",
            m.keepalives_rejected.clone(),
        );
        registry.register(
            "keepalive_rtt_seconds",
            "Keepalive round trip, by path",
            m.keepalive_rtt.clone(),
        );
        registry.register(
            "peer_clock_skew_seconds",
            "This node's wall clock minus the peer's",
            m.clock_skew.clone(),
        );
        registry.register(
            "failovers",
            "Failovers (this node becoming active), by cause and result",
            m.failovers.clone(),
        );
        registry.register(
            "takeover_attempts_failed",
            "Takeover attempts that failed (each is retried with backoff while the node is active)",
            m.takeover_attempts_failed.clone(),
        );
        registry.register(
            "failover_phase_seconds",
            "Failover phases: detection, first_api_call, first_write, total",
            m.phases.clone(),
        );
        registry.register(
            "failover_operation_seconds",
            "Each provider operation of a takeover, by kind",
            m.operations.clone(),
        );
        registry.register(
            "cloud_api_calls",
            "Cloud API calls, by operation and HTTP status (0: no answer)",
            m.api_calls.clone(),
        );
        registry.register(
            "cloud_api_throttled",
            "Cloud API answers 429 or 503 (throttling), by operation",
            m.throttled.clone(),
        );
        registry.register(
            "reconcile_drift_repaired",
            "Takeovers run by reconcile to repair drift",
            m.drift_repaired.clone(),
        );
        registry.register("alarm", "1 while the alarm is raised", m.alarms.clone());
        registry.register(
            "hooks_failed",
            "Notify hooks that failed or timed out",
            m.hooks_failed.clone(),
        );
        registry.register(
            "track_healthy",
            "1 while the tracked check passes, 0 while it fails, by check",
            m.tracks_healthy.clone(),
        );
        registry.register(
            "priority",
            "The effective priority (the configured one with tracked checks' weights applied)",
            m.priority.clone(),
        );
        registry.register(
            "health_probe_open",
            "1 while the load-balancer health probe answers healthy",
            m.probe_open.clone(),
        );
        registry.register(
            "journal_write_errors",
            "Journal appends that failed",
            m.journal_errors.clone(),
        );
        registry.register(
            "metrics_connections_refused",
            "Connections to /metrics closed at once because the connection cap was reached",
            m.connections_refused.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// Copy what the status snapshot holds.
    pub fn refresh(&self, s: &StatusSnapshot) {
        for role in ROLES {
            self.role
                .get_or_create(&RoleLabels {
                    role: role.to_string(),
                })
                .set(i64::from(s.role == *role));
        }
        self.epoch.set(i64::try_from(s.epoch).unwrap_or(i64::MAX));
        self.ready.set(i64::from(s.ready));
        for indicator in &s.indicators {
            self.indicators
                .get_or_create(&IndicatorLabels {
                    indicator: indicator.name.clone(),
                })
                .set(i64::from(indicator.ok));
        }
        self.peer_alive.set(i64::from(s.peer.alive));
        for p in &s.paths {
            let path = PathLabels {
                path: p.name.clone(),
            };
            store(&self.keepalives_sent.get_or_create(&path), p.sent);
            store(&self.keepalives_received.get_or_create(&path), p.received);
            store(&self.keepalives_lost.get_or_create(&path), p.lost);
            if let Some(rtt) = p.rtt_ms {
                self.keepalive_rtt.get_or_create(&path).set(rtt / 1000.0);
            }
            for (reason, count) in &p.rejected {
                let labels = RejectLabels {
                    path: p.name.clone(),
                    reason: reason.clone(),
                };
                store(&self.keepalives_rejected.get_or_create(&labels), *count);
            }
        }
        if let Some(skew) = s.peer.clock_skew_ms {
            self.clock_skew.set(skew as f64 / 1000.0);
        }
        self.priority.set(i64::from(s.priority));
        for t in &s.tracks {
            if let Some(healthy) = t.healthy {
                self.tracks_healthy
                    .get_or_create(&TrackLabels {
                        check: t.name.clone(),
                    })
                    .set(i64::from(healthy));
            }
        }
        if let Some(p) = &s.health_probe {
            self.probe_open.set(i64::from(p.open));
        }
        for name in alarms::NAMES {
            let raised = s.alarms.iter().any(|a| a.name == *name);
            self.alarms
                .get_or_create(&AlarmLabels {
                    alarm: name.to_string(),
                })
                .set(i64::from(raised));
        }
    }

    /// A cloud API call was answered with `status` (0: no answer).
    pub fn api_call(&self, operation: &str, status: u16) {
        self.api_calls
            .get_or_create(&ApiLabels {
                operation: operation.to_string(),
                status: status.to_string(),
            })
            .inc();
        if status == 429 || status == 503 {
            self.throttled
                .get_or_create(&OperationLabels {
                    operation: operation.to_string(),
                })
                .inc();
        }
    }

    /// A failover ended (`result`: converged, failed, abandoned).
    pub fn failover(&self, cause: &str, result: &str) {
        self.failovers
            .get_or_create(&FailoverLabels {
                cause: cause.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// A takeover attempt failed.
    pub fn takeover_attempt_failed(&self) {
        self.takeover_attempts_failed.inc();
    }

    /// A failover phase took `ms`.
    pub fn phase(&self, phase: &str, ms: u64) {
        self.phases
            .get_or_create(&PhaseLabels {
                phase: phase.to_string(),
            })
            .observe(ms as f64 / 1000.0);
    }

    /// A provider operation (its id's first word: `nic.move`, `route`, `ip.assign`) took `ms`.
    pub fn operation(&self, id: &str, ms: u64) {
        let kind = id.split_whitespace().next().unwrap_or(id);
        self.operations
            .get_or_create(&OperationLabels {
                operation: kind.to_string(),
            })
            .observe(ms as f64 / 1000.0);
    }

    pub fn drift_repaired(&self) {
        self.drift_repaired.inc();
    }

    pub fn hook_failed(&self) {
        self.hooks_failed.inc();
    }

    pub fn journal_error(&self) {
        self.journal_errors.inc();
    }

    /// Record why the listener cannot accept (`None`: it can again); true when it changed.
    fn set_listener_warning(&self, warning: Option<String>) -> bool {
        let Ok(mut current) = self.listener_warning.lock() else {
            return false;
        };
        if *current == warning {
            return false;
        }
        *current = warning;
        true
    }

    /// Why the listener cannot accept connections, while it cannot.
    pub fn listener_warning(&self) -> Option<String> {
        self.listener_warning.lock().ok().and_then(|w| w.clone())
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

fn store(counter: &Counter, value: u64) {
    counter.inner().store(value, Ordering::Relaxed);
}

/// Why a node became active, as a bounded label (from the state machine's reason text).
pub fn failover_cause(reason: &str) -> &'static str {
    let reason = reason.to_ascii_lowercase();
    let causes: [(&str, &'static str); 8] = [
        ("shutting down", "peer_leaving"),
        ("silent", "peer_dead"),
        ("handing over", "handover"),
        ("peer is in", "peer_unavailable"),
        ("switchover", "operator"),
        ("preempting", "preemption"),
        ("after start", "startup"),
        ("election", "election"),
    ];
    causes
        .iter()
        .find(|(text, _)| reason.contains(text))
        .map_or("other", |(_, cause)| cause)
}

/// Connections served at once. Each holds one file descriptor; the cap keeps the listener's
/// share far below any `LimitNOFILE` (the unit sets 4096, the default soft limit is 1024), so
/// a flood of idle connections can never take the descriptors the keepalive sockets and the
/// provider's HTTPS calls need. A scraper needs one.
pub const MAX_CONNECTIONS: usize = 32;
/// A client must send its request headers within this, or the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this, whatever it sends (one request per connection).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(15);
/// After a failed accept (EMFILE, ENFILE, ENOBUFS...): wait this long, doubling up to the max.
const ACCEPT_BACKOFF_INITIAL: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serve `/metrics` on `listener` until the runtime ends.
///
/// Accept errors never end the loop: the listener backs off, and the problem shows in status
/// (`daemon_warnings`) through [`Metrics::listener_warning`] until an accept succeeds again.
/// Connections past [`MAX_CONNECTIONS`] are accepted and closed at once, which frees their
/// descriptor immediately rather than leaving them queued.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, status: StatusSource) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF_INITIAL;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_INITIAL;
                metrics.set_listener_warning(None);
                stream
            }
            Err(e) => {
                let text = format!(
                    "the /metrics listener cannot accept connections: {e}; retrying (too many open files: raise LimitNOFILE)"
                );
                if metrics.set_listener_warning(Some(text.clone())) {
                    warn!("{text}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let (metrics, status) = (metrics.clone(), status.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: Request<Incoming>| {
                let (metrics, status) = (metrics.clone(), status.clone());
                async move {
                    let scrape = req.method() == Method::GET && req.uri().path() == "/metrics";
                    let snapshot = if scrape {
                        Some(status.fresh().await)
                    } else {
                        None
                    };
                    Ok::<_, Infallible>(answer(&metrics, snapshot.as_ref(), &req))
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

/// The answer to one request; `snapshot` is the status for a scrape of `/metrics`.
fn answer(
    metrics: &Metrics,
    snapshot: Option<&StatusSnapshot>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (code, content_type, body) = match (req.method(), req.uri().path(), snapshot) {
        (&Method::GET, "/metrics", Some(snapshot)) => {
            metrics.refresh(snapshot);
            (StatusCode::OK, CONTENT_TYPE, metrics.encode())
        }
        (&Method::GET, _, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "cloudha serves /metrics only\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Bind the metrics listener; an error says which address and why.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot serve /metrics on {addr}: {e} (set [metrics] listen or enabled = false)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::PathStatus;

    #[test]
    fn exposition_has_every_family_with_values_from_the_snapshot() {
        let metrics = Metrics::new();
        let mut s = StatusSnapshot {
            role: "active".into(),
            epoch: 4,
            ..StatusSnapshot::default()
        };
        s.paths.push(PathStatus {
            name: "lan".into(),
            sent: 10,
            received: 9,
            lost: 1,
            rtt_ms: Some(0.5),
            rejected: [("unauthenticated".to_string(), 3)].into_iter().collect(),
            ..PathStatus::default()
        });
        s.indicators.push(crate::status::Indicator {
            name: "failover_proven".into(),
            ok: false,
            detail: "403".into(),
        });
        metrics.refresh(&s);
        metrics.takeover_attempt_failed();
        metrics.api_call("nic.put", 200);
        metrics.api_call("nic.put", 429);
        metrics.failover("peer_dead", "converged");
        metrics.phase("detection", 501);
        let text = metrics.encode();
        for line in [
            "cloudha_role{role=\"active\"} 1",
            "cloudha_role{role=\"standby\"} 0",
            "cloudha_epoch 4",
            "cloudha_ha_indicator{indicator=\"failover_proven\"} 0",
            "cloudha_takeover_attempts_failed_total 1",
            "cloudha_keepalives_sent_total{path=\"lan\"} 10",
            "cloudha_keepalives_rejected_total{path=\"lan\",reason=\"unauthenticated\"} 3",
            "cloudha_keepalive_rtt_seconds{path=\"lan\"} 0.0005",
            "cloudha_cloud_api_calls_total{operation=\"nic.put\",status=\"429\"} 1",
            "cloudha_cloud_api_throttled_total{operation=\"nic.put\"} 1",
            "cloudha_failovers_total{cause=\"peer_dead\",result=\"converged\"} 1",
            "cloudha_failover_phase_seconds_count{phase=\"detection\"} 1",
            "cloudha_alarm{alarm=\"dual_active\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    async fn start_listener() -> (SocketAddr, Arc<Metrics>) {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Metrics::new();
        let (_tx, rx) = tokio::sync::watch::channel(StatusSnapshot::default());
        tokio::spawn(serve(listener, metrics.clone(), StatusSource::fixed(rx)));
        (addr, metrics)
    }

    async fn scrape(addr: SocketAddr) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await;
        answer
    }

    #[tokio::test]
    async fn a_flood_of_idle_connections_is_capped_and_metrics_answers_afterwards() {
        let (addr, metrics) = start_listener().await;
        let mut idle = Vec::new();
        for _ in 0..1200 {
            idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        // Every connection past the cap was closed by the server at once: its descriptor was
        // never held. Wait (bounded) until the server has accepted the whole flood.
        let refused = || metrics.connections_refused.get() as usize;
        for _ in 0..500 {
            if refused() >= 1200 - MAX_CONNECTIONS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(refused(), 1200 - MAX_CONNECTIONS);
        drop(idle);
        // The slots come back as the server sees the clients go: a scrape is answered.
        let mut answer = String::new();
        for _ in 0..100 {
            answer = scrape(addr).await;
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.contains("cloudha_epoch"), "{answer}");
        assert_eq!(metrics.listener_warning(), None);
    }

    #[tokio::test]
    async fn a_connection_that_never_finishes_its_headers_is_closed_at_the_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (addr, _metrics) = start_listener().await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            HEADER_TIMEOUT + Duration::from_secs(5),
            slow.read_to_end(&mut rest),
        )
        .await;
        assert!(read.is_ok(), "still open after {:?}", started.elapsed());
        assert!(
            started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(100),
            "closed before the timeout: {:?}",
            started.elapsed()
        );
        // And the listener still serves a prompt client.
        assert!(scrape(addr).await.starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn causes_are_bounded_labels() {
        assert_eq!(
            failover_cause("peer silent on all 2 path(s) for the dead interval (500 ms)"),
            "peer_dead"
        );
        assert_eq!(
            failover_cause("peer is shutting down (epoch 3)"),
            "peer_leaving"
        );
        assert_eq!(failover_cause("peer is handing over (epoch 3)"), "handover");
        assert_eq!(
            failover_cause("no peer heard within the dead interval (500 ms) after start"),
            "startup"
        );
        assert_eq!(failover_cause("something new"), "other");
    }
}
