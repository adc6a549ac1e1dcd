//! The local provider against a real kernel: each test builds two network namespaces joined by a
//! veth pair, runs the provider inside one of them, and reads the result back with `ip`.
//!
//! The provider runs on a dedicated thread that has entered the namespace with setns(2); every
//! socket the provider opens on that thread (netlink, AF_PACKET) belongs to that namespace, so
//! nothing touches the host's interfaces and no frame leaves the namespaces made here.
//! The addresses come from TEST-NET-1 (192.0.2.0/24), which is never routed anywhere.
//!
//! Needs root (CAP_SYS_ADMIN for namespaces, CAP_NET_ADMIN/CAP_NET_RAW for the provider) and
//! iproute2; without root each test says so and passes without checking anything.

use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cloudha_provider_core::{
    FloatingIp, Holder, ProgressEvent, ProgressReporter, Provider, ProviderError, TakeoverRequest,
};
use cloudha_provider_local::LocalProvider;
use nix::sched::{setns, CloneFlags};
use serde_json::Value;
use tokio::sync::mpsc;

/// The interface the provider manages, inside the "ours" namespace.
const OURS_IF: &str = "ha0";
/// Its other end, inside the "peer" namespace.
const PEER_IF: &str = "peer0";
/// The peer's own address: gives it a connected route, which Linux requires before it learns
/// a neighbour from a gratuitous ARP.
const PEER_ADDR: &str = "192.0.2.1/24";
const FIP_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const FIP_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);

/// Generous bound for kernel events we poll for (link up, neighbour learned).
const EVENT_DEADLINE: Duration = Duration::from_secs(10);

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Skip (pass) the calling test when namespaces cannot be made here.
macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root to create network namespaces");
            return;
        }
    };
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_json(args: &[&str]) -> Value {
    let text = run(args);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{args:?} printed non-JSON {text:?}: {e}"))
}

