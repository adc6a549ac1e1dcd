//! End to end: freshness across restarts (issue 15 H1, H2) and the undamped preemption
//! (issue 16), with two real daemons in namespaces and real keepalives captured off the wire.
//!
//! Capture: a python3 `AF_PACKET` socket in the receiving node's namespace keeps the UDP
//! payloads the peer sent to the keepalive port on `lan0`. Replay: a python3 sender in the
//! client namespace (a third host, its own source address: keepalives are accepted from any
//! address) sends them round-robin every 2 ms to the receiver's LAN keepalive port.
//!
//! H2 ("the peer's incarnation went backwards") is simulated without a test knob in the
//! product: the receiver's `<state_dir>/peer_incarnation` is planted with a value far above the
//! peer's current incarnation, exactly what a peer that lost its state directory and whose
//! clock is behind its previous boot's looks like from the receiver.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloudha::keepalive::packet::Keepalive;

use crate::e2e_local::{name, num, Options, Pair, DEAD_MS, KEY, PORT, SOON};
use crate::netns::{wait_until, Daemon, Node};

const CAPTURE: &str = r#"
import socket, sys, time
src = socket.inet_aton(sys.argv[1]); port = int(sys.argv[2])
end = time.time() + float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
s.bind(('lan0', 0)); s.settimeout(0.1)
out = open(sys.argv[4], 'w')
while time.time() < end:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    ip = f[14:]
    if len(ip) < 28 or ip[9] != 17 or ip[12:16] != src:
        continue
    udp = ip[(ip[0] & 15) * 4:]
    if int.from_bytes(udp[2:4], 'big') != port:
        continue
    out.write(udp[8:].hex() + '\n'); out.flush()
"#;

const REPLAY: &str = r#"
import socket, sys, time
pkts = [bytes.fromhex(l) for l in open(sys.argv[3]) if l.strip()]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + float(sys.argv[4]); gap = float(sys.argv[5]); loop = sys.argv[6] == '1'
i = 0
while time.time() < end and pkts and (loop or i < len(pkts)):
    s.sendto(pkts[i % len(pkts)], (sys.argv[1], int(sys.argv[2]))); i += 1
    time.sleep(gap)
"#;

/// Captures, in `at`'s namespace, what `from` sends to its LAN keepalive port for `secs`.
fn start_capture(pair: &Pair, at: Node, from: Node, secs: f64, file: &Path) -> Daemon {
    pair.topo
        .spawn(
            at,
            Path::new("python3"),
            &[
                "-c",
                CAPTURE,
                &from.lan_ip().to_string(),
                &PORT.to_string(),
                &secs.to_string(),
                file.to_str().expect("utf-8 path"),
            ],
            &pair.dir.path().join("capture.log"),
        )
        .expect("start capture")
}

/// How a recording is replayed.
#[derive(Clone, Copy)]
enum Replay {
    /// Round-robin, one every 2 ms.
    Flood,
    /// Each once, in order, one every 50 ms (so that each is new to a restarted replay guard).
    InOrder,
}

/// Replays `packets` from the client namespace to `to`'s LAN keepalive port for `secs`.
fn start_replay(pair: &Pair, to: Node, packets: &[Vec<u8>], secs: f64, how: Replay) -> Daemon {
    let (gap, repeat) = match how {
        Replay::Flood => ("0.002", "1"),
        Replay::InOrder => ("0.05", "0"),
    };
    let file = pair.dir.path().join(format!("replay-{}.hex", name(to)));
    let text: String = packets
        .iter()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect();
    std::fs::write(&file, text).expect("write replay file");
    let to = SocketAddr::new(to.lan_ip().into(), PORT);
    pair.topo
        .spawn(
            Node::Client,
            Path::new("python3"),
            &[
                "-c",
                REPLAY,
                &to.ip().to_string(),
                &to.port().to_string(),
                file.to_str().expect("utf-8 path"),
                &secs.to_string(),
                gap,
                repeat,
            ],
            &pair.dir.path().join("replay.log"),
        )
        .expect("start replay")
}

