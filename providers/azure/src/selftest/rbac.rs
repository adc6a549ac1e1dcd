//! Owns the permission checks: which resource each RBAC action of
//! [`FAILOVER_ACTIONS`] must be granted on ([`scopes`]), and asking the permissions API
//! ([`crate::permissions_api`]) at each of those scopes.

use cloudha_provider_core::Check;
use serde_json::Value;

use super::input::Input;
use crate::arm::{ArmClient, CallLog};
use crate::permissions::{RequiredAction, Scope, FAILOVER_ACTIONS};
use crate::permissions_api::{grants, PERMISSIONS_API_VERSION};
use crate::{imds, nic};

/// Each scope the failover acts on, with the actions it needs there.
pub(super) fn scopes(
    input: &Input,
    own_id: &str,
    own: &Value,
    peer: &Value,
    instance: Option<&imds::Instance>,
) -> Vec<(String, Vec<&'static RequiredAction>)> {
    let mut by_scope: Vec<(String, Vec<&'static RequiredAction>)> = Vec::new();
    let mut add = |scope: &str, action: &'static RequiredAction| {
        let scope = scope.trim_end_matches('/').to_string();
        match by_scope
            .iter_mut()
            .find(|(s, _)| s.eq_ignore_ascii_case(&scope))
        {
            Some((_, list)) => list.push(action),
            None => by_scope.push((scope, vec![action])),
        }
    };
    let subscription = crate::ResourceId::parse(own_id, "networkInterfaces")
        .map(|r| format!("/subscriptions/{}", r.subscription))
        .unwrap_or_default();
    let refs = |pointer: &str| -> Vec<String> {
        let mut ids = Vec::new();
        for doc in [own, peer] {
            for c in nic::ipconfigs(doc) {
                if let Some(id) = c.pointer(pointer).and_then(Value::as_str) {
                    ids.push(id.to_string());
                }
            }
        }
        ids
    };
    let subnets: Vec<String> = dedup(refs("/properties/subnet/id"));
    let mut public_ips = refs("/properties/publicIPAddress/id");
    public_ips.extend(input.floating.iter().filter_map(|f| f.public_ip.clone()));
    let public_ips = dedup(public_ips);
    let nsgs = dedup(
        [own, peer]
            .iter()
            .filter_map(|d| {
                d.pointer("/properties/networkSecurityGroup/id")
                    .and_then(Value::as_str)
            })
            .map(str::to_string)
            .collect(),
    );
    let tables = dedup(input.routes.iter().map(|r| r.table.clone()).collect());
    // What the floating entries link to, on whichever NIC holds them now.
    let mut linked: Vec<(&'static str, String)> = Vec::new();
    for doc in [own, peer] {
        for f in &input.floating {
            if let Some(entry) = nic::ipconfig_with(doc, f.address) {
                linked.extend(nic::linked_resources(entry));
            }
        }
    }
    let vnets: Vec<String> = if input.config.move_mode == crate::MoveMode::Atomic {
        dedup(
            subnets
                .iter()
                .filter_map(|s| crate::config::vnet_of_subnet(s))
                .map(str::to_string)
                .collect(),
        )
    } else {
        Vec::new()
    };
    let vm = own
        .pointer("/properties/virtualMachine/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            instance.map(|i| {
                format!(
                    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
                    i.subscription, i.resource_group, i.vm_name
                )
            })
        });
    for action in FAILOVER_ACTIONS {
        let targets: Vec<String> = match action.scope {
            Scope::Nics => vec![own_id.to_string(), input.config.peer_nic.clone()],
            Scope::Subnet => subnets.clone(),
            Scope::PublicIps => public_ips.clone(),
            Scope::NetworkSecurityGroup => nsgs.clone(),
            Scope::RouteTables => tables.clone(),
            Scope::LinkedResources => dedup(
                linked
                    .iter()
                    .filter(|(a, _)| *a == action.action)
                    .map(|(_, id)| id.clone())
                    .collect(),
            ),
            Scope::VirtualNetwork => vnets.clone(),
            // Discovery only reads the VM when own_nic is not configured.
            Scope::OwnVm if input.config.own_nic.is_some() => Vec::new(),
            Scope::OwnVm => vm.iter().cloned().collect(),
            Scope::Subscription => vec![subscription.clone()],
        };
        for t in targets.iter().filter(|t| !t.is_empty()) {
            add(t, action);
        }
    }
    by_scope
}

fn dedup(ids: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&id)) {
            out.push(id);
        }
    }
    out
}

pub(super) async fn check_permissions(
    arm: &ArmClient,
    log: &CallLog,
    scopes: &[(String, Vec<&'static RequiredAction>)],
    out: &mut Vec<Check>,
) {
    for (scope, actions) in scopes {
        let id = format!("{scope}/providers/Microsoft.Authorization/permissions");
        let answer = match arm
            .get(log, "selftest.permissions", &id, PERMISSIONS_API_VERSION)
            .await
        {
            Ok(r) => r.body,
            Err(e) => {
                out.push(
                    Check::warn(
                        "permission",
                        format!("cannot list the identity's permissions on {scope}: {e}; {} action(s) unproved", actions.len()),
                        "grant Microsoft.Authorization/permissions/read (part of Reader) or check the scope id",
                    )
                    .proved_by("permissions API"),
                );
                continue;
            }
        };
        let mut granted = Vec::new();
        for action in actions {
            if grants(&answer, action.action) {
                granted.push(action.action);
            } else {
                out.push(
                    Check::fail(
                        "permission",
                        format!("missing {} on {scope} (needed to {})", action.action, action.why),
                        format!(
                            "add {} to the identity's role (deploy/azure) and assign it at {scope} or above, in Access control (IAM)",
                            action.action
                        ),
                    )
                    .proved_by("permissions API"),
                );
            }
        }
        if !granted.is_empty() {
            let names: Vec<&str> = granted
                .iter()
                .map(|a| a.strip_prefix("Microsoft.").unwrap_or(a))
                .collect();
            out.push(
                Check::pass(
                    "permission",
                    format!("{} granted on {scope}", names.join(", ")),
                )
                .proved_by("permissions API"),
            );
        }
    }
}
