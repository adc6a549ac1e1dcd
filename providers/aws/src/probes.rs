//! The self-test's write probes, built so that they change nothing even where an endpoint ignores
//! `DryRun` (plain moto does on `CreateRoute`/`ReplaceRoute`; so may a proxy or another
//! EC2-compatible endpoint), and the read-back that proves it.
//!
//! - `ReplaceRoute` names the route's *current* target: applied, it rewrites the route as it is.
//! - `CreateRoute` names an existing route's destination and current target: applied, EC2 answers
//!   `RouteAlreadyExists`.
//! - `AssociateAddress` names this node's ENI with `AllowReassociation=false`, sent only while the
//!   Elastic IP is associated elsewhere: applied, EC2 answers `Resource.AlreadyAssociated`.
//!
//! Where no such harmless form exists (a missing route, a route whose target kind cannot be named
//! again, an unassociated Elastic IP) the probe is not sent and the action is proved by policy
//! simulation instead. Before and after the probes the self-test reads the ENIs' addresses, the
//! route targets and the Elastic IP associations; any difference fails loudly, naming what changed,
//! and routes and associations are put back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::Route;
use cloudha_provider_core::Check;

use crate::config::ElasticIp;
use crate::{short_error, AwsProvider, CHECK_DEADLINE};

/// What a route points at, as far as a probe can name it again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteTarget {
    NetworkInterface(String),
    Gateway(String),
    Instance(String),
    NatGateway(String),
    TransitGateway(String),
    VpcPeering(String),
    /// A target kind the probes do not name (local, carrier, core network, ...): described only.
    Other(String),
}

impl RouteTarget {
    /// The target of `route` as EC2 describes it.
    pub fn of(route: &Route) -> RouteTarget {
        let pick = [
            (
                route.network_interface_id(),
                RouteTarget::NetworkInterface as fn(String) -> _,
            ),
            (route.nat_gateway_id(), RouteTarget::NatGateway),
            (route.transit_gateway_id(), RouteTarget::TransitGateway),
            (route.vpc_peering_connection_id(), RouteTarget::VpcPeering),
            (route.instance_id(), RouteTarget::Instance),
            (route.gateway_id(), RouteTarget::Gateway),
        ];
        pick.into_iter()
            .find_map(|(id, make)| id.map(|id| make(id.to_string())))
            .unwrap_or_else(|| RouteTarget::Other(format!("{:?}", route.state())))
    }

    /// The ENI, when the target is one.
    pub fn eni(&self) -> Option<&str> {
        match self {
            RouteTarget::NetworkInterface(id) => Some(id),
            _ => None,
        }
    }

    /// Whether a probe can name this target again.
    fn nameable(&self) -> bool {
        !matches!(self, RouteTarget::Other(_))
    }
}

impl std::fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteTarget::NetworkInterface(id)
            | RouteTarget::Gateway(id)
            | RouteTarget::Instance(id)
            | RouteTarget::NatGateway(id)
            | RouteTarget::TransitGateway(id)
            | RouteTarget::VpcPeering(id) => f.write_str(id),
            RouteTarget::Other(state) => write!(f, "a target of another kind ({state})"),
        }
    }
}

/// Sets the builder's target to `target` (both route builders have the same setters).
macro_rules! with_target {
    ($builder:expr, $target:expr) => {
        match $target {
            RouteTarget::NetworkInterface(id) => $builder.network_interface_id(id),
            RouteTarget::Gateway(id) => $builder.gateway_id(id),
            RouteTarget::Instance(id) => $builder.instance_id(id),
            RouteTarget::NatGateway(id) => $builder.nat_gateway_id(id),
            RouteTarget::TransitGateway(id) => $builder.transit_gateway_id(id),
            RouteTarget::VpcPeering(id) => $builder.vpc_peering_connection_id(id),
            RouteTarget::Other(_) => $builder,
        }
    };
}

/// An Elastic IP's association: the ENI and private address it maps to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Association {
    pub eni: String,
    pub private_ip: String,
}

/// Everything the probes could change, as read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Private addresses of the pair's ENIs.
    pub addresses: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// `(table, destination)` to target, for every route of the tables the config names.
    pub routes: BTreeMap<(String, String), RouteTarget>,
    /// Allocation id to association (None: not associated).
    pub associations: BTreeMap<String, Option<Association>>,
}

