//! Credential leasing, the workers' side: acquire, renew and release leases on credential accounts,
//! expiry, and who holds what. The accounts themselves are `service::credential_accounts`.
//! Passwords are sealed with the keyring before they reach the store and opened only for the
//! holder of a new lease; they never appear in a list, a log line or a `Debug` output.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Error, Result, not_found};
use crate::clock::SharedClock;
use crate::crypto::{Credential, Keyring};
use crate::db::PoolDb;
use crate::domain::leases::{self, LeasePolicy, LeaseResult};
use crate::store::credential_accounts as accounts;
use crate::store::lease_desk;
use crate::store::leases::{self as store, Lease, LeaseWithLogin, Refusal};
use crate::store::{StoreError, StoreResult};

/// Usage rows shown with one account.
pub const RECENT_USAGE: i64 = 20;
/// Acquire looks again this many times at most when concurrent acquires held the accounts.
const ACQUIRE_ATTEMPTS: u64 = 8;
/// Rows one import may carry.
pub const MAX_IMPORT_ROWS: usize = 10_000;

/// What leasing needs: the pool database, the keyring, the clock and the policy.
#[derive(Clone, Copy)]
pub struct LeasingCtx<'a> {
    pub pool: &'a PoolDb,
    pub keyring: &'a Keyring,
    pub clock: &'a SharedClock,
    pub policy: LeasePolicy,
    pub desk: &'a lease_desk::Desk,
    /// Where `account_quarantined` goes; `None` where no webhooks run (CLI imports).
    pub webhooks: Option<&'a crate::jobs::webhooks::Webhooks>,
}

impl crate::app::App {
    pub fn leasing_ctx(&self) -> LeasingCtx<'_> {
        LeasingCtx {
            pool: &self.pool,
            keyring: &self.keyring,
            clock: &self.clock,
            policy: self.config.leases.policy(),
            desk: &self.lease_desk,
            webhooks: Some(&self.webhooks),
        }
    }
}

/// Who holds (or asks for) a lease: the API token and the worker name it gave.
#[derive(Clone, Debug)]
pub struct Holder {
    pub token_id: i64,
}

// ---- input checks -------------------------------------------------------------------------

pub(super) fn check_pool(pool: Option<String>) -> Result<String> {
    let pool = pool.map(|p| p.trim().to_string()).unwrap_or_default();
    if pool.is_empty() {
        return Ok("default".to_string());
    }
    let ok = pool.len() <= 64
        && pool
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(Error::invalid(
            "invalid_pool",
            "pool must be 1-64 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(pool)
}

/// The worker's result of a lease as a release knows it, or 400 `invalid_result`.
pub(super) fn release_result(result: Option<&str>) -> Result<LeaseResult> {
    result.and_then(LeaseResult::parse_release).ok_or_else(|| {
        Error::invalid(
            "invalid_result",
            format!("result must be one of {}", LeaseResult::RELEASE_VALUES),
        )
    })
}

pub(super) fn check_text(field: &str, value: Option<String>, max: usize) -> Result<Option<String>> {
    let value = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    if let Some(v) = &value
        && v.chars().count() > max
    {
        return Err(Error::invalid(
            format!("invalid_{field}"),
            format!("{field} must be at most {max} characters"),
        ));
    }
    Ok(value)
}

pub(super) fn check_required(field: &str, value: Option<String>, max: usize) -> Result<String> {
    check_text(field, value, max)?
        .ok_or_else(|| Error::invalid(format!("invalid_{field}"), format!("{field} is required")))
}

pub(super) fn check_login(login: Option<String>) -> Result<String> {
    let login = check_required("login", login, 254)?;
    if login.chars().any(char::is_whitespace) {
        return Err(Error::invalid(
            "invalid_login",
            "login must not contain spaces",
        ));
    }
    Ok(login)
}

pub(super) fn check_password(password: Option<String>) -> Result<Credential> {
    match password {
        Some(p) if !p.is_empty() && p.len() <= 1024 => Ok(Credential::new(p)),
        Some(p) if !p.is_empty() => Err(Error::invalid(
            "invalid_password",
            "password must be at most 1024 bytes",
        )),
        _ => Err(Error::invalid("invalid_password", "password is required")),
    }
}

pub(super) fn check_metadata(metadata: Option<serde_json::Value>) -> Result<String> {
    match metadata {
        None | Some(serde_json::Value::Null) => Ok("{}".to_string()),
        Some(v @ serde_json::Value::Object(_)) => Ok(v.to_string()),
        Some(_) => Err(Error::invalid(
            "invalid_metadata",
            "metadata must be a JSON object",
        )),
    }
}

pub(super) fn seal(ctx: LeasingCtx<'_>, password: &Credential) -> Result<String> {
    ctx.keyring.seal(password).map_err(Error::internal)
}

// ---- worker side ---------------------------------------------------------------------------

/// `POST /api/pool/leases`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// Pool name (default `default`).
    pub pool: Option<String>,
    /// What the worker will do with the account (free text, at most 128 characters).
    pub mission: Option<String>,
    /// Lease length; default `leases.default_ttl_seconds`, capped by `leases.max_ttl_seconds`.
    pub ttl_seconds: Option<i64>,
    /// The worker's name (1-128 characters).
    pub worker: Option<String>,
}

/// A password handed to a lease holder: serialized as text, redacted in `Debug`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct RevealedPassword(String);

impl fmt::Debug for RevealedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RevealedPassword(***)")
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeasedAccount {
    pub id: i64,
    pub login: String,
    pub password: RevealedPassword,
    pub phone: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

/// A new lease: the account with its password, and when the lease ends (ms since the epoch).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeaseGrant {
    pub lease_id: String,
    pub account: LeasedAccount,
    pub expires_at: i64,
}

pub(super) fn metadata_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::json!({}))
}

