//! Owns the NIC checks: IP forwarding, one subnet, the floating IPs usable in it
//! ([`address_problem`]) and held by no third NIC, and the floating entries the config alone could
//! recreate.

use std::net::Ipv4Addr;

use cloudha_provider_core::Check;
use serde_json::Value;

use super::input::Input;
use crate::arm::{ArmClient, CallLog, NETWORK_API_VERSION};
use crate::ids::short;
use crate::nic;

/// `(network, prefix length)` of `10.10.1.0/24`.
fn parse_prefix(text: &str) -> Option<(u32, u8)> {
    let (a, l) = text.split_once('/')?;
    let a: Ipv4Addr = a.parse().ok()?;
    let l: u8 = l.parse().ok()?;
    (l <= 32).then_some((u32::from(a), l))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// Why `ip` cannot be a floating IP in `prefix` (outside it, or one of Azure's reserved
/// addresses: the network address, the next three, and the broadcast address).
pub fn address_problem(prefix: &str, ip: Ipv4Addr) -> Option<String> {
    let (net, len) = parse_prefix(prefix)?;
    let m = mask(len);
    let ip = u32::from(ip);
    let net = net & m;
    if ip & m != net {
        return Some(format!("outside the subnet {prefix}"));
    }
    let offset = ip - net;
    let last = !m;
    if offset < 4 || offset == last {
        return Some(format!(
            "one of Azure's reserved addresses in {prefix} (the first four and the last)"
        ));
    }
    None
}

pub(super) async fn check_nics(
    arm: &ArmClient,
    log: &CallLog,
    input: &Input,
    own_id: &str,
    own: &Value,
    peer: &Value,
    out: &mut Vec<Check>,
) {
    for (who, id, doc) in [
        ("this node's", own_id, own),
        ("the peer's", input.config.peer_nic.as_str(), peer),
    ] {
        if nic::ip_forwarding(doc) == Some(true) {
            out.push(Check::pass(
                "ip_forwarding",
                format!("IP forwarding is on on {who} NIC {}", short(id)),
            ));
        } else {
            out.push(Check::fail(
                "ip_forwarding",
                format!("IP forwarding is off on {who} NIC {}: Azure drops traffic routed through the appliance", short(id)),
                format!("az network nic update --ids {id} --ip-forwarding true"),
            ));
        }
    }
    let own_subnet = nic::primary_subnet(own);
    let peer_subnet = nic::primary_subnet(peer);
    let Some(subnet_id) = own_subnet.clone() else {
        out.push(Check::fail(
            "same_subnet",
            format!(
                "this node's NIC {} has no subnet on its primary ipConfiguration",
                short(own_id)
            ),
            "check provider.azure.own_nic",
        ));
        return;
    };
    if peer_subnet
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case(&subnet_id))
    {
        out.push(Check::pass(
            "same_subnet",
            format!("both NICs are in subnet {subnet_id}"),
        ));
    } else {
        out.push(Check::fail(
            "same_subnet",
            format!("this node's NIC is in {subnet_id}, the peer's in {}", peer_subnet.as_deref().unwrap_or("no subnet")),
            "put both LAN NICs in the same subnet: an ipConfiguration can only move within its subnet",
        ));
    }
    let subnet = match arm
        .get(log, "selftest.subnet", &subnet_id, NETWORK_API_VERSION)
        .await
    {
        Ok(r) => Some(r.body),
        Err(e) => {
            out.push(Check::warn(
                "floating_ip",
                format!("cannot read subnet {subnet_id} to check the floating IPs against it: {e}"),
                "grant Microsoft.Network/virtualNetworks/subnets/read for this check (the failover itself does not need it)",
            ));
            None
        }
    };
    let prefix = subnet.as_ref().and_then(|s| {
        s.pointer("/properties/addressPrefix")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let users: Vec<String> = subnet
        .as_ref()
        .and_then(|s| {
            s.pointer("/properties/ipConfigurations")
                .and_then(Value::as_array)
        })
        .map(|l| {
            l.iter()
                .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    // The NICs other than the pair's that have an ipConfiguration in this subnet.
    let nic_of = |ipconfig: &str| {
        let lower = ipconfig.to_ascii_lowercase();
        lower
            .find("/ipconfigurations/")
            .map(|at| ipconfig[..at].to_string())
    };
    let mut others: Vec<String> = Vec::new();
    for u in &users {
        if let Some(n) = nic_of(u) {
            if !n.eq_ignore_ascii_case(own_id)
                && !n.eq_ignore_ascii_case(&input.config.peer_nic)
                && !others.iter().any(|o| o.eq_ignore_ascii_case(&n))
            {
                others.push(n);
            }
        }
    }
    let mut other_docs = Vec::new();
    for o in &others {
        match arm.get(log, "selftest.get", o, NETWORK_API_VERSION).await {
            Ok(r) => other_docs.push((o.clone(), r.body)),
            Err(e) => out.push(Check::warn(
                "floating_ip",
                format!("cannot read NIC {o} in the same subnet to see whether it holds a floating IP: {e}"),
                "grant networkInterfaces/read on the subnet's resource group for this check",
            )),
        }
    }
    for f in &input.floating {
        let ip = f.address;
        let mut problems = Vec::new();
        if let Some(p) = &prefix {
            if let Some(problem) = address_problem(p, ip) {
                problems.push((problem, format!("pick a floating IP inside {p} other than its first four and last addresses")));
            }
        }
        for (id, doc) in &other_docs {
            if nic::holds(doc, ip) {
                problems.push((
                    format!("held by a third NIC {id}"),
                    format!(
                        "remove {ip} from NIC {} (only the pair's NICs may hold it)",
                        short(id)
                    ),
                ));
            }
        }
        if problems.is_empty() {
            if prefix.is_some() {
                out.push(Check::pass(
                    "floating_ip",
                    format!(
                        "{ip} is inside {}, not reserved, on no third NIC",
                        prefix.as_deref().unwrap_or_default()
                    ),
                ));
            }
        } else {
            for (problem, fix) in problems {
                out.push(Check::fail(
                    "floating_ip",
                    format!("{ip} is {problem}"),
                    fix,
                ));
            }
        }
        let holder = match (nic::holds(own, ip), nic::holds(peer, ip)) {
            (true, false) => Some("this node"),
            (false, true) => Some("the peer"),
            (true, true) => None,
            (false, false) => None,
        };
        match holder {
            Some(h) => out.push(Check::pass("holder", format!("{ip} is on {h}'s NIC"))),
            None if nic::holds(own, ip) => out.push(Check::fail("holder", format!("{ip} is on both NICs"), "remove it from the NIC of the standby node")),
            None => out.push(Check::warn(
                "holder",
                format!("{ip} is on neither NIC: traffic to it is dropped until the active node takes it"),
                "start the daemons: the active node adds it (or check the config's address)",
            )),
        }
    }
}

/// Warn where a floating entry holds what the config alone could not recreate: the daemon keeps
/// it in `state_dir` during a move, and would lose it with that directory.
pub(super) fn check_recreatable(input: &Input, own: &Value, peer: &Value, out: &mut Vec<Check>) {
    for f in &input.floating {
        let Some(entry) =
            nic::ipconfig_with(own, f.address).or_else(|| nic::ipconfig_with(peer, f.address))
        else {
            continue;
        };
        let mut extra = nic::beyond_template(entry, f.public_ip.as_deref());
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let from_config = f
            .ip_config_name
            .clone()
            .unwrap_or_else(|| crate::moves::default_ip_config_name(f.address));
        if !name.eq_ignore_ascii_case(&from_config) {
            extra.push(format!("name {name}"));
        }
        if extra.is_empty() {
            out.push(Check::pass(
                "recreatable",
                format!(
                    "{}'s ipConfiguration can be recreated from the config alone",
                    f.address
                ),
            ));
        } else {
            out.push(Check::warn(
                "recreatable",
                format!(
                    "{}'s ipConfiguration holds {} that the config alone would not recreate: during a move only node.state_dir ({}) keeps it",
                    f.address,
                    extra.join(", "),
                    crate::carried::FILE_NAME
                ),
                "keep node.state_dir on persistent storage; set ip_config_name and public_ip in [[floating_ip]] for what the config can hold",
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
        for reserved in ["10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.255"] {
            let p = address_problem("10.0.1.0/24", ip(reserved)).expect("reserved");
            assert!(p.contains("reserved"), "{p}");
        }
        assert!(address_problem("10.0.1.0/24", ip("10.0.2.4"))
            .expect("outside")
            .contains("outside"));
    }
}
