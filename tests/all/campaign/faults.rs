//! Applying the faults of a schedule to the namespaces, the daemons and the emulated cloud,
//! and healing them.

use std::io;
use std::sync::{Arc, Mutex};

use cloudha_azure_emulator::{Emulator, Fault as EmuFault, LoggedRequest};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::delay::RELAY_PORT;
use super::schedule::{CloudFault, Direction, Paths};
use crate::netns::{Node, Topology};

/// The keepalive port of the test configs (`e2e_local`).
pub const KEEPALIVE_PORT: u16 = 5405;
/// nftables table the loss and silent-cut faults live in, inside a node's namespace.
const TABLE: &str = "cloudha_campaign";

/// Drops `percent` of the keepalives on `paths` in `direction`, inside the node's own
/// namespace (so it works on the direct mgmt link as well as on the bridged LAN, and never
/// touches the loopback the cloud API is served on). Replaces any earlier rule of the node.
pub fn impair(
    topo: &Topology,
    node: Node,
    paths: Paths,
    direction: Direction,
    percent: u32,
) -> io::Result<()> {
    let devices = match paths {
        Paths::Lan => "\"lan0\"",
        Paths::Mgmt => "\"mgmt0\"",
        Paths::All => "\"lan0\", \"mgmt0\"",
    };
    // `numgen random mod 10000 < 10000` is out of range for nft: 100% is unconditional.
    let random = if percent >= 100 {
        String::new()
    } else {
        format!("numgen random mod 100 < {percent} ")
    };
    let rule = |hook: &str, dir: &str| {
        format!(
            "  chain {hook} {{\n   type filter hook {hook} priority 0; policy accept;\n   \
             {dir}name {{ {devices} }} udp dport {{ {KEEPALIVE_PORT}, {RELAY_PORT} }} {random}drop\n  }}\n"
        )
    };
    let mut chains = String::new();
    if matches!(direction, Direction::Inbound | Direction::Both) {
        chains.push_str(&rule("input", "iif"));
    }
    if matches!(direction, Direction::Outbound | Direction::Both) {
        chains.push_str(&rule("output", "oif"));
    }
    // The leading `table` line makes the delete valid whether or not the table exists, so
    // the replacement is one atomic nft transaction.
    let script = format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n{chains}}}\n"
    );
    nft_script(topo.ns(node), &script)
}

/// Runs an nftables script (`nft -f`, one atomic transaction) inside namespace `ns`.
pub fn nft_script(ns: &str, script: &str) -> io::Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), script)?;
    let path = file.path().to_str().expect("utf-8 temp path");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", path])
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Removes the node's loss rules (if any): one nft transaction, valid whether or not the
/// table exists (the leading `table` line creates it empty first).
pub fn clear_impairment(topo: &Topology, node: Node) -> io::Result<()> {
    nft_script(
        topo.ns(node),
        &format!("table inet {TABLE}\ndelete table inet {TABLE}\n"),
    )
}

/// The emulator faults for one scheduled cloud fault. Faults on NIC writes also hit the
/// atomic move's `moveIpConfigurations` POST, the other way a NIC changes.
pub fn emulator_faults(fault: CloudFault, times: usize) -> Vec<EmuFault> {
    const NIC: &str = "networkInterfaces/";
    const MOVE: &str = "/moveIpConfigurations";
    let on_writes = |f: &dyn Fn(&str, &str) -> EmuFault| vec![f("PUT", NIC), f("POST", MOVE)];
    let faults = match fault {
        CloudFault::Throttled => on_writes(&|m, p| EmuFault::throttled(m, p, 1)),
        CloudFault::Conflict => on_writes(&EmuFault::another_operation_in_progress),
        CloudFault::PreconditionFailed => on_writes(&EmuFault::precondition_failed),
        CloudFault::PrivateIpInUse => on_writes(&EmuFault::private_ip_address_in_use),
        CloudFault::InternalError => vec![EmuFault::internal_error("GET", "/operations/")],
        CloudFault::Unavailable => vec![EmuFault::service_unavailable("PUT", "/routes/", 1)],
        CloudFault::SlowAnswer { ms } => vec![EmuFault::delay("GET", NIC, ms)],
        CloudFault::Timeout => on_writes(&|m, p| EmuFault::delay(m, p, fault.held_ms())),
        CloudFault::TokenFailure => vec![EmuFault::imds_token_internal_error()],
        CloudFault::MetadataFailure => vec![EmuFault::imds_metadata_unavailable()],
        CloudFault::OperationFails => on_writes(&|m, p| {
            EmuFault::operation_fails(
                m,
                p,
                "InternalServerError",
                "An error occurred while the NIC update was applied.",
            )
        }),
    };
    faults.into_iter().map(|f| f.times(times)).collect()
}

