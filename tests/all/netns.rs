//! Network-namespace harness for end-to-end tests.
//!
//! Every test builds its own [`Topology`]: four namespaces that exist only for
//! that test, so traffic never leaves them and nothing in the root namespace is
//! touched (veths are created directly inside the test namespaces).
//!
//! ```text
//!   ns A: lan0 10.77.0.1 ──┐                ┌── lan0 10.77.0.2 :ns B
//!         mgmt0 10.77.1.1 ─┼── (direct) ────┼── mgmt0 10.77.1.2
//!                          a-lan  br0  b-lan
//!                          └─── ns sw ───┘
//!                                 │ c-lan
//!                          ns client: lan0 10.77.0.10
//! ```
//!
//! Declare [`Daemon`]s *after* their `Topology` so Rust drops (kills) them
//! before the namespaces are deleted.

// Some helpers exist for the failover tests the lead writes on top of this.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// Runs `f` on a thread that has entered namespace `ns` (setns(2) on that thread only) and
/// returns its result. Sockets made there stay in the namespace wherever they are used later.
pub fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let handle = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&handle, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Prefix length of both test subnets.
pub const PREFIX_LEN: u8 = 24;
/// The floating IP the failover tests and the demo hand between A and B.
pub const FLOATING_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);

/// A host of the topology (the switch namespace is not a host; see [`Topology::sw_ns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    A,
    B,
    Client,
}

impl Node {
    /// Short letter used in namespace and bridge-port names.
    fn letter(self) -> &'static str {
        match self {
            Node::A => "a",
            Node::B => "b",
            Node::Client => "c",
        }
    }

    /// The bridge-side end of this node's LAN veth, in the sw namespace.
    pub fn bridge_port(self) -> String {
        format!("{}-lan", self.letter())
    }

    /// Address of `lan0` (10.77.0.0/24).
    pub fn lan_ip(self) -> Ipv4Addr {
        match self {
            Node::A => Ipv4Addr::new(10, 77, 0, 1),
            Node::B => Ipv4Addr::new(10, 77, 0, 2),
            Node::Client => Ipv4Addr::new(10, 77, 0, 10),
        }
    }

    /// Address of `mgmt0` (10.77.1.0/24); the client has no mgmt link.
    pub fn mgmt_ip(self) -> Option<Ipv4Addr> {
        match self {
            Node::A => Some(Ipv4Addr::new(10, 77, 1, 1)),
            Node::B => Some(Ipv4Addr::new(10, 77, 1, 2)),
            Node::Client => None,
        }
    }
}

const NODES: [Node; 3] = [Node::A, Node::B, Node::Client];

/// Tags in use by live topologies of this process: two tests sharing a tag would
/// delete each other's namespaces at `new` ("leftovers"), so refuse that loudly.
static TAGS_IN_USE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Panics with a clear message unless we are root and `ip`, `tc`, `ping` and
/// `python3` are on PATH (install with `apt-get install -y iproute2 iputils-ping python3`).
pub fn require_root_and_tools() {
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("reading /proc/self/status to find our uid");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1)) // effective uid
        .expect("Uid: line in /proc/self/status");
    assert!(
        uid == "0",
        "netns tests need root (effective uid is {uid}): they create network namespaces"
    );
    let missing: Vec<&str> = ["ip", "tc", "ping", "python3"]
        .into_iter()
        .filter(|tool| which(tool).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "netns tests need {missing:?} on PATH: apt-get install -y iproute2 iputils-ping python3"
    );
}

/// First executable called `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs a command and turns a non-zero exit into an error carrying its stderr,
/// so setup failures say which command failed and why.
pub(crate) fn run(program: &str, args: &[&str]) -> io::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, panicking with `what` once
/// `timeout` has passed. This is the only way tests should wait for an event.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            panic!("timed out after {elapsed:.2?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20).min(timeout - elapsed));
    }
}

