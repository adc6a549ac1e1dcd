//! Request-body validation that needs no state: IPv4 arithmetic, the shape of a NIC's
//! `ipConfigurations`, and route properties.
//!
//! Error codes follow what the Network RP returns (see README "Error codes"):
//! syntactic problems are `InvalidRequestFormat` / "Cannot parse the request." with the
//! specific problem as a detail (e.g. `DuplicateResourceName`, `MissingJsonReferenceId`),
//! semantic ones have their own top-level code.

use crate::http::{invalid_format, nrp_error, Resp};
use serde_json::Value;
use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 prefix such as a subnet's `addressPrefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ipv4Net {
    network: u32,
    prefix: u8,
}

impl Ipv4Net {
    /// Parses `a.b.c.d/n`; host bits must be zero (Azure rejects unaligned prefixes).
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, len) = s.trim().split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = len.parse().ok()?;
        if prefix > 32 {
            return None;
        }
        let net = Self {
            network: u32::from(addr),
            prefix,
        };
        (net.network & !net.mask() == 0).then_some(net)
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    fn broadcast(&self) -> u32 {
        self.network | !self.mask()
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network
    }

    /// Azure reserves the first four addresses (network, gateway, two DNS) and the last
    /// (broadcast) of every subnet (Azure Virtual Network FAQ).
    pub fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v < self.network.saturating_add(4) || v == self.broadcast()
    }

    /// Addresses a NIC may use, lowest first.
    pub fn usable(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = self.network.saturating_add(4);
        let last = self.broadcast().saturating_sub(1);
        (first..=last).map(Ipv4Addr::from)
    }

    /// The network address, as IMDS reports `subnet[].address`.
    pub fn network_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

/// One ipConfiguration of a NIC PUT body, as far as the emulator needs to understand it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IpConfigSpec {
    /// Position in the array.
    pub index: usize,
    /// `name`.
    pub name: String,
    /// `properties.primary` (after the single-config rule).
    pub primary: bool,
    /// `privateIPAllocationMethod == Static`.
    pub static_alloc: bool,
    /// `properties.privateIPAddress`, if given.
    pub address: Option<Ipv4Addr>,
    /// `properties.subnet.id`.
    pub subnet_id: String,
    /// `properties.publicIPAddress.id`, if any.
    pub public_ip_id: Option<String>,
}

