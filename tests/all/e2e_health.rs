//! Tracked health and the load-balancer probe, end to end with two real daemons in namespaces:
//! a tracked command failing on the active node, an interface set down in its namespace, and an
//! independent client polling both nodes' health probes through failovers and switchovers.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::e2e_local::{local_provider, name, Options, Pair, DEAD_MS, SOON};
use crate::e2e_ops::{events, metric, scrape};
use crate::netns::{self, wait_until, Node, FLOATING_IP};

/// The probe's TCP port on each node's LAN address.
const PROBE_PORT: u16 = 8080;

/// A tracked check that fails while `<dir>/fail-<node>` exists (saying so on stdout).
fn failing_flag(dir: &Path, node: Node) -> std::path::PathBuf {
    dir.join(format!("fail-{}", name(node)))
}

fn track_command(dir: &Path) -> impl Fn(Node) -> String + '_ {
    move |node| {
        format!(
            "{}{}",
            local_provider(node),
            track_section(&failing_flag(dir, node))
        )
    }
}

/// A `[[track]]` check named `appliance` that fails while `flag` exists (saying so on stdout),
/// every 100 ms with `fall` and `rise` 2.
pub(crate) fn track_section(flag: &Path) -> String {
    format!(
        r#"
[[track]]
name = "appliance"
command = ["/bin/sh", "-c", 'if [ -e {flag} ]; then echo appliance process not running; exit 1; fi']
interval = "100ms"
timeout = "1s"
fall = 2
rise = 2
"#,
        flag = flag.display()
    )
}

fn track(status: &Value, index: usize) -> &Value {
    &status["tracks"][index]
}

#[test]
fn e2e_health_a_failing_tracked_command_on_the_active_node_hands_over_and_shows_why() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let pair = Pair::prepare("hltrack", Options::default(), track_command(scratch.path()));
    let pair = pair.start_both();
    let a = wait_until("fw-a's check healthy", SOON, || {
        pair.status(Node::A)
            .filter(|s| track(s, 0)["healthy"] == true)
    });
    assert_eq!(a["role"], "active");

    std::fs::write(failing_flag(scratch.path(), Node::A), "").expect("fail the check");
    let b = wait_until("fw-b active and converged", SOON, || {
        pair.status(Node::B)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    assert!(
        b["last_transition"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("peer is handing over") || r.contains("peer is in fault")),
        "{b:#}"
    );
    // The floating IP answers from B now: the handover is real, not only in status.
    let b_mac = pair.topo.lan_mac(Node::B).expect("fw-b's MAC");
    wait_until("the floating IP answered by fw-b", SOON, || {
        (pair
            .topo
            .answering_mac(Node::Client, &FLOATING_IP.to_string())
            == Some(b_mac.clone()))
        .then_some(())
    });

    let a = wait_until("fw-a in fault with the alarm raised", SOON, || {
        pair.status(Node::A).filter(|s| {
            s["role"] == "fault"
                && s["alarms"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["name"] == "track_failing"))
        })
    });
    let check = track(&a, 0);
    assert_eq!(check["healthy"], false, "{a:#}");
    assert!(
        check["detail"].as_str().is_some_and(
            |d| d.contains("appliance process not running") && d.contains("2 times in a row")
        ),
        "{check:#}"
    );
    let reason = a["last_transition"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("tracked check appliance failing"),
        "the step-down names the check: {reason}"
    );
    let indicator = a["indicators"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["name"] == "tracked_checks"))
        .expect("a tracked_checks indicator");
    assert_eq!(indicator["ok"], false);
    let human = String::from_utf8_lossy(&pair.cli(Node::A, &["status"]).stdout).into_owned();
    assert!(
        human.contains("[FAIL] appliance") && human.contains("ALARM track_failing"),
        "{human}"
    );
    let journal = events(&pair, Node::A);
    assert!(
        journal.iter().any(|e| e["kind"] == "health"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("tracked check appliance FAILING"))),
        "{journal:#?}"
    );
    let samples = scrape(&pair, Node::A);
    assert_eq!(
        metric(&samples, "cloudha_track_healthy{check=\"appliance\"}"),
        0.0
    );
    assert_eq!(
        metric(&samples, "cloudha_alarm{alarm=\"track_failing\"}"),
        1.0
    );
    assert_eq!(metric(&samples, "cloudha_role{role=\"fault\"}"), 1.0);

    // Healthy again: back to standby, then (preempt on, higher priority) active after the
    // hold-down.
    std::fs::remove_file(failing_flag(scratch.path(), Node::A)).expect("heal the check");
    let a = wait_until("fw-a active again", SOON, || {
        pair.status(Node::A)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    assert_eq!(track(&a, 0)["healthy"], true);
    assert!(
        !a["alarms"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "track_failing")),
        "{a:#}"
    );
    pair.wait_role(Node::B, "standby");
}

