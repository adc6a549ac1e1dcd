//! Owns the discovery checks: IMDS and the instance role (name and ARN), the principal from STS
//! when IMDS is not used, and the EC2 endpoint itself (name resolution, proxy, TLS).

use std::time::Duration;

use aws_sdk_ec2::error::{DisplayErrorContext, SdkError};
use cloudha_provider_core::check::{proxy_for, resolve};
use cloudha_provider_core::Check;

use super::endpoints::{sts_endpoint, NO_IAM_ENDPOINT, NO_IAM_ENDPOINT_FIX};
use super::input::{Input, Role, ROLE_FIX};
use crate::config::AwsConfig;
use crate::simulation;
use crate::{imds, short_error, AwsProvider, Credentials, CHECK_DEADLINE};

/// The principal to simulate, from `sts:GetCallerIdentity` (when IMDS is not used).
pub(super) async fn principal_from_sts(
    input: &Input,
    region: &str,
    credentials: &Credentials,
    out: &mut Vec<Check>,
) -> Option<String> {
    let Some(endpoint) = sts_endpoint(&input.config, region) else {
        out.push(Check::warn(
            "identity_arn",
            NO_IAM_ENDPOINT,
            NO_IAM_ENDPOINT_FIX,
        ));
        return None;
    };
    match simulation::caller_arn(&endpoint, region, credentials).await {
        Ok(arn) => match simulation::principal_for_simulation(&arn) {
            Some(p) => {
                out.push(Check::pass(
                    "identity_arn",
                    format!("STS names the caller {arn}"),
                ));
                Some(p)
            }
            None => {
                out.push(Check::warn(
                    "identity_arn",
                    format!("STS names the caller {arn}, which is neither a role nor a user"),
                    "run the self-test with the instance role's credentials",
                ));
                None
            }
        },
        Err(e) => {
            out.push(Check::warn(
                "identity_arn",
                format!("sts:GetCallerIdentity at {endpoint} failed: {e}"),
                "allow outbound HTTPS to STS, or set provider.aws.iam_endpoint (it serves STS too)",
            ));
            None
        }
    }
}

/// IMDS: the instance, and its role (name and ARN) for the policy simulation.
pub(super) async fn check_imds(config: &AwsConfig, out: &mut Vec<Check>) -> Option<Role> {
    let client = match imds::client(config.imds_endpoint.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail(
                "metadata_service",
                e.to_string(),
                "fix provider.aws.imds_endpoint",
            ));
            return None;
        }
    };
    let where_ = config.imds_endpoint.as_deref().unwrap_or("IMDSv2");
    let instance =
        match tokio::time::timeout(Duration::from_secs(10), imds::instance_id(&client)).await {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => {
                out.push(imds_failure(config, format!("{where_}: {e}")));
                return None;
            }
            Err(_) => {
                out.push(imds_failure(
                    config,
                    format!("{where_} did not answer within 10 s"),
                ));
                return None;
            }
        };
    let role = role_of(&client).await;
    match &role {
        Ok(r) => out.push(Check::pass(
            "metadata_service",
            format!(
                "{where_} answered: instance {instance}, instance role {}",
                r.arn
            ),
        )),
        Err(e) => out.push(Check::fail(
            "metadata_service",
            format!("{where_} answered (instance {instance}) but names no instance role: {e}"),
            ROLE_FIX,
        )),
    }
    role.ok()
}

fn imds_failure(config: &AwsConfig, message: String) -> Check {
    if config.region.is_some() && config.own_eni.is_some() {
        Check::warn(
            "metadata_service",
            format!("{message}; region and own ENI come from the config, but the instance role's credentials and ARN need IMDS"),
            "make IMDSv2 reachable (hop limit 2 inside containers)",
        )
    } else {
        Check::fail(
            "metadata_service",
            message,
            "run on an EC2 instance with IMDSv2 reachable (hop limit 2 inside containers), or set provider.aws.region and provider.aws.own_eni",
        )
    }
}

/// The role of the instance profile: its name from `iam/security-credentials/`, its account from
/// the instance profile ARN in `iam/info`.
async fn role_of(client: &aws_config::imds::Client) -> Result<Role, String> {
    let get = |path: &'static str| async move {
        client
            .get(path)
            .await
            .map(|v| v.as_ref().trim().to_string())
            .map_err(|e| simulation::one_line(&format!("{path}: {}", DisplayErrorContext(&e))))
    };
    let name = get("/latest/meta-data/iam/security-credentials/")
        .await?
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if name.is_empty() {
        return Err("no role in iam/security-credentials/".into());
    }
    let info = get("/latest/meta-data/iam/info").await?;
    let profile = info
        .split("\"InstanceProfileArn\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .ok_or_else(|| format!("iam/info has no InstanceProfileArn: {info}"))?;
    role_arn(profile, &name).ok_or_else(|| format!("{profile:?} is not an instance profile ARN"))
}

/// `arn:aws:iam::123456789012:instance-profile/x` and role `r` -> `arn:aws:iam::123456789012:role/r`.
pub fn role_arn(instance_profile_arn: &str, role: &str) -> Option<Role> {
    let parts: Vec<&str> = instance_profile_arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "iam", "", account, resource]
            if resource.starts_with("instance-profile/") && !account.is_empty() =>
        {
            Some(Role {
                name: role.to_string(),
                arn: format!("arn:{partition}:iam::{account}:role/{role}"),
            })
        }
        _ => None,
    }
}

pub(super) async fn check_api(
    provider: &AwsProvider,
    endpoint: &str,
    out: &mut Vec<Check>,
) -> bool {
    let proxy = proxy_for(endpoint);
    if proxy.is_none() {
        if let Err(e) = resolve(endpoint).await {
            out.push(Check::fail("dns", e, "fix name resolution (/etc/resolv.conf, the VPC's DHCP options), or set HTTPS_PROXY"));
            return false;
        }
    }
    let via = proxy
        .map(|p| format!(" through proxy {p}"))
        .unwrap_or_else(|| " directly".into());
    let call = provider
        .client
        .describe_network_interfaces()
        .network_interface_ids(&provider.identity.own_eni)
        .send();
    match tokio::time::timeout(CHECK_DEADLINE, call).await {
        Err(_) => {
            out.push(Check::fail("cloud_api", format!("{endpoint}{via}: no answer within 20 s"), "allow outbound HTTPS to the EC2 endpoint (security group, NACL, NAT or VPC endpoint), or set HTTPS_PROXY"));
            false
        }
        Ok(Err(e @ (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)))) => {
            out.push(Check::fail("cloud_api", format!("{endpoint} not reachable{via}: {}", short_error(&e)), "allow outbound HTTPS to the EC2 endpoint (security group, NACL, NAT or VPC endpoint), or set HTTPS_PROXY (NO_PROXY for 169.254.169.254)"));
            false
        }
        // Any answer from EC2, even a refusal, proves resolution, connection and TLS.
        Ok(_) => {
            out.push(Check::pass(
                "cloud_api",
                format!("{endpoint} reached{via} (name resolved, connection and TLS up)"),
            ));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arn_from_the_instance_profile() {
        let r = role_arn(
            "arn:aws:iam::123456789012:instance-profile/cloudha",
            "cloudha-role",
        )
        .expect("valid");
        assert_eq!(r.arn, "arn:aws:iam::123456789012:role/cloudha-role");
        assert!(role_arn("arn:aws:iam::123456789012:role/x", "x").is_none());
        assert!(role_arn("garbage", "x").is_none());
    }
}
