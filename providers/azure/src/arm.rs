//! Raw ARM requests: bearer token, `api-version`, `If-Match`, the `CloudError` envelope, error
//! classes, long-running operations and the subscription's write budget.
//!
//! Bodies stay `serde_json::Value` end to end: a NIC is read, edited and written back as the
//! JSON ARM sent, so properties this code has never heard of survive a read-modify-write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudha_provider_core::{ProgressReporter, ProviderError};
use reqwest::{header, Method, StatusCode};
use serde_json::Value;
use tracing::debug;

use crate::budget::{Budget, Priority};
use crate::token::TokenSource;

/// api-version for NIC, route and VM reads and writes (stable, has every field we touch).
pub const NETWORK_API_VERSION: &str = "2024-05-01";
/// moveIpConfigurations first appears in 2025-09-01.
pub const MOVE_API_VERSION: &str = "2025-09-01";
/// api-version for `Microsoft.Compute/virtualMachines` reads.
pub const COMPUTE_API_VERSION: &str = "2024-07-01";
/// Our error code for "the configuration names the wrong peer NIC" (an address of the pair held by
/// a third NIC; see [`crate::elsewhere`]), answered by `fix_for` like ARM's own codes.
pub const PEER_NIC_MISMATCH: &str = "PeerNicMismatch";
/// Connect and whole-request timeouts: an ARM call answers in well under a second when healthy.
/// A request that hangs is abandoned after [`REQUEST_TIMEOUT`] and retried: every write is
/// idempotent (a NIC PUT carries its If-Match, so one the hung request did apply comes back as
/// 412 and is re-read; a move that already happened finds the IP gone from the source), so a
/// short timeout costs nothing, while the 30 s it used to be held a takeover that long (seen
/// in the fault campaign: 29-33 s to converge instead of 1-4 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll an operation at most this often, whatever `Retry-After` says (a 0 would spin).
const MIN_POLL: Duration = Duration::from_millis(200);
/// Poll interval when ARM sends no `Retry-After`.
const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// Between two operation polls further apart than this, the resource itself is read this often
/// (see [`Watch`]). The Network RP asks for 10 s between polls of a NIC update; the update is
/// often applied well before, and a failover should end when it is, not at the next poll.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Reads of the resource between polls only use spare read tokens: this many stay in the bucket
/// for the reads a failover needs (ARM's read bucket holds 250).
const WATCH_READ_RESERVE: f64 = 100.0;

/// A resource whose own document says when the operation that changes it has been applied.
pub struct Watch<'a> {
    /// Resource id to GET.
    pub id: &'a str,
    /// api-version of the GET.
    pub api_version: &'a str,
    /// The document shows the change applied.
    pub applied: &'a (dyn Fn(&Value) -> bool + Sync),
}

/// What kind of failure an ARM answer is, which decides what the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 404: the resource does not exist.
    NotFound,
    /// 412: the ETag moved; re-read and re-apply.
    PreconditionFailed,
    /// 400 `PrivateIPAddressInUse`/`...IsAllocated`/`PublicIPAddressInUse`: another NIC still holds it.
    AddressInUse,
    /// The atomic move is not available to this subscription or api-version.
    FeatureUnavailable,
    /// 401: the token was refused; a fresh one may work.
    Unauthenticated,
    /// 409/429/5xx/timeouts/connection errors: try again later.
    Transient,
    /// 403 and every other 4xx: retrying the same request cannot help.
    Permanent,
}

/// A failed ARM request.
#[derive(Debug, Clone)]
pub struct ArmError {
    /// Our name for the call, e.g. `nic.put`.
    pub operation: String,
    /// HTTP status (0 for a transport error).
    pub status: u16,
    /// ARM's error code (`AuthorizationFailed`), or a transport description.
    pub code: String,
    /// ARM's message.
    pub message: String,
    /// `Retry-After`, if sent.
    pub retry_after: Option<Duration>,
    /// What to do about it.
    pub class: ErrorClass,
}

impl std::fmt::Display for ArmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            write!(f, "{}: {}: {}", self.operation, self.code, self.message)
        } else {
            write!(
                f,
                "{}: HTTP {} {}: {}",
                self.operation, self.status, self.code, self.message
            )
        }
    }
}

