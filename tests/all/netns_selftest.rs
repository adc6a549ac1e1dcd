//! Tests of the netns harness itself, so a failing failover test points at the
//! daemon rather than at the topology.

use crate::netns::{wait_until, Node, Topology};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Generous bound for things that normally take milliseconds (link state changes
/// propagating, a python interpreter starting).
const SHORT: Duration = Duration::from_secs(10);

fn ip_of(node: Node) -> String {
    node.lan_ip().to_string()
}

#[test]
fn netns_topology_up_and_reachable() {
    let t = Topology::new("up").expect("build topology");
    assert!(
        t.ping(Node::Client, &ip_of(Node::A)),
        "client -> A over LAN"
    );
    assert!(
        t.ping(Node::Client, &ip_of(Node::B)),
        "client -> B over LAN"
    );
    assert!(t.ping(Node::A, &ip_of(Node::B)), "A -> B over LAN");
    let b_mgmt = Node::B.mgmt_ip().expect("B mgmt ip").to_string();
    assert!(t.ping(Node::A, &b_mgmt), "A -> B over mgmt");
    // The client has no route to the mgmt subnet: mgmt really is a separate path.
    assert!(!t.ping(Node::Client, &b_mgmt), "client must not reach mgmt");

    let macs: Vec<String> = [Node::A, Node::B, Node::Client]
        .into_iter()
        .map(|n| t.lan_mac(n).expect("lan0 mac"))
        .collect();
    assert_eq!(
        macs[0].len(),
        17,
        "MAC looks like aa:bb:cc:dd:ee:ff: {macs:?}"
    );
    assert!(
        macs[0] != macs[1] && macs[1] != macs[2] && macs[0] != macs[2],
        "distinct MACs: {macs:?}"
    );
}

#[test]
fn netns_set_lan_and_mgmt_cut_and_restore() {
    let t = Topology::new("cut").expect("build topology");
    let a = ip_of(Node::A);
    assert!(t.ping(Node::Client, &a), "client -> A before the cut");

    t.set_lan(Node::A, false).expect("cut A's LAN");
    assert!(!t.ping(Node::Client, &a), "A unreachable with its LAN cut");
    assert!(t.ping(Node::Client, &ip_of(Node::B)), "B unaffected");
    t.set_lan(Node::A, true).expect("restore A's LAN");
    wait_until("client reaches A after LAN restore", SHORT, || {
        t.ping(Node::Client, &a).then_some(())
    });

    let b_mgmt = Node::B.mgmt_ip().expect("B mgmt ip").to_string();
    t.set_mgmt(false).expect("cut mgmt");
    assert!(
        !t.ping(Node::A, &b_mgmt),
        "B's mgmt unreachable with mgmt cut"
    );
    assert!(t.ping(Node::A, &ip_of(Node::B)), "LAN path unaffected");
    t.set_mgmt(true).expect("restore mgmt");
    wait_until("A reaches B over mgmt after restore", SHORT, || {
        t.ping(Node::A, &b_mgmt).then_some(())
    });
}

#[test]
fn netns_answering_mac_follows_a_moved_address() {
    let t = Topology::new("mac").expect("build topology");
    let (mac_a, mac_b) = (
        t.lan_mac(Node::A).expect("A mac"),
        t.lan_mac(Node::B).expect("B mac"),
    );
    let vip = "10.77.0.99";
    let cidr = format!("{vip}/24");
    let ip_addr = |node: Node, op: &str| {
        let out = t
            .exec(node, &["ip", "addr", op, &cidr, "dev", "lan0"])
            .expect("run ip addr");
        assert!(out.status.success(), "ip addr {op} on {node:?}: {out:?}");
    };

    assert_eq!(
        t.answering_mac(Node::Client, vip),
        None,
        "nobody owns it yet"
    );
    ip_addr(Node::A, "add");
    assert_eq!(
        t.answering_mac(Node::Client, vip).as_deref(),
        Some(mac_a.as_str())
    );

    ip_addr(Node::A, "del");
    ip_addr(Node::B, "add");
    // Gratuitous ARP as the daemon would send it, when arping is installed;
    // answering_mac re-resolves anyway, so this is not required for the check.
    if t.exec(Node::B, &["arping", "-V"])
        .is_ok_and(|o| o.status.success())
    {
        let out = t
            .exec(Node::B, &["arping", "-U", "-c", "1", "-I", "lan0", vip])
            .expect("run arping");
        // iputils arping exits 1 for -U (no replies expected); only log it.
        eprintln!("arping -U: {}", out.status);
    }
    assert_eq!(
        t.answering_mac(Node::Client, vip).as_deref(),
        Some(mac_b.as_str())
    );
}

#[test]
fn netns_send_udp_delivers() {
    let t = Topology::new("udp").expect("build topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("listener.log");
    // Prints "ready" once bound (so we never send before it listens), then the
    // first datagram's payload as hex; gives up by itself after 10 s.
    let listener = "import socket\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        s.bind(('10.77.0.2', 9999))\n\
        s.settimeout(10)\n\
        print('ready', flush=True)\n\
        data, addr = s.recvfrom(2048)\n\
        print('got', data.hex(), addr[0], flush=True)\n";
    let mut daemon = t
        .spawn(Node::B, Path::new("python3"), &["-c", listener], &log)
        .expect("spawn listener");
    wait_until("listener ready", SHORT, || {
        daemon.log().contains("ready").then_some(())
    });

    let to: SocketAddr = "10.77.0.2:9999".parse().expect("addr");
    t.send_udp(Node::Client, to, b"\x00hello\xff")
        .expect("send_udp");
    let line = wait_until("listener got the datagram", SHORT, || {
        daemon
            .log()
            .lines()
            .find(|l| l.starts_with("got "))
            .map(str::to_owned)
    });
    assert_eq!(
        line,
        "got 0068656c6c6fff 10.77.0.10",
        "log: {}",
        daemon.log()
    );
    let status = wait_until("listener exits", SHORT, || {
        daemon.try_wait().expect("try_wait")
    });
    assert!(
        status.success(),
        "listener exit: {status}; log: {}",
        daemon.log()
    );
}

#[test]
fn netns_daemon_kill9_and_drop_reap() {
    let t = Topology::new("kill").expect("build topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = t
        .spawn(
            Node::A,
            Path::new("sleep"),
            &["30"],
            &dir.path().join("s.log"),
        )
        .expect("spawn sleep");
    let pid = d.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let status = d.kill9().expect("kill9");
    assert!(!status.success());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "reaped, no zombie"
    );

    let d2 = t
        .spawn(
            Node::B,
            Path::new("sleep"),
            &["30"],
            &dir.path().join("s.log"),
        )
        .expect("spawn sleep");
    let pid2 = d2.pid();
    drop(d2);
    assert!(!Path::new(&format!("/proc/{pid2}")).exists(), "drop reaps");

    // SIGTERM: sleep dies of it at once, well within the grace period.
    let mut d3 = t
        .spawn(
            Node::B,
            Path::new("sleep"),
            &["30"],
            &dir.path().join("s.log"),
        )
        .expect("spawn sleep");
    let (status, in_grace) = d3.terminate(SHORT).expect("terminate");
    assert!(
        in_grace && !status.success(),
        "{status} in grace: {in_grace}"
    );
}

#[test]
fn netns_drop_removes_namespaces() {
    let t = Topology::new("drop").expect("build topology");
    let names = t.namespaces().clone();
    let list = || {
        let out = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = list();
    for ns in &names {
        assert!(
            before
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "{ns} exists"
        );
    }
    drop(t);
    let after = list();
    for ns in &names {
        assert!(
            !after
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "{ns} still listed after drop:\n{after}"
        );
    }
}

#[test]
fn netns_drop_cleans_up_after_a_panic() {
    let mut names = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let t = Topology::new("panic").expect("build topology");
        names = Some(t.namespaces().clone());
        panic!("simulated test failure");
    }));
    assert!(result.is_err());
    let names = names.expect("topology was built");
    for ns in &names {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "{ns} left behind after a panic"
        );
    }
}

