//! The single integration-test binary: every suite shares one build.

mod cli;
mod deploy_kit;
mod e2e_azure;
mod e2e_local;
mod fsm_properties;
mod golden;
mod netns;
mod netns_selftest;
mod setup_scripts;
