//! `ApiError`: the contract's error envelope and the mapping from domain errors to statuses.
//!
//! Every error body is `{"error": {"code", "message", "details": [{"reason", "field"?, …}]}}`.
//! 5xx bodies are generic; their cause is logged here, once, and never echoed.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use iam_domain::ports::StoreError;
use iam_domain::{CredentialError, Field, InvalidValue, ServiceAccountError, Violation};
use serde::Serialize;
use utoipa::ToSchema;

/// One entry of `error.details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable `SCREAMING_SNAKE_CASE` code.
    pub reason: String,
    /// JSON path of the offending field, when one field is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Human-readable explanation of this detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ErrorDetail {
    /// A detail about `field`.
    pub fn field(
        field: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            reason: reason.into(),
            field: Some(field.into()),
            message: Some(message.into()),
        }
    }

    /// A detail about `field` from a value constructor's refusal.
    pub fn invalid(field: impl Into<String>, invalid: InvalidValue) -> Self {
        Self::field(field, invalid.reason, invalid.message)
    }

    /// A detail that concerns no single field.
    pub fn reason(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            field: None,
            message: None,
        }
    }
}

/// The error envelope's inner object.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code.
    pub code: u16,
    /// Human-readable summary.
    pub message: String,
    /// What exactly went wrong.
    pub details: Vec<ErrorDetail>,
}

/// `{"error": …}` — the body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<ErrorDetail>,
    challenge: Option<&'static str>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with an explicit status, message and details.
    pub fn new(status: StatusCode, message: impl Into<String>, details: Vec<ErrorDetail>) -> Self {
        Self {
            status,
            message: message.into(),
            details,
            challenge: None,
            retry_after: None,
        }
    }

    /// 400 listing every bad field.
    pub fn bad_request(details: Vec<ErrorDetail>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "the request is invalid", details)
    }

    /// 401 for a missing, malformed, expired or untrusted token. Deliberately says no more.
    pub fn unauthorized() -> Self {
        Self {
            challenge: Some("Bearer error=\"invalid_token\""),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required",
                vec![ErrorDetail::reason("INVALID_TOKEN")],
            )
        }
    }

    /// 401 of the token endpoint: one body for every way client credentials can be wrong.
    pub fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid client credentials",
            vec![ErrorDetail::reason("INVALID_CLIENT")],
        )
    }

    /// 403 for a caller that may not use the operation.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "only tenant administrators may do this",
            vec![ErrorDetail::reason("PERMISSION_DENIED")],
        )
    }

    /// 404 for a service account; identical whatever the reason, to prevent enumeration.
    pub fn service_account_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "service account not found",
            vec![ErrorDetail::reason("NOT_FOUND")],
        )
    }

    /// 429 after too many failed token mints; retry after `wait`.
    pub fn too_many_requests(wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs().max(1);
        Self {
            retry_after: Some(seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed attempts; retry in {seconds} s"),
                vec![ErrorDetail::reason("TOO_MANY_FAILED_ATTEMPTS")],
            )
        }
    }

    /// 503 when storage is unreachable; clients may retry.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is temporarily unavailable",
            vec![ErrorDetail::reason("UNAVAILABLE")],
        )
    }

    /// 503 when a request ran out of its deadline (a stalled database); clients may retry.
    pub fn deadline_exceeded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request did not complete in time; retry",
            vec![ErrorDetail::reason("UNAVAILABLE")],
        )
    }

    /// 500 with a generic body. Log the cause before calling this.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            vec![ErrorDetail::reason("INTERNAL")],
        )
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Whether one of the details has `reason`.
    pub fn has_reason(&self, reason: &str) -> bool {
        self.details.iter().any(|d| d.reason == reason)
    }

    pub(crate) fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                code: self.status.as_u16(),
                message: self.message.clone(),
                details: self.details.clone(),
            },
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(challenge) = self.challenge {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            ));
        }
        let retry_after = match self.status {
            StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => self.retry_after,
        };
        if let Some(seconds) = retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(self.envelope())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "storage unavailable");
                Self::unavailable()
            }
            StoreError::Unexpected(cause) => {
                tracing::error!(error = %cause, "storage failure");
                Self::internal()
            }
        }
    }
}

