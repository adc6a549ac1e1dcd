//! End to end on the emulated Azure: two real `cloudha run` processes in network namespaces,
//! each reaching "its" IMDS at 169.254.169.254 and ARM at 127.0.0.1:8080 *inside its own
//! namespace* (served by the emulator from this test process), so the daemons run exactly the
//! production code: discovery from IMDS, the token from `azure_identity`'s IMDS source, ARM.
//! Nothing is sent to 169.254.169.254 outside the namespaces this test created.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudha_azure_emulator::{nic_settings_apart_from, Emulator, Fault, Scenario};
use serde_json::Value;

use crate::e2e_local::{num, Options, Pair, SOON};
use crate::netns::{wait_until, Node};

pub(crate) const FLOATING: &str = "10.10.1.100";
pub(crate) const ADDR_B: &str = "10.10.1.5";
pub(crate) const ARM_PORT: u16 = 8080;
/// Bound for a failover that includes several seconds of emulated propagation.
const FAILOVER: Duration = Duration::from_secs(60);

/// The emulated cloud, served inside the pair's namespaces.
pub(crate) struct Cloud {
    pub(crate) emu: Arc<Emulator>,
    // Kept alive for the listeners' tasks.
    _rt: tokio::runtime::Runtime,
}

pub(crate) fn vm(node: Node) -> &'static str {
    match node {
        Node::A => "vm-appliance-a",
        _ => "vm-appliance-b",
    }
}

/// A listener at 169.254.169.254:80 inside `node`'s namespace (the address added to its `lo`),
/// where the cloud's instance metadata service answers on a real VM.
pub(crate) fn metadata_listener(pair: &Pair, node: Node) -> std::net::TcpListener {
    let out = pair
        .topo
        .exec(
            node,
            &["ip", "addr", "replace", "169.254.169.254/32", "dev", "lo"],
        )
        .expect("ip addr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bind_in_namespace(
        pair.topo.ns(node),
        "169.254.169.254:80".parse().expect("addr"),
    )
}

/// Bind `addr` inside namespace `ns` (the listener stays there).
pub(crate) fn bind_in_namespace(ns: &str, addr: SocketAddr) -> std::net::TcpListener {
    let listener = crate::netns::in_namespace(ns, move || std::net::TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("bind {addr} in {ns}: {e}"));
    listener.set_nonblocking(true).expect("non-blocking");
    listener
}

impl Cloud {
    fn serve(pair: &Pair, nic_propagation_ms: u64) -> Cloud {
        let emu = Emulator::new(&Scenario::two_appliances()).expect("scenario");
        emu.update_settings(|s| {
            s.nic_propagation_ms = nic_propagation_ms;
            s.route_propagation_ms = 500;
            s.lro_retry_after_secs = 1;
        });
        Cloud::serve_emulator(pair, emu)
    }

    /// Serves `emu`'s IMDS (as each node's VM) and ARM inside both nodes' namespaces.
    pub(crate) fn serve_emulator(pair: &Pair, emu: Arc<Emulator>) -> Cloud {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        for node in [Node::A, Node::B] {
            let imds = metadata_listener(pair, node);
            let arm = bind_in_namespace(
                pair.topo.ns(node),
                SocketAddr::from(([127, 0, 0, 1], ARM_PORT)),
            );
            let _guard = rt.enter();
            let imds = tokio::net::TcpListener::from_std(imds).expect("tokio listener");
            let arm = tokio::net::TcpListener::from_std(arm).expect("tokio listener");
            let name = vm(node);
            rt.spawn(emu.clone().serve_imds(imds, name));
            // Labelled per namespace, so the request log says which daemon sent each call.
            rt.spawn(emu.clone().serve_as(arm, name));
        }
        Cloud { emu, _rt: rt }
    }

    fn holder(&self) -> String {
        self.emu
            .ip_holder(floating())
            .unwrap_or_else(|| "nobody".into())
    }

    pub(crate) fn route_next_hop(&self) -> Option<String> {
        self.emu
            .route("rt-workloads", "default-via-appliance")?
            .pointer("/properties/nextHopIpAddress")?
            .as_str()
            .map(str::to_string)
    }
}

