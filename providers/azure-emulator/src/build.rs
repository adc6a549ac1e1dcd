//! Owns turning a [`Scenario`] into the emulator's initial [`State`]: the short names of the
//! scenario expanded into the full ARM documents the service would return (NICs, VNets, public
//! IPs, route tables, VMs and their identities; load balancers through
//! [`crate::load_balancer::build_all`]).

use crate::ids;
use crate::scenario::{err, NicSpec, Scenario, ScenarioError, DEFAULT_ACTIONS};
use crate::state::{
    new_etag, Identity, Nic, PublicIp, ResourceGroup, RouteTable, State, Subnet, Subscription, Vm,
    Vnet,
};
use crate::validate::Ipv4Net;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};

impl Scenario {
    /// Builds the initial state.
    pub(crate) fn build(&self) -> Result<State, ScenarioError> {
        if self.subscription_id.is_empty() || self.resource_group.is_empty() {
            return err("subscription_id and resource_group are required");
        }
        let sub = self.subscription_id.clone();
        let loc = self.location.clone();
        let mut st = State::new(self.settings.clone());
        st.subscriptions.insert(
            sub.to_ascii_lowercase(),
            Subscription {
                id: sub.clone(),
                tenant_id: self.tenant_id.clone(),
            },
        );
        let rg_of = |o: &Option<String>| o.clone().unwrap_or_else(|| self.resource_group.clone());
        let add_rg = |st: &mut State, rg: &str| {
            st.resource_groups
                .entry(State::rg_key(&sub, rg))
                .or_insert_with(|| ResourceGroup {
                    name: rg.to_string(),
                    location: loc.clone(),
                });
        };
        add_rg(&mut st, &self.resource_group);

        for v in &self.virtual_networks {
            let rg = rg_of(&v.resource_group);
            add_rg(&mut st, &rg);
            let vnet_id = ids::resource_id(&sub, &rg, "Microsoft.Network/virtualNetworks", &v.name);
            let mut subnets = Vec::new();
            for s in &v.subnets {
                let Some(prefix) = Ipv4Net::parse(&s.address_prefix) else {
                    return err(format!(
                        "subnet {}: bad address_prefix {}",
                        s.name, s.address_prefix
                    ));
                };
                subnets.push(Subnet {
                    id: format!("{vnet_id}/subnets/{}", s.name),
                    name: s.name.clone(),
                    vnet_id: vnet_id.clone(),
                    prefix,
                    route_table_id: s
                        .route_table
                        .as_ref()
                        .map(|rt| ids::resource_id(&sub, &rg, "Microsoft.Network/routeTables", rt)),
                });
            }
            st.vnets.insert(
                ids::key(&vnet_id),
                Vnet {
                    id: vnet_id,
                    name: v.name.clone(),
                    location: loc.clone(),
                    address_prefixes: v.address_prefixes.clone(),
                    etag: new_etag(),
                    resource_guid: uuid::Uuid::new_v4().to_string(),
                    subnets,
                },
            );
        }

        for p in &self.public_ip_addresses {
            let rg = rg_of(&p.resource_group);
            add_rg(&mut st, &rg);
            let id = ids::resource_id(&sub, &rg, "Microsoft.Network/publicIPAddresses", &p.name);
            let doc = json!({
                "name": p.name, "id": id, "etag": new_etag(),
                "type": "Microsoft.Network/publicIPAddresses", "location": loc,
                "sku": {"name": "Standard", "tier": "Regional"},
                "properties": {
                    "provisioningState": "Succeeded",
                    "resourceGuid": uuid::Uuid::new_v4().to_string(),
                    "ipAddress": p.ip_address,
                    "publicIPAddressVersion": "IPv4",
                    "publicIPAllocationMethod": "Static",
                    "idleTimeoutInMinutes": 4,
                }
            });
            st.public_ips.insert(ids::key(&id), PublicIp { id, doc });
        }

        for (n, spec) in self.network_interfaces.iter().enumerate() {
            let rg = rg_of(&spec.resource_group);
            add_rg(&mut st, &rg);
            let doc = build_nic(&st, &sub, &rg, &loc, n, spec)?;
            let id = ids::nic_id(&sub, &rg, &spec.name);
            st.nics.insert(
                ids::key(&id),
                Nic {
                    id,
                    applied: doc,
                    pending: None,
                    op_id: None,
                    creating: false,
                },
            );
        }

        crate::load_balancer::build_all(
            &mut st,
            &sub,
            &self.resource_group,
            &loc,
            &self.load_balancers,
        )?;

        for t in &self.route_tables {
            let rg = rg_of(&t.resource_group);
            add_rg(&mut st, &rg);
            let id = ids::resource_id(&sub, &rg, "Microsoft.Network/routeTables", &t.name);
            let mut routes = Vec::new();
            for r in &t.routes {
                let mut props = json!({
                    "addressPrefix": r.address_prefix,
                    "nextHopType": r.next_hop_type,
                });
                if let Some(ip) = &r.next_hop_ip_address {
                    props["nextHopIpAddress"] = json!(ip);
                }
                let route_id = format!("{id}/routes/{}", r.name);
                let body = json!({"properties": props});
                if let Err(resp) = crate::validate::validate_route(&route_id, &r.name, &body) {
                    return err(format!(
                        "route {}: {}",
                        r.name,
                        String::from_utf8_lossy(&resp.body)
                    ));
                }
                props["provisioningState"] = json!("Succeeded");
                props["hasBgpOverride"] = json!(false);
                routes.push(json!({
                    "name": r.name, "id": route_id,
                    "type": "Microsoft.Network/routeTables/routes", "properties": props,
                }));
            }
            st.route_tables.insert(
                ids::key(&id),
                RouteTable {
                    id,
                    name: t.name.clone(),
                    location: loc.clone(),
                    etag: new_etag(),
                    resource_guid: uuid::Uuid::new_v4().to_string(),
                    tags: t.tags.clone(),
                    disable_bgp_route_propagation: t.disable_bgp_route_propagation,
                    routes,
                    pending: None,
                },
            );
        }

        for v in &self.virtual_machines {
            let rg = rg_of(&v.resource_group);
            add_rg(&mut st, &rg);
            let id = ids::resource_id(&sub, &rg, "Microsoft.Compute/virtualMachines", &v.name);
            let mut nic_ids = Vec::new();
            for (i, nic_name) in v.network_interfaces.iter().enumerate() {
                let nic_id = ids::nic_id(&sub, &rg, nic_name);
                let Some(nic) = st.nics.get_mut(&ids::key(&nic_id)) else {
                    return err(format!(
                        "vm {}: unknown network interface {nic_name}",
                        v.name
                    ));
                };
                nic.applied["properties"]["virtualMachine"] = json!({"id": id});
                nic.applied["properties"]["primary"] = json!(i == 0);
                nic_ids.push(nic.id.clone());
            }
            let principal_id = v
                .principal_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let client_id = v
                .client_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let (actions, not_actions, scopes) = match &v.permissions {
                Some(p) => (
                    p.actions.clone(),
                    p.not_actions.clone(),
                    p.scopes
                        .clone()
                        .unwrap_or_else(|| vec![format!("/subscriptions/{sub}")]),
                ),
                None => (
                    DEFAULT_ACTIONS.iter().map(|s| s.to_string()).collect(),
                    Vec::new(),
                    vec![format!("/subscriptions/{sub}")],
                ),
            };
            st.identities.insert(
                principal_id.to_ascii_lowercase(),
                Identity {
                    principal_id: principal_id.clone(),
                    client_id,
                    actions,
                    not_actions,
                    scopes,
                },
            );
            let mut imds_source_ips = Vec::new();
            for s in &v.imds_source_ips {
                match s.parse::<IpAddr>() {
                    Ok(ip) => imds_source_ips.push(ip),
                    Err(_) => return err(format!("vm {}: bad imds_source_ips entry {s}", v.name)),
                }
            }
            st.vms.insert(
                ids::key(&id),
                Vm {
                    id,
                    name: v.name.clone(),
                    subscription: sub.clone(),
                    resource_group: rg.clone(),
                    location: loc.clone(),
                    vm_id: v
                        .vm_id
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    vm_size: v.vm_size.clone(),
                    nic_ids,
                    principal_id,
                    identity_header: v
                        .identity_header
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
                    imds_source_ips,
                },
            );
        }
        if let Some(vm) = &self.settings.default_imds_vm {
            if st.vm_by_name(vm).is_none() {
                return err(format!("default_imds_vm {vm} is not a VM of the scenario"));
            }
        }
        Ok(st)
    }
}

