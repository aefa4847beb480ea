//! The audit log: who changed what, from where, as one append-only, hash-chained row per change.
//! API handlers, page handlers and CLI commands call [`record`] right after the service call that
//! made the change succeeded, with the same action, target and summary from every door, so one
//! action leaves the same row however it was made. Summaries are scrubbed of secret-named keys
//! (`domain::audit::scrub_summary`) before they are written; callers should not pass secrets anyway.
//! Never changes or removes a row, except [`purge_expired`] (retention).

use std::io::Write;

use serde_json::Value;

use super::{Error, Result};
use crate::auth::Principal;
use crate::clock::SharedClock;
use crate::db::UsersDb;
use crate::domain::audit::{self as rules, BrokenLink, ChainHead};
use crate::store::audit::{self as store, AuditEntry, AuditFilter, NewEntry};

/// Every action the log records, for filter menus.
pub const ACTIONS: &[&str] = &[
    "login.success",
    "login.failure",
    "mother.create",
    "mother.update",
    "mother.delete",
    "mother.rotate_credential",
    "mother.import",
    "mother.sync",
    "sim.add_org",
    "pool_group.create",
    "pool_group.update",
    "pool_group.delete",
    "pool_group.sync",
    "sync_session.cancel",
    "job.retry",
    "job.cancel",
    "codes.generate",
    "codes.disable",
    "invites.resend",
    "invites.cancel",
    "invites.remove",
    "account.create",
    "account.update",
    "account.delete",
    "account.reset",
    "account.import",
    "token.create",
    "token.revoke",
    "admin.create",
    "admin.role",
    "admin.password",
    "admin.disable",
    "admin.enable",
    "secrets.rotate",
    "audit.retention",
];

/// Who made a change and from which address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// `Principal::display_name()` (username or `token:<name>`), `cli:<os user>`, or `system`.
    pub name: String,
    /// The client address, `local` for the CLI.
    pub address: String,
}

impl Actor {
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            address: address.into(),
        }
    }

    /// A request's caller.
    pub fn from_principal(principal: &Principal, address: &str) -> Self {
        Self::new(principal.display_name(), address)
    }

    /// The person running a CLI command on this machine: `cli:<os user>`, address `local`.
    pub fn cli() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            // SAFETY: getuid has no preconditions and cannot fail.
            .unwrap_or_else(|| format!("uid{}", unsafe { libc::getuid() }));
        Self::new(format!("cli:{}", crate::auth::loggable(&user)), "local")
    }

    /// poolkeeper itself (housekeeping).
    pub fn system() -> Self {
        Self::new("system", "local")
    }
}

/// What a change did to what: the action (`mother.create`), the target's type and id, and a JSON
/// summary of the change.
#[derive(Clone, Debug)]
pub struct Change {
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: String,
    pub summary: Value,
}

impl Change {
    pub fn new(
        action: &'static str,
        target_type: &'static str,
        target_id: impl ToString,
        summary: Value,
    ) -> Self {
        Self {
            action,
            target_type,
            target_id: target_id.to_string(),
            summary,
        }
    }
}

/// Appends the row for `change` by `actor`, returning it.
pub async fn append(
    users: &UsersDb,
    clock: &SharedClock,
    actor: &Actor,
    change: Change,
) -> Result<AuditEntry> {
    let summary = rules::scrub_summary(change.summary);
    let summary = serde_json::to_string(&summary).map_err(Error::internal)?;
    Ok(store::append(
        users,
        &NewEntry {
            at: clock.now_ms(),
            actor: &actor.name,
            address: &actor.address,
            action: change.action,
            target_type: change.target_type,
            target_id: &change.target_id,
            summary: &summary,
        },
    )
    .await?)
}

/// Records a change that was already made. A failure to write the row does not undo the change or
/// fail the request that made it; it is logged as an error naming the action.
pub async fn record(users: &UsersDb, clock: &SharedClock, actor: &Actor, change: Change) {
    let action = change.action;
    let target = format!("{}:{}", change.target_type, change.target_id);
    if let Err(e) = append(users, clock, actor, change).await {
        tracing::error!(
            action,
            target,
            actor = %actor.name,
            error = %e.message,
            "writing an audit row failed"
        );
    }
}

