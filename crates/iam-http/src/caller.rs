//! The `Caller` extractor: verifies `Authorization: Bearer <JWT>` and yields the principal.
//!
//! A token must be signed by a trusted key, unexpired, and live: not revoked and, for a
//! service-account token, its credential present and unexpired and its account active. The
//! liveness check reads the database on every request (no cache window), so disabling,
//! deleting or revoking takes effect on the very next request. [`Caller`] checks it before
//! the handler runs (writes); [`ReadCaller`] leaves it to the read, which checks it in the
//! same round trip (reads).
//!
//! Any problem — no header, another scheme, a malformed, expired, untrusted, wrongly signed,
//! revoked or dead token — is the same 401 with `WWW-Authenticate: Bearer error="invalid_token"`;
//! the precise reason is logged at debug level only.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
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

/// The authenticated caller of a request: token verified and live.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// A request's verified principal with the authenticator that verified it.
type Verification = Result<(Principal, web::Data<Authenticator>), ApiError>;

/// The verified token of a request, its authenticator, or the 401/500 to answer.
fn verified(req: &HttpRequest) -> Pin<Box<dyn Future<Output = Verification>>> {
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
        Ok((principal, authenticator))
    })
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let verified = verified(req);
        Box::pin(async move {
            let (principal, authenticator) = verified.await?;
            if authenticator.is_live(&principal).await? {
                Ok(Caller(principal))
            } else {
                tracing::debug!("bearer token is revoked or its service account is gone");
                Err(ApiError::unauthorized())
            }
        })
    }
}

/// The caller of a read: its token is verified (signature, issuer, audience, times) but its
/// liveness is *not checked yet*. The read's use case checks it in the same database round
/// trip as the read (the `*_if_live` store methods), so a read costs one round trip instead
/// of two.
///
/// The contract of a handler taking it: produce a success only from a use case that checked
/// liveness, and pass every result through [`Self::answer`], which checks liveness before
/// letting any other error (a 400 for a bad parameter, a 404 for a caller that may not see
/// the account) through — so a dead token never gets anything but the 401 it got before.
pub struct ReadCaller {
    principal: Principal,
    authenticator: web::Data<Authenticator>,
}

impl ReadCaller {
    /// What the handler answers, unless the token is dead (see the type's documentation).
    ///
    /// # Errors
    /// `result`'s error, 401 for a dead token, 503/500 when the check fails.
    pub async fn answer(
        &self,
        result: Result<HttpResponse, ApiError>,
    ) -> Result<HttpResponse, ApiError> {
        match result {
            Ok(response) => Ok(response),
            Err(error)
                if error.status() == StatusCode::UNAUTHORIZED
                    || error.status().is_server_error() =>
            {
                Err(error)
            }
            Err(error) => {
                if self.authenticator.is_live(&self.principal).await? {
                    Err(error)
                } else {
                    tracing::debug!("bearer token is revoked or its service account is gone");
                    Err(ApiError::unauthorized())
                }
            }
        }
    }
}

impl std::fmt::Debug for ReadCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReadCaller").field(&self.principal).finish()
    }
}

impl Deref for ReadCaller {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl FromRequest for ReadCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let verified = verified(req);
        Box::pin(async move {
            let (principal, authenticator) = verified.await?;
            Ok(ReadCaller {
                principal,
                authenticator,
            })
        })
    }
}
