-- When a pool group's free seats last fell below `webhooks_free_seats_threshold`; NULL while they
-- are at or above it. Set by one conditional UPDATE (only from NULL), so of several processes
-- checking at once exactly one sees the crossing and raises `pool_below_threshold`; cleared when
-- the seats are back.
ALTER TABLE pool_groups ADD COLUMN seats_low_since INTEGER;
