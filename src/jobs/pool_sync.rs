//! The `pool_sync_mother` job: keeps one mother's teams, children and seats in step with her
//! provider, and fills free seats by invitation when auto-invite is on (the group's `auto_invite`
//! or the instance-wide `pool_auto_invite_missing`). It owns the mapping from
//! provider errors to job outcomes (unauthorized marks the mother `invalid`), and the enqueue path
//! with its dedup key. Every step compares before it writes, so a rerun changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Handlers, JobContext, JobError, JobResult};
use crate::app::{App, AppState};
use crate::crypto::Credential;
use crate::domain::job_retry::FailureKind;
use crate::domain::naming::{self, NameValues};
use crate::domain::seats::SeatWant;
use crate::error::{ApiError, ApiResult};
use crate::providers::{Invited, MemberStatus, Provider, ProviderError};
use crate::store::jobs::NewJob;
use crate::store::mothers::{self as mothers, ChildInput, Team};
use crate::store::pool_groups::{self as groups, SequenceKind};
use crate::store::seats::{InviteOutcome, NewInvite};
use crate::store::sync_sessions::{self, NewSession, RecordOutcome};
use crate::store::{StoreError, seats};

pub const POOL_SYNC_MOTHER: &str = "pool_sync_mother";
/// How long a seat stays held for a pending invite before the scheduler may free it.
pub const INVITE_HOLD_MS: i64 = 7 * 24 * 3_600_000;

pub const ACTIONS_METRIC: &str = "pool_sync_actions_total";
pub const DURATION_METRIC: &str = "pool_sync_duration_ms";

/// The job's payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncPayload {
    pub mother_id: i64,
    pub group_id: i64,
    /// The sync session this run belongs to, and the mother's record in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<i64>,
}

/// The dedup key: one live sync per (mother, group).
pub fn dedup_key(mother_id: i64, group_id: i64) -> String {
    format!("{POOL_SYNC_MOTHER}:{mother_id}:{group_id}")
}

/// What one sync did; the job's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncReport {
    pub teams_renamed: i64,
    pub teams_added: i64,
    pub children_created: i64,
    pub children_updated: i64,
    pub children_removed: i64,
    pub seats_changed: i64,
    /// Members for whom no free seat was left.
    pub seats_overflow: i64,
    pub invites_sent: i64,
}

/// Why a sync stopped.
#[derive(Debug)]
pub enum SyncError {
    Provider(ProviderError),
    /// Nothing a retry would fix (no such mother, bad templates, unreadable credential).
    Failed(String),
    Store(StoreError),
}

impl From<ProviderError> for SyncError {
    fn from(e: ProviderError) -> Self {
        SyncError::Provider(e)
    }
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        SyncError::Store(e)
    }
}

/// Registers the pool job handlers; they reach the databases and providers through `app`.
pub fn register(handlers: &mut Handlers, app: AppState) {
    handlers.register(POOL_SYNC_MOTHER, move |ctx| {
        let app = app.clone();
        async move { run(&app, ctx).await }
    });
}

async fn run(app: &App, ctx: JobContext) -> JobResult {
    let payload: SyncPayload = serde_json::from_value(ctx.payload.clone()).map_err(|e| {
        JobError::permanent(format!(
            "payload must be {{\"mother_id\", \"group_id\"}}: {e}"
        ))
    })?;
    if let Some(record) = payload.record_id {
        // The record claims the run: once it is running, cancelling the session leaves it alone;
        // if the session was cancelled first, the job ends cancelled without touching anything.
        match sync_sessions::start_record(&app.pool, record, app.clock.now_ms()).await {
            Ok(true) => {}
            Ok(false) => return Err(JobError::cancelled()),
            Err(e) => return Err(JobError::transient(format!("database: {e}"))),
        }
    }
    let started = Instant::now();
    let outcome = sync_mother(app, payload.mother_id, payload.group_id).await;
    metrics::histogram!(DURATION_METRIC).record(started.elapsed().as_secs_f64() * 1000.0);
    let result = match outcome {
        Ok(report) => Ok(report),
        Err(e) => Err(job_error(app, payload.mother_id, e).await),
    };
    if let Some(record) = payload.record_id {
        record_outcome(app, &ctx, record, &result).await?;
    }
    result.map(|report| Some(serde_json::to_value(report).unwrap_or(Value::Null)))
}

