//! Missions (pool database): queued requests and the claims that run them. Only this module
//! writes `mission_requests` and `mission_claims`. A claim's lease is taken and released by the
//! bodies `store::leases` shares (`acquire_in!`, `release_in!`) inside the claim's own
//! transaction, so a mission's account follows the leasing rules and a claim that finds no
//! account writes nothing.
//!
//! Limits are the database's: a running claim holds a `slot`, and partial unique indexes allow one
//! running claim per mission key and one per slot. Slots are chosen in `1..=max_concurrent`, so no
//! more claims run than that, however claims race; a claim that loses a race gets `Conflict` and
//! its whole transaction (lease included) rolls back.
//!
//! A claim lasts as long as its lease is open and unexpired. One whose lease has ended without a
//! complete is expired by [`sweep_claims!`], at the start of every claim, in a refused complete,
//! and by the housekeeping step [`expire_overdue`]: its requests go back to pending.

use serde::Serialize;
use sqlx::FromRow;

use super::leases::{
    Acquired, Lease, acquire_in, close_expired, lock_lease_sql, refusal, release_in,
};
use super::{StoreError, StoreResult};
use crate::db::{Backend, PoolDb, in_transaction, on_reader, on_writer};
use crate::domain::leases::{LeasePolicy, LeaseResult};
use crate::domain::missions::{RequestStatus, check_reported, free_slot};

/// One queued unit of work.
#[derive(Clone, Debug, FromRow)]
pub struct MissionRequest {
    pub id: i64,
    pub mission: String,
    pub mission_key: String,
    /// JSON text.
    pub payload: String,
    /// `pending`, `claimed`, `done` or `failed`.
    pub status: String,
    pub claim_id: Option<String>,
    /// Claims that have taken the request.
    pub attempts: i64,
    /// JSON text, as the worker reported it.
    pub result: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

const REQUEST_COLUMNS: &str = "id, mission, mission_key, payload, status, claim_id, attempts, \
    result, created_at, updated_at, finished_at";

/// One run of a mission by one worker.
#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct MissionClaim {
    /// UUID.
    pub id: String,
    /// The mission name of the oldest request the claim took.
    pub mission: String,
    /// The mission name lower-cased: what groups requests into one mission.
    pub mission_key: String,
    /// The concurrency slot held while running; null once ended.
    pub slot: Option<i64>,
    /// `running`, `completed` or `expired`.
    pub status: String,
    pub worker: String,
    pub holder_token_id: i64,
    pub lease_id: String,
    /// The lease result given on complete.
    pub result: Option<String>,
    pub claimed_at: i64,
    pub ended_at: Option<i64>,
}

const CLAIM_COLUMNS: &str = "id, mission, mission_key, slot, status, worker, holder_token_id, \
    lease_id, result, claimed_at, ended_at";

/// What sweeping ended claims did.
#[derive(Clone, Debug, Default)]
pub struct Swept {
    pub claims_expired: usize,
    /// Requests put back to pending.
    pub requests_returned: u64,
    /// Durations (ms) of the claims' expired leases closed on the way.
    pub leases_closed: Vec<i64>,
}

impl Swept {
    fn add(&mut self, other: Swept) {
        self.claims_expired += other.claims_expired;
        self.requests_returned += other.requests_returned;
        self.leases_closed.extend(other.leases_closed);
    }
}

fn backend(db: &PoolDb) -> Backend {
    db.0.backend()
}

