//! cloudha's Azure provider: moves the floating ipConfiguration(s) from the peer's NIC to this
//! node's NIC and points route next hops at this node, through Azure Resource Manager.
//!
//! Why raw ARM requests and not `azure_mgmt_network`: that crate is frozen on `azure_core` 0.21
//! (incompatible with the `azure_identity` 1.x used for the token), predates
//! `moveIpConfigurations`, and its typed models drop NIC properties they do not know, which a
//! read-modify-write of a whole NIC must never do. Here a NIC is read, edited and written back as
//! JSON; only the floating entries of `ipConfigurations` change.
//!
//! # Layout
//! - [`config`]: the `[provider.azure]` table, ARM resource ids, MAC spellings.
//! - [`token`]: the managed-identity token, cached and renewed ahead of expiry.
//! - [`imds`]: discovery of this VM and its LAN NIC from the Instance Metadata Service.
//! - [`arm`]: requests, error classes, long-running operations; [`budget`]: ARM's write bucket.
//! - [`ensure`]: read / decide / PUT with `If-Match` / follow the operation / verify, with retries.
//! - [`nic`]: JSON edits of a NIC; [`moves`]: two-step and atomic moves; [`routes`]: route PUTs.
//! - [`elsewhere`]: a floating IP held by a third NIC (the peer NIC mismatch and its error).
//! - [`carried`]: the moved ipConfigurations kept whole on disk; [`gate`]: proof, before the
//!   peer is stripped, that this node may add them.
//! - [`permissions`]: the RBAC actions a failover needs; [`permissions_api`]: the permissions
//!   API's api-version and how its answer is read (shared by [`gate`] and [`selftest`]).
//! - [`ids`]: resource-id helpers for labels ([`ids::short`]).
//! - [`selftest`]: `cloudha selftest`, every check made with GETs only; `selftest/mod.rs`
//!   orchestrates (`run`, `prove`), with one file per concern: `input`, `discovery` (metadata
//!   service, token, ARM reachable), `reads`, `rbac` (each action at its scope), `nics` (NIC
//!   settings, floating IPs), `next_hops` (where each route points).
//! - [`events`]: Scheduled Events (maintenance announced through IMDS) and their approval.
//!
//! A takeover runs the NIC move and the route updates side by side (a route update applies in
//! seconds, a NIC update can take minutes), under one deadline, and returns once both converged
//! and were read back.

pub mod arm;
pub mod budget;
pub mod carried;
pub mod config;
pub mod elsewhere;
pub mod ensure;
pub mod events;
pub mod gate;
pub mod ids;
pub mod imds;
pub mod moves;
pub mod nic;
pub mod permissions;
pub mod permissions_api;
pub mod routes;
pub mod selftest;
pub mod token;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudha_provider_core::{
    Holder, Maintenance, NextHop, Observation, ObservedResource, ProgressReporter, Provider,
    ProviderError, RouteSpec, TakeoverReport, TakeoverRequest,
};
use tokio::sync::OnceCell;
use tracing::warn;

pub use config::{AzureConfig, FloatingIpConfig, MoveMode, ResourceId};
pub use token::TokenSource;

use arm::{ArmClient, ArmError, CallLog, ErrorClass, NETWORK_API_VERSION};
use carried::Carried;
use elsewhere::Elsewhere;
use gate::PermissionCache;
use moves::{AtomicOutcome, NicPair, TwoStep};

/// After the atomic move was refused, the two-step move is used for this long before the atomic
/// one is tried again (a feature registration or a role grant may have happened meanwhile).
const ATOMIC_RETRY: Duration = Duration::from_secs(30 * 60);

/// What discovery settled once: this node's NIC and its own address and subnet.
#[derive(Debug, Clone)]
struct Context {
    own_nic: String,
    own_address: Ipv4Addr,
    own_subnet: String,
}

