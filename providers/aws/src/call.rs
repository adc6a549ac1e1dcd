//! Every EC2 request goes through [`Calls::send`]: one attempt at a time under the takeover's
//! deadline, jittered backoff on throttling, 5xx and timeouts, and a count of every attempt.
//!
//! The SDK's own retries are turned off (see `client.rs`). Its standard mode stops retrying when
//! its client-wide retry quota runs dry, which is exactly what sustained throttling during a
//! failover does, and its attempts would be invisible here: the daemon shows every request with
//! its status, and the report counts them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use cloudha_provider_core::{ProgressReporter, ProviderError};
use tokio::time::Instant;

use crate::error::{classify, Failure};

/// How EC2 calls are retried. The takeover deadline ends retries before `max_attempts` does in
/// most failovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Longest wait for one HTTP attempt before it counts as timed out and is retried.
    pub attempt_timeout: Duration,
    /// First backoff after a 5xx, a timeout or a connection failure; doubles per attempt.
    pub backoff: Duration,
    /// First backoff after throttling (`RequestLimitExceeded`); doubles per attempt.
    pub throttle_backoff: Duration,
    /// Longest single backoff.
    pub max_backoff: Duration,
    /// Most attempts of one call within a takeover.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            // EC2 answers in well under a second; 5 s leaves room for a slow region without
            // letting one stuck connection eat a failover's deadline.
            attempt_timeout: Duration::from_secs(5),
            backoff: Duration::from_millis(100),
            // AWS asks throttled clients to back off harder than after a server error.
            throttle_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            // Raised from the SDK's 3: during a failover, giving up early is the worst outcome.
            max_attempts: 20,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: exponential, with "equal jitter" (half fixed, half
    /// random) so two nodes throttled together do not retry in lockstep, yet never retry at once.
    pub(crate) fn backoff(&self, attempt: u32, throttled: bool, random: f64) -> Duration {
        let base = if throttled {
            self.throttle_backoff
        } else {
            self.backoff
        };
        let doublings = attempt.saturating_sub(1).min(16);
        let ceiling = base.saturating_mul(1 << doublings).min(self.max_backoff);
        let half = ceiling / 2;
        half + half.mul_f64(random.clamp(0.0, 1.0))
    }
}

/// The deadline shared by every step of one takeover (or one check).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    total: Duration,
    until: Instant,
}

