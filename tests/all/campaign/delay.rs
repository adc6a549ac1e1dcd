//! Keepalive delay and jitter, as `tc qdisc ... netem delay D J` would add them, done in
//! userspace.
//!
//! Why not netem: the kernel these tests were written on has no `sch_netem` (nor NFQUEUE,
//! nor a module tree to load them from), and a relay behaves the same on every kernel, so a
//! seed's faults are the same on every machine.
//!
//! How: inside the receiving node's namespace, an nftables rule at the raw prerouting hook
//! rewrites the destination port of keepalives arriving on `lan0`/`mgmt0` to [`RELAY_PORT`].
//! The rule also marks them untracked, so the keepalive flow's conntrack entry, made before
//! the fault, plays no part. A relay socket on each path's address and [`RELAY_PORT`] holds
//! every datagram for the delay ± a uniform jitter drawn per datagram (so, as with netem,
//! a jitter larger than the keepalive interval reorders them) and then sends it to the same
//! address on the keepalive port, over loopback. The daemon does not look at a keepalive's
//! source address (keepalives are authenticated and carry their path id), so it takes the
//! datagram as one that came over the link, later. Loss rules (`faults::impair`) match the
//! relay port too, so loss and delay combine.
//!
//! Dropping the relay removes the rule first (new keepalives go straight through again) and
//! then drops what it still held, as deleting a netem qdisc drops its queue.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::faults::{nft_script, KEEPALIVE_PORT};
use crate::netns::{in_namespace, Node, Topology};

/// Where the rule diverts arriving keepalives to, on the same address.
pub const RELAY_PORT: u16 = 15405;
/// nftables table of the diversion, inside a node's namespace.
const TABLE: &str = "cloudha_delay";
/// How often an idle relay looks at its stop flag.
const TICK: Duration = Duration::from_millis(20);

/// The delay and jitter of one node's inbound keepalives, on every path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelaySpec {
    pub delay_ms: u64,
    pub jitter_ms: u64,
    /// Seeds the per-datagram jitter draws (with the path), so they repeat with the seed.
    pub seed: u64,
}

impl DelaySpec {
    /// How long one datagram is held: delay ± jitter, uniform, never below zero.
    fn hold(&self, rng: &mut StdRng) -> Duration {
        let delay = self.delay_ms as i64 * 1000;
        let jitter = self.jitter_ms as i64 * 1000;
        let offset = if jitter == 0 {
            0
        } else {
            rng.random_range(-jitter..=jitter)
        };
        Duration::from_micros((delay + offset).max(0) as u64)
    }
}

