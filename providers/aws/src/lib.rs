//! cloudha's AWS provider: the active node holds the pair's floating IPs as secondary private IPs
//! on its ENI, the Elastic IPs associated with them, and the route-table routes that send traffic
//! through the appliance.
//!
//! A takeover, all under the daemon's deadline:
//! 1. `AssignPrivateIpAddresses` with `AllowReassignment` moves every missing floating IP onto
//!    this node's ENI in one call; `DescribeNetworkInterfaces` verifies it, and an address left on
//!    the peer ENI is unassigned there.
//! 2. Each configured Elastic IP is re-associated with this ENI at its floating IP
//!    (`AssociateAddress`, `AllowReassociation` set explicitly).
//! 3. At the same time as 1 and 2, every route is pointed at this ENI: `ReplaceRoute`, or
//!    `CreateRoute` when the table lacks it; tables in parallel, routes within a table in turn.
//!
//! What is already in place is skipped, so a takeover on the node that holds everything makes only
//! `Describe*` calls. Cloud providers release nothing: the peer's takeover moves the resources.
//!
//! # Layout
//! - `config.rs`: [`AwsConfig`] and [`ElasticIp`], and the checks that need no network.
//! - `client.rs`: the one place the EC2 client and the credentials chain are built.
//! - `imds.rs`: instance id, region and own ENI from IMDSv2.
//! - `call.rs`: every EC2 request, with [`RetryPolicy`], the deadline and the call counts.
//! - `error.rs`: EC2 errors to transient / permanent-with-a-fix.
//! - `describe.rs`: reading ENIs, Elastic IPs and route tables by id.
//! - `takeover.rs`: floating IPs and Elastic IPs; `routes.rs`: routes.
//! - `observe.rs`: who holds what, from what EC2 reported.
//! - `maintenance.rs`: spot interruption notices and scheduled events from IMDSv2.
//! - [`selftest`]: `cloudha selftest`'s checks, one file per concern: `selftest/mod.rs`
//!   orchestrates (`run`, `prove`); `input`, `endpoints` (EC2/STS/IAM), `discovery` (IMDS, the
//!   role, STS, the EC2 endpoint), `reads` (ENIs, route tables, Elastic IPs), `writes` (`DryRun`
//!   probes and policy simulation), `enis` (ENI attributes), `holders` (who holds what now).
//! - [`permissions`]: the IAM actions a failover needs; [`probes`]: the `DryRun` probes and the
//!   read-back snapshot; [`simulation`]: `iam:SimulatePrincipalPolicy` and STS, signed by hand.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_ec2::config::{ProvideCredentials, SharedCredentialsProvider};
use cloudha_provider_core::maintenance::now_unix_ms;
use cloudha_provider_core::{
    FloatingIp, Maintenance, Observation, ObservedResource, ProgressReporter, Provider,
    ProviderError, RouteSpec, TakeoverReport, TakeoverRequest,
};

mod call;
mod client;
mod config;
mod describe;
mod error;
mod imds;
mod maintenance;
mod observe;
pub mod permissions;
pub mod probes;
mod routes;
pub mod selftest;
pub mod simulation;
mod takeover;

pub use aws_sdk_ec2::config::Credentials;
pub use call::RetryPolicy;
pub use config::{validate, AwsConfig, ElasticIp};

use call::{Budget, Calls};

/// One line (at most 200 characters) for an SDK error: EC2's code and message for a refusal,
/// the innermost cause for a transport failure (not the SDK's multi-line debug dump).
pub fn short_error<E, R>(e: &aws_sdk_ec2::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
    let text = match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => {
            let mut cause: &dyn std::error::Error = e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            let kind = match e {
                SdkError::DispatchFailure(_) => "no connection",
                SdkError::TimeoutError(_) => "timed out",
                SdkError::ResponseError(_) => "unreadable answer",
                _ => "failed",
            };
            format!("{kind}: {cause}")
        }
    };
    simulation::one_line(&text)
}

/// Whether `AWS_EC2_METADATA_DISABLED` turns the instance metadata service off (as the SDK
/// reads it: `true`, any case).
pub fn metadata_disabled_by_env() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}
use error::{classify, Failure};
use takeover::Pair;

/// Time allowed to `observe()`, `health()` and the other checks, which have no takeover deadline.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(20);

/// How long a passing check of this node's own ENI stands before `health()` describes it again.
/// The daemon asks for health every few seconds; the ENI's attachment and source/destination
/// check change only by an operator's hand, so one DescribeNetworkInterfaces a minute finds them
/// without spending an EC2 read every 5 s on every appliance (reconcile reads it too).
pub const ENI_RECHECK: Duration = Duration::from_secs(60);