/// The namespaces of one test. Dropping it deletes them all (which removes the
/// veths and the bridge with them), also when the test panicked. Set
/// `CLOUDHA_KEEP_NETNS=1` to keep them for debugging.
pub struct Topology {
    tag: String,
    /// Namespaces of A, B, client and switch, in that order.
    names: [String; 4],
}

impl Topology {
    /// Builds the topology; namespace names are `ch{pid}-{tag}-{a,b,c,sw}`.
    /// `tag` must be unique among the tests of this binary (use the test's name).
    pub fn new(tag: &str) -> io::Result<Topology> {
        require_root_and_tools();
        assert!(
            !tag.is_empty()
                && tag.len() <= 20
                && tag
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "topology tag {tag:?} must be 1-20 chars of [a-z0-9_]"
        );
        {
            let mut tags = TAGS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
            let inserted = tags.get_or_insert_with(HashSet::new).insert(tag.to_owned());
            assert!(
                inserted,
                "topology tag {tag:?} is already used by a live test"
            );
        }
        sweep_dead_runs();
        // Built before setup so that Drop cleans up a half-built topology too.
        let prefix = format!("ch{}-{tag}", std::process::id());
        let topo = Topology {
            tag: tag.to_owned(),
            names: ["a", "b", "c", "sw"].map(|suffix| format!("{prefix}-{suffix}")),
        };
        topo.delete_namespaces(); // leftovers of an earlier run whose pid we reuse
        topo.setup()?;
        Ok(topo)
    }

