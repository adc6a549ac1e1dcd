//! cloudha's on-premises L2 provider, the keepalived way.
//!
//! The active node holds every floating IP as an extra address on one interface and announces it
//! with gratuitous ARP, so neighbours and switches send its traffic here at once; the standby
//! removes the addresses. Addresses are changed over rtnetlink and the announcements go out on an
//! AF_PACKET socket: nothing shells out to `ip` or `arping`.
//!
//! This provider sees only its own interface, so it reports the floating IPs it does not hold as
//! [`Holder::Unknown`] rather than guessing that the peer has them.
//!
//! Every call opens its sockets on the calling thread, so they belong to that thread's network
//! namespace (the daemon has one; the tests drive the provider inside namespaces they create).

use std::future::Future;
use std::time::Duration;

use cloudha_provider_core::{
    FloatingIp, Holder, Observation, ObservedResource, Operation, ProgressReporter, Provider,
    ProviderError, TakeoverReport, TakeoverRequest,
};
use tokio::time::Instant;

mod error;
mod garp;
mod netlink;

use netlink::{Link, Netlink, OperState};

/// Gratuitous ARP announcements sent per floating IP on each takeover: one can be lost.
pub const DEFAULT_GARP_COUNT: u32 = 3;

/// Time between two announcement rounds: spreads them past a switch that drops a burst.
pub const DEFAULT_GARP_INTERVAL: Duration = Duration::from_millis(100);

/// The on-prem provider: floating IPs as addresses on a local interface, plus gratuitous ARP.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    interface: String,
    floating_ips: Vec<FloatingIp>,
    garp_count: u32,
    garp_interval: Duration,
}

impl LocalProvider {
    /// A provider that moves `floating_ips` onto `interface`, with the default announcements.
    pub fn new(interface: String, floating_ips: Vec<FloatingIp>) -> Self {
        Self {
            interface,
            floating_ips,
            garp_count: DEFAULT_GARP_COUNT,
            garp_interval: DEFAULT_GARP_INTERVAL,
        }
    }

    /// Send `count` announcements per IP, `interval` apart, the first at once (0 sends none).
    pub fn with_garp(mut self, count: u32, interval: Duration) -> Self {
        self.garp_count = count;
        self.garp_interval = interval;
        self
    }

    /// The interface the floating IPs are added to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The floating IPs this provider moves.
    pub fn floating_ips(&self) -> &[FloatingIp] {
        &self.floating_ips
    }

    fn open_netlink(&self, operation: &str) -> Result<Netlink, ProviderError> {
        Netlink::open().map_err(|e| error::from_io(operation, &self.interface, &e))
    }

    async fn link(&self, netlink: &Netlink) -> Result<Link, ProviderError> {
        netlink
            .link(&self.interface)
            .await
            .map_err(|e| error::from_netlink("link.get", &self.interface, &e))
    }

