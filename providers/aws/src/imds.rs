//! What this node learns about itself from the instance metadata service (IMDSv2): its instance
//! id, its region and its own ENI, for settings the configuration leaves out.
//!
//! The IMDS client is aws-config's: it fetches and refreshes the IMDSv2 session token and honours
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` when `provider.aws.imds_endpoint` is not set.

use aws_config::imds::client::error::ImdsError;
use aws_config::imds::Client;
use cloudha_provider_core::ProviderError;

/// The fix when IMDS cannot tell us something the configuration left out.
const IMDS_FIX: &str = "run on an EC2 instance with IMDSv2 reachable (hop limit 2 inside containers), or set provider.aws.region and provider.aws.own_eni";

/// The IMDS client, at `endpoint` when one is configured.
pub(crate) fn client(endpoint: Option<&str>) -> Result<Client, ProviderError> {
    let builder = Client::builder();
    let builder = match endpoint {
        Some(url) => builder
            .endpoint(url)
            .map_err(|e| ProviderError::Permanent {
                operation: "config provider.aws.imds_endpoint".to_string(),
                message: format!("{url:?} is not a URL: {e}"),
                fix: "set imds_endpoint to a URL such as http://169.254.169.254".to_string(),
            })?,
        None => builder,
    };
    Ok(builder.build())
}

/// Read one metadata path (below `/latest/meta-data/`).
async fn get(client: &Client, path: &str) -> Result<String, ProviderError> {
    let full = format!("/latest/meta-data/{path}");
    match client.get(full.as_str()).await {
        Ok(value) => Ok(value.as_ref().trim().to_string()),
        Err(ImdsError::ErrorResponse(response)) => Err(ProviderError::Permanent {
            operation: format!("imds {path}"),
            message: format!(
                "IMDS answered HTTP {} for {full}",
                response.response().status().as_u16()
            ),
            fix: IMDS_FIX.to_string(),
        }),
        // Unreachable, no token, timed out: IMDS may come back (early boot, a throttled burst).
        Err(e) => Err(ProviderError::Transient {
            operation: format!("imds {path}"),
            message: format!(
                "IMDS did not answer: {}; outside EC2, set provider.aws.region and provider.aws.own_eni",
                crate::simulation::one_line(&aws_sdk_ec2::error::DisplayErrorContext(&e).to_string())
            ),
            retry_after: None,
        }),
    }
}

/// How a read of an optional metadata document went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OptionalReadError {
    /// No answer (unreachable, timed out, no session token): nothing is known.
    NoAnswer(String),
    /// IMDS answered with an error status other than 404.
    BadAnswer(String),
}

/// Read a full metadata path that is absent (404) when there is nothing to tell, such as the
/// spot `instance-action`.
pub(crate) async fn get_optional(
    client: &Client,
    full_path: &str,
) -> Result<Option<String>, OptionalReadError> {
    match client.get(full_path).await {
        Ok(value) => Ok(Some(value.as_ref().to_string())),
        Err(ImdsError::ErrorResponse(response)) => {
            let status = response.response().status().as_u16();
            if status == 404 {
                Ok(None)
            } else {
                Err(OptionalReadError::BadAnswer(format!(
                    "IMDS answered HTTP {status} for {full_path}"
                )))
            }
        }
        Err(e) => Err(OptionalReadError::NoAnswer(format!(
            "IMDS did not answer {full_path}: {}",
            aws_sdk_ec2::error::DisplayErrorContext(&e)
        ))),
    }
}

/// The instance's id (`i-...`).
pub(crate) async fn instance_id(client: &Client) -> Result<String, ProviderError> {
    get(client, "instance-id").await
}

/// The instance's region.
pub(crate) async fn region(client: &Client) -> Result<String, ProviderError> {
    get(client, "placement/region").await
}

/// One network interface of this instance as IMDS lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interface {
    /// The interface's MAC address, as IMDS keys it.
    pub mac: String,
    /// The ENI id.
    pub eni: String,
    /// The subnet the ENI sits in.
    pub subnet: String,
}

/// Every network interface attached to this instance.
pub(crate) async fn interfaces(client: &Client) -> Result<Vec<Interface>, ProviderError> {
    let listing = get(client, "network/interfaces/macs/").await?;
    let mut found = Vec::new();
    for mac in listing
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .filter(|l| !l.is_empty())
    {
        let eni = get(
            client,
            &format!("network/interfaces/macs/{mac}/interface-id"),
        )
        .await?;
        let subnet = get(client, &format!("network/interfaces/macs/{mac}/subnet-id")).await?;
        found.push(Interface {
            mac: mac.to_string(),
            eni,
            subnet,
        });
    }
    Ok(found)
}

/// This node's ENI among `interfaces`: the only one, or the one in the peer ENI's subnet (an
/// appliance has several ENIs, and the floating IPs live in the subnet the pair shares).
pub(crate) fn pick_own_eni(
    interfaces: &[Interface],
    peer_subnet: Option<&str>,
) -> Result<String, ProviderError> {
    let not_found = |message: String| ProviderError::Permanent {
        operation: "imds network/interfaces".to_string(),
        message,
        fix: "set provider.aws.own_eni to this node's ENI in the peer's subnet".to_string(),
    };
    if let [only] = interfaces {
        return Ok(only.eni.clone());
    }
    let subnet = peer_subnet.ok_or_else(|| {
        not_found(format!(
            "{} interfaces and the peer ENI's subnet is unknown",
            interfaces.len()
        ))
    })?;
    let mut matching = interfaces.iter().filter(|i| i.subnet == subnet);
    match (matching.next(), matching.next()) {
        (Some(one), None) => Ok(one.eni.clone()),
        (None, _) => Err(not_found(format!(
            "none of this instance's {} interfaces is in the peer's subnet {subnet}",
            interfaces.len()
        ))),
        (Some(_), Some(_)) => Err(not_found(format!(
            "several of this instance's interfaces are in the peer's subnet {subnet}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(eni: &str, subnet: &str) -> Interface {
        Interface {
            mac: format!("02:00:00:00:00:{}", &eni[eni.len() - 2..]),
            eni: eni.to_string(),
            subnet: subnet.to_string(),
        }
    }

    #[test]
    fn a_single_interface_is_ours_whatever_the_subnet() {
        let found = pick_own_eni(&[iface("eni-01", "subnet-wan")], None).unwrap();
        assert_eq!(found, "eni-01");
    }

    #[test]
    fn with_several_interfaces_the_one_in_the_peers_subnet_is_ours() {
        let ifaces = [iface("eni-01", "subnet-wan"), iface("eni-02", "subnet-lan")];
        assert_eq!(pick_own_eni(&ifaces, Some("subnet-lan")).unwrap(), "eni-02");
        assert!(pick_own_eni(&ifaces, Some("subnet-other")).is_err());
        assert!(pick_own_eni(&ifaces, None).is_err());
        let twice = [iface("eni-01", "subnet-lan"), iface("eni-02", "subnet-lan")];
        let err = pick_own_eni(&twice, Some("subnet-lan")).unwrap_err();
        assert!(err.to_string().contains("provider.aws.own_eni"), "{err}");
    }

    #[test]
    fn a_malformed_endpoint_is_a_config_error() {
        let err = client(Some("not a url")).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("imds_endpoint"), "{err}");
        client(Some("http://127.0.0.1:1")).unwrap();
    }
}
