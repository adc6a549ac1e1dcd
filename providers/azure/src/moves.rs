//! Moving the floating ipConfigurations from the peer's NIC to this node's NIC.
//!
//! Two-step (default): PUT the peer's NIC without them, and, once that write is accepted, PUT this
//! NIC with them; the second PUT meets `PrivateIPAddressInUse` until the first has propagated and
//! simply retries, so this node's update starts the moment the address is free instead of after
//! the peer's operation poll says so. All floating IPs move in one PUT per NIC.
//!
//! Atomic (opt-in): one `moveIpConfigurations` POST on the virtual network; when the subscription
//! does not have the (preview) feature, the provider says so once and uses the two-step move.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Instant;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::arm::{ArmClient, ArmError, CallLog, ErrorClass, MOVE_API_VERSION, NETWORK_API_VERSION};
use crate::config::{vnet_of_subnet, FloatingIpConfig};
use crate::ensure::{ensure, Stage, Target};
use crate::nic::{self, Template};

/// The NICs a move works on.
#[derive(Debug, Clone)]
pub struct NicPair<'a> {
    /// This node's NIC id.
    pub own: &'a str,
    /// The peer's NIC id.
    pub peer: &'a str,
    /// Subnet of this NIC's primary ipConfiguration (for a floating IP created from scratch).
    pub own_subnet: &'a str,
}

/// What the move remembers between attempts: the template of each floating ipConfiguration as
/// last seen on the peer's NIC, so that an attempt which finds the address on neither NIC (the
/// previous one was cut off between its two PUTs) recreates it with its public IP.
#[derive(Debug, Default)]
pub struct Templates(Mutex<HashMap<Ipv4Addr, Template>>);

impl Templates {
    fn learn(&self, peer_nic: &Value, ips: &[Ipv4Addr]) {
        if let Ok(mut map) = self.0.lock() {
            for ip in ips {
                if let Some(t) = nic::template_of(peer_nic, *ip) {
                    map.insert(*ip, t);
                }
            }
        }
    }

    fn for_ip(&self, floating: &FloatingIpConfig, own_subnet: &str) -> Template {
        let learned = self
            .0
            .lock()
            .ok()
            .and_then(|m| m.get(&floating.address).cloned());
        learned.unwrap_or_else(|| Template {
            name: floating
                .ip_config_name
                .clone()
                .unwrap_or_else(|| default_ip_config_name(floating.address)),
            subnet_id: own_subnet.to_string(),
            public_ip_id: floating.public_ip.clone(),
        })
    }
}

/// `cloudha-10-0-1-100`: the name used when the config gives none and no NIC had it.
pub fn default_ip_config_name(ip: Ipv4Addr) -> String {
    format!("cloudha-{}", ip.to_string().replace('.', "-"))
}

/// Two-step move: converge the peer's NIC to "none of the floating IPs" and this NIC to "all of
/// them", the add gated on the removal being accepted. Returns whether anything changed.
pub async fn two_step(
    arm: &ArmClient,
    log: &CallLog,
    nics: &NicPair<'_>,
    floating: &[FloatingIpConfig],
    templates: &Templates,
    deadline: Instant,
) -> Result<bool, ArmError> {
    let ips: Vec<Ipv4Addr> = floating.iter().map(|f| f.address).collect();
    let (removal, gate) = watch::channel(Stage::Pending);
    let peer_target = Target {
        id: nics.peer,
        api_version: NETWORK_API_VERSION,
        kind: "nic",
        label: format!("peer NIC {}", short(nics.peer)),
        operation: format!("nic.remove {}", short(nics.peer)),
        description: format!("remove {} from peer NIC {}", list(&ips), short(nics.peer)),
        first_read: None,
        caller_verifies: false,
    };
    let own_target = Target {
        id: nics.own,
        api_version: NETWORK_API_VERSION,
        kind: "nic",
        label: format!("own NIC {}", short(nics.own)),
        operation: format!("nic.add {}", short(nics.own)),
        description: format!("add {} to own NIC {}", list(&ips), short(nics.own)),
        first_read: None,
        caller_verifies: false,
    };
    let remove = async {
        let result = ensure(
            arm,
            log,
            &peer_target,
            deadline,
            |current| match current {
                // A peer NIC that no longer exists holds nothing.
                None => Ok(None),
                Some(doc) => {
                    templates.learn(doc, &ips);
                    nic::without_addresses(doc, &ips)
                }
            },
            None,
            Some(&removal),
        )
        .await;
        if result.is_ok() {
            removal.send_replace(Stage::Done);
        }
        result
    };
    let add = ensure(
        arm,
        log,
        &own_target,
        deadline,
        |current| match current {
            None => Err(format!(
                "own NIC {} does not exist; check provider.azure.own_nic",
                nics.own
            )),
            Some(doc) => {
                let wanted: Vec<(Ipv4Addr, Template)> = floating
                    .iter()
                    .map(|f| (f.address, templates.for_ip(f, nics.own_subnet)))
                    .collect();
                nic::with_addresses(doc, &wanted)
            }
        },
        Some(gate.clone()),
        None,
    );
    let (removed, added) = tokio::try_join!(remove, add)?;
    Ok(removed || added)
}

