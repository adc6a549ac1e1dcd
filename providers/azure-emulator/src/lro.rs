//! Long-running operations: starting them, answering writes on busy resources, and the
//! operation status endpoints.
//!
//! Follows the async conventions of network.json (stable/2025-05-01,
//! `AzureAsyncOperationResult`: status
//! `InProgress` | `Succeeded` | `Failed` plus `error`) and the `x-ms-long-running-operation`
//! options of networkInterface.json / routeTable.json (PUT: `final-state-via:
//! azure-async-operation`): an accepted PUT answers 200/201 with the goal-state body, an
//! `Azure-AsyncOperation` header pointing at
//! `/subscriptions/{s}/providers/Microsoft.Network/locations/{loc}/operations/{id}` and
//! `Retry-After`.

use crate::config::ConflictMode;
use crate::http::{arm_error, nrp_error, nrp_error_details, Resp};
use crate::state::{OpTarget, Operation, State};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

/// Where a request's LROs are reported: the client's base URL and api-version.
#[derive(Clone, Debug)]
pub(crate) struct LroCtx {
    pub base_url: String,
    pub api_version: String,
}

impl LroCtx {
    /// `Azure-AsyncOperation` URL.
    pub fn async_url(&self, op: &Operation) -> String {
        format!(
            "{}/subscriptions/{}/providers/Microsoft.Network/locations/{}/operations/{}?api-version={}",
            self.base_url, op.subscription, op.location, op.id, self.api_version
        )
    }

    /// `Location` URL.
    pub fn result_url(&self, op: &Operation) -> String {
        format!(
            "{}/subscriptions/{}/providers/Microsoft.Network/locations/{}/operationResults/{}?api-version={}",
            self.base_url, op.subscription, op.location, op.id, self.api_version
        )
    }
}

/// Parameters of a new operation.
pub(crate) struct NewOp {
    pub subscription: String,
    pub location: String,
    pub name: &'static str,
    pub delay: Duration,
    pub failure: Option<(String, String)>,
    pub target: OpTarget,
}

/// Registers an operation that completes `delay` after `now`; returns its ID.
pub(crate) fn start(st: &mut State, now: Instant, new: NewOp) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    st.operations.insert(
        id.clone(),
        Operation {
            id: id.clone(),
            subscription: new.subscription,
            // Status URLs use the normalised region name (`West Europe` -> `westeurope`).
            location: new.location.replace(' ', "").to_ascii_lowercase(),
            name: new.name,
            done_at: now + new.delay,
            failure: new.failure,
            target: new.target,
            outcome: None,
        },
    );
    id
}

/// `Retry-After` (seconds) for answers about `op` (see [`crate::config::TimingProfile`]).
pub(crate) fn retry_after(st: &State, op: &Operation) -> u64 {
    st.settings
        .lro_retry_after(matches!(op.target, OpTarget::Nics(_)))
}

/// Adds `Azure-AsyncOperation` and `Retry-After` to an accepted write.
pub(crate) fn accepted(resp: Resp, st: &State, ctx: &LroCtx, op_id: &str) -> Resp {
    let Some(op) = st.operations.get(op_id) else {
        return resp;
    };
    resp.with_header("azure-asyncoperation", ctx.async_url(op))
        .with_header("retry-after", retry_after(st, op).to_string())
}

/// The refusal of a write on a resource whose operation `op` is still running.
pub(crate) fn conflict(st: &State, ctx: &LroCtx, op: &Operation, resource_guid: &str) -> Resp {
    match st.settings.conflict_mode {
        ConflictMode::AnotherOperationInProgress => nrp_error(
            409,
            "AnotherOperationInProgress",
            format!(
                "Another operation on this or dependent resource is in progress. To retrieve status of the operation use uri: {}.",
                ctx.async_url(op)
            ),
        ),
        ConflictMode::RetryableError => {
            let secs = st
                .settings
                .conflict_retry_after(matches!(op.target, OpTarget::Nics(_)));
            nrp_error_details(
                429,
                "RetryableError",
                "A retryable error occurred.",
                vec![(
                    "RetryableErrorDueToAnotherOperation".to_string(),
                    format!(
                        "Operation {} ({}) is updating resource {resource_guid}. The call can be retried in {secs} seconds.",
                        op.name, op.id
                    ),
                )],
            )
            .with_header("retry-after", secs.to_string())
        }
    }
}

fn find<'a>(st: &'a State, sub: &str, id: &str) -> Option<&'a Operation> {
    st.operations
        .get(&id.to_ascii_lowercase())
        .filter(|o| o.subscription.eq_ignore_ascii_case(sub))
}

fn not_found(id: &str) -> Resp {
    arm_error(404, "NotFound", format!("Operation {id} was not found."))
}

/// `GET .../locations/{loc}/operations/{id}`: the `AzureAsyncOperationResult`.
pub(crate) fn status(st: &State, sub: &str, id: &str) -> Resp {
    let Some(op) = find(st, sub, id) else {
        return not_found(id);
    };
    match op.outcome {
        None => Resp::json(200, &json!({"status": "InProgress"}))
            .with_header("retry-after", retry_after(st, op).to_string()),
        Some(true) => Resp::json(200, &json!({"status": "Succeeded"})),
        Some(false) => {
            let (code, message) = op.failure.clone().unwrap_or_default();
            Resp::json(
                200,
                &json!({"status": "Failed", "error": {"code": code, "message": message, "details": []}}),
            )
        }
    }
}

/// `GET .../locations/{loc}/operationResults/{id}`: 202 while running, 204 when done,
/// the operation's error (as a 500-class failure) when it failed.
pub(crate) fn result(st: &State, ctx: &LroCtx, sub: &str, id: &str) -> Resp {
    let Some(op) = find(st, sub, id) else {
        return not_found(id);
    };
    match op.outcome {
        None => Resp::empty(202)
            .with_header("location", ctx.result_url(op))
            .with_header("retry-after", retry_after(st, op).to_string()),
        Some(true) => Resp::empty(204),
        Some(false) => {
            let (code, message) = op.failure.clone().unwrap_or_default();
            nrp_error(500, &code, message)
        }
    }
}
