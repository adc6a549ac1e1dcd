//! The one place the EC2 client and the credentials chain are built.

use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::imds;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_ec2::config::{Region, SharedCredentialsProvider};

use crate::config::AwsConfig;

/// A TCP connect to EC2 that takes longer than this is retried on a fresh connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The production credentials: the SDK's default chain (environment, profile, web identity,
/// container, then the instance role through IMDSv2), with IMDS reached through `imds`, so
/// `provider.aws.imds_endpoint` applies to credentials as well as to discovery.
pub(crate) async fn default_credentials(
    imds: imds::Client,
    region: &str,
) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(
        DefaultCredentialsChain::builder()
            .region(Region::new(region.to_string()))
            .imds_client(imds)
            .build()
            .await,
    )
}

/// The EC2 client for `region`.
///
/// The endpoint is `provider.aws.endpoint` when set; otherwise the SDK applies its standard
/// `AWS_ENDPOINT_URL_EC2` / `AWS_ENDPOINT_URL` variables, else the region's public endpoint.
/// Retries are off here because [`crate::call::Calls`] does them under the takeover deadline.
pub(crate) async fn build_client(
    config: &AwsConfig,
    region: &str,
    credentials: SharedCredentialsProvider,
) -> aws_sdk_ec2::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        // Both given, so the loader never runs its own region and credentials chains (which
        // would reach for IMDS at its default address).
        .region(Region::new(region.to_string()))
        .credentials_provider(credentials)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        );
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    aws_sdk_ec2::Client::new(&loader.load().await)
}
