//! Tasks apart from the loop: the provider health check and the proof that a failover would
//! succeed now, each reporting to the loop through a channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudha_provider_core::{Check, Outcome, Provider};
use tokio::sync::mpsc;

use crate::ticker::Ticker;

/// How often the provider's health is checked.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How often a failover is proven possible (permissions, NIC settings): a few minutes keeps
/// the cloud calls it costs far below every throttling limit.
const PROOF_INTERVAL: Duration = Duration::from_secs(300);
/// How soon a failed proof is tried again.
const PROOF_RETRY: Duration = Duration::from_secs(15);
/// Longest a proof may take.
const PROOF_TIMEOUT: Duration = Duration::from_secs(90);

/// Prove at start and every [`PROOF_INTERVAL`] that a failover would succeed now (see
/// `Provider::prove_failover`); each result goes to the loop.
pub(super) async fn watch_failover_proof(
    provider: Arc<dyn Provider>,
    tx: mpsc::UnboundedSender<FailoverProof>,
) {
    loop {
        let checks = match tokio::time::timeout(PROOF_TIMEOUT, provider.prove_failover()).await {
            Ok(checks) => checks,
            Err(_) => vec![Check::fail(
                "failover_proven",
                format!(
                    "proving the failover's permissions and settings took over {} s",
                    PROOF_TIMEOUT.as_secs()
                ),
                "run cloudha selftest to see which cloud call hangs",
            )],
        };
        let proof = FailoverProof {
            at: Instant::now(),
            checks,
        };
        // A failure may be passing (a throttled or lost read): look again soon, not in 5 min.
        let next = if proof.failures().is_empty() {
            PROOF_INTERVAL
        } else {
            PROOF_RETRY
        };
        if tx.send(proof).is_err() {
            return;
        }
        tokio::time::sleep(next).await;
    }
}

pub(super) async fn watch_health(
    provider: Arc<dyn Provider>,
    tx: mpsc::UnboundedSender<(bool, String)>,
) {
    let mut last: Option<bool> = None;
    let mut ticker = Ticker::in_phase(HEALTH_INTERVAL);
    loop {
        let result = tokio::time::timeout(Duration::from_secs(10), provider.health()).await;
        let (healthy, reason) = match result {
            Ok(Ok(())) => (true, "provider healthy".to_string()),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (false, "provider health check timed out".to_string()),
        };
        if last != Some(healthy) {
            last = Some(healthy);
            if tx.send((healthy, reason)).is_err() {
                return;
            }
        }
        ticker.tick().await;
    }
}

/// One result of `Provider::prove_failover`.
pub(super) struct FailoverProof {
    pub(super) at: Instant,
    pub(super) checks: Vec<Check>,
}

impl FailoverProof {
    pub(super) fn failures(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .collect()
    }
}
