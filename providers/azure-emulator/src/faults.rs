//! Per-call fault injection.
//!
//! Tests queue faults; each request takes the first queued fault that matches its method
//! and path. Matching is on a case-insensitive path substring so a fault can target one NIC
//! (`"networkInterfaces/nic-b"`), a whole family (`"/routes/"`) or IMDS (`"/metadata/identity"`).

use std::time::Duration;

/// What an injected fault does to the matching call.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Answer immediately with this status and error, without touching state.
    Respond {
        /// HTTP status.
        status: u16,
        /// Error code (`error.code` for ARM, `error` for IMDS).
        code: String,
        /// Error message (`error.message` for ARM, `error_description` for IMDS).
        message: String,
        /// Optional `Retry-After` seconds.
        retry_after: Option<u64>,
    },
    /// Hold the response for this long, then process the call normally.
    Delay(Duration),
    /// Accept the write normally, but let its long-running operation end `Failed` with this
    /// error (and the resource roll back) when its propagation delay elapses. Only consumed
    /// by calls that start an operation.
    OperationFails {
        /// `error.code` of the failed operation.
        code: String,
        /// `error.message` of the failed operation.
        message: String,
    },
}

/// One queued fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// Method to match (`None` matches any).
    pub method: Option<String>,
    /// Case-insensitive substring of the request path to match.
    pub path_contains: String,
    /// How many matching calls it still applies to.
    pub times: usize,
    /// The effect.
    pub kind: FaultKind,
}

impl Fault {
    /// A fault for `method` (e.g. `"PUT"`, or `"*"` for any) on paths containing `path_contains`.
    pub fn new(method: &str, path_contains: &str, kind: FaultKind) -> Self {
        Self {
            method: (method != "*").then(|| method.to_ascii_uppercase()),
            path_contains: path_contains.to_ascii_lowercase(),
            times: 1,
            kind,
        }
    }

    /// Applies to the next `n` matching calls instead of one.
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    /// An arbitrary status/code/message answer.
    pub fn respond(method: &str, path: &str, status: u16, code: &str, message: &str) -> Self {
        Self::new(
            method,
            path,
            FaultKind::Respond {
                status,
                code: code.to_string(),
                message: message.to_string(),
                retry_after: None,
            },
        )
    }

    /// ARM subscription throttling: 429 `SubscriptionRequestsThrottled` with `Retry-After`.
    pub fn throttled(method: &str, path: &str, retry_after_secs: u64) -> Self {
        Self::new(
            method,
            path,
            FaultKind::Respond {
                status: 429,
                code: "SubscriptionRequestsThrottled".to_string(),
                message: format!(
                    "Number of requests for subscription exceeded. Please try again after '{retry_after_secs}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling for additional information."
                ),
                retry_after: Some(retry_after_secs),
            },
        )
    }

    /// 409 `AnotherOperationInProgress`, as if an unseen operation held the resource.
    pub fn another_operation_in_progress(method: &str, path: &str) -> Self {
        Self::respond(
            method,
            path,
            409,
            "AnotherOperationInProgress",
            "Another operation on this or dependent resource is in progress. To retrieve status of the operation use uri: https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Network/locations/westeurope/operations/00000000-0000-0000-0000-000000000000?api-version=2024-05-01.",
        )
    }

    /// 412 `PreconditionFailed`, as if the resource changed under the caller.
    pub fn precondition_failed(method: &str, path: &str) -> Self {
        Self::respond(
            method,
            path,
            412,
            "PreconditionFailed",
            "Precondition failed: the ETag provided in the If-Match header does not match the resource's current ETag.",
        )
    }

    /// 500 `InternalServerError`.
    pub fn internal_error(method: &str, path: &str) -> Self {
        Self::respond(
            method,
            path,
            500,
            "InternalServerError",
            "An error occurred.",
        )
    }

    /// 503 `ServiceUnavailable` with `Retry-After`.
    pub fn service_unavailable(method: &str, path: &str, retry_after_secs: u64) -> Self {
        Self::new(
            method,
            path,
            FaultKind::Respond {
                status: 503,
                code: "ServiceUnavailable".to_string(),
                message: "The service is temporarily unavailable. Please retry.".to_string(),
                retry_after: Some(retry_after_secs),
            },
        )
    }

