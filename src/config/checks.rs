//! File-system checks shared by the config sections (a program the daemon runs). A leaf: the
//! section modules import it, it imports none of them.

/// A program the daemon runs (a hook, a tracked check): it must exist, be an executable
/// regular file, and not be writable by every user.
pub(crate) fn check_program(field: &str, program: &str, problem: &mut impl FnMut(&str, String)) {
    use std::os::unix::fs::MetadataExt;
    let shown = crate::secure_fs::excerpt(program);
    match std::fs::metadata(program) {
        Err(e) => problem(
            field,
            format!("{shown}: {e}; install the program or fix the path"),
        ),
        Ok(meta) if !meta.is_file() => problem(
            field,
            format!("{shown} is not a regular file; name the program itself"),
        ),
        Ok(meta) if meta.mode() & 0o111 == 0 => problem(
            field,
            format!("{shown} is not executable; `chmod 755` it"),
        ),
        Ok(meta) if meta.mode() & 0o002 != 0 => problem(
            field,
            format!(
                "{shown} is writable by every user, who could make the daemon run anything; `chmod o-w` it"
            ),
        ),
        Ok(_) => {}
    }
}
