//! Use cases of tenant administrators on federated credentials (SPEC §9): list, create, get,
//! delete.
//!
//! The rules are those of client secrets ([`crate::credential_admin`]): a non-admin, a missing
//! or foreign account, a credential under another account — all are "not found"; creating one
//! lets its holder act as the account, so the creator must hold every role of the account
//! ([`crate::acting_as`]); at most [`MAX_PER_ACCOUNT`] per account, enforced atomically by the
//! store. The issuer must be one the operator lets the organization trust.

use time::OffsetDateTime;

use crate::audit::{AuditAction, AuditEvent, RequestContext};
use crate::credential_admin::{CredentialError, account_to_act_as, live_or_not_found};
use crate::federated_credential::{
    Audience, FederatedCredential, ID_PREFIX, MAX_PER_ACCOUNT, NewFederatedCredential,
    distinct_audiences,
};
use crate::pagination::{Page, PageRequest};
use crate::ports::{
    Adapters, CapOutcome, Clock, Directory, FederatedCredentialStore, IdGenerator, LiveToken,
    Recorder,
};
use crate::principal::Principal;
use crate::resource_id::{CredentialId, ServiceAccountId};
use crate::role::RoleSlug;
use crate::service_account::ServiceAccount;
use crate::violation::{Field, Violation, ViolationReason};
use crate::visibility::visible_account_id;

/// Federated credential administration, generic over the deployment's adapters.
pub struct FederationAdmin<A: Adapters> {
    federated: A::Federated,
    accounts: A::Store,
    directory: A::Directory,
    clock: A::Clock,
    ids: A::Ids,
    admin_role: RoleSlug,
    default_audience: Audience,
}

impl<A: Adapters> FederationAdmin<A> {
    /// Builds the use cases; `default_audience` (this service's issuer URL) is what a
    /// credential accepts when it names no audience.
    pub fn new(
        federated: A::Federated,
        accounts: A::Store,
        directory: A::Directory,
        clock: A::Clock,
        ids: A::Ids,
        admin_role: RoleSlug,
        default_audience: Audience,
    ) -> Self {
        Self {
            federated,
            accounts,
            directory,
            clock,
            ids,
            admin_role,
            default_audience,
        }
    }

    /// Lists an account's federated credentials, checking the liveness of the caller's token
    /// in the same round trip.
    ///
    /// # Errors
    /// [`CredentialError::NotFound`] (for a non-admin without a liveness check);
    /// [`CredentialError::TokenNotLive`]; [`CredentialError::Store`].
    pub async fn list(
        &self,
        caller: &Principal,
        account: &str,
        page: PageRequest,
    ) -> Result<Page<FederatedCredential>, CredentialError> {
        let account = visible_account_id(caller, &self.admin_role, account)
            .ok_or(CredentialError::NotFound)?;
        let live =
            LiveToken::of(caller, self.clock.now_micros()).ok_or(CredentialError::TokenNotLive)?;
        live_or_not_found(
            self.federated
                .list_federated_if_live(&live, &caller.tenant, &account, page)
                .await?,
        )
    }

