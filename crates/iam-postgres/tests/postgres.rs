//! Integration tests of the Postgres adapter against a real server.
//!
//! Every test gets a database of its own (cloned from a migrated template by
//! `iam_postgres::test_support::TestDatabase`). Needs `DATABASE_URL` (a role that may create
//! databases); `cargo xtask ci` provides one.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions unwrap too: a failure is a test failure"
)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration as StdDuration, Instant};

use diesel_async::SimpleAsyncConnection;
use iam_domain::audit::{AuditAction, AuditEvent};
use iam_domain::organization::{OrgPolicy, OrgSlug, Organization};
use iam_domain::pagination::{Cursor, Page, PagePosition, PageRequest, PageSize};
use iam_domain::ports::{
    Directory, IdempotencyClaim, IdempotencyKey, IdempotencyStore, InsertError, Readiness,
    ServiceAccountStore, StoreError, StoredResponse, UpdateOutcome,
};
use iam_domain::resource_id::{OrgId, ProjectId, ServiceAccountId};
use iam_domain::role::RoleSlug;
use iam_domain::scope::Scope;
use iam_domain::service_account::{
    ClientId, Description, DisplayName, Revision, ServiceAccount, ServiceAccountFilter,
    ServiceAccountStatus,
};
use iam_postgres::test_support::TestDatabase;
use iam_postgres::{
    ApplySummary, OrganizationSpec, PgConfig, PgStore, ProjectSpec, RoleSpec, run_migrations,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const ACME: &str = "org-acme";
const OTHER: &str = "org-other";

fn org_id(raw: &str) -> OrgId {
    OrgId::parse(raw).unwrap()
}

fn sa_id(raw: &str) -> ServiceAccountId {
    ServiceAccountId::parse(raw).unwrap()
}

fn role(raw: &str) -> RoleSlug {
    RoleSlug::parse(raw).unwrap()
}

/// A fixed instant with a non-zero microsecond part (Postgres keeps microseconds).
fn t0() -> OffsetDateTime {
    datetime!(2026-11-28 09:30:00.123456 UTC)
}

fn org_spec(id: &str, projects: &[&str], roles: &[&str]) -> OrganizationSpec {
    OrganizationSpec {
        organization: Organization {
            id: org_id(id),
            slug: OrgSlug::parse(id).unwrap(),
            policy: OrgPolicy::default(),
        },
        projects: projects
            .iter()
            .map(|p| ProjectSpec {
                id: ProjectId::parse(*p).unwrap(),
                display_name: Some(format!("Project {p}")),
            })
            .collect(),
        roles: roles
            .iter()
            .map(|r| RoleSpec {
                slug: role(r),
                description: None,
            })
            .collect(),
    }
}

/// A fresh database with two organizations in the directory.
async fn seeded() -> (TestDatabase, PgStore) {
    let db = TestDatabase::create().await;
    let store = db.store();
    store
        .apply_directory(
            &[
                org_spec(ACME, &["web", "db"], &["admin", "compute.deployer"]),
                org_spec(OTHER, &["web"], &["admin"]),
            ],
            false,
        )
        .await
        .unwrap();
    (db, store)
}

fn account(tenant: &str, id: &str, created_at: OffsetDateTime, uid: u128) -> ServiceAccount {
    let id = sa_id(id);
    ServiceAccount {
        uid: Uuid::from_u128(uid),
        tenant: org_id(tenant),
        client_id: ClientId::derive(&id, &OrgSlug::parse(tenant).unwrap()),
        id,
        display_name: DisplayName::parse("CI pipeline").unwrap(),
        description: Some(Description::parse("deploys\nthings").unwrap()),
        scope: Scope::Project,
        scope_id: "web".into(),
        roles: vec![role("compute.deployer"), role("admin")],
        status: ServiceAccountStatus::Active,
        created_by: "alice".into(),
        created_at,
        updated_at: created_at,
        revision: Revision::FIRST,
        active_credential_count: 0,
    }
}

fn event(account: &ServiceAccount, action: AuditAction, at: OffsetDateTime) -> AuditEvent {
    AuditEvent {
        tenant: account.tenant.clone(),
        actor: "alice".into(),
        action,
        resource: format!("service-accounts/{}", account.id),
        changed_fields: vec![],
        request_id: format!("req-{}", action.as_str()),
        source_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
        at,
    }
}

async fn insert(store: &PgStore, account: &ServiceAccount) {
    store
        .insert(
            account,
            &event(
                account,
                AuditAction::ServiceAccountCreated,
                account.created_at,
            ),
        )
        .await
        .unwrap();
}

fn cursor_request(size: i64, after: Option<Cursor>) -> PageRequest {
    PageRequest {
        size: PageSize::new(size).unwrap(),
        position: PagePosition::After(after),
    }
}

fn ids(page: &Page<ServiceAccount>) -> Vec<String> {
    page.items.iter().map(|a| a.id.to_string()).collect()
}

mod service_accounts {
    use super::*;

    #[tokio::test]
    async fn insert_then_get_returns_every_field_unchanged() {
        let (_db, store) = seeded().await;
        let stored = account(ACME, "sa-ci", t0(), 1);
        insert(&store, &stored).await;

        let read = store.get(&org_id(ACME), &sa_id("sa-ci")).await.unwrap();
        assert_eq!(read, Some(stored));
        assert_eq!(read.unwrap().created_at.microsecond(), 123_456);
        assert_eq!(
            store.get(&org_id(ACME), &sa_id("sa-none")).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn an_account_without_description_or_roles_round_trips() {
        let (_db, store) = seeded().await;
        let mut stored = account(ACME, "sa-bare", t0(), 1);
        stored.description = None;
        stored.roles = vec![];
        stored.scope = Scope::Organization;
        stored.scope_id = ACME.into();
        stored.status = ServiceAccountStatus::Disabled;
        insert(&store, &stored).await;
        let read = store.get(&org_id(ACME), &sa_id("sa-bare")).await.unwrap();
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
            )
            .await;
        assert!(matches!(result, Err(InsertError::Duplicate)), "{result:?}");
        assert_eq!(db.audit_events().await.len(), 1, "only the first insert");
        let read = store.get(&org_id(ACME), &sa_id("sa-ci")).await.unwrap();
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
            store.get(&org_id(ACME), &sa_id("sa-ci")).await.unwrap(),
            Some(acme.clone())
        );
        assert_eq!(
            store.get(&org_id(OTHER), &sa_id("sa-ci")).await.unwrap(),
            Some(other.clone())
        );
        let page = store
            .list(
                &org_id(OTHER),
                &ServiceAccountFilter::default(),
                cursor_request(50, None),
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
            store.get(&org_id(OTHER), &sa_id("sa-ci")).await.unwrap(),
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
            store.get(&org_id(OTHER), &sa_id("sa-ci")).await.unwrap(),
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
            store.get(&org_id(ACME), &sa_id("sa-ci")).await.unwrap(),
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
            store.get(&org_id(ACME), &sa_id("sa-ci")).await.unwrap(),
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
            store.get(&org_id(ACME), &sa_id("sa-ci")).await.unwrap(),
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
        update_event.changed_fields = vec!["status"];
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
            )
            .await;
        assert!(
            matches!(result, Err(InsertError::Store(StoreError::Unexpected(_)))),
            "{result:?}"
        );
        assert!(db.audit_events().await.is_empty());
    }
}

mod listing {
    use diesel_async::AsyncPgConnection;

    use super::*;

    /// Inserts `count` accounts of `tenant`; every third shares its predecessor's creation
    /// time, so the `uid` tie-break matters. Returns them in list order.
    async fn insert_many(
        store: &PgStore,
        tenant: &str,
        count: u32,
        first_uid: u128,
    ) -> Vec<ServiceAccount> {
        let mut accounts = Vec::new();
        for i in 0..count {
            let second = i64::from(i - i % 3 / 2);
            // Descending uids within equal timestamps prove the order is by uid, not by
            // insertion.
            let uid = first_uid + u128::from(count - i);
            let mut a = account(
                tenant,
                &format!("sa-{i:04}"),
                t0() + Duration::seconds(second),
                uid,
            );
            a.status = if i % 4 == 0 {
                ServiceAccountStatus::Disabled
            } else {
                ServiceAccountStatus::Active
            };
            if i % 5 == 0 {
                a.scope = Scope::Organization;
                a.scope_id = tenant.into();
            }
            insert(store, &a).await;
            accounts.push(a);
        }
        accounts.sort_by_key(|a| (a.created_at, a.uid));
        accounts
    }

    async fn walk(
        store: &PgStore,
        tenant: &str,
        filter: &ServiceAccountFilter,
        size: i64,
    ) -> Vec<ServiceAccount> {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list(&org_id(tenant), filter, cursor_request(size, after))
                .await
                .unwrap();
            assert_eq!(page.total, None, "cursor mode has no total");
            seen.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return seen,
            }
        }
    }

    #[tokio::test]
    async fn cursor_pages_return_every_account_once_in_created_at_uid_order() {
        let (_db, store) = seeded().await;
        let accounts = insert_many(&store, ACME, 120, 1000).await;
        insert_many(&store, OTHER, 7, 5000).await;

        let first = store
            .list(
                &org_id(ACME),
                &ServiceAccountFilter::default(),
                cursor_request(50, None),
            )
            .await
            .unwrap();
        assert_eq!(first.items.len(), 50);
        let last = first.items.last().unwrap();
        assert_eq!(
            first.next,
            Some(Cursor {
                created_at: last.created_at,
                uid: last.uid
            })
        );

        let walked = walk(&store, ACME, &ServiceAccountFilter::default(), 50).await;
        assert_eq!(walked, accounts);

        // An exact fit has no next page.
        let exact = walk(&store, OTHER, &ServiceAccountFilter::default(), 7).await;
        assert_eq!(exact.len(), 7);
    }

    #[tokio::test]
    async fn accounts_created_while_paging_appear_once_at_the_end() {
        let (_db, store) = seeded().await;
        let accounts = insert_many(&store, ACME, 120, 1000).await;
        let filter = ServiceAccountFilter::default();

        let mut seen: Vec<ServiceAccount> = Vec::new();
        let mut after = None;
        let mut added = Vec::new();
        for round in 0.. {
            let page = store
                .list(&org_id(ACME), &filter, cursor_request(50, after))
                .await
                .unwrap();
            seen.extend(page.items);
            let Some(next) = page.next else { break };
            after = Some(next);
            // Between pages: a newer account (must be seen later) …
            let newer = account(
                ACME,
                &format!("sa-new-{round}"),
                t0() + Duration::hours(1) + Duration::seconds(round),
                900 + u128::try_from(round).unwrap(),
            );
            insert(&store, &newer).await;
            added.push(newer);
        }
        let mut expected = accounts;
        expected.extend(added);
        assert_eq!(ids_of(&seen), ids_of(&expected));
    }

    fn ids_of(accounts: &[ServiceAccount]) -> Vec<String> {
        accounts.iter().map(|a| a.id.to_string()).collect()
    }

    #[tokio::test]
    async fn offset_pages_report_the_total_of_matching_accounts() {
        let (_db, store) = seeded().await;
        let accounts = insert_many(&store, ACME, 30, 1000).await;
        insert_many(&store, OTHER, 5, 5000).await;

        let page = store
            .list(
                &org_id(ACME),
                &ServiceAccountFilter::default(),
                PageRequest {
                    size: PageSize::new(10).unwrap(),
                    position: PagePosition::Offset(25),
                },
            )
            .await
            .unwrap();
        assert_eq!(page.total, Some(30));
        assert_eq!(page.next, None);
        assert_eq!(page.items, accounts[25..].to_vec());

        let beyond = store
            .list(
                &org_id(ACME),
                &ServiceAccountFilter::default(),
                PageRequest {
                    size: PageSize::new(10).unwrap(),
                    position: PagePosition::Offset(100),
                },
            )
            .await
            .unwrap();
        assert_eq!(beyond.total, Some(30));
        assert!(beyond.items.is_empty());
    }

    #[tokio::test]
    async fn filters_combine_and_apply_in_both_modes() {
        let (_db, store) = seeded().await;
        let accounts = insert_many(&store, ACME, 60, 1000).await;
        let filter = ServiceAccountFilter {
            scope: Some(Scope::Project),
            scope_id: Some("web".into()),
            status: Some(ServiceAccountStatus::Active),
        };
        let expected: Vec<ServiceAccount> = accounts
            .iter()
            .filter(|a| a.scope == Scope::Project && a.status == ServiceAccountStatus::Active)
            .cloned()
            .collect();
        assert!(expected.len() > 10 && expected.len() < 60);
        assert_eq!(walk(&store, ACME, &filter, 7).await, expected);

        let counted = store
            .list(
                &org_id(ACME),
                &filter,
                PageRequest {
                    size: PageSize::new(500).unwrap(),
                    position: PagePosition::Offset(0),
                },
            )
            .await
            .unwrap();
        assert_eq!(counted.total, Some(u64::try_from(expected.len()).unwrap()));
        assert_eq!(counted.items, expected);

        let org_scoped = ServiceAccountFilter {
            scope: Some(Scope::Organization),
            ..ServiceAccountFilter::default()
        };
        let page = walk(&store, ACME, &org_scoped, 500).await;
        assert_eq!(page.len(), 12);
        assert!(page.iter().all(|a| a.scope == Scope::Organization));

        let disabled = ServiceAccountFilter {
            status: Some(ServiceAccountStatus::Disabled),
            ..ServiceAccountFilter::default()
        };
        assert_eq!(walk(&store, ACME, &disabled, 500).await.len(), 15);

        let nowhere = ServiceAccountFilter {
            scope_id: Some("db".into()),
            ..ServiceAccountFilter::default()
        };
        assert!(walk(&store, ACME, &nowhere, 500).await.is_empty());
    }

    async fn bulk_insert(conn: &mut AsyncPgConnection, tenant: &str, count: u32) {
        conn.batch_execute(&format!(
            "INSERT INTO service_accounts (uid, org_id, id, display_name, client_id, scope, \
             scope_id, roles, status, created_by, created_at, updated_at, revision) \
             SELECT gen_random_uuid(), '{tenant}', 'sa-' || i, 'bulk', \
                    'sa-' || i || '@{tenant}.iam', 'project', 'web', '{{}}', 'active', 'seed', \
                    timestamptz '2026-01-01' + i * interval '1 second', \
                    timestamptz '2026-01-01' + i * interval '1 second', 1 \
             FROM generate_series(1, {count}) AS i"
        ))
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_deep_cursor_page_is_an_index_range_scan_on_the_page_index() {
        let (db, store) = seeded().await;
        let mut conn = db.connection().await;
        bulk_insert(&mut conn, ACME, 20_000).await;
        bulk_insert(&mut conn, OTHER, 5_000).await;
        conn.batch_execute("ANALYZE service_accounts")
            .await
            .unwrap();

        // A cursor deep into the list (page ~300 of 50).
        let deep = Cursor {
            created_at: datetime!(2026-01-01 00:00:00 UTC) + Duration::seconds(15_000),
            uid: Uuid::nil(),
        };
        for after in [None, Some(deep)] {
            let plan = store
                .explain_list_page(&org_id(ACME), &ServiceAccountFilter::default(), after, 50)
                .await
                .unwrap()
                .join("\n");
            assert!(
                plan.contains("Index Scan using service_accounts_page_idx"),
                "{plan}"
            );
            assert!(
                !plan.contains("Seq Scan") && !plan.contains("Sort"),
                "{plan}"
            );
            if after.is_some() {
                let index_cond = plan
                    .lines()
                    .find(|line| line.contains("Index Cond"))
                    .unwrap_or_else(|| panic!("no index condition in\n{plan}"));
                assert!(
                    index_cond.contains("ROW(created_at, uid) > ROW("),
                    "the row comparison must be an index condition:\n{plan}"
                );
            }
        }

        // And the deep page returns what follows the cursor.
        let page = store
            .list(
                &org_id(ACME),
                &ServiceAccountFilter::default(),
                cursor_request(50, Some(deep)),
            )
            .await
            .unwrap();
        assert_eq!(ids(&page).first().map(String::as_str), Some("sa-15000"));
        assert_eq!(page.items.len(), 50);
    }
}

