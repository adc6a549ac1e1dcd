//! Keepalive sockets: one UDP socket per path, a sender task and a receiver task each.
//!
//! The tasks never wait on the daemon's event loop or on a provider call: the sender reads the
//! current advert from a `watch` channel, and the receiver hands validated packets to the loop
//! through an unbounded channel. A takeover that takes minutes therefore never delays a
//! keepalive.
//!
//! The standby keeps the clock and the active node answers in phase: each keepalive the active
//! node hears makes it send its own at once (at most one per half interval), so an idle active
//! node wakes once per interval instead of twice (once to send, once to receive). Its own timer
//! stays armed a twentieth of an interval behind as the fallback when the standby goes silent:
//! the standby still hears the active node at least every 1.05 intervals.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, info, warn};

use super::packet::{Accepted, DecodeError, Keepalive, PacketKey, Rejection, ReplayGuard, MAX_LEN};
use super::peer_state::PeerIncarnation;
use crate::fsm::{PeerAdvert, Role};
use crate::ticker::Ticker;

/// Identity and secrets shared by every path.
#[derive(Debug, Clone)]
pub struct LinkIdentity {
    /// Cluster id on the wire.
    pub cluster_id: u32,
    /// Shared HMAC key.
    pub key: Arc<[u8]>,
    /// Our node name.
    pub node_name: String,
    /// The only sender name we accept.
    pub peer_name: String,
    /// This boot's incarnation.
    pub incarnation: u64,
    /// Our HA config digest.
    pub config_digest: [u8; 16],
    /// Our software version.
    pub software_version: String,
    /// This boot's random offset added to every tx timestamp: an echo of an earlier boot's
    /// timestamp never falls in this boot's range (see `peer_state::random_boot_offset_us`).
    pub boot_offset_us: u64,
    /// An echo older than this proves nothing (`fsm::PROOF_WINDOW_DEAD_INTERVALS`).
    pub proof_window: Duration,
    /// An unproven packet sent (by the sender's wall clock) longer ago than this is `stale`:
    /// the dead interval plus the allowed clock skew.
    pub max_age: Duration,
    /// The highest peer incarnation accepted, persisted in the state directory.
    pub peer_incarnation: PeerIncarnation,
}

/// One configured path.
#[derive(Debug, Clone)]
pub struct PathSpec {
    /// Path index (also the path id on the wire).
    pub index: usize,
    /// Label.
    pub name: String,
    /// Local address.
    pub bind: SocketAddr,
    /// Peer address.
    pub peer: SocketAddr,
}

/// A keepalive that passed every check, as handed to the event loop.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path it arrived on.
    pub path: usize,
    /// The packet.
    pub packet: Keepalive,
    /// The echoed timestamp on the FSM's clock (µs since the daemon's start): it proved the
    /// peer alive.
    pub echo_fsm_us: u64,
    /// What it says about the peer's boot.
    pub accepted: Accepted,
}

/// Counters and measurements for one path, shared with `status`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PathStats {
    /// Keepalives sent.
    pub sent: u64,
    /// Send errors (e.g. no route while the link is down).
    pub send_errors: u64,
    /// Keepalives accepted.
    pub received: u64,
    /// Keepalives the peer sent that never arrived (gaps in the sequence).
    pub lost: u64,
    /// Datagrams dropped, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Last round-trip time measured through the echo fields, in microseconds.
    pub rtt_us: Option<u64>,
    /// Whether the socket is bound (it is re-tried while the address is missing).
    pub bound: bool,
    /// The last bind or send error, for status.
    pub last_error: Option<String>,
    /// Replayed packets with the peer's name, and malformed ones from the peer's address: a
    /// recording being replayed, or a broken or hostile sender at the peer's address (alarm).
    pub peer_drops: u64,
}

impl PathStats {
    /// Share of the peer's keepalives lost on this path, in percent.
    pub fn loss_percent(&self) -> f64 {
        let expected = self.received + self.lost;
        if expected == 0 {
            0.0
        } else {
            self.lost as f64 * 100.0 / expected as f64
        }
    }
}

/// What the receiver remembers to echo back (for the peer's RTT) on one path.
#[derive(Debug, Default, Clone, Copy)]
struct Echo {
    peer_incarnation: u64,
    peer_tx_us: u64,
    received_at_us: u64,
}

/// Handle to all running paths.
#[derive(Clone)]
pub struct Links {
    stats: Vec<Arc<Mutex<PathStats>>>,
    send_now: Arc<Notify>,
}

impl Links {
    /// Per-path statistics snapshot, in path order.
    pub fn stats(&self) -> Vec<PathStats> {
        self.stats
            .iter()
            .map(|s| s.lock().map(|g| g.clone()).unwrap_or_default())
            .collect()
    }

