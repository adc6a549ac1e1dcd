//! The in-memory model of the emulated subscription(s), and the lazy completion of
//! long-running operations.
//!
//! Writes do not change a resource's settled state at once: a NIC or route PUT stores a
//! *pending* document and an [`Operation`] that becomes due after the configured
//! propagation delay. [`State::tick`] (called at the start of every request and accessor)
//! completes due operations. While pending, a NIC holds the union of its old and new
//! private IPs, which is what makes the real service refuse the second half of a two-step
//! IP move (`PrivateIPAddressInUse`) until the first half has propagated.

use crate::config::Settings;
use crate::events::ScheduledEvents;
use crate::faults::FaultQueue;
use crate::ids::{self, ArmId};
use crate::reqlog::LoggedRequest;
use crate::throttle::Throttle;
use crate::validate::Ipv4Net;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use tokio::time::Instant;

/// `W/"<uuid>"`, the weak ETag format Network resources use.
pub(crate) fn new_etag() -> String {
    format!("W/\"{}\"", uuid::Uuid::new_v4())
}

/// A subscription and its tenant.
#[derive(Clone, Debug)]
pub(crate) struct Subscription {
    pub id: String,
    pub tenant_id: String,
}

/// A resource group.
#[derive(Clone, Debug)]
pub(crate) struct ResourceGroup {
    pub name: String,
    /// The scenario's region: where ARM looks for a resource provider registration.
    pub location: String,
}

/// A subnet, flattened out of its virtual network.
#[derive(Clone, Debug)]
pub(crate) struct Subnet {
    pub id: String,
    pub name: String,
    pub vnet_id: String,
    pub prefix: Ipv4Net,
    pub route_table_id: Option<String>,
}

/// A virtual network (read-only in the emulator).
#[derive(Clone, Debug)]
pub(crate) struct Vnet {
    pub id: String,
    pub name: String,
    pub location: String,
    pub address_prefixes: Vec<String>,
    pub etag: String,
    pub resource_guid: String,
    pub subnets: Vec<Subnet>,
}

/// A network interface: its settled document and, while an operation runs, the pending one.
#[derive(Clone, Debug)]
pub(crate) struct Nic {
    pub id: String,
    pub applied: Value,
    pub pending: Option<Value>,
    /// Operation that owns `pending`.
    pub op_id: Option<String>,
    /// The pending operation creates the NIC (a failed create removes it again).
    pub creating: bool,
}

impl Nic {
    /// What GET shows: the goal state while an operation runs (`provisioningState: Updating`).
    pub fn current(&self) -> &Value {
        self.pending.as_ref().unwrap_or(&self.applied)
    }
}

/// A route table with its routes.
#[derive(Clone, Debug)]
pub(crate) struct RouteTable {
    pub id: String,
    pub name: String,
    pub location: String,
    pub etag: String,
    pub resource_guid: String,
    pub tags: Option<Value>,
    pub disable_bgp_route_propagation: bool,
    /// Settled route documents in creation order.
    pub routes: Vec<Value>,
    /// Route being written (document in `Updating` state) and whether it is new.
    pub pending: Option<PendingRoute>,
}

/// A route write in flight.
#[derive(Clone, Debug)]
pub(crate) struct PendingRoute {
    pub doc: Value,
    pub op_id: String,
    pub creating: bool,
}

impl RouteTable {
    fn route_name(doc: &Value) -> &str {
        doc.get("name").and_then(Value::as_str).unwrap_or("")
    }

    /// The route as GET shows it (pending version if one is being written).
    pub fn route(&self, name: &str) -> Option<&Value> {
        if let Some(p) = &self.pending {
            if Self::route_name(&p.doc).eq_ignore_ascii_case(name) {
                return Some(&p.doc);
            }
        }
        self.routes
            .iter()
            .find(|r| Self::route_name(r).eq_ignore_ascii_case(name))
    }

