//! End to end on AWS as moto emulates it: two real `cloudha run` processes in network
//! namespaces, each reaching its own IMDSv2 at 169.254.169.254 (instance id, region, ENIs and
//! the instance role's credentials) and EC2 at 127.0.0.1:5000 *inside its own namespace*. Both
//! EC2 listeners are the AWS harness's fault-injecting proxy, in front of one real moto server
//! on the host's loopback. The VPC, subnet, ENIs, Elastic IP and route tables are built through
//! the real `aws-sdk-ec2` and read back through it. Nothing leaves the namespaces and loopback.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::aws_harness::imds::FakeImds;
use crate::aws_harness::proxy::{Fault, Proxy};
use crate::aws_harness::world::{World, DEFAULT, FIP_1, FIP_2, ONPREM, REGION};
use crate::e2e_azure::{bind_in_namespace, metadata_listener};
use crate::e2e_local::{num, Options, Pair, SOON};
use crate::netns::{wait_until, Node};

const EC2_PORT: u16 = 5000;
const FAILOVER: Duration = Duration::from_secs(60);

fn role_key(node: Node) -> &'static str {
    match node {
        Node::A => "ASIAROLEFWA",
        _ => "ASIAROLEFWB",
    }
}

/// The moto world, the proxy both daemons reach, and their IMDS, served inside the namespaces.
pub(crate) struct Cloud {
    pub(crate) world: World,
    pub(crate) proxy: Proxy,
    imds: Vec<FakeImds>,
    pub(crate) rt: tokio::runtime::Runtime,
}

impl Cloud {
    pub(crate) fn build() -> Cloud {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (world, proxy) = rt.block_on(async {
            let world = World::new().await;
            // A correct appliance pair: source/destination check off on both ENIs, or the
            // daemons' failover_proven indicator (rightly) holds HA at Not ready.
            for eni in [&world.eni_a, &world.eni_b] {
                world
                    .ec2
                    .modify_network_interface_attribute()
                    .network_interface_id(eni)
                    .source_dest_check(
                        aws_sdk_ec2::types::AttributeBooleanValue::builder()
                            .value(false)
                            .build(),
                    )
                    .send()
                    .await
                    .expect("source/destination check off");
            }
            let proxy = Proxy::start(world.moto.port).await;
            (world, proxy)
        });
        Cloud {
            world,
            proxy,
            imds: Vec::new(),
            rt,
        }
    }

    pub(crate) fn eni(&self, node: Node) -> &str {
        match node {
            Node::A => &self.world.eni_a,
            _ => &self.world.eni_b,
        }
    }

    /// What EC2's IMDS tells `node` about itself: one LAN ENI, and the role's credentials.
    fn metadata(&self, node: Node) -> BTreeMap<String, String> {
        let meta = |path: &str| format!("/latest/meta-data/{path}");
        let mac = match node {
            Node::A => "02:00:0a:00:01:0a",
            _ => "02:00:0a:00:01:0b",
        };
        let mut values = BTreeMap::new();
        let id = match node {
            Node::A => "i-0a0000000000000aa",
            _ => "i-0b0000000000000bb",
        };
        values.insert(meta("instance-id"), id.to_string());
        values.insert(meta("placement/region"), REGION.to_string());
        values.insert(meta("network/interfaces/macs/"), format!("{mac}/"));
        values.insert(
            meta(&format!("network/interfaces/macs/{mac}/interface-id")),
            self.eni(node).to_string(),
        );
        values.insert(
            meta(&format!("network/interfaces/macs/{mac}/subnet-id")),
            self.world.subnet.clone(),
        );
        values.insert(meta("iam/security-credentials/"), "cloudha-role".into());
        values.insert(
            meta("iam/security-credentials/cloudha-role"),
            format!(
                "{{\"Code\":\"Success\",\"LastUpdated\":\"2026-01-01T00:00:00Z\",\"Type\":\"AWS-HMAC\",\
                 \"AccessKeyId\":\"{}\",\"SecretAccessKey\":\"role-secret\",\
                 \"Token\":\"role-token\",\"Expiration\":\"2099-01-01T00:00:00Z\"}}",
                role_key(node)
            ),
        );
        values
    }

