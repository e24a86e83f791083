//! `CredentialStore::find_for_mint`, `TokenStore` and the purge of revocations.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use iam_domain::credential::Credential;
use iam_domain::credential::{CredentialFilter, MintCredential};
use iam_domain::ports::{CapOutcome, CredentialStore, IfLive, LiveToken, TokenRef, TokenStore};
use iam_domain::service_account::Grantee;

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

async fn find(store: &PgStore, client_id: &ClientId, id: &str) -> Option<MintCredential> {
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
    let found = find(&store, &sa.client_id, "cred-a").await.unwrap();
    assert_eq!(statements.take(), 1, "one statement");
    assert_eq!(
        found,
        MintCredential {
            uid: cred_a.uid,
            secret_hash: cred_a.secret_hash.clone(),
            expires_at: cred_a.expires_at,
            account: Grantee::from(sa.clone()),
        }
    );

    let found = find(&store, &foreign.client_id, "cred-a").await.unwrap();
    assert_eq!(found.uid, Uuid::from_u128(102));
    assert_eq!(found.account, Grantee::from(foreign.clone()));

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
async fn find_for_mint_returns_expired_credentials_and_disabled_accounts_for_the_caller_to_judge() {
    let (db, store, sa) = with_account().await;
    let expired = stored_credential(&store, &sa, "cred-old", t0(), 100).await;
    let mut conn = db.connection().await;
    diesel::sql_query("UPDATE service_accounts SET status = 'disabled'")
        .execute(&mut conn)
        .await
        .unwrap();
    let found = find(&store, &sa.client_id, "cred-old").await.unwrap();
    assert_eq!(
        (found.uid, found.expires_at),
        (expired.uid, expired.expires_at)
    );
    assert!(!found.is_active(t0()));
    assert_eq!(found.account.status, ServiceAccountStatus::Disabled);
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

    let found = find(&store, &sa.client_id, "cred-many-77").await.unwrap();
    assert_eq!(found.account.client_id, sa.client_id);
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
    diesel::sql_query("UPDATE service_accounts SET status = 'disabled' WHERE id = 'sa-disabled'")
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

/// What a read under a token's liveness gave.
fn outcome<T>(read: &IfLive<Option<T>>) -> &'static str {
    match read {
        IfLive::Live(Some(_)) => "found",
        IfLive::Live(None) => "missing",
        IfLive::Dead => "dead",
    }
}

/// Every read under a token's liveness (the four kinds `GET` routes of accounts and secret
/// credentials make), as found/missing/dead, with the statements each took.
async fn reads_under(
    store: &PgStore,
    statements: &iam_postgres::test_support::StatementCounter,
    live: &LiveToken<'_>,
    account: &str,
    credential: &str,
) -> Vec<(&'static str, usize)> {
    let (tenant, account, credential) = (org_id(ACME), sa_id(account), cred_id(credential));
    let now = live.now;
    let mut seen = Vec::new();
    statements.take();
    let read = ServiceAccountStore::get_if_live(store, live, &tenant, &account, now);
    seen.push((outcome(&read.await.unwrap()), statements.take()));
    let page = cursor_request(10, None);
    let filter = ServiceAccountFilter::default();
    let read = match ServiceAccountStore::list_if_live(store, live, &tenant, &filter, page, now)
        .await
        .unwrap()
    {
        IfLive::Live(page) => IfLive::Live(page.items.into_iter().find(|a| a.id == account)),
        IfLive::Dead => IfLive::Dead,
    };
    seen.push((outcome(&read), statements.take()));
    let read = CredentialStore::get_if_live(store, live, &tenant, &account, &credential);
    seen.push((outcome(&read.await.unwrap()), statements.take()));
    let filter = CredentialFilter::default();
    let read = CredentialStore::list_if_live(store, live, &tenant, &account, filter, page, now);
    seen.push((outcome(&read.await.unwrap()), statements.take()));
    seen
}

#[tokio::test]
async fn a_read_under_a_live_token_is_one_statement_and_a_dead_token_reads_nothing() {
    let (db, _, sa) = with_account().await;
    let (store, statements) = db.counting_store();
    let now = t0() + Duration::hours(1);
    stored_credential(&store, &sa, "cred-a", tomorrow(), 100).await;
    let a = cred_id("cred-a");
    let user = LiveToken {
        token: ours("jti-user"),
        service_account: None,
        now,
    };
    let bot = LiveToken {
        token: ours("jti-bot"),
        service_account: Some((sa.client_id.clone(), &a)),
        now,
    };
    // The credential list pipelines two statements (the account's existence and the page):
    // one round trip. Where nothing is read, the liveness statement follows on its own.
    let found = vec![("found", 1), ("found", 1), ("found", 1), ("found", 2)];
    let missing = vec![
        ("missing", 2),
        ("missing", 1),
        ("missing", 2),
        ("missing", 3),
    ];
    for token in [&user, &bot] {
        assert_eq!(
            reads_under(&store, &statements, token, "sa-ci", "cred-a").await,
            found
        );
        assert_eq!(
            reads_under(&store, &statements, token, "sa-ci", "cred-none").await,
            [("found", 1), ("found", 1), ("missing", 2), ("found", 2)]
        );
        assert_eq!(
            reads_under(&store, &statements, token, "sa-none", "cred-a").await,
            missing
        );
    }

    // Revoked: nothing is read, whatever exists.
    store
        .revoke(&org_id(ACME), ours("jti-user"), tomorrow())
        .await
        .unwrap();
    let dead = vec![("dead", 2), ("dead", 2), ("dead", 2), ("dead", 3)];
    for (account, credential) in [("sa-ci", "cred-a"), ("sa-none", "cred-none")] {
        assert_eq!(
            reads_under(&store, &statements, &user, account, credential).await,
            dead
        );
    }
    // The bot's account disabled: its own token reads nothing from the next statement on.
    let mut conn = db.connection().await;
    diesel::sql_query("UPDATE service_accounts SET status = 'disabled' WHERE id = 'sa-ci'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        reads_under(&store, &statements, &bot, "sa-ci", "cred-a").await,
        dead
    );
    // Enabled again, then the credential expired (at `now`).
    diesel::sql_query("UPDATE service_accounts SET status = 'active' WHERE id = 'sa-ci'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        reads_under(&store, &statements, &bot, "sa-ci", "cred-a").await,
        found
    );
    let expired = LiveToken {
        now: tomorrow(),
        ..bot.clone()
    };
    assert_eq!(
        reads_under(&store, &statements, &expired, "sa-ci", "cred-a").await,
        dead
    );
}
