//! [`UsageBuffer`]: the [`UsageRecorder`] of token mints, which never makes a mint wait for
//! the database.
//!
//! A mint only notes `(credential uid → latest use time, source IP)` in an in-memory map under
//! a short `std` mutex. [`UsageBuffer::flush`] takes the whole map and writes it in one
//! statement:
//!
//! ```sql
//! WITH v AS (SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS v(uid, at, ip)),
//! c AS (UPDATE credentials AS c SET last_used_at = v.at, last_used_ip = v.ip FROM v
//!       WHERE c.uid = v.uid AND (c.last_used_at IS NULL OR c.last_used_at < v.at) RETURNING 1),
//! f AS (UPDATE federated_credentials AS f … the same … RETURNING 1)
//! SELECT (SELECT count(*) FROM c) + (SELECT count(*) FROM f)
//! ```
//!
//! (A uid is a client secret's or a federated credential's, never both: one statement updates
//! whichever table holds it.)
//!
//! The `WHERE` keeps the stored value when it is newer (another server instance, or an older
//! buffered use flushed late), so several instances can flush independently. Credentials
//! deleted meanwhile are simply not updated. When the write fails (or the flush is cancelled)
//! the taken entries go back into the map, unless a newer use of the same credential arrived
//! meanwhile, and the next flush retries them.
//!
//! [`UsageBuffer::spawn_flusher`] flushes periodically; at shutdown, call
//! [`UsageBuffer::flush`] once more after stopping it so the last uses are not lost. The
//! buffer holds at most one entry per credential used since the last successful flush.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use diesel::sql_types::{Array, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use iam_domain::ports::{StoreError, UsageRecorder};
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use crate::error::DbError;
use crate::store::PgStore;

/// The latest use of each credential not yet written.
type Pending = HashMap<Uuid, (OffsetDateTime, Option<IpAddr>)>;

/// The statement of a flush (see the module documentation).
const FLUSH_SQL: &str = "WITH v AS (SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) \
         AS v(uid, at, ip)), \
     c AS (UPDATE credentials AS c SET last_used_at = v.at, last_used_ip = v.ip FROM v \
         WHERE c.uid = v.uid AND (c.last_used_at IS NULL OR c.last_used_at < v.at) RETURNING 1), \
     f AS (UPDATE federated_credentials AS f SET last_used_at = v.at, last_used_ip = v.ip FROM v \
         WHERE f.uid = v.uid AND (f.last_used_at IS NULL OR f.last_used_at < v.at) RETURNING 1) \
     SELECT (SELECT count(*) FROM c) + (SELECT count(*) FROM f) AS updated";

/// The one row of [`FLUSH_SQL`].
#[derive(diesel::QueryableByName)]
struct Flushed {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    updated: i64,
}

/// Buffers the last use of credentials in memory and writes it to `credentials` in batches.
/// Cloning it is cheap: clones share one buffer.
#[derive(Debug, Clone)]
pub struct UsageBuffer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: PgStore,
    pending: Mutex<Pending>,
    /// When a flush last completed (wrote its entries, or found none).
    flushed: Mutex<Instant>,
}

impl Inner {
    /// The map, even if a thread panicked while holding the lock (every update of the map
    /// is a single insert, so it is never left half-changed).
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Records the use at `at` from `ip` of `credential` in `pending`, unless a use at the same
/// time or later is already there.
fn note(pending: &mut Pending, credential: Uuid, at: OffsetDateTime, ip: Option<IpAddr>) {
    pending
        .entry(credential)
        .and_modify(|latest| {
            if latest.0 < at {
                *latest = (at, ip);
            }
        })
        .or_insert((at, ip));
}

/// Entries taken from the buffer for a write; put back when dropped before
/// [`Batch::written`] (the write failed, or the flush future was dropped mid-way).
struct Batch<'a> {
    buffer: &'a Inner,
    entries: Pending,
    written: bool,
}

impl Batch<'_> {
    fn written(mut self) {
        self.written = true;
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if !self.written {
            let mut pending = self.buffer.pending();
            for (credential, (at, ip)) in self.entries.drain() {
                note(&mut pending, credential, at, ip);
            }
        }
    }
}

