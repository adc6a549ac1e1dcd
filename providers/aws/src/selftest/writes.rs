//! Owns the permission checks: every write action of [`FAILOVER_ACTIONS`] proved by the method
//! its entry names (`DryRun` probes, or `iam:SimulatePrincipalPolicy` for the principal), and the
//! read-back that shows the probes changed nothing.

use std::collections::BTreeSet;

use cloudha_provider_core::Check;

use super::endpoints::{iam_endpoint, NO_IAM_ENDPOINT, NO_IAM_ENDPOINT_FIX};
use super::input::Input;
use crate::permissions::{Proof, RequiredAction, FAILOVER_ACTIONS, SELFTEST_SIMULATE_ACTION};
use crate::probes::{self, DryRunResult, Snapshot};
use crate::simulation::{self, ArnScope};
use crate::{AwsProvider, Credentials};

/// Whether `action` applies to this config (Elastic IP and route actions only when configured).
fn applies(action: &RequiredAction, input: &Input) -> bool {
    if !action.conditional {
        return true;
    }
    match action.action {
        "ec2:DescribeAddresses" | "ec2:AssociateAddress" => !input.elastic_ips.is_empty(),
        _ => !input.routes.is_empty(),
    }
}

pub(super) async fn check_writes(
    provider: &AwsProvider,
    input: &Input,
    principal: Option<&str>,
    credentials: &Credentials,
    read_back: ReadBack,
    out: &mut Vec<Check>,
) {
    let tables: BTreeSet<String> = input.routes.iter().map(|r| r.table.clone()).collect();
    let before = match Snapshot::read(provider, &tables, &input.elastic_ips).await {
        Ok(s) => s,
        Err(e) => {
            out.push(Check::warn(
                "permission",
                format!(
                    "no write probe sent: the state they must leave unchanged cannot be read ({e})"
                ),
                "fix the read failures above and run the self-test again",
            ));
            return;
        }
    };
    let id = &provider.identity;
    let mut simulate: Vec<(&RequiredAction, String, String)> = Vec::new();
    let scope = principal.and_then(|p| ArnScope::of(p, &id.region));
    let arn = |kind: &str, resource: &str| {
        scope
            .as_ref()
            .map(|s| s.ec2(kind, resource))
            .unwrap_or_else(|| format!("{kind}/{resource}"))
    };
    for action in FAILOVER_ACTIONS.iter().filter(|a| applies(a, input)) {
        match action.proof {
            // Proved by the reads above.
            Proof::Call => {}
            // In the daemon nothing that could write is sent, however harmless: a takeover
            // between the read and the probe would make "the current target" stale.
            Proof::DryRun if read_back == ReadBack::None => {
                let resources: Vec<(&str, String)> = match action.action {
                    "ec2:AssociateAddress" => input
                        .elastic_ips
                        .iter()
                        .map(|e| ("elastic-ip", e.allocation_id.clone()))
                        .chain(
                            [&id.own_eni, &id.peer_eni].map(|e| ("network-interface", e.clone())),
                        )
                        .collect(),
                    _ => tables.iter().map(|t| ("route-table", t.clone())).collect(),
                };
                for (kind, resource) in resources {
                    simulate.push((action, arn(kind, &resource), format!("{kind} {resource}")));
                }
            }
            Proof::DryRun => {
                let (results, unsent) = probes::dry_run(
                    provider,
                    action.action,
                    &input.routes,
                    &input.elastic_ips,
                    &before,
                )
                .await;
                for result in results {
                    out.push(dry_run_check(action, result));
                }
                for u in unsent {
                    for (kind, resource) in &u.resources {
                        simulate.push((
                            action,
                            arn(kind, resource),
                            format!("{} (no DryRun sent: {})", u.subject, u.why),
                        ));
                    }
                }
            }
            // A failover in either direction: onto and off both ENIs.
            Proof::Simulation => {
                for eni in [&id.own_eni, &id.peer_eni] {
                    simulate.push((action, arn("network-interface", eni), format!("ENI {eni}")));
                }
            }
        }
    }
    if !simulate.is_empty() {
        simulate_checks(
            input,
            principal,
            scope.is_some(),
            credentials,
            &simulate,
            out,
        )
        .await;
    }
    if read_back == ReadBack::CompareAndRestore {
        out.push(probes::verify_unchanged(provider, &tables, &input.elastic_ips, &before).await);
    }
}