/// A `kill -9` armed on a daemon's ARM call sequence (see `Fault::KillDuringTakeover`).
#[derive(Debug)]
pub struct KillAtRequest {
    caller: String,
    on_path: String,
    pid: u32,
    after_writes: u32,
    writes_started: bool,
    counted: u32,
    /// The request the kill fired on, once it has.
    pub fired: Option<String>,
}

/// Installs the hook on the emulator: the daemon `pid`, whose requests the emulator logs as
/// `caller`, is killed on arrival of its ARM request number `after_writes` counted from its
/// first PUT/POST, among those whose path contains `on_path` (case-insensitive; "" for all).
/// The request itself is still processed, as ARM would process a request whose client died
/// after sending it.
pub fn arm_kill_at_request(
    emu: &Emulator,
    caller: &str,
    on_path: &str,
    pid: u32,
    after_writes: u32,
) -> Arc<Mutex<KillAtRequest>> {
    let state = Arc::new(Mutex::new(KillAtRequest {
        caller: caller.to_string(),
        on_path: on_path.to_ascii_lowercase(),
        pid,
        after_writes,
        writes_started: false,
        counted: 0,
        fired: None,
    }));
    let hook_state = state.clone();
    emu.set_request_hook(Some(Arc::new(move |req: &LoggedRequest| {
        let mut s = hook_state.lock().unwrap_or_else(|e| e.into_inner());
        let arm = req.path.starts_with("/subscriptions/")
            && req.path.to_ascii_lowercase().contains(&s.on_path);
        if s.fired.is_some() || !arm || req.caller.as_deref() != Some(s.caller.as_str()) {
            return;
        }
        if matches!(req.method.as_str(), "PUT" | "POST") {
            s.writes_started = true;
        }
        if !s.writes_started {
            return;
        }
        if s.counted < s.after_writes {
            s.counted += 1;
            return;
        }
        // The pid is our child, not yet reaped (the runner reaps it when it restarts it),
        // so it cannot have been reused.
        let result = kill(Pid::from_raw(s.pid as i32), Signal::SIGKILL);
        let tail = req.path.rsplit('/').take(2).collect::<Vec<_>>();
        s.fired = Some(format!(
            "request #{} {} .../{}/{} ({result:?})",
            req.seq,
            req.method,
            tail.get(1).copied().unwrap_or(""),
            tail.first().copied().unwrap_or("")
        ));
    })));
    state
}

/// How far back a time namespace may set CLOCK_BOOTTIME: not below zero, so not more than
/// the machine's uptime (minus a margin).
pub fn clamp_clock_offset(offset_s: i64) -> i64 {
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as i64;
    offset_s.max(-(uptime - 60).max(0))
}

/// The wrapper that starts a daemon in a new time namespace with its monotonic and boot
/// clocks shifted by `offset_s` (`unshare` execs the daemon, so the pid stays its own).
pub fn time_namespace_wrapper(offset_s: i64) -> Vec<String> {
    vec![
        "unshare".into(),
        "--time".into(),
        format!("--monotonic={offset_s}"),
        format!("--boottime={offset_s}"),
        "--".into(),
    ]
}
