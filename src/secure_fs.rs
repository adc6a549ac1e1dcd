//! Files and directories handled like a careful daemon does: a secret is read only from a
//! regular file its owner alone can read, with a size cap and without ever blocking on a FIFO or
//! a device; the directories the daemon writes (state, control socket) are its own and nobody
//! else can write them.
//!
//! "Trusted owner" below is root or the user the daemon runs as (its effective uid): a file or
//! directory owned by anyone else could be swapped or read by that user.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The user the daemon runs as.
pub fn daemon_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether `uid` may own the daemon's files: root or the daemon's own user.
pub fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == daemon_uid()
}

/// Up to 60 characters of `text` for an error message, so a 5 MB value (or a secret pasted in
/// the wrong field) is never echoed whole.
pub fn excerpt(text: &str) -> String {
    cloudha_provider_core::text::excerpt(text)
}

/// [`excerpt`] for a path.
pub fn path_excerpt(path: &Path) -> String {
    excerpt(&path.to_string_lossy())
}

/// `path` for an error message: whole up to 200 characters (so a `chmod 600 <path>` can be
/// copied), cut short beyond.
pub fn shown(path: &Path) -> String {
    const MAX: usize = 200;
    let text = path.to_string_lossy();
    let mut out: String = text.chars().take(MAX).collect();
    if text.chars().nth(MAX).is_some() {
        out.push_str("...");
    }
    out
}

/// What kind of file `meta` describes, for error messages.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Read a secret of at most `max_bytes` from `path`.
///
/// The file must be a regular file (a symlink to one is followed), owned by a trusted owner and
/// neither readable nor writable by group or others. It is opened with `O_NONBLOCK` and checked
/// through the opened descriptor before one byte is read, so a FIFO, `/dev/zero` or
/// `/dev/urandom` put there by mistake is refused at once instead of hanging or filling memory,
/// and a file swapped between the check and the read is caught. Errors are one sentence naming
/// the file and the fix (the caller adds the field).
pub fn read_private_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let shown = shown(path);
    if !path.is_absolute() {
        return Err(format!(
            "{} is a relative path (it would depend on the working directory); write the absolute path, e.g. /etc/cloudha/key",
            path_excerpt(path)
        ));
    }
    // A first look without opening: opening some devices (a tape, a tty) has side effects.
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "cannot read {shown}: {e}; create it on both nodes with e.g. `head -c 32 /dev/urandom | base64 > {shown}; chmod 600 {shown}`"
        )
    })?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "{shown} is {}; point it at a regular file holding the key",
            kind(&meta)
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            format!("cannot open {shown}: {e}; it must belong to root or the daemon's user (uid {}), mode 0600: `chown root {shown}; chmod 600 {shown}`", daemon_uid())
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {shown}: {e}"))?;
    check_private_file(path, &meta)?;
    if meta.len() > max_bytes {
        return Err(format!(
            "{shown} is {} bytes; a key file holds one line of at most {max_bytes} bytes (e.g. 32 random bytes, base64)",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    // The cap holds even if the file grows after the stat.
    (&mut file)
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "{shown} is longer than {max_bytes} bytes; a key file holds one line"
        ));
    }
    Ok(bytes)
}

/// The checks of [`read_private_file`] on metadata already at hand: a regular file, a trusted
/// owner, no access for group or others.
pub fn check_private_file(path: &Path, meta: &Metadata) -> Result<(), String> {
    let shown = shown(path);
    if !meta.file_type().is_file() {
        return Err(format!(
            "{shown} is {}; point it at a regular file",
            kind(meta)
        ));
    }
    if !trusted_owner(meta.uid()) {
        return Err(format!(
            "{shown} is owned by uid {}, not by root or the daemon's user (uid {}): that user could change or read it; `chown root {shown}` (or the daemon's user)",
            meta.uid(),
            daemon_uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:04o}: group or other users can read or change it; run `chmod 600 {shown}`"
        ));
    }
    Ok(())
}

/// The checks on a directory the daemon writes into: a directory (a symlink to one is
/// followed), owned by a trusted owner, not writable by group or others (whoever can write it
/// can swap what the daemon puts there).
pub fn check_private_dir(dir: &Path) -> Result<Metadata, String> {
    let shown = shown(dir);
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot use {shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!(
            "{shown} is {}, not a directory; name a directory",
            kind(&meta)
        ));
    }
    if !trusted_owner(meta.uid()) {
        return Err(format!(
            "directory {shown} is owned by uid {}, not by root or the daemon's user (uid {}): that user could swap the files in it; use a directory of the daemon's user, e.g. /run/cloudha (`install -d -m 0700 {shown}`)",
            meta.uid(),
            daemon_uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "directory {shown} has mode {mode:04o}: group or other users can write it and swap the files in it; run `chmod 700 {shown}` or use another directory"
        ));
    }
    Ok(meta)
}

/// Create `dir` (and missing parents) with mode 0700 if it does not exist, then apply
/// [`check_private_dir`]. With `tighten`, an existing directory of the daemon's own user that
/// group or others can read is made 0700 (its content, e.g. hook output in the journal, is
/// nobody else's business); the `Ok` value then says what was changed, for a warning.
pub fn ensure_private_dir(dir: &Path, tighten: bool) -> Result<Option<String>, String> {
    if !dir.is_absolute() {
        return Err(format!(
            "{} is a relative path (it would depend on the working directory); write an absolute path",
            path_excerpt(dir)
        ));
    }
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", shown(dir)))?;
    }
    let meta = check_private_dir(dir)?;
    let mode = meta.mode() & 0o7777;
    if tighten && mode & 0o077 != 0 && meta.uid() == daemon_uid() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot chmod 700 {}: {e}", shown(dir)))?;
        return Ok(Some(format!(
            "{} had mode {mode:04o} (readable by others); changed to 0700",
            shown(dir)
        )));
    }
    Ok(None)
}

