//! NIC GET/PUT, ETags, long-running operations and the two-step floating-IP move.

use crate::common::*;
use cloudha_azure_emulator::ConflictMode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn get_nic_carries_weak_etag_and_succeeded_state() {
    let env = Env::manual().await;
    let (doc, etag) = env.nic(NIC_A).await;
    assert!(
        etag.starts_with("W/\"") && etag.ends_with('"') && etag.len() == 36 + 4,
        "{etag}"
    );
    assert_eq!(doc["properties"]["provisioningState"], "Succeeded");
    assert_eq!(doc["properties"]["macAddress"], "00-0D-3A-1A-2B-3C");
    assert_eq!(doc["properties"]["enableIPForwarding"], true);
    assert_eq!(
        doc["properties"]["ipConfigurations"][0]["etag"],
        etag.as_str()
    );
    assert_eq!(ipconfig_names(&doc), vec!["ipconfig1", "floating"]);
}

#[tokio::test]
async fn two_step_move_with_etags_and_the_in_use_window() {
    let env = Env::manual().await;
    let (doc_a, etag_a) = env.nic(NIC_A).await;
    let (doc_b, etag_b) = env.nic(NIC_B).await;
    let floating = floating_config(&doc_a);

    // While A holds the IP settled, B cannot take it.
    let early = env
        .put(
            &env.token_b,
            &env.nic_path(NIC_B),
            &with_config(&doc_b, floating.clone()),
            Some(&etag_b),
        )
        .await;
    assert_eq!(early.status, 400);
    assert_eq!(
        early.code(),
        "PrivateIPAddressIsAllocated",
        "{}",
        early.text
    );

    // Step 1: A drops the floating ipConfiguration.
    let put_a = env
        .put(
            &env.token_b,
            &env.nic_path(NIC_A),
            &without_config(&doc_a, "floating"),
            Some(&etag_a),
        )
        .await;
    assert_eq!(put_a.status, 200, "{}", put_a.text);
    assert_eq!(put_a.body["properties"]["provisioningState"], "Updating");
    assert_ne!(put_a.body["etag"].as_str(), Some(etag_a.as_str()));
    assert_eq!(put_a.header("retry-after").as_deref(), Some("1"));
    let op_a = put_a
        .header("azure-asyncoperation")
        .expect("Azure-AsyncOperation");
    let expected_prefix = format!(
        "http://{}/subscriptions/{}/providers/Microsoft.Network/locations/westeurope/operations/",
        env.addr,
        env.sub()
    );
    assert!(op_a.starts_with(&expected_prefix), "{op_a}");
    assert!(op_a.ends_with(&format!("?api-version={API}")), "{op_a}");
    assert_eq!(env.op_status(&op_a).await, "InProgress");

    // The removal is still propagating: B's PUT is refused with PrivateIPAddressInUse.
    let window = env
        .put(
            &env.token_b,
            &env.nic_path(NIC_B),
            &with_config(&doc_b, floating.clone()),
            Some(&etag_b),
        )
        .await;
    assert_eq!(window.status, 400);
    assert_eq!(window.code(), "PrivateIPAddressInUse");
    let b_ipc = format!("{}/ipConfigurations/floating", env.emu.nic_id(NIC_B));
    let a_ipc = format!("{}/ipConfigurations/floating", env.emu.nic_id(NIC_A));
    assert_eq!(
        window.message(),
        format!("IP configuration {b_ipc} is using the same private IP address {FLOATING_IP} as IP configuration {a_ipc}.")
    );
    // GET shows the goal state while updating.
    let (during, _) = env.nic(NIC_A).await;
    assert_eq!(during["properties"]["provisioningState"], "Updating");
    assert_eq!(ipconfig_names(&during), vec!["ipconfig1"]);

    env.advance_ms(1000);
    assert_eq!(env.op_status(&op_a).await, "Succeeded");
    let (after_a, etag_a2) = env.nic(NIC_A).await;
    assert_eq!(after_a["properties"]["provisioningState"], "Succeeded");
    assert_ne!(etag_a2, put_a.body["etag"].as_str().unwrap_or_default());

    // Step 2: B takes the IP; its ETag is unchanged, so the same If-Match works.
    let put_b = env
        .put(
            &env.token_b,
            &env.nic_path(NIC_B),
            &with_config(&doc_b, floating.clone()),
            Some(&etag_b),
        )
        .await;
    assert_eq!(put_b.status, 200, "{}", put_b.text);
    let op_b = put_b.header("azure-asyncoperation").expect("op");
    assert_eq!(
        env.emu.ip_holder(FLOATING_IP.parse().expect("ip")),
        Some(b_ipc.clone())
    );
    env.advance_ms(999);
    assert_eq!(env.op_status(&op_b).await, "InProgress");
    env.advance_ms(1);
    assert_eq!(env.op_status(&op_b).await, "Succeeded");
    let (after_b, _) = env.nic(NIC_B).await;
    let moved = floating_config(&after_b);
    assert_eq!(moved["properties"]["privateIPAddress"], FLOATING_IP);
    assert_eq!(moved["id"], b_ipc.as_str());
    assert_eq!(
        moved["properties"]["publicIPAddress"],
        floating["properties"]["publicIPAddress"]
    );
    assert_eq!(moved["properties"]["primary"], false);

    // The exact call sequence the controller made.
    let puts: Vec<(String, Option<String>, u16)> = env
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| {
            (
                r.path.rsplit('/').next().unwrap_or_default().to_string(),
                r.if_match,
                r.status,
            )
        })
        .collect();
    assert_eq!(
        puts,
        vec![
            (NIC_B.to_string(), Some(etag_b.clone()), 400),
            (NIC_A.to_string(), Some(etag_a.clone()), 200),
            (NIC_B.to_string(), Some(etag_b.clone()), 400),
            (NIC_B.to_string(), Some(etag_b.clone()), 200),
        ]
    );
}

