//! `Reply`: a fully materialized JSON response that can be both sent and stored for
//! idempotent replay.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, PRAGMA};
use iam_domain::ports::StoredResponse;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::ApiError;

/// A response with its body already serialized. `Debug` leaves out the body (it may hold a
/// client secret), and the body is zeroed when the reply is dropped unsent.
#[derive(Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Zeroizing<Vec<u8>>,
}

/// Room a JSON body gets up front: every body that carries a secret (a credential with its
/// client secret, under 1 KiB) fits, so serializing it never reallocates and leaves no copy of
/// the secret in freed memory.
const INITIAL_BODY_CAPACITY: usize = 2048;

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
        let mut body = Zeroizing::new(Vec::with_capacity(INITIAL_BODY_CAPACITY));
        serde_json::to_writer(&mut *body, value).map_err(|e| {
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
            body: Zeroizing::new(body),
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
            body: self.body.to_vec(),
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
            body: Zeroizing::new(stored.body),
        }
    }

    /// The HTTP response.
    pub fn into_response(mut self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        for (name, value) in std::mem::take(&mut self.headers) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.append_header((name, value));
            }
        }
        // The bytes leave for the client: the framework owns (and frees) them from here.
        response.body(std::mem::take(&mut *self.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_sized_body_is_serialized_without_reallocating() {
        let secret_bearing = serde_json::json!({
            "selfLink": "/v1/regions/global/iam/service-accounts/".to_owned() + &"a".repeat(63)
                + "/credentials/cred-abcdefghijklmnop",
            "uid": "3f0c1d2e-0000-4000-8000-000000000000",
            "id": "cred-abcdefghijklmnop",
            "serviceAccountId": "a".repeat(63),
            "status": "active",
            "expiresAt": "2027-02-26T12:00:00.123456Z",
            "createdBy": "x".repeat(255),
            "createdAt": "2026-11-28T12:00:00.123456Z",
            "lastUsedAt": null,
            "lastUsedIp": null,
            "clientSecret": format!("plt_cs_cred-abcdefghijklmnop_{}", "A".repeat(49)),
        });
        let reply = Reply::json(StatusCode::CREATED, &secret_bearing).unwrap();
        assert!(
            reply.body.len() < INITIAL_BODY_CAPACITY,
            "{}",
            reply.body.len()
        );
        assert_eq!(reply.body.capacity(), INITIAL_BODY_CAPACITY, "never grew");
    }
}
