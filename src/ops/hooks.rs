//! Notify hooks: an operator's command run on each role change (become active, standby, fault,
//! maintenance), like keepalived's notify scripts.
//!
//! Hooks run in their own task, strictly in order and one at a time, each with a timeout after
//! which it is killed. The event loop only queues them, so a slow or hung hook never delays a
//! keepalive or a failover. Each result comes back to the daemon for the journal.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;

/// Bytes of a hook's output kept for the journal.
const OUTPUT_KEPT: usize = 512;

/// One hook to run.
#[derive(Debug, Clone)]
pub struct HookRun {
    /// Program and arguments.
    pub command: Vec<String>,
    /// The new role (`CLOUDHA_STATE`).
    pub state: String,
    /// The previous role (`CLOUDHA_PREVIOUS_STATE`).
    pub previous: String,
    /// Why (`CLOUDHA_REASON`).
    pub reason: String,
    /// The epoch (`CLOUDHA_EPOCH`).
    pub epoch: u64,
    /// This node (`CLOUDHA_NODE`) and the peer (`CLOUDHA_PEER`).
    pub node: String,
    pub peer: String,
    /// Killed after this.
    pub timeout: Duration,
}

/// How a hook ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Exited with this code (`None`: killed by a signal).
    Exited(Option<i32>),
    /// Still running at the timeout: killed.
    TimedOut,
    /// Could not be started.
    Failed(String),
}

/// A finished hook.
#[derive(Debug, Clone)]
pub struct HookResult {
    pub run: HookRun,
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// The start of its stdout and stderr.
    pub output: String,
}

impl HookResult {
    pub fn succeeded(&self) -> bool {
        self.outcome == Outcome::Exited(Some(0))
    }

    /// One line for the journal and the log.
    pub fn summary(&self) -> String {
        let what = match &self.outcome {
            Outcome::Exited(Some(0)) => "succeeded".to_string(),
            Outcome::Exited(Some(code)) => format!("failed with exit code {code}"),
            Outcome::Exited(None) => "was killed by a signal".to_string(),
            Outcome::TimedOut => format!("timed out after {:?} and was killed", self.run.timeout),
            Outcome::Failed(e) => format!("could not start: {e}"),
        };
        format!(
            "hook for {} ({}) {what} in {} ms",
            self.run.state,
            self.run.command.join(" "),
            self.elapsed.as_millis()
        )
    }
}

/// The queue in front of the hook task.
#[derive(Debug, Clone)]
pub struct Hooks {
    tx: mpsc::UnboundedSender<HookRun>,
}

impl Hooks {
    /// Start the hook task; results go to `results`.
    pub fn start(results: mpsc::UnboundedSender<HookResult>) -> Hooks {
        let (tx, mut rx) = mpsc::unbounded_channel::<HookRun>();
        tokio::spawn(async move {
            while let Some(run) = rx.recv().await {
                let result = execute(run).await;
                if results.send(result).is_err() {
                    return;
                }
            }
        });
        Hooks { tx }
    }

    /// Queue a hook (returns at once).
    pub fn queue(&self, run: HookRun) {
        let _ = self.tx.send(run);
    }
}

async fn execute(run: HookRun) -> HookResult {
    let env = [
        ("CLOUDHA_STATE", run.state.clone()),
        ("CLOUDHA_PREVIOUS_STATE", run.previous.clone()),
        ("CLOUDHA_REASON", run.reason.clone()),
        ("CLOUDHA_EPOCH", run.epoch.to_string()),
        ("CLOUDHA_NODE", run.node.clone()),
        ("CLOUDHA_PEER", run.peer.clone()),
    ];
    let finished = run_bounded(&run.command, &env, run.timeout).await;
    HookResult {
        run,
        outcome: finished.outcome,
        elapsed: finished.elapsed,
        output: finished.output,
    }
}

/// How a bounded run ended (see [`run_bounded`]).
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit, timeout or failure to start.
    pub outcome: Outcome,
    /// From spawn to exit or kill.
    pub elapsed: Duration,
    /// The start of its stdout and stderr.
    pub output: String,
}

/// Run `command` (program and arguments, no shell) with `env` added, stdin closed, in its own
/// process group, killed with everything it started at `timeout` (or when the returned future
/// is dropped); only the head of its output is kept. Shared by notify hooks and tracked checks
/// (`health::track`), so both are bounded the same way.
pub async fn run_bounded(
    command: &[String],
    env: &[(&str, String)],
    timeout: Duration,
) -> Finished {
    let started = Instant::now();
    let finish = |outcome, output| Finished {
        outcome,
        elapsed: started.elapsed(),
        output,
    };
    let Some((program, args)) = command.split_first() else {
        return finish(Outcome::Failed("empty command".into()), String::new());
    };
    let spawned = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: whatever it starts in the background is killed with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return finish(Outcome::Failed(format!("{program}: {e}")), String::new()),
    };
    // Dropped at the timeout, or with this future when the daemon exits: kills the group.
    let mut group = GroupKill(child.id().and_then(|id| i32::try_from(id).ok()));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Both streams at once, so a program filling one pipe never waits on the other; only the
    // head of each is kept, the rest counted.
    let collect = async { tokio::join!(drain(stdout), drain(stderr)) };
    let waited = tokio::time::timeout(timeout, async {
        let output = collect.await;
        (child.wait().await, output)
    })
    .await;
    match waited {
        Ok((status, ((out, out_dropped), (err, err_dropped)))) => {
            group.0 = None;
            let mut text = head(&out, out_dropped);
            let err = head(&err, err_dropped);
            if !err.is_empty() {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&err);
            }
            let outcome = match status {
                Ok(status) => Outcome::Exited(status.code()),
                Err(e) => Outcome::Failed(e.to_string()),
            };
            finish(outcome, text)
        }
        Err(_) => {
            drop(group);
            let _ = child.kill().await;
            finish(Outcome::TimedOut, String::new())
        }
    }
}