/// Whether the state is read back after the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadBack {
    /// `cloudha selftest` on a pair at rest: any difference is the probes' doing; put it back.
    CompareAndRestore,
    /// Inside the running daemon: takeovers and reconciles change the state meanwhile, and a
    /// "restore" would write against them. The probes are harmless by construction.
    None,
}

/// Policy simulation of `requests` (action, resource ARN, what it is) for `principal`.
async fn simulate_checks(
    input: &Input,
    principal: Option<&str>,
    scoped: bool,
    credentials: &Credentials,
    requests: &[(&RequiredAction, String, String)],
    out: &mut Vec<Check>,
) {
    let not_proved = |why: String, fix: String, out: &mut Vec<Check>| {
        for (a, _, subject) in requests {
            out.push(
                Check::warn(
                    "permission",
                    format!("{} on {subject} not proved: {why}", a.action),
                    fix.clone(),
                )
                .proved_by("policy simulation"),
            );
        }
    };
    let (Some(principal), true) = (principal, scoped) else {
        not_proved(
            "the principal's ARN is unknown (neither IMDS nor STS named it)".into(),
            "make IMDSv2 or STS reachable so the role can be simulated".into(),
            out,
        );
        return;
    };
    let Some(endpoint) = iam_endpoint(&input.config) else {
        not_proved(NO_IAM_ENDPOINT.into(), NO_IAM_ENDPOINT_FIX.into(), out);
        return;
    };
    let region = &input.config.region.clone().unwrap_or_default();
    let asked: Vec<simulation::Request> = requests
        .iter()
        .map(|(a, resource, _)| simulation::Request {
            action: a.action.to_string(),
            resource: resource.clone(),
        })
        .collect();
    let decisions = match simulation::simulate(&endpoint, credentials, principal, region, &asked)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            not_proved(
                format!("{SELFTEST_SIMULATE_ACTION} on {principal} failed: {e}"),
                format!("allow {SELFTEST_SIMULATE_ACTION} on the role itself (the setup in deploy/aws grants it), or set provider.aws.iam_endpoint"),
                out,
            );
            return;
        }
    };
    for (a, resource, subject) in requests {
        let decision = decisions
            .iter()
            .find(|d| {
                d.action.eq_ignore_ascii_case(a.action)
                    && (d.resource == *resource || d.resource == "*")
            })
            .map(|d| d.decision.as_str());
        let check = match decision {
            Some("allowed") => Check::pass(
                "permission",
                format!(
                    "{} allowed on {subject} for {principal} ({})",
                    a.action, a.why
                ),
            ),
            Some(d) => Check::fail(
                "permission",
                format!(
                    "{} is {d} on {resource} for {principal} (needed to {})",
                    a.action, a.why
                ),
                format!(
                    "allow {} on {resource} in the role's policy (deploy/aws){}",
                    a.action,
                    if d == "explicitDeny" {
                        " and remove the Deny that matches it"
                    } else {
                        ""
                    }
                ),
            ),
            None => Check::warn(
                "permission",
                format!("{} on {resource} not in the simulation's answer", a.action),
                "run the self-test again; report it if it persists",
            ),
        };
        out.push(check.proved_by("policy simulation"));
    }
}

fn dry_run_check(action: &RequiredAction, r: DryRunResult) -> Check {
    match r.code.as_deref() {
        Some("DryRunOperation") => Check::pass(
            "permission",
            format!(
                "{} allowed on {} ({})",
                action.action, r.subject, action.why
            ),
        )
        .proved_by("DryRun"),
        Some("UnauthorizedOperation") => Check::fail(
            "permission",
            format!(
                "{} denied on {} (needed to {}): {}",
                action.action, r.subject, action.why, r.message
            ),
            format!(
                "allow {} in the instance role's policy (deploy/aws) for this resource",
                action.action
            ),
        )
        .proved_by("DryRun"),
        other => Check::warn(
            "permission",
            format!(
                "{} not proved on {}: EC2 answered {}: {}",
                action.action,
                r.subject,
                other.unwrap_or("no error"),
                r.message
            ),
            "read EC2's message (a wrong id in the config?) and run the self-test again",
        )
        .proved_by("DryRun"),
    }
}
