//! The single integration-test binary: every suite shares one build.

// The AWS provider's own harness (moto server, fault proxy, fake IMDS, VPC setup), shared with
// the end-to-end tests here; not every helper is used from this binary.
#[allow(dead_code)]
#[path = "../../providers/aws/tests/all/common/mod.rs"]
mod aws_harness;
mod bench;
mod campaign;
mod cli;
mod deploy_kit;
mod e2e_aws;
mod e2e_azure;
mod e2e_azure_outage;
mod e2e_freshness;
mod e2e_health;
mod e2e_lb;
mod e2e_local;
mod e2e_ops;
mod fsm_properties;
mod fuzz_seeds;
mod golden;
mod monitoring;
mod netns;
mod netns_selftest;
mod package_deb;
mod setup_scripts;
