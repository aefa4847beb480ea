//! Lease policy for credential pools: which account is lent next, what a release result does to
//! the account, how long a lease may last, and what state an account is in at a given moment.
//! Pure: no I/O, and `now` is always passed in. `store::credential_accounts` mirrors the selection
//! order and the status rule in SQL; the tables of cases below pin both down.

use std::cmp::Ordering;

/// The knobs of the policy, in milliseconds (built from the `leases` configuration section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeasePolicy {
    pub cooldown_ms: i64,
    pub max_failures: i64,
    pub quarantine_ms: i64,
    pub banned_ms: i64,
    pub default_ttl_ms: i64,
    pub max_ttl_ms: i64,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        Self {
            cooldown_ms: 600_000,
            max_failures: 3,
            quarantine_ms: 1_800_000,
            banned_ms: 3_600_000,
            default_ttl_ms: 300_000,
            max_ttl_ms: 3_600_000,
        }
    }
}

/// How a worker says a lease ended. `Expired` is never sent by a worker: it is recorded when a
/// lease passes its expiry unreleased.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseResult {
    Success,
    NoSlot,
    LoginFail,
    Error,
    Banned,
    Expired,
}

impl LeaseResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseResult::Success => "success",
            LeaseResult::NoSlot => "no_slot",
            LeaseResult::LoginFail => "login_fail",
            LeaseResult::Error => "error",
            LeaseResult::Banned => "banned",
            LeaseResult::Expired => "expired",
        }
    }

    /// A result a worker may send on release (`expired` is not one).
    pub fn parse_release(s: &str) -> Option<Self> {
        Some(match s {
            "success" => LeaseResult::Success,
            "no_slot" => LeaseResult::NoSlot,
            "login_fail" => LeaseResult::LoginFail,
            "error" => LeaseResult::Error,
            "banned" => LeaseResult::Banned,
            _ => return None,
        })
    }

    pub const RELEASE_VALUES: &'static str = "success, no_slot, login_fail, error or banned";
}

/// The resting state of an account, the part a release changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resting {
    pub cooldown_until: Option<i64>,
    pub quarantine_until: Option<i64>,
    pub consecutive_failures: i64,
}

/// What a release with `result` at `now` does to an account resting as `before`:
/// - `success`, `no_slot`: failures back to 0, cooldown.
/// - `login_fail`, `error`: one more failure and a cooldown; the `max_failures`-th consecutive
///   failure quarantines for `quarantine_ms` instead.
/// - `banned`: quarantine for `banned_ms`.
/// - `expired`: a cooldown, failures unchanged.
///
/// A quarantine that is already over counts as ended, so the failure count starts again from 0.
pub fn after_release(
    policy: &LeasePolicy,
    before: Resting,
    result: LeaseResult,
    now: i64,
) -> Resting {
    let quarantine_over = before.quarantine_until.is_some_and(|q| q <= now);
    let failures = if quarantine_over {
        0
    } else {
        before.consecutive_failures
    };
    let quarantine = if quarantine_over {
        None
    } else {
        before.quarantine_until
    };
    let cooldown = Some(now + policy.cooldown_ms);
    match result {
        LeaseResult::Success | LeaseResult::NoSlot => Resting {
            cooldown_until: cooldown,
            quarantine_until: quarantine,
            consecutive_failures: 0,
        },
        LeaseResult::LoginFail | LeaseResult::Error => {
            let failures = failures + 1;
            if failures >= policy.max_failures {
                Resting {
                    cooldown_until: cooldown,
                    quarantine_until: Some(now + policy.quarantine_ms),
                    consecutive_failures: failures,
                }
            } else {
                Resting {
                    cooldown_until: cooldown,
                    quarantine_until: quarantine,
                    consecutive_failures: failures,
                }
            }
        }
        LeaseResult::Banned => Resting {
            cooldown_until: cooldown,
            quarantine_until: Some(now + policy.banned_ms),
            consecutive_failures: failures,
        },
        LeaseResult::Expired => Resting {
            cooldown_until: cooldown,
            quarantine_until: quarantine,
            consecutive_failures: failures,
        },
    }
}

/// When a release put the account into a new quarantine (`after` quarantines and `before` did
/// not, or until an earlier time): until when. What raises `account_quarantined` once.
pub fn quarantine_started(before: Resting, after: Resting) -> Option<i64> {
    after
        .quarantine_until
        .filter(|until| before.quarantine_until != Some(*until))
}

/// The lease length for a requested TTL in seconds: the default when none is asked, at least one
/// second, never more than the cap. `Err` names the rule broken.
pub fn ttl_ms(policy: &LeasePolicy, requested_secs: Option<i64>) -> Result<i64, String> {
    match requested_secs {
        None => Ok(policy.default_ttl_ms.min(policy.max_ttl_ms)),
        Some(s) if s < 1 => Err(format!("ttl_seconds must be at least 1, got {s}")),
        Some(s) => Ok(s.saturating_mul(1000).min(policy.max_ttl_ms)),
    }
}

/// What an account is at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Available,
    InUse,
    Cooldown,
    Quarantined,
    Inactive,
}

