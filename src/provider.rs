//! Builds the configured provider. The only place that knows every provider crate.

use std::sync::Arc;

use cloudha_provider_aws::AwsProvider;
use cloudha_provider_azure::{AzureProvider, TokenSource};
use cloudha_provider_core::{
    Observation, ProgressReporter, Provider, ProviderError, TakeoverReport, TakeoverRequest,
};
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
            let missing = missing_capabilities(&proc_status(), LOCAL_CAPABILITIES);
            if !missing.is_empty() {
                return Err(format!(
                    "provider.local: the daemon lacks {} (it adds the floating address over netlink and sends gratuitous ARP); under systemd install deploy/cloudha-local.conf as /etc/systemd/system/cloudha.service.d/local.conf and `systemctl daemon-reload`, or run it as root",
                    missing.join(" and ")
                ));
            }
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
        ProviderKind::None => Ok(Arc::new(NothingToMove)),
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

/// `provider.kind = "none"`: pairs behind a load balancer, where the health probe alone moves
/// the traffic. A takeover converges at once, having nothing to do; nothing is observed, so
/// reconcile never finds drift.
struct NothingToMove;

#[async_trait::async_trait]
impl Provider for NothingToMove {
    fn kind(&self) -> &'static str {
        "none"
    }

    async fn take_over(
        &self,
        _request: &TakeoverRequest,
        _progress: &ProgressReporter,
    ) -> Result<TakeoverReport, ProviderError> {
        Ok(TakeoverReport::default())
    }

    async fn release(&self, _progress: &ProgressReporter) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn observe(&self) -> Result<Observation, ProviderError> {
        Ok(Observation::default())
    }

    async fn health(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// What the local provider needs: `CAP_NET_ADMIN` (12) to change addresses, `CAP_NET_RAW` (13)
/// for the gratuitous ARP packet socket. The shipped unit grants neither (the cloud providers
/// need none); without them every takeover would fail, so the daemon refuses to start instead.
const LOCAL_CAPABILITIES: &[(&str, u32)] = &[("CAP_NET_ADMIN", 12), ("CAP_NET_RAW", 13)];

fn proc_status() -> String {
    std::fs::read_to_string("/proc/self/status").unwrap_or_default()
}

/// The names in `wanted` whose bit is clear in the `CapEff:` line of a `/proc/<pid>/status`
/// text; none when the line is missing or unreadable (nothing is known, nothing is refused).
fn missing_capabilities<'a>(status: &str, wanted: &[(&'a str, u32)]) -> Vec<&'a str> {
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    let Some(effective) = effective else {
        return Vec::new();
    };
    wanted
        .iter()
        .filter(|(_, bit)| effective & (1u64 << bit) == 0)
        .map(|(name, _)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_read_from_cap_eff() {
        let root = "Name:\tcloudha\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert!(missing_capabilities(root, LOCAL_CAPABILITIES).is_empty());
        let none = "CapEff:\t0000000000000000\n";
        assert_eq!(
            missing_capabilities(none, LOCAL_CAPABILITIES),
            ["CAP_NET_ADMIN", "CAP_NET_RAW"]
        );
        // CAP_NET_ADMIN only (bit 12 = 0x1000).
        let admin = "CapEff:\t0000000000001000\n";
        assert_eq!(
            missing_capabilities(admin, LOCAL_CAPABILITIES),
            ["CAP_NET_RAW"]
        );
        assert!(missing_capabilities("", LOCAL_CAPABILITIES).is_empty());
        // This process, run as root by the tests, has both.
        if nix::unistd::geteuid().is_root() {
            assert!(missing_capabilities(&proc_status(), LOCAL_CAPABILITIES).is_empty());
        }
    }
}
