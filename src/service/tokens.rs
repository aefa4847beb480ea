//! API tokens (users database): create (the value is shown once, only its hash is kept), list,
//! revoke. The API and `poolkeeper token` call these, so both check names and report the same way.

use super::{Error, Result};
use crate::auth::{self, Scope};
use crate::clock::SharedClock;
use crate::db::UsersDb;
use crate::store::StoreError;
use crate::store::tokens::{self as store, ApiToken, TokenFilter};

/// Creates a token named `name` (trimmed; the name rules of `auth::check_token_name`); returns it
/// with its bearer value.
pub async fn create(
    users: &UsersDb,
    clock: &SharedClock,
    name: &str,
    scope: Scope,
) -> Result<(ApiToken, String)> {
    let name = name.trim();
    auth::check_token_name(name).map_err(|m| Error::invalid("invalid_name", m))?;
    match auth::create_api_token(users, clock, name, scope).await {
        Err(StoreError::Conflict(_)) => Err(Error::conflict(format!(
            "a token named `{name}` already exists"
        ))),
        other => Ok(other?),
    }
}

/// A page of tokens, newest first, and the total that match; never their values.
pub async fn list_page(
    users: &UsersDb,
    filter: &TokenFilter<'_>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ApiToken>, i64)> {
    Ok(store::list_page(users, filter, limit, offset).await?)
}

/// Every token, for the CLI's listing.
pub async fn list_all(users: &UsersDb) -> Result<Vec<ApiToken>> {
    Ok(store::list(users).await?)
}

/// Revokes the active token with this id. A server that read it in the last second still takes it
/// until it reads it again (`auth::TokenCache`); the API forgets its reads at once.
pub async fn revoke_by_id(users: &UsersDb, id: i64, now: i64) -> Result<ApiToken> {
    store::revoke_by_id(users, id, now)
        .await
        .map_err(super::not_found(format!("no active token with id {id}")))
}

/// Revokes the active token with this name (the CLI's convenience; the API revokes by id only).
pub async fn revoke_by_name(users: &UsersDb, name: &str, now: i64) -> Result<ApiToken> {
    store::revoke_by_name(users, name, now)
        .await
        .map_err(super::not_found(format!("no active token named `{name}`")))
}
