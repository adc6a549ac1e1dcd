//! The cloud a campaign runs against: the Azure emulator (every fault kind) or AWS as moto
//! emulates it behind the AWS harness's fault proxy (kills, cuts, partitions, loss, flapping,
//! throttling and server errors; no mid-takeover kill hook, no propagation delay).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::faults::{self, KillAtRequest};
use super::schedule::CloudFault;
use crate::e2e_local::{Options, Pair, SOON};
use crate::netns::{wait_until, Node};
use crate::{e2e_aws, e2e_azure};

/// Who holds the floating IP(s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    Node(Node),
    /// On both NICs at once (AWS: moto keeps a reassigned address on the old ENI until it is
    /// unassigned, so this is a move in progress, not a fault).
    Both,
    Nobody,
    /// Somewhere else: a third NIC, or the IPs split in a way no move produces.
    Other(String),
}

/// The cloud's state, as one poll saw it.
#[derive(Clone, Debug)]
pub struct CloudView {
    pub holder: Holder,
    /// Every floating IP settled (in effect) on node 0 (A) / 1 (B), and only there.
    pub settled_on: [bool; 2],
    /// The node every route points at, if they all point at the same one.
    pub route_owner: Option<Node>,
    /// The routes' targets, for the timeline.
    pub route_desc: String,
    pub operations_in_progress: usize,
    /// Each NIC as read and as settled, apart from the floating IP (AWS: each ENI as read,
    /// twice, apart from the floating IPs and the Elastic IP's association).
    pub nic_settings: Option<[[Value; 2]; 2]>,
}

pub trait Backend {
    fn name(&self) -> &'static str;
    fn view(&self) -> CloudView;
    /// Queues a cloud fault; false if this backend cannot inject it.
    fn inject(&self, fault: CloudFault, times: usize) -> bool;
    fn clear_faults(&self);
    fn set_nic_propagation(&self, ms: u64);
    /// Arms the mid-takeover kill (see `faults::arm_kill_at_request`); None if unsupported.
    fn arm_kill(
        &self,
        victim: Node,
        on_path: &str,
        pid: u32,
        after_writes: u32,
    ) -> Option<Arc<Mutex<KillAtRequest>>>;
    fn disarm(&self);
}

/// Which backend a campaign runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Azure,
    Aws,
}

/// A pair of daemons on a fresh cloud of `kind`, A active and converged, B standby.
pub fn start(
    kind: Kind,
    tag: &str,
    nic_propagation_ms: u64,
    atomic_move: bool,
) -> (Pair, Box<dyn Backend>) {
    match kind {
        Kind::Azure => {
            let mode = if atomic_move { "atomic" } else { "two_step" };
            let (pair, cloud) = e2e_azure::start_with(tag, nic_propagation_ms, false, mode);
            cloud
                .emu
                .set_move_propagation_delay(Duration::from_millis(nic_propagation_ms));
            (pair, Box::new(Azure(cloud)))
        }
        Kind::Aws => {
            let mut cloud = e2e_aws::Cloud::build();
            let opts = Options {
                preempt: false,
                ..Options::default()
            };
            let pair = Pair::prepare(tag, opts, e2e_aws::aws_provider(&cloud, "1s"));
            cloud.serve(&pair);
            let pair = pair.start_both();
            wait_until("everything on fw-a's ENI", SOON, || {
                cloud.all_on(Node::A).then_some(())
            });
            (pair, Box::new(Aws(cloud)))
        }
    }
}

struct Azure(e2e_azure::Cloud);

fn nic(node: Node) -> &'static str {
    match node {
        Node::A => "nic-appliance-a",
        _ => "nic-appliance-b",
    }
}

/// LAN addresses of the appliances in the emulated Azure (the route's next hop).
const AZURE_ADDR: [(Node, &str); 2] = [(Node::A, "10.10.1.4"), (Node::B, e2e_azure::ADDR_B)];