/// Checks the shape of a NIC body and extracts its ipConfigurations.
///
/// `nic_id`/`nic_name` only feed error messages.
pub(crate) fn parse_nic_ip_configs(
    nic_id: &str,
    nic_name: &str,
    body: &Value,
) -> Result<Vec<IpConfigSpec>, Resp> {
    if !body.is_object() {
        return Err(invalid_format(
            "InvalidJson",
            "The request body must be a JSON object describing the network interface.",
        ));
    }
    let configs = match body.pointer("/properties/ipConfigurations") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(invalid_format(
                "InvalidJsonArray",
                "Value for properties.ipConfigurations must be an array.",
            ))
        }
    };
    if configs.is_empty() {
        // Code seen from the NRP preflight when a NIC has no ipConfigurations.
        return Err(nrp_error(
            400,
            "NetworkInterfaceMustHaveIpConfigurationOrAttachedElasticNetworkInterface",
            format!(
                "Network interface {nic_id} must have at least one IP configuration or an attached elastic network interface."
            ),
        ));
    }

    let mut specs = Vec::with_capacity(configs.len());
    for (i, c) in configs.iter().enumerate() {
        let name = match c.get("name").and_then(Value::as_str) {
            Some(n) if !n.trim().is_empty() => n.to_string(),
            _ => {
                return Err(invalid_format(
                    "MissingResourceName",
                    format!(
                        "Resource name is missing. Path properties.ipConfigurations[{i}].name."
                    ),
                ))
            }
        };
        if let Some(prev) = specs
            .iter()
            .find(|s: &&IpConfigSpec| s.name.eq_ignore_ascii_case(&name))
        {
            return Err(invalid_format(
                "DuplicateResourceName",
                format!(
                    "Resource {nic_id} has two child resources with the same name ({}).",
                    prev.name
                ),
            ));
        }
        let props = c.get("properties").cloned().unwrap_or(Value::Null);
        let subnet_id = match props.get("subnet") {
            None | Some(Value::Null) => {
                // Code seen from the NRP preflight when an ipConfiguration has no subnet.
                return Err(nrp_error(
                    400,
                    "SubnetIsRequired",
                    format!("Subnet is required for IP configuration {nic_id}/ipConfigurations/{name}."),
                ));
            }
            Some(s) => match s.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => {
                    return Err(invalid_format(
                        "MissingJsonReferenceId",
                        format!("Value for reference id is missing. Path properties.ipConfigurations[{i}].properties.subnet."),
                    ))
                }
            },
        };
        let static_alloc = match props.get("privateIPAllocationMethod") {
            None | Some(Value::Null) => false,
            Some(Value::String(m)) if m.eq_ignore_ascii_case("Static") => true,
            Some(Value::String(m)) if m.eq_ignore_ascii_case("Dynamic") => false,
            Some(other) => {
                return Err(invalid_format(
                    "InvalidJsonEnumValue",
                    format!("Value {other} is not valid for property privateIPAllocationMethod; allowed values are Static, Dynamic. Path properties.ipConfigurations[{i}].properties.privateIPAllocationMethod."),
                ))
            }
        };
        let address = match props.get("privateIPAddress") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => match s.parse::<Ipv4Addr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    return Err(invalid_format(
                        "InvalidPrivateIPAddressFormat",
                        format!("Private IP address {s} is not a valid IPv4 address. Path properties.ipConfigurations[{i}].properties.privateIPAddress."),
                    ))
                }
            },
            Some(other) => {
                return Err(invalid_format(
                    "InvalidPrivateIPAddressFormat",
                    format!("Private IP address {other} is not a valid IPv4 address. Path properties.ipConfigurations[{i}].properties.privateIPAddress."),
                ))
            }
        };
        if static_alloc && address.is_none() {
            return Err(nrp_error(
                400,
                "PrivateIPAddressRequiredForStaticAllocation",
                format!("IP configuration {nic_id}/ipConfigurations/{name} uses Static allocation but specifies no privateIPAddress."),
            ));
        }
        let public_ip_id = props
            .pointer("/publicIPAddress/id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let primary = props
            .get("primary")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        specs.push(IpConfigSpec {
            index: i,
            name,
            primary,
            static_alloc,
            address,
            subnet_id,
            public_ip_id,
        });
    }

    let primaries = specs.iter().filter(|s| s.primary).count();
    if specs.len() == 1 {
        // A lone ipConfiguration is always the primary one, whatever was sent.
        specs[0].primary = true;
    } else if primaries == 0 {
        return Err(nrp_error(
            400,
            "NetworkInterfaceMustHaveOneOneIPConfigAsPrimary",
            format!("Network Interface {nic_name} specifies multiple IPConfigurations but none of the IPConfigurations is specified as Primary."),
        ));
    } else if primaries > 1 {
        return Err(nrp_error(
            400,
            "NetworkInterfaceMustHaveOneOneIPConfigAsPrimary",
            format!("Network Interface {nic_name} specifies multiple IPConfigurations as Primary; exactly one must be Primary."),
        ));
    }
    Ok(specs)
}

/// `RouteNextHopType` from routeTable.json (stable/2024-05-01 .. 2025-05-01).
pub(crate) const NEXT_HOP_TYPES: [&str; 5] = [
    "VirtualNetworkGateway",
    "VnetLocal",
    "Internet",
    "VirtualAppliance",
    "None",
];

