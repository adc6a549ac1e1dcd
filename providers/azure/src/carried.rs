//! The floating ipConfigurations a move carries from the peer's NIC to this node's, kept whole.
//!
//! A two-step move removes the entry from the peer's NIC before it adds it here. Between the two
//! writes the entry exists nowhere in the cloud: if this node dies then, what was removed (its
//! name, public IP, security groups, pool memberships, properties this code does not know) must
//! not die with it. So before the removal is sent, the entry is written to
//! `state_dir/azure-ipconfigs.json` and fsynced; a node restarted between its writes reads it
//! back and adds the entry whole. The config's `ip_config_name` / `public_ip` make an entry only
//! when nothing was ever kept of it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::nic::{self, Template};

/// The file in `state_dir`.
pub const FILE_NAME: &str = "azure-ipconfigs.json";
/// A kept file larger than this is not ours (a few entries are a few KiB).
const MAX_FILE: u64 = 1 << 20;

/// One kept entry: as read on `from_nic`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Kept {
    from_nic: String,
    entry: Value,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    entries: BTreeMap<Ipv4Addr, Kept>,
}

/// The kept entries, in memory and (with a state directory) on disk.
#[derive(Debug, Default)]
pub struct Carried {
    path: Option<PathBuf>,
    entries: Mutex<BTreeMap<Ipv4Addr, Kept>>,
}

impl Carried {
    /// Kept in memory only (tests, and callers without a state directory).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Kept in `state_dir` too; what an earlier run kept there is read back.
    pub fn persisted(state_dir: &Path) -> Result<Self, String> {
        let path = state_dir.join(FILE_NAME);
        let entries = match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
            Ok(meta) if !meta.file_type().is_file() => {
                return Err(format!(
                    "{} is not a regular file; remove it (cloudha writes it)",
                    path.display()
                ))
            }
            Ok(meta) if meta.len() > MAX_FILE => {
                return Err(format!(
                    "{} is {} bytes, more than cloudha ever writes; remove it",
                    path.display(),
                    meta.len()
                ))
            }
            Ok(_) => {
                let mut text = String::new();
                File::open(&path)
                    .and_then(|f| f.take(MAX_FILE).read_to_string(&mut text))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let disk: OnDisk = serde_json::from_str(&text).map_err(|e| {
                    format!(
                        "{} is not what cloudha wrote ({e}); move it aside and check the floating ipConfigurations on both NICs",
                        path.display()
                    )
                })?;
                disk.entries
            }
        };
        Ok(Self {
            path: Some(path),
            entries: Mutex::new(entries),
        })
    }

    /// Remember the floating entries `nic_doc` (NIC `nic_id`) holds, in memory.
    pub fn learn(&self, nic_id: &str, nic_doc: &Value, ips: &[Ipv4Addr]) {
        if let Ok(mut map) = self.entries.lock() {
            learn_into(&mut map, nic_id, nic_doc, ips);
        }
    }

    /// Remember the floating entries of `nic_doc` and, before they are removed from it, make sure
    /// they are on disk (written and fsynced). An error means the removal must not be sent.
    pub fn keep_before_removal(
        &self,
        nic_id: &str,
        nic_doc: &Value,
        ips: &[Ipv4Addr],
    ) -> Result<(), String> {
        let Ok(mut map) = self.entries.lock() else {
            return Err("the kept ipConfigurations are unreadable (a thread panicked)".into());
        };
        let before = map.clone();
        learn_into(&mut map, nic_id, nic_doc, ips);
        let Some(path) = &self.path else {
            return Ok(());
        };
        if *map == before && path.exists() {
            return Ok(());
        }
        write_synced(path, &map).map_err(|e| {
            format!(
                "not removing the floating IP from the peer's NIC: cannot keep what is removed in {} ({e}); fix node.state_dir",
                path.display()
            )
        })
    }

    /// The entry to add to `own_nic` for `ip`: the kept one whole when there is one, else one
    /// made from `template`.
    pub fn entry_for(
        &self,
        ip: Ipv4Addr,
        own_nic: &str,
        template: impl FnOnce() -> Template,
    ) -> Value {
        let kept = self.entries.lock().ok().and_then(|m| m.get(&ip).cloned());
        match kept {
            Some(k) => nic::carried_entry(&k.entry, &k.from_nic, own_nic, ip),
            None => template().entry(ip),
        }
    }

    /// The kept entry for `ip`, as read (for `selftest`).
    pub fn kept(&self, ip: Ipv4Addr) -> Option<Value> {
        self.entries
            .lock()
            .ok()
            .and_then(|m| m.get(&ip).map(|k| k.entry.clone()))
    }
}

