//! Scenario loading and the read-only resources it creates (VMs, VNets, public IPs).

use crate::common::*;
use cloudha_azure_emulator::{Emulator, Scenario};
use serde_json::{json, Value};
use std::path::Path;

#[tokio::test]
async fn vm_get_maps_a_node_to_its_nic_ids() {
    let env = Env::manual().await;
    let path = format!(
        "/subscriptions/{}/resourceGroups/rg-cloudha/providers/Microsoft.Compute/virtualMachines/{VM_A}?api-version=2024-07-01",
        env.sub()
    );
    let r = env.get(&env.token_a, &path).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["properties"]["networkProfile"]["networkInterfaces"],
        json!([{"id": env.emu.nic_id(NIC_A), "properties": {"primary": true}}])
    );
    assert_eq!(
        r.body["identity"]["principalId"],
        env.emu
            .vm_identity(VM_A)
            .expect("identity")
            .principal_id
            .as_str()
    );
    let (nic, _) = env.nic(NIC_A).await;
    assert_eq!(nic["properties"]["virtualMachine"]["id"], r.body["id"]);
    let missing = env.get(&env.token_a, &path.replace(VM_A, "vm-x")).await;
    assert_eq!((missing.status, missing.code()), (404, "ResourceNotFound"));
}

#[tokio::test]
async fn vnet_subnet_and_public_ip_reads() {
    let env = Env::manual().await;
    let v = env
        .get(
            &env.token_a,
            &format!("{}/virtualNetworks/vnet-ha?api-version={API}", env.net()),
        )
        .await;
    assert_eq!(v.status, 200);
    assert_eq!(
        v.body["properties"]["addressSpace"]["addressPrefixes"],
        json!(["10.10.0.0/16"])
    );
    let s = env
        .get(
            &env.token_a,
            &format!(
                "{}/virtualNetworks/vnet-ha/subnets/appliances?api-version={API}",
                env.net()
            ),
        )
        .await;
    assert_eq!(s.body["properties"]["addressPrefix"], "10.10.1.0/24");
    assert_eq!(
        s.body["properties"]["ipConfigurations"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let w = env
        .get(
            &env.token_a,
            &format!(
                "{}/virtualNetworks/vnet-ha/subnets/workloads?api-version={API}",
                env.net()
            ),
        )
        .await;
    assert!(w.body["properties"]["routeTable"]["id"]
        .as_str()
        .is_some_and(|id| id.ends_with("/rt-workloads")));
    let p = env
        .get(
            &env.token_a,
            &format!(
                "{}/publicIPAddresses/pip-floating?api-version={API}",
                env.net()
            ),
        )
        .await;
    assert_eq!(p.body["properties"]["ipAddress"], "20.50.60.70");
    assert!(p.body["properties"]["ipConfiguration"]["id"]
        .as_str()
        .is_some_and(|id| id.ends_with("nic-appliance-a/ipConfigurations/floating")));
}

#[test]
fn scenario_files_load_from_toml_and_json() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/two-appliances.toml");
    let from_file = Scenario::from_path(&path).expect("toml file");
    assert_eq!(from_file, Scenario::two_appliances());
    let json = serde_json::to_string(&from_file).expect("json");
    assert_eq!(Scenario::from_json_str(&json).expect("json"), from_file);
}

#[tokio::test]
async fn scenario_options_permissions_source_ips_and_raw_properties() {
    let mut s: Value = serde_json::to_value(Scenario::two_appliances()).expect("value");
    s["virtual_machines"][1]["permissions"] =
        json!({"actions": ["Microsoft.Network/networkInterfaces/read"]});
    s["virtual_machines"][1]["imds_source_ips"] = json!(["127.0.0.1"]);
    s["virtual_machines"][1]["client_id"] = json!("11111111-2222-3333-4444-555555555555");
    s["network_interfaces"][1]["properties"] = json!({"networkSecurityGroup": {"id": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Network/networkSecurityGroups/z"}});
    s["settings"]["default_imds_vm"] = Value::Null;
    let scenario = Scenario::from_json_str(&s.to_string()).expect("scenario");
    let emu = Emulator::new(&scenario).expect("emulator");
    let addr = emu.start().await.expect("serve");
    assert_eq!(
        emu.vm_identity(VM_B).expect("id").client_id,
        "11111111-2222-3333-4444-555555555555"
    );
    // Loopback callers are VM B by source address.
    let r = call(
        addr,
        "GET",
        "/metadata/instance/compute/name?api-version=2021-02-01&format=text",
        &[("metadata", "true")],
        None,
    )
    .await;
    assert_eq!(r.text, VM_B);
    let nic = emu.nic(NIC_B).expect("nic");
    assert!(nic["properties"]["networkSecurityGroup"]["id"].is_string());
    let token = emu.issue_token(VM_B).expect("token");
    let path = format!(
        "/subscriptions/{}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01",
        emu.subscription_id()
    );
    let auth = format!("Bearer {token}");
    let r = call(addr, "GET", &path, &[("authorization", &auth)], None).await;
    assert_eq!(
        r.body["value"][0]["actions"],
        json!(["Microsoft.Network/networkInterfaces/read"])
    );
}

#[test]
fn invalid_scenarios_are_rejected() {
    let base = Scenario::two_appliances();
    let mut bad = base.clone();
    bad.network_interfaces[0].ip_configurations[0].subnet = "vnet-ha/nope".into();
    assert!(Emulator::new(&bad).is_err());
    let mut bad = base.clone();
    bad.network_interfaces[1].ip_configurations[0].private_ip_address = Some("10.10.1.4".into());
    assert!(Emulator::new(&bad).is_err(), "duplicate IP");
    let mut bad = base.clone();
    bad.virtual_machines[0].network_interfaces = vec!["nic-x".into()];
    assert!(Emulator::new(&bad).is_err());
    let mut bad = base;
    bad.route_tables[0].routes[0].next_hop_ip_address = None;
    assert!(
        Emulator::new(&bad).is_err(),
        "route validation applies to scenarios"
    );
    assert!(Scenario::from_toml_str("subscription_id = 1").is_err());
}
