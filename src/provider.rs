//! Builds the configured provider. The only place that knows every provider crate.

use std::sync::Arc;

use cloudha_provider_aws::AwsProvider;
use cloudha_provider_azure::{AzureProvider, TokenSource};
use cloudha_provider_core::Provider;
use cloudha_provider_local::LocalProvider;

use crate::config::{Config, ProviderKind};

/// The provider the config asks for, or the field to fix. Runs inside the tokio runtime: the
/// Azure provider starts renewing its token in the background, the AWS provider discovers
/// through IMDSv2 what the config leaves out.
pub async fn build(config: &Config) -> Result<Arc<dyn Provider>, String> {
    match config.provider.kind {
        ProviderKind::Local => {
            let local = config.provider.local.as_ref().ok_or_else(|| {
                "provider.local: kind = \"local\" needs a [provider.local] table".to_string()
            })?;
            Ok(Arc::new(LocalProvider::new(
                local.interface.clone(),
                config.floating_ips(),
            )))
        }
        ProviderKind::Azure => {
            let azure = config.provider.azure.as_ref().ok_or_else(|| {
                "provider.azure: kind = \"azure\" needs a [provider.azure] table".to_string()
            })?;
            let token = TokenSource::managed_identity(
                &azure.token_resource,
                azure.identity_client_id.as_deref(),
            )
            .map_err(|e| format!("provider.azure: {e}"))?;
            let provider = AzureProvider::new(
                azure.clone(),
                config.azure_floating_ips(),
                config.route_specs(),
                Arc::new(token),
            )?
            .with_state_dir(&config.node.state_dir)?;
            provider.start_token_renewal();
            Ok(Arc::new(provider))
        }
        ProviderKind::Aws => {
            let aws = config.provider.aws.as_ref().ok_or_else(|| {
                "provider.aws: kind = \"aws\" needs a [provider.aws] table".to_string()
            })?;
            let provider = AwsProvider::new(
                aws.clone(),
                config.floating_ips(),
                config.aws_elastic_ips(),
                config.route_specs(),
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(Arc::new(provider))
        }
    }
}
