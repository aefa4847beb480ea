-- Sync sessions: every sync run belongs to one session, with one record per mother. Totals on the
-- session are recomputed from its records whenever a record finishes (store::sync_sessions).
-- Records keep mother_id without a foreign key, so history outlives a deleted mother.

CREATE TABLE sync_sessions (
    session_id      TEXT PRIMARY KEY,
    sync_type       TEXT NOT NULL CHECK (sync_type IN ('scheduled', 'manual_single', 'manual_batch')),
    category        TEXT NOT NULL DEFAULT 'pool' CHECK (category IN ('pool', 'account', 'capacity', 'config', 'other')),
    status          TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    pool_group_id   BIGINT,
    total_instances BIGINT NOT NULL DEFAULT 0,
    successful      BIGINT NOT NULL DEFAULT 0,
    failed          BIGINT NOT NULL DEFAULT 0,
    created_by      TEXT,
    started_at      BIGINT NOT NULL,
    completed_at    BIGINT
);
CREATE INDEX sync_sessions_started ON sync_sessions (started_at);
CREATE INDEX sync_sessions_status ON sync_sessions (status, started_at);

CREATE TABLE sync_records (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES sync_sessions(session_id) ON DELETE CASCADE,
    mother_id     BIGINT NOT NULL,
    job_id        TEXT,
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    started_at    BIGINT,
    completed_at  BIGINT,
    items_synced  BIGINT NOT NULL DEFAULT 0,
    items_created BIGINT NOT NULL DEFAULT 0,
    items_updated BIGINT NOT NULL DEFAULT 0,
    items_deleted BIGINT NOT NULL DEFAULT 0,
    error_message TEXT,
    details       TEXT NOT NULL DEFAULT '{}',
    created_at    BIGINT NOT NULL
);
CREATE INDEX sync_records_session ON sync_records (session_id, id);