impl AccountStatus {
    pub const ALL: [AccountStatus; 5] = [
        AccountStatus::Available,
        AccountStatus::InUse,
        AccountStatus::Cooldown,
        AccountStatus::Quarantined,
        AccountStatus::Inactive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Available => "available",
            AccountStatus::InUse => "in_use",
            AccountStatus::Cooldown => "cooldown",
            AccountStatus::Quarantined => "quarantined",
            AccountStatus::Inactive => "inactive",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// The timestamps that decide an account's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountTimes {
    pub is_active: bool,
    /// Expiry of the open lease, if one is open.
    pub leased_until: Option<i64>,
    pub cooldown_until: Option<i64>,
    pub quarantine_until: Option<i64>,
}

/// The status at `now`, first match wins: inactive, in use (an open lease not yet expired),
/// quarantined, cooling down (after a release, or one cooldown after an unreleased lease expired),
/// else available.
pub fn status_at(t: &AccountTimes, now: i64, cooldown_ms: i64) -> AccountStatus {
    let after = |until: Option<i64>| until.is_some_and(|u| u > now);
    if !t.is_active {
        AccountStatus::Inactive
    } else if after(t.leased_until) {
        AccountStatus::InUse
    } else if after(t.quarantine_until) {
        AccountStatus::Quarantined
    } else if after(t.cooldown_until) || after(t.leased_until.map(|l| l + cooldown_ms)) {
        AccountStatus::Cooldown
    } else {
        AccountStatus::Available
    }
}

/// When an active account is next available (`None` for an inactive one; `now` or earlier means
/// available now).
pub fn returns_at(t: &AccountTimes, cooldown_ms: i64) -> Option<i64> {
    if !t.is_active {
        return None;
    }
    Some(
        [
            t.cooldown_until,
            t.quarantine_until,
            t.leased_until.map(|l| l + cooldown_ms),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(i64::MIN),
    )
}

/// Whether one of `accounts` is available at `now`. When an acquire found none although this
/// holds, a concurrent acquire was taking it: its outcome is known once that transaction ends.
pub fn any_available(accounts: &[AccountTimes], now: i64, cooldown_ms: i64) -> bool {
    accounts
        .iter()
        .filter_map(|a| returns_at(a, cooldown_ms))
        .any(|at| at <= now)
}

/// Whole seconds (at least 1) until the first of `accounts` comes back, for `Retry-After`.
pub fn retry_after_secs(accounts: &[AccountTimes], now: i64, cooldown_ms: i64) -> Option<u64> {
    let next = accounts
        .iter()
        .filter_map(|a| returns_at(a, cooldown_ms))
        .min()?;
    let wait_ms = next.saturating_sub(now).max(0);
    Some(u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1))
}

/// What the selection order looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: i64,
    pub last_used_at: Option<i64>,
    pub total_uses: i64,
}

