//! Missions, the workers' side: queue requests under a mission key, claim the oldest mission that
//! nobody runs with a lease on an account, complete it. The lease is taken and released by the
//! leasing bodies (`store::leases`, through `store::missions`), counted and measured like any
//! other lease, and its password opened only for the claim's holder. Payloads and results are the
//! workers' business: they are stored, never logged.

use serde::{Deserialize, Serialize};

use super::leasing::{
    self, Holder, LeaseGrant, LeasingCtx, check_pool, check_required, check_text, record_lease_end,
    release_result,
};
use super::{Error, ErrorKind, Result, not_found};
use crate::db::PoolDb;
use crate::domain::leases::{self, LeasePolicy, LeaseResult};
use crate::domain::missions::{self, RequestStatus};
use crate::store::StoreError;
use crate::store::leases::Lease;
use crate::store::missions::{
    self as store, ClaimAsk, ClaimOutcome, ClaimRefusal, CompleteAsk, CompleteOutcome,
    MissionClaim, ReportedRequest, Swept,
};

/// What missions need: leasing's context and the `missions.max_concurrent` limit.
#[derive(Clone, Copy)]
pub struct MissionsCtx<'a> {
    pub leasing: LeasingCtx<'a>,
    pub max_concurrent: i64,
}

impl crate::app::App {
    pub fn missions_ctx(&self) -> MissionsCtx<'_> {
        MissionsCtx {
            leasing: self.leasing_ctx(),
            max_concurrent: i64::from(self.config.missions.max_concurrent),
        }
    }
}

/// `POST /api/pool/requests`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueRequest {
    /// The mission (1-128 characters); matched case-insensitively (`de` and `DE` are one mission).
    pub mission: Option<String>,
    /// What the worker is to do: any JSON value but null, stored as given.
    #[schema(value_type = Object)]
    pub payload: Option<serde_json::Value>,
}

/// A queued request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueuedRequest {
    pub id: i64,
    pub mission: String,
    pub mission_key: String,
    /// `pending` when queued.
    pub status: String,
    pub created_at: i64,
}

fn check_mission(mission: Option<String>) -> Result<(String, String)> {
    missions::mission_key(mission.as_deref().unwrap_or_default())
        .map_err(|m| Error::invalid("invalid_mission", m))
}

/// Queues a request under its mission.
pub async fn queue_request(ctx: MissionsCtx<'_>, req: QueueRequest) -> Result<QueuedRequest> {
    let (mission, key) = check_mission(req.mission)?;
    let payload = match req.payload {
        None | Some(serde_json::Value::Null) => {
            return Err(Error::invalid("invalid_payload", "payload is required"));
        }
        Some(v) => v.to_string(),
    };
    let now = ctx.leasing.clock.now_ms();
    let r = store::insert_request(ctx.leasing.pool, &mission, &key, &payload, now).await?;
    Ok(QueuedRequest {
        id: r.id,
        mission: r.mission,
        mission_key: r.mission_key,
        status: r.status,
        created_at: r.created_at,
    })
}

/// `POST /api/pool/missions/claim`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The worker's name (1-128 characters).
    pub worker: Option<String>,
    /// Lease (and claim) length; default `leases.default_ttl_seconds`, capped by
    /// `leases.max_ttl_seconds`. Renewing the lease extends the claim.
    pub ttl_seconds: Option<i64>,
    /// Most requests to take (1-1000, default 100); the rest of the mission's requests stay
    /// pending for its next run.
    pub max_requests: Option<i64>,
    /// Pool of the account (default `default`).
    pub pool: Option<String>,
}

/// A request handed to a claim.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClaimedRequest {
    pub id: i64,
    /// The mission name as this request gave it.
    pub mission: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Claims that have taken this request, this one included.
    pub attempts: i64,
    pub created_at: i64,
}

/// A mission run: its requests (oldest first) and a lease on an account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MissionGrant {
    pub claim_id: String,
    pub mission: String,
    pub mission_key: String,
    pub requests: Vec<ClaimedRequest>,
    /// The lease: complete the claim to release it; renew it to extend the claim.
    pub lease: LeaseGrant,
    /// When the claim ends unless completed or its lease renewed (ms since the epoch).
    pub expires_at: i64,
}

/// Claims that race: a claim retries at most this many times more than there are slots (each
/// lost race means another claim took a slot or the mission).
const CLAIM_RACE_MARGIN: i64 = 4;