/// Ends running claims (all, or the one given) whose lease is no longer open and unexpired:
/// status `expired`, slot given up, their claimed requests back to pending, and an expired lease
/// closed as `store::leases` closes it. Runs inside a transaction `$tx`; evaluates to [`Swept`].
macro_rules! sweep_claims {
    ($tx:ident, $now:expr, $cooldown_ms:expr, $claim:expr) => {{
        let ended: Vec<(String, String)> = sqlx::query_as(
            "UPDATE mission_claims SET slot = NULL, status = 'expired', ended_at = $1 \
             WHERE slot IS NOT NULL AND ($2 IS NULL OR id = $2) \
             AND NOT EXISTS (SELECT 1 FROM credential_leases l WHERE l.id = mission_claims.lease_id \
               AND l.released_at IS NULL AND l.expires_at > $1) \
             RETURNING id, lease_id",
        )
        .bind($now)
        .bind($claim)
        .fetch_all(&mut *$tx)
        .await?;
        let mut swept = Swept {
            claims_expired: ended.len(),
            ..Swept::default()
        };
        for (claim_id, lease_id) in &ended {
            let returned = sqlx::query(
                "UPDATE mission_requests SET status = 'pending', claim_id = NULL, updated_at = $2 \
                 WHERE claim_id = $1 AND status = 'claimed'",
            )
            .bind(claim_id)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
            swept.requests_returned += returned.rows_affected();
            let closed = close_expired!($tx, $now, $cooldown_ms, None::<i64>, Some(lease_id));
            swept.leases_closed.extend(closed);
        }
        swept
    }};
}

/// Queues a request.
pub async fn insert_request(
    db: &PoolDb,
    mission: &str,
    mission_key: &str,
    payload: &str,
    now: i64,
) -> StoreResult<MissionRequest> {
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO mission_requests (mission, mission_key, payload, status, attempts, \
         created_at, updated_at) VALUES ($1, $2, $3, 'pending', 0, $4, $4) \
         RETURNING {REQUEST_COLUMNS}"
    ));
    on_writer!(db, |p| sqlx::query_as(sql)
        .bind(mission)
        .bind(mission_key)
        .bind(payload)
        .bind(now)
        .fetch_one(p)
        .await
        .map_err(StoreError::from))
}

pub async fn get_request(db: &PoolDb, id: i64) -> StoreResult<MissionRequest> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {REQUEST_COLUMNS} FROM mission_requests WHERE id = $1"
    ));
    Ok(on_reader!(db, |p| sqlx::query_as(sql)
        .bind(id)
        .fetch_one(p)
        .await)?)
}

pub async fn get_claim(db: &PoolDb, id: &str) -> StoreResult<MissionClaim> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {CLAIM_COLUMNS} FROM mission_claims WHERE id = $1"
    ));
    Ok(on_reader!(db, |p| sqlx::query_as(sql)
        .bind(id)
        .fetch_one(p)
        .await)?)
}

/// Claims running now (slot held), by slot.
pub async fn running_claims(db: &PoolDb) -> StoreResult<Vec<MissionClaim>> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {CLAIM_COLUMNS} FROM mission_claims WHERE slot IS NOT NULL ORDER BY slot"
    ));
    Ok(on_reader!(db, |p| sqlx::query_as(sql).fetch_all(p).await)?)
}

/// Who claims, for how long, and how much.
pub struct ClaimAsk<'a> {
    pub claim_id: &'a str,
    pub lease_id: &'a str,
    pub pool: &'a str,
    pub worker: &'a str,
    pub token_id: i64,
    pub now: i64,
    pub expires_at: i64,
    pub cooldown_ms: i64,
    pub max_concurrent: i64,
    pub max_requests: i64,
}

/// A claim that got its mission: the claim, the requests it took (oldest first) and its lease.
pub struct Claimed {
    pub claim: MissionClaim,
    pub requests: Vec<MissionRequest>,
    pub acquired: Acquired,
}

pub enum ClaimOutcome {
    /// No mission with pending requests that nobody runs.
    NoWork,
    /// Work waits, but `max_concurrent` missions run already.
    AllSlotsBusy,
    /// Work waits, but no account of the pool is available; nothing was written for this claim.
    NoAccount,
    Claimed(Box<Claimed>),
}

