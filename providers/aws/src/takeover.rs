//! Moving the floating IPs (secondary private IPs) and their Elastic IPs onto this node's ENI.
//!
//! One `AssignPrivateIpAddresses` with `AllowReassignment` moves every missing address at once.
//! Real EC2 takes the addresses off the peer ENI by itself, but asynchronously; moto leaves them
//! on both ENIs. So the move is verified with `DescribeNetworkInterfaces`, and an address that
//! is on both ENIs once it is on ours is unassigned from the peer's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use cloudha_provider_core::{FloatingIp, Holder, ProviderError};

use crate::call::Calls;
use crate::config::ElasticIp;
use crate::describe::{self, Enis};
use crate::observe::{eip_in_place, ip_holder};

/// First wait before reading the ENIs again while EC2 finishes a move; doubles up to the cap.
const VERIFY_FIRST_WAIT: Duration = Duration::from_millis(200);
const VERIFY_MAX_WAIT: Duration = Duration::from_secs(2);
/// Reads of the ENIs while waiting for a move; the deadline usually ends the wait first.
const VERIFY_MAX_READS: u32 = 30;
/// Unassign attempts on the peer ENI per takeover.
const MAX_UNASSIGNS: u32 = 2;
/// Assigns again, per takeover, of addresses found on neither ENI after the move.
const MAX_REASSIGNS: u32 = 2;
/// Reads in a row that must find an address on neither ENI before it is assigned again: one
/// such read can be EC2 finishing the move, two say someone else removed it.
const NOBODY_READS_BEFORE_REASSIGN: u32 = 2;

/// The two ENIs of the pair.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pair<'a> {
    pub own: &'a str,
    pub peer: &'a str,
}