fn learn_into(map: &mut BTreeMap<Ipv4Addr, Kept>, nic_id: &str, nic_doc: &Value, ips: &[Ipv4Addr]) {
    for ip in ips {
        if let Some(entry) = nic::ipconfig_with(nic_doc, *ip) {
            map.insert(
                *ip,
                Kept {
                    from_nic: nic_id.to_string(),
                    entry: entry.clone(),
                },
            );
        }
    }
}

/// Write `entries` to `path`, whole after a crash (see `durable::replace_file`).
fn write_synced(path: &Path, entries: &BTreeMap<Ipv4Addr, Kept>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let disk = OnDisk {
        version: 1,
        entries: entries.clone(),
    };
    let text = serde_json::to_vec_pretty(&disk).map_err(std::io::Error::other)?;
    cloudha_provider_core::durable::replace_file(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address")
    }

    fn peer_doc() -> Value {
        json!({"properties": {"ipConfigurations": [
            {"name": "ipconfig1", "properties": {"primary": true, "privateIPAddress": "10.0.1.5", "subnet": {"id": "/sub"}}},
            {"name": "fw-vip", "id": "/nic-b/ipConfigurations/fw-vip", "properties": {
                "privateIPAddress": "10.0.1.100", "subnet": {"id": "/sub"},
                "publicIPAddress": {"id": "/pip"}, "applicationSecurityGroups": [{"id": "/asg"}]}}
        ]}})
    }

    fn template() -> Template {
        Template {
            name: "cloudha-10-0-1-100".into(),
            subnet_id: "/sub".into(),
            public_ip_id: None,
        }
    }

    #[test]
    fn what_is_kept_before_a_removal_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("cloudha-carried-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = Carried::persisted(&dir).expect("empty dir");
        first
            .keep_before_removal("/nic-b", &peer_doc(), &[ip("10.0.1.100")])
            .expect("kept");
        let mode = fs::metadata(dir.join(FILE_NAME))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A new process: nothing in memory, the file read back.
        let second = Carried::persisted(&dir).expect("read back");
        let entry = second.entry_for(ip("10.0.1.100"), "/nic-a", template);
        assert_eq!(entry["name"], "fw-vip");
        assert_eq!(entry["properties"]["publicIPAddress"]["id"], "/pip");
        assert_eq!(
            entry["properties"]["applicationSecurityGroups"][0]["id"],
            "/asg"
        );
        assert!(entry.get("id").is_none());
        // Without anything kept, the template makes it.
        let made = second.entry_for(ip("10.0.1.101"), "/nic-a", template);
        assert_eq!(made["name"], "cloudha-10-0-1-100");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_not_ours_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("cloudha-carried-bad-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join(FILE_NAME)).expect("a directory in its place");
        let e = Carried::persisted(&dir).expect_err("a directory");
        assert!(e.contains("not a regular file"), "{e}");
        fs::remove_dir(dir.join(FILE_NAME)).expect("rmdir");
        fs::write(dir.join(FILE_NAME), "{not json").expect("write");
        let e = Carried::persisted(&dir).expect_err("garbage");
        assert!(
            e.contains(FILE_NAME) && e.contains("not what cloudha wrote"),
            "{e}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_state_dir_stops_the_removal() {
        let dir = std::env::temp_dir().join(format!("cloudha-carried-ro-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let carried = Carried::persisted(&dir).expect("empty");
        // A planted entry in the temporary file's place that cannot be removed: a non-empty dir.
        fs::create_dir_all(dir.join(format!(".{FILE_NAME}.tmp/x"))).expect("plant");
        let e = carried
            .keep_before_removal("/nic-b", &peer_doc(), &[ip("10.0.1.100")])
            .expect_err("cannot write");
        assert!(e.contains("not removing"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
