//! Moving the floating ipConfigurations from the peer's NIC to this node's NIC.
//!
//! Two-step (default): PUT the peer's NIC without them, and, once that write is accepted, PUT this
//! NIC with them; the second PUT meets `PrivateIPAddressInUse` until the first has propagated and
//! simply retries, so this node's update starts the moment the address is free instead of after
//! the peer's operation poll says so. All floating IPs move in one PUT per NIC.
//!
//! Atomic (opt-in): one `moveIpConfigurations` POST on the virtual network; when the subscription
//! does not have the (preview) feature, the provider says so once and uses the two-step move.

use std::net::Ipv4Addr;
use std::time::Instant;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::arm::{
    ArmClient, ArmError, CallLog, ErrorClass, Watch, MOVE_API_VERSION, NETWORK_API_VERSION,
};
use crate::budget::FIRST;
use crate::carried::Carried;
use crate::config::{vnet_of_subnet, FloatingIpConfig};
use crate::elsewhere::{self, Elsewhere};
use crate::ensure::{ensure, read_within, Stage, Target};
use crate::gate::{needed_for_add, PermissionCache};
pub use crate::ids::short;
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

/// `cloudha-10-0-1-100`: the name used when the config gives none and no NIC had it.
pub fn default_ip_config_name(ip: Ipv4Addr) -> String {
    format!("cloudha-{}", ip.to_string().replace('.', "-"))
}

/// The template for `floating` when nothing was kept of its entry.
fn template(floating: &FloatingIpConfig, own_subnet: &str) -> Template {
    Template {
        name: floating
            .ip_config_name
            .clone()
            .unwrap_or_else(|| default_ip_config_name(floating.address)),
        subnet_id: own_subnet.to_string(),
        public_ip_id: floating.public_ip.clone(),
    }
}

/// The entries this NIC must end up with, one per floating IP.
fn wanted(
    carried: &Carried,
    nics: &NicPair<'_>,
    floating: &[FloatingIpConfig],
) -> Vec<(Ipv4Addr, Value)> {
    floating
        .iter()
        .map(|f| {
            (
                f.address,
                carried.entry_for(f.address, nics.own, || template(f, nics.own_subnet)),
            )
        })
        .collect()
}

/// The moving parts of a two-step move.
pub struct TwoStep<'a> {
    pub arm: &'a ArmClient,
    pub log: &'a CallLog,
    pub nics: NicPair<'a>,
    pub floating: &'a [FloatingIpConfig],
    pub carried: &'a Carried,
    pub permissions: &'a PermissionCache,
    /// Third NICs ARM named as holding a floating IP (for observe).
    pub elsewhere: &'a Elsewhere,
}