/// Claims the oldest mission with pending requests that nobody runs. `None` when there is no such
/// mission or `missions.max_concurrent` run already; `no_account_available` (unavailable, with
/// when the next account returns) when there is work but no account, and then nothing is written.
pub async fn claim(
    ctx: MissionsCtx<'_>,
    holder: &Holder,
    req: ClaimRequest,
) -> Result<Option<MissionGrant>> {
    let worker = check_required("worker", req.worker, 128)?;
    let pool = check_pool(req.pool)?;
    let ttl = leases::ttl_ms(&ctx.leasing.policy, req.ttl_seconds)
        .map_err(|m| Error::invalid("invalid_ttl_seconds", m))?;
    let max_requests = missions::max_requests(req.max_requests)
        .map_err(|m| Error::invalid("invalid_max_requests", m))?;
    let now = ctx.leasing.clock.now_ms();
    let claim_id = uuid::Uuid::new_v4().to_string();
    // Time-ordered, like an acquire's (see `leasing::acquire`).
    let lease_id = uuid::Uuid::now_v7().to_string();
    let ask = ClaimAsk {
        claim_id: &claim_id,
        lease_id: &lease_id,
        pool: &pool,
        worker: &worker,
        token_id: holder.token_id,
        now,
        expires_at: now + ttl,
        cooldown_ms: ctx.leasing.policy.cooldown_ms,
        max_concurrent: ctx.max_concurrent,
        max_requests,
    };
    let ask = &ask;
    let races = ctx.max_concurrent.saturating_add(CLAIM_RACE_MARGIN);
    // `None` from an attempt: no account (the leasing rule decides whether to look again).
    let outcome = leasing::with_account(ctx.leasing, &pool, now, move || async move {
        let mut lost = 0;
        loop {
            match store::claim(ctx.leasing.pool, ask).await {
                Ok((outcome, swept)) => {
                    record_swept(&swept);
                    return Ok(match outcome {
                        ClaimOutcome::NoAccount => None,
                        other => Some(other),
                    });
                }
                Err(StoreError::Conflict(_)) if lost < races => {
                    lost += 1;
                    tokio::task::yield_now().await;
                }
                Err(StoreError::Conflict(what)) => {
                    let mut e = Error::new(
                        ErrorKind::Unavailable,
                        "mission_claims_busy",
                        format!("concurrent claims kept taking the same mission or slot ({what})"),
                    );
                    e.retry_after_secs = Some(1);
                    return Err(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
    })
    .await?;
    let claimed = match outcome {
        ClaimOutcome::NoWork | ClaimOutcome::AllSlotsBusy | ClaimOutcome::NoAccount => {
            return Ok(None);
        }
        ClaimOutcome::Claimed(claimed) => *claimed,
    };
    tracing::info!(
        claim = %claimed.claim.id,
        mission = %claimed.claim.mission_key,
        requests = claimed.requests.len(),
        lease = %claimed.acquired.lease.id,
        account = claimed.acquired.account.id,
        %worker,
        "mission claimed"
    );
    let expires_at = claimed.acquired.lease.expires_at;
    let requests = claimed
        .requests
        .into_iter()
        .map(|r| ClaimedRequest {
            id: r.id,
            mission: r.mission,
            payload: serde_json::from_str(&r.payload).unwrap_or(serde_json::Value::Null),
            attempts: r.attempts,
            created_at: r.created_at,
        })
        .collect();
    Ok(Some(MissionGrant {
        claim_id: claimed.claim.id,
        mission: claimed.claim.mission,
        mission_key: claimed.claim.mission_key,
        requests,
        lease: leasing::grant(ctx.leasing, claimed.acquired)?,
        expires_at,
    }))
}

/// One request's outcome in a complete.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestReport {
    /// A request the claim holds.
    pub id: Option<i64>,
    /// `done` or `failed`.
    pub status: Option<String>,
    /// What came of it: any JSON value, stored as given.
    #[schema(value_type = Object)]
    pub result: Option<serde_json::Value>,
}

/// `POST /api/pool/missions/{claim_id}/complete`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The lease result: `success`, `no_slot`, `login_fail`, `error` or `banned`.
    pub result: Option<String>,
    /// What went wrong (at most 2000 characters), kept in the usage log.
    pub error_message: Option<String>,
    /// The requests the run finished; held requests left out go back to pending.
    pub requests: Option<Vec<RequestReport>>,
}

/// A completed claim.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompletedClaim {
    pub claim: MissionClaim,
    pub lease: Lease,
    /// Requests finished `done`.
    pub done: u64,
    /// Requests finished `failed`.
    pub failed: u64,
    /// Requests the claim held but did not report, back to pending.
    pub returned: u64,
}

fn check_reports(reports: Option<Vec<RequestReport>>) -> Result<Vec<ReportedRequest>> {
    let reports = reports.ok_or_else(|| {
        Error::invalid(
            "invalid_requests",
            "requests is required (an empty list sends every request back to pending)",
        )
    })?;
    reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let id = r.id.ok_or_else(|| {
                Error::invalid("invalid_requests", format!("requests[{i}].id is required"))
            })?;
            let status = r
                .status
                .as_deref()
                .and_then(RequestStatus::parse)
                .ok_or_else(|| {
                    Error::invalid(
                        "invalid_requests",
                        format!("requests[{i}].status must be done or failed"),
                    )
                })?;
            Ok(ReportedRequest {
                id,
                status,
                result: r.result.map(|v| v.to_string()),
            })
        })
        .collect()
}

