//! scripts/setup-azure.sh and scripts/setup-aws.sh against recording, stateful fakes of `az` and
//! `aws` (tests/fakes/, first on PATH): the exact commands issued, what the roles and policies
//! grant (== the shared lists in permissions.rs), the scopes of the role assignments,
//! idempotence (a second run changes nothing and says so), --dry-run (runs nothing), the stop at
//! the first failing command, and that the written configs pass `cloudha config check`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cloudha_provider_aws::permissions as aws_permissions;
use cloudha_provider_azure::config::MoveMode;
use cloudha_provider_azure::permissions as azure_permissions;
use serde_json::{json, Value};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fake cloud: its state file, the log of every CLI invocation, and an output directory.
struct FakeCloud {
    dir: tempfile::TempDir,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

impl FakeCloud {
    fn new(state: Value) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("state.json"), state.to_string()).expect("write state");
        std::fs::write(dir.path().join("log"), "").expect("write log");
        Self { dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn key(&self) -> String {
        self.out().join("key").display().to_string()
    }

    fn run(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let path = format!(
            "{}:{}",
            repo().join("tests/fakes").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out: Output = Command::new("bash")
            .arg(repo().join("scripts").join(script))
            .args(args)
            .env("PATH", path)
            .env("FAKE_CLOUD_STATE", self.dir.path().join("state.json"))
            .env("FAKE_CLOUD_LOG", self.dir.path().join("log"))
            .env("CLOUDHA_SETUP_RETRY_WAIT", "0")
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .output()
            .expect("run the setup script");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Every CLI invocation so far, as argv.
    fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .expect("read log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line"))
            .collect()
    }

    fn clear_log(&self) {
        std::fs::write(self.dir.path().join("log"), "").expect("clear log");
    }

    fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.path().join("state.json")).expect("state");
        serde_json::from_str(&text).expect("state json")
    }

    /// `cloudha config check` on each written config.
    fn check_configs(&self, names: &[&str]) -> Vec<cloudha::config::Config> {
        names
            .iter()
            .map(|name| {
                let path = self.out().join(format!("{name}.toml"));
                let out = Command::new(env!("CARGO_BIN_EXE_cloudha"))
                    .args(["config", "check"])
                    .arg(&path)
                    .output()
                    .expect("run cloudha");
                assert!(
                    out.status.success(),
                    "{}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = std::fs::read_to_string(&path).expect("read config");
                cloudha::config::Config::parse(&text).expect("parse config")
            })
            .collect()
    }

    fn assert_key_written(&self) {
        let key = self.out().join("key");
        let meta = std::fs::metadata(&key).expect("key written");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "key mode");
        let text = std::fs::read_to_string(&key).expect("read key");
        assert!(
            text.trim().len() >= 40,
            "32 random bytes in base64: {text:?}"
        );
    }
}

/// A mutating call: what a second run and --dry-run must not issue.
fn is_mutating(call: &[String]) -> bool {
    let words: Vec<&str> = call
        .iter()
        .map(String::as_str)
        .take_while(|w| !w.starts_with("--"))
        .collect();
    match words.first() {
        Some(&"az") => matches!(words.last(), Some(&"create" | &"update" | &"assign")),
        Some(&"aws") => !["get-", "describe-", "list-"]
            .iter()
            .any(|p| words.get(2).is_some_and(|op| op.starts_with(p))),
        _ => true,
    }
}

/// Temporary file arguments replaced by their base names, so commands compare exactly.
fn normalized(call: &[String]) -> Vec<String> {
    call.iter()
        .map(|arg| {
            for prefix in ["@", "file://"] {
                if let Some(path) = arg.strip_prefix(prefix) {
                    let name = Path::new(path)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("");
                    return format!("{prefix}{name}");
                }
            }
            arg.clone()
        })
        .collect()
}

