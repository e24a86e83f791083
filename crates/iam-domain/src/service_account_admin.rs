//! Use cases of tenant administrators on service accounts: list, create, get, update, delete.
//!
//! Every rule of the contract for these operations is decided here, once:
//! - only tenant administrators may act ([`Principal::is_tenant_admin`]);
//! - non-admins get [`ServiceAccountError::Forbidden`] on list and create, and
//!   [`ServiceAccountError::NotFound`] — identical to a missing id — on everything naming an account;
//! - the tenant is the caller's, so another tenant's account is simply not found;
//! - scopes must be allowed by the org policy and name an existing target;
//! - roles must exist in the org catalog and be held by the caller (scope-down), on create
//!   and for roles a PATCH adds;
//! - re-enabling a disabled account requires holding every role it ends up with
//!   ([`crate::acting_as`]).

use crate::acting_as::acting_as_violations;
use crate::audit::{AuditAction, AuditEvent, RequestContext};
use crate::organization::Organization;
use crate::pagination::{Page, PageRequest};
use crate::ports::{
    Adapters, Clock, Directory, IdGenerator, IfLive, InsertError, LiveToken, RecordError, Recorder,
    ServiceAccountStore, StoreError, UpdateOutcome,
};
use crate::principal::Principal;
use crate::resource_id::ServiceAccountId;
use crate::role::RoleSlug;
use crate::scope::{Scope, ScopeTarget};
use crate::service_account::{
    ClientId, Description, DisplayName, Revision, ServiceAccount, ServiceAccountFilter,
    ServiceAccountPatch, ServiceAccountStatus, dedup_roles,
};
use crate::violation::{Field, Violation, ViolationReason};
use crate::visibility::{tenant_not_provisioned, visible_account_id};

/// Why a service-account use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceAccountError {
    /// The caller is not a tenant administrator (list and create only).
    #[error("only tenant administrators may do this")]
    Forbidden,
    /// The caller may not act as the service account: it does not hold every role of the
    /// account (re-enabling it). One violation per missing role.
    #[error("the caller lacks {} role(s) of the service account", .0.len())]
    ActingAsRefused(Vec<Violation>),
    /// No such account for this caller: missing, another tenant's, or the caller is no admin.
    #[error("service account not found")]
    NotFound,
    /// The caller's token turned out not to be live (revoked, or its credential or account
    /// gone or inactive) in the read that checked it.
    #[error("the token is no longer live")]
    TokenNotLive,
    /// The request breaks business rules; every violation is listed.
    #[error("the request breaks {} rule(s)", .0.len())]
    Rejected(Vec<Violation>),
    /// An account with the requested id already exists.
    #[error("a service account with this id already exists")]
    AlreadyExists,
    /// `If-Match` named a version that is no longer current.
    #[error("the service account was changed since the given ETag")]
    PreconditionFailed,
    /// A concurrent change won the race (no `If-Match` was given); retry.
    #[error("the service account was changed concurrently")]
    ConcurrentModification,
    /// The request's `Idempotency-Key` was taken over by a retry while this request ran (it
    /// took longer than the abandonment time); nothing was stored, the retry does the work.
    #[error("the idempotency key was claimed by another request")]
    IdempotencyClaimLost,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else failed (a broken contract of an adapter, a response that could not be
    /// recorded).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<RecordError> for ServiceAccountError {
    fn from(error: RecordError) -> Self {
        ServiceAccountError::Internal(Box::new(error))
    }
}

/// The fields of a new service account, already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateServiceAccount {
    /// Requested id; generated (`sa-` + random base32) when `None`.
    pub id: Option<ServiceAccountId>,
    /// Display name.
    pub display_name: DisplayName,
    /// Optional description.
    pub description: Option<Description>,
    /// Organization or project.
    pub scope: Scope,
    /// The organization id or project id.
    pub scope_id: String,
    /// Requested roles (duplicates are dropped).
    pub roles: Vec<RoleSlug>,
}

/// `If-Match` of an update: the entity tags the caller accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No `If-Match`, or `If-Match: *`.
    None,
    /// The current entity tag must be one of these.
    OneOf(Vec<String>),
}

/// The entity tag (`ETag` without quotes) of an account's current state.
///
/// It names the account instance and its revision, so a deleted and re-created account with
/// the same id never matches an old tag.
pub fn entity_tag(account: &ServiceAccount) -> String {
    format!("{}-{}", account.uid.simple(), account.revision.0)
}

/// Service-account administration, generic over the deployment's adapters.
pub struct ServiceAccountAdmin<A: Adapters> {
    store: A::Store,
    directory: A::Directory,
    clock: A::Clock,
    ids: A::Ids,
    admin_role: RoleSlug,
}

