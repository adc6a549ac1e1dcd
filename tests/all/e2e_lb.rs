//! Client outage behind the emulated Azure Standard load balancer (probe mode) against the
//! floating IP moved through ARM (IP-move mode), measured side by side by a client that opens
//! a new connection every 20 ms to the appliance service the pair fronts.
//!
//! The cloud's data plane runs in the switch namespace: `10.10.1.50` is the load balancer's
//! frontend (HA ports, TCP probe of each NIC's address every 5 s, the spec's minimum), and
//! `10.10.1.100` is the floating secondary IP, delivered to the NIC whose settled document
//! holds it. Each node's NIC address (10.10.1.4, 10.10.1.5) is on its `lan0`, where its
//! appliance service answers its name while its "appliance process" runs (the tracked
//! check's flag is absent). The same three failures in both modes, one pair each: the
//! tracked process dies on the active node, an operator switchover, the active VM is lost
//! (daemon killed, its link cut).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudha_azure_emulator::load_balancer::{LoadBalancerSpec, ProbeSpec};
use cloudha_azure_emulator::scenario::DEFAULT_ACTIONS;
use cloudha_azure_emulator::{Emulator, Scenario};

use crate::e2e_azure::{azure_provider, bind_in_namespace, vm, Cloud};
use crate::e2e_health::track_section;
use crate::e2e_local::{name, Options, Pair, DEAD_MS, SOON};
use crate::netns::{in_namespace, wait_until, Node};

/// The appliance service's port on each node (any port: the rule is HA ports).
const APP_PORT: u16 = 7443;
/// The health probe's port on each node's NIC address.
const PROBE_PORT: u16 = 8081;
/// The load balancer's frontend address.
const FRONTEND: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 50);
/// The floating secondary IP of the scenario.
const FLOATING: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 100);
/// The spec's smallest probe interval, and one probe to change a backend's state.
const PROBE_INTERVAL_SECS: u32 = 5;
const PROBE_THRESHOLD: u32 = 1;
/// The client's attempt period and per-attempt bound.
const CLIENT_PERIOD: Duration = Duration::from_millis(20);
const CLIENT_TIMEOUT: Duration = Duration::from_millis(300);

/// How traffic follows the active node.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// `provider.kind = "none"`, `[health_probe]`, the load balancer's frontend.
    Probe,
    /// The Azure provider's two-step move of the floating IP.
    IpMove,
}

impl Mode {
    fn target(self) -> SocketAddr {
        let ip = match self {
            Mode::Probe => FRONTEND,
            Mode::IpMove => FLOATING,
        };
        SocketAddr::V4(SocketAddrV4::new(ip, APP_PORT))
    }
}

fn nic_ip(node: Node) -> Ipv4Addr {
    match node {
        Node::A => Ipv4Addr::new(10, 10, 1, 4),
        _ => Ipv4Addr::new(10, 10, 1, 5),
    }
}

/// The appliance process is "dead" on `node` while this file exists.
fn broken_flag(dir: &Path, node: Node) -> PathBuf {
    dir.join(format!("broken-{}", name(node)))
}

/// The scenario: two appliances behind the load balancer.
fn scenario() -> Scenario {
    let mut s = Scenario::two_appliances();
    s.load_balancers
        .push(LoadBalancerSpec::appliances(ProbeSpec {
            name: "cloudha-role".into(),
            protocol: "Tcp".into(),
            port: PROBE_PORT,
            request_path: None,
            interval_in_seconds: PROBE_INTERVAL_SECS,
            probe_threshold: PROBE_THRESHOLD,
        }));
    s
}

/// The tracked check and the probe, after the mode's provider sections.
fn node_config(dir: PathBuf, mode: Mode, ids: &Emulator) -> impl Fn(Node) -> String + '_ {
    move |node| {
        let provider = match mode {
            Mode::Probe => "\n[provider]\nkind = \"none\"\n".to_string(),
            Mode::IpMove => azure_provider(ids, "two_step")(node),
        };
        format!(
            "{provider}\n[health_probe]\nlisten = \"{}:{PROBE_PORT}\"\n{}",
            nic_ip(node),
            track_section(&broken_flag(&dir, node))
        )
    }
}

