//! The cloud side of the config: `[provider]` (and its per-cloud settings), `[failover]`
//! timing, `[[floating_ip]]` and `[[route]]`, their validation, and their conversion into what
//! the provider crates take.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use cloudha_provider_azure::{AzureConfig, ResourceId};
use cloudha_provider_core::{FloatingIp, NextHop, RouteSpec};
use serde::{Deserialize, Serialize};

use super::duration::ConfigDuration;
use super::Config;

/// Which provider is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// On premises: the address on a local interface plus gratuitous ARP.
    Local,
    /// Azure: ipConfigurations and route next hops through Azure Resource Manager.
    Azure,
    /// AWS: secondary private IPs, Elastic IPs and route targets through the EC2 API.
    Aws,
    /// Nothing to move: a load balancer sends the traffic where `[health_probe]` answers.
    None,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderKind::Local => f.write_str("local"),
            ProviderKind::Azure => f.write_str("azure"),
            ProviderKind::Aws => f.write_str("aws"),
            ProviderKind::None => f.write_str("none"),
        }
    }
}

/// `[provider]` with one sub-table per provider kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The provider in use.
    pub kind: ProviderKind,
    /// `[provider.local]`, required when `kind = "local"`.
    pub local: Option<LocalProviderConfig>,
    /// `[provider.azure]`, required when `kind = "azure"`.
    pub azure: Option<AzureConfig>,
    /// `[provider.aws]`, required when `kind = "aws"`.
    pub aws: Option<cloudha_provider_aws::AwsConfig>,
}

/// `[provider.local]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalProviderConfig {
    /// Interface that carries the floating IPs.
    pub interface: String,
}

/// `[failover]`: pacing of takeovers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// One takeover attempt must converge within this time (Azure NIC updates take up to ~120 s).
    #[serde(default = "default_deadline")]
    pub deadline: ConfigDuration,
    /// First wait before retrying a failed takeover; doubles up to `retry_max`.
    #[serde(default = "default_retry_initial")]
    pub retry_initial: ConfigDuration,
    /// Longest wait between takeover retries.
    #[serde(default = "default_retry_max")]
    pub retry_max: ConfigDuration,
    /// How often the cloud state is read back (and, on the active node, drift repaired).
    #[serde(default = "default_reconcile_interval")]
    pub reconcile_interval: ConfigDuration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            deadline: default_deadline(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            reconcile_interval: default_reconcile_interval(),
        }
    }
}

/// `[[floating_ip]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpConfig {
    /// The address.
    pub address: Ipv4Addr,
    /// Prefix length of its subnet (the local provider adds `address/prefix_len`).
    #[serde(default = "default_prefix_len")]
    pub prefix_len: u8,
    /// Azure: name of the ipConfiguration when it must be created from scratch (no NIC holds it).
    #[serde(default)]
    pub ip_config_name: Option<String>,
    /// Azure: ARM id of the public IP that goes with it (re-attached if it must be recreated).
    #[serde(default)]
    pub public_ip: Option<String>,
    /// AWS: allocation id (`eipalloc-...`) of the Elastic IP associated with this address.
    #[serde(default)]
    pub elastic_ip: Option<String>,
}

/// `[[route]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route table id (provider-specific).
    pub table: String,
    /// Route name within the table.
    pub name: String,
    /// Destination prefix, e.g. `0.0.0.0/0`.
    pub prefix: String,
    /// `floating_ip` or `self_address`.
    #[serde(default = "default_next_hop")]
    pub next_hop: NextHop,
}

/// Long enough for Azure's two-step move: the peer's NIC update and then ours, each up to
/// ~120 s to apply, plus polling and the read-back.
pub(super) const AZURE_TWO_STEP_DEADLINE: Duration = Duration::from_secs(300);

fn default_deadline() -> ConfigDuration {
    ConfigDuration(AZURE_TWO_STEP_DEADLINE)
}
fn default_retry_initial() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}
fn default_retry_max() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_reconcile_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_prefix_len() -> u8 {
    32
}
fn default_next_hop() -> NextHop {
    NextHop::FloatingIp
}