    /// All routes as GET shows them.
    pub fn current_routes(&self) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::with_capacity(self.routes.len() + 1);
        let pending_name = self
            .pending
            .as_ref()
            .map(|p| Self::route_name(&p.doc).to_ascii_lowercase());
        for r in &self.routes {
            match (&pending_name, &self.pending) {
                (Some(pn), Some(p)) if Self::route_name(r).eq_ignore_ascii_case(pn) => {
                    out.push(p.doc.clone())
                }
                _ => out.push(r.clone()),
            }
        }
        if let Some(p) = &self.pending {
            if p.creating {
                out.push(p.doc.clone());
            }
        }
        out
    }

    /// The table document with its routes, each stamped with the table's ETag (NRP child
    /// resources share their parent's ETag).
    pub fn render(&self) -> Value {
        let routes: Vec<Value> = self
            .current_routes()
            .into_iter()
            .map(|mut r| {
                r["etag"] = json!(self.etag);
                r
            })
            .collect();
        let state = if self.pending.is_some() {
            "Updating"
        } else {
            "Succeeded"
        };
        let mut doc = json!({
            "name": self.name,
            "id": self.id,
            "etag": self.etag,
            "type": "Microsoft.Network/routeTables",
            "location": self.location,
            "properties": {
                "provisioningState": state,
                "resourceGuid": self.resource_guid,
                "disableBgpRoutePropagation": self.disable_bgp_route_propagation,
                "routes": routes,
            }
        });
        if let Some(t) = &self.tags {
            doc["tags"] = t.clone();
        }
        doc
    }
}

/// A public IP address (read-only, referenced by ipConfigurations).
#[derive(Clone, Debug)]
pub(crate) struct PublicIp {
    pub id: String,
    pub doc: Value,
}

/// A virtual machine: what `virtualMachines` GET and its IMDS report.
#[derive(Clone, Debug)]
pub(crate) struct Vm {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub vm_id: String,
    pub vm_size: String,
    pub nic_ids: Vec<String>,
    pub principal_id: String,
    /// Secret a process on this VM presents as `X-IDENTITY-HEADER` (App Service-style source).
    pub identity_header: String,
    /// Source addresses whose un-prefixed IMDS requests are this VM's.
    pub imds_source_ips: Vec<IpAddr>,
}

/// A managed identity and its role.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub principal_id: String,
    pub client_id: String,
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    /// Scopes the role is assigned at (subscription by default).
    pub scopes: Vec<String>,
}

/// An issued access token.
#[derive(Clone, Debug)]
pub(crate) struct TokenGrant {
    pub principal_id: String,
    pub audience: String,
    pub expires_at: Instant,
    pub expires_unix: u64,
}

/// What an operation changes when it completes.
#[derive(Clone, Debug)]
pub(crate) enum OpTarget {
    /// NIC PUT or moveIpConfigurations (lower-cased NIC IDs).
    Nics(Vec<String>),
    /// Route PUT (lower-cased route table ID).
    Route(String),
}

/// A long-running operation (network.json `AzureAsyncOperationResult`).
#[derive(Clone, Debug)]
pub(crate) struct Operation {
    pub id: String,
    pub subscription: String,
    pub location: String,
    /// NRP's internal operation name, used in conflict messages.
    pub name: &'static str,
    pub done_at: Instant,
    pub failure: Option<(String, String)>,
    pub target: OpTarget,
    /// `None` while in progress; `Some(true)` succeeded, `Some(false)` failed.
    pub outcome: Option<bool>,
}

/// Who holds a private IP, and whether that hold is changing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IpHold {
    pub nic_id: String,
    pub ipconfig_id: String,
    /// The holder's pending operation adds or removes this IP.
    pub in_flight: bool,
}

/// Everything behind the emulator's mutex.
/// A load balancer: its document without the members (computed from the NICs on read;
/// [`crate::load_balancer`] renders it and serves GET).
#[derive(Clone, Debug)]
pub(crate) struct LoadBalancer {
    pub doc: Value,
    pub pool_id: String,
}

#[derive(Debug)]
pub(crate) struct State {
    pub settings: Settings,
    pub subscriptions: BTreeMap<String, Subscription>,
    pub resource_groups: BTreeMap<String, ResourceGroup>,
    pub vnets: BTreeMap<String, Vnet>,
    pub nics: BTreeMap<String, Nic>,
    pub route_tables: BTreeMap<String, RouteTable>,
    pub public_ips: BTreeMap<String, PublicIp>,
    pub load_balancers: BTreeMap<String, LoadBalancer>,
    pub vms: BTreeMap<String, Vm>,
    pub identities: BTreeMap<String, Identity>,
    pub tokens: BTreeMap<String, TokenGrant>,
    pub operations: BTreeMap<String, Operation>,
    pub faults: FaultQueue,
    pub log: Vec<LoggedRequest>,
    pub throttle: Throttle,
    /// IMDS scheduled events, shared by the scenario's VMs (one availability set).
    pub scheduled: ScheduledEvents,
}