    /// Send a keepalive on every path now (the advert changed).
    pub fn advertise_now(&self) {
        self.send_now.notify_waiters();
    }
}

/// A path's UDP socket, registered with the reactor for reading only.
///
/// tokio's `UdpSocket` registers for writing too, so every keepalive sent raised a write-ready
/// event the reactor then had to take and file, on each wake of an idle node. A keepalive is
/// one small datagram: the kernel takes it at once or refuses it (a full send buffer, counted
/// as a send error like any other; the next interval sends again), so nothing ever waits to
/// write.
struct KeepaliveSocket(AsyncFd<std::net::UdpSocket>);

impl KeepaliveSocket {
    fn bind(address: SocketAddr) -> std::io::Result<KeepaliveSocket> {
        let socket = std::net::UdpSocket::bind(address)?;
        socket.set_nonblocking(true)?;
        // Deprecated for a general `AsRawFd` value, which may close or swap its descriptor while
        // registered; a `std::net::UdpSocket` owns its descriptor and keeps it until dropped, and
        // `AsyncFd` deregisters before dropping it (the replacement constructor is `unsafe`).
        #[allow(deprecated)]
        AsyncFd::with_interest(socket, Interest::READABLE).map(KeepaliveSocket)
    }

    fn send_to(&self, bytes: &[u8], peer: SocketAddr) -> std::io::Result<usize> {
        self.0.get_ref().send_to(bytes, peer)
    }

    /// The next datagram, when one is there.
    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|socket| socket.get_ref().recv_from(buf)) {
                Ok(result) => return result,
                // Read everything: wait for the next datagram.
                Err(_would_block) => continue,
            }
        }
    }
}

/// Monotonic microseconds since `origin`.
fn micros_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Start a sender and a receiver for every path; their timestamps count from `origin`.
pub fn start(
    identity: LinkIdentity,
    paths: Vec<PathSpec>,
    interval: Duration,
    origin: Instant,
    advert: watch::Receiver<PeerAdvert>,
    received: mpsc::UnboundedSender<Received>,
) -> Links {
    let send_now = Arc::new(Notify::new());
    let floor = identity.peer_incarnation.get();
    let mut stats = Vec::new();
    for path in paths {
        let path_stats = Arc::new(Mutex::new(PathStats::default()));
        stats.push(path_stats.clone());
        let echo = Arc::new(Mutex::new(Echo::default()));
        let task = PathTask {
            identity: identity.clone(),
            path,
            interval,
            stats: path_stats,
            echo,
            answer: Arc::new(Notify::new()),
            key: PacketKey::new(&identity.key),
            origin,
            floor,
        };
        tokio::spawn(task.run(advert.clone(), received.clone(), send_now.clone()));
    }
    Links { stats, send_now }
}

struct PathTask {
    identity: LinkIdentity,
    path: PathSpec,
    interval: Duration,
    stats: Arc<Mutex<PathStats>>,
    echo: Arc<Mutex<Echo>>,
    /// Raised by the receiver for each keepalive of the peer's current boot: the active node's
    /// sender answers it (see the module comment).
    answer: Arc<Notify>,
    /// The HMAC keyed once for every packet of this path.
    key: PacketKey,
    origin: Instant,
    /// The persisted peer incarnation at start (older boots are replays unless proven).
    floor: u64,
}

impl PathTask {
    /// This boot's timestamp: the random offset plus monotonic µs since the FSM's zero.
    fn now_us(&self) -> u64 {
        self.identity
            .boot_offset_us
            .saturating_add(micros_since(self.origin))
    }

    /// The FSM-clock time of an echoed timestamp, when it is one of ours of this boot, not from
    /// the future and within the proof window.
    fn proof(&self, echo_timestamp_us: u64, now_us: u64) -> Option<u64> {
        let window = u64::try_from(self.identity.proof_window.as_micros()).unwrap_or(u64::MAX);
        let fsm_us = echo_timestamp_us.checked_sub(self.identity.boot_offset_us)?;
        (echo_timestamp_us <= now_us && now_us - echo_timestamp_us <= window).then_some(fsm_us)
    }