/// The outcome of an attempted atomic move.
#[derive(Debug)]
pub enum AtomicOutcome {
    /// Moved (or nothing was on the peer's NIC to move).
    Done(bool),
    /// The API is not available; the reason, for status.
    Unavailable(String),
}

/// Atomic move of every floating ipConfiguration the peer's NIC holds and this NIC lacks.
pub async fn atomic(
    arm: &ArmClient,
    log: &CallLog,
    nics: &NicPair<'_>,
    floating: &[FloatingIpConfig],
    templates: &Templates,
    deadline: Instant,
) -> Result<AtomicOutcome, ArmError> {
    let ips: Vec<Ipv4Addr> = floating.iter().map(|f| f.address).collect();
    let peer = match arm
        .get(log, "nic.get", nics.peer, NETWORK_API_VERSION)
        .await
    {
        Ok(r) => r.body,
        Err(e) if e.class == ErrorClass::NotFound => return Ok(AtomicOutcome::Done(false)),
        Err(e) => return Err(e),
    };
    templates.learn(&peer, &ips);
    let own = arm
        .get(log, "nic.get", nics.own, NETWORK_API_VERSION)
        .await?
        .body;
    let mut items = Vec::new();
    let mut vnet = None;
    for ip in &ips {
        if nic::holds(&own, *ip) {
            continue;
        }
        let Some(template) = nic::template_of(&peer, *ip) else {
            continue;
        };
        vnet = vnet.or_else(|| vnet_of_subnet(&template.subnet_id).map(str::to_string));
        items.push(json!({
            "sourceIpConfiguration": {"id": format!("{}/ipConfigurations/{}", nics.peer, template.name)},
            "targetIpConfiguration": {"id": format!("{}/ipConfigurations/{}", nics.own, template.name)},
        }));
    }
    let Some(vnet) = vnet else {
        return Ok(AtomicOutcome::Done(false));
    };
    let op = log.progress().operation(
        format!("vnet.move {}", short(nics.own)),
        format!(
            "atomic move of {} from {} to {}",
            list(&ips),
            short(nics.peer),
            short(nics.own)
        ),
    );
    let url = arm.url(&format!("{vnet}/moveIpConfigurations"), MOVE_API_VERSION);
    let body = json!({ "moveIpConfigurationItems": items });
    let result = match arm
        .write(log, "vnet.move", Method::POST, &url, &body, None)
        .await
    {
        Ok(accepted) => arm
            .wait_for_operation(log, "vnet.move", &accepted, deadline)
            .await
            .map(|()| AtomicOutcome::Done(true)),
        Err(e) if e.class == ErrorClass::FeatureUnavailable => Ok(AtomicOutcome::Unavailable(
            format!("HTTP {} {}: {}", e.status, e.code, e.message),
        )),
        Err(e) => Err(e),
    };
    op.finish(&result);
    result
}

/// The last segment of a resource id, for short labels.
pub fn short(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

fn list(ips: &[Ipv4Addr]) -> String {
    ips.iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
