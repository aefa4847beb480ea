//! Mission rules: how a mission name becomes the key that groups its requests, which slot a new
//! mission run takes, and what a worker may say about the requests it ran. Pure: no I/O.
//! `store::missions` keeps the keys and slots; the database's unique indexes over them are what
//! make the limits hold when claims race.

use std::collections::HashSet;

/// Longest mission name, in characters.
pub const MAX_MISSION_CHARS: usize = 128;
/// Requests one claim takes when the worker does not say.
pub const DEFAULT_MAX_REQUESTS: i64 = 100;
/// Most requests one claim may take.
pub const MAX_REQUESTS_CAP: i64 = 1000;

/// A mission name as given (trimmed) and its key: the name lower-cased, so `de` and `DE` are one
/// mission. `Err` says what is wrong with the name.
pub fn mission_key(name: &str) -> Result<(String, String), String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("mission is required".into());
    }
    if name.chars().count() > MAX_MISSION_CHARS {
        return Err(format!(
            "mission must be at most {MAX_MISSION_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("mission must not contain control characters".into());
    }
    Ok((name.to_string(), name.to_lowercase()))
}

/// How many requests a claim takes for a requested `max_requests`.
pub fn max_requests(requested: Option<i64>) -> Result<i64, String> {
    match requested {
        None => Ok(DEFAULT_MAX_REQUESTS),
        Some(n) if (1..=MAX_REQUESTS_CAP).contains(&n) => Ok(n),
        Some(n) => Err(format!(
            "max_requests must be between 1 and {MAX_REQUESTS_CAP}, got {n}"
        )),
    }
}

/// The lowest slot in `1..=max_concurrent` that no running claim holds; `None` when all are taken.
pub fn free_slot(taken: &[i64], max_concurrent: i64) -> Option<i64> {
    let taken: HashSet<i64> = taken.iter().copied().collect();
    (1..=max_concurrent).find(|s| !taken.contains(s))
}

/// How a worker says one request of its claim ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestStatus {
    Done,
    Failed,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Done => "done",
            RequestStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "done" => Some(RequestStatus::Done),
            "failed" => Some(RequestStatus::Failed),
            _ => None,
        }
    }
}

/// Checks the request ids a worker reports against the ids its claim holds: each must be one of
/// them, at most once. `Err` names the entry (`requests[i].id`). Requests the claim holds that
/// are not reported go back to pending.
pub fn check_reported(reported: &[i64], held: &[i64]) -> Result<(), String> {
    let held: HashSet<i64> = held.iter().copied().collect();
    let mut seen = HashSet::new();
    for (i, id) in reported.iter().enumerate() {
        if !held.contains(id) {
            return Err(format!(
                "requests[{i}].id: request {id} is not held by this claim"
            ));
        }
        if !seen.insert(*id) {
            return Err(format!("requests[{i}].id: request {id} is listed twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mission_names_and_their_keys() {
        let ok = [
            ("de", "de"),
            ("DE", "de"),
            ("  De ", "de"),
            ("eu-west/Paris", "eu-west/paris"),
            ("ÄÖ", "äö"),
        ];
        for (name, key) in ok {
            assert_eq!(
                mission_key(name).map(|(_, k)| k),
                Ok(key.to_string()),
                "{name:?}"
            );
        }
        assert_eq!(
            mission_key(" DE ").unwrap().0,
            "DE",
            "the name keeps its case"
        );
        let long = "x".repeat(MAX_MISSION_CHARS + 1);
        for bad in ["", "   ", "a\nb", long.as_str()] {
            let err = mission_key(bad).unwrap_err();
            assert!(err.contains("mission"), "{bad:?}: {err}");
        }
        assert!(mission_key(&"x".repeat(MAX_MISSION_CHARS)).is_ok());
    }

    #[test]
    fn max_requests_defaults_and_bounds() {
        let cases = [
            (None, Ok(DEFAULT_MAX_REQUESTS)),
            (Some(1), Ok(1)),
            (Some(MAX_REQUESTS_CAP), Ok(MAX_REQUESTS_CAP)),
        ];
        for (asked, want) in cases {
            assert_eq!(max_requests(asked), want, "{asked:?}");
        }
        for bad in [0, -1, MAX_REQUESTS_CAP + 1] {
            assert!(
                max_requests(Some(bad))
                    .unwrap_err()
                    .contains("max_requests")
            );
        }
    }

    #[test]
    fn free_slot_is_the_lowest_untaken() {
        let cases: [(&[i64], i64, Option<i64>); 6] = [
            (&[], 5, Some(1)),
            (&[1, 2], 5, Some(3)),
            (&[2, 3], 5, Some(1)),
            (&[1, 2, 3, 4, 5], 5, None),
            // Slots above the limit (a process with a larger limit) do not free lower ones.
            (&[1, 7], 2, Some(2)),
            (&[], 0, None),
        ];
        for (taken, max, want) in cases {
            assert_eq!(free_slot(taken, max), want, "{taken:?} of {max}");
        }
    }

    #[test]
    fn reported_requests_must_be_held_once() {
        assert_eq!(check_reported(&[], &[1, 2]), Ok(()));
        assert_eq!(check_reported(&[2, 1], &[1, 2]), Ok(()));
        let err = check_reported(&[1, 9], &[1, 2]).unwrap_err();
        assert!(err.starts_with("requests[1].id"), "{err}");
        let err = check_reported(&[1, 1], &[1, 2]).unwrap_err();
        assert!(
            err.starts_with("requests[1].id") && err.contains("twice"),
            "{err}"
        );
    }

    #[test]
    fn request_statuses() {
        for s in [RequestStatus::Done, RequestStatus::Failed] {
            assert_eq!(RequestStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RequestStatus::parse("pending"), None);
    }
}