fn mutating(calls: &[Vec<String>]) -> Vec<Vec<String>> {
    calls
        .iter()
        .filter(|c| is_mutating(c))
        .map(|c| normalized(c))
        .collect()
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

// ---- Azure ---------------------------------------------------------------------------------------

const SUB: &str = "11111111-2222-3333-4444-555555555555";

fn arm(rg: &str, kind: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/{kind}/{name}")
}

fn nic_id(name: &str) -> String {
    arm("rg-fw", "Microsoft.Network/networkInterfaces", name)
}

fn vm_id(name: &str) -> String {
    arm("rg-fw", "Microsoft.Compute/virtualMachines", name)
}

fn vnet_id() -> String {
    arm("rg-net", "Microsoft.Network/virtualNetworks", "vnet-hub")
}

fn subnet_id() -> String {
    vnet_id() + "/subnets/lan"
}

/// The resources a floating ipConfiguration can reference beyond subnet, public IP and NSG, one
/// of each kind --linked takes (in another resource group than the NICs, like a shared LB).
fn asg_id() -> String {
    arm(
        "rg-net",
        "Microsoft.Network/applicationSecurityGroups",
        "asg-fw",
    )
}

fn lb_id() -> String {
    arm("rg-net", "Microsoft.Network/loadBalancers", "lb-gw")
}

fn agw_id() -> String {
    arm("rg-net", "Microsoft.Network/applicationGateways", "agw-web")
}

fn route_table_id() -> String {
    arm("rg-net", "Microsoft.Network/routeTables", "rt-workloads")
}

fn pip_id() -> String {
    arm("rg-fw", "Microsoft.Network/publicIPAddresses", "pip-fw")
}

fn nsg_id() -> String {
    arm(
        "rg-fw",
        "Microsoft.Network/networkSecurityGroups",
        "nsg-lan",
    )
}

/// Two VMs with their LAN NICs (IP forwarding off), a VNet in another resource group, a route
/// table, a public IP, an NSG, and an ASG, a load balancer and an application gateway; no
/// identity, role or assignment yet.
fn azure_world() -> Value {
    let nic = |ip: &str| {
        json!({"ipForwarding": false,
               "ipConfigs": [{"name": "ipconfig1", "privateIPAddress": ip, "primary": true}]})
    };
    json!({
        "subscription": SUB,
        "resourceGroups": ["rg-fw", "rg-net"],
        "identities": {},
        "roleDefinitions": [],
        "roleAssignments": [],
        "vms": {vm_id("fw-a"): {"identities": []}, vm_id("fw-b"): {"identities": []}},
        "nics": {nic_id("fw-a-lan"): nic("10.0.1.10"), nic_id("fw-b-lan"): nic("10.0.1.11")},
        "subnets": [subnet_id()],
        "routeTables": [route_table_id()],
        "publicIps": [pip_id()],
        "nsgs": [nsg_id()],
        "vnets": [vnet_id()],
        "linked": [asg_id(), lb_id(), agw_id()],
    })
}

fn azure_args(cloud: &FakeCloud) -> Vec<String> {
    let out = cloud.out().display().to_string();
    let key = cloud.key();
    argv(&[
        "--resource-group",
        "rg-fw",
        "--vnet-resource-group",
        "rg-net",
        "--vnet",
        "vnet-hub",
        "--subnet",
        "lan",
        "--vm-a",
        "fw-a",
        "--vm-b",
        "fw-b",
        "--nic-a",
        "fw-a-lan",
        "--nic-b",
        "fw-b-lan",
        "--floating-ip",
        "10.0.1.100,pip-fw",
        "--floating-ip",
        "10.0.1.101",
        "--route",
        "rt-workloads,default-via-fw,0.0.0.0/0",
        "--nsg",
        "nsg-lan",
        "--cluster-id",
        "42",
        "--out",
        &out,
        "--key-path",
        &key,
    ])
}

fn run_azure(cloud: &FakeCloud, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = azure_args(cloud);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cloud.run("setup-azure.sh", &args, env)
}

/// The identity the fake created: (id, principalId, clientId).
fn identity(state: &Value) -> (String, String, String) {
    let ident = &state["identities"]["rg-fw/cloudha-pair"];
    let field = |k: &str| ident[k].as_str().expect("identity field").to_string();
    (field("id"), field("principalId"), field("clientId"))
}

/// One fresh setup, checked from every side (each script run costs ~40 fake CLI calls).
#[test]
fn azure_fresh_pair() {
    let cloud = FakeCloud::new(azure_world());
    run_azure(&cloud, &[], &[]).assert_ok();
    azure_setup_issues_exactly_the_commands_for_a_fresh_pair(&cloud);
    azure_roles_grant_the_shared_actions_at_the_narrowest_scopes(&cloud);
    azure_configs_pass_config_check_and_name_the_pair(&cloud);
    azure_dry_run_runs_nothing_and_prints_every_command(&cloud);
}

fn azure_setup_issues_exactly_the_commands_for_a_fresh_pair(cloud: &FakeCloud) {
    let state = cloud.state();
    let (identity_id, principal, _) = identity(&state);

    let assign = |role: &str, scope: &str| {
        argv(&[
            "az",
            "role",
            "assignment",
            "create",
            "--assignee-object-id",
            &principal,
            "--assignee-principal-type",
            "ServicePrincipal",
            "--role",
            role,
            "--scope",
            scope,
            "--output",
            "none",
        ])
    };
    let failover = "cloudha failover";
    let mut expected = vec![
        argv(&[
            "az",
            "identity",
            "create",
            "--resource-group",
            "rg-fw",
            "--name",
            "cloudha-pair",
            "--output",
            "none",
        ]),
        argv(&[
            "az",
            "role",
            "definition",
            "create",
            "--role-definition",
            "@cloudha-role.json",
            "--output",
            "none",
        ]),
        argv(&[
            "az",
            "role",
            "definition",
            "create",
            "--role-definition",
            "@cloudha-operations-role.json",
            "--output",
            "none",
        ]),
        assign(failover, &nic_id("fw-a-lan")),
        assign(failover, &nic_id("fw-b-lan")),
        assign(failover, &subnet_id()),
        assign(failover, &vm_id("fw-a")),
        assign(failover, &vm_id("fw-b")),
        assign(failover, &route_table_id()),
        assign(failover, &pip_id()),
        assign(failover, &nsg_id()),
        assign(
            "cloudha failover operations",
            &format!("/subscriptions/{SUB}"),
        ),
    ];
    for vm in ["fw-a", "fw-b"] {
        expected.push(argv(&[
            "az",
            "vm",
            "identity",
            "assign",
            "--resource-group",
            "rg-fw",
            "--name",
            vm,
            "--identities",
            &identity_id,
            "--output",
            "none",
        ]));
    }
    for nic in ["fw-a-lan", "fw-b-lan"] {
        expected.push(argv(&[
            "az",
            "network",
            "nic",
            "update",
            "--resource-group",
            "rg-fw",
            "--name",
            nic,
            "--ip-forwarding",
            "true",
            "--output",
            "none",
        ]));
    }
    expected.push(argv(&[
        "az",
        "network",
        "nic",
        "ip-config",
        "create",
        "--resource-group",
        "rg-fw",
        "--nic-name",
        "fw-a-lan",
        "--name",
        "cloudha-10-0-1-100",
        "--private-ip-address",
        "10.0.1.100",
        "--subnet",
        &subnet_id(),
        "--public-ip-address",
        &pip_id(),
        "--output",
        "none",
    ]));
    expected.push(argv(&[
        "az",
        "network",
        "nic",
        "ip-config",
        "create",
        "--resource-group",
        "rg-fw",
        "--nic-name",
        "fw-a-lan",
        "--name",
        "cloudha-10-0-1-101",
        "--private-ip-address",
        "10.0.1.101",
        "--subnet",
        &subnet_id(),
        "--output",
        "none",
    ]));
    assert_eq!(mutating(&cloud.calls()), expected);

    // The state the commands left: the identity on both VMs, forwarding on, the IPs on NIC A.
    for vm in ["fw-a", "fw-b"] {
        assert_eq!(state["vms"][vm_id(vm)]["identities"], json!([identity_id]));
    }
    for nic in ["fw-a-lan", "fw-b-lan"] {
        assert_eq!(state["nics"][nic_id(nic)]["ipForwarding"], json!(true));
    }
    let on_a: Vec<&str> = state["nics"][nic_id("fw-a-lan")]["ipConfigs"]
        .as_array()
        .expect("ipConfigs")
        .iter()
        .filter_map(|c| c["privateIPAddress"].as_str())
        .collect();
    assert_eq!(on_a, ["10.0.1.10", "10.0.1.100", "10.0.1.101"]);
}

/// Checked on the fresh pair that [`azure_fresh_pair`] set up.
fn azure_roles_grant_the_shared_actions_at_the_narrowest_scopes(cloud: &FakeCloud) {
    let state = cloud.state();
    let (_, principal, _) = identity(&state);

    let role_actions = |name: &str| -> BTreeSet<String> {
        let role = state["roleDefinitions"]
            .as_array()
            .expect("roles")
            .iter()
            .find(|r| r["roleName"] == name)
            .unwrap_or_else(|| panic!("role {name} not created"));
        assert_eq!(
            role["assignableScopes"],
            json!([format!("/subscriptions/{SUB}")])
        );
        role["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .map(|a| a.as_str().expect("action").to_string())
            .collect()
    };
    let shared: BTreeSet<String> = azure_permissions::action_names()
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(role_actions("cloudha failover"), shared);
    let subscription_scoped: BTreeSet<String> = azure_permissions::FAILOVER_ACTIONS
        .iter()
        .filter(|a| a.scope == azure_permissions::Scope::Subscription)
        .map(|a| a.action.to_string())
        .collect();
    assert_eq!(
        role_actions("cloudha failover operations"),
        subscription_scoped
    );

    assert_eq!(assignments(&state, &principal), base_assignments(&[]));
    // Two-step (the default) never needs the VNet: the role is not assigned there.
    assert!(
        !assignments(&state, &principal)
            .iter()
            .any(|(_, scope)| scope.eq_ignore_ascii_case(&vnet_id())),
        "two_step assigned a role on the VNet"
    );
}

/// (role, scope) of every role assignment in the fake, each checked to be the identity's.
fn assignments(state: &Value, principal: &str) -> BTreeSet<(String, String)> {
    state["roleAssignments"]
        .as_array()
        .expect("assignments")
        .iter()
        .map(|a| {
            assert_eq!(a["principalId"], json!(principal));
            (
                a["role"].as_str().expect("role").to_string(),
                a["scope"].as_str().expect("scope").to_string(),
            )
        })
        .collect()
}

/// The assignments of a setup with [`azure_args`], plus "cloudha failover" on `extra` scopes.
fn base_assignments(extra: &[String]) -> BTreeSet<(String, String)> {
    let failover = |scope: String| ("cloudha failover".to_string(), scope);
    let mut expected = BTreeSet::from([
        failover(nic_id("fw-a-lan")),
        failover(nic_id("fw-b-lan")),
        failover(subnet_id()),
        failover(vm_id("fw-a")),
        failover(vm_id("fw-b")),
        failover(route_table_id()),
        failover(pip_id()),
        failover(nsg_id()),
        (
            "cloudha failover operations".to_string(),
            format!("/subscriptions/{SUB}"),
        ),
    ]);
    expected.extend(extra.iter().cloned().map(failover));
    expected
}

/// The scopes of the `az role assignment create` calls, in the order they were made.
fn created_assignment_scopes(cloud: &FakeCloud) -> Vec<String> {
    cloud
        .calls()
        .iter()
        .filter(|c| c.len() > 3 && c[1..4] == ["role", "assignment", "create"])
        .filter_map(|c| {
            let at = c.iter().position(|a| a == "--scope")?;
            c.get(at + 1).cloned()
        })
        .collect()
}

/// The `[provider.azure]` table of a written config, as text (up to the next table).
fn provider_azure_table(cloud: &FakeCloud, name: &str) -> String {
    let text = std::fs::read_to_string(cloud.out().join(format!("{name}.toml"))).expect("config");
    let start = text
        .find("\n[provider.azure]\n")
        .unwrap_or_else(|| panic!("{name}.toml has no [provider.azure]:\n{text}"));
    let table = &text[start + 1..];
    let end = table[1..].find("\n[").map_or(table.len(), |e| e + 1);
    table[..end].to_string()
}

/// Checked on the fresh pair that [`azure_fresh_pair`] set up.
fn azure_configs_pass_config_check_and_name_the_pair(cloud: &FakeCloud) {
    let (_, _, client_id) = identity(&cloud.state());
    let configs = cloud.check_configs(&["fw-a", "fw-b"]);
    cloud.assert_key_written();
    for (config, own, peer, own_ip, peer_ip, priority) in [
        (&configs[0], "fw-a", "fw-b", "10.0.1.10", "10.0.1.11", 200),
        (&configs[1], "fw-b", "fw-a", "10.0.1.11", "10.0.1.10", 100),
    ] {
        assert_eq!(config.cluster.id, 42);
        assert_eq!(config.cluster.key_file, cloud.out().join("key"));
        assert_eq!(
            (config.node.name.as_str(), config.peer.name.as_str()),
            (own, peer)
        );
        assert_eq!(config.node.priority, priority);
        let path = &config.keepalive.paths[0];
        assert_eq!(path.bind.to_string(), format!("{own_ip}:5405"));
        assert_eq!(path.peer.to_string(), format!("{peer_ip}:5405"));
        let azure = config.provider.azure.as_ref().expect("[provider.azure]");
        assert_eq!(
            azure.own_nic.as_deref(),
            Some(nic_id(&format!("{own}-lan")).as_str())
        );
        assert_eq!(azure.peer_nic, nic_id(&format!("{peer}-lan")));
        assert_eq!(
            azure.identity_client_id.as_deref(),
            Some(client_id.as_str())
        );
        assert_eq!(azure.move_mode, MoveMode::TwoStep);
        assert!(
            !provider_azure_table(cloud, own).contains("move_mode"),
            "two_step is the default and is not written"
        );
        let ips: Vec<String> = config
            .floating_ips
            .iter()
            .map(|f| f.address.to_string())
            .collect();
        assert_eq!(ips, ["10.0.1.100", "10.0.1.101"]);
        assert_eq!(
            config.floating_ips[0].public_ip.as_deref(),
            Some(pip_id().as_str())
        );
        assert_eq!(config.routes.len(), 1);
        assert_eq!(config.routes[0].table, route_table_id());
        assert_eq!(
            (
                config.routes[0].name.as_str(),
                config.routes[0].prefix.as_str()
            ),
            ("default-via-fw", "0.0.0.0/0")
        );
    }
}

#[test]
fn azure_second_run_changes_nothing_and_says_so() {
    let cloud = FakeCloud::new(azure_world());
    run_azure(&cloud, &[], &[]).assert_ok();
    let config = std::fs::read(cloud.out().join("fw-a.toml")).expect("config");
    let key = std::fs::read(cloud.out().join("key")).expect("key");
    cloud.clear_log();

    let second = run_azure(&cloud, &[], &[]);
    second.assert_ok();
    assert!(!cloud.calls().is_empty(), "the second run queries");
    assert_eq!(mutating(&cloud.calls()), Vec::<Vec<String>>::new());
    for line in [
        "identity cloudha-pair exists: unchanged",
        "role \"cloudha failover\" exists with the same actions: unchanged",
        "role \"cloudha failover\" on subnet vnet-hub/lan exists: unchanged",
        "identity cloudha-pair on VM fw-b: unchanged",
        "IP forwarding on NIC fw-a-lan: unchanged",
        "floating IP 10.0.1.100 on NIC fw-a-lan (ipConfiguration cloudha-10-0-1-100): unchanged",
        "done: nothing changed",
    ] {
        assert!(
            second.stdout.contains(line),
            "no {line:?} in:\n{}",
            second.stdout
        );
    }
    assert_eq!(
        std::fs::read(cloud.out().join("fw-a.toml")).expect("config"),
        config
    );
    assert_eq!(
        std::fs::read(cloud.out().join("key")).expect("key"),
        key,
        "the key is kept"
    );
}

/// Compared with the real run on a fresh pair: the same changes, in the same order.
fn azure_dry_run_runs_nothing_and_prints_every_command(fresh: &FakeCloud) {
    let real: Vec<String> = mutating(&fresh.calls())
        .iter()
        .map(|c| c[..4].join(" "))
        .collect();

    let cloud = FakeCloud::new(azure_world());
    let dry = run_azure(&cloud, &["--dry-run"], &[]);
    dry.assert_ok();
    assert!(
        cloud.calls().is_empty(),
        "--dry-run invoked az: {:?}",
        cloud.calls()
    );
    assert!(
        !cloud.out().exists(),
        "--dry-run created the output directory"
    );
    // The same changes as a real run on a fresh pair, in the same order.
    let printed: Vec<String> = dry
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would run: az "))
        .map(|l| format!("az {}", l.split(' ').take(3).collect::<Vec<_>>().join(" ")))
        .collect();
    assert_eq!(printed, real);
    assert!(dry
        .stdout
        .contains("would query: az identity list --resource-group rg-fw"));
    assert!(dry
        .stdout
        .contains(&format!("would write: {}/fw-a.toml", cloud.out().display())));
    assert!(dry.stdout.contains("dry run:"), "{}", dry.stdout);
}

#[test]
fn azure_first_failing_command_stops_the_script_with_the_step_and_command() {
    let cloud = FakeCloud::new(azure_world());
    let failed = run_azure(
        &cloud,
        &[],
        &[
            ("FAKE_CLOUD_FAIL", "vm identity assign"),
            (
                "FAKE_CLOUD_FAIL_MESSAGE",
                "ERROR: (AuthorizationFailed) The client does not have authorization to perform action 'Microsoft.Compute/virtualMachines/write'",
            ),
        ],
    );
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert!(
        failed
            .stderr
            .contains("step \"identity on VM fw-a\" failed"),
        "{}",
        failed.stderr
    );
    assert!(
        failed
            .stderr
            .contains("command: az vm identity assign --resource-group rg-fw --name fw-a"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("AuthorizationFailed"),
        "{}",
        failed.stderr
    );
    // Nothing after the failed command ran.
    let calls = cloud.calls();
    assert_eq!(
        calls.last().map(|c| c[1..4].join(" ")),
        Some("vm identity assign".to_string())
    );
    assert!(!cloud.out().exists());
}

#[test]
fn azure_replication_delay_is_retried() {
    let cloud = FakeCloud::new(azure_world());
    run_azure(
        &cloud,
        &[],
        &[
            ("FAKE_CLOUD_FAIL", "role assignment create"),
            ("FAKE_CLOUD_FAIL_TIMES", "2"),
            (
                "FAKE_CLOUD_FAIL_MESSAGE",
                "ERROR: (PrincipalNotFound) Principal 818e does not exist in the directory",
            ),
        ],
    )
    .assert_ok();
    let creates = cloud
        .calls()
        .iter()
        .filter(|c| c[1..4] == ["role", "assignment", "create"])
        .count();
    assert_eq!(creates, 9 + 2, "9 assignments, the first one tried 3 times");
    assert_eq!(
        cloud.state()["roleAssignments"].as_array().map(Vec::len),
        Some(9)
    );
}

#[test]
fn azure_floating_ip_held_by_the_peer_is_left_there() {
    let mut world = azure_world();
    world["nics"][nic_id("fw-b-lan")]["ipConfigs"]
        .as_array_mut()
        .expect("ipConfigs")
        .push(json!({"name": "floating", "privateIPAddress": "10.0.1.100", "primary": false}));
    let cloud = FakeCloud::new(world);
    let run = run_azure(&cloud, &[], &[]);
    run.assert_ok();
    assert!(
        run.stdout.contains("floating IP 10.0.1.100 on NIC fw-b-lan (ipConfiguration floating; that node is active): unchanged"),
        "{}",
        run.stdout
    );
    let creates: Vec<Vec<String>> = mutating(&cloud.calls())
        .into_iter()
        .filter(|c| c[3] == "ip-config")
        .collect();
    assert_eq!(creates.len(), 1, "only 10.0.1.101 is created: {creates:?}");
    assert!(creates[0].contains(&"10.0.1.101".to_string()));
}

#[test]
fn azure_role_with_other_actions_is_updated_to_the_shared_list() {
    let mut world = azure_world();
    world["roleDefinitions"] = json!([{
        "name": "0d0d0d0d-0000-0000-0000-000000000000",
        "roleName": "cloudha failover",
        "actions": ["Microsoft.Network/networkInterfaces/read"],
        "assignableScopes": [format!("/subscriptions/{SUB}")],
    }]);
    let cloud = FakeCloud::new(world);
    let run = run_azure(&cloud, &[], &[]);
    run.assert_ok();
    assert!(
        run.stdout
            .contains("role \"cloudha failover\" has other actions"),
        "{}",
        run.stdout
    );
    let updates: Vec<Vec<String>> = mutating(&cloud.calls())
        .into_iter()
        .filter(|c| c[1..4] == ["role", "definition", "update"])
        .collect();
    assert_eq!(
        updates,
        vec![argv(&[
            "az",
            "role",
            "definition",
            "update",
            "--role-definition",
            "@cloudha-role.json",
            "--output",
            "none"
        ])]
    );
    let state = cloud.state();
    let actions: BTreeSet<&str> = state["roleDefinitions"][0]["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        actions,
        azure_permissions::action_names().into_iter().collect()
    );
}

#[test]
fn azure_atomic_move_mode_grants_the_vnet_and_writes_it_into_both_configs() {
    let cloud = FakeCloud::new(azure_world());
    run_azure(&cloud, &["--move-mode", "atomic"], &[]).assert_ok();
    let state = cloud.state();
    let (_, principal, _) = identity(&state);
    // moveIpConfigurations is authorized against the VNet: the one extra assignment is there,
    // right after the subnet's.
    assert_eq!(
        assignments(&state, &principal),
        base_assignments(&[vnet_id()])
    );
    let scopes = created_assignment_scopes(&cloud);
    assert_eq!(scopes.get(2..4), Some(&[subnet_id(), vnet_id()][..]));

    let configs = cloud.check_configs(&["fw-a", "fw-b"]);
    for (config, name) in configs.iter().zip(["fw-a", "fw-b"]) {
        let azure = config.provider.azure.as_ref().expect("[provider.azure]");
        assert_eq!(azure.move_mode, MoveMode::Atomic, "{name}");
        assert!(
            provider_azure_table(&cloud, name).contains("\nmove_mode = \"atomic\"\n"),
            "{name}: {}",
            provider_azure_table(&cloud, name)
        );
    }

    // Idempotent like every other step.
    cloud.clear_log();
    let second = run_azure(&cloud, &["--move-mode", "atomic"], &[]);
    second.assert_ok();
    assert_eq!(mutating(&cloud.calls()), Vec::<Vec<String>>::new());
    assert!(
        second
            .stdout
            .contains("role \"cloudha failover\" on VNet vnet-hub exists: unchanged"),
        "{}",
        second.stdout
    );
}

#[test]
fn azure_linked_resources_are_granted_where_they_are() {
    let cloud = FakeCloud::new(azure_world());
    let (asg, lb, agw) = (asg_id(), lb_id(), agw_id());
    // The load balancer twice (once in other case): one assignment.
    let lb_upper = lb.replace("lb-gw", "LB-GW");
    let run = run_azure(
        &cloud,
        &[
            "--move-mode",
            "two_step",
            "--linked",
            &asg,
            "--linked",
            &lb,
            "--linked",
            &agw,
            "--linked",
            &lb_upper,
        ],
        &[],
    );
    run.assert_ok();
    let state = cloud.state();
    let (_, principal, _) = identity(&state);
    assert_eq!(
        assignments(&state, &principal),
        base_assignments(&[asg.clone(), lb.clone(), agw.clone()])
    );
    let scopes = created_assignment_scopes(&cloud);
    assert_eq!(scopes.len(), 9 + 3, "{scopes:?}");
    assert!(
        !scopes.iter().any(|s| s.eq_ignore_ascii_case(&vnet_id())),
        "two_step assigned a role on the VNet: {scopes:?}"
    );
    for (config, name) in cloud
        .check_configs(&["fw-a", "fw-b"])
        .iter()
        .zip(["fw-a", "fw-b"])
    {
        let azure = config.provider.azure.as_ref().expect("[provider.azure]");
        assert_eq!(azure.move_mode, MoveMode::TwoStep, "{name}");
        assert!(!provider_azure_table(&cloud, name).contains("move_mode"));
    }

    // A second run finds each assignment and says so by the resource's kind and name.
    cloud.clear_log();
    let second = run_azure(
        &cloud,
        &["--linked", &asg, "--linked", &lb, "--linked", &agw],
        &[],
    );
    second.assert_ok();
    assert_eq!(mutating(&cloud.calls()), Vec::<Vec<String>>::new());
    for what in [
        "application security group asg-fw",
        "load balancer lb-gw",
        "application gateway agw-web",
    ] {
        let line = format!("role \"cloudha failover\" on {what} exists: unchanged");
        assert!(
            second.stdout.contains(&line),
            "no {line:?} in:\n{}",
            second.stdout
        );
    }
}

#[test]
fn setup_scripts_refuse_bad_flags_before_calling_the_cloud() {
    let cloud = FakeCloud::new(azure_world());
    // A valid set of required Azure flags, then the one bad flag of each case.
    let azure = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec![
            "--resource-group",
            "rg",
            "--vm-a",
            "a",
            "--vm-b",
            "b",
            "--nic-a",
            "na",
            "--nic-b",
            "nb",
            "--vnet",
            "vn",
            "--subnet",
            "s",
            "--floating-ip",
            "10.0.1.100",
        ];
        args.extend_from_slice(extra);
        args
    };
    let route_table =
        "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Network/routeTables/rt";
    let lb_pool =
        "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/lb/backendAddressPools/pool";
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "setup-azure.sh",
            azure(&["--role-name", "x'] || true"]),
            "--role-name: \"x'] || true\" is not valid: use 1-64 letters",
        ),
        (
            "setup-azure.sh",
            vec!["--resource-group", "rg"],
            "missing --vm-a",
        ),
        (
            "setup-azure.sh",
            azure(&["--floating-ip", "10.0.1.300"]),
            "--floating-ip: \"10.0.1.300\" is not valid: an IPv4 address",
        ),
        ("setup-azure.sh", vec!["--bogus", "x"], "unknown flag --bogus"),
        (
            "setup-azure.sh",
            azure(&["--move-mode", "atomically"]),
            "--move-mode: \"atomically\" is not valid: write two_step (the default) or atomic",
        ),
        (
            "setup-azure.sh",
            azure(&["--linked", route_table]),
            "its type is \"Microsoft.Network/routeTables\"; write the id of a Microsoft.Network/applicationSecurityGroups, loadBalancers or applicationGateways resource",
        ),
        (
            "setup-azure.sh",
            azure(&["--linked", "lb-gw"]),
            "--linked: \"lb-gw\" is not valid: write the ARM id",
        ),
        (
            "setup-azure.sh",
            azure(&["--linked", lb_pool]),
            "write the id of the load balancer itself, without \"/backendAddressPools/pool\"",
        ),
        (
            "setup-aws.sh",
            vec![
                "--instance-a",
                "i-0aaaaaaaaaaaaaaa1",
                "--instance-b",
                "i-0bbbbbbbbbbbbbbb2",
                "--eni-a",
                "eni-x",
                "--eni-b",
                "eni-0bbbbbbbbbbbbbbb2",
                "--floating-ip",
                "10.0.1.100",
            ],
            "--eni-a: \"eni-x\" is not valid: an ENI id",
        ),
        (
            "setup-aws.sh",
            vec![
                "--instance-a",
                "i-0aaaaaaaaaaaaaaa1",
                "--instance-b",
                "i-0bbbbbbbbbbbbbbb2",
                "--eni-a",
                "eni-0aaaaaaaaaaaaaaa1",
                "--eni-b",
                "eni-0bbbbbbbbbbbbbbb2",
                "--floating-ip",
                "10.0.1.100,eip-1",
            ],
            "\"eip-1\" is not valid: an Elastic IP allocation id",
        ),
    ];
    for (script, args, message) in cases {
        let run = cloud.run(script, &args, &[]);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    assert!(
        cloud.calls().is_empty(),
        "bad flags reached the cloud: {:?}",
        cloud.calls()
    );
    for script in ["setup-azure.sh", "setup-aws.sh"] {
        let help = cloud.run(script, &["--help"], &[]);
        help.assert_ok();
        assert!(
            help.stdout.contains("--dry-run") && help.stdout.contains("--out DIR"),
            "{}",
            help.stdout
        );
    }
    let help = cloud.run("setup-azure.sh", &["--help"], &[]);
    assert!(
        help.stdout.contains("--move-mode MODE") && help.stdout.contains("--linked ID"),
        "{}",
        help.stdout
    );
}

// ---- AWS -----------------------------------------------------------------------------------------

const INSTANCE_A: &str = "i-0aaaaaaaaaaaaaaa1";
const INSTANCE_B: &str = "i-0bbbbbbbbbbbbbbb2";
const ENI_A: &str = "eni-0aaaaaaaaaaaaaaa1";
const ENI_B: &str = "eni-0bbbbbbbbbbbbbbb2";
const EIP: &str = "eipalloc-0123456789abcdef0";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/cloudha-pair";
const PROFILE_ARN: &str = "arn:aws:iam::123456789012:instance-profile/cloudha-pair";

/// Two instances with their ENIs (source/dest check on), an unassociated Elastic IP, no IAM yet.
fn aws_world() -> Value {
    json!({
        "roles": {},
        "profiles": {},
        "associations": {},
        "instances": [INSTANCE_A, INSTANCE_B],
        "enis": {
            ENI_A: {"instance": INSTANCE_A, "sourceDestCheck": true, "primary": "10.0.1.10", "secondary": []},
            ENI_B: {"instance": INSTANCE_B, "sourceDestCheck": true, "primary": "10.0.1.11", "secondary": []},
        },
        "addresses": {EIP: {}},
    })
}

fn run_aws(cloud: &FakeCloud, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let out = cloud.out().display().to_string();
    let key = cloud.key();
    let floating = format!("10.0.1.100,{EIP}");
    let mut args = vec![
        "--region",
        "eu-west-1",
        "--instance-a",
        INSTANCE_A,
        "--instance-b",
        INSTANCE_B,
        "--eni-a",
        ENI_A,
        "--eni-b",
        ENI_B,
        "--floating-ip",
        &floating,
        "--route",
        "rtb-0123456789abcdef0,default,0.0.0.0/0",
        "--out",
        &out,
        "--key-path",
        &key,
    ];
    args.extend_from_slice(extra);
    cloud.run("setup-aws.sh", &args, env)
}

fn policy_file(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("deploy/aws").join(name)).expect("policy file");
    serde_json::from_str(&text).expect("policy json")
}

