//! Owns the self-test's reads of NICs and route tables (GETs), and the check and fix a failed
//! read becomes.

use cloudha_provider_core::Check;
use serde_json::Value;

use crate::arm::{ArmClient, ArmError, CallLog, ErrorClass, NETWORK_API_VERSION};
use crate::ids::short;

pub(super) async fn read(
    arm: &ArmClient,
    log: &CallLog,
    name: &str,
    what: &str,
    id: &str,
    out: &mut Vec<Check>,
) -> Option<Value> {
    match arm.get(log, "selftest.get", id, NETWORK_API_VERSION).await {
        Ok(r) => {
            out.push(Check::pass(name, format!("read {what} {id}")));
            Some(r.body)
        }
        Err(e) => {
            out.push(read_failure(name, what, id, &e));
            None
        }
    }
}

pub(super) fn read_failure(name: &str, what: &str, id: &str, e: &ArmError) -> Check {
    let fix = match (e.class, e.code.as_str()) {
        (ErrorClass::NotFound, _) | (_, "ResourceNotFound" | "ResourceGroupNotFound" | "NotFound") => {
            format!("{what} {} does not exist: correct the id in the config (subscription, resource group, name)", short(id))
        }
        (_, "AuthorizationFailed") => format!(
            "grant the node's identity read on {} (the cloudha role in deploy/azure, assigned in Access control (IAM))",
            short(id)
        ),
        _ => "read the ARM message; fix the id or the identity's role".to_string(),
    };
    Check::fail(name, format!("cannot read {what} {id}: {e}"), fix)
}
