//! End to end: two real `cloudha run` processes with the `local` provider in network
//! namespaces (see `netns.rs`), checked with real traffic from a client namespace.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

use cloudha::fsm::{PeerAdvert, Role};
use cloudha::keepalive::packet::Keepalive;
use serde_json::Value;

use crate::netns::{self, wait_until, Daemon, Node, Topology, FLOATING_IP};

pub(crate) const KEY: &str = "e2e-test-key-0123456789abcdef0123456789";
pub(crate) const INTERVAL_MS: u64 = 100;
pub(crate) const DEAD_MS: u64 = 500;
pub(crate) const PORT: u16 = 5405;
/// Generous bound for anything that should happen within a few dead intervals.
pub(crate) const SOON: Duration = Duration::from_secs(15);

/// Per-test knobs.
#[derive(Clone, Copy)]
pub(crate) struct Options {
    pub(crate) preempt: bool,
    pub(crate) hold_down_ms: u64,
    pub(crate) dead_ms: u64,
    pub(crate) interval_ms: u64,
    /// A second keepalive path over the mgmt network (the setup scripts write only `lan`).
    pub(crate) mgmt_path: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            preempt: true,
            hold_down_ms: 2000,
            dead_ms: DEAD_MS,
            interval_ms: INTERVAL_MS,
            mgmt_path: true,
        }
    }
}

/// A pair of daemons in a fresh topology. Field order matters: daemons are dropped (killed)
/// before the topology deletes the namespaces.
pub(crate) struct Pair {
    a: Option<Daemon>,
    b: Option<Daemon>,
    /// Extra environment of the daemons (cloud credentials).
    pub(crate) env: Vec<(String, String)>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) topo: Topology,
}

/// The daemon under test: the one cargo built, or `CLOUDHA_BIN` (a long campaign runs from
/// copies of the binaries, so that rebuilding the tree meanwhile does not swap the daemon).
fn binary() -> PathBuf {
    std::env::var_os("CLOUDHA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cloudha")))
}

pub(crate) fn name(node: Node) -> &'static str {
    match node {
        Node::A => "fw-a",
        Node::B => "fw-b",
        Node::Client => "client",
    }
}

/// The `[provider]`, `[[floating_ip]]` and `[[route]]` sections of the local-provider tests.
pub(crate) fn local_provider(_node: Node) -> String {
    format!(
        r#"
[provider]
kind = "local"

[provider.local]
interface = "lan0"

[[floating_ip]]
address = "{FLOATING_IP}"
prefix_len = {prefix}
"#,
        prefix = netns::PREFIX_LEN
    )
}

fn write_config(dir: &Path, node: Node, opts: Options, provider: &str) -> PathBuf {
    let (peer, priority) = match node {
        Node::A => (Node::B, 200),
        _ => (Node::A, 100),
    };
    let mgmt = |n: Node| n.mgmt_ip().expect("nodes have a mgmt address");
    let text = format!(
        r#"
[cluster]
id = 7
key_file = "{key}"

[node]
name = "{name}"
priority = {priority}
preempt = {preempt}
preempt_hold_down = "{hold}ms"
state_dir = "{dir}/{name}-state"

[peer]
name = "{peer_name}"

[keepalive]
interval = "{interval}ms"
dead_interval = "{dead}ms"

[[keepalive.path]]
name = "lan"
bind = "{lan}:{PORT}"
peer = "{peer_lan}:{PORT}"

{mgmt_path}
[status]
socket = "{dir}/{name}.sock"
{provider}"#,
        key = dir.join("key").display(),
        name = name(node),
        peer_name = name(peer),
        preempt = opts.preempt,
        hold = opts.hold_down_ms,
        dead = opts.dead_ms,
        interval = opts.interval_ms,
        dir = dir.display(),
        lan = node.lan_ip(),
        peer_lan = peer.lan_ip(),
        mgmt_path = if opts.mgmt_path {
            format!(
                "[[keepalive.path]]\nname = \"mgmt\"\nbind = \"{}:{PORT}\"\npeer = \"{}:{PORT}\"\n",
                mgmt(node),
                mgmt(peer)
            )
        } else {
            String::new()
        },
    );
    let path = dir.join(format!("{}.toml", name(node)));
    std::fs::write(&path, text).expect("write config");
    path
}

