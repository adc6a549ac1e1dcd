//! A move loses nothing: the ipConfiguration moves whole, survives a crash between its two writes,
//! and the peer is never stripped of what this node could not add.

use std::time::Duration;

use cloudha_azure_emulator::scenario::DEFAULT_ACTIONS;
use cloudha_azure_emulator::Fault;
use cloudha_provider_core::{Outcome, ProgressEvent, ProgressReporter, Provider, TakeoverRequest};
use serde_json::{json, Value};

use crate::harness::*;

const ASG_JOIN: &str = "Microsoft.Network/applicationSecurityGroups/joinIpConfiguration/action";
const LINKED_JOINS: &[&str] = &[
    ASG_JOIN,
    "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
    "Microsoft.Network/loadBalancers/inboundNatRules/join/action",
    "Microsoft.Network/loadBalancers/frontendIPConfigurations/join/action",
    "Microsoft.Network/applicationGateways/backendAddressPools/join/action",
];

fn request(deadline: Duration) -> TakeoverRequest {
    TakeoverRequest { epoch: 2, deadline }
}

fn grant(cloud: &Cloud, vm: &str, extra: &[&str]) {
    let mut actions: Vec<&str> = DEFAULT_ACTIONS.to_vec();
    actions.extend_from_slice(extra);
    assert!(cloud.emu.set_permissions(vm, &actions, &[]));
}

fn rid(cloud: &Cloud, kind: &str, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/{kind}/{name}",
        cloud.emu.subscription_id(),
        cloud.emu.resource_group()
    )
}

/// Put every documented property of an ipConfiguration, and one nobody documents, on A's
/// floating entry.
async fn decorate_floating_entry(cloud: &Cloud) -> Value {
    let mut doc = cloud.emu.nic("nic-appliance-a").expect("nic a");
    let entry = doc["properties"]["ipConfigurations"]
        .as_array_mut()
        .expect("list")
        .iter_mut()
        .find(|c| c["properties"]["privateIPAddress"] == FLOATING)
        .expect("floating entry on A");
    let props = entry["properties"].as_object_mut().expect("properties");
    props.insert(
        "applicationSecurityGroups".into(),
        json!([{"id": rid(cloud, "applicationSecurityGroups", "asg-fw")}]),
    );
    props.insert(
        "loadBalancerBackendAddressPools".into(),
        json!([{"id": format!("{}/backendAddressPools/pool-fw", rid(cloud, "loadBalancers", "lb-int"))}]),
    );
    props.insert(
        "loadBalancerInboundNatRules".into(),
        json!([{"id": format!("{}/inboundNatRules/ssh", rid(cloud, "loadBalancers", "lb-int"))}]),
    );
    props.insert(
        "applicationGatewayBackendAddressPools".into(),
        json!([{"id": format!("{}/backendAddressPools/web", rid(cloud, "applicationGateways", "agw"))}]),
    );
    props.insert(
        "gatewayLoadBalancer".into(),
        json!({"id": format!("{}/frontendIPConfigurations/fe", rid(cloud, "loadBalancers", "lb-gw"))}),
    );
    props.insert("privateIPAddressPrefixLength".into(), json!(28));
    props.insert(
        "somethingNobodyDocuments".into(),
        json!({"kept": [1, 2, 3]}),
    );
    cloud.put_nic("nic-appliance-a", &doc).await;
    floating_entry(cloud, "nic-appliance-a")
}

const SECOND: &str = "10.10.1.101";

/// A second floating entry on A, decorated differently from the first (its own ASG, an unknown
/// property of another shape).
async fn add_second_floating_entry(cloud: &Cloud) -> Value {
    let mut doc = cloud.emu.nic("nic-appliance-a").expect("nic a");
    let configs = doc["properties"]["ipConfigurations"]
        .as_array_mut()
        .expect("list");
    let subnet = configs[0]["properties"]["subnet"].clone();
    configs.push(json!({
        "name": "floating-2",
        "properties": {
            "privateIPAddress": SECOND,
            "privateIPAllocationMethod": "Static",
            "primary": false,
            "subnet": subnet,
            "applicationSecurityGroups": [{"id": rid(cloud, "applicationSecurityGroups", "asg-mgmt")}],
            "anotherUndocumented": "text",
        }
    }));
    cloud.put_nic("nic-appliance-a", &doc).await;
    entry_of(cloud, "nic-appliance-a", SECOND)
}

/// The entry of `address` on `nic` as an operator would compare it: name and properties, less
/// what ARM owns for the NIC.
fn entry_of(cloud: &Cloud, nic: &str, address: &str) -> Value {
    let doc = cloud.emu.nic_settled(nic).expect("nic");
    let entry = doc["properties"]["ipConfigurations"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["properties"]["privateIPAddress"] == address)
        .unwrap_or_else(|| panic!("no entry {address} on {nic}: {doc}"));
    let mut props = entry["properties"].clone();
    if let Some(p) = props.as_object_mut() {
        p.remove("provisioningState");
    }
    json!({"name": entry["name"], "properties": props})
}