impl State {
    /// An empty state with these settings.
    pub fn new(settings: Settings) -> Self {
        let throttle = Throttle::new(settings.throttle);
        Self {
            settings,
            subscriptions: BTreeMap::new(),
            resource_groups: BTreeMap::new(),
            vnets: BTreeMap::new(),
            nics: BTreeMap::new(),
            route_tables: BTreeMap::new(),
            public_ips: BTreeMap::new(),
            load_balancers: BTreeMap::new(),
            vms: BTreeMap::new(),
            identities: BTreeMap::new(),
            tokens: BTreeMap::new(),
            operations: BTreeMap::new(),
            faults: FaultQueue::default(),
            log: Vec::new(),
            throttle,
            scheduled: ScheduledEvents::default(),
        }
    }

    /// Key of a resource group.
    pub fn rg_key(sub: &str, rg: &str) -> String {
        format!("{}/{}", sub.to_ascii_lowercase(), rg.to_ascii_lowercase())
    }

    /// The resource group, if it exists.
    pub fn resource_group(&self, sub: &str, rg: &str) -> Option<&ResourceGroup> {
        self.resource_groups.get(&Self::rg_key(sub, rg))
    }

    /// Subnet by (any-case) ID.
    pub fn subnet(&self, id: &str) -> Option<&Subnet> {
        let parsed = ArmId::parse(id)?;
        let vnet = self.vnets.get(&ids::key(&parsed.top_level_id()))?;
        let k = ids::key(id);
        vnet.subnets.iter().find(|s| ids::key(&s.id) == k)
    }

    /// Subnet and VNet of an ipConfiguration document.
    fn ipconfig_subnet(&self, ipc: &Value) -> Option<&Subnet> {
        ipc.pointer("/properties/subnet/id")
            .and_then(Value::as_str)
            .and_then(|id| self.subnet(id))
    }

