//! Owns what the self-test is given ([`Input`]), the instance role it finds ([`Role`]), and the
//! text its checks share (the role fix, the "skipped" warning).

use cloudha_provider_core::{Check, FloatingIp, RouteSpec};

use crate::config::{AwsConfig, ElasticIp};
use crate::Credentials;

pub(super) const ROLE_FIX: &str = "attach an instance profile to this instance whose IAM role has the cloudha policy (deploy/aws), and check in IAM that the role's policies allow the failover's actions";

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

pub(super) fn skipped(what: &str) -> Check {
    Check::warn(
        "skipped",
        format!("the remaining cloud checks need {what}, which failed above"),
        "fix the failure above and run the self-test again",
    )
}
