//! Seat holds and confirmations of redeems, batched on SQLite. A burst of redeems queues a hold
//! and a confirmation per redeem on the pool database's one writer; the [`SeatDesk`] runs whatever
//! is waiting as one transaction of a few statements: all confirmations in one, and the holds of
//! each pool group in one. PostgreSQL runs [`seats::hold_for_redeem`] and [`seats::confirm_held`]
//! as they are.
//!
//! A batch of holds gives seats exactly as that many holds one after the other would: the fullest
//! mother with room first (holding one of her seats leaves her the fullest), filled to her limit,
//! then the next; in each mother the lowest-numbered free seats. The first hold of the batch gets
//! the first seat, and so on.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;
use sqlx::FromRow;

use super::desk::{Batch, Desk};
use super::mothers::Reach;
use super::seats::{self, RedeemHold, Seat};
use super::{StoreError, StoreResult};
use crate::db::{Conn, PoolDb};

/// One seat change of a redeem.
pub enum Op {
    /// Hold a free seat of a mother of `group` (any group when `None`) for `email`.
    Hold {
        group: Option<i64>,
        email: String,
        held_until: i64,
        now: i64,
    },
    /// A held seat's invite went out: the seat is used.
    Confirm { seat_id: i64, now: i64 },
}

/// What it did.
pub enum Done {
    /// `None`: no mother had a seat.
    Held(Option<Box<RedeemHold>>),
    /// `None`: the seat was no longer held (its hold ran out).
    Confirmed(Option<Seat>),
}

/// A row of a batch: a seat held (with where it is and how to reach its mother's provider) or
/// confirmed.
#[derive(FromRow)]
struct SeatRow {
    kind: String,
    /// The place of a hold among the batch's holds of its group.
    k: Option<i64>,
    #[sqlx(flatten)]
    seat: Seat,
    provider: Option<String>,
    provider_config: Option<String>,
    credential_sealed: Option<String>,
    team_id: Option<i64>,
    provider_team_id: Option<String>,
    team_name: Option<String>,
}

/// All confirmations of a batch, after `BEGIN IMMEDIATE`: `$1` a JSON array of `{"seat"}`, `$2`
/// now. The mothers' counters first (only for seats still held), then the seats.
const CONFIRM_SQL: &str = "BEGIN IMMEDIATE; \
    UPDATE mothers SET seats_held = seats_held - c.n, seats_used = seats_used + c.n, \
      updated_at = $2 \
    FROM (SELECT s.mother_id, COUNT(*) AS n FROM json_each($1) j \
          JOIN seats s ON s.id = j.value ->> 'seat' WHERE s.status = 'held' \
          GROUP BY s.mother_id) AS c \
    WHERE mothers.id = c.mother_id; \
    UPDATE seats SET status = 'used', held_until = NULL, updated_at = $2 \
    WHERE id IN (SELECT value ->> 'seat' FROM json_each($1)) AND +status = 'held' \
    RETURNING 'confirmed' AS kind, NULL AS k, id, mother_id, seat_no, status, holder_email, \
      held_until, updated_at, NULL AS provider, NULL AS provider_config, \
      NULL AS credential_sealed, NULL AS team_id, NULL AS provider_team_id, NULL AS team_name";