/// Time allowed to discovery through IMDS and EC2 when the provider is built.
pub const DISCOVERY_DEADLINE: Duration = Duration::from_secs(30);

/// Attempts per call in checks: they run again soon, so they give up sooner than a takeover.
const CHECK_MAX_ATTEMPTS: u32 = 4;

/// Who this node is, as configured or discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The instance id from IMDS; `None` when the configuration named the region and own ENI.
    pub instance_id: Option<String>,
    /// The region the EC2 client talks to.
    pub region: String,
    /// This node's ENI, which receives the floating IPs.
    pub own_eni: String,
    /// The peer's ENI.
    pub peer_eni: String,
}

/// The AWS provider. Build it with [`AwsProvider::new`]; the daemon drives it through [`Provider`].
#[derive(Debug)]
pub struct AwsProvider {
    /// The settings it was built from (the self-test's proof needs the IAM/STS endpoints).
    config: AwsConfig,
    client: aws_sdk_ec2::Client,
    /// The client's credentials, kept to resolve them on their own in `health()`.
    credentials: SharedCredentialsProvider,
    identity: Identity,
    floating_ips: Vec<FloatingIp>,
    elastic_ips: Vec<ElasticIp>,
    routes: Vec<RouteSpec>,
    policy: RetryPolicy,
    /// Association ids of the Elastic IP associations this provider made, by allocation id.
    associations: Mutex<BTreeMap<String, String>>,
    /// The IMDS client maintenance notices are read with; `None` when IMDS is not in use here
    /// (region and own ENI configured, no `imds_endpoint`), so nothing is sent to an address
    /// that may not be IMDS.
    maintenance_imds: Option<aws_config::imds::Client>,
    /// Why maintenance notices are unknown right now (shown in status until the next answer).
    maintenance_problem: Mutex<Option<String>>,
    /// The last passing check of the own ENI (see [`ENI_RECHECK`]).
    eni_checked: Mutex<Option<EniChecked>>,
}

/// When `health()` last found the own ENI attached here, and its source/destination check then.
#[derive(Debug, Clone, Copy)]
struct EniChecked {
    at: std::time::Instant,
    source_dest_check: Option<bool>,
}

impl AwsProvider {
    /// A provider with the instance role's credentials (the SDK's default chain), discovering
    /// through IMDSv2 whatever `config` leaves out (region, own ENI).
    pub async fn new(
        config: AwsConfig,
        floating_ips: Vec<FloatingIp>,
        elastic_ips: Vec<ElasticIp>,
        routes: Vec<RouteSpec>,
    ) -> Result<Self, ProviderError> {
        Self::build(config, floating_ips, elastic_ips, routes, None).await
    }

    /// Like [`AwsProvider::new`], but signing with `credentials` (tests against an emulator, tools).
    pub async fn with_credentials(
        config: AwsConfig,
        floating_ips: Vec<FloatingIp>,
        elastic_ips: Vec<ElasticIp>,
        routes: Vec<RouteSpec>,
        credentials: Credentials,
    ) -> Result<Self, ProviderError> {
        Self::build(config, floating_ips, elastic_ips, routes, Some(credentials)).await
    }

