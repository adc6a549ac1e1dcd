//! The Standard load balancer's ARM document, read over HTTP as a client would: the
//! read permission enforced, the probe, the HA-ports rule and the pool members (computed
//! from the NICs) as loadBalancer.json (stable/2024-05-01) shapes them.

use crate::common::*;
use cloudha_azure_emulator::load_balancer::{LoadBalancerSpec, ProbeSpec};
use cloudha_azure_emulator::scenario::DEFAULT_ACTIONS;
use cloudha_azure_emulator::{Emulator, Scenario};

fn probe() -> ProbeSpec {
    ProbeSpec {
        name: "role".into(),
        protocol: "Http".into(),
        port: 8081,
        request_path: Some("/healthz".into()),
        interval_in_seconds: 5,
        probe_threshold: 2,
    }
}

#[tokio::test]
async fn load_balancer_get_needs_read_and_shows_probe_rule_and_members() {
    let mut scenario = Scenario::two_appliances();
    scenario
        .load_balancers
        .push(LoadBalancerSpec::appliances(probe()));
    let emu = Emulator::new(&scenario).expect("scenario");
    let addr = emu.start().await.expect("serve");
    let token = emu.issue_token(VM_A).expect("token");
    let auth = format!("Bearer {token}");
    let path = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/loadBalancers/lb-appliances?api-version={API}",
        emu.subscription_id(),
        emu.resource_group()
    );

    // The default cloudha role has no loadBalancers/read.
    let r = call(addr, "GET", &path, &[("authorization", &auth)], None).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.code(), "AuthorizationFailed");

    let mut actions = DEFAULT_ACTIONS.to_vec();
    actions.push("Microsoft.Network/loadBalancers/read");
    assert!(emu.set_permissions(VM_A, &actions, &[]));
    let r = call(addr, "GET", &path, &[("authorization", &auth)], None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lb = &r.body;
    assert_eq!(lb["type"], "Microsoft.Network/loadBalancers");
    assert_eq!(lb["sku"]["name"], "Standard");
    assert!(lb["etag"].as_str().is_some_and(|e| e.starts_with("W/\"")));
    let props = &lb["properties"];
    let fe = &props["frontendIPConfigurations"][0]["properties"];
    assert_eq!(fe["privateIPAddress"], "10.10.1.50");
    assert_eq!(fe["privateIPAllocationMethod"], "Static");
    let p = &props["probes"][0]["properties"];
    assert_eq!(p["protocol"], "Http");
    assert_eq!(p["requestPath"], "/healthz");
    assert_eq!(p["intervalInSeconds"], 5);
    assert_eq!(p["probeThreshold"], 2);
    let rule = &props["loadBalancingRules"][0]["properties"];
    assert_eq!(rule["protocol"], "All");
    assert_eq!(rule["frontendPort"], 0);
    assert_eq!(rule["backendPort"], 0);
    assert_eq!(rule["probe"]["id"], props["probes"][0]["id"]);
    // Members come from the NICs' ipConfigurations, which carry the pool reference.
    let pool_id = props["backendAddressPools"][0]["id"]
        .as_str()
        .expect("pool id");
    let members: Vec<&str> = props["backendAddressPools"][0]["properties"]
        ["backendIPConfigurations"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(members.len(), 2, "{members:?}");
    for nic in [NIC_A, NIC_B] {
        assert!(members.iter().any(|m| m.contains(&format!(
            "/networkInterfaces/{nic}/ipConfigurations/ipconfig1"
        ))));
        let doc = emu.nic(nic).expect("nic");
        let cfg = &doc["properties"]["ipConfigurations"][0]["properties"];
        assert_eq!(cfg["loadBalancerBackendAddressPools"][0]["id"], pool_id);
    }
    let s = emu
        .load_balancer_settings("lb-appliances")
        .expect("settings");
    assert_eq!(s.backends.len(), 2);
    assert_eq!(s.ports, None, "HA ports");

    let missing = path.replace("lb-appliances", "lb-nope");
    let r = call(addr, "GET", &missing, &[("authorization", &auth)], None).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.code(), "ResourceNotFound");
}

