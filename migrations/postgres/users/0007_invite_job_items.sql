-- What each bulk invite job (users_resend, users_cancel, users_remove) did to each invite it was
-- given. A row is written in the same transaction as the invite's change, so a retried job skips
-- the invites it already finished and its result lists every item once.
CREATE TABLE invite_job_items (
    job_id     TEXT NOT NULL,
    invite_id  BIGINT NOT NULL,
    result     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, invite_id)
);

-- A mother's sync marks her `sent` invites accepted by address.
CREATE INDEX invites_mother_status ON invites (mother_id, status);
