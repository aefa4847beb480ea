//! Mother accounts, their teams and children (pool database), with usage, stats and quota.
//!
//! A mother is created with her teams and `seat_limit` free seats in one transaction. Usage comes
//! from the counters on the mother's row (kept by `store::seats`), so a page of mothers is one
//! query whatever the number of seats. The sealed credential is read only by
//! [`credential_sealed`] and the rotation functions; no listing selects it.

use serde::Serialize;
use sqlx::FromRow;

use super::pool_groups::{ALLOCATE, SequenceKind};
use super::seats::{self, ADD_FREE_SEATS, REMOVE_FREE_SEATS, Seat};
use super::{StoreError, StoreResult, tallies};
use crate::db::{PoolDb, in_transaction, on_reader, on_writer};
use crate::domain::mothers::NewTeam;
use crate::domain::seats::{Resize, Usage, plan_resize};

mod list;
pub use list::{
    MotherFilter, MotherSort, explain_list_with_usage, list_with_usage, name_search_indexed,
};

/// A mother as the API shows her: never the credential.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Mother {
    pub id: i64,
    pub name: String,
    pub provider: String,
    #[schema(value_type = Object)]
    pub provider_config: serde_json::Value,
    /// `active`, `invalid` or `disabled`.
    pub status: String,
    pub seat_limit: i64,
    pub pool_group_id: Option<i64>,
    pub pool_group_name: Option<String>,
    pub notes: String,
    pub last_synced_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub usage: Usage,
}

#[derive(FromRow)]
struct Row {
    id: i64,
    name: String,
    provider: String,
    provider_config: String,
    status: String,
    seat_limit: i64,
    seats_used: i64,
    seats_held: i64,
    pool_group_id: Option<i64>,
    pool_group_name: Option<String>,
    notes: String,
    last_synced_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    teams: i64,
}

impl From<Row> for Mother {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            name: r.name,
            provider: r.provider,
            provider_config: serde_json::from_str(&r.provider_config)
                .unwrap_or(serde_json::Value::Null),
            status: r.status,
            seat_limit: r.seat_limit,
            pool_group_id: r.pool_group_id,
            pool_group_name: r.pool_group_name,
            notes: r.notes,
            last_synced_at: r.last_synced_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            usage: Usage::new(r.seat_limit, r.seats_used, r.seats_held, r.teams),
        }
    }
}

const COLUMNS: &str = "m.id, m.name, m.provider, m.provider_config, m.status, m.seat_limit, \
    m.seats_used, m.seats_held, m.pool_group_id, g.name AS pool_group_name, m.notes, \
    m.last_synced_at, m.created_at, m.updated_at, \
    (SELECT COUNT(*) FROM teams t WHERE t.mother_id = m.id) AS teams";

#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct Team {
    pub id: i64,
    pub mother_id: i64,
    pub provider_team_id: Option<String>,
    pub name: String,
    pub is_enabled: bool,
    pub is_default: bool,
    pub created_at: i64,
}

#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct Child {
    pub id: i64,
    pub mother_id: i64,
    pub team_id: i64,
    pub email: String,
    pub name: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A mother with her teams, seats and children.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MotherDetail {
    #[serde(flatten)]
    pub mother: Mother,
    pub teams: Vec<Team>,
    pub seats: Vec<Seat>,
    pub children: Vec<Child>,
}

/// How the default team of a mother created without teams is named.
pub enum DefaultTeam<'a> {
    Fixed(String),
    /// The next team number of (group, day), rendered by `render`; allocated in the creating
    /// transaction, so a mother that is not created does not use up a number.
    Sequenced {
        group_id: i64,
        day: &'a str,
        render: &'a (dyn Fn(i64) -> String + Send + Sync),
    },
}

/// A new mother ready to store (credential already sealed).
pub struct NewMotherRecord<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub provider_config: &'a str,
    pub credential_sealed: &'a str,
    pub seat_limit: i64,
    pub pool_group_id: Option<i64>,
    pub notes: &'a str,
    pub teams: &'a [NewTeam],
    pub default_team: DefaultTeam<'a>,
}

