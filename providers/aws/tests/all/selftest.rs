//! `cloudha selftest`'s AWS checks against moto (with SimulatePrincipalPolicy and route DryRun
//! added by tests/moto/cloudha_moto_server.py): each failing condition set up in moto, and a
//! correct pair on which everything passes without anything changing.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use cloudha_provider_aws::permissions::FAILOVER_ACTIONS;
use cloudha_provider_aws::selftest::{self, iam_query, Input};
use cloudha_provider_aws::AwsConfig;
use cloudha_provider_core::{Check, FloatingIp, Outcome};

use crate::common::imds::FakeImds;
use crate::common::moto;
use crate::common::world::{credentials, World, DEFAULT, FIP_1, ONPREM, REGION};

const ACCOUNT: &str = "123456789012";

/// A role in moto's IAM with one inline policy, and a fake IMDS naming it as the instance role.
struct Setup {
    world: World,
    imds: FakeImds,
    role: String,
}

async fn iam(world: &World, params: &[(&str, &str)]) -> String {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (status, body) = iam_query(&world.moto.url(), &credentials(), &params)
        .await
        .expect("IAM request");
    assert_eq!(status, 200, "{body}");
    body
}

fn policy(allow: &[&str], deny: &[&str]) -> String {
    let list = |a: &[&str]| {
        a.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut statements = vec![format!(
        "{{\"Effect\":\"Allow\",\"Action\":[{}],\"Resource\":\"*\"}}",
        list(allow)
    )];
    if !deny.is_empty() {
        statements.push(format!(
            "{{\"Effect\":\"Deny\",\"Action\":[{}],\"Resource\":\"*\"}}",
            list(deny)
        ));
    }
    format!(
        "{{\"Version\":\"2012-10-17\",\"Statement\":[{}]}}",
        statements.join(",")
    )
}

impl Setup {
    /// The world with both ENIs' source/dest check off and a role allowing `allow` minus `deny`.
    async fn new(allow: &[&str], deny: &[&str]) -> Setup {
        Setup::on(World::new().await, allow, deny).await
    }

    /// The same on a world of the caller's (e.g. on plain moto).
    async fn on(world: World, allow: &[&str], deny: &[&str]) -> Setup {
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
                .unwrap();
        }
        // IAM is global in moto: each test gets its own role.
        let role = format!("cloudha-{}", world.eni_a);
        let trust = "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"Service\":\"ec2.amazonaws.com\"},\"Action\":\"sts:AssumeRole\"}]}";
        iam(
            &world,
            &[
                ("Action", "CreateRole"),
                ("Version", "2010-05-08"),
                ("RoleName", &role),
                ("AssumeRolePolicyDocument", trust),
            ],
        )
        .await;
        iam(
            &world,
            &[
                ("Action", "PutRolePolicy"),
                ("Version", "2010-05-08"),
                ("RoleName", &role),
                ("PolicyName", "cloudha"),
                ("PolicyDocument", &policy(allow, deny)),
            ],
        )
        .await;
        let meta = |p: &str| format!("/latest/meta-data/{p}");
        let mut values = BTreeMap::new();
        values.insert(meta("instance-id"), "i-0fa4e0000000000aa".to_string());
        values.insert(meta("iam/security-credentials/"), role.clone());
        values.insert(
            meta("iam/info"),
            format!("{{\"Code\":\"Success\",\"LastUpdated\":\"2026-01-01T00:00:00Z\",\"InstanceProfileArn\":\"arn:aws:iam::{ACCOUNT}:instance-profile/cloudha\",\"InstanceProfileId\":\"AIPAEXAMPLE\"}}"),
        );
        let imds = FakeImds::start(values).await;
        Setup { world, imds, role }
    }

    fn input(&self) -> Input {
        let w = &self.world;
        Input {
            config: AwsConfig {
                region: Some(REGION.to_string()),
                endpoint: Some(w.moto.url()),
                imds_endpoint: Some(self.imds.url.clone()),
                iam_endpoint: Some(w.moto.url()),
                own_eni: Some(w.eni_a.clone()),
                peer_eni: w.eni_b.clone(),
            },
            floating_ips: w.floating_ips(),
            elastic_ips: w.elastic_ips(),
            routes: w.routes(),
            credentials: Some(credentials()),
            metadata_disabled: false,
        }
    }
}

