//! Integration tests of the AWS provider against a real moto server on loopback, with a
//! fault-injecting proxy in front of it and, for discovery, a fake IMDS.

mod checks;
mod common;
mod discovery;
mod errors;
mod faults;
mod maintenance;
mod routes;
mod selftest;
mod takeover;
