//! The request deadline: no request is held longer than [`RequestDeadline`] (SPEC §7).
//!
//! The middleware races the request against its deadline. When the deadline passes first the
//! handler is dropped — with it any database statement it was waiting for, whose connection
//! the pool then closes rather than reuses (see `iam_postgres`) — and the caller gets 503
//! `UNAVAILABLE` with `Retry-After`, in the usual envelope. The storage adapter also gives
//! PostgreSQL the same `statement_timeout`, so a statement stuck behind a lock stops on the
//! server as well.
//!
//! The deadline also bounds how long an unfinished `Idempotency-Key` claim is taken to be
//! still running: a request cannot outlive its deadline, so a claim older than
//! [`RequestDeadline::abandon_claims_after`] belongs to a request that died (a crash, a
//! `kill -9`), and a retry may take it over.

use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpRequest, ResponseError as _, web};

use crate::error::ApiError;

/// How long a request may take, from its head being read to its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDeadline(pub Duration);

impl RequestDeadline {
    /// The default, SPEC §7: 5 s.
    pub const DEFAULT: Self = Self(Duration::from_secs(5));

    /// The deadline registered as app data, else [`Self::DEFAULT`].
    pub fn of(req: &HttpRequest) -> Self {
        req.app_data::<web::Data<Self>>()
            .map_or(Self::DEFAULT, |deadline| *deadline.get_ref())
    }

    /// How old an unfinished idempotency claim must be to count as abandoned: three
    /// deadlines — one for the request itself, one for a statement it left running on the
    /// server (bounded by `statement_timeout`), and one of margin for clock skew between
    /// instances.
    pub fn abandon_claims_after(self) -> time::Duration {
        time::Duration::try_from(self.0.saturating_mul(3)).unwrap_or(time::Duration::MAX)
    }
}

impl Default for RequestDeadline {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Middleware: answers 503 with `Retry-After` when the request is not done within its
/// [`RequestDeadline`] (registered as `web::Data<RequestDeadline>`; without one, the default).
///
/// It wraps each resource (see `configure`), not the app: it keeps a handle on the request
/// for its own answer, and actix-web's router needs the request unshared while it routes.
///
/// # Errors
/// Passes through errors of the wrapped service.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let deadline = RequestDeadline::of(req.request());
    let request = req.request().clone();
    match actix_web::rt::time::timeout(deadline.0, next.call(req)).await {
        Ok(response) => Ok(response?.map_into_left_body()),
        Err(_elapsed) => {
            tracing::warn!(
                deadline_ms = u64::try_from(deadline.0.as_millis()).unwrap_or(u64::MAX),
                "request deadline exceeded"
            );
            let response = ApiError::deadline_exceeded().error_response();
            Ok(ServiceResponse::new(request, response).map_into_right_body())
        }
    }
}
