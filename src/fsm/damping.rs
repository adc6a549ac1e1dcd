//! Flap damping: a node that lost the active role against its will waits longer before taking
//! over again, until the peer has been heard without a gap for long enough.

use serde::{Deserialize, Serialize};

use super::{Fsm, Millis};

/// While a node that lost the active role against its will (outranked by the peer after both
/// were active, or fenced) is damped, the peer counts as dead only after this many dead
/// intervals of silence. Without it, heavy random loss on every path (the fault campaign's 80 %
/// both ways) had the two nodes take the role from each other every few seconds: each run of
/// lost keepalives as long as a dead interval looks like a dead peer to whichever is standby.
pub const DAMPED_DEAD_INTERVALS: u64 = 3;
/// Damping ends once the peer has been heard without a gap (a silence longer than half a dead
/// interval) for this many dead intervals.
pub const DAMPING_CLEAN_DEAD_INTERVALS: u64 = 10;

/// See [`DAMPED_DEAD_INTERVALS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Damping {
    /// Since when the peer has been heard without a gap.
    pub(super) clean_since: Millis,
}

impl Fsm {
    /// Whether the node lost the role against its will recently and waits
    /// [`DAMPED_DEAD_INTERVALS`] of silence before taking over again.
    pub fn damped(&self) -> bool {
        let last = self.last_heard.iter().flatten().max().copied();
        self.damping.is_some_and(|d| {
            last.unwrap_or(d.clean_since).saturating_sub(d.clean_since)
                < self
                    .config
                    .dead_interval_ms
                    .saturating_mul(DAMPING_CLEAN_DEAD_INTERVALS)
        })
    }

    /// A keepalive was taken at `now`: a gap since the previous one restarts the clean period
    /// that ends damping; a clean period long enough ends it.
    pub(super) fn track_damping(&mut self, now: Millis) {
        let previous = self.last_heard.iter().flatten().max().copied();
        let dead = self.config.dead_interval_ms;
        if let Some(d) = &mut self.damping {
            if previous.is_none_or(|p| now.saturating_sub(p) > dead / 2) {
                d.clean_since = now;
            } else if now.saturating_sub(d.clean_since)
                >= dead.saturating_mul(DAMPING_CLEAN_DEAD_INTERVALS)
            {
                self.damping = None;
            }
        }
    }
}
