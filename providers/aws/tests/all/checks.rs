//! `health()` and the source/destination check the daemon warns about.

use cloudha_provider_core::Provider;

use crate::common::proxy::{mutating, Proxy};
use crate::common::world::World;

#[tokio::test]
async fn health_passes_and_the_source_dest_check_is_read_per_eni() {
    let world = World::new().await;
    world
        .ec2
        .modify_network_interface_attribute()
        .network_interface_id(&world.eni_a)
        .source_dest_check(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(false)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let proxy = Proxy::start(world.moto.port).await;
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    let b = world.provider(&proxy, &world.eni_b, &world.eni_a).await;
    a.health().await.unwrap();
    b.health().await.unwrap();
    assert!(!a.source_dest_check_enabled().await.unwrap());
    // EC2's default, left on for b: the daemon would warn.
    assert!(b.source_dest_check_enabled().await.unwrap());
    assert!(mutating(&proxy.counts()).is_empty());
}

#[tokio::test]
async fn health_describes_the_own_eni_once_a_minute_not_on_every_check() {
    let world = World::new().await;
    let proxy = Proxy::start(world.moto.port).await;
    let a = world.provider(&proxy, &world.eni_a, &world.eni_b).await;
    let describes = || {
        proxy
            .counts()
            .get("DescribeNetworkInterfaces")
            .copied()
            .unwrap_or(0)
    };
    let before = describes();
    a.health().await.unwrap();
    assert_eq!(describes(), before + 1, "the first check reads the ENI");
    for _ in 0..3 {
        a.health().await.unwrap();
    }
    assert_eq!(
        describes(),
        before + 1,
        "checks within {:?} of a passing one read nothing",
        cloudha_provider_aws::ENI_RECHECK
    );
}
