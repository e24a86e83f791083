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
            a.target = ScopeTarget::parse(Scope::Organization, tenant).unwrap();
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
        target_id: Some(TargetId::parse("web").unwrap()),
        status: Some(ServiceAccountStatus::Active),
    };
    let expected: Vec<ServiceAccount> = accounts
        .iter()
        .filter(|a| a.target.scope() == Scope::Project && a.status == ServiceAccountStatus::Active)
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
    assert!(page.iter().all(|a| a.target.scope() == Scope::Organization));

    let disabled = ServiceAccountFilter {
        status: Some(ServiceAccountStatus::Disabled),
        ..ServiceAccountFilter::default()
    };
    assert_eq!(walk(&store, ACME, &disabled, 500).await.len(), 15);

    let nowhere = ServiceAccountFilter {
        target_id: Some(TargetId::parse("db").unwrap()),
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
