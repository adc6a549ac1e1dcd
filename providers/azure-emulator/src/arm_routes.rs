//! `Microsoft.Network/routeTables` (GET) and `routeTables/{rt}/routes` (GET, list, PUT).
//!
//! Follows routeTable.json (stable/2024-05-01; same in 2025-05-01): route PUT answers 200
//! (update) or 201 (create) with the Route, long-running with `final-state-via:
//! azure-async-operation`. Writes within one table are serialised: while a route write
//! propagates, another write to the same table is refused like any busy resource.

use crate::arm::{check_preconditions, child_not_found, resource_not_found, rg_not_found, Ctx};
use crate::auth::authorize;
use crate::faults::{FaultKind, Phase};
use crate::http::{arm_error, Resp};
use crate::ids;
use crate::lro::{self, NewOp};
use crate::state::{new_etag, OpTarget, PendingRoute, State};
use crate::validate::validate_route;
use serde_json::{json, Value};
use std::time::Duration;

fn table_id(sub: &str, rg: &str, rt: &str) -> String {
    ids::resource_id(sub, rg, "Microsoft.Network/routeTables", rt)
}

/// `GET .../routeTables/{rt}` (routes included, as the service returns them).
pub(crate) fn get_table(st: &State, ctx: &Ctx, sub: &str, rg: &str, rt: &str) -> Resp {
    let id = table_id(sub, rg, rt);
    if let Err(r) = authorize(
        st,
        &ctx.principal,
        "Microsoft.Network/routeTables/read",
        &id,
    ) {
        return r;
    }
    if st.resource_group(sub, rg).is_none() {
        return rg_not_found(rg);
    }
    match st.route_tables.get(&ids::key(&id)) {
        Some(t) => Resp::json(200, &t.render()),
        None => resource_not_found("Microsoft.Network/routeTables", rt, rg),
    }
}

/// `GET .../routeTables/{rt}/routes`.
pub(crate) fn list_routes(st: &State, ctx: &Ctx, sub: &str, rg: &str, rt: &str) -> Resp {
    let id = table_id(sub, rg, rt);
    if let Err(r) = authorize(
        st,
        &ctx.principal,
        "Microsoft.Network/routeTables/routes/read",
        &format!("{id}/routes"),
    ) {
        return r;
    }
    if st.resource_group(sub, rg).is_none() {
        return rg_not_found(rg);
    }
    match st.route_tables.get(&ids::key(&id)) {
        Some(t) => {
            let doc = t.render();
            let routes = doc
                .pointer("/properties/routes")
                .cloned()
                .unwrap_or(json!([]));
            Resp::json(200, &json!({ "value": routes }))
        }
        None => resource_not_found("Microsoft.Network/routeTables", rt, rg),
    }
}

/// `GET .../routeTables/{rt}/routes/{route}`.
pub(crate) fn get_route(st: &State, ctx: &Ctx, sub: &str, rg: &str, rt: &str, name: &str) -> Resp {
    let tid = table_id(sub, rg, rt);
    let rid = format!("{tid}/routes/{name}");
    if let Err(r) = authorize(
        st,
        &ctx.principal,
        "Microsoft.Network/routeTables/routes/read",
        &rid,
    ) {
        return r;
    }
    if st.resource_group(sub, rg).is_none() {
        return rg_not_found(rg);
    }
    let Some(t) = st.route_tables.get(&ids::key(&tid)) else {
        return resource_not_found("Microsoft.Network/routeTables", rt, rg);
    };
    match t.route(name) {
        Some(r) => {
            let mut r = r.clone();
            r["etag"] = json!(t.etag);
            Resp::json(200, &r)
        }
        None => child_not_found(&rid),
    }
}

/// `PUT .../routeTables/{rt}/routes/{route}`.
pub(crate) fn put_route(
    st: &mut State,
    ctx: &Ctx,
    sub: &str,
    rg: &str,
    rt: &str,
    name: &str,
) -> Resp {
    let tid = table_id(sub, rg, rt);
    let path_rid = format!("{tid}/routes/{name}");
    if let Err(r) = authorize(
        st,
        &ctx.principal,
        "Microsoft.Network/routeTables/routes/write",
        &path_rid,
    ) {
        return r;
    }
    if st.resource_group(sub, rg).is_none() {
        return rg_not_found(rg);
    }
    let tkey = ids::key(&tid);
    let Some(table) = st.route_tables.get(&tkey).cloned() else {
        return arm_error(
            404,
            "ParentResourceNotFound",
            format!("Failed to perform 'write' on resource(s) of type 'routeTables/routes', because the parent resource '{tid}' could not be found."),
        );
    };
    let existing = table.route(name).cloned();
    let route_name = existing
        .as_ref()
        .and_then(|r| r.get("name").and_then(Value::as_str))
        .unwrap_or(name)
        .to_string();
    let rid = format!("{}/routes/{route_name}", table.id);
    let current_etag = existing.as_ref().map(|_| table.etag.clone());
    if let Some(r) = check_preconditions(ctx.req, &rid, current_etag.as_deref()) {
        return r;
    }
    if let Some(p) = &table.pending {
        if let Some(op) = st.operations.get(&p.op_id) {
            return lro::conflict(st, &ctx.lro, op, &table.resource_guid);
        }
    }
    let body: Value = match crate::http::json_body(&ctx.req.body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if let Err(r) = validate_route(&rid, &route_name, &body) {
        return r;
    }
    let etag = new_etag();
    let mut doc = body.clone();
    doc["name"] = json!(route_name);
    doc["id"] = json!(rid);
    doc["type"] = json!("Microsoft.Network/routeTables/routes");
    if let Some(p) = doc.get_mut("properties").and_then(Value::as_object_mut) {
        p.insert("provisioningState".into(), json!("Updating"));
        p.entry("hasBgpOverride").or_insert(json!(false));
    }
    let failure = match st.faults.take("PUT", &ctx.req.path, Phase::OperationStart) {
        Some(FaultKind::OperationFails { code, message }) => Some((code, message)),
        _ => None,
    };
    let sub_id = table.id.split('/').nth(2).unwrap_or(sub).to_string();
    let op_id = lro::start(
        st,
        ctx.now,
        NewOp {
            subscription: sub_id,
            location: table.location.clone(),
            name: "PutRouteOperation",
            delay: Duration::from_millis(st.settings.route_propagation_ms),
            failure,
            target: OpTarget::Route(tkey.clone()),
        },
    );
    let created = existing.is_none();
    if let Some(t) = st.route_tables.get_mut(&tkey) {
        t.etag = etag.clone();
        t.pending = Some(PendingRoute {
            doc: doc.clone(),
            op_id: op_id.clone(),
            creating: created,
        });
    }
    doc["etag"] = json!(etag);
    lro::accepted(
        Resp::json(if created { 201 } else { 200 }, &doc),
        st,
        &ctx.lro,
        &op_id,
    )
}
