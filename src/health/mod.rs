//! The node's own health beyond the keepalive: tracked checks (`[[track]]`, see [`track`]) and
//! the load-balancer health probe that follows the HA role (`[health_probe]`, see [`probe`]).

pub mod config;
pub mod probe;
pub mod track;

use crate::fsm::{PeerAdvert, Role};

/// Whether the health probe should answer "send me traffic": active, its takeover converged
/// once in this term (a later reconcile repair does not close it), not handing over, not
/// leaving, and every tracked check healthy.
pub fn probe_should_be_open(
    advert: &PeerAdvert,
    term_converged: bool,
    checks_healthy: bool,
) -> bool {
    advert.role == Role::Active
        && term_converged
        && !advert.yielding
        && !advert.leaving
        && checks_healthy
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
        assert!(probe_should_be_open(&active, true, true));
        assert!(
            !probe_should_be_open(&active, false, true),
            "takeover not converged"
        );
        assert!(!probe_should_be_open(&active, true, false), "a check fails");
        let yielding = PeerAdvert {
            yielding: true,
            ..active
        };
        assert!(!probe_should_be_open(&yielding, true, true), "handing over");
        let leaving = PeerAdvert {
            leaving: true,
            ..active
        };
        assert!(!probe_should_be_open(&leaving, true, true), "shutting down");
        for role in [Role::Init, Role::Standby, Role::Fault, Role::Maintenance] {
            let other = PeerAdvert { role, ..active };
            assert!(!probe_should_be_open(&other, true, true), "{role:?}");
        }
    }
}