/// Ends the run's session record, unless the job will run again.
async fn record_outcome(
    app: &App,
    ctx: &JobContext,
    record: i64,
    result: &Result<SyncReport, JobError>,
) -> Result<(), JobError> {
    let outcome = match result {
        Ok(r) => {
            let created = r.children_created + r.teams_added + r.invites_sent;
            let updated = r.children_updated + r.teams_renamed;
            let deleted = r.children_removed;
            RecordOutcome {
                status: "completed",
                items_synced: created + updated + deleted,
                items_created: created,
                items_updated: updated,
                items_deleted: deleted,
                error_message: None,
                details: serde_json::to_value(r).unwrap_or(Value::Null),
            }
        }
        Err(e) => {
            let last =
                e.cancelled || e.kind == FailureKind::Permanent || ctx.attempt >= ctx.max_attempts;
            if !last {
                return Ok(());
            }
            RecordOutcome {
                status: if e.cancelled { "cancelled" } else { "failed" },
                error_message: Some(e.message.clone()),
                details: serde_json::json!({"attempts": ctx.attempt}),
                ..RecordOutcome::default()
            }
        }
    };
    match sync_sessions::finish_record(&app.pool, record, &outcome, app.clock.now_ms()).await {
        // The session was removed (retention); the sync itself still counts.
        Ok(()) | Err(StoreError::NotFound) => Ok(()),
        Err(e) => Err(JobError::transient(format!("database: {e}"))),
    }
}

/// Maps a sync failure to the job's outcome.
async fn job_error(app: &App, mother_id: i64, e: SyncError) -> JobError {
    match e {
        SyncError::Provider(ProviderError::Unauthorized(reason)) => {
            // The credential is dead: retrying cannot help, and the mother must not be handed out.
            if let Err(e) =
                mothers::set_status(&app.pool, mother_id, "invalid", app.clock.now_ms()).await
            {
                tracing::warn!(mother_id, error = %e, "marking mother invalid failed");
            }
            JobError::permanent(format!(
                "the provider rejected the credential of mother {mother_id} ({reason}); \
                 the mother is now invalid"
            ))
        }
        SyncError::Provider(ProviderError::RateLimited { retry_after_ms }) => {
            JobError::retry_after(
                retry_after_ms,
                format!("provider rate limit; retrying after {retry_after_ms} ms"),
            )
        }
        SyncError::Provider(ProviderError::Transient(m)) => JobError::transient(m),
        SyncError::Provider(other) => {
            JobError::permanent(format!("sync of mother {mother_id} failed: {other}"))
        }
        SyncError::Failed(m) => JobError::permanent(m),
        // A database hiccup may pass.
        SyncError::Store(e) => JobError::transient(format!("database: {e}")),
    }
}

fn not_found(what: String) -> impl FnOnce(StoreError) -> SyncError {
    move |e| match e {
        StoreError::NotFound => SyncError::Failed(what),
        other => SyncError::Store(other),
    }
}

fn count(action: &'static str, n: i64) {
    if n > 0 {
        metrics::counter!(ACTIONS_METRIC, "action" => action).increment(n.unsigned_abs());
    }
}

