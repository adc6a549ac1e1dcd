//! Each fault class injected during a failover, and survived (or reported as it should be).

use std::time::Duration;

use cloudha_azure_emulator::{ConflictMode, Fault};
use cloudha_provider_core::{Holder, ProgressReporter, Provider, ProviderError, TakeoverRequest};

use crate::harness::*;

fn request(deadline: Duration) -> TakeoverRequest {
    TakeoverRequest { epoch: 2, deadline }
}

/// Inject `faults`, take over on B, and check the move completed and every fault was consumed.
async fn survives(faults: Vec<Fault>) -> Cloud {
    let cloud = Cloud::start(300).await;
    for f in faults {
        cloud.emu.push_fault(f);
    }
    let b = cloud.provider("b");
    let report = b
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .expect("takeover survives the fault");
    assert!(report.changed);
    assert!(
        cloud.emu.pending_faults().is_empty(),
        "every injected fault was hit: {:?}",
        cloud.emu.pending_faults()
    );
    assert!(cloud
        .holder_of_floating()
        .expect("held")
        .contains("nic-appliance-b"));
    assert_eq!(cloud.route_next_hop().as_deref(), Some(ADDR_B));
    let obs = b.observe().await.expect("observe");
    assert!(
        obs.resources.iter().all(|r| r.holder == Holder::Me),
        "{obs:?}"
    );
    cloud
}

#[tokio::test]
async fn throttling_429_with_retry_after_on_the_peer_nic() {
    let cloud = survives(vec![Fault::throttled(
        "PUT",
        "networkInterfaces/nic-appliance-a",
        1,
    )
    .times(2)])
    .await;
    let puts = cloud
        .emu
        .count_requests("PUT", "networkInterfaces/nic-appliance-a");
    assert_eq!(puts, 3, "two refused, one accepted");
}

#[tokio::test]
async fn conflict_409_another_operation_in_progress() {
    survives(vec![
        Fault::another_operation_in_progress("PUT", "networkInterfaces/nic-appliance-b"),
        Fault::another_operation_in_progress("PUT", "routes/default-via-appliance"),
    ])
    .await;
}

#[tokio::test]
async fn precondition_412_rereads_and_reapplies() {
    let cloud = survives(vec![Fault::precondition_failed(
        "PUT",
        "networkInterfaces/nic-appliance-a",
    )])
    .await;
    // The NIC was read again after the 412.
    let log = cloud.emu.requests();
    let put_412 = log
        .iter()
        .position(|r| r.method == "PUT" && r.status == 412)
        .expect("412 seen");
    assert!(log[put_412..]
        .iter()
        .any(|r| r.method == "GET" && r.path.ends_with("nic-appliance-a")));
}

#[tokio::test]
async fn server_errors_5xx_on_writes_reads_and_polls() {
    survives(vec![
        Fault::internal_error("PUT", "networkInterfaces/nic-appliance-b"),
        Fault::service_unavailable("GET", "networkInterfaces/nic-appliance-a", 1),
        Fault::internal_error("GET", "/operations/"),
    ])
    .await;
}

#[tokio::test]
async fn a_failed_operation_is_retried() {
    survives(vec![Fault::operation_fails(
        "PUT",
        "networkInterfaces/nic-appliance-b",
        "InternalServerError",
        "An error occurred.",
    )])
    .await;
}

#[tokio::test]
async fn retryable_error_conflict_mode() {
    let cloud = Cloud::start(800).await;
    cloud.emu.set_conflict_mode(ConflictMode::RetryableError);
    // A write still propagating on B's NIC makes the takeover meet 429 RetryableError.
    let b = cloud.provider("b");
    let (req, progress) = (request(DEADLINE), ProgressReporter::discard());
    let first = b.take_over(&req, &progress);
    let second = b.take_over(&req, &progress);
    let (x, y) = tokio::join!(first, second);
    x.expect("first");
    y.expect("second");
    assert!(cloud
        .holder_of_floating()
        .expect("held")
        .contains("nic-appliance-b"));
}

#[tokio::test]
async fn private_ip_in_use_while_the_peer_lets_go_is_retried() {
    let cloud = Cloud::start(1500).await;
    let b = cloud.provider("b");
    let mut rec = Recorder::new();
    b.take_over(&request(DEADLINE), &rec.reporter)
        .await
        .expect("takeover");
    let refused: Vec<_> = cloud
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("nic-appliance-b") && r.status == 400)
        .collect();
    assert!(
        !refused.is_empty(),
        "the add met PrivateIPAddressInUse at least once"
    );
    assert!(rec.events().iter().any(|e| matches!(e,
        cloudha_provider_core::ProgressEvent::Note { message } if message.contains("PrivateIPAddressInUse"))));
}

#[tokio::test]
async fn slow_responses_within_the_deadline() {
    survives(vec![Fault::delay(
        "PUT",
        "networkInterfaces/nic-appliance-a",
        1500,
    )])
    .await;
}

/// A write that never answers is abandoned after the request timeout and retried; the takeover
/// does not wait for the hung answer (the campaign saw a 30 s timeout hold a failover 31 s).
#[tokio::test]
async fn a_hung_write_is_abandoned_after_the_request_timeout_and_retried() {
    let hang = cloudha_provider_azure::arm::REQUEST_TIMEOUT + Duration::from_secs(10);
    let started = std::time::Instant::now();
    let cloud = survives(vec![Fault::delay(
        "PUT",
        "networkInterfaces/nic-appliance-a",
        u64::try_from(hang.as_millis()).expect("fits"),
    )])
    .await;
    let took = started.elapsed();
    assert!(
        took < hang,
        "the takeover waited {took:?} for an answer held {hang:?}"
    );
    let puts = cloud
        .emu
        .count_requests("PUT", "networkInterfaces/nic-appliance-a");
    assert!(puts >= 2, "the hung PUT was sent again ({puts} PUTs)");
}

#[tokio::test]
async fn the_deadline_is_reported_when_propagation_is_slower() {
    let cloud = Cloud::start(5000).await;
    let b = cloud.provider("b");
    let started = std::time::Instant::now();
    let err = b
        .take_over(
            &request(Duration::from_secs(2)),
            &ProgressReporter::discard(),
        )
        .await
        .expect_err("cannot finish in 2 s");
    assert!(err.is_retryable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "gave up near the deadline"
    );
}

#[tokio::test]
async fn missing_permission_is_permanent_and_names_the_fix() {
    let cloud = Cloud::start(100).await;
    assert!(cloud.emu.set_permissions(
        "vm-appliance-b",
        &[
            "Microsoft.Network/*/read",
            "Microsoft.Network/routeTables/routes/write",
            "Microsoft.Network/virtualNetworks/subnets/join/action",
            "Microsoft.Network/publicIPAddresses/join/action"
        ],
        &[],
    ));
    let b = cloud.provider("b");
    let err = b
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .expect_err("no networkInterfaces/write");
    match err {
        ProviderError::Permanent { message, fix, .. } => {
            assert!(message.contains("AuthorizationFailed"), "{message}");
            assert!(message.contains("networkInterfaces/write"), "{message}");
            assert!(fix.contains("managed identity"), "{fix}");
        }
        other => panic!("expected permanent, got {other}"),
    }
    // Nothing was removed from A: a refused failover never strips the peer.
    assert!(cloud
        .holder_of_floating()
        .expect("held")
        .contains("nic-appliance-a"));
}
