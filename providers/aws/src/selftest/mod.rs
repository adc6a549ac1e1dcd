//! `cloudha selftest` on AWS: everything a failover will need, proved on a healthy pair without
//! changing anything.
//!
//! IMDS and the instance role, the EC2 endpoint (name resolution, TLS, proxy), reads of both ENIs,
//! the Elastic IPs and every route table, then every write action of
//! [`FAILOVER_ACTIONS`](crate::permissions::FAILOVER_ACTIONS) by the method its entry names: `DryRun=true` where EC2 has it (`DryRunOperation` means allowed,
//! `UnauthorizedOperation` means not), and `iam:SimulatePrincipalPolicy` for the instance role
//! where it has not (`AssignPrivateIpAddresses`, `UnassignPrivateIpAddresses`). The IAM call is a
//! SigV4-signed Query request: one call does not justify compiling `aws-sdk-iam`. Last, the ENI
//! settings and who holds each floating IP, Elastic IP and route now.
//!
//! This module orchestrates ([`run`] for `cloudha selftest`, [`prove`] for the daemon's periodic
//! proof); each concern has its own file: `input` (what the self-test is given), `endpoints`,
//! `discovery` (IMDS, the role, STS, the EC2 endpoint), `reads` (ENIs, route tables, Elastic
//! IPs), `writes` (DryRun probes and policy simulation), `enis` (ENI attributes) and `holders`
//! (who holds each floating IP, Elastic IP and route).

use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::error::DisplayErrorContext;
use cloudha_provider_core::Check;

use crate::simulation;
use crate::{uses_imds, AwsProvider, CHECK_DEADLINE};
use discovery::{check_api, check_imds, principal_from_sts};
use endpoints::ec2_endpoint;
use enis::check_enis;
use holders::check_holders;
use input::{skipped, ROLE_FIX};
use reads::{read_eips, read_eni, read_tables};
use writes::{check_writes, ReadBack};

mod discovery;
mod endpoints;
mod enis;
mod holders;
mod input;
mod reads;
mod writes;

pub use crate::simulation::{iam_query, DEFAULT_IAM_ENDPOINT};
pub use discovery::role_arn;
pub use enis::address_problem;
pub use input::{Input, Role};

