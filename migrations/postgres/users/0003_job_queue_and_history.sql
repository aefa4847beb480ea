-- Live jobs (pending, running) move to a hot table, finished ones (succeeded, failed, cancelled) to a
-- history table: claims, completions, heartbeats and rescues touch only the hot table and its
-- indexes, which stay as small as the live queue however long the history grows. Finishing a job
-- moves its row in the same transaction that finishes it; a retry moves it back.
CREATE TABLE job_queue (
    -- UUID v7 (sorts by creation time). COLLATE "C" on the keys: byte comparisons instead of the
    -- locale's, the same order for these ASCII values, and much cheaper on every index operation.
    id               TEXT COLLATE "C" PRIMARY KEY,
    job_type         TEXT NOT NULL,
    payload          TEXT NOT NULL,
    dedup_key        TEXT COLLATE "C",
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    priority         BIGINT NOT NULL DEFAULT 0,
    run_at           BIGINT NOT NULL,
    locked_by        TEXT COLLATE "C",
    locked_until     BIGINT,
    heartbeat_at     BIGINT,
    started_at       BIGINT,          -- when the current attempt was claimed
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE TABLE job_history (
    id               TEXT COLLATE "C" PRIMARY KEY,
    job_type         TEXT NOT NULL,
    payload          TEXT NOT NULL,
    dedup_key        TEXT COLLATE "C",
    status           TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'cancelled')),
    attempts         BIGINT NOT NULL,
    max_attempts     BIGINT NOT NULL,
    priority         BIGINT NOT NULL,
    run_at           BIGINT NOT NULL,
    locked_by        TEXT COLLATE "C",
    locked_until     BIGINT,
    heartbeat_at     BIGINT,
    started_at       BIGINT,
    cancel_requested BOOLEAN NOT NULL,
    last_error       TEXT,
    result           TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT
);

INSERT INTO job_queue (id, job_type, payload, dedup_key, status, attempts, max_attempts, priority, run_at,
    locked_by, locked_until, heartbeat_at, started_at, cancel_requested, last_error, created_at, updated_at)
SELECT id, job_type, payload, dedup_key, status, attempts, max_attempts, priority, run_at,
    locked_by, locked_until, heartbeat_at, started_at, cancel_requested, last_error, created_at, updated_at
FROM jobs WHERE status IN ('pending', 'running');

INSERT INTO job_history
SELECT id, job_type, payload, dedup_key, status, attempts, max_attempts, priority, run_at,
    locked_by, locked_until, heartbeat_at, started_at, cancel_requested, last_error, result, created_at,
    updated_at, finished_at
FROM jobs WHERE status NOT IN ('pending', 'running');

DROP TABLE jobs;

-- De-duplication: one live job per key. Every row of job_queue is live, so no status predicate.
CREATE UNIQUE INDEX job_queue_dedup ON job_queue (dedup_key) WHERE dedup_key IS NOT NULL;
-- Claiming: the next ready jobs, highest priority first, oldest first.
CREATE INDEX job_queue_ready ON job_queue (priority DESC, run_at, id) WHERE status = 'pending';
-- Rescue and heartbeats: running jobs by holder and lock expiry.
CREATE INDEX job_queue_running ON job_queue (locked_by, locked_until) WHERE status = 'running';
-- job_history has only its primary key: lists page through it and statistics scan.

-- Every job, live or finished, for reading (lists, statistics, ad-hoc queries).
CREATE VIEW jobs AS
SELECT id, job_type, payload, dedup_key, status, attempts, max_attempts, priority, run_at, locked_by,
    locked_until, heartbeat_at, started_at, cancel_requested, last_error, CAST(NULL AS TEXT) AS result, created_at,
    updated_at, CAST(NULL AS BIGINT) AS finished_at
FROM job_queue
UNION ALL
SELECT id, job_type, payload, dedup_key, status, attempts, max_attempts, priority, run_at, locked_by,
    locked_until, heartbeat_at, started_at, cancel_requested, last_error, result, created_at,
    updated_at, finished_at
FROM job_history;

-- Wake idle runners at once when a job becomes ready (LISTEN poolkeeper_jobs); the function is the
-- one migration 0002 made, its trigger went with the old table.
CREATE TRIGGER job_queue_notify AFTER INSERT ON job_queue
    FOR EACH STATEMENT EXECUTE FUNCTION poolkeeper_jobs_notify();
