//! Leases of credential accounts and the usage log (pool database). Only this module and its
//! batches for the worker API ([`super::lease_desk`]) write `credential_leases` and
//! `credential_usage`, and change an account's lease fields (`current_lease_id`, `leased_until`,
//! the resting timestamps after a release).
//!
//! Two acquires never get the same account: the choice and the claim are one `UPDATE ... WHERE id =
//! (SELECT ... LIMIT n)`, which on PostgreSQL skips rows other transactions hold (`FOR UPDATE SKIP
//! LOCKED`) and on SQLite runs through the single writer. A lease past its expiry is over whether
//! or not anything noticed: availability reads `leased_until`; its `expired` usage row is written
//! by whichever comes first of the next acquire of the account, a late release or renew, or the
//! housekeeping step [`expire_overdue`].

use std::collections::HashMap;

use serde::Serialize;
use sqlx::FromRow;

use super::credential_accounts::{self, Account};
use super::{StoreError, StoreResult};
use crate::db::{Backend, PoolDb, in_transaction, on_reader};
use crate::domain::leases::{LeasePolicy, LeaseResult};

#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct Lease {
    /// UUID.
    pub id: String,
    pub account_id: i64,
    pub pool: String,
    /// The worker name given on acquire.
    pub worker: String,
    /// The API token that holds the lease; only it may renew or release.
    pub holder_token_id: i64,
    pub mission: Option<String>,
    pub acquired_at: i64,
    pub expires_at: i64,
    pub released_at: Option<i64>,
    pub renewals: i64,
    /// `success`, `no_slot`, `login_fail`, `error`, `banned` or `expired`; null while open.
    pub result: Option<String>,
}

pub(crate) const LEASE_COLUMNS: &str = "id, account_id, pool, worker, holder_token_id, mission, acquired_at, \
    expires_at, released_at, renewals, result";

/// [`LEASE_COLUMNS`] of the table aliased `alias`.
pub(crate) fn lease_columns(alias: &str) -> String {
    LEASE_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A lease with its account's login, for lists.
#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct LeaseWithLogin {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub lease: Lease,
    pub login: String,
}

/// What an acquire hands out: the lease, the account and its sealed password.
pub struct Acquired {
    pub lease: Lease,
    pub account: Account,
    pub password_sealed: String,
    /// Durations (ms) of the account's earlier leases that this acquire found expired and closed.
    pub closed_expired: Vec<i64>,
}

/// Why a renew or release was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The lease belongs to another token.
    NotHolder,
    /// The lease was released already.
    Released,
    /// The lease passed its expiry. `closed_ms`: the lease's length when this call was the one
    /// that closed it (as `expired`), so the caller can count it as ended.
    Expired { closed_ms: Option<i64> },
}

fn backend(db: &PoolDb) -> Backend {
    db.0.backend()
}

