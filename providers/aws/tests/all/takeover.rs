//! Failover end to end: node a takes everything over from node b, verified through the API.

use std::collections::BTreeMap;
use std::time::Duration;

use cloudha_provider_core::{Holder, ProgressEvent, ProgressReporter, Provider};
use tokio::sync::mpsc;

use crate::common::proxy::{mutating, Proxy};
use crate::common::world::{request, World, DEFAULT, FIP_1, FIP_2, ONPREM};

const DEADLINE: Duration = Duration::from_secs(30);

fn counts(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn holders(observation: &cloudha_provider_core::Observation) -> Vec<Holder> {
    observation.resources.iter().map(|r| r.holder).collect()
}

#[tokio::test]
async fn takeover_moves_addresses_elastic_ip_and_routes_and_verifies_them() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;

    let before = a.observe().await.unwrap();
    assert_eq!(before.resources.len(), 2 + 1 + 3);
    assert_eq!(before.overall_holder(), Some(Holder::Peer), "{before:?}");
    assert!(
        mutating(&proxy.counts()).is_empty(),
        "observe changed something"
    );
    proxy.clear();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let report = a
        .take_over(&request(DEADLINE), &ProgressReporter::new(tx))
        .await
        .unwrap();
    assert!(report.changed);
    // The calls per failover that the README quotes: one assign for both addresses, one
    // unassign (moto leaves them on the peer too), one re-association, one replace per route.
    assert_eq!(
        report.api_calls,
        counts(&[
            ("AssignPrivateIpAddresses", 1),
            ("AssociateAddress", 1),
            ("DescribeAddresses", 2),
            ("DescribeNetworkInterfaces", 3),
            ("DescribeRouteTables", 2),
            ("ReplaceRoute", 3),
            ("UnassignPrivateIpAddresses", 1),
        ])
    );
    assert_eq!(
        report.api_calls,
        proxy.counts(),
        "report disagrees with the wire"
    );

    // What went over the wire: both addresses in one call, reassignment and reassociation
    // allowed explicitly.
    let log = proxy.log();
    let assign: Vec<_> = log
        .iter()
        .filter(|r| r.action == "AssignPrivateIpAddresses")
        .collect();
    assert_eq!(assign[0].params["NetworkInterfaceId"], world.eni_a);
    assert_eq!(assign[0].params["AllowReassignment"], "true");
    let mut assigned: Vec<&str> = assign[0]
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("PrivateIpAddress"))
        .map(|(_, v)| v.as_str())
        .collect();
    assigned.sort_unstable();
    assert_eq!(assigned, [FIP_1.to_string(), FIP_2.to_string()]);
    let associate = log.iter().find(|r| r.action == "AssociateAddress").unwrap();
    assert_eq!(associate.params["AllowReassociation"], "true");
    assert_eq!(associate.params["PrivateIpAddress"], FIP_1.to_string());
    assert_eq!(associate.params["NetworkInterfaceId"], world.eni_a);
    let unassign = log
        .iter()
        .find(|r| r.action == "UnassignPrivateIpAddresses")
        .unwrap();
    assert_eq!(unassign.params["NetworkInterfaceId"], world.eni_b);

    // Read back through the API.
    let on_a = world.addresses(&world.eni_a).await;
    assert!(on_a.contains(&FIP_1) && on_a.contains(&FIP_2), "{on_a:?}");
    let on_b = world.addresses(&world.eni_b).await;
    assert!(!on_b.contains(&FIP_1) && !on_b.contains(&FIP_2), "{on_b:?}");
    assert_eq!(world.eip_eni().await.as_deref(), Some(world.eni_a.as_str()));
    for (table, prefix) in [
        (&world.rt_1, DEFAULT),
        (&world.rt_1, ONPREM),
        (&world.rt_2, DEFAULT),
    ] {
        assert_eq!(
            world.route_target(table, prefix).await.as_deref(),
            Some(world.eni_a.as_str()),
            "{table} {prefix}"
        );
    }

    // Progress: every request reported with its status, every operation finished ok.
    let mut api_calls = 0;
    let mut open = BTreeMap::new();
    while let Ok(event) = rx.try_recv() {
        match event {
            ProgressEvent::ApiCall { status, .. } => {
                assert_eq!(status, 200);
                api_calls += 1;
            }
            ProgressEvent::OperationStarted { id, .. } => {
                open.insert(id, ());
            }
            ProgressEvent::OperationFinished { id, outcome, .. } => {
                assert_eq!(outcome, "ok", "{id}");
                assert!(open.remove(&id).is_some(), "{id} finished without starting");
            }
            ProgressEvent::Note { .. } => {}
        }
    }
    assert!(open.is_empty(), "unfinished operations: {open:?}");
    assert_eq!(api_calls, report.api_calls.values().sum::<u32>());

    proxy.clear();
    let after = a.observe().await.unwrap();
    assert_eq!(after.overall_holder(), Some(Holder::Me), "{after:?}");
    assert!(mutating(&proxy.counts()).is_empty());
}

