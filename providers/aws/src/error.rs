//! Turning EC2 failures into [`ProviderError`]s that tell the daemon whether to retry and tell
//! the operator what to change.
//!
//! The SDK's error types are reduced to a plain [`Failure`] first, so the classification is a pure
//! function of (operation, HTTP status, EC2 error code) and is tested without building SDK errors.

use std::error::Error as StdError;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use cloudha_provider_core::ProviderError;

/// Where the policy with every action cloudha needs is written down.
const POLICY_HINT: &str = "providers/aws/README.md lists the policy";

/// What went wrong with one HTTP attempt, independent of the SDK's error types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// How the attempt failed.
    pub kind: FailureKind,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// The EC2 error code (`RequestLimitExceeded`, `UnauthorizedOperation`, ...), when one arrived.
    pub code: Option<String>,
    /// What EC2 (or the transport) said.
    pub message: String,
}

/// The ways an attempt can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// EC2 answered with an error.
    Service,
    /// No answer in time (connect, or the whole attempt).
    Timeout,
    /// The connection failed or the answer could not be read.
    Transport,
    /// No credentials were found at all, or their configuration is broken.
    NoCredentials,
    /// The credentials source (IMDS, STS) failed for now.
    CredentialsUnavailable,
    /// The request could not be built or sent as configured (a bad endpoint URL).
    Misconfigured,
}

impl Failure {
    /// Reduce an SDK error to what the classification needs.
    pub(crate) fn from_sdk<E>(error: &SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        let status = error.raw_response().map(|r| r.status().as_u16());
        let kind = match error {
            SdkError::ServiceError(_) => FailureKind::Service,
            SdkError::TimeoutError(_) => FailureKind::Timeout,
            SdkError::DispatchFailure(d) if d.is_timeout() => FailureKind::Timeout,
            SdkError::DispatchFailure(d) if d.is_user() => FailureKind::Misconfigured,
            SdkError::ConstructionFailure(_) => {
                credentials_kind(error).unwrap_or(FailureKind::Misconfigured)
            }
            // Dispatch (I/O) failures, unreadable responses, and kinds added by later SDKs.
            _ => FailureKind::Transport,
        };
        let message = match (kind, error.code()) {
            (FailureKind::Service, Some(code)) => {
                let text = error.message().unwrap_or("no message");
                format!("{code}: {text}")
            }
            _ => DisplayErrorContext(error).to_string(),
        };
        Failure {
            kind,
            status,
            code: error.code().map(str::to_string),
            message,
        }
    }

    /// An attempt that got no answer within `limit`.
    pub(crate) fn timed_out(limit: Duration) -> Self {
        Failure {
            kind: FailureKind::Timeout,
            status: None,
            code: None,
            message: format!("no answer within {} ms", limit.as_millis()),
        }
    }

    /// A failure to resolve credentials, from the credentials provider itself.
    pub(crate) fn from_credentials(error: &CredentialsError) -> Self {
        Failure {
            kind: credentials_error_kind(error),
            status: None,
            code: None,
            message: DisplayErrorContext(error).to_string(),
        }
    }

    /// Whether EC2 said `code`.
    pub(crate) fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// The credentials failure inside an SDK error that failed before anything was sent.
fn credentials_kind(error: &(dyn StdError + 'static)) -> Option<FailureKind> {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(credentials_error_kind(c));
        }
        source = e.source();
    }
    None
}

fn credentials_error_kind(error: &CredentialsError) -> FailureKind {
    match error {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            FailureKind::NoCredentials
        }
        // Timeouts and errors of IMDS or STS: the instance role is there, its source hiccuped.
        _ => FailureKind::CredentialsUnavailable,
    }
}

/// A failure classified for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Classified {
    /// The error to return (or to retry on, when it is transient).
    pub error: ProviderError,
    /// Whether EC2 throttled the call: back off longer than after a 5xx.
    pub throttled: bool,
}

/// EC2 error codes that mean "too many requests": wait longer, then retry.
const THROTTLING: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
];

