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