/// Syncs one mother of one group (see the module notes).
pub async fn sync_mother(
    app: &App,
    mother_id: i64,
    group_id: i64,
) -> Result<SyncReport, SyncError> {
    let ctx = app.pool_ctx();
    let now = app.clock.now_ms();
    let detail = mothers::get_detail(&app.pool, mother_id)
        .await
        .map_err(not_found(format!("no mother {mother_id}")))?;
    let mother = &detail.mother;
    if mother.status != "active" {
        return Err(SyncError::Failed(format!(
            "mother {mother_id} is {}; only active mothers are synced",
            mother.status
        )));
    }
    if mother.pool_group_id != Some(group_id) {
        return Err(SyncError::Failed(format!(
            "mother {mother_id} does not belong to pool group {group_id}"
        )));
    }
    let group = groups::get(&app.pool, group_id)
        .await
        .map_err(not_found(format!("no pool group {group_id}")))?;
    let day = naming::utc_day(now);
    let names = crate::service::pool_groups::naming_of(ctx, &group.name, &group.settings, &day)
        .map_err(|e| SyncError::Failed(format!("pool group {}: {e}", group.name)))?;
    let sealed = mothers::credential_sealed(&app.pool, mother_id).await?;
    let credential = app.keyring.open(&sealed).map_err(|e| {
        SyncError::Failed(format!(
            "the credential of mother {mother_id} cannot be opened: {e}"
        ))
    })?;
    let provider = app
        .providers
        .for_mother(&mother.provider, &mother.provider_config)?;

    let account = provider.identify(&credential).await?;
    let mut owners = vec![account.owner_email.to_ascii_lowercase()];
    if let Some(owner) = mother
        .provider_config
        .get("owner_email")
        .and_then(Value::as_str)
    {
        owners.push(owner.to_ascii_lowercase());
    }
    let mut report = SyncReport::default();

    // Link local teams to the provider's: by id, else the first unlinked local team (the default
    // one first), else a new local team.
    let provider_teams = provider.list_teams(&credential).await?;
    let mut local: Vec<Team> = detail.teams.clone();
    local.sort_by_key(|t| (!t.is_default, t.id));
    let mut linked: Vec<(crate::providers::ProviderTeam, Team)> = Vec::new();
    for pteam in provider_teams {
        let found = local
            .iter()
            .position(|t| t.provider_team_id.as_deref() == Some(pteam.id.as_str()))
            .or_else(|| local.iter().position(|t| t.provider_team_id.is_none()));
        let team = match found {
            Some(i) => {
                let mut team = local.remove(i);
                if team.provider_team_id.is_none() {
                    mothers::link_team(&app.pool, team.id, &pteam.id, &team.name).await?;
                    team.provider_team_id = Some(pteam.id.clone());
                }
                team
            }
            None => {
                report.teams_added += 1;
                mothers::add_provider_team(&app.pool, mother_id, &pteam.id, &pteam.name, now)
                    .await?
            }
        };
        if team.is_enabled {
            linked.push((pteam, team));
        }
    }

    // 1. Rename by the group's template. A name this group gave (on the provider, or locally when
    // the mother was created) is kept and uses no number.
    let domain = names.domain.as_deref();
    for (pteam, team) in &mut linked {
        let target = if names.team.matches(&pteam.name, &group.name, domain) {
            pteam.name.clone()
        } else if names.team.matches(&team.name, &group.name, domain) {
            team.name.clone()
        } else {
            let seq =
                groups::allocate_sequence(&app.pool, group_id, &day, SequenceKind::Team).await?;
            names
                .team
                .render(&NameValues {
                    group: &group.name,
                    date: &day,
                    seq,
                    domain,
                })
                .ok_or_else(|| {
                    SyncError::Failed(format!(
                        "pool group {}: team_template needs a domain",
                        group.name
                    ))
                })?
        };
        if pteam.name != target {
            provider
                .rename_team(&credential, &pteam.id, &target)
                .await?;
            pteam.name = target.clone();
            report.teams_renamed += 1;
        }
        if team.name != target {
            mothers::link_team(&app.pool, team.id, &pteam.id, &target).await?;
            team.name = target;
        }
    }
    count("rename_team", report.teams_renamed);

    // 2a. Invitations a killed run reserved but may not have sent go out again under the same
    // addresses; the provider treats a repeat as already present.
    let mut unconfirmed: BTreeMap<i64, Vec<NewInvite>> = BTreeMap::new();
    for (team_id, email, name) in mothers::unconfirmed_invites(&app.pool, mother_id).await? {
        unconfirmed
            .entry(team_id)
            .or_default()
            .push(NewInvite { email, name });
    }
    for (team_id, invites) in unconfirmed {
        let pteam = linked.iter().find(|(_, t)| t.id == team_id).map(|(p, _)| p);
        let outcomes = match pteam {
            Some(pteam) => {
                send_reserved(
                    provider.as_ref(),
                    &credential,
                    &pteam.id,
                    &invites,
                    &mut report,
                )
                .await?
            }
            // The team is gone or disabled: nothing to send them to.
            None => invites
                .into_iter()
                .map(|i| (i.email, InviteOutcome::Dropped))
                .collect(),
        };
        seats::confirm_invites(&app.pool, mother_id, team_id, &outcomes, now).await?;
    }

    // 2. Backfill members into children; seats follow.
    let mut wanted: HashMap<String, SeatWant> = HashMap::new();
    for (pteam, team) in &linked {
        let members = provider.list_members(&credential, &pteam.id).await?;
        let children: Vec<ChildInput> = members
            .into_iter()
            .map(|m| ChildInput {
                email: m.email.trim().to_ascii_lowercase(),
                name: m.name,
                status: m.status.as_str().to_string(),
            })
            .filter(|c| !owners.contains(&c.email))
            .collect();
        for c in &children {
            let want = if c.status == MemberStatus::Active.as_str() {
                SeatWant::Used
            } else {
                SeatWant::Held
            };
            let slot = wanted.entry(c.email.clone()).or_insert(want);
            if want == SeatWant::Used {
                *slot = SeatWant::Used;
            }
        }
        let changes =
            mothers::sync_team_children(&app.pool, mother_id, team.id, &children, now).await?;
        report.children_created += changes.created;
        report.children_updated += changes.updated;
        report.children_removed += changes.removed;
    }
    count(
        "sync_child",
        report.children_created + report.children_updated + report.children_removed,
    );
    let mut wanted: Vec<(String, SeatWant)> = wanted.into_iter().collect();
    wanted.sort_by(|a, b| a.0.cmp(&b.0));
    let plan =
        seats::follow_members(&app.pool, mother_id, &wanted, now + INVITE_HOLD_MS, now).await?;
    report.seats_changed = i64::try_from(plan.changes.len()).unwrap_or(i64::MAX);
    report.seats_overflow = i64::try_from(plan.overflow.len()).unwrap_or(i64::MAX);

    // 3. Auto-invite (the group's setting or the instance-wide one) generated addresses into free
    // seats. The invitations are reserved first (children `inviting`, seats held), so a run killed
    // while sending resends the same addresses (step 2a); held seats are not free, so a rerun
    // sends nothing new.
    if (group.settings.auto_invite || app.config.pool_auto_invite_missing)
        && let Some((pteam, team)) = linked.first()
    {
        let free = mothers::get(&app.pool, mother_id).await?.usage.seats_free;
        if free > 0 {
            let numbers =
                groups::allocate_sequences(&app.pool, group_id, &day, SequenceKind::Child, free)
                    .await?;
            let mut invites = Vec::new();
            for seq in numbers {
                let values = NameValues {
                    group: &group.name,
                    date: &day,
                    seq,
                    domain,
                };
                let (Some(email), Some(name)) = (
                    names.child_email.render(&values),
                    names.child_name.render(&values),
                ) else {
                    return Err(SyncError::Failed(format!(
                        "pool group {}: child templates need a domain",
                        group.name
                    )));
                };
                invites.push(NewInvite {
                    email: email.to_ascii_lowercase(),
                    name,
                });
            }
            let reserved = seats::reserve_invites(
                &app.pool,
                mother_id,
                team.id,
                &invites,
                now + INVITE_HOLD_MS,
                now,
            )
            .await?;
            let outcomes = send_reserved(
                provider.as_ref(),
                &credential,
                &pteam.id,
                &reserved,
                &mut report,
            )
            .await?;
            seats::confirm_invites(&app.pool, mother_id, team.id, &outcomes, now).await?;
        }
    }
    count("auto_invite", report.invites_sent);
    mothers::mark_synced(&app.pool, mother_id, now).await?;
    Ok(report)
}