#[test]
fn load_balancer_scenarios_that_break_the_spec_are_refused_by_name() {
    type BreakIt = Box<dyn Fn(&mut LoadBalancerSpec)>;
    let cases: Vec<(&str, BreakIt)> = vec![
        (
            "intervalInSeconds must be at least 5",
            Box::new(|lb| lb.probe.interval_in_seconds = 4),
        ),
        (
            "probeThreshold must be at least 1",
            Box::new(|lb| lb.probe.probe_threshold = 0),
        ),
        (
            "requestPath is required",
            Box::new(|lb| lb.probe.request_path = None),
        ),
        (
            "requestPath is not allowed on a Tcp probe",
            Box::new(|lb| lb.probe.protocol = "Tcp".into()),
        ),
        (
            "probe protocol udp",
            Box::new(|lb| lb.probe.protocol = "Udp".into()),
        ),
        (
            "frontendPort and backendPort 0",
            Box::new(|lb| lb.rule.frontend_port = 443),
        ),
        (
            "already used by a NIC",
            Box::new(|lb| lb.frontend.private_ip_address = "10.10.1.4".into()),
        ),
        (
            "not usable",
            Box::new(|lb| lb.frontend.private_ip_address = "10.10.1.1".into()),
        ),
        (
            "unknown ipConfiguration",
            Box::new(|lb| {
                lb.backend_pool
                    .ip_configurations
                    .push("nic-appliance-a/nope".into())
            }),
        ),
    ];
    for (want, break_it) in cases {
        let mut lb = LoadBalancerSpec::appliances(probe());
        break_it(&mut lb);
        let mut scenario = Scenario::two_appliances();
        scenario.load_balancers.push(lb);
        let err = Emulator::new(&scenario).expect_err(want).to_string();
        assert!(
            err.contains(want) && err.contains("lb-appliances"),
            "{want}: {err}"
        );
    }
}

/// The official Python SDK (azure-mgmt-network, installed by `scripts/install-deps.sh`) parses
/// the same document into its `LoadBalancer` model with every field the data plane reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_parses_the_load_balancer() {
    const VENV_PYTHON: &str = "/opt/cloudha-venv/bin/python";
    assert!(
        std::path::Path::new(VENV_PYTHON).exists(),
        "{VENV_PYTHON} is missing: run scripts/install-deps.sh (installs azure-mgmt-network)"
    );
    let mut scenario = Scenario::two_appliances();
    scenario
        .load_balancers
        .push(LoadBalancerSpec::appliances(probe()));
    let emu = Emulator::new(&scenario).expect("scenario");
    let mut actions = DEFAULT_ACTIONS.to_vec();
    actions.push("Microsoft.Network/loadBalancers/read");
    assert!(emu.set_permissions(VM_A, &actions, &[]));
    let addr = emu.start().await.expect("serve");
    let token = emu.issue_token(VM_A).expect("token");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk/check_load_balancer_with_sdk.py");
    let (sub, rg) = (
        emu.subscription_id().to_string(),
        emu.resource_group().to_string(),
    );
    let child = tokio::process::Command::new(VENV_PYTHON)
        .arg(&script)
        .args([
            &format!("http://{addr}"),
            &token,
            &sub,
            &rg,
            "lb-appliances",
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), child)
        .await
        .expect("the SDK script within 120 s")
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the script's JSON");
    let doc = emu.load_balancer("lb-appliances").expect("document");
    let props = &doc["properties"];
    assert_eq!(got["sku"], "Standard");
    assert_eq!(got["frontend_ip"], "10.10.1.50");
    assert_eq!(
        got["frontend_subnet"],
        props["frontendIPConfigurations"][0]["properties"]["subnet"]["id"]
    );
    assert_eq!(got["probe_protocol"], "Http");
    assert_eq!(got["probe_port"], 8081);
    assert_eq!(got["probe_path"], "/healthz");
    assert_eq!(got["probe_interval"], 5);
    assert_eq!(got["probe_threshold"], 2);
    assert_eq!(got["rule_protocol"], "All");
    assert_eq!(got["rule_frontend_port"], 0);
    assert_eq!(got["rule_backend_port"], 0);
    assert_eq!(got["rule_probe"], props["probes"][0]["id"]);
    assert_eq!(got["rule_pool"], got["pool_id"]);
    assert_eq!(
        got["pool_members"].as_array().map(Vec::len),
        Some(2),
        "{got}"
    );
}
