//! A JWKS read once (from a file) rather than fetched: same key rules, same verification.

use serde_json::{Map, Value};

use crate::error::VerifyError;
use crate::keys::KeySet;
use crate::token;

/// The keys of one JWKS document, parsed once, for verifying an issuer's tokens without
/// fetching anything. The rules of [`crate::JwksFetcher::verify`] apply, except that there
/// is nothing to refetch: an unknown `kid` is [`VerifyError::UnknownKey`].
#[derive(Debug)]
pub struct StaticJwks {
    keys: KeySet,
}

impl StaticJwks {
    /// Parses a JWKS document.
    ///
    /// # Errors
    /// A short reason when `body` is not a JWKS document or holds no usable key.
    pub fn parse(body: &[u8]) -> Result<Self, &'static str> {
        let keys = KeySet::parse(body)?;
        if keys.usable() == 0 {
            return Err("the JWKS holds no usable signing key");
        }
        Ok(Self { keys })
    }

    /// Verifies `token` as issued by `issuer` at `now` (Unix seconds) with `leeway` seconds
    /// of clock skew, and returns its claims. `aud` is not checked (see [`crate::audiences`]).
    ///
    /// # Errors
    /// The [`VerifyError`] saying why the token is refused.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        now: i64,
        leeway: i64,
    ) -> Result<Map<String, Value>, VerifyError> {
        let header = token::parse_header(token)?;
        let key = self.keys.find(&header.kid, header.alg)?;
        let claims = token::verify_signature(token, key, header.alg)?;
        token::check_claims(&claims, issuer, now, leeway)?;
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::StaticJwks;

    #[test]
    fn refuses_documents_without_usable_keys() {
        assert!(StaticJwks::parse(b"not json").is_err());
        assert!(StaticJwks::parse(br#"{"keys":[]}"#).is_err());
        let weak_only = br#"{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}"#;
        assert!(StaticJwks::parse(weak_only).is_err());
    }
}
