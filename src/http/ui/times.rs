//! Times as the pages show them: relative to now ("3 min ago", "in 2 h") with the exact UTC time
//! kept for a `title` tooltip and a `<time datetime>`, and durations ("1 h 5 min"). Templates
//! show a [`Moment`] through the `time` macro of `templates/partials/time.html`.

use crate::clock::rfc3339;

/// A point in time as a page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moment {
    /// "3 min ago", "just now", "in 5 s".
    pub relative: String,
    /// RFC 3339, UTC.
    pub exact: String,
}

impl Moment {
    pub fn new(ms: i64, now: i64) -> Self {
        Self {
            relative: relative(ms, now),
            exact: rfc3339(ms),
        }
    }

    /// A moment that may not have happened: `None` shows as "-".
    pub fn maybe(ms: Option<i64>, now: i64) -> Option<Self> {
        ms.map(|ms| Self::new(ms, now))
    }
}

/// "3 min ago" for a past time, "in 3 min" for a future one, "just now" within a second.
pub fn relative(ms: i64, now: i64) -> String {
    let diff = now.saturating_sub(ms);
    if diff.abs() < 1000 {
        return "just now".into();
    }
    let span = duration(diff.saturating_abs());
    if diff > 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// A duration in its two largest units: "850 ms", "42 s", "3 min 5 s", "2 h 10 min", "3 d 4 h".
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) if s == 0 => format!("{m} min"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, 0) => format!("{h} h"),
        (0, _, _) => format!("{h} h {m} min"),
        (_, 0, _) => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

/// The time between two moments when both are known.
pub fn between(from: Option<i64>, to: Option<i64>) -> Option<String> {
    Some(duration(to?.checked_sub(from?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_name_the_two_largest_units() {
        let now = 10_000_000_000;
        for (ago, text) in [
            (0, "just now"),
            (999, "just now"),
            (5_000, "5 s ago"),
            (180_000, "3 min ago"),
            (185_000, "3 min 5 s ago"),
            (3_600_000, "1 h ago"),
            (7_800_000, "2 h 10 min ago"),
            (2 * 86_400_000 + 3_600_000, "2 d 1 h ago"),
            (-120_000, "in 2 min"),
        ] {
            assert_eq!(relative(now - ago, now), text, "{ago} ms ago");
        }
    }

    #[test]
    fn durations_and_moments() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(-5), "0 ms");
        assert_eq!(duration(86_400_000), "1 d");
        assert_eq!(between(Some(1_000), Some(61_000)).as_deref(), Some("1 min"));
        assert_eq!(between(None, Some(1)), None);
        let m = Moment::new(0, 60_000);
        assert_eq!(m.exact, "1970-01-01T00:00:00Z");
        assert_eq!(m.relative, "1 min ago");
    }
}
