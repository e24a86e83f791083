//! `FederatedCredentialStore`, trusted issuers in the directory, and the liveness and last
//! use of tokens minted with a federated credential (SPEC §9).

use std::sync::Arc;

use iam_domain::federated_credential::{
    Audience, ExternalSubject, FederatedCredential, Issuer, TrustedIssuer,
};
use iam_domain::ports::{
    CapOutcome, FederatedCredentialStore, TokenRef, TokenStore, UsageRecorder,
};
use iam_domain::resource_id::CredentialId;
use iam_postgres::UsageBuffer;

use super::credentials::with_account;
use super::*;

/// The issuer `org_spec` makes every test organization trust.
const ISSUER: &str = TRUSTED_ISSUER;

fn fc(
    account: &ServiceAccount,
    id: &str,
    subject: &str,
    created_at: OffsetDateTime,
    uid: u128,
) -> FederatedCredential {
    FederatedCredential {
        uid: Uuid::from_u128(uid),
        tenant: account.tenant.clone(),
        service_account_uid: account.uid,
        service_account_id: account.id.clone(),
        id: CredentialId::parse(id).unwrap(),
        issuer: Issuer::parse(ISSUER).unwrap(),
        subject: ExternalSubject::parse(subject).unwrap(),
        audiences: vec![
            Audience::parse("sts.test").unwrap(),
            Audience::parse("k0rdent").unwrap(),
        ],
        description: Some(Description::parse("GitHub Actions of acme/app").unwrap()),
        created_by: Subject::parse("alice").unwrap(),
        created_at,
        last_used_at: None,
    }
}

fn fc_event(credential: &FederatedCredential, action: AuditAction) -> AuditEvent {
    AuditEvent {
        tenant: credential.tenant.clone(),
        actor: "alice".into(),
        action,
        resource: format!(
            "service-accounts/{}/federated-credentials/{}",
            credential.service_account_id, credential.id
        ),
        changed_fields: vec![],
        request_id: format!("req-{}", credential.id),
        source_ip: None,
        at: credential.created_at,
    }
}

async fn insert_fc(store: &PgStore, credential: &FederatedCredential, cap: u32) -> CapOutcome {
    store
        .insert_federated(
            credential,
            cap,
            &fc_event(credential, AuditAction::FederatedCredentialCreated),
            None,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_federated_credential_round_trips_lists_and_deletes_with_audit_events() {
    let (db, store, sa) = with_account().await;
    let first = fc(
        &sa,
        "fc-first",
        "repo:acme/app:ref:refs/heads/main",
        t0(),
        100,
    );
    let second = fc(
        &sa,
        "fc-second",
        "repo:acme/app:environment:prod",
        t0() + Duration::seconds(1),
        101,
    );
    assert_eq!(insert_fc(&store, &first, 20).await, CapOutcome::Inserted);
    assert_eq!(insert_fc(&store, &second, 20).await, CapOutcome::Inserted);

    let id = CredentialId::parse("fc-first").unwrap();
    assert_eq!(
        store
            .get_federated(&org_id(ACME), &sa_id("sa-ci"), &id)
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store
            .get_federated(&org_id(OTHER), &sa_id("sa-ci"), &id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_federated(&org_id(ACME), &sa_id("sa-none"), &id)
            .await
            .unwrap(),
        None
    );

    let page = store
        .list_federated(&org_id(ACME), &sa_id("sa-ci"), cursor_request(1, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.items, std::slice::from_ref(&first));
    let rest = store
        .list_federated(&org_id(ACME), &sa_id("sa-ci"), cursor_request(1, page.next))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rest.items, rest.next), (vec![second.clone()], None));
    let offset = PageRequest {
        size: PageSize::new(10).unwrap(),
        position: PagePosition::Offset(1),
    };
    let by_offset = store
        .list_federated(&org_id(ACME), &sa_id("sa-ci"), offset)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (by_offset.items, by_offset.total),
        (vec![second.clone()], Some(2))
    );
    assert!(
        store
            .list_federated(&org_id(ACME), &sa_id("sa-none"), cursor_request(1, None))
            .await
            .unwrap()
            .is_none()
    );

    let deleted = fc_event(&first, AuditAction::FederatedCredentialDeleted);
    assert!(
        store
            .delete_federated(&org_id(ACME), &sa_id("sa-ci"), &id, &deleted)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_federated(&org_id(ACME), &sa_id("sa-ci"), &id, &deleted)
            .await
            .unwrap()
    );
    let actions: Vec<String> = db
        .audit_events()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            "service_account.create",
            "federated_credential.create",
            "federated_credential.create",
            "federated_credential.delete"
        ]
    );
}

