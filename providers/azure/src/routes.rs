//! Pointing route next hops at this node: one PUT per route (never the whole table, which would
//! delete the routes it does not list), tables in parallel, routes of one table one after the
//! other (ARM serialises writes to a table and answers 409/429 to a second one).
//!
//! Reads are counted too: ARM's read bucket (250, 25 per second) is the tighter one once every
//! route costs a GET, an operation poll and a GET to verify (1516 reads for 500 routes, 53 s).
//! So one GET of each table stands in for the reads of its routes before their writes, and
//! one more GET verifies every route of the table after them: about one read per route (the
//! poll) plus two per table. A route the verifying read does not show in place goes through the
//! full read-write-verify loop again.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use cloudha_provider_core::RouteSpec;
use serde_json::{json, Map, Value};

use crate::arm::{ArmClient, ArmError, CallLog, ErrorClass, NETWORK_API_VERSION};
use crate::budget::Priority;
use crate::ensure::{ensure, Target};
use crate::ids::short;

/// The ARM id of a route.
pub fn route_id(route: &RouteSpec) -> String {
    format!(
        "{}/routes/{}",
        route.table.trim_end_matches('/'),
        route.name
    )
}

/// Our name for a route table read, in call counts.
pub const TABLE_GET: &str = "route_table.get";

