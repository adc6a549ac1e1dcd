//! The single integration-test binary: every suite shares one build.

mod bench;
mod cli;
mod e2e_azure;
mod e2e_local;
mod fsm_properties;
mod fuzz_seeds;
mod golden;
mod netns;
mod netns_selftest;