/// Two-step move: converge the peer's NIC to "none of the floating IPs" and this NIC to "all of
/// them", the add gated on the removal being accepted. Nothing is removed from the peer unless
/// this node has proved it may add every entry whole (its NIC's write, the join on everything
/// the entries link to) and has kept the entries on disk. An add refused for want of a
/// permission after all puts the entries back on the peer's NIC. Returns whether anything
/// changed.
pub async fn two_step(m: &TwoStep<'_>, deadline: Instant) -> Result<bool, ArmError> {
    let (arm, log, nics) = (m.arm, m.log, &m.nics);
    let ips: Vec<Ipv4Addr> = m.floating.iter().map(|f| f.address).collect();
    let peer_doc = read_within(
        arm,
        log,
        "nic.get",
        nics.peer,
        NETWORK_API_VERSION,
        deadline,
    )
    .await?;
    let Some(own_doc) =
        read_within(arm, log, "nic.get", nics.own, NETWORK_API_VERSION, deadline).await?
    else {
        return Err(own_missing(nics.own));
    };
    let to_strip: Vec<Ipv4Addr> = ips
        .iter()
        .copied()
        .filter(|ip| !nic::holds(&own_doc, *ip))
        .filter(|ip| peer_doc.as_ref().is_some_and(|d| nic::holds(d, *ip)))
        .collect();
    if let (false, Some(peer)) = (to_strip.is_empty(), &peer_doc) {
        m.carried.learn(nics.peer, peer, &to_strip);
        let entries: Vec<Value> = wanted(m.carried, nics, m.floating)
            .into_iter()
            .filter(|(ip, _)| to_strip.contains(ip))
            .map(|(_, e)| e)
            .collect();
        let needed = needed_for_add(nics.own, &own_doc, &entries);
        m.permissions.require(arm, log, &needed, deadline).await?;
    }
    let (removal, gate) = watch::channel(Stage::Pending);
    let peer_target = nic_target(
        nics.peer,
        "peer",
        "nic.remove",
        format!("remove {} from peer NIC {}", list(&ips), short(nics.peer)),
    );
    let own_target = nic_target(
        nics.own,
        "own",
        "nic.add",
        format!("add {} to own NIC {}", list(&ips), short(nics.own)),
    );
    let removed_any = std::sync::atomic::AtomicBool::new(false);
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
                    let next = nic::without_addresses(doc, &ips)?;
                    if next.is_some() {
                        // On disk before the removal is sent: a crash between the two writes
                        // must not lose what only the peer's NIC held.
                        m.carried.keep_before_removal(nics.peer, doc, &ips)?;
                        removed_any.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(next)
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
            Some(doc) => nic::with_addresses(doc, &wanted(m.carried, nics, m.floating)),
        },
        Some(gate.clone()),
        None,
    );
    let (removed, added) = tokio::join!(remove, add);
    match (removed, added) {
        (Ok(r), Ok(a)) => Ok(r || a),
        (Err(e), _) => {
            if e.status == 403 {
                // What we believed about our grants was wrong.
                m.permissions.forget().await;
            }
            Err(e)
        }
        (Ok(_), Err(e)) if e.class == ErrorClass::AddressInUse && Instant::now() < deadline => {
            Err(held_elsewhere(m, &ips, peer_doc.as_ref(), e).await)
        }
        (Ok(_), Err(e)) if e.status == 403 => {
            m.permissions.forget().await;
            if removed_any.load(std::sync::atomic::Ordering::SeqCst) {
                put_back(m, &ips, deadline).await;
            }
            Err(e)
        }
        (Ok(_), Err(e)) => Err(e),
    }
}

/// The add was refused with the address in use although the configured peer's NIC no longer
/// holds it (the removal was verified, or there was nothing to remove): a third NIC has it. When
/// ARM names that NIC, or the peer's NIC still does not hold the address on a second look, the
/// configuration is the cause: a permanent error that names the holder, what is wrong with
/// `provider.azure.peer_nic` and the fix. When the peer's NIC holds it again (its own repair
/// across a partition), the error stays as it was: the next attempt removes it again.
async fn held_elsewhere(
    m: &TwoStep<'_>,
    ips: &[Ipv4Addr],
    peer_doc: Option<&Value>,
    refused: ArmError,
) -> ArmError {
    let nics = &m.nics;
    let holder = elsewhere::third_holder(&refused, nics.own, nics.peer);
    if holder.is_none() {
        match m
            .arm
            .get(m.log, "nic.get", nics.peer, NETWORK_API_VERSION)
            .await
        {
            Ok(r) if ips.iter().any(|ip| nic::holds(&r.body, *ip)) => return refused,
            Ok(_) => {}
            Err(e) if e.class == ErrorClass::NotFound => {}
            Err(_) => return refused,
        }
    }
    // The addresses ARM's message is about (all of them when it names none).
    let named: Vec<Ipv4Addr> = ips
        .iter()
        .copied()
        .filter(|ip| refused.message.contains(&ip.to_string()))
        .collect();
    let about = if named.is_empty() {
        ips.to_vec()
    } else {
        named
    };
    if let Some(h) = &holder {
        for ip in &about {
            m.elsewhere.record(*ip, h);
        }
    }
    let problem = elsewhere::peer_problem(nics.peer, peer_doc, nics.own_subnet);
    let error = elsewhere::mismatch(&list(&about), holder.as_deref(), &problem, &refused);
    m.log.progress().note(error.message.clone());
    error
}

