//! Standard internal load balancers (`Microsoft.Network/loadBalancers`): the ARM resource
//! and the settings the data plane ([`crate::dataplane`]) runs on.
//!
//! The document follows `LoadBalancer` in loadBalancer.json
//! (specification/network/resource-manager/Microsoft.Network/stable/2024-05-01): one
//! frontend IP configuration on a subnet, one backend address pool whose members are NIC
//! ipConfigurations (`backendIPConfigurations`, read-only on the load balancer: membership is
//! written on the NIC, `loadBalancerBackendAddressPools`), one probe and one load-balancing
//! rule. The spec's rules the emulator enforces when a scenario declares one:
//!
//! * probe `protocol` is `Tcp`, `Http` or `Https`; `requestPath` is required for Http(s) and
//!   not allowed for Tcp; `port` is 1-65535; `intervalInSeconds` is at least 5 (default 15);
//!   `probeThreshold` is at least 1: "the number of consecutive successful or failed probes
//!   in order to allow or deny traffic from being delivered to this endpoint";
//! * an HA-ports rule is `protocol: All` with `frontendPort` and `backendPort` 0, on a
//!   Standard SKU internal (private) frontend; other rules are `Tcp` or `Udp` with ports
//!   1-65534;
//! * the frontend's private IP is a usable address of its subnet that no NIC holds.
//!
//! The resource is read-only here (GET): the pair under test reads it, it never writes it.
//!
//! The scenario's spec types (`LoadBalancerSpec` and its parts) are owned by
//! [`crate::scenario`] and re-exported here; the stored resource is
//! [`crate::state::LoadBalancer`]. This module checks a spec and builds the document
//! ([`build_all`]), renders it with its members, and serves GET.

use crate::arm::{resource_not_found, rg_not_found, Ctx};
use crate::auth::authorize;
use crate::http::Resp;
use crate::ids;
use crate::scenario::ScenarioError;
pub use crate::scenario::{BackendPoolSpec, FrontendSpec, LoadBalancerSpec, ProbeSpec, RuleSpec};
use crate::state::{ipconfigs, new_etag, LoadBalancer, State};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

const TYPE: &str = "Microsoft.Network/loadBalancers";

/// Probe protocols of the spec (`ProbeProtocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeProtocol {
    /// An accepted connection.
    Tcp,
    /// `200 OK` for the request path.
    Http,
    /// The same over TLS.
    Https,
}

/// What the data plane needs of a load balancer, read from the state on every probe round.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadBalancerSettings {
    /// The frontend's private address.
    pub frontend_ip: Ipv4Addr,
    /// The probe's protocol.
    pub probe_protocol: ProbeProtocol,
    /// The probe's port.
    pub probe_port: u16,
    /// The Http(s) probe's path.
    pub request_path: Option<String>,
    /// Seconds between probe rounds.
    pub interval_secs: u32,
    /// Consecutive results that change a backend's state.
    pub probe_threshold: u32,
    /// `None` for HA ports (every port, to the same port on the backend); otherwise the
    /// rule's `(frontendPort, backendPort)`.
    pub ports: Option<(u16, u16)>,
    /// The pool's members as the NICs' settled documents say: each member ipConfiguration's
    /// private address.
    pub backends: Vec<Ipv4Addr>,
}

fn err<T>(lb: &str, msg: impl std::fmt::Display) -> Result<T, ScenarioError> {
    Err(ScenarioError(format!("load balancer {lb}: {msg}")))
}

fn probe_protocol(lb: &str, p: &ProbeSpec) -> Result<(ProbeProtocol, &'static str), ScenarioError> {
    match p.protocol.to_ascii_lowercase().as_str() {
        "tcp" => Ok((ProbeProtocol::Tcp, "Tcp")),
        "http" => Ok((ProbeProtocol::Http, "Http")),
        "https" => Ok((ProbeProtocol::Https, "Https")),
        other => err(
            lb,
            format!("probe protocol {other} is not Tcp, Http or Https"),
        ),
    }
}

/// Adds the scenario's load balancers to `st` (after its NICs), writing each pool member's
/// `loadBalancerBackendAddressPools` reference on its NIC.
pub(crate) fn build_all(
    st: &mut State,
    sub: &str,
    default_rg: &str,
    location: &str,
    specs: &[LoadBalancerSpec],
) -> Result<(), ScenarioError> {
    for spec in specs {
        let rg = spec.resource_group.as_deref().unwrap_or(default_rg);
        let lb = build(st, sub, rg, location, spec)?;
        st.load_balancers
            .insert(ids::key(lb.doc["id"].as_str().unwrap_or_default()), lb);
    }
    Ok(())
}