/// The captured keepalives that authenticate and satisfy `keep`.
fn captured(file: &Path, keep: impl Fn(&Keepalive) -> bool) -> Vec<Vec<u8>> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            (0..l.len() / 2)
                .map(|i| u8::from_str_radix(l.get(2 * i..2 * i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()
        })
        .filter(|bytes| {
            Keepalive::decode(bytes, KEY.as_bytes())
                .map(|k| keep(&k))
                .unwrap_or(false)
        })
        .collect()
}

/// Waits until the capture has kept one of the peer's keepalives: its socket is open (on a
/// loaded machine python3 alone can take longer to start than any fixed pause).
fn wait_capturing(file: &Path) {
    wait_until("the capture to keep a keepalive", SOON, || {
        std::fs::read_to_string(file)
            .ok()
            .filter(|text| text.lines().any(|l| !l.is_empty()))
            .map(drop)
    });
}

/// Waits for the capture process to end (it stops by itself after its duration).
fn finish(mut capture: Daemon) {
    wait_until("the capture to end", SOON, || {
        capture.try_wait().ok().flatten().map(drop)
    });
}

/// How often the node's log shows a transition to active (every reason for becoming active
/// ends with "(epoch N)"; the log's field formatting may carry colour codes).
fn went_active(pair: &Pair, node: Node) -> usize {
    let log = std::fs::read_to_string(pair.dir.path().join(format!("{}.log", name(node))))
        .unwrap_or_default();
    log.lines().filter(|l| l.contains("(epoch ")).count()
}

fn capture_log(pair: &Pair) -> String {
    std::fs::read_to_string(pair.dir.path().join("capture.log")).unwrap_or_default()
}

fn state_file(pair: &Pair, node: Node) -> PathBuf {
    pair.dir
        .path()
        .join(format!("{}-state", name(node)))
        .join("peer_incarnation")
}

fn rejected(status: &serde_json::Value, reason: &str) -> u64 {
    status["paths"][0]["rejected"][reason].as_u64().unwrap_or(0)
}

/// H1 (a): the peer's "leaving" adverts of an earlier boot, replayed every 2 ms while the
/// standby restarts, must not make it go active.
#[test]
fn e2e_replayed_leaving_adverts_of_an_earlier_boot_do_not_make_a_restarted_standby_active() {
    let opts = Options {
        preempt: false,
        ..Options::default()
    };
    let mut pair = Pair::start("e2eh1a", opts);
    // fw-b's "leaving" adverts, captured at fw-a while fw-b stops.
    let file = pair.dir.path().join("b-leaving.hex");
    let capture = start_capture(&pair, Node::A, Node::B, 5.0, &file);
    wait_capturing(&file);
    pair.daemon(Node::B)
        .terminate(Duration::from_secs(10))
        .expect("stop fw-b");
    finish(capture);
    let leaving = captured(&file, |k| k.advert.leaving);
    assert!(
        !leaving.is_empty(),
        "no leaving advert captured: {}",
        capture_log(&pair)
    );

    // fw-b comes back and becomes the active node; fw-a restarts as the standby.
    pair.spawn(Node::B);
    pair.wait_role(Node::B, "standby");
    pair.daemon(Node::A).kill9().expect("kill fw-a");
    pair.wait_role(Node::B, "active");
    let before = went_active(&pair, Node::A);
    let _replay = start_replay(&pair, Node::A, &leaving, 4.0, Replay::Flood);
    std::thread::sleep(Duration::from_millis(100));
    pair.spawn(Node::A);
    pair.wait_role(Node::A, "standby");
    // Keep watching while the replay lasts.
    let status = wait_until("the replay to be dropped for 3 s", SOON, || {
        let s = pair.status(Node::A)?;
        (s["role"] == "standby" && rejected(&s, "replayed") + rejected(&s, "unproven") > 500)
            .then_some(s)
    });
    assert_eq!(went_active(&pair, Node::A), before, "{}", pair.logs());
    assert_eq!(pair.role(Node::B).as_deref(), Some("active"));
    let alarms = status["alarms"].to_string();
    assert!(alarms.contains("peer_bad_packets"), "{alarms}");
}

