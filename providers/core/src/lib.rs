//! The provider seam of cloudha.
//!
//! A provider moves the pair's shared resources (floating IPs, route next hops, public IPs) to
//! the node it runs on. The daemon never talks to a cloud directly: it holds a
//! `Arc<dyn Provider>` and runs each call in its own task, so a call that takes minutes (an Azure
//! NIC update) never delays keepalives.
//!
//! A takeover is long-running by design. The provider reports what it is doing through a
//! [`ProgressReporter`] (each cloud operation with its start, outcome and API calls), and the
//! daemon turns those reports into `status`, metrics and the event journal. The provider returns
//! only when the cloud state has converged (verified), or when it gives up with an error.

pub mod check;
pub mod durable;
pub mod text;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub mod maintenance;
pub use check::{any_failed, Check, Outcome};
pub use maintenance::Maintenance;

/// A floating IP the active node must own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIp {
    /// The address that follows the active node.
    pub address: Ipv4Addr,
    /// Prefix length of the subnet the address sits in (used by the on-prem provider).
    pub prefix_len: u8,
}

/// Where a route should point once this node is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextHop {
    /// The first floating IP: routes need no update when it moves, but follow the slow NIC path.
    FloatingIp,
    /// This node's own LAN address: applies in seconds, independent of the NIC move.
    SelfAddress,
}

/// A single route in a cloud route table that must point at the active node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Provider-specific id of the route table (an ARM resource id, an AWS `rtb-...`).
    pub table: String,
    /// Route name inside the table (Azure) or a label (AWS).
    pub name: String,
    /// Destination prefix, e.g. `0.0.0.0/0`.
    pub prefix: String,
    /// What the route's next hop should be.
    pub next_hop: NextHop,
}

/// Who holds a resource, as observed in the cloud (or on the local interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    /// This node.
    Me,
    /// The peer node.
    Peer,
    /// Neither node's NIC or interface (an IP between a release and an add, or lost). Not a
    /// claim that nothing holds it: a provider that knows of another holder says
    /// [`Holder::Elsewhere`].
    Nobody,
    /// A NIC or port that is neither node's (named in [`ObservedResource::held_by`]): the
    /// configuration names the wrong peer, or someone else took the address. A takeover cannot
    /// fix it by retrying.
    Elsewhere,
    /// Both nodes at once (an unfinished move, or a provider that keeps it on both).
    Both,
    /// The provider cannot tell (e.g. the on-prem provider does not see the peer's interface).
    Unknown,
}

/// One observed resource and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedResource {
    /// `ip 10.0.0.100` or `route rt-lan/default`.
    pub resource: String,
    /// Who holds it now.
    pub holder: Holder,
    /// With [`Holder::Elsewhere`]: the resource that holds it (an ARM NIC id, a port id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

impl ObservedResource {
    /// `resource` held by `holder` (any holder but [`Holder::Elsewhere`], which names its NIC).
    pub fn new(resource: impl Into<String>, holder: Holder) -> Self {
        Self {
            resource: resource.into(),
            holder,
            held_by: None,
        }
    }

    /// `resource` held by `by`, which is neither node's.
    pub fn elsewhere(resource: impl Into<String>, by: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            holder: Holder::Elsewhere,
            held_by: Some(by.into()),
        }
    }

    /// Where it is, in words: `this node`, `the peer`, `neither node's NIC`, `NIC fw-a-lan
    /// (neither node's)`.
    pub fn where_text(&self) -> String {
        match (self.holder, &self.held_by) {
            (Holder::Me, _) => "this node".into(),
            (Holder::Peer, _) => "the peer".into(),
            (Holder::Both, _) => "both nodes".into(),
            (Holder::Nobody, _) => "neither node".into(),
            (Holder::Elsewhere, Some(by)) => format!("{by} (neither node's)"),
            (Holder::Elsewhere, None) => "a resource that is neither node's".into(),
            (Holder::Unknown, _) => "an unknown node".into(),
        }
    }
}

/// The observed state of every shared resource, for reconcile and `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// Every floating IP and route the configuration names.
    pub resources: Vec<ObservedResource>,
    /// Settings that will hurt a failover, and fallbacks in use (shown in status).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Resources an update is still being applied to (Azure: a NIC in `Updating`), e.g.
    /// `nic fw-a-lan`. Read on a settled active node, whose own writes have all ended, these are
    /// someone else's (the peer's move across a partition): reconcile repairs nothing while any
    /// is listed, since the read may show half of that move.
    #[serde(default)]
    pub writes_in_flight: Vec<String>,
}

