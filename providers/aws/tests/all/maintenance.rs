//! Maintenance notices from a fake IMDSv2 (session token required, as on EC2): a spot
//! interruption, scheduled events, none, and an IMDS that is not there.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};

use cloudha_provider_aws::{AwsConfig, AwsProvider};
use cloudha_provider_core::maintenance::now_unix_ms;
use cloudha_provider_core::Provider;

use crate::common::imds::FakeImds;
use crate::common::proxy::Proxy;
use crate::common::world::{credentials, World};

const SPOT: &str = "/latest/meta-data/spot/instance-action";
const SCHEDULED: &str = "/latest/meta-data/events/maintenance/scheduled";

/// A provider for node A whose IMDS is `imds_url`.
async fn provider(world: &World, proxy: &Proxy, imds_url: &str) -> AwsProvider {
    let config = AwsConfig {
        imds_endpoint: Some(imds_url.to_string()),
        ..world.config(proxy, &world.eni_a, &world.eni_b)
    };
    AwsProvider::with_credentials(
        config,
        world.floating_ips(),
        world.elastic_ips(),
        world.routes(),
        credentials(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn spot_notice_and_scheduled_events_come_and_go() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    let imds = FakeImds::start(BTreeMap::new()).await;
    let a = provider(&world, &proxy, &imds.url).await;

    // Nothing announced: both paths answer 404.
    assert_eq!(a.scheduled_maintenance().await.unwrap(), vec![]);
    let seen = imds.seen();
    assert!(seen.paths.iter().any(|p| p == SPOT), "{:?}", seen.paths);
    assert!(
        seen.paths.iter().any(|p| p == SCHEDULED),
        "{:?}",
        seen.paths
    );
    assert_eq!(
        seen.refused, 0,
        "IMDSv2: every read carries the session token"
    );

    // A spot interruption announced.
    imds.set(
        SPOT,
        Some(r#"{"action": "terminate", "time": "2099-01-21T09:00:43Z"}"#),
    );
    let events = a.scheduled_maintenance().await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, "spot-terminate");
    assert_eq!(events[0].id, "spot-terminate-2099-01-21T09:00:43Z");
    assert!(events[0].needs_handover);
    assert!(!events[0].in_progress);
    assert_eq!(events[0].not_before_unix_ms, Some(4_072_669_243_000));

    // A scheduled reboot beside it; a completed event is history, not maintenance.
    imds.set(
        SCHEDULED,
        Some(
            r#"[{"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "system-reboot",
                 "Description": "scheduled reboot", "EventId": "instance-event-0d59937288b749b32",
                 "NotAfter": "21 Jan 2099 09:17:23 GMT", "State": "active"},
                {"NotBefore": "20 Jan 2019 09:00:43 GMT", "Code": "instance-stop",
                 "Description": "[Completed] stop", "EventId": "instance-event-1",
                 "State": "completed"}]"#,
        ),
    );
    let events = a.scheduled_maintenance().await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["spot-terminate", "system-reboot"]
    );
    let reboot = &events[1];
    assert_eq!(reboot.id, "instance-event-0d59937288b749b32");
    assert_eq!(reboot.not_before_unix_ms, Some(1_548_061_243_000));
    assert!(reboot.needs_handover);
    assert!(
        reboot.in_progress,
        "its NotBefore is past ({} ms now)",
        now_unix_ms()
    );
    // EC2 needs no acknowledgement: nothing is sent.
    let reads = imds.seen().paths.len();
    a.acknowledge_maintenance(&reboot.id).await.unwrap();
    assert_eq!(imds.seen().paths.len(), reads);

    // Both notices gone.
    imds.set(SPOT, None);
    imds.set(SCHEDULED, Some("[]"));
    assert_eq!(a.scheduled_maintenance().await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_malformed_notice_is_a_transient_error() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    let mut values = BTreeMap::new();
    values.insert(SPOT.to_string(), "terminate soon".to_string());
    let imds = FakeImds::start(values).await;
    let a = provider(&world, &proxy, &imds.url).await;
    let err = a.scheduled_maintenance().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("spot/instance-action"), "{err}");
}

#[tokio::test]
async fn unreachable_imds_means_no_maintenance_with_a_warning() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    // A loopback port with nothing listening.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let a = provider(&world, &proxy, &format!("http://{closed}")).await;
    assert_eq!(a.scheduled_maintenance().await.unwrap(), vec![]);
    let warnings = a.observe().await.unwrap().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("no maintenance assumed")),
        "{warnings:?}"
    );
}