impl UsageBuffer {
    /// An empty buffer that flushes into `store`.
    pub fn new(store: PgStore) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                pending: Mutex::new(HashMap::new()),
                flushed: Mutex::new(Instant::now()),
            }),
        }
    }

    /// How long ago a flush last completed (wrote its entries, or found none): the lag of
    /// the last-use records, for metrics.
    pub fn since_last_flush(&self) -> Duration {
        self.inner
            .flushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    fn flushed_now(&self) {
        *self
            .inner
            .flushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// How many credentials have a use not yet written.
    pub fn pending(&self) -> usize {
        self.inner.pending().len()
    }

    /// Writes every buffered use in one statement, and returns how many credentials it
    /// updated (buffered credentials that were deleted meanwhile, or whose stored last use is
    /// already as recent, are not counted). With nothing buffered, touches no database.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails; the entries are then back in the buffer (unless a
    /// newer use of the same credential was recorded meanwhile) for the next flush.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let entries = std::mem::take(&mut *self.inner.pending());
        if entries.is_empty() {
            self.flushed_now();
            return Ok(0);
        }
        let batch = Batch {
            buffer: &self.inner,
            entries,
            written: false,
        };
        let updated = self.write(&batch.entries).await?;
        batch.written();
        self.flushed_now();
        Ok(updated)
    }

    /// [`Self::flush`], given up after `deadline` (the database stalls or hangs): the entries
    /// go back to the buffer and the answer is `Unavailable`.
    ///
    /// # Errors
    /// As [`Self::flush`], and `Unavailable` when the deadline passes.
    pub async fn flush_within(&self, deadline: Duration) -> Result<usize, StoreError> {
        match tokio::time::timeout(deadline, self.flush()).await {
            Ok(flushed) => flushed,
            Err(elapsed) => Err(StoreError::Unavailable(Box::new(elapsed))),
        }
    }

    async fn write(&self, entries: &Pending) -> Result<usize, StoreError> {
        // In uid order, so that concurrent flushes (of several instances) tend to lock the
        // rows in the same order. A deadlock is still possible in principle; Postgres then
        // aborts one flush, whose entries are retried by the next.
        let mut sorted: Vec<_> = entries.iter().collect();
        sorted.sort_unstable_by_key(|(uid, _)| **uid);
        let mut uids = Vec::with_capacity(sorted.len());
        let mut ats = Vec::with_capacity(sorted.len());
        let mut ips = Vec::with_capacity(sorted.len());
        for (uid, (at, ip)) in sorted {
            uids.push(*uid);
            ats.push(*at);
            ips.push(ip.map(|ip| ip.to_string()));
        }
        let mut conn = self.inner.store.conn().await?;
        let updated = diesel::sql_query(FLUSH_SQL)
            .bind::<Array<SqlUuid>, _>(uids)
            .bind::<Array<Timestamptz>, _>(ats)
            .bind::<Array<Nullable<Text>>, _>(ips)
            .get_result::<Flushed>(&mut conn)
            .await
            .map_err(DbError::from)?;
        Ok(usize::try_from(updated.updated).unwrap_or(usize::MAX))
    }

    /// Spawns a task (on the current tokio runtime) that flushes every `every`; a failed
    /// flush is logged (`warn`) and retried at the next tick. Abort the returned handle to
    /// stop it, then [`flush`](Self::flush) once more.
    pub fn spawn_flusher(&self, every: Duration, deadline: Duration) -> JoinHandle<()> {
        let buffer = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            // The first tick completes at once.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(e) = buffer.flush_within(deadline).await {
                    let cause = std::error::Error::source(&e).map(ToString::to_string);
                    tracing::warn!(
                        error = %e,
                        cause = cause.as_deref().unwrap_or(""),
                        pending = buffer.pending(),
                        "cannot record credential last use; retrying at the next flush"
                    );
                }
            }
        })
    }
}

impl UsageRecorder for UsageBuffer {
    /// Only updates the in-memory map (a short critical section; no I/O).
    fn record_use(&self, credential: Uuid, at: OffsetDateTime, ip: Option<IpAddr>) {
        note(&mut self.inner.pending(), credential, at, ip);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use time::macros::datetime;

    use super::*;

    #[test]
    fn note_keeps_the_latest_use_per_credential() {
        let mut pending = Pending::new();
        let a = Uuid::from_u128(1);
        let ip = |n| Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)));
        let t = datetime!(2026-11-28 10:00 UTC);
        note(&mut pending, a, t, ip(1));
        note(&mut pending, a, t + time::Duration::SECOND, ip(2));
        note(&mut pending, a, t, ip(3));
        note(&mut pending, a, t + time::Duration::SECOND, ip(4));
        assert_eq!(pending[&a], (t + time::Duration::SECOND, ip(2)));
    }
}
