//! The outbound OIDC adapter: verifies JWTs signed by *foreign* issuers (workload identity
//! federation, an external user-token issuer) with keys fetched from their JWKS.
//!
//! One [`JwksFetcher`] serves every issuer. [`JwksFetcher::verify`] takes the token, the
//! issuer it must come from and where that issuer's keys are ([`JwksLocation`]: a JWKS URL,
//! or OIDC discovery), and returns the verified claims or a [`VerifyError`]. It does not
//! check `aud`; the caller does, with [`audiences`]. [`peek_issuer_subject`] reads the
//! unverified `iss` and `sub`, to choose which issuer's keys to verify with.
//!
//! # Verification
//!
//! - The header's `alg` must be RS256, ES256 or EdDSA: `none`, HMAC and everything else are
//!   refused before any key is looked up. The header must have a `kid`; `jku`, `x5u`, `jwk`
//!   and the like are ignored (keys only ever come from the configured location).
//! - The key is the published one with that `kid` whose type fits the algorithm: RSA with a
//!   modulus of at least 2048 bits for RS256, EC P-256 for ES256, OKP Ed25519 for EdDSA. A
//!   key whose `use` is not `sig`, or whose `alg` is another algorithm, is never used.
//!   Signatures are checked by `jsonwebtoken` (its `RustCrypto` backend); nothing here is hand-rolled.
//! - `iss` must equal the issuer exactly; `exp` is required and `now < exp + leeway`; `nbf`
//!   and `iat`, when present, must be `<= now + leeway`. `now` is the caller's clock.
//! - Tokens longer than [`MAX_TOKEN_LEN`] bytes are refused. No error message contains the
//!   token; attacker-chosen strings in them (`alg`, `kid`) are cut to [`MAX_ECHO`] characters.
//!
//! # Fetching
//!
//! - Only URLs that pass [`check_fetch_url`] are fetched (`https`, or `http` to loopback),
//!   whether configured or named by a discovery document's `jwks_uri`. A discovery
//!   document's `issuer` must equal the configured issuer.
//! - HTTP goes through rustls with the webpki roots compiled in (the image has no CA files),
//!   plus [`FetcherConfig::extra_root_pem`]. Redirects are not followed, proxies from the
//!   environment are not used, each request (body included) has [`FetcherConfig::timeout`],
//!   and a body over [`FetcherConfig::max_body`] bytes is a failure (reading stops there).
//! - Every fetch is counted ([`JwksFetcher::counts`]); a failure is logged at `warn` with the
//!   URL and the reason.
//!
//! # Caching
//!
//! Keys are cached per [`JwksLocation`], parsed once per fetch into ready `DecodingKey`s; a
//! discovery location caches the discovered `jwks_uri` with its keys (both are fetched again
//! together). Timing uses a monotonic clock, never the `now` of a call.
//!
//! - Keys stay fresh for the response's `Cache-Control: max-age`, clamped to
//!   [`min_ttl`, `max_ttl`]; `no-store` or `no-cache` give `min_ttl`; no header gives
//!   `default_ttl` (see [`FetcherConfig`]).
//! - Single flight: concurrent verifications that need a fetch of one location cause one
//!   HTTP fetch; the others wait for its outcome. Cached keys are read without waiting.
//! - A `kid` missing from fresh keys triggers a refetch (the issuer may have rotated), but at
//!   most once per [`FetcherConfig::refetch_interval`] per location; otherwise the token is
//!   refused with [`VerifyError::UnknownKey`].
//! - Expired keys are fetched again. If that fails, the stale keys stay in use
//!   (stale-if-error) and the location is not tried again before
//!   [`FetcherConfig::failure_backoff`]. With nothing cached, a failed fetch refuses with
//!   [`VerifyError::KeysUnavailable`], and also waits out the backoff, so a down issuer is
//!   not hammered.
//!
//! # Testing
//!
//! The `testing` feature adds `iam_oidc::testing::FakeIssuer`, an in-process OIDC issuer on
//! `127.0.0.1` for tests.

mod cache;
mod config;
mod error;
mod fetch_url;
mod fetcher;
mod http;
mod keys;
mod static_jwks;
mod token;

#[cfg(feature = "testing")]
pub mod testing;

pub use config::FetcherConfig;
pub use error::{BuildError, MAX_ECHO, UrlError, VerifyError};
pub use fetch_url::check_fetch_url;
pub use fetcher::{FetchCounts, JwksFetcher, JwksLocation};
pub use static_jwks::StaticJwks;
pub use token::{MAX_TOKEN_LEN, audiences, peek_issuer_subject};
