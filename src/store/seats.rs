//! Seats (pool database): exactly `seat_limit` rows per mother, each `free`, `held` or `used`.
//!
//! Only this module's statements write `seats` (`invitations` reserves seats through them), and
//! every statement that changes a seat's status
//! also changes the mother's `seats_used` / `seats_held` counters in the same transaction, so lists
//! and stats read the counters instead of aggregating seats. The counter update comes first: on
//! PostgreSQL it locks the mother's row, which serialises all seat changes of one mother.

use serde::Serialize;
use sqlx::FromRow;

use super::mothers::Reach;
use super::{StoreError, StoreResult};
use crate::db::{Backend, PoolDb, in_transaction, on_reader};
use crate::domain::seats::{SeatChange, SeatPlan, SeatView, SeatWant, plan_seats};

#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct Seat {
    pub id: i64,
    pub mother_id: i64,
    pub seat_no: i64,
    /// `free`, `held` or `used`.
    pub status: String,
    pub holder_email: Option<String>,
    pub held_until: Option<i64>,
    pub updated_at: i64,
}

pub(crate) const COLUMNS: &str =
    "id, mother_id, seat_no, status, holder_email, held_until, updated_at";

/// Adds free seats numbered `$2..=$3` to mother `$1` (used by mothers' create and resize).
pub(crate) const ADD_FREE_SEATS: &str = "WITH RECURSIVE n(i) AS (SELECT CAST($2 AS BIGINT) \
    UNION ALL SELECT i + 1 FROM n WHERE i < $3) \
    INSERT INTO seats (mother_id, seat_no, status, updated_at) SELECT $1, i, 'free', $4 FROM n";

/// Removes the `$2` highest-numbered free seats of mother `$1`.
pub(crate) const REMOVE_FREE_SEATS: &str = "DELETE FROM seats WHERE id IN (SELECT id FROM seats \
    WHERE mother_id = $1 AND status = 'free' ORDER BY seat_no DESC LIMIT $2)";

/// Marks the lowest-numbered free seat of a mother used by `email`. `Conflict` when she has no
/// free seat, `NotFound` when there is no such mother. (Invites arrive in a later issue; tests and
/// sync use this to record members.)
pub async fn mark_used(db: &PoolDb, mother_id: i64, email: &str, now: i64) -> StoreResult<Seat> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE seats SET status = 'used', holder_email = $2, held_until = NULL, updated_at = $3 \
         WHERE id = (SELECT id FROM seats WHERE mother_id = $1 AND status = 'free' \
         ORDER BY seat_no LIMIT 1) RETURNING {COLUMNS}"
    ));
    in_transaction!(db, |tx| {
        let n = sqlx::query(
            "UPDATE mothers SET seats_used = seats_used + 1, updated_at = $2 \
             WHERE id = $1 AND seat_limit - seats_used - seats_held > 0",
        )
        .bind(mother_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM mothers WHERE id = $1")
                .bind(mother_id)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match exists {
                Some(_) => StoreError::Conflict(format!("mother {mother_id} has no free seat")),
                None => StoreError::NotFound,
            });
        }
        let seat: Seat = sqlx::query_as(sql)
            .bind(mother_id)
            .bind(email)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(seat)
    })
}

