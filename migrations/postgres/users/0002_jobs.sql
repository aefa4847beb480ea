-- The durable job queue. Times are UTC milliseconds since the epoch; payload and result are JSON text.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,          -- UUID v7: sorts by creation time
    job_type         TEXT NOT NULL,
    payload          TEXT NOT NULL,
    dedup_key        TEXT,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    priority         BIGINT NOT NULL DEFAULT 0,
    run_at           BIGINT NOT NULL,
    locked_by        TEXT,
    locked_until     BIGINT,
    heartbeat_at     BIGINT,
    started_at       BIGINT,          -- when the current attempt was claimed
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    last_error       TEXT,
    result           TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT
);

-- De-duplication: one live (pending or running) job per key, enforced by the database.
CREATE UNIQUE INDEX jobs_live_dedup ON jobs (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running');
-- Claiming: the next ready jobs, highest priority first, oldest first.
CREATE INDEX jobs_ready ON jobs (priority DESC, run_at, id) WHERE status = 'pending';
-- Rescue and heartbeats: running jobs by lock expiry and by holder.
CREATE INDEX jobs_running ON jobs (locked_by, locked_until) WHERE status = 'running';
-- No index on status or type for listing: every extra index is written on each claim and finish,
-- the hot path; lists page through the primary key and statistics scan.

-- Wake idle runners at once when a job becomes ready (LISTEN poolkeeper_jobs).
CREATE FUNCTION poolkeeper_jobs_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('poolkeeper_jobs', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_notify AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION poolkeeper_jobs_notify();