    async fn build(
        config: AwsConfig,
        floating_ips: Vec<FloatingIp>,
        elastic_ips: Vec<ElasticIp>,
        routes: Vec<RouteSpec>,
        credentials: Option<Credentials>,
    ) -> Result<Self, ProviderError> {
        config::validate(&config, &floating_ips, &elastic_ips, &routes)?;
        let budget = Budget::new(DISCOVERY_DEADLINE);
        let imds = imds::client(config.imds_endpoint.as_deref())?;
        let needs_imds = config.region.is_none() || config.own_eni.is_none();
        let metadata_disabled = metadata_disabled_by_env();
        if needs_imds && metadata_disabled {
            return Err(ProviderError::Permanent {
                operation: "imds".to_string(),
                message: "AWS_EC2_METADATA_DISABLED is true, and the config leaves the region or own ENI to IMDS".to_string(),
                fix: "set provider.aws.region and provider.aws.own_eni, or unset AWS_EC2_METADATA_DISABLED".to_string(),
            });
        }
        let watch_maintenance = watches_maintenance(
            &config,
            std::env::var_os("AWS_EC2_METADATA_SERVICE_ENDPOINT").is_some(),
            metadata_disabled,
        );
        if !watch_maintenance {
            tracing::info!("scheduled maintenance is not watched: region and own_eni are configured and no imds_endpoint; set provider.aws.imds_endpoint = \"http://169.254.169.254\" on EC2 to watch it");
        }
        let instance_id = if needs_imds {
            Some(
                budget
                    .run("imds instance-id", imds::instance_id(&imds))
                    .await?,
            )
        } else {
            None
        };
        let region = match &config.region {
            Some(region) => region.clone(),
            None => budget.run("imds region", imds::region(&imds)).await?,
        };
        let credentials = match credentials {
            Some(c) => SharedCredentialsProvider::new(c),
            None => client::default_credentials(imds.clone(), &region).await,
        };
        let client = client::build_client(&config, &region, credentials.clone()).await;
        let mut provider = Self {
            config: config.clone(),
            client,
            credentials,
            identity: Identity {
                instance_id,
                region,
                own_eni: config.own_eni.clone().unwrap_or_default(),
                peer_eni: config.peer_eni.clone(),
            },
            floating_ips,
            elastic_ips,
            routes,
            policy: RetryPolicy::default(),
            associations: Mutex::new(BTreeMap::new()),
            maintenance_imds: watch_maintenance.then(|| imds.clone()),
            maintenance_problem: Mutex::new(None),
            eni_checked: Mutex::new(None),
        };
        if config.own_eni.is_none() {
            let own = budget
                .run("imds network/interfaces", provider.discover_own_eni(&imds))
                .await?;
            provider.identity.own_eni = own;
        }
        if provider.identity.own_eni == provider.identity.peer_eni {
            return Err(ProviderError::Permanent {
                operation: "imds network/interfaces".to_string(),
                message: format!(
                    "this instance's ENI is {}, the configured peer_eni",
                    provider.identity.peer_eni
                ),
                fix: "set provider.aws.peer_eni to the other node's ENI".to_string(),
            });
        }
        tracing::info!(identity = ?provider.identity, "AWS provider ready");
        Ok(provider)
    }

    /// This node's ENI from IMDS: the only one, or the one in the peer ENI's subnet.
    async fn discover_own_eni(
        &self,
        imds: &aws_config::imds::Client,
    ) -> Result<String, ProviderError> {
        let interfaces = imds::interfaces(imds).await?;
        let peer_subnet = if interfaces.len() > 1 {
            let progress = ProgressReporter::discard();
            let calls = self.check_calls(&progress);
            let peer = describe::eni(&calls, &self.identity.peer_eni).await?;
            peer.subnet
        } else {
            None
        };
        imds::pick_own_eni(&interfaces, peer_subnet.as_deref())
    }

    /// Use `policy` for the EC2 calls of takeovers (checks keep fewer attempts).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Who this node is: region, own and peer ENI, instance id when IMDS was asked.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether EC2's source/destination check is on for this node's ENI. It must be off on an
    /// appliance, which forwards traffic addressed to others: the daemon warns in status if not.
    pub async fn source_dest_check_enabled(&self) -> Result<bool, ProviderError> {
        let progress = ProgressReporter::discard();
        let calls = self.check_calls(&progress);
        let eni = describe::eni(&calls, &self.identity.own_eni).await?;
        // EC2 always reports it; if it ever did not, assume the default, which is on.
        Ok(eni.source_dest_check.unwrap_or(true))
    }

