//! The users-database steps of a redeem (reserve the code, record the invite, mark both done),
//! batched on SQLite. A burst of redeems queues these small writes on the one writer, and each
//! used to cost a round trip of its own; the [`RedeemDesk`] sends whatever is waiting as one text
//! to the writer: one `BEGIN IMMEDIATE ... COMMIT` with one statement per kind of step, each over
//! a JSON array of the steps of that kind. The steps are the same as [`redeem_codes::reserve`],
//! [`invites::insert`] and [`redeem_codes::mark_used`], which PostgreSQL runs as they are (its
//! connections work in parallel).
//!
//! Steps in one batch never depend on each other: the steps of one redeem follow each other, each
//! waiting for the answer to the one before, and two redeems of one code cannot both hold it. The
//! order of the statements within a batch is chosen so that holds even when a reservation ran out
//! meanwhile (see `BATCH_SQL`).

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use sqlx::FromRow;

use super::desk::{Batch, Desk};
use super::invites::{self, NewInvite};
use super::redeem_codes::{self, Reserved};
use super::{StoreError, StoreResult};
use crate::db::{Conn, UsersDb};

/// One step of a redeem in the users database; in a batch's JSON arrays, an object with these
/// field names.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Step {
    /// `unused -> reserved`, as [`redeem_codes::reserve`].
    Reserve {
        code_hash: String,
        email: String,
        until: i64,
        now: i64,
    },
    /// A `pending` invite, as [`invites::insert`].
    RecordInvite {
        email: String,
        code_id: i64,
        mother_id: i64,
        team_id: i64,
        seat_id: Option<i64>,
        now: i64,
    },
    /// The invite `sent` and the code `used`, as [`redeem_codes::mark_used`].
    MarkUsed {
        code_id: i64,
        invite_id: i64,
        email: String,
        mother_id: i64,
        team_id: i64,
        now: i64,
    },
}

/// What a step did.
pub enum Done {
    Reserved(Option<Reserved>),
    Recorded(i64),
    /// `false`: the code was no longer reserved, and nothing changed.
    Used(bool),
}

/// One row the batch text returns: which kind of step it answers, and its values.
#[derive(FromRow)]
struct StepRow {
    step: String,
    hash: Option<String>,
    code_id: Option<i64>,
    group_id: Option<i64>,
    invite_id: Option<i64>,
}

/// The whole batch, one text: `$1` the reserves, `$2` the invites to record, `$3` the codes to
/// mark used, each a JSON array. Marks run first and reserves last: a code can be marked used
/// only by the redeem that reserved it, never thanks to a reserve sent in the same batch by
/// another (its reservation ended and was settled meanwhile). `RETURNING` of an `UPDATE ... FROM` may name only the updated
/// table, so rows are matched to steps by the code's hash or id. Each statement walks its JSON
/// array and finds each row by key: the `+` before `status` keeps SQLite from walking every
/// unused code through the status index instead.
const BATCH_SQL: &str = "BEGIN IMMEDIATE; \
    UPDATE invites SET status = 'sent', last_error = NULL, updated_at = b.now \
    FROM (SELECT value ->> 'invite_id' AS invite, value ->> 'code_id' AS code, value ->> 'now' AS now \
          FROM json_each($3)) AS b \
    WHERE invites.id = b.invite AND EXISTS (SELECT 1 FROM redeem_codes c \
      WHERE c.id = b.code AND c.status = 'reserved'); \
    UPDATE redeem_codes SET status = 'used', used_by_email = b.email, used_at = b.now, \
      mother_id = b.mother, team_id = b.team, reserved_until = NULL, updated_at = b.now \
    FROM (SELECT value ->> 'code_id' AS code, value ->> 'email' AS email, \
            value ->> 'mother_id' AS mother, value ->> 'team_id' AS team, value ->> 'now' AS now \
          FROM json_each($3)) AS b \
    WHERE redeem_codes.id = b.code AND +redeem_codes.status = 'reserved' \
    RETURNING 'used' AS step, NULL AS hash, id AS code_id, NULL AS group_id, NULL AS invite_id; \
    INSERT INTO invites (email, code_id, mother_id, team_id, seat_id, status, attempts, \
      created_at, updated_at) \
    SELECT value ->> 'email', value ->> 'code_id', value ->> 'mother_id', value ->> 'team_id', \
      value ->> 'seat_id', 'pending', 1, value ->> 'now', value ->> 'now' FROM json_each($2) \
    RETURNING 'recorded' AS step, NULL AS hash, code_id, NULL AS group_id, id AS invite_id; \
    UPDATE redeem_codes SET status = 'reserved', reserved_by_email = b.email, \
      reserved_until = b.until, updated_at = b.now \
    FROM (SELECT value ->> 'code_hash' AS hash, value ->> 'email' AS email, \
            value ->> 'until' AS until, value ->> 'now' AS now FROM json_each($1)) AS b \
    WHERE redeem_codes.code_hash = b.hash AND +redeem_codes.status = 'unused' \
      AND (redeem_codes.expires_at IS NULL OR redeem_codes.expires_at > b.now) \
    RETURNING 'reserved' AS step, code_hash AS hash, id AS code_id, pool_group_id AS group_id, \
      NULL AS invite_id; \
    COMMIT";

