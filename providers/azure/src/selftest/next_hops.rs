//! Owns the route checks: each configured route read back, and where its next hop points now
//! (this node, the peer, or elsewhere).

use std::collections::BTreeMap;

use cloudha_provider_core::{Check, NextHop};
use serde_json::Value;

use super::input::Input;
use super::reads::read_failure;
use crate::arm::{ArmClient, CallLog, ErrorClass, NETWORK_API_VERSION};
use crate::ids::short;
use crate::{nic, routes};

pub(super) async fn check_routes(
    arm: &ArmClient,
    log: &CallLog,
    input: &Input,
    own: &Value,
    peer: &Value,
    tables: &BTreeMap<String, Option<Value>>,
    out: &mut Vec<Check>,
) {
    let own_addr = nic::primary_address(own);
    let peer_addr = nic::primary_address(peer);
    for route in &input.routes {
        if tables
            .get(&route.table.to_ascii_lowercase())
            .is_some_and(Option::is_none)
        {
            continue; // the table read failed above
        }
        let id = routes::route_id(route);
        let label = format!("{}/{}", short(&route.table), route.name);
        let doc = match arm
            .get(log, "selftest.route", &id, NETWORK_API_VERSION)
            .await
        {
            Ok(r) => r.body,
            Err(e) if e.class == ErrorClass::NotFound => {
                out.push(Check::warn(
                    "route",
                    format!("route {label} does not exist yet"),
                    "nothing to do: the active node creates it on its next takeover (or add it now)",
                ));
                continue;
            }
            Err(e) => {
                out.push(read_failure("route", "route", &id, &e));
                continue;
            }
        };
        let hop = routes::next_hop_of(&doc);
        let expected_here = match route.next_hop {
            NextHop::SelfAddress => [own_addr, peer_addr],
            NextHop::FloatingIp => [input.floating.first().map(|f| f.address), None],
        };
        let who = match hop {
            Some(h) if Some(h) == own_addr && route.next_hop == NextHop::SelfAddress => "this node",
            Some(h) if Some(h) == peer_addr && route.next_hop == NextHop::SelfAddress => "the peer",
            Some(_) if route.next_hop == NextHop::FloatingIp => "the floating IP",
            _ => "",
        };
        if hop.is_some() && expected_here.contains(&hop) {
            out.push(Check::pass(
                "route",
                format!(
                    "{label} ({}) -> {} ({who})",
                    route.prefix,
                    hop.map(|h| h.to_string()).unwrap_or_default()
                ),
            ));
        } else {
            let wanted = match route.next_hop {
                NextHop::SelfAddress => "the active node's own address",
                NextHop::FloatingIp => "the floating IP",
            };
            out.push(Check::fail(
                "route",
                format!(
                    "{label} ({}) points at {}, not {wanted} as next_hop = {:?} says",
                    route.prefix,
                    hop.map(|h| h.to_string()).unwrap_or_else(|| "no virtual appliance".into()),
                    route.next_hop
                ),
                "correct [[route]] next_hop or the route in Azure; the active node rewrites it on takeover",
            ));
        }
    }
}
