//! Files that must survive a crash whole: the node's incarnation, the peer's, the Azure
//! provider's copy of the ipConfigurations it is moving. One way to write them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Replace `path` with `contents`, mode 0600: written to a fresh temporary file beside it
/// (created with `O_EXCL`, so a link planted under that name is never followed), fsynced,
/// renamed over `path`, and the directory fsynced, so that after a crash the file is either the
/// old one or the new one, whole.
pub fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    // The umask may have taken bits the mode asked for; never more than 0600 either way.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cloudha-durable-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn replaces_whole_with_mode_0600() {
        let dir = scratch("replace");
        let path = dir.join("incarnation");
        replace_file(&path, b"1\n").expect("first");
        replace_file(&path, b"2\n").expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"2\n");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.join(".incarnation.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_link_planted_as_the_temporary_file_is_not_followed() {
        let dir = scratch("link");
        let target = dir.join("target");
        fs::write(&target, b"keep").expect("target");
        symlink(&target, dir.join(".state.tmp")).expect("link");
        replace_file(&dir.join("state"), b"new").expect("write");
        assert_eq!(fs::read(&target).expect("target"), b"keep");
        assert_eq!(fs::read(dir.join("state")).expect("state"), b"new");
        let _ = fs::remove_dir_all(&dir);
    }
}
