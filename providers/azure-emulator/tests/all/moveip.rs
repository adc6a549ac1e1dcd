//! The atomic virtualNetworks/moveIpConfigurations action and its feature gate.

use crate::common::*;
use cloudha_azure_emulator::{Fault, MoveIpMode};
use serde_json::{json, Value};

fn move_path(env: &Env) -> String {
    format!(
        "{}/virtualNetworks/vnet-ha/moveIpConfigurations?api-version=2025-09-01",
        env.net()
    )
}

fn move_body(env: &Env, src: &str, dst: &str) -> Value {
    json!({"moveIpConfigurationItems": [{
        "sourceIpConfiguration": {"id": format!("{}/ipConfigurations/{src}", env.emu.nic_id(NIC_A))},
        "targetIpConfiguration": {"id": format!("{}/ipConfigurations/{dst}", env.emu.nic_id(NIC_B))},
    }]})
}

#[tokio::test]
async fn move_is_one_operation_without_an_unassigned_window() {
    let env = Env::manual().await;
    let r = env
        .post(
            &env.token_b,
            &move_path(&env),
            &move_body(&env, "floating", "floating"),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(r.text.is_empty());
    let op = r
        .header("azure-asyncoperation")
        .expect("Azure-AsyncOperation");
    let location = r.header("location").expect("Location");
    assert!(location.contains("/operationResults/"), "{location}");
    assert_eq!(env.op_status(&op).await, "InProgress");
    let res = env.get(&env.token_b, &path_of(&location)).await;
    assert_eq!(res.status, 202);
    let (a, _) = env.nic(NIC_A).await;
    let (b, _) = env.nic(NIC_B).await;
    assert_eq!(a["properties"]["provisioningState"], "Updating");
    assert_eq!(ipconfig_names(&b), vec!["ipconfig1", "floating"]);
    // The address is never free: a third party cannot grab it mid-move.
    let subnet = format!("{}/virtualNetworks/vnet-ha/subnets/appliances", env.net());
    let thief = json!({"location": "westeurope", "properties": {"ipConfigurations": [{"name": "c",
        "properties": {"privateIPAddress": FLOATING_IP, "privateIPAllocationMethod": "Static", "subnet": {"id": subnet}}}]}});
    let r = env
        .put(&env.token_a, &env.nic_path("nic-thief"), &thief, None)
        .await;
    assert_eq!(r.code(), "PrivateIPAddressInUse");
    // Both NICs are busy.
    let r = env.put(&env.token_a, &env.nic_path(NIC_A), &a, None).await;
    assert_eq!(r.code(), "AnotherOperationInProgress");

    env.advance_ms(1000);
    assert_eq!(env.op_status(&op).await, "Succeeded");
    assert_eq!(env.get(&env.token_b, &path_of(&location)).await.status, 204);
    let (a, _) = env.nic(NIC_A).await;
    let (b, _) = env.nic(NIC_B).await;
    assert_eq!(ipconfig_names(&a), vec!["ipconfig1"]);
    let moved = floating_config(&b);
    assert_eq!(moved["properties"]["privateIPAddress"], FLOATING_IP);
    assert!(moved["properties"]["publicIPAddress"]["id"]
        .as_str()
        .is_some_and(|p| p.ends_with("/pip-floating")));
    assert_eq!(b["properties"]["provisioningState"], "Succeeded");
    let imds_b = call(
        env.addr,
        "GET",
        &format!("/vms/{VM_B}/metadata/instance?api-version=2021-02-01"),
        &[("metadata", "true")],
        None,
    )
    .await;
    assert_eq!(
        imds_b.body["network"]["interface"][0]["ipv4"]["ipAddress"][1]["privateIpAddress"],
        FLOATING_IP
    );
    assert_eq!(env.emu.count_requests("POST", "moveIpConfigurations"), 1);
}

#[tokio::test]
async fn disabled_feature_is_the_error_to_fall_back_on() {
    let env = Env::manual().await;
    env.emu.set_move_ip_mode(MoveIpMode::FeatureNotRegistered);
    let r = env
        .post(
            &env.token_b,
            &move_path(&env),
            &move_body(&env, "floating", "floating"),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "SubscriptionNotRegisteredForFeature")
    );
    assert_eq!(
        r.message(),
        format!("Subscription {} is not registered for feature Microsoft.Network/AllowMoveIpConfigurations required to carry out the requested operation.", env.sub())
    );
    assert_eq!(env.emu.operations_in_progress(), 0);
    let (a, _) = env.nic(NIC_A).await;
    assert_eq!(ipconfig_names(&a), vec!["ipconfig1", "floating"]);
}

#[tokio::test]
async fn move_validation() {
    let env = Env::manual().await;
    let r = env
        .post(
            &env.token_b,
            &move_path(&env),
            &move_body(&env, "ipconfig1", "x"),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "IpConfigDeleteNotSupported"));
    let r = env
        .post(
            &env.token_b,
            &move_path(&env),
            &move_body(&env, "floating", "IPCONFIG1"),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.detail_code()),
        (400, "InvalidRequestFormat", "DuplicateResourceName")
    );
    let r = env
        .post(
            &env.token_b,
            &move_path(&env),
            &move_body(&env, "nope", "x"),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidResourceReference"));
    let r = env
        .post(
            &env.token_b,
            &move_path(&env),
            &json!({"moveIpConfigurationItems": []}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidRequestFormat"));
    let bad = json!({"moveIpConfigurationItems": [{"sourceIpConfiguration": {"id": "/x"}, "targetIpConfiguration": {"id": "/y"}}]});
    let r = env.post(&env.token_b, &move_path(&env), &bad).await;
    assert_eq!((r.status, r.code()), (400, "InvalidRequestFormat"));
    assert_eq!(env.emu.operations_in_progress(), 0);
}

#[tokio::test]
async fn failed_move_rolls_both_nics_back() {
    let env = Env::manual().await;
    env.emu.push_fault(Fault::operation_fails(
        "POST",
        "moveIpConfigurations",
        "InternalServerError",
        "An error occurred.",
    ));
    let r = env
        .post(
            &env.token_b,
            &move_path(&env),
            &move_body(&env, "floating", "floating"),
        )
        .await;
    assert_eq!(r.status, 202);
    let location = r.header("location").expect("Location");
    env.advance_ms(1000);
    let op = r.header("azure-asyncoperation").expect("op");
    assert_eq!(env.op_status(&op).await, "Failed");
    assert_eq!(
        env.get(&env.token_b, &path_of(&location)).await.code(),
        "InternalServerError"
    );
    let (a, _) = env.nic(NIC_A).await;
    let (b, _) = env.nic(NIC_B).await;
    assert_eq!(ipconfig_names(&a), vec!["ipconfig1", "floating"]);
    assert_eq!(ipconfig_names(&b), vec!["ipconfig1"]);
}
