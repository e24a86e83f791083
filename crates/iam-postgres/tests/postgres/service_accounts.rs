use super::*;

#[tokio::test]
async fn insert_then_get_returns_every_field_unchanged() {
    let (_db, store) = seeded().await;
    let stored = account(ACME, "sa-ci", t0(), 1);
    insert(&store, &stored).await;

    let read = store
        .get(&org_id(ACME), &sa_id("sa-ci"), t0())
        .await
        .unwrap();
    assert_eq!(read, Some(stored));
    assert_eq!(read.unwrap().created_at.microsecond(), 123_456);
    assert_eq!(
        store
            .get(&org_id(ACME), &sa_id("sa-none"), t0())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn an_account_without_description_or_roles_round_trips() {
    let (_db, store) = seeded().await;
    let mut stored = account(ACME, "sa-bare", t0(), 1);
    stored.description = None;
    stored.roles = vec![];
    stored.target = ScopeTarget::parse(Scope::Organization, ACME).unwrap();
    stored.status = ServiceAccountStatus::Disabled;
    insert(&store, &stored).await;
    let read = store
        .get(&org_id(ACME), &sa_id("sa-bare"), t0())
        .await
        .unwrap();
    assert_eq!(read, Some(stored));
}

#[tokio::test]
async fn inserting_an_existing_id_of_the_tenant_is_a_duplicate_and_leaves_no_trace() {
    let (db, store) = seeded().await;
    let first = account(ACME, "sa-ci", t0(), 1);
    insert(&store, &first).await;

    let second = account(ACME, "sa-ci", t0() + Duration::seconds(1), 2);
    let result = store
        .insert(
            &second,
            &event(
                &second,
                AuditAction::ServiceAccountCreated,
                second.created_at,
            ),
            None,
        )
        .await;
    assert!(matches!(result, Err(InsertError::Duplicate)), "{result:?}");
    assert_eq!(db.audit_events().await.len(), 1, "only the first insert");
    let read = store
        .get(&org_id(ACME), &sa_id("sa-ci"), t0())
        .await
        .unwrap();
    assert_eq!(read.unwrap().uid, first.uid);
}

#[tokio::test]
async fn the_same_id_in_two_tenants_is_two_independent_accounts() {
    let (_db, store) = seeded().await;
    let acme = account(ACME, "sa-ci", t0(), 1);
    let other = account(OTHER, "sa-ci", t0(), 2);
    insert(&store, &acme).await;
    insert(&store, &other).await;

    assert_eq!(
        store
            .get(&org_id(ACME), &sa_id("sa-ci"), t0())
            .await
            .unwrap(),
        Some(acme.clone())
    );
    assert_eq!(
        store
            .get(&org_id(OTHER), &sa_id("sa-ci"), t0())
            .await
            .unwrap(),
        Some(other.clone())
    );
    let page = store
        .list(
            &org_id(OTHER),
            &ServiceAccountFilter::default(),
            cursor_request(50, None),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(page.items, vec![other.clone()]);

    // Deleting in one tenant leaves the other's account alone.
    let deleted = store
        .delete(
            &org_id(ACME),
            &sa_id("sa-ci"),
            &event(&acme, AuditAction::ServiceAccountDeleted, t0()),
        )
        .await
        .unwrap();
    assert!(deleted);
    assert_eq!(
        store
            .get(&org_id(OTHER), &sa_id("sa-ci"), t0())
            .await
            .unwrap(),
        Some(other.clone())
    );

    // An update naming another tenant's account (right uid, wrong tenant) does nothing.
    let mut forged = other.clone();
    forged.tenant = org_id(ACME);
    forged.display_name = DisplayName::parse("hijacked").unwrap();
    forged.revision = Revision(2);
    let outcome = store
        .update(
            &forged,
            Revision::FIRST,
            &event(&forged, AuditAction::ServiceAccountUpdated, t0()),
        )
        .await
        .unwrap();
    assert_eq!(outcome, UpdateOutcome::Gone);
    assert_eq!(
        store
            .get(&org_id(OTHER), &sa_id("sa-ci"), t0())
            .await
            .unwrap(),
        Some(other)
    );
}

#[tokio::test]
async fn update_with_the_expected_revision_replaces_the_mutable_fields() {
    let (_db, store) = seeded().await;
    let original = account(ACME, "sa-ci", t0(), 1);
    insert(&store, &original).await;

    let mut changed = original.clone();
    changed.display_name = DisplayName::parse("Renamed").unwrap();
    changed.description = None;
    changed.roles = vec![role("admin")];
    changed.status = ServiceAccountStatus::Disabled;
    changed.updated_at = t0() + Duration::minutes(5);
    changed.revision = Revision(2);
    let outcome = store
        .update(
            &changed,
            Revision::FIRST,
            &event(
                &changed,
                AuditAction::ServiceAccountUpdated,
                changed.updated_at,
            ),
        )
        .await
        .unwrap();
    assert_eq!(outcome, UpdateOutcome::Updated);
    assert_eq!(
        store
            .get(&org_id(ACME), &sa_id("sa-ci"), t0())
            .await
            .unwrap(),
        Some(changed)
    );
}

#[tokio::test]
async fn update_with_an_old_revision_is_stale_and_of_a_missing_account_is_gone() {
    let (db, store) = seeded().await;
    let original = account(ACME, "sa-ci", t0(), 1);
    insert(&store, &original).await;

    let mut changed = original.clone();
    changed.display_name = DisplayName::parse("Renamed").unwrap();
    changed.revision = Revision(3);
    let audit = event(&changed, AuditAction::ServiceAccountUpdated, t0());
    let stale = store.update(&changed, Revision(2), &audit).await.unwrap();
    assert_eq!(stale, UpdateOutcome::Stale);

    let missing = account(ACME, "sa-missing", t0(), 99);
    let gone = store
        .update(&missing, Revision::FIRST, &audit)
        .await
        .unwrap();
    assert_eq!(gone, UpdateOutcome::Gone);

    assert_eq!(
        store
            .get(&org_id(ACME), &sa_id("sa-ci"), t0())
            .await
            .unwrap(),
        Some(original),
        "a refused update changes nothing"
    );
    let actions: Vec<String> = db
        .audit_events()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        ["service_account.create"],
        "no audit for refused updates"
    );
}

#[tokio::test]
async fn delete_removes_the_account_once() {
    let (db, store) = seeded().await;
    let stored = account(ACME, "sa-ci", t0(), 1);
    insert(&store, &stored).await;
    let audit = event(&stored, AuditAction::ServiceAccountDeleted, t0());

    assert!(
        store
            .delete(&org_id(ACME), &sa_id("sa-ci"), &audit)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get(&org_id(ACME), &sa_id("sa-ci"), t0())
            .await
            .unwrap(),
        None
    );
    assert!(
        !store
            .delete(&org_id(ACME), &sa_id("sa-ci"), &audit)
            .await
            .unwrap()
    );
    assert_eq!(
        db.audit_events().await.len(),
        2,
        "create + one delete; the second delete deleted nothing"
    );
}

#[tokio::test]
async fn every_mutation_stores_exactly_one_complete_audit_event() {
    let (db, store) = seeded().await;
    let created = account(ACME, "sa-ci", t0(), 1);
    insert(&store, &created).await;

    let mut updated = created.clone();
    updated.status = ServiceAccountStatus::Disabled;
    updated.revision = Revision(2);
    let mut update_event = event(
        &updated,
        AuditAction::ServiceAccountUpdated,
        t0() + Duration::seconds(1),
    );
    update_event.changed_fields = vec!["status".to_owned()];
    update_event.source_ip = None;
    store
        .update(&updated, Revision::FIRST, &update_event)
        .await
        .unwrap();

    let delete_event = event(
        &updated,
        AuditAction::ServiceAccountDeleted,
        t0() + Duration::seconds(2),
    );
    store
        .delete(&org_id(ACME), &sa_id("sa-ci"), &delete_event)
        .await
        .unwrap();

    let events = db.audit_events().await;
    assert_eq!(events.len(), 3);
    let expected = [
        (
            "service_account.create",
            vec![],
            "req-service_account.create",
            Some("192.0.2.7"),
            t0(),
        ),
        (
            "service_account.update",
            vec!["status".to_owned()],
            "req-service_account.update",
            None,
            t0() + Duration::seconds(1),
        ),
        (
            "service_account.delete",
            vec![],
            "req-service_account.delete",
            Some("192.0.2.7"),
            t0() + Duration::seconds(2),
        ),
    ];
    for (stored, (action, fields, request_id, ip, at)) in events.iter().zip(expected) {
        assert_eq!(stored.org_id, ACME);
        assert_eq!(stored.actor, "alice");
        assert_eq!(stored.action, action);
        assert_eq!(stored.resource, "service-accounts/sa-ci");
        assert_eq!(stored.changed_fields, fields);
        assert_eq!(stored.request_id, request_id);
        assert_eq!(stored.source_ip.as_deref(), ip);
        assert_eq!(stored.occurred_at, at);
    }
}

#[tokio::test]
async fn an_insert_for_an_unknown_tenant_fails_without_an_audit_event() {
    let (db, store) = seeded().await;
    let orphan = account("org-nowhere", "sa-ci", t0(), 1);
    let result = store
        .insert(
            &orphan,
            &event(&orphan, AuditAction::ServiceAccountCreated, t0()),
            None,
        )
        .await;
    assert!(
        matches!(result, Err(InsertError::Store(StoreError::Unexpected(_)))),
        "{result:?}"
    );
    assert!(db.audit_events().await.is_empty());
}