/// Closes open leases past their expiry (of one account or lease when given): `result = expired`
/// at `expires_at`, one usage row each, and the account, when the lease is still its current one,
/// rests one cooldown from the expiry. Runs inside a transaction `$tx`; evaluates to the closed
/// leases' durations in milliseconds (one per lease).
macro_rules! close_expired {
    ($tx:ident, $now:expr, $cooldown_ms:expr, $account:expr, $lease:expr) => {{
        let closed: Vec<(String, i64, String, Option<String>, i64, i64)> = sqlx::query_as(
            "UPDATE credential_leases SET released_at = expires_at, result = 'expired' \
             WHERE released_at IS NULL AND expires_at <= $1 \
             AND ($2 IS NULL OR account_id = $2) AND ($3 IS NULL OR id = $3) \
             RETURNING id, account_id, pool, mission, acquired_at, expires_at",
        )
        .bind($now)
        .bind($account)
        .bind($lease)
        .fetch_all(&mut *$tx)
        .await?;
        for (id, account_id, pool, mission, acquired_at, expires_at) in &closed {
            sqlx::query(
                "INSERT INTO credential_usage (account_id, login, pool, lease_id, mission, result, \
                 error_message, started_at, finished_at, duration_ms) \
                 SELECT $1, login, $2, $3, $4, 'expired', NULL, $5, $6, $7 \
                 FROM credential_accounts WHERE id = $1",
            )
            .bind(account_id)
            .bind(pool)
            .bind(id)
            .bind(mission)
            .bind(acquired_at)
            .bind(expires_at)
            .bind(expires_at - acquired_at)
            .execute(&mut *$tx)
            .await?;
            sqlx::query(
                "UPDATE credential_accounts SET leased_until = NULL, current_lease_id = NULL, \
                 cooldown_until = CASE WHEN cooldown_until IS NULL OR cooldown_until < $3 \
                   THEN $3 ELSE cooldown_until END \
                 WHERE id = $1 AND current_lease_id = $2",
            )
            .bind(account_id)
            .bind(id)
            .bind(expires_at + $cooldown_ms)
            .execute(&mut *$tx)
            .await?;
        }
        closed
            .iter()
            .map(|(_, _, _, _, acquired_at, expires_at)| expires_at - acquired_at)
            .collect::<Vec<i64>>()
    }};
}

pub(crate) use close_expired;

/// The `SET` list that lends an account: to lease `{lease}` until `{expires}`, used at `{now}`
/// (SQL expressions). The expressions read the old row: a quarantine that is over ends here, and
/// the failure count starts again from 0.
pub(crate) fn claim_set(lease: &str, expires: &str, now: &str) -> String {
    format!(
        "current_lease_id = {lease}, leased_until = {expires}, \
         last_used_at = {now}, total_uses = total_uses + 1, \
         consecutive_failures = CASE WHEN quarantine_until IS NOT NULL AND quarantine_until <= {now} \
           THEN 0 ELSE consecutive_failures END, \
         quarantine_until = CASE WHEN quarantine_until IS NOT NULL AND quarantine_until <= {now} \
           THEN NULL ELSE quarantine_until END, \
         updated_at = {now}"
    )
}

/// The claim of an acquire, one statement on PostgreSQL and one round trip to SQLite's writer
/// (binds: `$1` pool, `$2` lease id, `$3` expiry, `$4` now, `$5` cooldown ms, `$6` worker, `$7`
/// token id, `$8` mission). It picks the first available account in `selection_order`, which is
/// the order of the `credential_accounts_pick` index (never used is `total_uses = 0`; pool
/// migration 0009), so it stops at the first available entry instead of sorting the pool; marks it
/// lent; inserts the lease; and returns the account with the id of a lease still open on it from
/// before (`previous_lease`: it has expired, or the account would not have been available).
///
/// On PostgreSQL a data-modifying `WITH` does it all, and the chosen row is locked `FOR UPDATE SKIP
/// LOCKED`, so concurrent acquires pass over it. SQLite has no data-modifying `WITH`: the claim
/// and the insert are two statements sent together (the insert finds the account by its new
/// `current_lease_id`, through the partial index `credential_accounts_leased`), run by the single
/// writer.
pub(crate) fn acquire_sql(backend: Backend) -> sqlx::AssertSqlSafe<String> {
    let available = credential_accounts::available_sql("$4", "$5");
    let columns = credential_accounts::COLUMNS;
    let set = claim_set("$2", "$3", "$4");
    let pick = format!(
        "SELECT id AS pick_id, current_lease_id AS previous_lease FROM credential_accounts \
         WHERE pool = $1 AND {available} ORDER BY total_uses, last_used_at, id LIMIT 1"
    );
    let insert = "INSERT INTO credential_leases (id, account_id, pool, worker, holder_token_id, \
        mission, acquired_at, expires_at, released_at, renewals, result) \
        SELECT $2, id, $1, $6, $7, $8, $4, $3, NULL, 0, NULL";
    sqlx::AssertSqlSafe(match backend {
        Backend::Postgres => format!(
            "WITH pick AS ({pick} FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE credential_accounts SET {set} FROM pick WHERE id = pick_id \
               RETURNING {columns}, password_sealed, previous_lease), \
             lease AS ({insert} FROM claimed) \
             SELECT * FROM claimed"
        ),
        // The lease is inserted after the claim, so an open lease of the account is an old one.
        Backend::Sqlite => format!(
            "UPDATE credential_accounts SET {set} WHERE id = (SELECT pick_id FROM ({pick})) \
             RETURNING {columns}, password_sealed, (SELECT l.id FROM credential_leases l \
               WHERE l.account_id = credential_accounts.id AND l.released_at IS NULL LIMIT 1) \
               AS previous_lease; \
             {insert} FROM credential_accounts WHERE current_lease_id = $2"
        ),
    })
}

