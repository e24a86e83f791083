use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;

use super::*;

#[derive(Debug, PartialEq, QueryableByName)]
struct DirectoryRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Nullable<Text>)]
    detail: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    stamp: OffsetDateTime,
}

/// Every directory row, with `updated_at` for organizations (to prove nothing was
/// rewritten).
async fn snapshot(db: &TestDatabase) -> Vec<DirectoryRow> {
    let mut conn = db.connection().await;
    diesel::sql_query(
        "SELECT 'org' AS kind, id AS key, \
                slug || ' ' || array_to_string(allowed_scopes, ',') || ' ' || \
                credential_default_lifetime_seconds || ' ' || \
                credential_max_lifetime_seconds || ' ' || max_active_credentials \
                AS detail, updated_at AS stamp FROM organizations \
         UNION ALL SELECT 'project', org_id || '/' || id, display_name, 'epoch' \
                FROM projects \
         UNION ALL SELECT 'role', org_id || '/' || slug, description, 'epoch' FROM roles \
         ORDER BY 1, 2",
    )
    .load(&mut conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn applying_the_same_directory_twice_changes_nothing_the_second_time() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let mut acme = org_spec(ACME, &["web", "db"], &["admin", "compute.deployer"]);
    acme.organization.policy = OrgPolicy::new(
        BTreeSet::from([Scope::Project]),
        Duration::days(7),
        Duration::days(30),
        3,
    )
    .unwrap();
    acme.roles[0].description = Some("tenant administrators".into());
    let specs = [acme, org_spec(OTHER, &[], &["admin"])];

    let first = store
        .apply_directory(&specs, false, &TestDatabase::operator())
        .await
        .unwrap();
    assert_eq!(
        first,
        ApplySummary {
            organizations_upserted: 2,
            projects_upserted: 2,
            roles_upserted: 3,
            trusted_issuers_upserted: 2,
            projects_pruned: 0,
            roles_pruned: 0,
            trusted_issuers_pruned: 0,
        }
    );
    let after_first = snapshot(&db).await;
    assert_eq!(after_first.len(), 7);

    let second = store
        .apply_directory(&specs, true, &TestDatabase::operator())
        .await
        .unwrap();
    assert_eq!(second, ApplySummary::default());
    assert_eq!(snapshot(&db).await, after_first);

    let org = store.organization(&org_id(ACME)).await.unwrap().unwrap();
    assert_eq!(org, specs[0].organization);
    assert_eq!(store.organization(&org_id("org-none")).await.unwrap(), None);
}

#[tokio::test]
async fn a_changed_spec_updates_rows_and_prune_deletes_only_what_the_file_omits() {
    let (db, store) = seeded().await;
    let before = snapshot(&db).await;

    // Without prune, omitted projects and roles stay.
    let mut acme = org_spec(ACME, &["web"], &["admin"]);
    acme.projects[0].display_name = Some("Website".into());
    let summary = store
        .apply_directory(
            std::slice::from_ref(&acme),
            false,
            &TestDatabase::operator(),
        )
        .await
        .unwrap();
    assert_eq!(summary.projects_upserted, 1, "display name changed");
    assert_eq!(summary.projects_pruned + summary.roles_pruned, 0);
    let acme_id = org_id(ACME);
    let db_project = ProjectId::parse("db").unwrap();
    assert!(store.project_exists(&acme_id, &db_project).await.unwrap());

    // With prune, they go; the other organization is untouched.
    let summary = store
        .apply_directory(std::slice::from_ref(&acme), true, &TestDatabase::operator())
        .await
        .unwrap();
    assert_eq!(summary.projects_pruned, 1);
    assert_eq!(summary.roles_pruned, 1);
    assert!(!store.project_exists(&acme_id, &db_project).await.unwrap());
    let web = ProjectId::parse("web").unwrap();
    assert!(store.project_exists(&acme_id, &web).await.unwrap());
    assert!(store.project_exists(&org_id(OTHER), &web).await.unwrap());
    assert_eq!(
        store
            .missing_roles(&acme_id, &[role("compute.deployer"), role("admin")])
            .await
            .unwrap(),
        vec![role("compute.deployer")]
    );
    let others_before: Vec<_> = before.iter().filter(|r| r.key.contains(OTHER)).collect();
    let others_after = snapshot(&db).await;
    let others_after: Vec<_> = others_after
        .iter()
        .filter(|r| r.key.contains(OTHER))
        .collect();
    assert_eq!(others_after, others_before);
}

#[tokio::test]
async fn every_apply_that_changes_an_organization_audits_what_changed() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let first = TestDatabase::operator();
    let specs = [
        org_spec(ACME, &["web", "db"], &["admin", "compute.deployer"]),
        org_spec(OTHER, &[], &["admin"]),
    ];
    store.apply_directory(&specs, false, &first).await.unwrap();
    let events = db.directory_audit_events().await;
    assert_eq!(events.len(), 2, "one per organization");
    assert_eq!(events[0].org_id, ACME);
    assert_eq!(events[0].action, "directory.apply");
    assert_eq!(events[0].actor, "operator:test");
    assert_eq!(events[0].resource, format!("organizations/{ACME}"));
    assert_eq!(events[0].request_id, first.run_id);
    assert_eq!(events[0].occurred_at, first.at);
    assert_eq!(events[0].source_ip, None);
    assert_eq!(
        events[0].changed_fields,
        [
            "+organization",
            "+projects/web",
            "+projects/db",
            "+roles/admin",
            "+roles/compute.deployer",
            "+trustedIssuers/https://issuer.test"
        ]
    );
    assert_eq!(
        events[1].changed_fields,
        [
            "+organization",
            "+roles/admin",
            "+trustedIssuers/https://issuer.test"
        ]
    );
    assert!(db.audit_events().await.is_empty(), "no API events");

    // The same file again: nothing changes, nothing is audited.
    store
        .apply_directory(&specs, true, &TestDatabase::operator())
        .await
        .unwrap();
    assert_eq!(db.directory_audit_events().await.len(), 2);

    // A policy change, a renamed project, a new role and prune: one event for acme.
    let mut acme = org_spec(ACME, &["web"], &["admin", "storage.reader"]);
    acme.organization.policy = OrgPolicy::new(
        BTreeSet::from([Scope::Organization, Scope::Project]),
        Duration::days(90),
        Duration::days(365),
        7,
    )
    .unwrap();
    acme.projects[0].display_name = Some("Website".into());
    let third = TestDatabase::operator();
    store
        .apply_directory(std::slice::from_ref(&acme), true, &third)
        .await
        .unwrap();
    let events = db.directory_audit_events().await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].request_id, third.run_id);
    assert_eq!(
        events[2].changed_fields,
        [
            "~policy.maxActiveCredentials",
            "~projects/web",
            "-projects/db",
            "+roles/storage.reader",
            "-roles/compute.deployer"
        ]
    );
}