/// Open `path` for appending, created 0600; an existing file of the daemon's user readable by
/// others is made 0600. Symlinks are not followed (`O_NOFOLLOW`): a link planted in place of the
/// file would otherwise make the daemon append to its target.
pub fn open_private_append(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(format!(
            "{} is {}, not a regular file",
            shown(path),
            kind(&meta)
        )));
    }
    if meta.mode() & 0o077 != 0 && meta.uid() == daemon_uid() {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn private_file_is_read_with_a_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::write(&key, "0123456789abcdef\n").expect("write");
        chmod(&key, 0o600);
        assert_eq!(
            read_private_file(&key, 64).expect("readable"),
            b"0123456789abcdef\n"
        );
        let err = read_private_file(&key, 8).expect_err("over the cap");
        assert!(err.contains("17 bytes"), "{err}");
    }

    #[test]
    fn private_file_refuses_group_or_other_access_naming_chmod_600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::write(&key, "0123456789abcdef\n").expect("write");
        for mode in [0o640, 0o604, 0o620, 0o602] {
            chmod(&key, mode);
            let err = read_private_file(&key, 64).expect_err("too open");
            assert!(
                err.contains(&format!("chmod 600 {}", key.display())),
                "{err}"
            );
            assert!(err.contains(&format!("{mode:04o}")), "{err}");
        }
        chmod(&key, 0o400);
        assert!(read_private_file(&key, 64).is_ok());
    }

    #[test]
    fn private_file_refuses_devices_fifos_dirs_and_relative_paths_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        // A FIFO nobody writes to: a blocking open would hang this test forever.
        let err = read_private_file(&fifo, 64).expect_err("fifo");
        assert!(err.contains("a FIFO"), "{err}");
        let err = read_private_file(Path::new("/dev/zero"), 64).expect_err("device");
        assert!(err.contains("character device"), "{err}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/urandom", &link).expect("symlink");
        let err = read_private_file(&link, 64).expect_err("link to a device");
        assert!(err.contains("character device"), "{err}");
        let err = read_private_file(dir.path(), 64).expect_err("directory");
        assert!(err.contains("a directory"), "{err}");
        let err = read_private_file(Path::new("etc/key"), 64).expect_err("relative");
        assert!(err.contains("relative path"), "{err}");
    }

    #[test]
    fn private_file_refuses_an_untrusted_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::write(&key, "0123456789abcdef\n").expect("write");
        chmod(&key, 0o600);
        if daemon_uid() != 0 {
            // Only root can give a file away; without it the owner check is covered by
            // `trusted_owner` alone.
            assert!(!trusted_owner(daemon_uid() + 1));
            return;
        }
        std::os::unix::fs::chown(&key, Some(65534), None).expect("chown");
        let err = read_private_file(&key, 64).expect_err("owned by nobody");
        assert!(err.contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn private_dir_is_created_0700_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("a/b");
        assert_eq!(ensure_private_dir(&state, true), Ok(None));
        let mode = std::fs::metadata(&state).expect("created").mode() & 0o777;
        assert_eq!(mode, 0o700);

        chmod(&state, 0o755);
        let changed = ensure_private_dir(&state, true).expect("fixed");
        assert!(changed.is_some_and(|c| c.contains("0755")));
        assert_eq!(
            std::fs::metadata(&state).expect("dir").mode() & 0o777,
            0o700
        );

        // Writable by others: refused (fixing it would not undo what others put there).
        chmod(&state, 0o777);
        let err = ensure_private_dir(&state, true).expect_err("others can write");
        assert!(err.contains("0777"), "{err}");
        let err = check_private_dir(Path::new("/tmp")).expect_err("sticky /tmp is shared");
        assert!(err.contains("1777"), "{err}");

        // Not tightened when not asked: 0755 is fine for the socket's directory.
        chmod(&state, 0o755);
        assert_eq!(ensure_private_dir(&state, false), Ok(None));

        let err = ensure_private_dir(Path::new(""), true).expect_err("empty");
        assert!(err.contains("relative"), "{err}");
        let err = ensure_private_dir(Path::new("state"), true).expect_err("relative");
        assert!(err.contains("relative"), "{err}");
    }

    #[test]
    fn appended_file_is_0600_and_no_symlink_is_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = dir.path().join("journal.jsonl");
        drop(open_private_append(&journal).expect("created"));
        assert_eq!(
            std::fs::metadata(&journal).expect("file").mode() & 0o777,
            0o600
        );
        chmod(&journal, 0o644);
        drop(open_private_append(&journal).expect("reopened"));
        assert_eq!(
            std::fs::metadata(&journal).expect("file").mode() & 0o777,
            0o600
        );
        let target = dir.path().join("target");
        std::fs::write(&target, "").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(open_private_append(&link).is_err());
    }

    #[test]
    fn long_paths_are_cut_in_messages() {
        let long = Path::new("/").join("d".repeat(5000));
        let err = ensure_private_dir(&long, false).expect_err("name too long");
        assert!(err.len() < 400, "{} bytes", err.len());
        assert_eq!(shown(Path::new("/etc/cloudha/key")), "/etc/cloudha/key");
    }

    #[test]
    fn excerpts_are_short() {
        let long = "x".repeat(5_000_000);
        let shown = excerpt(&long);
        assert!(shown.len() < 70, "{}", shown.len());
        assert!(shown.ends_with("...\""));
        assert_eq!(excerpt("lan0"), "\"lan0\"");
    }
}
