//! Liveness: whether a keepalive is believed (proof of liveness by an echoed timestamp, not held
//! in flight, fresh or merely recent), the dead interval, and taking a believed keepalive.

use serde::{Deserialize, Serialize};

use super::damping::DAMPED_DEAD_INTERVALS;
use super::{Fsm, Millis, PeerAdvert, PeerView, Role, SentAt};

/// A keepalive proves the peer alive now only when it echoes one of this node's own timestamps
/// sent within this many dead intervals (and of this boot: the link counts its timestamps from
/// a random per-boot offset, so a recording made in an earlier boot never matches). Anything
/// else may be a recording: it is neither believed nor counted as hearing the peer.
pub const PROOF_WINDOW_DEAD_INTERVALS: u64 = 10;

/// The delivery lag of the keepalive last taken from the peer (see `Fsm::held_in_flight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LagReference {
    pub(super) incarnation: u64,
    /// Receive time (ours) minus send time (the peer's), µs: clock offset plus delay.
    pub(super) lag_us: i128,
    /// Since when keepalives have been arriving much later than that.
    pub(super) held_since: Option<Millis>,
}

impl Fsm {
    /// Whether any path heard the peer within the dead interval.
    pub fn peer_alive(&self, now: Millis) -> bool {
        self.last_heard
            .iter()
            .flatten()
            .any(|&t| now.saturating_sub(t) < self.config.dead_interval_ms)
    }

    /// When the peer will be declared dead if nothing more is heard (paths never heard count
    /// from the node's start; a damped node waits longer).
    pub(super) fn peer_dead_at(&self) -> Millis {
        let silence = if self.damped() {
            self.config
                .dead_interval_ms
                .saturating_mul(DAMPED_DEAD_INTERVALS)
        } else {
            self.config.dead_interval_ms
        };
        self.last_heard
            .iter()
            .map(|t| t.unwrap_or(self.started_at))
            .max()
            .unwrap_or(self.started_at)
            .saturating_add(silence)
    }

    /// Whether a keepalive echoing `echo_us` (this node's send time, on the FSM's clock) proves
    /// the peer alive now: the echo is not from the future and within
    /// [`PROOF_WINDOW_DEAD_INTERVALS`]. Absent: "just now" (the daemon never sends an event
    /// without a matching echo; the link drops those as `unproven`).
    pub(super) fn proves_liveness(&self, echo_us: Option<u64>, now: Millis) -> bool {
        let Some(echo) = echo_us else { return true };
        // `now` is whole milliseconds, truncated: the true time is up to 999 µs later. On a
        // sub-millisecond link an active node answering the standby at once echoes a packet
        // sent in the same millisecond; judged against the truncated clock it looked like an
        // echo from the future, and every answer was dropped until the standby took over.
        let latest_us = now.saturating_mul(1000).saturating_add(999);
        let window_us = self
            .config
            .dead_interval_ms
            .saturating_mul(PROOF_WINDOW_DEAD_INTERVALS)
            .saturating_mul(1000);
        echo <= latest_us && latest_us - echo <= window_us.saturating_add(999)
    }

    /// Delivered more than a dead interval later than the keepalive last taken from the same
    /// peer boot (comparing `receive time - send time`, which needs no clock sync): a burst
    /// released after a partition heals starts with adverts from its beginning (the peer still
    /// standby, say), newer than anything heard yet. Believing them made a fenced node win an
    /// election against a peer that had long taken over. Compared with the last keepalive taken,
    /// not the fastest ever, so that clock drift between the nodes never adds up; and a delay
    /// that stays high for a dead interval (a slower path, not a queue) becomes the reference.
    pub(super) fn held_in_flight(&mut self, sent: Option<SentAt>, now: Millis) -> bool {
        let Some(sent) = sent else { return false };
        let lag_us = i128::from(now) * 1000 - i128::from(sent.at_us);
        let dead_us = i128::from(self.config.dead_interval_ms) * 1000;
        match &mut self.peer_lag {
            Some(r) if r.incarnation == sent.incarnation => {
                if lag_us - r.lag_us > dead_us {
                    let since = *r.held_since.get_or_insert(now);
                    if now.saturating_sub(since) <= self.config.dead_interval_ms {
                        return true;
                    }
                }
                r.lag_us = lag_us;
                r.held_since = None;
                false
            }
            // An older boot's keepalive is not fresh anyway; it does not move the reference.
            Some(r) if r.incarnation > sent.incarnation => false,
            _ => {
                self.peer_lag = Some(LagReference {
                    incarnation: sent.incarnation,
                    lag_us,
                    held_since: None,
                });
                false
            }
        }
    }

