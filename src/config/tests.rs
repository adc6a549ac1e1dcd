//! The config's unit tests (parsing, every validation rule, defaults, the digest), and the
//! example config other modules' tests start from ([`EXAMPLE`]).

/// Found by the `config_parse` fuzz target: an empty key gave an error naming no field.
#[test]
fn empty_key_error_still_names_a_field() {
    let (field, message) = Config::parse(" \"\"= 2").expect_err("an empty key is unknown");
    assert_eq!(field, ".");
    assert!(message.contains("unknown field"), "{message}");
}

use super::*;

pub(crate) const EXAMPLE: &str = r#"
[cluster]
id = 7
key_file = "/nonexistent/key"

[node]
name = "fw-a"
priority = 200

[peer]
name = "fw-b"

[keepalive]
interval = "100ms"
dead_interval = "500ms"

[[keepalive.path]]
name = "lan"
bind = "10.0.0.1:5405"
peer = "10.0.0.2:5405"

[provider]
kind = "local"

[provider.local]
interface = "lan0"

[[floating_ip]]
address = "10.0.0.100"
prefix_len = 24
"#;

fn parse_err(text: &str) -> (String, String) {
    match Config::parse(text) {
        Ok(_) => panic!("expected a parse error"),
        Err(e) => e,
    }
}

#[test]
fn example_parses_with_defaults() {
    let config = Config::parse(EXAMPLE).expect("example parses");
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    assert!(config.node.preempt);
    assert_eq!(config.node.preempt_hold_down.0, Duration::from_secs(10));
    assert_eq!(
        config.status.socket,
        PathBuf::from("/run/cloudha/cloudha.sock")
    );
    assert_eq!(config.floating_ips()[0].prefix_len, 24);
}

#[test]
fn unknown_key_names_its_path() {
    let text = EXAMPLE.replace("dead_interval = \"500ms\"", "dead_intervall = \"500ms\"");
    let (field, message) = parse_err(&text);
    assert_eq!(field, "keepalive.dead_intervall");
    assert!(
        message.contains("unknown field `dead_intervall`"),
        "{message}"
    );
    assert!(
        message.contains("dead_interval"),
        "lists the expected keys: {message}"
    );
}

#[test]
fn bad_value_names_field_and_fix() {
    let text = EXAMPLE.replace("\"100ms\"", "\"100 parsecs\"");
    let (field, message) = parse_err(&text);
    assert_eq!(field, "keepalive.interval");
    assert!(message.contains("200ms"), "{message}");

    let text = EXAMPLE.replace("bind = \"10.0.0.1:5405\"", "bind = \"10.0.0.1\"");
    let (field, _) = parse_err(&text);
    assert_eq!(field, "keepalive.path[0].bind");
}

#[test]
fn missing_section_and_bad_toml_are_errors_not_panics() {
    let (field, message) = parse_err("[cluster]\nid = 1\n");
    assert_eq!(field, "cluster");
    assert!(message.contains("missing field `key_file`"), "{message}");
    let (_, message) = parse_err("[cluster\nid = ");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn validate_collects_every_problem() {
    let text = EXAMPLE
        .replace("dead_interval = \"500ms\"", "dead_interval = \"200ms\"")
        .replace("name = \"fw-b\"", "name = \"fw-a\"")
        .replace(
            "interface = \"lan0\"",
            "interface = \"a-very-long-interface-name\"",
        );
    let config = Config::parse(&text).expect("parses");
    let fields: Vec<String> = config.validate().into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "peer.name",
            "keepalive.dead_interval",
            "provider.local.interface"
        ]
    );
}

#[test]
fn local_provider_rejects_routes() {
    let text = format!(
        "{EXAMPLE}\n[[route]]\ntable = \"rt\"\nname = \"default\"\nprefix = \"0.0.0.0/0\"\n"
    );
    let config = Config::parse(&text).expect("parses");
    let problems = config.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "route");
}