#[tokio::test]
async fn a_refused_apply_audits_nothing() {
    let db = TestDatabase::create().await;
    let store = db.store();
    // The second organization takes the first one's slug: refused by the database after
    // the first organization's rows and event were written, so both roll back.
    let acme = org_spec(ACME, &["web"], &[]);
    let mut other = org_spec(OTHER, &["web"], &[]);
    other.organization.slug = acme.organization.slug.clone();
    let specs = [acme, other];
    assert!(
        store
            .apply_directory(&specs, false, &TestDatabase::operator())
            .await
            .is_err()
    );
    assert!(db.directory_audit_events().await.is_empty());
    assert_eq!(store.organization(&org_id(ACME)).await.unwrap(), None);
}

#[tokio::test]
async fn a_spec_listing_a_project_twice_is_refused_and_changes_nothing() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let spec = org_spec(ACME, &["web", "web"], &[]);
    let result = store
        .apply_directory(&[spec], false, &TestDatabase::operator())
        .await;
    assert!(
        matches!(result, Err(StoreError::Unexpected(_))),
        "{result:?}"
    );
    assert!(snapshot(&db).await.is_empty());
}

#[tokio::test]
async fn missing_roles_lists_unknown_roles_in_input_order() {
    let (_db, store) = seeded().await;
    let wanted = [
        role("zeta"),
        role("admin"),
        role("alpha"),
        role("compute.deployer"),
    ];
    let missing = store.missing_roles(&org_id(ACME), &wanted).await.unwrap();
    assert_eq!(missing, vec![role("zeta"), role("alpha")]);
    // Another tenant's catalog does not count.
    let missing = store
        .missing_roles(&org_id(OTHER), &[role("compute.deployer")])
        .await
        .unwrap();
    assert_eq!(missing, vec![role("compute.deployer")]);
    assert!(
        store
            .missing_roles(&org_id(ACME), &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn project_exists_only_within_its_tenant() {
    let (_db, store) = seeded().await;
    let db_project = ProjectId::parse("db").unwrap();
    assert!(
        store
            .project_exists(&org_id(ACME), &db_project)
            .await
            .unwrap()
    );
    assert!(
        !store
            .project_exists(&org_id(OTHER), &db_project)
            .await
            .unwrap()
    );
}
