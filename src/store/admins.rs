//! Admin users (`admin_users`, users database). Only this module reads or writes password hashes,
//! and only this module changes a role or disables an admin: both keep at least one active admin
//! (role `admin`, not disabled), checked inside the write that would remove the last one.

use sqlx::FromRow;

use super::{StoreError, StoreResult};
use crate::db::{Backend, UsersDb, in_transaction, on_reader, on_writer};

#[derive(Clone, FromRow)]
pub struct AdminUser {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

/// An admin as lists show it: never the password hash.
#[derive(Clone, Debug, FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct AdminView {
    pub id: i64,
    pub username: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the admin was disabled; a disabled admin cannot log in.
    pub disabled_at: Option<i64>,
}

const USER_COLUMNS: &str = "id, username, password_hash, role, created_at, disabled_at";
const VIEW_COLUMNS: &str = "id, username, role, created_at, updated_at, disabled_at";

/// Why a change to an admin was refused.
pub const LAST_ADMIN: &str = "last_admin";

impl std::fmt::Debug for AdminUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminUser")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

pub async fn count(db: &UsersDb) -> StoreResult<i64> {
    Ok(on_reader!(db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM admin_users"
    )
    .fetch_one(p)
    .await)?)
}

pub async fn find_by_username(db: &UsersDb, username: &str) -> StoreResult<Option<AdminUser>> {
    Ok(on_reader!(db, |p| sqlx::query_as(sqlx::AssertSqlSafe(
        format!("SELECT {USER_COLUMNS} FROM admin_users WHERE username = $1")
    ))
    .bind(username)
    .fetch_optional(p)
    .await)?)
}

/// Creates an admin with a role; a taken username is `StoreError::Conflict`.
pub async fn create(
    db: &UsersDb,
    username: &str,
    password_hash: &str,
    role: &str,
    now: i64,
) -> StoreResult<AdminUser> {
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO admin_users (username, password_hash, role, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4) RETURNING {USER_COLUMNS}"
    ));
    Ok(on_writer!(db, |p| {
        sqlx::query_as(sql)
            .bind(username)
            .bind(password_hash)
            .bind(role)
            .bind(now)
            .fetch_one(p)
            .await
    })?)
}

/// Creates the admin only when no admin exists yet, in one statement; `None` when one already did.
pub async fn create_first(
    db: &UsersDb,
    username: &str,
    password_hash: &str,
    now: i64,
) -> StoreResult<Option<AdminUser>> {
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO admin_users (username, password_hash, created_at, updated_at) \
         SELECT $1, $2, $3, $3 WHERE NOT EXISTS (SELECT 1 FROM admin_users) \
         ON CONFLICT (username) DO NOTHING \
         RETURNING {USER_COLUMNS}"
    ));
    Ok(on_writer!(db, |p| sqlx::query_as(sql)
        .bind(username)
        .bind(password_hash)
        .bind(now)
        .fetch_optional(p)
        .await)?)
}

/// Replaces a password and ends the user's sessions, in one transaction; `NotFound` for an unknown
/// username.
pub async fn set_password(
    db: &UsersDb,
    username: &str,
    password_hash: &str,
    now: i64,
) -> StoreResult<()> {
    in_transaction!(db, |tx| {
        let id: i64 = sqlx::query_scalar("UPDATE admin_users SET password_hash = $2, updated_at = $3 WHERE username = $1 RETURNING id")
            .bind(username)
            .bind(password_hash)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM admin_sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
    Ok(())
}

/// One page of admins by username, and how many there are.
pub async fn list_page(
    db: &UsersDb,
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<AdminView>, i64)> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM admin_users ORDER BY username LIMIT $1 OFFSET $2"
    ));
    let items = on_reader!(db, |p| sqlx::query_as(sql)
        .bind(limit)
        .bind(offset)
        .fetch_all(p)
        .await)?;
    Ok((items, count(db).await?))
}

/// The admin named `username`, without the hash.
pub async fn view_by_username(db: &UsersDb, username: &str) -> StoreResult<Option<AdminView>> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM admin_users WHERE username = $1"
    ));
    Ok(on_reader!(db, |p| sqlx::query_as(sql)
        .bind(username)
        .fetch_optional(p)
        .await)?)
}

/// A change to an admin that may take away an active admin.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    SetRole(&'a str),
    Disable,
    Enable,
}

/// Applies `change` to the admin `username`, in one transaction that first locks the admins
/// (PostgreSQL: a table lock; SQLite: the write transaction already excludes other writers), so
/// two admins demoting each other at once cannot both succeed. Refused with
/// `Conflict(LAST_ADMIN)` when it would leave no active admin; `NotFound` for an unknown name.
/// Disabling ends the admin's sessions in the same transaction.
pub async fn change(
    db: &UsersDb,
    username: &str,
    change: Change<'_>,
    now: i64,
) -> StoreResult<AdminView> {
    let is_postgres = db.0.backend() == Backend::Postgres;
    let view_sql = sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM admin_users WHERE username = $1"
    ));
    let update_sql = sqlx::AssertSqlSafe(format!(
        "UPDATE admin_users SET role = $2, disabled_at = $3, updated_at = $4 WHERE id = $1 \
         RETURNING {VIEW_COLUMNS}"
    ));
    in_transaction!(db, |tx| {
        if is_postgres {
            sqlx::query("LOCK TABLE admin_users IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        let before: Option<AdminView> = sqlx::query_as(view_sql)
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(before) = before else {
            return Err(StoreError::NotFound);
        };
        let (role, disabled_at) = match change {
            Change::SetRole(role) => (role.to_string(), before.disabled_at),
            Change::Disable => (before.role.clone(), before.disabled_at.or(Some(now))),
            Change::Enable => (before.role.clone(), None),
        };
        let was_active_admin = before.role == "admin" && before.disabled_at.is_none();
        let stays_active_admin = role == "admin" && disabled_at.is_none();
        if was_active_admin && !stays_active_admin {
            let others: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM admin_users \
                 WHERE role = 'admin' AND disabled_at IS NULL AND id <> $1",
            )
            .bind(before.id)
            .fetch_one(&mut *tx)
            .await?;
            if others == 0 {
                return Err(StoreError::Conflict(LAST_ADMIN.into()));
            }
        }
        let after: AdminView = sqlx::query_as(update_sql)
            .bind(before.id)
            .bind(&role)
            .bind(disabled_at)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        if after.disabled_at.is_some() {
            sqlx::query("DELETE FROM admin_sessions WHERE user_id = $1")
                .bind(after.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(after)
    })
}