/// A network namespace this test created; deleted on drop, also when the test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cloudha-local-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        Self { name }
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    fn ip_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["ip", "-n", &self.name, "-j"];
        all.extend_from_slice(args);
        run_json(&all)
    }

    /// Run `make()`'s future to completion on a fresh thread inside this namespace.
    fn run<F, Fut, T>(&self, make: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // setns on this thread only: the test's other threads stay where they were.
            setns(&ns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
            runtime.block_on(make())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Set an IPv4 sysctl of this namespace (through /proc/sys from a thread inside it).
    fn sysctl(&self, key: &'static str, value: &'static str) {
        self.run(move || async move {
            let path = format!("/proc/sys/net/ipv4/{}", key.replace('.', "/"));
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
        });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also destroys the veth pair. Ignore failure: a panic here
        // during unwinding would abort and hide the test's own message.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair, both ends up, the peer with an address and accepting
/// gratuitous ARP into its neighbour table.
struct Lab {
    ours: Netns,
    peer: Netns,
}

impl Lab {
    fn new() -> Self {
        let ours = Netns::new("ours");
        let peer = Netns::new("peer");
        // Created directly inside our namespace, the peer end straight in the other: neither
        // end ever exists in the host's namespace.
        ours.ip(&[
            "link", "add", OURS_IF, "type", "veth", "peer", "name", PEER_IF, "netns", &peer.name,
        ]);
        peer.sysctl("conf.all.arp_accept", "1");
        peer.sysctl("conf.peer0.arp_accept", "1");
        peer.ip(&["addr", "add", PEER_ADDR, "dev", PEER_IF]);
        peer.ip(&["link", "set", PEER_IF, "up"]);
        ours.ip(&["link", "set", OURS_IF, "up"]);
        let lab = Self { ours, peer };
        // Frames sent before the kernel finishes bringing the link up are dropped silently.
        lab.wait_until("ha0 operationally up", || lab.operstate() == "UP");
        lab
    }

    fn operstate(&self) -> String {
        let links = self.ours.ip_json(&["link", "show", "dev", OURS_IF]);
        links[0]["operstate"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn our_mac(&self) -> String {
        let links = self.ours.ip_json(&["link", "show", "dev", OURS_IF]);
        links[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {links}"))
            .to_string()
    }

    /// The IPv4 addresses on ha0, with their prefix lengths.
    fn our_addresses(&self) -> Vec<(Ipv4Addr, u64)> {
        let links = self.ours.ip_json(&["-4", "addr", "show", "dev", OURS_IF]);
        let Some(infos) = links[0]["addr_info"].as_array() else {
            return Vec::new();
        };
        infos
            .iter()
            .filter_map(|a| {
                let ip = a["local"].as_str()?.parse().ok()?;
                Some((ip, a["prefixlen"].as_u64()?))
            })
            .collect()
    }

    /// The MAC the peer's neighbour table has for `ip`, if any.
    fn peer_neighbour(&self, ip: Ipv4Addr) -> Option<String> {
        let entries = self
            .peer
            .ip_json(&["neigh", "show", "dev", PEER_IF, "to", &ip.to_string()]);
        entries.as_array()?.iter().find_map(|e| {
            (e["dst"].as_str()? == ip.to_string())
                .then(|| e["lladdr"].as_str().map(str::to_string))
                .flatten()
        })
    }

    /// Poll `condition` until it holds, failing the test past [`EVENT_DEADLINE`].
    fn wait_until(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(
                start.elapsed() < EVENT_DEADLINE,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn provider(&self, ips: &[Ipv4Addr]) -> LocalProvider {
        provider_on(OURS_IF, ips)
    }
}

fn provider_on(interface: &str, ips: &[Ipv4Addr]) -> LocalProvider {
    LocalProvider::new(
        interface.to_string(),
        ips.iter()
            .map(|&address| FloatingIp {
                address,
                prefix_len: 24,
            })
            .collect(),
    )
    // Keep the tests quick; the count still exercises more than one round.
    .with_garp(2, Duration::from_millis(20))
}

fn request() -> TakeoverRequest {
    TakeoverRequest {
        epoch: 7,
        deadline: Duration::from_secs(20),
    }
}

/// Take over inside `ns`, returning the outcome and every progress event reported.
fn take_over_in(
    ns: &Netns,
    provider: &LocalProvider,
) -> (
    Result<cloudha_provider_core::TakeoverReport, ProviderError>,
    Vec<ProgressEvent>,
) {
    let provider = provider.clone();
    ns.run(move || async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let result = provider
            .take_over(&request(), &ProgressReporter::new(tx))
            .await;
        let mut events = Vec::new();
        while let Ok(event) = rx.try_recv() {
            events.push(event);
        }
        (result, events)
    })
}

fn release_in(ns: &Netns, provider: &LocalProvider) -> Result<(), ProviderError> {
    let provider = provider.clone();
    ns.run(move || async move { provider.release(&ProgressReporter::discard()).await })
}

fn holders_in(ns: &Netns, provider: &LocalProvider) -> Vec<(String, Holder)> {
    let provider = provider.clone();
    let observation = ns
        .run(move || async move { provider.observe().await })
        .unwrap_or_else(|e| panic!("observe failed: {e}"));
    observation
        .resources
        .into_iter()
        .map(|r| (r.resource, r.holder))
        .collect()
}

fn health_in(ns: &Netns, provider: &LocalProvider) -> Result<(), ProviderError> {
    let provider = provider.clone();
    ns.run(move || async move { provider.health().await })
}

fn finished(events: &[ProgressEvent], id: &str) -> Option<String> {
    events.iter().find_map(|e| match e {
        ProgressEvent::OperationFinished {
            id: found, outcome, ..
        } if found == id => Some(outcome.clone()),
        _ => None,
    })
}

#[test]
fn provider_thread_is_inside_the_namespace() {
    require_root!();
    let ns = Netns::new("probe");
    let expected = std::fs::metadata(format!("/run/netns/{}", ns.name))
        .unwrap_or_else(|e| panic!("stat netns: {e}"))
        .ino();
    let inside = ns.run(|| async {
        std::fs::metadata("/proc/thread-self/ns/net")
            .unwrap_or_else(|e| panic!("stat own netns: {e}"))
            .ino()
    });
    assert_eq!(inside, expected);
    // Netlink opened there sees the namespace's own interfaces, not the host's: a fresh
    // namespace's `lo` is down (the host's is up) until we bring it up.
    let lo = provider_on("lo", &[]).with_garp(0, Duration::ZERO);
    let err = health_in(&ns, &lo).err();
    assert!(
        matches!(&err, Some(ProviderError::Permanent { message, .. }) if message.contains("administratively down")),
        "{err:?}"
    );
    ns.ip(&["link", "set", "lo", "up"]);
    assert_eq!(health_in(&ns, &lo), Ok(()));
    // An interface the host has is not found from inside.
    let host_interface = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name != "lo");
    if let Some(name) = host_interface {
        let err = health_in(&ns, &provider_on(&name, &[])).err();
        assert!(
            matches!(&err, Some(ProviderError::Permanent { message, .. }) if message.contains("not found")),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn take_over_adds_addresses_announces_them_and_is_idempotent() {
    require_root!();
    let lab = Lab::new();
    let provider = lab.provider(&[FIP_A, FIP_B]);

    let (result, events) = take_over_in(&lab.ours, &provider);
    let report = result.unwrap_or_else(|e| panic!("take_over failed: {e}"));
    assert!(report.changed);
    assert_eq!(report.api_calls.get("netlink.addr_add"), Some(&2));
    // Two rounds of two frames.
    assert_eq!(report.api_calls.get("packet.garp"), Some(&4));
    let mut addresses = lab.our_addresses();
    addresses.sort();
    assert_eq!(addresses, vec![(FIP_A, 24), (FIP_B, 24)]);
    for id in [
        "address.add 192.0.2.100",
        "address.add 192.0.2.101",
        "garp 192.0.2.100",
        "garp 192.0.2.101",
    ] {
        assert_eq!(
            finished(&events, id).as_deref(),
            Some("ok"),
            "{id}: {events:?}"
        );
    }

    // The peer learned both floating IPs at our MAC from the announcements alone: it never
    // sent a packet to them, so nothing else could have taught it.
    let mac = lab.our_mac();
    for ip in [FIP_A, FIP_B] {
        lab.wait_until(&format!("peer to learn {ip}"), || {
            lab.peer_neighbour(ip).as_deref() == Some(mac.as_str())
        });
    }

    // Again: nothing to add, still a success, and still announced.
    let (again, events) = take_over_in(&lab.ours, &provider);
    let again = again.unwrap_or_else(|e| panic!("second take_over failed: {e}"));
    assert!(!again.changed);
    assert_eq!(finished(&events, "garp 192.0.2.100").as_deref(), Some("ok"));
    assert_eq!(lab.our_addresses().len(), 2);
    assert_eq!(
        holders_in(&lab.ours, &provider),
        vec![
            ("ip 192.0.2.100".to_string(), Holder::Me),
            ("ip 192.0.2.101".to_string(), Holder::Me),
        ]
    );
}

#[test]
fn release_removes_addresses_and_is_idempotent() {
    require_root!();
    let lab = Lab::new();
    let provider = lab.provider(&[FIP_A, FIP_B]);
    let (result, _) = take_over_in(&lab.ours, &provider);
    result.unwrap_or_else(|e| panic!("take_over failed: {e}"));
    // An address the provider does not manage must survive the release, even though it is a
    // secondary of the floating IPs' subnet here (they came first): the provider turned on
    // promote_secondaries, without which the kernel would delete it with the primary.
    lab.ours
        .ip(&["addr", "add", "192.0.2.2/24", "dev", OURS_IF]);
    let promote = lab.ours.run(|| async {
        std::fs::read_to_string("/proc/sys/net/ipv4/conf/ha0/promote_secondaries")
            .unwrap_or_else(|e| panic!("read promote_secondaries: {e}"))
    });
    assert_eq!(promote.trim(), "1");

    release_in(&lab.ours, &provider).unwrap_or_else(|e| panic!("release failed: {e}"));
    assert_eq!(lab.our_addresses(), vec![(Ipv4Addr::new(192, 0, 2, 2), 24)]);
    release_in(&lab.ours, &provider).unwrap_or_else(|e| panic!("second release failed: {e}"));
    assert_eq!(
        holders_in(&lab.ours, &provider),
        vec![
            ("ip 192.0.2.100".to_string(), Holder::Unknown),
            ("ip 192.0.2.101".to_string(), Holder::Unknown),
        ]
    );
}

#[test]
fn observe_reports_me_only_for_addresses_on_the_interface() {
    require_root!();
    let lab = Lab::new();
    lab.ours
        .ip(&["addr", "add", "192.0.2.100/24", "dev", OURS_IF]);
    let provider = lab.provider(&[FIP_A, FIP_B]);
    assert_eq!(
        holders_in(&lab.ours, &provider),
        vec![
            ("ip 192.0.2.100".to_string(), Holder::Me),
            ("ip 192.0.2.101".to_string(), Holder::Unknown),
        ]
    );
    // A take-over from this half-held state adds only what is missing.
    let (result, _) = take_over_in(&lab.ours, &provider);
    let report = result.unwrap_or_else(|e| panic!("take_over failed: {e}"));
    assert!(report.changed);
    assert_eq!(lab.our_addresses().len(), 2);
}

#[test]
fn health_follows_the_interface_state() {
    require_root!();
    let lab = Lab::new();
    let provider = lab.provider(&[FIP_A]);
    assert_eq!(health_in(&lab.ours, &provider), Ok(()));

    // The peer end down: ours is still administratively up but has no carrier.
    lab.peer.ip(&["link", "set", PEER_IF, "down"]);
    lab.wait_until("ha0 to lose carrier", || lab.operstate() != "UP");
    let err = health_in(&lab.ours, &provider).err();
    assert!(
        matches!(&err, Some(ProviderError::Permanent { message, .. }) if message.contains("no carrier")),
        "{err:?}"
    );

    lab.ours.ip(&["link", "set", OURS_IF, "down"]);
    let err = health_in(&lab.ours, &provider).err();
    assert!(
        matches!(&err, Some(ProviderError::Permanent { message, .. }) if message.contains("administratively down")),
        "{err:?}"
    );
}

#[test]
fn a_missing_interface_is_a_permanent_error_with_a_fix() {
    require_root!();
    let lab = Lab::new();
    let provider = provider_on("lan9", &[FIP_A]);

    let err = health_in(&lab.ours, &provider).err();
    match &err {
        Some(e @ ProviderError::Permanent { fix, .. }) => {
            assert!(e.to_string().contains("interface lan9 not found"), "{e}");
            assert!(fix.contains("provider.local.interface"), "{fix}");
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
    let (result, _) = take_over_in(&lab.ours, &provider);
    assert!(
        matches!(result, Err(ProviderError::Permanent { .. })),
        "{result:?}"
    );
    let provider2 = provider.clone();
    let observed = lab
        .ours
        .run(move || async move { provider2.observe().await });
    assert!(
        matches!(observed, Err(ProviderError::Permanent { .. })),
        "{observed:?}"
    );
    // Nothing can be on an interface that does not exist, so there is nothing to release.
    assert_eq!(release_in(&lab.ours, &provider), Ok(()));
}
