//! The audit log (`audit_log`, `audit_anchor`, users database). Only this module writes them: rows
//! are appended one at a time after the chain's head, and removed only by the retention cleanup
//! ([`purge_before`]); the database's triggers refuse every other UPDATE or DELETE.

use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow};

use super::StoreResult;
use crate::db::{Conn, UsersDb, in_transaction, on_reader};
use crate::domain::audit::{ChainHead, ChainedFields, row_hash};

/// The PostgreSQL advisory lock key that serializes appends (and the cleanup) on one database:
/// "audit" in ASCII.
pub const APPEND_LOCK_KEY: i64 = 0x0061_7564_6974;

/// One row of the audit log.
#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// When, UTC milliseconds.
    pub at: i64,
    /// Who: an admin's username, `token:<name>`, `cli:<os user>` or `system`.
    pub actor: String,
    /// From where: the client address, `local` for the CLI.
    pub address: String,
    /// What, e.g. `mother.create`, `login.failure`, `job.retry`.
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    /// JSON text of the change, secrets left out.
    pub summary: String,
    /// Hash of the previous row (or of the anchor; 64 zeros before the first row).
    pub prev_hash: String,
    /// SHA-256 over this row's canonical encoding.
    pub hash: String,
}

impl AuditEntry {
    pub fn chained_fields(&self) -> ChainedFields<'_> {
        ChainedFields {
            id: self.id,
            at: self.at,
            actor: &self.actor,
            address: &self.address,
            action: &self.action,
            target_type: &self.target_type,
            target_id: &self.target_id,
            summary: &self.summary,
            prev_hash: &self.prev_hash,
        }
    }
}

const COLUMNS: &str =
    "id, at, actor, address, action, target_type, target_id, summary, prev_hash, hash";

/// A row to append.
#[derive(Clone, Copy, Debug)]
pub struct NewEntry<'a> {
    pub at: i64,
    pub actor: &'a str,
    pub address: &'a str,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    pub summary: &'a str,
}

const HEAD_SQL: &str = "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1";
const ANCHOR_SQL: &str = "SELECT last_id, last_hash FROM audit_anchor WHERE singleton = 1";

fn build(head: ChainHead, e: &NewEntry<'_>) -> AuditEntry {
    let mut row = AuditEntry {
        id: head.id + 1,
        at: e.at,
        actor: e.actor.to_string(),
        address: e.address.to_string(),
        action: e.action.to_string(),
        target_type: e.target_type.to_string(),
        target_id: e.target_id.to_string(),
        summary: e.summary.to_string(),
        prev_hash: head.hash,
        hash: String::new(),
    };
    row.hash = row_hash(&row.chained_fields());
    row
}

