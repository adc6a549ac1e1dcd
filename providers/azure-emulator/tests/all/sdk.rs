//! The emulator driven by the official Azure SDK for Python (azure-mgmt-network on
//! azure-core), installed by `scripts/install-deps.sh` into /opt/cloudha-venv: a client the
//! project did not write follows the emulator's LRO headers, parses its documents and
//! errors, and gets what it would get from Azure. The script is
//! `tests/sdk/check_emulator_with_sdk.py`; this side prepares the scenario and checks the
//! emulator's state afterwards.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/install-deps.sh` installs the SDK.
const VENV_PYTHON: &str = "/opt/cloudha-venv/bin/python";

/// Bound on the whole script (a Python start on a loaded 2-core machine is slow; each LRO
/// settles in about a second with this scenario's 1 s propagation and `Retry-After: 1`).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// What the floating ipConfiguration carries that the emulator does not model: every
/// documented reference property of `NetworkInterfaceIPConfigurationPropertiesFormat`
/// (networkInterface.json, stable/2025-05-01) it does not interpret, and an unknown one.
fn unmodelled(net: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "applicationSecurityGroups",
            json!([{"id": format!("{net}/applicationSecurityGroups/asg-ha")}]),
        ),
        (
            "loadBalancerBackendAddressPools",
            json!([{"id": format!("{net}/loadBalancers/lb-ha/backendAddressPools/pool")}]),
        ),
        (
            "loadBalancerInboundNatRules",
            json!([{"id": format!("{net}/loadBalancers/lb-ha/inboundNatRules/ssh")}]),
        ),
        (
            "applicationGatewayBackendAddressPools",
            json!([{"id": format!("{net}/applicationGateways/agw/backendAddressPools/web")}]),
        ),
        (
            "gatewayLoadBalancer",
            json!({"id": format!("{net}/loadBalancers/gwlb/frontendIPConfigurations/fe")}),
        ),
        ("privateIPAddressPrefixLength", json!(28)),
        ("cloudhaUnknownProperty", json!({"kept": true})),
    ]
}

/// The join actions the references above need (on top of the default role).
const JOINS: &[&str] = &[
    "Microsoft.Network/applicationSecurityGroups/joinIpConfiguration/action",
    "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
    "Microsoft.Network/loadBalancers/inboundNatRules/join/action",
    "Microsoft.Network/applicationGateways/backendAddressPools/join/action",
    "Microsoft.Network/loadBalancers/frontendIPConfigurations/join/action",
];

/// Waits (bounded) until NIC `nic` has no operation in flight.
async fn settled(env: &Env, nic: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (doc, _) = env.nic(nic).await;
        if doc["properties"]["provisioningState"] == "Succeeded" {
            return doc;
        }
        assert!(Instant::now() < deadline, "{nic} never settled: {doc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_gets_puts_polls_and_moves() {
    assert!(
        Path::new(VENV_PYTHON).exists(),
        "{VENV_PYTHON} is missing: run scripts/install-deps.sh (installs azure-mgmt-network)"
    );
    let env = Env::real_time().await;
    // The SDK acts as appliance A's identity, with the joins the extra references need.
    let mut actions: Vec<&str> = cloudha_azure_emulator::scenario::DEFAULT_ACTIONS.to_vec();
    actions.extend_from_slice(JOINS);
    assert!(env.emu.set_permissions(VM_A, &actions, &[]));

    // Put the unmodelled properties on the floating ipConfiguration of NIC A.
    let net = env.net();
    let (mut doc, etag) = env.nic(NIC_A).await;
    let cfgs = doc["properties"]["ipConfigurations"]
        .as_array_mut()
        .expect("ipConfigurations");
    let floating = cfgs
        .iter_mut()
        .find(|c| c["name"] == "floating")
        .expect("floating on A");
    for (k, v) in unmodelled(&net) {
        floating["properties"][k] = v;
    }
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, Some(&etag))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    settled(&env, NIC_A).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/check_emulator_with_sdk.py");
    let base = format!("http://{}", env.addr);
    let token = env.token_a.clone();
    let (sub, rg) = (env.sub(), env.emu.resource_group().to_string());
    let mut child = Command::new(VENV_PYTHON)
        .arg(&script)
        .args([&base, &token, &sub, &rg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the SDK script");
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the SDK script") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the SDK script ran longer than {SCRIPT_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().expect("script output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success(),
        "SDK script failed ({status}):\n{stdout}\n{stderr}"
    );
    let steps: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for want in [
        "nic.get",
        "nic.begin_create_or_update",
        "nic.stale_if_match",
        "route.begin_create_or_update",
        "nic.get_unknown_api_version",
        "vnet.begin_move_ip_configurations",
        "nic.round_trip_keeps_unmodelled",
        "done",
    ] {
        assert!(
            steps.iter().any(|s| s["step"] == want && s["ok"] == true),
            "step {want} did not pass:\n{stdout}\n{stderr}"
        );
    }

    // What the SDK did is in the emulator: the floating IP on B alone, every unmodelled
    // property still on its ipConfiguration after the move and the SDK's GET -> PUT.
    let holder = env.emu.ip_holder(FLOATING_IP.parse().expect("ip"));
    assert!(
        holder
            .as_deref()
            .is_some_and(|id| id.contains(&format!("/networkInterfaces/{NIC_B}/"))),
        "{FLOATING_IP} is held by {holder:?}"
    );
    let b = settled(&env, NIC_B).await;
    assert_eq!(b["tags"]["sdk"], "azure-mgmt-network");
    assert_eq!(b["tags"]["roundtrip"], "1");
    let moved = floating_config_named(&b, "floating");
    for (k, v) in unmodelled(&net) {
        assert_eq!(moved["properties"][k], v, "{k} lost: {moved}");
    }
    // The SDK's polling honoured the LRO protocol: it read the operation status URL the
    // Azure-AsyncOperation headers named.
    assert!(env.emu.count_requests("GET", "/operations/") >= 3);
    // The stale If-Match reached the emulator as a header and was refused there.
    let refused = env
        .emu
        .requests()
        .into_iter()
        .filter(|q| q.method == "PUT" && q.if_match.is_some() && q.status == 412)
        .count();
    assert_eq!(refused, 1);
}

/// The ipConfiguration `name` of a NIC document.
fn floating_config_named(doc: &Value, name: &str) -> Value {
    doc["properties"]["ipConfigurations"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no ipConfiguration {name} in {doc}"))
}
