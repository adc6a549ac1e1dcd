//! `cloudha selftest`'s Azure checks against the emulator: every failing condition set up in the
//! emulated cloud, and a correct pair on which everything passes.

use std::sync::Arc;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use cloudha_azure_emulator::scenario::{IpConfigurationSpec, NicSpec, DEFAULT_ACTIONS};
use cloudha_azure_emulator::Scenario;
use cloudha_provider_azure::selftest::{self, Input};
use cloudha_provider_azure::TokenSource;
use cloudha_provider_core::{Check, Outcome, ProgressReporter, Provider, TakeoverRequest};

use crate::harness::{ip, Cloud, DEADLINE};

fn input(cloud: &Cloud, me: &str) -> Input {
    Input {
        config: cloud.config(me),
        floating: cloud.floating(),
        routes: cloud.routes(),
        token: cloud.token_source(&format!("vm-appliance-{me}")),
    }
}

fn failures(checks: &[Check]) -> Vec<&Check> {
    checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .collect()
}

/// The one failure whose detail contains `text`; panics with the whole list otherwise.
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

#[tokio::test]
async fn a_correct_pair_passes_every_check() {
    let cloud = Cloud::start(200).await;
    for me in ["a", "b"] {
        let checks = selftest::run(&input(&cloud, me)).await;
        assert!(failures(&checks).is_empty(), "node {me}: {checks:#?}");
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        for expected in [
            "metadata_service",
            "identity",
            "cloud_api",
            "read_own_nic",
            "read_peer_nic",
            "read_route_table",
            "permission",
            "ip_forwarding",
            "same_subnet",
            "floating_ip",
            "holder",
            "route",
        ] {
            assert!(
                names.contains(&expected),
                "node {me}: no {expected} in {names:?}"
            );
        }
        // Every scope was asked through the permissions API: both NICs, the subnet, the public
        // IP, the route table and the subscription.
        let proved = checks
            .iter()
            .filter(|c| c.method.as_deref() == Some("permissions API"))
            .count();
        assert!(proved >= 6, "node {me}: {checks:#?}");
    }
    // Nothing was written.
    assert_eq!(cloud.emu.count_requests("PUT", ""), 0);
    assert_eq!(cloud.emu.count_requests("POST", ""), 0);
}

#[tokio::test]
async fn a_role_missing_one_action_is_named_with_its_scope_and_arm_refuses_it_too() {
    let cloud = Cloud::start(200).await;
    let without: Vec<&str> = DEFAULT_ACTIONS
        .iter()
        .copied()
        .filter(|a| *a != "Microsoft.Network/routeTables/routes/write")
        .collect();
    assert!(cloud.emu.set_permissions("vm-appliance-b", &without, &[]));
    let checks = selftest::run(&input(&cloud, "b")).await;
    let f = failure(
        &checks,
        "permission",
        "missing Microsoft.Network/routeTables/routes/write",
    );
    assert!(f.detail.contains(&cloud.route_table_id()), "{f:?}");
    assert!(f.fix.contains("Access control (IAM)"), "{f:?}");
    assert_eq!(f.method.as_deref(), Some("permissions API"));
    assert_eq!(failures(&checks).len(), 1, "{checks:#?}");
    // The emulated ARM refuses the same action on a real takeover: the two agree.
    let err = cloud
        .provider("b")
        .take_over(
            &TakeoverRequest {
                epoch: 2,
                deadline: DEADLINE,
            },
            &ProgressReporter::discard(),
        )
        .await
        .expect_err("route write refused");
    assert!(err.to_string().contains("AuthorizationFailed"), "{err}");
    assert!(err.to_string().contains("routes/write"), "{err}");
}

#[tokio::test]
async fn a_not_action_removes_a_wildcard_grant() {
    let cloud = Cloud::start(200).await;
    assert!(cloud.emu.set_permissions(
        "vm-appliance-a",
        &[
            "Microsoft.Network/*",
            "Microsoft.Compute/virtualMachines/read"
        ],
        &["Microsoft.Network/networkInterfaces/write"],
    ));
    let checks = selftest::run(&input(&cloud, "a")).await;
    // Both NICs are named, each as its own scope.
    for nic in ["nic-appliance-a", "nic-appliance-b"] {
        failure(
            &checks,
            "permission",
            &format!(
                "missing Microsoft.Network/networkInterfaces/write on {}",
                cloud.emu.nic_id(nic)
            ),
        );
    }
    assert_eq!(failures(&checks).len(), 2, "{checks:#?}");
}

/// The standard scenario with the appliance subnet's VNet moved to resource group `rg-network`.
fn hub_scenario() -> Scenario {
    let mut s = Scenario::two_appliances();
    for v in &mut s.virtual_networks {
        v.resource_group = Some("rg-network".into());
    }
    for n in &mut s.network_interfaces {
        for c in &mut n.ip_configurations {
            c.subnet = format!("rg-network/{}", c.subnet);
        }
    }
    s
}