/// Appends a row after the chain's head. Appends are serialized, so no two rows chain onto the
/// same head: on SQLite by the single writer's `BEGIN IMMEDIATE` (the head is read inside the
/// write lock), on PostgreSQL by `pg_advisory_xact_lock`, held until the insert commits.
pub async fn append(db: &UsersDb, e: &NewEntry<'_>) -> StoreResult<AuditEntry> {
    let insert = AssertSqlSafe(format!(
        "INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    ));
    in_transaction!(db, |tx| {
        if matches!(db.0.conn, Conn::Postgres(_)) {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(APPEND_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        let head: Option<(i64, String)> = sqlx::query_as(HEAD_SQL).fetch_optional(&mut *tx).await?;
        let head = match head {
            Some((id, hash)) => ChainHead { id, hash },
            None => sqlx::query_as::<_, (i64, String)>(ANCHOR_SQL)
                .fetch_optional(&mut *tx)
                .await?
                .map(|(id, hash)| ChainHead { id, hash })
                .unwrap_or_else(ChainHead::genesis),
        };
        let row = build(head, e);
        sqlx::query(insert)
            .bind(row.id)
            .bind(row.at)
            .bind(&row.actor)
            .bind(&row.address)
            .bind(&row.action)
            .bind(&row.target_type)
            .bind(&row.target_id)
            .bind(&row.summary)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row)
    })
}

/// Which rows a query returns. `target` is a target type (`mother`) or `type:id` (`mother:7`);
/// `action` is an action (`mother.create`) or a prefix ending in `*` (`mother.*`).
#[derive(Clone, Debug, Default)]
pub struct AuditFilter<'a> {
    pub actor: Option<&'a str>,
    pub action: Option<&'a str>,
    pub target: Option<&'a str>,
    /// Inclusive, UTC ms.
    pub from: Option<i64>,
    /// Exclusive, UTC ms.
    pub to: Option<i64>,
}

/// The filter as bound values: actor, exact action, action prefix pattern, target type, target id,
/// from, to.
struct Bound<'a> {
    actor: Option<&'a str>,
    action: Option<&'a str>,
    action_prefix: Option<String>,
    target_type: Option<&'a str>,
    target_id: Option<&'a str>,
    from: Option<i64>,
    to: Option<i64>,
}

impl<'a> AuditFilter<'a> {
    fn bound(&self) -> Bound<'a> {
        let (action, action_prefix) = match self.action {
            Some(a) if a.ends_with('*') => {
                let prefix = a.trim_end_matches('*');
                let mut pattern = super::contains_pattern(prefix);
                pattern.remove(0); // anchored at the start: `prefix%`
                (None, Some(pattern))
            }
            other => (other, None),
        };
        let (target_type, target_id) = match self.target {
            Some(t) => match t.split_once(':') {
                Some((ty, id)) => (Some(ty), Some(id)),
                None => (Some(t), None),
            },
            None => (None, None),
        };
        Bound {
            actor: self.actor,
            action,
            action_prefix,
            target_type,
            target_id,
            from: self.from,
            to: self.to,
        }
    }
}

/// `$1 IS NULL OR ...` keeps one statement per query for every filter combination.
const CONDITION: &str = "($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) \
     AND ($3 IS NULL OR action LIKE $3 ESCAPE '\\') AND ($4 IS NULL OR target_type = $4) \
     AND ($5 IS NULL OR target_id = $5) AND ($6 IS NULL OR at >= $6) AND ($7 IS NULL OR at < $7)";

macro_rules! bind_filter {
    ($q:expr, $b:expr) => {
        $q.bind($b.actor)
            .bind($b.action)
            .bind($b.action_prefix.as_deref())
            .bind($b.target_type)
            .bind($b.target_id)
            .bind($b.from)
            .bind($b.to)
    };
}

/// One page of matching rows, newest first, and how many match in all.
pub async fn list_page(
    db: &UsersDb,
    filter: &AuditFilter<'_>,
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<AuditEntry>, i64)> {
    let b = filter.bound();
    let items_sql = AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_log WHERE {CONDITION} ORDER BY id DESC LIMIT $8 OFFSET $9"
    ));
    let count_sql = AssertSqlSafe(format!("SELECT COUNT(*) FROM audit_log WHERE {CONDITION}"));
    let items = on_reader!(db, |p| bind_filter!(sqlx::query_as(items_sql), b)
        .bind(limit)
        .bind(offset)
        .fetch_all(p)
        .await)?;
    let total = on_reader!(db, |p| bind_filter!(sqlx::query_scalar(count_sql), b)
        .fetch_one(p)
        .await)?;
    Ok((items, total))
}

/// Up to `limit` matching rows with ids above `after_id`, oldest first: the pages that export,
/// verify and `tail --follow` walk through, so none of them holds the whole table.
pub async fn list_after(
    db: &UsersDb,
    filter: &AuditFilter<'_>,
    after_id: i64,
    limit: i64,
) -> StoreResult<Vec<AuditEntry>> {
    let b = filter.bound();
    let sql = AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_log WHERE {CONDITION} AND id > $8 ORDER BY id LIMIT $9"
    ));
    Ok(on_reader!(db, |p| bind_filter!(sqlx::query_as(sql), b)
        .bind(after_id)
        .bind(limit)
        .fetch_all(p)
        .await)?)
}

