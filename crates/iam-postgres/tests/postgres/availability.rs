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
    let mut embedded: Vec<String> = MigrationSource::<Pg>::migrations(&iam_postgres::MIGRATIONS)
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
        statement_timeout: None,
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

/// A connection (outside the pool) holding `ACCESS EXCLUSIVE` on `service_accounts` until it
/// is dropped or committed: a stalled database.
async fn lock_accounts(db: &TestDatabase) -> diesel_async::AsyncPgConnection {
    let mut locker = db.connection().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE service_accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    locker
}

#[tokio::test]
async fn a_statement_stuck_behind_a_lock_is_cancelled_by_the_statement_timeout() {
    let (db, _) = seeded().await;
    let store = PgStore::connect(&PgConfig {
        statement_timeout: Some(StdDuration::from_millis(300)),
        ..db.config()
    })
    .unwrap();
    let mut locker = lock_accounts(&db).await;
    let started = Instant::now();
    let result = store.get(&org_id(ACME), &sa_id("sa-ci"), t0()).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < StdDuration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    locker.batch_execute("COMMIT").await.unwrap();
    // The connection is still good: the next read answers at once.
    assert_eq!(
        store
            .get(&org_id(ACME), &sa_id("sa-ci"), t0())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_connection_whose_statement_was_abandoned_is_closed_not_reused() {
    let (db, _) = seeded().await;
    // One connection, and no statement timeout: only the discard can save the next request.
    let store = PgStore::connect(&PgConfig {
        max_connections: 1,
        ..db.config()
    })
    .unwrap();
    store.check().await.unwrap();
    let locker = lock_accounts(&db).await;
    // The caller gives up (what the request deadline does): the future is dropped mid-query.
    let abandoned = tokio::time::timeout(
        StdDuration::from_millis(300),
        store.get(&org_id(ACME), &sa_id("sa-ci"), t0()),
    )
    .await;
    assert!(
        abandoned.is_err(),
        "the read should have been stuck: {abandoned:?}"
    );
    // The lock is still held, but the next request gets a fresh connection and does not
    // queue behind the abandoned statement.
    let next = tokio::time::timeout(StdDuration::from_secs(2), store.check()).await;
    assert!(matches!(next, Ok(Ok(()))), "{next:?}");
    assert_eq!(store.pool().status().size, 1, "{:?}", store.pool().status());
    drop(locker);
}

#[tokio::test]
async fn a_thread_with_a_pool_of_its_own_does_not_queue_for_the_shared_one() {
    let (db, _) = seeded().await;
    let store = PgStore::connect(&PgConfig {
        max_connections: 1,
        checkout_timeout: StdDuration::from_millis(300),
        ..db.config()
    })
    .unwrap();
    // The shared pool's only connection gets stuck behind a lock.
    let locker = lock_accounts(&db).await;
    let stuck = tokio::spawn({
        let store = store.clone();
        async move { store.get(&org_id(ACME), &sa_id("sa-ci"), t0()).await }
    });
    let started = Instant::now();
    while store.pool().status().available > 0 || store.pool().status().size == 0 {
        assert!(
            started.elapsed() < StdDuration::from_secs(5),
            "never checked out"
        );
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    // This thread has nothing but the shared pool: it waits, then gives up.
    let shared = store.check().await;
    assert!(
        matches!(shared, Err(StoreError::Unavailable(_))),
        "{shared:?}"
    );

    // A thread with a pool of its own (what every HTTP worker has) is served at once, and
    // the pool's status counts both.
    let (attached, status) = std::thread::spawn({
        let store = store.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            store.pool().attach_thread(1).unwrap();
            runtime.block_on(async { (store.check().await, store.pool().status()) })
        }
    })
    .join()
    .unwrap();
    attached.unwrap();
    assert_eq!(status.max_size, 2, "{status:?}");
    assert_eq!(status.size, 2, "{status:?}");
    assert!(store.pool().attach_thread(0).is_err());

    // Once the lock goes, the stuck read completes.
    drop(locker);
    assert_eq!(stuck.await.unwrap().unwrap(), None);
}
