-- Redeem codes and the invites they lead to. Only a SHA-256 of each code is stored; `prefix` keeps
-- its first characters for display and search. A code moves unused -> reserved (a redeem is under
-- way, until `reserved_until`) -> used, or back to unused when the redeem fails; `expired` and
-- `disabled` are final. `pool_group_id`, `mother_id` and `team_id` name pool-database rows (no
-- foreign keys across the two databases). Times are UTC milliseconds since the epoch.
CREATE TABLE redeem_codes (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code_hash         TEXT NOT NULL UNIQUE,
    prefix            TEXT NOT NULL,
    batch_id          TEXT NOT NULL,
    pool_group_id     BIGINT,
    status            TEXT NOT NULL DEFAULT 'unused'
                      CHECK (status IN ('unused', 'reserved', 'used', 'expired', 'disabled')),
    expires_at        BIGINT,
    reserved_by_email TEXT,
    reserved_until    BIGINT,
    used_by_email     TEXT,
    used_at           BIGINT,
    mother_id         BIGINT,
    team_id           BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX redeem_codes_status ON redeem_codes (status, id);
CREATE INDEX redeem_codes_batch ON redeem_codes (batch_id, id);
CREATE INDEX redeem_codes_group_status ON redeem_codes (pool_group_id, status);

-- One row per invite sent for a redeem (and, later, resent, cancelled or removed in bulk).
CREATE TABLE invites (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email              TEXT NOT NULL,
    code_id            BIGINT REFERENCES redeem_codes(id),
    mother_id          BIGINT NOT NULL,
    team_id            BIGINT NOT NULL,
    seat_id            BIGINT,
    status             TEXT NOT NULL
                       CHECK (status IN ('pending', 'sent', 'accepted', 'failed', 'cancelled', 'removed')),
    provider_invite_id TEXT,
    attempts           BIGINT NOT NULL DEFAULT 0,
    last_error         TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX invites_status ON invites (status, id);
CREATE INDEX invites_code ON invites (code_id);
CREATE INDEX invites_email ON invites (email);
