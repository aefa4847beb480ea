-- The open lease of an account, if any. A claim looks for it (an expired lease still open on the
-- account it takes over) through this index, which holds only open leases, instead of walking all
-- the leases the account ever had through credential_leases_account.
CREATE INDEX credential_leases_open_account ON credential_leases (account_id)
    WHERE released_at IS NULL;