    /// Sent no earlier than the freshest keepalive already taken (records it if so).
    pub(super) fn is_fresh(&mut self, sent: Option<SentAt>) -> bool {
        let Some(sent) = sent else { return true };
        if self.peer_newest.is_some_and(|newest| sent < newest) {
            return false;
        }
        self.peer_newest = Some(sent);
        true
    }

    /// Sent by the peer's current boot within a dead interval of its freshest keepalive.
    pub(super) fn is_recent(&self, sent: Option<SentAt>) -> bool {
        match (sent, self.peer_newest) {
            (Some(sent), Some(newest)) => {
                sent.incarnation == newest.incarnation
                    && newest.at_us.saturating_sub(sent.at_us)
                        <= self.config.dead_interval_ms.saturating_mul(1000)
            }
            _ => true,
        }
    }

    pub(super) fn on_keepalive(
        &mut self,
        path: usize,
        advert: PeerAdvert,
        echo_us: Option<u64>,
        now: Millis,
    ) {
        let settled = advert.role == Role::Active
            && !advert.takeover_in_progress
            && !advert.yielding
            && !advert.leaving;
        if !settled || !self.peer_alive(now) {
            self.peer_settled_since = None;
        }
        if settled && self.peer_settled_since.is_none() {
            self.peer_settled_since = Some(now);
        }
        self.track_damping(now);
        if let Some(slot) = self.last_heard.get_mut(path) {
            *slot = Some(now);
        }
        // Heard again: the keepalives decide from here on.
        self.fenced_at = None;
        self.peer = Some(PeerView {
            advert,
            at: now,
            echo_us,
        });
        // Adopt the highest epoch seen so the next takeover by either node is newer still. An
        // active node keeps its own until it steps down: the both-active comparison needs it.
        if self.role != Role::Active {
            self.epoch = self.epoch.max(advert.epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::FsmConfig;
    use super::*;

    fn fsm() -> Fsm {
        Fsm::new(
            FsmConfig {
                node: "fw-a".into(),
                peer: "fw-b".into(),
                priority: 100,
                preempt: false,
                hold_down_ms: 1000,
                dead_interval_ms: 500,
                paths: 1,
                retry_initial_ms: 500,
                retry_max_ms: 2000,
            },
            0,
        )
    }

    fn sent(at_us: u64) -> Option<SentAt> {
        Some(SentAt {
            incarnation: 1,
            at_us,
        })
    }

    #[test]
    fn an_echo_of_a_packet_sent_earlier_in_the_current_millisecond_proves_liveness() {
        let f = fsm();
        // Sent at 1112.238 ms, echoed back and stepped while the clock still reads 1112 ms.
        assert!(f.proves_liveness(Some(1_112_238), 1112));
        assert!(f.proves_liveness(Some(1_112_999), 1112));
        // From a later millisecond than now: not ours of this boot, or a forged echo.
        assert!(!f.proves_liveness(Some(1_113_000), 1112));
        // Older than the proof window: a recording.
        let window_ms = 500 * PROOF_WINDOW_DEAD_INTERVALS;
        assert!(f.proves_liveness(Some(1_000_000), 1000 + window_ms));
        assert!(!f.proves_liveness(Some(1_000_000), 1001 + window_ms));
    }

    #[test]
    fn clock_drift_between_the_nodes_never_adds_up_to_a_held_keepalive() {
        let mut f = fsm();
        // The peer's clock runs 1% slow: after 100 s our lag reference has moved by 1 s, in
        // steps of 1 ms per keepalive, none of which looks held.
        for i in 0..1000u64 {
            let now = 1000 + i * 100;
            assert!(!f.held_in_flight(sent(i * 99_000), now), "keepalive {i}");
        }
    }

    #[test]
    fn a_queued_burst_is_held_but_a_lasting_slower_path_is_adopted() {
        let mut f = fsm();
        assert!(!f.held_in_flight(sent(0), 1000));
        assert!(!f.held_in_flight(sent(100_000), 1100));
        // Sent 100 ms later, delivered 2 s later: held (a queue released).
        assert!(f.held_in_flight(sent(200_000), 3100));
        assert!(f.held_in_flight(sent(300_000), 3100));
        // The fresh ones after it are taken.
        assert!(!f.held_in_flight(sent(3_000_000), 3101));
        // A path whose delay rises by 800 ms for good: held for a dead interval, then taken.
        assert!(f.held_in_flight(sent(3_100_000), 3900));
        assert!(f.held_in_flight(sent(3_200_000), 4000));
        assert!(f.held_in_flight(sent(3_600_000), 4400));
        assert!(!f.held_in_flight(sent(3_700_000), 4500));
        assert!(!f.held_in_flight(sent(3_800_000), 4600));
        // A new boot of the peer starts a new reference.
        let reboot = Some(SentAt {
            incarnation: 2,
            at_us: 5,
        });
        assert!(!f.held_in_flight(reboot, 9000));
    }
}
