//! Owns the placement checks: who holds each floating IP, Elastic IP and route now (this node,
//! the peer, or neither).

use aws_sdk_ec2::types::NetworkInterface;
use cloudha_provider_core::Check;

use super::enis::addresses_of;
use super::input::Input;
use super::reads::Tables;

pub(super) fn check_holders(
    input: &Input,
    own: &NetworkInterface,
    peer: &NetworkInterface,
    eips: &[(String, Option<String>)],
    tables: &Tables,
    out: &mut Vec<Check>,
) {
    let own_id = own.network_interface_id().unwrap_or_default();
    let peer_id = peer.network_interface_id().unwrap_or_default();
    let who = |eni: Option<&str>| match eni {
        Some(e) if e == own_id => Some("this node"),
        Some(e) if e == peer_id => Some("the peer"),
        _ => None,
    };
    let (own_ips, peer_ips) = (addresses_of(own), addresses_of(peer));
    for f in &input.floating_ips {
        let ip = f.address;
        match (own_ips.contains(&ip), peer_ips.contains(&ip)) {
            (true, false) => out.push(Check::pass("holder", format!("{ip} is on this node's ENI"))),
            (false, true) => out.push(Check::pass("holder", format!("{ip} is on the peer's ENI"))),
            (true, true) => out.push(Check::fail("holder", format!("{ip} is on both ENIs"), "unassign it from the standby node's ENI")),
            (false, false) => out.push(Check::warn("holder", format!("{ip} is on neither ENI: traffic to it is dropped until the active node takes it"), "start the daemons: the active node assigns it")),
        }
    }
    for (allocation, eni) in eips {
        match who(eni.as_deref()) {
            Some(w) => out.push(Check::pass(
                "holder",
                format!("Elastic IP {allocation} is associated with {w}"),
            )),
            None => out.push(Check::warn(
                "holder",
                format!(
                    "Elastic IP {allocation} is associated with {}",
                    eni.as_deref().unwrap_or("nothing")
                ),
                "the active node re-associates it on its next takeover",
            )),
        }
    }
    for r in &input.routes {
        let Some((_, routes)) = tables.iter().find(|(t, _)| *t == r.table) else {
            continue;
        };
        match routes.iter().find(|(d, _)| *d == r.prefix) {
            None => out.push(Check::warn("route", format!("{} has no route for {}", r.table, r.prefix), "nothing to do: the active node creates it (CreateRoute) on its next takeover")),
            Some((_, target)) => match who(target.as_deref()) {
                Some(w) => out.push(Check::pass("route", format!("{} {} -> {} ({w})", r.table, r.prefix, target.as_deref().unwrap_or_default()))),
                None => out.push(Check::fail(
                    "route",
                    format!("{} {} points at {}, not at either node's ENI", r.table, r.prefix, target.as_deref().unwrap_or("no ENI")),
                    "correct the [[route]] entry or the route: it must target one of the pair's ENIs",
                )),
            },
        }
    }
}