#[test]
fn netns_lan_loss_applies_and_clears() {
    let t = Topology::new("loss").expect("build topology");
    let a = ip_of(Node::A);
    t.netem_lan(Node::A, Some("loss 20%"))
        .expect("apply 20% loss");
    let shown = t.lan_impairment(Node::A).expect("show impairment");
    assert!(
        shown.contains("netem") && shown.contains("loss 20%")
            || shown.contains("numgen random mod 10000 < 2000"),
        "20% loss rule in place: {shown}"
    );

    // 100% is deterministic: the client's pings to A must all fail.
    t.netem_lan(Node::A, Some("loss 100%"))
        .expect("apply 100% loss");
    assert!(!t.ping(Node::Client, &a), "A unreachable under 100% loss");
    assert!(t.ping(Node::Client, &ip_of(Node::B)), "B unaffected");

    t.netem_lan(Node::A, None).expect("clear loss");
    let shown = t.lan_impairment(Node::A).expect("show impairment");
    assert!(
        !shown.contains("netem") && !shown.contains("drop"),
        "impairment cleared: {shown}"
    );
    wait_until("client reaches A after loss cleared", SHORT, || {
        t.ping(Node::Client, &a).then_some(())
    });
    // Clearing twice is fine (tests clear in cleanup paths without tracking state).
    t.netem_lan(Node::A, None).expect("clear again");
}