impl Pair {
    pub(crate) fn start(tag: &str, opts: Options) -> Pair {
        let pair = Pair::prepare(tag, opts, local_provider);
        pair.start_both()
    }

    /// A topology and both nodes' configs (with `provider`'s sections), no daemon yet.
    pub(crate) fn prepare(tag: &str, opts: Options, provider: impl Fn(Node) -> String) -> Pair {
        netns::require_root_and_tools();
        let topo = Topology::new(tag).expect("topology");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), KEY).expect("write key");
        // The daemon refuses a key file group or others can read.
        std::fs::set_permissions(
            dir.path().join("key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod key");
        write_config(dir.path(), Node::A, opts, &provider(Node::A));
        write_config(dir.path(), Node::B, opts, &provider(Node::B));
        Pair {
            a: None,
            b: None,
            env: Vec::new(),
            dir,
            topo,
        }
    }

    /// Start A, wait until it is active, then B, until it is standby.
    pub(crate) fn start_both(mut self) -> Pair {
        // A starts first so it is active before B exists: the usual primary/secondary order.
        self.spawn(Node::A);
        self.wait_role(Node::A, "active");
        self.spawn(Node::B);
        self.wait_role(Node::B, "standby");
        self
    }

    pub(crate) fn spawn(&mut self, node: Node) {
        self.spawn_with_env(node, &[]);
    }

    /// Start the node's daemon with extra environment variables.
    pub(crate) fn spawn_with_env(&mut self, node: Node, env: &[(&str, &str)]) {
        let config = self.dir.path().join(format!("{}.toml", name(node)));
        let log = self.dir.path().join(format!("{}.log", name(node)));
        let mut all_env = self.env.clone();
        all_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let daemon = self
            .topo
            .spawn_env(
                node,
                &binary(),
                &["run", "--config", config.to_str().expect("utf-8 path")],
                &log,
                &all_env,
            )
            .expect("spawn daemon");
        match node {
            Node::A => self.a = Some(daemon),
            _ => self.b = Some(daemon),
        }
    }

    /// Starts the node's daemon under `wrapper` (e.g. `unshare --time ...`), which must exec
    /// it so that the pid stays the daemon's.
    pub(crate) fn spawn_wrapped(&mut self, node: Node, wrapper: &[&str]) {
        let config = self.dir.path().join(format!("{}.toml", name(node)));
        let log = self.dir.path().join(format!("{}.log", name(node)));
        let binary = binary();
        let mut args: Vec<&str> = wrapper[1..].to_vec();
        args.extend([
            binary.to_str().expect("utf-8 path"),
            "run",
            "--config",
            config.to_str().expect("utf-8 path"),
        ]);
        let daemon = self
            .topo
            .spawn(node, Path::new(wrapper[0]), &args, &log)
            .expect("spawn daemon");
        match node {
            Node::A => self.a = Some(daemon),
            _ => self.b = Some(daemon),
        }
    }

    pub(crate) fn daemon(&mut self, node: Node) -> &mut Daemon {
        match node {
            Node::A => self.a.as_mut(),
            _ => self.b.as_mut(),
        }
        .expect("daemon running")
    }

    pub(crate) fn socket(&self, node: Node) -> PathBuf {
        self.dir.path().join(format!("{}.sock", name(node)))
    }

    pub(crate) fn cli(&self, node: Node, args: &[&str]) -> std::process::Output {
        Process::new(binary())
            .args(args)
            .arg("--socket")
            .arg(self.socket(node))
            .output()
            .expect("run cloudha cli")
    }

    /// The node's status, or None while its daemon does not answer.
    pub(crate) fn status(&self, node: Node) -> Option<Value> {
        let out = self.cli(node, &["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub(crate) fn role(&self, node: Node) -> Option<String> {
        self.status(node)
            .and_then(|s| s["role"].as_str().map(str::to_string))
    }

    pub(crate) fn wait_role(&self, node: Node, role: &str) -> Value {
        wait_until(&format!("{} to be {role}", name(node)), SOON, || {
            self.status(node).filter(|s| s["role"] == role)
        })
    }

    /// Wait until both nodes report HA Ready.
    /// Waits until `node`'s takeover is done and its last cloud read shows it holding every
    /// resource.
    pub(crate) fn wait_converged(&self, node: Node) {
        wait_until("the node to converge and read the cloud back", SOON, || {
            self.status(node).filter(|s| {
                s["takeover"]["state"] == "done"
                    && s["cloud"]["resources"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty() && r.iter().all(|x| x["holder"] == "me"))
            })
        });
    }

    pub(crate) fn wait_ready_both(&self) {
        wait_until("HA Ready on both", SOON, || {
            (self.status(Node::A)?["ready"] == true && self.status(Node::B)?["ready"] == true)
                .then_some(())
        });
    }

    pub(crate) fn logs(&self) -> String {
        ["fw-a", "fw-b"]
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{n}.log")))
                    .unwrap_or_default();
                format!("--- {n} ---\n{log}")
            })
            .collect()
    }

    /// The MAC the client's neighbour table holds for the floating IP after a ping, without
    /// flushing it first (a flush would make both a crashed node's kernel and the new owner
    /// answer the ARP request; the gratuitous ARP is what must move the entry).
    fn client_sees_floating_ip_at(&self) -> Option<String> {
        if !self.topo.ping(Node::Client, &FLOATING_IP.to_string()) {
            return None;
        }
        let out = self
            .topo
            .exec(
                Node::Client,
                &["ip", "-j", "neigh", "show", &FLOATING_IP.to_string()],
            )
            .ok()?;
        let entries: Value = serde_json::from_slice(&out.stdout).ok()?;
        entries
            .as_array()?
            .iter()
            .find_map(|e| e["lladdr"].as_str().map(str::to_string))
    }

    fn holds_floating_ip(&self, node: Node) -> bool {
        let out = self
            .topo
            .exec(node, &["ip", "-j", "addr", "show", "dev", "lan0"])
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).contains(&format!("\"{FLOATING_IP}\""))
    }

    fn mac(&self, node: Node) -> String {
        self.topo.lan_mac(node).expect("lan mac")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("daemon logs of the failed test:\n{}", self.logs());
        }
    }
}