/// Frees a used or held seat.
pub async fn release(db: &PoolDb, seat_id: i64, now: i64) -> StoreResult<Seat> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE seats SET status = 'free', holder_email = NULL, held_until = NULL, updated_at = $2 \
         WHERE id = $1 RETURNING {COLUMNS}"
    ));
    in_transaction!(db, |tx| {
        // Lock the mother's row first (see the module notes), then read the seat's status.
        sqlx::query(
            "UPDATE mothers SET updated_at = $2 WHERE id = (SELECT mother_id FROM seats WHERE id = $1)",
        )
        .bind(seat_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let status: Option<(i64, String)> =
            sqlx::query_as("SELECT mother_id, status FROM seats WHERE id = $1")
                .bind(seat_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((mother_id, status)) = status else {
            return Err(StoreError::NotFound);
        };
        let counter = match status.as_str() {
            "used" => "seats_used = seats_used - 1",
            "held" => "seats_held = seats_held - 1",
            _ => {
                return Err(StoreError::Conflict(format!(
                    "seat {seat_id} is already free"
                )));
            }
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE mothers SET {counter}, updated_at = $2 WHERE id = $1"
        )))
        .bind(mother_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let seat: Seat = sqlx::query_as(sql)
            .bind(seat_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(seat)
    })
}

/// Recounts the mother's `seats_used` / `seats_held` from her seats (inside a seat transaction).
pub(super) const RECOUNT: &str = "UPDATE mothers SET \
    seats_used = (SELECT COUNT(*) FROM seats WHERE mother_id = $1 AND status = 'used'), \
    seats_held = (SELECT COUNT(*) FROM seats WHERE mother_id = $1 AND status = 'held'), \
    updated_at = $2 WHERE id = $1";

/// Makes the mother's seats follow her members (see [`plan_seats`]) in one transaction; the plan
/// is made from the seats as read inside it. Held seats get `held_until`. Returns the plan applied.
pub async fn follow_members(
    db: &PoolDb,
    mother_id: i64,
    wanted: &[(String, SeatWant)],
    held_until: i64,
    now: i64,
) -> StoreResult<SeatPlan> {
    in_transaction!(db, |tx| {
        // Lock the mother's row first (see the module notes).
        let n = sqlx::query("UPDATE mothers SET updated_at = $2 WHERE id = $1")
            .bind(mother_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        let rows: Vec<(i64, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT id, seat_no, status, holder_email FROM seats WHERE mother_id = $1 ORDER BY seat_no",
        )
        .bind(mother_id)
        .fetch_all(&mut *tx)
        .await?;
        let seats: Vec<SeatView> = rows
            .into_iter()
            .map(|(id, seat_no, status, holder_email)| SeatView {
                id,
                seat_no,
                status,
                holder_email,
            })
            .collect();
        let plan = plan_seats(&seats, wanted);
        for change in &plan.changes {
            match change {
                SeatChange::Assign {
                    seat_id,
                    email,
                    want,
                } => {
                    let until = (*want == SeatWant::Held).then_some(held_until);
                    sqlx::query(
                        "UPDATE seats SET status = $2, holder_email = $3, \
                         held_until = CASE WHEN $2 = 'held' THEN COALESCE(held_until, $4) ELSE NULL END, \
                         updated_at = $5 WHERE id = $1",
                    )
                    .bind(seat_id)
                    .bind(want.as_str())
                    .bind(email)
                    .bind(until)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                SeatChange::Release { seat_id } => {
                    sqlx::query(
                        "UPDATE seats SET status = 'free', holder_email = NULL, held_until = NULL, \
                         updated_at = $2 WHERE id = $1",
                    )
                    .bind(seat_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        if !plan.changes.is_empty() {
            sqlx::query(RECOUNT)
                .bind(mother_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(plan)
    })
}

/// Holds mother `$1`'s lowest-numbered free seat for `$2` until `$3` (at time `$4`). The caller
/// changes the mother's counters.
pub(super) const HOLD_LOWEST_FREE: &str = "UPDATE seats SET status = 'held', holder_email = $2, \
    held_until = $3, updated_at = $4 WHERE id = (SELECT id FROM seats WHERE mother_id = $1 \
    AND status = 'free' ORDER BY seat_no LIMIT 1)";

/// Holds the lowest-numbered free seat of a mother for `email` until `held_until` (an invite
/// is pending). `Ok(None)` when she has no free seat.
pub async fn hold_free_seat(
    db: &PoolDb,
    mother_id: i64,
    email: &str,
    held_until: i64,
    now: i64,
) -> StoreResult<Option<Seat>> {
    let sql = sqlx::AssertSqlSafe(format!("{HOLD_LOWEST_FREE} RETURNING {COLUMNS}"));
    in_transaction!(db, |tx| {
        let n = sqlx::query(
            "UPDATE mothers SET seats_held = seats_held + 1, updated_at = $2 \
             WHERE id = $1 AND seat_limit - seats_used - seats_held > 0",
        )
        .bind(mother_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        let seat: Seat = sqlx::query_as(sql)
            .bind(mother_id)
            .bind(email)
            .bind(held_until)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(seat))
    })
}

/// Frees seats held past their `held_until` (an invite or redemption that never completed);
/// returns how many. One transaction per mother, locking her row first like every seat change.
pub async fn expire_held(db: &PoolDb, now: i64) -> StoreResult<u64> {
    let mothers: Vec<i64> = crate::db::on_reader!(db, |p| sqlx::query_scalar(
        "SELECT DISTINCT mother_id FROM seats WHERE status = 'held' AND held_until < $1"
    )
    .bind(now)
    .fetch_all(p)
    .await)?;
    let mut freed = 0;
    for mother_id in mothers {
        freed += in_transaction!(db, |tx| {
            sqlx::query("UPDATE mothers SET updated_at = $2 WHERE id = $1")
                .bind(mother_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query(
                "UPDATE seats SET status = 'free', holder_email = NULL, held_until = NULL, \
                 updated_at = $2 WHERE mother_id = $1 AND status = 'held' AND held_until < $2",
            )
            .bind(mother_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(RECOUNT)
                .bind(mother_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<u64, StoreError>(n)
        })?;
    }
    Ok(freed)
}

/// A seat held for a redeem, the team the invite goes to, and how to reach the mother's provider.
#[derive(Clone, Debug)]
pub struct RedeemHold {
    pub seat: Seat,
    pub team_id: i64,
    pub provider_team_id: String,
    pub team_name: String,
    pub reach: Reach,
}

/// The mother a redeem took a seat of, as [`hold_for_redeem`]'s first statement returns her.
#[derive(FromRow)]
struct TakenMother {
    id: i64,
    #[sqlx(flatten)]
    reach: Reach,
    team_id: i64,
    provider_team_id: String,
    team_name: String,
}

/// Holds a free seat for a redeem by `email` until `held_until`, in one transaction: the mother is
/// an active one (of `group` when given, and not in `skip`) with a free seat and an enabled team
/// linked to the provider; the fullest such mother first, so seats are packed; her default team
/// first. `Ok(None)` when no mother has a seat.
///
/// Two statements, so that a redeem's turn at the writer is short: the first picks the mother and
/// takes a seat in her counters (re-checking that one is free, so of two racing holds for her last
/// seat on PostgreSQL one finds nothing and picks again) and returns her team and provider; the
/// second holds her lowest-numbered free seat.
pub async fn hold_for_redeem(
    db: &PoolDb,
    group: Option<i64>,
    skip: &[i64],
    email: &str,
    held_until: i64,
    now: i64,
) -> StoreResult<Option<RedeemHold>> {
    let team = |column: &str| {
        format!(
            "(SELECT t.{column} FROM teams t WHERE t.mother_id = mothers.id AND t.is_enabled \
             AND t.provider_team_id IS NOT NULL ORDER BY t.is_default DESC, t.id LIMIT 1)"
        )
    };
    let take = format!(
        "UPDATE mothers SET seats_held = seats_held + 1, updated_at = $2 \
         WHERE id = ({pick}) AND status = 'active' AND seat_limit - seats_used - seats_held > 0 \
         RETURNING id, provider, provider_config, credential_sealed, {team_id} AS team_id, \
         {provider_team_id} AS provider_team_id, {team_name} AS team_name",
        pick = pick_redeem_mother(skip).0,
        team_id = team("id"),
        provider_team_id = team("provider_team_id"),
        team_name = team("name"),
    );
    let hold = format!("{HOLD_LOWEST_FREE} RETURNING {COLUMNS}");
    // A round finds nothing only when no mother has room, or (PostgreSQL) when the one it picked
    // filled while it waited for her row; a few rounds are plenty.
    const ROUNDS: usize = 8;
    in_transaction!(db, |tx| {
        for _ in 0..ROUNDS {
            let taken: Option<TakenMother> = sqlx::query_as(sqlx::AssertSqlSafe(take.clone()))
                .bind(group)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(mother) = taken else {
                let candidate: Option<i64> = sqlx::query_scalar(pick_redeem_mother(skip))
                    .bind(group)
                    .fetch_optional(&mut *tx)
                    .await?;
                if candidate.is_none() {
                    return Ok(None);
                }
                continue;
            };
            let seat: Seat = sqlx::query_as(sqlx::AssertSqlSafe(hold.clone()))
                .bind(mother.id)
                .bind(email)
                .bind(held_until)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Some(RedeemHold {
                seat,
                team_id: mother.team_id,
                provider_team_id: mother.provider_team_id,
                team_name: mother.team_name,
                reach: mother.reach,
            }));
        }
        Ok(None)
    })
}

/// Whether a redeem for `group` (any group when `None`) would find a mother with a free seat now:
/// the first step of [`hold_for_redeem`], on a reader.
pub async fn has_redeemable_seat(db: &PoolDb, group: Option<i64>) -> StoreResult<bool> {
    let found: Option<i64> = on_reader!(db, |p| sqlx::query_scalar(pick_redeem_mother(&[]))
        .bind(group)
        .fetch_optional(p)
        .await)?;
    Ok(found.is_some())
}

/// The mother a redeem tries next: active, with a free seat and an enabled linked team, of group
/// `$1` when it is not null, not one of `excluded`; the fullest first.
fn pick_redeem_mother(excluded: &[i64]) -> sqlx::AssertSqlSafe<String> {
    // The ids are numbers this process holds, not input text.
    let not_in = if excluded.is_empty() {
        String::new()
    } else {
        let ids: Vec<String> = excluded.iter().map(i64::to_string).collect();
        format!("AND m.id NOT IN ({})", ids.join(", "))
    };
    sqlx::AssertSqlSafe(format!(
        "SELECT m.id FROM mothers m WHERE {} {not_in} \
         ORDER BY m.seats_used + m.seats_held DESC, m.id LIMIT 1",
        redeem_mother_filter()
    ))
}

/// Which mothers `m` a redeem may place someone with (`$1` the group, or null for any): active,
/// with a free seat and an enabled team linked to the provider.
pub(super) fn redeem_mother_filter() -> &'static str {
    "m.status = 'active' AND m.seat_limit - m.seats_used - m.seats_held > 0 \
     AND (CAST($1 AS BIGINT) IS NULL OR m.pool_group_id = $1) \
     AND EXISTS (SELECT 1 FROM teams t WHERE t.mother_id = m.id AND t.is_enabled \
                 AND t.provider_team_id IS NOT NULL)"
}

/// Turns a held seat into a used one (its invite went out). `Conflict` when the seat is no longer
/// held (its hold expired and maintenance freed it).
pub async fn confirm_held(db: &PoolDb, seat_id: i64, now: i64) -> StoreResult<Seat> {
    // The mother's counters first, which on PostgreSQL locks her row (see the module notes); on
    // SQLite both statements go to the writer in one round trip.
    let count = "UPDATE mothers SET seats_held = seats_held - 1, seats_used = seats_used + 1, \
        updated_at = $2 WHERE id = (SELECT mother_id FROM seats WHERE id = $1 AND status = 'held')";
    let confirm = format!(
        "UPDATE seats SET status = 'used', held_until = NULL, updated_at = $2 \
         WHERE id = $1 AND status = 'held' RETURNING {COLUMNS}"
    );
    let backend = db.0.backend();
    in_transaction!(db, |tx| {
        let seat: Option<Seat> = match backend {
            Backend::Sqlite => {
                // `fetch_all`: SQLite's statements run only as far as the rows are read.
                sqlx::query_as(sqlx::AssertSqlSafe(format!("{count}; {confirm}")))
                    .bind(seat_id)
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .next()
            }
            Backend::Postgres => {
                sqlx::query(count)
                    .bind(seat_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query_as(sqlx::AssertSqlSafe(confirm))
                    .bind(seat_id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        let Some(seat) = seat else {
            return Err(StoreError::Conflict(format!("seat {seat_id} is not held")));
        };
        tx.commit().await?;
        Ok(seat)
    })
}

/// Frees seat `seat_id` if it is still used or held by `email` (case-insensitive); `Ok(false)`
/// when it is free, gone, or has gone to another address since (a sync may have given it to a
/// member), so freeing for an invite twice, or after the seat moved on, changes nothing.
pub async fn release_held_by(
    db: &PoolDb,
    seat_id: i64,
    email: &str,
    now: i64,
) -> StoreResult<bool> {
    in_transaction!(db, |tx| {
        // Lock the mother's row first (see the module notes), then read the seat.
        sqlx::query(
            "UPDATE mothers SET updated_at = $2 WHERE id = (SELECT mother_id FROM seats WHERE id = $1)",
        )
        .bind(seat_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let seat: Option<(i64, String, Option<String>)> =
            sqlx::query_as("SELECT mother_id, status, holder_email FROM seats WHERE id = $1")
                .bind(seat_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((mother_id, status, holder)) = seat else {
            return Ok(false);
        };
        let is_holder = holder.is_some_and(|h| h.eq_ignore_ascii_case(email));
        if status == "free" || !is_holder {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE seats SET status = 'free', holder_email = NULL, held_until = NULL, \
             updated_at = $2 WHERE id = $1",
        )
        .bind(seat_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(RECOUNT)
            .bind(mother_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    })
}
