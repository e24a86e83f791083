//! [`IdempotencyStore`] on `idempotency_keys`.
//!
//! A claim first tries `INSERT … ON CONFLICT DO NOTHING` (one statement, the common case).
//! When the key exists, it locks the row (`SELECT … FOR UPDATE`) in a transaction and decides:
//! an expired or abandoned record is overwritten (claimed); otherwise the stored fingerprint
//! and completion decide between replay, in-progress and mismatch. Concurrent claims of one
//! key are serialized by the primary key and the row lock, so exactly one of them wins.

use diesel::dsl::now as db_now;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use iam_domain::ports::{
    IdempotencyClaim, IdempotencyCompletion, IdempotencyKey, IdempotencyStore, StoreError,
    StoredResponse,
};
use time::{Duration, OffsetDateTime};

use crate::error::{DbError, corrupt};
use crate::schema::idempotency_keys;
use crate::store::PgStore;

/// How often a claim retries when the record it found vanished (released concurrently)
/// before it could lock it.
const CLAIM_ATTEMPTS: usize = 3;

/// An `idempotency_keys` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys, check_for_backend(Pg))]
struct IdempotencyRow {
    org_id: String,
    subject: String,
    key: String,
    fingerprint: Vec<u8>,
    status_code: Option<i32>,
    response_headers: Option<serde_json::Value>,
    response_body: Option<Vec<u8>>,
    created_at: OffsetDateTime,
    completed_at: Option<OffsetDateTime>,
}

impl IdempotencyRow {
    /// The outcome of claiming this live (neither expired nor abandoned) record for a
    /// request with `fingerprint`.
    fn classify(self, fingerprint: &[u8; 32]) -> Result<IdempotencyClaim, StoreError> {
        if self.fingerprint.as_slice() != fingerprint.as_slice() {
            return Ok(IdempotencyClaim::Mismatch);
        }
        if self.completed_at.is_none() {
            return Ok(IdempotencyClaim::InProgress);
        }
        let key = &self.key;
        let status = self
            .status_code
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| corrupt(format_args!("idempotency key {key:?}: status code")))?;
        let headers = match self.response_headers {
            None => Vec::new(),
            Some(json) => serde_json::from_value::<Vec<(String, String)>>(json)
                .map_err(|e| corrupt(format_args!("idempotency key {key:?}: headers: {e}")))?,
        };
        let body = self
            .response_body
            .ok_or_else(|| corrupt(format_args!("idempotency key {key:?}: missing body")))?;
        Ok(IdempotencyClaim::Replay(StoredResponse {
            status,
            headers,
            body,
        }))
    }
}

/// What the locked second step of a claim found.
enum Locked {
    /// The record was expired or abandoned and is now ours.
    Claimed,
    /// A live record.
    Live(IdempotencyRow),
    /// The record disappeared between the insert attempt and the lock.
    Vanished,
}

/// The row of `key`.
fn find(key: &IdempotencyKey) -> diesel::dsl::Find<idempotency_keys::table, (&str, &str, &str)> {
    idempotency_keys::table.find((key.tenant.as_str(), key.subject.as_str(), key.key.as_str()))
}

fn headers_to_json(headers: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Array(
        headers
            .iter()
            .map(|(name, value)| serde_json::json!([name, value]))
            .collect(),
    )
}

/// The row is still the unfinished claim made at `claimed_at` (not completed, not taken over
/// by a later claim after being abandoned).
fn is_current_claim(
    claimed_at: OffsetDateTime,
) -> diesel::dsl::And<
    diesel::dsl::IsNull<idempotency_keys::completed_at>,
    diesel::dsl::Eq<idempotency_keys::created_at, OffsetDateTime>,
> {
    idempotency_keys::completed_at
        .is_null()
        .and(idempotency_keys::created_at.eq(claimed_at))
}

fn retention() -> Duration {
    <PgStore as IdempotencyStore>::RETENTION
}