    /// IMDS at 169.254.169.254:80 and EC2 (the proxy) at 127.0.0.1:5000 in each namespace.
    pub(crate) fn serve(&mut self, pair: &Pair) {
        for node in [Node::A, Node::B] {
            let imds = metadata_listener(pair, node);
            let ec2 = bind_in_namespace(
                pair.topo.ns(node),
                SocketAddr::from((Ipv4Addr::LOCALHOST, EC2_PORT)),
            );
            let _guard = self.rt.enter();
            let imds = tokio::net::TcpListener::from_std(imds).expect("tokio listener");
            let ec2 = tokio::net::TcpListener::from_std(ec2).expect("tokio listener");
            self.imds.push(FakeImds::serve(imds, self.metadata(node)));
            self.proxy.serve(ec2);
        }
    }

    pub(crate) fn addresses(&self, node: Node) -> Vec<Ipv4Addr> {
        let set = self.rt.block_on(self.world.addresses(self.eni(node)));
        set.into_iter()
            .filter(|a| [FIP_1, FIP_2].contains(a))
            .collect()
    }

    pub(crate) fn eip_eni(&self) -> Option<String> {
        self.rt.block_on(self.world.eip_eni())
    }

    /// The ENI each configured route points at (`None`: the route does not exist).
    pub(crate) fn route_targets(&self) -> Vec<Option<String>> {
        [
            (&self.world.rt_1, DEFAULT),
            (&self.world.rt_1, ONPREM),
            (&self.world.rt_2, DEFAULT),
        ]
        .into_iter()
        .map(|(table, prefix)| self.rt.block_on(self.world.route_target(table, prefix)))
        .collect()
    }

    /// Every property of `node`'s ENI that a failover must leave alone: all but the floating
    /// IPs among its private addresses and the Elastic IP's association, which move.
    pub(crate) fn eni_settings(&self, node: Node) -> Value {
        let out = self.rt.block_on(
            self.world
                .ec2
                .describe_network_interfaces()
                .network_interface_ids(self.eni(node))
                .send(),
        );
        let Some(eni) = out
            .ok()
            .and_then(|o| o.network_interfaces().first().cloned())
        else {
            return Value::Null;
        };
        let floating = [FIP_1.to_string(), FIP_2.to_string()];
        let fixed: Vec<Value> = eni
            .private_ip_addresses()
            .iter()
            .filter(|p| !floating.iter().any(|f| p.private_ip_address() == Some(f)))
            .map(|p| serde_json::json!([p.private_ip_address(), p.primary()]))
            .collect();
        serde_json::json!({
            "id": eni.network_interface_id(),
            "description": eni.description(),
            "subnet": eni.subnet_id(),
            "vpc": eni.vpc_id(),
            "zone": eni.availability_zone(),
            "mac": eni.mac_address(),
            "primary_ip": eni.private_ip_address(),
            "dns_name": eni.private_dns_name(),
            "source_dest_check": eni.source_dest_check(),
            "type": eni.interface_type().map(|t| t.as_str()),
            "status": eni.status().map(|s| s.as_str()),
            "requester_managed": eni.requester_managed(),
            "groups": eni.groups().iter().map(|g| g.group_id()).collect::<Vec<_>>(),
            "tags": eni.tag_set().iter().map(|t| (t.key(), t.value())).collect::<Vec<_>>(),
            "ipv6": eni.ipv6_addresses().iter().map(|a| a.ipv6_address()).collect::<Vec<_>>(),
            "attachment": eni.attachment().map(|a| format!("{a:?}")),
            "fixed_private_ips": fixed,
        })
    }

