//! Builds the configured provider. The only place that knows every provider crate.

use std::sync::Arc;

use cloudha_provider_core::Provider;
use cloudha_provider_local::LocalProvider;

use crate::config::{Config, ProviderKind};

/// The provider the config asks for, or the field to fix.
pub fn build(config: &Config) -> Result<Arc<dyn Provider>, String> {
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
    }
}
