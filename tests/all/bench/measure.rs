//! Medians, the table, the machine's description, and a process's memory and CPU from /proc.

use std::process::Command;
use std::time::{Duration, Instant};

/// Median of the samples (the mean of the two middle ones for an even count).
pub fn median(samples: &[f64]) -> f64 {
    assert!(!samples.is_empty(), "median of no samples");
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    }
}

/// `median (min-max)` of millisecond samples.
pub fn ms(samples: &[f64]) -> String {
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if samples.len() == 1 {
        format!("{:.0} ms", samples[0])
    } else {
        format!("{:.0} ms ({:.0}-{:.0})", median(samples), min, max)
    }
}

/// Like [`ms`], in seconds.
pub fn secs(samples_ms: &[f64]) -> String {
    let s: Vec<f64> = samples_ms.iter().map(|m| m / 1000.0).collect();
    let min = s.iter().copied().fold(f64::INFINITY, f64::min);
    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if s.len() == 1 {
        format!("{:.2} s", s[0])
    } else {
        format!("{:.2} s ({:.2}-{:.2})", median(&s), min, max)
    }
}

/// The result table: measure, figure, reference (a limit or the other implementation).
pub struct Table {
    runs: usize,
    rows: Vec<[String; 3]>,
    printed: usize,
}

impl Table {
    pub fn new(runs: usize) -> Self {
        Table {
            runs,
            rows: Vec::new(),
            printed: 0,
        }
    }

    pub fn row(
        &mut self,
        measure: impl Into<String>,
        figure: impl Into<String>,
        reference: impl Into<String>,
    ) {
        let row = [measure.into(), figure.into(), reference.into()];
        println!("  {} | {} | {}", row[0], row[1], row[2]);
        self.rows.push(row);
    }

    /// Rows added since the last call, so a long run shows its progress.
    pub fn print_so_far(&mut self) {
        for row in &self.rows[self.printed..] {
            println!("| {} | {} | {} |", row[0], row[1], row[2]);
        }
        self.printed = self.rows.len();
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Medians of {} run(s) each, (min-max) in brackets.\n\n| measure | figure | reference |\n|---|---|---|\n",
            self.runs
        );
        for row in &self.rows {
            out.push_str(&format!("| {} | {} | {} |\n", row[0], row[1], row[2]));
        }
        out
    }
}

/// What the figures were measured on.
pub struct Machine {
    cpus: String,
    model: String,
    kernel: String,
    date: String,
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("<{program}: {e}>"))
}

/// Which daemon binary ran: `CLOUDHA_BIN` (e.g. a release build measured from a debug test
/// harness), or the one cargo built with this harness.
fn daemon_build() -> String {
    match std::env::var("CLOUDHA_BIN") {
        Ok(bin) => format!("CLOUDHA_BIN={bin}"),
        Err(_) if cfg!(debug_assertions) => "debug build".into(),
        Err(_) => "release build".into(),
    }
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpus: command_output("nproc", &[]),
            model,
            kernel: command_output("uname", &["-sr"]),
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        }
    }

    pub fn markdown(&self) -> String {
        format!(
            "Machine: {} CPU(s), {}, {}; date {}; cloudha {}, daemon {}.\n",
            self.cpus,
            self.model,
            self.kernel,
            self.date,
            env!("CARGO_PKG_VERSION"),
            daemon_build()
        )
    }
}

/// Resident memory (kB) of a process, from `VmRSS` in /proc/PID/status.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// CPU time of a process, all its threads, in nanoseconds (the first field of each
/// /proc/PID/task/TID/schedstat): exact, where utime + stime in /proc/PID/stat counts 10 ms
/// ticks, too coarse for a daemon that should use a few ms a minute.
pub fn cpu_ns(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/task: {e}"));
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
        })
        .sum()
}

/// Idle footprint of a group of processes (one daemon may be several processes).
pub struct Footprint {
    pub rss_kb: u64,
    /// Share of one core, in percent.
    pub cpu_percent: f64,
}

impl Footprint {
    pub fn describe(&self) -> String {
        format!(
            "{:.1} MB RSS, {:.3} % of a core",
            self.rss_kb as f64 / 1024.0,
            self.cpu_percent
        )
    }
}

/// Samples the processes' CPU time over `window` and their memory at the end.
pub fn footprint(pids: &[u32], window: Duration) -> Footprint {
    let before: u64 = pids.iter().map(|p| cpu_ns(*p)).sum();
    let started = Instant::now();
    std::thread::sleep(window);
    let elapsed = started.elapsed().as_secs_f64();
    let after: u64 = pids.iter().map(|p| cpu_ns(*p)).sum();
    Footprint {
        rss_kb: pids.iter().map(|p| rss_kb(*p)).sum(),
        cpu_percent: after.saturating_sub(before) as f64 / 1e9 / elapsed * 100.0,
    }
}

/// [`footprint`] of `node`'s daemon, which must stay active in the same epoch throughout: a
/// window with a role change measured a failover, not an idle node.
pub fn idle_footprint(
    pair: &mut crate::e2e_local::Pair,
    node: crate::netns::Node,
    window: Duration,
) -> Footprint {
    let epoch = |pair: &crate::e2e_local::Pair| {
        let s = pair.status(node).unwrap_or_default();
        (
            s["role"].as_str().unwrap_or("?").to_string(),
            s["epoch"].clone(),
        )
    };
    let before = epoch(pair);
    let foot = footprint(&[pair.daemon(node).pid()], window);
    let after = epoch(pair);
    assert!(
        before.0 == "active" && before == after,
        "the idle window was not idle: {before:?} before, {after:?} after\n{}",
        pair.logs()
    );
    foot
}

#[test]
fn median_of_odd_and_even_counts() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
}

#[test]
fn reads_this_process_from_proc() {
    let me = std::process::id();
    assert!(rss_kb(me) > 0);
    // Burn a little CPU so the counter moves: a broken field index would read a constant.
    let before = cpu_ns(me);
    let started = Instant::now();
    let mut x = 0u64;
    while started.elapsed() < Duration::from_millis(300) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    assert!(x != 1);
    assert!(cpu_ns(me) > before);
}
