//! Throttling of failed token mints (SPEC §6), per instance and in memory.
//!
//! Failures are counted in fixed windows per (client id, source IP) pair and per source IP
//! (IPv6 by /64; IPv4-mapped IPv6 addresses count as the IPv4 address they carry). Once a pair
//! or an address has used up its limit, **every** mint from it is refused until its window
//! ends — before the credential is looked up and before any HMAC, so a flood of guesses costs
//! neither database connections nor CPU.
//!
//! Checking and counting are one step ([`MintThrottle::admit`]): every admitted attempt is
//! counted as a failure up front, under the same lock as the check, and given back when it
//! turns out not to be a client failure ([`MintThrottle::succeeded`], [`MintThrottle::refund`]).
//! So a burst of parallel guesses cannot all slip past the check before any of them counts:
//! at most `limit` attempts per window ever reach the database. A success also clears its
//! pair's count.
//!
//! Memory is bounded, and no flood of new keys makes the throttle forget a throttled caller
//! before its block ends:
//! - Counts below the limit live in one bounded LRU table; when it is full, the least recently
//!   failing key is forgotten (it was not throttled: nothing is lost but a partial count).
//! - Throttled keys move to a second bounded table that only throttled keys can enter and
//!   nothing evicts: a block leaves it only when it has ended (ended blocks are dropped first
//!   whenever room is needed). When it is full of running blocks, a new block stays in the
//!   counting table, where it is still enforced but may be forgotten under a flood; the
//!   per-address count still applies to its address.
//!
//! [`governor`](https://docs.rs/governor)'s keyed limiters were considered: they meter every
//! attempt (a busy workload would be throttled for succeeding), cannot give an attempt back,
//! and their key store grows until swept rather than being bounded. The tables here are what
//! the rule needs.
//!
//! Each instance counts on its own; nothing correctness depends on lives here.

use std::collections::{BTreeMap, HashMap};
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

/// Throttled keys, with an index by the end of their block (ties broken by arrival).
struct Blocked<K> {
    entries: HashMap<K, (Window, OffsetDateTime, u64)>,
    by_end: BTreeMap<(OffsetDateTime, u64), K>,
    next: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Blocked<K> {
    fn until(&self, key: &K) -> Option<OffsetDateTime> {
        self.entries.get(key).map(|(_, until, _)| *until)
    }

    fn remove(&mut self, key: &K) -> Option<Window> {
        let (window, until, seq) = self.entries.remove(key)?;
        self.by_end.remove(&(until, seq));
        Some(window)
    }

    /// Adds a block ending at `until`, after dropping blocks that ended by `now`; `Err` gives
    /// the window back when the table is full of running blocks.
    fn insert(
        &mut self,
        key: K,
        window: Window,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), Window> {
        while let Some(entry) = self.by_end.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ended = entry.remove();
            self.entries.remove(&ended);
        }
        if self.entries.len() >= self.capacity {
            return Err(window);
        }
        self.next += 1;
        self.by_end.insert((until, self.next), key.clone());
        self.entries.insert(key, (window, until, self.next));
        Ok(())
    }
}

struct Tables<K> {
    /// Keys below their limit (and blocks that found the blocked table full), least recently
    /// failing first out.
    counting: LruCache<K, Window>,
    /// Throttled keys, never evicted before their block ends.
    blocked: Blocked<K>,
}

