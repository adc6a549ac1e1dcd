//! The Azure provider against the ARM/IMDS emulator: real HTTP, real JSON, real ETags and
//! long-running operations; only the cloud is emulated.

mod discovery;
mod faults;
mod harness;
mod maintenance;
mod move_whole;
mod selftest;
mod takeover;
