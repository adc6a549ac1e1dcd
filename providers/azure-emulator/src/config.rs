//! Behaviour knobs of the emulator: propagation delays, conflict style, throttling limits.
//!
//! Every knob can be set from the scenario file (`[settings]`) and changed at run time
//! through [`crate::Emulator`] setters, so one test can exercise both styles of a
//! behaviour the real service is known to show.

use serde::{Deserialize, Serialize};

/// How a write is answered while another operation is still running on the same resource.
///
/// The Network resource provider has answered both ways over the years (see
/// shared/CLOUD-API.md and public issue threads): a 409 `AnotherOperationInProgress`
/// naming the running operation's status URL, or a 429 `RetryableError` whose detail is
/// `RetryableErrorDueToAnotherOperation` with a `Retry-After`. Clients must handle both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictMode {
    /// 409 Conflict, code `AnotherOperationInProgress`.
    AnotherOperationInProgress,
    /// 429 Too Many Requests, code `RetryableError`, detail `RetryableErrorDueToAnotherOperation`.
    RetryableError,
}

/// Whether `virtualNetworks/{vnet}/moveIpConfigurations` is available.
///
/// The action is new in api-version 2025-09-01 and gated by the subscription feature
/// `Microsoft.Network/AllowMoveIpConfigurations`; a client must fall back to the
/// two-step NIC PUT move when it is not registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveIpMode {
    /// The action works.
    Enabled,
    /// 400 `SubscriptionNotRegisteredForFeature`, as for other gated Network features.
    FeatureNotRegistered,
}

/// A preset for how the emulator paces its clients.
///
/// The Network resource provider answers every accepted NIC write, and every poll of its
/// operation while it runs, with `Retry-After: 10` in practice (field reports collected in
/// shared/CLOUD-API.md; the number is not documented). The official SDKs honour it, so a
/// client waits 10 s between polls; this preset shows what a failover really costs. The
/// tests' scenarios use `custom` with a 1 s `lro_retry_after_secs` to stay fast.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingProfile {
    /// Every knob as set.
    #[default]
    Custom,
    /// `Retry-After: 10` on NIC operations (accepted NIC PUTs and moveIpConfigurations POSTs,
    /// their status and result polls while running, and the `RetryableError` answer to a
    /// write on a busy NIC), whatever `lro_retry_after_secs` / `conflict_retry_after_secs`
    /// say. Route operations keep `lro_retry_after_secs`.
    NetworkRp,
}

impl TimingProfile {
    /// The `Retry-After` the Network RP sends on NIC operations.
    pub const NETWORK_RP_RETRY_AFTER_SECS: u64 = 10;
}

/// Token-bucket limits applied per subscription (ARM's documented defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleLimits {
    /// Bucket size for writes (PUT/POST/PATCH/DELETE).
    pub write_burst: u32,
    /// Write tokens added per second.
    pub write_refill_per_sec: f64,
    /// Bucket size for reads (GET/HEAD).
    pub read_burst: u32,
    /// Read tokens added per second.
    pub read_refill_per_sec: f64,
}

impl Default for ThrottleLimits {
    /// ARM's per-subscription bucket: 250 reads refilling 25/s, 200 writes refilling 10/s.
    fn default() -> Self {
        Self {
            write_burst: 200,
            write_refill_per_sec: 10.0,
            read_burst: 250,
            read_refill_per_sec: 25.0,
        }
    }
}

/// All run-time behaviour settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Time from an accepted NIC PUT until its change is in effect (ms).
    pub nic_propagation_ms: u64,
    /// Time from an accepted route PUT until its change is in effect (ms).
    pub route_propagation_ms: u64,
    /// Time from an accepted moveIpConfigurations POST until it is in effect (ms).
    pub move_propagation_ms: u64,
    /// `Retry-After` (seconds) sent with accepted LROs and in-progress status polls.
    /// The real Network RP sends 10.
    pub lro_retry_after_secs: u64,
    /// Pacing preset; `network_rp` overrides the `Retry-After` of NIC operations.
    pub timing_profile: TimingProfile,
    /// How a write on a busy resource is refused.
    pub conflict_mode: ConflictMode,
    /// `Retry-After` (seconds) sent with a `RetryableError` conflict.
    pub conflict_retry_after_secs: u64,
    /// Availability of the atomic moveIpConfigurations action.
    pub move_ip_configurations: MoveIpMode,
    /// Error code when a requested private IP is held, settled, by another NIC. Public
    /// reports show `PrivateIPAddressIsAllocated` for this case; a hold that is still in
    /// flight (its owner's update is propagating) is always `PrivateIPAddressInUse`.
    pub settled_ip_conflict_code: String,
    /// Lifetime of issued access tokens (seconds). IMDS issues ~24 h tokens.
    pub token_lifetime_secs: u64,
    /// Per-subscription rate limits.
    pub throttle: ThrottleLimits,
    /// VM whose IMDS answers un-prefixed `/metadata/...` requests on the main listener.
    pub default_imds_vm: Option<String>,
    /// Time a started scheduled event stays in the IMDS document before it completes and is
    /// removed (ms). The docs' rough guideline is ten minutes.
    pub scheduled_event_impact_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            nic_propagation_ms: 2000,
            route_propagation_ms: 1000,
            move_propagation_ms: 2000,
            lro_retry_after_secs: 10,
            timing_profile: TimingProfile::Custom,
            conflict_mode: ConflictMode::AnotherOperationInProgress,
            conflict_retry_after_secs: 10,
            move_ip_configurations: MoveIpMode::Enabled,
            settled_ip_conflict_code: "PrivateIPAddressIsAllocated".to_string(),
            token_lifetime_secs: 86_399,
            throttle: ThrottleLimits::default(),
            default_imds_vm: None,
            scheduled_event_impact_ms: 600_000,
        }
    }
}

impl Settings {
    /// `Retry-After` (seconds) for an answer about an operation on NICs (`nic = true`) or on
    /// a route.
    pub fn lro_retry_after(&self, nic: bool) -> u64 {
        match self.timing_profile {
            TimingProfile::NetworkRp if nic => TimingProfile::NETWORK_RP_RETRY_AFTER_SECS,
            _ => self.lro_retry_after_secs,
        }
    }

    /// `Retry-After` (seconds) for a `RetryableError` refusal of a write on a busy NIC
    /// (`nic = true`) or route table.
    pub fn conflict_retry_after(&self, nic: bool) -> u64 {
        match self.timing_profile {
            TimingProfile::NetworkRp if nic => TimingProfile::NETWORK_RP_RETRY_AFTER_SECS,
            _ => self.conflict_retry_after_secs,
        }
    }
}
