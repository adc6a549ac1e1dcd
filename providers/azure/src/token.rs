//! The managed-identity token for ARM, cached and refreshed ahead of expiry.
//!
//! The token comes from `azure_identity`'s `ManagedIdentityCredential` (IMDS on a VM; the App
//! Service variables `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` where those are set). A background
//! task renews it well before it expires, so a failover finds a valid token in the cache and
//! never waits on the identity endpoint.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use tokio::sync::Mutex;
use tracing::{debug, warn};

/// A cached token is used while it has at least this much life left.
const MIN_REMAINING: Duration = Duration::from_secs(120);
/// The background task renews when this much life is left. `azure_identity` serves its own cached
/// token until 300 s before expiry, so renewing inside that window really fetches a new one.
const RENEW_AHEAD: Duration = Duration::from_secs(240);
/// Wait before retrying a failed background renewal.
const RENEW_RETRY: Duration = Duration::from_secs(10);

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("managed identity token: {0}")]
pub struct TokenError(pub String);

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    expires_unix: u64,
}

/// A cached ARM token source.
pub struct TokenSource {
    credential: Arc<dyn TokenCredential>,
    scope: String,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenSource {
    /// A token source for `resource` (e.g. `https://management.azure.com/`) using the system-assigned
    /// identity, or the user-assigned one with `client_id`.
    pub fn managed_identity(resource: &str, client_id: Option<&str>) -> Result<Self, TokenError> {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: client_id.map(|id| UserAssignedId::ClientId(id.to_string())),
            ..Default::default()
        };
        let credential =
            ManagedIdentityCredential::new(Some(options)).map_err(|e| TokenError(e.to_string()))?;
        Ok(Self::with_credential(credential, resource))
    }

    /// A token source over any credential (the seam the tests use for failure cases).
    pub fn with_credential(credential: Arc<dyn TokenCredential>, resource: &str) -> Self {
        Self {
            credential,
            scope: format!("{}/.default", resource.trim_end_matches('/')),
            cached: Mutex::new(None),
        }
    }

    /// A valid token: the cached one while it has life left, else a fresh one.
    pub async fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.expires_unix > unix_now() + MIN_REMAINING.as_secs() {
                return Ok(c.token.clone());
            }
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Drop the cached token (ARM said it is invalid or expired).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<Cached, TokenError> {
        let token = self
            .credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(|e| TokenError(error_chain(&e)))?;
        let expires_unix = u64::try_from(token.expires_on.unix_timestamp()).unwrap_or(0);
        debug!(expires_unix, "managed identity token obtained");
        Ok(Cached {
            token: token.token.secret().to_string(),
            expires_unix,
        })
    }

    /// Seconds the cached token has left, if one is cached.
    pub async fn remaining(&self) -> Option<Duration> {
        let cached = self.cached.lock().await;
        cached
            .as_ref()
            .map(|c| Duration::from_secs(c.expires_unix.saturating_sub(unix_now())))
    }

    /// Keep the cache warm until the source is dropped.
    pub fn spawn_renewal(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(source) = weak.upgrade() else { return };
                let wait = match source.renew_if_due().await {
                    Ok(left) => left.saturating_sub(RENEW_AHEAD).max(RENEW_RETRY),
                    Err(e) => {
                        warn!("renewing the managed identity token failed (retrying in {RENEW_RETRY:?}): {e}");
                        RENEW_RETRY
                    }
                };
                drop(source);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Renew when less than `RENEW_AHEAD` is left; returns the life left afterwards.
    async fn renew_if_due(&self) -> Result<Duration, TokenError> {
        let mut cached = self.cached.lock().await;
        let left = cached
            .as_ref()
            .map(|c| c.expires_unix.saturating_sub(unix_now()))
            .unwrap_or(0);
        if left > RENEW_AHEAD.as_secs() {
            return Ok(Duration::from_secs(left));
        }
        let fresh = self.fetch().await?;
        let left = fresh.expires_unix.saturating_sub(unix_now());
        *cached = Some(fresh);
        Ok(Duration::from_secs(left))
    }
}

/// The error and its sources on one line: the credential's own text is often one level down.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