/// An account row claimed by an acquire, with its sealed password.
#[derive(FromRow)]
pub(crate) struct Claimed {
    #[sqlx(flatten)]
    pub account: Account,
    pub password_sealed: String,
    /// A lease still open on the account from before this one: it has expired.
    pub previous_lease: Option<String>,
}

/// Lends the first available account of a pool inside the write transaction `$tx` (which the
/// caller commits): evaluates to `Option<Acquired>`. The one body of every acquire, shared by
/// [`acquire`] and `store::missions::claim`, so a mission's lease follows the same rules.
macro_rules! acquire_in {
    ($tx:ident, $backend:expr, pool: $pool:expr, lease_id: $lease_id:expr, worker: $worker:expr,
     token_id: $token_id:expr, mission: $mission:expr, now: $now:expr, expires_at: $expires_at:expr,
     cooldown_ms: $cooldown_ms:expr) => {{
        use $crate::db::Backend;
        let backend: Backend = $backend;
        let (pool, lease_id, worker, token_id) = ($pool, $lease_id, $worker, $token_id);
        let (mission, now, expires_at, cooldown_ms) = ($mission, $now, $expires_at, $cooldown_ms);
        // `fetch_all`: SQLite's second statement runs only when the rows are read to the end.
        let claimed: Vec<$crate::store::leases::Claimed> =
            sqlx::query_as($crate::store::leases::acquire_sql(backend))
                .bind(pool)
                .bind(lease_id)
                .bind(expires_at)
                .bind(now)
                .bind(cooldown_ms)
                .bind(worker)
                .bind(token_id)
                .bind(mission)
                .fetch_all(&mut *$tx)
                .await?;
        match claimed.into_iter().next() {
            None => None,
            Some(claimed) => {
                // The account was available, so a lease still open on it has expired: close it.
                let closed_expired = match claimed.previous_lease.as_deref() {
                    None => Vec::new(),
                    Some(previous) => $crate::store::leases::close_expired!(
                        $tx,
                        now,
                        cooldown_ms,
                        None::<i64>,
                        Some(previous)
                    ),
                };
                let lease = $crate::store::leases::Lease {
                    id: lease_id.to_string(),
                    account_id: claimed.account.id,
                    pool: pool.to_string(),
                    worker: worker.to_string(),
                    holder_token_id: token_id,
                    mission: mission.map(str::to_string),
                    acquired_at: now,
                    expires_at,
                    released_at: None,
                    renewals: 0,
                    result: None,
                };
                Some($crate::store::leases::Acquired {
                    lease,
                    account: claimed.account,
                    password_sealed: claimed.password_sealed,
                    closed_expired,
                })
            }
        }
    }};
}

pub(crate) use acquire_in;

pub(crate) fn lock_lease_sql(backend: Backend) -> sqlx::AssertSqlSafe<String> {
    let lock = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE",
    };
    sqlx::AssertSqlSafe(format!(
        "SELECT {LEASE_COLUMNS} FROM credential_leases WHERE id = $1{lock}"
    ))
}

