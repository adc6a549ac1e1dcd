//! The Debian package: built by `scripts/package-deb.sh` (cargo-deb, lintian with no error),
//! installed with `dpkg -i` into a clean root, checked (files, modes, conffiles, the unit
//! through `systemd-analyze verify`, the installed binary and setup script run), upgraded over
//! itself, removed and purged.
//!
//! The package is built from the debug binary this test binary was built with (`--profile dev
//! --no-build`, stripped like the release one): a release build costs minutes of fat LTO on
//! CI's 2 cores; the script builds the release binary when run by hand.
//!
//! The clean root is an empty dpkg database in a temporary directory (`dpkg --root`), with the
//! maintainer scripts run chrootless (`--force-script-chrootless`, `$DPKG_ROOT` set; the scripts
//! write under it, and deb-systemd-helper honours it). The root has no libc6 registered, hence
//! `--force-depends`. No systemd runs here: the root gets `/run/systemd/system` so the scripts
//! take their systemd branch, and `systemctl` / `deb-systemd-invoke` are recorders on `PATH`,
//! so the test sees what the scripts ask systemd to do (never start on install, try-restart on
//! upgrade, stop on remove). That try-restart restarts only a running unit is systemd's own rule.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ok(what: &str, out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {}\n{text}", out.status);
    text
}

/// `scripts/package-deb.sh --profile dev --no-build` into `out`: the .deb's path.
fn package(out: &Path, extra: &[&str]) -> PathBuf {
    let run = Command::new(repo().join("scripts/package-deb.sh"))
        .args(["--profile", "dev", "--no-build", "--output"])
        .arg(out)
        .args(extra)
        .current_dir(repo())
        .output()
        .expect("run scripts/package-deb.sh");
    let text = ok("package-deb.sh", run.clone());
    let deb = PathBuf::from(String::from_utf8_lossy(&run.stdout).trim());
    assert!(deb.is_file(), "no package at {}: {text}", deb.display());
    deb
}

