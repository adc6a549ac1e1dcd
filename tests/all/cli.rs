//! The command line as an operator uses it: `config check` on good and broken files, exit
//! codes, `--help` on every command.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cloudha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudha"))
        .args(args)
        .output()
        .expect("run cloudha")
}

/// The shipped example config, with its key file pointed into `dir`.
fn example_in(dir: &Path) -> (String, PathBuf) {
    shipped_in(dir, "deploy/cloudha.example.toml")
}

/// A shipped config file, with its key file pointed into `dir`.
fn shipped_in(dir: &Path, file: &str) -> (String, PathBuf) {
    let key = dir.join("key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("write key");
    // The daemon refuses a key file group or others can read.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod key");
    let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .expect("example config");
    let text = example.replace("/etc/cloudha/key", &key.display().to_string());
    (text, dir.join("cloudha.toml"))
}

fn check(text: &str, path: &Path) -> Output {
    std::fs::write(path, text).expect("write config");
    cloudha(&["config", "check", path.to_str().expect("utf-8")])
}

fn assert_valid(text: &str, path: &Path) -> Output {
    let out = check(text, path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Each `(from, to, field)` breaks `good` by replacing `from` with `to`: `config check` must exit 2
/// and name `field`.
fn assert_breaks_name_their_fields(good: &str, path: &Path, cases: &[(&str, &str, &str)]) {
    for (from, to, field) in cases {
        assert!(good.contains(from), "example lacks {from:?}");
        let out = check(&good.replacen(from, to, 1), path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{to:?}: {stderr}");
        assert!(
            stderr.contains(field),
            "{to:?}: error does not name {field}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn load_balancer_example_config_is_valid_and_its_mistakes_name_their_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (text, path) = shipped_in(dir.path(), "deploy/cloudha.lb.example.toml");
    assert_valid(&text, &path);
    assert_breaks_name_their_fields(
        &text,
        &path,
        &[
            (
                "\"/usr/bin/pgrep\"",
                "\"/nonexistent/pgrep\"",
                "track[0].command",
            ),
            ("\"/usr/bin/pgrep\"", "\"pgrep\"", "track[0].command"),
            ("fall = 3", "fall = 0", "track[0].fall"),
            ("weight = -150", "weight = 0", "track[1].weight"),
            (
                "path = \"/healthz\"",
                "path = \"healthz\"",
                "health_probe.path",
            ),
            (
                "kind = \"none\"",
                "kind = \"none\"\n\n[[floating_ip]]\naddress = \"10.0.1.100\"",
                "floating_ip",
            ),
        ],
    );
}

#[test]
fn example_config_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (text, path) = example_in(dir.path());
    let out = assert_valid(&text, &path);
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (node fw-a, peer fw-b, 2 path(s)"));
}

#[test]
fn azure_example_config_is_valid_and_its_ids_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (text, path) = shipped_in(dir.path(), "deploy/cloudha.azure.example.toml");
    // The optional move_mode, uncommented, so that it can be broken too.
    let text = text.replace("# move_mode", "move_mode");
    assert_valid(&text, &path);
    let cases: &[(&str, &str, &str)] = &[
        (
            "networkInterfaces/fw-b-lan",
            "virtualNetworks/fw-b-lan",
            "provider.azure.peer_nic",
        ),
        ("routeTables/rt-workloads", "rt-workloads", "route[0].table"),
        (
            "publicIPAddresses/pip-fw",
            "networkInterfaces/pip-fw",
            "floating_ip[0].public_ip",
        ),
        (
            "move_mode = \"atomic\"",
            "move_mode = \"fast\"",
            "move_mode",
        ),
        ("[provider.azure]", "[provider.azur]", "provider.azur"),
    ];
    assert_breaks_name_their_fields(&text, &path, cases);
}

#[test]
fn aws_example_config_is_valid_and_its_ids_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (text, path) = shipped_in(dir.path(), "deploy/cloudha.aws.example.toml");
    assert_valid(&text, &path);
    let cases: &[(&str, &str, &str)] = &[
        ("eni-0123456789abcdef1", "nic-1", "provider.aws.peer_eni"),
        ("rtb-0123456789abcdef0", "rt-1", "route[0].table"),
        (
            "eipalloc-0123456789abcdef0",
            "eip-1",
            "elastic_ip.allocation_id",
        ),
        ("[provider.aws]", "[provider.aws2]", "provider.aws2"),
    ];
    assert_breaks_name_their_fields(&text, &path, cases);
}

#[test]
fn broken_configs_exit_2_and_name_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (good, path) = example_in(dir.path());
    let cases: &[(&str, &str, &str)] = &[
        (
            "interval = \"200ms\"",
            "interval = \"200\"",
            "keepalive.interval",
        ),
        ("priority = 200", "priority = 300", "node.priority"),
        ("priority = 200", "priority = 200\nprio = 1", "node.prio"),
        (
            "dead_interval = \"1s\"",
            "dead_interval = \"300ms\"",
            "keepalive.dead_interval",
        ),
        (
            "peer = \"10.0.1.11:5405\"",
            "peer = \"10.0.1.11\"",
            "keepalive.path[0].peer",
        ),
        (
            "address = \"10.0.1.100\"",
            "address = \"10.0.1.300\"",
            "floating_ip[0].address",
        ),
        ("kind = \"local\"", "kind = \"gcp\"", "provider.kind"),
        ("name = \"fw-b\"", "name = \"fw-a\"", "peer.name"),
        ("[cluster]", "[cluster", "line 5"),
    ];
    assert_breaks_name_their_fields(&good, &path, cases);
    let out = cloudha(&["config", "check", "/nonexistent/cloudha.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_check_refuses_what_cannot_work_naming_the_field_and_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (good, path) = example_in(dir.path());
    // Each: the break, the field, a word of the fix.
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "address = \"10.0.1.100\"",
            "address = \"10.0.1.10\"",
            "floating_ip[0].address",
            "own address",
        ),
        (
            "address = \"10.0.1.100\"",
            "address = \"0.0.0.0\"",
            "floating_ip[0].address",
            "spare address",
        ),
        (
            "dead_interval = \"1s\"",
            "dead_interval = \"99999999h\"",
            "keepalive.dead_interval",
            "a few seconds",
        ),
        (
            "bind = \"10.0.1.10:5405\"",
            "bind = \"10.0.1.10:0\"",
            "keepalive.path[0].bind",
            ":5405",
        ),
        (
            "peer = \"10.0.0.11:5405\"",
            "peer = \"10.0.1.11:5405\"",
            "keepalive.path[1].peer",
            "own network",
        ),
        (
            "peer = \"10.0.1.11:5405\"",
            "peer = \"255.255.255.255:5405\"",
            "keepalive.path[0].peer",
            "unicast",
        ),
        (
            "interface = \"eth1\"",
            "interface = \"../../x\"",
            "provider.local.interface",
            "ip link",
        ),
        (
            "preempt_hold_down = \"30s\"",
            "preempt_hold_down = \"0s\"",
            "node.preempt_hold_down",
            "1s",
        ),
        (
            "[provider]",
            "[hooks]\non_active = [\"/nonexistent/notify\"]\n[provider]",
            "hooks.on_active",
            "install the program",
        ),
        (
            "state_dir = \"/var/lib/cloudha\"",
            "state_dir = \"\"",
            "node.state_dir",
            "absolute path",
        ),
        (
            "socket = \"/run/cloudha/cloudha.sock\"",
            "socket = \"ctl.sock\"",
            "status.socket",
            "absolute path",
        ),
    ];
    for (from, to, field, fix) in cases {
        assert!(good.contains(from), "example lacks {from:?}");
        let out = check(&good.replacen(from, to, 1), &path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{to:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{field}: ")),
            "{to:?}: names {field}: {stderr}"
        );
        assert!(stderr.contains(fix), "{to:?}: says {fix:?}: {stderr}");
    }
}

#[test]
fn config_check_refuses_hostile_files_without_hanging_or_deleting() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (good, path) = example_in(dir.path());
    let key = dir.path().join("key");

    // A key others can read: refused, naming the file and chmod 600.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = check(&good, &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cluster.key_file: {}", key.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("chmod 600 {}", key.display())),
        "{stderr}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // A FIFO, /dev/zero and /dev/urandom as the key: refused at once (the command would hang
    // or run out of memory if it read them); the test's own timeout is the command's.
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    for bad in [fifo.to_str().expect("utf-8"), "/dev/zero", "/dev/urandom"] {
        let text = good.replace(&key.display().to_string(), bad);
        let started = std::time::Instant::now();
        let out = check(&text, &path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("cluster.key_file") && stderr.contains("regular file"),
            "{stderr}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{bad} took {:?}",
            started.elapsed()
        );
    }
    let text = good.replace(&key.display().to_string(), "key");
    let out = check(&text, &path);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("relative path"));

    // A regular file where the control socket goes: refused by config check, and kept.
    let precious = dir.path().join("precious");
    std::fs::write(&precious, "do not delete").expect("write");
    let text = good.replace("/run/cloudha/cloudha.sock", &precious.display().to_string());
    let out = check(&text, &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("status.socket") && stderr.contains("not a socket"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&precious).expect("kept"),
        "do not delete"
    );

    // A socket directory others can write (they could swap the socket): refused.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let text = good.replace(
        "/run/cloudha/cloudha.sock",
        &shared.join("s.sock").display().to_string(),
    );
    let out = check(&text, &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("status.socket") && stderr.contains("chmod 700"),
        "{stderr}"
    );
}

#[test]
fn config_errors_echo_no_source_line_and_no_huge_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shadow");
    // A password file passed by mistake: the error gives the position, not the hash.
    let out = check("root:$6$c2VjcmV0aGFzaA:19000:0:99999:7:::\n", &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr.contains("c2VjcmV0aGFzaA"), "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");

    let (good, path) = example_in(dir.path());
    let huge = "x".repeat(5_000_000);
    let out = check(
        &good.replace("name = \"fw-a\"", &format!("name = \"{huge}\"")),
        &path,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.len() < 2000,
        "{} bytes of error",
        out.stderr.len()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("node.name"));
}

