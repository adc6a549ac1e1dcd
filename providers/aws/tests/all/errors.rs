//! Real moto errors for resources that do not exist, mapped to permanent errors with a fix; and
//! a peer ENI that vanished, which must not stop a takeover.

use std::time::Duration;

use cloudha_provider_aws::AwsProvider;
use cloudha_provider_core::{NextHop, ProgressReporter, Provider, ProviderError, RouteSpec};

use crate::common::proxy::Proxy;
use crate::common::world::{credentials, request, World, FIP_1, FIP_2};

const DEADLINE: Duration = Duration::from_secs(30);
const NO_SUCH_ENI: &str = "eni-0123456789abcdef0";

fn fix(err: &ProviderError) -> &str {
    match err {
        ProviderError::Permanent { fix, .. } => fix,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_own_eni_fails_health_with_a_fix() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    let a = world.provider(&proxy, NO_SUCH_ENI, &world.eni_b).await;
    let err = a.health().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("InvalidNetworkInterfaceID.NotFound"),
        "{err}"
    );
    assert!(fix(&err).contains("provider.aws.own_eni"), "{err}");
    // Permanent: asked once, not retried.
    assert_eq!(proxy.counts()["DescribeNetworkInterfaces"], 1);
    let err = a
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

#[tokio::test]
async fn an_unknown_route_table_is_permanent_and_names_the_setting() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    let routes = vec![RouteSpec {
        table: "rtb-0123456789abcdef0".into(),
        name: "default".into(),
        prefix: "0.0.0.0/0".into(),
        next_hop: NextHop::FloatingIp,
    }];
    let a = AwsProvider::with_credentials(
        world.config(&proxy, &world.eni_a, &world.eni_b),
        world.floating_ips(),
        vec![],
        routes,
        credentials(),
    )
    .await
    .unwrap();
    let err = a
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .unwrap_err();
    assert!(fix(&err).contains("[[route]]"), "{err}");
    // The addresses moved all the same: the route error does not cancel them.
    assert!(world.addresses(&world.eni_a).await.contains(&FIP_1));
}

#[tokio::test]
async fn a_peer_eni_that_no_longer_exists_does_not_stop_the_takeover() {
    let world = World::new().await;
    // The peer's instance was terminated and its ENI deleted with it.
    world
        .ec2
        .disassociate_address()
        .association_id(
            world
                .ec2
                .describe_addresses()
                .allocation_ids(&world.allocation)
                .send()
                .await
                .unwrap()
                .addresses()[0]
                .association_id()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    world
        .ec2
        .delete_network_interface()
        .network_interface_id(&world.eni_b)
        .send()
        .await
        .unwrap();
    let proxy = Proxy::start(world.moto.port).await;
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    let report = a
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .unwrap();
    assert!(report.changed);
    assert_eq!(report.api_calls.get("UnassignPrivateIpAddresses"), None);
    let on_a = world.addresses(&world.eni_a).await;
    assert!(on_a.contains(&FIP_1) && on_a.contains(&FIP_2));
    assert_eq!(world.eip_eni().await.as_deref(), Some(world.eni_a.as_str()));
    assert_eq!(
        world
            .route_target(&world.rt_1, "0.0.0.0/0")
            .await
            .as_deref(),
        Some(world.eni_a.as_str())
    );
}
