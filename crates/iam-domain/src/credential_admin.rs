//! Use cases of tenant administrators on credentials: list, create, get, delete.
//!
//! The same visibility rules as for service accounts hold: a non-admin, a missing account,
//! another tenant's account, a credential under the wrong account — all are "not found".
//! Creation applies the org policy: default lifetime when `expiresAt` is omitted, no expiry in
//! the past or beyond the maximum lifetime, and at most `maxActiveCredentials` active
//! credentials per account (enforced atomically by the store). Creation is allowed on a
//! disabled account, but only to a caller who holds every role of the account (a secret lets
//! its holder act as the account: [`crate::acting_as`]). The plaintext secret is returned once
//! and never stored.

use time::OffsetDateTime;

use crate::acting_as::acting_as_violations;
use crate::audit::{AuditAction, AuditEvent, RequestContext};
use crate::client_secret::{ClientSecret, SecretHasher};
use crate::credential::{Credential, CredentialFilter};
use crate::pagination::{Page, PageRequest};
use crate::ports::{
    Adapters, CapOutcome, Clock, CredentialStore, Directory, IdGenerator, IfLive, LiveToken,
    RecordError, Recorder, ServiceAccountStore, StoreError, to_storage_precision,
};
use crate::principal::Principal;
use crate::resource_id::{CredentialId, ServiceAccountId};
use crate::role::RoleSlug;
use crate::service_account::ServiceAccount;
use crate::violation::{Field, Violation, ViolationReason};
use crate::visibility::{tenant_not_provisioned, visible_account_id};

/// Why a credential use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// No such account or credential for this caller: missing, another tenant's, a credential
    /// of another account, or the caller is no admin.
    #[error("service account not found")]
    NotFound,
    /// The caller's token turned out not to be live (revoked, or its credential or account
    /// gone or inactive) in the read that checked it.
    #[error("the token is no longer live")]
    TokenNotLive,
    /// The caller may not act as the service account: it does not hold every role of it.
    /// One violation per missing role.
    #[error("the caller lacks {} role(s) of the service account", .0.len())]
    ActingAsRefused(Vec<Violation>),
    /// The request breaks business rules (expiry, an unprovisioned tenant).
    #[error("the request breaks {} rule(s)", .0.len())]
    Rejected(Vec<Violation>),
    /// The service account already has the most active credentials its org allows.
    #[error("the service account already has {cap} active credentials")]
    LimitReached {
        /// The org's `maxActiveCredentials`.
        cap: u32,
    },
    /// The service account already has the most federated credentials allowed
    /// ([`crate::federated_credential::MAX_PER_ACCOUNT`]).
    #[error("the service account already has {cap} federated credentials")]
    FederatedLimitReached {
        /// The cap.
        cap: u32,
    },
    /// The request's `Idempotency-Key` was taken over by a retry while this request ran;
    /// nothing was stored, the retry does the work.
    #[error("the idempotency key was claimed by another request")]
    IdempotencyClaimLost,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else failed: the id generator broke its contract, the OS random source
    /// failed, or a response could not be recorded.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<RecordError> for CredentialError {
    fn from(error: RecordError) -> Self {
        CredentialError::Internal(Box::new(error))
    }
}

/// A newly created credential and its secret (shown once).
#[derive(Debug)]
pub struct CreatedCredential {
    /// The stored credential.
    pub credential: Credential,
    /// The plaintext secret.
    pub secret: ClientSecret,
}

/// Credential administration, generic over the deployment's adapters.
pub struct CredentialAdmin<A: Adapters> {
    credentials: A::Credentials,
    accounts: A::Store,
    directory: A::Directory,
    clock: A::Clock,
    ids: A::Ids,
    hasher: SecretHasher,
    admin_role: RoleSlug,
}

impl<A: Adapters> CredentialAdmin<A> {
    /// Builds the use cases.
    pub fn new(
        credentials: A::Credentials,
        accounts: A::Store,
        directory: A::Directory,
        clock: A::Clock,
        ids: A::Ids,
        hasher: SecretHasher,
        admin_role: RoleSlug,
    ) -> Self {
        Self {
            credentials,
            accounts,
            directory,
            clock,
            ids,
            hasher,
            admin_role,
        }
    }

