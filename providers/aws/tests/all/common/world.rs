//! A fresh two-node setup in moto, built through the SDK: a VPC and subnet, one ENI per node,
//! two floating IPs and an Elastic IP on the peer ("b"), and two route tables pointing at it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::DomainType;
use aws_sdk_ec2::Client;
use cloudha_provider_aws::{AwsConfig, AwsProvider, ElasticIp};
use cloudha_provider_core::{FloatingIp, NextHop, RouteSpec, TakeoverRequest};

use super::moto::{self, MotoServer};
use super::proxy::Proxy;

/// The region every test uses (moto keeps one state per region).
pub const REGION: &str = "eu-west-1";
/// The floating IPs; the first has the Elastic IP.
pub const FIP_1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);
pub const FIP_2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 101);
/// The route tables' destinations.
pub const DEFAULT: &str = "0.0.0.0/0";
pub const ONPREM: &str = "192.168.0.0/16";

/// moto's fixed test credentials, given to each client: nothing is set in the environment.
pub fn credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "cloudha-tests")
}

/// An EC2 client straight to `endpoint`, without any of the environment's AWS settings.
pub fn client(endpoint: &str) -> Client {
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(config)
}

/// A takeover with `deadline`.
pub fn request(deadline: Duration) -> TakeoverRequest {
    TakeoverRequest { epoch: 1, deadline }
}

/// The resources of one test, in its own VPC.
pub struct World {
    /// The server; held so it outlives the test.
    pub moto: Arc<MotoServer>,
    /// A client straight to moto, for setting up and reading back.
    pub ec2: Client,
    pub subnet: String,
    /// Node a's ENI (the one taking over in most tests).
    pub eni_a: String,
    /// Node b's ENI, holding everything at the start.
    pub eni_b: String,
    pub allocation: String,
    pub rt_1: String,
    pub rt_2: String,
}

impl World {
    /// Build the setup with node b holding everything.
    pub async fn new() -> World {
        World::on(moto::shared()).await
    }

    /// The same setup on `moto` (e.g. [`moto::plain`]).
    pub async fn on(moto: Arc<MotoServer>) -> World {
        let ec2 = client(&moto.url());
        let vpc = ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .send()
            .await
            .unwrap()
            .vpc
            .unwrap()
            .vpc_id
            .unwrap();
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block("10.0.1.0/24")
            .send()
            .await
            .unwrap()
            .subnet
            .unwrap()
            .subnet_id
            .unwrap();
        let eni_a = create_eni(&ec2, &subnet, "10.0.1.10").await;
        let eni_b = create_eni(&ec2, &subnet, "10.0.1.11").await;
        ec2.assign_private_ip_addresses()
            .network_interface_id(&eni_b)
            .private_ip_addresses(FIP_1.to_string())
            .private_ip_addresses(FIP_2.to_string())
            .send()
            .await
            .unwrap();
        let allocation = ec2
            .allocate_address()
            .domain(DomainType::Vpc)
            .send()
            .await
            .unwrap()
            .allocation_id
            .unwrap();
        ec2.associate_address()
            .allocation_id(&allocation)
            .network_interface_id(&eni_b)
            .private_ip_address(FIP_1.to_string())
            .send()
            .await
            .unwrap();
        let rt_1 = create_route_table(&ec2, &vpc).await;
        let rt_2 = create_route_table(&ec2, &vpc).await;
        for (table, prefix) in [(&rt_1, DEFAULT), (&rt_1, ONPREM), (&rt_2, DEFAULT)] {
            ec2.create_route()
                .route_table_id(table)
                .destination_cidr_block(prefix)
                .network_interface_id(&eni_b)
                .send()
                .await
                .unwrap();
        }
        World {
            moto,
            ec2,
            subnet,
            eni_a,
            eni_b,
            allocation,
            rt_1,
            rt_2,
        }
    }

    pub fn floating_ips(&self) -> Vec<FloatingIp> {
        [FIP_1, FIP_2]
            .into_iter()
            .map(|address| FloatingIp {
                address,
                prefix_len: 24,
            })
            .collect()
    }

    pub fn elastic_ips(&self) -> Vec<ElasticIp> {
        vec![ElasticIp {
            private_ip: FIP_1,
            allocation_id: self.allocation.clone(),
        }]
    }

    pub fn routes(&self) -> Vec<RouteSpec> {
        let spec = |table: &str, name: &str, prefix: &str| RouteSpec {
            table: table.to_string(),
            name: name.to_string(),
            prefix: prefix.to_string(),
            next_hop: NextHop::SelfAddress,
        };
        vec![
            spec(&self.rt_1, "default", DEFAULT),
            spec(&self.rt_1, "onprem", ONPREM),
            spec(&self.rt_2, "default", DEFAULT),
        ]
    }

    /// The configuration of the node owning `own`, reaching EC2 through `proxy`.
    pub fn config(&self, proxy: &Proxy, own: &str, peer: &str) -> AwsConfig {
        AwsConfig {
            region: Some(REGION.to_string()),
            endpoint: Some(proxy.url.clone()),
            // Never used with region and own_eni set; a closed loopback port if it ever were.
            imds_endpoint: Some("http://127.0.0.1:9".to_string()),
            iam_endpoint: None,
            own_eni: Some(own.to_string()),
            peer_eni: peer.to_string(),
        }
    }

    /// The provider of the node owning `own`, with every resource of the world.
    pub async fn provider(&self, proxy: &Proxy, own: &str, peer: &str) -> AwsProvider {
        AwsProvider::with_credentials(
            self.config(proxy, own, peer),
            self.floating_ips(),
            self.elastic_ips(),
            self.routes(),
            credentials(),
        )
        .await
        .unwrap()
    }

    /// The private IPs on `eni`, read straight from moto.
    pub async fn addresses(&self, eni: &str) -> BTreeSet<Ipv4Addr> {
        let out = self
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(eni)
            .send()
            .await
            .unwrap();
        out.network_interfaces()[0]
            .private_ip_addresses()
            .iter()
            .map(|p| p.private_ip_address().unwrap().parse().unwrap())
            .collect()
    }

    /// The ENI the Elastic IP is associated with.
    pub async fn eip_eni(&self) -> Option<String> {
        let out = self
            .ec2
            .describe_addresses()
            .allocation_ids(&self.allocation)
            .send()
            .await
            .unwrap();
        out.addresses()[0]
            .network_interface_id()
            .map(str::to_string)
    }

    /// The ENI the route for `prefix` in `table` points at (`None`: no such route).
    pub async fn route_target(&self, table: &str, prefix: &str) -> Option<String> {
        let out = self
            .ec2
            .describe_route_tables()
            .route_table_ids(table)
            .send()
            .await
            .unwrap();
        out.route_tables()[0]
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some(prefix))
            .map(|r| r.network_interface_id().unwrap_or("not an ENI").to_string())
    }
}

async fn create_eni(ec2: &Client, subnet: &str, primary: &str) -> String {
    ec2.create_network_interface()
        .subnet_id(subnet)
        .private_ip_address(primary)
        .send()
        .await
        .unwrap()
        .network_interface
        .unwrap()
        .network_interface_id
        .unwrap()
}

async fn create_route_table(ec2: &Client, vpc: &str) -> String {
    ec2.create_route_table()
        .vpc_id(vpc)
        .send()
        .await
        .unwrap()
        .route_table
        .unwrap()
        .route_table_id
        .unwrap()
}