#[test]
fn key_file_is_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("key");
    std::fs::write(&key_path, "short\n").expect("write key");
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let text = EXAMPLE.replace("/nonexistent/key", &key_path.display().to_string());
    let config = Config::parse(&text).expect("parses");
    let problem = config.read_key().expect_err("too short");
    assert_eq!(problem.field, "cluster.key_file");
    std::fs::write(&key_path, "0123456789abcdef0123456789abcdef\n").expect("write key");
    assert_eq!(config.read_key().expect("long enough").len(), 32);
}

/// The fields `validate` names for `EXAMPLE` with `edits` applied.
fn fields_after(edits: &[(&str, &str)]) -> Vec<String> {
    let mut text = EXAMPLE.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "EXAMPLE has no {from:?}");
        text = text.replace(from, to);
    }
    let config = Config::parse(&text).expect("parses");
    config.validate().into_iter().map(|p| p.field).collect()
}

fn problems_after(edits: &[(&str, &str)]) -> Vec<Problem> {
    let mut text = EXAMPLE.to_string();
    for (from, to) in edits {
        text = text.replace(from, to);
    }
    Config::parse(&text).expect("parses").validate()
}

/// `EXAMPLE` with `kind = "none"`: no provider table, no floating IP.
fn none_example() -> String {
    let provider = "[provider]\nkind = \"local\"\n\n[provider.local]\ninterface = \"lan0\"\n\n[[floating_ip]]\naddress = \"10.0.0.100\"\nprefix_len = 24\n";
    assert!(EXAMPLE.contains(provider));
    EXAMPLE.replace(
        provider,
        "[provider]\nkind = \"none\"\n\n[health_probe]\nlisten = \"10.0.0.1:8080\"\n",
    )
}