/// Lends the next available account of a pool. None free: `no_account_available` (unavailable)
/// with the seconds until the first one comes back.
pub async fn acquire(
    ctx: LeasingCtx<'_>,
    holder: &Holder,
    req: AcquireRequest,
) -> Result<LeaseGrant> {
    let worker = check_required("worker", req.worker, 128)?;
    let pool = check_pool(req.pool)?;
    let mission = check_text("mission", req.mission, 128)?;
    let ttl = leases::ttl_ms(&ctx.policy, req.ttl_seconds)
        .map_err(|m| Error::invalid("invalid_ttl_seconds", m))?;
    let now = ctx.clock.now_ms();
    // Time-ordered (v7): a new lease's id goes at the end of the lease and usage indexes instead
    // of onto a random page of each, which every batch would then write out again.
    let lease_id = uuid::Uuid::now_v7().to_string();
    let args = lease_desk::AcquireArgs {
        pool: pool.clone(),
        lease_id,
        worker: worker.clone(),
        token_id: holder.token_id,
        mission,
        now,
        expires_at: now + ttl,
        cooldown_ms: ctx.policy.cooldown_ms,
    };
    let acquired = with_account(ctx, &pool, now, || {
        let args = args.clone();
        async move { Ok(ctx.desk.acquire(ctx.pool, args).await?) }
    })
    .await?;
    tracing::debug!(lease = %acquired.lease.id, account = acquired.account.id, %worker, "lease acquired");
    grant(ctx, acquired)
}

/// Runs `attempt` (one try at lending an account of `pool` at `now`) until it lends one. When it
/// finds none: `no_account_available` (unavailable) with the seconds until the first account of
/// the pool comes back. On PostgreSQL an attempt skips accounts that concurrent acquires have
/// locked; when it found none while one still looks available, that one is being lent right now,
/// so it looks again once those transactions have ended and the answer (a lease, or when the
/// next account returns) reflects them. Bounded: a few short waits at most.
pub(super) async fn with_account<T, F, Fut>(
    ctx: LeasingCtx<'_>,
    pool: &str,
    now: i64,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Error>>,
{
    let mut tries = 0;
    loop {
        if let Some(found) = attempt().await? {
            return Ok(found);
        }
        let times = accounts::times_in_pool(ctx.pool, pool).await?;
        tries += 1;
        if tries < ACQUIRE_ATTEMPTS && leases::any_available(&times, now, ctx.policy.cooldown_ms) {
            tokio::time::sleep(std::time::Duration::from_millis(5 * tries)).await;
            continue;
        }
        let mut e = Error::new(
            super::ErrorKind::Unavailable,
            "no_account_available",
            format!("no account of pool {pool} is available"),
        );
        e.retry_after_secs = leases::retry_after_secs(&times, now, ctx.policy.cooldown_ms);
        return Err(e);
    }
}

/// What the holder of a new lease gets: the account with its password opened. Expired leases the
/// acquire closed on the way are counted as ended.
pub(super) fn grant(ctx: LeasingCtx<'_>, acquired: store::Acquired) -> Result<LeaseGrant> {
    for duration_ms in &acquired.closed_expired {
        record_lease_end(LeaseResult::Expired, *duration_ms);
    }
    let password = ctx
        .keyring
        .open(&acquired.password_sealed)
        .map_err(Error::internal)?;
    Ok(LeaseGrant {
        lease_id: acquired.lease.id,
        account: LeasedAccount {
            id: acquired.account.id,
            login: acquired.account.login,
            password: RevealedPassword(password.expose().to_string()),
            phone: acquired.account.phone,
            metadata: metadata_value(&acquired.account.metadata),
        },
        expires_at: acquired.lease.expires_at,
    })
}

/// Counts a lease that ended (`pool_leases_total{result}`) and observes how long it lasted
/// (`pool_lease_duration_seconds`).
pub(crate) fn record_lease_end(result: LeaseResult, duration_ms: i64) {
    metrics::counter!(crate::metrics::POOL_LEASES, "result" => result.as_str()).increment(1);
    metrics::histogram!(crate::metrics::POOL_LEASE_DURATION)
        .record(duration_ms.max(0) as f64 / 1000.0);
}

fn refused(r: Refusal) -> Error {
    match r {
        Refusal::NotHolder => Error::new(
            super::ErrorKind::Forbidden,
            "not_lease_holder",
            "this lease is held by another token",
        ),
        Refusal::Released => Error::new(
            super::ErrorKind::Conflict,
            "lease_released",
            "this lease was released already",
        ),
        Refusal::Expired { closed_ms } => {
            // A late renew or release that found the lease still open closed it: it ended.
            if let Some(duration_ms) = closed_ms {
                record_lease_end(LeaseResult::Expired, duration_ms);
            }
            Error::new(
                super::ErrorKind::Conflict,
                "lease_expired",
                "this lease passed its expiry; the account went back to the pool",
            )
        }
    }
}

fn lease_not_found(id: &str) -> impl FnOnce(StoreError) -> Error {
    not_found(format!("no lease {id}"))
}

/// `POST /api/pool/leases/{id}/renew`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// New length from now; default `leases.default_ttl_seconds`, capped by `leases.max_ttl_seconds`.
    pub ttl_seconds: Option<i64>,
}

