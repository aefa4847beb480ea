//! Login throttling: after `max_failures` failed logins within `window_ms`, for one username or one
//! client address, further attempts are refused until the oldest counted failure leaves the window.
//!
//! An attempt is counted when it starts (reserved), not when its password check ends, so a burst of
//! parallel attempts cannot all be checked before the first failure is recorded; a successful login
//! gives its reservation back.
//!
//! The rule is pure: callers pass `now` and keep the [`Throttle`] wherever they like.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

#[derive(Clone, Copy, Debug)]
pub struct ThrottlePolicy {
    pub max_failures: usize,
    pub window_ms: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window_ms: 15 * 60 * 1000,
        }
    }
}

/// Failure times per key (a username or an address), oldest first.
#[derive(Debug, Default)]
pub struct Throttle {
    policy: ThrottlePolicy,
    failures: HashMap<String, VecDeque<i64>>,
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            failures: HashMap::new(),
        }
    }

    /// Milliseconds until `key` may try again, or `None` when it may try now.
    pub fn blocked_for(&mut self, key: &str, now: i64) -> Option<i64> {
        let window = self.policy.window_ms;
        let entries = self.failures.get_mut(key)?;
        while entries.front().is_some_and(|t| now - t >= window) {
            entries.pop_front();
        }
        if entries.is_empty() {
            self.failures.remove(key);
            return None;
        }
        if entries.len() >= self.policy.max_failures {
            // Blocked until enough failures age out to fall below the limit.
            let release = entries[entries.len() - self.policy.max_failures] + window;
            return Some((release - now).max(1));
        }
        None
    }

    pub fn record_failure(&mut self, key: &str, now: i64) {
        let entries = self.failures.entry(key.to_string()).or_default();
        entries.push_back(now);
        // Keep memory bounded: only the newest failures matter for the rule.
        while entries.len() > self.policy.max_failures {
            entries.pop_front();
        }
    }

    /// Takes back one failure recorded at `at` (a reservation whose attempt did not fail).
    pub fn forget(&mut self, key: &str, at: i64) {
        let Some(entries) = self.failures.get_mut(key) else {
            return;
        };
        if let Some(i) = entries.iter().rposition(|t| *t == at) {
            entries.remove(i);
        }
        if entries.is_empty() {
            self.failures.remove(key);
        }
    }

    pub fn clear(&mut self, key: &str) {
        self.failures.remove(key);
    }

    /// Drops keys whose failures have all aged out (called now and then to bound memory).
    pub fn prune(&mut self, now: i64) {
        let window = self.policy.window_ms;
        self.failures
            .retain(|_, entries| entries.back().is_some_and(|t| now - t < window));
    }
}

/// The throttle key of a client address: IPv4 addresses (also IPv4-mapped IPv6) as they are, IPv6
/// addresses by their /64, since one host usually holds a whole /64 and could rotate through it.
/// Text that is not an address (`unknown`) is its own key.
pub fn address_key(addr: &str) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(prefix))
            }
        },
        Err(_) => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn fifth_failure_blocks_until_the_first_leaves_the_window() {
        let mut t = Throttle::new(ThrottlePolicy {
            max_failures: 5,
            window_ms: 15 * MIN,
        });
        for i in 0..4 {
            t.record_failure("admin", i * MIN);
            assert_eq!(t.blocked_for("admin", i * MIN), None);
        }
        t.record_failure("admin", 4 * MIN);
        assert_eq!(t.blocked_for("admin", 4 * MIN), Some(11 * MIN));
        assert_eq!(t.blocked_for("admin", 15 * MIN - 1), Some(1));
        assert_eq!(t.blocked_for("admin", 15 * MIN), None);
    }

    #[test]
    fn keys_are_independent_and_clear_resets() {
        let mut t = Throttle::new(ThrottlePolicy {
            max_failures: 2,
            window_ms: MIN,
        });
        t.record_failure("a", 0);
        t.record_failure("a", 1);
        assert!(t.blocked_for("a", 2).is_some());
        assert!(t.blocked_for("b", 2).is_none());
        t.clear("a");
        assert!(t.blocked_for("a", 3).is_none());
    }

    #[test]
    fn prune_forgets_old_keys() {
        let mut t = Throttle::new(ThrottlePolicy {
            max_failures: 2,
            window_ms: MIN,
        });
        t.record_failure("a", 0);
        t.prune(MIN);
        assert!(t.failures.is_empty());
    }

    #[test]
    fn forget_takes_back_one_reservation() {
        let mut t = Throttle::new(ThrottlePolicy {
            max_failures: 2,
            window_ms: MIN,
        });
        t.record_failure("a", 5);
        t.record_failure("a", 5);
        assert!(t.blocked_for("a", 5).is_some());
        t.forget("a", 5);
        assert!(t.blocked_for("a", 5).is_none());
        t.forget("a", 5);
        assert!(t.failures.is_empty());
        t.forget("b", 5);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        for (addr, key) in [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
            ("::1", "::/64"),
            ("unknown", "unknown"),
        ] {
            assert_eq!(address_key(addr), key, "{addr}");
        }
    }
}