/// Bytes of each stream read into memory; the rest is read and counted, not kept.
const STREAM_HEAD: usize = 64 * 1024;

/// Read a stream to its end, keeping its first [`STREAM_HEAD`] bytes.
async fn drain<R: AsyncRead + Unpin>(stream: Option<R>) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let Some(mut stream) = stream else {
        return (kept, dropped);
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, dropped),
            Ok(n) => {
                let room = STREAM_HEAD.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
                dropped += (n - room) as u64;
            }
        }
    }
}

/// The start of a stream for the journal, saying how much more there was.
fn head(bytes: &[u8], dropped: u64) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    let mut more = dropped;
    if text.len() > OUTPUT_KEPT {
        let mut cut = OUTPUT_KEPT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        more += (text.len() - cut) as u64;
        text.truncate(cut);
    }
    let mut text = text.trim_end().to_string();
    if more > 0 {
        text.push_str(&format!(" [... {more} more bytes]"));
    }
    text
}

/// Kills a hook's whole process group when dropped (unless disarmed with `None`).
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str, state: &str, timeout_ms: u64) -> HookRun {
        HookRun {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            state: state.into(),
            previous: "standby".into(),
            reason: "peer silent".into(),
            epoch: 7,
            node: "fw-a".into(),
            peer: "fw-b".into(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn hooks_run_in_order_one_at_a_time_with_the_state_in_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hooks = Hooks::start(tx);
        // The first hook is slow: if hooks overlapped, the second would log first.
        let script = format!(
            "sleep 0.$((3 - ${{#CLOUDHA_STATE}} % 3)); echo \"start $CLOUDHA_STATE $CLOUDHA_PREVIOUS_STATE $CLOUDHA_EPOCH $CLOUDHA_REASON\" >> {0}; echo end >> {0}",
            log.display()
        );
        for state in ["active", "standby", "maintenance"] {
            hooks.queue(run(&script, state, 5000));
        }
        for _ in 0..3 {
            let result = rx.recv().await.expect("result");
            assert!(result.succeeded(), "{}", result.summary());
        }
        let text = std::fs::read_to_string(&log).expect("log");
        assert_eq!(
            text,
            "start active standby 7 peer silent\nend\n\
             start standby standby 7 peer silent\nend\n\
             start maintenance standby 7 peer silent\nend\n"
        );
    }

    #[tokio::test]
    async fn a_hung_hook_is_killed_at_its_timeout_and_the_next_one_runs() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hooks = Hooks::start(tx);
        hooks.queue(run("sleep 30", "active", 200));
        hooks.queue(run("echo next; exit 3", "standby", 5000));
        let first = rx.recv().await.expect("result");
        assert_eq!(first.outcome, Outcome::TimedOut);
        assert!(
            first.elapsed < Duration::from_secs(5),
            "{:?}",
            first.elapsed
        );
        let second = rx.recv().await.expect("result");
        assert_eq!(second.outcome, Outcome::Exited(Some(3)));
        assert_eq!(second.output, "next");
        assert!(second.summary().contains("failed with exit code 3"));
    }

    #[tokio::test]
    async fn big_output_is_bounded_and_stderr_does_not_deadlock() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hooks = Hooks::start(tx);
        // 300 MB on stdout and 1 MB on stderr: both are drained at once, only the head kept.
        hooks.queue(run(
            "head -c 1000000 /dev/zero >&2; head -c 300000000 /dev/zero; echo done >&2",
            "active",
            60_000,
        ));
        let result = rx.recv().await.expect("result");
        assert!(result.succeeded(), "{}", result.summary());
        assert!(
            result.output.len() < 4 * OUTPUT_KEPT,
            "{}",
            result.output.len()
        );
        assert!(result.output.contains("more bytes]"), "{}", result.output);
        // The daemon side stayed small (the whole output would be 300 MB).
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let hwm_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        assert!(hwm_kb < 200 * 1024, "peak RSS {hwm_kb} kB");

        hooks.queue(run(
            "head -c 200000 /dev/zero >&2; echo ok",
            "standby",
            5000,
        ));
        let result = rx.recv().await.expect("result");
        assert_eq!(result.outcome, Outcome::Exited(Some(0)));
        assert!(
            result.elapsed < Duration::from_secs(5),
            "{:?}",
            result.elapsed
        );
    }

    #[tokio::test]
    async fn a_hooks_background_child_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hooks = Hooks::start(tx);
        let script = format!(
            "sleep 60 >/dev/null 2>&1 & echo $! > {}; wait",
            pidfile.display()
        );
        hooks.queue(run(&script, "active", 300));
        let result = rx.recv().await.expect("result");
        assert_eq!(result.outcome, Outcome::TimedOut);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("a pid");
        // Reaped by init or still a zombie: either way not running `sleep` any more.
        let mut gone = false;
        for _ in 0..100 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "background child {pid} survived the hook's timeout");
    }

    #[tokio::test]
    async fn a_missing_program_is_reported_not_fatal() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hooks = Hooks::start(tx);
        let mut missing = run("", "fault", 1000);
        missing.command = vec!["/nonexistent/cloudha-hook".into()];
        hooks.queue(missing);
        let result = rx.recv().await.expect("result");
        assert!(
            matches!(&result.outcome, Outcome::Failed(e) if e.contains("/nonexistent/cloudha-hook")),
            "{result:?}"
        );
    }
}