/// The holds of one group: `$1` the group (null: any), `$2` how many, `$3` a JSON array of
/// `{"email", "until", "now"}` in arrival order, `$4` now. Which seat goes to which hold is
/// worked out first into a table of the writer connection's own (`temp.redeem_holds`; SQLite has
/// no data-modifying `WITH`), so the statements after it share the choice.
///
/// The mothers are those [`seats::hold_for_redeem`] picks from, in its order; `upto` is the room
/// of a mother and of all before her, so only the mothers the holds need are read for seats.
/// (`LIMIT CAST($2 AS INTEGER)`: see `lease_desk::claim_sql`.)
fn hold_sql() -> String {
    let team = |column: &str| {
        format!(
            "(SELECT t.{column} FROM teams t WHERE t.mother_id = m.id AND t.is_enabled \
             AND t.provider_team_id IS NOT NULL ORDER BY t.is_default DESC, t.id LIMIT 1)"
        )
    };
    let eligible = seats::redeem_mother_filter();
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS redeem_holds \
           (k INTEGER PRIMARY KEY, seat_id INTEGER NOT NULL, mother_id INTEGER NOT NULL); \
         DELETE FROM temp.redeem_holds; \
         WITH eligible AS ( \
           SELECT m.id, m.seat_limit - m.seats_used - m.seats_held AS room, \
             ROW_NUMBER() OVER fill AS place, \
             SUM(m.seat_limit - m.seats_used - m.seats_held) OVER (fill ROWS UNBOUNDED PRECEDING) \
               AS upto \
           FROM mothers m WHERE {eligible} \
           WINDOW fill AS (ORDER BY m.seats_used + m.seats_held DESC, m.id)), \
         free AS ( \
           SELECT s.id AS seat_id, s.mother_id, s.seat_no, e.place, e.room, \
             ROW_NUMBER() OVER (PARTITION BY s.mother_id ORDER BY s.seat_no) AS nth \
           FROM eligible e JOIN seats s ON s.mother_id = e.id AND s.status = 'free' \
           WHERE e.upto - e.room < $2) \
         INSERT INTO temp.redeem_holds (k, seat_id, mother_id) \
         SELECT ROW_NUMBER() OVER (ORDER BY place, seat_no) - 1, seat_id, mother_id \
         FROM free WHERE nth <= room ORDER BY place, seat_no LIMIT CAST($2 AS INTEGER); \
         UPDATE seats SET status = 'held', holder_email = r.email, held_until = r.until, \
           updated_at = r.now \
         FROM (SELECT h.seat_id, j.value ->> 'email' AS email, j.value ->> 'until' AS until, \
                 j.value ->> 'now' AS now \
               FROM temp.redeem_holds h JOIN json_each($3) j ON j.key = h.k) AS r \
         WHERE seats.id = r.seat_id; \
         UPDATE mothers SET seats_held = seats_held + c.n, updated_at = $4 \
         FROM (SELECT mother_id, COUNT(*) AS n FROM temp.redeem_holds GROUP BY mother_id) AS c \
         WHERE mothers.id = c.mother_id; \
         SELECT 'held' AS kind, h.k, s.id, s.mother_id, s.seat_no, s.status, s.holder_email, \
           s.held_until, s.updated_at, m.provider, m.provider_config, m.credential_sealed, \
           {team_id} AS team_id, {provider_team_id} AS provider_team_id, \
           {team_name} AS team_name \
         FROM temp.redeem_holds h JOIN seats s ON s.id = h.seat_id \
           JOIN mothers m ON m.id = h.mother_id ORDER BY h.k",
        team_id = team("id"),
        provider_team_id = team("provider_team_id"),
        team_name = team("name"),
    )
}

/// The seat changes of redeems on SQLite, as a [`Batch`].
pub struct SeatBatch;

impl Batch for SeatBatch {
    type Db = PoolDb;
    type Op = Op;
    type Out = Done;

    async fn run(db: &PoolDb, ops: &[Op]) -> StoreResult<Vec<Done>> {
        let Conn::Sqlite { write, .. } = &db.0.conn else {
            let mut done = Vec::with_capacity(ops.len());
            for op in ops {
                done.push(run_alone(db, op).await?);
            }
            return Ok(done);
        };
        let now = ops
            .iter()
            .map(|op| match op {
                Op::Hold { now, .. } | Op::Confirm { now, .. } => *now,
            })
            .max()
            .unwrap_or_default();
        // The holds of each group, in arrival order: (op index, its JSON).
        let mut holds: BTreeMap<Option<i64>, Vec<(usize, serde_json::Value)>> = BTreeMap::new();
        let mut confirms = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Hold {
                    group,
                    email,
                    held_until,
                    now,
                } => holds
                    .entry(*group)
                    .or_default()
                    .push((i, json!({"email": email, "until": held_until, "now": now}))),
                Op::Confirm { seat_id, .. } => confirms.push(json!({"seat": seat_id})),
            }
        }

        let mut tx = write.spelled().await?;
        let mut confirmed: HashMap<i64, Seat> = HashMap::new();
        for row in tx
            .fetch_all(
                sqlx::query_as::<_, SeatRow>(CONFIRM_SQL)
                    .bind(serde_json::Value::Array(confirms).to_string())
                    .bind(now),
            )
            .await?
        {
            confirmed.insert(row.seat.id, row.seat);
        }
        let mut held: HashMap<usize, RedeemHold> = HashMap::new();
        let hold_sql = hold_sql();
        for (group, waiting) in holds {
            let count = i64::try_from(waiting.len()).unwrap_or(i64::MAX);
            let (indexes, json): (Vec<usize>, Vec<serde_json::Value>) = waiting.into_iter().unzip();
            let rows = tx
                .fetch_all(
                    sqlx::query_as::<_, SeatRow>(sqlx::AssertSqlSafe(hold_sql.clone()))
                        .bind(group)
                        .bind(count)
                        .bind(serde_json::Value::Array(json).to_string())
                        .bind(now),
                )
                .await?;
            for row in rows {
                let op = row
                    .k
                    .and_then(|k| usize::try_from(k).ok())
                    .and_then(|k| indexes.get(k));
                if let (Some(op), Some(hold)) = (op, row.into_hold()) {
                    held.insert(*op, hold);
                }
            }
        }
        tx.fetch_all(sqlx::query_as::<_, (i64,)>("COMMIT")).await?;
        tx.committed();

        Ok(ops
            .iter()
            .enumerate()
            .map(|(i, op)| match op {
                Op::Hold { .. } => Done::Held(held.remove(&i).map(Box::new)),
                Op::Confirm { seat_id, .. } => Done::Confirmed(confirmed.remove(seat_id)),
            })
            .collect())
    }
}