    /// Refuse a prefix the kernel would reject, before changing anything.
    fn check_prefixes(&self) -> Result<(), ProviderError> {
        match self.floating_ips.iter().find(|f| f.prefix_len > 32) {
            Some(bad) => Err(ProviderError::Permanent {
                operation: format!("address.add {}", bad.address),
                message: format!("prefix length {} is longer than 32", bad.prefix_len),
                fix: "set the floating IP's prefix length to the subnet's, 0 to 32".to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The link's MAC, or why gratuitous ARP cannot be sent from it.
    fn announcing_mac(&self, link: &Link) -> Result<[u8; 6], ProviderError> {
        match (link.ethernet, link.mac) {
            (true, Some(mac)) => Ok(mac),
            _ => Err(ProviderError::Permanent {
                operation: "garp".to_string(),
                message: format!("interface {} is not an Ethernet interface", self.interface),
                fix: "set provider.local.interface to the Ethernet interface on the floating IPs' subnet"
                    .to_string(),
            }),
        }
    }

    /// Make sure removing a floating IP cannot take the interface's other addresses with it.
    ///
    /// When the first address of a subnet on an interface is removed, Linux removes every other
    /// (secondary) address of that subnet too, unless `promote_secondaries` is on. A floating IP
    /// can be that first address (it was added before the node's own address, or DHCP re-added
    /// the node's address later), so keepalived turns the setting on as well.
    async fn ensure_promote_secondaries(
        &self,
        netlink: &Netlink,
        link: &Link,
        progress: &ProgressReporter,
    ) -> Result<(), ProviderError> {
        if link.promote_secondaries == Some(true) || self.floating_ips.is_empty() {
            return Ok(());
        }
        let id = "link.promote_secondaries";
        let op = progress.operation(
            id,
            format!(
                "enable net.ipv4.conf.{}.promote_secondaries so releasing a floating IP keeps the other addresses",
                self.interface
            ),
        );
        let result = netlink
            .enable_promote_secondaries(link.index)
            .await
            .map_err(|e| error::from_netlink(id, &self.interface, &e));
        op.finish(&result);
        if result.is_ok() {
            tracing::info!(interface = %self.interface, "enabled promote_secondaries");
        }
        result
    }

    /// Add every floating IP, marking the report changed when one was missing.
    async fn add_addresses(
        &self,
        netlink: &Netlink,
        link: &Link,
        budget: &Budget,
        progress: &ProgressReporter,
        report: &mut TakeoverReport,
    ) -> Result<(), ProviderError> {
        for fip in &self.floating_ips {
            let id = format!("address.add {}", fip.address);
            let op = progress.operation(
                id.clone(),
                format!(
                    "add {}/{} to {}",
                    fip.address, fip.prefix_len, self.interface
                ),
            );
            let result = budget
                .run(&id, async {
                    netlink
                        .add_address(link.index, fip.address, fip.prefix_len)
                        .await
                        .map_err(|e| error::from_netlink(&id, &self.interface, &e))
                })
                .await;
            count(report, "netlink.addr_add");
            op.finish(&result);
            if result? {
                tracing::info!(interface = %self.interface, address = %fip.address, "floating IP added");
                report.changed = true;
            } else {
                progress.note(format!("{} already on {}", fip.address, self.interface));
            }
        }
        Ok(())
    }

    /// Read the addresses back: the takeover is done only when the kernel shows all of them.
    async fn verify_addresses(
        &self,
        netlink: &Netlink,
        link: &Link,
        budget: &Budget,
        report: &mut TakeoverReport,
    ) -> Result<(), ProviderError> {
        let present = budget
            .run("address.verify", async {
                netlink
                    .ipv4_addresses(link.index)
                    .await
                    .map_err(|e| error::from_netlink("address.verify", &self.interface, &e))
            })
            .await?;
        count(report, "netlink.addr_get");
        let missing: Vec<String> = self
            .floating_ips
            .iter()
            .filter(|f| !present.contains(&f.address))
            .map(|f| f.address.to_string())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            // Something removed them right after we added them (a network manager, most likely).
            Err(ProviderError::Transient {
                operation: "address.verify".to_string(),
                message: format!(
                    "{} not on {} after adding",
                    missing.join(", "),
                    self.interface
                ),
                retry_after: None,
            })
        }
    }

    /// Send the gratuitous ARP rounds for every floating IP.
    async fn announce(
        &self,
        link: &Link,
        budget: &Budget,
        progress: &ProgressReporter,
        report: &mut TakeoverReport,
    ) -> Result<(), ProviderError> {
        if self.garp_count == 0 || self.floating_ips.is_empty() {
            return Ok(());
        }
        let mac = self.announcing_mac(link)?;
        let ops: Vec<Operation> = self
            .floating_ips
            .iter()
            .map(|f| {
                progress.operation(
                    format!("garp {}", f.address),
                    format!(
                        "announce {} at {} on {} ({} gratuitous ARP, {} ms apart)",
                        f.address,
                        format_mac(mac),
                        self.interface,
                        self.garp_count,
                        self.garp_interval.as_millis()
                    ),
                )
            })
            .collect();
        let result = self.send_rounds(link, mac, budget, report).await;
        for op in ops {
            op.finish(&result);
        }
        result
    }

    async fn send_rounds(
        &self,
        link: &Link,
        mac: [u8; 6],
        budget: &Budget,
        report: &mut TakeoverReport,
    ) -> Result<(), ProviderError> {
        // Opened here, on the calling thread, so it is in the same namespace as `link.index`.
        let mut socket = garp::PacketSocket::open(&self.interface, link.index, mac)
            .map_err(|e| error::from_io("garp", &self.interface, &e))?;
        let mut frames: Vec<[u8; garp::FRAME_LEN]> = self
            .floating_ips
            .iter()
            .map(|f| garp::announcement(mac, f.address))
            .collect();
        for round in 0..self.garp_count {
            if round > 0 {
                budget
                    .run("garp", async {
                        tokio::time::sleep(self.garp_interval).await;
                        Ok(())
                    })
                    .await?;
            }
            // The send polls the socket for room, so keep it off the async worker threads.
            let blocking = tokio::task::spawn_blocking(move || {
                let sent = frames.iter().try_for_each(|frame| socket.send(frame));
                (socket, frames, sent)
            });
            let (back, returned, sent) = budget
                .run("garp", async {
                    blocking.await.map_err(|e| ProviderError::Transient {
                        operation: "garp".to_string(),
                        message: format!("send task failed: {e}"),
                        retry_after: None,
                    })
                })
                .await?;
            socket = back;
            frames = returned;
            let sent_count = u32::try_from(frames.len()).unwrap_or(u32::MAX);
            *report
                .api_calls
                .entry("packet.garp".to_string())
                .or_default() += sent_count;
            sent.map_err(|e| error::from_io("garp", &self.interface, &e))?;
        }
        Ok(())
    }

    async fn take_over_inner(
        &self,
        budget: &Budget,
        progress: &ProgressReporter,
    ) -> Result<TakeoverReport, ProviderError> {
        self.check_prefixes()?;
        let mut report = TakeoverReport::default();
        let netlink = self.open_netlink("link.get")?;
        let link = budget.run("link.get", self.link(&netlink)).await?;
        count(&mut report, "netlink.link_get");
        budget
            .run(
                "link.promote_secondaries",
                self.ensure_promote_secondaries(&netlink, &link, progress),
            )
            .await?;
        self.add_addresses(&netlink, &link, budget, progress, &mut report)
            .await?;
        self.verify_addresses(&netlink, &link, budget, &mut report)
            .await?;
        self.announce(&link, budget, progress, &mut report).await?;
        Ok(report)
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn take_over(
        &self,
        request: &TakeoverRequest,
        progress: &ProgressReporter,
    ) -> Result<TakeoverReport, ProviderError> {
        let budget = Budget::new(request.deadline);
        self.take_over_inner(&budget, progress).await
    }

    async fn release(&self, progress: &ProgressReporter) -> Result<(), ProviderError> {
        let netlink = self.open_netlink("link.get")?;
        let link = match netlink.link(&self.interface).await {
            Ok(link) => link,
            // No interface, no addresses on it: there is nothing left to give up.
            Err(e) if netlink::errno(&e) == Some(libc::ENODEV) => {
                progress.note(format!(
                    "interface {} not found; nothing to release",
                    self.interface
                ));
                return Ok(());
            }
            Err(e) => return Err(error::from_netlink("link.get", &self.interface, &e)),
        };
        self.ensure_promote_secondaries(&netlink, &link, progress)
            .await?;
        // Try every address even if one fails: the fewer this node keeps, the smaller the
        // window in which both nodes answer for the same IP.
        let mut first_error = None;
        for fip in &self.floating_ips {
            let id = format!("address.remove {}", fip.address);
            let op = progress.operation(
                id.clone(),
                format!("remove {} from {}", fip.address, self.interface),
            );
            let result = netlink
                .remove_address(link.index, fip.address)
                .await
                .map_err(|e| error::from_netlink(&id, &self.interface, &e));
            op.finish(&result);
            match result {
                Ok(0) => progress.note(format!("{} was not on {}", fip.address, self.interface)),
                Ok(_) => {
                    tracing::info!(interface = %self.interface, address = %fip.address, "floating IP removed");
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn observe(&self) -> Result<Observation, ProviderError> {
        let netlink = self.open_netlink("link.get")?;
        let link = self.link(&netlink).await?;
        let present = netlink
            .ipv4_addresses(link.index)
            .await
            .map_err(|e| error::from_netlink("address.get", &self.interface, &e))?;
        Ok(Observation {
            warnings: Vec::new(),
            writes_in_flight: Vec::new(),
            resources: self
                .floating_ips
                .iter()
                .map(|f| ObservedResource {
                    resource: format!("ip {}", f.address),
                    holder: if present.contains(&f.address) {
                        Holder::Me
                    } else {
                        Holder::Unknown
                    },
                    held_by: None,
                })
                .collect(),
        })
    }

    async fn health(&self) -> Result<(), ProviderError> {
        let netlink = self.open_netlink("link.get")?;
        let link = self.link(&netlink).await?;
        let down = |message: String, fix: &str| ProviderError::Permanent {
            operation: "link.get".to_string(),
            message,
            fix: fix.to_string(),
        };
        if !link.admin_up {
            return Err(down(
                format!("interface {} is administratively down", self.interface),
                &format!("bring it up (ip link set {} up)", self.interface),
            ));
        }
        if link.oper == OperState::NotUp {
            return Err(down(
                format!("interface {} has no carrier", self.interface),
                "connect the interface's link (cable, switch port or peer)",
            ));
        }
        if self.garp_count > 0 {
            self.announcing_mac(&link)?;
        }
        Ok(())
    }
}

/// The takeover's deadline, shared by its steps.
struct Budget {
    total: Duration,
    until: Instant,
}

impl Budget {
    fn new(total: Duration) -> Self {
        Self {
            total,
            // A deadline too far to represent is no deadline at all.
            until: Instant::now().checked_add(total).unwrap_or_else(far_future),
        }
    }

    /// Run one step, failing with `DeadlineExceeded` naming it if the deadline passes first.
    async fn run<T>(
        &self,
        operation: &str,
        step: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        match tokio::time::timeout_at(self.until, step).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::DeadlineExceeded {
                operation: operation.to_string(),
                deadline: self.total,
            }),
        }
    }
}

fn far_future() -> Instant {
    // Roughly 30 years, as tokio itself uses for "never".
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

fn count(report: &mut TakeoverReport, operation: &str) {
    *report.api_calls.entry(operation.to_string()).or_default() += 1;
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn mac_is_formatted_like_ip_link() {
        assert_eq!(
            format_mac([0x02, 0, 0xab, 0x10, 0xff, 1]),
            "02:00:ab:10:ff:01"
        );
    }

    #[test]
    fn defaults_are_three_announcements_100ms_apart() {
        let p = LocalProvider::new("lan0".into(), vec![]);
        assert_eq!(p.garp_count, 3);
        assert_eq!(p.garp_interval, Duration::from_millis(100));
        assert_eq!(p.kind(), "local");
    }

    #[tokio::test]
    async fn prefix_longer_than_32_is_refused_before_any_change() {
        let p = LocalProvider::new(
            "lan0".into(),
            vec![FloatingIp {
                address: Ipv4Addr::new(192, 0, 2, 1),
                prefix_len: 33,
            }],
        );
        let request = TakeoverRequest {
            epoch: 1,
            deadline: Duration::from_secs(5),
        };
        let err = p
            .take_over(&request, &ProgressReporter::discard())
            .await
            .err();
        assert!(
            matches!(err, Some(ProviderError::Permanent { .. })),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn budget_names_the_step_that_ran_out_of_time() {
        let budget = Budget::new(Duration::from_millis(1));
        let result: Result<(), _> = budget
            .run("garp", std::future::pending::<Result<(), ProviderError>>())
            .await;
        assert!(matches!(
            result,
            Err(ProviderError::DeadlineExceeded { ref operation, .. }) if operation == "garp"
        ));
    }
}
