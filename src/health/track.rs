//! Tracked checks: each `[[track]]` runs in its own task, beside the event loop, and reports
//! only when its state changes (healthy <-> failing) or a failing check's reason changes, so a
//! check that hangs never delays a keepalive and a check that passes every second never wakes
//! the loop.
//!
//! A command runs through [`crate::ops::hooks::run_bounded`], the same machinery as notify
//! hooks: no shell, its own process group killed at the timeout, only the head of its output
//! kept. An interface is read from `/sys/class/net/<name>/` (the daemon's network namespace:
//! `ip netns exec` mounts that namespace's sysfs).

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::{Probe, TrackConfig};
use crate::ops::hooks::{run_bounded, Outcome};

/// Counts consecutive results against `fall` and `rise`, like keepalived's `track_script`.
///
/// The first result sets the state at once: a node whose firewall is already dead at start
/// must not wait `fall` intervals while it may become active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    fall: u32,
    rise: u32,
    healthy: Option<bool>,
    /// Consecutive results contradicting the current state.
    streak: u32,
}

impl Counter {
    /// A counter with no result yet.
    pub fn new(fall: u32, rise: u32) -> Counter {
        Counter {
            fall: fall.max(1),
            rise: rise.max(1),
            healthy: None,
            streak: 0,
        }
    }

    /// The current state (`None` before the first result).
    pub fn healthy(&self) -> Option<bool> {
        self.healthy
    }

    /// Feed one result; the new state when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        let Some(healthy) = self.healthy else {
            self.healthy = Some(ok);
            return Some(ok);
        };
        if ok == healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if healthy { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.streak = 0;
        self.healthy = Some(ok);
        Some(ok)
    }
}

/// A check's state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackReport {
    /// Index of the check in `[[track]]`.
    pub index: usize,
    /// The new state.
    pub healthy: bool,
    /// What the result that decided it said (exit code and output, or the link state).
    pub detail: String,
}

/// The running checks; dropping this stops them (and kills a command in flight).
#[derive(Debug, Default)]
pub struct Trackers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Trackers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Trackers {
    /// Start one task per check; each sends a [`TrackReport`] when its state changes.
    pub fn start(tracks: &[TrackConfig], tx: mpsc::UnboundedSender<TrackReport>) -> Trackers {
        let tasks = tracks
            .iter()
            .enumerate()
            .map(|(index, t)| tokio::spawn(run(index, t.clone(), tx.clone())))
            .collect();
        Trackers { tasks }
    }
}

async fn run(index: usize, track: TrackConfig, tx: mpsc::UnboundedSender<TrackReport>) {
    let mut counter = Counter::new(track.fall, track.rise);
    let probe = track.probe();
    // What the last failing report said: a failing check reports again when the reason changes
    // (interface down, then up without carrier), a healthy one only when it starts failing.
    let mut reported_failure: Option<String> = None;
    loop {
        let (ok, detail) = check_once(&probe, track.timeout.0).await;
        let changed = counter.observe(ok);
        let news = match (changed, counter.healthy()) {
            (Some(healthy), _) => Some(healthy),
            (None, Some(false)) if !ok && reported_failure.as_deref() != Some(&detail) => {
                Some(false)
            }
            _ => None,
        };
        if let Some(healthy) = news {
            reported_failure = (!healthy).then(|| detail.clone());
            let detail = if healthy || track.fall <= 1 || changed.is_none() {
                detail
            } else {
                format!("{detail} ({} times in a row)", track.fall)
            };
            let report = TrackReport {
                index,
                healthy,
                detail,
            };
            if tx.send(report).is_err() {
                return;
            }
        }
        tokio::time::sleep(track.interval.0).await;
    }
}

/// Run the check once: whether it passed, and what it said.
pub async fn check_once(probe: &Probe, timeout: Duration) -> (bool, String) {
    match probe {
        Probe::Command(command) => {
            let finished = run_bounded(command, &[], timeout).await;
            let ok = finished.outcome == Outcome::Exited(Some(0));
            let what = match &finished.outcome {
                Outcome::Exited(Some(0)) => "exited 0".to_string(),
                Outcome::Exited(Some(code)) => format!("exited {code}"),
                Outcome::Exited(None) => "was killed by a signal".to_string(),
                Outcome::TimedOut => format!("timed out after {timeout:?} and was killed"),
                Outcome::Failed(e) => format!("could not start: {e}"),
            };
            let program = command.first().map(String::as_str).unwrap_or("");
            let output = one_line(&finished.output);
            let detail = if output.is_empty() {
                format!("{program} {what}")
            } else {
                format!("{program} {what}: {output}")
            };
            (ok, detail)
        }
        Probe::Interface(name) => interface_state(Path::new("/sys/class/net"), name),
    }
}

/// The output on one short line for status and the journal.
fn one_line(text: &str) -> String {
    let flat: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    flat
}

