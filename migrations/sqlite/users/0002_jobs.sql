-- The durable job queue. Times are UTC milliseconds since the epoch; payload and result are JSON text.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,          -- UUID v7: sorts by creation time
    job_type         TEXT NOT NULL,
    payload          TEXT NOT NULL,
    dedup_key        TEXT,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    locked_by        TEXT,
    locked_until     INTEGER,
    heartbeat_at     INTEGER,
    started_at       INTEGER,          -- when the current attempt was claimed
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    result           TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
) WITHOUT ROWID;  -- rows live in primary-key order: id lookups touch one b-tree

-- De-duplication: one live (pending or running) job per key, enforced by the database.
CREATE UNIQUE INDEX jobs_live_dedup ON jobs (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running');
-- Claiming: the next ready jobs, highest priority first, oldest first.
CREATE INDEX jobs_ready ON jobs (priority DESC, run_at, id) WHERE status = 'pending';
-- Rescue and heartbeats: running jobs by lock expiry and by holder.
CREATE INDEX jobs_running ON jobs (locked_by, locked_until) WHERE status = 'running';
-- No index on status or type for listing: every extra index is written on each claim and finish,
-- the hot path; lists page through the primary key and statistics scan.
