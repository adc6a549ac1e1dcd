//! `cloudha selftest` on AWS: everything a failover will need, proved on a healthy pair without
//! changing anything.
//!
//! IMDS and the instance role, the EC2 endpoint (name resolution, TLS, proxy), reads of both ENIs,
//! the Elastic IPs and every route table, then every write action of [`FAILOVER_ACTIONS`] by the
//! method its entry names: `DryRun=true` where EC2 has it (`DryRunOperation` means allowed,
//! `UnauthorizedOperation` means not), and `iam:SimulatePrincipalPolicy` for the instance role
//! where it has not (`AssignPrivateIpAddresses`, `UnassignPrivateIpAddresses`). The IAM call is a
//! SigV4-signed Query request: one call does not justify compiling `aws-sdk-iam`. Last, the ENI
//! settings and who holds each floating IP, Elastic IP and route now.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, NetworkInterface};
use cloudha_provider_core::check::{proxy_for, resolve};
use cloudha_provider_core::{Check, FloatingIp, RouteSpec};

use crate::config::{parse_ipv4_cidr, AwsConfig, ElasticIp};
use crate::permissions::{Proof, RequiredAction, FAILOVER_ACTIONS, SELFTEST_SIMULATE_ACTION};
use crate::probes::{self, DryRunResult, Snapshot};
use crate::simulation::{self, ArnScope};
use crate::{imds, short_error, uses_imds, AwsProvider, Credentials, CHECK_DEADLINE};

pub use crate::simulation::{iam_query, DEFAULT_IAM_ENDPOINT};

const ROLE_FIX: &str = "attach an instance profile to this instance whose IAM role has the cloudha policy (deploy/aws), and check in IAM that the role's policies allow the failover's actions";

/// What the self-test needs: the same settings the daemon uses.
pub struct Input {
    pub config: AwsConfig,
    pub floating_ips: Vec<FloatingIp>,
    pub elastic_ips: Vec<ElasticIp>,
    pub routes: Vec<RouteSpec>,
    /// Sign with these instead of the SDK's default chain (tests, tools).
    pub credentials: Option<Credentials>,
    /// `AWS_EC2_METADATA_DISABLED` is true: no request to IMDS at all (see
    /// [`crate::metadata_disabled_by_env`]).
    pub metadata_disabled: bool,
}

/// What IMDS says about the instance role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub arn: String,
}

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

/// The principal to simulate, from `sts:GetCallerIdentity` (when IMDS is not used).
async fn principal_from_sts(
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

fn sts_endpoint(config: &AwsConfig, region: &str) -> Option<String> {
    std::env::var("AWS_ENDPOINT_URL_STS")
        .ok()
        .or_else(|| config.iam_endpoint.clone())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .or_else(|| {
            config
                .endpoint
                .is_none()
                .then(|| format!("https://sts.{region}.amazonaws.com"))
        })
}

fn skipped(what: &str) -> Check {
    Check::warn(
        "skipped",
        format!("the remaining cloud checks need {what}, which failed above"),
        "fix the failure above and run the self-test again",
    )
}

fn ec2_endpoint(config: &AwsConfig, region: &str) -> String {
    config
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_EC2").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"))
}

/// The IAM endpoint, or `None` where the public one must not be assumed: a configured EC2
/// `endpoint` (an emulator, a private VPC endpoint) with no IAM endpoint named means AWS's
/// global endpoints are not this pair's cloud.
fn iam_endpoint(config: &AwsConfig) -> Option<String> {
    config
        .iam_endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_IAM").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .or_else(|| {
            config
                .endpoint
                .is_none()
                .then(|| DEFAULT_IAM_ENDPOINT.to_string())
        })
}

const NO_IAM_ENDPOINT: &str =
    "provider.aws.endpoint is set and no IAM/STS endpoint is: the public ones are not contacted";
const NO_IAM_ENDPOINT_FIX: &str =
    "set provider.aws.iam_endpoint (it serves IAM and STS) to prove these";

