//! IMDS instance metadata, token shape and scheduled events.

use crate::common::*;
use cloudha_azure_emulator::{AcknowledgedEvent, Emulator, Scenario};
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

const EVENTS: &str = "/metadata/scheduledevents?api-version=2020-07-01";

async fn events_of(env: &Env, vm: &str) -> serde_json::Value {
    let r = call(
        env.addr,
        "GET",
        &format!("/vms/{vm}{EVENTS}"),
        &[("metadata", "true")],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

#[tokio::test]
async fn scheduled_event_is_seen_by_both_vms_and_starts_once_approved() {
    let env = Env::manual().await;
    env.emu
        .update_settings(|s| s.scheduled_event_impact_ms = 5_000);
    assert_eq!(
        events_of(&env, VM_A).await,
        json!({"DocumentIncarnation": 1, "Events": []})
    );
    let id = env
        .emu
        .schedule_event(VM_A, "Freeze", std::time::Duration::from_secs(900));
    let scheduled = json!({"DocumentIncarnation": 2, "Events": [{
        "EventId": id, "EventStatus": "Scheduled", "EventType": "Freeze",
        "ResourceType": "VirtualMachine", "Resources": [VM_A],
        // The manual clock starts at Unix 1_800_000_000; 900 s later:
        "NotBefore": "Fri, 15 Jan 2027 08:15:00 GMT",
        "Description": "Virtual machine is being paused because of a memory-preserving Live Migration operation.",
        "EventSource": "Platform", "DurationInSeconds": 5
    }]});
    assert_eq!(events_of(&env, VM_A).await, scheduled);
    // One availability set: B sees A's event too; `Resources` says whom it affects.
    assert_eq!(events_of(&env, VM_B).await, scheduled);

    // B approves it (any VM of the set may): it starts, for A, with a blank NotBefore.
    let ack = json!({"StartRequests": [{"EventId": id}]});
    let path_b = format!("/vms/{VM_B}{EVENTS}");
    let r = call(
        env.addr,
        "POST",
        &path_b,
        &[("metadata", "true")],
        Some(&ack),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        env.emu.acknowledged_events(),
        vec![AcknowledgedEvent {
            vm: VM_B.into(),
            event_id: id.clone()
        }]
    );
    assert_eq!(env.emu.acked_events(VM_A), Vec::<String>::new());
    let started = events_of(&env, VM_A).await;
    assert_eq!(started["DocumentIncarnation"], 3);
    assert_eq!(started["Events"][0]["EventStatus"], "Started");
    assert_eq!(started["Events"][0]["NotBefore"], "");
    // Approving a started event again is still 200, as the docs say.
    let r = call(
        env.addr,
        "POST",
        &path_b,
        &[("metadata", "true")],
        Some(&ack),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(events_of(&env, VM_A).await["DocumentIncarnation"], 3);

    // Once it completes it leaves the document.
    env.advance_ms(4_999);
    assert_eq!(
        events_of(&env, VM_A).await["Events"][0]["EventStatus"],
        "Started"
    );
    env.advance_ms(1);
    assert_eq!(
        events_of(&env, VM_A).await,
        json!({"DocumentIncarnation": 4, "Events": []})
    );
    // Now the id is unknown.
    let r = call(
        env.addr,
        "POST",
        &path_b,
        &[("metadata", "true")],
        Some(&ack),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
}

#[tokio::test]
async fn scheduled_event_starts_by_itself_at_not_before() {
    let env = Env::manual().await;
    env.emu
        .schedule_event(VM_B, "Reboot", std::time::Duration::from_secs(60));
    env.advance_ms(59_000);
    assert_eq!(
        events_of(&env, VM_B).await["Events"][0]["EventStatus"],
        "Scheduled"
    );
    env.advance_ms(1_000);
    let doc = events_of(&env, VM_B).await;
    assert_eq!(doc["Events"][0]["EventStatus"], "Started");
    assert_eq!(doc["DocumentIncarnation"], 3);
    assert!(env.emu.acknowledged_events().is_empty());
    let id = doc["Events"][0]["EventId"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(env.emu.cancel_event(&id));
    assert_eq!(
        env.emu.scheduled_events(),
        json!({"DocumentIncarnation": 4, "Events": []})
    );
}

#[tokio::test]
async fn scheduled_events_refuse_malformed_requests() {
    let env = Env::manual().await;
    let r = call(env.addr, "GET", EVENTS, &[], None).await;
    assert_eq!(r.status, 400, "the Metadata header is required");
    let r = call(
        env.addr,
        "GET",
        "/metadata/scheduledevents",
        &[("metadata", "true")],
        None,
    )
    .await;
    assert_eq!(r.status, 400, "api-version is required");
    for body in [
        json!({}),
        json!({"StartRequests": [{}]}),
        json!({"StartRequests": [{"EventId": "not-an-event"}]}),
    ] {
        let r = call(
            env.addr,
            "POST",
            EVENTS,
            &[("metadata", "true")],
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
    assert!(env.emu.acknowledged_events().is_empty());
}

#[tokio::test]
async fn scenario_events_are_loaded_with_defaults() {
    let mut scenario = Scenario::two_appliances();
    scenario.virtual_machines[0].scheduled_events = vec![json!({
        "EventId": "602D9444-D2CD-49C7-8624-8643E7171297", "EventType": "Redeploy",
        "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT", "EventStatus": "Started"
    })];
    let emu = Emulator::with_clock(
        &scenario,
        std::sync::Arc::new(cloudha_azure_emulator::ManualClock::new(1_474_309_000)),
    )
    .expect("scenario");
    let doc = emu.scheduled_events();
    let e = &doc["Events"][0];
    assert_eq!(e["EventId"], "602D9444-D2CD-49C7-8624-8643E7171297");
    assert_eq!(e["Resources"], json!([scenario.virtual_machines[0].name]));
    assert_eq!(e["EventSource"], "Platform");
    scenario.virtual_machines[0].scheduled_events =
        vec![json!({"EventType": "Freeze", "NotBefore": "soon"})];
    let err = Emulator::new(&scenario).expect_err("bad date");
    assert!(err.to_string().contains("NotBefore"), "{err}");
}
