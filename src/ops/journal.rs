//! The event journal: every transition, failover step, provider result, drift repair and alarm
//! as one JSON line in a file that survives restarts.
//!
//! Each entry is written (to the kernel) before the daemon goes on, so a daemon killed
//! mid-failover finds the start of its takeover when it comes back. Entries that mark a failover
//! boundary (a takeover starting or ending, a role change) are also fsynced, by a thread of
//! their own: `fdatasync` on a busy disk can take hundreds of milliseconds, and on the daemon's
//! one thread that stall would hold back keepalives in the middle of a takeover (a lost beat
//! the peer reads as a sick link). The sync follows the write within one disk flush; only a
//! power loss inside that flush can lose the entry. Past `max_bytes` the file is rotated to
//! `<path>.1` (one generation), which bounds the disk use to twice `max_bytes`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When (Unix ms).
    pub at_unix_ms: u64,
    /// The node that wrote it.
    pub node: String,
    /// Its role at the time.
    pub role: String,
    /// Its epoch at the time.
    pub epoch: u64,
    /// What kind of event (see [`Kind`]).
    pub kind: String,
    /// What happened, for people.
    pub message: String,
    /// Structured details (operation ids, durations, alarm names...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

/// The kinds of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Start,
    Stop,
    Transition,
    TakeoverStarted,
    Operation,
    TakeoverDone,
    TakeoverFailed,
    Release,
    Drift,
    AlarmRaised,
    AlarmCleared,
    Hook,
    Maintenance,
    Operator,
    Reload,
    Resume,
    /// A tracked check changed state, or the health probe opened or closed.
    Health,
    Note,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Start => "start",
            Kind::Stop => "stop",
            Kind::Transition => "transition",
            Kind::TakeoverStarted => "takeover_started",
            Kind::Operation => "operation",
            Kind::TakeoverDone => "takeover_done",
            Kind::TakeoverFailed => "takeover_failed",
            Kind::Release => "release",
            Kind::Drift => "drift",
            Kind::AlarmRaised => "alarm_raised",
            Kind::AlarmCleared => "alarm_cleared",
            Kind::Hook => "hook",
            Kind::Maintenance => "maintenance",
            Kind::Operator => "operator",
            Kind::Reload => "reload",
            Kind::Resume => "resume",
            Kind::Health => "health",
            Kind::Note => "note",
        }
    }

    /// Entries that mark a failover boundary: fsynced before the daemon goes on.
    pub fn is_boundary(self) -> bool {
        matches!(
            self,
            Kind::Transition
                | Kind::TakeoverStarted
                | Kind::TakeoverDone
                | Kind::TakeoverFailed
                | Kind::Stop
                | Kind::Resume
        )
    }
}

/// The open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    syncer: Syncer,
}

/// A thread that fsyncs the journal's file when asked, off the daemon's thread. Requests that
/// arrive while a sync runs are served by one more sync.
#[derive(Debug)]
struct Syncer {
    requests: Option<mpsc::Sender<File>>,
}

impl Syncer {
    fn start() -> Syncer {
        let (tx, rx) = mpsc::channel::<File>();
        let spawned = std::thread::Builder::new()
            .name("journal-sync".into())
            .spawn(move || {
                while let Ok(mut file) = rx.recv() {
                    // Coalesce: the newest handle covers every write before it.
                    while let Ok(newer) = rx.try_recv() {
                        file = newer;
                    }
                    if let Err(e) = file.sync_data() {
                        tracing::warn!("journal: fsync failed: {e}");
                    }
                }
            });
        Syncer {
            requests: spawned.ok().map(|_| tx),
        }
    }

    /// Sync `file` soon; synchronously when no thread could be started or the handle cannot be
    /// shared.
    fn sync(&self, file: &File) -> io::Result<()> {
        if let Some(tx) = &self.requests {
            if let Ok(handle) = file.try_clone() {
                if tx.send(handle).is_ok() {
                    return Ok(());
                }
            }
        }
        file.sync_data()
    }
}

