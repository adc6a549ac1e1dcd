//! `cloudha selftest` on Azure: everything a failover will need, proved on a healthy pair
//! without changing anything.
//!
//! In order: the metadata service, the managed-identity token, name resolution and TLS to ARM,
//! reads of both NICs and every route table, every RBAC action of [`FAILOVER_ACTIONS`] at the
//! scope it is needed (through the permissions API, which returns the caller's effective
//! `actions`/`notActions` at a scope), the NIC settings (IP forwarding, one subnet, floating IPs
//! inside it, not reserved, not on a third NIC) and where each floating IP and route points now.
//! Every request is a GET.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use cloudha_provider_core::check::{proxy_for, resolve};
use cloudha_provider_core::{Check, NextHop, ProgressReporter, RouteSpec};
use serde_json::Value;

use crate::arm::{ArmClient, ArmError, CallLog, ErrorClass, NETWORK_API_VERSION};
use crate::config::{AzureConfig, FloatingIpConfig};
use crate::ids::short;
use crate::permissions::{RequiredAction, Scope, FAILOVER_ACTIONS};
use crate::{imds, nic, routes, TokenSource};

pub use crate::permissions_api::{action_matches, grants, PERMISSIONS_API_VERSION};

const IDENTITY_FIX: &str = "assign a managed identity to this VM (az vm identity assign), set provider.azure.identity_client_id for a user-assigned one, and check in the resource group's Access control (IAM) that a role assignment gives it the cloudha role";

/// What the self-test needs: the same settings the daemon uses.
pub struct Input {
    pub config: AzureConfig,
    pub floating: Vec<FloatingIpConfig>,
    pub routes: Vec<RouteSpec>,
    pub token: Arc<TokenSource>,
}

/// Run every Azure check. Never changes anything in the cloud.
pub async fn run(input: &Input) -> Vec<Check> {
    let mut out = Vec::new();
    let log = CallLog::new(ProgressReporter::discard());
    let instance = check_imds(&input.config, &mut out).await;
    if !check_token(&input.token, &mut out).await {
        out.push(skipped("the managed identity token"));
        return out;
    }
    let arm = match ArmClient::new(&input.config.arm_endpoint, input.token.clone()) {
        Ok(a) => a,
        Err(e) => {
            out.push(Check::fail(
                "cloud_api",
                e,
                "check provider.azure.arm_endpoint",
            ));
            return out;
        }
    };
    if !check_api(&input.config.arm_endpoint, &mut out).await {
        out.push(skipped("ARM"));
        return out;
    }
    let own_nic = match (&input.config.own_nic, &instance) {
        (Some(id), _) => id.clone(),
        (None, Some(instance)) => {
            let found = match imds::lan_mac(instance, input.floating.first().map(|f| f.address)) {
                Ok(mac) => imds::nic_id_for_mac(&arm, &log, instance, &mac).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(id) => {
                    out.push(Check::pass(
                        "discovery",
                        format!("this node's LAN NIC is {id} (found by MAC address)"),
                    ));
                    id
                }
                Err(e) => {
                    out.push(Check::fail("discovery", format!("cannot find this node's LAN NIC: {e}"), "set provider.azure.own_nic to the LAN NIC's id, or grant Microsoft.Compute/virtualMachines/read on this VM"));
                    out.push(skipped("this node's NIC"));
                    return out;
                }
            }
        }
        (None, None) => {
            out.push(skipped(
                "this node's NIC (no own_nic and no metadata service)",
            ));
            return out;
        }
    };
    check_pair(&arm, &log, input, &own_nic, instance.as_ref(), &mut out).await;
    out
}

/// What the daemon proves at start and every few minutes ([`Provider::prove_failover`]): the
/// NICs exist, differ and share the floating IPs' subnet, every action a failover needs is
/// granted where it is needed, the floating IPs and routes are as [`run`] checks them. GETs
/// only, and no metadata service: `own_nic` is what discovery found.
///
/// [`Provider::prove_failover`]: cloudha_provider_core::Provider::prove_failover
pub async fn prove(arm: &ArmClient, input: &Input, own_nic: &str) -> Vec<Check> {
    let log = CallLog::new(ProgressReporter::discard());
    let mut out = Vec::new();
    check_pair(arm, &log, input, own_nic, None, &mut out).await;
    out
}

