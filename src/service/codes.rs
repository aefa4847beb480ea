//! Redeem codes as operators handle them: generate a batch within the free seats, list, disable.
//! The invites the codes led to are `service::invites`.

use serde::{Deserialize, Serialize};

use super::{Error, ErrorKind, Result, one_of};
use crate::app::App;
use crate::domain::codes::{self, CountError};
use crate::jobs::JobArgs;
use crate::jobs::codes::CodesDisable;
use crate::store::redeem_codes::{self as store, CodeFilter, NewCode, RedeemCode, Selection};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// How many codes, 1 to 1000.
    pub count: i64,
    /// Letters and digits put in front of every code (up to 16).
    #[serde(default)]
    pub prefix: Option<String>,
    /// When the codes stop being redeemable (UTC milliseconds since the epoch).
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Codes that place users only in this pool group's mothers.
    #[serde(default)]
    pub pool_group_id: Option<i64>,
}

/// A new batch. The plaintext codes appear here once and are never stored.
#[derive(Serialize, utoipa::ToSchema)]
pub struct GeneratedBatch {
    pub batch_id: String,
    pub codes: Vec<String>,
    pub expires_at: Option<i64>,
    pub pool_group_id: Option<i64>,
}

impl std::fmt::Debug for GeneratedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedBatch")
            .field("batch_id", &self.batch_id)
            .field("codes", &format_args!("<{} redacted>", self.codes.len()))
            .finish()
    }
}

impl GeneratedBatch {
    /// The batch as CSV: a header row, then one code a row (`code,batch_id,expires_at,
    /// pool_group_id`, the expiry in RFC 3339). Codes are letters and digits, so nothing needs quoting.
    pub fn to_csv(&self) -> String {
        let expires = self
            .expires_at
            .map(crate::clock::rfc3339)
            .unwrap_or_default();
        let group = self
            .pool_group_id
            .map(|g| g.to_string())
            .unwrap_or_default();
        let mut out = String::from("code,batch_id,expires_at,pool_group_id\r\n");
        for code in &self.codes {
            out.push_str(&format!("{code},{},{expires},{group}\r\n", self.batch_id));
        }
        out
    }

    /// The file name a download of the batch gets.
    pub fn csv_file_name(&self) -> String {
        format!("codes-{}.csv", self.batch_id)
    }
}

/// How many codes may still be generated, overall and for a group.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CodeQuota {
    /// Free seats of active mothers (in the group when one is named).
    pub free_seats: i64,
    /// Codes that still promise a seat (`unused` or `reserved`).
    pub open_codes: i64,
    /// What a new batch may hold.
    pub available: i64,
}

/// The quota of new codes: for a group, the smaller of the group's and the overall one (codes of
/// no group may take any group's seats).
pub async fn quota(app: &App, pool_group_id: Option<i64>) -> Result<CodeQuota> {
    let seats = super::mothers::quota(app.pool_ctx()).await?;
    let overall = CodeQuota {
        free_seats: seats.overall.available,
        open_codes: store::open_count(&app.users, None).await?,
        available: 0,
    };
    let overall = CodeQuota {
        available: codes::quota(overall.free_seats, overall.open_codes),
        ..overall
    };
    let Some(group) = pool_group_id else {
        return Ok(overall);
    };
    let free_seats = seats
        .groups
        .iter()
        .find(|g| g.pool_group_id == Some(group))
        .map_or(0, |g| g.available);
    let open_codes = store::open_count(&app.users, Some(group)).await?;
    Ok(CodeQuota {
        free_seats,
        open_codes,
        available: codes::quota(free_seats, open_codes).min(overall.available),
    })
}

fn random_byte() -> u8 {
    let mut b = [0u8; 1];
    getrandom::fill(&mut b).expect("the operating system's random source is unavailable");
    b[0]
}

/// Generates `req.count` codes, refused with 409 `insufficient_seats` beyond the quota.
pub async fn generate(app: &App, req: GenerateRequest) -> Result<GeneratedBatch> {
    let prefix = req.prefix.unwrap_or_default();
    codes::check_prefix(&prefix).map_err(|m| Error::invalid("invalid_prefix", m))?;
    let now = app.clock.now_ms();
    if req.expires_at.is_some_and(|at| at <= now) {
        return Err(Error::invalid(
            "invalid_expires_at",
            "expires_at must be in the future",
        ));
    }
    if let Some(group) = req.pool_group_id {
        super::pool_groups::get(app.pool_ctx(), group).await?;
    }
    let quota = quota(app, req.pool_group_id).await?;
    codes::check_count(req.count, quota.available).map_err(|e| match e {
        CountError::OutOfRange => Error::invalid(
            "invalid_count",
            format!("count must be between 1 and {}", codes::MAX_BATCH),
        ),
        CountError::InsufficientSeats { quota } => Error::new(
            ErrorKind::Conflict,
            "insufficient_seats",
            format!(
                "only {quota} more code(s) can be generated: free seats minus codes not yet used"
            ),
        ),
    })?;
    let plain: Vec<String> = (0..req.count)
        .map(|_| codes::generate(&prefix, random_byte))
        .collect();
    let rows: Vec<NewCode> = plain
        .iter()
        .map(|c| NewCode {
            code_hash: crate::auth::token_hash(c),
            prefix: codes::display_prefix(c).to_string(),
        })
        .collect();
    let batch_id = uuid::Uuid::now_v7().to_string();
    store::insert_batch(
        &app.users,
        &rows,
        &batch_id,
        req.pool_group_id,
        req.expires_at,
        now,
    )
    .await?;
    tracing::info!(batch_id = %batch_id, count = req.count, "generated redeem codes");
    Ok(GeneratedBatch {
        batch_id,
        codes: plain,
        expires_at: req.expires_at,
        pool_group_id: req.pool_group_id,
    })
}

