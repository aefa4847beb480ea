//! Pool groups, their naming settings and the daily name sequences (pool database).
//!
//! Only this module writes `pool_groups`, `pool_group_settings` and `daily_sequences`. Sequence
//! numbers are handed out by one upsert statement, so the database, not a lock in this process,
//! keeps concurrent allocations apart.

use serde::Serialize;
use sqlx::FromRow;

use super::{StoreError, StoreResult};
use crate::db::{PoolDb, in_transaction, on_reader, on_writer};
use crate::domain::naming::NamingSettings;

/// A group's settings as stored.
#[derive(Clone, Debug, PartialEq, Eq, FromRow, Serialize, utoipa::ToSchema)]
pub struct GroupSettings {
    pub team_template: String,
    pub child_name_template: String,
    pub child_email_template: String,
    pub email_domain: Option<String>,
    pub is_active: bool,
    /// Invite generated addresses into free seats during a sync (also on when the instance-wide
    /// `pool_auto_invite_missing` is).
    pub auto_invite: bool,
}

impl GroupSettings {
    pub fn naming(&self) -> NamingSettings {
        NamingSettings {
            team_template: self.team_template.clone(),
            child_name_template: self.child_name_template.clone(),
            child_email_template: self.child_email_template.clone(),
            email_domain: self.email_domain.clone(),
        }
    }
}

/// A group with its settings and how many mothers belong to it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PoolGroup {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub settings: GroupSettings,
    pub mother_count: i64,
}

#[derive(FromRow)]
struct Row {
    id: i64,
    name: String,
    description: String,
    created_at: i64,
    updated_at: i64,
    team_template: String,
    child_name_template: String,
    child_email_template: String,
    email_domain: Option<String>,
    is_active: bool,
    auto_invite: bool,
    mother_count: i64,
}

impl From<Row> for PoolGroup {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            name: r.name,
            description: r.description,
            created_at: r.created_at,
            updated_at: r.updated_at,
            settings: GroupSettings {
                team_template: r.team_template,
                child_name_template: r.child_name_template,
                child_email_template: r.child_email_template,
                email_domain: r.email_domain,
                is_active: r.is_active,
                auto_invite: r.auto_invite,
            },
            mother_count: r.mother_count,
        }
    }
}

const SELECT: &str = "SELECT g.id, g.name, g.description, g.created_at, g.updated_at, \
    s.team_template, s.child_name_template, s.child_email_template, s.email_domain, s.is_active, \
    s.auto_invite, (SELECT COUNT(*) FROM mothers m WHERE m.pool_group_id = g.id) AS mother_count \
    FROM pool_groups g JOIN pool_group_settings s ON s.group_id = g.id";

#[derive(FromRow)]
struct SettingsRow {
    name: String,
    #[sqlx(flatten)]
    settings: GroupSettings,
}

/// A group's name and settings, without counting its mothers: what every mother's sync and
/// creation reads, at a cost that does not grow with the group (counting its mothers, as [`get`]
/// does, visits every one).
pub async fn name_and_settings(db: &PoolDb, id: i64) -> StoreResult<(String, GroupSettings)> {
    let row: SettingsRow = on_reader!(db, |p| sqlx::query_as(
        "SELECT g.name, s.team_template, s.child_name_template, s.child_email_template, \
         s.email_domain, s.is_active, s.auto_invite \
         FROM pool_groups g JOIN pool_group_settings s ON s.group_id = g.id WHERE g.id = $1"
    )
    .bind(id)
    .fetch_one(p)
    .await)?;
    Ok((row.name, row.settings))
}

/// Creates a group and its settings row in one transaction.
pub async fn create(
    db: &PoolDb,
    name: &str,
    description: &str,
    settings: &GroupSettings,
    now: i64,
) -> StoreResult<PoolGroup> {
    let id: i64 = in_transaction!(db, |tx| {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO pool_groups (name, description, created_at, updated_at) \
             VALUES ($1, $2, $3, $3) RETURNING id",
        )
        .bind(name)
        .bind(description)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO pool_group_settings (group_id, team_template, child_name_template, \
             child_email_template, email_domain, is_active, auto_invite, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(&settings.team_template)
        .bind(&settings.child_name_template)
        .bind(&settings.child_email_template)
        .bind(&settings.email_domain)
        .bind(settings.is_active)
        .bind(settings.auto_invite)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        id
    });
    get(db, id).await
}

pub async fn get(db: &PoolDb, id: i64) -> StoreResult<PoolGroup> {
    let sql = sqlx::AssertSqlSafe(format!("{SELECT} WHERE g.id = $1"));
    let row: Row = on_reader!(db, |p| sqlx::query_as(sql).bind(id).fetch_one(p).await)?;
    Ok(row.into())
}

/// One page of groups by name, and how many there are.
pub async fn list_page(db: &PoolDb, limit: i64, offset: i64) -> StoreResult<(Vec<PoolGroup>, i64)> {
    let sql = sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY g.name LIMIT $1 OFFSET $2"));
    let rows: Vec<Row> = on_reader!(db, |p| sqlx::query_as(sql)
        .bind(limit)
        .bind(offset)
        .fetch_all(p)
        .await)?;
    let total: i64 = on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM pool_groups"
    )
    .fetch_one(p)
    .await)?;
    Ok((rows.into_iter().map(Into::into).collect(), total))
}