impl Budget {
    pub(crate) fn new(total: Duration) -> Self {
        Self {
            total,
            // A deadline too far to represent is no deadline at all.
            until: Instant::now()
                .checked_add(total)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365 * 30)),
        }
    }

    pub(crate) fn exceeded(&self, operation: &str) -> ProviderError {
        ProviderError::DeadlineExceeded {
            operation: operation.to_string(),
            deadline: self.total,
        }
    }

    /// Run `step`, failing with `DeadlineExceeded` naming `operation` if the deadline passes first.
    pub(crate) async fn run<T>(
        &self,
        operation: &str,
        step: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        match tokio::time::timeout_at(self.until, step).await {
            Ok(result) => result,
            Err(_) => Err(self.exceeded(operation)),
        }
    }

    /// Sleep `wait`, or fail at once if the deadline would pass during it.
    pub(crate) async fn sleep(&self, operation: &str, wait: Duration) -> Result<(), ProviderError> {
        if Instant::now() + wait >= self.until {
            return Err(self.exceeded(operation));
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// A call that failed for good: the error for the daemon plus the EC2 code, for callers that
/// handle some codes themselves (a missing route, an address already gone).
#[derive(Debug, Clone)]
pub(crate) struct Failed {
    pub error: ProviderError,
    pub failure: Option<Failure>,
}

impl Failed {
    /// Whether EC2 refused the call with `code`.
    pub(crate) fn is(&self, code: &str) -> bool {
        self.failure.as_ref().is_some_and(|f| f.is(code))
    }

    /// Whether EC2's message contains `text` (case-insensitive).
    pub(crate) fn says(&self, text: &str) -> bool {
        self.failure
            .as_ref()
            .is_some_and(|f| f.message.to_lowercase().contains(&text.to_lowercase()))
    }
}

impl From<Failed> for ProviderError {
    fn from(failed: Failed) -> Self {
        failed.error
    }
}

/// The EC2 client in the context of one takeover or check: its deadline, its progress reporter
/// and its tally of requests.
pub(crate) struct Calls<'a> {
    pub client: &'a aws_sdk_ec2::Client,
    pub progress: &'a ProgressReporter,
    pub budget: Budget,
    policy: RetryPolicy,
    counts: Mutex<BTreeMap<String, u32>>,
}

impl<'a> Calls<'a> {
    pub(crate) fn new(
        client: &'a aws_sdk_ec2::Client,
        policy: RetryPolicy,
        budget: Budget,
        progress: &'a ProgressReporter,
    ) -> Self {
        Self {
            client,
            progress,
            budget,
            policy,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Requests made so far, by EC2 action name.
    pub(crate) fn counts(&self) -> BTreeMap<String, u32> {
        // A poisoned lock means a task panicked mid-count; the tally it left is still the best.
        match self.counts.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn record(&self, operation: &str, status: u16, started: Instant) {
        let mut counts = match self.counts.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        *counts.entry(operation.to_string()).or_default() += 1;
        drop(counts);
        // Describe* reads; every other action the provider sends changes cloud state.
        let write = !operation.starts_with("Describe");
        self.progress
            .api_call_timed(operation, status, write, started.elapsed());
    }

    /// Send one EC2 request (`operation` is its action name), retrying transient failures.
    pub(crate) async fn send<T, E, Fut>(
        &self,
        operation: &str,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, Failed>
    where
        Fut: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let deadline = |budget: &Budget| Failed {
            error: budget.exceeded(operation),
            failure: None,
        };
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let started = Instant::now();
            if started >= self.budget.until {
                return Err(deadline(&self.budget));
            }
            let attempt_end = (started + self.policy.attempt_timeout).min(self.budget.until);
            let failure = match tokio::time::timeout_at(attempt_end, attempt()).await {
                Ok(Ok(value)) => {
                    // The SDK hands back only the parsed output; every EC2 success is a 200.
                    self.record(operation, 200, started);
                    return Ok(value);
                }
                Ok(Err(e)) => Failure::from_sdk(&e),
                Err(_) if attempt_end >= self.budget.until => {
                    self.record(operation, 0, started);
                    return Err(deadline(&self.budget));
                }
                Err(_) => Failure::timed_out(self.policy.attempt_timeout),
            };
            self.record(operation, failure.status.unwrap_or(0), started);
            let classified = classify(operation, &failure);
            if !classified.error.is_retryable() || attempts >= self.policy.max_attempts {
                return Err(Failed {
                    error: classified.error,
                    failure: Some(failure),
                });
            }
            let wait = self
                .policy
                .backoff(attempts, classified.throttled, fastrand::f64());
            self.progress.note(format!(
                "{}; attempt {} in {} ms",
                classified.error,
                attempts + 1,
                wait.as_millis()
            ));
            tracing::warn!(%operation, attempt = attempts, error = %classified.error, ?wait, "EC2 call failed, retrying");
            if self.budget.sleep(operation, wait).await.is_err() {
                return Err(deadline(&self.budget));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_least_half_of_it() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, false, 0.0), Duration::from_millis(50));
        assert_eq!(p.backoff(1, false, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(3, false, 1.0), Duration::from_millis(400));
        assert_eq!(p.backoff(1, true, 0.0), Duration::from_millis(250));
        assert_eq!(p.backoff(40, true, 1.0), p.max_backoff);
        assert_eq!(p.backoff(40, true, 0.0), p.max_backoff / 2);
    }

    #[tokio::test]
    async fn budget_refuses_a_sleep_past_the_deadline() {
        let budget = Budget::new(Duration::from_millis(50));
        let err = budget.sleep("ReplaceRoute", Duration::from_secs(1)).await;
        assert!(matches!(
            err,
            Err(ProviderError::DeadlineExceeded { ref operation, .. }) if operation == "ReplaceRoute"
        ));
        budget
            .sleep("ReplaceRoute", Duration::from_millis(1))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn budget_names_the_step_that_ran_out_of_time() {
        let budget = Budget::new(Duration::from_millis(1));
        let result: Result<(), _> = budget
            .run(
                "takeover",
                std::future::pending::<Result<(), ProviderError>>(),
            )
            .await;
        assert!(matches!(
            result,
            Err(ProviderError::DeadlineExceeded { ref operation, .. }) if operation == "takeover"
        ));
    }
}
