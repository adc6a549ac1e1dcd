//! Side by side on moto (EC2) in the same namespace topology: cloudha with its AWS provider, and
//! keepalived with unicast VRRP and a `notify_master` script that moves the IP with the AWS CLI
//! (`aws ec2 assign-private-ip-addresses --allow-reassignment`), at the same advert and dead
//! intervals. moto runs on the host's loopback; a small TCP forwarder listening inside each
//! node's namespace (127.0.0.1:5000) carries connections to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::AttributeBooleanValue;
use aws_sdk_ec2::Client;

use super::measure::{footprint, idle_footprint, ms, secs, Footprint, Table};
use super::unix_ms;
use crate::e2e_azure::bind_in_namespace;
use crate::e2e_local::{num, Options, Pair, SOON};
use crate::netns::{wait_until, Daemon, Node, Topology};

// moto's server harness of the AWS provider's tests, shared rather than copied.
use crate::aws_harness::moto;

const REGION: &str = "eu-west-1";
const FLOATING: &str = "10.0.1.100";
/// Where the forwarder listens inside each node's namespace.
const EC2_PORT: u16 = 5000;
/// cloudha's default keepalive interval; keepalived's `advert_int` is the same 0.2 s.
const INTERVAL_MS: u64 = 200;
/// 3 x interval. keepalived's master-down interval is 3 x advert_int + skew, with skew
/// (256 - priority) / 256 x advert_int = 2.3 ms for the backup's priority 253.
const DEAD_MS: u64 = 600;
const KEEPALIVED_BACKUP_PRIORITY: u32 = 253;
const BOUND: Duration = Duration::from_secs(60);

fn credentials_env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", REGION),
        // Never the machine's own AWS settings.
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// moto, a forwarder runtime, a client and the two ENIs.
struct Cloud {
    moto: Arc<moto::MotoServer>,
    rt: tokio::runtime::Runtime,
    ec2: Client,
    eni_a: String,
    eni_b: String,
}

impl Cloud {
    fn new() -> Cloud {
        let moto = moto::shared();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
            .endpoint_url(moto.url())
            .build();
        let ec2 = Client::from_conf(config);
        let (eni_a, eni_b) = rt.block_on(async {
            let vpc = ec2
                .create_vpc()
                .cidr_block("10.0.0.0/16")
                .send()
                .await
                .expect("create vpc")
                .vpc
                .and_then(|v| v.vpc_id)
                .expect("vpc id");
            let subnet = ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block("10.0.1.0/24")
                .send()
                .await
                .expect("create subnet")
                .subnet
                .and_then(|s| s.subnet_id)
                .expect("subnet id");
            let mut enis = Vec::new();
            for ip in ["10.0.1.10", "10.0.1.11"] {
                let eni = ec2
                    .create_network_interface()
                    .subnet_id(&subnet)
                    .private_ip_address(ip)
                    .send()
                    .await
                    .expect("create eni")
                    .network_interface
                    .and_then(|n| n.network_interface_id)
                    .expect("eni id");
                // A correct appliance pair: source/destination check off, or the standby's
                // failover_proven indicator (rightly) holds HA at Not ready.
                ec2.modify_network_interface_attribute()
                    .network_interface_id(&eni)
                    .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                    .send()
                    .await
                    .expect("source/destination check off");
                enis.push(eni);
            }
            (enis[0].clone(), enis[1].clone())
        });
        Cloud {
            moto,
            rt,
            ec2,
            eni_a,
            eni_b,
        }
    }

    /// The floating IP back on fw-a's ENI alone before a run. moto ignores `AllowReassignment`
    /// (the address stays on both ENIs), so it is removed from fw-b's explicitly.
    fn give_to_a(&self) {
        self.rt.block_on(async {
            self.ec2
                .assign_private_ip_addresses()
                .network_interface_id(&self.eni_a)
                .private_ip_addresses(FLOATING)
                .allow_reassignment(true)
                .send()
                .await
                .expect("assign to a");
            if self.holders_async().await.contains(&self.eni_b) {
                self.ec2
                    .unassign_private_ip_addresses()
                    .network_interface_id(&self.eni_b)
                    .private_ip_addresses(FLOATING)
                    .send()
                    .await
                    .expect("unassign from b");
            }
        });
        assert_eq!(self.holders(), vec![self.eni_a.clone()]);
    }

    /// The ENIs holding the floating IP.
    fn holders(&self) -> Vec<String> {
        self.rt.block_on(self.holders_async())
    }

