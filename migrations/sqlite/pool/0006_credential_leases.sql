-- Credential pools: accounts that automation workers lease one at a time, their leases and the usage
-- log (one row per finished lease). Times are UTC milliseconds since the epoch.
--
-- Availability is computed from timestamps when a query runs: an account is available when it is
-- active, not leased (or its lease expired at least one cooldown ago), and its cooldown and
-- quarantine are over. `leased_until` mirrors the expiry of the account's open lease, so choosing
-- an account reads only this table.

CREATE TABLE credential_accounts (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    pool                 TEXT NOT NULL DEFAULT 'default',
    login                TEXT NOT NULL,
    password_sealed      TEXT NOT NULL,
    phone                TEXT,
    metadata             TEXT NOT NULL DEFAULT '{}',
    is_active            BOOLEAN NOT NULL DEFAULT TRUE,
    last_used_at         INTEGER,
    cooldown_until       INTEGER,
    quarantine_until     INTEGER,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    total_uses           INTEGER NOT NULL DEFAULT 0,
    total_successes      INTEGER NOT NULL DEFAULT 0,
    current_lease_id     TEXT,
    leased_until         INTEGER,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    UNIQUE (pool, login)
);
CREATE INDEX credential_accounts_pick ON credential_accounts (pool, is_active, last_used_at, total_uses, id);

CREATE TABLE credential_leases (
    id               TEXT PRIMARY KEY,
    account_id       INTEGER NOT NULL REFERENCES credential_accounts(id) ON DELETE CASCADE,
    pool             TEXT NOT NULL,
    worker           TEXT NOT NULL,
    holder_token_id  INTEGER NOT NULL,
    mission          TEXT,
    acquired_at      INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    released_at      INTEGER,
    renewals         INTEGER NOT NULL DEFAULT 0,
    result           TEXT CHECK (result IN ('success', 'no_slot', 'login_fail', 'error', 'banned', 'expired'))
);
CREATE INDEX credential_leases_open ON credential_leases (expires_at) WHERE released_at IS NULL;
CREATE INDEX credential_leases_account ON credential_leases (account_id, acquired_at);

-- No foreign key to the account: the log outlives a deleted account (login is copied).
CREATE TABLE credential_usage (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id    INTEGER NOT NULL,
    login         TEXT NOT NULL,
    pool          TEXT NOT NULL,
    lease_id      TEXT NOT NULL UNIQUE,
    mission       TEXT,
    result        TEXT NOT NULL,
    error_message TEXT,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL
);
CREATE INDEX credential_usage_finished ON credential_usage (finished_at);
CREATE INDEX credential_usage_account ON credential_usage (account_id, finished_at);