/// Claims the oldest mission (by its oldest pending request) that nobody runs, with a lease on an
/// account and up to `max_requests` of its pending requests, in one transaction. Claims whose
/// lease ended are swept first (and that is kept whatever the outcome). `Conflict` when a
/// concurrent claim took the same mission or slot first: nothing of this claim was written.
pub async fn claim(db: &PoolDb, ask: &ClaimAsk<'_>) -> StoreResult<(ClaimOutcome, Swept)> {
    let backend = backend(db);
    let insert_claim = sqlx::AssertSqlSafe(format!(
        "INSERT INTO mission_claims ({CLAIM_COLUMNS}) \
         VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, NULL, $8, NULL) RETURNING {CLAIM_COLUMNS}"
    ));
    let take_requests = sqlx::AssertSqlSafe(format!(
        "UPDATE mission_requests SET status = 'claimed', claim_id = $1, attempts = attempts + 1, \
         updated_at = $2 \
         WHERE id IN (SELECT id FROM mission_requests WHERE mission_key = $3 AND status = 'pending' \
           ORDER BY id LIMIT $4) \
         RETURNING {REQUEST_COLUMNS}"
    ));
    let now = ask.now;
    in_transaction!(db, |tx| {
        let swept = sweep_claims!(tx, now, ask.cooldown_ms, None::<&str>);
        let next: Option<(String, String)> = sqlx::query_as(
            "SELECT r.mission_key, r.mission FROM mission_requests r WHERE r.status = 'pending' \
             AND NOT EXISTS (SELECT 1 FROM mission_claims c \
               WHERE c.mission_key = r.mission_key AND c.slot IS NOT NULL) \
             ORDER BY r.id LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some((key, mission)) = next else {
            tx.commit().await?;
            return Ok((ClaimOutcome::NoWork, swept));
        };
        let taken: Vec<i64> =
            sqlx::query_scalar("SELECT slot FROM mission_claims WHERE slot IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?;
        let Some(slot) = free_slot(&taken, ask.max_concurrent) else {
            tx.commit().await?;
            return Ok((ClaimOutcome::AllSlotsBusy, swept));
        };
        let acquired = acquire_in!(tx, backend, pool: ask.pool, lease_id: ask.lease_id,
            worker: ask.worker, token_id: ask.token_id, mission: Some(key.as_str()), now: now,
            expires_at: ask.expires_at, cooldown_ms: ask.cooldown_ms);
        let Some(acquired) = acquired else {
            tx.commit().await?;
            return Ok((ClaimOutcome::NoAccount, swept));
        };
        // The unique indexes decide a race here: the loser's insert fails (on PostgreSQL once the
        // winner commits) and its transaction, lease included, is rolled back.
        let claim: MissionClaim = sqlx::query_as(insert_claim)
            .bind(ask.claim_id)
            .bind(&mission)
            .bind(&key)
            .bind(slot)
            .bind(ask.worker)
            .bind(ask.token_id)
            .bind(ask.lease_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        let mut requests: Vec<MissionRequest> = sqlx::query_as(take_requests)
            .bind(ask.claim_id)
            .bind(now)
            .bind(&key)
            .bind(ask.max_requests)
            .fetch_all(&mut *tx)
            .await?;
        requests.sort_by_key(|r| r.id);
        tx.commit().await?;
        let claimed = Claimed {
            claim,
            requests,
            acquired,
        };
        Ok((ClaimOutcome::Claimed(Box::new(claimed)), swept))
    })
}

/// How a worker reports one request of its claim.
pub struct ReportedRequest {
    pub id: i64,
    pub status: RequestStatus,
    /// JSON text.
    pub result: Option<String>,
}

/// Why a complete was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// The claim belongs to another token.
    NotHolder,
    /// Completed already.
    Completed,
    /// Its lease expired (or was released on its own): its requests went back to pending.
    Expired,
}

/// A completed claim, with what became of its requests.
pub struct Completed {
    pub claim: MissionClaim,
    pub lease: Lease,
    pub done: u64,
    pub failed: u64,
    /// Held requests not reported, put back to pending.
    pub returned: u64,
    /// Until when the release quarantined the account, when it started a quarantine.
    pub quarantined_until: Option<i64>,
}

pub enum CompleteOutcome {
    Completed(Box<Completed>),
    Refused(ClaimRefusal, Swept),
    /// A reported request is not the claim's; nothing was written. The text names the entry.
    Invalid(String),
}

/// What a complete carries.
pub struct CompleteAsk<'a> {
    pub claim_id: &'a str,
    pub token_id: i64,
    pub result: LeaseResult,
    pub error_message: Option<&'a str>,
    pub requests: &'a [ReportedRequest],
    pub now: i64,
}

