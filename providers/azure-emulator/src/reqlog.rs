//! The request log tests read to assert exact call sequences.

use serde::Serialize;

/// One request as the emulator saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoggedRequest {
    /// Arrival order, from 0.
    pub seq: u64,
    /// Upper-case method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// `If-Match` header, if sent.
    pub if_match: Option<String>,
    /// `If-None-Match` header, if sent.
    pub if_none_match: Option<String>,
    /// Whether an `Authorization` header was present (the token itself is not logged).
    pub authorization_present: bool,
    /// `Metadata` header (IMDS), if sent.
    pub metadata_header: Option<String>,
    /// Whether an `X-IDENTITY-HEADER` (App Service managed identity) was present.
    pub identity_header_present: bool,
    /// Request body as text.
    pub body: String,
    /// Response status (0 while the call is still being processed).
    pub status: u16,
    /// Label of the listener the call came in on ([`crate::Emulator::serve_as`]), e.g. the VM
    /// whose network namespace it serves: tells two clients on the same loopback address apart.
    pub caller: Option<String>,
    /// Arrival on the machine's wall clock (Unix ms), not the emulator's clock: comparable with
    /// timestamps other processes take (a daemon's decision time), as benchmarks do.
    pub at_unix_ms: u64,
}

impl LoggedRequest {
    /// Whether the call was `method` on a path containing `path_contains` (case-insensitive).
    pub fn is(&self, method: &str, path_contains: &str) -> bool {
        self.method.eq_ignore_ascii_case(method)
            && self
                .path
                .to_ascii_lowercase()
                .contains(&path_contains.to_ascii_lowercase())
    }

    /// The body parsed as JSON (`Null` if empty or not JSON).
    pub fn json_body(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}
