//! Throttling of failed token mints (SPEC §6), per instance and in memory.
//!
//! Failures are counted in fixed windows per (client id, source IP) pair and per source IP
//! (IPv6 by /64). Once a pair or an address has used up its limit, **every** mint from it is
//! refused until its window ends — before the credential is looked up and before any HMAC, so
//! a flood of guesses costs neither database connections nor CPU. A success clears its pair's
//! count.
//!
//! Memory is bounded, and no sequence of requests can make the throttle forget a throttled
//! caller early by flooding it:
//! - Counts below the limit live in one bounded table; when it is full, the least recently
//!   failing key is forgotten (it was not throttled, so nothing is lost but a partial count).
//! - Throttled keys move to a second bounded table that only throttled keys can enter. When it
//!   is full, blocks that already ended go first, then the block that ends soonest (the
//!   oldest). Pushing a throttled caller out therefore takes as many *fresh blocks* as the
//!   table holds, each of them `limit` failures from its own key within one window.
//!
//! [`governor`](https://docs.rs/governor)'s keyed limiters were considered: they meter every
//! attempt (a busy workload would be throttled for succeeding), cannot look without
//! consuming, and their key store grows until swept rather than being bounded. The two LRU
//! tables here are what the rule needs.
//!
//! Each instance counts on its own; nothing correctness depends on lives here.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};

use lru::LruCache;
use time::{Duration, OffsetDateTime};

/// Limits of the throttle.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failed mints allowed per (client id, IP) within one window.
    pub per_client_and_ip: u32,
    /// Failed mints allowed per IP (all clients) within one window.
    pub per_ip: u32,
    /// The window length.
    pub window: Duration,
    /// Most keys counted (below their limit) per table.
    pub max_counting: NonZeroUsize,
    /// Most keys throttled at once per table.
    pub max_blocked: NonZeroUsize,
}

/// 10 000 keys: about 2 MB per table at the longest client ids.
const DEFAULT_TABLE_SIZE: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            per_client_and_ip: 10,
            per_ip: 100,
            window: Duration::minutes(1),
            max_counting: DEFAULT_TABLE_SIZE,
            max_blocked: DEFAULT_TABLE_SIZE,
        }
    }
}

/// Longest client id kept as a key (`{63}@{63}.iam`); longer ones cannot exist.
const MAX_CLIENT_ID: usize = 131;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: OffsetDateTime,
    failures: u32,
}

struct Tables<K> {
    /// Keys below their limit, least recently failing first out.
    counting: LruCache<K, Window>,
    /// Throttled keys and when their block ends, in the order they were blocked (never
    /// promoted), so the oldest block is the first out.
    blocked: LruCache<K, OffsetDateTime>,
}