impl ArmError {
    /// The provider-level error, with a fix for the failures an operator must act on.
    pub fn into_provider_error(self) -> ProviderError {
        match self.class {
            ErrorClass::Permanent | ErrorClass::NotFound => ProviderError::Permanent {
                fix: fix_for(&self),
                message: format!("HTTP {} {}: {}", self.status, self.code, self.message),
                operation: self.operation,
            },
            _ => ProviderError::Transient {
                message: if self.status == 0 {
                    format!("{}: {}", self.code, self.message)
                } else {
                    format!("HTTP {} {}: {}", self.status, self.code, self.message)
                },
                operation: self.operation,
                retry_after: self.retry_after,
            },
        }
    }
}

fn fix_for(e: &ArmError) -> String {
    match e.code.as_str() {
        "AuthorizationFailed" | "LinkedAuthorizationFailed" => {
            "grant the node's managed identity the action named in the message at that scope (deploy/azure holds the role definition); `cloudha selftest` lists every missing action".into()
        }
        "ResourceNotFound" | "NotFound" | "ResourceGroupNotFound" | "ParentResourceNotFound" => {
            "check the resource id in [provider.azure] / [[route]] (subscription, resource group and name)".into()
        }
        "SubscriptionNotFound" | "InvalidAuthenticationTokenTenant" => {
            "the identity's token is for another tenant or subscription; check provider.azure ids and the identity assignment".into()
        }
        "PrivateIPAddressNotInSubnet" | "PrivateIPAddressInReservedRange" => {
            "pick a floating IP inside the NICs' subnet and outside Azure's reserved first four and last addresses".into()
        }
        PEER_NIC_MISMATCH => {
            "correct provider.azure.peer_nic to the peer VM's LAN NIC (the message names the NIC that holds the address), or remove the address from the NIC that holds it; `cloudha selftest` checks the pair's NICs".into()
        }
        "IpConfigDeleteNotSupported" => {
            "the floating IP is the NIC's primary address; make it a secondary ipConfiguration".into()
        }
        _ => "read the ARM message above; the request was refused as malformed, retrying cannot help".into(),
    }
}

/// A successful ARM answer.
#[derive(Debug, Clone)]
pub struct ArmResponse {
    /// HTTP status.
    pub status: u16,
    /// The JSON body (`Null` when empty).
    pub body: Value,
    /// `Azure-AsyncOperation` header.
    pub async_operation: Option<String>,
    /// `Location` header.
    pub location: Option<String>,
    /// `Retry-After`.
    pub retry_after: Option<Duration>,
    /// `ETag` header (NRP also puts it in the body).
    pub etag: Option<String>,
}

/// The HTTP side of the provider: one client, the token, the write budget.
#[derive(Debug, Clone)]
pub struct ArmClient {
    http: reqwest::Client,
    endpoint: String,
    token: Arc<TokenSource>,
    writes: Arc<Budget>,
    reads: Arc<Budget>,
}