const INSERT_MOTHER: &str = "INSERT INTO mothers (name, provider, provider_config, \
    credential_sealed, status, seat_limit, pool_group_id, notes, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $8) RETURNING id";
const INSERT_TEAM: &str = "INSERT INTO teams (mother_id, provider_team_id, name, is_enabled, \
    is_default, created_at) VALUES ($1, $2, $3, $4, $5, $6)";

/// Creates the mother, her teams and her free seats in one transaction; returns her id.
pub async fn create(db: &PoolDb, m: &NewMotherRecord<'_>, now: i64) -> StoreResult<i64> {
    in_transaction!(db, |tx| {
        let id: i64 = sqlx::query_scalar(INSERT_MOTHER)
            .bind(m.name)
            .bind(m.provider)
            .bind(m.provider_config)
            .bind(m.credential_sealed)
            .bind(m.seat_limit)
            .bind(m.pool_group_id)
            .bind(m.notes)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        if m.teams.is_empty() {
            let name = match &m.default_team {
                DefaultTeam::Fixed(name) => name.clone(),
                DefaultTeam::Sequenced {
                    group_id,
                    day,
                    render,
                } => {
                    let seq: i64 = sqlx::query_scalar(ALLOCATE)
                        .bind(*group_id)
                        .bind(*day)
                        .bind(SequenceKind::Team.as_str())
                        .bind(1_i64)
                        .fetch_one(&mut *tx)
                        .await?;
                    render(seq)
                }
            };
            sqlx::query(INSERT_TEAM)
                .bind(id)
                .bind(None::<String>)
                .bind(name)
                .bind(true)
                .bind(true)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        for t in m.teams {
            sqlx::query(INSERT_TEAM)
                .bind(id)
                .bind(&t.provider_team_id)
                .bind(&t.name)
                .bind(t.is_enabled)
                .bind(t.is_default)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        if m.seat_limit > 0 {
            sqlx::query(ADD_FREE_SEATS)
                .bind(id)
                .bind(1_i64)
                .bind(m.seat_limit)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    })
}

pub async fn get(db: &PoolDb, id: i64) -> StoreResult<Mother> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM mothers m LEFT JOIN pool_groups g ON g.id = m.pool_group_id \
         WHERE m.id = $1"
    ));
    let row: Row = on_reader!(db, |p| sqlx::query_as(sql).bind(id).fetch_one(p).await)?;
    Ok(row.into())
}

pub async fn get_detail(db: &PoolDb, id: i64) -> StoreResult<MotherDetail> {
    let mother = get(db, id).await?;
    let teams: Vec<Team> = on_reader!(db, |p| sqlx::query_as(
        "SELECT id, mother_id, provider_team_id, name, is_enabled, is_default, created_at \
         FROM teams WHERE mother_id = $1 ORDER BY id"
    )
    .bind(id)
    .fetch_all(p)
    .await)?;
    let seat_sql = sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM seats WHERE mother_id = $1 ORDER BY seat_no",
        seats::COLUMNS
    ));
    let seats: Vec<Seat> =
        on_reader!(db, |p| sqlx::query_as(seat_sql).bind(id).fetch_all(p).await)?;
    let children: Vec<Child> = on_reader!(db, |p| sqlx::query_as(
        "SELECT id, mother_id, team_id, email, name, status, created_at, updated_at \
         FROM children WHERE mother_id = $1 ORDER BY id"
    )
    .bind(id)
    .fetch_all(p)
    .await)?;
    Ok(MotherDetail {
        mother,
        teams,
        seats,
        children,
    })
}

/// Which of `names` are taken.
pub async fn existing_names(db: &PoolDb, names: &[String]) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    // Chunks keep the statement under every backend's bind limit.
    for chunk in names.chunks(500) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT name FROM mothers WHERE name IN ({})",
            placeholders.join(", ")
        ));
        let found: Vec<String> = on_reader!(db, |p| {
            let mut q = sqlx::query_scalar(sql);
            for n in chunk {
                q = q.bind(n);
            }
            q.fetch_all(p).await
        })?;
        out.extend(found);
    }
    Ok(out)
}

