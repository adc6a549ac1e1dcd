//! Failover on the emulated Azure: detection, decision -> first request on the wire, API calls,
//! kill -> converged against the physical limit, and 500 routes under ARM's write bucket.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloudha_azure_emulator::scenario::{RouteSpec, RouteTableSpec};
use cloudha_azure_emulator::{Emulator, LoggedRequest, Scenario, ThrottleLimits, TimingProfile};
use serde_json::Value;

use super::measure::{idle_footprint, median, ms, secs, Footprint, Table};
use crate::e2e_azure::{Cloud, ARM_PORT};
use crate::e2e_local::{num, Options, Pair};
use crate::netns::{wait_until, Node};

const FLOATING: &str = "10.10.1.100";
const ADDR_A: &str = "10.10.1.4";
const ADDR_B: &str = "10.10.1.5";
const INTERVAL_MS: u64 = 100;
const DEAD_MS: u64 = 500;
/// Emulated propagation: a NIC update 5 s (as the demo), a route update 1 s.
const NIC_MS: u64 = 5000;
const ROUTE_MS: u64 = 1000;
/// Route-table scale: 100 tables of 5 routes.
const SCALE_TABLES: usize = 100;
const SCALE_ROUTES_PER_TABLE: usize = 5;
/// Bound for one failover (500 routes at 10 writes/s take 30 s plus the polls).
const FAILOVER: Duration = Duration::from_secs(240);

/// How the emulated cloud paces a failover, and which move the daemons make.
#[derive(Clone, Copy)]
struct Pacing {
    nic_ms: u64,
    route_ms: u64,
    /// `NetworkRp`: `Retry-After: 10` on NIC operations, as Azure's Network RP answers.
    profile: TimingProfile,
    atomic: bool,
}

/// The demo's pacing: NIC 5 s, route 1 s, the emulator asking for a poll a second.
const DEMO: Pacing = Pacing {
    nic_ms: NIC_MS,
    route_ms: ROUTE_MS,
    profile: TimingProfile::Custom,
    atomic: false,
};

/// One route the daemons manage: table name, route name, prefix.
struct Route {
    table: String,
    name: String,
    prefix: String,
}

fn routes(scale: bool) -> Vec<Route> {
    if !scale {
        return vec![Route {
            table: "rt-workloads".into(),
            name: "default-via-appliance".into(),
            prefix: "0.0.0.0/0".into(),
        }];
    }
    (0..SCALE_TABLES)
        .flat_map(|t| {
            (0..SCALE_ROUTES_PER_TABLE).map(move |r| Route {
                table: format!("rt-scale-{t:03}"),
                name: format!("r{r}"),
                prefix: format!("172.16.{t}.{}/28", r * 16),
            })
        })
        .collect()
}

/// The two-appliance scenario plus the scale tables, every route pointing at fw-a.
fn scenario(routes: &[Route]) -> Scenario {
    let mut s = Scenario::two_appliances();
    let mut tables: BTreeMap<&str, Vec<RouteSpec>> = BTreeMap::new();
    for r in routes.iter().filter(|r| r.table != "rt-workloads") {
        tables.entry(&r.table).or_default().push(RouteSpec {
            name: r.name.clone(),
            address_prefix: r.prefix.clone(),
            next_hop_type: "VirtualAppliance".into(),
            next_hop_ip_address: Some(ADDR_A.into()),
        });
    }
    for (name, routes) in tables {
        s.route_tables.push(RouteTableSpec {
            name: name.to_string(),
            resource_group: None,
            disable_bgp_route_propagation: false,
            tags: None,
            routes,
        });
    }
    s
}

fn provider_sections(
    emu: &Emulator,
    routes: &[Route],
    reconcile: &str,
    atomic: bool,
) -> impl Fn(Node) -> String {
    let net = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network",
        emu.subscription_id(),
        emu.resource_group()
    );
    let mut route_text = String::new();
    for r in routes {
        route_text.push_str(&format!(
            "\n[[route]]\ntable = \"{net}/routeTables/{}\"\nname = \"{}\"\nprefix = \"{}\"\nnext_hop = \"self_address\"\n",
            r.table, r.name, r.prefix
        ));
    }
    let nic_a = emu.nic_id("nic-appliance-a");
    let nic_b = emu.nic_id("nic-appliance-b");
    let reconcile = reconcile.to_string();
    let move_mode = if atomic { "atomic" } else { "two_step" };
    move |node| {
        let peer = if node == Node::A { &nic_b } else { &nic_a };
        format!(
            r#"
[failover]
deadline = "300s"
retry_initial = "500ms"
retry_max = "2s"
reconcile_interval = "{reconcile}"

[provider]
kind = "azure"

[provider.azure]
peer_nic = "{peer}"
move_mode = "{move_mode}"
arm_endpoint = "http://127.0.0.1:{ARM_PORT}"

[[floating_ip]]
address = "{FLOATING}"
public_ip = "{net}/publicIPAddresses/pip-floating"
{route_text}"#
        )
    }
}