fn ip(args: &[&str]) {
    crate::netns::run("ip", args).expect("ip");
}

/// The NIC addresses on the nodes, the cloud's addresses on the switch, the client's route.
fn address_the_vnet(pair: &Pair) {
    for node in [Node::A, Node::B] {
        let addr = format!("{}/24", nic_ip(node));
        ip(&[
            "-n",
            pair.topo.ns(node),
            "addr",
            "add",
            &addr,
            "dev",
            "lan0",
        ]);
    }
    let sw = pair.topo.sw_ns();
    for addr in [
        "10.10.1.1/24",
        "10.10.1.50/32",
        "10.10.1.100/32",
        "10.77.0.254/24",
    ] {
        ip(&["-n", sw, "addr", "add", addr, "dev", "br0"]);
    }
    let client = pair.topo.ns(Node::Client);
    ip(&[
        "-n",
        client,
        "route",
        "add",
        "10.10.0.0/16",
        "via",
        "10.77.0.254",
    ]);
}

/// The cloud's data plane and both appliance services, on one runtime on a thread in the
/// switch namespace (so the probes and relays leave from there); stopped on drop.
struct DataPlane {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    lb: Arc<cloudha_azure_emulator::dataplane::LoadBalancerDataPlane>,
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One appliance service: answers its node's name, unless its appliance process is broken.
async fn appliance(listener: tokio::net::TcpListener, me: &'static str, flag: PathBuf) {
    while let Ok((mut stream, _)) = listener.accept().await {
        if flag.exists() {
            continue; // the process is dead: nobody answers
        }
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, me.as_bytes()).await;
    }
}

fn start_data_plane(pair: &Pair, emu: &Arc<Emulator>, flags: &Path) -> DataPlane {
    let sw = pair.topo.sw_ns().to_string();
    let frontend = bind_in_namespace(&sw, SocketAddr::V4(SocketAddrV4::new(FRONTEND, APP_PORT)));
    let floating = bind_in_namespace(&sw, SocketAddr::V4(SocketAddrV4::new(FLOATING, APP_PORT)));
    let apps: Vec<_> = [Node::A, Node::B]
        .into_iter()
        .map(|node| {
            let addr = SocketAddr::V4(SocketAddrV4::new(nic_ip(node), APP_PORT));
            (
                bind_in_namespace(pair.topo.ns(node), addr),
                name(node),
                broken_flag(flags, node),
            )
        })
        .collect();
    let lb = emu
        .load_balancer_data_plane("lb-appliances")
        .expect("the scenario's load balancer");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (emu, plane) = (emu.clone(), lb.clone());
    let thread = std::thread::spawn(move || {
        in_namespace(&sw, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = |l| tokio::net::TcpListener::from_std(l).expect("tokio listener");
                for (l, me, flag) in apps {
                    tokio::spawn(appliance(listener(l), me, flag));
                }
                tokio::spawn(emu.serve_private_ip(FLOATING, listener(floating)));
                tokio::spawn(plane.run(vec![listener(frontend)]));
                let _ = stopped.await;
            });
        })
    });
    DataPlane {
        stop: Some(stop),
        thread: Some(thread),
        lb,
    }
}

/// One attempt of the client: which node answered, if any.
fn attempt(target: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&target, CLIENT_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).ok()?;
    let _ = stream.write_all(b"hello");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    (!answer.is_empty()).then_some(answer)
}

type Samples = Arc<std::sync::Mutex<Vec<(Instant, Option<String>)>>>;

/// The client, in its namespace, until `stop`: `(when, who answered)` per attempt.
fn client(
    ns: String,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    samples: Samples,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        in_namespace(&ns, move || {
            // Bounded: a step never runs longer than a few SOONs.
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let at = Instant::now();
                let who = attempt(target);
                samples.lock().expect("samples").push((at, who));
                std::thread::sleep(CLIENT_PERIOD.saturating_sub(at.elapsed()));
            }
        })
    })
}