/// Checks a lease read under lock: holder first, then released, then expired.
pub(crate) fn refusal(lease: &Lease, token_id: i64, now: i64) -> Option<Refusal> {
    if lease.holder_token_id != token_id {
        Some(Refusal::NotHolder)
    } else if lease.result.as_deref() == Some("expired")
        || (lease.released_at.is_none() && lease.expires_at <= now)
    {
        Some(Refusal::Expired { closed_ms: None })
    } else if lease.released_at.is_some() {
        Some(Refusal::Released)
    } else {
        None
    }
}

/// Moves an open lease's expiry to `expires_at`. `NotFound` for an unknown lease.
pub async fn renew(
    db: &PoolDb,
    lease_id: &str,
    token_id: i64,
    now: i64,
    expires_at: i64,
    cooldown_ms: i64,
) -> StoreResult<Result<Lease, Refusal>> {
    let select = lock_lease_sql(backend(db));
    let update = sqlx::AssertSqlSafe(format!(
        "UPDATE credential_leases SET expires_at = $2, renewals = renewals + 1 WHERE id = $1 \
         RETURNING {LEASE_COLUMNS}"
    ));
    in_transaction!(db, |tx| {
        let lease: Lease = sqlx::query_as(select)
            .bind(lease_id)
            .fetch_one(&mut *tx)
            .await?;
        if let Some(refused) = refusal(&lease, token_id, now) {
            if let Refusal::Expired { .. } = refused {
                let closed = close_expired!(tx, now, cooldown_ms, None::<i64>, Some(lease_id));
                tx.commit().await?;
                return Ok(Err(Refusal::Expired {
                    closed_ms: closed.first().copied(),
                }));
            }
            return Ok(Err(refused));
        }
        let lease: Lease = sqlx::query_as(update)
            .bind(lease_id)
            .bind(expires_at)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE credential_accounts SET leased_until = $3, updated_at = $4 \
             WHERE id = $1 AND current_lease_id = $2",
        )
        .bind(lease.account_id)
        .bind(lease_id)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(lease))
    })
}

/// Reads (and on PostgreSQL locks) the resting state of a lease's account: `$1` the account id.
pub(crate) fn release_account_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "SELECT cooldown_until, quarantine_until, consecutive_failures, login \
             FROM credential_accounts WHERE id = $1"
        }
        Backend::Postgres => {
            "SELECT cooldown_until, quarantine_until, consecutive_failures, login \
             FROM credential_accounts WHERE id = $1 FOR UPDATE"
        }
    }
}

/// The writes of a release: the account rests (`$1` account, `$2` lease, `$3` cooldown until,
/// `$4` quarantine until, `$5` failures, `$6` 1 for a success, `$7` now), the lease ends (`$2`,
/// `$7`, `$8` result) and its usage row is written (also `$9` login, `$10` error message). One
/// statement on PostgreSQL; on SQLite three sent together, one round trip to the writer.
pub(crate) fn release_writes_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => {
            "WITH rested AS (\
               UPDATE credential_accounts SET cooldown_until = $3, quarantine_until = $4, \
               consecutive_failures = $5, total_successes = total_successes + $6, \
               leased_until = NULL, current_lease_id = NULL, updated_at = $7 \
               WHERE id = $1 AND current_lease_id = $2), \
             finished AS (UPDATE credential_leases SET released_at = $7, result = $8 WHERE id = $2 \
               RETURNING account_id, pool, id, mission, acquired_at) \
             INSERT INTO credential_usage (account_id, login, pool, lease_id, mission, result, \
               error_message, started_at, finished_at, duration_ms) \
             SELECT account_id, $9, pool, id, mission, $8, $10, acquired_at, $7, $7 - acquired_at \
             FROM finished"
        }
        Backend::Sqlite => {
            "UPDATE credential_accounts SET cooldown_until = $3, quarantine_until = $4, \
               consecutive_failures = $5, total_successes = total_successes + $6, \
               leased_until = NULL, current_lease_id = NULL, updated_at = $7 \
               WHERE id = $1 AND current_lease_id = $2; \
             UPDATE credential_leases SET released_at = $7, result = $8 WHERE id = $2; \
             INSERT INTO credential_usage (account_id, login, pool, lease_id, mission, result, \
               error_message, started_at, finished_at, duration_ms) \
             SELECT account_id, $9, pool, id, mission, $8, $10, acquired_at, $7, $7 - acquired_at \
             FROM credential_leases WHERE id = $2"
        }
    }
}