/// Fields a PATCH may change; `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct MotherPatch {
    pub name: Option<String>,
    pub status: Option<String>,
    pub notes: Option<String>,
    /// `Some(None)` takes the mother out of her group.
    pub pool_group_id: Option<Option<i64>>,
    pub seat_limit: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("seat_limit is below the {in_use} seats in use")]
    BelowInUse { in_use: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for PatchError {
    fn from(e: sqlx::Error) -> Self {
        PatchError::Store(e.into())
    }
}

/// Applies a patch. The new `seat_limit` is checked against the seats in use inside the same
/// UPDATE, and seats are added or removed in the same transaction.
pub async fn update(
    db: &PoolDb,
    id: i64,
    patch: &MotherPatch,
    now: i64,
) -> Result<Mother, PatchError> {
    in_transaction!(db, |tx| {
        let updated: Option<i64> = sqlx::query_scalar(
            "UPDATE mothers SET name = COALESCE($2, name), status = COALESCE($3, status), \
             notes = COALESCE($4, notes), \
             pool_group_id = CASE WHEN $5 THEN $6 ELSE pool_group_id END, \
             seat_limit = COALESCE($7, seat_limit), updated_at = $8 \
             WHERE id = $1 AND ($7 IS NULL OR seats_used + seats_held <= $7) RETURNING seat_limit",
        )
        .bind(id)
        .bind(&patch.name)
        .bind(&patch.status)
        .bind(&patch.notes)
        .bind(patch.pool_group_id.is_some())
        .bind(patch.pool_group_id.flatten())
        .bind(patch.seat_limit)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let in_use: Option<i64> =
            sqlx::query_scalar("SELECT seats_used + seats_held FROM mothers WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let (Some(new_limit), Some(in_use)) = (updated, in_use) else {
            return Err(match in_use {
                None => PatchError::Store(StoreError::NotFound),
                Some(in_use) => PatchError::BelowInUse { in_use },
            });
        };
        let (count, max_no): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(MAX(seat_no), 0) AS BIGINT) FROM seats WHERE mother_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        match plan_resize(count, in_use, new_limit) {
            Ok(Resize::Add(n)) => {
                sqlx::query(ADD_FREE_SEATS)
                    .bind(id)
                    .bind(max_no + 1)
                    .bind(max_no + n)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Resize::Remove(n)) => {
                sqlx::query(REMOVE_FREE_SEATS)
                    .bind(id)
                    .bind(n)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Resize::Keep) => {}
            Err(e) => return Err(PatchError::BelowInUse { in_use: e.in_use }),
        }
        tx.commit().await?;
        Ok::<_, PatchError>(())
    })?;
    Ok(get(db, id).await?)
}

/// Deletes a mother with her teams, seats and children. Without `force`, refused while any seat
/// is used or held: `Ok(Err(in_use))`.
pub async fn delete(db: &PoolDb, id: i64, force: bool) -> StoreResult<Result<(), i64>> {
    let n = on_writer!(db, |p| sqlx::query(
        "DELETE FROM mothers WHERE id = $1 AND ($2 OR seats_used + seats_held = 0)"
    )
    .bind(id)
    .bind(force)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    if n > 0 {
        return Ok(Ok(()));
    }
    let in_use: Option<i64> = on_reader!(db, |p| sqlx::query_scalar(
        "SELECT seats_used + seats_held FROM mothers WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(p)
    .await)?;
    match in_use {
        Some(in_use) => Ok(Err(in_use)),
        None => Err(StoreError::NotFound),
    }
}

/// The sealed credential of a mother (for provider calls and rotation only).
/// How to reach a mother's provider: her kind, configuration and sealed credential.
#[derive(Clone, FromRow)]
pub struct Reach {
    /// `sim` or `scim`.
    pub provider: String,
    /// Her provider configuration, JSON text.
    pub provider_config: String,
    /// Her credential, sealed; opened with the keyring.
    pub credential_sealed: String,
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reach")
            .field("provider", &self.provider)
            .field("provider_config", &self.provider_config)
            .field("credential_sealed", &"<redacted>")
            .finish()
    }
}

/// How to reach mother `id`'s provider.
pub async fn reach(db: &PoolDb, id: i64) -> StoreResult<Reach> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT provider, provider_config, credential_sealed FROM mothers WHERE id = $1"
    )
    .bind(id)
    .fetch_one(p)
    .await)?)
}