/// The newest `limit` rows, oldest first.
pub async fn latest(db: &UsersDb, limit: i64) -> StoreResult<Vec<AuditEntry>> {
    let sql = AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_log ORDER BY id DESC LIMIT $1"
    ));
    let mut rows: Vec<AuditEntry> =
        on_reader!(db, |p| sqlx::query_as(sql).bind(limit).fetch_all(p).await)?;
    rows.reverse();
    Ok(rows)
}

/// What the retention cleanup removed last (the newest removed row's id and hash), if it ran.
pub async fn anchor(db: &UsersDb) -> StoreResult<Option<ChainHead>> {
    let row: Option<(i64, String)> =
        on_reader!(db, |p| sqlx::query_as(ANCHOR_SQL).fetch_optional(p).await)?;
    Ok(row.map(|(id, hash)| ChainHead { id, hash }))
}

/// Removes rows written before `cutoff` (UTC ms), except the newest row of all, which stays as the
/// head the next append chains onto; the newest removed row becomes the anchor, so the rows left
/// still verify. Returns how many rows went. The only DELETE the database lets through: on
/// PostgreSQL `poolkeeper_audit_purge` (migration 0010) sets the transaction-local gate, on SQLite
/// the gate row is inserted and removed inside this one write transaction.
pub async fn purge_before(db: &UsersDb, cutoff: i64) -> StoreResult<u64> {
    match &db.0.conn {
        Conn::Postgres(pg) => {
            let removed: i64 = sqlx::query_scalar("SELECT poolkeeper_audit_purge($1, $2)")
                .bind(cutoff)
                .bind(APPEND_LOCK_KEY)
                .fetch_one(pg)
                .await?;
            Ok(removed as u64)
        }
        Conn::Sqlite { write, .. } => {
            let mut conn = write.lock().await?;
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
            let last: Option<(i64, String)> = sqlx::query_as(
                "SELECT id, hash FROM audit_log WHERE at < $1 \
                 AND id < (SELECT max(id) FROM audit_log) ORDER BY id DESC LIMIT 1",
            )
            .bind(cutoff)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((last_id, last_hash)) = last else {
                return Ok(0);
            };
            sqlx::query("INSERT INTO audit_purge_gate (open) VALUES (1)")
                .execute(&mut *tx)
                .await?;
            let removed = sqlx::query("DELETE FROM audit_log WHERE id <= $1")
                .bind(last_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(
                "INSERT INTO audit_anchor (singleton, last_id, last_hash) VALUES (1, $1, $2) \
                 ON CONFLICT (singleton) DO UPDATE SET last_id = excluded.last_id, last_hash = excluded.last_hash",
            )
            .bind(last_id)
            .bind(&last_hash)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM audit_purge_gate")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(removed)
        }
    }
}

/// Records who queued jobs (`job_actors`); a job that has an actor keeps it (a retry does not
/// change who queued it).
pub async fn set_job_actor(db: &UsersDb, job_ids: &[String], actor: &str) -> StoreResult<()> {
    if job_ids.is_empty() {
        return Ok(());
    }
    let ids = serde_json::to_string(job_ids).unwrap_or_else(|_| "[]".into());
    let sql = match db.database().backend() {
        crate::db::Backend::Sqlite => {
            "INSERT INTO job_actors (job_id, actor) SELECT value, $2 FROM json_each($1) WHERE true \
             ON CONFLICT (job_id) DO NOTHING"
        }
        crate::db::Backend::Postgres => {
            "INSERT INTO job_actors (job_id, actor) SELECT jsonb_array_elements_text($1::jsonb), $2 \
             ON CONFLICT (job_id) DO NOTHING"
        }
    };
    crate::db::on_writer!(db, |p| sqlx::query(sql)
        .bind(&ids)
        .bind(actor)
        .execute(p)
        .await
        .map(drop))?;
    Ok(())
}

/// Who queued a job, when a person or token did.
pub async fn job_actor(db: &UsersDb, job_id: &str) -> StoreResult<Option<String>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT actor FROM job_actors WHERE job_id = $1"
    )
    .bind(job_id)
    .fetch_optional(p)
    .await)?)
}