/// The floating entry of `nic` as an operator would compare it.
fn floating_entry(cloud: &Cloud, nic: &str) -> Value {
    entry_of(cloud, nic, FLOATING)
}

#[tokio::test]
async fn the_ipconfiguration_moves_whole_there_and_back() {
    let cloud = Cloud::start(100).await;
    grant(&cloud, "vm-appliance-a", LINKED_JOINS);
    grant(&cloud, "vm-appliance-b", LINKED_JOINS);
    let original = decorate_floating_entry(&cloud).await;
    assert!(original["properties"]["applicationSecurityGroups"].is_array());

    cloud
        .provider("b")
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .expect("to b");
    assert_eq!(
        floating_entry(&cloud, "nic-appliance-b"),
        original,
        "moved to B"
    );

    cloud
        .provider("a")
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .expect("back to a");
    assert_eq!(
        floating_entry(&cloud, "nic-appliance-a"),
        original,
        "moved back to A"
    );
}

/// Several floating IPs move in one PUT per NIC, each entry whole, there and back.
#[tokio::test]
async fn several_entries_move_whole_in_one_put_per_nic() {
    let cloud = Cloud::start(100).await;
    grant(&cloud, "vm-appliance-a", LINKED_JOINS);
    grant(&cloud, "vm-appliance-b", LINKED_JOINS);
    let first = decorate_floating_entry(&cloud).await;
    let second = add_second_floating_entry(&cloud).await;
    let mut floating = cloud.floating();
    floating.push(cloudha_provider_azure::FloatingIpConfig {
        address: ip(SECOND),
        ip_config_name: None,
        public_ip: None,
    });
    let provider = |me: &str| {
        cloudha_provider_azure::AzureProvider::new(
            cloud.config(me),
            floating.clone(),
            cloud.routes(),
            cloud.token_source(&format!("vm-appliance-{me}")),
        )
        .expect("provider")
    };
    let accepted_puts = |nic: &str| {
        cloud
            .emu
            .requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.ends_with(nic) && r.status < 300)
            .count()
    };
    let (a_before, b_before) = (
        accepted_puts("nic-appliance-a"),
        accepted_puts("nic-appliance-b"),
    );
    provider("b")
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .expect("to b");
    assert_eq!(
        accepted_puts("nic-appliance-a") - a_before,
        1,
        "one removal PUT"
    );
    assert_eq!(
        accepted_puts("nic-appliance-b") - b_before,
        1,
        "one add PUT"
    );
    assert_eq!(entry_of(&cloud, "nic-appliance-b", FLOATING), first);
    assert_eq!(entry_of(&cloud, "nic-appliance-b", SECOND), second);

    provider("a")
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .expect("back to a");
    assert_eq!(entry_of(&cloud, "nic-appliance-a", FLOATING), first);
    assert_eq!(entry_of(&cloud, "nic-appliance-a", SECOND), second);
}