/// What a release does, worked out from the lease and its account's resting state: how the account
/// rests after it (`domain::leases::after_release`), the finished lease, and until when the release
/// quarantined the account anew, if it did.
pub(crate) struct Release {
    pub result: LeaseResult,
    pub after: crate::domain::leases::Resting,
    pub finished: Lease,
    pub quarantined_until: Option<i64>,
}

impl Release {
    pub(crate) fn decide(
        lease: &Lease,
        resting: &RestingRow,
        result: LeaseResult,
        now: i64,
        policy: &LeasePolicy,
    ) -> Self {
        let before = crate::domain::leases::Resting {
            cooldown_until: resting.cooldown_until,
            quarantine_until: resting.quarantine_until,
            consecutive_failures: resting.consecutive_failures,
        };
        let after = crate::domain::leases::after_release(policy, before, result, now);
        Self {
            result,
            after,
            finished: Lease {
                released_at: Some(now),
                result: Some(result.as_str().to_string()),
                ..lease.clone()
            },
            quarantined_until: crate::domain::leases::quarantine_started(before, after),
        }
    }

    /// 1 when the release counts as a success (`total_successes`), else 0.
    pub(crate) fn success(&self) -> i64 {
        i64::from(self.result == LeaseResult::Success)
    }
}

/// An account's resting state as a release reads it (under lock on PostgreSQL), with its login
/// for the usage row.
#[derive(FromRow)]
pub(crate) struct RestingRow {
    pub cooldown_until: Option<i64>,
    pub quarantine_until: Option<i64>,
    pub consecutive_failures: i64,
    pub login: String,
}

/// The writes of a release inside the write transaction `$tx`, the account's resting state
/// `$resting` ([`RestingRow`]) already read: the account rests as
/// `domain::leases::after_release` says and one usage row is written. Evaluates to the finished
/// `Lease` and, when the release quarantined the account anew, until when; the caller commits.
macro_rules! finish_release {
    ($tx:ident, $backend:expr, lease: $lease:expr, resting: $resting:expr, result: $result:expr,
     error_message: $error_message:expr, now: $now:expr, policy: $policy:expr) => {{
        let backend: $crate::db::Backend = $backend;
        let lease: &$crate::store::leases::Lease = $lease;
        let resting: &$crate::store::leases::RestingRow = $resting;
        let result: $crate::domain::leases::LeaseResult = $result;
        let error_message: Option<&str> = $error_message;
        let now: i64 = $now;
        let release = $crate::store::leases::Release::decide(lease, resting, result, now, $policy);
        sqlx::query($crate::store::leases::release_writes_sql(backend))
            .bind(lease.account_id)
            .bind(&lease.id)
            .bind(release.after.cooldown_until)
            .bind(release.after.quarantine_until)
            .bind(release.after.consecutive_failures)
            .bind(release.success())
            .bind(now)
            .bind(result.as_str())
            .bind(&resting.login)
            .bind(error_message)
            .execute(&mut *$tx)
            .await?;
        (release.finished, release.quarantined_until)
    }};
}

pub(crate) use finish_release;

/// Ends the open lease `$lease` (read under lock, refusals already checked) with `$result` inside
/// the write transaction `$tx`: reads the account's resting state, then [`finish_release`]
/// (and evaluates to what it does); the caller commits. Used by `store::missions::complete`.
macro_rules! release_in {
    ($tx:ident, $backend:expr, lease: $lease:expr, result: $result:expr,
     error_message: $error_message:expr, now: $now:expr, policy: $policy:expr) => {{
        let backend: $crate::db::Backend = $backend;
        let lease: &$crate::store::leases::Lease = $lease;
        let resting: $crate::store::leases::RestingRow =
            sqlx::query_as($crate::store::leases::release_account_sql(backend))
                .bind(lease.account_id)
                .fetch_one(&mut *$tx)
                .await?;
        $crate::store::leases::finish_release!($tx, backend, lease: lease, resting: &resting,
            result: $result, error_message: $error_message, now: $now, policy: $policy)
    }};
}