/// One fresh setup, checked from every side.
#[test]
fn aws_fresh_pair() {
    let cloud = FakeCloud::new(aws_world());
    run_aws(&cloud, &[], &[]).assert_ok();
    aws_setup_issues_exactly_the_commands_for_a_fresh_pair(&cloud);
    aws_role_policies_grant_the_shared_actions_and_the_selftest_self_grant(&cloud);
    aws_configs_pass_config_check_and_name_the_pair(&cloud);
    aws_dry_run_runs_nothing_and_prints_every_command(&cloud);
}

fn aws_setup_issues_exactly_the_commands_for_a_fresh_pair(cloud: &FakeCloud) {
    let region = ["--region", "eu-west-1"];
    let with_region = |words: &[&str]| {
        let mut call = argv(words);
        call.extend(argv(&region));
        call
    };
    let expected = vec![
        with_region(&[
            "aws",
            "iam",
            "create-role",
            "--role-name",
            "cloudha-pair",
            "--assume-role-policy-document",
            "file://cloudha-trust.json",
            "--description",
            "cloudha HA pair: moves floating IPs and routes to the active node",
        ]),
        with_region(&[
            "aws",
            "iam",
            "put-role-policy",
            "--role-name",
            "cloudha-pair",
            "--policy-name",
            "cloudha-failover",
            "--policy-document",
            "file://cloudha-policy.json",
        ]),
        with_region(&[
            "aws",
            "iam",
            "put-role-policy",
            "--role-name",
            "cloudha-pair",
            "--policy-name",
            "cloudha-selftest",
            "--policy-document",
            "file://cloudha-selftest.json",
        ]),
        with_region(&[
            "aws",
            "iam",
            "create-instance-profile",
            "--instance-profile-name",
            "cloudha-pair",
        ]),
        with_region(&[
            "aws",
            "iam",
            "add-role-to-instance-profile",
            "--instance-profile-name",
            "cloudha-pair",
            "--role-name",
            "cloudha-pair",
        ]),
        with_region(&[
            "aws",
            "ec2",
            "associate-iam-instance-profile",
            "--instance-id",
            INSTANCE_A,
            "--iam-instance-profile",
            "Name=cloudha-pair",
        ]),
        with_region(&[
            "aws",
            "ec2",
            "associate-iam-instance-profile",
            "--instance-id",
            INSTANCE_B,
            "--iam-instance-profile",
            "Name=cloudha-pair",
        ]),
        with_region(&[
            "aws",
            "ec2",
            "modify-network-interface-attribute",
            "--network-interface-id",
            ENI_A,
            "--no-source-dest-check",
        ]),
        with_region(&[
            "aws",
            "ec2",
            "modify-network-interface-attribute",
            "--network-interface-id",
            ENI_B,
            "--no-source-dest-check",
        ]),
        with_region(&[
            "aws",
            "ec2",
            "assign-private-ip-addresses",
            "--network-interface-id",
            ENI_A,
            "--private-ip-addresses",
            "10.0.1.100",
        ]),
        with_region(&[
            "aws",
            "ec2",
            "associate-address",
            "--allocation-id",
            EIP,
            "--network-interface-id",
            ENI_A,
            "--private-ip-address",
            "10.0.1.100",
            "--allow-reassociation",
        ]),
    ];
    assert_eq!(mutating(&cloud.calls()), expected);

    let state = cloud.state();
    assert_eq!(
        state["associations"],
        json!({INSTANCE_A: PROFILE_ARN, INSTANCE_B: PROFILE_ARN})
    );
    assert_eq!(
        state["profiles"]["cloudha-pair"]["roles"],
        json!(["cloudha-pair"])
    );
    assert_eq!(
        state["roles"]["cloudha-pair"]["trust"],
        policy_file("cloudha-trust.json")
    );
    for eni in [ENI_A, ENI_B] {
        assert_eq!(state["enis"][eni]["sourceDestCheck"], json!(false));
    }
    assert_eq!(state["enis"][ENI_A]["secondary"], json!(["10.0.1.100"]));
    assert_eq!(
        state["addresses"][EIP],
        json!({"eni": ENI_A, "privateIp": "10.0.1.100"})
    );
}