/// The longest time from an answered attempt to the next answered one.
fn longest_outage(samples: &[(Instant, Option<String>)]) -> Duration {
    let answered: Vec<Instant> = samples
        .iter()
        .filter(|(_, who)| who.is_some())
        .map(|(at, _)| *at)
        .collect();
    answered
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX)
}

/// Whether the last `n` attempts were all answered by `who`.
fn last_answered_by(samples: &Samples, n: usize, who: &str) -> bool {
    let s = samples.lock().expect("samples");
    s.len() >= n
        && s[s.len() - n..]
            .iter()
            .all(|(_, w)| w.as_deref() == Some(who))
}

/// Runs `act` while the client polls, until `to` has answered ten attempts in a row;
/// returns the client's longest outage.
fn observe(
    pair: &mut Pair,
    mode: Mode,
    from: Node,
    to: Node,
    what: &str,
    act: impl FnOnce(&mut Pair),
) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Samples = Arc::default();
    let poller = client(
        pair.topo.ns(Node::Client).to_string(),
        mode.target(),
        stop.clone(),
        samples.clone(),
    );
    wait_until(
        &format!(
            "{mode:?} {what}: the client answered by {} before the step",
            name(from)
        ),
        SOON,
        || last_answered_by(&samples, 5, name(from)).then_some(()),
    );
    act(pair);
    let deadline = Instant::now() + SOON * 4;
    while !last_answered_by(&samples, 10, name(to)) {
        assert!(
            Instant::now() < deadline,
            "{mode:?} {what}: the client is not answered by {}\n{}",
            name(to),
            pair.logs()
        );
        std::thread::sleep(CLIENT_PERIOD);
    }
    stop.store(true, Ordering::SeqCst);
    poller.join().expect("client");
    let samples = samples.lock().expect("samples");
    let outage = longest_outage(&samples);
    eprintln!(
        "lb {mode:?} {what}: {} attempts, longest without an answer {outage:?}",
        samples.len()
    );
    assert!(samples.len() > 20, "the client ran");
    outage
}

/// A pair in `mode` behind the data plane, A active and its service reachable.
struct Setup {
    // Field order: the daemons go before the data plane and the cloud.
    pair: Pair,
    plane: DataPlane,
    _cloud: Option<Cloud>,
    flags: tempfile::TempDir,
}

fn start(tag: &str, mode: Mode) -> Setup {
    let opts = Options {
        preempt: false,
        mgmt_path: false,
        ..Options::default()
    };
    let ids = Emulator::new(&scenario()).expect("scenario");
    let flags = tempfile::tempdir().expect("tempdir");
    let pair = Pair::prepare(
        tag,
        opts,
        node_config(flags.path().to_path_buf(), mode, &ids),
    );
    address_the_vnet(&pair);
    let emu = Emulator::new(&scenario()).expect("scenario");
    emu.update_settings(|s| s.lro_retry_after_secs = 1);
    // A NIC PUT carries the pool membership: ARM checks the join on the pool.
    let mut actions = DEFAULT_ACTIONS.to_vec();
    actions.push("Microsoft.Network/loadBalancers/backendAddressPools/join/action");
    for node in [Node::A, Node::B] {
        assert!(emu.set_permissions(vm(node), &actions, &[]));
    }
    let cloud = (mode == Mode::IpMove).then(|| Cloud::serve_emulator(&pair, emu.clone()));
    let plane = start_data_plane(&pair, &emu, flags.path());
    let pair = pair.start_both();
    Setup {
        pair,
        plane,
        _cloud: cloud,
        flags,
    }
}