#[tokio::test]
async fn subnet_join_on_a_vnet_in_another_resource_group_is_checked_there() {
    let cloud = Cloud::start_with(&hub_scenario(), 200).await;
    let sub = cloud.emu.subscription_id().to_string();
    let own_rg = format!("/subscriptions/{sub}/resourceGroups/rg-cloudha");
    // The role is assigned on the appliances' resource group and on the subscription-level
    // operations path only, not on the network team's group.
    let ops = format!("/subscriptions/{sub}/providers/Microsoft.Network/locations");
    assert!(cloud
        .emu
        .set_role_scopes("vm-appliance-a", &[own_rg.as_str(), ops.as_str()]));
    let checks = selftest::run(&input(&cloud, "a")).await;
    let f = failure(
        &checks,
        "permission",
        "missing Microsoft.Network/virtualNetworks/subnets/join/action",
    );
    assert!(
        f.detail
            .contains("/resourceGroups/rg-network/providers/Microsoft.Network/virtualNetworks/vnet-ha/subnets/appliances"),
        "{f:?}"
    );
}

#[tokio::test]
async fn ip_forwarding_off_is_a_failure_naming_the_nic_and_the_command() {
    let mut scenario = Scenario::two_appliances();
    scenario.network_interfaces[1].enable_ip_forwarding = false;
    let cloud = Cloud::start_with(&scenario, 200).await;
    let checks = selftest::run(&input(&cloud, "a")).await;
    let f = failure(&checks, "ip_forwarding", "nic-appliance-b");
    assert!(f.detail.contains("the peer's"), "{f:?}");
    assert!(f.fix.contains("--ip-forwarding true"), "{f:?}");
    assert_eq!(failures(&checks).len(), 1, "{checks:#?}");
}

#[tokio::test]
async fn a_reserved_floating_ip_is_a_failure() {
    let cloud = Cloud::start(200).await;
    let mut input = input(&cloud, "a");
    input.floating[0].address = ip("10.10.1.3");
    let checks = selftest::run(&input).await;
    let f = failure(&checks, "floating_ip", "10.10.1.3");
    assert!(f.detail.contains("reserved"), "{f:?}");
    assert!(f.fix.contains("first four and last"), "{f:?}");
}

#[tokio::test]
async fn a_floating_ip_held_by_a_third_nic_is_named() {
    let mut scenario = Scenario::two_appliances();
    scenario.network_interfaces.push(NicSpec {
        name: "nic-workload".into(),
        resource_group: None,
        mac_address: None,
        enable_ip_forwarding: false,
        tags: None,
        properties: None,
        ip_configurations: vec![IpConfigurationSpec {
            name: "ipconfig1".into(),
            subnet: "vnet-ha/appliances".into(),
            private_ip_address: Some("10.10.1.101".into()),
            primary: Some(true),
            public_ip: None,
        }],
    });
    let cloud = Cloud::start_with(&scenario, 200).await;
    let mut input = input(&cloud, "a");
    let mut second = input.floating[0].clone();
    second.address = ip("10.10.1.101");
    second.public_ip = None;
    input.floating.push(second);
    let checks = selftest::run(&input).await;
    let f = failure(&checks, "floating_ip", "held by a third NIC");
    assert!(f.detail.contains("nic-workload"), "{f:?}");
    assert!(
        f.fix.contains("remove 10.10.1.101 from NIC nic-workload"),
        "{f:?}"
    );
}

#[tokio::test]
async fn a_missing_route_table_is_named_with_the_fix() {
    let cloud = Cloud::start(200).await;
    let mut input = input(&cloud, "a");
    input.routes[0].table = input.routes[0].table.replace("rt-workloads", "rt-missing");
    let checks = selftest::run(&input).await;
    let f = failure(&checks, "read_route_table", "rt-missing");
    assert!(f.fix.contains("does not exist"), "{f:?}");
}

#[derive(Debug)]
struct NoIdentity;

#[async_trait::async_trait]
impl TokenCredential for NoIdentity {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            "Identity not found",
        ))
    }
}

#[tokio::test]
async fn no_managed_identity_says_to_check_the_assignment_and_role() {
    let cloud = Cloud::start(200).await;
    let mut input = input(&cloud, "a");
    input.token = Arc::new(TokenSource::with_credential(
        Arc::new(NoIdentity),
        "https://management.azure.com/",
    ));
    let checks = selftest::run(&input).await;
    let f = failure(&checks, "identity", "Identity not found");
    assert!(f.fix.contains("az vm identity assign"), "{f:?}");
    assert!(f.fix.contains("Access control (IAM)"), "{f:?}");
    // Nothing past the token was tried.
    assert_eq!(cloud.emu.count_requests("GET", "/subscriptions/"), 0);
}
