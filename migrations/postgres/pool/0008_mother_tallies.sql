-- Tallies of mothers and children, so the stats, the quota and the mothers list's total read a few
-- rows instead of every mother (issue 18: at 1,000,000 mothers a scan of even the narrowest index
-- costs a few hundred milliseconds).
--
-- The tables hold deltas: triggers on `mothers` and `children` append one row per change (a new,
-- moved or deleted mother adds or removes her whole contribution; a seat change adds its
-- difference), so concurrent writers never wait on one shared row, as they would updating a
-- running total. A total is the SUM of its rows. Housekeeping folds the rows into one per
-- (status, group) now and then (`store::tallies::compact`); between folds the sums read a few
-- more rows.

CREATE TABLE mother_tallies (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status        TEXT NOT NULL,
    pool_group_id BIGINT,
    mothers       BIGINT NOT NULL,
    seats_total   BIGINT NOT NULL,
    seats_used    BIGINT NOT NULL,
    seats_held    BIGINT NOT NULL
);
CREATE INDEX mother_tallies_key ON mother_tallies (status, pool_group_id);

CREATE TABLE child_tallies (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    children BIGINT NOT NULL
);

INSERT INTO mother_tallies (status, pool_group_id, mothers, seats_total, seats_used, seats_held)
SELECT status, pool_group_id, COUNT(*), SUM(seat_limit), SUM(seats_used), SUM(seats_held)
FROM mothers GROUP BY status, pool_group_id;
INSERT INTO child_tallies (children) SELECT COUNT(*) FROM children;

-- Statement triggers with transition tables: a statement that changes many rows (an import, a
-- bulk move) adds one row per (status, group) it touched, not one per mother.
CREATE FUNCTION mothers_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mother_tallies (status, pool_group_id, mothers, seats_total, seats_used, seats_held)
    SELECT status, pool_group_id, SUM(mothers), SUM(seats_total), SUM(seats_used), SUM(seats_held)
    FROM (
        SELECT status, pool_group_id, 1 AS mothers, seat_limit AS seats_total, seats_used, seats_held
        FROM added
        UNION ALL
        SELECT status, pool_group_id, -1, -seat_limit, -seats_used, -seats_held FROM removed
    ) change
    GROUP BY status, pool_group_id
    HAVING SUM(mothers) <> 0 OR SUM(seats_total) <> 0 OR SUM(seats_used) <> 0
        OR SUM(seats_held) <> 0;
    RETURN NULL;
END
$$;

-- An insert or delete has one transition table, so it has its own function.
CREATE FUNCTION mothers_tally_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mother_tallies (status, pool_group_id, mothers, seats_total, seats_used, seats_held)
    SELECT status, pool_group_id, COUNT(*), SUM(seat_limit), SUM(seats_used), SUM(seats_held)
    FROM added GROUP BY status, pool_group_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION mothers_tally_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mother_tallies (status, pool_group_id, mothers, seats_total, seats_used, seats_held)
    SELECT status, pool_group_id, -COUNT(*), -SUM(seat_limit), -SUM(seats_used), -SUM(seats_held)
    FROM removed GROUP BY status, pool_group_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER mothers_tally_insert AFTER INSERT ON mothers
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION mothers_tally_insert();
CREATE TRIGGER mothers_tally_delete AFTER DELETE ON mothers
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION mothers_tally_delete();
CREATE TRIGGER mothers_tally_update AFTER UPDATE ON mothers
    REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION mothers_tally();

CREATE FUNCTION children_tally_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO child_tallies (children) SELECT COUNT(*) FROM added HAVING COUNT(*) > 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION children_tally_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO child_tallies (children) SELECT -COUNT(*) FROM removed HAVING COUNT(*) > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER children_tally_insert AFTER INSERT ON children
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION children_tally_insert();
CREATE TRIGGER children_tally_delete AFTER DELETE ON children
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION children_tally_delete();
