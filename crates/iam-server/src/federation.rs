//! The domain's [`AssertionVerifier`] on the JWKS fetcher of `iam-oidc`: how the token of a
//! federated workload (SPEC §9) is verified against the keys of the issuer its organization
//! trusts.

use std::sync::Arc;

use iam_domain::ports::{AssertionRejected, AssertionVerifier, VerifiedAssertion};
use iam_domain::{ExternalSubject, TrustedIssuer};
use iam_http::jwt::LEEWAY_SECONDS;
use iam_oidc::{JwksFetcher, JwksLocation, VerifyError};
use time::OffsetDateTime;

/// Verifies workloads' tokens with the shared JWKS fetcher.
pub struct OidcAssertions(pub Arc<JwksFetcher>);

impl AssertionVerifier for OidcAssertions {
    fn peek(&self, assertion: &str) -> Option<(String, String)> {
        iam_oidc::peek_issuer_subject(assertion)
    }

    async fn verify(
        &self,
        assertion: &str,
        issuer: &TrustedIssuer,
        now: OffsetDateTime,
    ) -> Result<VerifiedAssertion, AssertionRejected> {
        let location = match &issuer.jwks_uri {
            Some(url) => JwksLocation::Url(url.clone()),
            None => JwksLocation::Discovery {
                issuer: issuer.issuer.to_string(),
            },
        };
        let claims = self
            .0
            .verify(
                assertion,
                issuer.issuer.as_str(),
                &location,
                now.unix_timestamp(),
                LEEWAY_SECONDS,
            )
            .await
            .map_err(|e| {
                // Clients get one answer; operators see why here.
                tracing::info!(issuer = %issuer.issuer, reason = %e, "federated token refused");
                match e {
                    VerifyError::KeysUnavailable => {
                        AssertionRejected::KeysUnavailable(e.to_string())
                    }
                    _ => AssertionRejected::Invalid(e.to_string()),
                }
            })?;
        let invalid = |why: &str| AssertionRejected::Invalid(why.to_owned());
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or_else(|| invalid("no sub"))?;
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| invalid("no integer exp"))?;
        Ok(VerifiedAssertion {
            issuer: issuer.issuer.clone(),
            subject: ExternalSubject::parse(subject).map_err(|_| invalid("unusable sub"))?,
            audiences: iam_oidc::audiences(&claims),
            expires_at: OffsetDateTime::from_unix_timestamp(exp)
                .map_err(|_| invalid("exp out of range"))?,
        })
    }
}
