//! Owns the checks before any ARM read: the metadata service (this VM), the managed-identity
//! token, and name resolution and TLS to ARM (through the proxy when one applies).

use cloudha_provider_core::check::{proxy_for, resolve};
use cloudha_provider_core::Check;

use crate::config::AzureConfig;
use crate::{imds, TokenSource};

const IDENTITY_FIX: &str = "assign a managed identity to this VM (az vm identity assign), set provider.azure.identity_client_id for a user-assigned one, and check in the resource group's Access control (IAM) that a role assignment gives it the cloudha role";

pub(super) async fn check_imds(
    config: &AzureConfig,
    out: &mut Vec<Check>,
) -> Option<imds::Instance> {
    match imds::instance(&config.imds_endpoint).await {
        Ok(i) => {
            out.push(Check::pass(
                "metadata_service",
                format!(
                    "{} answered: VM {} in resource group {}, subscription {}, {}",
                    config.imds_endpoint, i.vm_name, i.resource_group, i.subscription, i.location
                ),
            ));
            Some(i)
        }
        Err(e) => {
            out.push(Check::fail(
                "metadata_service",
                e,
                "run on an Azure VM and allow 169.254.169.254 (never through a proxy) in the host firewall",
            ));
            None
        }
    }
}

pub(super) async fn check_token(token: &TokenSource, out: &mut Vec<Check>) -> bool {
    match token.token().await {
        Ok(_) => {
            let left = token
                .remaining()
                .await
                .map(|d| format!(", valid for {} min", d.as_secs() / 60))
                .unwrap_or_default();
            out.push(Check::pass(
                "identity",
                format!("managed identity token for ARM obtained{left}"),
            ));
            true
        }
        Err(e) => {
            out.push(Check::fail("identity", e.to_string(), IDENTITY_FIX));
            false
        }
    }
}

/// Name resolution and a TLS connection to ARM (through the proxy when one applies).
pub(super) async fn check_api(endpoint: &str, out: &mut Vec<Check>) -> bool {
    let proxy = proxy_for(endpoint);
    // Through a proxy, the proxy resolves the name.
    if proxy.is_none() {
        if let Err(e) = resolve(endpoint).await {
            out.push(Check::fail(
                "dns",
                e,
                "fix name resolution (/etc/resolv.conf, the VNet's DNS servers), or set HTTPS_PROXY",
            ));
            return false;
        }
    }
    // Any answer proves name resolution, the connection and TLS; 401 without a token is expected.
    let client = match reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail(
                "cloud_api",
                format!("building the HTTP client: {e}"),
                "report this as a bug",
            ));
            return false;
        }
    };
    let via = match &proxy {
        Some(p) => format!(" through proxy {p}"),
        None => " directly".to_string(),
    };
    match client.get(endpoint).send().await {
        Ok(r) => {
            out.push(Check::pass(
                "cloud_api",
                format!(
                    "{endpoint} reached{via} (name resolved, connection and TLS up; HTTP {})",
                    r.status().as_u16()
                ),
            ));
            true
        }
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            out.push(Check::fail(
                "cloud_api",
                format!("{endpoint} not reachable{via}: {message}"),
                "allow outbound HTTPS to the management endpoint (NSG, firewall), or set HTTPS_PROXY (and NO_PROXY for 169.254.169.254)",
            ));
            false
        }
    }
}