/// Every check that needs both NICs read.
async fn check_pair(
    arm: &ArmClient,
    log: &CallLog,
    input: &Input,
    own_nic: &str,
    instance: Option<&imds::Instance>,
    out: &mut Vec<Check>,
) {
    if own_nic.eq_ignore_ascii_case(input.config.peer_nic.trim_end_matches('/')) {
        out.push(Check::fail(
            "read_peer_nic",
            format!("provider.azure.peer_nic is this node's own NIC {own_nic}"),
            "set provider.azure.peer_nic to the other node's LAN NIC id",
        ));
        return;
    }
    let own = read(arm, log, "read_own_nic", "this node's NIC", own_nic, out).await;
    let peer = read(
        arm,
        log,
        "read_peer_nic",
        "the peer's NIC (provider.azure.peer_nic)",
        &input.config.peer_nic,
        out,
    )
    .await;
    let mut tables = BTreeMap::new();
    for route in &input.routes {
        let key = route.table.to_ascii_lowercase();
        if tables.contains_key(&key) {
            continue;
        }
        let doc = read(
            arm,
            log,
            "read_route_table",
            "route table",
            &route.table,
            out,
        )
        .await;
        tables.insert(key, doc);
    }
    let (Some(own), Some(peer)) = (own, peer) else {
        out.push(skipped("a NIC"));
        return;
    };
    let scopes = scopes(input, own_nic, &own, &peer, instance);
    check_permissions(arm, log, &scopes, out).await;
    check_nics(arm, log, input, own_nic, &own, &peer, out).await;
    check_recreatable(input, &own, &peer, out);
    check_routes(arm, log, input, &own, &peer, &tables, out).await;
}

/// Warn where a floating entry holds what the config alone could not recreate: the daemon keeps
/// it in `state_dir` during a move, and would lose it with that directory.
fn check_recreatable(input: &Input, own: &Value, peer: &Value, out: &mut Vec<Check>) {
    for f in &input.floating {
        let Some(entry) =
            nic::ipconfig_with(own, f.address).or_else(|| nic::ipconfig_with(peer, f.address))
        else {
            continue;
        };
        let mut extra = nic::beyond_template(entry, f.public_ip.as_deref());
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let from_config = f
            .ip_config_name
            .clone()
            .unwrap_or_else(|| crate::moves::default_ip_config_name(f.address));
        if !name.eq_ignore_ascii_case(&from_config) {
            extra.push(format!("name {name}"));
        }
        if extra.is_empty() {
            out.push(Check::pass(
                "recreatable",
                format!(
                    "{}'s ipConfiguration can be recreated from the config alone",
                    f.address
                ),
            ));
        } else {
            out.push(Check::warn(
                "recreatable",
                format!(
                    "{}'s ipConfiguration holds {} that the config alone would not recreate: during a move only node.state_dir ({}) keeps it",
                    f.address,
                    extra.join(", "),
                    crate::carried::FILE_NAME
                ),
                "keep node.state_dir on persistent storage; set ip_config_name and public_ip in [[floating_ip]] for what the config can hold",
            ));
        }
    }
}

fn skipped(what: &str) -> Check {
    Check::warn(
        "skipped",
        format!("the remaining cloud checks need {what}, which failed above"),
        "fix the failure above and run the self-test again",
    )
}

async fn check_imds(config: &AzureConfig, out: &mut Vec<Check>) -> Option<imds::Instance> {
    match imds::instance(&config.imds_endpoint).await {
        Ok(i) => {
            out.push(Check::pass(
                "metadata_service",
                format!(
                    "{} answered: VM {} in resource group {}, subscription {}, {}",
                    config.imds_endpoint, i.vm_name, i.resource_group, i.subscription, i.location
                ),
            ));
            Some(i)
        }
        Err(e) => {
            out.push(Check::fail(
                "metadata_service",
                e,
                "run on an Azure VM and allow 169.254.169.254 (never through a proxy) in the host firewall",
            ));
            None
        }
    }
}

async fn check_token(token: &TokenSource, out: &mut Vec<Check>) -> bool {
    match token.token().await {
        Ok(_) => {
            let left = token
                .remaining()
                .await
                .map(|d| format!(", valid for {} min", d.as_secs() / 60))
                .unwrap_or_default();
            out.push(Check::pass(
                "identity",
                format!("managed identity token for ARM obtained{left}"),
            ));
            true
        }
        Err(e) => {
            out.push(Check::fail("identity", e.to_string(), IDENTITY_FIX));
            false
        }
    }
}