/// The provider sections of a node's config: only the peer's NIC is named; this node's NIC,
/// subscription and the token all come from the (namespace-local) IMDS.
pub(crate) fn azure_provider<'a>(
    emu: &'a Emulator,
    move_mode: &'a str,
) -> impl Fn(Node) -> String + 'a {
    move |node| {
        let peer_nic = match node {
            Node::A => "nic-appliance-b",
            _ => "nic-appliance-a",
        };
        let rg = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network",
            emu.subscription_id(),
            emu.resource_group()
        );
        format!(
            r#"
[failover]
deadline = "60s"
retry_initial = "500ms"
retry_max = "2s"
reconcile_interval = "1s"

[maintenance_events]
poll_interval = "1s"

[provider]
kind = "azure"

[provider.azure]
peer_nic = "{peer}"
arm_endpoint = "http://127.0.0.1:{ARM_PORT}"
move_mode = "{move_mode}"

[[floating_ip]]
address = "{FLOATING}"
public_ip = "{rg}/publicIPAddresses/pip-floating"

[[route]]
table = "{rg}/routeTables/rt-workloads"
name = "default-via-appliance"
prefix = "0.0.0.0/0"
next_hop = "self_address"
"#,
            peer = emu.nic_id(peer_nic),
        )
    }
}

pub(crate) fn floating() -> std::net::Ipv4Addr {
    FLOATING.parse().expect("floating IP")
}

/// Both daemons against a fresh emulated cloud, A active and converged, B standby.
pub(crate) fn start(tag: &str, nic_propagation_ms: u64, preempt: bool) -> (Pair, Cloud) {
    start_with(tag, nic_propagation_ms, preempt, "two_step")
}

/// Like [`start`], with `provider.azure.move_mode` (`two_step` or `atomic`).
pub(crate) fn start_with(
    tag: &str,
    nic_propagation_ms: u64,
    preempt: bool,
    move_mode: &str,
) -> (Pair, Cloud) {
    let opts = Options {
        preempt,
        hold_down_ms: 2000,
        ..Options::default()
    };
    // The configs need the emulator's ids, the emulator needs the namespaces: ids first.
    let ids = Emulator::new(&Scenario::two_appliances()).expect("scenario");
    let pair = Pair::prepare(tag, opts, azure_provider(&ids, move_mode));
    let cloud = Cloud::serve(&pair, nic_propagation_ms);
    let pair = pair.start_both();
    pair.wait_converged(Node::A);
    (pair, cloud)
}