#[tokio::test]
async fn put_preserves_every_client_property() {
    let env = Env::manual().await;
    let mut actions: Vec<&str> = cloudha_azure_emulator::scenario::DEFAULT_ACTIONS.to_vec();
    actions.push("Microsoft.Network/networkSecurityGroups/join/action");
    assert!(env.emu.set_permissions(VM_A, &actions, &[]));
    let (mut doc, etag) = env.nic(NIC_A).await;
    let nsg = format!("{}/networkSecurityGroups/nsg-appliances", env.net());
    doc["properties"]["networkSecurityGroup"] = json!({"id": nsg});
    doc["properties"]["dnsSettings"] =
        json!({"dnsServers": ["10.10.0.53"], "appliedDnsServers": []});
    doc["properties"]["enableAcceleratedNetworking"] = json!(true);
    doc["properties"]["someFutureProperty"] = json!({"nested": [1, "two", null]});
    doc["tags"] = json!({"owner": "cloudha", "z": "last"});
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, Some(&etag))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    env.advance_ms(1000);
    let (got, _) = env.nic(NIC_A).await;
    for p in [
        "networkSecurityGroup",
        "dnsSettings",
        "enableAcceleratedNetworking",
        "someFutureProperty",
        "enableIPForwarding",
    ] {
        assert_eq!(got["properties"][p], doc["properties"][p], "{p}");
    }
    assert_eq!(got["tags"], doc["tags"]);
    // Key order of what the client sent survives too.
    let keys: Vec<&String> = got["tags"].as_object().expect("tags").keys().collect();
    assert_eq!(keys, vec!["owner", "z"]);
    assert_eq!(got["properties"]["ipConfigurations"], {
        let mut c = doc["properties"]["ipConfigurations"].clone();
        let etag = got["etag"].clone();
        for x in c.as_array_mut().expect("array") {
            x["etag"] = etag.clone();
            x["properties"]["provisioningState"] = json!("Succeeded");
        }
        c
    });
    // Read-only properties stay the service's, whatever the client sends.
    assert_eq!(got["properties"]["macAddress"], "00-0D-3A-1A-2B-3C");
}

#[tokio::test]
async fn preconditions_if_match_and_if_none_match() {
    let env = Env::manual().await;
    let (doc, etag) = env.nic(NIC_A).await;
    let stale = "W/\"00000000-0000-0000-0000-000000000000\"";
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, Some(stale))
        .await;
    assert_eq!(r.status, 412);
    assert_eq!(r.code(), "PreconditionFailed");
    // The ETag is compared exactly: without the W/ prefix it does not match.
    let bare = etag.trim_start_matches("W/");
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, Some(bare))
        .await;
    assert_eq!(r.status, 412);
    let auth = format!("Bearer {}", env.token_a);
    let r = call(
        env.addr,
        "PUT",
        &env.nic_path(NIC_A),
        &[("authorization", &auth), ("if-none-match", "*")],
        Some(&doc),
    )
    .await;
    assert_eq!(r.status, 412);
    let r = env
        .put(&env.token_a, &env.nic_path("nic-new"), &doc, Some(&etag))
        .await;
    assert_eq!(r.status, 412, "If-Match on a missing resource");
    assert_eq!(env.emu.operations_in_progress(), 0);
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, Some("*"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn write_while_propagating_conflicts_409_then_429_mode() {
    let env = Env::manual().await;
    let (doc, _) = env.nic(NIC_A).await;
    let first = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, None)
        .await;
    assert_eq!(first.status, 200);
    let op = first.header("azure-asyncoperation").expect("op");
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, None)
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "AnotherOperationInProgress");
    assert!(r.message().contains(&op), "{}", r.message());

    env.emu.set_conflict_mode(ConflictMode::RetryableError);
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, None)
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "RetryableError");
    assert_eq!(r.detail_code(), "RetryableErrorDueToAnotherOperation");
    assert_eq!(r.header("retry-after").as_deref(), Some("10"));

    env.advance_ms(1000);
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, None)
        .await;
    assert_eq!(r.status, 200, "free again: {}", r.text);
}

