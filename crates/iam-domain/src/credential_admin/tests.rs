//! Unit tests of the credential use cases on the in-memory fakes.

use std::sync::{Arc, Mutex};

use time::Duration;
use time::macros::datetime;

use super::*;
use crate::client_secret::check_format;
use crate::credential::CredentialStatus;
use crate::fakes::{
    Fakes, FixedClock, Memory, SeqIds, block_on, org_id, principal, role, seeded_memory,
};
use crate::pagination::{PagePosition, PageSize};
use crate::ports::{
    IdempotencyClaim, IdempotencyCompletion, IdempotencyKey, IdempotencyStore as _, RecordError,
    StoredResponse,
};
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
) -> Result<CreatedCredential, CredentialError> {
    block_on(
        w.credentials
            .create(&admin(), &ctx(), "sa-ci", expires_at, None),
    )
}

fn reason(err: CredentialError) -> &'static str {
    match err {
        CredentialError::Rejected(v) => v[0].reason.code(),
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
        Err(CredentialError::LimitReached { cap: 5 })
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
    let (got, as_of) = block_on(w.credentials.get(&admin(), "sa-ci", long.id.as_str())).unwrap();
    assert_eq!(got.status(as_of), CredentialStatus::Active);
}

#[test]
fn creation_is_allowed_on_a_disabled_account() {
    let w = world();
    w.memory.state().accounts[0].status = crate::service_account::ServiceAccountStatus::Disabled;
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
    let CredentialError::ActingAsRefused(missing) = err else {
        panic!("expected ActingAsRefused, got {err:?}");
    };
    assert_eq!(
        missing
            .iter()
            .map(|v| (v.reason.code(), v.field))
            .collect::<Vec<_>>(),
        [("ROLE_NOT_HELD", Some(Field::Role(1)))]
    );
    assert!(w.memory.state().credentials.is_empty(), "nothing stored");
    assert_eq!(
        w.memory.state().audit.len(),
        audit_before,
        "nothing audited"
    );

    let created = block_on(w.credentials.create(&full, &ctx(), "sa-strong", None, None)).unwrap();
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
    let key = IdempotencyKey {
        tenant: org_id("org-acme"),
        subject: "alice".into(),
        key: "k-1".into(),
    };
    let claim =
        block_on(
            w.memory
                .claim(&key, &[1; 32], w.clock.now_micros(), Duration::minutes(1)),
        );
    assert_eq!(claim.unwrap(), IdempotencyClaim::Claimed);
    let created = block_on(
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

    // The key now replays; a create whose claim is no longer current stores nothing.
    let replay =
        block_on(
            w.memory
                .claim(&key, &[1; 32], w.clock.now_micros(), Duration::minutes(1)),
        );
    assert!(matches!(replay, Ok(IdempotencyClaim::Replay(_))));
    let lost = block_on(
        w.credentials
            .create(&admin(), &ctx(), "sa-ci", None, Some(&recorder)),
    )
    .unwrap_err();
    assert!(
        matches!(lost, CredentialError::IdempotencyClaimLost),
        "{lost:?}"
    );
    assert_eq!(w.memory.state().credentials.len(), 1);

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
    assert!(matches!(err, CredentialError::Internal(_)), "{err:?}");
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
    assert!(matches!(err, CredentialError::LimitReached { cap: 5 }));
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
            Err(CredentialError::NotFound)
        ));
        assert!(matches!(
            block_on(w.credentials.create(caller, &ctx(), "sa-ci", None, None)),
            Err(CredentialError::NotFound)
        ));
        assert!(matches!(
            block_on(w.credentials.get(caller, "sa-ci", id.as_str())),
            Err(CredentialError::NotFound)
        ));
        assert!(matches!(
            block_on(w.credentials.delete(caller, &ctx(), "sa-ci", id.as_str())),
            Err(CredentialError::NotFound)
        ));
    }
    assert!(matches!(
        block_on(w.credentials.get(&admin(), "sa-other", id.as_str())),
        Err(CredentialError::NotFound)
    ));
    assert!(matches!(
        block_on(w.credentials.get(&admin(), "sa-ci", "NOT AN ID")),
        Err(CredentialError::NotFound)
    ));
    assert!(matches!(
        block_on(
            w.credentials
                .list(&admin(), "sa-missing", CredentialFilter::default(), all())
        ),
        Err(CredentialError::NotFound)
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
        Err(CredentialError::NotFound)
    ));
    assert_eq!(w.memory.state().audit.len(), events + 1);
    assert_eq!(
        w.memory.state().audit.last().unwrap().action,
        AuditAction::CredentialDeleted
    );
    block_on(w.accounts.delete(&admin(), &ctx(), "sa-ci")).unwrap();
    assert!(w.memory.state().credentials.is_empty());
}
