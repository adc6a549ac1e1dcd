//! `cloudha selftest` on Azure: everything a failover will need, proved on a healthy pair
//! without changing anything.
//!
//! In order: the metadata service, the managed-identity token, name resolution and TLS to ARM,
//! reads of both NICs and every route table, every RBAC action of
//! [`FAILOVER_ACTIONS`](crate::permissions::FAILOVER_ACTIONS) at the scope it is needed (through the permissions API, which returns the caller's effective
//! `actions`/`notActions` at a scope), the NIC settings (IP forwarding, one subnet, floating IPs
//! inside it, not reserved, not on a third NIC) and where each floating IP and route points now.
//! Every request is a GET.
//!
//! This module orchestrates ([`run`] for `cloudha selftest`, [`prove`] for the daemon's periodic
//! proof, both through `check_pair`); each concern has its own file: `input` (what the self-test
//! is given), `discovery` (metadata service, token, ARM reachable), `reads` (NIC and route table
//! GETs), `rbac` (each action at its scope, through the permissions API), `nics` (NIC settings
//! and floating IPs) and `next_hops` (where each route points).

use std::collections::BTreeMap;

use cloudha_provider_core::{Check, ProgressReporter};

use crate::arm::{ArmClient, CallLog};
use crate::imds;
use discovery::{check_api, check_imds, check_token};
use input::skipped;
use next_hops::check_routes;
use nics::{check_nics, check_recreatable};
use rbac::{check_permissions, scopes};
use reads::read;

mod discovery;
mod input;
mod next_hops;
mod nics;
mod rbac;
mod reads;

pub use crate::permissions_api::{action_matches, grants, PERMISSIONS_API_VERSION};
pub use input::Input;
pub use nics::address_problem;

/// Run every Azure check. Never changes anything in the cloud.
pub async fn run(input: &Input) -> Vec<Check> {
    let mut out = Vec::new();
    let log = CallLog::new(ProgressReporter::discard());
    let instance = check_imds(&input.config, &mut out).await;
    if !check_token(&input.token, &mut out).await {
        out.push(skipped("the managed identity token"));
        return out;
    }
    let arm = match ArmClient::new(&input.config.arm_endpoint, input.token.clone()) {
        Ok(a) => a,
        Err(e) => {
            out.push(Check::fail(
                "cloud_api",
                e,
                "check provider.azure.arm_endpoint",
            ));
            return out;
        }
    };
    if !check_api(&input.config.arm_endpoint, &mut out).await {
        out.push(skipped("ARM"));
        return out;
    }
    let own_nic = match (&input.config.own_nic, &instance) {
        (Some(id), _) => id.clone(),
        (None, Some(instance)) => {
            let found = match imds::lan_mac(instance, input.floating.first().map(|f| f.address)) {
                Ok(mac) => imds::nic_id_for_mac(&arm, &log, instance, &mac).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(id) => {
                    out.push(Check::pass(
                        "discovery",
                        format!("this node's LAN NIC is {id} (found by MAC address)"),
                    ));
                    id
                }
                Err(e) => {
                    out.push(Check::fail("discovery", format!("cannot find this node's LAN NIC: {e}"), "set provider.azure.own_nic to the LAN NIC's id, or grant Microsoft.Compute/virtualMachines/read on this VM"));
                    out.push(skipped("this node's NIC"));
                    return out;
                }
            }
        }
        (None, None) => {
            out.push(skipped(
                "this node's NIC (no own_nic and no metadata service)",
            ));
            return out;
        }
    };
    check_pair(&arm, &log, input, &own_nic, instance.as_ref(), &mut out).await;
    out
}

/// What the daemon proves at start and every few minutes ([`Provider::prove_failover`]): the
/// NICs exist, differ and share the floating IPs' subnet, every action a failover needs is
/// granted where it is needed, the floating IPs and routes are as [`run`] checks them. GETs
/// only, and no metadata service: `own_nic` is what discovery found.
///
/// [`Provider::prove_failover`]: cloudha_provider_core::Provider::prove_failover
pub async fn prove(arm: &ArmClient, input: &Input, own_nic: &str) -> Vec<Check> {
    let log = CallLog::new(ProgressReporter::discard());
    let mut out = Vec::new();
    check_pair(arm, &log, input, own_nic, None, &mut out).await;
    out
}

/// Every check that needs both NICs read.
async fn check_pair(
    arm: &ArmClient,
    log: &CallLog,
    input: &Input,
    own_nic: &str,
    instance: Option<&imds::Instance>,
    out: &mut Vec<Check>,
) {
    if own_nic.eq_ignore_ascii_case(input.config.peer_nic.trim_end_matches('/')) {
        out.push(Check::fail(
            "read_peer_nic",
            format!("provider.azure.peer_nic is this node's own NIC {own_nic}"),
            "set provider.azure.peer_nic to the other node's LAN NIC id",
        ));
        return;
    }
    let own = read(arm, log, "read_own_nic", "this node's NIC", own_nic, out).await;
    let peer = read(
        arm,
        log,
        "read_peer_nic",
        "the peer's NIC (provider.azure.peer_nic)",
        &input.config.peer_nic,
        out,
    )
    .await;
    let mut tables = BTreeMap::new();
    for route in &input.routes {
        let key = route.table.to_ascii_lowercase();
        if tables.contains_key(&key) {
            continue;
        }
        let doc = read(
            arm,
            log,
            "read_route_table",
            "route table",
            &route.table,
            out,
        )
        .await;
        tables.insert(key, doc);
    }
    let (Some(own), Some(peer)) = (own, peer) else {
        out.push(skipped("a NIC"));
        return;
    };
    let scopes = scopes(input, own_nic, &own, &peer, instance);
    check_permissions(arm, log, &scopes, out).await;
    check_nics(arm, log, input, own_nic, &own, &peer, out).await;
    check_recreatable(input, &own, &peer, out);
    check_routes(arm, log, input, &own, &peer, &tables, out).await;
}
