//! Owns which endpoints the self-test talks to: EC2, STS and IAM, from the config, the
//! `AWS_ENDPOINT_URL*` variables or the public defaults (and the warning when none may be assumed).

use crate::config::AwsConfig;
use crate::simulation::DEFAULT_IAM_ENDPOINT;

pub(super) fn sts_endpoint(config: &AwsConfig, region: &str) -> Option<String> {
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

pub(super) fn ec2_endpoint(config: &AwsConfig, region: &str) -> String {
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
pub(super) fn iam_endpoint(config: &AwsConfig) -> Option<String> {
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

pub(super) const NO_IAM_ENDPOINT: &str =
    "provider.aws.endpoint is set and no IAM/STS endpoint is: the public ones are not contacted";
pub(super) const NO_IAM_ENDPOINT_FIX: &str =
    "set provider.aws.iam_endpoint (it serves IAM and STS) to prove these";
