//! Group commit for the worker API's lease writes. Workers acquire and release in bursts; the
//! [`Desk`] runs whatever is waiting as one batch (see [`super::desk`]) and answers each with its
//! own outcome.
//!
//! On SQLite a batch is a few statements, each over all its writes of one kind, in two round trips
//! to the writer: the leases being released are read with their accounts' resting state,
//! `domain::leases::after_release` decides each account's rest, and one text then writes every
//! release, lends an account to every acquire (one statement per pool, walking the pool's
//! accounts in selection order) and commits. PostgreSQL does the same in one transaction of a
//! few statements (the releases read and locked in one, written in one, one claim per pool, `FOR
//! UPDATE SKIP LOCKED`), on `connections / 2` lanes so round trips to the server overlap.
//!
//! A batch happens at one instant, the latest `now` of its writes (its leases begin, end and are
//! judged expired then; an acquire's lease keeps its length), and gives the answers its writes
//! would give one after the other at that instant, the releases first, then the acquires in
//! arrival order (the first acquire of a pool gets the first available account, and so on). So
//! an account released in a batch may be lent again in it, and its next lease never begins
//! before the last one ended, whatever order the requests came in. Two releases of one lease in a batch: the first releases it, the second is told it
//! was released already. An expired lease found on the way (an acquire's account still had one
//! open, a release came late) is closed right after the batch commits; until then availability
//! already treats it as over, and housekeeping closes any the process did not get to.

use std::collections::{BTreeMap, HashMap};

use sqlx::FromRow;

use super::credential_accounts;
use super::leases::{Acquired, Claimed, Lease, Refusal, Release, RestingRow, claim_set, refusal};
use super::{StoreError, StoreResult};
use crate::db::{Backend, Conn, PoolDb};
use crate::domain::leases::{LeasePolicy, LeaseResult};

/// What one acquire asks for: lend the first available account of `pool` (see
/// `domain::leases::selection_order`) to `worker` until `expires_at`.
#[derive(Clone, Debug)]
pub struct AcquireArgs {
    pub pool: String,
    pub lease_id: String,
    pub worker: String,
    pub token_id: i64,
    pub mission: Option<String>,
    pub now: i64,
    pub expires_at: i64,
    pub cooldown_ms: i64,
}

/// What one release asks for: end the lease `lease_id` held by `token_id` with `result`.
#[derive(Clone, Debug)]
pub struct ReleaseArgs {
    pub lease_id: String,
    pub token_id: i64,
    pub result: LeaseResult,
    pub error_message: Option<String>,
    pub now: i64,
    pub policy: LeasePolicy,
}

/// One write of the worker API, as the [`Desk`] runs it.
#[derive(Clone, Debug)]
pub enum Op {
    Acquire(AcquireArgs),
    Release(ReleaseArgs),
}

pub enum Outcome {
    Acquired(Option<Box<Acquired>>),
    /// The finished lease and, when the release quarantined the account anew, until when.
    Released(Result<(Lease, Option<i64>), Refusal>),
    /// A release of a lease that does not exist.
    NoSuchLease,
}

/// Group commit for acquires and releases (see the module's documentation). SQLite has one lane
/// (one writer); PostgreSQL `connections / 2`, so round trips to the server overlap while each
/// transaction still carries a batch.
#[derive(Clone)]
pub struct Desk(super::desk::Desk<LeaseBatch>);

impl Default for Desk {
    fn default() -> Self {
        Self::new(1)
    }
}

impl Desk {
    /// A desk running at most `lanes` batches at once (at least one).
    pub fn new(lanes: usize) -> Self {
        Self(super::desk::Desk::new(lanes))
    }

    /// A desk for `db`: one lane on SQLite, `connections / 2` (at least one) on PostgreSQL,
    /// leaving the other connections to everything else.
    pub fn for_database(db: &PoolDb, connections: u32) -> Self {
        match db.0.backend() {
            Backend::Sqlite => Self::new(1),
            Backend::Postgres => Self::new(usize::try_from(connections / 2).unwrap_or(1)),
        }
    }

    /// Lends the first available account of the pool. `None` when no account is available.
    pub async fn acquire(&self, db: &PoolDb, args: AcquireArgs) -> StoreResult<Option<Acquired>> {
        match self.0.submit(db, Op::Acquire(args)).await? {
            Outcome::Acquired(acquired) => Ok(acquired.map(|a| *a)),
            _ => Err(StoreError::Other(sqlx::Error::Protocol(
                "the lease desk answered an acquire with something else".into(),
            ))),
        }
    }

    /// Ends an open lease with the worker's result: the account rests as
    /// `domain::leases::after_release` says, and one usage row is written. `NotFound` for an
    /// unknown lease. With the lease comes the end of a quarantine the release started, if any.
    pub async fn release(
        &self,
        db: &PoolDb,
        args: ReleaseArgs,
    ) -> StoreResult<Result<(Lease, Option<i64>), Refusal>> {
        match self.0.submit(db, Op::Release(args)).await? {
            Outcome::Released(released) => Ok(released),
            Outcome::NoSuchLease => Err(StoreError::NotFound),
            Outcome::Acquired(_) => Err(StoreError::Other(sqlx::Error::Protocol(
                "the lease desk answered a release with an acquire".into(),
            ))),
        }
    }
}

