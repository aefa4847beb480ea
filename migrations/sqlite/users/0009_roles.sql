-- Roles (issue 16): every admin user has a role, existing ones stay `admin`; a disabled admin
-- cannot log in and their sessions stop working. Tokens gain the scopes `operator` and `viewer`.
ALTER TABLE admin_users ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
    CHECK (role IN ('admin', 'operator', 'viewer'));
ALTER TABLE admin_users ADD COLUMN disabled_at INTEGER;

-- SQLite cannot change a CHECK constraint in place: rebuild api_tokens (nothing references it).
CREATE TABLE api_tokens_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('admin', 'operator', 'viewer', 'worker')),
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
INSERT INTO api_tokens_new (id, name, scope, token_hash, created_at, last_used_at, revoked_at)
    SELECT id, name, scope, token_hash, created_at, last_used_at, revoked_at FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;
