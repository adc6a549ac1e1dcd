//! A faithful, in-memory emulator of the Azure Resource Manager network endpoints and the
//! Azure Instance Metadata Service that cloudha's Azure provider uses.
//!
//! Azure has no official emulator, so this crate reimplements, from the official REST
//! specifications (Azure/azure-rest-api-specs, Microsoft.Network stable/2025-05-01 and
//! 2025-09-01) and public error reports, the behaviour an HA controller depends on:
//! whole-resource NIC PUTs with ETags, long-running operations with a propagation delay,
//! the `PrivateIPAddressInUse` window of a two-step IP move, route PUTs, the atomic
//! `moveIpConfigurations` action, RBAC, throttling, and managed-identity tokens.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use cloudha_azure_emulator::{Emulator, Scenario};
//! let emu = Emulator::new(&Scenario::two_appliances()).expect("valid scenario");
//! let addr = emu.start().await?; // ARM + IMDS on http://127.0.0.1:<port>
//! let token = emu.issue_token("vm-appliance-a").expect("vm exists");
//! # let _ = (addr, token); Ok(()) }
//! ```
//!
//! # Layout
//! Imports run one way, from the request handlers down to the model (no circles):
//! - `scenario`: the spec types of a scenario file (load balancers' included) and
//!   `ScenarioError`; it knows nothing of the state. `build`: a scenario turned into the
//!   initial state.
//! - `state`: the in-memory model of the subscription (every stored resource, load balancers
//!   included) and the lazy completion of operations; `ids`, `validate`, `config`, `clock`,
//!   `throttle`, `faults`, `events`, `reqlog`: the leaves it is built from.
//! - `http`: request/response values and ARM's error shapes; `server`: serving and routing.
//! - `auth`: tokens and RBAC; `lro`: long-running operations; `arm`: what the ARM handlers
//!   share; `arm_nic`, `arm_vnet`, `arm_routes`, `arm_compute`, `load_balancer`: the
//!   handlers, one resource type each; `apiversion`: which api-versions each accepts.
//! - `imds`: the metadata service and managed identity; `dataplane`: the load balancer's
//!   data plane for end-to-end tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod apiversion;
mod arm;
mod arm_compute;
mod arm_nic;
mod arm_routes;
mod arm_vnet;
mod auth;
mod build;
pub mod clock;
pub mod config;
pub mod dataplane;
mod events;
pub mod faults;
mod http;
mod ids;
mod imds;
pub mod load_balancer;
mod lro;
pub mod reqlog;
pub mod scenario;
mod server;
mod state;
mod throttle;
mod validate;

pub use clock::{Clock, ManualClock, TokioClock};
pub use config::{ConflictMode, MoveIpMode, Settings, ThrottleLimits, TimingProfile};
pub use events::{AcknowledgedEvent, EventSpec};
pub use faults::{Fault, FaultKind};
pub use reqlog::LoggedRequest;
pub use scenario::{Scenario, ScenarioError};

use serde_json::Value;
use server::Binding;
use state::{OpTarget, State};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;

/// The audience ARM tokens are requested for.
pub const ARM_RESOURCE: &str = "https://management.azure.com/";

/// The identity of a scenario VM (its system-assigned managed identity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmIdentity {
    /// Object (principal) ID: the `oid` of its tokens, named by RBAC errors as "object id".
    pub principal_id: String,
    /// Client (application) ID, accepted as `client_id` by the token endpoints; RBAC errors
    /// name it as "the client".
    pub client_id: String,
    /// The `IDENTITY_HEADER` secret for the App Service-style token endpoint (`/msi/token`).
    pub identity_header: String,
}

/// Called with each request as it arrives (already logged, before any fault or handling),
/// outside the emulator's lock. Fault campaigns use it to act at an exact point of a
/// client's call sequence, e.g. kill the client after its k-th request.
pub type RequestHook = Arc<dyn Fn(&LoggedRequest) + Send + Sync>;

