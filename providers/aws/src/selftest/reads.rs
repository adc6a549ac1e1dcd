//! Owns the read checks: both ENIs, every configured route table and Elastic IP, each by one
//! `Describe*` call, with the fix for a refusal.

use std::collections::BTreeSet;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::NetworkInterface;
use cloudha_provider_core::{Check, RouteSpec};

use crate::config::ElasticIp;
use crate::{short_error, AwsProvider, CHECK_DEADLINE};

fn refusal_fix<E: ProvideErrorMetadata>(
    e: &SdkError<E>,
    action: &str,
    what: &str,
    id: &str,
) -> String {
    match e.code() {
        Some("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException") => {
            format!("allow {action} in the instance role's policy (deploy/aws)")
        }
        Some(code) if code.contains("NotFound") => {
            format!("{what} {id} does not exist in this region: correct the id in the config")
        }
        _ => "read EC2's message; fix the id in the config or the role's policy".to_string(),
    }
}

pub(super) async fn read_eni(
    provider: &AwsProvider,
    name: &str,
    what: &str,
    id: &str,
    out: &mut Vec<Check>,
) -> Option<NetworkInterface> {
    let call = provider
        .client
        .describe_network_interfaces()
        .network_interface_ids(id)
        .send();
    match tokio::time::timeout(CHECK_DEADLINE, call).await {
        Ok(Ok(r)) => match r.network_interfaces().first() {
            Some(eni) => {
                out.push(Check::pass(name, format!("read {what} {id}")).proved_by("call"));
                Some(eni.clone())
            }
            None => {
                out.push(Check::fail(
                    name,
                    format!("{what} {id} not found"),
                    "correct the ENI id in the config",
                ));
                None
            }
        },
        Ok(Err(e)) => {
            out.push(
                Check::fail(
                    name,
                    format!(
                        "ec2:DescribeNetworkInterfaces on {what} {id}: {}",
                        short_error(&e)
                    ),
                    refusal_fix(&e, "ec2:DescribeNetworkInterfaces", what, id),
                )
                .proved_by("call"),
            );
            None
        }
        Err(_) => {
            out.push(Check::fail(
                name,
                format!("reading {what} {id}: no answer within 20 s"),
                "check the EC2 endpoint",
            ));
            None
        }
    }
}

/// `(table id, routes as (destination, target ENI))` for every table that could be read.
pub(super) type Tables = Vec<(String, Vec<(String, Option<String>)>)>;

pub(super) async fn read_tables(
    provider: &AwsProvider,
    routes: &[RouteSpec],
    out: &mut Vec<Check>,
) -> Tables {
    let ids: BTreeSet<&str> = routes.iter().map(|r| r.table.as_str()).collect();
    let mut found = Vec::new();
    for id in ids {
        let call = provider
            .client
            .describe_route_tables()
            .route_table_ids(id)
            .send();
        match tokio::time::timeout(CHECK_DEADLINE, call).await {
            Ok(Ok(r)) => match r.route_tables().first() {
                Some(t) => {
                    out.push(
                        Check::pass("read_route_table", format!("read route table {id}"))
                            .proved_by("call"),
                    );
                    let routes = t
                        .routes()
                        .iter()
                        .filter_map(|r| {
                            Some((
                                r.destination_cidr_block()?.to_string(),
                                r.network_interface_id().map(str::to_string),
                            ))
                        })
                        .collect();
                    found.push((id.to_string(), routes));
                }
                None => out.push(Check::fail(
                    "read_route_table",
                    format!("route table {id} not found"),
                    format!(
                        "route table {id} does not exist in this region: correct [[route]] table"
                    ),
                )),
            },
            Ok(Err(e)) => out.push(
                Check::fail(
                    "read_route_table",
                    format!("ec2:DescribeRouteTables on {id}: {}", short_error(&e)),
                    refusal_fix(&e, "ec2:DescribeRouteTables", "route table", id),
                )
                .proved_by("call"),
            ),
            Err(_) => out.push(Check::fail(
                "read_route_table",
                format!("reading route table {id}: no answer within 20 s"),
                "check the EC2 endpoint",
            )),
        }
    }
    found
}

/// `(allocation id, associated ENI)` for every Elastic IP that could be read.
pub(super) async fn read_eips(
    provider: &AwsProvider,
    eips: &[ElasticIp],
    out: &mut Vec<Check>,
) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for eip in eips {
        let id = &eip.allocation_id;
        let call = provider
            .client
            .describe_addresses()
            .allocation_ids(id)
            .send();
        match tokio::time::timeout(CHECK_DEADLINE, call).await {
            Ok(Ok(r)) => match r.addresses().first() {
                Some(a) => {
                    out.push(
                        Check::pass(
                            "read_elastic_ip",
                            format!("read Elastic IP {id} ({})", a.public_ip().unwrap_or("?")),
                        )
                        .proved_by("call"),
                    );
                    found.push((id.clone(), a.network_interface_id().map(str::to_string)));
                }
                None => out.push(Check::fail(
                    "read_elastic_ip",
                    format!("Elastic IP {id} not found"),
                    "correct floating_ip.elastic_ip",
                )),
            },
            Ok(Err(e)) => out.push(
                Check::fail(
                    "read_elastic_ip",
                    format!("ec2:DescribeAddresses on {id}: {}", short_error(&e)),
                    refusal_fix(&e, "ec2:DescribeAddresses", "Elastic IP", id),
                )
                .proved_by("call"),
            ),
            Err(_) => out.push(Check::fail(
                "read_elastic_ip",
                format!("reading {id}: no answer within 20 s"),
                "check the EC2 endpoint",
            )),
        }
    }
    found
}
