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

/// Makes a new credential: a new credential has an empty cache of its own.
type CredentialFactory = dyn Fn() -> Result<Arc<dyn TokenCredential>, TokenError> + Send + Sync;

/// A cached ARM token source.
pub struct TokenSource {
    /// The credential in use (replaced by a new one after ARM refused a token).
    credential: std::sync::Mutex<Arc<dyn TokenCredential>>,
    /// How to make a fresh credential, where one can be made.
    factory: Option<Arc<CredentialFactory>>,
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
        let make = move || -> Result<Arc<dyn TokenCredential>, TokenError> {
            let credential = ManagedIdentityCredential::new(Some(options.clone()))
                .map_err(|e| TokenError(e.to_string()))?;
            Ok(credential)
        };
        Self::with_factory(Arc::new(make), resource)
    }

    /// A token source that makes its credential with `factory`, and makes a new one (with an empty
    /// cache) whenever ARM refuses a token: `azure_identity` serves its own cached token until
    /// shortly before expiry, so dropping only our cache would get the refused token back.
    pub fn with_factory(
        factory: Arc<CredentialFactory>,
        resource: &str,
    ) -> Result<Self, TokenError> {
        let credential = factory()?;
        let mut source = Self::with_credential(credential, resource);
        source.factory = Some(factory);
        Ok(source)
    }

    /// A token source over any credential (the seam the tests use for failure cases).
    pub fn with_credential(credential: Arc<dyn TokenCredential>, resource: &str) -> Self {
        Self {
            credential: std::sync::Mutex::new(credential),
            factory: None,
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

    /// Drop every cached token (ARM said it is invalid or expired): ours, and the credential's
    /// by replacing the credential, so the next request goes to the identity endpoint.
    pub async fn invalidate(&self) {
        let mut cached = self.cached.lock().await;
        *cached = None;
        if let Some(factory) = &self.factory {
            match factory() {
                Ok(fresh) => {
                    if let Ok(mut slot) = self.credential.lock() {
                        *slot = fresh;
                    }
                }
                Err(e) => warn!("making a new managed identity credential failed: {e}"),
            }
        }
    }

    async fn fetch(&self) -> Result<Cached, TokenError> {
        let credential = match self.credential.lock() {
            Ok(c) => c.clone(),
            Err(_) => {
                return Err(TokenError(
                    "the credential is unusable (a thread panicked)".into(),
                ))
            }
        };
        let token = credential
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

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::credentials::{AccessToken, TokenRequestOptions};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Issues numbered tokens that live `life`.
    #[derive(Debug)]
    struct Counting {
        calls: AtomicU32,
        life: azure_core::time::Duration,
    }

    #[async_trait::async_trait]
    impl TokenCredential for Counting {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(AccessToken::new(
                format!("token-{n}"),
                azure_core::time::OffsetDateTime::now_utc() + self.life,
            ))
        }
    }

    fn source(life_secs: i64) -> (Arc<Counting>, Arc<TokenSource>) {
        let cred = Arc::new(Counting {
            calls: AtomicU32::new(0),
            life: azure_core::time::Duration::seconds(life_secs),
        });
        let source = Arc::new(TokenSource::with_credential(
            cred.clone(),
            "https://management.azure.com/",
        ));
        (cred, source)
    }

    #[tokio::test]
    async fn a_cached_token_is_reused_while_it_has_life_left() {
        let (cred, source) = source(3600);
        assert_eq!(source.token().await.expect("token"), "token-1");
        assert_eq!(source.token().await.expect("token"), "token-1");
        assert_eq!(cred.calls.load(Ordering::SeqCst), 1);
        source.invalidate().await;
        assert_eq!(source.token().await.expect("token"), "token-2");
    }

    #[tokio::test]
    async fn a_token_close_to_expiry_is_replaced_before_use() {
        let (cred, source) = source(60);
        source.token().await.expect("token");
        // 60 s left is under MIN_REMAINING: a failover would not be handed it.
        assert_eq!(source.token().await.expect("token"), "token-2");
        assert_eq!(cred.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_runs_in_the_background_ahead_of_expiry() {
        let (cred, source) = source(200);
        source.spawn_renewal();
        // 200 s of life is inside RENEW_AHEAD: the task fetches at once and again after RENEW_RETRY.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(cred.calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(RENEW_RETRY + Duration::from_millis(1)).await;
        assert_eq!(cred.calls.load(Ordering::SeqCst), 2);
        // The failover path finds the renewed token in the cache without a call of its own.
        assert_eq!(source.token().await.expect("token"), "token-2");
        assert_eq!(cred.calls.load(Ordering::SeqCst), 2);
        assert!(source
            .remaining()
            .await
            .is_some_and(|d| d > Duration::from_secs(150)));
        // Dropping the source ends the task.
        drop(source);
        tokio::time::sleep(RENEW_RETRY * 3).await;
        assert_eq!(cred.calls.load(Ordering::SeqCst), 2);
    }
}
