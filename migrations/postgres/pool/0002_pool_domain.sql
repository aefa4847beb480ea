-- The pool domain: groups and their naming settings, daily name sequences, mother accounts with
-- their teams, seats and children. Times are UTC milliseconds since the epoch.

CREATE TABLE pool_groups (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- One row per group, created with it.
CREATE TABLE pool_group_settings (
    group_id             BIGINT PRIMARY KEY REFERENCES pool_groups(id) ON DELETE CASCADE,
    team_template        TEXT NOT NULL,
    child_name_template  TEXT NOT NULL,
    child_email_template TEXT NOT NULL,
    email_domain         TEXT,
    is_active            BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at           BIGINT NOT NULL
);

-- Last number handed out per (group, UTC day, kind); allocation is one upsert statement.
CREATE TABLE daily_sequences (
    group_id   BIGINT NOT NULL REFERENCES pool_groups(id) ON DELETE CASCADE,
    day        TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('team', 'child')),
    last_value BIGINT NOT NULL,
    PRIMARY KEY (group_id, day, kind)
);

-- seats_used / seats_held mirror the seats table; store::seats keeps them in step in the same
-- transaction as every seat change, so lists and stats never aggregate the seats table.
CREATE TABLE mothers (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    provider          TEXT NOT NULL CHECK (provider IN ('sim', 'scim')),
    provider_config   TEXT NOT NULL DEFAULT '{}',
    credential_sealed TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'invalid', 'disabled')),
    seat_limit        BIGINT NOT NULL CHECK (seat_limit >= 0),
    seats_used        BIGINT NOT NULL DEFAULT 0,
    seats_held        BIGINT NOT NULL DEFAULT 0,
    pool_group_id     BIGINT REFERENCES pool_groups(id),
    notes             TEXT NOT NULL DEFAULT '',
    last_synced_at    BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX mothers_status ON mothers (status, id);
-- Covers the stats and quota queries, so they read this index instead of whole mother rows.
CREATE INDEX mothers_seat_counters ON mothers (status, pool_group_id, seat_limit, seats_used, seats_held);
CREATE INDEX mothers_group ON mothers (pool_group_id, id);

CREATE TABLE teams (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mother_id        BIGINT NOT NULL REFERENCES mothers(id) ON DELETE CASCADE,
    provider_team_id TEXT,
    name             TEXT NOT NULL,
    is_enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    is_default       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL,
    UNIQUE (mother_id, name)
);
-- At most one default team per mother.
CREATE UNIQUE INDEX teams_one_default ON teams (mother_id) WHERE is_default;

CREATE TABLE seats (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mother_id    BIGINT NOT NULL REFERENCES mothers(id) ON DELETE CASCADE,
    seat_no      BIGINT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'free' CHECK (status IN ('free', 'held', 'used')),
    holder_email TEXT,
    held_until   BIGINT,
    updated_at   BIGINT NOT NULL,
    UNIQUE (mother_id, seat_no)
);
CREATE INDEX seats_mother_status ON seats (mother_id, status, seat_no);

CREATE TABLE children (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mother_id  BIGINT NOT NULL REFERENCES mothers(id) ON DELETE CASCADE,
    team_id    BIGINT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    email      TEXT NOT NULL,
    name       TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL DEFAULT 'active',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (mother_id, team_id, email)
);
