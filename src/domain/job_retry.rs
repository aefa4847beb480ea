//! What happens to a job after a failed attempt: retry later (exponential backoff with jitter, or the
//! handler's retry-after) or fail for good.

/// How a handler's error asks to be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth retrying after the usual backoff.
    Transient,
    /// Retrying cannot help.
    Permanent,
    /// Retry no sooner than this many milliseconds.
    RetryAfterMs(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    RetryAt(i64),
    Fail,
}

/// Backoff before attempt `attempt + 1`: 1 s, 2 s, 4 s ... capped at 10 minutes, scaled by a jitter
/// factor between 0.75 and 1.25 (`jitter` is a uniform sample in [0, 1)).
pub fn backoff_ms(attempt: i64, jitter: f64) -> i64 {
    const BASE_MS: i64 = 1_000;
    const CAP_MS: i64 = 10 * 60 * 1_000;
    let exp = attempt.clamp(1, 30) - 1;
    let delay = BASE_MS.saturating_mul(1_i64 << exp).min(CAP_MS);
    let factor = 0.75 + jitter.clamp(0.0, 1.0) * 0.5;
    (delay as f64 * factor) as i64
}

/// The rule: a permanent failure or a spent budget fails the job; otherwise it runs again later.
pub fn after_failure(
    kind: FailureKind,
    attempts: i64,
    max_attempts: i64,
    now: i64,
    jitter: f64,
) -> AfterFailure {
    if kind == FailureKind::Permanent || attempts >= max_attempts {
        return AfterFailure::Fail;
    }
    match kind {
        FailureKind::RetryAfterMs(ms) => AfterFailure::RetryAt(now + ms.max(0)),
        _ => AfterFailure::RetryAt(now + backoff_ms(attempts, jitter)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        assert_eq!(backoff_ms(1, 0.5), 1_000);
        assert_eq!(backoff_ms(2, 0.5), 2_000);
        assert_eq!(backoff_ms(3, 0.5), 4_000);
        assert_eq!(backoff_ms(3, 0.0), 3_000);
        assert_eq!(backoff_ms(3, 0.999_999), 4_999);
        assert_eq!(backoff_ms(40, 0.5), 600_000);
    }

    #[test]
    fn failures_retry_until_the_budget_is_spent() {
        let now = 1_000_000;
        let cases = [
            (
                FailureKind::Transient,
                1,
                3,
                AfterFailure::RetryAt(now + 1_000),
            ),
            (
                FailureKind::Transient,
                2,
                3,
                AfterFailure::RetryAt(now + 2_000),
            ),
            (FailureKind::Transient, 3, 3, AfterFailure::Fail),
            (FailureKind::Permanent, 1, 3, AfterFailure::Fail),
            (
                FailureKind::RetryAfterMs(30_000),
                1,
                3,
                AfterFailure::RetryAt(now + 30_000),
            ),
            (FailureKind::RetryAfterMs(30_000), 3, 3, AfterFailure::Fail),
        ];
        for (kind, attempts, max, expected) in cases {
            assert_eq!(
                after_failure(kind, attempts, max, now, 0.5),
                expected,
                "{kind:?} {attempts}/{max}"
            );
        }
    }
}