/// Holds the optional hook; a closure has no `Debug`, so this says only whether one is set.
#[derive(Default)]
struct HookSlot(Mutex<Option<RequestHook>>);

impl std::fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.lock().map(|h| h.is_some()).unwrap_or(false);
        write!(f, "HookSlot(set: {set})")
    }
}

/// The emulator: all state behind one mutex, served over plain HTTP.
#[derive(Debug)]
pub struct Emulator {
    state: Mutex<State>,
    hook: HookSlot,
    clock: Arc<dyn Clock>,
    subscription: String,
    resource_group: String,
}

impl Emulator {
    /// Builds an emulator on real (tokio) time.
    pub fn new(scenario: &Scenario) -> Result<Arc<Self>, ScenarioError> {
        Self::with_clock(scenario, Arc::new(TokioClock::new()))
    }

    /// Builds an emulator on the given clock (e.g. a [`ManualClock`]).
    pub fn with_clock(
        scenario: &Scenario,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, ScenarioError> {
        let mut state = scenario.build()?;
        for vm in &scenario.virtual_machines {
            for raw in &vm.scheduled_events {
                state
                    .scheduled
                    .schedule_raw(&vm.name, raw, clock.now(), clock.unix_now())
                    .map_err(ScenarioError)?;
            }
        }
        Ok(Arc::new(Self {
            state: Mutex::new(state),
            hook: HookSlot::default(),
            clock,
            subscription: scenario.subscription_id.clone(),
            resource_group: scenario.resource_group.clone(),
        }))
    }

    /// Locks the state and completes operations that are due, so every accessor sees what
    /// a request arriving now would see. A poisoned lock is recovered: the state is only
    /// ever mutated in whole steps.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ticked(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        st.tick(self.clock.now());
        st
    }