/// Records who queued these jobs (shown on the job page).
pub async fn mark_jobs(users: &UsersDb, actor: &Actor, job_ids: &[String]) {
    if let Err(e) = store::set_job_actor(users, job_ids, &actor.name).await {
        tracing::error!(error = %e, "recording who queued jobs failed");
    }
}

/// Who queued a job, when a person or token did.
pub async fn job_actor(users: &UsersDb, job_id: &str) -> Result<Option<String>> {
    Ok(store::job_actor(users, job_id).await?)
}

/// Filters as they come from a query string or the command line; empty values mean "any".
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Checked filter values (times in UTC ms).
#[derive(Clone, Debug, Default)]
pub struct CheckedQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl CheckedQuery {
    pub fn filter(&self) -> AuditFilter<'_> {
        AuditFilter {
            actor: self.actor.as_deref(),
            action: self.action.as_deref(),
            target: self.target.as_deref(),
            from: self.from,
            to: self.to,
        }
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl AuditQuery {
    pub fn check(self) -> Result<CheckedQuery> {
        let time = |field: &'static str, v: Option<String>, bound| -> Result<Option<i64>> {
            non_empty(v)
                .map(|s| {
                    rules::parse_time_bound(&s, bound).map_err(|m| {
                        Error::invalid(format!("invalid_{field}"), format!("{field}: {m}"))
                    })
                })
                .transpose()
        };
        let from = time("from", self.from, rules::Bound::From)?;
        let to = time("to", self.to, rules::Bound::To)?;
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(Error::invalid("invalid_to", "to must be after from"));
        }
        for (field, v) in [
            ("actor", &self.actor),
            ("action", &self.action),
            ("target", &self.target),
        ] {
            if v.as_ref().is_some_and(|s| s.len() > 200) {
                return Err(Error::invalid(
                    format!("invalid_{field}"),
                    format!("{field} must be at most 200 bytes"),
                ));
            }
        }
        Ok(CheckedQuery {
            actor: non_empty(self.actor),
            action: non_empty(self.action),
            target: non_empty(self.target),
            from,
            to,
        })
    }
}

/// A page of matching rows, newest first, and how many match.
pub async fn list_page(
    users: &UsersDb,
    query: &CheckedQuery,
    limit: i64,
    offset: i64,
) -> Result<(Vec<AuditEntry>, i64)> {
    Ok(store::list_page(users, &query.filter(), limit, offset).await?)
}

/// Rows read per round trip by export, verify and follow.
const CHUNK: i64 = 1000;

/// Writes the matching rows, oldest first, as JSON lines, a chunk at a time (never the whole
/// table in memory). Returns how many were written.
pub async fn export<W: Write>(users: &UsersDb, query: &CheckedQuery, out: &mut W) -> Result<u64> {
    let filter = query.filter();
    let mut after = 0;
    let mut written = 0;
    loop {
        let rows = store::list_after(users, &filter, after, CHUNK).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.id;
        for row in &rows {
            serde_json::to_writer(&mut *out, row).map_err(Error::internal)?;
            out.write_all(b"\n").map_err(Error::internal)?;
            written += 1;
        }
        out.flush().map_err(Error::internal)?;
    }
    Ok(written)
}

/// The newest `n` rows, oldest first (`audit tail`).
pub async fn latest(users: &UsersDb, n: i64) -> Result<Vec<AuditEntry>> {
    Ok(store::latest(users, n.clamp(0, 10_000)).await?)
}

/// Rows after `after_id`, oldest first, at most a chunk (`audit tail --follow`).
pub async fn after(users: &UsersDb, after_id: i64) -> Result<Vec<AuditEntry>> {
    Ok(store::list_after(users, &AuditFilter::default(), after_id, CHUNK).await?)
}

/// What `audit verify` found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Rows checked (up to the first broken link).
    pub checked: u64,
    /// The id the chain starts after: 0, or the anchor the retention cleanup left.
    pub anchored_at: i64,
    /// The first row that does not continue the chain.
    pub broken: Option<BrokenLink>,
}

/// Walks the whole chain from the anchor (or the first row ever), a chunk at a time, and reports
/// the first row that does not follow its predecessor.
pub async fn verify(users: &UsersDb) -> Result<VerifyReport> {
    // The anchor and the rows are read apart, so a retention run in between (the housekeeping
    // loop's) looks like rows gone missing: the anchor read is older than the rows left. A break
    // found while the anchor moved is walked again from the new anchor; a real break stays put.
    let mut anchor = store::anchor(users).await?;
    for _ in 1..VERIFY_ATTEMPTS {
        let report = walk(users, anchor.clone()).await?;
        if report.broken.is_none() {
            return Ok(report);
        }
        let now = store::anchor(users).await?;
        if now == anchor {
            return Ok(report);
        }
        anchor = now;
    }
    walk(users, anchor).await
}

