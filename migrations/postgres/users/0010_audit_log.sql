-- The audit log: one append-only row per change made by a person or a token. Each row carries the
-- SHA-256 of the previous row (`prev_hash`) and its own (`hash`, over a canonical encoding that
-- `service::audit` defines), so `poolkeeper audit verify` finds a changed, removed or inserted row.
-- Appends are serialized by a transaction-level advisory lock (`pg_advisory_xact_lock`): read the
-- head, insert after it, commit; two writers never chain onto the same head.
CREATE TABLE audit_log (
    id          BIGINT PRIMARY KEY,    -- assigned by the appender: the head's id + 1
    at          BIGINT NOT NULL,       -- UTC milliseconds
    actor       TEXT NOT NULL,         -- admin username, `token:<name>`, `cli:<os user>`, `system`
    address     TEXT NOT NULL,         -- client address, `local` for the CLI
    action      TEXT NOT NULL,         -- e.g. `mother.create`, `login.failure`
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    summary     TEXT NOT NULL,         -- JSON as text (not jsonb: the hash covers these exact bytes)
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id);

-- What the retention cleanup removed last: the id and hash of the newest removed row, so the first
-- remaining row's `prev_hash` still has something to be checked against. At most one row.
CREATE TABLE audit_anchor (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    last_id   BIGINT NOT NULL,
    last_hash TEXT NOT NULL
);

-- The guard. UPDATE of an audit row is always refused; DELETE (and moving the anchor) only while the
-- transaction-local setting `poolkeeper.audit_purge` is `on`, which only `poolkeeper_audit_purge`
-- sets, with `set_config(..., true)`, so it ends with that function's transaction and no other
-- session sees it. TRUNCATE is refused outright. What this protects against: any route, any stray
-- statement in the application, an operator's mistaken `DELETE FROM audit_log` — every one fails
-- with an error naming the rule. What it cannot stop: a role that owns the table can drop the
-- triggers; that is why every row is also hash-chained, and `poolkeeper audit verify` names the
-- first row that no longer fits. Operators who want more give the service a role that does not
-- own these tables (GRANT SELECT, INSERT, and EXECUTE on the purge function, which is SECURITY
-- DEFINER so it runs as the owner).
CREATE FUNCTION poolkeeper_audit_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'audit_log' THEN
        RAISE EXCEPTION 'audit_log is append-only: rows cannot be changed';
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION '% cannot be truncated', TG_TABLE_NAME;
    END IF;
    IF coalesce(current_setting('poolkeeper.audit_purge', true), '') <> 'on' THEN
        RAISE EXCEPTION 'audit_log is append-only: rows are removed only by the retention cleanup (poolkeeper_audit_purge)';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_guard BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION poolkeeper_audit_guard();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION poolkeeper_audit_guard();
CREATE TRIGGER audit_anchor_guard BEFORE INSERT OR UPDATE OR DELETE ON audit_anchor
    FOR EACH ROW EXECUTE FUNCTION poolkeeper_audit_guard();
CREATE TRIGGER audit_anchor_no_truncate BEFORE TRUNCATE ON audit_anchor
    FOR EACH STATEMENT EXECUTE FUNCTION poolkeeper_audit_guard();

-- The retention cleanup: removes rows older than `cutoff` (UTC ms) except the newest row of all,
-- which always stays as the head the next append chains onto, and records the newest removed row
-- as the anchor. Takes the append lock, so no append runs meanwhile. Returns the rows removed.
CREATE FUNCTION poolkeeper_audit_purge(cutoff BIGINT, lock_key BIGINT) RETURNS BIGINT
SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    last_removed audit_log%ROWTYPE;
    removed BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT * INTO last_removed FROM audit_log
        WHERE at < cutoff AND id < (SELECT max(id) FROM audit_log)
        ORDER BY id DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    PERFORM set_config('poolkeeper.audit_purge', 'on', true);
    DELETE FROM audit_log WHERE id <= last_removed.id;
    GET DIAGNOSTICS removed = ROW_COUNT;
    INSERT INTO audit_anchor (singleton, last_id, last_hash)
        VALUES (1, last_removed.id, last_removed.hash)
        ON CONFLICT (singleton) DO UPDATE SET last_id = EXCLUDED.last_id, last_hash = EXCLUDED.last_hash;
    PERFORM set_config('poolkeeper.audit_purge', 'off', true);
    RETURN removed;
END;
$$ LANGUAGE plpgsql;

-- Who queued a job (the audit log's actor name). `jobs` is a view over the hot `job_queue` and
-- `job_history`, whose rows move on every claim, finish and retry; the actor rides beside them in a
-- table of its own, written once when a person or token queues the job, so the queue's hot
-- statements stay as they are. No row: queued by the service itself (scheduled syncs).
CREATE TABLE job_actors (
    job_id TEXT PRIMARY KEY,
    actor  TEXT NOT NULL
);
