//! The `Caller` extractor: verifies `Authorization: Bearer <JWT>` and yields the principal.
//!
//! A token must be signed by a trusted key, unexpired, and live: not revoked and, for a
//! service-account token, its credential present and unexpired and its account active. The
//! liveness check reads the database on every request (no cache window), so disabling,
//! deleting or revoking takes effect on the very next request.
//!
//! Any problem — no header, another scheme, a malformed, expired, untrusted, wrongly signed,
//! revoked or dead token — is the same 401 with `WWW-Authenticate: Bearer error="invalid_token"`;
//! the precise reason is logged at debug level only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use iam_domain::Principal;
use iam_domain::ports::{Clock, StoreError};

use crate::error::ApiError;
use crate::external_issuer::ExternalIssuer;
use crate::jwt::{AccessClaims, TokenError, TokenVerifier};
use crate::{AppState, HttpAdapters};

/// Checks that a verified token is still live (see the module docs).
pub trait LivenessCheck: Send + Sync + 'static {
    /// Whether `principal`'s token is live now.
    ///
    /// # Errors
    /// [`StoreError`] when storage fails.
    fn is_live<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> Pin<Box<dyn Future<Output = Result<bool, StoreError>> + 'a>>;
}

impl<A: HttpAdapters> LivenessCheck for AppState<A> {
    fn is_live<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> Pin<Box<dyn Future<Output = Result<bool, StoreError>> + 'a>> {
        Box::pin(self.tokens.is_live(principal))
    }
}

/// Verifies bearer tokens at the time of the injected clock and checks their liveness.
pub struct Authenticator {
    verifier: Arc<TokenVerifier>,
    external: Option<Arc<ExternalIssuer>>,
    clock: Arc<dyn Clock>,
    liveness: Arc<dyn LivenessCheck>,
}

impl Authenticator {
    /// The audience the verifier accepts.
    pub fn audience(&self) -> &str {
        self.verifier.audience()
    }

    /// An authenticator using `verifier`'s trusted keys, `clock` for `exp`/`nbf`, and
    /// `liveness` for revocation and service-account checks.
    pub fn new(
        verifier: Arc<TokenVerifier>,
        clock: Arc<dyn Clock>,
        liveness: Arc<dyn LivenessCheck>,
    ) -> Self {
        Self {
            verifier,
            external: None,
            clock,
            liveness,
        }
    }

    /// Also trusts the users' tokens of an external issuer.
    #[must_use]
    pub fn with_external(mut self, external: Arc<ExternalIssuer>) -> Self {
        self.external = Some(external);
        self
    }

    /// Verifies a raw token's signature, issuer, audience and times (not its liveness):
    /// against this service's keys, or, for a key it does not have, the external issuer's.
    ///
    /// # Errors
    /// 401 when the token is refused.
    pub async fn verify(&self, token: &str) -> Result<(AccessClaims, Principal), ApiError> {
        let now = self.clock.now();
        let verified = match (self.verifier.verify(token, now), &self.external) {
            (Err(TokenError::UnknownKey), Some(external)) => {
                external.verify(token, now, self.verifier.audience()).await
            }
            (own, _) => own,
        };
        verified.map_err(|reason| {
            tracing::debug!(%reason, "bearer token refused");
            ApiError::unauthorized()
        })
    }

    /// The current time of the injected clock.
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Whether a verified principal's token is still live.
    ///
    /// # Errors
    /// 503/500 when storage fails.
    pub async fn is_live(&self, principal: &Principal) -> Result<bool, ApiError> {
        Ok(self.liveness.is_live(principal).await?)
    }

    fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(ApiError::unauthorized)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let Some(authenticator) = req.app_data::<web::Data<Authenticator>>().cloned() else {
            tracing::error!("no Authenticator registered as app data");
            return Box::pin(std::future::ready(Err(ApiError::internal())));
        };
        let token = Authenticator::bearer(req).map(str::to_owned);
        Box::pin(async move {
            let (_, principal) = authenticator.verify(&token?).await?;
            let span = tracing::Span::current();
            span.record("tenant", principal.tenant.as_str());
            span.record("principal", principal.subject.as_str());
            if authenticator.is_live(&principal).await? {
                Ok(Caller(principal))
            } else {
                tracing::debug!("bearer token is revoked or its service account is gone");
                Err(ApiError::unauthorized())
            }
        })
    }
}
