-- Nothing to change on SQLite: PostgreSQL's migration 0004 makes its claims HOT updates, which
-- SQLite does not have; its partial ready and running indexes stay. This file keeps the two
-- backends' migration versions in step.
SELECT 1;
