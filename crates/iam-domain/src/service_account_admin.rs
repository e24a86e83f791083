//! Use cases of tenant administrators on service accounts: list, create, get, update, delete.
//!
//! Every rule of the contract for these operations is decided here, once:
//! - only tenant administrators may act ([`Principal::is_tenant_admin`]);
//! - non-admins get [`AdminError::Forbidden`] on list and create, and
//!   [`AdminError::NotFound`] — identical to a missing id — on everything naming an account;
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
    Adapters, Clock, Directory, IdGenerator, InsertError, RecordError, Recorder,
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

/// A business-rule violation that makes a request unprocessable (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule that was broken.
    pub reason: ViolationReason,
    /// JSON path of the offending field (`scope`, `roles[1]`), when one field is at fault.
    pub field: Option<String>,
    /// Human-readable explanation.
    pub message: String,
}

/// The rules a [`Violation`] can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationReason {
    /// The org policy does not allow this scope.
    ScopeNotAllowed,
    /// `scopeId` names no organization or project the caller's org has.
    ScopeTargetNotFound,
    /// A role is not in the org's role catalog.
    RoleNotFound,
    /// The caller does not hold a role it tries to assign.
    RoleNotHeld,
    /// The caller's organization is not in the directory.
    TenantNotProvisioned,
    /// A credential's `expiresAt` is not in the future.
    ExpiryInPast,
    /// A credential's `expiresAt` is beyond the org's maximum lifetime.
    ExpiryExceedsMax,
}

impl ViolationReason {
    /// The contract's `reason` code.
    pub fn code(self) -> &'static str {
        match self {
            ViolationReason::ScopeNotAllowed => "SCOPE_NOT_ALLOWED",
            ViolationReason::ScopeTargetNotFound => "SCOPE_TARGET_NOT_FOUND",
            ViolationReason::RoleNotFound => "ROLE_NOT_FOUND",
            ViolationReason::RoleNotHeld => "ROLE_NOT_HELD",
            ViolationReason::TenantNotProvisioned => "TENANT_NOT_PROVISIONED",
            ViolationReason::ExpiryInPast => "EXPIRY_IN_PAST",
            ViolationReason::ExpiryExceedsMax => "EXPIRY_EXCEEDS_MAX",
        }
    }
}

/// Why a service-account use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The caller is not a tenant administrator (list and create only).
    #[error("only tenant administrators may do this")]
    Forbidden,
    /// The caller may not act as the service account: it does not hold every role of the
    /// account (creating a credential, re-enabling). One violation per missing role.
    #[error("the caller lacks {} role(s) of the service account", .0.len())]
    ActingAsRefused(Vec<Violation>),
    /// No such account for this caller: missing, another tenant's, or the caller is no admin.
    #[error("service account not found")]
    NotFound,
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
    /// The service account already has the most active credentials its org allows.
    #[error("the service account already has {cap} active credentials")]
    CredentialLimitReached {
        /// The org's `maxActiveCredentials`.
        cap: u32,
    },
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

