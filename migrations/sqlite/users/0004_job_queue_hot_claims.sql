-- No index on the lock columns. Every claim added an entry for its job to this index and every
-- completion removed it again: two b-tree changes per job on the single writer, for the sake of
-- heartbeats, which now find their jobs by id, and of the rescue of expired locks, which now runs
-- at a tenth of the visibility timeout and reads the live queue. (PostgreSQL's migration 0004 drops
-- it too, so that its claims become HOT updates.) The partial ready index stays: on SQLite a claim
-- that leaves it pays one b-tree change, and the next claim finds no running job in its way.
DROP INDEX job_queue_running;
