//! `[provider.aws]`: what the operator configures, and the checks that need no network.

use cloudha_provider_core::text::excerpt;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use cloudha_provider_core::{FloatingIp, ProviderError, RouteSpec};
use serde::Deserialize;

/// `[provider.aws]`: where the EC2 API is and which ENIs the pair uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// AWS region, e.g. `eu-west-1`; default: the instance's region from IMDS.
    #[serde(default)]
    pub region: Option<String>,
    /// EC2 API endpoint URL; default: `AWS_ENDPOINT_URL_EC2` / `AWS_ENDPOINT_URL`, else the region's.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// IMDS base URL; default: `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else `http://169.254.169.254`.
    #[serde(default)]
    pub imds_endpoint: Option<String>,
    /// IAM Query API endpoint for `cloudha selftest`'s policy simulation; default:
    /// `AWS_ENDPOINT_URL_IAM`, else `https://iam.amazonaws.com`.
    #[serde(default)]
    pub iam_endpoint: Option<String>,
    /// This node's ENI (`eni-...`) that receives the floating IPs; default: discovered through IMDS.
    #[serde(default)]
    pub own_eni: Option<String>,
    /// The peer node's ENI (`eni-...`) that holds the floating IPs while the peer is active.
    pub peer_eni: String,
}

/// An Elastic IP that follows one floating IP: associated with whichever ENI holds that address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticIp {
    /// The floating (secondary private) IP the Elastic IP is associated with.
    pub private_ip: Ipv4Addr,
    /// The Elastic IP's allocation id (`eipalloc-...`).
    pub allocation_id: String,
}

/// A route destination this provider can set: AWS route tables take IPv4 CIDRs here.
pub(crate) fn parse_ipv4_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = text.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some((addr, len))
}

fn invalid(field: &str, message: String, fix: &str) -> ProviderError {
    ProviderError::Permanent {
        operation: format!("config {field}"),
        message,
        fix: fix.to_string(),
    }
}

