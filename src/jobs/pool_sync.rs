//! The `pool_sync_mother` job: keeps one mother's teams, children and seats in step with her
//! provider, and fills free seats by invitation when auto-invite is on (the group's `auto_invite`
//! or the instance-wide `pool_auto_invite_missing`). It owns the mapping from
//! provider errors to job outcomes (unauthorized marks the mother `invalid`). The request side
//! (sessions, enqueue) is `service::pool_sync`. Every step compares before it writes, so a rerun
//! changes nothing.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Handlers, JobArgs, JobContext, JobError, JobResult};
use crate::app::{App, AppState};
use crate::crypto::Credential;
use crate::domain::job_retry::FailureKind;
use crate::domain::naming::{self, NameValues, Naming};
use crate::domain::sync_plan::{self, LocalTeam, NeedsDomain, TeamLink, TeamName};
use crate::providers::{Invited, MemberStatus, Provider, ProviderError, ProviderTeam};
use crate::store::invitations::{self, InviteOutcome, NewInvite};
use crate::store::mothers::{self as mothers, ChildInput, Team};
use crate::store::pool_groups::{self as groups, SequenceKind};
use crate::store::sync_sessions::{self, RecordOutcome};
use crate::store::{StoreError, invites, seats};

pub const POOL_SYNC_MOTHER: &str = SyncMother::KIND;
/// How long a seat stays held for a pending invite before the scheduler may free it.
pub const INVITE_HOLD_MS: i64 = 7 * 24 * 3_600_000;

pub const ACTIONS_METRIC: &str = "pool_sync_actions_total";
pub const DURATION_METRIC: &str = "pool_sync_duration_ms";

/// The job's payload: sync this mother as a member of this group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncMother {
    pub mother_id: i64,
    pub group_id: i64,
    /// The sync session this run belongs to, and the mother's record in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<i64>,
}

impl SyncMother {
    /// A run recorded as `record_id` of `session_id`.
    pub fn in_session(mother_id: i64, group_id: i64, session_id: &str, record_id: i64) -> Self {
        Self {
            mother_id,
            group_id,
            session_id: Some(session_id.to_string()),
            record_id: Some(record_id),
        }
    }
}

impl JobArgs for SyncMother {
    const KIND: &'static str = "pool_sync_mother";

    /// One live sync per (mother, group).
    fn dedup_key(&self) -> Option<String> {
        Some(format!(
            "{}:{}:{}",
            Self::KIND,
            self.mother_id,
            self.group_id
        ))
    }
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
    /// Redeem invites (users database) marked `accepted` because the member now shows as active.
    #[serde(default)]
    pub invites_accepted: i64,
}

/// Why a sync stopped.
#[derive(Debug)]
pub enum SyncError {
    Provider(ProviderError),
    /// Nothing a retry would fix (no such mother, bad templates, unreadable credential).
    Failed(String),
    Store(StoreError),
    /// An admin asked to cancel the job: no further provider call is made or waited for.
    Cancelled,
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
    handlers.register_job(move |ctx, args: SyncMother| {
        let app = app.clone();
        async move { run(&app, ctx, args).await }
    });
}