/// One kind of key (pairs, or addresses) with its limit.
struct Counter<K: Hash + Eq> {
    limit: u32,
    window: Duration,
    tables: Mutex<Tables<K>>,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    fn new(limit: u32, limits: &ThrottleLimits) -> Self {
        Self {
            limit,
            window: limits.window,
            tables: Mutex::new(Tables {
                counting: LruCache::new(limits.max_counting),
                blocked: Blocked {
                    entries: HashMap::new(),
                    by_end: BTreeMap::new(),
                    next: 0,
                    capacity: limits.max_blocked.get(),
                },
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables<K>> {
        // A panic while holding this lock leaves only counters behind: keep using them.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses `key` while it is throttled (`Err` with the time left); otherwise counts one
    /// failure for it, in the same critical section.
    fn admit(&self, key: &K, now: OffsetDateTime) -> Result<(), Duration> {
        let mut tables = self.lock();
        if let Some(until) = tables.blocked.until(key) {
            if until > now {
                return Err(until - now);
            }
            tables.blocked.remove(key);
        }
        let fresh = Window {
            started: now,
            failures: 0,
        };
        let entry = tables.counting.get_or_insert_mut(key.clone(), || fresh);
        if now - entry.started >= self.window {
            *entry = fresh;
        }
        if entry.failures >= self.limit {
            // A block that found the blocked table full lives on here.
            return Err(entry.started + self.window - now);
        }
        entry.failures += 1;
        if entry.failures < self.limit {
            return Ok(());
        }
        let window = *entry;
        let until = window.started + self.window;
        tables.counting.pop(key);
        if let Err(window) = tables.blocked.insert(key.clone(), window, until, now) {
            tables.counting.push(key.clone(), window);
        }
        Ok(())
    }

    /// Gives back one failure counted by [`Self::admit`] (the attempt was no client failure);
    /// with `forget`, also forgets the rest of `key`'s count below the limit (a success). A
    /// block that other failures keep over the limit stays until it ends.
    fn refund(&self, key: &K, now: OffsetDateTime, forget: bool) {
        let mut tables = self.lock();
        if let Some(mut window) = tables.blocked.remove(key) {
            window.failures = window.failures.saturating_sub(1);
            if window.failures >= self.limit {
                let until = window.started + self.window;
                if let Err(window) = tables.blocked.insert(key.clone(), window, until, now) {
                    tables.counting.push(key.clone(), window);
                }
            } else if !forget {
                tables.counting.push(key.clone(), window);
            }
        } else if forget {
            tables.counting.pop(key);
        } else if let Some(window) = tables.counting.peek_mut(key) {
            window.failures = window.failures.saturating_sub(1);
        }
    }

    fn len(&self) -> (usize, usize) {
        let tables = self.lock();
        (tables.counting.len(), tables.blocked.entries.len())
    }
}

/// The failed-mint throttle.
pub struct MintThrottle {
    pairs: Counter<(String, Option<IpAddr>)>,
    ips: Counter<Option<IpAddr>>,
}

/// The address bucket: IPv4 addresses as they are (also when they arrive IPv4-mapped, as
/// `::ffff:a.b.c.d`), IPv6 addresses by their /64.
fn bucket(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.map(|ip| match ip.to_canonical() {
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

/// Whole seconds to wait, rounded up, at least one (a `Retry-After` of 0 invites a retry now).
fn retry_after(wait: Duration) -> std::time::Duration {
    let seconds = wait.whole_seconds() + i64::from(wait.subsec_nanoseconds() > 0);
    std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(1).max(1))
}

impl MintThrottle {
    /// A throttle with `limits`.
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            pairs: Counter::new(limits.per_client_and_ip, &limits),
            ips: Counter::new(limits.per_ip, &limits),
        }
    }

    /// Admits a mint for `client_id` from `ip` at `now`, counting it as a failure until it is
    /// given back; `Err(wait)` when the pair or the address is throttled (nothing counted).
    ///
    /// # Errors
    /// How long to wait, in whole seconds (at least one).
    pub fn admit(
        &self,
        client_id: &str,
        ip: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<(), std::time::Duration> {
        let pair = pair(client_id, ip);
        self.pairs.admit(&pair, now).map_err(retry_after)?;
        if let Err(wait) = self.ips.admit(&bucket(ip), now) {
            self.pairs.refund(&pair, now, false);
            return Err(retry_after(wait));
        }
        Ok(())
    }

    /// An admitted mint succeeded: its pair's count is cleared and its address's failure given
    /// back.
    pub fn succeeded(&self, client_id: &str, ip: Option<IpAddr>, now: OffsetDateTime) {
        self.pairs.refund(&pair(client_id, ip), now, true);
        self.ips.refund(&bucket(ip), now, false);
    }

    /// An admitted mint failed for a reason that is not the client's credentials (a refused
    /// narrowing, an outage): its failure is given back.
    pub fn refund(&self, client_id: &str, ip: Option<IpAddr>, now: OffsetDateTime) {
        self.pairs.refund(&pair(client_id, ip), now, false);
        self.ips.refund(&bucket(ip), now, false);
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

    /// `n` admitted attempts that all fail.
    fn fail(
        throttle: &MintThrottle,
        client: &str,
        from: Option<IpAddr>,
        n: u32,
        at: OffsetDateTime,
    ) {
        for _ in 0..n {
            throttle.admit(client, from, at).expect("admitted");
        }
    }

    #[test]
    fn a_pair_is_refused_after_its_limit_but_other_addresses_are_not() {
        let throttle = MintThrottle::new(limits(3, 100));
        fail(&throttle, "sa@x.iam", ip("6.6.6.6"), 3, T0);
        let later = T0 + Duration::seconds(5);
        let wait = throttle
            .admit("sa@x.iam", ip("6.6.6.6"), later)
            .unwrap_err();
        assert_eq!(wait, std::time::Duration::from_secs(55));
        assert!(
            throttle.admit("sa@x.iam", ip("1.2.3.4"), later).is_ok(),
            "the real client elsewhere"
        );
        assert!(throttle.admit("other@x.iam", ip("6.6.6.6"), later).is_ok());
    }

    #[test]
    fn checking_and_counting_are_one_step_so_a_burst_cannot_slip_through() {
        let throttle = MintThrottle::new(limits(3, 100));
        // Ten attempts in flight at once, none finished: only the limit is admitted.
        let admitted = (0..10)
            .filter(|_| throttle.admit("sa@x.iam", ip("6.6.6.6"), T0).is_ok())
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn successes_and_non_client_failures_give_their_attempt_back() {
        let throttle = MintThrottle::new(limits(3, 5));
        fail(&throttle, "sa@x.iam", ip("1.2.3.4"), 2, T0);
        throttle.admit("sa@x.iam", ip("1.2.3.4"), T0).unwrap();
        throttle.succeeded("sa@x.iam", ip("1.2.3.4"), T0);
        fail(&throttle, "sa@x.iam", ip("1.2.3.4"), 2, T0);
        assert!(
            throttle.admit("sa@x.iam", ip("1.2.3.4"), T0).is_ok(),
            "the success cleared the pair and restarted its count"
        );
        // The address counts 2 + 2 + 1 failures (the success was given back): one more is
        // still admitted for another client, then it is throttled.
        throttle.refund("sa@x.iam", ip("1.2.3.4"), T0);
        assert!(throttle.admit("b@x.iam", ip("1.2.3.4"), T0).is_ok());
        assert!(throttle.admit("c@x.iam", ip("1.2.3.4"), T0).is_err());
    }

    #[test]
    fn an_address_failing_for_many_clients_is_throttled_for_every_client() {
        let throttle = MintThrottle::new(limits(3, 5));
        for i in 0..5 {
            fail(&throttle, &format!("sa-{i}@x.iam"), ip("6.6.6.6"), 1, T0);
        }
        assert!(throttle.admit("fresh@x.iam", ip("6.6.6.6"), T0).is_err());
        assert!(throttle.admit("fresh@x.iam", ip("7.7.7.7"), T0).is_ok());
    }

    #[test]
    fn ipv6_addresses_share_their_64_bit_prefix_and_mapped_ipv4_is_ipv4() {
        let throttle = MintThrottle::new(limits(1, 100));
        fail(&throttle, "sa@x.iam", ip("2001:db8:0:1::1"), 1, T0);
        assert!(
            throttle
                .admit("sa@x.iam", ip("2001:db8:0:1::ffff"), T0)
                .is_err()
        );
        assert!(
            throttle
                .admit("sa@x.iam", ip("2001:db8:0:2::1"), T0)
                .is_ok()
        );
        // IPv4 clients seen through a dual-stack socket are still told apart.
        fail(&throttle, "v4@x.iam", ip("::ffff:198.51.100.1"), 1, T0);
        assert!(throttle.admit("v4@x.iam", ip("198.51.100.1"), T0).is_err());
        assert!(
            throttle
                .admit("v4@x.iam", ip("::ffff:198.51.100.2"), T0)
                .is_ok()
        );
    }

    #[test]
    fn blocks_end_with_the_window_they_began_in() {
        let throttle = MintThrottle::new(limits(2, 100));
        fail(&throttle, "sa@x.iam", ip("6.6.6.6"), 1, T0);
        // An attempt in a later window starts a new count.
        let next = T0 + Duration::minutes(1);
        fail(&throttle, "sa@x.iam", ip("6.6.6.6"), 1, next);
        fail(
            &throttle,
            "sa@x.iam",
            ip("6.6.6.6"),
            1,
            next + Duration::seconds(10),
        );
        assert!(
            throttle
                .admit("sa@x.iam", ip("6.6.6.6"), next + Duration::seconds(10))
                .is_err()
        );
        assert!(
            throttle
                .admit("sa@x.iam", ip("6.6.6.6"), T0 + Duration::minutes(2))
                .is_ok(),
            "the block ended with its window"
        );
    }

    #[test]
    fn a_flood_of_new_keys_never_frees_a_throttled_caller() {
        let small = ThrottleLimits {
            max_counting: NonZeroUsize::new(64).unwrap(),
            max_blocked: NonZeroUsize::new(8).unwrap(),
            ..limits(3, 1_000_000)
        };
        let throttle = MintThrottle::new(small);
        fail(&throttle, "victim-guess@x.iam", ip("6.6.6.6"), 3, T0);
        // 100 000 attempts from distinct clients and addresses, and blocks of their own
        // beyond the blocked table's room.
        for i in 0..100_000u32 {
            let addr = Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
            let n = if i % 1000 == 0 { 3 } else { 1 };
            fail(&throttle, &format!("sa-{i}@x.iam"), addr, n, T0);
        }
        assert!(
            throttle
                .admit("victim-guess@x.iam", ip("6.6.6.6"), T0)
                .is_err(),
            "still throttled"
        );
        let (counting, blocked) = throttle.tracked();
        assert!(counting <= 2 * 64, "bounded: {counting}");
        assert!(blocked <= 2 * 8, "bounded: {blocked}");
    }

    #[test]
    fn a_full_blocked_table_drops_ended_blocks_and_never_a_running_one() {
        let small = ThrottleLimits {
            max_blocked: NonZeroUsize::new(2).unwrap(),
            ..limits(2, 1_000_000)
        };
        let throttle = MintThrottle::new(small);
        let a = ip("192.0.2.1");
        // `early` starts its window first but is blocked last: its block ends first.
        fail(&throttle, "early@x.iam", a, 1, T0);
        fail(&throttle, "late@x.iam", a, 2, T0 + Duration::seconds(30));
        fail(&throttle, "early@x.iam", a, 1, T0 + Duration::seconds(40));
        // At 61 s the table is full; `early` ended (at 60 s), `late` runs until 90 s.
        let now = T0 + Duration::seconds(61);
        fail(&throttle, "new@x.iam", a, 2, now);
        assert!(
            throttle.admit("late@x.iam", a, now).is_err(),
            "running block kept"
        );
        assert!(
            throttle.admit("new@x.iam", a, now).is_err(),
            "new block added"
        );
        // Full of running blocks: one more is still enforced, and `late` is not pushed out.
        fail(&throttle, "more@x.iam", a, 2, now);
        assert!(throttle.admit("more@x.iam", a, now).is_err());
        assert!(throttle.admit("late@x.iam", a, now).is_err());
        assert_eq!(throttle.tracked().1, 2);
    }
}
