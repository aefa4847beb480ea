-- The lease list (`GET /api/admin/leases`, the console's accounts page) shows leases newest first.
-- Without an index in that order every page sorted the whole lease table, which gains a row per
-- lease for as long as poolkeeper runs; with it a page reads its rows from the newest end. (Open
-- leases only are read through credential_leases_open.)
CREATE INDEX credential_leases_newest ON credential_leases (acquired_at, id);