    fn with_stats(&self, f: impl FnOnce(&mut PathStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    async fn bind(&self) -> Arc<KeepaliveSocket> {
        let mut logged = false;
        loop {
            match KeepaliveSocket::bind(self.path.bind) {
                Ok(socket) => {
                    self.with_stats(|s| {
                        s.bound = true;
                        s.last_error = None;
                    });
                    info!(path = %self.path.name, bind = %self.path.bind, peer = %self.path.peer, "keepalive path up");
                    return Arc::new(socket);
                }
                Err(e) => {
                    let message = format!("cannot bind {}: {e}", self.path.bind);
                    if !logged {
                        warn!(path = %self.path.name, "{message}; retrying every second");
                        logged = true;
                    }
                    self.with_stats(|s| s.last_error = Some(message));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn run(
        self,
        advert: watch::Receiver<PeerAdvert>,
        received: mpsc::UnboundedSender<Received>,
        send_now: Arc<Notify>,
    ) {
        let socket = self.bind().await;
        let this = Arc::new(self);
        let sender = {
            let this = this.clone();
            let socket = socket.clone();
            tokio::spawn(async move { this.send_loop(socket, advert, send_now).await })
        };
        this.receive_loop(socket, received).await;
        sender.abort();
    }

    async fn send_loop(
        &self,
        socket: Arc<KeepaliveSocket>,
        advert: watch::Receiver<PeerAdvert>,
        send_now: Arc<Notify>,
    ) {
        // The packet is built once; each send updates its changing fields and encodes it into
        // the same buffer: no allocation per keepalive.
        let mut packet = Keepalive {
            cluster_id: self.identity.cluster_id,
            incarnation: self.identity.incarnation,
            sequence: 0,
            path_id: u8::try_from(self.path.index).unwrap_or(u8::MAX),
            advert: *advert.borrow(),
            wall_clock_ms: 0,
            tx_timestamp_us: 0,
            echo_timestamp_us: 0,
            echo_delay_us: 0,
            config_digest: self.identity.config_digest,
            node_name: self.identity.node_name.clone(),
            software_version: self.identity.software_version.clone(),
        };
        let mut bytes = Vec::new();
        let mut ticker = Ticker::new(self.interval);
        // How far behind the standby's beat the active node's own timer stays, and how soon after
        // a send it answers again (a flood of packets never makes it send faster than this).
        let fallback_lag = self.interval / 20;
        let answer_gap = self.interval / 2;
        // Register for an immediate send before sending, so a notify during a send is not missed.
        let mut notified = std::pin::pin!(send_now.notified());
        loop {
            packet.sequence += 1;
            let echo = self.echo.lock().map(|e| *e).unwrap_or_default();
            let now_us = self.now_us();
            packet.advert = *advert.borrow();
            packet.wall_clock_ms = unix_ms();
            packet.tx_timestamp_us = now_us;
            packet.echo_timestamp_us = echo.peer_tx_us;
            packet.echo_delay_us = if echo.peer_tx_us == 0 {
                0
            } else {
                u32::try_from(now_us.saturating_sub(echo.received_at_us)).unwrap_or(u32::MAX)
            };
            packet.encode_into(&self.key, &mut bytes);
            match socket.send_to(&bytes, self.path.peer) {
                Ok(_) => self.with_stats(|s| s.sent += 1),
                Err(e) => self.with_stats(|s| {
                    s.send_errors += 1;
                    s.last_error = Some(format!("send to {}: {e}", self.path.peer));
                }),
            }
            let sent_at = Instant::now();
            let answering = advert.borrow().role == Role::Active;
            if answering {
                ticker.rearm(self.interval + fallback_lag);
            }
            loop {
                tokio::select! {
                    _ = ticker.tick() => break,
                    _ = notified.as_mut() => {
                        notified.set(send_now.notified());
                        break;
                    }
                    _ = self.answer.notified() => {
                        if answering && sent_at.elapsed() >= answer_gap {
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn receive_loop(
        &self,
        socket: Arc<KeepaliveSocket>,
        received: mpsc::UnboundedSender<Received>,
    ) {
        let mut guard = ReplayGuard::seeded(self.floor);
        let mut buf = vec![0u8; MAX_LEN + 1];
        loop {
            let (len, from) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors surface here on Linux (port unreachable); they are not fatal.
                    debug!(path = %self.path.name, "recv error: {e}");
                    continue;
                }
            };
            let now_us = self.now_us();
            let before = guard.last();
            match self.validate(&buf[..len], &mut guard, now_us) {
                Ok((packet, echo_fsm_us, accepted)) => {
                    // Within one incarnation the sequence is dense: a gap is packets lost.
                    let lost = match before {
                        Some((incarnation, last)) if incarnation == packet.incarnation => {
                            packet.sequence.saturating_sub(last).saturating_sub(1)
                        }
                        _ => 0,
                    };
                    self.record(&packet, now_us, lost);
                    if accepted == Accepted::Current {
                        self.answer.notify_one();
                    }
                    if accepted != Accepted::Current || packet.incarnation != self.floor {
                        self.identity.peer_incarnation.set(packet.incarnation);
                    }
                    if received
                        .send(Received {
                            path: self.path.index,
                            packet,
                            echo_fsm_us,
                            accepted,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                Err(rejection) => {
                    let label = rejection.label();
                    // Replays carry the peer's name (they authenticated); malformed packets are
                    // the peer's when they come from its address.
                    let from_peer = from.ip() == self.path.peer.ip();
                    let suspect = match rejection {
                        Rejection::Replayed => true,
                        Rejection::Decode(
                            DecodeError::Length
                            | DecodeError::Field
                            | DecodeError::Magic
                            | DecodeError::Version,
                        ) => from_peer,
                        _ => false,
                    };
                    let first = {
                        let mut first = false;
                        self.with_stats(|s| {
                            let n = s.rejected.entry(label).or_insert(0);
                            *n += 1;
                            first = *n == 1;
                            if suspect {
                                s.peer_drops += 1;
                            }
                        });
                        first
                    };
                    if first {
                        warn!(path = %self.path.name, %from, reason = label, "dropped a keepalive (first of its kind on this path; further ones are counted in status)");
                    }
                }
            }
        }
    }

    /// Decode and check a datagram; on success returns it with the FSM-clock time of its echo.
    ///
    /// Every authenticated packet of the peer on this path is offered to the echo (see
    /// [`PathTask::remember_echo`]) before the freshness checks: the peer can prove it is alive
    /// only by echoing what it heard from us, so we must echo its packets, even its unproven
    /// first ones. A recording echoed back proves nothing to the peer: its timestamps are of
    /// another boot or too old.
    fn validate(
        &self,
        bytes: &[u8],
        guard: &mut ReplayGuard,
        now_us: u64,
    ) -> Result<(Keepalive, u64, Accepted), Rejection> {
        let packet = Keepalive::decode_with(bytes, &self.key).map_err(Rejection::Decode)?;
        if packet.cluster_id != self.identity.cluster_id {
            return Err(Rejection::ForeignCluster);
        }
        if packet.node_name != self.identity.peer_name {
            return Err(Rejection::UnknownSender);
        }
        if usize::from(packet.path_id) != self.path.index {
            return Err(Rejection::WrongPath);
        }
        self.remember_echo(&packet, guard.last().map(|(inc, _)| inc), now_us);
        let proof = self.proof(packet.echo_timestamp_us, now_us);
        match guard.check(packet.incarnation, packet.sequence, proof.is_some()) {
            Ok(accepted) => Ok((packet, proof.unwrap_or(0), accepted)),
            Err(Rejection::Unproven) if self.too_old(&packet) => Err(Rejection::Stale),
            Err(e) => Err(e),
        }
    }

    /// Sent, by the sender's wall clock, longer ago than the dead interval plus the allowed
    /// clock skew.
    fn too_old(&self, packet: &Keepalive) -> bool {
        let max_age = u64::try_from(self.identity.max_age.as_millis()).unwrap_or(u64::MAX);
        unix_ms().saturating_sub(packet.wall_clock_ms) > max_age
    }

    /// Echo the peer's newest packet of the boot last proven alive (`current`; before any, the
    /// highest `(incarnation, tx)`); any other packet replaces the echo only once the echoed one
    /// is two keepalive intervals old: a restarted peer, or one that lost its state and came
    /// back with a lower incarnation, must get its echoes to prove itself. A recording replayed
    /// while the peer is alive therefore never displaces the live peer's timestamps.
    fn remember_echo(&self, packet: &Keepalive, current: Option<u64>, now_us: u64) {
        let stale_us =
            u64::try_from(self.interval.as_micros().saturating_mul(2)).unwrap_or(u64::MAX);
        if let Ok(mut echo) = self.echo.lock() {
            let newer = match current {
                Some(inc) => {
                    packet.incarnation == inc
                        && (echo.peer_incarnation != inc
                            || packet.tx_timestamp_us > echo.peer_tx_us)
                }
                None => {
                    (packet.incarnation, packet.tx_timestamp_us)
                        > (echo.peer_incarnation, echo.peer_tx_us)
                }
            };
            if newer || now_us.saturating_sub(echo.received_at_us) > stale_us {
                *echo = Echo {
                    peer_incarnation: packet.incarnation,
                    peer_tx_us: packet.tx_timestamp_us,
                    received_at_us: now_us,
                };
            }
        }
    }

    fn record(&self, packet: &Keepalive, now_us: u64, lost: u64) {
        self.with_stats(|s| {
            s.received += 1;
            s.lost += lost;
            if packet.echo_timestamp_us != 0 {
                let rtt = now_us
                    .saturating_sub(packet.echo_timestamp_us)
                    .saturating_sub(u64::from(packet.echo_delay_us));
                s.rtt_us = Some(rtt);
            }
        });
    }
}
