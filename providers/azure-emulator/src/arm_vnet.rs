//! `Microsoft.Network/virtualNetworks` (GET, subnets GET, POST moveIpConfigurations) and
//! `publicIPAddresses` GET.
//!
//! moveIpConfigurations is new in api-version 2025-09-01
//! (specification/network/resource-manager/Microsoft.Network/Network/stable/2025-09-01,
//! example `VirtualNetworkMoveIpConfigurations.json`): body
//! `{"moveIpConfigurationItems":[{"sourceIpConfiguration":{"id"},"targetIpConfiguration":{"id"}}]}`,
//! empty response body, polled through `Azure-AsyncOperation`. It moves each source
//! ipConfiguration (with its private and public IP) onto the target NIC under the target
//! name, as one operation, so there is no window in which the address is unassigned.

use crate::arm::{child_not_found, resource_not_found, rg_not_found, Ctx};
use crate::auth::{authorize, authorize_linked};
use crate::config::MoveIpMode;
use crate::faults::{FaultKind, Phase};
use crate::http::{invalid_format, nrp_error, Resp};
use crate::ids::{self, ArmId};
use crate::lro::{self, NewOp};
use crate::scenario::MOVE_IP_CONFIGURATIONS_ACTION;
use crate::state::{ipconfigs, new_etag, stamp_nic, OpTarget, State, Vnet};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

fn render_vnet(st: &State, v: &Vnet) -> Value {
    let subnets: Vec<Value> = v
        .subnets
        .iter()
        .map(|s| {
            let sk = ids::key(&s.id);
            let users: Vec<Value> = st
                .nics
                .values()
                .flat_map(|n| ipconfigs(n.current()).to_vec())
                .filter(|c| {
                    c.pointer("/properties/subnet/id")
                        .and_then(Value::as_str)
                        .is_some_and(|id| ids::key(id) == sk)
                })
                .filter_map(|c| c.get("id").cloned())
                .map(|id| json!({ "id": id }))
                .collect();
            let mut props = json!({
                "addressPrefix": s.prefix.to_string(),
                "provisioningState": "Succeeded",
                "ipConfigurations": users,
                "delegations": [],
                "privateEndpointNetworkPolicies": "Disabled",
                "privateLinkServiceNetworkPolicies": "Enabled",
            });
            if let Some(rt) = &s.route_table_id {
                props["routeTable"] = json!({ "id": rt });
            }
            json!({
                "name": s.name, "id": s.id, "etag": v.etag,
                "type": "Microsoft.Network/virtualNetworks/subnets", "properties": props,
            })
        })
        .collect();
    json!({
        "name": v.name, "id": v.id, "etag": v.etag,
        "type": "Microsoft.Network/virtualNetworks", "location": v.location,
        "properties": {
            "provisioningState": "Succeeded",
            "resourceGuid": v.resource_guid,
            "addressSpace": { "addressPrefixes": v.address_prefixes },
            "subnets": subnets,
            "virtualNetworkPeerings": [],
            "enableDdosProtection": false,
        }
    })
}

fn vnet_id(sub: &str, rg: &str, name: &str) -> String {
    ids::resource_id(sub, rg, "Microsoft.Network/virtualNetworks", name)
}

/// `GET .../virtualNetworks/{vnet}`.
pub(crate) fn get_vnet(st: &State, ctx: &Ctx, sub: &str, rg: &str, name: &str) -> Resp {
    let id = vnet_id(sub, rg, name);
    if let Err(r) = authorize(
        st,
        &ctx.principal,
        "Microsoft.Network/virtualNetworks/read",
        &id,
    ) {
        return r;
    }
    if st.resource_group(sub, rg).is_none() {
        return rg_not_found(rg);
    }
    match st.vnets.get(&ids::key(&id)) {
        Some(v) => Resp::json(200, &render_vnet(st, v)),
        None => resource_not_found("Microsoft.Network/virtualNetworks", name, rg),
    }
}