/// Checks a status filter: empty means any.
pub fn filter(
    status: Option<String>,
    batch_id: Option<String>,
    search: Option<String>,
) -> Result<CodeFilter> {
    const STATUSES: [&str; 5] = ["unused", "reserved", "used", "expired", "disabled"];
    Ok(CodeFilter {
        status: one_of("status", status, &STATUSES)?,
        batch_id: batch_id.filter(|s| !s.is_empty()),
        search: search.filter(|s| !s.trim().is_empty()),
    })
}

pub async fn list(
    app: &App,
    f: &CodeFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<RedeemCode>, i64)> {
    Ok(store::list(&app.users, f, limit, offset).await?)
}

/// The newest `limit` batch ids, newest first.
pub async fn recent_batches(app: &App, limit: i64) -> Result<Vec<String>> {
    Ok(store::recent_batches(&app.users, limit).await?)
}

/// The unused codes of a batch: what disabling it would change.
pub async fn unused_in_batch(app: &App, batch_id: &str) -> Result<i64> {
    Ok(store::count_unused_in_batch(&app.users, batch_id).await?)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    /// Codes to disable (up to 100,000; more than 1,000 run as a `codes_disable` job).
    #[serde(default)]
    pub ids: Option<Vec<i64>>,
    /// Or every unused code of a batch (more than 1,000 of them run as a `codes_disable` job).
    #[serde(default)]
    pub batch_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Disabled {
    /// Codes that were unused and are now disabled.
    pub disabled: u64,
}

/// A disable too large to do in the request: it runs as a `codes_disable` job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DisableQueued {
    pub job_id: String,
    /// The ids given, or the unused codes of the batch when it was queued.
    pub codes: i64,
}

/// What a disable did: done now, or queued.
#[derive(Debug)]
pub enum DisableOutcome {
    Done(Disabled),
    Queued(DisableQueued),
}

/// Sets up to this size are disabled in the request; larger ones run as a job.
pub const DISABLE_SYNC_MAX: usize = 1000;
/// The most ids one request may name.
pub const DISABLE_MAX_IDS: usize = 100_000;

/// Disables unused codes, by id or by batch; used, reserved and expired codes stay as they are.
/// Up to [`DISABLE_SYNC_MAX`] codes are disabled at once; more run as a `codes_disable` job.
pub async fn disable(app: &App, req: DisableRequest) -> Result<DisableOutcome> {
    let now = app.clock.now_ms();
    let (which, size) = match (&req.ids, &req.batch_id) {
        (Some(ids), None) if !ids.is_empty() && ids.len() <= DISABLE_MAX_IDS => {
            (Selection::Ids(ids), ids.len())
        }
        (None, Some(batch)) if !batch.is_empty() && batch.len() <= 100 => {
            let n = store::count_unused_in_batch(&app.users, batch).await?;
            (Selection::Batch(batch), usize::try_from(n).unwrap_or(0))
        }
        _ => {
            return Err(Error::invalid(
                "invalid_selection",
                format!("give either ids (1 to {DISABLE_MAX_IDS} of them) or batch_id"),
            ));
        }
    };
    if size <= DISABLE_SYNC_MAX {
        let disabled = store::disable(&app.users, which, now).await?;
        return Ok(DisableOutcome::Done(Disabled { disabled }));
    }
    let args = CodesDisable {
        ids: req.ids,
        batch_id: req.batch_id,
    };
    let (job, _) = crate::jobs::enqueue(
        &app.users,
        &args.to_job(),
        app.config.jobs.max_attempts,
        now,
    )
    .await?;
    tracing::info!(job = %job.id, codes = size, "queued a codes_disable job");
    Ok(DisableOutcome::Queued(DisableQueued {
        job_id: job.id,
        codes: i64::try_from(size).unwrap_or(i64::MAX),
    }))
}