impl Observation {
    /// The single holder of everything, if all resources agree.
    pub fn overall_holder(&self) -> Option<Holder> {
        let first = self.resources.first()?.holder;
        self.resources
            .iter()
            .all(|r| r.holder == first)
            .then_some(first)
    }
}

/// Why a provider call failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Throttling, a conflict with another operation, a 5xx, a timeout: try again later.
    #[error("{operation}: {message} (transient, will retry)")]
    Transient {
        /// The operation that failed, e.g. `nic.put`.
        operation: String,
        /// What the provider said.
        message: String,
        /// How long the provider asked us to wait, if it did.
        retry_after: Option<Duration>,
    },
    /// Missing permission, a bad resource id, a malformed request: retrying cannot help.
    #[error("{operation}: {message} (fix: {fix})")]
    Permanent {
        /// The operation that failed.
        operation: String,
        /// What the provider said.
        message: String,
        /// One sentence telling the operator what to change.
        fix: String,
    },
    /// The takeover deadline passed before the cloud state converged.
    #[error("{operation}: deadline of {deadline:?} passed before the change was verified")]
    DeadlineExceeded {
        /// The operation still pending.
        operation: String,
        /// The deadline that passed.
        deadline: Duration,
    },
}

impl ProviderError {
    /// Whether the daemon should schedule another attempt.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ProviderError::Permanent { .. })
    }
}

/// A step of a takeover as reported by the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A cloud operation started (`nic.remove peer-nic`, `route.put rt/default`, `address.add eth1`).
    OperationStarted {
        /// Stable id of the operation within this takeover.
        id: String,
        /// Human description of what it changes.
        description: String,
    },
    /// The operation converged (or failed) after `elapsed_ms`.
    OperationFinished {
        /// The id given at start.
        id: String,
        /// `ok`, or the error text.
        outcome: String,
        /// Time from start to finish.
        elapsed_ms: u64,
    },
    /// A single API request was answered (for call counts by operation and status code).
    ApiCall {
        /// Operation name, e.g. `nic.get`, `AssignPrivateIpAddresses`.
        operation: String,
        /// HTTP status (or 0 for a transport error).
        status: u16,
        /// Whether the request changes cloud state (PUT/POST), for "time to first mutating call".
        #[serde(default)]
        write: bool,
        /// Time from sending the request to its answer.
        #[serde(default)]
        duration_ms: u64,
    },
    /// Free-form progress worth showing an operator (a retry, a wait for propagation).
    Note {
        /// What happened.
        message: String,
    },
}

/// Where a provider sends [`ProgressEvent`]s. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct ProgressReporter {
    tx: Option<mpsc::UnboundedSender<ProgressEvent>>,
}

impl ProgressReporter {
    /// A reporter feeding `tx`.
    pub fn new(tx: mpsc::UnboundedSender<ProgressEvent>) -> Self {
        Self { tx: Some(tx) }
    }

    /// A reporter that drops everything (tools and tests that do not watch progress).
    pub fn discard() -> Self {
        Self { tx: None }
    }