/// A running delay on one node's inbound keepalives; dropping it ends the delay.
pub struct DelayRelay {
    ns: String,
    stop: Arc<AtomicBool>,
    relayed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl DelayRelay {
    /// Starts relays on the node's LAN and mgmt addresses, then diverts its inbound
    /// keepalives to them.
    pub fn start(topo: &Topology, node: Node, spec: DelaySpec) -> io::Result<DelayRelay> {
        let ns = topo.ns(node).to_string();
        let mut relay = DelayRelay {
            ns: ns.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            relayed: Arc::new(AtomicU64::new(0)),
            threads: Vec::new(),
        };
        let addresses = [Some(node.lan_ip()), node.mgmt_ip()];
        for (path, ip) in addresses.into_iter().flatten().enumerate() {
            // Bound before the rule exists, so no diverted keepalive meets a closed port.
            let socket = in_namespace(&ns, move || UdpSocket::bind((ip, RELAY_PORT)))?;
            let rng = StdRng::seed_from_u64(spec.seed ^ ((path as u64) << 32));
            let (stop, relayed) = (relay.stop.clone(), relay.relayed.clone());
            let to = SocketAddr::from((ip, KEEPALIVE_PORT));
            relay.threads.push(std::thread::spawn(move || {
                relay_loop(&socket, to, spec, rng, &stop, &relayed)
            }));
        }
        let script = format!(
            "table inet {TABLE} {{\n chain divert {{\n  \
             type filter hook prerouting priority raw; policy accept;\n  \
             iifname {{ \"lan0\", \"mgmt0\" }} udp dport {KEEPALIVE_PORT} notrack udp dport set {RELAY_PORT}\n \
             }}\n}}\n"
        );
        nft_script(&ns, &script)?;
        Ok(relay)
    }

    /// Datagrams relayed so far (held and sent on).
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        if let Err(e) = nft_script(&self.ns, &format!("delete table inet {TABLE}\n")) {
            // A namespace already deleted took its rule with it.
            eprintln!("delay relay: removing the diversion in {}: {e}", self.ns);
        }
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Holds each datagram arriving on `socket` as `spec` says, then sends it to `to`, until
/// `stop`.
fn relay_loop(
    socket: &UdpSocket,
    to: SocketAddr,
    spec: DelaySpec,
    mut rng: StdRng,
    stop: &AtomicBool,
    relayed: &AtomicU64,
) {
    // Due time, arrival number (keeps equal due times in arrival order), datagram.
    let mut queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut arrivals = 0u64;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.peek().is_some_and(|Reverse((due, _, _))| *due <= now) {
            if let Some(Reverse((_, _, datagram))) = queue.pop() {
                // A daemon that is down refuses it (ICMP); a netem queue would have lost it too.
                if socket.send_to(&datagram, to).is_ok() {
                    relayed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let wait = queue
            .peek()
            .map_or(TICK, |Reverse((due, _, _))| {
                due.saturating_duration_since(now)
            })
            .clamp(Duration::from_millis(1), TICK);
        if socket.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        // Timeouts, and the refusals of earlier sends, surface here as errors: both harmless.
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            let due = Instant::now() + spec.hold(&mut rng);
            queue.push(Reverse((due, arrivals, buf[..len].to_vec())));
            arrivals += 1;
        }
    }
}

#[test]
fn campaign_delay_hold_is_uniform_within_the_jitter_and_repeats_with_the_seed() {
    let spec = DelaySpec {
        delay_ms: 150,
        jitter_ms: 100,
        seed: 7,
    };
    let draw = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..2000).map(|_| spec.hold(&mut rng)).collect::<Vec<_>>()
    };
    let holds = draw(7);
    assert_eq!(holds, draw(7));
    assert_ne!(holds, draw(8));
    let ms: Vec<f64> = holds.iter().map(|h| h.as_secs_f64() * 1000.0).collect();
    assert!(ms.iter().all(|m| (50.0..=250.0).contains(m)), "{ms:?}");
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    assert!((140.0..160.0).contains(&mean), "mean {mean}");
    // Both ends of the range are reached (uniform, not clustered at the delay).
    assert!(ms.iter().any(|m| *m < 60.0) && ms.iter().any(|m| *m > 240.0));
    // No delay below zero: a jitter larger than the delay is cut at zero.
    let wide = DelaySpec {
        delay_ms: 10,
        jitter_ms: 50,
        seed: 1,
    };
    let mut rng = StdRng::seed_from_u64(1);
    let zeros = (0..1000)
        .filter(|_| wide.hold(&mut rng) == Duration::ZERO)
        .count();
    assert!((250..550).contains(&zeros), "{zeros} of 1000 held for 0");
}

/// The relay delays what it says, on every path, and ends when dropped: with 150 ms on each
/// node's inbound keepalives, both daemons measure a round trip of 300 ms on both paths,
/// and nobody fails over (the delay plus an interval stays well inside the dead interval).
#[test]
fn campaign_delay_relay_holds_every_keepalive_for_the_delay() {
    use crate::e2e_local::{num, Options, Pair, SOON};
    use crate::netns::wait_until;

    let pair = Pair::start("cdelay", Options::default());
    pair.wait_ready_both();
    let rtts = |pair: &Pair| -> Option<Vec<f64>> {
        let mut all = Vec::new();
        for node in [Node::A, Node::B] {
            let status = pair.status(node)?;
            for path in status["paths"].as_array()? {
                all.push(path["rtt_ms"].as_f64()?);
            }
        }
        Some(all)
    };
    // Without the relay every path settles well under 100 ms (one sample can be a scheduling
    // stall of a loaded machine, so the test waits for a round of small ones).
    let before = wait_until("an RTT under 100 ms on every path", SOON, || {
        rtts(&pair).filter(|r| r.len() == 4 && r.iter().all(|rtt| *rtt < 100.0))
    });
    assert_eq!(before.len(), 4, "{before:?}");

    let spec = |seed| DelaySpec {
        delay_ms: 150,
        jitter_ms: 0,
        seed,
    };
    let relays = [Node::A, Node::B]
        .map(|n| DelayRelay::start(&pair.topo, n, spec(n as u64)).expect("start the delay"));
    let delayed = wait_until("an RTT of 2 x 150 ms on every path", SOON, || {
        rtts(&pair).filter(|r| r.iter().all(|ms| *ms >= 300.0))
    });
    assert!(delayed.iter().all(|ms| *ms < 500.0), "{delayed:?}");
    assert!(
        relays.iter().all(|r| r.relayed() >= 2),
        "one per path at least"
    );
    for (node, role) in [(Node::A, "active"), (Node::B, "standby")] {
        let status = pair.status(node).expect("status");
        assert_eq!(status["role"], role, "{status}");
        assert_eq!(
            num(&status["epoch"]),
            1,
            "no takeover under the delay: {status}"
        );
    }

    drop(relays);
    let after = wait_until("the RTT back under 100 ms on every path", SOON, || {
        rtts(&pair).filter(|r| r.iter().all(|ms| *ms < 100.0))
    });
    assert_eq!(after.len(), 4);
    assert_eq!(pair.status(Node::B).expect("status")["role"], "standby");
}