pub async fn credential_sealed(db: &PoolDb, id: i64) -> StoreResult<String> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT credential_sealed FROM mothers WHERE id = $1"
    )
    .bind(id)
    .fetch_one(p)
    .await)?)
}

pub async fn set_credential(db: &PoolDb, id: i64, sealed: &str, now: i64) -> StoreResult<()> {
    let n = on_writer!(db, |p| sqlx::query(
        "UPDATE mothers SET credential_sealed = $2, updated_at = $3 WHERE id = $1"
    )
    .bind(id)
    .bind(sealed)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Up to `limit` (id, sealed credential) pairs with ids above `after`, for re-sealing in batches.
pub async fn sealed_after(db: &PoolDb, after: i64, limit: i64) -> StoreResult<Vec<(i64, String)>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT id, credential_sealed FROM mothers WHERE id > $1 ORDER BY id LIMIT $2"
    )
    .bind(after)
    .bind(limit)
    .fetch_all(p)
    .await)?)
}

/// Replaces a sealed credential only if it is still `old` (a rotation never overwrites a
/// credential changed meanwhile). Returns whether it was replaced.
pub async fn replace_sealed(db: &PoolDb, id: i64, old: &str, new: &str) -> StoreResult<bool> {
    let n = on_writer!(db, |p| sqlx::query(
        "UPDATE mothers SET credential_sealed = $3 WHERE id = $1 AND credential_sealed = $2"
    )
    .bind(id)
    .bind(old)
    .bind(new)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Mothers and their seats, by mother status.
#[derive(Clone, Debug, Default, FromRow, Serialize, utoipa::ToSchema)]
pub struct StatusCount {
    pub status: String,
    pub mothers: i64,
    pub seats_total: i64,
    pub seats_used: i64,
    pub seats_held: i64,
}

/// Per mother status: mothers and seat counters summed, from the tallies (a few rows, however
/// many mothers there are).
pub async fn counts_by_status(db: &PoolDb) -> StoreResult<Vec<StatusCount>> {
    let mut counts: Vec<StatusCount> = Vec::new();
    for t in tallies::mothers(db).await? {
        if counts.last().is_none_or(|c| c.status != t.status) {
            counts.push(StatusCount {
                status: t.status.clone(),
                ..StatusCount::default()
            });
        }
        if let Some(c) = counts.last_mut() {
            c.mothers += t.mothers;
            c.seats_total += t.seats_total;
            c.seats_used += t.seats_used;
            c.seats_held += t.seats_held;
        }
    }
    Ok(counts)
}

/// How many pool groups and children there are.
pub async fn count_groups_and_children(db: &PoolDb) -> StoreResult<(i64, i64)> {
    let groups = on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM pool_groups"
    )
    .fetch_one(p)
    .await)?;
    Ok((groups, tallies::count_children(db).await?))
}

/// Seat counters of active mothers per group (`None`: mothers in no group).
#[derive(Clone, Debug, FromRow)]
pub struct GroupSeats {
    pub pool_group_id: Option<i64>,
    pub pool_group_name: Option<String>,
    pub seats_total: i64,
    pub seats_used: i64,
    pub seats_held: i64,
}