fn join(ips: &[Ipv4Addr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A floating IP that is an ENI's primary address can never move: refuse before changing anything.
fn refuse_primaries(
    floating_ips: &[FloatingIp],
    enis: &Enis,
    pair: Pair<'_>,
) -> Result<(), ProviderError> {
    let primaries = [
        (pair.own, enis.own.primary),
        (pair.peer, enis.peer.as_ref().and_then(|p| p.primary)),
    ];
    for fip in floating_ips {
        if let Some((eni, _)) = primaries.iter().find(|(_, p)| *p == Some(fip.address)) {
            return Err(ProviderError::Permanent {
                operation: "AssignPrivateIpAddresses".to_string(),
                message: format!("{} is the primary private IP of {eni}", fip.address),
                fix: "use secondary private IPs as floating IPs: a primary IP cannot move"
                    .to_string(),
            });
        }
    }
    Ok(())
}

/// Make `pair.own` the only holder of every floating IP. Returns whether anything changed.
pub(crate) async fn move_addresses(
    calls: &Calls<'_>,
    pair: Pair<'_>,
    floating_ips: &[FloatingIp],
) -> Result<bool, ProviderError> {
    if floating_ips.is_empty() {
        return Ok(false);
    }
    let mut enis = describe::enis(calls, pair.own, pair.peer).await?;
    refuse_primaries(floating_ips, &enis, pair)?;
    let missing: Vec<Ipv4Addr> = floating_ips
        .iter()
        .map(|f| f.address)
        .filter(|ip| !enis.own.addresses.contains(ip))
        .collect();
    let mut changed = false;
    if !missing.is_empty() {
        assign(calls, pair, &missing).await?;
        changed = true;
        enis = describe::enis(calls, pair.own, pair.peer).await?;
    }
    let mut unassigns = 0;
    let mut reassigns = 0;
    let mut nobody_reads = 0;
    let mut wait = VERIFY_FIRST_WAIT;
    for _ in 0..VERIFY_MAX_READS {
        let holders: Vec<(Ipv4Addr, Holder)> = floating_ips
            .iter()
            .map(|f| (f.address, ip_holder(f.address, &enis)))
            .collect();
        let on_both: Vec<Ipv4Addr> = holders
            .iter()
            .filter(|(_, h)| *h == Holder::Both)
            .map(|(ip, _)| *ip)
            .collect();
        let not_yet: Vec<Ipv4Addr> = holders
            .iter()
            .filter(|(_, h)| !matches!(h, Holder::Me | Holder::Both))
            .map(|(ip, _)| *ip)
            .collect();
        // On neither ENI: the peer (a restarted node that went active for a moment before it
        // heard this one) or an operator removed it after our assign. Waiting cannot bring it
        // back; assigning it again does (AllowReassignment is idempotent).
        let on_neither: Vec<Ipv4Addr> = holders
            .iter()
            .filter(|(_, h)| *h == Holder::Nobody)
            .map(|(ip, _)| *ip)
            .collect();
        nobody_reads = if on_neither.is_empty() {
            0
        } else {
            nobody_reads + 1
        };
        if on_both.is_empty() && not_yet.is_empty() {
            if !changed {
                calls
                    .progress
                    .note(format!("floating IPs already on {}", pair.own));
            }
            return Ok(changed);
        }
        if !on_both.is_empty() && unassigns < MAX_UNASSIGNS {
            unassigns += 1;
            unassign_from_peer(calls, pair, &on_both).await?;
            changed = true;
        } else if nobody_reads >= NOBODY_READS_BEFORE_REASSIGN && reassigns < MAX_REASSIGNS {
            reassigns += 1;
            nobody_reads = 0;
            calls.progress.note(format!(
                "{} on neither ENI after the move (removed by another writer): assigning again",
                join(&on_neither)
            ));
            assign(calls, pair, &on_neither).await?;
            changed = true;
        } else {
            calls.progress.note(format!(
                "waiting for EC2 to finish moving {} to {}",
                join(if not_yet.is_empty() {
                    &on_both
                } else {
                    &not_yet
                }),
                pair.own
            ));
            calls
                .budget
                .sleep("DescribeNetworkInterfaces", wait)
                .await?;
            wait = (wait * 2).min(VERIFY_MAX_WAIT);
        }
        enis = describe::enis(calls, pair.own, pair.peer).await?;
    }
    Err(ProviderError::Transient {
        operation: "DescribeNetworkInterfaces".to_string(),
        message: format!(
            "floating IPs still not only on {} after {VERIFY_MAX_READS} reads",
            pair.own
        ),
        retry_after: None,
    })
}

async fn assign(calls: &Calls<'_>, pair: Pair<'_>, ips: &[Ipv4Addr]) -> Result<(), ProviderError> {
    let op = calls.progress.operation(
        format!("ip.assign {}", pair.own),
        format!(
            "assign {} to {} (AllowReassignment takes them from {})",
            join(ips),
            pair.own,
            pair.peer
        ),
    );
    let result = calls
        .send("AssignPrivateIpAddresses", || {
            calls
                .client
                .assign_private_ip_addresses()
                .network_interface_id(pair.own)
                .set_private_ip_addresses(Some(ips.iter().map(ToString::to_string).collect()))
                .allow_reassignment(true)
                .send()
        })
        .await
        .map(|_| ())
        .map_err(ProviderError::from);
    op.finish(&result);
    if result.is_ok() {
        tracing::info!(eni = pair.own, addresses = %join(ips), "floating IPs assigned");
    }
    result
}

async fn unassign_from_peer(
    calls: &Calls<'_>,
    pair: Pair<'_>,
    ips: &[Ipv4Addr],
) -> Result<(), ProviderError> {
    let op = calls.progress.operation(
        format!("ip.unassign {}", pair.peer),
        format!(
            "unassign {} from {}: still there after the move",
            join(ips),
            pair.peer
        ),
    );
    let result = calls
        .send("UnassignPrivateIpAddresses", || {
            calls
                .client
                .unassign_private_ip_addresses()
                .network_interface_id(pair.peer)
                .set_private_ip_addresses(Some(ips.iter().map(ToString::to_string).collect()))
                .send()
        })
        .await;
    let result = match result {
        Ok(_) => Ok(()),
        // EC2 refuses to unassign an address the ENI no longer has: it finished the move
        // between our read and the unassign. The caller reads the ENIs again either way, so a
        // refusal for another reason still ends in an error there, not in a false success.
        Err(f) if f.is("InvalidParameterValue") => {
            calls.progress.note(format!(
                "{} not unassigned from {} ({}); reading the ENIs again",
                join(ips),
                pair.peer,
                f.error
            ));
            Ok(())
        }
        Err(f) => Err(ProviderError::from(f)),
    };
    op.finish(&result);
    result
}

/// Associate every configured Elastic IP with `pair.own` at its floating IP. `ours` keeps the
/// association ids this provider created (see [`eip_in_place`]). Returns whether anything changed.
pub(crate) async fn move_elastic_ips(
    calls: &Calls<'_>,
    pair: Pair<'_>,
    elastic_ips: &[ElasticIp],
    ours: &Mutex<BTreeMap<String, String>>,
) -> Result<bool, ProviderError> {
    if elastic_ips.is_empty() {
        return Ok(false);
    }
    let ids: Vec<&str> = elastic_ips
        .iter()
        .map(|e| e.allocation_id.as_str())
        .collect();
    let current = describe::associations(calls, &ids).await?;
    let mut changed = false;
    for eip in elastic_ips {
        let ours_now = our_association(ours, &eip.allocation_id);
        let association = current.get(&eip.allocation_id).cloned().unwrap_or_default();
        if eip_in_place(&association, pair.own, eip.private_ip, ours_now.as_deref()) {
            continue;
        }
        let public = association
            .public_ip
            .clone()
            .unwrap_or_else(|| eip.allocation_id.clone());
        let op = calls.progress.operation(
            format!("eip.associate {}", eip.allocation_id),
            format!(
                "associate {public} with {} at {} (AllowReassociation)",
                pair.own, eip.private_ip
            ),
        );
        let result = calls
            .send("AssociateAddress", || {
                calls
                    .client
                    .associate_address()
                    .allocation_id(&eip.allocation_id)
                    .network_interface_id(pair.own)
                    .private_ip_address(eip.private_ip.to_string())
                    // Explicit: the API's default (true for VPC addresses on AWS, false on
                    // moto) must not decide whether the peer's association is taken.
                    .allow_reassociation(true)
                    .send()
            })
            .await
            .map_err(ProviderError::from);
        op.finish(&result);
        let out = result?;
        if let Some(id) = out.association_id() {
            remember(ours, &eip.allocation_id, id);
        }
        tracing::info!(allocation = %eip.allocation_id, eni = pair.own, private_ip = %eip.private_ip, "Elastic IP associated");
        changed = true;
    }
    if changed {
        verify_elastic_ips(calls, pair, elastic_ips, ours, &ids).await?;
    } else {
        calls
            .progress
            .note(format!("Elastic IPs already on {}", pair.own));
    }
    Ok(changed)
}

async fn verify_elastic_ips(
    calls: &Calls<'_>,
    pair: Pair<'_>,
    elastic_ips: &[ElasticIp],
    ours: &Mutex<BTreeMap<String, String>>,
    ids: &[&str],
) -> Result<(), ProviderError> {
    let after = describe::associations(calls, ids).await?;
    let astray: Vec<&str> = elastic_ips
        .iter()
        .filter(|eip| {
            let association = after.get(&eip.allocation_id).cloned().unwrap_or_default();
            let ours_now = our_association(ours, &eip.allocation_id);
            !eip_in_place(&association, pair.own, eip.private_ip, ours_now.as_deref())
        })
        .map(|eip| eip.allocation_id.as_str())
        .collect();
    if astray.is_empty() {
        Ok(())
    } else {
        Err(ProviderError::Transient {
            operation: "DescribeAddresses".to_string(),
            message: format!(
                "{} not on {} after AssociateAddress (another node re-associated it?)",
                astray.join(", "),
                pair.own
            ),
            retry_after: None,
        })
    }
}

pub(crate) fn our_association(
    ours: &Mutex<BTreeMap<String, String>>,
    allocation_id: &str,
) -> Option<String> {
    let map = match ours.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    map.get(allocation_id).cloned()
}

fn remember(ours: &Mutex<BTreeMap<String, String>>, allocation_id: &str, association_id: &str) {
    let mut map = match ours.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    map.insert(allocation_id.to_string(), association_id.to_string());
}