impl Config {
    pub(super) fn validate_azure(&self, problem: &mut impl FnMut(&str, String)) {
        match &self.provider.azure {
            None => problem(
                "provider.azure",
                "kind = \"azure\" needs a [provider.azure] table with at least peer_nic = \"/subscriptions/.../networkInterfaces/<peer's LAN NIC>\"".into(),
            ),
            Some(azure) => {
                for (field, message) in azure.problems() {
                    problem(&format!("provider.azure.{field}"), message);
                }
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            if let Err(e) = ResourceId::parse(&route.table, "routeTables") {
                problem(&format!("route[{i}].table"), e);
            }
        }
        for (i, ip) in self.floating_ips.iter().enumerate() {
            if let Some(pip) = &ip.public_ip {
                if let Err(e) = ResourceId::parse(pip, "publicIPAddresses") {
                    problem(&format!("floating_ip[{i}].public_ip"), e);
                }
            }
        }
    }

    pub(super) fn validate_aws(&self, problem: &mut impl FnMut(&str, String)) {
        let Some(aws) = &self.provider.aws else {
            problem(
                "provider.aws",
                "kind = \"aws\" needs a [provider.aws] table with at least peer_eni = \"eni-...\" (the peer's ENI)".into(),
            );
            return;
        };
        let checked = cloudha_provider_aws::validate(
            aws,
            &self.floating_ips(),
            &self.aws_elastic_ips(),
            &self.route_specs(),
        );
        if let Err(cloudha_provider_core::ProviderError::Permanent {
            operation,
            message,
            fix,
        }) = checked
        {
            let field = operation.trim_start_matches("config ");
            problem(field, format!("{message}; {fix}"));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !route.table.starts_with("rtb-") {
                problem(
                    &format!("route[{i}].table"),
                    format!("{} is not a route table id; write the rtb-... id shown by `aws ec2 describe-route-tables`", crate::secure_fs::excerpt(&route.table)),
                );
            }
        }
    }

    /// Why `ip` cannot be a floating IP, if it cannot: an address that is no host's (0.0.0.0,
    /// broadcast, multicast, loopback, link-local, the subnet's network or broadcast address), or
    /// one a node has as its own: the standby removes the floating IPs from itself, so it would
    /// delete its own address.
    pub(super) fn unusable_floating_ip(&self, ip: &FloatingIpConfig) -> Option<String> {
        let address = ip.address;
        if address.is_unspecified() {
            return Some("is 0.0.0.0, no host's address".into());
        }
        if address.is_broadcast() {
            return Some("is the broadcast address".into());
        }
        if address.is_multicast() {
            return Some("is a multicast address".into());
        }
        if address.is_loopback() {
            return Some("is a loopback address (never reachable from another host)".into());
        }
        if address.is_link_local() {
            return Some(
                "is link-local (169.254.0.0/16 holds the cloud's metadata service)".into(),
            );
        }
        if (1..=30).contains(&ip.prefix_len) {
            let host_mask = u32::MAX >> ip.prefix_len;
            let host = u32::from(address) & host_mask;
            if host == 0 {
                return Some(format!(
                    "is the network address of its /{} subnet",
                    ip.prefix_len
                ));
            }
            if host == host_mask {
                return Some(format!(
                    "is the broadcast address of its /{} subnet",
                    ip.prefix_len
                ));
            }
        }
        for (i, path) in self.keepalive.paths.iter().enumerate() {
            if path.bind.ip() == std::net::IpAddr::V4(address) {
                return Some(format!(
                    "is this node's own address (keepalive.path[{i}].bind): the standby would delete it from itself"
                ));
            }
            if path.peer.ip() == std::net::IpAddr::V4(address) {
                return Some(format!(
                    "is the peer's own address (keepalive.path[{i}].peer): the peer as standby would delete it from itself"
                ));
            }
        }
        None
    }

    /// `kind = "none"`: nothing moves, so anything naming a cloud resource is a mistake.
    pub(super) fn validate_none(&self, problem: &mut impl FnMut(&str, String)) {
        for (table, present) in [
            ("provider.local", self.provider.local.is_some()),
            ("provider.azure", self.provider.azure.is_some()),
            ("provider.aws", self.provider.aws.is_some()),
        ] {
            if present {
                problem(
                    table,
                    format!("kind = \"none\" uses no provider table; remove [{table}] or set provider.kind to the provider it configures"),
                );
            }
        }
        if !self.floating_ips.is_empty() {
            problem(
                "floating_ip",
                "kind = \"none\" moves no address (the load balancer sends the traffic); remove the [[floating_ip]] entries or choose the provider that moves them (local, azure, aws)".into(),
            );
        }
        if !self.routes.is_empty() {
            problem(
                "route",
                "kind = \"none\" changes no route table; remove the [[route]] entries or choose azure or aws".into(),
            );
        }
    }

    /// The floating IPs in the provider's terms.
    pub fn floating_ips(&self) -> Vec<FloatingIp> {
        self.floating_ips
            .iter()
            .map(|ip| FloatingIp {
                address: ip.address,
                prefix_len: ip.prefix_len,
            })
            .collect()
    }

    /// The floating IPs with their Azure settings.
    pub fn azure_floating_ips(&self) -> Vec<cloudha_provider_azure::FloatingIpConfig> {
        self.floating_ips
            .iter()
            .map(|ip| cloudha_provider_azure::FloatingIpConfig {
                address: ip.address,
                ip_config_name: ip.ip_config_name.clone(),
                public_ip: ip.public_ip.clone(),
            })
            .collect()
    }

    /// The Elastic IPs that follow the floating IPs (AWS).
    pub fn aws_elastic_ips(&self) -> Vec<cloudha_provider_aws::ElasticIp> {
        self.floating_ips
            .iter()
            .filter_map(|ip| {
                ip.elastic_ip
                    .as_ref()
                    .map(|allocation_id| cloudha_provider_aws::ElasticIp {
                        private_ip: ip.address,
                        allocation_id: allocation_id.clone(),
                    })
            })
            .collect()
    }

    /// The routes in the provider's terms.
    pub fn route_specs(&self) -> Vec<RouteSpec> {
        self.routes
            .iter()
            .map(|r| RouteSpec {
                table: r.table.clone(),
                name: r.name.clone(),
                prefix: r.prefix.clone(),
                next_hop: r.next_hop,
            })
            .collect()
    }
}
