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

mod accounts;
mod credentials;
mod federated;
mod idempotency;

pub use federated::FakeAssertions;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::credential::Credential;
use crate::federated_credential::{FederatedCredential, TrustedIssuer};
use crate::organization::{OrgPolicy, OrgSlug, Organization};
use crate::ports::{
    Adapters, Clock, IdGenerator, IdempotencyCompletion, IdempotencyKey, RandomnessUnavailable,
    StoreError, StoredResponse, UpdateOutcome,
};
use crate::principal::{Principal, PrincipalKind, Subject};
use crate::resource_id::{OrgId, ProjectId};
use crate::role::RoleSlug;
use crate::scope::{Scope, ScopeTarget};
use crate::service_account::ServiceAccount;

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
    /// Federated credentials.
    pub federated: Vec<FederatedCredential>,
    /// Issuers organizations trust.
    pub trusted: Vec<(OrgId, TrustedIssuer)>,
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
    type Federated = Memory;
    type Assertions = FakeAssertions;
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
        state.trusted.push((
            org_id("org-acme"),
            TrustedIssuer {
                issuer: crate::federated_credential::Issuer::parse(TRUSTED_ISSUER).unwrap(),
                jwks_uri: None,
            },
        ));
    }
    memory
}

/// The issuer `org-acme` of [`seeded_memory`] trusts.
pub const TRUSTED_ISSUER: &str = "https://issuer.test";

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
