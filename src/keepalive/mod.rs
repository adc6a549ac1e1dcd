//! Keepalives between the two nodes: the wire format ([`packet`]) and the UDP tasks ([`link`]).

pub mod link;
pub mod packet;
pub mod peer_state;