/// Records `completion` on `conn` (inside the caller's transaction, if any): `true` if its
/// claim was still the key's current, unfinished claim and now holds the response, `false`
/// (and nothing written) if the claim was abandoned and taken over, or released. The row
/// lock this `UPDATE` takes also serializes it with a concurrent takeover.
pub(crate) async fn record_completion(
    conn: &mut AsyncPgConnection,
    completion: &IdempotencyCompletion,
) -> QueryResult<bool> {
    let response = &completion.response;
    let updated =
        diesel::update(find(&completion.key).filter(is_current_claim(completion.claimed_at)))
            .set((
                idempotency_keys::status_code.eq(i32::from(response.status)),
                idempotency_keys::response_headers.eq(headers_to_json(&response.headers)),
                idempotency_keys::response_body.eq(&response.body),
                idempotency_keys::completed_at.eq(db_now),
            ))
            .execute(conn)
            .await?;
    Ok(updated == 1)
}

impl PgStore {
    /// Deletes idempotency records older than the retention period (24 h) at `now`, returning
    /// how many it deleted. Run it periodically; claims treat such records as absent anyway.
    ///
    /// # Errors
    /// [`StoreError`] for backend failures.
    pub async fn purge_expired_idempotency_keys(
        &self,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let deleted = diesel::delete(
            idempotency_keys::table.filter(idempotency_keys::created_at.lt(now - retention())),
        )
        .execute(&mut conn)
        .await
        .map_err(DbError::from)?;
        Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
    }
}

impl IdempotencyStore for PgStore {
    async fn claim(
        &self,
        key: &IdempotencyKey,
        fingerprint: &[u8; 32],
        now: OffsetDateTime,
        abandon_after: Duration,
    ) -> Result<IdempotencyClaim, StoreError> {
        let fresh = IdempotencyRow {
            org_id: key.tenant.as_str().to_owned(),
            subject: key.subject.clone(),
            key: key.key.clone(),
            fingerprint: fingerprint.to_vec(),
            status_code: None,
            response_headers: None,
            response_body: None,
            created_at: now,
            completed_at: None,
        };
        let expired_before = now - retention();
        let abandoned_before = now - abandon_after;
        let mut conn = self.conn().await?;
        for _ in 0..CLAIM_ATTEMPTS {
            let inserted = diesel::insert_into(idempotency_keys::table)
                .values(&fresh)
                .on_conflict_do_nothing()
                .execute(&mut conn)
                .await
                .map_err(DbError::from)?;
            if inserted == 1 {
                return Ok(IdempotencyClaim::Claimed);
            }
            let locked = conn
                .transaction::<_, diesel::result::Error, _>(async |conn| {
                    let Some(existing) = find(key)
                        .select(IdempotencyRow::as_select())
                        .for_update()
                        .first::<IdempotencyRow>(conn)
                        .await
                        .optional()?
                    else {
                        return Ok(Locked::Vanished);
                    };
                    let expired = existing.created_at < expired_before
                        || (existing.completed_at.is_none()
                            && existing.created_at < abandoned_before);
                    if !expired {
                        return Ok(Locked::Live(existing));
                    }
                    diesel::update(find(key))
                        .set((
                            idempotency_keys::fingerprint.eq(&fresh.fingerprint),
                            idempotency_keys::status_code.eq(None::<i32>),
                            idempotency_keys::response_headers.eq(None::<serde_json::Value>),
                            idempotency_keys::response_body.eq(None::<Vec<u8>>),
                            idempotency_keys::created_at.eq(now),
                            idempotency_keys::completed_at.eq(None::<OffsetDateTime>),
                        ))
                        .execute(conn)
                        .await?;
                    Ok(Locked::Claimed)
                })
                .await
                .map_err(DbError::from)?;
            match locked {
                Locked::Claimed => return Ok(IdempotencyClaim::Claimed),
                Locked::Live(existing) => return existing.classify(fingerprint),
                Locked::Vanished => {}
            }
        }
        Err(StoreError::Unexpected(
            format!(
                "idempotency key {:?} kept vanishing while being claimed",
                key.key
            )
            .into(),
        ))
    }

    async fn complete(&self, completion: &IdempotencyCompletion) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let recorded = record_completion(&mut conn, completion)
            .await
            .map_err(DbError::from)?;
        let key = &completion.key;
        if !recorded {
            // The claim was abandoned and taken over, or released: nothing to record.
            tracing::warn!(
                tenant = %key.tenant,
                "idempotency key was no longer claimed when its response was recorded"
            );
        }
        Ok(())
    }

    async fn release(
        &self,
        key: &IdempotencyKey,
        claimed_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        diesel::delete(find(key).filter(is_current_claim(claimed_at)))
            .execute(&mut conn)
            .await
            .map_err(DbError::from)?;
        Ok(())
    }
}
