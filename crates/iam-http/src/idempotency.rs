//! `Idempotency-Key` on POST: a retry with the same key and body within 24 h gets the original
//! status and body without the work being done again.
//!
//! Keys belong to the caller (tenant, issuer, principal kind and subject), and only tenant
//! administrators' requests are recorded or replayed. The fingerprint covers method, path and the
//! exact body bytes; the same key with another request is 422 `IDEMPOTENCY_KEY_REUSED`; a retry
//! while the first request still runs is 409 `IDEMPOTENCY_KEY_IN_PROGRESS` (a claim older than
//! [`RequestDeadline::abandon_claims_after`] belongs to a request that died, and is taken over). Successes and 4xx
//! answers are recorded, their bodies sealed ([`crate::sealing`]) since they may hold a client
//! secret; 5xx answers release the key so a retry can do the work.
//!
//! A success is recorded **in the transaction of the create itself**: the work gets a
//! [`Recording`], turns it into the domain's [`Recorder`] of the created value, and the use
//! case hands the sealed record to the store with the create. So a crash can never commit the
//! create without its record, and a retry replays rather than creating twice. Answers that
//! created nothing (4xx) are recorded on their own afterwards.

use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderName;
use actix_web::{HttpRequest, HttpResponse};
use iam_domain::Principal;
use iam_domain::ports::{
    Clock, IdempotencyClaim, IdempotencyCompletion, IdempotencyKey, IdempotencyStore, RecordError,
    Recorder,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::deadline::RequestDeadline;
use crate::error::{ApiError, ErrorDetail};
use crate::reply::Reply;
use crate::sealing::ResponseSealer;
use crate::{AppState, HttpAdapters};

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on replayed responses.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

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

/// The claim of a request's `Idempotency-Key`, handed to the work of [`run`]: the create turns
/// it (with [`Recording::of`]) into the [`Recorder`] it passes to its use case, which stores
/// the record in the create's own transaction.
pub struct Recording<'a> {
    key: IdempotencyKey,
    claimed_at: OffsetDateTime,
    sealer: &'a ResponseSealer,
}

impl<'a> Recording<'a> {
    /// The recorder of a created `T` whose response is `render(created)`. The handler sends
    /// `render(created)` too once the use case succeeded, so the recorded and the sent
    /// response are the same bytes.
    pub fn of<T>(&'a self, render: fn(&T) -> Result<Reply, ApiError>) -> RecordAs<'a, T> {
        RecordAs {
            recording: self,
            render,
        }
    }

    fn completion(&self, reply: &Reply) -> Result<IdempotencyCompletion, RecordError> {
        let mut response = reply.to_stored();
        let plain = Zeroizing::new(std::mem::take(&mut response.body));
        response.body = self
            .sealer
            .seal(&self.key, &plain)
            .map_err(|e| RecordError(Box::new(e)))?;
        Ok(IdempotencyCompletion {
            key: self.key.clone(),
            claimed_at: self.claimed_at,
            response,
        })
    }
}

/// A [`Recorder`] of created `T`s: renders, then seals (see [`Recording::of`]).
pub struct RecordAs<'a, T> {
    recording: &'a Recording<'a>,
    render: fn(&T) -> Result<Reply, ApiError>,
}

impl<T> Recorder<T> for RecordAs<'_, T> {
    fn completion(&self, created: &T) -> Result<IdempotencyCompletion, RecordError> {
        let reply = (self.render)(created)
            .map_err(|e| RecordError(format!("rendering the response failed: {e}").into()))?;
        self.recording.completion(&reply)
    }
}

/// Runs `work` at most once per idempotency key (when the request has one).
///
/// `work` gets the request's [`Recording`] (`None` without a key) and MUST hand it to its use
/// case (through [`Recording::of`]): a successful answer is then already recorded, in the
/// create's transaction. A 4xx answer is recorded here; a 5xx answer releases the key.
///
/// Before a recorded answer is replayed, `may_replay` must pass: the caller must still be
/// allowed to do the work now (a recorded client secret goes only to a caller who could
/// create it again), else its error is the answer.
///
/// # Errors
/// 400 for a malformed key, 409/422 as described above, whatever `may_replay` refuses with,
/// and whatever `work` returns.
pub async fn run<'s, A, G, F, Fut>(
    state: &'s AppState<A>,
    caller: &Principal,
    req: &HttpRequest,
    body: &[u8],
    may_replay: G,
    work: F,
) -> Result<HttpResponse, ApiError>
where
    A: HttpAdapters,
    G: AsyncFnOnce() -> Result<(), ApiError>,
    F: FnOnce(Option<Recording<'s>>) -> Fut,
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
        return work(None).await.map(Reply::into_response);
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
        .claim(
            &key,
            &fingerprint,
            now,
            RequestDeadline::of(req).abandon_claims_after(),
        )
        .await?
    {
        IdempotencyClaim::Claimed => {}
        IdempotencyClaim::Replay(mut stored) => {
            may_replay().await?;
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
        IdempotencyClaim::InProgress => return Err(in_progress()),
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

    let recording = Recording {
        key,
        claimed_at: now,
        sealer: &state.sealer,
    };
    let key = recording.key.clone();
    let error = match work(Some(recording)).await {
        // Recorded in the create's own transaction.
        Ok(reply) => return Ok(reply.into_response()),
        Err(error) => error,
    };
    if error.has_reason(IN_PROGRESS) {
        // The key was taken over by a retry while this request ran: the key is the retry's
        // now, and nothing was created here. Nothing to record.
        return Err(error);
    }
    if !error.status().is_client_error() {
        if let Err(release) = state.idempotency.release(&key, now).await {
            tracing::warn!(error = %release, "could not release idempotency key");
        }
        return Err(error);
    }
    // Nothing was created: record the refusal on its own. Whatever happens to the record,
    // the client gets its answer (a retry would only be refused again).
    let reply = Reply::from_error(&error);
    let recording = Recording {
        key,
        claimed_at: now,
        sealer: &state.sealer,
    };
    match recording.completion(&reply) {
        Ok(completion) => {
            if let Err(error) = state.idempotency.complete(&completion).await {
                tracing::warn!(%error, "could not record idempotent response");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "could not seal idempotent response; releasing the key");
            if let Err(error) = state.idempotency.release(&recording.key, now).await {
                tracing::warn!(%error, "could not release idempotency key");
            }
        }
    }
    Ok(reply.into_response())
}

const IN_PROGRESS: &str = "IDEMPOTENCY_KEY_IN_PROGRESS";

/// 409: the key's first request is still running.
pub(crate) fn in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "a request with this Idempotency-Key is still being processed",
        vec![ErrorDetail::reason(IN_PROGRESS)],
    )
}