/// IMDS: the instance, and its role (name and ARN) for the policy simulation.
async fn check_imds(config: &AwsConfig, out: &mut Vec<Check>) -> Option<Role> {
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

async fn check_api(provider: &AwsProvider, endpoint: &str, out: &mut Vec<Check>) -> bool {
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

fn refusal_fix<E: ProvideErrorMetadata>(
    e: &SdkError<E>,
    action: &str,
    what: &str,
    id: &str,
) -> String {
    match e.code() {
        Some("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException") => {
            format!("allow {action} in the instance role's policy (deploy/aws)")
        }
        Some(code) if code.contains("NotFound") => {
            format!("{what} {id} does not exist in this region: correct the id in the config")
        }
        _ => "read EC2's message; fix the id in the config or the role's policy".to_string(),
    }
}

async fn read_eni(
    provider: &AwsProvider,
    name: &str,
    what: &str,
    id: &str,
    out: &mut Vec<Check>,
) -> Option<NetworkInterface> {
    let call = provider
        .client
        .describe_network_interfaces()
        .network_interface_ids(id)
        .send();
    match tokio::time::timeout(CHECK_DEADLINE, call).await {
        Ok(Ok(r)) => match r.network_interfaces().first() {
            Some(eni) => {
                out.push(Check::pass(name, format!("read {what} {id}")).proved_by("call"));
                Some(eni.clone())
            }
            None => {
                out.push(Check::fail(
                    name,
                    format!("{what} {id} not found"),
                    "correct the ENI id in the config",
                ));
                None
            }
        },
        Ok(Err(e)) => {
            out.push(
                Check::fail(
                    name,
                    format!(
                        "ec2:DescribeNetworkInterfaces on {what} {id}: {}",
                        short_error(&e)
                    ),
                    refusal_fix(&e, "ec2:DescribeNetworkInterfaces", what, id),
                )
                .proved_by("call"),
            );
            None
        }
        Err(_) => {
            out.push(Check::fail(
                name,
                format!("reading {what} {id}: no answer within 20 s"),
                "check the EC2 endpoint",
            ));
            None
        }
    }
}

/// `(table id, routes as (destination, target ENI))` for every table that could be read.
type Tables = Vec<(String, Vec<(String, Option<String>)>)>;

async fn read_tables(provider: &AwsProvider, routes: &[RouteSpec], out: &mut Vec<Check>) -> Tables {
    let ids: BTreeSet<&str> = routes.iter().map(|r| r.table.as_str()).collect();
    let mut found = Vec::new();
    for id in ids {
        let call = provider
            .client
            .describe_route_tables()
            .route_table_ids(id)
            .send();
        match tokio::time::timeout(CHECK_DEADLINE, call).await {
            Ok(Ok(r)) => match r.route_tables().first() {
                Some(t) => {
                    out.push(
                        Check::pass("read_route_table", format!("read route table {id}"))
                            .proved_by("call"),
                    );
                    let routes = t
                        .routes()
                        .iter()
                        .filter_map(|r| {
                            Some((
                                r.destination_cidr_block()?.to_string(),
                                r.network_interface_id().map(str::to_string),
                            ))
                        })
                        .collect();
                    found.push((id.to_string(), routes));
                }
                None => out.push(Check::fail(
                    "read_route_table",
                    format!("route table {id} not found"),
                    format!(
                        "route table {id} does not exist in this region: correct [[route]] table"
                    ),
                )),
            },
            Ok(Err(e)) => out.push(
                Check::fail(
                    "read_route_table",
                    format!("ec2:DescribeRouteTables on {id}: {}", short_error(&e)),
                    refusal_fix(&e, "ec2:DescribeRouteTables", "route table", id),
                )
                .proved_by("call"),
            ),
            Err(_) => out.push(Check::fail(
                "read_route_table",
                format!("reading route table {id}: no answer within 20 s"),
                "check the EC2 endpoint",
            )),
        }
    }
    found
}

/// `(allocation id, associated ENI)` for every Elastic IP that could be read.
async fn read_eips(
    provider: &AwsProvider,
    eips: &[ElasticIp],
    out: &mut Vec<Check>,
) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for eip in eips {
        let id = &eip.allocation_id;
        let call = provider
            .client
            .describe_addresses()
            .allocation_ids(id)
            .send();
        match tokio::time::timeout(CHECK_DEADLINE, call).await {
            Ok(Ok(r)) => match r.addresses().first() {
                Some(a) => {
                    out.push(
                        Check::pass(
                            "read_elastic_ip",
                            format!("read Elastic IP {id} ({})", a.public_ip().unwrap_or("?")),
                        )
                        .proved_by("call"),
                    );
                    found.push((id.clone(), a.network_interface_id().map(str::to_string)));
                }
                None => out.push(Check::fail(
                    "read_elastic_ip",
                    format!("Elastic IP {id} not found"),
                    "correct floating_ip.elastic_ip",
                )),
            },
            Ok(Err(e)) => out.push(
                Check::fail(
                    "read_elastic_ip",
                    format!("ec2:DescribeAddresses on {id}: {}", short_error(&e)),
                    refusal_fix(&e, "ec2:DescribeAddresses", "Elastic IP", id),
                )
                .proved_by("call"),
            ),
            Err(_) => out.push(Check::fail(
                "read_elastic_ip",
                format!("reading {id}: no answer within 20 s"),
                "check the EC2 endpoint",
            )),
        }
    }
    found
}

/// Whether `action` applies to this config (Elastic IP and route actions only when configured).
fn applies(action: &RequiredAction, input: &Input) -> bool {
    if !action.conditional {
        return true;
    }
    match action.action {
        "ec2:DescribeAddresses" | "ec2:AssociateAddress" => !input.elastic_ips.is_empty(),
        _ => !input.routes.is_empty(),
    }
}

async fn check_writes(
    provider: &AwsProvider,
    input: &Input,
    principal: Option<&str>,
    credentials: &Credentials,
    read_back: ReadBack,
    out: &mut Vec<Check>,
) {
    let tables: BTreeSet<String> = input.routes.iter().map(|r| r.table.clone()).collect();
    let before = match Snapshot::read(provider, &tables, &input.elastic_ips).await {
        Ok(s) => s,
        Err(e) => {
            out.push(Check::warn(
                "permission",
                format!(
                    "no write probe sent: the state they must leave unchanged cannot be read ({e})"
                ),
                "fix the read failures above and run the self-test again",
            ));
            return;
        }
    };
    let id = &provider.identity;
    let mut simulate: Vec<(&RequiredAction, String, String)> = Vec::new();
    let scope = principal.and_then(|p| ArnScope::of(p, &id.region));
    let arn = |kind: &str, resource: &str| {
        scope
            .as_ref()
            .map(|s| s.ec2(kind, resource))
            .unwrap_or_else(|| format!("{kind}/{resource}"))
    };
    for action in FAILOVER_ACTIONS.iter().filter(|a| applies(a, input)) {
        match action.proof {
            // Proved by the reads above.
            Proof::Call => {}
            // In the daemon nothing that could write is sent, however harmless: a takeover
            // between the read and the probe would make "the current target" stale.
            Proof::DryRun if read_back == ReadBack::None => {
                let resources: Vec<(&str, String)> = match action.action {
                    "ec2:AssociateAddress" => input
                        .elastic_ips
                        .iter()
                        .map(|e| ("elastic-ip", e.allocation_id.clone()))
                        .chain(
                            [&id.own_eni, &id.peer_eni].map(|e| ("network-interface", e.clone())),
                        )
                        .collect(),
                    _ => tables.iter().map(|t| ("route-table", t.clone())).collect(),
                };
                for (kind, resource) in resources {
                    simulate.push((action, arn(kind, &resource), format!("{kind} {resource}")));
                }
            }
            Proof::DryRun => {
                let (results, unsent) = probes::dry_run(
                    provider,
                    action.action,
                    &input.routes,
                    &input.elastic_ips,
                    &before,
                )
                .await;
                for result in results {
                    out.push(dry_run_check(action, result));
                }
                for u in unsent {
                    for (kind, resource) in &u.resources {
                        simulate.push((
                            action,
                            arn(kind, resource),
                            format!("{} (no DryRun sent: {})", u.subject, u.why),
                        ));
                    }
                }
            }
            // A failover in either direction: onto and off both ENIs.
            Proof::Simulation => {
                for eni in [&id.own_eni, &id.peer_eni] {
                    simulate.push((action, arn("network-interface", eni), format!("ENI {eni}")));
                }
            }
        }
    }
    if !simulate.is_empty() {
        simulate_checks(
            input,
            principal,
            scope.is_some(),
            credentials,
            &simulate,
            out,
        )
        .await;
    }
    if read_back == ReadBack::CompareAndRestore {
        out.push(probes::verify_unchanged(provider, &tables, &input.elastic_ips, &before).await);
    }
}

/// Whether the state is read back after the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadBack {
    /// `cloudha selftest` on a pair at rest: any difference is the probes' doing; put it back.
    CompareAndRestore,
    /// Inside the running daemon: takeovers and reconciles change the state meanwhile, and a
    /// "restore" would write against them. The probes are harmless by construction.
    None,
}

