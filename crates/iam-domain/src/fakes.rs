//! In-memory fakes of every port, a fixed clock and a deterministic id generator: for the
//! domain's unit tests, and (feature `test-support`) for adapters' tests that need no
//! database, and for teams embedding the domain.
//!
//! The fakes keep the contracts of the ports (a create and its idempotency record land
//! together or not at all, a claim taken over is lost, the cap is counted at `now`) so tests
//! on them mean something; [`State::unavailable`] makes the stores fail as an outage would.
#![expect(
    clippy::unwrap_used,
    reason = "test support: ids and slugs of the fixtures are valid by construction"
)]

use std::collections::{BTreeSet, HashMap};
use std::future::{Future, ready};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::credential::{Credential, CredentialFilter};
use crate::organization::{OrgPolicy, OrgSlug, Organization};
use crate::pagination::Cursor;
use crate::pagination::{Page, PagePosition, PageRequest};
use crate::ports::{
    Adapters, CapOutcome, Clock, CredentialStore, Directory, IdGenerator, IdempotencyClaim,
    IdempotencyCompletion, IdempotencyKey, IdempotencyStore, InsertError, RandomnessUnavailable,
    Readiness, ServiceAccountStore, StoreError, StoredResponse, TokenRef, TokenStore,
    UpdateOutcome, UsageRecorder,
};
use crate::principal::{Principal, PrincipalKind, Subject};
use crate::resource_id::{CredentialId, OrgId, ProjectId, ServiceAccountId};
use crate::role::RoleSlug;
use crate::scope::{Scope, ScopeTarget};
use crate::service_account::{
    ClientId, Revision, ServiceAccount, ServiceAccountFilter, ServiceAccountStatus,
};

/// Runs a future that never waits (every fake answers immediately).
///
/// # Panics
/// If the future waits after all.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("fakes never return Pending"),
    }
}

/// Everything the fakes store.
#[derive(Default)]
pub struct State {
    /// Service accounts.
    pub accounts: Vec<ServiceAccount>,
    /// Credentials.
    pub credentials: Vec<Credential>,
    /// Audit events, in the order written.
    pub audit: Vec<AuditEvent>,
    /// The directory's organizations.
    pub orgs: Vec<Organization>,
    /// The directory's projects.
    pub projects: Vec<(OrgId, ProjectId)>,
    /// The directory's role catalogs.
    pub roles: Vec<(OrgId, RoleSlug)>,
    /// While set, every store answers [`StoreError::Unavailable`] (an outage).
    pub unavailable: bool,
    /// Idempotency records by key.
    pub idempotency: HashMap<IdempotencyKey, IdempotencyRecord>,
    /// Simulates a race lost between read and write: the next update returns this.
    pub next_update: Option<UpdateOutcome>,
    /// Revoked tokens: (issuer, jti, until).
    pub revoked: Vec<(String, String, OffsetDateTime)>,
    /// Recorded uses: (credential uid, at, ip).
    pub uses: Vec<(Uuid, OffsetDateTime, Option<std::net::IpAddr>)>,
    /// Credential lookups of token mints (`find_for_mint` calls): the queries a mint issues.
    pub mint_lookups: usize,
    /// Idempotency completions written, with the create they were written with.
    pub completions: Vec<IdempotencyCompletion>,
}

/// One idempotency record of the fakes.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    /// The fingerprint of the request that claimed the key.
    pub fingerprint: [u8; 32],
    /// When it was claimed (identifies the claim).
    pub claimed_at: OffsetDateTime,
    /// The recorded response, once completed.
    pub response: Option<StoredResponse>,
}

/// The in-memory store behind every storage port (clone it to share).
#[derive(Clone, Default)]
pub struct Memory(pub Arc<Mutex<State>>);