/// The JSON path of a domain [`Field`] in the request (or, for the acting-as rule, in the
/// account's representation).
pub fn json_path(field: Field) -> String {
    match field {
        Field::Scope => "scope".to_owned(),
        Field::ScopeId => "scopeId".to_owned(),
        Field::Role(index) => format!("roles[{index}]"),
        Field::ExpiresAt => "expiresAt".to_owned(),
        Field::Issuer => "issuer".to_owned(),
    }
}

impl From<Violation> for ErrorDetail {
    fn from(violation: Violation) -> Self {
        Self {
            reason: violation.reason.code().to_owned(),
            field: violation.field.map(json_path),
            message: Some(violation.message),
        }
    }
}

impl ApiError {
    /// 403: the caller does not hold every role of the account it would act as.
    fn acting_as_refused(violations: Vec<Violation>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "you may only do this for a service account whose roles you all hold",
            violations.into_iter().map(ErrorDetail::from).collect(),
        )
    }

    /// 422 listing every broken rule.
    fn rejected(violations: Vec<Violation>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the request breaks the organization's rules",
            violations.into_iter().map(ErrorDetail::from).collect(),
        )
    }

    /// 500 for a failure that is no client's fault; the cause is logged here, once.
    pub(crate) fn internal_because(cause: &(dyn std::error::Error + Send + Sync)) -> Self {
        tracing::error!(error = %cause, source = ?cause.source(), "internal failure");
        Self::internal()
    }
}

impl From<ServiceAccountError> for ApiError {
    fn from(error: ServiceAccountError) -> Self {
        match error {
            ServiceAccountError::Forbidden => Self::forbidden(),
            ServiceAccountError::ActingAsRefused(violations) => Self::acting_as_refused(violations),
            ServiceAccountError::NotFound => Self::service_account_not_found(),
            ServiceAccountError::TokenNotLive => Self::unauthorized(),
            ServiceAccountError::Rejected(violations) => Self::rejected(violations),
            ServiceAccountError::AlreadyExists => Self::new(
                StatusCode::CONFLICT,
                "a service account with this id already exists",
                vec![ErrorDetail::field(
                    "id",
                    "ALREADY_EXISTS",
                    "choose another id",
                )],
            ),
            ServiceAccountError::PreconditionFailed => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "the service account changed since the given ETag",
                vec![ErrorDetail::reason("PRECONDITION_FAILED")],
            ),
            ServiceAccountError::ConcurrentModification => Self::new(
                StatusCode::CONFLICT,
                "the service account was changed concurrently; retry",
                vec![ErrorDetail::reason("CONCURRENT_MODIFICATION")],
            ),
            ServiceAccountError::IdempotencyClaimLost => crate::idempotency::in_progress(),
            ServiceAccountError::Store(error) => error.into(),
            ServiceAccountError::Internal(cause) => Self::internal_because(&*cause),
        }
    }
}

impl From<CredentialError> for ApiError {
    fn from(error: CredentialError) -> Self {
        match error {
            CredentialError::NotFound => Self::service_account_not_found(),
            CredentialError::TokenNotLive => Self::unauthorized(),
            CredentialError::ActingAsRefused(violations) => Self::acting_as_refused(violations),
            CredentialError::Rejected(violations) => Self::rejected(violations),
            CredentialError::LimitReached { cap } => Self::new(
                StatusCode::CONFLICT,
                format!(
                    "the service account already has {cap} active credentials; delete one first"
                ),
                vec![ErrorDetail::reason("CREDENTIAL_LIMIT_REACHED")],
            ),
            CredentialError::FederatedLimitReached { cap } => Self::new(
                StatusCode::CONFLICT,
                format!(
                    "the service account already has {cap} federated credentials; delete one first"
                ),
                vec![ErrorDetail::reason("FEDERATED_CREDENTIAL_LIMIT_REACHED")],
            ),
            CredentialError::IdempotencyClaimLost => crate::idempotency::in_progress(),
            CredentialError::Store(error) => error.into(),
            CredentialError::Internal(cause) => Self::internal_because(&*cause),
        }
    }
}