#[tokio::test]
async fn lro_status_transitions_in_real_time() {
    let env = Env::real_time().await;
    env.emu
        .set_nic_propagation_delay(Duration::from_millis(200));
    let (doc, etag) = env.nic(NIC_B).await;
    let started = Instant::now();
    let r = env
        .put(&env.token_b, &env.nic_path(NIC_B), &doc, Some(&etag))
        .await;
    assert_eq!(r.status, 200);
    let op = r.header("azure-asyncoperation").expect("op");
    let mut seen = vec![env.op_status(&op).await];
    while seen.last().map(String::as_str) != Some("Succeeded") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never completed: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen.push(env.op_status(&op).await);
    }
    assert_eq!(seen.first().map(String::as_str), Some("InProgress"));
    assert!(started.elapsed() >= Duration::from_millis(200));
    let (after, _) = env.nic(NIC_B).await;
    assert_eq!(after["properties"]["provisioningState"], "Succeeded");
}

#[tokio::test]
async fn create_answers_201_and_allocates_the_lowest_free_address() {
    let env = Env::manual().await;
    let subnet = format!("{}/virtualNetworks/vnet-ha/subnets/appliances", env.net());
    let body = json!({
        "location": "westeurope",
        "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {"subnet": {"id": subnet}}}]}
    });
    let r = env
        .put(&env.token_a, &env.nic_path("nic-c"), &body, None)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ipc = &r.body["properties"]["ipConfigurations"][0]["properties"];
    assert_eq!(ipc["privateIPAddress"], "10.10.1.6");
    assert_eq!(ipc["privateIPAllocationMethod"], "Dynamic");
    assert_eq!(ipc["primary"], true);
    env.advance_ms(1000);
    let (got, _) = env.nic("nic-c").await;
    assert_eq!(got["properties"]["provisioningState"], "Succeeded");
    // A later update keeps the Dynamic address.
    let r = env
        .put(&env.token_a, &env.nic_path("nic-c"), &body, None)
        .await;
    assert_eq!(
        r.body["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.10.1.6"
    );
}

#[tokio::test]
async fn not_found_answers_use_arm_codes() {
    let env = Env::manual().await;
    let r = env.get(&env.token_a, &env.nic_path("nope")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "ResourceNotFound");
    assert_eq!(
        r.message(),
        "The Resource 'Microsoft.Network/networkInterfaces/nope' under resource group 'rg-cloudha' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
    );
    let path = format!("/subscriptions/{}/resourceGroups/rg-missing/providers/Microsoft.Network/networkInterfaces/x?api-version={API}", env.sub());
    let r = env.get(&env.token_a, &path).await;
    assert_eq!((r.status, r.code()), (404, "ResourceGroupNotFound"));
    let path = format!("/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/x?api-version={API}");
    let r = env.get(&env.token_a, &path).await;
    assert_eq!((r.status, r.code()), (404, "SubscriptionNotFound"));
    let path = format!("{}/widgets/x?api-version={API}", env.net());
    let r = env.get(&env.token_a, &path).await;
    assert_eq!((r.status, r.code()), (404, "InvalidResourceType"));
}

#[tokio::test]
async fn lists_nics_in_resource_group_and_subscription() {
    let env = Env::manual().await;
    let r = env
        .get(
            &env.token_a,
            &format!("{}/networkInterfaces?api-version={API}", env.net()),
        )
        .await;
    assert_eq!(r.status, 200);
    let names: Vec<&str> = r.body["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, vec![NIC_A, NIC_B]);
    let r = env
        .get(
            &env.token_a,
            &format!(
                "/subscriptions/{}/providers/Microsoft.Network/networkInterfaces?api-version={API}",
                env.sub()
            ),
        )
        .await;
    assert_eq!(r.body["value"].as_array().map(Vec::len), Some(2));
    let macs: Vec<Value> = r.body["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|n| n["properties"]["macAddress"].clone())
        .collect();
    assert_eq!(
        macs,
        vec![json!("00-0D-3A-1A-2B-3C"), json!("00-0D-3A-4D-5E-6F")]
    );
}
