//! Gratuitous ARP: the announcement that makes switches and neighbours send a moved IP's traffic
//! to this node's MAC at once instead of when their ARP caches expire.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use pnet_datalink::{Channel, DataLinkSender, MacAddr, NetworkInterface};

/// Length of an Ethernet II header plus an Ethernet/IPv4 ARP payload, without the FCS.
pub(crate) const FRAME_LEN: usize = 42;

/// Build an ARP announcement (RFC 5227 §2.3) for `ip` from `mac`, broadcast on the segment.
///
/// It is an ARP request whose sender and target protocol addresses are both `ip`: every host
/// that already caches `ip` updates the entry to `mac`, and no host answers it. The target
/// hardware address is zero, as RFC 5227 asks.
pub(crate) fn announcement(mac: [u8; 6], ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    // Ethernet II: broadcast destination, our source, EtherType ARP.
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // ARP: hardware Ethernet (1), protocol IPv4, lengths 6 and 4, operation request (1).
    frame[14..16].copy_from_slice(&1u16.to_be_bytes());
    frame[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&1u16.to_be_bytes());
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&ip.octets());
    // Target hardware address stays zero.
    frame[38..42].copy_from_slice(&ip.octets());
    frame
}

/// A raw AF_PACKET socket bound to one interface, for sending whole Ethernet frames.
pub(crate) struct PacketSocket {
    sender: Box<dyn DataLinkSender>,
}

impl PacketSocket {
    /// Open the socket on interface `index`.
    ///
    /// Call this on the thread whose network namespace the interface lives in: the socket
    /// belongs to the namespace it is created in, and `index` only means something there.
    /// (Sending from another thread afterwards is fine.)
    pub(crate) fn open(name: &str, index: u32, mac: [u8; 6]) -> io::Result<Self> {
        let interface = NetworkInterface {
            name: name.to_string(),
            description: String::new(),
            index,
            mac: Some(MacAddr::from(mac)),
            ips: Vec::new(),
            flags: 0,
        };
        let config = pnet_datalink::Config {
            // We only send; listening promiscuously would make the NIC pass up traffic for us.
            promiscuous: false,
            // The socket is non-blocking and the send polls for room; bound that wait.
            write_timeout: Some(Duration::from_secs(1)),
            read_buffer_size: 64,
            write_buffer_size: FRAME_LEN,
            ..pnet_datalink::Config::default()
        };
        match pnet_datalink::channel(&interface, config)? {
            // The receiving half is dropped here; the shared socket lives on in the sender.
            Channel::Ethernet(sender, _receiver) => Ok(Self { sender }),
            _ => Err(io::Error::other("packet socket is not an Ethernet channel")),
        }
    }

    /// Send one frame; blocks for at most the write timeout, so call it off the async threads.
    pub(crate) fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.sender
            .send_to(frame, None)
            .unwrap_or_else(|| Err(io::Error::other("frame larger than the send buffer")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_is_byte_exact() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let frame = announcement(mac, Ipv4Addr::new(192, 0, 2, 100));
        #[rustfmt::skip]
        let expected: [u8; FRAME_LEN] = [
            // Ethernet: dst broadcast, src, type ARP
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x08, 0x06,
            // ARP: htype 1, ptype IPv4, hlen 6, plen 4, op request
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
            // sender MAC, sender IP
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 192, 0, 2, 100,
            // target MAC (zero), target IP (same as sender: gratuitous)
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0, 2, 100,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn announcement_carries_the_given_address_twice() {
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        let frame = announcement([0xaa; 6], ip);
        assert_eq!(&frame[28..32], &ip.octets());
        assert_eq!(&frame[38..42], &ip.octets());
        assert_eq!(&frame[6..12], &[0xaa; 6]);
        assert_eq!(&frame[22..28], &[0xaa; 6]);
    }
}
