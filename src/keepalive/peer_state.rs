//! What must survive this node's restarts about the peer: the highest incarnation accepted from
//! it (`<state_dir>/peer_incarnation`), and this boot's random timestamp offset.
//!
//! Without the stored incarnation, a restarted node would take a recording of any earlier boot
//! of the peer for the peer's current one. The value is written only when it changes (a peer
//! restart), by a thread of its own (see [`PeerIncarnation`]), fsync'd and renamed into place,
//! mode 0600.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use tracing::warn;

/// File name inside `state_dir`.
pub const FILE: &str = "peer_incarnation";

/// The persisted highest peer incarnation, shared by every path.
///
/// The value changes when the peer reboots, which is also when it comes back in the middle of
/// this node's takeover. Storing it takes two fsyncs and a rename, which on a busy disk can
/// stall for hundreds of milliseconds: a thread of its own writes it, so the keepalive tasks
/// that learn it never wait for the disk. Until it is on disk a restart of this node falls back
/// to the previous value (see the warning in [`PeerIncarnation::set`]).
#[derive(Debug, Clone)]
pub struct PeerIncarnation {
    value: Arc<Mutex<u64>>,
    writer: Option<mpsc::Sender<Write>>,
}

/// A request to the writer thread.
#[derive(Debug)]
enum Write {
    Store(u64),
    /// Answered once every value sent before it is on disk.
    Flush(mpsc::SyncSender<()>),
}

/// The writer thread: stores the newest value it was sent, once per batch of requests.
fn spawn_writer(path: PathBuf) -> Option<mpsc::Sender<Write>> {
    let (tx, rx) = mpsc::channel::<Write>();
    let spawned = std::thread::Builder::new()
        .name("peer-incarnation".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let newest = batch.iter().rev().find_map(|w| match w {
                    Write::Store(v) => Some(*v),
                    Write::Flush(_) => None,
                });
                if let Some(value) = newest {
                    if let Err(e) = write_synced(&path, value) {
                        warn!(
                            "cannot store the peer's incarnation in {}: {e}; a restart of this node would then believe recordings of the peer's earlier boots only until their echoes fail",
                            path.display()
                        );
                    }
                }
                for w in batch {
                    if let Write::Flush(done) = w {
                        let _ = done.send(());
                    }
                }
            }
        });
    spawned.ok().map(|_| tx)
}

impl PeerIncarnation {
    /// Load from `state_dir` (0 when the file is missing or unreadable: nothing is known).
    pub fn load(state_dir: &Path) -> PeerIncarnation {
        let path = state_dir.join(FILE);
        let value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        PeerIncarnation {
            value: Arc::new(Mutex::new(value)),
            writer: spawn_writer(path),
        }
    }

    /// Not persisted (tests).
    pub fn in_memory(value: u64) -> PeerIncarnation {
        PeerIncarnation {
            value: Arc::new(Mutex::new(value)),
            writer: None,
        }
    }

    /// Wait until every value set so far is on disk.
    pub fn flush(&self) {
        if let Some(writer) = &self.writer {
            let (done, wait) = mpsc::sync_channel(1);
            if writer.send(Write::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    /// The stored value.
    pub fn get(&self) -> u64 {
        self.value.lock().map(|v| *v).unwrap_or(0)
    }

    /// Remember `incarnation` (higher, or lower after a proven state loss of the peer).
    pub fn set(&self, incarnation: u64) {
        let Ok(mut value) = self.value.lock() else {
            return;
        };
        if *value == incarnation {
            return;
        }
        *value = incarnation;
        if let Some(writer) = &self.writer {
            // Sent under the lock: the writer sees the values in the order they were set.
            let _ = writer.send(Write::Store(incarnation));
        }
    }
}

fn write_synced(path: &Path, value: u64) -> std::io::Result<()> {
    cloudha_provider_core::durable::replace_file(path, format!("{value}\n").as_bytes())
}

/// A random offset for this boot's keepalive timestamps, in [2^60, 2^61): an echo of a
/// timestamp from an earlier boot matches this boot's clock with a chance of one in ~2^40 (a
/// boot lasting a year spans 2^45 µs of the 2^60 range).
pub fn random_boot_offset_us() -> u64 {
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    let raw = if random {
        u64::from_le_bytes(bytes)
    } else {
        // No /dev/urandom: fall back to the time and pid, still different on every boot.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32)
    };
    (1u64 << 60) | (raw & ((1u64 << 60) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn persists_with_mode_0600_and_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stored = PeerIncarnation::load(dir.path());
        assert_eq!(stored.get(), 0);
        stored.set(1234);
        stored.flush();
        let mode = std::fs::metadata(dir.path().join(FILE))
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(PeerIncarnation::load(dir.path()).get(), 1234);
        stored.set(17);
        stored.flush();
        assert_eq!(PeerIncarnation::load(dir.path()).get(), 17);
    }

    #[test]
    fn offsets_differ_per_boot() {
        let a = random_boot_offset_us();
        let b = random_boot_offset_us();
        assert_ne!(a, b);
        assert!((1 << 60..1 << 61).contains(&a));
    }
}