    /// 400 `PrivateIPAddressInUse`, as while another NIC's update still holds the address.
    pub fn private_ip_address_in_use(method: &str, path: &str) -> Self {
        Self::respond(
            method,
            path,
            400,
            "PrivateIPAddressInUse",
            "IP configuration is using the same private IP address as another IP configuration.",
        )
    }

    /// IMDS instance metadata: 500, as when the metadata service is briefly unavailable.
    pub fn imds_metadata_unavailable() -> Self {
        Self::respond(
            "GET",
            "/metadata/instance",
            500,
            "internal_error",
            "The instance metadata service is temporarily unavailable.",
        )
    }

    /// Delays the response by `ms` milliseconds.
    pub fn delay(method: &str, path: &str, ms: u64) -> Self {
        Self::new(method, path, FaultKind::Delay(Duration::from_millis(ms)))
    }

    /// The started operation ends `Failed` with this error.
    pub fn operation_fails(method: &str, path: &str, code: &str, message: &str) -> Self {
        Self::new(
            method,
            path,
            FaultKind::OperationFails {
                code: code.to_string(),
                message: message.to_string(),
            },
        )
    }

    /// IMDS token endpoint: 400 `invalid_request` / "Identity not found".
    pub fn imds_identity_not_found() -> Self {
        Self::respond(
            "GET",
            "/metadata/identity/oauth2/token",
            400,
            "invalid_request",
            "Identity not found",
        )
    }

    /// IMDS token endpoint: 500 with an IMDS-style body.
    pub fn imds_token_internal_error() -> Self {
        Self::respond(
            "GET",
            "/metadata/identity/oauth2/token",
            500,
            "unknown_error",
            "An unexpected error occurred while fetching the AAD Token.",
        )
    }

    fn matches(&self, method: &str, path_lower: &str) -> bool {
        self.times > 0
            && self.method.as_deref().is_none_or(|m| m == method)
            && path_lower.contains(&self.path_contains)
    }
}

/// Which faults a call may consume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// On arrival: `Respond` and `Delay`.
    Arrival,
    /// When a write starts an operation: `OperationFails`.
    OperationStart,
}

/// The queue.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    faults: Vec<Fault>,
}

impl FaultQueue {
    pub fn push(&mut self, f: Fault) {
        self.faults.push(f);
    }

    pub fn clear(&mut self) {
        self.faults.clear();
    }

    pub fn pending(&self) -> Vec<Fault> {
        self.faults.clone()
    }

    /// Takes one use of the first fault matching the call and phase.
    pub fn take(&mut self, method: &str, path: &str, phase: Phase) -> Option<FaultKind> {
        let path_lower = path.to_ascii_lowercase();
        let idx = self.faults.iter().position(|f| {
            let phase_ok = match f.kind {
                FaultKind::OperationFails { .. } => phase == Phase::OperationStart,
                _ => phase == Phase::Arrival,
            };
            phase_ok && f.matches(method, &path_lower)
        })?;
        let f = &mut self.faults[idx];
        f.times -= 1;
        let kind = f.kind.clone();
        if f.times == 0 {
            self.faults.remove(idx);
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_in_order_and_by_phase() {
        let mut q = FaultQueue::default();
        q.push(Fault::operation_fails("PUT", "nic-a", "X", "y"));
        q.push(Fault::internal_error("PUT", "NIC-A").times(2));
        assert!(matches!(
            q.take("PUT", "/x/nic-a", Phase::Arrival),
            Some(FaultKind::Respond { status: 500, .. })
        ));
        assert!(q.take("GET", "/x/nic-a", Phase::Arrival).is_none());
        assert!(q.take("PUT", "/x/nic-a", Phase::Arrival).is_some());
        assert!(q.take("PUT", "/x/nic-a", Phase::Arrival).is_none());
        assert!(matches!(
            q.take("PUT", "/x/nic-a", Phase::OperationStart),
            Some(FaultKind::OperationFails { .. })
        ));
        assert!(q.pending().is_empty());
    }
}