#[tokio::test]
async fn a_node_killed_between_its_writes_recreates_the_entry_whole_after_a_restart() {
    let cloud = Cloud::start(100).await;
    grant(&cloud, "vm-appliance-a", LINKED_JOINS);
    grant(&cloud, "vm-appliance-b", LINKED_JOINS);
    let original = decorate_floating_entry(&cloud).await;
    let state_dir = std::env::temp_dir().join(format!("cloudha-move-whole-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    // No public_ip and no ip_config_name in the config: only what the node kept can restore them.
    let bare = |cloud: &Cloud| {
        let mut floating = cloud.floating();
        floating[0].public_ip = None;
        floating[0].ip_config_name = None;
        cloudha_provider_azure::AzureProvider::new(
            cloud.config("b"),
            floating,
            cloud.routes(),
            cloud.token_source("vm-appliance-b"),
        )
        .expect("provider")
        .with_state_dir(&state_dir)
        .expect("state dir")
    };

    // The add to B never gets through: the attempt ends with the address removed from A only.
    cloud.emu.push_fault(
        Fault::respond(
            "PUT",
            "networkInterfaces/nic-appliance-b",
            500,
            "InternalServerError",
            "down",
        )
        .times(10_000),
    );
    let first = bare(&cloud);
    assert!(first
        .take_over(
            &request(Duration::from_secs(3)),
            &ProgressReporter::discard()
        )
        .await
        .is_err());
    assert_eq!(
        cloud.holder_of_floating(),
        None,
        "cut off between the two writes"
    );
    drop(first); // kill -9: nothing in memory survives.
    cloud.emu.clear_faults();

    let restarted = bare(&cloud);
    restarted
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .expect("after the restart");
    assert_eq!(
        floating_entry(&cloud, "nic-appliance-b"),
        original,
        "recreated whole (name, public IP, groups, pools) from state_dir"
    );
    let _ = std::fs::remove_dir_all(&state_dir);
}

#[tokio::test]
async fn the_peer_is_not_stripped_when_this_node_may_not_add_what_it_would_remove() {
    let cloud = Cloud::start(100).await;
    grant(&cloud, "vm-appliance-a", LINKED_JOINS);
    // B may write both NICs but not join the application security group the entry carries:
    // without the check, A would be stripped and B's add refused (LinkedAuthorizationFailed).
    grant(&cloud, "vm-appliance-b", &LINKED_JOINS[1..]);
    decorate_floating_entry(&cloud).await;
    let b = cloud.provider("b");

    let proof = b.prove_failover().await;
    let failed: Vec<String> = proof
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .map(|c| c.detail.clone())
        .collect();
    assert!(
        failed
            .iter()
            .any(|m| m.contains(ASG_JOIN) && m.contains("asg-fw")),
        "the proof names the action and the scope: {failed:?}"
    );

    let e = b
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .expect_err("cannot finish");
    let text = e.to_string();
    assert!(text.contains(ASG_JOIN) && text.contains("asg-fw"), "{text}");
    assert!(
        cloud
            .holder_of_floating()
            .expect("still held")
            .contains("nic-appliance-a"),
        "the peer keeps the address"
    );
    assert_eq!(
        cloud
            .emu
            .count_requests("PUT", "networkInterfaces/nic-appliance-a"),
        1,
        "only the operator's PUT reached A"
    );

    // Granted: the next attempt (answers are cached, so a new provider stands for "later")
    // goes through.
    grant(&cloud, "vm-appliance-b", LINKED_JOINS);
    cloud
        .provider("b")
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .expect("after the grant");
    assert!(cloud
        .holder_of_floating()
        .expect("held")
        .contains("nic-appliance-b"));
}

#[tokio::test]
async fn an_add_refused_after_the_removal_puts_the_address_back_on_the_peer() {
    let cloud = Cloud::start(100).await;
    let b = cloud.provider("b");
    // The permissions API says yes, ARM says no (a deny assignment, a policy): the add is
    // refused after A was stripped.
    cloud.emu.push_fault(
        Fault::respond(
            "PUT",
            "networkInterfaces/nic-appliance-b",
            403,
            "AuthorizationFailed",
            "The client does not have authorization to perform action 'Microsoft.Network/networkInterfaces/write'",
        )
        .times(10_000),
    );
    let mut rec = Recorder::new();
    assert!(b
        .take_over(&request(DEADLINE), &rec.reporter)
        .await
        .is_err());
    let holder = cloud.holder_of_floating().expect("not on no NIC");
    assert!(holder.contains("nic-appliance-a"), "{holder}");
    assert!(rec.events().iter().any(|e| matches!(e,
        ProgressEvent::OperationStarted { id, .. } if id.starts_with("nic.restore"))));
    let entry = floating_entry(&cloud, "nic-appliance-a");
    assert!(entry.to_string().contains("pip-floating"), "{entry}");
}

#[tokio::test]
async fn an_atomic_move_refused_with_403_falls_back_to_the_two_step_move() {
    let cloud = Cloud::start(100).await;
    cloud.emu.push_fault(Fault::respond(
        "POST",
        "moveIpConfigurations",
        403,
        "AuthorizationFailed",
        "The client does not have authorization to perform action 'Microsoft.Network/virtualNetworks/moveIpConfigurations/action'",
    ));
    let b = cloud.provider_with("b", cloud.atomic_config("b"));
    let mut rec = Recorder::new();
    b.take_over(&request(DEADLINE), &rec.reporter)
        .await
        .expect("two-step move after the refusal");
    assert!(cloud
        .holder_of_floating()
        .expect("held")
        .contains("nic-appliance-b"));
    assert!(rec
        .events()
        .iter()
        .any(|e| matches!(e, ProgressEvent::Note { message }
        if message.contains("refused") && message.contains("two-step"))));
    let warnings = b.observe().await.expect("observe").warnings;
    assert!(
        warnings.iter().any(|w| w.contains("two-step")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_wrong_peer_nic_fails_the_proof_naming_the_setting() {
    let cloud = Cloud::start(100).await;
    let mut missing = cloud.config("b");
    missing.peer_nic = cloud.emu.nic_id("nic-that-does-not-exist");
    {
        let proof = cloud.provider_with("b", missing).prove_failover().await;
        let failed: Vec<String> = proof
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .map(|c| format!("{} (fix: {})", c.detail, c.fix))
            .collect();
        assert!(failed.iter().any(|m| m.contains("peer_nic")), "{failed:?}");
    }
    let proof = cloud.provider("b").prove_failover().await;
    assert!(
        proof.iter().all(|c| c.outcome != Outcome::Fail),
        "a correct pair is proven: {proof:?}"
    );
}