#[test]
fn e2e_health_an_interface_set_down_in_the_namespace_hands_over() {
    let pair = Pair::prepare("hlif", Options::default(), |node| {
        format!(
            "{}\n[[track]]\nname = \"wan\"\ninterface = \"wan0\"\ninterval = \"100ms\"\n",
            local_provider(node)
        )
    });
    // A WAN link in each node's namespace: a veth pair whose far end stays in the namespace.
    for node in [Node::A, Node::B] {
        let ns = pair.topo.ns(node).to_string();
        for args in [
            vec![
                "-n", &ns, "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p",
            ],
            vec!["-n", &ns, "link", "set", "wan0p", "up"],
            vec!["-n", &ns, "link", "set", "wan0", "up"],
        ] {
            let out = std::process::Command::new("ip")
                .args(&args)
                .output()
                .expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }
    }
    let pair = pair.start_both();
    wait_until("fw-a's wan check healthy", SOON, || {
        pair.status(Node::A)
            .filter(|s| track(s, 0)["healthy"] == true)
    });

    let ns = pair.topo.ns(Node::A).to_string();
    let down = std::process::Command::new("ip")
        .args(["-n", &ns, "link", "set", "wan0", "down"])
        .output()
        .expect("ip link set down");
    assert!(down.status.success(), "{down:?}");
    wait_until("fw-b active and converged", SOON, || {
        pair.status(Node::B)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    let a = pair.wait_role(Node::A, "fault");
    let detail = track(&a, 0)["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.contains("wan0 is administratively down"), "{a:#}");

    // The far end down instead: the link is up but has no carrier.
    let up = std::process::Command::new("ip")
        .args(["-n", &ns, "link", "set", "wan0", "up"])
        .output()
        .expect("ip link set up");
    assert!(up.status.success());
    let far = std::process::Command::new("ip")
        .args(["-n", &ns, "link", "set", "wan0p", "down"])
        .output()
        .expect("ip link set far end down");
    assert!(far.status.success());
    let a = wait_until("fw-a's check says no carrier", SOON, || {
        pair.status(Node::A).filter(|s| {
            track(s, 0)["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no carrier"))
        })
    });
    assert_eq!(a["role"], "fault", "{a:#}");
}

/// One sample of both probes: when, and whether A's and B's accepted a connection.
type Sample = (Instant, bool, bool);

/// Polls both nodes' probes from the client namespace every 10 ms until `stop` is set.
fn poll_probes(
    topo_client_ns: String,
    mode: Mode,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        netns::in_namespace(&topo_client_ns, move || {
            let open = |node: Node| {
                let addr = SocketAddr::from((node.lan_ip(), PROBE_PORT));
                let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(50));
                match (mode, stream) {
                    (_, Err(_)) => false,
                    (Mode::Tcp, Ok(_)) => true,
                    (Mode::Http, Ok(stream)) => http_ok(stream),
                }
            };
            let mut samples = Vec::new();
            // Bounded: at most ten minutes of samples whatever happens to the test.
            for _ in 0..60_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                samples.push((Instant::now(), open(Node::A), open(Node::B)));
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    })
}

/// How the client probes: a TCP connect, or an HTTP GET of [`HTTP_PATH`] answered 200 (what
/// Azure's and AWS's load balancers count as healthy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Tcp,
    Http,
}

const HTTP_PATH: &str = "/healthz";

fn http_ok(mut stream: TcpStream) -> bool {
    use std::io::{Read, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let request = format!("GET {HTTP_PATH} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
}

/// Samples with both probes open, and the longest time from the last sample with one open to
/// the next with one open.
fn analyse(samples: &[Sample]) -> (usize, Duration) {
    let both_open = samples.iter().filter(|(_, a, b)| *a && *b).count();
    let mut longest = Duration::ZERO;
    let mut last_open: Option<Instant> = None;
    for (at, a, b) in samples {
        if *a || *b {
            if let Some(prev) = last_open {
                longest = longest.max(at.duration_since(prev));
            }
            last_open = Some(*at);
        }
    }
    (both_open, longest)
}

fn with_probe(provider: fn(Node) -> String, mode: Mode) -> impl Fn(Node) -> String {
    move |node| {
        let http = match mode {
            Mode::Tcp => String::new(),
            Mode::Http => format!("protocol = \"http\"\npath = \"{HTTP_PATH}\"\n"),
        };
        format!(
            "{}\n[health_probe]\nlisten = \"{}:{PROBE_PORT}\"\n{http}",
            provider(node),
            node.lan_ip()
        )
    }
}

/// `provider.kind = "none"`: nothing moves but the probe's answer.
fn no_provider(_node: Node) -> String {
    "\n[provider]\nkind = \"none\"\n".into()
}

fn no_preemption() -> Options {
    Options {
        preempt: false,
        ..Options::default()
    }
}

/// Both nodes' keepalive path counters, for a failure message.
fn both_paths(pair: &Pair) -> String {
    [Node::A, Node::B]
        .iter()
        .map(|&n| {
            let s = pair.status(n).unwrap_or_default();
            format!("{}: role {} paths {}", name(n), s["role"], s["paths"])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One step of the probe scenario as the client saw it.
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) what: &'static str,
    /// Longest time with neither probe open.
    pub(crate) outage: Duration,
    /// The new active node's takeover, from its decision to convergence (status).
    pub(crate) takeover: Duration,
}

/// The takeover time of `node`'s last failover, once it converged.
fn takeover_time(pair: &Pair, node: Node) -> Duration {
    let ms = wait_until("the failover's total time", SOON, || {
        pair.status(node)
            .and_then(|s| s["last_failover"]["total_ms"].as_u64())
    });
    Duration::from_millis(ms)
}

/// Poll both probes from the client while `act` runs and until `node`'s probe is open (plus
/// a little, so the steady state after is seen too).
fn observe(pair: &mut Pair, mode: Mode, node: Node, act: impl FnOnce(&mut Pair)) -> Vec<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_probes(pair.topo.ns(Node::Client).to_string(), mode, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    act(pair);
    let deadline = Instant::now() + SOON;
    while pair
        .status(node)
        .is_none_or(|s| s["health_probe"]["open"] != true)
    {
        assert!(
            Instant::now() < deadline,
            "{}'s probe still closed: {:#}",
            name(node),
            pair.status(node).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    poller.join().expect("poller")
}

/// Run the probe scenario on a prepared pair (preemption off, so that no step races a
/// hold-down): failover on kill; the killed node back as standby takes the role with
/// `cloudha switchover`; an operator switchover on the active node; a graceful stop (SIGTERM)
/// of the active node. Asserts that the probes were never both open and
/// returns each step's outage as the client measured it.
pub(crate) fn probe_scenario(pair: Pair, mode: Mode) -> Vec<Step> {
    let mut pair = pair.start_both();
    wait_until("fw-a's probe open", SOON, || {
        pair.status(Node::A)
            .filter(|s| s["health_probe"]["open"] == true)
    });
    let b = pair.status(Node::B).expect("fw-b status");
    assert_eq!(b["health_probe"]["open"], false, "{b:#}");

    let kill = observe(&mut pair, mode, Node::B, |pair| {
        pair.daemon(Node::A).kill9().expect("kill fw-a");
    });
    let kill_takeover = takeover_time(&pair, Node::B);
    pair.spawn(Node::A);
    pair.wait_role(Node::A, "standby");
    // The standby takes the role from the healthy active node (what a preemption does, without
    // waiting a hold-down): the new active node is active while the old one still is.
    let take = observe(&mut pair, mode, Node::A, |pair| {
        let out = pair.cli(Node::A, &["switchover"]);
        assert!(out.status.success(), "{out:?}\n{}", both_paths(pair));
    });
    let take_takeover = takeover_time(&pair, Node::A);
    let switchover = observe(&mut pair, mode, Node::B, |pair| {
        let out = pair.cli(Node::A, &["switchover"]);
        assert!(out.status.success(), "{out:?}\n{}", both_paths(pair));
    });
    let switchover_takeover = takeover_time(&pair, Node::B);
    let a = pair.status(Node::A).expect("fw-a status");
    assert_eq!(
        a["role"],
        "standby",
        "fw-a after the switchover: {}",
        both_paths(&pair)
    );
    let sigterm = observe(&mut pair, mode, Node::A, |pair| {
        let (_, graceful) = pair
            .daemon(Node::B)
            .terminate(Duration::from_secs(10))
            .expect("SIGTERM fw-b");
        assert!(graceful, "fw-b did not exit on SIGTERM");
    });
    let sigterm_takeover = takeover_time(&pair, Node::A);

    let mut steps = Vec::new();
    for (what, samples, takeover) in [
        ("kill", &kill, kill_takeover),
        ("takeover from the standby", &take, take_takeover),
        ("switchover", &switchover, switchover_takeover),
        ("sigterm", &sigterm, sigterm_takeover),
    ] {
        let (both_open, outage) = analyse(samples);
        eprintln!(
            "probe {mode:?} {what}: {} samples, both open in {both_open}, longest with neither open {outage:?}, takeover {takeover:?}",
            samples.len()
        );
        assert_eq!(both_open, 0, "{what}: both probes open at once");
        assert!(samples.len() > 20, "{what}: the poller ran");
        steps.push(Step {
            what,
            outage,
            takeover,
        });
    }
    let journal = events(&pair, Node::B);
    assert!(
        journal.iter().any(|e| e["kind"] == "health"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("closed: shutting down"))),
        "fw-b's probe closed as it left: {journal:#?}\n{}",
        both_paths(&pair)
    );
    assert!(
        journal.iter().any(|e| e["kind"] == "health"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("health probe") && m.contains("opened"))),
        "{journal:#?}"
    );
    steps
}

/// The bounds every probe run must meet: a planned handover (switchover either way, SIGTERM)
/// leaves both closed no longer than the dead interval; after a kill, no longer than the
/// detection (the dead interval after the last keepalive, sent up to one interval before the
/// kill) plus the takeover and the client's polling.
pub(crate) fn assert_outages(steps: &[Step]) {
    let dead = Duration::from_millis(DEAD_MS);
    let interval = Duration::from_millis(crate::e2e_local::INTERVAL_MS);
    // The client's polling period and connect, and scheduling on a loaded test machine.
    let slack = Duration::from_millis(150);
    for step in steps {
        let bound = match step.what {
            "kill" => dead + interval + step.takeover + slack,
            _ => dead,
        };
        assert!(
            step.outage <= bound,
            "{}: neither probe open for {:?}, more than {bound:?} ({step:?})",
            step.what,
            step.outage
        );
    }
}

#[test]
fn e2e_health_probe_follows_the_role_through_failover_and_switchover() {
    let pair = Pair::prepare(
        "hlprobe",
        no_preemption(),
        with_probe(local_provider, Mode::Tcp),
    );
    assert_outages(&probe_scenario(pair, Mode::Tcp));
}

#[test]
fn e2e_health_http_probe_with_provider_none_follows_the_role() {
    let pair = Pair::prepare(
        "hlnone",
        no_preemption(),
        with_probe(no_provider, Mode::Http),
    );
    let steps = probe_scenario(pair, Mode::Http);
    // Nothing to move: the takeover converges at once, so a planned handover costs only the
    // keepalive that tells the old active node it was relieved.
    for step in &steps {
        assert!(step.takeover < Duration::from_millis(50), "{step:?}");
    }
    assert_outages(&steps);
}

#[test]
fn e2e_health_a_hung_check_never_delays_a_keepalive_and_fails_at_its_timeout() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().to_path_buf();
    // The check hangs (for longer than its timeout) once the node's flag file exists.
    let pair = Pair::prepare("hlhung", Options::default(), |node| {
        format!(
            "{}\n[[track]]\nname = \"hung\"\ncommand = [\"/bin/sh\", \"-c\", 'if [ -e {} ]; then exec sleep 30; fi']\ntimeout = \"2s\"\ninterval = \"100ms\"\n",
            local_provider(node),
            failing_flag(&dir, node).display()
        )
    });
    let pair = pair.start_both();
    wait_until("fw-a's check healthy", SOON, || {
        pair.status(Node::A)
            .filter(|s| track(s, 0)["healthy"] == true)
    });
    std::fs::write(failing_flag(scratch.path(), Node::A), "").expect("hang the check");
    let b = wait_until("fw-b active and converged", SOON, || {
        pair.status(Node::B)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    // Handed over, not detected as silent: the keepalives kept flowing while the check hung
    // for four dead intervals.
    let reason = b["last_transition"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("handing over") || reason.contains("peer is in fault"),
        "{reason}"
    );
    let a = pair.wait_role(Node::A, "fault");
    let detail = track(&a, 0)["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("timed out after 2s"), "{a:#}");
    for s in [&a, &b] {
        for path in s["paths"].as_array().expect("paths") {
            assert_eq!(path["lost"], 0, "no keepalive lost: {path:#}");
        }
    }
}

#[test]
fn e2e_health_a_probe_port_in_use_stops_the_daemon_at_start_naming_the_field() {
    let mut pair = Pair::prepare(
        "hlport",
        Options::default(),
        with_probe(no_provider, Mode::Tcp),
    );
    let addr = SocketAddr::from((Node::A.lan_ip(), PROBE_PORT));
    let holder = netns::in_namespace(pair.topo.ns(Node::A), move || {
        std::net::TcpListener::bind(addr).expect("hold the probe port")
    });
    pair.spawn(Node::A);
    let status = wait_until("fw-a to exit", SOON, || {
        pair.daemon(Node::A).try_wait().expect("try_wait")
    });
    assert!(!status.success(), "{status:?}");
    let log = pair.daemon(Node::A).log();
    assert!(
        log.contains(&format!("health_probe.listen {addr}:")) && log.contains("in use"),
        "{log}"
    );
    drop(holder);
}
