-- Tallies of mothers and children, so the stats, the quota and the mothers list's total read a few
-- rows instead of every mother (issue 18: at 1,000,000 mothers a scan of even the narrowest index
-- costs a few hundred milliseconds).
--
-- The tables hold deltas: triggers on `mothers` and `children` append one row per change (a new,
-- moved or deleted mother adds or removes her whole contribution; a seat change adds its
-- difference), so concurrent writers never wait on one shared row. A total is the SUM of its rows.
-- Housekeeping folds the rows into one per (status, group) now and then
-- (`store::tallies::compact`); between folds the sums read a few more rows.

CREATE TABLE mother_tallies (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    status        TEXT NOT NULL,
    pool_group_id INTEGER,
    mothers       INTEGER NOT NULL,
    seats_total   INTEGER NOT NULL,
    seats_used    INTEGER NOT NULL,
    seats_held    INTEGER NOT NULL
);
CREATE INDEX mother_tallies_key ON mother_tallies (status, pool_group_id);

CREATE TABLE child_tallies (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    children INTEGER NOT NULL
);

INSERT INTO mother_tallies (status, pool_group_id, mothers, seats_total, seats_used, seats_held)
SELECT status, pool_group_id, COUNT(*), SUM(seat_limit), SUM(seats_used), SUM(seats_held)
FROM mothers GROUP BY status, pool_group_id;
INSERT INTO child_tallies (children) SELECT COUNT(*) FROM children;

CREATE TRIGGER mothers_tally_insert AFTER INSERT ON mothers
BEGIN
    INSERT INTO mother_tallies (status, pool_group_id, mothers, seats_total, seats_used, seats_held)
    VALUES (NEW.status, NEW.pool_group_id, 1, NEW.seat_limit, NEW.seats_used, NEW.seats_held);
END;

CREATE TRIGGER mothers_tally_delete AFTER DELETE ON mothers
BEGIN
    INSERT INTO mother_tallies (status, pool_group_id, mothers, seats_total, seats_used, seats_held)
    VALUES (OLD.status, OLD.pool_group_id, -1, -OLD.seat_limit, -OLD.seats_used, -OLD.seats_held);
END;

-- A mother that changes status or group moves her whole contribution.
CREATE TRIGGER mothers_tally_move AFTER UPDATE OF status, pool_group_id ON mothers
WHEN OLD.status IS NOT NEW.status OR OLD.pool_group_id IS NOT NEW.pool_group_id
BEGIN
    INSERT INTO mother_tallies (status, pool_group_id, mothers, seats_total, seats_used, seats_held)
    VALUES (OLD.status, OLD.pool_group_id, -1, -OLD.seat_limit, -OLD.seats_used, -OLD.seats_held);
    INSERT INTO mother_tallies (status, pool_group_id, mothers, seats_total, seats_used, seats_held)
    VALUES (NEW.status, NEW.pool_group_id, 1, NEW.seat_limit, NEW.seats_used, NEW.seats_held);
END;

-- Seat counts changed in place: one row with the differences.
CREATE TRIGGER mothers_tally_seats AFTER UPDATE OF seat_limit, seats_used, seats_held ON mothers
WHEN OLD.status IS NEW.status AND OLD.pool_group_id IS NEW.pool_group_id
    AND (OLD.seat_limit IS NOT NEW.seat_limit OR OLD.seats_used IS NOT NEW.seats_used
         OR OLD.seats_held IS NOT NEW.seats_held)
BEGIN
    INSERT INTO mother_tallies (status, pool_group_id, mothers, seats_total, seats_used, seats_held)
    VALUES (NEW.status, NEW.pool_group_id, 0, NEW.seat_limit - OLD.seat_limit,
            NEW.seats_used - OLD.seats_used, NEW.seats_held - OLD.seats_held);
END;

CREATE TRIGGER children_tally_insert AFTER INSERT ON children
BEGIN
    INSERT INTO child_tallies (children) VALUES (1);
END;

CREATE TRIGGER children_tally_delete AFTER DELETE ON children
BEGIN
    INSERT INTO child_tallies (children) VALUES (-1);
END;
