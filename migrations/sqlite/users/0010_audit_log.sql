-- The audit log: one append-only row per change made by a person or a token. Each row carries the
-- SHA-256 of the previous row (`prev_hash`) and its own (`hash`, over a canonical encoding that
-- `service::audit` defines), so `poolkeeper audit verify` finds a changed, removed or inserted row.
-- Appends are serialized by SQLite's single writer (`BEGIN IMMEDIATE`): read the head, insert after it.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,   -- assigned by the appender: the head's id + 1
    at          INTEGER NOT NULL,      -- UTC milliseconds
    actor       TEXT NOT NULL,         -- admin username, `token:<name>`, `cli:<os user>`, `system`
    address     TEXT NOT NULL,         -- client address, `local` for the CLI
    action      TEXT NOT NULL,         -- e.g. `mother.create`, `login.failure`
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    summary     TEXT NOT NULL,         -- JSON, secrets left out
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
    last_id   INTEGER NOT NULL,
    last_hash TEXT NOT NULL
);

-- The retention cleanup's gate. The cleanup inserts a row here, deletes old audit rows, moves the
-- anchor and removes the gate row again, all in one `BEGIN IMMEDIATE` transaction: no other
-- connection ever sees the gate open (the row is never committed), and SQLite's single writer
-- means nothing else writes while it is. Any other UPDATE or DELETE is refused by the triggers.
CREATE TABLE audit_purge_gate (open INTEGER NOT NULL);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: rows cannot be changed');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN NOT EXISTS (SELECT 1 FROM audit_purge_gate)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: rows are removed only by the retention cleanup');
END;

CREATE TRIGGER audit_anchor_no_insert BEFORE INSERT ON audit_anchor
WHEN NOT EXISTS (SELECT 1 FROM audit_purge_gate)
BEGIN
    SELECT RAISE(ABORT, 'the audit anchor is moved only by the retention cleanup');
END;

CREATE TRIGGER audit_anchor_no_update BEFORE UPDATE ON audit_anchor
WHEN NOT EXISTS (SELECT 1 FROM audit_purge_gate)
BEGIN
    SELECT RAISE(ABORT, 'the audit anchor is moved only by the retention cleanup');
END;

CREATE TRIGGER audit_anchor_no_delete BEFORE DELETE ON audit_anchor
BEGIN
    SELECT RAISE(ABORT, 'the audit anchor cannot be removed');
END;

-- Who queued a job (the audit log's actor name). `jobs` is a view over the hot `job_queue` and
-- `job_history`, whose rows move on every claim, finish and retry; the actor rides beside them in a
-- table of its own, written once when a person or token queues the job, so the queue's hot
-- statements stay as they are. No row: queued by the service itself (scheduled syncs).
CREATE TABLE job_actors (
    job_id TEXT PRIMARY KEY,
    actor  TEXT NOT NULL
);