/// Policy simulation of `requests` (action, resource ARN, what it is) for `principal`.
async fn simulate_checks(
    input: &Input,
    principal: Option<&str>,
    scoped: bool,
    credentials: &Credentials,
    requests: &[(&RequiredAction, String, String)],
    out: &mut Vec<Check>,
) {
    let not_proved = |why: String, fix: String, out: &mut Vec<Check>| {
        for (a, _, subject) in requests {
            out.push(
                Check::warn(
                    "permission",
                    format!("{} on {subject} not proved: {why}", a.action),
                    fix.clone(),
                )
                .proved_by("policy simulation"),
            );
        }
    };
    let (Some(principal), true) = (principal, scoped) else {
        not_proved(
            "the principal's ARN is unknown (neither IMDS nor STS named it)".into(),
            "make IMDSv2 or STS reachable so the role can be simulated".into(),
            out,
        );
        return;
    };
    let Some(endpoint) = iam_endpoint(&input.config) else {
        not_proved(NO_IAM_ENDPOINT.into(), NO_IAM_ENDPOINT_FIX.into(), out);
        return;
    };
    let region = &input.config.region.clone().unwrap_or_default();
    let asked: Vec<simulation::Request> = requests
        .iter()
        .map(|(a, resource, _)| simulation::Request {
            action: a.action.to_string(),
            resource: resource.clone(),
        })
        .collect();
    let decisions = match simulation::simulate(&endpoint, credentials, principal, region, &asked)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            not_proved(
                format!("{SELFTEST_SIMULATE_ACTION} on {principal} failed: {e}"),
                format!("allow {SELFTEST_SIMULATE_ACTION} on the role itself (the setup in deploy/aws grants it), or set provider.aws.iam_endpoint"),
                out,
            );
            return;
        }
    };
    for (a, resource, subject) in requests {
        let decision = decisions
            .iter()
            .find(|d| {
                d.action.eq_ignore_ascii_case(a.action)
                    && (d.resource == *resource || d.resource == "*")
            })
            .map(|d| d.decision.as_str());
        let check = match decision {
            Some("allowed") => Check::pass(
                "permission",
                format!(
                    "{} allowed on {subject} for {principal} ({})",
                    a.action, a.why
                ),
            ),
            Some(d) => Check::fail(
                "permission",
                format!(
                    "{} is {d} on {resource} for {principal} (needed to {})",
                    a.action, a.why
                ),
                format!(
                    "allow {} on {resource} in the role's policy (deploy/aws){}",
                    a.action,
                    if d == "explicitDeny" {
                        " and remove the Deny that matches it"
                    } else {
                        ""
                    }
                ),
            ),
            None => Check::warn(
                "permission",
                format!("{} on {resource} not in the simulation's answer", a.action),
                "run the self-test again; report it if it persists",
            ),
        };
        out.push(check.proved_by("policy simulation"));
    }
}