impl<A: Adapters> ServiceAccountAdmin<A> {
    /// Builds the use cases; `admin_role` is the role that makes an org-scoped caller a tenant
    /// administrator.
    pub fn new(
        store: A::Store,
        directory: A::Directory,
        clock: A::Clock,
        ids: A::Ids,
        admin_role: RoleSlug,
    ) -> Self {
        Self {
            store,
            directory,
            clock,
            ids,
            admin_role,
        }
    }

    /// Whether `caller` is a tenant administrator (the precondition of every operation here).
    pub fn is_admin(&self, caller: &Principal) -> bool {
        caller.is_tenant_admin(&self.admin_role)
    }

    /// The clock, for adapters that need the same notion of "now" (page tokens, idempotency).
    pub fn clock(&self) -> &A::Clock {
        &self.clock
    }

    /// Creates an account in the caller's tenant. With a `recorder` (the request carried an
    /// `Idempotency-Key`), the record of the response is stored in the same transaction as
    /// the account.
    ///
    /// # Errors
    /// [`ServiceAccountError::Forbidden`] for non-admins; [`ServiceAccountError::Rejected`] listing every
    /// violated rule; [`ServiceAccountError::AlreadyExists`]; [`ServiceAccountError::IdempotencyClaimLost`];
    /// [`ServiceAccountError::Store`]; [`ServiceAccountError::Internal`] when the recorder fails.
    pub async fn create(
        &self,
        caller: &Principal,
        context: &RequestContext,
        request: CreateServiceAccount,
        recorder: Option<&dyn Recorder<ServiceAccount>>,
    ) -> Result<ServiceAccount, ServiceAccountError> {
        if !caller.is_tenant_admin(&self.admin_role) {
            return Err(ServiceAccountError::Forbidden);
        }
        let Some(org) = self.directory.organization(&caller.tenant).await? else {
            return Err(ServiceAccountError::Rejected(vec![tenant_not_provisioned(
                caller,
            )]));
        };

        let target = self
            .resolve_target(&org, request.scope, &request.scope_id)
            .await?;
        let mut violations: Vec<Violation> = target.as_ref().err().cloned().into_iter().collect();
        // Roles are checked where the account will live. Without a valid target, at the
        // organization: the callers here are tenant admins, who hold their roles in all of it.
        let at = target
            .as_ref()
            .map_or_else(|_| ScopeTarget::Organization(org.id.clone()), Clone::clone);
        let indexed: Vec<(usize, &RoleSlug)> = request.roles.iter().enumerate().collect();
        violations.extend(self.role_violations(caller, &org, &at, &indexed).await?);
        let target = match target {
            Ok(target) if violations.is_empty() => target,
            _ => return Err(ServiceAccountError::Rejected(violations)),
        };

        let id = match request.id {
            Some(id) => id,
            None => self.generated_id()?,
        };
        let now = self.clock.now_micros();
        let account = ServiceAccount {
            uid: self.ids.uid(),
            tenant: caller.tenant.clone(),
            client_id: ClientId::derive(&id, &org.slug),
            id,
            display_name: request.display_name,
            description: request.description,
            target,
            roles: dedup_roles(request.roles),
            status: ServiceAccountStatus::Active,
            created_by: caller.subject.clone(),
            created_at: now,
            updated_at: now,
            revision: Revision::FIRST,
            active_credential_count: 0,
        };
        let audit = Self::audit(
            caller,
            context,
            AuditAction::ServiceAccountCreated,
            &account,
            vec![],
        );
        let completion = recorder.map(|r| r.completion(&account)).transpose()?;
        match self
            .store
            .insert(&account, &audit, completion.as_ref())
            .await
        {
            Ok(()) => Ok(account),
            Err(InsertError::Duplicate) => Err(ServiceAccountError::AlreadyExists),
            Err(InsertError::ClaimLost) => Err(ServiceAccountError::IdempotencyClaimLost),
            Err(InsertError::Store(e)) => Err(e.into()),
        }
    }

    /// Reads one account. The liveness of the caller's token is checked in the same round
    /// trip as the read (the caller need not be checked before).
    ///
    /// # Errors
    /// [`ServiceAccountError::NotFound`] when missing, of another tenant, or the caller is no
    /// admin — the last without any liveness check: whoever answers it must check liveness
    /// before saying 404; [`ServiceAccountError::TokenNotLive`]; [`ServiceAccountError::Store`].
    pub async fn get(
        &self,
        caller: &Principal,
        id: &str,
    ) -> Result<ServiceAccount, ServiceAccountError> {
        let id = self.visible_id(caller, id)?;
        let now = self.clock.now_micros();
        let live = LiveToken::of(caller, now).ok_or(ServiceAccountError::TokenNotLive)?;
        match self
            .store
            .get_if_live(&live, &caller.tenant, &id, now)
            .await?
        {
            IfLive::Live(found) => found.ok_or(ServiceAccountError::NotFound),
            IfLive::Dead => Err(ServiceAccountError::TokenNotLive),
        }
    }

