//! IMDS instance metadata, token shape and scheduled events.

use crate::common::*;
use serde_json::json;

const INSTANCE: &str = "/metadata/instance?api-version=2021-02-01";

#[tokio::test]
async fn instance_metadata_reports_compute_and_network() {
    let env = Env::manual().await;
    let r = call(env.addr, "GET", INSTANCE, &[("metadata", "true")], None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = &r.body["compute"];
    assert_eq!(c["name"], VM_A);
    assert_eq!(c["subscriptionId"], env.sub().as_str());
    assert_eq!(c["resourceGroupName"], "rg-cloudha");
    assert_eq!(c["location"], "westeurope");
    assert!(c["vmId"].as_str().is_some_and(|v| v.len() == 36));
    let nic = &r.body["network"]["interface"][0];
    assert_eq!(nic["macAddress"], "000D3A1A2B3C");
    assert_eq!(
        nic["ipv4"]["ipAddress"][0],
        json!({"privateIpAddress": "10.10.1.4", "publicIpAddress": ""})
    );
    assert_eq!(
        nic["ipv4"]["ipAddress"][1],
        json!({"privateIpAddress": FLOATING_IP, "publicIpAddress": "20.50.60.70"})
    );
    assert_eq!(
        nic["ipv4"]["subnet"][0],
        json!({"address": "10.10.1.0", "prefix": "24"})
    );

    // Per-VM views: path prefix and a dedicated listener.
    let b = call(
        env.addr,
        "GET",
        &format!("/vms/{VM_B}{INSTANCE}"),
        &[("metadata", "true")],
        None,
    )
    .await;
    assert_eq!(b.body["compute"]["name"], VM_B);
    assert_eq!(
        b.body["network"]["interface"][0]["macAddress"],
        "000D3A4D5E6F"
    );
    let imds_b = env.emu.start_imds(VM_B).await.expect("imds listener");
    let b2 = call(imds_b, "GET", INSTANCE, &[("metadata", "true")], None).await;
    assert_eq!(b2.body, b.body);
    let arm_on_imds = call(
        imds_b,
        "GET",
        &env.nic_path(NIC_A),
        &[("authorization", "Bearer x")],
        None,
    )
    .await;
    assert_eq!(arm_on_imds.status, 404, "an IMDS listener serves no ARM");

    let name = call(
        env.addr,
        "GET",
        "/metadata/instance/compute/name?api-version=2021-02-01&format=text",
        &[("metadata", "true")],
        None,
    )
    .await;
    assert_eq!(name.text, VM_A);
}

#[tokio::test]
async fn imds_requires_metadata_header_and_api_version() {
    let env = Env::manual().await;
    let r = call(env.addr, "GET", INSTANCE, &[], None).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({"error": "Bad request. Required metadata header not specified"})
    );
    let r = call(
        env.addr,
        "GET",
        "/metadata/instance",
        &[("metadata", "true")],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body["newest-versions"].is_array());
    let token = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/";
    let r = call(env.addr, "GET", token, &[("metadata", "false")], None).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let r = call(
        env.addr,
        "GET",
        "/metadata/identity/oauth2/token?api-version=2018-02-01",
        &[("metadata", "true")],
        None,
    )
    .await;
    assert_eq!(
        r.body["error_description"],
        "Required audience parameter not specified"
    );
}

#[tokio::test]
async fn imds_token_has_the_real_shape() {
    let env = Env::manual().await;
    env.emu
        .set_token_lifetime(std::time::Duration::from_secs(3600));
    let id = env.emu.vm_identity(VM_A).expect("identity");
    let path = format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/&client_id={}", id.client_id);
    let r = call(env.addr, "GET", &path, &[("metadata", "true")], None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for k in [
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    ] {
        assert!(r.body[k].is_string(), "{k} is a string: {}", r.text);
    }
    assert_eq!(r.body["expires_in"], "3600");
    assert_eq!(
        r.body["expires_on"],
        (1_800_000_000u64 + 3600).to_string().as_str()
    );
    assert_eq!(r.body["resource"], "https://management.azure.com/");
    assert_eq!(r.body["client_id"], id.client_id.as_str());
    let wrong = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/&client_id=nope";
    let r = call(env.addr, "GET", wrong, &[("metadata", "true")], None).await;
    assert_eq!(
        r.body,
        json!({"error": "invalid_request", "error_description": "Identity not found"})
    );
}

#[tokio::test]
async fn scheduled_events_list_and_ack() {
    let env = Env::manual().await;
    let path = "/metadata/scheduledevents?api-version=2020-07-01";
    let r = call(env.addr, "GET", path, &[("metadata", "true")], None).await;
    assert_eq!(r.body, json!({"DocumentIncarnation": 1, "Events": []}));
    let event = json!({
        "EventId": "602d9444-d2cd-49c7-8624-8643e7171297", "EventStatus": "Scheduled",
        "EventType": "Freeze", "ResourceType": "VirtualMachine", "Resources": [VM_A],
        "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT", "Description": "", "EventSource": "Platform",
        "DurationInSeconds": 5
    });
    assert!(env.emu.set_scheduled_events(VM_A, vec![event.clone()]));
    let r = call(env.addr, "GET", path, &[("metadata", "true")], None).await;
    assert_eq!(r.body, json!({"DocumentIncarnation": 2, "Events": [event]}));
    let ack = json!({"StartRequests": [{"EventId": "602d9444-d2cd-49c7-8624-8643e7171297"}]});
    let r = call(env.addr, "POST", path, &[("metadata", "true")], Some(&ack)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        env.emu.acked_events(VM_A),
        vec!["602d9444-d2cd-49c7-8624-8643e7171297"]
    );
    let r = call(env.addr, "GET", path, &[("metadata", "true")], None).await;
    assert_eq!(r.body, json!({"DocumentIncarnation": 3, "Events": []}));
    let r = call(env.addr, "GET", path, &[], None).await;
    assert_eq!(r.status, 400);
}
