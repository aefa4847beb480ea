//! The bulk invite jobs `users_resend`, `users_cancel` and `users_remove`: each takes a list of
//! invite ids and does its action to every one, recording a result per invite (`resent`,
//! `cancelled`, `removed`, `skipped: reason` or `failed: error`).
//!
//! Each item is a few steps, each safe to repeat: the provider call (an invite, or a removal,
//! which the provider treats as done when the address is not there), then freeing the invite's
//! seat in the pool database (only while it is still held by the invite's address), then one
//! users-database transaction that changes the invite and records the item's result. A retried
//! job skips the items it recorded. A provider outage or rate limit leaves the item unrecorded and
//! the job retries it later; on the last attempt it is recorded as failed.
//!
//! The request side (checks, enqueue) is `service::invites`. This module never writes `seats`
//! except through `store::seats`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Handlers, JobArgs, JobContext, JobError, JobResult};
use crate::app::{App, AppState};
use crate::crypto::Credential;
use crate::providers::{MemberStatus, Provider, ProviderError};
use crate::store::invites::{self, Invite, ItemChange};
use crate::store::{StoreError, mothers, seats};

/// Statuses each action applies to.
const RESENDABLE: &[&str] = &["pending", "sent"];
const CANCELLABLE: &[&str] = &["pending", "sent"];
const REMOVABLE: &[&str] = &["pending", "sent", "accepted"];

/// Payload of `users_resend`: invite again, through the provider, the addresses of these invites.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResendInvites {
    pub ids: Vec<i64>,
}

impl JobArgs for ResendInvites {
    const KIND: &'static str = "users_resend";
}

/// Payload of `users_cancel`: withdraw these pending or sent invites and free their seats.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CancelInvites {
    pub ids: Vec<i64>,
}

impl JobArgs for CancelInvites {
    const KIND: &'static str = "users_cancel";
}

/// Payload of `users_remove`: remove these invitees (members or not yet) at the provider and free
/// their seats.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoveInvites {
    pub ids: Vec<i64>,
}

impl JobArgs for RemoveInvites {
    const KIND: &'static str = "users_remove";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Resend,
    Cancel,
    Remove,
}

impl Action {
    fn applies_to(self) -> &'static [&'static str] {
        match self {
            Action::Resend => RESENDABLE,
            Action::Cancel => CANCELLABLE,
            Action::Remove => REMOVABLE,
        }
    }
    /// The result of an item this action did.
    fn done(self) -> &'static str {
        match self {
            Action::Resend => "resent",
            Action::Cancel => "cancelled",
            Action::Remove => "removed",
        }
    }
}

/// Registers the three bulk invite handlers; they reach the databases and providers through `app`.
pub fn register(handlers: &mut Handlers, app: AppState) {
    let a = app.clone();
    handlers.register_job(move |ctx, args: ResendInvites| {
        let app = a.clone();
        async move { run(&app, &ctx, Action::Resend, &args.ids).await }
    });
    let a = app.clone();
    handlers.register_job(move |ctx, args: CancelInvites| {
        let app = a.clone();
        async move { run(&app, &ctx, Action::Cancel, &args.ids).await }
    });
    handlers.register_job(move |ctx, args: RemoveInvites| {
        let app = app.clone();
        async move { run(&app, &ctx, Action::Remove, &args.ids).await }
    });
}

fn db(e: StoreError) -> JobError {
    JobError::transient(format!("database: {e}"))
}

/// How to reach a mother's provider, opened once per job.
struct Reach {
    provider: Arc<dyn Provider>,
    credential: Credential,
    /// Provider team id by local team id.
    teams: HashMap<i64, String>,
}

/// What one item came to before it is recorded.
enum Step {
    /// Record this result, with this change to the invite.
    Record(Option<ItemChange<'static>>, String),
    /// The provider refused a resend: count the attempt with this error, and record it failed.
    ResendFailed(String),
    /// The provider was unavailable: try the item again on the next attempt.
    Later(ProviderError),
}

/// A resend the provider refused: one more attempt, its error kept on the invite.
fn resend_failed(error: &str) -> ItemChange<'_> {
    ItemChange {
        from: RESENDABLE,
        to: None,
        attempt: true,
        error: Some(error),
    }
}

