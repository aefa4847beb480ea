-- Claims as HOT updates. A claim rewrites each claimed row (status, attempts, lock); when no indexed
-- column changes and the page has room, PostgreSQL keeps the new row version on the same page and
-- adds no index entries (a heap-only tuple). Before this, `status` in the partial indexes'
-- predicates and the indexed lock columns made every claim insert a primary-key and a
-- running-index entry per job, the largest single cost of a drain.
--
-- - The ready index covers every live job; claims skip the running ones at its head (at most the
--   jobs runners hold) by their status.
-- - No index on the lock columns: heartbeats find their jobs by id, and the rescue of expired
--   locks, which reads the live queue, runs at a tenth of the visibility timeout.
-- - Pages are filled to half, so the new version of a claimed row fits beside the old one.
--
-- SQLite has no such update path: it keeps its partial ready index and drops the running one (its
-- migration 0004).
DROP INDEX job_queue_running;
DROP INDEX job_queue_ready;
CREATE INDEX job_queue_ready ON job_queue (priority DESC, run_at, id);
ALTER TABLE job_queue SET (fillfactor = 50);