    async fn holders_async(&self) -> Vec<String> {
        let Ok(out) = self
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(&self.eni_a)
            .network_interface_ids(&self.eni_b)
            .send()
            .await
        else {
            return Vec::new();
        };
        out.network_interfaces()
            .iter()
            .filter(|n| {
                n.private_ip_addresses()
                    .iter()
                    .any(|p| p.private_ip_address() == Some(FLOATING))
            })
            .filter_map(|n| n.network_interface_id().map(str::to_string))
            .collect()
    }

    /// Serves 127.0.0.1:5000 inside `ns`, forwarding every connection to moto.
    fn forward_into(&self, ns: &str) {
        let listener = bind_in_namespace(ns, SocketAddr::from(([127, 0, 0, 1], EC2_PORT)));
        let target = SocketAddr::from(([127, 0, 0, 1], self.moto.port));
        let _guard = self.rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        self.rt.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // The runtime's threads live in the host namespace: moto's loopback.
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
    }
}

/// Polls moto until fw-b's ENI holds the floating IP; returns the time since `killed`. (On AWS
/// the assignment takes it off fw-a's ENI; moto leaves it there, see `give_to_a`.)
fn wait_converged_on_b(cloud: &Cloud, killed: Instant) -> f64 {
    wait_until("the floating IP on fw-b's ENI", BOUND, || {
        cloud.holders().contains(&cloud.eni_b).then_some(())
    });
    killed.elapsed().as_secs_f64() * 1000.0
}

fn cloudha_sections(cloud: &Cloud) -> impl Fn(Node) -> String {
    let (a, b) = (cloud.eni_a.clone(), cloud.eni_b.clone());
    move |node| {
        let (own, peer) = if node == Node::A { (&a, &b) } else { (&b, &a) };
        format!(
            r#"
[provider]
kind = "aws"

[provider.aws]
region = "{REGION}"
endpoint = "http://127.0.0.1:{EC2_PORT}"
# Never reached (region and own ENI are given); pointed at a closed port to be sure.
imds_endpoint = "http://127.0.0.1:9"
own_eni = "{own}"
peer_eni = "{peer}"

[[floating_ip]]
address = "{FLOATING}"
prefix_len = 24
"#
        )
    }
}

struct Result {
    detect_ms: f64,
    converged_ms: f64,
    idle: Option<Footprint>,
}

fn cloudha_run(cloud: &Cloud, tag: &str, idle: Option<Duration>) -> Result {
    cloud.give_to_a();
    let opts = Options {
        preempt: false,
        dead_ms: DEAD_MS,
        interval_ms: INTERVAL_MS,
        // Idle: the deployment the setup scripts write, one path, like keepalived's one VRRP
        // instance on one link; the failover runs keep both paths.
        mgmt_path: idle.is_none(),
        ..Options::default()
    };
    let mut pair = Pair::prepare(tag, opts, cloudha_sections(cloud));
    pair.env = credentials_env();
    for node in [Node::A, Node::B] {
        cloud.forward_into(pair.topo.ns(node));
    }
    let mut pair = pair.start_both();
    wait_until("HA Ready on both, fw-a converged", BOUND, || {
        let a = pair.status(Node::A)?;
        (a["ready"] == true
            && a["takeover"]["state"] == "done"
            && pair.status(Node::B)?["ready"] == true)
            .then_some(())
    });
    let idle = idle.map(|window| idle_footprint(&mut pair, Node::A, window));
    let killed_unix = unix_ms();
    pair.daemon(Node::A).kill9().expect("kill fw-a");
    let killed = Instant::now();
    let converged_ms = wait_converged_on_b(cloud, killed);
    let s = wait_until("fw-b active with its takeover done", SOON, || {
        pair.status(Node::B)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    let decided = num(&s["last_failover"]["decided_unix_ms"]);
    Result {
        detect_ms: decided.saturating_sub(killed_unix) as f64,
        converged_ms,
        idle,
    }
}

fn program(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} not found: run scripts/bench.sh (it installs keepalived and the AWS CLI) or set {env}",
        path.display()
    );
    path
}

