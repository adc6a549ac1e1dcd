//! The outcome of a takeover attempt: converged, or retried with a growing delay.

use super::{Fsm, Millis, Role, TakeoverState};

impl Fsm {
    pub(super) fn on_takeover_finished(
        &mut self,
        epoch: u64,
        ok: bool,
        error: Option<String>,
        now: Millis,
    ) {
        // A result for an older claim, or after the role was lost, changes nothing.
        if self.role != Role::Active || epoch != self.epoch {
            return;
        }
        self.last_takeover_error = error;
        if ok {
            self.takeover = TakeoverState::Done;
            self.retry_delay_ms = self.config.retry_initial_ms;
        } else {
            self.takeover = TakeoverState::RetryAt {
                at: now.saturating_add(self.retry_delay_ms),
            };
            self.retry_delay_ms = self
                .retry_delay_ms
                .saturating_mul(2)
                .min(self.config.retry_max_ms);
        }
    }
}
