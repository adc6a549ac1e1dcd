//! Scheduled Events through the emulator's IMDS: which events this node sees, approval, and an
//! IMDS that is slow (the first request on Azure can take two minutes) or not there.

use std::time::Duration;

use cloudha_azure_emulator::{AcknowledgedEvent, Fault, FaultKind};
use cloudha_provider_core::maintenance::now_unix_ms;
use cloudha_provider_core::Provider;

use crate::harness::*;

const VM_A: &str = "vm-appliance-a";
const VM_B: &str = "vm-appliance-b";

#[tokio::test]
async fn only_events_naming_this_vm_are_returned() {
    let cloud = Cloud::start(100).await;
    let a = cloud.provider("a");
    let b = cloud.provider("b");
    assert_eq!(a.scheduled_maintenance().await.expect("none"), vec![]);

    let reboot = cloud
        .emu
        .schedule_event(VM_A, "Reboot", Duration::from_secs(900));
    let freeze = cloud
        .emu
        .schedule_event(VM_B, "Freeze", Duration::from_secs(900));
    // Both VMs receive both events (one availability set); each keeps its own.
    let seen_by_a = a.scheduled_maintenance().await.expect("events");
    assert_eq!(seen_by_a.len(), 1, "{seen_by_a:?}");
    let event = &seen_by_a[0];
    assert_eq!(event.id, reboot);
    assert_eq!(event.kind, "Reboot");
    assert!(event.needs_handover);
    assert!(!event.in_progress);
    assert_eq!(event.description, "Host server is undergoing maintenance.");
    let not_before = event.not_before_unix_ms.expect("NotBefore parsed");
    let expected = now_unix_ms() + 900_000;
    assert!(
        not_before.abs_diff(expected) <= 2_000,
        "NotBefore {not_before} vs about {expected}"
    );
    let seen_by_b = b.scheduled_maintenance().await.expect("events");
    assert_eq!(
        seen_by_b.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        vec![freeze.as_str()]
    );
    assert_eq!(seen_by_b[0].kind, "Freeze");
    assert!(
        cloud.emu.count_requests("GET", "/metadata/scheduledevents") >= 3,
        "read from IMDS, not cached"
    );
}

#[tokio::test]
async fn every_documented_event_type_calls_for_a_handover() {
    let cloud = Cloud::start(100).await;
    let a = cloud.provider("a");
    let kinds = ["Freeze", "Reboot", "Redeploy", "Preempt", "Terminate"];
    for kind in kinds {
        cloud
            .emu
            .schedule_event(VM_A, kind, Duration::from_secs(600));
    }
    let seen = a.scheduled_maintenance().await.expect("events");
    assert_eq!(
        seen.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>(),
        kinds
    );
    assert!(seen.iter().all(|m| m.needs_handover && !m.in_progress));
}

#[tokio::test]
async fn acknowledging_starts_the_event_and_is_recorded() {
    let cloud = Cloud::start(100).await;
    let a = cloud.provider("a");
    let id = cloud
        .emu
        .schedule_event(VM_A, "Redeploy", Duration::from_secs(600));
    assert!(cloud.emu.acknowledged_events().is_empty());
    a.acknowledge_maintenance(&id).await.expect("approved");
    assert_eq!(
        cloud.emu.acknowledged_events(),
        vec![AcknowledgedEvent {
            vm: VM_A.into(),
            event_id: id.clone()
        }]
    );
    let body = cloud
        .emu
        .requests()
        .into_iter()
        .find(|r| r.is("POST", "/metadata/scheduledevents"))
        .expect("POST sent")
        .body;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON body"),
        serde_json::json!({"StartRequests": [{"EventId": id}]})
    );
    // Azure starts an approved event: it is still listed, now in progress, without NotBefore.
    let seen = a.scheduled_maintenance().await.expect("events");
    assert_eq!(seen.len(), 1);
    assert!(seen[0].in_progress);
    assert_eq!(seen[0].not_before_unix_ms, None);
    // Approving again, or after the event is over, is not an error.
    a.acknowledge_maintenance(&id).await.expect("again");
    assert!(cloud.emu.cancel_event(&id));
    a.acknowledge_maintenance(&id).await.expect("event gone");
    assert_eq!(a.scheduled_maintenance().await.expect("none"), vec![]);
}

#[tokio::test]
async fn slow_imds_means_no_maintenance_yet_with_a_warning() {
    let cloud = Cloud::start(100).await;
    let a = cloud
        .provider("a")
        .with_scheduled_events_timeout(Duration::from_millis(300));
    let id = cloud
        .emu
        .schedule_event(VM_A, "Reboot", Duration::from_secs(900));
    // The first answer takes longer than the timeout, as while Azure enables the service.
    cloud.emu.push_fault(Fault::new(
        "GET",
        "/metadata/scheduledevents",
        FaultKind::Delay(Duration::from_secs(3)),
    ));
    assert_eq!(
        a.scheduled_maintenance().await.expect("not an error"),
        vec![]
    );
    let warnings = a.observe().await.expect("observe").warnings;
    assert!(
        warnings.iter().any(|w| w.contains("did not answer within")),
        "{warnings:?}"
    );
    // The next poll gets the document, and the warning goes.
    let seen = a.scheduled_maintenance().await.expect("events");
    assert_eq!(
        seen.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        vec![id]
    );
    let warnings = a.observe().await.expect("observe").warnings;
    assert!(
        !warnings.iter().any(|w| w.contains("scheduled events")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn imds_refusing_the_document_is_a_transient_error() {
    let cloud = Cloud::start(100).await;
    let a = cloud.provider("a");
    cloud.emu.push_fault(Fault::respond(
        "GET",
        "/metadata/scheduledevents",
        500,
        "internal_error",
        "boom",
    ));
    let err = a.scheduled_maintenance().await.expect_err("500");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("500"), "{err}");
}

#[tokio::test]
async fn unreachable_imds_means_no_maintenance_and_a_failed_ack() {
    let cloud = Cloud::start(100).await;
    let mut config = cloud.config("a");
    // A loopback port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    config.imds_endpoint = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let a = cloud.provider_with("a", config);
    assert_eq!(
        a.scheduled_maintenance().await.expect("not an error"),
        vec![]
    );
    let warnings = a.observe().await.expect("observe").warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("scheduled events not watched")),
        "{warnings:?}"
    );
    let err = a
        .acknowledge_maintenance("602d9444-d2cd-49c7-8624-8643e7171297")
        .await
        .expect_err("nobody to tell");
    assert!(err.is_retryable(), "{err}");
}
