//! `cloudha selftest`: on a healthy pair, find every setting that would make a failover die
//! halfway (a missing permission, a NIC setting, an unreachable API), before the primary fails.
//!
//! It runs next to the daemon with the same config and changes nothing: it does not bind the
//! keepalive port (peer facts come from the running daemon's control socket) and the cloud
//! checks only read, list permissions, send `DryRun` requests or simulate policies.
//!
//! - [`common`]: the config, the key file, the daemon's other files, the peer (through the
//!   daemon's status).
//! - [`report`]: rendering as text or JSON, and the exit code.
//! - The cloud checks live in the provider crates (`selftest` modules), returning [`Check`]s.

pub mod common;
pub mod report;

use std::path::Path;
use std::sync::Arc;

use cloudha_provider_core::Check;

use crate::config::{Config, ProviderKind};

pub use report::Report;

/// Run every check for the node configured in `path`. `Err` is a config that cannot be used at
/// all (exit code 2); everything else is a check in the report.
pub async fn run(path: &Path) -> Result<Report, String> {
    let started = std::time::Instant::now();
    let config = common::load_config(path)?;
    let mut checks = vec![common::config_check(path, &config)];
    checks.push(common::key_file_check(&config));
    checks.push(common::files_check(&config));
    checks.extend(provider_checks(&config).await);
    checks.extend(common::peer_checks(&config).await);
    Ok(Report {
        node: config.node.name.clone(),
        provider: config.provider.kind.to_string(),
        config: path.display().to_string(),
        checks,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

async fn provider_checks(config: &Config) -> Vec<Check> {
    match config.provider.kind {
        ProviderKind::Local => common::local_checks(config),
        ProviderKind::None => vec![match &config.health_probe {
            Some(p) => Check::pass(
                "provider",
                format!(
                    "provider none: nothing to move in the cloud; the load balancer follows the health probe on {}",
                    p.listen
                ),
            ),
            None => Check::warn(
                "provider",
                "provider none and no [health_probe]: nothing but the hooks follows the role",
                "add [health_probe] listen = \"<LAN address>:<port>\" and point the load balancer's probe at it",
            ),
        }],
        ProviderKind::Azure => {
            let Some(azure) = config.provider.azure.clone() else {
                return vec![missing_table("azure")];
            };
            let token = match cloudha_provider_azure::TokenSource::managed_identity(
                &azure.token_resource,
                azure.identity_client_id.as_deref(),
            ) {
                Ok(t) => Arc::new(t),
                Err(e) => {
                    return vec![Check::fail(
                        "identity",
                        e.to_string(),
                        "check provider.azure.identity_client_id",
                    )]
                }
            };
            let input = cloudha_provider_azure::selftest::Input {
                config: azure,
                floating: config.azure_floating_ips(),
                routes: config.route_specs(),
                token,
            };
            cloudha_provider_azure::selftest::run(&input).await
        }
        ProviderKind::Aws => {
            let Some(aws) = config.provider.aws.clone() else {
                return vec![missing_table("aws")];
            };
            let input = cloudha_provider_aws::selftest::Input {
                config: aws,
                floating_ips: config.floating_ips(),
                elastic_ips: config.aws_elastic_ips(),
                routes: config.route_specs(),
                credentials: None,
                metadata_disabled: cloudha_provider_aws::metadata_disabled_by_env(),
            };
            cloudha_provider_aws::selftest::run(&input).await
        }
    }
}

fn missing_table(kind: &str) -> Check {
    Check::fail(
        "config",
        format!("provider.kind = \"{kind}\" but there is no [provider.{kind}] table"),
        format!("add a [provider.{kind}] table (see deploy/cloudha.{kind}.example.toml)"),
    )
}