/// What one failover showed.
struct Run {
    detection_ms: f64,
    first_request_ms: f64,
    first_write_ms: f64,
    wire_first_request_ms: f64,
    wire_first_write_ms: f64,
    /// First write to last write, as they arrived at the emulator.
    wire_write_span_ms: f64,
    calls: BTreeMap<String, u64>,
    reads: usize,
    writes: usize,
    throttled_reads: usize,
    throttled_writes: usize,
    converged_ms: f64,
}

fn converged(emu: &Emulator, routes: &[Route]) -> bool {
    emu.operations_in_progress() == 0
        && emu
            .ip_holder(FLOATING.parse().expect("address"))
            .is_some_and(|h| h.contains("nic-appliance-b"))
        && routes.iter().all(|r| {
            emu.route(&r.table, &r.name)
                .and_then(|v| v.pointer("/properties/nextHopIpAddress").cloned())
                == Some(Value::from(ADDR_B))
        })
}

fn is_arm(r: &LoggedRequest) -> bool {
    !r.path.starts_with("/metadata")
}

/// A fresh pair on a fresh emulated cloud; fw-a killed; measured until the cloud converged.
fn one_failover(tag: &str, routes: &[Route], reconcile: &str, pacing: Pacing) -> Run {
    // Two NIC updates and their polls, with room to spare; never less than the usual bound.
    let bound = FAILOVER.max(Duration::from_millis(3 * pacing.nic_ms) + Duration::from_secs(60));
    let scenario = scenario(routes);
    let emu = Emulator::new(&scenario).expect("scenario");
    emu.update_settings(|s| {
        s.nic_propagation_ms = pacing.nic_ms;
        s.move_propagation_ms = pacing.nic_ms;
        s.route_propagation_ms = pacing.route_ms;
        s.lro_retry_after_secs = 1;
        s.timing_profile = pacing.profile;
        // Setup (fw-a reading hundreds of routes at start) runs unthrottled; ARM's limits are
        // set just before the kill, with full buckets, as on an idle subscription.
        s.throttle = ThrottleLimits {
            write_burst: 1_000_000,
            write_refill_per_sec: 1_000_000.0,
            read_burst: 1_000_000,
            read_refill_per_sec: 1_000_000.0,
        };
    });
    let opts = Options {
        preempt: false,
        dead_ms: DEAD_MS,
        interval_ms: INTERVAL_MS,
        ..Options::default()
    };
    let pair = Pair::prepare(
        tag,
        opts,
        provider_sections(&emu, routes, reconcile, pacing.atomic),
    );
    let cloud = Cloud::serve_emulator(&pair, emu);
    let mut pair = pair.start_both();
    wait_until("fw-a to converge and read the cloud back", bound, || {
        pair.status(Node::A).filter(|s| {
            s["takeover"]["state"] == "done"
                && s["cloud"]["resources"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty() && r.iter().all(|x| x["holder"] == "me"))
        })
    });
    wait_until("HA Ready on both", bound, || {
        (pair.status(Node::A)?["ready"] == true && pair.status(Node::B)?["ready"] == true)
            .then_some(())
    });
    let emu = cloud.emu.clone();
    emu.set_throttle_limits(ThrottleLimits::default());
    let logged_before = emu.requests().len();

    pair.daemon(Node::A).kill9().expect("kill fw-a");
    let killed = Instant::now();
    // Polled in-process (no I/O), so the resolution is a few ms.
    wait_until("the cloud to converge on fw-b", bound, || {
        converged(&emu, routes).then_some(())
    });
    let converged_ms = killed.elapsed().as_secs_f64() * 1000.0;
    let converged_unix = super::unix_ms();
    // The daemon reports done once it has read everything back (hundreds of reads at scale).
    let status = wait_until("fw-b's takeover to be done", bound, || {
        pair.status(Node::B)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    let f = &status["last_failover"];
    let decided = num(&f["decided_unix_ms"]);
    let log: Vec<LoggedRequest> = emu.requests().into_iter().skip(logged_before).collect();
    let after: Vec<&LoggedRequest> = log
        .iter()
        .filter(|r| is_arm(r) && r.at_unix_ms >= decided && r.at_unix_ms <= converged_unix)
        .collect();
    let first = |write: bool| {
        after
            .iter()
            .filter(|r| !write || r.method != "GET")
            .map(|r| r.at_unix_ms)
            .min()
            .map(|t| (t - decided) as f64)
            .expect("a request after the decision")
    };
    let calls = f["api_calls"]
        .as_object()
        .expect("api_calls")
        .iter()
        .map(|(k, v)| (k.clone(), num(v)))
        .collect();
    let run = Run {
        detection_ms: num(&f["detection_ms"]) as f64,
        first_request_ms: num(&f["first_request_ms"]) as f64,
        first_write_ms: num(&f["first_write_ms"]) as f64,
        wire_first_request_ms: first(false),
        wire_first_write_ms: first(true),
        wire_write_span_ms: {
            let writes: Vec<u64> = after
                .iter()
                .filter(|r| r.method != "GET")
                .map(|r| r.at_unix_ms)
                .collect();
            match (writes.iter().min(), writes.iter().max()) {
                (Some(a), Some(b)) => (b - a) as f64,
                _ => 0.0,
            }
        },
        calls,
        reads: after.iter().filter(|r| r.method == "GET").count(),
        writes: after.iter().filter(|r| r.method != "GET").count(),
        throttled_reads: after
            .iter()
            .filter(|r| r.status == 429 && r.method == "GET")
            .count(),
        throttled_writes: after
            .iter()
            .filter(|r| r.status == 429 && r.method != "GET")
            .count(),
        converged_ms,
    };
    drop(pair);
    drop(cloud);
    run
}

fn runs_of(tag: &str, runs: usize, routes: &[Route], reconcile: &str, pacing: Pacing) -> Vec<Run> {
    (0..runs)
        .map(|i| {
            let run = one_failover(&format!("{tag}{i}"), routes, reconcile, pacing);
            println!(
                "  {tag} run {}: detection {} ms, converged {:.0} ms, {} reads / {} writes ({} / {} throttled)",
                i + 1,
                run.detection_ms,
                run.converged_ms,
                run.reads,
                run.writes,
                run.throttled_reads,
                run.throttled_writes
            );
            run
        })
        .collect()
}

fn column(runs: &[Run], f: impl Fn(&Run) -> f64) -> Vec<f64> {
    runs.iter().map(f).collect()
}

/// The single-route failover: timings and calls.
pub fn failover(runs: usize, table: &mut Table) {
    println!("\n# emulated Azure: {runs} failover(s), 1 floating IP + 1 route");
    let routes = routes(false);
    let results = runs_of("bazure", runs, &routes, "30s", DEMO);
    let settings = format!(
        "interval {INTERVAL_MS} ms, dead {DEAD_MS} ms, NIC propagation {NIC_MS} ms, route {ROUTE_MS} ms"
    );
    table.row(
        format!("Azure: detection, last keepalive -> decision ({settings})"),
        ms(&column(&results, |r| r.detection_ms)),
        format!("dead interval {DEAD_MS} ms"),
    );
    table.row(
        "Azure: decision -> first API request / first write, daemon's record",
        format!(
            "{} / {}",
            ms(&column(&results, |r| r.first_request_ms)),
            ms(&column(&results, |r| r.first_write_ms))
        ),
        "-",
    );
    table.row(
        "Azure: decision -> first ARM request / first write, arrival at the emulator",
        format!(
            "{} / {}",
            ms(&column(&results, |r| r.wire_first_request_ms)),
            ms(&column(&results, |r| r.wire_first_write_ms))
        ),
        "-",
    );
    let mut ops: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in &results {
        for (op, n) in &r.calls {
            ops.entry(op).or_default().push(*n as f64);
        }
    }
    let by_op: Vec<String> = ops
        .iter()
        .map(|(op, n)| {
            // Runs where an operation was not called count as 0.
            let mut n = n.clone();
            n.resize(results.len(), 0.0);
            format!("{op} {}", median(&n))
        })
        .collect();
    let total: Vec<f64> = column(&results, |r| r.calls.values().sum::<u64>() as f64);
    table.row(
        "Azure: API calls per failover (daemon's count, by operation)",
        format!("{} total: {}", median(&total), by_op.join(", ")),
        format!(
            "emulator saw {} reads + {} writes",
            median(&column(&results, |r| r.reads as f64)),
            median(&column(&results, |r| r.writes as f64))
        ),
    );
    let limit = DEAD_MS + (2 * NIC_MS).max(ROUTE_MS);
    table.row(
        "Azure: kill -> cloud state converged",
        secs(&column(&results, |r| r.converged_ms)),
        format!(
            "physical limit {:.2} s = dead {DEAD_MS} ms + max(NIC path 2 x {NIC_MS} ms, route path {ROUTE_MS} ms), less the up to {INTERVAL_MS} ms between the last keepalive and the kill",
            limit as f64 / 1000.0
        ),
    );
}

/// 100 route tables / 500 routes under ARM's token buckets.
pub fn route_scale(runs: usize, table: &mut Table) {
    let routes = routes(true);
    println!(
        "\n# emulated Azure: {runs} failover(s), {SCALE_TABLES} route tables / {} routes",
        routes.len()
    );
    // No reconcile during the measure: its reads would share the read bucket.
    let results = runs_of("bscale", runs, &routes, "10m", DEMO);
    let arm = ThrottleLimits::default();
    let bucket =
        |count: f64, burst: u32, refill: f64| ((count - f64::from(burst)) / refill).max(0.0);
    let n = routes.len() as f64;
    // A PUT per route and the two-step move's two NIC writes (remove, add) share the bucket.
    let writes = n + 2.0;
    // At least one operation poll per route (a table takes one write at a time, so each must be
    // seen to finish) and one read of each table.
    let min_reads = n + SCALE_TABLES as f64;
    let write_limit = bucket(writes, arm.write_burst, arm.write_refill_per_sec);
    let read_limit = bucket(min_reads, arm.read_burst, arm.read_refill_per_sec);
    // The failover cannot end before the peer is declared dead, the bucket let the last write
    // through, and that write propagated.
    let limit_s = (DEAD_MS as f64 + ROUTE_MS as f64) / 1000.0 + write_limit.max(read_limit);
    let converged = column(&results, |r| r.converged_ms);
    let median_s = median(&converged) / 1000.0;
    table.row(
        format!(
            "Azure scale: kill -> converged, {SCALE_TABLES} tables / {} routes ({runs} runs)",
            routes.len()
        ),
        secs(&converged),
        format!(
            "{:.3} x the limit {limit_s:.1} s = dead {DEAD_MS} ms + write bucket {write_limit:.1} s ({writes:.0} writes, {} burst, {}/s) + the last route's propagation {ROUTE_MS} ms; {:.3} x the write bucket alone; reads: {min_reads:.0} at least ({} burst, {}/s) {read_limit:.1} s",
            median_s / limit_s,
            arm.write_burst,
            arm.write_refill_per_sec,
            median_s / write_limit.max(read_limit),
            arm.read_burst,
            arm.read_refill_per_sec
        ),
    );
    let spans = column(&results, |r| r.wire_write_span_ms);
    table.row(
        "Azure scale: first write -> last write, arrival at the emulator",
        secs(&spans),
        format!(
            "{:.3} x the write bucket's {write_limit:.1} s for {writes:.0} writes (the writes a token bucket lets through can span no less)",
            median(&spans) / 1000.0 / write_limit
        ),
    );
    table.row(
        "Azure scale: requests made kill -> converged, reads / writes",
        format!(
            "{} / {}",
            median(&column(&results, |r| r.reads as f64)),
            median(&column(&results, |r| r.writes as f64))
        ),
        format!("at least {min_reads:.0} / {writes:.0}"),
    );
    table.row(
        "Azure scale: requests answered 429 (throttled), reads / writes",
        format!(
            "{} / {}",
            median(&column(&results, |r| r.throttled_reads as f64)),
            median(&column(&results, |r| r.throttled_writes as f64))
        ),
        "0 / 0 for a client that paces both buckets",
    );
}

/// Azure as the Network RP paces it (`Retry-After: 10` on NIC operations), NIC propagation 30 s
/// and 120 s, the two-step and the atomic move: kill -> converged against the physical limit,
/// and the reads spent (operation polls, watch reads of the NIC between them, the rest).
pub fn network_rp(runs: usize, table: &mut Table) {
    let routes = routes(false);
    for nic_ms in [30_000, 120_000] {
        for atomic in [false, true] {
            let pacing = Pacing {
                nic_ms,
                route_ms: ROUTE_MS,
                profile: TimingProfile::NetworkRp,
                atomic,
            };
            let mode = if atomic { "atomic" } else { "two-step" };
            println!(
                "\n# emulated Azure, Network RP pacing: {runs} failover(s), {mode} move, NIC propagation {} s",
                nic_ms / 1000
            );
            let tag = format!("brp{}{}", nic_ms / 1000, if atomic { "a" } else { "t" });
            let results = runs_of(&tag, runs, &routes, "30s", pacing);
            // The two-step move waits for the peer's update, then its own; the atomic move is
            // one update of both NICs.
            let nic_path = if atomic { nic_ms } else { 2 * nic_ms };
            let limit = DEAD_MS + nic_path.max(ROUTE_MS);
            let call = |r: &Run, op: &str| r.calls.get(op).copied().unwrap_or(0) as f64;
            let polls = |r: &Run| {
                r.calls
                    .iter()
                    .filter(|(op, _)| op.ends_with(".poll"))
                    .map(|(_, n)| *n as f64)
                    .sum::<f64>()
            };
            let watches = |r: &Run| {
                r.calls
                    .iter()
                    .filter(|(op, _)| op.ends_with(".watch"))
                    .map(|(_, n)| *n as f64)
                    .sum::<f64>()
            };
            table.row(
                format!(
                    "Azure, Network RP pacing (Retry-After 10 s), {mode}, NIC propagation {} s: kill -> converged",
                    nic_ms / 1000
                ),
                secs(&column(&results, |r| r.converged_ms)),
                format!(
                    "physical limit {:.2} s = dead {DEAD_MS} ms + {}",
                    limit as f64 / 1000.0,
                    if atomic {
                        format!("one move of {nic_ms} ms")
                    } else {
                        format!("2 x {nic_ms} ms")
                    }
                ),
            );
            table.row(
                format!(
                    "Azure, Network RP pacing, {mode}, NIC {} s: reads kill -> converged (operation polls / NIC watch reads / NIC GETs), 429s",
                    nic_ms / 1000
                ),
                format!(
                    "{} ({} / {} / {}), {} throttled",
                    median(&column(&results, |r| r.reads as f64)),
                    median(&column(&results, polls)),
                    median(&column(&results, watches)),
                    median(&column(&results, |r| call(r, "nic.get"))),
                    median(&column(&results, |r| (r.throttled_reads + r.throttled_writes) as f64)),
                ),
                "ARM's read bucket: 250, 25/s",
            );
        }
    }
}

/// The active node idle on the emulated Azure at cloudha's default timing (keepalive 200 ms,
/// dead 1 s, reconcile 30 s, so `idle_secs` includes reconciles), after its takeover converged.
/// The active node idle with the Azure provider, on one keepalive path (the setup scripts'
/// deployment) or on two (`lan` and `mgmt`).
pub fn idle(idle_secs: u64, mgmt_path: bool) -> Footprint {
    let paths = if mgmt_path { 2 } else { 1 };
    println!(
        "\n# emulated Azure: the active node idle for {idle_secs} s, {paths} keepalive path(s)"
    );
    let routes = routes(false);
    let emu = Emulator::new(&scenario(&routes)).expect("scenario");
    let opts = Options {
        preempt: false,
        dead_ms: 1000,
        interval_ms: 200,
        mgmt_path,
        ..Options::default()
    };
    let pair = Pair::prepare(
        if mgmt_path { "bazidl2" } else { "bazidle" },
        opts,
        provider_sections(&emu, &routes, "30s", false),
    );
    let cloud = Cloud::serve_emulator(&pair, emu);
    let mut pair = pair.start_both();
    wait_until("fw-a converged, HA Ready on both", FAILOVER, || {
        let a = pair.status(Node::A)?;
        (a["ready"] == true
            && a["takeover"]["state"] == "done"
            && pair.status(Node::B)?["ready"] == true)
            .then_some(())
    });
    let foot = idle_footprint(&mut pair, Node::A, Duration::from_secs(idle_secs));
    println!("  cloudha (Azure provider): {}", foot.describe());
    drop(pair);
    drop(cloud);
    foot
}
