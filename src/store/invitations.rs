//! Invitations a pool sync sends (pool database): reserved first (the child `inviting`, a seat
//! held), then confirmed with what the provider said. Reserving before sending means a run killed
//! in between sends the same addresses again instead of new ones. Seats change only through the
//! statements `seats` shares, in the same transaction as the mother's counters.

use super::seats::{HOLD_LOWEST_FREE, RECOUNT};
use super::{StoreError, StoreResult};
use crate::db::{PoolDb, in_transaction, on_reader};

/// The status of a child whose invitation sync reserved but has not confirmed with the provider
/// yet (a run killed in between leaves it; the next run sends it again). See
/// [`reserve_invites`].
pub const INVITING: &str = "inviting";

/// A mother's children still [`INVITING`]: `(team_id, email, name)`.
pub async fn unconfirmed_invites(
    db: &PoolDb,
    mother_id: i64,
) -> StoreResult<Vec<(i64, String, String)>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT team_id, email, name FROM children WHERE mother_id = $1 AND status = $2 ORDER BY id"
    )
    .bind(mother_id)
    .bind(INVITING)
    .fetch_all(p)
    .await)?)
}

/// An invitation sync is about to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInvite {
    pub email: String,
    pub name: String,
}

/// Records invitations before they are sent, in one transaction: each address becomes a child
/// `inviting` in `team_id` and holds the lowest free seat until `held_until`. Only as many as
/// there are free seats are taken; returns those, in order.
pub async fn reserve_invites(
    db: &PoolDb,
    mother_id: i64,
    team_id: i64,
    invites: &[NewInvite],
    held_until: i64,
    now: i64,
) -> StoreResult<Vec<NewInvite>> {
    if invites.is_empty() {
        return Ok(Vec::new());
    }
    in_transaction!(db, |tx| {
        // The mother's row first (see the module notes); then how many seats are free.
        let free: Option<i64> = sqlx::query_scalar(
            "UPDATE mothers SET updated_at = $2 WHERE id = $1 \
             RETURNING seat_limit - seats_used - seats_held",
        )
        .bind(mother_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let free = usize::try_from(free.ok_or(StoreError::NotFound)?.max(0)).unwrap_or(0);
        let taken: Vec<NewInvite> = invites.iter().take(free).cloned().collect();
        for invite in &taken {
            sqlx::query(
                "INSERT INTO children (mother_id, team_id, email, name, status, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 ON CONFLICT (mother_id, team_id, email) DO NOTHING",
            )
            .bind(mother_id)
            .bind(team_id)
            .bind(&invite.email)
            .bind(&invite.name)
            .bind(INVITING)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(HOLD_LOWEST_FREE)
                .bind(mother_id)
                .bind(&invite.email)
                .bind(held_until)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        if !taken.is_empty() {
            sqlx::query(RECOUNT)
                .bind(mother_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(taken)
    })
}

/// What the provider said of a reserved invitation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InviteOutcome {
    /// Pending: the child is `invited` and keeps her held seat.
    Invited,
    /// Added directly: the child is `active` and her seat `used`.
    Added,
    /// Not sent (the team is full or gone): the reserved child is deleted and her seat freed.
    Dropped,
}

/// Records what became of reserved invitations of `team_id`, in one transaction.
pub async fn confirm_invites(
    db: &PoolDb,
    mother_id: i64,
    team_id: i64,
    outcomes: &[(String, InviteOutcome)],
    now: i64,
) -> StoreResult<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    in_transaction!(db, |tx| {
        sqlx::query("UPDATE mothers SET updated_at = $2 WHERE id = $1")
            .bind(mother_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        for (email, outcome) in outcomes {
            let (child, seat) = match outcome {
                InviteOutcome::Invited => (Some("invited"), None),
                InviteOutcome::Added => (Some("active"), Some("used")),
                InviteOutcome::Dropped => (None, Some("free")),
            };
            let statement = if child.is_some() {
                "UPDATE children SET status = $5, updated_at = $6 \
                 WHERE mother_id = $1 AND team_id = $2 AND email = $3 AND status = $4"
            } else {
                // Never sent: the reservation leaves no child behind.
                "DELETE FROM children \
                 WHERE mother_id = $1 AND team_id = $2 AND email = $3 AND status = $4"
            };
            let mut change = sqlx::query(statement)
                .bind(mother_id)
                .bind(team_id)
                .bind(email)
                .bind(INVITING);
            if let Some(status) = child {
                change = change.bind(status).bind(now);
            }
            change.execute(&mut *tx).await?;
            if let Some(seat) = seat {
                sqlx::query(
                    "UPDATE seats SET status = $3, held_until = NULL, updated_at = $4, \
                     holder_email = CASE WHEN $3 = 'free' THEN NULL ELSE holder_email END \
                     WHERE mother_id = $1 AND holder_email = $2 AND status = 'held'",
                )
                .bind(mother_id)
                .bind(email)
                .bind(seat)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(RECOUNT)
            .bind(mother_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    })
}