/// The add was refused after the removal: put the kept entries back on the peer's NIC, so the
/// address is served by the node that had it rather than by nobody. Best effort: the attempt
/// fails either way and the daemon tries again.
async fn put_back(m: &TwoStep<'_>, ips: &[Ipv4Addr], deadline: Instant) {
    let nics = &m.nics;
    let target = nic_target(
        nics.peer,
        "peer",
        "nic.restore",
        format!(
            "put {} back on peer NIC {}: this node may not add it",
            list(ips),
            short(nics.peer)
        ),
    );
    let back = NicPair {
        own: nics.peer,
        peer: nics.own,
        own_subnet: nics.own_subnet,
    };
    let result = ensure(
        m.arm,
        m.log,
        &target,
        deadline,
        |current| match current {
            None => Ok(None),
            Some(doc) => nic::with_addresses(doc, &wanted(m.carried, &back, m.floating)),
        },
        None,
        None,
    )
    .await;
    if let Err(e) = result {
        m.log.progress().note(format!(
            "putting {} back on the peer's NIC failed too: {e}",
            list(ips)
        ));
    }
}

fn own_missing(own: &str) -> ArmError {
    ArmError {
        operation: "nic.get".into(),
        status: 404,
        code: "NotFound".into(),
        message: format!("own NIC {own} does not exist"),
        retry_after: None,
        class: ErrorClass::Permanent,
    }
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
    carried: &Carried,
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
    carried.learn(nics.peer, &peer, &ips);
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
        let Some(entry) = nic::ipconfig_with(&peer, *ip) else {
            continue;
        };
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let subnet = entry
            .pointer("/properties/subnet/id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        vnet = vnet.or_else(|| vnet_of_subnet(subnet).map(str::to_string));
        items.push(json!({
            "sourceIpConfiguration": {"id": format!("{}/ipConfigurations/{name}", nics.peer)},
            "targetIpConfiguration": {"id": format!("{}/ipConfigurations/{name}", nics.own)},
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
        .write(log, "vnet.move", Method::POST, &url, &body, None, FIRST)
        .await
    {
        Ok(accepted) => {
            // Moved when this NIC holds every address and its update has ended.
            let applied =
                |doc: &Value| nic::update_applied(doc) && ips.iter().all(|ip| nic::holds(doc, *ip));
            let watch = Watch {
                id: nics.own,
                api_version: NETWORK_API_VERSION,
                applied: &applied,
            };
            arm.wait_for_operation(log, "vnet.move", &accepted, deadline, Some(&watch))
                .await
                .map(|()| AtomicOutcome::Done(true))
        }
        // Not available to this subscription, or not to this identity: ARM authorizes the POST
        // against the virtual network (`virtualNetworks/moveIpConfigurations/action`, by ARM's
        // naming convention), where a role granted on the NICs has nothing. Either way the
        // two-step move can still do the job.
        Err(e) if e.class == ErrorClass::FeatureUnavailable || e.status == 403 => Ok(
            AtomicOutcome::Unavailable(format!("HTTP {} {}: {}", e.status, e.code, e.message)),
        ),
        Err(e) => Err(e),
    };
    op.finish(&result);
    result
}

/// One NIC write of a move: `whose` NIC ("own", "peer"), the progress operation (`nic.add`)
/// and what it changes, for status.
fn nic_target<'a>(id: &'a str, whose: &str, operation: &str, description: String) -> Target<'a> {
    Target {
        id,
        api_version: NETWORK_API_VERSION,
        kind: "nic",
        label: format!("{whose} NIC {}", short(id)),
        operation: format!("{operation} {}", short(id)),
        description,
        first_read: None,
        caller_verifies: false,
        // The floating IP before any route.
        write_priority: FIRST,
    }
}

fn list(ips: &[Ipv4Addr]) -> String {
    ips.iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