    /// Everything (both IPs, the EIP, every route) on `node`'s ENI, and nothing on the other's.
    pub(crate) fn all_on(&self, node: Node) -> bool {
        let other = if node == Node::A { Node::B } else { Node::A };
        let eni = self.eni(node).to_string();
        self.addresses(node).len() == 2
            && self.addresses(other).is_empty()
            && self.eip_eni().as_deref() == Some(eni.as_str())
            && self
                .route_targets()
                .iter()
                .all(|t| t.as_deref() == Some(eni.as_str()))
    }
}

/// The provider sections of a node's config: only the peer's ENI and the endpoint are named;
/// region, own ENI and credentials come from the namespace's IMDS.
pub(crate) fn aws_provider<'a>(cloud: &'a Cloud, reconcile: &str) -> impl Fn(Node) -> String + 'a {
    let reconcile = reconcile.to_string();
    move |node| {
        let peer = if node == Node::A { Node::B } else { Node::A };
        format!(
            r#"
[failover]
deadline = "30s"
retry_initial = "500ms"
retry_max = "2s"
reconcile_interval = "{reconcile}"

[maintenance_events]
poll_interval = "1s"

[provider]
kind = "aws"

[provider.aws]
peer_eni = "{peer_eni}"
endpoint = "http://127.0.0.1:{EC2_PORT}"

[[floating_ip]]
address = "{FIP_1}"
prefix_len = 24
elastic_ip = "{allocation}"

[[floating_ip]]
address = "{FIP_2}"
prefix_len = 24

[[route]]
table = "{rt_1}"
name = "default"
prefix = "{DEFAULT}"

[[route]]
table = "{rt_1}"
name = "onprem"
prefix = "{ONPREM}"

[[route]]
table = "{rt_2}"
name = "default"
prefix = "{DEFAULT}"
"#,
            peer_eni = cloud.eni(peer),
            allocation = cloud.world.allocation,
            rt_1 = cloud.world.rt_1,
            rt_2 = cloud.world.rt_2,
        )
    }
}

/// Both daemons against a fresh VPC; A takes everything over from B's ENI at start-up.
fn start(tag: &str, reconcile: &str) -> (Pair, Cloud) {
    let mut cloud = Cloud::build();
    let opts = Options {
        hold_down_ms: 2000,
        ..Options::default()
    };
    let pair = Pair::prepare(tag, opts, aws_provider(&cloud, reconcile));
    cloud.serve(&pair);
    let pair = pair.start_both();
    pair.wait_converged(Node::A);
    assert!(cloud.all_on(Node::A), "{:?}", cloud.route_targets());
    (pair, cloud)
}