impl Memory {
    /// The stored state (locked).
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(Unavailable)` while [`State::unavailable`] is set.
    fn up(&self) -> Result<(), StoreError> {
        if self.state().unavailable {
            Err(StoreError::Unavailable("the fake store is down".into()))
        } else {
            Ok(())
        }
    }
}

impl State {
    /// Records `completion` if its claim is the key's current, unfinished one.
    fn complete(&mut self, completion: &IdempotencyCompletion) -> bool {
        match self.idempotency.get_mut(&completion.key) {
            Some(record)
                if record.claimed_at == completion.claimed_at && record.response.is_none() =>
            {
                record.response = Some(completion.response.clone());
                self.completions.push(completion.clone());
                true
            }
            _ => false,
        }
    }
}

impl Directory for Memory {
    fn organization(
        &self,
        tenant: &OrgId,
    ) -> impl Future<Output = Result<Option<Organization>, StoreError>> + Send {
        ready(Ok(self
            .state()
            .orgs
            .iter()
            .find(|o| o.id == *tenant)
            .cloned()))
    }

    fn project_exists(
        &self,
        tenant: &OrgId,
        project: &ProjectId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let found = self
            .state()
            .projects
            .iter()
            .any(|(o, p)| o == tenant && p == project);
        ready(Ok(found))
    }

    fn missing_roles(
        &self,
        tenant: &OrgId,
        roles: &[RoleSlug],
    ) -> impl Future<Output = Result<Vec<RoleSlug>, StoreError>> + Send {
        let state = self.state();
        let missing = roles
            .iter()
            .filter(|r| !state.roles.iter().any(|(o, c)| o == tenant && c == *r))
            .cloned()
            .collect();
        ready(Ok(missing))
    }
}

impl ServiceAccountStore for Memory {
    fn insert(
        &self,
        account: &ServiceAccount,
        audit: &AuditEvent,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<(), InsertError>> + Send {
        if let Err(e) = self.up() {
            return ready(Err(e.into()));
        }
        let mut state = self.state();
        let result = if state
            .accounts
            .iter()
            .any(|a| a.tenant == account.tenant && a.id == account.id)
        {
            Err(InsertError::Duplicate)
        } else if completion.is_some_and(|c| !state.complete(c)) {
            Err(InsertError::ClaimLost)
        } else {
            state.accounts.push(account.clone());
            state.audit.push(audit.clone());
            Ok(())
        };
        ready(result)
    }

    fn get(
        &self,
        tenant: &OrgId,
        id: &ServiceAccountId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<ServiceAccount>, StoreError>> + Send {
        if let Err(e) = self.up() {
            return ready(Err(e));
        }
        let state = self.state();
        let found = state
            .accounts
            .iter()
            .find(|a| a.tenant == *tenant && a.id == *id)
            .map(|a| state.with_count(a, now));
        ready(Ok(found))
    }

    fn list(
        &self,
        tenant: &OrgId,
        filter: &ServiceAccountFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Page<ServiceAccount>, StoreError>> + Send {
        if let Err(e) = self.up() {
            return ready(Err(e));
        }
        let state = self.state();
        let matching: Vec<ServiceAccount> = state
            .accounts
            .iter()
            .filter(|a| a.tenant == *tenant)
            .filter(|a| filter.scope.is_none_or(|s| a.target.scope() == s))
            .filter(|a| {
                filter
                    .target_id
                    .as_ref()
                    .is_none_or(|id| a.target.id() == id.as_str())
            })
            .filter(|a| filter.status.is_none_or(|s| a.status == s))
            .map(|a| state.with_count(a, now))
            .collect();
        ready(Ok(paginate(matching, page, |a| (a.created_at, a.uid))))
    }

    fn update(
        &self,
        account: &ServiceAccount,
        expected: Revision,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<UpdateOutcome, StoreError>> + Send {
        let mut state = self.state();
        if let Some(outcome) = state.next_update.take() {
            return ready(Ok(outcome));
        }
        let outcome = match state.accounts.iter_mut().find(|a| a.uid == account.uid) {
            None => UpdateOutcome::Gone,
            Some(stored) if stored.revision != expected => UpdateOutcome::Stale,
            Some(stored) => {
                *stored = account.clone();
                state.audit.push(audit.clone());
                UpdateOutcome::Updated
            }
        };
        ready(Ok(outcome))
    }

    fn delete(
        &self,
        tenant: &OrgId,
        id: &ServiceAccountId,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let mut state = self.state();
        let before = state.accounts.len();
        state
            .accounts
            .retain(|a| !(a.tenant == *tenant && a.id == *id));
        let deleted = state.accounts.len() < before;
        if deleted {
            // Like the database's ON DELETE CASCADE.
            state
                .credentials
                .retain(|c| !(c.tenant == *tenant && c.service_account_id == *id));
            state.audit.push(audit.clone());
        }
        ready(Ok(deleted))
    }
}

impl State {
    fn with_count(&self, account: &ServiceAccount, now: OffsetDateTime) -> ServiceAccount {
        let active = self
            .credentials
            .iter()
            .filter(|c| c.service_account_uid == account.uid && c.expires_at > now)
            .count();
        ServiceAccount {
            active_credential_count: u32::try_from(active).unwrap(),
            ..account.clone()
        }
    }
}

/// Cursor or offset paging of `items` ordered by `key`, as the store contract describes.
fn paginate<T>(
    mut items: Vec<T>,
    page: PageRequest,
    key: impl Fn(&T) -> (OffsetDateTime, Uuid),
) -> Page<T> {
    items.sort_by_key(|item| key(item));
    let size = usize::from(page.size.get());
    match page.position {
        PagePosition::Offset(offset) => Page {
            total: Some(items.len() as u64),
            items: items
                .into_iter()
                .skip(usize::try_from(offset).unwrap())
                .take(size)
                .collect(),
            next: None,
        },
        PagePosition::After(cursor) => {
            let rest: Vec<T> = items
                .into_iter()
                .filter(|item| cursor.is_none_or(|c| key(item) > (c.created_at, c.uid)))
                .collect();
            let more = rest.len() > size;
            let items: Vec<T> = rest.into_iter().take(size).collect();
            let next = items.last().filter(|_| more).map(|last| {
                let (created_at, uid) = key(last);
                Cursor { created_at, uid }
            });
            Page {
                items,
                next,
                total: None,
            }
        }
    }
}

impl CredentialStore for Memory {
    fn insert_within_cap(
        &self,
        credential: &Credential,
        cap: u32,
        now: OffsetDateTime,
        audit: &AuditEvent,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<CapOutcome, StoreError>> + Send {
        let mut state = self.state();
        let outcome = if !state
            .accounts
            .iter()
            .any(|a| a.uid == credential.service_account_uid)
        {
            CapOutcome::AccountGone
        } else if state
            .credentials
            .iter()
            .filter(|c| {
                c.service_account_uid == credential.service_account_uid && c.expires_at > now
            })
            .count()
            >= usize::try_from(cap).unwrap()
        {
            CapOutcome::LimitReached
        } else {
            if completion.is_some_and(|c| !state.complete(c)) {
                return ready(Ok(CapOutcome::ClaimLost));
            }
            state.credentials.push(credential.clone());
            state.audit.push(audit.clone());
            CapOutcome::Inserted
        };
        ready(Ok(outcome))
    }

    fn get(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<Option<Credential>, StoreError>> + Send {
        let found = self
            .state()
            .credentials
            .iter()
            .find(|c| c.tenant == *tenant && c.service_account_id == *account && c.id == *id)
            .cloned();
        ready(Ok(found))
    }

    fn list(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        filter: CredentialFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<Page<Credential>>, StoreError>> + Send {
        let state = self.state();
        let exists = state
            .accounts
            .iter()
            .any(|a| a.tenant == *tenant && a.id == *account);
        let result = exists.then(|| {
            let matching: Vec<Credential> = state
                .credentials
                .iter()
                .filter(|c| c.tenant == *tenant && c.service_account_id == *account)
                .filter(|c| filter.status.is_none_or(|s| c.status(now) == s))
                .cloned()
                .collect();
            paginate(matching, page, |c| (c.created_at, c.uid))
        });
        ready(Ok(result))
    }

    fn find_for_mint(
        &self,
        client_id: &ClientId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<Option<(Credential, ServiceAccount)>, StoreError>> + Send {
        let mut state = self.state();
        state.mint_lookups += 1;
        let found = state
            .accounts
            .iter()
            .find(|a| a.client_id == *client_id)
            .and_then(|a| {
                state
                    .credentials
                    .iter()
                    .find(|c| c.service_account_uid == a.uid && c.id == *id)
                    .map(|c| (c.clone(), a.clone()))
            });
        ready(Ok(found))
    }

    fn delete(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let mut state = self.state();
        let before = state.credentials.len();
        state
            .credentials
            .retain(|c| !(c.tenant == *tenant && c.service_account_id == *account && c.id == *id));
        let deleted = state.credentials.len() < before;
        if deleted {
            state.audit.push(audit.clone());
        }
        ready(Ok(deleted))
    }
}

impl TokenStore for Memory {
    fn is_live(
        &self,
        token: TokenRef<'_>,
        service_account: Option<(&ClientId, &CredentialId)>,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let state = self.state();
        let revoked = state
            .revoked
            .iter()
            .any(|(issuer, id, _)| issuer == token.issuer && id == token.id);
        let account_ok = service_account.is_none_or(|(client_id, id)| {
            state.accounts.iter().any(|a| {
                a.client_id == *client_id
                    && a.status == ServiceAccountStatus::Active
                    && state.credentials.iter().any(|c| {
                        c.service_account_uid == a.uid && c.id == *id && c.expires_at > now
                    })
            })
        });
        ready(Ok(!revoked && account_ok))
    }

    fn revoke(
        &self,
        _tenant: &OrgId,
        token: TokenRef<'_>,
        expires_at: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.state()
            .revoked
            .push((token.issuer.to_owned(), token.id.to_owned(), expires_at));
        ready(Ok(()))
    }
}

impl UsageRecorder for Memory {
    fn record_use(&self, credential: Uuid, at: OffsetDateTime, ip: Option<std::net::IpAddr>) {
        self.state().uses.push((credential, at, ip));
    }
}

impl IdempotencyStore for Memory {
    fn claim(
        &self,
        key: &IdempotencyKey,
        fingerprint: &[u8; 32],
        now: OffsetDateTime,
        abandon_after: Duration,
    ) -> impl Future<Output = Result<IdempotencyClaim, StoreError>> + Send {
        if let Err(e) = self.up() {
            return ready(Err(e));
        }
        let mut state = self.state();
        let fresh = IdempotencyRecord {
            fingerprint: *fingerprint,
            claimed_at: now,
            response: None,
        };
        let claim = match state.idempotency.get(key) {
            Some(record)
                if record.claimed_at >= now - Self::RETENTION
                    && (record.response.is_some() || record.claimed_at >= now - abandon_after) =>
            {
                if record.fingerprint != *fingerprint {
                    IdempotencyClaim::Mismatch
                } else if let Some(response) = &record.response {
                    IdempotencyClaim::Replay(response.clone())
                } else {
                    IdempotencyClaim::InProgress
                }
            }
            _ => {
                state.idempotency.insert(key.clone(), fresh);
                IdempotencyClaim::Claimed
            }
        };
        ready(Ok(claim))
    }

    fn complete(
        &self,
        completion: &IdempotencyCompletion,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.state().complete(completion);
        ready(Ok(()))
    }

    fn release(
        &self,
        key: &IdempotencyKey,
        claimed_at: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut state = self.state();
        if state
            .idempotency
            .get(key)
            .is_some_and(|r| r.claimed_at == claimed_at && r.response.is_none())
        {
            state.idempotency.remove(key);
        }
        ready(Ok(()))
    }
}

impl Readiness for Memory {
    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(self.up())
    }
}

/// A clock that stands still until moved (clones share the time).
#[derive(Clone)]
pub struct FixedClock(pub Arc<Mutex<OffsetDateTime>>);

impl FixedClock {
    /// A clock standing at `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        Self(Arc::new(Mutex::new(at)))
    }

    fn time(&self) -> std::sync::MutexGuard<'_, OffsetDateTime> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves the clock by `by`.
    pub fn advance(&self, by: Duration) {
        *self.time() += by;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        *self.time()
    }
}

