//! [`JwksFetcher`]: verification of foreign tokens with cached, fetched keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::cache::{Cached, Plan, Slot};
use crate::config::FetcherConfig;
use crate::error::{BuildError, VerifyError};
use crate::http::Http;
use crate::token;

/// Where an issuer's keys are: an explicit JWKS URL, or OIDC discovery at
/// `{issuer without trailing slash}/.well-known/openid-configuration` (its `jwks_uri`; the
/// document's `issuer` must equal the issuer).
///
/// Locations come from configuration, never from a token: the cache keeps one entry per
/// location it has seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JwksLocation {
    /// The JWKS document's URL.
    Url(String),
    /// OIDC discovery of the issuer's `jwks_uri`.
    Discovery {
        /// The issuer, exactly as its discovery document and its tokens name it.
        issuer: String,
    },
}

/// Counters of the HTTP fetches (JWKS and discovery documents) since the fetcher was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchCounts {
    /// Fetches that returned a usable document.
    pub fetched: u64,
    /// Fetches that failed: timeout, connection error, non-2xx status, body too large,
    /// unparsable or wrong document, or a URL [`crate::check_fetch_url`] refuses.
    pub failed: u64,
}

/// Fetches, caches and uses issuers' JWKS to verify their tokens. `Send + Sync`; share one
/// as `Arc<JwksFetcher>`. See the crate documentation for the caching rules.
pub struct JwksFetcher {
    http: Http,
    slots: Mutex<HashMap<JwksLocation, Arc<Slot>>>,
}

impl std::fmt::Debug for JwksFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksFetcher")
            .field("config", self.http.config())
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl JwksFetcher {
    /// A fetcher with `config`.
    ///
    /// # Errors
    /// [`BuildError`] when `extra_root_pem` holds no usable certificate, the settings
    /// contradict each other, or the HTTP client cannot be built.
    pub fn new(config: FetcherConfig) -> Result<Self, BuildError> {
        Ok(Self {
            http: Http::new(config)?,
            slots: Mutex::default(),
        })
    }

    /// Verifies compact JWS `token` as issued by `issuer` with keys from `location` at `now`
    /// (unix seconds) with `leeway` seconds of clock skew. Returns the verified claims object.
    ///
    /// The header's `alg` must be RS256, ES256 or EdDSA and its `kid` must name a published
    /// key fitting that algorithm; `iss` must equal `issuer`; `exp` is required; `nbf` and
    /// `iat` are checked when present. `aud` is not checked: see [`crate::audiences`].
    ///
    /// # Errors
    /// The [`VerifyError`] saying why the token is refused (for logs; callers answer every
    /// one the same way).
    pub async fn verify(
        &self,
        token: &str,
        issuer: &str,
        location: &JwksLocation,
        now: i64,
        leeway: i64,
    ) -> Result<Map<String, Value>, VerifyError> {
        let header = token::parse_header(token)?;
        let cached = self.keys_for(location, &header.kid).await?;
        let key = cached.keys.find(&header.kid, header.alg)?;
        let claims = token::verify_signature(token, key, header.alg)?;
        token::check_claims(&claims, issuer, now, leeway)?;
        Ok(claims)
    }

    /// The fetch counters (monotonically increasing).
    pub fn counts(&self) -> FetchCounts {
        self.http.counts()
    }

    /// The slot of `location`, made on first use.
    fn slot(&self, location: &JwksLocation) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(location) {
            return Arc::clone(slot);
        }
        let slot = Arc::new(Slot::default());
        slots.insert(location.clone(), Arc::clone(&slot));
        slot
    }

    /// The keys to look `kid` up in: cached ones when the rules say so, else freshly fetched
    /// ones (one fetch at a time per location), else stale ones.
    async fn keys_for(
        &self,
        location: &JwksLocation,
        kid: &str,
    ) -> Result<Arc<Cached>, VerifyError> {
        let config = self.http.config();
        let slot = self.slot(location);
        let (plan, seen) = slot.plan(kid, Instant::now(), config);
        if let Plan::Use(cached) = plan {
            return cached.ok_or(VerifyError::KeysUnavailable);
        }
        let _fetching = slot.fetch_lock().lock().await;
        let (plan, generation) = slot.plan(kid, Instant::now(), config);
        // Someone else fetched while this caller waited: use their outcome, do not fetch again.
        if generation == seen
            && let Plan::Fetch { unknown_kid } = plan
        {
            slot.fetch_started(unknown_kid, Instant::now());
            let fetched = self.http.fetch_keys(location).await;
            let outcome = fetched.map(|fetched| {
                tracing::debug!(?location, keys = fetched.keys.usable(), "JWKS cached");
                (fetched.keys, fetched.ttl)
            });
            slot.fetch_done(outcome, Instant::now());
        }
        slot.cached().ok_or(VerifyError::KeysUnavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}

    #[test]
    fn fetcher_and_its_futures_are_send_and_sync() {
        let fetcher = JwksFetcher::new(FetcherConfig::default()).unwrap();
        assert_send_sync(&fetcher);
        let location = JwksLocation::Url("https://issuer.example/jwks".into());
        let future = fetcher.verify("a.b.c", "i", &location, 0, 0);
        assert_send_sync(&future);
    }

    #[test]
    fn bad_extra_roots_are_refused() {
        let config = FetcherConfig {
            extra_root_pem: Some(b"not a certificate".to_vec()),
            ..FetcherConfig::default()
        };
        assert!(matches!(
            JwksFetcher::new(config),
            Err(BuildError::RootCertificates(_))
        ));
    }

    #[tokio::test]
    async fn refused_urls_count_as_failed_fetches() {
        let fetcher = JwksFetcher::new(FetcherConfig::default()).unwrap();
        let location = JwksLocation::Url("http://issuer.example/jwks".into());
        let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln";
        let err = fetcher
            .verify(token, "i", &location, 0, 0)
            .await
            .unwrap_err();
        assert_eq!(err, VerifyError::KeysUnavailable);
        assert_eq!(
            fetcher.counts(),
            FetchCounts {
                fetched: 0,
                failed: 1
            }
        );
        // Backing off: no new attempt right away.
        let err = fetcher
            .verify(token, "i", &location, 0, 0)
            .await
            .unwrap_err();
        assert_eq!(err, VerifyError::KeysUnavailable);
        assert_eq!(fetcher.counts().failed, 1);
    }
}