    /// Lists an account's credentials. Returns the page and the time its statuses hold for.
    /// The liveness of the caller's token is checked in the same round trip.
    ///
    /// # Errors
    /// [`CredentialError::NotFound`] (non-admin — without a liveness check —, missing or
    /// foreign account); [`CredentialError::TokenNotLive`]; [`CredentialError::Store`].
    pub async fn list(
        &self,
        caller: &Principal,
        account: &str,
        filter: CredentialFilter,
        page: PageRequest,
    ) -> Result<(Page<Credential>, OffsetDateTime), CredentialError> {
        let account = visible_account_id(caller, &self.admin_role, account)
            .ok_or(CredentialError::NotFound)?;
        let now = self.clock.now_micros();
        let live = LiveToken::of(caller, now).ok_or(CredentialError::TokenNotLive)?;
        let page = self
            .credentials
            .list_if_live(&live, &caller.tenant, &account, filter, page, now)
            .await?;
        Ok((live_or_not_found(page)?, now))
    }

    /// Creates a credential expiring at `expires_at` (default: now + the org's default
    /// lifetime) and returns it with its secret. With a `recorder` (the request carried an
    /// `Idempotency-Key`), the record of the response is stored in the same transaction as the
    /// credential, so a retry replays it instead of using a second slot.
    ///
    /// # Errors
    /// [`CredentialError::NotFound`]; [`CredentialError::ActingAsRefused`] when the caller does not hold
    /// every role of the account; [`CredentialError::Rejected`] for an expiry in the past or beyond
    /// the org maximum; [`CredentialError::LimitReached`];
    /// [`CredentialError::IdempotencyClaimLost`]; [`CredentialError::Store`]; [`CredentialError::Internal`].
    pub async fn create(
        &self,
        caller: &Principal,
        context: &RequestContext,
        account: &str,
        expires_at: Option<OffsetDateTime>,
        recorder: Option<&dyn Recorder<CreatedCredential>>,
    ) -> Result<CreatedCredential, CredentialError> {
        let now = self.clock.now_micros();
        let sa = self.account_to_act_as(caller, account, now).await?;
        let org = self
            .directory
            .organization(&caller.tenant)
            .await?
            .ok_or_else(|| CredentialError::Rejected(vec![tenant_not_provisioned(caller)]))?;
        let policy = &org.policy;
        // Policies cap lifetimes at 100 years, so these additions cannot overflow; if they
        // ever did, the request is refused rather than the server panicking.
        let latest = now
            .checked_add(policy.credential_max_lifetime())
            .ok_or_else(|| {
                expiry_violation(ViolationReason::ExpiryExceedsMax, "out of range".into())
            })?;
        let expires_at = match expires_at {
            None => now
                .checked_add(policy.credential_default_lifetime())
                .unwrap_or(latest),
            Some(at) => to_storage_precision(at),
        };
        if expires_at <= now {
            return Err(expiry_violation(
                ViolationReason::ExpiryInPast,
                "expiresAt must be in the future".into(),
            ));
        }
        if expires_at > latest {
            return Err(expiry_violation(
                ViolationReason::ExpiryExceedsMax,
                format!(
                    "expiresAt may be at most {} days from now",
                    policy.credential_max_lifetime().whole_days()
                ),
            ));
        }

        let id =
            CredentialId::parse(format!("cred-{}", self.ids.random_suffix())).map_err(|e| {
                CredentialError::Internal(
                    format!("the id generator broke its contract: {e}").into(),
                )
            })?;
        let random = self
            .ids
            .secret_bytes()
            .map_err(|e| CredentialError::Internal(Box::new(e)))?;
        let secret = ClientSecret::generate(&id, &random);
        let credential = Credential {
            uid: self.ids.uid(),
            tenant: caller.tenant.clone(),
            service_account_uid: sa.uid,
            service_account_id: sa.id.clone(),
            secret_hash: self.hasher.hash(&secret),
            id,
            expires_at,
            created_by: caller.subject.clone(),
            created_at: now,
            last_used_at: None,
            last_used_ip: None,
        };
        let audit = audit(
            caller,
            context,
            AuditAction::CredentialCreated,
            &sa.id,
            &credential.id,
            now,
        );
        let cap = policy.max_active_credentials();
        let created = CreatedCredential { credential, secret };
        let completion = recorder.map(|r| r.completion(&created)).transpose()?;
        match self
            .credentials
            .insert_within_cap(&created.credential, cap, now, &audit, completion.as_ref())
            .await?
        {
            CapOutcome::Inserted => Ok(created),
            CapOutcome::LimitReached => Err(CredentialError::LimitReached { cap }),
            CapOutcome::AccountGone => Err(CredentialError::NotFound),
            CapOutcome::ClaimLost => Err(CredentialError::IdempotencyClaimLost),
        }
    }

    /// Whether `caller` may create a credential of `account` now (it may see the account and
    /// holds every role of it), without creating one: what a replayed create must still
    /// satisfy before it hands out the recorded secret again.
    ///
    /// # Errors
    /// [`CredentialError::NotFound`]; [`CredentialError::ActingAsRefused`]; [`CredentialError::Store`].
    pub async fn check_may_create(
        &self,
        caller: &Principal,
        account: &str,
    ) -> Result<(), CredentialError> {
        self.account_to_act_as(caller, account, self.clock.now_micros())
            .await
            .map(|_| ())
    }