/// How many times [`verify`] walks the chain while retention keeps moving its anchor.
const VERIFY_ATTEMPTS: usize = 3;

/// Walks the rows from `anchor` (the genesis head when there is none), checking every link.
async fn walk(users: &UsersDb, anchor: Option<ChainHead>) -> Result<VerifyReport> {
    let mut head = anchor.unwrap_or_else(ChainHead::genesis);
    let anchored_at = head.id;
    let mut checked = 0;
    let filter = AuditFilter::default();
    // Rows at or below the anchor should be gone; one still there would not be walked, so read
    // from id 0 and let the first link check name it.
    let mut after = 0;
    loop {
        let rows = store::list_after(users, &filter, after, CHUNK).await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            if let Err(broken) = rules::check_link(&head, &row.chained_fields(), &row.hash) {
                return Ok(VerifyReport {
                    checked,
                    anchored_at,
                    broken: Some(broken),
                });
            }
            checked += 1;
            head = ChainHead {
                id: row.id,
                hash: row.hash.clone(),
            };
        }
        after = head.id;
    }
    Ok(VerifyReport {
        checked,
        anchored_at,
        broken: None,
    })
}

/// Removes rows older than `retention_days` (retention; the housekeeping loop calls it). The rows
/// left still verify: the newest removed row becomes the anchor. A run that removed rows is itself
/// recorded, as `audit.retention` by `system`.
pub async fn purge_expired(
    users: &UsersDb,
    clock: &SharedClock,
    retention_days: u32,
) -> Result<u64> {
    let cutoff = clock.now_ms() - i64::from(retention_days) * 86_400_000;
    let removed = store::purge_before(users, cutoff).await?;
    if removed > 0 {
        record(
            users,
            clock,
            &Actor::system(),
            Change::new(
                "audit.retention",
                "audit_log",
                "",
                serde_json::json!({"removed": removed, "before": cutoff, "retention_days": retention_days}),
            ),
        )
        .await;
    }
    Ok(removed)
}

/// The rows of each audited action, built in one place so the API, the pages and the CLI write the
/// same action, target and summary for the same change.
pub mod changes {
    use serde_json::{Value, json};

    use super::Change;
    use crate::service::mothers::PatchMotherRequest;
    use crate::store::mothers::Mother;

    pub fn login_success(username: &str) -> Change {
        Change::new("login.success", "admin", username, json!({}))
    }

    /// A refused login; the name tried is kept (shortened, control characters escaped), never the
    /// password.
    pub fn login_failure(username: &str) -> Change {
        Change::new(
            "login.failure",
            "admin",
            crate::auth::loggable(username),
            json!({"reason": "wrong username or password"}),
        )
    }

    fn mother_fields(m: &Mother) -> Value {
        json!({
            "name": m.name,
            "provider": m.provider,
            "status": m.status,
            "seat_limit": m.seat_limit,
            "pool_group_id": m.pool_group_id,
        })
    }

    pub fn mother_create(m: &Mother) -> Change {
        Change::new("mother.create", "mother", m.id, mother_fields(m))
    }

    /// The fields a patch set (absent ones are not listed).
    pub fn mother_update(id: i64, patch: &PatchMotherRequest) -> Change {
        let mut changed = serde_json::Map::new();
        if let Some(v) = &patch.name {
            changed.insert("name".into(), json!(v));
        }
        if let Some(v) = &patch.status {
            changed.insert("status".into(), json!(v));
        }
        if let Some(v) = &patch.notes {
            changed.insert("notes".into(), json!(v));
        }
        if let Some(v) = &patch.pool_group_id {
            changed.insert("pool_group_id".into(), json!(v));
        }
        if let Some(v) = &patch.seat_limit {
            changed.insert("seat_limit".into(), json!(v));
        }
        Change::new("mother.update", "mother", id, json!({ "changed": changed }))
    }

    pub fn mother_delete(id: i64, force: bool) -> Change {
        Change::new("mother.delete", "mother", id, json!({ "force": force }))
    }

