//! Runs provider mutations one at a time, in the order the state machine asked for them.
//!
//! Takeovers and releases go through one queue so that a release can never overtake a later
//! takeover (which would drop the floating IP from the node that just claimed it). A running
//! takeover can be cancelled when the node loses the active role; its future is dropped at the
//! next await point.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudha_provider_core::{
    ProgressEvent, ProgressReporter, Provider, ProviderError, TakeoverReport, TakeoverRequest,
};
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// How long a release may take before it is abandoned (releases are local and quick).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// A job for the worker.
#[derive(Debug)]
enum Job {
    TakeOver { epoch: u64, attempt: u64 },
    Release,
}

/// What the worker reports back to the event loop.
#[derive(Debug)]
pub enum WorkerEvent {
    /// Progress of takeover `attempt`.
    Progress {
        /// The attempt it belongs to.
        attempt: u64,
        /// What happened.
        event: ProgressEvent,
    },
    /// Takeover `attempt` for `epoch` ended.
    TakeoverDone {
        /// The epoch claimed.
        epoch: u64,
        /// The attempt number.
        attempt: u64,
        /// The outcome.
        result: Result<TakeoverReport, ProviderError>,
        /// How long it ran.
        elapsed: Duration,
    },
    /// A release ended.
    ReleaseDone {
        /// The outcome.
        result: Result<(), ProviderError>,
    },
}

/// Handle to the worker task.
pub struct ProviderWorker {
    jobs: mpsc::UnboundedSender<Job>,
    cancel: watch::Sender<u64>,
    next_attempt: u64,
}

impl ProviderWorker {
    /// Start the worker; its reports arrive on `events`.
    pub fn start(
        provider: Arc<dyn Provider>,
        deadline: Duration,
        events: mpsc::UnboundedSender<WorkerEvent>,
    ) -> ProviderWorker {
        let (jobs, rx) = mpsc::unbounded_channel();
        let (cancel, cancel_rx) = watch::channel(0);
        tokio::spawn(run(provider, deadline, rx, cancel_rx, events));
        ProviderWorker {
            jobs,
            cancel,
            next_attempt: 1,
        }
    }

    /// Queue a takeover; returns its attempt number.
    pub fn take_over(&mut self, epoch: u64) -> u64 {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let _ = self.jobs.send(Job::TakeOver { epoch, attempt });
        attempt
    }

    /// Cancel every takeover queued or running so far.
    pub fn cancel_takeovers(&self) {
        // Attempts up to this number are cancelled.
        let last = self.next_attempt.saturating_sub(1);
        self.cancel.send_replace(last);
    }

    /// Queue a release.
    pub fn release(&self) {
        let _ = self.jobs.send(Job::Release);
    }
}

async fn run(
    provider: Arc<dyn Provider>,
    deadline: Duration,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut cancel: watch::Receiver<u64>,
    events: mpsc::UnboundedSender<WorkerEvent>,
) {
    while let Some(job) = jobs.recv().await {
        match job {
            Job::TakeOver { epoch, attempt } => {
                if *cancel.borrow() >= attempt {
                    continue;
                }
                let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
                let reporter = ProgressReporter::new(progress_tx);
                let forward = {
                    let events = events.clone();
                    tokio::spawn(async move {
                        while let Some(event) = progress_rx.recv().await {
                            let _ = events.send(WorkerEvent::Progress { attempt, event });
                        }
                    })
                };
                let request = TakeoverRequest { epoch, deadline };
                let started = Instant::now();
                let cancelled = async {
                    loop {
                        if *cancel.borrow_and_update() >= attempt {
                            return;
                        }
                        if cancel.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                };
                let outcome = tokio::select! {
                    result = tokio::time::timeout(deadline, provider.take_over(&request, &reporter)) => Some(
                        result.unwrap_or_else(|_| Err(ProviderError::DeadlineExceeded {
                            operation: "takeover".into(),
                            deadline,
                        })),
                    ),
                    _ = cancelled => None,
                };
                drop(reporter);
                let _ = forward.await;
                if let Some(result) = outcome {
                    let _ = events.send(WorkerEvent::TakeoverDone {
                        epoch,
                        attempt,
                        result,
                        elapsed: started.elapsed(),
                    });
                }
            }
            Job::Release => {
                let reporter = ProgressReporter::discard();
                let result = tokio::time::timeout(RELEASE_TIMEOUT, provider.release(&reporter))
                    .await
                    .unwrap_or_else(|_| {
                        warn!("release did not finish within {RELEASE_TIMEOUT:?}");
                        Err(ProviderError::DeadlineExceeded {
                            operation: "release".into(),
                            deadline: RELEASE_TIMEOUT,
                        })
                    });
                let _ = events.send(WorkerEvent::ReleaseDone { result });
            }
        }
    }
}
