//! Scenario files: the initial contents of the emulated subscription, in TOML or JSON.
//!
//! A scenario names resources the short way (`subnet = "vnet-ha/appliances"`) and the
//! builder expands them into the full ARM documents the service would return, so tests and
//! the demo start from a realistic state. See `scenarios/two-appliances.toml`.

use crate::config::Settings;
use crate::ids;
use crate::state::{
    new_etag, Identity, Nic, PublicIp, ResourceGroup, RouteTable, State, Subnet, Subscription, Vm,
    Vnet,
};
use crate::validate::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// The standard two-appliance scenario shipped with the crate.
pub const TWO_APPLIANCES_TOML: &str = include_str!("../scenarios/two-appliances.toml");

/// The action ARM checks on the virtual network for `POST .../moveIpConfigurations` (the
/// name ARM's convention gives it; see `arm_vnet::move_ip_configurations`).
pub const MOVE_IP_CONFIGURATIONS_ACTION: &str =
    "Microsoft.Network/virtualNetworks/moveIpConfigurations/action";

/// The least-privilege role cloudha needs (shared/CLOUD-API.md), granted to every VM
/// identity unless the scenario says otherwise. It includes the atomic move's action, which
/// only the `atomic` move mode uses: a test of the two-step role alone removes it.
pub const DEFAULT_ACTIONS: &[&str] = &[
    "Microsoft.Network/networkInterfaces/read",
    "Microsoft.Network/networkInterfaces/write",
    "Microsoft.Network/virtualNetworks/read",
    "Microsoft.Network/virtualNetworks/subnets/read",
    "Microsoft.Network/virtualNetworks/subnets/join/action",
    "Microsoft.Network/publicIPAddresses/read",
    "Microsoft.Network/publicIPAddresses/join/action",
    "Microsoft.Network/routeTables/read",
    "Microsoft.Network/routeTables/routes/read",
    "Microsoft.Network/routeTables/routes/write",
    "Microsoft.Network/locations/operations/read",
    "Microsoft.Network/locations/operationResults/read",
    "Microsoft.Compute/virtualMachines/read",
    MOVE_IP_CONFIGURATIONS_ACTION,
];

/// Why a scenario could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError(pub String);

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid scenario: {}", self.0)
    }
}

impl std::error::Error for ScenarioError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ScenarioError> {
    Err(ScenarioError(msg.into()))
}

/// The whole scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Subscription every resource lives in.
    pub subscription_id: String,
    /// AAD tenant put in tokens.
    #[serde(default = "default_tenant")]
    pub tenant_id: String,
    /// Default resource group.
    pub resource_group: String,
    /// Region of every resource (and of LRO status URLs).
    pub location: String,
    /// Behaviour settings.
    #[serde(default)]
    pub settings: Settings,
    /// Virtual networks and their subnets.
    #[serde(default)]
    pub virtual_networks: Vec<VnetSpec>,
    /// Public IP addresses.
    #[serde(default)]
    pub public_ip_addresses: Vec<PublicIpSpec>,
    /// Network interfaces.
    #[serde(default)]
    pub network_interfaces: Vec<NicSpec>,
    /// Route tables.
    #[serde(default)]
    pub route_tables: Vec<RouteTableSpec>,
    /// Virtual machines (each with a system-assigned identity).
    #[serde(default)]
    pub virtual_machines: Vec<VmSpec>,
    /// Standard internal load balancers (HA ports) in front of the NICs.
    #[serde(default)]
    pub load_balancers: Vec<crate::load_balancer::LoadBalancerSpec>,
}

fn default_tenant() -> String {
    "00000000-0000-0000-0000-0000000000e1".to_string()
}

/// A virtual network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VnetSpec {
    /// Name.
    pub name: String,
    /// Resource group, if not the default.
    #[serde(default)]
    pub resource_group: Option<String>,
    /// `addressSpace.addressPrefixes`.
    pub address_prefixes: Vec<String>,
    /// Subnets.
    #[serde(default)]
    pub subnets: Vec<SubnetSpec>,
}

/// A subnet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetSpec {
    /// Name.
    pub name: String,
    /// `addressPrefix` (IPv4 CIDR).
    pub address_prefix: String,
    /// Name of an associated route table in the same resource group.
    #[serde(default)]
    pub route_table: Option<String>,
}

/// A public IP address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicIpSpec {
    /// Name.
    pub name: String,
    /// Resource group, if not the default.
    #[serde(default)]
    pub resource_group: Option<String>,
    /// The address.
    pub ip_address: String,
}

/// A network interface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// Name.
    pub name: String,
    /// Resource group, if not the default.
    #[serde(default)]
    pub resource_group: Option<String>,
    /// ARM-format MAC (`00-0D-3A-..`); generated if absent.
    #[serde(default)]
    pub mac_address: Option<String>,
    /// `enableIPForwarding` (appliances need it).
    #[serde(default)]
    pub enable_ip_forwarding: bool,
    /// Resource tags.
    #[serde(default)]
    pub tags: Option<Value>,
    /// Extra `properties` merged into the document as-is (e.g. `networkSecurityGroup`,
    /// `dnsSettings`), so scenarios can carry properties the client must preserve.
    #[serde(default)]
    pub properties: Option<Value>,
    /// ipConfigurations; the first is primary unless one says `primary = true`.
    pub ip_configurations: Vec<IpConfigurationSpec>,
}