/// Seat counters of active mothers per group, ordered by group name (mothers in no group last),
/// from the tallies.
pub async fn active_seats_by_group(db: &PoolDb) -> StoreResult<Vec<GroupSeats>> {
    let active: Vec<tallies::MotherTally> = tallies::mothers(db)
        .await?
        .into_iter()
        .filter(|t| t.status == "active")
        .collect();
    let ids: Vec<i64> = active.iter().filter_map(|t| t.pool_group_id).collect();
    // `names` answers a page's worth of ids at a time.
    let mut names = std::collections::HashMap::new();
    for chunk in ids.chunks(500) {
        names.extend(super::names::pool_groups(db, chunk).await?);
    }
    let mut seats: Vec<GroupSeats> = active
        .into_iter()
        .map(|t| GroupSeats {
            pool_group_name: t.pool_group_id.and_then(|id| names.get(&id).cloned()),
            pool_group_id: t.pool_group_id,
            seats_total: t.seats_total,
            seats_used: t.seats_used,
            seats_held: t.seats_held,
        })
        .collect();
    // By name like the groups list; `None` (no group) sorts last, as NULL did in SQL.
    seats.sort_by(|a, b| match (&a.pool_group_name, &b.pool_group_name) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.pool_group_id.cmp(&b.pool_group_id),
    });
    Ok(seats)
}

/// Links a local team to the provider's team and takes its name.
pub async fn link_team(
    db: &PoolDb,
    team_id: i64,
    provider_team_id: &str,
    name: &str,
) -> StoreResult<()> {
    on_writer!(db, |p| sqlx::query(
        "UPDATE teams SET provider_team_id = $2, name = $3 WHERE id = $1"
    )
    .bind(team_id)
    .bind(provider_team_id)
    .bind(name)
    .execute(p)
    .await
    .map(drop))?;
    Ok(())
}

/// Adds a team the provider has and poolkeeper did not know (enabled, not default).
pub async fn add_provider_team(
    db: &PoolDb,
    mother_id: i64,
    provider_team_id: &str,
    name: &str,
    now: i64,
) -> StoreResult<Team> {
    Ok(on_writer!(db, |p| sqlx::query_as(
        "INSERT INTO teams (mother_id, provider_team_id, name, is_enabled, is_default, created_at) \
         VALUES ($1, $2, $3, TRUE, FALSE, $4) \
         RETURNING id, mother_id, provider_team_id, name, is_enabled, is_default, created_at"
    )
    .bind(mother_id)
    .bind(provider_team_id)
    .bind(name)
    .bind(now)
    .fetch_one(p)
    .await)?)
}

/// Records that a mother was synced.
pub async fn mark_synced(db: &PoolDb, id: i64, now: i64) -> StoreResult<()> {
    on_writer!(db, |p| sqlx::query(
        "UPDATE mothers SET last_synced_at = $2, updated_at = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(now)
    .execute(p)
    .await
    .map(drop))?;
    Ok(())
}

/// The newest `last_synced_at` among a group's mothers (`None` when none has synced): one probe
/// of the `mothers_group_synced` index.
pub async fn last_synced_in_group(db: &PoolDb, group_id: i64) -> StoreResult<Option<i64>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT MAX(last_synced_at) FROM mothers WHERE pool_group_id = $1"
    )
    .bind(group_id)
    .fetch_one(p)
    .await)?)
}

/// Puts a mother in a group (a no-op when she is already in it). `NotFound` when she does not exist.
pub async fn set_pool_group(db: &PoolDb, id: i64, group_id: i64, now: i64) -> StoreResult<()> {
    let found: Option<i64> = on_writer!(db, |p| sqlx::query_scalar(
        "UPDATE mothers SET pool_group_id = $2, updated_at = $3 WHERE id = $1 \
         AND (pool_group_id IS NULL OR pool_group_id <> $2) RETURNING id"
    )
    .bind(id)
    .bind(group_id)
    .bind(now)
    .fetch_optional(p)
    .await)?;
    if found.is_none() {
        // Either already in the group, or no such mother.
        get(db, id).await?;
    }
    Ok(())
}

/// Sets a mother's status (`invalid` when the provider rejects her credential).
pub async fn set_status(db: &PoolDb, id: i64, status: &str, now: i64) -> StoreResult<()> {
    on_writer!(db, |p| sqlx::query(
        "UPDATE mothers SET status = $2, updated_at = $3 WHERE id = $1"
    )
    .bind(id)
    .bind(status)
    .bind(now)
    .execute(p)
    .await
    .map(drop))?;
    Ok(())
}