/// Name resolution and a TLS connection to ARM (through the proxy when one applies).
async fn check_api(endpoint: &str, out: &mut Vec<Check>) -> bool {
    let proxy = proxy_for(endpoint);
    // Through a proxy, the proxy resolves the name.
    if proxy.is_none() {
        if let Err(e) = resolve(endpoint).await {
            out.push(Check::fail(
                "dns",
                e,
                "fix name resolution (/etc/resolv.conf, the VNet's DNS servers), or set HTTPS_PROXY",
            ));
            return false;
        }
    }
    // Any answer proves name resolution, the connection and TLS; 401 without a token is expected.
    let client = match reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail(
                "cloud_api",
                format!("building the HTTP client: {e}"),
                "report this as a bug",
            ));
            return false;
        }
    };
    let via = match &proxy {
        Some(p) => format!(" through proxy {p}"),
        None => " directly".to_string(),
    };
    match client.get(endpoint).send().await {
        Ok(r) => {
            out.push(Check::pass(
                "cloud_api",
                format!(
                    "{endpoint} reached{via} (name resolved, connection and TLS up; HTTP {})",
                    r.status().as_u16()
                ),
            ));
            true
        }
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            out.push(Check::fail(
                "cloud_api",
                format!("{endpoint} not reachable{via}: {message}"),
                "allow outbound HTTPS to the management endpoint (NSG, firewall), or set HTTPS_PROXY (and NO_PROXY for 169.254.169.254)",
            ));
            false
        }
    }
}

async fn read(
    arm: &ArmClient,
    log: &CallLog,
    name: &str,
    what: &str,
    id: &str,
    out: &mut Vec<Check>,
) -> Option<Value> {
    match arm.get(log, "selftest.get", id, NETWORK_API_VERSION).await {
        Ok(r) => {
            out.push(Check::pass(name, format!("read {what} {id}")));
            Some(r.body)
        }
        Err(e) => {
            out.push(read_failure(name, what, id, &e));
            None
        }
    }
}

fn read_failure(name: &str, what: &str, id: &str, e: &ArmError) -> Check {
    let fix = match (e.class, e.code.as_str()) {
        (ErrorClass::NotFound, _) | (_, "ResourceNotFound" | "ResourceGroupNotFound" | "NotFound") => {
            format!("{what} {} does not exist: correct the id in the config (subscription, resource group, name)", short(id))
        }
        (_, "AuthorizationFailed") => format!(
            "grant the node's identity read on {} (the cloudha role in deploy/azure, assigned in Access control (IAM))",
            short(id)
        ),
        _ => "read the ARM message; fix the id or the identity's role".to_string(),
    };
    Check::fail(name, format!("cannot read {what} {id}: {e}"), fix)
}