    fn pair(&self) -> Pair<'_> {
        Pair {
            own: &self.identity.own_eni,
            peer: &self.identity.peer_eni,
        }
    }

    fn check_calls<'a>(&'a self, progress: &'a ProgressReporter) -> Calls<'a> {
        let policy = RetryPolicy {
            max_attempts: self.policy.max_attempts.min(CHECK_MAX_ATTEMPTS),
            ..self.policy
        };
        Calls::new(&self.client, policy, Budget::new(CHECK_DEADLINE), progress)
    }

    async fn take_over_inner(&self, calls: &Calls<'_>) -> Result<bool, ProviderError> {
        let pair = self.pair();
        let addresses = async {
            let moved = takeover::move_addresses(calls, pair, &self.floating_ips).await?;
            // After the addresses: EC2 associates an Elastic IP only with a private IP the ENI has.
            let associated =
                takeover::move_elastic_ips(calls, pair, &self.elastic_ips, &self.associations)
                    .await?;
            Ok::<bool, ProviderError>(moved || associated)
        };
        let routes = routes::move_routes(calls, pair, &self.routes);
        // Routes do not wait for the addresses: in AWS they target the ENI, not an IP.
        let (addresses, routes) = tokio::join!(addresses, routes);
        Ok(addresses? | routes?)
    }

    /// Remember why maintenance notices are unknown (`Some`), or that they are known again.
    fn set_maintenance_problem(&self, problem: Option<String>) {
        if let Ok(mut slot) = self.maintenance_problem.lock() {
            if let Some(text) = &problem {
                // Once per distinct problem, not at every poll.
                if slot.as_deref() != Some(text.as_str()) {
                    tracing::warn!("{text}");
                }
            }
            *slot = problem;
        }
    }

    /// One optional IMDS document, parsed; no answer counts as none (and is remembered).
    async fn maintenance_document<T: Default>(
        &self,
        client: &aws_config::imds::Client,
        path: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        problems: &mut Vec<String>,
    ) -> Result<T, ProviderError> {
        let transient = |message: String| ProviderError::Transient {
            operation: format!("imds {path}"),
            message,
            retry_after: None,
        };
        match imds::get_optional(client, path).await {
            Ok(Some(body)) => parse(&body).map_err(transient),
            Ok(None) => Ok(T::default()),
            Err(imds::OptionalReadError::NoAnswer(message)) => {
                problems.push(format!("{message}; no maintenance assumed"));
                Ok(T::default())
            }
            Err(imds::OptionalReadError::BadAnswer(message)) => Err(transient(message)),
        }
    }

    /// Resolve credentials once, to tell "no credentials" from "no permission".
    async fn check_credentials(&self) -> Result<(), ProviderError> {
        let budget = Budget::new(CHECK_DEADLINE);
        budget
            .run("credentials", async {
                self.credentials
                    .provide_credentials()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify("credentials", &Failure::from_credentials(&e)).error)
            })
            .await
    }
}

/// Whether maintenance notices are read from IMDS: only where IMDS is known to be in use, i.e.
/// it serves discovery (region or own ENI left out), or the operator pointed at it
/// (`imds_endpoint`, or `AWS_EC2_METADATA_SERVICE_ENDPOINT`). Outside EC2 (moto, a lab) the
/// link-local address is left alone.
fn watches_maintenance(
    config: &AwsConfig,
    endpoint_in_environment: bool,
    metadata_disabled: bool,
) -> bool {
    !metadata_disabled && uses_imds(config, endpoint_in_environment)
}

/// Whether this configuration reads IMDS at all (to discover what it leaves out, or because it
/// names an IMDS endpoint).
pub fn uses_imds(config: &AwsConfig, endpoint_in_environment: bool) -> bool {
    config.region.is_none()
        || config.own_eni.is_none()
        || config.imds_endpoint.is_some()
        || endpoint_in_environment
}

