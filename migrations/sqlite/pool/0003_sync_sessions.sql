-- Sync sessions: every sync run belongs to one session, with one record per mother. Totals on the
-- session are recomputed from its records whenever a record finishes (store::sync_sessions).
-- Records keep mother_id without a foreign key, so history outlives a deleted mother.

CREATE TABLE sync_sessions (
    session_id      TEXT PRIMARY KEY,
    sync_type       TEXT NOT NULL CHECK (sync_type IN ('scheduled', 'manual_single', 'manual_batch')),
    category        TEXT NOT NULL DEFAULT 'pool' CHECK (category IN ('pool', 'account', 'capacity', 'config', 'other')),
    status          TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    pool_group_id   INTEGER,
    total_instances INTEGER NOT NULL DEFAULT 0,
    successful      INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    created_by      TEXT,
    started_at      INTEGER NOT NULL,
    completed_at    INTEGER
);
CREATE INDEX sync_sessions_started ON sync_sessions (started_at);
CREATE INDEX sync_sessions_status ON sync_sessions (status, started_at);

CREATE TABLE sync_records (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id    TEXT NOT NULL REFERENCES sync_sessions(session_id) ON DELETE CASCADE,
    mother_id     INTEGER NOT NULL,
    job_id        TEXT,
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    started_at    INTEGER,
    completed_at  INTEGER,
    items_synced  INTEGER NOT NULL DEFAULT 0,
    items_created INTEGER NOT NULL DEFAULT 0,
    items_updated INTEGER NOT NULL DEFAULT 0,
    items_deleted INTEGER NOT NULL DEFAULT 0,
    error_message TEXT,
    details       TEXT NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL
);
CREATE INDEX sync_records_session ON sync_records (session_id, id);