impl Snapshot {
    /// Read the pair's ENIs, the configured route tables and Elastic IPs.
    pub async fn read(
        provider: &AwsProvider,
        tables: &BTreeSet<String>,
        eips: &[ElasticIp],
    ) -> Result<Snapshot, String> {
        let c = &provider.client;
        let id = &provider.identity;
        let mut snap = Snapshot::default();
        let enis = tokio::time::timeout(
            CHECK_DEADLINE,
            c.describe_network_interfaces()
                .network_interface_ids(&id.own_eni)
                .network_interface_ids(&id.peer_eni)
                .send(),
        )
        .await
        .map_err(|_| "reading the ENIs: no answer within 20 s".to_string())?
        .map_err(|e| format!("reading the ENIs: {}", short_error(&e)))?;
        for eni in enis.network_interfaces() {
            let addresses = eni
                .private_ip_addresses()
                .iter()
                .filter_map(|p| p.private_ip_address()?.parse().ok())
                .collect();
            if let Some(eni_id) = eni.network_interface_id() {
                snap.addresses.insert(eni_id.to_string(), addresses);
            }
        }
        for table in tables {
            let answer = tokio::time::timeout(
                CHECK_DEADLINE,
                c.describe_route_tables().route_table_ids(table).send(),
            )
            .await
            .map_err(|_| format!("reading {table}: no answer within 20 s"))?
            .map_err(|e| format!("reading {table}: {}", short_error(&e)))?;
            for t in answer.route_tables() {
                for r in t.routes() {
                    if let Some(dest) = r.destination_cidr_block() {
                        snap.routes
                            .insert((table.clone(), dest.to_string()), RouteTarget::of(r));
                    }
                }
            }
        }
        for eip in eips {
            let answer = tokio::time::timeout(
                CHECK_DEADLINE,
                c.describe_addresses()
                    .allocation_ids(&eip.allocation_id)
                    .send(),
            )
            .await
            .map_err(|_| format!("reading {}: no answer within 20 s", eip.allocation_id))?
            .map_err(|e| format!("reading {}: {}", eip.allocation_id, short_error(&e)))?;
            let association = answer.addresses().first().and_then(|a| {
                Some(Association {
                    eni: a.network_interface_id()?.to_string(),
                    private_ip: a.private_ip_address()?.to_string(),
                })
            });
            snap.associations
                .insert(eip.allocation_id.clone(), association);
        }
        Ok(snap)
    }

    /// One line per difference from `before`.
    pub fn changes_since(&self, before: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (eni, was) in &before.addresses {
            let now = self.addresses.get(eni).cloned().unwrap_or_default();
            for ip in was.difference(&now) {
                out.push(format!("{ip} was removed from ENI {eni}"));
            }
            for ip in now.difference(was) {
                out.push(format!("{ip} was added to ENI {eni}"));
            }
        }
        for (key, was) in &before.routes {
            match self.routes.get(key) {
                Some(now) if now == was => {}
                Some(now) => out.push(format!(
                    "route {} {} now points at {now}, was {was}",
                    key.0, key.1
                )),
                None => out.push(format!("route {} {} was deleted", key.0, key.1)),
            }
        }
        for key in self
            .routes
            .keys()
            .filter(|k| !before.routes.contains_key(*k))
        {
            out.push(format!("route {} {} was created", key.0, key.1));
        }
        for (allocation, was) in &before.associations {
            let now = self.associations.get(allocation).cloned().flatten();
            if now != *was {
                let show = |a: &Option<Association>| match a {
                    Some(a) => format!("{} at {}", a.eni, a.private_ip),
                    None => "nothing".to_string(),
                };
                out.push(format!(
                    "Elastic IP {allocation} is now associated with {}, was {}",
                    show(&now),
                    show(was)
                ));
            }
        }
        out
    }
}

/// A probe that was not sent because no harmless form exists: the action is simulated for
/// `resource` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsent {
    pub action: &'static str,
    /// What the probe would have named (for the check's text).
    pub subject: String,
    /// Why it was not sent.
    pub why: String,
    /// The resources (ARN kind, id) the action would act on, for the simulation.
    pub resources: Vec<(&'static str, String)>,
}

/// What one `DryRun` request answered: the subject it named, and EC2's error code and message.
pub struct DryRunResult {
    pub subject: String,
    pub code: Option<String>,
    pub message: String,
}

