//! Fencing and reconcile: what a read of the cloud decides (repair drift on a settled active
//! node, or stand by because the unheard peer took over across a partition), and adverts that
//! predate the fence.

use super::damping::Damping;
use super::{Action, Fsm, Millis, PeerAdvert, Role, TakeoverState};

/// Whether a keepalive echoing `echo_us` (see `Event::Keepalive`) was sent after `at`: the
/// peer had then received one this node sent at `at` or later. Absent: sent just now.
fn sent_after(echo_us: Option<u64>, at: Millis) -> bool {
    echo_us.is_none_or(|echo| echo >= at.saturating_mul(1000))
}

impl Fsm {
    /// Whether the node stands by because the unheard peer took the floating IP.
    pub fn fenced(&self) -> bool {
        self.fenced_at.is_some()
    }

    /// A fenced node stood down because the cloud showed the peer holding what it had: an
    /// advert saying the peer is not active that may have been sent before then is not news.
    /// Keepalives delayed on their way (a slow or congested path: the fault campaign delays
    /// them by up to 700 ms) still said "standby" after the peer had taken over; believing
    /// one lifted the fence, and the node won an election it had just lost (AWS seed 225).
    /// An advert claiming "active" is believed: the epoch rule decides then.
    pub(super) fn predates_fence(&self, advert: &PeerAdvert, echo_us: Option<u64>) -> bool {
        self.fenced_at
            .is_some_and(|at| advert.role != Role::Active && !sent_after(echo_us, at))
    }

    /// Reconcile: repair drift on a settled active node, except where the peer holds a floating
    /// IP or route and claims it (alive and active: the epoch rule decides) or cannot be heard (it took
    /// over across a partition: taking it back would start a ping-pong, so stand by instead).
    ///
    /// A peer that is heard, not active, and holds something is repaired only once it has been
    /// heard again, still not active, in an advert sent after an earlier read already saw it
    /// holding. The two
    /// nodes' dead-interval clocks are up to a keepalive interval apart, so when a partition
    /// starts the peer can take over (and its route PUT land) while this node still counts the
    /// peer's last advert, "standby", as current: repairing then wrote against the peer's
    /// takeover and the route moved three times in one partition (fault campaign, Azure seed
    /// 81). One reconcile interval later the peer is either heard (it is active: the epoch rule;
    /// still standby: a leftover, repaired) or not (fenced).
    ///
    /// Drift the unheard peer does not hold is repaired on the second read in a row that
    /// finds it (see below).
    ///
    /// Nothing is repaired while a write this node did not make is in flight: the second read
    /// covers a peer's removal that lands within one reconcile interval, but an Azure NIC
    /// update can take minutes, and repairing against it moved the route three times in one
    /// partition (fault campaign, Azure seed 106). The count of reads starts again once the
    /// write has ended, so the peer's add that follows it is seen first.
    pub(super) fn on_observed(
        &mut self,
        drift: bool,
        peer_holds: bool,
        write_in_flight: bool,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        let unheard_drift_seen = std::mem::take(&mut self.unheard_drift_seen);
        if !peer_holds {
            self.fenced_at = None;
        }
        if !peer_holds {
            self.peer_hold_seen_at = None;
        }
        if self.role != Role::Active
            || self.takeover != TakeoverState::Done
            || self.yielding.is_some()
            || !drift
        {
            return;
        }
        let peer = self.peer.filter(|_| self.peer_alive(now)).map(|p| p.advert);
        match peer {
            Some(p) if p.role == Role::Active => {}
            // Standing by for a peer that took over stays as it is; any repair waits.
            _ if write_in_flight && !(peer.is_none() && peer_holds) => {}
            None if peer_holds => {
                self.fenced_at = Some(now);
                self.damping = Some(Damping { clean_since: now });
                self.step_down(
                    Role::Standby,
                    "the floating IP or a route is on the peer and the peer is not heard: it took over across a keepalive partition; standing by until it is heard again".into(),
                    now,
                    out,
                );
            }
            Some(_) if peer_holds => {
                // Heard again since, in an advert the peer sent after that read: one merely
                // delivered since could have been sent before the peer took over.
                let heard_since = |seen: Millis| {
                    self.peer
                        .is_some_and(|v| v.at > seen && sent_after(v.echo_us, seen))
                };
                match self.peer_hold_seen_at {
                    Some(seen) if heard_since(seen) => {
                        self.peer_hold_seen_at = None;
                        self.repair(now, out);
                    }
                    _ => {
                        self.peer_hold_seen_at.get_or_insert(now);
                    }
                }
            }
            // Drift the unheard peer does not hold: an address on no NIC (Azure: the peer's
            // removal landed, its add not yet) or on both ENIs (AWS: reassigned, not yet
            // unassigned). The peer may be half way through a takeover across a partition, and
            // repairing now takes the address from under it: two moves in one partition (fault
            // campaign, Azure seeds 228 and 416, AWS seed 230). The next read shows the peer
            // holding it (fenced) or still nobody (repaired then, one reconcile later).
            None if !unheard_drift_seen => self.unheard_drift_seen = true,
            _ => self.repair(now, out),
        }
    }

    /// Take over again, in place, to put back what reconcile found elsewhere.
    pub(super) fn repair(&mut self, now: Millis, out: &mut Vec<Action>) {
        self.takeover = TakeoverState::Running { since: now };
        out.push(Action::TakeOver { epoch: self.epoch });
        out.push(Action::Advertise);
    }
}
