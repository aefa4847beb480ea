//! Admin users (users database): create with a role, list, change the role, reset the password,
//! disable and enable. The Admins page, the admins API and `poolkeeper admin` call these, so the
//! name and password rules and the last-admin guard are the same from every door, and each change
//! writes the same audit row (`admin.create`, `admin.role`, `admin.password`, `admin.disable`,
//! `admin.enable`; never a password).

use super::audit::{self, Actor};
use super::{Error, ErrorKind, Result};
use crate::auth::{self, Role};
use crate::clock::SharedClock;
use crate::db::UsersDb;
use crate::store::StoreError;
use crate::store::admins::{self as store, AdminView, Change, LAST_ADMIN};

/// Writes the audit row of a change to an admin user.
async fn audited(
    users: &UsersDb,
    clock: &SharedClock,
    actor: &Actor,
    action: &'static str,
    admin: &AdminView,
) {
    let summary = serde_json::json!({
        "username": admin.username,
        "role": admin.role,
        "disabled": admin.disabled_at.is_some(),
    });
    let change = audit::Change::new(action, "admin", admin.id, summary);
    audit::record(users, clock, actor, change).await;
}

fn unknown(username: &str) -> impl FnOnce(StoreError) -> Error + '_ {
    move |e| match e {
        StoreError::NotFound => Error::not_found(format!("no admin user `{username}`")),
        StoreError::Conflict(c) if c == LAST_ADMIN => Error::new(
            ErrorKind::Conflict,
            LAST_ADMIN,
            format!(
                "`{username}` is the last active admin; make another user admin first, so \
                 someone can still manage admins and tokens"
            ),
        ),
        other => other.into(),
    }
}

/// Creates an admin user with `role`; the password follows `auth::check_new_password`.
pub async fn create(
    users: &UsersDb,
    clock: &SharedClock,
    actor: &Actor,
    username: &str,
    password: &str,
    role: Role,
) -> Result<AdminView> {
    let username = username.trim();
    auth::check_username(username).map_err(|m| Error::invalid("invalid_username", m))?;
    auth::check_new_password(password).map_err(|m| Error::invalid("invalid_password", m))?;
    let hash = auth::hash_password(password.to_string())
        .await
        .map_err(Error::internal)?;
    match store::create(users, username, &hash, role.as_str(), clock.now_ms()).await {
        Err(StoreError::Conflict(_)) => Err(Error::new(
            ErrorKind::Conflict,
            "username_taken",
            format!("admin user `{username}` already exists"),
        )),
        Err(e) => Err(e.into()),
        Ok(_) => {
            let admin = view(users, username).await?;
            audited(users, clock, actor, "admin.create", &admin).await;
            Ok(admin)
        }
    }
}

async fn view(users: &UsersDb, username: &str) -> Result<AdminView> {
    store::view_by_username(users, username)
        .await?
        .ok_or_else(|| Error::not_found(format!("no admin user `{username}`")))
}

/// A page of admins by username, and how many there are; never a password hash.
pub async fn list_page(users: &UsersDb, limit: i64, offset: i64) -> Result<(Vec<AdminView>, i64)> {
    Ok(store::list_page(users, limit, offset).await?)
}

/// Gives `username` a role. Demoting the last active admin is a conflict (`last_admin`).
pub async fn set_role(
    users: &UsersDb,
    clock: &SharedClock,
    actor: &Actor,
    username: &str,
    role: Role,
) -> Result<AdminView> {
    let admin = store::change(
        users,
        username,
        Change::SetRole(role.as_str()),
        clock.now_ms(),
    )
    .await
    .map_err(unknown(username))?;
    audited(users, clock, actor, "admin.role", &admin).await;
    Ok(admin)
}

/// Disables `username`: they cannot log in and their sessions end at once. Disabling the last
/// active admin is a conflict (`last_admin`).
pub async fn disable(
    users: &UsersDb,
    clock: &SharedClock,
    actor: &Actor,
    username: &str,
) -> Result<AdminView> {
    let admin = store::change(users, username, Change::Disable, clock.now_ms())
        .await
        .map_err(unknown(username))?;
    audited(users, clock, actor, "admin.disable", &admin).await;
    Ok(admin)
}

/// Lets a disabled admin log in again.
pub async fn enable(
    users: &UsersDb,
    clock: &SharedClock,
    actor: &Actor,
    username: &str,
) -> Result<AdminView> {
    let admin = store::change(users, username, Change::Enable, clock.now_ms())
        .await
        .map_err(unknown(username))?;
    audited(users, clock, actor, "admin.enable", &admin).await;
    Ok(admin)
}

/// Sets a new password for `username` and ends their sessions.
pub async fn reset_password(
    users: &UsersDb,
    clock: &SharedClock,
    actor: &Actor,
    username: &str,
    password: &str,
) -> Result<AdminView> {
    auth::check_new_password(password).map_err(|m| Error::invalid("invalid_password", m))?;
    let hash = auth::hash_password(password.to_string())
        .await
        .map_err(Error::internal)?;
    store::set_password(users, username, &hash, clock.now_ms())
        .await
        .map_err(unknown(username))?;
    let admin = view(users, username).await?;
    audited(users, clock, actor, "admin.password", &admin).await;
    Ok(admin)
}
