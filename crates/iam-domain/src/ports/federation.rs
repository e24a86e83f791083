//! Ports of workload identity federation (SPEC §9): the storage of federated credentials and
//! the verification of an external issuer's token.

use std::future::Future;

use time::OffsetDateTime;

use super::{CapOutcome, IdempotencyCompletion, IfLive, LiveToken, StoreError};
use crate::audit::AuditEvent;
use crate::federated_credential::{ExternalSubject, FederatedCredential, Issuer, TrustedIssuer};
use crate::pagination::{Page, PageRequest};
use crate::resource_id::{CredentialId, OrgId, ServiceAccountId};
use crate::service_account::{ClientId, Grantee};

/// What an exchange needs from storage: the account, its federated credentials for the
/// token's issuer and subject, and the organization's trust in that issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedMatch {
    /// The account, as much of it as a token needs.
    pub account: Grantee,
    /// Its federated credentials with the issuer and subject asked for, oldest first.
    pub credentials: Vec<FederatedCredential>,
    /// How the organization trusts the issuer.
    pub trusted: TrustedIssuer,
}

/// Persistence of federated credentials. Every mutation writes its audit event in the same
/// transaction.
pub trait FederatedCredentialStore: Send + Sync + 'static {
    /// Stores `credential` and `audit` (and, when given, `completion`) if its service account
    /// still exists and has fewer than `cap` federated credentials; atomic under any
    /// concurrency and across server instances, as [`super::CredentialStore::insert_within_cap`].
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures; the cap, a vanished account and a lost claim
    /// are outcomes.
    fn insert_federated(
        &self,
        credential: &FederatedCredential,
        cap: u32,
        audit: &AuditEvent,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<CapOutcome, StoreError>> + Send;

    /// Federated credential `id` of account `account` in `tenant`; `None` when either is
    /// missing or they do not belong together.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn get_federated(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<Option<FederatedCredential>, StoreError>> + Send;

    /// One page of account `account`'s federated credentials ordered by `(created_at, uid)`,
    /// with the paging rules of [`super::ServiceAccountStore::list`]; `None` when the account
    /// does not exist in `tenant`.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn list_federated(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Option<Page<FederatedCredential>>, StoreError>> + Send;

    /// [`Self::get_federated`] and the liveness of `live`, in one round trip.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn get_federated_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<IfLive<Option<FederatedCredential>>, StoreError>> + Send;

    /// [`Self::list_federated`] and the liveness of `live`, in one round trip.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn list_federated_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        page: PageRequest,
    ) -> impl Future<Output = Result<IfLive<Option<Page<FederatedCredential>>>, StoreError>> + Send;

    /// Deletes federated credential `id` of account `account` in `tenant` and stores `audit`;
    /// `Ok(false)` (and no audit event) when there was no such credential.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn delete_federated(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The account whose client id is `client_id`, with its federated credentials for
    /// `issuer` and `subject`, when its organization still trusts `issuer`; `None` when there
    /// is no such account, no such credential, or no such trust. One round trip.
    ///
    /// # Errors
    /// [`StoreError`] only for backend failures.
    fn find_for_exchange(
        &self,
        client_id: &ClientId,
        issuer: &str,
        subject: &str,
    ) -> impl Future<Output = Result<Option<FederatedMatch>, StoreError>> + Send;
}

/// An external token's verified claims that an exchange matches against federated
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// `iss` (equal to the trusted issuer it was verified for).
    pub issuer: Issuer,
    /// `sub`.
    pub subject: ExternalSubject,
    /// `aud`, as a list.
    pub audiences: Vec<String>,
    /// `exp`.
    pub expires_at: OffsetDateTime,
}

/// Why an external token was refused (for logs and metrics; clients see one answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionRejected {
    /// The issuer's keys could not be fetched (its JWKS endpoint is down or misbehaves).
    #[error("the issuer's keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// The token is malformed, its signature or claims do not check out.
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

/// Verifies tokens of external issuers (the JWKS fetcher).
pub trait AssertionVerifier: Send + Sync + 'static {
    /// The `iss` and `sub` a token claims, **unverified**: only to find what to verify it
    /// against. `None` when it is not a JWT with both.
    fn peek(&self, assertion: &str) -> Option<(String, String)>;

    /// Verifies `assertion` as a token of `issuer` at `now`: a supported signature by one of
    /// the issuer's keys, `iss` equal to the issuer, `exp` present and not past, `nbf` and
    /// `iat` not in the future (each with the adapter's clock-skew leeway).
    ///
    /// # Errors
    /// [`AssertionRejected`] saying why.
    fn verify(
        &self,
        assertion: &str,
        issuer: &TrustedIssuer,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<VerifiedAssertion, AssertionRejected>> + Send;
}
