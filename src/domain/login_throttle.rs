//! Login throttling: after `max_failures` failed logins within `window_ms`, for one username or one
//! client address, further attempts are refused until the oldest counted failure leaves the window.
//!
//! The rule is pure: callers pass `now` and keep the [`Throttle`] wherever they like.

use std::collections::{HashMap, VecDeque};

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
}