#[test]
fn provider_none_needs_no_floating_ip_and_refuses_cloud_resources() {
    let config = Config::parse(&none_example()).expect("parses");
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert_eq!(config.provider.kind.to_string(), "none");

    let with_cloud = none_example()
            + "\n[provider.local]\ninterface = \"lan0\"\n\n[[floating_ip]]\naddress = \"10.0.0.100\"\n\n[[route]]\ntable = \"rt-1\"\nname = \"default\"\nprefix = \"0.0.0.0/0\"\n";
    let problems = match Config::parse(&with_cloud) {
        Ok(config) => config.validate(),
        Err(e) => panic!("parses: {e:?}"),
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for field in ["provider.local", "floating_ip", "route"] {
        assert!(fields.contains(&field), "{field} in {problems:?}");
    }
    assert!(problems
        .iter()
        .any(|p| p.field == "floating_ip" && p.message.contains("moves no address")));

    let no_probe = none_example().replace("[health_probe]\nlisten = \"10.0.0.1:8080\"\n", "");
    let config = Config::parse(&no_probe).expect("parses");
    assert!(config.validate().is_empty());
    let warnings = config.warnings();
    assert!(
        warnings.iter().any(|w| w.field == "health_probe"),
        "{warnings:?}"
    );
}

#[test]
fn tracks_and_the_probe_are_validated_with_the_rest() {
    let text = format!(
            "{EXAMPLE}\n[[track]]\nname = \"fw\"\ncommand = [\"fwcheck\"]\n\n[health_probe]\nlisten = \"10.0.0.1:0\"\n"
        );
    let fields: Vec<String> = Config::parse(&text)
        .expect("parses")
        .validate()
        .into_iter()
        .map(|p| p.field)
        .collect();
    assert!(
        fields.contains(&"track[0].command".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"health_probe.listen".to_string()),
        "{fields:?}"
    );
    let (field, _) = parse_err(&format!("{EXAMPLE}\n[[track]]\nname = \"fw\"\nfalls = 3\n"));
    assert_eq!(field, "track[0].falls");
}

#[test]
fn floating_ip_that_is_no_spare_address_is_refused() {
    let addr = "address = \"10.0.0.100\"";
    for (address, why) in [
        (
            "10.0.0.1",
            "this node's own address (keepalive.path[0].bind)",
        ),
        (
            "10.0.0.2",
            "the peer's own address (keepalive.path[0].peer)",
        ),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.18", "multicast"),
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("10.0.0.0", "network address of its /24"),
        ("10.0.0.255", "broadcast address of its /24"),
    ] {
        let problems = problems_after(&[(addr, &format!("address = \"{address}\""))]);
        assert_eq!(problems.len(), 1, "{address}: {problems:?}");
        assert_eq!(problems[0].field, "floating_ip[0].address", "{address}");
        assert!(
            problems[0].message.contains(why),
            "{address}: {}",
            problems[0].message
        );
        assert!(
            problems[0].message.contains("spare address"),
            "names the fix"
        );
    }
    // A /32 (the cloud default) has no network or broadcast address of its own.
    assert!(fields_after(&[
        (addr, "address = \"10.0.0.255\""),
        ("prefix_len = 24", "prefix_len = 32")
    ])
    .is_empty());
}

#[test]
fn keepalive_timing_and_paths_that_cannot_work_are_refused() {
    assert_eq!(
        fields_after(&[("dead_interval = \"500ms\"", "dead_interval = \"99999999h\"")]),
        ["keepalive.dead_interval"]
    );
    assert!(fields_after(&[("dead_interval = \"500ms\"", "dead_interval = \"1h\"")]).is_empty());
    assert_eq!(
        fields_after(&[("bind = \"10.0.0.1:5405\"", "bind = \"10.0.0.1:0\"")]),
        ["keepalive.path[0].bind"]
    );
    for peer in ["255.255.255.255", "0.0.0.0", "239.1.2.3"] {
        assert_eq!(
            fields_after(&[(
                "peer = \"10.0.0.2:5405\"",
                &format!("peer = \"{peer}:5405\"")
            )]),
            ["keepalive.path[0].peer"],
            "{peer}"
        );
    }
    let second = "[[keepalive.path]]\nname = \"mgmt\"\nbind = \"10.1.0.1:5405\"\npeer = \"10.0.0.2:5406\"\n\n[provider]";
    let problems = problems_after(&[("[provider]", second)]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "keepalive.path[1].peer");
    assert!(
        problems[0].message.contains("peer of another path"),
        "{}",
        problems[0].message
    );
}

#[test]
fn preempt_hold_down_of_zero_is_refused_unless_preemption_is_off() {
    let zero = (
        "priority = 200",
        "priority = 200\npreempt_hold_down = \"0s\"",
    );
    assert_eq!(fields_after(&[zero]), ["node.preempt_hold_down"]);
    let off = (
        "priority = 200",
        "priority = 200\npreempt = false\npreempt_hold_down = \"0s\"",
    );
    assert!(fields_after(&[off]).is_empty());
}

#[test]
fn interface_names_follow_linux_rules() {
    for bad in [
        "../../x",
        "a/b",
        "",
        ".",
        "..",
        "eth 0",
        "eth0:1",
        "0123456789abcdef",
        "eth\\n0",
    ] {
        let problems =
            problems_after(&[("interface = \"lan0\"", &format!("interface = \"{bad}\""))]);
        assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
        assert_eq!(problems[0].field, "provider.local.interface");
        assert!(problems[0].message.contains("ip link"), "names the fix");
    }
    for good in ["lan0", "eth0.100", "br-lan", "veth_a@x", "0123456789abcde"] {
        assert!(is_interface_name(good), "{good}");
    }
}

#[test]
fn paths_must_be_absolute() {
    for (from, to, field) in [
        (
            "key_file = \"/nonexistent/key\"",
            "key_file = \"key\"",
            "cluster.key_file",
        ),
        (
            "priority = 200",
            "priority = 200\nstate_dir = \"\"",
            "node.state_dir",
        ),
        (
            "priority = 200",
            "priority = 200\nstate_dir = \"var/state\"",
            "node.state_dir",
        ),
        (
            "[provider]",
            "[status]\nsocket = \"cloudha.sock\"\n[provider]",
            "status.socket",
        ),
        (
            "[provider]",
            "[status]\nsocket = \"\"\n[provider]",
            "status.socket",
        ),
        (
            "[provider]",
            "[status]\nsocket = \"/run/cloudha/\"\n[provider]",
            "status.socket",
        ),
        (
            "[provider]",
            "[journal]\npath = \"journal.jsonl\"\n[provider]",
            "journal.path",
        ),
    ] {
        let problems = problems_after(&[(from, to)]);
        assert_eq!(problems.len(), 1, "{to}: {problems:?}");
        assert_eq!(problems[0].field, field, "{to}");
        assert!(
            problems[0].message.contains("absolute path")
                || problems[0].message.contains("names a directory"),
            "{}",
            problems[0].message
        );
    }
    let long = format!(
        "[status]\nsocket = \"/run/{}.sock\"\n[provider]",
        "s".repeat(120)
    );
    let problems = problems_after(&[("[provider]", &long)]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("at most 107"),
        "{}",
        problems[0].message
    );
    assert!(problems[0].message.len() < 250, "the path is cut short");
}

#[test]
fn metrics_beyond_loopback_is_a_warning_not_a_problem() {
    let config = Config::parse(EXAMPLE).expect("parses");
    assert!(config.warnings().is_empty());
    let text = format!("{EXAMPLE}\n[metrics]\nlisten = \"0.0.0.0:9465\"\n");
    let config = Config::parse(&text).expect("parses");
    assert!(config.validate().is_empty());
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].field, "metrics.listen");
    let text = format!("{EXAMPLE}\n[metrics]\nenabled = false\nlisten = \"0.0.0.0:9465\"\n");
    assert!(Config::parse(&text).expect("parses").warnings().is_empty());
}

