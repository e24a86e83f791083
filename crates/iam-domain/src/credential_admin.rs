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
    Adapters, CapOutcome, Clock, CredentialStore, Directory, IdGenerator, Recorder,
    ServiceAccountStore, to_storage_precision,
};
use crate::principal::Principal;
use crate::resource_id::{CredentialId, ServiceAccountId};
use crate::role::RoleSlug;
use crate::service_account::ServiceAccount;
use crate::service_account_admin::{
    AdminError, Violation, ViolationReason, tenant_not_provisioned, visible_account_id,
};

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
    ///
    /// # Errors
    /// [`AdminError::NotFound`] (non-admin, missing or foreign account); [`AdminError::Store`].
    pub async fn list(
        &self,
        caller: &Principal,
        account: &str,
        filter: CredentialFilter,
        page: PageRequest,
    ) -> Result<(Page<Credential>, OffsetDateTime), AdminError> {
        let account = visible_account_id(caller, &self.admin_role, account)?;
        let now = self.clock.now_micros();
        let page = self
            .credentials
            .list(&caller.tenant, &account, filter, page, now)
            .await?
            .ok_or(AdminError::NotFound)?;
        Ok((page, now))
    }

    /// Creates a credential expiring at `expires_at` (default: now + the org's default
    /// lifetime) and returns it with its secret. With a `recorder` (the request carried an
    /// `Idempotency-Key`), the record of the response is stored in the same transaction as the
    /// credential, so a retry replays it instead of using a second slot.
    ///
    /// # Errors
    /// [`AdminError::NotFound`]; [`AdminError::ActingAsRefused`] when the caller does not hold
    /// every role of the account; [`AdminError::Rejected`] for an expiry in the past or beyond
    /// the org maximum; [`AdminError::CredentialLimitReached`];
    /// [`AdminError::IdempotencyClaimLost`]; [`AdminError::Store`]; [`AdminError::Internal`].
    pub async fn create(
        &self,
        caller: &Principal,
        context: &RequestContext,
        account: &str,
        expires_at: Option<OffsetDateTime>,
        recorder: Option<&dyn Recorder<CreatedCredential>>,
    ) -> Result<CreatedCredential, AdminError> {
        let now = self.clock.now_micros();
        let sa = self.account_to_act_as(caller, account, now).await?;
        let org = self
            .directory
            .organization(&caller.tenant)
            .await?
            .ok_or_else(|| tenant_not_provisioned(caller))?;
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
                AdminError::Internal(format!("the id generator broke its contract: {e}").into())
            })?;
        let random = self
            .ids
            .secret_bytes()
            .map_err(|e| AdminError::Internal(Box::new(e)))?;
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
            CapOutcome::LimitReached => Err(AdminError::CredentialLimitReached { cap }),
            CapOutcome::AccountGone => Err(AdminError::NotFound),
            CapOutcome::ClaimLost => Err(AdminError::IdempotencyClaimLost),
        }
    }

    /// Whether `caller` may create a credential of `account` now (it may see the account and
    /// holds every role of it), without creating one: what a replayed create must still
    /// satisfy before it hands out the recorded secret again.
    ///
    /// # Errors
    /// [`AdminError::NotFound`]; [`AdminError::ActingAsRefused`]; [`AdminError::Store`].
    pub async fn check_may_create(
        &self,
        caller: &Principal,
        account: &str,
    ) -> Result<(), AdminError> {
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
    ) -> Result<ServiceAccount, AdminError> {
        let account = visible_account_id(caller, &self.admin_role, account)?;
        let sa = self
            .accounts
            .get(&caller.tenant, &account, now)
            .await?
            .ok_or(AdminError::NotFound)?;
        let missing = acting_as_violations(caller, &sa);
        if missing.is_empty() {
            Ok(sa)
        } else {
            Err(AdminError::ActingAsRefused(missing))
        }
    }

    /// Reads one credential. Returns it and the time its status holds for.
    ///
    /// # Errors
    /// [`AdminError::NotFound`] (also for a credential of another account);
    /// [`AdminError::Store`].
    pub async fn get(
        &self,
        caller: &Principal,
        account: &str,
        id: &str,
    ) -> Result<(Credential, OffsetDateTime), AdminError> {
        let account = visible_account_id(caller, &self.admin_role, account)?;
        let id = CredentialId::parse(id).map_err(|_| AdminError::NotFound)?;
        let credential = self
            .credentials
            .get(&caller.tenant, &account, &id)
            .await?
            .ok_or(AdminError::NotFound)?;
        Ok((credential, self.clock.now_micros()))
    }

    /// Deletes a credential; its secret stops working at once.
    ///
    /// # Errors
    /// [`AdminError::NotFound`]; [`AdminError::Store`].
    pub async fn delete(
        &self,
        caller: &Principal,
        context: &RequestContext,
        account: &str,
        id: &str,
    ) -> Result<(), AdminError> {
        let account = visible_account_id(caller, &self.admin_role, account)?;
        let id = CredentialId::parse(id).map_err(|_| AdminError::NotFound)?;
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
            Err(AdminError::NotFound)
        }
    }
}

