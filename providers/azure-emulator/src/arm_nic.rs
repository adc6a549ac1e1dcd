//! `Microsoft.Network/networkInterfaces`: GET, list and PUT (CreateOrUpdate).
//!
//! Follows networkInterface.json (stable/2025-05-01, unchanged in this respect since
//! 2024-05-01): PUT replaces the whole resource, answers 201 (create) or 200 (update) with
//! the resulting resource, and is a long-running operation with
//! `final-state-via: azure-async-operation`. Validation mirrors what the Network RP
//! enforces; see README "Error codes" for which codes are verified against public reports.

use crate::arm::{check_preconditions, resource_not_found, rg_not_found, Ctx};
use crate::auth::{authorize, authorize_linked};
use crate::faults::{FaultKind, Phase};
use crate::http::{arm_error, invalid_format, nrp_error, Resp};
use crate::ids::{self, ArmId};
use crate::lro::{self, NewOp};
use crate::state::{ipconfigs, new_etag, stamp_nic, Nic, OpTarget, State};
use crate::validate::{parse_nic_ip_configs, IpConfigSpec};
use serde_json::{json, Map, Value};
use std::net::Ipv4Addr;
use std::time::Duration;

const READ: &str = "Microsoft.Network/networkInterfaces/read";
const WRITE: &str = "Microsoft.Network/networkInterfaces/write";

/// `GET .../networkInterfaces/{nic}`.
pub(crate) fn get(st: &State, ctx: &Ctx, sub: &str, rg: &str, name: &str) -> Resp {
    let id = ids::nic_id(sub, rg, name);
    if let Err(r) = authorize(st, &ctx.principal, READ, &id) {
        return r;
    }
    if st.resource_group(sub, rg).is_none() {
        return rg_not_found(rg);
    }
    match st.nics.get(&ids::key(&id)) {
        Some(nic) => Resp::json(200, nic.current()),
        None => resource_not_found("Microsoft.Network/networkInterfaces", name, rg),
    }
}

/// `GET .../networkInterfaces` in a resource group, or in the subscription (`rg = None`).
pub(crate) fn list(st: &State, ctx: &Ctx, sub: &str, rg: Option<&str>) -> Resp {
    let scope = match rg {
        Some(rg) => format!("/subscriptions/{sub}/resourceGroups/{rg}"),
        None => format!("/subscriptions/{sub}"),
    };
    if let Err(r) = authorize(st, &ctx.principal, READ, &scope) {
        return r;
    }
    if let Some(rg) = rg {
        if st.resource_group(sub, rg).is_none() {
            return rg_not_found(rg);
        }
    }
    let prefix = format!("{}/", scope.to_ascii_lowercase());
    let value: Vec<Value> = st
        .nics
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, n)| n.current().clone())
        .collect();
    Resp::json(200, &json!({ "value": value }))
}

/// Name of the primary ipConfiguration of a NIC document.
fn primary_name(doc: &Value) -> Option<String> {
    ipconfigs(doc)
        .iter()
        .find(|c| c.pointer("/properties/primary").and_then(Value::as_bool) == Some(true))
        .and_then(|c| c.get("name").and_then(Value::as_str))
        .map(str::to_string)
}

