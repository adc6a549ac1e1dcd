//! The test harness: a real moto server, a fault-injecting proxy in front of it, a fake IMDS,
//! and the two-node setup the tests start from.

pub mod imds;
pub mod moto;
pub mod proxy;
pub mod world;