fn all_actions() -> Vec<&'static str> {
    FAILOVER_ACTIONS.iter().map(|a| a.action).collect()
}

fn failures(checks: &[Check]) -> Vec<&Check> {
    checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .collect()
}

fn failure<'a>(checks: &'a [Check], name: &str, text: &str) -> &'a Check {
    let found: Vec<&Check> = failures(checks)
        .into_iter()
        .filter(|c| c.name == name && c.detail.contains(text))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name} failure with {text:?} in {checks:#?}"
    );
    found[0]
}

fn proved(checks: &[Check], action: &str) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c.name == "permission" && c.detail.starts_with(action))
        .map(|c| format!("{:?} {}", c.outcome, c.method.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn a_correct_pair_passes_and_each_write_is_proved_by_its_method_without_changes() {
    let s = Setup::new(&all_actions(), &[]).await;
    let started = std::time::Instant::now();
    let checks = selftest::run(&s.input()).await;
    // A figure for the README, not a timing assertion.
    eprintln!(
        "aws selftest: {} checks in {} ms against moto",
        checks.len(),
        started.elapsed().as_millis()
    );
    assert!(failures(&checks).is_empty(), "{checks:#?}");
    for (action, method) in [
        ("ec2:AssignPrivateIpAddresses", "policy simulation"),
        ("ec2:UnassignPrivateIpAddresses", "policy simulation"),
        ("ec2:AssociateAddress", "DryRun"),
        ("ec2:ReplaceRoute", "DryRun"),
        ("ec2:CreateRoute", "DryRun"),
    ] {
        let found = proved(&checks, action);
        assert!(!found.is_empty(), "{action} not checked: {checks:#?}");
        for f in found {
            assert_eq!(f, format!("Pass {method}"), "{action}: {checks:#?}");
        }
    }
    let metadata = checks
        .iter()
        .find(|c| c.name == "metadata_service")
        .unwrap();
    assert!(
        metadata
            .detail
            .contains(&format!("arn:aws:iam::{ACCOUNT}:role/{}", s.role)),
        "{metadata:?}"
    );
    // The DryRun requests changed nothing: everything is still on the peer ("b").
    let w = &s.world;
    assert_eq!(
        w.route_target(&w.rt_1, DEFAULT).await.as_deref(),
        Some(w.eni_b.as_str())
    );
    assert_eq!(w.eip_eni().await.as_deref(), Some(w.eni_b.as_str()));
    assert!(w.addresses(&w.eni_b).await.contains(&FIP_1));
    assert!(!w.addresses(&w.eni_a).await.contains(&FIP_1));
}

#[tokio::test]
async fn a_role_missing_one_action_fails_the_simulation_naming_it() {
    let allow: Vec<&str> = all_actions()
        .into_iter()
        .filter(|a| *a != "ec2:UnassignPrivateIpAddresses")
        .collect();
    let s = Setup::new(&allow, &[]).await;
    let checks = selftest::run(&s.input()).await;
    // A failover in either direction: one failure for each ENI, naming its ARN.
    let denied: Vec<&Check> = failures(&checks)
        .into_iter()
        .filter(|c| {
            c.detail
                .starts_with("ec2:UnassignPrivateIpAddresses is implicitDeny")
        })
        .collect();
    assert_eq!(denied.len(), 2, "{checks:#?}");
    for (f, eni) in denied.iter().zip([&s.world.eni_a, &s.world.eni_b]) {
        assert_eq!(f.method.as_deref(), Some("policy simulation"));
        assert!(f.detail.contains(&s.role), "{f:?}");
        assert!(f.detail.contains(&eni_arn(eni)), "{f:?} should name {eni}");
        assert!(
            f.fix
                .contains("allow ec2:UnassignPrivateIpAddresses on arn:aws:ec2:"),
            "{f:?}"
        );
    }
    assert_eq!(failures(&checks).len(), 2, "{checks:#?}");
}

#[tokio::test]
async fn an_explicit_deny_beats_a_wildcard_allow() {
    let s = Setup::new(&["ec2:*"], &["ec2:AssignPrivateIpAddresses"]).await;
    let checks = selftest::run(&s.input()).await;
    let denied: Vec<&Check> = failures(&checks)
        .into_iter()
        .filter(|c| {
            c.detail
                .starts_with("ec2:AssignPrivateIpAddresses is explicitDeny")
        })
        .collect();
    assert_eq!(denied.len(), 2, "{checks:#?}");
    assert!(denied[0].fix.contains("remove the Deny"), "{:?}", denied[0]);
}

fn eni_arn(eni: &str) -> String {
    format!("arn:aws:ec2:{REGION}:{ACCOUNT}:network-interface/{eni}")
}

/// A policy granting each action on the listed resources only (Describe* on `*`, as the
/// Describe calls support no resource-level permissions).
fn narrowed_policy(grants: &[(&str, Vec<String>)]) -> String {
    let mut statements = vec![
        "{\"Effect\":\"Allow\",\"Action\":[\"ec2:DescribeNetworkInterfaces\",\"ec2:DescribeAddresses\",\"ec2:DescribeRouteTables\"],\"Resource\":\"*\"}".to_string(),
    ];
    for (action, resources) in grants {
        let list = resources
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(",");
        statements.push(format!(
            "{{\"Effect\":\"Allow\",\"Action\":\"{action}\",\"Resource\":[{list}]}}"
        ));
    }
    format!(
        "{{\"Version\":\"2012-10-17\",\"Statement\":[{}]}}",
        statements.join(",")
    )
}

#[tokio::test]
async fn a_policy_narrowed_to_the_pairs_enis_passes_and_one_missing_eni_fails_naming_it() {
    let s = Setup::new(&["ec2:DescribeNetworkInterfaces"], &[]).await;
    let w = &s.world;
    let both = vec![eni_arn(&w.eni_a), eni_arn(&w.eni_b)];
    let put = |document: String| {
        let role = s.role.clone();
        let world = &s.world;
        async move {
            iam(
                world,
                &[
                    ("Action", "PutRolePolicy"),
                    ("Version", "2010-05-08"),
                    ("RoleName", &role),
                    ("PolicyName", "cloudha"),
                    ("PolicyDocument", &document),
                ],
            )
            .await;
        }
    };
    put(narrowed_policy(&[
        ("ec2:AssignPrivateIpAddresses", both.clone()),
        ("ec2:UnassignPrivateIpAddresses", both.clone()),
    ]))
    .await;
    let checks = selftest::run(&s.input()).await;
    assert!(failures(&checks).is_empty(), "{checks:#?}");
    for action in [
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    ] {
        assert_eq!(
            proved(&checks, action),
            vec!["Pass policy simulation", "Pass policy simulation"],
            "{checks:#?}"
        );
    }
    // The same policy without the peer's ENI on AssignPrivateIpAddresses: the failover back to
    // the peer would fail, and the check says on which resource.
    put(narrowed_policy(&[
        ("ec2:AssignPrivateIpAddresses", vec![eni_arn(&w.eni_a)]),
        ("ec2:UnassignPrivateIpAddresses", both),
    ]))
    .await;
    let checks = selftest::run(&s.input()).await;
    let f = failure(
        &checks,
        "permission",
        "ec2:AssignPrivateIpAddresses is implicitDeny",
    );
    assert!(f.detail.contains(&eni_arn(&w.eni_b)), "{f:?}");
    assert_eq!(failures(&checks).len(), 1, "{checks:#?}");
}

#[tokio::test]
async fn source_dest_check_on_is_a_failure_with_the_command() {
    let s = Setup::new(&all_actions(), &[]).await;
    s.world
        .ec2
        .modify_network_interface_attribute()
        .network_interface_id(&s.world.eni_a)
        .source_dest_check(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let checks = selftest::run(&s.input()).await;
    let f = failure(&checks, "source_dest_check", &s.world.eni_a);
    assert!(f.fix.contains("--no-source-dest-check"), "{f:?}");
    assert_eq!(failures(&checks).len(), 1, "{checks:#?}");
}

#[tokio::test]
async fn a_reserved_floating_ip_is_a_failure() {
    let s = Setup::new(&all_actions(), &[]).await;
    let mut input = s.input();
    input.floating_ips.push(FloatingIp {
        address: Ipv4Addr::new(10, 0, 1, 255),
        prefix_len: 24,
    });
    let checks = selftest::run(&input).await;
    let f = failure(&checks, "floating_ip", "10.0.1.255");
    assert!(f.detail.contains("reserves"), "{f:?}");
}

#[tokio::test]
async fn a_floating_ip_on_a_third_eni_is_named() {
    let s = Setup::new(&all_actions(), &[]).await;
    let third = s
        .world
        .ec2
        .create_network_interface()
        .subnet_id(&s.world.subnet)
        .private_ip_address("10.0.1.12")
        .send()
        .await
        .unwrap()
        .network_interface
        .unwrap()
        .network_interface_id
        .unwrap();
    s.world
        .ec2
        .assign_private_ip_addresses()
        .network_interface_id(&third)
        .private_ip_addresses("10.0.1.102")
        .send()
        .await
        .unwrap();
    let mut input = s.input();
    input.floating_ips.push(FloatingIp {
        address: Ipv4Addr::new(10, 0, 1, 102),
        prefix_len: 24,
    });
    let checks = selftest::run(&input).await;
    let f = failure(&checks, "floating_ip", "held by a third ENI");
    assert!(f.detail.contains(&third), "{f:?}");
    assert!(f.fix.contains("unassign-private-ip-addresses"), "{f:?}");
}

#[tokio::test]
async fn a_missing_route_table_is_named() {
    let s = Setup::new(&all_actions(), &[]).await;
    let mut input = s.input();
    input.routes[2].table = "rtb-0000000000000dead".to_string();
    let checks = selftest::run(&input).await;
    let f = failure(&checks, "read_route_table", "rtb-0000000000000dead");
    assert!(f.fix.contains("does not exist"), "{f:?}");
}

#[tokio::test]
async fn a_dry_run_refused_by_the_callers_policy_names_the_action_and_each_route() {
    let s = Setup::new(&all_actions(), &[]).await;
    // The caller is an IAM user whose policy lacks ec2:ReplaceRoute: EC2 (here moto, with the
    // DryRun authorization of cloudha_moto_server.py) answers UnauthorizedOperation.
    let user = format!("dry-{}", s.world.eni_a);
    let allow: Vec<&str> = all_actions()
        .into_iter()
        .filter(|a| *a != "ec2:ReplaceRoute")
        .collect();
    iam(
        &s.world,
        &[
            ("Action", "CreateUser"),
            ("Version", "2010-05-08"),
            ("UserName", &user),
        ],
    )
    .await;
    iam(
        &s.world,
        &[
            ("Action", "PutUserPolicy"),
            ("Version", "2010-05-08"),
            ("UserName", &user),
            ("PolicyName", "cloudha"),
            ("PolicyDocument", &policy(&allow, &[])),
        ],
    )
    .await;
    let key = iam(
        &s.world,
        &[
            ("Action", "CreateAccessKey"),
            ("Version", "2010-05-08"),
            ("UserName", &user),
        ],
    )
    .await;
    let field = |tag: &str| {
        let open = format!("<{tag}>");
        let start = key.find(&open).expect(tag) + open.len();
        key[start..start + key[start..].find('<').expect("close")].to_string()
    };
    let mut input = s.input();
    input.credentials = Some(cloudha_provider_aws::Credentials::new(
        field("AccessKeyId"),
        field("SecretAccessKey"),
        None,
        None,
        "iam-user",
    ));
    let checks = selftest::run(&input).await;
    let denied: Vec<&Check> = failures(&checks)
        .into_iter()
        .filter(|c| c.detail.starts_with("ec2:ReplaceRoute denied"))
        .collect();
    // One per configured route, each naming its table and destination.
    assert_eq!(denied.len(), 3, "{checks:#?}");
    assert!(denied.iter().all(|c| c.method.as_deref() == Some("DryRun")));
    assert!(denied[0].detail.contains(&s.world.rt_1), "{:?}", denied[0]);
    assert!(
        denied[0].fix.contains("allow ec2:ReplaceRoute"),
        "{:?}",
        denied[0]
    );
    assert_eq!(failures(&checks).len(), 3, "{checks:#?}");
    // The allowed DryRun calls still pass for the same caller.
    assert!(
        proved(&checks, "ec2:CreateRoute")
            .iter()
            .all(|p| p == "Pass DryRun"),
        "{checks:#?}"
    );
}

#[tokio::test]
async fn an_instance_without_a_role_is_told_to_attach_one() {
    let s = Setup::new(&all_actions(), &[]).await;
    // IMDS of an instance without an instance profile: no iam/ entries at all.
    let mut values = BTreeMap::new();
    values.insert(
        "/latest/meta-data/instance-id".to_string(),
        "i-0fa4e0000000000bb".to_string(),
    );
    let bare = FakeImds::start(values).await;
    let mut input = s.input();
    input.config.imds_endpoint = Some(bare.url.clone());
    // The production credentials chain, which ends at this IMDS.
    input.credentials = None;
    let checks = selftest::run(&input).await;
    let meta = failure(&checks, "metadata_service", "names no instance role");
    assert!(meta.fix.contains("attach an instance profile"), "{meta:?}");
    let identity = failure(&checks, "identity", "no AWS credentials");
    assert!(identity.fix.contains("in IAM"), "{identity:?}");
    assert!(checks.iter().any(|c| c.name == "skipped"), "{checks:#?}");
}

/// Every route of the world's tables, the Elastic IP's ENI and both ENIs' addresses.
async fn cloud_state(w: &World) -> String {
    let mut state = Vec::new();
    for (table, prefix) in [(&w.rt_1, DEFAULT), (&w.rt_1, ONPREM), (&w.rt_2, DEFAULT)] {
        state.push(format!(
            "{table} {prefix} -> {:?}",
            w.route_target(table, prefix).await
        ));
    }
    state.push(format!("eip -> {:?}", w.eip_eni().await));
    for eni in [&w.eni_a, &w.eni_b] {
        state.push(format!("{eni}: {:?}", w.addresses(eni).await));
    }
    state.join("\n")
}

#[tokio::test]
async fn against_plain_moto_which_ignores_dry_run_the_selftest_changes_nothing() {
    // Plain upstream moto applies CreateRoute/ReplaceRoute although DryRun is set: a probe
    // naming this node's ENI would move the route. The probes name the current state instead.
    let s = Setup::on(World::on(moto::plain()).await, &all_actions(), &[]).await;
    let before = cloud_state(&s.world).await;
    let checks = selftest::run(&s.input()).await;
    assert_eq!(cloud_state(&s.world).await, before, "{checks:#?}");
    let unchanged = checks
        .iter()
        .find(|c| c.name == "unchanged")
        .expect("read-back check");
    assert_eq!(unchanged.outcome, Outcome::Pass, "{unchanged:?}");
    // The endpoint's answer is reported, so the operator knows DryRun proved nothing there.
    let ignored = checks
        .iter()
        .filter(|c| {
            c.detail.starts_with("ec2:ReplaceRoute") && c.detail.contains("although DryRun was set")
        })
        .count();
    assert_eq!(ignored, 3, "{checks:#?}");
    // Every message is one line.
    assert!(
        checks
            .iter()
            .all(|c| !c.detail.contains('\n') && !c.fix.contains('\n')),
        "{checks:#?}"
    );
}

#[tokio::test]
async fn with_metadata_disabled_no_request_reaches_imds_and_the_unproven_checks_are_named() {
    let s = Setup::new(&all_actions(), &[]).await;
    let mut input = s.input();
    input.metadata_disabled = true;
    let checks = selftest::run(&input).await;
    let seen = s.imds.seen();
    assert_eq!(
        (seen.tokens, seen.paths.len(), seen.refused),
        (0, 0, 0),
        "IMDS was contacted: {seen:?}"
    );
    let meta = checks
        .iter()
        .find(|c| c.name == "metadata_service")
        .expect("metadata check");
    assert_eq!(meta.outcome, Outcome::Warn, "{meta:?}");
    assert!(
        meta.detail.contains("AWS_EC2_METADATA_DISABLED"),
        "{meta:?}"
    );
    assert!(meta.detail.contains("unproven"), "{meta:?}");
    assert!(failures(&checks).is_empty(), "{checks:#?}");
    // Without the region or own ENI, the self-test says which settings to add.
    input.config.own_eni = None;
    let checks = selftest::run(&input).await;
    let f = failure(&checks, "metadata_service", "AWS_EC2_METADATA_DISABLED");
    assert!(f.fix.contains("provider.aws.own_eni"), "{f:?}");
    assert_eq!(s.imds.seen().paths.len(), 0);
}