/// The order in which available accounts are lent: never used first, then fewest uses, then least
/// recently used, then lowest id (so the order is total).
pub fn selection_order(a: &Candidate, b: &Candidate) -> Ordering {
    a.last_used_at
        .is_some()
        .cmp(&b.last_used_at.is_some())
        .then(a.total_uses.cmp(&b.total_uses))
        .then(a.last_used_at.cmp(&b.last_used_at))
        .then(a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_new_quarantine_is_announced() {
        let rest = |q: Option<i64>| Resting {
            cooldown_until: None,
            quarantine_until: q,
            consecutive_failures: 0,
        };
        assert_eq!(quarantine_started(rest(None), rest(Some(9))), Some(9));
        assert_eq!(quarantine_started(rest(Some(9)), rest(Some(9))), None);
        assert_eq!(quarantine_started(rest(Some(5)), rest(Some(9))), Some(9));
        assert_eq!(quarantine_started(rest(Some(5)), rest(None)), None);
        assert_eq!(quarantine_started(rest(None), rest(None)), None);
    }

    const NOW: i64 = 1_000_000_000;
    const MIN: i64 = 60_000;

    fn resting(cooldown: Option<i64>, quarantine: Option<i64>, failures: i64) -> Resting {
        Resting {
            cooldown_until: cooldown,
            quarantine_until: quarantine,
            consecutive_failures: failures,
        }
    }

    #[test]
    fn release_results_follow_the_policy() {
        use LeaseResult::*;
        let p = LeasePolicy::default();
        let cool = Some(NOW + 10 * MIN);
        let cases = [
            // (before, result, after)
            (resting(None, None, 2), Success, resting(cool, None, 0)),
            (resting(None, None, 2), NoSlot, resting(cool, None, 0)),
            (resting(None, None, 0), LoginFail, resting(cool, None, 1)),
            (resting(None, None, 1), Error, resting(cool, None, 2)),
            (
                resting(None, None, 2),
                LoginFail,
                resting(cool, Some(NOW + 30 * MIN), 3),
            ),
            (
                resting(None, None, 0),
                Banned,
                resting(cool, Some(NOW + 60 * MIN), 0),
            ),
            (resting(None, None, 1), Expired, resting(cool, None, 1)),
            // A quarantine that ended: failures start again from 0.
            (
                resting(None, Some(NOW - 1), 3),
                LoginFail,
                resting(cool, None, 1),
            ),
            (resting(None, Some(NOW), 3), Success, resting(cool, None, 0)),
        ];
        for (before, result, want) in cases {
            assert_eq!(
                after_release(&p, before, result, NOW),
                want,
                "{before:?} + {result:?}"
            );
        }
    }

    #[test]
    fn max_failures_is_configurable() {
        let p = LeasePolicy {
            max_failures: 1,
            ..LeasePolicy::default()
        };
        let after = after_release(&p, resting(None, None, 0), LeaseResult::Error, NOW);
        assert_eq!(after.quarantine_until, Some(NOW + p.quarantine_ms));
    }

    #[test]
    fn ttl_defaults_and_caps() {
        let p = LeasePolicy::default();
        let cases = [
            (None, Ok(300_000)),
            (Some(10), Ok(10_000)),
            (Some(3600), Ok(3_600_000)),
            (Some(99_999), Ok(3_600_000)),
            (Some(i64::MAX), Ok(3_600_000)),
        ];
        for (asked, want) in cases {
            assert_eq!(ttl_ms(&p, asked), want, "{asked:?}");
        }
        assert!(ttl_ms(&p, Some(0)).unwrap_err().contains("ttl_seconds"));
        assert!(ttl_ms(&p, Some(-5)).is_err());
    }

    #[test]
    fn status_at_each_moment() {
        use AccountStatus::*;
        let cool = 10 * MIN;
        let t = |active, leased, cooldown, quarantine| AccountTimes {
            is_active: active,
            leased_until: leased,
            cooldown_until: cooldown,
            quarantine_until: quarantine,
        };
        let cases = [
            (t(true, None, None, None), Available),
            (t(false, None, None, None), Inactive),
            (t(false, Some(NOW + 1), None, None), Inactive),
            (t(true, Some(NOW + 1), None, None), InUse),
            // Expired unreleased lease: resting for one cooldown after its expiry, then back.
            (t(true, Some(NOW), None, None), Cooldown),
            (t(true, Some(NOW - cool + 1), None, None), Cooldown),
            (t(true, Some(NOW - cool), None, None), Available),
            (t(true, None, Some(NOW + 1), None), Cooldown),
            (t(true, None, Some(NOW), None), Available),
            (t(true, None, Some(NOW + 1), Some(NOW + 1)), Quarantined),
            (t(true, None, None, Some(NOW)), Available),
            (t(true, None, None, Some(NOW - 1)), Available),
        ];
        for (times, want) in cases {
            assert_eq!(status_at(&times, NOW, cool), want, "{times:?}");
        }
    }

    #[test]
    fn retry_after_is_the_first_return() {
        let cool = 10 * MIN;
        let a = |leased, cooldown, quarantine| AccountTimes {
            is_active: true,
            leased_until: leased,
            cooldown_until: cooldown,
            quarantine_until: quarantine,
        };
        let accounts = [
            a(None, Some(NOW + 90_000), Some(NOW + 30 * MIN)),
            a(None, Some(NOW + 120_500), None),
            a(Some(NOW + 1000), None, None),
        ];
        assert_eq!(retry_after_secs(&accounts, NOW, cool), Some(121));
        assert_eq!(retry_after_secs(&[], NOW, cool), None);
        let inactive = AccountTimes::default();
        assert_eq!(retry_after_secs(&[inactive], NOW, cool), None);
        assert_eq!(retry_after_secs(&[a(None, None, None)], NOW, cool), Some(1));
    }

    #[test]
    fn any_available_only_when_one_has_returned_by_now() {
        let cool = 10 * MIN;
        let a = |leased, cooldown| AccountTimes {
            is_active: true,
            leased_until: leased,
            cooldown_until: cooldown,
            quarantine_until: None,
        };
        let cases = [
            (vec![], false),
            (vec![a(None, None)], true),
            (vec![a(None, Some(NOW))], true),
            (vec![a(None, Some(NOW + 1))], false),
            (vec![a(Some(NOW - cool), None)], true),
            (vec![a(Some(NOW), None), a(None, Some(NOW + 1))], false),
            (vec![AccountTimes::default()], false),
        ];
        for (accounts, want) in cases {
            assert_eq!(any_available(&accounts, NOW, cool), want, "{accounts:?}");
        }
    }

    #[test]
    fn selection_prefers_never_used_then_fewest_uses_then_oldest_use() {
        let c = |id, last, uses| Candidate {
            id,
            last_used_at: last,
            total_uses: uses,
        };
        let mut list = [
            c(1, Some(NOW - 10), 5),
            c(2, Some(NOW - 50), 2),
            c(3, None, 0),
            c(4, Some(NOW - 100), 2),
            c(5, Some(NOW - 1000), 9),
            c(6, None, 0),
        ];
        list.sort_by(selection_order);
        let ids: Vec<i64> = list.iter().map(|c| c.id).collect();
        assert_eq!(ids, [3, 6, 4, 2, 1, 5]);
    }
}