/// keepalived's config and notify script for one node, in `dir`. keepalived refuses an instance
/// without a VIP, so it also moves the LAN floating IP inside the namespaces (netlink and a
/// gratuitous ARP: what it does on premises), beside the cloud move its script makes.
fn keepalived_files(dir: &Path, node: Node, cloud: &Cloud, aws: &Path) -> PathBuf {
    let (me, peer, priority, eni, letter) = match node {
        Node::A => (Node::A, Node::B, 254, &cloud.eni_a, "a"),
        _ => (
            Node::B,
            Node::A,
            KEEPALIVED_BACKUP_PRIORITY,
            &cloud.eni_b,
            "b",
        ),
    };
    let notify = dir.join(format!("notify-{letter}.sh"));
    let events = dir.join(format!("events-{letter}"));
    std::fs::write(
        &notify,
        format!(
            "#!/bin/sh\n\
             # keepalived calls: notify_master/backup SCRIPT; the first argument says which.\n\
             echo \"$1 $(date +%s%3N)\" >> {events}\n\
             [ \"$1\" = master ] || exit 0\n\
             export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION={REGION}\n\
             export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null\n\
             {aws} ec2 assign-private-ip-addresses --network-interface-id {eni} \
             --private-ip-addresses {FLOATING} --allow-reassignment \
             --endpoint-url http://127.0.0.1:{EC2_PORT} >> {events}.log 2>&1\n\
             echo \"moved $? $(date +%s%3N)\" >> {events}\n",
            events = events.display(),
            aws = aws.display(),
        ),
    )
    .expect("write notify script");
    let chmod = Command::new("chmod")
        .args(["0755"])
        .arg(&notify)
        .status()
        .expect("chmod");
    assert!(chmod.success());
    let conf = dir.join(format!("keepalived-{letter}.conf"));
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n  router_id fw-{letter}\n  vrrp_version 3\n  script_user root\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface lan0\n  virtual_router_id 51\n  \
             priority {priority}\n  advert_int {advert}\n  unicast_src_ip {src}\n  \
             unicast_peer {{\n    {dst}\n  }}\n  \
             virtual_ipaddress {{\n    {lan_vip}/24 dev lan0\n  }}\n  \
             notify_master \"{notify} master\"\n  notify_backup \"{notify} backup\"\n}}\n",
            advert = INTERVAL_MS as f64 / 1000.0,
            src = me.lan_ip(),
            dst = peer.lan_ip(),
            notify = notify.display(),
            lan_vip = crate::netns::FLOATING_IP,
        ),
    )
    .expect("write keepalived config");
    conf
}

fn events(dir: &Path, letter: &str) -> String {
    std::fs::read_to_string(dir.join(format!("events-{letter}"))).unwrap_or_default()
}