/// Extends a lease (holder only) to now + ttl.
pub async fn renew(
    ctx: LeasingCtx<'_>,
    holder: &Holder,
    id: &str,
    req: RenewRequest,
) -> Result<Lease> {
    let ttl = leases::ttl_ms(&ctx.policy, req.ttl_seconds)
        .map_err(|m| Error::invalid("invalid_ttl_seconds", m))?;
    let now = ctx.clock.now_ms();
    store::renew(
        ctx.pool,
        id,
        holder.token_id,
        now,
        now + ttl,
        ctx.policy.cooldown_ms,
    )
    .await
    .map_err(lease_not_found(id))?
    .map_err(refused)
}

/// `POST /api/pool/leases/{id}/release`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// `success`, `no_slot`, `login_fail`, `error` or `banned`.
    pub result: Option<String>,
    /// What went wrong (at most 2000 characters), kept in the usage log.
    pub error_message: Option<String>,
}

/// Ends a lease (holder only, once) with the worker's result.
pub async fn release(
    ctx: LeasingCtx<'_>,
    holder: &Holder,
    id: &str,
    req: ReleaseRequest,
) -> Result<Lease> {
    let result = release_result(req.result.as_deref())?;
    let error_message = check_text("error_message", req.error_message, 2000)?;
    let now = ctx.clock.now_ms();
    let args = lease_desk::ReleaseArgs {
        lease_id: id.to_string(),
        token_id: holder.token_id,
        result,
        error_message,
        now,
        policy: ctx.policy,
    };
    let (lease, quarantined_until) = ctx
        .desk
        .release(ctx.pool, args)
        .await
        .map_err(lease_not_found(id))?
        .map_err(refused)?;
    record_lease_end(result, now - lease.acquired_at);
    announce_quarantine(ctx, lease.account_id, result, quarantined_until).await;
    tracing::debug!(lease = %lease.id, account = lease.account_id, result = result.as_str(), "lease released");
    Ok(lease)
}

/// Raises `account_quarantined` when a release started a quarantine.
pub(super) async fn announce_quarantine(
    ctx: LeasingCtx<'_>,
    account_id: i64,
    result: LeaseResult,
    quarantined_until: Option<i64>,
) {
    if let (Some(until), Some(webhooks)) = (quarantined_until, ctx.webhooks) {
        webhooks
            .account_quarantined(ctx.pool, account_id, result.as_str(), until)
            .await;
    }
}

/// Closes leases past their expiry (housekeeping; correctness does not wait for it), counting
/// each as ended; returns how many.
pub async fn expire_overdue(pool: &PoolDb, now: i64, policy: &LeasePolicy) -> StoreResult<usize> {
    let closed = store::expire_overdue(pool, now, policy.cooldown_ms).await?;
    for duration_ms in &closed {
        record_lease_end(LeaseResult::Expired, *duration_ms);
    }
    Ok(closed.len())
}

pub async fn list_leases(
    ctx: LeasingCtx<'_>,
    active_only: bool,
    limit: i64,
    offset: i64,
) -> Result<(Vec<LeaseWithLogin>, i64)> {
    Ok(store::list(ctx.pool, active_only, ctx.clock.now_ms(), limit, offset).await?)
}
