-- An acquire lends the available account that comes first in `domain::leases::selection_order`:
-- never used, then fewest uses, then least recently used, then lowest id. An account is never used
-- exactly when its `total_uses` is 0 (the claim sets `last_used_at` and counts the use in one
-- statement), so that order is (total_uses, last_used_at, id), and with this index the claim walks
-- a pool's accounts in it and stops at the first available one, instead of sorting the pool's
-- accounts on every acquire. Lent and resting accounts were used last and sit near the end.
DROP INDEX credential_accounts_pick;
CREATE INDEX credential_accounts_pick ON credential_accounts (pool, total_uses, last_used_at, id);

-- The accounts lent right now, by lease: an acquire's insert finds its account here (SQLite has no
-- data-modifying WITH to hand the claimed row over; see store::leases::acquire_sql).
CREATE INDEX credential_accounts_leased ON credential_accounts (current_lease_id)
    WHERE current_lease_id IS NOT NULL;