    /// Lists the caller's tenant's accounts, checking the liveness of the caller's token in
    /// the same round trip (see [`Self::get`]).
    ///
    /// # Errors
    /// [`ServiceAccountError::Forbidden`] for non-admins (without a liveness check);
    /// [`ServiceAccountError::TokenNotLive`]; [`ServiceAccountError::Store`].
    pub async fn list(
        &self,
        caller: &Principal,
        filter: &ServiceAccountFilter,
        page: PageRequest,
    ) -> Result<Page<ServiceAccount>, ServiceAccountError> {
        if !caller.is_tenant_admin(&self.admin_role) {
            return Err(ServiceAccountError::Forbidden);
        }
        let now = self.clock.now_micros();
        let live = LiveToken::of(caller, now).ok_or(ServiceAccountError::TokenNotLive)?;
        match self
            .store
            .list_if_live(&live, &caller.tenant, filter, page, now)
            .await?
        {
            IfLive::Live(page) => Ok(page),
            IfLive::Dead => Err(ServiceAccountError::TokenNotLive),
        }
    }

    /// Applies a PATCH. A patch that changes nothing stores nothing and returns the account
    /// unchanged (same `updatedAt`, same entity tag, no audit event).
    ///
    /// # Errors
    /// [`ServiceAccountError::NotFound`] as for [`Self::get`]; [`ServiceAccountError::PreconditionFailed`] when
    /// `precondition` no longer matches; [`ServiceAccountError::Rejected`] for added roles outside the
    /// catalog or not held by the caller; [`ServiceAccountError::ActingAsRefused`] when the patch
    /// re-enables a disabled account whose roles the caller does not all hold;
    /// [`ServiceAccountError::ConcurrentModification`]; [`ServiceAccountError::Store`].
    pub async fn update(
        &self,
        caller: &Principal,
        context: &RequestContext,
        id: &str,
        patch: ServiceAccountPatch,
        precondition: &Precondition,
    ) -> Result<ServiceAccount, ServiceAccountError> {
        let id = self.visible_id(caller, id)?;
        let current = self
            .store
            .get(&caller.tenant, &id, self.clock.now_micros())
            .await?
            .ok_or(ServiceAccountError::NotFound)?;
        if let Precondition::OneOf(tags) = precondition {
            let tag = entity_tag(&current);
            if !tags.contains(&tag) {
                return Err(ServiceAccountError::PreconditionFailed);
            }
        }

        if let Some(roles) = &patch.roles {
            let added: Vec<(usize, &RoleSlug)> = roles
                .iter()
                .enumerate()
                .filter(|(_, role)| !current.roles.contains(role))
                .collect();
            if !added.is_empty() {
                let org = self
                    .directory
                    .organization(&caller.tenant)
                    .await?
                    .ok_or_else(|| {
                        ServiceAccountError::Rejected(vec![tenant_not_provisioned(caller)])
                    })?;
                let violations = self
                    .role_violations(caller, &org, &current.target, &added)
                    .await?;
                if !violations.is_empty() {
                    return Err(ServiceAccountError::Rejected(violations));
                }
            }
        }

        let mut updated = current.clone();
        let changed = patch.apply(&mut updated);
        if changed.is_empty() {
            return Ok(current);
        }
        // Re-enabling revives the account's secrets and tokens: acting as it.
        if current.status == ServiceAccountStatus::Disabled
            && updated.status == ServiceAccountStatus::Active
        {
            let missing = acting_as_violations(caller, &updated);
            if !missing.is_empty() {
                return Err(ServiceAccountError::ActingAsRefused(missing));
            }
        }
        updated.updated_at = self.clock.now_micros();
        updated.revision = current.revision.next();
        let audit = Self::audit(
            caller,
            context,
            AuditAction::ServiceAccountUpdated,
            &updated,
            changed,
        );
        match self
            .store
            .update(&updated, current.revision, &audit)
            .await?
        {
            UpdateOutcome::Updated => Ok(updated),
            UpdateOutcome::Gone => Err(ServiceAccountError::NotFound),
            UpdateOutcome::Stale => Err(match precondition {
                Precondition::OneOf(_) => ServiceAccountError::PreconditionFailed,
                Precondition::None => ServiceAccountError::ConcurrentModification,
            }),
        }
    }

