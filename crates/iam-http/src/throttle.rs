//! Throttling of failed token mints, per instance and in memory.
//!
//! Failures are counted in fixed windows per (client id, source IP) pair and per source IP
//! (IPv6 by /64). Past the limit, further *failed* mints from that pair (or that IP) are
//! answered 429 with `Retry-After` instead of 401 until the window ends. A valid secret is
//! never refused by the throttle, so an attacker cannot lock a workload out — not from
//! another address, nor from behind the same NAT. A success clears its pair's count.
//!
//! Each instance counts on its own; nothing correctness depends on lives here.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits of the throttle.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failed mints allowed per (client id, IP) within one window.
    pub per_client_and_ip: u32,
    /// Failed mints allowed per IP (all clients) within one window.
    pub per_ip: u32,
    /// The window length.
    pub window: Duration,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            per_client_and_ip: 10,
            per_ip: 100,
            window: Duration::from_mins(1),
        }
    }
}

/// Most keys tracked per table (bounded memory); when full, finished windows are dropped, and
/// if every window is still running the table starts over.
const MAX_TRACKED: usize = 10_000;
/// Longest client id kept as a key (`{63}@{63}.iam`); longer ones cannot exist.
const MAX_CLIENT_ID: usize = 131;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

struct Counter<K> {
    windows: Mutex<HashMap<K, Window>>,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    fn new() -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Window>> {
        // A panic while holding this lock leaves only counters behind: keep using them.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Time left in `key`'s window if it has used up `limit`.
    fn blocked(&self, key: &K, limit: u32, window: Duration, now: Instant) -> Option<Duration> {
        let windows = self.lock();
        let entry = windows.get(key)?;
        let elapsed = now.saturating_duration_since(entry.started);
        if entry.failures >= limit {
            window.checked_sub(elapsed).filter(|left| !left.is_zero())
        } else {
            None
        }
    }

    fn fail(&self, key: K, window: Duration, now: Instant) {
        let mut windows = self.lock();
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&key) {
            windows.retain(|_, w| now.saturating_duration_since(w.started) < window);
            if windows.len() >= MAX_TRACKED {
                windows.clear();
            }
        }
        let entry = windows.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(entry.started) >= window {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    fn clear(&self, key: &K) {
        self.lock().remove(key);
    }
}

/// The failed-mint throttle.
pub struct MintThrottle {
    limits: ThrottleLimits,
    pairs: Counter<(String, Option<IpAddr>)>,
    ips: Counter<Option<IpAddr>>,
}

/// The address bucket: IPv4 addresses as they are, IPv6 addresses by their /64.
fn bucket(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.map(|ip| match ip {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
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
            limits,
            pairs: Counter::new(),
            ips: Counter::new(),
        }
    }

    /// `Some(wait)` when a mint for `client_id` from `ip` must be refused now.
    pub fn check(&self, client_id: &str, ip: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let l = self.limits;
        self.pairs
            .blocked(&pair(client_id, ip), l.per_client_and_ip, l.window, now)
            .into_iter()
            .chain(self.ips.blocked(&bucket(ip), l.per_ip, l.window, now))
            .max()
    }

    /// Counts a failed mint.
    pub fn failed(&self, client_id: &str, ip: Option<IpAddr>) {
        let now = Instant::now();
        self.pairs
            .fail(pair(client_id, ip), self.limits.window, now);
        self.ips.fail(bucket(ip), self.limits.window, now);
    }

    /// A successful mint clears its pair.
    pub fn succeeded(&self, client_id: &str, ip: Option<IpAddr>) {
        self.pairs.clear(&pair(client_id, ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn a_pair_is_blocked_after_its_limit_but_other_addresses_are_not() {
        let throttle = MintThrottle::new(ThrottleLimits {
            per_client_and_ip: 3,
            per_ip: 100,
            window: Duration::from_mins(1),
        });
        for _ in 0..3 {
            assert!(throttle.check("sa@x.iam", ip("6.6.6.6")).is_none());
            throttle.failed("sa@x.iam", ip("6.6.6.6"));
        }
        let wait = throttle.check("sa@x.iam", ip("6.6.6.6")).unwrap();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_mins(1));
        assert!(
            throttle.check("sa@x.iam", ip("1.2.3.4")).is_none(),
            "the real client elsewhere"
        );
        assert!(throttle.check("other@x.iam", ip("6.6.6.6")).is_none());
    }

    #[test]
    fn an_address_failing_for_many_clients_is_blocked_and_success_clears_a_pair() {
        let throttle = MintThrottle::new(ThrottleLimits {
            per_client_and_ip: 3,
            per_ip: 5,
            window: Duration::from_mins(1),
        });
        for i in 0..5 {
            throttle.failed(&format!("sa-{i}@x.iam"), ip("6.6.6.6"));
        }
        assert!(throttle.check("fresh@x.iam", ip("6.6.6.6")).is_some());
        throttle.failed("sa@x.iam", ip("1.2.3.4"));
        throttle.failed("sa@x.iam", ip("1.2.3.4"));
        throttle.succeeded("sa@x.iam", ip("1.2.3.4"));
        throttle.failed("sa@x.iam", ip("1.2.3.4"));
        throttle.failed("sa@x.iam", ip("1.2.3.4"));
        assert!(
            throttle.check("sa@x.iam", ip("1.2.3.4")).is_none(),
            "the count restarted"
        );
    }

    #[test]
    fn ipv6_addresses_share_their_64_bit_prefix() {
        let throttle = MintThrottle::new(ThrottleLimits {
            per_client_and_ip: 1,
            per_ip: 100,
            window: Duration::from_mins(1),
        });
        throttle.failed("sa@x.iam", ip("2001:db8:0:1::1"));
        assert!(
            throttle
                .check("sa@x.iam", ip("2001:db8:0:1::ffff"))
                .is_some()
        );
        assert!(throttle.check("sa@x.iam", ip("2001:db8:0:2::1")).is_none());
    }

    #[test]
    fn windows_end() {
        let throttle = MintThrottle::new(ThrottleLimits {
            per_client_and_ip: 1,
            per_ip: 100,
            window: Duration::from_millis(30),
        });
        throttle.failed("sa@x.iam", ip("6.6.6.6"));
        assert!(throttle.check("sa@x.iam", ip("6.6.6.6")).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(throttle.check("sa@x.iam", ip("6.6.6.6")).is_none());
    }
}
