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
    Directory, IdempotencyClaim, IdempotencyCompletion, IdempotencyKey, IdempotencyStore,
    InsertError, Readiness, ServiceAccountStore, StoreError, StoredResponse, UpdateOutcome,
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
            &TestDatabase::operator(),
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
            None,
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
        stored.scope = Scope::Organization;
        stored.scope_id = ACME.into();
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
                .list(&org_id(tenant), filter, cursor_request(size, after), t0())
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
                t0(),
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
                .list(&org_id(ACME), &filter, cursor_request(50, after), t0())
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
                t0(),
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
                t0(),
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
                t0(),
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
                .explain_list_page(
                    &org_id(ACME),
                    &ServiceAccountFilter::default(),
                    after,
                    50,
                    t0(),
                )
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
                t0(),
            )
            .await
            .unwrap();
        assert_eq!(ids(&page).first().map(String::as_str), Some("sa-15000"));
        assert_eq!(page.items.len(), 50);
    }
}

mod credentials {
    //! `CredentialStore`, and what credentials change in `ServiceAccountStore`.
    //!
    //! `PgStore` implements both stores, whose `get`, `list` and `delete` share names: calls
    //! name the trait (`CredentialStore::get(&store, …)`).

    use std::net::Ipv6Addr;

    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Bytea, Integer, Text};
    use diesel_async::{AsyncPgConnection, RunQueryDsl};
    use iam_domain::client_secret::{ClientSecret, SecretHash, SecretHasher};
    use iam_domain::credential::{Credential, CredentialFilter, CredentialStatus};
    use iam_domain::ports::{CapOutcome, CredentialStore};
    use iam_domain::resource_id::CredentialId;

    use super::*;

    pub(super) const CAP: u32 = 5;

    pub(super) fn cred_id(raw: &str) -> CredentialId {
        CredentialId::parse(raw).unwrap()
    }

    /// A credential of `account` created at `created_at`, expiring at `expires_at`; its hash
    /// bytes are derived from `uid` so that every credential has its own.
    pub(super) fn credential(
        account: &ServiceAccount,
        id: &str,
        created_at: OffsetDateTime,
        expires_at: OffsetDateTime,
        uid: u128,
    ) -> Credential {
        let seed = uid.to_le_bytes();
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = seed[i % 16] ^ u8::try_from(i).unwrap().wrapping_mul(7);
        }
        Credential {
            uid: Uuid::from_u128(uid),
            tenant: account.tenant.clone(),
            service_account_uid: account.uid,
            service_account_id: account.id.clone(),
            id: cred_id(id),
            secret_hash: SecretHash(hash),
            expires_at,
            created_by: "alice".into(),
            created_at,
            last_used_at: None,
            last_used_ip: None,
        }
    }

    pub(super) fn cred_event(
        credential: &Credential,
        action: AuditAction,
        at: OffsetDateTime,
    ) -> AuditEvent {
        AuditEvent {
            tenant: credential.tenant.clone(),
            actor: "alice".into(),
            action,
            resource: format!(
                "service-accounts/{}/credentials/{}",
                credential.service_account_id, credential.id
            ),
            changed_fields: vec![],
            request_id: format!("req-{}", credential.id),
            source_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))),
            at,
        }
    }

    pub(super) async fn insert_credential(
        store: &PgStore,
        credential: &Credential,
        cap: u32,
        now: OffsetDateTime,
    ) -> CapOutcome {
        store
            .insert_within_cap(
                credential,
                cap,
                now,
                &cred_event(credential, AuditAction::CredentialCreated, now),
                None,
            )
            .await
            .unwrap()
    }

    pub(super) async fn get_credential(
        store: &PgStore,
        tenant: &str,
        account: &str,
        id: &str,
    ) -> Option<Credential> {
        CredentialStore::get(store, &org_id(tenant), &sa_id(account), &cred_id(id))
            .await
            .unwrap()
    }

    async fn get_account(
        store: &PgStore,
        tenant: &str,
        id: &str,
        now: OffsetDateTime,
    ) -> Option<ServiceAccount> {
        ServiceAccountStore::get(store, &org_id(tenant), &sa_id(id), now)
            .await
            .unwrap()
    }

    async fn list_credentials(
        store: &PgStore,
        tenant: &str,
        account: &str,
        status: Option<CredentialStatus>,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> Option<Page<Credential>> {
        CredentialStore::list(
            store,
            &org_id(tenant),
            &sa_id(account),
            CredentialFilter { status },
            page,
            now,
        )
        .await
        .unwrap()
    }

    pub(super) async fn delete_credential(
        store: &PgStore,
        tenant: &str,
        account: &str,
        id: &str,
        at: OffsetDateTime,
    ) -> bool {
        let account_id = sa_id(account);
        let event = AuditEvent {
            tenant: org_id(tenant),
            actor: "bob".into(),
            action: AuditAction::CredentialDeleted,
            resource: format!("service-accounts/{account}/credentials/{id}"),
            changed_fields: vec![],
            request_id: "req-delete".into(),
            source_ip: None,
            at,
        };
        CredentialStore::delete(store, &org_id(tenant), &account_id, &cred_id(id), &event)
            .await
            .unwrap()
    }

    async fn credential_rows(conn: &mut AsyncPgConnection) -> i64 {
        diesel::select(diesel::dsl::sql::<BigInt>(
            "(SELECT count(*) FROM credentials)",
        ))
        .get_result(conn)
        .await
        .unwrap()
    }

    fn actions(events: &[iam_postgres::test_support::AuditRecord]) -> Vec<&str> {
        events.iter().map(|e| e.action.as_str()).collect()
    }

    /// `ACME`'s `sa-ci` (uid 1), stored.
    pub(super) async fn with_account() -> (TestDatabase, PgStore, ServiceAccount) {
        let (db, store) = seeded().await;
        let sa = account(ACME, "sa-ci", t0(), 1);
        insert(&store, &sa).await;
        (db, store, sa)
    }

    #[tokio::test]
    async fn insert_then_get_returns_every_field_unchanged() {
        let (db, store, sa) = with_account().await;
        let expires_at = datetime!(2027-02-26 10:00:00.654321 UTC);
        let mut stored = credential(&sa, "cred-first", t0(), expires_at, 100);
        let outcome = insert_credential(&store, &stored, CAP, t0()).await;
        assert_eq!(outcome, CapOutcome::Inserted);

        let read = get_credential(&store, ACME, "sa-ci", "cred-first").await;
        assert_eq!(read.as_ref(), Some(&stored));
        let read = read.unwrap();
        assert_eq!(read.created_at.microsecond(), 123_456);
        assert_eq!(read.expires_at.microsecond(), 654_321);
        assert_eq!(read.secret_hash, stored.secret_hash);

        // Last use (written by the token endpoint later) round-trips too, IPv6 included.
        let mut conn = db.connection().await;
        diesel::sql_query(
            "UPDATE credentials SET last_used_at = '2026-12-01 08:00:00.000007+00', \
             last_used_ip = '2001:db8::1' WHERE id = 'cred-first'",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        stored.last_used_at = Some(datetime!(2026-12-01 08:00:00.000007 UTC));
        stored.last_used_ip = Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
        assert_eq!(
            get_credential(&store, ACME, "sa-ci", "cred-first").await,
            Some(stored.clone())
        );

        // One audit event, complete.
        let events = db.audit_events().await;
        assert_eq!(
            actions(&events),
            ["service_account.create", "credential.create"]
        );
        let created = &events[1];
        assert_eq!(created.org_id, ACME);
        assert_eq!(created.actor, "alice");
        assert_eq!(
            created.resource,
            "service-accounts/sa-ci/credentials/cred-first"
        );
        assert_eq!(created.request_id, "req-cred-first");
        assert_eq!(created.source_ip.as_deref(), Some("192.0.2.9"));
        assert_eq!(created.occurred_at, t0());
    }

    #[tokio::test]
    async fn get_finds_a_credential_only_under_its_own_account_and_tenant() {
        let (_db, store, sa) = with_account().await;
        let sibling = account(ACME, "sa-sibling", t0(), 2);
        insert(&store, &sibling).await;
        // The same account id in another tenant.
        let foreign = account(OTHER, "sa-ci", t0(), 3);
        insert(&store, &foreign).await;
        let stored = credential(&sa, "cred-a", t0(), t0() + Duration::days(1), 100);
        insert_credential(&store, &stored, CAP, t0()).await;

        assert!(
            get_credential(&store, ACME, "sa-ci", "cred-a")
                .await
                .is_some()
        );
        assert_eq!(
            get_credential(&store, ACME, "sa-sibling", "cred-a").await,
            None
        );
        assert_eq!(
            get_credential(&store, ACME, "sa-none", "cred-a").await,
            None
        );
        assert_eq!(get_credential(&store, OTHER, "sa-ci", "cred-a").await, None);
        assert_eq!(
            get_credential(&store, ACME, "sa-ci", "cred-none").await,
            None
        );
    }

    #[derive(QueryableByName)]
    struct Hash {
        #[diesel(sql_type = Bytea)]
        secret_hash: Vec<u8>,
        #[diesel(sql_type = Integer)]
        length: i32,
    }

    #[derive(QueryableByName)]
    struct Column {
        #[diesel(sql_type = Text)]
        column_name: String,
    }

    #[derive(QueryableByName)]
    struct Dump {
        #[diesel(sql_type = Text)]
        dump: String,
    }

    #[tokio::test]
    async fn the_hash_column_holds_exactly_the_32_hash_bytes_and_nothing_else_is_secret() {
        let (db, store, sa) = with_account().await;
        let hasher = SecretHasher::new(&[42; 32]).unwrap();
        let id = cred_id("cred-secretive");
        let secret = ClientSecret::generate(&id, &[7; 32]);
        let mut stored = credential(&sa, "cred-secretive", t0(), t0() + Duration::days(1), 100);
        stored.secret_hash = hasher.hash(&secret);
        insert_credential(&store, &stored, CAP, t0()).await;

        let mut conn = db.connection().await;
        let rows: Vec<Hash> =
            diesel::sql_query("SELECT secret_hash, length(secret_hash) AS length FROM credentials")
                .load(&mut conn)
                .await
                .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].length, 32);
        assert_eq!(rows[0].secret_hash, stored.secret_hash.0);

        // The table has no column that could hold the plaintext …
        let columns: Vec<String> = diesel::sql_query(
            "SELECT column_name::text AS column_name FROM information_schema.columns \
             WHERE table_name = 'credentials' ORDER BY ordinal_position",
        )
        .load::<Column>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.column_name)
        .collect();
        assert_eq!(
            columns,
            [
                "uid",
                "org_id",
                "service_account_uid",
                "id",
                "secret_hash",
                "expires_at",
                "created_by",
                "created_at",
                "last_used_at",
                "last_used_ip"
            ]
        );
        // … and no part of the database's text holds it (rows and audit events alike).
        let dump = diesel::sql_query(
            "SELECT (SELECT string_agg(c::text, '|') FROM credentials c) || \
             (SELECT string_agg(a::text, '|') FROM audit_events a) AS dump",
        )
        .get_result::<Dump>(&mut conn)
        .await
        .unwrap()
        .dump;
        let body = &secret.expose()["plt_cs_cred-secretive_".len()..];
        assert!(dump.contains("cred-secretive"), "{dump}");
        assert!(!dump.contains(body), "the plaintext reached the database");
        assert!(
            !dump.contains(&body[..20]),
            "part of the plaintext reached the database"
        );

        // A hash of any other length is refused by the database.
        let short =
            diesel::sql_query("UPDATE credentials SET secret_hash = substring(secret_hash from 2)")
                .execute(&mut conn)
                .await;
        assert!(short.is_err(), "{short:?}");
    }

    #[tokio::test]
    async fn the_cap_counts_only_credentials_active_at_now() {
        let (db, store, sa) = with_account().await;
        // Five credentials; the first expires one hour after t0, the others in a year.
        for i in 0..5u32 {
            let expires_at = if i == 0 {
                t0() + Duration::hours(1)
            } else {
                t0() + Duration::days(365)
            };
            let c = credential(
                &sa,
                &format!("cred-{i}"),
                t0() + Duration::seconds(i.into()),
                expires_at,
                100 + u128::from(i),
            );
            assert_eq!(
                insert_credential(&store, &c, CAP, t0()).await,
                CapOutcome::Inserted
            );
        }
        let sixth = credential(&sa, "cred-5", t0(), t0() + Duration::days(1), 105);
        assert_eq!(
            insert_credential(&store, &sixth, CAP, t0()).await,
            CapOutcome::LimitReached
        );
        // Still at the cap a microsecond before the first one expires …
        let almost = t0() + Duration::hours(1) - Duration::microseconds(1);
        assert_eq!(
            insert_credential(&store, &sixth, CAP, almost).await,
            CapOutcome::LimitReached
        );
        assert_eq!(get_credential(&store, ACME, "sa-ci", "cred-5").await, None);
        // … and exactly at its expiry (expires_at <= now) the slot is free.
        let expiry = t0() + Duration::hours(1);
        assert_eq!(
            insert_credential(&store, &sixth, CAP, expiry).await,
            CapOutcome::Inserted
        );
        let seventh = credential(&sa, "cred-6", expiry, t0() + Duration::days(1), 106);
        assert_eq!(
            insert_credential(&store, &seventh, CAP, expiry).await,
            CapOutcome::LimitReached
        );
        // A cap is per account: another account still has room.
        let other = account(ACME, "sa-other", t0(), 2);
        insert(&store, &other).await;
        let elsewhere = credential(&other, "cred-7", expiry, t0() + Duration::days(1), 107);
        assert_eq!(
            insert_credential(&store, &elsewhere, CAP, expiry).await,
            CapOutcome::Inserted
        );

        let mut conn = db.connection().await;
        assert_eq!(credential_rows(&mut conn).await, 7);
        let created = db
            .audit_events()
            .await
            .into_iter()
            .filter(|e| e.action == "credential.create")
            .count();
        assert_eq!(created, 7, "refused inserts leave no audit event");
    }

    /// 50 concurrent inserts for `sa`, alternating between two pools on the same database
    /// (two server instances): exactly `CAP` are stored, each with its audit event.
    async fn race_for_the_cap(db: &TestDatabase, sa: &ServiceAccount) {
        let (first, second) = (db.store(), db.store());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50u32 {
            let store = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let c = credential(
                sa,
                &format!("cred-race-{i}"),
                t0(),
                t0() + Duration::days(1),
                1000 + u128::from(i),
            );
            tasks.spawn(async move { insert_credential(&store, &c, CAP, t0()).await });
        }
        let outcomes = tasks.join_all().await;
        let inserted = outcomes
            .iter()
            .filter(|o| **o == CapOutcome::Inserted)
            .count();
        assert_eq!(inserted, 5, "{outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, CapOutcome::Inserted | CapOutcome::LimitReached)),
            "{outcomes:?}"
        );

        let mut conn = db.connection().await;
        assert_eq!(credential_rows(&mut conn).await, 5);
        let account = get_account(&first, ACME, "sa-ci", t0()).await.unwrap();
        assert_eq!(account.active_credential_count, 5);
        let created = db
            .audit_events()
            .await
            .into_iter()
            .filter(|e| e.action == "credential.create")
            .count();
        assert_eq!(created, 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_inserts_through_two_pools_never_exceed_the_cap() {
        let (db, _store, sa) = with_account().await;
        race_for_the_cap(&db, &sa).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_cap_holds_whatever_the_servers_default_isolation_level() {
        // Under REPEATABLE READ the count would use a snapshot taken before the wait for the
        // account lock; the store asks for READ COMMITTED explicitly.
        let (db, _store, sa) = with_account().await;
        db.connection()
            .await
            .batch_execute(&format!(
                "ALTER DATABASE \"{}\" SET default_transaction_isolation = 'repeatable read'",
                db.name()
            ))
            .await
            .unwrap();
        race_for_the_cap(&db, &sa).await;
    }

    #[tokio::test]
    async fn an_insert_for_a_deleted_or_foreign_account_is_account_gone() {
        let (db, store, sa) = with_account().await;
        // The account's uid, claimed by another tenant: not that tenant's account.
        let mut forged = credential(&sa, "cred-forged", t0(), t0() + Duration::days(1), 100);
        forged.tenant = org_id(OTHER);
        assert_eq!(
            insert_credential(&store, &forged, CAP, t0()).await,
            CapOutcome::AccountGone
        );

        ServiceAccountStore::delete(
            &store,
            &org_id(ACME),
            &sa_id("sa-ci"),
            &event(&sa, AuditAction::ServiceAccountDeleted, t0()),
        )
        .await
        .unwrap();
        let late = credential(&sa, "cred-late", t0(), t0() + Duration::days(1), 101);
        assert_eq!(
            insert_credential(&store, &late, CAP, t0()).await,
            CapOutcome::AccountGone
        );
        let mut conn = db.connection().await;
        assert_eq!(credential_rows(&mut conn).await, 0);
        assert_eq!(
            actions(&db.audit_events().await),
            ["service_account.create", "service_account.delete"]
        );
    }

    #[tokio::test]
    async fn a_duplicate_credential_id_in_the_tenant_is_unexpected() {
        let (db, store, sa) = with_account().await;
        let first = credential(&sa, "cred-dup", t0(), t0() + Duration::days(1), 100);
        insert_credential(&store, &first, CAP, t0()).await;
        let other = account(ACME, "sa-other", t0(), 2);
        insert(&store, &other).await;
        let second = credential(&other, "cred-dup", t0(), t0() + Duration::days(1), 101);
        let result = store
            .insert_within_cap(
                &second,
                CAP,
                t0(),
                &cred_event(&second, AuditAction::CredentialCreated, t0()),
                None,
            )
            .await;
        assert!(
            matches!(result, Err(StoreError::Unexpected(_))),
            "{result:?}"
        );
        let mut conn = db.connection().await;
        assert_eq!(credential_rows(&mut conn).await, 1);
        let created = db
            .audit_events()
            .await
            .into_iter()
            .filter(|e| e.action == "credential.create")
            .count();
        assert_eq!(created, 1);
    }

    /// Inserts `count` credentials of `sa` directly (no cap); every third shares its
    /// predecessor's creation time (so the `uid` tie-break matters) and credential `i` expires
    /// `i` hours after `t0`. Returns them in list order.
    async fn insert_many(
        db: &TestDatabase,
        sa: &ServiceAccount,
        count: u32,
        first_uid: u128,
    ) -> Vec<Credential> {
        let store = db.store();
        let mut credentials = Vec::new();
        for i in 0..count {
            let second = i64::from(i - i % 3 / 2);
            let c = credential(
                sa,
                &format!("cred-{}-{i:04}", sa.id),
                t0() + Duration::seconds(second),
                t0() + Duration::hours(i.into()),
                first_uid + u128::from(count - i),
            );
            // A cap above the count: these inserts test listing, not the cap.
            assert_eq!(
                insert_credential(&store, &c, count + 1, t0()).await,
                CapOutcome::Inserted
            );
            credentials.push(c);
        }
        credentials.sort_by_key(|c| (c.created_at, c.uid));
        credentials
    }

    async fn walk(
        store: &PgStore,
        account: &str,
        status: Option<CredentialStatus>,
        size: i64,
        now: OffsetDateTime,
    ) -> Vec<Credential> {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = list_credentials(
                store,
                ACME,
                account,
                status,
                cursor_request(size, after),
                now,
            )
            .await
            .unwrap();
            assert_eq!(page.total, None, "cursor mode has no total");
            assert!(page.items.len() <= usize::try_from(size).unwrap());
            seen.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return seen,
            }
        }
    }

    fn cred_ids(credentials: &[Credential]) -> Vec<String> {
        credentials.iter().map(|c| c.id.to_string()).collect()
    }

    #[tokio::test]
    async fn cursor_pages_return_every_credential_of_the_account_once_in_order() {
        let (db, store, sa) = with_account().await;
        let expected = insert_many(&db, &sa, 20, 1000).await;
        let other = account(ACME, "sa-other", t0(), 2);
        insert(&store, &other).await;
        insert_many(&db, &other, 4, 5000).await;

        let first = list_credentials(&store, ACME, "sa-ci", None, cursor_request(7, None), t0())
            .await
            .unwrap();
        assert_eq!(first.items, expected[..7].to_vec());
        let last = first.items.last().unwrap();
        assert_eq!(
            first.next,
            Some(Cursor {
                created_at: last.created_at,
                uid: last.uid
            })
        );
        assert_eq!(walk(&store, "sa-ci", None, 7, t0()).await, expected);
        // An exact fit has no next page.
        let exact = list_credentials(&store, ACME, "sa-ci", None, cursor_request(20, None), t0())
            .await
            .unwrap();
        assert_eq!(exact.items.len(), 20);
        assert_eq!(exact.next, None);
        assert_eq!(walk(&store, "sa-other", None, 4, t0()).await.len(), 4);
    }

    #[tokio::test]
    async fn a_missing_or_foreign_account_has_no_list_and_an_empty_one_an_empty_page() {
        let (_db, store, _sa) = with_account().await;
        let foreign = account(OTHER, "sa-foreign", t0(), 2);
        insert(&store, &foreign).await;
        for position in [PagePosition::After(None), PagePosition::Offset(0)] {
            let page = PageRequest {
                size: PageSize::new(10).unwrap(),
                position,
            };
            for account in ["sa-none", "sa-foreign"] {
                assert_eq!(
                    list_credentials(&store, ACME, account, None, page, t0()).await,
                    None,
                    "{account}"
                );
            }
            let empty = list_credentials(&store, ACME, "sa-ci", None, page, t0())
                .await
                .unwrap();
            assert!(empty.items.is_empty());
            assert_eq!(empty.next, None);
            let total = match position {
                PagePosition::After(_) => None,
                PagePosition::Offset(_) => Some(0),
            };
            assert_eq!(empty.total, total);
        }
    }

    #[tokio::test]
    async fn offset_pages_report_the_total_and_the_status_filter_applies_at_now() {
        let (db, store, sa) = with_account().await;
        // Credential i expires i hours after t0: at t0 + 5h, credentials 0–5 are expired.
        let all = insert_many(&db, &sa, 12, 1000).await;
        let now = t0() + Duration::hours(5);
        let (expired, active): (Vec<Credential>, Vec<Credential>) =
            all.iter().cloned().partition(|c| c.expires_at <= now);
        assert_eq!((expired.len(), active.len()), (6, 6));
        assert!(
            expired
                .iter()
                .all(|c| c.status(now) == CredentialStatus::Expired)
        );

        let offset = |offset, size| PageRequest {
            size: PageSize::new(size).unwrap(),
            position: PagePosition::Offset(offset),
        };
        let page = list_credentials(&store, ACME, "sa-ci", None, offset(10, 5), now)
            .await
            .unwrap();
        assert_eq!(page.total, Some(12));
        assert_eq!(page.next, None);
        assert_eq!(page.items, all[10..].to_vec());

        for (status, expected) in [
            (CredentialStatus::Active, &active),
            (CredentialStatus::Expired, &expired),
        ] {
            assert_eq!(
                cred_ids(&walk(&store, "sa-ci", Some(status), 4, now).await),
                cred_ids(expected),
                "{status}"
            );
            let counted =
                list_credentials(&store, ACME, "sa-ci", Some(status), offset(1, 500), now)
                    .await
                    .unwrap();
            assert_eq!(counted.total, Some(6), "{status}");
            assert_eq!(counted.items, expected[1..].to_vec(), "{status}");
        }
        // At t0 every credential but the first (expiring at t0 itself) is active.
        assert_eq!(
            walk(&store, "sa-ci", Some(CredentialStatus::Active), 50, t0())
                .await
                .len(),
            11
        );
    }

    #[tokio::test]
    async fn delete_removes_a_credential_of_the_named_account_once_with_one_audit_event() {
        let (db, store, sa) = with_account().await;
        let sibling = account(ACME, "sa-sibling", t0(), 2);
        insert(&store, &sibling).await;
        let stored = credential(&sa, "cred-a", t0(), t0() + Duration::days(1), 100);
        insert_credential(&store, &stored, CAP, t0()).await;
        let kept = credential(&sa, "cred-b", t0(), t0() + Duration::days(1), 101);
        insert_credential(&store, &kept, CAP, t0()).await;
        let before = db.audit_events().await.len();

        // Under another account, in another tenant, or unknown: nothing happens.
        assert!(!delete_credential(&store, ACME, "sa-sibling", "cred-a", t0()).await);
        assert!(!delete_credential(&store, OTHER, "sa-ci", "cred-a", t0()).await);
        assert!(!delete_credential(&store, ACME, "sa-ci", "cred-none", t0()).await);
        assert_eq!(db.audit_events().await.len(), before);

        let at = t0() + Duration::minutes(1);
        assert!(delete_credential(&store, ACME, "sa-ci", "cred-a", at).await);
        assert_eq!(get_credential(&store, ACME, "sa-ci", "cred-a").await, None);
        assert!(!delete_credential(&store, ACME, "sa-ci", "cred-a", at).await);
        assert_eq!(
            get_credential(&store, ACME, "sa-ci", "cred-b").await,
            Some(kept)
        );

        let events = db.audit_events().await;
        assert_eq!(
            events.len(),
            before + 1,
            "exactly one event for one deletion"
        );
        let deleted = events.last().unwrap();
        assert_eq!(deleted.action, "credential.delete");
        assert_eq!(deleted.actor, "bob");
        assert_eq!(
            deleted.resource,
            "service-accounts/sa-ci/credentials/cred-a"
        );
        assert_eq!(deleted.occurred_at, at);
    }

    #[tokio::test]
    async fn deleting_a_service_account_deletes_its_credentials() {
        let (db, store, sa) = with_account().await;
        let other = account(ACME, "sa-other", t0(), 2);
        insert(&store, &other).await;
        insert_many(&db, &sa, 3, 1000).await;
        insert_many(&db, &other, 2, 5000).await;

        let deleted = ServiceAccountStore::delete(
            &store,
            &org_id(ACME),
            &sa_id("sa-ci"),
            &event(&sa, AuditAction::ServiceAccountDeleted, t0()),
        )
        .await
        .unwrap();
        assert!(deleted);
        let mut conn = db.connection().await;
        assert_eq!(
            credential_rows(&mut conn).await,
            2,
            "only sa-other's remain"
        );
        assert_eq!(
            get_credential(&store, ACME, "sa-ci", "cred-sa-ci-0000").await,
            None
        );

        // An account created again under the same id starts without credentials.
        insert(&store, &account(ACME, "sa-ci", t0(), 3)).await;
        let page = list_credentials(&store, ACME, "sa-ci", None, cursor_request(50, None), t0())
            .await
            .unwrap();
        assert!(page.items.is_empty());
        assert_eq!(
            get_account(&store, ACME, "sa-ci", t0())
                .await
                .unwrap()
                .active_credential_count,
            0
        );
    }

    #[tokio::test]
    async fn active_credential_count_is_computed_at_now_on_get_and_list() {
        let (db, store, sa) = with_account().await;
        let other = account(ACME, "sa-other", t0() + Duration::seconds(1), 2);
        insert(&store, &other).await;
        // Credentials of sa-ci expire 0, 1, 2 and 3 hours after t0.
        insert_many(&db, &sa, 4, 1000).await;
        insert_many(&db, &other, 1, 5000).await;

        let counts = async |now: OffsetDateTime| {
            let got = get_account(&store, ACME, "sa-ci", now).await.unwrap();
            let cursor = ServiceAccountStore::list(
                &store,
                &org_id(ACME),
                &ServiceAccountFilter::default(),
                cursor_request(50, None),
                now,
            )
            .await
            .unwrap();
            let offset = ServiceAccountStore::list(
                &store,
                &org_id(ACME),
                &ServiceAccountFilter::default(),
                PageRequest {
                    size: PageSize::new(50).unwrap(),
                    position: PagePosition::Offset(0),
                },
                now,
            )
            .await
            .unwrap();
            let listed = |page: &Page<ServiceAccount>| {
                page.items
                    .iter()
                    .map(|a| (a.id.to_string(), a.active_credential_count))
                    .collect::<Vec<_>>()
            };
            assert_eq!(listed(&cursor), listed(&offset));
            (got.active_credential_count, listed(&cursor))
        };
        let at = |hours: i64| t0() + Duration::hours(hours);
        let pair =
            |ci: u32, other: u32| vec![("sa-ci".to_owned(), ci), ("sa-other".to_owned(), other)];
        assert_eq!(
            counts(at(0) - Duration::microseconds(1)).await,
            (4, pair(4, 1))
        );
        assert_eq!(
            counts(at(0)).await,
            (3, pair(3, 0)),
            "expired at expires_at"
        );
        assert_eq!(counts(at(2)).await, (1, pair(1, 0)));
        assert_eq!(counts(at(3)).await, (0, pair(0, 0)));
        // A fresh account has none.
        assert_eq!(account(ACME, "sa-x", t0(), 9).active_credential_count, 0);
    }

    /// 2000 more accounts of `ACME` with 5 credentials each, and 10 000 credentials of
    /// `sa-ci` (uid 1), created one second apart from 2026-01-01 and expiring one minute
    /// apart; then `ANALYZE`.
    pub(super) async fn seed_many_credentials(conn: &mut AsyncPgConnection) {
        // Many accounts with credentials, and one account with many.
        conn.batch_execute(
            "INSERT INTO service_accounts (uid, org_id, id, display_name, client_id, scope, \
             scope_id, roles, status, created_by, created_at, updated_at, revision) \
             SELECT gen_random_uuid(), 'org-acme', 'sa-bulk-' || i, 'bulk', \
                'sa-bulk-' || i || '@org-acme.iam', 'project', 'web', '{}', 'active', \
                'seed', now(), now(), 1 \
             FROM generate_series(1, 2000) AS i; \
             INSERT INTO credentials (uid, org_id, service_account_uid, id, secret_hash, \
                expires_at, created_by, created_at) \
             SELECT gen_random_uuid(), 'org-acme', sa.uid, 'cred-' || sa.id || '-' || i, \
                sha256(sa.id::bytea), now() + interval '1 day', 'seed', \
                timestamptz '2026-01-01' + i * interval '1 second' \
             FROM service_accounts sa, generate_series(1, 5) AS i \
             WHERE sa.id LIKE 'sa-bulk-%'; \
             INSERT INTO credentials (uid, org_id, service_account_uid, id, secret_hash, \
                expires_at, created_by, created_at) \
             SELECT gen_random_uuid(), 'org-acme', '00000000-0000-0000-0000-000000000001', \
                'cred-many-' || i, sha256(i::text::bytea), \
                timestamptz '2026-01-01' + i * interval '1 minute', 'seed', \
                timestamptz '2026-01-01' + i * interval '1 second' \
             FROM generate_series(1, 10000) AS i; \
             ANALYZE service_accounts; ANALYZE credentials",
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_deep_credential_page_is_an_index_range_scan_on_the_page_index() {
        let (db, store, sa) = with_account().await;
        let mut conn = db.connection().await;
        seed_many_credentials(&mut conn).await;

        let deep = Cursor {
            created_at: datetime!(2026-01-01 00:00:00 UTC) + Duration::seconds(8_000),
            uid: Uuid::nil(),
        };
        let now = datetime!(2026-01-05 00:00:00 UTC);
        let explain = async |status, after| {
            store
                .explain_credential_page(
                    &org_id(ACME),
                    &sa_id("sa-ci"),
                    CredentialFilter { status },
                    now,
                    after,
                    50,
                )
                .await
                .unwrap()
                .join("\n")
        };
        // Unfiltered: a keyset range scan of the page index, the account uid (from the
        // `InitPlan` on service_accounts) and the row comparison as index conditions.
        for after in [None, Some(deep)] {
            let plan = explain(None, after).await;
            assert!(plan.contains("InitPlan"), "{plan}");
            assert!(
                plan.contains("Index Scan using credentials_page_idx"),
                "{plan}"
            );
            assert!(
                !plan.contains("Seq Scan") && !plan.contains("Sort"),
                "{plan}"
            );
            let index_cond = plan
                .lines()
                .find(|line| line.contains("Index Cond") && line.contains("service_account_uid"))
                .unwrap_or_else(|| panic!("no index condition on the account in\n{plan}"));
            if after.is_some() {
                assert!(
                    index_cond.contains("ROW(created_at, uid) > ROW("),
                    "the row comparison must be an index condition:\n{plan}"
                );
            }
        }
        // Filtered by status: Postgres may prefer credentials_active_idx (account, expiry)
        // and a top-N sort of that account's matching credentials. Either way the scan is
        // confined to the one account by an index condition.
        for status in [CredentialStatus::Active, CredentialStatus::Expired] {
            for after in [None, Some(deep)] {
                let plan = explain(Some(status), after).await;
                assert!(!plan.contains("Seq Scan"), "{plan}");
                assert!(
                    plan.lines().any(|line| line.contains("Index Cond")
                        && line.contains("service_account_uid = $")),
                    "{plan}"
                );
            }
        }
        let page = list_credentials(
            &store,
            ACME,
            "sa-ci",
            None,
            cursor_request(50, Some(deep)),
            now,
        )
        .await
        .unwrap();
        assert_eq!(page.items.len(), 50);
        assert_eq!(page.items[0].id.as_str(), "cred-many-8000");
        assert_eq!(page.items[0].service_account_id, sa.id);

        // The account's active credential count is an index scan on credentials_active_idx
        // (one per account of a page).
        let plan = store
            .explain_list_page(
                &org_id(ACME),
                &ServiceAccountFilter::default(),
                None,
                50,
                now,
            )
            .await
            .unwrap()
            .join("\n");
        assert!(plan.contains("SubPlan"), "{plan}");
        assert!(plan.contains("using credentials_active_idx"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }
}

mod tokens {
    //! `CredentialStore::find_for_mint`, `TokenStore` and the purge of revocations.

    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use iam_domain::credential::Credential;
    use iam_domain::ports::{CapOutcome, CredentialStore, TokenRef, TokenStore};

    use super::credentials::{
        CAP, cred_id, credential, delete_credential, insert_credential, seed_many_credentials,
        with_account,
    };
    use super::*;

    /// A day after `t0`.
    fn tomorrow() -> OffsetDateTime {
        t0() + Duration::days(1)
    }

    async fn stored_credential(
        store: &PgStore,
        account: &ServiceAccount,
        id: &str,
        expires_at: OffsetDateTime,
        uid: u128,
    ) -> Credential {
        let credential = credential(account, id, t0(), expires_at, uid);
        assert_eq!(
            insert_credential(store, &credential, CAP, t0()).await,
            CapOutcome::Inserted
        );
        credential
    }

    async fn find(
        store: &PgStore,
        client_id: &ClientId,
        id: &str,
    ) -> Option<(Credential, ServiceAccount)> {
        store.find_for_mint(client_id, &cred_id(id)).await.unwrap()
    }

    /// The issuer of the tokens these tests revoke.
    const ISSUER: &str = "https://iam.test";

    /// Token `jti` of [`ISSUER`].
    fn ours(jti: &str) -> TokenRef<'_> {
        TokenRef {
            issuer: ISSUER,
            id: jti,
        }
    }

    async fn live(
        store: &PgStore,
        jti: &str,
        service_account: Option<(&ClientId, &str)>,
        now: OffsetDateTime,
    ) -> bool {
        live_from(store, ours(jti), service_account, now).await
    }

    async fn live_from(
        store: &PgStore,
        token: TokenRef<'_>,
        service_account: Option<(&ClientId, &str)>,
        now: OffsetDateTime,
    ) -> bool {
        let service_account = service_account.map(|(client, id)| (client, cred_id(id)));
        store
            .is_live(token, service_account.as_ref().map(|(c, id)| (*c, id)), now)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn find_for_mint_returns_the_pair_only_for_the_credential_of_that_client() {
        let (db, _, sa) = with_account().await;
        let (store, statements) = db.counting_store();
        let other = account(ACME, "sa-other", t0(), 2);
        insert(&store, &other).await;
        let foreign = account(OTHER, "sa-ci", t0(), 3);
        insert(&store, &foreign).await;
        let cred_a = stored_credential(&store, &sa, "cred-a", tomorrow(), 100).await;
        stored_credential(&store, &other, "cred-b", tomorrow(), 101).await;
        // The same credential id in another tenant, under an account with the same id.
        stored_credential(&store, &foreign, "cred-a", tomorrow(), 102).await;

        statements.take();
        let (credential, account) = find(&store, &sa.client_id, "cred-a").await.unwrap();
        assert_eq!(statements.take(), 1, "one statement");
        assert_eq!(credential, cred_a);
        // The whole account, with no credential count (documented as 0).
        assert_eq!(account, sa);
        assert_eq!(account.active_credential_count, 0);

        let (credential, account) = find(&store, &foreign.client_id, "cred-a").await.unwrap();
        assert_eq!(credential.uid, Uuid::from_u128(102));
        assert_eq!(account.uid, foreign.uid);

        let unknown = ClientId::from_stored("sa-nobody@org-acme.iam".into());
        assert_eq!(
            find(&store, &unknown, "cred-a").await,
            None,
            "wrong client id"
        );
        assert_eq!(
            find(&store, &sa.client_id, "cred-zzz").await,
            None,
            "wrong credential"
        );
        assert_eq!(
            find(&store, &sa.client_id, "cred-b").await,
            None,
            "a credential of another account of the tenant"
        );
        assert_eq!(
            find(&store, &other.client_id, "cred-a").await,
            None,
            "a credential of another account of the tenant"
        );
        assert_eq!(
            statements.take(),
            5,
            "one statement per lookup, found or not"
        );
    }

    #[tokio::test]
    async fn find_for_mint_returns_expired_credentials_and_disabled_accounts_for_the_caller_to_judge()
     {
        let (db, store, sa) = with_account().await;
        let expired = stored_credential(&store, &sa, "cred-old", t0(), 100).await;
        let mut conn = db.connection().await;
        diesel::sql_query("UPDATE service_accounts SET status = 'disabled'")
            .execute(&mut conn)
            .await
            .unwrap();
        let (credential, account) = find(&store, &sa.client_id, "cred-old").await.unwrap();
        assert_eq!(credential, expired);
        assert_eq!(account.status, ServiceAccountStatus::Disabled);
    }

    #[tokio::test]
    async fn the_mint_lookup_and_the_liveness_check_are_unique_index_probes() {
        let (db, store, sa) = with_account().await;
        let mut conn = db.connection().await;
        seed_many_credentials(&mut conn).await;
        conn.batch_execute(
            "INSERT INTO revoked_tokens (jti, issuer, org_id, expires_at) \
             SELECT gen_random_uuid()::text, 'https://iam.test', 'org-acme', \
                    now() + interval '15 minutes' \
             FROM generate_series(1, 5000); \
             ANALYZE revoked_tokens",
        )
        .await
        .unwrap();

        let plan = store
            .explain_find_for_mint(&sa.client_id, &cred_id("cred-many-77"))
            .await
            .unwrap()
            .join("\n");
        assert!(
            plan.contains("using service_accounts_client_id_key"),
            "{plan}"
        );
        assert!(plan.contains("using credentials_org_id_id_key"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");

        let plan = store
            .explain_is_live(ours("jti-1"), &sa.client_id, &cred_id("cred-many-77"), t0())
            .await
            .unwrap()
            .join("\n");
        assert!(plan.contains("using revoked_tokens_pkey"), "{plan}");
        assert!(
            plan.contains("using service_accounts_client_id_key"),
            "{plan}"
        );
        assert!(plan.contains("using credentials_org_id_id_key"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");

        let (credential, _) = find(&store, &sa.client_id, "cred-many-77").await.unwrap();
        assert_eq!(credential.id.as_str(), "cred-many-77");
    }

    #[tokio::test]
    async fn a_user_token_is_live_until_its_jti_is_revoked() {
        let (db, _) = seeded().await;
        let (store, statements) = db.counting_store();
        assert!(live(&store, "jti-1", None, t0()).await);
        assert_eq!(statements.take(), 1);

        store
            .revoke(&org_id(ACME), ours("jti-1"), tomorrow())
            .await
            .unwrap();
        assert_eq!(statements.take(), 1);
        assert!(!live(&store, "jti-1", None, t0()).await);
        assert!(
            live(&store, "jti-2", None, t0()).await,
            "other tokens stay live"
        );
        assert_eq!(statements.take(), 2);
    }

    #[tokio::test]
    async fn a_service_account_token_is_live_only_while_its_credential_and_account_are() {
        let (db, _, sa) = with_account().await;
        let (store, statements) = db.counting_store();
        let now = t0() + Duration::hours(1);
        let other = account(ACME, "sa-other", t0(), 2);
        let disabled = account(ACME, "sa-disabled", t0(), 3);
        let deleted = account(ACME, "sa-deleted", t0(), 4);
        for account in [&other, &disabled, &deleted] {
            insert(&store, account).await;
        }
        stored_credential(&store, &sa, "cred-a", tomorrow(), 100).await;
        stored_credential(&store, &sa, "cred-gone", tomorrow(), 101).await;
        stored_credential(&store, &sa, "cred-ends", now, 102).await;
        stored_credential(
            &store,
            &sa,
            "cred-ends-later",
            now + Duration::microseconds(1),
            103,
        )
        .await;
        stored_credential(&store, &other, "cred-b", tomorrow(), 104).await;
        stored_credential(&store, &disabled, "cred-d", tomorrow(), 105).await;
        stored_credential(&store, &deleted, "cred-x", tomorrow(), 106).await;

        statements.take();
        assert!(live(&store, "jti-1", Some((&sa.client_id, "cred-a")), now).await);
        assert_eq!(statements.take(), 1, "one statement");
        assert!(
            live(
                &store,
                "jti-1",
                Some((&sa.client_id, "cred-ends-later")),
                now
            )
            .await
        );
        assert!(live(&store, "jti-1", Some((&other.client_id, "cred-b")), now).await);
        assert!(live(&store, "jti-1", Some((&disabled.client_id, "cred-d")), now).await);
        assert!(live(&store, "jti-1", Some((&deleted.client_id, "cred-x")), now).await);

        // Expired at `now` (expires_at = now is no longer live).
        assert!(!live(&store, "jti-1", Some((&sa.client_id, "cred-ends")), now).await);
        // A credential of another account, or an unknown one.
        assert!(!live(&store, "jti-1", Some((&sa.client_id, "cred-b")), now).await);
        assert!(!live(&store, "jti-1", Some((&sa.client_id, "cred-none")), now).await);
        // Credential deleted.
        assert!(delete_credential(&store, ACME, "sa-ci", "cred-gone", now).await);
        assert!(!live(&store, "jti-1", Some((&sa.client_id, "cred-gone")), now).await);
        // Account disabled.
        let mut conn = db.connection().await;
        diesel::sql_query(
            "UPDATE service_accounts SET status = 'disabled' WHERE id = 'sa-disabled'",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        assert!(!live(&store, "jti-1", Some((&disabled.client_id, "cred-d")), now).await);
        // Account deleted (with its credentials).
        assert!(
            ServiceAccountStore::delete(
                &store,
                &org_id(ACME),
                &deleted.id,
                &event(&deleted, AuditAction::ServiceAccountDeleted, now),
            )
            .await
            .unwrap()
        );
        assert!(!live(&store, "jti-1", Some((&deleted.client_id, "cred-x")), now).await);

        // A revoked jti, with a perfectly live credential.
        store
            .revoke(&org_id(ACME), ours("jti-1"), tomorrow())
            .await
            .unwrap();
        assert!(!live(&store, "jti-1", Some((&sa.client_id, "cred-a")), now).await);
        assert!(live(&store, "jti-2", Some((&sa.client_id, "cred-a")), now).await);
    }

    #[derive(Debug, PartialEq, Eq, Queryable)]
    struct Revocation {
        jti: String,
        issuer: String,
        org_id: String,
        expires_at: OffsetDateTime,
    }

    async fn revocations(db: &TestDatabase) -> Vec<Revocation> {
        use diesel::sql_types::{Text, Timestamptz};
        let mut conn = db.connection().await;
        diesel::dsl::sql::<(Text, Text, Text, Timestamptz)>(
            "SELECT jti, issuer, org_id, expires_at FROM revoked_tokens ORDER BY jti, issuer",
        )
        .load::<Revocation>(&mut conn)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn revoking_twice_keeps_one_record_and_is_not_an_error() {
        let (db, store) = seeded().await;
        store
            .revoke(&org_id(ACME), ours("jti-1"), tomorrow())
            .await
            .unwrap();
        store
            .revoke(
                &org_id(ACME),
                ours("jti-1"),
                tomorrow() + Duration::hours(1),
            )
            .await
            .unwrap();
        assert_eq!(
            revocations(&db).await,
            [Revocation {
                jti: "jti-1".into(),
                issuer: ISSUER.into(),
                org_id: ACME.into(),
                expires_at: tomorrow(),
            }]
        );
        assert!(!live(&store, "jti-1", None, t0()).await);
    }

    #[tokio::test]
    async fn purge_deletes_only_revocations_of_tokens_expired_before_now() {
        let (db, store) = seeded().await;
        let now = t0();
        for (jti, expires_at) in [
            ("jti-expired", now - Duration::microseconds(1)),
            ("jti-at-now", now),
            ("jti-later", now + Duration::minutes(15)),
        ] {
            store
                .revoke(&org_id(ACME), ours(jti), expires_at)
                .await
                .unwrap();
        }
        assert_eq!(store.purge_expired_revocations(now).await.unwrap(), 1);
        assert_eq!(store.purge_expired_revocations(now).await.unwrap(), 0);
        let left: Vec<String> = revocations(&db).await.into_iter().map(|r| r.jti).collect();
        assert_eq!(left, ["jti-at-now", "jti-later"]);
        assert!(!live(&store, "jti-at-now", None, now).await);
        assert!(!live(&store, "jti-later", None, now).await);
    }

    #[tokio::test]
    async fn a_revocation_names_its_issuer_and_legacy_ones_apply_to_every_issuer() {
        let (db, store) = seeded().await;
        let external = TokenRef {
            issuer: "https://idp.test",
            id: "jti-shared",
        };
        store
            .revoke(&org_id(ACME), external, tomorrow())
            .await
            .unwrap();
        assert!(!live_from(&store, external, None, t0()).await);
        assert!(
            live(&store, "jti-shared", None, t0()).await,
            "our token with the same jti is another token"
        );
        // Both issuers' tokens of one jti can be revoked side by side.
        store
            .revoke(&org_id(ACME), ours("jti-shared"), tomorrow())
            .await
            .unwrap();
        assert!(!live(&store, "jti-shared", None, t0()).await);
        assert_eq!(revocations(&db).await.len(), 2);

        // A row recorded before revocations named their issuer (issuer '') still applies.
        let mut conn = db.connection().await;
        diesel::sql_query(
            "INSERT INTO revoked_tokens (jti, issuer, org_id, expires_at) \
             VALUES ('jti-legacy', '', 'org-acme', now() + interval '1 day')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        assert!(!live(&store, "jti-legacy", None, t0()).await);
        let legacy_elsewhere = TokenRef {
            issuer: "https://idp.test",
            id: "jti-legacy",
        };
        assert!(!live_from(&store, legacy_elsewhere, None, t0()).await);
    }

    #[tokio::test]
    async fn a_revocation_of_a_token_expiring_after_the_year_9999_is_never_purged_early() {
        let (db, store) = seeded().await;
        let far = iam_domain::token_service::revocation_expiry(i64::MAX);
        store
            .revoke(&org_id(ACME), ours("jti-forever"), far)
            .await
            .unwrap();
        let stored = revocations(&db).await;
        assert_eq!(stored[0].expires_at.year(), 9999);
        assert_eq!(store.purge_expired_revocations(t0()).await.unwrap(), 0);
        assert!(!live(&store, "jti-forever", None, t0()).await);
    }
}

mod usage {
    //! `UsageBuffer`: in-memory coalescing of last uses, written in one statement per flush.

    use std::net::Ipv6Addr;

    use iam_domain::credential::Credential;
    use iam_domain::ports::UsageRecorder;
    use iam_postgres::UsageBuffer;

    use super::credentials::{CAP, credential, get_credential, insert_credential, with_account};
    use super::*;

    #[expect(
        clippy::unnecessary_wraps,
        reason = "the recorded and stored form, compared with `None` too"
    )]
    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, last)))
    }

    /// `sa-ci` with credentials `cred-a` (uid 100) and `cred-b` (uid 101).
    async fn with_credentials() -> (TestDatabase, PgStore, Credential, Credential) {
        let (db, store, sa) = with_account().await;
        let a = credential(&sa, "cred-a", t0(), t0() + Duration::days(90), 100);
        let b = credential(&sa, "cred-b", t0(), t0() + Duration::days(90), 101);
        for c in [&a, &b] {
            insert_credential(&store, c, CAP, t0()).await;
        }
        (db, store, a, b)
    }

    async fn last_use(store: &PgStore, id: &str) -> (Option<OffsetDateTime>, Option<IpAddr>) {
        let c = get_credential(store, ACME, "sa-ci", id).await.unwrap();
        (c.last_used_at, c.last_used_ip)
    }

    #[tokio::test]
    async fn uses_coalesce_to_the_latest_per_credential_and_one_statement_writes_them() {
        let (db, _, a, b) = with_credentials().await;
        let (store, statements) = db.counting_store();
        let buffer = UsageBuffer::new(store.clone());
        let ipv6 = Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)));

        // Out of order, from several tasks at once.
        let tasks: Vec<_> = (0..8u8)
            .map(|task| {
                let buffer = buffer.clone();
                let (a, b) = (a.uid, b.uid);
                tokio::spawn(async move {
                    for i in 0..100u8 {
                        let n = i64::from(i) * 8 + i64::from(task);
                        buffer.record_use(a, t0() + Duration::milliseconds(n), ip(task));
                        buffer.record_use(b, t0() - Duration::milliseconds(n), ip(i));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let latest_a = t0() + Duration::milliseconds(99 * 8 + 7);
        buffer.record_use(a.uid, latest_a, ipv6); // the same time again: keeps the first
        assert_eq!(buffer.pending(), 2);
        assert_eq!(statements.get(), 0, "recording never touches the database");

        assert_eq!(buffer.flush().await.unwrap(), 2);
        assert_eq!(statements.take(), 1, "one statement");
        assert_eq!(buffer.pending(), 0);
        assert_eq!(last_use(&store, "cred-a").await, (Some(latest_a), ip(7)));
        assert_eq!(last_use(&store, "cred-b").await, (Some(t0()), ip(0)));

        // Nothing pending: no statement at all.
        statements.take();
        assert_eq!(buffer.flush().await.unwrap(), 0);
        assert_eq!(statements.get(), 0);

        // A newer use, IPv6 and without an address.
        let later = latest_a + Duration::seconds(5);
        buffer.record_use(a.uid, later, ipv6);
        buffer.record_use(b.uid, later, None);
        assert_eq!(buffer.flush().await.unwrap(), 2);
        assert_eq!(last_use(&store, "cred-a").await, (Some(later), ipv6));
        assert_eq!(last_use(&store, "cred-b").await, (Some(later), None));
    }

    #[tokio::test]
    async fn an_older_use_never_overwrites_a_newer_stored_one() {
        let (_db, store, a, b) = with_credentials().await;
        let first = UsageBuffer::new(store.clone());
        let second = UsageBuffer::new(store.clone()); // another server instance
        let newer = t0() + Duration::minutes(10);
        first.record_use(a.uid, newer, ip(1));
        second.record_use(a.uid, t0(), ip(2));
        second.record_use(b.uid, t0(), ip(2));
        // An unknown (e.g. deleted) credential is skipped.
        second.record_use(Uuid::from_u128(999), t0(), ip(2));

        assert_eq!(first.flush().await.unwrap(), 1);
        assert_eq!(second.flush().await.unwrap(), 1, "only cred-b is updated");
        assert_eq!(second.pending(), 0);
        assert_eq!(last_use(&store, "cred-a").await, (Some(newer), ip(1)));
        assert_eq!(last_use(&store, "cred-b").await, (Some(t0()), ip(2)));
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_the_entries_merged_with_newer_uses() {
        let (db, store, a, b) = with_credentials().await;
        let buffer = UsageBuffer::new(store.clone());
        let mut conn = db.connection().await;
        let t1 = t0() + Duration::seconds(1);
        let t2 = t0() + Duration::seconds(2);
        buffer.record_use(a.uid, t2, ip(2));
        buffer.record_use(b.uid, t1, ip(1));

        conn.batch_execute("ALTER TABLE credentials RENAME COLUMN last_used_ip TO broken")
            .await
            .unwrap();
        let failed = buffer.flush().await;
        assert!(
            matches!(failed, Err(StoreError::Unexpected(_))),
            "{failed:?}"
        );
        assert_eq!(buffer.pending(), 2, "the entries are back");
        // Meanwhile: an older use of a (ignored) and a newer use of b (kept).
        buffer.record_use(a.uid, t1, ip(9));
        buffer.record_use(b.uid, t2, ip(3));
        conn.batch_execute("ALTER TABLE credentials RENAME COLUMN broken TO last_used_ip")
            .await
            .unwrap();

        assert_eq!(buffer.flush().await.unwrap(), 2);
        assert_eq!(buffer.pending(), 0);
        assert_eq!(last_use(&store, "cred-a").await, (Some(t2), ip(2)));
        assert_eq!(last_use(&store, "cred-b").await, (Some(t2), ip(3)));
    }

    #[tokio::test]
    async fn the_flusher_writes_pending_uses_periodically() {
        let (_db, store, a, _) = with_credentials().await;
        let buffer = UsageBuffer::new(store.clone());
        let flusher = buffer.spawn_flusher(StdDuration::from_millis(20));
        buffer.record_use(a.uid, t0(), ip(4));
        let started = Instant::now();
        while last_use(&store, "cred-a").await.0.is_none() {
            assert!(
                started.elapsed() < StdDuration::from_secs(5),
                "never flushed"
            );
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
        assert_eq!(buffer.pending(), 0);
        assert_eq!(last_use(&store, "cred-a").await, (Some(t0()), ip(4)));
        flusher.abort();
        assert!(flusher.await.unwrap_err().is_cancelled());
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
                projects_pruned: 0,
                roles_pruned: 0,
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
                "+roles/compute.deployer"
            ]
        );
        assert_eq!(events[1].changed_fields, ["+organization", "+roles/admin"]);
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
}

mod idempotency {
    use super::*;

    pub(super) fn key(name: &str) -> IdempotencyKey {
        IdempotencyKey {
            tenant: org_id(ACME),
            subject: "alice".into(),
            key: name.into(),
        }
    }

    pub(super) const FP: [u8; 32] = [7; 32];
    const OTHER_FP: [u8; 32] = [8; 32];
    pub(super) const ABANDON: Duration = Duration::minutes(1);

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

    fn completion(
        key: &IdempotencyKey,
        claimed_at: OffsetDateTime,
        response: StoredResponse,
    ) -> IdempotencyCompletion {
        IdempotencyCompletion {
            key: key.clone(),
            claimed_at,
            response,
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

        store
            .complete(&completion(&k, t0(), response()))
            .await
            .unwrap();
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
        store
            .complete(&completion(&done, t0(), response()))
            .await
            .unwrap();
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
        store
            .complete(&completion(&k, t0(), response()))
            .await
            .unwrap();
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
        store
            .complete(&completion(&k, t0(), response()))
            .await
            .unwrap();
        store.release(&k, t0()).await.unwrap();
        assert_eq!(
            store.claim(&k, &OTHER_FP, later, ABANDON).await.unwrap(),
            IdempotencyClaim::InProgress
        );
        let mine = StoredResponse {
            status: 409,
            ..response()
        };
        store
            .complete(&completion(&k, later, mine.clone()))
            .await
            .unwrap();
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

mod idempotent_creates {
    //! The record of an idempotent create is written in the create's own transaction: a
    //! crash right after the create commits can no longer leave it unrecorded.

    use iam_domain::ports::{CapOutcome, CredentialStore};

    use super::credentials::{CAP, cred_event, credential};
    use super::idempotency::{ABANDON, FP, key};
    use super::*;

    fn completion(
        key: &IdempotencyKey,
        claimed_at: OffsetDateTime,
        body: &str,
    ) -> IdempotencyCompletion {
        IdempotencyCompletion {
            key: key.clone(),
            claimed_at,
            response: StoredResponse {
                status: 201,
                headers: vec![],
                body: body.as_bytes().to_vec(),
            },
        }
    }

    /// What a retry after the server died (and the claim's abandonment time passed) sees.
    async fn retry_after_a_crash(store: &PgStore, key: &IdempotencyKey) -> IdempotencyClaim {
        store
            .claim(key, &FP, t0() + ABANDON + Duration::seconds(1), ABANDON)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_created_account_and_its_record_commit_together_so_a_retry_replays() {
        let (db, store) = seeded().await;
        let k = key("create-sa");
        assert_eq!(
            store.claim(&k, &FP, t0(), ABANDON).await.unwrap(),
            IdempotencyClaim::Claimed
        );
        let sa = account(ACME, "sa-once", t0(), 1);
        let done = completion(&k, t0(), "sa-once created");
        store
            .insert(
                &sa,
                &event(&sa, AuditAction::ServiceAccountCreated, t0()),
                Some(&done),
            )
            .await
            .unwrap();
        // The server dies here: before today's separate `complete` step would have run.
        assert_eq!(
            retry_after_a_crash(&store, &k).await,
            IdempotencyClaim::Replay(done.response.clone()),
            "the retry replays instead of creating again"
        );
        assert_eq!(db.audit_events().await.len(), 1);
    }

    #[tokio::test]
    async fn a_created_credential_and_its_record_commit_together_so_no_second_slot_is_used() {
        let (db, store) = seeded().await;
        let sa = account(ACME, "sa-ci", t0(), 1);
        insert(&store, &sa).await;
        let k = key("create-cred");
        store.claim(&k, &FP, t0(), ABANDON).await.unwrap();
        let first = credential(&sa, "cred-first", t0(), t0() + Duration::days(1), 10);
        let done = completion(&k, t0(), "cred-first + secret (sealed)");
        let outcome = store
            .insert_within_cap(
                &first,
                CAP,
                t0(),
                &cred_event(&first, AuditAction::CredentialCreated, t0()),
                Some(&done),
            )
            .await
            .unwrap();
        assert_eq!(outcome, CapOutcome::Inserted);
        assert_eq!(
            retry_after_a_crash(&store, &k).await,
            IdempotencyClaim::Replay(done.response.clone())
        );
        assert_eq!(
            db.audit_events().await.len(),
            2,
            "account and one credential"
        );
    }

    #[tokio::test]
    async fn a_create_whose_claim_was_taken_over_stores_nothing() {
        let (db, store) = seeded().await;
        let sa = account(ACME, "sa-ci", t0(), 1);
        insert(&store, &sa).await;
        let k = key("slow");
        store.claim(&k, &FP, t0(), ABANDON).await.unwrap();
        // The first request is slow; a retry takes the abandoned claim over.
        assert_eq!(
            retry_after_a_crash(&store, &k).await,
            IdempotencyClaim::Claimed
        );
        let late = credential(&sa, "cred-late", t0(), t0() + Duration::days(1), 10);
        let outcome = store
            .insert_within_cap(
                &late,
                CAP,
                t0(),
                &cred_event(&late, AuditAction::CredentialCreated, t0()),
                Some(&completion(&k, t0(), "late")),
            )
            .await
            .unwrap();
        assert_eq!(outcome, CapOutcome::ClaimLost);
        assert!(
            CredentialStore::get(&store, &org_id(ACME), &sa.id, &late.id)
                .await
                .unwrap()
                .is_none(),
            "rolled back with the record"
        );
        let other = account(ACME, "sa-late", t0(), 2);
        let result = store
            .insert(
                &other,
                &event(&other, AuditAction::ServiceAccountCreated, t0()),
                Some(&completion(&k, t0(), "late")),
            )
            .await;
        assert!(matches!(result, Err(InsertError::ClaimLost)), "{result:?}");
        assert_eq!(db.audit_events().await.len(), 1, "only the first account");
        // The claim that took over is untouched and still in progress.
        assert_eq!(
            store
                .claim(&k, &FP, t0() + ABANDON + Duration::seconds(2), ABANDON)
                .await
                .unwrap(),
            IdempotencyClaim::InProgress
        );
    }

    #[tokio::test]
    async fn a_refused_create_writes_no_record() {
        let (_db, store) = seeded().await;
        let sa = account(ACME, "sa-ci", t0(), 1);
        insert(&store, &sa).await;
        let k = key("dup");
        store.claim(&k, &FP, t0(), ABANDON).await.unwrap();
        let result = store
            .insert(
                &sa,
                &event(&sa, AuditAction::ServiceAccountCreated, t0()),
                Some(&completion(&k, t0(), "never")),
            )
            .await;
        assert!(matches!(result, Err(InsertError::Duplicate)));
        // Still the unfinished claim: the 409 is recorded on its own afterwards.
        assert_eq!(
            store
                .claim(&k, &FP, t0() + Duration::seconds(1), ABANDON)
                .await
                .unwrap(),
            IdempotencyClaim::InProgress
        );
    }
}

mod availability {
    use diesel::migration::MigrationSource;
    use diesel::pg::Pg;

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

        // Two instances migrating at once: every migration runs exactly once, in order.
        let (first, second) = tokio::join!(run_migrations(db.url()), run_migrations(db.url()));
        let mut applied = first.unwrap();
        applied.extend(second.unwrap());
        let mut embedded: Vec<String> =
            MigrationSource::<Pg>::migrations(&iam_postgres::MIGRATIONS)
                .unwrap()
                .iter()
                .map(|m| m.name().version().to_string())
                .collect();
        embedded.sort();
        assert!(embedded.len() >= 2, "{embedded:?}");
        assert_eq!(applied, embedded);
        assert_eq!(
            applied.last().map(String::as_str),
            Some(iam_postgres::latest_embedded_version())
        );
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
        let read = || store.get(&tenant, &id, t0());
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
            match store.get(&org_id(ACME), &sa_id("sa-ci"), t0()).await {
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
            store
                .get(&org_id(ACME), &sa_id("sa-ci"), t0())
                .await
                .unwrap(),
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
        let result = store.get(&org_id(ACME), &sa_id("sa-ci"), t0()).await;
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