/// Each scope the failover acts on, with the actions it needs there.
fn scopes(
    input: &Input,
    own_id: &str,
    own: &Value,
    peer: &Value,
    instance: Option<&imds::Instance>,
) -> Vec<(String, Vec<&'static RequiredAction>)> {
    let mut by_scope: Vec<(String, Vec<&'static RequiredAction>)> = Vec::new();
    let mut add = |scope: &str, action: &'static RequiredAction| {
        let scope = scope.trim_end_matches('/').to_string();
        match by_scope
            .iter_mut()
            .find(|(s, _)| s.eq_ignore_ascii_case(&scope))
        {
            Some((_, list)) => list.push(action),
            None => by_scope.push((scope, vec![action])),
        }
    };
    let subscription = crate::ResourceId::parse(own_id, "networkInterfaces")
        .map(|r| format!("/subscriptions/{}", r.subscription))
        .unwrap_or_default();
    let refs = |pointer: &str| -> Vec<String> {
        let mut ids = Vec::new();
        for doc in [own, peer] {
            for c in nic::ipconfigs(doc) {
                if let Some(id) = c.pointer(pointer).and_then(Value::as_str) {
                    ids.push(id.to_string());
                }
            }
        }
        ids
    };
    let subnets: Vec<String> = dedup(refs("/properties/subnet/id"));
    let mut public_ips = refs("/properties/publicIPAddress/id");
    public_ips.extend(input.floating.iter().filter_map(|f| f.public_ip.clone()));
    let public_ips = dedup(public_ips);
    let nsgs = dedup(
        [own, peer]
            .iter()
            .filter_map(|d| {
                d.pointer("/properties/networkSecurityGroup/id")
                    .and_then(Value::as_str)
            })
            .map(str::to_string)
            .collect(),
    );
    let tables = dedup(input.routes.iter().map(|r| r.table.clone()).collect());
    // What the floating entries link to, on whichever NIC holds them now.
    let mut linked: Vec<(&'static str, String)> = Vec::new();
    for doc in [own, peer] {
        for f in &input.floating {
            if let Some(entry) = nic::ipconfig_with(doc, f.address) {
                linked.extend(nic::linked_resources(entry));
            }
        }
    }
    let vnets: Vec<String> = if input.config.move_mode == crate::MoveMode::Atomic {
        dedup(
            subnets
                .iter()
                .filter_map(|s| crate::config::vnet_of_subnet(s))
                .map(str::to_string)
                .collect(),
        )
    } else {
        Vec::new()
    };
    let vm = own
        .pointer("/properties/virtualMachine/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            instance.map(|i| {
                format!(
                    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
                    i.subscription, i.resource_group, i.vm_name
                )
            })
        });
    for action in FAILOVER_ACTIONS {
        let targets: Vec<String> = match action.scope {
            Scope::Nics => vec![own_id.to_string(), input.config.peer_nic.clone()],
            Scope::Subnet => subnets.clone(),
            Scope::PublicIps => public_ips.clone(),
            Scope::NetworkSecurityGroup => nsgs.clone(),
            Scope::RouteTables => tables.clone(),
            Scope::LinkedResources => dedup(
                linked
                    .iter()
                    .filter(|(a, _)| *a == action.action)
                    .map(|(_, id)| id.clone())
                    .collect(),
            ),
            Scope::VirtualNetwork => vnets.clone(),
            // Discovery only reads the VM when own_nic is not configured.
            Scope::OwnVm if input.config.own_nic.is_some() => Vec::new(),
            Scope::OwnVm => vm.iter().cloned().collect(),
            Scope::Subscription => vec![subscription.clone()],
        };
        for t in targets.iter().filter(|t| !t.is_empty()) {
            add(t, action);
        }
    }
    by_scope
}

fn dedup(ids: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&id)) {
            out.push(id);
        }
    }
    out
}

