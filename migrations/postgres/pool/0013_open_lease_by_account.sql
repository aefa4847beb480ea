-- Nothing to do on PostgreSQL. SQLite's version adds an index of the open lease of each account, for
-- its claims; a claim here reads the account's current_lease_id before updating the row, in the
-- same statement, and needs no index for it. (Both folders list the same versions.)
SELECT 1;
