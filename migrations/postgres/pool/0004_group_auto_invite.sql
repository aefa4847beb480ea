-- Per-group auto-invite: a pool sync of a mother in this group invites generated addresses into her
-- free seats when this is on, or when the instance-wide pool_auto_invite_missing is.
ALTER TABLE pool_group_settings ADD COLUMN auto_invite BOOLEAN NOT NULL DEFAULT FALSE;