mod directory {
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

        let first = store.apply_directory(&specs, false).await.unwrap();
        assert_eq!(
            first,
            ApplySummary {
                organizations_upserted: 2,
                projects_upserted: 2,
                roles_upserted: 3,
                projects_pruned: 0,
                roles_pruned: 0,
            }
        );
        let after_first = snapshot(&db).await;
        assert_eq!(after_first.len(), 7);

        let second = store.apply_directory(&specs, true).await.unwrap();
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
            .apply_directory(std::slice::from_ref(&acme), false)
            .await
            .unwrap();
        assert_eq!(summary.projects_upserted, 1, "display name changed");
        assert_eq!(summary.projects_pruned + summary.roles_pruned, 0);
        let acme_id = org_id(ACME);
        let db_project = ProjectId::parse("db").unwrap();
        assert!(store.project_exists(&acme_id, &db_project).await.unwrap());

        // With prune, they go; the other organization is untouched.
        let summary = store
            .apply_directory(std::slice::from_ref(&acme), true)
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
    async fn a_spec_listing_a_project_twice_is_refused_and_changes_nothing() {
        let db = TestDatabase::create().await;
        let store = db.store();
        let spec = org_spec(ACME, &["web", "web"], &[]);
        let result = store.apply_directory(&[spec], false).await;
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
}

mod idempotency {
    use super::*;