pub(crate) fn num(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

#[test]
fn e2e_kill_active_fails_over_and_preempts_back() {
    let mut pair = Pair::start("e2ekill", Options::default());
    let a_mac = pair.mac(Node::A);
    let b_mac = pair.mac(Node::B);
    wait_until("client to reach the floating IP at fw-a", SOON, || {
        pair.client_sees_floating_ip_at().filter(|m| *m == a_mac)
    });
    let status = wait_until("HA Ready on fw-a", SOON, || {
        pair.status(Node::A).filter(|s| s["ready"] == true)
    });
    assert_eq!(status["peer"]["state"], "standby");
    assert!(!pair.holds_floating_ip(Node::B));

    pair.daemon(Node::A).kill9().expect("kill fw-a");
    let status = pair.wait_role(Node::B, "active");
    let failover = &status["last_failover"];
    let detection = num(&failover["detection_ms"]);
    assert!(
        detection >= DEAD_MS,
        "took over after {detection} ms, before the dead interval ({DEAD_MS} ms)"
    );
    wait_until("client to reach the floating IP at fw-b", SOON, || {
        pair.client_sees_floating_ip_at().filter(|m| *m == b_mac)
    });
    assert!(pair.holds_floating_ip(Node::B));

    // fw-a comes back: standby first (releasing what its killed run left behind), then it
    // takes the role back after the hold-down.
    pair.spawn(Node::A);
    let status = pair.wait_role(Node::A, "standby");
    assert_eq!(status["peer"]["state"], "active");
    wait_until("fw-a to drop the stale floating IP", SOON, || {
        (!pair.holds_floating_ip(Node::A)).then_some(())
    });
    let status = pair.wait_role(Node::A, "active");
    assert!(
        status["last_transition"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("preempting")),
        "{status}\n{}",
        pair.logs()
    );
    pair.wait_role(Node::B, "standby");
    wait_until(
        "client to reach the floating IP at fw-a again",
        SOON,
        || pair.client_sees_floating_ip_at().filter(|m| *m == a_mac),
    );
    wait_until("fw-b to release the floating IP", SOON, || {
        (!pair.holds_floating_ip(Node::B)).then_some(())
    });
}

#[test]
fn e2e_without_preemption_the_returning_node_stays_standby() {
    let opts = Options {
        preempt: false,
        hold_down_ms: 500,
        ..Options::default()
    };
    let mut pair = Pair::start("e2enopre", opts);
    pair.daemon(Node::A).kill9().expect("kill fw-a");
    pair.wait_role(Node::B, "active");
    pair.spawn(Node::A);
    pair.wait_role(Node::A, "standby");
    // Stays standby well past the hold-down, observed through status.
    let status = wait_until("fw-a standby for 3 s", SOON, || {
        pair.status(Node::A)
            .filter(|s| s["role"] != "standby" || num(&s["role_for_ms"]) >= 3000)
    });
    assert_eq!(status["role"], "standby", "{status}");
    assert_eq!(pair.role(Node::B).as_deref(), Some("active"));
}

#[test]
fn e2e_link_cut_on_every_path_fails_over_once_and_heals() {
    let opts = Options {
        preempt: false,
        ..Options::default()
    };
    let pair = Pair::start("e2ecut", opts);
    // One path cut: the other still carries keepalives, nothing moves.
    pair.topo.set_mgmt(false).expect("cut mgmt");
    let status = wait_until("fw-b to see mgmt down", SOON, || {
        pair.status(Node::B)
            .filter(|s| s["paths"][1]["up"] == false && s["ready"] == false)
    });
    assert_eq!(status["role"], "standby");
    assert_eq!(status["paths"][0]["up"], true);

    // Every path cut, silently (no carrier loss fw-a could notice): the standby takes over
    // while fw-a, hearing nothing, stays active: a real split brain.
    pair.topo
        .netem_lan(Node::A, Some("loss 100%"))
        .expect("cut lan");
    let status = pair.wait_role(Node::B, "active");
    assert_eq!(num(&status["epoch"]), 2);
    assert_eq!(pair.role(Node::A).as_deref(), Some("active"));

    // Heal: the newer epoch (fw-b) keeps the role; fw-a steps down; no second move.
    pair.topo.netem_lan(Node::A, None).expect("restore lan");
    pair.topo.set_mgmt(true).expect("restore mgmt");
    pair.wait_role(Node::A, "standby");
    let status = wait_until("HA Ready on fw-b", SOON, || {
        pair.status(Node::B).filter(|s| s["ready"] == true)
    });
    assert_eq!(status["role"], "active");
    assert_eq!(
        num(&status["epoch"]),
        2,
        "no further takeover after healing"
    );
    let b_mac = pair.mac(Node::B);
    wait_until("client to reach the floating IP at fw-b", SOON, || {
        pair.client_sees_floating_ip_at().filter(|m| *m == b_mac)
    });
}

#[test]
fn e2e_packet_loss_below_the_dead_threshold_causes_no_failover() {
    // 25% loss with a dead interval of 10 keepalives: a spurious failover needs 10 losses in
    // a row (p ≈ 1e-6 per window), so any takeover here is a bug.
    let opts = Options {
        dead_ms: 1000,
        ..Options::default()
    };
    let pair = Pair::start("e2eloss", opts);
    pair.topo.set_mgmt(false).expect("cut mgmt");
    pair.topo
        .netem_lan(Node::A, Some("loss 25%"))
        .expect("loss");
    let status = wait_until(
        "fw-b to count 30 lost keepalives on lan",
        Duration::from_secs(60),
        || {
            pair.status(Node::B)
                .filter(|s| num(&s["paths"][0]["lost"]) >= 30)
        },
    );
    assert_eq!(status["role"], "standby", "{status}");
    assert_eq!(num(&status["epoch"]), 1, "no takeover happened");
    assert_eq!(pair.role(Node::A).as_deref(), Some("active"));
    pair.topo.netem_lan(Node::A, None).expect("clear loss");
}

#[test]
fn e2e_switchover_and_maintenance() {
    let opts = Options {
        preempt: false,
        ..Options::default()
    };
    let pair = Pair::start("e2eops", opts);
    wait_until("HA Ready", SOON, || {
        pair.status(Node::A).filter(|s| s["ready"] == true)
    });

    // Switchover from the active node.
    let out = pair.cli(Node::A, &["switchover"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pair.wait_role(Node::B, "active");
    pair.wait_role(Node::A, "standby");
    let b_mac = pair.mac(Node::B);
    wait_until("floating IP at fw-b", SOON, || {
        pair.client_sees_floating_ip_at().filter(|m| *m == b_mac)
    });

    // Maintenance on the active node hands over first.
    let out = pair.cli(Node::B, &["maintenance", "on"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pair.wait_role(Node::A, "active");
    let status = pair.wait_role(Node::B, "maintenance");
    assert_eq!(status["maintenance"], true);
    let a_mac = pair.mac(Node::A);
    wait_until("floating IP at fw-a", SOON, || {
        pair.client_sees_floating_ip_at().filter(|m| *m == a_mac)
    });

    // With the peer in maintenance, fw-a refuses to hand over (exit code 4).
    let out = pair.cli(Node::A, &["switchover"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = pair.cli(Node::A, &["maintenance", "on"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));

    let out = pair.cli(Node::B, &["maintenance", "off"]);
    assert!(out.status.success());
    pair.wait_role(Node::B, "standby");
    assert_eq!(pair.role(Node::A).as_deref(), Some("active"));
}

/// Sends a datagram to fw-a's LAN keepalive port from the client namespace.
pub(crate) fn inject(pair: &Pair, payload: &[u8]) {
    let to = SocketAddr::new(Node::A.lan_ip().into(), PORT);
    pair.topo
        .send_udp(Node::Client, to, payload)
        .expect("send datagram");
}

pub(crate) fn forged(cluster_id: u32, node_name: &str, incarnation: u64, key: &[u8]) -> Vec<u8> {
    Keepalive {
        cluster_id,
        incarnation,
        sequence: 1,
        path_id: 0,
        advert: PeerAdvert {
            role: Role::Active,
            priority: 255,
            epoch: 1_000,
            takeover_in_progress: false,
            yielding: false,
            leaving: false,
            planned: false,
        },
        wall_clock_ms: 0,
        tx_timestamp_us: 1,
        echo_timestamp_us: 0,
        echo_delay_us: 0,
        config_digest: [0; 16],
        node_name: node_name.into(),
        software_version: "evil".into(),
    }
    .encode(key)
}

#[test]
fn e2e_bad_packets_are_dropped_counted_and_change_nothing() {
    let pair = Pair::start("e2ebad", Options::default());
    let before = pair.status(Node::A).expect("status");
    let epoch = num(&before["epoch"]);

    inject(&pair, b"");
    inject(&pair, b"garbage that is not a keepalive at all, long enough to pass the first check; padding padding padding padding");
    let mut bad_magic = forged(7, "fw-b", u64::MAX, KEY.as_bytes());
    bad_magic[0] = b'X';
    inject(&pair, &bad_magic);
    inject(
        &pair,
        &forged(7, "fw-b", u64::MAX, b"the wrong key, but long enough"),
    );
    inject(&pair, &forged(99, "fw-b", u64::MAX, KEY.as_bytes()));
    inject(&pair, &forged(7, "intruder", u64::MAX, KEY.as_bytes()));
    // Signed with the real key but from an old incarnation: a replay of a recorded packet.
    inject(&pair, &forged(7, "fw-b", 1, KEY.as_bytes()));

    let status = wait_until("fw-a to count every dropped datagram", SOON, || {
        pair.status(Node::A).filter(|s| {
            let r = &s["paths"][0]["rejected"];
            [
                "malformed_length",
                "bad_magic",
                "unauthenticated",
                "foreign_cluster",
                "unknown_sender",
                "replayed",
            ]
            .iter()
            .all(|k| r[k].as_u64().unwrap_or(0) >= 1)
        })
    });
    let rejected = &status["paths"][0]["rejected"];
    assert_eq!(num(&rejected["malformed_length"]), 2, "{rejected}");
    assert_eq!(num(&rejected["unauthenticated"]), 1, "{rejected}");
    // Nothing moved: the forged "active, priority 255, epoch 1000" was never believed.
    assert_eq!(status["role"], "active");
    assert_eq!(num(&status["epoch"]), epoch);
    assert_eq!(status["peer"]["priority"], 100);
    assert_eq!(pair.role(Node::B).as_deref(), Some("standby"));
}