    /// A mother's provider credential was replaced (what it is never appears).
    pub fn mother_rotate_credential(id: i64) -> Change {
        Change::new("mother.rotate_credential", "mother", id, json!({}))
    }

    pub fn mother_sync(id: i64, group_id: i64, job_id: &str, session_id: Option<&str>) -> Change {
        Change::new(
            "mother.sync",
            "mother",
            id,
            json!({"pool_group_id": group_id, "job_id": job_id, "session_id": session_id}),
        )
    }

    pub fn group_sync(group_id: i64, session_id: &str, jobs: usize) -> Change {
        Change::new(
            "pool_group.sync",
            "pool_group",
            group_id,
            json!({"session_id": session_id, "jobs": jobs}),
        )
    }

    pub fn job_retry(job: &crate::store::jobs::Job) -> Change {
        Change::new(
            "job.retry",
            "job",
            &job.id,
            json!({"job_type": job.job_type}),
        )
    }

    pub fn job_cancel(job: &crate::store::jobs::Job) -> Change {
        Change::new(
            "job.cancel",
            "job",
            &job.id,
            json!({"job_type": job.job_type, "status": job.status}),
        )
    }

    pub fn token_create(token: &crate::store::tokens::ApiToken) -> Change {
        Change::new(
            "token.create",
            "token",
            token.id,
            json!({"name": token.name, "scope": token.scope}),
        )
    }

    pub fn token_revoke(token: &crate::store::tokens::ApiToken) -> Change {
        Change::new(
            "token.revoke",
            "token",
            token.id,
            json!({"name": token.name, "scope": token.scope}),
        )
    }

    /// Mothers imported from rows (API batch import, the page's paste, `poolkeeper import`).
    pub fn mother_import(rows: usize, imported: usize, invalid: usize) -> Change {
        Change::new(
            "mother.import",
            "mother",
            "",
            json!({"rows": rows, "imported": imported, "invalid": invalid}),
        )
    }
}

/// More rows of [`changes`]: codes and credential accounts.
pub mod more_changes {
    use serde_json::json;

    use super::Change;
    use crate::service::codes::{DisableOutcome, GeneratedBatch};
    use crate::service::credential_accounts::{AccountView, ImportSummary};

    /// A batch of redeem codes was made; how many, never the codes.
    pub fn codes_generate(batch: &GeneratedBatch) -> Change {
        Change::new(
            "codes.generate",
            "code_batch",
            &batch.batch_id,
            json!({
                "count": batch.codes.len(),
                "expires_at": batch.expires_at,
                "pool_group_id": batch.pool_group_id,
            }),
        )
    }

    /// One mother a bulk action of the Mothers page was done to: `mother.sync`, `mother.update`
    /// (moved to a group or disabled) or `mother.delete`, each with `{"bulk": verb}`.
    pub fn mother_bulk(id: i64, action: crate::service::mothers::bulk::BulkAction) -> Change {
        use crate::service::mothers::bulk::BulkAction;
        let (name, summary) = match action {
            BulkAction::Sync => ("mother.sync", json!({"bulk": "sync"})),
            BulkAction::Move(group) => (
                "mother.update",
                json!({"bulk": "move", "changed": {"pool_group_id": group}}),
            ),
            BulkAction::Disable => (
                "mother.update",
                json!({"bulk": "disable", "changed": {"status": "disabled"}}),
            ),
            BulkAction::Delete => ("mother.delete", json!({"bulk": "delete"})),
        };
        Change::new(name, "mother", id, summary)
    }

    /// A running sync session cancelled: how many pending jobs will not run.
    pub fn sync_session_cancel(id: &str, cancelled_jobs: usize) -> Change {
        Change::new(
            "sync_session.cancel",
            "sync_session",
            id,
            json!({"cancelled_jobs": cancelled_jobs}),
        )
    }

    /// A mother imported from a provider credential: `mother.create`, or
    /// `mother.rotate_credential` when a mother of that name took the new credential.
    pub fn mother_credential_import(
        out: &crate::service::import_cookie::ImportCookieResponse,
    ) -> Change {
        let action = if out.updated {
            "mother.rotate_credential"
        } else {
            "mother.create"
        };
        Change::new(
            action,
            "mother",
            out.mother_id,
            json!({"from": "credential import", "job_id": out.job_id, "session_id": out.session_id}),
        )
    }