/// Checked on the fresh pair that [`aws_fresh_pair`] set up.
fn aws_role_policies_grant_the_shared_actions_and_the_selftest_self_grant(cloud: &FakeCloud) {
    let policies = &cloud.state()["roles"]["cloudha-pair"]["policies"];
    assert_eq!(policies.as_object().map(|p| p.len()), Some(2));
    let failover = &policies["cloudha-failover"];
    assert_eq!(failover, &policy_file("cloudha-policy.json"));
    let granted: BTreeSet<&str> = failover["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .flat_map(|s| {
            s["Action"]
                .as_array()
                .expect("actions")
                .iter()
                .filter_map(Value::as_str)
        })
        .collect();
    assert_eq!(
        granted,
        aws_permissions::action_names().into_iter().collect()
    );
    assert_eq!(
        policies["cloudha-selftest"]["Statement"],
        json!([{
            "Sid": "CloudhaSelftest",
            "Effect": "Allow",
            "Action": [aws_permissions::SELFTEST_SIMULATE_ACTION],
            "Resource": ROLE_ARN,
        }])
    );
}

/// Checked on the fresh pair that [`aws_fresh_pair`] set up.
fn aws_configs_pass_config_check_and_name_the_pair(cloud: &FakeCloud) {
    let configs = cloud.check_configs(&["fw-a", "fw-b"]);
    cloud.assert_key_written();
    for (config, own_eni, peer_eni, own_ip, peer_ip) in [
        (&configs[0], ENI_A, ENI_B, "10.0.1.10", "10.0.1.11"),
        (&configs[1], ENI_B, ENI_A, "10.0.1.11", "10.0.1.10"),
    ] {
        let aws = config.provider.aws.as_ref().expect("[provider.aws]");
        assert_eq!(aws.own_eni.as_deref(), Some(own_eni));
        assert_eq!(aws.peer_eni, peer_eni);
        assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            config.keepalive.paths[0].bind.to_string(),
            format!("{own_ip}:5405")
        );
        assert_eq!(
            config.keepalive.paths[0].peer.to_string(),
            format!("{peer_ip}:5405")
        );
        assert_eq!(config.floating_ips[0].elastic_ip.as_deref(), Some(EIP));
        assert_eq!(config.routes[0].table, "rtb-0123456789abcdef0");
    }
    assert_eq!(configs[0].node.priority, 200);
    assert_eq!(configs[1].node.priority, 100);
}