    fn setup(&self) -> io::Result<()> {
        let sw = self.sw_ns();
        for ns in &self.names {
            run("ip", &["netns", "add", ns])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        // STP off (the default, but explicit): ports forward as soon as they are up,
        // so set_lan(.., true) restores the path at once.
        run(
            "ip",
            &[
                "-n",
                sw,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
            ],
        )?;
        run("ip", &["-n", sw, "link", "set", "br0", "up"])?;
        for node in NODES {
            let ns = self.ns(node);
            let port = node.bridge_port();
            run(
                "ip",
                &[
                    "-n", ns, "link", "add", "lan0", "type", "veth", "peer", "name", &port,
                    "netns", sw,
                ],
            )?;
            run("ip", &["-n", sw, "link", "set", &port, "master", "br0"])?;
            run("ip", &["-n", sw, "link", "set", &port, "up"])?;
            let addr = format!("{}/{PREFIX_LEN}", node.lan_ip());
            run("ip", &["-n", ns, "addr", "add", &addr, "dev", "lan0"])?;
            run("ip", &["-n", ns, "link", "set", "lan0", "up"])?;
            // Let gratuitous ARP create/update neighbour entries, so a floating IP
            // moving between A and B is seen by the client (and the peer) at once.
            for conf in ["all", "lan0"] {
                self.sysctl(node, &format!("net/ipv4/conf/{conf}/arp_accept"), "1")?;
            }
        }
        let (a, b) = (self.ns(Node::A), self.ns(Node::B));
        run(
            "ip",
            &[
                "-n", a, "link", "add", "mgmt0", "type", "veth", "peer", "name", "mgmt0", "netns",
                b,
            ],
        )?;
        for node in [Node::A, Node::B] {
            let ns = self.ns(node);
            let ip = node.mgmt_ip().expect("A and B have a mgmt address");
            let addr = format!("{ip}/{PREFIX_LEN}");
            run("ip", &["-n", ns, "addr", "add", &addr, "dev", "mgmt0"])?;
            run("ip", &["-n", ns, "link", "set", "mgmt0", "up"])?;
        }
        Ok(())
    }

    /// Writes a sysctl inside the node's namespace (/proc/sys/net is per netns of
    /// the writer, so this must run under `ip netns exec`).
    fn sysctl(&self, node: Node, key: &str, value: &str) -> io::Result<()> {
        let script = format!("echo {value} > /proc/sys/{key}");
        run("ip", &["netns", "exec", self.ns(node), "sh", "-c", &script]).map(drop)
    }

    /// Name of the node's network namespace.
    pub fn ns(&self, node: Node) -> &str {
        match node {
            Node::A => &self.names[0],
            Node::B => &self.names[1],
            Node::Client => &self.names[2],
        }
    }

    /// Name of the switch namespace holding `br0` and the `x-lan` ports.
    pub fn sw_ns(&self) -> &str {
        &self.names[3]
    }

    /// All four namespace names (A, B, client, sw).
    pub fn namespaces(&self) -> &[String; 4] {
        &self.names
    }

    fn delete_namespaces(&self) {
        for ns in &self.names {
            // Fails harmlessly when the namespace does not exist.
            let _ = run("ip", &["netns", "del", ns]);
        }
    }

    /// MAC address of the node's `lan0`.
    pub fn lan_mac(&self, node: Node) -> io::Result<String> {
        let out = run("ip", &["-n", self.ns(node), "-j", "link", "show", "lan0"])?;
        let json: serde_json::Value = serde_json::from_str(&out).map_err(io::Error::other)?;
        json[0]["address"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other(format!("no address in `ip -j link show`: {out}")))
    }

    /// Runs `ip netns exec NS args...` and returns its output whatever the exit code.
    pub fn exec(&self, node: Node, args: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", self.ns(node)])
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Starts `program args...` inside the node's namespace with stdout and stderr
    /// appended to `log_file` (appending lets a restarted daemon share one log).
    /// `ip netns exec` execs the program, so the child's pid is the program's.
    pub fn spawn(
        &self,
        node: Node,
        program: &Path,
        args: &[&str],
        log_file: &Path,
    ) -> io::Result<Daemon> {
        self.spawn_env(node, program, args, log_file, &[])
    }

    /// [`Topology::spawn`] with extra environment variables.
    pub fn spawn_env(
        &self,
        node: Node,
        program: &Path,
        args: &[&str],
        log_file: &Path,
        env: &[(String, String)],
    ) -> io::Result<Daemon> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)?;
        let mut command = Command::new("ip");
        // The daemons get no AWS settings from whoever runs the tests: the AWS end-to-end
        // tests prove that credentials and region come from the namespace's own IMDS.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(["netns", "exec", self.ns(node)])
            .arg(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Daemon {
            child,
            log_file: log_file.to_owned(),
            reaped: None,
        })
    }

    /// Cuts (`false`) or restores (`true`) the node's LAN path by setting its
    /// bridge port down/up. The node sees carrier loss on `lan0`; use
    /// `netem_lan(node, Some("loss 100%"))` for a silent drop instead.
    pub fn set_lan(&self, node: Node, up: bool) -> io::Result<()> {
        let state = if up { "up" } else { "down" };
        run(
            "ip",
            &[
                "-n",
                self.sw_ns(),
                "link",
                "set",
                &node.bridge_port(),
                state,
            ],
        )
        .map(drop)
    }

    /// Cuts or restores the direct A<->B mgmt link (A's end; B sees carrier loss).
    pub fn set_mgmt(&self, up: bool) -> io::Result<()> {
        let state = if up { "up" } else { "down" };
        run(
            "ip",
            &["-n", self.ns(Node::A), "link", "set", "mgmt0", state],
        )
        .map(drop)
    }

