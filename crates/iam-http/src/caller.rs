//! The `Caller` extractor: verifies `Authorization: Bearer <JWT>` and yields the principal.
//!
//! Any problem — no header, another scheme, a malformed, expired, untrusted or wrongly
//! signed token — is the same 401 with `WWW-Authenticate: Bearer error="invalid_token"`;
//! the precise reason is logged at debug level only.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use iam_domain::ports::Clock;
use iam_domain::{Principal, PrincipalKind};

use crate::error::ApiError;
use crate::jwt::TokenVerifier;

/// Verifies bearer tokens at the time of the injected clock.
pub struct Authenticator {
    verifier: TokenVerifier,
    clock: Arc<dyn Clock>,
}

impl Authenticator {
    /// An authenticator using `verifier`'s trusted keys and `clock` for `exp`/`nbf`.
    pub fn new(verifier: TokenVerifier, clock: Arc<dyn Clock>) -> Self {
        Self { verifier, clock }
    }

    fn authenticate(&self, req: &HttpRequest) -> Result<Principal, ApiError> {
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(ApiError::unauthorized)?;
        match self.verifier.verify(token, self.clock.now()) {
            // Service-account tokens must be refused once their account is disabled or
            // deleted or their credential is gone (SPEC §3). Those checks arrive with
            // credentials and the token endpoint; until then no such token is accepted.
            Ok((_, principal)) if principal.kind == PrincipalKind::ServiceAccount => {
                tracing::debug!("service-account tokens are not accepted yet");
                Err(ApiError::unauthorized())
            }
            Ok((_, principal)) => {
                let span = tracing::Span::current();
                span.record("tenant", principal.tenant.as_str());
                span.record("principal", principal.subject.as_str());
                Ok(principal)
            }
            Err(reason) => {
                tracing::debug!(%reason, "bearer token refused");
                Err(ApiError::unauthorized())
            }
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let result = if let Some(authenticator) = req.app_data::<web::Data<Authenticator>>() {
            authenticator.authenticate(req).map(Caller)
        } else {
            tracing::error!("no Authenticator registered as app data");
            Err(ApiError::internal())
        };
        ready(result)
    }
}
