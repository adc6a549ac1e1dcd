//! One loop that brings an ARM resource to a wanted state: read, decide, write with `If-Match`,
//! follow the long-running operation, read again to verify. NICs and routes both go through it.
//!
//! Every answer ARM gives on the way has one reaction here: 412 re-reads and re-applies at once;
//! `PrivateIPAddressInUse`, 409, 429, 5xx, timeouts and failed operations wait (honouring
//! `Retry-After`, else jittered exponential backoff) and go round again; a resource still
//! `Updating` from an earlier write (ours before a restart, or anyone's) is waited for rather than
//! overwritten; anything else is permanent and returned. All of it under one deadline.

use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::watch;

use crate::arm::{sleep_within, ArmClient, ArmError, CallLog, ErrorClass, Watch};
use crate::budget::Priority;
use crate::nic;

/// First wait after a retryable answer.
const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest wait between two attempts (unless ARM asks for longer with `Retry-After`).
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// While the peer's NIC update is still running, an add refused with `PrivateIPAddressInUse`
/// waits for that update rather than retrying; this bounds the wait in case the news is lost.
const RELEASE_WAIT_MAX: Duration = Duration::from_secs(30);

/// Jittered exponential backoff.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_INITIAL,
        }
    }
}

impl Backoff {
    /// The next wait: `Retry-After` when ARM sent one, else half to all of the current step.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        if let Some(asked) = retry_after {
            return asked;
        }
        let factor = rand::rng().random_range(0.5..=1.0);
        step.mul_f64(factor)
    }
}

/// A resource to converge.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// ARM resource id.
    pub id: &'a str,
    /// api-version for GET and PUT.
    pub api_version: &'a str,
    /// Operation prefix for call counts (`nic`, `route`).
    pub kind: &'static str,
    /// Human label for notes (`NIC nic-a`, `route rt/default`).
    pub label: String,
    /// Progress operation id (`nic.remove nic-a`), reported with its start, outcome and duration.
    pub operation: String,
    /// What the operation changes, for status.
    pub description: String,
    /// The document as the caller already read it (`Some(None)`: it does not exist), used
    /// instead of the first GET. The write that follows carries no `If-Match`: a document read
    /// as part of its parent (a route in its table's GET) has the parent's ETag, which every
    /// write to a sibling changes. Only for resources whose whole content the write sets.
    pub first_read: Option<Option<Value>>,
    /// Return as soon as a write's operation succeeded, without reading the resource back: the
    /// caller verifies many resources with one read.
    pub caller_verifies: bool,
    /// Its place among writes waiting for the bucket (see `budget::Priority`).
    pub write_priority: Priority,
}

/// Whether [`ensure`] had to write.
pub type Changed = bool;

/// Progress of the resource another one waits on (the peer's NIC, for the add to this NIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Not written yet: the waiting side must not write.
    Pending,
    /// Its write was accepted (or none was needed): the waiting side may write.
    Accepted,
    /// Converged and verified: an address it held is free now.
    Done,
}

/// Converge `target`: `desired` gets the current document (None if it does not exist) and
/// returns the document to PUT, or None when nothing needs to change. Before its first write the
/// loop waits for `gate` to reach [`Stage::Accepted`] (the add waits until the peer's removal was
/// accepted), and a wait after `PrivateIPAddressInUse` ends early when the gate reaches
/// [`Stage::Done`]; `accepted` is raised to [`Stage::Accepted`] once this resource's write was
/// accepted or found unnecessary.
pub async fn ensure(
    arm: &ArmClient,
    log: &CallLog,
    target: &Target<'_>,
    deadline: Instant,
    desired: impl FnMut(Option<&Value>) -> Result<Option<Value>, String>,
    gate: Option<watch::Receiver<Stage>>,
    accepted: Option<&watch::Sender<Stage>>,
) -> Result<Changed, ArmError> {
    let op = log
        .progress()
        .operation(target.operation.clone(), target.description.clone());
    let result = converge(arm, log, target, deadline, desired, gate, accepted).await;
    op.finish(&result);
    result
}

