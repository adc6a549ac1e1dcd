//! Pointing the configured routes at this node's ENI.
//!
//! One `DescribeRouteTables` reads every table (by id: moto lacks the `route.*` filters); then the
//! tables are updated in parallel, the routes within one table one after another (EC2 serialises
//! changes to a table anyway, and a conflict there would only cost retries). An existing route is
//! replaced (`ReplaceRoute`), a missing one created (`CreateRoute`), and either falls back to the
//! other when the table changed since it was read.

use std::collections::BTreeMap;

use cloudha_provider_core::{Holder, ProviderError, RouteSpec};
use futures_util::future::join_all;

use crate::call::{Calls, Failed};
use crate::describe::{self, RouteTarget, Tables};
use crate::observe::route_holder;
use crate::takeover::Pair;

/// ReplaceRoute / CreateRoute calls for one route: replace, create, replace covers a route that
/// vanishes and reappears under us once; more means someone else is fighting over it.
const MAX_ROUTE_CALLS: u32 = 3;

/// The routes grouped by table, each group in configuration order.
pub(crate) fn by_table(routes: &[RouteSpec]) -> BTreeMap<&str, Vec<&RouteSpec>> {
    let mut tables: BTreeMap<&str, Vec<&RouteSpec>> = BTreeMap::new();
    for route in routes {
        tables.entry(route.table.as_str()).or_default().push(route);
    }
    tables
}

/// `rtb-.../label`, as routes are named in progress and `observe()`.
pub(crate) fn label(route: &RouteSpec) -> String {
    format!("{}/{}", route.table, route.name)
}

fn target<'t>(tables: &'t Tables, route: &RouteSpec) -> Option<&'t RouteTarget> {
    tables.get(&route.table)?.get(&route.prefix)
}

/// Point every route at `pair.own`. Returns whether anything changed.
pub(crate) async fn move_routes(
    calls: &Calls<'_>,
    pair: Pair<'_>,
    routes: &[RouteSpec],
) -> Result<bool, ProviderError> {
    if routes.is_empty() {
        return Ok(false);
    }
    let grouped = by_table(routes);
    let ids: Vec<&str> = grouped.keys().copied().collect();
    let before = describe::route_tables(calls, &ids).await?;
    let results = join_all(
        grouped
            .values()
            .map(|table_routes| update_table(calls, pair, table_routes, &before)),
    )
    .await;
    let mut changed = false;
    let mut first_error = None;
    for result in results {
        match result {
            Ok(c) => changed |= c,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if !changed {
        calls
            .progress
            .note(format!("routes already point at {}", pair.own));
        return Ok(false);
    }
    let after = describe::route_tables(calls, &ids).await?;
    let astray: Vec<String> = routes
        .iter()
        .filter(|r| route_holder(target(&after, r), pair.own, pair.peer) != Holder::Me)
        .map(label)
        .collect();
    if astray.is_empty() {
        Ok(true)
    } else {
        Err(ProviderError::Transient {
            operation: "DescribeRouteTables".to_string(),
            message: format!(
                "{} not pointing at {} after the update (another node changed them?)",
                astray.join(", "),
                pair.own
            ),
            retry_after: None,
        })
    }
}

async fn update_table(
    calls: &Calls<'_>,
    pair: Pair<'_>,
    routes: &[&RouteSpec],
    before: &Tables,
) -> Result<bool, ProviderError> {
    let mut changed = false;
    for route in routes {
        let current = target(before, route);
        if route_holder(current, pair.own, pair.peer) == Holder::Me {
            continue;
        }
        let from = current.map_or_else(|| "missing".to_string(), |t| t.describe.clone());
        let op = calls.progress.operation(
            format!("route {}", label(route)),
            format!(
                "point {} {} at {} (was {from})",
                route.table, route.prefix, pair.own
            ),
        );
        let result = point(calls, pair, route, current.is_some()).await;
        op.finish(&result);
        result?;
        tracing::info!(table = %route.table, prefix = %route.prefix, eni = pair.own, "route updated");
        changed = true;
    }
    Ok(changed)
}

/// Replace the route if it `exists`, else create it, switching when EC2 says the table differs.
async fn point(
    calls: &Calls<'_>,
    pair: Pair<'_>,
    route: &RouteSpec,
    exists: bool,
) -> Result<(), ProviderError> {
    let mut replace = exists;
    for _ in 0..MAX_ROUTE_CALLS {
        let result = if replace {
            calls
                .send("ReplaceRoute", || {
                    calls
                        .client
                        .replace_route()
                        .route_table_id(&route.table)
                        .destination_cidr_block(&route.prefix)
                        .network_interface_id(pair.own)
                        .send()
                })
                .await
                .map(|_| ())
        } else {
            calls
                .send("CreateRoute", || {
                    calls
                        .client
                        .create_route()
                        .route_table_id(&route.table)
                        .destination_cidr_block(&route.prefix)
                        .network_interface_id(pair.own)
                        .send()
                })
                .await
                .map(|_| ())
        };
        match result {
            Ok(()) => return Ok(()),
            Err(f) if replace && is_missing_route(&f) => {
                calls.progress.note(format!(
                    "{} has no route for {}; creating it",
                    route.table, route.prefix
                ));
                replace = false;
            }
            Err(f) if !replace && f.is("RouteAlreadyExists") => {
                calls.progress.note(format!(
                    "{} already has a route for {}; replacing it",
                    route.table, route.prefix
                ));
                replace = true;
            }
            Err(f) => return Err(f.into()),
        }
    }
    Err(ProviderError::Transient {
        operation: if replace {
            "ReplaceRoute"
        } else {
            "CreateRoute"
        }
        .to_string(),
        message: format!(
            "the route {} in {} kept appearing and disappearing",
            route.prefix, route.table
        ),
        retry_after: None,
    })
}

/// EC2's answer to ReplaceRoute for a destination the table has no route for.
fn is_missing_route(f: &Failed) -> bool {
    f.is("InvalidRoute.NotFound") || (f.is("InvalidParameterValue") && f.says("no route"))
}

#[cfg(test)]
mod tests {
    use cloudha_provider_core::NextHop;

    use super::*;

    fn spec(table: &str, name: &str) -> RouteSpec {
        RouteSpec {
            table: table.into(),
            name: name.into(),
            prefix: "0.0.0.0/0".into(),
            next_hop: NextHop::FloatingIp,
        }
    }

    #[test]
    fn routes_are_grouped_by_table_in_configuration_order() {
        let routes = [spec("rtb-2", "a"), spec("rtb-1", "b"), spec("rtb-2", "c")];
        let grouped = by_table(&routes);
        assert_eq!(grouped.len(), 2);
        let names: Vec<&str> = grouped["rtb-2"].iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(label(&routes[1]), "rtb-1/b");
    }
}
