//! Scenario files: the initial contents of the emulated subscription, in TOML or JSON.
//!
//! A scenario names resources the short way (`subnet = "vnet-ha/appliances"`) and the
//! builder expands them into the full ARM documents the service would return, so tests and
//! the demo start from a realistic state. See `scenarios/two-appliances.toml`.
//!
//! This module owns the spec types only (what a scenario file may say, load balancers
//! included) and [`ScenarioError`]; [`crate::build`] turns a scenario into the state.

use crate::config::Settings;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
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

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, ScenarioError> {
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
    pub load_balancers: Vec<LoadBalancerSpec>,
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
}

/// A load balancer in a scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    /// Name.
    pub name: String,
    /// Resource group, if not the default.
    #[serde(default)]
    pub resource_group: Option<String>,
    /// The frontend IP configuration.
    pub frontend: FrontendSpec,
    /// The backend address pool.
    pub backend_pool: BackendPoolSpec,
    /// The health probe.
    pub probe: ProbeSpec,
    /// The load-balancing rule.
    pub rule: RuleSpec,
}

/// The frontend IP configuration: a static private address on a subnet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendSpec {
    /// Name.
    pub name: String,
    /// `<vnet>/<subnet>` in the load balancer's resource group.
    pub subnet: String,
    /// The static private address.
    pub private_ip_address: String,
}

/// The backend pool and its members, `<nic>/<ipconfig>` (both NICs of the pair).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendPoolSpec {
    /// Name.
    pub name: String,
    /// Members.
    pub ip_configurations: Vec<String>,
}

/// The health probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// Name.
    pub name: String,
    /// `Tcp`, `Http` or `Https`.
    pub protocol: String,
    /// Port probed on each backend.
    pub port: u16,
    /// Path of an Http(s) probe.
    #[serde(default)]
    pub request_path: Option<String>,
    /// Seconds between probes (at least 5).
    #[serde(default = "default_interval")]
    pub interval_in_seconds: u32,
    /// Consecutive results that change a backend's state (at least 1).
    #[serde(default = "default_threshold")]
    pub probe_threshold: u32,
}

impl LoadBalancerSpec {
    /// The appliance pattern on [`crate::Scenario::two_appliances`]: an internal frontend at
    /// 10.10.1.50 in the appliances' subnet, both NICs' primary ipConfigurations in the pool,
    /// `probe`, and an HA-ports rule.
    pub fn appliances(probe: ProbeSpec) -> Self {
        LoadBalancerSpec {
            name: "lb-appliances".into(),
            resource_group: None,
            frontend: FrontendSpec {
                name: "frontend".into(),
                subnet: "vnet-ha/appliances".into(),
                private_ip_address: "10.10.1.50".into(),
            },
            backend_pool: BackendPoolSpec {
                name: "appliances".into(),
                ip_configurations: vec![
                    "nic-appliance-a/ipconfig1".into(),
                    "nic-appliance-b/ipconfig1".into(),
                ],
            },
            probe,
            rule: RuleSpec {
                name: "ha-ports".into(),
                protocol: default_rule_protocol(),
                frontend_port: 0,
                backend_port: 0,
                idle_timeout_in_minutes: default_idle_timeout(),
            },
        }
    }
}

fn default_interval() -> u32 {
    15
}

fn default_threshold() -> u32 {
    1
}

/// The load-balancing rule (HA ports: protocol `All`, ports 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Name.
    pub name: String,
    /// `All` (HA ports), `Tcp` or `Udp`.
    #[serde(default = "default_rule_protocol")]
    pub protocol: String,
    /// Frontend port (0 for HA ports).
    #[serde(default)]
    pub frontend_port: u16,
    /// Backend port (0 for HA ports).
    #[serde(default)]
    pub backend_port: u16,
    /// Idle timeout of a flow, 4-100 minutes.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_in_minutes: u32,
}

fn default_rule_protocol() -> String {
    "All".into()
}

fn default_idle_timeout() -> u32 {
    4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let s = Scenario::two_appliances();
        let j = serde_json::to_string(&s).expect("serialize");
        assert_eq!(Scenario::from_json_str(&j).expect("parse"), s);
    }
}