#[tokio::test]
async fn the_cap_of_federated_credentials_holds_under_concurrent_inserts() {
    let (_db, store, sa) = with_account().await;
    let store = Arc::new(store);
    let inserts = (0..12u128).map(|i| {
        let store = Arc::clone(&store);
        let credential = fc(&sa, &format!("fc-c{i}"), &format!("sub-{i}"), t0(), 200 + i);
        tokio::spawn(async move { insert_fc(&store, &credential, 5).await })
    });
    let mut inserted = 0;
    for insert in inserts {
        if insert.await.unwrap() == CapOutcome::Inserted {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 5);
    let gone = account(ACME, "sa-gone", t0(), 9);
    assert_eq!(
        insert_fc(&store, &fc(&gone, "fc-x", "s", t0(), 300), 5).await,
        CapOutcome::AccountGone
    );
}

#[tokio::test]
async fn an_exchange_finds_the_credentials_of_the_subject_while_the_issuer_is_trusted() {
    let (db, _, sa) = with_account().await;
    let (store, statements) = db.counting_store();
    let first = fc(&sa, "fc-a", "repo:acme/app", t0(), 100);
    let same_subject = fc(
        &sa,
        "fc-b",
        "repo:acme/app",
        t0() + Duration::seconds(1),
        101,
    );
    let other_subject = fc(&sa, "fc-c", "repo:acme/other", t0(), 102);
    for credential in [&first, &same_subject, &other_subject] {
        insert_fc(&store, credential, 20).await;
    }
    statements.take();
    let found = store
        .find_for_exchange(&sa.client_id, ISSUER, "repo:acme/app")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(statements.take(), 1, "one round trip");
    assert_eq!(
        found.account,
        iam_domain::service_account::Grantee::from(sa.clone())
    );
    assert_eq!(found.credentials, [first.clone(), same_subject]);
    assert_eq!(
        found.trusted,
        TrustedIssuer {
            issuer: Issuer::parse(ISSUER).unwrap(),
            jwks_uri: None
        }
    );
    for (issuer, subject) in [
        (ISSUER, "repo:acme/none"),
        ("https://other.test", "repo:acme/app"),
        (ISSUER, "REPO:ACME/APP"),
    ] {
        assert!(
            store
                .find_for_exchange(&sa.client_id, issuer, subject)
                .await
                .unwrap()
                .is_none()
        );
    }

    // The token's liveness follows the credential, the account and the trust.
    let token = TokenRef {
        issuer: "https://iam.test",
        id: "jti-1",
    };
    let live = |store: PgStore, id: &'static str| {
        let client = sa.client_id.clone();
        async move {
            store
                .is_live(
                    token,
                    Some((&client, &CredentialId::parse(id).unwrap())),
                    t0(),
                )
                .await
                .unwrap()
        }
    };
    assert!(live(store.clone(), "fc-a").await);
    assert!(!live(store.clone(), "fc-none").await);
    db.execute("UPDATE service_accounts SET status = 'disabled'")
        .await;
    assert!(!live(store.clone(), "fc-a").await);
    db.execute("UPDATE service_accounts SET status = 'active'")
        .await;
    let mut untrusting = org_spec(ACME, &["web", "db"], &["admin", "compute.deployer"]);
    untrusting.trusted_issuers.clear();
    store
        .apply_directory(&[untrusting], true, &TestDatabase::operator())
        .await
        .unwrap();
    assert!(!live(store.clone(), "fc-a").await);
    assert!(
        store
            .find_for_exchange(&sa.client_id, ISSUER, "repo:acme/app")
            .await
            .unwrap()
            .is_none()
    );
    let changes = db
        .directory_audit_events()
        .await
        .pop()
        .unwrap()
        .changed_fields;
    assert_eq!(changes, [format!("-trustedIssuers/{ISSUER}")]);
}

#[tokio::test]
async fn the_last_use_of_a_federated_credential_is_flushed_like_a_secrets() {
    let (_db, store, sa) = with_account().await;
    let credential = fc(&sa, "fc-used", "repo:acme/app", t0(), 100);
    insert_fc(&store, &credential, 20).await;
    let buffer = UsageBuffer::new(store.clone());
    let at = t0() + Duration::minutes(3);
    buffer.record_use(
        credential.uid,
        at,
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
    );
    assert_eq!(buffer.flush().await.unwrap(), 1);
    let stored = store
        .get_federated(&org_id(ACME), &sa_id("sa-ci"), &credential.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.last_used_at, Some(at));
}

#[tokio::test]
async fn trusted_issuers_are_applied_changed_and_audited() {
    let (db, store) = seeded().await;
    let trusted = |tenant: &str| {
        let store = store.clone();
        let tenant = org_id(tenant);
        async move { store.trusted_issuer(&tenant, ISSUER).await.unwrap() }
    };
    assert_eq!(trusted(ACME).await.map(|t| t.jwks_uri), Some(None));
    assert_eq!(
        store
            .trusted_issuer(&org_id(ACME), "https://other.test")
            .await
            .unwrap(),
        None
    );

    let mut spec = org_spec(ACME, &["web", "db"], &["admin", "compute.deployer"]);
    spec.trusted_issuers[0].jwks_uri = Some(format!("{ISSUER}/keys"));
    let summary = store
        .apply_directory(&[spec.clone()], false, &TestDatabase::operator())
        .await
        .unwrap();
    assert_eq!(summary.trusted_issuers_upserted, 1);
    assert_eq!(
        trusted(ACME).await.and_then(|t| t.jwks_uri),
        Some(format!("{ISSUER}/keys"))
    );
    let changes = db
        .directory_audit_events()
        .await
        .pop()
        .unwrap()
        .changed_fields;
    assert_eq!(changes, [format!("~trustedIssuers/{ISSUER}")]);
    let again = store
        .apply_directory(&[spec], false, &TestDatabase::operator())
        .await
        .unwrap();
    assert_eq!(again, ApplySummary::default());
}
