//! Integration tests: HTTP against the served emulator on 127.0.0.1.

mod arm_strict;
mod auth;
mod common;
mod faults;
mod imds;
mod load_balancer;
mod moveip;
mod nic;
mod routes;
mod scenario;
mod sdk;
mod throttle;
mod validation;