    /// The account `caller` names, if it may see it and act as it (hold all its roles).
    async fn account_to_act_as(
        &self,
        caller: &Principal,
        account: &str,
        now: OffsetDateTime,
    ) -> Result<ServiceAccount, CredentialError> {
        account_to_act_as(&self.accounts, &self.admin_role, caller, account, now).await
    }

    /// Reads one credential. Returns it and the time its status holds for. The liveness of
    /// the caller's token is checked in the same round trip.
    ///
    /// # Errors
    /// [`CredentialError::NotFound`] (also for a credential of another account; for a
    /// non-admin without a liveness check); [`CredentialError::TokenNotLive`];
    /// [`CredentialError::Store`].
    pub async fn get(
        &self,
        caller: &Principal,
        account: &str,
        id: &str,
    ) -> Result<(Credential, OffsetDateTime), CredentialError> {
        let account = visible_account_id(caller, &self.admin_role, account)
            .ok_or(CredentialError::NotFound)?;
        let id = CredentialId::parse(id).map_err(|_| CredentialError::NotFound)?;
        let now = self.clock.now_micros();
        let live = LiveToken::of(caller, now).ok_or(CredentialError::TokenNotLive)?;
        let credential = self
            .credentials
            .get_if_live(&live, &caller.tenant, &account, &id)
            .await?;
        Ok((live_or_not_found(credential)?, now))
    }

    /// Deletes a credential; its secret stops working at once.
    ///
    /// # Errors
    /// [`CredentialError::NotFound`]; [`CredentialError::Store`].
    pub async fn delete(
        &self,
        caller: &Principal,
        context: &RequestContext,
        account: &str,
        id: &str,
    ) -> Result<(), CredentialError> {
        let account = visible_account_id(caller, &self.admin_role, account)
            .ok_or(CredentialError::NotFound)?;
        let id = CredentialId::parse(id).map_err(|_| CredentialError::NotFound)?;
        let now = self.clock.now_micros();
        let audit = audit(
            caller,
            context,
            AuditAction::CredentialDeleted,
            &account,
            &id,
            now,
        );
        if self
            .credentials
            .delete(&caller.tenant, &account, &id, &audit)
            .await?
        {
            Ok(())
        } else {
            Err(CredentialError::NotFound)
        }
    }
}

fn expiry_violation(reason: ViolationReason, message: String) -> CredentialError {
    CredentialError::Rejected(vec![Violation {
        reason,
        field: Some(Field::ExpiresAt),
        message,
    }])
}

fn audit(
    caller: &Principal,
    context: &RequestContext,
    action: AuditAction,
    account: &ServiceAccountId,
    id: &CredentialId,
    at: OffsetDateTime,
) -> AuditEvent {
    AuditEvent {
        tenant: caller.tenant.clone(),
        actor: caller.subject.to_string(),
        action,
        resource: format!("service-accounts/{account}/credentials/{id}"),
        changed_fields: vec![],
        request_id: context.request_id.clone(),
        source_ip: context.source_ip,
        at,
    }
}

#[cfg(test)]
mod tests;

/// The account `caller` names, if it may see it (else [`CredentialError::NotFound`]) and act
/// as it, holding all its roles (else [`CredentialError::ActingAsRefused`]): the one check
/// before giving an account any way to authenticate, secret or federated.
pub(crate) async fn account_to_act_as<S: ServiceAccountStore>(
    accounts: &S,
    admin_role: &RoleSlug,
    caller: &Principal,
    account: &str,
    now: OffsetDateTime,
) -> Result<ServiceAccount, CredentialError> {
    let account =
        visible_account_id(caller, admin_role, account).ok_or(CredentialError::NotFound)?;
    let sa = accounts
        .get(&caller.tenant, &account, now)
        .await?
        .ok_or(CredentialError::NotFound)?;
    let missing = acting_as_violations(caller, &sa);
    if missing.is_empty() {
        Ok(sa)
    } else {
        Err(CredentialError::ActingAsRefused(missing))
    }
}

/// What a read made with the liveness check found: the item, [`CredentialError::NotFound`]
/// when there is none, or [`CredentialError::TokenNotLive`].
pub(crate) fn live_or_not_found<T>(read: IfLive<Option<T>>) -> Result<T, CredentialError> {
    match read {
        IfLive::Live(found) => found.ok_or(CredentialError::NotFound),
        IfLive::Dead => Err(CredentialError::TokenNotLive),
    }
}