#[test]
fn aws_second_run_changes_nothing_and_says_so() {
    let cloud = FakeCloud::new(aws_world());
    run_aws(&cloud, &[], &[]).assert_ok();
    cloud.clear_log();
    let second = run_aws(&cloud, &[], &[]);
    second.assert_ok();
    assert!(!cloud.calls().is_empty());
    assert_eq!(mutating(&cloud.calls()), Vec::<Vec<String>>::new());
    for line in [
        "role cloudha-pair exists: unchanged",
        "policy cloudha-failover of role cloudha-pair: unchanged",
        "policy cloudha-selftest of role cloudha-pair: unchanged",
        &format!("instance profile cloudha-pair on {INSTANCE_B}: unchanged"),
        &format!("source/dest check off on {ENI_A}: unchanged"),
        &format!("Elastic IP {EIP} on 10.0.1.100: unchanged"),
        "done: nothing changed",
    ] {
        assert!(
            second.stdout.contains(line),
            "no {line:?} in:\n{}",
            second.stdout
        );
    }
}

/// Compared with the real run on a fresh pair: the same changes, in the same order.
fn aws_dry_run_runs_nothing_and_prints_every_command(fresh: &FakeCloud) {
    let real: Vec<String> = mutating(&fresh.calls())
        .iter()
        .map(|c| c[..3].join(" "))
        .collect();

    let cloud = FakeCloud::new(aws_world());
    let dry = run_aws(&cloud, &["--dry-run"], &[]);
    dry.assert_ok();
    assert!(
        cloud.calls().is_empty(),
        "--dry-run invoked aws: {:?}",
        cloud.calls()
    );
    assert!(!cloud.out().exists());
    let printed: Vec<String> = dry
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would run: aws "))
        .map(|l| format!("aws {}", l.split(' ').take(2).collect::<Vec<_>>().join(" ")))
        .collect();
    assert_eq!(printed, real);
    assert!(dry
        .stdout
        .contains("would query: aws iam get-role --role-name cloudha-pair"));
}

