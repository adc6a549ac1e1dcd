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

/// Regression (campaign seed 416): across a partition, the standby's removal from the peer's
/// NIC completed, and before its add went through, the still-active peer's reconcile found the
/// address on no NIC and put it back on its own. The add then met `PrivateIPAddressInUse`
/// after the removal was done, and waited for an address nothing would free, to the deadline.
/// The attempt must end instead, so that the takeover's retry removes the address again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_the_peer_takes_back_after_the_removal_is_removed_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Mutex, Weak};

    const HELD: Duration = Duration::from_secs(3);
    let cloud = Cloud::start(200).await;
    let a_with_address = cloud.emu.nic("nic-appliance-a").expect("nic a");
    // B's first PUT of its own NIC (the add, refused while A lets go) queues a hold on the next
    // one, the add's retry once the removal was verified; that one tells the test it came.
    let (arrived_tx, arrived_rx) = mpsc::channel::<()>();
    let arrived_tx = Mutex::new(arrived_tx);
    let emu: Weak<_> = Arc::downgrade(&cloud.emu);
    let puts = AtomicUsize::new(0);
    cloud.emu.set_request_hook(Some(Arc::new(move |req| {
        if req.method != "PUT" || !req.path.contains("networkInterfaces/nic-appliance-b") {
            return;
        }
        match puts.fetch_add(1, Ordering::SeqCst) {
            0 => {
                if let Some(emu) = emu.upgrade() {
                    let path = "networkInterfaces/nic-appliance-b";
                    emu.push_fault(Fault::delay("PUT", path, HELD.as_millis() as u64).times(1));
                }
            }
            1 => {
                let _ = arrived_tx.lock().map(|tx| tx.send(()));
            }
            _ => {}
        }
    })));
    let b = Arc::new(cloud.provider("b"));
    let attempt = {
        let b = b.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = b
                .take_over(&request(DEADLINE), &ProgressReporter::discard())
                .await;
            (result, started.elapsed())
        })
    };
    tokio::task::spawn_blocking(move || arrived_rx.recv_timeout(Duration::from_secs(20)))
        .await
        .expect("join")
        .expect("B's add retried after the removal");
    assert_eq!(cloud.holder_of_floating(), None, "removed from A, not on B");
    // A's repair: the address back on A, while B's retry is held.
    cloud.put_nic("nic-appliance-a", &a_with_address).await;
    let unanswered = cloud
        .emu
        .requests()
        .iter()
        .filter(|r| r.is("PUT", "networkInterfaces/nic-appliance-b") && r.status == 0)
        .count();
    assert_eq!(
        unanswered, 1,
        "B's add still held ({HELD:?}) when A's repair landed"
    );

    let (result, took) = attempt.await.expect("join");
    match result {
        Err(ProviderError::Transient { message, .. }) => {
            assert!(message.contains("PrivateIPAddress"), "{message}")
        }
        other => panic!("expected the attempt to end on the address in use: {other:?}"),
    }
    assert!(took < HELD * 3, "ended at once, took {took:?}");
    let holder = cloud.holder_of_floating().expect("on a NIC");
    assert!(holder.contains("nic-appliance-a"), "{holder}");

    // The daemon's retry: removes it from A again and adds it to B.
    cloud.emu.set_request_hook(None);
    let report = b
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .expect("the retry moves it");
    assert!(report.changed);
    let holder = cloud.holder_of_floating().expect("on a NIC");
    assert!(holder.contains("nic-appliance-b"), "{holder}");
}

/// Seed 106: while the peer's removal from this node's NIC propagates, reconcile on this node
/// sees the IP on no NIC. The observation names the NIC with the update in flight, so the
/// daemon waits for it instead of repairing; once the move has ended nothing is listed.
#[tokio::test]
async fn a_nic_updating_through_the_peers_write_is_reported_in_flight() {
    let cloud = Cloud::start(2000).await;
    let a = cloud.provider("a");
    let b = cloud.provider("b");
    let before = a.observe().await.expect("observe");
    assert!(before.writes_in_flight.is_empty(), "{before:?}");
    let takeover = tokio::spawn(async move {
        b.take_over(&request(DEADLINE), &ProgressReporter::discard())
            .await
    });
    // The removal from A's NIC, not any operation: the route PUT starts at once, while the NIC
    // path first reads both NICs and checks its permissions.
    let mut waited = 0;
    while cloud.emu.nic_operations_in_progress("nic-appliance-a") == 0 {
        assert!(waited < 500, "the peer's removal never started");
        waited += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let during = a.observe().await.expect("observe");
    assert_eq!(
        during.writes_in_flight,
        vec!["nic nic-appliance-a".to_string()],
        "{during:?}"
    );
    assert!(
        during.resources.iter().any(|r| r.holder == Holder::Nobody),
        "the IP is on no NIC while the removal propagates: {during:?}"
    );
    takeover.await.expect("join").expect("takeover");
    let after = a.observe().await.expect("observe");
    assert!(after.writes_in_flight.is_empty(), "{after:?}");
    assert!(
        after.resources.iter().all(|r| r.holder == Holder::Peer),
        "{after:?}"
    );
}
