//! Owns the ENI attribute checks: source/destination check off on both ENIs, one subnet, the
//! floating IPs usable in it ([`address_problem`]) and not on a third ENI.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use aws_sdk_ec2::types::{Filter, NetworkInterface};
use cloudha_provider_core::Check;

use super::input::Input;
use crate::config::parse_ipv4_cidr;
use crate::{AwsProvider, CHECK_DEADLINE};

pub(super) fn addresses_of(eni: &NetworkInterface) -> BTreeSet<Ipv4Addr> {
    eni.private_ip_addresses()
        .iter()
        .filter_map(|p| p.private_ip_address()?.parse().ok())
        .collect()
}

/// Why `ip` cannot be a floating IP in `cidr`: outside it, or one of the five addresses AWS
/// reserves in every subnet (the first four and the last).
pub fn address_problem(cidr: &str, ip: Ipv4Addr) -> Option<String> {
    let (net, len) = parse_ipv4_cidr(cidr)?;
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    let (net, ip) = (u32::from(net) & mask, u32::from(ip));
    if ip & mask != net {
        return Some(format!("outside the subnet {cidr}"));
    }
    let offset = ip - net;
    (offset < 4 || offset == !mask).then(|| {
        format!("one of the addresses AWS reserves in {cidr} (the first four and the last)")
    })
}

pub(super) async fn check_enis(
    provider: &AwsProvider,
    input: &Input,
    own: &NetworkInterface,
    peer: &NetworkInterface,
    out: &mut Vec<Check>,
) {
    let id = &provider.identity;
    for (who, eni_id, eni) in [
        ("this node's", &id.own_eni, own),
        ("the peer's", &id.peer_eni, peer),
    ] {
        if eni.source_dest_check() == Some(false) {
            out.push(Check::pass(
                "source_dest_check",
                format!("source/destination check is off on {who} ENI {eni_id}"),
            ));
        } else {
            out.push(Check::fail(
                "source_dest_check",
                format!("source/destination check is on on {who} ENI {eni_id}: EC2 drops traffic routed through the appliance"),
                format!("aws ec2 modify-network-interface-attribute --network-interface-id {eni_id} --no-source-dest-check"),
            ));
        }
    }
    let subnet = own.subnet_id().unwrap_or_default().to_string();
    if peer.subnet_id() == Some(subnet.as_str()) {
        out.push(Check::pass(
            "same_subnet",
            format!("both ENIs are in subnet {subnet}"),
        ));
    } else {
        out.push(Check::fail(
            "same_subnet",
            format!("this node's ENI is in {subnet}, the peer's in {}", peer.subnet_id().unwrap_or("no subnet")),
            "put both ENIs in the same subnet: a secondary private IP can only move within its subnet",
        ));
    }
    let cidr = match tokio::time::timeout(
        CHECK_DEADLINE,
        provider
            .client
            .describe_subnets()
            .subnet_ids(&subnet)
            .send(),
    )
    .await
    {
        Ok(Ok(r)) => r
            .subnets()
            .first()
            .and_then(|s| s.cidr_block())
            .map(str::to_string),
        _ => None,
    };
    if cidr.is_none() {
        out.push(Check::warn(
            "floating_ip",
            format!("cannot read subnet {subnet} to check the floating IPs against it"),
            "allow ec2:DescribeSubnets for this check (the failover itself does not need it)",
        ));
    }
    // ENIs other than the pair's in the same subnet, which must not hold a floating IP.
    let others = tokio::time::timeout(
        CHECK_DEADLINE,
        provider
            .client
            .describe_network_interfaces()
            .filters(Filter::builder().name("subnet-id").values(&subnet).build())
            .send(),
    )
    .await;
    let others: Vec<NetworkInterface> = match others {
        Ok(Ok(r)) => r
            .network_interfaces()
            .iter()
            .filter(|e| {
                e.network_interface_id() != Some(id.own_eni.as_str())
                    && e.network_interface_id() != Some(id.peer_eni.as_str())
            })
            .cloned()
            .collect(),
        _ => {
            out.push(Check::warn("floating_ip", format!("cannot list the ENIs of subnet {subnet} to see whether a third one holds a floating IP"), "allow ec2:DescribeNetworkInterfaces without a resource restriction for this check"));
            Vec::new()
        }
    };
    for f in &input.floating_ips {
        let ip = f.address;
        let mut problems = Vec::new();
        if let Some(c) = &cidr {
            if let Some(p) = address_problem(c, ip) {
                problems.push((p, format!("pick a floating IP inside {c} other than its first four and last addresses")));
            }
        }
        for o in &others {
            if addresses_of(o).contains(&ip) {
                let other = o.network_interface_id().unwrap_or("?");
                problems.push((format!("held by a third ENI {other}"), format!("aws ec2 unassign-private-ip-addresses --network-interface-id {other} --private-ip-addresses {ip}")));
            }
        }
        if problems.is_empty() {
            if let Some(c) = &cidr {
                out.push(Check::pass(
                    "floating_ip",
                    format!("{ip} is inside {c}, not reserved, on no third ENI"),
                ));
            }
        }
        for (problem, fix) in problems {
            out.push(Check::fail(
                "floating_ip",
                format!("{ip} is {problem}"),
                fix,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_outside_addresses() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert!(address_problem("10.0.1.0/24", ip("10.0.1.100")).is_none());
        assert!(address_problem("10.0.1.0/24", ip("10.0.1.3"))
            .expect("reserved")
            .contains("reserves"));
        assert!(address_problem("10.0.1.0/24", ip("10.0.1.255"))
            .expect("reserved")
            .contains("reserves"));
        assert!(address_problem("10.0.1.0/24", ip("10.0.2.10"))
            .expect("outside")
            .contains("outside"));
    }
}