    fn key(name: &str) -> IdempotencyKey {
        IdempotencyKey {
            tenant: org_id(ACME),
            subject: "alice".into(),
            key: name.into(),
        }
    }

    const FP: [u8; 32] = [7; 32];
    const OTHER_FP: [u8; 32] = [8; 32];
    const ABANDON: Duration = Duration::minutes(1);

    fn response() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![
                (
                    "location".into(),
                    "/v1/regions/global/iam/service-accounts/sa-ci".into(),
                ),
                ("etag".into(), "\"abc-1\"".into()),
            ],
            body: b"{\"id\":\"sa-ci\"}".to_vec(),
        }
    }

    #[tokio::test]
    async fn a_key_is_claimed_once_then_in_progress_then_replayed() {
        let (_db, store) = seeded().await;
        let k = key("k1");
        assert_eq!(
            store.claim(&k, &FP, t0(), ABANDON).await.unwrap(),
            IdempotencyClaim::Claimed
        );
        assert_eq!(
            store
                .claim(&k, &FP, t0() + Duration::seconds(1), ABANDON)
                .await
                .unwrap(),
            IdempotencyClaim::InProgress
        );
        assert_eq!(
            store
                .claim(&k, &OTHER_FP, t0() + Duration::seconds(1), ABANDON)
                .await
                .unwrap(),
            IdempotencyClaim::Mismatch
        );

        store.complete(&k, t0(), &response()).await.unwrap();
        assert_eq!(
            store
                .claim(&k, &FP, t0() + Duration::hours(2), ABANDON)
                .await
                .unwrap(),
            IdempotencyClaim::Replay(response())
        );
        assert_eq!(
            store
                .claim(&k, &OTHER_FP, t0() + Duration::hours(2), ABANDON)
                .await
                .unwrap(),
            IdempotencyClaim::Mismatch
        );
    }

    #[tokio::test]
    async fn keys_of_other_callers_and_tenants_do_not_collide() {
        let (_db, store) = seeded().await;
        let mine = key("shared");
        let someone_else = IdempotencyKey {
            subject: "bob".into(),
            ..key("shared")
        };
        let other_tenant = IdempotencyKey {
            tenant: org_id(OTHER),
            ..key("shared")
        };
        for k in [&mine, &someone_else, &other_tenant] {
            assert_eq!(
                store.claim(k, &FP, t0(), ABANDON).await.unwrap(),
                IdempotencyClaim::Claimed
            );
        }
    }

    #[tokio::test]
    async fn expired_records_and_abandoned_claims_can_be_claimed_again() {
        let (_db, store) = seeded().await;
        let retention = <PgStore as IdempotencyStore>::RETENTION;

        // Completed: replayed until the retention ends, then claimable (even with another body).
        let done = key("done");
        store.claim(&done, &FP, t0(), ABANDON).await.unwrap();
        store.complete(&done, t0(), &response()).await.unwrap();
        let almost = t0() + retention - Duration::seconds(1);
        assert!(matches!(
            store.claim(&done, &FP, almost, ABANDON).await.unwrap(),
            IdempotencyClaim::Replay(_)
        ));
        let later = t0() + retention + Duration::seconds(1);
        assert_eq!(
            store.claim(&done, &OTHER_FP, later, ABANDON).await.unwrap(),
            IdempotencyClaim::Claimed
        );
        assert_eq!(
            store
                .claim(&done, &FP, later + Duration::seconds(1), ABANDON)
                .await
                .unwrap(),
            IdempotencyClaim::Mismatch,
            "the new claim holds the new fingerprint"
        );

        // Unfinished: in progress until abandoned.
        let stuck = key("stuck");
        store.claim(&stuck, &FP, t0(), ABANDON).await.unwrap();
        assert_eq!(
            store
                .claim(&stuck, &FP, t0() + ABANDON - Duration::seconds(1), ABANDON)
                .await
                .unwrap(),
            IdempotencyClaim::InProgress
        );
        assert_eq!(
            store
                .claim(&stuck, &FP, t0() + ABANDON + Duration::seconds(1), ABANDON)
                .await
                .unwrap(),
            IdempotencyClaim::Claimed
        );
    }

    #[tokio::test]
    async fn a_released_key_is_free_and_a_completed_one_cannot_be_released() {
        let (_db, store) = seeded().await;
        let k = key("k");
        store.claim(&k, &FP, t0(), ABANDON).await.unwrap();
        store.release(&k, t0()).await.unwrap();
        assert_eq!(
            store.claim(&k, &OTHER_FP, t0(), ABANDON).await.unwrap(),
            IdempotencyClaim::Claimed
        );
        store.complete(&k, t0(), &response()).await.unwrap();
        store.release(&k, t0()).await.unwrap();
        assert_eq!(
            store.claim(&k, &OTHER_FP, t0(), ABANDON).await.unwrap(),
            IdempotencyClaim::Replay(response())
        );
    }

    #[tokio::test]
    async fn an_abandoned_claim_cannot_complete_or_release_the_claim_that_took_over() {
        let (_db, store) = seeded().await;
        let k = key("taken-over");
        store.claim(&k, &FP, t0(), ABANDON).await.unwrap();
        let later = t0() + ABANDON + Duration::seconds(1);
        assert_eq!(
            store.claim(&k, &OTHER_FP, later, ABANDON).await.unwrap(),
            IdempotencyClaim::Claimed
        );
        // The first request finally finishes: its response must not be recorded for the
        // second request, nor may it release the second request's claim.
        store.complete(&k, t0(), &response()).await.unwrap();
        store.release(&k, t0()).await.unwrap();
        assert_eq!(
            store.claim(&k, &OTHER_FP, later, ABANDON).await.unwrap(),
            IdempotencyClaim::InProgress
        );
        let mine = StoredResponse {
            status: 409,
            ..response()
        };
        store.complete(&k, later, &mine).await.unwrap();
        assert_eq!(
            store.claim(&k, &OTHER_FP, later, ABANDON).await.unwrap(),
            IdempotencyClaim::Replay(mine)
        );
    }

    #[tokio::test]
    async fn purge_deletes_only_records_past_the_retention() {
        let (_db, store) = seeded().await;
        let retention = <PgStore as IdempotencyStore>::RETENTION;
        store.claim(&key("old"), &FP, t0(), ABANDON).await.unwrap();
        store
            .claim(&key("new"), &FP, t0() + Duration::hours(2), ABANDON)
            .await
            .unwrap();
        let purged = store
            .purge_expired_idempotency_keys(t0() + retention + Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(purged, 1);
        // The younger record survived: still in progress (abandoned only after 5 hours here).
        assert_eq!(
            store
                .claim(
                    &key("new"),
                    &FP,
                    t0() + Duration::hours(3),
                    Duration::hours(5)
                )
                .await
                .unwrap(),
            IdempotencyClaim::InProgress
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_of_one_key_have_exactly_one_winner() {
        let (_db, store) = seeded().await;
        for round in 0..10 {
            let k = key(&format!("race-{round}"));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let store = store.clone();
                let k = k.clone();
                tasks.spawn(async move { store.claim(&k, &FP, t0(), ABANDON).await.unwrap() });
            }
            let outcomes = tasks.join_all().await;
            let winners = outcomes
                .iter()
                .filter(|o| **o == IdempotencyClaim::Claimed)
                .count();
            assert_eq!(winners, 1, "{outcomes:?}");
            assert!(
                outcomes
                    .iter()
                    .all(|o| matches!(o, IdempotencyClaim::Claimed | IdempotencyClaim::InProgress))
            );
        }
        // Racing takeovers of an abandoned claim: again exactly one winner.
        let k = key("abandoned");
        store.claim(&k, &FP, t0(), ABANDON).await.unwrap();
        let later = t0() + Duration::hours(1);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let store = store.clone();
            let k = k.clone();
            tasks.spawn(async move { store.claim(&k, &FP, later, ABANDON).await.unwrap() });
        }
        let outcomes = tasks.join_all().await;
        let winners = outcomes
            .iter()
            .filter(|o| **o == IdempotencyClaim::Claimed)
            .count();
        assert_eq!(winners, 1, "{outcomes:?}");
    }
}