/// The clean root and the recorders of what the maintainer scripts ask of systemd.
struct Root {
    dir: tempfile::TempDir,
    fake_bin: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        for d in [
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
        ] {
            std::fs::create_dir_all(r.join(d)).expect("mkdir");
        }
        for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
            std::fs::write(r.join(f), "").expect("touch");
        }
        std::fs::create_dir_all(r.join("run/systemd/system")).expect("mkdir");
        let fake_bin = tempfile::tempdir().expect("tempdir");
        for tool in ["systemctl", "deb-systemd-invoke"] {
            let path = fake_bin.path().join(tool);
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho \"{tool} $*\" >>\"$DPKG_ROOT/systemd-calls.log\"\n"),
            )
            .expect("write recorder");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Root { dir, fake_bin }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn dpkg(&self, args: &[&str]) -> String {
        let path = format!(
            "{}:{}",
            self.fake_bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("dpkg")
            .arg(format!("--root={}", self.dir.path().display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args)
            .env("PATH", path)
            .output()
            .expect("run dpkg");
        ok(&format!("dpkg {args:?}"), out)
    }

    /// What the scripts asked of systemd since the last call, one line each.
    fn systemd_calls(&self) -> Vec<String> {
        let log = self.path("systemd-calls.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        text.lines().map(str::to_string).collect()
    }

    fn mode(&self, rel: &str) -> u32 {
        std::fs::metadata(self.path(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    }

    fn status(&self) -> String {
        let out = Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                self.path("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Status} ${Version}", "cloudha"])
            .output()
            .expect("dpkg-query");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The packaged unit passes `systemd-analyze verify`, run against the binary installed in the
/// root (the verifier checks that ExecStart's program exists; the root has no systemd to
/// resolve `--root` against).
fn verify_unit(root: &Root) {
    let unit = std::fs::read_to_string(root.path("lib/systemd/system/cloudha.service"))
        .expect("installed unit");
    assert!(
        unit.contains("\nExecStart=/usr/bin/cloudha run --config /etc/cloudha/cloudha.toml\n")
            && unit.contains("\nConditionPathExists=/etc/cloudha/cloudha.toml\n")
            && !unit.contains("/usr/local/"),
        "{unit}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cloudha.service");
    let installed = root.path("usr/bin/cloudha");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/cloudha", &installed.display().to_string()),
    )
    .expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("systemd-analyze (scripts/install-deps.sh installs systemd)");
    let text = ok("systemd-analyze verify", out);
    let about: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cloudha.service"))
        .collect();
    assert!(about.is_empty(), "{about:#?}");
}

#[test]
fn package_deb_builds_installs_upgrades_removes_and_purges_in_a_clean_root() {
    let out = tempfile::tempdir().expect("tempdir");
    // The first build runs lintian (errors fail the script); the upgrade's is the same content.
    let v1 = package(&out.path().join("v1"), &[]);
    let v2 = package(
        &out.path().join("v2"),
        &["--deb-version", "0.1.0-2", "--no-lintian"],
    );
    let root = Root::new();

    // Install: files, modes, conffiles; enabled, never started.
    root.dpkg(&["-i", &v1.display().to_string()]);
    assert!(
        root.status().starts_with("install ok installed 0.1.0-1"),
        "{}",
        root.status()
    );
    assert_eq!(root.mode("usr/bin/cloudha"), 0o755);
    assert_eq!(root.mode("var/lib/cloudha"), 0o700);
    for rel in [
        "lib/systemd/system/cloudha.service",
        "etc/cloudha/cloudha.example.toml",
        "etc/cloudha/cloudha.azure.example.toml",
        "etc/cloudha/cloudha.aws.example.toml",
        "usr/share/doc/cloudha/README.md",
        "usr/share/doc/cloudha/copyright",
        "usr/share/doc/cloudha/changelog.Debian.gz",
        "usr/share/cloudha/deploy/azure/cloudha-role.json",
        "usr/share/cloudha/deploy/azure/cloudha.bicep",
        "usr/share/cloudha/deploy/aws/cloudha-policy.json",
        "usr/share/cloudha/deploy/aws/cloudha.cfn.json",
        "usr/share/cloudha/deploy/cloudha-local.conf",
        "usr/share/cloudha/deploy/monitoring/cloudha-alerts.yml",
        "usr/share/cloudha/deploy/monitoring/grafana-cloudha.json",
        "usr/share/man/man1/cloudha.1.gz",
        "usr/share/man/man1/cloudha-events.1.gz",
        "usr/share/man/man1/cloudha-selftest.1.gz",
        "usr/share/bash-completion/completions/cloudha",
        "usr/share/zsh/vendor-completions/_cloudha",
        "usr/share/fish/vendor_completions.d/cloudha.fish",
    ] {
        assert_eq!(root.mode(rel), 0o644, "{rel}");
    }
    for rel in [
        "usr/share/cloudha/scripts/setup-azure.sh",
        "usr/share/cloudha/scripts/setup-aws.sh",
    ] {
        assert_eq!(root.mode(rel), 0o755, "{rel}");
    }
    let conffiles = std::fs::read_to_string(root.path("var/lib/dpkg/info/cloudha.conffiles"))
        .expect("conffiles");
    let mut conffiles: Vec<&str> = conffiles.lines().collect();
    conffiles.sort();
    assert_eq!(
        conffiles,
        [
            "/etc/cloudha/cloudha.aws.example.toml",
            "/etc/cloudha/cloudha.azure.example.toml",
            "/etc/cloudha/cloudha.example.toml"
        ]
    );
    // Enabled the deb-systemd-helper way; systemd only reloaded, nothing started.
    let wants = root.path("etc/systemd/system/multi-user.target.wants/cloudha.service");
    assert_eq!(
        std::fs::read_link(&wants).expect("enabled"),
        Path::new("/lib/systemd/system/cloudha.service")
    );
    assert_eq!(root.systemd_calls(), ["systemctl --system daemon-reload"]);
    verify_unit(&root);

    // The installed binary runs and is stripped; its man page and completions are clap's.
    let bin = root.path("usr/bin/cloudha");
    let version = ok(
        "cloudha --version",
        Command::new(&bin).arg("--version").output().expect("run"),
    );
    assert_eq!(
        version.trim(),
        format!("cloudha {}", env!("CARGO_PKG_VERSION"))
    );
    let sections = ok(
        "readelf -S",
        Command::new("readelf")
            .arg("-S")
            .arg(&bin)
            .output()
            .expect("readelf (binutils)"),
    );
    assert!(
        !sections.contains(".symtab") && !sections.contains(".debug_info"),
        "not stripped"
    );
    let man = ok(
        "zcat man page",
        Command::new("zcat")
            .arg(root.path("usr/share/man/man1/cloudha-events.1.gz"))
            .output()
            .expect("zcat"),
    );
    assert!(man.contains("failover"), "{man}");
    let bash = std::fs::read_to_string(root.path("usr/share/bash-completion/completions/cloudha"))
        .expect("bash completion");
    assert!(
        bash.contains("--failover") && bash.contains("switchover"),
        "bash completion"
    );
    assert!(
        !bash.contains("generate-assets"),
        "the hidden subcommand is not completed"
    );
    // The setup script finds its library and the role documents from where the package puts it.
    let help = ok(
        "setup-azure.sh --help",
        Command::new(root.path("usr/share/cloudha/scripts/setup-azure.sh"))
            .arg("--help")
            .output()
            .expect("run setup-azure.sh"),
    );
    assert!(help.contains("--resource-group"), "{help}");

    // The operator edits an example and writes the real config; state appears.
    let example = root.path("etc/cloudha/cloudha.example.toml");
    let edited = format!(
        "{}\n# edited by the operator\n",
        std::fs::read_to_string(&example).expect("example")
    );
    std::fs::write(&example, &edited).expect("edit");
    std::fs::write(root.path("etc/cloudha/cloudha.toml"), "# the operator's\n").expect("config");
    std::fs::write(root.path("var/lib/cloudha/journal.jsonl"), "{}\n").expect("state");

    // Upgrade over itself: the edit kept, a try-restart (restarts only a running daemon).
    root.dpkg(&["-i", &v2.display().to_string()]);
    assert!(
        root.status().starts_with("install ok installed 0.1.0-2"),
        "{}",
        root.status()
    );
    assert_eq!(std::fs::read_to_string(&example).expect("example"), edited);
    // Reloads from the old postrm and the new postinst; the one action on the daemon is a
    // try-restart (no stop in prerm upgrade, no start).
    let invoked: Vec<String> = root
        .systemd_calls()
        .into_iter()
        .filter(|c| c.starts_with("deb-systemd-invoke"))
        .collect();
    assert_eq!(invoked, ["deb-systemd-invoke try-restart cloudha.service"]);
    assert!(root.path("var/lib/cloudha/journal.jsonl").exists());
    assert!(std::fs::symlink_metadata(&wants).is_ok(), "still enabled");

    // Remove: stopped, binary gone; conffiles, the operator's config and the state stay.
    root.dpkg(&["-r", "cloudha"]);
    let calls = root.systemd_calls();
    assert_eq!(
        calls.first().map(String::as_str),
        Some("deb-systemd-invoke stop cloudha.service"),
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("start cloudha") || c.contains("restart")),
        "{calls:?}"
    );
    assert!(!bin.exists());
    assert!(example.exists() && root.path("var/lib/cloudha/journal.jsonl").exists());
    assert!(
        root.status().starts_with("deinstall ok config-files"),
        "{}",
        root.status()
    );

    // Purge: state, conffiles and the enablement gone; the operator's own config kept.
    root.dpkg(&["--purge", "cloudha"]);
    assert!(!root.path("var/lib/cloudha").exists(), "state removed");
    assert!(!example.exists(), "conffiles removed");
    assert!(
        std::fs::symlink_metadata(&wants).is_err(),
        "enablement removed"
    );
    assert!(
        std::fs::symlink_metadata(root.path("etc/systemd/system/cloudha.service")).is_err(),
        "no mask left behind"
    );
    assert!(
        root.path("etc/cloudha/cloudha.toml").exists(),
        "the operator's file is theirs"
    );
    assert!(!root.status().contains("installed"), "{}", root.status());
}
