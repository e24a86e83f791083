//! The fetcher's settings and the cache lifetime a response earns.

use std::time::Duration;

use crate::error::BuildError;

/// Settings of a [`crate::JwksFetcher`]. [`Default`] gives the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetcherConfig {
    /// Time limit of one HTTP request, body included (default 2 s).
    pub timeout: Duration,
    /// Largest response body accepted, in bytes (default 64 KiB). A larger body is a failed
    /// fetch; reading stops at the limit.
    pub max_body: usize,
    /// How long keys are cached when the response has no usable `Cache-Control` (default 300 s).
    pub default_ttl: Duration,
    /// Lower bound of a `Cache-Control: max-age`, and the lifetime under `no-store` /
    /// `no-cache` (default 60 s).
    pub min_ttl: Duration,
    /// Upper bound of a `Cache-Control: max-age` (default 3600 s).
    pub max_ttl: Duration,
    /// At most one refetch per location in this interval is triggered by an unknown `kid`
    /// (default 30 s).
    pub refetch_interval: Duration,
    /// After a failed fetch, no new attempt for that location sooner than this (default 5 s).
    pub failure_backoff: Duration,
    /// Extra CA certificates (a PEM bundle) trusted besides the built-in webpki roots.
    pub extra_root_pem: Option<Vec<u8>>,
}

impl Default for FetcherConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            max_body: 64 * 1024,
            default_ttl: Duration::from_mins(5),
            min_ttl: Duration::from_mins(1),
            max_ttl: Duration::from_hours(1),
            refetch_interval: Duration::from_secs(30),
            failure_backoff: Duration::from_secs(5),
            extra_root_pem: None,
        }
    }
}

impl FetcherConfig {
    /// Refuses settings that contradict each other.
    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if self.timeout.is_zero() {
            return Err(BuildError::Config("timeout must be positive"));
        }
        if self.max_body == 0 {
            return Err(BuildError::Config("max_body must be positive"));
        }
        if self.min_ttl > self.max_ttl {
            return Err(BuildError::Config("min_ttl must not exceed max_ttl"));
        }
        Ok(())
    }

    /// How long a response with this `Cache-Control` header value (if any) stays fresh:
    /// `max-age` clamped to [`min_ttl`, `max_ttl`]; `no-store` or `no-cache` give `min_ttl`;
    /// no header, or one without a usable `max-age`, gives `default_ttl` (itself clamped).
    ///
    /// [`min_ttl`]: Self::min_ttl
    /// [`max_ttl`]: Self::max_ttl
    pub(crate) fn ttl_for(&self, cache_control: Option<&str>) -> Duration {
        let clamp = |ttl: Duration| ttl.clamp(self.min_ttl, self.max_ttl);
        let Some(value) = cache_control else {
            return clamp(self.default_ttl);
        };
        let mut max_age = None;
        for directive in value.split(',').map(str::trim) {
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return self.min_ttl;
            }
            if name.eq_ignore_ascii_case("max-age") {
                max_age = argument.and_then(|seconds| seconds.parse::<u64>().ok());
            }
        }
        clamp(max_age.map_or(self.default_ttl, Duration::from_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = FetcherConfig::default();
        assert_eq!(config.timeout, secs(2));
        assert_eq!(config.max_body, 65_536);
        assert_eq!(config.default_ttl, secs(300));
        assert_eq!(config.min_ttl, secs(60));
        assert_eq!(config.max_ttl, secs(3600));
        assert_eq!(config.refetch_interval, secs(30));
        assert_eq!(config.failure_backoff, secs(5));
        assert_eq!(config.extra_root_pem, None);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn max_age_is_honoured_within_bounds() {
        let config = FetcherConfig::default();
        assert_eq!(config.ttl_for(Some("max-age=600")), secs(600));
        assert_eq!(
            config.ttl_for(Some("public, max-age=120, must-revalidate")),
            secs(120)
        );
        assert_eq!(config.ttl_for(Some("Max-Age=\"900\"")), secs(900));
        assert_eq!(
            config.ttl_for(Some("max-age=5")),
            secs(60),
            "clamped up to min_ttl"
        );
        assert_eq!(config.ttl_for(Some("max-age=0")), secs(60));
        assert_eq!(
            config.ttl_for(Some("max-age=86400")),
            secs(3600),
            "clamped to max_ttl"
        );
        assert_eq!(
            config.ttl_for(Some("max-age=99999999999999999999")),
            secs(300)
        );
    }

    #[test]
    fn no_store_and_no_cache_give_the_minimum() {
        let config = FetcherConfig::default();
        assert_eq!(config.ttl_for(Some("no-store")), secs(60));
        assert_eq!(config.ttl_for(Some("max-age=600, no-cache")), secs(60));
        assert_eq!(config.ttl_for(Some("private, No-Store")), secs(60));
    }

    #[test]
    fn absent_or_unusable_header_gives_the_default() {
        let config = FetcherConfig::default();
        assert_eq!(config.ttl_for(None), secs(300));
        assert_eq!(config.ttl_for(Some("")), secs(300));
        assert_eq!(config.ttl_for(Some("public")), secs(300));
        assert_eq!(config.ttl_for(Some("max-age=soon")), secs(300));
        assert_eq!(config.ttl_for(Some("max-age=-5")), secs(300));
        assert_eq!(config.ttl_for(Some("s-maxage=10")), secs(300));
    }

    #[test]
    fn contradictory_settings_are_refused() {
        let config = FetcherConfig {
            min_ttl: secs(10),
            max_ttl: secs(5),
            ..Default::default()
        };
        assert!(config.validate().is_err());
        let config = FetcherConfig {
            max_body: 0,
            ..Default::default()
        };
        assert!(config.validate().is_err());
    }
}