fn expiry_violation(reason: ViolationReason, message: String) -> AdminError {
    AdminError::Rejected(vec![Violation {
        reason,
        field: Some("expiresAt".into()),
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
mod tests {
    use std::sync::{Arc, Mutex};

    use time::Duration;
    use time::macros::datetime;

    use super::*;
    use crate::client_secret::check_format;
    use crate::credential::CredentialStatus;
    use crate::fakes::{
        Fakes, FixedClock, Memory, SeqIds, block_on, principal, role, seeded_memory,
    };
    use crate::pagination::{PagePosition, PageSize};
    use crate::ports::{IdempotencyCompletion, IdempotencyKey, RecordError, StoredResponse};
    use crate::scope::Scope;
    use crate::service_account::DisplayName;
    use crate::service_account_admin::{CreateServiceAccount, ServiceAccountAdmin};

    struct World {
        memory: Memory,
        clock: FixedClock,
        accounts: ServiceAccountAdmin<Fakes>,
        credentials: CredentialAdmin<Fakes>,
        hasher: SecretHasher,
    }

    fn world() -> World {
        let memory = seeded_memory();
        let clock = FixedClock(Arc::new(Mutex::new(datetime!(2026-03-01 10:00:00.5 UTC))));
        let hasher = SecretHasher::new(&[42; 32]).unwrap();
        let accounts = ServiceAccountAdmin::<Fakes>::new(
            memory.clone(),
            memory.clone(),
            clock.clone(),
            SeqIds::default(),
            role("admin"),
        );
        let credentials = CredentialAdmin::<Fakes>::new(
            memory.clone(),
            memory.clone(),
            memory.clone(),
            clock.clone(),
            SeqIds::default(),
            hasher.clone(),
            role("admin"),
        );
        let w = World {
            memory,
            clock,
            accounts,
            credentials,
            hasher,
        };
        let request = CreateServiceAccount {
            id: Some(ServiceAccountId::parse("sa-ci").unwrap()),
            display_name: DisplayName::parse("CI").unwrap(),
            description: None,
            scope: Scope::Organization,
            scope_id: "org-acme".into(),
            roles: vec![],
        };
        block_on(w.accounts.create(&admin(), &ctx(), request, None)).unwrap();
        w
    }

    fn admin() -> Principal {
        principal("org-acme", &["admin"])
    }

    fn ctx() -> RequestContext {
        RequestContext {
            request_id: "req-c".into(),
            source_ip: None,
        }
    }

    fn create(
        w: &World,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<CreatedCredential, AdminError> {
        block_on(
            w.credentials
                .create(&admin(), &ctx(), "sa-ci", expires_at, None),
        )
    }

    fn reason(err: AdminError) -> &'static str {
        match err {
            AdminError::Rejected(v) => v[0].reason.code(),
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    fn all() -> PageRequest {
        PageRequest {
            size: PageSize::new(500).unwrap(),
            position: PagePosition::After(None),
        }
    }

    #[test]
    fn omitted_expiry_is_now_plus_the_org_default_and_the_secret_is_only_hashed() {
        let w = world();
        let created = create(&w, None).unwrap();
        let now = datetime!(2026-03-01 10:00:00.5 UTC);
        assert_eq!(created.credential.expires_at, now + Duration::days(90));
        assert_eq!(created.credential.created_at, now);
        assert!(created.credential.id.as_str().starts_with("cred-"));
        assert_eq!(
            check_format(created.secret.expose()),
            Ok(created.credential.id.clone())
        );
        assert!(
            w.hasher
                .verify(&created.secret, &created.credential.secret_hash)
        );
        let stored = w.memory.state().credentials.clone();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].secret_hash, created.credential.secret_hash);
        let audit = w.memory.state().audit.clone();
        assert_eq!(audit.last().unwrap().action, AuditAction::CredentialCreated);
        assert_eq!(
            audit.last().unwrap().resource,
            format!(
                "service-accounts/sa-ci/credentials/{}",
                created.credential.id
            )
        );
    }

    #[test]
    fn expiry_must_be_in_the_future_and_within_the_org_maximum() {
        let w = world();
        let now = datetime!(2026-03-01 10:00:00.5 UTC);
        assert_eq!(reason(create(&w, Some(now)).unwrap_err()), "EXPIRY_IN_PAST");
        assert_eq!(
            reason(create(&w, Some(now - Duration::days(1))).unwrap_err()),
            "EXPIRY_IN_PAST"
        );
        assert_eq!(
            reason(
                create(
                    &w,
                    Some(now + Duration::days(365) + Duration::microseconds(1))
                )
                .unwrap_err()
            ),
            "EXPIRY_EXCEEDS_MAX"
        );
        assert!(create(&w, Some(now + Duration::days(365))).is_ok());
        assert!(create(&w, Some(now + Duration::microseconds(1))).is_ok());
    }

    #[test]
    fn the_cap_counts_only_active_credentials() {
        let w = world();
        let now = datetime!(2026-03-01 10:00:00.5 UTC);
        create(&w, Some(now + Duration::hours(1))).unwrap();
        for _ in 0..4 {
            create(&w, None).unwrap();
        }
        assert!(matches!(
            create(&w, None),
            Err(AdminError::CredentialLimitReached { cap: 5 })
        ));
        let sa = block_on(w.accounts.get(&admin(), "sa-ci")).unwrap();
        assert_eq!(sa.active_credential_count, 5);

        w.clock.advance(Duration::hours(1));
        let sa = block_on(w.accounts.get(&admin(), "sa-ci")).unwrap();
        assert_eq!(
            sa.active_credential_count, 4,
            "the expired one no longer counts"
        );
        create(&w, None).expect("the expired credential freed a slot");
    }

    #[test]
    fn status_is_computed_and_the_list_filter_agrees_with_it() {
        let w = world();
        let now = datetime!(2026-03-01 10:00:00.5 UTC);
        let short = create(&w, Some(now + Duration::minutes(1)))
            .unwrap()
            .credential;
        let long = create(&w, None).unwrap().credential;
        w.clock.advance(Duration::minutes(1));
        let (page, as_of) =
            block_on(
                w.credentials
                    .list(&admin(), "sa-ci", CredentialFilter::default(), all()),
            )
            .unwrap();
        let statuses: Vec<_> = page.items.iter().map(|c| c.status(as_of)).collect();
        assert_eq!(
            statuses,
            [CredentialStatus::Expired, CredentialStatus::Active]
        );
        let expired = CredentialFilter {
            status: Some(CredentialStatus::Expired),
        };
        let (page, _) = block_on(w.credentials.list(&admin(), "sa-ci", expired, all())).unwrap();
        assert_eq!(
            page.items.iter().map(|c| &c.id).collect::<Vec<_>>(),
            [&short.id]
        );
        let (got, as_of) =
            block_on(w.credentials.get(&admin(), "sa-ci", long.id.as_str())).unwrap();
        assert_eq!(got.status(as_of), CredentialStatus::Active);
    }

    #[test]
    fn creation_is_allowed_on_a_disabled_account() {
        let w = world();
        w.memory.state().accounts[0].status =
            crate::service_account::ServiceAccountStatus::Disabled;
        assert!(create(&w, None).is_ok());
    }

    #[test]
    fn only_a_caller_holding_every_role_of_the_account_may_create_its_credentials() {
        let w = world();
        let strong = CreateServiceAccount {
            id: Some(ServiceAccountId::parse("sa-strong").unwrap()),
            display_name: DisplayName::parse("Strong").unwrap(),
            description: None,
            scope: Scope::Organization,
            scope_id: "org-acme".into(),
            roles: vec![role("admin"), role("storage.writer")],
        };
        let full = principal("org-acme", &["admin", "storage.writer"]);
        block_on(w.accounts.create(&full, &ctx(), strong, None)).unwrap();
        let audit_before = w.memory.state().audit.len();

        // An admin holding only `admin` would gain storage.writer through the secret.
        let err = block_on(
            w.credentials
                .create(&admin(), &ctx(), "sa-strong", None, None),
        )
        .unwrap_err();
        let AdminError::ActingAsRefused(missing) = err else {
            panic!("expected ActingAsRefused, got {err:?}");
        };
        assert_eq!(
            missing
                .iter()
                .map(|v| (v.reason.code(), v.field.as_deref()))
                .collect::<Vec<_>>(),
            [("ROLE_NOT_HELD", Some("roles[1]"))]
        );
        assert!(w.memory.state().credentials.is_empty(), "nothing stored");
        assert_eq!(
            w.memory.state().audit.len(),
            audit_before,
            "nothing audited"
        );

        let created =
            block_on(w.credentials.create(&full, &ctx(), "sa-strong", None, None)).unwrap();
        // Reading, listing and deleting stay admin-only.
        let id = created.credential.id.as_str();
        assert!(block_on(w.credentials.get(&admin(), "sa-strong", id)).is_ok());
        assert!(
            block_on(
                w.credentials
                    .list(&admin(), "sa-strong", CredentialFilter::default(), all())
            )
            .is_ok()
        );
        block_on(w.credentials.delete(&admin(), &ctx(), "sa-strong", id)).unwrap();
    }

    /// Records the credential id as the "response"; or fails, when `fail`.
    struct TestRecorder {
        fail: bool,
    }

    impl Recorder<CreatedCredential> for TestRecorder {
        fn completion(
            &self,
            created: &CreatedCredential,
        ) -> Result<IdempotencyCompletion, RecordError> {
            if self.fail {
                return Err(RecordError("sealing failed".into()));
            }
            Ok(IdempotencyCompletion {
                key: IdempotencyKey {
                    tenant: created.credential.tenant.clone(),
                    subject: "alice".into(),
                    key: "k-1".into(),
                },
                claimed_at: created.credential.created_at,
                response: StoredResponse {
                    status: 201,
                    headers: vec![],
                    body: created.credential.id.as_str().as_bytes().to_vec(),
                },
            })
        }
    }

    #[test]
    fn an_idempotent_create_hands_its_record_to_the_store_with_the_credential() {
        let w = world();
        let recorder = TestRecorder { fail: false };
        let created =
            block_on(
                w.credentials
                    .create(&admin(), &ctx(), "sa-ci", None, Some(&recorder)),
            )
            .unwrap();
        let completions = w.memory.state().completions.clone();
        assert_eq!(completions.len(), 1);
        assert_eq!(
            completions[0].response.body,
            created.credential.id.as_str().as_bytes()
        );

        // A recorder that fails stores nothing at all.
        let broken = TestRecorder { fail: true };
        let counts = |w: &World| {
            let state = w.memory.state();
            (state.credentials.len(), state.audit.len())
        };
        let before = counts(&w);
        let err = block_on(
            w.credentials
                .create(&admin(), &ctx(), "sa-ci", None, Some(&broken)),
        )
        .unwrap_err();
        assert!(matches!(err, AdminError::Internal(_)), "{err:?}");
        assert_eq!(counts(&w), before);

        // A refused create records nothing with the store (its 4xx is recorded apart).
        for _ in 0..4 {
            create(&w, None).unwrap();
        }
        let err = block_on(
            w.credentials
                .create(&admin(), &ctx(), "sa-ci", None, Some(&recorder)),
        )
        .unwrap_err();
        assert!(matches!(err, AdminError::CredentialLimitReached { cap: 5 }));
        assert_eq!(w.memory.state().completions.len(), 1);
    }

    #[test]
    fn non_admins_other_tenants_and_wrong_accounts_get_not_found_everywhere() {
        let w = world();
        let id = create(&w, None).unwrap().credential.id;
        let viewer = principal("org-acme", &["compute.deployer"]);
        let foreign_admin = principal("org-other", &["admin"]);
        for caller in [&viewer, &foreign_admin] {
            let filter = CredentialFilter::default();
            assert!(matches!(
                block_on(w.credentials.list(caller, "sa-ci", filter, all())),
                Err(AdminError::NotFound)
            ));
            assert!(matches!(
                block_on(w.credentials.create(caller, &ctx(), "sa-ci", None, None)),
                Err(AdminError::NotFound)
            ));
            assert!(matches!(
                block_on(w.credentials.get(caller, "sa-ci", id.as_str())),
                Err(AdminError::NotFound)
            ));
            assert!(matches!(
                block_on(w.credentials.delete(caller, &ctx(), "sa-ci", id.as_str())),
                Err(AdminError::NotFound)
            ));
        }
        assert!(matches!(
            block_on(w.credentials.get(&admin(), "sa-other", id.as_str())),
            Err(AdminError::NotFound)
        ));
        assert!(matches!(
            block_on(w.credentials.get(&admin(), "sa-ci", "NOT AN ID")),
            Err(AdminError::NotFound)
        ));
        assert!(matches!(
            block_on(w.credentials.list(
                &admin(),
                "sa-missing",
                CredentialFilter::default(),
                all()
            )),
            Err(AdminError::NotFound)
        ));
        assert_eq!(w.memory.state().credentials.len(), 1, "nothing was deleted");
    }

    #[test]
    fn delete_removes_once_with_one_audit_event_and_account_delete_takes_credentials_along() {
        let w = world();
        let id = create(&w, None).unwrap().credential.id;
        create(&w, None).unwrap();
        let events = w.memory.state().audit.len();
        block_on(w.credentials.delete(&admin(), &ctx(), "sa-ci", id.as_str())).unwrap();
        assert!(matches!(
            block_on(w.credentials.delete(&admin(), &ctx(), "sa-ci", id.as_str())),
            Err(AdminError::NotFound)
        ));
        assert_eq!(w.memory.state().audit.len(), events + 1);
        assert_eq!(
            w.memory.state().audit.last().unwrap().action,
            AuditAction::CredentialDeleted
        );
        block_on(w.accounts.delete(&admin(), &ctx(), "sa-ci")).unwrap();
        assert!(w.memory.state().credentials.is_empty());
    }
}