/// The writes of the worker API, as a [`super::desk::Batch`].
pub struct LeaseBatch;

impl super::desk::Batch for LeaseBatch {
    type Db = PoolDb;
    type Op = Op;
    type Out = Outcome;

    async fn run(db: &PoolDb, ops: &[Op]) -> StoreResult<Vec<Outcome>> {
        let (mut outcomes, expired) = match &db.0.conn {
            Conn::Sqlite { write, .. } => {
                let mut tx = write.spelled().await?;
                let done = run_sqlite(ops, &mut tx).await?;
                tx.committed();
                done
            }
            Conn::Postgres(pg) => run_postgres(pg, ops).await?,
        };
        // The batch has committed: an error now must not fail it (the desk would run its writes
        // again). The leases stay open past their expiry until housekeeping closes them.
        if let Err(e) = close_expired_after(db, ops, &mut outcomes, expired).await {
            tracing::warn!(error = %e, "closing expired leases after a lease batch failed; housekeeping will");
        }
        Ok(outcomes)
    }
}

#[derive(FromRow)]
struct LeaseAndResting {
    #[sqlx(flatten)]
    lease: Lease,
    #[sqlx(flatten)]
    resting: RestingRow,
}

// ---- SQLite: one statement per kind of write ------------------------------------------------

/// The leases a batch releases, read with their accounts' resting state, after `BEGIN
/// IMMEDIATE`: `$1` a JSON array of lease ids.
fn release_reads_sql() -> String {
    format!(
        "BEGIN IMMEDIATE; \
         SELECT {columns} FROM json_each($1) j JOIN credential_leases l ON l.id = j.value \
         JOIN credential_accounts a ON a.id = l.account_id",
        columns = lease_and_resting_columns(),
    )
}

/// The columns of a [`LeaseAndResting`], from the lease `l` and its account `a`.
fn lease_and_resting_columns() -> String {
    format!(
        "{lease}, a.cooldown_until, a.quarantine_until, a.consecutive_failures, a.login",
        lease = super::leases::lease_columns("l"),
    )
}

/// Every release of a batch, decided ([`ReleaseRow`]s in `$1`): the accounts rest, the leases
/// end, one usage row each. The same writes as `leases::release_writes_sql`, for many at once.
/// (`jsonb_each`: see [`claim_sql`].)
const RELEASE_WRITES_SQL: &str = "\
    UPDATE credential_accounts SET cooldown_until = r.cooldown_until, \
      quarantine_until = r.quarantine_until, consecutive_failures = r.failures, \
      total_successes = total_successes + r.success, leased_until = NULL, \
      current_lease_id = NULL, updated_at = r.now \
    FROM (SELECT value ->> 'account' AS account, value ->> 'lease' AS lease, \
            value ->> 'cooldown_until' AS cooldown_until, \
            value ->> 'quarantine_until' AS quarantine_until, value ->> 'failures' AS failures, \
            value ->> 'success' AS success, value ->> 'now' AS now FROM jsonb_each($1)) AS r \
    WHERE credential_accounts.id = r.account AND credential_accounts.current_lease_id = r.lease; \
    UPDATE credential_leases SET released_at = r.now, result = r.result \
    FROM (SELECT value ->> 'lease' AS lease, value ->> 'now' AS now, \
            value ->> 'result' AS result FROM jsonb_each($1)) AS r \
    WHERE credential_leases.id = r.lease; \
    INSERT INTO credential_usage (account_id, login, pool, lease_id, mission, result, \
      error_message, started_at, finished_at, duration_ms) \
    SELECT l.account_id, r.value ->> 'login', l.pool, l.id, l.mission, r.value ->> 'result', \
      r.value ->> 'error_message', l.acquired_at, r.value ->> 'now', \
      (r.value ->> 'now') - l.acquired_at \
    FROM jsonb_each($1) r JOIN credential_leases l ON l.id = r.value ->> 'lease'; ";