/// Counts the calls of one takeover (or observation) and reports each to the progress channel.
#[derive(Debug, Clone)]
pub struct CallLog {
    progress: ProgressReporter,
    counts: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl CallLog {
    /// A log reporting to `progress`.
    pub fn new(progress: ProgressReporter) -> Self {
        Self {
            progress,
            counts: Arc::default(),
        }
    }

    /// The progress channel (for operations and notes).
    pub fn progress(&self) -> &ProgressReporter {
        &self.progress
    }

    fn record(&self, operation: &str, status: u16, write: bool, duration: Duration) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(operation.to_string()).or_insert(0) += 1;
        }
        self.progress
            .api_call_timed(operation, status, write, duration);
    }

    /// Calls made so far, by operation.
    pub fn counts(&self) -> BTreeMap<String, u32> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl ArmClient {
    /// A client for `endpoint` (e.g. `https://management.azure.com`).
    pub fn new(endpoint: &str, token: Arc<TokenSource>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("cloudha/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            writes: Arc::new(Budget::arm_writes()),
            reads: Arc::new(Budget::arm_reads()),
        })
    }

    /// The token source (health checks use it directly).
    pub fn token(&self) -> &Arc<TokenSource> {
        &self.token
    }

    /// The URL of a resource id with an api-version.
    pub fn url(&self, resource_id: &str, api_version: &str) -> String {
        format!("{}{}?api-version={api_version}", self.endpoint, resource_id)
    }

    /// GET a resource.
    pub async fn get(
        &self,
        log: &CallLog,
        operation: &str,
        resource_id: &str,
        api_version: &str,
    ) -> Result<ArmResponse, ArmError> {
        let url = self.url(resource_id, api_version);
        self.read(log, operation, &url).await
    }

    /// GET a resource only if a spare read token is there (None otherwise): never waits for
    /// the bucket, never eats into the reserve.
    async fn get_if_spare(
        &self,
        log: &CallLog,
        operation: &str,
        resource_id: &str,
        api_version: &str,
    ) -> Option<Result<ArmResponse, ArmError>> {
        if !self.reads.try_take_spare(WATCH_READ_RESERVE) {
            return None;
        }
        let url = self.url(resource_id, api_version);
        Some(
            self.request(log, operation, Method::GET, &url, None, None)
                .await,
        )
    }

    /// PUT (or POST) a body, optionally with `If-Match`, paced by our copy of the write bucket;
    /// while it is empty, writes of a higher `priority` go first.
    #[allow(clippy::too_many_arguments)]
    pub async fn write(
        &self,
        log: &CallLog,
        operation: &str,
        method: Method,
        url: &str,
        body: &Value,
        if_match: Option<&str>,
        priority: Priority,
    ) -> Result<ArmResponse, ArmError> {
        self.writes.acquire(priority).await;
        self.request(log, operation, method, url, Some(body), if_match)
            .await
    }

    /// GET a URL, paced by our copy of the read bucket (first come, first served).
    async fn read(
        &self,
        log: &CallLog,
        operation: &str,
        url: &str,
    ) -> Result<ArmResponse, ArmError> {
        self.reads.acquire(0).await;
        self.request(log, operation, Method::GET, url, None, None)
            .await
    }

    /// One request whose token the caller has taken from the bucket. A 401 drops the cached
    /// token so the next request fetches a fresh one.
    async fn request(
        &self,
        log: &CallLog,
        operation: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<ArmResponse, ArmError> {
        let token = self.token.token().await.map_err(|e| ArmError {
            operation: operation.to_string(),
            status: 0,
            code: "ManagedIdentityToken".into(),
            message: format!("{e}; check that the VM has the managed identity assigned (and identity_client_id for a user-assigned one)"),
            retry_after: None,
            class: ErrorClass::Transient,
        })?;
        let write = method != Method::GET;
        let (budget, remaining_header) = if write {
            (&self.writes, "x-ms-ratelimit-remaining-subscription-writes")
        } else {
            (&self.reads, "x-ms-ratelimit-remaining-subscription-reads")
        };
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .header(header::ACCEPT, "application/json");
        if let Some(tag) = if_match {
            request = request.header(header::IF_MATCH, tag);
        }
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let started = Instant::now();
        let response = request.send().await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                log.record(operation, 0, write, started.elapsed());
                return Err(transport_error(operation, &e));
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await;
        log.record(operation, status.as_u16(), write, started.elapsed());
        let text = text.map_err(|e| transport_error(operation, &e))?;
        if let Some(left) = header_u32(&headers, remaining_header) {
            budget.observe_remaining(left);
        }
        let retry_after = header_str(&headers, "retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
        };
        if status.is_success() {
            return Ok(ArmResponse {
                status: status.as_u16(),
                body,
                async_operation: header_str(&headers, "azure-asyncoperation"),
                location: header_str(&headers, "location"),
                retry_after,
                etag: header_str(&headers, "etag"),
            });
        }
        if status == StatusCode::UNAUTHORIZED {
            self.token.invalidate().await;
        }
        let (code, message) = cloud_error(&body);
        debug!(operation, status = status.as_u16(), %code, "ARM refused");
        Err(ArmError {
            operation: operation.to_string(),
            status: status.as_u16(),
            class: classify(status, &code, &body),
            code,
            message,
            retry_after,
        })
    }

    /// Follow a long-running operation until it ends: `Azure-AsyncOperation` (else `Location`),
    /// honouring `Retry-After`. `Ok(())` when it succeeded, or as soon as `watch`'s resource
    /// shows the change applied: between polls further apart than a second the resource is read
    /// once a second on spare read tokens (the caller reads it back to verify either way).
    pub async fn wait_for_operation(
        &self,
        log: &CallLog,
        operation: &str,
        accepted: &ArmResponse,
        deadline: Instant,
        watch: Option<&Watch<'_>>,
    ) -> Result<(), ArmError> {
        let poll_op = format!("{operation}.poll");
        let watch_op = format!("{operation}.watch");
        let (url, via_location) = match (&accepted.async_operation, &accepted.location) {
            (Some(url), _) => (url.clone(), false),
            (None, Some(url)) if accepted.status == 202 => (url.clone(), true),
            // 200/201 without a status URL: done synchronously.
            _ => return Ok(()),
        };
        let poll_wait = |r: Option<Duration>| r.unwrap_or(DEFAULT_POLL).max(MIN_POLL);
        let mut wait = poll_wait(accepted.retry_after);
        loop {
            sleep_within(wait, deadline, &poll_op)?;
            let poll_at = tokio::time::Instant::now() + wait;
            if let Some(watch) = watch {
                while poll_at - tokio::time::Instant::now() > WATCH_EVERY {
                    tokio::time::sleep(WATCH_EVERY).await;
                    let read = self
                        .get_if_spare(log, &watch_op, watch.id, watch.api_version)
                        .await;
                    if let Some(Ok(r)) = read {
                        if (watch.applied)(&r.body) {
                            return Ok(());
                        }
                    }
                }
            }
            tokio::time::sleep_until(poll_at).await;
            let answer = match self.read(log, &poll_op, &url).await {
                Ok(a) => a,
                Err(e)
                    if matches!(e.class, ErrorClass::Transient | ErrorClass::Unauthenticated) =>
                {
                    wait = poll_wait(e.retry_after);
                    continue;
                }
                Err(e) => return Err(e),
            };
            wait = poll_wait(answer.retry_after);
            if via_location {
                if answer.status == 202 {
                    continue;
                }
                return Ok(());
            }
            match answer.body.get("status").and_then(Value::as_str) {
                Some("Succeeded") => return Ok(()),
                Some(s @ ("Failed" | "Canceled")) => {
                    let (code, message) = cloud_error(&answer.body);
                    return Err(ArmError {
                        operation: operation.to_string(),
                        status: answer.status,
                        code: if code.is_empty() { s.to_string() } else { code },
                        message: format!("operation {s}: {message}"),
                        retry_after: None,
                        // A failed NIC update was rolled back; the caller re-reads and retries.
                        class: ErrorClass::Transient,
                    });
                }
                _ => continue,
            }
        }
    }
}

