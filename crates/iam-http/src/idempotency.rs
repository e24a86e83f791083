//! `Idempotency-Key` on POST: a retry with the same key and body within 24 h gets the original
//! status and body without the work being done again.
//!
//! Keys belong to the caller (tenant, issuer, principal kind and subject), and only tenant
//! administrators' requests are recorded or replayed. The fingerprint covers method, path and the
//! exact body bytes; the same key with another request is 422 `IDEMPOTENCY_KEY_REUSED`; a retry
//! while the first request still runs is 409 `IDEMPOTENCY_KEY_IN_PROGRESS`. Successes and 4xx
//! answers are recorded, their bodies sealed ([`crate::sealing`]) since they may hold a client
//! secret; 5xx answers release the key so a retry can do the work.

use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderName;
use actix_web::{HttpRequest, HttpResponse};
use iam_domain::Principal;
use iam_domain::ports::{Adapters, Clock, IdempotencyClaim, IdempotencyKey, IdempotencyStore};
use sha2::{Digest, Sha256};
use time::Duration;

use crate::AppState;
use crate::error::{ApiError, ErrorDetail};
use crate::reply::Reply;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on replayed responses.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// An unfinished claim older than this is taken to be abandoned (its request died).
pub const ABANDON_AFTER: Duration = Duration::seconds(60);

fn key_of(req: &HttpRequest, caller: &Principal) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(vec![ErrorDetail::field(
                "Idempotency-Key",
                "INVALID_IDEMPOTENCY_KEY",
                "must be 1-255 visible ASCII characters",
            )])
        })?;
    Ok(Some(IdempotencyKey {
        tenant: caller.tenant.clone(),
        // The same `sub` from another issuer, or of another kind of principal, is someone else.
        subject: format!(
            "{}\u{1f}{}\u{1f}{}",
            caller.issuer,
            caller.kind.as_str(),
            caller.subject
        ),
        key: key.to_owned(),
    }))
}

/// Runs `work` at most once per idempotency key (when the request has one).
///
/// # Errors
/// 400 for a malformed key, 409/422 as described above, and whatever `work` returns.
pub async fn run<A, F, Fut>(
    state: &AppState<A>,
    caller: &Principal,
    req: &HttpRequest,
    body: &[u8],
    work: F,
) -> Result<HttpResponse, ApiError>
where
    A: Adapters,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    // Only administrators may create anything, so only their requests are recorded or
    // replayed: a replay must never hand a recorded body (a client secret, or a 201 where the
    // caller would get 404) to a caller who may no longer do the work.
    let key = if state.admin.is_admin(caller) {
        key_of(req, caller)?
    } else {
        None
    };
    let Some(key) = key else {
        return work().await.map(Reply::into_response);
    };
    let mut hasher = Sha256::new();
    hasher.update(req.method().as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(req.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    let fingerprint: [u8; 32] = hasher.finalize().into();

    // Microsecond precision, as stored: the claim time identifies the claim.
    let now = state.admin.clock().now_micros();
    match state
        .idempotency
        .claim(&key, &fingerprint, now, ABANDON_AFTER)
        .await?
    {
        IdempotencyClaim::Claimed => {}
        IdempotencyClaim::Replay(mut stored) => {
            stored.body = state.sealer.open(&key, &stored.body).map_err(|e| {
                tracing::error!(error = %e, "a recorded idempotent response does not open");
                ApiError::internal()
            })?;
            // A replay may carry a secret (a credential create): never let a cache keep it,
            // whatever headers were recorded.
            return Ok(Reply::from_stored(stored)
                .header(IDEMPOTENT_REPLAYED, "true")
                .no_store()
                .into_response());
        }
        IdempotencyClaim::InProgress => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still being processed",
                vec![ErrorDetail::reason("IDEMPOTENCY_KEY_IN_PROGRESS")],
            ));
        }
        IdempotencyClaim::Mismatch => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used for a different request",
                vec![ErrorDetail::field(
                    "Idempotency-Key",
                    "IDEMPOTENCY_KEY_REUSED",
                    "use a new key for a new request",
                )],
            ));
        }
    }

    let reply = match work().await {
        Ok(reply) => reply,
        Err(error) if error.status().is_client_error() => Reply::from_error(&error),
        Err(error) => {
            if let Err(release) = state.idempotency.release(&key, now).await {
                tracing::warn!(error = %release, "could not release idempotency key");
            }
            return Err(error);
        }
    };
    // The work is done: whatever happens to the record, the client gets its answer (only a
    // retry would redo the work).
    let mut stored = reply.to_stored();
    match state.sealer.seal(&key, &stored.body) {
        Ok(sealed) => {
            stored.body = sealed;
            if let Err(error) = state.idempotency.complete(&key, now, &stored).await {
                tracing::warn!(%error, "could not record idempotent response");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "could not seal idempotent response; releasing the key");
            if let Err(error) = state.idempotency.release(&key, now).await {
                tracing::warn!(%error, "could not release idempotency key");
            }
        }
    }
    Ok(reply.into_response())
}
