//! The node's own health beyond the keepalive: tracked checks (`[[track]]`, see [`track`]) and
//! the load-balancer health probe that follows the HA role (`[health_probe]`, see [`probe`]).

pub mod config;
pub mod probe;
pub mod track;

use crate::fsm::{PeerAdvert, Role};

/// What decides whether the health probe is open, besides this node's own advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeInputs {
    /// The current active term's takeover has converged once (a later reconcile repair does
    /// not close the probe again).
    pub term_converged: bool,
    /// Every tracked check with the fault effect passed its last decision (weighted checks act
    /// through the election).
    pub checks_healthy: bool,
    /// The peer is heard and says it is active (possibly handing over).
    pub peer_active: bool,
}

/// Whether the health probe should answer "send me traffic": active, its takeover converged,
/// not handing over, not leaving, every fault-effect tracked check healthy, and the peer not
/// (or no longer) active. The last one keeps the two probes from ever being open together in a planned
/// handover: with nothing to move in the cloud a takeover converges at once, before the node
/// handing over has heard that it was relieved and closed its own.
pub fn probe_should_be_open(advert: &PeerAdvert, inputs: ProbeInputs) -> bool {
    advert.role == Role::Active
        && inputs.term_converged
        && !advert.yielding
        && !advert.leaving
        && inputs.checks_healthy
        && !inputs.peer_active
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_open_only_on_a_settled_healthy_active_node() {
        let active = PeerAdvert {
            role: Role::Active,
            priority: 100,
            epoch: 3,
            takeover_in_progress: false,
            yielding: false,
            leaving: false,
            planned: false,
        };
        let good = ProbeInputs {
            term_converged: true,
            checks_healthy: true,
            peer_active: false,
        };
        assert!(probe_should_be_open(&active, good));
        let not = |inputs: ProbeInputs| !probe_should_be_open(&active, inputs);
        assert!(
            not(ProbeInputs {
                term_converged: false,
                ..good
            }),
            "takeover not converged"
        );
        assert!(
            not(ProbeInputs {
                checks_healthy: false,
                ..good
            }),
            "a check fails"
        );
        assert!(
            not(ProbeInputs {
                peer_active: true,
                ..good
            }),
            "the peer still active"
        );
        let yielding = PeerAdvert {
            yielding: true,
            ..active
        };
        assert!(!probe_should_be_open(&yielding, good), "handing over");
        let leaving = PeerAdvert {
            leaving: true,
            ..active
        };
        assert!(!probe_should_be_open(&leaving, good), "shutting down");
        for role in [Role::Init, Role::Standby, Role::Fault, Role::Maintenance] {
            let other = PeerAdvert { role, ..active };
            assert!(!probe_should_be_open(&other, good), "{role:?}");
        }
    }
}