/// The steps of a redeem on SQLite, as a [`Batch`].
pub struct RedeemBatch;

impl Batch for RedeemBatch {
    type Db = UsersDb;
    type Op = Step;
    type Out = Done;

    async fn run(db: &UsersDb, steps: &[Step]) -> StoreResult<Vec<Done>> {
        let Conn::Sqlite { write, .. } = &db.0.conn else {
            // PostgreSQL runs each step alone (see `RedeemDesk`).
            let mut done = Vec::with_capacity(steps.len());
            for step in steps {
                done.push(run_alone(db, step).await?);
            }
            return Ok(done);
        };
        let (mut reserves, mut records, mut marks) = (Vec::new(), Vec::new(), Vec::new());
        // A code asked for twice in one batch is reserved for the first; the other finds it taken.
        let mut first_of_hash: HashMap<&str, usize> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Reserve { code_hash, .. } => {
                    if *first_of_hash.entry(code_hash).or_insert(i) == i {
                        reserves.push(step);
                    }
                }
                Step::RecordInvite { .. } => records.push(step),
                Step::MarkUsed { .. } => marks.push(step),
            }
        }
        let json = |steps: Vec<&Step>| serde_json::to_string(&steps).map_err(sqlx::Error::decode);
        let mut tx = write.spelled().await?;
        let rows: Vec<StepRow> = tx
            .fetch_all(
                sqlx::query_as(BATCH_SQL)
                    .bind(json(reserves)?)
                    .bind(json(records)?)
                    .bind(json(marks)?),
            )
            .await?;
        tx.committed();

        let mut reserved: HashMap<String, Reserved> = HashMap::new();
        let mut recorded: HashMap<i64, VecDeque<i64>> = HashMap::new();
        let mut used: HashMap<i64, ()> = HashMap::new();
        for row in rows {
            match (row.step.as_str(), row.hash, row.code_id, row.invite_id) {
                ("reserved", Some(hash), Some(id), _) => {
                    reserved.insert(
                        hash,
                        Reserved {
                            id,
                            pool_group_id: row.group_id,
                        },
                    );
                }
                ("recorded", _, Some(code_id), Some(invite_id)) => {
                    recorded.entry(code_id).or_default().push_back(invite_id);
                }
                ("used", _, Some(code_id), _) => {
                    used.insert(code_id, ());
                }
                (step, ..) => {
                    return Err(StoreError::Other(sqlx::Error::Protocol(format!(
                        "the redeem batch returned an unexpected {step} row"
                    ))));
                }
            }
        }
        steps
            .iter()
            .enumerate()
            .map(|(i, step)| match step {
                Step::Reserve { code_hash, .. } => Ok(Done::Reserved(
                    if first_of_hash.get(code_hash.as_str()) == Some(&i) {
                        reserved.remove(code_hash)
                    } else {
                        None
                    },
                )),
                Step::RecordInvite { code_id, .. } => recorded
                    .get_mut(code_id)
                    .and_then(VecDeque::pop_front)
                    .map(Done::Recorded)
                    .ok_or_else(|| {
                        StoreError::Other(sqlx::Error::Protocol(format!(
                            "the redeem batch recorded no invite for code {code_id}"
                        )))
                    }),
                Step::MarkUsed { code_id, .. } => Ok(Done::Used(used.contains_key(code_id))),
            })
            .collect()
    }
}

