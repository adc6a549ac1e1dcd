//! The `[provider.azure]` configuration table and the resource ids it names.

use cloudha_provider_core::text::excerpt;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Where ARM lives unless the config says otherwise.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";
/// The token audience for ARM in Azure's public cloud.
pub const DEFAULT_TOKEN_RESOURCE: &str = "https://management.azure.com/";
/// The link-local Instance Metadata Service every Azure VM reaches.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// How the floating ipConfiguration moves from the peer's NIC to this node's NIC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveMode {
    /// PUT the peer's NIC without it, then PUT this NIC with it (works everywhere).
    #[default]
    TwoStep,
    /// `virtualNetworks/moveIpConfigurations` (preview, feature-gated): one operation, the address
    /// is never free. Falls back to the two-step move when the subscription does not have it.
    Atomic,
}

/// `[provider.azure]`: which NICs and endpoints the Azure provider uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// ARM resource id of the peer's LAN NIC (the NIC the floating IP is taken from).
    pub peer_nic: String,
    /// ARM resource id of this node's LAN NIC; discovered from IMDS (MAC address) when omitted.
    #[serde(default)]
    pub own_nic: Option<String>,
    /// Client id of a user-assigned managed identity; the system-assigned identity when omitted.
    #[serde(default)]
    pub identity_client_id: Option<String>,
    /// `two_step` (default) or `atomic` (moveIpConfigurations, falling back to two-step).
    #[serde(default)]
    pub move_mode: MoveMode,
    /// ARM base URL (sovereign clouds, or the emulator in tests and the demo).
    #[serde(default = "default_arm_endpoint")]
    pub arm_endpoint: String,
    /// Audience of the managed-identity token (the ARM resource URI of the cloud).
    #[serde(default = "default_token_resource")]
    pub token_resource: String,
    /// Base URL of the Instance Metadata Service (only changed for the emulator).
    #[serde(default = "default_imds_endpoint")]
    pub imds_endpoint: String,
}

fn default_arm_endpoint() -> String {
    DEFAULT_ARM_ENDPOINT.into()
}
fn default_token_resource() -> String {
    DEFAULT_TOKEN_RESOURCE.into()
}
fn default_imds_endpoint() -> String {
    DEFAULT_IMDS_ENDPOINT.into()
}

impl AzureConfig {
    /// A config with defaults for everything but the peer's NIC.
    pub fn new(peer_nic: impl Into<String>) -> Self {
        Self {
            peer_nic: peer_nic.into(),
            own_nic: None,
            identity_client_id: None,
            move_mode: MoveMode::default(),
            arm_endpoint: default_arm_endpoint(),
            token_resource: default_token_resource(),
            imds_endpoint: default_imds_endpoint(),
        }
    }

    /// Every problem with the table, as `(field, what to write)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(e) = ResourceId::parse(&self.peer_nic, "networkInterfaces") {
            out.push(("peer_nic", e));
        }
        if let Some(own) = &self.own_nic {
            match ResourceId::parse(own, "networkInterfaces") {
                Err(e) => out.push(("own_nic", e)),
                Ok(id) if id.eq_ignore_case(&self.peer_nic) => out.push((
                    "own_nic",
                    "names the same NIC as peer_nic; give this node's own LAN NIC".into(),
                )),
                Ok(_) => {}
            }
        }
        for (field, url) in [
            ("arm_endpoint", &self.arm_endpoint),
            ("imds_endpoint", &self.imds_endpoint),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                out.push((
                    field,
                    format!(
                        "{} is not an http(s) URL; write e.g. \"{DEFAULT_ARM_ENDPOINT}\"",
                        excerpt(url)
                    ),
                ));
            }
        }
        out
    }
}

/// Per-floating-IP Azure settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIpConfig {
    /// The private address that moves.
    pub address: Ipv4Addr,
    /// Name of its ipConfiguration when it has to be created from scratch (no NIC holds it);
    /// when it moves from the peer's NIC it keeps the name it had there.
    pub ip_config_name: Option<String>,
    /// ARM id of the public IP to attach when the ipConfiguration is created from scratch.
    pub public_ip: Option<String>,
}

