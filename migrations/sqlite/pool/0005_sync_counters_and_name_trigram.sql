-- Sync sessions keep their record counters on the session row. `successful` and `failed` were
-- already there; `cancelled` joins them, so a session's finished records are
-- successful + failed + cancelled and its unfinished ones total_instances minus those.
-- store::sync_sessions changes them in the same transaction as every record transition, instead of
-- recounting all records of the session each time (which made a session of N mothers cost O(N^2)).
ALTER TABLE sync_sessions ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0;
UPDATE sync_sessions SET
    total_instances = (SELECT COUNT(*) FROM sync_records r WHERE r.session_id = sync_sessions.session_id),
    successful = (SELECT COUNT(*) FROM sync_records r WHERE r.session_id = sync_sessions.session_id AND r.status = 'completed'),
    failed = (SELECT COUNT(*) FROM sync_records r WHERE r.session_id = sync_sessions.session_id AND r.status = 'failed'),
    cancelled = (SELECT COUNT(*) FROM sync_records r WHERE r.session_id = sync_sessions.session_id AND r.status = 'cancelled');

-- Name search: SQLite has had its trigram index (the FTS5 table mothers_name_search) since 0002;
-- PostgreSQL's migration 0005 adds one (pg_trgm) here.