    /// Creates a federated credential. With a `recorder` (the request carried an
    /// `Idempotency-Key`), the record of the response is stored in the same transaction.
    ///
    /// # Errors
    /// [`CredentialError::NotFound`]; [`CredentialError::ActingAsRefused`];
    /// [`CredentialError::Rejected`] (`ISSUER_NOT_TRUSTED`);
    /// [`CredentialError::FederatedLimitReached`]; [`CredentialError::IdempotencyClaimLost`];
    /// [`CredentialError::Store`]; [`CredentialError::Internal`].
    pub async fn create(
        &self,
        caller: &Principal,
        context: &RequestContext,
        account: &str,
        request: NewFederatedCredential,
        recorder: Option<&dyn Recorder<FederatedCredential>>,
    ) -> Result<FederatedCredential, CredentialError> {
        let now = self.clock.now_micros();
        let sa = self.account_to_act_as(caller, account, now).await?;
        if self
            .directory
            .trusted_issuer(&caller.tenant, request.issuer.as_str())
            .await?
            .is_none()
        {
            return Err(CredentialError::Rejected(vec![Violation {
                reason: ViolationReason::IssuerNotTrusted,
                field: Some(Field::Issuer),
                message: "the organization does not trust this issuer; an operator lists \
                          trusted issuers in the directory file"
                    .into(),
            }]));
        }
        let id = CredentialId::parse(format!("{ID_PREFIX}{}", self.ids.random_suffix())).map_err(
            |e| {
                CredentialError::Internal(
                    format!("the id generator broke its contract: {e}").into(),
                )
            },
        )?;
        let audiences = if request.audiences.is_empty() {
            vec![self.default_audience.clone()]
        } else {
            distinct_audiences(request.audiences)
        };
        let credential = FederatedCredential {
            uid: self.ids.uid(),
            tenant: caller.tenant.clone(),
            service_account_uid: sa.uid,
            service_account_id: sa.id.clone(),
            id,
            issuer: request.issuer,
            subject: request.subject,
            audiences,
            description: request.description,
            created_by: caller.subject.clone(),
            created_at: now,
            last_used_at: None,
        };
        let audit = audit(
            caller,
            context,
            AuditAction::FederatedCredentialCreated,
            &sa.id,
            &credential.id,
            now,
        );
        let completion = recorder.map(|r| r.completion(&credential)).transpose()?;
        match self
            .federated
            .insert_federated(&credential, MAX_PER_ACCOUNT, &audit, completion.as_ref())
            .await?
        {
            CapOutcome::Inserted => Ok(credential),
            CapOutcome::LimitReached => Err(CredentialError::FederatedLimitReached {
                cap: MAX_PER_ACCOUNT,
            }),
            CapOutcome::AccountGone => Err(CredentialError::NotFound),
            CapOutcome::ClaimLost => Err(CredentialError::IdempotencyClaimLost),
        }
    }

    /// Whether `caller` may create a federated credential of `account` now (it may see the
    /// account and holds every role of it): also what a replayed create must satisfy.
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

    /// Reads one federated credential, checking the liveness of the caller's token in the
    /// same round trip.
    ///
    /// # Errors
    /// [`CredentialError::NotFound`] (also for one of another account; for a non-admin
    /// without a liveness check); [`CredentialError::TokenNotLive`]; [`CredentialError::Store`].
    pub async fn get(
        &self,
        caller: &Principal,
        account: &str,
        id: &str,
    ) -> Result<FederatedCredential, CredentialError> {
        let account = visible_account_id(caller, &self.admin_role, account)
            .ok_or(CredentialError::NotFound)?;
        let id = federated_id(id)?;
        let live =
            LiveToken::of(caller, self.clock.now_micros()).ok_or(CredentialError::TokenNotLive)?;
        live_or_not_found(
            self.federated
                .get_federated_if_live(&live, &caller.tenant, &account, &id)
                .await?,
        )
    }

    /// Deletes a federated credential; tokens minted with it stop working at once.
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
        let id = federated_id(id)?;
        let audit = audit(
            caller,
            context,
            AuditAction::FederatedCredentialDeleted,
            &account,
            &id,
            self.clock.now_micros(),
        );
        if self
            .federated
            .delete_federated(&caller.tenant, &account, &id, &audit)
            .await?
        {
            Ok(())
        } else {
            Err(CredentialError::NotFound)
        }
    }
}

/// A federated credential id from the path; anything else names nothing.
fn federated_id(raw: &str) -> Result<CredentialId, CredentialError> {
    CredentialId::parse(raw)
        .ok()
        .filter(crate::federated_credential::is_federated)
        .ok_or(CredentialError::NotFound)
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
        resource: format!("service-accounts/{account}/federated-credentials/{id}"),
        changed_fields: vec![],
        request_id: context.request_id.clone(),
        source_ip: context.source_ip,
        at,
    }
}

#[cfg(test)]
mod tests;
