//! Who holds each floating IP, Elastic IP and route: pure functions of what EC2 reported, shared
//! by `observe()` (report) and the takeover (decide what to skip).

use std::net::Ipv4Addr;

use cloudha_provider_core::Holder;

use crate::describe::{Association, Enis, RouteTarget};

/// Who holds the floating IP `ip`.
pub(crate) fn ip_holder(ip: Ipv4Addr, enis: &Enis) -> Holder {
    let mine = enis.own.addresses.contains(&ip);
    let peers = enis
        .peer
        .as_ref()
        .is_some_and(|p| p.addresses.contains(&ip));
    match (mine, peers) {
        (true, true) => Holder::Both,
        (true, false) => Holder::Me,
        (false, true) => Holder::Peer,
        (false, false) => Holder::Nobody,
    }
}

/// Whether the Elastic IP is where a takeover puts it: on `own` at `private_ip`.
///
/// moto ignores `PrivateIpAddress` in AssociateAddress and reports every association on the
/// ENI's primary IP, so an association this provider made itself (`ours`, the id AssociateAddress
/// returned) also counts: we asked for `private_ip`, and a new id would show anyone else's change.
pub(crate) fn eip_in_place(
    association: &Association,
    own: &str,
    private_ip: Ipv4Addr,
    ours: Option<&str>,
) -> bool {
    association.eni.as_deref() == Some(own)
        && (association.private_ip == Some(private_ip)
            || (ours.is_some() && association.association_id.as_deref() == ours))
}

/// Who holds the Elastic IP. On our ENI but at another private IP counts as nobody: its traffic
/// does not reach the floating IP, and a takeover re-associates it.
pub(crate) fn eip_holder(
    association: Option<&Association>,
    own: &str,
    peer: &str,
    private_ip: Ipv4Addr,
    ours: Option<&str>,
) -> Holder {
    match association {
        Some(a) if eip_in_place(a, own, private_ip, ours) => Holder::Me,
        Some(a) if a.eni.as_deref() == Some(peer) => Holder::Peer,
        _ => Holder::Nobody,
    }
}

/// Who a route points at; a missing route, or one to another target, is nobody's.
pub(crate) fn route_holder(target: Option<&RouteTarget>, own: &str, peer: &str) -> Holder {
    match target.and_then(|t| t.eni.as_deref()) {
        Some(eni) if eni == own => Holder::Me,
        Some(eni) if eni == peer => Holder::Peer,
        _ => Holder::Nobody,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::describe::Eni;

    const FIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);

    fn eni(addresses: &[Ipv4Addr]) -> Eni {
        Eni {
            addresses: addresses.iter().copied().collect::<BTreeSet<_>>(),
            ..Eni::default()
        }
    }

    #[test]
    fn ip_holder_covers_all_four_cases() {
        let on = |own: bool, peer: Option<bool>| Enis {
            own: eni(if own { &[FIP] } else { &[] }),
            peer: peer.map(|p| eni(if p { &[FIP] } else { &[] })),
        };
        assert_eq!(ip_holder(FIP, &on(true, Some(true))), Holder::Both);
        assert_eq!(ip_holder(FIP, &on(true, Some(false))), Holder::Me);
        assert_eq!(ip_holder(FIP, &on(false, Some(true))), Holder::Peer);
        assert_eq!(ip_holder(FIP, &on(false, None)), Holder::Nobody);
        assert_eq!(ip_holder(FIP, &on(true, None)), Holder::Me);
    }

    fn assoc(eni: &str, private: [u8; 4], id: &str) -> Association {
        Association {
            public_ip: Some("198.51.100.7".into()),
            association_id: Some(id.into()),
            eni: Some(eni.into()),
            private_ip: Some(Ipv4Addr::from(private)),
        }
    }

    #[test]
    fn elastic_ip_is_ours_at_the_floating_ip_or_by_our_association_id() {
        let exact = assoc("eni-a", [10, 0, 1, 100], "eipassoc-1");
        assert_eq!(
            eip_holder(Some(&exact), "eni-a", "eni-b", FIP, None),
            Holder::Me
        );
        // moto: on our ENI's primary IP after we asked for the floating IP.
        let moto = assoc("eni-a", [10, 0, 1, 10], "eipassoc-2");
        assert_eq!(
            eip_holder(Some(&moto), "eni-a", "eni-b", FIP, Some("eipassoc-2")),
            Holder::Me
        );
        assert_eq!(
            eip_holder(Some(&moto), "eni-a", "eni-b", FIP, None),
            Holder::Nobody
        );
        assert_eq!(
            eip_holder(Some(&moto), "eni-a", "eni-b", FIP, Some("eipassoc-1")),
            Holder::Nobody
        );
        let peers = assoc("eni-b", [10, 0, 1, 11], "eipassoc-3");
        assert_eq!(
            eip_holder(Some(&peers), "eni-a", "eni-b", FIP, Some("eipassoc-3")),
            Holder::Peer
        );
        assert_eq!(
            eip_holder(None, "eni-a", "eni-b", FIP, None),
            Holder::Nobody
        );
    }

    #[test]
    fn route_holder_follows_the_target_eni() {
        let to = |eni: Option<&str>| RouteTarget {
            eni: eni.map(str::to_string),
            describe: eni.unwrap_or("igw-1").to_string(),
        };
        assert_eq!(
            route_holder(Some(&to(Some("eni-a"))), "eni-a", "eni-b"),
            Holder::Me
        );
        assert_eq!(
            route_holder(Some(&to(Some("eni-b"))), "eni-a", "eni-b"),
            Holder::Peer
        );
        assert_eq!(
            route_holder(Some(&to(None)), "eni-a", "eni-b"),
            Holder::Nobody
        );
        assert_eq!(route_holder(None, "eni-a", "eni-b"), Holder::Nobody);
    }
}