/// The Azure provider.
pub struct AzureProvider {
    config: AzureConfig,
    floating: Vec<FloatingIpConfig>,
    routes: Vec<RouteSpec>,
    arm: ArmClient,
    context: OnceCell<Context>,
    /// The floating ipConfigurations as last seen, kept whole (on disk before a removal).
    carried: Carried,
    /// Permissions answers, for the check before the peer is stripped.
    permissions: PermissionCache,
    /// Third NICs ARM named as holding a floating IP.
    elsewhere: Elsewhere,
    /// Set when the atomic move was refused: why (shown in status), and when.
    atomic_unavailable: Mutex<Option<(String, Instant)>>,
    /// The client for Scheduled Events (no proxy: IMDS is link-local).
    imds_http: reqwest::Client,
    /// Time allowed to one Scheduled Events request.
    events_timeout: Duration,
    /// This VM's name from the IMDS instance document, which `Resources` of an event names.
    vm_name: OnceCell<String>,
    /// Why scheduled events are not known right now (shown in status until the next answer).
    events_problem: Mutex<Option<String>>,
}

impl std::fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureProvider")
            .field("peer_nic", &self.config.peer_nic)
            .finish_non_exhaustive()
    }
}

impl AzureProvider {
    /// A provider for `config`, moving `floating` and pointing `routes`, with the token from
    /// `token` (usually [`TokenSource::managed_identity`]). Nothing is contacted until first use.
    pub fn new(
        config: AzureConfig,
        floating: Vec<FloatingIpConfig>,
        routes: Vec<RouteSpec>,
        token: Arc<TokenSource>,
    ) -> Result<Self, String> {
        if let Some((field, problem)) = config.problems().into_iter().next() {
            return Err(format!("provider.azure.{field}: {problem}"));
        }
        if floating.is_empty() && routes.is_empty() {
            return Err(
                "the Azure provider needs at least one [[floating_ip]] or [[route]]".into(),
            );
        }
        let arm = ArmClient::new(&config.arm_endpoint, token)?;
        // IMDS must never go through a proxy (it is link-local, and Azure refuses proxied requests).
        let imds_http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| format!("building the IMDS client: {e}"))?;
        Ok(Self {
            config,
            floating,
            routes,
            arm,
            context: OnceCell::new(),
            carried: Carried::in_memory(),
            permissions: PermissionCache::default(),
            elsewhere: Elsewhere::default(),
            atomic_unavailable: Mutex::new(None),
            imds_http,
            events_timeout: events::DEFAULT_TIMEOUT,
            vm_name: OnceCell::new(),
            events_problem: Mutex::new(None),
        })
    }

    /// Keep the moved ipConfigurations in `state_dir` (see [`carried`]): what an earlier run
    /// kept there is read back, so a node restarted between the removal and the add recreates
    /// the entry whole.
    pub fn with_state_dir(mut self, state_dir: &std::path::Path) -> Result<Self, String> {
        self.carried = Carried::persisted(state_dir).map_err(|e| format!("node.state_dir: {e}"))?;
        Ok(self)
    }

    /// Allow each Scheduled Events request `timeout` instead of [`events::DEFAULT_TIMEOUT`].
    pub fn with_scheduled_events_timeout(mut self, timeout: Duration) -> Self {
        self.events_timeout = timeout;
        self
    }

    /// Remember why scheduled events are unknown (`Some`), or that they are known again.
    fn set_events_problem(&self, problem: Option<String>) {
        if let Ok(mut slot) = self.events_problem.lock() {
            if let Some(text) = &problem {
                // Once per distinct problem, not at every poll.
                if slot.as_deref() != Some(text.as_str()) {
                    warn!("{text}");
                }
            }
            *slot = problem;
        }
    }

    async fn vm_name(&self) -> Result<&String, String> {
        self.vm_name
            .get_or_try_init(|| async {
                imds::instance(&self.config.imds_endpoint)
                    .await
                    .map(|i| i.vm_name)
            })
            .await
    }

    /// Start renewing the token in the background (call once the runtime is up).
    pub fn start_token_renewal(&self) {
        self.arm.token().spawn_renewal();
    }

    async fn context(&self, log: &CallLog) -> Result<&Context, ProviderError> {
        self.context.get_or_try_init(|| self.discover(log)).await
    }

    async fn discover(&self, log: &CallLog) -> Result<Context, ProviderError> {
        let permanent = |message: String, fix: &str| ProviderError::Permanent {
            operation: "discovery".into(),
            message,
            fix: fix.into(),
        };
        let own_nic = match &self.config.own_nic {
            Some(id) => id.clone(),
            None => {
                // IMDS being slow or absent for a moment is worth retrying; the daemon's health
                // check calls again.
                let instance = imds::instance(&self.config.imds_endpoint)
                    .await
                    .map_err(|e| ProviderError::Transient {
                        operation: "imds.instance".into(),
                        message: e,
                        retry_after: None,
                    })?;
                let mac = imds::lan_mac(&instance, self.floating.first().map(|f| f.address))
                    .map_err(|e| permanent(e, "set provider.azure.own_nic to the LAN NIC's id"))?;
                imds::nic_id_for_mac(&self.arm, log, &instance, &mac)
                    .await
                    .map_err(|e| permanent(e, "set provider.azure.own_nic to the LAN NIC's id, or grant Microsoft.Compute/virtualMachines/read"))?
            }
        };
        let nic = self
            .arm
            .get(log, "nic.get", &own_nic, NETWORK_API_VERSION)
            .await
            .map_err(ArmError::into_provider_error)?;
        let own_address = nic::primary_address(&nic.body).ok_or_else(|| {
            permanent(
                format!("own NIC {own_nic} has no primary private IPv4 address"),
                "check provider.azure.own_nic",
            )
        })?;
        let own_subnet = nic::primary_subnet(&nic.body).ok_or_else(|| {
            permanent(
                format!("own NIC {own_nic} has no subnet on its primary ipConfiguration"),
                "check provider.azure.own_nic",
            )
        })?;
        Ok(Context {
            own_nic,
            own_address,
            own_subnet,
        })
    }

    fn next_hop(&self, ctx: &Context, route: &RouteSpec) -> Ipv4Addr {
        match route.next_hop {
            NextHop::SelfAddress => ctx.own_address,
            NextHop::FloatingIp => self
                .floating
                .first()
                .map(|f| f.address)
                .unwrap_or(ctx.own_address),
        }
    }

    async fn move_addresses(
        &self,
        ctx: &Context,
        log: &CallLog,
        deadline: Instant,
    ) -> Result<bool, ArmError> {
        if self.floating.is_empty() {
            return Ok(false);
        }
        let nics = NicPair {
            own: &ctx.own_nic,
            peer: &self.config.peer_nic,
            own_subnet: &ctx.own_subnet,
        };
        let mut changed = false;
        if self.config.move_mode == MoveMode::Atomic && self.atomic_reason().is_none() {
            match moves::atomic(
                &self.arm,
                log,
                &nics,
                &self.floating,
                &self.carried,
                deadline,
            )
            .await?
            {
                AtomicOutcome::Done(c) => changed = c,
                AtomicOutcome::Unavailable(reason) => {
                    let text = format!(
                        "atomic move (moveIpConfigurations) refused: {reason}; using the two-step move, the atomic one is tried again in {} min",
                        ATOMIC_RETRY.as_secs() / 60
                    );
                    log.progress().note(text.clone());
                    if let Ok(mut slot) = self.atomic_unavailable.lock() {
                        // Said once per distinct reason, not at every attempt.
                        if slot.as_ref().map(|(t, _)| t.as_str()) != Some(text.as_str()) {
                            warn!("{text}");
                        }
                        *slot = Some((text, Instant::now()));
                    }
                }
            }
        }
        // After an atomic move this only verifies (and repairs anything left over).
        let two_step = moves::two_step(
            &TwoStep {
                arm: &self.arm,
                log,
                nics,
                floating: &self.floating,
                carried: &self.carried,
                permissions: &self.permissions,
                elsewhere: &self.elsewhere,
            },
            deadline,
        )
        .await?;
        Ok(changed || two_step)
    }

    /// The NIC that is neither node's and that ARM last named as holding `ip`, if it still
    /// does: read again when this identity may read it; taken on ARM's word when it may not (the
    /// role grants reads on the pair's NICs only).
    async fn third_holder(&self, log: &CallLog, ip: Ipv4Addr) -> Option<String> {
        let nic = self.elsewhere.get(ip)?;
        match self
            .arm
            .get(log, "nic.get", &nic, NETWORK_API_VERSION)
            .await
        {
            Ok(r) if !nic::holds(&r.body, ip) => {
                self.elsewhere.forget(ip);
                None
            }
            Err(e) if e.class == ErrorClass::NotFound => {
                self.elsewhere.forget(ip);
                None
            }
            _ => Some(nic),
        }
    }

    /// Why the atomic move is not used right now (`None` once [`ATOMIC_RETRY`] has passed).
    fn atomic_reason(&self) -> Option<String> {
        let mut slot = self.atomic_unavailable.lock().ok()?;
        if slot
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= ATOMIC_RETRY)
        {
            *slot = None;
        }
        slot.as_ref().map(|(t, _)| t.clone())
    }

    /// Notes for status: settings that will hurt a failover, and fallbacks in use.
    fn warnings(&self, own: Option<&serde_json::Value>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(doc) = own {
            if nic::ip_forwarding(doc) != Some(true) {
                out.push("IP forwarding is off on this node's NIC: traffic routed through the appliance is dropped by Azure; enable it (az network nic update --ip-forwarding true)".into());
            }
        }
        if let Some(reason) = self.atomic_reason() {
            out.push(reason);
        }
        if let Some(problem) = self.events_problem.lock().ok().and_then(|p| p.clone()) {
            out.push(problem);
        }
        out
    }

    async fn read_optional(
        &self,
        log: &CallLog,
        op: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>, ProviderError> {
        match self.arm.get(log, op, id, NETWORK_API_VERSION).await {
            Ok(r) => Ok(Some(r.body)),
            Err(e) if e.class == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e.into_provider_error()),
        }
    }
}

