//! Idempotency records and readiness of the fakes.

use std::future::{Future, ready};

use time::{Duration, OffsetDateTime};

use super::{IdempotencyRecord, Memory};
use crate::ports::{
    IdempotencyClaim, IdempotencyCompletion, IdempotencyKey, IdempotencyStore, Readiness,
    StoreError,
};

impl IdempotencyStore for Memory {
    fn claim(
        &self,
        key: &IdempotencyKey,
        fingerprint: &[u8; 32],
        now: OffsetDateTime,
        abandon_after: Duration,
    ) -> impl Future<Output = Result<IdempotencyClaim, StoreError>> + Send {
        if let Err(e) = self.up() {
            return ready(Err(e));
        }
        let mut state = self.state();
        let fresh = IdempotencyRecord {
            fingerprint: *fingerprint,
            claimed_at: now,
            response: None,
        };
        let claim = match state.idempotency.get(key) {
            Some(record)
                if record.claimed_at >= now - Self::RETENTION
                    && (record.response.is_some() || record.claimed_at >= now - abandon_after) =>
            {
                if record.fingerprint != *fingerprint {
                    IdempotencyClaim::Mismatch
                } else if let Some(response) = &record.response {
                    IdempotencyClaim::Replay(response.clone())
                } else {
                    IdempotencyClaim::InProgress
                }
            }
            _ => {
                state.idempotency.insert(key.clone(), fresh);
                IdempotencyClaim::Claimed
            }
        };
        ready(Ok(claim))
    }

    fn complete(
        &self,
        completion: &IdempotencyCompletion,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.state().complete(completion);
        ready(Ok(()))
    }

    fn release(
        &self,
        key: &IdempotencyKey,
        claimed_at: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut state = self.state();
        if state
            .idempotency
            .get(key)
            .is_some_and(|r| r.claimed_at == claimed_at && r.response.is_none())
        {
            state.idempotency.remove(key);
        }
        ready(Ok(()))
    }
}

impl Readiness for Memory {
    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(self.up())
    }
}