async fn run(app: &App, ctx: JobContext, payload: SyncMother) -> JobResult {
    // A job whose cancel was asked for before it started (a retry of a cancelled attempt, a job
    // handed back) ends at once and says so in its record.
    if ctx.is_cancelled() {
        if let Some(record) = payload.record_id {
            record_outcome(app, &ctx, record, &Err(JobError::cancelled())).await?;
        }
        return Err(JobError::cancelled());
    }
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
    let outcome = sync_mother(app, &ctx, payload.mother_id, payload.group_id).await;
    metrics::histogram!(DURATION_METRIC).record(started.elapsed().as_secs_f64() * 1000.0);
    let result = match outcome {
        Ok(report) => Ok(report),
        // A call that failed while the cancel came in ends the job too: no retry follows.
        Err(_) if ctx.is_cancelled() => Err(JobError::cancelled()),
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
            if let Err(e) = app
                .webhooks
                .mark_mother_invalid(&app.pool, mother_id, app.clock.now_ms())
                .await
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
        SyncError::Cancelled => JobError::cancelled(),
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

/// One provider call, made only while no cancel is requested, and given up as soon as one is (a
/// provider that never answers must not hold a cancelled job for its whole timeout). Every
/// provider call of a sync goes through here, so cancellation is also checked between calls.
async fn call<T>(
    ctx: &JobContext,
    call: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, SyncError> {
    if ctx.is_cancelled() {
        return Err(SyncError::Cancelled);
    }
    tokio::select! {
        biased;
        _ = ctx.cancelled() => Err(SyncError::Cancelled),
        result = call => result.map_err(SyncError::Provider),
    }
}

fn count(action: &'static str, n: i64) {
    if n > 0 {
        metrics::counter!(ACTIONS_METRIC, "action" => action).increment(n.unsigned_abs());
    }
}

/// Syncs one mother of one group (see the module notes); stops when `ctx` is cancelled.
pub async fn sync_mother(
    app: &App,
    ctx: &JobContext,
    mother_id: i64,
    group_id: i64,
) -> Result<SyncReport, SyncError> {
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
    let (group_name, settings) = groups::name_and_settings(&app.pool, group_id)
        .await
        .map_err(not_found(format!("no pool group {group_id}")))?;
    let day = naming::utc_day(now);
    let names = Naming::check(
        &group_name,
        &settings.naming(),
        app.config.child_email_domain.as_deref(),
        &day,
    )
    .map_err(|e| SyncError::Failed(format!("pool group {}: {e}", group_name)))?;
    let sealed = mothers::credential_sealed(&app.pool, mother_id).await?;
    let credential = app.keyring.open(&sealed).map_err(|e| {
        SyncError::Failed(format!(
            "the credential of mother {mother_id} cannot be opened: {e}"
        ))
    })?;
    let provider = app
        .providers
        .for_mother(&mother.provider, &mother.provider_config)?;

    let account = call(ctx, provider.identify(&credential)).await?;
    let mut owners = vec![account.owner_email.to_ascii_lowercase()];
    if let Some(owner) = mother
        .provider_config
        .get("owner_email")
        .and_then(Value::as_str)
    {
        owners.push(owner.to_ascii_lowercase());
    }
    let mut report = SyncReport::default();

    // Link local teams to the provider's (see `sync_plan::link_teams`).
    let provider_teams = call(ctx, provider.list_teams(&credential)).await?;
    let ids: Vec<&str> = provider_teams.iter().map(|t| t.id.as_str()).collect();
    let local: Vec<LocalTeam> = detail
        .teams
        .iter()
        .map(|t| LocalTeam {
            id: t.id,
            provider_team_id: t.provider_team_id.clone(),
            is_default: t.is_default,
        })
        .collect();
    let links = sync_plan::link_teams(&ids, &local);
    let mut linked: Vec<(ProviderTeam, Team)> = Vec::new();
    for (pteam, link) in provider_teams.iter().zip(links) {
        let team = match link {
            TeamLink::Local {
                local_id,
                newly_linked,
            } => {
                let Some(mut team) = detail.teams.iter().find(|t| t.id == local_id).cloned() else {
                    continue;
                };
                if newly_linked {
                    mothers::link_team(&app.pool, team.id, &pteam.id, &team.name).await?;
                    team.provider_team_id = Some(pteam.id.clone());
                }
                team
            }
            TeamLink::New => {
                report.teams_added += 1;
                mothers::add_provider_team(&app.pool, mother_id, &pteam.id, &pteam.name, now)
                    .await?
            }
        };
        if team.is_enabled {
            linked.push((pteam.clone(), team));
        }
    }

    // 1. Rename by the group's template. A name this group gave (on the provider, or locally when
    // the mother was created) is kept and uses no number.
    let domain = names.domain.as_deref();
    for (pteam, team) in &mut linked {
        let target =
            match sync_plan::team_name(&names.team, &group_name, domain, &pteam.name, &team.name) {
                TeamName::Provider => pteam.name.clone(),
                TeamName::Local => team.name.clone(),
                TeamName::Render => {
                    let seq =
                        groups::allocate_sequence(&app.pool, group_id, &day, SequenceKind::Team)
                            .await?;
                    let values = NameValues {
                        group: &group_name,
                        date: &day,
                        seq,
                        domain,
                    };
                    names.team.render(&values).ok_or_else(|| {
                        SyncError::Failed(format!(
                            "pool group {}: team_template needs a domain",
                            group_name
                        ))
                    })?
                }
            };
        if pteam.name != target {
            call(ctx, provider.rename_team(&credential, &pteam.id, &target)).await?;
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
    for (team_id, email, name) in invitations::unconfirmed_invites(&app.pool, mother_id).await? {
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
                    ctx,
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
        invitations::confirm_invites(&app.pool, mother_id, team_id, &outcomes, now).await?;
    }

    // 2. Backfill members into children; seats follow (see `sync_plan::seat_wants`).
    let mut members: Vec<(String, bool)> = Vec::new();
    for (pteam, team) in &linked {
        let children: Vec<ChildInput> = call(ctx, provider.list_members(&credential, &pteam.id))
            .await?
            .into_iter()
            .map(|m| ChildInput {
                email: sync_plan::normal_email(&m.email),
                name: m.name,
                status: m.status.as_str().to_string(),
            })
            .filter(|c| !owners.contains(&c.email))
            .collect();
        members.extend(
            children
                .iter()
                .map(|c| (c.email.clone(), c.status == MemberStatus::Active.as_str())),
        );
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
    let wanted = sync_plan::seat_wants(members.iter().map(|(e, active)| (e.as_str(), *active)));
    let plan =
        seats::follow_members(&app.pool, mother_id, &wanted, now + INVITE_HOLD_MS, now).await?;
    report.seats_changed = i64::try_from(plan.changes.len()).unwrap_or(i64::MAX);
    report.seats_overflow = i64::try_from(plan.overflow.len()).unwrap_or(i64::MAX);

    // 3. Auto-invite (the group's setting or the instance-wide one) generated addresses into free
    // seats. The invitations are reserved first (children `inviting`, seats held), so a run killed
    // while sending resends the same addresses (step 2a); held seats are not free, so a rerun
    // sends nothing new.
    if (settings.auto_invite || app.config.pool_auto_invite_missing)
        && let Some((pteam, team)) = linked.first()
    {
        let free = mothers::get(&app.pool, mother_id).await?.usage.seats_free;
        if free > 0 {
            let numbers =
                groups::allocate_sequences(&app.pool, group_id, &day, SequenceKind::Child, free)
                    .await?;
            let invites: Vec<NewInvite> =
                sync_plan::invite_names(&names, &group_name, &day, numbers)
                    .map_err(|NeedsDomain| {
                        SyncError::Failed(format!(
                            "pool group {}: child templates need a domain",
                            group_name
                        ))
                    })?
                    .into_iter()
                    .map(|i| NewInvite {
                        email: i.email,
                        name: i.name,
                    })
                    .collect();
            let reserved = invitations::reserve_invites(
                &app.pool,
                mother_id,
                team.id,
                &invites,
                now + INVITE_HOLD_MS,
                now,
            )
            .await?;
            let outcomes = send_reserved(
                ctx,
                provider.as_ref(),
                &credential,
                &pteam.id,
                &reserved,
                &mut report,
            )
            .await?;
            invitations::confirm_invites(&app.pool, mother_id, team.id, &outcomes, now).await?;
        }
    }
    count("auto_invite", report.invites_sent);
    mothers::mark_synced(&app.pool, mother_id, now).await?;

    // 4. Redeem invites whose address is now an active member are accepted. They live in the
    // users database: a separate step after the pool writes, never one query across both.
    let active: HashSet<String> = members
        .into_iter()
        .filter_map(|(email, active)| active.then_some(email))
        .collect();
    let accepted = invites::mark_accepted(&app.users, mother_id, &active, now).await?;
    report.invites_accepted = i64::try_from(accepted).unwrap_or(i64::MAX);
    Ok(report)
}

/// Sends reserved invitations in order and says what became of each. Once the provider's team is
/// full the rest are not sent.
async fn send_reserved(
    ctx: &JobContext,
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
            match call(
                ctx,
                provider.invite(credential, team_id, &invite.email, &invite.name),
            )
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
                Err(SyncError::Provider(ProviderError::Conflict(_))) => {
                    full = true;
                    InviteOutcome::Dropped
                }
                Err(e) => return Err(e),
            }
        };
        outcomes.push((invite.email.clone(), outcome));
    }
    Ok(outcomes)
}