impl Journal {
    /// Open (or create) the journal at `path`, appending. The file is 0600 and its directory,
    /// created 0700 if missing, must be the daemon's: the journal holds hook output.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<Journal> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::secure_fs::ensure_private_dir(dir, false).map_err(io::Error::other)?;
        }
        let file = crate::secure_fs::open_private_append(path)?;
        let size = file.metadata()?.len();
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            syncer: Syncer::start(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one entry; when `durable`, have it fsynced (by the sync thread, see the module
    /// comment).
    pub fn append(&mut self, entry: &Entry, durable: bool) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.size + line.len() as u64 > self.max_bytes && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        if durable {
            self.syncer.sync(&self.file)?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        std::fs::rename(&self.path, rotated(&self.path))?;
        self.file = crate::secure_fs::open_private_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The previous generation's path.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Every readable entry, oldest first (the rotated generation, then the current file). Lines
/// that do not parse (a torn last line after a crash) are skipped and counted.
pub fn read_all(path: &Path) -> io::Result<(Vec<Entry>, usize)> {
    let mut entries = Vec::new();
    let mut skipped = 0;
    for file in [rotated(path), path.to_path_buf()] {
        let reader = match File::open(&file) {
            Ok(f) => BufReader::new(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in reader.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(entry) => entries.push(entry),
                Err(_) => skipped += 1,
            }
        }
    }
    Ok((entries, skipped))
}

/// A takeover that was started and never finished before the daemon stopped: its epoch and
/// when it started, if the journal ends inside one.
pub fn interrupted_takeover(entries: &[Entry]) -> Option<(u64, u64)> {
    let mut open = None;
    for entry in entries {
        match entry.kind.as_str() {
            "takeover_started" => open = Some((entry.epoch, entry.at_unix_ms)),
            "takeover_done" | "stop" | "resume" => open = None,
            "transition" if entry.role != "active" => open = None,
            _ => {}
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, role: &str, epoch: u64) -> Entry {
        Entry {
            at_unix_ms: 1,
            node: "fw-a".into(),
            role: role.into(),
            epoch,
            kind: kind.as_str().into(),
            message: "m".into(),
            data: Value::Null,
        }
    }

    #[test]
    fn appends_and_reads_back_across_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        let mut journal = Journal::open(&path, 400).expect("open");
        for epoch in 0..10 {
            journal
                .append(&entry(Kind::Note, "standby", epoch), epoch % 2 == 0)
                .expect("append");
        }
        assert!(rotated(&path).exists(), "rotated past 400 bytes");
        let current = std::fs::metadata(&path).expect("meta").len();
        assert!(current <= 400, "{current}");
        let (entries, skipped) = read_all(&path).expect("read");
        assert_eq!(skipped, 0);
        // The oldest generation was dropped; what is left is in order and ends with the last.
        let epochs: Vec<u64> = entries.iter().map(|e| e.epoch).collect();
        assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
        assert_eq!(epochs.last(), Some(&9));
    }

    #[test]
    fn journal_and_its_rotation_are_0600_in_a_0700_directory() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/journal.jsonl");
        let mut journal = Journal::open(&path, 400).expect("open");
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        for epoch in 0..10 {
            journal
                .append(&entry(Kind::Note, "standby", epoch), false)
                .expect("append");
        }
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&rotated(&path)), 0o600);
        // A journal left 0644 by an earlier version is tightened on open.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        drop(Journal::open(&path, 400).expect("reopen"));
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_torn_last_line_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        let mut journal = Journal::open(&path, 1 << 20).expect("open");
        journal
            .append(&entry(Kind::TakeoverStarted, "active", 3), true)
            .expect("append");
        drop(journal);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"{\"at_unix_ms\": 12, \"no").expect("write");
        let (entries, skipped) = read_all(&path).expect("read");
        assert_eq!((entries.len(), skipped), (1, 1));
        assert_eq!(interrupted_takeover(&entries), Some((3, 1)));
    }

    #[test]
    fn interrupted_takeover_is_the_last_one_left_open() {
        let done = [
            entry(Kind::Transition, "active", 2),
            entry(Kind::TakeoverStarted, "active", 2),
            entry(Kind::TakeoverDone, "active", 2),
        ];
        assert_eq!(interrupted_takeover(&done), None);
        let mut open = done.to_vec();
        open.push(entry(Kind::TakeoverStarted, "active", 2));
        open.push(entry(Kind::Operation, "active", 2));
        assert_eq!(interrupted_takeover(&open), Some((2, 1)));
        let mut stepped_down = open.clone();
        stepped_down.push(entry(Kind::Transition, "standby", 3));
        assert_eq!(interrupted_takeover(&stepped_down), None);
        let mut resumed = open;
        resumed.push(entry(Kind::Resume, "init", 0));
        assert_eq!(interrupted_takeover(&resumed), None);
    }
}