/// An ipConfiguration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpConfigurationSpec {
    /// Name.
    pub name: String,
    /// `"<vnet>/<subnet>"` in the NIC's resource group, or `"<group>/<vnet>/<subnet>"`.
    pub subnet: String,
    /// Static address; omitted means Dynamic (first free address).
    #[serde(default)]
    pub private_ip_address: Option<String>,
    /// Marks the primary ipConfiguration.
    #[serde(default)]
    pub primary: Option<bool>,
    /// Name of a public IP in the NIC's resource group.
    #[serde(default)]
    pub public_ip: Option<String>,
}

/// A route table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTableSpec {
    /// Name.
    pub name: String,
    /// Resource group, if not the default.
    #[serde(default)]
    pub resource_group: Option<String>,
    /// `disableBgpRoutePropagation`.
    #[serde(default)]
    pub disable_bgp_route_propagation: bool,
    /// Resource tags.
    #[serde(default)]
    pub tags: Option<Value>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// A route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Name.
    pub name: String,
    /// Destination CIDR or service tag.
    pub address_prefix: String,
    /// One of routeTable.json's `RouteNextHopType`.
    pub next_hop_type: String,
    /// Required for `VirtualAppliance`.
    #[serde(default)]
    pub next_hop_ip_address: Option<String>,
}

/// A virtual machine with a system-assigned managed identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Name.
    pub name: String,
    /// Resource group, if not the default.
    #[serde(default)]
    pub resource_group: Option<String>,
    /// NIC names in order; the first is the VM's primary NIC.
    pub network_interfaces: Vec<String>,
    /// `hardwareProfile.vmSize`.
    #[serde(default = "default_vm_size")]
    pub vm_size: String,
    /// IMDS `vmId`; generated if absent.
    #[serde(default)]
    pub vm_id: Option<String>,
    /// Identity object ID (`oid`); generated if absent.
    #[serde(default)]
    pub principal_id: Option<String>,
    /// Identity client ID (`appid`); generated if absent.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Secret for the App Service-style token endpoint (`IDENTITY_HEADER`); generated if absent.
    #[serde(default)]
    pub identity_header: Option<String>,
    /// Peer addresses whose IMDS requests come from this VM (network-namespace tests).
    #[serde(default)]
    pub imds_source_ips: Vec<String>,
    /// The identity's role; [`DEFAULT_ACTIONS`] at subscription scope if absent.
    #[serde(default)]
    pub permissions: Option<PermissionsSpec>,
    /// Initial IMDS scheduled events (raw IMDS event objects; `Resources` defaults to this VM,
    /// a blank `NotBefore` of a `Scheduled` event to now).
    #[serde(default)]
    pub scheduled_events: Vec<Value>,
}

fn default_vm_size() -> String {
    "Standard_D2s_v5".to_string()
}

/// A role assignment for a VM identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionsSpec {
    /// Allowed actions (`*` wildcards allowed).
    pub actions: Vec<String>,
    /// Excluded actions.
    #[serde(default)]
    pub not_actions: Vec<String>,
    /// Assignment scopes; the subscription if absent.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

impl Scenario {
    /// Parses TOML.
    pub fn from_toml_str(s: &str) -> Result<Self, ScenarioError> {
        toml::from_str(s).map_err(|e| ScenarioError(e.to_string()))
    }

    /// Parses JSON.
    pub fn from_json_str(s: &str) -> Result<Self, ScenarioError> {
        serde_json::from_str(s).map_err(|e| ScenarioError(e.to_string()))
    }

    /// Reads a `.toml` or `.json` file (by extension; TOML otherwise).
    pub fn from_path(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("{}: {e}", path.display())))?;
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Self::from_json_str(&text),
            _ => Self::from_toml_str(&text),
        }
    }

    /// The shipped two-appliance scenario (`scenarios/two-appliances.toml`).
    pub fn two_appliances() -> Self {
        // The embedded file is covered by tests; fall back to an empty scenario rather than panic.
        Self::from_toml_str(TWO_APPLIANCES_TOML).unwrap_or_else(|_| Self {
            subscription_id: String::new(),
            tenant_id: default_tenant(),
            resource_group: String::new(),
            location: String::new(),
            settings: Settings::default(),
            virtual_networks: Vec::new(),
            public_ip_addresses: Vec::new(),
            network_interfaces: Vec::new(),
            route_tables: Vec::new(),
            virtual_machines: Vec::new(),
            load_balancers: Vec::new(),
        })
    }

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
    use super::*;

    #[test]
    fn shipped_scenario_builds() {
        let s = Scenario::from_toml_str(TWO_APPLIANCES_TOML).expect("parses");
        let st = s.build().expect("builds");
        assert_eq!(st.nics.len(), 2);
        assert_eq!(st.vms.len(), 2);
        assert_eq!(st.route_tables.len(), 1);
    }

    #[test]
    fn json_round_trip() {
        let s = Scenario::two_appliances();
        let j = serde_json::to_string(&s).expect("serialize");
        assert_eq!(Scenario::from_json_str(&j).expect("parse"), s);
    }
}