/// Refuse a configuration that cannot work, before any call to IMDS or EC2.
pub fn validate(
    config: &AwsConfig,
    floating_ips: &[FloatingIp],
    elastic_ips: &[ElasticIp],
    routes: &[RouteSpec],
) -> Result<(), ProviderError> {
    let eni_fix = "set it to the ENI id shown by `aws ec2 describe-network-interfaces` (eni-...)";
    if !config.peer_eni.starts_with("eni-") {
        return Err(invalid(
            "provider.aws.peer_eni",
            format!("{} is not an ENI id", excerpt(&config.peer_eni)),
            eni_fix,
        ));
    }
    if let Some(own) = &config.own_eni {
        if !own.starts_with("eni-") {
            return Err(invalid(
                "provider.aws.own_eni",
                format!("{} is not an ENI id", excerpt(own)),
                eni_fix,
            ));
        }
        if *own == config.peer_eni {
            return Err(invalid(
                "provider.aws.own_eni",
                format!("own_eni and peer_eni are both {own}"),
                "set own_eni to this node's ENI and peer_eni to the other node's",
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for fip in floating_ips {
        if !seen.insert(fip.address) {
            return Err(invalid(
                "floating_ip",
                format!("{} is listed twice", fip.address),
                "list each floating IP once",
            ));
        }
    }
    let mut eip_targets = BTreeSet::new();
    for eip in elastic_ips {
        if !eip.allocation_id.starts_with("eipalloc-") {
            return Err(invalid(
                "elastic_ip.allocation_id",
                format!(
                    "{} is not an Elastic IP allocation id",
                    excerpt(&eip.allocation_id)
                ),
                "use the AllocationId shown by `aws ec2 describe-addresses` (eipalloc-...)",
            ));
        }
        if !seen.contains(&eip.private_ip) {
            return Err(invalid(
                "elastic_ip.private_ip",
                format!(
                    "{} (for {}) is not one of the floating IPs",
                    eip.private_ip, eip.allocation_id
                ),
                "associate each Elastic IP with one of the configured floating IPs",
            ));
        }
        if !eip_targets.insert(eip.private_ip) {
            return Err(invalid(
                "elastic_ip.private_ip",
                format!("{} has more than one Elastic IP", eip.private_ip),
                "give each floating IP at most one Elastic IP",
            ));
        }
    }
    let mut destinations = BTreeSet::new();
    for route in routes {
        if !route.table.starts_with("rtb-") {
            return Err(invalid(
                "route.table",
                format!(
                    "{:?} (route {}) is not a route table id",
                    route.table, route.name
                ),
                "use the RouteTableId shown by `aws ec2 describe-route-tables` (rtb-...)",
            ));
        }
        if parse_ipv4_cidr(&route.prefix).is_none() {
            return Err(invalid(
                "route.prefix",
                format!(
                    "{:?} (route {}) is not an IPv4 CIDR",
                    route.prefix, route.name
                ),
                "write the destination as an IPv4 CIDR such as 0.0.0.0/0",
            ));
        }
        if !destinations.insert((route.table.as_str(), route.prefix.as_str())) {
            return Err(invalid(
                "route",
                format!("{} {} is listed twice", route.table, route.prefix),
                "list each (table, prefix) once",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use cloudha_provider_core::NextHop;

    use super::*;

    fn fip(a: [u8; 4]) -> FloatingIp {
        FloatingIp {
            address: Ipv4Addr::from(a),
            prefix_len: 24,
        }
    }

    fn route(table: &str, prefix: &str) -> RouteSpec {
        RouteSpec {
            table: table.into(),
            name: "default".into(),
            prefix: prefix.into(),
            next_hop: NextHop::SelfAddress,
        }
    }

    fn config() -> AwsConfig {
        AwsConfig {
            own_eni: Some("eni-a".into()),
            peer_eni: "eni-b".into(),
            ..AwsConfig::default()
        }
    }

    fn field_of(e: ProviderError) -> String {
        match e {
            ProviderError::Permanent { operation, .. } => operation,
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[test]
    fn parses_from_toml_and_refuses_unknown_fields() {
        let parsed: AwsConfig = toml::from_str(
            "region = \"eu-west-1\"\npeer_eni = \"eni-b\"\nimds_endpoint = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        assert_eq!(parsed.region.as_deref(), Some("eu-west-1"));
        assert_eq!(parsed.own_eni, None);
        let err =
            toml::from_str::<AwsConfig>("peer_eni = \"eni-b\"\nown_nic = \"eni-a\"\n").unwrap_err();
        assert!(err.to_string().contains("own_nic"), "{err}");
        assert!(toml::from_str::<AwsConfig>("region = \"x\"\n").is_err());
    }

    #[test]
    fn elastic_ip_parses_from_toml() {
        #[derive(Deserialize)]
        struct Doc {
            elastic_ip: Vec<ElasticIp>,
        }
        let doc: Doc = toml::from_str(
            "[[elastic_ip]]\nprivate_ip = \"10.0.1.100\"\nallocation_id = \"eipalloc-1\"\n",
        )
        .unwrap();
        assert_eq!(doc.elastic_ip[0].private_ip, Ipv4Addr::new(10, 0, 1, 100));
    }

    #[test]
    fn a_sound_configuration_passes() {
        let eips = [ElasticIp {
            private_ip: Ipv4Addr::new(10, 0, 1, 100),
            allocation_id: "eipalloc-1".into(),
        }];
        let routes = [route("rtb-1", "0.0.0.0/0"), route("rtb-2", "0.0.0.0/0")];
        validate(&config(), &[fip([10, 0, 1, 100])], &eips, &routes).unwrap();
    }

    #[test]
    fn same_eni_for_both_nodes_is_refused() {
        let mut c = config();
        c.own_eni = Some("eni-b".into());
        let e = validate(&c, &[], &[], &[]).unwrap_err();
        assert_eq!(field_of(e), "config provider.aws.own_eni");
    }

    #[test]
    fn malformed_ids_name_the_field() {
        let mut c = config();
        c.peer_eni = "i-0123".into();
        assert_eq!(
            field_of(validate(&c, &[], &[], &[]).unwrap_err()),
            "config provider.aws.peer_eni"
        );
        let e = validate(&config(), &[], &[], &[route("rt-lan", "0.0.0.0/0")]).unwrap_err();
        assert_eq!(field_of(e), "config route.table");
    }

    #[test]
    fn elastic_ip_must_follow_a_configured_floating_ip() {
        let eips = [ElasticIp {
            private_ip: Ipv4Addr::new(10, 0, 1, 200),
            allocation_id: "eipalloc-1".into(),
        }];
        let e = validate(&config(), &[fip([10, 0, 1, 100])], &eips, &[]).unwrap_err();
        assert_eq!(field_of(e), "config elastic_ip.private_ip");
    }

    #[test]
    fn route_prefix_must_be_an_ipv4_cidr() {
        for bad in ["0.0.0.0", "10.0.0.0/33", "::/0", "default"] {
            let e = validate(&config(), &[], &[], &[route("rtb-1", bad)]).unwrap_err();
            assert_eq!(field_of(e), "config route.prefix", "{bad}");
        }
        assert_eq!(
            parse_ipv4_cidr("192.168.0.0/16"),
            Some((Ipv4Addr::new(192, 168, 0, 0), 16))
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let e = validate(
            &config(),
            &[fip([10, 0, 1, 100]), fip([10, 0, 1, 100])],
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(field_of(e), "config floating_ip");
        let e = validate(
            &config(),
            &[],
            &[],
            &[route("rtb-1", "0.0.0.0/0"), route("rtb-1", "0.0.0.0/0")],
        )
        .unwrap_err();
        assert_eq!(field_of(e), "config route");
    }
}