/// One kind of key (pairs, or addresses) with its limit.
struct Counter<K: Hash + Eq> {
    limit: u32,
    tables: Mutex<Tables<K>>,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    fn new(limit: u32, limits: &ThrottleLimits) -> Self {
        Self {
            limit,
            tables: Mutex::new(Tables {
                counting: LruCache::new(limits.max_counting),
                blocked: LruCache::new(limits.max_blocked),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables<K>> {
        // A panic while holding this lock leaves only counters behind: keep using them.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long `key` stays blocked, if it is.
    fn blocked(&self, key: &K, now: OffsetDateTime) -> Option<Duration> {
        let tables = self.lock();
        let until = *tables.blocked.peek(key)?;
        Some(until - now).filter(|left| left.is_positive())
    }

    fn fail(&self, key: K, window: Duration, now: OffsetDateTime) {
        let mut tables = self.lock();
        if tables.blocked.peek(&key).is_some_and(|until| *until > now) {
            return;
        }
        let fresh = Window {
            started: now,
            failures: 0,
        };
        let entry = tables.counting.get_or_insert_mut(key.clone(), || fresh);
        if now - entry.started >= window {
            *entry = fresh;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures < self.limit {
            return;
        }
        let until = entry.started + window;
        tables.counting.pop(&key);
        // Blocks that already ended make room first; only then does the oldest block go.
        while tables.blocked.len() == tables.blocked.cap().get()
            && tables
                .blocked
                .peek_lru()
                .is_some_and(|(_, ended)| *ended <= now)
        {
            tables.blocked.pop_lru();
        }
        tables.blocked.push(key, until);
    }

    fn clear(&self, key: &K) {
        self.lock().counting.pop(key);
    }

    fn len(&self) -> (usize, usize) {
        let tables = self.lock();
        (tables.counting.len(), tables.blocked.len())
    }
}

/// The failed-mint throttle.
pub struct MintThrottle {
    window: Duration,
    pairs: Counter<(String, Option<IpAddr>)>,
    ips: Counter<Option<IpAddr>>,
}

/// The address bucket: IPv4 addresses as they are, IPv6 addresses by their /64.
fn bucket(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.map(|ip| match ip {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 @ IpAddr::V4(_) => v4,
    })
}

fn pair(client_id: &str, ip: Option<IpAddr>) -> (String, Option<IpAddr>) {
    let client: String = client_id.chars().take(MAX_CLIENT_ID).collect();
    (client, bucket(ip))
}

impl MintThrottle {
    /// A throttle with `limits`.
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            window: limits.window,
            pairs: Counter::new(limits.per_client_and_ip, &limits),
            ips: Counter::new(limits.per_ip, &limits),
        }
    }

    /// `Some(wait)` when a mint for `client_id` from `ip` must be refused at `now`, without
    /// looking at its secret.
    pub fn check(
        &self,
        client_id: &str,
        ip: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Option<std::time::Duration> {
        let wait = self
            .pairs
            .blocked(&pair(client_id, ip), now)
            .into_iter()
            .chain(self.ips.blocked(&bucket(ip), now))
            .max()?;
        // Whole seconds, rounded up: a Retry-After of 0 would invite an immediate retry.
        let seconds = wait.whole_seconds() + i64::from(wait.subsec_nanoseconds() > 0);
        Some(std::time::Duration::from_secs(
            u64::try_from(seconds).unwrap_or(1).max(1),
        ))
    }

    /// Counts a failed mint at `now`.
    pub fn failed(&self, client_id: &str, ip: Option<IpAddr>, now: OffsetDateTime) {
        self.pairs.fail(pair(client_id, ip), self.window, now);
        self.ips.fail(bucket(ip), self.window, now);
    }

    /// A successful mint clears its pair's count.
    pub fn succeeded(&self, client_id: &str, ip: Option<IpAddr>) {
        self.pairs.clear(&pair(client_id, ip));
    }

    /// Keys held now: `(counting, blocked)` summed over both tables (for tests and metrics).
    pub fn tracked(&self) -> (usize, usize) {
        let (pairs_counting, pairs_blocked) = self.pairs.len();
        let (ips_counting, ips_blocked) = self.ips.len();
        (pairs_counting + ips_counting, pairs_blocked + ips_blocked)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    const T0: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

    fn limits(per_pair: u32, per_ip: u32) -> ThrottleLimits {
        ThrottleLimits {
            per_client_and_ip: per_pair,
            per_ip,
            ..ThrottleLimits::default()
        }
    }

    #[test]
    fn a_pair_is_blocked_after_its_limit_but_other_addresses_are_not() {
        let throttle = MintThrottle::new(limits(3, 100));
        for _ in 0..3 {
            assert!(throttle.check("sa@x.iam", ip("6.6.6.6"), T0).is_none());
            throttle.failed("sa@x.iam", ip("6.6.6.6"), T0);
        }
        let later = T0 + Duration::seconds(5);
        let wait = throttle.check("sa@x.iam", ip("6.6.6.6"), later).unwrap();
        assert_eq!(wait, std::time::Duration::from_secs(55));
        assert!(
            throttle.check("sa@x.iam", ip("1.2.3.4"), later).is_none(),
            "the real client elsewhere"
        );
        assert!(
            throttle
                .check("other@x.iam", ip("6.6.6.6"), later)
                .is_none()
        );
    }

    #[test]
    fn an_address_failing_for_many_clients_is_blocked_and_success_clears_a_pair() {
        let throttle = MintThrottle::new(limits(3, 5));
        for i in 0..5 {
            throttle.failed(&format!("sa-{i}@x.iam"), ip("6.6.6.6"), T0);
        }
        assert!(throttle.check("fresh@x.iam", ip("6.6.6.6"), T0).is_some());
        for _ in 0..2 {
            throttle.failed("sa@x.iam", ip("1.2.3.4"), T0);
        }
        throttle.succeeded("sa@x.iam", ip("1.2.3.4"));
        for _ in 0..2 {
            throttle.failed("sa@x.iam", ip("1.2.3.4"), T0);
        }
        assert!(
            throttle.check("sa@x.iam", ip("1.2.3.4"), T0).is_none(),
            "the count restarted"
        );
    }

    #[test]
    fn ipv6_addresses_share_their_64_bit_prefix() {
        let throttle = MintThrottle::new(limits(1, 100));
        throttle.failed("sa@x.iam", ip("2001:db8:0:1::1"), T0);
        assert!(
            throttle
                .check("sa@x.iam", ip("2001:db8:0:1::ffff"), T0)
                .is_some()
        );
        assert!(
            throttle
                .check("sa@x.iam", ip("2001:db8:0:2::1"), T0)
                .is_none()
        );
    }

    #[test]
    fn windows_end() {
        let throttle = MintThrottle::new(limits(2, 100));
        throttle.failed("sa@x.iam", ip("6.6.6.6"), T0);
        // A failure in a later window starts a new count.
        throttle.failed("sa@x.iam", ip("6.6.6.6"), T0 + Duration::minutes(1));
        assert!(
            throttle
                .check("sa@x.iam", ip("6.6.6.6"), T0 + Duration::minutes(1))
                .is_none()
        );
        throttle.failed("sa@x.iam", ip("6.6.6.6"), T0 + Duration::seconds(70));
        let blocked_at = T0 + Duration::seconds(70);
        assert!(
            throttle
                .check("sa@x.iam", ip("6.6.6.6"), blocked_at)
                .is_some()
        );
        assert!(
            throttle
                .check("sa@x.iam", ip("6.6.6.6"), T0 + Duration::minutes(2))
                .is_none(),
            "the block ends with the window it began in"
        );
    }

    #[test]
    fn a_flood_of_new_keys_fills_the_table_but_never_frees_a_throttled_caller() {
        let small = ThrottleLimits {
            max_counting: NonZeroUsize::new(64).unwrap(),
            max_blocked: NonZeroUsize::new(8).unwrap(),
            ..limits(3, 1_000_000)
        };
        let throttle = MintThrottle::new(small);
        for _ in 0..3 {
            throttle.failed("victim-guess@x.iam", ip("6.6.6.6"), T0);
        }
        assert!(
            throttle
                .check("victim-guess@x.iam", ip("6.6.6.6"), T0)
                .is_some()
        );
        // 100 000 one-off failures from distinct clients and addresses.
        for i in 0..100_000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            throttle.failed(&format!("sa-{i}@x.iam"), Some(addr), T0);
        }
        assert!(
            throttle
                .check("victim-guess@x.iam", ip("6.6.6.6"), T0)
                .is_some(),
            "still throttled"
        );
        let (counting, blocked) = throttle.tracked();
        assert!(counting <= 2 * 64, "bounded: {counting}");
        assert!(blocked <= 2 * 8, "bounded: {blocked}");
    }

    #[test]
    fn a_full_blocked_table_drops_ended_blocks_first_then_the_oldest() {
        let small = ThrottleLimits {
            max_blocked: NonZeroUsize::new(2).unwrap(),
            ..limits(1, 1_000_000)
        };
        let throttle = MintThrottle::new(small);
        let a = ip("192.0.2.1");
        throttle.failed("a@x.iam", a, T0);
        throttle.failed("b@x.iam", a, T0 + Duration::seconds(30));
        // The table is full; a's block ends at T0 + 60 s.
        let later = T0 + Duration::seconds(61);
        throttle.failed("c@x.iam", a, later);
        assert!(throttle.check("b@x.iam", a, later).is_some(), "b kept");
        assert!(throttle.check("c@x.iam", a, later).is_some(), "c added");
        // Full of running blocks: the one that ends soonest (b) makes room.
        throttle.failed("d@x.iam", a, later);
        assert!(throttle.check("b@x.iam", a, later).is_none());
        assert!(throttle.check("c@x.iam", a, later).is_some());
        assert!(throttle.check("d@x.iam", a, later).is_some());
    }
}