/// The routes of a route table document, by lower-case name.
pub fn routes_of_table(doc: &Value) -> BTreeMap<String, Value> {
    doc.pointer("/properties/routes")
        .and_then(Value::as_array)
        .map(|routes| {
            routes
                .iter()
                .filter_map(|r| Some((r.get("name")?.as_str()?.to_ascii_lowercase(), r.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// Read a route table's routes by lower-case name; `None` when the table does not exist.
pub async fn read_table(
    arm: &ArmClient,
    log: &CallLog,
    table_id: &str,
) -> Result<Option<BTreeMap<String, Value>>, ArmError> {
    match arm.get(log, TABLE_GET, table_id, NETWORK_API_VERSION).await {
        Ok(r) => Ok(Some(routes_of_table(&r.body))),
        Err(e) if e.class == ErrorClass::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a route document already sends `prefix` to `next_hop` as a virtual appliance.
pub fn points_at(doc: &Value, prefix: &str, next_hop: Ipv4Addr) -> bool {
    let p = |k: &str| {
        doc.pointer(&format!("/properties/{k}"))
            .and_then(Value::as_str)
    };
    p("addressPrefix") == Some(prefix)
        && p("nextHopType") == Some("VirtualAppliance")
        && p("nextHopIpAddress") == Some(next_hop.to_string().as_str())
}

/// The next hop a route document names, if it is a virtual appliance.
pub fn next_hop_of(doc: &Value) -> Option<Ipv4Addr> {
    if doc
        .pointer("/properties/nextHopType")
        .and_then(Value::as_str)
        != Some("VirtualAppliance")
    {
        return None;
    }
    doc.pointer("/properties/nextHopIpAddress")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// The document to PUT so the route sends `prefix` to `next_hop`: the current one with only the
/// three fields set (other properties kept), or a new route.
pub fn desired_route(current: Option<&Value>, prefix: &str, next_hop: Ipv4Addr) -> Option<Value> {
    match current {
        Some(doc) if points_at(doc, prefix, next_hop) => None,
        Some(doc) => {
            let mut next = doc.clone();
            let properties = next
                .as_object_mut()
                .map(|o| o.entry("properties").or_insert_with(|| json!({})));
            if let Some(Value::Object(p)) = properties {
                p.insert("addressPrefix".into(), json!(prefix));
                p.insert("nextHopType".into(), json!("VirtualAppliance"));
                p.insert("nextHopIpAddress".into(), json!(next_hop.to_string()));
            }
            Some(next)
        }
        None => {
            let mut p = Map::new();
            p.insert("addressPrefix".into(), json!(prefix));
            p.insert("nextHopType".into(), json!("VirtualAppliance"));
            p.insert("nextHopIpAddress".into(), json!(next_hop.to_string()));
            Some(json!({ "properties": p }))
        }
    }
}

/// Point every route at its next hop; `next_hop` resolves a spec to an address.
pub async fn update_all(
    arm: &ArmClient,
    log: &CallLog,
    routes: &[RouteSpec],
    next_hop: impl Fn(&RouteSpec) -> Ipv4Addr,
    deadline: Instant,
) -> Result<bool, ArmError> {
    let mut by_table: BTreeMap<String, Vec<(&RouteSpec, Ipv4Addr)>> = BTreeMap::new();
    for r in routes {
        by_table
            .entry(r.table.to_ascii_lowercase())
            .or_default()
            .push((r, next_hop(r)));
    }
    let tables = by_table
        .into_values()
        .map(|list| update_table(arm, log, list, deadline));
    // Every table runs to its end even when another fails: a route left on the dead node costs
    // traffic, so each one that can be fixed is.
    let results = futures_join_all(tables).await;
    let mut changed = false;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(c) => changed |= c,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(changed),
    }
}

/// The routes of one table, one after the other, read and verified with one GET of the table
/// each (see the module's note). A table that cannot be read up front (not found, or the read
/// failed) has each route go through the full loop, which retries and reports for itself.
async fn update_table(
    arm: &ArmClient,
    log: &CallLog,
    list: Vec<(&RouteSpec, Ipv4Addr)>,
    deadline: Instant,
) -> Result<bool, ArmError> {
    let Some((first, _)) = list.first() else {
        return Ok(false);
    };
    let table = first.table.trim_end_matches('/');
    let before = read_table(arm, log, table).await.ok().flatten();
    let mut changed = false;
    let mut unverified = Vec::new();
    for (done, &(route, hop)) in list.iter().enumerate() {
        let first_read = before
            .as_ref()
            .map(|routes| routes.get(&route.name.to_ascii_lowercase()).cloned());
        let trusted = first_read.is_some();
        // The table's writes still to go, this one included: the longest chain gets the
        // bucket's next token (see `budget::Priority`).
        let to_go = Priority::try_from(list.len() - done).unwrap_or(Priority::MAX);
        let wrote = update_one(arm, log, route, hop, deadline, first_read, to_go).await?;
        if wrote && trusted {
            unverified.push((route, hop));
        }
        changed |= wrote;
    }
    if unverified.is_empty() {
        return Ok(changed);
    }
    let after = read_table(arm, log, table).await.ok().flatten();
    for (route, hop) in unverified {
        let in_place = after
            .as_ref()
            .and_then(|routes| routes.get(&route.name.to_ascii_lowercase()))
            .is_some_and(|doc| points_at(doc, &route.prefix, hop));
        if !in_place {
            log.progress().note(format!(
                "route {}/{}: not in place when the table was read back; converging it again",
                short(&route.table),
                route.name
            ));
            update_one(arm, log, route, hop, deadline, None, 1).await?;
        }
    }
    Ok(changed)
}

/// Converge one route; with `first_read` (the route as its table's GET showed it) the first
/// GET is skipped and the caller verifies the write.
async fn update_one(
    arm: &ArmClient,
    log: &CallLog,
    route: &RouteSpec,
    hop: Ipv4Addr,
    deadline: Instant,
    first_read: Option<Option<Value>>,
    write_priority: Priority,
) -> Result<bool, ArmError> {
    let id = route_id(route);
    let label = format!("route {}/{}", short(&route.table), route.name);
    let target = Target {
        id: &id,
        api_version: NETWORK_API_VERSION,
        kind: "route",
        operation: format!("route.put {}/{}", short(&route.table), route.name),
        description: format!("{label}: {} via {hop}", route.prefix),
        label,
        caller_verifies: first_read.is_some(),
        first_read,
        write_priority,
    };
    ensure(
        arm,
        log,
        &target,
        deadline,
        |current| Ok(desired_route(current, &route.prefix, hop)),
        None,
        None,
    )
    .await
}

/// Await every future, in parallel, keeping each result (tokio has no join_all of its own).
async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<T>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, fut) in results.iter_mut().zip(pinned.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_route_already_in_place_needs_no_write() {
        let doc = json!({"properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "VirtualAppliance",
            "nextHopIpAddress": "10.0.1.5", "hasBgpOverride": false}});
        assert_eq!(desired_route(Some(&doc), "0.0.0.0/0", ip("10.0.1.5")), None);
        let next = desired_route(Some(&doc), "0.0.0.0/0", ip("10.0.1.4")).expect("change");
        assert_eq!(next["properties"]["nextHopIpAddress"], "10.0.1.4");
        assert_eq!(next["properties"]["hasBgpOverride"], false);
        assert_eq!(next_hop_of(&next), Some(ip("10.0.1.4")));
    }

    #[test]
    fn a_missing_route_is_created_as_a_virtual_appliance_route() {
        let doc = desired_route(None, "10.2.0.0/16", ip("10.0.1.4")).expect("create");
        assert_eq!(doc["properties"]["nextHopType"], "VirtualAppliance");
        assert_eq!(doc["properties"]["addressPrefix"], "10.2.0.0/16");
    }

    #[tokio::test]
    async fn join_all_keeps_every_result_in_order() {
        let out = futures_join_all((0..5).map(|i| async move { i * 2 })).await;
        assert_eq!(out, vec![0, 2, 4, 6, 8]);
    }
}