/// The acquires of one pool in a batch, the parameters numbered from `$first`: the pool, how
/// many, a JSON array of [`WantRow`]s in arrival order, the cooldown (ms) and now. The first
/// `n` available accounts in selection order (the walk of the index `credential_accounts_pick`
/// stops there) are numbered in that order and lent to the acquires with the same numbers; each
/// claimed row comes back with its new lease's id and a lease still open on it from before
/// (`previous_lease`: expired, or the account would not have been available). The leases are
/// inserted after the claim, so an open lease of a claimed account is an old one.
///
/// How it stays cheap as batches grow and leases pile up:
/// - The count is `LIMIT CAST($n AS INTEGER)`, not `LIMIT $n`: SQLite plans with the value of a
///   bare parameter in `LIMIT`, so every new binding of it would compile the statement again (a
///   sixth of the writer's time in the lease bench).
/// - The acquires are read out of their JSON once, into `w`. Joined to the picks directly, the
///   array was parsed again for every account picked.
/// - `jsonb_each` hands each acquire over as binary JSON, which `->>` reads without parsing text.
/// - The previous lease is found in the index of open leases (pool migration 0013), not among all
///   the account's leases ever.
fn claim_sql(first: usize) -> String {
    let [pool, n, wants, cool, now] = std::array::from_fn(|i| format!("${}", first + i));
    let available = credential_accounts::available_sql(&now, &cool);
    format!(
        "WITH w AS MATERIALIZED (SELECT key AS k, value ->> 'lease' AS lease, \
             value ->> 'expires_at' AS expires_at, value ->> 'now' AS now FROM jsonb_each({wants})) \
         UPDATE credential_accounts SET {set} \
         FROM (SELECT id AS pick, ROW_NUMBER() OVER (ORDER BY total_uses, last_used_at, id) - 1 AS k \
               FROM (SELECT id, total_uses, last_used_at FROM credential_accounts \
                     WHERE pool = {pool} AND {available} \
                     ORDER BY total_uses, last_used_at, id LIMIT CAST({n} AS INTEGER))) AS p \
           JOIN w ON w.k = p.k \
         WHERE credential_accounts.id = p.pick \
         RETURNING {columns}, password_sealed, current_lease_id AS lease_id, \
           (SELECT l.id FROM credential_leases l WHERE l.account_id = credential_accounts.id \
            AND l.released_at IS NULL LIMIT 1) AS previous_lease; \
         INSERT INTO credential_leases (id, account_id, pool, worker, holder_token_id, mission, \
           acquired_at, expires_at, released_at, renewals, result) \
         SELECT a.current_lease_id, a.id, a.pool, j.value ->> 'worker', j.value ->> 'token_id', \
           j.value ->> 'mission', j.value ->> 'now', j.value ->> 'expires_at', NULL, 0, NULL \
         FROM jsonb_each({wants}) j JOIN credential_accounts a \
           ON a.current_lease_id = j.value ->> 'lease'; ",
        set = claim_set("w.lease", "w.expires_at", "w.now"),
        columns = credential_accounts::COLUMNS,
    )
}

/// PostgreSQL: the leases a batch releases with their accounts' resting state, locked in the
/// order of their ids (so that two lanes never wait for each other in a circle): `$1` the ids.
fn pg_release_reads_sql() -> String {
    format!(
        "SELECT {columns} FROM credential_leases l \
         JOIN credential_accounts a ON a.id = l.account_id \
         WHERE l.id = ANY($1) ORDER BY l.id FOR UPDATE",
        columns = lease_and_resting_columns(),
    )
}

/// PostgreSQL: [`RELEASE_WRITES_SQL`] as one statement, with the leases' ids again in `$2` and
/// their accounts' in `$3`: the planner cannot see into the JSON, and without the arrays it may
/// join by reading every lease (on a table whose statistics are old) instead of looking each one
/// up by its key.
const PG_RELEASE_WRITES_SQL: &str = "\
    WITH r AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(lease text, account bigint, \
        cooldown_until bigint, quarantine_until bigint, failures bigint, success bigint, \
        result text, login text, error_message text, now bigint)), \
    rested AS (UPDATE credential_accounts a SET cooldown_until = r.cooldown_until, \
        quarantine_until = r.quarantine_until, consecutive_failures = r.failures, \
        total_successes = a.total_successes + r.success, leased_until = NULL, \
        current_lease_id = NULL, updated_at = r.now \
      FROM r WHERE a.id = ANY($3) AND a.id = r.account AND a.current_lease_id = r.lease), \
    finished AS (UPDATE credential_leases l SET released_at = r.now, result = r.result \
      FROM r WHERE l.id = ANY($2) AND l.id = r.lease \
      RETURNING l.id, l.account_id, l.pool, l.mission, l.acquired_at) \
    INSERT INTO credential_usage (account_id, login, pool, lease_id, mission, result, \
      error_message, started_at, finished_at, duration_ms) \
    SELECT f.account_id, r.login, f.pool, f.id, f.mission, r.result, r.error_message, \
      f.acquired_at, r.now, r.now - f.acquired_at \
    FROM finished f JOIN r ON r.lease = f.id";

