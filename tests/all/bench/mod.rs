//! The benchmark behind `scripts/bench.sh` (not a timed test: it prints figures, it asserts only
//! that each run converged). Two real daemons in network namespaces against the emulated clouds
//! (our Azure emulator, moto for AWS), and keepalived beside cloudha on the same moto.
//!
//! `CLOUDHA_BENCH_RUNS` (default 5) runs per measure, medians printed; `CLOUDHA_BENCH_ONLY` a
//! comma list of `idle`, `azure`, `network_rp`, `scale`, `aws` to run only those sections (`idle`:
//! the active node at the default keepalive rate with the Azure and the AWS provider, and
//! keepalived, `CLOUDHA_BENCH_IDLE_SECS` each, default 120; `network_rp`:
//! the Network RP's pacing with NIC propagation of 30 s and 120 s, about 8 minutes a run,
//! `CLOUDHA_BENCH_RP_RUNS` runs, default 1); `CLOUDHA_BENCH_SCALE_RUNS`
//! (default 3) runs at 500 routes (a minute each).

mod aws;
mod azure;
mod measure;

use measure::{Machine, Table};

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: write a whole number")),
        Err(_) => default,
    }
}

/// The machine's wall clock (Unix ms): comparable with the daemons' and the emulator's stamps.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn section_enabled(name: &str) -> bool {
    match std::env::var("CLOUDHA_BENCH_ONLY") {
        Ok(list) => list.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

/// The active node idle with each cloud provider on one keepalive path (the deployment the setup
/// scripts write: the same job as keepalived's one VRRP instance on one link), keepalived beside
/// it, and the ratio; then the Azure provider on two paths, for what a second path costs.
fn idle(idle_secs: u64, table: &mut Table) {
    let azure = azure::idle(idle_secs, false);
    let (aws, keepalived) = aws::idle(idle_secs);
    let azure_two = azure::idle(idle_secs, true);
    let ratio = |f: &measure::Footprint| f.cpu_percent / keepalived.cpu_percent.max(1e-9);
    let timing = "keepalive / advert 200 ms (cloudha's default), reconcile 30 s";
    table.row(
        format!("idle: active node, Azure provider, one path, {idle_secs} s ({timing})"),
        format!("cloudha {}", azure.describe()),
        format!(
            "goal <= 0.05 % and <= 12 MB; {:.1} x keepalived's CPU",
            ratio(&azure)
        ),
    );
    table.row(
        format!("idle: active node, AWS provider, one path, {idle_secs} s ({timing})"),
        format!("cloudha {}", aws.describe()),
        format!(
            "keepalived (VRRP, one instance, both processes) {}; cloudha {:.1} x keepalived's CPU",
            keepalived.describe(),
            ratio(&aws)
        ),
    );
    table.row(
        format!("idle: active node, Azure provider, two paths (lan + mgmt), {idle_secs} s"),
        format!("cloudha {}", azure_two.describe()),
        format!("{:.1} x keepalived's CPU", ratio(&azure_two)),
    );
}

#[test]
#[ignore = "benchmark: run by scripts/bench.sh"]
fn bench_failover_and_footprint() {
    let runs = env_number("CLOUDHA_BENCH_RUNS", 5).max(1) as usize;
    let idle_secs = env_number("CLOUDHA_BENCH_IDLE_SECS", 120).max(1);
    let machine = Machine::read();
    println!("\n{}", machine.markdown());
    let mut table = Table::new(runs);
    if section_enabled("idle") {
        idle(idle_secs, &mut table);
        table.print_so_far();
    }
    if section_enabled("azure") {
        azure::failover(runs, &mut table);
        table.print_so_far();
    }
    if section_enabled("network_rp") {
        let rp_runs = env_number("CLOUDHA_BENCH_RP_RUNS", 1).max(1) as usize;
        azure::network_rp(rp_runs, &mut table);
        table.print_so_far();
    }
    if section_enabled("scale") {
        let scale_runs = env_number("CLOUDHA_BENCH_SCALE_RUNS", 3).max(1) as usize;
        azure::route_scale(scale_runs, &mut table);
        table.print_so_far();
    }
    if section_enabled("aws") {
        aws::side_by_side(runs, &mut table);
    }
    println!(
        "\n## cloudha benchmark\n\n{}\n{}",
        machine.markdown(),
        table.markdown()
    );
}