/// Sends reserved invitations in order and says what became of each. Once the provider's team is
/// full the rest are not sent.
async fn send_reserved(
    provider: &dyn Provider,
    credential: &Credential,
    team_id: &str,
    invites: &[NewInvite],
    report: &mut SyncReport,
) -> Result<Vec<(String, InviteOutcome)>, SyncError> {
    let mut outcomes = Vec::with_capacity(invites.len());
    let mut full = false;
    for invite in invites {
        let outcome = if full {
            InviteOutcome::Dropped
        } else {
            match provider
                .invite(credential, team_id, &invite.email, &invite.name)
                .await
            {
                Ok(Invited::Sent) => {
                    report.invites_sent += 1;
                    InviteOutcome::Invited
                }
                Ok(Invited::Added) => {
                    report.invites_sent += 1;
                    InviteOutcome::Added
                }
                Ok(Invited::AlreadyPresent) => InviteOutcome::Invited,
                Err(ProviderError::Conflict(_)) => {
                    full = true;
                    InviteOutcome::Dropped
                }
                Err(e) => return Err(e.into()),
            }
        };
        outcomes.push((invite.email.clone(), outcome));
    }
    Ok(outcomes)
}

/// A queued single-mother sync.
#[derive(Clone, Debug)]
pub struct QueuedSync {
    pub job_id: String,
    pub deduplicated: bool,
    /// The session of the live job (this request's own unless deduplicated).
    pub session_id: Option<String>,
}