/// H1 (b): with the active dead, replayed "active" adverts must not suppress the failover of
/// a restarted standby.
#[test]
fn e2e_replayed_active_adverts_do_not_suppress_the_failover_of_a_restarted_standby() {
    let mut pair = Pair::start("e2eh1b", Options::default());
    let file = pair.dir.path().join("a-active.hex");
    finish(start_capture(&pair, Node::B, Node::A, 4.0, &file));
    let active = captured(&file, |k| k.advert.role == cloudha::fsm::Role::Active);
    assert!(
        active.len() > 5,
        "captured {} active adverts: {}",
        active.len(),
        capture_log(&pair)
    );

    pair.daemon(Node::A).kill9().expect("kill fw-a");
    pair.daemon(Node::B).kill9().expect("kill fw-b");
    // In order, each once: every one is new to the restarted node's replay guard, and they
    // last 2 s, four dead intervals.
    let _replay = start_replay(&pair, Node::B, &active, 6.0, Replay::InOrder);
    std::thread::sleep(Duration::from_millis(100));
    pair.spawn(Node::B);
    let status = pair.wait_role(Node::B, "active");
    // Straight from init: the replayed "active" adverts were never believed (believed, they
    // made it stand by until the replay ended, then take over as "peer silent").
    let reason = status["last_transition"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("no peer heard"), "{status}");
    let status = wait_until("fw-b to drop the replay", SOON, || {
        pair.status(Node::B)
            .filter(|s| rejected(s, "unproven") + rejected(s, "stale") >= active.len() as u64 / 2)
    });
    assert_eq!(status["role"], "active");
    assert_eq!(status["peer"]["alive"], false);
}

/// H2: the peer's incarnation went backwards (lost state, clock behind). The receiver drops
/// its keepalives as replayed only until the liveness handshake proves the new boot: no lasting
/// split brain, an alarm meanwhile, and the stored incarnation follows the peer.
#[test]
fn e2e_a_peer_whose_incarnation_went_backwards_is_recovered_through_the_handshake() {
    let mut pair = Pair::start("e2eh2", Options::default());
    let file = pair.dir.path().join("a-all.hex");
    finish(start_capture(&pair, Node::B, Node::A, 1.0, &file));
    let recorded = captured(&file, |_| true);
    let incarnation = Keepalive::decode(&recorded[0], KEY.as_bytes())
        .expect("captured keepalive")
        .incarnation;
    pair.daemon(Node::B).kill9().expect("kill fw-b");
    // fw-b "saw" a boot of fw-a far ahead of its current one.
    let planted = incarnation + 1_000_000_000;
    std::fs::write(state_file(&pair, Node::B), format!("{planted}\n")).expect("plant");
    // The recording of fw-a's (current) boot is replayed meanwhile too.
    let _replay = start_replay(&pair, Node::B, &recorded, 4.0, Replay::InOrder);
    let started = Instant::now();
    pair.spawn(Node::B);
    let status = pair.wait_role(Node::B, "standby");
    let recovered_in = started.elapsed();
    assert_eq!(pair.role(Node::A).as_deref(), Some("active"));
    assert_eq!(status["peer"]["state"], "active", "{status}");
    assert!(
        recovered_in < Duration::from_secs(5),
        "recovered after {recovered_in:?}"
    );
    let stored: u64 = std::fs::read_to_string(state_file(&pair, Node::B))
        .expect("stored incarnation")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(
        stored, incarnation,
        "the stored incarnation follows the peer"
    );
    assert!(
        pair.logs().contains("lower incarnation"),
        "no note of the backwards incarnation:\n{}",
        pair.logs()
    );
    // Stays that way: no split brain while the replay goes on.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pair.role(Node::B).as_deref(), Some("standby"));
    assert_eq!(pair.role(Node::A).as_deref(), Some("active"));
}