/// Ids from a counter: uids `00000000-…-000000000001`, suffixes `aaaaaaaaaaaaaaab`, ….
#[derive(Default)]
pub struct SeqIds(AtomicU64);

impl IdGenerator for SeqIds {
    fn uid(&self) -> Uuid {
        Uuid::from_u128(u128::from(self.0.fetch_add(1, Ordering::SeqCst) + 1))
    }

    fn random_suffix(&self) -> String {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        format!("{n:0>16}").replace('0', "a")
    }

    fn secret_bytes(&self) -> Result<zeroize::Zeroizing<[u8; 32]>, RandomnessUnavailable> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        bytes[..8].copy_from_slice(&n.to_be_bytes());
        Ok(bytes)
    }
}

/// The bundle of fakes: [`Memory`] for every store, [`FixedClock`], [`SeqIds`].
pub struct Fakes;

impl Adapters for Fakes {
    type Store = Memory;
    type Credentials = Memory;
    type Tokens = Memory;
    type Usage = Memory;
    type Directory = Memory;
    type Clock = FixedClock;
    type Ids = SeqIds;
}

/// `raw` as an organization id.
///
/// # Panics
/// If `raw` is not one.
pub fn org_id(raw: &str) -> OrgId {
    OrgId::parse(raw).unwrap()
}