pub(crate) use release_in;

/// Closes those of `leases` (id and the cooldown to rest its account, ms) that are still open
/// past their expiry at `now`, as [`close_expired`] does; the lengths (ms) of the leases it
/// closed, by id.
pub(crate) async fn close_if_expired(
    db: &PoolDb,
    leases: &[(String, i64)],
    now: i64,
) -> StoreResult<HashMap<String, i64>> {
    in_transaction!(db, |tx| {
        let mut closed = HashMap::new();
        for (id, cooldown_ms) in leases {
            let lengths = close_expired!(tx, now, *cooldown_ms, None::<i64>, Some(id.as_str()));
            if let Some(length) = lengths.first() {
                closed.insert(id.clone(), *length);
            }
        }
        tx.commit().await?;
        Ok::<_, StoreError>(closed)
    })
}

/// Closes every open lease past its expiry (housekeeping); returns their durations in ms, one per
/// lease closed. Correctness never waits for it: availability and release read the timestamps.
pub async fn expire_overdue(db: &PoolDb, now: i64, cooldown_ms: i64) -> StoreResult<Vec<i64>> {
    in_transaction!(db, |tx| {
        let closed = close_expired!(tx, now, cooldown_ms, None::<i64>, None::<&str>);
        tx.commit().await?;
        Ok::<Vec<i64>, StoreError>(closed)
    })
}

pub async fn get(db: &PoolDb, lease_id: &str) -> StoreResult<Lease> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {LEASE_COLUMNS} FROM credential_leases WHERE id = $1"
    ));
    Ok(on_reader!(db, |p| sqlx::query_as(sql)
        .bind(lease_id)
        .fetch_one(p)
        .await)?)
}

/// The page and count queries of [`list`]. Each reads an index, never the whole lease table, which
/// grows by a row per lease for as long as poolkeeper runs: the open leases through
/// `credential_leases_open` (at most one per account), all of them newest first through
/// `credential_leases_newest` (pool migration 0014). Open ones take `$1` now, then the page's
/// limit and offset; all of them take the limit and offset as `$1` and `$2`.
fn list_sql(active_only: bool) -> (String, String) {
    let cols = lease_columns("l");
    let (open, first_page_param) = if active_only {
        ("WHERE l.released_at IS NULL AND l.expires_at > $1", 2)
    } else {
        ("", 1)
    };
    let (limit, offset) = (first_page_param, first_page_param + 1);
    (
        format!(
            "SELECT {cols}, a.login FROM credential_leases l \
             JOIN credential_accounts a ON a.id = l.account_id {open} \
             ORDER BY l.acquired_at DESC, l.id DESC LIMIT ${limit} OFFSET ${offset}"
        ),
        format!("SELECT COUNT(*) FROM credential_leases l {open}"),
    )
}

/// Leases, newest first; with `active_only`, those open and unexpired at `now`.
pub async fn list(
    db: &PoolDb,
    active_only: bool,
    now: i64,
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<LeaseWithLogin>, i64)> {
    let (page, count) = list_sql(active_only);
    let (page, count) = (sqlx::AssertSqlSafe(page), sqlx::AssertSqlSafe(count));
    let items = on_reader!(db, |p| {
        let q = sqlx::query_as(page);
        let q = if active_only { q.bind(now) } else { q };
        q.bind(limit).bind(offset).fetch_all(p).await
    })?;
    let total: i64 = on_reader!(db, |p| {
        let q = sqlx::query_scalar(count);
        let q = if active_only { q.bind(now) } else { q };
        q.fetch_one(p).await
    })?;
    Ok((items, total))
}