impl SeatRow {
    fn into_hold(self) -> Option<RedeemHold> {
        if self.kind != "held" {
            return None;
        }
        Some(RedeemHold {
            seat: self.seat,
            team_id: self.team_id?,
            provider_team_id: self.provider_team_id?,
            team_name: self.team_name?,
            reach: Reach {
                provider: self.provider?,
                provider_config: self.provider_config?,
                credential_sealed: self.credential_sealed?,
            },
        })
    }
}

async fn run_alone(db: &PoolDb, op: &Op) -> StoreResult<Done> {
    Ok(match op {
        Op::Hold {
            group,
            email,
            held_until,
            now,
        } => Done::Held(
            seats::hold_for_redeem(db, *group, &[], email, *held_until, *now)
                .await?
                .map(Box::new),
        ),
        Op::Confirm { seat_id, now } => match seats::confirm_held(db, *seat_id, *now).await {
            Ok(seat) => Done::Confirmed(Some(seat)),
            Err(StoreError::Conflict(_)) => Done::Confirmed(None),
            Err(e) => return Err(e),
        },
    })
}

/// Where a redeem's seat changes go: batched on SQLite, straight to the database on PostgreSQL.
#[derive(Clone)]
pub struct SeatDesk(Desk<SeatBatch>);

impl Default for SeatDesk {
    fn default() -> Self {
        Self(Desk::new(1))
    }
}

impl SeatDesk {
    async fn submit(&self, db: &PoolDb, op: Op) -> StoreResult<Done> {
        match &db.0.conn {
            Conn::Sqlite { .. } => self.0.submit(db, op).await,
            Conn::Postgres(_) => run_alone(db, &op).await,
        }
    }

    /// [`seats::hold_for_redeem`] with no mother to skip.
    pub async fn hold(
        &self,
        db: &PoolDb,
        group: Option<i64>,
        email: &str,
        held_until: i64,
        now: i64,
    ) -> StoreResult<Option<RedeemHold>> {
        let op = Op::Hold {
            group,
            email: email.to_string(),
            held_until,
            now,
        };
        match self.submit(db, op).await? {
            Done::Held(hold) => Ok(hold.map(|h| *h)),
            Done::Confirmed(_) => Err(mismatch()),
        }
    }

    /// [`seats::confirm_held`].
    pub async fn confirm(&self, db: &PoolDb, seat_id: i64, now: i64) -> StoreResult<Seat> {
        match self.submit(db, Op::Confirm { seat_id, now }).await? {
            Done::Confirmed(Some(seat)) => Ok(seat),
            Done::Confirmed(None) => {
                Err(StoreError::Conflict(format!("seat {seat_id} is not held")))
            }
            Done::Held(_) => Err(mismatch()),
        }
    }
}

fn mismatch() -> StoreError {
    StoreError::Other(sqlx::Error::Protocol(
        "the seat desk answered a change with another kind".into(),
    ))
}