/// Run every AWS check. Never changes anything in the cloud.
pub async fn run(input: &Input) -> Vec<Check> {
    let mut out = Vec::new();
    let imds_in_use = !input.metadata_disabled
        && uses_imds(
            &input.config,
            std::env::var_os("AWS_EC2_METADATA_SERVICE_ENDPOINT").is_some(),
        );
    let role = if imds_in_use {
        check_imds(&input.config, &mut out).await
    } else if input.metadata_disabled
        && (input.config.region.is_none() || input.config.own_eni.is_none())
    {
        out.push(Check::fail(
            "metadata_service",
            "AWS_EC2_METADATA_DISABLED is true and the config leaves the region or own ENI to IMDS",
            "set provider.aws.region and provider.aws.own_eni, or unset AWS_EC2_METADATA_DISABLED",
        ));
        out.push(skipped("the region and own ENI"));
        return out;
    } else {
        let why = if input.metadata_disabled {
            "AWS_EC2_METADATA_DISABLED is true"
        } else {
            "the config names the region and own ENI and no imds_endpoint"
        };
        out.push(Check::warn(
            "metadata_service",
            format!("not contacted ({why}): the principal comes from STS; unproven: that own_eni {} is attached to this instance, and scheduled maintenance", input.config.own_eni.as_deref().unwrap_or_default()),
            "run the self-test on the instance with IMDSv2 reachable (provider.aws.imds_endpoint) to prove them",
        ));
        None
    };
    let provider = match AwsProvider::build(
        input.config.clone(),
        input.floating_ips.clone(),
        input.elastic_ips.clone(),
        input.routes.clone(),
        input.credentials.clone(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            let (message, fix) = match &e {
                cloudha_provider_core::ProviderError::Permanent { message, fix, .. } => {
                    (message.clone(), fix.clone())
                }
                other => (
                    other.to_string(),
                    "set provider.aws.region and provider.aws.own_eni, or make IMDSv2 reachable"
                        .to_string(),
                ),
            };
            out.push(Check::fail("discovery", message, fix));
            out.push(skipped("region and own ENI"));
            return out;
        }
    };
    let credentials = match tokio::time::timeout(
        CHECK_DEADLINE,
        provider.credentials.provide_credentials(),
    )
    .await
    {
        Ok(Ok(c)) => {
            let who = role
                .as_ref()
                .map(|r| format!(" of instance role {}", r.name))
                .unwrap_or_default();
            out.push(Check::pass(
                "identity",
                format!(
                    "AWS credentials{who} obtained (access key {}…)",
                    &c.access_key_id().chars().take(4).collect::<String>()
                ),
            ));
            c
        }
        Ok(Err(e)) => {
            out.push(Check::fail(
                "identity",
                format!(
                    "no AWS credentials: {}",
                    simulation::one_line(&DisplayErrorContext(&e).to_string())
                ),
                ROLE_FIX,
            ));
            out.push(skipped("credentials"));
            return out;
        }
        Err(_) => {
            out.push(Check::fail(
                "identity",
                "no AWS credentials within 20 s",
                ROLE_FIX,
            ));
            out.push(skipped("credentials"));
            return out;
        }
    };
    let id = &provider.identity;
    let principal = match &role {
        Some(r) => Some(r.arn.clone()),
        None => principal_from_sts(input, &id.region, &credentials, &mut out).await,
    };
    let endpoint = ec2_endpoint(&input.config, &id.region);
    if !check_api(&provider, &endpoint, &mut out).await {
        out.push(skipped("the EC2 API"));
        return out;
    }
    let own = read_eni(
        &provider,
        "read_own_eni",
        "this node's ENI",
        &id.own_eni,
        &mut out,
    )
    .await;
    let peer = read_eni(
        &provider,
        "read_peer_eni",
        "the peer's ENI",
        &id.peer_eni,
        &mut out,
    )
    .await;
    let tables = read_tables(&provider, &input.routes, &mut out).await;
    let eips = read_eips(&provider, &input.elastic_ips, &mut out).await;
    check_writes(
        &provider,
        input,
        principal.as_deref(),
        &credentials,
        ReadBack::CompareAndRestore,
        &mut out,
    )
    .await;
    if let (Some(own), Some(peer)) = (&own, &peer) {
        check_enis(&provider, input, own, peer, &mut out).await;
        check_holders(input, own, peer, &eips, &tables, &mut out);
    } else {
        out.push(skipped("both ENIs"));
    }
    out
}

/// What the daemon proves every few minutes (`Provider::prove_failover`): the ENIs exist, are
/// different and fit the floating IPs, each floating IP is on one of them, and every write a
/// failover in either direction needs is allowed (harmless DryRun probes and policy simulation
/// for the principal STS names), with the read-back that shows nothing changed. No IMDS request.
pub async fn prove(provider: &AwsProvider) -> Vec<Check> {
    let mut out = Vec::new();
    let input = Input {
        config: provider.config.clone(),
        floating_ips: provider.floating_ips.clone(),
        elastic_ips: provider.elastic_ips.clone(),
        routes: provider.routes.clone(),
        credentials: None,
        metadata_disabled: true,
    };
    let credentials = match tokio::time::timeout(
        CHECK_DEADLINE,
        provider.credentials.provide_credentials(),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            out.push(Check::fail(
                "identity",
                format!(
                    "no AWS credentials: {}",
                    simulation::one_line(&DisplayErrorContext(&e).to_string())
                ),
                ROLE_FIX,
            ));
            return out;
        }
        Err(_) => {
            out.push(Check::fail(
                "identity",
                "no AWS credentials within 20 s",
                ROLE_FIX,
            ));
            return out;
        }
    };
    let id = &provider.identity;
    let principal = principal_from_sts(&input, &id.region, &credentials, &mut out).await;
    let own = read_eni(
        provider,
        "read_own_eni",
        "this node's ENI",
        &id.own_eni,
        &mut out,
    )
    .await;
    let peer = read_eni(
        provider,
        "read_peer_eni",
        "the peer's ENI",
        &id.peer_eni,
        &mut out,
    )
    .await;
    let tables = read_tables(provider, &input.routes, &mut out).await;
    let eips = read_eips(provider, &input.elastic_ips, &mut out).await;
    check_writes(
        provider,
        &input,
        principal.as_deref(),
        &credentials,
        ReadBack::None,
        &mut out,
    )
    .await;
    if let (Some(own), Some(peer)) = (&own, &peer) {
        check_enis(provider, &input, own, peer, &mut out).await;
        check_holders(&input, own, peer, &eips, &tables, &mut out);
    }
    out
}