fn dry_run_check(action: &RequiredAction, r: DryRunResult) -> Check {
    match r.code.as_deref() {
        Some("DryRunOperation") => Check::pass(
            "permission",
            format!(
                "{} allowed on {} ({})",
                action.action, r.subject, action.why
            ),
        )
        .proved_by("DryRun"),
        Some("UnauthorizedOperation") => Check::fail(
            "permission",
            format!(
                "{} denied on {} (needed to {}): {}",
                action.action, r.subject, action.why, r.message
            ),
            format!(
                "allow {} in the instance role's policy (deploy/aws) for this resource",
                action.action
            ),
        )
        .proved_by("DryRun"),
        other => Check::warn(
            "permission",
            format!(
                "{} not proved on {}: EC2 answered {}: {}",
                action.action,
                r.subject,
                other.unwrap_or("no error"),
                r.message
            ),
            "read EC2's message (a wrong id in the config?) and run the self-test again",
        )
        .proved_by("DryRun"),
    }
}

fn addresses_of(eni: &NetworkInterface) -> BTreeSet<Ipv4Addr> {
    eni.private_ip_addresses()
        .iter()
        .filter_map(|p| p.private_ip_address()?.parse().ok())
        .collect()
}

/// Why `ip` cannot be a floating IP in `cidr`: outside it, or one of the five addresses AWS
/// reserves in every subnet (the first four and the last).
pub fn address_problem(cidr: &str, ip: Ipv4Addr) -> Option<String> {
    let (net, len) = parse_ipv4_cidr(cidr)?;
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    let (net, ip) = (u32::from(net) & mask, u32::from(ip));
    if ip & mask != net {
        return Some(format!("outside the subnet {cidr}"));
    }
    let offset = ip - net;
    (offset < 4 || offset == !mask).then(|| {
        format!("one of the addresses AWS reserves in {cidr} (the first four and the last)")
    })
}