/// Builds the full NIC document the service would return for a scenario NIC.
fn build_nic(
    st: &State,
    sub: &str,
    rg: &str,
    loc: &str,
    index: usize,
    spec: &NicSpec,
) -> Result<Value, ScenarioError> {
    let id = ids::nic_id(sub, rg, &spec.name);
    if spec.ip_configurations.is_empty() {
        return err(format!(
            "nic {}: needs at least one ip configuration",
            spec.name
        ));
    }
    let explicit_primary = spec
        .ip_configurations
        .iter()
        .any(|c| c.primary == Some(true));
    let mut taken: Vec<Ipv4Addr> = Vec::new();
    let mut cfgs = Vec::new();
    for (i, c) in spec.ip_configurations.iter().enumerate() {
        // `<vnet>/<subnet>` in the NIC's resource group, or `<group>/<vnet>/<subnet>` for a
        // VNet in another resource group (a common hub layout, with its own role assignments).
        let parts: Vec<&str> = c.subnet.split('/').collect();
        let (vnet_rg, vnet, subnet) = match parts.as_slice() {
            [vnet, subnet] => (rg, *vnet, *subnet),
            [group, vnet, subnet] => (*group, *vnet, *subnet),
            _ => {
                return err(format!(
                    "nic {}: subnet must be \"<vnet>/<subnet>\" or \"<resource group>/<vnet>/<subnet>\"",
                    spec.name
                ))
            }
        };
        let subnet_id = format!(
            "{}/subnets/{subnet}",
            ids::resource_id(sub, vnet_rg, "Microsoft.Network/virtualNetworks", vnet)
        );
        let Some(sn) = st.subnet(&subnet_id) else {
            return err(format!("nic {}: unknown subnet {}", spec.name, c.subnet));
        };
        let vnet_key = ids::key(&sn.vnet_id);
        let (ip, method) = match &c.private_ip_address {
            Some(a) => {
                let ip: Ipv4Addr = a
                    .parse()
                    .map_err(|_| ScenarioError(format!("nic {}: bad ip {a}", spec.name)))?;
                if !sn.prefix.contains(ip) || sn.prefix.is_reserved(ip) {
                    return err(format!(
                        "nic {}: {ip} not usable in {}",
                        spec.name, sn.prefix
                    ));
                }
                (ip, "Static")
            }
            None => {
                let used = st.used_ips(&vnet_key);
                let Some(ip) = sn
                    .prefix
                    .usable()
                    .find(|ip| !used.contains(ip) && !taken.contains(ip))
                else {
                    return err(format!("nic {}: subnet {} is full", spec.name, sn.name));
                };
                (ip, "Dynamic")
            }
        };
        if taken.contains(&ip) || st.ip_holder(ip, &vnet_key, &id).is_some() {
            return err(format!("nic {}: ip {ip} used twice", spec.name));
        }
        taken.push(ip);
        let primary = if explicit_primary {
            c.primary == Some(true)
        } else {
            i == 0
        };
        let mut props = json!({
            "privateIPAddress": ip.to_string(),
            "privateIPAllocationMethod": method,
            "subnet": {"id": subnet_id},
            "primary": primary,
            "privateIPAddressVersion": "IPv4",
        });
        if let Some(p) = &c.public_ip {
            let pip_id = ids::resource_id(sub, rg, "Microsoft.Network/publicIPAddresses", p);
            if !st.public_ips.contains_key(&ids::key(&pip_id)) {
                return err(format!("nic {}: unknown public ip {p}", spec.name));
            }
            props["publicIPAddress"] = json!({"id": pip_id});
        }
        cfgs.push(json!({
            "name": c.name,
            "id": format!("{id}/ipConfigurations/{}", c.name),
            "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
            "properties": props,
        }));
    }
    let mac = spec.mac_address.clone().unwrap_or_else(|| {
        format!(
            "00-0D-3A-{:02X}-{:02X}-{:02X}",
            0x10 + (index >> 16) as u8,
            (index >> 8) as u8,
            index as u8
        )
    });
    let mut props = json!({
        "ipConfigurations": cfgs,
        "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
        "macAddress": mac,
        "enableAcceleratedNetworking": false,
        "enableIPForwarding": spec.enable_ip_forwarding,
        "resourceGuid": uuid::Uuid::new_v4().to_string(),
        "nicType": "Standard",
        "hostedWorkloads": [],
        "tapConfigurations": [],
    });
    if let Some(Value::Object(extra)) = &spec.properties {
        for (k, v) in extra {
            props[k.as_str()] = v.clone();
        }
    }
    let mut doc = json!({
        "name": spec.name,
        "id": id,
        "type": "Microsoft.Network/networkInterfaces",
        "location": loc,
        "properties": props,
    });
    if let Some(t) = &spec.tags {
        doc["tags"] = t.clone();
    }
    Ok(crate::state::stamp_nic(doc, &new_etag(), "Succeeded"))
}

#[cfg(test)]
mod tests {
    use crate::scenario::{Scenario, TWO_APPLIANCES_TOML};

    #[test]
    fn shipped_scenario_builds() {
        let s = Scenario::from_toml_str(TWO_APPLIANCES_TOML).expect("parses");
        let st = s.build().expect("builds");
        assert_eq!(st.nics.len(), 2);
        assert_eq!(st.vms.len(), 2);
        assert_eq!(st.route_tables.len(), 1);
    }
}