/// Completes a running claim (holder only, once): its lease is released with the worker's result
/// by the same body as a lease release, reported requests finish, the others go back to pending,
/// and the slot is given up, all in one transaction. `NotFound` for an unknown claim.
pub async fn complete(
    db: &PoolDb,
    ask: &CompleteAsk<'_>,
    policy: &LeasePolicy,
) -> StoreResult<CompleteOutcome> {
    let backend = backend(db);
    let lock = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE",
    };
    let select_claim = sqlx::AssertSqlSafe(format!(
        "SELECT {CLAIM_COLUMNS} FROM mission_claims WHERE id = $1{lock}"
    ));
    let select_lease = lock_lease_sql(backend);
    let end_claim = sqlx::AssertSqlSafe(format!(
        "UPDATE mission_claims SET slot = NULL, status = 'completed', result = $2, ended_at = $3 \
         WHERE id = $1 RETURNING {CLAIM_COLUMNS}"
    ));
    let now = ask.now;
    let cooldown_ms = policy.cooldown_ms;
    in_transaction!(db, |tx| {
        let claim: MissionClaim = sqlx::query_as(select_claim)
            .bind(ask.claim_id)
            .fetch_one(&mut *tx)
            .await?;
        if claim.holder_token_id != ask.token_id {
            return Ok(CompleteOutcome::Refused(
                ClaimRefusal::NotHolder,
                Swept::default(),
            ));
        }
        match claim.status.as_str() {
            "completed" => {
                return Ok(CompleteOutcome::Refused(
                    ClaimRefusal::Completed,
                    Swept::default(),
                ));
            }
            "expired" => {
                return Ok(CompleteOutcome::Refused(
                    ClaimRefusal::Expired,
                    Swept::default(),
                ));
            }
            _ => {}
        }
        let lease: Option<Lease> = sqlx::query_as(select_lease)
            .bind(&claim.lease_id)
            .fetch_optional(&mut *tx)
            .await?;
        let lease = match lease {
            Some(lease) if refusal(&lease, ask.token_id, now).is_none() => lease,
            // Expired, released on its own, or gone with its account: the claim is over.
            _ => {
                let mut swept = Swept::default();
                swept.add(sweep_claims!(tx, now, cooldown_ms, Some(ask.claim_id)));
                tx.commit().await?;
                return Ok(CompleteOutcome::Refused(ClaimRefusal::Expired, swept));
            }
        };
        let held: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM mission_requests WHERE claim_id = $1 AND status = 'claimed'",
        )
        .bind(ask.claim_id)
        .fetch_all(&mut *tx)
        .await?;
        let reported: Vec<i64> = ask.requests.iter().map(|r| r.id).collect();
        if let Err(message) = check_reported(&reported, &held) {
            return Ok(CompleteOutcome::Invalid(message));
        }
        let (lease, quarantined_until) = release_in!(tx, backend, lease: &lease, result: ask.result,
            error_message: ask.error_message, now: now, policy: policy);
        let (mut done, mut failed) = (0, 0);
        for r in ask.requests {
            sqlx::query(
                "UPDATE mission_requests SET status = $2, result = $3, finished_at = $4, \
                 updated_at = $4 WHERE id = $1",
            )
            .bind(r.id)
            .bind(r.status.as_str())
            .bind(&r.result)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            match r.status {
                RequestStatus::Done => done += 1,
                RequestStatus::Failed => failed += 1,
            }
        }
        let returned = sqlx::query(
            "UPDATE mission_requests SET status = 'pending', claim_id = NULL, updated_at = $2 \
             WHERE claim_id = $1 AND status = 'claimed'",
        )
        .bind(ask.claim_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let claim: MissionClaim = sqlx::query_as(end_claim)
            .bind(ask.claim_id)
            .bind(ask.result.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(CompleteOutcome::Completed(Box::new(Completed {
            claim,
            lease,
            done,
            failed,
            returned,
            quarantined_until,
        })))
    })
}

/// Expires every running claim whose lease has ended (housekeeping); correctness does not wait
/// for it, since every claim sweeps first.
pub async fn expire_overdue(db: &PoolDb, now: i64, cooldown_ms: i64) -> StoreResult<Swept> {
    in_transaction!(db, |tx| {
        let swept = sweep_claims!(tx, now, cooldown_ms, None::<&str>);
        tx.commit().await?;
        Ok::<Swept, StoreError>(swept)
    })
}
