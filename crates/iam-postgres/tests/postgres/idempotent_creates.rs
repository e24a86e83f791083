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