/// Validates a route PUT body (routeTable.json `RoutePropertiesFormat`: `nextHopType`
/// required; `nextHopIpAddress` only for `VirtualAppliance`).
pub(crate) fn validate_route(route_id: &str, route_name: &str, body: &Value) -> Result<(), Resp> {
    if !body.is_object() {
        return Err(invalid_format(
            "InvalidJson",
            "The request body must be a JSON object describing the route.",
        ));
    }
    let props = match body.get("properties") {
        Some(p @ Value::Object(_)) => p,
        _ => {
            return Err(invalid_format(
                "MissingJsonProperty",
                format!("Required property 'properties' is missing for route {route_id}."),
            ))
        }
    };
    let next_hop = match props.get("nextHopType") {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => {
            return Err(invalid_format(
                "MissingJsonProperty",
                format!("Required property 'nextHopType' is missing. Path properties.nextHopType of route {route_id}."),
            ))
        }
        Some(other) => {
            return Err(invalid_format(
                "InvalidJsonEnumValue",
                format!("Value {other} is not valid for property nextHopType."),
            ))
        }
    };
    let Some(canonical) = NEXT_HOP_TYPES
        .iter()
        .find(|t| t.eq_ignore_ascii_case(next_hop))
    else {
        return Err(invalid_format(
            "InvalidJsonEnumValue",
            format!(
                "Value '{next_hop}' is not valid for property nextHopType; allowed values are {}.",
                NEXT_HOP_TYPES.join(", ")
            ),
        ));
    };
    match props.get("addressPrefix") {
        Some(Value::String(p)) if is_valid_route_prefix(p) => {}
        Some(Value::String(p)) => {
            return Err(nrp_error(
                400,
                "InvalidAddressPrefixFormat",
                format!("Address prefix {p} of route {route_id} is not a valid CIDR or service tag."),
            ))
        }
        _ => {
            return Err(invalid_format(
                "MissingJsonProperty",
                format!("Required property 'addressPrefix' is missing. Path properties.addressPrefix of route {route_id}."),
            ))
        }
    }
    let hop_ip = match props.get("nextHopIpAddress") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(invalid_format(
                "InvalidJsonValue",
                format!("Value {other} is not valid for property nextHopIpAddress."),
            ))
        }
    };
    if *canonical == "VirtualAppliance" {
        match hop_ip {
            None => {
                // Verified message text (terraform-provider-azurerm PR 20365 test log).
                return Err(nrp_error(
                    400,
                    "MissingNextHopIpAddress",
                    format!("NextHopIpAddress cannot be Null or Empty in route {route_name} when NextHopType is VirtualAppliance."),
                ));
            }
            Some(ip) if ip.parse::<Ipv4Addr>().is_err() => {
                return Err(nrp_error(
                    400,
                    "InvalidNextHopIpAddress",
                    format!(
                        "Next hop IP address {ip} of route {route_id} is not a valid IPv4 address."
                    ),
                ));
            }
            Some(_) => {}
        }
    } else if let Some(ip) = hop_ip {
        return Err(nrp_error(
            400,
            "NextHopIpAddressNotAllowed",
            format!("Route {route_id} specifies next hop IP address {ip}, but next hop values are only allowed in routes where the next hop type is VirtualAppliance."),
        ));
    }
    Ok(())
}

/// A route prefix is a CIDR or a service tag name such as `AzureCloud` or `Storage.WestEurope`.
fn is_valid_route_prefix(p: &str) -> bool {
    if p.contains('/') {
        return Ipv4Net::parse(p).is_some();
    }
    let mut chars = p.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subnet_math_matches_azure_reservations() {
        let n = Ipv4Net::parse("10.0.1.0/24").expect("prefix");
        assert!(n.is_reserved("10.0.1.0".parse().expect("ip")));
        assert!(n.is_reserved("10.0.1.3".parse().expect("ip")));
        assert!(!n.is_reserved("10.0.1.4".parse().expect("ip")));
        assert!(n.is_reserved("10.0.1.255".parse().expect("ip")));
        assert!(!n.contains("10.0.2.4".parse().expect("ip")));
        assert_eq!(n.usable().next(), Some("10.0.1.4".parse().expect("ip")));
        assert_eq!(n.usable().count(), 251);
        assert!(Ipv4Net::parse("10.0.1.1/24").is_none());
        let small = Ipv4Net::parse("192.168.0.128/27").expect("prefix");
        assert!(small.is_reserved("192.168.0.131".parse().expect("ip")));
        assert!(small.is_reserved("192.168.0.159".parse().expect("ip")));
    }

    #[test]
    fn route_prefix_forms() {
        assert!(is_valid_route_prefix("0.0.0.0/0"));
        assert!(is_valid_route_prefix("AzureCloud.WestEurope"));
        assert!(!is_valid_route_prefix("10.0.0.1/8"));
        assert!(!is_valid_route_prefix("1nope"));
    }

    #[test]
    fn lone_config_becomes_primary() {
        let body = json!({"properties":{"ipConfigurations":[{"name":"a","properties":{"subnet":{"id":"/x"}}}]}});
        let specs = parse_nic_ip_configs("/nic", "nic", &body).expect("valid");
        assert!(specs[0].primary);
    }
}
