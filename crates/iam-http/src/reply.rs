//! `Reply`: a fully materialized JSON response that can be both sent and stored for
//! idempotent replay.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, PRAGMA};
use iam_domain::ports::StoredResponse;
use serde::Serialize;

use crate::error::ApiError;

/// A response with its body already serialized. `Debug` leaves out the body (it may hold a
/// client secret).
#[derive(Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish_non_exhaustive()
    }
}

impl Reply {
    /// A JSON response.
    ///
    /// # Errors
    /// 500 if `value` cannot be serialized (a bug).
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value).map_err(|e| {
            tracing::error!(error = %e, "response serialization failed");
            ApiError::internal()
        })?;
        Ok(Self {
            status,
            headers: vec![(CONTENT_TYPE, "application/json".to_owned())],
            body,
        })
    }

    /// The error envelope of `error` as a reply.
    pub fn from_error(error: &ApiError) -> Self {
        let body = serde_json::to_vec(&error.envelope()).unwrap_or_default();
        Self {
            status: error.status(),
            headers: vec![(CONTENT_TYPE, "application/json".to_owned())],
            body,
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Marks the reply as never to be stored by a cache (`Cache-Control: no-store`, and
    /// `Pragma: no-cache` for HTTP/1.0 caches), replacing any earlier caching headers. Every
    /// reply that carries a secret gets this.
    #[must_use]
    pub fn no_store(mut self) -> Self {
        self.headers
            .retain(|(name, _)| *name != CACHE_CONTROL && *name != PRAGMA);
        self.headers.push((CACHE_CONTROL, "no-store".to_owned()));
        self.headers.push((PRAGMA, "no-cache".to_owned()));
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reply in storable form.
    pub fn to_stored(&self) -> StoredResponse {
        StoredResponse {
            status: self.status.as_u16(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.clone()))
                .collect(),
            body: self.body.clone(),
        }
    }

    /// Rebuilds a stored reply. Unparseable parts (which we never store) are dropped.
    pub fn from_stored(stored: StoredResponse) -> Self {
        Self {
            status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
            headers: stored
                .headers
                .into_iter()
                .filter_map(|(n, v)| HeaderName::try_from(n).ok().map(|n| (n, v)))
                .collect(),
            body: stored.body,
        }
    }

    /// The HTTP response.
    pub fn into_response(self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.append_header((name, value));
            }
        }
        response.body(self.body)
    }
}