/// `raw` as a role slug.
///
/// # Panics
/// If `raw` is not one.
pub fn role(raw: &str) -> RoleSlug {
    RoleSlug::parse(raw).unwrap()
}

/// `org-acme` (slug `acme`, both scopes), project `web`, roles admin/compute.deployer/
/// storage.writer/storage.reader; and `org-other` with project `web` too.
///
/// # Panics
/// Never: the fixtures are valid.
pub fn seeded_memory() -> Memory {
    let memory = Memory::default();
    {
        let mut state = memory.state();
        state.orgs.push(Organization {
            id: org_id("org-acme"),
            slug: OrgSlug::parse("acme").unwrap(),
            policy: OrgPolicy::default(),
        });
        state.orgs.push(Organization {
            id: org_id("org-other"),
            slug: OrgSlug::parse("org-other").unwrap(),
            policy: OrgPolicy::new(
                BTreeSet::from([Scope::Project]),
                Duration::days(1),
                Duration::days(2),
                5,
            )
            .unwrap(),
        });
        for org in ["org-acme", "org-other"] {
            state
                .projects
                .push((org_id(org), ProjectId::parse("web").unwrap()));
            for r in [
                "admin",
                "compute.deployer",
                "storage.writer",
                "storage.reader",
            ] {
                state.roles.push((org_id(org), role(r)));
            }
        }
    }
    memory
}

/// A user `alice@{tenant}` scoped to its whole organization `tenant`, holding `roles`.
///
/// # Panics
/// If `tenant` or a role is not valid.
pub fn principal(tenant: &str, roles: &[&str]) -> Principal {
    Principal {
        subject: Subject::parse(format!("alice@{tenant}")).unwrap(),
        issuer: "urn:test".into(),
        tenant: org_id(tenant),
        target: ScopeTarget::Organization(org_id(tenant)),
        roles: roles.iter().map(|r| role(r)).collect(),
        kind: PrincipalKind::User,
        token_id: format!("jti-{tenant}"),
        credential_id: None,
    }
}
