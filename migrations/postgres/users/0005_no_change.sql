-- Nothing changes in the users database at version 5; this file keeps the version numbers of the
-- four migration folders in step (the pool database's 0005 adds sync session counters and the name
-- search index).
SELECT 1;