/// PostgreSQL: [`claim_sql`] as one statement (`$1` pool, `$2` how many, `$3` the acquires,
/// `$4` cooldown, `$5` now). The accounts are locked `FOR UPDATE SKIP LOCKED`, so a batch on
/// another lane passes over them.
fn pg_claim_sql() -> String {
    format!(
        "WITH want AS (SELECT w.*, w.ord - 1 AS k FROM ROWS FROM (jsonb_to_recordset($3::jsonb) \
             AS (lease text, expires_at bigint, now bigint, worker text, token_id bigint, \
                 mission text)) \
           WITH ORDINALITY AS w(lease, expires_at, now, worker, token_id, mission, ord)), \
         pick AS (SELECT pick_id, previous_lease, \
             ROW_NUMBER() OVER (ORDER BY total_uses, last_used_at, pick_id) - 1 AS k \
           FROM (SELECT id AS pick_id, current_lease_id AS previous_lease, total_uses, \
                   last_used_at FROM credential_accounts WHERE pool = $1 AND {available} \
                 ORDER BY total_uses, last_used_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) AS p), \
         claimed AS (UPDATE credential_accounts SET {set} \
           FROM pick JOIN want ON want.k = pick.k WHERE credential_accounts.id = pick.pick_id \
           RETURNING {columns}, password_sealed, pick.previous_lease, want.lease AS lease_id, \
             want.worker, want.token_id, want.mission, want.now AS acquired_at, \
             want.expires_at), \
         leased AS (INSERT INTO credential_leases (id, account_id, pool, worker, \
             holder_token_id, mission, acquired_at, expires_at, released_at, renewals, result) \
           SELECT lease_id, id, pool, worker, token_id, mission, acquired_at, expires_at, NULL, \
             0, NULL FROM claimed) \
         SELECT {columns}, password_sealed, previous_lease, lease_id FROM claimed",
        available = credential_accounts::available_sql("$5", "$4"),
        set = claim_set("want.lease", "want.expires_at", "want.now"),
        columns = credential_accounts::COLUMNS,
    )
}

/// One decided release, as [`RELEASE_WRITES_SQL`] reads it.
#[derive(serde::Serialize)]
struct ReleaseRow<'a> {
    lease: &'a str,
    account: i64,
    cooldown_until: Option<i64>,
    quarantine_until: Option<i64>,
    failures: i64,
    success: i64,
    result: &'static str,
    login: String,
    error_message: Option<&'a str>,
    now: i64,
}

/// One acquire, as [`claim_sql`] reads it.
#[derive(serde::Serialize)]
struct WantRow<'a> {
    lease: &'a str,
    expires_at: i64,
    now: i64,
    worker: &'a str,
    token_id: i64,
    mission: Option<&'a str>,
}

/// An account a batch lent, with the id of its new lease.
#[derive(FromRow)]
struct ClaimRow {
    #[sqlx(flatten)]
    claimed: Claimed,
    lease_id: String,
}

/// A lease a batch found past its expiry but still open, closed once the batch has committed:
/// the op that found it, the lease, and the cooldown to rest its account.
struct Overdue {
    op: usize,
    lease: String,
    cooldown_ms: i64,
}

type Expired = Vec<Overdue>;

/// A batch worked out in Rust between the database's reads and writes, the same on both
/// backends: which releases to write and what each answers, the acquires of each pool, and the
/// expired leases found on the way.
struct Plan<'a> {
    ops: &'a [Op],
    /// When the batch happens: the latest `now` of its writes.
    at: i64,
    /// One outcome per op, filled in as the batch learns them.
    outcomes: Vec<Option<Outcome>>,
    expired: Expired,
}

/// The acquires of one pool in a batch, in arrival order.
struct PoolWants {
    pool: String,
    cooldown_ms: i64,
    /// The latest `now` of the acquires: availability is judged at it.
    now: i64,
    count: i64,
    /// A JSON array of [`WantRow`]s.
    json: String,
}

impl<'a> Plan<'a> {
    fn new(ops: &'a [Op]) -> Self {
        Self {
            ops,
            at: batch_time(ops),
            outcomes: ops.iter().map(|_| None).collect(),
            expired: Expired::new(),
        }
    }

