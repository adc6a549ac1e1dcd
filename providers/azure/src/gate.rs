//! Before the peer's NIC is stripped: proof that this node may finish the move.
//!
//! A two-step move removes the floating ipConfiguration from the peer's NIC, then adds it here.
//! If the add is then refused (no write on this NIC, no `join` on a resource the entry links
//! to: ARM's `LinkedAuthorizationFailed`), the address sits on no NIC until a person grants
//! the action: an outage the controller caused. So before the removal, the node asks the
//! permissions API (`{scope}/providers/Microsoft.Authorization/permissions`, the caller's own
//! effective `actions`/`notActions` there) for every action the add needs, at the resource it
//! needs it on.
//!
//! Only grants are cached (for [`FRESH_FOR`], and all forgotten after any 403 from a write): a
//! denial is asked again at every attempt, one read per scope, so an action the operator grants
//! during an outage is used by the first attempt after the grant, not minutes later.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use crate::arm::{ArmClient, ArmError, CallLog, ErrorClass};
use crate::ensure::read_within;
use crate::nic;
use crate::permissions_api::{grants, PERMISSIONS_API_VERSION};

/// How long one permissions answer is trusted.
pub const FRESH_FOR: Duration = Duration::from_secs(300);

/// The actions adding `entries` to NIC `own_id` (document `own`) needs, each with its scope:
/// the write on the NIC, the join on every resource the entries link to, the join on the
/// NIC's network security group (a NIC PUT re-links it).
pub fn needed_for_add(own_id: &str, own: &Value, entries: &[Value]) -> Vec<(&'static str, String)> {
    let mut out = vec![(
        "Microsoft.Network/networkInterfaces/write",
        own_id.to_string(),
    )];
    if let Some(nsg) = own
        .pointer("/properties/networkSecurityGroup/id")
        .and_then(Value::as_str)
    {
        out.push((
            "Microsoft.Network/networkSecurityGroups/join/action",
            nsg.to_string(),
        ));
    }
    for entry in entries {
        out.extend(nic::linked_resources(entry));
    }
    let mut unique: Vec<(&'static str, String)> = Vec::new();
    for (action, scope) in out {
        if !unique
            .iter()
            .any(|(a, s)| *a == action && s.eq_ignore_ascii_case(&scope))
        {
            unique.push((action, scope));
        }
    }
    unique
}

/// Cached permissions answers, by scope: each is trusted only for the actions it grants.
#[derive(Debug, Default)]
pub struct PermissionCache {
    answers: Mutex<HashMap<String, (Instant, Value)>>,
}

/// The cache's key for a scope.
fn key(scope: &str) -> String {
    scope.trim_end_matches('/').to_ascii_lowercase()
}

impl PermissionCache {
    /// Forget every answer (after a 403: what we believed was wrong).
    pub async fn forget(&self) {
        self.answers.lock().await.clear();
    }

    /// Whether a fresh cached answer for `scope` grants `action`.
    async fn cached_grant(&self, scope: &str, action: &str) -> bool {
        self.answers
            .lock()
            .await
            .get(&key(scope))
            .is_some_and(|(at, answer)| at.elapsed() < FRESH_FOR && grants(answer, action))
    }

    /// `Ok` when every `(action, scope)` is granted. A denied action is a permanent error naming
    /// the action, the scope and the fix; a scope whose permissions cannot be read is a transient
    /// one (the move is not started either way). Any action not granted by a cached answer is
    /// asked of the API now (at most one read per scope per call): a denial is never taken from
    /// the cache.
    pub async fn require(
        &self,
        arm: &ArmClient,
        log: &CallLog,
        needed: &[(&'static str, String)],
        deadline: Instant,
    ) -> Result<(), ArmError> {
        let mut asked: HashMap<String, Value> = HashMap::new();
        for (action, scope) in needed {
            if self.cached_grant(scope, action).await {
                continue;
            }
            let answer = match asked.get(&key(scope)) {
                Some(answer) => answer.clone(),
                None => {
                    let answer = self.ask(arm, log, scope, deadline).await?;
                    asked.insert(key(scope), answer.clone());
                    answer
                }
            };
            if !grants(&answer, action) {
                return Err(ArmError {
                    operation: "nic.permissions".into(),
                    status: 403,
                    code: "AuthorizationFailed".into(),
                    message: format!(
                        "not removing the floating IP from the peer's NIC: this node may not {action} on {scope}, so it could not add it to its own NIC"
                    ),
                    retry_after: None,
                    class: ErrorClass::Permanent,
                });
            }
        }
        Ok(())
    }

    /// The permissions API's answer for `scope`, read now and kept for the grants it holds.
    async fn ask(
        &self,
        arm: &ArmClient,
        log: &CallLog,
        scope: &str,
        deadline: Instant,
    ) -> Result<Value, ArmError> {
        let id = format!(
            "{}/providers/Microsoft.Authorization/permissions",
            scope.trim_end_matches('/')
        );
        match read_within(arm, log, "permissions.get", &id, PERMISSIONS_API_VERSION, deadline).await {
            Ok(Some(body)) => {
                self.answers
                    .lock()
                    .await
                    .insert(key(scope), (Instant::now(), body.clone()));
                Ok(body)
            }
            Ok(None) => Err(ArmError {
                operation: "permissions.get".into(),
                status: 404,
                code: "NotFound".into(),
                message: format!(
                    "not removing the floating IP from the peer's NIC: {scope}, which the floating ipConfiguration references, does not exist"
                ),
                retry_after: None,
                class: ErrorClass::Permanent,
            }),
            Err(e) => Err(ArmError {
                message: format!(
                    "not removing the floating IP from the peer's NIC: cannot prove this node may add it to its own NIC (reading its permissions on {scope}: HTTP {} {}: {}); grant Microsoft.Authorization/permissions/read there (part of Reader)",
                    e.status, e.code, e.message
                ),
                class: ErrorClass::Transient,
                ..e
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_add_needs_the_nic_write_its_nsg_and_every_linked_join_once() {
        let own = json!({"properties": {"networkSecurityGroup": {"id": "/nsg/fw"}}});
        let entry = json!({"properties": {"subnet": {"id": "/sub"}, "publicIPAddress": {"id": "/pip"},
            "applicationSecurityGroups": [{"id": "/asg/1"}, {"id": "/asg/2"}]}});
        let needed = needed_for_add("/nic-a", &own, &[entry.clone(), entry]);
        let names: Vec<String> = needed.iter().map(|(a, s)| format!("{a}@{s}")).collect();
        assert_eq!(
            names,
            [
                "Microsoft.Network/networkInterfaces/write@/nic-a",
                "Microsoft.Network/networkSecurityGroups/join/action@/nsg/fw",
                "Microsoft.Network/virtualNetworks/subnets/join/action@/sub",
                "Microsoft.Network/publicIPAddresses/join/action@/pip",
                "Microsoft.Network/applicationSecurityGroups/joinIpConfiguration/action@/asg/1",
                "Microsoft.Network/applicationSecurityGroups/joinIpConfiguration/action@/asg/2",
            ]
        );
    }
}