/// `GET .../virtualNetworks/{vnet}/subnets/{subnet}`.
pub(crate) fn get_subnet(
    st: &State,
    ctx: &Ctx,
    sub: &str,
    rg: &str,
    vnet: &str,
    name: &str,
) -> Resp {
    let vid = vnet_id(sub, rg, vnet);
    let sid = format!("{vid}/subnets/{name}");
    if let Err(r) = authorize(
        st,
        &ctx.principal,
        "Microsoft.Network/virtualNetworks/subnets/read",
        &sid,
    ) {
        return r;
    }
    if st.resource_group(sub, rg).is_none() {
        return rg_not_found(rg);
    }
    let Some(v) = st.vnets.get(&ids::key(&vid)) else {
        return resource_not_found("Microsoft.Network/virtualNetworks", vnet, rg);
    };
    let doc = render_vnet(st, v);
    doc.pointer("/properties/subnets")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter().find(|s| {
                s.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
        })
        .map(|s| Resp::json(200, s))
        .unwrap_or_else(|| child_not_found(&sid))
}

/// `GET .../publicIPAddresses/{pip}` (with `ipConfiguration` pointing at its current user).
pub(crate) fn get_public_ip(st: &State, ctx: &Ctx, sub: &str, rg: &str, name: &str) -> Resp {
    let id = ids::resource_id(sub, rg, "Microsoft.Network/publicIPAddresses", name);
    if let Err(r) = authorize(
        st,
        &ctx.principal,
        "Microsoft.Network/publicIPAddresses/read",
        &id,
    ) {
        return r;
    }
    if st.resource_group(sub, rg).is_none() {
        return rg_not_found(rg);
    }
    let Some(p) = st.public_ips.get(&ids::key(&id)) else {
        return resource_not_found("Microsoft.Network/publicIPAddresses", name, rg);
    };
    let mut doc = p.doc.clone();
    if let Some(holder) = st.public_ip_holder(&p.id, "") {
        doc["properties"]["ipConfiguration"] = json!({ "id": holder });
    }
    Resp::json(200, &doc)
}

/// Parses a `.../networkInterfaces/{nic}/ipConfigurations/{name}` reference.
fn parse_ipconfig_ref(id: &str) -> Option<(String, String)> {
    let a = ArmId::parse(id)?;
    if a.types.len() != 2
        || !a.provider.eq_ignore_ascii_case("Microsoft.Network")
        || !a.types[0].0.eq_ignore_ascii_case("networkInterfaces")
        || !a.types[1].0.eq_ignore_ascii_case("ipConfigurations")
    {
        return None;
    }
    Some((ids::key(&a.top_level_id()), a.types[1].1.clone()))
}

fn find_ipconfig(doc: &Value, name: &str) -> Option<usize> {
    ipconfigs(doc).iter().position(|c| {
        c.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    })
}