/// Previous address of the ipConfiguration named `name` in the same subnet, if any (a
/// Dynamic ipConfiguration keeps its address across updates).
fn previous_address(doc: &Value, name: &str, subnet_id: &str) -> Option<Ipv4Addr> {
    ipconfigs(doc)
        .iter()
        .find(|c| {
            c.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .filter(|c| {
            c.pointer("/properties/subnet/id")
                .and_then(Value::as_str)
                .is_some_and(|s| ids::key(s) == ids::key(subnet_id))
        })
        .and_then(|c| c.pointer("/properties/privateIPAddress"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// The linked access checks ARM runs on a NIC PUT body: `(join action, referenced id)` for
/// every resource the document references.
///
/// Action names from the Microsoft.Network operations list (learn.microsoft.com, "Azure
/// permissions for Networking"): `virtualNetworks/subnets/join/action`,
/// `publicIPAddresses/join/action`, `networkSecurityGroups/join/action`,
/// `applicationSecurityGroups/joinIpConfiguration/action`,
/// `loadBalancers/backendAddressPools/join/action`, `loadBalancers/inboundNatRules/join/action`,
/// `loadBalancers/frontendIPConfigurations/join/action` (a gateway load balancer) and
/// `applicationGateways/backendAddressPools/join/action`; the reference properties from
/// `NetworkInterfaceIPConfigurationPropertiesFormat` in networkInterface.json
/// (stable/2025-05-01).
///
/// ARM checks the references of the document it is sent, not a difference against the
/// stored NIC: it runs these checks before the request reaches the Network RP and has no
/// stored copy to compare with, which is why a tags-only update of a NIC is refused for a
/// missing subnet join. The public docs do not say so in as many words; the emulator checks
/// every reference in the body, which is the stricter reading.
fn linked_checks(body: &Value) -> Vec<(String, String)> {
    let mut ids: Vec<String> = Vec::new();
    let mut push = |v: Option<&Value>| {
        if let Some(id) = v.and_then(|r| r.get("id")).and_then(Value::as_str) {
            ids.push(id.to_string());
        }
    };
    push(body.pointer("/properties/networkSecurityGroup"));
    for c in ipconfigs(body) {
        let props = c.get("properties");
        let field = |name: &str| props.and_then(|p| p.get(name));
        push(field("subnet"));
        push(field("publicIPAddress"));
        for list in [
            "applicationSecurityGroups",
            "loadBalancerBackendAddressPools",
            "loadBalancerInboundNatRules",
            "applicationGatewayBackendAddressPools",
        ] {
            for r in field(list).and_then(Value::as_array).into_iter().flatten() {
                push(Some(r));
            }
        }
        push(field("gatewayLoadBalancer"));
    }
    // An id that does not parse is left to the Network RP, which refuses it by name.
    ids.into_iter()
        .filter_map(|id| ArmId::parse(&id).map(|a| (a.join_action(), id)))
        .collect()
}

fn invalid_reference(reference: &str, by: &str) -> Resp {
    nrp_error(
        400,
        "InvalidResourceReference",
        format!(
            "Resource {reference} referenced by resource {by} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."
        ),
    )
}

/// Checks private IPs against the subnets and every other NIC, assigning addresses to
/// Dynamic ipConfigurations. Returns the address of each spec, in order.
fn assign_addresses(
    st: &State,
    nic_id: &str,
    previous: Option<&Value>,
    specs: &[IpConfigSpec],
) -> Result<Vec<Ipv4Addr>, Resp> {
    let ipc_id = |s: &IpConfigSpec| format!("{nic_id}/ipConfigurations/{}", s.name);
    let mut requested: Vec<Option<Ipv4Addr>> = Vec::with_capacity(specs.len());
    for s in specs {
        let want = s
            .address
            .or_else(|| previous.and_then(|p| previous_address(p, &s.name, &s.subnet_id)));
        requested.push(want);
    }
    // Explicit addresses first, so a Dynamic allocation never grabs one of them.
    for (i, s) in specs.iter().enumerate() {
        let Some(ip) = requested[i] else { continue };
        let Some(sn) = st.subnet(&s.subnet_id) else {
            return Err(invalid_reference(&s.subnet_id, nic_id));
        };
        if !sn.prefix.contains(ip) {
            return Err(nrp_error(
                400,
                "PrivateIPAddressNotInSubnet",
                format!("Private static IP address {ip} does not belong to the range of subnet prefix {}.", sn.prefix),
            ));
        }
        if sn.prefix.is_reserved(ip) {
            // Verified code; message shape from public reports.
            return Err(nrp_error(
                400,
                "PrivateIPAddressInReservedRange",
                format!("Private static IP address {ip} falls within reserved IP range of subnet prefix {}.", sn.prefix),
            ));
        }
        if let Some(j) = (0..i).find(|&j| requested[j] == Some(ip)) {
            return Err(nrp_error(
                400,
                "PrivateIPAddressInUse",
                format!(
                    "IP configuration {} is using the same private IP address {ip} as IP configuration {}.",
                    ipc_id(s),
                    ipc_id(&specs[j])
                ),
            ));
        }
        if let Some(hold) = st.ip_holder(ip, &ids::key(&sn.vnet_id), nic_id) {
            return Err(if hold.in_flight {
                // Seen while the holder's update is still propagating (bosh-azure-cpi #121).
                nrp_error(
                    400,
                    "PrivateIPAddressInUse",
                    format!(
                        "IP configuration {} is using the same private IP address {ip} as IP configuration {}.",
                        ipc_id(s),
                        hold.ipconfig_id
                    ),
                )
            } else {
                nrp_error(
                    400,
                    &st.settings.settled_ip_conflict_code,
                    format!(
                        "IP configuration {} is using the private IP address {ip} which is already allocated to resource {}.",
                        ipc_id(s),
                        hold.ipconfig_id
                    ),
                )
            });
        }
    }
    let mut out = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        if let Some(ip) = requested[i] {
            out.push(ip);
            continue;
        }
        let Some(sn) = st.subnet(&s.subnet_id) else {
            return Err(invalid_reference(&s.subnet_id, nic_id));
        };
        let used = st.used_ips(&ids::key(&sn.vnet_id));
        let taken: Vec<Ipv4Addr> = requested
            .iter()
            .flatten()
            .copied()
            .chain(out.iter().copied())
            .collect();
        let free = sn
            .prefix
            .usable()
            .find(|ip| !used.contains(ip) && !taken.contains(ip));
        match free {
            Some(ip) => out.push(ip),
            None => {
                return Err(nrp_error(
                    400,
                    "SubnetIsFull",
                    format!(
                        "Subnet {} with address prefix {} does not have enough available IP addresses to satisfy the request for 1 IP addresses.",
                        sn.name, sn.prefix
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// Builds the goal-state document from the client's body: the body is kept as sent,
/// server-owned fields are (re)set, defaults the service fills in are added if missing.
fn build_doc(
    body: &Value,
    nic_id: &str,
    name: &str,
    previous: Option<&Value>,
    specs: &[IpConfigSpec],
    addresses: &[Ipv4Addr],
) -> Value {
    let mut doc = body.clone();
    doc["id"] = json!(nic_id);
    doc["name"] = json!(name);
    doc["type"] = json!("Microsoft.Network/networkInterfaces");
    if !doc.get("properties").is_some_and(Value::is_object) {
        doc["properties"] = json!({});
    }
    let prev_props = previous.and_then(|p| p.get("properties"));
    if let Some(props) = doc.get_mut("properties").and_then(Value::as_object_mut) {
        let carry =
            |props: &mut Map<String, Value>, key: &str, default: Option<Value>| match prev_props
                .and_then(|p| p.get(key))
                .cloned()
                .or(default)
            {
                Some(v) => {
                    props.insert(key.to_string(), v);
                }
                None => {
                    props.remove(key);
                }
            };
        // Read-only properties owned by the service.
        carry(
            props,
            "resourceGuid",
            Some(json!(uuid::Uuid::new_v4().to_string())),
        );
        carry(props, "macAddress", None);
        carry(props, "virtualMachine", None);
        carry(props, "primary", None);
        for (k, v) in [
            (
                "dnsSettings",
                json!({"dnsServers": [], "appliedDnsServers": []}),
            ),
            ("enableAcceleratedNetworking", json!(false)),
            ("enableIPForwarding", json!(false)),
            ("nicType", json!("Standard")),
            ("hostedWorkloads", json!([])),
            ("tapConfigurations", json!([])),
        ] {
            props.entry(k).or_insert(v);
        }
        if let Some(cfgs) = props
            .get_mut("ipConfigurations")
            .and_then(Value::as_array_mut)
        {
            for (c, (s, ip)) in cfgs.iter_mut().zip(specs.iter().zip(addresses)) {
                c["id"] = json!(format!("{nic_id}/ipConfigurations/{}", s.name));
                c["type"] = json!("Microsoft.Network/networkInterfaces/ipConfigurations");
                if let Some(p) = c.get_mut("properties").and_then(Value::as_object_mut) {
                    p.insert("privateIPAddress".into(), json!(ip.to_string()));
                    p.entry("privateIPAllocationMethod")
                        .or_insert(json!("Dynamic"));
                    p.entry("privateIPAddressVersion").or_insert(json!("IPv4"));
                    p.insert("primary".into(), json!(s.primary));
                }
            }
        }
    }
    doc
}

/// `PUT .../networkInterfaces/{nic}`.
pub(crate) fn put(st: &mut State, ctx: &Ctx, sub: &str, rg: &str, name: &str) -> Resp {
    let path_id = ids::nic_id(sub, rg, name);
    if let Err(r) = authorize(st, &ctx.principal, WRITE, &path_id) {
        return r;
    }
    let Some(rgi) = st.resource_group(sub, rg).cloned() else {
        return rg_not_found(rg);
    };
    let key = ids::key(&path_id);
    let existing: Option<Nic> = st.nics.get(&key).cloned();
    let sub_id = st
        .subscriptions
        .get(&sub.to_ascii_lowercase())
        .map(|s| s.id.clone())
        .unwrap_or_else(|| sub.to_string());
    let (nic_id, nic_name) = match &existing {
        Some(n) => (
            n.id.clone(),
            n.current()
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_string(),
        ),
        None => (ids::nic_id(&sub_id, &rgi.name, name), name.to_string()),
    };
    let current_etag = existing.as_ref().and_then(|n| {
        n.current()
            .get("etag")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if let Some(r) = check_preconditions(ctx.req, &nic_id, current_etag.as_deref()) {
        return r;
    }
    if let Some(op) = st.nic_busy(&key) {
        let guid = existing
            .as_ref()
            .and_then(|n| {
                n.current()
                    .pointer("/properties/resourceGuid")
                    .and_then(Value::as_str)
            })
            .unwrap_or_default()
            .to_string();
        return lro::conflict(st, &ctx.lro, op, &guid);
    }
    let body: Value = match crate::http::json_body(&ctx.req.body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if !body.is_object() {
        return invalid_format(
            "InvalidJson",
            "The request body must be a JSON object describing the network interface.",
        );
    }
    let Some(location) = body.get("location").and_then(Value::as_str) else {
        return arm_error(
            400,
            "LocationRequired",
            "The location property is required for this definition.",
        );
    };
    let norm = |l: &str| l.replace(' ', "").to_ascii_lowercase();
    if let Some(old) = existing
        .as_ref()
        .and_then(|n| n.current().get("location").and_then(Value::as_str))
    {
        if norm(old) != norm(location) {
            return arm_error(
                400,
                "InvalidResourceLocation",
                format!(
                    "The resource '{nic_name}' already exists in location '{old}' in resource group '{}'. A resource with the same name cannot be created in location '{location}'. Please select a new resource name.",
                    rgi.name
                ),
            );
        }
    }
    // ARM's linked access checks come before the Network RP sees the body.
    if let Err(r) = authorize_linked(st, &ctx.principal, WRITE, &nic_id, &linked_checks(&body)) {
        return r;
    }
    let specs = match parse_nic_ip_configs(&nic_id, &nic_name, &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let previous = existing.as_ref().map(|n| n.current().clone());
    if let Some(pname) = previous.as_ref().and_then(primary_name) {
        if !specs.iter().any(|s| s.name.eq_ignore_ascii_case(&pname)) {
            // Verified code and message (ansible-collections/azure #1281).
            return nrp_error(
                400,
                "IpConfigDeleteNotSupported",
                format!("IP Configuration {pname} cannot be deleted. Deletion and renaming of primary IP Configuration is not supported"),
            );
        }
    }

    // Referenced subnets and public IPs must exist (their join actions were checked above).
    let mut vnet: Option<String> = None;
    for s in &specs {
        let Some(sn) = st.subnet(&s.subnet_id) else {
            return invalid_reference(&s.subnet_id, &nic_id);
        };
        let vk = ids::key(&sn.vnet_id);
        match &vnet {
            Some(v) if *v != vk => {
                return nrp_error(
                    400,
                    "IpConfigurationsOnSameNicCannotUseDifferentVirtualNetworks",
                    format!("IP configurations on network interface {nic_id} reference subnets of different virtual networks; all must be in the same virtual network."),
                )
            }
            _ => vnet = Some(vk),
        }
    }
    // Private IPs before public ones: while a floating ipConfiguration (private + public
    // IP) is still being released by its old NIC, the service reports the private address.
    let addresses = match assign_addresses(st, &nic_id, previous.as_ref(), &specs) {
        Ok(a) => a,
        Err(r) => return r,
    };
    for s in &specs {
        let Some(pip) = &s.public_ip_id else { continue };
        let Some(p) = st.public_ips.get(&ids::key(pip)) else {
            return invalid_reference(pip, &nic_id);
        };
        if let Some(holder) = st.public_ip_holder(pip, &nic_id) {
            return nrp_error(
                400,
                "PublicIPAddressInUse",
                format!(
                    "IP configuration {nic_id}/ipConfigurations/{} is referencing public IP address {} that is already allocated to resource {holder}.",
                    s.name, p.id
                ),
            );
        }
    }

    let etag = new_etag();
    let doc = stamp_nic(
        build_doc(
            &body,
            &nic_id,
            &nic_name,
            previous.as_ref(),
            &specs,
            &addresses,
        ),
        &etag,
        "Updating",
    );
    let failure = match st.faults.take("PUT", &ctx.req.path, Phase::OperationStart) {
        Some(FaultKind::OperationFails { code, message }) => Some((code, message)),
        _ => None,
    };
    let op_id = lro::start(
        st,
        ctx.now,
        NewOp {
            subscription: sub_id,
            location: location.to_string(),
            name: "PutNetworkInterfaceOperation",
            delay: Duration::from_millis(st.settings.nic_propagation_ms),
            failure,
            target: OpTarget::Nics(vec![key.clone()]),
        },
    );
    let created = existing.is_none();
    let nic = st.nics.entry(key).or_insert_with(|| Nic {
        id: nic_id.clone(),
        applied: Value::Null,
        pending: None,
        op_id: None,
        creating: true,
    });
    nic.pending = Some(doc.clone());
    nic.op_id = Some(op_id.clone());
    nic.creating = created;
    lro::accepted(
        Resp::json(if created { 201 } else { 200 }, &doc),
        st,
        &ctx.lro,
        &op_id,
    )
}