/// How the database runs [`list`]: the plan of the page query, then that of the count, as the
/// backend's EXPLAIN prints them (`EXPLAIN QUERY PLAN` details on SQLite), one line each. For the
/// tests that check which index each reads.
pub async fn explain_list(
    db: &PoolDb,
    active_only: bool,
    now: i64,
) -> StoreResult<(Vec<String>, Vec<String>)> {
    let explain = super::explain_prefix(db.0.backend());
    let (page, count) = list_sql(active_only);
    let mut plans = Vec::new();
    for (sql, paged) in [(page, true), (count, false)] {
        let sql = sqlx::AssertSqlSafe(format!("{explain} {sql}"));
        let lines = on_reader!(db, |p| {
            let q = sqlx::query(sql);
            let q = if active_only { q.bind(now) } else { q };
            let q = if paged { q.bind(50_i64).bind(0_i64) } else { q };
            super::plan_lines(&q.fetch_all(p).await?)
        })?;
        plans.push(lines);
    }
    let count = plans.pop().unwrap_or_default();
    let page = plans.pop().unwrap_or_default();
    Ok((page, count))
}

/// One finished lease.
#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub account_id: i64,
    pub login: String,
    pub pool: String,
    pub lease_id: String,
    pub mission: Option<String>,
    pub result: String,
    pub error_message: Option<String>,
    pub started_at: i64,
    pub finished_at: i64,
    pub duration_ms: i64,
}

const USAGE_COLUMNS: &str = "account_id, login, pool, lease_id, mission, result, error_message, \
    started_at, finished_at, duration_ms";

/// The latest `limit` usage rows of an account, newest first.
pub async fn recent_usage(db: &PoolDb, account_id: i64, limit: i64) -> StoreResult<Vec<Usage>> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {USAGE_COLUMNS} FROM credential_usage WHERE account_id = $1 \
         ORDER BY finished_at DESC, id DESC LIMIT $2"
    ));
    Ok(on_reader!(db, |p| sqlx::query_as(sql)
        .bind(account_id)
        .bind(limit)
        .fetch_all(p)
        .await)?)
}

/// How usage is grouped in a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageGroup {
    /// By UTC day; the key is the day number since the epoch.
    Day,
    /// By account id.
    Account,
    /// By mission (`""` for none).
    Mission,
}

#[derive(Clone, Debug, FromRow)]
pub struct UsageRow {
    pub key: String,
    pub uses: i64,
    pub successes: i64,
    pub failures: i64,
    pub mean_duration_ms: Option<f64>,
}

/// Usage finished in `[from, to)`, grouped. Failures are `login_fail`, `error`, `banned` and
/// `expired`; `no_slot` is neither a success nor a failure.
pub async fn usage_report(
    db: &PoolDb,
    from: i64,
    to: i64,
    group: UsageGroup,
) -> StoreResult<Vec<UsageRow>> {
    let key = match group {
        UsageGroup::Day => "CAST(finished_at / 86400000 AS TEXT)",
        UsageGroup::Account => "CAST(account_id AS TEXT)",
        UsageGroup::Mission => "COALESCE(mission, '')",
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {key} AS key, COUNT(*) AS uses, \
         CAST(SUM(CASE WHEN result = 'success' THEN 1 ELSE 0 END) AS BIGINT) AS successes, \
         CAST(SUM(CASE WHEN result IN ('login_fail', 'error', 'banned', 'expired') THEN 1 ELSE 0 END) AS BIGINT) AS failures, \
         CAST(AVG(duration_ms) AS DOUBLE PRECISION) AS mean_duration_ms \
         FROM credential_usage WHERE finished_at >= $1 AND finished_at < $2 \
         GROUP BY {key} ORDER BY MIN(finished_at)"
    ));
    Ok(on_reader!(db, |p| sqlx::query_as(sql)
        .bind(from)
        .bind(to)
        .fetch_all(p)
        .await)?)
}