    fn has_releases(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, Op::Release(_)))
    }

    /// The leases the batch releases.
    fn release_ids(&self) -> Vec<&'a str> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Release(r) => Some(r.lease_id.as_str()),
                Op::Acquire(_) => None,
            })
            .collect()
    }

    /// The acquires by pool (and cooldown, which the policy makes the same for all).
    fn pools(&self) -> StoreResult<Vec<PoolWants>> {
        let mut pools: BTreeMap<(&str, i64), Vec<WantRow<'_>>> = BTreeMap::new();
        for op in self.ops {
            if let Op::Acquire(a) = op {
                pools
                    .entry((a.pool.as_str(), a.cooldown_ms))
                    .or_default()
                    .push(WantRow {
                        lease: &a.lease_id,
                        expires_at: a.expires_at - a.now + self.at,
                        now: self.at,
                        worker: &a.worker,
                        token_id: a.token_id,
                        mission: a.mission.as_deref(),
                    });
            }
        }
        pools
            .into_iter()
            .map(|((pool, cooldown_ms), wants)| {
                Ok(PoolWants {
                    pool: pool.to_string(),
                    cooldown_ms,
                    now: self.at,
                    count: i64::try_from(wants.len()).unwrap_or(i64::MAX),
                    json: to_json(&wants)?,
                })
            })
            .collect()
    }

    /// Answers each acquire with the account claimed for its lease, if any.
    fn answer_acquires(&mut self, mut claimed: HashMap<String, Claimed>) {
        for (i, op) in self.ops.iter().enumerate() {
            let Op::Acquire(a) = op else { continue };
            let acquired = claimed.remove(&a.lease_id).map(|c| {
                if let Some(previous) = &c.previous_lease {
                    self.expired.push(Overdue {
                        op: i,
                        lease: previous.clone(),
                        cooldown_ms: a.cooldown_ms,
                    });
                }
                Box::new(acquired(a, c, self.at))
            });
            self.outcomes[i] = Some(Outcome::Acquired(acquired));
        }
    }

    /// The outcomes, one per op, and the expired leases to close.
    fn finish(self) -> StoreResult<(Vec<Outcome>, Expired)> {
        let outcomes = self
            .outcomes
            .into_iter()
            .map(|o| {
                o.ok_or_else(|| {
                    StoreError::Other(sqlx::Error::Protocol(
                        "a lease batch left a write unanswered".into(),
                    ))
                })
            })
            .collect::<StoreResult<Vec<Outcome>>>()?;
        Ok((outcomes, self.expired))
    }

    /// Answers each release from what was read, in arrival order, as releases one after the
    /// other would be answered: the JSON of the releases to write ([`ReleaseRow`]s).
    fn decide_releases(
        &mut self,
        mut reads: HashMap<String, LeaseAndResting>,
    ) -> StoreResult<String> {
        let ops = self.ops;
        let mut rows = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let Op::Release(r) = op else { continue };
            let Some(read) = reads.get_mut(&r.lease_id) else {
                self.outcomes[i] = Some(Outcome::NoSuchLease);
                continue;
            };
            let outcome = match refusal(&read.lease, r.token_id, self.at) {
                Some(Refusal::Expired { .. }) => {
                    if !self.expired.iter().any(|o| o.lease == r.lease_id) {
                        self.expired.push(Overdue {
                            op: i,
                            lease: r.lease_id.clone(),
                            cooldown_ms: r.policy.cooldown_ms,
                        });
                    }
                    Err(Refusal::Expired { closed_ms: None })
                }
                Some(refused) => Err(refused),
                None => {
                    let release =
                        Release::decide(&read.lease, &read.resting, r.result, self.at, &r.policy);
                    rows.push(ReleaseRow {
                        lease: &r.lease_id,
                        account: read.lease.account_id,
                        cooldown_until: release.after.cooldown_until,
                        quarantine_until: release.after.quarantine_until,
                        failures: release.after.consecutive_failures,
                        success: release.success(),
                        result: r.result.as_str(),
                        login: read.resting.login.clone(),
                        error_message: r.error_message.as_deref(),
                        now: self.at,
                    });
                    // A second release of this lease in the batch finds it released.
                    read.lease = release.finished.clone();
                    Ok((release.finished, release.quarantined_until))
                }
            };
            self.outcomes[i] = Some(Outcome::Released(outcome));
        }
        to_json(&rows)
    }
}

/// Runs a batch on SQLite's writer in the transaction `tx`, begun and committed by the texts it
/// sends: one to read the releases (when there are any), one to write everything and commit.
async fn run_sqlite(
    ops: &[Op],
    tx: &mut crate::db::SpelledTx<'_>,
) -> StoreResult<(Vec<Outcome>, Expired)> {
    let mut plan = Plan::new(ops);
    let releases = plan.has_releases();
    let reads: HashMap<String, LeaseAndResting> = if releases {
        let sql = sqlx::AssertSqlSafe(release_reads_sql());
        let ids = to_json(&plan.release_ids())?;
        tx.fetch_all(sqlx::query_as::<_, LeaseAndResting>(sql).bind(ids))
            .await?
            .into_iter()
            .map(|row| (row.lease.id.clone(), row))
            .collect()
    } else {
        HashMap::new()
    };
    let release_json = plan.decide_releases(reads)?;
    let pools = plan.pools()?;

    let mut text = String::new();
    if !releases {
        text.push_str("BEGIN IMMEDIATE; ");
    }
    text.push_str(RELEASE_WRITES_SQL);
    for i in 0..pools.len() {
        text.push_str(&claim_sql(2 + 5 * i));
    }
    text.push_str("COMMIT");
    let mut query = sqlx::query_as::<_, ClaimRow>(sqlx::AssertSqlSafe(text)).bind(release_json);
    for wants in pools {
        query = query
            .bind(wants.pool)
            .bind(wants.count)
            .bind(wants.json)
            .bind(wants.cooldown_ms)
            .bind(wants.now);
    }
    let claimed = tx
        .fetch_all(query)
        .await?
        .into_iter()
        .map(|row| (row.lease_id, row.claimed))
        .collect();
    plan.answer_acquires(claimed);
    plan.finish()
}