    /// Impairs the node's LAN in both directions, like a bad cable or a congested link,
    /// e.g. `Some("loss 20%")`; `None` removes any impairment.
    ///
    /// Uses `tc ... netem` when the kernel has it. Kernels without sch_netem
    /// (like the one these tests were written on) get `loss N%` emulated by an
    /// nftables bridge rule (`numgen random`) in the sw namespace, which needs
    /// the `nft` tool; other netem specs are then an error.
    pub fn netem_lan(&self, node: Node, spec: Option<&str>) -> io::Result<()> {
        let sw = self.sw_ns();
        let port = node.bridge_port();
        let table = format!("impair_{}", node.letter());
        let node_ns = self.ns(node).to_string();
        // Both ends of the veth: the bridge port's egress goes to the node, lan0's to the bridge.
        let ends = [
            (sw.to_string(), port.clone()),
            (node_ns, "lan0".to_string()),
        ];
        let Some(spec) = spec else {
            for (ns, dev) in &ends {
                let qdiscs = run("tc", &["-n", ns, "qdisc", "show", "dev", dev])?;
                if qdiscs.contains("netem") {
                    run("tc", &["-n", ns, "qdisc", "del", "dev", dev, "root"])?;
                }
            }
            if which("nft").is_some() && self.nft_table(&table).is_some() {
                run(
                    "ip",
                    &[
                        "netns", "exec", sw, "nft", "delete", "table", "bridge", &table,
                    ],
                )?;
            }
            return Ok(());
        };
        let netem = |ns: &str, dev: &str| {
            let mut args = vec!["-n", ns, "qdisc", "replace", "dev", dev, "root", "netem"];
            args.extend(spec.split_whitespace());
            run("tc", &args)
        };
        let err = match netem(&ends[0].0, &ends[0].1) {
            Ok(_) => return netem(&ends[1].0, &ends[1].1).map(drop),
            Err(e) => e,
        };
        if !err.to_string().contains("qdisc kind is unknown") {
            return Err(err);
        }
        let percent = parse_loss(spec).ok_or_else(|| {
            io::Error::other(format!(
                "kernel has no netem qdisc and only `loss N%` can be emulated, not {spec:?}"
            ))
        })?;
        if which("nft").is_none() {
            return Err(io::Error::other(
                "kernel has no netem qdisc; emulating loss needs nft: apt-get install -y nftables",
            ));
        }
        // Random drop in 1/100 of a percent; the leading `table` line makes the
        // following delete valid whether or not the table exists, so the whole
        // replace is one atomic nft transaction.
        let threshold = (percent * 100.0).round() as u32;
        // nft rejects `< 10000` after `mod 10000` (out of range): 100% is unconditional.
        let random = if threshold >= 10_000 {
            String::new()
        } else {
            format!("numgen random mod 10000 < {threshold} ")
        };
        let script = format!(
            "table bridge {table}\ndelete table bridge {table}\n\
             table bridge {table} {{\n chain impair {{\n  \
             type filter hook forward priority 0; policy accept;\n  \
             oifname \"{port}\" {random}drop\n  \
             iifname \"{port}\" {random}drop\n }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", sw, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        io::Write::write_all(
            &mut child.stdin.take().expect("piped stdin"),
            script.as_bytes(),
        )?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "nft loss rule failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Human-readable description of the impairment on the node's bridge port:
    /// its tc qdiscs plus the nftables loss rule if the fallback is in use.
    pub fn lan_impairment(&self, node: Node) -> io::Result<String> {
        let port = node.bridge_port();
        let mut s = run("tc", &["-n", self.sw_ns(), "qdisc", "show", "dev", &port])?;
        if which("nft").is_some() {
            if let Some(rules) = self.nft_table(&format!("impair_{}", node.letter())) {
                s.push_str(&rules);
            }
        }
        Ok(s)
    }

    fn nft_table(&self, table: &str) -> Option<String> {
        run(
            "ip",
            &[
                "netns",
                "exec",
                self.sw_ns(),
                "nft",
                "list",
                "table",
                "bridge",
                table,
            ],
        )
        .ok()
    }

    /// One ping from `from` to `addr`; true if a reply came within 1 s.
    pub fn ping(&self, from: Node, addr: &str) -> bool {
        self.exec(from, &["ping", "-n", "-q", "-c", "1", "-W", "1", addr])
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Which MAC `addr` resolves to from `from`'s view right now: forgets the
    /// neighbour entry, pings once (which ARPs afresh) and reads the new entry.
    /// None if nobody answered.
    pub fn answering_mac(&self, from: Node, addr: &str) -> Option<String> {
        let ns = self.ns(from);
        // `flush` succeeds (and does nothing) when there is no entry.
        run(
            "ip",
            &["-n", ns, "neigh", "flush", "to", addr, "dev", "lan0"],
        )
        .ok()?;
        self.ping(from, addr);
        let out = run(
            "ip",
            &["-n", ns, "-j", "neigh", "show", "to", addr, "dev", "lan0"],
        )
        .ok()?;
        let json: serde_json::Value = serde_json::from_str(&out).ok()?;
        json.as_array()?
            .iter()
            .find_map(|e| e["lladdr"].as_str().map(str::to_owned))
    }

    /// Sends one UDP datagram from inside the node's namespace (payload passed to
    /// python3 as hex on argv, so any bytes work).
    pub fn send_udp(&self, from: Node, to: SocketAddr, payload: &[u8]) -> io::Result<()> {
        const SEND: &str = "import socket,sys\n\
            fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET\n\
            s = socket.socket(fam, socket.SOCK_DGRAM)\n\
            s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))\n";
        let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        run(
            "ip",
            &[
                "netns",
                "exec",
                self.ns(from),
                "python3",
                "-c",
                SEND,
                &to.ip().to_string(),
                &to.port().to_string(),
                &hex,
            ],
        )
        .map(drop)
    }
}

/// Parses a netem loss spec (`loss 20%`, `loss 12.5`, `loss random 5%`) to a percentage.
fn parse_loss(spec: &str) -> Option<f64> {
    let mut words = spec.split_whitespace().filter(|w| *w != "random");
    if words.next()? != "loss" {
        return None;
    }
    let p: f64 = words.next()?.trim_end_matches('%').parse().ok()?;
    (words.next().is_none() && (0.0..=100.0).contains(&p)).then_some(p)
}

/// Deletes namespaces left by earlier test runs that died without dropping their
/// topologies (SIGKILL, timeout): names `ch{pid}-...` whose pid no longer exists.
fn sweep_dead_runs() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("ch")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = ["-a", "-b", "-c", "-sw"].iter().any(|s| name.ends_with(s));
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if std::env::var_os("CLOUDHA_KEEP_NETNS").is_some() {
            eprintln!(
                "CLOUDHA_KEEP_NETNS set: keeping namespaces {:?}",
                self.names
            );
        } else {
            self.delete_namespaces();
        }
        let mut tags = TAGS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tags) = tags.as_mut() {
            tags.remove(&self.tag);
        }
    }
}

/// A process started in a namespace by [`Topology::spawn`]. Dropping it kills
/// (SIGKILL) and reaps it, so tests leave no processes or zombies behind.
pub struct Daemon {
    child: Child,
    log_file: PathBuf,
    reaped: Option<ExitStatus>,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap: afterwards the process is gone and its sockets are free,
    /// so a replacement can bind the same addresses.
    pub fn kill9(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        self.reaped = Some(status);
        Ok(status)
    }

    /// SIGTERM, then waits up to `grace` for a clean exit; SIGKILLs after that.
    /// Returns the exit status and whether the process exited within the grace.
    pub fn terminate(&mut self, grace: Duration) -> io::Result<(ExitStatus, bool)> {
        if let Some(status) = self.reaped {
            return Ok((status, true));
        }
        run("kill", &["-TERM", &self.pid().to_string()])?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                self.reaped = Some(status);
                return Ok((status, true));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((self.kill9()?, false))
    }

    /// The exit status if the process has exited (reaping it), None while it runs.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait()?;
        }
        Ok(self.reaped)
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The log so far (lossy UTF-8), for assertions and panic messages.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_file.display()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