    /// `(ip, vnet key, ipconfig id)` for every private IP in a NIC document.
    pub fn doc_ips(&self, doc: &Value) -> Vec<(Ipv4Addr, String, String)> {
        let mut out = Vec::new();
        for ipc in ipconfigs(doc) {
            let ip = ipc
                .pointer("/properties/privateIPAddress")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Ipv4Addr>().ok());
            let (Some(ip), Some(subnet)) = (ip, self.ipconfig_subnet(ipc)) else {
                continue;
            };
            let ipc_id = ipc
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            out.push((ip, ids::key(&subnet.vnet_id), ipc_id));
        }
        out
    }

    /// Who, other than `except_nic`, holds `ip` in `vnet_key`: settled or pending.
    pub fn ip_holder(&self, ip: Ipv4Addr, vnet_key: &str, except_nic: &str) -> Option<IpHold> {
        let except = ids::key(except_nic);
        for (k, nic) in &self.nics {
            if *k == except {
                continue;
            }
            let find = |doc: &Value| {
                self.doc_ips(doc)
                    .into_iter()
                    .find(|(i, v, _)| *i == ip && v == vnet_key)
            };
            let settled = find(&nic.applied);
            let pending = nic.pending.as_ref().and_then(find);
            let in_flight = nic.pending.is_some() && settled.is_some() != pending.is_some();
            if let Some((_, _, ipc_id)) = pending.or(settled) {
                return Some(IpHold {
                    nic_id: nic.id.clone(),
                    ipconfig_id: ipc_id,
                    in_flight,
                });
            }
        }
        None
    }

    /// Every IP held in `vnet_key` by any NIC (settled or pending), for allocation.
    pub fn used_ips(&self, vnet_key: &str) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        for nic in self.nics.values() {
            for doc in std::iter::once(&nic.applied).chain(nic.pending.as_ref()) {
                out.extend(
                    self.doc_ips(doc)
                        .into_iter()
                        .filter(|(_, v, _)| v == vnet_key)
                        .map(|(ip, _, _)| ip),
                );
            }
        }
        out
    }

    /// The ipConfiguration (other than on `except_nic`) that references public IP `pip_id`.
    pub fn public_ip_holder(&self, pip_id: &str, except_nic: &str) -> Option<String> {
        let pk = ids::key(pip_id);
        let except = ids::key(except_nic);
        for (k, nic) in &self.nics {
            if *k == except {
                continue;
            }
            for doc in std::iter::once(&nic.applied).chain(nic.pending.as_ref()) {
                for ipc in ipconfigs(doc) {
                    let refs = ipc
                        .pointer("/properties/publicIPAddress/id")
                        .and_then(Value::as_str)
                        .map(ids::key);
                    if refs.as_deref() == Some(pk.as_str()) {
                        return Some(
                            ipc.get("id")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                        );
                    }
                }
            }
        }
        None
    }

    /// Completes every operation whose propagation delay has elapsed, in due order.
    pub fn tick(&mut self, now: Instant) {
        let mut due: Vec<(Instant, String)> = self
            .operations
            .values()
            .filter(|o| o.outcome.is_none() && o.done_at <= now)
            .map(|o| (o.done_at, o.id.clone()))
            .collect();
        due.sort();
        for (_, id) in due {
            self.complete(&id);
        }
    }

    fn complete(&mut self, op_id: &str) {
        let Some(op) = self.operations.get_mut(&op_id.to_ascii_lowercase()) else {
            return;
        };
        let succeeded = op.failure.is_none();
        op.outcome = Some(succeeded);
        let target = op.target.clone();
        match target {
            OpTarget::Nics(nic_keys) => {
                for k in nic_keys {
                    let remove = match self.nics.get_mut(&k) {
                        Some(nic) if nic.op_id.as_deref() == Some(op_id) => {
                            let pending = nic.pending.take();
                            nic.op_id = None;
                            let etag = new_etag();
                            match (succeeded, pending) {
                                (true, Some(doc)) => {
                                    nic.applied = stamp_nic(doc, &etag, "Succeeded");
                                    false
                                }
                                _ if nic.creating => true,
                                _ => {
                                    // The goal state is rolled back; the resource reports the failure.
                                    let old = std::mem::take(&mut nic.applied);
                                    nic.applied = stamp_nic(old, &etag, "Failed");
                                    false
                                }
                            }
                        }
                        _ => false,
                    };
                    if let Some(nic) = self.nics.get_mut(&k) {
                        nic.creating = false;
                    }
                    if remove {
                        self.nics.remove(&k);
                    }
                }
            }
            OpTarget::Route(table_key) => {
                if let Some(table) = self.route_tables.get_mut(&table_key) {
                    let owns = table.pending.as_ref().is_some_and(|p| p.op_id == op_id);
                    if owns {
                        if let Some(p) = table.pending.take() {
                            let name = RouteTable::route_name(&p.doc).to_string();
                            let pos = table.routes.iter().position(|r| {
                                RouteTable::route_name(r).eq_ignore_ascii_case(&name)
                            });
                            let state = if succeeded { "Succeeded" } else { "Failed" };
                            match (succeeded, pos) {
                                (true, Some(i)) => table.routes[i] = set_route_state(p.doc, state),
                                (true, None) => table.routes.push(set_route_state(p.doc, state)),
                                (false, Some(i)) => {
                                    let old = std::mem::take(&mut table.routes[i]);
                                    table.routes[i] = set_route_state(old, state);
                                }
                                (false, None) => {}
                            }
                            table.etag = new_etag();
                        }
                    }
                }
            }
        }
    }

    /// The operation currently running on a NIC, if any.
    pub fn nic_busy(&self, nic_key: &str) -> Option<&Operation> {
        let nic = self.nics.get(nic_key)?;
        self.operations
            .get(&nic.op_id.as_ref()?.to_ascii_lowercase())
    }

    /// VM by (case-insensitive) name.
    pub fn vm_by_name(&self, name: &str) -> Option<&Vm> {
        self.vms
            .values()
            .find(|v| v.name.eq_ignore_ascii_case(name))
    }
}

/// The ipConfigurations array of a NIC document.
pub(crate) fn ipconfigs(doc: &Value) -> &[Value] {
    doc.pointer("/properties/ipConfigurations")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Sets a NIC's (and its ipConfigurations') ETag and provisioning state; NRP child
/// resources carry their parent's ETag.
pub(crate) fn stamp_nic(mut doc: Value, etag: &str, state: &str) -> Value {
    doc["etag"] = json!(etag);
    if let Some(props) = doc.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("provisioningState".into(), json!(state));
        if let Some(cfgs) = props
            .get_mut("ipConfigurations")
            .and_then(Value::as_array_mut)
        {
            for c in cfgs {
                c["etag"] = json!(etag);
                if let Some(p) = c.get_mut("properties").and_then(Value::as_object_mut) {
                    p.insert("provisioningState".into(), json!(state));
                }
            }
        }
    }
    doc
}

/// Sets a route's provisioning state.
pub(crate) fn set_route_state(mut doc: Value, state: &str) -> Value {
    if let Some(p) = doc.get_mut("properties").and_then(Value::as_object_mut) {
        p.insert("provisioningState".into(), json!(state));
    }
    doc
}