#[test]
fn aws_first_failing_command_stops_the_script_with_the_step_and_command() {
    let cloud = FakeCloud::new(aws_world());
    let failed = run_aws(
        &cloud,
        &[],
        &[
            ("FAKE_CLOUD_FAIL", "modify-network-interface-attribute"),
            (
                "FAKE_CLOUD_FAIL_MESSAGE",
                "An error occurred (UnauthorizedOperation) when calling the ModifyNetworkInterfaceAttribute operation: You are not authorized to perform this operation.",
            ),
        ],
    );
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert!(
        failed
            .stderr
            .contains(&format!("step \"source/dest check on {ENI_A}\" failed")),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains(&format!("command: aws ec2 modify-network-interface-attribute --network-interface-id {ENI_A} --no-source-dest-check")),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("UnauthorizedOperation"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        cloud.calls().last().map(|c| c[2].clone()),
        Some("modify-network-interface-attribute".to_string())
    );
    assert!(!cloud.out().exists());
}

#[test]
fn aws_instance_profile_propagation_is_retried() {
    let cloud = FakeCloud::new(aws_world());
    run_aws(
        &cloud,
        &[],
        &[
            ("FAKE_CLOUD_FAIL", "associate-iam-instance-profile"),
            ("FAKE_CLOUD_FAIL_TIMES", "1"),
            (
                "FAKE_CLOUD_FAIL_MESSAGE",
                "An error occurred (InvalidParameterValue) when calling the AssociateIamInstanceProfile operation: Value (cloudha-pair) for parameter iamInstanceProfile.name is invalid. Invalid IamInstanceProfile name",
            ),
        ],
    )
    .assert_ok();
    let associations = cloud
        .calls()
        .iter()
        .filter(|c| c[2] == "associate-iam-instance-profile")
        .count();
    assert_eq!(associations, 3, "one retry, then both instances");
}

#[test]
fn aws_instance_with_another_profile_is_not_overwritten() {
    let mut world = aws_world();
    world["associations"][INSTANCE_A] =
        json!("arn:aws:iam::123456789012:instance-profile/appliance-vendor");
    let cloud = FakeCloud::new(world);
    let failed = run_aws(&cloud, &[], &[]);
    assert_eq!(failed.code, Some(1));
    assert!(
        failed.stderr.contains(&format!("instance {INSTANCE_A} already has the instance profile arn:aws:iam::123456789012:instance-profile/appliance-vendor")),
        "{}",
        failed.stderr
    );
    assert!(
        failed
            .stderr
            .contains("replace-iam-instance-profile-association"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        cloud.state()["associations"][INSTANCE_A],
        json!("arn:aws:iam::123456789012:instance-profile/appliance-vendor")
    );
}