async fn run(app: &App, ctx: &JobContext, action: Action, ids: &[i64]) -> JobResult {
    let done: HashMap<i64, String> = invites::job_items(&app.users, &ctx.id)
        .await
        .map_err(db)?
        .into_iter()
        .collect();
    let mut reach: HashMap<i64, Result<Reach, String>> = HashMap::new();
    let mut later: Vec<(i64, ProviderError)> = Vec::new();
    for &id in ids {
        if done.contains_key(&id) {
            continue;
        }
        if ctx.is_cancelled() {
            return Err(JobError::cancelled());
        }
        let step = item(app, ctx, action, id, &mut reach).await?;
        match step {
            Step::Record(change, result) => {
                invites::record_job_item(
                    &app.users,
                    &ctx.id,
                    id,
                    change,
                    &result,
                    app.clock.now_ms(),
                )
                .await
                .map_err(db)?;
            }
            Step::ResendFailed(error) => {
                invites::record_job_item(
                    &app.users,
                    &ctx.id,
                    id,
                    Some(resend_failed(&error)),
                    &format!("failed: {error}"),
                    app.clock.now_ms(),
                )
                .await
                .map_err(db)?;
            }
            Step::Later(e) => later.push((id, e)),
        }
    }
    if let Some((_, first)) = later.first() {
        if ctx.attempt < ctx.max_attempts {
            let message = format!(
                "{} invite(s) wait for the provider ({first}); the finished ones are kept",
                later.len()
            );
            return Err(match first {
                ProviderError::RateLimited { retry_after_ms } => {
                    JobError::retry_after(*retry_after_ms, message)
                }
                _ => JobError::transient(message),
            });
        }
        for (id, e) in &later {
            let error = e.to_string();
            let change = (action == Action::Resend).then(|| resend_failed(&error));
            invites::record_job_item(
                &app.users,
                &ctx.id,
                *id,
                change,
                &format!("failed: {error}"),
                app.clock.now_ms(),
            )
            .await
            .map_err(db)?;
        }
    }
    let results: BTreeMap<i64, String> = invites::job_items(&app.users, &ctx.id)
        .await
        .map_err(db)?
        .into_iter()
        .collect();
    Ok(Some(summary(action, &results)))
}

/// The job's result: a count per outcome and the result of every item by invite id.
fn summary(action: Action, results: &BTreeMap<i64, String>) -> serde_json::Value {
    let count = |prefix: &str| results.values().filter(|r| r.starts_with(prefix)).count();
    serde_json::json!({
        action.done(): count(action.done()),
        "skipped": count("skipped"),
        "failed": count("failed"),
        "results": results
            .iter()
            .map(|(id, r)| (id.to_string(), serde_json::Value::String(r.clone())))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// Does `action` to invite `id` at the provider and in the pool database; says what to record.
async fn item(
    app: &App,
    ctx: &JobContext,
    action: Action,
    id: i64,
    reach: &mut HashMap<i64, Result<Reach, String>>,
) -> Result<Step, JobError> {
    let Some(invite) = invites::get(&app.users, id).await.map_err(db)? else {
        return Ok(Step::Record(None, "skipped: no such invite".into()));
    };
    if !action.applies_to().contains(&invite.status.as_str()) {
        return Ok(Step::Record(
            None,
            format!("skipped: the invite is {}", invite.status),
        ));
    }
    if let std::collections::hash_map::Entry::Vacant(slot) = reach.entry(invite.mother_id) {
        slot.insert(open(app, invite.mother_id).await?);
    }
    let target = match reach.get(&invite.mother_id) {
        Some(Ok(r)) => r.teams.get(&invite.team_id).map(|team| (r, team.as_str())),
        _ => None,
    };
    let failed = |m: String| Ok(Step::Record(None, format!("failed: {m}")));
    match action {
        Action::Resend => {
            let Some((r, team)) = target else {
                return failed(unreachable(reach, &invite));
            };
            let name = invite.email.split('@').next().unwrap_or(&invite.email);
            match provider_call(
                ctx,
                r.provider.invite(&r.credential, team, &invite.email, name),
            )
            .await?
            {
                Ok(_) => Ok(Step::Record(
                    Some(ItemChange {
                        from: RESENDABLE,
                        to: Some("sent"),
                        attempt: true,
                        error: None,
                    }),
                    action.done().into(),
                )),
                Err(e) if is_passing(&e) => Ok(Step::Later(e)),
                Err(e) => Ok(Step::ResendFailed(e.to_string())),
            }
        }
        Action::Cancel | Action::Remove => {
            match (target, reach.get(&invite.mother_id)) {
                (Some((r, team)), _) => {
                    if action == Action::Cancel {
                        // A cancel withdraws an invitation; a member who already accepted is
                        // left alone (removing her is `users_remove`), and the invite says so.
                        let members =
                            match provider_call(ctx, r.provider.list_members(&r.credential, team))
                                .await?
                            {
                                Ok(m) => m,
                                Err(e) if is_passing(&e) => return Ok(Step::Later(e)),
                                Err(e) => return failed(e.to_string()),
                            };
                        let member = members
                            .iter()
                            .find(|m| m.email.eq_ignore_ascii_case(&invite.email));
                        if member.is_some_and(|m| m.status == MemberStatus::Active) {
                            return Ok(Step::Record(
                                Some(ItemChange {
                                    from: CANCELLABLE,
                                    to: Some("accepted"),
                                    attempt: false,
                                    error: None,
                                }),
                                "skipped: the invite was already accepted".into(),
                            ));
                        }
                        if member.is_none() {
                            return free_and_record(app, action, &invite).await;
                        }
                    }
                    match provider_call(
                        ctx,
                        r.provider.remove_member(&r.credential, team, &invite.email),
                    )
                    .await?
                    {
                        Ok(()) => free_and_record(app, action, &invite).await,
                        Err(e) if is_passing(&e) => Ok(Step::Later(e)),
                        Err(e) => failed(e.to_string()),
                    }
                }
                // The mother was deleted: nothing is left at the provider to withdraw from.
                (None, Some(Err(m))) if m == GONE => free_and_record(app, action, &invite).await,
                (None, _) => failed(unreachable(reach, &invite)),
            }
        }
    }
}

const GONE: &str = "the mother no longer exists";

fn unreachable(reach: &HashMap<i64, Result<Reach, String>>, invite: &Invite) -> String {
    match reach.get(&invite.mother_id) {
        Some(Err(m)) => m.clone(),
        _ => format!(
            "team {} of mother {} is gone or not linked to the provider",
            invite.team_id, invite.mother_id
        ),
    }
}

/// Frees the invite's seat (pool database), then says to record the item (users database).
async fn free_and_record(app: &App, action: Action, invite: &Invite) -> Result<Step, JobError> {
    if let Some(seat) = invite.seat_id {
        seats::release_held_by(&app.pool, seat, &invite.email, app.clock.now_ms())
            .await
            .map_err(db)?;
    }
    Ok(Step::Record(
        Some(ItemChange {
            from: action.applies_to(),
            to: Some(action.done()),
            attempt: false,
            error: None,
        }),
        action.done().into(),
    ))
}

/// Opens a mother's provider and credential; `Err` names why she cannot be reached (a database
/// failure fails the attempt instead).
async fn open(app: &App, mother_id: i64) -> Result<Result<Reach, String>, JobError> {
    let detail = match mothers::get_detail(&app.pool, mother_id).await {
        Ok(d) => d,
        Err(StoreError::NotFound) => return Ok(Err(GONE.into())),
        Err(e) => return Err(db(e)),
    };
    let sealed = mothers::credential_sealed(&app.pool, mother_id)
        .await
        .map_err(db)?;
    let credential = match app.keyring.open(&sealed) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Err(format!(
                "the credential of mother {mother_id} cannot be opened: {e}"
            )));
        }
    };
    let m = &detail.mother;
    let provider = match app.providers.for_mother(&m.provider, &m.provider_config) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let teams = detail
        .teams
        .into_iter()
        .filter_map(|t| t.provider_team_id.map(|p| (t.id, p)))
        .collect();
    Ok(Ok(Reach {
        provider,
        credential,
        teams,
    }))
}