/// `POST .../virtualNetworks/{vnet}/moveIpConfigurations`.
pub(crate) fn move_ip_configurations(
    st: &mut State,
    ctx: &Ctx,
    sub: &str,
    rg: &str,
    vnet: &str,
) -> Resp {
    let vid = vnet_id(sub, rg, vnet);
    // ARM authorizes a POST to `{resource}/{action}` as `{namespace}/{type}/{action}/action`
    // on the resource, before the resource provider sees it (learn.microsoft.com, "Azure
    // resource provider operations": every POST action is listed that way, e.g.
    // `Microsoft.Network/virtualNetworks/checkIpAddressAvailability/read`,
    // `.../peer/action`). The move's own entry is not in the published list yet; this is the
    // name that convention gives it, checked at the virtual network (403
    // `AuthorizationFailed` without it), ahead of the feature gate and of the NIC-level
    // checks below.
    if let Err(r) = authorize(st, &ctx.principal, MOVE_IP_CONFIGURATIONS_ACTION, &vid) {
        return r;
    }
    if st.settings.move_ip_configurations == MoveIpMode::FeatureNotRegistered {
        // Same shape as other gated Network features (e.g. AllowMultipleIpConfigurationsPerNic).
        let sub_id = st
            .subscriptions
            .get(&sub.to_ascii_lowercase())
            .map(|s| s.id.clone())
            .unwrap_or_else(|| sub.to_string());
        return nrp_error(
            400,
            "SubscriptionNotRegisteredForFeature",
            format!("Subscription {sub_id} is not registered for feature Microsoft.Network/AllowMoveIpConfigurations required to carry out the requested operation."),
        );
    }
    if st.resource_group(sub, rg).is_none() {
        return rg_not_found(rg);
    }
    let Some(v) = st.vnets.get(&ids::key(&vid)).cloned() else {
        return resource_not_found("Microsoft.Network/virtualNetworks", vnet, rg);
    };
    let body: Value = match crate::http::json_body(&ctx.req.body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let items = match body
        .get("moveIpConfigurationItems")
        .and_then(Value::as_array)
    {
        Some(a) if !a.is_empty() => a.clone(),
        _ => {
            return invalid_format(
                "MissingJsonProperty",
                "Required property 'moveIpConfigurationItems' is missing or empty.",
            )
        }
    };
    let vnet_key = ids::key(&v.id);
    // Working copies of every NIC touched, starting from what GET shows now.
    let mut work: BTreeMap<String, Value> = BTreeMap::new();
    let mut linked: Vec<(String, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let src = item
            .pointer("/sourceIpConfiguration/id")
            .and_then(Value::as_str);
        let dst = item
            .pointer("/targetIpConfiguration/id")
            .and_then(Value::as_str);
        let (Some(src), Some(dst)) = (src, dst) else {
            return invalid_format(
                "MissingJsonReferenceId",
                format!("Value for reference id is missing. Path moveIpConfigurationItems[{i}]."),
            );
        };
        let (Some((src_nic, src_name)), Some((dst_nic, dst_name))) =
            (parse_ipconfig_ref(src), parse_ipconfig_ref(dst))
        else {
            return invalid_format(
                "InvalidJsonReferenceFormat",
                format!("Reference ids in moveIpConfigurationItems[{i}] must be network interface ipConfiguration ids."),
            );
        };
        for (nk, rid) in [(&src_nic, src), (&dst_nic, dst)] {
            match st.nics.get(nk) {
                Some(n) => {
                    work.entry(nk.clone()).or_insert_with(|| n.current().clone());
                }
                None => {
                    return nrp_error(
                        400,
                        "InvalidResourceReference",
                        format!("Resource {rid} referenced by resource {vid} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."),
                    )
                }
            }
        }
        let Some(src_doc) = work.get(&src_nic) else {
            continue;
        };
        let Some(idx) = find_ipconfig(src_doc, &src_name) else {
            return nrp_error(
                400,
                "InvalidResourceReference",
                format!("Resource {src} referenced by resource {vid} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."),
            );
        };
        let mut moved = ipconfigs(src_doc)[idx].clone();
        if moved
            .pointer("/properties/primary")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return nrp_error(
                400,
                "IpConfigDeleteNotSupported",
                format!("IP Configuration {src_name} cannot be deleted. Deletion and renaming of primary IP Configuration is not supported"),
            );
        }
        let in_vnet = moved
            .pointer("/properties/subnet/id")
            .and_then(Value::as_str)
            .and_then(|s| st.subnet(s))
            .filter(|s| ids::key(&s.vnet_id) == vnet_key)
            .map(|s| s.id.clone());
        let Some(subnet_id) = in_vnet else {
            return nrp_error(
                400,
                "IpConfigurationNotInVirtualNetwork",
                format!("IP configuration {src} does not belong to virtual network {vid}."),
            );
        };
        if let Some(dst_doc) = work.get(&dst_nic) {
            if find_ipconfig(dst_doc, &dst_name).is_some() {
                return invalid_format(
                    "DuplicateResourceName",
                    format!(
                        "Resource {} has two child resources with the same name ({dst_name}).",
                        st.nics.get(&dst_nic).map(|n| n.id.as_str()).unwrap_or(dst)
                    ),
                );
            }
        }
        if let Some(cfgs) = work
            .get_mut(&src_nic)
            .and_then(|d| d.pointer_mut("/properties/ipConfigurations"))
            .and_then(Value::as_array_mut)
        {
            cfgs.remove(idx);
        }
        let dst_nic_id = st
            .nics
            .get(&dst_nic)
            .map(|n| n.id.clone())
            .unwrap_or_default();
        moved["name"] = json!(dst_name);
        moved["id"] = json!(format!("{dst_nic_id}/ipConfigurations/{dst_name}"));
        moved["properties"]["primary"] = json!(false);
        if let Some(cfgs) = work
            .get_mut(&dst_nic)
            .and_then(|d| d.pointer_mut("/properties/ipConfigurations"))
            .and_then(Value::as_array_mut)
        {
            cfgs.push(moved.clone());
        }
        linked.push((
            "Microsoft.Network/virtualNetworks/subnets/join/action".into(),
            subnet_id,
        ));
        if let Some(pip) = moved
            .pointer("/properties/publicIPAddress/id")
            .and_then(Value::as_str)
        {
            linked.push((
                "Microsoft.Network/publicIPAddresses/join/action".into(),
                pip.to_string(),
            ));
        }
    }
    // RBAC: writing both NICs, joining the subnet (and public IP) for the moved configs.
    for nk in work.keys() {
        let nic_id = st.nics.get(nk).map(|n| n.id.clone()).unwrap_or_default();
        if let Err(r) = authorize(
            st,
            &ctx.principal,
            "Microsoft.Network/networkInterfaces/write",
            &nic_id,
        ) {
            return r;
        }
        if let Err(r) = authorize_linked(
            st,
            &ctx.principal,
            "Microsoft.Network/networkInterfaces/write",
            &nic_id,
            &linked,
        ) {
            return r;
        }
    }
    for nk in work.keys() {
        if let Some(op) = st.nic_busy(nk) {
            let guid = st
                .nics
                .get(nk)
                .and_then(|n| {
                    n.current()
                        .pointer("/properties/resourceGuid")
                        .and_then(Value::as_str)
                })
                .unwrap_or_default()
                .to_string();
            return lro::conflict(st, &ctx.lro, op, &guid);
        }
    }
    let failure = match st.faults.take("POST", &ctx.req.path, Phase::OperationStart) {
        Some(FaultKind::OperationFails { code, message }) => Some((code, message)),
        _ => None,
    };
    let sub_id = v.id.split('/').nth(2).unwrap_or(sub).to_string();
    let op_id = lro::start(
        st,
        ctx.now,
        NewOp {
            subscription: sub_id,
            location: v.location.clone(),
            name: "MoveIpConfigurationsOperation",
            delay: Duration::from_millis(st.settings.move_propagation_ms),
            failure,
            target: OpTarget::Nics(work.keys().cloned().collect()),
        },
    );
    for (nk, doc) in work {
        let etag = new_etag();
        if let Some(nic) = st.nics.get_mut(&nk) {
            nic.pending = Some(stamp_nic(doc, &etag, "Updating"));
            nic.op_id = Some(op_id.clone());
        }
    }
    let Some(op) = st.operations.get(&op_id) else {
        return Resp::empty(202);
    };
    Resp::empty(202)
        .with_header("azure-asyncoperation", ctx.lro.async_url(op))
        .with_header("location", ctx.lro.result_url(op))
        .with_header("retry-after", lro::retry_after(st, op).to_string())
}