#[test]
fn metrics_beyond_loopback_is_a_warning_with_exit_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (good, path) = example_in(dir.path());
    let out = assert_valid(
        &format!("{good}\n[metrics]\nlisten = \"0.0.0.0:9465\"\n"),
        &path,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: ") && stderr.contains("metrics.listen"),
        "{stderr}"
    );
    let out = assert_valid(&good, &path);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn local_provider_without_its_capabilities_refuses_to_start_naming_the_drop_in() {
    // The shipped unit grants no capability; the local provider's drop-in adds two. Started
    // without them (setpriv drops them from the bounding set before exec, as the unit would),
    // the daemon exits 2 at once instead of failing every takeover later.
    let dir = tempfile::tempdir().expect("tempdir");
    let (text, path) = example_in(dir.path());
    let text = text
        .replace("interface = \"eth1\"", "interface = \"lo\"")
        .replace(
            "/var/lib/cloudha",
            &dir.path().join("state").display().to_string(),
        )
        .replace(
            "/run/cloudha/cloudha.sock",
            &dir.path().join("s.sock").display().to_string(),
        );
    std::fs::write(&path, text).expect("write config");
    let out = Command::new("setpriv")
        .args(["--bounding-set=-net_admin,-net_raw", "--"])
        .arg(env!("CARGO_BIN_EXE_cloudha"))
        .args(["run", "--config", path.to_str().expect("utf-8")])
        .output()
        .expect("run setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CAP_NET_ADMIN and CAP_NET_RAW"), "{stderr}");
    assert!(stderr.contains("deploy/cloudha-local.conf"), "{stderr}");
    assert!(!dir.path().join("state").exists(), "nothing was started");
}