    /// Report one event. A closed receiver is not an error: the takeover goes on regardless.
    pub fn report(&self, event: ProgressEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    /// Start timing an operation; the guard reports its end.
    pub fn operation(&self, id: impl Into<String>, description: impl Into<String>) -> Operation {
        let id = id.into();
        self.report(ProgressEvent::OperationStarted {
            id: id.clone(),
            description: description.into(),
        });
        Operation {
            reporter: self.clone(),
            id,
            started: Instant::now(),
        }
    }

    /// Report one API request and its status code.
    pub fn api_call(&self, operation: impl Into<String>, status: u16) {
        self.api_call_timed(operation, status, false, Duration::ZERO);
    }

    /// Report one API request with whether it writes and how long it took to answer.
    pub fn api_call_timed(
        &self,
        operation: impl Into<String>,
        status: u16,
        write: bool,
        duration: Duration,
    ) {
        self.report(ProgressEvent::ApiCall {
            operation: operation.into(),
            status,
            write,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// Report a free-form note.
    pub fn note(&self, message: impl Into<String>) {
        self.report(ProgressEvent::Note {
            message: message.into(),
        });
    }
}

/// A running operation; call [`Operation::finish`] with its outcome.
#[derive(Debug)]
pub struct Operation {
    reporter: ProgressReporter,
    id: String,
    started: Instant,
}

impl Operation {
    /// Report the outcome (`Ok` or the error) and the elapsed time.
    pub fn finish<T, E: fmt::Display>(self, result: &Result<T, E>) {
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        self.reporter.report(ProgressEvent::OperationFinished {
            id: self.id,
            outcome,
            elapsed_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
    }
}

/// What a takeover call is asked to do.
#[derive(Debug, Clone)]
pub struct TakeoverRequest {
    /// The epoch this takeover claims; providers may tag resources with it.
    pub epoch: u64,
    /// The whole takeover must converge within this time; past it, return `DeadlineExceeded`.
    pub deadline: Duration,
}

/// What a completed takeover did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverReport {
    /// API requests made, by operation name.
    pub api_calls: BTreeMap<String, u32>,
    /// Whether anything had to change (false when this node already held everything).
    pub changed: bool,
}

/// One cloud (or the on-prem L2 mode). Implementations must be idempotent: the daemon calls
/// `take_over` again after a restart, after a failure and on every reconcile that finds drift.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Short name for logs and status (`local`, `azure`, `aws`).
    fn kind(&self) -> &'static str;

    /// Make this node hold every floating IP and route, verify it, and report progress.
    async fn take_over(
        &self,
        request: &TakeoverRequest,
        progress: &ProgressReporter,
    ) -> Result<TakeoverReport, ProviderError>;

    /// Give up what only this node can give up (on-prem: the local address). Cloud providers
    /// release nothing: the peer's takeover moves the resources, and releasing first would leave
    /// a window in which nobody holds them.
    async fn release(&self, progress: &ProgressReporter) -> Result<(), ProviderError>;

    /// Read who holds each resource now, changing nothing.
    async fn observe(&self) -> Result<Observation, ProviderError>;

    /// A cheap check that the provider can work (credentials, interface present).
    async fn health(&self) -> Result<(), ProviderError>;

    /// Prove, changing nothing in the cloud, that a failover in *either* direction would succeed
    /// now: every write permission it needs (on both nodes' NICs or ENIs and every linked
    /// resource), and that the configured NICs or ENIs exist, are different, fit the floating
    /// IPs' subnet and that one of them holds each floating IP. The daemon calls it at start and
    /// every few minutes and shows the result as the `failover_proven` indicator: HA is Ready only
    /// while no returned check failed. Each failing [`Check`] names the setting or the action and
    /// the fix in one line. Providers with nothing to prove return an empty list.
    async fn prove_failover(&self) -> Vec<Check> {
        Vec::new()
    }

    /// Maintenance the platform has scheduled for this VM (empty when none or unsupported).
    ///
    /// Cheap enough to call every few seconds. A metadata service that is slow or unreachable
    /// yields an empty list (and a warning in [`Provider::observe`]), never an error that could
    /// make the daemon give up a working role; see [`Maintenance`] for which events call for a
    /// handover.
    async fn scheduled_maintenance(&self) -> Result<Vec<Maintenance>, ProviderError> {
        Ok(Vec::new())
    }

    /// Tell the platform this node is ready for `event_id` (Azure: `StartRequests`, which lets the
    /// event start before its `NotBefore`; AWS: nothing to acknowledge). Call it only once the
    /// handover has completed. Acknowledging an event that has already started or ended is not
    /// an error.
    async fn acknowledge_maintenance(&self, _event_id: &str) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_holder_requires_agreement() {
        let mut obs = Observation {
            warnings: Vec::new(),
            writes_in_flight: Vec::new(),
            resources: vec![
                ObservedResource {
                    resource: "ip 10.0.0.1".into(),
                    holder: Holder::Me,
                    held_by: None,
                },
                ObservedResource {
                    resource: "route rt/a".into(),
                    holder: Holder::Me,
                    held_by: None,
                },
            ],
        };
        assert_eq!(obs.overall_holder(), Some(Holder::Me));
        obs.resources[1].holder = Holder::Peer;
        assert_eq!(obs.overall_holder(), None);
        assert_eq!(Observation::default().overall_holder(), None);
    }

    #[test]
    fn permanent_errors_are_not_retryable() {
        let e = ProviderError::Permanent {
            operation: "nic.put".into(),
            message: "AuthorizationFailed".into(),
            fix: "grant networkInterfaces/write".into(),
        };
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("fix: grant"));
    }

    #[tokio::test]
    async fn operation_guard_reports_start_and_finish() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reporter = ProgressReporter::new(tx);
        let op = reporter.operation("a", "add address");
        op.finish::<(), String>(&Err("boom".into()));
        assert!(matches!(
            rx.recv().await,
            Some(ProgressEvent::OperationStarted { .. })
        ));
        match rx.recv().await {
            Some(ProgressEvent::OperationFinished { id, outcome, .. }) => {
                assert_eq!(id, "a");
                assert_eq!(outcome, "boom");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