impl From<RecordError> for AdminError {
    fn from(error: RecordError) -> Self {
        AdminError::Internal(Box::new(error))
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

    /// Lists the caller's tenant's accounts.
    ///
    /// # Errors
    /// [`AdminError::Forbidden`] for non-admins; [`AdminError::Store`].
    pub async fn list(
        &self,
        caller: &Principal,
        filter: &ServiceAccountFilter,
        page: PageRequest,
    ) -> Result<Page<ServiceAccount>, AdminError> {
        if !caller.is_tenant_admin(&self.admin_role) {
            return Err(AdminError::Forbidden);
        }
        Ok(self
            .store
            .list(&caller.tenant, filter, page, self.clock.now_micros())
            .await?)
    }

    /// Creates an account in the caller's tenant. With a `recorder` (the request carried an
    /// `Idempotency-Key`), the record of the response is stored in the same transaction as
    /// the account.
    ///
    /// # Errors
    /// [`AdminError::Forbidden`] for non-admins; [`AdminError::Rejected`] listing every
    /// violated rule; [`AdminError::AlreadyExists`]; [`AdminError::IdempotencyClaimLost`];
    /// [`AdminError::Store`]; [`AdminError::Internal`] when the recorder fails.
    pub async fn create(
        &self,
        caller: &Principal,
        context: &RequestContext,
        request: CreateServiceAccount,
        recorder: Option<&dyn Recorder<ServiceAccount>>,
    ) -> Result<ServiceAccount, AdminError> {
        if !caller.is_tenant_admin(&self.admin_role) {
            return Err(AdminError::Forbidden);
        }
        let Some(org) = self.directory.organization(&caller.tenant).await? else {
            return Err(tenant_not_provisioned(caller));
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
            _ => return Err(AdminError::Rejected(violations)),
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
            Err(InsertError::Duplicate) => Err(AdminError::AlreadyExists),
            Err(InsertError::ClaimLost) => Err(AdminError::IdempotencyClaimLost),
            Err(InsertError::Store(e)) => Err(e.into()),
        }
    }

    /// Reads one account.
    ///
    /// # Errors
    /// [`AdminError::NotFound`] when missing, of another tenant, or the caller is no admin;
    /// [`AdminError::Store`].
    pub async fn get(&self, caller: &Principal, id: &str) -> Result<ServiceAccount, AdminError> {
        let id = self.visible_id(caller, id)?;
        self.store
            .get(&caller.tenant, &id, self.clock.now_micros())
            .await?
            .ok_or(AdminError::NotFound)
    }

    /// Applies a PATCH. A patch that changes nothing stores nothing and returns the account
    /// unchanged (same `updatedAt`, same entity tag, no audit event).
    ///
    /// # Errors
    /// [`AdminError::NotFound`] as for [`Self::get`]; [`AdminError::PreconditionFailed`] when
    /// `precondition` no longer matches; [`AdminError::Rejected`] for added roles outside the
    /// catalog or not held by the caller; [`AdminError::ActingAsRefused`] when the patch
    /// re-enables a disabled account whose roles the caller does not all hold;
    /// [`AdminError::ConcurrentModification`]; [`AdminError::Store`].
    pub async fn update(
        &self,
        caller: &Principal,
        context: &RequestContext,
        id: &str,
        patch: ServiceAccountPatch,
        precondition: &Precondition,
    ) -> Result<ServiceAccount, AdminError> {
        let id = self.visible_id(caller, id)?;
        let current = self
            .store
            .get(&caller.tenant, &id, self.clock.now_micros())
            .await?
            .ok_or(AdminError::NotFound)?;
        if let Precondition::OneOf(tags) = precondition {
            let tag = entity_tag(&current);
            if !tags.contains(&tag) {
                return Err(AdminError::PreconditionFailed);
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
                    .ok_or_else(|| tenant_not_provisioned(caller))?;
                let violations = self
                    .role_violations(caller, &org, &current.target, &added)
                    .await?;
                if !violations.is_empty() {
                    return Err(AdminError::Rejected(violations));
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
                return Err(AdminError::ActingAsRefused(missing));
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
            UpdateOutcome::Gone => Err(AdminError::NotFound),
            UpdateOutcome::Stale => Err(match precondition {
                Precondition::OneOf(_) => AdminError::PreconditionFailed,
                Precondition::None => AdminError::ConcurrentModification,
            }),
        }
    }

    /// Deletes an account and all its credentials.
    ///
    /// # Errors
    /// [`AdminError::NotFound`] as for [`Self::get`]; [`AdminError::Store`].
    pub async fn delete(
        &self,
        caller: &Principal,
        context: &RequestContext,
        id: &str,
    ) -> Result<(), AdminError> {
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
            Err(AdminError::NotFound)
        }
    }

    /// The parsed id of an account `caller` may address: [`AdminError::NotFound`] for a
    /// non-admin or a malformed id, exactly as for a missing account. Adapters call this
    /// before validating anything else of a request naming an account, so the uniform 404
    /// comes first (SPEC §3).
    ///
    /// # Errors
    /// [`AdminError::NotFound`].
    pub fn visible_id(
        &self,
        caller: &Principal,
        raw: &str,
    ) -> Result<ServiceAccountId, AdminError> {
        visible_account_id(caller, &self.admin_role, raw)
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
                field: Some("scope".into()),
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
            field: Some("scopeId".into()),
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
                let field = Some(format!("roles[{index}]"));
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

    fn generated_id(&self) -> Result<ServiceAccountId, AdminError> {
        ServiceAccountId::parse(format!("sa-{}", self.ids.random_suffix())).map_err(|e| {
            AdminError::Internal(format!("the id generator broke its contract: {e}").into())
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

/// The parsed id of an account the caller may see; everything else is "not found", so a
/// non-admin cannot tell an existing account from a missing one.
pub(crate) fn visible_account_id(
    caller: &Principal,
    admin_role: &RoleSlug,
    raw: &str,
) -> Result<ServiceAccountId, AdminError> {
    if !caller.is_tenant_admin(admin_role) {
        return Err(AdminError::NotFound);
    }
    ServiceAccountId::parse(raw).map_err(|_| AdminError::NotFound)
}

pub(crate) fn tenant_not_provisioned(caller: &Principal) -> AdminError {
    AdminError::Rejected(vec![Violation {
        reason: ViolationReason::TenantNotProvisioned,
        field: None,
        message: format!("organization {} is not provisioned", caller.tenant),
    }])
}

fn resource_name(id: &ServiceAccountId) -> String {
    format!("service-accounts/{id}")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use time::Duration;
    use time::macros::datetime;

    use super::*;
    use crate::fakes::{
        Fakes, FixedClock, Memory, SeqIds, block_on, principal, role, seeded_memory,
    };
    use crate::pagination::{PagePosition, PageSize};
    use crate::principal::Principal;

    struct World {
        memory: Memory,
        clock: FixedClock,
        admin: ServiceAccountAdmin<Fakes>,
    }

    fn world() -> World {
        let memory = seeded_memory();
        let clock = FixedClock(Arc::new(Mutex::new(
            datetime!(2026-01-02 03:04:05.123456789 UTC),
        )));
        let admin = ServiceAccountAdmin::<Fakes>::new(
            memory.clone(),
            memory.clone(),
            clock.clone(),
            SeqIds::default(),
            role("admin"),
        );
        World {
            memory,
            clock,
            admin,
        }
    }

    fn acme_admin() -> Principal {
        principal("org-acme", &["admin", "compute.deployer", "storage.reader"])
    }

    fn ctx() -> RequestContext {
        RequestContext {
            request_id: "req-1".into(),
            source_ip: Some("192.0.2.7".parse().unwrap()),
        }
    }

    fn request(id: &str, scope: Scope, scope_id: &str, roles: &[&str]) -> CreateServiceAccount {
        CreateServiceAccount {
            id: Some(ServiceAccountId::parse(id).unwrap()),
            display_name: DisplayName::parse("Pipeline").unwrap(),
            description: None,
            scope,
            scope_id: scope_id.into(),
            roles: roles.iter().map(|r| role(r)).collect(),
        }
    }

    fn create(w: &World, id: &str) -> ServiceAccount {
        block_on(w.admin.create(
            &acme_admin(),
            &ctx(),
            request(id, Scope::Organization, "org-acme", &["compute.deployer"]),
            None,
        ))
        .unwrap()
    }

    fn reasons(err: AdminError) -> Vec<(&'static str, Option<String>)> {
        match err {
            AdminError::Rejected(v) => v.into_iter().map(|v| (v.reason.code(), v.field)).collect(),
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    fn first_page() -> PageRequest {
        PageRequest {
            size: PageSize::default(),
            position: PagePosition::After(None),
        }
    }

    #[test]
    fn create_sets_server_made_fields_and_writes_one_audit_event() {
        let w = world();
        let sa = create(&w, "sa-ci");
        assert_eq!(sa.client_id.as_str(), "sa-ci@acme.iam");
        assert_eq!(sa.status, ServiceAccountStatus::Active);
        assert_eq!(sa.created_by.as_str(), "alice@org-acme");
        assert_eq!(
            sa.created_at,
            datetime!(2026-01-02 03:04:05.123456 UTC),
            "truncated to µs"
        );
        assert_eq!(sa.created_at, sa.updated_at);
        assert_eq!(sa.revision, Revision::FIRST);
        let audit = w.memory.state().audit.clone();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].action, AuditAction::ServiceAccountCreated);
        assert_eq!(audit[0].resource, "service-accounts/sa-ci");
        assert_eq!(audit[0].request_id, "req-1");
        assert_eq!(audit[0].source_ip, ctx().source_ip);
    }

    #[test]
    fn create_without_id_generates_sa_prefixed_id() {
        let w = world();
        let mut req = request("x", Scope::Organization, "org-acme", &[]);
        req.id = None;
        let sa = block_on(w.admin.create(&acme_admin(), &ctx(), req, None)).unwrap();
        assert!(sa.id.as_str().starts_with("sa-"), "{}", sa.id);
        assert_eq!(sa.id.as_str().len(), 19);
    }

    #[test]
    fn non_admins_are_forbidden_to_list_and_create() {
        let w = world();
        let viewer = principal("org-acme", &["compute.deployer"]);
        let err = block_on(
            w.admin
                .list(&viewer, &ServiceAccountFilter::default(), first_page()),
        );
        assert!(matches!(err, Err(AdminError::Forbidden)));
        let req = request("sa-x", Scope::Organization, "org-acme", &[]);
        assert!(matches!(
            block_on(w.admin.create(&viewer, &ctx(), req, None)),
            Err(AdminError::Forbidden)
        ));
        let mut project_admin = acme_admin();
        project_admin.target = ScopeTarget::parse(Scope::Project, "web").unwrap();
        let req = request("sa-x", Scope::Project, "web", &[]);
        assert!(matches!(
            block_on(w.admin.create(&project_admin, &ctx(), req, None)),
            Err(AdminError::Forbidden)
        ));
    }

    #[test]
    fn non_admins_get_not_found_for_existing_accounts_like_for_missing_ones() {
        let w = world();
        create(&w, "sa-ci");
        let viewer = principal("org-acme", &["storage.reader"]);
        for id in ["sa-ci", "sa-missing"] {
            assert!(matches!(
                block_on(w.admin.get(&viewer, id)),
                Err(AdminError::NotFound)
            ));
            let patch = ServiceAccountPatch {
                status: Some(ServiceAccountStatus::Disabled),
                ..ServiceAccountPatch::default()
            };
            assert!(matches!(
                block_on(
                    w.admin
                        .update(&viewer, &ctx(), id, patch, &Precondition::None)
                ),
                Err(AdminError::NotFound)
            ));
            assert!(matches!(
                block_on(w.admin.delete(&viewer, &ctx(), id)),
                Err(AdminError::NotFound)
            ));
        }
        assert_eq!(w.memory.state().accounts.len(), 1, "nothing was deleted");
    }

    #[test]
    fn another_tenants_account_does_not_exist_for_the_caller() {
        let w = world();
        create(&w, "sa-ci");
        let other_admin = principal("org-other", &["admin"]);
        assert!(matches!(
            block_on(w.admin.get(&other_admin, "sa-ci")),
            Err(AdminError::NotFound)
        ));
        assert!(matches!(
            block_on(w.admin.delete(&other_admin, &ctx(), "sa-ci")),
            Err(AdminError::NotFound)
        ));
        let page = block_on(w.admin.list(
            &other_admin,
            &ServiceAccountFilter::default(),
            first_page(),
        ))
        .unwrap();
        assert!(page.items.is_empty());
    }

    #[test]
    fn malformed_ids_are_simply_not_found() {
        let w = world();
        assert!(matches!(
            block_on(w.admin.get(&acme_admin(), "NOT_AN_ID")),
            Err(AdminError::NotFound)
        ));
    }

    #[test]
    fn scope_must_be_allowed_by_policy() {
        let w = world();
        let admin = principal("org-other", &["admin"]);
        let req = request("sa-x", Scope::Organization, "org-other", &[]);
        let err = block_on(w.admin.create(&admin, &ctx(), req, None)).unwrap_err();
        assert_eq!(reasons(err), [("SCOPE_NOT_ALLOWED", Some("scope".into()))]);
    }

    #[test]
    fn scope_target_must_exist_in_the_callers_org() {
        let w = world();
        for (scope, scope_id) in [
            (Scope::Organization, "org-other"),
            (Scope::Project, "missing"),
            (Scope::Project, "Not-An-Id"),
        ] {
            let req = request("sa-x", scope, scope_id, &[]);
            let err = block_on(w.admin.create(&acme_admin(), &ctx(), req, None)).unwrap_err();
            assert_eq!(
                reasons(err),
                [("SCOPE_TARGET_NOT_FOUND", Some("scopeId".into()))]
            );
        }
        let req = request("sa-x", Scope::Project, "web", &[]);
        assert!(block_on(w.admin.create(&acme_admin(), &ctx(), req, None)).is_ok());
    }

    #[test]
    fn every_role_violation_is_reported_with_its_index() {
        let w = world();
        let req = request(
            "sa-x",
            Scope::Project,
            "missing",
            &["compute.deployer", "no.such.role", "storage.writer"],
        );
        let err = block_on(w.admin.create(&acme_admin(), &ctx(), req, None)).unwrap_err();
        assert_eq!(
            reasons(err),
            [
                ("SCOPE_TARGET_NOT_FOUND", Some("scopeId".into())),
                ("ROLE_NOT_FOUND", Some("roles[1]".into())),
                ("ROLE_NOT_HELD", Some("roles[2]".into())),
            ]
        );
        assert!(w.memory.state().accounts.is_empty());
        assert!(w.memory.state().audit.is_empty());
    }

    #[test]
    fn duplicate_id_is_already_exists() {
        let w = world();
        create(&w, "sa-ci");
        let req = request("sa-ci", Scope::Organization, "org-acme", &[]);
        assert!(matches!(
            block_on(w.admin.create(&acme_admin(), &ctx(), req, None)),
            Err(AdminError::AlreadyExists)
        ));
        assert_eq!(w.memory.state().audit.len(), 1);
    }

    #[test]
    fn unprovisioned_tenant_cannot_create() {
        let w = world();
        let admin = principal("org-ghost", &["admin"]);
        let req = request("sa-x", Scope::Organization, "org-ghost", &[]);
        let err = block_on(w.admin.create(&admin, &ctx(), req, None)).unwrap_err();
        assert_eq!(reasons(err), [("TENANT_NOT_PROVISIONED", None)]);
    }

    #[test]
    fn patch_checks_only_added_roles_and_always_allows_removal() {
        let w = world();
        create(&w, "sa-ci");
        // An admin who does not hold compute.deployer may still remove it ...
        let weak_admin = principal("org-acme", &["admin", "storage.reader"]);
        let patch = ServiceAccountPatch {
            roles: Some(vec![role("storage.reader")]),
            ..ServiceAccountPatch::default()
        };
        let sa = block_on(
            w.admin
                .update(&weak_admin, &ctx(), "sa-ci", patch, &Precondition::None),
        )
        .unwrap();
        assert_eq!(sa.roles, [role("storage.reader")]);
        // ... but not add it back, nor add a role outside the catalog.
        let patch = ServiceAccountPatch {
            roles: Some(vec![
                role("storage.reader"),
                role("compute.deployer"),
                role("nope"),
            ]),
            ..ServiceAccountPatch::default()
        };
        let err =
            block_on(
                w.admin
                    .update(&weak_admin, &ctx(), "sa-ci", patch, &Precondition::None),
            )
            .unwrap_err();
        assert_eq!(
            reasons(err),
            [
                ("ROLE_NOT_HELD", Some("roles[1]".into())),
                ("ROLE_NOT_FOUND", Some("roles[2]".into())),
            ]
        );
    }

    #[test]
    fn re_enabling_needs_every_role_of_the_account_disabling_and_renaming_do_not() {
        let w = world();
        create(&w, "sa-ci"); // holds compute.deployer
        let weak_admin = principal("org-acme", &["admin", "storage.reader"]);
        let status = |s| ServiceAccountPatch {
            status: Some(s),
            ..ServiceAccountPatch::default()
        };
        let update = |caller: &Principal, patch| {
            block_on(
                w.admin
                    .update(caller, &ctx(), "sa-ci", patch, &Precondition::None),
            )
        };
        let rename = ServiceAccountPatch {
            display_name: Some(DisplayName::parse("Renamed").unwrap()),
            ..ServiceAccountPatch::default()
        };
        update(&weak_admin, rename).expect("renaming is admin-only");
        update(&weak_admin, status(ServiceAccountStatus::Disabled)).expect("so is disabling");
        let events = w.memory.state().audit.len();

        let err = update(&weak_admin, status(ServiceAccountStatus::Active)).unwrap_err();
        let AdminError::ActingAsRefused(missing) = err else {
            panic!("expected ActingAsRefused, got {err:?}");
        };
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].field.as_deref(), Some("roles[0]"));
        assert_eq!(missing[0].reason, ViolationReason::RoleNotHeld);
        assert_eq!(
            w.memory.state().accounts[0].status,
            ServiceAccountStatus::Disabled
        );
        assert_eq!(w.memory.state().audit.len(), events, "nothing written");

        // Dropping the unheld role in the same PATCH makes it allowed: what counts is the
        // account as it will be.
        let both = ServiceAccountPatch {
            roles: Some(vec![]),
            status: Some(ServiceAccountStatus::Active),
            ..ServiceAccountPatch::default()
        };
        let sa = update(&weak_admin, both).unwrap();
        assert_eq!(sa.status, ServiceAccountStatus::Active);
        assert!(sa.roles.is_empty());
        // An active account set to active again is no re-enabling (and changes nothing).
        update(&weak_admin, status(ServiceAccountStatus::Active)).unwrap();
    }

    #[test]
    fn a_full_admin_may_re_enable() {
        let w = world();
        create(&w, "sa-ci");
        let disable = ServiceAccountPatch {
            status: Some(ServiceAccountStatus::Disabled),
            ..ServiceAccountPatch::default()
        };
        block_on(
            w.admin
                .update(&acme_admin(), &ctx(), "sa-ci", disable, &Precondition::None),
        )
        .unwrap();
        let enable = ServiceAccountPatch {
            status: Some(ServiceAccountStatus::Active),
            ..ServiceAccountPatch::default()
        };
        let sa =
            block_on(
                w.admin
                    .update(&acme_admin(), &ctx(), "sa-ci", enable, &Precondition::None),
            )
            .unwrap();
        assert_eq!(sa.status, ServiceAccountStatus::Active);
    }

    #[test]
    fn patch_updates_fields_bumps_revision_and_audits_changed_fields() {
        let w = world();
        let before = create(&w, "sa-ci");
        w.clock.advance(Duration::minutes(5));
        let patch = ServiceAccountPatch {
            display_name: Some(DisplayName::parse("Renamed").unwrap()),
            description: Some(Some(Description::parse("about").unwrap())),
            status: Some(ServiceAccountStatus::Disabled),
            roles: None,
        };
        let after =
            block_on(
                w.admin
                    .update(&acme_admin(), &ctx(), "sa-ci", patch, &Precondition::None),
            )
            .unwrap();
        assert_eq!(after.display_name.as_str(), "Renamed");
        assert_eq!(after.status, ServiceAccountStatus::Disabled);
        assert_eq!(after.revision, Revision(2));
        assert_eq!(after.updated_at, before.updated_at + Duration::minutes(5));
        assert_eq!(after.created_at, before.created_at);
        let audit = w.memory.state().audit.clone();
        assert_eq!(audit.len(), 2);
        assert_eq!(audit[1].action, AuditAction::ServiceAccountUpdated);
        assert_eq!(
            audit[1].changed_fields,
            ["displayName", "description", "status"]
        );
    }

    #[test]
    fn patch_that_changes_nothing_keeps_updated_at_and_writes_nothing() {
        let w = world();
        let before = create(&w, "sa-ci");
        w.clock.advance(Duration::minutes(5));
        let patch = ServiceAccountPatch {
            display_name: Some(before.display_name.clone()),
            description: Some(None),
            ..ServiceAccountPatch::default()
        };
        let after =
            block_on(
                w.admin
                    .update(&acme_admin(), &ctx(), "sa-ci", patch, &Precondition::None),
            )
            .unwrap();
        assert_eq!(after, before);
        assert_eq!(w.memory.state().audit.len(), 1);
    }

    #[test]
    fn stale_if_match_fails_the_precondition() {
        let w = world();
        let sa = create(&w, "sa-ci");
        let tag = entity_tag(&sa);
        let disable = || ServiceAccountPatch {
            status: Some(ServiceAccountStatus::Disabled),
            ..ServiceAccountPatch::default()
        };
        let fresh = Precondition::OneOf(vec![tag.clone()]);
        let updated = block_on(
            w.admin
                .update(&acme_admin(), &ctx(), "sa-ci", disable(), &fresh),
        )
        .unwrap();
        assert_ne!(entity_tag(&updated), tag);
        assert!(matches!(
            block_on(
                w.admin
                    .update(&acme_admin(), &ctx(), "sa-ci", disable(), &fresh)
            ),
            Err(AdminError::PreconditionFailed)
        ));
    }

    #[test]
    fn a_race_lost_between_read_and_write_is_409_or_412_or_not_found() {
        let w = world();
        create(&w, "sa-ci");
        let disable = || ServiceAccountPatch {
            status: Some(ServiceAccountStatus::Disabled),
            ..ServiceAccountPatch::default()
        };
        let current = entity_tag(&w.memory.state().accounts[0]);
        for (outcome, precondition, expected) in [
            (
                UpdateOutcome::Stale,
                Precondition::None,
                "ConcurrentModification",
            ),
            (
                UpdateOutcome::Stale,
                Precondition::OneOf(vec![current]),
                "PreconditionFailed",
            ),
            (UpdateOutcome::Gone, Precondition::None, "NotFound"),
        ] {
            w.memory.state().next_update = Some(outcome);
            let err =
                block_on(
                    w.admin
                        .update(&acme_admin(), &ctx(), "sa-ci", disable(), &precondition),
                )
                .unwrap_err();
            assert!(
                format!("{err:?}").starts_with(expected),
                "{outcome:?}: {err:?}"
            );
        }
        assert_eq!(
            w.memory.state().audit.len(),
            1,
            "lost races write no audit event"
        );
    }

    #[test]
    fn delete_removes_the_account_once_with_one_audit_event() {
        let w = world();
        create(&w, "sa-ci");
        block_on(w.admin.delete(&acme_admin(), &ctx(), "sa-ci")).unwrap();
        assert!(matches!(
            block_on(w.admin.delete(&acme_admin(), &ctx(), "sa-ci")),
            Err(AdminError::NotFound)
        ));
        let audit = w.memory.state().audit.clone();
        assert_eq!(audit.len(), 2);
        assert_eq!(audit[1].action, AuditAction::ServiceAccountDeleted);
    }

    #[test]
    fn entity_tag_differs_for_a_recreated_account_with_the_same_id() {
        let w = world();
        let first = create(&w, "sa-ci");
        block_on(w.admin.delete(&acme_admin(), &ctx(), "sa-ci")).unwrap();
        let second = create(&w, "sa-ci");
        assert_eq!(first.revision, second.revision);
        assert_ne!(entity_tag(&first), entity_tag(&second));
    }
}