async fn check_enis(
    provider: &AwsProvider,
    input: &Input,
    own: &NetworkInterface,
    peer: &NetworkInterface,
    out: &mut Vec<Check>,
) {
    let id = &provider.identity;
    for (who, eni_id, eni) in [
        ("this node's", &id.own_eni, own),
        ("the peer's", &id.peer_eni, peer),
    ] {
        if eni.source_dest_check() == Some(false) {
            out.push(Check::pass(
                "source_dest_check",
                format!("source/destination check is off on {who} ENI {eni_id}"),
            ));
        } else {
            out.push(Check::fail(
                "source_dest_check",
                format!("source/destination check is on on {who} ENI {eni_id}: EC2 drops traffic routed through the appliance"),
                format!("aws ec2 modify-network-interface-attribute --network-interface-id {eni_id} --no-source-dest-check"),
            ));
        }
    }
    let subnet = own.subnet_id().unwrap_or_default().to_string();
    if peer.subnet_id() == Some(subnet.as_str()) {
        out.push(Check::pass(
            "same_subnet",
            format!("both ENIs are in subnet {subnet}"),
        ));
    } else {
        out.push(Check::fail(
            "same_subnet",
            format!("this node's ENI is in {subnet}, the peer's in {}", peer.subnet_id().unwrap_or("no subnet")),
            "put both ENIs in the same subnet: a secondary private IP can only move within its subnet",
        ));
    }
    let cidr = match tokio::time::timeout(
        CHECK_DEADLINE,
        provider
            .client
            .describe_subnets()
            .subnet_ids(&subnet)
            .send(),
    )
    .await
    {
        Ok(Ok(r)) => r
            .subnets()
            .first()
            .and_then(|s| s.cidr_block())
            .map(str::to_string),
        _ => None,
    };
    if cidr.is_none() {
        out.push(Check::warn(
            "floating_ip",
            format!("cannot read subnet {subnet} to check the floating IPs against it"),
            "allow ec2:DescribeSubnets for this check (the failover itself does not need it)",
        ));
    }
    // ENIs other than the pair's in the same subnet, which must not hold a floating IP.
    let others = tokio::time::timeout(
        CHECK_DEADLINE,
        provider
            .client
            .describe_network_interfaces()
            .filters(Filter::builder().name("subnet-id").values(&subnet).build())
            .send(),
    )
    .await;
    let others: Vec<NetworkInterface> = match others {
        Ok(Ok(r)) => r
            .network_interfaces()
            .iter()
            .filter(|e| {
                e.network_interface_id() != Some(id.own_eni.as_str())
                    && e.network_interface_id() != Some(id.peer_eni.as_str())
            })
            .cloned()
            .collect(),
        _ => {
            out.push(Check::warn("floating_ip", format!("cannot list the ENIs of subnet {subnet} to see whether a third one holds a floating IP"), "allow ec2:DescribeNetworkInterfaces without a resource restriction for this check"));
            Vec::new()
        }
    };
    for f in &input.floating_ips {
        let ip = f.address;
        let mut problems = Vec::new();
        if let Some(c) = &cidr {
            if let Some(p) = address_problem(c, ip) {
                problems.push((p, format!("pick a floating IP inside {c} other than its first four and last addresses")));
            }
        }
        for o in &others {
            if addresses_of(o).contains(&ip) {
                let other = o.network_interface_id().unwrap_or("?");
                problems.push((format!("held by a third ENI {other}"), format!("aws ec2 unassign-private-ip-addresses --network-interface-id {other} --private-ip-addresses {ip}")));
            }
        }
        if problems.is_empty() {
            if let Some(c) = &cidr {
                out.push(Check::pass(
                    "floating_ip",
                    format!("{ip} is inside {c}, not reserved, on no third ENI"),
                ));
            }
        }
        for (problem, fix) in problems {
            out.push(Check::fail(
                "floating_ip",
                format!("{ip} is {problem}"),
                fix,
            ));
        }
    }
}

