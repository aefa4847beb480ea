-- Missions: work requests grouped by a mission key (for example a region), each mission run by one
-- worker at a time with one leased credential account. Times are UTC milliseconds since the epoch.
--
-- `mission_key` is the mission name lower-cased (by poolkeeper, the same on both backends), so
-- `de` and `DE` are one mission. A claim holds a `slot` (1..missions.max_concurrent) while it runs
-- and gives it up (NULL) when it ends; the two partial unique indexes are the database's guarantee
-- that one mission never runs twice at once and that no more claims run than there are slots.

CREATE TABLE mission_claims (
    id              TEXT PRIMARY KEY,
    mission         TEXT NOT NULL,
    mission_key     TEXT NOT NULL,
    slot            INTEGER CHECK (slot IS NULL OR slot >= 1),
    status          TEXT NOT NULL CHECK (status IN ('running', 'completed', 'expired')),
    worker          TEXT NOT NULL,
    holder_token_id INTEGER NOT NULL,
    -- The claim lasts as long as this lease is open and unexpired (no foreign key: a lease goes
    -- with a deleted account, and the claim then counts as expired).
    lease_id        TEXT NOT NULL,
    result          TEXT,
    claimed_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    CHECK ((status = 'running') = (slot IS NOT NULL))
);
CREATE UNIQUE INDEX mission_claims_one_run_per_mission ON mission_claims (mission_key) WHERE slot IS NOT NULL;
CREATE UNIQUE INDEX mission_claims_one_run_per_slot ON mission_claims (slot) WHERE slot IS NOT NULL;

CREATE TABLE mission_requests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    mission     TEXT NOT NULL,
    mission_key TEXT NOT NULL,
    payload     TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'claimed', 'done', 'failed')),
    -- The claim that holds (or finished) the request; NULL while pending.
    claim_id    TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    result      TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER,
    CHECK ((status = 'pending') = (claim_id IS NULL))
);
CREATE INDEX mission_requests_pending ON mission_requests (mission_key, id) WHERE status = 'pending';
CREATE INDEX mission_requests_pending_order ON mission_requests (id) WHERE status = 'pending';
CREATE INDEX mission_requests_claim ON mission_requests (claim_id);
