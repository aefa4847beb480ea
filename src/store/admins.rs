//! Admin users (`admin_users`, users database). Only this module reads or writes password hashes.

use sqlx::FromRow;

use super::StoreResult;
use crate::db::{UsersDb, in_transaction, on_reader, on_writer};

#[derive(Clone, FromRow)]
pub struct AdminUser {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub created_at: i64,
}

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
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT id, username, password_hash, created_at FROM admin_users WHERE username = $1"
    )
    .bind(username)
    .fetch_optional(p)
    .await)?)
}

/// Creates an admin; a taken username is `StoreError::Conflict`.
pub async fn create(
    db: &UsersDb,
    username: &str,
    password_hash: &str,
    now: i64,
) -> StoreResult<AdminUser> {
    Ok(on_writer!(db, |p| {
        sqlx::query_as(
        "INSERT INTO admin_users (username, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $3) \
         RETURNING id, username, password_hash, created_at"
    )
    .bind(username)
    .bind(password_hash)
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
    Ok(on_writer!(db, |p| sqlx::query_as(
        "INSERT INTO admin_users (username, password_hash, created_at, updated_at) \
         SELECT $1, $2, $3, $3 WHERE NOT EXISTS (SELECT 1 FROM admin_users) \
         ON CONFLICT (username) DO NOTHING \
         RETURNING id, username, password_hash, created_at"
    )
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
