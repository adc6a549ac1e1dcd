//! What must survive this node's restarts about the peer: the highest incarnation accepted from
//! it (`<state_dir>/peer_incarnation`), and this boot's random timestamp offset.
//!
//! Without the stored incarnation, a restarted node would take a recording of any earlier boot
//! of the peer for the peer's current one. The value is written only when it changes (a peer
//! restart), fsync'd and renamed into place, mode 0600.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::warn;

/// File name inside `state_dir`.
pub const FILE: &str = "peer_incarnation";

/// The persisted highest peer incarnation, shared by every path.
#[derive(Debug, Clone)]
pub struct PeerIncarnation {
    path: Option<PathBuf>,
    value: Arc<Mutex<u64>>,
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
            path: Some(path),
            value: Arc::new(Mutex::new(value)),
        }
    }

    /// Not persisted (tests).
    pub fn in_memory(value: u64) -> PeerIncarnation {
        PeerIncarnation {
            path: None,
            value: Arc::new(Mutex::new(value)),
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
        if let Some(path) = &self.path {
            if let Err(e) = write_synced(path, incarnation) {
                warn!(
                    "cannot store the peer's incarnation in {}: {e}; a restart of this node would then believe recordings of the peer's earlier boots only until their echoes fail",
                    path.display()
                );
            }
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
        let mode = std::fs::metadata(dir.path().join(FILE))
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(PeerIncarnation::load(dir.path()).get(), 1234);
        stored.set(17);
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