/// EC2 error codes for a passing condition on AWS's side; some arrive with a 4xx status.
const TRANSIENT: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "IncorrectState",
    "RequestExpired",
    "RequestTimeout",
    "RequestTimeoutException",
    "ExpiredToken",
    "IDPCommunicationError",
];

/// Decide whether `failure` of `operation` (an EC2 action name) can pass by retrying.
pub(crate) fn classify(operation: &str, failure: &Failure) -> Classified {
    let transient = |throttled: bool| Classified {
        error: ProviderError::Transient {
            operation: operation.to_string(),
            message: describe(failure),
            retry_after: None,
        },
        throttled,
    };
    let permanent = |fix: String| Classified {
        error: ProviderError::Permanent {
            operation: operation.to_string(),
            message: describe(failure),
            fix,
        },
        throttled: false,
    };
    match failure.kind {
        FailureKind::Timeout | FailureKind::Transport | FailureKind::CredentialsUnavailable => {
            transient(false)
        }
        FailureKind::NoCredentials => permanent(
            "attach an instance profile (IAM role) to the instance, or provide AWS credentials in the environment"
                .to_string(),
        ),
        FailureKind::Misconfigured => permanent(
            "check provider.aws.endpoint (or AWS_ENDPOINT_URL_EC2): it must be an http(s) URL of the EC2 API"
                .to_string(),
        ),
        FailureKind::Service => {
            let code = failure.code.as_deref().unwrap_or("");
            if THROTTLING.contains(&code) || failure.status == Some(429) {
                transient(true)
            } else if TRANSIENT.contains(&code) || failure.status.is_some_and(|s| s >= 500) {
                transient(false)
            } else {
                permanent(fix_for(operation, code))
            }
        }
    }
}

fn describe(failure: &Failure) -> String {
    match failure.status {
        Some(status) => format!("{} (HTTP {status})", failure.message),
        None => failure.message.clone(),
    }
}

