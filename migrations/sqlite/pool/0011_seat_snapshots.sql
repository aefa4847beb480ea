-- One row per pool group per UTC day: its active mothers' seat counters as housekeeping found them
-- the first time it ran that day (the dashboard's "seats used over time" chart). Written once per
-- (day, group) by an INSERT ... ON CONFLICT DO NOTHING, so every process may try. Rows go with
-- their group.
CREATE TABLE pool_seat_snapshots (
    day           TEXT NOT NULL,             -- YYYY-MM-DD, UTC
    pool_group_id INTEGER NOT NULL REFERENCES pool_groups(id) ON DELETE CASCADE,
    seats_total   INTEGER NOT NULL,
    seats_used    INTEGER NOT NULL,
    seats_held    INTEGER NOT NULL,
    taken_at      INTEGER NOT NULL,
    PRIMARY KEY (day, pool_group_id)
);

-- The dashboard's last sync of each group, and mothers whose syncs failed lately, without scanning
-- every session or record.
CREATE INDEX sync_sessions_group_started ON sync_sessions (pool_group_id, started_at);
CREATE INDEX sync_records_failed ON sync_records (status, completed_at);