#[test]
fn unreachable_daemon_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("none.sock");
    let socket = socket.to_str().expect("utf-8");
    for args in [
        vec!["status", "--socket", socket],
        vec!["switchover", "--socket", socket],
        vec!["maintenance", "on", "--socket", socket],
    ] {
        let out = cloudha(&args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the cloudha daemon"));
    }
}

#[test]
fn every_command_has_help_with_exit_codes() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["status", "--help"],
        vec!["config", "check", "--help"],
        vec!["switchover", "--help"],
        vec!["maintenance", "--help"],
    ] {
        let out = cloudha(&args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
        if args.len() > 1 && args[0] != "config" {
            assert!(text.contains("Exit codes:"), "{args:?}: {text}");
        }
    }
    assert_eq!(cloudha(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn selftest_exit_codes_key_file_mode_and_no_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (text, path) = example_in(dir.path());
    // The local provider on an interface this machine has, and a socket nobody listens on.
    let text = text
        .replace("interface = \"eth1\"", "interface = \"lo\"")
        .replace(
            "/run/cloudha/cloudha.sock",
            &dir.path().join("none.sock").display().to_string(),
        );
    std::fs::write(&path, &text).expect("write config");
    let key = dir.path().join("key");
    let chmod = |mode| {
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod")
    };
    let config = path.to_str().expect("utf-8");

    chmod(0o600);
    let out = cloudha(&["selftest", "--config", config]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("[PASS] config"), "{stdout}");
    assert!(stdout.contains("[PASS] key_file"), "{stdout}");
    assert!(stdout.contains("[PASS] files"), "{stdout}");
    assert!(stdout.contains("[WARN] peer"), "{stdout}");
    assert!(stdout.contains("daemon is not running"), "{stdout}");

    chmod(0o644);
    let out = cloudha(&["selftest", "--json", "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["ok"], false);
    let key_check = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "key_file")
        .expect("key_file check")
        .clone();
    assert_eq!(key_check["outcome"], "fail");
    assert!(
        key_check["fix"]
            .as_str()
            .unwrap_or_default()
            .starts_with("chmod 600"),
        "{key_check}"
    );

    // A config that cannot be used at all is bad usage: exit code 2, the field named.
    std::fs::write(&path, text.replace("priority = 200", "priority = 0")).expect("write");
    let out = cloudha(&["selftest", "--config", config]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node.priority"));
}

#[test]
fn events_failover_draws_from_the_journal_and_says_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal.jsonl");
    let path = journal.to_str().expect("utf-8");
    // A journal with one finished takeover, written as the daemon writes it; the operation id
    // carries an escape sequence (an error text from the cloud, or the peer's words).
    let record = serde_json::json!({
        "epoch": 4, "reason": "peer silent", "decided_unix_ms": 1_000, "detection_ms": 500,
        "first_request_ms": 3, "first_write_ms": 5, "total_ms": 900, "attempts": 1,
        "operations": [{"id": "nic.add \u{1b}[2Jnic-b", "outcome": "ok", "elapsed_ms": 880, "started_ms": 4}],
        "api_calls": {"nic.put": 1}, "calls": [{"api": "nic.put", "status": 200, "write": true, "sent_ms": 5, "duration_ms": 20}]
    });
    let entry = serde_json::json!({
        "at_unix_ms": 2_000, "node": "fw-b", "role": "active", "epoch": 4,
        "kind": "takeover_done", "message": "takeover for epoch 4 converged", "data": {"failover": record}
    });
    std::fs::write(&journal, format!("{entry}\n")).expect("write journal");
    for args in [
        vec!["events", "--failover", "--journal", path],
        vec!["events", "--failover", "4", "--journal", path],
    ] {
        let out = cloudha(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("Failover to epoch 4 on fw-b: converged"),
            "{text}"
        );
        assert!(text.contains("nic.add \\x1b[2Jnic-b"), "escaped: {text}");
        assert!(!text.contains('\u{1b}'), "no escape reaches the terminal");
    }
    let other = cloudha(&["events", "--failover", "5", "--journal", path]);
    assert_eq!(other.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&other.stderr)
            .contains("no takeover for epoch 5 in the journal; epochs with one: 4"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert_eq!(
        cloudha(&["events", "--failover", "--json", "--journal", path])
            .status
            .code(),
        Some(2),
        "--failover draws; --json, --follow and -n print lines"
    );
}