/// A provider failure that may pass, so the item is tried again on the next attempt.
fn is_passing(e: &ProviderError) -> bool {
    matches!(
        e,
        ProviderError::RateLimited { .. } | ProviderError::Transient(_)
    )
}

/// One provider call, given up as soon as the job is cancelled.
async fn provider_call<T>(
    ctx: &JobContext,
    call: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<Result<T, ProviderError>, JobError> {
    tokio::select! {
        biased;
        _ = ctx.cancelled() => Err(JobError::cancelled()),
        result = call => Ok(result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_outcomes_and_keys_results_by_invite_id() {
        let results = BTreeMap::from([
            (3, "removed".to_string()),
            (7, "skipped: the invite is cancelled".to_string()),
            (9, "failed: unauthorized: revoked".to_string()),
            (12, "removed".to_string()),
        ]);
        let s = summary(Action::Remove, &results);
        assert_eq!(
            s,
            serde_json::json!({
                "removed": 2, "skipped": 1, "failed": 1,
                "results": {"3": "removed", "7": "skipped: the invite is cancelled",
                    "9": "failed: unauthorized: revoked", "12": "removed"},
            })
        );
    }

    #[test]
    fn each_action_applies_to_its_statuses_only() {
        assert_eq!(Action::Resend.applies_to(), ["pending", "sent"]);
        assert_eq!(Action::Cancel.applies_to(), ["pending", "sent"]);
        assert_eq!(Action::Remove.applies_to(), ["pending", "sent", "accepted"]);
        for status in ["failed", "cancelled", "removed"] {
            for action in [Action::Resend, Action::Cancel, Action::Remove] {
                assert!(
                    !action.applies_to().contains(&status),
                    "{action:?} {status}"
                );
            }
        }
    }
}
