//! Port traits: what the domain needs from the outside world.
//!
//! Adapters implement these (`iam-postgres` for storage, `iam-server` for the clock and
//! randomness); use cases are generic over them through [`Adapters`], so the concrete types
//! meet only in the binary. Every method documents what an adapter MUST return.

use std::error::Error;
use std::future::Future;
use std::net::IpAddr;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use zeroize::Zeroizing;

mod federation;

pub use federation::{
    AssertionRejected, AssertionVerifier, FederatedCredentialStore, FederatedMatch,
    VerifiedAssertion,
};

use crate::audit::AuditEvent;
use crate::credential::{Credential, CredentialFilter, MintCredential};
use crate::federated_credential::TrustedIssuer;
use crate::organization::Organization;
use crate::pagination::{Page, PageRequest};
use crate::resource_id::{CredentialId, OrgId, ProjectId, ServiceAccountId};
use crate::role::RoleSlug;
use crate::service_account::{ClientId, Revision, ServiceAccount, ServiceAccountFilter};

/// A failure of the storage backend, as opposed to an expected outcome such as "not found".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached right now (pool timeout, connection refused, restart);
    /// the request may succeed if retried later.
    #[error("storage is unavailable")]
    Unavailable(#[source] Box<dyn Error + Send + Sync>),
    /// Anything else: a bug or a broken invariant in storage.
    #[error("unexpected storage failure")]
    Unexpected(#[source] Box<dyn Error + Send + Sync>),
}

/// The source of the current time. The only ambient clock read lives in its system adapter.
pub trait Clock: Send + Sync + 'static {
    /// The current time in UTC.
    fn now(&self) -> OffsetDateTime;

    /// The current time truncated to microseconds.
    ///
    /// Why the domain, not the storage adapter, deals in this precision: a use case returns
    /// what it created (`createdAt`, `expiresAt`, the claim time of an idempotency key, the
    /// `(createdAt, uid)` keys of page cursors) straight from memory, before any read-back.
    /// Had it kept nanoseconds that storage then truncates, the 201 of a create would differ
    /// from every later GET of the same resource, a cursor would not match its row, and an
    /// idempotency claim could not be found again by its time. Microseconds are the finest
    /// precision common to the stores the contract expects (PostgreSQL `timestamptz`), and the
    /// domain promises its values survive storage unchanged.
    fn now_micros(&self) -> OffsetDateTime {
        to_storage_precision(self.now())
    }
}

/// `at` truncated to microseconds, the precision storage keeps.
pub fn to_storage_precision(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

/// The OS random source failed (practically never on Linux); the request may be retried.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the operating system's random source failed")]
pub struct RandomnessUnavailable;

/// The source of server-made identifiers and secret material.
pub trait IdGenerator: Send + Sync + 'static {
    /// A fresh random UUID v4.
    fn uid(&self) -> Uuid;
    /// 16 random characters of lowercase RFC 4648 base32 (`a-z`, `2-7`), 80 bits.
    fn random_suffix(&self) -> String;
    /// 32 bytes from the operating system's CSPRNG, for a client secret (zeroed on drop).
    ///
    /// # Errors
    /// [`RandomnessUnavailable`] when the OS random source fails.
    fn secret_bytes(&self) -> Result<Zeroizing<[u8; 32]>, RandomnessUnavailable>;
}

/// Organizations, projects and role catalogs (managed by operators through the directory file).
pub trait Directory: Send + Sync + 'static {
    /// The organization `tenant`, with its policy.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures; an unknown tenant is `Ok(None)`.
    fn organization(
        &self,
        tenant: &OrgId,
    ) -> impl Future<Output = Result<Option<Organization>, StoreError>> + Send;

    /// Whether `project` exists in `tenant`.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn project_exists(
        &self,
        tenant: &OrgId,
        project: &ProjectId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The subset of `roles` that is **not** in `tenant`'s role catalog, in input order.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn missing_roles(
        &self,
        tenant: &OrgId,
        roles: &[RoleSlug],
    ) -> impl Future<Output = Result<Vec<RoleSlug>, StoreError>> + Send;

    /// How `tenant` trusts `issuer` (compared exactly), if it does (SPEC §9).
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn trusted_issuer(
        &self,
        tenant: &OrgId,
        issuer: &str,
    ) -> impl Future<Output = Result<Option<TrustedIssuer>, StoreError>> + Send;
}