/// Send the harmless `DryRun` probes of `action`; returns their answers and the probes that
/// had no harmless form.
pub async fn dry_run(
    provider: &AwsProvider,
    action: &'static str,
    routes: &[cloudha_provider_core::RouteSpec],
    eips: &[ElasticIp],
    before: &Snapshot,
) -> (Vec<DryRunResult>, Vec<Unsent>) {
    let own = provider.identity.own_eni.as_str();
    let c = &provider.client;
    let mut results = Vec::new();
    let mut unsent = Vec::new();
    macro_rules! collect {
        ($subject:expr, $call:expr) => {{
            let subject: String = $subject;
            let answer = tokio::time::timeout(CHECK_DEADLINE, $call).await;
            let (code, message) = match answer {
                Ok(Ok(_)) => (
                    None,
                    "the call succeeded although DryRun was set (the endpoint ignores DryRun; the probe named the current state, so nothing moved)".to_string(),
                ),
                Ok(Err(e)) => (e.code().map(str::to_string), short_error(&e)),
                Err(_) => (Some("Timeout".to_string()), "no answer within 20 s".to_string()),
            };
            results.push(DryRunResult { subject, code, message });
        }};
    }
    match action {
        "ec2:AssociateAddress" => {
            for eip in eips {
                let subject = format!(
                    "Elastic IP {} to {own} at {}",
                    eip.allocation_id, eip.private_ip
                );
                let current = before
                    .associations
                    .get(&eip.allocation_id)
                    .cloned()
                    .flatten();
                let on_target = current
                    .as_ref()
                    .is_some_and(|a| a.eni == own && a.private_ip == eip.private_ip.to_string());
                if current.is_none() || on_target {
                    unsent.push(Unsent {
                        action,
                        subject,
                        why: if on_target {
                            "it is associated there already".into()
                        } else {
                            "it is not associated: a probe that EC2 applied would associate it"
                                .into()
                        },
                        resources: vec![
                            ("elastic-ip", eip.allocation_id.clone()),
                            ("network-interface", own.to_string()),
                        ],
                    });
                    continue;
                }
                // Associated elsewhere and no reassociation allowed: applied, EC2 refuses.
                collect!(
                    subject,
                    c.associate_address()
                        .dry_run(true)
                        .allocation_id(&eip.allocation_id)
                        .network_interface_id(own)
                        .private_ip_address(eip.private_ip.to_string())
                        .allow_reassociation(false)
                        .send()
                );
            }
        }
        "ec2:ReplaceRoute" | "ec2:CreateRoute" => {
            for r in routes {
                let subject = format!("{} {}", r.table, r.prefix);
                let current = before
                    .routes
                    .get(&(r.table.clone(), r.prefix.clone()))
                    .filter(|t| t.nameable());
                let Some(target) = current else {
                    unsent.push(Unsent {
                        action,
                        subject,
                        why: "the route is missing or its target cannot be named again: a probe that EC2 applied would change it".into(),
                        resources: vec![("route-table", r.table.clone())],
                    });
                    continue;
                };
                let subject = format!("{subject} (-> its current target {target})");
                if action == "ec2:ReplaceRoute" {
                    let call = c
                        .replace_route()
                        .dry_run(true)
                        .route_table_id(&r.table)
                        .destination_cidr_block(&r.prefix);
                    collect!(subject, with_target!(call, target.clone()).send());
                } else {
                    let call = c
                        .create_route()
                        .dry_run(true)
                        .route_table_id(&r.table)
                        .destination_cidr_block(&r.prefix);
                    collect!(subject, with_target!(call, target.clone()).send());
                }
            }
        }
        _ => {}
    }
    (results, unsent)
}

