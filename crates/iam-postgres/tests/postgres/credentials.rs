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
        created_by: Subject::parse("alice").unwrap(),
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
        let counted = list_credentials(&store, ACME, "sa-ci", Some(status), offset(1, 500), now)
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
    let pair = |ci: u32, other: u32| vec![("sa-ci".to_owned(), ci), ("sa-other".to_owned(), other)];
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
                plan.lines()
                    .any(|line| line.contains("Index Cond")
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