#[test]
fn errors_never_echo_a_source_line_or_a_huge_value() {
    // Not TOML at all, as when a password file is passed by mistake.
    let (field, message) = parse_err("root:$6$secrethash:19000:0:99999:7:::\n");
    assert_eq!(field, ".");
    assert!(!message.contains("secrethash"), "{message}");
    assert!(message.contains("line 1"), "{message}");
    // A valid line followed by a broken one: the position, not the text.
    let (_, message) = parse_err("[cluster]\nid = 1\nkey_file = secret-value-here\n");
    assert!(!message.contains("secret-value-here"), "{message}");
    assert!(message.contains("line 3"), "{message}");
    // A 5 MB value in a typed field comes back as a short excerpt.
    let huge = "9".repeat(5_000_000);
    let text = EXAMPLE.replace("\"100ms\"", &format!("\"{huge}x\""));
    let (field, message) = parse_err(&text);
    assert_eq!(field, "keepalive.interval");
    assert!(message.len() < 400, "{} bytes", message.len());
    let text = EXAMPLE.replace("name = \"fw-a\"", &format!("name = {huge}"));
    let (_, message) = parse_err(&text);
    assert!(message.len() < 400, "{} bytes", message.len());
    let text = EXAMPLE.replace("\"lan0\"", &format!("\"{huge}\""));
    let problems = Config::parse(&text).expect("parses").validate();
    assert!(
        problems.iter().all(|p| p.message.len() < 400),
        "{problems:?}"
    );
}

