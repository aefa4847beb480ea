-- The pool domain: groups and their naming settings, daily name sequences, mother accounts with
-- their teams, seats and children. Times are UTC milliseconds since the epoch.

CREATE TABLE pool_groups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- One row per group, created with it.
CREATE TABLE pool_group_settings (
    group_id             INTEGER PRIMARY KEY REFERENCES pool_groups(id) ON DELETE CASCADE,
    team_template        TEXT NOT NULL,
    child_name_template  TEXT NOT NULL,
    child_email_template TEXT NOT NULL,
    email_domain         TEXT,
    is_active            INTEGER NOT NULL DEFAULT 1,
    updated_at           INTEGER NOT NULL
);

-- Last number handed out per (group, UTC day, kind); allocation is one upsert statement.
CREATE TABLE daily_sequences (
    group_id   INTEGER NOT NULL REFERENCES pool_groups(id) ON DELETE CASCADE,
    day        TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('team', 'child')),
    last_value INTEGER NOT NULL,
    PRIMARY KEY (group_id, day, kind)
);

-- seats_used / seats_held mirror the seats table; store::seats keeps them in step in the same
-- transaction as every seat change, so lists and stats never aggregate the seats table.
CREATE TABLE mothers (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT NOT NULL UNIQUE,
    provider          TEXT NOT NULL CHECK (provider IN ('sim', 'scim')),
    provider_config   TEXT NOT NULL DEFAULT '{}',
    credential_sealed TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'invalid', 'disabled')),
    seat_limit        INTEGER NOT NULL CHECK (seat_limit >= 0),
    seats_used        INTEGER NOT NULL DEFAULT 0,
    seats_held        INTEGER NOT NULL DEFAULT 0,
    pool_group_id     INTEGER REFERENCES pool_groups(id),
    notes             TEXT NOT NULL DEFAULT '',
    last_synced_at    INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX mothers_status ON mothers (status, id);
-- Covers the stats and quota queries, so they read this index instead of whole mother rows.
CREATE INDEX mothers_seat_counters ON mothers (status, pool_group_id, seat_limit, seats_used, seats_held);
CREATE INDEX mothers_group ON mothers (pool_group_id, id);
-- A narrow copy of the row ids: deep pages (`ORDER BY id DESC ... OFFSET n`) skip through this small
-- index instead of the wide table rows.
CREATE INDEX mothers_id ON mothers (id);

-- Name search ("contains", case-insensitive) through a trigram index instead of scanning every name.
-- An external-content FTS5 table: it stores only the index, kept in step by the triggers below.
CREATE VIRTUAL TABLE mothers_name_search USING fts5(name, content = 'mothers', content_rowid = 'id', tokenize = 'trigram');
CREATE TRIGGER mothers_name_search_insert AFTER INSERT ON mothers BEGIN
    INSERT INTO mothers_name_search (rowid, name) VALUES (new.id, new.name);
END;
CREATE TRIGGER mothers_name_search_delete AFTER DELETE ON mothers BEGIN
    INSERT INTO mothers_name_search (mothers_name_search, rowid, name) VALUES ('delete', old.id, old.name);
END;
CREATE TRIGGER mothers_name_search_update AFTER UPDATE OF name ON mothers BEGIN
    INSERT INTO mothers_name_search (mothers_name_search, rowid, name) VALUES ('delete', old.id, old.name);
    INSERT INTO mothers_name_search (rowid, name) VALUES (new.id, new.name);
END;

CREATE TABLE teams (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    mother_id        INTEGER NOT NULL REFERENCES mothers(id) ON DELETE CASCADE,
    provider_team_id TEXT,
    name             TEXT NOT NULL,
    is_enabled       INTEGER NOT NULL DEFAULT 1,
    is_default       INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    UNIQUE (mother_id, name)
);
-- At most one default team per mother.
CREATE UNIQUE INDEX teams_one_default ON teams (mother_id) WHERE is_default = 1;

CREATE TABLE seats (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    mother_id    INTEGER NOT NULL REFERENCES mothers(id) ON DELETE CASCADE,
    seat_no      INTEGER NOT NULL,
    status       TEXT NOT NULL DEFAULT 'free' CHECK (status IN ('free', 'held', 'used')),
    holder_email TEXT,
    held_until   INTEGER,
    updated_at   INTEGER NOT NULL,
    UNIQUE (mother_id, seat_no)
);
CREATE INDEX seats_mother_status ON seats (mother_id, status, seat_no);

CREATE TABLE children (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    mother_id  INTEGER NOT NULL REFERENCES mothers(id) ON DELETE CASCADE,
    team_id    INTEGER NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    email      TEXT NOT NULL,
    name       TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL DEFAULT 'active',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (mother_id, team_id, email)
);
