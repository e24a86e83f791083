//! Unit tests of the service-account use cases on the in-memory fakes.

use std::sync::{Arc, Mutex};

use time::Duration;
use time::macros::datetime;

use super::*;
use crate::fakes::{Fakes, FixedClock, Memory, SeqIds, block_on, principal, role, seeded_memory};
use crate::pagination::{PagePosition, PageSize};
use crate::principal::Principal;
use crate::violation::Field;

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

fn reasons(err: ServiceAccountError) -> Vec<(&'static str, Option<Field>)> {
    match err {
        ServiceAccountError::Rejected(v) => {
            v.into_iter().map(|v| (v.reason.code(), v.field)).collect()
        }
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
    assert!(matches!(err, Err(ServiceAccountError::Forbidden)));
    let req = request("sa-x", Scope::Organization, "org-acme", &[]);
    assert!(matches!(
        block_on(w.admin.create(&viewer, &ctx(), req, None)),
        Err(ServiceAccountError::Forbidden)
    ));
    let mut project_admin = acme_admin();
    project_admin.target = ScopeTarget::parse(Scope::Project, "web").unwrap();
    let req = request("sa-x", Scope::Project, "web", &[]);
    assert!(matches!(
        block_on(w.admin.create(&project_admin, &ctx(), req, None)),
        Err(ServiceAccountError::Forbidden)
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
            Err(ServiceAccountError::NotFound)
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
            Err(ServiceAccountError::NotFound)
        ));
        assert!(matches!(
            block_on(w.admin.delete(&viewer, &ctx(), id)),
            Err(ServiceAccountError::NotFound)
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
        Err(ServiceAccountError::NotFound)
    ));
    assert!(matches!(
        block_on(w.admin.delete(&other_admin, &ctx(), "sa-ci")),
        Err(ServiceAccountError::NotFound)
    ));
    let page = block_on(
        w.admin
            .list(&other_admin, &ServiceAccountFilter::default(), first_page()),
    )
    .unwrap();
    assert!(page.items.is_empty());
}

#[test]
fn malformed_ids_are_simply_not_found() {
    let w = world();
    assert!(matches!(
        block_on(w.admin.get(&acme_admin(), "NOT_AN_ID")),
        Err(ServiceAccountError::NotFound)
    ));
}

#[test]
fn scope_must_be_allowed_by_policy() {
    let w = world();
    let admin = principal("org-other", &["admin"]);
    let req = request("sa-x", Scope::Organization, "org-other", &[]);
    let err = block_on(w.admin.create(&admin, &ctx(), req, None)).unwrap_err();
    assert_eq!(reasons(err), [("SCOPE_NOT_ALLOWED", Some(Field::Scope))]);
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
            [("SCOPE_TARGET_NOT_FOUND", Some(Field::ScopeId))]
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
            ("SCOPE_TARGET_NOT_FOUND", Some(Field::ScopeId)),
            ("ROLE_NOT_FOUND", Some(Field::Role(1))),
            ("ROLE_NOT_HELD", Some(Field::Role(2))),
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
        Err(ServiceAccountError::AlreadyExists)
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
    let err = block_on(
        w.admin
            .update(&weak_admin, &ctx(), "sa-ci", patch, &Precondition::None),
    )
    .unwrap_err();
    assert_eq!(
        reasons(err),
        [
            ("ROLE_NOT_HELD", Some(Field::Role(1))),
            ("ROLE_NOT_FOUND", Some(Field::Role(2))),
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
    let ServiceAccountError::ActingAsRefused(missing) = err else {
        panic!("expected ActingAsRefused, got {err:?}");
    };
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].field, Some(Field::Role(0)));
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
    let sa = block_on(
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
        Err(ServiceAccountError::PreconditionFailed)
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
        Err(ServiceAccountError::NotFound)
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