/// A parsed ARM resource id: `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    /// The id as given (ARM ids are case-insensitive; we keep the operator's spelling).
    pub id: String,
    /// Subscription id.
    pub subscription: String,
    /// Resource group name.
    pub resource_group: String,
    /// Top-level resource type, e.g. `networkInterfaces`.
    pub resource_type: String,
    /// Top-level resource name.
    pub name: String,
}

impl ResourceId {
    /// Parse an id whose top-level type must be `expected_type` (case-insensitive).
    pub fn parse(id: &str, expected_type: &str) -> Result<Self, String> {
        let example = format!(
            "/subscriptions/<subscription>/resourceGroups/<group>/providers/Microsoft.Network/{expected_type}/<name>"
        );
        let parts: Vec<&str> = id.trim_end_matches('/').split('/').collect();
        let ok_shape = parts.len() >= 9
            && parts[0].is_empty()
            && parts[1].eq_ignore_ascii_case("subscriptions")
            && parts[3].eq_ignore_ascii_case("resourceGroups")
            && parts[5].eq_ignore_ascii_case("providers")
            && parts.iter().skip(1).all(|p| !p.is_empty());
        if !ok_shape {
            return Err(format!(
                "{} is not an ARM resource id; write {example}",
                excerpt(id)
            ));
        }
        if !parts[7].eq_ignore_ascii_case(expected_type) {
            return Err(format!(
                "{} is a {}, not a {expected_type}; write {example}",
                excerpt(id),
                excerpt(parts[7]).trim_matches('"')
            ));
        }
        Ok(Self {
            id: id.trim_end_matches('/').to_string(),
            subscription: parts[2].to_string(),
            resource_group: parts[4].to_string(),
            resource_type: parts[7].to_string(),
            name: parts[8].to_string(),
        })
    }

    /// Whether `other` names the same resource (ARM ids compare case-insensitively).
    pub fn eq_ignore_case(&self, other: &str) -> bool {
        self.id.eq_ignore_ascii_case(other.trim_end_matches('/'))
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The virtual network a subnet id belongs to (`.../virtualNetworks/{vnet}/subnets/{s}`).
pub fn vnet_of_subnet(subnet_id: &str) -> Option<&str> {
    let lower = subnet_id.to_ascii_lowercase();
    let at = lower.rfind("/subnets/")?;
    Some(&subnet_id[..at])
}

/// Normalise a MAC address: IMDS writes `000D3A1A2B3C`, ARM writes `00-0D-3A-1A-2B-3C`.
pub fn normalize_mac(mac: &str) -> String {
    mac.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIC: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic-a";

    #[test]
    fn parses_a_nic_id() {
        let id = ResourceId::parse(NIC, "networkInterfaces").expect("valid");
        assert_eq!(id.subscription, "s1");
        assert_eq!(id.resource_group, "rg");
        assert_eq!(id.name, "nic-a");
        assert!(id.eq_ignore_case(&NIC.to_uppercase()));
    }

    #[test]
    fn rejects_wrong_type_and_shape_with_an_example() {
        let e = ResourceId::parse(NIC, "routeTables").expect_err("wrong type");
        assert!(e.contains("networkInterfaces, not a routeTables"), "{e}");
        let e = ResourceId::parse("nic-a", "networkInterfaces").expect_err("bare name");
        assert!(e.contains("/subscriptions/<subscription>"), "{e}");
        assert!(ResourceId::parse(
            "/subscriptions//resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/x",
            "networkInterfaces"
        )
        .is_err());
    }

    #[test]
    fn both_mac_spellings_normalise_alike() {
        assert_eq!(
            normalize_mac("00-0D-3A-1A-2B-3C"),
            normalize_mac("000d3a1a2b3c")
        );
        assert_eq!(normalize_mac("00:0d:3a:1a:2b:3c"), "000D3A1A2B3C");
    }

    #[test]
    fn finds_the_vnet_of_a_subnet() {
        let subnet = "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/app";
        assert_eq!(
            vnet_of_subnet(subnet),
            Some(
                "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v"
            )
        );
        assert_eq!(vnet_of_subnet("/nothing"), None);
    }

    #[test]
    fn own_nic_equal_to_peer_is_a_problem() {
        let mut c = AzureConfig::new(NIC);
        c.own_nic = Some(NIC.to_lowercase());
        let problems = c.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "own_nic");
        c.own_nic = None;
        c.arm_endpoint = "management.azure.com".into();
        assert_eq!(c.problems()[0].0, "arm_endpoint");
    }
}