fn check_holders(
    input: &Input,
    own: &NetworkInterface,
    peer: &NetworkInterface,
    eips: &[(String, Option<String>)],
    tables: &Tables,
    out: &mut Vec<Check>,
) {
    let own_id = own.network_interface_id().unwrap_or_default();
    let peer_id = peer.network_interface_id().unwrap_or_default();
    let who = |eni: Option<&str>| match eni {
        Some(e) if e == own_id => Some("this node"),
        Some(e) if e == peer_id => Some("the peer"),
        _ => None,
    };
    let (own_ips, peer_ips) = (addresses_of(own), addresses_of(peer));
    for f in &input.floating_ips {
        let ip = f.address;
        match (own_ips.contains(&ip), peer_ips.contains(&ip)) {
            (true, false) => out.push(Check::pass("holder", format!("{ip} is on this node's ENI"))),
            (false, true) => out.push(Check::pass("holder", format!("{ip} is on the peer's ENI"))),
            (true, true) => out.push(Check::fail("holder", format!("{ip} is on both ENIs"), "unassign it from the standby node's ENI")),
            (false, false) => out.push(Check::warn("holder", format!("{ip} is on neither ENI: traffic to it is dropped until the active node takes it"), "start the daemons: the active node assigns it")),
        }
    }
    for (allocation, eni) in eips {
        match who(eni.as_deref()) {
            Some(w) => out.push(Check::pass(
                "holder",
                format!("Elastic IP {allocation} is associated with {w}"),
            )),
            None => out.push(Check::warn(
                "holder",
                format!(
                    "Elastic IP {allocation} is associated with {}",
                    eni.as_deref().unwrap_or("nothing")
                ),
                "the active node re-associates it on its next takeover",
            )),
        }
    }
    for r in &input.routes {
        let Some((_, routes)) = tables.iter().find(|(t, _)| *t == r.table) else {
            continue;
        };
        match routes.iter().find(|(d, _)| *d == r.prefix) {
            None => out.push(Check::warn("route", format!("{} has no route for {}", r.table, r.prefix), "nothing to do: the active node creates it (CreateRoute) on its next takeover")),
            Some((_, target)) => match who(target.as_deref()) {
                Some(w) => out.push(Check::pass("route", format!("{} {} -> {} ({w})", r.table, r.prefix, target.as_deref().unwrap_or_default()))),
                None => out.push(Check::fail(
                    "route",
                    format!("{} {} points at {}, not at either node's ENI", r.table, r.prefix, target.as_deref().unwrap_or("no ENI")),
                    "correct the [[route]] entry or the route: it must target one of the pair's ENIs",
                )),
            },
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

    #[test]
    fn reserved_and_outside_addresses() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert!(address_problem("10.0.1.0/24", ip("10.0.1.100")).is_none());
        assert!(address_problem("10.0.1.0/24", ip("10.0.1.3"))
            .expect("reserved")
            .contains("reserves"));
        assert!(address_problem("10.0.1.0/24", ip("10.0.1.255"))
            .expect("reserved")
            .contains("reserves"));
        assert!(address_problem("10.0.1.0/24", ip("10.0.2.10"))
            .expect("outside")
            .contains("outside"));
    }
}
