//! Reading the current state from EC2: the two ENIs, the Elastic IPs and the route tables.
//!
//! Everything is looked up by id. moto lacks some filters real EC2 has
//! (`addresses.private-ip-address` matches only primary IPs, `route.network-interface-id` is not
//! implemented), and ids are what the configuration names anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use aws_sdk_ec2::types::{Address, NetworkInterface, RouteTable};

use crate::call::{Calls, Failed};

/// One ENI as EC2 reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Eni {
    /// The ENI's primary private IP, which can never move.
    pub primary: Option<Ipv4Addr>,
    /// Every private IP on the ENI, primary included.
    pub addresses: BTreeSet<Ipv4Addr>,
    /// Whether EC2 drops traffic not addressed to the ENI (must be off on an appliance).
    pub source_dest_check: Option<bool>,
    /// The subnet the ENI sits in.
    pub subnet: Option<String>,
    /// The instance the ENI is attached to, if any.
    pub instance: Option<String>,
}

impl Eni {
    fn from_sdk(eni: &NetworkInterface) -> Self {
        let mut primary = None;
        let mut addresses = BTreeSet::new();
        for p in eni.private_ip_addresses() {
            // An address EC2 would never send is skipped rather than trusted.
            let Some(ip) = p.private_ip_address().and_then(|a| a.parse().ok()) else {
                continue;
            };
            if p.primary() == Some(true) {
                primary = Some(ip);
            }
            addresses.insert(ip);
        }
        if primary.is_none() {
            primary = eni.private_ip_address().and_then(|a| a.parse().ok());
        }
        Self {
            primary,
            addresses,
            source_dest_check: eni.source_dest_check(),
            subnet: eni.subnet_id().map(str::to_string),
            instance: eni
                .attachment()
                .and_then(|a| a.instance_id())
                .map(str::to_string),
        }
    }
}

/// The pair's two ENIs. The peer's is `None` when EC2 no longer knows it (its instance was
/// terminated with the ENI): the takeover must go on regardless.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Enis {
    pub own: Eni,
    pub peer: Option<Eni>,
}

/// Describe `own` and `peer` in one request, or `own` alone when the peer ENI is gone.
pub(crate) async fn enis(calls: &Calls<'_>, own: &str, peer: &str) -> Result<Enis, Failed> {
    let both = calls
        .send("DescribeNetworkInterfaces", || {
            calls
                .client
                .describe_network_interfaces()
                .network_interface_ids(own)
                .network_interface_ids(peer)
                .send()
        })
        .await;
    let found = match both {
        Ok(out) => out.network_interfaces().to_vec(),
        // One unknown id fails the whole request; ask again for ours alone to tell which.
        Err(f) if f.is("InvalidNetworkInterfaceID.NotFound") => {
            let out = calls
                .send("DescribeNetworkInterfaces", || {
                    calls
                        .client
                        .describe_network_interfaces()
                        .network_interface_ids(own)
                        .send()
                })
                .await?;
            calls
                .progress
                .note(format!("peer ENI {peer} not found; taking over without it"));
            out.network_interfaces().to_vec()
        }
        Err(f) => return Err(f),
    };
    let by_id = |id: &str| {
        found
            .iter()
            .find(|e| e.network_interface_id() == Some(id))
            .map(Eni::from_sdk)
    };
    Ok(Enis {
        own: by_id(own).unwrap_or_default(),
        peer: by_id(peer),
    })
}

/// Describe the ENI `id` alone (an unknown id is an error).
pub(crate) async fn eni(calls: &Calls<'_>, id: &str) -> Result<Eni, Failed> {
    let out = calls
        .send("DescribeNetworkInterfaces", || {
            calls
                .client
                .describe_network_interfaces()
                .network_interface_ids(id)
                .send()
        })
        .await?;
    Ok(out
        .network_interfaces()
        .iter()
        .find(|e| e.network_interface_id() == Some(id))
        .map(Eni::from_sdk)
        .unwrap_or_default())
}

/// One Elastic IP's association as EC2 reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Association {
    /// The public address (for messages).
    pub public_ip: Option<String>,
    /// The association's id; a new one is issued on every (re)association.
    pub association_id: Option<String>,
    /// The ENI it is associated with.
    pub eni: Option<String>,
    /// The private IP on that ENI it is associated with.
    pub private_ip: Option<Ipv4Addr>,
}

impl Association {
    fn from_sdk(address: &Address) -> Self {
        Self {
            public_ip: address.public_ip().map(str::to_string),
            association_id: address.association_id().map(str::to_string),
            eni: address.network_interface_id().map(str::to_string),
            private_ip: address.private_ip_address().and_then(|a| a.parse().ok()),
        }
    }
}

/// The associations of `allocation_ids`, by allocation id.
pub(crate) async fn associations(
    calls: &Calls<'_>,
    allocation_ids: &[&str],
) -> Result<BTreeMap<String, Association>, Failed> {
    if allocation_ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let out = calls
        .send("DescribeAddresses", || {
            calls
                .client
                .describe_addresses()
                .set_allocation_ids(Some(allocation_ids.iter().map(|s| s.to_string()).collect()))
                .send()
        })
        .await?;
    Ok(out
        .addresses()
        .iter()
        .filter_map(|a| Some((a.allocation_id()?.to_string(), Association::from_sdk(a))))
        .collect())
}

/// One route's target as EC2 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteTarget {
    /// The ENI the route points at, if it points at one.
    pub eni: Option<String>,
    /// The target in words, for messages (`eni-...`, `igw-...`, `blackhole`).
    pub describe: String,
}

/// Routes of each table, by table id and then by IPv4 destination CIDR.
pub(crate) type Tables = BTreeMap<String, BTreeMap<String, RouteTarget>>;

fn routes_of(table: &RouteTable) -> BTreeMap<String, RouteTarget> {
    table
        .routes()
        .iter()
        .filter_map(|r| {
            let destination = r.destination_cidr_block()?.to_string();
            let eni = r.network_interface_id().map(str::to_string);
            let describe = eni
                .clone()
                .or_else(|| r.gateway_id().map(str::to_string))
                .or_else(|| r.instance_id().map(str::to_string))
                .or_else(|| r.nat_gateway_id().map(str::to_string))
                .or_else(|| r.transit_gateway_id().map(str::to_string))
                .unwrap_or_else(|| "another target".to_string());
            Some((destination, RouteTarget { eni, describe }))
        })
        .collect()
}

/// The routes of `tables`, in one request.
pub(crate) async fn route_tables(calls: &Calls<'_>, tables: &[&str]) -> Result<Tables, Failed> {
    if tables.is_empty() {
        return Ok(Tables::new());
    }
    let out = calls
        .send("DescribeRouteTables", || {
            calls
                .client
                .describe_route_tables()
                .set_route_table_ids(Some(tables.iter().map(|s| s.to_string()).collect()))
                .send()
        })
        .await?;
    Ok(out
        .route_tables()
        .iter()
        .filter_map(|t| Some((t.route_table_id()?.to_string(), routes_of(t))))
        .collect())
}