mod availability {
    use super::*;

    #[tokio::test]
    async fn a_migrated_database_is_ready() {
        let (_db, store) = seeded().await;
        store.check().await.unwrap();
    }

    #[tokio::test]
    async fn an_unmigrated_database_is_not_ready_until_migrated() {
        let db = TestDatabase::create_unmigrated().await;
        let store = db.store();
        let err = store.check().await.unwrap_err();
        assert!(matches!(err, StoreError::Unexpected(_)), "{err:?}");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("migrations are pending"), "{source}");

        // Two instances migrating at once: the migration runs exactly once.
        let (first, second) = tokio::join!(run_migrations(db.url()), run_migrations(db.url()));
        let mut applied = first.unwrap();
        applied.extend(second.unwrap());
        assert_eq!(applied, [iam_postgres::latest_embedded_version()]);
        store.check().await.unwrap();
        assert!(run_migrations(db.url()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_database_behind_the_code_is_not_ready() {
        let db = TestDatabase::create().await;
        db.connection()
            .await
            .batch_execute("DELETE FROM __diesel_schema_migrations")
            .await
            .unwrap();
        let err = db.store().check().await.unwrap_err();
        assert!(matches!(err, StoreError::Unexpected(_)), "{err:?}");
    }

    #[tokio::test]
    async fn connections_killed_by_the_server_are_replaced_without_unexpected_errors() {
        let (db, store) = seeded().await;
        let stored = account(ACME, "sa-ci", t0(), 1);
        insert(&store, &stored).await;
        // Open several pooled connections, then have the server terminate them all (what a
        // restart does to established connections).
        let (tenant, id) = (org_id(ACME), sa_id("sa-ci"));
        let read = || store.get(&tenant, &id);
        let reads = tokio::join!(read(), read(), read(), read());
        for read in [reads.0, reads.1, reads.2, reads.3] {
            assert_eq!(read.unwrap().as_ref(), Some(&stored));
        }
        let opened = store.pool().status().size;
        assert!(opened >= 2, "{:?}", store.pool().status());
        db.connection()
            .await
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid()",
                db.name()
            ))
            .await
            .unwrap();

        // A dead connection fails a request or two (until its driver task has noticed the
        // closed socket), always as `Unavailable`; then the pool has replaced it.
        let mut unavailable = 0;
        for _ in 0..=2 * opened {
            match store.get(&org_id(ACME), &sa_id("sa-ci")).await {
                Ok(read) => assert_eq!(read.as_ref(), Some(&stored)),
                Err(StoreError::Unavailable(_)) => unavailable += 1,
                Err(e) => panic!("a dead connection must be Unavailable, got {e:?}"),
            }
        }
        assert!(
            unavailable <= 2 * opened,
            "{unavailable} failures, {opened} connections"
        );
        assert_eq!(
            store.get(&org_id(ACME), &sa_id("sa-ci")).await.unwrap(),
            Some(stored)
        );
    }

    fn unreachable_config(port: u16) -> PgConfig {
        PgConfig {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            max_connections: 2,
            connect_timeout: StdDuration::from_millis(500),
            checkout_timeout: StdDuration::from_millis(500),
        }
    }

    async fn assert_unavailable_quickly(store: &PgStore) {
        let started = Instant::now();
        let result = store.get(&org_id(ACME), &sa_id("sa-ci")).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        let ready = store.check().await;
        assert!(
            matches!(ready, Err(StoreError::Unavailable(_))),
            "{ready:?}"
        );
        assert!(
            started.elapsed() < StdDuration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable_at_once() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = PgStore::connect(&unreachable_config(port)).unwrap();
        assert_unavailable_quickly(&store).await;
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_unavailable_within_the_connect_timeout() {
        // Accepts TCP connections (the kernel does) but never speaks the protocol.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let store = PgStore::connect(&unreachable_config(port)).unwrap();
        assert_unavailable_quickly(&store).await;
        drop(silent);
    }
}
