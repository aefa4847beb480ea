-- The last successful sync of a group is the newest `last_synced_at` among its mothers; with this
-- index housekeeping reads it per group from the end of an index range (the alert gauge
-- `pool_group_last_sync_success_timestamp_seconds`) instead of reading every mother of the group.
CREATE INDEX mothers_group_synced ON mothers (pool_group_id, last_synced_at);
