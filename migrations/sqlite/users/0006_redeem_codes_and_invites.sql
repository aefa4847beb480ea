-- Redeem codes and the invites they lead to. Only a SHA-256 of each code is stored; `prefix` keeps
-- its first characters for display and search. A code moves unused -> reserved (a redeem is under
-- way, until `reserved_until`) -> used, or back to unused when the redeem fails; `expired` and
-- `disabled` are final. `pool_group_id`, `mother_id` and `team_id` name pool-database rows (no
-- foreign keys across the two databases). Times are UTC milliseconds since the epoch.
CREATE TABLE redeem_codes (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    code_hash         TEXT NOT NULL UNIQUE,
    prefix            TEXT NOT NULL,
    batch_id          TEXT NOT NULL,
    pool_group_id     INTEGER,
    status            TEXT NOT NULL DEFAULT 'unused'
                      CHECK (status IN ('unused', 'reserved', 'used', 'expired', 'disabled')),
    expires_at        INTEGER,
    reserved_by_email TEXT,
    reserved_until    INTEGER,
    used_by_email     TEXT,
    used_at           INTEGER,
    mother_id         INTEGER,
    team_id           INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX redeem_codes_status ON redeem_codes (status, id);
CREATE INDEX redeem_codes_batch ON redeem_codes (batch_id, id);
CREATE INDEX redeem_codes_group_status ON redeem_codes (pool_group_id, status);

-- One row per invite sent for a redeem (and, later, resent, cancelled or removed in bulk).
CREATE TABLE invites (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    email              TEXT NOT NULL,
    code_id            INTEGER REFERENCES redeem_codes(id),
    mother_id          INTEGER NOT NULL,
    team_id            INTEGER NOT NULL,
    seat_id            INTEGER,
    status             TEXT NOT NULL
                       CHECK (status IN ('pending', 'sent', 'accepted', 'failed', 'cancelled', 'removed')),
    provider_invite_id TEXT,
    attempts           INTEGER NOT NULL DEFAULT 0,
    last_error         TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX invites_status ON invites (status, id);
CREATE INDEX invites_code ON invites (code_id);
CREATE INDEX invites_email ON invites (email);