fn build(
    st: &mut State,
    sub: &str,
    rg: &str,
    location: &str,
    spec: &LoadBalancerSpec,
) -> Result<LoadBalancer, ScenarioError> {
    let name = spec.name.as_str();
    let id = ids::resource_id(sub, rg, TYPE, name);
    let child = |kind: &str, child: &str| format!("{id}/{kind}/{child}");
    let frontend_id = child("frontendIPConfigurations", &spec.frontend.name);
    let pool_id = child("backendAddressPools", &spec.backend_pool.name);
    let probe_id = child("probes", &spec.probe.name);
    let rule_id = child("loadBalancingRules", &spec.rule.name);

    // Frontend: a static, usable, unused address of its subnet.
    let Some((vnet, subnet)) = spec.frontend.subnet.split_once('/') else {
        return err(name, "frontend subnet must be \"<vnet>/<subnet>\"");
    };
    let subnet_id = format!(
        "{}/subnets/{subnet}",
        ids::resource_id(sub, rg, "Microsoft.Network/virtualNetworks", vnet)
    );
    let Some(sn) = st.subnet(&subnet_id) else {
        return err(name, format!("unknown subnet {}", spec.frontend.subnet));
    };
    let Ok(frontend_ip) = spec.frontend.private_ip_address.parse::<Ipv4Addr>() else {
        return err(
            name,
            format!("bad frontend address {}", spec.frontend.private_ip_address),
        );
    };
    if !sn.prefix.contains(frontend_ip) || sn.prefix.is_reserved(frontend_ip) {
        return err(
            name,
            format!("{frontend_ip} is not usable in {}", sn.prefix),
        );
    }
    if st.used_ips(&ids::key(&sn.vnet_id)).contains(&frontend_ip) {
        return err(name, format!("{frontend_ip} is already used by a NIC"));
    }

    // Probe.
    let p = &spec.probe;
    let (_, protocol) = probe_protocol(name, p)?;
    if p.port == 0 {
        return err(name, "probe port must be 1-65535");
    }
    match (protocol, &p.request_path) {
        ("Tcp", Some(_)) => return err(name, "requestPath is not allowed on a Tcp probe"),
        ("Http" | "Https", None) => {
            return err(name, "requestPath is required on an Http(s) probe")
        }
        _ => {}
    }
    if p.interval_in_seconds < 5 {
        return err(name, "probe intervalInSeconds must be at least 5");
    }
    if p.probe_threshold < 1 {
        return err(name, "probe probeThreshold must be at least 1");
    }
    let mut probe_props = json!({
        "provisioningState": "Succeeded",
        "protocol": protocol,
        "port": p.port,
        "intervalInSeconds": p.interval_in_seconds,
        // Deprecated beside probeThreshold; the service reports both.
        "numberOfProbes": p.probe_threshold,
        "probeThreshold": p.probe_threshold,
        "loadBalancingRules": [{"id": rule_id}],
    });
    if let Some(path) = &p.request_path {
        probe_props["requestPath"] = json!(path);
    }

    // Rule: HA ports, or one TCP/UDP port.
    let r = &spec.rule;
    let rule_protocol = match r.protocol.to_ascii_lowercase().as_str() {
        "all" => {
            if r.frontend_port != 0 || r.backend_port != 0 {
                return err(
                    name,
                    "an HA-ports rule (protocol All) has frontendPort and backendPort 0",
                );
            }
            "All"
        }
        "tcp" | "udp" => {
            if !(1..=65534).contains(&r.frontend_port) || !(1..=65534).contains(&r.backend_port) {
                return err(
                    name,
                    "a Tcp or Udp rule has frontendPort and backendPort 1-65534",
                );
            }
            if r.protocol.eq_ignore_ascii_case("tcp") {
                "Tcp"
            } else {
                "Udp"
            }
        }
        other => {
            return err(
                name,
                format!("rule protocol {other} is not All, Tcp or Udp"),
            )
        }
    };
    if !(4..=100).contains(&r.idle_timeout_in_minutes) {
        return err(name, "rule idleTimeoutInMinutes must be 4-100");
    }

    // Pool members: write the membership on each NIC's ipConfiguration, as NRP shows it.
    for member in &spec.backend_pool.ip_configurations {
        let Some((nic, ipconfig)) = member.split_once('/') else {
            return err(
                name,
                format!("pool member {member} is not \"<nic>/<ipconfig>\""),
            );
        };
        let nic_key = ids::key(&ids::nic_id(sub, rg, nic));
        let Some(nic) = st.nics.get_mut(&nic_key) else {
            return err(name, format!("pool member {member}: unknown NIC"));
        };
        let cfgs = nic
            .applied
            .pointer_mut("/properties/ipConfigurations")
            .and_then(Value::as_array_mut);
        let Some(cfg) = cfgs.into_iter().flatten().find(|c| {
            c.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(ipconfig))
        }) else {
            return err(
                name,
                format!("pool member {member}: unknown ipConfiguration"),
            );
        };
        cfg["properties"]["loadBalancerBackendAddressPools"] = json!([{ "id": pool_id }]);
    }

    let etag = new_etag();
    let sub_resource = |kind: &str, name: &str, id: &str, props: Value| {
        json!({
            "name": name, "id": id, "etag": etag,
            "type": format!("{TYPE}/{kind}"),
            "properties": props,
        })
    };
    let doc = json!({
        "name": name,
        "id": id,
        "etag": etag,
        "type": TYPE,
        "location": location,
        "sku": {"name": "Standard", "tier": "Regional"},
        "properties": {
            "provisioningState": "Succeeded",
            "resourceGuid": uuid::Uuid::new_v4().to_string(),
            "frontendIPConfigurations": [sub_resource("frontendIPConfigurations", &spec.frontend.name, &frontend_id, json!({
                "provisioningState": "Succeeded",
                "privateIPAddress": frontend_ip.to_string(),
                "privateIPAllocationMethod": "Static",
                "privateIPAddressVersion": "IPv4",
                "subnet": {"id": subnet_id},
                "loadBalancingRules": [{"id": rule_id}],
            }))],
            "backendAddressPools": [sub_resource("backendAddressPools", &spec.backend_pool.name, &pool_id, json!({
                "provisioningState": "Succeeded",
                "loadBalancingRules": [{"id": rule_id}],
            }))],
            "probes": [sub_resource("probes", &p.name, &probe_id, probe_props)],
            "loadBalancingRules": [sub_resource("loadBalancingRules", &r.name, &rule_id, json!({
                "provisioningState": "Succeeded",
                "frontendIPConfiguration": {"id": frontend_id},
                "backendAddressPool": {"id": pool_id},
                "backendAddressPools": [{"id": pool_id}],
                "probe": {"id": probe_id},
                "protocol": rule_protocol,
                "loadDistribution": "Default",
                "frontendPort": r.frontend_port,
                "backendPort": r.backend_port,
                "idleTimeoutInMinutes": r.idle_timeout_in_minutes,
                "enableFloatingIP": false,
                "enableTcpReset": false,
                "disableOutboundSnat": true,
            }))],
            "inboundNatRules": [],
            "inboundNatPools": [],
            "outboundRules": [],
        }
    });
    Ok(LoadBalancer { doc, pool_id })
}