/// One step alone, with the functions the batch stands for.
async fn run_alone(db: &UsersDb, step: &Step) -> StoreResult<Done> {
    Ok(match step {
        Step::Reserve {
            code_hash,
            email,
            until,
            now,
        } => Done::Reserved(redeem_codes::reserve(db, code_hash, email, *until, *now).await?),
        Step::RecordInvite {
            email,
            code_id,
            mother_id,
            team_id,
            seat_id,
            now,
        } => {
            let new = NewInvite {
                email,
                code_id: Some(*code_id),
                mother_id: *mother_id,
                team_id: *team_id,
                seat_id: *seat_id,
            };
            Done::Recorded(invites::insert(db, &new, *now).await?)
        }
        Step::MarkUsed {
            code_id,
            invite_id,
            email,
            mother_id,
            team_id,
            now,
        } => match redeem_codes::mark_used(
            db, *code_id, *invite_id, email, *mother_id, *team_id, *now,
        )
        .await
        {
            Ok(()) => Done::Used(true),
            Err(StoreError::Conflict(_)) => Done::Used(false),
            Err(e) => return Err(e),
        },
    })
}

/// Where a redeem's users-database steps go: batched on SQLite, straight to the database on
/// PostgreSQL.
#[derive(Clone)]
pub struct RedeemDesk(Desk<RedeemBatch>);

impl Default for RedeemDesk {
    fn default() -> Self {
        Self(Desk::new(1))
    }
}

impl RedeemDesk {
    async fn step(&self, db: &UsersDb, step: Step) -> StoreResult<Done> {
        match &db.0.conn {
            Conn::Sqlite { .. } => self.0.submit(db, step).await,
            Conn::Postgres(_) => run_alone(db, &step).await,
        }
    }

    /// [`redeem_codes::reserve`].
    pub async fn reserve(
        &self,
        db: &UsersDb,
        code_hash: &str,
        email: &str,
        until: i64,
        now: i64,
    ) -> StoreResult<Option<Reserved>> {
        let step = Step::Reserve {
            code_hash: code_hash.to_string(),
            email: email.to_string(),
            until,
            now,
        };
        match self.step(db, step).await? {
            Done::Reserved(reserved) => Ok(reserved),
            _ => Err(mismatch()),
        }
    }

    /// [`invites::insert`].
    pub async fn record_invite(
        &self,
        db: &UsersDb,
        new: &NewInvite<'_>,
        now: i64,
    ) -> StoreResult<i64> {
        // The batch finds the new row by its code.
        let Some(code_id) = new.code_id else {
            return invites::insert(db, new, now).await;
        };
        let step = Step::RecordInvite {
            email: new.email.to_string(),
            code_id,
            mother_id: new.mother_id,
            team_id: new.team_id,
            seat_id: new.seat_id,
            now,
        };
        match self.step(db, step).await? {
            Done::Recorded(id) => Ok(id),
            _ => Err(mismatch()),
        }
    }

    /// [`redeem_codes::mark_used`].
    #[allow(clippy::too_many_arguments)]
    pub async fn mark_used(
        &self,
        db: &UsersDb,
        code_id: i64,
        invite_id: i64,
        email: &str,
        mother_id: i64,
        team_id: i64,
        now: i64,
    ) -> StoreResult<()> {
        let step = Step::MarkUsed {
            code_id,
            invite_id,
            email: email.to_string(),
            mother_id,
            team_id,
            now,
        };
        match self.step(db, step).await? {
            Done::Used(true) => Ok(()),
            Done::Used(false) => Err(StoreError::Conflict(format!(
                "code {code_id} is not reserved"
            ))),
            _ => Err(mismatch()),
        }
    }
}