/// One sentence telling the operator what to change for an EC2 error that retrying cannot fix.
fn fix_for(operation: &str, code: &str) -> String {
    match code {
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => {
            format!("grant ec2:{operation} to the instance role ({POLICY_HINT})")
        }
        "AuthFailure" | "InvalidClientTokenId" | "SignatureDoesNotMatch" | "MissingAuthenticationToken"
        | "UnrecognizedClientException" => {
            "check the credentials: attach an instance profile (IAM role) to the instance and remove stale AWS_* credentials from the environment"
                .to_string()
        }
        "OptInRequired" | "Blocked" | "PendingVerification" => {
            "enable EC2 for this account in the configured region".to_string()
        }
        "PrivateIpAddressLimitExceeded" => {
            "the ENI has no room for more secondary IPs: use an instance type with more IPs per ENI, or fewer floating IPs"
                .to_string()
        }
        "Resource.AlreadyAssociated" => {
            "the Elastic IP is associated elsewhere and reassociation was refused: make sure nothing else manages it"
                .to_string()
        }
        "RouteAlreadyExists" | "InvalidRoute.NotFound" => {
            "check the [[route]] entries: each prefix must be a route cloudha may replace".to_string()
        }
        "InvalidParameterValue" | "InvalidParameterCombination" | "InvalidParameter"
        | "MissingParameter" | "InvalidIPAddress.InUse" | "InvalidAddress" => {
            "check that every floating IP lies in the subnet of both ENIs and is no ENI's primary address"
                .to_string()
        }
        c if c.starts_with("InvalidNetworkInterfaceID") => {
            "set provider.aws.own_eni and provider.aws.peer_eni to ENIs (eni-...) that exist in the configured region"
                .to_string()
        }
        c if c.starts_with("InvalidRouteTableID") => {
            "set each [[route]] table to a route table (rtb-...) that exists in the configured region"
                .to_string()
        }
        c if c.starts_with("InvalidAllocationID") || c.starts_with("InvalidAddress") => {
            "set each Elastic IP allocation id to an Elastic IP (eipalloc-...) allocated in the configured region"
                .to_string()
        }
        "" => format!("see the HTTP status and message of {operation} above"),
        other => format!("look up EC2 error code {other} for {operation} and fix what it names"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> Failure {
        Failure {
            kind: FailureKind::Service,
            status: Some(status),
            code: Some(code.to_string()),
            message: format!("{code}: something"),
        }
    }

    fn fix(c: &Classified) -> &str {
        match &c.error {
            ProviderError::Permanent { fix, .. } => fix,
            other => panic!("expected permanent, got {other:?}"),
        }
    }

    #[test]
    fn throttling_is_transient_and_marked_throttled_with_either_status() {
        for status in [400, 503] {
            let c = classify(
                "AssignPrivateIpAddresses",
                &service(status, "RequestLimitExceeded"),
            );
            assert!(c.throttled);
            assert!(c.error.is_retryable());
        }
        assert!(classify("X", &service(429, "Whatever")).throttled);
    }

    #[test]
    fn server_errors_are_transient_but_not_throttling() {
        let c = classify("ReplaceRoute", &service(500, "InternalError"));
        assert!(c.error.is_retryable() && !c.throttled);
        let c = classify("ReplaceRoute", &service(502, ""));
        assert!(c.error.is_retryable());
        let c = classify("ReplaceRoute", &service(400, "IncorrectState"));
        assert!(c.error.is_retryable());
    }

    #[test]
    fn missing_permission_names_the_action_to_grant() {
        let c = classify(
            "AssignPrivateIpAddresses",
            &service(403, "UnauthorizedOperation"),
        );
        assert!(!c.error.is_retryable());
        assert!(
            fix(&c).contains("grant ec2:AssignPrivateIpAddresses"),
            "{}",
            fix(&c)
        );
        assert!(c.error.to_string().contains("HTTP 403"), "{}", c.error);
    }

    #[test]
    fn unknown_resources_name_the_setting() {
        let c = classify(
            "DescribeNetworkInterfaces",
            &service(400, "InvalidNetworkInterfaceID.NotFound"),
        );
        assert!(fix(&c).contains("provider.aws.own_eni"));
        let c = classify(
            "DescribeRouteTables",
            &service(400, "InvalidRouteTableID.NotFound"),
        );
        assert!(fix(&c).contains("[[route]]"));
        let c = classify(
            "DescribeAddresses",
            &service(400, "InvalidAllocationID.NotFound"),
        );
        assert!(fix(&c).contains("eipalloc-"));
    }

    #[test]
    fn unknown_client_errors_are_permanent_and_say_so() {
        let c = classify("CreateRoute", &service(400, "SomethingNew"));
        assert!(!c.error.is_retryable());
        assert!(fix(&c).contains("SomethingNew"));
    }

    #[test]
    fn transport_failures_and_timeouts_are_transient() {
        let c = classify(
            "DescribeRouteTables",
            &Failure::timed_out(Duration::from_secs(5)),
        );
        assert!(c.error.is_retryable());
        assert!(c.error.to_string().contains("5000 ms"), "{}", c.error);
        let transport = Failure {
            kind: FailureKind::Transport,
            status: None,
            code: None,
            message: "connection refused".into(),
        };
        assert!(classify("X", &transport).error.is_retryable());
    }

    #[test]
    fn credentials_missing_is_permanent_but_a_credentials_hiccup_is_not() {
        let missing = Failure {
            kind: FailureKind::NoCredentials,
            status: None,
            code: None,
            message: "no providers in chain provided credentials".into(),
        };
        let c = classify("DescribeNetworkInterfaces", &missing);
        assert!(fix(&c).contains("instance profile"));
        let hiccup = Failure {
            kind: FailureKind::CredentialsUnavailable,
            ..missing
        };
        assert!(classify("DescribeNetworkInterfaces", &hiccup)
            .error
            .is_retryable());
    }
}