async fn check_permissions(
    arm: &ArmClient,
    log: &CallLog,
    scopes: &[(String, Vec<&'static RequiredAction>)],
    out: &mut Vec<Check>,
) {
    for (scope, actions) in scopes {
        let id = format!("{scope}/providers/Microsoft.Authorization/permissions");
        let answer = match arm
            .get(log, "selftest.permissions", &id, PERMISSIONS_API_VERSION)
            .await
        {
            Ok(r) => r.body,
            Err(e) => {
                out.push(
                    Check::warn(
                        "permission",
                        format!("cannot list the identity's permissions on {scope}: {e}; {} action(s) unproved", actions.len()),
                        "grant Microsoft.Authorization/permissions/read (part of Reader) or check the scope id",
                    )
                    .proved_by("permissions API"),
                );
                continue;
            }
        };
        let mut granted = Vec::new();
        for action in actions {
            if grants(&answer, action.action) {
                granted.push(action.action);
            } else {
                out.push(
                    Check::fail(
                        "permission",
                        format!("missing {} on {scope} (needed to {})", action.action, action.why),
                        format!(
                            "add {} to the identity's role (deploy/azure) and assign it at {scope} or above, in Access control (IAM)",
                            action.action
                        ),
                    )
                    .proved_by("permissions API"),
                );
            }
        }
        if !granted.is_empty() {
            let names: Vec<&str> = granted
                .iter()
                .map(|a| a.strip_prefix("Microsoft.").unwrap_or(a))
                .collect();
            out.push(
                Check::pass(
                    "permission",
                    format!("{} granted on {scope}", names.join(", ")),
                )
                .proved_by("permissions API"),
            );
        }
    }
}

/// `(network, prefix length)` of `10.10.1.0/24`.
fn parse_prefix(text: &str) -> Option<(u32, u8)> {
    let (a, l) = text.split_once('/')?;
    let a: Ipv4Addr = a.parse().ok()?;
    let l: u8 = l.parse().ok()?;
    (l <= 32).then_some((u32::from(a), l))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// Why `ip` cannot be a floating IP in `prefix` (outside it, or one of Azure's reserved
/// addresses: the network address, the next three, and the broadcast address).
pub fn address_problem(prefix: &str, ip: Ipv4Addr) -> Option<String> {
    let (net, len) = parse_prefix(prefix)?;
    let m = mask(len);
    let ip = u32::from(ip);
    let net = net & m;
    if ip & m != net {
        return Some(format!("outside the subnet {prefix}"));
    }
    let offset = ip - net;
    let last = !m;
    if offset < 4 || offset == last {
        return Some(format!(
            "one of Azure's reserved addresses in {prefix} (the first four and the last)"
        ));
    }
    None
}

async fn check_nics(
    arm: &ArmClient,
    log: &CallLog,
    input: &Input,
    own_id: &str,
    own: &Value,
    peer: &Value,
    out: &mut Vec<Check>,
) {
    for (who, id, doc) in [
        ("this node's", own_id, own),
        ("the peer's", input.config.peer_nic.as_str(), peer),
    ] {
        if nic::ip_forwarding(doc) == Some(true) {
            out.push(Check::pass(
                "ip_forwarding",
                format!("IP forwarding is on on {who} NIC {}", short(id)),
            ));
        } else {
            out.push(Check::fail(
                "ip_forwarding",
                format!("IP forwarding is off on {who} NIC {}: Azure drops traffic routed through the appliance", short(id)),
                format!("az network nic update --ids {id} --ip-forwarding true"),
            ));
        }
    }
    let own_subnet = nic::primary_subnet(own);
    let peer_subnet = nic::primary_subnet(peer);
    let Some(subnet_id) = own_subnet.clone() else {
        out.push(Check::fail(
            "same_subnet",
            format!(
                "this node's NIC {} has no subnet on its primary ipConfiguration",
                short(own_id)
            ),
            "check provider.azure.own_nic",
        ));
        return;
    };
    if peer_subnet
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case(&subnet_id))
    {
        out.push(Check::pass(
            "same_subnet",
            format!("both NICs are in subnet {subnet_id}"),
        ));
    } else {
        out.push(Check::fail(
            "same_subnet",
            format!("this node's NIC is in {subnet_id}, the peer's in {}", peer_subnet.as_deref().unwrap_or("no subnet")),
            "put both LAN NICs in the same subnet: an ipConfiguration can only move within its subnet",
        ));
    }
    let subnet = match arm
        .get(log, "selftest.subnet", &subnet_id, NETWORK_API_VERSION)
        .await
    {
        Ok(r) => Some(r.body),
        Err(e) => {
            out.push(Check::warn(
                "floating_ip",
                format!("cannot read subnet {subnet_id} to check the floating IPs against it: {e}"),
                "grant Microsoft.Network/virtualNetworks/subnets/read for this check (the failover itself does not need it)",
            ));
            None
        }
    };
    let prefix = subnet.as_ref().and_then(|s| {
        s.pointer("/properties/addressPrefix")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let users: Vec<String> = subnet
        .as_ref()
        .and_then(|s| {
            s.pointer("/properties/ipConfigurations")
                .and_then(Value::as_array)
        })
        .map(|l| {
            l.iter()
                .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    // The NICs other than the pair's that have an ipConfiguration in this subnet.
    let nic_of = |ipconfig: &str| {
        let lower = ipconfig.to_ascii_lowercase();
        lower
            .find("/ipconfigurations/")
            .map(|at| ipconfig[..at].to_string())
    };
    let mut others: Vec<String> = Vec::new();
    for u in &users {
        if let Some(n) = nic_of(u) {
            if !n.eq_ignore_ascii_case(own_id)
                && !n.eq_ignore_ascii_case(&input.config.peer_nic)
                && !others.iter().any(|o| o.eq_ignore_ascii_case(&n))
            {
                others.push(n);
            }
        }
    }
    let mut other_docs = Vec::new();
    for o in &others {
        match arm.get(log, "selftest.get", o, NETWORK_API_VERSION).await {
            Ok(r) => other_docs.push((o.clone(), r.body)),
            Err(e) => out.push(Check::warn(
                "floating_ip",
                format!("cannot read NIC {o} in the same subnet to see whether it holds a floating IP: {e}"),
                "grant networkInterfaces/read on the subnet's resource group for this check",
            )),
        }
    }
    for f in &input.floating {
        let ip = f.address;
        let mut problems = Vec::new();
        if let Some(p) = &prefix {
            if let Some(problem) = address_problem(p, ip) {
                problems.push((problem, format!("pick a floating IP inside {p} other than its first four and last addresses")));
            }
        }
        for (id, doc) in &other_docs {
            if nic::holds(doc, ip) {
                problems.push((
                    format!("held by a third NIC {id}"),
                    format!(
                        "remove {ip} from NIC {} (only the pair's NICs may hold it)",
                        short(id)
                    ),
                ));
            }
        }
        if problems.is_empty() {
            if prefix.is_some() {
                out.push(Check::pass(
                    "floating_ip",
                    format!(
                        "{ip} is inside {}, not reserved, on no third NIC",
                        prefix.as_deref().unwrap_or_default()
                    ),
                ));
            }
        } else {
            for (problem, fix) in problems {
                out.push(Check::fail(
                    "floating_ip",
                    format!("{ip} is {problem}"),
                    fix,
                ));
            }
        }
        let holder = match (nic::holds(own, ip), nic::holds(peer, ip)) {
            (true, false) => Some("this node"),
            (false, true) => Some("the peer"),
            (true, true) => None,
            (false, false) => None,
        };
        match holder {
            Some(h) => out.push(Check::pass("holder", format!("{ip} is on {h}'s NIC"))),
            None if nic::holds(own, ip) => out.push(Check::fail("holder", format!("{ip} is on both NICs"), "remove it from the NIC of the standby node")),
            None => out.push(Check::warn(
                "holder",
                format!("{ip} is on neither NIC: traffic to it is dropped until the active node takes it"),
                "start the daemons: the active node adds it (or check the config's address)",
            )),
        }
    }
}

async fn check_routes(
    arm: &ArmClient,
    log: &CallLog,
    input: &Input,
    own: &Value,
    peer: &Value,
    tables: &BTreeMap<String, Option<Value>>,
    out: &mut Vec<Check>,
) {
    let own_addr = nic::primary_address(own);
    let peer_addr = nic::primary_address(peer);
    for route in &input.routes {
        if tables
            .get(&route.table.to_ascii_lowercase())
            .is_some_and(Option::is_none)
        {
            continue; // the table read failed above
        }
        let id = routes::route_id(route);
        let label = format!("{}/{}", short(&route.table), route.name);
        let doc = match arm
            .get(log, "selftest.route", &id, NETWORK_API_VERSION)
            .await
        {
            Ok(r) => r.body,
            Err(e) if e.class == ErrorClass::NotFound => {
                out.push(Check::warn(
                    "route",
                    format!("route {label} does not exist yet"),
                    "nothing to do: the active node creates it on its next takeover (or add it now)",
                ));
                continue;
            }
            Err(e) => {
                out.push(read_failure("route", "route", &id, &e));
                continue;
            }
        };
        let hop = routes::next_hop_of(&doc);
        let expected_here = match route.next_hop {
            NextHop::SelfAddress => [own_addr, peer_addr],
            NextHop::FloatingIp => [input.floating.first().map(|f| f.address), None],
        };
        let who = match hop {
            Some(h) if Some(h) == own_addr && route.next_hop == NextHop::SelfAddress => "this node",
            Some(h) if Some(h) == peer_addr && route.next_hop == NextHop::SelfAddress => "the peer",
            Some(_) if route.next_hop == NextHop::FloatingIp => "the floating IP",
            _ => "",
        };
        if hop.is_some() && expected_here.contains(&hop) {
            out.push(Check::pass(
                "route",
                format!(
                    "{label} ({}) -> {} ({who})",
                    route.prefix,
                    hop.map(|h| h.to_string()).unwrap_or_default()
                ),
            ));
        } else {
            let wanted = match route.next_hop {
                NextHop::SelfAddress => "the active node's own address",
                NextHop::FloatingIp => "the floating IP",
            };
            out.push(Check::fail(
                "route",
                format!(
                    "{label} ({}) points at {}, not {wanted} as next_hop = {:?} says",
                    route.prefix,
                    hop.map(|h| h.to_string()).unwrap_or_else(|| "no virtual appliance".into()),
                    route.next_hop
                ),
                "correct [[route]] next_hop or the route in Azure; the active node rewrites it on takeover",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_outside_addresses() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert!(address_problem("10.0.1.0/24", ip("10.0.1.100")).is_none());
        for reserved in ["10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.255"] {
            let p = address_problem("10.0.1.0/24", ip(reserved)).expect("reserved");
            assert!(p.contains("reserved"), "{p}");
        }
        assert!(address_problem("10.0.1.0/24", ip("10.0.2.4"))
            .expect("outside")
            .contains("outside"));
    }
}
