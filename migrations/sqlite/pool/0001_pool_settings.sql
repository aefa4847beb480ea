-- Instance-wide pool settings as key/value pairs (JSON values). Pool groups, mothers, seats and
-- the rest of the pool domain arrive in later migrations.
CREATE TABLE pool_settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
