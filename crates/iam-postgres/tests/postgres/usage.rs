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
    let flusher = buffer.spawn_flusher(StdDuration::from_millis(20), StdDuration::from_secs(5));
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

#[tokio::test]
async fn a_flush_that_stalls_is_given_up_at_its_deadline_and_keeps_its_entries() {
    let (db, store, a, _) = with_credentials().await;
    let buffer = UsageBuffer::new(store.clone());
    buffer.record_use(a.uid, t0(), ip(1));
    let mut locker = db.connection().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE credentials IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let stalled = buffer.flush_within(StdDuration::from_millis(300)).await;
    assert!(
        matches!(stalled, Err(StoreError::Unavailable(_))),
        "{stalled:?}"
    );
    assert!(
        started.elapsed() < StdDuration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(buffer.pending(), 1, "the entry goes back to the buffer");
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        buffer
            .flush_within(StdDuration::from_secs(5))
            .await
            .unwrap(),
        1
    );
    assert_eq!(last_use(&store, "cred-a").await, (Some(t0()), ip(1)));
}
