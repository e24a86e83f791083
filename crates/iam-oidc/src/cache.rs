//! The cache of one JWKS location and the rules deciding when it is fetched again.
//!
//! Reads take a short `std` mutex and never wait on the network. A fetch runs under the
//! slot's async fetch lock, so concurrent callers that need one wait for the first caller's
//! fetch instead of starting their own: after the wait they see that the slot's generation
//! moved on and use its outcome.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::FetcherConfig;
use crate::keys::KeySet;

/// Keys fetched from a location, fresh until `expires` and usable (stale) after.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(crate) keys: KeySet,
    pub(crate) expires: Instant,
}

/// What a caller does next.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Use these keys (possibly stale), or refuse for lack of keys when `None`.
    Use(Option<Arc<Cached>>),
    /// Fetch; `unknown_kid` when only because the `kid` is not in fresh keys.
    Fetch { unknown_kid: bool },
}

/// The mutable part of a slot.
#[derive(Debug, Default)]
struct State {
    cached: Option<Arc<Cached>>,
    /// When the last fetch failed (cleared by a success).
    failed_at: Option<Instant>,
    /// When the last refetch triggered by an unknown `kid` started.
    unknown_kid_fetch_at: Option<Instant>,
    /// Completed fetch attempts; a waiter that sees it moved on does not fetch again.
    generation: u64,
}

/// The cache of one location.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    state: Mutex<State>,
    /// Held for the whole of a fetch: single flight.
    fetch_lock: tokio::sync::Mutex<()>,
}

impl Slot {
    /// The state; a poisoned lock is taken over (every update leaves it consistent).
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The plan for a token naming `kid`, and the generation it was made at.
    pub(crate) fn plan(&self, kid: &str, now: Instant, config: &FetcherConfig) -> (Plan, u64) {
        let state = self.state();
        (state.plan(kid, now, config), state.generation)
    }

    /// The async lock a fetch runs under.
    pub(crate) fn fetch_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.fetch_lock
    }

    /// The keys cached now, fresh or stale.
    pub(crate) fn cached(&self) -> Option<Arc<Cached>> {
        self.state().cached.clone()
    }

    /// Notes that a fetch starts now (for the unknown-`kid` rate limit).
    pub(crate) fn fetch_started(&self, unknown_kid: bool, now: Instant) {
        if unknown_kid {
            self.state().unknown_kid_fetch_at = Some(now);
        }
    }

    /// Records a fetch's outcome: new keys fresh for `ttl`, or a failure (the old keys stay,
    /// stale-if-error, and no fetch is tried for `failure_backoff`).
    pub(crate) fn fetch_done(&self, outcome: Option<(KeySet, Duration)>, now: Instant) {
        let mut state = self.state();
        match outcome {
            Some((keys, ttl)) => {
                state.cached = Some(Arc::new(Cached {
                    keys,
                    expires: now + ttl,
                }));
                state.failed_at = None;
            }
            None => state.failed_at = Some(now),
        }
        state.generation += 1;
    }
}

impl State {
    /// Fresh keys with the `kid` are used; otherwise a fetch, unless the backoff after a
    /// failure or the unknown-`kid` rate limit forbids it, in which case whatever is cached
    /// is used.
    fn plan(&self, kid: &str, now: Instant, config: &FetcherConfig) -> Plan {
        let in_backoff = self
            .failed_at
            .is_some_and(|at| now.duration_since(at) < config.failure_backoff);
        match &self.cached {
            Some(cached) if now < cached.expires => {
                let rate_limited = self
                    .unknown_kid_fetch_at
                    .is_some_and(|at| now.duration_since(at) < config.refetch_interval);
                if cached.keys.contains(kid) || in_backoff || rate_limited {
                    Plan::Use(Some(Arc::clone(cached)))
                } else {
                    Plan::Fetch { unknown_kid: true }
                }
            }
            // Nothing cached, or expired: fetch unless backing off (then stale-if-error).
            cached if in_backoff => Plan::Use(cached.clone()),
            _ => Plan::Fetch { unknown_kid: false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(kid: &str) -> KeySet {
        let body = format!(r#"{{"keys": [{{"kid": "{kid}", "kty": "oct"}}]}}"#);
        KeySet::parse(body.as_bytes()).unwrap()
    }

    fn config() -> FetcherConfig {
        FetcherConfig::default()
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    fn is_fetch(plan: &Plan, unknown: bool) -> bool {
        matches!(plan, Plan::Fetch { unknown_kid } if *unknown_kid == unknown)
    }

    fn is_use(plan: &Plan, some: bool) -> bool {
        matches!(plan, Plan::Use(cached) if cached.is_some() == some)
    }

    #[test]
    fn empty_slot_fetches_then_backs_off_after_a_failure() {
        let (slot, t0) = (Slot::default(), Instant::now());
        assert!(is_fetch(&slot.plan("k", t0, &config()).0, false));
        slot.fetch_done(None, t0);
        assert!(is_use(&slot.plan("k", t0 + secs(4), &config()).0, false));
        assert!(is_fetch(&slot.plan("k", t0 + secs(5), &config()).0, false));
    }

    #[test]
    fn fresh_keys_are_used_until_they_expire() {
        let (slot, t0) = (Slot::default(), Instant::now());
        slot.fetch_done(Some((keys("k"), secs(60))), t0);
        assert!(is_use(&slot.plan("k", t0 + secs(59), &config()).0, true));
        assert!(is_fetch(&slot.plan("k", t0 + secs(60), &config()).0, false));
    }

    #[test]
    fn expired_keys_are_used_during_the_backoff_after_a_failed_refetch() {
        let (slot, t0) = (Slot::default(), Instant::now());
        slot.fetch_done(Some((keys("k"), secs(60))), t0);
        slot.fetch_done(None, t0 + secs(61));
        assert!(is_use(&slot.plan("k", t0 + secs(65), &config()).0, true));
        assert!(is_fetch(&slot.plan("k", t0 + secs(66), &config()).0, false));
        assert!(slot.cached().is_some(), "a failure keeps the stale keys");
    }

    #[test]
    fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let (slot, t0) = (Slot::default(), Instant::now());
        slot.fetch_done(Some((keys("k"), secs(300))), t0);
        let (plan, generation) = slot.plan("new", t0 + secs(1), &config());
        assert!(is_fetch(&plan, true));
        slot.fetch_started(true, t0 + secs(1));
        slot.fetch_done(Some((keys("k"), secs(300))), t0 + secs(1));
        assert_eq!(slot.plan("new", t0, &config()).1, generation + 1);
        assert!(is_use(&slot.plan("new", t0 + secs(30), &config()).0, true));
        assert!(is_fetch(
            &slot.plan("new", t0 + secs(31), &config()).0,
            true
        ));
        assert!(is_use(&slot.plan("k", t0 + secs(2), &config()).0, true));
    }

    #[test]
    fn an_unknown_kid_does_not_refetch_during_the_backoff() {
        let (slot, t0) = (Slot::default(), Instant::now());
        slot.fetch_done(Some((keys("k"), secs(300))), t0);
        slot.fetch_done(None, t0 + secs(1));
        assert!(is_use(&slot.plan("new", t0 + secs(2), &config()).0, true));
        assert!(is_fetch(&slot.plan("new", t0 + secs(6), &config()).0, true));
    }
}
