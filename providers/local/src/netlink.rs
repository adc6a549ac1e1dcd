//! The few rtnetlink requests the provider needs: look up a link, and add, list and remove IPv4
//! addresses on it.
//!
//! Every call opens its own netlink socket. That keeps no state to go stale between calls (the
//! daemon calls the provider rarely), and it means the socket always belongs to the network
//! namespace of the thread making the call, which is what lets the tests drive the provider
//! inside a namespace they created.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, LinkAttribute, LinkFlags, LinkLayerType, LinkMessage,
    State,
};
use rtnetlink::{Error, Handle};
use tokio::task::JoinHandle;

/// What the provider needs to know about its interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    /// Kernel interface index, used by every address request and by the packet socket.
    pub index: u32,
    /// Hardware address, if the link has a 6-byte (Ethernet) one.
    pub mac: Option<[u8; 6]>,
    /// Whether the link is ARPHRD_ETHER: gratuitous ARP means nothing on other link types.
    pub ethernet: bool,
    /// IFF_UP: the administrator (or the network manager) brought the link up.
    pub admin_up: bool,
    /// RFC 2863 operational state as the kernel reports it.
    pub oper: OperState,
    /// The IPv4 `promote_secondaries` setting, when the kernel reported the link's IPv4 config.
    pub promote_secondaries: Option<bool>,
}

/// The operational states the provider distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OperState {
    /// Carrier present and ready to send.
    Up,
    /// The driver does not track operational state (dummy, some tunnels): treat as usable.
    Unknown,
    /// Anything else: no carrier, lower layer down, dormant, testing.
    NotUp,
}

/// An open rtnetlink connection; the background task that drives it ends when this drops.
pub(crate) struct Netlink {
    handle: Handle,
    task: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        // The connection task would also end once every handle is gone; aborting makes the
        // socket close now rather than at the task's next poll.
        self.task.abort();
    }
}

impl Netlink {
    /// Open a netlink socket in the calling thread's network namespace.
    pub(crate) fn open() -> std::io::Result<Self> {
        let (connection, handle, _messages) = rtnetlink::new_connection()?;
        let task = tokio::spawn(connection);
        Ok(Self { handle, task })
    }

    /// Look up a link by name; the kernel answers ENODEV when it does not exist.
    pub(crate) async fn link(&self, name: &str) -> Result<Link, Error> {
        let mut replies = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match replies.try_next().await? {
            Some(message) => Ok(link_from_message(&message)),
            // A non-dump request that yields nothing is not something the kernel does, but
            // report it as the missing link it would mean rather than trusting it.
            None => Err(Error::RequestFailed),
        }
    }

    /// Turn on IPv4 `promote_secondaries` on the link (sysctl net.ipv4.conf.IFACE.*).
    pub(crate) async fn enable_promote_secondaries(&self, index: u32) -> Result<(), Error> {
        let mut conf = InetDevConf::default();
        conf.promote_secondaries = 1;
        let mut message = LinkMessage::default();
        message.header.index = index;
        // Only non-zero fields are sent, so this changes promote_secondaries and nothing else.
        message
            .attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::DevConfRequest(conf),
            ])]));
        self.handle.link().set(message).execute().await
    }

    /// Add `address/prefix_len`; `Ok(false)` when the kernel says it is already there.
    pub(crate) async fn add_address(
        &self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<bool, Error> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(address), prefix_len)
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every address message on the link (the kernel dumps all links; rtnetlink filters).
    async fn dump(&self, index: u32) -> Result<Vec<AddressMessage>, Error> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
    }

    /// Every IPv4 address on the link.
    pub(crate) async fn ipv4_addresses(&self, index: u32) -> Result<Vec<Ipv4Addr>, Error> {
        Ok(self
            .dump(index)
            .await?
            .iter()
            .filter_map(local_ipv4)
            .collect())
    }

    /// Remove `address` from the link; returns how many entries went (0 when it was absent).
    pub(crate) async fn remove_address(&self, index: u32, address: Ipv4Addr) -> Result<u32, Error> {
        let mut removed = 0;
        let matching = self
            .dump(index)
            .await?
            .into_iter()
            .filter(|m| local_ipv4(m) == Some(address));
        for message in matching {
            match self.handle.address().del(message).execute().await {
                Ok(()) => removed += 1,
                // Gone between the dump and the delete (another tool, or the kernel dropping a
                // secondary with its primary): absent is what we wanted.
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

/// The positive errno a netlink error carries, if it is a kernel NACK.
pub(crate) fn errno(error: &Error) -> Option<i32> {
    match error {
        Error::NetlinkError(message) => message.code.map(|c| c.get().abs()),
        _ => None,
    }
}

/// The interface's own IPv4 address in an address message: IFA_LOCAL, else IFA_ADDRESS.
fn local_ipv4(message: &AddressMessage) -> Option<Ipv4Addr> {
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is always ours.
            AddressAttribute::Local(IpAddr::V4(ip)) => return Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
            _ => {}
        }
    }
    address
}

fn link_from_message(message: &LinkMessage) -> Link {
    let mut mac = None;
    let mut oper = OperState::Unknown;
    let mut promote_secondaries = None;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::Address(bytes) => mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            LinkAttribute::OperState(state) => {
                oper = match state {
                    State::Up => OperState::Up,
                    State::Unknown => OperState::Unknown,
                    _ => OperState::NotUp,
                }
            }
            LinkAttribute::AfSpecUnspec(families) => {
                for family in families {
                    if let AfSpecUnspec::Inet(inet) = family {
                        for entry in inet {
                            if let AfSpecInet::DevConf(conf) = entry {
                                promote_secondaries = Some(conf.promote_secondaries != 0);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Link {
        index: message.header.index,
        mac,
        ethernet: message.header.link_layer_type == LinkLayerType::Ether,
        admin_up: message.header.flags.contains(LinkFlags::Up),
        oper,
        promote_secondaries,
    }
}
