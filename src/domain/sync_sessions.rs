//! Rules of sync sessions, over plain counts of their records. The store keeps those counts on the
//! session row and adds to them only when a record actually changes state (a record finishing
//! twice counts once), so they always equal a recount of the records.

/// Which kinds of sync start a session.
pub const SYNC_TYPES: [&str; 3] = ["scheduled", "manual_single", "manual_batch"];
pub const CATEGORIES: [&str; 5] = ["pool", "account", "capacity", "config", "other"];
pub const STATUSES: [&str; 4] = ["running", "completed", "failed", "cancelled"];

/// How many of a session's records are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub pending: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl RecordCounts {
    pub fn add(&mut self, status: &str, n: i64) {
        match status {
            "pending" => self.pending += n,
            "running" => self.running += n,
            "completed" => self.completed += n,
            "failed" => self.failed += n,
            "cancelled" => self.cancelled += n,
            _ => {}
        }
    }
    /// The counts a session row carries: its total and its finished records by outcome. The row
    /// does not tell pending from running records; the unfinished ones count as `pending`.
    pub fn from_session(total: i64, completed: i64, failed: i64, cancelled: i64) -> Self {
        Self {
            pending: (total - completed - failed - cancelled).max(0),
            running: 0,
            completed,
            failed,
            cancelled,
        }
    }
    pub fn total(&self) -> i64 {
        self.pending + self.running + self.completed + self.failed + self.cancelled
    }
    pub fn finished(&self) -> i64 {
        self.completed + self.failed + self.cancelled
    }
}

/// The session's totals: (`total_instances`, `successful`, `failed`).
pub fn totals(c: &RecordCounts) -> (i64, i64, i64) {
    (c.total(), c.completed, c.failed)
}

/// The session's status: `cancelled` stays; `running` until every record has finished; then
/// `completed` when none failed, else `failed`.
pub fn session_status(current: &str, c: &RecordCounts) -> &'static str {
    if current == "cancelled" {
        "cancelled"
    } else if c.pending + c.running > 0 {
        "running"
    } else if c.failed > 0 {
        "failed"
    } else {
        "completed"
    }
}

/// Share of finished records, 0.0-1.0 (a session without records is done).
pub fn progress(c: &RecordCounts) -> f64 {
    let total = c.total();
    if total == 0 {
        return 1.0;
    }
    c.finished() as f64 / total as f64
}

/// Cancel is allowed only while the session runs.
pub fn can_cancel(status: &str) -> bool {
    status == "running"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pending: i64, running: i64, completed: i64, failed: i64) -> RecordCounts {
        RecordCounts {
            pending,
            running,
            completed,
            failed,
            cancelled: 0,
        }
    }

    #[test]
    fn status_follows_records() {
        for (c, current, expected) in [
            (counts(1, 1, 1, 0), "running", "running"),
            (counts(0, 1, 2, 0), "running", "running"),
            (counts(0, 0, 3, 0), "running", "completed"),
            (counts(0, 0, 2, 1), "running", "failed"),
            (counts(0, 1, 1, 1), "running", "running"),
            (counts(1, 0, 0, 0), "cancelled", "cancelled"),
            (counts(0, 0, 0, 0), "running", "completed"),
        ] {
            assert_eq!(session_status(current, &c), expected, "{c:?}");
        }
    }

    #[test]
    fn session_row_counts_unfinished_records_as_pending() {
        for ((total, completed, failed, cancelled), status) in [
            ((3, 1, 0, 0), "running"),
            ((3, 2, 1, 0), "failed"),
            ((3, 3, 0, 0), "completed"),
            ((3, 2, 0, 1), "completed"),
            ((0, 0, 0, 0), "completed"),
        ] {
            let c = RecordCounts::from_session(total, completed, failed, cancelled);
            assert_eq!(c.total(), total);
            assert_eq!(c.pending, total - completed - failed - cancelled);
            assert_eq!(session_status("running", &c), status, "{c:?}");
        }
    }

    #[test]
    fn totals_and_progress_come_from_records() {
        let c = counts(1, 0, 2, 1);
        assert_eq!(totals(&c), (4, 2, 1));
        assert!((progress(&c) - 0.75).abs() < 1e-9);
        assert!((progress(&RecordCounts::default()) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn cancel_only_while_running() {
        assert!(can_cancel("running"));
        for s in ["completed", "failed", "cancelled"] {
            assert!(!can_cancel(s));
        }
    }
}