    /// An organisation of the simulated provider made (its credential never appears).
    pub fn sim_org_add(out: &crate::service::sim_orgs::AddOrgResponse, seats: i64) -> Change {
        Change::new(
            "sim.add_org",
            "sim_org",
            &out.name,
            json!({"seats": seats, "owner_email": out.owner_email}),
        )
    }

    /// A bulk invite job queued (`invites.resend`, `invites.cancel`, `invites.remove`).
    pub fn invites_bulk(queued: &crate::service::invites::BulkQueued, ids: &[i64]) -> Change {
        let action = match queued.job_type.as_str() {
            "users_resend" => "invites.resend",
            "users_cancel" => "invites.cancel",
            _ => "invites.remove",
        };
        Change::new(
            action,
            "job",
            &queued.job_id,
            json!({"invite_ids": ids, "count": queued.count}),
        )
    }

    pub fn codes_disable(outcome: &DisableOutcome, batch_id: Option<&str>, ids: usize) -> Change {
        let summary = match outcome {
            DisableOutcome::Done(d) => {
                json!({"ids": ids, "batch_id": batch_id, "disabled": d.disabled})
            }
            DisableOutcome::Queued(q) => {
                json!({"ids": ids, "batch_id": batch_id, "job_id": q.job_id, "queued": q.codes})
            }
        };
        Change::new(
            "codes.disable",
            "code_batch",
            batch_id.unwrap_or(""),
            summary,
        )
    }

    /// A credential account's failures and rest were cleared.
    /// A credential account created (its password never appears).
    pub fn account_create(account: &AccountView) -> Change {
        Change::new(
            "account.create",
            "credential_account",
            account.id,
            json!({"pool": account.pool, "login": account.login}),
        )
    }

    /// What a patch set: the fields it named, and the new values except the password's.
    pub fn account_update(
        id: i64,
        patch: &crate::service::credential_accounts::PatchAccountRequest,
    ) -> Change {
        // Field names only for the password (a key naming it would be stripped).
        let fields: Vec<&str> = [
            patch.is_active.map(|_| "is_active"),
            patch.metadata.as_ref().map(|_| "metadata"),
            patch.password.as_ref().map(|_| "password"),
        ]
        .into_iter()
        .flatten()
        .collect();
        Change::new(
            "account.update",
            "credential_account",
            id,
            json!({"fields": fields, "is_active": patch.is_active, "metadata": patch.metadata}),
        )
    }

    pub fn account_delete(id: i64, force: bool) -> Change {
        Change::new(
            "account.delete",
            "credential_account",
            id,
            json!({"force": force}),
        )
    }

    pub fn account_reset(account: &AccountView) -> Change {
        Change::new(
            "account.reset",
            "credential_account",
            account.id,
            json!({"pool": account.pool, "login": account.login}),
        )
    }

    /// Credential accounts imported (their passwords never appear).
    pub fn account_import(summary: &ImportSummary) -> Change {
        account_import_counts(summary.total, summary.imported, summary.invalid)
    }

    /// The same row from counts (the CLI imports a file in chunks).
    pub fn account_import_counts(rows: usize, imported: usize, invalid: usize) -> Change {
        Change::new(
            "account.import",
            "credential_account",
            "",
            json!({"rows": rows, "imported": imported, "invalid": invalid}),
        )
    }
}

/// Rows of pool-group and key changes.
pub mod group_changes {
    use serde_json::json;

    use super::Change;
    use crate::store::pool_groups::PoolGroup;

    pub fn group_create(g: &PoolGroup) -> Change {
        Change::new(
            "pool_group.create",
            "pool_group",
            g.id,
            json!({"name": g.name, "description": g.description, "settings": g.settings}),
        )
    }

    /// The group's settings after the change.
    pub fn group_settings(g: &PoolGroup) -> Change {
        Change::new(
            "pool_group.update",
            "pool_group",
            g.id,
            json!({"settings": g.settings}),
        )
    }

    pub fn group_delete(id: i64) -> Change {
        Change::new("pool_group.delete", "pool_group", id, json!({}))
    }

    /// Mother credentials re-sealed with the current master key (`secrets rotate`); the key id only.
    pub fn secrets_rotate(key_id: &str, resealed: u64, failed: usize) -> Change {
        Change::new(
            "secrets.rotate",
            "keyring",
            key_id,
            json!({"resealed": resealed, "failed": failed}),
        )
    }
}