/// Read the state again after the probes: a check that passes when nothing changed, or fails
/// naming each change (after putting routes and associations back where it can).
pub async fn verify_unchanged(
    provider: &AwsProvider,
    tables: &BTreeSet<String>,
    eips: &[ElasticIp],
    before: &Snapshot,
) -> Check {
    let after = match Snapshot::read(provider, tables, eips).await {
        Ok(s) => s,
        Err(e) => {
            return Check::warn(
                "unchanged",
                format!("could not read the state back after the probes: {e}"),
                "compare the route tables, Elastic IPs and ENI addresses with what they were before the self-test",
            )
        }
    };
    let changes = after.changes_since(before);
    if changes.is_empty() {
        return Check::pass(
            "unchanged",
            format!(
                "read back after the probes: {} route(s), {} Elastic IP(s) and both ENIs' addresses are as before",
                before.routes.len(),
                before.associations.len()
            ),
        );
    }
    let restored = restore(provider, before, &after).await;
    Check::fail(
        "unchanged",
        format!(
            "the self-test's probes changed the cloud (the endpoint ignored DryRun): {}; {restored}",
            changes.join("; ")
        ),
        "check the pair now (cloudha status on both nodes); report this endpoint: it applies DryRun requests",
    )
}

/// Put changed routes and associations back; says what it did.
async fn restore(provider: &AwsProvider, before: &Snapshot, after: &Snapshot) -> String {
    let c = &provider.client;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for ((table, dest), was) in &before.routes {
        if after.routes.get(&(table.clone(), dest.clone())) == Some(was) || !was.nameable() {
            continue;
        }
        let call = c
            .replace_route()
            .route_table_id(table)
            .destination_cidr_block(dest);
        match tokio::time::timeout(CHECK_DEADLINE, with_target!(call, was.clone()).send()).await {
            Ok(Ok(_)) => done.push(format!("route {table} {dest} back to {was}")),
            Ok(Err(e)) => failed.push(format!("route {table} {dest}: {}", short_error(&e))),
            Err(_) => failed.push(format!("route {table} {dest}: no answer")),
        }
    }
    for (allocation, was) in &before.associations {
        let Some(was) = was else { continue };
        if after
            .associations
            .get(allocation)
            .cloned()
            .flatten()
            .as_ref()
            == Some(was)
        {
            continue;
        }
        let call = c
            .associate_address()
            .allocation_id(allocation)
            .network_interface_id(&was.eni)
            .private_ip_address(&was.private_ip)
            .allow_reassociation(true)
            .send();
        match tokio::time::timeout(CHECK_DEADLINE, call).await {
            Ok(Ok(_)) => done.push(format!("Elastic IP {allocation} back to {}", was.eni)),
            Ok(Err(e)) => failed.push(format!("Elastic IP {allocation}: {}", short_error(&e))),
            Err(_) => failed.push(format!("Elastic IP {allocation}: no answer")),
        }
    }
    match (done.is_empty(), failed.is_empty()) {
        (true, true) => "nothing could be put back automatically".to_string(),
        (_, true) => format!("put back: {}", done.join(", ")),
        _ => format!(
            "put back: {}; could not put back: {}",
            if done.is_empty() {
                "nothing".to_string()
            } else {
                done.join(", ")
            },
            failed.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(table: &str, dest: &str, eni: &str) -> ((String, String), RouteTarget) {
        (
            (table.to_string(), dest.to_string()),
            RouteTarget::NetworkInterface(eni.to_string()),
        )
    }

    #[test]
    fn every_kind_of_change_is_named() {
        let mut before = Snapshot::default();
        before.addresses.insert(
            "eni-a".into(),
            [Ipv4Addr::new(10, 0, 1, 10)].into_iter().collect(),
        );
        before.routes.extend([route("rtb-1", "0.0.0.0/0", "eni-b")]);
        before.associations.insert(
            "eipalloc-1".into(),
            Some(Association {
                eni: "eni-b".into(),
                private_ip: "10.0.1.100".into(),
            }),
        );
        assert!(before.changes_since(&before).is_empty());
        let mut after = before.clone();
        after.addresses.insert(
            "eni-a".into(),
            [Ipv4Addr::new(10, 0, 1, 10), Ipv4Addr::new(10, 0, 1, 100)]
                .into_iter()
                .collect(),
        );
        after.routes.extend([
            route("rtb-1", "0.0.0.0/0", "eni-a"),
            route("rtb-1", "10.9.0.0/16", "eni-a"),
        ]);
        after.associations.insert("eipalloc-1".into(), None);
        let changes = after.changes_since(&before);
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert!(changes[0].contains("10.0.1.100 was added to ENI eni-a"));
        assert!(changes[1].contains("now points at eni-a, was eni-b"));
        assert!(changes[2].contains("10.9.0.0/16 was created"));
        assert!(changes[3].contains("now associated with nothing, was eni-b"));
    }
}