    /// Serves ARM and IMDS on `listener` until the task is dropped. IMDS is reachable at
    /// `/metadata/...` and `/msi/token` (VM chosen by caller address, identity secret or
    /// `settings.default_imds_vm`) and at `/vms/{vm}/metadata/...` for a specific VM.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        server::serve(self, listener, Binding::Main(None)).await
    }

    /// Like [`Emulator::serve`], logging every request with `caller` (see
    /// [`LoggedRequest::caller`]): one listener per client namespace tells the clients apart.
    pub async fn serve_as(
        self: Arc<Self>,
        listener: TcpListener,
        caller: &str,
    ) -> std::io::Result<()> {
        server::serve(self, listener, Binding::Main(Some(caller.to_string()))).await
    }

    /// Serves only the IMDS of `vm` on `listener`, e.g. behind 169.254.169.254 in a test
    /// network namespace.
    pub async fn serve_imds(
        self: Arc<Self>,
        listener: TcpListener,
        vm: &str,
    ) -> std::io::Result<()> {
        server::serve(self, listener, Binding::Imds(vm.to_string())).await
    }

    /// Binds 127.0.0.1 on a free port, serves there in a background task, returns the address.
    pub async fn start(self: &Arc<Self>) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(self.clone().serve(listener));
        Ok(addr)
    }

    /// Like [`Emulator::start`] for one VM's IMDS only.
    pub async fn start_imds(self: &Arc<Self>, vm: &str) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let vm = vm.to_string();
        let this = self.clone();
        tokio::spawn(async move { this.serve_imds(listener, &vm).await });
        Ok(addr)
    }

    /// The clock the emulator runs on.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// The scenario's subscription ID.
    pub fn subscription_id(&self) -> &str {
        &self.subscription
    }

    /// The scenario's default resource group.
    pub fn resource_group(&self) -> &str {
        &self.resource_group
    }

    /// ARM ID of a NIC in the default resource group.
    pub fn nic_id(&self, name: &str) -> String {
        ids::nic_id(&self.subscription, &self.resource_group, name)
    }

    /// A NIC (default resource group) as GET would show it now.
    pub fn nic(&self, name: &str) -> Option<Value> {
        let st = self.ticked();
        st.nics
            .get(&ids::key(&self.nic_id(name)))
            .map(|n| n.current().clone())
    }

    /// A NIC's settled document: what is in effect on the data plane (and in IMDS).
    pub fn nic_settled(&self, name: &str) -> Option<Value> {
        let st = self.ticked();
        st.nics
            .get(&ids::key(&self.nic_id(name)))
            .map(|n| n.applied.clone())
            .filter(|v| !v.is_null())
    }

    /// A load balancer (default resource group) as GET would show it.
    pub fn load_balancer(&self, name: &str) -> Option<Value> {
        self.with_load_balancer(name, |lb, st| Some(lb.render(st)))
    }

    /// What the data plane of load balancer `name` runs on now.
    pub fn load_balancer_settings(
        &self,
        name: &str,
    ) -> Option<load_balancer::LoadBalancerSettings> {
        self.with_load_balancer(name, |lb, st| lb.settings(st))
    }

    /// `f` on load balancer `name` (default resource group) and the state it is read from.
    fn with_load_balancer<T>(
        &self,
        name: &str,
        f: impl FnOnce(&state::LoadBalancer, &State) -> Option<T>,
    ) -> Option<T> {
        let st = self.ticked();
        let id = ids::resource_id(
            &self.subscription,
            &self.resource_group,
            "Microsoft.Network/loadBalancers",
            name,
        );
        st.load_balancers
            .get(&ids::key(&id))
            .and_then(|lb| f(lb, &st))
    }

    /// The primary address of the NIC whose settled document holds private address `ip`.
    pub fn settled_primary_of(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        let st = self.ticked();
        let holder = st
            .nics
            .values()
            .find(|n| st.doc_ips(&n.applied).iter().any(|(a, _, _)| *a == ip))?;
        state::ipconfigs(&holder.applied)
            .iter()
            .find(|c| c.pointer("/properties/primary").and_then(Value::as_bool) == Some(true))
            .and_then(|c| c.pointer("/properties/privateIPAddress"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    }

    /// A route table (default resource group) with its routes, as GET would show it.
    pub fn route_table(&self, table: &str) -> Option<Value> {
        let st = self.ticked();
        let id = ids::resource_id(
            &self.subscription,
            &self.resource_group,
            "Microsoft.Network/routeTables",
            table,
        );
        st.route_tables.get(&ids::key(&id)).map(|t| t.render())
    }

    /// One route, as GET would show it.
    pub fn route(&self, table: &str, route: &str) -> Option<Value> {
        self.route_table(table)?
            .pointer("/properties/routes")?
            .as_array()?
            .iter()
            .find(|r| {
                r.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(route))
            })
            .cloned()
    }

    /// ID of the ipConfiguration holding (settled or pending) `ip` in any virtual network.
    pub fn ip_holder(&self, ip: Ipv4Addr) -> Option<String> {
        let st = self.ticked();
        let vnets: Vec<String> = st.vnets.keys().cloned().collect();
        vnets
            .iter()
            .find_map(|v| st.ip_holder(ip, v, ""))
            .map(|h| h.ipconfig_id)
    }

    /// Number of long-running operations still in progress.
    pub fn operations_in_progress(&self) -> usize {
        let st = self.ticked();
        st.operations
            .values()
            .filter(|o| o.outcome.is_none())
            .count()
    }

    /// Number of NIC operations (a NIC PUT or a move) still in progress on the NIC named `nic`.
    /// A test that means "the NIC update is under way" waits for this, not for any operation: a
    /// route PUT of the same takeover may start first.
    pub fn nic_operations_in_progress(&self, nic: &str) -> usize {
        let id = self.nic_id(nic).to_ascii_lowercase();
        let st = self.ticked();
        st.operations
            .values()
            .filter(|o| o.outcome.is_none())
            .filter(|o| matches!(&o.target, OpTarget::Nics(ids) if ids.contains(&id)))
            .count()
    }

    /// The managed identity of a VM.
    pub fn vm_identity(&self, vm: &str) -> Option<VmIdentity> {
        let st = self.lock();
        let v = st.vm_by_name(vm)?;
        let i = st.identities.get(&v.principal_id.to_ascii_lowercase())?;
        Some(VmIdentity {
            principal_id: i.principal_id.clone(),
            client_id: i.client_id.clone(),
            identity_header: v.identity_header.clone(),
        })
    }

    /// Issues an ARM token for a VM's identity without going through IMDS.
    pub fn issue_token(&self, vm: &str) -> Option<String> {
        let mut st = self.lock();
        let principal = st.vm_by_name(vm)?.principal_id.clone();
        auth::issue_token(&mut st, self.clock.as_ref(), &principal, ARM_RESOURCE).map(|(t, _)| t)
    }

    /// Replaces a VM identity's role (`actions`/`notActions` at subscription scope).
    /// Returns false if the VM does not exist.
    pub fn set_permissions(&self, vm: &str, actions: &[&str], not_actions: &[&str]) -> bool {
        let mut st = self.lock();
        let Some(principal) = st
            .vm_by_name(vm)
            .map(|v| v.principal_id.to_ascii_lowercase())
        else {
            return false;
        };
        match st.identities.get_mut(&principal) {
            Some(i) => {
                i.actions = actions.iter().map(|s| s.to_string()).collect();
                i.not_actions = not_actions.iter().map(|s| s.to_string()).collect();
                true
            }
            None => false,
        }
    }

    /// Replaces the scopes a VM identity's role is assigned at (e.g. only its own resource
    /// group, so a VNet in another group is out of reach). Returns false if the VM does not exist.
    pub fn set_role_scopes(&self, vm: &str, scopes: &[&str]) -> bool {
        let mut st = self.lock();
        let Some(principal) = st
            .vm_by_name(vm)
            .map(|v| v.principal_id.to_ascii_lowercase())
        else {
            return false;
        };
        match st.identities.get_mut(&principal) {
            Some(i) => {
                i.scopes = scopes.iter().map(|s| s.to_string()).collect();
                true
            }
            None => false,
        }
    }

    /// Current settings.
    pub fn settings(&self) -> Settings {
        self.lock().settings.clone()
    }

    /// Changes settings in place (throttle limits take effect with full buckets).
    pub fn update_settings(&self, f: impl FnOnce(&mut Settings)) {
        let mut st = self.lock();
        let before = st.settings.throttle;
        f(&mut st.settings);
        let after = st.settings.throttle;
        if before != after {
            st.throttle.set_limits(after);
        }
    }

    /// Propagation delay of NIC PUTs.
    pub fn set_nic_propagation_delay(&self, d: Duration) {
        self.update_settings(|s| s.nic_propagation_ms = d.as_millis() as u64);
    }

    /// Propagation delay of route PUTs.
    pub fn set_route_propagation_delay(&self, d: Duration) {
        self.update_settings(|s| s.route_propagation_ms = d.as_millis() as u64);
    }

    /// Propagation delay of moveIpConfigurations.
    pub fn set_move_propagation_delay(&self, d: Duration) {
        self.update_settings(|s| s.move_propagation_ms = d.as_millis() as u64);
    }

    /// Selects a pacing preset (e.g. [`TimingProfile::NetworkRp`]: `Retry-After: 10` on NIC
    /// operations, as the Network RP sends).
    pub fn set_timing_profile(&self, profile: TimingProfile) {
        self.update_settings(|s| s.timing_profile = profile);
    }

    /// How writes on busy resources are refused.
    pub fn set_conflict_mode(&self, mode: ConflictMode) {
        self.update_settings(|s| s.conflict_mode = mode);
    }

    /// Availability of moveIpConfigurations.
    pub fn set_move_ip_mode(&self, mode: MoveIpMode) {
        self.update_settings(|s| s.move_ip_configurations = mode);
    }

    /// Per-subscription throttling limits (buckets restart full).
    pub fn set_throttle_limits(&self, limits: ThrottleLimits) {
        self.update_settings(|s| s.throttle = limits);
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, d: Duration) {
        self.update_settings(|s| s.token_lifetime_secs = d.as_secs());
    }

    /// Queues a fault.
    pub fn push_fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Drops all queued faults.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Faults not yet (fully) consumed.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.lock().faults.pending()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// Number of requests with `method` on a path containing `path_contains`.
    pub fn count_requests(&self, method: &str, path_contains: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.is(method, path_contains))
            .count()
    }

    /// Installs (or with `None` removes) the hook every request is shown to on arrival.
    pub fn set_request_hook(&self, hook: Option<RequestHook>) {
        *self.hook.0.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    fn run_request_hook(&self, request: &LoggedRequest) {
        // Cloned out so the hook runs without the slot's lock (it may replace itself).
        let hook = self
            .hook
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(request);
        }
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    /// Schedules a platform event of `event_type` (`Freeze`, `Reboot`, `Redeploy`, `Preempt`,
    /// `Terminate`) for `vm`, `NotBefore` being `not_before` from now. Returns its `EventId`.
    /// Every VM of the scenario sees it (one availability set); `Resources` names `vm`.
    pub fn schedule_event(&self, vm: &str, event_type: &str, not_before: Duration) -> String {
        self.schedule_event_with(EventSpec::new(vm, event_type, not_before))
    }

    /// Schedules an event described in full (several VMs, `User` source, already started...).
    pub fn schedule_event_with(&self, spec: EventSpec) -> String {
        let mut st = self.events_advanced();
        st.scheduled
            .schedule(spec, self.clock.now(), self.clock.unix_now())
    }

    /// Cancels an event as Azure does when it calls a maintenance off: it leaves the document.
    /// False if no such event is current.
    pub fn cancel_event(&self, event_id: &str) -> bool {
        self.events_advanced().scheduled.cancel(event_id)
    }

    /// The scheduled events document IMDS would answer now (the same for every VM).
    pub fn scheduled_events(&self) -> Value {
        self.events_advanced().scheduled.document()
    }

    /// Every approval received through `POST /metadata/scheduledevents`, in order.
    pub fn acknowledged_events(&self) -> Vec<AcknowledgedEvent> {
        self.lock().scheduled.acknowledged().to_vec()
    }

    /// EventIds `vm` approved through `POST /metadata/scheduledevents`.
    pub fn acked_events(&self, vm: &str) -> Vec<String> {
        self.acknowledged_events()
            .into_iter()
            .filter(|a| a.vm.eq_ignore_ascii_case(vm))
            .map(|a| a.event_id)
            .collect()
    }

    /// The state with scheduled events started and completed as of now.
    fn events_advanced(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        let impact = Duration::from_millis(st.settings.scheduled_event_impact_ms);
        st.scheduled
            .advance(self.clock.now(), self.clock.unix_now(), impact);
        st
    }
}

/// A NIC document without what a move of the ipConfiguration holding `ip` legitimately changes
/// (ETags, provisioning states, that ipConfiguration itself). Tests compare a NIC this way before
/// and after a failover: every other setting must have survived.
pub fn nic_settings_apart_from(nic: &Value, ip: Ipv4Addr) -> Value {
    let ip = ip.to_string();
    let mut n = nic.clone();
    if let Some(o) = n.as_object_mut() {
        o.remove("etag");
    }
    if let Some(p) = n.get_mut("properties").and_then(Value::as_object_mut) {
        p.remove("provisioningState");
        if let Some(list) = p.get_mut("ipConfigurations").and_then(Value::as_array_mut) {
            list.retain(|c| {
                c.pointer("/properties/privateIPAddress")
                    .and_then(Value::as_str)
                    != Some(ip.as_str())
            });
            for c in list.iter_mut() {
                if let Some(o) = c.as_object_mut() {
                    o.remove("etag");
                }
                if let Some(p) = c.get_mut("properties").and_then(Value::as_object_mut) {
                    p.remove("provisioningState");
                }
            }
        }
    }
    n
}
