//! Throttling, server errors, hung requests and the deadline, injected by the proxy.

use std::time::{Duration, Instant};

use cloudha_provider_aws::RetryPolicy;
use cloudha_provider_core::{Holder, ProgressEvent, ProgressReporter, Provider, ProviderError};
use tokio::sync::mpsc;

use crate::common::proxy::{Fault, Proxy};
use crate::common::world::{request, World, FIP_1, FIP_2};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn throttling_and_server_errors_are_retried_until_the_takeover_succeeds() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    let throttled = |status| Fault::Error {
        status,
        code: "RequestLimitExceeded",
    };
    proxy.inject("AssignPrivateIpAddresses", throttled(503), 2);
    proxy.inject("ReplaceRoute", throttled(400), 1);
    proxy.inject(
        "DescribeNetworkInterfaces",
        Fault::Error {
            status: 500,
            code: "InternalError",
        },
        1,
    );
    proxy.inject(
        "AssociateAddress",
        Fault::Error {
            status: 503,
            code: "Unavailable",
        },
        1,
    );
    proxy.inject("DescribeRouteTables", Fault::Status(502), 1);
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let report = a
        .take_over(&request(DEADLINE), &ProgressReporter::new(tx))
        .await
        .unwrap();
    assert!(report.changed);
    assert_eq!(report.api_calls["AssignPrivateIpAddresses"], 3);
    assert_eq!(report.api_calls["AssociateAddress"], 2);
    assert_eq!(report.api_calls["ReplaceRoute"], 4);
    assert_eq!(report.api_calls["DescribeNetworkInterfaces"], 4);
    assert_eq!(report.api_calls["DescribeRouteTables"], 3);
    assert_eq!(report.api_calls, proxy.counts());
    let faulted = proxy.log().iter().filter(|r| r.fault.is_some()).count();
    assert_eq!(faulted, 6, "every queued fault was served");

    let mut statuses = Vec::new();
    let mut notes = Vec::new();
    while let Ok(event) = rx.try_recv() {
        match event {
            ProgressEvent::ApiCall {
                operation, status, ..
            } => statuses.push((operation, status)),
            ProgressEvent::Note { message } => notes.push(message),
            _ => {}
        }
    }
    for (operation, status) in [
        ("AssignPrivateIpAddresses", 503),
        ("ReplaceRoute", 400),
        ("DescribeNetworkInterfaces", 500),
        ("AssociateAddress", 503),
        ("DescribeRouteTables", 502),
    ] {
        assert!(
            statuses.contains(&(operation.to_string(), status)),
            "{operation} {status} not reported: {statuses:?}"
        );
    }
    assert!(
        notes.iter().any(|n| n.contains("RequestLimitExceeded")),
        "{notes:?}"
    );

    let on_a = world.addresses(&world.eni_a).await;
    assert!(on_a.contains(&FIP_1) && on_a.contains(&FIP_2));
    assert_eq!(
        a.observe().await.unwrap().overall_holder(),
        Some(Holder::Me)
    );
}

#[tokio::test]
async fn a_hung_request_is_abandoned_and_retried() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    proxy.inject(
        "DescribeRouteTables",
        Fault::Delay(Duration::from_secs(10)),
        1,
    );
    let a = world
        .provider(&proxy, &world.eni_a, &world.eni_b)
        .await
        .with_retry_policy(RetryPolicy {
            attempt_timeout: Duration::from_millis(500),
            ..RetryPolicy::default()
        });
    let started = Instant::now();
    let report = a
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "waited for the hung request: {:?}",
        started.elapsed()
    );
    // The hung read, its retry, and the read that verifies the routes.
    assert_eq!(report.api_calls["DescribeRouteTables"], 3);
    assert_eq!(
        world
            .route_target(&world.rt_2, "0.0.0.0/0")
            .await
            .as_deref(),
        Some(world.eni_a.as_str())
    );
}

#[tokio::test]
async fn a_takeover_past_its_deadline_returns_deadline_exceeded() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    proxy.inject(
        "AssignPrivateIpAddresses",
        Fault::Error {
            status: 503,
            code: "RequestLimitExceeded",
        },
        1000,
    );
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    let deadline = Duration::from_millis(1500);
    let started = Instant::now();
    let err = a
        .take_over(&request(deadline), &ProgressReporter::discard())
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(
            &err,
            ProviderError::DeadlineExceeded { operation, deadline: d }
                if operation == "AssignPrivateIpAddresses" && *d == deadline
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(
        elapsed < deadline + Duration::from_millis(500),
        "overran the deadline: {elapsed:?}"
    );
    let attempts = proxy.counts()["AssignPrivateIpAddresses"];
    assert!(attempts >= 2, "throttling was not retried ({attempts})");
    assert!(!world.addresses(&world.eni_a).await.contains(&FIP_1));
}

#[tokio::test]
async fn permission_denied_is_permanent_with_a_fix_and_not_retried() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    proxy.inject(
        "AssignPrivateIpAddresses",
        Fault::Error {
            status: 403,
            code: "UnauthorizedOperation",
        },
        1,
    );
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    let err = a
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .unwrap_err();
    match &err {
        ProviderError::Permanent {
            operation,
            message,
            fix,
        } => {
            assert_eq!(operation, "AssignPrivateIpAddresses");
            assert!(message.contains("UnauthorizedOperation"), "{message}");
            assert!(fix.contains("ec2:AssignPrivateIpAddresses"), "{fix}");
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(proxy.counts()["AssignPrivateIpAddresses"], 1);
}

#[tokio::test]
async fn a_refused_unassign_is_checked_by_reading_the_enis_again() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    // What EC2 answers when the peer ENI lost the addresses between our read and the unassign.
    proxy.inject(
        "UnassignPrivateIpAddresses",
        Fault::Error {
            status: 400,
            code: "InvalidParameterValue",
        },
        1,
    );
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    let report = a
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .unwrap();
    // moto still shows them on b after the refusal, so the second unassign really removes them.
    assert_eq!(report.api_calls["UnassignPrivateIpAddresses"], 2);
    assert_eq!(report.api_calls["DescribeNetworkInterfaces"], 4);
    let on_b = world.addresses(&world.eni_b).await;
    assert!(!on_b.contains(&FIP_1) && !on_b.contains(&FIP_2), "{on_b:?}");
}