/// Marks a mother `invalid` unless she is already; true when this call changed her status (so
/// the change is announced once).
pub async fn mark_invalid(db: &PoolDb, id: i64, now: i64) -> StoreResult<bool> {
    let changed = on_writer!(db, |p| {
        sqlx::query(
        "UPDATE mothers SET status = 'invalid', updated_at = $2 WHERE id = $1 AND status <> 'invalid'"
    )
    .bind(id)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(changed > 0)
}

/// A member of a team as sync hands it over (address lower-cased).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInput {
    pub email: String,
    pub name: String,
    /// `active` or `invited`.
    pub status: String,
}

/// What [`sync_team_children`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChildChanges {
    pub created: i64,
    pub updated: i64,
    pub removed: i64,
}

/// Makes a team's children the provider's members, in one transaction: new members are inserted,
/// changed ones updated, departed ones marked `removed` (kept for history). Unchanged rows are not
/// written, so a rerun reports zeros.
pub async fn sync_team_children(
    db: &PoolDb,
    mother_id: i64,
    team_id: i64,
    members: &[ChildInput],
    now: i64,
) -> StoreResult<ChildChanges> {
    in_transaction!(db, |tx| {
        let existing: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT id, email, name, status FROM children WHERE mother_id = $1 AND team_id = $2",
        )
        .bind(mother_id)
        .bind(team_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut changes = ChildChanges::default();
        let by_email: std::collections::HashMap<&str, &(i64, String, String, String)> =
            existing.iter().map(|c| (c.1.as_str(), c)).collect();
        for m in members {
            match by_email.get(m.email.as_str()) {
                None => {
                    sqlx::query(
                        "INSERT INTO children (mother_id, team_id, email, name, status, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    )
                    .bind(mother_id)
                    .bind(team_id)
                    .bind(&m.email)
                    .bind(&m.name)
                    .bind(&m.status)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    changes.created += 1;
                }
                Some((id, _, name, status)) if *name != m.name || *status != m.status => {
                    sqlx::query(
                        "UPDATE children SET name = $2, status = $3, updated_at = $4 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(&m.name)
                    .bind(&m.status)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    changes.updated += 1;
                }
                Some(_) => {}
            }
        }
        let present: std::collections::HashSet<&str> =
            members.iter().map(|m| m.email.as_str()).collect();
        for (id, email, _, status) in &existing {
            if status != "removed" && !present.contains(email.as_str()) {
                sqlx::query(
                    "UPDATE children SET status = 'removed', updated_at = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                changes.removed += 1;
            }
        }
        tx.commit().await?;
        Ok(changes)
    })
}

/// Every mother of a group with the given status, by id.
pub async fn ids_in_group(db: &PoolDb, group_id: i64, status: &str) -> StoreResult<Vec<i64>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT id FROM mothers WHERE pool_group_id = $1 AND status = $2 ORDER BY id"
    )
    .bind(group_id)
    .bind(status)
    .fetch_all(p)
    .await)?)
}

/// The id of the mother with this name, if any.
pub async fn id_by_name(db: &PoolDb, name: &str) -> StoreResult<Option<i64>> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT id FROM mothers WHERE name = $1"
    )
    .bind(name)
    .fetch_optional(p)
    .await)?)
}

/// Makes an `invalid` mother `active` again (her credential was replaced by one that works).
/// A `disabled` mother stays disabled: that was an admin's choice.
pub async fn reactivate(db: &PoolDb, id: i64, now: i64) -> StoreResult<()> {
    on_writer!(db, |p| sqlx::query(
        "UPDATE mothers SET status = 'active', updated_at = $2 WHERE id = $1 AND status = 'invalid'"
    )
    .bind(id)
    .bind(now)
    .execute(p)
    .await
    .map(drop))?;
    Ok(())
}