/// Err if sleeping `wait` would pass the deadline.
pub fn sleep_within(wait: Duration, deadline: Instant, operation: &str) -> Result<(), ArmError> {
    if Instant::now() + wait > deadline {
        return Err(ArmError {
            operation: operation.to_string(),
            status: 0,
            code: "DeadlineExceeded".into(),
            message: "the failover deadline passes before the operation can finish".into(),
            retry_after: None,
            class: ErrorClass::Transient,
        });
    }
    Ok(())
}

fn transport_error(operation: &str, e: &reqwest::Error) -> ArmError {
    let code = if e.is_timeout() {
        "Timeout"
    } else if e.is_connect() {
        "ConnectionFailed"
    } else {
        "TransportError"
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ArmError {
        operation: operation.to_string(),
        status: 0,
        code: code.into(),
        message,
        retry_after: None,
        class: ErrorClass::Transient,
    }
}

/// `(code, message)` of ARM's `{"error":{"code","message","details":[...]}}` (or an operation's
/// status document, which has the same `error`).
pub fn cloud_error(body: &Value) -> (String, String) {
    let error = body.get("error").unwrap_or(body);
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(details) = error.get("details").and_then(Value::as_array) {
        for d in details {
            if let Some(code) = d.get("code").and_then(Value::as_str) {
                message.push_str(&format!(" [{code}]"));
            }
        }
    }
    if code.is_empty() && message.is_empty() {
        if let Value::String(s) = body {
            message = s.chars().take(200).collect();
        }
    }
    (code, message)
}

fn detail_codes(body: &Value) -> Vec<&str> {
    body.pointer("/error/details")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(|x| x.get("code").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// Decide what an error answer means. Codes are from the official REST error docs and public
/// reports of real answers (see the emulator's README).
pub fn classify(status: StatusCode, code: &str, body: &Value) -> ErrorClass {
    let details = detail_codes(body);
    match status.as_u16() {
        404 => {
            if matches!(code, "InvalidResourceType" | "NoRegisteredProviderFound") {
                ErrorClass::FeatureUnavailable
            } else {
                ErrorClass::NotFound
            }
        }
        412 => ErrorClass::PreconditionFailed,
        401 => ErrorClass::Unauthenticated,
        409 | 429 | 408 => ErrorClass::Transient,
        500..=599 => ErrorClass::Transient,
        400 => match code {
            "PrivateIPAddressInUse" | "PrivateIPAddressIsAllocated" | "PublicIPAddressInUse" => {
                ErrorClass::AddressInUse
            }
            "SubscriptionNotRegisteredForFeature"
            | "FeatureNotSupported"
            | "InvalidApiVersionParameter"
            | "NoRegisteredProviderFound"
            | "InvalidResourceType" => ErrorClass::FeatureUnavailable,
            "RetryableError" | "AnotherOperationInProgress" => ErrorClass::Transient,
            _ if details.contains(&"RetryableErrorDueToAnotherOperation") => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        },
        _ => ErrorClass::Permanent,
    }
}

fn header_str(headers: &header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn header_u32(headers: &header::HeaderMap, name: &str) -> Option<u32> {
    header_str(headers, name).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_the_answers_a_move_meets() {
        let none = Value::Null;
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, "PrivateIPAddressInUse", &none),
            ErrorClass::AddressInUse
        );
        assert_eq!(
            classify(
                StatusCode::BAD_REQUEST,
                "PrivateIPAddressIsAllocated",
                &none
            ),
            ErrorClass::AddressInUse
        );
        assert_eq!(
            classify(StatusCode::CONFLICT, "AnotherOperationInProgress", &none),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, "RetryableError", &none),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(StatusCode::PRECONDITION_FAILED, "PreconditionFailed", &none),
            ErrorClass::PreconditionFailed
        );
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, "", &none),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(StatusCode::FORBIDDEN, "AuthorizationFailed", &none),
            ErrorClass::Permanent
        );
        assert_eq!(
            classify(
                StatusCode::BAD_REQUEST,
                "SubscriptionNotRegisteredForFeature",
                &none
            ),
            ErrorClass::FeatureUnavailable
        );
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, "SubnetIsRequired", &none),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn reads_the_cloud_error_envelope_with_details() {
        let body = json!({"error": {"code": "RetryableError", "message": "A retryable error occurred.",
            "details": [{"code": "RetryableErrorDueToAnotherOperation", "message": "busy"}]}});
        let (code, message) = cloud_error(&body);
        assert_eq!(code, "RetryableError");
        assert!(message.contains("[RetryableErrorDueToAnotherOperation]"));
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, "Whatever", &body),
            ErrorClass::Transient
        );
    }

    #[test]
    fn permanent_errors_carry_a_fix() {
        let e = ArmError {
            operation: "nic.put".into(),
            status: 403,
            code: "AuthorizationFailed".into(),
            message: "does not have authorization to perform action 'Microsoft.Network/networkInterfaces/write'".into(),
            retry_after: None,
            class: ErrorClass::Permanent,
        };
        match e.into_provider_error() {
            ProviderError::Permanent { fix, message, .. } => {
                assert!(fix.contains("managed identity"));
                assert!(message.contains("networkInterfaces/write"));
            }
            other => panic!("expected permanent, got {other:?}"),
        }
    }
}