/// Every group by name (for forms; groups are few).
pub async fn list_all(db: &PoolDb) -> StoreResult<Vec<PoolGroup>> {
    let sql = sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY g.name"));
    let rows: Vec<Row> = on_reader!(db, |p| sqlx::query_as(sql).fetch_all(p).await)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// The first `limit` active groups by id, as (id, name): the groups housekeeping exports gauges
/// for. Reads `pool_groups` and its settings only, never the mothers.
pub async fn active_names(db: &PoolDb, limit: i64) -> StoreResult<Vec<(i64, String)>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT g.id, g.name FROM pool_groups g JOIN pool_group_settings s ON s.group_id = g.id \
         WHERE s.is_active ORDER BY g.id LIMIT $1"
    )
    .bind(limit)
    .fetch_all(p)
    .await)?)
}

pub async fn exists(db: &PoolDb, id: i64) -> StoreResult<bool> {
    let n: i64 = on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM pool_groups WHERE id = $1"
    )
    .bind(id)
    .fetch_one(p)
    .await)?;
    Ok(n > 0)
}

/// Replaces the settings (the caller merged and checked them).
pub async fn update_settings(
    db: &PoolDb,
    id: i64,
    settings: &GroupSettings,
    now: i64,
) -> StoreResult<PoolGroup> {
    let n = on_writer!(db, |p| sqlx::query(
        "UPDATE pool_group_settings SET team_template = $2, child_name_template = $3, \
         child_email_template = $4, email_domain = $5, is_active = $6, auto_invite = $7, \
         updated_at = $8 WHERE group_id = $1"
    )
    .bind(id)
    .bind(&settings.team_template)
    .bind(&settings.child_name_template)
    .bind(&settings.child_email_template)
    .bind(&settings.email_domain)
    .bind(settings.is_active)
    .bind(settings.auto_invite)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    get(db, id).await
}

/// Deletes a group. A mother still in the group makes the foreign key refuse it (`Conflict`),
/// so a mother added meanwhile cannot be orphaned.
pub async fn delete(db: &PoolDb, id: i64) -> StoreResult<()> {
    let n = on_writer!(db, |p| sqlx::query("DELETE FROM pool_groups WHERE id = $1")
        .bind(id)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// What a sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceKind {
    Team,
    Child,
}

impl SequenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SequenceKind::Team => "team",
            SequenceKind::Child => "child",
        }
    }
}

/// Takes the next `$4` numbers of (group `$1`, day `$2`, kind `$3`); returns the last one taken.
pub(crate) const ALLOCATE: &str = "INSERT INTO daily_sequences (group_id, day, kind, last_value) \
    VALUES ($1, $2, $3, $4) \
    ON CONFLICT (group_id, day, kind) DO UPDATE SET last_value = daily_sequences.last_value + $4 \
    RETURNING last_value";

/// The next number of (group, day, kind), starting at 1 for a new day. One statement: two callers
/// can never get the same number.
pub async fn allocate_sequence(
    db: &PoolDb,
    group_id: i64,
    day: &str,
    kind: SequenceKind,
) -> StoreResult<i64> {
    Ok(*allocate_sequences(db, group_id, day, kind, 1).await?.end())
}

/// The next `count` (at least 1) numbers of (group, day, kind) in one statement: `first..=last`.
pub async fn allocate_sequences(
    db: &PoolDb,
    group_id: i64,
    day: &str,
    kind: SequenceKind,
    count: i64,
) -> StoreResult<std::ops::RangeInclusive<i64>> {
    let count = count.max(1);
    let last: i64 = on_writer!(db, |p| sqlx::query_scalar(ALLOCATE)
        .bind(group_id)
        .bind(day)
        .bind(kind.as_str())
        .bind(count)
        .fetch_one(p)
        .await)?;
    Ok(last - count + 1..=last)
}

/// The last number handed out for (group, day, kind), 0 when none was. Reading never allocates.
pub async fn last_sequence(
    db: &PoolDb,
    group_id: i64,
    day: &str,
    kind: SequenceKind,
) -> StoreResult<i64> {
    let v: Option<i64> = on_reader!(db, |p| sqlx::query_scalar(
        "SELECT last_value FROM daily_sequences WHERE group_id = $1 AND day = $2 AND kind = $3"
    )
    .bind(group_id)
    .bind(day)
    .bind(kind.as_str())
    .fetch_optional(p)
    .await)?;
    Ok(v.unwrap_or(0))
}

/// Groups whose free seats are marked low (`seats_low_since` set).
pub async fn seats_low_ids(db: &PoolDb) -> StoreResult<Vec<i64>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT id FROM pool_groups WHERE seats_low_since IS NOT NULL ORDER BY id"
    )
    .fetch_all(p)
    .await)?)
}

/// Marks a group's free seats low from `now` unless they are already; true when this call did
/// (the crossing, which exactly one caller sees).
pub async fn mark_seats_low(db: &PoolDb, id: i64, now: i64) -> StoreResult<bool> {
    let n = on_writer!(db, |p| sqlx::query(
        "UPDATE pool_groups SET seats_low_since = $2 WHERE id = $1 AND seats_low_since IS NULL"
    )
    .bind(id)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Clears the low mark of a group whose free seats are back at or above the threshold.
pub async fn clear_seats_low(db: &PoolDb, id: i64) -> StoreResult<()> {
    on_writer!(db, |p| {
        sqlx::query(
        "UPDATE pool_groups SET seats_low_since = NULL WHERE id = $1 AND seats_low_since IS NOT NULL"
    )
    .bind(id)
    .execute(p)
    .await
    .map(drop)
    })?;
    Ok(())
}