/// The three failures in `mode`; returns `(what, outage)` per step.
fn scenario_outages(tag: &str, mode: Mode) -> Vec<(&'static str, Duration)> {
    let Setup {
        mut pair,
        plane,
        _cloud,
        flags,
    } = start(tag, mode);
    if mode == Mode::Probe {
        // Within a few probe rounds of fw-a's probe opening (the first round may predate it).
        let deadline = Instant::now() + Duration::from_secs(u64::from(4 * PROBE_INTERVAL_SECS));
        while plane.lb.healthy() != vec![nic_ip(Node::A)] {
            assert!(
                Instant::now() < deadline,
                "after {} probe rounds the load balancer has {:?} in rotation; fw-a's probe: {}\npaths a {:#}\npaths b {:#}\n{}",
                plane.lb.rounds(),
                plane.lb.healthy(),
                pair.status(Node::A).unwrap_or_default()["health_probe"],
                pair.status(Node::A).unwrap_or_default()["paths"],
                pair.status(Node::B).unwrap_or_default()["paths"],
                pair.logs()
            );
            std::thread::sleep(CLIENT_PERIOD);
        }
    }
    let dir = flags.path().to_path_buf();
    let broken = observe(
        &mut pair,
        mode,
        Node::A,
        Node::B,
        "tracked process dies",
        |_| {
            std::fs::write(broken_flag(&dir, Node::A), b"").expect("break fw-a");
        },
    );
    std::fs::remove_file(broken_flag(&dir, Node::A)).expect("repair fw-a");
    let deadline = Instant::now() + SOON;
    while pair.role(Node::A).as_deref() != Some("standby") {
        assert!(
            Instant::now() < deadline,
            "fw-a not standby after its repair: {:#}\nfw-b: {:#}\n{}",
            pair.status(Node::A).unwrap_or_default(),
            pair.status(Node::B).unwrap_or_default()["paths"],
            pair.logs()
        );
        std::thread::sleep(CLIENT_PERIOD);
    }
    let switchover = observe(&mut pair, mode, Node::B, Node::A, "switchover", |pair| {
        let out = pair.cli(Node::B, &["switchover"]);
        assert!(out.status.success(), "{out:?}");
    });
    let lost = observe(
        &mut pair,
        mode,
        Node::A,
        Node::B,
        "active VM lost",
        |pair| {
            pair.daemon(Node::A).kill9().expect("kill fw-a");
            pair.topo.set_lan(Node::A, false).expect("cut fw-a");
        },
    );
    if mode == Mode::Probe {
        // Never both in rotation: the probe answers on the active node only.
        assert_eq!(plane.lb.healthy(), vec![nic_ip(Node::B)]);
        assert!(plane.lb.rounds() > 3, "the load balancer probed");
    }
    vec![
        ("tracked process dies", broken),
        ("switchover", switchover),
        ("active VM lost", lost),
    ]
}

/// The bound of a probe-mode outage: the new node opens its probe within its dead interval
/// (three of them when it lost the role lately: the damping) or the tracked check's `fall`;
/// the load balancer sees it at its next probe round (`PROBE_THRESHOLD` probes); plus the
/// client's attempt bound on both sides.
fn probe_bound() -> Duration {
    Duration::from_millis(3 * DEAD_MS + 500)
        + Duration::from_secs(u64::from(PROBE_INTERVAL_SECS * PROBE_THRESHOLD))
        + CLIENT_TIMEOUT * 2
}

#[test]
fn e2e_lb_probe_mode_moves_client_traffic_within_one_probe_round() {
    let steps = scenario_outages("lbp", Mode::Probe);
    for (what, outage) in &steps {
        assert!(
            *outage <= probe_bound(),
            "probe mode, {what}: the client went {outage:?} without an answer (bound {:?})",
            probe_bound()
        );
    }
}

#[test]
fn e2e_lb_ip_move_mode_side_by_side_on_the_same_data_plane() {
    let steps = scenario_outages("lbm", Mode::IpMove);
    for (what, outage) in &steps {
        // The two-step move: detection, the removal's propagation, the add's propagation.
        assert!(
            *outage <= Duration::from_secs(30),
            "IP-move mode, {what}: the client went {outage:?} without an answer"
        );
    }
}
