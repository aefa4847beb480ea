-- The dashboard's figures over the last 24 hours read ranges of these indexes instead of scanning
-- every finished job or every code: jobs finished per hour (and failed), codes redeemed.
CREATE INDEX job_history_finished ON job_history (finished_at, status);
CREATE INDEX redeem_codes_used ON redeem_codes (used_at) WHERE used_at IS NOT NULL;