fn spawn_keepalived(topo: &Topology, node: Node, dir: &Path, conf: &Path) -> Daemon {
    let keepalived = program("CLOUDHA_KEEPALIVED", "/usr/sbin/keepalived");
    let letter = if node == Node::A { "a" } else { "b" };
    let pid = |what: &str| dir.join(format!("{what}-{letter}.pid"));
    let args = [
        "--dont-fork".to_string(),
        "--log-console".to_string(),
        "--vrrp".to_string(),
        format!("--use-file={}", conf.display()),
        format!("--pid={}", pid("keepalived").display()),
        format!("--vrrp_pid={}", pid("vrrp").display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    topo.spawn(
        node,
        &keepalived,
        &args,
        &dir.join(format!("keepalived-{letter}.log")),
    )
    .expect("spawn keepalived")
}

/// Every process in the node's namespace (keepalived's parent and its VRRP child).
fn pids_in(topo: &Topology, node: Node) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", topo.ns(node)])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn keepalived_run(cloud: &Cloud, tag: &str, idle: Option<Duration>) -> Result {
    cloud.give_to_a();
    let aws = program("CLOUDHA_AWS_CLI", "/opt/cloudha-venv/bin/aws");
    let topo = Topology::new(tag).expect("topology");
    let dir = tempfile::tempdir().expect("tempdir");
    for node in [Node::A, Node::B] {
        cloud.forward_into(topo.ns(node));
    }
    let conf_a = keepalived_files(dir.path(), Node::A, cloud, &aws);
    let conf_b = keepalived_files(dir.path(), Node::B, cloud, &aws);
    let mut a = spawn_keepalived(&topo, Node::A, dir.path(), &conf_a);
    let logs = |d: &Path| {
        ["a", "b"]
            .iter()
            .map(|l| {
                std::fs::read_to_string(d.join(format!("keepalived-{l}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let found = wait_until_or_none(BOUND, || {
        events(dir.path(), "a").contains("moved 0").then_some(())
    });
    assert!(
        found.is_some(),
        "keepalived on fw-a never became master and moved the IP:\n{}",
        logs(dir.path())
    );
    let mut b = spawn_keepalived(&topo, Node::B, dir.path(), &conf_b);
    let found = wait_until_or_none(BOUND, || {
        events(dir.path(), "b").contains("backup").then_some(())
    });
    assert!(
        found.is_some(),
        "keepalived on fw-b never became backup:\n{}",
        logs(dir.path())
    );
    assert_eq!(cloud.holders(), vec![cloud.eni_a.clone()]);
    let idle = idle.map(|window| footprint(&pids_in(&topo, Node::A), window));

    // The node dies. keepalived's VRRP child gets SIGTERM when its parent dies (and would then
    // send a priority-0 advert, a graceful hand-over): stop every process first so none can
    // react, then kill them, like a VM that is gone.
    let pids = pids_in(&topo, Node::A);
    let signal = |sig: &str| {
        for pid in &pids {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    };
    let killed_unix = unix_ms();
    signal("-STOP");
    let killed = Instant::now();
    signal("-KILL");
    let converged_ms = wait_converged_on_b(cloud, killed);
    let _ = a.kill9();
    let became_master = events(dir.path(), "b")
        .lines()
        .find_map(|l| l.strip_prefix("master "))
        .and_then(|t| t.trim().parse::<u64>().ok())
        .expect("fw-b's notify_master ran");
    let _ = b.kill9();
    Result {
        detect_ms: became_master.saturating_sub(killed_unix) as f64,
        converged_ms,
        idle,
    }
}

/// `wait_until` that returns None on timeout instead of panicking (to print logs first).
fn wait_until_or_none(timeout: Duration, mut probe: impl FnMut() -> Option<()>) -> Option<()> {
    let started = Instant::now();
    loop {
        if probe().is_some() {
            return Some(());
        }
        if started.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The active node idle at the default keepalive rate (cloudha with its AWS provider, reconcile
/// included; keepalived's VRRP at the same advert interval, both its processes): CPU and memory
/// over `idle_secs`, one after the other on the same moto.
pub fn idle(idle_secs: u64) -> (Footprint, Footprint) {
    println!("\n# AWS (moto): the active node idle for {idle_secs} s, cloudha then keepalived");
    let cloud = Cloud::new();
    let window = Some(Duration::from_secs(idle_secs));
    let ours = cloudha_run(&cloud, "bawsidc", window).idle;
    let theirs = keepalived_run(&cloud, "bawsidk", window).idle;
    let (ours, theirs) = (ours.expect("measured"), theirs.expect("measured"));
    println!(
        "  cloudha (AWS provider): {}; keepalived: {}",
        ours.describe(),
        theirs.describe()
    );
    (ours, theirs)
}

/// cloudha and keepalived, kill -> converged, on the same moto.
pub fn side_by_side(runs: usize, table: &mut Table) {
    println!("\n# AWS (moto): cloudha and keepalived + AWS CLI, {runs} failover(s) each");
    let cloud = Cloud::new();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..runs {
        let o = cloudha_run(&cloud, &format!("bawsch{i}"), None);
        println!(
            "  cloudha run {}: decided +{} ms, converged {:.0} ms",
            i + 1,
            o.detect_ms,
            o.converged_ms
        );
        ours.push(o);
        let k = keepalived_run(&cloud, &format!("bawska{i}"), None);
        println!(
            "  keepalived run {}: notify_master +{} ms, converged {:.0} ms",
            i + 1,
            k.detect_ms,
            k.converged_ms
        );
        theirs.push(k);
    }
    let col = |r: &[Result], f: fn(&Result) -> f64| r.iter().map(f).collect::<Vec<f64>>();
    let timing = format!("interval/advert {INTERVAL_MS} ms, dead {DEAD_MS} ms");
    table.row(
        format!(
            "AWS (moto): kill -> standby decides ({timing}); keepalived: -> notify_master runs"
        ),
        format!("cloudha {}", ms(&col(&ours, |r| r.detect_ms))),
        format!("keepalived {}", ms(&col(&theirs, |r| r.detect_ms))),
    );
    let ours_ms = col(&ours, |r| r.converged_ms);
    let theirs_ms = col(&theirs, |r| r.converged_ms);
    table.row(
        "AWS (moto): kill -> floating IP on the standby's ENI",
        format!("cloudha {}", secs(&ours_ms)),
        format!(
            "keepalived + AWS CLI {}: ratio keepalived / cloudha {:.2}; limit: dead {DEAD_MS} ms (moto applies at once)",
            secs(&theirs_ms),
            super::measure::median(&theirs_ms) / super::measure::median(&ours_ms)
        ),
    );
}