/// Why an insert failed.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// An account with the same id already exists in the tenant.
    #[error("a service account with this id already exists")]
    Duplicate,
    /// The idempotency claim the insert was to complete is no longer current (it was
    /// abandoned and taken over by a retry): nothing was stored.
    #[error("the idempotency key was claimed by another request")]
    ClaimLost,
    /// Backend failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result of a conditional update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The row had the expected revision and now holds the new state.
    Updated,
    /// The row exists but its revision differs (someone else changed it first).
    Stale,
    /// The row no longer exists.
    Gone,
}

/// Persistence of service accounts. Every mutation writes its audit event in the same
/// transaction as the change, so a change is never stored without its event or vice versa.
pub trait ServiceAccountStore: Send + Sync + 'static {
    /// Stores a new account and `audit` and, when given, `completion` — all in one
    /// transaction, so that a crash can never leave the account without the record that makes
    /// a retry replay instead of creating again.
    ///
    /// # Errors
    /// [`InsertError::Duplicate`] when `(tenant, id)` exists; [`InsertError::ClaimLost`] when
    /// `completion`'s claim is no longer the key's current, unfinished claim (nothing is
    /// stored then); [`InsertError::Store`] otherwise.
    fn insert(
        &self,
        account: &ServiceAccount,
        audit: &AuditEvent,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<(), InsertError>> + Send;

    /// The account `id` of `tenant`, with its `active_credential_count`: the number of its
    /// credentials with `expires_at > now`.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures; a missing account is `Ok(None)`.
    fn get(
        &self,
        tenant: &OrgId,
        id: &ServiceAccountId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<ServiceAccount>, StoreError>> + Send;

    /// One page of `tenant`'s accounts matching `filter`, ordered by `(created_at, uid)`,
    /// each with its `active_credential_count` at `now` (as for [`Self::get`]).
    ///
    /// In cursor mode the page holds the items strictly after the cursor and `next` is set iff
    /// more matching items exist; `total` is `None`. In offset mode `total` counts all matching
    /// items and `next` is `None`.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn list(
        &self,
        tenant: &OrgId,
        filter: &ServiceAccountFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Page<ServiceAccount>, StoreError>> + Send;

    /// [`Self::get`] and the liveness of `live`, in one round trip.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn get_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        id: &ServiceAccountId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<IfLive<Option<ServiceAccount>>, StoreError>> + Send;

    /// [`Self::list`] and the liveness of `live`, in one round trip.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn list_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        filter: &ServiceAccountFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<IfLive<Page<ServiceAccount>>, StoreError>> + Send;

    /// Replaces the mutable fields, `updated_at` and `revision` of the row with `account.uid`
    /// if its stored revision is `expected`, and stores `audit`.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures; stale or missing rows are outcomes.
    fn update(
        &self,
        account: &ServiceAccount,
        expected: Revision,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<UpdateOutcome, StoreError>> + Send;

    /// Deletes account `id` of `tenant` with all its credentials and stores `audit`;
    /// `Ok(false)` (and no audit event) when it did not exist.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn delete(
        &self,
        tenant: &OrgId,
        id: &ServiceAccountId,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Outcome of [`CredentialStore::insert_within_cap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapOutcome {
    /// Stored (with its audit event).
    Inserted,
    /// The account already has `cap` credentials active at `now`; nothing stored.
    LimitReached,
    /// The account no longer exists; nothing stored.
    AccountGone,
    /// The idempotency claim to complete was taken over by another request; nothing stored.
    ClaimLost,
}

/// Persistence of credentials. Every mutation writes its audit event in the same transaction.
pub trait CredentialStore: Send + Sync + 'static {
    /// Stores `credential` and `audit` (and, when given, `completion`) if its service account
    /// (`credential.service_account_uid` in `credential.tenant`) still exists and has fewer
    /// than `cap` credentials with `expires_at > now`.
    ///
    /// The check and the writes MUST be atomic under any concurrency and across any number of
    /// server instances (lock the account row in the same transaction), and `completion` is
    /// written in that transaction too: a crash never leaves the credential without the record
    /// that makes a retry replay instead of using a second slot.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures; the cap, a vanished account and a lost claim
    /// are outcomes.
    fn insert_within_cap(
        &self,
        credential: &Credential,
        cap: u32,
        now: OffsetDateTime,
        audit: &AuditEvent,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<CapOutcome, StoreError>> + Send;

    /// Credential `id` of account `account` in `tenant`; `None` when the account or the
    /// credential is missing, or the credential belongs to another account.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn get(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<Option<Credential>, StoreError>> + Send;

    /// One page of account `account`'s credentials matching `filter` at `now`, ordered by
    /// `(created_at, uid)`, with the paging rules of [`ServiceAccountStore::list`]; `None` when
    /// the account does not exist in `tenant`.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn list(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        filter: CredentialFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<Page<Credential>>, StoreError>> + Send;

    /// [`Self::get`] and the liveness of `live`, in one round trip.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn get_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<IfLive<Option<Credential>>, StoreError>> + Send;

    /// [`Self::list`] and the liveness of `live`, in one round trip.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn list_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        filter: CredentialFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<IfLive<Option<Page<Credential>>>, StoreError>> + Send;

    /// The credential `id` of the account whose client id is `client_id`, with that account,
    /// as much of both as a token mint checks. `None` when either is missing or they do not
    /// belong together. One round trip.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn find_for_mint(
        &self,
        client_id: &ClientId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<Option<MintCredential>, StoreError>> + Send;

    /// Deletes credential `id` of account `account` in `tenant` and stores `audit`;
    /// `Ok(false)` (and no audit event) when there was no such credential.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn delete(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// A token as revocation names it: its issuer (`iss`) and its id there (`jti`). Issuers pick
/// their ids independently, so the id alone does not name one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRef<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `jti`.
    pub id: &'a str,
}

/// Everything the liveness of one verified token depends on (see [`TokenStore::is_live`]),
/// for a store to check it together with a read, in the same round trip.
#[derive(Debug, Clone)]
pub struct LiveToken<'a> {
    /// The token as revocation names it.
    pub token: TokenRef<'a>,
    /// For a service-account token: its account's client id and the credential (secret or
    /// federated) it was minted with.
    pub service_account: Option<(ClientId, &'a CredentialId)>,
    /// The time its credential must not have expired by.
    pub now: OffsetDateTime,
}

impl<'a> LiveToken<'a> {
    /// What the liveness of `principal`'s token at `now` depends on; `None` when it is dead
    /// whatever storage holds (a service-account token without a credential id).
    pub fn of(principal: &'a crate::Principal, now: OffsetDateTime) -> Option<Self> {
        let service_account = match (principal.kind, &principal.credential_id) {
            (crate::PrincipalKind::ServiceAccount, Some(credential)) => Some((
                ClientId::from_stored(principal.subject.as_str().to_owned()),
                credential,
            )),
            (crate::PrincipalKind::ServiceAccount, None) => return None,
            _ => None,
        };
        Some(Self {
            token: TokenRef {
                issuer: &principal.issuer,
                id: &principal.token_id,
            },
            service_account,
            now,
        })
    }
}

/// The outcome of a read made together with the liveness check of the caller's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfLive<T> {
    /// The token is live; what was read.
    Live(T),
    /// The token is revoked, or its credential or account is gone or inactive: what was read
    /// must not be shown.
    Dead,
}

/// Revoked tokens and the liveness of tokens.
pub trait TokenStore: Send + Sync + 'static {
    /// Whether a token is live at `now`: `token` is not revoked and, when `service_account`
    /// names a client id and credential, that credential exists with `expires_at > now` and
    /// belongs to that account, which is active. A credential id with the prefix `fc-`
    /// ([`crate::federated_credential::is_federated`]) names a federated credential instead,
    /// which must exist, belong to that account, and have an issuer its organization still
    /// trusts. One round trip.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn is_live(
        &self,
        token: TokenRef<'_>,
        service_account: Option<(&ClientId, &CredentialId)>,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records `token` of `tenant` as revoked until `expires_at` (after which the token is
    /// dead anyway and the record may be purged). Revoking twice is not an error.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn revoke(
        &self,
        tenant: &OrgId,
        token: TokenRef<'_>,
        expires_at: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Records successful token mints (`lastUsedAt`, `lastUsedIp`) without making the mint wait
/// for a database write: implementations coalesce in memory and flush periodically.
pub trait UsageRecorder: Send + Sync + 'static {
    /// Notes that `credential` (its `uid`) minted a token at `at` from `ip`. Never blocks.
    fn record_use(&self, credential: Uuid, at: OffsetDateTime, ip: Option<IpAddr>);
}

/// Who an idempotency key belongs to: keys of different callers never collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// The caller's tenant.
    pub tenant: OrgId,
    /// The caller's `sub`.
    pub subject: String,
    /// The `Idempotency-Key` header value (1–255 visible ASCII characters).
    pub key: String,
}

/// A response recorded for replay. `Debug` leaves out the body (it may hold a secret).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// Headers to replay (`Location`, `ETag`, `Content-Type`).
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for StoredResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

/// The recorded response of the claim of `key` made at `claimed_at`: what a create writes
/// in its own transaction (see [`ServiceAccountStore::insert`]) and what
/// [`IdempotencyStore::complete`] writes for answers that created nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyCompletion {
    /// The key.
    pub key: IdempotencyKey,
    /// The `now` given to [`IdempotencyStore::claim`]: it identifies the claim.
    pub claimed_at: OffsetDateTime,
    /// The response to replay (its body as the adapter stores it, e.g. sealed).
    pub response: StoredResponse,
}

/// The response of an idempotent create could not be turned into its record.
#[derive(Debug, thiserror::Error)]
#[error("the response of an idempotent request could not be recorded")]
pub struct RecordError(#[source] pub Box<dyn Error + Send + Sync>);

/// Makes the record of an idempotent create from the value it is about to store. Use cases
/// call it after every check and before the store writes, and hand the result to the store,
/// which writes both in one transaction. The adapter that serves the request implements it
/// (it knows the response the created value becomes).
pub trait Recorder<T: ?Sized>: Sync {
    /// The completion recording `created`'s response.
    ///
    /// # Errors
    /// [`RecordError`] when the response cannot be made or sealed.
    fn completion(&self, created: &T) -> Result<IdempotencyCompletion, RecordError>;
}

/// Outcome of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is new (or its record expired or was abandoned): do the work, then
    /// [`IdempotencyStore::complete`] or [`IdempotencyStore::release`] it.
    Claimed,
    /// The same request was completed before: replay this response.
    Replay(StoredResponse),
    /// The same request is being processed right now by another call.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// Records of `Idempotency-Key` requests, kept for [`IdempotencyStore::RETENTION`].
pub trait IdempotencyStore: Send + Sync + 'static {
    /// How long a completed response is replayed.
    const RETENTION: Duration = Duration::hours(24);

    /// Claims `key` at `now` for a request whose method, path and body hash to
    /// `fingerprint`. `now` must have microsecond precision; it identifies the claim.
    ///
    /// Records older than [`Self::RETENTION`], and unfinished claims older than
    /// `abandon_after`, count as absent.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn claim(
        &self,
        key: &IdempotencyKey,
        fingerprint: &[u8; 32],
        now: OffsetDateTime,
        abandon_after: Duration,
    ) -> impl Future<Output = Result<IdempotencyClaim, StoreError>> + Send;

    /// Records `completion` on its own, for requests that created nothing (a create records
    /// its completion in its own transaction instead). Does nothing if the claim is no longer
    /// the key's current, unfinished claim (it was abandoned and taken over by another
    /// request, or released).
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn complete(
        &self,
        completion: &IdempotencyCompletion,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets the unfinished claim of `key` made at `claimed_at`, whose request produced no
    /// replayable response. Does nothing if that claim is no longer current.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn release(
        &self,
        key: &IdempotencyKey,
        claimed_at: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Readiness of the storage backend (`GET /readyz`).
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when the backend answers and its schema is current.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when unreachable; [`StoreError::Unexpected`] when the schema
    /// is behind the code.
    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The set of adapters the use cases need in one deployment; lets use cases and routes name
/// them with one type parameter.
///
/// [`IdempotencyStore`] and [`Readiness`] are not part of it: only the HTTP adapter uses them
/// (`iam_http::HttpAdapters` extends this bundle with them). They are defined here all the
/// same, because the storage adapter implements them and adapters do not depend on each
/// other; and the record of an idempotent create ([`IdempotencyCompletion`]) travels through
/// the domain's store ports, which write it in the create's own transaction.
pub trait Adapters: Send + Sync + 'static {
    /// Service-account persistence.
    type Store: ServiceAccountStore;
    /// Credential persistence.
    type Credentials: CredentialStore;
    /// Federated credential persistence.
    type Federated: FederatedCredentialStore;
    /// Verification of external issuers' tokens.
    type Assertions: AssertionVerifier;
    /// Revocations and token liveness.
    type Tokens: TokenStore;
    /// Last-use recording.
    type Usage: UsageRecorder;
    /// Organizations, projects, roles.
    type Directory: Directory;
    /// Time.
    type Clock: Clock;
    /// Identifiers.
    type Ids: IdGenerator;
}
