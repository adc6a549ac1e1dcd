//! Discovery through a fake IMDSv2 on loopback: own ENI, region and instance id, and the
//! instance role's credentials, as on an EC2 instance with nothing but `peer_eni` configured.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use cloudha_provider_aws::{AwsConfig, AwsProvider};
use cloudha_provider_core::{Holder, ProgressReporter, Provider, ProviderError};

use crate::common::imds::FakeImds;
use crate::common::proxy::Proxy;
use crate::common::world::{request, World, REGION};

const ROLE_KEY: &str = "ASIAFAKEIMDSROLE";

/// Whether something other than IMDS would supply credentials first in the SDK's chain.
fn environment_has_credentials() -> bool {
    [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

#[tokio::test]
async fn own_eni_region_instance_and_credentials_come_from_imds() {
    let world = World::new().await;
    // A second interface of "this instance", in another subnet: discovery must pick the ENI in
    // the peer's subnet.
    let vpc = world
        .ec2
        .describe_subnets()
        .subnet_ids(&world.subnet)
        .send()
        .await
        .unwrap()
        .subnets()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let wan_subnet = world
        .ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.2.0/24")
        .send()
        .await
        .unwrap()
        .subnet
        .unwrap()
        .subnet_id
        .unwrap();
    let wan_eni = world
        .ec2
        .create_network_interface()
        .subnet_id(&wan_subnet)
        .send()
        .await
        .unwrap()
        .network_interface
        .unwrap()
        .network_interface_id
        .unwrap();

    let meta = |path: &str| format!("/latest/meta-data/{path}");
    let mut values = BTreeMap::new();
    values.insert(meta("instance-id"), "i-0fa4e0000000000aa".to_string());
    values.insert(meta("placement/region"), REGION.to_string());
    values.insert(
        meta("network/interfaces/macs/"),
        "02:00:00:00:00:01/\n02:00:00:00:00:02/".to_string(),
    );
    for (mac, eni, subnet) in [
        ("02:00:00:00:00:01", &wan_eni, &wan_subnet),
        ("02:00:00:00:00:02", &world.eni_a, &world.subnet),
    ] {
        values.insert(
            meta(&format!("network/interfaces/macs/{mac}/interface-id")),
            eni.clone(),
        );
        values.insert(
            meta(&format!("network/interfaces/macs/{mac}/subnet-id")),
            subnet.clone(),
        );
    }
    values.insert(
        meta("iam/security-credentials/"),
        "cloudha-role".to_string(),
    );
    values.insert(
        meta("iam/security-credentials/cloudha-role"),
        format!(
            "{{\"Code\":\"Success\",\"LastUpdated\":\"2026-01-01T00:00:00Z\",\"Type\":\"AWS-HMAC\",\
             \"AccessKeyId\":\"{ROLE_KEY}\",\"SecretAccessKey\":\"role-secret\",\
             \"Token\":\"role-token\",\"Expiration\":\"2099-01-01T00:00:00Z\"}}"
        ),
    );
    let imds = FakeImds::start(values).await;
    let proxy = Proxy::start(world.moto.port).await;

    let config = AwsConfig {
        region: None,
        endpoint: Some(proxy.url.clone()),
        imds_endpoint: Some(imds.url.clone()),
        iam_endpoint: None,
        own_eni: None,
        peer_eni: world.eni_b.clone(),
    };
    let a = AwsProvider::new(
        config,
        world.floating_ips(),
        world.elastic_ips(),
        world.routes(),
    )
    .await
    .unwrap();
    let identity = a.identity();
    assert_eq!(identity.own_eni, world.eni_a);
    assert_eq!(identity.region, REGION);
    assert_eq!(identity.instance_id.as_deref(), Some("i-0fa4e0000000000aa"));

    a.health().await.unwrap();
    a.take_over(
        &request(Duration::from_secs(30)),
        &ProgressReporter::discard(),
    )
    .await
    .unwrap();
    assert_eq!(
        a.observe().await.unwrap().overall_holder(),
        Some(Holder::Me)
    );

    let seen = imds.seen();
    assert!(seen.tokens >= 1, "no IMDSv2 session token was fetched");
    assert_eq!(seen.refused, 0, "IMDS was asked without a token");
    if environment_has_credentials() {
        eprintln!("AWS credentials in the environment come first; instance role not exercised");
    } else {
        assert!(seen
            .paths
            .iter()
            .any(|p| p == "/latest/meta-data/iam/security-credentials/cloudha-role"));
        let log = proxy.log();
        assert!(!log.is_empty());
        for r in &log {
            assert!(
                r.authorization.contains(&format!("Credential={ROLE_KEY}/")),
                "{} not signed with the instance role: {}",
                r.action,
                r.authorization
            );
        }
    }
}

#[tokio::test]
async fn unreachable_imds_names_the_settings_that_make_it_unnecessary() {
    // A loopback port with nothing listening.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let config = AwsConfig {
        region: None,
        endpoint: Some("http://127.0.0.1:9".to_string()),
        imds_endpoint: Some(format!("http://{closed}")),
        iam_endpoint: None,
        own_eni: None,
        peer_eni: "eni-0123456789abcdef0".to_string(),
    };
    let err = AwsProvider::new(config, vec![], vec![], vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Transient { message, .. }
            if message.contains("provider.aws.region") && message.contains("provider.aws.own_eni")),
        "{err:?}"
    );
}
