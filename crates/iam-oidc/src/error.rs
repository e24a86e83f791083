//! The crate's errors. None of their messages contains a token; the few attacker-chosen
//! strings they carry (a header's `alg`, a `kid`) are cut to [`MAX_ECHO`] characters.

use thiserror::Error;

/// How many characters of an attacker-chosen string (a header's `alg` or `kid`) an error keeps.
pub const MAX_ECHO: usize = 64;

/// Why a token was refused. Callers answer every variant with one uniform refusal; the
/// variants say why, for logs. No message contains the token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// Not a compact JWS with a JSON header and a JSON object as claims (or too long).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not RS256, ES256 or EdDSA (`none` and HMAC are never accepted).
    #[error("unsupported token algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The header has no `kid`.
    #[error("token header has no kid")]
    MissingKeyId,
    /// The issuer's key set has no key with the header's `kid` (after the refetch the rules
    /// allow).
    #[error("no published key with kid {kid:?}")]
    UnknownKey {
        /// The header's `kid` (cut to [`MAX_ECHO`] characters).
        kid: String,
    },
    /// A key with the header's `kid` is published but may not verify this token: wrong type
    /// for the algorithm, RSA modulus under 2048 bits, `use` other than `sig`, another `alg`,
    /// or unparsable.
    #[error("key {kid:?} is not usable: {reason}")]
    UnusableKey {
        /// The header's `kid` (cut to [`MAX_ECHO`] characters).
        kid: String,
        /// Why the key is not usable.
        reason: &'static str,
    },
    /// The issuer's keys could not be fetched and none are cached (the issuer is down,
    /// answers with an error or garbage, or its discovery document is wrong).
    #[error("the issuer's keys are unavailable")]
    KeysUnavailable,
    /// The signature does not verify with the key.
    #[error("bad signature")]
    BadSignature,
    /// The `iss` claim is missing or not the expected issuer.
    #[error("wrong or missing iss")]
    WrongIssuer,
    /// The `exp` claim is missing.
    #[error("missing exp")]
    MissingExp,
    /// The token has expired (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// The `nbf` claim is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// The `iat` claim is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
}

/// Why a [`crate::JwksFetcher`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BuildError {
    /// `extra_root_pem` is not a PEM bundle of certificates, or holds none.
    #[error("extra root certificates: {0}")]
    RootCertificates(String),
    /// The durations contradict each other (`min_ttl` > `max_ttl`) or a limit is zero.
    #[error("invalid fetcher configuration: {0}")]
    Config(&'static str),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Why a URL may not be fetched (see [`crate::check_fetch_url`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    /// Not an absolute URL.
    #[error("not an absolute URL: {0}")]
    Invalid(String),
    /// Neither `https` nor `http`.
    #[error("scheme {0:?} is not allowed (https only)")]
    Scheme(String),
    /// Plain `http` to a host other than a loopback one.
    #[error("plain http is allowed only to loopback hosts")]
    PlainHttp,
    /// The URL has a user name or password.
    #[error("URL must not contain userinfo")]
    Userinfo,
    /// The URL has a fragment.
    #[error("URL must not contain a fragment")]
    Fragment,
    /// The URL has no host.
    #[error("URL has no host")]
    NoHost,
}

/// At most [`MAX_ECHO`] characters of `value`, for an error message.
pub(crate) fn echo(value: &str) -> String {
    value.chars().take(MAX_ECHO).collect()
}
