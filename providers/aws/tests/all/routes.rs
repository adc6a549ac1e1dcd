//! Routes: created when missing, and the fallbacks between ReplaceRoute and CreateRoute when the
//! table changed after it was read.

use std::time::Duration;

use cloudha_provider_core::{Holder, ProgressReporter, Provider};

use crate::common::proxy::{Fault, Proxy};
use crate::common::world::{request, World, DEFAULT, ONPREM};

const DEADLINE: Duration = Duration::from_secs(30);

async fn delete_route(world: &World, table: &str, prefix: &str) {
    world
        .ec2
        .delete_route()
        .route_table_id(table)
        .destination_cidr_block(prefix)
        .send()
        .await
        .unwrap();
    assert_eq!(world.route_target(table, prefix).await, None);
}

#[tokio::test]
async fn a_missing_route_is_created() {
    let world = World::new().await;
    delete_route(&world, &world.rt_2, DEFAULT).await;
    let proxy = Proxy::start(world.moto.port).await;
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;

    let before = a.observe().await.unwrap();
    let missing = before
        .resources
        .iter()
        .find(|r| r.resource == format!("route {}/default", world.rt_2))
        .unwrap();
    assert_eq!(missing.holder, Holder::Nobody);

    let report = a
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .unwrap();
    assert_eq!(report.api_calls.get("CreateRoute"), Some(&1));
    assert_eq!(report.api_calls.get("ReplaceRoute"), Some(&2));
    let create = proxy
        .log()
        .into_iter()
        .find(|r| r.action == "CreateRoute")
        .unwrap();
    assert_eq!(create.params["RouteTableId"], world.rt_2);
    assert_eq!(create.params["DestinationCidrBlock"], DEFAULT);
    assert_eq!(create.params["NetworkInterfaceId"], world.eni_a);
    assert_eq!(
        world.route_target(&world.rt_2, DEFAULT).await.as_deref(),
        Some(world.eni_a.as_str())
    );
    assert_eq!(
        a.observe().await.unwrap().overall_holder(),
        Some(Holder::Me)
    );
}

#[tokio::test]
async fn a_route_gone_since_the_read_is_created_instead_of_replaced() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    // What EC2 answers when the route disappeared between DescribeRouteTables and ReplaceRoute.
    proxy.inject(
        "ReplaceRoute",
        Fault::Error {
            status: 400,
            code: "InvalidRoute.NotFound",
        },
        1,
    );
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    let report = a
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .unwrap();
    assert_eq!(report.api_calls.get("ReplaceRoute"), Some(&3));
    assert_eq!(report.api_calls.get("CreateRoute"), Some(&1));
    for (table, prefix) in [
        (&world.rt_1, DEFAULT),
        (&world.rt_1, ONPREM),
        (&world.rt_2, DEFAULT),
    ] {
        assert_eq!(
            world.route_target(table, prefix).await.as_deref(),
            Some(world.eni_a.as_str())
        );
    }
}

#[tokio::test]
async fn a_route_that_appears_and_vanishes_again_is_followed_both_ways() {
    let world = World::new().await;
    delete_route(&world, &world.rt_2, DEFAULT).await;
    let proxy = Proxy::start(world.moto.port).await;
    // Read as missing, then "already exists" on create: the provider replaces it, moto says
    // there is no such route (it really is missing), and the provider creates it after all.
    proxy.inject(
        "CreateRoute",
        Fault::Error {
            status: 400,
            code: "RouteAlreadyExists",
        },
        1,
    );
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    let report = a
        .take_over(&request(DEADLINE), &ProgressReporter::discard())
        .await
        .unwrap();
    assert_eq!(report.api_calls.get("CreateRoute"), Some(&2));
    assert_eq!(report.api_calls.get("ReplaceRoute"), Some(&3));
    assert_eq!(
        world.route_target(&world.rt_2, DEFAULT).await.as_deref(),
        Some(world.eni_a.as_str())
    );
}
