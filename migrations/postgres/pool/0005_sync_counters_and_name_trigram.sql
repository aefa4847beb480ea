-- Sync sessions keep their record counters on the session row. `successful` and `failed` were
-- already there; `cancelled` joins them, so a session's finished records are
-- successful + failed + cancelled and its unfinished ones total_instances minus those.
-- store::sync_sessions changes them in the same transaction as every record transition, instead of
-- recounting all records of the session each time (which made a session of N mothers cost O(N^2)).
ALTER TABLE sync_sessions ADD COLUMN cancelled BIGINT NOT NULL DEFAULT 0;
UPDATE sync_sessions s SET
    total_instances = c.total, successful = c.completed, failed = c.failed, cancelled = c.cancelled
FROM (SELECT session_id, COUNT(*) AS total,
             COUNT(*) FILTER (WHERE status = 'completed') AS completed,
             COUNT(*) FILTER (WHERE status = 'failed') AS failed,
             COUNT(*) FILTER (WHERE status = 'cancelled') AS cancelled
      FROM sync_records GROUP BY session_id) c
WHERE c.session_id = s.session_id;

-- Name search through a trigram index (pg_trgm, from PostgreSQL's contrib): `name ILIKE '%term%'`
-- then reads a GIN index instead of every mother. Creating an extension needs a privilege the
-- migrating role may not have; then this migration does not fail: it warns, and without the index
-- the same query scans the mothers table (poolkeeper warns again at every start,
-- store::mothers::name_search_indexed). A superuser can add it later:
--     CREATE EXTENSION pg_trgm;
--     CREATE INDEX mothers_name_trgm ON mothers USING gin (name gin_trgm_ops);
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
    RAISE WARNING 'poolkeeper: the pg_trgm extension could not be created (%): name search will scan every mother. Have a superuser run CREATE EXTENSION pg_trgm and CREATE INDEX mothers_name_trgm ON mothers USING gin (name gin_trgm_ops) in this database', SQLERRM;
END
$$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX mothers_name_trgm ON mothers USING gin (name gin_trgm_ops);
    END IF;
END
$$;