#[tokio::test]
async fn a_second_takeover_makes_no_change_and_only_reads() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    let progress = ProgressReporter::discard();
    assert!(
        a.take_over(&request(DEADLINE), &progress)
            .await
            .unwrap()
            .changed
    );
    proxy.clear();

    let again = a.take_over(&request(DEADLINE), &progress).await.unwrap();
    assert!(!again.changed);
    assert_eq!(
        again.api_calls,
        counts(&[
            ("DescribeAddresses", 1),
            ("DescribeNetworkInterfaces", 1),
            ("DescribeRouteTables", 1),
        ])
    );
    assert_eq!(again.api_calls, proxy.counts());
    assert!(mutating(&proxy.counts()).is_empty());
}

#[tokio::test]
async fn two_nodes_fail_over_back_and_forth() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    let b = world.provider(&proxy, &world.eni_b, &world.eni_a).await;
    let progress = ProgressReporter::discard();

    a.take_over(&request(DEADLINE), &progress).await.unwrap();
    assert_eq!(holders(&b.observe().await.unwrap()), vec![Holder::Peer; 6]);

    // b takes everything back, as after a's failure.
    let report = b.take_over(&request(DEADLINE), &progress).await.unwrap();
    assert!(report.changed);
    assert_eq!(report.api_calls["AssociateAddress"], 1);
    let on_b = world.addresses(&world.eni_b).await;
    assert!(on_b.contains(&FIP_1) && on_b.contains(&FIP_2));
    assert!(!world.addresses(&world.eni_a).await.contains(&FIP_1));
    assert_eq!(world.eip_eni().await.as_deref(), Some(world.eni_b.as_str()));
    assert_eq!(
        world.route_target(&world.rt_2, DEFAULT).await.as_deref(),
        Some(world.eni_b.as_str())
    );
    // a sees b's association as b's even though a made the previous one itself.
    assert_eq!(holders(&a.observe().await.unwrap()), vec![Holder::Peer; 6]);
    assert_eq!(holders(&b.observe().await.unwrap()), vec![Holder::Me; 6]);

    a.take_over(&request(DEADLINE), &progress).await.unwrap();
    assert_eq!(holders(&a.observe().await.unwrap()), vec![Holder::Me; 6]);
    assert_eq!(world.eip_eni().await.as_deref(), Some(world.eni_a.as_str()));
}

#[tokio::test]
async fn release_changes_nothing() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    a.release(&ProgressReporter::discard()).await.unwrap();
    assert!(proxy.log().is_empty());
    assert_eq!(a.kind(), "aws");
}

/// Campaign seed 6 (AWS): a node restarted during the peer's takeover went active for a moment
/// before it heard the peer, and its own takeover unassigned the floating IPs from the peer's
/// ENI right after the peer had assigned them to itself: they ended on neither ENI, and the
/// peer waited for EC2 "to finish moving" them until its deadline. Here the test plays that
/// node: while a's unassign from b's ENI (the move's cleanup, moto keeps a reassigned address
/// on both) is held at the proxy, the addresses are unassigned from a's ENI straight at moto.
/// The takeover must assign them again, not wait for the deadline.
#[tokio::test]
async fn addresses_removed_by_another_writer_during_the_move_are_assigned_again() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    const HELD: Duration = Duration::from_secs(2);
    proxy.inject(
        "UnassignPrivateIpAddresses",
        crate::common::proxy::Fault::Delay(HELD),
        1,
    );
    let takeover = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = a
            .take_over(&request(DEADLINE), &ProgressReporter::discard())
            .await;
        (result, started.elapsed())
    });
    // The cleanup's unassign has arrived (and is held): a's assign has been applied.
    let mut waited = 0;
    while !proxy
        .log()
        .iter()
        .any(|r| r.action == "UnassignPrivateIpAddresses")
    {
        assert!(waited < 300, "the cleanup's unassign never came");
        waited += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    world
        .ec2
        .unassign_private_ip_addresses()
        .network_interface_id(&world.eni_a)
        .private_ip_addresses(FIP_1.to_string())
        .private_ip_addresses(FIP_2.to_string())
        .send()
        .await
        .unwrap();
    let (result, took) = takeover.await.unwrap();
    result.expect("the takeover assigns them again");
    let on_a = world.addresses(&world.eni_a).await;
    assert!(on_a.contains(&FIP_1) && on_a.contains(&FIP_2), "{on_a:?}");
    assert!(!world.addresses(&world.eni_b).await.contains(&FIP_1));
    let assigns = proxy
        .log()
        .iter()
        .filter(|r| r.action == "AssignPrivateIpAddresses")
        .count();
    assert_eq!(assigns, 2, "assigned once, then once again");
    assert!(
        took < DEADLINE / 2,
        "took {took:?}: waited for the deadline"
    );
}