    /// Deletes an account and all its credentials.
    ///
    /// # Errors
    /// [`ServiceAccountError::NotFound`] as for [`Self::get`]; [`ServiceAccountError::Store`].
    pub async fn delete(
        &self,
        caller: &Principal,
        context: &RequestContext,
        id: &str,
    ) -> Result<(), ServiceAccountError> {
        let id = self.visible_id(caller, id)?;
        let audit = AuditEvent {
            tenant: caller.tenant.clone(),
            actor: caller.subject.to_string(),
            action: AuditAction::ServiceAccountDeleted,
            resource: resource_name(&id),
            changed_fields: vec![],
            request_id: context.request_id.clone(),
            source_ip: context.source_ip,
            at: self.clock.now_micros(),
        };
        if self.store.delete(&caller.tenant, &id, &audit).await? {
            Ok(())
        } else {
            Err(ServiceAccountError::NotFound)
        }
    }

    /// The parsed id of an account `caller` may address: [`ServiceAccountError::NotFound`] for a
    /// non-admin or a malformed id, exactly as for a missing account. Adapters call this
    /// before validating anything else of a request naming an account, so the uniform 404
    /// comes first (SPEC §3).
    ///
    /// # Errors
    /// [`ServiceAccountError::NotFound`].
    pub fn visible_id(
        &self,
        caller: &Principal,
        raw: &str,
    ) -> Result<ServiceAccountId, ServiceAccountError> {
        visible_account_id(caller, &self.admin_role, raw).ok_or(ServiceAccountError::NotFound)
    }

    /// The target a create names, if the org policy allows its scope and it exists in the
    /// organization; else the violation to report. The one place a requested `scopeId` is
    /// parsed.
    async fn resolve_target(
        &self,
        org: &Organization,
        scope: Scope,
        scope_id: &str,
    ) -> Result<Result<ScopeTarget, Violation>, StoreError> {
        if !org.policy.allows(scope) {
            return Ok(Err(Violation {
                reason: ViolationReason::ScopeNotAllowed,
                field: Some(Field::Scope),
                message: format!("the organization policy does not allow scope {scope}"),
            }));
        }
        let exists = match ScopeTarget::parse(scope, scope_id) {
            Ok(target @ ScopeTarget::Organization(_)) => {
                (target == ScopeTarget::Organization(org.id.clone())).then_some(target)
            }
            Ok(ScopeTarget::Project(project)) => self
                .directory
                .project_exists(&org.id, &project)
                .await?
                .then_some(ScopeTarget::Project(project)),
            Err(_) => None,
        };
        Ok(exists.ok_or_else(|| Violation {
            reason: ViolationReason::ScopeTargetNotFound,
            field: Some(Field::ScopeId),
            message: format!("no {scope} {scope_id:?} in this organization"),
        }))
    }

    /// Violations of the catalog and scope-down rules by `roles` (with their request indexes),
    /// to be held at `target`.
    async fn role_violations(
        &self,
        caller: &Principal,
        org: &Organization,
        target: &ScopeTarget,
        roles: &[(usize, &RoleSlug)],
    ) -> Result<Vec<Violation>, StoreError> {
        if roles.is_empty() {
            return Ok(vec![]);
        }
        let wanted: Vec<RoleSlug> = roles.iter().map(|(_, r)| (*r).clone()).collect();
        let missing = self.directory.missing_roles(&org.id, &wanted).await?;
        let violations = roles
            .iter()
            .filter_map(|(index, role)| {
                let field = Some(Field::Role(*index));
                if missing.contains(role) {
                    Some(Violation {
                        reason: ViolationReason::RoleNotFound,
                        field,
                        message: format!("role {role} is not in the organization's catalog"),
                    })
                } else if !caller.holds(role, target) {
                    Some(Violation {
                        reason: ViolationReason::RoleNotHeld,
                        field,
                        message: format!("you cannot assign role {role}: you do not hold it"),
                    })
                } else {
                    None
                }
            })
            .collect();
        Ok(violations)
    }

    fn generated_id(&self) -> Result<ServiceAccountId, ServiceAccountError> {
        ServiceAccountId::parse(format!("sa-{}", self.ids.random_suffix())).map_err(|e| {
            ServiceAccountError::Internal(
                format!("the id generator broke its contract: {e}").into(),
            )
        })
    }

    fn audit(
        caller: &Principal,
        context: &RequestContext,
        action: AuditAction,
        account: &ServiceAccount,
        changed_fields: Vec<&'static str>,
    ) -> AuditEvent {
        AuditEvent {
            tenant: caller.tenant.clone(),
            actor: caller.subject.to_string(),
            action,
            resource: resource_name(&account.id),
            changed_fields: changed_fields.into_iter().map(str::to_owned).collect(),
            request_id: context.request_id.clone(),
            source_ip: context.source_ip,
            at: account.updated_at,
        }
    }
}

fn resource_name(id: &ServiceAccountId) -> String {
    format!("service-accounts/{id}")
}

#[cfg(test)]
mod tests;