/// Runs a batch on PostgreSQL in one transaction: one query reads and locks the releases, one
/// statement writes them all, and one per pool claims the accounts of its acquires.
async fn run_postgres(pg: &sqlx::PgPool, ops: &[Op]) -> StoreResult<(Vec<Outcome>, Expired)> {
    let mut plan = Plan::new(ops);
    // Every statement of a batch finds its rows by key or walks the pick index. A planner
    // without statistics of the lease tables (new ones; autovacuum off or not yet round) reads
    // the whole table instead, which costs more with every lease: never here.
    let mut tx = pg
        .begin_with("BEGIN; SET LOCAL enable_seqscan = off")
        .await?;
    let reads: HashMap<String, LeaseAndResting> = if plan.has_releases() {
        sqlx::query_as::<_, LeaseAndResting>(sqlx::AssertSqlSafe(pg_release_reads_sql()))
            .bind(plan.release_ids())
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|row| (row.lease.id.clone(), row))
            .collect()
    } else {
        HashMap::new()
    };
    let (leases, accounts): (Vec<String>, Vec<i64>) = reads
        .values()
        .map(|read| (read.lease.id.clone(), read.lease.account_id))
        .unzip();
    let release_json = plan.decide_releases(reads)?;
    if release_json != "[]" {
        sqlx::query(PG_RELEASE_WRITES_SQL)
            .bind(release_json)
            .bind(leases)
            .bind(accounts)
            .execute(&mut *tx)
            .await?;
    }
    let mut claimed = HashMap::new();
    let claim = pg_claim_sql();
    for wants in plan.pools()? {
        let rows: Vec<ClaimRow> = sqlx::query_as(sqlx::AssertSqlSafe(claim.clone()))
            .bind(wants.pool)
            .bind(wants.count)
            .bind(wants.json)
            .bind(wants.cooldown_ms)
            .bind(wants.now)
            .fetch_all(&mut *tx)
            .await?;
        claimed.extend(rows.into_iter().map(|row| (row.lease_id, row.claimed)));
    }
    tx.commit().await?;
    plan.answer_acquires(claimed);
    plan.finish()
}

/// What an acquire that was lent `claimed` in a batch at `at` hands out.
fn acquired(a: &AcquireArgs, claimed: Claimed, at: i64) -> Acquired {
    Acquired {
        lease: Lease {
            id: a.lease_id.clone(),
            account_id: claimed.account.id,
            pool: a.pool.clone(),
            worker: a.worker.clone(),
            holder_token_id: a.token_id,
            mission: a.mission.clone(),
            acquired_at: at,
            expires_at: a.expires_at - a.now + at,
            released_at: None,
            renewals: 0,
            result: None,
        },
        account: claimed.account,
        password_sealed: claimed.password_sealed,
        closed_expired: Vec::new(),
    }
}

/// Closes the expired leases a committed batch found (see `leases::close_if_expired`) and adds
/// what that closed to the outcomes: to an acquire, the length of its account's previous lease;
/// to the first late release of a lease in the batch, its length.
async fn close_expired_after(
    db: &PoolDb,
    ops: &[Op],
    outcomes: &mut [Outcome],
    expired: Expired,
) -> StoreResult<()> {
    if expired.is_empty() {
        return Ok(());
    }
    let now = batch_time(ops);
    let leases: Vec<(String, i64)> = expired
        .iter()
        .map(|o| (o.lease.clone(), o.cooldown_ms))
        .collect();
    let mut closed = super::leases::close_if_expired(db, &leases, now).await?;
    for overdue in expired {
        let Some(length) = closed.remove(&overdue.lease) else {
            continue;
        };
        match outcomes.get_mut(overdue.op) {
            Some(Outcome::Acquired(Some(acquired))) => acquired.closed_expired.push(length),
            Some(Outcome::Released(Err(Refusal::Expired { closed_ms }))) => {
                *closed_ms = Some(length);
            }
            _ => {}
        }
    }
    Ok(())
}