#[async_trait::async_trait]
impl Provider for AwsProvider {
    fn kind(&self) -> &'static str {
        "aws"
    }

    async fn prove_failover(&self) -> Vec<cloudha_provider_core::Check> {
        selftest::prove(self).await
    }

    async fn take_over(
        &self,
        request: &TakeoverRequest,
        progress: &ProgressReporter,
    ) -> Result<TakeoverReport, ProviderError> {
        let calls = Calls::new(
            &self.client,
            self.policy,
            Budget::new(request.deadline),
            progress,
        );
        let changed = calls
            .budget
            .run("takeover", self.take_over_inner(&calls))
            .await?;
        Ok(TakeoverReport {
            api_calls: calls.counts(),
            changed,
        })
    }

    async fn release(&self, _progress: &ProgressReporter) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn observe(&self) -> Result<Observation, ProviderError> {
        let progress = ProgressReporter::discard();
        let calls = self.check_calls(&progress);
        let pair = self.pair();
        let allocation_ids: Vec<&str> = self
            .elastic_ips
            .iter()
            .map(|e| e.allocation_id.as_str())
            .collect();
        let tables: Vec<&str> = routes::by_table(&self.routes).into_keys().collect();
        let (enis, associations, tables) = tokio::join!(
            async {
                if self.floating_ips.is_empty() {
                    Ok(describe::Enis::default())
                } else {
                    describe::enis(&calls, pair.own, pair.peer).await
                }
            },
            describe::associations(&calls, &allocation_ids),
            describe::route_tables(&calls, &tables),
        );
        let (enis, associations, tables) = (enis?, associations?, tables?);
        let mut resources = Vec::new();
        for fip in &self.floating_ips {
            resources.push(ObservedResource {
                resource: format!("ip {}", fip.address),
                holder: observe::ip_holder(fip.address, &enis),
                held_by: None,
            });
        }
        for eip in &self.elastic_ips {
            let ours = takeover::our_association(&self.associations, &eip.allocation_id);
            resources.push(ObservedResource {
                resource: format!("eip {} ({})", eip.allocation_id, eip.private_ip),
                holder: observe::eip_holder(
                    associations.get(&eip.allocation_id),
                    pair.own,
                    pair.peer,
                    eip.private_ip,
                    ours.as_deref(),
                ),
                held_by: None,
            });
        }
        for route in &self.routes {
            let target = tables.get(&route.table).and_then(|t| t.get(&route.prefix));
            resources.push(ObservedResource {
                resource: format!("route {}", routes::label(route)),
                holder: observe::route_holder(target, pair.own, pair.peer),
                held_by: None,
            });
        }
        let mut warnings = Vec::new();
        if let Some(problem) = self.maintenance_problem.lock().ok().and_then(|p| p.clone()) {
            warnings.push(problem);
        }
        if self.source_dest_check_enabled().await.unwrap_or(false) {
            warnings.push(format!(
                "source/destination check is on for {}: EC2 drops traffic the appliance forwards; turn it off (aws ec2 modify-network-interface-attribute --network-interface-id {} --no-source-dest-check)",
                self.identity.own_eni, self.identity.own_eni
            ));
        }
        Ok(Observation {
            resources,
            warnings,
            // EC2 applies an assignment within the call: there is no update in flight to see.
            writes_in_flight: Vec::new(),
        })
    }

    async fn health(&self) -> Result<(), ProviderError> {
        self.check_credentials().await?;
        let last = self.eni_checked.lock().ok().and_then(|c| *c);
        if last.is_some_and(|c| c.at.elapsed() < ENI_RECHECK) {
            return Ok(());
        }
        let progress = ProgressReporter::discard();
        let calls = self.check_calls(&progress);
        let eni = describe::eni(&calls, &self.identity.own_eni).await?;
        if let (Some(attached), Some(me)) = (&eni.instance, &self.identity.instance_id) {
            if attached != me {
                return Err(ProviderError::Permanent {
                    operation: "DescribeNetworkInterfaces".to_string(),
                    message: format!(
                        "own ENI {} is attached to {attached}, not to this instance {me}",
                        self.identity.own_eni
                    ),
                    fix: "set provider.aws.own_eni to an ENI of this instance".to_string(),
                });
            }
        }
        // Said once when found on (and again if it was turned off and back on), not every check.
        let was = last.and_then(|c| c.source_dest_check);
        if eni.source_dest_check != Some(false) && was != eni.source_dest_check {
            tracing::warn!(eni = %self.identity.own_eni, "source/destination check is on: forwarded traffic will be dropped");
        }
        if let Ok(mut slot) = self.eni_checked.lock() {
            *slot = Some(EniChecked {
                at: std::time::Instant::now(),
                source_dest_check: eni.source_dest_check,
            });
        }
        Ok(())
    }

    async fn scheduled_maintenance(&self) -> Result<Vec<Maintenance>, ProviderError> {
        let Some(client) = &self.maintenance_imds else {
            return Ok(Vec::new());
        };
        let now = now_unix_ms();
        let mut problems = Vec::new();
        let result = async {
            let spot = self
                .maintenance_document(
                    client,
                    maintenance::SPOT_PATH,
                    |body| maintenance::parse_spot(body, now),
                    &mut problems,
                )
                .await?;
            let scheduled = self
                .maintenance_document(
                    client,
                    maintenance::SCHEDULED_PATH,
                    |body| maintenance::parse_scheduled(body, now),
                    &mut problems,
                )
                .await?;
            Ok(spot.into_iter().chain(scheduled).collect())
        }
        .await;
        match &result {
            Err(e) => self.set_maintenance_problem(Some(format!("maintenance notices: {e}"))),
            Ok(_) if problems.is_empty() => self.set_maintenance_problem(None),
            Ok(_) => self.set_maintenance_problem(Some(problems.join("; "))),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_is_watched_only_where_imds_is_in_use() {
        let named = AwsConfig {
            region: Some("eu-west-1".into()),
            own_eni: Some("eni-0a".into()),
            peer_eni: "eni-0b".into(),
            ..AwsConfig::default()
        };
        assert!(
            !watches_maintenance(&named, false, false),
            "moto, a lab: no IMDS"
        );
        assert!(watches_maintenance(&named, true, false));
        assert!(
            !watches_maintenance(&named, true, true),
            "AWS_EC2_METADATA_DISABLED wins over an endpoint"
        );
        let pointed = AwsConfig {
            imds_endpoint: Some("http://169.254.169.254".into()),
            ..named.clone()
        };
        assert!(watches_maintenance(&pointed, false, false));
        assert!(!watches_maintenance(&pointed, false, true));
        let discovered = AwsConfig {
            own_eni: None,
            ..named
        };
        assert!(watches_maintenance(&discovered, false, false));
    }
}