/// Issue 16: a preemption is a planned handover: the node it relieves is not damped, so a
/// kill of the preempting node right after is detected in one dead interval (timed from
/// outside: kill to the standby's transition to active).
#[test]
fn e2e_after_a_preemption_a_kill_is_detected_within_one_dead_interval() {
    let mut pair = Pair::start("e2epre", Options::default());
    pair.daemon(Node::A).kill9().expect("kill fw-a");
    pair.wait_role(Node::B, "active");
    pair.spawn(Node::A);
    pair.wait_role(Node::A, "standby");
    let status = pair.wait_role(Node::A, "active");
    assert!(
        status["last_transition"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("preempting")),
        "{status}"
    );
    pair.wait_role(Node::B, "standby");
    // Within the damping window (10 dead intervals after the step-down).
    let killed = Instant::now();
    pair.daemon(Node::A).kill9().expect("kill fw-a again");
    let status = wait_until("fw-b to take over", SOON, || {
        pair.status(Node::B).filter(|s| s["role"] == "active")
    });
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(2 * DEAD_MS),
        "takeover {took:?} after the kill (dead interval {DEAD_MS} ms)\n{status}"
    );
    let detection = num(&status["last_failover"]["detection_ms"]);
    assert!(detection < 2 * DEAD_MS, "detection {detection} ms");
    let reason = status["last_transition"]["reason"].as_str().unwrap_or("");
    assert!(!reason.contains("damped"), "{reason}");
}

/// H2, the receiver running throughout: fw-a's first boot had its clock far ahead (planted
/// `incarnation` file), then fw-a loses its state directory and restarts with the real clock,
/// a lower incarnation. fw-b, which saw the higher one, must take the new boot through the
/// handshake; fw-a then preempts, and exactly one node is active (before: fw-b dropped fw-a as
/// `replayed` for good and both stayed active). Its recorded first-boot keepalives are replayed
/// at fw-b meanwhile.
#[test]
fn e2e_a_running_node_recovers_a_peer_that_came_back_with_a_lower_incarnation() {
    let pair = Pair::prepare(
        "e2eh2run",
        Options::default(),
        crate::e2e_local::local_provider,
    );
    let state = pair.dir.path().join("fw-a-state");
    std::fs::create_dir_all(&state).expect("state dir");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let ahead = now_ms + 1_000_000_000;
    std::fs::write(state.join("incarnation"), format!("{ahead}\n")).expect("plant");
    let mut pair = pair.start_both();
    let file = pair.dir.path().join("a-first-boot.hex");
    finish(start_capture(&pair, Node::B, Node::A, 1.0, &file));
    let recorded = captured(&file, |k| k.incarnation > ahead);
    assert!(!recorded.is_empty(), "{}", capture_log(&pair));

    pair.daemon(Node::A).kill9().expect("kill fw-a");
    std::fs::remove_dir_all(&state).expect("lose fw-a's state");
    pair.wait_role(Node::B, "active");
    let _replay = start_replay(&pair, Node::B, &recorded, 4.0, Replay::InOrder);
    pair.spawn(Node::A);
    pair.wait_role(Node::A, "standby");
    // fw-a preempts after the hold-down; fw-b hears it and steps down.
    pair.wait_role(Node::A, "active");
    let status = pair.wait_role(Node::B, "standby");
    assert_eq!(status["peer"]["state"], "active", "{status}");
    let stored: u64 = std::fs::read_to_string(state_file(&pair, Node::B))
        .expect("stored incarnation")
        .trim()
        .parse()
        .expect("a number");
    assert!(stored < ahead, "fw-b still stores {stored}");
    assert!(pair.logs().contains("lower incarnation"), "{}", pair.logs());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pair.role(Node::A).as_deref(), Some("active"));
    assert_eq!(pair.role(Node::B).as_deref(), Some("standby"));
}