async fn converge(
    arm: &ArmClient,
    log: &CallLog,
    target: &Target<'_>,
    deadline: Instant,
    mut desired: impl FnMut(Option<&Value>) -> Result<Option<Value>, String>,
    gate: Option<watch::Receiver<Stage>>,
    accepted: Option<&watch::Sender<Stage>>,
) -> Result<Changed, ArmError> {
    let get_op = format!("{}.get", target.kind);
    let put_op = format!("{}.put", target.kind);
    let mut backoff = Backoff::default();
    let mut changed = false;
    let mut told_in_use = false;
    let mut gate = gate;
    let mut first_read = target.first_read.clone();
    loop {
        // The document and the ETag to send with its write.
        let current: Option<(Value, Option<String>)> = match first_read.take() {
            Some(doc) => doc.map(|body| (body, None)),
            None => match arm.get(log, &get_op, target.id, target.api_version).await {
                Ok(r) => {
                    let etag = nic::etag(&r.body, r.etag.as_deref());
                    Some((r.body, etag))
                }
                Err(e) if e.class == ErrorClass::NotFound => None,
                Err(e) if retryable(&e) => {
                    pause(&mut backoff, &e, deadline, log, target).await?;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let body = current.as_ref().map(|(body, _)| body);
        if let Some(b) = body {
            if nic::provisioning_state(b) == "Updating" {
                // An accepted write is still propagating; writing now would only get a 409.
                let wait = backoff.next_delay(None).max(Duration::from_secs(1));
                sleep_within(wait, deadline, &get_op)?;
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        let next = desired(body).map_err(|message| ArmError {
            operation: put_op.clone(),
            status: 0,
            code: "InvalidChange".into(),
            message,
            retry_after: None,
            class: ErrorClass::Permanent,
        })?;
        let Some(next) = next else {
            if let Some(tx) = accepted {
                raise(tx, Stage::Accepted);
            }
            return Ok(changed);
        };
        if let Some(rx) = gate.as_mut() {
            wait_for_gate(rx, deadline, &put_op).await?;
        }
        let etag = current.as_ref().and_then(|(_, etag)| etag.clone());
        // Where the resource this one waits on stood as the write left: an address still in
        // use after that one had let go is held by someone else now.
        let gate_at_write = gate.as_ref().map(|g| *g.borrow());
        let url = arm.url(target.id, target.api_version);
        match arm
            .write(
                log,
                &put_op,
                Method::PUT,
                &url,
                &next,
                etag.as_deref(),
                target.write_priority,
            )
            .await
        {
            Ok(answer) => {
                changed = true;
                if let Some(tx) = accepted {
                    raise(tx, Stage::Accepted);
                }
                // The resource's own state ends the wait as soon as the update is applied
                // (no longer `Updating`); the next round reads it back and verifies.
                let applied = nic::update_applied;
                let watch = Watch {
                    id: target.id,
                    api_version: target.api_version,
                    applied: &applied,
                };
                match arm
                    .wait_for_operation(log, &put_op, &answer, deadline, Some(&watch))
                    .await
                {
                    Ok(()) if target.caller_verifies => return Ok(changed),
                    Ok(()) => {}
                    Err(e) if !retryable(&e) => return Err(e),
                    Err(e) => {
                        log.progress()
                            .note(format!("{}: {e}; reading it again", target.label));
                        pause(&mut backoff, &e, deadline, log, target).await?;
                    }
                }
            }
            Err(e) if e.class == ErrorClass::PreconditionFailed => {
                log.progress().note(format!(
                    "{} changed since it was read (412); re-reading and re-applying",
                    target.label
                ));
            }
            Err(e) if e.class == ErrorClass::AddressInUse => {
                if !told_in_use {
                    told_in_use = true;
                    log.progress().note(format!(
                        "{}: {} {}; the other NIC has not let go yet, retrying",
                        target.label, e.code, e.message
                    ));
                }
                match gate.as_mut() {
                    // The other NIC had let go (its removal verified) before this write, and
                    // the address is taken again: the peer put it back (a repair of its own
                    // across a partition) or another NIC took it. Waiting here cannot free it:
                    // end the attempt, so that the takeover's retry removes it again.
                    Some(_) if gate_at_write == Some(Stage::Done) => {
                        log.progress().note(format!(
                            "{}: the address is in use again after the other NIC let go; starting the move again",
                            target.label
                        ));
                        return Err(e);
                    }
                    // Freed while this write was on its way: retry at once.
                    Some(g) if *g.borrow() == Stage::Done => {}
                    // The other NIC is still letting go (up to minutes on Azure): retry the
                    // moment its update completes instead of spending writes on a backoff.
                    Some(g) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let wait = RELEASE_WAIT_MAX.min(left);
                        let released =
                            tokio::time::timeout(wait, g.wait_for(|s| *s >= Stage::Done)).await;
                        if released.is_err() && Instant::now() >= deadline {
                            return Err(e);
                        }
                    }
                    None => pause(&mut backoff, &e, deadline, log, target).await?,
                }
            }
            Err(e) if retryable(&e) => pause(&mut backoff, &e, deadline, log, target).await?,
            Err(e) => return Err(e),
        }
    }
}

/// GET `id`, retrying what [`ensure`] retries (throttling, 5xx, timeouts, a refused token)
/// until `deadline`; `None` when it does not exist.
pub async fn read_within(
    arm: &ArmClient,
    log: &CallLog,
    operation: &str,
    id: &str,
    api_version: &str,
    deadline: Instant,
) -> Result<Option<Value>, ArmError> {
    let mut backoff = Backoff::default();
    loop {
        match arm.get(log, operation, id, api_version).await {
            Ok(r) => return Ok(Some(r.body)),
            Err(e) if e.class == ErrorClass::NotFound => return Ok(None),
            Err(e) if retryable(&e) => {
                let wait = backoff.next_delay(e.retry_after);
                sleep_within(wait, deadline, operation)?;
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn retryable(e: &ArmError) -> bool {
    matches!(
        e.class,
        ErrorClass::Transient | ErrorClass::Unauthenticated | ErrorClass::AddressInUse
    )
}

async fn pause(
    backoff: &mut Backoff,
    e: &ArmError,
    deadline: Instant,
    log: &CallLog,
    target: &Target<'_>,
) -> Result<(), ArmError> {
    let wait = backoff.next_delay(e.retry_after);
    if sleep_within(wait, deadline, &e.operation).is_err() {
        // Out of time: the last real error says more than "deadline".
        return Err(e.clone());
    }
    if e.class != ErrorClass::AddressInUse {
        log.progress().note(format!(
            "{}: {e}; retrying in {} ms",
            target.label,
            wait.as_millis()
        ));
    }
    tokio::time::sleep(wait).await;
    Ok(())
}

fn raise(tx: &watch::Sender<Stage>, stage: Stage) {
    tx.send_if_modified(|s| {
        let higher = stage > *s;
        if higher {
            *s = stage;
        }
        higher
    });
}

async fn wait_for_gate(
    rx: &mut watch::Receiver<Stage>,
    deadline: Instant,
    operation: &str,
) -> Result<(), ArmError> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, rx.wait_for(|s| *s >= Stage::Accepted)).await {
        Ok(Ok(_)) => Ok(()),
        // The sender is gone: its side finished one way or another; go ahead.
        Ok(Err(_)) => Ok(()),
        Err(_) => sleep_within(left + Duration::from_millis(1), deadline, operation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let mut b = Backoff::default();
        let first = b.next_delay(None);
        assert!(first >= BACKOFF_INITIAL / 2 && first <= BACKOFF_INITIAL);
        for _ in 0..10 {
            assert!(b.next_delay(None) <= BACKOFF_MAX);
        }
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
