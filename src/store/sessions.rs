//! Browser sessions of admins (`admin_sessions`, users database), keyed by a hash of the cookie.

use sqlx::FromRow;

use super::StoreResult;
use crate::db::{UsersDb, on_reader, on_writer};

#[derive(Clone, FromRow)]
pub struct SessionRow {
    pub user_id: i64,
    pub username: String,
    pub role: String,
    pub csrf_token: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for SessionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRow")
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

pub async fn create(
    db: &UsersDb,
    token_hash: &str,
    user_id: i64,
    csrf_token: &str,
    now: i64,
    expires_at: i64,
) -> StoreResult<()> {
    on_writer!(db, |p| {
        sqlx::query(
        "INSERT INTO admin_sessions (token_hash, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)"
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(csrf_token)
    .bind(now)
    .bind(expires_at)
    .execute(p)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// The live session with this hash, if any; a disabled admin's sessions are not live.
pub async fn find_live(
    db: &UsersDb,
    token_hash: &str,
    now: i64,
) -> StoreResult<Option<SessionRow>> {
    Ok(on_reader!(db, |p| sqlx::query_as(
        "SELECT s.user_id, u.username, u.role, s.csrf_token, s.expires_at FROM admin_sessions s \
         JOIN admin_users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL"
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(p)
    .await)?)
}

pub async fn delete(db: &UsersDb, token_hash: &str) -> StoreResult<()> {
    on_writer!(db, |p| sqlx::query(
        "DELETE FROM admin_sessions WHERE token_hash = $1"
    )
    .bind(token_hash)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Removes expired sessions; returns how many.
pub async fn delete_expired(db: &UsersDb, now: i64) -> StoreResult<u64> {
    let removed = on_writer!(db, |p| sqlx::query(
        "DELETE FROM admin_sessions WHERE expires_at <= $1"
    )
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(removed)
}
