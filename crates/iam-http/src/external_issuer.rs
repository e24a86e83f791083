//! The external user-token issuer (SPEC §3): an OIDC provider (Keycloak, Dex, a cloud `IdP`)
//! whose tokens are accepted besides this service's own, with keys from a JWKS file (read once)
//! or a JWKS URL (fetched, cached and refetched by [`iam_oidc::JwksFetcher`], the same fetcher
//! that serves workload identity federation). Its keys may be RS256, ES256 or EdDSA.
//!
//! Its tokens pass the checks of this service's own (`iss`, `aud`, `exp`, `nbf`, `iat` with
//! 60 s of skew) and may not claim `principal_type: service_account`, which only this
//! service can vouch for.

use std::sync::Arc;

use iam_domain::{Principal, PrincipalKind};
use iam_oidc::{JwksFetcher, JwksLocation, StaticJwks};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::jwt::{AccessClaims, KeyError, LEEWAY_SECONDS, TokenError, principal_from};

/// Where the external issuer's keys come from.
enum Keys {
    /// A JWKS document read at start.
    Static(StaticJwks),
    /// A JWKS URL, fetched and cached.
    Remote {
        fetcher: Arc<JwksFetcher>,
        location: JwksLocation,
    },
}

/// An external issuer whose users' tokens are trusted.
pub struct ExternalIssuer {
    issuer: String,
    keys: Keys,
}

impl ExternalIssuer {
    /// Trusts the keys of the JWKS document `jwks_json` for tokens issued by `issuer`.
    ///
    /// # Errors
    /// [`KeyError::InvalidJwks`] when the document is not a JWKS or holds no usable key.
    pub fn from_jwks(issuer: impl Into<String>, jwks_json: &str) -> Result<Self, KeyError> {
        let keys =
            StaticJwks::parse(jwks_json.as_bytes()).map_err(|e| KeyError::InvalidJwks(e.into()))?;
        Ok(Self {
            issuer: issuer.into(),
            keys: Keys::Static(keys),
        })
    }

    /// Trusts the keys published at `jwks_url` (fetched by `fetcher`) for tokens issued by
    /// `issuer`.
    pub fn from_url(
        issuer: impl Into<String>,
        jwks_url: impl Into<String>,
        fetcher: Arc<JwksFetcher>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            keys: Keys::Remote {
                fetcher,
                location: JwksLocation::Url(jwks_url.into()),
            },
        }
    }

    /// The issuer (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies `token` at `now` for `audience` and builds the calling principal.
    ///
    /// # Errors
    /// The [`TokenError`] saying why the token is refused.
    pub async fn verify(
        &self,
        token: &str,
        now: OffsetDateTime,
        audience: &str,
    ) -> Result<(AccessClaims, Principal), TokenError> {
        let now = now.unix_timestamp();
        let verified = match &self.keys {
            Keys::Static(keys) => keys.verify(token, &self.issuer, now, LEEWAY_SECONDS),
            Keys::Remote { fetcher, location } => {
                fetcher
                    .verify(token, &self.issuer, location, now, LEEWAY_SECONDS)
                    .await
            }
        };
        let claims = verified.map_err(|e| TokenError::Invalid(e.to_string()))?;
        if !iam_oidc::audiences(&claims).iter().any(|a| a == audience) {
            return Err(TokenError::Invalid("wrong audience".into()));
        }
        let claims = access_claims(claims)?;
        let principal = principal_from(&claims)?;
        if principal.kind == PrincipalKind::ServiceAccount {
            return Err(TokenError::BadClaims(
                "principal_type service_account from an external issuer",
            ));
        }
        Ok((claims, principal))
    }
}

/// The verified claims as this service's claim set (`iat` defaults to 0 when absent: it was
/// checked not to lie in the future when present).
fn access_claims(mut claims: Map<String, Value>) -> Result<AccessClaims, TokenError> {
    claims.entry("iat").or_insert(Value::from(0));
    serde_json::from_value(Value::Object(claims))
        .map_err(|_| TokenError::BadClaims("claims of an access token"))
}