/// Whether interface `name` under `sys` (a `/sys/class/net`) is up with carrier, and why not.
pub fn interface_state(sys: &Path, name: &str) -> (bool, String) {
    let dir = sys.join(name);
    let flags = match std::fs::read_to_string(dir.join("flags")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (false, format!("interface {name} does not exist"))
        }
        Err(e) => return (false, format!("interface {name}: reading its flags: {e}")),
    };
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
    // IFF_UP: administratively up.
    if flags & 0x1 == 0 {
        return (false, format!("interface {name} is administratively down"));
    }
    // Reading `carrier` of a down interface fails with EINVAL; up, it is "0" or "1".
    match std::fs::read_to_string(dir.join("carrier")) {
        Ok(text) if text.trim() == "1" => (true, format!("interface {name} is up with carrier")),
        Ok(_) => (false, format!("interface {name} is up but has no carrier")),
        Err(e) => (false, format!("interface {name}: reading its carrier: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_result_decides_then_fall_and_rise_count_consecutive_results() {
        let mut c = Counter::new(3, 2);
        assert_eq!(c.healthy(), None);
        assert_eq!(c.observe(true), Some(true));
        // Two failures, then a success: the streak starts again.
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.healthy(), Some(true));
        assert_eq!(c.observe(false), Some(false), "the third failure in a row");
        assert_eq!(c.observe(false), None);
        // Rising needs two successes in a row.
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(true), Some(true));
        assert_eq!(c.healthy(), Some(true));

        let mut failing_at_start = Counter::new(3, 2);
        assert_eq!(failing_at_start.observe(false), Some(false));
    }

    #[test]
    fn fall_and_rise_of_one_follow_every_result() {
        let mut c = Counter::new(1, 1);
        assert_eq!(c.observe(false), Some(false));
        assert_eq!(c.observe(true), Some(true));
        assert_eq!(c.observe(false), Some(false));
    }

    #[test]
    fn interface_state_reads_flags_and_carrier() {
        let sys = tempfile::tempdir().expect("tempdir");
        let iface = |name: &str, flags: &str, carrier: Option<&str>| {
            let dir = sys.path().join(name);
            std::fs::create_dir(&dir).expect("dir");
            std::fs::write(dir.join("flags"), flags).expect("flags");
            if let Some(c) = carrier {
                std::fs::write(dir.join("carrier"), c).expect("carrier");
            }
        };
        iface("up", "0x1003\n", Some("1\n"));
        iface("nocarrier", "0x1003\n", Some("0\n"));
        iface("down", "0x1002\n", None);
        assert!(interface_state(sys.path(), "up").0);
        let (ok, why) = interface_state(sys.path(), "nocarrier");
        assert!(!ok && why.contains("no carrier"), "{why}");
        let (ok, why) = interface_state(sys.path(), "down");
        assert!(!ok && why.contains("administratively down"), "{why}");
        let (ok, why) = interface_state(sys.path(), "missing");
        assert!(!ok && why.contains("does not exist"), "{why}");
        // The real loopback of this namespace.
        let (ok, why) = interface_state(Path::new("/sys/class/net"), "lo");
        assert!(ok || why.contains("lo"), "{why}");
    }

    #[tokio::test]
    async fn a_command_check_reports_exit_code_output_and_timeout() {
        let sh = |script: &str| Probe::Command(vec!["/bin/sh".into(), "-c".into(), script.into()]);
        let (ok, detail) = check_once(&sh("exit 0"), Duration::from_secs(5)).await;
        assert!(ok, "{detail}");
        let (ok, detail) =
            check_once(&sh("echo fwd not running; exit 1"), Duration::from_secs(5)).await;
        assert!(!ok);
        assert_eq!(detail, "/bin/sh exited 1: fwd not running");
        let started = std::time::Instant::now();
        let (ok, detail) = check_once(&sh("sleep 30"), Duration::from_millis(200)).await;
        assert!(!ok && detail.contains("timed out"), "{detail}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_check_that_floods_its_output_and_leaves_a_child_is_bounded() {
        // 50 MB on stdout, then a child that keeps the pipe open: killed at the timeout with
        // its process group, and only a short excerpt kept.
        let probe = Probe::Command(vec![
            "/bin/sh".into(),
            "-c".into(),
            "head -c 50000000 /dev/zero | tr '\\0' x; sleep 60 & exit 0".into(),
        ]);
        let started = std::time::Instant::now();
        let (ok, detail) = check_once(&probe, Duration::from_millis(1500)).await;
        assert!(!ok, "{detail}");
        assert!(detail.contains("timed out"), "{detail}");
        assert!(detail.len() < 400, "{} bytes", detail.len());
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn reports_are_sent_on_changes_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("fail");
        let script = format!("test ! -e {}", flag.display());
        let track: TrackConfig = toml::from_str(&format!(
            "name = \"t\"\ncommand = [\"/bin/sh\", \"-c\", \"{script}\"]\ninterval = \"100ms\"\nfall = 2"
        ))
        .expect("track");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _trackers = Trackers::start(&[track], tx);
        let first = rx.recv().await.expect("first report");
        assert!(first.healthy, "{first:?}");
        std::fs::write(&flag, "").expect("flag");
        let second = rx.recv().await.expect("second report");
        assert!(!second.healthy);
        assert!(
            second.detail.contains("exited 1 (2 times in a row)"),
            "{second:?}"
        );
        std::fs::remove_file(&flag).expect("unflag");
        let third = rx.recv().await.expect("third report");
        assert!(third.healthy);
        // Healthy and stable: nothing more arrives.
        let quiet = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
        assert!(quiet.is_err(), "{quiet:?}");
    }
}