#[test]
fn e2e_azure_kill_active_moves_ip_and_route_while_keepalives_flow() {
    let (mut pair, cloud) = start("e2eazkill", 4000, false);
    // From here the emulator paces NIC operations as Azure's Network RP does (Retry-After: 10).
    cloud
        .emu
        .set_timing_profile(cloudha_azure_emulator::TimingProfile::NetworkRp);
    let a_before = cloud.emu.nic_settled("nic-appliance-a").expect("nic a");
    let b_before = cloud.emu.nic_settled("nic-appliance-b").expect("nic b");
    assert!(cloud.holder().contains("nic-appliance-a"));
    pair.wait_ready_both();

    pair.daemon(Node::A).kill9().expect("kill fw-a");
    let killed = Instant::now();
    // B takes over; with 4 s of propagation per NIC its operations stay pending a while.
    // The route update starts at once; the NIC path reads both NICs and checks its permissions
    // before its first write shows as pending.
    let pending = wait_until("fw-b to show a pending NIC operation", SOON, || {
        pair.status(Node::B).filter(|s| {
            s["role"] == "active"
                && s["takeover"]["pending"].as_array().is_some_and(|p| {
                    p.iter()
                        .any(|o| o["id"].as_str().is_some_and(|id| id.starts_with("nic.")))
                })
        })
    });
    let ops: Vec<&str> = pending["takeover"]["pending"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert!(ops.iter().any(|o| o.starts_with("nic.")), "{ops:?}");

    // A comes back mid-takeover: it hears B's takeover in progress and does not fight it, and
    // keepalives flow both ways while B's operations are still pending.
    pair.spawn(Node::A);
    let a_status = wait_until("fw-a to hear fw-b taking over", SOON, || {
        pair.status(Node::A)
            .filter(|s| s["peer"]["alive"] == true && s["peer"]["takeover_in_progress"] == true)
    });
    assert_eq!(a_status["role"], "standby", "{a_status}");
    let received_then = num(&pair.status(Node::B).expect("status")["paths"][0]["received"]);
    wait_until(
        "keepalives from fw-a during fw-b's pending NIC update",
        SOON,
        || {
            let s = pair.status(Node::B)?;
            let pending = s["takeover"]["pending"]
                .as_array()
                .is_some_and(|p| !p.is_empty());
            (pending && num(&s["paths"][0]["received"]) >= received_then + 5).then_some(())
        },
    );

    let done = wait_until("fw-b's takeover to converge", FAILOVER, || {
        pair.status(Node::B)
            .filter(|s| s["takeover"]["state"] == "done")
    });
    let converged = killed.elapsed();
    assert!(
        cloud.holder().contains("nic-appliance-b"),
        "{}",
        cloud.holder()
    );
    assert_eq!(cloud.route_next_hop().as_deref(), Some(ADDR_B));
    assert_eq!(cloud.emu.operations_in_progress(), 0);
    let a_after = cloud.emu.nic_settled("nic-appliance-a").expect("nic a");
    let b_after = cloud.emu.nic_settled("nic-appliance-b").expect("nic b");
    assert_eq!(
        nic_settings_apart_from(&a_after, floating()),
        nic_settings_apart_from(&a_before, floating()),
        "NIC A lost a setting"
    );
    assert_eq!(
        nic_settings_apart_from(&b_after, floating()),
        nic_settings_apart_from(&b_before, floating()),
        "NIC B lost a setting"
    );
    let pip = b_after.to_string();
    assert!(
        pip.contains("pip-floating"),
        "public IP moved with the ipConfiguration"
    );

    // The failover record: detection, first API request, operations, calls, total.
    let f = &done["last_failover"];
    assert!(num(&f["detection_ms"]) >= 500, "{f}");
    assert!(f["first_write_ms"].as_u64().is_some(), "{f}");
    assert!(num(&f["total_ms"]) as u128 <= converged.as_millis(), "{f}");
    let calls = &f["api_calls"];
    assert_eq!(calls["route.put"], 1, "{calls}");
    assert!(num(&calls["nic.put"]) >= 2, "{calls}");
    // Each NIC update (4 s) was seen applied by reading the NIC between the Network RP's 10 s
    // polls, not at the first poll.
    assert!(num(&calls["nic.put.watch"]) >= 2, "{calls}");
    assert!(calls.get("nic.put.poll").is_none(), "{calls}");
    assert!(
        f["operations"].as_array().is_some_and(|o| o.len() >= 3),
        "{f}"
    );
    // The daemons authenticated with the IMDS token endpoint inside their namespaces.
    assert!(
        cloud
            .emu
            .count_requests("GET", "/metadata/identity/oauth2/token")
            >= 2
    );
    // A never became active again (preemption is off) and stays standby.
    let a_now = pair.status(Node::A).expect("status a");
    assert_eq!(a_now["role"], "standby");
    assert_eq!(a_now["cloud"]["resources"][0]["holder"], "peer", "{a_now}");
}

#[test]
fn e2e_azure_failover_survives_throttling_conflicts_and_server_errors() {
    let (mut pair, cloud) = start("e2eazflt", 1000, true);
    cloud.emu.push_fault(Fault::throttled(
        "PUT",
        "networkInterfaces/nic-appliance-a",
        1,
    ));
    cloud.emu.push_fault(Fault::another_operation_in_progress(
        "PUT",
        "networkInterfaces/nic-appliance-b",
    ));
    cloud.emu.push_fault(Fault::precondition_failed(
        "PUT",
        "networkInterfaces/nic-appliance-b",
    ));
    cloud
        .emu
        .push_fault(Fault::internal_error("GET", "/operations/"));
    cloud.emu.push_fault(Fault::service_unavailable(
        "PUT",
        "routes/default-via-appliance",
        1,
    ));
    pair.daemon(Node::A).kill9().expect("kill fw-a");
    wait_until("fw-b's takeover to converge", FAILOVER, || {
        pair.status(Node::B)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    assert!(
        cloud.emu.pending_faults().is_empty(),
        "{:?}",
        cloud.emu.pending_faults()
    );
    assert!(cloud.holder().contains("nic-appliance-b"));
    assert_eq!(cloud.route_next_hop().as_deref(), Some(ADDR_B));

    // A returns and preempts back after the hold-down: the IP and route follow.
    pair.spawn(Node::A);
    wait_until("fw-a to preempt and converge", FAILOVER, || {
        pair.status(Node::A)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    assert!(cloud.holder().contains("nic-appliance-a"));
    assert_eq!(cloud.route_next_hop().as_deref(), Some("10.10.1.4"));
}

#[test]
fn e2e_azure_reconcile_repairs_drift_on_the_active_node() {
    let (pair, cloud) = start("e2eazrec", 300, true);
    // Someone points the route elsewhere behind cloudha's back.
    let mut route = cloud
        .emu
        .route("rt-workloads", "default-via-appliance")
        .expect("route");
    route["properties"]["nextHopIpAddress"] = Value::from("10.10.1.9");
    let token = cloud.emu.issue_token("vm-appliance-a").expect("token");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let status = rt.block_on(async {
        let addr = cloud.emu.start().await.expect("serve on loopback");
        let url = format!(
            "http://{addr}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/routeTables/rt-workloads/routes/default-via-appliance?api-version=2024-05-01",
            cloud.emu.subscription_id(),
            cloud.emu.resource_group()
        );
        put(&url, &token, &route.to_string()).await
    });
    assert!((200..300).contains(&status), "PUT answered {status}");
    wait_until("the drifted route to be in effect", SOON, || {
        (cloud.route_next_hop().as_deref() == Some("10.10.1.9")).then_some(())
    });
    let s = wait_until("fw-a's reconcile to repair the route", SOON, || {
        (cloud.route_next_hop().as_deref() == Some("10.10.1.4"))
            .then(|| pair.status(Node::A))
            .flatten()
    });
    assert_eq!(s["role"], "active");
    assert!(
        s["recent_events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["message"]
                .as_str()
                .is_some_and(|m| m.contains("repair the drift")))),
        "{s}"
    );
}

/// A bare HTTP/1.1 PUT (what an operator's `az` call would send), returning the status.
async fn put(url: &str, token: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn e2e_azure_restart_mid_takeover_continues_it_from_the_journal() {
    let (mut pair, cloud) = start("e2eazres", 4000, false);
    pair.daemon(Node::A).kill9().expect("kill fw-a");
    wait_until("fw-b's takeover to be under way", SOON, || {
        pair.status(Node::B).filter(|s| {
            s["takeover"]["pending"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        })
    });
    // fw-b dies between two API calls of its takeover, and comes back.
    pair.daemon(Node::B).kill9().expect("kill fw-b");
    let journal = crate::e2e_ops::events(&pair, Node::B);
    let last = journal.last().expect("journal entries");
    assert_ne!(last["kind"], "takeover_done", "{journal:#?}");
    pair.spawn(Node::B);
    let s = wait_until(
        "fw-b to finish the takeover after its restart",
        FAILOVER,
        || {
            pair.status(Node::B)
                .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
        },
    );
    assert!(
        cloud.holder().contains("nic-appliance-b"),
        "{}",
        cloud.holder()
    );
    assert_eq!(cloud.route_next_hop().as_deref(), Some(ADDR_B));
    let journal = crate::e2e_ops::events(&pair, Node::B);
    let restart = journal
        .iter()
        .enumerate()
        .filter(|(_, e)| e["kind"] == "start")
        .nth(1)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no second start in {journal:#?}"));
    let after_restart = &journal[restart..];
    let resume = after_restart
        .iter()
        .find(|e| e["kind"] == "resume")
        .unwrap_or_else(|| panic!("no resume entry after the restart: {journal:#?}"));
    assert_eq!(resume["data"]["continued"], true, "{resume}");
    assert!(
        after_restart.iter().any(|e| e["kind"] == "takeover_done"),
        "{journal:#?}"
    );
    assert!(
        s["recent_events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["message"]
                .as_str()
                .is_some_and(|m| m.contains("interrupted by the last stop is continued")))),
        "{s}"
    );
}

#[test]
fn e2e_azure_scheduled_reboot_hands_over_first_and_acknowledges_after() {
    let (pair, cloud) = start("e2eazsev", 300, true);
    // The reboot "takes" 3 s once approved.
    cloud
        .emu
        .update_settings(|s| s.scheduled_event_impact_ms = 3000);
    pair.wait_ready_both();
    let id = cloud
        .emu
        .schedule_event("vm-appliance-a", "Reboot", Duration::from_secs(300));

    // fw-a hands over to fw-b before the reboot and waits in maintenance.
    wait_until("fw-b active and converged", FAILOVER, || {
        pair.status(Node::B)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    assert!(
        cloud.holder().contains("nic-appliance-b"),
        "{}",
        cloud.holder()
    );
    let a = pair.status(Node::A).expect("status a");
    assert_eq!(a["role"], "maintenance", "{a}");
    assert!(
        a["scheduled_maintenance"].as_array().is_some_and(|m| m
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains(&id)))),
        "{a}"
    );
    // The event is approved only once the handover has completed.
    wait_until("fw-a to acknowledge the event", SOON, || {
        cloud
            .emu
            .acked_events("vm-appliance-a")
            .contains(&id)
            .then_some(())
    });
    let b_done = crate::e2e_ops::events(&pair, Node::B)
        .into_iter()
        .filter(|e| e["kind"] == "takeover_done")
        .map(|e| num(&e["at_unix_ms"]))
        .max()
        .expect("fw-b's takeover in its journal");
    let a_journal = crate::e2e_ops::events(&pair, Node::A);
    let acked = a_journal
        .iter()
        .find(|e| e["kind"] == "maintenance" && e["data"]["acknowledged"] == true)
        .unwrap_or_else(|| panic!("no acknowledgement in {a_journal:#?}"));
    assert!(
        num(&acked["at_unix_ms"]) >= b_done,
        "acknowledged before the handover completed"
    );
    assert_eq!(
        pair.status(Node::A).expect("status a")["role"],
        "maintenance"
    );

    // Once the platform is done, fw-a leaves maintenance and (preempt on) takes the role back.
    wait_until("fw-a active again after the maintenance", FAILOVER, || {
        pair.status(Node::A)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    assert!(
        cloud.holder().contains("nic-appliance-a"),
        "{}",
        cloud.holder()
    );
    assert!(
        crate::e2e_ops::events(&pair, Node::A)
            .iter()
            .any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains("maintenance is over"))),
        "journal"
    );
}

/// `cloudha selftest` of one node, run inside its namespace like an operator on the VM would.
fn selftest(pair: &Pair, node: Node, json: bool) -> std::process::Output {
    let config = pair
        .dir
        .path()
        .join(format!("{}.toml", crate::e2e_local::name(node)));
    let config = config.to_str().expect("utf-8 path");
    let mut args = vec![
        env!("CARGO_BIN_EXE_cloudha"),
        "selftest",
        "--config",
        config,
    ];
    if json {
        args.push("--json");
    }
    pair.topo.exec(node, &args).expect("run cloudha selftest")
}

#[test]
fn e2e_azure_selftest_passes_on_a_running_pair_and_names_a_missing_action() {
    let (pair, cloud) = start("e2eazself", 500, false);
    // The shared key must be readable by its owner only.
    let key = pair.dir.path().join("key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod key");
    // Both daemons run; the self-test must not disturb them (it binds no keepalive port).
    wait_until("both nodes to hear each other on every path", SOON, || {
        pair.status(Node::B).filter(|s| {
            s["paths"]
                .as_array()
                .is_some_and(|p| p.iter().all(|x| x["up"] == true))
        })
    });
    for node in [Node::A, Node::B] {
        let out = selftest(&pair, node, true);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_str(&stdout).expect("JSON report");
        assert_eq!(report["ok"], true, "{stdout}");
        let checks = report["checks"].as_array().expect("checks");
        let passed = |name: &str| {
            checks
                .iter()
                .filter(|c| c["name"] == name && c["outcome"] == "pass")
                .count()
        };
        // IMDS discovery and the token went through the namespace's 169.254.169.254.
        assert_eq!(passed("metadata_service"), 1, "{stdout}");
        assert_eq!(passed("discovery"), 1, "{stdout}");
        assert_eq!(passed("identity"), 1, "{stdout}");
        // Peer facts from the running daemon: both keepalive paths, version, config digest.
        assert_eq!(passed("keepalive"), 2, "{stdout}");
        assert_eq!(passed("same_version"), 1, "{stdout}");
        assert_eq!(passed("same_config"), 1, "{stdout}");
        assert!(passed("permission") >= 6, "{stdout}");
    }
    assert_eq!(
        pair.status(Node::A).expect("A answers")["role"],
        "active",
        "the self-test disturbed the pair"
    );

    // Take one action away from B's role: the text report names it, its scope and the fix.
    let actions: Vec<&str> = cloudha_azure_emulator::scenario::DEFAULT_ACTIONS
        .iter()
        .copied()
        .filter(|a| *a != "Microsoft.Network/virtualNetworks/subnets/join/action")
        .collect();
    assert!(cloud.emu.set_permissions("vm-appliance-b", &actions, &[]));
    let out = selftest(&pair, Node::B, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FAIL] permission")
            && text.contains(
                "missing Microsoft.Network/virtualNetworks/subnets/join/action on /subscriptions/"
            )
            && text.contains("/virtualNetworks/vnet-ha/subnets/appliances")
            && text.contains("[permissions API]")
            && text.contains("fix: add Microsoft.Network/virtualNetworks/subnets/join/action"),
        "{text}"
    );
    assert!(text.contains("Result: FAILED"), "{text}");
    eprintln!("{text}");
}