fn refused(r: ClaimRefusal) -> Error {
    match r {
        ClaimRefusal::NotHolder => Error::new(
            ErrorKind::Forbidden,
            "not_claim_holder",
            "this claim is held by another token",
        ),
        ClaimRefusal::Completed => Error::new(
            ErrorKind::Conflict,
            "claim_completed",
            "this claim was completed already",
        ),
        ClaimRefusal::Expired => Error::new(
            ErrorKind::Conflict,
            "claim_expired",
            "this claim's lease ended before it was completed; its requests went back to pending",
        ),
    }
}

/// Completes a claim (holder only, once): releases its lease with `result` under the leasing
/// rules, finishes the reported requests and sends the others back to pending.
pub async fn complete(
    ctx: MissionsCtx<'_>,
    holder: &Holder,
    claim_id: &str,
    req: CompleteRequest,
) -> Result<CompletedClaim> {
    let result = release_result(req.result.as_deref())?;
    let error_message = check_text("error_message", req.error_message, 2000)?;
    let reports = check_reports(req.requests)?;
    let now = ctx.leasing.clock.now_ms();
    let ask = CompleteAsk {
        claim_id,
        token_id: holder.token_id,
        result,
        error_message: error_message.as_deref(),
        requests: &reports,
        now,
    };
    let outcome = store::complete(ctx.leasing.pool, &ask, &ctx.leasing.policy)
        .await
        .map_err(not_found(format!("no mission claim {claim_id}")))?;
    match outcome {
        CompleteOutcome::Completed(completed) => {
            let store::Completed {
                claim,
                lease,
                done,
                failed,
                returned,
                quarantined_until,
            } = *completed;
            record_lease_end(result, now - lease.acquired_at);
            super::leasing::announce_quarantine(
                ctx.leasing,
                lease.account_id,
                result,
                quarantined_until,
            )
            .await;
            tracing::info!(
                claim = %claim.id,
                mission = %claim.mission_key,
                lease = %lease.id,
                result = result.as_str(),
                done,
                failed,
                returned,
                "mission completed"
            );
            Ok(CompletedClaim {
                claim,
                lease,
                done,
                failed,
                returned,
            })
        }
        CompleteOutcome::Refused(r, swept) => {
            record_swept(&swept);
            Err(refused(r))
        }
        CompleteOutcome::Invalid(message) => Err(Error::invalid("invalid_requests", message)),
    }
}

fn record_swept(swept: &Swept) {
    for duration_ms in &swept.leases_closed {
        record_lease_end(LeaseResult::Expired, *duration_ms);
    }
    if swept.claims_expired > 0 {
        tracing::info!(
            claims = swept.claims_expired,
            requests = swept.requests_returned,
            "mission claims expired; their requests are pending again"
        );
    }
}

/// Expires claims whose lease ended (housekeeping; every claim does it first anyway).
pub async fn expire_overdue(pool: &PoolDb, now: i64, policy: &LeasePolicy) -> Result<usize> {
    let swept = store::expire_overdue(pool, now, policy.cooldown_ms).await?;
    record_swept(&swept);
    Ok(swept.claims_expired)
}