/// When a batch happens: the latest `now` of its writes.
fn batch_time(ops: &[Op]) -> i64 {
    ops.iter()
        .map(|op| match op {
            Op::Acquire(a) => a.now,
            Op::Release(r) => r.now,
        })
        .max()
        .unwrap_or_default()
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(sqlx::Error::Encode(Box::new(e))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::OpenOptions;
    use crate::store::credential_accounts::NewAccount;
    use crate::store::desk::Batch;

    const NOW: i64 = 10_000_000;
    const TTL: i64 = 300_000;

    /// A pool database at `url` with `default` accounts a1..a4 and `other` account b1, never
    /// used.
    async fn pool_db(url: &str) -> PoolDb {
        let db = PoolDb::open(url, &OpenOptions::default()).await.unwrap();
        db.database().migrate().await.unwrap();
        let accounts: Vec<NewAccount> = [("default", "a1"), ("default", "a2")]
            .into_iter()
            .chain([("default", "a3"), ("default", "a4"), ("other", "b1")])
            .map(|(pool, login)| NewAccount {
                pool: pool.to_string(),
                login: format!("{login}@example.com"),
                password_sealed: format!("sealed-{login}"),
                phone: None,
                metadata: "{}".to_string(),
            })
            .collect();
        credential_accounts::insert_all(&db, &accounts, NOW)
            .await
            .unwrap();
        db
    }

    fn acquire(pool: &str, lease: &str, now: i64) -> Op {
        Op::Acquire(AcquireArgs {
            pool: pool.to_string(),
            lease_id: lease.to_string(),
            worker: "w".to_string(),
            token_id: 1,
            mission: None,
            now,
            expires_at: now + TTL,
            cooldown_ms: 0,
        })
    }

    fn release(lease: &str, token_id: i64, result: LeaseResult, now: i64) -> Op {
        Op::Release(ReleaseArgs {
            lease_id: lease.to_string(),
            token_id,
            result,
            error_message: Some("why".to_string()),
            now,
            policy: LeasePolicy {
                cooldown_ms: 0,
                ..LeasePolicy::default()
            },
        })
    }

    /// What an outcome says, in a form to compare: the login lent, or the release's answer.
    fn said(outcome: &Outcome) -> String {
        match outcome {
            Outcome::Acquired(None) => "none".to_string(),
            Outcome::Acquired(Some(a)) => {
                format!("{} closed {:?}", a.account.login, a.closed_expired)
            }
            Outcome::Released(Ok((lease, quarantined))) => {
                format!("{:?} {quarantined:?}", lease.result)
            }
            Outcome::Released(Err(refused)) => format!("{refused:?}"),
            Outcome::NoSuchLease => "no such lease".to_string(),
        }
    }

    /// One op alone, in a transaction of its own, through the statements of a single acquire
    /// and release (`leases::acquire_in`, `leases::release_in`, as missions use them).
    async fn alone(db: &PoolDb, op: &Op) -> StoreResult<Outcome> {
        use crate::store::leases::{acquire_in, close_expired, lock_lease_sql, release_in};
        let backend = db.0.backend();
        crate::db::in_transaction!(db, |tx| {
            let outcome = match op {
                Op::Acquire(a) => Outcome::Acquired(
                    acquire_in!(tx, backend, pool: a.pool.as_str(),
                    lease_id: a.lease_id.as_str(), worker: a.worker.as_str(),
                    token_id: a.token_id, mission: a.mission.as_deref(), now: a.now,
                    expires_at: a.expires_at, cooldown_ms: a.cooldown_ms)
                    .map(Box::new),
                ),
                Op::Release(r) => {
                    let lease: Option<Lease> = sqlx::query_as(lock_lease_sql(backend))
                        .bind(&r.lease_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    match lease {
                        None => Outcome::NoSuchLease,
                        Some(lease) => {
                            Outcome::Released(match refusal(&lease, r.token_id, r.now) {
                                Some(Refusal::Expired { .. }) => {
                                    let closed = close_expired!(
                                        tx,
                                        r.now,
                                        r.policy.cooldown_ms,
                                        None::<i64>,
                                        Some(r.lease_id.as_str())
                                    );
                                    Err(Refusal::Expired {
                                        closed_ms: closed.first().copied(),
                                    })
                                }
                                Some(refused) => Err(refused),
                                None => {
                                    Ok(release_in!(tx, backend, lease: &lease, result: r.result,
                                error_message: r.error_message.as_deref(), now: r.now,
                                policy: &r.policy))
                                }
                            })
                        }
                    }
                }
            };
            tx.commit().await?;
            Ok(outcome)
        })
    }

    /// A fresh database on the PostgreSQL server `POOLKEEPER_TEST_PG` names, if it names one:
    /// its URL, and the server's URL with the database's name to drop it afterwards.
    async fn postgres_db() -> Option<(String, String, String)> {
        use sqlx::Connection;
        let server = std::env::var("POOLKEEPER_TEST_PG").ok()?;
        let name = format!(
            "pk_unit_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&name);
        Some((url.to_string(), server, name))
    }

    /// The batch (on PostgreSQL when `POOLKEEPER_TEST_PG` names a server, else on SQLite) and the
    /// same ops one after the other (on SQLite) answer alike and leave the same rows.
    async fn both_ways(ops: Vec<Vec<Op>>) -> Vec<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = |name: &str| format!("sqlite:{}", dir.path().join(name).display());
        let postgres = postgres_db().await;
        let batched = match &postgres {
            Some((url, ..)) => pool_db(url).await,
            None => pool_db(&sqlite("batched.db")).await,
        };
        let single = pool_db(&sqlite("single.db")).await;
        let mut answers = Vec::new();
        for batch in &ops {
            let together: Vec<String> = LeaseBatch::run(&batched, batch)
                .await
                .unwrap()
                .iter()
                .map(said)
                .collect();
            let mut one_by_one = Vec::new();
            for op in batch {
                one_by_one.push(said(&alone(&single, op).await.unwrap()));
            }
            assert_eq!(together, one_by_one, "the batch answered otherwise");
            answers.push(together);
        }
        assert_eq!(rows(&batched).await, rows(&single).await);
        batched.0.close().await;
        if let Some((_, server, name)) = postgres {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
        answers
    }

    /// Every account, lease and usage row, to compare two databases.
    async fn rows(db: &PoolDb) -> Vec<String> {
        type AccountRow = (
            String,
            Option<i64>,
            Option<i64>,
            i64,
            i64,
            i64,
            Option<String>,
        );
        type LeaseRow = (String, i64, Option<i64>, Option<String>);
        type UsageRow = (String, String, Option<String>, i64);
        let accounts: Vec<AccountRow> = crate::db::on_reader!(db, |p| sqlx::query_as(
            "SELECT login, cooldown_until, quarantine_until, consecutive_failures, total_uses, \
             total_successes, current_lease_id FROM credential_accounts ORDER BY id"
        )
        .fetch_all(p)
        .await)
        .unwrap();
        let leases: Vec<LeaseRow> = crate::db::on_reader!(db, |p| sqlx::query_as(
            "SELECT id, account_id, released_at, result FROM credential_leases ORDER BY id"
        )
        .fetch_all(p)
        .await)
        .unwrap();
        let usage: Vec<UsageRow> = crate::db::on_reader!(db, |p| sqlx::query_as(
            "SELECT lease_id, result, error_message, duration_ms FROM credential_usage \
             ORDER BY lease_id, id"
        )
        .fetch_all(p)
        .await)
        .unwrap();
        let accounts = accounts.iter().map(|a| format!("{a:?}"));
        let leases = leases.iter().map(|l| format!("{l:?}"));
        accounts
            .chain(leases)
            .chain(usage.iter().map(|u| format!("{u:?}")))
            .collect()
    }

    #[tokio::test]
    async fn a_batch_lends_accounts_as_acquires_one_after_the_other_would() {
        let answers = both_ways(vec![
            vec![
                acquire("default", "l1", NOW),
                acquire("other", "l2", NOW),
                acquire("default", "l3", NOW),
                acquire("other", "l4", NOW),
            ],
            vec![
                release("l1", 1, LeaseResult::Success, NOW + 2),
                acquire("default", "l5", NOW + 2),
                acquire("default", "l6", NOW + 2),
                acquire("default", "l7", NOW + 2),
            ],
        ])
        .await;
        assert_eq!(
            answers[0],
            [
                "a1@example.com closed []",
                "b1@example.com closed []",
                "a2@example.com closed []",
                "none"
            ]
        );
        // Never used first (a3, a4), then the fewest uses and the least recently used (a1).
        assert_eq!(
            answers[1],
            [
                "Some(\"success\") None",
                "a3@example.com closed []",
                "a4@example.com closed []",
                "a1@example.com closed []"
            ]
        );
    }

    /// An acquire that asked before a release of the pool's only account, in the same batch: the
    /// batch happens when its last write was asked for, so the account's next lease begins when
    /// the last one ended, not before.
    #[tokio::test]
    async fn a_batch_is_one_instant_and_leases_of_an_account_never_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("pool.db").display());
        let db = pool_db(&url).await;
        LeaseBatch::run(&db, &[acquire("other", "l1", NOW)])
            .await
            .unwrap();
        let done = LeaseBatch::run(
            &db,
            &[
                acquire("other", "l2", NOW + 1),
                release("l1", 1, LeaseResult::Success, NOW + 5),
            ],
        )
        .await
        .unwrap();
        let Outcome::Acquired(Some(second)) = &done[0] else {
            panic!(
                "the released account was not lent again: {}",
                said(&done[0])
            );
        };
        let Outcome::Released(Ok((first, _))) = &done[1] else {
            panic!("not released: {}", said(&done[1]));
        };
        assert_eq!(first.released_at, Some(NOW + 5));
        assert_eq!(second.lease.acquired_at, NOW + 5, "begins when l1 ended");
        assert_eq!(second.lease.expires_at, NOW + 5 + TTL, "keeps its length");
        let stored = crate::store::leases::get(&db, "l2").await.unwrap();
        assert_eq!(
            (stored.acquired_at, stored.expires_at),
            (NOW + 5, NOW + 5 + TTL)
        );
    }

    #[tokio::test]
    async fn a_batch_answers_each_release_as_alone() {
        let answers = both_ways(vec![
            vec![
                acquire("default", "l1", NOW),
                acquire("default", "l2", NOW),
                acquire("default", "l3", NOW),
            ],
            vec![
                release("l1", 1, LeaseResult::Success, NOW + 10),
                release("l1", 1, LeaseResult::Success, NOW + 10),
                release("l2", 2, LeaseResult::Success, NOW + 10),
                release("nope", 1, LeaseResult::Success, NOW + 10),
                release("l2", 1, LeaseResult::Banned, NOW + 10),
                release("l3", 1, LeaseResult::LoginFail, NOW + 10),
            ],
        ])
        .await;
        assert_eq!(
            answers[1],
            [
                "Some(\"success\") None".to_string(),
                "Released".to_string(),
                "NotHolder".to_string(),
                "no such lease".to_string(),
                format!("Some(\"banned\") Some({})", NOW + 10 + 3_600_000),
                "Some(\"login_fail\") None".to_string(),
            ]
        );
    }

    #[tokio::test]
    async fn expired_leases_found_by_a_batch_are_closed_once() {
        let late = NOW + TTL + 5;
        let answers = both_ways(vec![
            vec![acquire("other", "l1", NOW), acquire("default", "l2", NOW)],
            // l1's account comes back after its expiry: the acquire closes l1; l2's holder is
            // late twice, and only the first is told how long the lease lasted.
            vec![
                acquire("other", "l3", late),
                release("l2", 1, LeaseResult::Success, late),
                release("l2", 1, LeaseResult::Success, late),
            ],
        ])
        .await;
        assert_eq!(
            answers[1],
            [
                format!("b1@example.com closed [{TTL}]"),
                format!("Expired {{ closed_ms: Some({TTL}) }}"),
                "Expired { closed_ms: None }".to_string(),
            ]
        );
    }
}