fn new_session_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn sync_job(mother_id: i64, group_id: i64, session_id: &str, record_id: i64) -> NewJob {
    let payload = SyncPayload {
        mother_id,
        group_id,
        session_id: Some(session_id.to_string()),
        record_id: Some(record_id),
    };
    NewJob::new(
        POOL_SYNC_MOTHER,
        serde_json::to_value(payload).unwrap_or(Value::Null),
    )
    .dedup_key(dedup_key(mother_id, group_id))
}

/// Puts the mother in the group and enqueues her sync in a `manual_single` session. Concurrent
/// calls for one mother share one live job (the dedup key); a call that finds the job already
/// live drops its own session and reports the live job's.
pub async fn enqueue_mother_sync(
    app: &App,
    group_id: i64,
    mother_id: i64,
    created_by: &str,
) -> ApiResult<QueuedSync> {
    let now = app.clock.now_ms();
    if !groups::exists(&app.pool, group_id).await? {
        return Err(ApiError::not_found(format!("no pool group {group_id}")));
    }
    match mothers::set_pool_group(&app.pool, mother_id, group_id, now).await {
        Err(StoreError::NotFound) => {
            return Err(ApiError::not_found(format!("no mother {mother_id}")));
        }
        other => other?,
    }
    let session_id = new_session_id();
    let session = NewSession {
        sync_type: "manual_single",
        category: "pool",
        pool_group_id: Some(group_id),
        created_by: Some(created_by),
    };
    let records =
        sync_sessions::create(&app.pool, &session_id, &session, &[mother_id], now).await?;
    let record_id = records.first().map_or(0, |r| r.id);
    let job = sync_job(mother_id, group_id, &session_id, record_id);
    let (row, deduplicated) =
        super::enqueue(&app.users, &job, app.config.jobs.max_attempts, now).await?;
    let session_id = if deduplicated {
        sync_sessions::delete(&app.pool, &session_id).await?;
        serde_json::from_str::<SyncPayload>(&row.payload)
            .ok()
            .and_then(|p| p.session_id)
    } else {
        sync_sessions::set_record_job(&app.pool, record_id, &row.id).await?;
        Some(session_id)
    };
    Ok(QueuedSync {
        job_id: row.id,
        deduplicated,
        session_id,
    })
}

/// Enqueues a sync of every active mother of the group in one `manual_batch` session; returns
/// the session id and the job ids in mother order. A mother whose sync was already live keeps
/// that job; her record here is cancelled with a note naming it.
pub async fn enqueue_group_sync(
    app: &App,
    group_id: i64,
    sync_type: &str,
    created_by: &str,
) -> ApiResult<(String, Vec<String>)> {
    let now = app.clock.now_ms();
    if !groups::exists(&app.pool, group_id).await? {
        return Err(ApiError::not_found(format!("no pool group {group_id}")));
    }
    let ids = mothers::ids_in_group(&app.pool, group_id, "active").await?;
    let session_id = new_session_id();
    let session = NewSession {
        sync_type,
        category: "pool",
        pool_group_id: Some(group_id),
        created_by: Some(created_by),
    };
    let records = sync_sessions::create(&app.pool, &session_id, &session, &ids, now).await?;
    let jobs: Vec<NewJob> = records
        .iter()
        .map(|r| sync_job(r.mother_id, group_id, &session_id, r.id))
        .collect();
    let out = super::enqueue_many(&app.users, &jobs, app.config.jobs.max_attempts, now).await?;
    for (record, (job_id, deduplicated)) in records.iter().zip(&out) {
        if *deduplicated {
            let note = RecordOutcome {
                status: "cancelled",
                error_message: Some(format!(
                    "a sync of mother {} was already queued as job {job_id}",
                    record.mother_id
                )),
                details: serde_json::json!({"job_id": job_id}),
                ..RecordOutcome::default()
            };
            sync_sessions::finish_record(&app.pool, record.id, &note, now).await?;
        } else {
            sync_sessions::set_record_job(&app.pool, record.id, job_id).await?;
        }
    }
    Ok((session_id, out.into_iter().map(|(id, _)| id).collect()))
}
