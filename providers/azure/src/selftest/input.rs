//! Owns what the self-test is given ([`Input`]) and the warning its checks share when a failure
//! above leaves the rest unprovable.

use std::sync::Arc;

use cloudha_provider_core::{Check, RouteSpec};

use crate::config::{AzureConfig, FloatingIpConfig};
use crate::TokenSource;

/// What the self-test needs: the same settings the daemon uses.
pub struct Input {
    pub config: AzureConfig,
    pub floating: Vec<FloatingIpConfig>,
    pub routes: Vec<RouteSpec>,
    pub token: Arc<TokenSource>,
}

pub(super) fn skipped(what: &str) -> Check {
    Check::warn(
        "skipped",
        format!("the remaining cloud checks need {what}, which failed above"),
        "fix the failure above and run the self-test again",
    )
}