#[test]
fn files_on_disk_are_checked_by_config_check() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    let text = EXAMPLE.replace(
            "[provider]",
            &format!(
                "[status]\nsocket = \"{0}/run/cloudha.sock\"\n[hooks]\non_active = [\"{0}/hook\"]\n[provider]",
                base.display()
            ),
        )
        .replace("priority = 200", &format!("priority = 200\nstate_dir = \"{}/state\"", base.display()));
    let config = Config::parse(&text).expect("parses");
    let fields = || -> Vec<String> { config.check_files().into_iter().map(|p| p.field).collect() };
    // Missing directories are created at start; a missing hook program is not.
    assert_eq!(fields(), ["hooks.on_active"]);
    let hook = base.join("hook");
    std::fs::write(&hook, "#!/bin/sh\n").expect("write hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(fields(), ["hooks.on_active"], "not executable");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert!(fields().is_empty());

    // A regular file where the socket goes is never deleted: refused.
    let run = base.join("run");
    std::fs::create_dir(&run).expect("mkdir");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::write(run.join("cloudha.sock"), "precious").expect("write");
    let problems = config.check_files();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "status.socket");
    assert!(
        problems[0].message.contains("is not a socket"),
        "{}",
        problems[0].message
    );
    std::fs::remove_file(run.join("cloudha.sock")).expect("rm");
    // A socket directory others can write is refused.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    assert_eq!(fields(), ["status.socket"]);
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // A state directory others can write is refused.
    let state = base.join("state");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o757)).expect("chmod");
    assert_eq!(fields(), ["node.state_dir"]);
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert!(fields().is_empty());
}

#[test]
fn digest_ignores_node_specific_settings() {
    let a = Config::parse(EXAMPLE).expect("parses");
    let b_text = EXAMPLE
        .replace("name = \"fw-a\"", "name = \"X\"")
        .replace("priority = 200", "priority = 100")
        .replace("10.0.0.1:5405", "10.0.0.9:5405");
    let b = Config::parse(&b_text).expect("parses");
    assert_eq!(a.ha_digest(), b.ha_digest());
    let c = Config::parse(&EXAMPLE.replace("10.0.0.100", "10.0.0.101")).expect("parses");
    assert_ne!(a.ha_digest(), c.ha_digest());
}

#[test]
fn durations_parse_and_print() {
    assert_eq!(
        ConfigDuration::parse("250ms").map(|d| d.0),
        Ok(Duration::from_millis(250))
    );
    assert_eq!(
        ConfigDuration::parse("2m").map(|d| d.0),
        Ok(Duration::from_secs(120))
    );
    assert!(ConfigDuration::parse("5").is_err());
    assert!(ConfigDuration::parse("ms").is_err());
    assert!(ConfigDuration::parse("99999999999999999999s").is_err());
    assert_eq!(
        ConfigDuration(Duration::from_millis(1500)).to_string(),
        "1500ms"
    );
    assert_eq!(ConfigDuration(Duration::from_secs(3)).to_string(), "3s");
}

fn azure_example(failover: &str) -> Config {
    let text = EXAMPLE.replace(
            "[provider]\nkind = \"local\"\n\n[provider.local]\ninterface = \"lan0\"\n",
            &format!(
                "[provider]\nkind = \"azure\"\n\n[provider.azure]\npeer_nic = \"/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkInterfaces/fw-b-lan\"\n{failover}"
            ),
        );
    assert!(
        text.contains("kind = \"azure\""),
        "the example's provider table moved"
    );
    Config::parse(&text).expect("azure example parses")
}

#[test]
fn the_default_deadline_fits_an_azure_two_step_move() {
    let config = azure_example("");
    assert_eq!(config.failover.deadline.0, Duration::from_secs(300));
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn an_azure_deadline_below_two_nic_updates_is_warned_about() {
    let config = azure_example("\n[failover]\ndeadline = \"180s\"\n");
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].field, "failover.deadline");
    assert!(
        warnings[0].message.contains("use at least 300s"),
        "{}",
        warnings[0].message
    );
    // Usable, so a warning and not a refusal.
    assert!(config
        .validate()
        .iter()
        .all(|p| p.field != "failover.deadline"));
}

#[test]
fn a_short_deadline_is_fine_where_the_cloud_is_fast() {
    let text = EXAMPLE.to_string() + "\n[failover]\ndeadline = \"60s\"\n";
    let config = Config::parse(&text).expect("parses");
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}