fn mismatch() -> StoreError {
    StoreError::Other(sqlx::Error::Protocol(
        "the redeem desk answered a step with another kind".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::OpenOptions;
    use crate::store::redeem_codes::NewCode;

    const NOW: i64 = 1_000_000;

    async fn users_db(dir: &tempfile::TempDir) -> UsersDb {
        let url = format!("sqlite:{}", dir.path().join("users.db").display());
        let db = UsersDb::open(&url, &OpenOptions::default()).await.unwrap();
        db.database().migrate().await.unwrap();
        let codes: Vec<NewCode> = ["a", "b", "c"]
            .iter()
            .map(|c| NewCode {
                code_hash: format!("hash-{c}"),
                prefix: c.to_string(),
            })
            .collect();
        redeem_codes::insert_batch(&db, &codes, "batch", None, None, NOW)
            .await
            .unwrap();
        db
    }

    fn reserve(hash: &str, email: &str) -> Step {
        Step::Reserve {
            code_hash: hash.to_string(),
            email: email.to_string(),
            until: NOW + 60_000,
            now: NOW,
        }
    }

    fn reserved(done: &Done) -> Option<i64> {
        match done {
            Done::Reserved(r) => r.as_ref().map(|r| r.id),
            _ => panic!("not a reserve's answer"),
        }
    }

    async fn status(db: &UsersDb, hash: &str) -> String {
        redeem_codes::find(db, hash).await.unwrap().unwrap().status
    }

    #[tokio::test]
    async fn one_batch_answers_each_step_as_it_would_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = users_db(&dir).await;

        // The same code twice, an unknown code and another code, in one batch.
        let first = RedeemBatch::run(
            &db,
            &[
                reserve("hash-a", "x@example.com"),
                reserve("hash-a", "y@example.com"),
                reserve("hash-zzz", "x@example.com"),
                reserve("hash-b", "z@example.com"),
            ],
        )
        .await
        .unwrap();
        let a = reserved(&first[0]).expect("the first reserve of a wins");
        assert_eq!(reserved(&first[1]), None, "the second finds a taken");
        assert_eq!(reserved(&first[2]), None, "an unknown code");
        let b = reserved(&first[3]).expect("b is reserved");
        assert_eq!(status(&db, "hash-a").await, "reserved");
        assert_eq!(status(&db, "hash-c").await, "unused");

        // Invites for both, then: a used (its invite sent), and c, never reserved, not used.
        let record = |code_id: i64, email: &str| Step::RecordInvite {
            email: email.to_string(),
            code_id,
            mother_id: 7,
            team_id: 8,
            seat_id: None,
            now: NOW,
        };
        let recorded = RedeemBatch::run(
            &db,
            &[record(a, "x@example.com"), record(b, "z@example.com")],
        )
        .await
        .unwrap();
        let invite = |done: &Done| match done {
            Done::Recorded(id) => *id,
            _ => panic!("not a record's answer"),
        };
        let (invite_a, invite_b) = (invite(&recorded[0]), invite(&recorded[1]));
        assert_ne!(invite_a, invite_b);

        let c = redeem_codes::find(&db, "hash-c").await.unwrap().unwrap().id;
        let mark = |code_id: i64, invite_id: i64| Step::MarkUsed {
            code_id,
            invite_id,
            email: "x@example.com".into(),
            mother_id: 7,
            team_id: 8,
            now: NOW,
        };
        let marked = RedeemBatch::run(
            &db,
            &[
                mark(a, invite_a),
                mark(c, invite_b),
                reserve("hash-c", "w@example.com"),
            ],
        )
        .await
        .unwrap();
        assert!(matches!(marked[0], Done::Used(true)));
        assert!(
            matches!(marked[1], Done::Used(false)),
            "c was not reserved when the batch began"
        );
        assert!(reserved(&marked[2]).is_some());
        assert_eq!(status(&db, "hash-a").await, "used");
        let code_a = redeem_codes::find(&db, "hash-a").await.unwrap().unwrap();
        assert_eq!(code_a.used_by_email.as_deref(), Some("x@example.com"));
        assert_eq!((code_a.mother_id, code_a.team_id), (Some(7), Some(8)));
        let statuses: Vec<(i64, String)> = crate::db::on_reader!(db, |r| sqlx::query_as(
            "SELECT id, status FROM invites ORDER BY id"
        )
        .fetch_all(r)
        .await)
        .unwrap();
        assert_eq!(
            statuses,
            vec![
                (invite_a, "sent".to_string()),
                (invite_b, "pending".to_string())
            ],
            "an invite is sent only with its code"
        );
    }

    #[tokio::test]
    async fn concurrent_reserves_of_one_code_through_the_desk_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let db = users_db(&dir).await;
        let desk = RedeemDesk::default();
        let mut tries = tokio::task::JoinSet::new();
        for i in 0..20 {
            let (desk, db) = (desk.clone(), db.clone());
            tries.spawn(async move {
                desk.reserve(&db, "hash-a", &format!("u{i}@example.com"), NOW + 1, NOW)
                    .await
                    .unwrap()
            });
        }
        let mut winners = 0;
        while let Some(r) = tries.join_next().await {
            winners += usize::from(r.unwrap().is_some());
        }
        assert_eq!(winners, 1);
        assert_eq!(status(&db, "hash-a").await, "reserved");
    }
}