/// The ipConfiguration ids and addresses that reference `pool_id` in the NICs' settled
/// documents (what the data plane delivers to).
fn members(st: &State, pool_id: &str) -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    for nic in st.nics.values() {
        for cfg in ipconfigs(&nic.applied) {
            let in_pool = cfg
                .pointer("/properties/loadBalancerBackendAddressPools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("id").and_then(Value::as_str))
                .any(|id| id.eq_ignore_ascii_case(pool_id));
            let ip = cfg
                .pointer("/properties/privateIPAddress")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok());
            if let (true, Some(ip), Some(id)) = (in_pool, ip, cfg.get("id").and_then(Value::as_str))
            {
                out.push((id.to_string(), ip));
            }
        }
    }
    out
}

impl LoadBalancer {
    /// The document GET returns: the pool's `backendIPConfigurations` filled in.
    pub fn render(&self, st: &State) -> Value {
        let mut doc = self.doc.clone();
        let members: Vec<Value> = members(st, &self.pool_id)
            .into_iter()
            .map(|(id, _)| json!({ "id": id }))
            .collect();
        if let Some(pool) = doc.pointer_mut("/properties/backendAddressPools/0/properties") {
            pool["backendIPConfigurations"] = json!(members);
        }
        doc
    }

    /// What the data plane runs on.
    pub fn settings(&self, st: &State) -> Option<LoadBalancerSettings> {
        let props = self.doc.get("properties")?;
        let probe = props.pointer("/probes/0/properties")?;
        let rule = props.pointer("/loadBalancingRules/0/properties")?;
        let probe_protocol = match probe.get("protocol")?.as_str()? {
            "Tcp" => ProbeProtocol::Tcp,
            "Http" => ProbeProtocol::Http,
            _ => ProbeProtocol::Https,
        };
        let port = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
        };
        let ports = match rule.get("protocol")?.as_str()? {
            "All" => None,
            _ => Some((port(rule, "frontendPort")?, port(rule, "backendPort")?)),
        };
        Some(LoadBalancerSettings {
            frontend_ip: props
                .pointer("/frontendIPConfigurations/0/properties/privateIPAddress")?
                .as_str()?
                .parse()
                .ok()?,
            probe_protocol,
            probe_port: port(probe, "port")?,
            request_path: probe
                .get("requestPath")
                .and_then(Value::as_str)
                .map(str::to_string),
            interval_secs: probe.get("intervalInSeconds")?.as_u64()? as u32,
            probe_threshold: probe.get("probeThreshold")?.as_u64()? as u32,
            ports,
            backends: members(st, &self.pool_id)
                .into_iter()
                .map(|(_, ip)| ip)
                .collect(),
        })
    }
}

/// GET `.../loadBalancers/{name}`.
pub(crate) fn get(st: &State, ctx: &Ctx, sub: &str, rg: &str, name: &str) -> Resp {
    let id = ids::resource_id(sub, rg, TYPE, name);
    if let Err(r) = authorize(
        st,
        &ctx.principal,
        "Microsoft.Network/loadBalancers/read",
        &id,
    ) {
        return r;
    }
    if st.resource_group(sub, rg).is_none() {
        return rg_not_found(rg);
    }
    match st.load_balancers.get(&ids::key(&id)) {
        Some(lb) => Resp::json(200, &lb.render(st)),
        None => resource_not_found(TYPE, name, rg),
    }
}