#[test]
fn e2e_aws_kill_active_moves_ips_eip_and_routes_through_faults() {
    let (mut pair, cloud) = start("e2eawskill", "600s");
    // Someone deleted one of the routes: the takeover must create it.
    cloud.rt.block_on(async {
        cloud
            .world
            .ec2
            .delete_route()
            .route_table_id(&cloud.world.rt_2)
            .destination_cidr_block(DEFAULT)
            .send()
            .await
            .expect("delete route")
    });
    let throttled = Fault::Error {
        status: 503,
        code: "RequestLimitExceeded",
    };
    cloud
        .proxy
        .inject("AssignPrivateIpAddresses", throttled.clone(), 2);
    cloud.proxy.inject("AssociateAddress", throttled, 1);
    cloud.proxy.inject("ReplaceRoute", Fault::Status(500), 1);
    cloud.proxy.clear();

    pair.daemon(Node::A).kill9().expect("kill fw-a");
    let killed = Instant::now();
    let done = wait_until("fw-b's takeover to converge", FAILOVER, || {
        pair.status(Node::B)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    let converged = killed.elapsed();

    // Read back through the API: both IPs, the EIP and all three routes on B's ENI, nothing
    // left on A's (moto keeps a reassigned IP on both ENIs; cloudha unassigns it).
    assert!(cloud.all_on(Node::B), "{:?}", cloud.route_targets());
    let log = cloud.proxy.log();
    let faulted = log.iter().filter(|r| r.fault.is_some()).count();
    assert_eq!(faulted, 4, "every injected fault was met and survived");
    assert_eq!(
        log.iter().filter(|r| r.action == "CreateRoute").count(),
        1,
        "the missing route was created"
    );
    // Credentials came from B's instance role through its IMDS, not from the environment.
    assert!(
        log.iter()
            .filter(|r| !r.action.is_empty())
            .all(|r| r.authorization.contains(role_key(Node::B))),
        "{:?}",
        log.iter().map(|r| &r.authorization).collect::<Vec<_>>()
    );

    // The failover record counts the calls it made, faulted attempts included.
    let f = &done["last_failover"];
    let calls = &f["api_calls"];
    let counted: u64 = calls
        .as_object()
        .expect("api_calls")
        .values()
        .map(num)
        .sum();
    assert!(num(&calls["AssignPrivateIpAddresses"]) >= 3, "{calls}");
    assert_eq!(num(&calls["CreateRoute"]), 1, "{calls}");
    assert!(
        counted as usize <= log.len(),
        "{calls} vs {} requests",
        log.len()
    );
    assert!(f["first_write_ms"].as_u64().is_some(), "{f}");
    assert!(num(&f["total_ms"]) as u128 <= converged.as_millis(), "{f}");
    assert_eq!(
        done["cloud"]["resources"].as_array().map(Vec::len),
        Some(6),
        "{done}"
    );

    // A comes back: preemption is off by default in these tests, so it stays standby and sees
    // the peer holding everything.
    pair.spawn(Node::A);
    let a = wait_until("fw-a standby, reading the cloud", SOON, || {
        pair.status(Node::A).filter(|s| {
            s["role"] == "standby"
                && s["cloud"]["resources"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty() && r.iter().all(|x| x["holder"] == "peer"))
        })
    });
    assert_eq!(a["peer"]["alive"], true, "{a}");
    assert!(cloud.all_on(Node::B));
}

#[test]
fn e2e_aws_reconcile_repairs_a_route_pointed_elsewhere() {
    let (pair, cloud) = start("e2eawsrec", "1s");
    // A third ENI in the subnet; someone points a route at it behind cloudha's back.
    let stray = cloud.rt.block_on(async {
        let eni = cloud
            .world
            .ec2
            .create_network_interface()
            .subnet_id(&cloud.world.subnet)
            .send()
            .await
            .expect("create eni")
            .network_interface
            .and_then(|n| n.network_interface_id)
            .expect("eni id");
        cloud
            .world
            .ec2
            .replace_route()
            .route_table_id(&cloud.world.rt_1)
            .destination_cidr_block(ONPREM)
            .network_interface_id(&eni)
            .send()
            .await
            .expect("replace route");
        eni
    });
    assert_eq!(cloud.route_targets()[1].as_deref(), Some(stray.as_str()));
    let s = wait_until("fw-a's reconcile to repair the route", SOON, || {
        (cloud.route_targets()[1].as_deref() == Some(cloud.world.eni_a.as_str()))
            .then(|| pair.status(Node::A))
            .flatten()
    });
    assert_eq!(s["role"], "active");
    assert!(
        s["recent_events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["message"]
                .as_str()
                .is_some_and(|m| m.contains("repair the drift")))),
        "{s}"
    );
    assert!(cloud.all_on(Node::A));
    let b: Value = pair.status(Node::B).expect("status b");
    assert_eq!(b["role"], "standby", "{b}");
}

#[test]
fn e2e_aws_spot_interruption_notice_hands_over_first() {
    let (pair, cloud) = start("e2eawsspot", "600s");
    pair.wait_ready_both();
    let notice = "/latest/meta-data/spot/instance-action";
    cloud.imds[0].set(
        notice,
        Some(r#"{"action": "terminate", "time": "2099-01-01T00:00:00Z"}"#),
    );
    wait_until("fw-b active and converged", FAILOVER, || {
        pair.status(Node::B)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    assert!(cloud.all_on(Node::B), "{:?}", cloud.route_targets());
    let a = pair.status(Node::A).expect("status a");
    assert_eq!(a["role"], "maintenance", "{a}");
    assert!(
        a["scheduled_maintenance"].as_array().is_some_and(|m| m
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("spot-terminate")))),
        "{a}"
    );
    // The notice is withdrawn: fw-a leaves maintenance (as standby first).
    cloud.imds[0].set(notice, None);
    wait_until("fw-a standby after the notice", SOON, || {
        pair.status(Node::A).filter(|s| s["role"] == "standby")
    });
}

/// The README's AWS walk-through, as written: moto, a VPC from the AWS CLI, two daemons on
/// loopback, the active killed, the resources read back through the API.
#[test]
fn aws_walkthrough_from_the_readme_passes() {
    crate::netns::require_root_and_tools();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("scripts/aws-walkthrough.sh"))
        .env("CLOUDHA_BIN", env!("CARGO_BIN_EXE_cloudha"))
        .output()
        .expect("run scripts/aws-walkthrough.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS: the floating IP, its Elastic IP and the route follow fw-b"));
    let total: u32 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("total")?.trim().parse().ok())
        .expect("the API call total");
    assert!((4..=20).contains(&total), "{stdout}");
}

