//! Keepalives between the two nodes: the wire format ([`packet`]), the UDP tasks ([`link`]) and
//! the sender's clock ([`ticker`]).

pub mod link;
pub mod packet;
pub mod peer_state;
pub mod ticker;
