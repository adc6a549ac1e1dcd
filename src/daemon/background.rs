//! The daemon's background reports, through one channel.
//!
//! An idle active node wakes for one thing, the standby's keepalive, five times a second. Its
//! loop used to wait on a future per background task as well (worker, health, tracks, cloud
//! reads, proofs, maintenance, hooks, reloads), re-polled and re-registered on every wake: the
//! profile of an idle release build put a tenth of the daemon's CPU there (`mpsc` polls and
//! waker registrations on cold cache lines). These reports are rare, so one forwarding task
//! gathers them into [`Background`], and the loop waits on the keepalives, this channel and a
//! few timers.

use tokio::sync::mpsc;

use super::maintenance::MaintenanceReport;
use super::tasks::FailoverProof;
use super::ObserveResult;
use crate::config::Config;
use crate::health::track::TrackReport;
use crate::ops::hooks::HookResult;
use crate::provider_worker::WorkerEvent;

/// One report of a background task.
pub(super) enum Background {
    Worker(WorkerEvent),
    ProviderHealth(bool, String),
    Track(TrackReport),
    Observed(ObserveResult),
    Proof(FailoverProof),
    Maintenance(MaintenanceReport),
    Hook(HookResult),
    /// Boxed: a config is many times the size of every other report.
    Reload(Box<Result<Config, String>>),
}

/// The background tasks' channels, as the daemon creates them.
pub(super) struct Sources {
    pub worker: mpsc::UnboundedReceiver<WorkerEvent>,
    pub health: mpsc::UnboundedReceiver<(bool, String)>,
    pub track: mpsc::UnboundedReceiver<TrackReport>,
    pub observe: mpsc::UnboundedReceiver<ObserveResult>,
    pub proof: mpsc::UnboundedReceiver<FailoverProof>,
    pub maintenance: mpsc::UnboundedReceiver<MaintenanceReport>,
    pub hook: mpsc::UnboundedReceiver<HookResult>,
    pub reloads: mpsc::UnboundedReceiver<Result<Config, String>>,
}

/// Forward every report, each channel in its order, until all are closed or the loop is gone.
pub(super) fn forward(sources: Sources) -> mpsc::UnboundedReceiver<Background> {
    let (tx, rx) = mpsc::unbounded_channel();
    let Sources {
        mut worker,
        mut health,
        mut track,
        mut observe,
        mut proof,
        mut maintenance,
        mut hook,
        mut reloads,
    } = sources;
    tokio::spawn(async move {
        loop {
            let report = tokio::select! {
                Some(e) = worker.recv() => Background::Worker(e),
                Some((healthy, reason)) = health.recv() => Background::ProviderHealth(healthy, reason),
                Some(r) = track.recv() => Background::Track(r),
                Some(o) = observe.recv() => Background::Observed(o),
                Some(p) = proof.recv() => Background::Proof(p),
                Some(m) = maintenance.recv() => Background::Maintenance(m),
                Some(h) = hook.recv() => Background::Hook(h),
                Some(c) = reloads.recv() => Background::Reload(Box::new(c)),
                else => return,
            };
            if tx.send(report).is_err() {
                return;
            }
        }
    });
    rx
}