/// The campaign's "no ENI setting lost" compare (`Cloud::eni_settings`) does not see the
/// floating IPs and the Elastic IP move, and does see any other property change.
#[test]
fn eni_settings_ignore_the_moving_addresses_and_see_every_other_change() {
    use aws_sdk_ec2::types::AttributeBooleanValue;

    let cloud = Cloud::build();
    let ec2 = &cloud.world.ec2;
    let before = [Node::A, Node::B].map(|n| cloud.eni_settings(n));
    assert!(before.iter().all(|s| s["mac"].is_string()), "{before:?}");
    // What a failover does: the floating IPs and the Elastic IP go from B's ENI to A's.
    cloud.rt.block_on(async {
        ec2.assign_private_ip_addresses()
            .network_interface_id(cloud.eni(Node::A))
            .private_ip_addresses(FIP_1.to_string())
            .private_ip_addresses(FIP_2.to_string())
            .allow_reassignment(true)
            .send()
            .await
            .expect("assign");
        ec2.unassign_private_ip_addresses()
            .network_interface_id(cloud.eni(Node::B))
            .private_ip_addresses(FIP_1.to_string())
            .private_ip_addresses(FIP_2.to_string())
            .send()
            .await
            .expect("unassign");
        ec2.associate_address()
            .allocation_id(&cloud.world.allocation)
            .network_interface_id(cloud.eni(Node::A))
            .private_ip_address(FIP_1.to_string())
            .allow_reassociation(true)
            .send()
            .await
            .expect("associate");
    });
    assert_eq!(cloud.addresses(Node::A).len(), 2);
    assert!(cloud.addresses(Node::B).is_empty());
    assert_eq!(cloud.eip_eni().as_deref(), Some(cloud.eni(Node::A)));
    assert_eq!([Node::A, Node::B].map(|n| cloud.eni_settings(n)), before);
    // Anything else is a setting lost.
    cloud.rt.block_on(async {
        ec2.modify_network_interface_attribute()
            .network_interface_id(cloud.eni(Node::B))
            .source_dest_check(AttributeBooleanValue::builder().value(true).build())
            .send()
            .await
            .expect("modify");
    });
    let after = cloud.eni_settings(Node::B);
    assert_ne!(after, before[1]);
    assert_eq!(after["source_dest_check"], true, "{after}");
}
