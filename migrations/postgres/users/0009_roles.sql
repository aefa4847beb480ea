-- Roles (issue 16): every admin user has a role, existing ones stay `admin`; a disabled admin
-- cannot log in and their sessions stop working. Tokens gain the scopes `operator` and `viewer`.
ALTER TABLE admin_users ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
    CHECK (role IN ('admin', 'operator', 'viewer'));
ALTER TABLE admin_users ADD COLUMN disabled_at BIGINT;

ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_scope_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scope_check
    CHECK (scope IN ('admin', 'operator', 'viewer', 'worker'));