impl Backend for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn view(&self) -> CloudView {
        use cloudha_azure_emulator::nic_settings_apart_from;
        let emu = &self.0.emu;
        let ip = e2e_azure::floating();
        let holder = match emu.ip_holder(ip) {
            None => Holder::Nobody,
            Some(h) => [Node::A, Node::B]
                .into_iter()
                .find(|n| h.to_ascii_lowercase().contains(&format!("/{}/", nic(*n))))
                .map(Holder::Node)
                .unwrap_or(Holder::Other(h)),
        };
        let settled = [Node::A, Node::B].map(|n| emu.nic_settled(nic(n)).unwrap_or(Value::Null));
        let quoted = format!("\"{}\"", e2e_azure::FLOATING);
        let has = [0, 1].map(|i| settled[i].to_string().contains(&quoted));
        let hop = self.0.route_next_hop();
        CloudView {
            holder,
            settled_on: [has[0] && !has[1], has[1] && !has[0]],
            route_owner: AZURE_ADDR
                .iter()
                .find(|(_, a)| hop.as_deref() == Some(*a))
                .map(|(n, _)| *n),
            route_desc: hop.unwrap_or_else(|| "?".into()),
            operations_in_progress: emu.operations_in_progress(),
            nic_settings: Some([0, 1].map(|i| {
                let current = emu.nic(nic([Node::A, Node::B][i])).unwrap_or(Value::Null);
                [
                    nic_settings_apart_from(&current, ip),
                    nic_settings_apart_from(&settled[i], ip),
                ]
            })),
        }
    }

    fn inject(&self, fault: CloudFault, times: usize) -> bool {
        for f in faults::emulator_faults(fault, times) {
            self.0.emu.push_fault(f);
        }
        true
    }

    fn clear_faults(&self) {
        self.0.emu.clear_faults();
    }

    fn set_nic_propagation(&self, ms: u64) {
        self.0
            .emu
            .set_nic_propagation_delay(Duration::from_millis(ms));
    }

    fn arm_kill(
        &self,
        victim: Node,
        on_path: &str,
        pid: u32,
        after_writes: u32,
    ) -> Option<Arc<Mutex<KillAtRequest>>> {
        Some(faults::arm_kill_at_request(
            &self.0.emu,
            e2e_azure::vm(victim),
            on_path,
            pid,
            after_writes,
        ))
    }

    fn disarm(&self) {
        self.0.emu.set_request_hook(None);
    }
}

struct Aws(e2e_aws::Cloud);

impl Backend for Aws {
    fn name(&self) -> &'static str {
        "aws"
    }

    /// Read straight from moto (not through the fault proxy, whose faults are for the daemons).
    fn view(&self) -> CloudView {
        let on = [Node::A, Node::B].map(|n| self.0.addresses(n).len());
        let holder = match on {
            [0, 0] => Holder::Nobody,
            [2, 0] => Holder::Node(Node::A),
            [0, 2] => Holder::Node(Node::B),
            [2, 2] => Holder::Both,
            [a, b] => Holder::Other(format!("{a} floating IP(s) on A's ENI, {b} on B's")),
        };
        let eip = self.0.eip_eni();
        let targets = self.0.route_targets();
        let owner_of = |eni: Option<&str>| {
            [Node::A, Node::B]
                .into_iter()
                .find(|n| eni == Some(self.0.eni(*n)))
        };
        let route_owners: Vec<Option<Node>> =
            targets.iter().map(|t| owner_of(t.as_deref())).collect();
        let route_owner = route_owners[0].filter(|n| route_owners.iter().all(|o| *o == Some(*n)));
        let eip_owner = owner_of(eip.as_deref());
        let settled = |n: Node| holder == Holder::Node(n) && eip_owner == Some(n);
        CloudView {
            settled_on: [settled(Node::A), settled(Node::B)],
            holder,
            route_owner,
            route_desc: format!(
                "{:?} eip {:?}",
                route_owners,
                eip_owner.map(|n| format!("{n:?}"))
            ),
            operations_in_progress: 0,
            // An ENI has no separate "settled" state: the read is compared twice.
            nic_settings: Some([Node::A, Node::B].map(|n| {
                let settings = self.0.eni_settings(n);
                [settings.clone(), settings]
            })),
        }
    }

    fn inject(&self, fault: CloudFault, times: usize) -> bool {
        use crate::aws_harness::proxy::Fault;
        let (actions, f): (&[&'static str], Fault) = match fault {
            CloudFault::Throttled => (
                &["AssignPrivateIpAddresses", "AssociateAddress"],
                Fault::Error {
                    status: 503,
                    code: "RequestLimitExceeded",
                },
            ),
            CloudFault::InternalError => (
                &["ReplaceRoute", "DescribeNetworkInterfaces"],
                Fault::Error {
                    status: 500,
                    code: "InternalError",
                },
            ),
            CloudFault::Unavailable => (
                &["AssignPrivateIpAddresses", "ReplaceRoute"],
                Fault::Error {
                    status: 503,
                    code: "Unavailable",
                },
            ),
            CloudFault::SlowAnswer { ms } => (
                &["DescribeNetworkInterfaces"],
                Fault::Delay(Duration::from_millis(ms)),
            ),
            _ => return false,
        };
        for action in actions {
            self.0.proxy.inject(action, f.clone(), times as u32);
        }
        true
    }

    fn clear_faults(&self) {
        self.0.proxy.clear_faults();
        // The proxy logs every request: forget them between episodes to bound its memory.
        self.0.proxy.clear();
    }

    fn set_nic_propagation(&self, _ms: u64) {}

    fn arm_kill(
        &self,
        _victim: Node,
        _on_path: &str,
        _pid: u32,
        _after_writes: u32,
    ) -> Option<Arc<Mutex<KillAtRequest>>> {
        None
    }

    fn disarm(&self) {}
}