fn holder(on_me: bool, on_peer: bool) -> Holder {
    match (on_me, on_peer) {
        (true, true) => Holder::Both,
        (true, false) => Holder::Me,
        (false, true) => Holder::Peer,
        (false, false) => Holder::Nobody,
    }
}

#[async_trait::async_trait]
impl Provider for AzureProvider {
    fn kind(&self) -> &'static str {
        "azure"
    }

    async fn take_over(
        &self,
        request: &TakeoverRequest,
        progress: &ProgressReporter,
    ) -> Result<TakeoverReport, ProviderError> {
        let deadline = Instant::now() + request.deadline;
        let log = CallLog::new(progress.clone());
        let ctx = self.context(&log).await?;
        let nics = self.move_addresses(ctx, &log, deadline);
        let routes = routes::update_all(
            &self.arm,
            &log,
            &self.routes,
            |r| self.next_hop(ctx, r),
            deadline,
        );
        let (nics, routes) = tokio::join!(nics, routes);
        let result = match (nics, routes) {
            (Ok(a), Ok(b)) => Ok(a || b),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        match result {
            Ok(changed) => Ok(TakeoverReport {
                api_calls: log.counts(),
                changed,
            }),
            Err(e) => {
                if e.code == "DeadlineExceeded" {
                    return Err(ProviderError::DeadlineExceeded {
                        operation: e.operation,
                        deadline: request.deadline,
                    });
                }
                // Say loudly when the address sits on neither node's NIC: traffic to it is
                // black-holed until the next attempt places it (or, on a third NIC, goes there).
                if let Ok(observed) = self.observe().await {
                    for r in observed
                        .resources
                        .iter()
                        .filter(|r| matches!(r.holder, Holder::Nobody | Holder::Elsewhere))
                    {
                        let text = match &r.held_by {
                            Some(by) => format!(
                                "{} is on NIC {by}, neither node's, after a failed attempt; check provider.azure.peer_nic",
                                r.resource
                            ),
                            None => format!(
                                "{} is on neither node's NIC after a failed attempt; retrying until it is placed",
                                r.resource
                            ),
                        };
                        warn!("{text}");
                        progress.note(text);
                    }
                }
                Err(e.into_provider_error())
            }
        }
    }

    async fn prove_failover(&self) -> Vec<cloudha_provider_core::Check> {
        let log = CallLog::new(ProgressReporter::discard());
        let ctx = match self.context(&log).await {
            Ok(ctx) => ctx,
            Err(e) => {
                return vec![cloudha_provider_core::Check::fail(
                    "discovery",
                    format!("this node's NIC is not known: {e}"),
                    "set provider.azure.own_nic to the LAN NIC's id, or let the metadata service answer",
                )]
            }
        };
        let input = selftest::Input {
            config: self.config.clone(),
            floating: self.floating.clone(),
            routes: self.routes.clone(),
            token: self.arm.token().clone(),
        };
        selftest::prove(&self.arm, &input, &ctx.own_nic).await
    }

    async fn release(&self, _progress: &ProgressReporter) -> Result<(), ProviderError> {
        // The peer's takeover moves the resources; releasing first would leave nobody holding them.
        Ok(())
    }

    async fn observe(&self) -> Result<Observation, ProviderError> {
        let log = CallLog::new(ProgressReporter::discard());
        let ctx = self.context(&log).await?;
        let own = self.read_optional(&log, "nic.get", &ctx.own_nic).await?;
        let peer = self
            .read_optional(&log, "nic.get", &self.config.peer_nic)
            .await?;
        let ips: Vec<Ipv4Addr> = self.floating.iter().map(|f| f.address).collect();
        for (id, doc) in [(&ctx.own_nic, &own), (&self.config.peer_nic, &peer)] {
            if let Some(doc) = doc {
                self.carried.learn(id, doc, &ips);
            }
        }
        let peer_address = peer.as_ref().and_then(nic::primary_address);
        let mut resources = Vec::new();
        for f in &self.floating {
            let on = |doc: &Option<serde_json::Value>| {
                doc.as_ref().is_some_and(|d| nic::holds(d, f.address))
            };
            let resource = format!("ip {}", f.address);
            let found = holder(on(&own), on(&peer));
            if found != Holder::Nobody {
                self.elsewhere.forget(f.address);
                resources.push(ObservedResource::new(resource, found));
                continue;
            }
            resources.push(match self.third_holder(&log, f.address).await {
                Some(nic) => ObservedResource::elsewhere(resource, nic),
                None => ObservedResource::new(resource, Holder::Nobody),
            });
        }
        let floating_holder = resources.first().map(|r| r.holder);
        // One read per table, not per route: reconcile runs every few seconds and ARM's read
        // bucket refills at 25 per second for the whole subscription.
        let mut tables: BTreeMap<String, Option<BTreeMap<String, serde_json::Value>>> =
            BTreeMap::new();
        for route in &self.routes {
            let key = route.table.to_ascii_lowercase();
            if !tables.contains_key(&key) {
                let table = routes::read_table(&self.arm, &log, route.table.trim_end_matches('/'))
                    .await
                    .map_err(ArmError::into_provider_error)?;
                tables.insert(key.clone(), table);
            }
            let doc = tables
                .get(&key)
                .and_then(Option::as_ref)
                .and_then(|routes| routes.get(&route.name.to_ascii_lowercase()));
            let hop = doc.and_then(routes::next_hop_of);
            let holder = match route.next_hop {
                NextHop::SelfAddress => match hop {
                    Some(h) if h == ctx.own_address => Holder::Me,
                    Some(h) if Some(h) == peer_address => Holder::Peer,
                    _ => Holder::Nobody,
                },
                // The route follows the floating IP: whoever holds it holds the route.
                NextHop::FloatingIp => match (hop, self.floating.first()) {
                    (Some(h), Some(f)) if h == f.address => {
                        floating_holder.unwrap_or(Holder::Nobody)
                    }
                    _ => Holder::Nobody,
                },
            };
            resources.push(ObservedResource::new(
                format!("route {}/{}", moves::short(&route.table), route.name),
                holder,
            ));
        }
        // ARM shows a NIC's goal state while its update runs. Reconcile reads this on a settled
        // active node, whose own writes have all been polled to their end, so an `Updating` NIC
        // is the peer's move under way (or an operator's): the daemon waits for it.
        let writes_in_flight = [(&ctx.own_nic, &own), (&self.config.peer_nic, &peer)]
            .into_iter()
            .filter(|(_, doc)| {
                doc.as_ref()
                    .is_some_and(|d| nic::provisioning_state(d) == "Updating")
            })
            .map(|(id, _)| format!("nic {}", moves::short(id)))
            .collect();
        let mut warnings = self.warnings(own.as_ref());
        if peer.is_none() {
            warnings.push(format!(
                "provider.azure.peer_nic names NIC {}, which does not exist (HTTP 404): set it to the peer VM's LAN NIC id (`cloudha selftest` checks it)",
                self.config.peer_nic
            ));
        }
        Ok(Observation {
            resources,
            warnings,
            writes_in_flight,
        })
    }

    async fn health(&self) -> Result<(), ProviderError> {
        // Discovery (once) is what this node needs to be able to take over; the API's day-to-day
        // reachability is reported by reconcile, not here, because losing the API must not
        // make an active node give up a data path that still works.
        let log = CallLog::new(ProgressReporter::discard());
        self.context(&log).await.map(|_| ())
    }

    async fn scheduled_maintenance(&self) -> Result<Vec<Maintenance>, ProviderError> {
        let vm_name = match self.vm_name().await {
            Ok(name) => name,
            Err(e) => {
                self.set_events_problem(Some(format!(
                    "scheduled events not watched yet: this VM's name is unknown ({e})"
                )));
                return Ok(Vec::new());
            }
        };
        let endpoint = &self.config.imds_endpoint;
        match events::fetch(&self.imds_http, endpoint, self.events_timeout).await {
            Ok(document) => {
                let mine = events::for_vm(&document, vm_name).map_err(|message| {
                    self.set_events_problem(Some(format!("scheduled events: {message}")));
                    ProviderError::Transient {
                        operation: "imds.scheduledevents".into(),
                        message,
                        retry_after: None,
                    }
                })?;
                self.set_events_problem(None);
                Ok(mine)
            }
            Err(events::FetchError::NoAnswer(message)) => {
                self.set_events_problem(Some(message));
                Ok(Vec::new())
            }
            Err(events::FetchError::BadAnswer(message)) => {
                self.set_events_problem(Some(message.clone()));
                Err(ProviderError::Transient {
                    operation: "imds.scheduledevents".into(),
                    message,
                    retry_after: None,
                })
            }
        }
    }

    async fn acknowledge_maintenance(&self, event_id: &str) -> Result<(), ProviderError> {
        let endpoint = &self.config.imds_endpoint;
        let transient = |message: String| ProviderError::Transient {
            operation: "imds.scheduledevents.approve".into(),
            message,
            retry_after: None,
        };
        let (status, body) =
            match events::approve(&self.imds_http, endpoint, self.events_timeout, event_id).await {
                Ok(answer) => answer,
                Err(events::FetchError::NoAnswer(m) | events::FetchError::BadAnswer(m)) => {
                    return Err(transient(m))
                }
            };
        match status {
            200..=299 => Ok(()),
            // IMDS refuses an id it no longer lists: an event that is over needs no approval.
            400 => match events::fetch(&self.imds_http, endpoint, self.events_timeout).await {
                Ok(document) if !events::lists(&document, event_id) => Ok(()),
                Ok(_) => Err(ProviderError::Permanent {
                    operation: "imds.scheduledevents.approve".into(),
                    message: format!("IMDS refused the approval of event {event_id}: {body}"),
                    fix: "check that the Metadata service at provider.azure.imds_endpoint is Azure's (http://169.254.169.254)".into(),
                }),
                Err(events::FetchError::NoAnswer(m) | events::FetchError::BadAnswer(m)) => {
                    Err(transient(m))
                }
            },
            _ => Err(transient(format!(
                "IMDS answered {status} to the approval of event {event_id}: {body}"
            ))),
        }
    }
}
