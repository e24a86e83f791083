//! The HTTP side: one rustls client (no redirects, no proxy, a whole-request timeout),
//! bounded bodies, OIDC discovery, and the fetch counters.

use std::error::Error as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, CACHE_CONTROL};
use reqwest::{Certificate, Client, redirect};
use serde::Deserialize;

use crate::config::FetcherConfig;
use crate::error::BuildError;
use crate::fetch_url::parse_fetch_url;
use crate::keys::KeySet;
use crate::{FetchCounts, JwksLocation};

/// The well-known path of an OIDC discovery document, appended to the issuer.
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// What a successful fetch of a location yields: the parsed keys and how long they stay fresh.
pub(crate) struct FetchedKeys {
    pub(crate) keys: KeySet,
    pub(crate) ttl: Duration,
}

/// The HTTP client and the fetch counters.
pub(crate) struct Http {
    client: Client,
    config: FetcherConfig,
    fetched: AtomicU64,
    failed: AtomicU64,
}

/// The members of a discovery document this crate reads.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl Http {
    /// Builds the client for `config`.
    pub(crate) fn new(config: FetcherConfig) -> Result<Self, BuildError> {
        config.validate()?;
        let mut builder = Client::builder()
            .use_rustls_tls()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("iam-oidc/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.extra_root_pem {
            let certificates = Certificate::from_pem_bundle(pem)
                .map_err(|err| BuildError::RootCertificates(describe(&err)))?;
            if certificates.is_empty() {
                return Err(BuildError::RootCertificates(
                    "no certificate in the bundle".into(),
                ));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder
            .build()
            .map_err(|err| BuildError::Client(describe(&err)))?;
        Ok(Self {
            client,
            config,
            fetched: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub(crate) fn config(&self) -> &FetcherConfig {
        &self.config
    }

    /// The counters so far.
    pub(crate) fn counts(&self) -> FetchCounts {
        FetchCounts {
            fetched: self.fetched.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Fetches the keys of `location` (through discovery when it says so). Failures are
    /// counted and logged here; the caller only learns that there are no new keys.
    pub(crate) async fn fetch_keys(&self, location: &JwksLocation) -> Option<FetchedKeys> {
        let (jwks_uri, discovery_ttl) = match location {
            JwksLocation::Url(url) => (url.clone(), None),
            JwksLocation::Discovery { issuer } => {
                let url = format!("{}{DISCOVERY_PATH}", issuer.trim_end_matches('/'));
                let (jwks_uri, ttl) = self
                    .fetch(&url, |body| {
                        let document: Discovery = serde_json::from_slice(body)
                            .map_err(|_| "not a discovery document with issuer and jwks_uri")?;
                        if document.issuer != *issuer {
                            return Err("discovery document names another issuer");
                        }
                        Ok(document.jwks_uri)
                    })
                    .await?;
                (jwks_uri, Some(ttl))
            }
        };
        let (keys, ttl) = self.fetch(&jwks_uri, KeySet::parse).await?;
        let ttl = discovery_ttl.map_or(ttl, |discovery| discovery.min(ttl));
        Some(FetchedKeys { keys, ttl })
    }

    /// GETs `url` (which must pass [`crate::check_fetch_url`]) and parses its body, counting
    /// the outcome and logging a failure with the URL and the reason.
    async fn fetch<T>(
        &self,
        url: &str,
        parse: impl FnOnce(&[u8]) -> Result<T, &'static str>,
    ) -> Option<(T, Duration)> {
        let outcome = match self.get(url).await {
            Ok((body, cache_control)) => parse(&body)
                .map(|parsed| (parsed, self.config.ttl_for(cache_control.as_deref())))
                .map_err(str::to_owned),
            Err(reason) => Err(reason),
        };
        match outcome {
            Ok(parsed) => {
                self.fetched.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(url, "fetched");
                Some(parsed)
            }
            Err(reason) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url, reason, "OIDC fetch failed");
                None
            }
        }
    }

    /// The body (at most `max_body` bytes) and `Cache-Control` of a 2xx answer to a GET.
    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<String>), String> {
        let url = parse_fetch_url(url).map_err(|err| format!("URL not allowed: {err}"))?;
        let mut response = self
            .client
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|err| describe(&err))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP status {}", status.as_u16()));
        }
        let max_body = self.config.max_body;
        let too_large = || format!("body larger than {max_body} bytes");
        if response
            .content_length()
            .is_some_and(|length| usize::try_from(length).map_or(true, |length| length > max_body))
        {
            return Err(too_large());
        }
        let cache_control = response
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| describe(&err))? {
            if body.len() + chunk.len() > max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, cache_control))
    }
}

/// An error with its chain of causes, e.g. `error sending request: connection refused`.
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
